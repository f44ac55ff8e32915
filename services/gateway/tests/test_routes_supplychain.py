"""Every supplychain route of the gateway, against the real services, on the chain from a steel
supplier through a bike maker and a retailer to a consumer's home: products and their revisions,
redesigns proposed by the improvement program, bills of materials and supply networks, listings,
orders, lots, shipments leg by leg, traces and recalls.

Each route is exercised on its success path and on at least one error path; the last test checks
that this module did so for every supplychain route of the catalog.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
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
SCOPE = "supplychain"


# --- calling the gateway ------------------------------------------------------------------------------


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The JSON body of a successful response, after checking its status."""
    assert response.status_code == status, response.text
    return response.json()


def problem(response: httpx.Response, status: int, *fields: str, case: str = "") -> dict[str, Any]:
    """The problem document of ``response``; with ``fields``, the fields its ``errors`` must name.
    ``case`` names the case in a failure's message, for tests that try several."""
    assert response.status_code == status, f"{case}: {response.text}"
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["detail"]
    if fields:
        assert {e["field"] for e in body.get("errors", [])} == set(fields), f"{case}: {body}"
    return body


def moment(delta: timedelta = timedelta()) -> str:
    """Now plus ``delta``, as an RFC 3339 string."""
    return (datetime.now(UTC) + delta).isoformat().replace("+00:00", "Z")


def eur(minor: int) -> dict[str, Any]:
    return {"currency_code": "EUR", "amount_minor": minor}


def tag() -> str:
    return uuid.uuid4().hex[:8].upper()


HOME: dict[str, Any] = {
    "name": "Carla Consumer",
    "email": "carla@example.org",
    "phone": "+49 30 1234567",
    "address": {"lines": ["Lindenstr. 5"], "locality": "Berlin", "postal_code": "10969", "region_code": "DE"},
}


# --- setting up the chain through the gateway ------------------------------------------------------------


@dataclass
class Trade:
    """Steel supplier S, bike maker M, retailer R, carrier K, and R's customer C."""

    supplier: Partner
    maker: Partner
    retailer: Partner
    carrier: Partner
    consumer: str


async def trade(stack: Stack) -> Trade:
    supplier, maker, retailer, carrier = await asyncio.gather(
        stack.partner(unique("Steel Mill"), identity.PARTNER_KIND_SUPPLIER),
        stack.partner(unique("Bike Maker"), identity.PARTNER_KIND_MANUFACTURER),
        stack.partner(unique("Bike Shop"), identity.PARTNER_KIND_RETAILER),
        stack.partner(unique("Carrier"), identity.PARTNER_KIND_CARRIER),
    )
    consumer = await stack.person(unique("Carla"), customer_of=retailer.id)
    return Trade(supplier, maker, retailer, carrier, consumer)


async def register(
    stack: Stack, maker: Partner, kind: str = "finished_good", category: str = "bikes", name: str = "City bike"
) -> dict[str, Any]:
    body = {"sku": f"{category.upper()}-{tag()}", "name": name, "category": category, "kind": kind}
    product: dict[str, Any] = ok(await call(stack, "POST", "/v1/products", headers=maker.auth, json=body), 201)
    return product


async def set_bom(stack: Stack, maker: Partner, product: dict[str, Any], *items: dict[str, Any]) -> dict[str, Any]:
    bom: dict[str, Any] = ok(
        await call(
            stack,
            "PUT",
            "/v1/products/{product_id}/structure",
            headers=maker.auth,
            json={"items": list(items)},
            product_id=product["product_id"],
        )
    )
    return bom


async def list_at(stack: Stack, retailer: Partner, product: dict[str, Any], minor: int = 49_900) -> dict[str, Any]:
    body = {"product_id": product["product_id"], "price": eur(minor), "available": True}
    listing: dict[str, Any] = ok(await call(stack, "POST", "/v1/listings", headers=retailer.auth, json=body), 201)
    return listing


async def make_lot(
    stack: Stack, maker: Partner, product: dict[str, Any], quantity: int, *inputs: tuple[dict[str, Any], int]
) -> dict[str, Any]:
    body = {
        "product_id": product["product_id"],
        "code": f"L-{tag()}",
        "quantity": quantity,
        "inputs": [{"lot_id": lot["lot_id"], "quantity": used} for lot, used in inputs],
    }
    lot: dict[str, Any] = ok(await call(stack, "POST", "/v1/lots", headers=maker.auth, json=body), 201)
    return lot


async def place(stack: Stack, t: Trade, product: dict[str, Any], quantity: int = 1, **extra: Any) -> dict[str, Any]:
    body = {
        "customer_id": t.consumer,
        "retailer_id": t.retailer.id,
        "lines": [{"sku": product["sku"], "quantity": quantity}],
        "currency_code": "EUR",
        "contact": HOME,
        **extra,
    }
    order: dict[str, Any] = ok(
        await call(stack, "POST", "/v1/orders", headers=t.retailer.acting_for(t.consumer), json=body), 201
    )
    return order


async def leg_event(stack: Stack, by: Partner, leg_id: str, *statuses: str) -> dict[str, Any]:
    shipment: dict[str, Any] = {}
    for status in statuses:
        shipment = ok(
            await call(
                stack,
                "POST",
                "/v1/shipment-legs/{leg_id}/events",
                headers=by.auth,
                json={"status": status},
                leg_id=leg_id,
            ),
            201,
        )
    return shipment


@dataclass
class Chain:
    """The trade with S's steel (a component of M's bike), R's listing of the bike, a steel lot
    shipped to M and delivered, a bike lot built from it, and C's order of one bike: placed through
    R acting for C, confirmed and allocated the bike lot. Not yet shipped."""

    t: Trade
    steel: dict[str, Any]
    bike: dict[str, Any]
    listing: dict[str, Any]
    steel_lot: dict[str, Any]
    steel_shipment: dict[str, Any]
    bike_lot: dict[str, Any]
    order: dict[str, Any]


async def upstream(stack: Stack, t: Trade, lot: dict[str, Any], quantity: int) -> dict[str, Any]:
    """One leg from S to M carrying ``quantity`` of ``lot``, picked up and delivered."""
    leg = {
        "kind": "supplier_to_maker",
        "from_party_id": t.supplier.id,
        "to_party_id": t.maker.id,
        "carrier_id": t.carrier.id,
        "lots": [{"lot_id": lot["lot_id"], "quantity": quantity}],
    }
    shipment = ok(await call(stack, "POST", "/v1/shipments", headers=t.supplier.auth, json={"legs": [leg]}), 201)
    return await leg_event(stack, t.carrier, shipment["legs"][0]["leg_id"], "picked_up", "delivered")


async def chain(stack: Stack) -> Chain:
    t = await trade(stack)
    steel, bike = await asyncio.gather(
        register(stack, t.supplier, "component", "steel", "Steel tube"), register(stack, t.maker)
    )
    item = {"component_id": steel["product_id"], "supplier_id": t.supplier.id, "quantity": 3, "unit": "kg"}
    _bom, listing, steel_lot = await asyncio.gather(
        set_bom(stack, t.maker, bike, item), list_at(stack, t.retailer, bike), make_lot(stack, t.supplier, steel, 100)
    )
    steel_shipment, order = await asyncio.gather(upstream(stack, t, steel_lot, 30), place(stack, t, bike))
    bike_lot, _confirmed = await asyncio.gather(
        make_lot(stack, t.maker, bike, 10, (steel_lot, 30)),
        call(stack, "POST", "/v1/orders/{order_id}:confirm", headers=t.retailer.auth, order_id=order["order_id"]),
    )
    order = ok(
        await call(
            stack,
            "POST",
            "/v1/orders/{order_id}:allocate",
            headers=t.retailer.auth,
            json={"line_number": 1, "lot_id": bike_lot["lot_id"], "quantity": 1},
            order_id=order["order_id"],
        )
    )
    assert order["status"] == "confirmed"
    return Chain(t, steel, bike, listing, steel_lot, steel_shipment, bike_lot, order)


def home_legs(c: Chain) -> list[dict[str, Any]]:
    """M ships to R, R to C's home, both with K."""
    return [
        {
            "kind": "maker_to_retailer",
            "from_party_id": c.t.maker.id,
            "to_party_id": c.t.retailer.id,
            "carrier_id": c.t.carrier.id,
        },
        {
            "kind": "retailer_to_consumer",
            "from_party_id": c.t.retailer.id,
            "to_party_id": c.t.consumer,
            "carrier_id": c.t.carrier.id,
        },
    ]


async def get_order(stack: Stack, auth: Mapping[str, str], order_id: str) -> dict[str, Any]:
    order: dict[str, Any] = ok(await call(stack, "GET", "/v1/orders/{order_id}", headers=auth, order_id=order_id))
    return order


async def get_lot(stack: Stack, auth: Mapping[str, str], lot_id: str) -> dict[str, Any]:
    lot: dict[str, Any] = ok(await call(stack, "GET", "/v1/lots/{lot_id}", headers=auth, lot_id=lot_id))
    return lot


# --- products and revisions ----------------------------------------------------------------------------


