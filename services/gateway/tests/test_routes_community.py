"""Every route of the community service through the gateway: a retailer runs a community about a
maker's product; its customers join, ask, answer, vote, accept, propose ideas and earn reputation;
the retailer and the maker manage, answer officially, promote and measure. Each route's success
and its refusals."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from gateway_testing import Partner, Stack, assert_routes_exercised, call, unique

from collabnet.identity.v1 import identity_pb2 as identity
from collabnet_community.jobs import Escalation
from collabnet_kit.testing import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROBLEM = "application/problem+json"


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


# --- setup: a product, the community about it, its members ---------------------------------------------


@dataclass
class Club:
    """``retailer``'s community about the category of product P, which ``maker`` makes and ``retailer`` lists."""

    maker: Partner
    retailer: Partner
    product_id: str
    sku: str
    category: str
    community: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.community["community_id"])


async def register_product(stack: Stack, maker: Partner, category: str) -> dict[str, Any]:
    body = {
        "sku": f"KT-{uuid.uuid4().hex[:12]}",
        "name": unique("Kettle"),
        "category": category,
        "kind": "finished_good",
    }
    return ok(await call(stack, "POST", "/v1/products", headers=maker.auth, json=body), 201)


async def create_community(stack: Stack, partner: Partner, scope: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = {"name": unique("Kettle lovers"), "description": "Tea, limescale and lids", "scope": scope} | extra
    return ok(await call(stack, "POST", "/v1/communities", headers=partner.auth, json=body), 201)


async def communities_covering(stack: Stack, partner: Partner, product_id: str) -> list[dict[str, Any]]:
    response = await call(stack, "GET", "/v1/communities", headers=partner.auth, params={"product_id": product_id})
    return list(ok(response)["communities"])


async def open_club(stack: Stack, **extra: Any) -> Club:
    maker = await stack.partner(unique("Maker"), identity.PARTNER_KIND_MANUFACTURER)
    retailer = await stack.partner(unique("Retailer"))
    category = f"kitchen/kettles-{uuid.uuid4().hex[:8]}"
    product = await register_product(stack, maker, category)
    listing = {"product_id": product["product_id"], "price": {"amount_minor": 4999, "currency_code": "EUR"}}
    ok(await call(stack, "POST", "/v1/listings", headers=retailer.auth, json=listing | {"available": True}), 201)
    community = await create_community(stack, retailer, {"category": category}, **extra)

    # The community learns the product (and its category) from supplychain's ProductRegistered.
    async def covered() -> bool:
        found = await communities_covering(stack, retailer, product["product_id"])
        return [c["community_id"] for c in found] == [community["community_id"]]

    await eventually(covered, timeout=10)
    return Club(maker, retailer, product["product_id"], product["sku"], category, community)


async def join(stack: Stack, club: Club, party: str) -> dict[str, Any]:
    response = await call(
        stack,
        "POST",
        "/v1/communities/{community_id}:join",
        headers=club.retailer.acting_for(party),
        json={},
        community_id=club.id,
    )
    return ok(response, 201)


async def member(stack: Stack, club: Club, *, bought: bool = False) -> str:
    """A customer of the club's retailer who joined the club; with ``bought``, an owner of its product
    whose purchase the community has learnt."""
    party = await stack.person(customer_of=club.retailer.id)
    await join(stack, club, party)
    if bought:
        order = {
            "customer_id": party,
            "retailer_id": club.retailer.id,
            "lines": [{"sku": club.sku, "quantity": 1}],
            "currency_code": "EUR",
            "contact": {
                "name": "Ada Owner",
                "address": {"lines": ["Hauptstr. 1"], "locality": "Berlin", "region_code": "DE"},
            },
        }
        headers = club.retailer.acting_for(party)
        ok(await call(stack, "POST", "/v1/orders", headers=headers, json=order), 201)

        async def owner() -> bool:
            reputation = await reputation_of(stack, club.retailer.acting_for(party), party)
            return any(b["kind"] == "owner" and b["product_id"] == club.product_id for b in reputation["badges"])

        await eventually(owner, timeout=10)
    return party


async def reputation_of(stack: Stack, headers: dict[str, str], party: str) -> dict[str, Any]:
    return ok(await call(stack, "GET", "/v1/parties/{party_id}/reputation", headers=headers, party_id=party))


async def ask(stack: Stack, club: Club, asker: str, title: str = "Is the inside all steel?") -> dict[str, Any]:
    body = {"community_id": club.id, "product_id": club.product_id, "title": title, "body": "No plastic, please."}
    return ok(await call(stack, "POST", "/v1/questions", headers=club.retailer.acting_for(asker), json=body), 201)


async def answer(stack: Stack, headers: dict[str, str], question_id: str, text: str, **extra: Any) -> httpx.Response:
    return await call(
        stack,
        "POST",
        "/v1/questions/{question_id}/answers",
        headers=headers,
        json={"body": text} | extra,
        question_id=question_id,
    )


async def get_question(stack: Stack, partner: Partner, question_id: str) -> dict[str, Any]:
    return ok(await call(stack, "GET", "/v1/questions/{question_id}", headers=partner.auth, question_id=question_id))


async def submit_idea(stack: Stack, club: Club, submitter: str, *, product: bool = True) -> dict[str, Any]:
    body = {
        "community_id": club.id,
        "title": "A wider lid",
        "description": "Wide enough to descale by hand.",
        "product_id": club.product_id if product else "",
    }
    return ok(await call(stack, "POST", "/v1/ideas", headers=club.retailer.acting_for(submitter), json=body), 201)


async def idea_action(stack: Stack, action: str, idea_id: str, headers: dict[str, str], **body: Any) -> httpx.Response:
    return await call(stack, "POST", "/v1/ideas/{idea_id}:" + action, headers=headers, json=body, idea_id=idea_id)


async def notifications(stack: Stack, club: Club, party: str, **params: Any) -> list[dict[str, Any]]:
    response = await call(
        stack,
        "GET",
        "/v1/parties/{party_id}/community-notifications",
        headers=club.retailer.acting_for(party),
        params=params,
        party_id=party,
    )
    return list(ok(response)["notifications"])


# --- communities -------------------------------------------------------------------------------------


async def test_a_retailer_creates_a_community_for_a_category_and_it_is_found_by_product(shared_stack: Stack) -> None:
    club = await open_club(shared_stack)
    created = club.community
    assert created["partner_id"] == club.retailer.id
    assert created["scope"] == {"category": club.category}
    assert created["description"] == "Tea, limescale and lids"
    assert (created["open_to_non_members"], created["member_count"]) == (False, 0)
    assert created["create_time"].endswith("Z")
    visitor = await shared_stack.partner()
    read = ok(
        await call(shared_stack, "GET", "/v1/communities/{community_id}", headers=visitor.auth, community_id=club.id)
    )
    assert read == created
    of_partner = ok(
        await call(
            shared_stack, "GET", "/v1/communities", headers=visitor.auth, params={"partner_id": club.retailer.id}
        )
    )
    assert [c["community_id"] for c in of_partner["communities"]] == [club.id]
    assert of_partner["next_page_token"] == ""
    # A second community naming the product itself is found by the product too.
    listed = await create_community(
        shared_stack, club.retailer, {"products": {"product_ids": [club.product_id]}}, open_to_non_members=True
    )
    assert listed["scope"] == {"products": {"product_ids": [club.product_id]}}
    covering = await communities_covering(shared_stack, visitor, club.product_id)
    assert {c["community_id"] for c in covering} == {club.id, listed["community_id"]}


async def test_creating_a_community_with_bad_fields_a_taken_name_or_for_another_partner_is_refused(
    shared_stack: Stack,
) -> None:
    partner = await shared_stack.partner()
    path = "/v1/communities"
    empty = await call(shared_stack, "POST", path, headers=partner.auth, json={"description": "no name, no scope"})
    assert fields(problem(empty, 400)) == {"community.name", "community.scope"}
    no_products = await call(
        shared_stack, "POST", path, headers=partner.auth, json={"name": "Empty", "scope": {"products": {}}}
    )
    assert fields(problem(no_products, 400)) == {"community.scope.products"}
    ill_typed = await call(
        shared_stack, "POST", path, headers=partner.auth, json={"name": "Typed", "scope": {"brand": 5}}
    )
    assert fields(problem(ill_typed, 400)) == {"community.scope.brand"}
    two_scopes = await call(
        shared_stack,
        "POST",
        path,
        headers=partner.auth,
        json={"name": "Both", "scope": {"brand": "K", "category": "k"}},
    )
    assert fields(problem(two_scopes, 400)) == {"community.scope.brand", "community.scope.category"}
    created = await create_community(shared_stack, partner, {"brand": "Kettlo"})
    again = await call(
        shared_stack, "POST", path, headers=partner.auth, json={"name": created["name"], "scope": {"brand": "Other"}}
    )
    assert created["name"] in problem(again, 409)["detail"]
    other = await shared_stack.partner()
    for_other = await call(
        shared_stack,
        "POST",
        path,
        headers=partner.auth,
        json={"name": "Not mine", "partner_id": other.id, "scope": {"brand": "Kettlo"}},
    )
    assert other.id in problem(for_other, 403)["detail"]


async def test_an_unknown_community_is_404_and_a_foreign_page_token_is_400(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    unknown = await call(
        shared_stack, "GET", "/v1/communities/{community_id}", headers=partner.auth, community_id="no-such-community"
    )
    assert "no-such-community" in problem(unknown, 404)["detail"]
    token = await call(shared_stack, "GET", "/v1/communities", headers=partner.auth, params={"page_token": "xyz"})
    assert fields(problem(token, 400)) == {"page_token"}


# --- memberships -------------------------------------------------------------------------------------


async def test_a_customer_joins_and_leaves_and_the_member_count_follows(shared_stack: Stack) -> None:
    club = await open_club(shared_stack)
    party = await shared_stack.person(customer_of=club.retailer.id)
    joined = await join(shared_stack, club, party)
    assert (joined["community_id"], joined["party_id"], joined["role"]) == (club.id, party, "member")
    assert (joined["partner_id"], joined["community_name"]) == (club.retailer.id, club.community["name"])
    assert "leave_time" not in joined

    async def count() -> int:
        response = await call(
            shared_stack, "GET", "/v1/communities/{community_id}", headers=club.maker.auth, community_id=club.id
        )
        return int(ok(response)["member_count"])

    assert await count() == 1
    left = ok(
        await call(
            shared_stack,
            "POST",
            "/v1/communities/{community_id}:leave",
            headers=club.retailer.acting_for(party),
            json={},
            community_id=club.id,
        )
    )
    assert left["membership_id"] == joined["membership_id"]
    assert left["leave_time"] >= left["join_time"]
    assert await count() == 0
    # Joining again starts a new period.
    again = await join(shared_stack, club, party)
    assert again["membership_id"] != joined["membership_id"]
    assert await count() == 1


async def test_joining_twice_leaving_without_a_membership_and_joining_as_a_partner_are_refused(
    shared_stack: Stack,
) -> None:
    club = await open_club(shared_stack)
    party = await member(shared_stack, club)
    as_party = club.retailer.acting_for(party)
    twice = await call(
        shared_stack, "POST", "/v1/communities/{community_id}:join", headers=as_party, json={}, community_id=club.id
    )
    assert party in problem(twice, 409)["detail"]
    stranger = await shared_stack.person(customer_of=club.retailer.id)
    not_member = await call(
        shared_stack,
        "POST",
        "/v1/communities/{community_id}:leave",
        headers=club.retailer.acting_for(stranger),
        json={},
        community_id=club.id,
    )
    assert "not a member" in problem(not_member, 404)["detail"]
    as_partner = await call(
        shared_stack,
        "POST",
        "/v1/communities/{community_id}:join",
        headers=club.retailer.auth,
        json={},
        community_id=club.id,
    )
    assert "X-On-Behalf-Of" in problem(as_partner, 403)["detail"]
    for someone_else in ("join", "leave"):
        response = await call(
            shared_stack,
            "POST",
            "/v1/communities/{community_id}:" + someone_else,
            headers=as_party,
            json={"party_id": stranger},
            community_id=club.id,
        )
        problem(response, 403)
    unknown = await call(
        shared_stack, "POST", "/v1/communities/{community_id}:join", headers=as_party, json={}, community_id="nope"
    )
    problem(unknown, 404)


async def test_the_partner_makes_members_experts_and_moderators_and_lists_them_by_role(shared_stack: Stack) -> None:
    club = await open_club(shared_stack)
    expert, moderator, plain = [await member(shared_stack, club) for _ in range(3)]
    path = "/v1/communities/{community_id}/members/{party_id}:setRole"
    made = ok(
        await call(
            shared_stack,
            "POST",
            path,
            headers=club.retailer.auth,
            json={"role": "expert"},
            community_id=club.id,
            party_id=expert,
        )
    )
    assert (made["party_id"], made["role"]) == (expert, "expert")
    ok(
        await call(
            shared_stack,
            "POST",
            path,
            headers=club.retailer.auth,
            json={"role": "moderator"},
            community_id=club.id,
            party_id=moderator,
        )
    )
    members_path = "/v1/communities/{community_id}/members"
    everyone = ok(await call(shared_stack, "GET", members_path, headers=club.retailer.auth, community_id=club.id))
    assert {m["party_id"]: m["role"] for m in everyone["memberships"]} == {
        expert: "expert",
        moderator: "moderator",
        plain: "member",
    }
    experts = ok(
        await call(
            shared_stack,
            "GET",
            members_path,
            headers=club.retailer.auth,
            params={"role": "expert"},
            community_id=club.id,
        )
    )
    assert [m["party_id"] for m in experts["memberships"]] == [expert]
    # A moderator may list the members too, and make a member an expert.
    by_moderator = ok(
        await call(
            shared_stack,
            "GET",
            members_path,
            headers=club.retailer.acting_for(moderator),
            params={"page_size": 2},
            community_id=club.id,
        )
    )
    assert len(by_moderator["memberships"]) == 2
    assert by_moderator["next_page_token"]
    promoted = ok(
        await call(
            shared_stack,
            "POST",
            path,
            headers=club.retailer.acting_for(moderator),
            json={"role": "expert"},
            community_id=club.id,
            party_id=plain,
        )
    )
    assert promoted["role"] == "expert"
    badges = (await reputation_of(shared_stack, club.maker.auth, expert))["badges"]
    assert [(b["kind"], b["label"], b["community_id"]) for b in badges] == [
        ("expert", f"Expert in {club.community['name']}", club.id)
    ]


async def test_roles_are_set_by_the_partner_or_its_moderators_and_members_are_listed_by_them_only(
    shared_stack: Stack,
) -> None:
    club = await open_club(shared_stack)
    moderator, plain, other = [await member(shared_stack, club) for _ in range(3)]
    path = "/v1/communities/{community_id}/members/{party_id}:setRole"

    async def set_role(headers: dict[str, str], party: str, body: dict[str, Any]) -> httpx.Response:
        return await call(shared_stack, "POST", path, headers=headers, json=body, community_id=club.id, party_id=party)

    ok(await set_role(club.retailer.auth, moderator, {"role": "moderator"}))
    by_member = await set_role(club.retailer.acting_for(plain), other, {"role": "expert"})
    assert "moderators" in problem(by_member, 403)["detail"]
    makes_moderator = await set_role(club.retailer.acting_for(moderator), other, {"role": "moderator"})
    assert "makes or unmakes moderators" in problem(makes_moderator, 403)["detail"]
    own_role = await set_role(club.retailer.acting_for(moderator), moderator, {"role": "member"})
    assert "own role" in problem(own_role, 403)["detail"]
    no_role = await set_role(club.retailer.auth, other, {})
    assert fields(problem(no_role, 400)) == {"role"}
    bad_role = await set_role(club.retailer.auth, other, {"role": "owner"})
    assert fields(problem(bad_role, 400)) == {"role"}
    outsider = await shared_stack.person(customer_of=club.retailer.id)
    problem(await set_role(club.retailer.auth, outsider, {"role": "expert"}), 404)
    stranger = await shared_stack.partner()
    listing = await call(
        shared_stack, "GET", "/v1/communities/{community_id}/members", headers=stranger.auth, community_id=club.id
    )
    assert "partner" in problem(listing, 403)["detail"]


async def test_a_partys_memberships_span_partners_and_another_partner_sees_only_its_own(shared_stack: Stack) -> None:
    club = await open_club(shared_stack)
    other = await shared_stack.partner(unique("Other retailer"))
    other_community = await create_community(shared_stack, other, {"category": club.category})
    party = await member(shared_stack, club)
    # One consumer is one party across partners: the same customer joins the other partner's community.
    ok(
        await call(
            shared_stack,
            "POST",
            "/v1/communities/{community_id}:join",
            headers=club.retailer.acting_for(party),
            json={},
            community_id=other_community["community_id"],
        ),
        201,
    )
    path = "/v1/parties/{party_id}/memberships"
    own = ok(await call(shared_stack, "GET", path, headers=club.retailer.acting_for(party), party_id=party))
    assert {(m["community_id"], m["partner_id"]) for m in own["memberships"]} == {
        (club.id, club.retailer.id),
        (other_community["community_id"], other.id),
    }
    seen_by_other = ok(await call(shared_stack, "GET", path, headers=other.auth, party_id=party))
    assert [m["community_id"] for m in seen_by_other["memberships"]] == [other_community["community_id"]]
    bad_token = await call(
        shared_stack,
        "GET",
        path,
        headers=club.retailer.acting_for(party),
        params={"page_token": "bm90IGEgdG9rZW4="},
        party_id=party,
    )
    assert fields(problem(bad_token, 400)) == {"page_token"}
    stranger = await shared_stack.person(customer_of=other.id)
    refused = await call(shared_stack, "GET", path, headers=club.retailer.acting_for(stranger), party_id=stranger)
    assert stranger in problem(refused, 403)["detail"]


async def test_the_partner_measures_its_communitys_engagement(shared_stack: Stack) -> None:
    club = await open_club(shared_stack)
    asker, helper = await member(shared_stack, club), await member(shared_stack, club)
    question = await ask(shared_stack, club, asker)
    ok(await answer(shared_stack, club.retailer.acting_for(helper), question["question_id"], "Yes, all steel."), 201)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    found = ok(
        await call(
            shared_stack,
            "GET",
            "/v1/communities/{community_id}/metrics",
            headers=club.retailer.auth,
            params={"start_time": today.isoformat(), "end_time": (today + timedelta(days=1)).isoformat()},
            community_id=club.id,
        )
    )
    assert found["community_id"] == club.id
    assert found["start_time"] == today.isoformat().replace("+00:00", "Z")
    assert (found["members"], found["contributors"], found["contributions"]) == (2, 2, 2)
    assert found["participation_rate"] == 1.0
    assert (found["questions"], found["questions_answered"], found["questions_answered_by_verified_owner"]) == (
        1,
        1,
        0,
    )
    assert found["median_time_to_first_answer"].endswith("s")
    assert [d["active_members"] for d in found["daily_active"]] == [2]
    assert [(c["members"], [p["eligible"] for p in c["points"]]) for c in found["retention"]] == [(2, [0, 0, 0])]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, {"start_time", "end_time"}),
        ({"start_time": "2026-01-02T00:00:00Z", "end_time": "2026-01-01T00:00:00Z"}, {"end_time"}),
        ({"start_time": "2026-01-01T00:00:00", "end_time": "2026-01-02T00:00:00Z"}, {"start_time"}),
        ({"start_time": "last tuesday", "end_time": "2026-01-02T00:00:00Z"}, {"start_time"}),
        ({"start_time": "2000-01-01T00:00:00Z", "end_time": "2026-01-01T00:00:00Z"}, {"end_time"}),
    ],
)
async def test_engagement_metrics_need_a_valid_range(
    shared_stack: Stack, params: dict[str, str], expected: set[str]
) -> None:
    partner = await shared_stack.partner()
    community = await create_community(shared_stack, partner, {"brand": "Kettlo"})
    response = await call(
        shared_stack,
        "GET",
        "/v1/communities/{community_id}/metrics",
        headers=partner.auth,
        params=params,
        community_id=community["community_id"],
    )
    assert fields(problem(response, 400)) == expected


