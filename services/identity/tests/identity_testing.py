from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.msg import Msg
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from collabnet.identity.v1 import events_pb2, identity_pb2
from collabnet.identity.v1.identity_pb2_grpc import IdentityServiceStub
from collabnet_identity import store
from collabnet_identity.app import NAME, Settings, create
from collabnet_kit.bus import Bus, stream_name
from collabnet_kit.errors import InvalidArgument
from collabnet_kit.grpc_errors import from_rpc_error
from collabnet_kit.nats_server import NatsServer
from collabnet_kit.principal import Principal, PrincipalSigner
from collabnet_kit.server import Service
from collabnet_kit.settings import DEV_SIGNING_KEY
from collabnet_kit.testing import eventually, migrated_database_url, running, service_settings

if TYPE_CHECKING:
    from collabnet.identity.v1.identity_pb2_grpc import IdentityServiceAsyncStub

    Identity = IdentityServiceAsyncStub
else:
    Identity = IdentityServiceStub

Metadata = tuple[tuple[str, str], ...]
E = TypeVar("E", bound=Message)


TOKEN_SECONDS = 24 * 3600
"""Tokens signed at import outlive a whole test run (the kit's default lifetime is five minutes)."""


def as_principal(principal: Principal, *, key: str = DEV_SIGNING_KEY) -> Metadata:
    return (("authorization", f"Bearer {PrincipalSigner(key, ttl_seconds=TOKEN_SECONDS).sign(principal)}"),)


SERVICE = as_principal(Principal(service="tests"))
ADMIN_SCOPES = frozenset({"network:admin", "keys:manage", "reviews:write"})


def partner(partner_id: str, *, acting_for: str | None = None, scopes: frozenset[str] = ADMIN_SCOPES) -> Metadata:
    return as_principal(Principal(partner_id=partner_id, party_id=acting_for, scopes=scopes))


database_url = migrated_database_url(store.HISTORY)


@pytest.fixture
async def service(
    database_url: str, nats_server: NatsServer, tmp_path: Path, span_processor: SimpleSpanProcessor
) -> AsyncIterator[Service]:
    settings = service_settings(Settings, NAME, database_url, nats_server.url, tmp_path)
    async with running(create(settings, span_processor=span_processor, set_global_telemetry=False)) as svc:
        yield svc


@pytest.fixture
async def identity(service: Service) -> AsyncIterator[Identity]:
    async with grpc.aio.insecure_channel(service.address) as channel:
        yield IdentityServiceStub(channel)


PartnerHeaders = Callable[..., Metadata]

# --- small helpers -----------------------------------------------------------------------------


