"""Load: the gateway at a constant offered rate with a mix of reads and review writes.

Every offered request must be answered with a 2xx (no 5xx, no 429, no timeout, none dropped for
too many in flight); the latency percentiles are reported, not asserted (the machines are shared
and noisy). Each process's memory after a warm-up at the same rate is compared with its memory at
the end: a leak that grows with the requests shows, the allocator's and caches' first growth does
not. Every review written is counted in its product's summary afterwards.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from typing import TYPE_CHECKING, Any

import httpx

from collabnet_cli import operator
from collabnet_cli.gateway import Caller, Gateway, until
from collabnet_cli.stack import Stack
from tests.reliability.load import (
    Mix,
    Network,
    OpenLoop,
    Operation,
    Request,
    ReviewPlan,
    Sample,
    cpu_seconds,
    http_client,
    percentile,
    rss_bytes,
)

if TYPE_CHECKING:
    from tests.reliability.conftest import Sizes

WRITE_EVERY = 10
"""One request in ten writes a review, the rest read: about the share of writes in DeathStarBench's
60/30/10 mix."""
READS = (("page", 3.0), ("reviews", 2.5), ("summary", 2.0), ("cases", 1.5))
MAX_IN_FLIGHT = 256
MIB = 1024 * 1024
RSS_MARGIN_BYTES = 32 * MIB
RSS_MARGIN_SHARE = 0.10
"""Growth allowed after warm-up: 32 MiB plus a tenth of the warm size, some ten times what a run
grows by. A Python process under load keeps growing for a while after its first requests without
leaking: pymalloc and glibc take memory in arenas and give little back, SQLite's page cache and the
connection pools fill to their caps, gRPC and HTTP buffers grow to the largest message seen, and
the span and metric exporters hold a batch between flushes. Those are bounded, but when they settle
varies from run to run on a shared machine. A leak of a few KiB per request grows without bound and
exceeds the margin in the long run (``make soak``); the bounded run checks the mechanism."""


async def test_a_constant_offered_rate_of_reads_and_writes_is_served_without_errors_in_flat_memory(
    stack: Stack, sizes: Sizes, figures: dict[str, object]
) -> None:
    rate = sizes.load_rate
    warm_up = max(5.0, sizes.load_seconds / 3)
    offered = math.ceil(rate * (warm_up + sizes.load_seconds))
    writes = math.ceil(offered / WRITE_EVERY) + 1
    products = min(sizes.products, max(4, round(rate / 5)))
    clock = asyncio.get_running_loop().time
    began = clock()
    key = await operator.ensure_operator(stack.state_dir, stack.address("identity"))
    base_url = f"http://{stack.address('gateway')}"
    async with Gateway(base_url) as gateway:
        network = await Network.build(
            gateway,
            Caller(key.partner_id, key.secret),
            retailers=Network.retailers_for(rate),
            products=products,
            customers=math.ceil(writes / products) + 1,
        )
    setup = clock() - began
    plans = iter(network.review_plans(writes))
    written: dict[str, tuple[str, int]] = {}  # review id -> (product, rating)
    degraded: list[list[str]] = []
    pick = random.Random(3)
    mix = Mix(READS)

    async with http_client(base_url, MAX_IN_FLIGHT) as client:

        def operation(i: int) -> Operation:
            if i % WRITE_EVERY == 0:
                return "write", write(client, next(plans), written)
            customer = pick.choice(network.customers)
            product = pick.choice(network.products)
            headers = customer.caller.headers
            name = mix.choose()
            if name == "page":
                return name, page(client, f"/v1/products/{product}/page", headers, degraded)
            if name == "reviews":
                return name, read(client, "/v1/reviews", headers, product_id=product, page_size=20)
            if name == "summary":
                return name, read(client, f"/v1/products/{product}/rating-summary", headers)
            seller = Caller(customer.caller.partner_id, customer.caller.key)  # the retailer's own cases
            return name, read(client, "/v1/cases", seller.headers, product_id=product, page_size=20)

        generator = OpenLoop(rate, MAX_IN_FLIGHT)
        warm = await generator.run(warm_up, operation)
        rss_warm = {c.name: rss_bytes(stack.pid(c.name)) for c in stack.components}
        cpu_warm = {c.name: cpu_seconds(stack.pid(c.name)) for c in stack.components}
        started = clock()
        samples = await generator.run(sizes.load_seconds, lambda i: operation(i + len(warm)))
        elapsed = clock() - started
        rss_end = {c.name: rss_bytes(stack.pid(c.name)) for c in stack.components}
        cpu = {c.name: cpu_seconds(stack.pid(c.name)) - cpu_warm[c.name] for c in stack.components}

    failed = [s for s in (*warm, *samples) if not s.ok]
    latencies = [s.latency * 1000 for s in samples if s.ok]
    figures |= {
        "offered rate /s": rate,
        "achieved rate /s": sum(s.ok for s in samples) / elapsed,
        "setup s": setup,
        "warm-up s": warm_up,
        "load s (until the last answer)": elapsed,
        "requests (after warm-up)": len(samples),
        "requests by operation": dict(sorted(Counter(s.operation for s in samples).items())),
        "reviews written": len(written),
        "errors": len(failed),
        "5xx": sum(s.status >= 500 for s in failed),
        "pages degraded": len(degraded),
        "p50 ms": percentile(latencies, 0.50),
        "p95 ms": percentile(latencies, 0.95),
        "p99 ms": percentile(latencies, 0.99),
        "max ms": max(latencies, default=0.0),
    }
    for name in rss_warm:
        figures[f"rss {name} MiB (warm -> end)"] = f"{rss_warm[name] / MIB:.1f} -> {rss_end[name] / MIB:.1f}"
    for name, seconds in cpu.items():
        figures[f"cpu {name} ms per request"] = seconds * 1000 / len(samples)

    assert not failed, f"{len(failed)} of {len(warm) + len(samples)} requests failed: {_describe(failed)}"
    grown = {
        name: (rss_end[name] - rss_warm[name]) / MIB
        for name in rss_warm
        if rss_end[name] - rss_warm[name] > RSS_MARGIN_BYTES + RSS_MARGIN_SHARE * rss_warm[name]
    }
    assert not grown, f"memory grew after warm-up beyond the margin (MiB): {grown}"

    # Every review written is counted once in its product's summary.
    async with Gateway(base_url) as gateway:
        for product in network.products:
            ratings = [rating for p, rating in written.values() if p == product]

            async def counted(product: str = product, expected: int = len(ratings)) -> dict[str, Any] | None:
                summary = (await gateway.get(network.maker, f"/v1/products/{product}/rating-summary")).body
                return summary if int(summary.get("count", 0)) == expected else None

            summary = await until(counted, f"product {product}'s summary counts its {len(ratings)} reviews", 60)
            if ratings:
                assert math.isclose(summary["mean"], sum(ratings) / len(ratings))


def write(client: httpx.AsyncClient, plan: ReviewPlan, written: dict[str, tuple[str, int]]) -> Request:
    async def send() -> int:
        headers = plan.customer.caller.headers | {"Idempotency-Key": plan.key}
        response = await client.post("/v1/reviews", json=plan.body, headers=headers)
        if response.status_code == 201:
            written[response.json()["review_id"]] = (plan.product_id, plan.rating)
        return response.status_code

    return send


def read(client: httpx.AsyncClient, path: str, headers: dict[str, str], **params: str | int) -> Request:
    async def send() -> int:
        return (await client.get(path, params=params, headers=headers)).status_code

    return send


def page(client: httpx.AsyncClient, path: str, headers: dict[str, str], degraded: list[list[str]]) -> Request:
    async def send() -> int:
        response = await client.get(path, headers=headers)
        if response.status_code == 200 and response.json().get("degraded"):
            degraded.append(response.json()["degraded"])
        return response.status_code

    return send


def _describe(failed: list[Sample], shown: int = 5) -> str:
    return "; ".join(f"{s.operation} {s.status or ''} {s.error}".strip() for s in failed[:shown])
