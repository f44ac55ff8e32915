"""Fixtures of the reviews tests: the reviews service and identity, in-process on their own
databases, one nats-server, supplychain's events published as supplychain would, and the
events reviews publishes as a subscriber receives them."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import pytest
from google.protobuf.message import Message
from nats.aio.msg import Msg
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from collabnet.identity.v1 import identity_pb2
from collabnet.identity.v1.identity_pb2_grpc import IdentityServiceStub
from collabnet.reviews.v1 import events_pb2, reviews_pb2
from collabnet.reviews.v1.reviews_pb2_grpc import ReviewsServiceStub
from collabnet.supplychain.v1 import events_pb2 as supplychain
from collabnet_kit.bus import Bus, cloudevent_headers, stream_name, subject_of
from collabnet_kit.errors import InvalidArgument
from collabnet_kit.grpc_errors import from_rpc_error
from collabnet_kit.nats_server import NatsServer
from collabnet_kit.principal import Principal, PrincipalSigner
from collabnet_kit.server import Service
from collabnet_kit.settings import DEV_SIGNING_KEY
from collabnet_kit.testing import eventually, migrated_database_url, running, service_settings
from collabnet_reviews import store
from collabnet_reviews.app import NAME, Settings, create

if TYPE_CHECKING:
    from collabnet.identity.v1.identity_pb2_grpc import IdentityServiceAsyncStub as Identity
    from collabnet.reviews.v1.reviews_pb2_grpc import ReviewsServiceAsyncStub as Reviews
else:
    Identity = IdentityServiceStub
    Reviews = ReviewsServiceStub

# Imported by name: identity's package carries no py.typed marker, and its app is only started here.
identity_app: Any = importlib.import_module("collabnet_identity.app")
identity_store: Any = importlib.import_module("collabnet_identity.store")

Metadata = tuple[tuple[str, str], ...]
E = TypeVar("E", bound=Message)
WRITE = frozenset({"reviews:write"})
MODERATE = frozenset({"reviews:write", "reviews:moderate"})


def as_principal(principal: Principal) -> Metadata:
    return (("authorization", f"Bearer {PrincipalSigner(DEV_SIGNING_KEY).sign(principal)}"),)


SERVICE = as_principal(Principal(service="tests"))


def partner(partner_id: str, *, acting_for: str | None = None, scopes: frozenset[str] = WRITE) -> Metadata:
    return as_principal(Principal(partner_id=partner_id, party_id=acting_for, scopes=scopes))


def new_id(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4()}"


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


# --- the services --------------------------------------------------------------------------------


async def start_identity(database_url: str, nats_server: NatsServer, state_dir: Path, **overrides: Any) -> Service:
    settings = service_settings(
        identity_app.Settings, identity_app.NAME, database_url, nats_server.url, state_dir, **overrides
    )
    service: Service = identity_app.create(settings, set_global_telemetry=False)
    return service


identity_database_url = migrated_database_url(identity_store.HISTORY, name="identity_database_url")


@pytest.fixture
async def identity_service(
    identity_database_url: str, nats_server: NatsServer, tmp_path: Path
) -> AsyncIterator[Service]:
    async with running(await start_identity(identity_database_url, nats_server, tmp_path)) as svc:
        yield svc


def reviews_settings(database_url: str, nats_server: NatsServer, state_dir: Path, identity_address: str) -> Settings:
    return service_settings(
        Settings,
        NAME,
        database_url,
        nats_server.url,
        state_dir,
        identity_address=identity_address,
        disclosure_retry_seconds=0.2,
        # The tests' machines are shared: identity answering slowly is not what they are about.
        affiliation_timeout_seconds=30.0,
    )


database_url = migrated_database_url(store.HISTORY)


@pytest.fixture
async def service(
    database_url: str,
    nats_server: NatsServer,
    tmp_path: Path,
    identity_service: Service,
    span_processor: SimpleSpanProcessor,
) -> AsyncIterator[Service]:
    settings = reviews_settings(database_url, nats_server, tmp_path, identity_service.address)
    async with running(create(settings, span_processor=span_processor, set_global_telemetry=False)) as svc:
        yield svc


# --- the events reviews publishes -----------------------------------------------------------------

EVENT_TYPES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        events_pb2.ReviewPublished,
        events_pb2.ReviewRevised,
        events_pb2.ReviewWithdrawn,
        events_pb2.ReviewResponded,
        events_pb2.RatingSummaryChanged,
        events_pb2.ReviewModerated,
        events_pb2.ReviewDisclosureChanged,
    )
}
STREAM = stream_name(NAME)


@dataclass
class EventLog:
    """Every event of the reviews stream, in stream order, as a subscriber receives it."""

    service: Service
    bus: Bus
    received: list[Message] = field(default_factory=list)
    _read: int = 0

    async def on_message(self, msg: Msg) -> None:
        headers = msg.headers or {}
        event_type = headers["ce-type"]
        assert msg.subject == event_type
        assert headers["ce-source"] == "/collabnet/reviews"
        self.received.append(EVENT_TYPES[event_type].FromString(msg.data))

    async def drain(self) -> list[Message]:
        """The events published since the last drain: once the outbox is empty and everything the
        stream holds has arrived."""
        assert self.service.relay is not None
        relay = self.service.relay

        async def settled() -> bool:
            if await relay.pending():
                return False
            info = await self.bus.js.stream_info(STREAM)
            return int(info.state.messages) == len(self.received)

        await eventually(settled)
        published = self.received[self._read :]
        self._read = len(self.received)
        return published


def of_type(published: list[Message], cls: type[E]) -> list[E]:
    return [p for p in published if isinstance(p, cls)]


# --- the world: identity's network, supplychain's product ----------------------------------------


@dataclass
class World:
    reviews: Reviews
    identity: Identity
    bus: Bus
    events: EventLog
    service: Service
    maker: str
    retailer: str
    other_retailer: str
    far_retailer: str
    consumer: str
    second_consumer: str
    employee: str
    colleague: str
    product: str

    async def publish(self, event: Message, *, event_id: str | None = None, at: datetime | None = None) -> str:
        """Publish ``event`` as supplychain would (its time ``at``, now by default)."""
        event_id = event_id or new_id()
        headers = cloudevent_headers(
            event_id, event.DESCRIPTOR.full_name, "/collabnet/supplychain", at or datetime.now(UTC)
        )
        await self.bus.publish(subject_of(event), event.SerializeToString(), headers)
        return event_id

    async def register_product(self, maker: str | None = None, revision: int = 1) -> str:
        product_id = new_id("product-")
        await self.publish(
            supplychain.ProductRegistered(
                product_id=product_id,
                sku=product_id[-8:],
                name="Kettle",
                maker_id=maker or self.maker,
                revision=revision,
            )
        )
        await self.wait_for_product(product_id)
        return product_id

    async def wait_for_product(self, product_id: str) -> None:
        async def known() -> bool:
            try:
                await self.reviews.GetRatingSummary(
                    reviews_pb2.GetRatingSummaryRequest(product_id=product_id), metadata=SERVICE
                )
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    return False
                raise
            return True

        await eventually(known)

    async def sync(self) -> None:
        """Wait until reviews has handled every event published so far: the consumer takes the
        stream in order, so once a product registered now is known, everything before it is too."""
        await self.register_product()

    async def list_product(self, product_id: str, retailer: str) -> str:
        listing_id = new_id("listing-")
        await self.publish(
            supplychain.ProductListed(listing_id=listing_id, product_id=product_id, retailer_id=retailer)
        )
        return listing_id

    async def order(
        self,
        customer: str,
        product_id: str | None = None,
        *,
        revision: int = 1,
        retailer: str | None = None,
        delivered: bool = False,
        order_id: str | None = None,
    ) -> str:
        order_id = order_id or new_id("order-")
        line = supplychain.OrderLine(product_id=product_id or self.product, revision=revision, quantity=1)
        shop = retailer or self.retailer
        if delivered:
            await self.publish(
                supplychain.OrderDelivered(order_id=order_id, customer_id=customer, retailer_id=shop, lines=[line])
            )
        else:
            await self.publish(
                supplychain.OrderPlaced(order_id=order_id, customer_id=customer, retailer_id=shop, lines=[line])
            )
        return order_id

    async def submit(
        self,
        author: str,
        rating: int,
        body: str = "Boils a litre in two minutes and the lid closes firmly.",
        *,
        product_id: str | None = None,
        channel: str | None = None,
        title: str = "",
        **extra: Any,
    ) -> reviews_pb2.Review:
        shop = channel or self.retailer
        return await self.reviews.SubmitReview(
            reviews_pb2.SubmitReviewRequest(
                product_id=product_id or self.product,
                author_id=author,
                rating=rating,
                title=title,
                body=body,
                **extra,
            ),
            metadata=partner(shop, acting_for=author),
        )

    async def revise(self, review: reviews_pb2.Review, rating: int, body: str, **extra: Any) -> reviews_pb2.Review:
        return await self.reviews.ReviseReview(
            reviews_pb2.ReviseReviewRequest(review_id=review.review_id, rating=rating, body=body, **extra),
            metadata=partner(review.channel_partner_id, acting_for=review.author_id),
        )

    async def get(self, review_id: str, metadata: Metadata = SERVICE, listing: str = "") -> reviews_pb2.Review:
        return await self.reviews.GetReview(
            reviews_pb2.GetReviewRequest(review_id=review_id, listing_partner_id=listing), metadata=metadata
        )

    async def summary(self, product_id: str | None = None) -> reviews_pb2.RatingSummary:
        return await self.reviews.GetRatingSummary(
            reviews_pb2.GetRatingSummaryRequest(product_id=product_id or self.product), metadata=SERVICE
        )

    async def listed(self, metadata: Metadata = SERVICE, **request: Any) -> list[reviews_pb2.Review]:
        """Every review of a ListReviews, through all its pages."""
        found: list[reviews_pb2.Review] = []
        token = ""
        while True:
            page = await self.reviews.ListReviews(
                reviews_pb2.ListReviewsRequest(page_token=token, **request), metadata=metadata
            )
            found += page.reviews
            token = page.next_page_token
            if not token:
                return found


async def register_person(identity: Identity, name: str) -> str:
    party = await identity.RegisterParty(
        identity_pb2.RegisterPartyRequest(kind=identity_pb2.PARTY_KIND_PERSON, display_name=name), metadata=SERVICE
    )
    return party.party_id


async def join(identity: Identity, name: str, kind: identity_pb2.PartnerKind.ValueType) -> str:
    joined = await identity.JoinNetwork(
        identity_pb2.JoinNetworkRequest(display_name=name, kinds=[kind]), metadata=SERVICE
    )
    return joined.partner_id


async def relate(identity: Identity, source: str, kind: str, target: str, context: str) -> None:
    await identity.EstablishRelationship(
        identity_pb2.EstablishRelationshipRequest(
            from_party_id=source, to_party_id=target, type=kind, context_partner_id=context
        ),
        metadata=SERVICE,
    )


@pytest.fixture
async def world(service: Service, identity_service: Service, nats_server: NatsServer) -> AsyncIterator[World]:
    """Maker M makes product P, listed by retailers R and R3; retailer R2 does not list it.
    Consumers C and D are customers of R; E is an employee of M, and X a partner of E."""
    bus = Bus(nats_server.url, name="reviews-tests")
    await bus.connect()
    await bus.ensure_stream("supplychain")
    log = EventLog(service, bus)
    subscription = await bus.js.subscribe(
        "collabnet.reviews.>", stream=STREAM, cb=log.on_message, ordered_consumer=True
    )
    async with (
        grpc.aio.insecure_channel(service.address) as reviews_channel,
        grpc.aio.insecure_channel(identity_service.address) as identity_channel,
    ):
        identity: Identity = IdentityServiceStub(identity_channel)
        maker = await join(identity, "Maker", identity_pb2.PARTNER_KIND_MANUFACTURER)
        retailer = await join(identity, "Retailer One", identity_pb2.PARTNER_KIND_RETAILER)
        other = await join(identity, "Retailer Two", identity_pb2.PARTNER_KIND_RETAILER)
        far = await join(identity, "Retailer Three", identity_pb2.PARTNER_KIND_RETAILER)
        consumer = await register_person(identity, "Carla Consumer")
        second = await register_person(identity, "Dan Consumer")
        employee = await register_person(identity, "Erik Employee")
        colleague = await register_person(identity, "Xenia Colleague")
        await relate(identity, consumer, "customer_of", retailer, retailer)
        await relate(identity, second, "customer_of", retailer, retailer)
        await relate(identity, employee, "employee_of", maker, maker)
        await relate(identity, colleague, "partner_of", employee, maker)
        world = World(
            reviews=ReviewsServiceStub(reviews_channel),
            identity=identity,
            bus=bus,
            events=log,
            service=service,
            maker=maker,
            retailer=retailer,
            other_retailer=other,
            far_retailer=far,
            consumer=consumer,
            second_consumer=second,
            employee=employee,
            colleague=colleague,
            product="",
        )
        world.product = await world.register_product()
        await world.list_product(world.product, retailer)
        await world.list_product(world.product, far)
        await world.sync()
        await log.drain()
        try:
            yield world
        finally:
            await subscription.unsubscribe()
            await bus.close()
