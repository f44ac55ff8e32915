"""The supply chain's rules: products and revisions, bills of materials, listings and prices, orders
and their statuses, lots, shipment legs, who may see and do what. Plain Python, no I/O."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from collabnet_kit.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Validator
from collabnet_kit.principal import Principal

MAX_TEXT = 200
MAX_LONG_TEXT = 2000
MAX_ATTRIBUTES = 50
MAX_ATTRIBUTE_LENGTH = 500
MAX_BOM_ITEMS = 200
MAX_ORDER_LINES = 100
MAX_QUANTITY = 1_000_000
MAX_LOT_QUANTITY = 1_000_000_000
MAX_LOT_INPUTS = 200
MAX_LEGS = 10
MAX_LOTS_PER_LEG = 200
MAX_AMOUNT_MINOR = 10**15
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
TRACE_DEFAULT_DEPTH = 20
TRACE_MAX_DEPTH = 50
TRACE_DEFAULT_NODES = 2000
TRACE_MAX_NODES = 10_000
CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future a reported time may lie: the reporter's clock may run ahead of ours."""

RECALL_CONTACT_PURPOSE = "contact:recall"
MAKER_CONTACT_PURPOSE = "share:contact-with-maker"

_SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_REGION = re.compile(r"^[A-Z]{2}$")
_UNIT = re.compile(r"^[a-z][a-z0-9_]{0,15}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+?[0-9 ()./-]{5,30}$")
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$")


class ProductKind(StrEnum):
    FINISHED_GOOD = "finished_good"
    COMPONENT = "component"
    RAW_MATERIAL = "raw_material"


class ProposalStatus(StrEnum):
    PROPOSED = "proposed"
    CONFIRMED = "confirmed"
    DECLINED = "declined"


class OrderStatus(StrEnum):
    PLACED = "placed"
    CONFIRMED = "confirmed"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


class LotStatus(StrEnum):
    RELEASED = "released"
    ON_HOLD = "on_hold"
    QUARANTINED = "quarantined"
    RECALLED = "recalled"


class LegKind(StrEnum):
    SUPPLIER_TO_MAKER = "supplier_to_maker"
    MAKER_TO_DISTRIBUTOR = "maker_to_distributor"
    MAKER_TO_RETAILER = "maker_to_retailer"
    DISTRIBUTOR_TO_RETAILER = "distributor_to_retailer"
    RETAILER_TO_CONSUMER = "retailer_to_consumer"


class LegStatus(StrEnum):
    CREATED = "created"
    PICKED_UP = "picked_up"
    IN_TRANSIT = "in_transit"
    DELAYED = "delayed"
    DELIVERED = "delivered"


# --- small validators -------------------------------------------------------------------------------


def require(value: str, field_name: str) -> str:
    if not value.strip():
        raise InvalidArgument.field(field_name, "is required")
    return value.strip()


def _text(check: Validator, value: str, field_name: str, *, required: bool, limit: int = MAX_TEXT) -> None:
    if required:
        check.require(bool(value.strip()), field_name, "must not be empty")
    check.require(len(value) <= limit, field_name, f"must be at most {limit} characters")


def _attributes(check: Validator, attributes: Mapping[str, str], field_name: str = "attributes") -> None:
    check.require(len(attributes) <= MAX_ATTRIBUTES, field_name, f"at most {MAX_ATTRIBUTES} entries")
    for key, value in attributes.items():
        check.require(bool(key.strip()), field_name, "keys must not be empty")
        check.require(
            len(key) <= 100 and len(value) <= MAX_ATTRIBUTE_LENGTH,
            f"{field_name}.{key}",
            f"keys at most 100 and values at most {MAX_ATTRIBUTE_LENGTH} characters",
        )


def quantity_ok(value: int, limit: int = MAX_QUANTITY) -> bool:
    return 0 < value <= limit


def _quantity(check: Validator, value: int, field_name: str, limit: int = MAX_QUANTITY) -> None:
    if value <= 0:
        check.require(False, field_name, "must be positive")
    else:
        check.require(value <= limit, field_name, f"must be at most {limit}")


def bounded(value: int, field_name: str, default: int, low: int, high: int) -> int:
    """``value``, or ``default`` when 0; INVALID_ARGUMENT naming the field when outside [low, high]."""
    if value == 0:
        return default
    if not low <= value <= high:
        raise InvalidArgument.field(field_name, f"must be between {low} and {high}")
    return value


