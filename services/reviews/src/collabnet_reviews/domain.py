"""The reviews domain: what a review may say, who may do what with it, the automatic moderation
checks, disclosure, syndication, and how a review counts in its product's summaries. Plain Python,
no I/O.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from urllib.parse import urlparse

from collabnet_kit.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Validator
from collabnet_kit.principal import Principal

MIN_RATING = 1
MAX_RATING = 5
MAX_BODY = 10_000
MAX_TITLE = 200
MAX_MEDIA = 10
MAX_URL = 2_000
MAX_INCENTIVE = 500
MAX_RESPONSE = 5_000
MAX_NOTE = 1_000
MIN_PUBLISHABLE_BODY = 20
"""Characters (letters and digits, whitespace collapsed) a body needs to be published: shorter says nothing."""
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
TREND_DAYS = 30

WRITE_SCOPE = "reviews:write"
MODERATE_SCOPE = "reviews:moderate"

# Relationships that make a reviewer affiliated, read from the reviewer's side: with the maker or
# a seller itself, and with one of their people (employees, members). customer_of and member_of
# are what buyers are, never a conflict of interest.
AFFILIATING_TYPES = ("employee_of", "supplier_of", "partner_of", "distributor_for", "carrier_for", "advocate_of")
AFFILIATING_TYPES_VIA_PEOPLE = ("partner_of", "employee_of")
SYMMETRIC_TYPES = frozenset({"partner_of"})


class Status(StrEnum):
    PENDING = "pending"
    PUBLISHED = "published"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


class Reason(StrEnum):
    """The rules a moderation decision can cite; a low rating or a critical opinion is none of them."""

    TOO_SHORT = "too_short"
    PROFANITY = "profanity"
    PERSONAL_DATA = "personal_data"
    DUPLICATE = "duplicate"
    AWAITING_DISCLOSURE = "awaiting_disclosure"
    OFF_TOPIC = "off_topic"
    SPAM = "spam"
    ABUSE = "abuse"
    ILLEGAL_CONTENT = "illegal_content"


SHOWN_OR_PENDING = frozenset({Status.PUBLISHED.value, Status.PENDING.value})
"""The statuses whose texts another review of the same author may not repeat."""
AUTOMATIC_REASONS = frozenset({Reason.TOO_SHORT, Reason.PROFANITY, Reason.PERSONAL_DATA, Reason.DUPLICATE})
REJECTION_REASONS = AUTOMATIC_REASONS | {Reason.OFF_TOPIC, Reason.SPAM, Reason.ABUSE, Reason.ILLEGAL_CONTENT}


class Sort(StrEnum):
    RECENT = "recent"
    HELPFUL = "helpful"
    RATING_HIGH = "rating_high"
    RATING_LOW = "rating_low"


class Vote(StrEnum):
    HELPFUL = "helpful"
    NOT_HELPFUL = "not_helpful"
    NONE = "none"


class Decision(StrEnum):
    PUBLISH = "publish"
    REJECT = "reject"


# --- validation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Words:
    """One version of what an author says: the part only the author may change."""

    rating: int
    title: str
    body: str
    media_urls: tuple[str, ...] = ()


def _words(check: Validator, words: Words) -> None:
    check.require(MIN_RATING <= words.rating <= MAX_RATING, "rating", "must be between 1 and 5 stars")
    check.require(bool(words.body.strip()), "body", "must not be empty")
    check.require(len(words.body) <= MAX_BODY, "body", f"must be at most {MAX_BODY:,} characters")
    check.require(len(words.title) <= MAX_TITLE, "title", f"must be at most {MAX_TITLE} characters")
    check.require(len(words.media_urls) <= MAX_MEDIA, "media_urls", f"at most {MAX_MEDIA} media per review")
    for index, url in enumerate(words.media_urls):
        parsed = urlparse(url)
        check.require(
            parsed.scheme in ("http", "https") and bool(parsed.netloc) and len(url) <= MAX_URL,
            f"media_urls[{index}]",
            "must be an http(s) URL",
        )


def validate_submission(product_id: str, author_id: str, words: Words, incentivized: bool, incentive: str) -> None:
    check = Validator()
    check.require(bool(product_id), "product_id", "is required")
    check.require(bool(author_id), "author_id", "is required")
    _words(check, words)
    check.require(len(incentive) <= MAX_INCENTIVE, "incentive", f"must be at most {MAX_INCENTIVE} characters")
    check.require(incentivized or not incentive.strip(), "incentive", "is given only for an incentivized review")
    check.raise_if_any()


def validate_revision(review_id: str, words: Words) -> None:
    check = Validator()
    check.require(bool(review_id), "review_id", "is required")
    _words(check, words)
    check.raise_if_any()


def validate_response(review_id: str, body: str) -> None:
    check = Validator()
    check.require(bool(review_id), "review_id", "is required")
    check.require(bool(body.strip()), "body", "must not be empty")
    check.require(len(body) <= MAX_RESPONSE, "body", f"must be at most {MAX_RESPONSE:,} characters")
    check.raise_if_any()


def validate_moderation(decision: Decision | None, reasons: Sequence[Reason | None], note: str) -> list[Reason]:
    """The reasons a decision cites, checked: a rejection names at least one rule and says what breaks it."""
    check = Validator()
    check.require(decision is not None, "decision", "must be PUBLISH or REJECT")
    check.require(all(r is not None for r in reasons), "reasons", "must be known moderation reasons")
    check.require(len(note) <= MAX_NOTE, "note", f"must be at most {MAX_NOTE:,} characters")
    known = [r for r in reasons if r is not None]
    if decision is Decision.REJECT:
        check.require(
            bool(known),
            "reasons",
            "a rejection cites at least one rule (a low rating or a critical opinion is not one)",
        )
        check.require(
            all(r in REJECTION_REASONS for r in known),
            "reasons",
            f"a review is rejected only for: {', '.join(sorted(REJECTION_REASONS))}",
        )
        check.require(bool(note.strip()), "note", "a rejection says what in the review breaks the rule")
    check.raise_if_any()
    return sorted(set(known))


def bounded(value: int, field_name: str, default: int, low: int, high: int) -> int:
    """``value``, or ``default`` when 0; INVALID_ARGUMENT naming the field when outside [low, high]."""
    if value == 0:
        return default
    if not low <= value <= high:
        raise InvalidArgument.field(field_name, f"must be between {low} and {high}")
    return value


def page_size(value: int) -> int:
    return bounded(value, "page_size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)


def validate_list_filters(product_id: str, author_id: str, ratings: Sequence[int], revision: int) -> None:
    check = Validator()
    check.require(bool(product_id) != bool(author_id), "product_id", "give exactly one of product_id and author_id")
    check.require(all(MIN_RATING <= r <= MAX_RATING for r in ratings), "ratings", "must be between 1 and 5")
    check.require(revision >= 0, "revision", "must not be negative")
    check.raise_if_any()


# --- automatic moderation ----------------------------------------------------------------------

# A short list of unambiguous English profanity, matched as whole words (and common suffixes), so
# "Scunthorpe" or "class" never match. Deployments extend it through the PROFANITY setting.
PROFANITY = (
    "fuck",
    "fucking",
    "fucked",
    "shit",
    "shitty",
    "bullshit",
    "asshole",
    "bitch",
    "bastard",
    "cunt",
    "dickhead",
    "motherfucker",
    "wanker",
    "twat",
)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
# A phone number: an optional +country code, then at least 7 digits in groups separated by spaces,
# dots, dashes or parentheses. Model numbers such as "X-200" are too short to match.
_PHONE = re.compile(r"(?<![\w])(\+\d{1,3}[\s.-]?)?(\(?\d{2,4}\)?[\s.-]?){2,4}\d{2,4}(?![\w])")
_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def normalize(text: str) -> str:
    """Text reduced to lower-case letters and digits separated by single spaces."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_WORD.findall(folded))


