"""Rows and domain values to protos and back, and page tokens."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from collabnet.common.v1 import common_pb2
from collabnet.supplychain.v1 import supplychain_pb2 as pb
from collabnet_kit.errors import InvalidArgument
from collabnet_kit.paging import decode_cursor
from collabnet_kit.principal import Principal
from collabnet_kit.timestamps import timestamp
from collabnet_supplychain import domain, store
from collabnet_supplychain.domain import LegKind, LegStatus, LotStatus, OrderStatus, ProductKind, ProposalStatus

PRODUCT_KIND = {
    ProductKind.FINISHED_GOOD: pb.PRODUCT_KIND_FINISHED_GOOD,
    ProductKind.COMPONENT: pb.PRODUCT_KIND_COMPONENT,
    ProductKind.RAW_MATERIAL: pb.PRODUCT_KIND_RAW_MATERIAL,
}
PRODUCT_KIND_IN = {v: k for k, v in PRODUCT_KIND.items()}
PROPOSAL_STATUS = {
    ProposalStatus.PROPOSED: pb.PROPOSAL_STATUS_PROPOSED,
    ProposalStatus.CONFIRMED: pb.PROPOSAL_STATUS_CONFIRMED,
    ProposalStatus.DECLINED: pb.PROPOSAL_STATUS_DECLINED,
}
PROPOSAL_STATUS_IN = {v: k for k, v in PROPOSAL_STATUS.items()}
ORDER_STATUS = {
    OrderStatus.PLACED: pb.ORDER_STATUS_PLACED,
    OrderStatus.CONFIRMED: pb.ORDER_STATUS_CONFIRMED,
    OrderStatus.SHIPPED: pb.ORDER_STATUS_SHIPPED,
    OrderStatus.DELIVERED: pb.ORDER_STATUS_DELIVERED,
    OrderStatus.CANCELLED: pb.ORDER_STATUS_CANCELLED,
}
ORDER_STATUS_IN = {v: k for k, v in ORDER_STATUS.items()}
LOT_STATUS = {
    LotStatus.RELEASED: pb.LOT_STATUS_RELEASED,
    LotStatus.ON_HOLD: pb.LOT_STATUS_ON_HOLD,
    LotStatus.QUARANTINED: pb.LOT_STATUS_QUARANTINED,
    LotStatus.RECALLED: pb.LOT_STATUS_RECALLED,
}
LOT_STATUS_IN = {v: k for k, v in LOT_STATUS.items()}
LEG_KIND = {
    LegKind.SUPPLIER_TO_MAKER: pb.LEG_KIND_SUPPLIER_TO_MAKER,
    LegKind.MAKER_TO_DISTRIBUTOR: pb.LEG_KIND_MAKER_TO_DISTRIBUTOR,
    LegKind.MAKER_TO_RETAILER: pb.LEG_KIND_MAKER_TO_RETAILER,
    LegKind.DISTRIBUTOR_TO_RETAILER: pb.LEG_KIND_DISTRIBUTOR_TO_RETAILER,
    LegKind.RETAILER_TO_CONSUMER: pb.LEG_KIND_RETAILER_TO_CONSUMER,
}
LEG_KIND_IN = {v: k for k, v in LEG_KIND.items()}
LEG_STATUS = {
    LegStatus.CREATED: pb.LEG_STATUS_CREATED,
    LegStatus.PICKED_UP: pb.LEG_STATUS_PICKED_UP,
    LegStatus.IN_TRANSIT: pb.LEG_STATUS_IN_TRANSIT,
    LegStatus.DELAYED: pb.LEG_STATUS_DELAYED,
    LegStatus.DELIVERED: pb.LEG_STATUS_DELIVERED,
}
LEG_STATUS_IN = {v: k for k, v in LEG_STATUS.items()}


def new_id() -> str:
    return str(uuid.uuid4())


def now() -> datetime:
    return datetime.now(UTC)


def actor(principal: Principal) -> str:
    """Who did something, as recorded: the partner's id, or ``service:<name>``."""
    return principal.partner_id or f"service:{principal.service}"


