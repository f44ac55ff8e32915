"""Domain events over NATS JetStream, in the CloudEvents NATS binary binding.

A message's payload is the serialized protobuf event; its headers carry ``ce-specversion``,
``ce-id``, ``ce-type`` (the protobuf full name), ``ce-source``, ``ce-time``, ``content-type``,
``Nats-Msg-Id`` (the event id, for the stream's de-duplication) and the W3C trace context and
baggage, injected inside the producer span so a consumer's span joins the producer's trace.

One stream per domain, ``COLLABNET_<DOMAIN>`` over ``collabnet.<domain>.>``; an event's subject is
its protobuf full name (``collabnet.reviews.v1.ReviewPublished``). Dead letters go to
``collabnet.deadletter.<consumer>`` in the ``COLLABNET_DEADLETTER`` stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import nats
import nats.errors
import structlog
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from collabnet_kit import telemetry

log = structlog.get_logger(__name__)

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/protobuf"
DEADLETTER_STREAM = "COLLABNET_DEADLETTER"
DEADLETTER_PREFIX = "collabnet.deadletter"
# Headers a dead letter carries besides the original message's own.
ERROR_HEADER = "collabnet-error"
ERROR_TYPE_HEADER = "collabnet-error-type"
ORIGINAL_SUBJECT_HEADER = "collabnet-original-subject"
DELIVERIES_HEADER = "collabnet-deliveries"
_TRACE_HEADERS = ("traceparent", "tracestate", "baggage")


def subject_of(event: Message | type[Message]) -> str:
    """The subject an event is published on: its protobuf full name."""
    return event.DESCRIPTOR.full_name


def message_class(type_name: str) -> type[Message]:
    """The class of a message type by its full name (an event's ``ce-type``, an ``Any``'s type);
    its module must have been imported. ``KeyError`` for a type the process does not know."""
    descriptor = descriptor_pool.Default().FindMessageTypeByName(type_name)
    cls: type[Message] = message_factory.GetMessageClass(descriptor)
    return cls


def domain_of(subject: str) -> str:
    """``collabnet.reviews.v1.ReviewPublished`` -> ``reviews``."""
    parts = subject.split(".")
    if len(parts) < 3 or parts[0] != "collabnet":
        raise ValueError(f"not a collabnet event subject: {subject!r}")
    return parts[1]


def stream_name(domain: str) -> str:
    return f"COLLABNET_{domain.upper()}"


def deadletter_subject(consumer: str) -> str:
    return f"{DEADLETTER_PREFIX}.{consumer}"


def cloudevent_headers(event_id: str, event_type: str, source: str, time: datetime) -> dict[str, str]:
    """The CloudEvents binary-mode headers of one event, with the stream's de-duplication id."""
    return {
        "ce-specversion": SPEC_VERSION,
        "ce-id": event_id,
        "ce-type": event_type,
        "ce-source": source,
        "ce-time": time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "content-type": CONTENT_TYPE,
        "Nats-Msg-Id": event_id,
    }


def trace_headers(ctx: Context | None = None) -> dict[str, str]:
    """The trace context (and baggage) of ``ctx`` as message headers."""
    return dict(telemetry.inject({}, ctx))


@dataclass(frozen=True)
class Envelope:
    """What a consumer knows of a message besides the event itself."""

    id: str
    type: str
    source: str
    time: datetime
    subject: str
    deliveries: int
    headers: Mapping[str, str]


