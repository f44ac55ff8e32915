"""Production lots, allocating them to orders, and shipments leg by leg to the consumer's home."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
from supplychain_testing import (
    SERVICE,
    Chain,
    EventLog,
    SupplyChain,
    advance,
    at,
    invalid,
    make_lot,
    of_type,
    partner,
    place,
    precondition,
    refused,
    stamp,
)

from collabnet.supplychain.v1 import events_pb2
from collabnet.supplychain.v1 import supplychain_pb2 as pb


async def test_a_lot_records_what_it_was_built_from_and_what_is_left_of_its_inputs(
    chain: Chain, supplychain: SupplyChain
) -> None:
    steel = await supplychain.GetLot(pb.GetLotRequest(lot_id=chain.steel_lot.lot_id), metadata=partner(chain.mill))
    assert (steel.quantity, steel.available_quantity, steel.status) == (100, 70, pb.LOT_STATUS_RELEASED)
    assert [(i.lot_id, i.quantity) for i in steel.inputs] == [(chain.ore_lot.lot_id, 200)]
    assert (steel.revision, steel.producer_id, steel.code) == (1, chain.mill, "STEEL-L1")
    bikes = await supplychain.GetLot(pb.GetLotRequest(lot_id=chain.bike_lot.lot_id), metadata=SERVICE)
    assert bikes.available_quantity == 9  # one allocated to the order
    produced = datetime.now(UTC) - timedelta(days=2)
    second = await supplychain.CreateLot(
        pb.CreateLotRequest(
            product_id=chain.steel.product_id,
            code="STEEL-L2",
            quantity=50,
            inputs=[pb.LotInput(lot_id=chain.ore_lot.lot_id, quantity=100)],
            status=pb.LOT_STATUS_ON_HOLD,
            produce_time=stamp(produced),
        ),
        metadata=partner(chain.mill),
    )
    assert second.status == pb.LOT_STATUS_ON_HOLD
    assert abs((at(second.produce_time) - produced).total_seconds()) < 1
    ore = await supplychain.GetLot(pb.GetLotRequest(lot_id=chain.ore_lot.lot_id), metadata=partner(chain.ore_supplier))
    assert ore.available_quantity == 700
    listed = await supplychain.ListLots(pb.ListLotsRequest(product_id=chain.steel.product_id), metadata=SERVICE)
    assert sorted(x.code for x in listed.lots) == ["STEEL-L1", "STEEL-L2"]
    held = await supplychain.ListLots(
        pb.ListLotsRequest(producer_id=chain.mill, status=pb.LOT_STATUS_ON_HOLD), metadata=partner(chain.mill)
    )
    assert [x.lot_id for x in held.lots] == [second.lot_id]
    # A partner lists only the lots it produced or that are of products it makes.
    theirs = await supplychain.ListLots(pb.ListLotsRequest(), metadata=partner(chain.retailer))
    assert theirs.lots == []
    await refused(
        supplychain.GetLot(pb.GetLotRequest(lot_id=chain.steel_lot.lot_id), metadata=partner("stranger")),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_bad_lots_are_refused_naming_the_field_and_write_nothing(chain: Chain, supplychain: SupplyChain) -> None:
    def steel(
        *inputs: tuple[str, int], code: str = "STEEL-L9", quantity: int = 10, revision: int = 0
    ) -> pb.CreateLotRequest:
        return pb.CreateLotRequest(
            product_id=chain.steel.product_id,
            code=code,
            quantity=quantity,
            revision=revision,
            inputs=[pb.LotInput(lot_id=lot, quantity=q) for lot, q in inputs],
        )

    mill = partner(chain.mill)
    await invalid(supplychain.CreateLot(steel(quantity=0), metadata=mill), "quantity")
    await invalid(supplychain.CreateLot(steel(quantity=-5, code=""), metadata=mill), "quantity", "code")
    await invalid(supplychain.CreateLot(steel(("no-such-lot", 1)), metadata=mill), "inputs[0].lot_id")
    await invalid(supplychain.CreateLot(steel((chain.ore_lot.lot_id, 0)), metadata=mill), "inputs[0].quantity")
    # Bikes are not in the bill of materials of steel.
    await invalid(supplychain.CreateLot(steel((chain.bike_lot.lot_id, 1)), metadata=mill), "inputs[0].lot_id")
    await invalid(supplychain.CreateLot(steel(revision=2), metadata=mill), "revision")
    await precondition(supplychain.CreateLot(steel((chain.ore_lot.lot_id, 801)), metadata=mill), "inputs[0].lot_id")
    await refused(supplychain.CreateLot(steel(code="STEEL-L1"), metadata=mill), grpc.StatusCode.ALREADY_EXISTS)
    await refused(supplychain.CreateLot(steel(), metadata=partner(chain.maker)), grpc.StatusCode.PERMISSION_DENIED)
    await supplychain.UpdateLotStatus(
        pb.UpdateLotStatusRequest(lot_id=chain.ore_lot.lot_id, status=pb.LOT_STATUS_QUARANTINED, reason="assay"),
        metadata=partner(chain.ore_supplier),
    )
    await precondition(supplychain.CreateLot(steel((chain.ore_lot.lot_id, 1)), metadata=mill), "inputs[0].lot_id")
    listed = await supplychain.ListLots(pb.ListLotsRequest(product_id=chain.steel.product_id), metadata=SERVICE)
    assert [x.code for x in listed.lots] == ["STEEL-L1"]
    ore = await supplychain.GetLot(pb.GetLotRequest(lot_id=chain.ore_lot.lot_id), metadata=SERVICE)
    assert (ore.available_quantity, ore.status, ore.status_reason) == (800, pb.LOT_STATUS_QUARANTINED, "assay")


async def test_only_released_lots_are_allocated_and_allocation_stays_within_line_and_lot(
    chain: Chain, supplychain: SupplyChain
) -> None:
    order = await place(supplychain, chain, chain.retailer, "BIKE-1", 3)
    shop = partner(chain.retailer)

    def allocate(lot: pb.Lot, quantity: int, line: int = 1) -> pb.AllocateLotRequest:
        return pb.AllocateLotRequest(order_id=order.order_id, line_number=line, lot_id=lot.lot_id, quantity=quantity)

    await supplychain.UpdateLotStatus(
        pb.UpdateLotStatusRequest(lot_id=chain.bike_lot.lot_id, status=pb.LOT_STATUS_ON_HOLD, reason="inspection"),
        metadata=partner(chain.maker),
    )
    await precondition(supplychain.AllocateLot(allocate(chain.bike_lot, 1), metadata=shop), "lot_id")
    await supplychain.UpdateLotStatus(
        pb.UpdateLotStatusRequest(lot_id=chain.bike_lot.lot_id, status=pb.LOT_STATUS_RELEASED),
        metadata=partner(chain.maker),
    )
    await invalid(supplychain.AllocateLot(allocate(chain.bike_lot, 0), metadata=shop), "quantity")
    await invalid(supplychain.AllocateLot(allocate(chain.bike_lot, 1, line=2), metadata=shop), "line_number")
    await invalid(supplychain.AllocateLot(allocate(chain.steel_lot, 1), metadata=shop), "lot_id")
    await precondition(supplychain.AllocateLot(allocate(chain.bike_lot, 4), metadata=shop), "quantity")
    await refused(
        supplychain.AllocateLot(allocate(chain.bike_lot, 1), metadata=partner(chain.mill)), grpc.StatusCode.NOT_FOUND
    )
    await supplychain.AllocateLot(allocate(chain.bike_lot, 2), metadata=shop)
    # The maker may allocate lots of its own products to an order for them.
    allocated = await supplychain.AllocateLot(allocate(chain.bike_lot, 1), metadata=partner(chain.maker))
    assert [(a.lot_id, a.quantity) for a in allocated.lines[0].allocations] == [(chain.bike_lot.lot_id, 3)]
    lot = await supplychain.GetLot(pb.GetLotRequest(lot_id=chain.bike_lot.lot_id), metadata=SERVICE)
    assert lot.available_quantity == 6
    await supplychain.CancelOrder(pb.CancelOrderRequest(order_id=order.order_id), metadata=shop)
    lot = await supplychain.GetLot(pb.GetLotRequest(lot_id=chain.bike_lot.lot_id), metadata=SERVICE)
    assert lot.available_quantity == 9  # what the cancelled order held is free again
    await precondition(supplychain.AllocateLot(allocate(chain.bike_lot, 1), metadata=shop), "order_id")


async def test_lot_status_changes_are_the_producers_and_recalled_is_not_one_of_them(
    chain: Chain, supplychain: SupplyChain
) -> None:
    await invalid(
        supplychain.UpdateLotStatus(
            pb.UpdateLotStatusRequest(lot_id=chain.bike_lot.lot_id, status=pb.LOT_STATUS_RECALLED),
            metadata=partner(chain.maker),
        ),
        "status",
    )
    await refused(
        supplychain.UpdateLotStatus(
            pb.UpdateLotStatusRequest(lot_id=chain.bike_lot.lot_id, status=pb.LOT_STATUS_ON_HOLD),
            metadata=partner(chain.retailer),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await refused(
        supplychain.UpdateLotStatus(
            pb.UpdateLotStatusRequest(lot_id=chain.bike_lot.lot_id, status=pb.LOT_STATUS_ON_HOLD),
            metadata=partner("stranger"),
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_an_order_travels_home_leg_by_leg_and_is_delivered_when_its_last_leg_is(
    chain: Chain, supplychain: SupplyChain, events: EventLog
) -> None:
    await events.drain(supplychain)
    shipment = await supplychain.CreateShipment(
        pb.CreateShipmentRequest(shipment=pb.Shipment(order_id=chain.order.order_id, legs=chain.home_legs())),
        metadata=partner(chain.retailer),
    )
    assert shipment.order_id == chain.order.order_id
    assert [(leg.sequence, leg.kind, leg.status) for leg in shipment.legs] == [
        (1, pb.LEG_KIND_MAKER_TO_RETAILER, pb.LEG_STATUS_CREATED),
        (2, pb.LEG_KIND_RETAILER_TO_CONSUMER, pb.LEG_STATUS_CREATED),
    ]
    # Each leg carries what the order holds, when it names nothing itself.
    assert [[(c.lot_id, c.quantity) for c in leg.lots] for leg in shipment.legs] == [
        [(chain.bike_lot.lot_id, 1)],
        [(chain.bike_lot.lot_id, 1)],
    ]
    to_shop, to_home = (leg.leg_id for leg in shipment.legs)
    carrier = partner(chain.carrier)
    await precondition(
        supplychain.RecordLegEvent(
            pb.RecordLegEventRequest(leg_id=to_home, status=pb.LEG_STATUS_PICKED_UP), metadata=carrier
        ),
        "status",
    )
    await precondition(
        supplychain.RecordLegEvent(
            pb.RecordLegEventRequest(leg_id=to_shop, status=pb.LEG_STATUS_DELIVERED), metadata=carrier
        ),
        "status",
    )
    await advance(supplychain, to_shop, pb.LEG_STATUS_PICKED_UP, by=carrier)
    shipped = await supplychain.GetOrder(pb.GetOrderRequest(order_id=chain.order.order_id), metadata=SERVICE)
    assert (shipped.status, shipped.shipment_id) == (pb.ORDER_STATUS_SHIPPED, shipment.shipment_id)
    await precondition(
        supplychain.CancelOrder(pb.CancelOrderRequest(order_id=chain.order.order_id), metadata=partner(chain.retailer)),
        "status",
    )
    expected = datetime.now(UTC) + timedelta(days=1)
    await invalid(
        supplychain.RecordLegEvent(
            pb.RecordLegEventRequest(leg_id=to_shop, status=pb.LEG_STATUS_DELAYED), metadata=carrier
        ),
        "expected_time",
    )
    delayed = await supplychain.RecordLegEvent(
        pb.RecordLegEventRequest(
            leg_id=to_shop, status=pb.LEG_STATUS_DELAYED, note="storm", expected_time=stamp(expected)
        ),
        metadata=carrier,
    )
    assert delayed.legs[0].status == pb.LEG_STATUS_DELAYED
    await advance(supplychain, to_shop, pb.LEG_STATUS_IN_TRANSIT, pb.LEG_STATUS_DELIVERED, by=carrier)
    await invalid(
        supplychain.RecordLegEvent(
            pb.RecordLegEventRequest(
                leg_id=to_home,
                status=pb.LEG_STATUS_PICKED_UP,
                event_time=stamp(datetime.now(UTC) - timedelta(days=3)),
            ),
            metadata=carrier,
        ),
        "event_time",
    )
    await advance(supplychain, to_home, pb.LEG_STATUS_PICKED_UP, pb.LEG_STATUS_IN_TRANSIT, by=carrier)
    midway = await supplychain.GetOrder(pb.GetOrderRequest(order_id=chain.order.order_id), metadata=SERVICE)
    assert midway.status == pb.ORDER_STATUS_SHIPPED
    consumer_app = partner("consumer-app", acting_for=chain.consumer)
    home = await advance(supplychain, to_home, pb.LEG_STATUS_DELIVERED, by=consumer_app)
    assert [e.status for e in home.legs[0].events] == [
        pb.LEG_STATUS_CREATED,
        pb.LEG_STATUS_PICKED_UP,
        pb.LEG_STATUS_DELAYED,
        pb.LEG_STATUS_IN_TRANSIT,
        pb.LEG_STATUS_DELIVERED,
    ]
    for leg in home.legs:
        times = [at(e.event_time) for e in leg.events]
        assert times == sorted(times)
    assert home.legs[0].events[2].note == "storm" and home.legs[0].events[2].recorded_by == chain.carrier
    delivered = await supplychain.GetOrder(pb.GetOrderRequest(order_id=chain.order.order_id), metadata=SERVICE)
    assert delivered.status == pb.ORDER_STATUS_DELIVERED and delivered.HasField("deliver_time")
    await precondition(
        supplychain.RecordLegEvent(
            pb.RecordLegEventRequest(leg_id=to_home, status=pb.LEG_STATUS_IN_TRANSIT), metadata=carrier
        ),
        "status",
    )
    await precondition(
        supplychain.CancelOrder(pb.CancelOrderRequest(order_id=chain.order.order_id), metadata=partner(chain.retailer)),
        "status",
    )

    published = await events.drain(supplychain)
    assert [p.type.rsplit(".", 1)[1] for p in published] == ["ShipmentDelayed", "OrderDelivered"]
    (delay,) = of_type(published, events_pb2.ShipmentDelayed)
    assert (delay.shipment_id, delay.leg_id, delay.order_id, delay.carrier_id, delay.reason) == (
        shipment.shipment_id,
        to_shop,
        chain.order.order_id,
        chain.carrier,
        "storm",
    )
    assert abs((at(delay.expected_time) - expected).total_seconds()) < 1
    (arrived,) = of_type(published, events_pb2.OrderDelivered)
    assert (arrived.order_id, arrived.customer_id, arrived.retailer_id) == (
        chain.order.order_id,
        chain.consumer,
        chain.retailer,
    )
    assert [(x.product_id, x.revision, x.quantity, x.unit_price.amount_minor) for x in arrived.lines] == [
        (chain.bike.product_id, 1, 1, 49_900)
    ]

    by_order = await supplychain.ListShipments(
        pb.ListShipmentsRequest(order_id=chain.order.order_id), metadata=chain.for_consumer
    )
    assert [s.shipment_id for s in by_order.shipments] == [shipment.shipment_id]
    by_lot = await supplychain.ListShipments(pb.ListShipmentsRequest(lot_id=chain.steel_lot.lot_id), metadata=SERVICE)
    assert [s.shipment_id for s in by_lot.shipments] == [chain.steel_shipment.shipment_id]
    mine = await supplychain.ListShipments(pb.ListShipmentsRequest(), metadata=partner(chain.ore_supplier))
    assert [s.shipment_id for s in mine.shipments] == [chain.ore_shipment.shipment_id]
    got = await supplychain.GetShipment(pb.GetShipmentRequest(shipment_id=shipment.shipment_id), metadata=carrier)
    assert got == home
    await refused(
        supplychain.GetShipment(pb.GetShipmentRequest(shipment_id=shipment.shipment_id), metadata=partner(chain.mill)),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_bad_shipments_are_refused_naming_the_field_and_write_nothing(
    chain: Chain, supplychain: SupplyChain
) -> None:
    shop = partner(chain.retailer)

    def ship(order_id: str, *legs: pb.ShipmentLeg) -> pb.CreateShipmentRequest:
        return pb.CreateShipmentRequest(shipment=pb.Shipment(order_id=order_id, legs=legs))

    to_shop, to_home = chain.home_legs()
    wrong_door = pb.ShipmentLeg()
    wrong_door.CopyFrom(to_home)
    wrong_door.to_party_id = "someone-else"
    await invalid(
        supplychain.CreateShipment(ship(chain.order.order_id, to_shop, wrong_door), metadata=shop),
        "shipment.legs[1].to_party_id",
    )
    await invalid(supplychain.CreateShipment(ship(chain.order.order_id), metadata=shop), "shipment.legs")
    await invalid(
        supplychain.CreateShipment(ship(chain.order.order_id, to_home, to_shop), metadata=shop),
        "shipment.legs[0].kind",
        "shipment.legs[1].from_party_id",
        "shipment.legs[1].kind",
        "shipment.legs[1].to_party_id",
    )
    await invalid(
        supplychain.CreateShipment(
            ship(
                chain.order.order_id,
                to_shop,
                pb.ShipmentLeg(
                    kind=pb.LEG_KIND_RETAILER_TO_CONSUMER,
                    from_party_id=chain.retailer,
                    to_party_id=chain.consumer,
                    carrier_id=chain.carrier,
                    lots=[pb.CarriedLot(lot_id=chain.steel_lot.lot_id, quantity=1)],
                ),
            ),
            metadata=shop,
        ),
        "shipment.legs[1].lots[0].lot_id",
    )
    unconfirmed = await place(supplychain, chain, chain.retailer, "BIKE-1", 1)
    await precondition(
        supplychain.CreateShipment(ship(unconfirmed.order_id, to_home), metadata=shop), "shipment.order_id"
    )
    await supplychain.ConfirmOrder(pb.ConfirmOrderRequest(order_id=unconfirmed.order_id), metadata=shop)
    await precondition(
        supplychain.CreateShipment(ship(unconfirmed.order_id, to_home), metadata=shop), "shipment.order_id"
    )
    await refused(
        supplychain.CreateShipment(
            ship(chain.order.order_id, to_shop, to_home), metadata=partner("consumer-app", acting_for=chain.consumer)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    # Upstream legs carry lots and never go to a home.
    await invalid(
        supplychain.CreateShipment(
            ship(
                "",
                pb.ShipmentLeg(
                    kind=pb.LEG_KIND_SUPPLIER_TO_MAKER,
                    from_party_id=chain.mill,
                    to_party_id=chain.maker,
                    carrier_id="",
                    lots=[pb.CarriedLot(lot_id=chain.steel_lot.lot_id, quantity=0)],
                ),
                pb.ShipmentLeg(
                    kind=pb.LEG_KIND_RETAILER_TO_CONSUMER,
                    from_party_id=chain.maker,
                    to_party_id=chain.consumer,
                    carrier_id=chain.carrier,
                ),
            ),
            metadata=partner(chain.mill),
        ),
        "shipment.legs[0].carrier_id",
        "shipment.legs[0].lots[0].quantity",
        "shipment.legs[1].kind",
        "shipment.legs[1].lots",
    )
    await invalid(
        supplychain.CreateShipment(
            ship(
                "",
                pb.ShipmentLeg(
                    kind=pb.LEG_KIND_SUPPLIER_TO_MAKER,
                    from_party_id=chain.mill,
                    to_party_id=chain.maker,
                    carrier_id=chain.carrier,
                    lots=[pb.CarriedLot(lot_id="no-such-lot", quantity=1)],
                ),
            ),
            metadata=partner(chain.mill),
        ),
        "shipment.legs[0].lots[0].lot_id",
    )
    every = await supplychain.ListShipments(pb.ListShipmentsRequest(), metadata=SERVICE)
    assert sorted(s.shipment_id for s in every.shipments) == sorted(
        [chain.ore_shipment.shipment_id, chain.steel_shipment.shipment_id]
    )
    first = await supplychain.CreateShipment(ship(chain.order.order_id, to_shop, to_home), metadata=shop)
    await refused(
        supplychain.CreateShipment(ship(chain.order.order_id, to_shop, to_home), metadata=shop),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    await refused(
        supplychain.RecordLegEvent(
            pb.RecordLegEventRequest(leg_id=first.legs[0].leg_id, status=pb.LEG_STATUS_PICKED_UP), metadata=partner("x")
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    await invalid(
        supplychain.RecordLegEvent(
            pb.RecordLegEventRequest(leg_id=first.legs[0].leg_id, status=pb.LEG_STATUS_CREATED),
            metadata=partner(chain.carrier),
        ),
        "status",
    )
    cancelled = await supplychain.CancelOrder(pb.CancelOrderRequest(order_id=chain.order.order_id), metadata=shop)
    assert cancelled.status == pb.ORDER_STATUS_CANCELLED
    await precondition(
        supplychain.RecordLegEvent(
            pb.RecordLegEventRequest(leg_id=first.legs[0].leg_id, status=pb.LEG_STATUS_PICKED_UP),
            metadata=partner(chain.carrier),
        ),
        "status",
    )


async def test_a_lot_may_be_built_from_several_lots_of_one_component(chain: Chain, supplychain: SupplyChain) -> None:
    ore2 = await make_lot(supplychain, chain.ore, "ORE-L2", 500)
    steel2 = await make_lot(supplychain, chain.steel, "STEEL-L2", 40, (chain.ore_lot, 50), (ore2, 30))
    assert sorted((i.lot_id, i.quantity) for i in steel2.inputs) == sorted(
        [(chain.ore_lot.lot_id, 50), (ore2.lot_id, 30)]
    )
