"""The identity domain: parties, partners, typed relationships in time, consent, API keys, and the
rules of who may act for whom. Plain Python, no I/O.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from collabnet_kit.errors import InvalidArgument, PermissionDenied, Validator
from collabnet_kit.principal import Principal

MAX_NAME = 200
MAX_ATTRIBUTES = 50
MAX_ATTRIBUTE_LENGTH = 500
NEIGHBORHOOD_MAX_DEPTH = 3
NEIGHBORHOOD_DEFAULT_PARTIES = 200
NEIGHBORHOOD_MAX_PARTIES = 2000
PATHS_MAX_DEPTH = 6
PATHS_DEFAULT_DEPTH = 4
PATHS_MAX_K = 10
PATHS_DEFAULT_K = 3
SERVE_MAX_HOPS = 4
SERVE_DEFAULT_HOPS = 3
SERVE_DEFAULT_LIMIT = 20
SERVE_MAX_LIMIT = 100
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

_NAME = re.compile(r"^[a-z][a-z0-9_]{1,62}$")
_CAPABILITY = re.compile(r"^[a-z0-9][a-z0-9_-]*(:[a-z0-9][a-z0-9_./-]*)*$")
_PURPOSE = re.compile(r"^[a-z][a-z0-9_-]*(:[a-z0-9][a-z0-9_./-]*)*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+?[0-9 ()./-]{5,30}$")
_SCOPE = re.compile(r"^[a-z][a-z0-9_-]*(:[a-z0-9_*-]+)*$")

KEY_SCHEME = "cnk"
"""API key secrets read ``cnk_<prefix>_<secret>``: the prefix is shown, the whole is never stored."""


class PartyKind(StrEnum):
    PERSON = "person"
    ORGANIZATION = "organization"


class PartnerKind(StrEnum):
    RETAILER = "retailer"
    MANUFACTURER = "manufacturer"
    SUPPLIER = "supplier"
    DISTRIBUTOR = "distributor"
    CARRIER = "carrier"
    SERVICE_PROVIDER = "service_provider"


class Direction(StrEnum):
    OUTGOING = "outgoing"
    INCOMING = "incoming"
    BOTH = "both"


@dataclass(frozen=True)
class RelationshipType:
    name: str
    inverse_name: str
    description: str = ""
    public: bool = False

    @property
    def symmetric(self) -> bool:
        return self.name == self.inverse_name


DEFAULT_TYPES = (
    RelationshipType("supplier_of", "supplied_by", "supplies goods or materials to", public=True),
    RelationshipType("customer_of", "serves", "buys from; attribute customer_type: retail, wholesale, subscription"),
    RelationshipType("member_of", "has_member", "belongs to (a community, a cooperative, a buying group)"),
    RelationshipType("employee_of", "employs", "works for"),
    RelationshipType("partner_of", "partner_of", "works together with", public=True),
    RelationshipType("carrier_for", "carried_by", "carries goods for", public=True),
    RelationshipType("distributor_for", "distributed_by", "distributes the products of", public=True),
    RelationshipType("advocate_of", "advocated_by", "recommends and speaks for"),
)

ACTS_FOR_NOTE = "a partner may act for a party only while the party has a current relationship with it"


@dataclass(frozen=True)
class Relationship:
    id: str
    from_party: str
    to_party: str
    type: str
    context_partner: str
    attributes: Mapping[str, str]
    valid_from: datetime
    valid_to: datetime | None
    created_at: datetime
    end_reason: str = ""

    def valid_at(self, at: datetime) -> bool:
        return self.valid_from <= at and (self.valid_to is None or at < self.valid_to)

    def other_end(self, party: str) -> str:
        return self.to_party if self.from_party == party else self.from_party

    def involves(self, *parties: str | None) -> bool:
        return any(p is not None and p in (self.from_party, self.to_party) for p in parties)


def overlaps(a_from: datetime, a_to: datetime | None, b_from: datetime, b_to: datetime | None) -> bool:
    """Whether two half-open validity intervals [from, to) share a moment (None is open-ended)."""
    return (a_to is None or b_from < a_to) and (b_to is None or a_from < b_to)


def role_of(party: str, relationship: Relationship, types: Mapping[str, RelationshipType]) -> str:
    """The relationship's type as read from ``party``'s side."""
    kind = types[relationship.type]
    return kind.name if relationship.from_party == party else kind.inverse_name


# --- validation ------------------------------------------------------------------------------


def _attributes(check: Validator, attributes: Mapping[str, str], field_name: str = "attributes") -> None:
    check.require(len(attributes) <= MAX_ATTRIBUTES, field_name, f"at most {MAX_ATTRIBUTES} entries")
    for key, value in attributes.items():
        check.require(bool(key.strip()), field_name, "keys must not be empty")
        check.require(
            len(key) <= 100 and len(value) <= MAX_ATTRIBUTE_LENGTH,
            f"{field_name}.{key}",
            f"keys at most 100 and values at most {MAX_ATTRIBUTE_LENGTH} characters",
        )


def validate_party(
    kind: PartyKind | None, display_name: str, email: str | None, phone: str | None, attributes: Mapping[str, str]
) -> None:
    check = Validator()
    check.require(kind is not None, "kind", "must be PERSON or ORGANIZATION")
    check.require(bool(display_name.strip()), "display_name", "must not be empty")
    check.require(len(display_name) <= MAX_NAME, "display_name", f"must be at most {MAX_NAME} characters")
    if email is not None:
        check.require(bool(_EMAIL.match(email)), "email", "must be an e-mail address")
    if phone is not None:
        check.require(bool(_PHONE.match(phone)), "phone", "must be a phone number")
    _attributes(check, attributes)
    check.raise_if_any()


def validate_capability(capability: str, field_name: str = "capability") -> None:
    if not _CAPABILITY.match(capability) or len(capability) > 100:
        raise InvalidArgument.field(
            field_name, "must be a namespaced capability such as `repair`, `ship:eu` or `answer:category/kitchen`"
        )


def validate_join(kinds: Sequence[PartnerKind | None], capabilities: Sequence[str], display_name: str | None) -> None:
    check = Validator()
    check.require(bool(kinds), "kinds", "a partner has at least one kind")
    check.require(all(k is not None for k in kinds), "kinds", "must be known partner kinds")
    if display_name is not None:
        check.require(bool(display_name.strip()), "display_name", "must not be empty for a new organization")
        check.require(len(display_name) <= MAX_NAME, "display_name", f"must be at most {MAX_NAME} characters")
    for index, capability in enumerate(capabilities):
        check.require(bool(_CAPABILITY.match(capability)), f"capabilities[{index}]", "must be a namespaced capability")
    check.raise_if_any()


def validate_relationship_type(kind: RelationshipType, existing: Mapping[str, RelationshipType]) -> None:
    check = Validator()
    check.require(bool(_NAME.match(kind.name)), "relationship_type.name", "must be snake_case, 2 to 63 characters")
    check.require(
        bool(_NAME.match(kind.inverse_name)), "relationship_type.inverse_name", "must be snake_case, 2 to 63 characters"
    )
    taken = {n for t in existing.values() for n in (t.name, t.inverse_name)}
    check.require(kind.name not in taken, "relationship_type.name", "is already the name of a relationship type")
    if kind.inverse_name != kind.name:
        check.require(
            kind.inverse_name not in taken,
            "relationship_type.inverse_name",
            "is already the name of a relationship type",
        )
    check.raise_if_any()


def validate_relationship(
    from_party: str,
    to_party: str,
    type_name: str,
    types: Mapping[str, RelationshipType],
    valid_from: datetime,
    valid_to: datetime | None,
    attributes: Mapping[str, str],
) -> None:
    check = Validator()
    check.require(bool(from_party), "from_party_id", "must not be empty")
    check.require(bool(to_party), "to_party_id", "must not be empty")
    check.require(from_party != to_party or not from_party, "to_party_id", "a party cannot relate to itself")
    check.require(
        type_name in types,
        "type",
        f"unknown relationship type {type_name!r}; known: {', '.join(sorted(types))}",
    )
    if valid_to is not None:
        check.require(valid_to > valid_from, "valid_to", "must be after valid_from")
    _attributes(check, attributes)
    check.raise_if_any()


def validate_types_filter(types: Iterable[str], known: Mapping[str, RelationshipType]) -> None:
    unknown = sorted(set(types) - set(known))
    if unknown:
        raise InvalidArgument.field("types", f"unknown relationship types: {', '.join(unknown)}")


def bounded(value: int, field_name: str, default: int, low: int, high: int) -> int:
    """``value``, or ``default`` when 0; INVALID_ARGUMENT naming the field when outside [low, high]."""
    if value == 0:
        return default
    if not low <= value <= high:
        raise InvalidArgument.field(field_name, f"must be between {low} and {high}")
    return value


def page_size(value: int) -> int:
    return bounded(value, "page_size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)


def validate_purpose(purpose: str) -> None:
    if not _PURPOSE.match(purpose) or len(purpose) > 100:
        raise InvalidArgument.field(
            "purpose",
            "must be a namespaced purpose such as `contact:recall`, `share:contact-with-maker` or `analytics`",
        )


def validate_scopes(scopes: Sequence[str]) -> None:
    check = Validator()
    check.require(bool(scopes), "scopes", "a key needs at least one scope")
    for index, scope in enumerate(scopes):
        check.require(bool(_SCOPE.match(scope)), f"scopes[{index}]", "must look like `reviews:write`")
    check.raise_if_any()


# --- consent -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsentRecord:
    id: str
    party: str
    partner: str
    purpose: str
    granted: bool
    source: str
    captured_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True)
class ConsentAnswer:
    granted: bool
    record: ConsentRecord | None
    reason: str


def consent_at(records: Iterable[ConsentRecord], at: datetime) -> ConsentAnswer:
    """What a party's consent records for one (partner, purpose) say at ``at``: the latest record
    captured by then decides; a grant past its expiry no longer holds."""
    earlier = [r for r in records if r.captured_at <= at]
    if not earlier:
        return ConsentAnswer(False, None, "no consent was ever recorded")
    latest = max(earlier, key=lambda r: (r.captured_at, r.id))
    if not latest.granted:
        return ConsentAnswer(False, latest, f"revoked at {latest.captured_at.isoformat()}")
    if latest.expires_at is not None and latest.expires_at <= at:
        return ConsentAnswer(False, latest, f"expired at {latest.expires_at.isoformat()}")
    return ConsentAnswer(True, latest, f"granted at {latest.captured_at.isoformat()} through {latest.source}")


# --- API keys ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewKey:
    prefix: str
    secret: str
    secret_hash: str


def new_api_key() -> NewKey:
    """A fresh key: 8 characters shown as its prefix, 32 random bytes after it."""
    prefix = secrets.token_hex(4)
    secret = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    return NewKey(prefix, secret, hash_secret(secret))


def hash_secret(secret: str) -> str:
    # A key carries 256 random bits, so a fast hash is as safe as a slow one and keeps
    # authentication cheap; only the hash is stored.
    return hashlib.sha256(secret.encode()).hexdigest()


def key_prefix(secret: str) -> str | None:
    """The prefix a secret claims, or None when it is not shaped like one of our keys."""
    parts = secret.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME or len(parts[1]) != 8:
        return None
    return parts[1]


def same_secret(secret: str, stored_hash: str) -> bool:
    return secrets.compare_digest(hash_secret(secret), stored_hash)


# --- authorization -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    relationship_id: str = ""


def acts_for(
    partner: str, party: str, current: Sequence[Relationship], types: Mapping[str, RelationshipType]
) -> Decision:
    """Whether ``partner`` may act for ``party``, given their current relationships (in either direction)."""
    if partner == party:
        return Decision(True, "a partner acts for itself")
    between = [r for r in current if r.involves(party) and r.involves(partner)]
    if not between:
        return Decision(False, f"{party} has no current relationship with {partner}: {ACTS_FOR_NOTE}")
    chosen = min(between, key=lambda r: (r.valid_from, r.id))
    return Decision(True, f"{party} is {role_of(party, chosen, types)} {partner}", chosen.id)


def require_partner_or_service(principal: Principal, partner: str, what: str) -> None:
    """A partner may manage only its own resources; services may manage any."""
    if principal.service is None and principal.partner_id != partner:
        raise PermissionDenied(f"{what} belongs to partner {partner}; the caller is partner {principal.partner_id}")


def require_key_manager(principal: Principal, partner: str, what: str) -> None:
    """A partner's keys are managed by the partner, by services, and by the network's operators
    (scope ``network:admin``), who issue a joining partner's first key and revoke a leaked one."""
    if principal.service is None and principal.partner_id != partner and not principal.has_scope("network:admin"):
        raise PermissionDenied(
            f"{what} belongs to partner {partner}; the caller is partner {principal.partner_id} "
            "without the scope 'network:admin'"
        )


