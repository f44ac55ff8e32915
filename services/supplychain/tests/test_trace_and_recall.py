"""Traceability and recalls on the four-tier network: ore supplier, steel mill, maker, retailer, and
the consumer's home."""

from __future__ import annotations

from pathlib import Path

import grpc
from supplychain_testing import (
    RECALL_CONTACT,
    SERVICE,
    Chain,
    EventLog,
    Identity,
    SupplyChain,
    build_chain,
    consent,
    invalid,
    of_type,
    only,
    partner,
    place,
    precondition,
    refused,
    register_consumer,
    start_identity,
    supplychain_service,
    unused_address,
)

from collabnet.identity.v1.identity_pb2_grpc import IdentityServiceStub
from collabnet.supplychain.v1 import events_pb2
from collabnet.supplychain.v1 import supplychain_pb2 as pb
from collabnet.supplychain.v1.supplychain_pb2_grpc import SupplyChainServiceStub
from collabnet_kit.nats_server import NatsServer
from collabnet_kit.testing import eventually, running


def by_id(trace: pb.Trace) -> dict[str, pb.TraceNode]:
    return {node.node_id: node for node in trace.nodes}


def path_to_root(trace: pb.Trace, node_id: str) -> list[str]:
    nodes = by_id(trace)
    path = [node_id]
    while nodes[path[-1]].parent_node_id:
        path.append(nodes[path[-1]].parent_node_id)
    return path


async def test_trace_downstream_from_the_steel_lot_reaches_the_consumers_order(
    chain: Chain, supplychain: SupplyChain
) -> None:
    trace = await supplychain.TraceDownstream(
        pb.TraceDownstreamRequest(lot_id=chain.steel_lot.lot_id), metadata=partner(chain.maker)
    )
    nodes = by_id(trace)
    order = nodes[f"order/{chain.order.order_id}"]
    assert path_to_root(trace, order.node_id) == [
        f"order/{chain.order.order_id}",
        f"lot/{chain.bike_lot.lot_id}",
        f"lot/{chain.steel_lot.lot_id}",
    ]
    assert (order.depth, order.quantity) == (2, 1)
    assert (order.order.retailer_id, order.order.customer_id) == (chain.retailer, chain.consumer)
    bikes = nodes[f"lot/{chain.bike_lot.lot_id}"]
    assert (bikes.lot.sku, bikes.lot.producer_id, bikes.quantity) == ("BIKE-1", chain.maker, 30)
    assert not trace.truncated
    # The mill may follow its steel downstream, but who the consumer is is not its business.
    as_mill = await supplychain.TraceDownstream(
        pb.TraceDownstreamRequest(lot_id=chain.steel_lot.lot_id), metadata=partner(chain.mill)
    )
    seen = by_id(as_mill)[f"order/{chain.order.order_id}"].order
    assert seen.retailer_id == chain.retailer and not seen.HasField("customer_id")
    # Ore is upstream of the steel: not in a downstream trace of it.
    assert f"lot/{chain.ore_lot.lot_id}" not in nodes


