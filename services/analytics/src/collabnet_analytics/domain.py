"""The analytics rules, without I/O: which partners may see a domain event, and what of a person's
data they may see of it.

**Who sees what.** An event reaches the partners its resource belongs to: a product's maker and the
retailers listing it, an order's retailer and the makers of its lines, a case's maker and retailer,
an initiative's owner, a community's partner. Those facts come from earlier events, kept as
*references*: ``("product", id)`` -> its maker, ``("listing", id)`` -> the retailers listing it,
``("order", id)``, ``("case", id)``, ``("initiative", id)``, ``("community", id)`` and
``("question", id)`` -> their partners. An event whose required references are not known yet
waits for them (streams are read side by side, so a review may come before its product).

**Minimisation.** Fields of events marked ``(collabnet.common.v1.personal)`` hold a person's data.
A partner sees them only where that person consented to the purpose ``analytics`` with it;
otherwise a party id becomes the partner's pseudonym of it (a keyed hash of partner and party: the
partner can count distinct people and follow one person across its events, but cannot match them
with another partner's) and what the person wrote, or how to reach them, is left out. A partner's
own id is never personal.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from collabnet.common.v1 import personal_pb2
from collabnet_kit.errors import InvalidArgument

ANALYTICS_PURPOSE = "analytics"
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100

Ref = tuple[str, str]
"""A fact an audience depends on: ``(kind, id)``."""
Refs = Mapping[Ref, frozenset[str]]


@dataclass(frozen=True)
class Shared:
    """A domain event as one partner receives it, at its position in that partner's feed."""

    position: int
    id: str
    type: str
    source: str
    time: datetime
    event: Message


# --- who sees what -----------------------------------------------------------------------------


def _name(event: Message) -> str:
    return event.DESCRIPTOR.name


def _ids(*values: str) -> frozenset[str]:
    return frozenset(v for v in values if v)


def _product_refs(product_ids: Iterable[str]) -> set[Ref]:
    return {("product", p) for p in product_ids if p}


def _line_products(event: Any) -> list[str]:
    return [line.product_id for line in getattr(event, "lines", [])]


def needs(event: Message) -> set[Ref]:
    """The references without which the event's audience is not known yet."""
    name = _name(event)
    e: Any = event
    if name in _PRODUCT_EVENTS:
        return _product_refs([getattr(e, "product_id", "")])
    if name == "QuestionAsked":
        return _product_refs([e.product_id]) if e.product_id else {("community", e.community_id)}
    if name in {"AnswerPosted", "QuestionEscalated"}:
        return _product_refs([e.product_id]) if e.product_id else {("question", e.question_id)}
    if name == "AnswerAccepted":
        return {("question", e.question_id)}
    if name == "IdeaStatusChanged":
        return {("community", e.community_id)}
    if name == "OrderPlaced":
        return _product_refs(_line_products(event))
    if name in {"OrderDelivered"}:
        return _product_refs(_line_products(event)) or {("order", e.order_id)}
    if name == "OrderCancelled":
        return {("order", e.order_id)}
    if name == "ShipmentDelayed":
        return {("order", e.order_id)} if e.order_id else set()
    if name == "RecallIssued":
        return _product_refs(e.product_ids)
    if name in {"CaseEngaged", "CaseReopened", "CaseClosed"}:
        return {("case", e.case_id)}
    if name == "CoDesignJoined":
        return {("case", e.case_id)} if e.case_id else {("initiative", e.initiative_id)}
    if name in {"InitiativeStageChanged", "ObjectiveMet"}:
        return {("initiative", e.initiative_id)}
    return set()


def wants(event: Message) -> set[Ref]:
    """The references to look up for the event: what it needs, and the listings of its products."""
    found = needs(event)
    return found | {("listing", ref_id) for kind, ref_id in found if kind == "product"}


def _product(refs: Refs, product_id: str) -> frozenset[str]:
    return refs.get(("product", product_id), frozenset()) | refs.get(("listing", product_id), frozenset())


