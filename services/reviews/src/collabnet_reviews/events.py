"""What reviews publishes when a review changes, and the handlers of supplychain's events.

``settle`` is the one place a review's change reaches the summaries and the bus: it moves the
summary rows by the difference between what the review counted for before and after, and records
ReviewPublished, ReviewDisclosureChanged and RatingSummaryChanged as the change calls for, all in
the caller's transaction.

The handlers keep the read models (products, listings, orders) and verify reviews. They are
correct in any order of arrival and on redelivery: products only move to a later revision,
listings take an event only if it is newer than the last change, order flags only turn on, and
purchases are keyed by (order, product).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet.reviews.v1 import events_pb2
from collabnet.supplychain.v1 import events_pb2 as supplychain
from collabnet_kit.bus import Envelope
from collabnet_kit.outbox import record
from collabnet_kit.timestamps import timestamp
from collabnet_reviews import domain, store
from collabnet_reviews.domain import Counted, Status
from collabnet_reviews.store import ReviewRow

SOURCE = "reviews"


@dataclass(frozen=True)
class Prior:
    """The smoothed mean's prior: ``weight`` imagined ratings of ``mean``."""

    mean: float = 3.0
    weight: float = 5.0


def disclosure_event(row: ReviewRow, syndicated_from: str = "") -> events_pb2.Disclosure:
    return events_pb2.Disclosure(
        verified_purchase=row.verified,
        revision_bought=row.revision_bought,
        syndicated_from=syndicated_from,
        incentivized=row.incentivized,
        incentive=row.incentive,
        affiliated=row.affiliated,
    )


@dataclass(frozen=True)
class Before:
    """What a review was before a change: enough to tell what the change moved."""

    counted: Counted | None
    published: bool
    disclosure: domain.Disclosure

    @classmethod
    def of(cls, row: ReviewRow | None) -> Before:
        if row is None:
            return cls(None, False, domain.Disclosure())
        return cls(row.counted, row.state is Status.PUBLISHED, row.disclosure)


async def settle(session: AsyncSession, row: ReviewRow, before: Before, prior: Prior, at: datetime) -> None:
    """Bring the summaries and the bus in line with ``row``'s change since ``before``.

    The summary rows are moved last: on PostgreSQL their locks are held from then until the
    commit, and every writer of the product waits for them.
    """
    session.add(row)
    published = row.state is Status.PUBLISHED
    if published and not before.published:
        await record(
            session,
            events_pb2.ReviewPublished(
                review_id=row.id,
                product_id=row.product_id,
                revision=row.revision,
                author_id=row.author_id,
                channel_partner_id=row.channel_partner_id,
                rating=row.rating,
                disclosure=disclosure_event(row),
                publish_time=timestamp(row.published_at),
            ),
            source=SOURCE,
        )
    elif published and row.disclosure != before.disclosure:
        await record(
            session,
            events_pb2.ReviewDisclosureChanged(
                review_id=row.id,
                product_id=row.product_id,
                revision=row.revision,
                author_id=row.author_id,
                rating=row.rating,
                disclosure=disclosure_event(row),
            ),
            source=SOURCE,
        )
    deltas = domain.summary_deltas(before.counted, row.counted)
    if not deltas:
        return
    await session.flush()
    for summary in await store.move_summaries(session, row.product_id, deltas, at):
        stats = summary.stats
        await record(
            session,
            events_pb2.RatingSummaryChanged(
                product_id=summary.product_id,
                count=stats.count,
                mean=stats.mean,
                smoothed_mean=stats.smoothed(prior.mean, prior.weight),
                distribution=list(stats.distribution),
                revision=summary.revision,
            ),
            source=SOURCE,
        )