async def test_trace_upstream_from_the_order_reaches_the_ore_supplier_and_the_shipments(
    chain: Chain, supplychain: SupplyChain
) -> None:
    trace = await supplychain.TraceUpstream(
        pb.TraceUpstreamRequest(order_id=chain.order.order_id), metadata=partner(chain.retailer)
    )
    nodes = by_id(trace)
    ore = nodes[f"lot/{chain.ore_lot.lot_id}"]
    assert ore.lot.producer_id == chain.ore_supplier
    assert path_to_root(trace, ore.node_id) == [
        f"lot/{chain.ore_lot.lot_id}",
        f"lot/{chain.steel_lot.lot_id}",
        f"lot/{chain.bike_lot.lot_id}",
        f"line/{chain.order.order_id}/1",
        f"order/{chain.order.order_id}",
    ]
    assert [n.depth for n in trace.nodes] == [0, 1, 2, 3, 4]
    line = nodes[f"line/{chain.order.order_id}/1"]
    assert (line.product.sku, line.product.revision, line.quantity) == ("BIKE-1", 1, 1)
    assert [
        (leg.from_party_id, leg.to_party_id, leg.carrier_id, leg.quantity, leg.status) for leg in ore.lot.shipments
    ] == [(chain.ore_supplier, chain.mill, chain.carrier, 200, pb.LEG_STATUS_DELIVERED)]
    steel = nodes[f"lot/{chain.steel_lot.lot_id}"]
    assert [leg.shipment_id for leg in steel.lot.shipments] == [chain.steel_shipment.shipment_id]
    assert (steel.quantity, ore.quantity) == (30, 200)

    by_lot = await supplychain.TraceUpstream(
        pb.TraceUpstreamRequest(lot_id=chain.bike_lot.lot_id), metadata=partner(chain.maker)
    )
    assert [n.node_id for n in by_lot.nodes] == [
        f"lot/{chain.bike_lot.lot_id}",
        f"lot/{chain.steel_lot.lot_id}",
        f"lot/{chain.ore_lot.lot_id}",
    ]
    by_product = await supplychain.TraceUpstream(
        pb.TraceUpstreamRequest(product_id=chain.bike.product_id), metadata=partner("anyone")
    )
    assert [(n.depth, n.product.sku, n.product.supplier_id, n.quantity, n.unit) for n in by_product.nodes] == [
        (0, "BIKE-1", "", 0, ""),
        (1, "STEEL-1", chain.mill, 3, "kg"),
        (2, "ORE-1", chain.ore_supplier, 2, "kg"),
    ]


async def test_traces_respect_their_limits_and_who_may_see_them(chain: Chain, supplychain: SupplyChain) -> None:
    shallow = await supplychain.TraceUpstream(
        pb.TraceUpstreamRequest(order_id=chain.order.order_id, max_depth=2), metadata=SERVICE
    )
    assert [n.depth for n in shallow.nodes] == [0, 1, 2] and shallow.truncated
    small = await supplychain.TraceDownstream(
        pb.TraceDownstreamRequest(lot_id=chain.ore_lot.lot_id, max_nodes=2), metadata=SERVICE
    )
    assert len(small.nodes) == 2 and small.truncated
    await invalid(supplychain.TraceUpstream(pb.TraceUpstreamRequest(), metadata=SERVICE), "start")
    await invalid(
        supplychain.TraceUpstream(pb.TraceUpstreamRequest(lot_id=chain.ore_lot.lot_id, max_depth=51), metadata=SERVICE),
        "max_depth",
    )
    await invalid(
        supplychain.TraceDownstream(
            pb.TraceDownstreamRequest(lot_id=chain.ore_lot.lot_id, max_nodes=-1), metadata=SERVICE
        ),
        "max_nodes",
    )
    for call in (
        supplychain.TraceDownstream(
            pb.TraceDownstreamRequest(lot_id=chain.steel_lot.lot_id), metadata=partner("stranger")
        ),
        supplychain.TraceUpstream(pb.TraceUpstreamRequest(order_id=chain.order.order_id), metadata=partner(chain.mill)),
        supplychain.TraceUpstream(pb.TraceUpstreamRequest(lot_id="no-such-lot"), metadata=SERVICE),
    ):
        await refused(call, grpc.StatusCode.NOT_FOUND)