def text_fingerprint(body: str) -> str:
    """What two bodies share when one duplicates the other: the same words, whatever the spacing,
    case or punctuation."""
    return hashlib.sha256(normalize(body).encode()).hexdigest()


def has_personal_data(text: str) -> bool:
    if _EMAIL.search(text):
        return True
    for match in _PHONE.finditer(text):
        found = match.group(0).strip()
        if sum(c.isdigit() for c in found) >= 7 and not _DATE.fullmatch(found):
            return True
    return False


def has_profanity(text: str, words: Collection[str] = PROFANITY) -> bool:
    return any(word in words for word in normalize(text).split())


def automatic_checks(words: Words, *, duplicate: bool, profanity: Collection[str] = PROFANITY) -> list[Reason]:
    """The rules a version breaks, judged on its words alone: never on its rating or its tone."""
    reasons: list[Reason] = []
    if len(normalize(words.body)) < MIN_PUBLISHABLE_BODY:
        reasons.append(Reason.TOO_SHORT)
    text = f"{words.title}\n{words.body}"
    if has_profanity(text, profanity):
        reasons.append(Reason.PROFANITY)
    if has_personal_data(text):
        reasons.append(Reason.PERSONAL_DATA)
    if duplicate:
        reasons.append(Reason.DUPLICATE)
    return reasons


