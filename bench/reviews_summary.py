"""GetRatingSummary and the first page of ListReviews as one product's reviews grow; SubmitReview throughput.

    python bench/reviews_summary.py [--sizes 10,10000,100000] [--calls 300] [--submissions 400]
                                    [--concurrency 16] [--database URL] [--backends sqlite,postgresql]

For each backend (SQLite always; PostgreSQL when ``--database`` or ``COLLABNET_TEST_POSTGRES_URL``
names a server) and each size, a fresh database is migrated and loaded straight with that many
reviews of one product (with their versions, moderation decisions and the summary rows they add
up to), the reviews service is started on it as its own process (with identity beside it, which
SubmitReview asks about affiliations), and the RPCs are called through gRPC one at a time:
GetRatingSummary and ListReviews' first page (20 reviews, most recent first, and most helpful
first). Summaries are maintained when reviews change, never computed on read, and each sort has
its index, so both should cost the same at 10 and at 100,000 reviews: the ratio of 100k to 10 is
printed. Then SubmitReview runs with ``--concurrency`` calls in flight on the largest product,
and the summary is checked to have counted every one of them exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import uvloop
from sqlalchemy.engine import make_url

from collabnet.reviews.v1 import reviews_pb2 as pb
from collabnet.reviews.v1.reviews_pb2_grpc import ReviewsServiceStub
from collabnet_kit.client import health_status
from collabnet_kit.logging import configure_logging
from collabnet_kit.nats_server import NatsServer, free_port
from collabnet_kit.principal import Principal, PrincipalSigner
from collabnet_kit.settings import DEV_SIGNING_KEY

if TYPE_CHECKING:
    from collabnet.reviews.v1.reviews_pb2_grpc import ReviewsServiceAsyncStub

PRODUCT = "bench-product"
MAKER = "bench-maker"
RETAILERS = ("bench-retailer-1", "bench-retailer-2", "bench-retailer-3")
WORDS = [
    *("sturdy", "quiet", "quick", "heavy", "bright", "compact", "handy"),
    *("simple", "glossy", "steady", "warm", "leaky", "loud", "solid"),
]


def timestamp_text(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


@dataclass
class Data:
    reviews: list[dict[str, Any]]
    versions: list[dict[str, Any]]
    moderations: list[dict[str, Any]]
    summaries: list[dict[str, Any]]
    days: list[dict[str, Any]]


def generate(size: int, seed: int = 11) -> Data:
    """``size`` published reviews of one product over the last 400 days, and the summaries they make."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    reviews, versions, moderations = [], [], []
    totals: dict[tuple[int, date | None], list[int]] = {}
    for index in range(size):
        rating = rng.choices((1, 2, 3, 4, 5), weights=(8, 6, 12, 30, 44))[0]
        revision = 1 if rng.random() < 0.6 else 2
        posted = now - timedelta(seconds=rng.uniform(0, 400 * 86_400))
        verified = rng.random() < 0.7
        review_id = str(uuid.UUID(int=rng.getrandbits(128)))
        body = f"Review {index}: " + " ".join(rng.choice(WORDS) for _ in range(30))
        reviews.append(
            {
                "id": review_id,
                "product_id": PRODUCT,
                "revision": revision,
                "author_id": f"author-{index}",
                "channel_partner_id": RETAILERS[index % len(RETAILERS)],
                "rating": rating,
                "title": "",
                "body": body,
                "media_urls": "[]",
                "body_hash": uuid.UUID(int=rng.getrandbits(128)).hex + uuid.UUID(int=rng.getrandbits(128)).hex,
                "status": "published",
                "version": 1,
                "verified": verified,
                "revision_bought": revision if verified else 0,
                "incentivized": False,
                "incentive": "",
                "affiliated": False,
                "affiliation_checked": True,
                "helpful_count": int(rng.paretovariate(1.3)) - 1,
                "unhelpful_count": 0,
                "created_at": posted,
                "posted_at": posted,
                "published_at": posted,
                "withdrawn_at": None,
                "counted_day": posted.date(),
            }
        )
        versions.append(
            {
                "review_id": review_id,
                "version": 1,
                "rating": rating,
                "title": "",
                "body": body,
                "media_urls": "[]",
                "revision": revision,
                "created_at": posted,
            }
        )
        moderations.append(
            {
                "id": str(uuid.UUID(int=rng.getrandbits(128))),
                "review_id": review_id,
                "version": 1,
                "status": "published",
                "reasons": "[]",
                "note": "",
                "moderator": "automatic",
                "automatic": True,
                "decided_at": posted,
            }
        )
        for key in ((0, None), (0, posted.date()), (revision, None), (revision, posted.date())):
            counts = totals.setdefault(key, [0, 0, 0, 0, 0, 0, 0])
            counts[0] += 1
            counts[1] += rating
            counts[1 + rating] += 1
    summaries, days = [], []
    for (revision, day), (count, total, *dist) in totals.items():
        row = {"product_id": PRODUCT, "revision": revision, "count": count, "total": total}
        row |= {f"d{i + 1}": n for i, n in enumerate(dist)}
        if day is None:
            summaries.append(row | {"updated_at": now})
        else:
            days.append(row | {"day": day})
    return Data(reviews, versions, moderations, summaries, days)


