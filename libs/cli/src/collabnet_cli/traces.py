"""Read the spans the services wrote to ``<state dir>/traces/`` and draw one trace as a waterfall.

Each service appends its finished spans as JSON lines (``ReadableSpan.to_json``) to
``traces/<service>.jsonl``, rotated once to ``<service>.jsonl.1``; see
``collabnet_kit.telemetry.JsonLinesSpanExporter``. A trace crosses processes, so its spans are
gathered from every file and placed on one wall-clock axis.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from collabnet_kit.telemetry import PARTNER_ID

MIN_PREFIX = 8
"""The fewest hex digits of a trace id that ``show`` accepts as a prefix."""

_MIN_WIDTH = 40
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Span:
    """One finished span as a service exported it.

    Ids are lowercase hex without ``0x``. ``kind`` is ``server``, ``client``, ``producer``,
    ``consumer`` or ``internal``; ``status`` is ``ok``, ``error`` or ``unset``.
    """

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    service: str
    start: datetime
    end: datetime
    status: str = "unset"
    partner: str | None = None
    attributes: Mapping[str, object] = field(default_factory=dict, hash=False)
    links: tuple[tuple[str, str], ...] = ()
    """(trace id, span id) of each linked span."""

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    @property
    def duration_ms(self) -> float:
        return self.duration / timedelta(milliseconds=1)


def read_spans(state_dir: Path) -> list[Span]:
    """Every span in ``traces/*.jsonl`` and ``traces/*.jsonl.1`` under ``state_dir``.

    A line that is not a complete span (a process mid-write, a damaged file) is skipped. A span
    found twice (the same trace and span id) is kept once. The order is by file, then by line.
    """
    folder = state_dir / "traces"
    files = sorted([*folder.glob("*.jsonl.1"), *folder.glob("*.jsonl")])
    spans: list[Span] = []
    seen: set[tuple[str, str]] = set()
    for path in files:
        for span in _spans_in(path):
            if (span.trace_id, span.span_id) not in seen:
                seen.add((span.trace_id, span.span_id))
                spans.append(span)
    return spans


def _spans_in(path: Path) -> Iterator[Span]:
    try:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                span = _parse(line)
                if span is not None:
                    yield span
    except FileNotFoundError:  # rotated away between listing and reading
        return


def _parse(line: str) -> Span | None:
    try:
        data = json.loads(line)
        return _span(data) if isinstance(data, dict) else None
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _span(data: Mapping[str, object]) -> Span:
    context = _mapping(data["context"])
    resource = _mapping(data.get("resource") or {})
    resource_attributes = _mapping(resource.get("attributes") or {})
    attributes = dict(_mapping(data.get("attributes") or {}))
    status = _mapping(data.get("status") or {})
    parent_id = data.get("parent_id")
    start = _time(data["start_time"])
    end = _time(data["end_time"]) if data.get("end_time") else start
    partner = attributes.get(PARTNER_ID)
    return Span(
        trace_id=_hex_id(context["trace_id"]),
        span_id=_hex_id(context["span_id"]),
        parent_id=_hex_id(parent_id) if parent_id else None,
        name=_text(data["name"]),
        kind=_text(data.get("kind") or "SpanKind.INTERNAL").rpartition(".")[2].lower(),
        service=str(resource_attributes.get("service.name") or "unknown"),
        start=start,
        end=max(end, start),
        status=_text(status.get("status_code") or "UNSET").lower(),
        partner=str(partner) if partner is not None else None,
        attributes=attributes,
        links=tuple(_link(link) for link in _sequence(data.get("links") or [])),
    )


def _link(data: object) -> tuple[str, str]:
    context = _mapping(_mapping(data)["context"])
    return _hex_id(context["trace_id"]), _hex_id(context["span_id"])


def _mapping(value: object) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def _sequence(value: object) -> Sequence[object]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _hex_id(value: object) -> str:
    text = _text(value).lower().removeprefix("0x")
    int(text, 16)  # raises ValueError when it is not hex
    return text


def _time(value: object) -> datetime:
    moment = datetime.fromisoformat(_text(value))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {value}")
    return moment


def latest_trace_id(spans: Iterable[Span]) -> str | None:
    """The id of the trace that started last, or None when there are no spans.

    A trace starts when its root span (the one without a parent) starts, or, when no root was
    written, when its earliest span starts. Background work (outbox relays polling, consumers
    idling) makes traces of its own all the time, which would hide the request one just made; so
    only traces with a ``server`` span, that is traces of a request, are considered, and any trace
    only when there is none of those. Ties go to the greater trace id, so the choice is stable.
    """
    by_trace = _by_trace(spans)
    requests = {tid: group for tid, group in by_trace.items() if any(s.kind == "server" for s in group)}
    candidates = requests or by_trace
    if not candidates:
        return None
    return max(candidates, key=lambda tid: (_trace_start(candidates[tid]), tid))


def _by_trace(spans: Iterable[Span]) -> dict[str, list[Span]]:
    by_trace: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    return by_trace


def _trace_start(spans: Sequence[Span]) -> datetime:
    roots = [s for s in spans if s.parent_id is None]
    return min(s.start for s in roots or spans)


def waterfall(spans: Sequence[Span], *, width: int = 100) -> str:
    """One trace as text: a header, then one line per span in tree order with a bar on a time axis.

    Children follow their parent ordered by start time; a span whose parent is not among ``spans``
    is drawn at the top level. Each line holds an error mark (``!``), the tree, the service and span
    name, the duration, the partner (a column only when some span has one) and a bar placed on an
    axis from the first start to the last end of the trace, so a consumer that runs after its
    producer finished is drawn after it. Lines fit in ``width`` (at least 40) columns: long names
    are cut with ``…``.
    """
    if not spans:
        raise ValueError("no spans to draw")
    width = max(width, _MIN_WIDTH)
    rows = list(_tree(spans))
    first = min(s.start for s in spans)
    total = max(s.end for s in spans) - first

    services = list(dict.fromkeys(s.service for s in sorted(spans, key=lambda s: s.start)))
    trace_ids = ", ".join(dict.fromkeys(s.trace_id for _, s in rows))
    count = f"{len(spans)} span" + ("s" if len(spans) != 1 else "")
    header = f"trace {trace_ids} · {count} · {_ms(total)} · {', '.join(services)}"

    labels = [f"{prefix}{span.service}  {span.name}" for prefix, span in rows]
    durations = [_ms(span.duration) for _, span in rows]
    partners = [span.partner or "" for _, span in rows]
    duration_width = max(len("duration"), *map(len, durations))
    partner_width = min(max(len("partner"), *map(len, partners)), 20) if any(partners) else 0
    columns = 2 + 2 + duration_width + (2 + partner_width if partner_width else 0) + 2  # mark, gaps
    bar_width = max(10, width // 4)
    label_width = max(12, min(max(map(len, labels)), width - columns - bar_width))
    bar_width = max(1, width - columns - label_width)

    def line(mark: str, label: str, duration: str, partner: str, bar: str) -> str:
        cells = [f"{mark:<2}{_cut(label, label_width):<{label_width}}", f"{duration:>{duration_width}}"]
        if partner_width:
            cells.append(f"{_cut(partner, partner_width):<{partner_width}}")
        cells.append(bar)
        return "  ".join(cells).rstrip()

    axis_end = _ms(total)
    axis = f"0 ms{axis_end:>{bar_width - 4}}" if bar_width >= len(axis_end) + 6 else ""
    lines = [_cut(header, width), line("", "span", "duration", "partner" if partner_width else "", axis)]
    for (_, span), label, duration, partner in zip(rows, labels, durations, partners, strict=True):
        mark = "!" if span.status == "error" else ""
        lines.append(line(mark, label, duration, partner, _bar(span, first, total, bar_width)))
    return "\n".join(lines)


def _tree(spans: Sequence[Span]) -> Iterator[tuple[str, Span]]:
    """(prefix, span) in depth-first order, children by start time, with ``├─``/``└─`` prefixes."""
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[Span]] = defaultdict(list)
    for span in spans:
        parent = span.parent_id if span.parent_id in ids and span.parent_id != span.span_id else None
        children[parent].append(span)
    for group in children.values():
        group.sort(key=lambda s: (s.start, s.end, s.name))

    drawn: set[int] = set()

    def walk(span: Span, prefix: str, rest: str) -> Iterator[tuple[str, Span]]:
        drawn.add(id(span))
        yield prefix, span
        kids = [kid for kid in children.get(span.span_id, []) if id(kid) not in drawn]
        for index, kid in enumerate(kids):
            last = index == len(kids) - 1
            yield from walk(kid, rest + ("└─ " if last else "├─ "), rest + ("   " if last else "│  "))

    for root in children[None]:
        yield from walk(root, "", "")
    # Spans whose parents form a cycle (only in damaged files) have no root; draw them anyway.
    for span in sorted(spans, key=lambda s: s.start):
        if id(span) not in drawn:
            yield from walk(span, "", "")


def _bar(span: Span, first: datetime, total: timedelta, width: int) -> str:
    """``█`` over the cells the span covers on the axis; ``▏`` for one shorter than half a cell."""
    scale = width / max(total / _MICROSECOND, 1)
    begin = (span.start - first) / _MICROSECOND * scale
    end = (span.end - first) / _MICROSECOND * scale
    if end - begin < 0.5:
        return " " * min(int(begin), width - 1) + "▏"
    left = min(int(begin + 0.5), width - 1)
    right = max(min(int(end + 0.5), width), left + 1)
    return " " * left + "█" * (right - left)


def _ms(duration: timedelta) -> str:
    ms = duration / timedelta(milliseconds=1)
    return f"{ms:,.1f} ms" if ms >= 1 else f"{ms:.2f} ms"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def show(state_dir: Path, trace_id: str | None = None, *, width: int | None = None) -> str:
    """The waterfall of one trace from the span files under ``state_dir``.

    ``trace_id`` may carry ``0x`` and any case, and may be a prefix of at least eight hex digits
    that only one trace starts with; without it, the trace ``latest_trace_id`` chooses is drawn.
    ``width`` defaults to the terminal's. Raises LookupError, with a message for the user, when
    there are no spans or no (single) trace matches.
    """
    folder = state_dir / "traces"
    spans = read_spans(state_dir)
    if not spans:
        found = any(folder.glob("*.jsonl*"))
        what = "no spans in the span files" if found else "no span files"
        raise LookupError(f"{what} in {folder}; traces appear there once the services have handled a request")
    if trace_id is None:
        chosen = latest_trace_id(spans)
        assert chosen is not None  # there are spans
    else:
        chosen = _match(trace_id, {s.trace_id for s in spans}, folder)
    if width is None:
        width = shutil.get_terminal_size().columns
    return waterfall([s for s in spans if s.trace_id == chosen], width=width)


def _match(trace_id: str, known: set[str], folder: Path) -> str:
    wanted = trace_id.strip().lower().removeprefix("0x")
    if not wanted or any(c not in "0123456789abcdef" for c in wanted):
        raise LookupError(f"trace id {trace_id!r} is not hexadecimal")
    if wanted in known:
        return wanted
    if len(wanted) < MIN_PREFIX:
        raise LookupError(f"trace id {trace_id!r} is too short: give at least {MIN_PREFIX} hex digits")
    matches = sorted(tid for tid in known if tid.startswith(wanted))
    if not matches:
        raise LookupError(f"trace {trace_id} not found in {folder}")
    if len(matches) > 1:
        raise LookupError(f"trace id {trace_id} is ambiguous in {folder}: {', '.join(matches)}")
    return matches[0]


__all__ = ["MIN_PREFIX", "Span", "latest_trace_id", "read_spans", "show", "waterfall"]
