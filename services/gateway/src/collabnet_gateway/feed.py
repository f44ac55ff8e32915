"""The partner's feed under /v1: the domain events it may see, oldest first and resumable, as
analytics keeps them (analytics' ListFeedEvents, called as the partner). Each event's data is the
JSON the webhooks deliver; a person's party id is the partner's pseudonym of it, and what they wrote
is left out, unless that person consented to ``analytics`` with the partner."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, cast

import grpc
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from collabnet.analytics.v1 import analytics_pb2 as analytics
from collabnet_gateway import schemas
from collabnet_gateway.problems import Problem
from collabnet_gateway.routes import PROBLEM_RESPONSES, Call
from collabnet_kit.errors import DomainError

MAX_PAGE_SIZE = 1000


class FeedEvent(BaseModel):
    position: int = Field(description="The event's position in the caller's feed.")
    id: str = Field(description="The event's id (CloudEvents `id`, and a webhook delivery's `X-Collabnet-Event-Id`).")
    type: str = Field(description="The event type, as listed by /v1/webhook-event-types.")
    source: str = Field(description="The service that published the event.")
    time: datetime = Field(description="When the event happened.")
    data: dict[str, Any] = Field(description="The event as the caller may see it, as webhooks deliver it.")


class Feed(BaseModel):
    events: list[FeedEvent]
    next_page_token: str = Field(
        description="Never empty: the feed continues after it. At the end of the feed, ask with it again later."
    )


def _event(event: analytics.FeedEvent) -> dict[str, Any]:
    return {
        "position": event.position,
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "time": schemas.timestamp_json(event.time),
        "data": schemas.to_json(schemas.unpack(event.event)),
    }


def router(call: Call) -> APIRouter:
    """``call`` reaches analytics as the calling partner (see ``Gateway.call``)."""
    api = APIRouter(tags=["feed"], responses=PROBLEM_RESPONSES)

    @api.get(
        "/v1/feed",
        summary="The events the caller may see, oldest first; resume from next_page_token",
        response_model=Feed,
        operation_id="analytics_ListFeedEvents",
    )
    async def read_feed(
        page_token: Annotated[
            str | None, Query(description="A next_page_token from an earlier page; without it, from the start.")
        ] = None,
        page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
        event_types: Annotated[
            list[str] | None, Query(description="Only events of these types (repeat the parameter for more).")
        ] = None,
        since: Annotated[datetime | None, Query(description="Only events that happened at or after this time.")] = None,
    ) -> JSONResponse:
        values = {
            "page_token": page_token,
            "page_size": page_size,
            "event_types": event_types,
            "since": since.isoformat() if since is not None else None,
        }
        try:
            request = schemas.fill(analytics.ListFeedEventsRequest(), {k: v for k, v in values.items() if v})
        except DomainError as error:
            raise Problem.of_domain(error) from None
        try:
            reply = cast(analytics.ListFeedEventsResponse, await call("analytics", "ListFeedEvents", request))
        except grpc.aio.AioRpcError as error:
            raise Problem.of_rpc(error) from None
        return JSONResponse({"events": [_event(e) for e in reply.events], "next_page_token": reply.next_page_token})

    return api
