"""What improvement publishes, and the handlers for what it consumes.

Handlers run inside the kit's transaction together with the inbox row, so a redelivery within the
inbox's memory is skipped; beyond it they are still idempotent by natural keys: a review's events
carry its version, a case is unique per review, an initiative per promoted idea, and read models
take an event only when it is newer than what they hold (by the event's time where the event has
no version of its own).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from opentelemetry import trace
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet.community.v1 import events_pb2 as community
from collabnet.improvement.v1 import events_pb2 as ours
from collabnet.reviews.v1 import events_pb2 as reviews
from collabnet.supplychain.v1 import events_pb2 as supplychain
from collabnet_improvement import domain, store
from collabnet_improvement.domain import CaseState, MetricKind, Outcome
from collabnet_kit.bus import Envelope
from collabnet_kit.db import Database
from collabnet_kit.outbox import record
from collabnet_kit.timestamps import timestamp

SOURCE = "improvement"
SYSTEM = "system"
CASE_ID = "collabnet.case.id"
log = structlog.get_logger(__name__)

_OUTCOME_TO_PROTO = {
    Outcome.PENDING: ours.CASE_OUTCOME_UNSPECIFIED,
    Outcome.RESOLVED: ours.CASE_OUTCOME_RESOLVED,
    Outcome.RECOVERED: ours.CASE_OUTCOME_RECOVERED,
    Outcome.NOT_RECOVERED: ours.CASE_OUTCOME_NOT_RECOVERED,
}


def new_id() -> str:
    return str(uuid.uuid4())


def now() -> datetime:
    return datetime.now(UTC)


def outcome_proto(outcome: str) -> ours.CaseOutcome.ValueType:
    return _OUTCOME_TO_PROTO[Outcome(outcome)]


def _event_time(event: Any, field_name: str, envelope: Envelope) -> datetime:
    if event.HasField(field_name):
        return getattr(event, field_name).ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]
    return envelope.time


# --- metrics and objectives ------------------------------------------------------------------------


def spec_of(row: store.ObjectiveRow) -> domain.MetricSpec:
    return domain.MetricSpec(
        kind=MetricKind(row.metric_kind),
        subject=row.subject,
        subject_id=row.subject_id,
        revision=row.revision,
        name=row.metric_name,
        unit=row.unit,
    )


async def metric_value(session: AsyncSession, spec: domain.MetricSpec, at: datetime) -> float | None:
    """The current value of a computed metric; None while there is nothing to compute it from."""
    if spec.kind in (MetricKind.PRODUCT_AVERAGE_RATING, MetricKind.NEGATIVE_REVIEW_RATE):
        stat = (await store.rating_stats(session, spec.subject_id)).get(spec.revision)
        if stat is None or stat.reviews <= 0:
            return None
        if spec.kind is MetricKind.PRODUCT_AVERAGE_RATING:
            return stat.rating_sum / stat.reviews
        return stat.negative / stat.reviews
    if spec.kind is MetricKind.CASE_RECOVERY_RATE:
        if spec.subject == "product":
            return (await store.recovery_by_product(session, spec.subject_id)).rate
        return (await store.recovery_by_partner(session, spec.subject_id)).rate
    if spec.kind is MetricKind.TIME_TO_FIRST_ENGAGEMENT:
        mean = (await store.engagements(session, spec.subject_id, at)).mean_seconds
        return mean / 3600 if mean is not None else None
    return None


async def apply_value(
    session: AsyncSession,
    objective: store.ObjectiveRow,
    value: float,
    at: datetime,
    *,
    source: str,
    note: str = "",
    by: str = SYSTEM,
    current: bool = True,
) -> None:
    """Record a value of the objective's metric; ``current`` when it is the latest one. The first
    time the current value reaches the target, ObjectiveMet."""
    if source == "computed" and objective.current == value:
        return
    session.add(
        store.MeasurementRow(
            id=new_id(),
            objective_id=objective.id,
            value=value,
            measured_at=at,
            source=source,
            note=note,
            recorded_by=by,
        )
    )
    if current:
        objective.current = value
    objective.updated_at = now()
    session.add(objective)
    await check_met(session, objective, at)


async def check_met(session: AsyncSession, objective: store.ObjectiveRow, at: datetime) -> None:
    direction = domain.Direction(objective.direction)
    if objective.met_at is None and domain.reached(direction, objective.current, objective.target):
        objective.met_at = at
        session.add(objective)
        assert objective.current is not None
        await record(
            session,
            ours.ObjectiveMet(
                initiative_id=objective.initiative_id,
                objective_id=objective.id,
                metric=spec_of(objective).label,
                target=objective.target,
                value=objective.current,
            ),
            source=SOURCE,
        )


async def refresh(session: AsyncSession, kinds: tuple[MetricKind, ...], subject_id: str) -> None:
    """Bring the objectives measuring ``kinds`` of ``subject_id`` up to date with the events so far."""
    if not subject_id:
        return
    at = now()
    values: dict[tuple[str, str, int], float | None] = {}
    for objective in await store.objectives_on(session, kinds, subject_id):
        spec = spec_of(objective)
        key = (spec.kind.value, spec.subject, spec.revision)
        if key not in values:
            values[key] = await metric_value(session, spec, at)
        value = values[key]
        if value is not None:
            await apply_value(session, objective, value, at, source="computed")


async def refresh_product(session: AsyncSession, product_id: str) -> None:
    await refresh(session, (MetricKind.PRODUCT_AVERAGE_RATING, MetricKind.NEGATIVE_REVIEW_RATE), product_id)


async def refresh_recovery(session: AsyncSession, case: store.CaseRow) -> None:
    await refresh(session, (MetricKind.CASE_RECOVERY_RATE,), case.product_id)
    for partner in await store.case_partners(session, case.id):
        await refresh(session, (MetricKind.CASE_RECOVERY_RATE,), partner.partner_id)


# --- cases -------------------------------------------------------------------------------------------------


async def add_entry(
    session: AsyncSession,
    case_id: str,
    kind: domain.EntryKind,
    body: str,
    *,
    internal: bool = False,
    partner: str = "",
    party: str = "",
    at: datetime | None = None,
) -> store.EntryRow:
    entry = store.EntryRow(
        id=new_id(),
        case_id=case_id,
        kind=kind.value,
        author_partner=partner or "",
        author_party=party or "",
        body=body[:5000],
        internal=internal,
        created_at=at or now(),
    )
    session.add(entry)
    return entry


async def transition(
    session: AsyncSession, case: store.CaseRow, target: CaseState, actor: str, note: str, at: datetime
) -> None:
    current = CaseState(case.state)
    domain.require_transition(case.id, current, target)
    session.add(
        store.TransitionRow(
            id=new_id(),
            case_id=case.id,
            from_state=current.value,
            to_state=target.value,
            at=at,
            actor=actor,
            note=note,
            seconds_in_previous=max(0.0, (at - case.state_changed_at).total_seconds()),
        )
    )
    body = f"{current.value} → {target.value}" + (f": {note}" if note else "")
    await add_entry(session, case.id, domain.EntryKind.STATE_CHANGE, body, at=at)
    case.state = target.value
    case.state_changed_at = at
    case.updated_at = at
    session.add(case)


async def publish_resolved(session: AsyncSession, case: store.CaseRow, at: datetime) -> None:
    await record(
        session,
        ours.CaseResolved(
            case_id=case.id,
            review_id=case.review_id,
            product_id=case.product_id,
            customer_id=case.customer_id,
            outcome=outcome_proto(case.outcome),
            resolve_time=timestamp(at),
            maker_id=case.maker_id,
            retailer_id=case.retailer_id,
        ),
        source=SOURCE,
    )


async def change_outcome(
    session: AsyncSession, case: store.CaseRow, outcome: Outcome, at: datetime, *, refresh: bool = True
) -> None:
    """Set the case's outcome; closing the loop (recovered or not) is published and, unless the
    caller does it for many cases at once, moves the recovery-rate objectives."""
    if case.outcome == outcome.value:
        return
    case.outcome = outcome.value
    case.outcome_at = at
    case.updated_at = at
    if outcome is not Outcome.RESOLVED:
        case.recovery_deadline = None
    elif case.resolved_at is not None:
        case.recovery_deadline = case.resolved_at + timedelta(seconds=case.recovery_window_seconds)
    session.add(case)
    if outcome in (Outcome.RECOVERED, Outcome.NOT_RECOVERED):
        await publish_resolved(session, case, at)
    if refresh:
        await refresh_recovery(session, case)


async def assign(
    session: AsyncSession,
    case: store.CaseRow,
    partner_id: str,
    role: domain.CaseRole,
    policy: domain.Policy,
    at: datetime,
) -> None:
    """Assign a partner; its time to first engagement counts from now, against its target of now."""
    session.add(
        store.CasePartnerRow(
            case_id=case.id,
            partner_id=partner_id,
            role=role.value,
            opened_at=case.opened_at,
            target_seconds=int(policy.engagement_target.total_seconds()),
            assigned_at=at,
            engage_due_at=at + policy.engagement_target,
        )
    )


async def open_case(
    session: AsyncSession, review: store.ReviewRow, *, by_revision: bool, new_review: bool = False
) -> store.CaseRow | None:
    """Open the review's case when the assigned partners' policies say so; None when they do not
    or when the review has its case already (one per review, ever: the unique review id guards it
    even when two deliveries race; a review seen for the first time has no case to look for)."""
    if not new_review and await store.case_by_review(session, review.review_id) is not None:
        return None
    product = await session.get(store.ProductRow, review.product_id)
    maker = product.maker_id if product is not None else ""
    assigned: dict[str, domain.CaseRole] = {}
    if review.channel_partner_id:
        assigned[review.channel_partner_id] = domain.CaseRole.RETAILER
    if maker:
        assigned[maker] = domain.CaseRole.MAKER  # a maker selling directly is assigned once, as the maker
    policies = await store.policies(session, assigned)
    terms = domain.case_terms(review.rating, list(policies.values()))
    if not terms.opens:
        return None
    at = now()
    case = store.CaseRow(
        id=new_id(),
        review_id=review.review_id,
        product_id=review.product_id,
        revision=review.revision,
        customer_id=review.author_id,
        maker_id=maker,
        retailer_id=review.channel_partner_id,
        state=CaseState.OPEN.value,
        outcome=Outcome.PENDING.value,
        opening_rating=review.rating,
        current_rating=review.rating,
        opened_by_revision=by_revision,
        recovery_threshold=terms.recovery_threshold,
        recovery_window_seconds=int(terms.recovery_window.total_seconds()),
        opened_at=at,
        state_changed_at=at,
        updated_at=at,
    )
    session.add(case)
    await session.flush()  # the case row first: its children reference it
    # The event's span (a consumer span, in the trace of the request that wrote the review) shows
    # which case it opened.
    span = trace.get_current_span()
    span.set_attribute(CASE_ID, case.id)
    span.add_event("case opened", {CASE_ID: case.id, "collabnet.case.partners": sorted(assigned)})
    for partner, role in assigned.items():
        await assign(session, case, partner, role, policies[partner], at)
    session.add(
        store.TransitionRow(
            id=new_id(),
            case_id=case.id,
            from_state="",
            to_state=CaseState.OPEN.value,
            at=at,
            actor=SYSTEM,
            note="revised review" if by_revision else "published review",
            seconds_in_previous=0.0,
        )
    )
    how = "revised to" if by_revision else "published with"
    await add_entry(
        session,
        case.id,
        domain.EntryKind.REVIEW_CHANGE,
        f"Case opened: the review was {how} {review.rating} stars.",
        at=at,
    )
    await record(
        session,
        ours.CaseOpened(
            case_id=case.id,
            review_id=case.review_id,
            product_id=case.product_id,
            customer_id=case.customer_id,
            maker_id=case.maker_id,
            retailer_id=case.retailer_id,
            rating=case.opening_rating,
            open_time=timestamp(at),
        ),
        source=SOURCE,
    )
    log.info("case_opened", case_id=case.id, review_id=case.review_id, rating=case.opening_rating)
    return case


async def engage(session: AsyncSession, case: store.CaseRow, assignment: store.CasePartnerRow, at: datetime) -> None:
    """The partner's first engagement: timed against its target, and the case is engaged."""
    result = domain.engagement(assignment.assigned_at, at, timedelta(seconds=assignment.target_seconds))
    assignment.engaged_at = at
    assignment.engagement_seconds = result.seconds
    assignment.within_target = result.within_target
    session.add(assignment)
    if case.state == CaseState.OPEN.value:
        await transition(session, case, CaseState.ENGAGED, f"partner:{assignment.partner_id}", "first engagement", at)
    await record(
        session,
        ours.CaseEngaged(
            case_id=case.id,
            partner_id=assignment.partner_id,
            engage_time=timestamp(at),
            within_target=result.within_target,
        ),
        source=SOURCE,
    )
    await refresh(session, (MetricKind.TIME_TO_FIRST_ENGAGEMENT,), assignment.partner_id)


