"""Handlers of the events community consumes.

- supplychain: ProductRegistered, ProductListed, ProductDelisted keep a read model of each product's
  maker and the retailers selling it (official answers, scopes, escalation); OrderPlaced and
  OrderCancelled say who bought what (verified owners, routing, "owner since" badges).
- reviews: ReviewPublished earns its author points.
- improvement: CoDesignJoined earns points and a "co-designed" badge; CaseResolved with the outcome
  RECOVERED earns the customer points for closing the loop.

Every write is idempotent by a natural key (product, listing, order line, ledger cause and subject),
so a redelivery after the inbox window, or events arriving out of order, leave the same state.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message
from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet.improvement.v1 import events_pb2 as improvement
from collabnet.reviews.v1 import events_pb2 as reviews
from collabnet.supplychain.v1 import events_pb2 as supplychain
from collabnet_community import domain, store
from collabnet_community.reputation import award
from collabnet_kit.bus import Envelope
from collabnet_kit.db import insert


def when(message: Message, field_name: str, envelope: Envelope) -> datetime:
    """A Timestamp field of an event, or the event's time when it is unset."""
    if message.HasField(field_name):
        return getattr(message, field_name).ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]
    return envelope.time


class Handlers:
    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.now = clock

    def for_supplychain(self) -> dict[type[Message], Any]:
        return {
            supplychain.ProductRegistered: self.on_product_registered,
            supplychain.ProductListed: self.on_product_listed,
            supplychain.ProductDelisted: self.on_product_delisted,
            supplychain.OrderPlaced: self.on_order_placed,
            supplychain.OrderCancelled: self.on_order_cancelled,
        }

    def for_reviews(self) -> dict[type[Message], Any]:
        return {reviews.ReviewPublished: self.on_review_published}

    def for_improvement(self) -> dict[type[Message], Any]:
        return {
            improvement.CoDesignJoined: self.on_co_design_joined,
            improvement.CaseResolved: self.on_case_resolved,
        }

    # --- supplychain ---------------------------------------------------------------------------

    async def on_product_registered(
        self, session: AsyncSession, event: supplychain.ProductRegistered, envelope: Envelope
    ) -> None:
        await store.upsert_product(
            session,
            {
                "id": event.product_id,
                "maker_id": event.maker_id,
                "name": event.name[: domain.MAX_NAME],
                "category": event.category[: domain.MAX_NAME],
                "brand": event.attributes.get("brand", "")[: domain.MAX_NAME],
                "revision": max(1, event.revision),
                "updated_at": self.now(),
            },
        )

    async def on_product_listed(
        self, session: AsyncSession, event: supplychain.ProductListed, envelope: Envelope
    ) -> None:
        values = {
            "id": event.listing_id,
            "product_id": event.product_id,
            "retailer_id": event.retailer_id,
            "updated_at": self.now(),
        }
        await store.upsert_listing(session, values, delisted=False)

    async def on_product_delisted(
        self, session: AsyncSession, event: supplychain.ProductDelisted, envelope: Envelope
    ) -> None:
        values = {
            "id": event.listing_id,
            "product_id": event.product_id,
            "retailer_id": event.retailer_id,
            "updated_at": self.now(),
        }
        await store.upsert_listing(session, values, delisted=True)

    async def on_order_placed(self, session: AsyncSession, event: supplychain.OrderPlaced, envelope: Envelope) -> None:
        placed = when(event, "place_time", envelope)
        lines = {
            line.product_id: {
                "order_id": event.order_id,
                "product_id": line.product_id,
                "party_id": event.customer_id,
                "retailer_id": event.retailer_id,
                "revision": line.revision,
                "placed_at": placed,
            }
            for line in event.lines
            if line.product_id
        }
        await store.add_purchases(session, list(lines.values()))

    async def on_order_cancelled(
        self, session: AsyncSession, event: supplychain.OrderCancelled, envelope: Envelope
    ) -> None:
        await store.cancel_order(session, event.order_id, self.now())

    # --- reviews and improvement ---------------------------------------------------------------

    async def on_review_published(
        self, session: AsyncSession, event: reviews.ReviewPublished, envelope: Envelope
    ) -> None:
        if event.author_id:
            await award(
                session, event.author_id, domain.Reason.REVIEW_PUBLISHED, envelope.id, event.review_id, self.now()
            )

    async def on_co_design_joined(
        self, session: AsyncSession, event: improvement.CoDesignJoined, envelope: Envelope
    ) -> None:
        if not event.party_id:
            return
        at = self.now()
        invitation = event.invitation_id or envelope.id
        row = {
            "invitation_id": invitation,
            "party_id": event.party_id,
            "product_id": event.product_id[: domain.MAX_ID],
            "label": (event.label or "a product")[: domain.MAX_NAME],
            "case_id": event.case_id[: domain.MAX_ID],
            "initiative_id": event.initiative_id[: domain.MAX_ID],
            "joined_at": at,
        }
        await store.execute(session, insert(session, store.CoDesignRow).values(**row).on_conflict_do_nothing())
        await award(session, event.party_id, domain.Reason.CO_DESIGN_JOINED, envelope.id, invitation, at)

    async def on_case_resolved(
        self, session: AsyncSession, event: improvement.CaseResolved, envelope: Envelope
    ) -> None:
        if event.outcome == improvement.CASE_OUTCOME_RECOVERED and event.customer_id:
            await award(
                session, event.customer_id, domain.Reason.CASE_RECOVERED, envelope.id, event.case_id, self.now()
            )