async def test_engagement_metrics_are_for_the_communitys_partner(shared_stack: Stack) -> None:
    partner, other = await shared_stack.partner(), await shared_stack.partner()
    community = await create_community(shared_stack, partner, {"brand": "Kettlo"})
    params = {"start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-31T00:00:00Z"}
    path = "/v1/communities/{community_id}/metrics"
    refused = await call(
        shared_stack, "GET", path, headers=other.auth, params=params, community_id=community["community_id"]
    )
    assert partner.id in problem(refused, 403)["detail"]
    problem(await call(shared_stack, "GET", path, headers=partner.auth, params=params, community_id="nope"), 404)


# --- questions and answers ------------------------------------------------------------------------------


async def test_a_member_asks_and_an_invited_owner_answers_as_a_verified_owner(shared_stack: Stack) -> None:
    club = await open_club(shared_stack)
    owner = await member(shared_stack, club, bought=True)
    asker = await member(shared_stack, club)
    question = await ask(shared_stack, club, asker)
    assert (question["community_id"], question["product_id"], question["asker_id"]) == (
        club.id,
        club.product_id,
        asker,
    )
    assert (question["title"], question["body"]) == ("Is the inside all steel?", "No plastic, please.")
    assert (question["maker_id"], question["answer_count"], question["invitation_count"]) == (club.maker.id, 0, 1)
    path = "/v1/parties/{party_id}/question-invitations"
    as_owner = club.retailer.acting_for(owner)
    invited = ok(await call(shared_stack, "GET", path, headers=as_owner, party_id=owner))["invitations"]
    assert [(i["question_id"], i["answered"]) for i in invited] == [(question["question_id"], False)]
    assert invited[0]["reason"].startswith("bought the product")
    assert invited[0]["question"]["title"] == question["title"]

    given = ok(await answer(shared_stack, as_owner, question["question_id"], "All steel, even the lid."), 201)
    assert (given["answerer_id"], given["verified_owner"], given["official"]) == (owner, True, False)
    assert given["product_id"] == club.product_id
    read = await get_question(shared_stack, club.maker, question["question_id"])
    assert read["answer_count"] == 1
    assert read["first_answer_time"] >= read["ask_time"]
    assert [a["answer_id"] for a in read["top_answers"]] == [given["answer_id"]]
    # The invitation is answered: gone from the open ones, kept with include_answered.
    assert ok(await call(shared_stack, "GET", path, headers=as_owner, party_id=owner))["invitations"] == []
    every = ok(
        await call(shared_stack, "GET", path, headers=as_owner, params={"include_answered": True}, party_id=owner)
    )
    assert [(i["question_id"], i["answered"]) for i in every["invitations"]] == [(question["question_id"], True)]
    told = await notifications(shared_stack, club, asker)
    assert [(n["kind"], n["answer_id"]) for n in told] == [("question_answered", given["answer_id"])]