async def test_a_maker_registers_a_product_at_revision_1(shared_stack: Stack) -> None:
    maker = await shared_stack.partner(unique("Maker"), identity.PARTNER_KIND_MANUFACTURER)
    sku = f"BIKE-{tag()}"
    body = {
        "sku": sku,
        "name": " City bike ",
        "category": "bikes",
        "kind": "finished_good",
        "attributes": {"frame": "steel"},
    }
    product = ok(await call(shared_stack, "POST", "/v1/products", headers=maker.auth, json=body), 201)
    assert (product["sku"], product["name"], product["kind"], product["maker_id"], product["revision"]) == (
        sku,
        "City bike",
        "finished_good",
        maker.id,
        1,
    )
    assert product["attributes"] == {"frame": "steel"}
    other = await shared_stack.partner()
    read = ok(
        await call(
            shared_stack, "GET", "/v1/products/{product_id}", headers=other.auth, product_id=product["product_id"]
        )
    )
    assert read == product


@pytest.mark.parametrize(
    ("case", "status", "fields"),
    [
        ("taken sku", 409, ()),
        ("bad fields", 400, ("sku", "name", "kind")),
        ("unknown kind", 400, ("kind",)),
        ("another maker", 403, ()),
    ],
)
async def test_registering_a_product_is_refused_when_it_breaks_a_rule(
    shared_stack: Stack, case: str, status: int, fields: tuple[str, ...]
) -> None:
    maker, other = await asyncio.gather(shared_stack.partner(), shared_stack.partner())
    body: dict[str, Any] = {"sku": f"BIKE-{tag()}", "name": "Bike", "category": "bikes", "kind": "finished_good"}
    if case == "taken sku":
        body["sku"] = (await register(shared_stack, other))["sku"]
    elif case == "bad fields":
        body |= {"sku": "no spaces allowed", "name": " "}
        del body["kind"]
    elif case == "unknown kind":
        body["kind"] = "gadget"
    elif case == "another maker":
        body["maker_id"] = other.id
    problem(await call(shared_stack, "POST", "/v1/products", headers=maker.auth, json=body), status, *fields)


async def test_products_are_listed_by_maker_category_and_sku_page_by_page(shared_stack: Stack) -> None:
    maker, other = await asyncio.gather(shared_stack.partner(), shared_stack.partner())
    category = f"cat-{tag().lower()}"
    mine = [await register(shared_stack, maker, category=category, name=f"Bike {n}") for n in range(3)]
    theirs = await register(shared_stack, other, category=category)
    route = "/v1/products"
    by_maker = ok(await call(shared_stack, "GET", route, headers=other.auth, params={"maker_id": maker.id}))
    assert sorted(p["product_id"] for p in by_maker["products"]) == sorted(p["product_id"] for p in mine)
    by_category = ok(await call(shared_stack, "GET", route, headers=other.auth, params={"category": category}))
    assert len(by_category["products"]) == 4 and theirs in by_category["products"]
    by_sku = ok(await call(shared_stack, "GET", route, headers=other.auth, params={"sku": mine[1]["sku"]}))
    assert by_sku["products"] == [mine[1]]
    seen: list[str] = []
    token = ""
    while True:
        params = {"category": category, "page_size": 3} | ({"page_token": token} if token else {})
        page = ok(await call(shared_stack, "GET", route, headers=other.auth, params=params))
        assert len(page["products"]) <= 3
        seen += [p["product_id"] for p in page["products"]]
        token = page["next_page_token"]
        if not token:
            break
    assert sorted(seen) == sorted(p["product_id"] for p in [*mine, theirs])


@pytest.mark.parametrize(
    ("params", "field"), [({"page_token": "garbage"}, "page_token"), ({"page_size": 101}, "page_size")]
)
async def test_listing_products_with_a_bad_page_is_400(shared_stack: Stack, params: dict[str, Any], field: str) -> None:
    partner = await shared_stack.partner()
    problem(await call(shared_stack, "GET", "/v1/products", headers=partner.auth, params=params), 400, field)


