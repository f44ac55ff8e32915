"""Feedback cases from review events, over growing histories: event-to-case latency at a fixed rate
beside bare JetStream in the same run, burst throughput, exactly-once under duplicates, and reads.

    python bench/improvement_cases.py [--sizes 10000,100000] [--events 300] [--rate 20] [--burst 500]
                                      [--database URL]

For each size, a history of that many reviews is written straight into a fresh database (after
migrating it): 200 products whose popularity follows a Zipf law (the hottest has about a fifth of
all reviews), 20 makers, 10 retailers, a case for every review at 2 stars or below (in every state
and outcome), and an initiative with objectives on the hottest product's average rating and case
recovery rate and on its maker's time to first engagement, so every live event also moves
objectives. The improvement service then runs as its own process (PostgreSQL when ``--database``
or COLLABNET_TEST_POSTGRES_URL names a server, otherwise SQLite), and:

- ``--events`` ReviewPublished events for the hottest product are published at ``--rate`` per
  second, half of them at 2 stars or below; latency runs from publishing a negative review to
  receiving the service's CaseOpened for it (consumer, handler with inbox, outbox, relay,
  JetStream). Each negative review is published a second time under a new event id: the case
  must still open once. The same number of bare JetStream messages at the same rate is the floor.
- ``--burst`` negative reviews are published as fast as JetStream takes them; throughput is cases
  opened per second until the last CaseOpened arrives.
- GetCase, ListCases (a retailer's first page), GetProductMetrics and GetPartnerMetrics are called
  through gRPC, one at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import uvloop
from nats.aio.msg import Msg
from sqlalchemy.engine import make_url

from collabnet.improvement.v1 import events_pb2 as ev
from collabnet.improvement.v1 import improvement_pb2 as pb
from collabnet.improvement.v1.improvement_pb2_grpc import ImprovementServiceStub
from collabnet.reviews.v1 import events_pb2 as reviews
from collabnet_improvement import store
from collabnet_kit.bus import Bus
from collabnet_kit.client import health_status
from collabnet_kit.db import Database
from collabnet_kit.logging import configure_logging
from collabnet_kit.nats_server import NatsServer, free_port
from collabnet_kit.principal import Principal, PrincipalSigner
from collabnet_kit.settings import DEV_SIGNING_KEY

PRODUCTS, MAKERS, RETAILERS = 200, 20, 10
READS = 300
RATINGS = (1, 2, 3, 4, 5)
RATING_WEIGHTS = (0.1, 0.1, 0.15, 0.3, 0.35)
STATES = ("open", "engaged", "investigating", "resolution_proposed", "resolved", "closed")
OUTCOMES = {"open": "pending", "engaged": "pending", "investigating": "pending", "resolution_proposed": "pending"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class History:
    """Rows for the service's tables, generated from a seed."""

    def __init__(self, size: int, seed: int = 11) -> None:
        rng = random.Random(seed)
        now = datetime.now(UTC)
        self.makers = [f"maker-{i}" for i in range(MAKERS)]
        self.retailers = [f"retailer-{i}" for i in range(RETAILERS)]
        self.products = [f"product-{i}" for i in range(PRODUCTS)]
        self.maker_of = {p: self.makers[i % MAKERS] for i, p in enumerate(self.products)}
        self.hot = self.products[0]
        weights = [1 / (rank + 1) for rank in range(PRODUCTS)]
        self.rows: dict[str, list[dict[str, Any]]] = {
            name: [] for name in ("product", "review", "rating_stat", "feedback_case", "case_partner")
        }
        for product in self.products:
            self.rows["product"].append(
                {
                    "product_id": product,
                    "maker_id": self.maker_of[product],
                    "name": product,
                    "sku": product,
                    "category": "kitchen",
                    "revision": 1,
                    "network_changed_at": None,
                    "updated_at": now,
                }
            )
        stats: Counter[tuple[str, str]] = Counter()
        self.case_ids: list[str] = []
        for index, product in enumerate(rng.choices(self.products, weights=weights, k=size)):
            rating = rng.choices(RATINGS, weights=RATING_WEIGHTS)[0]
            review_id, retailer = f"history-{index}", self.retailers[index % RETAILERS]
            at = now - timedelta(minutes=size - index)
            self.rows["review"].append(
                {
                    "review_id": review_id,
                    "product_id": product,
                    "revision": 1,
                    "author_id": f"customer-{index}",
                    "channel_partner_id": retailer,
                    "rating": rating,
                    "version": 1,
                    "withdrawn": False,
                    "published_at": at,
                    "updated_at": at,
                }
            )
            for key in ("reviews", f"sum:{rating}", "negative" if rating <= 2 else "positive"):
                stats[(product, key)] += 1
            if rating <= 2:
                self._case(rng, review_id, product, retailer, rating, at)
        for product in self.products:
            count = stats[(product, "reviews")]
            if count:
                total = sum(r * stats[(product, f"sum:{r}")] for r in RATINGS)
                for revision in (0, 1):
                    self.rows["rating_stat"].append(
                        {
                            "product_id": product,
                            "revision": revision,
                            "reviews": count,
                            "rating_sum": total,
                            "negative": stats[(product, "negative")],
                        }
                    )

    def _case(self, rng: random.Random, review_id: str, product: str, retailer: str, rating: int, at: datetime) -> None:
        case_id = str(uuid.uuid4())
        self.case_ids.append(case_id)
        state = rng.choice(STATES)
        outcome = OUTCOMES.get(state) or rng.choice(("resolved", "recovered", "not_recovered"))
        resolved = at + timedelta(days=3) if state in ("resolved", "closed") else None
        self.rows["feedback_case"].append(
            {
                "id": case_id,
                "review_id": review_id,
                "product_id": product,
                "revision": 1,
                "customer_id": review_id.replace("history", "customer"),
                "maker_id": self.maker_of[product],
                "retailer_id": retailer,
                "state": state,
                "outcome": outcome,
                "opening_rating": rating,
                "current_rating": 5 if outcome == "recovered" else rating,
                "review_withdrawn": False,
                "opened_by_revision": False,
                "recovery_threshold": 4,
                "recovery_window_seconds": 30 * 86400,
                "root_cause": None,
                "resolution": "",
                "reopen_count": 0,
                "opened_at": at,
                "state_changed_at": at,
                "updated_at": at,
                "resolved_at": resolved,
                "closed_at": resolved if state == "closed" else None,
                "outcome_at": resolved,
                # Windows still running: the not-recovered job has nothing to catch up on.
                "recovery_deadline": datetime.now(UTC) + timedelta(days=30) if outcome == "resolved" else None,
                "invited_at": resolved,
            }
        )
        for partner, role in ((self.maker_of[product], "maker"), (retailer, "retailer")):
            engaged = state != "open"
            seconds = rng.uniform(600, 40 * 3600) if engaged else None
            self.rows["case_partner"].append(
                {
                    "case_id": case_id,
                    "partner_id": partner,
                    "role": role,
                    "opened_at": at,
                    "target_seconds": 86400,
                    "assigned_at": at,
                    "engage_due_at": at + timedelta(days=1),
                    "engaged_at": at + timedelta(seconds=seconds) if seconds else None,
                    "engagement_seconds": seconds,
                    "within_target": seconds < 86400 if seconds else None,
                }
            )