async def test_invitations_are_visible_to_their_party_only(shared_stack: Stack) -> None:
    club = await open_club(shared_stack)
    owner = await member(shared_stack, club)
    other = await member(shared_stack, club)
    path = "/v1/parties/{party_id}/question-invitations"
    by_other = await call(shared_stack, "GET", path, headers=club.retailer.acting_for(other), party_id=owner)
    assert owner in problem(by_other, 403)["detail"]
    as_partner = await call(shared_stack, "GET", path, headers=club.retailer.auth, party_id=owner)
    problem(as_partner, 403)


async def test_asking_is_for_members_about_products_in_scope_with_a_title(shared_stack: Stack) -> None:
    club = await open_club(shared_stack)
    asker = await member(shared_stack, club)
    outsider = await shared_stack.person(customer_of=club.retailer.id)
    question = {"community_id": club.id, "product_id": club.product_id, "title": "Is it loud?", "body": ""}
    not_member = await call(
        shared_stack, "POST", "/v1/questions", headers=club.retailer.acting_for(outsider), json=question
    )
    assert "join it first" in problem(not_member, 403)["detail"]
    headers = club.retailer.acting_for(asker)
    short = await call(shared_stack, "POST", "/v1/questions", headers=headers, json=question | {"title": "?"})
    assert fields(problem(short, 400)) == {"title"}
    nothing = await call(shared_stack, "POST", "/v1/questions", headers=headers, json={"title": "Is it loud?"})
    assert fields(problem(nothing, 400)) == {"community_id", "product_id"}
    unknown = await call(shared_stack, "POST", "/v1/questions", headers=headers, json=question | {"product_id": "nope"})
    problem(unknown, 404)
    elsewhere = await register_product(shared_stack, club.maker, "garden/hoses")

    async def known() -> bool:
        response = await call(
            shared_stack,
            "POST",
            "/v1/questions",
            headers=headers,
            json=question | {"product_id": elsewhere["product_id"]},
        )
        return response.status_code != 404

    await eventually(known, timeout=10)
    out_of_scope = await call(
        shared_stack, "POST", "/v1/questions", headers=headers, json=question | {"product_id": elsewhere["product_id"]}
    )
    assert "outside community" in problem(out_of_scope, 422)["detail"]
    anyone = ok(
        await call(shared_stack, "GET", "/v1/questions", headers=headers, params={"product_id": club.product_id})
    )
    assert anyone["questions"] == []


