"""The improvement service's routes through the gateway, with the real services behind it.

A maker M makes a kettle that a retailer R lists; a supplier S supplies its lid seal. A customer of
R writes a 2-star review through R, which opens a feedback case for M and R (reviews ->
improvement over NATS). The tests walk the case, its supplier corrective actions, co-design, and
the improvement initiatives with their objectives, each over HTTP.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from gateway_testing import Partner, Stack, assert_routes_exercised, call, unique

from collabnet.identity.v1 import identity_pb2 as identity
from collabnet_kit.testing import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROBLEM = "application/problem+json"
RETAILER_SCOPES = ("network:admin", "keys:manage", "reviews:write")
UNKNOWN = "00000000-0000-0000-0000-000000000000"

# (method, path template) of every route a test called; compared with the catalog at the end.


# --- calling the gateway ---------------------------------------------------------------------------


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    """The JSON object of a successful ``response``, after checking its status."""
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


def fields(response: httpx.Response) -> set[str]:
    """The fields a 400 problem names."""
    return {e["field"] for e in problem(response, 400)["errors"]}


def includes(document: dict[str, Any], expected: dict[str, Any]) -> None:
    """``document`` has ``expected``'s fields, with those values (and maybe others)."""
    assert {name: document.get(name, "<absent>") for name in expected} == expected, document


