from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sample
from opentelemetry import metrics
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from collabnet.kittest.v1 import kittest_pb2
from collabnet_kit.bus import Bus
from collabnet_kit.consumer import Consumer
from collabnet_kit.db import Database
from collabnet_kit.migrations import upgrade
from collabnet_kit.nats_server import NatsServer
from collabnet_kit.outbox import Relay
from collabnet_kit.server import Service
from collabnet_kit.settings import ServiceSettings
from collabnet_kit.testing import running, service_settings


@dataclass
class Stack:
    """The kit's event path with the sample service's tables: database, bus, relay, consumer."""

    db: Database
    bus: Bus
    relay: Relay
    consumer: Consumer
    behaviour: sample.Behaviour
    tracer_provider: TracerProvider


@asynccontextmanager
async def event_path(
    database_url: str,
    nats_url: str,
    *,
    tracer_provider: TracerProvider | None = None,
    meter: metrics.Meter | None = None,
    relay_poll_seconds: float = 0.1,
    **consumer_options: Any,
) -> AsyncIterator[tuple[Database, Bus, Relay, Consumer, sample.Behaviour]]:
    """The sample service's migrated database, a bus with its stream, and a relay and a consumer
    (not started) of its NoteAdded events; everything is closed afterwards."""
    db = Database(database_url)
    await upgrade(db, [sample.HISTORY])
    bus = Bus(nats_url, name="kittest", tracer_provider=tracer_provider)
    await bus.connect()
    await bus.ensure_stream(sample.NAME)
    behaviour = sample.Behaviour()
    consumer = Consumer(
        bus,
        db,
        name=sample.NAME,
        domain=sample.NAME,
        handlers={kittest_pb2.NoteAdded: behaviour.on_note_added},
        tracer_provider=tracer_provider,
        meter=meter,
        **{"max_deliveries": 3, "backoff_seconds": 0.05, "ack_wait_seconds": 1.0, **consumer_options},
    )
    relay = Relay(db, bus, poll_seconds=relay_poll_seconds, meter=meter)
    try:
        yield db, bus, relay, consumer, behaviour
    finally:
        await consumer.stop()
        await relay.stop(flush=False)
        await bus.close()
        await db.dispose()


@pytest.fixture
async def stack(
    database_url: str, nats_server: NatsServer, span_processor: SimpleSpanProcessor
) -> AsyncIterator[Stack]:
    provider = TracerProvider()
    provider.add_span_processor(span_processor)
    async with event_path(database_url, nats_server.url, tracer_provider=provider) as parts:
        yield Stack(*parts, provider)


@pytest.fixture
async def service(
    database_url: str, nats_server: NatsServer, tmp_path: Path, span_processor: SimpleSpanProcessor
) -> AsyncIterator[Service]:
    """The sample service, running in this process with its spans kept in memory."""
    settings = service_settings(ServiceSettings, sample.NAME, database_url, nats_server.url, tmp_path)
    async with running(sample.create(settings, span_processor=span_processor, set_global_telemetry=False)) as svc:
        yield svc