def outcome(reasons: Sequence[Reason], disclosure_known: bool) -> tuple[Status, list[Reason]]:
    """The status a version gets from the automatic checks: rejected when it breaks a rule,
    pending while its disclosure is unknown (an undisclosed affiliation is never shown), else published."""
    if reasons:
        return Status.REJECTED, list(reasons)
    if not disclosure_known:
        return Status.PENDING, [Reason.AWAITING_DISCLOSURE]
    return Status.PUBLISHED, []


# --- disclosure --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tie:
    """A current relationship between the reviewer and a maker or seller (``via`` empty) or one of
    its people (``via`` names that person), as identity's Affiliations reports it."""

    from_party: str
    to_party: str
    type: str
    via: str = ""


def affiliating(
    author: str,
    ties: Iterable[Tie],
    types: Collection[str] = AFFILIATING_TYPES,
    via_people: Collection[str] = AFFILIATING_TYPES_VIA_PEOPLE,
) -> list[Tie]:
    """The ties that make ``author`` affiliated: the reviewer works for, supplies, partners with,
    distributes or carries for, or advocates for the maker or a seller, or partners with or works
    for one of their people. Being their customer or member never counts."""
    found = []
    for tie in ties:
        counted = via_people if tie.via else types
        if tie.type not in counted:
            continue
        if tie.from_party == author or (tie.type in SYMMETRIC_TYPES and tie.to_party == author):
            found.append(tie)
    return found


@dataclass(frozen=True)
class Disclosure:
    verified: bool = False
    revision_bought: int = 0
    incentivized: bool = False
    incentive: str = ""
    affiliated: bool = False


def syndicated_from(channel: str, listing_partner: str | None) -> str:
    """The originating partner, when a review is shown on another partner's listing."""
    if listing_partner and listing_partner != channel:
        return channel
    return ""


def shown_at(channel: str, listing_partner: str, lists_product: bool, opted_out: Collection[str]) -> bool:
    """Whether a published review appears on ``listing_partner``'s page of its product: its own
    reviews always; others' where it lists (or makes) the product, unless their partner opted out."""
    if channel == listing_partner:
        return True
    return lists_product and channel not in opted_out


# --- verified purchase -------------------------------------------------------------------------


@dataclass(frozen=True)
class Purchase:
    order_id: str
    revision: int
    bought_at: datetime
    retailer: str
    cancelled: bool = False
    delivered: bool = False

    @property
    def counts(self) -> bool:
        """A cancelled order is no purchase, unless it was delivered before the cancellation arrived."""
        return self.delivered or not self.cancelled


def latest_purchase(purchases: Iterable[Purchase]) -> Purchase | None:
    valid = [p for p in purchases if p.counts]
    return max(valid, key=lambda p: (p.bought_at, p.order_id)) if valid else None