def money(currency: str, minor: int) -> common_pb2.Money:
    return common_pb2.Money(currency_code=currency, amount_minor=minor)


def time_cursor(token: str) -> tuple[datetime, str] | None:
    values = decode_cursor(token, 2)
    if values is None:
        return None
    try:
        return datetime.fromisoformat(values[0]), values[1]
    except ValueError:
        raise InvalidArgument.field("page_token", "is not a token this service issued") from None


# --- products -------------------------------------------------------------------------------------


def product(row: store.ProductRow) -> pb.Product:
    return pb.Product(
        product_id=row.id,
        sku=row.sku,
        name=row.name,
        category=row.category,
        kind=PRODUCT_KIND[ProductKind(row.kind)],
        maker_id=row.maker_id,
        attributes=row.attributes,
        revision=row.revision,
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
    )


def revision(row: store.RevisionRow) -> pb.ProductRevision:
    return pb.ProductRevision(
        product_id=row.product_id,
        revision=row.revision,
        changes=row.changes,
        reason=row.reason,
        initiative_id=row.initiative_id,
        proposal_id=row.proposal_id,
        created_by=row.created_by,
        create_time=timestamp(row.created_at),
    )


def proposal(row: store.ProposalRow) -> pb.RevisionProposal:
    return pb.RevisionProposal(
        proposal_id=row.id,
        initiative_id=row.initiative_id,
        product_id=row.product_id,
        maker_id=row.maker_id,
        changes=row.changes,
        reason=row.reason,
        status=PROPOSAL_STATUS[ProposalStatus(row.status)],
        revision=row.revision,
        decided_by=row.decided_by,
        decline_reason=row.decline_reason,
        receive_time=timestamp(row.received_at),
        decide_time=timestamp(row.decided_at),
    )


def bom(
    product_id: str,
    items: Sequence[store.BomItemRow],
    components: dict[str, store.ProductRow],
    updated_at: datetime | None,
) -> pb.BillOfMaterials:
    return pb.BillOfMaterials(
        product_id=product_id,
        items=[
            pb.BomItem(
                component_id=item.component_id,
                supplier_id=item.supplier_id,
                quantity=item.quantity,
                unit=item.unit,
                component_sku=components[item.component_id].sku,
                component_name=components[item.component_id].name,
            )
            for item in items
        ],
        update_time=timestamp(updated_at),
    )


# --- listings -------------------------------------------------------------------------------------


def listing(row: store.ListingRow) -> pb.Listing:
    return pb.Listing(
        listing_id=row.id,
        product_id=row.product_id,
        retailer_id=row.retailer_id,
        price=money(row.currency, row.price_minor),
        available=row.available,
        active=row.delisted_at is None,
        list_time=timestamp(row.listed_at),
        update_time=timestamp(row.updated_at),
        delist_time=timestamp(row.delisted_at),
    )


# --- orders ---------------------------------------------------------------------------------------


def contact_in(message: pb.DeliveryContact, present: bool) -> domain.Contact | None:
    if not present:
        return None
    address = None
    if message.HasField("address"):
        given = message.address
        address = domain.Address(
            tuple(given.lines), given.locality.strip(), given.postal_code.strip(), given.region_code
        )
    return domain.Contact(
        message.name.strip(),
        message.email if message.HasField("email") else None,
        message.phone if message.HasField("phone") else None,
        address,
    )


def contact_out(contact: domain.Contact) -> pb.DeliveryContact:
    message = pb.DeliveryContact(name=contact.name)
    if contact.email is not None:
        message.email = contact.email
    if contact.phone is not None:
        message.phone = contact.phone
    if contact.address is not None:
        a = contact.address
        message.address.CopyFrom(
            pb.PostalAddress(
                lines=list(a.lines), locality=a.locality, postal_code=a.postal_code, region_code=a.region_code
            )
        )
    return message