async def test_the_maker_answers_officially_members_vote_and_the_asker_accepts(shared_stack: Stack) -> None:
    club = await open_club(shared_stack)
    asker, helper, voter = [await member(shared_stack, club) for _ in range(3)]
    question = await ask(shared_stack, club, asker)
    qid = question["question_id"]
    official = ok(await answer(shared_stack, club.maker.auth, qid, "Food-grade steel inside, since 2024."), 201)
    assert (official["answerer_id"], official["official"], official["official_partner_id"]) == (
        club.maker.id,
        True,
        club.maker.id,
    )
    assert official["verified_owner"] is False
    member_answer = ok(await answer(shared_stack, club.retailer.acting_for(helper), qid, "Mine is all steel."), 201)
    vote_path = "/v1/answers/{answer_id}:vote"
    voted = ok(
        await call(
            shared_stack,
            "POST",
            vote_path,
            headers=club.retailer.acting_for(voter),
            json={"helpful": True},
            answer_id=member_answer["answer_id"],
        )
    )
    assert (voted["helpful_votes"], voted["unhelpful_votes"]) == (1, 0)
    down = ok(
        await call(
            shared_stack,
            "POST",
            vote_path,
            headers=club.retailer.acting_for(voter),
            json={"helpful": False},
            answer_id=official["answer_id"],
        )
    )
    assert (down["helpful_votes"], down["unhelpful_votes"]) == (0, 1)
    answers_path = "/v1/questions/{question_id}/answers"
    ranked = ok(await call(shared_stack, "GET", answers_path, headers=club.maker.auth, question_id=qid))
    assert [a["answer_id"] for a in ranked["answers"]] == [member_answer["answer_id"], official["answer_id"]]

    accepted = ok(
        await call(
            shared_stack,
            "POST",
            "/v1/answers/{answer_id}:accept",
            headers=club.retailer.acting_for(asker),
            json={},
            answer_id=official["answer_id"],
        )
    )
    assert accepted["accepted_answer_id"] == official["answer_id"]
    assert accepted["top_answers"][0]["answer_id"] == official["answer_id"]
    assert accepted["top_answers"][0]["accepted"] is True
    # The accepted answer comes first, then the most helpful.
    ranked = ok(
        await call(shared_stack, "GET", answers_path, headers=club.maker.auth, params={"page_size": 1}, question_id=qid)
    )
    assert [a["answer_id"] for a in ranked["answers"]] == [official["answer_id"]]
    rest = ok(
        await call(
            shared_stack,
            "GET",
            answers_path,
            headers=club.maker.auth,
            params={"page_size": 1, "page_token": ranked["next_page_token"]},
            question_id=qid,
        )
    )
    assert [a["answer_id"] for a in rest["answers"]] == [member_answer["answer_id"]]
    assert rest["next_page_token"] == ""