def require_service(principal: Principal, what: str) -> None:
    if principal.service is None:
        raise PermissionDenied(f"only collabnet services may {what}")


def require_scope(principal: Principal, scope: str, what: str) -> None:
    if not principal.has_scope(scope):
        raise PermissionDenied(f"{what} needs the scope {scope!r}, which the caller's key does not have")


def require_acting_for(principal: Principal, party: str, what: str) -> None:
    """Only the party itself (a partner acting for it) or a service may change what is the party's own."""
    if principal.service is None and principal.party_id != party and principal.partner_id != party:
        raise PermissionDenied(f"{what} belongs to party {party}; act for that party (X-On-Behalf-Of) to change it")


def may_record_relationship(principal: Principal, from_party: str, to_party: str, context: str) -> None:
    """A partner records relationships in its own network, between itself (or a party it acts for) and others.

    A partner acting for a party may instead record the party's relationship in the network of the
    partner at the other end: the party introduces itself to that partner, and the relationship is
    that partner's as if it had recorded it, not the introducer's."""
    if principal.service is not None:
        return
    ends = {from_party, to_party}
    acting = principal.party_id is not None and principal.party_id in ends
    introduced = acting and context in ends and context != principal.party_id
    if context != principal.partner_id and not introduced:
        raise PermissionDenied(
            f"relationships are recorded in the caller's own network ({principal.partner_id}), or, acting for "
            f"one end, in the network of the partner at the other end; not {context}"
        )
    if principal.partner_id not in ends and not acting:
        raise PermissionDenied(
            "a partner records only relationships it is an end of, or that a party it acts for is an end of"
        )


