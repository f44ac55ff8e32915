"""Webhooks: partners subscribe to event types; each event a partner may see becomes a signed POST
to its endpoint, retried with back-off, logged, and replayable.

Who may see what, and what of a person's data, is analytics' to decide: for each event and each
partner it may reach, analytics publishes an ``EventShared`` holding the event as that partner may
see it (a person's party id replaced by the partner's pseudonym of it, and what they wrote left out,
unless they consented to ``analytics`` with the partner). The gateway consumes those (durable
consumer ``gateway`` on analytics' stream) and writes a delivery per subscription of that partner
to the event's type, in the same transaction as the inbox row, so an event reaches a subscription
once. A worker, safe to run on every replica, posts due deliveries as CloudEvents in structured
JSON, signed with the subscription's secret (``X-Collabnet-Signature``).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
import structlog
from google.protobuf.message import Message
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet.analytics.v1 import events_pb2 as analytics
from collabnet.community.v1 import events_pb2 as community
from collabnet.improvement.v1 import events_pb2 as improvement
from collabnet.reviews.v1 import events_pb2 as reviews
from collabnet.supplychain.v1 import events_pb2 as supplychain
from collabnet_gateway import domain, schemas, store
from collabnet_gateway.store import WebhookDelivery
from collabnet_kit.bus import Envelope
from collabnet_kit.db import Database, insert

log = structlog.get_logger(__name__)

EVENTS: dict[str, list[type[Message]]] = {
    "supplychain": [
        supplychain.ProductRegistered,
        supplychain.ProductRevised,
        supplychain.ProductListed,
        supplychain.ProductDelisted,
        supplychain.SupplyNetworkChanged,
        supplychain.OrderPlaced,
        supplychain.OrderDelivered,
        supplychain.OrderCancelled,
        supplychain.ShipmentDelayed,
        supplychain.RecallIssued,
    ],
    "reviews": [
        reviews.ReviewPublished,
        reviews.ReviewRevised,
        reviews.ReviewWithdrawn,
        reviews.ReviewResponded,
        reviews.ReviewModerated,
        reviews.ReviewDisclosureChanged,
        reviews.RatingSummaryChanged,
    ],
    "community": [
        community.QuestionAsked,
        community.AnswerPosted,
        community.AnswerAccepted,
        community.QuestionEscalated,
        community.IdeaSubmitted,
        community.IdeaStatusChanged,
        community.IdeaPromoted,
        community.MemberJoined,
        community.MemberLeft,
        community.MemberRoleChanged,
    ],
    "improvement": [
        improvement.CaseOpened,
        improvement.CaseEngaged,
        improvement.CaseResolved,
        improvement.CaseReopened,
        improvement.CaseClosed,
        improvement.CorrectiveActionRequested,
        improvement.CoDesignJoined,
        improvement.InitiativeLaunched,
        improvement.InitiativeStageChanged,
        improvement.ObjectiveMet,
        improvement.RedesignRequested,
    ],
}
EVENT_TYPES = {cls.DESCRIPTOR.full_name for classes in EVENTS.values() for cls in classes}
"""What a partner may subscribe to: the domain events analytics shares with partners. Importing
their modules also lets ``schemas.unpack`` open them."""


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def cloudevent(shared: analytics.EventShared) -> str:
    """The delivery's body: the shared event as a CloudEvent in structured JSON."""
    return json.dumps(
        {
            "specversion": "1.0",
            "id": shared.event_id,
            "type": shared.event_type,
            "source": shared.event_source,
            "time": schemas.timestamp_json(shared.event_time),
            "datacontenttype": "application/json",
            "data": schemas.to_json(schemas.unpack(shared.event)),
        },
        separators=(",", ":"),
    )


async def on_event_shared(session: AsyncSession, shared: analytics.EventShared, envelope: Envelope) -> None:
    """The consumer's handler: a delivery of the event for each of the partner's subscriptions to its type."""
    subscriptions = await store.subscriptions_for(session, shared.event_type, shared.partner_id)
    if not subscriptions:
        return
    payload = cloudevent(shared)
    now = datetime.now(UTC)
    statement = insert(session, WebhookDelivery)
    connection = await session.connection()
    for subscription in subscriptions:
        await connection.execute(
            statement.values(
                id=str(uuid.uuid4()),
                subscription_id=subscription.id,
                partner_id=subscription.partner_id,
                event_id=shared.event_id,
                event_type=shared.event_type,
                payload=payload,
                state="pending",
                attempts=0,
                next_attempt_at=now,
                last_error="",
                created_at=now,
            ).on_conflict_do_nothing(index_elements=["subscription_id", "event_id"])
        )