RECOVERY_BATCH = 25


async def mark_not_recovered(db: Database, at: datetime | None = None, batch: int = RECOVERY_BATCH) -> int:
    """Cases resolved whose recovery window has run out without the review reaching the recovery
    threshold: not recovered. Returns how many."""
    changed = 0
    while True:
        done = await mark_not_recovered_batch(db, at, batch)
        changed += done
        if done < batch:
            return changed


async def mark_not_recovered_batch(db: Database, at: datetime | None = None, batch: int = RECOVERY_BATCH) -> int:
    """One batch of :func:`mark_not_recovered`, in one short transaction that refreshes the
    recovery-rate objectives of the batch's products and partners once. Safe on every replica:
    rows are locked (and skipped when another replica's job holds them, on PostgreSQL), and a case
    changes only while it is still ``resolved``."""
    at = at or now()
    async with db.transaction() as session:
        due = await store.due_for_not_recovered(session, at, batch)
        for case in due:
            await add_entry(
                session, case.id, domain.EntryKind.REVIEW_CHANGE, "The recovery window ended without a revision.", at=at
            )
            await change_outcome(session, case, Outcome.NOT_RECOVERED, at, refresh=False)
        for product in sorted({c.product_id for c in due}):
            await refresh(session, (MetricKind.CASE_RECOVERY_RATE,), product)
        for partner in sorted(await store.partners_of(session, [c.id for c in due])):
            await refresh(session, (MetricKind.CASE_RECOVERY_RATE,), partner)
    return len(due)


