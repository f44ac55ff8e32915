"""Graceful shutdown: SIGTERM to each service, and to the gateway, while partners write reviews and
read, loses no accepted request and no event.

Under a steady open-loop load, each of the six services and then the gateway is sent SIGTERM,
waited for, and started again. The client is a careful partner: a review is posted with an
``Idempotency-Key`` and posted again with the same key until the gateway accepts it, whatever
came back before (503 while reviews is away, a refused connection while the gateway is, 429).

Afterwards every accepted review exists exactly once with what was sent, each product's summary
counts exactly its accepted reviews, and every event got through: each negative review opened
exactly one case, improvement's product metrics and community's reputations agree with reviews,
no outbox holds an unsent row, no consumer has anything pending, and nothing was dead-lettered.
Every process exited with code 0 (it finished by itself, not killed after the stop timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from collabnet_cli import operator
from collabnet_cli.gateway import Caller, Gateway, until
from collabnet_cli.stack import Stack
from tests.reliability.load import Customer, Mix, Network, OpenLoop, Operation, Request, ReviewPlan, http_client
from tests.reliability.network import audit_events, settled

if TYPE_CHECKING:
    from tests.reliability.conftest import Sizes

NEGATIVE = 2
"""At or below this rating a review opens a case (improvement's default policy)."""
REVIEW_POINTS = 10
"""Reputation a published review earns its author (community's rules)."""
WRITE_EVERY = 2
READS = (("page", 1.0), ("reviews", 1.0), ("summary", 1.0), ("cases", 1.0))
PROGRESS = 3
"""Reviews accepted after a restart before the next SIGTERM: the stack serves writes again."""
GIVE_UP_SECONDS = 180.0
"""How long one review is retried before the test gives up on it (the stack never came back)."""


@dataclass
class Tally:
    """What the client saw, per component being restarted at the time ("" when none was)."""

    attempts: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, phase: str, outcome: str) -> None:
        self.attempts[(phase, outcome)] += 1

    def of(self, phase: str) -> dict[str, int]:
        return {outcome: n for (p, outcome), n in sorted(self.attempts.items()) if p == phase}


@dataclass
class Written:
    """A review the gateway accepted: the plan, the id it answered with, and how many tries it took."""

    plan: ReviewPlan
    review_id: str
    tries: int
    applied_before: bool = False
    """A try the client saw fail had written it (a later try was told it exists already)."""


