"""GET /v1/feed with the real services and analytics behind it: the events a partner may see, oldest
first, in pages resumable from next_page_token, filtered by type and time; problems naming the field
at fault; the feed is the partner's own, not read acting for a consumer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from gateway_testing import Partner, Stack, unique

from collabnet.identity.v1 import identity_pb2 as identity
from collabnet_kit.testing import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")
PROBLEM = "application/problem+json"
REGISTERED = "collabnet.supplychain.v1.ProductRegistered"
LISTED = "collabnet.supplychain.v1.ProductListed"


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The JSON body of a successful response, after checking its status."""
    assert response.status_code == status, response.text
    return response.json()


def problem(response: httpx.Response, status: int, *fields: str) -> dict[str, Any]:
    """The problem document of ``response``; with ``fields``, the fields its ``errors`` must name."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["detail"]
    if fields:
        assert {e["field"] for e in body.get("errors", [])} == set(fields), body
    return body


async def feed(stack: Stack, partner: Partner, **params: Any) -> dict[str, Any]:
    page: dict[str, Any] = ok(await stack.http.get("/v1/feed", params=params, headers=partner.auth))
    assert page["next_page_token"]
    return page


async def holding(stack: Stack, partner: Partner, count: int, **params: Any) -> list[dict[str, Any]]:
    """The partner's feed once it holds ``count`` events (they arrive through the bus)."""

    async def enough() -> list[dict[str, Any]] | None:
        events: list[dict[str, Any]] = (await feed(stack, partner, page_size=1000, **params))["events"]
        assert len(events) <= count, events
        return events if len(events) == count else None

    found: list[dict[str, Any]] = await eventually(enough, timeout=20)
    return found


async def maker(stack: Stack) -> Partner:
    return await stack.partner(unique("Maker"), identity.PARTNER_KIND_MANUFACTURER)


async def product(stack: Stack, by: Partner) -> str:
    body = {"sku": f"FD-{uuid.uuid4().hex[:12]}", "name": "Toaster", "category": "kitchen", "kind": "finished_good"}
    product_id: str = ok(await stack.http.post("/v1/products", json=body, headers=by.auth), 201)["product_id"]
    return product_id


async def listing(stack: Stack, retailer: Partner, product_id: str) -> None:
    body = {"product_id": product_id, "price": {"currency_code": "EUR", "amount_minor": 2999}, "available": True}
    ok(await stack.http.post("/v1/listings", json=body, headers=retailer.auth), 201)


async def test_the_feed_pages_oldest_first_and_continues_from_next_page_token(shared_stack: Stack) -> None:
    retailer, by = await shared_stack.partner(), await maker(shared_stack)
    products = [await product(shared_stack, by) for _ in range(3)]
    for product_id in products:
        await listing(shared_stack, retailer, product_id)
    everything = await holding(shared_stack, retailer, 3)

    first = await feed(shared_stack, retailer, page_size=2)
    second = await feed(shared_stack, retailer, page_size=2, page_token=first["next_page_token"])
    assert [len(first["events"]), len(second["events"])] == [2, 1]
    paged = first["events"] + second["events"]
    assert paged == everything
    positions = [e["position"] for e in paged]
    assert positions == sorted(positions) and len(set(positions)) == 3
    assert {e["data"]["product_id"] for e in paged} == set(products)
    for event in paged:
        assert (event["type"], event["source"]) == (LISTED, "/collabnet/supplychain")
        assert event["id"] and datetime.fromisoformat(event["time"]).tzinfo is not None
        assert event["data"]["retailer_id"] == retailer.id
        assert event["data"]["price"] == {"currency_code": "EUR", "amount_minor": 2999}

    # At the end of the feed the token still says where it continues: what comes next.
    end = await feed(shared_stack, retailer, page_token=second["next_page_token"])
    assert end["events"] == []
    newer = await product(shared_stack, by)
    await listing(shared_stack, retailer, newer)

    async def next_one() -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = (await feed(shared_stack, retailer, page_token=end["next_page_token"]))["events"]
        return events

    [latest] = await eventually(next_one, timeout=20)
    assert latest["data"]["product_id"] == newer
    assert latest["position"] > positions[-1]


async def test_event_types_and_since_filter_the_feed(shared_stack: Stack) -> None:
    retailer, by = await shared_stack.partner(), await maker(shared_stack)
    product_id = await product(shared_stack, by)
    await listing(shared_stack, retailer, product_id)
    # The maker hears of its product's registration and of its listing.
    both = await holding(shared_stack, by, 2)
    assert sorted(e["type"] for e in both) == [LISTED, REGISTERED]

    only_listed = (await feed(shared_stack, by, event_types=LISTED))["events"]
    assert [(e["type"], e["data"]["product_id"]) for e in only_listed] == [(LISTED, product_id)]
    only_registered = (await feed(shared_stack, by, event_types=[REGISTERED]))["events"]
    assert [(e["type"], e["data"]["maker_id"]) for e in only_registered] == [(REGISTERED, by.id)]
    assert (await feed(shared_stack, by, event_types=[REGISTERED, LISTED]))["events"] == both

    earlier = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (await feed(shared_stack, by, since=earlier))["events"] == both
    assert (await feed(shared_stack, by, since=later))["events"] == []


async def test_the_feed_holds_the_partners_events_only(shared_stack: Stack) -> None:
    retailer, outsider, by = await shared_stack.partner(), await shared_stack.partner(), await maker(shared_stack)
    product_id = await product(shared_stack, by)
    await listing(shared_stack, retailer, product_id)
    [listed] = await holding(shared_stack, retailer, 1)
    assert (listed["type"], listed["data"]["product_id"]) == (LISTED, product_id)
    # The maker's feed has the listing too (and the registration, which is not the retailer's business).
    assert listed["id"] in {e["id"] for e in await holding(shared_stack, by, 2)}
    assert (await feed(shared_stack, outsider, page_size=1000))["events"] == []


async def test_the_feed_is_not_read_acting_for_a_consumer(shared_stack: Stack) -> None:
    retailer = await shared_stack.partner()
    customer = await shared_stack.person(customer_of=retailer.id)
    response = await shared_stack.http.get("/v1/feed", headers=retailer.acting_for(customer))
    problem(response, 403)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"page_token": "not-a-token"}, "page_token"),
        ({"event_types": "collabnet.identity.v1.PartyRegistered"}, "event_types"),
        ({"event_types": ["collabnet.supplychain.v1.ProductListed", "NoSuchEvent"]}, "event_types"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-11-22T10:00:00"}, "since"),
        ({"since": "0001-01-01T00:00:00+01:00"}, "since"),
        ({"page_size": 0}, "page_size"),
        ({"page_size": 1001}, "page_size"),
        ({"page_size": "many"}, "page_size"),
    ],
)
async def test_bad_parameters_are_400_naming_the_field(shared_stack: Stack, params: dict[str, Any], field: str) -> None:
    partner = await shared_stack.partner()
    problem(await shared_stack.http.get("/v1/feed", params=params, headers=partner.auth), 400, field)


async def test_the_feed_is_in_the_openapi_document(shared_stack: Stack) -> None:
    document = (await shared_stack.http.get("/openapi.json")).json()
    operation = document["paths"]["/v1/feed"]["get"]
    assert operation["tags"] == ["feed"]
    assert {p["name"] for p in operation["parameters"]} == {"page_token", "page_size", "event_types", "since"}
    assert {"200", "400", "401", "403", "429", "503"} <= set(operation["responses"])
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/Feed")
