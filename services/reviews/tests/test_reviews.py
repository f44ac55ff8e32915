"""Submitting, revising, withdrawing and reading reviews through the real service, with what each
change publishes and does to the summary."""

from __future__ import annotations

from typing import Any

import grpc
from reviews_testing import SERVICE, World, new_id, of_type, partner, refused, violated_fields

from collabnet.reviews.v1 import events_pb2, reviews_pb2

GOOD = "Boils a litre in two minutes and the lid closes firmly."
BAD = "It leaked on the second day and the handle gets far too hot to touch."


async def test_a_review_is_published_counted_and_announced_with_its_disclosure(world: World) -> None:
    review = await world.submit(
        world.consumer,
        4,
        GOOD,
        title="Fast",
        media_urls=["https://cdn.example/k.jpg"],
        incentivized=True,
        incentive="a free sample",
    )
    assert review.status == reviews_pb2.REVIEW_STATUS_PUBLISHED
    assert review.channel_partner_id == world.retailer
    assert review.version == 1
    assert review.revision == 1
    assert review.disclosure.incentivized
    assert review.disclosure.incentive == "a free sample"
    assert not review.disclosure.verified_purchase
    assert not review.disclosure.affiliated
    assert review.moderation.automatic
    summary = await world.summary()
    assert (summary.count, summary.mean, list(summary.distribution)) == (1, 4.0, [0, 0, 0, 1, 0])
    assert summary.smoothed_mean == (5 * 3.0 + 4) / 6
    assert summary.trend.count == 1
    assert summary.trend.days[-1].count == 1
    assert [r.revision for r in summary.revisions] == [1]
    published = await world.events.drain()
    (event,) = of_type(published, events_pb2.ReviewPublished)
    assert (event.review_id, event.product_id, event.author_id, event.rating) == (
        review.review_id,
        world.product,
        world.consumer,
        4,
    )
    assert event.channel_partner_id == world.retailer
    assert event.revision == 1
    assert event.disclosure.incentivized
    changed = of_type(published, events_pb2.RatingSummaryChanged)
    assert sorted((c.revision, c.count, c.mean) for c in changed) == [(0, 1, 4.0), (1, 1, 4.0)]


