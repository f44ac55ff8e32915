"""What community's service tests share: the service on a movable clock, principals, a feed of the
events other services publish, the events community publishes, and a small market to work in."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.msg import Msg
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from collabnet.community.v1 import community_pb2 as pb
from collabnet.community.v1 import events_pb2
from collabnet.community.v1.community_pb2_grpc import CommunityServiceStub
from collabnet.supplychain.v1 import events_pb2 as supplychain
from collabnet_community import store
from collabnet_community.app import NAME, Settings, create
from collabnet_kit.bus import Bus, cloudevent_headers, stream_name, subject_of
from collabnet_kit.errors import InvalidArgument
from collabnet_kit.grpc_errors import from_rpc_error
from collabnet_kit.nats_server import NatsServer
from collabnet_kit.principal import Principal, PrincipalSigner
from collabnet_kit.server import Service
from collabnet_kit.settings import DEV_SIGNING_KEY
from collabnet_kit.testing import eventually, migrated_database_url, running, service_settings

if TYPE_CHECKING:
    from collabnet.community.v1.community_pb2_grpc import CommunityServiceAsyncStub

    Community = CommunityServiceAsyncStub
else:
    Community = CommunityServiceStub

Metadata = tuple[tuple[str, str], ...]
E = TypeVar("E", bound=Message)
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
"""Where the tests' clock starts: a Monday morning."""
ESCALATE_AFTER = timedelta(hours=48)


class Clock:
    """The service's clock in tests: stands still until moved."""

    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> datetime:
        self.at += timedelta(**delta)
        return self.at


def as_principal(principal: Principal) -> Metadata:
    return (("authorization", f"Bearer {PrincipalSigner(DEV_SIGNING_KEY).sign(principal)}"),)


SERVICE = as_principal(Principal(service="tests"))


def partner(partner_id: str) -> Metadata:
    """A partner calling as itself."""
    return as_principal(Principal(partner_id=partner_id))


def consumer(party_id: str, through: str = "R1") -> Metadata:
    """A partner (a retailer by default) acting for a consumer, as the gateway signs it."""
    return as_principal(Principal(partner_id=through, party_id=party_id))


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
    domain_error = from_rpc_error(error)
    assert isinstance(domain_error, InvalidArgument), error
    return [v.field for v in domain_error.violations]


def community_settings(database_url: str, nats_url: str, state_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "escalate_after_seconds": ESCALATE_AFTER.total_seconds(),
        "escalation_poll_seconds": 0.05,
        "invitations_per_question": 3,
        "escalation_batch_size": 4,
    }
    return service_settings(Settings, NAME, database_url, nats_url, state_dir, **(values | overrides))


database_url = migrated_database_url(store.HISTORY)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def service(
    database_url: str, nats_server: NatsServer, tmp_path: Path, span_processor: SimpleSpanProcessor, clock: Clock
) -> AsyncIterator[Service]:
    settings = community_settings(database_url, nats_server.url, tmp_path)
    created = create(settings, clock=clock, span_processor=span_processor, set_global_telemetry=False)
    async with running(created) as svc:
        yield svc


@pytest.fixture
async def community(service: Service) -> AsyncIterator[Community]:
    async with grpc.aio.insecure_channel(service.address) as channel:
        yield CommunityServiceStub(channel)


# --- the events other services publish ---------------------------------------------------------


@dataclass
class Feed:
    """Publishes the events of other domains to the real nats-server, as their relays would."""

    bus: Bus
    published: dict[str, int] = field(default_factory=dict)

    async def publish(
        self, event: Message, source: str, *, event_id: str | None = None, msg_id: str | None = None
    ) -> str:
        """Publish ``event`` on ``source``'s stream; ``msg_id`` differing from ``event_id`` makes a
        redelivery the stream does not de-duplicate (as after its window)."""
        event_id = event_id or str(uuid.uuid4())
        await self.bus.ensure_stream(source)
        headers = cloudevent_headers(event_id, event.DESCRIPTOR.full_name, f"/collabnet/{source}", datetime.now(UTC))
        if msg_id is not None:
            headers["Nats-Msg-Id"] = msg_id
        await self.bus.publish(subject_of(event), event.SerializeToString(), headers)
        self.published[source] = self.published.get(source, 0) + 1
        return event_id

    async def handled(self, source: str) -> None:
        """Wait until community's consumer has handled every message on ``source``'s stream."""
        stream = stream_name(source)

        async def done() -> bool:
            info = await self.bus.js.stream_info(stream)
            consumer = await self.bus.js.consumer_info(stream, NAME)
            return bool(
                consumer.delivered.stream_seq >= info.state.last_seq
                and consumer.num_ack_pending == 0
                and consumer.num_pending == 0
            )

        await eventually(done, timeout=20)


@pytest.fixture
async def feed(service: Service, nats_server: NatsServer) -> AsyncIterator[Feed]:
    bus = Bus(nats_server.url, name="community-tests-feed")
    await bus.connect()
    try:
        yield Feed(bus)
    finally:
        await bus.close()


# --- the events community publishes ------------------------------------------------------------

EVENT_TYPES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        events_pb2.MemberJoined,
        events_pb2.MemberLeft,
        events_pb2.MemberRoleChanged,
        events_pb2.QuestionAsked,
        events_pb2.AnswerPosted,
        events_pb2.AnswerAccepted,
        events_pb2.QuestionEscalated,
        events_pb2.IdeaSubmitted,
        events_pb2.IdeaStatusChanged,
        events_pb2.IdeaPromoted,
        events_pb2.ReputationChanged,
    )
}


@dataclass(frozen=True)
class Published:
    subject: str
    type: str
    id: str
    source: str
    event: Message


