"""The community domain: communities and memberships, product questions and answers, reputation,
ideas, and the calendar arithmetic of engagement metrics. Plain Python, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

from collabnet_kit.errors import AlreadyExists, FailedPrecondition, InvalidArgument, PermissionDenied, Validator
from collabnet_kit.principal import Principal

MAX_NAME = 200
MAX_DESCRIPTION = 5000
MAX_TITLE = 200
MIN_TITLE = 3
MAX_BODY = 5000
MAX_NOTE = 1000
MAX_SCOPE_PRODUCTS = 500
MAX_ID = 64
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
TOP_ANSWERS = 3
"""Answers shown with each question of a list."""
MAX_METRIC_DAYS = 3660
"""The longest range engagement metrics are computed for: ten years, day by day."""
RETENTION_DAYS = (30, 60, 90)
RETENTION_WINDOW_DAYS = 30
"""A member is retained at N days when active in days [N, N + 30) after first joining."""


# --- communities -------------------------------------------------------------------------------


class ScopeKind(StrEnum):
    BRAND = "brand"
    CATEGORY = "category"
    PRODUCTS = "products"


@dataclass(frozen=True)
class Product:
    """What the community knows of a product from supplychain's events."""

    id: str
    maker_id: str
    name: str = ""
    category: str = ""
    brand: str = ""
    sellers: frozenset[str] = frozenset()

    def speaks_for(self, partner_id: str) -> bool:
        """Whether ``partner_id`` may answer officially: the maker or a retailer listing it."""
        return partner_id == self.maker_id or partner_id in self.sellers


def normalize_brand(brand: str) -> str:
    return " ".join(brand.split()).casefold()


def normalize_category(category: str) -> str:
    return "/".join(part.strip().casefold() for part in category.strip().strip("/").split("/") if part.strip())


def category_ancestors(category: str) -> list[str]:
    """``kitchen/blenders/pro`` -> ``kitchen``, ``kitchen/blenders``, ``kitchen/blenders/pro``."""
    parts = normalize_category(category).split("/") if category.strip() else []
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


@dataclass(frozen=True)
class Scope:
    kind: ScopeKind
    value: str = ""
    product_ids: tuple[str, ...] = ()

    @classmethod
    def brand(cls, brand: str) -> Scope:
        return cls(ScopeKind.BRAND, normalize_brand(brand))

    @classmethod
    def category(cls, category: str) -> Scope:
        return cls(ScopeKind.CATEGORY, normalize_category(category))

    @classmethod
    def products(cls, product_ids: Iterable[str]) -> Scope:
        return cls(ScopeKind.PRODUCTS, "", tuple(dict.fromkeys(product_ids)))

    def covers(self, product: Product) -> bool:
        if self.kind is ScopeKind.PRODUCTS:
            return product.id in self.product_ids
        if self.kind is ScopeKind.BRAND:
            return bool(self.value) and normalize_brand(product.brand) == self.value
        return bool(self.value) and self.value in category_ancestors(product.category)

    def describe(self) -> str:
        if self.kind is ScopeKind.PRODUCTS:
            return f"{len(self.product_ids)} products"
        return f"{self.kind.value} {self.value!r}"


@dataclass(frozen=True)
class Community:
    id: str
    partner_id: str
    name: str
    scope: Scope
    open_to_non_members: bool = False


def validate_community(partner_id: str, name: str, description: str, scope: Scope | None) -> None:
    check = Validator()
    check.require(bool(partner_id), "community.partner_id", "is required when a service creates a community")
    check.require(bool(name.strip()), "community.name", "must not be empty")
    check.require(len(name.strip()) <= MAX_NAME, "community.name", f"must be at most {MAX_NAME} characters")
    check.require(
        len(description) <= MAX_DESCRIPTION, "community.description", f"must be at most {MAX_DESCRIPTION} characters"
    )
    if scope is None:
        check.require(False, "community.scope", "must be a brand, a category or a set of products")
    elif scope.kind is ScopeKind.PRODUCTS:
        check.require(bool(scope.product_ids), "community.scope.products", "must name at least one product")
        check.require(
            len(scope.product_ids) <= MAX_SCOPE_PRODUCTS,
            "community.scope.products",
            f"at most {MAX_SCOPE_PRODUCTS} products",
        )
        check.require(
            all(p.strip() and len(p) <= MAX_ID for p in scope.product_ids),
            "community.scope.products",
            "product ids must not be empty",
        )
    else:
        check.require(bool(scope.value), f"community.scope.{scope.kind.value}", "must not be empty")
        check.require(len(scope.value) <= MAX_NAME, f"community.scope.{scope.kind.value}", "is too long")
    check.raise_if_any()


