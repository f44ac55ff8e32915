"""Listings and orders: prices, statuses, idempotent placing, and who sees what."""

from __future__ import annotations

import asyncio

import grpc
from supplychain_testing import (
    MAKER_CONTACT,
    SERVICE,
    Chain,
    EventLog,
    Identity,
    SupplyChain,
    consent,
    eur,
    home,
    invalid,
    of_type,
    only,
    partner,
    place,
    precondition,
    refused,
    register,
    register_consumer,
)

from collabnet.common.v1 import common_pb2
from collabnet.supplychain.v1 import events_pb2
from collabnet.supplychain.v1 import supplychain_pb2 as pb


async def test_a_retailer_lists_reprices_delists_and_relists_a_product(
    supplychain: SupplyChain, events: EventLog
) -> None:
    bike = await register(supplychain, "maker", "BIKE-1", "City bike", pb.PRODUCT_KIND_FINISHED_GOOD)
    await events.drain(supplychain)
    listing = await supplychain.CreateListing(
        pb.CreateListingRequest(product_id=bike.product_id, price=eur(49_900), available=True),
        metadata=partner("shop"),
    )
    assert (listing.retailer_id, listing.price.amount_minor, listing.available, listing.active) == (
        "shop",
        49_900,
        True,
        True,
    )
    updated = await supplychain.UpdateListing(
        pb.UpdateListingRequest(listing_id=listing.listing_id, price=eur(44_900)), metadata=partner("shop")
    )
    assert (updated.price.amount_minor, updated.available) == (44_900, True)
    unavailable = await supplychain.UpdateListing(
        pb.UpdateListingRequest(listing_id=listing.listing_id, available=False), metadata=partner("shop")
    )
    assert (unavailable.price.amount_minor, unavailable.available) == (44_900, False)
    delisted = await supplychain.DelistProduct(
        pb.DelistProductRequest(listing_id=listing.listing_id), metadata=partner("shop")
    )
    assert not delisted.active and delisted.HasField("delist_time")
    relisted = await supplychain.CreateListing(
        pb.CreateListingRequest(product_id=bike.product_id, price=eur(39_900), available=True),
        metadata=partner("shop"),
    )
    assert (relisted.listing_id, relisted.active, relisted.price.amount_minor) == (listing.listing_id, True, 39_900)

    published = await events.drain(supplychain)
    assert [p.type.rsplit(".", 1)[1] for p in published] == [
        "ProductListed",
        "ProductListed",
        "ProductListed",
        "ProductDelisted",
        "ProductListed",
    ]
    listed = of_type(published, events_pb2.ProductListed)
    assert [(e.listing_id, e.retailer_id, e.price.amount_minor, e.available) for e in listed] == [
        (listing.listing_id, "shop", 49_900, True),
        (listing.listing_id, "shop", 44_900, True),
        (listing.listing_id, "shop", 44_900, False),
        (listing.listing_id, "shop", 39_900, True),
    ]
    (gone,) = of_type(published, events_pb2.ProductDelisted)
    assert (gone.listing_id, gone.product_id, gone.retailer_id) == (listing.listing_id, bike.product_id, "shop")

    await supplychain.CreateListing(
        pb.CreateListingRequest(product_id=bike.product_id, retailer_id="other-shop", price=eur(1), available=True),
        metadata=SERVICE,
    )
    by_product = await supplychain.ListListings(pb.ListListingsRequest(product_id=bike.product_id), metadata=SERVICE)
    assert sorted(x.retailer_id for x in by_product.listings) == ["other-shop", "shop"]
    by_retailer = await supplychain.ListListings(pb.ListListingsRequest(retailer_id="shop"), metadata=SERVICE)
    assert [x.listing_id for x in by_retailer.listings] == [listing.listing_id]


