"""Between protos and the domain: enum tables, rows to messages, cursors and request fields."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

from google.protobuf.duration_pb2 import Duration

from collabnet.improvement.v1 import events_pb2 as ev
from collabnet.improvement.v1 import improvement_pb2 as pb
from collabnet_improvement import domain, store
from collabnet_improvement.domain import (
    ActionKind,
    ActionStatus,
    CaseRole,
    CaseState,
    CauseCategory,
    Direction,
    EntryKind,
    Health,
    InitiativeKind,
    MetricKind,
    Outcome,
    Platform,
    RootCauseMethod,
    ScarStatus,
    Stage,
)
from collabnet_kit import paging
from collabnet_kit.errors import InvalidArgument
from collabnet_kit.timestamps import timestamp

K = TypeVar("K")
V = TypeVar("V")


def _both(table: Mapping[K, V]) -> tuple[Mapping[K, V], Mapping[V, K]]:
    return table, {v: k for k, v in table.items()}


STATE_TO, STATE_FROM = _both(
    {
        CaseState.OPEN: pb.CASE_STATE_OPEN,
        CaseState.ENGAGED: pb.CASE_STATE_ENGAGED,
        CaseState.INVESTIGATING: pb.CASE_STATE_INVESTIGATING,
        CaseState.RESOLUTION_PROPOSED: pb.CASE_STATE_RESOLUTION_PROPOSED,
        CaseState.RESOLVED: pb.CASE_STATE_RESOLVED,
        CaseState.CLOSED: pb.CASE_STATE_CLOSED,
    }
)
OUTCOME_TO, OUTCOME_FROM = _both(
    {
        Outcome.PENDING: ev.CASE_OUTCOME_UNSPECIFIED,
        Outcome.RESOLVED: ev.CASE_OUTCOME_RESOLVED,
        Outcome.RECOVERED: ev.CASE_OUTCOME_RECOVERED,
        Outcome.NOT_RECOVERED: ev.CASE_OUTCOME_NOT_RECOVERED,
    }
)
ROLE_TO, _ROLE_FROM = _both({CaseRole.MAKER: pb.CASE_ROLE_MAKER, CaseRole.RETAILER: pb.CASE_ROLE_RETAILER})
ENTRY_TO, _ENTRY_FROM = _both(
    {
        EntryKind.MESSAGE: pb.ENTRY_KIND_MESSAGE,
        EntryKind.INTERNAL_NOTE: pb.ENTRY_KIND_INTERNAL_NOTE,
        EntryKind.STATE_CHANGE: pb.ENTRY_KIND_STATE_CHANGE,
        EntryKind.REVIEW_CHANGE: pb.ENTRY_KIND_REVIEW_CHANGE,
        EntryKind.UPDATE_INVITATION: pb.ENTRY_KIND_UPDATE_INVITATION,
        EntryKind.CO_DESIGN: pb.ENTRY_KIND_CO_DESIGN,
        EntryKind.INVESTIGATION: pb.ENTRY_KIND_INVESTIGATION,
        EntryKind.SUPPLIER_REQUEST: pb.ENTRY_KIND_SUPPLIER_REQUEST,
    }
)
METHOD_TO, METHOD_FROM = _both(
    {
        RootCauseMethod.FIVE_WHYS: pb.ROOT_CAUSE_METHOD_FIVE_WHYS,
        RootCauseMethod.CATEGORIES: pb.ROOT_CAUSE_METHOD_CATEGORIES,
    }
)
CATEGORY_TO, CATEGORY_FROM = _both(
    {
        CauseCategory.DESIGN: pb.CAUSE_CATEGORY_DESIGN,
        CauseCategory.MATERIAL: pb.CAUSE_CATEGORY_MATERIAL,
        CauseCategory.MANUFACTURING: pb.CAUSE_CATEGORY_MANUFACTURING,
        CauseCategory.SUPPLIER: pb.CAUSE_CATEGORY_SUPPLIER,
        CauseCategory.PACKAGING: pb.CAUSE_CATEGORY_PACKAGING,
        CauseCategory.TRANSPORT: pb.CAUSE_CATEGORY_TRANSPORT,
        CauseCategory.DOCUMENTATION: pb.CAUSE_CATEGORY_DOCUMENTATION,
        CauseCategory.SERVICE: pb.CAUSE_CATEGORY_SERVICE,
        CauseCategory.EXPECTATION: pb.CAUSE_CATEGORY_EXPECTATION,
        CauseCategory.OTHER: pb.CAUSE_CATEGORY_OTHER,
    }
)
ACTION_KIND_TO, ACTION_KIND_FROM = _both(
    {ActionKind.CORRECTIVE: pb.ACTION_KIND_CORRECTIVE, ActionKind.PREVENTIVE: pb.ACTION_KIND_PREVENTIVE}
)
ACTION_STATUS_TO, ACTION_STATUS_FROM = _both(
    {
        ActionStatus.OPEN: pb.ACTION_STATUS_OPEN,
        ActionStatus.DONE: pb.ACTION_STATUS_DONE,
        ActionStatus.CANCELLED: pb.ACTION_STATUS_CANCELLED,
    }
)
SCAR_TO, _SCAR_FROM = _both(
    {
        ScarStatus.REQUESTED: pb.SCAR_STATUS_REQUESTED,
        ScarStatus.RESPONDED: pb.SCAR_STATUS_RESPONDED,
        ScarStatus.ACCEPTED: pb.SCAR_STATUS_ACCEPTED,
        ScarStatus.REJECTED: pb.SCAR_STATUS_REJECTED,
    }
)
INVITATION_TO = {
    "pending": pb.INVITATION_STATUS_PENDING,
    "accepted": pb.INVITATION_STATUS_ACCEPTED,
    "declined": pb.INVITATION_STATUS_DECLINED,
}
NOTIFICATION_TO = {
    "review_update_invitation": pb.NOTIFICATION_KIND_REVIEW_UPDATE_INVITATION,
    "co_design_invitation": pb.NOTIFICATION_KIND_CO_DESIGN_INVITATION,
}
KIND_TO, KIND_FROM = _both(
    {
        InitiativeKind.PRODUCT_REDESIGN: pb.INITIATIVE_KIND_PRODUCT_REDESIGN,
        InitiativeKind.PROCESS: pb.INITIATIVE_KIND_PROCESS,
        InitiativeKind.CHANNEL: pb.INITIATIVE_KIND_CHANNEL,
        InitiativeKind.COMMUNITY: pb.INITIATIVE_KIND_COMMUNITY,
    }
)
STAGE_TO, STAGE_FROM = _both(
    {
        Stage.PROPOSED: pb.INITIATIVE_STAGE_PROPOSED,
        Stage.PLAN: pb.INITIATIVE_STAGE_PLAN,
        Stage.DO: pb.INITIATIVE_STAGE_DO,
        Stage.CHECK: pb.INITIATIVE_STAGE_CHECK,
        Stage.ACT: pb.INITIATIVE_STAGE_ACT,
        Stage.CLOSED: pb.INITIATIVE_STAGE_CLOSED,
    }
)
PLATFORM_TO, PLATFORM_FROM = _both(
    {
        Platform.SALES_CHANNEL: pb.PLATFORM_SALES_CHANNEL,
        Platform.SUPPLY_CHAIN: pb.PLATFORM_SUPPLY_CHAIN,
        Platform.COMMUNITY: pb.PLATFORM_COMMUNITY,
    }
)
HEALTH_TO, HEALTH_FROM = _both(
    {Health.ON_TRACK: pb.HEALTH_ON_TRACK, Health.AT_RISK: pb.HEALTH_AT_RISK, Health.OFF_TRACK: pb.HEALTH_OFF_TRACK}
)
METRIC_TO, METRIC_FROM = _both(
    {
        MetricKind.PRODUCT_AVERAGE_RATING: pb.METRIC_KIND_PRODUCT_AVERAGE_RATING,
        MetricKind.NEGATIVE_REVIEW_RATE: pb.METRIC_KIND_NEGATIVE_REVIEW_RATE,
        MetricKind.CASE_RECOVERY_RATE: pb.METRIC_KIND_CASE_RECOVERY_RATE,
        MetricKind.TIME_TO_FIRST_ENGAGEMENT: pb.METRIC_KIND_TIME_TO_FIRST_ENGAGEMENT,
        MetricKind.REPORTED: pb.METRIC_KIND_REPORTED,
    }
)
DIRECTION_TO, DIRECTION_FROM = _both(
    {Direction.INCREASE: pb.DIRECTION_INCREASE, Direction.DECREASE: pb.DIRECTION_DECREASE}
)
SOURCE_TO = {"computed": pb.MEASUREMENT_SOURCE_COMPUTED, "reported": pb.MEASUREMENT_SOURCE_REPORTED}


def health_proto(health: Health | None) -> pb.Health.ValueType:
    return HEALTH_TO[health] if health is not None else pb.HEALTH_UNSPECIFIED


# --- request fields -------------------------------------------------------------------------------------


def ident(value: str, field_name: str) -> str:
    """A required id."""
    if not value:
        raise InvalidArgument.field(field_name, "is required")
    if len(value) > domain.MAX_ID:
        raise InvalidArgument.field(field_name, f"must be at most {domain.MAX_ID} characters")
    return value


def optional_ident(value: str, field_name: str) -> str:
    return ident(value, field_name) if value else ""


def duration(value: timedelta | None) -> Duration | None:
    if value is None:
        return None
    message = Duration()
    message.FromTimedelta(value)
    return message


def timedelta_of(value: Duration, field_name: str) -> timedelta:
    """A Duration a caller sent, as a timedelta; one beyond what a timedelta holds (about 2.7
    million years) is the caller's mistake, named as such."""
    try:
        return value.ToTimedelta()
    except (OverflowError, ValueError):
        raise InvalidArgument.field(field_name, "is out of range") from None