def stamp(value: datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(value)
    return message


def at(message: Timestamp) -> datetime:
    return message.ToDatetime(tzinfo=UTC)


async def refused(call: Awaitable[object], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """The error ``call`` fails with, after checking its status code."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, f"{raised.value.code()}: {raised.value.details()}"
    return raised.value


def violated_fields(error: grpc.aio.AioRpcError) -> list[str]:
    """The fields an INVALID_ARGUMENT names in its BadRequest details."""
    domain_error = from_rpc_error(error)
    assert isinstance(domain_error, InvalidArgument), error
    return [v.field for v in domain_error.violations]


async def register_person(
    identity: Identity, name: str, *, email: str | None = None, phone: str | None = None, by: Metadata = SERVICE
) -> identity_pb2.Party:
    """A new person, registered by ``by``: only the partner that registered a person (or one acting
    for them) may relate them to itself."""
    return await identity.RegisterParty(
        identity_pb2.RegisterPartyRequest(
            kind=identity_pb2.PARTY_KIND_PERSON, display_name=name, email=email, phone=phone
        ),
        metadata=by,
    )


async def join(
    identity: Identity, name: str, *kinds: identity_pb2.PartnerKind.ValueType, capabilities: tuple[str, ...] = ()
) -> identity_pb2.Partner:
    return await identity.JoinNetwork(
        identity_pb2.JoinNetworkRequest(display_name=name, kinds=kinds, capabilities=capabilities), metadata=SERVICE
    )


async def relate(
    identity: Identity,
    from_party: str,
    type_name: str,
    to_party: str,
    *,
    by: Metadata,
    context: str = "",
    attributes: dict[str, str] | None = None,
    since: datetime | None = None,
) -> identity_pb2.Relationship:
    request = identity_pb2.EstablishRelationshipRequest(
        from_party_id=from_party,
        to_party_id=to_party,
        type=type_name,
        context_partner_id=context,
        attributes=attributes or {},
    )
    if since is not None:
        request.valid_from.CopyFrom(stamp(since))
    return await identity.EstablishRelationship(request, metadata=by)


async def relationship_ids(identity: Identity, party_id: str, metadata: Metadata = SERVICE) -> set[str]:
    listed = await identity.ListRelationships(
        identity_pb2.ListRelationshipsRequest(party_id=party_id, page_size=500), metadata=metadata
    )
    return {r.relationship_id for r in listed.relationships}


# --- the network the service-level tests share ---------------------------------------------------

CUSTOMER_TYPES = ("retail", "wholesale", "subscription")


@dataclass(frozen=True)
class Network:
    """One consumer C, customer of three retailers (retail, wholesale, subscription) and supplier of
    a manufacturer M; M is supplied by a steel mill, which is supplied by an ore supplier; E works
    for M, and X is a partner of E.

    The first retailer registered C and records C as its customer; acting for C, it introduces C to
    the other retailers and to M (each relationship in the network of the partner C relates to). M
    registered E and X.

    Every relationship is valid from ``since`` (thirty days before the network was built).
    """

    since: datetime
    consumer: identity_pb2.Party
    retailers: tuple[identity_pb2.Partner, identity_pb2.Partner, identity_pb2.Partner]
    maker: identity_pb2.Partner
    mill: identity_pb2.Partner
    ore: identity_pb2.Partner
    employee: identity_pb2.Party
    colleague: identity_pb2.Party
    # C customer_of each retailer, in the order of ``retailers`` (and of CUSTOMER_TYPES).
    customer_of: tuple[identity_pb2.Relationship, identity_pb2.Relationship, identity_pb2.Relationship]
    consumer_supplies_maker: identity_pb2.Relationship
    mill_supplies_maker: identity_pb2.Relationship
    ore_supplies_mill: identity_pb2.Relationship
    employment: identity_pb2.Relationship
    partnership: identity_pb2.Relationship

    @property
    def c(self) -> str:
        return self.consumer.party_id

    @property
    def r(self) -> tuple[str, str, str]:
        first, second, third = (p.partner_id for p in self.retailers)
        return first, second, third

    @property
    def m(self) -> str:
        return self.maker.partner_id

    @property
    def s(self) -> str:
        return self.mill.partner_id

    @property
    def o(self) -> str:
        return self.ore.partner_id

    @property
    def e(self) -> str:
        return self.employee.party_id

    @property
    def x(self) -> str:
        return self.colleague.party_id

    @property
    def relationships(self) -> list[identity_pb2.Relationship]:
        return [
            *self.customer_of,
            self.consumer_supplies_maker,
            self.mill_supplies_maker,
            self.ore_supplies_mill,
            self.employment,
            self.partnership,
        ]


async def build_network(identity: Identity) -> Network:
    since = datetime.now(UTC) - timedelta(days=30)
    retailers = (
        await join(identity, "Retailer One", identity_pb2.PARTNER_KIND_RETAILER),
        await join(identity, "Retailer Two", identity_pb2.PARTNER_KIND_RETAILER),
        await join(identity, "Retailer Three", identity_pb2.PARTNER_KIND_RETAILER),
    )
    maker = await join(identity, "Maker", identity_pb2.PARTNER_KIND_MANUFACTURER, capabilities=("assemble",))
    mill = await join(identity, "Steel Mill", identity_pb2.PARTNER_KIND_SUPPLIER)
    ore = await join(identity, "Ore Supplier", identity_pb2.PARTNER_KIND_SUPPLIER)
    r1, m = retailers[0].partner_id, maker.partner_id
    consumer = await register_person(
        identity, "Carla Consumer", email="carla@example.org", phone="+49 30 1234567", by=partner(r1)
    )
    employee = await register_person(identity, "Erik Employee", email="erik@maker.example", by=partner(m))
    colleague = await register_person(identity, "Xenia Colleague", by=partner(m))
    c = consumer.party_id
    first, second, third = [
        await relate(
            identity,
            c,
            "customer_of",
            retailer.partner_id,
            by=partner(r1) if retailer.partner_id == r1 else partner(r1, acting_for=c),
            context=retailer.partner_id,
            attributes={"customer_type": customer_type},
            since=since,
        )
        for retailer, customer_type in zip(retailers, CUSTOMER_TYPES, strict=True)
    ]
    return Network(
        since=since,
        consumer=consumer,
        retailers=retailers,
        maker=maker,
        mill=mill,
        ore=ore,
        employee=employee,
        colleague=colleague,
        customer_of=(first, second, third),
        consumer_supplies_maker=await relate(
            identity, c, "supplier_of", m, by=partner(r1, acting_for=c), context=m, since=since
        ),
        mill_supplies_maker=await relate(
            identity, mill.partner_id, "supplier_of", m, by=partner(mill.partner_id), since=since
        ),
        ore_supplies_mill=await relate(
            identity, ore.partner_id, "supplier_of", mill.partner_id, by=partner(ore.partner_id), since=since
        ),
        employment=await relate(identity, employee.party_id, "employee_of", m, by=partner(m), since=since),
        partnership=await relate(
            identity,
            colleague.party_id,
            "partner_of",
            employee.party_id,
            by=partner(m, acting_for=employee.party_id),
            since=since,
        ),
    )


@pytest.fixture
async def network(identity: Identity) -> Network:
    return await build_network(identity)


# --- the events the service publishes ------------------------------------------------------------

EVENT_TYPES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        events_pb2.PartyRegistered,
        events_pb2.PartnerJoined,
        events_pb2.CapabilityDeclared,
        events_pb2.RelationshipEstablished,
        events_pb2.RelationshipEnded,
        events_pb2.ConsentChanged,
        events_pb2.ApiKeyRevoked,
    )
}
STREAM = stream_name(NAME)


@dataclass(frozen=True)
class Published:
    """One message of the identity stream, decoded by its ``ce-type``."""

    subject: str
    type: str
    id: str
    source: str
    event: Message


@dataclass
class EventLog:
    """Every message of the identity stream, in stream order, as a real subscriber receives it."""

    received: list[Published] = field(default_factory=list)
    _read: int = 0

    async def on_message(self, msg: Msg) -> None:
        headers = msg.headers or {}
        event_type = headers["ce-type"]
        self.received.append(
            Published(
                subject=msg.subject,
                type=event_type,
                id=headers["ce-id"],
                source=headers.get("ce-source", ""),
                event=EVENT_TYPES[event_type].FromString(msg.data),
            )
        )

    async def drain(self, identity: Identity) -> list[Published]:
        """The events published since the last drain.

        Registers a marker party and waits for its PartyRegistered: the relay publishes in commit
        order, so every event of an earlier call has arrived by then. The marker is not returned.
        """
        marker = await register_person(identity, "Event Marker")

        async def after_marker() -> int | None:
            for index in range(self._read, len(self.received)):
                event = self.received[index].event
                if isinstance(event, events_pb2.PartyRegistered) and event.party_id == marker.party_id:
                    return index + 1  # the position after the marker: never 0, which `eventually` would refuse
            return None

        end = await eventually(after_marker)
        published = self.received[self._read : end - 1]
        self._read = end
        return published


def only(published: list[Published], cls: type[E]) -> E:
    """The single event of ``published``, checked to be a ``cls`` on its subject with its ce-type."""
    assert [p.type for p in published] == [cls.DESCRIPTOR.full_name], published
    (message,) = published
    assert message.subject == f"collabnet.identity.v1.{cls.DESCRIPTOR.name}"
    assert message.source == "/collabnet/identity"
    assert message.id
    assert isinstance(message.event, cls)
    return message.event


@pytest.fixture
async def events(service: Service, nats_server: NatsServer) -> AsyncIterator[EventLog]:
    log = EventLog()
    bus = Bus(nats_server.url, name="identity-tests")
    await bus.connect()
    subscription = await bus.js.subscribe(
        "collabnet.identity.>", stream=STREAM, cb=log.on_message, ordered_consumer=True
    )
    try:
        yield log
    finally:
        await subscription.unsubscribe()
        await bus.close()
