"""The composed views with the real services: complete, degraded when a non-critical service is
down, and refused when the part they cannot do without is missing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from gateway_testing import Partner, Stack, unique

from collabnet.identity.v1 import identity_pb2 as identity
from collabnet_kit.testing import eventually

WRITER_SCOPES = ("network:admin", "keys:manage", "reviews:write")


@dataclass
class Page:
    product: str
    maker: Partner
    retailer: Partner
    customers: list[str]


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def seed(stack: Stack, *, reviews: int = 3, questions: int = 2) -> Page:
    """A maker's product listed by a retailer, reviewed by its customers, asked about in the maker's
    community, and under an active improvement initiative."""
    http = stack.http
    maker = await stack.partner(unique("Maker"), identity.PARTNER_KIND_MANUFACTURER)
    retailer = await stack.partner(unique("Retailer"), scopes=WRITER_SCOPES)
    product = await ok(
        await http.post(
            "/v1/products",
            json={
                "sku": unique("SKU").replace(" ", "-"),
                "name": "Kettle",
                "category": "kitchen",
                "kind": "finished_good",
                "maker_id": maker.id,
            },
            headers=maker.auth,
        ),
        201,
    )
    product_id = product["product_id"]
    await ok(
        await http.post(
            "/v1/listings",
            json={
                "product_id": product_id,
                "retailer_id": retailer.id,
                "price": {"currency_code": "EUR", "amount_minor": 4999},
                "available": True,
            },
            headers=retailer.auth,
        ),
        201,
    )
    customers = [await stack.person(customer_of=retailer.id) for _ in range(max(reviews, questions))]
    for index, customer in enumerate(customers[:reviews]):
        review = {
            "product_id": product_id,
            "author_id": customer,
            "channel_partner_id": retailer.id,
            "rating": 5 - index % 5,
            "title": f"Review {index}",
            "body": f"Boils water quickly and quietly, review number {index}.",
        }

        async def submitted(review: dict[str, Any] = review, customer: str = customer) -> bool:
            response = await http.post("/v1/reviews", json=review, headers=retailer.acting_for(customer))
            assert response.status_code in (201, 404), response.text  # 404 until reviews hears of the product
            return response.status_code == 201

        await eventually(submitted)
    community = await ok(
        await http.post(
            "/v1/communities",
            json={
                "partner_id": maker.id,
                "name": unique("Kettle owners"),
                "scope": {"products": {"product_ids": [product_id]}},
                "open_to_non_members": True,
            },
            headers=maker.auth,
        ),
        201,
    )
    for index, customer in enumerate(customers[:questions]):
        question = {
            "community_id": community["community_id"],
            "product_id": product_id,
            "title": f"Question {index}?",
            "body": "Does it switch itself off when the water boils?",
        }

        async def asked(question: dict[str, Any] = question, customer: str = customer) -> Any:
            response = await http.post("/v1/questions", json=question, headers=retailer.acting_for(customer))
            assert response.status_code in (201, 404, 422), response.text  # until community hears of it
            return response.json() if response.status_code == 201 else None

        asked_question = await eventually(asked)
        await ok(
            await http.post(
                f"/v1/questions/{asked_question['question_id']}/answers",
                json={"body": "Yes, it does, and it beeps as well.", "official": True},
                headers=maker.auth,
            ),
            201,
        )
    initiative = await ok(
        await http.post(
            "/v1/initiatives",
            json={
                "owner_id": maker.id,
                "title": "Quieter boil",
                "description": "Halve the noise of the boil",
                "kind": "product_redesign",
                "product_id": product_id,
                # Initiatives are shown to their owner and stakeholders.
                "stakeholders": [{"partner_id": retailer.id, "role": "seller"}],
            },
            headers=maker.auth,
        ),
        201,
    )
    await ok(
        await http.post(
            f"/v1/initiatives/{initiative['initiative_id']}:changeStage",
            json={"stage": "do", "decision": "Go"},
            headers=maker.auth,
        )
    )
    return Page(product_id, maker, retailer, customers)


async def test_the_product_page_has_every_part(stack: Stack) -> None:
    page = await seed(stack, reviews=3, questions=2)
    view = await ok(await stack.http.get(f"/v1/products/{page.product}/page", headers=page.retailer.auth))
    assert view["degraded"] == []
    assert view["product"]["product_id"] == page.product
    assert [listing["retailer_id"] for listing in view["listings"]] == [page.retailer.id]
    assert view["reviews"]["summary"]["count"] == 3
    assert {r["author_id"] for r in view["reviews"]["items"]} == set(page.customers[:3])
    assert len(view["questions"]) == 2
    assert all(len(q["top_answers"]) == 1 and q["top_answers"][0]["official"] for q in view["questions"])
    assert [i["title"] for i in view["initiatives"]] == ["Quieter boil"]


async def test_the_product_page_without_the_reviews_service_is_degraded_not_failed(stack: Stack) -> None:
    page = await seed(stack, reviews=1, questions=1)
    await stack.stop_service("reviews")
    response = await stack.http.get(f"/v1/products/{page.product}/page", headers=page.retailer.auth)
    view = await ok(response)
    assert view["degraded"] == ["reviews"]
    assert "reviews" not in view or view["reviews"] is None
    assert view["product"]["product_id"] == page.product
    assert len(view["questions"]) == 1


async def test_the_product_page_of_an_unknown_product_is_404(stack: Stack) -> None:
    partner = await stack.partner()
    response = await stack.http.get("/v1/products/nope/page", headers=partner.auth)
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_the_product_page_without_supplychain_is_503(stack: Stack) -> None:
    page = await seed(stack, reviews=0, questions=0)
    await stack.stop_service("supplychain")
    response = await stack.http.get(f"/v1/products/{page.product}/page", headers=page.retailer.auth)
    assert response.status_code == 503, response.text
    assert "product" in response.json()["detail"]


async def test_the_party_network_has_roles_and_neighborhood(stack: Stack) -> None:
    partner = await stack.partner()
    customer = await stack.person(customer_of=partner.id)
    view = await ok(await stack.http.get(f"/v1/parties/{customer}/network", headers=partner.acting_for(customer)))
    assert view["degraded"] == []
    assert view["party"]["party_id"] == customer
    assert [r["partner"]["partner_id"] for r in view["roles"]["partners"]] == [partner.id]
    assert partner.id in {n["party"]["party_id"] for n in view["neighborhood"]["parties"]}


async def test_the_case_view_gathers_the_case_its_review_and_product(stack: Stack) -> None:
    page = await seed(stack, reviews=0, questions=0)
    customer = page.customers[0] if page.customers else await stack.person(customer_of=page.retailer.id)
    review = {
        "product_id": page.product,
        "author_id": customer,
        "channel_partner_id": page.retailer.id,
        "rating": 1,
        "title": "Leaks",
        "body": "The lid leaks boiling water over the handle every time.",
    }

    async def submitted() -> Any:
        response = await stack.http.post("/v1/reviews", json=review, headers=page.retailer.acting_for(customer))
        return response.json() if response.status_code == 201 else None

    written = await eventually(submitted)

    async def opened() -> Any:
        response = await stack.http.get(f"/v1/cases?product_id={page.product}", headers=page.maker.auth)
        cases = response.json().get("cases", []) if response.status_code == 200 else []
        return cases[0] if cases else None

    case = await eventually(opened)
    view = await ok(await stack.http.get(f"/v1/cases/{case['case_id']}", headers=page.maker.auth))
    assert view["degraded"] == []
    assert view["case"]["review_id"] == written["review_id"]
    assert view["review"]["rating"] == 1
    assert view["product"]["product_id"] == page.product
    assert view["order"] is None  # the customer never ordered through the platform


async def test_the_case_view_of_an_unknown_case_is_404(stack: Stack) -> None:
    partner = await stack.partner()
    response = await stack.http.get("/v1/cases/nope", headers=partner.auth)
    assert response.status_code == 404, response.text