class Bus:
    """A NATS connection with JetStream: keeps reconnecting, tells whether it is connected."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        tracer_provider: trace.TracerProvider | None = None,
        user: str = "",
        password: str = "",
        duplicate_window_seconds: float = 120.0,
        stream_replicas: int = 1,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self.name = name
        self._user, self._password = user or None, password or None
        self.duplicate_window_seconds = duplicate_window_seconds
        self.stream_replicas = stream_replicas
        self._on_change = on_change or (lambda: None)
        self._tracer = trace.get_tracer("collabnet_kit.bus", tracer_provider=tracer_provider)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise RuntimeError("the bus is not connected")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("the bus is not connected")
        return self._js

    async def connect(self, *, retry_seconds: float = 1.0) -> None:
        """Connect, retrying until the server answers; afterwards nats-py reconnects by itself."""

        async def changed(*_: object) -> None:
            self._on_change()

        async def failed(error: Exception) -> None:
            log.warning("bus_error", url=self.url, error=f"{type(error).__name__}: {error}")

        while True:
            try:
                self._nc = await nats.connect(
                    self.url,
                    name=self.name,
                    user=self._user,
                    password=self._password,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    disconnected_cb=changed,
                    reconnected_cb=changed,
                    closed_cb=changed,
                    error_cb=failed,
                )
                break
            except (OSError, nats.errors.Error) as exc:
                log.warning("bus_connect_failed", url=self.url, error=str(exc))
                await asyncio.sleep(retry_seconds)
        self._js = self._nc.jetstream()
        self._on_change()

    async def ensure_stream(self, domain: str) -> None:
        """Create the domain's stream, or bring its subjects and de-duplication window up to date."""
        await self._ensure(stream_name(domain), f"collabnet.{domain}.>")

    async def ensure_deadletter_stream(self) -> None:
        await self._ensure(DEADLETTER_STREAM, f"{DEADLETTER_PREFIX}.>")

    async def _ensure(self, name: str, subject: str) -> None:
        config = StreamConfig(
            name=name,
            subjects=[subject],
            storage=StorageType.FILE,
            duplicate_window=self.duplicate_window_seconds,
            num_replicas=self.stream_replicas,
        )
        try:
            info = await self.js.stream_info(name)
        except NotFoundError:
            await self.js.add_stream(config)
            log.info("stream_created", stream=name, subjects=[subject])
            return
        current = info.config
        if (
            current.subjects != [subject]
            or (current.duplicate_window or 0) < self.duplicate_window_seconds
            or (current.num_replicas or 1) != self.stream_replicas
        ):
            await self.js.update_stream(config)
            log.info("stream_updated", stream=name, subjects=[subject], replicas=self.stream_replicas)

    async def publish(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str],
        *,
        parent: Context | None = None,
        timeout: float = 2.0,
    ) -> PubAck:
        """Publish one message inside a producer span whose context the message carries.

        ``headers`` are the CloudEvents attributes; ``parent`` is the trace context the event was
        recorded in (the current one when omitted).
        """
        attributes: dict[str, str | int] = {
            "messaging.system": "nats",
            "messaging.destination.name": subject,
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            "messaging.message.id": headers.get("ce-id", ""),
            "messaging.message.body.size": len(payload),
        }
        # Attach the recorded context (not just parent the span on it) so its baggage, too,
        # is what the message carries on.
        token = otel_context.attach(parent) if parent is not None else None
        try:
            with self._tracer.start_as_current_span(
                f"{subject} publish", kind=SpanKind.PRODUCER, attributes=attributes
            ):
                outgoing = {k: v for k, v in headers.items() if k not in _TRACE_HEADERS}
                outgoing.update(trace_headers())  # the producer span's own context, not its parent's
                return await self.js.publish(subject, payload, timeout=timeout, headers=outgoing)
        finally:
            if token is not None:
                otel_context.detach(token)

    async def publish_event(self, event: Message, *, event_id: str, source: str) -> PubAck:
        """Publish an event directly, without an outbox (tools and tests; services record instead).

        ``source`` names the publishing service, as with ``outbox.record``."""
        headers = cloudevent_headers(event_id, event.DESCRIPTOR.full_name, f"/collabnet/{source}", datetime.now(UTC))
        return await self.publish(subject_of(event), event.SerializeToString(), headers)

    async def close(self) -> None:
        """Flush what is buffered and close; safe to call when never connected."""
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.drain()
            except (TimeoutError, nats.errors.Error):
                await self._nc.close()