class Partner:
    """Posts reviews until accepted and reads pages, lists and summaries, keeping score."""

    def __init__(self, client: httpx.AsyncClient, network: Network) -> None:
        self.client = client
        self.network = network
        self.phase = ""
        self.tally = Tally()
        self.written: dict[str, Written] = {}  # by Idempotency-Key
        self.failed: list[str] = []  # why a review was given up on, or refused for good
        self.open: set[int] = set()  # review POSTs sent and not yet answered, by number
        self.answers: dict[int, str] = {}  # each POST's status, or the transport error it ended with
        self.posted = asyncio.Event()  # set as a POST is sent
        self.numbers = itertools.count()
        self.reads = 0  # reads answered with a 2xx
        self.planned_out = False  # every planned review has been offered
        self.accepted_at: list[float] = []  # when each review was accepted (event loop time)
        self.refusals: Counter[str] = Counter()  # why writes were refused, with the problem's detail
        self.jitter = random.Random(13)

    async def sending(self) -> set[int]:
        """Wait until a review POST is on its way (unless every planned review is written); returns
        the POSTs that are."""
        if not self.planned_out:
            self.posted.clear()
            await asyncio.wait_for(self.posted.wait(), 120)
        return set(self.open)

    def write(self, plan: ReviewPlan) -> Request:
        return lambda: self._write(plan)

    async def _write(self, plan: ReviewPlan) -> int:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + GIVE_UP_SECONDS
        headers = plan.customer.caller.headers | {"Idempotency-Key": plan.key}
        delay, tries, failed_before = 0.2, 0, False
        while loop.time() < give_up:
            tries += 1
            phase = self.phase
            number = next(self.numbers)
            self.open.add(number)
            self.posted.set()
            try:
                response = await self.client.post("/v1/reviews", json=plan.body, headers=headers)
            except httpx.TransportError as error:
                self.open.discard(number)
                self.answers[number] = type(error).__name__
                self.tally.add(phase, f"write: {type(error).__name__}")
                failed_before = True
            else:
                self.open.discard(number)
                self.answers[number] = str(response.status_code)
                status = response.status_code
                if status == 201:
                    self.accepted_at.append(loop.time())
                    self.tally.add(phase, "write: accepted")
                    self.written[plan.key] = Written(plan, response.json()["review_id"], tries)
                    return status
                detail = str(response.json().get("detail", "")) if response.content else ""
                if status == 409 and "has reviewed product" in detail:
                    # The one review per author and product is there: a try the client saw fail wrote it.
                    self.tally.add(phase, "write: exists already")
                    self.written[plan.key] = Written(plan, await self._review_of(plan), tries, applied_before=True)
                    return status
                if status not in (409, 429) and status < 500:
                    self.failed.append(f"{plan.key}: {status} {detail}")
                    return status
                self.tally.add(phase, f"write: {status}")
                self.refusals[f"{status} {detail}"] += 1
                failed_before = failed_before or status != 409
            await asyncio.sleep(delay * self.jitter.uniform(0.5, 1.5))
            delay = min(2.0, delay * 2)
        self.failed.append(f"{plan.key}: not accepted within {GIVE_UP_SECONDS:.0f}s (failed before: {failed_before})")
        return 0

    async def _review_of(self, plan: ReviewPlan) -> str:
        """The id of the review ``plan``'s author wrote about its product, whatever its status."""
        ids = []
        for status in ("published", "pending", "rejected"):
            params = {"author_id": plan.customer.party_id, "status": status, "page_size": 100}
            response = await self.client.get("/v1/reviews", params=params, headers=plan.customer.caller.headers)
            response.raise_for_status()
            ids += [r["review_id"] for r in response.json()["reviews"] if r["product_id"] == plan.product_id]
        assert len(ids) == 1, f"{plan.key}: {len(ids)} reviews by its author of its product"
        return str(ids[0])

    def read(self, name: str, path: str, caller: Caller, **params: Any) -> Request:
        async def send() -> int:
            phase = self.phase
            try:
                response = await self.client.get(path, params=params, headers=caller.headers)
            except httpx.TransportError as error:
                self.tally.add(phase, f"read: {type(error).__name__}")
                raise
            if response.is_success:
                self.reads += 1
            self.tally.add(phase, "read: ok" if response.is_success else f"read: {response.status_code}")
            return response.status_code

        return send


