"""OpenTelemetry for a service: providers, exporters, instrumentation and context propagation.

Spans go over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces-specific variable) is set;
otherwise they are appended as JSON lines to ``<state_dir>/traces/<service>.jsonl`` so a trace can
be read without a collector (``collabnet traces``). The sampler follows the standard
``OTEL_TRACES_SAMPLER`` variables. The calling partner travels as the baggage entry
``collabnet.partner.id`` and lands on every span as an attribute of the same name.

Metrics go over OTLP when configured, and, when ``metrics_port`` is given, are also served as
Prometheus text at ``http://<metrics_host>:<metrics_port>/metrics`` from a registry of the service's
own (not prometheus_client's global one), so several services in one process keep their figures
apart. Instruments are made from :meth:`Telemetry.meter`, never from the global meter provider.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import baggage, context, metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor, filters
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.processor.baggage import BaggageSpanProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry, start_http_server
from sqlalchemy.ext.asyncio import AsyncEngine

PARTNER_ID = "collabnet.partner.id"
"""Baggage key and span attribute: the partner on whose behalf the work is done."""

_ROTATE_BYTES = 64 * 1024 * 1024

SECONDS_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Histogram boundaries for durations in seconds (the SDK's default ones suit milliseconds)."""
LATENCY_BUCKETS: tuple[float, ...] = (*SECONDS_BUCKETS, 30.0, 60.0, 300.0)
"""Boundaries for an event's way from the outbox to a handler, which retries can stretch to minutes."""


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span as one JSON object per line; rotates the file past 64 MiB."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(span.to_json(indent=None) + "\n" for span in spans)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and self.path.stat().st_size > _ROTATE_BYTES:
                self.path.replace(self.path.with_suffix(".jsonl.1"))
            with self.path.open("a", encoding="utf-8") as out:
                out.write(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _otlp_configured(signal: str) -> bool:
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    )


def _grpc_protocol(signal: str) -> bool:
    protocol = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    return protocol == "grpc"


