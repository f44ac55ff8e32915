"""A partner's feed exported as Parquet files, for the partner's own analysis tools.

**Layout.** One directory per event type and day (of the event's time, in UTC), Hive style, so
DuckDB, Spark or pyarrow read the event type and the day from the path::

    DEST/_collabnet_export.json
    DEST/event_type=collabnet.reviews.v1.ReviewPublished/day=2026-11-22/part-<run id>-00001.parquet

Every file of one event type has the same columns: the envelope (``event_position``, ``event_id``,
``event_time``, ``event_source``) and then one column per field of the event's message, derived
from its protobuf descriptor by :func:`schema_of`.

**Runs.** An export is written in runs. A run opens the destination (:class:`ParquetExport`), is
given the feed after :attr:`ParquetExport.position`, and commits: the state file at the
destination's root (``_collabnet_export.json``: the partner, the position reached, when the export
began, and each committed run with its files) then names the run's files, so the next run continues
after the position reached. A destination holds one partner's export. A run that never committed
(the process died, or it was aborted) leaves files that the state does not name; the next run
deletes them before it writes, so the rows they hold are written once, by the run that commits
them. The state file is replaced atomically on a local disk (written beside it, then renamed); on
an object store it is overwritten in one request. One run at a time may write to a destination.

**Memory.** Events are buffered per event type and day and written as row groups, with bounds on
the events waiting as Python objects, the rows waiting as Arrow data and the files open at once, so
an export of any length runs in the same memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from itertools import accumulate
from operator import attrgetter
from pathlib import PurePosixPath
from typing import Any, Literal, cast

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from collabnet.common.v1 import personal_pb2
from collabnet_analytics.domain import Shared
from collabnet_kit.errors import FailedPrecondition

STATE_FILE = "_collabnet_export.json"
STATE_FORMAT = 1
EVENT_TYPE_KEY = b"collabnet.event_type"
PERSONAL_KEY = b"collabnet.personal"
ENVELOPE: tuple[pa.Field[Any], ...] = (
    pa.field("event_position", pa.int64(), nullable=False),
    pa.field("event_id", pa.string()),
    pa.field("event_time", pa.timestamp("us", tz="UTC")),
    pa.field("event_source", pa.string()),
)
RESERVED = frozenset({*(f.name for f in ENVELOPE), "event_type", "day"})
"""Column names a message field cannot have: the envelope's and the partition keys'. Such a
field's column is named with a trailing underscore (``event_id_``)."""

_PART = re.compile(r"^event_type=[^/]+/day=[^/]+/part-[^/]+\.parquet$")
_TIMESTAMP = "google.protobuf.Timestamp"
_DURATION = "google.protobuf.Duration"
_WRAPPERS: dict[str, pa.DataType] = {
    "google.protobuf.DoubleValue": pa.float64(),
    "google.protobuf.FloatValue": pa.float32(),
    "google.protobuf.Int64Value": pa.int64(),
    "google.protobuf.UInt64Value": pa.uint64(),
    "google.protobuf.Int32Value": pa.int32(),
    "google.protobuf.UInt32Value": pa.uint32(),
    "google.protobuf.BoolValue": pa.bool_(),
    "google.protobuf.StringValue": pa.string(),
    "google.protobuf.BytesValue": pa.binary(),
}
_JSON_MESSAGES = frozenset({"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"})
_SCALARS: dict[int, pa.DataType] = {
    FieldDescriptor.TYPE_STRING: pa.string(),
    FieldDescriptor.TYPE_BYTES: pa.binary(),
    FieldDescriptor.TYPE_BOOL: pa.bool_(),
    FieldDescriptor.TYPE_INT32: pa.int32(),
    FieldDescriptor.TYPE_SINT32: pa.int32(),
    FieldDescriptor.TYPE_SFIXED32: pa.int32(),
    FieldDescriptor.TYPE_INT64: pa.int64(),
    FieldDescriptor.TYPE_SINT64: pa.int64(),
    FieldDescriptor.TYPE_SFIXED64: pa.int64(),
    FieldDescriptor.TYPE_UINT32: pa.uint32(),
    FieldDescriptor.TYPE_FIXED32: pa.uint32(),
    FieldDescriptor.TYPE_UINT64: pa.uint64(),
    FieldDescriptor.TYPE_FIXED64: pa.uint64(),
    FieldDescriptor.TYPE_DOUBLE: pa.float64(),
    FieldDescriptor.TYPE_FLOAT: pa.float32(),
}

