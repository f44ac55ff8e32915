"""Reviews' tables and the queries over them. Rows are not the domain: the store maps between them.

Besides the reviews themselves it keeps read models fed by supplychain's events (products with
their maker and latest revision, listings, orders and their lines) and the summaries, which are
maintained in the transaction of each change and never recomputed on read.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import registry
from sqlmodel import JSON, Column, Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet_kit.db import UtcDateTime, insert
from collabnet_kit.errors import NotFound
from collabnet_kit.migrations import History
from collabnet_reviews import domain
from collabnet_reviews.domain import Counted, Delta, Purchase, Sort, Stats, Status, SummaryKey


class Table(SQLModel, registry=registry()):
    """Base of reviews' tables, kept apart from every other service's metadata."""


def _time(**kwargs: Any) -> Any:
    return Field(sa_type=UtcDateTime, **kwargs)


def _json(default: Any) -> Any:
    return Field(default_factory=lambda: type(default)(), sa_column=Column(JSON, nullable=False))


# --- read models of supplychain ---------------------------------------------------------------


class ProductRow(Table, table=True):
    __tablename__ = "product"
    product_id: str = Field(primary_key=True, max_length=64)
    maker_id: str = Field(default="", max_length=64)
    latest_revision: int = 0
    # Whether ProductRegistered (or ProductRevised) has arrived: only then is the maker known.
    registered: bool = False
    updated_at: datetime = _time()


class ListingRow(Table, table=True):
    __tablename__ = "listing"
    __table_args__ = (sa.Index("listing_product_retailer", "product_id", "retailer_id"),)
    listing_id: str = Field(primary_key=True, max_length=64)
    product_id: str = Field(max_length=64)
    retailer_id: str = Field(max_length=64)
    active: bool
    # The time of the event that last changed it: an older event arriving late changes nothing.
    changed_at: datetime = _time()


class OrderRow(Table, table=True):
    __tablename__ = "purchase_order"
    order_id: str = Field(primary_key=True, max_length=64)
    customer_id: str = Field(default="", max_length=64)
    retailer_id: str = Field(default="", max_length=64)
    delivered: bool = False
    cancelled: bool = False
    updated_at: datetime = _time()


class PurchaseRow(Table, table=True):
    """One product of an order: what makes its customer's review of the product a verified purchase."""

    __tablename__ = "purchase"
    __table_args__ = (sa.Index("purchase_customer_product", "customer_id", "product_id"),)
    order_id: str = Field(primary_key=True, max_length=64)
    product_id: str = Field(primary_key=True, max_length=64)
    customer_id: str = Field(max_length=64)
    retailer_id: str = Field(max_length=64)
    revision: int
    bought_at: datetime = _time()


class SyndicationRow(Table, table=True):
    __tablename__ = "syndication_policy"
    partner_id: str = Field(primary_key=True, max_length=64)
    opt_out: bool
    updated_at: datetime = _time()


# --- reviews -----------------------------------------------------------------------------------


