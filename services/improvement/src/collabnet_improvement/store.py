"""Improvement's tables and the queries over them. Rows are not the domain: the domain module holds
the rules, these hold what was decided.

Read models of other domains (products, listings, supply networks, reviews, promoted ideas) are
kept here from their events; no other service's database is ever read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import registry
from sqlmodel import JSON, Column, Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet_improvement import domain
from collabnet_kit.db import UtcDateTime, insert
from collabnet_kit.errors import NotFound
from collabnet_kit.migrations import History

ID = 64
"""Ids of other domains are opaque strings; ours are UUIDs."""


class Table(SQLModel, registry=registry()):
    """Base of improvement's tables, kept apart from every other service's metadata."""


def _time(**kwargs: Any) -> Any:
    return Field(sa_type=UtcDateTime, **kwargs)


def _json_or_none() -> Any:
    return Field(default=None, sa_column=Column(JSON, nullable=True))


# --- read models of other domains -----------------------------------------------------------------


class ProductRow(Table, table=True):
    """A product as supplychain described it; a stub (no name yet) when a network change came first."""

    __tablename__ = "product"
    product_id: str = Field(primary_key=True, max_length=ID)
    maker_id: str = Field(default="", max_length=ID)
    name: str = Field(default="", max_length=200)
    sku: str = Field(default="", max_length=100)
    category: str = Field(default="", max_length=200)
    revision: int = 0
    # The time of the supply-network event the supplier rows reflect: an older one never replaces them.
    network_changed_at: datetime | None = _time(default=None, nullable=True)
    updated_at: datetime = _time()


class ListingRow(Table, table=True):
    __tablename__ = "listing"
    listing_id: str = Field(primary_key=True, max_length=ID)
    product_id: str = Field(max_length=ID, index=True)
    retailer_id: str = Field(max_length=ID)
    active: bool
    # The time of the event that set ``active``: listing and delisting may arrive out of order.
    changed_at: datetime = _time()


class SupplierRow(Table, table=True):
    __tablename__ = "product_supplier"
    product_id: str = Field(primary_key=True, max_length=ID)
    supplier_id: str = Field(primary_key=True, max_length=ID)
    tier: int = Field(primary_key=True)
    item: str = Field(primary_key=True, max_length=200)


class ReviewRow(Table, table=True):
    """A review as the reviews service last described it. ``version`` orders the events."""

    __tablename__ = "review"
    review_id: str = Field(primary_key=True, max_length=ID)
    product_id: str = Field(max_length=ID, index=True)
    revision: int
    author_id: str = Field(max_length=ID)
    channel_partner_id: str = Field(max_length=ID)
    rating: int
    version: int
    withdrawn: bool = False
    published_at: datetime | None = _time(default=None, nullable=True)
    updated_at: datetime = _time()


class RatingStatRow(Table, table=True):
    """Running sums of the current ratings of a product's reviews: per revision, and as revision 0 overall."""

    __tablename__ = "rating_stat"
    product_id: str = Field(primary_key=True, max_length=ID)
    revision: int = Field(primary_key=True)
    reviews: int = 0
    rating_sum: int = 0
    negative: int = 0


class IdeaRow(Table, table=True):
    """An idea promoted into a partner's improvement program (from community)."""

    __tablename__ = "promoted_idea"
    idea_id: str = Field(primary_key=True, max_length=ID)
    community_id: str = Field(max_length=ID)
    partner_id: str = Field(max_length=ID, index=True)
    title: str = Field(max_length=200)
    description: str = Field(max_length=5000)
    product_id: str = Field(max_length=ID)
    submitter_id: str = Field(max_length=ID)
    promoted_at: datetime = _time()


# --- policies and cases -----------------------------------------------------------------------------


class PolicyRow(Table, table=True):
    __tablename__ = "partner_policy"
    partner_id: str = Field(primary_key=True, max_length=ID)
    case_threshold: int
    recovery_threshold: int
    engagement_target_seconds: int
    recovery_window_seconds: int
    updated_at: datetime = _time()