# --- consumed: reviews ---------------------------------------------------------------------------------------


def _rating(value: int, what: str) -> int:
    if not 1 <= value <= 5:
        raise ValueError(f"{what} {value} is outside 1 to 5")
    return value


async def on_review_published(session: AsyncSession, event: reviews.ReviewPublished, envelope: Envelope) -> None:
    rating = _rating(event.rating, "rating")
    review = await session.get(store.ReviewRow, event.review_id)
    published = _event_time(event, "publish_time", envelope)
    if review is not None:
        # Delivered before, or the review's later events came first: the newer state stands.
        if review.published_at is None:
            review.published_at = published
            session.add(review)
        return
    review = store.ReviewRow(
        review_id=event.review_id,
        product_id=event.product_id,
        revision=event.revision,
        author_id=event.author_id,
        channel_partner_id=event.channel_partner_id,
        rating=rating,
        version=1,
        published_at=published,
        updated_at=now(),
    )
    session.add(review)
    await store.add_rating(session, review.product_id, review.revision, rating, +1)
    await open_case(session, review, by_revision=False, new_review=True)
    await refresh_product(session, review.product_id)


async def on_review_revised(session: AsyncSession, event: reviews.ReviewRevised, envelope: Envelope) -> None:
    rating = _rating(event.new_rating, "new_rating")
    review = await session.get(store.ReviewRow, event.review_id)
    if review is None:
        # The revision came before the publication: start from it.
        review = store.ReviewRow(
            review_id=event.review_id,
            product_id=event.product_id,
            revision=event.revision,
            author_id=event.author_id,
            channel_partner_id=event.channel_partner_id,
            rating=rating,
            version=event.version,
            updated_at=now(),
        )
        session.add(review)
        await store.add_rating(session, review.product_id, review.revision, rating, +1)
        await open_case(session, review, by_revision=True, new_review=True)
        await refresh_product(session, review.product_id)
        return
    if review.withdrawn or review.version >= event.version:
        return  # an older version, or this one again
    old_rating = review.rating
    await store.add_rating(session, review.product_id, review.revision, old_rating, -1)
    review.revision = event.revision or review.revision
    review.rating = rating
    review.version = event.version
    review.updated_at = now()
    session.add(review)
    await store.add_rating(session, review.product_id, review.revision, rating, +1)
    case = await store.case_by_review(session, review.review_id, lock=True)
    if case is None:
        await open_case(session, review, by_revision=True)
    else:
        at = _event_time(event, "revise_time", envelope)
        case.current_rating = rating
        case.updated_at = now()
        session.add(case)
        await add_entry(
            session,
            case.id,
            domain.EntryKind.REVIEW_CHANGE,
            f"The customer revised the review from {old_rating} to {rating} stars.",
            party=case.customer_id,
        )
        resolved = case.state in (CaseState.RESOLVED.value, CaseState.CLOSED.value)
        outcome = domain.outcome_after_revision(Outcome(case.outcome), rating, case.recovery_threshold, resolved)
        await change_outcome(session, case, outcome, max(at, case.opened_at))
    await refresh_product(session, review.product_id)