class ReviewRow(Table, table=True):
    __tablename__ = "review"
    __table_args__ = (
        # One review per author and product (withdrawn ones aside): an author revises it instead.
        sa.Index(
            "review_one_per_author_product",
            "author_id",
            "product_id",
            unique=True,
            sqlite_where=sa.text("status != 'withdrawn'"),
            postgresql_where=sa.text("status != 'withdrawn'"),
        ),
        # The first page of each sort reads as many index entries as it shows, however many reviews.
        sa.Index("review_product_recent", "product_id", "status", "posted_at", "id"),
        sa.Index("review_product_helpful", "product_id", "status", "helpful_count", "posted_at", "id"),
        sa.Index("review_product_rating", "product_id", "status", "rating", "posted_at", "id"),
        sa.Index("review_product_revision", "product_id", "revision", "status", "posted_at", "id"),
        sa.Index("review_author_recent", "author_id", "posted_at", "id"),
        sa.Index("review_author_text", "author_id", "body_hash"),
        sa.Index(
            "review_disclosure_unchecked",
            "created_at",
            sqlite_where=sa.text("NOT affiliation_checked"),
            postgresql_where=sa.text("NOT affiliation_checked"),
        ),
    )
    id: str = Field(primary_key=True, max_length=36)
    product_id: str = Field(max_length=64)
    revision: int
    author_id: str = Field(max_length=64)
    channel_partner_id: str = Field(max_length=64)
    rating: int
    title: str = Field(default="", max_length=domain.MAX_TITLE)
    body: str = Field(sa_type=sa.Text)
    media_urls: list[str] = _json([])
    body_hash: str = Field(max_length=64)
    status: str = Field(max_length=20)
    version: int = 1
    verified: bool = False
    revision_bought: int = 0
    incentivized: bool = False
    incentive: str = Field(default="", max_length=domain.MAX_INCENTIVE)
    affiliated: bool = False
    affiliation_checked: bool = False
    helpful_count: int = 0
    unhelpful_count: int = 0
    created_at: datetime = _time()
    # When the current version was written.
    posted_at: datetime = _time()
    published_at: datetime | None = _time(default=None, nullable=True)
    withdrawn_at: datetime | None = _time(default=None, nullable=True)
    # The UTC day its rating counts on in the summaries; None while it does not count.
    counted_day: date | None = None

    @property
    def state(self) -> Status:
        return Status(self.status)

    @property
    def counted(self) -> Counted | None:
        return domain.counted(self.state, self.rating, self.revision, self.counted_day)

    @property
    def disclosure(self) -> domain.Disclosure:
        return domain.Disclosure(
            verified=self.verified,
            revision_bought=self.revision_bought,
            incentivized=self.incentivized,
            incentive=self.incentive,
            affiliated=self.affiliated,
        )


class ReviewVersionRow(Table, table=True):
    __tablename__ = "review_version"
    review_id: str = Field(primary_key=True, foreign_key="review.id", max_length=36)
    version: int = Field(primary_key=True)
    rating: int
    title: str = Field(default="", max_length=domain.MAX_TITLE)
    body: str = Field(sa_type=sa.Text)
    media_urls: list[str] = _json([])
    revision: int
    created_at: datetime = _time()


class ModerationRow(Table, table=True):
    __tablename__ = "moderation"
    __table_args__ = (sa.Index("moderation_review", "review_id", "decided_at"),)
    id: str = Field(primary_key=True, max_length=36)
    review_id: str = Field(foreign_key="review.id", max_length=36)
    version: int
    status: str = Field(max_length=20)
    reasons: list[str] = _json([])
    note: str = Field(default="", max_length=domain.MAX_NOTE)
    # Empty for the automatic checks; "service:<name>" when a service decided.
    moderator: str = Field(default="", max_length=100)
    automatic: bool
    decided_at: datetime = _time()


class ResponseRow(Table, table=True):
    __tablename__ = "review_response"
    __table_args__ = (sa.UniqueConstraint("review_id", "partner_id", name="response_one_per_partner"),)
    id: str = Field(primary_key=True, max_length=36)
    review_id: str = Field(foreign_key="review.id", max_length=36)
    partner_id: str = Field(max_length=64)
    body: str = Field(sa_type=sa.Text)
    edits: int = 0
    created_at: datetime = _time()
    updated_at: datetime = _time()


class VoteRow(Table, table=True):
    __tablename__ = "helpful_vote"
    review_id: str = Field(primary_key=True, foreign_key="review.id", max_length=36)
    voter_id: str = Field(primary_key=True, max_length=64)
    helpful: bool
    updated_at: datetime = _time()


