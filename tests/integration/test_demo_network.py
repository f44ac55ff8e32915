"""The demo network ``collabnet up`` loads, against the whole system as separate processes: it is
what it says it is, seen through the gateway by the partners in it, and a second start reads it
back from ``demo.json`` instead of loading it again."""

from __future__ import annotations

import asyncio
import json
import stat
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from collabnet_cli import demo_network
from collabnet_cli.demo_network import DemoNetwork
from collabnet_cli.gateway import Caller, Gateway
from collabnet_cli.operator import ensure_operator
from collabnet_cli.stack import Component, Stack, installed_components
from collabnet_kit.nats_server import free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

SERVICES = {"identity", "supplychain", "reviews", "community", "improvement", "analytics", "gateway"}


@dataclass
class Loaded:
    state_dir: Path
    gateway_url: str
    operator: Caller
    gateway: Gateway
    network: DemoNetwork

    def partner(self, partner_id: str) -> Caller:
        return next(p.caller for p in self.network.partners if p.partner_id == partner_id)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def loaded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Loaded]:
    """The whole stack on free ports, with the demo network loaded into it once for the module."""
    state_dir = tmp_path_factory.mktemp("demo")
    components = [Component(c.name, c.module, free_port(), c.protocol, c.env) for c in installed_components()]
    assert {c.name for c in components} == SERVICES
    stack = Stack(state_dir, components, nats_port=free_port())
    try:
        await stack.up()
        by_name = {c.name: c for c in components}
        key = await ensure_operator(state_dir, by_name["identity"].address)
        operator = Caller(key.partner_id, key.secret)
        gateway_url = f"http://{by_name['gateway'].address}"
        network = await demo_network.ensure(state_dir, gateway_url, operator)
        async with Gateway(gateway_url) as gateway:
            yield Loaded(state_dir, gateway_url, operator, gateway, network)
    finally:
        await stack.down()