async def on_review_withdrawn(session: AsyncSession, event: reviews.ReviewWithdrawn, envelope: Envelope) -> None:
    review = await session.get(store.ReviewRow, event.review_id)
    if review is None:
        # Withdrawn before anything else arrived: a tombstone, so late events change nothing.
        session.add(
            store.ReviewRow(
                review_id=event.review_id,
                product_id=event.product_id,
                revision=0,
                author_id=event.author_id,
                channel_partner_id=event.channel_partner_id,
                rating=event.rating if 1 <= event.rating <= 5 else 0,
                version=0,
                withdrawn=True,
                updated_at=now(),
            )
        )
        return
    if review.withdrawn:
        return
    await store.add_rating(session, review.product_id, review.revision, review.rating, -1)
    review.withdrawn = True
    review.updated_at = now()
    session.add(review)
    case = await store.case_by_review(session, review.review_id, lock=True)
    if case is not None:
        at = envelope.time
        case.review_withdrawn = True
        session.add(case)
        await add_entry(
            session,
            case.id,
            domain.EntryKind.REVIEW_CHANGE,
            "The customer withdrew the review.",
            party=case.customer_id,
        )
        await change_outcome(
            session, case, domain.outcome_after_withdrawal(Outcome(case.outcome)), max(at, case.opened_at)
        )
    await refresh_product(session, review.product_id)