class SummaryRow(Table, table=True):
    """A product's ratings over all time: revision 0 for the whole product, else one revision."""

    __tablename__ = "rating_summary"
    product_id: str = Field(primary_key=True, max_length=64)
    revision: int = Field(primary_key=True)
    count: int = 0
    total: int = 0
    d1: int = 0
    d2: int = 0
    d3: int = 0
    d4: int = 0
    d5: int = 0
    updated_at: datetime = _time()

    @property
    def stats(self) -> Stats:
        return Stats(self.count, self.total, (self.d1, self.d2, self.d3, self.d4, self.d5))


class DailySummaryRow(Table, table=True):
    """The ratings a product got on one UTC day (or that a revision moved to that day)."""

    __tablename__ = "rating_summary_day"
    product_id: str = Field(primary_key=True, max_length=64)
    revision: int = Field(primary_key=True)
    day: date = Field(primary_key=True)
    count: int = 0
    total: int = 0
    d1: int = 0
    d2: int = 0
    d3: int = 0
    d4: int = 0
    d5: int = 0

    @property
    def stats(self) -> Stats:
        return Stats(self.count, self.total, (self.d1, self.d2, self.d3, self.d4, self.d5))


HISTORY = History(Path(__file__).parent / "migrations", Table.metadata)

# --- helpers -----------------------------------------------------------------------------------


# --- products, listings, policies --------------------------------------------------------------


async def product(session: AsyncSession, product_id: str) -> ProductRow:
    row = await session.get(ProductRow, product_id)
    if row is None or not row.registered:
        raise NotFound(f"product {product_id} is not known to reviews (it is learned from supplychain's events)")
    return row


async def sellers(session: AsyncSession, product_id: str) -> list[str]:
    """The retailers listing the product now."""
    query = select(ListingRow.retailer_id).where(col(ListingRow.product_id) == product_id, col(ListingRow.active))
    return sorted(set((await session.exec(query)).all()))


async def lists_product(session: AsyncSession, partner_id: str, product_id: str) -> bool:
    query = select(ListingRow.listing_id).where(
        col(ListingRow.product_id) == product_id, col(ListingRow.retailer_id) == partner_id, col(ListingRow.active)
    )
    return (await session.exec(query.limit(1))).first() is not None


async def upsert_product(
    session: AsyncSession, product_id: str, maker_id: str, revision: int, at: datetime, *, registered: bool
) -> None:
    """Record a product's maker and revision; the latest revision only grows, whatever the order of events."""
    table = ProductRow.__table__  # type: ignore[attr-defined]
    statement = insert(session, table).values(
        product_id=product_id, maker_id=maker_id, latest_revision=revision, registered=registered, updated_at=at
    )
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=["product_id"],
        set_={
            "maker_id": sa.case((excluded.maker_id != "", excluded.maker_id), else_=table.c.maker_id),
            "latest_revision": sa.case(
                (excluded.latest_revision > table.c.latest_revision, excluded.latest_revision),
                else_=table.c.latest_revision,
            ),
            "registered": sa.or_(table.c.registered, excluded.registered),
            "updated_at": excluded.updated_at,
        },
    )
    await (await session.connection()).execute(statement)


async def set_listing(
    session: AsyncSession, listing_id: str, product_id: str, retailer_id: str, active: bool, at: datetime
) -> None:
    """Listed or delisted, as of the event's time: a late event older than the last change is ignored."""
    table = ListingRow.__table__  # type: ignore[attr-defined]
    statement = insert(session, table).values(
        listing_id=listing_id, product_id=product_id, retailer_id=retailer_id, active=active, changed_at=at
    )
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=["listing_id"],
        set_={"active": excluded.active, "changed_at": excluded.changed_at},
        where=excluded.changed_at >= table.c.changed_at,
    )
    await (await session.connection()).execute(statement)


async def opted_out(session: AsyncSession) -> set[str]:
    """Partners whose reviews stay on their own listings: a few, read whole."""
    query = select(SyndicationRow.partner_id).where(col(SyndicationRow.opt_out))
    return set((await session.exec(query)).all())