class CaseRow(Table, table=True):
    __tablename__ = "feedback_case"
    __table_args__ = (
        sa.Index("feedback_case_listing", "opened_at", "id"),
        sa.Index("feedback_case_recovery", "outcome", "recovery_deadline"),
        # Recovery by product counts outcomes from the index alone.
        sa.Index("feedback_case_product_outcome", "product_id", "outcome"),
    )
    id: str = Field(primary_key=True, max_length=36)
    # Exactly one case per review, however often (or late) the review's events arrive.
    review_id: str = Field(max_length=ID, unique=True)
    product_id: str = Field(max_length=ID)
    revision: int
    customer_id: str = Field(max_length=ID, index=True)
    maker_id: str = Field(default="", max_length=ID)
    retailer_id: str = Field(max_length=ID)
    state: str = Field(max_length=30)
    outcome: str = Field(max_length=20)
    opening_rating: int
    current_rating: int
    review_withdrawn: bool = False
    opened_by_revision: bool = False
    recovery_threshold: int
    recovery_window_seconds: int
    root_cause: dict[str, Any] | None = _json_or_none()
    resolution: str = Field(default="", max_length=5000)
    reopen_count: int = 0
    opened_at: datetime = _time()
    state_changed_at: datetime = _time()
    updated_at: datetime = _time()
    resolved_at: datetime | None = _time(default=None, nullable=True)
    closed_at: datetime | None = _time(default=None, nullable=True)
    outcome_at: datetime | None = _time(default=None, nullable=True)
    # Resolved and not revised to the recovery threshold by then: not recovered (the periodic job).
    recovery_deadline: datetime | None = _time(default=None, nullable=True)
    invited_at: datetime | None = _time(default=None, nullable=True)


class CasePartnerRow(Table, table=True):
    __tablename__ = "case_partner"
    # A partner's cases newest first, a page at a time, however many it has.
    __table_args__ = (sa.Index("case_partner_listing", "partner_id", "opened_at", "case_id"),)
    case_id: str = Field(primary_key=True, foreign_key="feedback_case.id", max_length=36)
    partner_id: str = Field(primary_key=True, max_length=ID)
    role: str = Field(max_length=20)
    # The case's, copied for the listing index.
    opened_at: datetime = _time()
    target_seconds: int
    assigned_at: datetime = _time()
    engage_due_at: datetime = _time()
    engaged_at: datetime | None = _time(default=None, nullable=True)
    engagement_seconds: float | None = None
    within_target: bool | None = None


class TransitionRow(Table, table=True):
    __tablename__ = "case_transition"
    __table_args__ = (sa.Index("case_transition_by_case", "case_id", "at", "id"),)
    id: str = Field(primary_key=True, max_length=36)
    case_id: str = Field(foreign_key="feedback_case.id", max_length=36)
    from_state: str = Field(max_length=30)
    to_state: str = Field(max_length=30)
    at: datetime = _time()
    actor: str = Field(max_length=100)
    note: str = Field(default="", max_length=5000)
    seconds_in_previous: float


class EntryRow(Table, table=True):
    __tablename__ = "case_entry"
    __table_args__ = (sa.Index("case_entry_timeline", "case_id", "created_at", "id"),)
    id: str = Field(primary_key=True, max_length=36)
    case_id: str = Field(foreign_key="feedback_case.id", max_length=36)
    kind: str = Field(max_length=30)
    author_partner: str = Field(default="", max_length=ID)
    author_party: str = Field(default="", max_length=ID)
    body: str = Field(max_length=5000)
    internal: bool
    created_at: datetime = _time()


class ActionRow(Table, table=True):
    __tablename__ = "case_action"
    id: str = Field(primary_key=True, max_length=36)
    case_id: str = Field(foreign_key="feedback_case.id", max_length=36, index=True)
    kind: str = Field(max_length=20)
    description: str = Field(max_length=5000)
    owner_id: str = Field(max_length=ID)
    due_at: datetime = _time()
    status: str = Field(max_length=20)
    created_by: str = Field(max_length=100)
    created_at: datetime = _time()
    completed_at: datetime | None = _time(default=None, nullable=True)
    note: str = Field(default="", max_length=5000)


class CheckRow(Table, table=True):
    __tablename__ = "effectiveness_check"
    id: str = Field(primary_key=True, max_length=36)
    case_id: str = Field(foreign_key="feedback_case.id", max_length=36, index=True)
    passed: bool
    evidence: str = Field(max_length=5000)
    checked_by: str = Field(max_length=100)
    checked_at: datetime = _time()


class ScarRow(Table, table=True):
    __tablename__ = "supplier_request"
    id: str = Field(primary_key=True, max_length=36)
    case_id: str = Field(foreign_key="feedback_case.id", max_length=36, index=True)
    product_id: str = Field(max_length=ID)
    supplier_id: str = Field(max_length=ID, index=True)
    tier: int
    item: str = Field(max_length=200)
    requested_by: str = Field(max_length=ID)
    problem: str = Field(max_length=5000)
    due_at: datetime = _time()
    status: str = Field(max_length=20)
    containment: str = Field(default="", max_length=5000)
    root_cause: str = Field(default="", max_length=5000)
    corrective_action: str = Field(default="", max_length=5000)
    responded_at: datetime | None = _time(default=None, nullable=True)
    review_comment: str = Field(default="", max_length=5000)
    reviewed_at: datetime | None = _time(default=None, nullable=True)
    created_at: datetime = _time()