# --- summaries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counted:
    """What a review contributes to its product's summaries: one rating, for one revision, on the day
    it was given. Only a published review counts."""

    rating: int
    revision: int
    day: date


def counted(status: Status, rating: int, revision: int, day: date | None) -> Counted | None:
    if status is not Status.PUBLISHED or day is None:
        return None
    return Counted(rating, revision, day)


@dataclass
class Delta:
    count: int = 0
    total: int = 0
    distribution: list[int] = field(default_factory=lambda: [0] * 5)

    def add(self, rating: int, sign: int) -> None:
        self.count += sign
        self.total += sign * rating
        self.distribution[rating - 1] += sign

    @property
    def empty(self) -> bool:
        return self.count == 0 and self.total == 0 and not any(self.distribution)


SummaryKey = tuple[int, date | None]
"""(revision, day): revision 0 is the product over all revisions; day None is the all-time summary."""


def summary_deltas(before: Counted | None, after: Counted | None) -> dict[SummaryKey, Delta]:
    """How a review's change moves its product's summaries: the all-time and daily rows of the
    product (revision 0) and of the revision, in key order (the order rows are locked in)."""
    deltas: dict[SummaryKey, Delta] = {}
    for contribution, sign in ((before, -1), (after, 1)):
        if contribution is None:
            continue
        for revision in (0, contribution.revision):
            for day in (None, contribution.day):
                deltas.setdefault((revision, day), Delta()).add(contribution.rating, sign)
    changed = {key: delta for key, delta in deltas.items() if not delta.empty}
    return dict(sorted(changed.items(), key=lambda item: (item[0][0], item[0][1] or date.min)))


@dataclass(frozen=True)
class Stats:
    count: int
    total: int
    distribution: tuple[int, ...]

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def smoothed(self, prior_mean: float, prior_weight: float) -> float:
        """The Bayesian mean: the ratings plus ``prior_weight`` imagined ratings of ``prior_mean``."""
        if self.count == 0 and prior_weight == 0:
            return 0.0
        return (prior_weight * prior_mean + self.total) / (prior_weight + self.count)

    @classmethod
    def zero(cls) -> Stats:
        return cls(0, 0, (0, 0, 0, 0, 0))

    def __add__(self, other: Stats) -> Stats:
        return Stats(
            self.count + other.count,
            self.total + other.total,
            tuple(a + b for a, b in zip(self.distribution, other.distribution, strict=True)),
        )


@dataclass(frozen=True)
class Trend:
    current: Stats
    previous: Stats
    days: list[tuple[date, Stats]]

    @property
    def mean_change(self) -> float:
        if not self.current.count or not self.previous.count:
            return 0.0
        return self.current.mean - self.previous.mean


def trend(daily: Mapping[date, Stats], today: date, days: int = TREND_DAYS) -> Trend:
    """The last ``days`` days (today included) against the ``days`` before them."""
    window = [today - timedelta(days=offset) for offset in range(days - 1, -1, -1)]
    current = Stats.zero()
    for day in window:
        current = current + daily.get(day, Stats.zero())
    previous = Stats.zero()
    for offset in range(days, 2 * days):
        previous = previous + daily.get(today - timedelta(days=offset), Stats.zero())
    return Trend(current, previous, [(day, daily.get(day, Stats.zero())) for day in window])


# --- authorization -----------------------------------------------------------------------------


def require_scope(principal: Principal, scope: str, what: str) -> None:
    if not principal.has_scope(scope):
        raise PermissionDenied(f"{what} needs the scope {scope!r}, which the caller's key does not have")


def submitter(principal: Principal, author_id: str, channel_partner_id: str) -> str:
    """The channel a submission comes through. A partner submits for the party it acts for, through
    itself; a service names both."""
    if principal.service is not None:
        if not channel_partner_id:
            raise InvalidArgument.field("channel_partner_id", "is required when a service submits a review")
        return channel_partner_id
    require_scope(principal, WRITE_SCOPE, "submitting a review")
    if principal.party_id != author_id:
        raise PermissionDenied(
            f"a review is written by its author: the caller acts for {principal.party_id or 'no party'}, "
            f"not {author_id}"
        )
    if channel_partner_id and channel_partner_id != principal.partner_id:
        raise PermissionDenied(
            f"a partner submits reviews through its own channel ({principal.partner_id}), not {channel_partner_id}"
        )
    assert principal.partner_id is not None
    return principal.partner_id