async def policy(session: AsyncSession, partner_id: str) -> SyndicationRow | None:
    return await session.get(SyndicationRow, partner_id)


# --- orders ------------------------------------------------------------------------------------


async def record_order(
    session: AsyncSession,
    order_id: str,
    customer_id: str,
    retailer_id: str,
    at: datetime,
    *,
    delivered: bool = False,
    cancelled: bool = False,
) -> OrderRow:
    """Merge what an order event says into the order: flags only ever turn on, whatever the order of events."""
    table = OrderRow.__table__  # type: ignore[attr-defined]
    statement = insert(session, table).values(
        order_id=order_id,
        customer_id=customer_id,
        retailer_id=retailer_id,
        delivered=delivered,
        cancelled=cancelled,
        updated_at=at,
    )
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=["order_id"],
        set_={
            "customer_id": sa.case((excluded.customer_id != "", excluded.customer_id), else_=table.c.customer_id),
            "retailer_id": sa.case((excluded.retailer_id != "", excluded.retailer_id), else_=table.c.retailer_id),
            "delivered": sa.or_(table.c.delivered, excluded.delivered),
            "cancelled": sa.or_(table.c.cancelled, excluded.cancelled),
            "updated_at": excluded.updated_at,
        },
    )
    row = (await (await session.connection()).execute(statement.returning(*table.c))).one()
    return OrderRow.model_validate(dict(row._mapping))


async def record_purchase(
    session: AsyncSession,
    order_id: str,
    product_id: str,
    customer_id: str,
    retailer_id: str,
    revision: int,
    at: datetime,
) -> None:
    statement = (
        insert(session, PurchaseRow.__table__)  # type: ignore[attr-defined]
        .values(
            order_id=order_id,
            product_id=product_id,
            customer_id=customer_id,
            retailer_id=retailer_id,
            revision=revision,
            bought_at=at,
        )
        .on_conflict_do_nothing()
    )
    await (await session.connection()).execute(statement)


async def order_products(session: AsyncSession, order_id: str) -> list[str]:
    query = select(PurchaseRow.product_id).where(col(PurchaseRow.order_id) == order_id)
    return sorted(set((await session.exec(query)).all()))


async def purchases(session: AsyncSession, customer_id: str, product_id: str) -> list[Purchase]:
    query = (
        select(PurchaseRow, OrderRow)
        .join(OrderRow, col(OrderRow.order_id) == col(PurchaseRow.order_id))
        .where(col(PurchaseRow.customer_id) == customer_id, col(PurchaseRow.product_id) == product_id)
    )
    return [
        Purchase(p.order_id, p.revision, p.bought_at, p.retailer_id, cancelled=o.cancelled, delivered=o.delivered)
        for p, o in (await session.exec(query)).all()
    ]


# --- reviews -----------------------------------------------------------------------------------


async def review(session: AsyncSession, review_id: str, *, for_update: bool = False) -> ReviewRow:
    """A review; with ``for_update``, locked for the rest of the transaction (PostgreSQL; SQLite's
    single writer serializes already)."""
    query = select(ReviewRow).where(col(ReviewRow.id) == review_id)
    if for_update:
        query = query.with_for_update()
    row = (await session.exec(query)).first()
    if row is None:
        raise NotFound(f"review {review_id} not found")
    return row


async def reviews_of(session: AsyncSession, author_id: str, product_id: str, *, for_update: bool) -> list[ReviewRow]:
    """An author's reviews of a product that are not withdrawn (at most one), locked when asked."""
    query = select(ReviewRow).where(
        col(ReviewRow.author_id) == author_id,
        col(ReviewRow.product_id) == product_id,
        col(ReviewRow.status) != Status.WITHDRAWN.value,
    )
    if for_update:
        query = query.with_for_update()
    return list((await session.exec(query)).all())


