"""Telemetry: spans as JSON lines without a collector, the partner on every span, context propagation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextvars import Token
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collabnet_kit import telemetry as telemetry_module
from collabnet_kit.telemetry import (
    PARTNER_ID,
    JsonLinesSpanExporter,
    current_partner,
    extract,
    inject,
    setup_telemetry,
    with_partner,
)

OTLP_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)


@pytest.fixture
def no_otlp(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTLP_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def attached() -> Iterator[list[Token[Context]]]:
    """Contexts attached by a test, detached again afterwards in reverse order."""
    tokens: list[Token[Context]] = []
    yield tokens
    for token in reversed(tokens):
        context.detach(token)


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_json_lines_exporter_writes_one_parsable_object_per_span(tmp_path: Path) -> None:
    path = tmp_path / "traces" / "reviews.jsonl"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("publish review") as parent, tracer.start_as_current_span("insert row") as child:
        pass
    provider.shutdown()

    lines = read_lines(path)
    assert [line["name"] for line in lines] == ["insert row", "publish review"]
    exported_child, exported_parent = lines
    for exported, span in ((exported_parent, parent), (exported_child, child)):
        assert int(exported["context"]["trace_id"], 16) == span.get_span_context().trace_id
        assert int(exported["context"]["span_id"], 16) == span.get_span_context().span_id
    assert int(exported_child["parent_id"], 16) == parent.get_span_context().span_id


def test_the_json_lines_exporter_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "reviews.jsonl"
    for name in ("first run", "second run"):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
        with provider.get_tracer("test").start_as_current_span(name):
            pass
        provider.shutdown()
    assert [line["name"] for line in read_lines(path)] == ["first run", "second run"]


def test_the_json_lines_exporter_rotates_a_full_file_keeping_one_previous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telemetry_module, "_ROTATE_BYTES", 1)  # every non-empty file is full
    path = tmp_path / "reviews.jsonl"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    for name in ("first", "second", "third"):
        with provider.get_tracer("test").start_as_current_span(name):
            pass
    provider.shutdown()
    assert [line["name"] for line in read_lines(path)] == ["third"]
    assert [line["name"] for line in read_lines(tmp_path / "reviews.jsonl.1")] == ["second"]


def test_without_otlp_spans_land_in_the_state_dirs_trace_file_on_shutdown(tmp_path: Path, no_otlp: None) -> None:
    telemetry = setup_telemetry("reviews", "1.2.3", tmp_path, set_global=False)
    with telemetry.tracer("test").start_as_current_span("publish review") as span:
        pass
    telemetry.shutdown()

    (line,) = read_lines(tmp_path / "traces" / "reviews.jsonl")
    assert line["name"] == "publish review"
    assert int(line["context"]["trace_id"], 16) == span.get_span_context().trace_id
    resource = line["resource"]["attributes"]
    assert resource["service.name"] == "reviews"
    assert resource["service.version"] == "1.2.3"
    assert resource["service.namespace"] == "collabnet"


def test_set_global_false_leaves_the_global_providers_alone(tmp_path: Path, no_otlp: None) -> None:
    before = trace.get_tracer_provider()
    telemetry = setup_telemetry("reviews", "1.2.3", tmp_path, set_global=False)
    try:
        assert trace.get_tracer_provider() is before
        assert trace.get_tracer_provider() is not telemetry.tracer_provider
    finally:
        telemetry.shutdown()


def test_a_given_span_processor_replaces_the_file_exporter(
    tmp_path: Path, no_otlp: None, span_processor: SimpleSpanProcessor, span_exporter: InMemorySpanExporter
) -> None:
    telemetry = setup_telemetry("reviews", "1.2.3", tmp_path, span_processor=span_processor, set_global=False)
    with telemetry.tracer("test").start_as_current_span("in memory"):
        pass
    telemetry.shutdown()
    assert [span.name for span in span_exporter.get_finished_spans()] == ["in memory"]
    assert not (tmp_path / "traces").exists()


def test_the_partner_in_baggage_lands_on_every_span_as_an_attribute(
    tmp_path: Path,
    span_processor: SimpleSpanProcessor,
    span_exporter: InMemorySpanExporter,
    attached: list[Token[Context]],
) -> None:
    telemetry = setup_telemetry("reviews", "1.2.3", tmp_path, span_processor=span_processor, set_global=False)
    attached.append(context.attach(with_partner("retailer-r")))
    tracer = telemetry.tracer("test")
    with tracer.start_as_current_span("rpc"), tracer.start_as_current_span("query"):
        pass
    telemetry.shutdown()

    spans = span_exporter.get_finished_spans()
    assert {span.name for span in spans} == {"rpc", "query"}
    for span in spans:
        assert span.attributes is not None and span.attributes[PARTNER_ID] == "retailer-r"


def test_other_baggage_entries_are_not_copied_onto_spans(
    tmp_path: Path,
    span_processor: SimpleSpanProcessor,
    span_exporter: InMemorySpanExporter,
    attached: list[Token[Context]],
) -> None:
    telemetry = setup_telemetry("reviews", "1.2.3", tmp_path, span_processor=span_processor, set_global=False)
    ctx = baggage.set_baggage("user.email", "someone@example.com", context=with_partner("retailer-r"))
    attached.append(context.attach(ctx))
    with telemetry.tracer("test").start_as_current_span("rpc"):
        pass
    telemetry.shutdown()

    (span,) = span_exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes[PARTNER_ID] == "retailer-r"
    assert "user.email" not in span.attributes


def test_spans_without_a_partner_carry_no_partner_attribute(
    tmp_path: Path, span_processor: SimpleSpanProcessor, span_exporter: InMemorySpanExporter
) -> None:
    telemetry = setup_telemetry("reviews", "1.2.3", tmp_path, span_processor=span_processor, set_global=False)
    with telemetry.tracer("test").start_as_current_span("background job"):
        pass
    telemetry.shutdown()
    (span,) = span_exporter.get_finished_spans()
    assert PARTNER_ID not in (span.attributes or {})


def test_with_partner_and_current_partner_round_trip_without_touching_the_current_context() -> None:
    ctx = with_partner("retailer-r")
    assert current_partner(ctx) == "retailer-r"
    assert current_partner() is None


def test_inject_and_extract_carry_the_trace_and_the_partner_through_a_carrier(attached: list[Token[Context]]) -> None:
    tracer = TracerProvider().get_tracer("test")
    attached.append(context.attach(with_partner("retailer-r")))
    with tracer.start_as_current_span("publish") as span:
        carrier = inject({})
    assert set(carrier) >= {"traceparent", "baggage"}

    received = extract(carrier)
    remote = trace.get_current_span(received).get_span_context()
    assert remote.is_remote
    assert remote.trace_id == span.get_span_context().trace_id
    assert remote.span_id == span.get_span_context().span_id
    assert current_partner(received) == "retailer-r"


def test_a_span_started_in_an_extracted_context_continues_the_remote_trace(
    span_processor: SimpleSpanProcessor, span_exporter: InMemorySpanExporter
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(span_processor)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("client"):
        carrier: dict[str, str] = {}
        inject(carrier)
    with tracer.start_as_current_span("server", context=extract(carrier)):
        pass
    client, server = span_exporter.get_finished_spans()
    assert server.context is not None and client.context is not None
    assert server.context.trace_id == client.context.trace_id
    assert server.parent is not None and server.parent.span_id == client.context.span_id


def test_inject_uses_an_explicit_context_instead_of_the_current_one() -> None:
    tracer = TracerProvider().get_tracer("test")
    elsewhere = tracer.start_span("elsewhere")
    ctx = with_partner("maker-m", trace.set_span_in_context(elsewhere))
    with tracer.start_as_current_span("current") as current:
        carrier = inject({}, ctx)
    elsewhere.end()
    received = trace.get_current_span(extract(carrier)).get_span_context()
    assert received.trace_id == elsewhere.get_span_context().trace_id
    assert received.trace_id != current.get_span_context().trace_id
    assert current_partner(extract(carrier)) == "maker-m"


@pytest.mark.parametrize("carrier", [None, {}], ids=["missing", "empty"])
def test_extracting_an_empty_or_missing_carrier_gives_no_trace_and_no_partner(carrier: dict[str, str] | None) -> None:
    received = extract(carrier)
    assert not trace.get_current_span(received).get_span_context().is_valid
    assert current_partner(received) is None