class InvitationRow(Table, table=True):
    __tablename__ = "codesign_invitation"
    __table_args__ = (
        # One pending invitation per customer and case (or initiative).
        sa.Index(
            "codesign_invitation_pending",
            "party_id",
            "case_id",
            "initiative_id",
            unique=True,
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        ),
        sa.Index("codesign_invitation_by_party", "party_id", "created_at", "id"),
    )
    id: str = Field(primary_key=True, max_length=36)
    # Empty when the invitation is to the other kind of subject.
    case_id: str = Field(default="", max_length=36, index=True)
    initiative_id: str = Field(default="", max_length=36, index=True)
    party_id: str = Field(max_length=ID)
    product_id: str = Field(default="", max_length=ID)
    label: str = Field(default="", max_length=200)
    message: str = Field(default="", max_length=5000)
    status: str = Field(max_length=20)
    invited_by: str = Field(max_length=ID)
    created_at: datetime = _time()
    responded_at: datetime | None = _time(default=None, nullable=True)


class NotificationRow(Table, table=True):
    __tablename__ = "notification"
    __table_args__ = (sa.Index("notification_by_party", "party_id", "created_at", "id"),)
    id: str = Field(primary_key=True, max_length=36)
    # `review-update:<case>` or `co-design:<invitation>`: one notification per cause, ever.
    dedupe_key: str = Field(max_length=120, unique=True)
    party_id: str = Field(max_length=ID)
    kind: str = Field(max_length=40)
    case_id: str = Field(default="", max_length=36)
    initiative_id: str = Field(default="", max_length=36)
    invitation_id: str = Field(default="", max_length=36)
    review_id: str = Field(default="", max_length=ID)
    body: str = Field(max_length=5000)
    created_at: datetime = _time()


# --- initiatives --------------------------------------------------------------------------------------


class InitiativeRow(Table, table=True):
    __tablename__ = "initiative"
    __table_args__ = (sa.Index("initiative_listing", "created_at", "id"),)
    id: str = Field(primary_key=True, max_length=36)
    owner_id: str = Field(max_length=ID, index=True)
    title: str = Field(max_length=200)
    description: str = Field(default="", max_length=5000)
    kind: str = Field(max_length=30)
    product_id: str = Field(default="", max_length=ID, index=True)
    stage: str = Field(max_length=20)
    cycle: int = 1
    # An idea proposes at most one initiative, however often its promotion is delivered.
    source_idea_id: str | None = Field(default=None, max_length=ID, unique=True)
    created_at: datetime = _time()
    launched_at: datetime | None = _time(default=None, nullable=True)
    stage_changed_at: datetime = _time()
    updated_at: datetime = _time()
    closed_at: datetime | None = _time(default=None, nullable=True)


class StageRow(Table, table=True):
    __tablename__ = "initiative_stage"
    __table_args__ = (sa.Index("initiative_stage_history", "initiative_id", "at", "id"),)
    id: str = Field(primary_key=True, max_length=36)
    initiative_id: str = Field(foreign_key="initiative.id", max_length=36)
    from_stage: str = Field(max_length=20)
    to_stage: str = Field(max_length=20)
    decision: str = Field(max_length=5000)
    decided_by: str = Field(max_length=100)
    at: datetime = _time()
    cycle: int


class StakeholderRow(Table, table=True):
    __tablename__ = "stakeholder"
    initiative_id: str = Field(primary_key=True, foreign_key="initiative.id", max_length=36)
    # `partner:<id>` or `platform:<name>`.
    key: str = Field(primary_key=True, max_length=80)
    partner_id: str | None = Field(default=None, max_length=ID, index=True)
    platform: str | None = Field(default=None, max_length=20)
    role: str = Field(default="", max_length=200)
    added_at: datetime = _time()


class InitiativeCaseRow(Table, table=True):
    __tablename__ = "initiative_case"
    initiative_id: str = Field(primary_key=True, foreign_key="initiative.id", max_length=36)
    case_id: str = Field(primary_key=True, foreign_key="feedback_case.id", max_length=36)
    linked_at: datetime = _time()


class InitiativeIdeaRow(Table, table=True):
    __tablename__ = "initiative_idea"
    initiative_id: str = Field(primary_key=True, foreign_key="initiative.id", max_length=36)
    idea_id: str = Field(primary_key=True, foreign_key="promoted_idea.idea_id", max_length=ID)
    linked_at: datetime = _time()