def seconds(value: float | None) -> Duration | None:
    return duration(timedelta(seconds=value)) if value is not None else None


def finite(value: float, field_name: str) -> float:
    if not math.isfinite(value):
        raise InvalidArgument.field(field_name, "must be a finite number")
    return value


def mask_paths(mask: Any, allowed: tuple[str, ...], *, default_all: bool) -> list[str]:
    """The field mask's paths, checked against ``allowed``; all of them when empty and ``default_all``."""
    paths = list(mask.paths)
    if not paths:
        if default_all:
            return list(allowed)
        raise InvalidArgument.field("update_mask", f"name the fields to change: {', '.join(allowed)}")
    unknown = sorted(set(paths) - set(allowed))
    if unknown:
        raise InvalidArgument.field(
            "update_mask", f"unknown or unchangeable fields {unknown}; allowed: {', '.join(allowed)}"
        )
    return paths


def encode_cursor(at: datetime, ident_: str) -> str:
    return paging.encode_cursor(at.isoformat(), ident_)


def decode_cursor(token: str) -> tuple[datetime, str] | None:
    values = paging.decode_cursor(token, 2)
    if values is None:
        return None
    try:
        at = datetime.fromisoformat(values[0])
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise InvalidArgument.field("page_token", "is not a token this service issued")
    return at, values[1]


