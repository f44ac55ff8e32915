"""Every route of the reviews service through the gateway: a maker registers a product, a retailer
lists it, the retailer's customers buy it and review it; the maker and the retailer answer, vote,
moderate and decide where their reviews are shown. Each route's success and its refusals."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from gateway_testing import Partner, Stack, assert_routes_exercised, call, unique

from collabnet.identity.v1 import identity_pb2 as identity
from collabnet_kit.testing import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROBLEM = "application/problem+json"
BASE_SCOPES = ("network:admin", "keys:manage")
WRITER = (*BASE_SCOPES, "reviews:write")
MODERATOR = (*WRITER, "reviews:moderate")
TEXTS = (
    "The lid closes firmly and it boils a litre in two minutes flat.",
    "Solid handle, quiet heating element, and the filter is easy to clean.",
    "Scale builds up quickly here, so descale it every couple of weeks.",
    "The cord is short but the base swivels nicely on the counter top.",
)


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The RFC 9457 problem document of ``response``, after checking its status and media type."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["detail"]
    return body


def fields(body: dict[str, Any]) -> set[str]:
    return {v["field"] for v in body.get("errors", [])}


# --- setup: a product, its sellers, its buyers --------------------------------------------------------


@dataclass
class Shop:
    """Product P made by ``maker`` and listed by ``retailer``, whose customer ``buyer`` ordered it."""

    maker: Partner
    retailer: Partner
    product_id: str
    sku: str
    buyer: str


async def register_product(stack: Stack, maker: Partner) -> dict[str, Any]:
    sku = f"KT-{uuid.uuid4().hex[:12]}"
    body = {"sku": sku, "name": unique("Kettle"), "category": "kitchen/kettles", "kind": "finished_good"}
    return ok(await call(stack, "POST", "/v1/products", headers=maker.auth, json=body), 201)


async def list_product(stack: Stack, retailer: Partner, product_id: str) -> dict[str, Any]:
    body = {"product_id": product_id, "price": {"amount_minor": 4999, "currency_code": "EUR"}, "available": True}
    return ok(await call(stack, "POST", "/v1/listings", headers=retailer.auth, json=body), 201)


async def place_order(stack: Stack, retailer: Partner, customer: str, sku: str) -> dict[str, Any]:
    body = {
        "customer_id": customer,
        "retailer_id": retailer.id,
        "lines": [{"sku": sku, "quantity": 1}],
        "currency_code": "EUR",
        "contact": {
            "name": "Ada Buyer",
            "address": {"lines": ["Hauptstr. 1"], "locality": "Berlin", "postal_code": "10115", "region_code": "DE"},
        },
    }
    return ok(await call(stack, "POST", "/v1/orders", headers=retailer.acting_for(customer), json=body), 201)


async def known_to_reviews(stack: Stack, partner: Partner, product_id: str) -> None:
    """Wait until reviews has learnt the product from supplychain's ProductRegistered."""

    async def known() -> bool:
        response = await call(
            stack, "GET", "/v1/products/{product_id}/rating-summary", headers=partner.auth, product_id=product_id
        )
        return response.status_code == 200

    await eventually(known, timeout=10)


async def open_shop(stack: Stack) -> Shop:
    maker = await stack.partner(unique("Maker"), identity.PARTNER_KIND_MANUFACTURER, scopes=WRITER)
    retailer = await stack.partner(unique("Retailer"), scopes=MODERATOR)
    product = await register_product(stack, maker)
    await list_product(stack, retailer, product["product_id"])
    buyer = await stack.person(unique("Buyer"), customer_of=retailer.id)
    await place_order(stack, retailer, buyer, product["sku"])
    await known_to_reviews(stack, retailer, product["product_id"])
    return Shop(maker, retailer, product["product_id"], product["sku"], buyer)


async def submit(
    stack: Stack, shop: Shop, author: str, rating: int, body: str, *, title: str = "", partner: Partner | None = None
) -> httpx.Response:
    through = partner or shop.retailer
    review = {"product_id": shop.product_id, "author_id": author, "rating": rating, "title": title, "body": body}
    return await call(stack, "POST", "/v1/reviews", headers=through.acting_for(author), json=review)