async def test_bad_listings_are_refused_and_write_nothing(supplychain: SupplyChain, events: EventLog) -> None:
    bike = await register(supplychain, "maker", "BIKE-1", "City bike", pb.PRODUCT_KIND_FINISHED_GOOD)
    await events.drain(supplychain)
    await invalid(
        supplychain.CreateListing(pb.CreateListingRequest(product_id=bike.product_id), metadata=partner("shop")),
        "price",
    )
    await invalid(
        supplychain.CreateListing(
            pb.CreateListingRequest(
                product_id=bike.product_id, price=common_pb2.Money(currency_code="euro", amount_minor=-1)
            ),
            metadata=partner("shop"),
        ),
        "price.currency_code",
        "price.amount_minor",
    )
    await refused(
        supplychain.CreateListing(pb.CreateListingRequest(product_id="nope", price=eur(1)), metadata=partner("shop")),
        grpc.StatusCode.NOT_FOUND,
    )
    await refused(
        supplychain.CreateListing(
            pb.CreateListingRequest(product_id=bike.product_id, retailer_id="other", price=eur(1)),
            metadata=partner("shop"),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    listing = await supplychain.CreateListing(
        pb.CreateListingRequest(product_id=bike.product_id, price=eur(100), available=True), metadata=partner("shop")
    )
    await refused(
        supplychain.CreateListing(
            pb.CreateListingRequest(product_id=bike.product_id, price=eur(200)), metadata=partner("shop")
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    await refused(
        supplychain.UpdateListing(
            pb.UpdateListingRequest(listing_id=listing.listing_id, price=eur(1)), metadata=partner("other")
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await invalid(
        supplychain.UpdateListing(pb.UpdateListingRequest(listing_id=listing.listing_id), metadata=partner("shop")),
        "price",
    )
    await supplychain.DelistProduct(pb.DelistProductRequest(listing_id=listing.listing_id), metadata=partner("shop"))
    await precondition(
        supplychain.UpdateListing(
            pb.UpdateListingRequest(listing_id=listing.listing_id, price=eur(1)), metadata=partner("shop")
        ),
        "listing_id",
    )
    await precondition(
        supplychain.DelistProduct(pb.DelistProductRequest(listing_id=listing.listing_id), metadata=partner("shop")),
        "listing_id",
    )
    published = await events.drain(supplychain)
    assert [p.type.rsplit(".", 1)[1] for p in published] == ["ProductListed", "ProductDelisted"]
    assert of_type(published, events_pb2.ProductListed)[0].price.amount_minor == 100


async def test_an_order_records_the_revision_sold_and_totals_in_minor_units(
    chain: Chain, supplychain: SupplyChain, events: EventLog
) -> None:
    await events.drain(supplychain)
    bell = await register(supplychain, chain.maker, "BELL-1", "Bell", pb.PRODUCT_KIND_COMPONENT)
    await supplychain.CreateListing(
        pb.CreateListingRequest(product_id=bell.product_id, price=eur(1_250), available=True),
        metadata=partner(chain.retailer),
    )
    await supplychain.ReviseProduct(
        pb.ReviseProductRequest(product_id=chain.bike.product_id, changes="new gears", reason="wear"),
        metadata=partner(chain.maker),
    )
    await events.drain(supplychain)
    order = await supplychain.PlaceOrder(
        pb.PlaceOrderRequest(
            customer_id=chain.consumer,
            retailer_id=chain.retailer,
            lines=[
                pb.PlaceOrderRequest.Line(sku="BIKE-1", quantity=2),
                pb.PlaceOrderRequest.Line(sku="BELL-1", quantity=3),
            ],
            currency_code="EUR",
            contact=home(),
        ),
        metadata=chain.for_consumer,
    )
    assert order.status == pb.ORDER_STATUS_PLACED
    assert [
        (x.line_number, x.sku, x.revision, x.quantity, x.unit_price.amount_minor, x.line_total.amount_minor)
        for x in order.lines
    ] == [
        (1, "BIKE-1", 2, 2, 49_900, 99_800),
        (2, "BELL-1", 1, 3, 1_250, 3_750),
    ]
    assert (order.total.currency_code, order.total.amount_minor) == ("EUR", 103_550)
    # The earlier order keeps the revision it was sold at.
    first = await supplychain.GetOrder(pb.GetOrderRequest(order_id=chain.order.order_id), metadata=SERVICE)
    assert first.lines[0].revision == 1

    placed = only(await events.drain(supplychain), events_pb2.OrderPlaced)
    assert (placed.order_id, placed.customer_id, placed.retailer_id, placed.total.amount_minor) == (
        order.order_id,
        chain.consumer,
        chain.retailer,
        103_550,
    )
    assert [(x.product_id, x.revision, x.quantity, x.unit_price.amount_minor) for x in placed.lines] == [
        (chain.bike.product_id, 2, 2, 49_900),
        (bell.product_id, 1, 3, 1_250),
    ]
    assert placed.HasField("place_time")


async def test_bad_orders_are_refused_naming_the_field_and_write_nothing(
    chain: Chain, supplychain: SupplyChain, events: EventLog
) -> None:
    other = await register(supplychain, chain.maker, "TRIKE-1", "Trike", pb.PRODUCT_KIND_FINISHED_GOOD)
    await supplychain.CreateListing(
        pb.CreateListingRequest(product_id=other.product_id, price=eur(10), available=True),
        metadata=partner("other-shop"),
    )
    usd = await register(supplychain, chain.maker, "BIKE-US", "City bike (US)", pb.PRODUCT_KIND_FINISHED_GOOD)
    await supplychain.CreateListing(
        pb.CreateListingRequest(
            product_id=usd.product_id, price=common_pb2.Money(currency_code="USD", amount_minor=50_000), available=True
        ),
        metadata=partner(chain.retailer),
    )
    sold_out = await register(supplychain, chain.maker, "BIKE-X", "Sold out", pb.PRODUCT_KIND_FINISHED_GOOD)
    await supplychain.CreateListing(
        pb.CreateListingRequest(product_id=sold_out.product_id, price=eur(10), available=False),
        metadata=partner(chain.retailer),
    )
    await events.drain(supplychain)

    def order(*lines: tuple[str, int], currency: str = "EUR", contact: bool = True) -> pb.PlaceOrderRequest:
        return pb.PlaceOrderRequest(
            customer_id=chain.consumer,
            retailer_id=chain.retailer,
            lines=[pb.PlaceOrderRequest.Line(sku=sku, quantity=q) for sku, q in lines],
            currency_code=currency,
            contact=home() if contact else None,
        )

    me = chain.for_consumer
    await invalid(supplychain.PlaceOrder(order(("BIKE-1", 0)), metadata=me), "lines[0].quantity")
    await invalid(supplychain.PlaceOrder(order(("BIKE-1", 1), ("BIKE-1", -1)), metadata=me), "lines[1].quantity")
    await invalid(supplychain.PlaceOrder(order(("NO-SUCH", 1)), metadata=me), "lines[0].sku")
    await invalid(supplychain.PlaceOrder(order(("BIKE-1", 1), ("BIKE-US", 1)), metadata=me), "currency_code")
    await invalid(supplychain.PlaceOrder(order(("BIKE-1", 1), currency="usd"), metadata=me), "currency_code")
    await invalid(supplychain.PlaceOrder(order(("BIKE-1", 1), contact=False), metadata=me), "contact")
    await invalid(supplychain.PlaceOrder(order(), metadata=me), "lines")
    await precondition(supplychain.PlaceOrder(order(("BIKE-1", 1), ("TRIKE-1", 1)), metadata=me), "lines[1].sku")
    await precondition(supplychain.PlaceOrder(order(("BIKE-X", 1)), metadata=me), "lines[0].sku")
    await supplychain.DelistProduct(pb.DelistProductRequest(listing_id=chain.listing.listing_id), metadata=SERVICE)
    await precondition(supplychain.PlaceOrder(order(("BIKE-1", 1)), metadata=me), "lines[0].sku")
    # The retailer, not acting for the consumer, cannot order in their name.
    await refused(
        supplychain.PlaceOrder(order(("BIKE-1", 1)), metadata=partner(chain.retailer)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    orders = await supplychain.ListOrders(pb.ListOrdersRequest(), metadata=SERVICE)
    assert [o.order_id for o in orders.orders] == [chain.order.order_id]
    assert [p.type.rsplit(".", 1)[1] for p in await events.drain(supplychain)] == ["ProductDelisted"]


async def test_a_retried_place_order_returns_the_same_order_even_when_retried_at_once(
    chain: Chain, supplychain: SupplyChain, events: EventLog
) -> None:
    await events.drain(supplychain)
    first = await place(supplychain, chain, chain.retailer, "BIKE-1", 2, key="checkout-42")
    again = await place(supplychain, chain, chain.retailer, "BIKE-1", 2, key="checkout-42")
    assert again == first
    together = await asyncio.gather(
        *(place(supplychain, chain, chain.retailer, "BIKE-1", 1, key="checkout-43") for _ in range(6))
    )
    assert len({o.order_id for o in together}) == 1
    assert together[0].order_id != first.order_id
    assert all(o.idempotency_key == "checkout-43" for o in together)
    placed = of_type(await events.drain(supplychain), events_pb2.OrderPlaced)
    assert sorted(e.order_id for e in placed) == sorted([first.order_id, together[0].order_id])
    # The same key for a different order is a mistake, not a retry.
    await invalid(place(supplychain, chain, chain.retailer, "BIKE-1", 3, key="checkout-42"), "idempotency_key")
    mine = await supplychain.ListOrders(pb.ListOrdersRequest(customer_id=chain.consumer), metadata=SERVICE)
    assert len(mine.orders) == 3  # the chain's, checkout-42 and checkout-43


async def test_orders_are_confirmed_or_cancelled_and_illegal_transitions_are_refused(
    chain: Chain, supplychain: SupplyChain, events: EventLog
) -> None:
    await events.drain(supplychain)
    order = await place(supplychain, chain, chain.retailer, "BIKE-1", 1)
    consumer_app = partner("consumer-app", acting_for=chain.consumer)
    await refused(
        supplychain.ConfirmOrder(pb.ConfirmOrderRequest(order_id=order.order_id), metadata=consumer_app),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    confirmed = await supplychain.ConfirmOrder(
        pb.ConfirmOrderRequest(order_id=order.order_id), metadata=partner(chain.retailer)
    )
    assert confirmed.status == pb.ORDER_STATUS_CONFIRMED and confirmed.HasField("confirm_time")
    await precondition(
        supplychain.ConfirmOrder(pb.ConfirmOrderRequest(order_id=order.order_id), metadata=partner(chain.retailer)),
        "status",
    )
    cancelled = await supplychain.CancelOrder(
        pb.CancelOrderRequest(order_id=order.order_id, reason="changed my mind"), metadata=consumer_app
    )
    assert (cancelled.status, cancelled.cancel_reason) == (pb.ORDER_STATUS_CANCELLED, "changed my mind")
    await precondition(
        supplychain.ConfirmOrder(pb.ConfirmOrderRequest(order_id=order.order_id), metadata=partner(chain.retailer)),
        "status",
    )
    await precondition(
        supplychain.CancelOrder(pb.CancelOrderRequest(order_id=order.order_id), metadata=partner(chain.retailer)),
        "status",
    )
    await refused(
        supplychain.CancelOrder(pb.CancelOrderRequest(order_id=chain.order.order_id), metadata=partner(chain.maker)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await refused(
        supplychain.ConfirmOrder(pb.ConfirmOrderRequest(order_id="nope"), metadata=SERVICE), grpc.StatusCode.NOT_FOUND
    )
    published = await events.drain(supplychain)
    assert [p.type.rsplit(".", 1)[1] for p in published] == ["OrderPlaced", "OrderCancelled"]
    gone = of_type(published, events_pb2.OrderCancelled)[0]
    assert (gone.order_id, gone.customer_id, gone.retailer_id, gone.reason) == (
        order.order_id,
        chain.consumer,
        chain.retailer,
        "changed my mind",
    )


async def test_retailer_and_consumer_see_their_orders_and_a_maker_sees_contact_data_only_with_consent(
    chain: Chain, supplychain: SupplyChain, identity: Identity
) -> None:
    order_id = chain.order.order_id
    get = pb.GetOrderRequest(order_id=order_id)
    for viewer in (partner(chain.retailer), chain.for_consumer, partner("any-partner", acting_for=chain.consumer)):
        seen = await supplychain.GetOrder(get, metadata=viewer)
        assert seen.HasField("contact") and seen.contact.email == "carla@example.org"
    maker_view = await supplychain.GetOrder(get, metadata=partner(chain.maker))
    assert not maker_view.HasField("contact")
    assert maker_view.customer_id == chain.consumer
    for stranger in (partner(chain.mill), partner("other-shop")):
        await refused(supplychain.GetOrder(get, metadata=stranger), grpc.StatusCode.NOT_FOUND)

    # A second consumer, at another shop, whose order the maker also sees.
    other = await register_consumer(identity, "Olaf Other", "olaf@example.org", "+49 40 7654321")
    await supplychain.CreateListing(
        pb.CreateListingRequest(product_id=chain.bike.product_id, price=eur(48_000), available=True),
        metadata=partner("other-shop"),
    )
    olafs = await place(supplychain, other, "other-shop", "BIKE-1", 1)

    listed = await supplychain.ListOrders(pb.ListOrdersRequest(), metadata=partner(chain.maker))
    assert {o.order_id: o.HasField("contact") for o in listed.orders} == {order_id: False, olafs.order_id: False}
    await consent(identity, chain.consumer, chain.retailer, MAKER_CONTACT)
    listed = await supplychain.ListOrders(pb.ListOrdersRequest(), metadata=partner(chain.maker))
    assert {o.order_id: o.HasField("contact") for o in listed.orders} == {order_id: True, olafs.order_id: False}
    assert (await supplychain.GetOrder(get, metadata=partner(chain.maker))).contact.name == "Carla Consumer"

    assert [
        o.order_id
        for o in (await supplychain.ListOrders(pb.ListOrdersRequest(), metadata=partner(chain.retailer))).orders
    ] == [order_id]
    assert [
        o.order_id
        for o in (await supplychain.ListOrders(pb.ListOrdersRequest(), metadata=partner("other-shop"))).orders
    ] == [olafs.order_id]
    as_olaf = partner("other-shop", acting_for=other)
    assert [
        o.order_id
        for o in (await supplychain.ListOrders(pb.ListOrdersRequest(customer_id=other), metadata=as_olaf)).orders
    ] == [olafs.order_id]
    assert (await supplychain.ListOrders(pb.ListOrdersRequest(), metadata=partner(chain.mill))).orders == []
    everything = await supplychain.ListOrders(pb.ListOrdersRequest(page_size=1), metadata=SERVICE)
    assert [o.order_id for o in everything.orders] == [olafs.order_id]  # newest first
    rest = await supplychain.ListOrders(
        pb.ListOrdersRequest(page_size=1, page_token=everything.next_page_token), metadata=SERVICE
    )
    assert [o.order_id for o in rest.orders] == [order_id] and not rest.next_page_token
    confirmed = await supplychain.ListOrders(
        pb.ListOrdersRequest(status=pb.ORDER_STATUS_CONFIRMED, product_id=chain.bike.product_id), metadata=SERVICE
    )
    assert [o.order_id for o in confirmed.orders] == [order_id]