@dataclass(frozen=True)
class AuthorText:
    id: str
    product_id: str
    body_hash: str
    status: str


async def author_texts(session: AsyncSession, author_id: str) -> list[AuthorText]:
    """The author's reviews that are not withdrawn, with what their texts hash to: an author has a
    few, and one query answers both "reviewed already?" and "the same text again?"."""
    table = ReviewRow.__table__  # type: ignore[attr-defined]
    query = sa.select(table.c.id, table.c.product_id, table.c.body_hash, table.c.status).where(
        table.c.author_id == author_id, table.c.status != Status.WITHDRAWN.value
    )
    return [AuthorText(*row) for row in (await (await session.connection()).execute(query)).all()]


async def duplicate_text(session: AsyncSession, author_id: str, body_hash: str, except_review: str | None) -> bool:
    """Whether another of the author's shown or pending reviews has the same text."""
    query = select(ReviewRow.id).where(
        col(ReviewRow.author_id) == author_id,
        col(ReviewRow.body_hash) == body_hash,
        col(ReviewRow.status).in_([Status.PUBLISHED.value, Status.PENDING.value]),
    )
    if except_review is not None:
        query = query.where(col(ReviewRow.id) != except_review)
    return (await session.exec(query.limit(1))).first() is not None


async def unchecked_reviews(session: AsyncSession, limit: int) -> list[ReviewRow]:
    query = (
        select(ReviewRow)
        .where(sa.not_(col(ReviewRow.affiliation_checked)), col(ReviewRow.status) != Status.WITHDRAWN.value)
        .order_by(col(ReviewRow.created_at))
        .limit(limit)
    )
    return list((await session.exec(query)).all())


async def versions(session: AsyncSession, review_id: str) -> list[ReviewVersionRow]:
    query = (
        select(ReviewVersionRow)
        .where(col(ReviewVersionRow.review_id) == review_id)
        .order_by(col(ReviewVersionRow.version))
    )
    return list((await session.exec(query)).all())


async def moderations(session: AsyncSession, review_id: str) -> list[ModerationRow]:
    query = (
        select(ModerationRow)
        .where(col(ModerationRow.review_id) == review_id)
        .order_by(col(ModerationRow.decided_at), col(ModerationRow.id))
    )
    return list((await session.exec(query)).all())


async def latest_moderations(session: AsyncSession, review_ids: Collection[str]) -> dict[str, ModerationRow]:
    if not review_ids:
        return {}
    query = (
        select(ModerationRow)
        .where(col(ModerationRow.review_id).in_(list(review_ids)))
        .order_by(col(ModerationRow.decided_at), col(ModerationRow.id))
    )
    return {row.review_id: row for row in (await session.exec(query)).all()}


async def responses(session: AsyncSession, review_ids: Collection[str]) -> dict[str, list[ResponseRow]]:
    found: dict[str, list[ResponseRow]] = {r: [] for r in review_ids}
    if not review_ids:
        return found
    query = (
        select(ResponseRow)
        .where(col(ResponseRow.review_id).in_(list(review_ids)))
        .order_by(col(ResponseRow.created_at), col(ResponseRow.id))
    )
    for row in (await session.exec(query)).all():
        found[row.review_id].append(row)
    return found


async def response(session: AsyncSession, review_id: str, partner_id: str) -> ResponseRow | None:
    query = select(ResponseRow).where(
        col(ResponseRow.review_id) == review_id, col(ResponseRow.partner_id) == partner_id
    )
    return (await session.exec(query)).first()


async def vote(session: AsyncSession, review_id: str, voter_id: str) -> VoteRow | None:
    return await session.get(VoteRow, (review_id, voter_id))


