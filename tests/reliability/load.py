"""Load for the reliability tests: a small network of partners, products and customers made
through the gateway, and an open-loop generator that offers requests at a fixed rate.

The generator schedules request ``i`` at ``start + i / rate`` whatever the earlier ones are doing,
and measures each one's latency from its scheduled time, not from when it could be sent: a slow
system is charged for the requests that waited behind it (no coordinated omission). In-flight
requests are capped; a request due while the cap is reached is not sent and counts as dropped.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from collabnet_cli.gateway import Caller, Gateway, join, until

KEY_RATE = 20.0
"""Requests per second offered per API key: under the gateway's default limit of 50 per key."""

# Words to spell numbers with: review texts stay distinct without digits, which the reviews'
# checks could read as a phone number.
_WORDS = ("amber", "birch", "cedar", "dune", "elm", "fern", "grove", "heath", "iris", "juniper")


def spelled(number: int) -> str:
    """``number`` in words, one per decimal digit (``105`` -> ``birch amber fern``)."""
    return " ".join(_WORDS[int(digit)] for digit in str(number))


@dataclass(frozen=True)
class Customer:
    """A consumer, a customer of one retailer, which acts for it (``X-On-Behalf-Of``)."""

    party_id: str
    caller: Caller


@dataclass(frozen=True)
class ReviewPlan:
    """One review to write: who writes about what, and the Idempotency-Key its retries share."""

    key: str
    customer: Customer
    product_id: str
    rating: int
    number: int

    @property
    def body(self) -> dict[str, Any]:
        words = spelled(self.number)
        return {
            "product_id": self.product_id,
            "author_id": self.customer.party_id,
            "rating": self.rating,
            "title": f"Review {words}",
            "body": f"Used it every day for weeks; notes {words}: it does what the maker says it does.",
        }


@dataclass
class Network:
    """A maker with products, retailers that list them (each with its own API key), and customers
    of the retailers."""

    maker: Caller
    retailers: list[Caller]
    products: list[str]
    customers: list[Customer]
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    @staticmethod
    def retailers_for(rate: float) -> int:
        """Enough retailers (API keys) that none is offered more than ``KEY_RATE`` requests a second."""
        return max(2, math.ceil(rate / KEY_RATE))

    @classmethod
    async def build(
        cls, gateway: Gateway, operator: Caller, *, retailers: int, products: int, customers: int, listed: bool = True
    ) -> Network:
        """Make the network through the gateway (every retailer lists every product, unless not
        ``listed``), and wait until reviews knows every product."""
        tag = uuid.uuid4().hex[:6]
        maker = await join(gateway, operator, f"Maker {tag}", ["manufacturer"])
        sellers = [await join(gateway, operator, f"Retailer {i} {tag}", ["retailer"]) for i in range(retailers)]
        room = asyncio.Semaphore(8)

        async def product(i: int) -> str:
            body = {"sku": f"LD-{tag}-{i}", "name": f"Kettle {i}", "category": "kitchen", "kind": "finished_good"}
            async with room:
                made: str = (await gateway.post(maker, "/v1/products", body))["product_id"]
            if listed:
                price = {"currency_code": "EUR", "amount_minor": 4999}
                for retailer in sellers:
                    async with room:
                        listing = {"product_id": made, "price": price, "available": True}
                        await gateway.post(retailer, "/v1/listings", listing)
            return made

        async def customer(i: int) -> Customer:
            retailer = sellers[i % len(sellers)]
            async with room:
                party = await gateway.post(retailer, "/v1/parties", {"kind": "person", "display_name": f"C{i} {tag}"})
                relation = {"from_party_id": party["party_id"], "to_party_id": retailer.partner_id}
                await gateway.post(retailer, "/v1/relationships", relation | {"type": "customer_of"})
            return Customer(party["party_id"], retailer.for_party(party["party_id"]))

        made = list(await asyncio.gather(*(product(i) for i in range(products))))
        people = list(await asyncio.gather(*(customer(i) for i in range(customers))))
        for product_id in made:

            async def known(product_id: str = product_id) -> bool:
                path = f"/v1/products/{product_id}/rating-summary"
                return (await gateway.call(maker, "GET", path, expect=(200, 404))).status == 200

            await until(known, f"reviews hears of product {product_id}", timeout=60)
        return cls(maker, sellers, made, people, tag)

    def review_plans(self, count: int, seed: int = 7) -> list[ReviewPlan]:
        """``count`` reviews by distinct (customer, product) pairs (one review per author and
        product), in a shuffled order, with ratings 1 to 5 in turn: two in five open a case."""
        pairs = [(c, p) for c in self.customers for p in self.products]
        if count > len(pairs):
            raise ValueError(f"{count} reviews need more than {len(pairs)} customer and product pairs")
        random.Random(seed).shuffle(pairs)
        return [
            ReviewPlan(f"review-{self.tag}-{n}", customer, product, n % 5 + 1, n)
            for n, (customer, product) in enumerate(pairs[:count])
        ]