Compression = Literal["zstd", "snappy", "gzip", "brotli", "lz4", "none"]
Values = list[Any]
"""One column's values in Python, ``None`` where null."""
ToArray = Callable[[Values], "pa.Array[Any]"]
"""Makes an Arrow array of one type from a column's values."""


# --- converting messages to Arrow ----------------------------------------------------------------


def schema_of(descriptor: Descriptor) -> pa.Schema:
    """The Arrow schema of an event type's files: the envelope's columns, then one per field.

    Scalars keep their width and sign; an enum is its value's name; ``Timestamp`` is a UTC
    timestamp in microseconds and ``Duration`` a duration in microseconds; the wrapper types are
    their nullable value; ``Struct``/``Value``/``ListValue`` and a message that contains itself
    are JSON text; an empty message is a boolean (true when set); other messages are structs;
    repeated fields are lists and maps are maps. A field is null where the message does not set it:
    a message field, or a field with presence (proto3 ``optional``, a oneof member). Fields marked
    ``(collabnet.common.v1.personal)`` carry ``collabnet.personal`` in their metadata: the party
    ids there are pseudonyms and the owned data may be left out, unless the person consented.
    """
    return converter(descriptor).schema


class _Column:
    """One field of a message type, and how its values become an Arrow array."""

    def __init__(self, field: FieldDescriptor, arrow: pa.Field[Any], to_array: ToArray, entry: ToArray | None) -> None:
        self.arrow = arrow
        self._name = field.name
        self._get = attrgetter(field.name)
        self._to_array = to_array
        self._entry = entry  # the map's values, for map fields
        self._repeated = field.is_repeated
        self._presence = field.has_presence and not field.is_repeated

    def array(self, messages: Sequence[Message]) -> pa.Array[Any]:
        """The field's column over ``messages``."""
        get = self._get
        if self._entry is not None:
            maps = [get(m) for m in messages]
            offsets: Any = pa.array(list(accumulate((len(m) for m in maps), initial=0)), pa.int32())
            pairs = [pair for m in maps for pair in m.items()]
            keys = self._to_array([k for k, _ in pairs])
            return pa.MapArray.from_arrays(offsets, keys, self._entry([v for _, v in pairs]), type=self.arrow.type)
        if self._repeated:
            lists = [get(m) for m in messages]
            offsets = pa.array(list(accumulate((len(v) for v in lists), initial=0)), pa.int32())
            flat = [v for values in lists for v in values]
            return pa.ListArray.from_arrays(offsets, self._to_array(flat), type=self.arrow.type)
        if self._presence:
            name = self._name
            return self._to_array([get(m) if m.HasField(name) else None for m in messages])
        return self._to_array(list(map(get, messages)))


class Converter:
    """Turns messages of one type into Arrow, column by column: each field's values are gathered
    in one pass over the messages and converted to an array in one call."""

    def __init__(self, descriptor: Descriptor) -> None:
        self.descriptor = descriptor
        self.columns = _columns(descriptor, frozenset({descriptor.full_name}), top=True)
        self.schema = pa.schema(
            [*ENVELOPE, *(c.arrow for c in self.columns)],
            metadata={EVENT_TYPE_KEY: descriptor.full_name.encode()},
        )

    def batch(self, events: Sequence[Shared]) -> pa.RecordBatch:
        """The events as one record batch of :attr:`schema`."""
        messages = [e.event for e in events]
        envelope: list[pa.Array[Any]] = [
            pa.array([e.position for e in events], pa.int64()),
            pa.array([e.id for e in events], pa.string()),
            pa.array([e.time for e in events], pa.timestamp("us", tz="UTC")),
            pa.array([e.source for e in events], pa.string()),
        ]
        return pa.RecordBatch.from_arrays([*envelope, *(c.array(messages) for c in self.columns)], schema=self.schema)


