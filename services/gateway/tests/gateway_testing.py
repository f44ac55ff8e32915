"""Fixtures for the gateway's tests: the real services it fronts (the five domains and analytics), in
this process on a real nats-server and real databases, and the gateway itself serving HTTP on a free
port.

``stack`` is a fresh system per test, on every configured database backend. ``shared_stack`` is one
system for a whole test module (SQLite), for the many tests of the route table: each test makes its
own partners and parties, so they do not see each other's data.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest
import pytest_asyncio
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collabnet.identity.v1 import identity_pb2 as identity
from collabnet.identity.v1.identity_pb2 import PartnerKind
from collabnet.identity.v1.identity_pb2_grpc import IdentityServiceStub
from collabnet_analytics import app as analytics_app
from collabnet_analytics import store as analytics_store
from collabnet_community import app as community_app
from collabnet_community import store as community_store
from collabnet_gateway import catalog, store
from collabnet_gateway.app import Gateway, Settings
from collabnet_gateway.app import create as create_gateway
from collabnet_identity import app as identity_app
from collabnet_identity import store as identity_store
from collabnet_improvement import app as improvement_app
from collabnet_improvement import store as improvement_store
from collabnet_kit.migrations import History
from collabnet_kit.nats_server import NatsServer
from collabnet_kit.principal import Principal, PrincipalSigner
from collabnet_kit.server import Service
from collabnet_kit.settings import DEV_SIGNING_KEY
from collabnet_kit.testing import DatabaseFactory, running, service_settings
from collabnet_reviews import app as reviews_app
from collabnet_reviews import store as reviews_store
from collabnet_supplychain import app as supplychain_app
from collabnet_supplychain import store as supplychain_store

if TYPE_CHECKING:
    from collabnet.identity.v1.identity_pb2_grpc import IdentityServiceAsyncStub


def service() -> tuple[tuple[str, str], ...]:
    """Metadata for calling a service as the internal service ``tests``, signed now: a token made
    once would expire while a long module runs."""
    return (("authorization", f"Bearer {PrincipalSigner(DEV_SIGNING_KEY).sign(Principal(service='tests'))}"),)


SERVICES = ("identity", "supplychain", "reviews", "community", "improvement", "analytics")
HISTORIES: dict[str, History] = {
    "identity": identity_store.HISTORY,
    "supplychain": supplychain_store.HISTORY,
    "reviews": reviews_store.HISTORY,
    "community": community_store.HISTORY,
    "improvement": improvement_store.HISTORY,
    "analytics": analytics_store.HISTORY,
    "gateway": store.HISTORY,
}
# Generous limits for the tests of routes; the tests of limits set their own.
TEST_GATEWAY = {
    "rate_limit_per_second": 10_000.0,
    "rate_limit_burst": 10_000.0,
    "view_part_timeout_seconds": 5.0,
    "webhook_poll_seconds": 0.05,
    "webhook_backoff_seconds": 0.2,
}


def unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:8]}"


def bearer(secret: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", **extra}


@dataclass
class Partner:
    """A partner that joined the network, and a key of it."""

    id: str
    secret: str
    key_id: str

    @property
    def auth(self) -> dict[str, str]:
        return bearer(self.secret)

    def acting_for(self, party_id: str) -> dict[str, str]:
        return bearer(self.secret, **{"X-On-Behalf-Of": party_id})


@dataclass
class Stack:
    gateway: Gateway
    services: dict[str, Service]
    channel: grpc.aio.Channel
    http: httpx.AsyncClient
    spans: InMemorySpanExporter
    # (method, route template) -> the statuses the requests made with ``call`` got from it.
    exercised: dict[tuple[str, str], set[int]] = field(default_factory=dict)

    @property
    def identity(self) -> IdentityServiceAsyncStub:
        stub: IdentityServiceAsyncStub = IdentityServiceStub(self.channel)
        return stub

    async def partner(
        self,
        name: str | None = None,
        *kinds: PartnerKind.ValueType,
        scopes: tuple[str, ...] = ("network:admin", "keys:manage"),
    ) -> Partner:
        """A new partner (a retailer unless ``kinds`` say otherwise) with an API key."""
        joined = await self.identity.JoinNetwork(
            identity.JoinNetworkRequest(
                display_name=name or unique("Partner"), kinds=list(kinds) or [identity.PARTNER_KIND_RETAILER]
            ),
            metadata=service(),
        )
        key = await self.identity.CreateApiKey(
            identity.CreateApiKeyRequest(partner_id=joined.partner_id, name="tests", scopes=list(scopes)),
            metadata=service(),
        )
        return Partner(joined.partner_id, key.secret, key.api_key.api_key_id)

    async def person(self, name: str | None = None, *, customer_of: str | None = None) -> str:
        """A new person; with ``customer_of``, a customer of that partner."""
        party = await self.identity.RegisterParty(
            identity.RegisterPartyRequest(kind=identity.PARTY_KIND_PERSON, display_name=name or unique("Person")),
            metadata=service(),
        )
        if customer_of:
            await self.identity.EstablishRelationship(
                identity.EstablishRelationshipRequest(
                    from_party_id=party.party_id,
                    to_party_id=customer_of,
                    type="customer_of",
                    context_partner_id=customer_of,
                ),
                metadata=service(),
            )
        return str(party.party_id)

    async def stop_service(self, name: str) -> None:
        await self.services[name].stop()


async def call(
    stack: Stack,
    method: str,
    template: str,
    *,
    headers: Mapping[str, str],
    json: Any = None,
    params: Mapping[str, Any] | None = None,
    **path: Any,
) -> httpx.Response:
    """One request to the route ``method template``, with ``path`` filling the template; recorded in
    ``stack.exercised`` for :func:`assert_routes_exercised`."""
    response = await stack.http.request(
        method, template.format(**path), headers=dict(headers), json=json, params=dict(params or {})
    )
    stack.exercised.setdefault((method, template), set()).add(response.status_code)
    return response


def assert_routes_exercised(stack: Stack, service: str) -> None:
    """Every route of ``service`` was called with success and with a refusal, and nothing was
    called that is not a route of the table."""
    every = {(route.method, route.path) for routes in catalog.ROUTES.values() for route in routes}
    assert sorted(set(stack.exercised) - every) == []
    routes = {(route.method, route.path) for route in catalog.ROUTES[service]}
    succeeded = {key for key, statuses in stack.exercised.items() if any(200 <= s < 300 for s in statuses)}
    refused = {key for key, statuses in stack.exercised.items() if any(400 <= s < 500 for s in statuses)}
    assert sorted(routes - succeeded) == []
    assert sorted(routes - refused) == []


@asynccontextmanager
async def start_stack(
    database: Callable[[str], str],
    nats_url: str,
    state_dir: Path,
    **gateway_settings: Any,
) -> AsyncIterator[Stack]:
    """The services and the gateway, each on its own database from ``database(name)``."""
    exporter = InMemorySpanExporter()
    options = {"span_processor": SimpleSpanProcessor(exporter), "set_global_telemetry": False}
    apps = {
        "identity": identity_app,
        "supplychain": supplychain_app,
        "reviews": reviews_app,
        "community": community_app,
        "improvement": improvement_app,
        "analytics": analytics_app,
    }
    async with AsyncExitStack() as stack:
        services: dict[str, Service] = {}
        for name in SERVICES:
            extra = {"identity_address": services["identity"].address} if name in ("supplychain", "reviews") else {}
            settings = service_settings(apps[name].Settings, name, database(name), nats_url, state_dir / name, **extra)
            services[name] = await stack.enter_async_context(running(apps[name].create(settings, **options)))
        settings = service_settings(
            Settings,
            "gateway",
            database("gateway"),
            nats_url,
            state_dir / "gateway",
            http_port=0,
            trusted_partners=[],
            **{f"{name}_address": services[name].address for name in SERVICES},
            **(TEST_GATEWAY | gateway_settings),
        )
        gateway = create_gateway(settings, **options)
        await gateway.start()
        stack.push_async_callback(gateway.stop)
        await gateway.service.ready.wait()
        channel = await stack.enter_async_context(grpc.aio.insecure_channel(services["identity"].address))
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.port}", timeout=15)
        )
        yield Stack(gateway, services, channel, http, exporter)


@pytest.fixture
async def stack(database_factory: DatabaseFactory, nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Stack]:
    """A fresh system for one test, on each configured database backend (each database at the head
    of its service's migrations, as the service would leave it at start)."""

    def database(name: str) -> str:
        return database_factory(migrated=[HISTORIES[name]])

    async with start_stack(database, nats_server.url, tmp_path) as system:
        yield system


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """One system for a test module, on SQLite. Mark the module's tests with
    ``pytestmark = pytest.mark.asyncio(loop_scope="module")``."""
    root = tmp_path_factory.mktemp("stack")
    nats = NatsServer(root / "nats")
    nats.start()
    try:
        async with start_stack(lambda name: f"sqlite+aiosqlite:///{root / name}.db", nats.url, root) as system:
            yield system
    finally:
        nats.stop()