async def verify(session: AsyncSession, customer_id: str, product_id: str, prior: Prior, at: datetime) -> None:
    """Bring the verified-purchase disclosure of the customer's review of the product in line with
    its purchases: verified by the latest valid one (and about the revision it bought), or no longer."""
    for row in await store.reviews_of(session, customer_id, product_id, for_update=True):
        valid = [p for p in await store.purchases(session, customer_id, product_id) if p.counts]
        before = Before.of(row)
        latest = domain.latest_purchase(valid)
        if latest is None:
            if not row.verified:
                continue
            row.verified = False
            row.revision_bought = 0
        elif row.verified and row.revision_bought in {p.revision for p in valid}:
            continue  # verified already; it stays about the revision bought until its author revises it
        else:
            row.verified = True
            row.revision_bought = latest.revision
            row.revision = latest.revision or row.revision
            # The retailer it came from is a seller too: affiliation is checked again, with it.
            row.affiliation_checked = False
        await settle(session, row, before, prior, at)


class Handlers:
    """supplychain's events, as reviews uses them."""

    def __init__(self, prior: Prior) -> None:
        self.prior = prior

    async def on_product_registered(
        self, session: AsyncSession, event: supplychain.ProductRegistered, envelope: Envelope
    ) -> None:
        await store.upsert_product(
            session, event.product_id, event.maker_id, event.revision or 1, envelope.time, registered=True
        )

    async def on_product_revised(
        self, session: AsyncSession, event: supplychain.ProductRevised, envelope: Envelope
    ) -> None:
        await store.upsert_product(
            session, event.product_id, event.maker_id, event.revision, envelope.time, registered=bool(event.maker_id)
        )

    async def on_product_listed(
        self, session: AsyncSession, event: supplychain.ProductListed, envelope: Envelope
    ) -> None:
        await store.set_listing(session, event.listing_id, event.product_id, event.retailer_id, True, envelope.time)

    async def on_product_delisted(
        self, session: AsyncSession, event: supplychain.ProductDelisted, envelope: Envelope
    ) -> None:
        await store.set_listing(session, event.listing_id, event.product_id, event.retailer_id, False, envelope.time)

    async def _order(
        self,
        session: AsyncSession,
        order_id: str,
        customer_id: str,
        retailer_id: str,
        lines: list[supplychain.OrderLine],
        bought_at: datetime,
        *,
        delivered: bool,
    ) -> None:
        await store.record_order(session, order_id, customer_id, retailer_id, bought_at, delivered=delivered)
        for line in lines:
            await store.record_purchase(
                session, order_id, line.product_id, customer_id, retailer_id, line.revision, bought_at
            )
        for product_id in sorted({line.product_id for line in lines}):
            await verify(session, customer_id, product_id, self.prior, datetime.now(UTC))

    async def on_order_placed(self, session: AsyncSession, event: supplychain.OrderPlaced, envelope: Envelope) -> None:
        placed = event.place_time.ToDatetime(tzinfo=UTC) if event.HasField("place_time") else envelope.time
        await self._order(
            session, event.order_id, event.customer_id, event.retailer_id, list(event.lines), placed, delivered=False
        )

    async def on_order_delivered(
        self, session: AsyncSession, event: supplychain.OrderDelivered, envelope: Envelope
    ) -> None:
        # Both events carry the order's lines. When Delivered arrives before Placed it records the
        # purchase; lines are keyed by (order, product), so the late Placed adds nothing.
        delivered = event.deliver_time.ToDatetime(tzinfo=UTC) if event.HasField("deliver_time") else envelope.time
        await self._order(
            session, event.order_id, event.customer_id, event.retailer_id, list(event.lines), delivered, delivered=True
        )

    async def on_order_cancelled(
        self, session: AsyncSession, event: supplychain.OrderCancelled, envelope: Envelope
    ) -> None:
        order = await store.record_order(
            session, event.order_id, event.customer_id, event.retailer_id, envelope.time, cancelled=True
        )
        if order.delivered:
            return  # delivered goods were bought; a cancellation arriving after that changes nothing
        for product_id in await store.order_products(session, event.order_id):
            await verify(session, order.customer_id, product_id, self.prior, datetime.now(UTC))