_CONVERTERS: dict[str, Converter] = {}


def converter(descriptor: Descriptor) -> Converter:
    """The converter of a message type, made once per type."""
    found = _CONVERTERS.get(descriptor.full_name)
    if found is None or found.descriptor is not descriptor:
        found = _CONVERTERS[descriptor.full_name] = Converter(descriptor)
    return found


def _columns(descriptor: Descriptor, outer: frozenset[str], *, top: bool = False) -> list[_Column]:
    columns = []
    for f in descriptor.fields:
        name = f"{f.name}_" if top and f.name in RESERVED else f.name
        metadata = {PERSONAL_KEY: b"true"} if f.GetOptions().HasExtension(personal_pb2.personal) else None
        entry: ToArray | None = None
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            key_field, value_field = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            key_type, key_array = _element(key_field, outer)
            value_type, entry = _element(value_field, outer)
            arrow_type: pa.DataType = pa.map_(key_type, value_type)
            to_array = key_array
        else:
            element_type, to_array = _element(f, outer)
            arrow_type = pa.list_(element_type) if f.is_repeated else element_type
        columns.append(_Column(f, pa.field(name, arrow_type, metadata=metadata), to_array, entry))
    return columns


def _element(f: FieldDescriptor, outer: frozenset[str]) -> tuple[pa.DataType, ToArray]:
    """The Arrow type of one value of the field, and the conversion of a list of such values."""
    if f.enum_type is not None:
        return pa.string(), _enum_names(f.enum_type)
    message = f.message_type
    if message is None:
        scalar = _SCALARS[f.type]
        return scalar, lambda values: pa.array(values, scalar)
    name = message.full_name
    if name == _TIMESTAMP:
        return pa.timestamp("us", tz="UTC"), _micros(pa.timestamp("us", tz="UTC"))
    if name == _DURATION:
        return pa.duration("us"), _micros(pa.duration("us"))
    if name in _WRAPPERS:
        wrapped = _WRAPPERS[name]
        return wrapped, lambda values: pa.array([None if v is None else v.value for v in values], wrapped)
    if name in _JSON_MESSAGES or name in outer:
        return pa.string(), _json
    if not message.fields:
        return pa.bool_(), lambda values: pa.array([None if v is None else True for v in values], pa.bool_())
    return _struct(message, outer | {name})


def _enum_names(enum: EnumDescriptor) -> ToArray:
    names: dict[int | None, str | None] = {v.number: v.name for v in enum.values}
    names[None] = None

    def to_array(values: Values) -> pa.Array[Any]:
        # An open enum may hold a number this code does not know: it is written as the number.
        return pa.array([names[v] if v in names else str(v) for v in values], pa.string())

    return to_array


def _micros(arrow_type: pa.DataType) -> ToArray:
    """Timestamps and durations as microseconds, truncated toward zero."""

    def to_array(values: Values) -> pa.Array[Any]:
        return pa.array(
            [None if v is None else v.seconds * 1_000_000 + int(v.nanos / 1000) for v in values],
            arrow_type,
        )

    return to_array


def _json(values: Values) -> pa.Array[Any]:
    return pa.array(
        [None if v is None else json.dumps(json_format.MessageToDict(v), sort_keys=True) for v in values], pa.string()
    )


def _struct(message: Descriptor, outer: frozenset[str]) -> tuple[pa.DataType, ToArray]:
    columns = _columns(message, outer)
    fields = [c.arrow for c in columns]
    empty = message_factory.GetMessageClass(message)()

    def to_array(values: Values) -> pa.Array[Any]:
        missing = [v is None for v in values]
        present = [empty if v is None else v for v in values] if any(missing) else values
        children = [c.array(present) for c in columns]
        mask = pa.array(missing, pa.bool_()) if any(missing) else None
        return pa.StructArray.from_arrays(children, fields=fields, mask=mask)

    return pa.struct(fields), to_array