def next_token(rows: list[Any], size: int, at: str, id_: str = "id") -> str:
    """The token after the last row of the page when there was one more row than the page holds."""
    if len(rows) <= size:
        return ""
    last = rows[size - 1]
    return encode_cursor(getattr(last, at), getattr(last, id_))


# --- rows to messages ---------------------------------------------------------------------------------------


def policy_proto(partner_id: str, policy: domain.Policy, row: store.PolicyRow | None) -> pb.PartnerPolicy:
    return pb.PartnerPolicy(
        partner_id=partner_id,
        case_rating_threshold=policy.case_threshold,
        recovery_rating_threshold=policy.recovery_threshold,
        first_engagement_target=duration(policy.engagement_target),
        recovery_window=duration(policy.recovery_window),
        customized=row is not None,
        update_time=timestamp(row.updated_at) if row is not None else None,
    )


def action_proto(row: store.ActionRow, at: datetime) -> pb.CaseAction:
    status = ActionStatus(row.status)
    return pb.CaseAction(
        action_id=row.id,
        case_id=row.case_id,
        kind=ACTION_KIND_TO[ActionKind(row.kind)],
        description=row.description,
        owner_id=row.owner_id,
        due_time=timestamp(row.due_at),
        status=ACTION_STATUS_TO[status],
        created_by=row.created_by,
        create_time=timestamp(row.created_at),
        complete_time=timestamp(row.completed_at),
        note=row.note,
        overdue=status is ActionStatus.OPEN and row.due_at < at,
    )


def scar_proto(row: store.ScarRow) -> pb.SupplierCorrectiveAction:
    message = pb.SupplierCorrectiveAction(
        request_id=row.id,
        case_id=row.case_id,
        product_id=row.product_id,
        supplier_id=row.supplier_id,
        supplier_tier=row.tier,
        item=row.item,
        requested_by=row.requested_by,
        problem=row.problem,
        due_time=timestamp(row.due_at),
        status=SCAR_TO[ScarStatus(row.status)],
        review_comment=row.review_comment,
        review_time=timestamp(row.reviewed_at),
        create_time=timestamp(row.created_at),
    )
    if row.responded_at is not None:
        message.response.CopyFrom(
            pb.ScarResponse(
                containment=row.containment,
                root_cause=row.root_cause,
                corrective_action=row.corrective_action,
                respond_time=timestamp(row.responded_at),
            )
        )
    return message


