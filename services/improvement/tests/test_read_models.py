"""Read models kept from other domains' events, in any order and however often delivered; the
migrations in step with the tables."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf.message import Message
from improvement_testing import SERVICE, Harness, refused

from collabnet.improvement.v1 import events_pb2 as ev
from collabnet.improvement.v1 import improvement_pb2 as pb
from collabnet.reviews.v1 import events_pb2 as reviews
from collabnet.supplychain.v1 import events_pb2 as supplychain
from collabnet_improvement import store
from collabnet_kit.bus import DEADLETTER_STREAM, cloudevent_headers
from collabnet_kit.db import Database
from collabnet_kit.migrations import pending_changes, upgrade
from collabnet_kit.testing import DatabaseFactory, eventually


async def test_the_migrations_create_exactly_the_tables(database_factory: DatabaseFactory) -> None:
    db = Database(database_factory())  # empty: every migration runs
    try:
        await upgrade(db, [store.HISTORY])
        assert await pending_changes(db, store.HISTORY) == []
    finally:
        await db.dispose()


async def _network(h: Harness, product: str) -> pb.ProductNetwork:
    return await h.improvement.GetProductNetwork(pb.GetProductNetworkRequest(product_id=product), metadata=SERVICE)


async def test_the_product_network_knows_maker_retailers_and_suppliers_by_tier(h: Harness) -> None:
    network = await _network(h, h.world.product)
    assert (network.maker_id, network.name, network.revision) == (h.world.maker, "Kettle", 1)
    assert sorted(network.retailer_ids) == sorted([h.world.retailer, h.world.retailer2])
    assert [(s.supplier_id, s.tier, s.item) for s in network.suppliers] == [
        (h.world.s1, 1, "lid seal"),
        (h.world.s2, 2, "rubber compound"),
    ]
    await refused(
        h.improvement.GetProductNetwork(pb.GetProductNetworkRequest(product_id="unknown"), metadata=SERVICE),
        grpc.StatusCode.NOT_FOUND,
    )


async def _publish_at(h: Harness, event: Message, at: datetime) -> None:
    """Publish with a given event time, as a delayed or reordered delivery would carry it."""
    name = event.DESCRIPTOR.full_name
    await h.bus.publish(
        name, event.SerializeToString(), cloudevent_headers(str(uuid.uuid4()), name, "/collabnet/supplychain", at)
    )


async def test_listing_changes_and_network_changes_arriving_out_of_order_keep_the_newest(h: Harness) -> None:
    now = datetime.now(UTC)
    product = "reordered-product"
    delisted = supplychain.ProductDelisted(listing_id="l-1", product_id=product, retailer_id=h.world.retailer)
    listed = supplychain.ProductListed(
        listing_id="l-1", product_id=product, retailer_id=h.world.retailer, available=True
    )
    newer = supplychain.SupplyNetworkChanged(
        product_id=product,
        maker_id=h.world.maker,
        suppliers=[supplychain.SupplyNetworkChanged.Supplier(supplier_id="new-supplier", tier=1, item="base")],
    )
    older = supplychain.SupplyNetworkChanged(
        product_id=product,
        maker_id=h.world.maker,
        suppliers=[supplychain.SupplyNetworkChanged.Supplier(supplier_id="old-supplier", tier=1, item="base")],
    )
    await _publish_at(h, delisted, now)
    await _publish_at(h, listed, now - timedelta(minutes=5))
    await _publish_at(h, newer, now)
    await _publish_at(h, older, now - timedelta(minutes=5))
    await _publish_at(
        h, supplychain.ProductListed(listing_id="l-2", product_id=product, retailer_id=h.world.retailer2), now
    )

    async def settled() -> pb.ProductNetwork | None:
        try:
            network = await _network(h, product)
        except grpc.aio.AioRpcError:
            return None
        return network if list(network.retailer_ids) == [h.world.retailer2] else None

    network = await eventually(settled)
    await h.settle()
    network = await _network(h, product)
    assert list(network.retailer_ids) == [h.world.retailer2]
    assert [s.supplier_id for s in network.suppliers] == ["new-supplier"]
    assert network.maker_id == h.world.maker


async def test_a_revision_before_its_publication_opens_one_case_and_the_late_publication_changes_nothing(
    h: Harness,
) -> None:
    review = reviews.ReviewPublished(
        review_id="review-late",
        product_id=h.world.product,
        revision=1,
        author_id=h.world.customer,
        channel_partner_id=h.world.retailer,
        rating=4,
    )
    await h.revise(review, 1, version=2, old_rating=4)
    case = await h.case_of("review-late")
    assert (case.opening_rating, case.opened_by_revision) == (1, True)
    await h.publish(review, "reviews")
    await h.settle()
    assert len(await h.cases_of()) == 1
    metrics = await h.improvement.GetProductMetrics(
        pb.GetProductMetricsRequest(product_id=h.world.product), metadata=SERVICE
    )
    assert (metrics.review_count, metrics.average_rating) == (1, 1.0)


async def test_a_withdrawal_before_the_publication_leaves_no_case_and_no_rating(h: Harness) -> None:
    review = reviews.ReviewPublished(
        review_id="review-gone",
        product_id=h.world.product,
        revision=1,
        author_id=h.world.customer,
        channel_partner_id=h.world.retailer,
        rating=1,
    )
    await h.withdraw(review)
    await h.publish(review, "reviews")
    _, marker = await h.negative_case()
    await h.settle()
    assert [c.case_id for c in await h.cases_of()] == [marker.case_id]
    metrics = await h.improvement.GetProductMetrics(
        pb.GetProductMetricsRequest(product_id=h.world.product), metadata=SERVICE
    )
    assert metrics.review_count == 1


async def test_ratings_follow_revisions_and_withdrawals(h: Harness) -> None:
    first = await h.review(2)
    second = await h.review(4, author=h.world.other_customer)
    await h.revise(first, 5, version=2)
    await h.withdraw(second)

    async def settled() -> pb.ProductMetrics | None:
        metrics = await h.improvement.GetProductMetrics(
            pb.GetProductMetricsRequest(product_id=h.world.product), metadata=SERVICE
        )
        return metrics if metrics.review_count == 1 and metrics.average_rating == 5.0 else None

    metrics = await eventually(settled)
    assert metrics.negative_review_rate == 0.0
    assert [(r.revision, r.review_count) for r in metrics.revisions] == [(1, 1)]
    assert len(await h.cases_of()) == 1


async def test_an_event_no_retry_can_fix_is_dead_lettered_and_the_consumer_goes_on(h: Harness) -> None:
    await h.publish(
        reviews.ReviewPublished(
            review_id="review-bad", product_id=h.world.product, author_id=h.world.customer, rating=9
        ),
        "reviews",
    )
    _, case = await h.negative_case()
    assert case.review_id != "review-bad"

    async def dead_lettered() -> bool:
        info = await h.bus.js.stream_info(DEADLETTER_STREAM)
        return info.state.messages >= 1

    await eventually(dead_lettered, timeout=20)
    assert all(c.review_id != "review-bad" for c in await h.cases_of())
    assert len(h.log.of(ev.CaseOpened)) == 1