def http_client(base_url: str, max_in_flight: int, timeout: float = 30.0) -> httpx.AsyncClient:
    """A client with a connection for each request the generator may have in flight."""
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout)


# --- the open-loop generator --------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One offered request: its operation, latency from its scheduled time, and its answer."""

    operation: str
    latency: float
    status: int
    """The HTTP status; 0 when there was none (``error`` says why)."""
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


Request = Callable[[], Awaitable[int]]
"""Sends one request and returns its HTTP status (raises when there is no answer)."""
Operation = tuple[str, Request]
DROPPED = "dropped: too many requests in flight"


class OpenLoop:
    """Offers ``rate`` requests a second, at most ``max_in_flight`` of them unanswered at once."""

    def __init__(self, rate: float, max_in_flight: int = 256) -> None:
        self.rate = rate
        self.max_in_flight = max_in_flight
        self.stopping = False
        """Set it to end a run early (after the request being scheduled)."""
        self.offered = 0
        """Requests offered so far, over every run."""

    async def run(self, seconds: float, next_operation: Callable[[int], Operation]) -> list[Sample]:
        """Offer ``next_operation(i)`` at ``i / rate`` seconds from now for ``seconds`` (or until
        ``stopping``), then wait for every answer; one sample per offered request. Cancelling the
        run cancels the requests in flight."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        samples: list[Sample] = []
        in_flight: set[asyncio.Task[None]] = set()

        async def send(name: str, request: Request, scheduled: float) -> None:
            try:
                status, error = await request(), ""
            except Exception as exc:
                status, error = 0, f"{type(exc).__name__}: {exc}"
            samples.append(Sample(name, loop.time() - scheduled, status, error))

        i = 0
        try:
            while not self.stopping:
                scheduled = start + i / self.rate
                if scheduled - start >= seconds:
                    break
                await asyncio.sleep(max(0.0, scheduled - loop.time()))
                name, request = next_operation(i)
                i += 1
                self.offered += 1
                if len(in_flight) >= self.max_in_flight:
                    samples.append(Sample(name, 0.0, 0, DROPPED))
                    continue
                task = asyncio.create_task(send(name, request, scheduled))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if in_flight:
                await asyncio.gather(*in_flight)
        except asyncio.CancelledError:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            raise
        return samples


class Mix:
    """Chooses each request's operation by weight, with a fixed seed (the same run every time)."""

    def __init__(self, weights: Sequence[tuple[str, float]], seed: int = 11) -> None:
        self.names = [name for name, _ in weights]
        self.weights = [weight for _, weight in weights]
        self.random = random.Random(seed)

    def choose(self) -> str:
        return self.random.choices(self.names, self.weights)[0]


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` 0.99 for p99); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def rss_bytes(pid: int) -> int:
    """The resident set size of process ``pid`` (``VmRSS`` of ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"process {pid} reports no VmRSS")


def cpu_seconds(pid: int) -> float:
    """CPU time process ``pid`` has used, user and system (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