class ObjectiveRow(Table, table=True):
    __tablename__ = "objective"
    __table_args__ = (sa.Index("objective_by_metric", "metric_kind", "subject_id"),)
    id: str = Field(primary_key=True, max_length=36)
    initiative_id: str = Field(foreign_key="initiative.id", max_length=36, index=True)
    description: str = Field(default="", max_length=5000)
    metric_kind: str = Field(max_length=40)
    subject: str = Field(default="", max_length=20)
    subject_id: str = Field(default="", max_length=ID)
    revision: int = 0
    metric_name: str = Field(default="", max_length=100)
    unit: str = Field(default="", max_length=40)
    direction: str = Field(max_length=10)
    baseline: float
    target: float
    forecast: float | None = None
    current: float | None = None
    due_at: datetime = _time()
    created_at: datetime = _time()
    met_at: datetime | None = _time(default=None, nullable=True)
    updated_at: datetime = _time()


class MeasurementRow(Table, table=True):
    __tablename__ = "measurement"
    __table_args__ = (sa.Index("measurement_history", "objective_id", "measured_at", "id"),)
    id: str = Field(primary_key=True, max_length=36)
    objective_id: str = Field(foreign_key="objective.id", max_length=36)
    value: float
    measured_at: datetime = _time()
    source: str = Field(max_length=20)
    note: str = Field(default="", max_length=5000)
    recorded_by: str = Field(default="", max_length=100)


class RedesignRow(Table, table=True):
    __tablename__ = "redesign_request"
    __table_args__ = (sa.UniqueConstraint("initiative_id", "cycle", name="redesign_once_per_cycle"),)
    id: str = Field(primary_key=True, max_length=36)
    initiative_id: str = Field(foreign_key="initiative.id", max_length=36)
    cycle: int
    product_id: str = Field(max_length=ID)
    maker_id: str = Field(max_length=ID)
    changes: str = Field(max_length=5000)
    reason: str = Field(max_length=5000)
    requested_by: str = Field(max_length=100)
    requested_at: datetime = _time()
    fulfilled_revision: int = 0
    fulfilled_at: datetime | None = _time(default=None, nullable=True)


_WITHIN_TARGET = CasePartnerRow.__table__.c.within_target  # type: ignore[attr-defined]

HISTORY = History(Path(__file__).parent / "migrations", Table.metadata)


# --- helpers -------------------------------------------------------------------------------------------


R = TypeVar("R", bound=Table)


async def require(session: AsyncSession, row_type: type[R], ident: Any, what: str) -> R:
    row = await session.get(row_type, ident)
    if row is None:
        raise NotFound(f"{what} {ident} not found")
    return row


async def lock(session: AsyncSession, row_type: type[R], ident: str, what: str) -> R:
    """The row, locked for the rest of the transaction on PostgreSQL (SQLite's writer lock already
    serializes writers), so two writers of one case or initiative never interleave."""
    primary = sa.inspect(row_type).primary_key[0]
    query = select(row_type).where(primary == ident).with_for_update()
    row = (await session.exec(query)).first()
    if row is None:
        raise NotFound(f"{what} {ident} not found")
    return row


# --- read models ---------------------------------------------------------------------------------------


async def policies(session: AsyncSession, partner_ids: Collection[str]) -> dict[str, domain.Policy]:
    """The policy of each partner, the default for those without one."""
    ids = [p for p in partner_ids if p]
    rows = (await session.exec(select(PolicyRow).where(col(PolicyRow.partner_id).in_(ids)))).all() if ids else []
    found = {r.partner_id: to_policy(r) for r in rows}
    return {p: found.get(p, domain.DEFAULT_POLICY) for p in ids}


def to_policy(row: PolicyRow) -> domain.Policy:
    return domain.Policy(
        case_threshold=row.case_threshold,
        recovery_threshold=row.recovery_threshold,
        engagement_target=timedelta(seconds=row.engagement_target_seconds),
        recovery_window=timedelta(seconds=row.recovery_window_seconds),
    )


async def suppliers(session: AsyncSession, product_id: str) -> list[SupplierRow]:
    query = (
        select(SupplierRow)
        .where(col(SupplierRow.product_id) == product_id)
        .order_by(col(SupplierRow.tier), col(SupplierRow.supplier_id), col(SupplierRow.item))
    )
    return list((await session.exec(query)).all())


async def retailers(session: AsyncSession, product_id: str) -> list[str]:
    query = select(ListingRow.retailer_id).where(col(ListingRow.product_id) == product_id, col(ListingRow.active))
    return sorted(set((await session.exec(query)).all()))


