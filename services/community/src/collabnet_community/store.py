"""Community's tables and the queries over them. Rows are not the domain: ``to_*`` maps between them."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet_community import domain
from collabnet_kit.db import UtcDateTime, insert
from collabnet_kit.errors import NotFound
from collabnet_kit.migrations import History


class Table(SQLModel, registry=registry()):
    """Base of community's tables, kept apart from every other service's metadata."""


def _time(**kwargs: Any) -> Any:
    return Field(sa_type=UtcDateTime, **kwargs)


def _id(**kwargs: Any) -> Any:
    return Field(max_length=domain.MAX_ID, **kwargs)


# --- communities and memberships ---------------------------------------------------------------


class CommunityRow(Table, table=True):
    __tablename__ = "community"
    __table_args__ = (
        sa.UniqueConstraint("partner_id", "name", name="community_partner_name"),
        sa.Index("community_scope", "scope_kind", "scope_value"),
        sa.Index("community_created", "created_at", "id"),
    )
    id: str = Field(primary_key=True, max_length=36)
    partner_id: str = _id(index=True)
    name: str = Field(max_length=domain.MAX_NAME)
    description: str = Field(default="", max_length=domain.MAX_DESCRIPTION)
    scope_kind: str = Field(max_length=20)
    # The normalized brand or category; empty for a set of products.
    scope_value: str = Field(default="", max_length=domain.MAX_NAME)
    open_to_non_members: bool = False
    created_at: datetime = _time()
    # The last member number handed out (see MemberRow).
    member_seq: int = 0


class CommunityProductRow(Table, table=True):
    __tablename__ = "community_product"
    community_id: str = Field(primary_key=True, foreign_key="community.id", max_length=36)
    product_id: str = _id(primary_key=True, index=True)


class MemberRow(Table, table=True):
    """A party that has ever joined a community: its number there and when it first joined.

    Metrics count members by this small number rather than by party id: distinct counts over
    integers hash and sort many times faster than over 36-character strings.
    """

    __tablename__ = "member"
    __table_args__ = (
        sa.UniqueConstraint("community_id", "number", name="member_number"),
        sa.Index("member_first_join", "community_id", "first_join_day"),
    )
    community_id: str = Field(primary_key=True, foreign_key="community.id", max_length=36)
    party_id: str = _id(primary_key=True)
    number: int
    first_joined_at: datetime = _time()
    # Whole UTC days since 1970 and months since year 0, for metrics in plain integer SQL.
    first_join_day: int
    first_join_month: int
    # Whether the member was active in days [30, 60), [60, 90) and [90, 120) after first joining,
    # set as its actions arrive: retention cohorts are then one pass over the cohort's members.
    active_30: bool = False
    active_60: bool = False
    active_90: bool = False


class MembershipRow(Table, table=True):
    """One period of membership; a party that leaves and joins again has several."""

    __tablename__ = "membership"
    __table_args__ = (
        # At most one current membership of a party in a community: joining twice fails here.
        sa.Index(
            "membership_current",
            "community_id",
            "party_id",
            unique=True,
            sqlite_where=sa.text("left_at IS NULL"),
            postgresql_where=sa.text("left_at IS NULL"),
        ),
        sa.Index("membership_party", "party_id", "joined_at"),
        sa.Index("membership_community", "community_id", "joined_at", "id"),
    )
    id: str = Field(primary_key=True, max_length=36)
    community_id: str = Field(foreign_key="community.id", max_length=36)
    party_id: str = _id()
    # The party's MemberRow.number in the community.
    member: int
    role: str = Field(max_length=20)
    joined_at: datetime = _time()
    role_since: datetime = _time()
    join_day: int
    left_at: datetime | None = _time(default=None, nullable=True)
    left_day: int | None = None


class ActivityDayRow(Table, table=True):
    """What a member did in a community on one UTC day: actions of every kind, and how many of them
    were contributions (questions, answers, ideas). Engagement metrics read this table and the two
    below, which add the same actions up by week and by month."""

    __tablename__ = "activity_day"
    community_id: str = Field(primary_key=True, max_length=36)
    day: int = Field(primary_key=True)
    # The member's MemberRow.number.
    member: int = Field(primary_key=True)
    week: int
    month: int
    actions: int = 0
    contributions: int = 0


class ActivityWeekRow(Table, table=True):
    __tablename__ = "activity_week"
    community_id: str = Field(primary_key=True, max_length=36)
    week: int = Field(primary_key=True)
    member: int = Field(primary_key=True)
    actions: int = 0
    contributions: int = 0


class ActivityMonthRow(Table, table=True):
    __tablename__ = "activity_month"
    community_id: str = Field(primary_key=True, max_length=36)
    month: int = Field(primary_key=True)
    member: int = Field(primary_key=True)
    actions: int = 0
    contributions: int = 0


# --- what supplychain says ---------------------------------------------------------------------


class ProductRow(Table, table=True):
    __tablename__ = "product"
    id: str = _id(primary_key=True)
    maker_id: str = _id()
    name: str = Field(default="", max_length=domain.MAX_NAME)
    category: str = Field(default="", max_length=domain.MAX_NAME)
    brand: str = Field(default="", max_length=domain.MAX_NAME)
    revision: int = 1
    updated_at: datetime = _time()


class ListingRow(Table, table=True):
    __tablename__ = "listing"
    id: str = _id(primary_key=True)
    product_id: str = _id(index=True)
    retailer_id: str = _id()
    delisted: bool = False
    updated_at: datetime = _time()


class PurchaseRow(Table, table=True):
    """One product line of an order: who bought the product, where and when."""

    __tablename__ = "purchase"
    __table_args__ = (
        sa.Index("purchase_product_party", "product_id", "party_id"),
        sa.Index("purchase_party_product", "party_id", "product_id"),
    )
    order_id: str = _id(primary_key=True)
    product_id: str = _id(primary_key=True)
    party_id: str = _id()
    retailer_id: str = _id()
    revision: int = 0
    placed_at: datetime = _time()
    cancelled: bool = False


class CancelledOrderRow(Table, table=True):
    """Orders cancelled, kept so that an OrderPlaced arriving after its OrderCancelled counts for nothing."""

    __tablename__ = "cancelled_order"
    order_id: str = _id(primary_key=True)
    cancelled_at: datetime = _time()


# --- questions and answers ---------------------------------------------------------------------


class QuestionRow(Table, table=True):
    __tablename__ = "question"
    __table_args__ = (
        sa.Index("question_product", "product_id", "answered", "asked_at"),
        # Covers the question figures of engagement metrics, so they are read from the index alone.
        sa.Index("question_stats", "community_id", "ask_day", "first_answer_seconds", "owner_answered_at"),
        sa.Index("question_escalated", "maker_id", "escalated_at"),
        # What the escalation job looks for: unanswered, not yet escalated, oldest first.
        sa.Index(
            "question_due",
            "asked_at",
            sqlite_where=sa.text("NOT answered AND escalated_at IS NULL"),
            postgresql_where=sa.text("NOT answered AND escalated_at IS NULL"),
        ),
    )
    id: str = Field(primary_key=True, max_length=36)
    community_id: str = Field(foreign_key="community.id", max_length=36)
    product_id: str = _id()
    maker_id: str = _id()
    asker_id: str = _id()
    title: str = Field(max_length=domain.MAX_TITLE)
    body: str = Field(default="", max_length=domain.MAX_BODY)
    asked_at: datetime = _time()
    ask_day: int
    answered: bool = False
    answer_count: int = 0
    first_answer_at: datetime | None = _time(default=None, nullable=True)
    first_answer_seconds: float | None = None
    owner_answered_at: datetime | None = _time(default=None, nullable=True)
    accepted_answer_id: str | None = Field(default=None, max_length=36)
    # The best helpfulness score among the answers (helpful minus unhelpful votes).
    top_score: int = 0
    escalated_at: datetime | None = _time(default=None, nullable=True)
    invitation_count: int = 0


class AnswerRow(Table, table=True):
    __tablename__ = "answer"
    __table_args__ = (sa.UniqueConstraint("question_id", "answerer_id", name="answer_once_per_party"),)
    id: str = Field(primary_key=True, max_length=36)
    question_id: str = Field(foreign_key="question.id", max_length=36)
    community_id: str = Field(max_length=36)
    product_id: str = _id()
    answerer_id: str = _id()
    body: str = Field(max_length=domain.MAX_BODY)
    verified_owner: bool = False
    official_partner_id: str | None = Field(default=None, max_length=domain.MAX_ID)
    accepted: bool = False
    helpful: int = 0
    unhelpful: int = 0
    score: int = 0
    created_at: datetime = _time()


class AnswerVoteRow(Table, table=True):
    __tablename__ = "answer_vote"
    answer_id: str = Field(primary_key=True, foreign_key="answer.id", max_length=36)
    voter_id: str = _id(primary_key=True)
    helpful: bool
    created_at: datetime = _time()


class InvitationRow(Table, table=True):
    __tablename__ = "invitation"
    __table_args__ = (sa.Index("invitation_party", "party_id", "invited_at", "question_id"),)
    question_id: str = Field(primary_key=True, foreign_key="question.id", max_length=36)
    party_id: str = _id(primary_key=True)
    reason: str = Field(max_length=200)
    invited_at: datetime = _time()
    answered_at: datetime | None = _time(default=None, nullable=True)


# --- ideas and notifications -------------------------------------------------------------------


class IdeaRow(Table, table=True):
    __tablename__ = "idea"
    __table_args__ = (
        sa.Index("idea_top", "community_id", "vote_count", "created_at", "id"),
        sa.Index("idea_newest", "community_id", "created_at", "id"),
    )
    id: str = Field(primary_key=True, max_length=36)
    community_id: str = Field(foreign_key="community.id", max_length=36)
    submitter_id: str = _id()
    title: str = Field(max_length=domain.MAX_TITLE)
    description: str = Field(max_length=domain.MAX_BODY)
    product_id: str | None = Field(default=None, max_length=domain.MAX_ID)
    status: str = Field(max_length=20)
    status_note: str = Field(default="", max_length=domain.MAX_NOTE)
    vote_count: int = 0
    created_at: datetime = _time()
    status_at: datetime = _time()


class IdeaVoteRow(Table, table=True):
    __tablename__ = "idea_vote"
    idea_id: str = Field(primary_key=True, foreign_key="idea.id", max_length=36)
    voter_id: str = _id(primary_key=True)
    created_at: datetime = _time()


class IdeaPromotionRow(Table, table=True):
    __tablename__ = "idea_promotion"
    idea_id: str = Field(primary_key=True, foreign_key="idea.id", max_length=36)
    partner_id: str = _id(primary_key=True)
    promoted_at: datetime = _time()
    event_id: str = Field(max_length=36)


class NotificationRow(Table, table=True):
    __tablename__ = "notification"
    __table_args__ = (sa.Index("notification_party", "party_id", "created_at", "id"),)
    id: str = Field(primary_key=True, max_length=36)
    party_id: str = _id()
    kind: str = Field(max_length=40)
    message: str = Field(max_length=2000)
    idea_id: str | None = Field(default=None, max_length=36)
    question_id: str | None = Field(default=None, max_length=36)
    answer_id: str | None = Field(default=None, max_length=36)
    created_at: datetime = _time()
    read_at: datetime | None = _time(default=None, nullable=True)


# --- reputation --------------------------------------------------------------------------------


class ReputationRow(Table, table=True):
    __tablename__ = "reputation"
    party_id: str = _id(primary_key=True)
    points: int = Field(default=0, sa_type=sa.BigInteger)
    updated_at: datetime = _time()


class ReputationEntryRow(Table, table=True):
    """One line of the points ledger. Each names the event that caused it; the constraints make a
    replayed event, or a second event about the same thing, add nothing."""

    __tablename__ = "reputation_entry"
    __table_args__ = (
        sa.UniqueConstraint("party_id", "cause_event_id", name="reputation_entry_cause"),
        sa.UniqueConstraint("party_id", "reason", "subject_id", name="reputation_entry_subject"),
        sa.Index("reputation_entry_party", "party_id", "created_at", "id"),
    )
    id: str = Field(primary_key=True, max_length=36)
    party_id: str = _id()
    delta: int = Field(sa_type=sa.BigInteger)
    reason: str = Field(max_length=40)
    cause_event_id: str = Field(max_length=100)
    subject_id: str = _id()
    created_at: datetime = _time()


class CoDesignRow(Table, table=True):
    __tablename__ = "co_design"
    invitation_id: str = _id(primary_key=True)
    party_id: str = _id(index=True)
    product_id: str = Field(default="", max_length=domain.MAX_ID)
    label: str = Field(default="", max_length=domain.MAX_NAME)
    case_id: str = Field(default="", max_length=domain.MAX_ID)
    initiative_id: str = Field(default="", max_length=domain.MAX_ID)
    joined_at: datetime = _time()


HISTORY = History(Path(__file__).parent / "migrations", Table.metadata)


# --- helpers -----------------------------------------------------------------------------------


def _table(model: Any) -> Any:
    """A table class's Core table (SQLModel's classes do not declare ``__table__`` to type checkers)."""
    return model.__table__


def dialect(session: AsyncSession) -> str:
    return session.bind.dialect.name if session.bind is not None else "sqlite"


async def execute(session: AsyncSession, statement: Any, **params: Any) -> Any:
    """A Core statement (or ``text``) on the session's connection."""
    return await (await session.connection()).execute(statement, params or None)


