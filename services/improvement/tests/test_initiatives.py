"""Initiatives: launching, PDCA with decisions, stakeholders, linked cases and promoted ideas,
objectives measured from events or reported, health, the portfolio, redesign requests, co-design."""

from __future__ import annotations

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from improvement_testing import SERVICE, Harness, customer, in_days, invalid, partner, refused

from collabnet.community.v1 import events_pb2 as community
from collabnet.improvement.v1 import events_pb2 as ev
from collabnet.improvement.v1 import improvement_pb2 as pb
from collabnet.supplychain.v1 import events_pb2 as supplychain
from collabnet_kit.testing import eventually


def rating_objective(initiative_id: str, product: str, target: float = 4.2, **fields: object) -> pb.AddObjectiveRequest:
    return pb.AddObjectiveRequest(
        initiative_id=initiative_id,
        description="P's average rating at least 4.2",
        metric=pb.Metric(kind=pb.METRIC_KIND_PRODUCT_AVERAGE_RATING, product_id=product),
        target=target,
        due_time=in_days(90),
        **fields,  # type: ignore[arg-type]
    )


async def test_refusing_an_objective_does_not_name_its_initiative(h: Harness) -> None:
    initiative = await h.initiative()
    objective = await h.improvement.AddObjective(
        rating_objective(initiative.initiative_id, h.world.product, baseline=3.0), metadata=h.world.as_maker
    )
    outsider = partner(h.world.outsider)
    for call in (
        h.improvement.ListMeasurements(
            pb.ListMeasurementsRequest(objective_id=objective.objective_id), metadata=outsider
        ),
        h.improvement.RecordMeasurement(
            pb.RecordMeasurementRequest(objective_id=objective.objective_id, value=1.0), metadata=outsider
        ),
    ):
        error = await refused(call, grpc.StatusCode.PERMISSION_DENIED)
        assert objective.objective_id in (error.details() or "")
        assert initiative.initiative_id not in (error.details() or "")


async def test_an_objective_on_the_products_average_rating_follows_rating_events(h: Harness) -> None:
    review, case = await h.negative_case(2)
    await h.review(5, author=h.world.other_customer)

    async def averaged() -> bool:
        metrics = await h.improvement.GetProductMetrics(
            pb.GetProductMetricsRequest(product_id=h.world.product), metadata=SERVICE
        )
        return metrics.review_count == 2

    await eventually(averaged)
    initiative = await h.initiative(case_ids=[case.case_id])
    objective = await h.improvement.AddObjective(
        rating_objective(initiative.initiative_id, h.world.product), metadata=h.world.as_maker
    )
    assert (objective.baseline, objective.current, objective.direction) == (3.5, 3.5, pb.DIRECTION_INCREASE)
    assert objective.metric.unit == "stars"
    assert objective.progress == 0.0
    await h.revise(review, 3, version=2)

    async def current() -> float:
        got = await h.improvement.GetInitiative(
            pb.GetInitiativeRequest(initiative_id=initiative.initiative_id), metadata=h.world.as_maker
        )
        return got.objectives[0].current

    await eventually(lambda: _equals(current, 4.0))
    assert not h.log.of(ev.ObjectiveMet)
    await h.revise(review, 4, version=3)
    await eventually(lambda: _equals(current, 4.5))
    (met,) = await h.log.wait(ev.ObjectiveMet)
    assert (met.objective_id, met.target, met.value) == (objective.objective_id, 4.2, 4.5)
    assert met.metric == f"product_average_rating:product/{h.world.product}"
    got = await h.improvement.GetInitiative(
        pb.GetInitiativeRequest(initiative_id=initiative.initiative_id), metadata=SERVICE
    )
    assert got.objectives[0].HasField("met_time")
    assert got.objectives[0].progress == 1.0
    assert got.health == pb.HEALTH_ON_TRACK
    measured = await h.improvement.ListMeasurements(
        pb.ListMeasurementsRequest(objective_id=objective.objective_id), metadata=h.world.as_maker
    )
    assert [m.value for m in measured.measurements] == [3.5, 4.0, 4.5]
    assert {m.source for m in measured.measurements} == {pb.MEASUREMENT_SOURCE_COMPUTED}
    # The case's recovery moves with it, and a recovery-rate objective as well.
    assert (await h.get_case(case.case_id)).outcome == ev.CASE_OUTCOME_RECOVERED


