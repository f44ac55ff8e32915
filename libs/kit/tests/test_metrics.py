"""Metrics of the kit, read in memory and scraped from the Prometheus endpoint: RPCs by status, the
outbox's backlog and publish times, and a consumer's lag, redeliveries, dead letters and latency."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import prometheus_client
import pytest
import sample
from kit_testing import event_path
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from collabnet.kittest.v1 import kittest_pb2
from collabnet.kittest.v1.kittest_pb2_grpc import SampleServiceStub
from collabnet_kit import client
from collabnet_kit.bus import Bus
from collabnet_kit.client import ServiceTokens, health_status
from collabnet_kit.consumer import Consumer
from collabnet_kit.db import Database
from collabnet_kit.nats_server import NatsServer, free_port
from collabnet_kit.outbox import Relay, new_event_id, record
from collabnet_kit.principal import Principal, PrincipalSigner
from collabnet_kit.server import Service
from collabnet_kit.settings import DEV_SIGNING_KEY, ServiceSettings
from collabnet_kit.tables import outbox
from collabnet_kit.telemetry import setup_telemetry
from collabnet_kit.testing import eventually, running, service_settings

PARTNER = (("authorization", f"Bearer {PrincipalSigner(DEV_SIGNING_KEY).sign(Principal(partner_id='retailer-r'))}"),)
SAMPLE_SERVICE = "collabnet.kittest.v1.SampleService"
SAMPLE_SERVICE_DESCRIPTOR = kittest_pb2.DESCRIPTOR.services_by_name["SampleService"]
SUBJECT = kittest_pb2.NoteAdded.DESCRIPTOR.full_name


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    """The data points of the metric ``name`` as the reader collects them now."""
    data = reader.get_metrics_data()
    found: list[Any] = []
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found.extend(metric.data.data_points)
    return found


def histogram(reader: InMemoryMetricReader, name: str) -> dict[frozenset[tuple[str, Any]], HistogramDataPoint]:
    return {frozenset((p.attributes or {}).items()): p for p in points(reader, name)}


def values(reader: InMemoryMetricReader, name: str) -> dict[frozenset[tuple[str, Any]], float]:
    found: list[NumberDataPoint] = points(reader, name)
    return {frozenset((p.attributes or {}).items()): p.value for p in found}


def key(**attributes: Any) -> frozenset[tuple[str, Any]]:
    return frozenset({k.replace("__", "."): v for k, v in attributes.items()}.items())


def rpc(method: str, status: str) -> frozenset[tuple[str, Any]]:
    return frozenset(
        {
            "rpc.system": "grpc",
            "rpc.service": SAMPLE_SERVICE,
            "rpc.method": method,
            "rpc.response.status_code": status,
        }.items()
    )


# --- RPCs ------------------------------------------------------------------------------------------


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
async def measured(
    database_url: str, nats_server: NatsServer, tmp_path: Path, reader: InMemoryMetricReader
) -> AsyncIterator[Service]:
    """The sample service with its metrics read in memory."""
    settings = service_settings(ServiceSettings, sample.NAME, database_url, nats_server.url, tmp_path)
    service = sample.create(settings, set_global_telemetry=False, metric_readers=[reader])
    async with running(service) as svc:
        yield svc


async def test_every_rpc_is_measured_with_its_status_and_health_checks_are_not(
    measured: Service, reader: InMemoryMetricReader
) -> None:
    async with grpc.aio.insecure_channel(measured.address) as channel:
        stub = SampleServiceStub(channel)
        assert await health_status(channel) == "SERVING"
        await stub.Echo(kittest_pb2.EchoRequest(text="hi"), metadata=PARTNER)
        await stub.Echo(kittest_pb2.EchoRequest(text="again"), metadata=PARTNER)
        for error, code in (
            ("not_found", grpc.StatusCode.NOT_FOUND),
            ("invalid", grpc.StatusCode.INVALID_ARGUMENT),
            ("boom", grpc.StatusCode.INTERNAL),  # an unexpected exception in the servicer
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Fail(kittest_pb2.FailRequest(error=error), metadata=PARTNER)
            assert raised.value.code() == code
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Echo(kittest_pb2.EchoRequest(text="who?"))  # no principal
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED

    calls = histogram(reader, "rpc.server.call.duration")
    assert {k: p.count for k, p in calls.items()} == {
        rpc("Echo", "OK"): 2,
        rpc("Echo", "UNAUTHENTICATED"): 1,
        rpc("Fail", "NOT_FOUND"): 1,
        rpc("Fail", "INVALID_ARGUMENT"): 1,
        rpc("Fail", "INTERNAL"): 1,
    }
    ok = calls[rpc("Echo", "OK")]
    assert ok.sum > 0
    assert ok.explicit_bounds[0] == 0.001 and ok.explicit_bounds[-1] == 10.0  # seconds, not milliseconds


def samples(text: str, name: str) -> list[Sample]:
    """The samples named ``name`` in Prometheus text."""
    return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]


def scrape(port: int) -> str:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    response.raise_for_status()
    return response.text


async def test_the_scrape_endpoint_serves_each_service_its_own_figures_and_stops_with_it(
    database_factory: Any, nats_server: NatsServer, tmp_path: Path
) -> None:
    ports = [free_port(), free_port()]
    services = [
        sample.create(
            service_settings(
                ServiceSettings,
                sample.NAME,
                database_factory(),
                nats_server.url,
                tmp_path / str(i),
                metrics_port=port,
            ),
            set_global_telemetry=False,
        )
        for i, port in enumerate(ports)
    ]
    async with running(services[0]), running(services[1]):
        async with grpc.aio.insecure_channel(services[0].address) as channel:
            stub = SampleServiceStub(channel)
            await stub.Echo(kittest_pb2.EchoRequest(text="one"), metadata=PARTNER)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Fail(kittest_pb2.FailRequest(error="not_found"), metadata=PARTNER)
        first, second = scrape(ports[0]), scrape(ports[1])
        counts = {
            (
                s.labels["rpc_system"],
                s.labels["rpc_service"],
                s.labels["rpc_method"],
                s.labels["rpc_response_status_code"],
            ): s.value
            for s in samples(first, "rpc_server_call_duration_seconds_count")
        }
        assert counts == {
            ("grpc", SAMPLE_SERVICE, "Echo", "OK"): 1,
            ("grpc", SAMPLE_SERVICE, "Fail", "NOT_FOUND"): 1,
        }
        assert "# TYPE rpc_server_call_duration_seconds histogram" in first
        assert "rpc_server_call_duration_seconds_count" not in second  # the other service made no call

        async def backlogs_read() -> bool:  # once each relay has looked at its outbox
            return all(samples(scrape(port), "collabnet_outbox_backlog") for port in ports)

        await eventually(backlogs_read)
        # Nothing lands in prometheus_client's global registry.
        assert b"rpc_server_call_duration" not in prometheus_client.generate_latest()
    for port in ports:
        with pytest.raises(httpx.TransportError):
            scrape(port)


# --- the event path --------------------------------------------------------------------------------


@dataclass
class EventPath:
    """The event path of the sample service's tables, its metrics read in memory."""

    db: Database
    bus: Bus
    relay: Relay
    consumer: Consumer
    behaviour: sample.Behaviour
    reader: InMemoryMetricReader