def in_days(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


# --- the network around a product -----------------------------------------------------------------


@dataclass
class World:
    maker: Partner
    retailer: Partner
    supplier: Partner
    product: str
    # The supplier's seal in the product, when the world was built ``supplied``.
    component: str


async def until(check: Callable[[], Awaitable[Any]]) -> Any:
    """``check()``'s first truthy result: what another service learns from events arrives shortly."""
    return await eventually(check, timeout=15, interval=0.05)


async def register(stack: Stack, by: Partner, name: str, kind: str) -> str:
    body = {"sku": unique(name).replace(" ", "-"), "name": name, "category": "kitchen", "kind": kind}
    return str(ok(await stack.http.post("/v1/products", json=body, headers=by.auth), 201)["product_id"])


async def world(stack: Stack, *, supplied: bool = False) -> World:
    """M makes product P, R lists P; ``supplied``, P has S's seal in it. Improvement knows it all from events."""
    maker, retailer, supplier = await asyncio.gather(
        stack.partner(unique("Maker"), identity.PARTNER_KIND_MANUFACTURER),
        stack.partner(unique("Retailer"), scopes=RETAILER_SCOPES),
        stack.partner(unique("Supplier"), identity.PARTNER_KIND_SUPPLIER),
    )
    product = await register(stack, maker, "Kettle", "finished_good")
    listing = {"product_id": product, "price": {"amount_minor": 3999, "currency_code": "EUR"}, "available": True}
    listed = asyncio.create_task(stack.http.post("/v1/listings", json=listing, headers=retailer.auth))
    component = ""
    if supplied:
        component = await register(stack, supplier, "Lid seal", "component")
        bom = {"items": [{"component_id": component, "supplier_id": supplier.id, "quantity": 1}]}
        ok(await stack.http.put(f"/v1/products/{product}/structure", json=bom, headers=maker.auth))
    ok(await listed, 201)

    async def known() -> bool:
        response = await call(
            stack, "GET", "/v1/products/{product_id}/network", headers=retailer.auth, product_id=product
        )
        if response.status_code != 200:
            return False
        network = response.json()
        return bool(network["maker_id"] and network["retailer_ids"] and (network["suppliers"] or not supplied))

    await until(known)
    return World(maker, retailer, supplier, product, component)


async def review(stack: Stack, w: World, rating: int = 2) -> tuple[str, str]:
    """A new customer of R reviews P through R: (customer, review id)."""
    customer = await stack.person(customer_of=w.retailer.id)
    body = {
        "product_id": w.product,
        "author_id": customer,
        "rating": rating,
        "title": "The lid leaks",
        "body": "The lid started leaking after a week of daily use.",
    }

    async def written() -> dict[str, Any] | None:
        response = await stack.http.post("/v1/reviews", json=body, headers=w.retailer.acting_for(customer))
        if response.status_code == 404:  # reviews has not heard of the product yet
            return None
        return ok(response, 201)

    published = await until(written)
    assert published["status"] == "published", published
    return customer, published["review_id"]


async def case_of(stack: Stack, w: World, review_id: str) -> dict[str, Any]:
    """The review's case, once improvement has opened it."""

    async def opened() -> dict[str, Any] | None:
        listed = ok(await call(stack, "GET", "/v1/cases", headers=w.retailer.auth, params={"product_id": w.product}))
        return next((c for c in listed["cases"] if c["review_id"] == review_id), None)

    found: dict[str, Any] = await until(opened)
    return found


async def open_case(stack: Stack, w: World) -> dict[str, Any]:
    """A 2-star review's case, still open."""
    _, review_id = await review(stack, w)
    return await case_of(stack, w, review_id)


async def engage(stack: Stack, w: World, case: dict[str, Any], by: Partner | None = None) -> dict[str, Any]:
    response = await call(
        stack,
        "POST",
        "/v1/cases/{case_id}:engage",
        headers=(by or w.retailer).auth,
        json={"message": "We are sorry the kettle leaks. Could you tell us when it started?"},
        case_id=case["case_id"],
    )
    return ok(response)


async def investigate(stack: Stack, w: World, case: dict[str, Any]) -> dict[str, Any]:
    response = await call(
        stack,
        "POST",
        "/v1/cases/{case_id}:startInvestigation",
        headers=w.maker.auth,
        json={"note": "looking at the seal"},
        case_id=case["case_id"],
    )
    return ok(response)


FIVE_WHYS = {"method": "five_whys", "whys": ["the lid leaks", "the seal is too thin", "the compound changed"]}


async def root_cause(stack: Stack, w: World, case: dict[str, Any], cause: dict[str, Any] = FIVE_WHYS) -> httpx.Response:
    return await call(
        stack, "PUT", "/v1/cases/{case_id}/root-cause", headers=w.maker.auth, json=cause, case_id=case["case_id"]
    )


async def propose(stack: Stack, w: World, case: dict[str, Any]) -> httpx.Response:
    return await call(
        stack,
        "POST",
        "/v1/cases/{case_id}:proposeResolution",
        headers=w.maker.auth,
        json={"resolution": "A replacement kettle with the new, thicker seal."},
        case_id=case["case_id"],
    )


async def resolve(stack: Stack, w: World, case: dict[str, Any]) -> httpx.Response:
    """The customer takes the proposed resolution."""
    return await call(
        stack,
        "POST",
        "/v1/cases/{case_id}:resolve",
        headers=w.retailer.acting_for(case["customer_id"]),
        json={"note": "the replacement arrived"},
        case_id=case["case_id"],
    )


async def investigating_case(stack: Stack, w: World) -> dict[str, Any]:
    case = await open_case(stack, w)
    await engage(stack, w, case)
    return await investigate(stack, w, case)


async def resolved_case(stack: Stack, w: World) -> dict[str, Any]:
    case = await investigating_case(stack, w)
    ok(await root_cause(stack, w, case))
    ok(await propose(stack, w, case))
    return ok(await resolve(stack, w, case))


async def get_case(stack: Stack, case_id: str, headers: dict[str, str]) -> httpx.Response:
    return await call(stack, "GET", "/v1/cases/{case_id}/record", headers=headers, case_id=case_id)


async def entries(stack: Stack, case_id: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    listed = ok(await call(stack, "GET", "/v1/cases/{case_id}/entries", headers=headers, case_id=case_id))
    found: list[dict[str, Any]] = listed["entries"]
    return found


async def request_scar(stack: Stack, w: World, case: dict[str, Any], **overrides: Any) -> httpx.Response:
    body = {
        "case_id": case["case_id"],
        "supplier_id": w.supplier.id,
        "problem": "Seals from lot 42 are thinner than specified.",
        "due_time": in_days(14),
    } | overrides
    return await call(stack, "POST", "/v1/supplier-corrective-actions", headers=w.maker.auth, json=body)


async def respond_scar(stack: Stack, by: Partner, request_id: str, **overrides: str) -> httpx.Response:
    body = {
        "containment": "Lot 42 is on hold.",
        "root_cause": "The rubber compound changed.",
        "corrective_action": "Back to the old compound.",
    } | overrides
    return await call(
        stack,
        "POST",
        "/v1/supplier-corrective-actions/{request_id}:respond",
        headers=by.auth,
        json=body,
        request_id=request_id,
    )


async def review_scar(stack: Stack, by: Partner, request_id: str, **body: Any) -> httpx.Response:
    return await call(
        stack,
        "POST",
        "/v1/supplier-corrective-actions/{request_id}:review",
        headers=by.auth,
        json=body,
        request_id=request_id,
    )


async def add_action(stack: Stack, w: World, case: dict[str, Any], **overrides: Any) -> httpx.Response:
    body = {
        "kind": "corrective",
        "description": "Switch to the thicker seal",
        "owner_id": w.maker.id,
        "due_time": in_days(30),
    } | overrides
    return await call(
        stack, "POST", "/v1/cases/{case_id}/actions", headers=w.maker.auth, json=body, case_id=case["case_id"]
    )


async def update_action(stack: Stack, by: Partner, action_id: str, **body: Any) -> httpx.Response:
    return await call(stack, "PATCH", "/v1/case-actions/{action_id}", headers=by.auth, json=body, action_id=action_id)


async def check(stack: Stack, w: World, case: dict[str, Any], passed: bool, evidence: str) -> httpx.Response:
    return await call(
        stack,
        "POST",
        "/v1/cases/{case_id}/effectiveness-checks",
        headers=w.maker.auth,
        json={"passed": passed, "evidence": evidence},
        case_id=case["case_id"],
    )


async def close(stack: Stack, w: World, case: dict[str, Any]) -> httpx.Response:
    return await call(
        stack,
        "POST",
        "/v1/cases/{case_id}:close",
        headers=w.maker.auth,
        json={"note": "fixed for good"},
        case_id=case["case_id"],
    )


# --- initiatives -------------------------------------------------------------------------------------


async def create_initiative(stack: Stack, owner: Partner, **overrides: Any) -> httpx.Response:
    body = {
        "title": "Kettle seal redesign",
        "description": "A seal that does not leak",
        "kind": "product_redesign",
        "product_id": UNKNOWN,
    } | overrides
    return await call(stack, "POST", "/v1/initiatives", headers=owner.auth, json=body)


async def initiative(stack: Stack, owner: Partner, **overrides: Any) -> dict[str, Any]:
    return ok(await create_initiative(stack, owner, **overrides), 201)


async def change_stage(stack: Stack, by: Partner, initiative_id: str, stage: str) -> httpx.Response:
    return await call(
        stack,
        "POST",
        "/v1/initiatives/{initiative_id}:changeStage",
        headers=by.auth,
        json={"stage": stage, "decision": f"moving to {stage}"},
        initiative_id=initiative_id,
    )


async def get_initiative(stack: Stack, initiative_id: str, headers: dict[str, str]) -> httpx.Response:
    return await call(stack, "GET", "/v1/initiatives/{initiative_id}", headers=headers, initiative_id=initiative_id)


async def stakeholder(
    stack: Stack, by: Partner, initiative_id: str, action: str, who: dict[str, Any]
) -> httpx.Response:
    return await call(
        stack,
        "POST",
        "/v1/initiatives/{initiative_id}:" + action,
        headers=by.auth,
        json={"stakeholder": who},
        initiative_id=initiative_id,
    )


REPORTED = {"kind": "reported", "name": "seal_failures", "unit": "per 1000 units"}


async def add_objective(stack: Stack, by: Partner, initiative_id: str, **overrides: Any) -> httpx.Response:
    body = {
        "description": "Fewer seal failures",
        "metric": REPORTED,
        "direction": "decrease",
        "baseline": 12.0,
        "target": 3.0,
        "due_time": in_days(90),
    } | overrides
    return await call(
        stack,
        "POST",
        "/v1/initiatives/{initiative_id}/objectives",
        headers=by.auth,
        json=body,
        initiative_id=initiative_id,
    )


async def measure(stack: Stack, by: Partner, objective_id: str, value: float, **more: Any) -> httpx.Response:
    return await call(
        stack,
        "POST",
        "/v1/objectives/{objective_id}/measurements",
        headers=by.auth,
        json={"value": value, **more},
        objective_id=objective_id,
    )


# === case policies ===================================================================================


async def test_a_partner_without_a_policy_reads_the_defaults(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    policy = ok(
        await call(shared_stack, "GET", "/v1/case-policies/{partner_id}", headers=partner.auth, partner_id=partner.id)
    )
    includes(
        policy,
        {
            "partner_id": partner.id,
            "case_rating_threshold": 2,
            "recovery_rating_threshold": 4,
            "first_engagement_target": "86400s",
            "recovery_window": "2592000s",
            "customized": False,
        },
    )


async def test_a_partner_reads_no_other_partners_policy(shared_stack: Stack) -> None:
    partner, other = await shared_stack.partner(), await shared_stack.partner()
    response = await call(
        shared_stack, "GET", "/v1/case-policies/{partner_id}", headers=partner.auth, partner_id=other.id
    )
    assert other.id in problem(response, 403)["detail"]


async def test_a_retailer_with_a_stricter_policy_gets_cases_for_three_stars(shared_stack: Stack) -> None:
    w = await world(shared_stack)
    changed = ok(
        await call(
            shared_stack,
            "PATCH",
            "/v1/case-policies",
            headers=w.retailer.auth,
            json={
                "policy": {
                    "case_rating_threshold": 3,
                    "recovery_rating_threshold": 5,
                    "first_engagement_target": "3600s",
                },
                "update_mask": "case_rating_threshold,recovery_rating_threshold,first_engagement_target",
            },
        )
    )
    assert changed["partner_id"] == w.retailer.id
    assert (changed["case_rating_threshold"], changed["recovery_rating_threshold"]) == (3, 5)
    assert (changed["first_engagement_target"], changed["recovery_window"]) == ("3600s", "2592000s")
    assert changed["customized"] is True
    read = ok(
        await call(
            shared_stack, "GET", "/v1/case-policies/{partner_id}", headers=w.retailer.auth, partner_id=w.retailer.id
        )
    )
    assert read == changed

    _, review_id = await review(shared_stack, w, rating=3)
    case = await case_of(shared_stack, w, review_id)
    assert case["opening_rating"] == 3
    # The stricter of the assigned partners' recovery thresholds applies, fixed when the case opened.
    assert case["recovery_rating_threshold"] == 5
    retailer = next(a for a in case["assignments"] if a["partner_id"] == w.retailer.id)
    assert retailer["role"] == "retailer" and retailer["first_engagement_target"] == "3600s"


@pytest.mark.parametrize(
    ("policy", "mask", "named"),
    [
        ({"case_rating_threshold": 4, "recovery_rating_threshold": 3}, None, "policy.recovery_rating_threshold"),
        ({"case_rating_threshold": 9}, ["case_rating_threshold"], "policy.case_rating_threshold"),
        ({"recovery_window": "3600s"}, ["recovery_window"], "policy.recovery_window"),
        ({"first_engagement_target": "one day"}, None, "policy.first_engagement_target"),
        ({"case_rating_threshold": 3}, ["colour"], "update_mask"),
    ],
)
async def test_an_invalid_policy_is_400_naming_the_field_and_changes_nothing(
    shared_stack: Stack, policy: dict[str, Any], mask: list[str] | None, named: str
) -> None:
    partner = await shared_stack.partner()
    body: dict[str, Any] = {"policy": policy} | ({"update_mask": ",".join(mask)} if mask else {})
    response = await call(shared_stack, "PATCH", "/v1/case-policies", headers=partner.auth, json=body)
    assert named in fields(response)
    read = ok(
        await call(shared_stack, "GET", "/v1/case-policies/{partner_id}", headers=partner.auth, partner_id=partner.id)
    )
    assert read["customized"] is False


async def test_a_partner_changes_no_other_partners_policy(shared_stack: Stack) -> None:
    partner, other = await shared_stack.partner(), await shared_stack.partner()
    response = await call(
        shared_stack,
        "PATCH",
        "/v1/case-policies",
        headers=partner.auth,
        json={"policy": {"partner_id": other.id, "case_rating_threshold": 3}},
    )
    problem(response, 403)


# === cases ===========================================================================================


async def test_a_negative_review_opens_a_case_for_the_maker_and_the_retailer_and_no_one_else(
    shared_stack: Stack,
) -> None:
    w = await world(shared_stack)
    customer, review_id = await review(shared_stack, w)
    case = await case_of(shared_stack, w, review_id)
    includes(case, {"state": "open", "opening_rating": 2, "customer_id": customer})
    assert (case["product_id"], case["maker_id"], case["retailer_id"]) == (w.product, w.maker.id, w.retailer.id)
    assert {(a["partner_id"], a["role"]) for a in case["assignments"]} == {
        (w.maker.id, "maker"),
        (w.retailer.id, "retailer"),
    }
    assert case["view"] == "partner"

    as_maker = ok(await get_case(shared_stack, case["case_id"], w.maker.auth))
    assert as_maker["case_id"] == case["case_id"] and as_maker["view"] == "partner"
    assert [t["to_state"] for t in as_maker["transitions"]] == ["open"]
    as_customer = ok(await get_case(shared_stack, case["case_id"], w.retailer.acting_for(customer)))
    assert as_customer["view"] == "customer" and as_customer["review_id"] == review_id

    other_customer = await shared_stack.person(customer_of=w.retailer.id)
    for headers in (w.supplier.auth, w.retailer.acting_for(other_customer)):
        problem(await get_case(shared_stack, case["case_id"], headers), 403)
        problem(
            await call(shared_stack, "GET", "/v1/cases/{case_id}/entries", headers=headers, case_id=case["case_id"]),
            403,
        )


async def test_cases_are_listed_newest_first_to_their_partners_and_their_customer(shared_stack: Stack) -> None:
    w = await world(shared_stack)
    first = await open_case(shared_stack, w)
    second = await open_case(shared_stack, w)
    await engage(shared_stack, w, second)

    as_maker = ok(await call(shared_stack, "GET", "/v1/cases", headers=w.maker.auth))
    assert [c["case_id"] for c in as_maker["cases"]] == [second["case_id"], first["case_id"]]
    engaged = ok(await call(shared_stack, "GET", "/v1/cases", headers=w.maker.auth, params={"state": "engaged"}))
    assert [c["case_id"] for c in engaged["cases"]] == [second["case_id"]]
    paged = ok(await call(shared_stack, "GET", "/v1/cases", headers=w.maker.auth, params={"page_size": 1}))
    assert len(paged["cases"]) == 1 and paged["next_page_token"]
    next_page = {"page_size": 1, "page_token": paged["next_page_token"]}
    rest = ok(await call(shared_stack, "GET", "/v1/cases", headers=w.maker.auth, params=next_page))
    assert [c["case_id"] for c in rest["cases"]] == [first["case_id"]]

    customer = first["customer_id"]
    mine = ok(await call(shared_stack, "GET", "/v1/cases", headers=w.retailer.acting_for(customer)))
    assert [(c["case_id"], c["view"]) for c in mine["cases"]] == [(first["case_id"], "customer")]
    assert ok(await call(shared_stack, "GET", "/v1/cases", headers=w.supplier.auth))["cases"] == []
    others = {"partner_id": w.maker.id}
    problem(await call(shared_stack, "GET", "/v1/cases", headers=w.retailer.auth, params=others), 403)


@pytest.mark.parametrize(
    ("params", "named"),
    [({"state": "lost"}, "state"), ({"outcome": "happy"}, "outcome"), ({"page_token": "not-a-token"}, "page_token")],
)
async def test_listing_cases_with_a_bad_filter_is_400_naming_it(
    shared_stack: Stack, params: dict[str, str], named: str
) -> None:
    partner = await shared_stack.partner()
    assert fields(await call(shared_stack, "GET", "/v1/cases", headers=partner.auth, params=params)) == {named}


async def test_each_assigned_partner_engages_the_customer_once_and_no_one_else_does(shared_stack: Stack) -> None:
    w = await world(shared_stack)
    case = await open_case(shared_stack, w)
    hello = {"message": "Hello, can we help?"}
    path = "/v1/cases/{case_id}:engage"
    cid = case["case_id"]
    for outsider in (w.supplier.auth, w.retailer.acting_for(case["customer_id"])):
        problem(await call(shared_stack, "POST", path, headers=outsider, json=hello, case_id=cid), 403)
    assert ok(await get_case(shared_stack, cid, w.maker.auth))["state"] == "open"

    engaged = await engage(shared_stack, w, case)
    assert engaged["state"] == "engaged"
    retailer = next(a for a in engaged["assignments"] if a["partner_id"] == w.retailer.id)
    assert retailer["within_target"] is True and retailer["engage_time"] and retailer["time_to_first_engagement"]
    maker = next(a for a in engaged["assignments"] if a["partner_id"] == w.maker.id)
    assert "engage_time" not in maker
    # The maker's own first outreach is timed too; the case stays engaged.
    by_maker = await engage(shared_stack, w, case, by=w.maker)
    assert by_maker["state"] == "engaged"
    assert all(a["engage_time"] for a in by_maker["assignments"])
    timeline = await entries(shared_stack, cid, w.retailer.acting_for(case["customer_id"]))
    assert [e["author_partner_id"] for e in timeline if e["kind"] == "message"] == [w.retailer.id, w.maker.id]
    response = await call(shared_stack, "POST", path, headers=w.retailer.auth, json=hello, case_id=cid)
    assert "first engaged" in problem(response, 422)["detail"]


async def test_messages_and_internal_notes_make_the_timeline_and_the_customer_sees_no_notes(
    shared_stack: Stack,
) -> None:
    w = await world(shared_stack)
    case = await open_case(shared_stack, w)
    customer = w.retailer.acting_for(case["customer_id"])
    path = "/v1/cases/{case_id}/messages"
    cid = case["case_id"]
    asking = {"body": "Would you consider changing your rating?"}
    assert fields(await call(shared_stack, "POST", path, headers=w.maker.auth, json=asking, case_id=cid)) == {"body"}
    secret = {"body": "Just between us", "internal": True}
    problem(await call(shared_stack, "POST", path, headers=customer, json=secret, case_id=cid), 403)
    problem(await call(shared_stack, "POST", path, headers=w.supplier.auth, json={"body": "Hi"}, case_id=cid), 403)

    said = {"body": "It leaks from the lid."}
    from_customer = ok(await call(shared_stack, "POST", path, headers=customer, json=said, case_id=cid), 201)
    includes(from_customer, {"kind": "message", "author_party_id": case["customer_id"], "internal": False})
    noted = {"body": "Probably lot 42 again.", "internal": True}
    note = ok(await call(shared_stack, "POST", path, headers=w.maker.auth, json=noted, case_id=cid), 201)
    includes(note, {"kind": "internal_note", "author_partner_id": w.maker.id, "internal": True})
    answer = {"body": "Thanks, we are on it."}
    reply = ok(await call(shared_stack, "POST", path, headers=w.retailer.auth, json=answer, case_id=cid), 201)
    assert reply["kind"] == "message"

    seen_by_partner = await entries(shared_stack, cid, w.maker.auth)
    bodies = [e["body"] for e in seen_by_partner if e["kind"] in ("message", "internal_note")]
    assert bodies == ["It leaks from the lid.", "Probably lot 42 again.", "Thanks, we are on it."]
    seen_by_customer = await entries(shared_stack, cid, customer)
    assert "Probably lot 42 again." not in [e["body"] for e in seen_by_customer]
    assert not any(e["internal"] for e in seen_by_customer)
    # A partner's first message to the customer engages the case.
    assert ok(await get_case(shared_stack, cid, w.maker.auth))["state"] == "engaged"
    page = {"page_size": 1}
    first = ok(
        await call(shared_stack, "GET", "/v1/cases/{case_id}/entries", headers=w.maker.auth, params=page, case_id=cid)
    )
    assert [e["entry_id"] for e in first["entries"]] == [seen_by_partner[0]["entry_id"]] and first["next_page_token"]


async def test_an_engaged_case_is_investigated_down_to_its_root_cause(shared_stack: Stack) -> None:
    w = await world(shared_stack)
    case = await open_case(shared_stack, w)
    start = "/v1/cases/{case_id}:startInvestigation"
    cid = case["case_id"]
    response = await call(shared_stack, "POST", start, headers=w.maker.auth, json={}, case_id=cid)
    assert "engage" in problem(response, 422)["detail"]
    problem(await root_cause(shared_stack, w, case), 422)  # not investigating yet

    await engage(shared_stack, w, case)
    problem(await call(shared_stack, "POST", start, headers=w.supplier.auth, json={}, case_id=cid), 403)
    investigating = await investigate(shared_stack, w, case)
    assert investigating["state"] == "investigating"
    last = investigating["transitions"][-1]
    includes(last, {"from_state": "engaged", "note": "looking at the seal", "actor": f"partner:{w.maker.id}"})
    categories = {"method": "categories", "categories": ["supplier", "material"], "summary": "A new rubber compound"}
    recorded = ok(await root_cause(shared_stack, w, case, categories))
    includes(
        recorded["root_cause"],
        {
            "method": "categories",
            "categories": ["supplier", "material"],
            "summary": "A new rubber compound",
            "recorded_by": f"partner:{w.maker.id}",
        },
    )
    assert ok(await get_case(shared_stack, cid, w.retailer.auth))["root_cause"]["categories"] == [
        "supplier",
        "material",
    ]
    response = await call(
        shared_stack,
        "PUT",
        "/v1/cases/{case_id}/root-cause",
        headers=w.retailer.acting_for(case["customer_id"]),
        json=FIVE_WHYS,
        case_id=cid,
    )
    problem(response, 403)


async def test_actions_are_owned_by_the_partners_or_suppliers_and_are_completed(shared_stack: Stack) -> None:
    w = await world(shared_stack, supplied=True)
    case = await open_case(shared_stack, w)
    problem(await add_action(shared_stack, w, case), 422)  # actions come with the investigation
    await engage(shared_stack, w, case)
    await investigate(shared_stack, w, case)
    stranger = await shared_stack.partner()
    assert fields(await add_action(shared_stack, w, case, owner_id=stranger.id)) == {"owner_id"}
    response = await call(
        shared_stack,
        "POST",
        "/v1/cases/{case_id}/actions",
        headers=w.supplier.auth,
        json={"kind": "corrective", "description": "x", "owner_id": w.supplier.id, "due_time": in_days(3)},
        case_id=case["case_id"],
    )
    problem(response, 403)

    ours = ok(await add_action(shared_stack, w, case), 201)
    includes(ours, {"case_id": case["case_id"], "kind": "corrective", "owner_id": w.maker.id, "status": "open"})
    theirs = ok(
        await add_action(shared_stack, w, case, kind="preventive", owner_id=w.supplier.id, description="Check lots"),
        201,
    )
    as_partner = ok(await get_case(shared_stack, case["case_id"], w.retailer.auth))
    assert [a["action_id"] for a in as_partner["actions"]] == [ours["action_id"], theirs["action_id"]]
    # A supplier's action stays between it and the partners.
    as_customer = ok(await get_case(shared_stack, case["case_id"], w.retailer.acting_for(case["customer_id"])))
    assert [a["action_id"] for a in as_customer["actions"]] == [ours["action_id"]]

    problem(await update_action(shared_stack, w.supplier, theirs["action_id"], status="done"), 403)
    done = ok(await update_action(shared_stack, w.maker, ours["action_id"], status="done", note="new seal in use"))
    includes(done, {"status": "done", "note": "new seal in use"})
    assert done["complete_time"]
    cancelled = ok(
        await update_action(shared_stack, w.retailer, theirs["action_id"], status="cancelled", note="not needed")
    )
    assert cancelled["status"] == "cancelled"
    read = ok(await get_case(shared_stack, case["case_id"], w.maker.auth))
    assert [a["status"] for a in read["actions"]] == ["done", "cancelled"]
    response = await update_action(shared_stack, w.maker, ours["action_id"], status="cancelled", note="oops")
    assert "done already" in problem(response, 422)["detail"]


async def test_the_customer_resolves_a_proposed_resolution_and_is_invited_neutrally_to_update(
    shared_stack: Stack,
) -> None:
    w = await world(shared_stack)
    case = await open_case(shared_stack, w)
    problem(await resolve(shared_stack, w, case), 422)  # open: engage first
    await engage(shared_stack, w, case)
    await investigate(shared_stack, w, case)
    assert "root cause" in problem(await propose(shared_stack, w, case), 422)["detail"]
    ok(await root_cause(shared_stack, w, case))
    customer_id = case["customer_id"]
    customer = w.retailer.acting_for(customer_id)
    fix = {"resolution": "A new kettle."}
    path = "/v1/cases/{case_id}:proposeResolution"
    problem(await call(shared_stack, "POST", path, headers=customer, json=fix, case_id=case["case_id"]), 403)
    proposed = ok(await propose(shared_stack, w, case))
    includes(
        proposed,
        {
            "state": "resolution_proposed",
            "resolution": "A replacement kettle with the new, thicker seal.",
        },
    )
    response = await call(
        shared_stack, "POST", "/v1/cases/{case_id}:resolve", headers=w.supplier.auth, json={}, case_id=case["case_id"]
    )
    problem(response, 403)

    resolved = ok(await resolve(shared_stack, w, case))
    includes(resolved, {"state": "resolved", "outcome": "resolved", "view": "customer"})
    assert resolved["resolve_time"] and resolved["update_invitation_time"]
    timeline = await entries(shared_stack, case["case_id"], customer)
    assert [e["kind"] for e in timeline].count("update_invitation") == 1
    path = "/v1/parties/{party_id}/improvement-notifications"
    listed = ok(await call(shared_stack, "GET", path, headers=customer, party_id=customer_id))
    (notification,) = listed["notifications"]
    includes(
        notification,
        {
            "party_id": customer_id,
            "kind": "review_update_invitation",
            "case_id": case["case_id"],
            "review_id": case["review_id"],
        },
    )
    assert "nothing depends on whether or how you change it" in notification["body"]


async def test_a_case_closes_after_a_passed_check_with_its_actions_settled_and_a_failed_one_reopens_it(
    shared_stack: Stack,
) -> None:
    w = await world(shared_stack)
    case = await open_case(shared_stack, w)
    await engage(shared_stack, w, case)
    await investigate(shared_stack, w, case)
    problem(await check(shared_stack, w, case, True, "fine"), 422)  # not resolved
    action = ok(await add_action(shared_stack, w, case), 201)
    ok(await root_cause(shared_stack, w, case))
    ok(await propose(shared_stack, w, case))
    ok(await resolve(shared_stack, w, case))
    assert "effectiveness check" in problem(await close(shared_stack, w, case), 422)["detail"]
    response = await call(
        shared_stack,
        "POST",
        "/v1/cases/{case_id}/effectiveness-checks",
        headers=w.retailer.acting_for(case["customer_id"]),
        json={"passed": True, "evidence": "I say so"},
        case_id=case["case_id"],
    )
    problem(response, 403)

    reopened = ok(await check(shared_stack, w, case, False, "returns still mention leaks"), 201)
    includes(reopened, {"state": "investigating", "reopen_count": 1})
    assert [c["passed"] for c in reopened["effectiveness_checks"]] == [False]
    ok(await propose(shared_stack, w, case))
    ok(await resolve(shared_stack, w, case))
    timeline = await entries(shared_stack, case["case_id"], w.maker.auth)
    assert [e["kind"] for e in timeline].count("update_invitation") == 1  # once per case, ever
    passed = ok(await check(shared_stack, w, case, True, "no leak in 200 returns"), 201)
    assert passed["state"] == "resolved"
    assert [(c["passed"], c["evidence"]) for c in passed["effectiveness_checks"]] == [
        (False, "returns still mention leaks"),
        (True, "no leak in 200 returns"),
    ]

    assert "open action" in problem(await close(shared_stack, w, case), 422)["detail"]
    ok(await update_action(shared_stack, w.maker, action["action_id"], status="done"))
    response = await call(
        shared_stack, "POST", "/v1/cases/{case_id}:close", headers=w.supplier.auth, json={}, case_id=case["case_id"]
    )
    problem(response, 403)
    closed = ok(await close(shared_stack, w, case))
    assert closed["state"] == "closed" and closed["close_time"]
    assert [t["to_state"] for t in closed["transitions"]][-2:] == ["resolved", "closed"]
    problem(await close(shared_stack, w, case), 422)


# === supplier corrective actions =====================================================================


async def test_a_supplier_answers_a_corrective_action_request_until_the_partners_accept_it(
    shared_stack: Stack,
) -> None:
    w = await world(shared_stack, supplied=True)
    case = await open_case(shared_stack, w)
    outsider = await shared_stack.partner(unique("Glass supplier"), identity.PARTNER_KIND_SUPPLIER)
    assert fields(await request_scar(shared_stack, w, case, supplier_id=outsider.id)) == {"supplier_id"}
    scar = ok(await request_scar(shared_stack, w, case), 201)
    includes(
        scar,
        {
            "case_id": case["case_id"],
            "product_id": w.product,
            "supplier_id": w.supplier.id,
            "supplier_tier": 1,
            "item": w.component,
            "requested_by": w.maker.id,
            "status": "requested",
        },
    )
    assert w.supplier.id in problem(await request_scar(shared_stack, w, case), 409)["detail"]
    rid = scar["request_id"]

    get = "/v1/supplier-corrective-actions/{request_id}"
    assert ok(await call(shared_stack, "GET", get, headers=w.supplier.auth, request_id=rid))["status"] == "requested"
    assert ok(await call(shared_stack, "GET", get, headers=w.retailer.auth, request_id=rid))["request_id"] == rid
    for outside in (outsider.auth, w.retailer.acting_for(case["customer_id"])):
        problem(await call(shared_stack, "GET", get, headers=outside, request_id=rid), 403)
    problem(await review_scar(shared_stack, w.maker, rid, accepted=True), 422)  # nothing to review yet
    problem(await respond_scar(shared_stack, w.maker, rid), 403)  # only the supplier responds

    responded = ok(await respond_scar(shared_stack, w.supplier, rid))
    assert responded["status"] == "responded"
    includes(
        responded["response"],
        {
            "containment": "Lot 42 is on hold.",
            "root_cause": "The rubber compound changed.",
            "corrective_action": "Back to the old compound.",
        },
    )
    problem(await respond_scar(shared_stack, w.supplier, rid), 422)  # awaiting review
    problem(await review_scar(shared_stack, w.supplier, rid, accepted=True), 403)
    rejected = ok(await review_scar(shared_stack, w.maker, rid, accepted=False, comment="Which lots besides 42?"))
    includes(rejected, {"status": "rejected", "review_comment": "Which lots besides 42?"})
    ok(await respond_scar(shared_stack, w.supplier, rid, containment="Lots 41 to 43 are on hold."))
    accepted = ok(await review_scar(shared_stack, w.retailer, rid, accepted=True))
    assert accepted["status"] == "accepted" and accepted["response"]["containment"] == "Lots 41 to 43 are on hold."

    as_partner = ok(await get_case(shared_stack, case["case_id"], w.maker.auth))
    assert [(s["request_id"], s["status"]) for s in as_partner["supplier_corrective_actions"]] == [(rid, "accepted")]
    # The supplier's part stays between it and the partners.
    customer = w.retailer.acting_for(case["customer_id"])
    assert ok(await get_case(shared_stack, case["case_id"], customer))["supplier_corrective_actions"] == []
    assert not [e for e in await entries(shared_stack, case["case_id"], customer) if e["kind"] == "supplier_request"]


async def test_corrective_action_requests_are_listed_by_case_to_its_partners_and_by_supplier_to_it(
    shared_stack: Stack,
) -> None:
    w = await world(shared_stack, supplied=True)
    first = await open_case(shared_stack, w)
    second = await open_case(shared_stack, w)
    one = ok(await request_scar(shared_stack, w, first), 201)
    two = ok(await request_scar(shared_stack, w, second), 201)
    path = "/v1/supplier-corrective-actions"
    by_case = ok(await call(shared_stack, "GET", path, headers=w.retailer.auth, params={"case_id": second["case_id"]}))
    assert [r["request_id"] for r in by_case["requests"]] == [two["request_id"]]
    mine = {"supplier_id": w.supplier.id}
    by_supplier = ok(await call(shared_stack, "GET", path, headers=w.supplier.auth, params=mine))
    assert [r["request_id"] for r in by_supplier["requests"]] == [one["request_id"], two["request_id"]]

    both = {"case_id": first["case_id"], "supplier_id": w.supplier.id}
    assert fields(await call(shared_stack, "GET", path, headers=w.maker.auth, params=both)) == {"case_id"}
    problem(await call(shared_stack, "GET", path, headers=w.maker.auth, params=mine), 403)
    problem(await call(shared_stack, "GET", path, headers=w.supplier.auth, params={"case_id": first["case_id"]}), 403)


# === co-design and notifications =====================================================================


async def test_the_maker_invites_the_customer_to_co_design_the_fix(shared_stack: Stack) -> None:
    w = await world(shared_stack)
    case = await open_case(shared_stack, w)
    customer_id = case["customer_id"]
    customer = w.retailer.acting_for(customer_id)
    path = "/v1/co-design-invitations"
    cid = case["case_id"]
    someone = await shared_stack.person()
    other = {"case_id": cid, "party_id": someone}
    assert fields(await call(shared_stack, "POST", path, headers=w.maker.auth, json=other)) == {"party_id"}
    problem(await call(shared_stack, "POST", path, headers=w.supplier.auth, json={"case_id": cid}), 403)

    invitation = {"case_id": cid, "label": "revision 2", "message": "Help us design the new lid?"}
    invited = ok(await call(shared_stack, "POST", path, headers=w.maker.auth, json=invitation), 201)
    includes(
        invited,
        {
            "case_id": cid,
            "party_id": customer_id,
            "product_id": w.product,
            "label": "revision 2",
            "status": "pending",
            "invited_by": w.maker.id,
        },
    )
    response = await call(shared_stack, "POST", path, headers=w.retailer.auth, json={"case_id": cid})
    assert "pending invitation" in problem(response, 409)["detail"]
    mine = ok(await call(shared_stack, "GET", path, headers=customer, params={"party_id": customer_id}))
    assert [i["invitation_id"] for i in mine["invitations"]] == [invited["invitation_id"]]
    notified = ok(
        await call(
            shared_stack,
            "GET",
            "/v1/parties/{party_id}/improvement-notifications",
            headers=customer,
            party_id=customer_id,
        )
    )
    assert [(n["kind"], n["invitation_id"]) for n in notified["notifications"]] == [
        ("co_design_invitation", invited["invitation_id"])
    ]
    assert notified["notifications"][0]["body"] == "revision 2: Help us design the new lid?"

    accepted = ok(
        await call(
            shared_stack,
            "POST",
            "/v1/co-design-invitations/{invitation_id}:respond",
            headers=customer,
            json={"accept": True},
            invitation_id=invited["invitation_id"],
        )
    )
    assert accepted["status"] == "accepted" and accepted["respond_time"]
    assert ok(await get_case(shared_stack, cid, w.maker.auth))["co_design_participants"] == [customer_id]
    by_case = ok(await call(shared_stack, "GET", path, headers=w.retailer.auth, params={"case_id": cid}))
    assert [(i["invitation_id"], i["status"]) for i in by_case["invitations"]] == [
        (invited["invitation_id"], "accepted")
    ]
    timeline = await entries(shared_stack, cid, customer)
    assert [e["body"] for e in timeline if e["kind"] == "co_design"][-1] == "The customer joined the co-design."
    response = await call(shared_stack, "POST", path, headers=w.maker.auth, json={"case_id": cid})
    assert "takes part" in problem(response, 409)["detail"]


async def test_only_the_invited_customer_answers_an_invitation_and_lists_their_own(shared_stack: Stack) -> None:
    w = await world(shared_stack)
    case = await open_case(shared_stack, w)
    customer_id = case["customer_id"]
    invitation = {"case_id": case["case_id"]}
    invited = ok(
        await call(shared_stack, "POST", "/v1/co-design-invitations", headers=w.maker.auth, json=invitation), 201
    )
    respond = "/v1/co-design-invitations/{invitation_id}:respond"
    iid = invited["invitation_id"]
    yes, no = {"accept": True}, {"accept": False}
    problem(await call(shared_stack, "POST", respond, headers=w.maker.auth, json=yes, invitation_id=iid), 403)
    other_customer = await shared_stack.person(customer_of=w.retailer.id)
    other = w.retailer.acting_for(other_customer)
    problem(await call(shared_stack, "POST", respond, headers=other, json=yes, invitation_id=iid), 403)
    customer = w.retailer.acting_for(customer_id)
    declined = ok(await call(shared_stack, "POST", respond, headers=customer, json=no, invitation_id=iid))
    assert declined["status"] == "declined"
    problem(await call(shared_stack, "POST", respond, headers=customer, json=yes, invitation_id=iid), 422)
    assert ok(await get_case(shared_stack, case["case_id"], w.maker.auth))["co_design_participants"] == []

    path = "/v1/co-design-invitations"
    problem(await call(shared_stack, "GET", path, headers=w.maker.auth, params={"party_id": customer_id}), 403)
    problem(await call(shared_stack, "GET", path, headers=other, params={"party_id": customer_id}), 403)
    problem(await call(shared_stack, "GET", path, headers=w.supplier.auth, params={"case_id": case["case_id"]}), 403)


async def test_notifications_are_the_partys_own(shared_stack: Stack) -> None:
    retailer = await shared_stack.partner()
    customer = await shared_stack.person(customer_of=retailer.id)
    other = await shared_stack.person(customer_of=retailer.id)
    path = "/v1/parties/{party_id}/improvement-notifications"
    problem(await call(shared_stack, "GET", path, headers=retailer.auth, party_id=customer), 403)
    problem(await call(shared_stack, "GET", path, headers=retailer.acting_for(other), party_id=customer), 403)
    response = await call(shared_stack, "GET", path, headers=retailer.acting_for(customer), party_id=customer)
    assert ok(response)["notifications"] == []


# === bad input, route by route =======================================================================

SCAR = "/v1/supplier-corrective-actions"


def bad_requests() -> list[Any]:
    """Requests the service refuses before looking anything up: (route, body, fields named)."""
    due, past = in_days(7), in_days(-1)
    action = {"kind": "corrective", "description": "x", "owner_id": "o", "due_time": due}
    scar = {"case_id": UNKNOWN, "supplier_id": "s", "problem": "p", "due_time": due}
    cases: list[tuple[str, str, dict[str, Any], set[str]]] = [
        ("POST", "/v1/cases/{case_id}:engage", {}, {"message"}),
        ("POST", "/v1/cases/{case_id}:engage", {"message": "Please update your review once we fix it."}, {"message"}),
        ("POST", "/v1/cases/{case_id}:engage", {"message": "Worth five stars now?"}, {"message"}),
        ("POST", "/v1/cases/{case_id}/messages", {"body": " "}, {"body"}),
        (
            "PUT",
            "/v1/cases/{case_id}/root-cause",
            {"method": "categories"},
            {"root_cause.categories", "root_cause.summary"},
        ),
        ("PUT", "/v1/cases/{case_id}/root-cause", {"method": "five_whys", "whys": list("123456")}, {"root_cause.whys"}),
        ("PUT", "/v1/cases/{case_id}/root-cause", {"whys": ["the seal"]}, {"root_cause.method"}),
        (
            "PUT",
            "/v1/cases/{case_id}/root-cause",
            {"method": "categories", "categories": ["design", "design"], "summary": "x"},
            {"root_cause.categories"},
        ),
        ("POST", "/v1/cases/{case_id}/actions", {"description": ""}, {"kind", "description", "owner_id"}),
        ("POST", "/v1/cases/{case_id}/actions", action | {"kind": "urgent"}, {"kind"}),
        ("POST", "/v1/cases/{case_id}/actions", action | {"due_time": past}, {"due_time"}),
        ("POST", "/v1/cases/{case_id}/actions", action | {"due_time": in_days(4 * 365)}, {"due_time"}),
        ("PATCH", "/v1/case-actions/{action_id}", {"status": "cancelled"}, {"note"}),
        ("PATCH", "/v1/case-actions/{action_id}", {"status": "open"}, {"status"}),
        (
            "POST",
            "/v1/cases/{case_id}:proposeResolution",
            {"resolution": "A new kettle for a better review"},
            {"resolution"},
        ),
        ("POST", "/v1/cases/{case_id}/effectiveness-checks", {"passed": True, "evidence": ""}, {"evidence"}),
        ("POST", SCAR, scar | {"supplier_id": "", "problem": ""}, {"supplier_id", "problem"}),
        ("POST", SCAR, scar | {"due_time": past}, {"due_time"}),
        ("POST", SCAR, scar | {"due_time": "tomorrow"}, {"due_time"}),
        ("GET", SCAR, {}, {"case_id"}),
        (
            "POST",
            SCAR + "/{request_id}:respond",
            {"containment": "", "root_cause": "", "corrective_action": "c"},
            {"containment", "root_cause"},
        ),
        ("POST", SCAR + "/{request_id}:review", {"accepted": False}, {"comment"}),
        ("POST", "/v1/co-design-invitations", {"case_id": UNKNOWN, "initiative_id": UNKNOWN}, {"case_id"}),
        ("POST", "/v1/co-design-invitations", {"case_id": UNKNOWN, "message": "Then revise your review?"}, {"message"}),
        ("GET", "/v1/co-design-invitations", {}, {"party_id"}),
        ("POST", "/v1/initiatives/{initiative_id}:changeStage", {"stage": "proposed", "decision": "x"}, {"stage"}),
        ("POST", "/v1/initiatives/{initiative_id}:changeStage", {"stage": "do"}, {"decision"}),
        ("POST", "/v1/initiatives/{initiative_id}:requestRedesign", {}, {"changes", "reason"}),
        ("POST", "/v1/initiatives/{initiative_id}:linkCase", {}, {"case_id"}),
        ("POST", "/v1/initiatives/{initiative_id}:linkIdea", {}, {"idea_id"}),
        ("POST", "/v1/objectives/{objective_id}/measurements", {"value": 1, "measure_time": due}, {"measure_time"}),
        (
            "PATCH",
            "/v1/objectives",
            {"objective": {"target": 1}, "update_mask": "target"},
            {"objective.objective_id"},
        ),
        ("GET", "/v1/portfolio-summary", {"owner_id": "o", "stakeholder_platform": "community"}, {"owner_id"}),
    ]
    return [pytest.param(*case, id=f"{case[0]} {case[1]} {sorted(case[3])}") for case in cases]


@pytest.mark.parametrize(("method", "template", "body", "named"), bad_requests())
async def test_bad_input_is_400_naming_every_wrong_field(
    shared_stack: Stack, method: str, template: str, body: dict[str, Any], named: set[str]
) -> None:
    partner = await shared_stack.partner()
    path: dict[str, Any] = {name: UNKNOWN for name in re.findall(r"\{(\w+)\}", template)}
    if method == "GET":
        response = await call(shared_stack, method, template, **path, headers=partner.auth, params=body)
    else:
        response = await call(shared_stack, method, template, **path, headers=partner.auth, json=body)
    assert fields(response) == named


# === initiatives =====================================================================================


async def test_a_maker_launches_an_initiative_on_its_cases_with_stakeholders_and_links_more_cases(
    shared_stack: Stack,
) -> None:
    w = await world(shared_stack)
    first = await open_case(shared_stack, w)
    second = await open_case(shared_stack, w)
    # A partner launches initiatives only on cases assigned to it.
    problem(await create_initiative(shared_stack, w.supplier, case_ids=[first["case_id"]]), 403)
    created = ok(
        await create_initiative(
            shared_stack,
            w.maker,
            product_id=w.product,
            stakeholders=[{"partner_id": w.retailer.id, "role": "seller"}, {"platform": "community"}],
            case_ids=[first["case_id"]],
        ),
        201,
    )
    includes(
        created,
        {
            "owner_id": w.maker.id,
            "title": "Kettle seal redesign",
            "kind": "product_redesign",
            "product_id": w.product,
            "stage": "plan",
            "cycle": 1,
            "case_ids": [first["case_id"]],
            "health": None,
        },
    )
    assert {(s.get("partner_id"), s.get("platform")) for s in created["stakeholders"]} == {
        (w.retailer.id, None),
        (None, "community"),
    }
    assert [(c["to_stage"], c["decision"]) for c in created["stage_history"]] == [("plan", "launched")]
    iid = created["initiative_id"]
    assert ok(await get_initiative(shared_stack, iid, w.retailer.auth))["initiative_id"] == iid  # a stakeholder

    path = "/v1/initiatives/{initiative_id}:linkCase"
    link = {"case_id": second["case_id"]}
    problem(await call(shared_stack, "POST", path, headers=w.retailer.auth, json=link, initiative_id=iid), 403)
    linked = ok(await call(shared_stack, "POST", path, headers=w.maker.auth, json=link, initiative_id=iid))
    assert linked["case_ids"] == [first["case_id"], second["case_id"]]
    assert ok(await get_initiative(shared_stack, iid, w.maker.auth))["case_ids"] == linked["case_ids"]
    problem(await call(shared_stack, "POST", path, headers=w.maker.auth, json=link, initiative_id=iid), 409)
    theirs = await initiative(shared_stack, w.supplier, kind="process", product_id="")
    response = await call(
        shared_stack, "POST", path, headers=w.supplier.auth, json=link, initiative_id=theirs["initiative_id"]
    )
    problem(response, 403)


async def test_a_retried_launch_with_the_same_idempotency_key_creates_one_initiative(shared_stack: Stack) -> None:
    owner = await shared_stack.partner()
    headers = owner.auth | {"Idempotency-Key": "launch-1"}
    body = {"title": "Faster replies", "kind": "process"}
    first = await call(shared_stack, "POST", "/v1/initiatives", headers=headers, json=body)
    second = await call(shared_stack, "POST", "/v1/initiatives", headers=headers, json=body)
    assert ok(first, 201) == ok(second, 201)
    listed = ok(await call(shared_stack, "GET", "/v1/initiatives", headers=owner.auth))
    assert [i["initiative_id"] for i in listed["initiatives"]] == [first.json()["initiative_id"]]


async def test_launching_an_initiative_wrongly_is_refused(shared_stack: Stack) -> None:
    owner, other = await shared_stack.partner(), await shared_stack.partner()
    assert fields(await create_initiative(shared_stack, owner, title="", product_id="")) == {"title", "product_id"}
    assert fields(await create_initiative(shared_stack, owner, kind="moonshot")) == {"kind"}
    assert fields(await create_initiative(shared_stack, owner, case_ids=["c", "c"])) == {"case_ids"}
    itself = [{"partner_id": owner.id}]
    assert fields(await create_initiative(shared_stack, owner, stakeholders=itself)) == {"stakeholders[0]"}
    problem(await create_initiative(shared_stack, owner, owner_id=other.id), 403)
    customer = await shared_stack.person(customer_of=owner.id)
    body = {"title": "My idea", "kind": "process"}
    problem(await call(shared_stack, "POST", "/v1/initiatives", headers=owner.acting_for(customer), json=body), 403)
    assert ok(await call(shared_stack, "GET", "/v1/initiatives", headers=owner.auth))["initiatives"] == []


async def test_initiatives_are_listed_for_their_owner_and_stakeholders_with_filters(shared_stack: Stack) -> None:
    maker = await shared_stack.partner(unique("Maker"), identity.PARTNER_KIND_MANUFACTURER)
    retailer = await shared_stack.partner()
    redesign = await initiative(shared_stack, maker, stakeholders=[{"partner_id": retailer.id}])
    process = await initiative(shared_stack, maker, title="Faster answers", kind="process", product_id="")
    ok(await change_stage(shared_stack, maker, process["initiative_id"], "do"))

    path = "/v1/initiatives"
    every = ok(await call(shared_stack, "GET", path, headers=maker.auth))
    assert [i["initiative_id"] for i in every["initiatives"]] == [process["initiative_id"], redesign["initiative_id"]]
    in_do = ok(await call(shared_stack, "GET", path, headers=maker.auth, params={"stage": "do"}))
    assert [i["initiative_id"] for i in in_do["initiatives"]] == [process["initiative_id"]]
    redesigns = ok(await call(shared_stack, "GET", path, headers=maker.auth, params={"kind": "product_redesign"}))
    assert [i["initiative_id"] for i in redesigns["initiatives"]] == [redesign["initiative_id"]]
    shared = ok(
        await call(shared_stack, "GET", path, headers=retailer.auth, params={"stakeholder_partner_id": retailer.id})
    )
    assert [i["initiative_id"] for i in shared["initiatives"]] == [redesign["initiative_id"]]
    stranger = await shared_stack.partner()
    others = ok(await call(shared_stack, "GET", path, headers=stranger.auth, params={"owner_id": maker.id}))
    assert others["initiatives"] == []


async def test_listing_initiatives_with_unknown_filter_values_is_400(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    params = {"stage": "someday", "kind": "moonshot", "health": "great"}
    response = await call(shared_stack, "GET", "/v1/initiatives", headers=partner.auth, params=params)
    assert fields(response) == {"stage", "kind", "health"}


async def test_an_initiative_is_seen_by_its_owner_and_stakeholders_only(shared_stack: Stack) -> None:
    owner, stranger = await shared_stack.partner(), await shared_stack.partner()
    created = await initiative(shared_stack, owner, title="Packaging", kind="process", product_id="")
    read = ok(await get_initiative(shared_stack, created["initiative_id"], owner.auth))
    includes(read, {"title": "Packaging", "kind": "process", "stage": "plan"})
    problem(await get_initiative(shared_stack, created["initiative_id"], stranger.auth), 403)


async def test_the_owner_renames_an_initiative_and_reshapes_it_only_while_planning(shared_stack: Stack) -> None:
    owner = await shared_stack.partner()
    created = await initiative(shared_stack, owner)
    iid = created["initiative_id"]
    path = "/v1/initiatives"
    renamed = ok(
        await call(
            shared_stack,
            "PATCH",
            path,
            headers=owner.auth,
            json={
                "initiative": {"initiative_id": iid, "title": "Seal and lid redesign", "description": "ignored"},
                "update_mask": "title",
            },
        )
    )
    includes(renamed, {"title": "Seal and lid redesign", "description": "A seal that does not leak"})
    reshaped = ok(
        await call(
            shared_stack,
            "PATCH",
            path,
            headers=owner.auth,
            json={
                "initiative": {"initiative_id": iid, "kind": "process", "product_id": ""},
                "update_mask": "kind,product_id",
            },
        )
    )
    assert (reshaped["kind"], reshaped["product_id"]) == ("process", "")
    assert ok(await get_initiative(shared_stack, iid, owner.auth))["title"] == "Seal and lid redesign"

    ok(await change_stage(shared_stack, owner, iid, "do"))
    late = {"initiative": {"initiative_id": iid, "kind": "channel"}, "update_mask": "kind"}
    assert "planned" in problem(await call(shared_stack, "PATCH", path, headers=owner.auth, json=late), 422)["detail"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"initiative": {"title": "x"}, "update_mask": "title"}, "initiative.initiative_id"),
        ({"initiative": {"initiative_id": "ID", "title": "x"}}, "update_mask"),
        (
            {"initiative": {"initiative_id": "ID", "title": " "}, "update_mask": "title"},
            "initiative.title",
        ),
        ({"initiative": {"initiative_id": "ID"}, "update_mask": "owner_id"}, "update_mask"),
    ],
)
async def test_an_invalid_initiative_change_is_400_naming_the_field(
    shared_stack: Stack, change: dict[str, Any], named: str
) -> None:
    owner = await shared_stack.partner()
    created = await initiative(shared_stack, owner, kind="process", product_id="")
    if "initiative_id" in change["initiative"]:
        change["initiative"]["initiative_id"] = created["initiative_id"]
    response = await call(shared_stack, "PATCH", "/v1/initiatives", headers=owner.auth, json=change)
    assert fields(response) == {named}


async def test_only_the_owner_changes_an_initiative(shared_stack: Stack) -> None:
    owner, stakeholder_partner = await shared_stack.partner(), await shared_stack.partner()
    created = await initiative(shared_stack, owner, stakeholders=[{"partner_id": stakeholder_partner.id}])
    iid = created["initiative_id"]
    change = {"initiative": {"initiative_id": iid, "title": "Mine now"}, "update_mask": "title"}
    problem(await call(shared_stack, "PATCH", "/v1/initiatives", headers=stakeholder_partner.auth, json=change), 403)
    problem(await change_stage(shared_stack, stakeholder_partner, iid, "do"), 403)
    assert ok(await get_initiative(shared_stack, iid, owner.auth))["title"] == "Kettle seal redesign"


async def test_an_initiative_goes_round_plan_do_check_act_with_each_decision(shared_stack: Stack) -> None:
    owner = await shared_stack.partner()
    iid = (await initiative(shared_stack, owner, kind="process", product_id=""))["initiative_id"]
    for stage in ("do", "check", "do", "check", "act", "plan"):
        moved = ok(await change_stage(shared_stack, owner, iid, stage))
        assert moved["stage"] == stage
    assert moved["cycle"] == 2
    history = [(c["from_stage"], c["to_stage"], c["cycle"]) for c in moved["stage_history"]]
    assert history == [
        (None, "plan", 1),
        ("plan", "do", 1),
        ("do", "check", 1),
        ("check", "do", 1),
        ("do", "check", 1),
        ("check", "act", 1),
        ("act", "plan", 2),
    ]
    assert moved["stage_history"][-1]["decision"] == "moving to plan"
    closed = ok(await change_stage(shared_stack, owner, iid, "closed"))
    assert closed["stage"] == "closed" and closed["close_time"]


async def test_changing_stage_wrongly_is_refused(shared_stack: Stack) -> None:
    owner = await shared_stack.partner()
    iid = (await initiative(shared_stack, owner, kind="process", product_id=""))["initiative_id"]
    assert "allowed: closed, do" in problem(await change_stage(shared_stack, owner, iid, "act"), 422)["detail"]
    assert fields(await change_stage(shared_stack, owner, iid, "proposed")) == {"stage"}
    response = await call(
        shared_stack,
        "POST",
        "/v1/initiatives/{initiative_id}:changeStage",
        headers=owner.auth,
        json={"stage": "do"},
        initiative_id=iid,
    )
    assert fields(response) == {"decision"}
    ok(await change_stage(shared_stack, owner, iid, "closed"))
    problem(await change_stage(shared_stack, owner, iid, "plan"), 422)


async def test_stakeholders_are_added_and_removed_by_the_owner(shared_stack: Stack) -> None:
    owner, retailer = await shared_stack.partner(), await shared_stack.partner()
    iid = (await initiative(shared_stack, owner))["initiative_id"]
    added = ok(
        await stakeholder(shared_stack, owner, iid, "addStakeholder", {"partner_id": retailer.id, "role": "seller"})
    )
    assert added["stakeholders"] == [{"partner_id": retailer.id, "role": "seller"}]
    ok(await stakeholder(shared_stack, owner, iid, "addStakeholder", {"platform": "supply_chain"}))
    assert ok(await get_initiative(shared_stack, iid, retailer.auth))["initiative_id"] == iid

    removed = ok(await stakeholder(shared_stack, owner, iid, "removeStakeholder", {"partner_id": retailer.id}))
    assert removed["stakeholders"] == [{"platform": "supply_chain", "role": ""}]
    problem(await get_initiative(shared_stack, iid, retailer.auth), 403)


async def test_changing_stakeholders_wrongly_is_refused(shared_stack: Stack) -> None:
    owner, retailer = await shared_stack.partner(), await shared_stack.partner()
    iid = (await initiative(shared_stack, owner, stakeholders=[{"partner_id": retailer.id}]))["initiative_id"]
    add, remove = "addStakeholder", "removeStakeholder"
    response = await stakeholder(shared_stack, owner, iid, add, {"partner_id": retailer.id})
    assert retailer.id in problem(response, 409)["detail"]
    assert fields(await stakeholder(shared_stack, owner, iid, add, {"partner_id": owner.id})) == {
        "stakeholder.partner_id"
    }
    assert fields(await stakeholder(shared_stack, owner, iid, add, {"role": "nobody"})) == {"stakeholder"}
    assert fields(await stakeholder(shared_stack, owner, iid, add, {"platform": "radio"})) == {"stakeholder.platform"}
    problem(await stakeholder(shared_stack, retailer, iid, add, {"platform": "community"}), 403)
    problem(await stakeholder(shared_stack, owner, iid, remove, {"platform": "community"}), 404)
    problem(await stakeholder(shared_stack, retailer, iid, remove, {"partner_id": retailer.id}), 403)


async def test_a_promoted_idea_proposes_an_initiative_and_links_to_another(shared_stack: Stack) -> None:
    maker = await shared_stack.partner(unique("Maker"), identity.PARTNER_KIND_MANUFACTURER)
    retailer = await shared_stack.partner(unique("Retailer"))
    customer = await shared_stack.person(customer_of=retailer.id)
    community = ok(
        await shared_stack.http.post(
            "/v1/communities",
            json={"name": unique("Kettle lovers"), "scope": {"category": "kitchen"}},
            headers=maker.auth,
        ),
        201,
    )["community_id"]
    ok(
        await shared_stack.http.post(
            f"/v1/communities/{community}:join", json={}, headers=retailer.acting_for(customer)
        ),
        201,
    )
    idea = ok(
        await shared_stack.http.post(
            "/v1/ideas",
            json={"community_id": community, "title": "A lid that locks", "description": "So it cannot leak"},
            headers=retailer.acting_for(customer),
        ),
        201,
    )["idea_id"]
    ok(await shared_stack.http.post(f"/v1/ideas/{idea}:promote", json={}, headers=maker.auth))

    async def proposed() -> dict[str, Any] | None:
        listed = ok(
            await call(shared_stack, "GET", "/v1/initiatives", headers=maker.auth, params={"stage": "proposed"})
        )
        return next((i for i in listed["initiatives"] if i["source_idea_id"] == idea), None)

    from_idea = await until(proposed)
    includes(from_idea, {"owner_id": maker.id, "title": "A lid that locks", "kind": "community"})
    assert [i["idea_id"] for i in from_idea["ideas"]] == [idea]
    launched = ok(await change_stage(shared_stack, maker, from_idea["initiative_id"], "plan"))
    assert launched["stage"] == "plan" and launched["launch_time"]

    path = "/v1/initiatives/{initiative_id}:linkIdea"
    other = await initiative(shared_stack, maker, title="Lid redesign")
    linked = ok(
        await call(
            shared_stack, "POST", path, headers=maker.auth, json={"idea_id": idea}, initiative_id=other["initiative_id"]
        )
    )
    assert linked["ideas"] == [
        {"idea_id": idea, "community_id": community, "title": "A lid that locks", "submitter_id": customer}
    ]
    again = await call(
        shared_stack, "POST", path, headers=maker.auth, json={"idea_id": idea}, initiative_id=other["initiative_id"]
    )
    problem(again, 409)
    # Only the partner that promoted it links it.
    theirs = await initiative(shared_stack, retailer, kind="process", product_id="")
    response = await call(
        shared_stack, "POST", path, headers=retailer.auth, json={"idea_id": idea}, initiative_id=theirs["initiative_id"]
    )
    problem(response, 403)


async def test_linking_an_idea_that_was_never_promoted_is_404(shared_stack: Stack) -> None:
    owner = await shared_stack.partner()
    iid = (await initiative(shared_stack, owner, kind="community", product_id=""))["initiative_id"]
    response = await call(
        shared_stack,
        "POST",
        "/v1/initiatives/{initiative_id}:linkIdea",
        headers=owner.auth,
        json={"idea_id": UNKNOWN},
        initiative_id=iid,
    )
    assert UNKNOWN in problem(response, 404)["detail"]


async def test_a_redesign_in_act_reaches_the_maker_and_comes_back_as_a_revision(shared_stack: Stack) -> None:
    w = await world(shared_stack)
    iid = (await initiative(shared_stack, w.maker, product_id=w.product))["initiative_id"]
    path = "/v1/initiatives/{initiative_id}:requestRedesign"
    ask = {"changes": "A 2 mm seal", "reason": "Leaks reported in reviews"}
    response = await call(shared_stack, "POST", path, headers=w.maker.auth, json=ask, initiative_id=iid)
    assert "act" in problem(response, 422)["detail"]
    for stage in ("do", "check", "act"):
        ok(await change_stage(shared_stack, w.maker, iid, stage))
    requested = ok(await call(shared_stack, "POST", path, headers=w.maker.auth, json=ask, initiative_id=iid))
    (redesign,) = requested["redesign_requests"]
    includes(
        redesign,
        {
            "product_id": w.product,
            "maker_id": w.maker.id,
            "changes": "A 2 mm seal",
            "cycle": 1,
            "fulfilled_revision": 0,
        },
    )
    problem(await call(shared_stack, "POST", path, headers=w.maker.auth, json=ask, initiative_id=iid), 409)

    async def proposal() -> dict[str, Any] | None:
        listed = ok(
            await shared_stack.http.get(
                "/v1/revision-proposals", params={"product_id": w.product}, headers=w.maker.auth
            )
        )
        return next((p for p in listed["proposals"] if p["initiative_id"] == iid), None)

    proposed = await until(proposal)
    ok(
        await shared_stack.http.post(
            f"/v1/revision-proposals/{proposed['proposal_id']}:confirm", json={}, headers=w.maker.auth
        )
    )

    async def fulfilled() -> bool:
        read = ok(await get_initiative(shared_stack, iid, w.maker.auth))
        return bool(read["redesign_requests"][0]["fulfilled_revision"] == 2)

    await until(fulfilled)


async def test_requesting_a_redesign_wrongly_is_refused(shared_stack: Stack) -> None:
    owner, stakeholder_partner = await shared_stack.partner(), await shared_stack.partner()
    process = await initiative(
        shared_stack, owner, kind="process", product_id="", stakeholders=[{"partner_id": stakeholder_partner.id}]
    )
    iid = process["initiative_id"]
    path = "/v1/initiatives/{initiative_id}:requestRedesign"
    assert fields(await call(shared_stack, "POST", path, headers=owner.auth, json={}, initiative_id=iid)) == {
        "changes",
        "reason",
    }
    ask = {"changes": "x", "reason": "y"}
    problem(await call(shared_stack, "POST", path, headers=stakeholder_partner.auth, json=ask, initiative_id=iid), 403)
    response = await call(shared_stack, "POST", path, headers=owner.auth, json=ask, initiative_id=iid)
    assert "product redesign" in problem(response, 422)["detail"]


# === objectives and measurements ======================================================================


async def test_a_reported_objective_moves_with_its_measurements_until_it_is_met(shared_stack: Stack) -> None:
    owner, retailer = await shared_stack.partner(), await shared_stack.partner()
    iid = (await initiative(shared_stack, owner, stakeholders=[{"partner_id": retailer.id}]))["initiative_id"]
    objective = ok(await add_objective(shared_stack, owner, iid), 201)
    includes(
        objective,
        {
            "initiative_id": iid,
            "metric": REPORTED | {"product_id": "", "revision": 0, "partner_id": ""},
            "direction": "decrease",
            "baseline": 12.0,
            "target": 3.0,
            "progress": 0.0,
        },
    )
    assert "current" not in objective and "forecast" not in objective
    oid = objective["objective_id"]
    earlier = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    halfway = ok(await measure(shared_stack, owner, oid, 7.5, measure_time=earlier, note="pilot line"), 201)
    assert halfway["current"] == 7.5 and halfway["progress"] == pytest.approx(0.5)
    met = ok(await measure(shared_stack, retailer, oid, 2.0), 201)  # a stakeholder reports too
    assert met["current"] == 2.0 and met["progress"] == 1.0 and met["met_time"] and met["health"] == "on_track"

    listed = ok(
        await call(
            shared_stack, "GET", "/v1/objectives/{objective_id}/measurements", headers=retailer.auth, objective_id=oid
        )
    )
    assert [(m["value"], m["source"], m["note"]) for m in listed["measurements"]] == [
        (7.5, "reported", "pilot line"),
        (2.0, "reported", ""),
    ]
    assert listed["measurements"][1]["recorded_by"] == f"partner:{retailer.id}"
    read = ok(await get_initiative(shared_stack, iid, owner.auth))
    assert [o["objective_id"] for o in read["objectives"]] == [oid] and read["health"] == "on_track"


async def test_a_product_rating_objective_starts_from_the_products_computed_rating(shared_stack: Stack) -> None:
    w = await world(shared_stack)
    await review(shared_stack, w, rating=2)

    async def rated() -> bool:
        metrics = ok(
            await call(
                shared_stack, "GET", "/v1/products/{product_id}/metrics", headers=w.maker.auth, product_id=w.product
            )
        )
        return bool(metrics["review_count"] == 1)

    await until(rated)
    iid = (await initiative(shared_stack, w.maker, product_id=w.product))["initiative_id"]
    objective = ok(
        await add_objective(
            shared_stack,
            w.maker,
            iid,
            metric={"kind": "product_average_rating", "product_id": w.product},
            direction=None,
            baseline=None,
            target=4.2,
            forecast=4.0,
        ),
        201,
    )
    includes(objective, {"direction": "increase", "baseline": 2.0, "current": 2.0, "target": 4.2, "forecast": 4.0})
    assert objective["metric"]["unit"] == "stars"
    response = await measure(shared_stack, w.maker, objective["objective_id"], 4.5)
    assert "computed" in problem(response, 422)["detail"]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"baseline": None}, {"baseline"}),
        ({"direction": None}, {"direction"}),
        ({"target": 20.0}, {"target"}),
        ({"due_time": None}, {"due_time"}),
        ({"metric": {"kind": "reported", "name": "Seal Failures!"}}, {"metric.name"}),
        ({"metric": {"kind": "negative_review_rate"}}, {"metric.product_id"}),
        ({"metric": {"kind": "product_average_rating", "product_id": "p"}, "direction": "decrease"}, {"direction"}),
    ],
)
async def test_an_invalid_objective_is_400_naming_the_field(
    shared_stack: Stack, overrides: dict[str, Any], named: set[str]
) -> None:
    owner = await shared_stack.partner()
    iid = (await initiative(shared_stack, owner))["initiative_id"]
    assert fields(await add_objective(shared_stack, owner, iid, **overrides)) == named
    assert ok(await get_initiative(shared_stack, iid, owner.auth))["objectives"] == []


