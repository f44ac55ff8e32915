"""Durable JetStream pull consumers with an idempotent inbox.

    consumer = Consumer(
        bus, db,
        name="improvement",                      # the consuming service: durable name and inbox key
        domain="reviews",                        # the stream it reads
        handlers={ReviewPublished: on_review_published},
    )

A handler runs inside a database transaction together with an inbox row for the event id, so a
redelivered event is a no-op; the message is acked only after that commit. A failing handler's
message is nak'ed with a growing delay; at its last delivery (or at once when it cannot be decoded)
it is published with its error to ``collabnet.deadletter.<name>`` and acked, and the consumer goes on.
A failure because the database is unavailable is never the last: the message waits for it.

Metrics (attribute ``durable``, the consumer's name): ``collabnet.consumer.lag`` (messages of the
stream not yet handled: pending plus delivered-but-unacknowledged, read from JetStream on the
consumer's loop every ``lag_seconds`` and summed over the durable's streams),
``collabnet.consumer.redeliveries``, ``collabnet.deadletter.events`` and ``collabnet.event.latency``
(from the event's recording in the outbox, its ``ce-time``, to the commit of its first successful
handling), the last two also by ``messaging.destination.name``.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import nats.errors
import structlog
from google.protobuf.message import DecodeError, Message
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet_kit import telemetry
from collabnet_kit.bus import (
    DELIVERIES_HEADER,
    ERROR_HEADER,
    ERROR_TYPE_HEADER,
    ORIGINAL_SUBJECT_HEADER,
    Bus,
    Envelope,
    deadletter_subject,
    stream_name,
)
from collabnet_kit.db import Database
from collabnet_kit.tables import inbox

log = structlog.get_logger(__name__)

Handler = Callable[[AsyncSession, Any, Envelope], Awaitable[None]]


class Undecodable(Exception):
    """A message that no retry can help: unknown type, missing attributes, or a corrupt payload."""


class _LagGauge:
    """``collabnet.consumer.lag`` of one meter: an instrument can be made once per meter, while a
    service runs several consumers (a durable per stream, under one name), so they report here and
    the gauge sums their last readings by durable."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.consumers: weakref.WeakSet[Consumer] = weakref.WeakSet()
        meter.create_observable_gauge(
            "collabnet.consumer.lag",
            callbacks=[self._observe],
            unit="{message}",
            description="Messages of the durable consumer's streams not yet handled (pending and unacknowledged).",
        )

    @classmethod
    def of(cls, meter: metrics.Meter) -> _LagGauge:
        gauge = _LAG_GAUGES.get(meter)
        if gauge is None:
            gauge = _LAG_GAUGES[meter] = cls(meter)
        return gauge

    def _observe(self, options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        lags: dict[str, int] = {}
        for consumer in list(self.consumers):
            if consumer.lag is not None:
                lags[consumer.name] = lags.get(consumer.name, 0) + consumer.lag
        for durable, lag in sorted(lags.items()):
            yield metrics.Observation(lag, {"durable": durable})


_LAG_GAUGES: weakref.WeakKeyDictionary[metrics.Meter, _LagGauge] = weakref.WeakKeyDictionary()


class Consumer:
    """One durable pull consumer on one domain's stream, handling the event types it is given."""

    def __init__(
        self,
        bus: Bus,
        db: Database,
        *,
        name: str,
        domain: str,
        handlers: Mapping[type[Message], Handler],
        tracer_provider: trace.TracerProvider | None = None,
        meter: metrics.Meter | None = None,
        max_deliveries: int = 5,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 30.0,
        ack_wait_seconds: float = 30.0,
        fetch_seconds: float = 5.0,
        lag_seconds: float = 5.0,
    ) -> None:
        """``meter`` makes the consumer's instruments (the service's ``telemetry.meter(...)``);
        without one it records no metrics. ``lag_seconds``: how often the lag is read."""
        if not handlers:
            raise ValueError("a consumer needs at least one handler")
        self.bus = bus
        self.db = db
        self.name = name
        self.domain = domain
        self.stream = stream_name(domain)
        self._handlers = {cls.DESCRIPTOR.full_name: (cls, handler) for cls, handler in handlers.items()}
        self.max_deliveries = max_deliveries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.ack_wait_seconds = ack_wait_seconds
        self.fetch_seconds = fetch_seconds
        self.lag_seconds = lag_seconds
        self.lag: int | None = None
        """Messages not yet handled, as last read from JetStream (None before the first reading)."""
        self._tracer = trace.get_tracer("collabnet_kit.consumer", tracer_provider=tracer_provider)
        self._attributes = {"durable": name}
        if meter is None:
            meter = metrics.NoOpMeter("collabnet_kit.consumer")
        else:
            _LagGauge.of(meter).consumers.add(self)
        self._redeliveries = meter.create_counter(
            "collabnet.consumer.redeliveries",
            unit="{delivery}",
            description="Deliveries of a message that had been delivered before.",
        )
        self._deadletters = meter.create_counter(
            "collabnet.deadletter.events",
            unit="{event}",
            description="Events the consumer gave up on and sent to its dead-letter subject.",
        )
        self._latency = meter.create_histogram(
            "collabnet.event.latency",
            unit="s",
            description="Time from an event's recording in the outbox to the end of its first successful handling.",
            explicit_bucket_boundaries_advisory=telemetry.LATENCY_BUCKETS,
        )
        # Counters start at 0, so a scrape shows them (and rate() works) before the first trouble.
        self._redeliveries.add(0, self._attributes)
        for subject in self.subjects:
            self._deadletters.add(0, {"durable": name, "messaging.destination.name": subject})
        self._task: asyncio.Task[None] | None = None
        self._subscription: Any = None
        self._stopping = False
        self._busy = False
        self._insert = (postgresql.insert if db.dialect == "postgresql" else sqlite.insert)(inbox)

    @property
    def subjects(self) -> list[str]:
        return sorted(self._handlers)

    async def start(self) -> None:
        """Create or update the durable consumer and begin fetching."""
        await self.bus.ensure_stream(self.domain)
        await self.bus.ensure_deadletter_stream()
        config = ConsumerConfig(
            durable_name=self.name,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait_seconds,
            # The server never gives up on a message: this consumer decides when it is dead.
            max_deliver=-1,
            filter_subjects=self.subjects,
        )
        await self.bus.js.add_consumer(self.stream, config)  # creates it, or updates its config
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"consumer-{self.name}-{self.domain}")

    async def stop(self) -> None:
        """Stop fetching; a message being handled is finished (and acked) first."""
        self._stopping = True
        if self._task is None:
            return
        if not self._busy:
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._subscription is not None:
            # Messages the server still sends to this subscription are redelivered after ack_wait.
            with contextlib.suppress(nats.errors.Error):
                await self._subscription.unsubscribe()
            self._subscription = None

    async def refresh_lag(self) -> int:
        """Read from JetStream how many messages the durable has not yet handled."""
        info = await self.bus.js.consumer_info(self.stream, self.name)
        self.lag = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        return self.lag

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_lag = 0.0
        while not self._stopping:
            if loop.time() >= next_lag:
                next_lag = loop.time() + self.lag_seconds
                try:
                    await self.refresh_lag()
                except (TimeoutError, nats.errors.Error, OSError) as exc:
                    log.warning("consumer_lag_unknown", consumer=self.name, stream=self.stream, error=str(exc))
            try:
                if self._subscription is None:
                    self._subscription = await self.bus.js.pull_subscribe_bind(self.name, stream=self.stream)
                messages = await self._subscription.fetch(1, timeout=self.fetch_seconds)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except (nats.errors.Error, OSError) as exc:
                log.warning("consumer_fetch_failed", consumer=self.name, stream=self.stream, error=str(exc))
                await asyncio.sleep(1)
                continue
            for message in messages:
                self._busy = True
                try:
                    await self.handle(message)
                except Exception:
                    log.exception("consumer_message_failed", consumer=self.name, subject=message.subject)
                finally:
                    self._busy = False

    def _decode(self, message: Msg) -> tuple[Envelope, Message, Handler]:
        headers = message.headers or {}
        event_type = headers.get("ce-type", "")
        if event_type not in self._handlers:
            raise Undecodable(f"no handler for event type {event_type!r}")
        if not headers.get("ce-id"):
            raise Undecodable("the message has no ce-id")
        cls, handler = self._handlers[event_type]
        try:
            event = cls.FromString(message.data)
        except DecodeError as exc:
            raise Undecodable(f"the payload is not a valid {event_type}: {exc}") from exc
        try:
            time = datetime.fromisoformat(headers.get("ce-time", "").replace("Z", "+00:00"))
        except ValueError:
            time = datetime.now(UTC)
        envelope = Envelope(
            id=headers["ce-id"],
            type=event_type,
            source=headers.get("ce-source", ""),
            time=time,
            subject=message.subject,
            deliveries=message.metadata.num_delivered,
            headers=headers,
        )
        return envelope, event, handler

    async def handle(self, message: Msg) -> None:
        """Handle one message: decode, run its handler with the inbox row, then ack, nak or dead-letter."""
        headers = message.headers or {}
        deliveries = message.metadata.num_delivered
        attributes = {
            "messaging.system": "nats",
            "messaging.destination.name": message.subject,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.consumer.group.name": self.name,
            "messaging.message.id": headers.get("ce-id", ""),
            "messaging.message.body.size": len(message.data),
            "messaging.nats.delivery_count": deliveries,
        }
        if deliveries > 1:
            self._redeliveries.add(1, self._attributes)
        # The producer's context becomes current (with its baggage) for everything the handler does.
        token = otel_context.attach(telemetry.extract(headers))
        try:
            await self._process(message, deliveries, attributes)
        finally:
            otel_context.detach(token)

    async def _process(self, message: Msg, deliveries: int, attributes: dict[str, Any]) -> None:
        with self._tracer.start_as_current_span(
            f"{message.subject} process", kind=SpanKind.CONSUMER, attributes=attributes
        ) as span:
            try:
                envelope, event, handler = self._decode(message)
            except Undecodable as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                await self._dead_letter(message, exc)
                return
            first = False
            try:
                async with self.db.transaction() as session:
                    if await self._first_delivery(session, envelope):
                        first = True
                        await handler(session, event, envelope)
                    else:
                        span.set_attribute("collabnet.duplicate", True)
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                # A database that is away says nothing about the event: it waits for it to return,
                # however many deliveries that takes, rather than becoming a dead letter.
                if deliveries >= self.max_deliveries and not await self.db.refused(exc):
                    await self._dead_letter(message, exc)
                else:
                    delay = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (deliveries - 1))
                    log.warning(
                        "event_handler_failed",
                        consumer=self.name,
                        subject=message.subject,
                        event_id=envelope.id,
                        deliveries=deliveries,
                        retry_in=delay,
                        error=str(exc),
                    )
                    await message.nak(delay=delay)
                return
            if first and "ce-time" in envelope.headers:
                latency = (datetime.now(UTC) - envelope.time).total_seconds()
                self._latency.record(
                    max(0.0, latency), {"durable": self.name, "messaging.destination.name": message.subject}
                )
            await message.ack()

    async def _first_delivery(self, session: AsyncSession, envelope: Envelope) -> bool:
        """Insert the inbox row; False when it is there already (the event was handled before)."""
        result = await session.exec(
            self._insert.values(
                consumer=self.name,
                event_id=envelope.id,
                subject=envelope.subject,
                handled_at=datetime.now(UTC),
            ).on_conflict_do_nothing()
        )
        return bool(result.rowcount)

    async def _dead_letter(self, message: Msg, error: Exception) -> None:
        """Publish the message with its error to ``collabnet.deadletter.<name>``, then ack it.

        The dead letter's ``Nats-Msg-Id`` is ``<name>:<stream sequence>:<event id>``: a redelivery of
        the same stream message (a crash between this publish and the ack) is dropped as a duplicate,
        while the same event replayed (a new stream message) that fails again is a new dead letter.
        """
        headers = dict(message.headers or {})
        sequence = message.metadata.sequence.stream
        event_id = headers.get("ce-id") or f"{self.stream}:{sequence}"
        headers |= {
            ERROR_HEADER: f"{error}"[:2000],
            ERROR_TYPE_HEADER: type(error).__name__,
            ORIGINAL_SUBJECT_HEADER: message.subject,
            DELIVERIES_HEADER: str(message.metadata.num_delivered),
            "Nats-Msg-Id": f"{self.name}:{sequence}:{event_id}",
        }
        subject = deadletter_subject(self.name)
        await self.bus.publish(subject, message.data, headers)
        self._deadletters.add(1, {"durable": self.name, "messaging.destination.name": message.subject})
        await message.ack()
        log.error(
            "event_dead_lettered",
            consumer=self.name,
            subject=message.subject,
            event_id=event_id,
            deadletter_subject=subject,
            error=str(error),
        )