async def test_sigterm_to_each_process_under_load_loses_no_accepted_request_and_no_event(
    stack: Stack, sizes: Sizes, figures: dict[str, object]
) -> None:
    rate = min(sizes.load_rate / 4, 10.0)  # writes cost reviews the most CPU: 5 a second at most
    key = await operator.ensure_operator(stack.state_dir, stack.address("identity"))
    base_url = f"http://{stack.address('gateway')}"
    # Enough (customer, product) pairs for the writes of about half a minute per restart; a
    # product costs one request to make, a customer two.
    pairs = math.ceil(rate / WRITE_EVERY * 30 * len(stack.components))
    products = max(4, math.ceil(math.sqrt(2 * pairs)))
    async with Gateway(base_url) as gateway:
        network = await Network.build(
            gateway,
            Caller(key.partner_id, key.secret),
            retailers=Network.retailers_for(rate),
            products=products,
            customers=math.ceil(pairs / products),
            listed=False,
        )
    plans = iter(network.review_plans(len(network.customers) * len(network.products)))
    pick, mix = random.Random(5), Mix(READS)
    exits: dict[str, int] = {}
    in_flight: dict[str, set[int]] = {}
    timing: dict[str, tuple[float, float]] = {}
    back: dict[str, float] = {}  # when each restarted component reported healthy

    async with http_client(base_url, 256) as client:
        partner = Partner(client, network)

        def operation(i: int) -> Operation:
            plan = next(plans, None) if i % WRITE_EVERY == 0 else None
            if plan is not None:
                return "write", partner.write(plan)
            partner.planned_out |= i % WRITE_EVERY == 0
            customer: Customer = pick.choice(network.customers)
            product = pick.choice(network.products)
            name = mix.choose()
            if name == "page":
                return name, partner.read(name, f"/v1/products/{product}/page", customer.caller)
            if name == "reviews":
                return name, partner.read(name, "/v1/reviews", customer.caller, product_id=product, page_size=20)
            if name == "summary":
                return name, partner.read(name, f"/v1/products/{product}/rating-summary", customer.caller)
            return name, partner.read(name, "/v1/cases", network.maker, product_id=product, page_size=20)

        async def progress() -> None:
            """Wait until a few more reviews are accepted: the stack takes writes again (or, once
            every planned review is written, until a few more reads are answered)."""
            written, reads = len(partner.written) + PROGRESS, partner.reads + PROGRESS

            def served() -> bool:
                return len(partner.written) >= written or (partner.planned_out and partner.reads >= reads)

            await until(_now(served), "the stack serves again", 120)

        generator = OpenLoop(rate)
        load = asyncio.create_task(generator.run(math.inf, operation))
        clock = asyncio.get_running_loop().time
        try:
            for component in stack.components:
                await progress()
                name = component.name
                # SIGTERM as a review is posted: it is in flight at the gateway or the service.
                in_flight[name] = await partner.sending()
                partner.phase = name
                began = clock()
                exits[name] = await stack.stop(name)
                stopped = clock()
                await stack.start(name)
                timing[name] = (stopped - began, clock() - stopped)
                back[name] = clock()
                partner.phase = ""
            await progress()
            generator.stopping = True
            await load
        finally:
            if not load.done():  # the restarts failed: the reviews still being retried are not waited for
                load.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await load
            figures |= {
                "offered rate /s": rate,
                "requests offered": generator.offered,
                "reviews planned": len(network.customers) * len(network.products),
            }
            for name, (stopping, starting) in timing.items():
                figures[f"{name}: exit code"] = exits[name]
                answers = Counter(partner.answers.get(n, "none") for n in in_flight[name])
                figures[f"{name}: POSTs in flight at SIGTERM, answers"] = ", ".join(
                    f"{answer} x{count}" for answer, count in sorted(answers.items())
                )
                again = next((t - back[name] for t in partner.accepted_at if t >= back[name]), math.nan)
                figures[f"{name}: s to stop, to start, to accept a review"] = (
                    f"{stopping:.1f}, {starting:.1f}, {again:.1f}"
                )
                figures[f"{name}: while away"] = ", ".join(f"{k} {v}" for k, v in partner.tally.of(name).items())
            figures["otherwise"] = ", ".join(f"{k} {v}" for k, v in partner.tally.of("").items())
            for refusal, count in partner.refusals.most_common():
                figures[f"write refused: {refusal}"[:80]] = count

    written = list(partner.written.values())
    figures |= {
        "reviews accepted": len(written),
        "reviews retried": sum(w.tries > 1 for w in written),
        "tries beyond the first": sum(w.tries - 1 for w in written),
        "reviews written by a try that failed": sum(w.applied_before for w in written),
        "reviews given up on": len(partner.failed),
    }
    audit = Audit()
    await audit.run(stack, network, written)
    figures |= {"lost": audit.lost, "events lost": audit.events_lost, "idempotent replays checked": audit.replays}

    assert not partner.failed, f"reviews not accepted: {partner.failed[:5]}"
    assert exits == dict.fromkeys(exits, 0), f"exit codes after SIGTERM: {exits}"
    assert not audit.problems, "\n".join(audit.problems)
    assert (audit.lost, audit.events_lost) == (0, 0)


