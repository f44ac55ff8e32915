"""Parquet export of a partner's feed: throughput, and whether memory stays flat as the feed grows.

    python bench/export.py [--events 1000000] [--baseline 100000] [--days 30] [--page 5000]

A synthetic feed of ``--events`` events is exported to a temporary directory with
``collabnet_analytics.export.ParquetExport``, page by page as the service does it, and so is a
feed of ``--baseline`` events in the same run. The mix is what a maker sees: 40% ReviewPublished
(with its disclosure and publish time), 25% RatingSummaryChanged, 25% OrderPlaced with two lines,
10% CaseOpened, in position order over ``--days`` days (so each feed has the same event types and
days, whatever its length). The events are generated lazily, one page at a time.

Each size runs in a fresh process, which reports its own peak resident memory (``ru_maxrss``) and
its resident memory after imports and a warm-up, before the export started; the export's own
share is the difference. The resident memory after each tenth of the large export shows whether it
levels off once the buffers' bounds are reached. Throughput counts the time spent in ``write`` and
``commit`` only (making the events is timed apart). The ratios of the large export to the baseline
are printed: peak memory should stay near 1 (buffers are bounded) and throughput near 1 (no cost
grows with the feed).
Afterwards DuckDB counts the rows written, and the average rating per product revision is queried
over the files.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from collabnet.common.v1.common_pb2 import Money
from collabnet.improvement.v1 import events_pb2 as improvement
from collabnet.reviews.v1 import events_pb2 as reviews
from collabnet.supplychain.v1 import events_pb2 as supplychain
from collabnet_analytics.domain import Shared
from collabnet_analytics.export import ParquetExport

PARTNER = "bench-maker"
RETAILERS = ("bench-retailer-1", "bench-retailer-2", "bench-retailer-3")
PRODUCTS = [f"product-{i:04d}" for i in range(500)]
START = datetime(2026, 10, 1, tzinfo=UTC)
MIX = (("review", 40), ("summary", 25), ("order", 25), ("case", 10))


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def pseudonym(rng: random.Random) -> str:
    return f"anon-{rng.getrandbits(128):032x}"


def event(kind: str, rng: random.Random, moment: datetime) -> tuple[str, Message]:
    """One synthetic event of a kind, and the service that published it."""
    product = rng.choice(PRODUCTS)
    revision = rng.randint(1, 3)
    if kind == "review":
        verified = rng.random() < 0.7
        return "reviews", reviews.ReviewPublished(
            review_id=f"review-{rng.getrandbits(64):016x}",
            product_id=product,
            revision=revision,
            author_id=pseudonym(rng),
            channel_partner_id=rng.choice(RETAILERS),
            rating=rng.choices((1, 2, 3, 4, 5), weights=(8, 6, 12, 30, 44))[0],
            disclosure=reviews.Disclosure(verified_purchase=verified, revision_bought=revision if verified else 0),
            publish_time=stamp(moment),
        )
    if kind == "summary":
        distribution = [rng.randint(0, 400) for _ in range(5)]
        count = sum(distribution)
        mean = sum((i + 1) * n for i, n in enumerate(distribution)) / max(count, 1)
        return "reviews", reviews.RatingSummaryChanged(
            product_id=product,
            count=count,
            mean=mean,
            smoothed_mean=(mean * count + 3.8 * 10) / (count + 10),
            distribution=distribution,
            revision=revision,
        )
    if kind == "order":
        lines = [
            supplychain.OrderLine(
                product_id=rng.choice(PRODUCTS),
                revision=rng.randint(1, 3),
                quantity=rng.randint(1, 4),
                unit_price=Money(currency_code="EUR", amount_minor=rng.randint(500, 50_000)),
            )
            for _ in range(2)
        ]
        total = sum(line.quantity * line.unit_price.amount_minor for line in lines)
        return "supplychain", supplychain.OrderPlaced(
            order_id=f"order-{rng.getrandbits(64):016x}",
            customer_id=pseudonym(rng),
            retailer_id=rng.choice(RETAILERS),
            lines=lines,
            total=Money(currency_code="EUR", amount_minor=total),
            place_time=stamp(moment),
        )
    return "improvement", improvement.CaseOpened(
        case_id=f"case-{rng.getrandbits(64):016x}",
        review_id=f"review-{rng.getrandbits(64):016x}",
        product_id=product,
        customer_id=pseudonym(rng),
        maker_id=PARTNER,
        retailer_id=rng.choice(RETAILERS),
        rating=rng.randint(1, 2),
        open_time=stamp(moment),
    )


def feed(count: int, days: int, page: int, seed: int = 7) -> Iterator[list[Shared]]:
    """The feed's pages, made as they are asked for: events in position order, spread evenly over
    ``days`` days with a few seconds of jitter."""
    rng = random.Random(seed)
    kinds = [kind for kind, _ in MIX]
    weights = [weight for _, weight in MIX]
    step = days * 86_400 / count
    for first in range(1, count + 1, page):
        batch = []
        for position in range(first, min(first + page, count + 1)):
            moment = START + timedelta(seconds=position * step + rng.uniform(0, min(step, 5)))
            source, message = event(rng.choices(kinds, weights)[0], rng, moment)
            batch.append(
                Shared(
                    position=position,
                    id=f"{rng.getrandbits(128):032x}",
                    type=message.DESCRIPTOR.full_name,
                    source=f"collabnet.{source}",
                    time=moment,
                    event=message,
                )
            )
        yield batch


def rss_now() -> int:
    """This process's resident memory in bytes, from /proc."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def child(count: int, days: int, page: int, folder: Path) -> dict[str, Any]:
    """One export in this (fresh) process; returns its figures."""
    # Warm up: the converters, pyarrow's and the writer's first allocations.
    with tempfile.TemporaryDirectory() as warm:
        warmup = ParquetExport(warm, PARTNER)
        for batch in feed(200, days=1, page=200, seed=1):
            warmup.write(batch)
        warmup.commit()
    before = rss_now()
    run = ParquetExport(folder, PARTNER)
    exporting = generating = 0.0
    pages = feed(count, days, page)
    checkpoints = {round(count * tenth / 10) for tenth in range(1, 11)}
    during = []
    started = time.perf_counter()
    while True:
        made = time.perf_counter()
        batch = next(pages, [])
        generating += time.perf_counter() - made
        if not batch:
            break
        written = time.perf_counter()
        run.write(batch)
        exporting += time.perf_counter() - written
        if any(batch[0].position <= c <= batch[-1].position for c in checkpoints):
            during.append(rss_now())
        del batch
    committed = time.perf_counter()
    summary = run.commit()
    exporting += time.perf_counter() - committed
    wall = time.perf_counter() - started
    size = sum(f.stat().st_size for f in folder.rglob("*.parquet"))
    return {
        "events": summary.events,
        "files": len(summary.files),
        "bytes": size,
        "export_seconds": exporting,
        "generate_seconds": generating,
        "wall_seconds": wall,
        "rss_before": before,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_during": during,
    }