def _makers(refs: Refs, product_ids: Iterable[str]) -> frozenset[str]:
    return frozenset().union(*(refs.get(("product", p), frozenset()) for p in product_ids))


_PRODUCT_EVENTS = {
    "ProductRevised",
    "ProductListed",
    "ProductDelisted",
    "SupplyNetworkChanged",
    "ReviewPublished",
    "ReviewRevised",
    "ReviewWithdrawn",
    "ReviewResponded",
    "ReviewModerated",
    "ReviewDisclosureChanged",
    "RatingSummaryChanged",
    "RedesignRequested",
}


def audience(event: Message, refs: Refs) -> frozenset[str]:
    """The partners the event is shared with, given the references it wants (see :func:`wants`)."""
    name = _name(event)
    e: Any = event
    rule = _AUDIENCE.get(name)
    return rule(e, refs) if rule is not None else frozenset()


def _of(kind: str, attribute: str) -> Callable[[Any, Refs], frozenset[str]]:
    return lambda e, refs: refs.get((kind, getattr(e, attribute)), frozenset())


def _product_of(e: Any, refs: Refs) -> frozenset[str]:
    return _product(refs, e.product_id)


def _question_of(e: Any, refs: Refs) -> frozenset[str]:
    if e.product_id:
        return _product_of(e, refs)
    return refs.get(("question", e.question_id), frozenset())


def _order_of(e: Any, refs: Refs) -> frozenset[str]:
    lines = _line_products(e)
    if lines:
        return _ids(e.retailer_id) | _makers(refs, lines)
    return refs.get(("order", e.order_id), frozenset()) | _ids(e.retailer_id)


_AUDIENCE: dict[str, Callable[[Any, Refs], frozenset[str]]] = {
    "ProductRegistered": lambda e, refs: _ids(e.maker_id),
    "ProductRevised": lambda e, refs: _ids(e.maker_id) | _product_of(e, refs),
    "SupplyNetworkChanged": lambda e, refs: _ids(e.maker_id) | _product_of(e, refs),
    "ProductListed": lambda e, refs: _ids(e.retailer_id) | _product_of(e, refs),
    "ProductDelisted": lambda e, refs: _ids(e.retailer_id) | _product_of(e, refs),
    "OrderPlaced": _order_of,
    "OrderDelivered": _order_of,
    "OrderCancelled": _order_of,
    "ShipmentDelayed": lambda e, refs: (
        _ids(e.carrier_id) | (_of("order", "order_id")(e, refs) if e.order_id else frozenset())
    ),
    "RecallIssued": lambda e, refs: frozenset().union(
        *(_product(refs, p) for p in e.product_ids), _ids(*(o.retailer_id for o in e.affected_orders))
    ),
    "ReviewPublished": _product_of,
    "ReviewRevised": _product_of,
    "ReviewWithdrawn": _product_of,
    "ReviewResponded": _product_of,
    "ReviewModerated": _product_of,
    "ReviewDisclosureChanged": _product_of,
    "RatingSummaryChanged": _product_of,
    "QuestionAsked": lambda e, refs: (
        _product_of(e, refs) if e.product_id else _of("community", "community_id")(e, refs)
    ),
    "AnswerPosted": _question_of,
    "QuestionEscalated": lambda e, refs: _ids(e.maker_id) | _question_of(e, refs),
    "AnswerAccepted": _of("question", "question_id"),
    "IdeaSubmitted": lambda e, refs: _ids(e.partner_id),
    "IdeaPromoted": lambda e, refs: _ids(e.partner_id),
    "IdeaStatusChanged": _of("community", "community_id"),
    "MemberJoined": lambda e, refs: _ids(e.partner_id),
    "MemberLeft": lambda e, refs: _ids(e.partner_id),
    "MemberRoleChanged": lambda e, refs: _ids(e.partner_id),
    "CaseOpened": lambda e, refs: _ids(e.maker_id, e.retailer_id),
    "CaseResolved": lambda e, refs: _ids(e.maker_id, e.retailer_id),
    "CaseEngaged": _of("case", "case_id"),
    "CaseReopened": _of("case", "case_id"),
    "CaseClosed": _of("case", "case_id"),
    "CorrectiveActionRequested": lambda e, refs: _ids(e.supplier_id, e.requested_by),
    "CoDesignJoined": lambda e, refs: (
        _of("case", "case_id")(e, refs) if e.case_id else _of("initiative", "initiative_id")(e, refs)
    ),
    "InitiativeLaunched": lambda e, refs: _ids(e.owner_id),
    "InitiativeStageChanged": _of("initiative", "initiative_id"),
    "ObjectiveMet": _of("initiative", "initiative_id"),
    "RedesignRequested": lambda e, refs: _ids(e.maker_id) | _product_of(e, refs),
}
SHARED_EVENTS = frozenset(_AUDIENCE)
"""The names of the events partners may see; the rest (identity's, reputations) stay internal."""


