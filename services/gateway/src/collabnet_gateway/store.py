"""The gateway's own tables: idempotency records, and webhook subscriptions and deliveries."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import registry
from sqlmodel import JSON, Column, Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet_kit.db import UtcDateTime
from collabnet_kit.migrations import History


class Table(SQLModel, registry=registry()):
    """Base of the gateway's tables, kept apart from every other service's metadata."""


def _time(**kwargs: Any) -> Any:
    return Field(sa_type=UtcDateTime, **kwargs)


class IdempotencyRecord(Table, table=True):
    __tablename__ = "idempotency_record"
    partner_id: str = Field(primary_key=True, max_length=36)
    key: str = Field(primary_key=True, max_length=200)
    fingerprint: str = Field(max_length=64)
    # "pending" while the first request runs, "done" once its response is stored.
    state: str = Field(max_length=10)
    status_code: int = 0
    body: str = ""
    created_at: datetime = _time(index=True)


class WebhookSubscription(Table, table=True):
    __tablename__ = "webhook_subscription"
    id: str = Field(primary_key=True, max_length=36)
    partner_id: str = Field(max_length=36, index=True)
    url: str = Field(max_length=2000)
    event_types: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # The partner needs it to verify signatures, and so do we to make them.
    secret: str = Field(max_length=100)
    active: bool = True
    created_at: datetime = _time()


class WebhookDelivery(Table, table=True):
    __tablename__ = "webhook_delivery"
    __table_args__ = (
        sa.UniqueConstraint("subscription_id", "event_id", name="webhook_delivery_once"),
        sa.Index("webhook_delivery_due", "state", "next_attempt_at"),
    )
    id: str = Field(primary_key=True, max_length=36)
    subscription_id: str = Field(foreign_key="webhook_subscription.id", max_length=36, index=True)
    partner_id: str = Field(max_length=36)
    event_id: str = Field(max_length=64)
    event_type: str = Field(max_length=255)
    payload: str
    # pending, delivered, failed (after the last attempt)
    state: str = Field(max_length=10)
    attempts: int = 0
    next_attempt_at: datetime = _time()
    last_status_code: int | None = None
    last_error: str = Field(default="", max_length=1000)
    created_at: datetime = _time()
    delivered_at: datetime | None = _time(default=None, nullable=True)


HISTORY = History(Path(__file__).parent / "migrations", Table.metadata)


async def subscriptions_for(session: AsyncSession, event_type: str, partner_id: str) -> list[WebhookSubscription]:
    """The partner's active subscriptions that include ``event_type``."""
    query = select(WebhookSubscription).where(
        col(WebhookSubscription.partner_id) == partner_id, col(WebhookSubscription.active)
    )
    return [s for s in (await session.exec(query)).all() if event_type in s.event_types]