def may_relate_outsiders(
    principal: Principal, from_party: str, to_party: str, registered_by: Mapping[str, str | None]
) -> None:
    """A partner records a relationship with a party that is not a partner (a person, or an
    organization that has not joined) only if it registered that party or acts for it: a partner
    may not make another partner's consumer its own without the consumer. ``registered_by`` maps
    each end that is not a partner to the partner that registered it (None when a service did)."""
    if principal.service is not None:
        return
    for field_name, party in (("from_party_id", from_party), ("to_party_id", to_party)):
        if party not in registered_by or party == principal.party_id:
            continue
        registrar = registered_by[party]
        if registrar is None or registrar != principal.partner_id:
            raise PermissionDenied(
                f"{field_name}: {party} is not a partner; a partner records a relationship with a party that is "
                "not a partner only if it registered that party or acts for it (X-On-Behalf-Of), so that a "
                "partner that already deals with the party introduces it"
            )


def may_end_relationship(principal: Principal, relationship: Relationship) -> None:
    if principal.service is not None:
        return
    if principal.partner_id == relationship.context_partner or relationship.involves(
        principal.partner_id, principal.party_id
    ):
        return
    raise PermissionDenied("only the partner whose network holds a relationship, or one of its ends, may end it")


@dataclass(frozen=True)
class Viewer:
    """Who is looking at the graph: services see everything; partners see public relationships
    and the private ones they are party to."""

    service: bool
    partner: str | None = None
    acting_for: str | None = None

    @classmethod
    def of(cls, principal: Principal) -> Viewer:
        return cls(principal.service is not None, principal.partner_id, principal.party_id)

    def sees(self, relationship: Relationship, types: Mapping[str, RelationshipType]) -> bool:
        if self.service or types[relationship.type].public:
            return True
        return relationship.context_partner == self.partner or relationship.involves(self.partner, self.acting_for)


