"""The automatic checks before publishing, and moderators' overrides."""

from __future__ import annotations

from collections.abc import Awaitable

import grpc
from reviews_testing import MODERATE, SERVICE, World, of_type, partner, refused, violated_fields

from collabnet.reviews.v1 import events_pb2, reviews_pb2

GOOD = "Boils a litre in two minutes and the lid closes firmly."
HARSH = "Terrible kettle. It leaked on day two, the handle melted, and support ignored me. Avoid it."


def moderate(
    world: World,
    review_id: str,
    decision: reviews_pb2.ModerationDecision.ValueType,
    *reasons: reviews_pb2.ModerationReason.ValueType,
    note: str = "",
    by: str | None = None,
) -> Awaitable[reviews_pb2.Review]:
    return world.reviews.ModerateReview(
        reviews_pb2.ModerateReviewRequest(review_id=review_id, decision=decision, reasons=reasons, note=note),
        metadata=partner(by or world.retailer, scopes=MODERATE),
    )


async def test_each_automatic_check_rejects_with_its_reason_and_counts_nothing(world: World) -> None:
    cases = [
        ("Great!", reviews_pb2.MODERATION_REASON_TOO_SHORT),
        (GOOD + " The lid is shitty though.", reviews_pb2.MODERATION_REASON_PROFANITY),
        (GOOD + " Questions? Mail carla@example.org", reviews_pb2.MODERATION_REASON_PERSONAL_DATA),
        (GOOD + " Call me on +49 30 1234567.", reviews_pb2.MODERATION_REASON_PERSONAL_DATA),
    ]
    for body, reason in cases:
        author = f"consumer-{reason}-{len(body)}"
        review = await world.submit(author, 3, body)
        assert review.status == reviews_pb2.REVIEW_STATUS_REJECTED, body
        assert list(review.moderation.reasons) == [reason]
        assert review.moderation.automatic
    assert (await world.summary()).count == 0
    published = await world.events.drain()
    assert not of_type(published, events_pb2.ReviewPublished)
    assert not of_type(published, events_pb2.RatingSummaryChanged)


async def test_the_same_text_from_the_same_author_is_a_duplicate_but_not_from_another(world: World) -> None:
    first = await world.submit(world.consumer, 4, GOOD)
    other_product = await world.register_product()
    copy = await world.submit(
        world.consumer, 4, "  boils a LITRE in two minutes, and the lid closes firmly!", product_id=other_product
    )
    assert copy.status == reviews_pb2.REVIEW_STATUS_REJECTED
    assert list(copy.moderation.reasons) == [reviews_pb2.MODERATION_REASON_DUPLICATE]
    someone_else = await world.submit(world.second_consumer, 4, GOOD)
    assert someone_else.status == reviews_pb2.REVIEW_STATUS_PUBLISHED
    # Revising a review without changing its words is no duplicate of itself.
    kept = await world.revise(first, 5, GOOD)
    assert kept.status == reviews_pb2.REVIEW_STATUS_PUBLISHED