def require_in_scope(community: Community, product: Product) -> None:
    if not community.scope.covers(product):
        raise FailedPrecondition(
            f"product {product.id} is outside community {community.id}'s scope ({community.scope.describe()})"
        )


# --- memberships -------------------------------------------------------------------------------


class Role(StrEnum):
    MEMBER = "member"
    EXPERT = "expert"
    MODERATOR = "moderator"


def may_set_role(
    principal: Principal, community: Community, actor_role: Role | None, target: str, old: Role, new: Role
) -> None:
    """The community's partner (and services) set any role; a moderator makes members experts and
    back, but neither makes nor unmakes moderators, nor changes its own role."""
    if principal.service is not None or (principal.partner_id == community.partner_id and principal.party_id is None):
        return
    if actor_role is not Role.MODERATOR:
        raise PermissionDenied(
            f"roles in community {community.id} are set by its partner {community.partner_id} or its moderators"
        )
    if principal.party_id == target:
        raise PermissionDenied("a moderator does not change its own role")
    if Role.MODERATOR in (old, new):
        raise PermissionDenied(f"only partner {community.partner_id} makes or unmakes moderators")


def may_manage(principal: Principal, community: Community, actor_role: Role | None, what: str) -> None:
    """The community's partner (as itself), its moderators and services manage its content."""
    if principal.service is not None:
        return
    if principal.partner_id == community.partner_id and principal.party_id is None:
        return
    if actor_role is Role.MODERATOR:
        return
    raise PermissionDenied(
        f"{what} in community {community.id} is for its partner {community.partner_id} and moderators"
    )


def require_runner(principal: Principal, community: Community, what: str) -> None:
    if principal.service is None and principal.partner_id != community.partner_id:
        raise PermissionDenied(f"{what} of community {community.id} is for its partner {community.partner_id}")


# --- who acts ----------------------------------------------------------------------------------


def acting_party(principal: Principal, requested: str, field_name: str, what: str) -> str:
    """The party a call acts for: the principal's, or for a service the one it names."""
    if principal.service is not None:
        if not requested:
            raise InvalidArgument.field(field_name, "is required when a service calls")
        return requested
    if not principal.party_id:
        raise PermissionDenied(f"{what} is done by a party: act for one (X-On-Behalf-Of)")
    if requested and requested != principal.party_id:
        raise PermissionDenied(f"the caller acts for party {principal.party_id}, not {requested}")
    return principal.party_id


def require_own(principal: Principal, party_id: str, what: str) -> None:
    """What is a party's own (invitations, notifications, ledger) is for the party and services."""
    if principal.service is None and principal.party_id != party_id:
        raise PermissionDenied(f"{what} of party {party_id} are visible to that party only (act for it)")


def own_partner(principal: Principal, requested: str, field_name: str) -> str:
    """The partner a call speaks for: the caller's own, or for a service the one it names."""
    if principal.service is not None:
        if not requested:
            raise InvalidArgument.field(field_name, "is required when a service calls")
        return requested
    partner = principal.partner_id or ""
    if requested and requested != partner:
        raise PermissionDenied(f"the caller is partner {partner}, not {requested}")
    return partner


# --- questions and answers ---------------------------------------------------------------------


def validate_question(community_id: str, product_id: str, title: str, body: str) -> None:
    check = Validator()
    check.require(bool(community_id), "community_id", "is required")
    check.require(bool(product_id), "product_id", "is required")
    check.require(
        MIN_TITLE <= len(title.strip()) <= MAX_TITLE, "title", f"must be {MIN_TITLE} to {MAX_TITLE} characters"
    )
    check.require(len(body) <= MAX_BODY, "body", f"must be at most {MAX_BODY} characters")
    check.raise_if_any()


def validate_answer(question_id: str, body: str) -> None:
    check = Validator()
    check.require(bool(question_id), "question_id", "is required")
    check.require(bool(body.strip()), "body", "must not be empty")
    check.require(len(body) <= MAX_BODY, "body", f"must be at most {MAX_BODY} characters")
    check.raise_if_any()


def require_member_to_post(community: Community, is_member: bool, what: str) -> None:
    if not is_member and not community.open_to_non_members:
        raise PermissionDenied(f"{what} in community {community.id} is for its members: join it first")


@dataclass(frozen=True)
class Answerer:
    party_id: str
    official_partner: str | None