# Check's actions: what other services ask identity to decide for the calling principal.
# Each maps to the kind of resource it is decided on and what an allowed answer means.
CHECK_ACTIONS = {
    "party.act_for": ("party", "the caller's partner may act for the party"),
    "party.read_contact": ("party", "the caller may see the party's contact data"),
    "partner.manage": ("partner", "the caller may manage the partner"),
    "relationship.read": ("relationship", "the caller may see the relationship"),
}


@dataclass(frozen=True)
class Facts:
    """What identity knows that a Check may need."""

    relationships: Sequence[Relationship] = field(default_factory=tuple)
    relationship: Relationship | None = None


def parse_resource(resource: str) -> tuple[str, str]:
    kind, _, ident = resource.partition("/")
    if kind not in ("party", "partner", "relationship") or not ident:
        raise InvalidArgument.field("resource", "must be party/<id>, partner/<id> or relationship/<id>")
    return kind, ident


def parse_check(action: str, resource: str) -> tuple[str, str]:
    """The kind and id of the resource a Check is asked on: INVALID_ARGUMENT naming the field when
    the action is unknown or is not decided on that kind of resource."""
    if action not in CHECK_ACTIONS:
        raise InvalidArgument.field("action", f"unknown action; known: {', '.join(sorted(CHECK_ACTIONS))}")
    kind, ident = parse_resource(resource)
    expected = CHECK_ACTIONS[action][0]
    if kind != expected:
        raise InvalidArgument.field("resource", f"{action} is decided on a {expected}/<id>")
    return kind, ident


