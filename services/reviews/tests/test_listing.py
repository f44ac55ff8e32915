"""ListReviews: by product or author, sorted, filtered, paged, and syndicated across listings."""

from __future__ import annotations

import grpc
from reviews_testing import SERVICE, World, partner, refused, violated_fields

from collabnet.reviews.v1 import reviews_pb2
from collabnet.supplychain.v1 import events_pb2 as supplychain

TEXTS = [
    "The lid closes firmly and it boils a litre in two minutes flat.",
    "Solid handle, quiet heating element, and the filter is easy to clean.",
    "Scale builds up quickly here, so descale it every couple of weeks.",
    "The cord is short but the base swivels nicely on the counter top.",
    "Water tastes of plastic for the first few days, then it is fine.",
]


async def five_reviews(world: World) -> list[reviews_pb2.Review]:
    reviews = []
    for index, (rating, text) in enumerate(zip([5, 1, 3, 4, 2], TEXTS, strict=True)):
        reviews.append(await world.submit(f"author-{index}", rating, text))
    return reviews


async def test_sorts_order_reviews_by_recency_helpfulness_and_rating(world: World) -> None:
    reviews = await five_reviews(world)
    ids = [r.review_id for r in reviews]
    recent = await world.listed(product_id=world.product)
    assert [r.review_id for r in recent] == ids[::-1]
    for voter in ("v1", "v2"):
        await world.reviews.VoteHelpful(
            reviews_pb2.VoteHelpfulRequest(review_id=ids[2], vote=reviews_pb2.HELPFUL_VOTE_HELPFUL, voter_id=voter),
            metadata=SERVICE,
        )
    await world.reviews.VoteHelpful(
        reviews_pb2.VoteHelpfulRequest(review_id=ids[0], vote=reviews_pb2.HELPFUL_VOTE_HELPFUL, voter_id="v1"),
        metadata=SERVICE,
    )
    helpful = await world.listed(product_id=world.product, sort=reviews_pb2.REVIEW_SORT_HELPFUL)
    assert [r.review_id for r in helpful][:2] == [ids[2], ids[0]]
    assert [r.helpful_votes for r in helpful] == [2, 1, 0, 0, 0]
    high = await world.listed(product_id=world.product, sort=reviews_pb2.REVIEW_SORT_RATING_HIGH)
    assert [r.rating for r in high] == [5, 4, 3, 2, 1]
    low = await world.listed(product_id=world.product, sort=reviews_pb2.REVIEW_SORT_RATING_LOW, page_size=2)
    assert [r.rating for r in low] == [1, 2, 3, 4, 5]


async def test_paging_visits_every_review_once_in_every_sort(world: World) -> None:
    for index in range(7):
        await world.submit(f"pager-{index}", 1 + index % 5, f"{TEXTS[index % 5]} Review number {index}.")
    for sort in (
        reviews_pb2.REVIEW_SORT_RECENT,
        reviews_pb2.REVIEW_SORT_HELPFUL,
        reviews_pb2.REVIEW_SORT_RATING_HIGH,
        reviews_pb2.REVIEW_SORT_RATING_LOW,
    ):
        paged = await world.listed(product_id=world.product, sort=sort, page_size=3)
        whole = await world.listed(product_id=world.product, sort=sort, page_size=100)
        assert [r.review_id for r in paged] == [r.review_id for r in whole]
        assert len({r.review_id for r in paged}) == 7


async def test_filters_by_rating_verified_purchase_and_revision(world: World) -> None:
    reviews = await five_reviews(world)
    low = await world.listed(product_id=world.product, ratings=[1, 2])
    assert sorted(r.rating for r in low) == [1, 2]
    await world.publish(supplychain.ProductRevised(product_id=world.product, maker_id=world.maker, revision=2))
    await world.order("buyer", revision=2)
    await world.sync()
    bought = await world.submit("buyer", 4, "Bought the new revision: the lid no longer sticks at all.")
    assert bought.disclosure.verified_purchase
    assert bought.revision == 2
    verified = await world.listed(product_id=world.product, verified_only=True)
    assert [r.review_id for r in verified] == [bought.review_id]
    second = await world.listed(product_id=world.product, revision=2)
    assert [r.review_id for r in second] == [bought.review_id]
    first = await world.listed(product_id=world.product, revision=1)
    assert {r.review_id for r in first} == {r.review_id for r in reviews}