async def add_votes(session: AsyncSession, review_id: str, helpful: int, unhelpful: int) -> tuple[int, int]:
    """Move a review's vote counts in place (concurrent voters serialize on the row) and return them."""
    table = ReviewRow.__table__  # type: ignore[attr-defined]
    statement = (
        sa.update(table)
        .where(table.c.id == review_id)
        .values(helpful_count=table.c.helpful_count + helpful, unhelpful_count=table.c.unhelpful_count + unhelpful)
        .returning(table.c.helpful_count, table.c.unhelpful_count)
    )
    row = (await (await session.connection()).execute(statement)).one()
    return int(row[0]), int(row[1])


# --- listing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    """What a ListReviews asks for, checked."""

    product_id: str | None
    author_id: str | None
    statuses: Sequence[Status]
    sort: Sort
    ratings: Sequence[int]
    verified_only: bool
    revision: int
    # Reviews come only through these channels (None: any) ...
    channels: Sequence[str] | None = None
    # ... and never through these.
    excluded_channels: Sequence[str] = ()


def sort_keys(sort: Sort) -> list[tuple[Any, bool]]:
    """(column, descending) in order; the review id breaks ties."""
    recent = [(col(ReviewRow.posted_at), True), (col(ReviewRow.id), True)]
    if sort is Sort.HELPFUL:
        return [(col(ReviewRow.helpful_count), True), *recent]
    if sort is Sort.RATING_HIGH:
        return [(col(ReviewRow.rating), True), *recent]
    if sort is Sort.RATING_LOW:
        return [(col(ReviewRow.rating), False), *recent]
    return recent


def cursor_values(sort: Sort, row: ReviewRow) -> list[str]:
    lead = {Sort.HELPFUL: [str(row.helpful_count)], Sort.RATING_HIGH: [str(row.rating)]}
    lead[Sort.RATING_LOW] = lead[Sort.RATING_HIGH]
    return [*lead.get(sort, []), row.posted_at.isoformat(), row.id]


def parse_cursor(sort: Sort, values: Sequence[str]) -> list[Any]:
    """The typed values of a cursor; ValueError when they do not fit the sort."""
    lead = [int(values[0])] if sort is not Sort.RECENT else []
    rest = values[len(lead) :]
    if len(rest) != 2:
        raise ValueError("cursor of another sort")
    posted = datetime.fromisoformat(rest[0])
    if posted.tzinfo is None:
        raise ValueError("naive time in cursor")
    return [*lead, posted, rest[1]]


def cursor_size(sort: Sort) -> int:
    return 2 if sort is Sort.RECENT else 3


def _after(keys: Sequence[tuple[Any, bool]], values: Sequence[Any]) -> Any:
    """Rows after ``values`` in the order of ``keys``: a row-value comparison where every key runs
    the same way (so the index range starts there), else the expanded form."""
    if all(descending for _, descending in keys):
        return sa.tuple_(*(c for c, _ in keys)) < sa.tuple_(*values)
    lead, descending = keys[0]
    beyond = lead < values[0] if descending else lead > values[0]
    return sa.or_(beyond, sa.and_(lead == values[0], _after(keys[1:], values[1:])))


async def list_reviews(
    session: AsyncSession, listing: Listing, after: Sequence[Any] | None, limit: int
) -> list[ReviewRow]:
    query = select(ReviewRow)
    if listing.product_id is not None:
        query = query.where(col(ReviewRow.product_id) == listing.product_id)
    if listing.author_id is not None:
        query = query.where(col(ReviewRow.author_id) == listing.author_id)
    if len(listing.statuses) == 1:
        query = query.where(col(ReviewRow.status) == listing.statuses[0].value)
    elif listing.statuses:
        query = query.where(col(ReviewRow.status).in_([s.value for s in listing.statuses]))
    if listing.ratings:
        query = query.where(col(ReviewRow.rating).in_(sorted(set(listing.ratings))))
    if listing.verified_only:
        query = query.where(col(ReviewRow.verified))
    if listing.revision:
        query = query.where(col(ReviewRow.revision) == listing.revision)
    if listing.channels is not None:
        query = query.where(col(ReviewRow.channel_partner_id).in_(list(listing.channels)))
    if listing.excluded_channels:
        query = query.where(col(ReviewRow.channel_partner_id).not_in(list(listing.excluded_channels)))
    keys = sort_keys(listing.sort)
    if after is not None:
        query = query.where(_after(keys, after))
    query = query.order_by(*(c.desc() if descending else c.asc() for c, descending in keys)).limit(limit)
    return list((await session.exec(query)).all())


