"""The closed loop end to end: nats-server, the five services and the gateway as separate processes,
started by the runner ``make run`` uses, each on its own database (SQLite, and PostgreSQL when
configured), driven through the gateway only; then the review's trace, read from the span files
every process wrote, across the gateway, reviews, NATS and improvement."""

from __future__ import annotations

import time
from pathlib import Path

from collabnet_cli import operator
from collabnet_cli.gateway import Caller, Gateway, WebhookEndpoint
from collabnet_cli.stack import Stack
from collabnet_cli.story import CASE_OPENED, OBJECTIVE, ClosedLoop
from collabnet_cli.traces import Span, read_spans
from collabnet_gateway.domain import verify
from collabnet_kit.testing import eventually


async def test_the_closed_loop_through_the_gateway_in_one_trace(stack: Stack) -> None:
    key = await operator.ensure_operator(stack.state_dir, stack.address("identity"))
    with WebhookEndpoint() as webhooks:
        async with Gateway(f"http://{stack.address('gateway')}") as gateway:
            loop = ClosedLoop(gateway, Caller(key.partner_id, key.secret), webhooks)
            await the_story_holds(loop)
    await the_review_is_one_trace_across_processes(stack.state_dir, loop)
    # The operator's key is kept for the next start, not made again.
    assert await operator.ensure_operator(stack.state_dir, stack.address("identity")) == key


async def the_story_holds(loop: ClosedLoop) -> None:
    gateway = loop.gateway

    # 1. R and M join; M's product P, listed by R, with a bill of materials and a supplier.
    await loop.join()
    kinds = {
        letter: (await gateway.get(loop.operator, f"/v1/partners/{p.partner_id}"))["kinds"]
        for letter, p in loop.partners.items()
    }
    assert kinds == {"R": ["retailer"], "M": ["manufacturer"], "S": ["supplier"], "K": ["carrier"]}
    await loop.catalog()
    product = loop.ids["P"]
    bom = await gateway.get(loop.maker, f"/v1/products/{product}/structure")
    assert [(i["component_id"], i["supplier_id"]) for i in bom["items"]] == [
        (loop.ids["seal"], loop.supplier.partner_id)
    ]
    listings = await gateway.get(loop.retailer, "/v1/listings", product_id=product)
    assert [(x["retailer_id"], x["available"]) for x in listings["listings"]] == [(loop.retailer.partner_id, True)]

    # 2. C, a customer of R, reads P's page (B, who bought P before, reviewed it).
    await loop.customers()
    roles = await gateway.get(loop.customer, f"/v1/parties/{loop.ids['C']}/roles")
    assert loop.retailer.partner_id in str(roles.body)
    await loop.earlier_buyer()
    await loop.read_page()
    page = loop.seen["page"]
    assert page["product"]["product_id"] == product
    assert [x["retailer_id"] for x in page["listings"]] == [loop.retailer.partner_id]
    assert (page["reviews"]["summary"]["count"], page["reviews"]["summary"]["mean"]) == (1, 5.0)
    assert page["degraded"] == []

    # 3. C asks; B, an earlier buyer, answers as a verified owner; C orders and it is delivered.
    await loop.ask()
    assert loop.seen["answer"]["verified_owner"] is True
    question = await gateway.get(loop.customer, f"/v1/questions/{loop.ids['question']}")
    assert [(a["answerer_id"], a["verified_owner"]) for a in question["top_answers"]] == [(loop.ids["B"], True)]
    await loop.buy()
    order = loop.seen["order"]
    assert (order["customer_id"], order["retailer_id"], order["status"]) == (
        loop.ids["C"],
        loop.retailer.partner_id,
        "delivered",
    )

    # 4. C's 2-star review opens a case for M and R, by itself; R's webhook hears of it.
    await loop.review()
    case = loop.seen["case_opened"]
    assert (case["review_id"], case["customer_id"], case["opening_rating"], case["state"]) == (
        loop.ids["review"],
        loop.ids["C"],
        2,
        "open",
    )
    assert {(a["partner_id"], a["role"]) for a in case["assignments"]} == {
        (loop.maker.partner_id, "maker"),
        (loop.retailer.partner_id, "retailer"),
    }
    delivery = next(d for d in loop.webhooks.deliveries if d.event["type"] == CASE_OPENED)
    assert delivery.event["data"]["case_id"] == loop.ids["case"]
    signature = delivery.headers["x-collabnet-signature"]
    assert verify(loop.seen["webhook_secret"], signature, delivery.body, int(time.time()))

    # 5. M engages C, invites C to co-design, opens an initiative linked to the case with the objective.
    loop.seen["engage_trace"] = (await loop.engage()).trace_id
    engaged = await gateway.get(loop.maker, f"/v1/cases/{loop.ids['case']}/record")
    assert engaged["state"] == "engaged"
    assert engaged["co_design_participants"] == [loop.ids["C"]]
    initiative = await gateway.get(loop.retailer, f"/v1/initiatives/{loop.ids['initiative']}")  # R: a stakeholder
    assert initiative["case_ids"] == [loop.ids["case"]]
    (objective,) = initiative["objectives"]
    assert (objective["description"], objective["metric"]["kind"], objective["target"]) == (
        OBJECTIVE,
        "product_average_rating",
        4.2,
    )
    assert objective["current"] == 3.5  # B's 5 stars and C's 2

    # 6. The case is resolved and C gets the one neutral invitation to update the review.
    await loop.resolve()
    assert loop.seen["resolved"]["state"] == "resolved"
    invitation = loop.seen["update_invitation"]
    assert (invitation["case_id"], invitation["review_id"]) == (loop.ids["case"], loop.ids["review"])
    assert "nothing depends on whether or how you change it" in invitation["body"]

    # C revises to 4 stars: recovered, the objective moves (and is met), C's reputation grows.
    await loop.revise()
    assert loop.seen["case_recovered"]["outcome"] == "recovered"
    after = loop.seen["objective_after"]
    assert after["current"] == 4.5 and after["met_time"]
    assert loop.seen["reputation_after"]["points"] > loop.seen["reputation_before"]["points"]
    review = await gateway.get(loop.customer, f"/v1/reviews/{loop.ids['review']}")
    assert (review["rating"], review["version"]) == (4, 2)