async def test_objectives_are_the_owners_to_add_and_change(shared_stack: Stack) -> None:
    owner, retailer = await shared_stack.partner(), await shared_stack.partner()
    iid = (await initiative(shared_stack, owner, stakeholders=[{"partner_id": retailer.id}]))["initiative_id"]
    problem(await add_objective(shared_stack, retailer, iid), 403)
    oid = ok(await add_objective(shared_stack, owner, iid), 201)["objective_id"]
    change = {"objective": {"objective_id": oid, "target": 1.0}, "update_mask": "target"}
    problem(await call(shared_stack, "PATCH", "/v1/objectives", headers=retailer.auth, json=change), 403)
    ok(await change_stage(shared_stack, owner, iid, "closed"))
    problem(await add_objective(shared_stack, owner, iid), 422)
    problem(await call(shared_stack, "PATCH", "/v1/objectives", headers=owner.auth, json=change), 422)
    problem(await measure(shared_stack, owner, oid, 5.0), 422)


async def test_the_owner_changes_an_objectives_target_forecast_and_due_date(shared_stack: Stack) -> None:
    owner, retailer = await shared_stack.partner(), await shared_stack.partner()
    iid = (await initiative(shared_stack, owner, stakeholders=[{"partner_id": retailer.id}]))["initiative_id"]
    oid = ok(await add_objective(shared_stack, owner, iid), 201)["objective_id"]
    due = in_days(60)
    changed = ok(
        await call(
            shared_stack,
            "PATCH",
            "/v1/objectives",
            headers=owner.auth,
            json={
                "objective": {"objective_id": oid, "target": 1.0, "forecast": 2.0, "due_time": due, "baseline": 99.0},
                "update_mask": "target,forecast,due_time",
            },
        )
    )
    includes(changed, {"target": 1.0, "forecast": 2.0, "baseline": 12.0})
    assert datetime.fromisoformat(changed["due_time"]) == datetime.fromisoformat(due)
    seen = ok(await get_initiative(shared_stack, iid, retailer.auth))["objectives"][0]
    assert (seen["target"], seen["forecast"]) == (1.0, 2.0)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"target": 13.0}, "objective.target"),
        ({"due_time": "2020-01-01T00:00:00Z"}, "objective.due_time"),
        ({"due_time": "next tuesday"}, "objective.due_time"),
    ],
)
async def test_an_invalid_objective_change_is_400_naming_the_field(
    shared_stack: Stack, change: dict[str, Any], named: str
) -> None:
    owner = await shared_stack.partner()
    iid = (await initiative(shared_stack, owner))["initiative_id"]
    oid = ok(await add_objective(shared_stack, owner, iid), 201)["objective_id"]
    body = {"objective": {"objective_id": oid, **change}, "update_mask": ",".join(change)}
    assert fields(await call(shared_stack, "PATCH", "/v1/objectives", headers=owner.auth, json=body)) == {named}