@pytest.fixture
async def path(database_url: str, nats_server: NatsServer) -> AsyncIterator[EventPath]:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    # The lag is read once as the consumer starts; the tests read it again themselves.
    parts = event_path(
        database_url, nats_server.url, meter=meter, relay_poll_seconds=0.05, fetch_seconds=0.2, lag_seconds=3600
    )
    async with parts as (db, bus, relay, consumer, behaviour):
        yield EventPath(db, bus, relay, consumer, behaviour, reader)


async def add_note(path: EventPath, text: str) -> str:
    note_id = new_event_id()
    async with path.db.transaction() as session:
        session.add(sample.Note(id=note_id, text=text))
        await record(session, kittest_pb2.NoteAdded(note_id=note_id, text=text), source=sample.NAME)
    return note_id


async def test_the_backlog_counts_unsent_events_and_their_age_and_empties_once_published(path: EventPath) -> None:
    for text in ("first", "second"):
        await add_note(path, text)
    async with path.db.transaction() as session:  # as if recorded a minute ago
        await session.exec(outbox.update().values(created_at=datetime.now(UTC) - timedelta(seconds=60)))
    assert points(path.reader, "collabnet.outbox.backlog") == []  # nothing read yet, nothing reported
    assert (await path.relay.refresh_backlog())[0] == 2
    assert values(path.reader, "collabnet.outbox.backlog") == {key(): 2}
    assert values(path.reader, "collabnet.outbox.oldest_age")[key()] >= 60

    path.relay.start()

    async def emptied() -> bool:
        backlog = values(path.reader, "collabnet.outbox.backlog")
        return backlog == {key(): 0} and values(path.reader, "collabnet.outbox.oldest_age") == {key(): 0}

    await eventually(emptied)
    published = histogram(path.reader, "collabnet.relay.publish.duration")
    assert list(published) == [key(messaging__destination__name=SUBJECT)]
    # Each publish is measured: the two rows, and again (dropped by the stream's de-duplication) the
    # two the commits handed the relay before it started and found them already polled.
    assert published[key(messaging__destination__name=SUBJECT)].count >= 2
    assert published[key(messaging__destination__name=SUBJECT)].explicit_bounds[-1] == 10.0