async def test_a_harsh_one_star_review_is_published_and_cannot_be_rejected_for_being_negative(world: World) -> None:
    review = await world.submit(world.consumer, 1, HARSH, title="Worst purchase ever")
    assert review.status == reviews_pb2.REVIEW_STATUS_PUBLISHED
    error = await refused(
        moderate(world, review.review_id, reviews_pb2.MODERATION_DECISION_REJECT, note="too negative for our shop"),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == ["reasons"]
    assert "negative" in (error.details() or "") or "rating" in (error.details() or "")
    got = await world.get(review.review_id)
    assert got.status == reviews_pb2.REVIEW_STATUS_PUBLISHED
    assert (await world.summary()).count == 1


async def test_a_moderator_overrides_an_automatic_rejection_and_the_review_is_published(world: World) -> None:
    review = await world.submit(world.consumer, 5, GOOD + " My model number is 030 1234 5678 on the base.")
    assert review.status == reviews_pb2.REVIEW_STATUS_REJECTED
    await world.events.drain()
    for outsider in (partner(world.maker, scopes=MODERATE), partner(world.retailer)):
        await refused(
            world.reviews.ModerateReview(
                reviews_pb2.ModerateReviewRequest(
                    review_id=review.review_id, decision=reviews_pb2.MODERATION_DECISION_PUBLISH
                ),
                metadata=outsider,
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
    published = await moderate(world, review.review_id, reviews_pb2.MODERATION_DECISION_PUBLISH, note="a model number")
    assert published.status == reviews_pb2.REVIEW_STATUS_PUBLISHED
    assert published.moderation.moderator_partner_id == world.retailer
    assert not published.moderation.automatic
    assert [m.automatic for m in published.moderation_history] == [True, False]
    assert published.body == review.body  # moderation never edits the words
    assert (await world.summary()).count == 1
    events = await world.events.drain()
    assert [e.review_id for e in of_type(events, events_pb2.ReviewPublished)] == [review.review_id]
    (moderated,) = of_type(events, events_pb2.ReviewModerated)
    assert moderated.published
    assert moderated.moderator == world.retailer


async def test_a_moderator_rejects_for_a_rule_and_the_review_leaves_the_summary(world: World) -> None:
    review = await world.submit(world.consumer, 5, "Visit cheap-kettles dot example for a coupon code, best deals!")
    assert review.status == reviews_pb2.REVIEW_STATUS_PUBLISHED
    await world.events.drain()
    rejected = await moderate(
        world,
        review.review_id,
        reviews_pb2.MODERATION_DECISION_REJECT,
        reviews_pb2.MODERATION_REASON_SPAM,
        note="advertises another shop",
    )
    assert rejected.status == reviews_pb2.REVIEW_STATUS_REJECTED
    assert list(rejected.moderation.reasons) == [reviews_pb2.MODERATION_REASON_SPAM]
    assert (await world.summary()).count == 0
    await refused(world.get(review.review_id, partner(world.far_retailer)), grpc.StatusCode.NOT_FOUND)
    author_view = await world.get(review.review_id, partner(world.retailer, acting_for=world.consumer))
    assert author_view.moderation.note == "advertises another shop"
    events = await world.events.drain()
    (moderated,) = of_type(events, events_pb2.ReviewModerated)
    assert (moderated.published, list(moderated.reasons)) == (False, ["spam"])
    assert [c.count for c in of_type(events, events_pb2.RatingSummaryChanged)] == [0, 0]
    queue = await world.listed(
        partner(world.retailer, scopes=MODERATE), product_id=world.product, status=reviews_pb2.REVIEW_STATUS_REJECTED
    )
    assert [r.review_id for r in queue] == [review.review_id]
    await refused(
        world.reviews.ListReviews(
            reviews_pb2.ListReviewsRequest(product_id=world.product, status=reviews_pb2.REVIEW_STATUS_REJECTED),
            metadata=partner(world.retailer),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert [
        r.review_id
        for r in await world.listed(SERVICE, product_id=world.product, status=reviews_pb2.REVIEW_STATUS_REJECTED)
    ] == [review.review_id]


async def test_a_revision_that_breaks_a_rule_hides_the_review_until_the_author_fixes_it(world: World) -> None:
    review = await world.submit(world.consumer, 2, HARSH)
    await world.events.drain()
    broken = await world.revise(review, 4, "Fixed after they called me. Write to carla@example.org for details.")
    assert broken.status == reviews_pb2.REVIEW_STATUS_REJECTED
    assert list(broken.moderation.reasons) == [reviews_pb2.MODERATION_REASON_PERSONAL_DATA]
    assert (await world.summary()).count == 0
    events = await world.events.drain()
    (revised,) = of_type(events, events_pb2.ReviewRevised)
    assert (revised.old_rating, revised.new_rating) == (2, 4)
    (moderated,) = of_type(events, events_pb2.ReviewModerated)
    assert (moderated.published, moderated.moderator) == (False, "automatic")
    fixed = await world.revise(review, 4, "Fixed after they called me: the replacement works without a leak.")
    assert fixed.status == reviews_pb2.REVIEW_STATUS_PUBLISHED
    assert fixed.version == 3
    summary = await world.summary()
    assert (summary.count, summary.mean) == (1, 4.0)
    events = await world.events.drain()
    assert [e.rating for e in of_type(events, events_pb2.ReviewPublished)] == [4]
    # Readers saw its 2 stars once: the revision is announced too.
    assert [(e.new_rating, e.version) for e in of_type(events, events_pb2.ReviewRevised)] == [(4, 3)]


async def test_a_review_rejected_at_once_and_then_fixed_is_only_published(world: World) -> None:
    review = await world.submit(world.consumer, 3, GOOD + " Mail me at carla@example.org")
    assert review.status == reviews_pb2.REVIEW_STATUS_REJECTED
    fixed = await world.revise(review, 3, GOOD + " Ask me in the questions section instead.")
    assert fixed.status == reviews_pb2.REVIEW_STATUS_PUBLISHED
    events = await world.events.drain()
    assert [e.review_id for e in of_type(events, events_pb2.ReviewPublished)] == [review.review_id]
    assert not of_type(events, events_pb2.ReviewRevised)  # no reader ever saw a rating of it


async def test_moderating_a_withdrawn_review_or_with_unknown_reasons_is_refused(world: World) -> None:
    review = await world.submit(world.consumer, 3, GOOD)
    error = await refused(
        moderate(world, review.review_id, reviews_pb2.MODERATION_DECISION_UNSPECIFIED), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert violated_fields(error) == ["decision"]
    error = await refused(
        moderate(
            world,
            review.review_id,
            reviews_pb2.MODERATION_DECISION_REJECT,
            reviews_pb2.MODERATION_REASON_AWAITING_DISCLOSURE,
            note="x",
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == ["reasons"]
    await world.reviews.WithdrawReview(
        reviews_pb2.WithdrawReviewRequest(review_id=review.review_id),
        metadata=partner(world.retailer, acting_for=world.consumer),
    )
    await refused(
        moderate(world, review.review_id, reviews_pb2.MODERATION_DECISION_PUBLISH), grpc.StatusCode.FAILED_PRECONDITION
    )