async def test_measurements_are_refused_from_the_future_and_to_strangers(shared_stack: Stack) -> None:
    owner, stranger = await shared_stack.partner(), await shared_stack.partner()
    iid = (await initiative(shared_stack, owner))["initiative_id"]
    oid = ok(await add_objective(shared_stack, owner, iid), 201)["objective_id"]
    assert fields(await measure(shared_stack, owner, oid, 5.0, measure_time=in_days(1))) == {"measure_time"}
    assert fields(await measure(shared_stack, owner, oid, "five")) == {"value"}  # type: ignore[arg-type]
    problem(await measure(shared_stack, stranger, oid, 5.0), 403)
    path = "/v1/objectives/{objective_id}/measurements"
    problem(await call(shared_stack, "GET", path, headers=stranger.auth, objective_id=oid), 403)
    assert ok(await call(shared_stack, "GET", path, headers=owner.auth, objective_id=oid))["measurements"] == []


# === portfolio and metrics ===========================================================================


async def test_the_portfolio_sums_up_initiatives_by_owner_and_stakeholder(shared_stack: Stack) -> None:
    owner, retailer = await shared_stack.partner(), await shared_stack.partner()
    iid = (await initiative(shared_stack, owner, stakeholders=[{"partner_id": retailer.id}]))["initiative_id"]
    await initiative(shared_stack, owner, title="Faster answers", kind="process", product_id="")
    oid = ok(await add_objective(shared_stack, owner, iid, forecast=4.0), 201)["objective_id"]
    ok(await measure(shared_stack, owner, oid, 6.0), 201)

    path = "/v1/portfolio-summary"
    summary = ok(await call(shared_stack, "GET", path, headers=owner.auth))
    groups = {g.get("owner_id") or g.get("stakeholder_partner_id"): g for g in summary["groups"]}
    assert set(groups) == {owner.id, retailer.id}
    mine = groups[owner.id]
    includes(mine, {"initiatives": 2, "unmeasured": 1})
    (benefit,) = mine["benefits"]
    includes(
        benefit,
        {
            "kind": "reported",
            "name": "seal_failures",
            "objectives": 1,
            "met": 0,
            "target_benefit": 9.0,
            "forecast_benefit": 8.0,
            "actual_benefit": 6.0,
        },
    )
    theirs = ok(
        await call(shared_stack, "GET", path, headers=retailer.auth, params={"stakeholder_partner_id": retailer.id})
    )
    assert [(g["stakeholder_partner_id"], g["initiatives"]) for g in theirs["groups"]] == [(retailer.id, 1)]