def order(
    row: store.OrderRow,
    lines: Sequence[store.OrderLineRow],
    allocations: Sequence[store.AllocationRow],
    shipment_id: str | None,
    *,
    contact: bool,
) -> pb.Order:
    by_line: dict[int, list[pb.LotAllocation]] = {}
    for allocation in allocations:
        by_line.setdefault(allocation.line_number, []).append(
            pb.LotAllocation(lot_id=allocation.lot_id, quantity=allocation.quantity)
        )
    message = pb.Order(
        order_id=row.id,
        customer_id=row.customer_id,
        retailer_id=row.retailer_id,
        status=ORDER_STATUS[OrderStatus(row.status)],
        lines=[
            pb.LineItem(
                line_number=line.line_number,
                product_id=line.product_id,
                sku=line.sku,
                revision=line.revision,
                quantity=line.quantity,
                unit_price=money(row.currency, line.unit_price_minor),
                line_total=money(row.currency, line.unit_price_minor * line.quantity),
                allocations=by_line.get(line.line_number, []),
            )
            for line in lines
        ],
        total=money(row.currency, row.total_minor),
        idempotency_key=row.idempotency_key or "",
        place_time=timestamp(row.placed_at),
        confirm_time=timestamp(row.confirmed_at),
        ship_time=timestamp(row.shipped_at),
        deliver_time=timestamp(row.delivered_at),
        cancel_time=timestamp(row.cancelled_at),
        cancel_reason=row.cancel_reason,
        shipment_id=shipment_id or "",
    )
    if contact:
        message.contact.CopyFrom(contact_out(domain.Contact.from_json(row.contact)))
    return message


# --- lots -----------------------------------------------------------------------------------------


def lot(row: store.LotRow, inputs: Iterable[store.LotInputRow]) -> pb.Lot:
    return pb.Lot(
        lot_id=row.id,
        code=row.code,
        product_id=row.product_id,
        revision=row.revision,
        producer_id=row.producer_id,
        quantity=row.quantity,
        available_quantity=max(0, row.quantity - row.used),
        status=LOT_STATUS[LotStatus(row.status)],
        status_reason=row.status_reason,
        inputs=[pb.LotInput(lot_id=i.input_lot_id, quantity=i.quantity) for i in inputs],
        recall_id=row.recall_id or "",
        produce_time=timestamp(row.produced_at),
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
    )


# --- shipments ------------------------------------------------------------------------------------


def shipment(
    row: store.ShipmentRow,
    legs: Sequence[store.LegRow],
    lots: dict[str, list[store.LegLotRow]],
    events: dict[str, list[store.LegEventRow]],
) -> pb.Shipment:
    return pb.Shipment(
        shipment_id=row.id,
        order_id=row.order_id or "",
        legs=[
            pb.ShipmentLeg(
                leg_id=leg.id,
                sequence=leg.sequence,
                kind=LEG_KIND[LegKind(leg.kind)],
                from_party_id=leg.from_party,
                to_party_id=leg.to_party,
                carrier_id=leg.carrier_id,
                lots=[pb.CarriedLot(lot_id=c.lot_id, quantity=c.quantity) for c in lots.get(leg.id, [])],
                status=LEG_STATUS[LegStatus(leg.status)],
                expected_time=timestamp(leg.expected_at),
                events=[
                    pb.LegEvent(
                        status=LEG_STATUS[LegStatus(e.status)],
                        event_time=timestamp(e.at),
                        note=e.note,
                        expected_time=timestamp(e.expected_at),
                        recorded_by=e.recorded_by,
                    )
                    for e in events.get(leg.id, [])
                ],
            )
            for leg in legs
        ],
        created_by=row.created_by,
        create_time=timestamp(row.created_at),
    )