async def test_a_products_questions_are_listed_unanswered_first_or_most_helpful_first(shared_stack: Stack) -> None:
    club = await open_club(shared_stack)
    asker, helper, voter = [await member(shared_stack, club) for _ in range(3)]
    answered = await ask(shared_stack, club, asker, "Does the lid open wide?")
    open_question = await ask(shared_stack, club, asker, "How loud is it?")
    given = ok(
        await answer(shared_stack, club.retailer.acting_for(helper), answered["question_id"], "Wide enough."), 201
    )
    await call(
        shared_stack,
        "POST",
        "/v1/answers/{answer_id}:vote",
        headers=club.retailer.acting_for(voter),
        json={"helpful": True},
        answer_id=given["answer_id"],
    )
    anyone = await shared_stack.partner()

    async def listed(**params: Any) -> list[str]:
        response = await call(
            shared_stack, "GET", "/v1/questions", headers=anyone.auth, params={"product_id": club.product_id} | params
        )
        return [q["question_id"] for q in ok(response)["questions"]]

    assert await listed() == [open_question["question_id"], answered["question_id"]]
    assert await listed(order="most_helpful") == [answered["question_id"], open_question["question_id"]]
    assert await listed(community_id=club.id, order="unanswered_first") == [
        open_question["question_id"],
        answered["question_id"],
    ]
    assert await listed(community_id="another") == []
    best = ok(
        await call(
            shared_stack,
            "GET",
            "/v1/questions",
            headers=anyone.auth,
            params={"product_id": club.product_id, "order": "most_helpful"},
        )
    )
    assert best["questions"][0]["top_answers"][0]["helpful_votes"] == 1


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, {"product_id"}),
        ({"product_id": "p", "order": "newest"}, {"order"}),
        ({"product_id": "p", "page_token": "e30="}, {"page_token"}),
    ],
)
async def test_listing_questions_needs_a_product_and_a_known_order(
    shared_stack: Stack, params: dict[str, str], expected: set[str]
) -> None:
    partner = await shared_stack.partner()
    response = await call(shared_stack, "GET", "/v1/questions", headers=partner.auth, params=params)
    assert fields(problem(response, 400)) == expected


