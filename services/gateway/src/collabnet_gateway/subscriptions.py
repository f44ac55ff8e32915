"""The webhook resources under /v1: subscriptions, their delivery log, and replay."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import col, select

from collabnet_gateway import domain, webhooks
from collabnet_gateway.problems import Problem
from collabnet_gateway.routes import PROBLEM_RESPONSES
from collabnet_gateway.store import WebhookDelivery, WebhookSubscription
from collabnet_kit.db import Database
from collabnet_kit.errors import InvalidArgument
from collabnet_kit.paging import decode_cursor, encode_cursor
from collabnet_kit.principal import current_principal


class NewSubscription(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="The endpoint that receives POSTs of CloudEvents in structured JSON.")
    event_types: list[str] = Field(description="Full event type names, as listed by /v1/webhook-event-types.")


class Subscription(BaseModel):
    id: str
    url: str
    event_types: list[str]
    active: bool
    create_time: datetime
    secret: str | None = Field(
        default=None, description="Shown once, when the subscription is created: verify signatures with it."
    )


class Subscriptions(BaseModel):
    webhooks: list[Subscription]


class Delivery(BaseModel):
    id: str
    event_id: str
    event_type: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_time: datetime
    last_status_code: int | None
    last_error: str
    create_time: datetime
    deliver_time: datetime | None


class Deliveries(BaseModel):
    deliveries: list[Delivery]
    next_page_token: str = ""


class EventTypes(BaseModel):
    event_types: list[str]


def _subscription(row: WebhookSubscription, secret: str | None = None) -> Subscription:
    return Subscription(
        id=row.id,
        url=row.url,
        event_types=row.event_types,
        active=row.active,
        create_time=row.created_at,
        secret=secret,
    )


def _delivery(row: WebhookDelivery) -> Delivery:
    return Delivery(
        id=row.id,
        event_id=row.event_id,
        event_type=row.event_type,
        state=row.state,
        attempts=row.attempts,
        next_attempt_time=row.next_attempt_at,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        create_time=row.created_at,
        deliver_time=row.delivered_at,
    )


def _cursor(token: str | None) -> tuple[datetime, str] | None:
    try:
        values = decode_cursor(token or "", 2)
        return (datetime.fromisoformat(values[0]), values[1]) if values else None
    except (InvalidArgument, ValueError):
        raise Problem.of_domain(InvalidArgument.field("page_token", "is not a token this API issued")) from None


def router(db: Any) -> APIRouter:
    """``db`` is a callable giving the gateway's Database once it has started."""
    api = APIRouter(tags=["webhooks"], responses=PROBLEM_RESPONSES)

    def database() -> Database:
        found: Database = db()
        return found

    async def owned(session: Any, subscription_id: str) -> WebhookSubscription:
        # An id with a NUL character names nothing (and PostgreSQL would refuse to look it up).
        row = await session.get(WebhookSubscription, subscription_id) if "\x00" not in subscription_id else None
        if row is None or row.partner_id != current_principal().partner_id:
            raise Problem(404, f"webhook {subscription_id} not found")
        return row  # type: ignore[no-any-return]

    @api.get("/v1/webhook-event-types", summary="The event types a partner may subscribe to")
    async def event_types() -> EventTypes:
        return EventTypes(event_types=sorted(webhooks.EVENT_TYPES))

    @api.post("/v1/webhooks", status_code=201, summary="Subscribe an endpoint to event types")
    async def subscribe(body: NewSubscription) -> Subscription:
        try:
            domain.validate_subscription(body.url, body.event_types, webhooks.EVENT_TYPES)
        except InvalidArgument as error:
            raise Problem.of_domain(error) from None
        secret = webhooks.new_secret()
        row = WebhookSubscription(
            id=str(uuid.uuid4()),
            partner_id=current_principal().partner_id or "",
            url=body.url,
            event_types=sorted(set(body.event_types)),
            secret=secret,
            created_at=datetime.now(UTC),
        )
        async with database().transaction() as session:
            session.add(row)
        return _subscription(row, secret)

    @api.get("/v1/webhooks", summary="The caller's subscriptions (without secrets)")
    async def subscriptions() -> Subscriptions:
        partner = current_principal().partner_id
        async with database().read() as session:
            query = (
                select(WebhookSubscription)
                .where(col(WebhookSubscription.partner_id) == partner, col(WebhookSubscription.active))
                .order_by(col(WebhookSubscription.created_at))
            )
            rows = (await session.exec(query)).all()
        return Subscriptions(webhooks=[_subscription(r) for r in rows])

    @api.delete("/v1/webhooks/{webhook_id}", status_code=204, summary="Stop a subscription")
    async def unsubscribe(webhook_id: Annotated[str, Path()]) -> Response:
        async with database().transaction() as session:
            row = await owned(session, webhook_id)
            row.active = False
            session.add(row)
        return Response(status_code=204)

    @api.get("/v1/webhooks/{webhook_id}/deliveries", summary="The subscription's delivery log, newest first")
    async def deliveries(
        webhook_id: Annotated[str, Path()],
        state: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
        page_size: Annotated[int, Query(ge=1, le=100)] = 50,
        page_token: Annotated[str | None, Query()] = None,
    ) -> Deliveries:
        async with database().read() as session:
            await owned(session, webhook_id)
            query = select(WebhookDelivery).where(col(WebhookDelivery.subscription_id) == webhook_id)
            if state is not None:
                query = query.where(col(WebhookDelivery.state) == state)
            after = _cursor(page_token)
            if after is not None:
                query = query.where(
                    sa.tuple_(col(WebhookDelivery.created_at), col(WebhookDelivery.id)) < sa.tuple_(*after)
                )
            query = query.order_by(col(WebhookDelivery.created_at).desc(), col(WebhookDelivery.id).desc())
            rows = list((await session.exec(query.limit(page_size + 1))).all())
        page = rows[:page_size]
        token = encode_cursor(page[-1].created_at.isoformat(), page[-1].id) if len(rows) > page_size else ""
        return Deliveries(deliveries=[_delivery(r) for r in page], next_page_token=token)

    @api.post(
        "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}:replay",
        status_code=202,
        summary="Send a delivery again (whatever its state)",
    )
    async def replay(webhook_id: Annotated[str, Path()], delivery_id: Annotated[str, Path()]) -> Delivery:
        async with database().transaction() as session:
            await owned(session, webhook_id)
            row = await session.get(WebhookDelivery, delivery_id) if "\x00" not in delivery_id else None
            if row is None or row.subscription_id != webhook_id:
                raise Problem(404, f"delivery {delivery_id} not found")
            row.state = "pending"
            row.next_attempt_at = datetime.now(UTC)
            session.add(row)
        return _delivery(row)

    return api