async def test_a_portfolio_filtered_two_ways_at_once_is_400(shared_stack: Stack) -> None:
    owner = await shared_stack.partner()
    params = {"owner_id": owner.id, "stakeholder_platform": "community"}
    assert fields(await call(shared_stack, "GET", "/v1/portfolio-summary", headers=owner.auth, params=params)) == {
        "owner_id"
    }
    params = {"stakeholder_platform": "billboards"}
    assert fields(await call(shared_stack, "GET", "/v1/portfolio-summary", headers=owner.auth, params=params)) == {
        "stakeholder_platform"
    }


async def test_a_recovered_case_shows_in_the_product_and_partner_metrics(shared_stack: Stack) -> None:
    w = await world(shared_stack)
    case = await resolved_case(shared_stack, w)
    customer = w.retailer.acting_for(case["customer_id"])
    revised = {"rating": 4, "title": "Fixed", "body": "The replacement with the new seal has not leaked at all."}
    ok(await shared_stack.http.post(f"/v1/reviews/{case['review_id']}:revise", json=revised, headers=customer))

    async def recovered() -> bool:
        read = ok(await get_case(shared_stack, case["case_id"], w.maker.auth))
        return bool(read["outcome"] == "recovered")

    await until(recovered)
    product = ok(
        await call(
            shared_stack, "GET", "/v1/products/{product_id}/metrics", headers=w.retailer.auth, product_id=w.product
        )
    )
    includes(
        product,
        {
            "product_id": w.product,
            "review_count": 1,
            "average_rating": 4.0,
            "negative_review_rate": 0.0,
            "cases_opened": 1,
            "cases_recovered": 1,
            "cases_not_recovered": 0,
            "recovery_rate": 1.0,
        },
    )
    assert [(r["revision"], r["review_count"], r["average_rating"]) for r in product["revisions"]] == [(1, 1, 4.0)]

    partner = ok(
        await call(
            shared_stack, "GET", "/v1/partners/{partner_id}/metrics", headers=w.retailer.auth, partner_id=w.retailer.id
        )
    )
    includes(
        partner,
        {
            "partner_id": w.retailer.id,
            "cases_assigned": 1,
            "cases_recovered": 1,
            "recovery_rate": 1.0,
            "engaged": 1,
            "engaged_within_target": 1,
            "within_target_rate": 1.0,
            "overdue": 0,
        },
    )
    assert partner["mean_hours_to_first_engagement"] < 1