# --- consumed: supplychain ----------------------------------------------------------------------------------


async def _product(session: AsyncSession, product_id: str) -> store.ProductRow:
    product = await session.get(store.ProductRow, product_id)
    if product is None:
        product = store.ProductRow(product_id=product_id, updated_at=now())
        session.add(product)
    return product


async def _set_maker(session: AsyncSession, product: store.ProductRow, maker_id: str) -> None:
    """Learn the product's maker; cases opened before it was known are assigned to it now."""
    if not maker_id or product.maker_id == maker_id:
        return
    product.maker_id = maker_id
    session.add(product)
    waiting = (
        await session.exec(
            select(store.CaseRow).where(
                col(store.CaseRow.product_id) == product.product_id, col(store.CaseRow.maker_id) == ""
            )
        )
    ).all()
    policy = (await store.policies(session, [maker_id]))[maker_id]
    at = now()
    for case in waiting:
        case.maker_id = maker_id
        case.updated_at = at
        session.add(case)
        if maker_id not in {p.partner_id for p in await store.case_partners(session, case.id)}:
            await assign(session, case, maker_id, domain.CaseRole.MAKER, policy, at)


async def on_product_registered(
    session: AsyncSession, event: supplychain.ProductRegistered, envelope: Envelope
) -> None:
    product = await _product(session, event.product_id)
    product.name = event.name[:200]
    product.sku = event.sku[:100]
    product.category = event.category[:200]
    product.revision = max(product.revision, event.revision)
    product.updated_at = now()
    session.add(product)
    await _set_maker(session, product, event.maker_id)