def answerer_of(principal: Principal, product: Product, request_party: str, official: bool, partner: str) -> Answerer:
    """Who answers and whether officially.

    A partner calling as itself (acting for no party) answers for itself, officially, and may do so
    only for products it makes or sells. A partner acting for a party answers as that party; with
    ``official`` it vouches that the party speaks for it (one of its people), which again needs the
    partner to make or sell the product. A service names the party, and the partner when official.
    """
    if principal.service is not None:
        speaking = partner
        if official and not speaking:
            raise InvalidArgument.field("official_partner_id", "is required for an official answer by a service")
        party = request_party or (speaking if official else "")
        if not party:
            raise InvalidArgument.field("answerer_party_id", "is required when a service calls")
    else:
        own = principal.partner_id or ""
        if partner and partner != own:
            raise PermissionDenied(f"partner {own} answers officially for itself only, not for {partner}")
        speaking = own
        if principal.party_id:
            if request_party and request_party != principal.party_id:
                raise PermissionDenied(f"the caller acts for party {principal.party_id}, not {request_party}")
            party = principal.party_id
        else:
            party = own
            official = True
    if not official:
        return Answerer(party, None)
    if not product.speaks_for(speaking):
        raise PermissionDenied(
            f"partner {speaking} neither makes nor sells product {product.id}: "
            "official answers come from its maker and the retailers listing it"
        )
    return Answerer(party, speaking)


def may_answer(
    community: Community,
    asker: str,
    answerer: Answerer,
    is_member: bool,
    invited: bool,
    answered_before: bool,
) -> None:
    if answerer.party_id == asker:
        raise FailedPrecondition("an asker does not answer its own question")
    if answered_before:
        raise AlreadyExists(f"party {answerer.party_id} has answered this question already")
    if answerer.official_partner is None and not invited:
        require_member_to_post(community, is_member, "answering")


def may_accept(asker: str, actor: str, accepted_answer: str | None, answer_id: str) -> None:
    if actor != asker:
        raise PermissionDenied(f"only the asker ({asker}) accepts an answer to the question")
    if accepted_answer == answer_id:
        raise AlreadyExists(f"answer {answer_id} is accepted already")
    if accepted_answer:
        raise FailedPrecondition(f"the question has an accepted answer already ({accepted_answer})")


def may_vote_answer(answerer: str, voter: str, voted_before: bool) -> None:
    if voter == answerer:
        raise FailedPrecondition("a party does not vote on its own answer")
    if voted_before:
        raise AlreadyExists(f"party {voter} has voted on this answer already")


# --- ideas -------------------------------------------------------------------------------------


class IdeaStatus(StrEnum):
    NEW = "new"
    UNDER_REVIEW = "under_review"
    PLANNED = "planned"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    DECLINED = "declined"


STATUS_LABELS = {
    IdeaStatus.NEW: "new",
    IdeaStatus.UNDER_REVIEW: "under review",
    IdeaStatus.PLANNED: "planned",
    IdeaStatus.IN_PROGRESS: "in progress",
    IdeaStatus.DONE: "done",
    IdeaStatus.DECLINED: "declined",
}

TRANSITIONS: dict[IdeaStatus, frozenset[IdeaStatus]] = {
    IdeaStatus.NEW: frozenset({IdeaStatus.UNDER_REVIEW, IdeaStatus.PLANNED, IdeaStatus.DECLINED}),
    IdeaStatus.UNDER_REVIEW: frozenset({IdeaStatus.NEW, IdeaStatus.PLANNED, IdeaStatus.DECLINED}),
    IdeaStatus.PLANNED: frozenset({IdeaStatus.UNDER_REVIEW, IdeaStatus.IN_PROGRESS, IdeaStatus.DECLINED}),
    IdeaStatus.IN_PROGRESS: frozenset({IdeaStatus.PLANNED, IdeaStatus.DONE, IdeaStatus.DECLINED}),
    IdeaStatus.DONE: frozenset(),
    IdeaStatus.DECLINED: frozenset({IdeaStatus.UNDER_REVIEW}),
}
"""Where an idea may go from each status: done is final; a declined idea may be reconsidered."""
CLOSED = frozenset({IdeaStatus.DONE, IdeaStatus.DECLINED})


def validate_idea(community_id: str, title: str, description: str) -> None:
    check = Validator()
    check.require(bool(community_id), "community_id", "is required")
    check.require(
        MIN_TITLE <= len(title.strip()) <= MAX_TITLE, "title", f"must be {MIN_TITLE} to {MAX_TITLE} characters"
    )
    check.require(bool(description.strip()), "description", "must not be empty")
    check.require(len(description) <= MAX_BODY, "description", f"must be at most {MAX_BODY} characters")
    check.raise_if_any()