def product_rows() -> dict[str, list[dict[str, Any]]]:
    now = datetime.now(UTC)
    return {
        "product": [
            {"product_id": PRODUCT, "maker_id": MAKER, "latest_revision": 2, "registered": True, "updated_at": now}
        ],
        "listing": [
            {"listing_id": f"listing-{r}", "product_id": PRODUCT, "retailer_id": r, "active": True, "changed_at": now}
            for r in RETAILERS
        ],
    }


def tables(data: Data) -> dict[str, list[dict[str, Any]]]:
    return product_rows() | {
        "review": data.reviews,
        "review_version": data.versions,
        "moderation": data.moderations,
        "rating_summary": data.summaries,
        "rating_summary_day": data.days,
    }


async def load(url: str, data: Data) -> None:
    """Write the rows straight into the service's tables (migrated already)."""
    if url.startswith("postgresql"):
        connection = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
        try:
            for table, rows in tables(data).items():
                if rows:
                    columns = list(rows[0])
                    await connection.copy_records_to_table(
                        table, records=[tuple(r[c] for c in columns) for r in rows], columns=columns
                    )
            await connection.execute("ANALYZE")
        finally:
            await connection.close()
        return

    def sqlite_value(value: Any) -> Any:
        if isinstance(value, datetime):
            return timestamp_text(value)
        if isinstance(value, date):
            return value.isoformat()
        return value

    database = make_url(url).database
    assert database is not None
    connection3 = sqlite3.connect(database)
    with connection3:
        for table, rows in tables(data).items():
            if rows:
                columns = list(rows[0])
                connection3.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
                    [tuple(sqlite_value(r[c]) for c in columns) for r in rows],
                )
        connection3.execute("ANALYZE")
    connection3.close()


async def fresh_database(base: str | None, folder: Path, name: str) -> str:
    if base is None:
        return f"sqlite+aiosqlite:///{folder / f'{name}.db'}"
    url = make_url(base)
    admin = url.set(drivername="postgresql").render_as_string(False)
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return url.set(drivername="postgresql+asyncpg", database=name).render_as_string(False)


async def drop_database(base: str | None, name: str) -> None:
    if base is None:
        return
    admin = make_url(base).set(drivername="postgresql").render_as_string(False)
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metadata(principal: Principal) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {PrincipalSigner(DEV_SIGNING_KEY).sign(principal)}"),)


