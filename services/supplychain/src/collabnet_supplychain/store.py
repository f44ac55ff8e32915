"""Supplychain's tables and the queries over them. Rows are not the domain: the servicer maps them."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import registry
from sqlmodel import JSON, Column, Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from collabnet_kit.db import UtcDateTime
from collabnet_kit.errors import NotFound
from collabnet_kit.migrations import History

T = TypeVar("T")
IN_CHUNK = 5000
"""Ids per IN list: below the bound-parameter limits of asyncpg (32767) and SQLite (32766)."""
BOM_LOCK = 0x5C0B0A1
"""The PostgreSQL advisory lock that serializes changes to bills of materials, so two concurrent
changes cannot each close half of a cycle the other's check did not see."""


class Table(SQLModel, registry=registry()):
    """Base of supplychain's tables, kept apart from every other service's metadata."""


def _time(**kwargs: Any) -> Any:
    return Field(sa_type=UtcDateTime, **kwargs)


def _json(default: Any) -> Any:
    return Field(default_factory=lambda: type(default)(), sa_column=Column(JSON, nullable=False))


def _money(**kwargs: Any) -> Any:
    return Field(sa_type=sa.BigInteger, **kwargs)


class ProductRow(Table, table=True):
    __tablename__ = "product"
    __table_args__ = (sa.Index("product_maker", "maker_id", "id"), sa.Index("product_category", "category", "id"))
    id: str = Field(primary_key=True, max_length=36)
    sku: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=200)
    category: str = Field(max_length=100)
    kind: str = Field(max_length=20)
    maker_id: str = Field(max_length=36)
    attributes: dict[str, str] = _json({})
    revision: int = 1
    created_at: datetime = _time()
    updated_at: datetime = _time()


class RevisionRow(Table, table=True):
    __tablename__ = "product_revision"
    product_id: str = Field(primary_key=True, foreign_key="product.id", max_length=36)
    revision: int = Field(primary_key=True)
    changes: str = Field(max_length=2000)
    reason: str = Field(max_length=2000)
    initiative_id: str = Field(default="", max_length=64)
    proposal_id: str = Field(default="", max_length=36)
    created_by: str = Field(max_length=100)
    created_at: datetime = _time()


class ProposalRow(Table, table=True):
    __tablename__ = "revision_proposal"
    __table_args__ = (sa.Index("proposal_product", "product_id", "received_at", "id"),)
    id: str = Field(primary_key=True, max_length=36)
    # The same request, redelivered, has the same fingerprint: one proposal per request.
    fingerprint: str = Field(max_length=64, unique=True)
    initiative_id: str = Field(max_length=64)
    product_id: str = Field(max_length=36)
    maker_id: str = Field(max_length=36, index=True)
    changes: str = Field(max_length=2000)
    reason: str = Field(max_length=2000)
    status: str = Field(max_length=20)
    revision: int = 0
    decided_by: str = Field(default="", max_length=100)
    decline_reason: str = Field(default="", max_length=2000)
    received_at: datetime = _time()
    decided_at: datetime | None = _time(default=None, nullable=True)


class BomItemRow(Table, table=True):
    __tablename__ = "bom_item"
    __table_args__ = (sa.Index("bom_item_component", "component_id", "parent_id"),)
    parent_id: str = Field(primary_key=True, foreign_key="product.id", max_length=36)
    component_id: str = Field(primary_key=True, foreign_key="product.id", max_length=36)
    supplier_id: str = Field(primary_key=True, max_length=36)
    position: int
    quantity: int
    unit: str = Field(max_length=16)


class BomStampRow(Table, table=True):
    """When a product's bill of materials last changed."""

    __tablename__ = "bom_stamp"
    product_id: str = Field(primary_key=True, foreign_key="product.id", max_length=36)
    updated_at: datetime = _time()


class ListingRow(Table, table=True):
    __tablename__ = "listing"
    __table_args__ = (
        sa.UniqueConstraint("product_id", "retailer_id", name="listing_product_retailer"),
        sa.Index("listing_retailer", "retailer_id", "id"),
    )
    id: str = Field(primary_key=True, max_length=36)
    product_id: str = Field(foreign_key="product.id", max_length=36)
    retailer_id: str = Field(max_length=36)
    currency: str = Field(max_length=3)
    price_minor: int = _money()
    available: bool = True
    listed_at: datetime = _time()
    updated_at: datetime = _time()
    delisted_at: datetime | None = _time(default=None, nullable=True)


