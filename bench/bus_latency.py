"""Commit-to-handler latency of the kit's event path, beside bare JetStream, in one run.

    python bench/bus_latency.py [--events 3000] [--rate 200]

Kit path: a producer commits a transaction that records an event in its outbox (SQLite); the relay
publishes it to JetStream; in another process, as another service would be, a durable pull
consumer hands it to a handler inside a transaction with its inbox row (its own SQLite database),
then acks. Latency runs from the producer's commit to the handler being called, and to the
handler's transaction committed and the message acked.

Bare path: the same number of messages at the same rate, published with ``js.publish`` and read,
in another process, by a pull consumer that acks each: the floor the kit path is compared with.

Both processes take their times from the same monotonic clock. Tracing is on as in production
(spans built, batched and discarded), database spans included.
Targets: kit p50 under 5 ms and within 10x of bare p50; kit p99 under 25 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import uvloop
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from sqlmodel.ext.asyncio.session import AsyncSession

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "libs/kit/tests"))

from collabnet.kittest.v1 import kittest_pb2
from collabnet_kit import migrations
from collabnet_kit.bus import Bus, Envelope
from collabnet_kit.consumer import Consumer
from collabnet_kit.db import Database
from collabnet_kit.logging import configure_logging
from collabnet_kit.nats_server import NatsServer
from collabnet_kit.outbox import Relay, new_event_id, record
from collabnet_kit.telemetry import Telemetry

WARMUP = 200
BARE_STREAM, BARE_SUBJECT = "BENCH_BARE", "bench.bare"


class Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def production_like_telemetry() -> Telemetry:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    return Telemetry(provider, MeterProvider())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> str:
    return " ".join(
        f"{v:8.3f}" for v in (percentile(values, 50), percentile(values, 99), statistics.fmean(values), max(values))
    )


async def paced(count: int, rate: float) -> AsyncIterator[int]:
    """Yield ``count`` times at ``rate`` per second (on an absolute schedule: lateness does not add up)."""
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        yield i


# --- the consuming process -------------------------------------------------------------------


async def consume_bare(nats_url: str, count: int) -> dict[str, list[int]]:
    bus = Bus(nats_url, name="bench-bare-consumer")
    await bus.connect()
    subscription = await bus.js.pull_subscribe(BARE_SUBJECT, durable="bench", stream=BARE_STREAM)
    print("ready", flush=True)
    seen: dict[str, list[int]] = {}
    while len(seen) < count:
        try:
            messages = await subscription.fetch(1, timeout=5)
        except TimeoutError:
            continue
        for message in messages:
            arrived = time.perf_counter_ns()
            await message.ack()
            seen[message.data.decode()] = [arrived, time.perf_counter_ns()]
    await bus.close()
    return seen


async def consume_kit(nats_url: str, folder: Path, count: int) -> dict[str, list[int]]:
    telemetry = production_like_telemetry()
    db = Database(f"sqlite+aiosqlite:///{folder / 'consumer.db'}", telemetry=telemetry)
    await migrations.upgrade(db, [])
    bus = Bus(nats_url, name="bench-consumer", tracer_provider=telemetry.tracer_provider)
    await bus.connect()
    seen: dict[str, list[int]] = {}
    done = asyncio.Event()

    async def handle(session: AsyncSession, event: kittest_pb2.NoteAdded, envelope: Envelope) -> None:
        seen[envelope.id] = [time.perf_counter_ns()]

    class TimedConsumer(Consumer):
        async def handle(self, message: Any) -> None:
            await super().handle(message)
            seen[(message.headers or {})["ce-id"]].append(time.perf_counter_ns())
            if len(seen) == count:
                done.set()

    consumer = TimedConsumer(
        bus,
        db,
        name="bench",
        domain="kittest",
        handlers={kittest_pb2.NoteAdded: handle},
        tracer_provider=telemetry.tracer_provider,
    )
    await consumer.start()
    print("ready", flush=True)
    await done.wait()
    await consumer.stop()
    await bus.close()
    await db.dispose()
    telemetry.shutdown()
    return seen


# --- the producing process ------------------------------------------------------------------


async def start_consumer(path: str, nats_url: str, folder: Path, count: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--role",
        f"consume-{path}",
        "--nats",
        nats_url,
        "--folder",
        str(folder),
        "--events",
        str(count),
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    ready = await asyncio.wait_for(process.stdout.readline(), 60)
    assert ready.strip() == b"ready", ready
    return process


async def consumer_times(process: asyncio.subprocess.Process) -> dict[str, list[int]]:
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    times: dict[str, list[int]] = json.loads(output)
    return times


async def produce_bare(nats_url: str, folder: Path, count: int, rate: float) -> list[float]:
    bus = Bus(nats_url, name="bench-bare-producer")
    await bus.connect()
    await bus.js.add_stream(name=BARE_STREAM, subjects=[BARE_SUBJECT])
    consumer = await start_consumer("bare", nats_url, folder, count)
    sent: dict[str, int] = {}
    async for i in paced(count, rate):
        sent[str(i)] = time.perf_counter_ns()
        await bus.js.publish(BARE_SUBJECT, str(i).encode())
    times = await consumer_times(consumer)
    await bus.close()
    return [(times[key][0] - sent[key]) / 1e6 for key in sorted(sent, key=int)][WARMUP:]


async def produce_kit(nats_url: str, folder: Path, count: int, rate: float) -> tuple[list[float], list[float]]:
    telemetry = production_like_telemetry()
    db = Database(f"sqlite+aiosqlite:///{folder / 'producer.db'}", telemetry=telemetry)
    await migrations.upgrade(db, [])
    bus = Bus(nats_url, name="bench-producer", tracer_provider=telemetry.tracer_provider)
    await bus.connect()
    await bus.ensure_stream("kittest")
    relay = Relay(db, bus)
    relay.start()
    consumer = await start_consumer("kit", nats_url, folder, count)
    committed: list[tuple[str, int]] = []
    async for i in paced(count, rate):
        event_id = new_event_id()
        async with db.transaction() as session:
            await record(
                session, kittest_pb2.NoteAdded(note_id=str(i), text="bench"), source="bench", event_id=event_id
            )
        committed.append((event_id, time.perf_counter_ns()))
    times = await consumer_times(consumer)
    await relay.stop()
    await bus.close()
    await db.dispose()
    telemetry.shutdown()
    to_handler = [(times[event_id][0] - at) / 1e6 for event_id, at in committed][WARMUP:]
    to_handled = [(times[event_id][1] - at) / 1e6 for event_id, at in committed][WARMUP:]
    return to_handler, to_handled


async def main(count: int, rate: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        nats = NatsServer(folder / "nats")
        nats.start()
        try:
            bare = await produce_bare(nats.url, folder, count, rate)
            handler, handled = await produce_kit(nats.url, folder, count, rate)
        finally:
            nats.stop()
    print(f"bus latency: {count - WARMUP} events at {rate:.0f}/s after {WARMUP} warm-up events (milliseconds)")
    print(f"{'path':<44} {'p50':>8} {'p99':>8} {'mean':>8} {'max':>8}")
    print(f"{'bare JetStream: publish -> consumed':<44} {summary(bare)}")
    print(f"{'kit: commit -> handler called':<44} {summary(handler)}")
    print(f"{'kit: commit -> handled, committed and acked':<44} {summary(handled)}")
    ratio = percentile(handler, 50) / percentile(bare, 50)
    print(f"ratio kit/bare at p50: {ratio:.1f}x")
    checks = [
        ("kit p50 < 5 ms", percentile(handler, 50) < 5),
        ("kit p50 within 10x of bare", ratio <= 10),
        ("kit p99 < 25 ms", percentile(handler, 99) < 25),
    ]
    print("targets: " + ", ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in checks))


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000, help="events measured (after the warm-up)")
    parser.add_argument("--rate", type=float, default=200.0, help="events offered per second")
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--nats", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    configure_logging("bench", "warning")  # to stderr: the consuming process reports on stdout
    if args.role == "consume-bare":
        print(json.dumps(uvloop.run(consume_bare(args.nats, args.events))))
    elif args.role == "consume-kit":
        print(json.dumps(uvloop.run(consume_kit(args.nats, args.folder, args.events))))
    else:
        uvloop.run(main(args.events + WARMUP, args.rate))


if __name__ == "__main__":
    run()
