"""Fixtures and helpers of improvement's tests: the service on a real database and nats-server, a
feed of the events it consumes (published to the real streams as reviews, supplychain and
community would), and a log of what it publishes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
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

from collabnet.improvement.v1 import events_pb2 as ev
from collabnet.improvement.v1 import improvement_pb2 as pb
from collabnet.improvement.v1.improvement_pb2_grpc import ImprovementServiceStub
from collabnet.reviews.v1 import events_pb2 as reviews
from collabnet.supplychain.v1 import events_pb2 as supplychain
from collabnet_improvement import store
from collabnet_improvement.app import NAME, Settings, create
from collabnet_kit.bus import Bus, cloudevent_headers, stream_name
from collabnet_kit.errors import InvalidArgument
from collabnet_kit.grpc_errors import from_rpc_error
from collabnet_kit.nats_server import NatsServer
from collabnet_kit.principal import Principal, PrincipalSigner
from collabnet_kit.server import Service
from collabnet_kit.settings import DEV_SIGNING_KEY
from collabnet_kit.testing import eventually, migrated_database_url, running, service_settings

if TYPE_CHECKING:
    from collabnet.improvement.v1.improvement_pb2_grpc import ImprovementServiceAsyncStub as Improvement
else:
    Improvement = ImprovementServiceStub

Metadata = tuple[tuple[str, str], ...]
E = TypeVar("E", bound=Message)


def as_principal(principal: Principal) -> Metadata:
    return (("authorization", f"Bearer {PrincipalSigner(DEV_SIGNING_KEY).sign(principal)}"),)


SERVICE = as_principal(Principal(service="tests"))


def partner(partner_id: str) -> Metadata:
    return as_principal(Principal(partner_id=partner_id))


def customer(party_id: str, through: str) -> Metadata:
    """A partner (the gateway's caller) acting for a customer."""
    return as_principal(Principal(partner_id=through, party_id=party_id))


def stamp(value: datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(value)
    return message


def in_days(days: float) -> Timestamp:
    return stamp(datetime.now(UTC) + timedelta(days=days))


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def refused(call: Awaitable[object], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """The error ``call`` fails with, after checking its status code."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == code, f"{raised.value.code()}: {raised.value.details()}"
    return raised.value


async def invalid(call: Awaitable[object], *fields: str) -> grpc.aio.AioRpcError:
    """INVALID_ARGUMENT naming exactly ``fields`` in its BadRequest details and its message."""
    error = await refused(call, grpc.StatusCode.INVALID_ARGUMENT)
    domain_error = from_rpc_error(error)
    assert isinstance(domain_error, InvalidArgument), error
    assert sorted({v.field for v in domain_error.violations}) == sorted(fields), error.details()
    for name in fields:
        assert name in (error.details() or "")
    return error


# --- what improvement publishes ----------------------------------------------------------------------

EVENT_TYPES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        ev.CaseOpened,
        ev.CaseEngaged,
        ev.CaseResolved,
        ev.CaseReopened,
        ev.CaseClosed,
        ev.CorrectiveActionRequested,
        ev.CoDesignJoined,
        ev.InitiativeLaunched,
        ev.InitiativeStageChanged,
        ev.ObjectiveMet,
        ev.RedesignRequested,
    )
}


@dataclass
class EventLog:
    """Every message of improvement's stream, in stream order, as a subscriber receives it."""

    received: list[tuple[str, Message]] = field(default_factory=list)

    async def on_message(self, msg: Msg) -> None:
        headers = msg.headers or {}
        event_type = headers["ce-type"]
        assert msg.subject == event_type
        assert headers.get("ce-source") == "/collabnet/improvement"
        self.received.append((event_type, EVENT_TYPES[event_type].FromString(msg.data)))

    def of(self, cls: type[E]) -> list[E]:
        return [e for t, e in self.received if t == cls.DESCRIPTOR.full_name and isinstance(e, cls)]

    async def wait(self, cls: type[E], count: int = 1) -> list[E]:
        """At least ``count`` events of ``cls``; returns them all."""

        async def enough() -> list[E] | None:
            found = self.of(cls)
            return found if len(found) >= count else None

        result: list[E] = await eventually(enough)
        return result


# --- the world the tests share --------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """Maker M makes product P (revision 1); retailers R and R2 list it; supplier S1 (tier 1)
    supplies the maker and S2 (tier 2) supplies S1; X is a supplier outside P's network; C is a
    customer of R, D another customer."""

    maker: str
    retailer: str
    retailer2: str
    product: str
    s1: str
    s2: str
    outsider: str
    customer: str
    other_customer: str

    @property
    def as_maker(self) -> Metadata:
        return partner(self.maker)

    @property
    def as_retailer(self) -> Metadata:
        return partner(self.retailer)

    @property
    def as_customer(self) -> Metadata:
        return customer(self.customer, self.retailer)


@dataclass
class Harness:
    improvement: Improvement
    bus: Bus
    log: EventLog
    world: World
    service: Service

    async def publish(self, event: Message, source: str, *, event_id: str | None = None, attempt: int = 0) -> str:
        """Publish ``event`` as ``source`` would; the same ``event_id`` with another ``attempt`` is
        what a redelivery after the stream's de-duplication window looks like."""
        event_id = event_id or str(uuid.uuid4())
        headers = cloudevent_headers(event_id, event.DESCRIPTOR.full_name, f"/collabnet/{source}", datetime.now(UTC))
        await self.bus.publish(
            event.DESCRIPTOR.full_name, event.SerializeToString(), headers | {"Nats-Msg-Id": f"{event_id}-{attempt}"}
        )
        return event_id

    async def review(
        self,
        rating: int,
        *,
        review_id: str | None = None,
        author: str | None = None,
        channel: str | None = None,
        product: str | None = None,
        revision: int = 1,
    ) -> reviews.ReviewPublished:
        event = reviews.ReviewPublished(
            review_id=review_id or new_id("review"),
            product_id=product or self.world.product,
            revision=revision,
            author_id=author or self.world.customer,
            channel_partner_id=channel if channel is not None else self.world.retailer,
            rating=rating,
            publish_time=stamp(datetime.now(UTC)),
        )
        await self.publish(event, "reviews")
        return event

    async def revise(self, review: reviews.ReviewPublished, new_rating: int, version: int, old_rating: int = 0) -> str:
        return await self.publish(
            reviews.ReviewRevised(
                review_id=review.review_id,
                product_id=review.product_id,
                revision=review.revision,
                author_id=review.author_id,
                channel_partner_id=review.channel_partner_id,
                old_rating=old_rating or review.rating,
                new_rating=new_rating,
                version=version,
                revise_time=stamp(datetime.now(UTC)),
            ),
            "reviews",
        )

    async def withdraw(self, review: reviews.ReviewPublished) -> str:
        return await self.publish(
            reviews.ReviewWithdrawn(
                review_id=review.review_id,
                product_id=review.product_id,
                author_id=review.author_id,
                channel_partner_id=review.channel_partner_id,
                rating=review.rating,
            ),
            "reviews",
        )

    async def cases_of(self, product: str | None = None) -> list[pb.Case]:
        listed = await self.improvement.ListCases(
            pb.ListCasesRequest(product_id=product or self.world.product, page_size=500), metadata=SERVICE
        )
        return list(listed.cases)

    async def case_of(self, review_id: str) -> pb.Case:
        """The review's case, once it has opened."""

        async def opened() -> pb.Case | None:
            return next((c for c in await self.cases_of() if c.review_id == review_id), None)

        case: pb.Case = await eventually(opened)
        return case

    async def get_case(self, case_id: str, metadata: Metadata = SERVICE) -> pb.Case:
        return await self.improvement.GetCase(pb.GetCaseRequest(case_id=case_id), metadata=metadata)

    async def until_case(self, case_id: str, check: object) -> pb.Case:
        """The case once ``check(case)`` holds."""

        async def holds() -> pb.Case | None:
            case = await self.get_case(case_id)
            return case if check(case) else None  # type: ignore[operator]

        found: pb.Case = await eventually(holds)
        return found

    async def settle(self) -> None:
        """Give deliveries in flight time to arrive, so 'still exactly one' means something."""
        await asyncio.sleep(0.5)

    async def negative_case(self, rating: int = 2) -> tuple[reviews.ReviewPublished, pb.Case]:
        review = await self.review(rating)
        return review, await self.case_of(review.review_id)

    async def engaged_case(self) -> tuple[reviews.ReviewPublished, pb.Case]:
        review, case = await self.negative_case()
        await self.improvement.EngageCase(
            pb.EngageCaseRequest(case_id=case.case_id, message="We are sorry the kettle leaked. Can we help?"),
            metadata=self.world.as_retailer,
        )
        return review, case

    async def investigating_case(self) -> tuple[reviews.ReviewPublished, pb.Case]:
        review, case = await self.engaged_case()
        await self.improvement.StartInvestigation(
            pb.StartInvestigationRequest(case_id=case.case_id, note="looking at the seal"), metadata=self.world.as_maker
        )
        return review, case

    async def resolved_case(self) -> tuple[reviews.ReviewPublished, pb.Case]:
        review, case = await self.investigating_case()
        cid = case.case_id
        await self.improvement.RecordRootCause(
            pb.RecordRootCauseRequest(
                case_id=cid,
                root_cause=pb.RootCause(
                    method=pb.ROOT_CAUSE_METHOD_FIVE_WHYS,
                    whys=["the lid leaks", "the seal is too thin", "the supplier changed the rubber compound"],
                ),
            ),
            metadata=self.world.as_maker,
        )
        await self.improvement.ProposeResolution(
            pb.ProposeResolutionRequest(case_id=cid, resolution="A replacement kettle with the new seal."),
            metadata=self.world.as_maker,
        )
        resolved = await self.improvement.ResolveCase(
            pb.ResolveCaseRequest(case_id=cid, note="replacement delivered"), metadata=self.world.as_customer
        )
        return review, resolved

    async def initiative(
        self,
        *,
        owner: Metadata | None = None,
        kind: pb.InitiativeKind.ValueType = pb.INITIATIVE_KIND_PRODUCT_REDESIGN,
        **fields: object,
    ) -> pb.Initiative:
        request = pb.CreateInitiativeRequest(
            title="Kettle seal redesign",
            description="A seal that does not leak",
            kind=kind,
            product_id=self.world.product,
            **fields,  # type: ignore[arg-type]
        )
        return await self.improvement.CreateInitiative(request, metadata=owner or self.world.as_maker)


async def build_world(h: Harness) -> World:
    w = h.world
    await h.publish(
        supplychain.ProductRegistered(
            product_id=w.product, sku="K-1", name="Kettle", category="kitchen", maker_id=w.maker, revision=1
        ),
        "supplychain",
    )
    for retailer in (w.retailer, w.retailer2):
        await h.publish(
            supplychain.ProductListed(
                listing_id=f"listing-{retailer}", product_id=w.product, retailer_id=retailer, available=True
            ),
            "supplychain",
        )
    await h.publish(
        supplychain.SupplyNetworkChanged(
            product_id=w.product,
            maker_id=w.maker,
            suppliers=[
                supplychain.SupplyNetworkChanged.Supplier(supplier_id=w.s1, tier=1, item="lid seal"),
                supplychain.SupplyNetworkChanged.Supplier(supplier_id=w.s2, tier=2, item="rubber compound"),
            ],
        ),
        "supplychain",
    )
    await h.publish(
        supplychain.SupplyNetworkChanged(
            product_id="other-product",
            maker_id="other-maker",
            suppliers=[supplychain.SupplyNetworkChanged.Supplier(supplier_id=w.outsider, tier=1, item="glass")],
        ),
        "supplychain",
    )

    async def known() -> bool:
        try:
            network = await h.improvement.GetProductNetwork(
                pb.GetProductNetworkRequest(product_id=w.product), metadata=SERVICE
            )
        except grpc.aio.AioRpcError:
            return False
        return len(network.retailer_ids) == 2 and len(network.suppliers) == 2

    await eventually(known)
    return w


database_url = migrated_database_url(store.HISTORY)


@pytest.fixture
async def service(
    database_url: str, nats_server: NatsServer, tmp_path: Path, span_processor: SimpleSpanProcessor
) -> AsyncIterator[Service]:
    settings = service_settings(Settings, NAME, database_url, nats_server.url, tmp_path)
    async with running(create(settings, span_processor=span_processor, set_global_telemetry=False)) as svc:
        yield svc


@pytest.fixture
async def improvement(service: Service) -> AsyncIterator[Improvement]:
    async with grpc.aio.insecure_channel(service.address) as channel:
        yield ImprovementServiceStub(channel)


@pytest.fixture
async def h(service: Service, improvement: Improvement, nats_server: NatsServer) -> AsyncIterator[Harness]:
    bus = Bus(nats_server.url, name="improvement-tests")
    await bus.connect()
    for domain in ("reviews", "supplychain", "community"):
        await bus.ensure_stream(domain)
    log = EventLog()
    subscription = await bus.js.subscribe(
        "collabnet.improvement.>", stream=stream_name(NAME), cb=log.on_message, ordered_consumer=True
    )
    world = World(
        maker=new_id("maker"),
        retailer=new_id("retailer"),
        retailer2=new_id("retailer2"),
        product=new_id("product"),
        s1=new_id("seal-supplier"),
        s2=new_id("rubber-supplier"),
        outsider=new_id("glass-supplier"),
        customer=new_id("carla"),
        other_customer=new_id("dora"),
    )
    harness = Harness(improvement, bus, log, world, service)
    await build_world(harness)
    try:
        yield harness
    finally:
        await subscription.unsubscribe()
        await bus.close()