async def review_of(stack: Stack, shop: Shop, author: str, rating: int, body: str) -> dict[str, Any]:
    """A published review by ``author`` through the shop's retailer."""
    review = ok(await submit(stack, shop, author, rating, body), 201)
    assert review["status"] == "published", review
    return review


async def get_review(stack: Stack, review_id: str, headers: dict[str, str], **params: str) -> httpx.Response:
    return await call(
        stack, "GET", "/v1/reviews/{review_id}", headers=headers, params=params or None, review_id=review_id
    )


async def summary(stack: Stack, shop: Shop) -> dict[str, Any]:
    return ok(
        await call(
            stack,
            "GET",
            "/v1/products/{product_id}/rating-summary",
            headers=shop.maker.auth,
            product_id=shop.product_id,
        )
    )


async def list_reviews(stack: Stack, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    return ok(await call(stack, "GET", "/v1/reviews", headers=headers, params=params))


# --- writing a review -------------------------------------------------------------------------------


async def test_a_buyer_reviews_the_product_and_it_is_published_then_verified(shared_stack: Stack) -> None:
    shop = await open_shop(shared_stack)
    response = await submit(shared_stack, shop, shop.buyer, 2, TEXTS[2], title="Descale often")
    review = ok(response, 201)
    assert review["product_id"] == shop.product_id
    assert review["author_id"] == shop.buyer
    assert review["channel_partner_id"] == shop.retailer.id
    assert (review["rating"], review["title"], review["body"]) == (2, "Descale often", TEXTS[2])
    assert review["status"] == "published"
    assert review["version"] == 1
    assert review["revision"] == 1
    assert review["moderation"]["automatic"] is True
    assert review["moderation"]["status"] == "published"
    assert review["publish_time"].endswith("Z")

    # The order reached reviews as an event: the review is (or becomes) a verified purchase.
    async def verified() -> dict[str, Any] | None:
        shown = ok(await get_review(shared_stack, review["review_id"], shop.maker.auth))
        return shown if shown["disclosure"].get("verified_purchase") else None

    shown = await eventually(verified, timeout=10)
    assert shown["disclosure"]["revision_bought"] == 1
    assert shown["disclosure"]["syndicated_from"] == shop.retailer.id  # shown on the maker's page


async def test_a_retried_submission_with_the_same_idempotency_key_returns_the_first_review(
    shared_stack: Stack,
) -> None:
    shop = await open_shop(shared_stack)
    body = {"product_id": shop.product_id, "author_id": shop.buyer, "rating": 5, "body": TEXTS[0]}
    headers = shop.retailer.acting_for(shop.buyer) | {"Idempotency-Key": f"review-{uuid.uuid4().hex}"}
    first = ok(await call(shared_stack, "POST", "/v1/reviews", headers=headers, json=body), 201)
    again = await call(shared_stack, "POST", "/v1/reviews", headers=headers, json=body)
    assert ok(again, 201)["review_id"] == first["review_id"]
    assert again.headers["idempotency-replayed"] == "true"


async def test_a_review_breaking_an_automatic_rule_is_rejected_and_shown_only_to_insiders(
    shared_stack: Stack,
) -> None:
    shop = await open_shop(shared_stack)
    review = ok(await submit(shared_stack, shop, shop.buyer, 4, "Great kettle, mail me at ada@example.com"), 201)
    assert review["status"] == "rejected"
    assert review["moderation"]["reasons"] == ["personal_data"]
    assert review["moderation"]["automatic"] is True
    # The author sees it with its moderation history; another partner does not see it at all.
    own = ok(await get_review(shared_stack, review["review_id"], shop.retailer.acting_for(shop.buyer)))
    assert [m["status"] for m in own["moderation_history"]] == ["rejected"]
    stranger = await shared_stack.partner()
    body = problem(await get_review(shared_stack, review["review_id"], stranger.auth), 404)
    assert review["review_id"] in body["detail"]
    assert (await summary(shared_stack, shop))["count"] == 0


@pytest.mark.parametrize(
    ("review", "expected"),
    [
        ({"rating": 6, "body": "", "media_urls": ["ftp://example.com/a.jpg"]}, {"rating", "body", "media_urls[0]"}),
        ({"rating": 3, "body": TEXTS[0], "title": "x" * 201}, {"title"}),
        ({"rating": 3, "body": TEXTS[0], "incentive": "a free sample"}, {"incentive"}),
        ({"rating": "five", "body": TEXTS[0]}, {"rating"}),
    ],
)
async def test_submitting_invalid_fields_is_400_naming_each_one(
    shared_stack: Stack, review: dict[str, Any], expected: set[str]
) -> None:
    retailer = await shared_stack.partner(scopes=WRITER)
    author = await shared_stack.person(customer_of=retailer.id)
    body = {"product_id": str(uuid.uuid4()), "author_id": author} | review
    response = await call(shared_stack, "POST", "/v1/reviews", headers=retailer.acting_for(author), json=body)
    assert fields(problem(response, 400)) == expected


async def test_submitting_a_review_is_refused_by_the_rules_of_who_writes_what(shared_stack: Stack) -> None:
    shop = await open_shop(shared_stack)
    review = {"product_id": shop.product_id, "author_id": shop.buyer, "rating": 4, "body": TEXTS[1]}
    # A partner writes only for the party it acts for, and only with the reviews:write scope.
    as_itself = await call(shared_stack, "POST", "/v1/reviews", headers=shop.retailer.auth, json=review)
    assert "written by its author" in problem(as_itself, 403)["detail"]
    reader = await shared_stack.partner()
    reader_customer = await shared_stack.person(customer_of=reader.id)
    no_scope = await call(
        shared_stack,
        "POST",
        "/v1/reviews",
        headers=reader.acting_for(reader_customer),
        json=review | {"author_id": reader_customer},
    )
    assert "reviews:write" in problem(no_scope, 403)["detail"]
    # An unknown product is 404; a second review of the same product is 409 naming the first.
    unknown = await call(
        shared_stack,
        "POST",
        "/v1/reviews",
        headers=shop.retailer.acting_for(shop.buyer),
        json=review | {"product_id": str(uuid.uuid4())},
    )
    problem(unknown, 404)
    first = await review_of(shared_stack, shop, shop.buyer, 4, TEXTS[1])
    second = await submit(shared_stack, shop, shop.buyer, 1, TEXTS[3])
    assert first["review_id"] in problem(second, 409)["detail"]


# --- reading reviews --------------------------------------------------------------------------------


async def test_a_published_review_is_read_with_its_responses_and_an_unknown_one_is_404(shared_stack: Stack) -> None:
    shop = await open_shop(shared_stack)
    review = await review_of(shared_stack, shop, shop.buyer, 5, TEXTS[0])
    anyone = await shared_stack.partner()
    shown = ok(await get_review(shared_stack, review["review_id"], anyone.auth, listing_partner_id=shop.retailer.id))
    assert shown["review_id"] == review["review_id"]
    assert shown["body"] == TEXTS[0]
    assert shown["disclosure"].get("syndicated_from", "") == ""  # read as on the channel's own listing
    assert shown["moderation_history"] == []  # only insiders see the decisions
    assert shown["history"] == []
    problem(await get_review(shared_stack, str(uuid.uuid4()), anyone.auth), 404)


async def test_a_products_reviews_are_sorted_filtered_and_paged(shared_stack: Stack) -> None:
    shop = await open_shop(shared_stack)
    second = await shared_stack.person(customer_of=shop.retailer.id)
    await place_order(shared_stack, shop.retailer, second, shop.sku)
    never_bought = await shared_stack.person(customer_of=shop.retailer.id)
    ids = {}
    for author, rating, text in ((shop.buyer, 5, TEXTS[0]), (second, 2, TEXTS[2]), (never_bought, 4, TEXTS[3])):
        ids[rating] = (await review_of(shared_stack, shop, author, rating, text))["review_id"]
    headers = shop.retailer.auth
    recent = await list_reviews(shared_stack, headers, product_id=shop.product_id)
    assert [r["review_id"] for r in recent["reviews"]] == [ids[4], ids[2], ids[5]]
    assert recent["next_page_token"] == ""
    low = await list_reviews(shared_stack, headers, product_id=shop.product_id, sort="rating_low")
    assert [r["rating"] for r in low["reviews"]] == [2, 4, 5]
    high = await list_reviews(shared_stack, headers, product_id=shop.product_id, sort="rating_high", page_size=2)
    assert [r["rating"] for r in high["reviews"]] == [5, 4]
    rest = await list_reviews(
        shared_stack,
        headers,
        product_id=shop.product_id,
        sort="rating_high",
        page_size=2,
        page_token=high["next_page_token"],
    )
    assert [r["rating"] for r in rest["reviews"]] == [2]
    chosen = await list_reviews(shared_stack, headers, product_id=shop.product_id, ratings=[1, 2])
    assert [r["review_id"] for r in chosen["reviews"]] == [ids[2]]

    async def verified() -> list[str] | None:
        found = await list_reviews(shared_stack, headers, product_id=shop.product_id, verified_only=True)
        listed = sorted(r["review_id"] for r in found["reviews"])
        return listed if listed == sorted([ids[5], ids[2]]) else None

    await eventually(verified, timeout=10)
    by_author = await list_reviews(shared_stack, shop.retailer.acting_for(second), author_id=second)
    assert [r["review_id"] for r in by_author["reviews"]] == [ids[2]]


async def test_the_moderation_queue_lists_rejected_reviews_for_the_channels_moderators(shared_stack: Stack) -> None:
    shop = await open_shop(shared_stack)
    rejected = ok(await submit(shared_stack, shop, shop.buyer, 3, "Call me on +49 30 1234 5678 about it"), 201)
    assert rejected["status"] == "rejected"
    queue = await list_reviews(shared_stack, shop.retailer.auth, product_id=shop.product_id, status="rejected")
    assert [r["review_id"] for r in queue["reviews"]] == [rejected["review_id"]]
    published = await list_reviews(shared_stack, shop.retailer.auth, product_id=shop.product_id)
    assert published["reviews"] == []
    # The maker's key has no reviews:moderate scope: the queue is not for it.
    params = {"product_id": shop.product_id, "status": "rejected"}
    refused = await call(shared_stack, "GET", "/v1/reviews", headers=shop.maker.auth, params=params)
    assert "reviews:moderate" in problem(refused, 403)["detail"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"product_id": "p", "author_id": "a"}, {"product_id"}),
        ({}, {"product_id"}),
        ({"product_id": "p", "ratings": [0, 6]}, {"ratings"}),
        ({"product_id": "p", "revision": -1}, {"revision"}),
        ({"product_id": "p", "sort": "oldest"}, {"sort"}),
        ({"product_id": "p", "status": "hidden"}, {"status"}),
        ({"product_id": "p", "verified_only": "maybe"}, {"verified_only"}),
        ({"product_id": "p", "page_token": "not-a-token"}, {"page_token"}),
        ({"product_id": "p", "page_size": 1000}, {"page_size"}),
    ],
)
async def test_listing_reviews_with_bad_filters_is_400_naming_the_filter(
    shared_stack: Stack, params: dict[str, Any], expected: set[str]
) -> None:
    partner = await shared_stack.partner()
    response = await call(shared_stack, "GET", "/v1/reviews", headers=partner.auth, params=params)
    assert fields(problem(response, 400)) == expected


