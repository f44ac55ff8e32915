"""Poison events: a message that cannot be decoded and an event a handler always fails on end on the
dead-letter stream with their errors, while the consumers go on with the rest of the traffic;
``collabnet deadletter list`` shows them and ``collabnet deadletter replay`` re-drives them.

The whole stack runs as separate processes. Real reviews go through the gateway while two poison
events are published on the subject they travel on (``collabnet.reviews.v1.ReviewPublished``, read
by improvement, community and analytics), with proper CloudEvents headers:

- *undecodable*: a payload that is not a ``ReviewPublished`` at all. Every consumer of the subject
  dead-letters it at its first delivery.
- *impossible*: a well-formed ``ReviewPublished`` of a real product, author and retailer whose
  rating was left unset (0). Improvement refuses a rating outside 1 to 5 at every delivery and
  dead-letters it after the last one; community and the gateway handle it.

No consumer's handler calls another service (each writes only to its own database), so no handler
fails for a cause that can go away (a dependency that is down and comes back): the failures that
exist are events that are wrong. Replayed, both fail again at improvement and are dead-lettered
anew at once (not lost), and the consumers that had handled the impossible event skip it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from collabnet.reviews.v1.events_pb2 import ReviewPublished
from collabnet_cli import deadletter, operator
from collabnet_cli.gateway import Caller, Gateway, eventually_created, join, until
from collabnet_cli.stack import Stack
from collabnet_kit.bus import Bus, cloudevent_headers, stream_name
from collabnet_kit.outbox import new_event_id

if TYPE_CHECKING:
    from tests.reliability.conftest import Sizes

MAX_DELIVERIES = 3
BACKOFF_SECONDS = 0.1
SUBJECT = ReviewPublished.DESCRIPTOR.full_name
READERS = ("analytics", "community", "improvement")
"""The durable consumers of the reviews stream that take ``ReviewPublished``."""
CASE_AT_MOST = 2
"""The highest rating that opens a case (the default case policy)."""
WAIT = 60.0


@pytest.fixture
def component_env() -> Callable[[], dict[str, str]]:
    """Few, quick redeliveries: a failing event reaches the dead-letter stream in well under a second."""
    return lambda: {
        "COLLABNET_CONSUMER_MAX_DELIVERIES": str(MAX_DELIVERIES),
        "COLLABNET_CONSUMER_BACKOFF_SECONDS": str(BACKOFF_SECONDS),
    }


@dataclass(frozen=True)
class Shop:
    """A retailer selling one maker's product to its customers (it acts for them)."""

    retailer: Caller
    product: str
    customers: list[str]

    def customer(self, party_id: str) -> Caller:
        return self.retailer.for_party(party_id)


async def open_shop(gateway: Gateway, operator_key: Caller, customers: int) -> Shop:
    maker = await join(gateway, operator_key, "Poison Maker", ["manufacturer"])
    retailer = await join(gateway, operator_key, "Poison Retailer", ["retailer"])
    body = {"sku": "PSN-1", "name": "Poison kettle", "category": "kitchen", "kind": "finished_good"}
    product = (await gateway.post(maker, "/v1/products", body))["product_id"]
    price = {"currency_code": "EUR", "amount_minor": 4999}
    await gateway.post(retailer, "/v1/listings", {"product_id": product, "price": price, "available": True})
    room = asyncio.Semaphore(8)

    async def customer(i: int) -> str:
        async with room:
            party = await gateway.post(retailer, "/v1/parties", {"kind": "person", "display_name": f"Customer {i}"})
            relation = {"from_party_id": party["party_id"], "to_party_id": retailer.partner_id, "type": "customer_of"}
            await gateway.post(retailer, "/v1/relationships", relation)
        return str(party["party_id"])

    people = list(await asyncio.gather(*(customer(i) for i in range(customers))))
    return Shop(retailer, product, people)


