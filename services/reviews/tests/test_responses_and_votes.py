"""Partners' responses and readers' helpful votes."""

from __future__ import annotations

import grpc
from reviews_testing import SERVICE, World, of_type, partner, refused, violated_fields

from collabnet.reviews.v1 import events_pb2, reviews_pb2
from collabnet.supplychain.v1 import events_pb2 as supplychain

GOOD = "Boils a litre in two minutes and the lid closes firmly."
BAD = "It leaked on the second day and the handle gets far too hot to touch."


async def test_the_maker_and_a_seller_respond_once_each_and_may_edit(world: World) -> None:
    review = await world.submit(world.consumer, 2, BAD)
    await world.events.drain()
    first = await world.reviews.RespondToReview(
        reviews_pb2.RespondToReviewRequest(review_id=review.review_id, body="Sorry! We will replace it."),
        metadata=partner(world.maker),
    )
    assert first.partner_id == world.maker
    assert first.edits == 0
    edited = await world.reviews.RespondToReview(
        reviews_pb2.RespondToReviewRequest(review_id=review.review_id, body="A replacement is on its way."),
        metadata=partner(world.maker),
    )
    assert edited.response_id == first.response_id
    assert edited.edits == 1
    assert edited.create_time == first.create_time
    seller = await world.reviews.RespondToReview(
        reviews_pb2.RespondToReviewRequest(review_id=review.review_id, body="We can also refund you."),
        metadata=partner(world.retailer),
    )
    got = await world.get(review.review_id, partner(world.far_retailer))
    assert [(r.partner_id, r.body) for r in got.responses] == [
        (world.maker, "A replacement is on its way."),
        (world.retailer, "We can also refund you."),
    ]
    assert got.body == BAD  # a response never touches the consumer's words
    published = of_type(await world.events.drain(), events_pb2.ReviewResponded)
    assert [(e.partner_id, e.response_id, e.edited) for e in published] == [
        (world.maker, first.response_id, False),
        (world.maker, first.response_id, True),
        (world.retailer, seller.response_id, False),
    ]
    assert all(e.author_id == world.consumer and e.product_id == world.product for e in published)


async def test_a_partner_unrelated_to_the_product_cannot_respond_and_nothing_is_written(world: World) -> None:
    review = await world.submit(world.consumer, 2, BAD)
    await world.events.drain()
    error = await refused(
        world.reviews.RespondToReview(
            reviews_pb2.RespondToReviewRequest(review_id=review.review_id, body="Buy ours instead."),
            metadata=partner(world.other_retailer),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert "makes or sells" in (error.details() or "")
    await refused(
        world.reviews.RespondToReview(
            reviews_pb2.RespondToReviewRequest(review_id=review.review_id, partner_id=world.maker, body="As the maker"),
            metadata=partner(world.other_retailer),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    error = await refused(
        world.reviews.RespondToReview(
            reviews_pb2.RespondToReviewRequest(review_id=review.review_id, body=""), metadata=partner(world.maker)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == ["body"]
    assert list((await world.get(review.review_id)).responses) == []
    assert await world.events.drain() == []
    on_behalf = await world.reviews.RespondToReview(
        reviews_pb2.RespondToReviewRequest(review_id=review.review_id, partner_id=world.maker, body="From the maker"),
        metadata=SERVICE,
    )
    assert on_behalf.partner_id == world.maker


async def test_a_delisted_retailer_no_longer_sells_and_cannot_respond(world: World) -> None:
    product = await world.register_product()
    listing = await world.list_product(product, world.other_retailer)
    await world.publish(
        supplychain.ProductDelisted(listing_id=listing, product_id=product, retailer_id=world.other_retailer)
    )
    await world.sync()
    review = await world.submit(world.consumer, 3, GOOD, product_id=product)
    await refused(
        world.reviews.RespondToReview(
            reviews_pb2.RespondToReviewRequest(review_id=review.review_id, body="We sell it."),
            metadata=partner(world.other_retailer),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )


async def test_one_vote_per_party_changeable_and_retractable(world: World) -> None:
    review = await world.submit(world.consumer, 4, GOOD)
    voted = await world.reviews.VoteHelpful(
        reviews_pb2.VoteHelpfulRequest(review_id=review.review_id, vote=reviews_pb2.HELPFUL_VOTE_HELPFUL),
        metadata=partner(world.retailer, acting_for=world.second_consumer),
    )
    assert (voted.voter_id, voted.helpful_votes, voted.unhelpful_votes) == (world.second_consumer, 1, 0)
    again = await world.reviews.VoteHelpful(
        reviews_pb2.VoteHelpfulRequest(review_id=review.review_id, vote=reviews_pb2.HELPFUL_VOTE_HELPFUL),
        metadata=partner(world.far_retailer, acting_for=world.second_consumer),
    )
    assert (again.helpful_votes, again.unhelpful_votes) == (1, 0)  # the same party, through another partner
    changed = await world.reviews.VoteHelpful(
        reviews_pb2.VoteHelpfulRequest(review_id=review.review_id, vote=reviews_pb2.HELPFUL_VOTE_NOT_HELPFUL),
        metadata=partner(world.retailer, acting_for=world.second_consumer),
    )
    assert (changed.helpful_votes, changed.unhelpful_votes) == (0, 1)
    other = await world.reviews.VoteHelpful(
        reviews_pb2.VoteHelpfulRequest(review_id=review.review_id, vote=reviews_pb2.HELPFUL_VOTE_HELPFUL),
        metadata=partner(world.retailer, acting_for=world.employee),
    )
    assert (other.helpful_votes, other.unhelpful_votes) == (1, 1)
    retracted = await world.reviews.VoteHelpful(
        reviews_pb2.VoteHelpfulRequest(review_id=review.review_id, vote=reviews_pb2.HELPFUL_VOTE_NONE),
        metadata=partner(world.retailer, acting_for=world.second_consumer),
    )
    assert (retracted.helpful_votes, retracted.unhelpful_votes) == (1, 0)
    got = await world.get(review.review_id)
    assert (got.helpful_votes, got.unhelpful_votes) == (1, 0)
    await refused(
        world.reviews.VoteHelpful(
            reviews_pb2.VoteHelpfulRequest(review_id=review.review_id, vote=reviews_pb2.HELPFUL_VOTE_HELPFUL),
            metadata=partner(world.retailer, acting_for=world.consumer),
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    error = await refused(
        world.reviews.VoteHelpful(
            reviews_pb2.VoteHelpfulRequest(review_id=review.review_id),
            metadata=partner(world.retailer, acting_for=world.colleague),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == ["vote"]


async def test_a_vote_on_a_withdrawn_review_is_refused_and_counts_nothing(world: World) -> None:
    review = await world.submit(world.consumer, 4, GOOD)
    await world.reviews.WithdrawReview(
        reviews_pb2.WithdrawReviewRequest(review_id=review.review_id),
        metadata=partner(world.retailer, acting_for=world.consumer),
    )
    error = await refused(
        world.reviews.VoteHelpful(
            reviews_pb2.VoteHelpfulRequest(review_id=review.review_id, vote=reviews_pb2.HELPFUL_VOTE_HELPFUL),
            metadata=partner(world.retailer, acting_for=world.second_consumer),
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "withdrawn" in (error.details() or "")
    got = await world.get(review.review_id)
    assert (got.helpful_votes, got.unhelpful_votes) == (0, 0)