async def test_listing_an_unknown_products_reviews_is_404(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    response = await call(shared_stack, "GET", "/v1/reviews", headers=partner.auth, params={"product_id": "nope"})
    assert "nope" in problem(response, 404)["detail"]


# --- revising and withdrawing -----------------------------------------------------------------------


async def test_the_author_revises_a_review_as_a_dated_new_version(shared_stack: Stack) -> None:
    shop = await open_shop(shared_stack)
    review = await review_of(shared_stack, shop, shop.buyer, 2, TEXTS[2])
    revised = ok(
        await call(
            shared_stack,
            "POST",
            "/v1/reviews/{review_id}:revise",
            headers=shop.retailer.acting_for(shop.buyer),
            json={"rating": 4, "title": "Better after the fix", "body": TEXTS[1]},
            review_id=review["review_id"],
        )
    )
    assert (revised["version"], revised["rating"], revised["body"]) == (2, 4, TEXTS[1])
    assert revised["status"] == "published"
    assert [(v["version"], v["rating"], v["body"]) for v in revised["history"]] == [(1, 2, TEXTS[2])]
    shown = ok(await get_review(shared_stack, review["review_id"], shop.maker.auth))
    assert (shown["rating"], shown["version"]) == (4, 2)
    assert [v["rating"] for v in shown["history"]] == [2]
    rated = await summary(shared_stack, shop)
    assert (rated["count"], rated["mean"], rated["distribution"]) == (1, 4.0, [0, 0, 0, 1, 0])


async def test_revising_is_for_the_author_with_valid_words_and_not_after_withdrawal(shared_stack: Stack) -> None:
    shop = await open_shop(shared_stack)
    review = await review_of(shared_stack, shop, shop.buyer, 2, TEXTS[2])
    path = "/v1/reviews/{review_id}:revise"
    words = {"rating": 5, "body": TEXTS[0]}
    other = await shared_stack.person(customer_of=shop.retailer.id)
    by_other = await call(
        shared_stack, "POST", path, headers=shop.retailer.acting_for(other), json=words, review_id=review["review_id"]
    )
    assert "only the author" in problem(by_other, 403)["detail"]
    as_author = shop.retailer.acting_for(shop.buyer)
    invalid = await call(
        shared_stack, "POST", path, headers=as_author, json={"rating": 0, "body": " "}, review_id=review["review_id"]
    )
    assert fields(problem(invalid, 400)) == {"rating", "body"}
    problem(await call(shared_stack, "POST", path, headers=as_author, json=words, review_id=str(uuid.uuid4())), 404)
    await call(
        shared_stack, "POST", "/v1/reviews/{review_id}:withdraw", headers=as_author, review_id=review["review_id"]
    )
    after = await call(shared_stack, "POST", path, headers=as_author, json=words, review_id=review["review_id"])
    assert "withdrawn" in problem(after, 422)["detail"]


async def test_the_author_withdraws_a_review_and_it_leaves_the_page_and_the_summary(shared_stack: Stack) -> None:
    shop = await open_shop(shared_stack)
    review = await review_of(shared_stack, shop, shop.buyer, 1, TEXTS[3])
    assert (await summary(shared_stack, shop))["count"] == 1
    withdrawn = ok(
        await call(
            shared_stack,
            "POST",
            "/v1/reviews/{review_id}:withdraw",
            headers=shop.retailer.acting_for(shop.buyer),
            review_id=review["review_id"],
        )
    )
    assert withdrawn["status"] == "withdrawn"
    assert withdrawn["withdraw_time"].endswith("Z")
    rated = await summary(shared_stack, shop)
    assert (rated["count"], rated["distribution"]) == (0, [0, 0, 0, 0, 0])
    assert (await list_reviews(shared_stack, shop.retailer.auth, product_id=shop.product_id))["reviews"] == []
    problem(await get_review(shared_stack, review["review_id"], shop.maker.auth), 404)


async def test_withdrawing_someone_elses_or_an_unknown_review_is_refused(shared_stack: Stack) -> None:
    shop = await open_shop(shared_stack)
    review = await review_of(shared_stack, shop, shop.buyer, 1, TEXTS[3])
    path = "/v1/reviews/{review_id}:withdraw"
    # The channel partner acting as itself is not the author.
    refused = await call(shared_stack, "POST", path, headers=shop.retailer.auth, review_id=review["review_id"])
    assert "only the author" in problem(refused, 403)["detail"]
    unknown = await call(
        shared_stack, "POST", path, headers=shop.retailer.acting_for(shop.buyer), review_id=str(uuid.uuid4())
    )
    problem(unknown, 404)
    assert (await summary(shared_stack, shop))["count"] == 1


# --- responses and votes ----------------------------------------------------------------------------


async def test_the_maker_and_the_retailer_respond_and_edit_their_responses(shared_stack: Stack) -> None:
    shop = await open_shop(shared_stack)
    review = await review_of(shared_stack, shop, shop.buyer, 2, TEXTS[2])
    path = "/v1/reviews/{review_id}:respond"
    first = ok(
        await call(
            shared_stack,
            "POST",
            path,
            headers=shop.maker.auth,
            json={"body": "Sorry about the scale: a filter is on its way."},
            review_id=review["review_id"],
        )
    )
    assert (first["partner_id"], first["review_id"], first["edits"]) == (shop.maker.id, review["review_id"], 0)
    edited = ok(
        await call(
            shared_stack,
            "POST",
            path,
            headers=shop.maker.auth,
            json={"body": "A free filter is on its way to you."},
            review_id=review["review_id"],
        )
    )
    assert edited["response_id"] == first["response_id"]
    assert (edited["edits"], edited["body"]) == (1, "A free filter is on its way to you.")

    # The retailer sells it: once reviews has learnt the listing, it may respond too.
    async def retailer_responds() -> dict[str, Any] | None:
        response = await call(
            shared_stack,
            "POST",
            path,
            headers=shop.retailer.auth,
            json={"body": "We can swap it in store."},
            review_id=review["review_id"],
        )
        return response.json() if response.status_code == 200 else None

    await eventually(retailer_responds, timeout=10)
    shown = ok(await get_review(shared_stack, review["review_id"], shop.maker.auth))
    assert {(r["partner_id"], r["body"]) for r in shown["responses"]} == {
        (shop.maker.id, "A free filter is on its way to you."),
        (shop.retailer.id, "We can swap it in store."),
    }


async def test_responding_is_for_makers_and_sellers_with_a_body(shared_stack: Stack) -> None:
    shop = await open_shop(shared_stack)
    review = await review_of(shared_stack, shop, shop.buyer, 2, TEXTS[2])
    path = "/v1/reviews/{review_id}:respond"
    unrelated = await shared_stack.partner(scopes=WRITER)
    refused = await call(
        shared_stack, "POST", path, headers=unrelated.auth, json={"body": "Buy ours"}, review_id=review["review_id"]
    )
    assert "makes or sells" in problem(refused, 403)["detail"]
    empty = await call(
        shared_stack, "POST", path, headers=shop.maker.auth, json={"body": "  "}, review_id=review["review_id"]
    )
    assert fields(problem(empty, 400)) == {"body"}
    unknown = await call(shared_stack, "POST", path, headers=shop.maker.auth, json={"body": "Hi"}, review_id="nope")
    problem(unknown, 404)
    assert ok(await get_review(shared_stack, review["review_id"], shop.maker.auth))["responses"] == []


async def test_another_customer_votes_a_review_helpful_changes_and_takes_back_the_vote(shared_stack: Stack) -> None:
    shop = await open_shop(shared_stack)
    review = await review_of(shared_stack, shop, shop.buyer, 4, TEXTS[1])
    reader = await shared_stack.person(customer_of=shop.retailer.id)
    path = "/v1/reviews/{review_id}:vote"
    headers = shop.retailer.acting_for(reader)
    counts = []
    for vote in ("helpful", "not_helpful", "none"):
        voted = ok(
            await call(shared_stack, "POST", path, headers=headers, json={"vote": vote}, review_id=review["review_id"])
        )
        assert (voted["voter_id"], voted["vote"]) == (reader, vote)
        counts.append((voted["helpful_votes"], voted["unhelpful_votes"]))
    assert counts == [(1, 0), (0, 1), (0, 0)]
    ok(await call(shared_stack, "POST", path, headers=headers, json={"vote": "helpful"}, review_id=review["review_id"]))
    shown = ok(await get_review(shared_stack, review["review_id"], shop.maker.auth))
    assert (shown["helpful_votes"], shown["unhelpful_votes"]) == (1, 0)


async def test_voting_is_refused_for_the_author_a_withdrawn_review_and_an_unknown_vote(shared_stack: Stack) -> None:
    shop = await open_shop(shared_stack)
    review = await review_of(shared_stack, shop, shop.buyer, 4, TEXTS[1])
    path = "/v1/reviews/{review_id}:vote"
    own = await call(
        shared_stack,
        "POST",
        path,
        headers=shop.retailer.acting_for(shop.buyer),
        json={"vote": "helpful"},
        review_id=review["review_id"],
    )
    assert "own review" in problem(own, 422)["detail"]
    reader = await shared_stack.person(customer_of=shop.retailer.id)
    headers = shop.retailer.acting_for(reader)
    bad = await call(shared_stack, "POST", path, headers=headers, json={"vote": "love"}, review_id=review["review_id"])
    assert fields(problem(bad, 400)) == {"vote"}
    missing = await call(shared_stack, "POST", path, headers=headers, json={}, review_id=review["review_id"])
    assert fields(problem(missing, 400)) == {"vote"}
    await call(
        shared_stack,
        "POST",
        "/v1/reviews/{review_id}:withdraw",
        headers=shop.retailer.acting_for(shop.buyer),
        review_id=review["review_id"],
    )
    late = await call(
        shared_stack, "POST", path, headers=headers, json={"vote": "helpful"}, review_id=review["review_id"]
    )
    assert "withdrawn" in problem(late, 422)["detail"]


# --- moderation -------------------------------------------------------------------------------------


async def test_the_channels_moderator_rejects_citing_a_rule_and_publishes_again(shared_stack: Stack) -> None:
    shop = await open_shop(shared_stack)
    review = await review_of(shared_stack, shop, shop.buyer, 5, TEXTS[0])
    path = "/v1/reviews/{review_id}:moderate"
    rejected = ok(
        await call(
            shared_stack,
            "POST",
            path,
            headers=shop.retailer.auth,
            json={"decision": "reject", "reasons": ["off_topic"], "note": "About the shop's parking, not the kettle"},
            review_id=review["review_id"],
        )
    )
    assert rejected["status"] == "rejected"
    decision = rejected["moderation"]
    assert (decision["reasons"], decision["moderator_partner_id"], decision["automatic"]) == (
        ["off_topic"],
        shop.retailer.id,
        False,
    )
    assert [m["status"] for m in rejected["moderation_history"]] == ["published", "rejected"]
    assert (await summary(shared_stack, shop))["count"] == 0
    problem(await get_review(shared_stack, review["review_id"], shop.maker.auth), 404)
    published = ok(
        await call(
            shared_stack,
            "POST",
            path,
            headers=shop.retailer.auth,
            json={"decision": "publish"},
            review_id=review["review_id"],
        )
    )
    assert published["status"] == "published"
    assert (await summary(shared_stack, shop))["count"] == 1


async def test_moderating_is_for_the_channel_with_a_rule_and_a_note(shared_stack: Stack) -> None:
    shop = await open_shop(shared_stack)
    review = await review_of(shared_stack, shop, shop.buyer, 1, TEXTS[3])
    path = "/v1/reviews/{review_id}:moderate"
    no_rule = await call(
        shared_stack,
        "POST",
        path,
        headers=shop.retailer.auth,
        json={"decision": "reject"},
        review_id=review["review_id"],
    )
    assert fields(problem(no_rule, 400)) == {"reasons", "note"}
    no_decision = await call(
        shared_stack, "POST", path, headers=shop.retailer.auth, json={}, review_id=review["review_id"]
    )
    assert fields(problem(no_decision, 400)) == {"decision"}
    # A moderator of another channel (even one selling the product) has a stake and does not moderate.
    other = await shared_stack.partner(scopes=MODERATOR)
    reject = {"decision": "reject", "reasons": ["spam"], "note": "Looks paid for"}
    by_other = await call(shared_stack, "POST", path, headers=other.auth, json=reject, review_id=review["review_id"])
    assert "moderated by the partner they came through" in problem(by_other, 403)["detail"]
    by_maker = await call(
        shared_stack, "POST", path, headers=shop.maker.auth, json=reject, review_id=review["review_id"]
    )
    assert "reviews:moderate" in problem(by_maker, 403)["detail"]
    unknown = await call(shared_stack, "POST", path, headers=shop.retailer.auth, json=reject, review_id="nope")
    problem(unknown, 404)
    await call(
        shared_stack,
        "POST",
        "/v1/reviews/{review_id}:withdraw",
        headers=shop.retailer.acting_for(shop.buyer),
        review_id=review["review_id"],
    )
    withdrawn = await call(
        shared_stack, "POST", path, headers=shop.retailer.auth, json=reject, review_id=review["review_id"]
    )
    problem(withdrawn, 422)


# --- summaries --------------------------------------------------------------------------------------


async def test_the_rating_summary_counts_every_published_review_overall_and_per_revision(shared_stack: Stack) -> None:
    shop = await open_shop(shared_stack)
    authors = [shop.buyer, *[await shared_stack.person(customer_of=shop.retailer.id) for _ in range(2)]]
    for author, rating, text in zip(authors, (5, 2, 4), TEXTS, strict=False):
        await review_of(shared_stack, shop, author, rating, text)
    rated = await summary(shared_stack, shop)
    assert rated["product_id"] == shop.product_id
    assert rated["revision"] == 0
    assert rated["count"] == 3
    assert rated["mean"] == pytest.approx(11 / 3)
    assert rated["distribution"] == [0, 1, 0, 1, 1]
    assert rated["smoothed_mean"] == pytest.approx((5 * 3.0 + 11) / (5 + 3))
    assert (rated["trend"]["count"], len(rated["trend"]["days"])) == (3, 30)
    assert rated["trend"]["days"][-1]["count"] == 3
    assert [(r["revision"], r["count"]) for r in rated["revisions"]] == [(1, 3)]


async def test_the_summary_of_an_unknown_product_is_404(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    response = await call(
        shared_stack,
        "GET",
        "/v1/products/{product_id}/rating-summary",
        headers=partner.auth,
        product_id=str(uuid.uuid4()),
    )
    problem(response, 404)


# --- syndication ------------------------------------------------------------------------------------


async def test_a_retailer_keeps_its_reviews_on_its_own_listings(shared_stack: Stack) -> None:
    shop = await open_shop(shared_stack)
    review = await review_of(shared_stack, shop, shop.buyer, 5, TEXTS[0])
    other = await shared_stack.partner(unique("Other retailer"), scopes=WRITER)
    await list_product(shared_stack, other, shop.product_id)

    async def on_other_listing() -> list[dict[str, Any]]:
        found = await list_reviews(shared_stack, other.auth, product_id=shop.product_id)
        return list(found["reviews"])

    syndicated = await eventually(on_other_listing, timeout=10)
    assert [(r["review_id"], r["disclosure"]["syndicated_from"]) for r in syndicated] == [
        (review["review_id"], shop.retailer.id)
    ]
    path = "/v1/syndication-policies/{partner_id}"
    default = ok(await call(shared_stack, "GET", path, headers=other.auth, partner_id=shop.retailer.id))
    assert (default["partner_id"], default["opt_out"]) == (shop.retailer.id, False)
    assert "update_time" not in default

    updated = ok(
        await call(
            shared_stack,
            "PUT",
            "/v1/syndication-policies",
            headers=shop.retailer.auth,
            json={"partner_id": shop.retailer.id, "opt_out": True},
        )
    )
    assert (updated["partner_id"], updated["opt_out"]) == (shop.retailer.id, True)
    policy = ok(await call(shared_stack, "GET", path, headers=other.auth, partner_id=shop.retailer.id))
    assert policy["opt_out"] is True
    assert policy["update_time"] == updated["update_time"]
    assert (await list_reviews(shared_stack, other.auth, product_id=shop.product_id))["reviews"] == []
    own = await list_reviews(shared_stack, shop.retailer.auth, product_id=shop.product_id)
    assert [r["review_id"] for r in own["reviews"]] == [review["review_id"]]


async def test_a_syndication_policy_is_changed_only_by_its_partner(shared_stack: Stack) -> None:
    owner = await shared_stack.partner()
    intruder = await shared_stack.partner()
    path = "/v1/syndication-policies"
    refused = await call(
        shared_stack, "PUT", path, headers=intruder.auth, json={"partner_id": owner.id, "opt_out": True}
    )
    assert owner.id in problem(refused, 403)["detail"]
    unnamed = await call(shared_stack, "PUT", path, headers=owner.auth, json={"opt_out": True})
    assert fields(problem(unnamed, 400)) == {"policy.partner_id"}
    ill_typed = await call(
        shared_stack, "PUT", path, headers=owner.auth, json={"partner_id": owner.id, "opt_out": "sometimes"}
    )
    assert fields(problem(ill_typed, 400)) == {"policy.opt_out"}
    unsigned = await call(shared_stack, "GET", "/v1/syndication-policies/{partner_id}", headers={}, partner_id=owner.id)
    problem(unsigned, 401)
    policy = ok(
        await call(
            shared_stack, "GET", "/v1/syndication-policies/{partner_id}", headers=owner.auth, partner_id=owner.id
        )
    )
    assert policy["opt_out"] is False


# --- coverage ---------------------------------------------------------------------------------------


async def test_every_reviews_route_was_exercised_on_success_and_on_error(shared_stack: Stack) -> None:
    """Runs last: the tests above called every route of reviews, each with success and with a refusal."""
    assert_routes_exercised(shared_stack, "reviews")