# --- the export ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """What a run wrote: events, files (relative to the destination) and the position reached."""

    run_id: str
    events: int
    files: list[str]
    position: int
    skipped: int = 0
    """Events given that were at or before the position already reached, so not written again."""


@dataclass
class _Open:
    path: str
    writer: pq.ParquetWriter


@dataclass
class _Buffer:
    """The events of one event type and day not written yet."""

    pending: list[Shared] = field(default_factory=list)
    batches: list[pa.RecordBatch] = field(default_factory=list)
    rows: int = 0  # in batches
    bytes: int = 0  # of batches


Key = tuple[str, date]


class ParquetExport:
    """One run of a partner's export to a destination: a local directory or a URI that
    ``pyarrow.fs.FileSystem.from_uri`` understands (``s3://bucket/prefix``, ``gs://...``).

    Opening reads the destination's state, refuses a destination that holds another partner's
    export, and deletes the files of runs that never committed. Then :meth:`write` takes the feed
    after :attr:`position` in order, and :meth:`commit` finishes the files and records them::

        run = ParquetExport("/data/partner-7", "partner-7")
        for page in feed_pages(after=run.position):
            run.write(page)
        summary = run.commit()

    :meth:`abort` (or an exception inside a ``with`` block) closes the run without committing.

    ``row_group_rows``: rows of one event type and day buffered before they are written as a row
    group. ``batch_rows``: events of one type and day kept as Python objects before they are
    converted to Arrow. ``max_pending_rows`` (events) and ``max_buffered_bytes`` (Arrow data) bound
    those two buffers over all types and days: beyond them the buffer that had no event for the
    longest is converted, or written as a row group, first (a feed comes roughly in time order, so
    that is a day gone by, whose file is still open). ``max_open_files``: Parquet files kept open
    at once; the least recently written is finished beyond that, and a later row of its type and
    day starts a new file. An open file keeps part of its last row group's encoding buffers
    (dictionaries) until it is finished, so memory grows with both bounds.
    """

    def __init__(
        self,
        destination: str | os.PathLike[str],
        partner_id: str,
        *,
        filesystem: pafs.FileSystem | None = None,
        row_group_rows: int = 50_000,
        batch_rows: int = 2048,
        max_pending_rows: int = 8192,
        max_buffered_bytes: int = 16 * 1024 * 1024,
        max_open_files: int = 32,
        compression: Compression = "zstd",
    ) -> None:
        if not partner_id:
            raise ValueError("partner_id must not be empty")
        self.fs, self.root = _filesystem(destination, filesystem)
        self.partner_id = partner_id
        self.run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
        self.row_group_rows = row_group_rows
        self.batch_rows = min(batch_rows, row_group_rows)
        self.max_pending_rows = max_pending_rows
        self.max_buffered_bytes = max_buffered_bytes
        self.max_open_files = max(1, max_open_files)
        self.compression = compression

        self._state = self._read_state()
        if self._state.get("partner_id", partner_id) != partner_id:
            raise FailedPrecondition("destination: holds the export of another partner")
        self._committed = {f for run in self._state.get("runs", []) for f in run["files"]}
        self._remove_uncommitted()
        self._start = int(self._state.get("position", 0))
        self._position = self._start
        self._events = 0
        self._skipped = 0
        self._buffers: OrderedDict[Key, _Buffer] = OrderedDict()  # the least recently added to first
        self._pending_rows = 0
        self._buffered_bytes = 0
        self._open: OrderedDict[Key, _Open] = OrderedDict()
        self._files: list[str] = []
        self._closed = False

    @property
    def position(self) -> int:
        """The feed position reached: committed before this run, then advanced by :meth:`write`.
        The run takes the feed after it."""
        return self._position

    def __enter__(self) -> ParquetExport:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: object) -> None:
        if self._closed:
            return
        if kind is None:
            self.commit()
        else:
            self.abort()

    def write(self, events: Sequence[Shared]) -> None:
        """Add feed events, in the feed's order. Events at or before :attr:`position` were written
        already (by this run or a committed one) and are skipped."""
        if self._closed:
            raise RuntimeError("the export run is closed")
        last: Key | None = None
        for shared in events:
            if shared.position <= self._position:
                self._skipped += 1
                continue
            self._position = shared.position
            key = (shared.type, _day(shared.time))
            buffer = self._buffers.get(key)
            if buffer is None:
                buffer = self._buffers[key] = _Buffer()
            elif key != last:
                self._buffers.move_to_end(key)
            last = key
            buffer.pending.append(shared)
            self._pending_rows += 1
            self._events += 1
            if len(buffer.pending) >= self.batch_rows:
                self._convert(key, buffer)
            elif self._pending_rows >= self.max_pending_rows:
                self._convert(*next((k, b) for k, b in self._buffers.items() if b.pending))

    def commit(self) -> Summary:
        """Write what is buffered, finish the files and record the run in the state file."""
        if self._closed:
            raise RuntimeError("the export run is closed")
        for key, buffer in list(self._buffers.items()):
            self._convert(key, buffer)
            self._flush(key, buffer)
        self._close_files()
        now = datetime.now(UTC).isoformat()
        state = {
            "format": STATE_FORMAT,
            "partner_id": self.partner_id,
            "position": self._position,
            "since": self._state.get("since", now),
            "updated": now,
            "runs": list(self._state.get("runs", [])),
        }
        if self._files:
            state["runs"].append(
                {
                    "run_id": self.run_id,
                    "commit_time": now,
                    "after": self._start,
                    "position": self._position,
                    "events": self._events,
                    "files": self._files,
                }
            )
        self._write_state(state)
        self._state = state
        self._closed = True
        return Summary(self.run_id, self._events, list(self._files), self._position, self._skipped)

    def abort(self) -> None:
        """Close the run without committing, and delete its files (the next run would otherwise)."""
        if self._closed:
            return
        self._closed = True
        self._buffers.clear()
        for opened in self._open.values():
            with contextlib.suppress(OSError):
                opened.writer.close()
        self._open.clear()
        for relative in self._files:
            with contextlib.suppress(OSError):
                self.fs.delete_file(self._path(relative))

    # --- buffers and files

    def _convert(self, key: Key, buffer: _Buffer) -> None:
        """Turn the buffer's pending events into an Arrow batch; write a row group when one is full."""
        if not buffer.pending:
            return
        batch = converter(cast(Descriptor, buffer.pending[0].event.DESCRIPTOR)).batch(buffer.pending)
        self._pending_rows -= len(buffer.pending)
        buffer.pending = []
        buffer.batches.append(batch)
        buffer.rows += batch.num_rows
        buffer.bytes += batch.nbytes
        self._buffered_bytes += batch.nbytes
        if buffer.rows >= self.row_group_rows:
            self._flush(key, buffer)
        while self._buffered_bytes > self.max_buffered_bytes:
            self._flush(*next((k, b) for k, b in self._buffers.items() if b.batches))

    def _flush(self, key: Key, buffer: _Buffer) -> None:
        """Write the buffer's batches to its file as one row group."""
        if not buffer.batches:
            return
        table = pa.Table.from_batches(buffer.batches)
        self._writer(key, table.schema).write_table(table, row_group_size=max(table.num_rows, 1))
        self._buffered_bytes -= buffer.bytes
        buffer.batches = []
        buffer.rows = buffer.bytes = 0
        if not buffer.pending:
            del self._buffers[key]

    def _writer(self, key: Key, schema: pa.Schema) -> pq.ParquetWriter:
        opened = self._open.get(key)
        if opened is not None:
            self._open.move_to_end(key)
            return opened.writer
        while len(self._open) >= self.max_open_files:
            _, oldest = self._open.popitem(last=False)
            self._finish(oldest)
        event_type, day = key
        folder = f"event_type={event_type}/day={day.isoformat()}"
        relative = f"{folder}/part-{self.run_id}-{len(self._files) + 1:05d}.parquet"
        self.fs.create_dir(self._path(folder), recursive=True)
        self._files.append(relative)
        writer = pq.ParquetWriter(self._path(relative), schema, filesystem=self.fs, compression=self.compression)
        self._open[key] = _Open(relative, writer)
        return writer

    def _finish(self, opened: _Open) -> None:
        opened.writer.close()
        if _is_local(self.fs):
            # Committed files must be on the disk before the state that names them.
            _fsync(self._path(opened.path))

    def _close_files(self) -> None:
        while self._open:
            _, oldest = self._open.popitem(last=False)
            self._finish(oldest)

    # --- state

    def _path(self, relative: str) -> str:
        return str(PurePosixPath(self.root) / relative) if self.root else relative

    def _read_state(self) -> dict[str, Any]:
        path = self._path(STATE_FILE)
        if self.fs.get_file_info(path).type == pafs.FileType.NotFound:
            return {}
        with self.fs.open_input_stream(path) as stream:
            state: dict[str, Any] = json.loads(stream.read())
        if state.get("format") != STATE_FORMAT:
            raise FailedPrecondition(f"destination: {STATE_FILE} has format {state.get('format')}, not {STATE_FORMAT}")
        return state

    def _write_state(self, state: dict[str, Any]) -> None:
        text = json.dumps(state, indent=1).encode()
        path = self._path(STATE_FILE)
        if _is_local(self.fs):
            temporary = f"{path}.{self.run_id}.tmp"
            with open(temporary, "wb") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
            _fsync(self.root or ".")
        else:
            with self.fs.open_output_stream(path) as stream:
                stream.write(text)

    def _remove_uncommitted(self) -> None:
        """Delete the files of runs that did not commit, and state files left half written."""
        selector = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        prefix = f"{self.root.rstrip('/')}/" if self.root else ""
        for info in self.fs.get_file_info(selector):
            if info.type != pafs.FileType.File or not info.path.startswith(prefix):
                continue
            relative = info.path[len(prefix) :]
            stale = _PART.match(relative) and relative not in self._committed
            if stale or (relative.startswith(f"{STATE_FILE}.") and relative.endswith(".tmp")):
                self.fs.delete_file(info.path)