async def all_pages(gateway: Gateway, caller: Caller, path: str, field: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    token = ""
    while True:
        reply = await gateway.get(caller, path, page_size=100, page_token=token, **params)
        items += reply[field]
        token = reply.body.get("next_page_token", "")
        if not token:
            return items


async def test_the_network_is_kept_in_a_file_only_its_owner_may_read(loaded: Loaded) -> None:
    path = loaded.state_dir / "demo.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kept = json.loads(path.read_text())
    assert [p["key"] for p in kept["partners"]] == [p.key for p in loaded.network.partners]


async def test_partners_of_each_kind_joined_with_keys_that_work(loaded: Loaded) -> None:
    network = loaded.network
    assert Counter(p.kind for p in network.partners) == {
        "retailer": 3,
        "manufacturer": 3,
        "supplier": 3,
        "carrier": 2,
    }
    for partner in network.partners:
        seen = await loaded.gateway.get(partner.caller, f"/v1/partners/{partner.partner_id}")
        assert seen["display_name"] == partner.name
    # Suppliers supply the makers, carriers carry for the retailers: public, so anyone sees them.
    supplier, maker = network.partner("sealco"), network.partner("kettlo")
    supplies = await loaded.gateway.get(
        loaded.operator, f"/v1/parties/{supplier.partner_id}/relationships", types="supplier_of"
    )
    assert maker.partner_id in {r["to_party_id"] for r in supplies["relationships"]}
    carrier, retailer = network.partner("swift"), network.try_retailer
    carries = await loaded.gateway.get(
        loaded.operator, f"/v1/parties/{carrier.partner_id}/relationships", types="carrier_for"
    )
    assert retailer.partner_id in {r["to_party_id"] for r in carries["relationships"]}


async def test_fifty_consumers_each_relate_to_partners_in_at_least_two_roles(loaded: Loaded) -> None:
    consumers = loaded.network.consumers
    assert len(consumers) == 50
    assert len({c.name for c in consumers}) == 50

    async def roles_of(consumer: demo_network.DemoConsumer) -> list[str]:
        # The retailer acting for the consumer sees all of the consumer's relationships.
        retailer = loaded.partner(consumer.retailer_ids[0]).for_party(consumer.party_id)
        seen = await loaded.gateway.get(retailer, f"/v1/parties/{consumer.party_id}/roles")
        return [role["role"] for partner in seen["partners"] for role in partner["roles"]]

    roles = await asyncio.gather(*(roles_of(c) for c in consumers))
    for consumer, theirs in zip(consumers, roles, strict=True):
        assert len(theirs) >= 2, consumer
        assert len(theirs) == len(consumer.roles), (consumer, theirs)
        assert 2 <= theirs.count("customer_of") <= 3, (consumer, theirs)
    every = Counter(role for theirs in roles for role in theirs)
    assert every["employee_of"] >= 3 and every["advocate_of"] >= 1 and every["member_of"] >= 5, every


async def test_finished_goods_have_bills_of_materials_and_lots_built_from_component_lots(loaded: Loaded) -> None:
    products = loaded.network.products
    finished = [p for p in products if p.kind == "finished_good"]
    component_lots = {lot for p in products if p.kind == "component" for lot in p.lot_ids}
    assert len(finished) == 8 and len(products) - len(finished) >= 9
    suppliers = {p.partner_id for p in loaded.network.of_kind("supplier")}
    for product in finished:
        maker = loaded.partner(product.maker_id)
        bom = await loaded.gateway.get(maker, f"/v1/products/{product.product_id}/structure")
        assert [i["component_id"] for i in bom["items"]] == product.component_ids
        assert {i["supplier_id"] for i in bom["items"]} <= suppliers
        assert product.lot_ids and product.listing_ids, product
        for lot_id in product.lot_ids:
            lot = await loaded.gateway.get(maker, f"/v1/lots/{lot_id}")
            assert lot["product_id"] == product.product_id
            assert len(lot["inputs"]) == len(product.component_ids)
            assert {i["lot_id"] for i in lot["inputs"]} <= component_lots


async def test_orders_are_delivered_on_their_way_or_just_placed(loaded: Loaded) -> None:
    orders = loaded.network.orders
    expected = Counter(o.status for o in orders)
    assert expected["delivered"] >= 20 and expected["shipped"] >= 5 and expected["placed"] >= 5, expected
    seen: Counter[str] = Counter()
    for retailer in loaded.network.of_kind("retailer"):
        listed = await all_pages(
            loaded.gateway, retailer.caller, "/v1/orders", "orders", retailer_id=retailer.partner_id
        )
        seen.update(o["status"] for o in listed)
    assert seen == expected


async def test_buyers_reviews_make_rating_summaries_and_bad_ones_opened_cases(loaded: Loaded) -> None:
    network = loaded.network
    reviews = network.reviews
    assert len(reviews) >= 25
    assert {r.rating for r in reviews} >= {2, 3, 4, 5}
    per_product = Counter(r.product_id for r in reviews)
    for product in network.products:
        if product.product_id not in per_product:
            continue
        summary = await loaded.gateway.get(
            network.try_retailer.caller, f"/v1/products/{product.product_id}/rating-summary"
        )
        assert summary["count"] == per_product[product.product_id], product
        ratings = [r.rating for r in reviews if r.product_id == product.product_id]
        assert summary["mean"] == pytest.approx(sum(ratings) / len(ratings))
    bad = {r.review_id: r for r in reviews if r.rating <= 2}
    assert bad and len(network.case_ids) == len(bad)
    maker_of = {p.product_id: p.maker_id for p in network.products}
    cases: dict[str, dict[str, Any]] = {}
    for retailer in network.of_kind("retailer"):
        listed = await all_pages(loaded.gateway, retailer.caller, "/v1/cases", "cases")
        cases |= {c["review_id"]: c for c in listed}
    for review_id, review in bad.items():
        case = cases[review_id]  # opened by the review itself: nobody asked for it
        assert case["case_id"] in network.case_ids
        assert (case["customer_id"], case["opening_rating"]) == (review.author_id, review.rating)
        assert {a["partner_id"] for a in case["assignments"]} == {review.retailer_id, maker_of[review.product_id]}
    assert set(cases) == set(bad)


async def test_communities_have_members_questions_answers_and_ideas_with_votes(loaded: Loaded) -> None:
    network = loaded.network
    assert len(network.communities) == 4
    for community in network.communities:
        members = await all_pages(
            loaded.gateway,
            loaded.partner(community.partner_id),
            f"/v1/communities/{community.community_id}/members",
            "memberships",
        )
        assert sorted(m["party_id"] for m in members) == sorted(community.member_ids)
        assert len(members) >= 10
    assert len(network.questions) >= 6
    for question in network.questions:
        seen = await loaded.gateway.get(network.try_retailer.caller, f"/v1/questions/{question.question_id}")
        assert seen["answer_count"] == len(question.answer_ids) >= 1
        assert any(a["official"] for a in seen["top_answers"])
    assert any(len(q.answer_ids) == 2 for q in network.questions)
    assert network.ideas
    for idea in network.ideas:
        seen = await loaded.gateway.get(network.try_retailer.caller, f"/v1/ideas/{idea.idea_id}")
        assert seen["vote_count"] == len(idea.voter_ids) >= 3


async def test_the_summary_offers_a_retailer_key_that_works(loaded: Loaded) -> None:
    network = loaded.network
    lines = network.summary()
    assert any("50 consumers" in line for line in lines)
    assert network.try_key in lines[-1]
    path = lines[-1].split(loaded.gateway_url, 1)[1]
    page = await loaded.gateway.get(Caller(network.try_retailer.partner_id, network.try_key), path)
    assert page["product"]["product_id"] in {p.product_id for p in network.products}
    assert page["reviews"]["summary"]["count"] >= 1


async def test_a_second_start_reads_the_network_back_without_loading_it_again(loaded: Loaded) -> None:
    before = await all_pages(loaded.gateway, loaded.operator, "/v1/partners", "partners")
    again = await demo_network.ensure(loaded.state_dir, loaded.gateway_url, loaded.operator)
    assert again == loaded.network
    after = await all_pages(loaded.gateway, loaded.operator, "/v1/partners", "partners")
    assert len(after) == len(before)