async def test_bad_list_requests_name_their_field(world: World) -> None:
    for request, field_name in (
        (reviews_pb2.ListReviewsRequest(), "product_id"),
        (reviews_pb2.ListReviewsRequest(product_id=world.product, ratings=[6]), "ratings"),
        (reviews_pb2.ListReviewsRequest(product_id=world.product, page_size=1000), "page_size"),
        (reviews_pb2.ListReviewsRequest(product_id=world.product, page_token="garbage!"), "page_token"),
        (reviews_pb2.ListReviewsRequest(product_id=world.product, sort=99), "sort"),  # type: ignore[arg-type]
    ):
        error = await refused(world.reviews.ListReviews(request, metadata=SERVICE), grpc.StatusCode.INVALID_ARGUMENT)
        assert violated_fields(error) == [field_name]
    await five_reviews(world)
    page = await world.reviews.ListReviews(
        reviews_pb2.ListReviewsRequest(product_id=world.product, page_size=2), metadata=SERVICE
    )
    error = await refused(
        world.reviews.ListReviews(
            reviews_pb2.ListReviewsRequest(
                product_id=world.product,
                page_size=2,
                page_token=page.next_page_token,
                sort=reviews_pb2.REVIEW_SORT_HELPFUL,
            ),
            metadata=SERVICE,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == ["page_token"]


async def test_a_review_appears_wherever_the_product_is_listed_unless_its_partner_opts_out(world: World) -> None:
    native = await world.submit(world.consumer, 4, TEXTS[0])
    elsewhere = await world.submit(world.second_consumer, 2, TEXTS[1], channel=world.far_retailer)
    at_far = await world.listed(partner(world.far_retailer), product_id=world.product)
    assert {r.review_id: r.disclosure.syndicated_from for r in at_far} == {
        native.review_id: world.retailer,
        elsewhere.review_id: "",
    }
    at_maker = await world.listed(partner(world.maker), product_id=world.product)
    assert len(at_maker) == 2
    # Retailer Two does not list the product: only reviews written through it would show there.
    assert await world.listed(partner(world.other_retailer), product_id=world.product) == []
    got = await world.get(native.review_id, partner(world.far_retailer))
    assert got.disclosure.syndicated_from == world.retailer

    await refused(
        world.reviews.UpdateSyndicationPolicy(
            reviews_pb2.UpdateSyndicationPolicyRequest(
                policy=reviews_pb2.SyndicationPolicy(partner_id=world.retailer, opt_out=True)
            ),
            metadata=partner(world.far_retailer),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    policy = await world.reviews.UpdateSyndicationPolicy(
        reviews_pb2.UpdateSyndicationPolicyRequest(
            policy=reviews_pb2.SyndicationPolicy(partner_id=world.retailer, opt_out=True)
        ),
        metadata=partner(world.retailer),
    )
    assert policy.opt_out
    read = await world.reviews.GetSyndicationPolicy(
        reviews_pb2.GetSyndicationPolicyRequest(partner_id=world.retailer), metadata=partner(world.maker)
    )
    assert read.opt_out
    at_far = await world.listed(partner(world.far_retailer), product_id=world.product)
    assert [r.review_id for r in at_far] == [elsewhere.review_id]
    at_home = await world.listed(partner(world.retailer), product_id=world.product)
    assert {r.review_id for r in at_home} == {native.review_id, elsewhere.review_id}
    # The product's summary is the product's, whatever is shown where.
    assert (await world.summary()).count == 2


async def test_reviews_stay_with_their_product(world: World) -> None:
    review = await world.submit(world.consumer, 5, TEXTS[0])
    sibling = await world.register_product()
    await world.list_product(sibling, world.retailer)
    await world.sync()
    assert await world.listed(partner(world.retailer), product_id=sibling) == []
    assert (await world.summary(sibling)).count == 0
    assert [r.product_id for r in await world.listed(author_id=world.consumer)] == [review.product_id]


async def test_an_author_list_shows_readers_the_published_reviews_and_the_author_all_of_them(world: World) -> None:
    published = await world.submit(world.consumer, 4, TEXTS[0])
    other = await world.register_product()
    rejected = await world.submit(world.consumer, 3, "Too short!", product_id=other)
    readers = await world.listed(partner(world.far_retailer), author_id=world.consumer)
    assert [r.review_id for r in readers] == [published.review_id]
    mine = await world.listed(partner(world.retailer, acting_for=world.consumer), author_id=world.consumer)
    assert [r.review_id for r in mine] == [rejected.review_id, published.review_id]
    error = await refused(
        world.reviews.ListReviews(
            reviews_pb2.ListReviewsRequest(author_id=world.consumer, status=reviews_pb2.REVIEW_STATUS_REJECTED),
            metadata=partner(world.far_retailer),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == ["status"]