async def the_review_is_one_trace_across_processes(state_dir: Path, loop: ClosedLoop) -> None:
    """The request that submitted the review, reviews' handling of it, the NATS publish and
    improvement's opening of the case: one trace, each span the child of the one before, each
    carrying the partner that acted (R, writing for C)."""
    trace_id = loop.seen["review_trace"]
    partner = loop.retailer.partner_id

    def spans() -> list[Span]:
        return [s for s in read_spans(state_dir) if s.trace_id == trace_id]

    async def complete() -> list[Span] | None:
        found = spans()
        opened = [s for s in found if s.attributes.get("collabnet.case.id") == loop.ids["case"]]
        return found if opened else None

    found: list[Span] = await eventually(complete, timeout=20)  # span files are written every second

    def one(service: str, kind: str, name: str, parent: Span | None) -> Span:
        matching = [s for s in found if (s.service, s.kind) == (service, kind) and s.name.endswith(name)]
        assert len(matching) == 1, [(s.service, s.kind, s.name) for s in found]
        span = matching[0]
        assert span.parent_id == (parent.span_id if parent else None), (span, parent)
        assert span.partner == partner, span
        return span

    request = one("gateway", "server", "POST /v1/reviews", None)
    assert request.attributes["collabnet.acts_for"] == loop.ids["C"]
    call = one("gateway", "client", "ReviewsService/SubmitReview", request)
    handling = one("reviews", "server", "ReviewsService/SubmitReview", call)
    publish = one("reviews", "producer", "collabnet.reviews.v1.ReviewPublished publish", handling)
    case = one("improvement", "consumer", "collabnet.reviews.v1.ReviewPublished process", publish)
    assert case.attributes["collabnet.case.id"] == loop.ids["case"]
    assert request.start <= call.start <= handling.start <= publish.start <= case.start
    assert {s.service for s in found} >= {"gateway", "reviews", "improvement", "identity", "community"}

    # M's steps are M's: every span of the trace of M engaging C carries M's id.
    engaged = [s for s in read_spans(state_dir) if s.trace_id == loop.seen["engage_trace"]]
    assert engaged and {s.partner for s in engaged if s.partner} == {loop.maker.partner_id}