async def test_bad_input_names_the_field_or_rule_and_writes_nothing(world: World) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"rating": 0}, "rating"),
        ({"rating": 6}, "rating"),
        ({"body": ""}, "body"),
        ({"body": "x" * 10_001}, "body"),
    ]
    for change, field_name in cases:
        request: dict[str, Any] = {"rating": 3, "body": GOOD} | change
        error = await refused(
            world.submit(world.consumer, request.pop("rating"), request.pop("body")), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert violated_fields(error) == [field_name]
        assert field_name in (error.details() or "")
    await refused(world.submit(world.consumer, 3, GOOD, product_id="no-such-product"), grpc.StatusCode.NOT_FOUND)
    assert (await world.summary()).count == 0
    assert await world.listed(product_id=world.product) == []
    assert await world.listed(author_id=world.consumer) == []
    assert await world.events.drain() == []


async def test_a_partner_submits_only_for_the_party_it_acts_for_through_its_own_channel(world: World) -> None:
    request = reviews_pb2.SubmitReviewRequest(product_id=world.product, author_id=world.consumer, rating=5, body=GOOD)
    await refused(
        world.reviews.SubmitReview(request, metadata=partner(world.retailer)), grpc.StatusCode.PERMISSION_DENIED
    )
    await refused(
        world.reviews.SubmitReview(request, metadata=partner(world.retailer, acting_for=world.second_consumer)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    elsewhere = reviews_pb2.SubmitReviewRequest(
        product_id=world.product, author_id=world.consumer, rating=5, body=GOOD, channel_partner_id=world.far_retailer
    )
    await refused(
        world.reviews.SubmitReview(elsewhere, metadata=partner(world.retailer, acting_for=world.consumer)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    error = await refused(world.reviews.SubmitReview(request, metadata=SERVICE), grpc.StatusCode.INVALID_ARGUMENT)
    assert violated_fields(error) == ["channel_partner_id"]
    assert (await world.summary()).count == 0


async def test_an_author_reviews_a_product_once_and_revises_instead(world: World) -> None:
    first = await world.submit(world.consumer, 3, GOOD)
    error = await refused(
        world.submit(world.consumer, 5, GOOD + " Still great.", channel=world.far_retailer),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert first.review_id in (error.details() or "")
    assert (await world.summary()).count == 1


async def test_a_revision_from_2_to_4_moves_the_summary_and_keeps_the_2_star_version(world: World) -> None:
    review = await world.submit(world.consumer, 2, BAD, title="Leaks")
    await world.submit(world.second_consumer, 5, GOOD)
    assert list((await world.summary()).distribution) == [0, 1, 0, 0, 1]
    await world.events.drain()

    revised = await world.revise(review, 4, "The replacement they sent works well; the leak is gone for good.")
    assert revised.rating == 4
    assert revised.version == 2
    assert revised.update_time.ToDatetime() >= review.update_time.ToDatetime()
    summary = await world.summary()
    assert (summary.count, summary.mean, list(summary.distribution)) == (2, 4.5, [0, 0, 0, 1, 1])

    got = await world.get(review.review_id)
    assert [(v.version, v.rating, v.title, v.body) for v in got.history] == [(1, 2, "Leaks", BAD)]
    assert got.version == 2
    assert got.rating == 4
    public = await world.get(review.review_id, partner(world.far_retailer))
    assert [v.rating for v in public.history] == [2]  # earlier versions are visible to readers

    published = await world.events.drain()
    (event,) = of_type(published, events_pb2.ReviewRevised)
    assert (event.old_rating, event.new_rating, event.version) == (2, 4, 2)
    assert event.review_id == review.review_id
    assert not of_type(published, events_pb2.ReviewPublished)
    changed = {c.revision: c for c in of_type(published, events_pb2.RatingSummaryChanged)}
    assert changed[0].mean == 4.5
    assert list(changed[0].distribution) == [0, 0, 0, 1, 1]


async def test_a_revision_by_someone_else_is_refused_and_changes_nothing(world: World) -> None:
    review = await world.submit(world.consumer, 2, BAD)
    await world.events.drain()
    request = reviews_pb2.ReviseReviewRequest(review_id=review.review_id, rating=5, body=GOOD)
    for intruder in (
        partner(world.retailer),  # the channel partner, not acting for the author
        partner(world.retailer, acting_for=world.second_consumer),
        partner(world.maker),
        SERVICE,
    ):
        error = await refused(world.reviews.ReviseReview(request, metadata=intruder), grpc.StatusCode.PERMISSION_DENIED)
        assert "author" in (error.details() or "")
    got = await world.get(review.review_id)
    assert (got.rating, got.body, got.version, len(got.history)) == (2, BAD, 1, 0)
    assert (await world.summary()).mean == 2.0
    assert await world.events.drain() == []


async def test_an_author_revises_through_any_partner_and_a_bad_revision_is_refused(world: World) -> None:
    review = await world.submit(world.consumer, 2, BAD)
    through_other = await world.reviews.ReviseReview(
        reviews_pb2.ReviseReviewRequest(review_id=review.review_id, rating=3, body=BAD + " Better now."),
        metadata=partner(world.far_retailer, acting_for=world.consumer),
    )
    assert through_other.version == 2
    error = await refused(world.revise(review, 7, GOOD), grpc.StatusCode.INVALID_ARGUMENT)
    assert violated_fields(error) == ["rating"]
    await refused(
        world.reviews.ReviseReview(
            reviews_pb2.ReviseReviewRequest(review_id="nope", rating=3, body=GOOD),
            metadata=partner(world.retailer, acting_for=world.consumer),
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert (await world.get(review.review_id)).version == 2


async def test_withdrawing_takes_the_review_out_of_the_summary_and_out_of_sight(world: World) -> None:
    review = await world.submit(world.consumer, 1, BAD)
    await world.submit(world.second_consumer, 5, GOOD)
    await world.events.drain()
    await refused(
        world.reviews.WithdrawReview(
            reviews_pb2.WithdrawReviewRequest(review_id=review.review_id), metadata=partner(world.retailer)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    withdrawn = await world.reviews.WithdrawReview(
        reviews_pb2.WithdrawReviewRequest(review_id=review.review_id),
        metadata=partner(world.retailer, acting_for=world.consumer),
    )
    assert withdrawn.status == reviews_pb2.REVIEW_STATUS_WITHDRAWN
    assert withdrawn.HasField("withdraw_time")
    summary = await world.summary()
    assert (summary.count, summary.mean, list(summary.distribution)) == (1, 5.0, [0, 0, 0, 0, 1])
    assert review.review_id not in {r.review_id for r in await world.listed(product_id=world.product)}
    await refused(world.get(review.review_id, partner(world.far_retailer)), grpc.StatusCode.NOT_FOUND)
    mine = await world.get(review.review_id, partner(world.retailer, acting_for=world.consumer))
    assert mine.status == reviews_pb2.REVIEW_STATUS_WITHDRAWN
    own = await world.listed(partner(world.retailer, acting_for=world.consumer), author_id=world.consumer)
    assert [r.status for r in own] == [reviews_pb2.REVIEW_STATUS_WITHDRAWN]
    published = await world.events.drain()
    (event,) = of_type(published, events_pb2.ReviewWithdrawn)
    assert (event.review_id, event.rating, event.was_published) == (review.review_id, 1, True)
    assert {c.count for c in of_type(published, events_pb2.RatingSummaryChanged)} == {1}
    # Withdrawing again changes nothing; a new review of the product may follow.
    await world.reviews.WithdrawReview(
        reviews_pb2.WithdrawReviewRequest(review_id=review.review_id),
        metadata=partner(world.retailer, acting_for=world.consumer),
    )
    assert await world.events.drain() == []
    again = await world.submit(world.consumer, 3, GOOD + " Second try.")
    assert again.status == reviews_pb2.REVIEW_STATUS_PUBLISHED
    await refused(
        world.revise(withdrawn, 4, GOOD + " revived"),
        grpc.StatusCode.FAILED_PRECONDITION,
    )


async def test_get_review_of_an_unknown_id_is_not_found_and_an_empty_id_names_the_field(world: World) -> None:
    await refused(world.get(new_id()), grpc.StatusCode.NOT_FOUND)
    error = await refused(world.get(""), grpc.StatusCode.INVALID_ARGUMENT)
    assert violated_fields(error) == ["review_id"]