async def _equals(read: object, value: float) -> bool:
    return bool(await read() == value)  # type: ignore[operator]


async def test_a_revision_objective_and_the_negative_review_rate_are_computed_per_revision(h: Harness) -> None:
    await h.review(1, revision=1)
    await h.review(5, revision=2, author=h.world.other_customer)
    await h.review(4, revision=2, author="third-customer")

    async def three() -> pb.ProductMetrics | None:
        metrics = await h.improvement.GetProductMetrics(
            pb.GetProductMetricsRequest(product_id=h.world.product), metadata=SERVICE
        )
        return metrics if metrics.review_count == 3 else None

    metrics = await eventually(three)
    assert [(r.revision, r.review_count, r.average_rating) for r in metrics.revisions] == [(1, 1, 1.0), (2, 2, 4.5)]
    assert round(metrics.negative_review_rate, 4) == round(1 / 3, 4)
    initiative = await h.initiative()
    revision = await h.improvement.AddObjective(
        pb.AddObjectiveRequest(
            initiative_id=initiative.initiative_id,
            metric=pb.Metric(kind=pb.METRIC_KIND_PRODUCT_AVERAGE_RATING, product_id=h.world.product, revision=2),
            target=4.8,
            due_time=in_days(30),
        ),
        metadata=h.world.as_maker,
    )
    negative = await h.improvement.AddObjective(
        pb.AddObjectiveRequest(
            initiative_id=initiative.initiative_id,
            metric=pb.Metric(kind=pb.METRIC_KIND_NEGATIVE_REVIEW_RATE, product_id=h.world.product),
            target=0.1,
            due_time=in_days(30),
        ),
        metadata=h.world.as_maker,
    )
    assert (revision.baseline, revision.metric.revision) == (4.5, 2)
    assert (negative.direction, negative.metric.unit) == (pb.DIRECTION_DECREASE, "ratio")
    await invalid(
        h.improvement.AddObjective(
            pb.AddObjectiveRequest(
                initiative_id=initiative.initiative_id,
                metric=pb.Metric(kind=pb.METRIC_KIND_NEGATIVE_REVIEW_RATE, product_id=h.world.product),
                target=0.5,
                due_time=in_days(30),
            ),
            metadata=h.world.as_maker,
        ),
        "target",
    )


