"""The transactional outbox: an event is written in the same transaction as the change that caused
it, and a relay publishes it to JetStream afterwards.

    async with db.transaction() as session:
        session.add(review_row)
        await record(session, ReviewPublished(...), source="reviews")

The relay has two paths:

- **Fast**: the unit of work hands the relay the rows of each transaction the moment it commits;
  the relay publishes them in commit order and then marks them sent. Latency is a publish, not a
  poll interval or a database read.
- **Recovery**: the relay polls for rows still unsent once their ``available_at`` has passed: rows
  a crashed process never published, rows whose publish failed (retried with back-off). A new row is
  due for polling only after a grace period, so pollers on other replicas leave the fast path of
  the replica that wrote it alone. On PostgreSQL polled rows are claimed with ``FOR UPDATE SKIP
  LOCKED``, so replicas never poll the same row at once.

A row published twice (a relay dying between publishing and marking) is dropped by the stream's
de-duplication window (``Nats-Msg-Id`` = event id), and consumers de-duplicate again by event id.

Metrics: ``collabnet.relay.publish.duration`` (publish to ack, per event and subject), and the
gauges ``collabnet.outbox.backlog`` and ``collabnet.outbox.oldest_age``, whose figures the relay
reads from the database on its own loop (every poll interval) and only reports when collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from google.protobuf.message import Message
from opentelemetry import metrics
from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet_kit import telemetry
from collabnet_kit.bus import Bus, cloudevent_headers, subject_of, trace_headers
from collabnet_kit.db import Database, UtcDateTime, note_recorded_event
from collabnet_kit.tables import outbox

log = structlog.get_logger(__name__)

FAST_PATH_GRACE = timedelta(seconds=5)
"""How long a freshly recorded row is left to the fast path before pollers may take it."""
PURGE_EVERY_SECONDS = 600.0


def new_event_id() -> str:
    return str(uuid.uuid4())


async def record(session: AsyncSession, event: Message, *, source: str, event_id: str | None = None) -> str:
    """Add ``event`` to the session's transaction; it is published only if the transaction commits.

    ``source`` names the service (``ce-source`` becomes ``/collabnet/<source>``). Returns the event
    id. The current trace context is stored with the row, so the publish joins the trace of the
    request (or event) that caused it.
    """
    event_id = event_id or new_event_id()
    now = datetime.now(UTC)
    event_type = event.DESCRIPTOR.full_name
    row = {
        "event_id": event_id,
        "subject": subject_of(event),
        "event_type": event_type,
        "payload": event.SerializeToString(),
        "headers": cloudevent_headers(event_id, event_type, f"/collabnet/{source}", now) | trace_headers(),
        "created_at": now,
        "available_at": now + FAST_PATH_GRACE,
    }
    await session.exec(outbox.insert().values(**row))
    note_recorded_event(session, row)
    return event_id


class Relay:
    """Publishes committed outbox rows. One per service process: start it, and stop it.

    ``meter`` makes its instruments (the service's ``telemetry.meter(...)``); none, no metrics.
    """

    def __init__(
        self,
        db: Database,
        bus: Bus,
        *,
        batch_size: int = 100,
        poll_seconds: float = 1.0,
        max_backoff_seconds: float = 30.0,
        keep_sent: timedelta = timedelta(days=1),
        meter: metrics.Meter | None = None,
    ) -> None:
        self.db = db
        self.keep_sent = keep_sent
        self.bus = bus
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._fresh: deque[Mapping[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # (unsent rows, when the oldest of them was recorded) as last read; None before the first read.
        self._backlog: tuple[int, datetime | None] | None = None
        meter = meter or metrics.NoOpMeter("collabnet_kit.outbox")
        self._publish_duration = meter.create_histogram(
            "collabnet.relay.publish.duration",
            unit="s",
            description="Time from publishing an outbox event to JetStream's acknowledgement.",
            explicit_bucket_boundaries_advisory=telemetry.SECONDS_BUCKETS,
        )
        meter.create_observable_gauge(
            "collabnet.outbox.backlog",
            callbacks=[self._observe_backlog],
            unit="{event}",
            description="Events recorded in the outbox and not yet published.",
        )
        meter.create_observable_gauge(
            "collabnet.outbox.oldest_age",
            callbacks=[self._observe_oldest_age],
            unit="s",
            description="Age of the oldest event not yet published; 0 when there is none.",
        )
        db.on_events_committed(self._committed)

    def _observe_backlog(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        if self._backlog is not None:
            yield metrics.Observation(self._backlog[0])

    def _observe_oldest_age(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        if self._backlog is not None:
            oldest = self._backlog[1]
            age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
            yield metrics.Observation(max(0.0, age))

    async def refresh_backlog(self) -> tuple[int, datetime | None]:
        """Read how many rows are unsent and when the oldest was recorded, for the backlog gauges."""
        first_recorded = sa.func.min(outbox.c.created_at, type_=UtcDateTime())  # aware on SQLite too
        query = sa.select(sa.func.count(), first_recorded).where(outbox.c.sent_at.is_(None))
        async with self.db.read() as session:
            count, oldest = (await (await session.connection()).execute(query)).one()
        self._backlog = (int(count or 0), oldest)
        return self._backlog

    def _committed(self, rows: list[dict[str, Any]]) -> None:
        self._fresh.extend(rows)
        self._wake.set()

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self, *, flush: bool = True) -> None:
        """Stop; with ``flush``, first publish everything unsent (as long as NATS answers)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if flush and self.bus.connected:
            await self._publish_fresh()
            while await self.publish_pending(due_only=False) == self.batch_size:
                pass

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_poll = 0.0
        next_refresh = 0.0
        next_purge = loop.time() + PURGE_EVERY_SECONDS
        # At start, everything unsent is this process's to publish: what a previous run of it left
        # behind should not wait out the grace period. (A row another replica is publishing right
        # now may go out twice; the stream drops the second.)
        with contextlib.suppress(Exception):
            while await self.publish_pending(due_only=False) == self.batch_size:
                pass
        while not self._stopping:
            try:
                if loop.time() >= next_refresh:
                    # Whether or not NATS answers (while it is away the backlog grows), and
                    # whatever the fast path is doing.
                    next_refresh = loop.time() + self.poll_seconds
                    await self.refresh_backlog()
                if self._fresh:
                    await self._publish_fresh()
                    continue
                if loop.time() >= next_poll:
                    if await self.publish_pending() == self.batch_size:
                        continue  # there is more
                    next_poll = loop.time() + self.poll_seconds
                if loop.time() >= next_purge:
                    await self.purge_sent()
                    next_purge = loop.time() + PURGE_EVERY_SECONDS
            except Exception:
                log.exception("outbox_relay_failed")
                next_poll = loop.time() + self.poll_seconds
            with contextlib.suppress(TimeoutError):
                wake_at = min(next_poll, next_refresh)
                await asyncio.wait_for(self._wake.wait(), max(0.0, wake_at - loop.time()))
            self._wake.clear()

    async def _publish_fresh(self) -> None:
        """Publish the rows handed over at commit, in commit order, then mark them sent."""
        batch = [self._fresh.popleft() for _ in range(min(len(self._fresh), self.batch_size))]
        sent, _ = await self._publish_rows(batch)
        if sent:
            async with self.db.transaction() as session:
                await session.exec(outbox.update().where(outbox.c.event_id.in_(sent)).values(sent_at=datetime.now(UTC)))

    async def _publish_rows(self, rows: Iterable[Mapping[Any, Any]]) -> tuple[list[str], Exception | None]:
        """Publish rows in order until one fails; return the ids published and the failure, if any.

        What is left unpublished waits for its turn to be polled.
        """
        sent: list[str] = []
        for row in rows:
            headers = dict(row["headers"])
            started = time.perf_counter()
            try:
                await self.bus.publish(row["subject"], row["payload"], headers, parent=telemetry.extract(headers))
            except Exception as exc:
                log.warning("outbox_publish_failed", event_id=row["event_id"], error=str(exc))
                return sent, exc  # NATS is likely away: the rest would fail too
            self._publish_duration.record(time.perf_counter() - started, {"messaging.destination.name": row["subject"]})
            sent.append(row["event_id"])
        return sent, None

    async def publish_pending(self, *, due_only: bool = True) -> int:
        """Publish one batch of unsent rows (only those due for polling, unless ``due_only`` is off).

        Returns how many were published.
        """
        if not self.bus.connected:
            return 0
        if self.db.dialect == "postgresql":
            # Claim the rows for the length of the transaction; other replicas skip them.
            async with self.db.transaction() as session:
                claim = self._unsent(due_only).with_for_update(skip_locked=True)
                rows = (await (await session.connection()).execute(claim)).all()
                return await self._publish_and_mark(session, rows)
        # SQLite has one writer and no row locks: read, publish outside any transaction (so
        # writers never wait on NATS), then mark. One relay runs per SQLite file.
        async with self.db.read() as session:
            rows = (await (await session.connection()).execute(self._unsent(due_only))).all()
        if not rows:
            return 0
        async with self.db.transaction() as session:
            return await self._publish_and_mark(session, rows)

    def _unsent(self, due_only: bool) -> sa.Select[Any]:
        query = sa.select(outbox).where(outbox.c.sent_at.is_(None))
        if due_only:
            query = query.where(outbox.c.available_at <= datetime.now(UTC))
        return query.order_by(outbox.c.seq).limit(self.batch_size)

    async def _publish_and_mark(self, session: AsyncSession, rows: Sequence[sa.Row[Any]]) -> int:
        sent, error = await self._publish_rows(row._mapping for row in rows)
        if sent:
            await session.exec(outbox.update().where(outbox.c.event_id.in_(sent)).values(sent_at=datetime.now(UTC)))
        if error is not None:
            failed = rows[len(sent)]
            attempts = failed.attempts + 1
            delay = min(self.max_backoff_seconds, 0.2 * 2**attempts)
            await session.exec(
                outbox.update()
                .where(outbox.c.seq == failed.seq)
                .values(
                    attempts=attempts,
                    last_error=f"{type(error).__name__}: {error}"[:2000],
                    available_at=datetime.now(UTC) + timedelta(seconds=delay),
                )
            )
        return len(sent)

    async def purge_sent(self) -> int:
        """Delete rows sent longer ago than ``keep_sent``; returns how many."""
        cutoff = datetime.now(UTC) - self.keep_sent
        async with self.db.transaction() as session:
            result = await session.exec(outbox.delete().where(outbox.c.sent_at < cutoff))
        return int(result.rowcount)

    async def pending(self) -> int:
        """Rows not yet published."""
        async with self.db.read() as session:
            unsent = sa.select(sa.func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
            count = await session.scalar(unsent)
        return int(count or 0)