def after(keys: Sequence[tuple[Any, bool]], values: Sequence[Any]) -> Any:
    """Keyset paging: rows strictly after ``values`` in the order of ``keys`` ((column, descending), ...)."""
    alternatives = []
    for index, (column, descending) in enumerate(keys):
        equal = [k == v for (k, _), v in zip(keys[:index], values[:index], strict=True)]
        value = values[index]
        if isinstance(value, bool):
            # Booleans order false before true, and SQL has no < or > for them: spell it out.
            beyond = (
                (column.is_(False) if value else sa.false())
                if descending
                else (column.is_(True) if not value else sa.false())
            )
        else:
            beyond = column < value if descending else column > value
        alternatives.append(sa.and_(*equal, beyond))
    return sa.or_(*alternatives)


def ordered(keys: Sequence[tuple[Any, bool]]) -> list[Any]:
    return [column.desc() if descending else column.asc() for column, descending in keys]


def to_community(row: CommunityRow, product_ids: Sequence[str] = ()) -> domain.Community:
    kind = domain.ScopeKind(row.scope_kind)
    scope = domain.Scope(kind, row.scope_value, tuple(product_ids))
    return domain.Community(row.id, row.partner_id, row.name, scope, row.open_to_non_members)


# --- communities -------------------------------------------------------------------------------