def root_cause_proto(value: dict[str, Any] | None) -> pb.RootCause | None:
    if not value:
        return None
    return pb.RootCause(
        method=METHOD_TO[RootCauseMethod(value["method"])],
        whys=value.get("whys", []),
        categories=[CATEGORY_TO[CauseCategory(c)] for c in value.get("categories", [])],
        summary=value.get("summary", ""),
        recorded_by=value.get("recorded_by", ""),
        record_time=timestamp(datetime.fromisoformat(value["recorded_at"])),
    )


def state_proto(value: str) -> pb.CaseState.ValueType:
    return STATE_TO[CaseState(value)] if value else pb.CASE_STATE_UNSPECIFIED


def case_proto(bundle: store.CaseBundle, access: domain.CaseAccess, at: datetime) -> pb.Case:
    case = bundle.case
    partner_view = access is domain.CaseAccess.PARTNER
    assigned = {p.partner_id for p in bundle.partners}
    return pb.Case(
        case_id=case.id,
        review_id=case.review_id,
        product_id=case.product_id,
        product_revision=case.revision,
        customer_id=case.customer_id,
        maker_id=case.maker_id,
        retailer_id=case.retailer_id,
        state=state_proto(case.state),
        outcome=OUTCOME_TO[Outcome(case.outcome)],
        opening_rating=case.opening_rating,
        current_rating=case.current_rating,
        review_withdrawn=case.review_withdrawn,
        opened_by_revision=case.opened_by_revision,
        assignments=[
            pb.CaseAssignment(
                partner_id=p.partner_id,
                role=ROLE_TO[CaseRole(p.role)],
                first_engagement_target=seconds(p.target_seconds),
                engage_time=timestamp(p.engaged_at),
                time_to_first_engagement=seconds(p.engagement_seconds),
                within_target=bool(p.within_target),
                overdue=p.engaged_at is None and p.engage_due_at < at and case.state != CaseState.CLOSED.value,
            )
            for p in bundle.partners
        ],
        transitions=[
            pb.CaseTransition(
                from_state=state_proto(t.from_state),
                to_state=state_proto(t.to_state),
                transition_time=timestamp(t.at),
                actor=t.actor,
                note=t.note,
                time_in_previous_state=seconds(t.seconds_in_previous),
            )
            for t in bundle.transitions
        ],
        root_cause=root_cause_proto(case.root_cause),
        # A supplier's part stays between the partners and the supplier.
        actions=[action_proto(a, at) for a in bundle.actions if partner_view or a.owner_id in assigned],
        resolution=case.resolution,
        effectiveness_checks=[
            pb.EffectivenessCheck(
                check_id=c.id,
                passed=c.passed,
                evidence=c.evidence,
                checked_by=c.checked_by,
                check_time=timestamp(c.checked_at),
            )
            for c in bundle.checks
        ],
        supplier_corrective_actions=[scar_proto(s) for s in bundle.scars] if partner_view else [],
        co_design_participants=sorted(set(bundle.participants)),
        reopen_count=case.reopen_count,
        recovery_rating_threshold=case.recovery_threshold,
        recovery_window=seconds(case.recovery_window_seconds),
        open_time=timestamp(case.opened_at),
        update_time=timestamp(case.updated_at),
        resolve_time=timestamp(case.resolved_at),
        close_time=timestamp(case.closed_at),
        outcome_time=timestamp(case.outcome_at),
        update_invitation_time=timestamp(case.invited_at),
        view=pb.CASE_VIEW_PARTNER if partner_view else pb.CASE_VIEW_CUSTOMER,
    )


def entry_proto(row: store.EntryRow) -> pb.CaseEntry:
    return pb.CaseEntry(
        entry_id=row.id,
        case_id=row.case_id,
        kind=ENTRY_TO[EntryKind(row.kind)],
        author_partner_id=row.author_partner,
        author_party_id=row.author_party,
        body=row.body,
        internal=row.internal,
        create_time=timestamp(row.created_at),
    )


def invitation_proto(row: store.InvitationRow) -> pb.CoDesignInvitation:
    return pb.CoDesignInvitation(
        invitation_id=row.id,
        case_id=row.case_id,
        initiative_id=row.initiative_id,
        party_id=row.party_id,
        product_id=row.product_id,
        label=row.label,
        message=row.message,
        status=INVITATION_TO[row.status],
        invited_by=row.invited_by,
        create_time=timestamp(row.created_at),
        respond_time=timestamp(row.responded_at),
    )


