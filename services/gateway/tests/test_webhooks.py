"""Webhooks with the real services, analytics deciding who may see what, and a real HTTP endpoint:
signed deliveries a partner can verify, retries of a failing endpoint, the delivery log and replay,
only events a partner may see, and a person's id only where that person consented to ``analytics``
with the partner."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from gateway_testing import Partner, Stack, unique
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collabnet.identity.v1 import identity_pb2 as identity
from collabnet_analytics import events as analytics_events
from collabnet_gateway import domain, webhooks
from collabnet_kit.nats_server import free_port
from collabnet_kit.testing import eventually

LISTED = "collabnet.supplychain.v1.ProductListed"
PLACED = "collabnet.supplychain.v1.OrderPlaced"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Endpoint:
    """A partner's webhook endpoint: answers 500 to the first ``failures`` POSTs, then 204."""

    url: str
    failures: int = 0
    received: list[Received] = field(default_factory=list)

    async def handle(self, request: Request) -> Response:
        self.received.append(Received(dict(request.headers), await request.body()))
        return Response(status_code=500 if len(self.received) <= self.failures else 204)


@asynccontextmanager
async def endpoint(failures: int = 0) -> AsyncIterator[Endpoint]:
    port = free_port()
    receiver = Endpoint(f"http://127.0.0.1:{port}/hooks", failures)
    app = Starlette(routes=[Route("/hooks", receiver.handle, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    await eventually(lambda: _started(server))
    try:
        yield receiver
    finally:
        server.should_exit = True
        await task


async def subscribe(stack: Stack, partner: Partner, url: str, *event_types: str) -> dict[str, Any]:
    response = await stack.http.post(
        "/v1/webhooks", json={"url": url, "event_types": list(event_types)}, headers=partner.auth
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


@dataclass
class Listed:
    product_id: str
    sku: str
    maker: Partner


async def listed(stack: Stack, retailer: Partner) -> Listed:
    """A new maker's new product, listed by ``retailer``."""
    maker = await stack.partner(unique("Maker"), identity.PARTNER_KIND_MANUFACTURER)
    sku = unique("SKU").replace(" ", "-")
    product = await stack.http.post(
        "/v1/products",
        json={
            "sku": sku,
            "name": "Toaster",
            "category": "kitchen",
            "kind": "finished_good",
            "maker_id": maker.id,
        },
        headers=maker.auth,
    )
    assert product.status_code == 201, product.text
    product_id: str = product.json()["product_id"]
    listing = await stack.http.post(
        "/v1/listings",
        json={
            "product_id": product_id,
            "retailer_id": retailer.id,
            "price": {"currency_code": "EUR", "amount_minor": 2999},
            "available": True,
        },
        headers=retailer.auth,
    )
    assert listing.status_code == 201, listing.text
    return Listed(product_id, sku, maker)


async def list_product(stack: Stack, retailer: Partner) -> str:
    return (await listed(stack, retailer)).product_id


async def place_order(stack: Stack, retailer: Partner, customer: str, sku: str) -> str:
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
    order = await stack.http.post("/v1/orders", json=body, headers=retailer.acting_for(customer))
    assert order.status_code == 201, order.text
    order_id: str = order.json()["order_id"]
    return order_id


async def test_a_delivery_is_signed_with_the_subscriptions_secret(stack: Stack) -> None:
    retailer = await stack.partner()
    async with endpoint() as hooks:
        subscription = await subscribe(stack, retailer, hooks.url, LISTED)
        product_id = await list_product(stack, retailer)
        await eventually(lambda: _at_least(hooks, 1))
    delivery = hooks.received[0]
    signature = delivery.headers[domain.SIGNATURE_HEADER.lower()]
    assert domain.verify(subscription["secret"], signature, delivery.body, int(time.time()))
    assert not domain.verify("another secret", signature, delivery.body, int(time.time()))
    event = json.loads(delivery.body)
    assert event["type"] == LISTED
    assert event["specversion"] == "1.0"
    assert event["data"]["product_id"] == product_id
    assert event["data"]["retailer_id"] == retailer.id
    assert delivery.headers["content-type"] == "application/cloudevents+json"
    # The secret is shown once: listing the subscriptions does not show it again.
    listed = (await stack.http.get("/v1/webhooks", headers=retailer.auth)).json()["webhooks"]
    assert [w["id"] for w in listed] == [subscription["id"]]
    assert listed[0]["secret"] is None


async def test_a_failing_endpoint_is_retried_until_it_accepts_and_the_log_tells(stack: Stack) -> None:
    retailer = await stack.partner()
    async with endpoint(failures=2) as hooks:
        subscription = await subscribe(stack, retailer, hooks.url, LISTED)
        await list_product(stack, retailer)
        log_path = f"/v1/webhooks/{subscription['id']}/deliveries"

        async def delivered() -> Any:
            deliveries = (await stack.http.get(log_path, headers=retailer.auth)).json()["deliveries"]
            return deliveries if deliveries and deliveries[0]["state"] == "delivered" else None

        [delivery] = await eventually(delivered, timeout=20)
        assert delivery["attempts"] == 3
        assert delivery["last_status_code"] == 204
        assert len(hooks.received) == 3
        # Every attempt carries the same event, each signed when it was sent.
        assert len({json.loads(r.body)["id"] for r in hooks.received}) == 1
        assert all(
            domain.verify(subscription["secret"], r.headers["x-collabnet-signature"], r.body, int(time.time()))
            for r in hooks.received
        )

        # Replay sends it once more.
        replayed = await stack.http.post(f"{log_path}/{delivery['id']}:replay", headers=retailer.auth)
        assert replayed.status_code == 202, replayed.text
        await eventually(lambda: _at_least(hooks, 4))
        assert json.loads(hooks.received[3].body)["id"] == json.loads(hooks.received[0].body)["id"]


async def test_a_partner_only_hears_of_what_it_may_see(stack: Stack) -> None:
    retailer = await stack.partner()
    outsider = await stack.partner()
    async with endpoint() as mine, endpoint() as theirs:
        await subscribe(stack, retailer, mine.url, LISTED)
        watching = await subscribe(stack, outsider, theirs.url, LISTED)
        await list_product(stack, retailer)
        await eventually(lambda: _at_least(mine, 1))
        # The outsider's subscription matched the event type but the listing is not its business.
        log = await stack.http.get(f"/v1/webhooks/{watching['id']}/deliveries", headers=outsider.auth)
        assert log.json()["deliveries"] == []
    assert theirs.received == []
    # Nor may it read the retailer's subscriptions.
    listed = (await stack.http.get("/v1/webhooks", headers=outsider.auth)).json()["webhooks"]
    assert [w["id"] for w in listed] == [watching["id"]]


async def test_a_customers_id_is_a_pseudonym_until_the_customer_consents_to_analytics_with_the_partner(
    stack: Stack,
) -> None:
    retailer = await stack.partner()
    customer = await stack.person(customer_of=retailer.id)
    product = await listed(stack, retailer)
    async with endpoint() as retailers, endpoint() as makers:
        await subscribe(stack, retailer, retailers.url, PLACED)
        await subscribe(stack, product.maker, makers.url, PLACED)
        first = await place_order(stack, retailer, customer, product.sku)
        await eventually(lambda: _at_least(retailers, 1), timeout=20)
        await eventually(lambda: _at_least(makers, 1), timeout=20)
        to_retailer, to_maker = json.loads(retailers.received[0].body), json.loads(makers.received[0].body)
        assert to_retailer["data"]["order_id"] == to_maker["data"]["order_id"] == first
        # A partner's id is never personal; the customer's is each partner's own pseudonym of them.
        assert to_retailer["data"]["retailer_id"] == retailer.id
        pseudonyms = {to_retailer["data"]["customer_id"], to_maker["data"]["customer_id"]}
        assert customer not in pseudonyms
        assert len(pseudonyms) == 2
        assert all(p.startswith("anon-") for p in pseudonyms)

        consent = await stack.http.post(
            f"/v1/parties/{customer}/consents",
            json={"partner_id": retailer.id, "purpose": "analytics", "source": "web form"},
            headers=retailer.acting_for(customer),
        )
        assert consent.status_code == 201, consent.text

        async def consent_known() -> bool:
            # The feed is minimised when it is read: the earlier order shows the customer once
            # analytics has heard of the consent.
            page = await stack.http.get("/v1/feed", params={"event_types": PLACED}, headers=retailer.auth)
            assert page.status_code == 200, page.text
            return [e["data"]["customer_id"] for e in page.json()["events"]] == [customer]

        await eventually(consent_known, timeout=20)
        second = await place_order(stack, retailer, customer, product.sku)
        await eventually(lambda: _at_least(retailers, 2), timeout=20)
        await eventually(lambda: _at_least(makers, 2), timeout=20)
    to_retailer, to_maker = json.loads(retailers.received[1].body), json.loads(makers.received[1].body)
    assert to_retailer["data"]["order_id"] == to_maker["data"]["order_id"] == second
    assert to_retailer["data"]["customer_id"] == customer
    # The consent was given to the retailer, not to the maker.
    assert to_maker["data"]["customer_id"] == json.loads(makers.received[0].body)["data"]["customer_id"]


def test_every_event_type_analytics_shares_may_be_subscribed_to() -> None:
    assert set(analytics_events.SHARED_TYPES) == webhooks.EVENT_TYPES


async def test_a_subscription_is_validated(stack: Stack) -> None:
    partner = await stack.partner()
    response = await stack.http.post(
        "/v1/webhooks", json={"url": "ftp://example.com", "event_types": ["NoSuchEvent"]}, headers=partner.auth
    )
    assert response.status_code == 400, response.text
    assert {e["field"] for e in response.json()["errors"]} == {"url", "event_types"}
    other = await stack.partner()
    mine = await subscribe(stack, partner, "https://hooks.example.com/x", LISTED)
    assert (await stack.http.delete(f"/v1/webhooks/{mine['id']}", headers=other.auth)).status_code == 404
    assert (await stack.http.delete(f"/v1/webhooks/{mine['id']}", headers=partner.auth)).status_code == 204


async def test_nul_characters_are_refused_not_stored(stack: Stack) -> None:
    """No text column can hold a NUL character (PostgreSQL refuses one outright)."""
    partner = await stack.partner()
    response = await stack.http.post(
        "/v1/webhooks", json={"url": "https://hooks.example.com/\u0000", "event_types": [LISTED]}, headers=partner.auth
    )
    assert response.status_code == 400, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["url"]
    mine = await subscribe(stack, partner, "https://hooks.example.com/x", LISTED)
    for method, path in (
        ("DELETE", "/v1/webhooks/a%00b"),
        ("GET", "/v1/webhooks/a%00b/deliveries"),
        ("POST", f"/v1/webhooks/{mine['id']}/deliveries/a%00b:replay"),
    ):
        answered = await stack.http.request(method, path, headers=partner.auth)
        assert answered.status_code == 404, (path, answered.text)
    token = base64.urlsafe_b64encode(json.dumps(["2026-11-22T10:00:00+00:00", "a\u0000"]).encode()).decode()
    listed = await stack.http.get(f"/v1/webhooks/{mine['id']}/deliveries?page_token={token}", headers=partner.auth)
    assert listed.status_code == 400, listed.text


async def _started(server: uvicorn.Server) -> bool:
    return server.started


async def _at_least(hooks: Endpoint, count: int) -> bool:
    return len(hooks.received) >= count
