"""Every RPC refuses bad input with INVALID_ARGUMENT naming the field, and writes nothing."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from improvement_testing import SERVICE, Harness, Metadata, in_days, invalid, partner

from collabnet.improvement.v1 import improvement_pb2 as pb
from collabnet_improvement import store
from collabnet_kit.server import Service
from collabnet_kit.tables import outbox

if TYPE_CHECKING:
    from collabnet.improvement.v1.improvement_pb2_grpc import ImprovementServiceAsyncStub as Improvement


async def row_counts(service: Service) -> dict[str, int]:
    """Rows in every table of the service, the outbox included: 'nothing written' is 'no count moved'."""
    assert service.runtime is not None
    counts = {}
    async with service.runtime.db.read() as session:
        connection = await session.connection()
        for table in [*store.Table.metadata.sorted_tables, outbox]:
            counts[table.name] = int(
                (await connection.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
            )
    return counts


@dataclass(frozen=True)
class Fixture:
    case_id: str
    action_id: str
    request_id: str
    invitation_id: str
    initiative_id: str
    objective_id: str


async def build(h: Harness) -> Fixture:
    _, case = await h.investigating_case()
    cid = case.case_id
    action = await h.improvement.AddCaseAction(
        pb.AddCaseActionRequest(
            case_id=cid, kind=pb.ACTION_KIND_CORRECTIVE, description="fix", owner_id=h.world.maker, due_time=in_days(5)
        ),
        metadata=h.world.as_maker,
    )
    scar = await h.improvement.RequestSupplierCorrectiveAction(
        pb.RequestSupplierCorrectiveActionRequest(
            case_id=cid, supplier_id=h.world.s1, problem="leaks", due_time=in_days(9)
        ),
        metadata=h.world.as_maker,
    )
    invitation = await h.improvement.InviteToCoDesign(
        pb.InviteToCoDesignRequest(case_id=cid), metadata=h.world.as_maker
    )
    initiative = await h.initiative()
    objective = await h.improvement.AddObjective(
        pb.AddObjectiveRequest(
            initiative_id=initiative.initiative_id,
            metric=pb.Metric(kind=pb.METRIC_KIND_REPORTED, name="returns", unit="%"),
            direction=pb.DIRECTION_DECREASE,
            baseline=5,
            target=2,
            due_time=in_days(30),
        ),
        metadata=h.world.as_maker,
    )
    return Fixture(
        cid,
        action.action_id,
        scar.request_id,
        invitation.invitation_id,
        initiative.initiative_id,
        objective.objective_id,
    )


Case = Callable[[Harness, Fixture], tuple[Awaitable[object], tuple[str, ...]]]


def i(h: Harness) -> Improvement:
    return h.improvement


def maker(h: Harness) -> Metadata:
    return h.world.as_maker


def cases() -> list[tuple[str, Case]]:
    """(RPC, a bad call and the fields it must name) for every RPC of the service."""
    return [
        (
            "GetPartnerPolicy",
            lambda h, f: (i(h).GetPartnerPolicy(pb.GetPartnerPolicyRequest(), metadata=maker(h)), ("partner_id",)),
        ),
        (
            "UpdatePartnerPolicy",
            lambda h, f: (
                i(h).UpdatePartnerPolicy(
                    pb.UpdatePartnerPolicyRequest(
                        policy=pb.PartnerPolicy(
                            case_rating_threshold=7,
                            first_engagement_target=Duration(seconds=10),
                            recovery_window=Duration(seconds=60),
                        )
                    ),
                    metadata=maker(h),
                ),
                (
                    "policy.case_rating_threshold",
                    "policy.recovery_rating_threshold",
                    "policy.first_engagement_target",
                    "policy.recovery_window",
                ),
            ),
        ),
        (
            "UpdatePartnerPolicy duration beyond a timedelta",
            lambda h, f: (
                i(h).UpdatePartnerPolicy(
                    pb.UpdatePartnerPolicyRequest(
                        policy=pb.PartnerPolicy(recovery_window=Duration(seconds=-(2**63) + 1)),
                        update_mask=FieldMask(paths=["recovery_window"]),
                    ),
                    metadata=maker(h),
                ),
                ("policy.recovery_window",),
            ),
        ),
        (
            "UpdatePartnerPolicy mask",
            lambda h, f: (
                i(h).UpdatePartnerPolicy(
                    pb.UpdatePartnerPolicyRequest(
                        policy=pb.PartnerPolicy(), update_mask=FieldMask(paths=["partner_id"])
                    ),
                    metadata=maker(h),
                ),
                ("update_mask",),
            ),
        ),
        ("GetCase", lambda h, f: (i(h).GetCase(pb.GetCaseRequest(), metadata=maker(h)), ("case_id",))),
        (
            "ListCases",
            lambda h, f: (i(h).ListCases(pb.ListCasesRequest(page_size=-1), metadata=maker(h)), ("page_size",)),
        ),
        (
            "ListCaseEntries",
            lambda h, f: (
                i(h).ListCaseEntries(pb.ListCaseEntriesRequest(case_id=f.case_id, page_token="%%"), metadata=maker(h)),
                ("page_token",),
            ),
        ),
        (
            "EngageCase",
            lambda h, f: (i(h).EngageCase(pb.EngageCaseRequest(case_id=f.case_id), metadata=maker(h)), ("message",)),
        ),
        (
            "PostCaseMessage",
            lambda h, f: (
                i(h).PostCaseMessage(pb.PostCaseMessageRequest(case_id=f.case_id, body="  "), metadata=maker(h)),
                ("body",),
            ),
        ),
        (
            "StartInvestigation",
            lambda h, f: (
                i(h).StartInvestigation(
                    pb.StartInvestigationRequest(case_id=f.case_id, note="x" * 5001), metadata=maker(h)
                ),
                ("note",),
            ),
        ),
        (
            "RecordRootCause",
            lambda h, f: (
                i(h).RecordRootCause(
                    pb.RecordRootCauseRequest(case_id=f.case_id, root_cause=pb.RootCause(whys=["why"])),
                    metadata=maker(h),
                ),
                ("root_cause.method",),
            ),
        ),
        (
            "RecordRootCause categories",
            lambda h, f: (
                i(h).RecordRootCause(
                    pb.RecordRootCauseRequest(
                        case_id=f.case_id,
                        root_cause=pb.RootCause(
                            method=pb.ROOT_CAUSE_METHOD_CATEGORIES,
                            whys=["why"],
                            categories=[pb.CAUSE_CATEGORY_DESIGN, pb.CAUSE_CATEGORY_DESIGN],
                        ),
                    ),
                    metadata=maker(h),
                ),
                ("root_cause.categories", "root_cause.whys", "root_cause.summary"),
            ),
        ),
        (
            "AddCaseAction",
            lambda h, f: (
                i(h).AddCaseAction(
                    pb.AddCaseActionRequest(
                        case_id=f.case_id, kind=pb.ACTION_KIND_PREVENTIVE, description="inspect", owner_id=h.world.maker
                    ),
                    metadata=maker(h),
                ),
                ("due_time",),
            ),
        ),
        (
            "UpdateCaseAction",
            lambda h, f: (
                i(h).UpdateCaseAction(
                    pb.UpdateCaseActionRequest(action_id=f.action_id, status=pb.ACTION_STATUS_CANCELLED),
                    metadata=maker(h),
                ),
                ("note",),
            ),
        ),
        (
            "ProposeResolution",
            lambda h, f: (
                i(h).ProposeResolution(pb.ProposeResolutionRequest(case_id=f.case_id), metadata=maker(h)),
                ("resolution",),
            ),
        ),
        ("ResolveCase", lambda h, f: (i(h).ResolveCase(pb.ResolveCaseRequest(), metadata=maker(h)), ("case_id",))),
        (
            "RecordEffectivenessCheck",
            lambda h, f: (
                i(h).RecordEffectivenessCheck(pb.RecordEffectivenessCheckRequest(case_id=f.case_id), metadata=maker(h)),
                ("evidence",),
            ),
        ),
        (
            "CloseCase",
            lambda h, f: (i(h).CloseCase(pb.CloseCaseRequest(case_id="x" * 65), metadata=maker(h)), ("case_id",)),
        ),
        (
            "RequestSupplierCorrectiveAction",
            lambda h, f: (
                i(h).RequestSupplierCorrectiveAction(
                    pb.RequestSupplierCorrectiveActionRequest(case_id=f.case_id, due_time=in_days(3)), metadata=maker(h)
                ),
                ("supplier_id", "problem"),
            ),
        ),
        (
            "GetSupplierCorrectiveAction",
            lambda h, f: (
                i(h).GetSupplierCorrectiveAction(pb.GetSupplierCorrectiveActionRequest(), metadata=maker(h)),
                ("request_id",),
            ),
        ),
        (
            "ListSupplierCorrectiveActions",
            lambda h, f: (
                i(h).ListSupplierCorrectiveActions(
                    pb.ListSupplierCorrectiveActionsRequest(case_id=f.case_id, supplier_id=h.world.s1),
                    metadata=maker(h),
                ),
                ("case_id",),
            ),
        ),
        (
            "RespondToSupplierCorrectiveAction",
            lambda h, f: (
                i(h).RespondToSupplierCorrectiveAction(
                    pb.RespondToSupplierCorrectiveActionRequest(request_id=f.request_id), metadata=partner(h.world.s1)
                ),
                ("containment", "root_cause", "corrective_action"),
            ),
        ),
        (
            "ReviewSupplierCorrectiveAction",
            lambda h, f: (
                i(h).ReviewSupplierCorrectiveAction(
                    pb.ReviewSupplierCorrectiveActionRequest(accepted=True), metadata=maker(h)
                ),
                ("request_id",),
            ),
        ),
        (
            "InviteToCoDesign",
            lambda h, f: (
                i(h).InviteToCoDesign(
                    pb.InviteToCoDesignRequest(case_id=f.case_id, initiative_id=f.initiative_id), metadata=maker(h)
                ),
                ("case_id",),
            ),
        ),
        (
            "InviteToCoDesign message",
            lambda h, f: (
                i(h).InviteToCoDesign(
                    pb.InviteToCoDesignRequest(
                        initiative_id=f.initiative_id,
                        party_id=h.world.other_customer,
                        message="Then give us five stars!",
                    ),
                    metadata=maker(h),
                ),
                ("message",),
            ),
        ),
        (
            "RespondToCoDesignInvitation",
            lambda h, f: (
                i(h).RespondToCoDesignInvitation(
                    pb.RespondToCoDesignInvitationRequest(accept=True), metadata=h.world.as_customer
                ),
                ("invitation_id",),
            ),
        ),
        (
            "ListCoDesignInvitations",
            lambda h, f: (
                i(h).ListCoDesignInvitations(pb.ListCoDesignInvitationsRequest(), metadata=maker(h)),
                ("party_id",),
            ),
        ),
        (
            "ListNotifications",
            lambda h, f: (
                i(h).ListNotifications(pb.ListNotificationsRequest(), metadata=h.world.as_customer),
                ("party_id",),
            ),
        ),
        (
            "CreateInitiative",
            lambda h, f: (
                i(h).CreateInitiative(
                    pb.CreateInitiativeRequest(title=" ", stakeholders=[pb.Stakeholder(role="nobody")], product_id=""),
                    metadata=maker(h),
                ),
                ("title", "kind"),
            ),
        ),
        (
            "CreateInitiative redesign",
            lambda h, f: (
                i(h).CreateInitiative(
                    pb.CreateInitiativeRequest(title="Seal", kind=pb.INITIATIVE_KIND_PRODUCT_REDESIGN),
                    metadata=maker(h),
                ),
                ("product_id",),
            ),
        ),
        (
            "CreateInitiative stakeholder",
            lambda h, f: (
                i(h).CreateInitiative(
                    pb.CreateInitiativeRequest(
                        title="Seal", kind=pb.INITIATIVE_KIND_PROCESS, stakeholders=[pb.Stakeholder(role="nobody")]
                    ),
                    metadata=maker(h),
                ),
                ("stakeholders[0]",),
            ),
        ),
        (
            "GetInitiative",
            lambda h, f: (i(h).GetInitiative(pb.GetInitiativeRequest(), metadata=maker(h)), ("initiative_id",)),
        ),
        (
            "ListInitiatives",
            lambda h, f: (
                i(h).ListInitiatives(pb.ListInitiativesRequest(stage=42, kind=42), metadata=maker(h)),  # type: ignore[arg-type]
                ("stage", "kind"),
            ),
        ),
        (
            "UpdateInitiative",
            lambda h, f: (
                i(h).UpdateInitiative(
                    pb.UpdateInitiativeRequest(initiative=pb.Initiative(initiative_id=f.initiative_id, title="new")),
                    metadata=maker(h),
                ),
                ("update_mask",),
            ),
        ),
        (
            "UpdateInitiative title",
            lambda h, f: (
                i(h).UpdateInitiative(
                    pb.UpdateInitiativeRequest(
                        initiative=pb.Initiative(initiative_id=f.initiative_id, title=""),
                        update_mask=FieldMask(paths=["title"]),
                    ),
                    metadata=maker(h),
                ),
                ("initiative.title",),
            ),
        ),
        (
            "ChangeInitiativeStage",
            lambda h, f: (
                i(h).ChangeInitiativeStage(
                    pb.ChangeInitiativeStageRequest(initiative_id=f.initiative_id, stage=pb.INITIATIVE_STAGE_PROPOSED),
                    metadata=maker(h),
                ),
                ("stage", "decision"),
            ),
        ),
        (
            "AddStakeholder",
            lambda h, f: (
                i(h).AddStakeholder(
                    pb.AddStakeholderRequest(
                        initiative_id=f.initiative_id, stakeholder=pb.Stakeholder(platform=pb.PLATFORM_UNSPECIFIED)
                    ),
                    metadata=maker(h),
                ),
                ("stakeholder.platform",),
            ),
        ),
        (
            "AddStakeholder owner",
            lambda h, f: (
                i(h).AddStakeholder(
                    pb.AddStakeholderRequest(
                        initiative_id=f.initiative_id, stakeholder=pb.Stakeholder(partner_id=h.world.maker)
                    ),
                    metadata=maker(h),
                ),
                ("stakeholder.partner_id",),
            ),
        ),
        (
            "RemoveStakeholder",
            lambda h, f: (
                i(h).RemoveStakeholder(
                    pb.RemoveStakeholderRequest(initiative_id=f.initiative_id, stakeholder=pb.Stakeholder()),
                    metadata=maker(h),
                ),
                ("stakeholder",),
            ),
        ),
        (
            "LinkCase",
            lambda h, f: (
                i(h).LinkCase(pb.LinkCaseRequest(initiative_id=f.initiative_id), metadata=maker(h)),
                ("case_id",),
            ),
        ),
        (
            "LinkIdea",
            lambda h, f: (
                i(h).LinkIdea(pb.LinkIdeaRequest(initiative_id=f.initiative_id), metadata=maker(h)),
                ("idea_id",),
            ),
        ),
        (
            "AddObjective",
            lambda h, f: (
                i(h).AddObjective(
                    pb.AddObjectiveRequest(
                        initiative_id=f.initiative_id, metric=pb.Metric(), target=4, due_time=in_days(9)
                    ),
                    metadata=maker(h),
                ),
                ("metric.kind",),
            ),
        ),
        (
            "AddObjective direction",
            lambda h, f: (
                i(h).AddObjective(
                    pb.AddObjectiveRequest(
                        initiative_id=f.initiative_id,
                        metric=pb.Metric(kind=pb.METRIC_KIND_REPORTED, name="nps"),
                        baseline=30,
                        target=40,
                        due_time=in_days(9),
                    ),
                    metadata=maker(h),
                ),
                ("direction",),
            ),
        ),
        (
            "AddObjective subject",
            lambda h, f: (
                i(h).AddObjective(
                    pb.AddObjectiveRequest(
                        initiative_id=f.initiative_id,
                        metric=pb.Metric(kind=pb.METRIC_KIND_TIME_TO_FIRST_ENGAGEMENT),
                        baseline=30,
                        target=10,
                        due_time=in_days(9),
                    ),
                    metadata=maker(h),
                ),
                ("metric.partner_id",),
            ),
        ),
        (
            "AddObjective values",
            lambda h, f: (
                i(h).AddObjective(
                    pb.AddObjectiveRequest(
                        initiative_id=f.initiative_id,
                        metric=pb.Metric(kind=pb.METRIC_KIND_PRODUCT_AVERAGE_RATING, product_id=h.world.product),
                        baseline=4.5,
                        target=6,
                        due_time=in_days(-1),
                    ),
                    metadata=maker(h),
                ),
                ("due_time",),
            ),
        ),
        (
            "AddObjective range",
            lambda h, f: (
                i(h).AddObjective(
                    pb.AddObjectiveRequest(
                        initiative_id=f.initiative_id,
                        metric=pb.Metric(kind=pb.METRIC_KIND_PRODUCT_AVERAGE_RATING, product_id=h.world.product),
                        baseline=4.5,
                        target=6,
                        due_time=in_days(9),
                    ),
                    metadata=maker(h),
                ),
                ("target",),
            ),
        ),
        (
            "AddObjective baseline",
            lambda h, f: (
                i(h).AddObjective(
                    pb.AddObjectiveRequest(
                        initiative_id=f.initiative_id,
                        metric=pb.Metric(kind=pb.METRIC_KIND_CASE_RECOVERY_RATE, partner_id=h.world.maker),
                        target=0.8,
                        due_time=in_days(9),
                    ),
                    metadata=maker(h),
                ),
                ("baseline",),
            ),
        ),
        (
            "UpdateObjective",
            lambda h, f: (
                i(h).UpdateObjective(
                    pb.UpdateObjectiveRequest(
                        objective=pb.Objective(objective_id=f.objective_id, target=math.nan),
                        update_mask=FieldMask(paths=["target"]),
                    ),
                    metadata=maker(h),
                ),
                ("objective.target",),
            ),
        ),
        (
            "UpdateObjective direction",
            lambda h, f: (
                i(h).UpdateObjective(
                    pb.UpdateObjectiveRequest(
                        objective=pb.Objective(objective_id=f.objective_id, target=9),
                        update_mask=FieldMask(paths=["target", "baseline"]),
                    ),
                    metadata=maker(h),
                ),
                ("update_mask",),
            ),
        ),
        (
            "RecordMeasurement",
            lambda h, f: (
                i(h).RecordMeasurement(
                    pb.RecordMeasurementRequest(objective_id=f.objective_id, value=math.inf), metadata=maker(h)
                ),
                ("value",),
            ),
        ),
        (
            "RecordMeasurement time",
            lambda h, f: (
                i(h).RecordMeasurement(
                    pb.RecordMeasurementRequest(objective_id=f.objective_id, value=3, measure_time=in_days(2)),
                    metadata=maker(h),
                ),
                ("measure_time",),
            ),
        ),
        (
            "ListMeasurements",
            lambda h, f: (i(h).ListMeasurements(pb.ListMeasurementsRequest(), metadata=maker(h)), ("objective_id",)),
        ),
        (
            "RequestRedesign",
            lambda h, f: (
                i(h).RequestRedesign(pb.RequestRedesignRequest(initiative_id=f.initiative_id), metadata=maker(h)),
                ("changes", "reason"),
            ),
        ),
        (
            "SummarizePortfolio",
            lambda h, f: (
                i(h).SummarizePortfolio(
                    pb.SummarizePortfolioRequest(owner_id=h.world.maker, stakeholder_partner_id=h.world.retailer),
                    metadata=maker(h),
                ),
                ("owner_id",),
            ),
        ),
        (
            "GetProductMetrics",
            lambda h, f: (i(h).GetProductMetrics(pb.GetProductMetricsRequest(), metadata=SERVICE), ("product_id",)),
        ),
        (
            "GetPartnerMetrics",
            lambda h, f: (i(h).GetPartnerMetrics(pb.GetPartnerMetricsRequest(), metadata=SERVICE), ("partner_id",)),
        ),
        (
            "GetProductNetwork",
            lambda h, f: (i(h).GetProductNetwork(pb.GetProductNetworkRequest(), metadata=SERVICE), ("product_id",)),
        ),
    ]


async def test_every_rpc_names_the_bad_field_and_writes_nothing(h: Harness) -> None:
    fixture = await build(h)
    await h.settle()
    before = await row_counts(h.service)
    for name, case in cases():
        call, fields = case(h, fixture)
        try:
            await invalid(call, *fields)
        except AssertionError as failure:
            raise AssertionError(f"{name}: {failure}") from failure
    assert await row_counts(h.service) == before


def test_every_rpc_of_the_service_has_a_bad_input_case() -> None:
    covered = {name.split()[0] for name, _ in cases()}
    assert covered == set(pb.DESCRIPTOR.services_by_name["ImprovementService"].methods_by_name)