def _otlp_span_exporter() -> SpanExporter:
    if _grpc_protocol("TRACES"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


def _otlp_metric_reader() -> MetricReader:
    if _grpc_protocol("METRICS"):
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter

        return PeriodicExportingMetricReader(GrpcExporter())
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter

    return PeriodicExportingMetricReader(HttpExporter())


class ScrapeEndpoint:
    """Prometheus text at ``http://host:port/metrics``, served by prometheus_client in a daemon
    thread from a registry of its own, which only this endpoint's reader feeds."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.registry = CollectorRegistry()
        self.reader = PrometheusMetricReader(registry=self.registry)
        self._requested_port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._server, self._thread = start_http_server(self._requested_port, addr=self.host, registry=self.registry)

    @property
    def port(self) -> int:
        return int(self._server.server_port) if self._server is not None else self._requested_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


@dataclass
class Telemetry:
    """A service's tracer and meter providers; every instrumented part takes them from here."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    scrape_endpoint: ScrapeEndpoint | None = None
    _engines: list[EngineTracer] = field(default_factory=list)

    def tracer(self, name: str) -> trace.Tracer:
        return self.tracer_provider.get_tracer(name)

    def meter(self, name: str) -> metrics.Meter:
        return self.meter_provider.get_meter(name)

    def grpc_server_interceptor(self) -> Any:
        """Server spans for every RPC but health checks and reflection."""
        quiet = filters.any_of(filters.health_check(), filters.service_prefix("grpc.reflection"))
        return aio_server_interceptor(tracer_provider=self.tracer_provider, filter_=filters.negate(quiet))

    def grpc_client_interceptors(self) -> list[Any]:
        """Client spans for every outbound RPC but health checks."""
        quiet = filters.negate(filters.health_check())
        return list(aio_client_interceptors(tracer_provider=self.tracer_provider, filter_=quiet))

    def instrument_engine(self, engine: AsyncEngine) -> None:
        """Database spans for every statement the engine runs."""
        tracer = self.tracer("opentelemetry.instrumentation.sqlalchemy")
        usage = self.meter("opentelemetry.instrumentation.sqlalchemy").create_up_down_counter(
            "db.client.connections.usage", unit="connections", description="Connections in use and idle."
        )
        self._engines.append(EngineTracer(tracer, engine.sync_engine, usage))

    def shutdown(self) -> None:
        """Export what is buffered and stop the exporters and the scrape endpoint."""
        self.tracer_provider.force_flush()
        self.tracer_provider.shutdown()
        if self.scrape_endpoint is not None:
            self.scrape_endpoint.stop()
        self.meter_provider.shutdown()


def setup_telemetry(
    service: str,
    version: str,
    state_dir: Path,
    *,
    span_processor: SpanProcessor | None = None,
    set_global: bool = True,
    metrics_port: int = 0,
    metrics_host: str = "127.0.0.1",
    metric_readers: Sequence[MetricReader] = (),
) -> Telemetry:
    """Build the providers for one service.

    ``span_processor`` replaces the exporter choice (tests pass one around an in-memory exporter).
    ``set_global`` also installs the providers as OpenTelemetry's globals, which a process does
    once; tests that run several services in one process leave it off. A ``metrics_port`` above 0
    serves Prometheus text on ``metrics_host`` at that port (stopped by :meth:`Telemetry.shutdown`);
    ``metric_readers`` are added besides OTLP's and Prometheus's (tests pass an in-memory one).
    """
    resource = Resource.create({"service.name": service, "service.version": version, "service.namespace": "collabnet"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BaggageSpanProcessor(lambda key: key == PARTNER_ID))
    if span_processor is None:
        exporter = (
            _otlp_span_exporter()
            if _otlp_configured("TRACES")
            else JsonLinesSpanExporter(state_dir / "traces" / f"{service}.jsonl")
        )
        span_processor = BatchSpanProcessor(exporter, schedule_delay_millis=1000)
    tracer_provider.add_span_processor(span_processor)
    readers: list[MetricReader] = [_otlp_metric_reader()] if _otlp_configured("METRICS") else []
    readers.extend(metric_readers)
    endpoint = ScrapeEndpoint(metrics_host, metrics_port) if metrics_port > 0 else None
    if endpoint is not None:
        readers.append(endpoint.reader)
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    if endpoint is not None:
        try:
            endpoint.start()
        except OSError:
            meter_provider.shutdown()
            raise
    if set_global:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
    return Telemetry(tracer_provider, meter_provider, endpoint)


def inject(carrier: MutableMapping[str, str], ctx: Context | None = None) -> MutableMapping[str, str]:
    """Write traceparent, tracestate and baggage of ``ctx`` (default: the current one) into a carrier."""
    propagate.inject(carrier, context=ctx)
    return carrier


def extract(carrier: Mapping[str, str] | None) -> Context:
    """The trace context and baggage a carrier (message headers, metadata) brought with it."""
    return propagate.extract(dict(carrier or {}))


@contextmanager
def attached(ctx: Context) -> Iterator[None]:
    """Make ``ctx`` the current context for the block."""
    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)


def with_partner(partner_id: str, ctx: Context | None = None) -> Context:
    """A context whose baggage names the partner on whose behalf the work is done."""
    return baggage.set_baggage(PARTNER_ID, partner_id, context=ctx)


def current_partner(ctx: Context | None = None) -> str | None:
    value = baggage.get_baggage(PARTNER_ID, context=ctx)
    return str(value) if value is not None else None


__all__ = [
    "LATENCY_BUCKETS",
    "PARTNER_ID",
    "SECONDS_BUCKETS",
    "JsonLinesSpanExporter",
    "ScrapeEndpoint",
    "Telemetry",
    "attached",
    "context",
    "current_partner",
    "extract",
    "inject",
    "setup_telemetry",
    "with_partner",
]