# --- summaries ---------------------------------------------------------------------------------


def _counts(delta: Delta) -> dict[str, int]:
    return {"count": delta.count, "total": delta.total, **{f"d{i + 1}": n for i, n in enumerate(delta.distribution)}}


async def move_summaries(
    session: AsyncSession, product_id: str, deltas: Mapping[SummaryKey, Delta], at: datetime
) -> list[SummaryRow]:
    """Add ``deltas`` to the product's summary rows in place, in key order, and return the all-time
    rows as they are now.

    One ``INSERT ... ON CONFLICT DO UPDATE SET count = count + excluded.count`` per table: on
    PostgreSQL the update takes each row's lock until the transaction ends, so concurrent writers
    of one product queue on it and each adds to what the one before it committed (rows are always
    taken in the same order, so two writers never wait on each other in a cycle); SQLite has one
    writer at a time.
    """
    connection = await session.connection()
    columns = ("count", "total", "d1", "d2", "d3", "d4", "d5")
    all_time = [
        {"product_id": product_id, "revision": revision, "updated_at": at, **_counts(delta)}
        for (revision, day), delta in deltas.items()
        if day is None
    ]
    daily = [
        {"product_id": product_id, "revision": revision, "day": day, **_counts(delta)}
        for (revision, day), delta in deltas.items()
        if day is not None
    ]
    changed: list[SummaryRow] = []
    for rows, table, keys in (
        (all_time, SummaryRow.__table__, ["product_id", "revision"]),  # type: ignore[attr-defined]
        (daily, DailySummaryRow.__table__, ["product_id", "revision", "day"]),  # type: ignore[attr-defined]
    ):
        if not rows:
            continue
        statement = insert(session, table).values(rows)
        updates: dict[str, Any] = {c: table.c[c] + statement.excluded[c] for c in columns}
        if table is SummaryRow.__table__:  # type: ignore[attr-defined]
            updates["updated_at"] = statement.excluded.updated_at
            statement = statement.on_conflict_do_update(index_elements=keys, set_=updates).returning(*table.c)
            found = (await connection.execute(statement)).all()
            changed += [SummaryRow.model_validate(dict(row._mapping)) for row in found]
        else:
            await connection.execute(statement.on_conflict_do_update(index_elements=keys, set_=updates))
    return sorted(changed, key=lambda row: row.revision)


async def summaries(session: AsyncSession, product_id: str) -> list[SummaryRow]:
    query = select(SummaryRow).where(col(SummaryRow.product_id) == product_id).order_by(col(SummaryRow.revision))
    return list((await session.exec(query)).all())


async def daily_stats(session: AsyncSession, product_id: str, since: date) -> dict[int, dict[date, Stats]]:
    """The day rows of a product since ``since``, per revision: at most a row per day and revision,
    whatever the number of reviews. Read as plain tuples, which is most of the cost of a summary."""
    table = DailySummaryRow.__table__  # type: ignore[attr-defined]
    query = sa.select(
        table.c.revision, table.c.day, table.c.count, table.c.total, *(table.c[f"d{i}"] for i in range(1, 6))
    ).where(table.c.product_id == product_id, table.c.day >= since)
    found: dict[int, dict[date, Stats]] = {}
    for revision, day, count, total, *distribution in (await (await session.connection()).execute(query)).all():
        found.setdefault(revision, {})[day] = Stats(count, total, tuple(distribution))
    return found