class OrderRow(Table, table=True):
    __tablename__ = "purchase_order"
    __table_args__ = (
        # NULL keys (no idempotency asked for) never collide: NULLs are distinct in both databases.
        sa.UniqueConstraint("customer_id", "idempotency_key", name="order_idempotency"),
        sa.Index("order_retailer", "retailer_id", "placed_at", "id"),
        sa.Index("order_customer", "customer_id", "placed_at", "id"),
        sa.Index("order_placed", "placed_at", "id"),
    )
    id: str = Field(primary_key=True, max_length=36)
    customer_id: str = Field(max_length=36)
    retailer_id: str = Field(max_length=36)
    status: str = Field(max_length=20)
    currency: str = Field(max_length=3)
    total_minor: int = _money()
    idempotency_key: str | None = Field(default=None, max_length=128)
    fingerprint: str = Field(max_length=64)
    contact: dict[str, Any] = _json({})
    placed_at: datetime = _time()
    updated_at: datetime = _time()
    confirmed_at: datetime | None = _time(default=None, nullable=True)
    shipped_at: datetime | None = _time(default=None, nullable=True)
    delivered_at: datetime | None = _time(default=None, nullable=True)
    cancelled_at: datetime | None = _time(default=None, nullable=True)
    cancel_reason: str = Field(default="", max_length=500)


class OrderLineRow(Table, table=True):
    __tablename__ = "order_line"
    __table_args__ = (
        sa.Index("order_line_product", "product_id", "order_id"),
        sa.Index("order_line_maker", "maker_id", "order_id"),
    )
    order_id: str = Field(primary_key=True, foreign_key="purchase_order.id", max_length=36)
    line_number: int = Field(primary_key=True)
    product_id: str = Field(foreign_key="product.id", max_length=36)
    sku: str = Field(max_length=64)
    revision: int
    # The product's maker, kept on the line so a maker's orders are one index away.
    maker_id: str = Field(max_length=36)
    quantity: int
    unit_price_minor: int = _money()


class LotRow(Table, table=True):
    __tablename__ = "lot"
    __table_args__ = (
        sa.UniqueConstraint("product_id", "code", name="lot_product_code"),
        sa.Index("lot_producer", "producer_id", "id"),
    )
    id: str = Field(primary_key=True, max_length=36)
    code: str = Field(max_length=64)
    product_id: str = Field(foreign_key="product.id", max_length=36)
    revision: int
    producer_id: str = Field(max_length=36)
    quantity: int
    # Built into other lots or allocated to orders; the rest is available.
    used: int = 0
    status: str = Field(max_length=20)
    status_reason: str = Field(default="", max_length=500)
    recall_id: str | None = Field(default=None, max_length=36)
    produced_at: datetime = _time()
    created_at: datetime = _time()
    updated_at: datetime = _time()


class LotInputRow(Table, table=True):
    """Lot genealogy: ``lot_id`` was built from ``input_lot_id``."""

    __tablename__ = "lot_input"
    __table_args__ = (sa.Index("lot_input_downstream", "input_lot_id", "lot_id"),)
    lot_id: str = Field(primary_key=True, foreign_key="lot.id", max_length=36)
    input_lot_id: str = Field(primary_key=True, foreign_key="lot.id", max_length=36)
    quantity: int


class AllocationRow(Table, table=True):
    __tablename__ = "allocation"
    __table_args__ = (sa.Index("allocation_lot", "lot_id", "order_id"),)
    order_id: str = Field(primary_key=True, foreign_key="purchase_order.id", max_length=36)
    line_number: int = Field(primary_key=True)
    lot_id: str = Field(primary_key=True, foreign_key="lot.id", max_length=36)
    quantity: int


class ShipmentRow(Table, table=True):
    __tablename__ = "shipment"
    id: str = Field(primary_key=True, max_length=36)
    # At most one shipment brings an order home.
    order_id: str | None = Field(default=None, foreign_key="purchase_order.id", max_length=36, unique=True)
    created_by: str = Field(max_length=100)
    created_at: datetime = _time()


class LegRow(Table, table=True):
    __tablename__ = "shipment_leg"
    __table_args__ = (sa.UniqueConstraint("shipment_id", "sequence", name="leg_sequence"),)
    id: str = Field(primary_key=True, max_length=36)
    shipment_id: str = Field(foreign_key="shipment.id", max_length=36)
    sequence: int
    kind: str = Field(max_length=30)
    from_party: str = Field(max_length=36)
    to_party: str = Field(max_length=36)
    carrier_id: str = Field(max_length=36)
    status: str = Field(max_length=20)
    expected_at: datetime | None = _time(default=None, nullable=True)
    picked_up_at: datetime | None = _time(default=None, nullable=True)
    delivered_at: datetime | None = _time(default=None, nullable=True)
    updated_at: datetime = _time()


