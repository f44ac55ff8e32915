"""Fixtures and helpers of supplychain's tests: the service (with identity beside it, both in this
process on their own databases and one nats-server), its event stream as a subscriber sees it, and
the four-tier network the service tests share."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.msg import Msg
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from collabnet.common.v1 import common_pb2
from collabnet.identity.v1 import identity_pb2
from collabnet.identity.v1.identity_pb2_grpc import IdentityServiceStub
from collabnet.supplychain.v1 import events_pb2
from collabnet.supplychain.v1 import supplychain_pb2 as pb
from collabnet.supplychain.v1.supplychain_pb2_grpc import SupplyChainServiceStub
from collabnet_identity import app as identity_app
from collabnet_identity import store as identity_store
from collabnet_kit.bus import Bus, stream_name
from collabnet_kit.errors import InvalidArgument
from collabnet_kit.grpc_errors import from_rpc_error
from collabnet_kit.nats_server import NatsServer, free_port
from collabnet_kit.principal import Principal, PrincipalSigner
from collabnet_kit.server import Service
from collabnet_kit.settings import DEV_SIGNING_KEY
from collabnet_kit.testing import eventually, migrated_database_url, running, service_settings
from collabnet_supplychain import domain, store
from collabnet_supplychain.app import NAME, Settings, create

if TYPE_CHECKING:  # the async stubs' types exist only in the typed stubs
    from collabnet.identity.v1.identity_pb2_grpc import IdentityServiceAsyncStub
    from collabnet.supplychain.v1.supplychain_pb2_grpc import SupplyChainServiceAsyncStub

    Identity = IdentityServiceAsyncStub
    SupplyChain = SupplyChainServiceAsyncStub
else:
    Identity = IdentityServiceStub
    SupplyChain = SupplyChainServiceStub

Metadata = tuple[tuple[str, str], ...]
E = TypeVar("E", bound=Message)


def as_principal(principal: Principal) -> Metadata:
    return (("authorization", f"Bearer {PrincipalSigner(DEV_SIGNING_KEY).sign(principal)}"),)


SERVICE = as_principal(Principal(service="tests"))
MAKER_CONTACT = domain.MAKER_CONTACT_PURPOSE
RECALL_CONTACT = domain.RECALL_CONTACT_PURPOSE


def partner(partner_id: str, *, acting_for: str | None = None) -> Metadata:
    return as_principal(Principal(partner_id=partner_id, party_id=acting_for))


# --- small helpers -------------------------------------------------------------------------------


def stamp(value: datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(value)
    return message


def at(message: Timestamp) -> datetime:
    return message.ToDatetime(tzinfo=UTC)


def eur(minor: int) -> common_pb2.Money:
    return common_pb2.Money(currency_code="EUR", amount_minor=minor)


def home(name: str = "Carla Consumer") -> pb.DeliveryContact:
    return pb.DeliveryContact(
        name=name,
        email="carla@example.org",
        phone="+49 30 1234567",
        address=pb.PostalAddress(lines=["Lindenstr. 5"], locality="Berlin", postal_code="10969", region_code="DE"),
    )


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


async def invalid(call: Awaitable[object], *fields: str) -> grpc.aio.AioRpcError:
    """INVALID_ARGUMENT naming exactly ``fields`` (each at least once)."""
    error = await refused(call, grpc.StatusCode.INVALID_ARGUMENT)
    assert sorted(set(violated_fields(error))) == sorted(fields), error.details()
    return error


async def precondition(call: Awaitable[object], field_name: str) -> grpc.aio.AioRpcError:
    """FAILED_PRECONDITION whose message starts with the field at fault."""
    error = await refused(call, grpc.StatusCode.FAILED_PRECONDITION)
    assert (error.details() or "").startswith(f"{field_name}:"), error.details()
    return error


# --- the services ----------------------------------------------------------------------------------


@dataclass
class Services:
    supplychain: Service
    identity: Service


async def start_identity(database_url: str, nats_server: NatsServer, state: Path, **overrides: Any) -> Service:
    settings = service_settings(
        identity_app.Settings, identity_app.NAME, database_url, nats_server.url, state, **overrides
    )
    service: Service = identity_app.create(settings, set_global_telemetry=False)
    return service


def supplychain_service(
    database_url: str,
    nats_server: NatsServer,
    state: Path,
    identity_address: str,
    span_processor: SimpleSpanProcessor | None = None,
) -> Service:
    settings = service_settings(
        Settings,
        NAME,
        database_url,
        nats_server.url,
        state,
        identity_address=identity_address,
        recall_retry_seconds=0.2,
    )
    return create(settings, span_processor=span_processor, set_global_telemetry=False)


identity_database_url = migrated_database_url(identity_store.HISTORY, name="identity_database_url")


database_url = migrated_database_url(store.HISTORY)


@pytest.fixture
async def services(
    database_url: str,
    identity_database_url: str,
    nats_server: NatsServer,
    tmp_path: Path,
    span_processor: SimpleSpanProcessor,
) -> AsyncIterator[Services]:
    identity = await start_identity(identity_database_url, nats_server, tmp_path / "identity")
    async with running(identity):
        service = supplychain_service(
            database_url, nats_server, tmp_path / "supplychain", identity.address, span_processor
        )
        async with running(service):
            yield Services(service, identity)


@pytest.fixture
async def supplychain(services: Services) -> AsyncIterator[SupplyChain]:
    async with grpc.aio.insecure_channel(services.supplychain.address) as channel:
        yield SupplyChainServiceStub(channel)


@pytest.fixture
async def identity(services: Services) -> AsyncIterator[Identity]:
    async with grpc.aio.insecure_channel(services.identity.address) as channel:
        yield IdentityServiceStub(channel)


def unused_address() -> str:
    return f"127.0.0.1:{free_port()}"


# --- the events the service publishes --------------------------------------------------------------

EVENT_TYPES: dict[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        events_pb2.ProductRegistered,
        events_pb2.ProductRevised,
        events_pb2.ProductListed,
        events_pb2.ProductDelisted,
        events_pb2.SupplyNetworkChanged,
        events_pb2.OrderPlaced,
        events_pb2.OrderDelivered,
        events_pb2.OrderCancelled,
        events_pb2.ShipmentDelayed,
        events_pb2.RecallIssued,
    )
}
STREAM = stream_name(NAME)


@dataclass(frozen=True)
class Published:
    """One message of the supplychain stream, decoded by its ``ce-type``."""

    subject: str
    type: str
    id: str
    source: str
    event: Message


@dataclass
class EventLog:
    """Every message of the supplychain stream, in stream order, as a real subscriber receives it."""

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

    async def drain(self, supplychain: SupplyChain) -> list[Published]:
        """The events published since the last drain.

        Registers a marker product and waits for its ProductRegistered: the relay publishes in commit
        order, so every event of an earlier call has arrived by then. The marker is not returned.
        """
        marker = await supplychain.RegisterProduct(
            pb.RegisterProductRequest(
                sku=f"MARKER-{uuid.uuid4().hex[:12]}",
                name="event marker",
                category="markers",
                kind=pb.PRODUCT_KIND_COMPONENT,
                maker_id="marker",
            ),
            metadata=SERVICE,
        )

        async def after_marker() -> int | None:
            for index in range(self._read, len(self.received)):
                event = self.received[index].event
                if isinstance(event, events_pb2.ProductRegistered) and event.product_id == marker.product_id:
                    return index + 1  # never 0, which `eventually` would refuse
            return None

        end = await eventually(after_marker)
        published = self.received[self._read : end - 1]
        self._read = end
        return published


def of_type(published: list[Published], cls: type[E]) -> list[E]:
    """The events of one type, each checked to be on its subject from this service."""
    found = []
    for message in published:
        if message.type == cls.DESCRIPTOR.full_name:
            assert message.subject == f"collabnet.supplychain.v1.{cls.DESCRIPTOR.name}"
            assert message.source == "/collabnet/supplychain"
            assert isinstance(message.event, cls)
            found.append(message.event)
    return found


def only(published: list[Published], cls: type[E]) -> E:
    """The single event of ``published``, checked to be a ``cls``."""
    assert [p.type for p in published] == [cls.DESCRIPTOR.full_name], [p.type for p in published]
    (event,) = of_type(published, cls)
    return event


@pytest.fixture
async def events(services: Services, nats_server: NatsServer) -> AsyncIterator[EventLog]:
    log = EventLog()
    bus = Bus(nats_server.url, name="supplychain-tests")
    await bus.connect()
    subscription = await bus.js.subscribe(
        "collabnet.supplychain.>", stream=STREAM, cb=log.on_message, ordered_consumer=True
    )
    try:
        yield log
    finally:
        await subscription.unsubscribe()
        await bus.close()


# --- the four-tier network -------------------------------------------------------------------------


@dataclass
class Chain:
    """Ore supplier O mines ore; steel mill S makes steel from it; maker M makes bikes from steel;
    retailer R sells bikes; consumer C orders one, to be brought home by carrier K.

    Built: each party (in identity), the three products with their bills of materials, R's listing,
    a lot of each (ore -> steel -> bike), the ore and steel shipped and delivered upstream, and C's
    order placed through R acting for C, confirmed, and allocated the bike lot. Not yet shipped.
    """

    ore_supplier: str
    mill: str
    maker: str
    retailer: str
    carrier: str
    consumer: str
    ore: pb.Product
    steel: pb.Product
    bike: pb.Product
    listing: pb.Listing
    ore_lot: pb.Lot
    steel_lot: pb.Lot
    bike_lot: pb.Lot
    ore_shipment: pb.Shipment
    steel_shipment: pb.Shipment
    order: pb.Order

    @property
    def for_consumer(self) -> Metadata:
        """The retailer, acting for the consumer."""
        return partner(self.retailer, acting_for=self.consumer)

    def home_legs(self) -> list[pb.ShipmentLeg]:
        return [
            pb.ShipmentLeg(
                kind=pb.LEG_KIND_MAKER_TO_RETAILER,
                from_party_id=self.maker,
                to_party_id=self.retailer,
                carrier_id=self.carrier,
            ),
            pb.ShipmentLeg(
                kind=pb.LEG_KIND_RETAILER_TO_CONSUMER,
                from_party_id=self.retailer,
                to_party_id=self.consumer,
                carrier_id=self.carrier,
            ),
        ]


async def join(identity: Identity, name: str, kind: identity_pb2.PartnerKind.ValueType) -> str:
    joined = await identity.JoinNetwork(
        identity_pb2.JoinNetworkRequest(display_name=name, kinds=[kind]), metadata=SERVICE
    )
    return joined.partner_id


async def register_consumer(identity: Identity, name: str, email: str, phone: str) -> str:
    party = await identity.RegisterParty(
        identity_pb2.RegisterPartyRequest(
            kind=identity_pb2.PARTY_KIND_PERSON, display_name=name, email=email, phone=phone
        ),
        metadata=SERVICE,
    )
    return party.party_id


async def consent(identity: Identity, party_id: str, partner_id: str, purpose: str) -> None:
    await identity.GrantConsent(
        identity_pb2.GrantConsentRequest(party_id=party_id, partner_id=partner_id, purpose=purpose, source="web form"),
        metadata=partner(partner_id, acting_for=party_id),
    )


async def register(
    supplychain: SupplyChain, maker: str, sku: str, name: str, kind: pb.ProductKind.ValueType, category: str = "bikes"
) -> pb.Product:
    return await supplychain.RegisterProduct(
        pb.RegisterProductRequest(sku=sku, name=name, category=category, kind=kind), metadata=partner(maker)
    )


async def set_bom(supplychain: SupplyChain, product: pb.Product, *items: pb.BomItem) -> pb.BillOfMaterials:
    return await supplychain.SetBillOfMaterials(
        pb.SetBillOfMaterialsRequest(product_id=product.product_id, items=items), metadata=partner(product.maker_id)
    )


async def make_lot(
    supplychain: SupplyChain, product: pb.Product, code: str, quantity: int, *inputs: tuple[pb.Lot, int]
) -> pb.Lot:
    return await supplychain.CreateLot(
        pb.CreateLotRequest(
            product_id=product.product_id,
            code=code,
            quantity=quantity,
            inputs=[pb.LotInput(lot_id=lot.lot_id, quantity=q) for lot, q in inputs],
        ),
        metadata=partner(product.maker_id),
    )


async def advance(
    supplychain: SupplyChain, leg_id: str, *statuses: pb.LegStatus.ValueType, by: Metadata
) -> pb.Shipment:
    shipment = None
    for status in statuses:
        shipment = await supplychain.RecordLegEvent(pb.RecordLegEventRequest(leg_id=leg_id, status=status), metadata=by)
    assert shipment is not None
    return shipment


async def ship_upstream(
    supplychain: SupplyChain, lot: pb.Lot, quantity: int, sender: str, receiver: str, carrier: str
) -> pb.Shipment:
    """One leg from supplier to maker carrying ``quantity`` of ``lot``, delivered."""
    shipment = await supplychain.CreateShipment(
        pb.CreateShipmentRequest(
            shipment=pb.Shipment(
                legs=[
                    pb.ShipmentLeg(
                        kind=pb.LEG_KIND_SUPPLIER_TO_MAKER,
                        from_party_id=sender,
                        to_party_id=receiver,
                        carrier_id=carrier,
                        lots=[pb.CarriedLot(lot_id=lot.lot_id, quantity=quantity)],
                    )
                ]
            )
        ),
        metadata=partner(sender),
    )
    return await advance(
        supplychain,
        shipment.legs[0].leg_id,
        pb.LEG_STATUS_PICKED_UP,
        pb.LEG_STATUS_DELIVERED,
        by=partner(carrier),
    )


async def place(
    supplychain: SupplyChain, chain_or_customer: Chain | str, retailer: str, sku: str, quantity: int, key: str = ""
) -> pb.Order:
    customer = chain_or_customer.consumer if isinstance(chain_or_customer, Chain) else chain_or_customer
    return await supplychain.PlaceOrder(
        pb.PlaceOrderRequest(
            customer_id=customer,
            retailer_id=retailer,
            lines=[pb.PlaceOrderRequest.Line(sku=sku, quantity=quantity)],
            currency_code="EUR",
            contact=home(),
            idempotency_key=key,
        ),
        metadata=partner(retailer, acting_for=customer),
    )


async def build_chain(supplychain: SupplyChain, identity: Identity) -> Chain:
    ore_supplier = await join(identity, "Ore Supplier", identity_pb2.PARTNER_KIND_SUPPLIER)
    mill = await join(identity, "Steel Mill", identity_pb2.PARTNER_KIND_SUPPLIER)
    maker = await join(identity, "Bike Maker", identity_pb2.PARTNER_KIND_MANUFACTURER)
    retailer = await join(identity, "Bike Shop", identity_pb2.PARTNER_KIND_RETAILER)
    carrier = await join(identity, "Carrier", identity_pb2.PARTNER_KIND_CARRIER)
    consumer = await register_consumer(identity, "Carla Consumer", "carla@example.org", "+49 30 1234567")

    ore = await register(supplychain, ore_supplier, "ORE-1", "Iron ore", pb.PRODUCT_KIND_RAW_MATERIAL, "ores")
    steel = await register(supplychain, mill, "STEEL-1", "Steel tube", pb.PRODUCT_KIND_COMPONENT, "steel")
    bike = await register(supplychain, maker, "BIKE-1", "City bike", pb.PRODUCT_KIND_FINISHED_GOOD)
    await set_bom(
        supplychain, steel, pb.BomItem(component_id=ore.product_id, supplier_id=ore_supplier, quantity=2, unit="kg")
    )
    await set_bom(supplychain, bike, pb.BomItem(component_id=steel.product_id, supplier_id=mill, quantity=3, unit="kg"))
    listing = await supplychain.CreateListing(
        pb.CreateListingRequest(product_id=bike.product_id, price=eur(49_900), available=True),
        metadata=partner(retailer),
    )

    ore_lot = await make_lot(supplychain, ore, "ORE-L1", 1000)
    ore_shipment = await ship_upstream(supplychain, ore_lot, 200, ore_supplier, mill, carrier)
    steel_lot = await make_lot(supplychain, steel, "STEEL-L1", 100, (ore_lot, 200))
    steel_shipment = await ship_upstream(supplychain, steel_lot, 30, mill, maker, carrier)
    bike_lot = await make_lot(supplychain, bike, "BIKE-L1", 10, (steel_lot, 30))

    order = await place(supplychain, consumer, retailer, "BIKE-1", 1, key="first-order")
    await supplychain.ConfirmOrder(pb.ConfirmOrderRequest(order_id=order.order_id), metadata=partner(retailer))
    order = await supplychain.AllocateLot(
        pb.AllocateLotRequest(order_id=order.order_id, line_number=1, lot_id=bike_lot.lot_id, quantity=1),
        metadata=partner(retailer),
    )
    return Chain(
        ore_supplier=ore_supplier,
        mill=mill,
        maker=maker,
        retailer=retailer,
        carrier=carrier,
        consumer=consumer,
        ore=ore,
        steel=steel,
        bike=bike,
        listing=listing,
        ore_lot=ore_lot,
        steel_lot=steel_lot,
        bike_lot=bike_lot,
        ore_shipment=ore_shipment,
        steel_shipment=steel_shipment,
        order=order,
    )


@pytest.fixture
async def chain(supplychain: SupplyChain, identity: Identity) -> Chain:
    return await build_chain(supplychain, identity)
