"""Every identity route of the gateway, against the real services: parties, the relationship graph,
consent, partners and their capabilities, API keys, relationship types and authorization checks.

Each route is exercised on its success path and on at least one error path; the last test checks
that this module did so for every identity route of the catalog.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from gateway_testing import Partner, Stack, assert_routes_exercised, bearer, call, unique

from collabnet.identity.v1 import identity_pb2 as identity
from collabnet_kit.testing import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")
PROBLEM = "application/problem+json"
SCOPE = "identity"


# --- calling the gateway ------------------------------------------------------------------------------


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


def moment(delta: timedelta = timedelta()) -> str:
    """Now plus ``delta``, as an RFC 3339 string."""
    return (datetime.now(UTC) + delta).isoformat().replace("+00:00", "Z")


# --- setting up a network through the gateway -------------------------------------------------------------


async def person(stack: Stack, by: Partner, name: str | None = None, email: str | None = None) -> str:
    body: dict[str, Any] = {"kind": "person", "display_name": name or unique("Person")}
    if email is not None:
        body["email"] = email
    party = ok(await call(stack, "POST", "/v1/parties", headers=by.auth, json=body), 201)
    return str(party["party_id"])


async def relate(
    stack: Stack, by: Mapping[str, str], from_party: str, kind: str, to_party: str, **extra: Any
) -> dict[str, Any]:
    body = {"from_party_id": from_party, "to_party_id": to_party, "type": kind, **extra}
    relationship: dict[str, Any] = ok(await call(stack, "POST", "/v1/relationships", headers=by, json=body), 201)
    return relationship


async def customer(stack: Stack, retailer: Partner, **extra: Any) -> tuple[str, dict[str, Any]]:
    """A new person who is a customer of ``retailer``, and that relationship."""
    party = await person(stack, retailer)
    return party, await relate(stack, retailer.auth, party, "customer_of", retailer.id, **extra)


@dataclass
class Network:
    """Retailer R and its customer C; maker M supplies R (public); E is one of R's employees,
    whom C advocates."""

    retailer: Partner
    maker: Partner
    customer: str
    employee: str
    customer_of: dict[str, Any]
    supplies: dict[str, Any]
    employed: dict[str, Any]
    advocates: dict[str, Any]


async def network(stack: Stack) -> Network:
    retailer, maker = await asyncio.gather(
        stack.partner(unique("Retailer")), stack.partner(unique("Maker"), identity.PARTNER_KIND_MANUFACTURER)
    )
    party, customer_of = await customer(stack, retailer)
    employee = await person(stack, retailer)
    supplies = await relate(stack, maker.auth, maker.id, "supplier_of", retailer.id)
    employed = await relate(stack, retailer.auth, employee, "employee_of", retailer.id)
    # Recorded by R acting for C, in R's network.
    advocates = await relate(stack, retailer.acting_for(party), party, "advocate_of", employee)
    return Network(retailer, maker, party, employee, customer_of, supplies, employed, advocates)


# --- parties ----------------------------------------------------------------------------------------------


async def test_a_partner_registers_a_person_and_sees_the_contact_data_it_gave(shared_stack: Stack) -> None:
    retailer = await shared_stack.partner()
    body = {
        "kind": "person",
        "display_name": "  Carla Consumer ",
        "email": "carla@example.org",
        "phone": "+49 30 1234567",
        "attributes": {"segment": "cyclists"},
    }
    party = ok(await call(shared_stack, "POST", "/v1/parties", headers=retailer.auth, json=body), 201)
    assert party["party_id"]
    assert (party["kind"], party["display_name"], party["email"], party["phone"]) == (
        "person",
        "Carla Consumer",
        "carla@example.org",
        "+49 30 1234567",
    )
    assert party["attributes"] == {"segment": "cyclists"}
    assert party["partner"] is False
    assert party["create_time"].endswith("Z")


async def test_registering_a_party_with_bad_fields_is_400_naming_each(shared_stack: Stack) -> None:
    retailer = await shared_stack.partner()
    response = await call(
        shared_stack,
        "POST",
        "/v1/parties",
        headers=retailer.auth,
        json={"kind": "person", "display_name": "  ", "email": "not-an-address"},
    )
    problem(response, 400, "display_name", "email")


async def test_contact_data_is_shown_only_to_a_partner_the_party_relates_to(shared_stack: Stack) -> None:
    retailer, stranger = await asyncio.gather(shared_stack.partner(), shared_stack.partner())
    party = await person(shared_stack, retailer, "Dana Doe", email="dana@example.org")
    route = "/v1/parties/{party_id}"
    seen_before = ok(await call(shared_stack, "GET", route, headers=retailer.auth, party_id=party))
    assert seen_before["display_name"] == "Dana Doe"
    assert "email" not in seen_before  # registering someone is no relationship with them
    await relate(shared_stack, retailer.auth, party, "customer_of", retailer.id)
    seen = ok(await call(shared_stack, "GET", route, headers=retailer.auth, party_id=party))
    assert (seen["party_id"], seen["email"], seen["partner"]) == (party, "dana@example.org", False)
    assert "email" not in ok(await call(shared_stack, "GET", route, headers=stranger.auth, party_id=party))
    as_partner = ok(await call(shared_stack, "GET", route, headers=stranger.auth, party_id=retailer.id))
    assert (as_partner["kind"], as_partner["partner"]) == ("organization", True)


async def test_an_unknown_party_is_404(shared_stack: Stack) -> None:
    retailer = await shared_stack.partner()
    body = problem(
        await call(shared_stack, "GET", "/v1/parties/{party_id}", headers=retailer.auth, party_id="nobody"), 404
    )
    assert "nobody" in body["detail"]


# --- the graph: roles, relationships, neighborhood, paths, who can serve, affiliations ---------------------


async def test_roles_of_a_customer_name_the_retailer_and_how_as_of_a_moment(shared_stack: Stack) -> None:
    net = await network(shared_stack)
    route = "/v1/parties/{party_id}/roles"
    roles = ok(await call(shared_stack, "GET", route, headers=net.retailer.auth, party_id=net.customer))
    assert [(p["partner"]["partner_id"], [r["role"] for r in p["roles"]]) for p in roles["partners"]] == [
        (net.retailer.id, ["customer_of"])
    ]
    assert roles["partners"][0]["roles"][0]["relationship_id"] == net.customer_of["relationship_id"]
    # The maker is R's supplier (public): from R's side the role reads "serves"/"supplied_by".
    retailer_roles = ok(await call(shared_stack, "GET", route, headers=net.maker.auth, party_id=net.retailer.id))
    assert [(p["partner"]["partner_id"], [r["role"] for r in p["roles"]]) for p in retailer_roles["partners"]] == [
        (net.maker.id, ["supplied_by"])
    ]
    before = ok(
        await call(
            shared_stack,
            "GET",
            route,
            headers=net.retailer.auth,
            params={"as_of": moment(-timedelta(days=1))},
            party_id=net.customer,
        )
    )
    assert before["partners"] == []


async def test_a_customers_private_roles_are_hidden_from_other_partners(shared_stack: Stack) -> None:
    net = await network(shared_stack)
    seen = ok(
        await call(shared_stack, "GET", "/v1/parties/{party_id}/roles", headers=net.maker.auth, party_id=net.customer)
    )
    assert seen["partners"] == []


async def test_roles_of_an_unknown_party_are_404_and_a_naive_as_of_is_400(shared_stack: Stack) -> None:
    net = await network(shared_stack)
    route = "/v1/parties/{party_id}/roles"
    problem(await call(shared_stack, "GET", route, headers=net.retailer.auth, party_id="nobody"), 404)
    naive = datetime.now(UTC).replace(tzinfo=None).isoformat()
    response = await call(
        shared_stack, "GET", route, headers=net.retailer.auth, params={"as_of": naive}, party_id=net.customer
    )
    problem(response, 400, "as_of")


async def test_relationships_of_a_party_by_direction_and_type_page_by_page(shared_stack: Stack) -> None:
    net = await network(shared_stack)
    route = "/v1/parties/{party_id}/relationships"
    outgoing = ok(
        await call(
            shared_stack,
            "GET",
            route,
            headers=net.retailer.auth,
            params={"direction": "outgoing"},
            party_id=net.customer,
        )
    )
    assert {(r["type"], r["to_party_id"]) for r in outgoing["relationships"]} == {
        ("customer_of", net.retailer.id),
        ("advocate_of", net.employee),
    }
    customer_of = ok(
        await call(
            shared_stack,
            "GET",
            route,
            headers=net.retailer.auth,
            params={"types": ["customer_of", "member_of"]},
            party_id=net.customer,
        )
    )
    assert [r["relationship_id"] for r in customer_of["relationships"]] == [net.customer_of["relationship_id"]]
    incoming = ok(
        await call(
            shared_stack,
            "GET",
            route,
            headers=net.retailer.auth,
            params={"direction": "incoming"},
            party_id=net.customer,
        )
    )
    assert incoming["relationships"] == []
    first = ok(
        await call(
            shared_stack, "GET", route, headers=net.retailer.auth, params={"page_size": 1}, party_id=net.customer
        )
    )
    assert len(first["relationships"]) == 1 and first["next_page_token"]
    second = ok(
        await call(
            shared_stack,
            "GET",
            route,
            headers=net.retailer.auth,
            params={"page_size": 1, "page_token": first["next_page_token"]},
            party_id=net.customer,
        )
    )
    paged = {r["relationship_id"] for r in first["relationships"] + second["relationships"]}
    assert paged == {r["relationship_id"] for r in outgoing["relationships"]}
    assert second["next_page_token"] == ""


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"types": ["friend_of_a_friend"]}, "types"),
        ({"direction": "sideways"}, "direction"),
        ({"page_token": "not-a-token"}, "page_token"),
    ],
)
async def test_listing_relationships_with_a_bad_filter_is_400_naming_it(
    shared_stack: Stack, params: dict[str, Any], field: str
) -> None:
    retailer = await shared_stack.partner()
    response = await call(
        shared_stack,
        "GET",
        "/v1/parties/{party_id}/relationships",
        headers=retailer.auth,
        params=params,
        party_id=retailer.id,
    )
    problem(response, 400, field)


async def test_the_neighborhood_of_a_customer_reaches_the_maker_in_two_hops(shared_stack: Stack) -> None:
    net = await network(shared_stack)
    route = "/v1/parties/{party_id}/neighborhood"
    found = ok(
        await call(shared_stack, "GET", route, headers=net.retailer.auth, params={"depth": 2}, party_id=net.customer)
    )
    distances = {n["party"]["party_id"]: n["distance"] for n in found["parties"]}
    assert distances == {net.customer: 0, net.retailer.id: 1, net.employee: 1, net.maker.id: 2}
    assert {r["relationship_id"] for r in found["relationships"]} == {
        net.customer_of["relationship_id"],
        net.advocates["relationship_id"],
        net.employed["relationship_id"],
        net.supplies["relationship_id"],
    }
    assert found["truncated"] is False
    assert all("email" not in n["party"] for n in found["parties"])
    only_customers = ok(
        await call(
            shared_stack,
            "GET",
            route,
            headers=net.retailer.auth,
            params={"depth": 3, "types": ["customer_of"], "max_parties": 1},
            party_id=net.customer,
        )
    )
    assert [n["party"]["party_id"] for n in only_customers["parties"]] == [net.customer]
    assert only_customers["truncated"] is True


@pytest.mark.parametrize(("params", "field"), [({"depth": 4}, "depth"), ({"max_parties": 2001}, "max_parties")])
async def test_a_neighborhood_out_of_bounds_is_400_naming_the_bound(
    shared_stack: Stack, params: dict[str, Any], field: str
) -> None:
    retailer = await shared_stack.partner()
    response = await call(
        shared_stack,
        "GET",
        "/v1/parties/{party_id}/neighborhood",
        headers=retailer.auth,
        params=params,
        party_id=retailer.id,
    )
    problem(response, 400, field)


def walks(found: dict[str, Any]) -> list[list[tuple[str, str, str, str]]]:
    """Each path as (from, type, to, relationship id) steps."""
    return [
        [(s["from_party_id"], s["type"], s["to_party_id"], s["relationship_id"]) for s in p["steps"]]
        for p in found["paths"]
    ]


async def test_paths_from_a_customer_to_the_maker_read_each_step_in_the_walking_direction(
    shared_stack: Stack,
) -> None:
    net = await network(shared_stack)
    found = ok(
        await call(
            shared_stack,
            "GET",
            "/v1/paths",
            headers=net.retailer.auth,
            params={"from_party_id": net.customer, "to_party_id": net.maker.id, "k": 2, "max_depth": 3},
        )
    )
    direct = [
        (net.customer, "customer_of", net.retailer.id, net.customer_of["relationship_id"]),
        (net.retailer.id, "supplied_by", net.maker.id, net.supplies["relationship_id"]),
    ]
    through_the_employee = [
        (net.customer, "advocate_of", net.employee, net.advocates["relationship_id"]),
        (net.employee, "employee_of", net.retailer.id, net.employed["relationship_id"]),
        (net.retailer.id, "supplied_by", net.maker.id, net.supplies["relationship_id"]),
    ]
    assert walks(found) == [direct, through_the_employee]
    shorter = ok(
        await call(
            shared_stack,
            "GET",
            "/v1/paths",
            headers=net.retailer.auth,
            params={"from_party_id": net.customer, "to_party_id": net.maker.id, "max_depth": 2},
        )
    )
    assert walks(shorter) == [direct]
    # The maker does not see the customer's private relationship, so no path for it.
    hidden = ok(
        await call(
            shared_stack,
            "GET",
            "/v1/paths",
            headers=net.maker.auth,
            params={"from_party_id": net.customer, "to_party_id": net.maker.id},
        )
    )
    assert hidden["paths"] == []


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"to_party_id": "{maker}", "k": 11}, 400, "k"),
        ({"to_party_id": "{maker}", "max_depth": 7}, 400, "max_depth"),
        ({}, 400, "to_party_id"),
        ({"to_party_id": "nobody"}, 404, ""),
    ],
)
async def test_finding_paths_with_bad_input_is_refused(
    shared_stack: Stack, params: dict[str, Any], status: int, field: str
) -> None:
    retailer, maker = await asyncio.gather(shared_stack.partner(), shared_stack.partner())
    query = {"from_party_id": retailer.id, **{k: str(v).format(maker=maker.id) for k, v in params.items()}}
    response = await call(shared_stack, "GET", "/v1/paths", headers=retailer.auth, params=query)
    problem(response, status, *([field] if field else []))


async def test_serving_partners_are_found_nearest_first(shared_stack: Stack) -> None:
    net = await network(shared_stack)
    capability = f"repair:bikes-{unique('x').split()[1]}"
    for partner in (net.retailer, net.maker):
        ok(
            await call(
                shared_stack,
                "POST",
                "/v1/partners/{partner_id}/capabilities",
                headers=partner.auth,
                json={"capability": capability},
                partner_id=partner.id,
            )
        )
    route = "/v1/parties/{party_id}/serving-partners"
    found = ok(
        await call(
            shared_stack,
            "GET",
            route,
            headers=net.retailer.auth,
            params={"capability": capability},
            party_id=net.customer,
        )
    )
    assert [(p["partner"]["partner_id"], p["hops"]) for p in found["partners"]] == [
        (net.retailer.id, 1),
        (net.maker.id, 2),
    ]
    assert capability in found["partners"][0]["partner"]["capabilities"]
    nearest = ok(
        await call(
            shared_stack,
            "GET",
            route,
            headers=net.retailer.auth,
            params={"capability": capability, "max_hops": 1, "limit": 5},
            party_id=net.customer,
        )
    )
    assert [p["partner"]["partner_id"] for p in nearest["partners"]] == [net.retailer.id]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"capability": "Repair Bikes"}, "capability"),
        ({}, "capability"),
        ({"capability": "repair", "max_hops": 5}, "max_hops"),
        ({"capability": "repair", "limit": 101}, "limit"),
    ],
)
async def test_looking_for_serving_partners_with_bad_input_is_400(
    shared_stack: Stack, params: dict[str, Any], field: str
) -> None:
    retailer = await shared_stack.partner()
    response = await call(
        shared_stack,
        "GET",
        "/v1/parties/{party_id}/serving-partners",
        headers=retailer.auth,
        params=params,
        party_id=retailer.id,
    )
    problem(response, 400, field)


async def test_affiliations_of_a_customer_with_a_retailer_include_those_with_its_people(
    shared_stack: Stack,
) -> None:
    net = await network(shared_stack)
    found = ok(
        await call(
            shared_stack,
            "GET",
            "/v1/parties/{party_id}/affiliations",
            headers=net.retailer.auth,
            params={"partner_id": net.retailer.id},
            party_id=net.customer,
        )
    )
    assert sorted((a["relationship"]["type"], a["via_party_id"]) for a in found["affiliations"]) == [
        ("advocate_of", net.employee),
        ("customer_of", ""),
    ]
    # Another partner sees none of these private relationships.
    hidden = ok(
        await call(
            shared_stack,
            "GET",
            "/v1/parties/{party_id}/affiliations",
            headers=net.maker.auth,
            params={"partner_id": net.retailer.id},
            party_id=net.customer,
        )
    )
    assert hidden["affiliations"] == []


@pytest.mark.parametrize(("partner_id", "status"), [("", 400), ("nobody", 404)])
async def test_affiliations_need_a_known_partner(shared_stack: Stack, partner_id: str, status: int) -> None:
    retailer = await shared_stack.partner()
    party = await person(shared_stack, retailer)
    response = await call(
        shared_stack,
        "GET",
        "/v1/parties/{party_id}/affiliations",
        headers=retailer.auth,
        params={"partner_id": partner_id} if partner_id else {},
        party_id=party,
    )
    problem(response, status, *(["partner_id"] if status == 400 else []))


# --- relationships and their types --------------------------------------------------------------------------


async def test_a_retailer_records_a_customer_and_reads_the_relationship_back(shared_stack: Stack) -> None:
    retailer = await shared_stack.partner()
    party = await person(shared_stack, retailer)
    since = moment(-timedelta(days=30))
    created = await relate(
        shared_stack,
        retailer.auth,
        party,
        "customer_of",
        retailer.id,
        attributes={"customer_type": "subscription"},
        valid_from=since,
    )
    assert (created["from_party_id"], created["to_party_id"], created["type"], created["context_partner_id"]) == (
        party,
        retailer.id,
        "customer_of",
        retailer.id,
    )
    assert created["attributes"] == {"customer_type": "subscription"}
    assert datetime.fromisoformat(created["valid_from"]) == datetime.fromisoformat(since)
    assert "valid_to" not in created
    read = ok(
        await call(
            shared_stack,
            "GET",
            "/v1/relationships/{relationship_id}",
            headers=retailer.auth,
            relationship_id=created["relationship_id"],
        )
    )
    assert read == created


@pytest.mark.parametrize(
    ("case", "status", "fields"),
    [
        ("again", 409, ()),
        ("self", 400, ("to_party_id",)),
        ("unknown type", 400, ("type",)),
        ("bad interval", 400, ("valid_to",)),
        ("other network", 403, ()),
        ("not an end", 403, ()),
        ("unknown party", 404, ()),
    ],
)
async def test_recording_a_relationship_is_refused_when_it_breaks_a_rule(
    shared_stack: Stack, case: str, status: int, fields: tuple[str, ...]
) -> None:
    retailer, other = await asyncio.gather(shared_stack.partner(), shared_stack.partner())
    party, _ = await customer(shared_stack, retailer)
    stranger = await person(shared_stack, retailer)
    body: dict[str, Any] = {"from_party_id": party, "to_party_id": retailer.id, "type": "customer_of"}
    if case == "self":
        body["to_party_id"] = party
    elif case == "unknown type":
        body["type"] = "friend_of"
    elif case == "bad interval":
        body |= {"type": "member_of", "valid_from": moment(), "valid_to": moment(-timedelta(days=1))}
    elif case == "other network":
        body |= {"type": "member_of", "context_partner_id": other.id}
    elif case == "not an end":
        body = {"from_party_id": party, "to_party_id": stranger, "type": "member_of"}
    elif case == "unknown party":
        body["from_party_id"] = "nobody"
    response = await call(shared_stack, "POST", "/v1/relationships", headers=retailer.auth, json=body)
    problem(response, status, *fields)


async def test_a_partner_may_not_record_another_partners_customer_as_its_own(shared_stack: Stack) -> None:
    retailer, other = await asyncio.gather(shared_stack.partner(), shared_stack.partner())
    party, _ = await customer(shared_stack, retailer)
    body = {"from_party_id": party, "to_party_id": other.id, "type": "customer_of"}
    refused = problem(await call(shared_stack, "POST", "/v1/relationships", headers=other.auth, json=body), 403)
    assert refused["detail"].startswith(f"from_party_id: {party} is not a partner"), refused
    assert retailer.id not in str(refused)
    # The customer introduces themselves to the other retailer through the first, which acts for them:
    # the relationship is the other retailer's, and from then on it acts for the customer too.
    introduced = await relate(
        shared_stack, retailer.acting_for(party), party, "customer_of", other.id, context_partner_id=other.id
    )
    assert (introduced["to_party_id"], introduced["context_partner_id"]) == (other.id, other.id)
    seen = ok(
        await call(shared_stack, "GET", "/v1/parties/{party_id}", headers=other.acting_for(party), party_id=party)
    )
    assert seen["party_id"] == party


async def test_a_private_relationship_is_404_to_other_partners_and_a_public_one_is_not(
    shared_stack: Stack,
) -> None:
    net = await network(shared_stack)
    outsider = await shared_stack.partner()
    route = "/v1/relationships/{relationship_id}"
    private = net.customer_of["relationship_id"]
    problem(await call(shared_stack, "GET", route, headers=outsider.auth, relationship_id=private), 404)
    problem(await call(shared_stack, "GET", route, headers=outsider.auth, relationship_id="nothing"), 404)
    public = ok(
        await call(shared_stack, "GET", route, headers=outsider.auth, relationship_id=net.supplies["relationship_id"])
    )
    assert (public["from_party_id"], public["type"]) == (net.maker.id, "supplier_of")


async def test_an_ended_relationship_leaves_the_current_graph_but_stays_for_history(shared_stack: Stack) -> None:
    retailer = await shared_stack.partner()
    party, relationship = await customer(shared_stack, retailer, valid_from=moment(-timedelta(days=30)))
    ended = ok(
        await call(
            shared_stack,
            "POST",
            "/v1/relationships/{relationship_id}:end",
            headers=retailer.auth,
            json={"reason": "  closed the account "},
            relationship_id=relationship["relationship_id"],
        )
    )
    assert ended["end_reason"] == "closed the account"
    assert datetime.fromisoformat(ended["valid_to"]) > datetime.fromisoformat(ended["valid_from"])
    route = "/v1/parties/{party_id}/relationships"
    current = ok(await call(shared_stack, "GET", route, headers=retailer.auth, party_id=party))
    assert current["relationships"] == []
    yesterday = moment(-timedelta(days=1))
    then = ok(
        await call(shared_stack, "GET", route, headers=retailer.auth, params={"as_of": yesterday}, party_id=party)
    )
    assert [r["relationship_id"] for r in then["relationships"]] == [relationship["relationship_id"]]
    decision = ok(
        await call(
            shared_stack,
            "GET",
            "/v1/partners/{partner_id}/acts-for/{party_id}",
            headers=retailer.auth,
            partner_id=retailer.id,
            party_id=party,
        )
    )
    assert decision["allowed"] is False


async def test_ending_a_relationship_is_refused_when_ended_not_ones_own_or_unknown(shared_stack: Stack) -> None:
    retailer, outsider = await asyncio.gather(shared_stack.partner(), shared_stack.partner())
    _, relationship = await customer(shared_stack, retailer)
    route = "/v1/relationships/{relationship_id}:end"
    rid = relationship["relationship_id"]
    problem(await call(shared_stack, "POST", route, headers=outsider.auth, json={}, relationship_id=rid), 403)
    too_early = {"valid_to": moment(-timedelta(days=1))}
    problem(
        await call(shared_stack, "POST", route, headers=retailer.auth, json=too_early, relationship_id=rid),
        400,
        "valid_to",
    )
    ok(await call(shared_stack, "POST", route, headers=retailer.auth, json={}, relationship_id=rid))
    problem(await call(shared_stack, "POST", route, headers=retailer.auth, json={}, relationship_id=rid), 422)
    problem(await call(shared_stack, "POST", route, headers=retailer.auth, json={}, relationship_id="nothing"), 404)


async def test_a_network_admin_creates_a_relationship_type_and_records_with_it(shared_stack: Stack) -> None:
    admin = await shared_stack.partner()
    name = f"mentor_of_{unique('x').split()[1]}"
    inverse = f"mentored_by_{name.rsplit('_', 1)[1]}"
    body = {"name": name, "inverse_name": inverse, "description": " guides ", "public": True}
    created = ok(await call(shared_stack, "POST", "/v1/relationship-types", headers=admin.auth, json=body), 201)
    assert created == {"name": name, "inverse_name": inverse, "description": "guides", "public": True}
    listed = ok(await call(shared_stack, "GET", "/v1/relationship-types", headers=admin.auth))
    by_name = {t["name"]: t for t in listed["relationship_types"]}
    assert by_name[name] == created
    assert by_name["customer_of"]["inverse_name"] == "serves"
    assert by_name["supplier_of"]["public"] is True
    mentee = await person(shared_stack, admin)
    relationship = await relate(shared_stack, admin.auth, admin.id, name, mentee)
    assert relationship["type"] == name


@pytest.mark.parametrize(
    ("case", "status", "fields"),
    [
        ("taken", 400, ("relationship_type.name",)),
        ("badly named", 400, ("relationship_type.name", "relationship_type.inverse_name")),
        ("unknown field", 400, ("relationship_type.colour",)),
        ("no admin scope", 403, ()),
    ],
)
async def test_creating_a_relationship_type_is_refused_when_it_breaks_a_rule(
    shared_stack: Stack, case: str, status: int, fields: tuple[str, ...]
) -> None:
    scopes = ("keys:manage",) if case == "no admin scope" else ("network:admin", "keys:manage")
    admin = await shared_stack.partner(scopes=scopes)
    body: dict[str, Any] = {"name": f"coach_of_{unique('x').split()[1]}"}
    if case == "taken":
        body = {"name": "customer_of", "inverse_name": f"coached_{unique('x').split()[1]}"}
    elif case == "badly named":
        body = {"name": "Coach Of", "inverse_name": "x"}
    elif case == "unknown field":
        body["colour"] = "blue"
    response = await call(shared_stack, "POST", "/v1/relationship-types", headers=admin.auth, json=body)
    problem(response, status, *fields)


async def test_relationship_types_are_not_listed_without_a_key(shared_stack: Stack) -> None:
    problem(await call(shared_stack, "GET", "/v1/relationship-types", headers={}), 401)
    problem(await call(shared_stack, "GET", "/v1/relationship-types", headers=bearer("cnk_00000000_nope")), 401)


# --- consent -----------------------------------------------------------------------------------------------


async def test_a_customer_grants_consent_through_the_retailer_and_revokes_it(shared_stack: Stack) -> None:
    retailer = await shared_stack.partner()
    party, _ = await customer(shared_stack, retailer)
    before_grant = moment(-timedelta(seconds=1))
    expires = moment(timedelta(days=365))
    granted = ok(
        await call(
            shared_stack,
            "POST",
            "/v1/parties/{party_id}/consents",
            headers=retailer.acting_for(party),
            json={"partner_id": retailer.id, "purpose": "contact:recall", "source": "web form", "expire_time": expires},
            party_id=party,
        ),
        201,
    )
    assert (granted["party_id"], granted["partner_id"], granted["purpose"], granted["granted"]) == (
        party,
        retailer.id,
        "contact:recall",
        True,
    )
    assert datetime.fromisoformat(granted["expire_time"]) == datetime.fromisoformat(expires)
    listed = ok(
        await call(shared_stack, "GET", "/v1/parties/{party_id}/consents", headers=retailer.auth, party_id=party)
    )
    assert [c["consent_id"] for c in listed["consents"]] == [granted["consent_id"]]
    check = "/v1/parties/{party_id}/consent-check"
    query = {"partner_id": retailer.id, "purpose": "contact:recall"}
    holds = ok(await call(shared_stack, "GET", check, headers=retailer.auth, params=query, party_id=party))
    assert holds["granted"] is True and holds["record"]["consent_id"] == granted["consent_id"]
    assert holds["reason"].startswith("granted at")
    earlier = ok(
        await call(
            shared_stack, "GET", check, headers=retailer.auth, params=query | {"at": before_grant}, party_id=party
        )
    )
    assert earlier["granted"] is False and "record" not in earlier
    revoked = ok(
        await call(
            shared_stack,
            "POST",
            "/v1/parties/{party_id}/consents:revoke",
            headers=retailer.acting_for(party),
            json={"partner_id": retailer.id, "purpose": "contact:recall", "source": "phone call"},
            party_id=party,
        )
    )
    assert (revoked["granted"], revoked["source"]) == (False, "phone call")
    now_held = ok(await call(shared_stack, "GET", check, headers=retailer.auth, params=query, party_id=party))
    assert now_held["granted"] is False and now_held["reason"].startswith("revoked at")
    assert now_held["record"]["consent_id"] == revoked["consent_id"]
    listed = ok(
        await call(shared_stack, "GET", "/v1/parties/{party_id}/consents", headers=retailer.auth, party_id=party)
    )
    assert [(c["consent_id"], c["granted"]) for c in listed["consents"]] == [(revoked["consent_id"], False)]


async def test_a_partner_sees_only_the_consents_given_to_it(shared_stack: Stack) -> None:
    retailer, other = await asyncio.gather(shared_stack.partner(), shared_stack.partner())
    party, _ = await customer(shared_stack, retailer)
    for partner_id in (retailer.id, other.id):
        ok(
            await call(
                shared_stack,
                "POST",
                "/v1/parties/{party_id}/consents",
                headers=retailer.acting_for(party),
                json={"partner_id": partner_id, "purpose": "analytics", "source": "web form"},
                party_id=party,
            ),
            201,
        )
    route = "/v1/parties/{party_id}/consents"
    mine = ok(await call(shared_stack, "GET", route, headers=other.auth, party_id=party))
    assert [c["partner_id"] for c in mine["consents"]] == [other.id]
    everything = ok(await call(shared_stack, "GET", route, headers=retailer.acting_for(party), party_id=party))
    assert sorted(c["partner_id"] for c in everything["consents"]) == sorted([retailer.id, other.id])


@pytest.mark.parametrize(
    ("template", "method"),
    [
        ("/v1/parties/{party_id}/consents", "POST"),
        ("/v1/parties/{party_id}/consents:revoke", "POST"),
    ],
)
async def test_changing_a_partys_consent_without_acting_for_it_is_403(
    shared_stack: Stack, template: str, method: str
) -> None:
    retailer = await shared_stack.partner()
    party, _ = await customer(shared_stack, retailer)
    body = {"partner_id": retailer.id, "purpose": "contact:recall", "source": "web form"}
    problem(await call(shared_stack, method, template, headers=retailer.auth, json=body, party_id=party), 403)


@pytest.mark.parametrize(
    ("template", "body", "fields"),
    [
        ("/v1/parties/{party_id}/consents", {"purpose": "Contact Me", "source": "web"}, ("purpose",)),
        ("/v1/parties/{party_id}/consents", {"purpose": "analytics", "source": " "}, ("source",)),
        (
            "/v1/parties/{party_id}/consents",
            {"purpose": "analytics", "source": "web", "expire_time": "yesterday"},
            ("expire_time",),
        ),
        (
            "/v1/parties/{party_id}/consents",
            {"purpose": "analytics", "source": "web", "expire_time": "2020-01-01T00:00:00Z"},
            ("expire_time",),
        ),
        ("/v1/parties/{party_id}/consents:revoke", {"purpose": "analytics"}, ("source",)),
    ],
)
async def test_consent_with_bad_fields_is_400_naming_them(
    shared_stack: Stack, template: str, body: dict[str, Any], fields: tuple[str, ...]
) -> None:
    retailer = await shared_stack.partner()
    party, _ = await customer(shared_stack, retailer)
    response = await call(
        shared_stack,
        "POST",
        template,
        headers=retailer.acting_for(party),
        json={"partner_id": retailer.id, **body},
        party_id=party,
    )
    problem(response, 400, *fields)


async def test_checking_consent_given_to_another_partner_is_403_and_for_no_one_is_404(shared_stack: Stack) -> None:
    retailer, other = await asyncio.gather(shared_stack.partner(), shared_stack.partner())
    party, _ = await customer(shared_stack, retailer)
    route = "/v1/parties/{party_id}/consent-check"
    query = {"partner_id": retailer.id, "purpose": "contact:recall"}
    problem(await call(shared_stack, "GET", route, headers=other.auth, params=query, party_id=party), 403)
    problem(await call(shared_stack, "GET", route, headers=retailer.auth, params=query, party_id="nobody"), 404)
    problem(
        await call(
            shared_stack, "GET", route, headers=retailer.auth, params={"partner_id": retailer.id}, party_id=party
        ),
        400,
        "purpose",
    )
    problem(
        await call(shared_stack, "GET", "/v1/parties/{party_id}/consents", headers=retailer.auth, party_id="nobody"),
        404,
    )


# --- partners and capabilities ------------------------------------------------------------------------------


async def test_a_network_admin_joins_a_manufacturer_that_is_then_listed_by_kind(shared_stack: Stack) -> None:
    admin = await shared_stack.partner()
    name = unique("Frame Works")
    joined = ok(
        await call(
            shared_stack,
            "POST",
            "/v1/partners",
            headers=admin.auth,
            json={"display_name": name, "kinds": ["manufacturer", "supplier"], "capabilities": ["repair", "ship:eu"]},
        ),
        201,
    )
    assert (joined["display_name"], joined["kinds"], joined["capabilities"]) == (
        name,
        ["manufacturer", "supplier"],
        ["repair", "ship:eu"],
    )
    read = ok(
        await call(
            shared_stack, "GET", "/v1/partners/{partner_id}", headers=admin.auth, partner_id=joined["partner_id"]
        )
    )
    assert read == joined
    as_party = ok(
        await call(shared_stack, "GET", "/v1/parties/{party_id}", headers=admin.auth, party_id=joined["partner_id"])
    )
    assert (as_party["kind"], as_party["partner"]) == ("organization", True)

    async def all_of_kind(kind: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token = ""
        while True:
            params: dict[str, Any] = {"kind": kind, "page_size": 2} | ({"page_token": token} if token else {})
            page = ok(await call(shared_stack, "GET", "/v1/partners", headers=admin.auth, params=params))
            found += page["partners"]
            token = page["next_page_token"]
            if not token:
                return found

    manufacturers = await all_of_kind("manufacturer")
    assert joined["partner_id"] in {p["partner_id"] for p in manufacturers}
    assert admin.id not in {p["partner_id"] for p in manufacturers}
    assert all("manufacturer" in p["kinds"] for p in manufacturers)
    assert len({p["partner_id"] for p in manufacturers}) == len(manufacturers)


async def test_an_organization_joins_the_network_as_itself(shared_stack: Stack) -> None:
    admin = await shared_stack.partner()
    body = {"kind": "organization", "display_name": unique("Coop")}
    organization = ok(await call(shared_stack, "POST", "/v1/parties", headers=admin.auth, json=body), 201)
    joined = ok(
        await call(
            shared_stack,
            "POST",
            "/v1/partners",
            headers=admin.auth,
            json={"party_id": organization["party_id"], "kinds": ["distributor"]},
        ),
        201,
    )
    assert (joined["partner_id"], joined["display_name"], joined["kinds"]) == (
        organization["party_id"],
        body["display_name"],
        ["distributor"],
    )
    again = await call(
        shared_stack,
        "POST",
        "/v1/partners",
        headers=admin.auth,
        json={"party_id": organization["party_id"], "kinds": ["distributor"]},
    )
    problem(again, 409)


@pytest.mark.parametrize(
    ("case", "status", "fields"),
    [
        ("no kinds", 400, ("kinds",)),
        ("unknown kind", 400, ("kinds[0]",)),
        ("bad capability", 400, ("capabilities[0]",)),
        ("a person", 422, ()),
        ("unknown party", 404, ()),
        ("no admin scope", 403, ()),
    ],
)
async def test_joining_the_network_is_refused_when_it_breaks_a_rule(
    shared_stack: Stack, case: str, status: int, fields: tuple[str, ...]
) -> None:
    scopes = ("keys:manage",) if case == "no admin scope" else ("network:admin", "keys:manage")
    admin = await shared_stack.partner(scopes=scopes)
    body: dict[str, Any] = {"display_name": unique("Joiner"), "kinds": ["retailer"]}
    if case == "no kinds":
        body["kinds"] = []
    elif case == "unknown kind":
        body["kinds"] = ["wizard"]
    elif case == "bad capability":
        body["capabilities"] = ["Ship Anywhere"]
    elif case == "a person":
        body = {"party_id": await person(shared_stack, admin), "kinds": ["retailer"]}
    elif case == "unknown party":
        body = {"party_id": "nobody", "kinds": ["retailer"]}
    problem(await call(shared_stack, "POST", "/v1/partners", headers=admin.auth, json=body), status, *fields)


@pytest.mark.parametrize(("params", "field"), [({"kind": "wizard"}, "kind"), ({"page_token": "%%%"}, "page_token")])
async def test_listing_partners_with_a_bad_filter_is_400(
    shared_stack: Stack, params: dict[str, Any], field: str
) -> None:
    partner = await shared_stack.partner()
    problem(await call(shared_stack, "GET", "/v1/partners", headers=partner.auth, params=params), 400, field)


async def test_an_unknown_partner_is_404(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    person_id = await person(shared_stack, partner)
    for unknown in ("nobody", person_id):  # a person is a party, never a partner
        problem(
            await call(shared_stack, "GET", "/v1/partners/{partner_id}", headers=partner.auth, partner_id=unknown), 404
        )


async def test_a_partner_declares_a_capability_once(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    route = "/v1/partners/{partner_id}/capabilities"
    for _ in range(2):
        declared = ok(
            await call(
                shared_stack,
                "POST",
                route,
                headers=partner.auth,
                json={"capability": "answer:category/kitchen"},
                partner_id=partner.id,
            )
        )
        assert declared["capabilities"] == ["answer:category/kitchen"]
    read = ok(await call(shared_stack, "GET", "/v1/partners/{partner_id}", headers=partner.auth, partner_id=partner.id))
    assert read["capabilities"] == ["answer:category/kitchen"]


async def test_declaring_a_capability_for_another_partner_or_a_malformed_one_is_refused(shared_stack: Stack) -> None:
    partner, other = await asyncio.gather(shared_stack.partner(), shared_stack.partner())
    route = "/v1/partners/{partner_id}/capabilities"
    problem(
        await call(
            shared_stack, "POST", route, headers=partner.auth, json={"capability": "repair"}, partner_id=other.id
        ),
        403,
    )
    problem(
        await call(
            shared_stack, "POST", route, headers=partner.auth, json={"capability": "Re pair"}, partner_id=partner.id
        ),
        400,
        "capability",
    )
    problem(
        await call(shared_stack, "POST", route, headers=partner.auth, json={}, partner_id=partner.id), 400, "capability"
    )


# --- API keys ----------------------------------------------------------------------------------------------


async def test_a_partner_creates_a_key_uses_it_lists_it_and_revokes_it(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    created = ok(
        await call(
            shared_stack,
            "POST",
            "/v1/partners/{partner_id}/api-keys",
            headers=partner.auth,
            json={"name": " reporting ", "scopes": ["keys:manage"]},
            partner_id=partner.id,
        ),
        201,
    )
    key = created["api_key"]
    assert (key["partner_id"], key["name"], key["scopes"]) == (partner.id, "reporting", ["keys:manage"])
    assert created["secret"].startswith(f"cnk_{key['prefix']}_")
    new_auth = bearer(created["secret"])
    me = ok(await call(shared_stack, "GET", "/v1/partners/{partner_id}", headers=new_auth, partner_id=partner.id))
    assert me["partner_id"] == partner.id
    listed = ok(
        await call(shared_stack, "GET", "/v1/partners/{partner_id}/api-keys", headers=new_auth, partner_id=partner.id)
    )
    assert {k["api_key_id"] for k in listed["api_keys"]} == {partner.key_id, key["api_key_id"]}
    assert "secret" not in str(listed)
    used = next(k for k in listed["api_keys"] if k["api_key_id"] == key["api_key_id"])
    assert "last_used_time" in used
    revoked = ok(
        await call(
            shared_stack, "POST", "/v1/api-keys/{api_key_id}:revoke", headers=partner.auth, api_key_id=key["api_key_id"]
        )
    )
    assert revoked["api_key_id"] == key["api_key_id"] and "revoke_time" in revoked

    async def refused() -> bool:
        response = await call(shared_stack, "GET", "/v1/partners/{partner_id}", headers=new_auth, partner_id=partner.id)
        return response.status_code == 401

    await eventually(refused, timeout=10)
    # The partner's other key still works, and the revoked key is listed as such.
    listed = ok(
        await call(
            shared_stack, "GET", "/v1/partners/{partner_id}/api-keys", headers=partner.auth, partner_id=partner.id
        )
    )
    assert {k["api_key_id"]: "revoke_time" in k for k in listed["api_keys"]} == {
        partner.key_id: False,
        key["api_key_id"]: True,
    }


@pytest.mark.parametrize(
    ("case", "status", "fields"),
    [
        ("a scope the creator lacks", 400, ("scopes",)),
        ("no scopes", 400, ("scopes",)),
        ("no name", 400, ("name",)),
        ("another partner's", 403, ()),
        ("no keys scope", 403, ()),
    ],
)
async def test_creating_an_api_key_is_refused_when_it_breaks_a_rule(
    shared_stack: Stack, case: str, status: int, fields: tuple[str, ...]
) -> None:
    scopes = {"no keys scope": ("network:admin",), "another partner's": ("keys:manage",)}.get(
        case, ("network:admin", "keys:manage")
    )
    partner, other = await asyncio.gather(shared_stack.partner(scopes=scopes), shared_stack.partner())
    body: dict[str, Any] = {"name": "k", "scopes": [scopes[0]]}
    target = other.id if case == "another partner's" else partner.id
    if case == "a scope the creator lacks":
        body["scopes"] = ["reviews:moderate"]
    elif case == "no scopes":
        body["scopes"] = []
    elif case == "no name":
        body["name"] = "  "
    response = await call(
        shared_stack, "POST", "/v1/partners/{partner_id}/api-keys", headers=partner.auth, json=body, partner_id=target
    )
    problem(response, status, *fields)


async def test_another_partners_keys_are_neither_listed_nor_revoked_but_by_the_networks_operator(
    shared_stack: Stack,
) -> None:
    partner, other, operator = await asyncio.gather(
        shared_stack.partner(scopes=("keys:manage",)), shared_stack.partner(), shared_stack.partner()
    )
    problem(
        await call(
            shared_stack, "GET", "/v1/partners/{partner_id}/api-keys", headers=partner.auth, partner_id=other.id
        ),
        403,
    )
    route = "/v1/api-keys/{api_key_id}:revoke"
    problem(await call(shared_stack, "POST", route, headers=partner.auth, api_key_id=other.key_id), 403)
    problem(await call(shared_stack, "POST", route, headers=partner.auth, api_key_id="no-such-key"), 404)
    # The other partner's key still works.
    assert (await call(shared_stack, "GET", "/v1/partners", headers=other.auth)).status_code == 200
    # An operator (scope network:admin) lists and revokes it.
    listed = ok(
        await call(
            shared_stack, "GET", "/v1/partners/{partner_id}/api-keys", headers=operator.auth, partner_id=other.id
        )
    )
    assert [key["api_key_id"] for key in listed["api_keys"]] == [other.key_id]
    ok(await call(shared_stack, "POST", route, headers=operator.auth, api_key_id=other.key_id))

    async def refused() -> bool:
        return (await call(shared_stack, "GET", "/v1/partners", headers=other.auth)).status_code == 401

    await eventually(refused, timeout=10)


# --- authorization -----------------------------------------------------------------------------------------


async def test_acts_for_says_whether_and_why(shared_stack: Stack) -> None:
    retailer, other = await asyncio.gather(shared_stack.partner(), shared_stack.partner())
    party, relationship = await customer(shared_stack, retailer)
    route = "/v1/partners/{partner_id}/acts-for/{party_id}"
    allowed = ok(await call(shared_stack, "GET", route, headers=retailer.auth, partner_id=retailer.id, party_id=party))
    assert allowed == {
        "allowed": True,
        "reason": f"{party} is customer_of {retailer.id}",
        "relationship_id": relationship["relationship_id"],
    }
    refused = ok(await call(shared_stack, "GET", route, headers=other.auth, partner_id=other.id, party_id=party))
    assert refused["allowed"] is False and refused["relationship_id"] == ""
    assert "no current relationship" in refused["reason"]
    # Whom another partner acts for is its own business: the answer would name a private relationship.
    asked = problem(
        await call(shared_stack, "GET", route, headers=other.auth, partner_id=retailer.id, party_id=party), 403
    )
    assert relationship["relationship_id"] not in str(asked)


async def test_acts_for_an_unknown_party_or_partner_is_404(shared_stack: Stack) -> None:
    retailer = await shared_stack.partner()
    party = await person(shared_stack, retailer)
    route = "/v1/partners/{partner_id}/acts-for/{party_id}"
    problem(
        await call(shared_stack, "GET", route, headers=retailer.auth, partner_id=retailer.id, party_id="nobody"), 404
    )
    problem(await call(shared_stack, "GET", route, headers=retailer.auth, partner_id=party, party_id=party), 404)


async def test_checks_decide_the_shared_rules_for_the_caller(shared_stack: Stack) -> None:
    net = await network(shared_stack)

    async def decide(auth: Mapping[str, str], action: str, resource: str) -> dict[str, Any]:
        params = {"action": action, "resource": resource}
        decision: dict[str, Any] = ok(await call(shared_stack, "GET", "/v1/checks", headers=auth, params=params))
        return decision

    acts = await decide(net.retailer.auth, "party.act_for", f"party/{net.customer}")
    assert (acts["allowed"], acts["relationship_id"]) == (True, net.customer_of["relationship_id"])
    assert (await decide(net.maker.auth, "party.act_for", f"party/{net.customer}"))["allowed"] is False
    assert (await decide(net.retailer.auth, "party.read_contact", f"party/{net.customer}"))["allowed"] is True
    assert (await decide(net.maker.auth, "party.read_contact", f"party/{net.customer}"))["allowed"] is False
    assert (await decide(net.maker.auth, "partner.manage", f"partner/{net.maker.id}"))["allowed"] is True
    assert (await decide(net.maker.auth, "partner.manage", f"partner/{net.retailer.id}"))["allowed"] is False
    private = f"relationship/{net.customer_of['relationship_id']}"
    assert (await decide(net.retailer.auth, "relationship.read", private))["allowed"] is True
    assert (await decide(net.maker.auth, "relationship.read", private))["allowed"] is False
    # Acting for the customer, the maker-facing question is the customer's own.
    own = await decide(net.retailer.acting_for(net.customer), "party.read_contact", f"party/{net.customer}")
    assert own == {"allowed": True, "reason": "the party's own contact data", "relationship_id": ""}


@pytest.mark.parametrize(
    ("action", "resource", "status", "field"),
    [
        ("party.delete", "party/{party}", 400, "action"),
        ("party.act_for", "partner/{party}", 400, "resource"),
        ("party.act_for", "order/1", 400, "resource"),
        ("party.act_for", "party/nobody", 404, ""),
        ("relationship.read", "relationship/nothing", 404, ""),
    ],
)
async def test_a_check_that_cannot_be_decided_is_refused(
    shared_stack: Stack, action: str, resource: str, status: int, field: str
) -> None:
    partner = await shared_stack.partner()
    params = {"action": action, "resource": resource.format(party=partner.id)}
    response = await call(shared_stack, "GET", "/v1/checks", headers=partner.auth, params=params)
    problem(response, status, *([field] if field else []))


# --- coverage of the route table ---------------------------------------------------------------------------


async def test_every_identity_route_was_exercised_on_success_and_on_error(shared_stack: Stack) -> None:
    """Runs last: the tests above called every route of identity, each with success and with a refusal."""
    assert_routes_exercised(shared_stack, "identity")
