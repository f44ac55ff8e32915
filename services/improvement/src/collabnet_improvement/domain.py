"""The improvement domain: case policies, the case life cycle, investigation, closing the loop with
the customer, co-design, initiatives through plan-do-check-act, objectives and their health.
Plain Python, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from collabnet_kit.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Validator
from collabnet_kit.principal import Principal

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_TITLE = 200
MAX_TEXT = 5000
MAX_ID = 64
MAX_DUE = timedelta(days=3 * 365)

NEGATIVE_RATING = 2
"""Reviews at or below this count as negative for the negative-review rate (whatever partners' policies say)."""

# --- policy ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """A partner's case policy."""

    case_threshold: int = 2
    recovery_threshold: int = 4
    engagement_target: timedelta = timedelta(hours=24)
    recovery_window: timedelta = timedelta(days=30)

    def opens_case(self, rating: int) -> bool:
        return rating <= self.case_threshold


DEFAULT_POLICY = Policy()
POLICY_FIELDS = ("case_rating_threshold", "recovery_rating_threshold", "first_engagement_target", "recovery_window")
ENGAGEMENT_TARGET_RANGE = (timedelta(minutes=1), timedelta(days=30))
RECOVERY_WINDOW_RANGE = (timedelta(days=1), timedelta(days=365))


def validate_policy(policy: Policy) -> None:
    check = Validator()
    check.require(1 <= policy.case_threshold <= 4, "policy.case_rating_threshold", "must be between 1 and 4")
    check.require(2 <= policy.recovery_threshold <= 5, "policy.recovery_rating_threshold", "must be between 2 and 5")
    check.require(
        policy.recovery_threshold > policy.case_threshold,
        "policy.recovery_rating_threshold",
        "must be above the case rating threshold",
    )
    low, high = ENGAGEMENT_TARGET_RANGE
    check.require(
        low <= policy.engagement_target <= high,
        "policy.first_engagement_target",
        "must be between 1 minute and 30 days",
    )
    low, high = RECOVERY_WINDOW_RANGE
    check.require(low <= policy.recovery_window <= high, "policy.recovery_window", "must be between 1 and 365 days")
    check.raise_if_any()


@dataclass(frozen=True)
class CaseTerms:
    """What the policies of the partners assigned to a case say about it.

    A case opens when the rating is at or below either partner's threshold. It counts as recovered
    only at the highest of their recovery thresholds, and as not recovered only after the longest
    of their windows: the loop is closed for everyone or for no one.
    """

    opens: bool
    recovery_threshold: int
    recovery_window: timedelta


def case_terms(rating: int, policies: Sequence[Policy]) -> CaseTerms:
    policies = list(policies) or [DEFAULT_POLICY]
    return CaseTerms(
        opens=any(p.opens_case(rating) for p in policies),
        recovery_threshold=max(p.recovery_threshold for p in policies),
        recovery_window=max(p.recovery_window for p in policies),
    )


# --- cases -------------------------------------------------------------------------------------


class CaseState(StrEnum):
    OPEN = "open"
    ENGAGED = "engaged"
    INVESTIGATING = "investigating"
    RESOLUTION_PROPOSED = "resolution_proposed"
    RESOLVED = "resolved"
    CLOSED = "closed"


class Outcome(StrEnum):
    PENDING = "pending"
    RESOLVED = "resolved"
    RECOVERED = "recovered"
    NOT_RECOVERED = "not_recovered"


class CaseRole(StrEnum):
    MAKER = "maker"
    RETAILER = "retailer"


class EntryKind(StrEnum):
    MESSAGE = "message"
    INTERNAL_NOTE = "internal_note"
    STATE_CHANGE = "state_change"
    REVIEW_CHANGE = "review_change"
    UPDATE_INVITATION = "update_invitation"
    CO_DESIGN = "co_design"
    INVESTIGATION = "investigation"
    SUPPLIER_REQUEST = "supplier_request"


UPDATE_INVITATION_TEXT = (
    "Your case has been resolved. If you wish, you can update your review to reflect your experience, "
    "or leave it as it is. The review is yours, and nothing depends on whether or how you change it."
)
"""The one invitation a customer receives after resolution: fixed, neutral, no incentive."""

_TRANSITIONS: dict[CaseState, frozenset[CaseState]] = {
    CaseState.OPEN: frozenset({CaseState.ENGAGED}),
    CaseState.ENGAGED: frozenset({CaseState.INVESTIGATING}),
    CaseState.INVESTIGATING: frozenset({CaseState.RESOLUTION_PROPOSED}),
    # A proposal the customer does not accept goes back to investigation.
    CaseState.RESOLUTION_PROPOSED: frozenset({CaseState.RESOLVED, CaseState.INVESTIGATING}),
    # A failed effectiveness check reopens the case.
    CaseState.RESOLVED: frozenset({CaseState.CLOSED, CaseState.INVESTIGATING}),
    CaseState.CLOSED: frozenset(),
}

_NEXT_STEP = {
    CaseState.OPEN: "engage the customer first",
    CaseState.ENGAGED: "start the investigation first",
    CaseState.INVESTIGATING: "propose a resolution first",
    CaseState.RESOLUTION_PROPOSED: "resolve the case first",
    CaseState.RESOLVED: "record an effectiveness check and close the case",
    CaseState.CLOSED: "the case is closed",
}


def require_transition(case_id: str, current: CaseState, target: CaseState) -> None:
    if target not in _TRANSITIONS[current]:
        raise FailedPrecondition(
            f"case {case_id} is {current.value}; it cannot move to {target.value} ({_NEXT_STEP[current]})"
        )


def require_not_closed(case_id: str, state: CaseState) -> None:
    if state is CaseState.CLOSED:
        raise FailedPrecondition(f"case {case_id} is closed")


@dataclass(frozen=True)
class Engagement:
    seconds: float
    within_target: bool


def engagement(opened: datetime, engaged: datetime, target: timedelta) -> Engagement:
    elapsed = max(timedelta(0), engaged - opened)
    return Engagement(elapsed.total_seconds(), elapsed <= target)


def outcome_after_revision(outcome: Outcome, rating: int, recovery_threshold: int, resolved: bool) -> Outcome:
    """The outcome once the review has been revised to ``rating``.

    Reaching the recovery threshold recovers the case, even after a window ran out; falling below
    it again takes a recovery back. A withdrawn review's case stays not recovered (see
    :func:`outcome_after_withdrawal`), which the caller checks first.
    """
    if rating >= recovery_threshold:
        return Outcome.RECOVERED
    if outcome is Outcome.RECOVERED:
        return Outcome.RESOLVED if resolved else Outcome.PENDING
    return outcome


def outcome_after_withdrawal(outcome: Outcome) -> Outcome:
    """A recovered case stays recovered; any other loses its review and is not recovered."""
    return outcome if outcome is Outcome.RECOVERED else Outcome.NOT_RECOVERED


def outcome_at_resolution(outcome: Outcome) -> Outcome:
    return Outcome.RESOLVED if outcome is Outcome.PENDING else outcome


def outcome_at_reopening(outcome: Outcome) -> Outcome:
    return Outcome.PENDING if outcome is Outcome.RESOLVED else outcome


def recovery_window_passed(outcome: Outcome, deadline: datetime | None, now: datetime) -> bool:
    return outcome is Outcome.RESOLVED and deadline is not None and deadline <= now


# Outreach never asks for a better rating. Partners write to the customer in their own words; the
# one invitation to update the review comes from the platform, worded neutrally. This catches the
# plain forms of asking; it is a guard, not a proof.
_ASKS_FOR_RATING = re.compile(
    r"\b(updat|chang|revis|edit|rais|improv|increas|amend|adjust|reconsider|remov|delet|withdr|"
    r"take\s+down|bump|upgrad)\w*\W+(?:\w+\W+){0,2}?(review|rating|stars?)\b"
    r"|\b(better|higher|good|positive|five[- ]star|5[- ]star)\s+(review|rating)s?\b"
    r"|\b([1-5]|one|two|three|four|five)[- ]?stars?\b",
    re.IGNORECASE,
)


def validate_outreach(text: str, field_name: str) -> None:
    """Refuses a partner's words to the customer that ask for a different rating."""
    if _ASKS_FOR_RATING.search(text):
        raise InvalidArgument.field(
            field_name,
            "outreach may not ask the customer to change, remove or rate the review; after resolution the "
            "customer receives one neutral invitation to update it if they wish",
        )


def validate_text(
    check: Validator, value: str, field_name: str, *, required: bool = True, limit: int = MAX_TEXT
) -> None:
    if required:
        check.require(bool(value.strip()), field_name, "must not be empty")
    check.require(len(value) <= limit, field_name, f"must be at most {limit} characters")


def text(value: str, field_name: str, *, required: bool = True, limit: int = MAX_TEXT) -> str:
    check = Validator()
    validate_text(check, value, field_name, required=required, limit=limit)
    check.raise_if_any()
    return value.strip()


def due(value: datetime | None, field_name: str, now: datetime) -> datetime:
    if value is None:
        raise InvalidArgument.field(field_name, "is required")
    if value <= now:
        raise InvalidArgument.field(field_name, "must be in the future")
    if value - now > MAX_DUE:
        raise InvalidArgument.field(field_name, "must be within three years")
    return value


# --- investigation -----------------------------------------------------------------------------


class RootCauseMethod(StrEnum):
    FIVE_WHYS = "five_whys"
    CATEGORIES = "categories"


class CauseCategory(StrEnum):
    DESIGN = "design"
    MATERIAL = "material"
    MANUFACTURING = "manufacturing"
    SUPPLIER = "supplier"
    PACKAGING = "packaging"
    TRANSPORT = "transport"
    DOCUMENTATION = "documentation"
    SERVICE = "service"
    EXPECTATION = "expectation"
    OTHER = "other"


@dataclass(frozen=True)
class RootCause:
    method: RootCauseMethod | None
    whys: Sequence[str]
    categories: Sequence[CauseCategory | None]
    summary: str


def validate_root_cause(cause: RootCause) -> None:
    check = Validator()
    check.require(cause.method is not None, "root_cause.method", "must be FIVE_WHYS or CATEGORIES")
    if cause.method is RootCauseMethod.FIVE_WHYS:
        check.require(1 <= len(cause.whys) <= 5, "root_cause.whys", "a 5-why chain has 1 to 5 answers")
        for index, why in enumerate(cause.whys):
            validate_text(check, why, f"root_cause.whys[{index}]", limit=1000)
        check.require(not cause.categories, "root_cause.categories", "belong to the CATEGORIES method")
    elif cause.method is RootCauseMethod.CATEGORIES:
        check.require(bool(cause.categories), "root_cause.categories", "name at least one cause category")
        check.require(all(c is not None for c in cause.categories), "root_cause.categories", "must be known categories")
        check.require(len(set(cause.categories)) == len(cause.categories), "root_cause.categories", "must not repeat")
        check.require(not cause.whys, "root_cause.whys", "belong to the FIVE_WHYS method")
    validate_text(check, cause.summary, "root_cause.summary", required=cause.method is RootCauseMethod.CATEGORIES)
    check.raise_if_any()


class ActionKind(StrEnum):
    CORRECTIVE = "corrective"
    PREVENTIVE = "preventive"


class ActionStatus(StrEnum):
    OPEN = "open"
    DONE = "done"
    CANCELLED = "cancelled"


class ScarStatus(StrEnum):
    REQUESTED = "requested"
    RESPONDED = "responded"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


def require_closable(
    case_id: str,
    state: CaseState,
    last_check_passed: bool | None,
    open_actions: int,
    open_scars: int,
) -> None:
    """Closure needs a resolved case whose latest effectiveness check (since resolution) passed,
    with every action and supplier request settled."""
    require_transition(case_id, state, CaseState.CLOSED)
    if last_check_passed is None:
        raise FailedPrecondition(f"case {case_id} needs an effectiveness check before it can be closed")
    if not last_check_passed:
        raise FailedPrecondition(f"case {case_id}'s latest effectiveness check failed")
    if open_actions:
        raise FailedPrecondition(f"case {case_id} has {open_actions} open action(s); complete or cancel them first")
    if open_scars:
        raise FailedPrecondition(
            f"case {case_id} has {open_scars} supplier corrective-action request(s) not yet accepted"
        )


# --- who is calling ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    """The caller, as this service sees it.

    A partner acting for a party (``principal.party_id``, the gateway's X-On-Behalf-Of) is that
    party: a customer, not the partner, so a consumer using a retailer's app never gets the
    retailer's view of anything.
    """

    service: str | None = None
    partner: str | None = None
    party: str | None = None

    @classmethod
    def of(cls, principal: Principal) -> Actor:
        if principal.service is not None:
            return cls(service=principal.service)
        if principal.party_id and principal.party_id != principal.partner_id:
            return cls(party=principal.party_id)
        return cls(partner=principal.partner_id)

    @property
    def label(self) -> str:
        if self.service:
            return f"service:{self.service}"
        if self.party:
            return f"party:{self.party}"
        return f"partner:{self.partner}"

    @property
    def id(self) -> str:
        return self.service or self.party or self.partner or ""


class CaseAccess(StrEnum):
    PARTNER = "partner"
    CUSTOMER = "customer"


def case_access(actor: Actor, case_id: str, customer: str, partners: Iterable[str]) -> CaseAccess:
    """How ``actor`` sees a case: services and assigned partners see all of it, the customer all but
    internal entries and supplier requests; anyone else (suppliers included) is refused."""
    if actor.service:
        return CaseAccess.PARTNER
    if actor.party is not None:
        if actor.party == customer:
            return CaseAccess.CUSTOMER
        raise PermissionDenied(f"case {case_id} belongs to another customer")
    if actor.partner in set(partners):
        return CaseAccess.PARTNER
    raise PermissionDenied(
        f"partner {actor.partner} is not assigned to case {case_id}; suppliers see only their own "
        "corrective-action requests"
    )


def require_partner_access(access: CaseAccess, what: str) -> None:
    if access is not CaseAccess.PARTNER:
        raise PermissionDenied(f"only the case's assigned partners may {what}")


def require_own_partner(actor: Actor, partner_id: str, what: str) -> None:
    if actor.service:
        return
    if actor.partner is None or actor.partner != partner_id:
        raise PermissionDenied(f"{what} belongs to partner {partner_id}; the caller is {actor.label}")


def require_party(actor: Actor, party_id: str, what: str) -> None:
    if actor.service:
        return
    if actor.party != party_id:
        raise PermissionDenied(f"{what} belongs to party {party_id}; act for that party (X-On-Behalf-Of)")


# --- initiatives -------------------------------------------------------------------------------


class InitiativeKind(StrEnum):
    PRODUCT_REDESIGN = "product_redesign"
    PROCESS = "process"
    CHANNEL = "channel"
    COMMUNITY = "community"


class Stage(StrEnum):
    PROPOSED = "proposed"
    PLAN = "plan"
    DO = "do"
    CHECK = "check"
    ACT = "act"
    CLOSED = "closed"


_STAGES: dict[Stage, frozenset[Stage]] = {
    Stage.PROPOSED: frozenset({Stage.PLAN, Stage.CLOSED}),
    Stage.PLAN: frozenset({Stage.DO, Stage.CLOSED}),
    Stage.DO: frozenset({Stage.CHECK, Stage.CLOSED}),
    # A check that shows the change did not work sends the initiative back to do.
    Stage.CHECK: frozenset({Stage.ACT, Stage.DO, Stage.CLOSED}),
    # Act standardizes what worked, then plans the next cycle or ends.
    Stage.ACT: frozenset({Stage.PLAN, Stage.CLOSED}),
    Stage.CLOSED: frozenset(),
}


class Platform(StrEnum):
    SALES_CHANNEL = "sales_channel"
    SUPPLY_CHAIN = "supply_chain"
    COMMUNITY = "community"


def require_stage_change(initiative_id: str, current: Stage, target: Stage) -> None:
    if target not in _STAGES[current]:
        allowed = ", ".join(s.value for s in sorted(_STAGES[current])) or "none: it is closed"
        raise FailedPrecondition(
            f"initiative {initiative_id} is in {current.value}; it cannot move to {target.value} (allowed: {allowed})"
        )


def next_cycle(cycle: int, current: Stage, target: Stage) -> int:
    return cycle + 1 if current is Stage.ACT and target is Stage.PLAN else cycle


def require_open_initiative(initiative_id: str, stage: Stage) -> None:
    if stage is Stage.CLOSED:
        raise FailedPrecondition(f"initiative {initiative_id} is closed")


def require_reshapable(initiative_id: str, stage: Stage) -> None:
    """Kind and product are settled once the initiative is being done."""
    if stage not in (Stage.PROPOSED, Stage.PLAN):
        raise FailedPrecondition(
            f"initiative {initiative_id} is in {stage.value}; "
            "its kind and product change only while it is proposed or planned"
        )


def validate_initiative(
    title: str, description: str, kind: InitiativeKind | None, product_id: str, prefix: str = ""
) -> None:
    check = Validator()
    validate_text(check, title, prefix + "title", limit=MAX_TITLE)
    validate_text(check, description, prefix + "description", required=False)
    check.require(kind is not None, prefix + "kind", "must be PRODUCT_REDESIGN, PROCESS, CHANNEL or COMMUNITY")
    if kind is InitiativeKind.PRODUCT_REDESIGN:
        check.require(bool(product_id), prefix + "product_id", "a product redesign names its product")
    check.require(len(product_id) <= MAX_ID, prefix + "product_id", f"must be at most {MAX_ID} characters")
    check.raise_if_any()


@dataclass(frozen=True)
class StakeholderKey:
    partner: str | None
    platform: Platform | None

    @property
    def key(self) -> str:
        return f"partner:{self.partner}" if self.partner else f"platform:{self.platform}"


def validate_stakeholder(
    partner: str, platform: Platform | None, platform_given: bool, role: str, field: str
) -> StakeholderKey:
    check = Validator()
    check.require(bool(partner) != platform_given, field, "names a partner_id or a platform, exactly one")
    if platform_given:
        check.require(platform is not None, f"{field}.platform", "must be SALES_CHANNEL, SUPPLY_CHAIN or COMMUNITY")
    check.require(len(partner) <= MAX_ID, f"{field}.partner_id", f"must be at most {MAX_ID} characters")
    validate_text(check, role, f"{field}.role", required=False, limit=MAX_TITLE)
    check.raise_if_any()
    return StakeholderKey(partner or None, platform)


# --- metrics and objectives --------------------------------------------------------------------


class MetricKind(StrEnum):
    PRODUCT_AVERAGE_RATING = "product_average_rating"
    NEGATIVE_REVIEW_RATE = "negative_review_rate"
    CASE_RECOVERY_RATE = "case_recovery_rate"
    TIME_TO_FIRST_ENGAGEMENT = "time_to_first_engagement"
    REPORTED = "reported"


class Direction(StrEnum):
    INCREASE = "increase"
    DECREASE = "decrease"


@dataclass(frozen=True)
class MetricSpec:
    """What an objective measures; computed metrics follow events, reported ones are recorded."""

    kind: MetricKind
    subject: str  # "product", "partner" or "" (reported)
    subject_id: str
    revision: int
    name: str
    unit: str

    @property
    def computed(self) -> bool:
        return self.kind is not MetricKind.REPORTED

    @property
    def label(self) -> str:
        if self.kind is MetricKind.REPORTED:
            return self.name
        where = f"{self.subject}/{self.subject_id}" + (f"/revision/{self.revision}" if self.revision else "")
        return f"{self.kind.value}:{where}"


_NATURAL: dict[MetricKind, tuple[Direction, str, float, float | None]] = {
    # direction, unit, lowest, highest
    MetricKind.PRODUCT_AVERAGE_RATING: (Direction.INCREASE, "stars", 1.0, 5.0),
    MetricKind.NEGATIVE_REVIEW_RATE: (Direction.DECREASE, "ratio", 0.0, 1.0),
    MetricKind.CASE_RECOVERY_RATE: (Direction.INCREASE, "ratio", 0.0, 1.0),
    MetricKind.TIME_TO_FIRST_ENGAGEMENT: (Direction.DECREASE, "hours", 0.0, None),
}
_REPORTED_NAME = re.compile(r"^[a-z][a-z0-9_.:/-]{0,99}$")


def metric_spec(
    kind: MetricKind | None, product_id: str, revision: int, partner_id: str, name: str, unit: str
) -> MetricSpec:
    check = Validator()
    check.require(kind is not None, "metric.kind", "must name a metric kind")
    check.require(revision >= 0, "metric.revision", "must not be negative")
    spec_subject, subject_id = "", ""
    if kind in (MetricKind.PRODUCT_AVERAGE_RATING, MetricKind.NEGATIVE_REVIEW_RATE):
        check.require(bool(product_id), "metric.product_id", f"{kind.value} is measured for a product")
        check.require(not partner_id, "metric.partner_id", f"{kind.value} is measured for a product, not a partner")
        spec_subject, subject_id = "product", product_id
    elif kind is MetricKind.CASE_RECOVERY_RATE:
        check.require(
            bool(product_id) != bool(partner_id), "metric.product_id", "name a product_id or a partner_id, exactly one"
        )
        check.require(revision == 0, "metric.revision", "recovery rate is measured over all revisions")
        spec_subject, subject_id = ("product", product_id) if product_id else ("partner", partner_id)
    elif kind is MetricKind.TIME_TO_FIRST_ENGAGEMENT:
        check.require(bool(partner_id), "metric.partner_id", "time to first engagement is measured for a partner")
        check.require(not product_id, "metric.product_id", "time to first engagement is measured for a partner")
        check.require(revision == 0, "metric.revision", "applies only to product metrics")
        spec_subject, subject_id = "partner", partner_id
    elif kind is MetricKind.REPORTED:
        check.require(bool(_REPORTED_NAME.match(name)), "metric.name", "a reported metric has a snake_case name")
        check.require(not product_id and not partner_id and revision == 0, "metric", "a reported metric has no subject")
        check.require(len(unit) <= 40, "metric.unit", "must be at most 40 characters")
    if kind is not None and kind is not MetricKind.REPORTED:
        check.require(not name, "metric.name", "only reported metrics have a name")
    check.require(len(subject_id) <= MAX_ID, "metric", f"ids are at most {MAX_ID} characters")
    check.raise_if_any()
    assert kind is not None
    natural_unit = _NATURAL[kind][1] if kind in _NATURAL else unit
    return MetricSpec(
        kind, spec_subject, subject_id, revision, name if kind is MetricKind.REPORTED else "", natural_unit
    )


def objective_direction(spec: MetricSpec, given: Direction | None) -> Direction:
    if spec.kind in _NATURAL:
        natural = _NATURAL[spec.kind][0]
        if given is not None and given is not natural:
            raise InvalidArgument.field("direction", f"{spec.kind.value} improves by {natural.value} only")
        return natural
    if given is None:
        raise InvalidArgument.field("direction", "a reported metric says whether it should INCREASE or DECREASE")
    return given


def validate_objective_values(
    spec: MetricSpec, direction: Direction, baseline: float, target: float, forecast: float | None, prefix: str = ""
) -> None:
    check = Validator()
    if spec.kind in _NATURAL:
        _, unit, low, high = _NATURAL[spec.kind]
        for value, name in ((target, "target"), (baseline, "baseline"), (forecast, "forecast")):
            if value is None:
                continue
            within = value >= low and (high is None or value <= high)
            span = f"{low:g} to {high:g}" if high is not None else f"at least {low:g}"
            check.require(within, prefix + name, f"{spec.kind.value} is {span} {unit}")
    better = target > baseline if direction is Direction.INCREASE else target < baseline
    check.require(
        better,
        prefix + "target",
        f"must be {'above' if direction is Direction.INCREASE else 'below'} the baseline ({baseline:g})",
    )
    check.raise_if_any()


def reached(direction: Direction, value: float | None, target: float) -> bool:
    if value is None:
        return False
    return value >= target if direction is Direction.INCREASE else value <= target


def benefit(direction: Direction, baseline: float, value: float) -> float:
    """How far ``value`` is from the baseline in the better direction (negative when worse)."""
    return value - baseline if direction is Direction.INCREASE else baseline - value


def progress(direction: Direction, baseline: float, target: float, current: float | None) -> float:
    if current is None or target == baseline:
        return 0.0
    done = benefit(direction, baseline, current) / benefit(direction, baseline, target)
    return min(1.0, max(0.0, done))


class Health(StrEnum):
    ON_TRACK = "on_track"
    AT_RISK = "at_risk"
    OFF_TRACK = "off_track"


_SEVERITY = {Health.ON_TRACK: 0, Health.AT_RISK: 1, Health.OFF_TRACK: 2}
AT_RISK_LAG = 0.2
OFF_TRACK_LAG = 0.5


@dataclass(frozen=True)
class ObjectiveState:
    direction: Direction
    baseline: float
    target: float
    forecast: float | None
    current: float | None
    created: datetime
    due: datetime
    met: datetime | None


def objective_health(objective: ObjectiveState, now: datetime) -> Health:
    """On track, at risk or off track, from progress and the due date.

    Met objectives are on track. Past the due date, an unmet one is off track. Before it, progress
    is compared with the share of the time gone by: lagging by more than half of the way is off
    track, by more than a fifth (or with a forecast short of the target) at risk.
    """
    if objective.met is not None or reached(objective.direction, objective.current, objective.target):
        return Health.ON_TRACK
    if now >= objective.due:
        return Health.OFF_TRACK
    span = (objective.due - objective.created).total_seconds()
    elapsed = (now - objective.created).total_seconds() / span if span > 0 else 1.0
    lag = max(0.0, elapsed) - progress(objective.direction, objective.baseline, objective.target, objective.current)
    if lag > OFF_TRACK_LAG:
        return Health.OFF_TRACK
    forecast_short = objective.forecast is not None and not reached(
        objective.direction, objective.forecast, objective.target
    )
    if lag > AT_RISK_LAG or forecast_short:
        return Health.AT_RISK
    return Health.ON_TRACK


def worst(healths: Iterable[Health]) -> Health | None:
    found = list(healths)
    return max(found, key=_SEVERITY.__getitem__) if found else None


def bounded(value: int, field_name: str, default: int, low: int, high: int) -> int:
    if value == 0:
        return default
    if not low <= value <= high:
        raise InvalidArgument.field(field_name, f"must be between {low} and {high}")
    return value


def page_size(value: int) -> int:
    return bounded(value, "page_size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