async def collabnet(nats_url: str, *args: str) -> tuple[int, str, str]:
    """The ``collabnet`` command in its own process, reading NATS's address from ``COLLABNET_NATS_URL``."""
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("collabnet")),
        *args,
        env=os.environ | {"COLLABNET_NATS_URL": nats_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class Letters:
    """Watches the dead-letter stream and notes when each (consumer, event id) first showed up."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.first_seen: dict[tuple[str, str], float] = {}

    async def read(self) -> list[deadletter.DeadLetter]:
        letters = await deadletter.list_dead_letters(self.bus.js)
        now = asyncio.get_running_loop().time()
        for letter in letters:
            self.first_seen.setdefault((letter.consumer, letter.event_id), now)
        return letters

    async def until(self, wanted: Callable[[list[deadletter.DeadLetter]], bool], what: str) -> None:
        async def check() -> bool:
            return wanted(await self.read())

        await until(check, what, timeout=WAIT)


async def settled(bus: Bus) -> bool:
    """Every message of the reviews stream that a reader of ``ReviewPublished`` takes delivered to it
    and acked (handled, skipped or dead-lettered)."""
    for durable in READERS:
        info = await bus.js.consumer_info(stream_name("reviews"), durable)
        if info.num_pending or info.num_ack_pending:
            return False
    return True


async def test_poison_events_are_dead_lettered_and_replayed_while_the_rest_flows(
    stack: Stack, sizes: Sizes, figures: dict[str, object]
) -> None:
    count = 2 * sizes.examples
    key = await operator.ensure_operator(stack.state_dir, stack.address("identity"))
    bus = Bus(stack.nats.url, name="poison-test")
    await bus.connect()
    try:
        async with Gateway(f"http://{stack.address('gateway')}") as gateway:
            await _run(stack, bus, gateway, Caller(key.partner_id, key.secret), count, figures)
    finally:
        await bus.close()


async def _run(
    stack: Stack, bus: Bus, gateway: Gateway, operator_key: Caller, count: int, figures: dict[str, object]
) -> None:
    loop = asyncio.get_running_loop()
    shop = await open_shop(gateway, operator_key, count + 1)
    *writers, victim = shop.customers  # the impossible event's author writes nothing else
    ratings = {writer: n % 5 + 1 for n, writer in enumerate(writers)}
    reviews: dict[str, str] = {}  # review id -> author

    async def write(author: str) -> None:
        body = {
            "product_id": shop.product,
            "author_id": author,
            "rating": ratings[author],
            "title": "Boils fast",
            "body": "Boils a litre quickly and switches itself off; the handle stays cool.",
        }
        # The first reviews may come before reviews has heard of the product (404 or 422 until then).
        review = await eventually_created(gateway, shop.customer(author), "/v1/reviews", body, "reviews knows P")
        reviews[review["review_id"]] = author

    # Half of the traffic, the two poison events, then the other half: the consumers meet the poison
    # in the middle of the stream.
    half = len(writers) // 2
    await asyncio.gather(*(write(author) for author in writers[:half]))
    undecodable = new_event_id()
    headers = cloudevent_headers(undecodable, SUBJECT, "/collabnet/reviews", datetime.now(UTC))
    await bus.publish(SUBJECT, b"\xff\xff this is not a ReviewPublished", headers)
    undecodable_sent = loop.time()
    impossible = new_event_id()
    impossible_review = f"rv-unrated-{impossible[:8]}"
    published = Timestamp()
    published.FromDatetime(datetime.now(UTC))
    event = ReviewPublished(
        review_id=impossible_review,
        product_id=shop.product,
        revision=1,
        author_id=victim,
        channel_partner_id=shop.retailer.partner_id,
        rating=0,  # left unset by its producer
        publish_time=published,
    )
    await bus.publish_event(event, event_id=impossible, source="reviews")
    impossible_sent = loop.time()
    letters = Letters(bus)
    expected = {*((reader, undecodable) for reader in READERS), ("improvement", impossible)}
    watching = asyncio.create_task(
        letters.until(lambda found: {(x.consumer, x.event_id) for x in found} >= expected, "both are dead-lettered")
    )
    await asyncio.gather(*(write(author) for author in writers[half:]))
    await watching

    # The consumers went on: every review, before and after the poison, had its effects.
    low = {review for review, author in reviews.items() if ratings[author] <= CASE_AT_MOST}

    async def cases_opened() -> bool:
        listed = await gateway.get(shop.retailer, "/v1/cases", product_id=shop.product, page_size=100)
        return {case["review_id"] for case in listed["cases"]} == low

    await until(cases_opened, "improvement opens a case for each low review", timeout=WAIT)

    async def points(party: str) -> int:
        reply = await gateway.call(shop.customer(party), "GET", f"/v1/parties/{party}/reputation", expect=(200, 404))
        return int(reply.body.get("points", 0)) if reply.status == 200 else 0

    async def rewarded() -> bool:
        earned = await asyncio.gather(*(points(author) for author in [*writers, victim]))
        return all(earned)

    # Community handles the impossible event too (it is well-formed): its author earns points.
    await until(rewarded, "community rewards every author", timeout=WAIT)
    await until(lambda: settled(bus), "the readers ack the whole stream", timeout=WAIT)
    victim_points = await points(victim)

    # `collabnet deadletter list --json` shows the four dead letters, each with its error.
    code, out, err = await collabnet(stack.nats.url, "deadletter", "list", "--json")
    assert (code, err) == (0, "")
    listed = [json.loads(line) for line in out.splitlines()]
    assert sorted((x["consumer"], x["event_id"]) for x in listed) == sorted(expected)
    for letter in listed:
        assert letter["subject"] == letter["event_type"] == SUBJECT
        if letter["event_id"] == undecodable:
            assert letter["error_type"] == "Undecodable"
            assert letter["error"].startswith(f"the payload is not a valid {SUBJECT}")
            assert letter["deliveries"] == 1
        else:
            assert (letter["error_type"], letter["error"]) == ("ValueError", "rating 0 is outside 1 to 5")
            assert letter["deliveries"] == MAX_DELIVERIES
    first_letters = {letter["seq"] for letter in listed}

    # Replay improvement's two: each event is published once more to every reader of its subject.
    replayed_at = loop.time()
    code, out, err = await collabnet(stack.nats.url, "deadletter", "replay", "--consumer", "improvement", "--all")
    assert code == 0, err
    assert out.splitlines()[-1] == "replayed 2 of 2 dead letters"
    again = {
        ("improvement", undecodable),
        ("improvement", impossible),
        ("community", undecodable),
        ("analytics", undecodable),
    }

    def dead_lettered_again(found: list[deadletter.DeadLetter]) -> bool:
        return {(x.consumer, x.event_id) for x in found if x.seq not in first_letters} >= again

    await letters.until(dead_lettered_again, "the replayed events are dead-lettered again")
    redone = loop.time() - replayed_at
    await until(lambda: settled(bus), "the readers ack the replayed events", timeout=WAIT)

    final = await letters.read()
    old = [x for x in final if x.seq in first_letters]
    new = [x for x in final if x.seq not in first_letters]
    # The replayed letters are gone, the other consumers' letters of the undecodable one stay.
    assert sorted((x.consumer, x.event_id) for x in old) == [("analytics", undecodable), ("community", undecodable)]
    assert sorted((x.consumer, x.event_id) for x in new) == sorted(again)
    [unrated] = [x for x in new if x.event_id == impossible]
    assert (unrated.error_type, unrated.error, unrated.deliveries) == (
        "ValueError",
        "rating 0 is outside 1 to 5",
        MAX_DELIVERIES,
    )
    assert ReviewPublished.FromString(unrated.data) == event
    # Community had handled the impossible event: the replay reached it and it skipped it (its inbox).
    assert await points(victim) == victim_points
    listed_cases = await gateway.get(shop.retailer, "/v1/cases", product_id=shop.product, page_size=100)
    assert {case["review_id"] for case in listed_cases["cases"]} == low

    on_stream = {x.event_id for x in final}
    lost = sum(1 for event_id in (undecodable, impossible) if event_id not in on_stream)
    assert lost == 0
    figures |= {
        "events sent": len(reviews) + 2,
        "reviews handled meanwhile": len(reviews),
        "cases opened meanwhile": len(low),
        "dead-lettered": len(expected),
        "time to dead-letter, undecodable (s)": letters.first_seen["improvement", undecodable] - undecodable_sent,
        "time to dead-letter, failing handler (s)": letters.first_seen["improvement", impossible] - impossible_sent,
        "replayed": 2,
        "dead-lettered again after replay": len(new),
        "replay command to dead-lettered again (s)": redone,
        "skipped after replay (handled before)": 2,
        "handled after replay": 0,
        "lost": lost,
    }