async def load(url: str, history: History) -> None:
    db = Database(url)
    try:
        tables = {t.name: t for t in store.Table.metadata.sorted_tables}
        async with db.engine.begin() as connection:
            for name in ("product", "review", "rating_stat", "feedback_case", "case_partner"):
                rows = history.rows[name]
                for start in range(0, len(rows), 2000):
                    await connection.execute(tables[name].insert(), rows[start : start + 2000])
            if db.dialect == "postgresql":
                await connection.exec_driver_sql("ANALYZE")
    finally:
        await db.dispose()


async def fresh_database(base: str | None, folder: Path, size: int) -> str:
    if base is None:
        return f"sqlite+aiosqlite:///{folder / f'improvement-{size}.db'}"
    url = make_url(base)
    admin = url.set(drivername="postgresql").render_as_string(False)
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "collabnet_bench_improvement_{size}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "collabnet_bench_improvement_{size}"')
    finally:
        await connection.close()
    return url.set(drivername="postgresql+asyncpg", database=f"collabnet_bench_improvement_{size}").render_as_string(
        False
    )


async def drop_database(base: str | None, size: int) -> None:
    if base is None:
        return
    connection = await asyncpg.connect(make_url(base).set(drivername="postgresql").render_as_string(False))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "collabnet_bench_improvement_{size}" WITH (FORCE)')
    finally:
        await connection.close()