def page_size(value: int) -> int:
    return bounded(value, "page_size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)


def no_later_than_now(value: datetime, now: datetime, field_name: str) -> None:
    if value > now + CLOCK_SKEW:
        raise InvalidArgument.field(field_name, "must not be in the future")


# --- money --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Money:
    currency: str
    minor: int

    def times(self, quantity: int) -> Money:
        return Money(self.currency, self.minor * quantity)


def validate_price(check: Validator, currency: str, minor: int, field_name: str) -> None:
    check.require(bool(_CURRENCY.match(currency)), f"{field_name}.currency_code", "must be an ISO 4217 code like EUR")
    check.require(minor >= 0, f"{field_name}.amount_minor", "must not be negative")
    check.require(minor <= MAX_AMOUNT_MINOR, f"{field_name}.amount_minor", "is too large")


def total(amounts: Iterable[Money], currency: str) -> Money:
    """The sum of amounts that must all be in ``currency``."""
    minor = 0
    for amount in amounts:
        if amount.currency != currency:
            raise InvalidArgument.field("currency_code", f"cannot add {amount.currency} to an order in {currency}")
        minor += amount.minor
    return Money(currency, minor)


# --- products ------------------------------------------------------------------------------------------


def validate_product(
    sku: str, name: str, category: str, kind: ProductKind | None, maker_id: str, attributes: Mapping[str, str]
) -> None:
    check = Validator()
    check.require(bool(_SKU.match(sku)), "sku", "must be 1 to 64 letters, digits, '.', '_', '/' or '-'")
    _text(check, name, "name", required=True)
    _text(check, category, "category", required=True, limit=100)
    check.require(kind is not None, "kind", "must be FINISHED_GOOD, COMPONENT or RAW_MATERIAL")
    check.require(bool(maker_id), "maker_id", "is required when a service registers a product")
    _attributes(check, attributes)
    check.raise_if_any()


def validate_revision(changes: str, reason: str, initiative_id: str) -> None:
    check = Validator()
    _text(check, changes, "changes", required=True, limit=MAX_LONG_TEXT)
    _text(check, reason, "reason", required=True, limit=MAX_LONG_TEXT)
    check.require(len(initiative_id) <= 64, "initiative_id", "must be at most 64 characters")
    check.raise_if_any()


def proposal_fingerprint(initiative_id: str, product_id: str, changes: str, reason: str) -> str:
    """What tells one redesign request from another: the same request redelivered has the same one."""
    text = json.dumps([initiative_id, product_id, changes, reason], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def decide_proposal(status: ProposalStatus, action: str) -> None:
    if status is not ProposalStatus.PROPOSED:
        raise FailedPrecondition(f"status: the proposal is {status.value}; only a proposed one can be {action}")


# --- bills of materials --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BomLine:
    component_id: str
    supplier_id: str
    quantity: int
    unit: str


def validate_bom(product_id: str, items: Sequence[BomLine]) -> None:
    """The shape of a bill of materials; cycles need the database and are checked with ``cycle_path``."""
    check = Validator()
    check.require(len(items) <= MAX_BOM_ITEMS, "items", f"at most {MAX_BOM_ITEMS} items")
    seen: set[tuple[str, str]] = set()
    for index, item in enumerate(items):
        where = f"items[{index}]"
        check.require(bool(item.component_id), f"{where}.component_id", "is required")
        check.require(
            item.component_id != product_id or not item.component_id,
            f"{where}.component_id",
            "a product cannot be a component of itself",
        )
        check.require(bool(item.supplier_id), f"{where}.supplier_id", "is required")
        _quantity(check, item.quantity, f"{where}.quantity")
        check.require(bool(_UNIT.match(item.unit)), f"{where}.unit", "must be a unit such as each, kg or m")
        key = (item.component_id, item.supplier_id)
        check.require(key not in seen, where, "the same component from the same supplier is listed twice")
        seen.add(key)
    check.raise_if_any()


def cycle_path(product_id: str, component_id: str, reached_from: Mapping[str, str]) -> list[str]:
    """The cycle adding ``component_id`` to ``product_id`` would close: product, component, ..., product.

    ``reached_from`` maps each item below the component to the item it was reached from, as a
    breadth-first search down the bills of materials from the component found them.
    """
    chain = [product_id]  # walked back up: product, ..., component
    node = product_id
    while node != component_id:
        node = reached_from[node]
        chain.append(node)
    return [product_id, *reversed(chain)]


def bom_cycle(index: int, path: Sequence[str]) -> InvalidArgument:
    return InvalidArgument.field(
        f"items[{index}].component_id", "would make a cycle in the bill of materials: " + " -> ".join(path)
    )


# --- orders ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Address:
    lines: tuple[str, ...]
    locality: str
    postal_code: str
    region_code: str


@dataclass(frozen=True)
class Contact:
    name: str
    email: str | None
    phone: str | None
    address: Address | None

    def as_json(self) -> dict[str, object]:
        address = self.address
        return {
            "name": self.name,
            "email": self.email,
            "phone": self.phone,
            "address": None
            if address is None
            else {
                "lines": list(address.lines),
                "locality": address.locality,
                "postal_code": address.postal_code,
                "region_code": address.region_code,
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Contact:
        raw = data.get("address")
        address = None
        if isinstance(raw, Mapping):
            address = Address(
                tuple(str(x) for x in raw.get("lines") or ()),
                str(raw.get("locality") or ""),
                str(raw.get("postal_code") or ""),
                str(raw.get("region_code") or ""),
            )
        email, phone = data.get("email"), data.get("phone")
        return cls(
            str(data.get("name") or ""),
            email if isinstance(email, str) else None,
            phone if isinstance(phone, str) else None,
            address,
        )


@dataclass(frozen=True)
class RequestedLine:
    sku: str
    quantity: int


def validate_order(
    customer_id: str,
    retailer_id: str,
    lines: Sequence[RequestedLine],
    currency: str,
    contact: Contact | None,
    idempotency_key: str,
) -> None:
    check = Validator()
    check.require(bool(customer_id), "customer_id", "is required")
    check.require(bool(retailer_id), "retailer_id", "is required")
    check.require(customer_id != retailer_id or not customer_id, "retailer_id", "a retailer cannot order from itself")
    check.require(bool(lines), "lines", "an order has at least one line")
    check.require(len(lines) <= MAX_ORDER_LINES, "lines", f"at most {MAX_ORDER_LINES} lines")
    for index, line in enumerate(lines):
        check.require(bool(line.sku.strip()), f"lines[{index}].sku", "is required")
        _quantity(check, line.quantity, f"lines[{index}].quantity")
    check.require(bool(_CURRENCY.match(currency)), "currency_code", "must be an ISO 4217 code like EUR")
    check.require(len(idempotency_key) <= 128, "idempotency_key", "must be at most 128 characters")
    if contact is None:
        check.require(False, "contact", "is required: where the order goes")
    else:
        _text(check, contact.name, "contact.name", required=True)
        if contact.email is not None:
            check.require(bool(_EMAIL.match(contact.email)), "contact.email", "must be an e-mail address")
        if contact.phone is not None:
            check.require(bool(_PHONE.match(contact.phone)), "contact.phone", "must be a phone number")
        address = contact.address
        if address is None:
            check.require(False, "contact.address", "is required: the consumer's home")
        else:
            check.require(
                bool(address.lines) and all(line.strip() for line in address.lines),
                "contact.address.lines",
                "needs at least one line, none empty",
            )
            check.require(len(address.lines) <= 5, "contact.address.lines", "at most 5 lines")
            _text(check, address.locality, "contact.address.locality", required=True, limit=100)
            _text(check, address.postal_code, "contact.address.postal_code", required=False, limit=20)
            check.require(
                bool(_REGION.match(address.region_code)), "contact.address.region_code", "must be like DE or US"
            )
    check.raise_if_any()


def order_fingerprint(retailer_id: str, lines: Sequence[RequestedLine], currency: str, contact: Contact | None) -> str:
    """What an idempotent retry must repeat: a key reused for a different order is refused."""
    canonical = json.dumps(
        [retailer_id, [[line.sku, line.quantity] for line in lines], currency, contact.as_json() if contact else None],
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Offer:
    """What an order line needs to know about a SKU at one retailer."""

    product_id: str
    revision: int
    maker_id: str
    listed: bool
    available: bool
    price: Money | None


@dataclass(frozen=True)
class PricedLine:
    number: int
    product_id: str
    sku: str
    revision: int
    maker_id: str
    quantity: int
    unit_price: Money

    @property
    def line_total(self) -> Money:
        return self.unit_price.times(self.quantity)


def price_order(
    lines: Sequence[RequestedLine], offers: Mapping[str, Offer | None], retailer_id: str, currency: str
) -> tuple[list[PricedLine], Money]:
    """Each line at the retailer's listed price. ``offers`` maps each SKU to what the catalog knows of
    it at the retailer: None for an unknown SKU."""
    check = Validator()
    for index, line in enumerate(lines):
        offer = offers.get(line.sku)
        if offer is None:
            check.require(False, f"lines[{index}].sku", f"unknown SKU {line.sku!r}")
        elif offer.price is not None and offer.price.currency != currency:
            check.require(
                False,
                "currency_code",
                f"{line.sku} is priced in {offer.price.currency} at retailer {retailer_id}, the order is in {currency}",
            )
    check.raise_if_any()
    priced: list[PricedLine] = []
    for index, line in enumerate(lines):
        offer = offers[line.sku]
        assert offer is not None
        if not offer.listed or offer.price is None:
            raise FailedPrecondition(f"lines[{index}].sku: {line.sku} is not listed by retailer {retailer_id}")
        if not offer.available:
            raise FailedPrecondition(f"lines[{index}].sku: {line.sku} is not available from retailer {retailer_id}")
        priced.append(
            PricedLine(
                index + 1, offer.product_id, line.sku, offer.revision, offer.maker_id, line.quantity, offer.price
            )
        )
    amount = total((line.line_total for line in priced), currency)
    if amount.minor > MAX_AMOUNT_MINOR:
        raise InvalidArgument.field("lines", "the order's total is too large")
    return priced, amount


ORDER_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PLACED: frozenset({OrderStatus.CONFIRMED, OrderStatus.CANCELLED}),
    OrderStatus.CONFIRMED: frozenset({OrderStatus.SHIPPED, OrderStatus.CANCELLED}),
    OrderStatus.SHIPPED: frozenset({OrderStatus.DELIVERED}),
    OrderStatus.DELIVERED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}


def order_transition(current: OrderStatus, target: OrderStatus) -> None:
    """Refuse an illegal status change: placed -> confirmed -> shipped -> delivered, or cancelled before shipping."""
    if target not in ORDER_TRANSITIONS[current]:
        allowed = ", ".join(sorted(s.value for s in ORDER_TRANSITIONS[current])) or "nothing (it is final)"
        raise FailedPrecondition(
            f"status: the order is {current.value}, which may become {allowed}; not {target.value}"
        )


def allocatable(status: OrderStatus) -> None:
    if status not in (OrderStatus.PLACED, OrderStatus.CONFIRMED):
        raise FailedPrecondition(f"order_id: the order is {status.value}; lots are allocated before it ships")


# --- lots -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputLot:
    lot_id: str
    quantity: int


def validate_lot(code: str, producer_id: str, quantity: int, inputs: Sequence[InputLot], status: LotStatus) -> None:
    check = Validator()
    check.require(bool(_CODE.match(code)), "code", "must be 1 to 64 letters, digits, '.', '_', '/' or '-'")
    check.require(bool(producer_id), "producer_id", "is required when a service records a lot")
    _quantity(check, quantity, "quantity", MAX_LOT_QUANTITY)
    check.require(len(inputs) <= MAX_LOT_INPUTS, "inputs", f"at most {MAX_LOT_INPUTS} input lots")
    seen: set[str] = set()
    for index, item in enumerate(inputs):
        check.require(bool(item.lot_id), f"inputs[{index}].lot_id", "is required")
        check.require(item.lot_id not in seen, f"inputs[{index}].lot_id", "is listed twice")
        seen.add(item.lot_id)
        _quantity(check, item.quantity, f"inputs[{index}].quantity", MAX_LOT_QUANTITY)
    check.require(status is not LotStatus.RECALLED, "status", "a lot is recalled only through RecallLot")
    check.raise_if_any()


def lot_usable(status: LotStatus, field_name: str, lot_id: str, use: str) -> None:
    """Only a released lot may be built into another, allocated to an order or shipped."""
    if status is not LotStatus.RELEASED:
        raise FailedPrecondition(f"{field_name}: lot {lot_id} is {status.value.replace('_', ' ')}; it cannot be {use}")


def enough_left(available: int, wanted: int, field_name: str, lot_id: str) -> None:
    if wanted > available:
        raise FailedPrecondition(f"{field_name}: lot {lot_id} has {available} left, {wanted} wanted")


def lot_status_target(target: LotStatus | None) -> LotStatus:
    """What UpdateLotStatus may set: released, on hold or quarantined."""
    if target is None or target is LotStatus.RECALLED:
        raise InvalidArgument.field(
            "status", "must be RELEASED, ON_HOLD or QUARANTINED; a lot is recalled only through RecallLot"
        )
    return target


def lot_status_change(current: LotStatus, target: LotStatus) -> None:
    if current is LotStatus.RECALLED:
        raise FailedPrecondition(f"status: the lot is recalled, which is final; it cannot become {target.value}")


# --- shipments -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LegPlan:
    kind: LegKind | None
    from_party: str
    to_party: str
    carrier_id: str
    lots: tuple[InputLot, ...]


@dataclass(frozen=True)
class OrderFacts:
    customer_id: str
    retailer_id: str
    status: OrderStatus


def validate_legs(legs: Sequence[LegPlan], order: OrderFacts | None) -> None:
    check = Validator()
    check.require(bool(legs), "shipment.legs", "a shipment has at least one leg")
    check.require(len(legs) <= MAX_LEGS, "shipment.legs", f"at most {MAX_LEGS} legs")
    for index, leg in enumerate(legs):
        where = f"shipment.legs[{index}]"
        check.require(leg.kind is not None, f"{where}.kind", "is required")
        check.require(bool(leg.from_party), f"{where}.from_party_id", "is required")
        check.require(bool(leg.to_party), f"{where}.to_party_id", "is required")
        check.require(leg.from_party != leg.to_party or not leg.from_party, f"{where}.to_party_id", "goes nowhere")
        check.require(bool(leg.carrier_id), f"{where}.carrier_id", "is required")
        check.require(len(leg.lots) <= MAX_LOTS_PER_LEG, f"{where}.lots", f"at most {MAX_LOTS_PER_LEG} lots")
        if order is None:
            check.require(bool(leg.lots), f"{where}.lots", "a leg outside an order carries at least one lot")
            check.require(
                leg.kind is not LegKind.RETAILER_TO_CONSUMER,
                f"{where}.kind",
                "a delivery to a consumer's home belongs to an order",
            )
        seen: set[str] = set()
        for lot_index, lot in enumerate(leg.lots):
            check.require(bool(lot.lot_id), f"{where}.lots[{lot_index}].lot_id", "is required")
            check.require(lot.lot_id not in seen, f"{where}.lots[{lot_index}].lot_id", "is listed twice")
            seen.add(lot.lot_id)
            _quantity(check, lot.quantity, f"{where}.lots[{lot_index}].quantity", MAX_LOT_QUANTITY)
        if index > 0:
            check.require(
                legs[index - 1].to_party == leg.from_party,
                f"{where}.from_party_id",
                "must be where the previous leg ends",
            )
    if order is not None and legs:
        last = legs[-1]
        where = f"shipment.legs[{len(legs) - 1}]"
        check.require(
            last.kind is LegKind.RETAILER_TO_CONSUMER, f"{where}.kind", "an order's last leg goes to the consumer"
        )
        check.require(last.to_party == order.customer_id, f"{where}.to_party_id", "must be the order's customer")
        check.require(last.from_party == order.retailer_id, f"{where}.from_party_id", "must be the order's retailer")
        for index, leg in enumerate(legs[:-1]):
            check.require(
                leg.kind is not LegKind.RETAILER_TO_CONSUMER,
                f"shipment.legs[{index}].kind",
                "only the last leg goes to the consumer",
            )
    check.raise_if_any()
    if order is not None and order.status is not OrderStatus.CONFIRMED:
        raise FailedPrecondition(f"shipment.order_id: the order is {order.status.value}; only a confirmed order ships")


LEG_TRANSITIONS: dict[LegStatus, frozenset[LegStatus]] = {
    LegStatus.CREATED: frozenset({LegStatus.PICKED_UP, LegStatus.DELAYED}),
    LegStatus.PICKED_UP: frozenset({LegStatus.IN_TRANSIT, LegStatus.DELAYED, LegStatus.DELIVERED}),
    LegStatus.IN_TRANSIT: frozenset({LegStatus.DELAYED, LegStatus.DELIVERED}),
    LegStatus.DELAYED: frozenset({LegStatus.PICKED_UP, LegStatus.IN_TRANSIT, LegStatus.DELAYED, LegStatus.DELIVERED}),
    LegStatus.DELIVERED: frozenset(),
}


def leg_status_target(target: LegStatus | None) -> LegStatus:
    """What a leg event may report: everything after its creation."""
    if target is None or target is LegStatus.CREATED:
        raise InvalidArgument.field("status", "must be PICKED_UP, IN_TRANSIT, DELAYED or DELIVERED")
    return target


def leg_transition(current: LegStatus, picked_up: bool, target: LegStatus) -> None:
    """created -> picked up -> in transit -> delivered, with delays on the way; delivered is final."""
    allowed = LEG_TRANSITIONS[current]
    if current is LegStatus.DELAYED:
        allowed = allowed - {LegStatus.PICKED_UP} if picked_up else frozenset({LegStatus.PICKED_UP, LegStatus.DELAYED})
    if target not in allowed:
        names = ", ".join(sorted(s.value for s in allowed)) or "nothing (it is final)"
        raise FailedPrecondition(f"status: the leg is {current.value}, which may become {names}; not {target.value}")


# --- authorization ---------------------------------------------------------------------------------------


def acting_parties(principal: Principal) -> set[str]:
    """The parties a partner principal speaks as: itself, and the party it acts for."""
    return {p for p in (principal.partner_id, principal.party_id) if p}


def require_service_or(principal: Principal, party: str, what: str) -> None:
    """Only the party itself (as a partner, or acted for) or a service may do this."""
    if principal.service is None and party not in acting_parties(principal):
        raise PermissionDenied(f"{what} belongs to {party}; the caller is partner {principal.partner_id}")


def own_party(principal: Principal, given: str, field_name: str) -> str:
    """The party a request names: a partner's own when not given (and never another); a service must name one."""
    if principal.service is not None:
        return given
    if not given:
        return principal.partner_id or ""
    if given != principal.partner_id:
        raise PermissionDenied(f"{field_name}: a partner acts here only as itself ({principal.partner_id})")
    return given


def may_order_for(principal: Principal, customer_id: str) -> None:
    """A consumer orders through a partner acting for them; a business orders as itself."""
    if principal.service is None and customer_id not in acting_parties(principal):
        raise PermissionDenied(
            f"orders for {customer_id} are placed by a partner acting for that party (X-On-Behalf-Of)"
        )


class Access(StrEnum):
    FULL = "full"
    """Everything, the delivery contact included: services, the retailer, the customer."""
    MAKER = "maker"
    """The maker of a product on the order: its contact only where the customer consented."""
    NONE = "none"


@dataclass(frozen=True)
class OrderParties:
    retailer_id: str
    customer_id: str
    maker_ids: frozenset[str] = field(default_factory=frozenset)


def order_access(principal: Principal, order: OrderParties) -> Access:
    if principal.service is not None:
        return Access.FULL
    mine = acting_parties(principal)
    if order.retailer_id in mine or order.customer_id in mine:
        return Access.FULL
    if principal.partner_id in order.maker_ids:
        return Access.MAKER
    return Access.NONE


def may_cancel(principal: Principal, order: OrderParties) -> None:
    mine = acting_parties(principal)
    if principal.service is None and order.retailer_id not in mine and order.customer_id not in mine:
        raise PermissionDenied("only the retailer or the customer may cancel an order")


# --- traces ----------------------------------------------------------------------------------------------


@dataclass
class TreeNode:
    node_id: str
    parent_id: str
    depth: int
    quantity: int = 0
    unit: str = ""
    other_parents: list[str] = field(default_factory=list)


class TraceTree:
    """A trace as a tree: each node under the node it was first reached through, nearest the start;
    reached again, it gains another parent instead of appearing twice. Nodes must be added nearest
    first (breadth first)."""

    def __init__(self, max_nodes: int) -> None:
        self.max_nodes = max_nodes
        self.nodes: dict[str, TreeNode] = {}
        self.truncated = False

    def add(self, node_id: str, parent_id: str, depth: int, quantity: int = 0, unit: str = "") -> bool:
        """Add a node; False when it was there already (or the tree is full), so it need not be expanded."""
        found = self.nodes.get(node_id)
        if found is not None:
            if parent_id and parent_id != found.parent_id and parent_id not in found.other_parents:
                found.other_parents.append(parent_id)
            return False
        if len(self.nodes) >= self.max_nodes:
            self.truncated = True
            return False
        self.nodes[node_id] = TreeNode(node_id, parent_id, depth, quantity, unit)
        return True

    def ordered(self) -> list[TreeNode]:
        """Nearest first; within a depth, in the order they were reached."""
        return sorted(self.nodes.values(), key=lambda n: n.depth)