async def wait_serving(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        for _ in range(600):
            try:
                if await health_status(channel) == "SERVING":
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{address} never became SERVING")


async def timed(call: Any, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def measure(
    size: int, base: str | None, nats: NatsServer, folder: Path, args: argparse.Namespace, submit: bool
) -> dict[str, Any]:
    tag = "pg" if base else "sqlite"
    data = generate(size)
    reviews_db = await fresh_database(base, folder, f"collabnet_bench_reviews_{tag}_{size}")
    identity_db = await fresh_database(base, folder, f"collabnet_bench_identity_{tag}_{size}")
    common = dict(os.environ) | {
        "COLLABNET_NATS_URL": nats.url,
        "COLLABNET_STATE_DIR": str(folder),
        "COLLABNET_LOG_LEVEL": "warning",
        "OTEL_TRACES_SAMPLER": "always_off",
    }
    identity_port, reviews_port = free_port(), free_port()
    identity_env = common | {"COLLABNET_DATABASE_URL": identity_db, "COLLABNET_GRPC_PORT": str(identity_port)}
    reviews_env = common | {
        "COLLABNET_DATABASE_URL": reviews_db,
        "COLLABNET_GRPC_PORT": str(reviews_port),
        "COLLABNET_IDENTITY_ADDRESS": f"127.0.0.1:{identity_port}",
    }
    for module, env in (("collabnet_reviews", reviews_env), ("collabnet_identity", identity_env)):
        migrate = await asyncio.create_subprocess_exec(sys.executable, "-m", module, "migrate", env=env)
        assert await migrate.wait() == 0, f"{module} migrate failed"
    await load(reviews_db, data)
    processes = [
        await asyncio.create_subprocess_exec(sys.executable, "-m", "collabnet_identity", env=identity_env),
        await asyncio.create_subprocess_exec(sys.executable, "-m", "collabnet_reviews", env=reviews_env),
    ]
    service = metadata(Principal(service="bench"))
    result: dict[str, Any] = {"size": size}
    try:
        address = f"127.0.0.1:{reviews_port}"
        await wait_serving(f"127.0.0.1:{identity_port}")
        await wait_serving(address)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = ReviewsServiceStub(channel)
            summary_request = pb.GetRatingSummaryRequest(product_id=PRODUCT)
            first = await stub.GetRatingSummary(summary_request, metadata=service, timeout=30)
            assert first.count == size, (first.count, size)
            recent = pb.ListReviewsRequest(product_id=PRODUCT, page_size=20, listing_partner_id=RETAILERS[0])
            helpful = pb.ListReviewsRequest(
                product_id=PRODUCT, page_size=20, listing_partner_id=RETAILERS[0], sort=pb.REVIEW_SORT_HELPFUL
            )
            for _ in range(20):  # warm the connections and caches
                await stub.GetRatingSummary(summary_request, metadata=service, timeout=30)
                await stub.ListReviews(recent, metadata=service, timeout=30)
            summaries = await timed(
                lambda: stub.GetRatingSummary(summary_request, metadata=service, timeout=30), args.calls
            )
            recents = await timed(lambda: stub.ListReviews(recent, metadata=service, timeout=30), args.calls)
            helpfuls = await timed(lambda: stub.ListReviews(helpful, metadata=service, timeout=30), args.calls)
            page = await stub.ListReviews(recent, metadata=service, timeout=30)
            assert len(page.reviews) == min(20, size)
            result |= {
                "summary_p50": percentile(summaries, 50),
                "summary_p99": percentile(summaries, 99),
                "recent_p50": percentile(recents, 50),
                "recent_p99": percentile(recents, 99),
                "helpful_p50": percentile(helpfuls, 50),
                "helpful_p99": percentile(helpfuls, 99),
            }
            if submit:
                cpu_before = [cpu_seconds(p.pid) for p in processes]
                result |= await submissions(stub, args, size, data)
                cpu_after = [cpu_seconds(p.pid) for p in processes]
                spent = [
                    (after - before) * 1000 / args.submissions
                    for before, after in zip(cpu_before, cpu_after, strict=True)
                ]
                result |= {"identity_cpu_ms": spent[0], "reviews_cpu_ms": spent[1]}
    finally:
        for process in processes:
            process.terminate()
            await process.wait()
        await drop_database(base, f"collabnet_bench_reviews_{tag}_{size}")
        await drop_database(base, f"collabnet_bench_identity_{tag}_{size}")
    return result


async def submissions(stub: ReviewsServiceAsyncStub, args: argparse.Namespace, size: int, data: Data) -> dict[str, Any]:
    """SubmitReview with ``concurrency`` calls in flight, then a check that the summary counted each."""
    rng = random.Random(size)
    ratings = [rng.randint(1, 5) for _ in range(args.submissions)]
    queue = list(enumerate(ratings))
    latencies: list[float] = []

    async def worker() -> None:
        while queue:
            index, rating = queue.pop()
            author = f"bench-new-{index}"
            body = f"Submitted {index}: " + " ".join(rng.choice(WORDS) for _ in range(25))
            request = pb.SubmitReviewRequest(product_id=PRODUCT, author_id=author, rating=rating, body=body)
            started = time.perf_counter()
            reply = await stub.SubmitReview(
                request,
                metadata=metadata(
                    Principal(partner_id=RETAILERS[0], party_id=author, scopes=frozenset({"reviews:write"}))
                ),
                timeout=60,
            )
            latencies.append((time.perf_counter() - started) * 1000)
            assert reply.status == pb.REVIEW_STATUS_PUBLISHED, reply.moderation

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - started
    summary = await stub.GetRatingSummary(
        pb.GetRatingSummaryRequest(product_id=PRODUCT), metadata=metadata(Principal(service="bench")), timeout=30
    )
    expected = Counter(r["rating"] for r in data.reviews) + Counter(ratings)
    exact = summary.count == size + len(ratings) and list(summary.distribution) == [expected[s] for s in range(1, 6)]
    return {
        "submit_rate": len(ratings) / elapsed,
        "submit_p50": percentile(latencies, 50),
        "submit_p99": percentile(latencies, 99),
        "submit_exact": exact,
    }


async def run_backend(base: str | None, args: argparse.Namespace, sizes: list[int]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        nats = NatsServer(Path(tmp) / "nats")
        nats.start()
        try:
            return [await measure(size, base, nats, Path(tmp), args, submit=size == sizes[-1]) for size in sizes]
        finally:
            nats.stop()


def report(backend: str, results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nreviews on {backend}: {args.calls} calls each, one at a time; milliseconds at the client")
    print(
        f"{'reviews':>9} {'Summary p50':>12} {'p99':>7} {'List recent p50':>16} {'p99':>7} "
        f"{'List helpful p50':>17} {'p99':>7}"
    )
    for r in results:
        print(
            f"{r['size']:>9,} {r['summary_p50']:>12.2f} {r['summary_p99']:>7.2f} {r['recent_p50']:>16.2f} "
            f"{r['recent_p99']:>7.2f} {r['helpful_p50']:>17.2f} {r['helpful_p99']:>7.2f}"
        )
    small, large = results[0], results[-1]
    names = (("GetRatingSummary", "summary"), ("ListReviews recent", "recent"), ("helpful", "helpful"))
    pairs = [(small, large), *itertools.pairwise(results)] if len(results) > 2 else [(small, large)]
    for low, high in pairs if len(results) > 1 else []:
        ratios = ", ".join(
            f"{name} p50 x{high[key + '_p50'] / low[key + '_p50']:.2f} "
            f"p99 x{high[key + '_p99'] / low[key + '_p99']:.2f}"
            for name, key in names
        )
        print(f"ratio {high['size']:,} to {low['size']:,} reviews: {ratios}")
    if "submit_rate" in large:
        print(
            f"SubmitReview on the {large['size']:,}-review product, {args.concurrency} in flight: "
            f"{large['submit_rate']:.0f} reviews/s, p50 {large['submit_p50']:.1f} ms, "
            f"p99 {large['submit_p99']:.1f} ms; "
            f"summary afterwards {'exact' if large['submit_exact'] else 'WRONG'}; CPU per review: "
            f"reviews {large['reviews_cpu_ms']:.1f} ms, identity {large['identity_cpu_ms']:.1f} ms"
        )
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


async def main(args: argparse.Namespace) -> None:
    sizes = sorted(int(s) for s in args.sizes.split(","))
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if "postgresql" in backends and not args.database:
        print("PostgreSQL skipped: give --database or COLLABNET_TEST_POSTGRES_URL")
        backends.remove("postgresql")
    for backend in backends:
        base = args.database if backend == "postgresql" else None
        results = await run_backend(base, args, sizes)
        report("PostgreSQL" if base else "SQLite", results, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,10000,100000", help="reviews on the product, comma-separated")
    parser.add_argument("--calls", type=int, default=300, help="calls of each read RPC per size")
    parser.add_argument("--submissions", type=int, default=400, help="SubmitReview calls at the largest size")
    parser.add_argument("--concurrency", type=int, default=16, help="SubmitReview calls in flight")
    parser.add_argument("--database", default=os.environ.get("COLLABNET_TEST_POSTGRES_URL"), help="a PostgreSQL URL")
    parser.add_argument("--backends", default="sqlite,postgresql", help="sqlite, postgresql or both")
    configure_logging("bench", "warning")
    uvloop.run(main(parser.parse_args()))