class Opened:
    """CaseOpened events as they arrive, by review id."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.count: Counter[str] = Counter()
        self.changed = asyncio.Event()

    async def on_message(self, msg: Msg) -> None:
        if (msg.headers or {}).get("ce-type") == ev.CaseOpened.DESCRIPTOR.full_name:
            event = ev.CaseOpened.FromString(msg.data)
            self.at.setdefault(event.review_id, time.perf_counter())
            self.count[event.review_id] += 1
            self.changed.set()

    async def wait_for(self, review_ids: list[str], timeout: float = 120) -> None:
        deadline = time.perf_counter() + timeout
        while not all(r in self.at for r in review_ids):
            if time.perf_counter() > deadline:
                missing = sum(r not in self.at for r in review_ids)
                raise TimeoutError(f"{missing} cases never opened")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 1)


async def bare_jetstream(bus: Bus, events: int, rate: float) -> list[float]:
    """Publish-to-receive latency of plain JetStream messages at the same rate: the floor."""
    await bus.js.add_stream(name="BENCH_BARE", subjects=["bench.bare"])
    received: dict[str, float] = {}
    done = asyncio.Event()

    async def on_message(msg: Msg) -> None:
        received[msg.data.decode()] = time.perf_counter()
        await msg.ack()
        if len(received) == events:
            done.set()

    subscription = await bus.js.subscribe("bench.bare", stream="BENCH_BARE", cb=on_message, manual_ack=True)
    sent: dict[str, float] = {}
    for index in range(events):
        key = str(index)
        sent[key] = time.perf_counter()
        await bus.js.publish("bench.bare", key.encode())
        await asyncio.sleep(max(0.0, sent[key] + 1 / rate - time.perf_counter()))
    await asyncio.wait_for(done.wait(), 60)
    await subscription.unsubscribe()
    await bus.js.delete_stream("BENCH_BARE")
    return [(received[k] - sent[k]) * 1000 for k in sent]


def review(history: History, rating: int) -> reviews.ReviewPublished:
    return reviews.ReviewPublished(
        review_id=f"live-{uuid.uuid4().hex}",
        product_id=history.hot,
        revision=1,
        author_id=f"live-{uuid.uuid4().hex[:8]}",
        channel_partner_id=history.retailers[0],
        rating=rating,
    )


async def measure(
    size: int, base: str | None, nats: NatsServer, folder: Path, events: int, rate: float, burst: int
) -> dict[str, Any]:
    history = History(size)
    url = await fresh_database(base, folder, size)
    env = dict(os.environ) | {
        "COLLABNET_DATABASE_URL": url,
        "COLLABNET_NATS_URL": nats.url,
        "COLLABNET_STATE_DIR": str(folder),
        "COLLABNET_LOG_LEVEL": "warning",
        "OTEL_TRACES_SAMPLER": "always_off",
    }
    migrate = await asyncio.create_subprocess_exec(sys.executable, "-m", "collabnet_improvement", "migrate", env=env)
    assert await migrate.wait() == 0
    await load(url, history)
    port = free_port()
    service = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collabnet_improvement", env=env | {"COLLABNET_GRPC_PORT": str(port)}
    )
    metadata = (("authorization", f"Bearer {PrincipalSigner(DEV_SIGNING_KEY).sign(Principal(service='bench'))}"),)
    bus = Bus(nats.url, name="bench")
    await bus.connect()
    await bus.ensure_stream("reviews")
    opened = Opened()
    rng = random.Random(size)
    result: dict[str, Any] = {"size": size, "cases": len(history.case_ids)}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for _ in range(300):
                try:
                    if await health_status(channel) == "SERVING":
                        break
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)
            stub = ImprovementServiceStub(channel)
            initiative = await stub.CreateInitiative(
                pb.CreateInitiativeRequest(
                    owner_id=history.maker_of[history.hot],
                    title="Hot product",
                    kind=pb.INITIATIVE_KIND_PRODUCT_REDESIGN,
                    product_id=history.hot,
                ),
                metadata=metadata,
            )
            due = datetime.now(UTC) + timedelta(days=90)
            for metric, target in (
                (pb.Metric(kind=pb.METRIC_KIND_PRODUCT_AVERAGE_RATING, product_id=history.hot), 4.9),
                (pb.Metric(kind=pb.METRIC_KIND_CASE_RECOVERY_RATE, product_id=history.hot), 0.99),
                (
                    pb.Metric(kind=pb.METRIC_KIND_TIME_TO_FIRST_ENGAGEMENT, partner_id=history.maker_of[history.hot]),
                    0.5,
                ),
            ):
                request = pb.AddObjectiveRequest(initiative_id=initiative.initiative_id, metric=metric, target=target)
                request.due_time.FromDatetime(due)
                await stub.AddObjective(request, metadata=metadata)
            subscription = await bus.js.subscribe(
                "collabnet.improvement.>", stream="COLLABNET_IMPROVEMENT", cb=opened.on_message, ordered_consumer=True
            )
            bare = await bare_jetstream(bus, events, rate)

            sent: dict[str, float] = {}
            negatives: list[reviews.ReviewPublished] = []
            for index in range(events):
                event = review(history, rng.choice((1, 2)) if index % 2 == 0 else rng.choice((3, 4, 5)))
                started = time.perf_counter()
                await bus.publish_event(event, event_id=str(uuid.uuid4()), source="reviews")
                if event.rating <= 2:
                    sent[event.review_id] = started
                    negatives.append(event)
                await asyncio.sleep(max(0.0, started + 1 / rate - time.perf_counter()))
            await opened.wait_for(list(sent))
            for event in negatives:  # the same reviews again, under new event ids
                await bus.publish_event(event, event_id=str(uuid.uuid4()), source="reviews")
            live = [(opened.at[r] - t) * 1000 for r, t in sent.items()]

            burst_events = [review(history, 1) for _ in range(burst)]
            first = time.perf_counter()
            for event in burst_events:
                await bus.publish_event(event, event_id=str(uuid.uuid4()), source="reviews")
            published = time.perf_counter() - first
            await opened.wait_for([e.review_id for e in burst_events], timeout=600)
            drained = max(opened.at[e.review_id] for e in burst_events) - first
            await asyncio.sleep(1.0)  # duplicates still in flight would show now
            once = all(opened.count[e.review_id] == 1 for e in negatives + burst_events)
            await subscription.unsubscribe()

            reads: dict[str, list[float]] = {
                "GetCase": [],
                "ListCases": [],
                "GetProductMetrics": [],
                "GetPartnerMetrics": [],
            }
            calls: dict[str, Callable[[], Awaitable[Any]]] = {
                "GetCase": lambda: stub.GetCase(
                    pb.GetCaseRequest(case_id=rng.choice(history.case_ids)), metadata=metadata
                ),
                "ListCases": lambda: stub.ListCases(
                    pb.ListCasesRequest(partner_id=rng.choice(history.retailers), page_size=50), metadata=metadata
                ),
                "GetProductMetrics": lambda: stub.GetProductMetrics(
                    pb.GetProductMetricsRequest(product_id=history.hot), metadata=metadata
                ),
                "GetPartnerMetrics": lambda: stub.GetPartnerMetrics(
                    pb.GetPartnerMetricsRequest(partner_id=history.maker_of[history.hot]), metadata=metadata
                ),
            }
            for name, call in calls.items():
                for _ in range(READS if name != "ListCases" else READS // 3):
                    t = time.perf_counter()
                    await call()
                    reads[name].append((time.perf_counter() - t) * 1000)
        status = await asyncio.to_thread(Path(f"/proc/{service.pid}/status").read_text)
        peak_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    finally:
        service.terminate()
        await service.wait()
        await bus.close()
        await drop_database(base, size)
    result |= {
        "bare_p50": percentile(bare, 50),
        "bare_p99": percentile(bare, 99),
        "live_p50": percentile(live, 50),
        "live_p99": percentile(live, 99),
        "burst_publish_rate": burst / published,
        "burst_rate": burst / drained,
        "exactly_once": once,
        "memory_mb": peak_kb / 1024,
    }
    for name, values in reads.items():
        result[f"{name}_p50"], result[f"{name}_p99"] = percentile(values, 50), percentile(values, 99)
    return result


async def main(sizes: list[int], base: str | None, events: int, rate: float, burst: int) -> None:
    backend = "PostgreSQL" if base else "SQLite"
    with tempfile.TemporaryDirectory() as tmp:
        nats = NatsServer(Path(tmp) / "nats")
        nats.start()
        try:
            results = [await measure(size, base, nats, Path(tmp), events, rate, burst) for size in sizes]
        finally:
            nats.stop()
    print(f"improvement cases on {backend}: {events} reviews at {rate:g}/s (half negative), a burst of {burst}; ms")
    print(
        f"{'reviews':>9} {'cases':>7} {'bare p50':>9} {'p99':>6} {'case p50':>9} {'p99':>6} {'x bare p50':>10} "
        f"{'burst cases/s':>13} {'once':>5} {'MB':>5}"
    )
    for r in results:
        print(
            f"{r['size']:>9,} {r['cases']:>7,} {r['bare_p50']:>9.2f} {r['bare_p99']:>6.2f} {r['live_p50']:>9.2f} "
            f"{r['live_p99']:>6.2f} {r['live_p50'] / r['bare_p50']:>10.1f} {r['burst_rate']:>13.0f} "
            f"{'yes' if r['exactly_once'] else 'NO':>5} {r['memory_mb']:>5.0f}"
        )
    print(
        f"{'reviews':>9} "
        + " ".join(
            f"{n + ' p50':>22} {'p99':>6}" for n in ("GetCase", "ListCases", "GetProductMetrics", "GetPartnerMetrics")
        )
    )
    for r in results:
        print(
            f"{r['size']:>9,} "
            + " ".join(
                f"{r[n + '_p50']:>22.2f} {r[n + '_p99']:>6.2f}"
                for n in ("GetCase", "ListCases", "GetProductMetrics", "GetPartnerMetrics")
            )
        )
    for previous, current in itertools.pairwise(results):
        growth = current["size"] / previous["size"]
        print(
            f"x{growth:.0f} reviews: case p99 x{current['live_p99'] / previous['live_p99']:.2f}, burst rate "
            f"x{current['burst_rate'] / previous['burst_rate']:.2f}, GetPartnerMetrics p99 "
            f"x{current['GetPartnerMetrics_p99'] / previous['GetPartnerMetrics_p99']:.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="reviews in the history, comma-separated")
    parser.add_argument("--events", type=int, default=300, help="live reviews published at --rate")
    parser.add_argument("--rate", type=float, default=20.0, help="live reviews per second")
    parser.add_argument("--burst", type=int, default=500, help="negative reviews published at once")
    parser.add_argument("--database", default=os.environ.get("COLLABNET_TEST_POSTGRES_URL"), help="a PostgreSQL URL")
    args = parser.parse_args()
    configure_logging("bench", "warning")
    uvloop.run(main([int(s) for s in args.sizes.split(",")], args.database, args.events, args.rate, args.burst))
