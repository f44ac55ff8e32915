"""Fixtures and helpers of analytics' tests: the service on its own database and a real nats-server,
a bus to publish the domain events it reads (as the other services would), and its stub."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.message import Message

from collabnet.analytics.v1 import analytics_pb2 as pb
from collabnet.analytics.v1.analytics_pb2_grpc import AnalyticsServiceStub
from collabnet.identity.v1 import events_pb2 as identity
from collabnet_analytics import store
from collabnet_analytics.app import NAME, Settings, create
from collabnet_kit.bus import Bus, domain_of
from collabnet_kit.nats_server import NatsServer
from collabnet_kit.principal import Principal, PrincipalSigner
from collabnet_kit.server import Service
from collabnet_kit.settings import DEV_SIGNING_KEY
from collabnet_kit.testing import eventually, migrated_database_url, running, service_settings

if TYPE_CHECKING:  # the async stubs' types exist only in the typed stubs
    from collabnet.analytics.v1.analytics_pb2_grpc import AnalyticsServiceAsyncStub

    Analytics = AnalyticsServiceAsyncStub
else:
    Analytics = AnalyticsServiceStub

Metadata = tuple[tuple[str, str], ...]
PSEUDONYM_KEY = "the tests' pseudonym key"


def as_principal(principal: Principal) -> Metadata:
    return (("authorization", f"Bearer {PrincipalSigner(DEV_SIGNING_KEY).sign(principal)}"),)


SERVICE = as_principal(Principal(service="tests"))


def partner(partner_id: str, *, acting_for: str | None = None) -> Metadata:
    return as_principal(Principal(partner_id=partner_id, party_id=acting_for))


def new_id() -> str:
    return str(uuid.uuid4())


database_url = migrated_database_url(store.HISTORY)


@dataclass
class Network:
    """The analytics service, and a way to publish the events it reads."""

    service: Service
    analytics: Analytics
    bus: Bus

    async def publish(self, event: Message, event_id: str | None = None) -> str:
        """Publish a domain event on its stream, as its service would; returns its id."""
        event_id = event_id or new_id()
        domain = domain_of(event.DESCRIPTOR.full_name)
        await self.bus.ensure_stream(domain)
        await self.bus.publish_event(event, event_id=event_id, source=domain)
        return event_id

    async def join(self, *partner_ids: str) -> None:
        for partner_id in partner_ids:
            await self.publish(identity.PartnerJoined(partner_id=partner_id, display_name=partner_id[:8]))

    async def consent(self, party_id: str, partner_id: str, *, granted: bool = True) -> None:
        await self.publish(
            identity.ConsentChanged(party_id=party_id, partner_id=partner_id, purpose="analytics", granted=granted)
        )

    async def feed(self, partner_id: str, **request: object) -> list[pb.FeedEvent]:
        """The partner's whole feed, page by page, as a service reads it."""
        found: list[pb.FeedEvent] = []
        token = ""
        while True:
            page = await self.analytics.ListFeedEvents(
                pb.ListFeedEventsRequest(partner_id=partner_id, page_token=token, page_size=7, **request),  # type: ignore[arg-type]
                metadata=SERVICE,
            )
            found.extend(page.events)
            if not page.events:
                return found
            token = page.next_page_token

    async def settled(self) -> None:
        """Wait until the service has handled everything published so far."""

        assert self.service.wiring is not None
        consumers = self.service.wiring.consumers

        async def idle() -> bool:
            lags = [await consumer.refresh_lag() for consumer in consumers]
            return not any(lags)

        await eventually(idle, timeout=20)


@pytest.fixture
async def network(database_url: str, nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Network]:
    settings = service_settings(
        Settings,
        NAME,
        database_url,
        nats_server.url,
        tmp_path / NAME,
        pseudonym_key=PSEUDONYM_KEY,
        export_root=tmp_path,
    )
    service = create(settings, set_global_telemetry=False)
    async with running(service):
        bus = Bus(nats_server.url, name="tests")
        await bus.connect()
        try:
            async with grpc.aio.insecure_channel(service.address) as channel:
                yield Network(service, AnalyticsServiceStub(channel), bus)
        finally:
            await bus.close()


async def refused(call: Awaitable[object], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, f"{raised.value.code()}: {raised.value.details()}"
    return raised.value