async def add_rating(session: AsyncSession, product_id: str, revision: int, rating: int, sign: int) -> None:
    """Add (``sign`` 1) or take away (-1) one review's rating, for its revision and for the product
    overall: one upsert, whose increments commute, so concurrent handlers never lose one."""
    negative = sign if rating <= domain.NEGATIVE_RATING else 0
    table = RatingStatRow.__table__  # type: ignore[attr-defined]
    statement = insert(session, table).values(
        [
            {
                "product_id": product_id,
                "revision": rev,
                "reviews": sign,
                "rating_sum": sign * rating,
                "negative": negative,
            }
            for rev in sorted({0, revision})
        ]
    )
    await session.exec(
        statement.on_conflict_do_update(
            index_elements=[table.c.product_id, table.c.revision],
            set_={
                "reviews": table.c.reviews + statement.excluded.reviews,
                "rating_sum": table.c.rating_sum + statement.excluded.rating_sum,
                "negative": table.c.negative + statement.excluded.negative,
            },
        )
    )


async def rating_stats(session: AsyncSession, product_id: str) -> dict[int, RatingStatRow]:
    query = (
        select(RatingStatRow).where(col(RatingStatRow.product_id) == product_id).order_by(col(RatingStatRow.revision))
    )
    return {r.revision: r for r in (await session.exec(query)).all()}


# --- cases ------------------------------------------------------------------------------------------------


async def case_by_review(session: AsyncSession, review_id: str, *, lock: bool = False) -> CaseRow | None:
    query = select(CaseRow).where(col(CaseRow.review_id) == review_id)
    if lock:
        query = query.with_for_update()
    return (await session.exec(query)).first()


async def case_partners(session: AsyncSession, case_id: str) -> list[CasePartnerRow]:
    query = select(CasePartnerRow).where(col(CasePartnerRow.case_id) == case_id).order_by(col(CasePartnerRow.role))
    return list((await session.exec(query)).all())


@dataclass
class CaseBundle:
    """A case with everything that hangs off it."""

    case: CaseRow
    partners: list[CasePartnerRow] = field(default_factory=list)
    transitions: list[TransitionRow] = field(default_factory=list)
    actions: list[ActionRow] = field(default_factory=list)
    checks: list[CheckRow] = field(default_factory=list)
    scars: list[ScarRow] = field(default_factory=list)
    participants: list[str] = field(default_factory=list)


async def case_bundles(session: AsyncSession, cases: Sequence[CaseRow]) -> list[CaseBundle]:
    """The cases with their partners, transitions, actions, checks, supplier requests and
    co-design participants: one query per kind for the whole page."""
    bundles = {c.id: CaseBundle(c) for c in cases}
    ids = list(bundles)
    if not ids:
        return []

    async def children(row_type: Any, order: Sequence[Any]) -> Sequence[Any]:
        query = select(row_type).where(col(row_type.case_id).in_(ids)).order_by(*order)
        return (await session.exec(query)).all()

    for p in await children(CasePartnerRow, [CasePartnerRow.role]):
        bundles[p.case_id].partners.append(p)
    for t in await children(TransitionRow, [TransitionRow.at, TransitionRow.id]):
        bundles[t.case_id].transitions.append(t)
    for a in await children(ActionRow, [ActionRow.created_at, ActionRow.id]):
        bundles[a.case_id].actions.append(a)
    for c in await children(CheckRow, [CheckRow.checked_at, CheckRow.id]):
        bundles[c.case_id].checks.append(c)
    for s in await children(ScarRow, [ScarRow.created_at, ScarRow.id]):
        bundles[s.case_id].scars.append(s)
    accepted = select(InvitationRow.case_id, InvitationRow.party_id).where(
        col(InvitationRow.case_id).in_(ids), col(InvitationRow.status) == "accepted"
    )
    for case_id, party in (await session.exec(accepted)).all():
        bundles[case_id].participants.append(party)
    return [bundles[c.id] for c in cases]


