"""Verified purchase from supplychain's order events, and affiliation from identity."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from reviews_testing import (
    SERVICE,
    World,
    of_type,
    partner,
    refused,
    register_person,
    relate,
    reviews_settings,
    start_identity,
)

from collabnet.reviews.v1 import events_pb2, reviews_pb2
from collabnet.reviews.v1.reviews_pb2_grpc import ReviewsServiceStub
from collabnet.supplychain.v1 import events_pb2 as supplychain
from collabnet_kit.bus import Bus, cloudevent_headers
from collabnet_kit.nats_server import NatsServer, free_port
from collabnet_kit.testing import eventually, running
from collabnet_reviews.app import create

GOOD = "Boils a litre in two minutes and the lid closes firmly."


async def test_a_review_written_before_the_order_arrives_becomes_verified_when_it_does(world: World) -> None:
    await world.publish(supplychain.ProductRevised(product_id=world.product, maker_id=world.maker, revision=3))
    await world.sync()
    review = await world.submit(world.consumer, 2, GOOD)
    assert review.status == reviews_pb2.REVIEW_STATUS_PUBLISHED
    assert not review.disclosure.verified_purchase
    assert review.revision == 3  # the latest, until a purchase says which one was bought
    await world.events.drain()

    await world.order(world.consumer, revision=2)

    async def verified() -> reviews_pb2.Review | None:
        got = await world.get(review.review_id)
        return got if got.disclosure.verified_purchase else None

    got = await eventually(verified)
    assert (got.disclosure.revision_bought, got.revision) == (2, 2)
    summary = await world.summary()
    assert {r.revision: r.count for r in summary.revisions} == {2: 1, 3: 0}
    assert summary.count == 1
    events = await world.events.drain()
    (changed,) = of_type(events, events_pb2.ReviewDisclosureChanged)
    assert changed.disclosure.verified_purchase
    assert (changed.review_id, changed.revision, changed.disclosure.revision_bought) == (review.review_id, 2, 2)
    assert not of_type(events, events_pb2.ReviewPublished)
    verified_only = await world.listed(product_id=world.product, verified_only=True)
    assert [r.review_id for r in verified_only] == [review.review_id]


async def test_a_review_after_delivery_is_verified_at_once_with_the_revision_bought(world: World) -> None:
    await world.order(world.consumer, delivered=True)
    await world.sync()
    review = await world.submit(world.consumer, 5, GOOD)
    assert review.disclosure.verified_purchase
    assert review.disclosure.revision_bought == 1
    (event,) = of_type(await world.events.drain(), events_pb2.ReviewPublished)
    assert event.disclosure.verified_purchase
    # Someone else's order verifies nobody else.
    other = await world.submit(world.second_consumer, 4, GOOD + " Indeed.")
    assert not other.disclosure.verified_purchase


async def test_the_same_order_event_delivered_twice_has_one_effect(world: World) -> None:
    review = await world.submit(world.consumer, 4, GOOD)
    await world.events.drain()
    event = supplychain.OrderPlaced(
        order_id="order-twice",
        customer_id=world.consumer,
        retailer_id=world.retailer,
        lines=[supplychain.OrderLine(product_id=world.product, revision=1, quantity=1)],
    )
    headers = cloudevent_headers("event-twice", event.DESCRIPTOR.full_name, "/collabnet/supplychain", datetime.now(UTC))
    # Two messages, one event id: a redelivery after the stream's de-duplication window.
    for attempt in range(2):
        await world.bus.publish(
            event.DESCRIPTOR.full_name, event.SerializeToString(), headers | {"Nats-Msg-Id": f"event-twice-{attempt}"}
        )
    await world.sync()
    assert (await world.get(review.review_id)).disclosure.verified_purchase
    events = await world.events.drain()
    assert len(of_type(events, events_pb2.ReviewDisclosureChanged)) == 1


async def test_a_cancelled_order_takes_the_verification_back_and_a_late_placement_does_not_restore_it(
    world: World,
) -> None:
    await world.order(world.consumer, order_id="order-cancelled")
    await world.sync()
    review = await world.submit(world.consumer, 3, GOOD)
    assert review.disclosure.verified_purchase
    await world.events.drain()
    await world.publish(
        supplychain.OrderCancelled(order_id="order-cancelled", customer_id=world.consumer, retailer_id=world.retailer)
    )
    await world.sync()
    assert not (await world.get(review.review_id)).disclosure.verified_purchase
    (changed,) = of_type(await world.events.drain(), events_pb2.ReviewDisclosureChanged)
    assert not changed.disclosure.verified_purchase
    # A cancellation that arrives before its order: the order never counts.
    await world.publish(
        supplychain.OrderCancelled(
            order_id="order-early", customer_id=world.second_consumer, retailer_id=world.retailer
        )
    )
    await world.order(world.second_consumer, order_id="order-early")
    await world.sync()
    second = await world.submit(world.second_consumer, 4, GOOD + " Second opinion.")
    assert not second.disclosure.verified_purchase


async def test_a_listing_event_older_than_the_delisting_changes_nothing(world: World) -> None:
    product = await world.register_product()
    now = datetime.now(UTC)
    await world.publish(
        supplychain.ProductDelisted(listing_id="listing-late", product_id=product, retailer_id=world.other_retailer),
        at=now,
    )
    await world.publish(
        supplychain.ProductListed(listing_id="listing-late", product_id=product, retailer_id=world.other_retailer),
        at=now - timedelta(minutes=5),
    )
    await world.sync()
    review = await world.submit(world.consumer, 4, GOOD, product_id=product)
    await refused(
        world.reviews.RespondToReview(
            reviews_pb2.RespondToReviewRequest(review_id=review.review_id, body="We sell it."),
            metadata=partner(world.other_retailer),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await world.publish(
        supplychain.ProductListed(listing_id="listing-late", product_id=product, retailer_id=world.other_retailer),
        at=now + timedelta(minutes=5),
    )
    await world.sync()
    response = await world.reviews.RespondToReview(
        reviews_pb2.RespondToReviewRequest(review_id=review.review_id, body="We sell it again."),
        metadata=partner(world.other_retailer),
    )
    assert response.partner_id == world.other_retailer


async def test_an_employee_of_the_maker_is_flagged_affiliated(world: World) -> None:
    review = await world.submit(world.employee, 5, GOOD)
    assert review.disclosure.affiliated
    assert review.status == reviews_pb2.REVIEW_STATUS_PUBLISHED
    (event,) = of_type(await world.events.drain(), events_pb2.ReviewPublished)
    assert event.disclosure.affiliated
    listed = await world.listed(partner(world.far_retailer), product_id=world.product)
    assert [r.disclosure.affiliated for r in listed] == [True]


async def test_a_partner_of_an_employee_and_a_supplier_are_affiliated_and_customers_are_not(world: World) -> None:
    colleague = await world.submit(world.colleague, 5, GOOD)
    assert colleague.disclosure.affiliated
    customer = await world.submit(world.consumer, 5, GOOD + " Really.")
    assert not customer.disclosure.affiliated  # a customer of the seller, which is what buyers are
    supplier = await register_person(world.identity, "Sam Supplier")
    await relate(world.identity, supplier, "supplier_of", world.far_retailer, world.far_retailer)
    supplying = await world.submit(supplier, 5, GOOD + " Truly.")
    assert supplying.disclosure.affiliated  # supplies a seller of the product
    stranger = await world.submit("someone-identity-does-not-know", 5, GOOD + " Honestly.")
    assert not stranger.disclosure.affiliated
    assert stranger.status == reviews_pb2.REVIEW_STATUS_PUBLISHED


async def test_a_review_waits_for_its_disclosure_while_identity_is_away_and_is_published_after(
    database_url: str, identity_database_url: str, nats_server: NatsServer, tmp_path: Path
) -> None:
    port = free_port()
    settings = reviews_settings(database_url, nats_server, tmp_path, f"127.0.0.1:{port}")
    async with running(create(settings, set_global_telemetry=False)) as reviews_service:
        registered = supplychain.ProductRegistered(product_id="kettle", maker_id="maker", revision=1)
        bus = Bus(nats_server.url, name="reviews-tests")
        await bus.connect()
        try:
            await bus.ensure_stream("supplychain")
            await bus.publish_event(registered, event_id="registered", source="supplychain")
            async with grpc.aio.insecure_channel(reviews_service.address) as channel:
                reviews = ReviewsServiceStub(channel)
                request = reviews_pb2.GetRatingSummaryRequest(product_id="kettle")

                async def known() -> bool:
                    try:
                        await reviews.GetRatingSummary(request, metadata=SERVICE)
                    except grpc.aio.AioRpcError:
                        return False
                    return True

                await eventually(known)
                submitted = await reviews.SubmitReview(
                    reviews_pb2.SubmitReviewRequest(product_id="kettle", author_id="carla", rating=4, body=GOOD),
                    metadata=partner("shop", acting_for="carla"),
                )
                assert submitted.status == reviews_pb2.REVIEW_STATUS_PENDING
                assert list(submitted.moderation.reasons) == [reviews_pb2.MODERATION_REASON_AWAITING_DISCLOSURE]
                assert (await reviews.GetRatingSummary(request, metadata=SERVICE)).count == 0
                await refused(
                    reviews.ModerateReview(
                        reviews_pb2.ModerateReviewRequest(
                            review_id=submitted.review_id, decision=reviews_pb2.MODERATION_DECISION_PUBLISH
                        ),
                        metadata=SERVICE,
                    ),
                    grpc.StatusCode.FAILED_PRECONDITION,
                )
                await asyncio.sleep(0.5)  # a few retries find identity still away
                identity = await start_identity(identity_database_url, nats_server, tmp_path, grpc_port=port)
                async with running(identity):

                    async def published() -> reviews_pb2.Review | None:
                        got = await reviews.GetReview(
                            reviews_pb2.GetReviewRequest(review_id=submitted.review_id), metadata=SERVICE
                        )
                        return got if got.status == reviews_pb2.REVIEW_STATUS_PUBLISHED else None

                    got = await eventually(published)
                    assert not got.disclosure.affiliated
                    assert [m.status for m in got.moderation_history] == [
                        reviews_pb2.REVIEW_STATUS_PENDING,
                        reviews_pb2.REVIEW_STATUS_PUBLISHED,
                    ]
                    assert (await reviews.GetRatingSummary(request, metadata=SERVICE)).count == 1
        finally:
            await bus.close()