def measure(count: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run one export in a fresh process, check its files with DuckDB, and return the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "export"
        command = [sys.executable, __file__, "--role", "child", "--folder", str(folder)]
        command += ["--events", str(count), "--days", str(args.days), "--page", str(args.page)]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        result: dict[str, Any] = json.loads(done.stdout)
        result |= check(folder)
    return result


def check(folder: Path) -> dict[str, Any]:
    import duckdb

    started = time.perf_counter()
    with duckdb.connect() as connection:
        rows = connection.execute(f"SELECT count(*) FROM read_parquet('{folder}/*/*/*.parquet')").fetchall()[0][0]
        reviews_glob = f"{folder}/event_type=collabnet.reviews.v1.ReviewPublished/*/*.parquet"
        averages = connection.execute(
            f"SELECT product_id, revision, avg(rating) FROM read_parquet('{reviews_glob}', hive_partitioning=true) "
            "GROUP BY ALL"
        ).fetchall()
    return {"rows": rows, "revisions": len(averages), "query_seconds": time.perf_counter() - started}


def report(results: list[dict[str, Any]], args: argparse.Namespace, wall: float) -> None:
    mib = 1024 * 1024
    print(f"\nParquet export of a feed over {args.days} days, pages of {args.page:,}; fresh process per size")
    print(
        f"{'events':>10} {'export ev/s':>12} {'incl. making':>13} {'files':>6} {'MiB out':>8} "
        f"{'peak RSS MiB':>13} {'RSS before':>11} {'export MiB':>11} {'DuckDB rows':>12} {'query s':>8}"
    )
    for r in results:
        print(
            f"{r['events']:>10,} {r['events'] / r['export_seconds']:>12,.0f} "
            f"{r['events'] / r['wall_seconds']:>13,.0f} {r['files']:>6} {r['bytes'] / mib:>8.1f} "
            f"{r['peak_rss'] / mib:>13.1f} {r['rss_before'] / mib:>11.1f} "
            f"{(r['peak_rss'] - r['rss_before']) / mib:>11.1f} {r['rows']:>12,} {r['query_seconds']:>8.2f}"
        )
        assert r["rows"] == r["events"], "DuckDB read a different number of rows than were exported"
    base, large = results[0], results[-1]
    throughput = (large["events"] / large["export_seconds"]) / (base["events"] / base["export_seconds"])
    peak = large["peak_rss"] / base["peak_rss"]
    own = (large["peak_rss"] - large["rss_before"]) / (base["peak_rss"] - base["rss_before"])
    print(
        f"ratio {large['events']:,} to {base['events']:,} events: peak RSS x{peak:.2f}, "
        f"export's own memory x{own:.2f}, throughput x{throughput:.2f}"
    )
    during = " ".join(f"{rss / mib:.0f}" for rss in large["rss_during"])
    print(f"RSS during the {large['events']:,}-event export, MiB after each tenth of it: {during}")
    print(f"bench run time {wall:.1f} s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    results = [measure(count, args) for count in sorted({args.baseline, args.events})]
    report(results, args, time.perf_counter() - started)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the large export")
    parser.add_argument("--baseline", type=int, default=100_000, help="events in the baseline export")
    parser.add_argument("--days", type=int, default=30, help="days the events are spread over")
    parser.add_argument("--page", type=int, default=5000, help="events given to write() at a time")
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.role == "child":
        print(json.dumps(child(arguments.events, arguments.days, arguments.page, arguments.folder)))
    else:
        main(arguments)