async def test_a_consumer_reports_lag_redeliveries_dead_letters_and_latency(path: EventPath) -> None:
    path.behaviour.always_fail.add("doomed")
    path.behaviour.failures_left["flaky"] = 1
    path.relay.start()
    notes = {text: await add_note(path, text) for text in ("fine", "flaky", "doomed")}

    async def published() -> bool:
        return await path.relay.pending() == 0

    await eventually(published)
    await path.consumer.start()

    async def lag_read() -> bool:
        return path.consumer.lag is not None

    await eventually(lag_read)
    durable = key(durable=sample.NAME)
    assert values(path.reader, "collabnet.consumer.lag") == {durable: 3}  # read before the first fetch

    async def handled() -> bool:
        dead = values(path.reader, "collabnet.deadletter.events")
        effects = [await sample.effects(path.db, notes[t]) for t in ("fine", "flaky")]
        return bool(dead) and all(effects)

    await eventually(handled)

    async def caught_up() -> bool:  # the last ack may still be on its way
        return await path.consumer.refresh_lag() == 0

    await eventually(caught_up)
    assert values(path.reader, "collabnet.consumer.lag") == {durable: 0}
    # "flaky" came again once, "doomed" twice before its last delivery sent it to the dead letters.
    assert values(path.reader, "collabnet.consumer.redeliveries") == {durable: 3}
    assert values(path.reader, "collabnet.deadletter.events") == {
        key(durable=sample.NAME, messaging__destination__name=SUBJECT): 1
    }
    latency = histogram(path.reader, "collabnet.event.latency")
    assert {k: p.count for k, p in latency.items()} == {
        key(durable=sample.NAME, messaging__destination__name=SUBJECT): 2  # fine and flaky, once each
    }


async def test_the_lag_of_a_durable_sums_its_streams(path: EventPath) -> None:
    """A service reads several streams under one durable name; its lag is theirs together."""
    meter = MeterProvider(metric_readers=[reader := InMemoryMetricReader()]).get_meter("test")
    consumers = [
        Consumer(path.bus, path.db, name="svc", domain=domain, handlers={kittest_pb2.NoteAdded: _never}, meter=meter)
        for domain in ("alpha", "beta")
    ]
    consumers[0].lag, consumers[1].lag = 2, 5
    assert values(reader, "collabnet.consumer.lag") == {key(durable="svc"): 7}


async def _never(*_: Any) -> None:
    raise AssertionError("not called")


@pytest.fixture(autouse=True)
def _no_otlp(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


async def test_a_client_spreads_its_calls_over_every_replica_the_target_names(
    measured: Service, reader: InMemoryMetricReader, database_url: str, nats_server: NatsServer, tmp_path: Path
) -> None:
    # A second replica on the same database; the target names both, as a headless Kubernetes
    # Service's DNS name names every ready pod. Each replica counts the calls it served.
    second_reader = InMemoryMetricReader()
    settings = service_settings(ServiceSettings, sample.NAME, database_url, nats_server.url, tmp_path / "second")
    async with running(sample.create(settings, set_global_telemetry=False, metric_readers=[second_reader])) as second:
        telemetry = setup_telemetry("caller", "0.1.0", tmp_path, set_global=False)
        channel = client.channel(
            f"ipv4:{measured.address},{second.address}",
            SAMPLE_SERVICE_DESCRIPTOR,
            telemetry=telemetry,
            service_token=ServiceTokens(PrincipalSigner(DEV_SIGNING_KEY), "caller"),
        )

        def served() -> list[int]:
            found = [histogram(r, "rpc.server.call.duration").get(rpc("Echo", "OK")) for r in (reader, second_reader)]
            return [point.count if point is not None else 0 for point in found]

        try:
            # Round-robin picks among the connections that are up: the first calls may all go to the
            # replica that connected first, but once both are up, both are used.
            for _ in range(100):
                await SampleServiceStub(channel).Echo(kittest_pb2.EchoRequest(text="hi"))
                if all(served()):
                    break
        finally:
            await channel.close()
            telemetry.shutdown()
        assert all(served()), served()