def remembers(event: Message, refs: Refs) -> dict[Ref, frozenset[str]]:
    """The references the event sets (their whole new value), given the ones it wants."""
    name = _name(event)
    e: Any = event
    if name == "ProductRegistered":
        return {("product", e.product_id): _ids(e.maker_id)}
    if name in {"ProductListed", "ProductDelisted"}:
        key = ("listing", e.product_id)
        retailers = refs.get(key, frozenset())
        change = _ids(e.retailer_id)
        return {key: retailers | change if name == "ProductListed" else retailers - change}
    if name == "OrderPlaced":
        return {("order", e.order_id): _order_of(e, refs)}
    if name == "CaseOpened":
        return {("case", e.case_id): _ids(e.maker_id, e.retailer_id)}
    if name == "InitiativeLaunched":
        return {("initiative", e.initiative_id): _ids(e.owner_id)}
    if name in {"MemberJoined", "IdeaSubmitted"} and e.community_id and e.partner_id:
        return {("community", e.community_id): _ids(e.partner_id)}
    if name == "QuestionAsked":
        return {("question", e.question_id): audience(event, refs)}
    return {}


# --- minimisation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Personal:
    party_ids: tuple[FieldDescriptor, ...]
    owned: tuple[tuple[FieldDescriptor, str], ...]  # (field, the sibling field naming its owner)
    nested: tuple[FieldDescriptor, ...]  # message fields that have personal fields inside


_PERSONAL: dict[str, _Personal] = {}


def _personal(descriptor: Descriptor) -> _Personal:
    found = _PERSONAL.get(descriptor.full_name)
    if found is None:
        party_ids, owned, nested = [], [], []
        for field in descriptor.fields:
            options = field.GetOptions()
            if options.HasExtension(personal_pb2.personal):
                marked = options.Extensions[personal_pb2.personal]
                if marked.party_id:
                    party_ids.append(field)
                if marked.owner:
                    owned.append((field, marked.owner))
            elif field.message_type is not None and _has_personal(field.message_type):
                nested.append(field)
        found = _PERSONAL[descriptor.full_name] = _Personal(tuple(party_ids), tuple(owned), tuple(nested))
    return found


def _has_personal(descriptor: Descriptor, seen: frozenset[str] = frozenset()) -> bool:
    if descriptor.full_name in seen:
        return False
    for field in descriptor.fields:
        if field.GetOptions().HasExtension(personal_pb2.personal):
            return True
        if field.message_type is not None and _has_personal(field.message_type, seen | {descriptor.full_name}):
            return True
    return False


def _values(message: Message, field: FieldDescriptor) -> list[object]:
    value = getattr(message, field.name)
    return list(value) if field.is_repeated else [value]


def persons(event: Message) -> set[str]:
    """The party ids in the event's personal fields (people, and partners in people's places)."""
    found: set[str] = set()
    marks = _personal(cast(Descriptor, event.DESCRIPTOR))
    for field in marks.party_ids:
        found |= {v for v in _values(event, field) if isinstance(v, str) and v}
    for field in marks.nested:
        for child in _values(event, field):
            if isinstance(child, Message):
                found |= persons(child)
    return found


