"""Rating summaries stay exact under concurrent changes and are the same whichever way they are added up."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable

from reviews_testing import World, of_type, partner

from collabnet.reviews.v1 import events_pb2, reviews_pb2
from collabnet.supplychain.v1 import events_pb2 as supplychain

WORDS = ["sturdy", "quiet", "quick", "heavy", "bright", "compact", "handy", "simple", "glossy", "steady"]


def text(index: int) -> str:
    rng = random.Random(index)
    return f"Review {index}: " + " ".join(rng.choice(WORDS) for _ in range(12))


def expected(ratings: list[int]) -> tuple[int, float, list[int]]:
    distribution = [ratings.count(star) for star in range(1, 6)]
    return len(ratings), (sum(ratings) / len(ratings) if ratings else 0.0), distribution


def seen(summary: reviews_pb2.RatingSummary) -> tuple[int, float, list[int]]:
    return summary.count, summary.mean, list(summary.distribution)


async def test_50_concurrent_submissions_leave_the_summary_exact(world: World) -> None:
    ratings = [1 + (index * 7) % 5 for index in range(50)]
    submitted = await asyncio.gather(
        *(world.submit(f"crowd-{index}", rating, text(index)) for index, rating in enumerate(ratings))
    )
    assert all(r.status == reviews_pb2.REVIEW_STATUS_PUBLISHED for r in submitted)
    summary = await world.summary()
    count, mean, distribution = expected(ratings)
    assert (summary.count, list(summary.distribution)) == (count, distribution)
    assert abs(summary.mean - mean) < 1e-9
    assert (summary.trend.count, summary.trend.days[-1].count) == (50, 50)
    (revision,) = summary.revisions
    assert seen(revision) == seen(summary)
    # The last RatingSummaryChanged of the product says what the summary says.
    changed = [c for c in of_type(await world.events.drain(), events_pb2.RatingSummaryChanged) if c.revision == 0]
    assert len(changed) == 50
    assert sorted(c.count for c in changed) == list(range(1, 51))
    last = max(changed, key=lambda c: c.count)
    assert (last.count, list(last.distribution)) == (50, distribution)


async def test_concurrent_revisions_withdrawals_and_submissions_keep_the_summary_exact(world: World) -> None:
    reviews = [await world.submit(f"mixed-{index}", 1 + index % 5, text(index)) for index in range(30)]
    final = {r.review_id: r.rating for r in reviews}
    changes: list[Awaitable[reviews_pb2.Review]] = []
    for index, review in enumerate(reviews):
        if index % 3 == 0:
            new_rating = 5 - index % 5
            final[review.review_id] = new_rating
            changes.append(world.revise(review, new_rating, text(100 + index)))
        elif index % 3 == 1:
            del final[review.review_id]
            changes.append(
                world.reviews.WithdrawReview(
                    reviews_pb2.WithdrawReviewRequest(review_id=review.review_id),
                    metadata=partner(world.retailer, acting_for=review.author_id),
                )
            )
    newcomers = [world.submit(f"late-{index}", 3, text(200 + index)) for index in range(10)]
    results = await asyncio.gather(*changes, *newcomers)
    for result in results[len(changes) :]:
        final[result.review_id] = result.rating
    summary = await world.summary()
    count, mean, distribution = expected(list(final.values()))
    assert (summary.count, list(summary.distribution)) == (count, distribution)
    assert abs(summary.mean - mean) < 1e-9
    assert summary.trend.count == count
    listed = await world.listed(product_id=world.product)
    assert sorted(r.rating for r in listed) == sorted(final.values())


async def test_summaries_per_revision_add_up_to_the_product_and_track_a_redesign(world: World) -> None:
    for index in range(3):
        await world.order(f"early-{index}", revision=1)
    await world.publish(supplychain.ProductRevised(product_id=world.product, maker_id=world.maker, revision=2))
    for index in range(2):
        await world.order(f"late-{index}", revision=2)
    await world.sync()
    for index in range(3):
        await world.submit(f"early-{index}", 2, text(index))
    for index in range(2):
        await world.submit(f"late-{index}", 5, text(10 + index))
    summary = await world.summary()
    by_revision = {r.revision: r for r in summary.revisions}
    assert seen(by_revision[1]) == (3, 2.0, [0, 3, 0, 0, 0])
    assert seen(by_revision[2]) == (2, 5.0, [0, 0, 0, 0, 2])
    assert seen(summary) == (5, 3.2, [0, 3, 0, 0, 2])
    assert by_revision[2].smoothed_mean > by_revision[1].smoothed_mean
    assert summary.prior_mean == 3.0
    assert summary.prior_weight == 5.0
    assert [d.count for d in by_revision[2].trend.days][-1] == 2
    assert len(summary.trend.days) == 30
    assert summary.trend.previous_count == 0
    assert summary.trend.mean_change == 0.0