async def test_a_product_without_reviews_has_empty_metrics_and_ids_are_checked(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    path = "/v1/products/{product_id}/metrics"
    empty = ok(await call(shared_stack, "GET", path, headers=partner.auth, product_id=UNKNOWN))
    assert empty == {
        "product_id": UNKNOWN,
        "review_count": 0,
        "revisions": [],
        "cases_opened": 0,
        "cases_recovered": 0,
        "cases_not_recovered": 0,
    }
    assert fields(await call(shared_stack, "GET", path, headers=partner.auth, product_id="p" * 65)) == {"product_id"}


async def test_a_partner_reads_only_its_own_metrics(shared_stack: Stack) -> None:
    partner, other = await shared_stack.partner(), await shared_stack.partner()
    path = "/v1/partners/{partner_id}/metrics"
    fresh = ok(await call(shared_stack, "GET", path, headers=partner.auth, partner_id=partner.id))
    includes(fresh, {"cases_assigned": 0, "engaged": 0, "overdue": 0})
    assert "recovery_rate" not in fresh
    response = await call(shared_stack, "GET", path, headers=partner.auth, partner_id=other.id)
    assert other.id in problem(response, 403)["detail"]


async def test_the_product_network_is_what_supplychain_announced(shared_stack: Stack) -> None:
    w = await world(shared_stack, supplied=True)
    network = ok(
        await call(
            shared_stack, "GET", "/v1/products/{product_id}/network", headers=w.supplier.auth, product_id=w.product
        )
    )
    assert network == {
        "product_id": w.product,
        "maker_id": w.maker.id,
        "name": "Kettle",
        "revision": 1,
        "retailer_ids": [w.retailer.id],
        "suppliers": [{"supplier_id": w.supplier.id, "tier": 1, "item": w.component}],
    }
    response = await call(
        shared_stack, "GET", "/v1/products/{product_id}/network", headers=w.supplier.auth, product_id=UNKNOWN
    )
    assert UNKNOWN in problem(response, 404)["detail"]


# === field names in problems =========================================================================


@pytest.mark.parametrize(
    ("method", "template", "body", "named"),
    [
        (
            "PUT",
            "/v1/cases/{case_id}/root-cause",
            {"method": "categories", "categories": ["gremlins"], "summary": "x"},
            "root_cause.categories[0]",
        ),
        (
            "POST",
            "/v1/initiatives",
            {"title": "t", "kind": "process", "stakeholders": [{"platform": "radio"}]},
            "stakeholders[0].platform",
        ),
    ],
)
async def test_an_unknown_enum_value_in_a_list_is_named_as_the_service_names_the_field(
    shared_stack: Stack, method: str, template: str, body: dict[str, Any], named: str
) -> None:
    partner = await shared_stack.partner()
    response = await call(shared_stack, method, template, case_id=UNKNOWN, headers=partner.auth, json=body)
    assert fields(response) == {named}


# === unknown ids, everywhere ===========================================================================


def requests_naming_an_unknown_id() -> list[tuple[str, str, dict[str, Any] | None]]:
    """A valid request to each route that takes an id, with an id nothing has."""
    due = in_days(7)
    scar = {"containment": "a", "root_cause": "b", "corrective_action": "c"}
    return [
        ("GET", "/v1/cases/{case_id}/record", None),
        ("GET", "/v1/cases/{case_id}/entries", None),
        ("POST", "/v1/cases/{case_id}:engage", {"message": "Hello"}),
        ("POST", "/v1/cases/{case_id}/messages", {"body": "Hello"}),
        ("POST", "/v1/cases/{case_id}:startInvestigation", {}),
        ("PUT", "/v1/cases/{case_id}/root-cause", FIVE_WHYS),
        (
            "POST",
            "/v1/cases/{case_id}/actions",
            {"kind": "corrective", "description": "x", "owner_id": "o", "due_time": due},
        ),
        ("PATCH", "/v1/case-actions/{action_id}", {"status": "done"}),
        ("POST", "/v1/cases/{case_id}:proposeResolution", {"resolution": "A new kettle."}),
        ("POST", "/v1/cases/{case_id}:resolve", {}),
        ("POST", "/v1/cases/{case_id}/effectiveness-checks", {"passed": True, "evidence": "fine"}),
        ("POST", "/v1/cases/{case_id}:close", {}),
        (
            "POST",
            "/v1/supplier-corrective-actions",
            {"case_id": UNKNOWN, "supplier_id": "s", "problem": "p", "due_time": due},
        ),
        ("GET", "/v1/supplier-corrective-actions/{request_id}", None),
        ("POST", "/v1/supplier-corrective-actions/{request_id}:respond", scar),
        ("POST", "/v1/supplier-corrective-actions/{request_id}:review", {"accepted": True}),
        ("POST", "/v1/co-design-invitations", {"case_id": UNKNOWN}),
        ("POST", "/v1/co-design-invitations/{invitation_id}:respond", {"accept": True}),
        ("GET", "/v1/initiatives/{initiative_id}", None),
        ("PATCH", "/v1/initiatives", {"initiative": {"initiative_id": UNKNOWN}, "update_mask": "title"}),
        ("POST", "/v1/initiatives/{initiative_id}:changeStage", {"stage": "do", "decision": "go"}),
        ("POST", "/v1/initiatives/{initiative_id}:addStakeholder", {"stakeholder": {"platform": "community"}}),
        ("POST", "/v1/initiatives/{initiative_id}:removeStakeholder", {"stakeholder": {"platform": "community"}}),
        ("POST", "/v1/initiatives/{initiative_id}:linkCase", {"case_id": UNKNOWN}),
        ("POST", "/v1/initiatives/{initiative_id}:linkIdea", {"idea_id": UNKNOWN}),
        ("POST", "/v1/initiatives/{initiative_id}:requestRedesign", {"changes": "a", "reason": "b"}),
        (
            "POST",
            "/v1/initiatives/{initiative_id}/objectives",
            {"metric": REPORTED, "direction": "increase", "baseline": 1, "target": 2, "due_time": due},
        ),
        ("PATCH", "/v1/objectives", {"objective": {"objective_id": UNKNOWN}, "update_mask": "target"}),
        ("POST", "/v1/objectives/{objective_id}/measurements", {"value": 1.0}),
        ("GET", "/v1/objectives/{objective_id}/measurements", None),
        ("GET", "/v1/products/{product_id}/network", None),
    ]


async def test_an_unknown_id_is_404_on_every_route_that_takes_one(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    for method, template, body in requests_naming_an_unknown_id():
        path: dict[str, Any] = {name: UNKNOWN for name in re.findall(r"\{(\w+)\}", template)}
        response = await call(shared_stack, method, template, **path, headers=partner.auth, json=body)
        assert response.status_code == 404, (method, template, response.text)
        assert UNKNOWN in problem(response, 404)["detail"]


# === coverage ==========================================================================================


async def test_every_improvement_route_was_exercised_on_success_and_on_error(shared_stack: Stack) -> None:
    """Runs last: the tests above called every route of improvement, each with success and with a refusal."""
    assert_routes_exercised(shared_stack, "improvement")