async def test_unknown_questions_and_answers_are_404(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    party = await shared_stack.person(customer_of=partner.id)
    as_party = partner.acting_for(party)
    responses = [
        await call(shared_stack, "GET", "/v1/questions/{question_id}", headers=partner.auth, question_id="nope"),
        await call(
            shared_stack, "GET", "/v1/questions/{question_id}/answers", headers=partner.auth, question_id="nope"
        ),
        await answer(shared_stack, as_party, "nope", "An answer to nothing"),
        await call(
            shared_stack,
            "POST",
            "/v1/answers/{answer_id}:vote",
            headers=as_party,
            json={"helpful": True},
            answer_id="x",
        ),
        await call(shared_stack, "POST", "/v1/answers/{answer_id}:accept", headers=as_party, json={}, answer_id="x"),
    ]
    for response in responses:
        problem(response, 404)


async def test_answering_is_refused_to_the_asker_a_second_time_non_members_and_unrelated_partners(
    shared_stack: Stack,
) -> None:
    club = await open_club(shared_stack)
    asker, helper = await member(shared_stack, club), await member(shared_stack, club)
    qid = (await ask(shared_stack, club, asker))["question_id"]
    own = await answer(shared_stack, club.retailer.acting_for(asker), qid, "Answering myself")
    assert "own question" in problem(own, 422)["detail"]
    ok(await answer(shared_stack, club.retailer.acting_for(helper), qid, "Yes."), 201)
    twice = await answer(shared_stack, club.retailer.acting_for(helper), qid, "Yes, again.")
    assert "already" in problem(twice, 409)["detail"]
    outsider = await shared_stack.person(customer_of=club.retailer.id)
    not_member = await answer(shared_stack, club.retailer.acting_for(outsider), qid, "I think so")
    assert "join it first" in problem(not_member, 403)["detail"]
    unrelated = await shared_stack.partner()
    unofficial = await answer(shared_stack, unrelated.auth, qid, "Ours is better")
    assert "neither makes nor sells" in problem(unofficial, 403)["detail"]
    empty = await answer(shared_stack, club.retailer.acting_for(helper), qid, "   ")
    assert fields(problem(empty, 400)) == {"body"}
    assert (await get_question(shared_stack, club.maker, qid))["answer_count"] == 1


async def test_votes_and_acceptance_follow_the_rules(shared_stack: Stack) -> None:
    club = await open_club(shared_stack)
    asker, helper, voter = [await member(shared_stack, club) for _ in range(3)]
    qid = (await ask(shared_stack, club, asker))["question_id"]
    first = ok(await answer(shared_stack, club.retailer.acting_for(helper), qid, "Yes."), 201)
    second = ok(await answer(shared_stack, club.retailer.acting_for(voter), qid, "No."), 201)
    vote_path = "/v1/answers/{answer_id}:vote"

    async def vote(party: str, answer_id: str) -> httpx.Response:
        headers = club.retailer.acting_for(party)
        return await call(shared_stack, "POST", vote_path, headers=headers, json={"helpful": True}, answer_id=answer_id)

    assert "own answer" in problem(await vote(helper, first["answer_id"]), 422)["detail"]
    ok(await vote(voter, first["answer_id"]))
    assert "already" in problem(await vote(voter, first["answer_id"]), 409)["detail"]
    outsider = await shared_stack.person(customer_of=club.retailer.id)
    problem(await vote(outsider, first["answer_id"]), 403)
    wrong_type = await call(
        shared_stack,
        "POST",
        vote_path,
        headers=club.retailer.acting_for(asker),
        json={"helpful": "very"},
        answer_id=first["answer_id"],
    )
    assert fields(problem(wrong_type, 400)) == {"helpful"}

    accept_path = "/v1/answers/{answer_id}:accept"

    async def accept(party: str, answer_id: str) -> httpx.Response:
        headers = club.retailer.acting_for(party)
        return await call(shared_stack, "POST", accept_path, headers=headers, json={}, answer_id=answer_id)

    assert "only the asker" in problem(await accept(voter, first["answer_id"]), 403)["detail"]
    ok(await accept(asker, first["answer_id"]))
    problem(await accept(asker, first["answer_id"]), 409)
    assert "accepted answer already" in problem(await accept(asker, second["answer_id"]), 422)["detail"]
    assert (await get_question(shared_stack, club.maker, qid))["accepted_answer_id"] == first["answer_id"]


async def test_an_unanswered_question_is_escalated_to_the_maker(shared_stack: Stack) -> None:
    club = await open_club(shared_stack)
    asker = await member(shared_stack, club)
    question = await ask(shared_stack, club, asker)
    # Escalation waits 48 hours in this stack's settings: the job runs once here on a clock 3 days
    # ahead, as the service's own tests move its clock. There is no route that escalates.
    community = shared_stack.services["community"]
    assert community.runtime is not None
    job = Escalation(
        community.runtime.db,
        lambda: datetime.now(UTC) + timedelta(days=3),
        timedelta(hours=48),
        poll_seconds=60,
        batch_size=100,
    )
    while await job.escalate_due() == 100:
        pass
    path = "/v1/partners/{maker_id}/escalated-questions"
    escalated = ok(await call(shared_stack, "GET", path, headers=club.maker.auth, maker_id=club.maker.id))
    assert [(q["question_id"], q["maker_id"]) for q in escalated["questions"]] == [
        (question["question_id"], club.maker.id)
    ]
    assert escalated["questions"][0]["escalate_time"]
    ok(await answer(shared_stack, club.maker.auth, question["question_id"], "Steel, all of it."), 201)
    assert ok(await call(shared_stack, "GET", path, headers=club.maker.auth, maker_id=club.maker.id))["questions"] == []
    answered = ok(
        await call(
            shared_stack,
            "GET",
            path,
            headers=club.maker.auth,
            params={"include_answered": True},
            maker_id=club.maker.id,
        )
    )
    assert [q["answer_count"] for q in answered["questions"]] == [1]
    # Another partner does not read the maker's escalations.
    refused = await call(shared_stack, "GET", path, headers=club.retailer.auth, maker_id=club.maker.id)
    assert club.maker.id in problem(refused, 403)["detail"]


# --- reputation -----------------------------------------------------------------------------------------


async def test_an_accepted_answer_earns_points_a_rank_and_badges(shared_stack: Stack) -> None:
    club = await open_club(shared_stack)
    owner = await member(shared_stack, club, bought=True)
    asker = await member(shared_stack, club)
    qid = (await ask(shared_stack, club, asker))["question_id"]
    given = ok(await answer(shared_stack, club.retailer.acting_for(owner), qid, "All steel."), 201)
    await call(
        shared_stack,
        "POST",
        "/v1/answers/{answer_id}:accept",
        headers=club.retailer.acting_for(asker),
        json={},
        answer_id=given["answer_id"],
    )
    anyone = await shared_stack.partner()
    earned = await reputation_of(shared_stack, anyone.auth, owner)
    assert (earned["party_id"], earned["points"], earned["rank"]) == (owner, 30, "contributor")
    assert (earned["next_rank"], earned["points_to_next_rank"]) == ("regular", 70)
    assert [b["kind"] for b in earned["badges"]] == ["owner", "accepted_answers"]
    assert earned["badges"][1]["label"] == "1 accepted answer"
    path = "/v1/parties/{party_id}/reputation/entries"
    ledger = ok(await call(shared_stack, "GET", path, headers=club.retailer.acting_for(owner), party_id=owner))
    assert [(e["reason"], e["delta"], e["subject_id"]) for e in ledger["entries"]] == [
        ("answer_accepted", 25, given["answer_id"]),
        ("answer_posted", 5, given["answer_id"]),
    ]
    newcomer = await reputation_of(shared_stack, anyone.auth, asker)
    assert (newcomer["points"], newcomer["rank"], newcomer["badges"]) == (0, "newcomer", [])


async def test_a_partys_ledger_is_its_own(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    party = await shared_stack.person(customer_of=partner.id)
    other = await shared_stack.person(customer_of=partner.id)
    path = "/v1/parties/{party_id}/reputation/entries"
    refused = await call(shared_stack, "GET", path, headers=partner.acting_for(other), party_id=party)
    assert party in problem(refused, 403)["detail"]
    problem(await call(shared_stack, "GET", path, headers=partner.auth, party_id=party), 403)
    # Reputation is public, but the gateway still refuses to act for someone who is not the partner's.
    stranger_partner = await shared_stack.partner()
    acting = await call(
        shared_stack,
        "GET",
        "/v1/parties/{party_id}/reputation",
        headers=stranger_partner.acting_for(party),
        party_id=party,
    )
    problem(acting, 403)


# --- ideas ----------------------------------------------------------------------------------------------


async def test_members_submit_vote_and_withdraw_votes_on_ideas(shared_stack: Stack) -> None:
    club = await open_club(shared_stack)
    submitter, voter = await member(shared_stack, club), await member(shared_stack, club)
    idea = await submit_idea(shared_stack, club, submitter)
    assert (idea["community_id"], idea["submitter_id"], idea["product_id"]) == (club.id, submitter, club.product_id)
    assert (idea["status"], idea["vote_count"], idea["promoted_by"]) == ("new", 0, [])
    community_idea = await submit_idea(shared_stack, club, voter, product=False)
    assert community_idea["product_id"] == ""
    voted = ok(await idea_action(shared_stack, "vote", idea["idea_id"], club.retailer.acting_for(voter)))
    assert voted["vote_count"] == 1
    anyone = await shared_stack.partner()
    read = ok(await call(shared_stack, "GET", "/v1/ideas/{idea_id}", headers=anyone.auth, idea_id=idea["idea_id"]))
    assert (read["title"], read["vote_count"]) == ("A wider lid", 1)

    async def listed(**params: Any) -> list[str]:
        response = await call(
            shared_stack, "GET", "/v1/ideas", headers=anyone.auth, params={"community_id": club.id} | params
        )
        return [i["idea_id"] for i in ok(response)["ideas"]]

    assert await listed() == [idea["idea_id"], community_idea["idea_id"]]
    assert await listed(order="newest") == [community_idea["idea_id"], idea["idea_id"]]
    assert await listed(status="new", page_size=1) == [idea["idea_id"]]
    assert await listed(status="planned") == []
    withdrawn = ok(await idea_action(shared_stack, "withdrawVote", idea["idea_id"], club.retailer.acting_for(voter)))
    assert withdrawn["vote_count"] == 0
    # Without votes, the newer idea tops the list.
    assert await listed(order="top") == [community_idea["idea_id"], idea["idea_id"]]


async def test_ideas_are_for_members_and_votes_follow_the_rules(shared_stack: Stack) -> None:
    club = await open_club(shared_stack)
    submitter, voter = await member(shared_stack, club), await member(shared_stack, club)
    outsider = await shared_stack.person(customer_of=club.retailer.id)
    body = {"community_id": club.id, "title": "A wider lid", "description": "Wide enough to descale."}
    not_member = await call(shared_stack, "POST", "/v1/ideas", headers=club.retailer.acting_for(outsider), json=body)
    assert "join it first" in problem(not_member, 403)["detail"]
    invalid = await call(
        shared_stack,
        "POST",
        "/v1/ideas",
        headers=club.retailer.acting_for(submitter),
        json={"title": "Hi", "description": " "},
    )
    assert fields(problem(invalid, 400)) == {"community_id", "title", "description"}
    idea = await submit_idea(shared_stack, club, submitter)
    own = await idea_action(shared_stack, "vote", idea["idea_id"], club.retailer.acting_for(submitter))
    assert "own idea" in problem(own, 422)["detail"]
    ok(await idea_action(shared_stack, "vote", idea["idea_id"], club.retailer.acting_for(voter)))
    twice = await idea_action(shared_stack, "vote", idea["idea_id"], club.retailer.acting_for(voter))
    problem(twice, 409)
    problem(await idea_action(shared_stack, "vote", idea["idea_id"], club.retailer.acting_for(outsider)), 403)
    never_voted = await idea_action(shared_stack, "withdrawVote", idea["idea_id"], club.retailer.acting_for(submitter))
    assert "has not voted" in problem(never_voted, 404)["detail"]
    problem(await call(shared_stack, "GET", "/v1/ideas/{idea_id}", headers=club.maker.auth, idea_id="nope"), 404)
    for params, expected in (({}, {"community_id"}), ({"community_id": club.id, "order": "best"}, {"order"})):
        response = await call(shared_stack, "GET", "/v1/ideas", headers=club.maker.auth, params=params)
        assert fields(problem(response, 400)) == expected
    problem(await call(shared_stack, "GET", "/v1/ideas", headers=club.maker.auth, params={"community_id": "x"}), 404)
    assert (
        ok(await call(shared_stack, "GET", "/v1/ideas/{idea_id}", headers=club.maker.auth, idea_id=idea["idea_id"]))[
            "vote_count"
        ]
        == 1
    )


async def test_the_partner_moves_an_idea_and_the_submitter_and_voters_are_notified(shared_stack: Stack) -> None:
    club = await open_club(shared_stack)
    submitter, voter = await member(shared_stack, club), await member(shared_stack, club)
    idea = await submit_idea(shared_stack, club, submitter)
    await idea_action(shared_stack, "vote", idea["idea_id"], club.retailer.acting_for(voter))
    planned = ok(
        await idea_action(
            shared_stack, "changeStatus", idea["idea_id"], club.retailer.auth, status="planned", note="Next revision"
        )
    )
    assert (planned["status"], planned["status_note"]) == ("planned", "Next revision")
    assert planned["status_time"] >= idea["status_time"]
    for party in (submitter, voter):
        told = await notifications(shared_stack, club, party, unread_only=True)
        assert [(n["kind"], n["idea_id"]) for n in told] == [("idea_status_changed", idea["idea_id"])]
        assert "Next revision" in told[0]["message"]
        assert "read_time" not in told[0]
    # A moderator may move ideas too.
    moderator = await member(shared_stack, club)
    await call(
        shared_stack,
        "POST",
        "/v1/communities/{community_id}/members/{party_id}:setRole",
        headers=club.retailer.auth,
        json={"role": "moderator"},
        community_id=club.id,
        party_id=moderator,
    )
    started = ok(
        await idea_action(
            shared_stack, "changeStatus", idea["idea_id"], club.retailer.acting_for(moderator), status="in_progress"
        )
    )
    assert started["status"] == "in_progress"
    assert len(await notifications(shared_stack, club, submitter)) == 2


async def test_idea_statuses_are_moved_by_the_partner_or_moderators_along_the_workflow(shared_stack: Stack) -> None:
    club = await open_club(shared_stack)
    submitter = await member(shared_stack, club)
    idea = await submit_idea(shared_stack, club, submitter)
    idea_id = idea["idea_id"]
    by_member = await idea_action(
        shared_stack, "changeStatus", idea_id, club.retailer.acting_for(submitter), status="planned"
    )
    assert "moderators" in problem(by_member, 403)["detail"]
    other = await shared_stack.partner()
    problem(await idea_action(shared_stack, "changeStatus", idea_id, other.auth, status="planned"), 403)
    skipping = await idea_action(shared_stack, "changeStatus", idea_id, club.retailer.auth, status="done")
    assert "may move to" in problem(skipping, 422)["detail"]
    same = await idea_action(shared_stack, "changeStatus", idea_id, club.retailer.auth, status="new")
    problem(same, 422)
    problem(await idea_action(shared_stack, "changeStatus", idea_id, club.retailer.auth), 400)
    bad = await idea_action(shared_stack, "changeStatus", idea_id, club.retailer.auth, status="shipped")
    assert fields(problem(bad, 400)) == {"status"}
    long_note = await idea_action(
        shared_stack, "changeStatus", idea_id, club.retailer.auth, status="planned", note="x" * 1001
    )
    assert fields(problem(long_note, 400)) == {"note"}
    problem(await idea_action(shared_stack, "changeStatus", "nope", club.retailer.auth, status="planned"), 404)
    assert (
        ok(await call(shared_stack, "GET", "/v1/ideas/{idea_id}", headers=other.auth, idea_id=idea_id))["status"]
        == "new"
    )


async def test_the_maker_promotes_a_product_idea_into_its_improvement_program(shared_stack: Stack) -> None:
    club = await open_club(shared_stack)
    submitter, voter = await member(shared_stack, club), await member(shared_stack, club)
    idea = await submit_idea(shared_stack, club, submitter)
    await idea_action(shared_stack, "vote", idea["idea_id"], club.retailer.acting_for(voter))
    promoted = ok(await idea_action(shared_stack, "promote", idea["idea_id"], club.maker.auth))
    assert promoted["promoted_by"] == [club.maker.id]
    both = ok(
        await idea_action(shared_stack, "promote", idea["idea_id"], club.retailer.auth, partner_id=club.retailer.id)
    )
    assert both["promoted_by"] == [club.maker.id, club.retailer.id]
    read = ok(await call(shared_stack, "GET", "/v1/ideas/{idea_id}", headers=club.maker.auth, idea_id=idea["idea_id"]))
    assert sorted(read["promoted_by"]) == sorted([club.maker.id, club.retailer.id])
    # The submitter earns points for the first promotion only; submitter and voter hear of both.
    earned = await reputation_of(shared_stack, club.maker.auth, submitter)
    assert earned["points"] == 50
    assert [b["kind"] for b in earned["badges"]] == ["promoted_ideas"]
    told = await notifications(shared_stack, club, voter)
    assert [n["kind"] for n in told] == ["idea_promoted", "idea_promoted"]


async def test_promoting_is_once_per_partner_by_its_runner_maker_or_sellers_and_not_when_declined(
    shared_stack: Stack,
) -> None:
    club = await open_club(shared_stack)
    submitter = await member(shared_stack, club)
    idea = await submit_idea(shared_stack, club, submitter)
    ok(await idea_action(shared_stack, "promote", idea["idea_id"], club.maker.auth))
    twice = await idea_action(shared_stack, "promote", idea["idea_id"], club.maker.auth)
    assert "already" in problem(twice, 409)["detail"]
    unrelated = await shared_stack.partner()
    refused = await idea_action(shared_stack, "promote", idea["idea_id"], unrelated.auth)
    assert "neither runs" in problem(refused, 403)["detail"]
    for_other = await idea_action(shared_stack, "promote", idea["idea_id"], unrelated.auth, partner_id=club.maker.id)
    problem(for_other, 403)
    community_idea = await submit_idea(shared_stack, club, submitter, product=False)
    ok(
        await idea_action(
            shared_stack, "changeStatus", community_idea["idea_id"], club.retailer.auth, status="declined"
        )
    )
    declined = await idea_action(shared_stack, "promote", community_idea["idea_id"], club.retailer.auth)
    assert "declined" in problem(declined, 422)["detail"]
    problem(await idea_action(shared_stack, "promote", "nope", club.maker.auth), 404)


# --- notifications --------------------------------------------------------------------------------------


async def test_a_party_marks_its_notifications_read(shared_stack: Stack) -> None:
    club = await open_club(shared_stack)
    asker, helper = await member(shared_stack, club), await member(shared_stack, club)
    first = await ask(shared_stack, club, asker, "Is it loud?")
    second = await ask(shared_stack, club, asker, "Is it heavy?")
    for question in (first, second):
        ok(await answer(shared_stack, club.retailer.acting_for(helper), question["question_id"], "Not at all."), 201)
    told = await notifications(shared_stack, club, asker)
    assert [n["question_id"] for n in told] == [second["question_id"], first["question_id"]]
    path = "/v1/parties/{party_id}/community-notifications:markRead"
    headers = club.retailer.acting_for(asker)
    one = ok(
        await call(
            shared_stack,
            "POST",
            path,
            headers=headers,
            json={"notification_ids": [told[1]["notification_id"]]},
            party_id=asker,
        )
    )
    assert one["marked"] == 1
    unread = await notifications(shared_stack, club, asker, unread_only=True)
    assert [n["notification_id"] for n in unread] == [told[0]["notification_id"]]
    rest = ok(await call(shared_stack, "POST", path, headers=headers, json={}, party_id=asker))
    assert rest["marked"] == 1
    assert await notifications(shared_stack, club, asker, unread_only=True) == []
    every = await notifications(shared_stack, club, asker)
    assert all(n["read_time"] for n in every)


async def test_notifications_are_read_and_marked_by_their_party_only(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    party = await shared_stack.person(customer_of=partner.id)
    other = await shared_stack.person(customer_of=partner.id)
    listed = await call(
        shared_stack,
        "GET",
        "/v1/parties/{party_id}/community-notifications",
        headers=partner.acting_for(other),
        party_id=party,
    )
    assert party in problem(listed, 403)["detail"]
    marked = await call(
        shared_stack,
        "POST",
        "/v1/parties/{party_id}/community-notifications:markRead",
        headers=partner.auth,
        json={},
        party_id=party,
    )
    problem(marked, 403)
    ill_typed = await call(
        shared_stack,
        "POST",
        "/v1/parties/{party_id}/community-notifications:markRead",
        headers=partner.acting_for(party),
        json={"notification_ids": "all"},
        party_id=party,
    )
    assert fields(problem(ill_typed, 400)) == {"notification_ids"}


# --- coverage -------------------------------------------------------------------------------------------


async def test_every_community_route_was_exercised_on_success_and_on_error(shared_stack: Stack) -> None:
    """Runs last: the tests above called every route of community, each with success and with a refusal."""
    assert_routes_exercised(shared_stack, "community")
