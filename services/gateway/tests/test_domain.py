"""The gateway's rules, without I/O."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from google.protobuf import any_pb2

from collabnet.analytics.v1 import events_pb2 as analytics
from collabnet.identity.v1 import identity_pb2 as identity
from collabnet.supplychain.v1 import events_pb2 as supplychain
from collabnet.supplychain.v1 import supplychain_pb2
from collabnet_gateway import domain, schemas, views, webhooks
from collabnet_kit.errors import InvalidArgument


def test_a_bucket_allows_its_burst_then_one_request_per_token() -> None:
    bucket = domain.TokenBucket(rate=2.0, burst=3.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = bucket.take(0.0)
    assert wait == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0


def test_each_key_has_its_own_bucket() -> None:
    limiter = domain.RateLimiter(rate=1.0, burst=1.0)
    assert limiter.check("a", 0.0) == 0.0
    assert limiter.check("a", 0.0) > 0
    assert limiter.check("b", 0.0) == 0.0


def test_a_signature_verifies_with_the_secret_and_not_after_tampering_or_too_late() -> None:
    body = b'{"id":"e-1"}'
    header = domain.sign("whsec_x", 1_000, body)
    assert domain.verify("whsec_x", header, body, now=1_010)
    assert not domain.verify("whsec_y", header, body, now=1_010)
    assert not domain.verify("whsec_x", header, body + b" ", now=1_010)
    assert not domain.verify("whsec_x", header, body, now=1_000 + domain.TOLERANCE_SECONDS + 1)
    assert not domain.verify("whsec_x", "garbage", body, now=1_000)


def test_retries_back_off_exponentially_up_to_a_cap() -> None:
    assert [domain.backoff_seconds(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert domain.backoff_seconds(30) == 600.0


def test_the_same_request_has_the_same_fingerprint_whatever_the_json_key_order() -> None:
    a = domain.request_fingerprint("POST", "/v1/parties", b'{"a": 1, "b": 2}')
    b = domain.request_fingerprint("POST", "/v1/parties", b'{"b":2,"a":1}')
    c = domain.request_fingerprint("POST", "/v1/parties", b'{"a": 2, "b": 2}')
    assert a == b
    assert a != c


def test_a_subscription_needs_a_url_and_known_event_types() -> None:
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_subscription("ftp://x", ["collabnet.reviews.v1.Nope"], {"collabnet.reviews.v1.ReviewPublished"})
    assert {v.field for v in raised.value.violations} == {"url", "event_types"}


def test_a_shared_event_is_delivered_as_a_cloudevent_of_the_event_inside() -> None:
    listed = supplychain.ProductListed(listing_id="l", product_id="p", retailer_id="R")
    listed.price.currency_code = "EUR"
    packed = any_pb2.Any()
    packed.Pack(listed)
    shared = analytics.EventShared(
        partner_id="R",
        position=7,
        event_id="e-1",
        event_type="collabnet.supplychain.v1.ProductListed",
        event_source="supplychain",
        event=packed,
    )
    shared.event_time.FromSeconds(0)
    event = json.loads(webhooks.cloudevent(shared))
    assert event == {
        "specversion": "1.0",
        "id": "e-1",
        "type": "collabnet.supplychain.v1.ProductListed",
        "source": "supplychain",
        "time": "1970-01-01T00:00:00Z",
        "datacontenttype": "application/json",
        "data": schemas.to_json(listed),
    }
    assert event["data"]["retailer_id"] == "R"


def test_every_subscribable_event_type_can_be_opened_from_a_shared_event() -> None:
    for name in webhooks.EVENT_TYPES:
        packed = any_pb2.Any(type_url=f"type.googleapis.com/{name}")
        assert schemas.unpack(packed).DESCRIPTOR.full_name == name


def test_json_uses_short_enum_names_numbers_for_64_bit_integers_and_rfc3339_times() -> None:
    party = identity.Party(party_id="p", kind=identity.PARTY_KIND_PERSON, display_name="C")
    party.create_time.FromSeconds(0)
    data = schemas.to_json(party)
    assert data["kind"] == "person"
    assert data["create_time"] == "1970-01-01T00:00:00Z"
    assert "email" not in data  # absent, not blank
    order = supplychain.OrderPlaced(order_id="o")
    order.total.amount_minor = 2**40
    assert schemas.to_json(order)["total"]["amount_minor"] == 2**40


def test_json_fills_a_request_and_names_the_fields_it_cannot_take() -> None:
    request = schemas.fill(identity.RegisterPartyRequest(), {"kind": "organization", "display_name": "R"})
    assert request.kind == identity.PARTY_KIND_ORGANIZATION
    with pytest.raises(InvalidArgument) as raised:
        schemas.fill(identity.RegisterPartyRequest(), {"kind": "robot", "display_nam": "R", "attributes": []})
    assert {v.field for v in raised.value.violations} == {"kind", "display_nam", "attributes"}


def test_a_validation_errors_location_becomes_the_requests_field_path() -> None:
    assert domain.field_path(("body", "lines", 0, "sku")) == "lines[0].sku"
    assert domain.field_path(("body", "name"), "relationship_type") == "relationship_type.name"
    assert domain.field_path(("query", "page_size")) == "page_size"
    assert domain.field_path(("body",)) == "body"


def test_two_members_of_a_oneof_are_refused_naming_both() -> None:
    with pytest.raises(InvalidArgument) as raised:
        schemas.fill(supplychain_pb2.TraceUpstreamRequest(), {"product_id": "p", "lot_id": "l"})
    assert {v.field for v in raised.value.violations} == {"product_id", "lot_id"}
    assert schemas.fill(supplychain_pb2.TraceUpstreamRequest(), {"lot_id": "l"}).lot_id == "l"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_concurrent_requests_for_a_view_share_one_fan_out_and_it_is_kept_a_moment() -> None:
    clock = Clock()
    cache = views.ViewCache(1.0, clock)
    calls = 0
    release = asyncio.Event()

    async def compose() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        await release.wait()
        return {"n": calls, "degraded": []}

    waiting = [asyncio.create_task(cache.get(("page", "p1"), compose)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    assert [v["n"] for v in await asyncio.gather(*waiting)] == [1] * 5
    clock.now = 0.9
    assert (await cache.get(("page", "p1"), compose))["n"] == 1
    assert (await cache.get(("page", "another caller"), compose))["n"] == 2
    clock.now = 1.1
    assert (await cache.get(("page", "p1"), compose))["n"] == 3


async def test_a_degraded_or_failed_view_is_not_kept() -> None:
    cache = views.ViewCache(60.0, Clock())
    outcomes: list[Any] = [{"degraded": ["reviews"]}, RuntimeError("down"), {"degraded": []}]

    async def compose() -> dict[str, Any]:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return dict(outcome)

    assert (await cache.get(("k",), compose))["degraded"] == ["reviews"]
    with pytest.raises(RuntimeError):
        await cache.get(("k",), compose)
    assert (await cache.get(("k",), compose))["degraded"] == []
    assert (await cache.get(("k",), compose))["degraded"] == []  # kept: compose was not called again
    assert outcomes == []