async def on_product_revised(session: AsyncSession, event: supplychain.ProductRevised, envelope: Envelope) -> None:
    product = await _product(session, event.product_id)
    product.revision = max(product.revision, event.revision)
    product.updated_at = now()
    session.add(product)
    await _set_maker(session, product, event.maker_id)
    if event.initiative_id:
        waiting = (
            await session.exec(
                select(store.RedesignRow)
                .where(
                    col(store.RedesignRow.initiative_id) == event.initiative_id,
                    col(store.RedesignRow.product_id) == event.product_id,
                    col(store.RedesignRow.fulfilled_revision) == 0,
                )
                .order_by(col(store.RedesignRow.requested_at))
            )
        ).first()
        if waiting is not None:
            waiting.fulfilled_revision = event.revision
            waiting.fulfilled_at = envelope.time
            session.add(waiting)


async def _listing(
    session: AsyncSession, listing_id: str, product_id: str, retailer_id: str, active: bool, at: datetime
) -> None:
    row = await session.get(store.ListingRow, listing_id)
    if row is None:
        session.add(
            store.ListingRow(
                listing_id=listing_id, product_id=product_id, retailer_id=retailer_id, active=active, changed_at=at
            )
        )
        return
    if row.changed_at > at:
        return  # a newer change of the listing came first
    row.active = active
    row.changed_at = at
    session.add(row)


async def on_product_listed(session: AsyncSession, event: supplychain.ProductListed, envelope: Envelope) -> None:
    await _listing(session, event.listing_id, event.product_id, event.retailer_id, True, envelope.time)


async def on_product_delisted(session: AsyncSession, event: supplychain.ProductDelisted, envelope: Envelope) -> None:
    await _listing(session, event.listing_id, event.product_id, event.retailer_id, False, envelope.time)


async def on_supply_network_changed(
    session: AsyncSession, event: supplychain.SupplyNetworkChanged, envelope: Envelope
) -> None:
    product = await _product(session, event.product_id)
    if product.network_changed_at is not None and product.network_changed_at > envelope.time:
        return  # a newer network came first
    await session.exec(sa.delete(store.SupplierRow).where(col(store.SupplierRow.product_id) == event.product_id))
    seen: set[tuple[str, int, str]] = set()
    for supplier in event.suppliers:
        key = (supplier.supplier_id, supplier.tier, supplier.item[:200])
        if not supplier.supplier_id or key in seen:
            continue
        seen.add(key)
        session.add(store.SupplierRow(product_id=event.product_id, supplier_id=key[0], tier=key[1], item=key[2]))
    product.network_changed_at = envelope.time
    product.updated_at = now()
    session.add(product)
    await _set_maker(session, product, event.maker_id)


# --- consumed: community --------------------------------------------------------------------------------------


async def on_idea_promoted(session: AsyncSession, event: community.IdeaPromoted, envelope: Envelope) -> None:
    """A promoted idea becomes a proposed initiative of the partner that promoted it."""
    if await session.get(store.IdeaRow, event.idea_id) is not None:
        return
    at = now()
    session.add(
        store.IdeaRow(
            idea_id=event.idea_id,
            community_id=event.community_id,
            partner_id=event.partner_id,
            title=event.title[:200],
            description=event.description[:5000],
            product_id=event.product_id,
            submitter_id=event.submitter_id,
            promoted_at=at,
        )
    )
    kind = domain.InitiativeKind.PRODUCT_REDESIGN if event.product_id else domain.InitiativeKind.COMMUNITY
    initiative = store.InitiativeRow(
        id=new_id(),
        owner_id=event.partner_id,
        title=(event.title.strip() or f"Idea {event.idea_id}")[:200],
        description=event.description[:5000],
        kind=kind.value,
        product_id=event.product_id,
        stage=domain.Stage.PROPOSED.value,
        source_idea_id=event.idea_id,
        created_at=at,
        stage_changed_at=at,
        updated_at=at,
    )
    session.add(initiative)
    await session.flush()
    session.add(store.InitiativeIdeaRow(initiative_id=initiative.id, idea_id=event.idea_id, linked_at=at))
    session.add(
        store.StageRow(
            id=new_id(),
            initiative_id=initiative.id,
            from_stage="",
            to_stage=domain.Stage.PROPOSED.value,
            decision=f"proposed from the promoted idea {event.idea_id}",
            decided_by="service:community",
            at=at,
            cycle=1,
        )
    )