def notification_proto(row: store.NotificationRow) -> pb.Notification:
    return pb.Notification(
        notification_id=row.id,
        party_id=row.party_id,
        kind=NOTIFICATION_TO[row.kind],
        case_id=row.case_id,
        initiative_id=row.initiative_id,
        invitation_id=row.invitation_id,
        review_id=row.review_id,
        body=row.body,
        create_time=timestamp(row.created_at),
    )


def objective_state(row: store.ObjectiveRow) -> domain.ObjectiveState:
    return domain.ObjectiveState(
        direction=Direction(row.direction),
        baseline=row.baseline,
        target=row.target,
        forecast=row.forecast,
        current=row.current,
        created=row.created_at,
        due=row.due_at,
        met=row.met_at,
    )


def objective_proto(row: store.ObjectiveRow, at: datetime) -> pb.Objective:
    state = objective_state(row)
    message = pb.Objective(
        objective_id=row.id,
        initiative_id=row.initiative_id,
        description=row.description,
        metric=pb.Metric(
            kind=METRIC_TO[MetricKind(row.metric_kind)],
            product_id=row.subject_id if row.subject == "product" else "",
            revision=row.revision,
            partner_id=row.subject_id if row.subject == "partner" else "",
            name=row.metric_name,
            unit=row.unit,
        ),
        direction=DIRECTION_TO[state.direction],
        baseline=row.baseline,
        target=row.target,
        due_time=timestamp(row.due_at),
        create_time=timestamp(row.created_at),
        met_time=timestamp(row.met_at),
        update_time=timestamp(row.updated_at),
        health=HEALTH_TO[domain.objective_health(state, at)],
        progress=domain.progress(state.direction, row.baseline, row.target, row.current),
    )
    if row.forecast is not None:
        message.forecast = row.forecast
    if row.current is not None:
        message.current = row.current
    return message


def initiative_health(bundle: store.InitiativeBundle, at: datetime) -> Health | None:
    return domain.worst(domain.objective_health(objective_state(o), at) for o in bundle.objectives)


def stakeholder_proto(row: store.StakeholderRow) -> pb.Stakeholder:
    if row.partner_id:
        return pb.Stakeholder(partner_id=row.partner_id, role=row.role)
    assert row.platform is not None
    return pb.Stakeholder(platform=PLATFORM_TO[Platform(row.platform)], role=row.role)


def initiative_proto(bundle: store.InitiativeBundle, at: datetime) -> pb.Initiative:
    row = bundle.initiative
    return pb.Initiative(
        initiative_id=row.id,
        owner_id=row.owner_id,
        title=row.title,
        description=row.description,
        kind=KIND_TO[InitiativeKind(row.kind)],
        product_id=row.product_id,
        stage=STAGE_TO[Stage(row.stage)],
        cycle=row.cycle,
        stage_history=[
            pb.StageChange(
                from_stage=STAGE_TO[Stage(s.from_stage)] if s.from_stage else pb.INITIATIVE_STAGE_UNSPECIFIED,
                to_stage=STAGE_TO[Stage(s.to_stage)],
                decision=s.decision,
                decided_by=s.decided_by,
                change_time=timestamp(s.at),
                cycle=s.cycle,
            )
            for s in bundle.history
        ],
        stakeholders=[stakeholder_proto(s) for s in bundle.stakeholders],
        case_ids=bundle.case_ids,
        ideas=[
            pb.LinkedIdea(idea_id=i.idea_id, community_id=i.community_id, title=i.title, submitter_id=i.submitter_id)
            for i in bundle.ideas
        ],
        objectives=[objective_proto(o, at) for o in bundle.objectives],
        co_design_participants=sorted(set(bundle.participants)),
        redesign_requests=[
            pb.RedesignRequest(
                request_id=r.id,
                product_id=r.product_id,
                maker_id=r.maker_id,
                changes=r.changes,
                reason=r.reason,
                cycle=r.cycle,
                requested_by=r.requested_by,
                request_time=timestamp(r.requested_at),
                fulfilled_revision=r.fulfilled_revision,
                fulfill_time=timestamp(r.fulfilled_at),
            )
            for r in bundle.redesigns
        ],
        health=health_proto(initiative_health(bundle, at)),
        source_idea_id=row.source_idea_id or "",
        create_time=timestamp(row.created_at),
        launch_time=timestamp(row.launched_at),
        update_time=timestamp(row.updated_at),
        close_time=timestamp(row.closed_at),
    )


def measurement_proto(row: store.MeasurementRow) -> pb.Measurement:
    return pb.Measurement(
        measurement_id=row.id,
        objective_id=row.objective_id,
        value=row.value,
        measure_time=timestamp(row.measured_at),
        source=SOURCE_TO[row.source],
        note=row.note,
        recorded_by=row.recorded_by,
    )