class LegLotRow(Table, table=True):
    __tablename__ = "leg_lot"
    __table_args__ = (sa.Index("leg_lot_lot", "lot_id", "leg_id"),)
    leg_id: str = Field(primary_key=True, foreign_key="shipment_leg.id", max_length=36)
    lot_id: str = Field(primary_key=True, foreign_key="lot.id", max_length=36)
    quantity: int


class LegEventRow(Table, table=True):
    __tablename__ = "leg_event"
    leg_id: str = Field(primary_key=True, foreign_key="shipment_leg.id", max_length=36)
    seq: int = Field(primary_key=True)
    status: str = Field(max_length=20)
    at: datetime = _time()
    note: str = Field(default="", max_length=500)
    expected_at: datetime | None = _time(default=None, nullable=True)
    recorded_by: str = Field(max_length=100)


class RecallRow(Table, table=True):
    __tablename__ = "recall"
    __table_args__ = (
        sa.Index(
            "recall_unissued",
            "created_at",
            sqlite_where=sa.text("issued_at IS NULL"),
            postgresql_where=sa.text("issued_at IS NULL"),
        ),
    )
    id: str = Field(primary_key=True, max_length=36)
    lot_id: str = Field(foreign_key="lot.id", max_length=36, index=True)
    reason: str = Field(max_length=2000)
    product_ids: list[str] = _json([])
    # Filled when issued: order id, customer, retailer, status, whether contact was consented.
    affected: list[dict[str, Any]] = _json([])
    created_by: str = Field(max_length=100)
    created_at: datetime = _time()
    issued_at: datetime | None = _time(default=None, nullable=True)


class RecallLotRow(Table, table=True):
    __tablename__ = "recall_lot"
    __table_args__ = (sa.Index("recall_lot_lot", "lot_id"),)
    recall_id: str = Field(primary_key=True, foreign_key="recall.id", max_length=36)
    lot_id: str = Field(primary_key=True, foreign_key="lot.id", max_length=36)


HISTORY = History(Path(__file__).parent / "migrations", Table.metadata)


# --- helpers ------------------------------------------------------------------------------------


def is_postgres(session: AsyncSession) -> bool:
    return session.bind is not None and session.bind.dialect.name == "postgresql"


def among(session: AsyncSession, column: Any, ids: Collection[str]) -> Any:
    """``column IN ids``: on PostgreSQL as ``= ANY(array)``, one parameter, so the statement is
    prepared once whatever the number of ids; elsewhere as a plain IN list."""
    if is_postgres(session):
        return column == sa.any_(sa.bindparam(None, list(ids), type_=postgresql.ARRAY(sa.String)))
    return column.in_(list(ids))


def chunked(ids: Iterable[str], size: int = IN_CHUNK) -> Iterable[list[str]]:
    batch: list[str] = []
    for ident in ids:
        batch.append(ident)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


R = TypeVar("R", bound=SQLModel)


async def grouped(
    session: AsyncSession, table: type[R], column: Any, keys: Collection[str], order: Callable[[R], Any]
) -> dict[str, list[R]]:
    """The rows of ``table`` whose ``column`` is one of ``keys``, by key (every key present), each
    list sorted by ``order``; fetched in batches of ids."""
    found: dict[str, list[R]] = {key: [] for key in keys}
    for batch in chunked(sorted(set(keys))):
        for row in (await session.exec(select(table).where(among(session, column, batch)))).all():
            found[getattr(row, column.key)].append(row)
    for rows in found.values():
        rows.sort(key=order)
    return found


async def lock_boms(session: AsyncSession) -> None:
    """Serialize bill-of-materials changes (PostgreSQL; SQLite's single writer does it already)."""
    if is_postgres(session):
        await (await session.connection()).execute(sa.text(f"SELECT pg_advisory_xact_lock({BOM_LOCK})"))


def for_update(session: AsyncSession, query: SelectOfScalar[T]) -> SelectOfScalar[T]:
    """Row locks on PostgreSQL; SQLite's single writer already serializes writers."""
    return query.with_for_update() if is_postgres(session) else query