async def list_cases(
    session: AsyncSession,
    *,
    partner_id: str,
    customer_id: str,
    product_id: str,
    state: str,
    outcome: str,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[CaseRow]:
    """Cases newest first, before the cursor. A partner's are walked along its listing index."""
    query = select(CaseRow)
    opened, ident = col(CaseRow.opened_at), col(CaseRow.id)
    if partner_id:
        query = query.join(CasePartnerRow, col(CasePartnerRow.case_id) == col(CaseRow.id)).where(
            col(CasePartnerRow.partner_id) == partner_id
        )
        opened, ident = col(CasePartnerRow.opened_at), col(CasePartnerRow.case_id)
    if customer_id:
        query = query.where(col(CaseRow.customer_id) == customer_id)
    if product_id:
        query = query.where(col(CaseRow.product_id) == product_id)
    if state:
        query = query.where(col(CaseRow.state) == state)
    if outcome:
        query = query.where(col(CaseRow.outcome) == outcome)
    if before is not None:
        query = query.where(sa.tuple_(opened, ident) < sa.tuple_(*before))
    query = query.order_by(opened.desc(), ident.desc()).limit(limit)
    return list((await session.exec(query)).all())


async def entries(
    session: AsyncSession, case_id: str, *, internal: bool, after: tuple[datetime, str] | None, limit: int
) -> list[EntryRow]:
    query = select(EntryRow).where(col(EntryRow.case_id) == case_id)
    if not internal:
        query = query.where(sa.not_(col(EntryRow.internal)))
    if after is not None:
        query = query.where(sa.tuple_(col(EntryRow.created_at), col(EntryRow.id)) > sa.tuple_(*after))
    query = query.order_by(col(EntryRow.created_at), col(EntryRow.id)).limit(limit)
    return list((await session.exec(query)).all())


async def open_scar_for(session: AsyncSession, case_id: str, supplier_id: str) -> ScarRow | None:
    query = select(ScarRow).where(
        col(ScarRow.case_id) == case_id,
        col(ScarRow.supplier_id) == supplier_id,
        col(ScarRow.status) != domain.ScarStatus.ACCEPTED.value,
    )
    return (await session.exec(query)).first()


async def list_scars(
    session: AsyncSession, *, case_id: str, supplier_id: str, after: tuple[datetime, str] | None, limit: int
) -> list[ScarRow]:
    query = select(ScarRow)
    if case_id:
        query = query.where(col(ScarRow.case_id) == case_id)
    if supplier_id:
        query = query.where(col(ScarRow.supplier_id) == supplier_id)
    if after is not None:
        query = query.where(sa.tuple_(col(ScarRow.created_at), col(ScarRow.id)) > sa.tuple_(*after))
    query = query.order_by(col(ScarRow.created_at), col(ScarRow.id)).limit(limit)
    return list((await session.exec(query)).all())


async def due_for_not_recovered(session: AsyncSession, now: datetime, limit: int) -> list[CaseRow]:
    """Resolved cases past their recovery deadline, locked; on PostgreSQL rows another replica's job
    holds are skipped, so replicas share the work."""
    query = (
        select(CaseRow)
        .where(col(CaseRow.outcome) == domain.Outcome.RESOLVED.value, col(CaseRow.recovery_deadline) <= now)
        .order_by(col(CaseRow.recovery_deadline), col(CaseRow.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.exec(query)).all())


async def partners_of(session: AsyncSession, case_ids: Collection[str]) -> set[str]:
    query = select(CasePartnerRow.partner_id).where(col(CasePartnerRow.case_id).in_(list(case_ids)))
    return set((await session.exec(query)).all())


# --- co-design and notifications ---------------------------------------------------------------------------


async def pending_invitation(
    session: AsyncSession, party_id: str, case_id: str, initiative_id: str
) -> InvitationRow | None:
    query = select(InvitationRow).where(
        col(InvitationRow.party_id) == party_id,
        col(InvitationRow.case_id) == case_id,
        col(InvitationRow.initiative_id) == initiative_id,
        col(InvitationRow.status) == "pending",
    )
    return (await session.exec(query)).first()


async def participants(session: AsyncSession, *, case_id: str = "", initiative_id: str = "") -> list[str]:
    query = select(InvitationRow.party_id).where(col(InvitationRow.status) == "accepted")
    query = query.where(
        col(InvitationRow.case_id) == case_id if case_id else col(InvitationRow.initiative_id) == initiative_id
    )
    return sorted(set((await session.exec(query)).all()))


async def list_invitations(
    session: AsyncSession,
    *,
    party_id: str,
    case_id: str,
    initiative_id: str,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[InvitationRow]:
    query = select(InvitationRow)
    if party_id:
        query = query.where(col(InvitationRow.party_id) == party_id)
    if case_id:
        query = query.where(col(InvitationRow.case_id) == case_id)
    if initiative_id:
        query = query.where(col(InvitationRow.initiative_id) == initiative_id)
    if after is not None:
        query = query.where(sa.tuple_(col(InvitationRow.created_at), col(InvitationRow.id)) > sa.tuple_(*after))
    query = query.order_by(col(InvitationRow.created_at), col(InvitationRow.id)).limit(limit)
    return list((await session.exec(query)).all())


async def add_notification(session: AsyncSession, row: NotificationRow) -> bool:
    """Adds the notification unless one with its dedupe key exists; True when added."""
    values = {c.name: getattr(row, c.name) for c in NotificationRow.__table__.columns}  # type: ignore[attr-defined]
    statement = insert(session, NotificationRow)
    result = await (await session.connection()).execute(statement.values(**values).on_conflict_do_nothing())
    return bool(result.rowcount)


async def notifications(
    session: AsyncSession, party_id: str, before: tuple[datetime, str] | None, limit: int
) -> list[NotificationRow]:
    query = select(NotificationRow).where(col(NotificationRow.party_id) == party_id)
    if before is not None:
        query = query.where(sa.tuple_(col(NotificationRow.created_at), col(NotificationRow.id)) < sa.tuple_(*before))
    query = query.order_by(col(NotificationRow.created_at).desc(), col(NotificationRow.id).desc()).limit(limit)
    return list((await session.exec(query)).all())


# --- initiatives ----------------------------------------------------------------------------------------------


@dataclass
class InitiativeBundle:
    initiative: InitiativeRow
    history: list[StageRow] = field(default_factory=list)
    stakeholders: list[StakeholderRow] = field(default_factory=list)
    case_ids: list[str] = field(default_factory=list)
    ideas: list[IdeaRow] = field(default_factory=list)
    objectives: list[ObjectiveRow] = field(default_factory=list)
    participants: list[str] = field(default_factory=list)
    redesigns: list[RedesignRow] = field(default_factory=list)


async def initiative_bundles(session: AsyncSession, initiatives: Sequence[InitiativeRow]) -> list[InitiativeBundle]:
    bundles = {i.id: InitiativeBundle(i) for i in initiatives}
    ids = list(bundles)
    if not ids:
        return []

    async def children(row_type: Any, order: Sequence[Any]) -> Sequence[Any]:
        query = select(row_type).where(col(row_type.initiative_id).in_(ids)).order_by(*order)
        return (await session.exec(query)).all()

    for s in await children(StageRow, [StageRow.at, StageRow.id]):
        bundles[s.initiative_id].history.append(s)
    for k in await children(StakeholderRow, [StakeholderRow.added_at, StakeholderRow.key]):
        bundles[k.initiative_id].stakeholders.append(k)
    for c in await children(InitiativeCaseRow, [InitiativeCaseRow.linked_at, InitiativeCaseRow.case_id]):
        bundles[c.initiative_id].case_ids.append(c.case_id)
    for o in await children(ObjectiveRow, [ObjectiveRow.created_at, ObjectiveRow.id]):
        bundles[o.initiative_id].objectives.append(o)
    for r in await children(RedesignRow, [RedesignRow.requested_at, RedesignRow.id]):
        bundles[r.initiative_id].redesigns.append(r)
    ideas = (
        select(InitiativeIdeaRow.initiative_id, IdeaRow)
        .join(IdeaRow, col(IdeaRow.idea_id) == col(InitiativeIdeaRow.idea_id))
        .where(col(InitiativeIdeaRow.initiative_id).in_(ids))
        .order_by(col(InitiativeIdeaRow.linked_at), col(IdeaRow.idea_id))
    )
    for initiative_id, idea in (await session.exec(ideas)).all():
        bundles[initiative_id].ideas.append(idea)
    accepted = select(InvitationRow.initiative_id, InvitationRow.party_id).where(
        col(InvitationRow.initiative_id).in_(ids), col(InvitationRow.status) == "accepted"
    )
    for initiative_id, party in (await session.exec(accepted)).all():
        bundles[initiative_id].participants.append(party)
    return [bundles[i.id] for i in initiatives]


def visible_initiatives(actor: domain.Actor) -> Any:
    """The SQL form of who sees an initiative: owner, partner stakeholders, co-design participants."""
    if actor.service:
        return sa.true()
    if actor.party is not None:
        joined = select(InvitationRow.initiative_id).where(
            col(InvitationRow.party_id) == actor.party, col(InvitationRow.status) == "accepted"
        )
        return col(InitiativeRow.id).in_(joined)
    stakeholder = select(StakeholderRow.initiative_id).where(col(StakeholderRow.partner_id) == actor.partner)
    return sa.or_(col(InitiativeRow.owner_id) == actor.partner, col(InitiativeRow.id).in_(stakeholder))


async def list_initiatives(
    session: AsyncSession,
    actor: domain.Actor,
    *,
    owner_id: str,
    stakeholder_partner_id: str,
    product_id: str,
    stage: str,
    kind: str,
    before: tuple[datetime, str] | None,
    limit: int | None,
) -> list[InitiativeRow]:
    query = select(InitiativeRow).where(visible_initiatives(actor))
    if owner_id:
        query = query.where(col(InitiativeRow.owner_id) == owner_id)
    if stakeholder_partner_id:
        held = select(StakeholderRow.initiative_id).where(col(StakeholderRow.partner_id) == stakeholder_partner_id)
        query = query.where(col(InitiativeRow.id).in_(held))
    if product_id:
        query = query.where(col(InitiativeRow.product_id) == product_id)
    if stage:
        query = query.where(col(InitiativeRow.stage) == stage)
    if kind:
        query = query.where(col(InitiativeRow.kind) == kind)
    if before is not None:
        query = query.where(sa.tuple_(col(InitiativeRow.created_at), col(InitiativeRow.id)) < sa.tuple_(*before))
    query = query.order_by(col(InitiativeRow.created_at).desc(), col(InitiativeRow.id).desc())
    if limit is not None:
        query = query.limit(limit)
    return list((await session.exec(query)).all())


async def objectives_on(
    session: AsyncSession, kinds: Collection[domain.MetricKind], subject_id: str
) -> list[ObjectiveRow]:
    """The objectives of initiatives still running that measure one of ``kinds`` of ``subject_id``,
    locked (PostgreSQL) in id order, so concurrent refreshes queue instead of deadlocking."""
    running = select(InitiativeRow.id).where(col(InitiativeRow.stage) != domain.Stage.CLOSED.value)
    query = (
        select(ObjectiveRow)
        .where(
            col(ObjectiveRow.metric_kind).in_([k.value for k in kinds]),
            col(ObjectiveRow.subject_id) == subject_id,
            col(ObjectiveRow.initiative_id).in_(running),
        )
        .order_by(col(ObjectiveRow.id))
        .with_for_update()
    )
    return list((await session.exec(query)).all())


async def measurements(
    session: AsyncSession, objective_id: str, after: tuple[datetime, str] | None, limit: int
) -> list[MeasurementRow]:
    query = select(MeasurementRow).where(col(MeasurementRow.objective_id) == objective_id)
    if after is not None:
        query = query.where(sa.tuple_(col(MeasurementRow.measured_at), col(MeasurementRow.id)) > sa.tuple_(*after))
    query = query.order_by(col(MeasurementRow.measured_at), col(MeasurementRow.id)).limit(limit)
    return list((await session.exec(query)).all())


async def measurements_latest(session: AsyncSession, objective_id: str) -> datetime | None:
    query = select(sa.func.max(col(MeasurementRow.measured_at))).where(col(MeasurementRow.objective_id) == objective_id)
    latest = (await session.exec(query)).one()
    if latest is None:
        return None
    return latest if latest.tzinfo is not None else latest.replace(tzinfo=UTC)


# --- metrics ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recovery:
    cases: int
    recovered: int
    not_recovered: int

    @property
    def rate(self) -> float | None:
        closed = self.recovered + self.not_recovered
        return self.recovered / closed if closed else None


async def recovery_by_product(session: AsyncSession, product_id: str) -> Recovery:
    query = (
        select(CaseRow.outcome, sa.func.count())
        .where(col(CaseRow.product_id) == product_id)
        .group_by(col(CaseRow.outcome))
    )
    return _recovery((await session.exec(query)).all())


async def recovery_by_partner(session: AsyncSession, partner_id: str) -> Recovery:
    query = (
        select(CaseRow.outcome, sa.func.count())
        .join(CasePartnerRow, col(CasePartnerRow.case_id) == col(CaseRow.id))
        .where(col(CasePartnerRow.partner_id) == partner_id)
        .group_by(col(CaseRow.outcome))
    )
    return _recovery((await session.exec(query)).all())


def _recovery(rows: Sequence[tuple[str, int]]) -> Recovery:
    counts: dict[str, int] = defaultdict(int, {outcome: int(n) for outcome, n in rows})
    return Recovery(
        cases=sum(counts.values()),
        recovered=counts[domain.Outcome.RECOVERED.value],
        not_recovered=counts[domain.Outcome.NOT_RECOVERED.value],
    )


@dataclass(frozen=True)
class Engagements:
    engaged: int
    within_target: int
    mean_seconds: float | None
    overdue: int


async def engagements(session: AsyncSession, partner_id: str, now: datetime) -> Engagements:
    engaged = (
        await session.exec(
            select(
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(sa.case((_WITHIN_TARGET.is_(True), 1), else_=0)), 0),
                sa.func.avg(col(CasePartnerRow.engagement_seconds)),
            ).where(col(CasePartnerRow.partner_id) == partner_id, col(CasePartnerRow.engaged_at).is_not(None))
        )
    ).one()
    overdue = (
        await session.exec(
            select(sa.func.count())
            .select_from(CasePartnerRow)
            .join(CaseRow, col(CaseRow.id) == col(CasePartnerRow.case_id))
            .where(
                col(CasePartnerRow.partner_id) == partner_id,
                col(CasePartnerRow.engaged_at).is_(None),
                col(CasePartnerRow.engage_due_at) < now,
                col(CaseRow.state) != domain.CaseState.CLOSED.value,
            )
        )
    ).one()
    count, within, mean = engaged
    return Engagements(int(count), int(within), float(mean) if mean is not None else None, int(overdue))