def check(
    principal: Principal, action: str, resource: str, facts: Facts, types: Mapping[str, RelationshipType]
) -> Decision:
    """Decide one of ``CHECK_ACTIONS`` for ``principal``; every answer says why."""
    _, ident = parse_check(action, resource)
    if principal.service is not None:
        return Decision(True, f"service {principal.service} may {action}")
    partner = principal.partner_id or ""
    if action == "partner.manage":
        if partner == ident:
            return Decision(True, "a partner manages itself")
        return Decision(False, f"partner {partner} may not manage partner {ident}")
    if action == "relationship.read":
        relationship = facts.relationship
        assert relationship is not None
        if Viewer.of(principal).sees(relationship, types):
            return Decision(True, "the relationship is public or the caller is party to it", relationship.id)
        return Decision(False, "the relationship is private to its ends and the network that recorded it")
    if action == "party.act_for":
        return acts_for(partner, ident, facts.relationships, types)
    # party.read_contact: the party itself, a partner acting for it, or a partner it relates to.
    if principal.party_id == ident or partner == ident:
        return Decision(True, "the party's own contact data")
    decision = acts_for(partner, ident, facts.relationships, types)
    if decision.allowed:
        return Decision(True, f"the party relates to the caller: {decision.reason}", decision.relationship_id)
    return Decision(False, f"{ident} has no current relationship with {partner}, so its contact data is not shared")