def check_transition(old: IdeaStatus, new: IdeaStatus) -> None:
    if old == new:
        raise FailedPrecondition(f"the idea is {STATUS_LABELS[old]} already")
    if new not in TRANSITIONS[old]:
        allowed = ", ".join(STATUS_LABELS[s] for s in sorted(TRANSITIONS[old])) or "nothing: it is final"
        raise FailedPrecondition(f"an idea that is {STATUS_LABELS[old]} may move to {allowed}")


def may_vote_idea(submitter: str, voter: str, status: IdeaStatus, voted_before: bool) -> None:
    if voter == submitter:
        raise FailedPrecondition("a member does not vote for its own idea")
    if status in CLOSED:
        raise FailedPrecondition(f"the idea is {STATUS_LABELS[status]}: voting is closed")
    if voted_before:
        raise AlreadyExists(f"party {voter} has voted for this idea already")


def may_promote(
    partner: str, community: Community, product: Product | None, status: IdeaStatus, promoted_by: Collection[str]
) -> None:
    """The community's partner, and for a product idea its maker and sellers, may promote it once each."""
    if partner != community.partner_id and (product is None or not product.speaks_for(partner)):
        raise PermissionDenied(
            f"partner {partner} neither runs community {community.id} nor makes or sells the idea's product"
        )
    if status is IdeaStatus.DECLINED:
        raise FailedPrecondition("a declined idea is not promoted: reconsider it first")
    if partner in promoted_by:
        raise AlreadyExists(f"partner {partner} has promoted this idea already")


def status_message(title: str, old: IdeaStatus, new: IdeaStatus, note: str) -> str:
    text = f"The idea “{title}” moved from {STATUS_LABELS[old]} to {STATUS_LABELS[new]}."
    return f"{text} {note}" if note else text


# --- reputation --------------------------------------------------------------------------------


class Reason(StrEnum):
    REVIEW_PUBLISHED = "review_published"
    ANSWER_POSTED = "answer_posted"
    ANSWER_ACCEPTED = "answer_accepted"
    IDEA_PROMOTED = "idea_promoted"
    CO_DESIGN_JOINED = "co_design_joined"
    CASE_RECOVERED = "case_recovered"


POINTS: dict[Reason, int] = {
    Reason.REVIEW_PUBLISHED: 10,
    Reason.ANSWER_POSTED: 5,
    Reason.ANSWER_ACCEPTED: 25,
    Reason.IDEA_PROMOTED: 50,
    Reason.CO_DESIGN_JOINED: 30,
    Reason.CASE_RECOVERED: 20,
}

RANKS: tuple[tuple[int, str], ...] = (
    (0, "newcomer"),
    (25, "contributor"),
    (100, "regular"),
    (300, "trusted"),
    (1000, "leader"),
    (3000, "champion"),
)


@dataclass(frozen=True)
class Rank:
    name: str
    next_name: str
    points_to_next: int


def rank_of(points: int) -> Rank:
    current = RANKS[0][1]
    for threshold, name in RANKS:
        if points >= threshold:
            current = name
        else:
            return Rank(current, name, threshold - points)
    return Rank(current, "", 0)


@dataclass(frozen=True)
class Ownership:
    product_id: str
    product_name: str
    since: datetime


@dataclass(frozen=True)
class CoDesign:
    product_id: str
    label: str
    since: datetime


@dataclass(frozen=True)
class RoleHeld:
    community_id: str
    community_name: str
    role: Role
    since: datetime


@dataclass(frozen=True)
class Earned:
    """How often a party earned points for one reason, and since when."""

    reason: Reason
    count: int
    first: datetime


@dataclass(frozen=True)
class Badge:
    kind: str
    label: str
    since: datetime
    product_id: str = ""
    community_id: str = ""
    count: int = 0


def badges(
    ownerships: Sequence[Ownership], co_designs: Sequence[CoDesign], roles: Sequence[RoleHeld], earned: Sequence[Earned]
) -> list[Badge]:
    """Badges from verified roles (bought it, co-designed it, expert or moderator) and from points."""
    found: list[Badge] = []
    for owned in sorted(ownerships, key=lambda o: (o.since, o.product_id)):
        what = f" {owned.product_name}" if owned.product_name else ""
        found.append(Badge("owner", f"Owner{what} since {owned.since:%Y-%m}", owned.since, product_id=owned.product_id))
    for design in sorted(co_designs, key=lambda d: (d.since, d.label)):
        found.append(Badge("co_designer", f"Co-designed {design.label}", design.since, product_id=design.product_id))
    for held in sorted(roles, key=lambda r: (r.since, r.community_id)):
        if held.role is Role.MEMBER:
            continue
        title = "Expert" if held.role is Role.EXPERT else "Moderator"
        found.append(
            Badge(held.role.value, f"{title} in {held.community_name}", held.since, community_id=held.community_id)
        )
    counted = {
        Reason.ANSWER_ACCEPTED: ("accepted_answers", "accepted answer"),
        Reason.IDEA_PROMOTED: ("promoted_ideas", "promoted idea"),
    }
    for entry in sorted(earned, key=lambda e: e.reason.value):
        if entry.reason in counted and entry.count > 0:
            kind, noun = counted[entry.reason]
            plural = "s" if entry.count != 1 else ""
            found.append(Badge(kind, f"{entry.count} {noun}{plural}", entry.first, count=entry.count))
    return found