def pseudonym(key: bytes, partner_id: str, party_id: str) -> str:
    """The partner's stable name for a person: the same for every event it receives, unlike any
    other partner's name for them, and not reversible without the key."""
    digest = hmac.new(key, f"{partner_id}\x1f{party_id}".encode(), hashlib.sha256).hexdigest()
    return f"anon-{digest[:32]}"


def minimise(event: Message, *, key: bytes, partner_id: str, disclosed: frozenset[str] | set[str]) -> Message:
    """The event as ``partner_id`` may see it. ``disclosed``: the party ids in it the partner may see
    as they are (people who consented to ``analytics`` with it, and partners)."""
    copy = type(event)()
    copy.CopyFrom(event)
    _minimise(copy, key, partner_id, disclosed)
    return copy


def _minimise(message: Message, key: bytes, partner_id: str, disclosed: frozenset[str] | set[str]) -> None:
    marks = _personal(cast(Descriptor, message.DESCRIPTOR))
    # Owned fields first, while the owners' ids are still the real ones.
    for field, owner in marks.owned:
        if getattr(message, owner, "") not in disclosed:
            message.ClearField(field.name)
    for field in marks.party_ids:
        if field.is_repeated:
            values = getattr(message, field.name)
            hidden = [v if not v or v in disclosed else pseudonym(key, partner_id, v) for v in values]
            del values[:]
            values.extend(hidden)
        else:
            value = getattr(message, field.name)
            if value and value not in disclosed:
                setattr(message, field.name, pseudonym(key, partner_id, value))
    for field in marks.nested:
        for child in _values(message, field):
            if isinstance(child, Message):
                _minimise(child, key, partner_id, disclosed)


def partner_key(key: bytes, partner_id: str) -> bytes:
    """The key of one partner's pseudonyms, derived from the service's."""
    return hmac.new(key, f"pseudonyms\x1f{partner_id}".encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class Consent:
    granted: bool
    expire_time: datetime | None
    change_time: datetime

    def in_force(self, now: datetime) -> bool:
        return self.granted and (self.expire_time is None or self.expire_time > now)


def newer(current: Consent | None, change: Consent) -> bool:
    """Whether a consent change replaces the record held (a redelivered older change does not)."""
    return current is None or change.change_time >= current.change_time


# --- reading -----------------------------------------------------------------------------------


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def start(token_position: int | None, after_position: int) -> int:
    """Where a read continues: after a page token's position (None without a token) or after a
    position given as such."""
    if after_position < 0:
        raise InvalidArgument.field("after_position", "must not be negative")
    if token_position is not None and after_position:
        raise InvalidArgument.field("after_position", "give a page_token or an after_position, not both")
    return after_position if token_position is None else token_position


OBJECT_STORES = ("s3", "gs")


def export_destination(root: PurePosixPath, given: str) -> str:
    """Where ExportFeed may write: an object store's URI, or a directory under the export root (a
    relative path is taken from the root); never elsewhere on the service's own disk."""
    if "://" in given:
        scheme = given.split("://", 1)[0]
        if scheme not in OBJECT_STORES:
            raise InvalidArgument.field("destination", f"an export goes to {' or '.join(OBJECT_STORES)} URIs or a path")
        return given
    parts: list[str] = []
    for part in PurePosixPath(given).parts:
        if part == "..":
            raise InvalidArgument.field("destination", "must not climb out of the export root with ..")
        if part not in ("/", "."):
            parts.append(part)
    relative = PurePosixPath(*parts) if parts else PurePosixPath()
    if PurePosixPath(given).is_absolute():
        if not PurePosixPath(given).is_relative_to(root):
            raise InvalidArgument.field("destination", f"must be a directory under the export root {root}")
        return str(PurePosixPath(given))
    return str(root / relative)


def validate_event_types(event_types: Iterable[str], known: Iterable[str]) -> None:
    unknown = sorted(set(event_types) - set(known))
    if unknown:
        raise InvalidArgument.field("event_types", f"not event types a partner may see: {', '.join(unknown)[:500]}")