@dataclass
class Audit:
    """What the system holds, checked against what the gateway accepted: every finding is kept (and
    counted as a request or an event lost where it is one), so one run shows them all."""

    lost: int = 0
    events_lost: int = 0
    replays: int = 0
    problems: list[str] = field(default_factory=list)

    def check(self, holds: bool, problem: str) -> None:
        if not holds:
            self.problems.append(problem)

    async def run(self, stack: Stack, network: Network, written: list[Written]) -> None:
        ids = Counter(w.review_id for w in written)
        self.check(max(ids.values(), default=1) == 1, "one review id was answered for two Idempotency-Keys")
        async with Gateway(f"http://{stack.address('gateway')}") as gateway:
            for product in network.products:
                await self.product(
                    gateway, network.maker, product, [w for w in written if w.plan.product_id == product]
                )
            for customer in network.customers:
                await self.reputation(gateway, customer, sum(w.plan.customer == customer for w in written))
            for w in written:
                if w.tries > 1 and not w.applied_before:
                    await self.replay(gateway, w)
        events = await settled(
            lambda: audit_events(stack),
            lambda audit: not (audit.unsent or audit.consumers_behind),
        )
        self.events_lost += events.lost + events.unsent + len(events.dead_letters)
        self.check(not (events.lost or events.unsent), f"events lost {events.lost}, never sent {events.unsent}")
        self.check(not events.duplicated, f"events published twice: {events.duplicated}")
        self.check(not events.consumers_behind, f"messages never handled: {events.consumers_behind}")
        dead = [(d.consumer, d.event_type, d.error) for d in events.dead_letters]
        self.check(not dead, f"dead letters: {dead}")

    async def product(self, gateway: Gateway, maker: Caller, product: str, reviews: list[Written]) -> None:
        """The product's reviews are the accepted ones, its summary counts them, each negative one
        opened one case, and improvement's metrics agree."""
        expected = {w.review_id: w.plan.rating for w in reviews}
        negative = Counter(w.review_id for w in reviews if w.plan.rating <= NEGATIVE)
        mean = sum(expected.values()) / len(expected) if expected else None

        async def listed() -> dict[str, int]:
            shown = await _all(gateway, maker, "/v1/reviews", "reviews", product)
            return {r["review_id"]: r["rating"] for r in shown}

        shown = await settled(listed, lambda shown: shown == expected)
        self.lost += len(set(expected) - set(shown))
        self.check(shown == expected, f"{product}: listed {shown}, accepted {expected}")
        summary = (await gateway.get(maker, f"/v1/products/{product}/rating-summary")).body
        self.check(
            int(summary.get("count", 0)) == len(expected) and (mean is None or math.isclose(summary["mean"], mean)),
            f"{product}: summary {summary.get('count')} reviews, mean {summary.get('mean')}; accepted {expected}",
        )

        async def cases() -> Counter[str]:
            return Counter(c["review_id"] for c in await _all(gateway, maker, "/v1/cases", "cases", product))

        opened = await settled(cases, lambda opened: opened == negative)
        self.events_lost += len(set(negative) - set(opened))
        self.check(opened == negative, f"{product}: cases for {dict(opened)}, negative reviews {set(negative)}")

        async def metrics() -> tuple[int, float | None]:
            body = (await gateway.get(maker, f"/v1/products/{product}/metrics")).body
            return int(body.get("review_count", 0)), body.get("average_rating")

        count, average = await settled(metrics, lambda measured: measured[0] == len(expected))
        self.events_lost += abs(count - len(expected))
        self.check(
            count == len(expected) and (mean is None or math.isclose(average or 0.0, mean)),
            f"{product}: improvement counts {count} reviews, mean {average}; accepted {len(expected)}, mean {mean}",
        )

    async def reputation(self, gateway: Gateway, customer: Customer, reviews: int) -> None:
        """Community credited the customer once for each of its reviews."""
        path = f"/v1/parties/{customer.party_id}/reputation"

        async def points() -> int:
            return int((await gateway.get(customer.caller, path)).body.get("points", 0))

        earned = REVIEW_POINTS * reviews
        got = await settled(points, lambda got: got == earned)
        self.events_lost += abs(got - earned) // REVIEW_POINTS
        self.check(got == earned, f"{customer.party_id}: {got} points for {reviews} reviews")

    async def replay(self, gateway: Gateway, written: Written) -> None:
        """Posting a retried review again with its key answers what was accepted, and writes nothing."""
        plan = written.plan
        headers = plan.customer.caller.headers | {"Idempotency-Key": plan.key}
        response = await gateway.http.post("/v1/reviews", json=plan.body, headers=headers)
        self.replays += 1
        replayed = response.status_code == 201 and response.json().get("review_id") == written.review_id
        self.check(
            replayed and response.headers.get("idempotency-replayed") == "true",
            f"{plan.key} posted again: {response.status_code} {response.text[:200]}, accepted {written.review_id}",
        )


async def _all(gateway: Gateway, caller: Caller, path: str, items: str, product: str) -> list[dict[str, Any]]:
    """Every page of a list by product."""
    found: list[dict[str, Any]] = []
    token = ""
    while True:
        params: dict[str, Any] = {"product_id": product, "page_size": 100} | ({"page_token": token} if token else {})
        page = (await gateway.get(caller, path, **params)).body
        found.extend(page.get(items, []))
        token = page.get("next_page_token", "")
        if not token:
            return found


def _now(check: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    async def checked() -> Any:
        return check()

    return checked