# --- calendar of metrics -----------------------------------------------------------------------

EPOCH = date(1970, 1, 1)


def day_number(at: datetime) -> int:
    """Days since 1970-01-01 of a moment's UTC date."""
    return (at.astimezone(UTC).date() - EPOCH).days


def week_number(day: int) -> int:
    """Weeks begin on Monday; 1970-01-01 was a Thursday, so day 4 (a Monday) starts week 1."""
    return (day + 3) // 7


def month_number(at: datetime | date) -> int:
    moment = at.astimezone(UTC).date() if isinstance(at, datetime) else at
    return moment.year * 12 + moment.month - 1


def day_month(day: int) -> int:
    return month_number(EPOCH + timedelta(days=day))


def day_start(day: int) -> datetime:
    return datetime.combine(EPOCH + timedelta(days=day), datetime.min.time(), UTC)


def week_start(week: int) -> datetime:
    return day_start(week * 7 - 3)


def month_start(month: int) -> datetime:
    return datetime(month // 12, month % 12 + 1, 1, tzinfo=UTC)


def week_first_day(week: int) -> int:
    return week * 7 - 3


def month_first_day(month: int) -> int:
    return day_number(month_start(month))


@dataclass(frozen=True)
class Split:
    """A range of days as the whole periods (weeks or months) ``[first_period, end_period)`` inside it,
    and the days before and after them: two half-open day ranges, either possibly empty."""

    first_period: int
    end_period: int
    edges: tuple[tuple[int, int], tuple[int, int]]


@dataclass(frozen=True)
class DayRange:
    """A half-open range of whole UTC days [first, end)."""

    first: int
    end: int

    @property
    def days(self) -> int:
        return self.end - self.first

    def weeks(self) -> list[int]:
        return list(range(week_number(self.first), week_number(self.end - 1) + 1))

    def months(self) -> list[int]:
        return list(range(day_month(self.first), day_month(self.end - 1) + 1))

    def split(self, first_period: int, end_period: int, first_day: Callable[[int], int]) -> Split:
        if end_period <= first_period:
            return Split(0, 0, ((self.first, self.end), (self.end, self.end)))
        return Split(
            first_period, end_period, ((self.first, first_day(first_period)), (first_day(end_period), self.end))
        )

    def split_weeks(self) -> Split:
        # The first week starting on or after the first day, up to the week holding the end day.
        return self.split(week_number(self.first + 6), week_number(self.end), week_first_day)

    def split_months(self) -> Split:
        first = day_month(self.first)
        if month_first_day(first) != self.first:
            first += 1
        return self.split(first, day_month(self.end), month_first_day)


def metric_range(start: datetime | None, end: datetime | None) -> DayRange:
    """The range rounded out to whole UTC days: from the start's day to the end of the end's day."""
    check = Validator()
    check.require(start is not None, "start_time", "is required")
    check.require(end is not None, "end_time", "is required")
    check.raise_if_any()
    assert start is not None and end is not None
    if end <= start:
        raise InvalidArgument.field("end_time", "must be after start_time")
    first = day_number(start)
    last = day_number(end - timedelta(microseconds=1))
    if last - first + 1 > MAX_METRIC_DAYS:
        raise InvalidArgument.field("end_time", f"the range is at most {MAX_METRIC_DAYS} days")
    return DayRange(first, last + 1)


def ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


# --- paging ------------------------------------------------------------------------------------


def bounded(value: int, field_name: str, default: int, low: int, high: int) -> int:
    """``value``, or ``default`` when 0; INVALID_ARGUMENT naming the field when outside [low, high]."""
    if value == 0:
        return default
    if not low <= value <= high:
        raise InvalidArgument.field(field_name, f"must be between {low} and {high}")
    return value


def page_size(value: int) -> int:
    return bounded(value, "page_size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