@dataclass
class EventLog:
    """Every message of community's stream, in stream order, as a real subscriber receives it."""

    received: list[Published] = field(default_factory=list)

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

    def of(self, cls: type[E]) -> list[E]:
        return [p.event for p in self.received if isinstance(p.event, cls)]

    async def wait_for(self, cls: type[E], count: int = 1) -> list[E]:
        """The events of type ``cls`` once there are at least ``count`` of them."""

        async def enough() -> list[E] | None:
            found = self.of(cls)
            return found if len(found) >= count else None

        result: list[E] = await eventually(enough)
        return result


@pytest.fixture
async def events(service: Service, nats_server: NatsServer) -> AsyncIterator[EventLog]:
    log = EventLog()
    bus = Bus(nats_server.url, name="community-tests-events")
    await bus.connect()
    await bus.ensure_stream(NAME)
    subscription = await bus.js.subscribe(
        f"collabnet.{NAME}.>", stream=stream_name(NAME), cb=log.on_message, ordered_consumer=True
    )
    try:
        yield log
    finally:
        await subscription.unsubscribe()
        await bus.close()


# --- a small market: a maker, two retailers, products and their owners --------------------------

MAKER, RETAILER, OTHER_RETAILER, STRANGER = "M", "R1", "R2", "X"
BLENDER, KETTLE, DRILL = "P-blender", "P-kettle", "P-drill"


@dataclass(frozen=True)
class Market:
    """M makes a blender (brand Acme, kitchen/blenders), a kettle (Acme, kitchen/kettles) and a drill
    (brand Boltz, tools). R1 and R2 sell the blender; R1 sells the kettle; nobody sells the drill.
    Owners: ``owner1`` bought the blender at R1, ``owner2`` at R2, ``owner3`` bought the kettle.
    ``asker`` and ``newcomer`` bought nothing."""

    asker: str = "C-asker"
    owner1: str = "C-owner1"
    owner2: str = "C-owner2"
    owner3: str = "C-owner3"
    newcomer: str = "C-newcomer"
    bought_at: datetime = T0 - timedelta(days=40)


def product_registered(product_id: str, name: str, category: str, brand: str, revision: int = 1) -> Message:
    return supplychain.ProductRegistered(
        product_id=product_id,
        sku=product_id,
        name=name,
        category=category,
        maker_id=MAKER,
        revision=revision,
        attributes={"brand": brand},
    )


def order(order_id: str, customer: str, retailer: str, *products: str, placed: datetime) -> Message:
    return supplychain.OrderPlaced(
        order_id=order_id,
        customer_id=customer,
        retailer_id=retailer,
        lines=[supplychain.OrderLine(product_id=p, revision=1, quantity=1) for p in products],
        place_time=stamp(placed),
    )


async def build_market(feed: Feed) -> Market:
    market = Market()
    for event in (
        product_registered(BLENDER, "Blender 3000", "Kitchen/Blenders", "Acme"),
        product_registered(KETTLE, "Kettle", "kitchen/kettles", "ACME"),
        product_registered(DRILL, "Drill", "tools", "Boltz"),
        supplychain.ProductListed(listing_id="L1", product_id=BLENDER, retailer_id=RETAILER, available=True),
        supplychain.ProductListed(listing_id="L2", product_id=BLENDER, retailer_id=OTHER_RETAILER, available=True),
        supplychain.ProductListed(listing_id="L3", product_id=KETTLE, retailer_id=RETAILER, available=True),
        order("O1", market.owner1, RETAILER, BLENDER, placed=market.bought_at),
        order("O2", market.owner2, OTHER_RETAILER, BLENDER, placed=market.bought_at + timedelta(days=1)),
        order("O3", market.owner3, RETAILER, KETTLE, placed=market.bought_at),
    ):
        await feed.publish(event, "supplychain")
    await feed.handled("supplychain")
    return market


@pytest.fixture
async def market(feed: Feed) -> Market:
    return await build_market(feed)


async def create_community(
    community: Community,
    name: str = "Acme owners",
    *,
    by: str = MAKER,
    scope: pb.CommunityScope | None = None,
    open_to_non_members: bool = False,
) -> pb.Community:
    return await community.CreateCommunity(
        pb.CreateCommunityRequest(
            community=pb.Community(
                name=name,
                description="For everyone who owns Acme",
                scope=scope or pb.CommunityScope(brand="Acme"),
                open_to_non_members=open_to_non_members,
            )
        ),
        metadata=partner(by),
    )


async def join(community: Community, community_id: str, *parties: str) -> None:
    for party in parties:
        await community.JoinCommunity(pb.JoinCommunityRequest(community_id=community_id), metadata=consumer(party))


async def ask(
    community: Community, community_id: str, asker: str, product_id: str = BLENDER, title: str = "Does it crush ice?"
) -> pb.Question:
    return await community.AskQuestion(
        pb.AskQuestionRequest(
            community_id=community_id, product_id=product_id, title=title, body="Asking for a friend."
        ),
        metadata=consumer(asker),
    )


async def answer(
    community: Community, question_id: str, metadata: Metadata, body: str = "Yes, easily.", **fields: Any
) -> pb.Answer:
    return await community.AnswerQuestion(
        pb.AnswerQuestionRequest(question_id=question_id, body=body, **fields), metadata=metadata
    )


async def reputation(community: Community, party_id: str) -> pb.Reputation:
    return await community.GetReputation(pb.GetReputationRequest(party_id=party_id), metadata=SERVICE)


async def entries(community: Community, party_id: str) -> list[pb.ReputationEntry]:
    listed = await community.ListReputationEntries(
        pb.ListReputationEntriesRequest(party_id=party_id, page_size=500), metadata=SERVICE
    )
    return list(listed.entries)