async def rows_by_id(session: AsyncSession, table: Any, ids: Collection[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for batch in chunked(sorted(set(ids))):
        query = select(table).where(among(session, col(table.id), batch))
        found.update({r.id: r for r in (await session.exec(query)).all()})
    return found


# --- products -----------------------------------------------------------------------------------


async def product(session: AsyncSession, product_id: str, *, lock: bool = False) -> ProductRow:
    query = select(ProductRow).where(col(ProductRow.id) == product_id)
    row = (await session.exec(for_update(session, query) if lock else query)).first()
    if row is None:
        raise NotFound(f"product {product_id} not found")
    return row


async def products(session: AsyncSession, ids: Collection[str]) -> dict[str, ProductRow]:
    return await rows_by_id(session, ProductRow, ids)


async def products_by_sku(session: AsyncSession, skus: Collection[str]) -> dict[str, ProductRow]:
    query = select(ProductRow).where(col(ProductRow.sku).in_(sorted(set(skus))))
    return {r.sku: r for r in (await session.exec(query)).all()}


async def list_products(
    session: AsyncSession, maker_id: str, category: str, sku: str, after: str | None, limit: int
) -> list[ProductRow]:
    query = select(ProductRow)
    if maker_id:
        query = query.where(col(ProductRow.maker_id) == maker_id)
    if category:
        query = query.where(col(ProductRow.category) == category)
    if sku:
        query = query.where(col(ProductRow.sku) == sku)
    if after is not None:
        query = query.where(col(ProductRow.id) > after)
    return list((await session.exec(query.order_by(col(ProductRow.id)).limit(limit))).all())


async def revisions(session: AsyncSession, product_id: str) -> list[RevisionRow]:
    query = select(RevisionRow).where(col(RevisionRow.product_id) == product_id).order_by(col(RevisionRow.revision))
    return list((await session.exec(query)).all())


async def proposal(session: AsyncSession, proposal_id: str, *, lock: bool = False) -> ProposalRow:
    query = select(ProposalRow).where(col(ProposalRow.id) == proposal_id)
    row = (await session.exec(for_update(session, query) if lock else query)).first()
    if row is None:
        raise NotFound(f"revision proposal {proposal_id} not found")
    return row


async def list_proposals(
    session: AsyncSession,
    product_id: str,
    maker_id: str | None,
    status: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[ProposalRow]:
    query = select(ProposalRow)
    if product_id:
        query = query.where(col(ProposalRow.product_id) == product_id)
    if maker_id is not None:
        query = query.where(col(ProposalRow.maker_id) == maker_id)
    if status is not None:
        query = query.where(col(ProposalRow.status) == status)
    if after is not None:
        query = query.where(sa.tuple_(col(ProposalRow.received_at), col(ProposalRow.id)) > sa.tuple_(*after))
    query = query.order_by(col(ProposalRow.received_at), col(ProposalRow.id)).limit(limit)
    return list((await session.exec(query)).all())


async def proposal_by_fingerprint(session: AsyncSession, fingerprint: str) -> ProposalRow | None:
    return (await session.exec(select(ProposalRow).where(col(ProposalRow.fingerprint) == fingerprint))).first()


# --- bills of materials --------------------------------------------------------------------------


async def bom_items(session: AsyncSession, parent_ids: Collection[str]) -> list[BomItemRow]:
    """The direct components of the given products, each product's in the order they were given."""
    found: list[BomItemRow] = []
    for batch in chunked(sorted(set(parent_ids))):
        query = select(BomItemRow).where(among(session, col(BomItemRow.parent_id), batch))
        found += (await session.exec(query)).all()
    return sorted(found, key=lambda r: (r.parent_id, r.position))


async def used_in(session: AsyncSession, component_ids: Collection[str]) -> list[tuple[str, str]]:
    """(parent, component) for every bill of materials the given products are direct components of."""
    found: list[tuple[str, str]] = []
    for batch in chunked(sorted(set(component_ids))):
        query = sa.select(col(BomItemRow.parent_id), col(BomItemRow.component_id)).where(
            among(session, col(BomItemRow.component_id), batch)
        )
        found += [(p, c) for p, c in (await (await session.connection()).execute(query)).all()]
    return found


async def bom_updated_at(session: AsyncSession, product_id: str) -> datetime | None:
    row = await session.get(BomStampRow, product_id)
    return row.updated_at if row else None


# --- listings -----------------------------------------------------------------------------------


async def listing(session: AsyncSession, listing_id: str, *, lock: bool = False) -> ListingRow:
    query = select(ListingRow).where(col(ListingRow.id) == listing_id)
    row = (await session.exec(for_update(session, query) if lock else query)).first()
    if row is None:
        raise NotFound(f"listing {listing_id} not found")
    return row


async def listing_of(session: AsyncSession, product_id: str, retailer_id: str) -> ListingRow | None:
    query = select(ListingRow).where(
        col(ListingRow.product_id) == product_id, col(ListingRow.retailer_id) == retailer_id
    )
    return (await session.exec(query)).first()


async def listings_for(session: AsyncSession, product_ids: Collection[str], retailer_id: str) -> dict[str, ListingRow]:
    query = select(ListingRow).where(
        col(ListingRow.product_id).in_(sorted(set(product_ids))), col(ListingRow.retailer_id) == retailer_id
    )
    return {r.product_id: r for r in (await session.exec(query)).all()}


async def list_listings(
    session: AsyncSession, product_id: str, retailer_id: str, include_delisted: bool, after: str | None, limit: int
) -> list[ListingRow]:
    query = select(ListingRow)
    if product_id:
        query = query.where(col(ListingRow.product_id) == product_id)
    if retailer_id:
        query = query.where(col(ListingRow.retailer_id) == retailer_id)
    if not include_delisted:
        query = query.where(col(ListingRow.delisted_at).is_(None))
    if after is not None:
        query = query.where(col(ListingRow.id) > after)
    return list((await session.exec(query.order_by(col(ListingRow.id)).limit(limit))).all())


# --- orders -------------------------------------------------------------------------------------


async def order(session: AsyncSession, order_id: str, *, lock: bool = False) -> OrderRow:
    query = select(OrderRow).where(col(OrderRow.id) == order_id)
    row = (await session.exec(for_update(session, query) if lock else query)).first()
    if row is None:
        raise NotFound(f"order {order_id} not found")
    return row


async def order_by_key(session: AsyncSession, customer_id: str, key: str) -> OrderRow | None:
    query = select(OrderRow).where(col(OrderRow.customer_id) == customer_id, col(OrderRow.idempotency_key) == key)
    return (await session.exec(query)).first()


async def order_lines(session: AsyncSession, order_ids: Collection[str]) -> dict[str, list[OrderLineRow]]:
    return await grouped(session, OrderLineRow, col(OrderLineRow.order_id), order_ids, lambda r: r.line_number)


async def allocations(session: AsyncSession, order_ids: Collection[str]) -> dict[str, list[AllocationRow]]:
    return await grouped(
        session, AllocationRow, col(AllocationRow.order_id), order_ids, lambda r: (r.line_number, r.lot_id)
    )


async def shipment_ids_of_orders(session: AsyncSession, order_ids: Collection[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for batch in chunked(sorted(set(order_ids))):
        query = sa.select(col(ShipmentRow.order_id), col(ShipmentRow.id)).where(
            among(session, col(ShipmentRow.order_id), batch)
        )
        found.update({o: s for o, s in (await (await session.connection()).execute(query)).all() if o is not None})
    return found


def visible_orders(session: AsyncSession, parties: Collection[str], maker: str | None) -> Any:
    """The SQL form of ``domain.order_access(...) is not NONE`` for a partner."""
    conditions: list[Any] = [
        col(OrderRow.retailer_id).in_(list(parties)),
        col(OrderRow.customer_id).in_(list(parties)),
    ]
    if maker:
        conditions.append(
            sa.exists().where(col(OrderLineRow.order_id) == col(OrderRow.id), col(OrderLineRow.maker_id) == maker)
        )
    return sa.or_(*conditions)


async def list_orders(
    session: AsyncSession,
    *,
    visible: Any,
    customer_id: str,
    retailer_id: str,
    product_id: str,
    status: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[OrderRow]:
    query = select(OrderRow)
    if visible is not None:
        query = query.where(visible)
    if customer_id:
        query = query.where(col(OrderRow.customer_id) == customer_id)
    if retailer_id:
        query = query.where(col(OrderRow.retailer_id) == retailer_id)
    if product_id:
        has_product = sa.exists().where(
            col(OrderLineRow.order_id) == col(OrderRow.id), col(OrderLineRow.product_id) == product_id
        )
        query = query.where(has_product)
    if status is not None:
        query = query.where(col(OrderRow.status) == status)
    if after is not None:
        # Newest first.
        query = query.where(sa.tuple_(col(OrderRow.placed_at), col(OrderRow.id)) < sa.tuple_(*after))
    query = query.order_by(col(OrderRow.placed_at).desc(), col(OrderRow.id).desc()).limit(limit)
    return list((await session.exec(query)).all())


# --- lots ---------------------------------------------------------------------------------------


async def lot(session: AsyncSession, lot_id: str, *, lock: bool = False) -> LotRow:
    query = select(LotRow).where(col(LotRow.id) == lot_id)
    row = (await session.exec(for_update(session, query) if lock else query)).first()
    if row is None:
        raise NotFound(f"lot {lot_id} not found")
    return row


async def lots(session: AsyncSession, ids: Collection[str], *, lock: bool = False) -> dict[str, LotRow]:
    if not lock:
        return await rows_by_id(session, LotRow, ids)
    found: dict[str, LotRow] = {}
    for batch in chunked(sorted(set(ids))):
        # In id order, so two writers locking overlapping lots never wait on each other in a cycle.
        query = select(LotRow).where(among(session, col(LotRow.id), batch)).order_by(col(LotRow.id))
        found.update({r.id: r for r in (await session.exec(for_update(session, query))).all()})
    return found


async def lot_by_code(session: AsyncSession, product_id: str, code: str) -> LotRow | None:
    query = select(LotRow).where(col(LotRow.product_id) == product_id, col(LotRow.code) == code)
    return (await session.exec(query)).first()


async def lot_inputs(session: AsyncSession, lot_ids: Collection[str]) -> dict[str, list[LotInputRow]]:
    return await grouped(session, LotInputRow, col(LotInputRow.lot_id), lot_ids, lambda r: r.input_lot_id)


async def list_lots(
    session: AsyncSession,
    product_id: str,
    producer_id: str,
    status: str | None,
    visible_to: str | None,
    after: str | None,
    limit: int,
) -> list[LotRow]:
    query = select(LotRow)
    if product_id:
        query = query.where(col(LotRow.product_id) == product_id)
    if producer_id:
        query = query.where(col(LotRow.producer_id) == producer_id)
    if status is not None:
        query = query.where(col(LotRow.status) == status)
    if visible_to is not None:
        query = query.where(
            sa.or_(
                col(LotRow.producer_id) == visible_to,
                sa.exists().where(col(ProductRow.id) == col(LotRow.product_id), col(ProductRow.maker_id) == visible_to),
            )
        )
    if after is not None:
        query = query.where(col(LotRow.id) > after)
    return list((await session.exec(query.order_by(col(LotRow.id)).limit(limit))).all())


async def lot_parties(session: AsyncSession, lot_id: str) -> set[str]:
    """Everyone a lot's records concern: its producer, its product's maker, the parties and carriers of
    the legs that carried it, and the retailers and customers of the orders it was allocated to."""
    connection = await session.connection()
    found: set[str] = set()
    producer = sa.select(col(LotRow.producer_id), col(ProductRow.maker_id)).join(
        ProductRow, col(ProductRow.id) == col(LotRow.product_id)
    )
    for producer_id, maker_id in (await connection.execute(producer.where(col(LotRow.id) == lot_id))).all():
        found |= {producer_id, maker_id}
    legs = (
        sa.select(col(LegRow.from_party), col(LegRow.to_party), col(LegRow.carrier_id))
        .join(LegLotRow, col(LegLotRow.leg_id) == col(LegRow.id))
        .where(col(LegLotRow.lot_id) == lot_id)
    )
    for sender, receiver, carrier in (await connection.execute(legs)).all():
        found |= {sender, receiver, carrier}
    orders = (
        sa.select(col(OrderRow.retailer_id), col(OrderRow.customer_id))
        .join(AllocationRow, col(AllocationRow.order_id) == col(OrderRow.id))
        .where(col(AllocationRow.lot_id) == lot_id)
    )
    for retailer_id, customer_id in (await connection.execute(orders)).all():
        found |= {retailer_id, customer_id}
    return found


# --- traversals: one query per level, so a trace reads only what it reaches ----------------------


async def inputs_of(session: AsyncSession, lot_ids: Collection[str]) -> list[tuple[str, str, int]]:
    """(lot, input lot, quantity) for the inputs of the given lots."""
    found: list[tuple[str, str, int]] = []
    connection = await session.connection()
    for batch in chunked(lot_ids):
        query = sa.select(col(LotInputRow.lot_id), col(LotInputRow.input_lot_id), col(LotInputRow.quantity)).where(
            among(session, col(LotInputRow.lot_id), batch)
        )
        found += [(a, b, q) for a, b, q in (await connection.execute(query)).all()]
    return sorted(found)


async def built_from(session: AsyncSession, lot_ids: Collection[str]) -> list[tuple[str, str, int]]:
    """(input lot, lot, quantity) for the lots built from the given lots."""
    found: list[tuple[str, str, int]] = []
    connection = await session.connection()
    for batch in chunked(lot_ids):
        query = sa.select(col(LotInputRow.input_lot_id), col(LotInputRow.lot_id), col(LotInputRow.quantity)).where(
            among(session, col(LotInputRow.input_lot_id), batch)
        )
        found += [(a, b, q) for a, b, q in (await connection.execute(query)).all()]
    return sorted(found)


async def lot_walk(
    session: AsyncSession, roots: Collection[str], *, downstream: bool, max_depth: int, limit: int
) -> list[tuple[str, str, int, int]]:
    """(parent, child, quantity, depth) for every genealogy edge within ``max_depth`` steps of the
    ``roots`` (depth 1 is an edge from a root), in one recursive query, breadth first.

    Downstream, a child was built from its parent; upstream, a child went into its parent. At most
    ``limit`` edges are read. An edge reached at two depths (a lot reached along paths of different
    lengths) comes once per depth: the walk is bounded by edges times depth, never by paths.
    """
    link = LotInputRow.__table__  # type: ignore[attr-defined]
    near, far = (link.c.input_lot_id, link.c.lot_id) if downstream else (link.c.lot_id, link.c.input_lot_id)
    start = (
        sa.select(
            near.label("parent"), far.label("child"), link.c.quantity.label("quantity"), sa.literal(1).label("depth")
        )
        .where(among(session, near, list(roots)))
        .cte("walk", recursive=True)
    )
    step = (
        sa.select(near, far, link.c.quantity, start.c.depth + 1)
        .join(start, near == start.c.child)
        .where(start.c.depth < max_depth)
    )
    walk = start.union(step)
    query = sa.select(walk.c.parent, walk.c.child, walk.c.quantity, walk.c.depth).limit(limit)
    rows = (await (await session.connection()).execute(query)).all()
    return sorted(((p, c, q, d) for p, c, q, d in rows), key=lambda edge: edge[3])


async def lot_details(session: AsyncSession, lot_ids: Collection[str]) -> dict[str, tuple[LotRow, ProductRow]]:
    """Each lot with its product, in one query per chunk."""
    found: dict[str, tuple[LotRow, ProductRow]] = {}
    for batch in chunked(sorted(set(lot_ids))):
        query = (
            select(LotRow, ProductRow)
            .join(ProductRow, col(ProductRow.id) == col(LotRow.product_id))
            .where(among(session, col(LotRow.id), batch))
        )
        for lot_row, product_row in (await session.exec(query)).all():
            found[lot_row.id] = (lot_row, product_row)
    return found


async def legs_carrying(session: AsyncSession, lot_ids: Collection[str]) -> dict[str, list[tuple[LegRow, int]]]:
    """The legs that carried each lot, with the quantity, in travel order."""
    found: dict[str, list[tuple[LegRow, int]]] = {lot_id: [] for lot_id in lot_ids}
    for batch in chunked(sorted(set(lot_ids))):
        query = (
            select(LegLotRow, LegRow)
            .join(LegRow, col(LegRow.id) == col(LegLotRow.leg_id))
            .where(among(session, col(LegLotRow.lot_id), batch))
        )
        for leg_lot, leg in (await session.exec(query)).all():
            found[leg_lot.lot_id].append((leg, leg_lot.quantity))
    for legs in found.values():
        legs.sort(key=lambda item: (item[0].updated_at, item[0].shipment_id, item[0].sequence))
    return found


async def orders_of_lots(session: AsyncSession, lot_ids: Collection[str]) -> list[tuple[AllocationRow, OrderRow]]:
    found: list[tuple[AllocationRow, OrderRow]] = []
    for batch in chunked(sorted(set(lot_ids))):
        query = (
            select(AllocationRow, OrderRow)
            .join(OrderRow, col(OrderRow.id) == col(AllocationRow.order_id))
            .where(among(session, col(AllocationRow.lot_id), batch))
        )
        found += (await session.exec(query)).all()
    return sorted(found, key=lambda item: (item[0].lot_id, item[1].placed_at, item[1].id))


async def order_makers(session: AsyncSession, order_ids: Collection[str]) -> dict[str, frozenset[str]]:
    found: dict[str, set[str]] = {o: set() for o in order_ids}
    connection = await session.connection()
    for batch in chunked(sorted(set(order_ids))):
        query = sa.select(col(OrderLineRow.order_id), col(OrderLineRow.maker_id)).where(
            among(session, col(OrderLineRow.order_id), batch)
        )
        for order_id, maker_id in (await connection.execute(query)).all():
            found[order_id].add(maker_id)
    return {o: frozenset(m) for o, m in found.items()}


# --- shipments ----------------------------------------------------------------------------------


async def shipment(session: AsyncSession, shipment_id: str) -> ShipmentRow:
    row = await session.get(ShipmentRow, shipment_id)
    if row is None:
        raise NotFound(f"shipment {shipment_id} not found")
    return row


async def leg(session: AsyncSession, leg_id: str, *, lock: bool = False) -> LegRow:
    query = select(LegRow).where(col(LegRow.id) == leg_id)
    row = (await session.exec(for_update(session, query) if lock else query)).first()
    if row is None:
        raise NotFound(f"shipment leg {leg_id} not found")
    return row


async def legs_of(session: AsyncSession, shipment_ids: Collection[str]) -> dict[str, list[LegRow]]:
    return await grouped(session, LegRow, col(LegRow.shipment_id), shipment_ids, lambda r: r.sequence)


async def leg_lots(session: AsyncSession, leg_ids: Collection[str]) -> dict[str, list[LegLotRow]]:
    return await grouped(session, LegLotRow, col(LegLotRow.leg_id), leg_ids, lambda r: r.lot_id)


async def leg_events(session: AsyncSession, leg_ids: Collection[str]) -> dict[str, list[LegEventRow]]:
    return await grouped(session, LegEventRow, col(LegEventRow.leg_id), leg_ids, lambda r: r.seq)


async def list_shipments(
    session: AsyncSession, order_id: str, lot_id: str, parties: Collection[str] | None, after: str | None, limit: int
) -> list[ShipmentRow]:
    query = select(ShipmentRow)
    if order_id:
        query = query.where(col(ShipmentRow.order_id) == order_id)
    if lot_id:
        query = query.where(
            sa.exists()
            .where(col(LegRow.shipment_id) == col(ShipmentRow.id))
            .where(col(LegLotRow.leg_id) == col(LegRow.id), col(LegLotRow.lot_id) == lot_id)
        )
    if parties is not None:
        mine = sorted(parties)
        on_a_leg = sa.exists().where(
            col(LegRow.shipment_id) == col(ShipmentRow.id),
            sa.or_(col(LegRow.from_party).in_(mine), col(LegRow.to_party).in_(mine), col(LegRow.carrier_id).in_(mine)),
        )
        their_order = sa.exists().where(
            col(OrderRow.id) == col(ShipmentRow.order_id),
            sa.or_(col(OrderRow.retailer_id).in_(mine), col(OrderRow.customer_id).in_(mine)),
        )
        query = query.where(sa.or_(on_a_leg, their_order))
    if after is not None:
        query = query.where(col(ShipmentRow.id) > after)
    return list((await session.exec(query.order_by(col(ShipmentRow.id)).limit(limit))).all())


# --- recalls ------------------------------------------------------------------------------------


async def recall(session: AsyncSession, recall_id: str, *, lock: bool = False) -> RecallRow:
    query = select(RecallRow).where(col(RecallRow.id) == recall_id)
    row = (await session.exec(for_update(session, query) if lock else query)).first()
    if row is None:
        raise NotFound(f"recall {recall_id} not found")
    return row


async def recall_lot_ids(session: AsyncSession, recall_id: str) -> list[str]:
    query = select(RecallLotRow.lot_id).where(col(RecallLotRow.recall_id) == recall_id)
    return sorted((await session.exec(query)).all())


async def unissued_recalls(session: AsyncSession, before: datetime, limit: int) -> list[str]:
    query = (
        select(RecallRow.id)
        .where(col(RecallRow.issued_at).is_(None), col(RecallRow.created_at) <= before)
        .order_by(col(RecallRow.created_at))
        .limit(limit)
    )
    return list((await session.exec(query)).all())


async def delete_rows(session: AsyncSession, table: Any, *conditions: Any) -> None:
    await session.exec(sa.delete(table).where(*conditions))


def sequence_of(rows: Sequence[Any]) -> int:
    """The next sequence number after ``rows`` (which carry a ``seq``)."""
    return max((r.seq for r in rows), default=0) + 1