async def community_row(session: AsyncSession, community_id: str) -> CommunityRow:
    row = await session.get(CommunityRow, community_id)
    if row is None:
        raise NotFound(f"community {community_id} not found")
    return row


async def community(session: AsyncSession, community_id: str) -> tuple[CommunityRow, domain.Community]:
    row = await community_row(session, community_id)
    products: list[str] = []
    if row.scope_kind == domain.ScopeKind.PRODUCTS:
        query = select(CommunityProductRow.product_id).where(col(CommunityProductRow.community_id) == row.id)
        products = sorted((await session.exec(query)).all())
    return row, to_community(row, products)


async def scope_products(session: AsyncSession, community_ids: Collection[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {c: [] for c in community_ids}
    if not community_ids:
        return found
    query = (
        select(CommunityProductRow)
        .where(col(CommunityProductRow.community_id).in_(list(community_ids)))
        .order_by(col(CommunityProductRow.product_id))
    )
    for row in (await session.exec(query)).all():
        found[row.community_id].append(row.product_id)
    return found


async def member_counts(session: AsyncSession, community_ids: Collection[str]) -> dict[str, int]:
    if not community_ids:
        return {}
    query = (
        select(MembershipRow.community_id, sa.func.count())
        .where(col(MembershipRow.community_id).in_(list(community_ids)), col(MembershipRow.left_at).is_(None))
        .group_by(col(MembershipRow.community_id))
    )
    counts = {c: 0 for c in community_ids}
    counts.update({c: int(n) for c, n in (await session.exec(query)).all()})
    return counts


async def list_communities(
    session: AsyncSession,
    partner_id: str,
    product: domain.Product | None,
    product_id: str,
    limit: int,
    cursor: tuple[datetime, str] | None,
) -> list[CommunityRow]:
    query = select(CommunityRow)
    if partner_id:
        query = query.where(col(CommunityRow.partner_id) == partner_id)
    if product_id:
        listed = select(CommunityProductRow.community_id).where(col(CommunityProductRow.product_id) == product_id)
        covers: list[Any] = [col(CommunityRow.id).in_(listed)]
        if product is not None:
            if product.brand:
                covers.append(
                    sa.and_(
                        col(CommunityRow.scope_kind) == domain.ScopeKind.BRAND.value,
                        col(CommunityRow.scope_value) == domain.normalize_brand(product.brand),
                    )
                )
            ancestors = domain.category_ancestors(product.category)
            if ancestors:
                covers.append(
                    sa.and_(
                        col(CommunityRow.scope_kind) == domain.ScopeKind.CATEGORY.value,
                        col(CommunityRow.scope_value).in_(ancestors),
                    )
                )
        query = query.where(sa.or_(*covers))
    keys = [(col(CommunityRow.created_at), False), (col(CommunityRow.id), False)]
    if cursor is not None:
        query = query.where(after(keys, cursor))
    return list((await session.exec(query.order_by(*ordered(keys)).limit(limit))).all())


# --- memberships -------------------------------------------------------------------------------


async def current_membership(session: AsyncSession, community_id: str, party_id: str) -> MembershipRow | None:
    query = select(MembershipRow).where(
        col(MembershipRow.community_id) == community_id,
        col(MembershipRow.party_id) == party_id,
        col(MembershipRow.left_at).is_(None),
    )
    return (await session.exec(query)).first()


async def list_members(
    session: AsyncSession, community_id: str, role: domain.Role | None, limit: int, cursor: tuple[datetime, str] | None
) -> list[MembershipRow]:
    query = select(MembershipRow).where(
        col(MembershipRow.community_id) == community_id, col(MembershipRow.left_at).is_(None)
    )
    if role is not None:
        query = query.where(col(MembershipRow.role) == role.value)
    keys = [(col(MembershipRow.joined_at), False), (col(MembershipRow.id), False)]
    if cursor is not None:
        query = query.where(after(keys, cursor))
    return list((await session.exec(query.order_by(*ordered(keys)).limit(limit))).all())


async def list_memberships(
    session: AsyncSession, party_id: str, partner_id: str | None, limit: int, cursor: tuple[datetime, str] | None
) -> list[tuple[MembershipRow, CommunityRow]]:
    query = (
        select(MembershipRow, CommunityRow)
        .join(CommunityRow, col(CommunityRow.id) == col(MembershipRow.community_id))
        .where(col(MembershipRow.party_id) == party_id, col(MembershipRow.left_at).is_(None))
    )
    if partner_id is not None:
        query = query.where(col(CommunityRow.partner_id) == partner_id)
    keys = [(col(MembershipRow.joined_at), False), (col(MembershipRow.id), False)]
    if cursor is not None:
        query = query.where(after(keys, cursor))
    return [(m, c) for m, c in (await session.exec(query.order_by(*ordered(keys)).limit(limit))).all()]


async def roles_held(session: AsyncSession, party_id: str) -> list[domain.RoleHeld]:
    query = (
        select(MembershipRow, CommunityRow.name)
        .join(CommunityRow, col(CommunityRow.id) == col(MembershipRow.community_id))
        .where(
            col(MembershipRow.party_id) == party_id,
            col(MembershipRow.left_at).is_(None),
            col(MembershipRow.role) != domain.Role.MEMBER.value,
        )
    )
    return [
        domain.RoleHeld(m.community_id, name, domain.Role(m.role), m.role_since)
        for m, name in (await session.exec(query)).all()
    ]


async def member(session: AsyncSession, community_id: str, party_id: str) -> MemberRow | None:
    return await session.get(MemberRow, (community_id, party_id))


async def next_member_number(session: AsyncSession, community_id: str) -> int:
    """Hand out the community's next member number; the row lock orders concurrent first joins."""
    table = _table(CommunityRow)
    statement = (
        sa.update(table)
        .where(table.c.id == community_id)
        .values(member_seq=table.c.member_seq + 1)
        .returning(table.c.member_seq)
    )
    return int((await execute(session, statement)).scalar_one())


async def note_activity(
    session: AsyncSession, community_id: str, member_number: int, at: datetime, *, contribution: bool
) -> None:
    """Count one action (a contribution or not) of a member on its day, week and month, and mark the
    retention window after the member's first join that it falls in."""
    day = domain.day_number(at)
    periods = (
        (ActivityDayRow, {"day": day, "week": domain.week_number(day), "month": domain.day_month(day)}, "day"),
        (ActivityWeekRow, {"week": domain.week_number(day)}, "week"),
        (ActivityMonthRow, {"month": domain.day_month(day)}, "month"),
    )
    for row, keys, period in periods:
        statement = insert(session, row).values(
            community_id=community_id, member=member_number, actions=1, contributions=int(contribution), **keys
        )
        table = _table(row)
        statement = statement.on_conflict_do_update(
            index_elements=["community_id", period, "member"],
            set_={
                "actions": table.c.actions + 1,
                "contributions": table.c.contributions + statement.excluded.contributions,
            },
        )
        await execute(session, statement)
    members = _table(MemberRow)
    since = day - members.c.first_join_day
    windows = {
        f"active_{n}": sa.case(
            (sa.and_(since >= n, since < n + domain.RETENTION_WINDOW_DAYS), True), else_=members.c[f"active_{n}"]
        )
        for n in domain.RETENTION_DAYS
    }
    last = domain.RETENTION_DAYS[-1] + domain.RETENTION_WINDOW_DAYS
    await execute(
        session,
        sa.update(members)
        .where(
            members.c.community_id == community_id,
            members.c.number == member_number,
            since >= domain.RETENTION_DAYS[0],
            since < last,
        )
        .values(**windows),
    )


async def note_member_activity(
    session: AsyncSession, community_id: str, party_id: str, at: datetime, *, contribution: bool
) -> bool:
    """Count the action when the party is a current member; metrics are about members."""
    membership = await current_membership(session, community_id, party_id)
    if membership is None:
        return False
    await note_activity(session, community_id, membership.member, at, contribution=contribution)
    return True


# --- products, listings, purchases -------------------------------------------------------------


async def product(session: AsyncSession, product_id: str) -> domain.Product | None:
    row = await session.get(ProductRow, product_id)
    if row is None:
        return None
    query = select(ListingRow.retailer_id).where(
        col(ListingRow.product_id) == product_id, sa.not_(col(ListingRow.delisted))
    )
    sellers = frozenset((await session.exec(query)).all())
    return domain.Product(row.id, row.maker_id, row.name, row.category, row.brand, sellers)


async def require_product(session: AsyncSession, product_id: str) -> domain.Product:
    found = await product(session, product_id)
    if found is None:
        raise NotFound(f"product {product_id} is not known to the community (it learns products from supplychain)")
    return found


async def upsert_product(session: AsyncSession, values: dict[str, Any]) -> None:
    statement = insert(session, ProductRow).values(**values)
    table = _table(ProductRow)
    # A later revision wins; an older one arriving late changes nothing.
    statement = statement.on_conflict_do_update(
        index_elements=["id"],
        set_={k: statement.excluded[k] for k in values if k != "id"},
        where=table.c.revision <= statement.excluded.revision,
    )
    await execute(session, statement)


async def upsert_listing(session: AsyncSession, values: dict[str, Any], *, delisted: bool) -> None:
    statement = insert(session, ListingRow).values(**values, delisted=delisted)
    table = _table(ListingRow)
    if delisted:
        statement = statement.on_conflict_do_update(
            index_elements=["id"], set_={"delisted": True, "updated_at": statement.excluded.updated_at}
        )
    else:
        # A listing once delisted stays delisted, whatever order the events arrive in.
        statement = statement.on_conflict_do_update(
            index_elements=["id"],
            set_={"updated_at": statement.excluded.updated_at},
            where=sa.not_(table.c.delisted),
        )
    await execute(session, statement)


async def add_purchases(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    cancelled = await session.get(CancelledOrderRow, rows[0]["order_id"])
    statement = insert(session, PurchaseRow).values([r | {"cancelled": cancelled is not None} for r in rows])
    await execute(session, statement.on_conflict_do_nothing())


async def cancel_order(session: AsyncSession, order_id: str, at: datetime) -> None:
    await execute(
        session, insert(session, CancelledOrderRow).values(order_id=order_id, cancelled_at=at).on_conflict_do_nothing()
    )
    await session.exec(sa.update(PurchaseRow).where(col(PurchaseRow.order_id) == order_id).values(cancelled=True))


async def owner_since(session: AsyncSession, party_id: str, product_id: str) -> datetime | None:
    query = select(sa.func.min(PurchaseRow.placed_at)).where(
        col(PurchaseRow.party_id) == party_id,
        col(PurchaseRow.product_id) == product_id,
        sa.not_(col(PurchaseRow.cancelled)),
    )
    found = (await session.exec(query)).first()
    return None if found is None else _aware(found)


async def ownerships(session: AsyncSession, party_id: str, limit: int = 100) -> list[domain.Ownership]:
    query = (
        select(PurchaseRow.product_id, sa.func.min(PurchaseRow.placed_at), ProductRow.name)
        .join(ProductRow, col(ProductRow.id) == col(PurchaseRow.product_id), isouter=True)
        .where(col(PurchaseRow.party_id) == party_id, sa.not_(col(PurchaseRow.cancelled)))
        .group_by(col(PurchaseRow.product_id), col(ProductRow.name))
        .order_by(sa.func.min(PurchaseRow.placed_at))
        .limit(limit)
    )
    return [
        domain.Ownership(product_id, name or "", _aware(since))
        for product_id, since, name in (await session.exec(query)).all()
    ]


def _aware(value: Any) -> datetime:
    """An aggregate over a timestamp column comes back without the column's type: make it aware UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    converted = UtcDateTime().process_result_value(value, None)  # type: ignore[arg-type]
    assert converted is not None
    return converted


@dataclass(frozen=True)
class Candidate:
    party_id: str
    since: datetime


async def owners_to_invite(session: AsyncSession, product_id: str, asker: str, limit: int) -> list[Candidate]:
    """Members of any community who bought the product from any retailer, the most reputed first,
    then the longest owners."""
    members = select(MembershipRow.party_id).where(col(MembershipRow.left_at).is_(None))
    points = sa.func.coalesce(sa.func.max(ReputationRow.points), 0)
    since = sa.func.min(PurchaseRow.placed_at)
    query = (
        select(PurchaseRow.party_id, since)
        .join(ReputationRow, col(ReputationRow.party_id) == col(PurchaseRow.party_id), isouter=True)
        .where(
            col(PurchaseRow.product_id) == product_id,
            sa.not_(col(PurchaseRow.cancelled)),
            col(PurchaseRow.party_id) != asker,
            col(PurchaseRow.party_id).in_(members),
        )
        .group_by(col(PurchaseRow.party_id))
        .order_by(points.desc(), since.asc(), col(PurchaseRow.party_id))
        .limit(limit)
    )
    return [Candidate(party, _aware(at)) for party, at in (await session.exec(query)).all()]


# --- questions and answers ---------------------------------------------------------------------


async def question(session: AsyncSession, question_id: str, *, for_update: bool = False) -> QuestionRow:
    query = select(QuestionRow).where(col(QuestionRow.id) == question_id)
    if for_update:
        query = query.with_for_update()
    row = (await session.exec(query)).first()
    if row is None:
        raise NotFound(f"question {question_id} not found")
    return row


async def answer(session: AsyncSession, answer_id: str) -> AnswerRow:
    row = await session.get(AnswerRow, answer_id)
    if row is None:
        raise NotFound(f"answer {answer_id} not found")
    return row


async def has_answered(session: AsyncSession, question_id: str, party_id: str) -> bool:
    query = select(AnswerRow.id).where(
        col(AnswerRow.question_id) == question_id, col(AnswerRow.answerer_id) == party_id
    )
    return (await session.exec(query)).first() is not None


async def invitation(session: AsyncSession, question_id: str, party_id: str) -> InvitationRow | None:
    return await session.get(InvitationRow, (question_id, party_id))


def question_keys(order: str) -> list[tuple[Any, bool]]:
    if order == "most_helpful":
        return [
            (col(QuestionRow.answered), True),
            (col(QuestionRow.top_score), True),
            (col(QuestionRow.asked_at), True),
            (col(QuestionRow.id), True),
        ]
    return [(col(QuestionRow.answered), False), (col(QuestionRow.asked_at), True), (col(QuestionRow.id), True)]


def question_cursor(row: QuestionRow, order: str) -> list[Any]:
    if order == "most_helpful":
        return [row.answered, row.top_score, row.asked_at, row.id]
    return [row.answered, row.asked_at, row.id]


async def list_questions(
    session: AsyncSession, product_id: str, community_id: str, order: str, limit: int, cursor: Sequence[Any] | None
) -> list[QuestionRow]:
    query = select(QuestionRow).where(col(QuestionRow.product_id) == product_id)
    if community_id:
        query = query.where(col(QuestionRow.community_id) == community_id)
    keys = question_keys(order)
    if cursor is not None:
        query = query.where(after(keys, cursor))
    return list((await session.exec(query.order_by(*ordered(keys)).limit(limit))).all())


ANSWER_KEYS = [
    (col(AnswerRow.accepted), True),
    (col(AnswerRow.score), True),
    (col(AnswerRow.created_at), False),
    (col(AnswerRow.id), False),
]


def answer_cursor(row: AnswerRow) -> list[Any]:
    return [row.accepted, row.score, row.created_at, row.id]


async def list_answers(
    session: AsyncSession, question_id: str, limit: int, cursor: Sequence[Any] | None
) -> list[AnswerRow]:
    query = select(AnswerRow).where(col(AnswerRow.question_id) == question_id)
    if cursor is not None:
        query = query.where(after(ANSWER_KEYS, cursor))
    return list((await session.exec(query.order_by(*ordered(ANSWER_KEYS)).limit(limit))).all())


async def top_answers(
    session: AsyncSession, question_ids: Collection[str], per_question: int
) -> dict[str, list[AnswerRow]]:
    """The best ``per_question`` answers of each question, in one query."""
    found: dict[str, list[AnswerRow]] = {q: [] for q in question_ids}
    if not question_ids:
        return found
    rank = (
        sa.func.row_number().over(partition_by=col(AnswerRow.question_id), order_by=ordered(ANSWER_KEYS)).label("rank")
    )
    ranked = select(col(AnswerRow.id), rank).where(col(AnswerRow.question_id).in_(list(question_ids))).subquery()
    query = (
        select(AnswerRow)
        .join(ranked, ranked.c.id == col(AnswerRow.id))
        .where(ranked.c.rank <= per_question)
        .order_by(col(AnswerRow.question_id), ranked.c.rank)
    )
    for row in (await session.exec(query)).all():
        found[row.question_id].append(row)
    return found


async def record_answer_on_question(
    session: AsyncSession, question_id: str, at: datetime, asked_at: datetime, verified_owner: bool
) -> None:
    """Count a new answer on its question: the first one sets the time to first answer."""
    first = sa.case((col(QuestionRow.first_answer_at).is_(None), at), else_=col(QuestionRow.first_answer_at))
    seconds = sa.case(
        (col(QuestionRow.first_answer_at).is_(None), (at - asked_at).total_seconds()),
        else_=col(QuestionRow.first_answer_seconds),
    )
    values: dict[str, Any] = {
        "answer_count": col(QuestionRow.answer_count) + 1,
        "answered": True,
        "first_answer_at": first,
        "first_answer_seconds": seconds,
    }
    if verified_owner:
        values["owner_answered_at"] = sa.case(
            (col(QuestionRow.owner_answered_at).is_(None), at), else_=col(QuestionRow.owner_answered_at)
        )
    await session.exec(sa.update(QuestionRow).where(col(QuestionRow.id) == question_id).values(**values))


async def add_answer_vote(session: AsyncSession, answer_row: AnswerRow, helpful: bool) -> None:
    counter = "helpful" if helpful else "unhelpful"
    change = 1 if helpful else -1
    await session.exec(
        sa.update(AnswerRow)
        .where(col(AnswerRow.id) == answer_row.id)
        .values(**{counter: getattr(AnswerRow, counter) + 1, "score": col(AnswerRow.score) + change})
    )
    best = select(sa.func.max(AnswerRow.score)).where(col(AnswerRow.question_id) == answer_row.question_id)
    await session.exec(
        sa.update(QuestionRow)
        .where(col(QuestionRow.id) == answer_row.question_id)
        .values(top_score=best.scalar_subquery())
    )


async def list_invitations(
    session: AsyncSession, party_id: str, include_answered: bool, limit: int, cursor: Sequence[Any] | None
) -> list[tuple[InvitationRow, QuestionRow]]:
    query = (
        select(InvitationRow, QuestionRow)
        .join(QuestionRow, col(QuestionRow.id) == col(InvitationRow.question_id))
        .where(col(InvitationRow.party_id) == party_id)
    )
    if not include_answered:
        query = query.where(col(InvitationRow.answered_at).is_(None))
    keys = [(col(InvitationRow.invited_at), True), (col(InvitationRow.question_id), True)]
    if cursor is not None:
        query = query.where(after(keys, cursor))
    return [(i, q) for i, q in (await session.exec(query.order_by(*ordered(keys)).limit(limit))).all()]


async def list_escalated(
    session: AsyncSession, maker_id: str, include_answered: bool, limit: int, cursor: Sequence[Any] | None
) -> list[QuestionRow]:
    query = select(QuestionRow).where(col(QuestionRow.maker_id) == maker_id, col(QuestionRow.escalated_at).is_not(None))
    if not include_answered:
        query = query.where(sa.not_(col(QuestionRow.answered)))
    keys = [(col(QuestionRow.escalated_at), False), (col(QuestionRow.id), False)]
    if cursor is not None:
        query = query.where(after(keys, cursor))
    return list((await session.exec(query.order_by(*ordered(keys)).limit(limit))).all())


async def claim_due(session: AsyncSession, asked_before: datetime, at: datetime, limit: int) -> list[QuestionRow]:
    """Mark questions unanswered since before ``asked_before`` as escalated at ``at``, and return them.

    On PostgreSQL the candidates are locked ``FOR UPDATE SKIP LOCKED``, so replicas running the job
    at once take different questions; each is then marked only if still unanswered and unescalated,
    which a concurrent claim or answer would have changed. SQLite has one writer at a time.
    """
    query = (
        select(QuestionRow)
        .where(
            sa.not_(col(QuestionRow.answered)),
            col(QuestionRow.escalated_at).is_(None),
            col(QuestionRow.asked_at) <= asked_before,
        )
        .order_by(col(QuestionRow.asked_at))
        .limit(limit)
    )
    if dialect(session) == "postgresql":
        query = query.with_for_update(skip_locked=True)
    claimed = []
    for row in (await session.exec(query)).all():
        result = await session.exec(
            sa.update(QuestionRow)
            .where(
                col(QuestionRow.id) == row.id,
                col(QuestionRow.escalated_at).is_(None),
                sa.not_(col(QuestionRow.answered)),
            )
            .values(escalated_at=at)
        )
        if result.rowcount == 1:
            row.escalated_at = at
            claimed.append(row)
    return claimed


# --- ideas and notifications -------------------------------------------------------------------


async def idea(session: AsyncSession, idea_id: str, *, for_update: bool = False) -> IdeaRow:
    query = select(IdeaRow).where(col(IdeaRow.id) == idea_id)
    if for_update:
        query = query.with_for_update()
    row = (await session.exec(query)).first()
    if row is None:
        raise NotFound(f"idea {idea_id} not found")
    return row


async def promoters(session: AsyncSession, idea_ids: Collection[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {i: [] for i in idea_ids}
    if not idea_ids:
        return found
    query = (
        select(IdeaPromotionRow)
        .where(col(IdeaPromotionRow.idea_id).in_(list(idea_ids)))
        .order_by(col(IdeaPromotionRow.promoted_at), col(IdeaPromotionRow.partner_id))
    )
    for row in (await session.exec(query)).all():
        found[row.idea_id].append(row.partner_id)
    return found


async def idea_voters(session: AsyncSession, idea_id: str) -> list[str]:
    query = select(IdeaVoteRow.voter_id).where(col(IdeaVoteRow.idea_id) == idea_id).order_by(col(IdeaVoteRow.voter_id))
    return list((await session.exec(query)).all())


async def delete_idea_vote(session: AsyncSession, idea_id: str, voter: str) -> bool:
    statement = sa.delete(IdeaVoteRow).where(col(IdeaVoteRow.idea_id) == idea_id, col(IdeaVoteRow.voter_id) == voter)
    return bool((await session.exec(statement)).rowcount)


async def change_votes(session: AsyncSession, idea_id: str, change: int) -> None:
    await session.exec(
        sa.update(IdeaRow).where(col(IdeaRow.id) == idea_id).values(vote_count=col(IdeaRow.vote_count) + change)
    )


def idea_keys(order: str) -> list[tuple[Any, bool]]:
    if order == "newest":
        return [(col(IdeaRow.created_at), True), (col(IdeaRow.id), True)]
    return [(col(IdeaRow.vote_count), True), (col(IdeaRow.created_at), True), (col(IdeaRow.id), True)]


def idea_cursor(row: IdeaRow, order: str) -> list[Any]:
    if order == "newest":
        return [row.created_at, row.id]
    return [row.vote_count, row.created_at, row.id]


async def list_ideas(
    session: AsyncSession,
    community_id: str,
    status: domain.IdeaStatus | None,
    order: str,
    limit: int,
    cursor: Sequence[Any] | None,
) -> list[IdeaRow]:
    query = select(IdeaRow).where(col(IdeaRow.community_id) == community_id)
    if status is not None:
        query = query.where(col(IdeaRow.status) == status.value)
    keys = idea_keys(order)
    if cursor is not None:
        query = query.where(after(keys, cursor))
    return list((await session.exec(query.order_by(*ordered(keys)).limit(limit))).all())


async def list_notifications(
    session: AsyncSession, party_id: str, unread_only: bool, limit: int, cursor: Sequence[Any] | None
) -> list[NotificationRow]:
    query = select(NotificationRow).where(col(NotificationRow.party_id) == party_id)
    if unread_only:
        query = query.where(col(NotificationRow.read_at).is_(None))
    keys = [(col(NotificationRow.created_at), True), (col(NotificationRow.id), True)]
    if cursor is not None:
        query = query.where(after(keys, cursor))
    return list((await session.exec(query.order_by(*ordered(keys)).limit(limit))).all())


async def mark_read(session: AsyncSession, party_id: str, ids: Collection[str], at: datetime) -> int:
    statement = sa.update(NotificationRow).where(
        col(NotificationRow.party_id) == party_id, col(NotificationRow.read_at).is_(None)
    )
    if ids:
        statement = statement.where(col(NotificationRow.id).in_(list(ids)))
    result = await session.exec(statement.values(read_at=at))
    return int(result.rowcount)


async def notify(
    session: AsyncSession,
    party_ids: Collection[str],
    kind: str,
    message: str,
    at: datetime,
    *,
    idea_id: str | None = None,
    question_id: str | None = None,
    answer_id: str | None = None,
) -> None:
    for party_id in sorted(set(party_ids)):
        session.add(
            NotificationRow(
                id=str(uuid.uuid4()),
                party_id=party_id,
                kind=kind,
                message=message[:2000],
                idea_id=idea_id,
                question_id=question_id,
                answer_id=answer_id,
                created_at=at,
            )
        )


# --- reputation --------------------------------------------------------------------------------


async def add_points(
    session: AsyncSession,
    entry_id: str,
    party_id: str,
    reason: domain.Reason,
    cause_event_id: str,
    subject_id: str,
    at: datetime,
) -> tuple[int, int] | None:
    """Write a ledger entry and add its points; ``(delta, total)``, or None when the ledger has an
    entry for this cause event or this subject already (a replay, or a repeat)."""
    delta = domain.POINTS[reason]
    entry = insert(session, ReputationEntryRow).values(
        id=entry_id,
        party_id=party_id,
        delta=delta,
        reason=reason.value,
        cause_event_id=cause_event_id,
        subject_id=subject_id,
        created_at=at,
    )
    result = await execute(session, entry.on_conflict_do_nothing())
    if not result.rowcount:
        return None
    table = _table(ReputationRow)
    total = (
        insert(session, ReputationRow)
        .values(party_id=party_id, points=delta, updated_at=at)
        .on_conflict_do_update(index_elements=["party_id"], set_={"points": table.c.points + delta, "updated_at": at})
        .returning(table.c.points)
    )
    return delta, int((await execute(session, total)).scalar_one())


async def points(session: AsyncSession, party_id: str) -> int:
    row = await session.get(ReputationRow, party_id)
    return row.points if row is not None else 0


async def earned(session: AsyncSession, party_id: str) -> list[domain.Earned]:
    query = (
        select(ReputationEntryRow.reason, sa.func.count(), sa.func.min(ReputationEntryRow.created_at))
        .where(col(ReputationEntryRow.party_id) == party_id)
        .group_by(col(ReputationEntryRow.reason))
    )
    return [
        domain.Earned(domain.Reason(reason), int(count), _aware(first))
        for reason, count, first in (await session.exec(query)).all()
    ]


async def co_designs(session: AsyncSession, party_id: str) -> list[domain.CoDesign]:
    query = select(CoDesignRow).where(col(CoDesignRow.party_id) == party_id)
    return [domain.CoDesign(r.product_id, r.label, r.joined_at) for r in (await session.exec(query)).all()]


async def list_entries(
    session: AsyncSession, party_id: str, limit: int, cursor: Sequence[Any] | None
) -> list[ReputationEntryRow]:
    query = select(ReputationEntryRow).where(col(ReputationEntryRow.party_id) == party_id)
    keys = [(col(ReputationEntryRow.created_at), True), (col(ReputationEntryRow.id), True)]
    if cursor is not None:
        query = query.where(after(keys, cursor))
    return list((await session.exec(query.order_by(*ordered(keys)).limit(limit))).all())