def _filesystem(destination: str | os.PathLike[str], filesystem: pafs.FileSystem | None) -> tuple[pafs.FileSystem, str]:
    if filesystem is not None:
        return filesystem, os.fspath(destination).rstrip("/")
    text = os.fspath(destination)
    if "://" not in text:
        return pafs.LocalFileSystem(), os.path.abspath(text)
    fs, path = pafs.FileSystem.from_uri(text)
    return fs, path.rstrip("/")


def _is_local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def _fsync(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _day(moment: datetime) -> date:
    """The day of an event's time in UTC (a time without a zone is taken as UTC)."""
    if moment.tzinfo is None or moment.tzinfo is UTC:
        return moment.date()
    return moment.astimezone(UTC).date()


Pages = Callable[[int], Awaitable[Sequence[Shared]]]
"""The feed after a position, one bounded page at a time (empty at the end)."""


async def run(destination: str, partner_id: str, pages: Pages) -> Summary:
    """One export run: the feed after the destination's last position, page by page, the file work
    off the event loop; committed at the end, aborted on any error."""
    writer = await asyncio.to_thread(ParquetExport, destination, partner_id)
    try:
        after = writer.position
        while page := await pages(after):
            await asyncio.to_thread(writer.write, page)
            after = page[-1].position
    except BaseException:
        await asyncio.to_thread(writer.abort)
        raise
    return await asyncio.to_thread(writer.commit)