async def test_recalling_the_steel_lot_recalls_what_was_built_from_it_blocks_shipping_and_lists_the_order(
    chain: Chain, supplychain: SupplyChain, identity: Identity, events: EventLog
) -> None:
    # A second consumer, who did not consent to be contacted about recalls, has a bike from the lot too.
    olaf = await register_consumer(identity, "Olaf Other", "olaf@example.org", "+49 40 7654321")
    olafs = await place(supplychain, olaf, chain.retailer, "BIKE-1", 1)
    await supplychain.AllocateLot(
        pb.AllocateLotRequest(order_id=olafs.order_id, line_number=1, lot_id=chain.bike_lot.lot_id, quantity=1),
        metadata=partner(chain.retailer),
    )
    # A third order was cancelled: it never got a bike.
    cancelled = await place(supplychain, olaf, chain.retailer, "BIKE-1", 1)
    await supplychain.AllocateLot(
        pb.AllocateLotRequest(order_id=cancelled.order_id, line_number=1, lot_id=chain.bike_lot.lot_id, quantity=1),
        metadata=partner(chain.retailer),
    )
    await supplychain.CancelOrder(pb.CancelOrderRequest(order_id=cancelled.order_id), metadata=partner(chain.retailer))
    await consent(identity, chain.consumer, chain.retailer, RECALL_CONTACT)
    # The maker's home shipment exists already; the recall must stop it leaving.
    shipment = await supplychain.CreateShipment(
        pb.CreateShipmentRequest(shipment=pb.Shipment(order_id=chain.order.order_id, legs=chain.home_legs())),
        metadata=partner(chain.maker),
    )
    await events.drain(supplychain)

    recall = await supplychain.RecallLot(
        pb.RecallLotRequest(lot_id=chain.steel_lot.lot_id, reason="cracked welds"), metadata=partner(chain.mill)
    )
    assert recall.HasField("issue_time")
    assert sorted(recall.lot_ids) == sorted([chain.steel_lot.lot_id, chain.bike_lot.lot_id])
    assert sorted(recall.product_ids) == sorted([chain.steel.product_id, chain.bike.product_id])
    assert {(a.order_id, a.contact_consented) for a in recall.affected_orders} == {
        (chain.order.order_id, True),
        (olafs.order_id, False),
    }
    for lot in (chain.steel_lot, chain.bike_lot):
        got = await supplychain.GetLot(pb.GetLotRequest(lot_id=lot.lot_id), metadata=SERVICE)
        assert (got.status, got.recall_id) == (pb.LOT_STATUS_RECALLED, recall.recall_id)
    ore = await supplychain.GetLot(pb.GetLotRequest(lot_id=chain.ore_lot.lot_id), metadata=SERVICE)
    assert ore.status == pb.LOT_STATUS_RELEASED

    issued = only(await events.drain(supplychain), events_pb2.RecallIssued)
    assert (issued.recall_id, issued.reason) == (recall.recall_id, "cracked welds")
    assert sorted(issued.lot_ids) == sorted(recall.lot_ids)
    notices = {a.order_id: a for a in issued.affected_orders}
    assert set(notices) == {chain.order.order_id, olafs.order_id}
    carla = notices[chain.order.order_id]
    assert (carla.customer_id, carla.retailer_id, carla.email, carla.phone) == (
        chain.consumer,
        chain.retailer,
        "carla@example.org",
        "+49 30 1234567",
    )
    assert not notices[olafs.order_id].HasField("email") and not notices[olafs.order_id].HasField("phone")

    # Shipping anything built from the steel is refused: the waiting leg, and any new shipment.
    await precondition(
        supplychain.RecordLegEvent(
            pb.RecordLegEventRequest(leg_id=shipment.legs[0].leg_id, status=pb.LEG_STATUS_PICKED_UP),
            metadata=partner(chain.carrier),
        ),
        "leg_id",
    )
    error = await precondition(
        supplychain.CreateShipment(
            pb.CreateShipmentRequest(
                shipment=pb.Shipment(
                    legs=[
                        pb.ShipmentLeg(
                            kind=pb.LEG_KIND_MAKER_TO_RETAILER,
                            from_party_id=chain.maker,
                            to_party_id=chain.retailer,
                            carrier_id=chain.carrier,
                            lots=[pb.CarriedLot(lot_id=chain.bike_lot.lot_id, quantity=2)],
                        )
                    ]
                )
            ),
            metadata=partner(chain.maker),
        ),
        "shipment.legs[0].lots[0].lot_id",
    )
    assert "recalled" in (error.details() or "")
    # Nor may it be allocated, built into anything, or released again.
    later = await place(supplychain, chain, chain.retailer, "BIKE-1", 1)
    await precondition(
        supplychain.AllocateLot(
            pb.AllocateLotRequest(order_id=later.order_id, line_number=1, lot_id=chain.bike_lot.lot_id, quantity=1),
            metadata=partner(chain.retailer),
        ),
        "lot_id",
    )
    await precondition(
        supplychain.CreateLot(
            pb.CreateLotRequest(
                product_id=chain.bike.product_id,
                code="BIKE-L2",
                quantity=1,
                inputs=[pb.LotInput(lot_id=chain.steel_lot.lot_id, quantity=1)],
            ),
            metadata=partner(chain.maker),
        ),
        "inputs[0].lot_id",
    )
    await precondition(
        supplychain.UpdateLotStatus(
            pb.UpdateLotStatusRequest(lot_id=chain.bike_lot.lot_id, status=pb.LOT_STATUS_RELEASED),
            metadata=partner(chain.maker),
        ),
        "status",
    )
    await precondition(
        supplychain.RecallLot(
            pb.RecallLotRequest(lot_id=chain.bike_lot.lot_id, reason="again"), metadata=partner(chain.maker)
        ),
        "lot_id",
    )
    # The recall as each party sees it: the retailer its orders, the consumer theirs.
    assert await supplychain.GetRecall(pb.GetRecallRequest(recall_id=recall.recall_id), metadata=SERVICE) == recall
    as_olaf = await supplychain.GetRecall(
        pb.GetRecallRequest(recall_id=recall.recall_id), metadata=partner("app", acting_for=olaf)
    )
    assert [a.order_id for a in as_olaf.affected_orders] == [olafs.order_id]
    as_shop = await supplychain.GetRecall(
        pb.GetRecallRequest(recall_id=recall.recall_id), metadata=partner(chain.retailer)
    )
    assert len(as_shop.affected_orders) == 2
    assert of_type(await events.drain(supplychain), events_pb2.RecallIssued) == []