HANDLERS = {analytics.EventShared: on_event_shared}
"""What the gateway consumes from analytics' stream."""


class Deliverer:
    """Posts due deliveries; each replica may run one."""

    def __init__(
        self,
        db: Database,
        *,
        max_attempts: int,
        timeout: float,
        poll_seconds: float = 0.5,
        backoff_seconds: float = 1.0,
        lease_seconds: float = 60.0,
        batch: int = 50,
    ) -> None:
        self.db = db
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.poll_seconds = poll_seconds
        self.backoff = backoff_seconds
        self.lease = timedelta(seconds=lease_seconds)
        self.batch = batch

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
            while True:
                try:
                    claimed = await self.claim()
                    if claimed:
                        await asyncio.gather(*(self.deliver(client, d) for d in claimed))
                        continue
                except Exception:
                    log.exception("webhook_delivery_round_failed")
                await asyncio.sleep(self.poll_seconds)

    async def claim(self) -> list[WebhookDelivery]:
        """Due deliveries, leased to this replica (their next attempt moved past the lease)."""
        now = datetime.now(UTC)
        async with self.db.transaction() as session:
            due = (
                select(WebhookDelivery)
                .where(col(WebhookDelivery.state) == "pending", col(WebhookDelivery.next_attempt_at) <= now)
                .order_by(col(WebhookDelivery.next_attempt_at))
                .limit(self.batch)
                .with_for_update(skip_locked=True)
            )
            rows = list((await session.exec(due)).all())
            for row in rows:
                row.next_attempt_at = now + self.lease
                session.add(row)
        return rows

    async def deliver(self, client: httpx.AsyncClient, delivery: WebhookDelivery) -> None:
        async with self.db.read() as session:
            subscription = await session.get(store.WebhookSubscription, delivery.subscription_id)
        if subscription is None or not subscription.active:
            await self._finish(delivery.id, state="failed", status=None, error="the subscription was deleted")
            return
        body = delivery.payload.encode()
        stamp = int(time.time())
        headers = {
            "Content-Type": "application/cloudevents+json",
            domain.SIGNATURE_HEADER: domain.sign(subscription.secret, stamp, body),
            "X-Collabnet-Delivery": delivery.id,
            "X-Collabnet-Event-Id": delivery.event_id,
        }
        try:
            response = await client.post(subscription.url, content=body, headers=headers)
            status: int | None = response.status_code
            error = "" if response.is_success else f"the endpoint answered {response.status_code}"
        except httpx.HTTPError as exc:
            status, error = None, f"{type(exc).__name__}: {exc}"[:1000]
        if not error:
            await self._finish(delivery.id, state="delivered", status=status, error="")
            return
        attempts = delivery.attempts + 1
        if attempts >= self.max_attempts:
            await self._finish(delivery.id, state="failed", status=status, error=error, attempts=attempts)
        else:
            retry_at = datetime.now(UTC) + timedelta(seconds=domain.backoff_seconds(attempts, self.backoff))
            await self._finish(delivery.id, state="pending", status=status, error=error, attempts=attempts, at=retry_at)
        log.warning("webhook_delivery_failed", delivery_id=delivery.id, attempts=attempts, status=status, error=error)

    async def _finish(
        self,
        delivery_id: str,
        *,
        state: str,
        status: int | None,
        error: str,
        attempts: int | None = None,
        at: datetime | None = None,
    ) -> None:
        values: dict[str, Any] = {"state": state, "last_status_code": status, "last_error": error}
        if attempts is not None:
            values["attempts"] = attempts
        if at is not None:
            values["next_attempt_at"] = at
        if state == "delivered":
            values["delivered_at"] = datetime.now(UTC)
            values["attempts"] = WebhookDelivery.attempts + 1
        async with self.db.transaction() as session:
            await session.exec(
                sa.update(WebhookDelivery).where(col(WebhookDelivery.id) == delivery_id).values(**values)
            )
