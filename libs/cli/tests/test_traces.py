"""``collabnet traces``: spans written by the SDK to the state folder, drawn as a waterfall."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from collabnet_cli import traces
from collabnet_kit.telemetry import JsonLinesSpanExporter, Telemetry, extract, inject, setup_telemetry, with_partner

T0 = 1_750_000_000_000_000_000
"""An arbitrary wall-clock time in ns; every span below starts at a fixed offset from it."""
MS = 1_000_000
SECOND = 1_000 * MS

REVIEW_METHOD = "collabnet.reviews.v1.ReviewsService/PublishReview"
PUBLISHED = "collabnet.reviews.v1.ReviewPublished"


@dataclass
class Written:
    """What the fixture wrote: the state folder and the ids of its traces."""

    state_dir: Path
    request: str
    older: str
    background: str


def hex_id(span: trace.Span) -> str:
    return trace.format_trace_id(span.get_span_context().trace_id)


@pytest.fixture
def written(tmp_path: Path) -> Written:
    """Three services in one process writing span files as the stack does.

    - an older request: a gateway server span;
    - the latest request: gateway server span → gateway client span → reviews server span with a
      database statement and an event publish → community consumer span running after the
      request finished, and failing;
    - background work started after both: a reviews outbox poll, a trace without a server span.
    """
    services: dict[str, Telemetry] = {
        name: setup_telemetry(
            name,
            "0.1.0",
            tmp_path,
            span_processor=SimpleSpanProcessor(JsonLinesSpanExporter(tmp_path / "traces" / f"{name}.jsonl")),
            set_global=False,
        )
        for name in ("gateway", "reviews", "community")
    }
    gateway, reviews, community = (services[name].tracer("test") for name in ("gateway", "reviews", "community"))

    def child(
        tracer: trace.Tracer, name: str, parent: trace.Span, ctx: Context | None, kind: SpanKind, start_time: int
    ) -> trace.Span:
        return tracer.start_span(name, trace.set_span_in_context(parent, ctx), kind, start_time=start_time)

    acme = with_partner("acme")
    older = gateway.start_span("GET /v1/reviews", context=acme, kind=SpanKind.SERVER, start_time=T0)
    older.end(end_time=T0 + 5 * MS)

    start = T0 + 10 * SECOND
    root = gateway.start_span("POST /v1/reviews", context=acme, kind=SpanKind.SERVER, start_time=start)
    call = child(gateway, REVIEW_METHOD, root, acme, SpanKind.CLIENT, start + 2 * MS)
    # Across processes, as the gRPC instrumentation does it: the context travels as metadata.
    metadata = inject({}, trace.set_span_in_context(call, acme))
    served = reviews.start_span(
        REVIEW_METHOD, context=extract(metadata), kind=SpanKind.SERVER, start_time=start + 3 * MS
    )
    # Started without the baggage, so this span names no partner.
    insert = child(reviews, "INSERT reviews", served, None, SpanKind.CLIENT, start + 5 * MS)
    insert.end(end_time=start + 6 * MS + 500_000)
    publish = child(reviews, f"{PUBLISHED} publish", served, acme, SpanKind.PRODUCER, start + 20 * MS)
    publish.end(end_time=start + 21 * MS)
    served.end(end_time=start + 29 * MS)
    call.end(end_time=start + 30 * MS)
    root.end(end_time=start + 40 * MS)
    headers = inject({}, trace.set_span_in_context(publish, acme))
    consume = community.start_span(
        f"{PUBLISHED} process",
        context=extract(headers),
        kind=SpanKind.CONSUMER,
        start_time=start + 50 * MS,
        links=[Link(older.get_span_context())],
        attributes={"messaging.system": "nats"},
    )
    consume.set_status(Status(StatusCode.ERROR, "boom"))
    consume.end(end_time=start + 62 * MS + 340_000)

    poll = reviews.start_span("outbox poll", start_time=start + 20 * SECOND)
    poll.end(end_time=start + 20 * SECOND + MS)

    for telemetry in services.values():
        telemetry.shutdown()
    return Written(tmp_path, request=hex_id(root), older=hex_id(older), background=hex_id(poll))


def body(drawing: str) -> list[str]:
    """The span lines of a waterfall: after the header and the column titles."""
    return drawing.splitlines()[2:]


def tree_and_service(line: str) -> str:
    """The tree drawing and the service at the start of a span line, after the error mark."""
    match = re.match(r"[ │├└─]*\S+", line[2:])
    assert match is not None
    return match.group()


def bar_start(line: str) -> int:
    return min(i for i, c in enumerate(line) if c in "█▏")


def bar_end(line: str) -> int:
    return max(i for i, c in enumerate(line) if c in "█▏") + 1


def test_spans_are_read_with_their_context_service_kind_partner_and_links(written: Written) -> None:
    spans = traces.read_spans(written.state_dir)

    assert len(spans) == 8
    by_name = {(s.service, s.name): s for s in spans if s.trace_id == written.request}
    root = by_name["gateway", "POST /v1/reviews"]
    assert root.parent_id is None and root.kind == "server" and root.partner == "acme"
    served = by_name["reviews", REVIEW_METHOD]
    assert served.parent_id == by_name["gateway", REVIEW_METHOD].span_id
    assert by_name["gateway", REVIEW_METHOD].kind == "client"
    assert by_name["reviews", "INSERT reviews"].partner is None
    consume = by_name["community", f"{PUBLISHED} process"]
    assert consume.kind == "consumer" and consume.status == "error"
    assert consume.parent_id == by_name["reviews", f"{PUBLISHED} publish"].span_id
    assert consume.attributes["messaging.system"] == "nats"
    older = next(s for s in spans if s.trace_id == written.older)
    assert consume.links == ((written.older, older.span_id),)
    assert consume.duration_ms == pytest.approx(12.34, abs=0.01)
    assert by_name["reviews", f"{PUBLISHED} publish"].status == "unset"


def test_latest_request_is_chosen_over_later_background_work(written: Written) -> None:
    spans = traces.read_spans(written.state_dir)

    assert traces.latest_trace_id(spans) == written.request
    drawing = traces.show(written.state_dir, width=120)
    assert drawing.startswith(f"trace {written.request} · 6 spans · 62.3 ms · gateway, reviews, community")


def test_without_any_request_the_latest_trace_is_chosen(written: Written) -> None:
    spans = [s for s in traces.read_spans(written.state_dir) if s.kind != "server"]

    assert traces.latest_trace_id(spans) == written.background
    assert traces.latest_trace_id([]) is None


def test_spans_are_drawn_in_tree_order_under_their_parents(written: Written) -> None:
    lines = body(traces.show(written.state_dir, width=120))

    labels = [tree_and_service(line) for line in lines]
    assert labels == [
        "gateway",
        "└─ gateway",
        "   └─ reviews",
        "      ├─ reviews",
        "      └─ reviews",
        "         └─ community",
    ]
    names = ["POST /v1/reviews", REVIEW_METHOD, REVIEW_METHOD, "INSERT reviews", f"{PUBLISHED} publish"]
    for line, name in zip(lines, [*names, f"{PUBLISHED} process"], strict=True):
        assert name in line
    assert [line.startswith("!") for line in lines] == [False] * 5 + [True]


def test_durations_and_partners_are_in_aligned_columns(written: Written) -> None:
    drawing = traces.show(written.state_dir, written.request, width=120)
    lines = body(drawing)

    durations = ["40.0 ms", "28.0 ms", "26.0 ms", "1.5 ms", "1.0 ms", "12.3 ms"]
    ends = {line.index(duration) + len(duration) for line, duration in zip(lines, durations, strict=True)}
    assert len(ends) == 1
    partner_column = drawing.splitlines()[1].index("partner")
    assert [line[partner_column:].split(" ")[0] for line in lines] == ["acme", "acme", "acme", "", "acme", "acme"]


def test_later_spans_are_drawn_further_right_on_one_time_axis(written: Written) -> None:
    lines = body(traces.show(written.state_dir, width=120))
    root, call, served, insert, publish, consume = lines

    assert bar_start(root) < bar_start(insert) < bar_start(publish) < bar_start(consume)
    # The consumer ran after the whole request had finished, so its bar starts after the root's ends.
    assert bar_end(root) < bar_start(consume)
    assert bar_end(publish) <= bar_start(consume)
    assert bar_end(consume) == max(map(bar_end, lines))
    assert bar_start(root) == min(map(bar_start, lines))
    # The server span runs inside the client call that waits for it.
    assert bar_start(call) <= bar_start(served) and bar_end(served) <= bar_end(call)


def test_a_trace_id_prefix_in_any_case_with_0x_selects_the_trace(written: Written) -> None:
    drawing = traces.show(written.state_dir, "0x" + written.older[:8].upper(), width=100)

    assert drawing.startswith(f"trace {written.older} · 1 span · 5.0 ms · gateway")
    assert "GET /v1/reviews" in body(drawing)[0]


def test_an_unknown_trace_id_raises_lookup_error_naming_it(written: Written) -> None:
    with pytest.raises(LookupError, match="deadbeefdeadbeef"):
        traces.show(written.state_dir, "deadbeefdeadbeef")
    with pytest.raises(LookupError, match="at least 8"):
        traces.show(written.state_dir, written.request[:4])
    with pytest.raises(LookupError, match="not hexadecimal"):
        traces.show(written.state_dir, "not-a-trace")


def test_a_state_dir_without_span_files_raises_lookup_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(LookupError, match=f"no span files in {tmp_path / 'traces'}"):
        traces.show(tmp_path)


def test_a_partial_last_line_and_a_damaged_line_are_skipped(written: Written) -> None:
    path = written.state_dir / "traces" / "community.jsonl"
    complete = path.read_text()
    with path.open("a") as out:
        out.write('{"name": "not a span"}\n')
        out.write(complete[: len(complete) // 2])

    spans = traces.read_spans(written.state_dir)

    assert len(spans) == 8
    assert sum(s.service == "community" for s in spans) == 1


def test_spans_of_a_rotated_file_are_read_too(written: Written) -> None:
    folder = written.state_dir / "traces"
    (folder / "gateway.jsonl").replace(folder / "gateway.jsonl.1")
    shutil.copy(folder / "reviews.jsonl", folder / "reviews.jsonl.1")  # a span read twice is kept once

    assert len(traces.read_spans(written.state_dir)) == 8
    assert body(traces.show(written.state_dir, written.request))[0].split()[:3] == ["gateway", "POST", "/v1/reviews"]


def test_a_span_whose_parent_was_not_written_is_drawn_at_the_top_level(written: Written) -> None:
    spans = [s for s in traces.read_spans(written.state_dir) if s.trace_id == written.request]
    without_gateway = [s for s in spans if s.service != "gateway"]

    lines = body(traces.waterfall(without_gateway, width=120))

    assert [tree_and_service(line) for line in lines] == [
        "reviews",
        "├─ reviews",
        "└─ reviews",
        "   └─ community",
    ]


def test_long_names_are_cut_to_fit_the_width(written: Written) -> None:
    drawing = traces.show(written.state_dir, written.request, width=60)

    assert all(len(line) <= 60 for line in drawing.splitlines())
    assert "…" in body(drawing)[1]
    assert all(any(c in "█▏" for c in line) for line in body(drawing))
    assert [line.split("ms")[0].split()[-1] for line in body(drawing)] == ["40.0", "28.0", "26.0", "1.5", "1.0", "12.3"]


def sdk_line(trace_id: str, span_id: str) -> str:
    """One span as ``ReadableSpan.to_json(indent=None)`` writes it."""
    return json.dumps(
        {
            "name": "GET /health",
            "context": {"trace_id": trace_id, "span_id": span_id, "trace_state": "[]"},
            "kind": "SpanKind.INTERNAL",
            "parent_id": None,
            "start_time": "2025-06-15T12:00:00.000000Z",
            "end_time": "2025-06-15T12:00:00.002500Z",
            "status": {"status_code": "OK"},
            "attributes": {},
            "events": [],
            "links": [],
            "resource": {"attributes": {"service.name": "identity"}, "schema_url": ""},
        }
    )


def test_a_line_of_the_sdk_format_by_hand_is_read_as_written(tmp_path: Path) -> None:
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "identity.jsonl").write_text(sdk_line("0x" + "AB" * 16, "0x" + "cd" * 8) + "\n")

    (span,) = traces.read_spans(tmp_path)

    assert (span.trace_id, span.span_id, span.kind, span.status) == ("ab" * 16, "cd" * 8, "internal", "ok")
    assert span.service == "identity" and span.duration_ms == pytest.approx(2.5)


def test_a_prefix_two_traces_share_raises_lookup_error_listing_both(tmp_path: Path) -> None:
    (tmp_path / "traces").mkdir()
    first, second = "abcdef12" + "0" * 24, "abcdef12" + "1" * 24
    lines = [sdk_line("0x" + first, "0x" + "1" * 16), sdk_line("0x" + second, "0x" + "2" * 16)]
    (tmp_path / "traces" / "identity.jsonl").write_text("\n".join(lines) + "\n")

    with pytest.raises(LookupError, match=f"ambiguous.*{first}, {second}"):
        traces.show(tmp_path, "ABCDEF12")
    assert traces.show(tmp_path, "abcdef121").startswith(f"trace {second} · 1 span")