async def test_a_recall_is_refused_to_others_and_needs_a_reason(chain: Chain, supplychain: SupplyChain) -> None:
    await invalid(
        supplychain.RecallLot(pb.RecallLotRequest(lot_id=chain.steel_lot.lot_id), metadata=partner(chain.mill)),
        "reason",
    )
    await refused(
        supplychain.RecallLot(
            # The maker received the steel, but the mill made it: the mill recalls it.
            pb.RecallLotRequest(lot_id=chain.steel_lot.lot_id, reason="x"),
            metadata=partner(chain.maker),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await refused(
        supplychain.RecallLot(pb.RecallLotRequest(lot_id=chain.steel_lot.lot_id, reason="x"), metadata=partner("x")),
        grpc.StatusCode.NOT_FOUND,
    )
    await refused(
        supplychain.GetRecall(pb.GetRecallRequest(recall_id="no-such-recall"), metadata=SERVICE),
        grpc.StatusCode.NOT_FOUND,
    )
    steel = await supplychain.GetLot(pb.GetLotRequest(lot_id=chain.steel_lot.lot_id), metadata=SERVICE)
    assert steel.status == pb.LOT_STATUS_RELEASED


async def test_a_recall_holds_at_once_and_is_announced_when_identity_answers(
    database_url: str, identity_database_url: str, nats_server: NatsServer, tmp_path: Path
) -> None:
    """Identity is away when the recall is made: the lots are recalled at once, and RecallIssued
    (with the contact data consent allows) follows when identity answers."""
    address = unused_address()
    service = supplychain_service(database_url, nats_server, tmp_path / "supplychain", address)
    first = await start_identity(identity_database_url, nats_server, tmp_path / "identity")
    async with (
        running(first),
        running(service),
        grpc.aio.insecure_channel(first.address) as identity_channel,
        grpc.aio.insecure_channel(service.address) as channel,
    ):
        supplychain = SupplyChainServiceStub(channel)
        identity = IdentityServiceStub(identity_channel)
        chain = await build_chain(supplychain, identity)
        await consent(identity, chain.consumer, chain.retailer, RECALL_CONTACT)
        # Supplychain looks for identity where nobody answers yet.
        recall = await supplychain.RecallLot(
            pb.RecallLotRequest(lot_id=chain.steel_lot.lot_id, reason="cracked welds"), metadata=SERVICE
        )
        assert not recall.HasField("issue_time")
        bikes = await supplychain.GetLot(pb.GetLotRequest(lot_id=chain.bike_lot.lot_id), metadata=SERVICE)
        assert bikes.status == pb.LOT_STATUS_RECALLED
        port = int(address.rsplit(":", 1)[1])
        back = await start_identity(identity_database_url, nats_server, tmp_path / "identity-2", grpc_port=port)
        async with running(back):

            async def issued() -> pb.Recall | None:
                got = await supplychain.GetRecall(pb.GetRecallRequest(recall_id=recall.recall_id), metadata=SERVICE)
                return got if got.HasField("issue_time") else None

            done = await eventually(issued, timeout=30)
            assert [(a.order_id, a.contact_consented) for a in done.affected_orders] == [(chain.order.order_id, True)]