async def test_reported_metrics_are_recorded_by_the_owner_and_partner_stakeholders(h: Harness) -> None:
    initiative = await h.initiative(stakeholders=[pb.Stakeholder(partner_id=h.world.retailer, role="sales channel")])
    objective = await h.improvement.AddObjective(
        pb.AddObjectiveRequest(
            initiative_id=initiative.initiative_id,
            metric=pb.Metric(kind=pb.METRIC_KIND_REPORTED, name="return_rate", unit="%"),
            direction=pb.DIRECTION_DECREASE,
            baseline=8.0,
            target=4.0,
            forecast=5.0,
            due_time=in_days(60),
        ),
        metadata=h.world.as_maker,
    )
    assert not objective.HasField("current")
    assert objective.health == pb.HEALTH_AT_RISK  # the forecast falls short of the target
    recorded = await h.improvement.RecordMeasurement(
        pb.RecordMeasurementRequest(objective_id=objective.objective_id, value=6.0, note="March"),
        metadata=h.world.as_retailer,
    )
    assert (recorded.current, recorded.progress) == (6.0, 0.5)
    await refused(
        h.improvement.RecordMeasurement(
            pb.RecordMeasurementRequest(objective_id=objective.objective_id, value=1.0),
            metadata=partner(h.world.retailer2),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    met = await h.improvement.RecordMeasurement(
        pb.RecordMeasurementRequest(objective_id=objective.objective_id, value=3.5), metadata=h.world.as_maker
    )
    assert met.HasField("met_time") and met.health == pb.HEALTH_ON_TRACK
    (event,) = await h.log.wait(ev.ObjectiveMet)
    assert (event.metric, event.value) == ("return_rate", 3.5)
    history = await h.improvement.ListMeasurements(
        pb.ListMeasurementsRequest(objective_id=objective.objective_id, page_size=1), metadata=h.world.as_retailer
    )
    assert [m.value for m in history.measurements] == [6.0] and history.next_page_token
    computed = await h.improvement.AddObjective(
        rating_objective(initiative.initiative_id, h.world.product, baseline=3.0), metadata=h.world.as_maker
    )
    await refused(
        h.improvement.RecordMeasurement(
            pb.RecordMeasurementRequest(objective_id=computed.objective_id, value=4.9), metadata=h.world.as_maker
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )


async def test_an_initiative_goes_through_pdca_with_its_decisions_and_a_redesign_in_act(h: Harness) -> None:
    initiative = await h.initiative()
    iid = initiative.initiative_id
    assert (initiative.stage, initiative.cycle, initiative.owner_id) == (pb.INITIATIVE_STAGE_PLAN, 1, h.world.maker)
    (launched,) = await h.log.wait(ev.InitiativeLaunched)
    assert (launched.initiative_id, launched.kind, launched.product_id) == (iid, "product_redesign", h.world.product)
    redesign = pb.RequestRedesignRequest(initiative_id=iid, changes="Thicker seal", reason="Leaks in 3% of units")
    await refused(
        h.improvement.RequestRedesign(redesign, metadata=h.world.as_maker), grpc.StatusCode.FAILED_PRECONDITION
    )
    await refused(
        h.improvement.ChangeInitiativeStage(
            pb.ChangeInitiativeStageRequest(initiative_id=iid, stage=pb.INITIATIVE_STAGE_ACT, decision="skip ahead"),
            metadata=h.world.as_maker,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    for stage, decision in (
        (pb.INITIATIVE_STAGE_DO, "pilot the thicker seal on one line"),
        (pb.INITIATIVE_STAGE_CHECK, "compare leak rates for a month"),
        (pb.INITIATIVE_STAGE_ACT, "leaks down from 3% to 0.2%: make it the standard"),
    ):
        initiative = await h.improvement.ChangeInitiativeStage(
            pb.ChangeInitiativeStageRequest(initiative_id=iid, stage=stage, decision=decision),
            metadata=h.world.as_maker,
        )
    assert [(s.from_stage, s.to_stage) for s in initiative.stage_history] == [
        (pb.INITIATIVE_STAGE_UNSPECIFIED, pb.INITIATIVE_STAGE_PLAN),
        (pb.INITIATIVE_STAGE_PLAN, pb.INITIATIVE_STAGE_DO),
        (pb.INITIATIVE_STAGE_DO, pb.INITIATIVE_STAGE_CHECK),
        (pb.INITIATIVE_STAGE_CHECK, pb.INITIATIVE_STAGE_ACT),
    ]
    assert initiative.stage_history[-1].decision == "leaks down from 3% to 0.2%: make it the standard"
    changes = await h.log.wait(ev.InitiativeStageChanged, 3)
    assert [(c.old_stage, c.new_stage) for c in changes] == [("plan", "do"), ("do", "check"), ("check", "act")]
    requested = await h.improvement.RequestRedesign(redesign, metadata=h.world.as_maker)
    (request,) = requested.redesign_requests
    assert (request.maker_id, request.changes, request.cycle, request.fulfilled_revision) == (
        h.world.maker,
        "Thicker seal",
        1,
        0,
    )
    (event,) = await h.log.wait(ev.RedesignRequested)
    assert (event.initiative_id, event.product_id, event.maker_id, event.reason) == (
        iid,
        h.world.product,
        h.world.maker,
        "Leaks in 3% of units",
    )
    await refused(h.improvement.RequestRedesign(redesign, metadata=h.world.as_maker), grpc.StatusCode.ALREADY_EXISTS)
    await h.publish(
        supplychain.ProductRevised(
            product_id=h.world.product, maker_id=h.world.maker, revision=2, changes="Thicker seal", initiative_id=iid
        ),
        "supplychain",
    )

    async def fulfilled() -> bool:
        got = await h.improvement.GetInitiative(pb.GetInitiativeRequest(initiative_id=iid), metadata=h.world.as_maker)
        return got.redesign_requests[0].fulfilled_revision == 2

    await eventually(fulfilled)
    again = await h.improvement.ChangeInitiativeStage(
        pb.ChangeInitiativeStageRequest(initiative_id=iid, stage=pb.INITIATIVE_STAGE_PLAN, decision="next: the handle"),
        metadata=h.world.as_maker,
    )
    assert (again.cycle, again.stage_history[-1].cycle) == (2, 2)
    closed = await h.improvement.ChangeInitiativeStage(
        pb.ChangeInitiativeStageRequest(initiative_id=iid, stage=pb.INITIATIVE_STAGE_CLOSED, decision="handle is fine"),
        metadata=h.world.as_maker,
    )
    assert closed.stage == pb.INITIATIVE_STAGE_CLOSED and closed.HasField("close_time")
    await refused(
        h.improvement.AddObjective(rating_objective(iid, h.world.product, baseline=3.0), metadata=h.world.as_maker),
        grpc.StatusCode.FAILED_PRECONDITION,
    )


async def test_only_product_redesigns_request_a_revision(h: Harness) -> None:
    process = await h.initiative(kind=pb.INITIATIVE_KIND_PROCESS)
    iid = process.initiative_id
    for stage in (pb.INITIATIVE_STAGE_DO, pb.INITIATIVE_STAGE_CHECK, pb.INITIATIVE_STAGE_ACT):
        await h.improvement.ChangeInitiativeStage(
            pb.ChangeInitiativeStageRequest(initiative_id=iid, stage=stage, decision="go"), metadata=h.world.as_maker
        )
    await refused(
        h.improvement.RequestRedesign(
            pb.RequestRedesignRequest(initiative_id=iid, changes="x", reason="y"), metadata=h.world.as_maker
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert not h.log.of(ev.RedesignRequested)


async def test_stakeholders_see_the_initiative_and_others_do_not(h: Harness) -> None:
    initiative = await h.initiative(
        stakeholders=[
            pb.Stakeholder(partner_id=h.world.retailer, role="sales channel"),
            pb.Stakeholder(platform=pb.PLATFORM_COMMUNITY, role="ideas and co-design"),
        ]
    )
    iid = initiative.initiative_id
    get = pb.GetInitiativeRequest(initiative_id=iid)
    assert (await h.improvement.GetInitiative(get, metadata=h.world.as_retailer)).initiative_id == iid
    for outsider in (partner(h.world.retailer2), h.world.as_customer):
        await refused(h.improvement.GetInitiative(get, metadata=outsider), grpc.StatusCode.PERMISSION_DENIED)
    await refused(
        h.improvement.ChangeInitiativeStage(
            pb.ChangeInitiativeStageRequest(initiative_id=iid, stage=pb.INITIATIVE_STAGE_DO, decision="go"),
            metadata=h.world.as_retailer,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    added = await h.improvement.AddStakeholder(
        pb.AddStakeholderRequest(initiative_id=iid, stakeholder=pb.Stakeholder(partner_id=h.world.s1, role="supplier")),
        metadata=h.world.as_maker,
    )
    assert [s.partner_id or pb.Platform.Name(s.platform) for s in added.stakeholders] == [
        h.world.retailer,
        "PLATFORM_COMMUNITY",
        h.world.s1,
    ]
    await refused(
        h.improvement.AddStakeholder(
            pb.AddStakeholderRequest(initiative_id=iid, stakeholder=pb.Stakeholder(partner_id=h.world.s1)),
            metadata=h.world.as_maker,
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    removed = await h.improvement.RemoveStakeholder(
        pb.RemoveStakeholderRequest(initiative_id=iid, stakeholder=pb.Stakeholder(platform=pb.PLATFORM_COMMUNITY)),
        metadata=h.world.as_maker,
    )
    assert len(removed.stakeholders) == 2
    await refused(
        h.improvement.RemoveStakeholder(
            pb.RemoveStakeholderRequest(initiative_id=iid, stakeholder=pb.Stakeholder(platform=pb.PLATFORM_COMMUNITY)),
            metadata=h.world.as_maker,
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    listed = await h.improvement.ListInitiatives(pb.ListInitiativesRequest(), metadata=h.world.as_retailer)
    assert [i.initiative_id for i in listed.initiatives] == [iid]
    assert not (
        await h.improvement.ListInitiatives(pb.ListInitiativesRequest(), metadata=partner(h.world.retailer2))
    ).initiatives


async def test_cases_are_linked_only_by_a_partner_assigned_to_them(h: Harness) -> None:
    _, case = await h.negative_case()
    other = await h.initiative(owner=partner(h.world.retailer2), kind=pb.INITIATIVE_KIND_CHANNEL)
    await refused(
        h.improvement.LinkCase(
            pb.LinkCaseRequest(initiative_id=other.initiative_id, case_id=case.case_id),
            metadata=partner(h.world.retailer2),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await refused(
        h.initiative(owner=partner(h.world.retailer2), case_ids=[case.case_id]), grpc.StatusCode.PERMISSION_DENIED
    )
    mine = await h.initiative()
    linked = await h.improvement.LinkCase(
        pb.LinkCaseRequest(initiative_id=mine.initiative_id, case_id=case.case_id), metadata=h.world.as_maker
    )
    assert list(linked.case_ids) == [case.case_id]
    await refused(
        h.improvement.LinkCase(
            pb.LinkCaseRequest(initiative_id=mine.initiative_id, case_id=case.case_id), metadata=h.world.as_maker
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )


async def test_a_promoted_idea_becomes_a_proposed_initiative_once(h: Harness) -> None:
    idea = community.IdeaPromoted(
        idea_id="idea-seal",
        community_id="kitchen-fans",
        partner_id=h.world.maker,
        title="A lid that locks",
        description="Lock the lid so it cannot leak",
        product_id=h.world.product,
        submitter_id=h.world.other_customer,
    )
    event_id = await h.publish(idea, "community")
    await h.publish(idea, "community", event_id=event_id, attempt=1)
    await h.publish(idea, "community")

    async def proposed() -> list[pb.Initiative] | None:
        listed = await h.improvement.ListInitiatives(
            pb.ListInitiativesRequest(stage=pb.INITIATIVE_STAGE_PROPOSED), metadata=h.world.as_maker
        )
        return list(listed.initiatives) or None

    (initiative,) = await eventually(proposed)
    await h.settle()
    assert len(await proposed() or []) == 1
    assert (initiative.source_idea_id, initiative.kind, initiative.title) == (
        "idea-seal",
        pb.INITIATIVE_KIND_PRODUCT_REDESIGN,
        "A lid that locks",
    )
    assert [(i.idea_id, i.submitter_id) for i in initiative.ideas] == [("idea-seal", h.world.other_customer)]
    assert not h.log.of(ev.InitiativeLaunched)
    updated = await h.improvement.UpdateInitiative(
        pb.UpdateInitiativeRequest(
            initiative=pb.Initiative(
                initiative_id=initiative.initiative_id, kind=pb.INITIATIVE_KIND_PROCESS, title="Locking lid"
            ),
            update_mask=FieldMask(paths=["kind", "title"]),
        ),
        metadata=h.world.as_maker,
    )
    assert (updated.kind, updated.title, updated.description) == (
        pb.INITIATIVE_KIND_PROCESS,
        "Locking lid",
        "Lock the lid so it cannot leak",
    )
    launched = await h.improvement.ChangeInitiativeStage(
        pb.ChangeInitiativeStageRequest(
            initiative_id=initiative.initiative_id, stage=pb.INITIATIVE_STAGE_PLAN, decision="worth a try"
        ),
        metadata=h.world.as_maker,
    )
    assert launched.HasField("launch_time")
    await h.log.wait(ev.InitiativeLaunched)
    await h.improvement.ChangeInitiativeStage(
        pb.ChangeInitiativeStageRequest(
            initiative_id=initiative.initiative_id, stage=pb.INITIATIVE_STAGE_DO, decision="go"
        ),
        metadata=h.world.as_maker,
    )
    await refused(
        h.improvement.UpdateInitiative(
            pb.UpdateInitiativeRequest(
                initiative=pb.Initiative(initiative_id=initiative.initiative_id, kind=pb.INITIATIVE_KIND_CHANNEL),
                update_mask=FieldMask(paths=["kind"]),
            ),
            metadata=h.world.as_maker,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    # The same idea links to no other partner's initiative.
    theirs = await h.initiative(owner=partner(h.world.retailer), kind=pb.INITIATIVE_KIND_CHANNEL)
    await refused(
        h.improvement.LinkIdea(
            pb.LinkIdeaRequest(initiative_id=theirs.initiative_id, idea_id="idea-seal"), metadata=h.world.as_retailer
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await refused(
        h.improvement.LinkIdea(
            pb.LinkIdeaRequest(initiative_id=theirs.initiative_id, idea_id="never-promoted"),
            metadata=h.world.as_retailer,
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    second = await h.initiative()
    linked = await h.improvement.LinkIdea(
        pb.LinkIdeaRequest(initiative_id=second.initiative_id, idea_id="idea-seal"), metadata=h.world.as_maker
    )
    assert [i.idea_id for i in linked.ideas] == ["idea-seal"]


async def test_health_and_the_portfolio_show_target_forecast_and_actual_benefit(h: Harness) -> None:
    on_track = await h.initiative(stakeholders=[pb.Stakeholder(partner_id=h.world.retailer)])
    at_risk = await h.initiative(
        kind=pb.INITIATIVE_KIND_PROCESS, stakeholders=[pb.Stakeholder(platform=pb.PLATFORM_SUPPLY_CHAIN)]
    )
    unmeasured = await h.initiative(kind=pb.INITIATIVE_KIND_CHANNEL)
    good = await h.improvement.AddObjective(
        pb.AddObjectiveRequest(
            initiative_id=on_track.initiative_id,
            metric=pb.Metric(kind=pb.METRIC_KIND_REPORTED, name="units_without_leaks", unit="%"),
            direction=pb.DIRECTION_INCREASE,
            baseline=90,
            target=99,
            forecast=99.5,
            due_time=in_days(60),
        ),
        metadata=h.world.as_maker,
    )
    await h.improvement.RecordMeasurement(
        pb.RecordMeasurementRequest(objective_id=good.objective_id, value=97), metadata=h.world.as_maker
    )
    await h.improvement.AddObjective(
        pb.AddObjectiveRequest(
            initiative_id=at_risk.initiative_id,
            metric=pb.Metric(kind=pb.METRIC_KIND_REPORTED, name="units_without_leaks", unit="%"),
            direction=pb.DIRECTION_INCREASE,
            baseline=90,
            target=99,
            forecast=95,
            due_time=in_days(60),
        ),
        metadata=h.world.as_maker,
    )
    healths = {
        i.initiative_id: i.health
        for i in (
            await h.improvement.ListInitiatives(pb.ListInitiativesRequest(), metadata=h.world.as_maker)
        ).initiatives
    }
    assert healths == {
        on_track.initiative_id: pb.HEALTH_ON_TRACK,
        at_risk.initiative_id: pb.HEALTH_AT_RISK,
        unmeasured.initiative_id: pb.HEALTH_UNSPECIFIED,
    }
    risky = await h.improvement.ListInitiatives(
        pb.ListInitiativesRequest(health=pb.HEALTH_AT_RISK, page_size=1), metadata=h.world.as_maker
    )
    assert [i.initiative_id for i in risky.initiatives] == [at_risk.initiative_id] and not risky.next_page_token
    summary = await h.improvement.SummarizePortfolio(pb.SummarizePortfolioRequest(), metadata=h.world.as_maker)
    groups = {g.WhichOneof("group"): g for g in summary.groups}
    owner = groups["owner_id"]
    assert (owner.owner_id, owner.initiatives, owner.on_track, owner.at_risk, owner.unmeasured) == (
        h.world.maker,
        3,
        1,
        1,
        1,
    )
    (benefit,) = owner.benefits
    assert (benefit.name, benefit.unit, benefit.objectives, benefit.met) == ("units_without_leaks", "%", 2, 0)
    assert (benefit.target_benefit, benefit.forecast_benefit, benefit.actual_benefit) == (18.0, 14.5, 7.0)
    assert (groups["stakeholder_partner_id"].stakeholder_partner_id, groups["stakeholder_partner_id"].initiatives) == (
        h.world.retailer,
        1,
    )
    assert groups["stakeholder_platform"].stakeholder_platform == pb.PLATFORM_SUPPLY_CHAIN
    retailer_view = await h.improvement.SummarizePortfolio(
        pb.SummarizePortfolioRequest(stakeholder_partner_id=h.world.retailer), metadata=h.world.as_retailer
    )
    (only,) = retailer_view.groups
    assert (only.stakeholder_partner_id, only.initiatives, only.benefits[0].actual_benefit) == (
        h.world.retailer,
        1,
        7.0,
    )


async def test_co_design_on_a_case_and_an_initiative(h: Harness) -> None:
    _, case = await h.engaged_case()
    invitation = await h.improvement.InviteToCoDesign(
        pb.InviteToCoDesignRequest(
            case_id=case.case_id, label="revision 2", message="Would you help us test the new seal?"
        ),
        metadata=h.world.as_maker,
    )
    assert (invitation.party_id, invitation.product_id, invitation.status) == (
        h.world.customer,
        h.world.product,
        pb.INVITATION_STATUS_PENDING,
    )
    await refused(
        h.improvement.InviteToCoDesign(pb.InviteToCoDesignRequest(case_id=case.case_id), metadata=h.world.as_retailer),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    notes = await h.improvement.ListNotifications(
        pb.ListNotificationsRequest(party_id=h.world.customer), metadata=h.world.as_customer
    )
    assert [(n.kind, n.invitation_id) for n in notes.notifications] == [
        (pb.NOTIFICATION_KIND_CO_DESIGN_INVITATION, invitation.invitation_id)
    ]
    respond = pb.RespondToCoDesignInvitationRequest(invitation_id=invitation.invitation_id, accept=True)
    await refused(
        h.improvement.RespondToCoDesignInvitation(respond, metadata=h.world.as_maker), grpc.StatusCode.PERMISSION_DENIED
    )
    accepted = await h.improvement.RespondToCoDesignInvitation(respond, metadata=h.world.as_customer)
    assert accepted.status == pb.INVITATION_STATUS_ACCEPTED
    (joined,) = await h.log.wait(ev.CoDesignJoined)
    assert (joined.case_id, joined.party_id, joined.product_id, joined.label) == (
        case.case_id,
        h.world.customer,
        h.world.product,
        "revision 2",
    )
    assert list((await h.get_case(case.case_id)).co_design_participants) == [h.world.customer]
    await refused(
        h.improvement.RespondToCoDesignInvitation(respond, metadata=h.world.as_customer),
        grpc.StatusCode.FAILED_PRECONDITION,
    )

    initiative = await h.initiative(stakeholders=[pb.Stakeholder(partner_id=h.world.retailer)])
    dora = customer(h.world.other_customer, h.world.retailer2)
    invited = await h.improvement.InviteToCoDesign(
        pb.InviteToCoDesignRequest(
            initiative_id=initiative.initiative_id, party_id=h.world.other_customer, label="lid"
        ),
        metadata=h.world.as_retailer,
    )
    declined = await h.improvement.RespondToCoDesignInvitation(
        pb.RespondToCoDesignInvitationRequest(invitation_id=invited.invitation_id, accept=False), metadata=dora
    )
    assert declined.status == pb.INVITATION_STATUS_DECLINED
    await refused(
        h.improvement.GetInitiative(pb.GetInitiativeRequest(initiative_id=initiative.initiative_id), metadata=dora),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    again = await h.improvement.InviteToCoDesign(
        pb.InviteToCoDesignRequest(initiative_id=initiative.initiative_id, party_id=h.world.other_customer),
        metadata=h.world.as_maker,
    )
    await h.improvement.RespondToCoDesignInvitation(
        pb.RespondToCoDesignInvitationRequest(invitation_id=again.invitation_id, accept=True), metadata=dora
    )
    seen = await h.improvement.GetInitiative(
        pb.GetInitiativeRequest(initiative_id=initiative.initiative_id), metadata=dora
    )
    assert list(seen.co_design_participants) == [h.world.other_customer]
    assert len(await h.log.wait(ev.CoDesignJoined, 2)) == 2
    by_initiative = await h.improvement.ListCoDesignInvitations(
        pb.ListCoDesignInvitationsRequest(initiative_id=initiative.initiative_id), metadata=h.world.as_maker
    )
    assert [i.status for i in by_initiative.invitations] == [
        pb.INVITATION_STATUS_DECLINED,
        pb.INVITATION_STATUS_ACCEPTED,
    ]
    mine = await h.improvement.ListCoDesignInvitations(
        pb.ListCoDesignInvitationsRequest(party_id=h.world.customer), metadata=h.world.as_customer
    )
    assert [i.invitation_id for i in mine.invitations] == [invitation.invitation_id]
    await refused(
        h.improvement.ListCoDesignInvitations(
            pb.ListCoDesignInvitationsRequest(party_id=h.world.customer), metadata=dora
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await invalid(
        h.improvement.InviteToCoDesign(
            pb.InviteToCoDesignRequest(case_id=case.case_id, party_id=h.world.other_customer), metadata=h.world.as_maker
        ),
        "party_id",
    )


async def test_objectives_on_recovery_rate_and_time_to_first_engagement_follow_the_cases(h: Harness) -> None:
    review, case = await h.negative_case()
    initiative = await h.initiative(owner=h.world.as_retailer, kind=pb.INITIATIVE_KIND_CHANNEL)
    iid = initiative.initiative_id
    recovery = await h.improvement.AddObjective(
        pb.AddObjectiveRequest(
            initiative_id=iid,
            metric=pb.Metric(kind=pb.METRIC_KIND_CASE_RECOVERY_RATE, partner_id=h.world.retailer),
            baseline=0.2,
            target=0.6,
            due_time=in_days(90),
        ),
        metadata=h.world.as_retailer,
    )
    engagement = await h.improvement.AddObjective(
        pb.AddObjectiveRequest(
            initiative_id=iid,
            metric=pb.Metric(kind=pb.METRIC_KIND_TIME_TO_FIRST_ENGAGEMENT, partner_id=h.world.retailer),
            baseline=30,
            target=4,
            due_time=in_days(90),
        ),
        metadata=h.world.as_retailer,
    )
    assert not recovery.HasField("current") and not engagement.HasField("current")
    assert (engagement.direction, engagement.metric.unit) == (pb.DIRECTION_DECREASE, "hours")
    await h.improvement.EngageCase(
        pb.EngageCaseRequest(case_id=case.case_id, message="We are on it."), metadata=h.world.as_retailer
    )

    async def objectives() -> dict[str, pb.Objective]:
        got = await h.improvement.GetInitiative(
            pb.GetInitiativeRequest(initiative_id=iid), metadata=h.world.as_retailer
        )
        return {o.objective_id: o for o in got.objectives}

    engaged = (await objectives())[engagement.objective_id]
    assert engaged.HasField("current") and engaged.current < 1 and engaged.HasField("met_time")
    await h.revise(review, 5, version=2)

    async def recovered() -> bool:
        return (await objectives())[recovery.objective_id].current == 1.0

    await eventually(recovered)
    met = await h.log.wait(ev.ObjectiveMet, 2)
    assert {m.objective_id for m in met} == {recovery.objective_id, engagement.objective_id}


async def test_an_objective_is_reshaped_and_met_when_its_target_comes_within_reach(h: Harness) -> None:
    initiative = await h.initiative()
    objective = await h.improvement.AddObjective(
        pb.AddObjectiveRequest(
            initiative_id=initiative.initiative_id,
            metric=pb.Metric(kind=pb.METRIC_KIND_REPORTED, name="nps"),
            direction=pb.DIRECTION_INCREASE,
            baseline=20,
            target=50,
            due_time=in_days(30),
        ),
        metadata=h.world.as_maker,
    )
    await h.improvement.RecordMeasurement(
        pb.RecordMeasurementRequest(objective_id=objective.objective_id, value=35), metadata=h.world.as_maker
    )
    mask = FieldMask(paths=["target", "forecast", "description", "due_time"])
    reshaped = await h.improvement.UpdateObjective(
        pb.UpdateObjectiveRequest(
            objective=pb.Objective(
                objective_id=objective.objective_id, target=35, forecast=40, description="NPS 35", due_time=in_days(60)
            ),
            update_mask=mask,
        ),
        metadata=h.world.as_maker,
    )
    assert (reshaped.target, reshaped.forecast, reshaped.description) == (35, 40, "NPS 35")
    assert reshaped.HasField("met_time")
    (met,) = await h.log.wait(ev.ObjectiveMet)
    assert (met.target, met.value) == (35, 35)
    await refused(
        h.improvement.UpdateObjective(
            pb.UpdateObjectiveRequest(
                objective=pb.Objective(objective_id=objective.objective_id, target=60), update_mask=mask
            ),
            metadata=h.world.as_retailer,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await invalid(
        h.improvement.UpdateObjective(
            pb.UpdateObjectiveRequest(
                objective=pb.Objective(objective_id=objective.objective_id, target=10),
                update_mask=FieldMask(paths=["target"]),
            ),
            metadata=h.world.as_maker,
        ),
        "objective.target",
    )
    # An older measurement arriving late is kept in the history but does not replace the current value.
    late = await h.improvement.RecordMeasurement(
        pb.RecordMeasurementRequest(objective_id=objective.objective_id, value=12, measure_time=in_days(-3)),
        metadata=h.world.as_maker,
    )
    assert late.current == 35
    history = await h.improvement.ListMeasurements(
        pb.ListMeasurementsRequest(objective_id=objective.objective_id), metadata=h.world.as_maker
    )
    assert [m.value for m in history.measurements] == [12, 35]