async def test_an_unknown_product_is_404_on_every_product_route(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    for template in (
        "/v1/products/{product_id}",
        "/v1/products/{product_id}/revisions",
        "/v1/products/{product_id}/structure",
        "/v1/products/{product_id}/supply-network",
    ):
        body = problem(await call(shared_stack, "GET", template, headers=partner.auth, product_id="no-such"), 404)
        assert "no-such" in body["detail"]


async def test_the_maker_revises_a_product_and_its_history_grows(shared_stack: Stack) -> None:
    maker = await shared_stack.partner()
    bike = await register(shared_stack, maker)
    revised = ok(
        await call(
            shared_stack,
            "POST",
            "/v1/products/{product_id}/revisions",
            headers=maker.auth,
            json={"changes": "stiffer rear fork", "reason": "2-star reviews", "initiative_id": "init-42"},
            product_id=bike["product_id"],
        ),
        201,
    )
    assert (revised["product_id"], revised["revision"]) == (bike["product_id"], 2)
    assert revised["update_time"] >= bike["update_time"]
    history = ok(
        await call(
            shared_stack,
            "GET",
            "/v1/products/{product_id}/revisions",
            headers=maker.auth,
            product_id=bike["product_id"],
        )
    )
    assert [(r["revision"], r["changes"], r["reason"], r["initiative_id"]) for r in history["revisions"]] == [
        (1, "first revision", "registered", ""),
        (2, "stiffer rear fork", "2-star reviews", "init-42"),
    ]
    assert history["revisions"][1]["created_by"] == maker.id


async def test_revising_a_product_is_refused_to_others_and_without_a_reason(shared_stack: Stack) -> None:
    maker, other = await asyncio.gather(shared_stack.partner(), shared_stack.partner())
    bike = await register(shared_stack, maker)
    route = "/v1/products/{product_id}/revisions"
    body = {"changes": "new fork", "reason": "reviews"}
    problem(await call(shared_stack, "POST", route, headers=other.auth, json=body, product_id=bike["product_id"]), 403)
    problem(
        await call(
            shared_stack, "POST", route, headers=maker.auth, json={"changes": "x"}, product_id=bike["product_id"]
        ),
        400,
        "reason",
    )
    problem(await call(shared_stack, "POST", route, headers=maker.auth, json=body, product_id="no-such"), 404)
    read = ok(
        await call(shared_stack, "GET", "/v1/products/{product_id}", headers=maker.auth, product_id=bike["product_id"])
    )
    assert read["revision"] == 1


# --- revision proposals from the improvement program ----------------------------------------------------


async def propose(stack: Stack, maker: Partner, product: dict[str, Any], changes: str) -> dict[str, Any]:
    """The improvement program asks ``maker`` for a redesign of ``product``: an initiative taken to
    its act stage requests it, and supplychain receives it as a proposal."""

    async def known() -> bool:
        response = await stack.http.get(f"/v1/products/{product['product_id']}/network", headers=maker.auth)
        return response.status_code == 200 and response.json()["maker_id"] == maker.id

    await eventually(known)
    body = {"title": f"Redesign: {changes}", "kind": "product_redesign", "product_id": product["product_id"]}
    initiative = ok(await stack.http.post("/v1/initiatives", json=body, headers=maker.auth), 201)
    for stage in ("do", "check", "act"):
        ok(
            await stack.http.post(
                f"/v1/initiatives/{initiative['initiative_id']}:changeStage",
                json={"stage": stage, "decision": f"on to {stage}"},
                headers=maker.auth,
            )
        )
    ok(
        await stack.http.post(
            f"/v1/initiatives/{initiative['initiative_id']}:requestRedesign",
            json={"changes": changes, "reason": "2-star reviews"},
            headers=maker.auth,
        )
    )

    async def received() -> dict[str, Any] | None:
        listed = ok(
            await call(
                stack, "GET", "/v1/revision-proposals", headers=maker.auth, params={"product_id": product["product_id"]}
            )
        )
        return next((p for p in listed["proposals"] if p["changes"] == changes), None)

    proposal: dict[str, Any] = await eventually(received, timeout=15)
    assert (proposal["initiative_id"], proposal["maker_id"], proposal["status"]) == (
        initiative["initiative_id"],
        maker.id,
        "proposed",
    )
    return proposal


async def test_the_maker_confirms_one_proposed_redesign_and_declines_another(shared_stack: Stack) -> None:
    maker, retailer = await asyncio.gather(shared_stack.partner(), shared_stack.partner())
    bike = await register(shared_stack, maker)
    fork, tyres = await asyncio.gather(
        propose(shared_stack, maker, bike, "stiffer rear fork"), propose(shared_stack, maker, bike, "wider tyres")
    )
    listed = ok(
        await call(shared_stack, "GET", "/v1/revision-proposals", headers=maker.auth, params={"status": "proposed"})
    )
    assert sorted(p["proposal_id"] for p in listed["proposals"]) == sorted([fork["proposal_id"], tyres["proposal_id"]])
    # The retailer sees none of the maker's proposals.
    theirs = ok(
        await call(
            shared_stack,
            "GET",
            "/v1/revision-proposals",
            headers=retailer.auth,
            params={"product_id": bike["product_id"]},
        )
    )
    assert theirs["proposals"] == []

    confirmed = ok(
        await call(
            shared_stack,
            "POST",
            "/v1/revision-proposals/{proposal_id}:confirm",
            headers=maker.auth,
            json={"changes": "steel fork, 2 mm thicker"},
            proposal_id=fork["proposal_id"],
        )
    )
    assert (confirmed["status"], confirmed["revision"], confirmed["decided_by"]) == ("confirmed", 2, maker.id)
    history = ok(
        await call(
            shared_stack,
            "GET",
            "/v1/products/{product_id}/revisions",
            headers=maker.auth,
            product_id=bike["product_id"],
        )
    )
    assert history["revisions"][-1] | {"create_time": ""} == {
        "product_id": bike["product_id"],
        "revision": 2,
        "changes": "steel fork, 2 mm thicker",
        "reason": "2-star reviews",
        "initiative_id": fork["initiative_id"],
        "proposal_id": fork["proposal_id"],
        "created_by": maker.id,
        "create_time": "",
    }
    declined = ok(
        await call(
            shared_stack,
            "POST",
            "/v1/revision-proposals/{proposal_id}:decline",
            headers=maker.auth,
            json={"reason": "the frame cannot take them"},
            proposal_id=tyres["proposal_id"],
        )
    )
    assert (declined["status"], declined["decline_reason"], declined["revision"]) == (
        "declined",
        "the frame cannot take them",
        0,
    )
    still = ok(
        await call(shared_stack, "GET", "/v1/revision-proposals", headers=maker.auth, params={"status": "proposed"})
    )
    assert still["proposals"] == []

    # Decided proposals are decided; others may not decide them; unknown ones are 404.
    confirm = "/v1/revision-proposals/{proposal_id}:confirm"
    decline = "/v1/revision-proposals/{proposal_id}:decline"
    problem(
        await call(shared_stack, "POST", confirm, headers=maker.auth, json={}, proposal_id=tyres["proposal_id"]), 422
    )
    problem(
        await call(
            shared_stack, "POST", decline, headers=maker.auth, json={"reason": "no"}, proposal_id=fork["proposal_id"]
        ),
        422,
    )
    problem(
        await call(shared_stack, "POST", confirm, headers=retailer.auth, json={}, proposal_id=fork["proposal_id"]), 403
    )
    problem(await call(shared_stack, "POST", confirm, headers=maker.auth, json={}, proposal_id="no-such"), 404)
    problem(
        await call(shared_stack, "POST", decline, headers=maker.auth, json={"reason": "no"}, proposal_id="no-such"), 404
    )
    problem(
        await call(shared_stack, "POST", decline, headers=maker.auth, json={}, proposal_id=fork["proposal_id"]),
        400,
        "reason",
    )


@pytest.mark.parametrize(("params", "field"), [({"status": "maybe"}, "status"), ({"page_token": "x"}, "page_token")])
async def test_listing_revision_proposals_with_a_bad_filter_is_400(
    shared_stack: Stack, params: dict[str, Any], field: str
) -> None:
    maker = await shared_stack.partner()
    problem(await call(shared_stack, "GET", "/v1/revision-proposals", headers=maker.auth, params=params), 400, field)


# --- structure: bills of materials and supply networks ----------------------------------------------------


async def test_a_bill_of_materials_gives_the_supply_network_tier_by_tier(shared_stack: Stack) -> None:
    t = await trade(shared_stack)
    ore_supplier = await shared_stack.partner(unique("Ore"), identity.PARTNER_KIND_SUPPLIER)
    ore = await register(shared_stack, ore_supplier, "raw_material", "ore", "Iron ore")
    steel = await register(shared_stack, t.supplier, "component", "steel", "Steel tube")
    bike = await register(shared_stack, t.maker)
    await set_bom(
        shared_stack,
        t.supplier,
        steel,
        {"component_id": ore["product_id"], "supplier_id": ore_supplier.id, "quantity": 2, "unit": "kg"},
    )
    bom = await set_bom(
        shared_stack, t.maker, bike, {"component_id": steel["product_id"], "supplier_id": t.supplier.id, "quantity": 3}
    )
    assert bom["product_id"] == bike["product_id"] and "update_time" in bom
    assert bom["items"] == [
        {
            "component_id": steel["product_id"],
            "supplier_id": t.supplier.id,
            "quantity": 3,
            "unit": "each",
            "component_sku": steel["sku"],
            "component_name": "Steel tube",
        }
    ]
    read = ok(
        await call(
            shared_stack,
            "GET",
            "/v1/products/{product_id}/structure",
            headers=t.retailer.auth,
            product_id=bike["product_id"],
        )
    )
    assert read == bom
    listing = await list_at(shared_stack, t.retailer, bike)
    network = ok(
        await call(
            shared_stack,
            "GET",
            "/v1/products/{product_id}/supply-network",
            headers=t.retailer.auth,
            product_id=bike["product_id"],
        )
    )
    assert (network["product_id"], network["maker_id"]) == (bike["product_id"], t.maker.id)
    assert [
        (s["tier"], s["supplier_id"], s["component_id"], s["parent_id"], s["customer_id"], s["quantity"], s["unit"])
        for s in network["suppliers"]
    ] == [
        (1, t.supplier.id, steel["product_id"], bike["product_id"], t.maker.id, 3, "each"),
        (2, ore_supplier.id, ore["product_id"], steel["product_id"], t.supplier.id, 2, "kg"),
    ]
    assert [x["listing_id"] for x in network["listings"]] == [listing["listing_id"]]
    # An empty list removes every component.
    emptied = await set_bom(shared_stack, t.maker, bike)
    assert emptied["items"] == []


async def test_a_bill_of_materials_is_refused_when_it_breaks_a_rule(shared_stack: Stack) -> None:
    t = await trade(shared_stack)
    steel = await register(shared_stack, t.supplier, "component", "steel", "Steel tube")
    bike = await register(shared_stack, t.maker)
    await set_bom(
        shared_stack, t.maker, bike, {"component_id": steel["product_id"], "supplier_id": t.supplier.id, "quantity": 3}
    )
    route = "/v1/products/{product_id}/structure"

    async def refused(by: Partner, product: dict[str, Any], item: dict[str, Any], status: int, *fields: str) -> None:
        response = await call(
            shared_stack, "PUT", route, headers=by.auth, json={"items": [item]}, product_id=product["product_id"]
        )
        problem(response, status, *fields)

    # The bike contains the steel: the steel cannot contain the bike.
    cycle = {"component_id": bike["product_id"], "supplier_id": t.maker.id, "quantity": 1}
    await refused(t.supplier, steel, cycle, 400, "items[0].component_id")
    unknown = {"component_id": "no-such", "supplier_id": t.supplier.id, "quantity": 1}
    await refused(t.maker, bike, unknown, 400, "items[0].component_id")
    bad = {"component_id": steel["product_id"], "supplier_id": "", "quantity": 0, "unit": "Kilo Gram"}
    await refused(t.maker, bike, bad, 400, "items[0].supplier_id", "items[0].quantity", "items[0].unit")
    fine = {"component_id": steel["product_id"], "supplier_id": t.supplier.id, "quantity": 1}
    await refused(t.retailer, bike, fine, 403)
    problem(await call(shared_stack, "PUT", route, headers=t.maker.auth, json={"items": []}, product_id="no-such"), 404)
    # Nothing was written.
    read = ok(await call(shared_stack, "GET", route, headers=t.maker.auth, product_id=bike["product_id"]))
    assert [(i["component_id"], i["quantity"]) for i in read["items"]] == [(steel["product_id"], 3)]


# --- listings ----------------------------------------------------------------------------------------------


async def test_a_retailer_lists_reprices_delists_and_relists_a_product(shared_stack: Stack) -> None:
    t = await trade(shared_stack)
    bike = await register(shared_stack, t.maker)
    listing = await list_at(shared_stack, t.retailer, bike)
    assert {k: listing[k] for k in ("product_id", "retailer_id", "price", "available", "active")} == {
        "product_id": bike["product_id"],
        "retailer_id": t.retailer.id,
        "price": eur(49_900),
        "available": True,
        "active": True,
    }
    route = "/v1/listings/{listing_id}"
    cheaper = ok(
        await call(
            shared_stack,
            "PATCH",
            route,
            headers=t.retailer.auth,
            json={"price": eur(44_900)},
            listing_id=listing["listing_id"],
        )
    )
    assert (cheaper["price"], cheaper["available"]) == (eur(44_900), True)
    sold_out = ok(
        await call(
            shared_stack,
            "PATCH",
            route,
            headers=t.retailer.auth,
            json={"available": False},
            listing_id=listing["listing_id"],
        )
    )
    assert (sold_out["price"], sold_out["available"]) == (eur(44_900), False)
    listed = ok(
        await call(shared_stack, "GET", "/v1/listings", headers=t.maker.auth, params={"product_id": bike["product_id"]})
    )
    assert listed["listings"] == [sold_out]
    delisted = ok(
        await call(
            shared_stack,
            "POST",
            "/v1/listings/{listing_id}:delist",
            headers=t.retailer.auth,
            listing_id=listing["listing_id"],
        )
    )
    assert delisted["active"] is False and "delist_time" in delisted
    current = ok(
        await call(shared_stack, "GET", "/v1/listings", headers=t.maker.auth, params={"product_id": bike["product_id"]})
    )
    assert current["listings"] == []
    history = ok(
        await call(
            shared_stack,
            "GET",
            "/v1/listings",
            headers=t.maker.auth,
            params={"retailer_id": t.retailer.id, "include_delisted": True},
        )
    )
    assert [x["listing_id"] for x in history["listings"]] == [listing["listing_id"]]
    relisted = await list_at(shared_stack, t.retailer, bike, 39_900)
    assert (relisted["listing_id"], relisted["active"], relisted["price"]) == (listing["listing_id"], True, eur(39_900))


async def test_listing_a_product_is_refused_when_it_breaks_a_rule(shared_stack: Stack) -> None:
    t = await trade(shared_stack)
    bike = await register(shared_stack, t.maker)
    fine = {"product_id": bike["product_id"], "price": eur(100), "available": True}
    cases: list[tuple[str, dict[str, Any], int, tuple[str, ...]]] = [
        ("no price", {"product_id": bike["product_id"]}, 400, ("price",)),
        (
            "bad price",
            fine | {"price": {"currency_code": "euro", "amount_minor": -1}},
            400,
            ("price.currency_code", "price.amount_minor"),
        ),
        ("as another retailer", fine | {"retailer_id": t.maker.id}, 403, ()),
        ("unknown product", fine | {"product_id": "no-such"}, 404, ()),
    ]
    for case, body, status, fields in cases:
        response = await call(shared_stack, "POST", "/v1/listings", headers=t.retailer.auth, json=body)
        problem(response, status, *fields, case=case)
    await list_at(shared_stack, t.retailer, bike)
    problem(await call(shared_stack, "POST", "/v1/listings", headers=t.retailer.auth, json=fine), 409)


async def test_changing_or_delisting_a_listing_is_refused_when_it_breaks_a_rule(shared_stack: Stack) -> None:
    t = await trade(shared_stack)
    bike = await register(shared_stack, t.maker)
    listing = await list_at(shared_stack, t.retailer, bike)
    lid = listing["listing_id"]
    route = "/v1/listings/{listing_id}"
    delist = "/v1/listings/{listing_id}:delist"
    problem(
        await call(shared_stack, "PATCH", route, headers=t.maker.auth, json={"available": False}, listing_id=lid), 403
    )
    problem(await call(shared_stack, "PATCH", route, headers=t.retailer.auth, json={}, listing_id=lid), 400, "price")
    problem(
        await call(
            shared_stack,
            "PATCH",
            route,
            headers=t.retailer.auth,
            json={"price": {"currency_code": "EUR"}, "available": "sometimes"},
            listing_id=lid,
        ),
        400,
        "available",
    )
    problem(
        await call(
            shared_stack, "PATCH", route, headers=t.retailer.auth, json={"available": True}, listing_id="no-such"
        ),
        404,
    )
    problem(await call(shared_stack, "POST", delist, headers=t.maker.auth, listing_id=lid), 403)
    problem(await call(shared_stack, "POST", delist, headers=t.retailer.auth, listing_id="no-such"), 404)
    ok(await call(shared_stack, "POST", delist, headers=t.retailer.auth, listing_id=lid))
    problem(await call(shared_stack, "POST", delist, headers=t.retailer.auth, listing_id=lid), 422)
    problem(
        await call(shared_stack, "PATCH", route, headers=t.retailer.auth, json={"available": True}, listing_id=lid), 422
    )
    problem(
        await call(
            shared_stack, "GET", "/v1/listings", headers=t.retailer.auth, params={"include_delisted": "perhaps"}
        ),
        400,
        "include_delisted",
    )


# --- orders ------------------------------------------------------------------------------------------------


async def test_a_customer_orders_through_the_retailer_and_a_retry_returns_the_same_order(shared_stack: Stack) -> None:
    t = await trade(shared_stack)
    bike = await register(shared_stack, t.maker)
    await list_at(shared_stack, t.retailer, bike)
    body = {
        "customer_id": t.consumer,
        "retailer_id": t.retailer.id,
        "lines": [{"sku": bike["sku"], "quantity": 2}],
        "currency_code": "EUR",
        "contact": HOME,
    }
    headers = t.retailer.acting_for(t.consumer) | {"Idempotency-Key": f"order-{tag()}"}
    order = ok(await call(shared_stack, "POST", "/v1/orders", headers=headers, json=body), 201)
    assert (order["customer_id"], order["retailer_id"], order["status"], order["total"]) == (
        t.consumer,
        t.retailer.id,
        "placed",
        eur(99_800),
    )
    assert order["lines"] == [
        {
            "line_number": 1,
            "product_id": bike["product_id"],
            "sku": bike["sku"],
            "revision": 1,
            "quantity": 2,
            "unit_price": eur(49_900),
            "line_total": eur(99_800),
            "allocations": [],
        }
    ]
    assert order["contact"] == HOME
    assert order["idempotency_key"] == headers["Idempotency-Key"]
    again = ok(await call(shared_stack, "POST", "/v1/orders", headers=headers, json=body), 201)
    assert again == order
    # The service itself keeps the key too: the same key in the body, without the header, finds the order.
    in_body = ok(
        await call(
            shared_stack,
            "POST",
            "/v1/orders",
            headers=t.retailer.acting_for(t.consumer),
            json=body | {"idempotency_key": headers["Idempotency-Key"]},
        ),
        201,
    )
    assert in_body["order_id"] == order["order_id"]
    listed = ok(
        await call(shared_stack, "GET", "/v1/orders", headers=t.retailer.auth, params={"customer_id": t.consumer})
    )
    assert [o["order_id"] for o in listed["orders"]] == [order["order_id"]]


async def test_placing_an_order_is_refused_when_it_breaks_a_rule(shared_stack: Stack) -> None:
    t = await trade(shared_stack)
    bike = await register(shared_stack, t.maker)
    unlisted = await register(shared_stack, t.maker)
    listing = await list_at(shared_stack, t.retailer, bike)
    key = f"k-{tag()}"
    await place(shared_stack, t, bike, idempotency_key=key)
    fine: dict[str, Any] = {
        "customer_id": t.consumer,
        "retailer_id": t.retailer.id,
        "lines": [{"sku": bike["sku"], "quantity": 1}],
        "currency_code": "EUR",
        "contact": HOME,
    }
    for_customer = t.retailer.acting_for(t.consumer)
    cases: list[tuple[str, Mapping[str, str], dict[str, Any], int, tuple[str, ...]]] = [
        ("not acting for the customer", t.retailer.auth, fine, 403, ()),
        (
            "unknown sku",
            for_customer,
            fine | {"lines": [{"sku": "NO-SUCH-SKU", "quantity": 1}]},
            400,
            ("lines[0].sku",),
        ),
        ("no lines", for_customer, fine | {"lines": []}, 400, ("lines",)),
        ("another currency", for_customer, fine | {"currency_code": "USD"}, 400, ("currency_code",)),
        (
            "bad address",
            for_customer,
            fine | {"contact": HOME | {"address": HOME["address"] | {"region_code": "Germany"}}},
            400,
            ("contact.address.region_code",),
        ),
        (
            "key reused for another order",
            for_customer,
            fine | {"idempotency_key": key, "lines": [{"sku": bike["sku"], "quantity": 5}]},
            400,
            ("idempotency_key",),
        ),
        ("not listed", for_customer, fine | {"lines": [{"sku": unlisted["sku"], "quantity": 1}]}, 422, ()),
    ]
    for case, auth, body, status, fields in cases:
        response = await call(shared_stack, "POST", "/v1/orders", headers=auth, json=body)
        refused = problem(response, status, *fields, case=case)
        if status == 422:
            assert refused["detail"].startswith("lines[0].sku:"), refused
    ok(
        await call(
            shared_stack,
            "PATCH",
            "/v1/listings/{listing_id}",
            headers=t.retailer.auth,
            json={"available": False},
            listing_id=listing["listing_id"],
        )
    )
    sold_out = problem(await call(shared_stack, "POST", "/v1/orders", headers=for_customer, json=fine), 422)
    assert sold_out["detail"].startswith("lines[0].sku:") and "not available" in sold_out["detail"]
    mine = ok(await call(shared_stack, "GET", "/v1/orders", headers=t.retailer.auth))
    assert len(mine["orders"]) == 1  # only the first order, placed before


async def test_an_order_is_seen_in_full_by_its_retailer_and_by_the_maker_without_contact_until_consented(
    shared_stack: Stack,
) -> None:
    t = await trade(shared_stack)
    outsider = await shared_stack.partner()
    bike = await register(shared_stack, t.maker)
    await list_at(shared_stack, t.retailer, bike)
    order = await place(shared_stack, t, bike)
    oid = order["order_id"]
    assert await get_order(shared_stack, t.retailer.auth, oid) == order
    assert (await get_order(shared_stack, t.retailer.acting_for(t.consumer), oid))["contact"] == HOME
    as_maker = await get_order(shared_stack, t.maker.auth, oid)
    assert "contact" not in as_maker and as_maker["lines"] == order["lines"]
    problem(await call(shared_stack, "GET", "/v1/orders/{order_id}", headers=outsider.auth, order_id=oid), 404)
    problem(await call(shared_stack, "GET", "/v1/orders/{order_id}", headers=t.retailer.auth, order_id="no-such"), 404)
    # The customer consents (through the retailer) to share contact data with makers.
    ok(
        await call(
            shared_stack,
            "POST",
            "/v1/parties/{party_id}/consents",
            headers=t.retailer.acting_for(t.consumer),
            json={"partner_id": t.retailer.id, "purpose": "share:contact-with-maker", "source": "checkout"},
            party_id=t.consumer,
        ),
        201,
    )
    assert (await get_order(shared_stack, t.maker.auth, oid))["contact"] == HOME


async def test_orders_are_listed_newest_first_within_what_the_caller_may_see(shared_stack: Stack) -> None:
    t = await trade(shared_stack)
    outsider = await shared_stack.partner()
    bike = await register(shared_stack, t.maker)
    tandem = await register(shared_stack, t.maker, name="Tandem")
    await list_at(shared_stack, t.retailer, bike)
    await list_at(shared_stack, t.retailer, tandem)
    first = await place(shared_stack, t, bike)
    second = await place(shared_stack, t, tandem)
    ok(
        await call(
            shared_stack, "POST", "/v1/orders/{order_id}:confirm", headers=t.retailer.auth, order_id=second["order_id"]
        )
    )
    route = "/v1/orders"
    mine = ok(await call(shared_stack, "GET", route, headers=t.retailer.auth))
    assert [o["order_id"] for o in mine["orders"]] == [second["order_id"], first["order_id"]]
    placed = ok(await call(shared_stack, "GET", route, headers=t.retailer.auth, params={"status": "placed"}))
    assert [o["order_id"] for o in placed["orders"]] == [first["order_id"]]
    of_tandem = ok(
        await call(shared_stack, "GET", route, headers=t.maker.auth, params={"product_id": tandem["product_id"]})
    )
    assert [o["order_id"] for o in of_tandem["orders"]] == [second["order_id"]]
    assert all("contact" not in o for o in of_tandem["orders"])
    page = ok(
        await call(shared_stack, "GET", route, headers=t.retailer.acting_for(t.consumer), params={"page_size": 1})
    )
    assert [o["order_id"] for o in page["orders"]] == [second["order_id"]] and page["next_page_token"]
    rest = ok(
        await call(
            shared_stack,
            "GET",
            route,
            headers=t.retailer.acting_for(t.consumer),
            params={"page_size": 1, "page_token": page["next_page_token"]},
        )
    )
    assert [o["order_id"] for o in rest["orders"]] == [first["order_id"]]
    assert ok(await call(shared_stack, "GET", route, headers=outsider.auth))["orders"] == []
    problem(await call(shared_stack, "GET", route, headers=t.retailer.auth, params={"status": "lost"}), 400, "status")
    problem(
        await call(shared_stack, "GET", route, headers=t.retailer.auth, params={"page_token": "abc"}), 400, "page_token"
    )


async def test_the_retailer_confirms_an_order_once(shared_stack: Stack) -> None:
    t = await trade(shared_stack)
    outsider = await shared_stack.partner()
    bike = await register(shared_stack, t.maker)
    await list_at(shared_stack, t.retailer, bike)
    order = await place(shared_stack, t, bike)
    route = "/v1/orders/{order_id}:confirm"
    oid = order["order_id"]
    problem(await call(shared_stack, "POST", route, headers=t.maker.auth, order_id=oid), 403)
    problem(await call(shared_stack, "POST", route, headers=outsider.auth, order_id=oid), 404)
    confirmed = ok(await call(shared_stack, "POST", route, headers=t.retailer.auth, order_id=oid))
    assert confirmed["status"] == "confirmed" and "confirm_time" in confirmed
    assert (await get_order(shared_stack, t.retailer.auth, oid))["status"] == "confirmed"
    body = problem(await call(shared_stack, "POST", route, headers=t.retailer.auth, order_id=oid), 422)
    assert body["detail"].startswith("status:")


async def test_the_customer_cancels_an_allocated_order_and_its_lot_is_free_again(shared_stack: Stack) -> None:
    c = await chain(shared_stack)
    oid = c.order["order_id"]
    assert (await get_lot(shared_stack, c.t.maker.auth, c.bike_lot["lot_id"]))["available_quantity"] == 9
    route = "/v1/orders/{order_id}:cancel"
    problem(await call(shared_stack, "POST", route, headers=c.t.maker.auth, json={}, order_id=oid), 403)
    problem(
        await call(shared_stack, "POST", route, headers=c.t.retailer.auth, json={"reason": "x" * 501}, order_id=oid),
        400,
        "reason",
    )
    cancelled = ok(
        await call(
            shared_stack,
            "POST",
            route,
            headers=c.t.retailer.acting_for(c.t.consumer),
            json={"reason": " changed my mind "},
            order_id=oid,
        )
    )
    assert (cancelled["status"], cancelled["cancel_reason"]) == ("cancelled", "changed my mind")
    assert cancelled["lines"][0]["allocations"] == [] and "cancel_time" in cancelled
    assert (await get_lot(shared_stack, c.t.maker.auth, c.bike_lot["lot_id"]))["available_quantity"] == 10
    problem(await call(shared_stack, "POST", route, headers=c.t.retailer.auth, json={}, order_id=oid), 422)
    problem(await call(shared_stack, "POST", route, headers=c.t.retailer.auth, json={}, order_id="no-such"), 404)


async def test_lots_are_allocated_to_an_order_line_up_to_its_quantity(shared_stack: Stack) -> None:
    t = await trade(shared_stack)
    bike = await register(shared_stack, t.maker)
    tandem = await register(shared_stack, t.maker, name="Tandem")
    await list_at(shared_stack, t.retailer, bike)
    first_lot = await make_lot(shared_stack, t.maker, bike, 1)
    second_lot = await make_lot(shared_stack, t.maker, bike, 5)
    tandem_lot = await make_lot(shared_stack, t.maker, tandem, 5)
    order = await place(shared_stack, t, bike, 3)
    route = "/v1/orders/{order_id}:allocate"
    oid = order["order_id"]

    async def allocate(by: Mapping[str, str], lot: dict[str, Any], quantity: int, line: int = 1) -> httpx.Response:
        body = {"line_number": line, "lot_id": lot["lot_id"], "quantity": quantity}
        return await call(shared_stack, "POST", route, headers=by, json=body, order_id=oid)

    # The maker of the line's product may allocate, as may the retailer.
    ok(await allocate(t.maker.auth, first_lot, 1))
    allocated = ok(await allocate(t.retailer.auth, second_lot, 2))
    assert sorted((a["lot_id"], a["quantity"]) for a in allocated["lines"][0]["allocations"]) == sorted(
        [(first_lot["lot_id"], 1), (second_lot["lot_id"], 2)]
    )
    assert (await get_lot(shared_stack, t.maker.auth, second_lot["lot_id"]))["available_quantity"] == 3
    problem(await allocate(t.retailer.auth, second_lot, 1), 422)  # the line has its 3
    problem(await allocate(t.retailer.auth, second_lot, 1, line=2), 400, "line_number")
    problem(await allocate(t.retailer.auth, tandem_lot, 1), 400, "lot_id")
    problem(await allocate(t.retailer.auth, second_lot, 0), 400, "quantity")
    outsider = await shared_stack.partner()
    problem(await allocate(outsider.auth, second_lot, 1), 404)
    problem(await allocate(t.supplier.auth, second_lot, 1), 404)


async def test_an_order_line_gets_only_released_lots_with_enough_left(shared_stack: Stack) -> None:
    t = await trade(shared_stack)
    bike = await register(shared_stack, t.maker)
    await list_at(shared_stack, t.retailer, bike)
    small = await make_lot(shared_stack, t.maker, bike, 1)
    held = await make_lot(shared_stack, t.maker, bike, 5)
    ok(
        await call(
            shared_stack,
            "POST",
            "/v1/lots/{lot_id}:changeStatus",
            headers=t.maker.auth,
            json={"status": "on_hold", "reason": "paint check"},
            lot_id=held["lot_id"],
        )
    )
    order = await place(shared_stack, t, bike, 2)
    route = "/v1/orders/{order_id}:allocate"
    for lot, field in ((held, "lot_id"), (small, "quantity")):
        body = {"line_number": 1, "lot_id": lot["lot_id"], "quantity": 2}
        response = await call(
            shared_stack, "POST", route, headers=t.retailer.auth, json=body, order_id=order["order_id"]
        )
        assert problem(response, 422)["detail"].startswith(f"{field}:")


# --- lots --------------------------------------------------------------------------------------------------


async def test_a_lot_is_built_from_lots_of_its_components(shared_stack: Stack) -> None:
    t = await trade(shared_stack)
    steel = await register(shared_stack, t.supplier, "component", "steel", "Steel tube")
    bike = await register(shared_stack, t.maker)
    await set_bom(
        shared_stack, t.maker, bike, {"component_id": steel["product_id"], "supplier_id": t.supplier.id, "quantity": 3}
    )
    steel_lot = await make_lot(shared_stack, t.supplier, steel, 100)
    assert (steel_lot["producer_id"], steel_lot["status"], steel_lot["quantity"], steel_lot["available_quantity"]) == (
        t.supplier.id,
        "released",
        100,
        100,
    )
    produced = moment(-timedelta(hours=2))
    body = {
        "product_id": bike["product_id"],
        "code": f"BIKE-L-{tag()}",
        "quantity": 10,
        "inputs": [{"lot_id": steel_lot["lot_id"], "quantity": 30}],
        "status": "quarantined",
        "produce_time": produced,
    }
    bike_lot = ok(await call(shared_stack, "POST", "/v1/lots", headers=t.maker.auth, json=body), 201)
    assert (bike_lot["code"], bike_lot["product_id"], bike_lot["revision"], bike_lot["status"]) == (
        body["code"],
        bike["product_id"],
        1,
        "quarantined",
    )
    assert bike_lot["inputs"] == [{"lot_id": steel_lot["lot_id"], "quantity": 30}]
    assert datetime.fromisoformat(bike_lot["produce_time"]) == datetime.fromisoformat(produced)
    assert await get_lot(shared_stack, t.maker.auth, bike_lot["lot_id"]) == bike_lot
    assert (await get_lot(shared_stack, t.supplier.auth, steel_lot["lot_id"]))["available_quantity"] == 70


async def test_recording_a_lot_is_refused_when_it_breaks_a_rule(shared_stack: Stack) -> None:
    t = await trade(shared_stack)
    steel = await register(shared_stack, t.supplier, "component", "steel", "Steel tube")
    bike = await register(shared_stack, t.maker)
    steel_lot = await make_lot(shared_stack, t.supplier, steel, 10)
    taken = await make_lot(shared_stack, t.maker, bike, 1)
    fine: dict[str, Any] = {"product_id": bike["product_id"], "code": f"L-{tag()}", "quantity": 5}
    steel_input = {"lot_id": steel_lot["lot_id"], "quantity": 1}
    cases: list[tuple[str, Partner, dict[str, Any], int, tuple[str, ...]]] = [
        ("code taken", t.maker, fine | {"code": taken["code"]}, 409, ()),
        (
            "bad fields",
            t.maker,
            fine | {"code": "has spaces", "quantity": 0, "status": "recalled"},
            400,
            ("code", "quantity", "status"),
        ),
        ("input not in the bill", t.maker, fine | {"inputs": [steel_input]}, 400, ("inputs[0].lot_id",)),
        (
            "unknown input",
            t.maker,
            fine | {"inputs": [{"lot_id": "no-such", "quantity": 1}]},
            400,
            ("inputs[0].lot_id",),
        ),
        ("another maker's product", t.retailer, fine, 403, ()),
        ("a revision to come", t.maker, fine | {"revision": 2}, 400, ("revision",)),
        ("unknown product", t.maker, fine | {"product_id": "no-such"}, 404, ()),
    ]
    for case, by, body, status, fields in cases:
        problem(await call(shared_stack, "POST", "/v1/lots", headers=by.auth, json=body), status, *fields, case=case)
    await set_bom(
        shared_stack, t.maker, bike, {"component_id": steel["product_id"], "supplier_id": t.supplier.id, "quantity": 1}
    )
    too_much = fine | {"inputs": [{"lot_id": steel_lot["lot_id"], "quantity": 11}]}
    refused = problem(await call(shared_stack, "POST", "/v1/lots", headers=t.maker.auth, json=too_much), 422)
    assert refused["detail"].startswith("inputs[0].lot_id:")
    # Nothing was built from the steel, and no lot was recorded.
    assert (await get_lot(shared_stack, t.supplier.auth, steel_lot["lot_id"]))["available_quantity"] == 10
    listed = ok(
        await call(shared_stack, "GET", "/v1/lots", headers=t.maker.auth, params={"product_id": bike["product_id"]})
    )
    assert [x["lot_id"] for x in listed["lots"]] == [taken["lot_id"]]


async def test_lots_are_listed_for_their_producer_and_their_products_maker(shared_stack: Stack) -> None:
    t = await trade(shared_stack)
    bike = await register(shared_stack, t.maker)
    released = await make_lot(shared_stack, t.maker, bike, 5)
    held = await make_lot(shared_stack, t.maker, bike, 5)
    ok(
        await call(
            shared_stack,
            "POST",
            "/v1/lots/{lot_id}:changeStatus",
            headers=t.maker.auth,
            json={"status": "on_hold"},
            lot_id=held["lot_id"],
        )
    )
    route = "/v1/lots"
    by_product = ok(
        await call(shared_stack, "GET", route, headers=t.maker.auth, params={"product_id": bike["product_id"]})
    )
    assert sorted(x["lot_id"] for x in by_product["lots"]) == sorted([released["lot_id"], held["lot_id"]])
    on_hold = ok(
        await call(
            shared_stack, "GET", route, headers=t.maker.auth, params={"producer_id": t.maker.id, "status": "on_hold"}
        )
    )
    assert [x["lot_id"] for x in on_hold["lots"]] == [held["lot_id"]]
    first = ok(
        await call(
            shared_stack, "GET", route, headers=t.maker.auth, params={"product_id": bike["product_id"], "page_size": 1}
        )
    )
    assert len(first["lots"]) == 1 and first["next_page_token"]
    others = ok(
        await call(shared_stack, "GET", route, headers=t.retailer.auth, params={"product_id": bike["product_id"]})
    )
    assert others["lots"] == []
    problem(await call(shared_stack, "GET", route, headers=t.maker.auth, params={"status": "lost"}), 400, "status")
    problem(await call(shared_stack, "GET", route, headers=t.maker.auth, params={"page_token": "?"}), 400, "page_token")


async def test_a_lot_is_hidden_from_partners_it_does_not_concern(shared_stack: Stack) -> None:
    c = await chain(shared_stack)
    outsider = await shared_stack.partner()
    route = "/v1/lots/{lot_id}"
    problem(await call(shared_stack, "GET", route, headers=outsider.auth, lot_id=c.bike_lot["lot_id"]), 404)
    problem(await call(shared_stack, "GET", route, headers=c.t.maker.auth, lot_id="no-such"), 404)
    # The retailer's order holds the bike lot, and the steel went to the maker: both concern them.
    assert (await get_lot(shared_stack, c.t.retailer.auth, c.bike_lot["lot_id"]))["inputs"] == [
        {"lot_id": c.steel_lot["lot_id"], "quantity": 30}
    ]
    assert (await get_lot(shared_stack, c.t.maker.auth, c.steel_lot["lot_id"]))["available_quantity"] == 70


async def test_a_lot_is_held_and_released_only_by_its_producer_or_maker(shared_stack: Stack) -> None:
    c = await chain(shared_stack)
    outsider = await shared_stack.partner()
    route = "/v1/lots/{lot_id}:changeStatus"
    lot_id = c.bike_lot["lot_id"]
    held = ok(
        await call(
            shared_stack,
            "POST",
            route,
            headers=c.t.maker.auth,
            json={"status": "quarantined", "reason": " weld cracks "},
            lot_id=lot_id,
        )
    )
    assert (held["status"], held["status_reason"]) == ("quarantined", "weld cracks")
    assert (await get_lot(shared_stack, c.t.retailer.auth, lot_id))["status"] == "quarantined"
    released = ok(
        await call(shared_stack, "POST", route, headers=c.t.maker.auth, json={"status": "released"}, lot_id=lot_id)
    )
    assert (released["status"], released["status_reason"]) == ("released", "")
    problem(
        await call(shared_stack, "POST", route, headers=c.t.retailer.auth, json={"status": "on_hold"}, lot_id=lot_id),
        403,
    )
    problem(
        await call(shared_stack, "POST", route, headers=outsider.auth, json={"status": "on_hold"}, lot_id=lot_id), 404
    )
    problem(
        await call(shared_stack, "POST", route, headers=c.t.maker.auth, json={"status": "recalled"}, lot_id=lot_id),
        400,
        "status",
    )
    problem(await call(shared_stack, "POST", route, headers=c.t.maker.auth, json={}, lot_id=lot_id), 400, "status")


# --- shipments ---------------------------------------------------------------------------------------------


async def test_an_order_ships_home_leg_by_leg_and_is_delivered(shared_stack: Stack) -> None:
    c = await chain(shared_stack)
    oid = c.order["order_id"]
    expected = moment(timedelta(days=2))
    legs = home_legs(c)
    legs[1]["expected_time"] = expected
    shipment = ok(
        await call(
            shared_stack, "POST", "/v1/shipments", headers=c.t.retailer.auth, json={"order_id": oid, "legs": legs}
        ),
        201,
    )
    assert (shipment["order_id"], shipment["created_by"]) == (oid, c.t.retailer.id)
    assert [(leg["sequence"], leg["kind"], leg["status"]) for leg in shipment["legs"]] == [
        (1, "maker_to_retailer", "created"),
        (2, "retailer_to_consumer", "created"),
    ]
    # Legs naming no lots carry the lots allocated to the order.
    assert all(leg["lots"] == [{"lot_id": c.bike_lot["lot_id"], "quantity": 1}] for leg in shipment["legs"])
    assert datetime.fromisoformat(shipment["legs"][1]["expected_time"]) == datetime.fromisoformat(expected)
    to_shop, to_home = (leg["leg_id"] for leg in shipment["legs"])
    assert (await get_order(shared_stack, c.t.retailer.auth, oid))["shipment_id"] == shipment["shipment_id"]

    picked = await leg_event(shared_stack, c.t.carrier, to_shop, "picked_up")
    assert picked["legs"][0]["status"] == "picked_up"
    shipped = await get_order(shared_stack, c.t.retailer.auth, oid)
    assert shipped["status"] == "shipped" and "ship_time" in shipped
    later = moment(timedelta(days=3))
    delayed = ok(
        await call(
            shared_stack,
            "POST",
            "/v1/shipment-legs/{leg_id}/events",
            headers=c.t.carrier.auth,
            json={"status": "delayed", "note": "storm", "expected_time": later},
            leg_id=to_shop,
        ),
        201,
    )
    event = delayed["legs"][0]["events"][-1]
    assert (event["status"], event["note"], event["recorded_by"]) == ("delayed", "storm", c.t.carrier.id)
    assert datetime.fromisoformat(event["expected_time"]) == datetime.fromisoformat(later)
    await leg_event(shared_stack, c.t.carrier, to_shop, "delivered")
    done = await leg_event(shared_stack, c.t.carrier, to_home, "picked_up", "in_transit", "delivered")
    assert [e["status"] for e in done["legs"][1]["events"]] == ["created", "picked_up", "in_transit", "delivered"]
    delivered = await get_order(shared_stack, c.t.retailer.auth, oid)
    assert delivered["status"] == "delivered" and "deliver_time" in delivered
    # The customer can no longer cancel, and the shipment reads the same for every party to it.
    cancel = await call(
        shared_stack,
        "POST",
        "/v1/orders/{order_id}:cancel",
        headers=c.t.retailer.acting_for(c.t.consumer),
        json={},
        order_id=oid,
    )
    problem(cancel, 422)
    for party in (c.t.carrier, c.t.maker, c.t.retailer):
        read = ok(
            await call(
                shared_stack,
                "GET",
                "/v1/shipments/{shipment_id}",
                headers=party.auth,
                shipment_id=shipment["shipment_id"],
            )
        )
        assert read == done


async def test_creating_a_shipment_is_refused_when_it_breaks_a_rule(shared_stack: Stack) -> None:
    c = await chain(shared_stack)
    outsider = await shared_stack.partner()
    placed = await place(shared_stack, c.t, c.bike)
    unallocated = await place(shared_stack, c.t, c.bike)
    ok(
        await call(
            shared_stack,
            "POST",
            "/v1/orders/{order_id}:confirm",
            headers=c.t.retailer.auth,
            order_id=unallocated["order_id"],
        )
    )
    fine = {"order_id": c.order["order_id"], "legs": home_legs(c)}
    astray = home_legs(c)
    astray[1]["to_party_id"] = c.t.maker.id
    to_shop = home_legs(c)[0]
    carried = to_shop | {"lots": [{"lot_id": c.bike_lot["lot_id"], "quantity": 1}]}
    cases: list[tuple[str, Partner, dict[str, Any], int, tuple[str, ...]]] = [
        ("no legs", c.t.retailer, fine | {"legs": []}, 400, ("shipment.legs",)),
        ("not to the customer", c.t.retailer, fine | {"legs": astray}, 400, ("shipment.legs[1].to_party_id",)),
        ("an upstream leg without lots", c.t.maker, {"legs": [to_shop]}, 400, ("shipment.legs[0].lots",)),
        ("not confirmed", c.t.retailer, fine | {"order_id": placed["order_id"]}, 422, ()),
        ("not allocated", c.t.retailer, fine | {"order_id": unallocated["order_id"]}, 422, ()),
        ("by an outsider", outsider, fine, 404, ()),
        ("by the carrier, who sends no leg", c.t.carrier, {"legs": [carried]}, 403, ()),
    ]
    for case, by, body, status, fields in cases:
        response = await call(shared_stack, "POST", "/v1/shipments", headers=by.auth, json=body)
        refused = problem(response, status, *fields, case=case)
        if status == 422:
            assert refused["detail"].startswith("shipment.order_id:"), refused
    shipment = ok(await call(shared_stack, "POST", "/v1/shipments", headers=c.t.retailer.auth, json=fine), 201)
    problem(await call(shared_stack, "POST", "/v1/shipments", headers=c.t.retailer.auth, json=fine), 409)
    listed = ok(
        await call(
            shared_stack, "GET", "/v1/shipments", headers=c.t.retailer.auth, params={"order_id": c.order["order_id"]}
        )
    )
    assert [s["shipment_id"] for s in listed["shipments"]] == [shipment["shipment_id"]]


async def test_shipments_are_listed_by_order_or_lot_for_the_parties_to_them(shared_stack: Stack) -> None:
    c = await chain(shared_stack)
    outsider = await shared_stack.partner()
    shipment = ok(
        await call(
            shared_stack,
            "POST",
            "/v1/shipments",
            headers=c.t.retailer.auth,
            json={"order_id": c.order["order_id"], "legs": home_legs(c)},
        ),
        201,
    )
    route = "/v1/shipments"
    by_order = ok(
        await call(shared_stack, "GET", route, headers=c.t.carrier.auth, params={"order_id": c.order["order_id"]})
    )
    assert by_order["shipments"] == [shipment]
    by_lot = ok(
        await call(shared_stack, "GET", route, headers=c.t.maker.auth, params={"lot_id": c.steel_lot["lot_id"]})
    )
    assert [s["shipment_id"] for s in by_lot["shipments"]] == [c.steel_shipment["shipment_id"]]
    both = ok(await call(shared_stack, "GET", route, headers=c.t.carrier.auth, params={"page_size": 1}))
    assert len(both["shipments"]) == 1 and both["next_page_token"]
    hidden = ok(await call(shared_stack, "GET", route, headers=outsider.auth, params={"order_id": c.order["order_id"]}))
    assert hidden["shipments"] == []
    problem(
        await call(shared_stack, "GET", route, headers=c.t.carrier.auth, params={"page_token": "nope"}),
        400,
        "page_token",
    )
    shipment_route = "/v1/shipments/{shipment_id}"
    problem(
        await call(shared_stack, "GET", shipment_route, headers=outsider.auth, shipment_id=shipment["shipment_id"]), 404
    )
    problem(await call(shared_stack, "GET", shipment_route, headers=c.t.carrier.auth, shipment_id="no-such"), 404)


async def test_leg_events_are_refused_when_they_break_a_rule(shared_stack: Stack) -> None:
    c = await chain(shared_stack)
    outsider = await shared_stack.partner()
    shipment = ok(
        await call(
            shared_stack,
            "POST",
            "/v1/shipments",
            headers=c.t.retailer.auth,
            json={"order_id": c.order["order_id"], "legs": home_legs(c)},
        ),
        201,
    )
    to_shop, to_home = (leg["leg_id"] for leg in shipment["legs"])
    route = "/v1/shipment-legs/{leg_id}/events"

    async def refused(by: Partner, leg_id: str, body: dict[str, Any], status: int, *fields: str) -> dict[str, Any]:
        return problem(
            await call(shared_stack, "POST", route, headers=by.auth, json=body, leg_id=leg_id), status, *fields
        )

    await refused(c.t.carrier, to_shop, {"status": "delayed"}, 400, "expected_time")
    await refused(c.t.carrier, to_shop, {"status": "created"}, 400, "status")
    await refused(
        c.t.carrier, to_shop, {"status": "picked_up", "event_time": moment(timedelta(days=1))}, 400, "event_time"
    )
    assert (await refused(c.t.carrier, to_shop, {"status": "delivered"}, 422))["detail"].startswith("status:")
    # The second leg leaves only once the first has arrived.
    assert (await refused(c.t.carrier, to_home, {"status": "picked_up"}, 422))["detail"].startswith("status:")
    await refused(outsider, to_shop, {"status": "picked_up"}, 404)
    await refused(c.t.carrier, "no-such", {"status": "picked_up"}, 404)
    # The maker sends the first leg, so it sees the shipment; the home leg is not its to report.
    await refused(c.t.maker, to_home, {"status": "picked_up"}, 403)
    unchanged = ok(
        await call(
            shared_stack,
            "GET",
            "/v1/shipments/{shipment_id}",
            headers=c.t.carrier.auth,
            shipment_id=shipment["shipment_id"],
        )
    )
    assert [leg["status"] for leg in unchanged["legs"]] == ["created", "created"]


# --- traces and recalls ------------------------------------------------------------------------------------


def nodes_of(found: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {node["node_id"]: node for node in found["nodes"]}


async def test_tracing_upstream_from_an_order_reaches_the_steel_and_how_it_came(shared_stack: Stack) -> None:
    c = await chain(shared_stack)
    route = "/v1/traces/upstream"
    found = ok(
        await call(shared_stack, "GET", route, headers=c.t.retailer.auth, params={"order_id": c.order["order_id"]})
    )
    nodes = nodes_of(found)
    start = found["nodes"][0]
    assert (start["node_id"], start["depth"], start["order"]["customer_id"]) == (
        f"order/{c.order['order_id']}",
        0,
        c.t.consumer,
    )
    steel = nodes[f"lot/{c.steel_lot['lot_id']}"]
    assert (steel["lot"]["producer_id"], steel["lot"]["sku"], steel["quantity"]) == (
        c.t.supplier.id,
        c.steel["sku"],
        30,
    )
    assert [(leg["from_party_id"], leg["to_party_id"], leg["carrier_id"]) for leg in steel["lot"]["shipments"]] == [
        (c.t.supplier.id, c.t.maker.id, c.t.carrier.id)
    ]
    assert nodes[f"lot/{c.bike_lot['lot_id']}"]["lot"]["product_id"] == c.bike["product_id"]
    assert found["truncated"] is False
    of_product = ok(
        await call(shared_stack, "GET", route, headers=c.t.retailer.auth, params={"product_id": c.bike["product_id"]})
    )
    products = [n["product"] for n in of_product["nodes"]]
    assert [(p["product_id"], p.get("supplier_id", "")) for p in products] == [
        (c.bike["product_id"], ""),
        (c.steel["product_id"], c.t.supplier.id),
    ]
    shallow = ok(
        await call(
            shared_stack, "GET", route, headers=c.t.maker.auth, params={"lot_id": c.bike_lot["lot_id"], "max_nodes": 1}
        )
    )
    assert [n["node_id"] for n in shallow["nodes"]] == [f"lot/{c.bike_lot['lot_id']}"] and shallow["truncated"]


async def test_tracing_downstream_from_the_steel_reaches_the_customers_order(shared_stack: Stack) -> None:
    c = await chain(shared_stack)
    route = "/v1/traces/downstream"
    as_maker = nodes_of(
        ok(await call(shared_stack, "GET", route, headers=c.t.maker.auth, params={"lot_id": c.steel_lot["lot_id"]}))
    )
    order = as_maker[f"order/{c.order['order_id']}"]
    assert (order["parent_node_id"], order["depth"], order["quantity"]) == (f"lot/{c.bike_lot['lot_id']}", 2, 1)
    assert (order["order"]["retailer_id"], order["order"]["customer_id"]) == (c.t.retailer.id, c.t.consumer)
    # The supplier follows its steel downstream, but who the customer is is not its business.
    as_supplier = nodes_of(
        ok(
            await call(
                shared_stack,
                "GET",
                route,
                headers=c.t.supplier.auth,
                params={"lot_id": c.steel_lot["lot_id"], "max_depth": 2},
            )
        )
    )
    seen = as_supplier[f"order/{c.order['order_id']}"]["order"]
    assert seen["retailer_id"] == c.t.retailer.id and "customer_id" not in seen


async def test_a_trace_is_refused_when_it_cannot_be_walked_or_seen(shared_stack: Stack) -> None:
    t = await trade(shared_stack)
    outsider = await shared_stack.partner()
    bike = await register(shared_stack, t.maker)
    await list_at(shared_stack, t.retailer, bike)
    lot = await make_lot(shared_stack, t.maker, bike, 1)
    order = await place(shared_stack, t, bike)
    up, down = "/v1/traces/upstream", "/v1/traces/downstream"
    cases: list[tuple[str, Partner, dict[str, Any], int, tuple[str, ...]]] = [
        (up, t.retailer, {}, 400, ("start",)),
        (up, t.retailer, {"order_id": order["order_id"], "max_depth": 51}, 400, ("max_depth",)),
        (up, t.maker, {"lot_id": lot["lot_id"], "max_nodes": 10_001}, 400, ("max_nodes",)),
        (up, t.retailer, {"order_id": "no-such"}, 404, ()),
        (up, outsider, {"order_id": order["order_id"]}, 404, ()),
        (up, outsider, {"lot_id": lot["lot_id"]}, 404, ()),
        (down, t.maker, {}, 400, ("lot_id",)),
        (down, t.maker, {"lot_id": lot["lot_id"], "max_nodes": -1}, 400, ("max_nodes",)),
        (down, t.maker, {"lot_id": "no-such"}, 404, ()),
        (down, outsider, {"lot_id": lot["lot_id"]}, 404, ()),
    ]
    for template, by, params, status, fields in cases:
        response = await call(shared_stack, "GET", template, headers=by.auth, params=params)
        problem(response, status, *fields, case=f"{template} {params}")


async def test_recalling_the_steel_lot_recalls_the_bikes_built_from_it_and_names_the_order(
    shared_stack: Stack,
) -> None:
    c = await chain(shared_stack)
    outsider = await shared_stack.partner()
    recall = ok(
        await call(
            shared_stack,
            "POST",
            "/v1/lots/{lot_id}:recall",
            headers=c.t.supplier.auth,
            json={"reason": "cracked welds"},
            lot_id=c.steel_lot["lot_id"],
        ),
        201,
    )
    assert (recall["lot_id"], recall["reason"], recall["created_by"]) == (
        c.steel_lot["lot_id"],
        "cracked welds",
        c.t.supplier.id,
    )
    assert sorted(recall["lot_ids"]) == sorted([c.steel_lot["lot_id"], c.bike_lot["lot_id"]])
    assert sorted(recall["product_ids"]) == sorted([c.steel["product_id"], c.bike["product_id"]])
    assert recall["affected_orders"] == [
        {
            "order_id": c.order["order_id"],
            "customer_id": c.t.consumer,
            "retailer_id": c.t.retailer.id,
            "status": "confirmed",
            "contact_consented": False,
        }
    ]
    assert "issue_time" in recall
    bikes = await get_lot(shared_stack, c.t.maker.auth, c.bike_lot["lot_id"])
    assert (bikes["status"], bikes["recall_id"], bikes["status_reason"]) == (
        "recalled",
        recall["recall_id"],
        "cracked welds",
    )
    route = "/v1/recalls/{recall_id}"
    assert (
        ok(await call(shared_stack, "GET", route, headers=c.t.retailer.auth, recall_id=recall["recall_id"])) == recall
    )
    others = ok(await call(shared_stack, "GET", route, headers=outsider.auth, recall_id=recall["recall_id"]))
    assert others["lot_ids"] == recall["lot_ids"] and others["affected_orders"] == []
    problem(await call(shared_stack, "GET", route, headers=outsider.auth, recall_id="no-such"), 404)
    # A recalled lot stays recalled, and what was built from it does not leave.
    change = "/v1/lots/{lot_id}:changeStatus"
    problem(
        await call(
            shared_stack,
            "POST",
            change,
            headers=c.t.maker.auth,
            json={"status": "released"},
            lot_id=c.bike_lot["lot_id"],
        ),
        422,
    )
    shipment = await call(
        shared_stack,
        "POST",
        "/v1/shipments",
        headers=c.t.retailer.auth,
        json={"order_id": c.order["order_id"], "legs": home_legs(c)},
    )
    assert problem(shipment, 422)["detail"].startswith("shipment.legs[0].lots[0].lot_id:")


async def test_a_recall_is_refused_to_others_without_a_reason_and_twice(shared_stack: Stack) -> None:
    c = await chain(shared_stack)
    outsider = await shared_stack.partner()
    route = "/v1/lots/{lot_id}:recall"
    lot_id = c.bike_lot["lot_id"]
    reason = {"reason": "brakes"}
    problem(await call(shared_stack, "POST", route, headers=outsider.auth, json=reason, lot_id=lot_id), 404)
    problem(await call(shared_stack, "POST", route, headers=c.t.retailer.auth, json=reason, lot_id=lot_id), 403)
    problem(await call(shared_stack, "POST", route, headers=c.t.maker.auth, json={}, lot_id=lot_id), 400, "reason")
    problem(await call(shared_stack, "POST", route, headers=c.t.maker.auth, json=reason, lot_id="no-such"), 404)
    ok(await call(shared_stack, "POST", route, headers=c.t.maker.auth, json=reason, lot_id=lot_id), 201)
    again = problem(await call(shared_stack, "POST", route, headers=c.t.maker.auth, json=reason, lot_id=lot_id), 422)
    assert again["detail"].startswith("lot_id:")


# --- the JSON mapping ----------------------------------------------------------------------------------------


async def test_a_trace_with_two_starts_is_400(shared_stack: Stack) -> None:
    maker = await shared_stack.partner()
    bike = await register(shared_stack, maker)
    lot = await make_lot(shared_stack, maker, bike, 1)
    params = {"product_id": bike["product_id"], "lot_id": lot["lot_id"]}
    problem(await call(shared_stack, "GET", "/v1/traces/upstream", headers=maker.auth, params=params), 400)


async def test_a_listing_with_strings_for_a_number_and_a_bool_is_400(shared_stack: Stack) -> None:
    t = await trade(shared_stack)
    bike = await register(shared_stack, t.maker)
    body = {
        "product_id": bike["product_id"],
        "price": {"currency_code": "EUR", "amount_minor": "100"},
        "available": "yes",
    }
    response = await call(shared_stack, "POST", "/v1/listings", headers=t.retailer.auth, json=body)
    problem(response, 400, "price.amount_minor", "available")


# --- coverage of the route table ---------------------------------------------------------------------------


async def test_every_supplychain_route_was_exercised_on_success_and_on_error(shared_stack: Stack) -> None:
    """Runs last: the tests above called every route of supplychain, each with success and with a refusal."""
    assert_routes_exercised(shared_stack, "supplychain")