def require_author(principal: Principal, author_id: str, what: str, *, services: bool) -> None:
    """Only the author (through any partner acting for it) changes its review; a partner never
    edits a consumer's words."""
    if principal.service is not None:
        if services:
            return
        raise PermissionDenied(f"only the author may {what}; a service cannot change an author's words")
    require_scope(principal, WRITE_SCOPE, what)
    if principal.party_id != author_id:
        raise PermissionDenied(
            f"only the author may {what}: the review is {author_id}'s and the caller acts for "
            f"{principal.party_id or 'no party'}"
        )


def responder(principal: Principal, partner_id: str) -> str:
    if principal.service is not None:
        if not partner_id:
            raise InvalidArgument.field("partner_id", "is required when a service responds for a partner")
        return partner_id
    require_scope(principal, WRITE_SCOPE, "responding to a review")
    if partner_id and partner_id != principal.partner_id:
        raise PermissionDenied(f"a partner responds as itself ({principal.partner_id}), not as {partner_id}")
    assert principal.partner_id is not None
    return principal.partner_id


def require_maker_or_seller(partner: str, maker: str, sellers: Collection[str], product_id: str) -> None:
    if partner != maker and partner not in sellers:
        raise PermissionDenied(
            f"only a partner that makes or sells product {product_id} may respond to its reviews; "
            f"{partner} does neither"
        )


def voter(principal: Principal, voter_id: str) -> str:
    if principal.service is not None:
        if not voter_id:
            raise InvalidArgument.field("voter_id", "is required when a service votes for a party")
        return voter_id
    require_scope(principal, WRITE_SCOPE, "voting on a review")
    me = principal.party_id or principal.partner_id
    assert me is not None
    if voter_id and voter_id != me:
        raise PermissionDenied(f"a vote is cast by the party the caller acts for ({me}), not {voter_id}")
    return me


def require_votable(status: Status, author_id: str, voter_id: str) -> None:
    if status is Status.WITHDRAWN:
        raise FailedPrecondition("the review was withdrawn by its author: it takes no votes")
    if status is not Status.PUBLISHED:
        raise FailedPrecondition(f"the review is {status.value}: only published reviews take votes")
    if voter_id == author_id:
        raise FailedPrecondition("an author cannot vote on its own review")


def require_moderator(principal: Principal, channel: str) -> None:
    """Moderation is the channel partner's (the review was written on its pages) or a service's;
    a maker or seller with no channel in the review has a stake in it and does not moderate it."""
    if principal.service is not None:
        return
    require_scope(principal, MODERATE_SCOPE, "moderating a review")
    if principal.partner_id != channel:
        raise PermissionDenied(
            f"reviews are moderated by the partner they came through ({channel}); "
            f"the caller is partner {principal.partner_id}"
        )


def moderation_transition(status: Status, decision: Decision) -> Status:
    if status is Status.WITHDRAWN:
        raise FailedPrecondition("the review was withdrawn by its author: there is nothing to moderate")
    return Status.PUBLISHED if decision is Decision.PUBLISH else Status.REJECTED


def sees_unpublished(principal: Principal, author_id: str, channel: str) -> bool:
    """Who sees a review that is not published: its author, its channel partner and services."""
    if principal.service is not None:
        return True
    return principal.party_id == author_id or principal.partner_id == author_id or principal.partner_id == channel


def require_policy_owner(principal: Principal, partner_id: str) -> None:
    if principal.service is None and principal.partner_id != partner_id:
        raise PermissionDenied(
            f"the syndication policy is partner {partner_id}'s own; the caller is partner {principal.partner_id}"
        )
