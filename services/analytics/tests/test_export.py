"""The Parquet export of a partner's feed, written to temporary directories and read back with DuckDB."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    empty_pb2,
    message_factory,
    struct_pb2,
    wrappers_pb2,
)
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from collabnet.analytics.v1 import events_pb2 as analytics_events
from collabnet.common.v1.common_pb2 import Money
from collabnet.improvement.v1 import events_pb2 as improvement
from collabnet.reviews.v1 import events_pb2 as reviews
from collabnet.supplychain.v1 import events_pb2 as supplychain
from collabnet_analytics.domain import Shared
from collabnet_analytics.export import STATE_FILE, ParquetExport, schema_of
from collabnet_kit.errors import FailedPrecondition

START = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
REVIEWS = "event_type=collabnet.reviews.v1.ReviewPublished"
UTC_TS = pa.timestamp("us", tz="UTC")


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def shared(position: int, event: Message, time: datetime | None = None) -> Shared:
    name = event.DESCRIPTOR.full_name
    return Shared(
        position=position,
        id=f"event-{position}",
        type=name,
        source=name.split(".")[1],
        time=time or START + timedelta(minutes=position),
        event=event,
    )


def review(number: int, *, product: str = "P1", revision: int = 1, rating: int = 4, verified: bool = True) -> Any:
    return reviews.ReviewPublished(
        review_id=f"R{number}",
        product_id=product,
        revision=revision,
        author_id=f"anon-{number}",
        channel_partner_id="retailer-1",
        rating=rating,
        disclosure=reviews.Disclosure(verified_purchase=verified, revision_bought=revision if verified else 0),
        publish_time=stamp(START + timedelta(minutes=number, microseconds=123_456)),
    )


def reviews_feed(count: int, first: int = 1) -> list[Shared]:
    return [shared(n, review(n)) for n in range(first, first + count)]


def query(sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect() as connection:
        return connection.execute(sql).fetchall()


def export(destination: Path, partner_id: str, events: Sequence[Shared], **options: Any) -> Any:
    run = ParquetExport(destination, partner_id, **options)
    run.write([e for e in events if e.position > run.position])
    return run.commit()


# --- schemas


def test_review_published_schema_has_the_envelope_then_its_fields_with_nested_disclosure() -> None:
    schema = schema_of(reviews.ReviewPublished.DESCRIPTOR)
    assert schema.names[:4] == ["event_position", "event_id", "event_time", "event_source"]
    assert not schema.field("event_position").nullable
    assert schema.field("event_time").type == UTC_TS
    assert schema.field("rating").type == pa.int32()
    assert schema.field("publish_time").type == UTC_TS
    disclosure = schema.field("disclosure").type
    assert isinstance(disclosure, pa.StructType)
    assert [(f.name, f.type) for f in disclosure] == [
        ("verified_purchase", pa.bool_()),
        ("revision_bought", pa.int32()),
        ("syndicated_from", pa.string()),
        ("incentivized", pa.bool_()),
        ("affiliated", pa.bool_()),
        ("incentive", pa.string()),
    ]
    assert schema.metadata == {b"collabnet.event_type": b"collabnet.reviews.v1.ReviewPublished"}
    assert schema.field("author_id").metadata == {b"collabnet.personal": b"true"}
    assert schema.field("review_id").metadata is None


def test_order_placed_schema_has_a_list_of_lines_and_money_as_structs() -> None:
    schema = schema_of(supplychain.OrderPlaced.DESCRIPTOR)
    money = pa.struct([("currency_code", pa.string()), ("amount_minor", pa.int64())])
    line = pa.struct(
        [("product_id", pa.string()), ("revision", pa.int32()), ("quantity", pa.int32()), ("unit_price", money)]
    )
    assert schema.field("lines").type == pa.list_(line)
    assert schema.field("total").type == money
    assert schema.field("place_time").type == UTC_TS


def test_recall_schema_has_repeated_strings_and_repeated_messages_with_optional_fields() -> None:
    schema = schema_of(supplychain.RecallIssued.DESCRIPTOR)
    assert schema.field("lot_ids").type == pa.list_(pa.string())
    affected = schema.field("affected_orders").type
    assert isinstance(affected, pa.ListType)
    order = affected.value_type
    assert isinstance(order, pa.StructType)
    assert [f.name for f in order] == ["order_id", "customer_id", "retailer_id", "email", "phone"]
    assert order.field("email").type == pa.string()
    assert order.field("email").metadata == {b"collabnet.personal": b"true"}


def test_product_registered_schema_has_a_map_and_enums_are_strings() -> None:
    assert schema_of(supplychain.ProductRegistered.DESCRIPTOR).field("attributes").type == pa.map_(
        pa.string(), pa.string()
    )
    assert schema_of(improvement.CaseResolved.DESCRIPTOR).field("outcome").type == pa.string()


def test_fields_named_like_the_envelope_or_the_partitions_are_renamed() -> None:
    schema = schema_of(analytics_events.EventShared.DESCRIPTOR)
    assert schema.names == [
        *("event_position", "event_id", "event_time", "event_source"),
        *("partner_id", "position", "event_id_", "event_type_", "event_source_", "event_time_", "event"),
    ]
    assert schema.field("event").type == pa.struct([("type_url", pa.string()), ("value", pa.binary())])


# --- values


def test_values_round_trip_through_duckdb(tmp_path: Path) -> None:
    order = supplychain.OrderPlaced(
        order_id="O1",
        customer_id="anon-c",
        retailer_id="retailer-1",
        lines=[
            supplychain.OrderLine(
                product_id="P1", revision=2, quantity=3, unit_price=Money(currency_code="EUR", amount_minor=1999)
            ),
            supplychain.OrderLine(product_id="P2", revision=1, quantity=1),
        ],
        total=Money(currency_code="EUR", amount_minor=5997),
    )
    recall = supplychain.RecallIssued(
        recall_id="RC1",
        lot_ids=["L1", "L2"],
        product_ids=["P1"],
        affected_orders=[
            supplychain.RecallIssued.AffectedOrder(order_id="O1", customer_id="c1", email="c1@example.com"),
            supplychain.RecallIssued.AffectedOrder(order_id="O2", customer_id="anon-2", phone=""),
        ],
    )
    registered = supplychain.ProductRegistered(
        product_id="P1", maker_id="M", attributes={"colour": "red", "volume": "1l"}
    )
    resolved = improvement.CaseResolved(case_id="C1", outcome=improvement.CASE_OUTCOME_RECOVERED)
    unresolved = improvement.CaseResolved(case_id="C2")
    bare = reviews.ReviewPublished(review_id="R2", product_id="P1", rating=2)
    events = [
        shared(1, review(1)),
        shared(2, bare),
        shared(3, order),
        shared(4, recall),
        shared(5, registered),
        shared(6, resolved),
        shared(7, unresolved),
    ]
    summary = export(tmp_path, "partner-1", events)
    assert summary.events == 7
    assert summary.position == 7

    def rows(event_type: str, columns: str) -> list[tuple[Any, ...]]:
        files = f"{tmp_path}/event_type={event_type}/*/*.parquet"
        return query(f"SELECT {columns} FROM read_parquet('{files}', hive_partitioning=true) ORDER BY event_position")

    published = rows(
        "collabnet.reviews.v1.ReviewPublished",
        "event_position, event_id, event_source, epoch_us(event_time), epoch_us(publish_time), rating, "
        "disclosure.verified_purchase, disclosure IS NULL, author_id, event_type, day",
    )
    first_time = START + timedelta(minutes=1)
    assert published[0] == (
        1,
        "event-1",
        "reviews",
        int(first_time.timestamp()) * 1_000_000,
        int(first_time.timestamp()) * 1_000_000 + 123_456,
        4,
        True,
        False,
        "anon-1",
        "collabnet.reviews.v1.ReviewPublished",
        START.date(),
    )
    # An unset message field is null, unset scalars keep their proto3 defaults.
    assert published[1][4:9] == (None, 2, None, True, "")

    lines = rows(
        "collabnet.supplychain.v1.OrderPlaced",
        "len(lines), lines[1].unit_price.amount_minor, lines[2].unit_price IS NULL, total.amount_minor, place_time",
    )
    assert lines == [(2, 1999, True, 5997, None)]

    affected = rows(
        "collabnet.supplychain.v1.RecallIssued",
        "lot_ids, affected_orders[1].email, affected_orders[1].phone, affected_orders[2].email, "
        "affected_orders[2].phone",
    )
    # proto3 optional: null when not set, the value (even empty) when set.
    assert affected == [(["L1", "L2"], "c1@example.com", None, None, "")]

    attributes = rows("collabnet.supplychain.v1.ProductRegistered", "attributes['colour'], cardinality(attributes)")
    assert attributes == [("red", 2)]

    outcomes = rows("collabnet.improvement.v1.CaseResolved", "case_id, outcome")
    assert outcomes == [("C1", "CASE_OUTCOME_RECOVERED"), ("C2", "CASE_OUTCOME_UNSPECIFIED")]


def test_files_are_partitioned_by_event_type_and_utc_day(tmp_path: Path) -> None:
    late_evening = datetime(2026, 11, 20, 20, 0, tzinfo=timezone(timedelta(hours=-5)))  # 01:00 UTC on the 21st
    events = [
        shared(1, review(1), datetime(2026, 11, 20, 23, 59, tzinfo=UTC)),
        shared(2, review(2), late_evening),
        shared(3, improvement.CaseOpened(case_id="C1"), datetime(2026, 11, 21, 8, 0, tzinfo=UTC)),
        shared(4, review(3), datetime(2026, 11, 21, 9, 0, tzinfo=UTC)),
    ]
    summary = export(tmp_path, "partner-1", events)
    folders = sorted(str(Path(f).parent) for f in summary.files)
    assert folders == [
        "event_type=collabnet.improvement.v1.CaseOpened/day=2026-11-21",
        f"{REVIEWS}/day=2026-11-20",
        f"{REVIEWS}/day=2026-11-21",
    ]
    assert all((tmp_path / f).is_file() for f in summary.files)
    assert all(Path(f).name.startswith(f"part-{summary.run_id}-") for f in summary.files)
    per_day = query(
        f"SELECT day, list(event_position ORDER BY event_position) FROM read_parquet("
        f"'{tmp_path}/{REVIEWS}/*/*.parquet', hive_partitioning=true) GROUP BY day ORDER BY day"
    )
    assert [(str(day), positions) for day, positions in per_day] == [("2026-11-20", [1]), ("2026-11-21", [2, 4])]
    [case_file] = [f for f in summary.files if "CaseOpened" in f]
    schema = pq.read_schema(tmp_path / case_file)
    assert schema.metadata is not None
    assert schema.metadata[b"collabnet.event_type"] == b"collabnet.improvement.v1.CaseOpened"


def test_an_average_rating_per_product_revision_is_one_duckdb_query(tmp_path: Path) -> None:
    ratings = {("P1", 1): [5, 4, 3], ("P1", 2): [2, 2], ("P2", 1): [5]}
    events, number = [], 0
    for (product, revision), values in ratings.items():
        for rating in values:
            number += 1
            events.append(shared(number, review(number, product=product, revision=revision, rating=rating)))
    export(tmp_path, "partner-1", events)
    averages = query(
        f"SELECT product_id, revision, avg(rating), count(*) FILTER (WHERE disclosure.verified_purchase) "
        f"FROM read_parquet('{tmp_path}/{REVIEWS}/*/*.parquet', hive_partitioning=true) "
        f"GROUP BY ALL ORDER BY ALL"
    )
    assert averages == [("P1", 1, 4.0, 3), ("P1", 2, 2.0, 2), ("P2", 1, 5.0, 1)]


# --- runs


def test_a_later_run_adds_only_the_events_after_the_position_reached(tmp_path: Path) -> None:
    first = export(tmp_path, "partner-1", reviews_feed(3))
    assert (first.events, first.position) == (3, 3)

    run = ParquetExport(tmp_path, "partner-1")
    assert run.position == 3
    run.write(reviews_feed(5))  # the caller resends what it had: the first three are skipped
    second = run.commit()
    assert (second.events, second.skipped, second.position) == (2, 3, 5)
    assert set(first.files).isdisjoint(second.files)

    positions = query(f"SELECT event_position FROM read_parquet('{tmp_path}/*/*/*.parquet') ORDER BY 1")
    assert [p for (p,) in positions] == [1, 2, 3, 4, 5]
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["partner_id"] == "partner-1"
    assert state["position"] == 5
    assert [run["run_id"] for run in state["runs"]] == [first.run_id, second.run_id]
    assert [run["files"] for run in state["runs"]] == [first.files, second.files]

    empty = export(tmp_path, "partner-1", [])
    assert (empty.events, empty.files, empty.position) == (0, [], 5)


def test_a_run_that_died_before_committing_leaves_no_rows_behind(tmp_path: Path) -> None:
    export(tmp_path, "partner-1", reviews_feed(2))
    # A run in its own process writes row groups to its files and dies without committing.
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_export import ParquetExport, reviews_feed
        run = ParquetExport({str(tmp_path)!r}, "partner-1", row_group_rows=2)
        run.write(reviews_feed(6, first=3))
        os._exit(3)
        """
    )
    died = subprocess.run([sys.executable, "-c", script], check=False, timeout=120)
    assert died.returncode == 3
    orphans = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet")}
    committed = {f for run in json.loads((tmp_path / STATE_FILE).read_text())["runs"] for f in run["files"]}
    assert orphans - committed, "the dead run wrote files"

    run = ParquetExport(tmp_path, "partner-1")
    assert run.position == 2
    assert {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet")} == committed
    run.write(reviews_feed(6, first=3))
    summary = run.commit()
    assert (summary.events, summary.position) == (6, 8)
    counts = query(
        f"SELECT count(*), count(DISTINCT event_id), max(event_position) FROM read_parquet('{tmp_path}/*/*/*.parquet')"
    )
    assert counts == [(8, 8, 8)]


def test_an_aborted_run_deletes_its_files_and_keeps_the_position(tmp_path: Path) -> None:
    export(tmp_path, "partner-1", reviews_feed(2))

    def failing_run() -> None:
        with ParquetExport(tmp_path, "partner-1", row_group_rows=1) as run:
            run.write(reviews_feed(3, first=3))
            assert len(list(tmp_path.rglob("*.parquet"))) == 2  # its file has rows already
            raise RuntimeError("feed read failed")

    with pytest.raises(RuntimeError, match="feed read failed"):
        failing_run()
    assert len(list(tmp_path.rglob("*.parquet"))) == 1
    assert ParquetExport(tmp_path, "partner-1").position == 2


def test_another_partners_run_into_the_same_destination_is_refused(tmp_path: Path) -> None:
    first = export(tmp_path, "partner-1", reviews_feed(2))
    with pytest.raises(FailedPrecondition, match="destination"):
        ParquetExport(tmp_path, "partner-2")
    assert all((tmp_path / f).is_file() for f in first.files)
    assert ParquetExport(str(tmp_path), "partner-1").position == 2


def test_buffers_and_open_files_are_bounded_and_every_row_is_written_once(tmp_path: Path) -> None:
    days = 5
    events = [
        shared(
            n,
            review(n) if n % 3 else improvement.CaseOpened(case_id=f"C{n}", rating=n % 5),
            START + timedelta(days=n % days),
        )
        for n in range(1, 301)
    ]
    run = ParquetExport(
        tmp_path,
        "partner-1",
        row_group_rows=20,
        batch_rows=7,
        max_pending_rows=30,
        max_buffered_bytes=4000,
        max_open_files=3,
    )
    for start in range(0, len(events), 50):
        run.write(events[start : start + 50])
        assert run._pending_rows <= 30
        assert run._buffered_bytes <= 4000
        assert len(run._open) <= 3
    summary = run.commit()
    assert summary.events == 300
    # Interleaved days evict files, so one type and day spans several files.
    assert len(summary.files) > 2 * days
    counts = query(
        f"SELECT event_type, count(*), count(DISTINCT event_position), count(DISTINCT day) FROM read_parquet("
        f"'{tmp_path}/*/*/*.parquet', hive_partitioning=true, union_by_name=true) GROUP BY ALL ORDER BY ALL"
    )
    assert counts == [
        ("collabnet.improvement.v1.CaseOpened", 100, 100, days),
        ("collabnet.reviews.v1.ReviewPublished", 200, 200, days),
    ]


def test_one_type_and_day_goes_to_one_file_a_row_group_each_time_row_group_rows_are_buffered(tmp_path: Path) -> None:
    summary = export(tmp_path, "partner-1", reviews_feed(50), row_group_rows=20, batch_rows=8)
    [written] = summary.files
    metadata = pq.ParquetFile(tmp_path / written).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [24, 24, 2]


def kinds_message() -> type[Message]:
    """A message with the field kinds no event has yet: well-known types, a recursive message, an
    empty one, a map of messages, an optional enum, unsigned and float numbers, bytes."""
    pool = descriptor_pool.DescriptorPool()
    for known in (duration_pb2, wrappers_pb2, struct_pb2, empty_pb2):
        pool.AddSerializedFile(known.DESCRIPTOR.serialized_pb)
    f = descriptor_pb2.FieldDescriptorProto
    part = descriptor_pb2.DescriptorProto(name="Part", field=[f(name="size", number=1, type=f.TYPE_INT32)])
    entry = descriptor_pb2.DescriptorProto(
        name="PartsEntry",
        field=[
            f(name="key", number=1, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL),
            f(name="value", number=2, type=f.TYPE_MESSAGE, type_name=".testing.v1.Part", label=f.LABEL_OPTIONAL),
        ],
        options=descriptor_pb2.MessageOptions(map_entry=True),
    )

    def message(name: str, number: int, type_name: str, **more: Any) -> descriptor_pb2.FieldDescriptorProto:
        return f(name=name, number=number, type=f.TYPE_MESSAGE, type_name=type_name, **more)

    kinds = descriptor_pb2.DescriptorProto(
        name="Kinds",
        field=[
            message("took", 1, ".google.protobuf.Duration"),
            message("note", 2, ".google.protobuf.StringValue"),
            message("extra", 3, ".google.protobuf.Struct"),
            message("ping", 4, ".google.protobuf.Empty"),
            message("parent", 5, ".testing.v1.Kinds"),
            message("parts", 6, ".testing.v1.Kinds.PartsEntry", label=f.LABEL_REPEATED),
            f(
                name="level",
                number=7,
                type=f.TYPE_ENUM,
                type_name=".testing.v1.Level",
                proto3_optional=True,
                oneof_index=0,
            ),
            f(name="big", number=8, type=f.TYPE_UINT64),
            f(name="small", number=9, type=f.TYPE_FLOAT),
            f(name="raw", number=10, type=f.TYPE_BYTES),
            f(name="sizes", number=11, type=f.TYPE_SINT32, label=f.LABEL_REPEATED),
        ],
        nested_type=[entry],
        oneof_decl=[descriptor_pb2.OneofDescriptorProto(name="_level")],
    )
    level = descriptor_pb2.EnumDescriptorProto(
        name="Level",
        value=[
            descriptor_pb2.EnumValueDescriptorProto(name="LEVEL_UNSPECIFIED", number=0),
            descriptor_pb2.EnumValueDescriptorProto(name="LEVEL_HIGH", number=1),
        ],
    )
    pool.Add(
        descriptor_pb2.FileDescriptorProto(
            name="testing/v1/kinds.proto",
            package="testing.v1",
            syntax="proto3",
            dependency=[k.DESCRIPTOR.name for k in (duration_pb2, wrappers_pb2, struct_pb2, empty_pb2)],
            message_type=[part, kinds],
            enum_type=[level],
        )
    )
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("testing.v1.Kinds"))


def test_well_known_types_recursion_maps_of_messages_and_optional_enums_are_mapped(tmp_path: Path) -> None:
    kinds = kinds_message()
    schema = schema_of(cast(Descriptor, kinds.DESCRIPTOR))
    part = pa.struct([("size", pa.int32())])
    assert [(f.name, f.type) for f in schema][4:] == [
        ("took", pa.duration("us")),
        ("note", pa.string()),
        ("extra", pa.string()),
        ("ping", pa.bool_()),
        ("parent", pa.string()),
        ("parts", pa.map_(pa.string(), part)),
        ("level", pa.string()),
        ("big", pa.uint64()),
        ("small", pa.float32()),
        ("raw", pa.binary()),
        ("sizes", pa.list_(pa.int32())),
    ]
    full: Any = kinds(big=2**64 - 1, small=0.5, raw=b"\x00\x01", sizes=[-1, 2])
    full.took.FromMicroseconds(-1_500_001)
    full.note.value = "hello"
    full.extra.update({"a": 1, "b": ["x"]})
    full.ping.SetInParent()
    full.parent.note.value = "inner"
    full.parts["wheel"].size = 4
    full.level = 1
    empty: Any = kinds()
    empty.level = 0
    summary = export(tmp_path, "partner-1", [shared(1, full), shared(2, kinds()), shared(3, empty)])
    [written] = summary.files
    rows = pq.read_table(tmp_path / written).to_pylist()
    assert rows[0]["took"] == timedelta(microseconds=-1_500_001)
    assert (rows[0]["note"], rows[0]["ping"], rows[0]["level"]) == ("hello", True, "LEVEL_HIGH")
    assert json.loads(rows[0]["extra"]) == {"a": 1.0, "b": ["x"]}
    assert json.loads(rows[0]["parent"]) == {"note": "inner"}
    assert rows[0]["parts"] == [("wheel", {"size": 4})]
    assert (rows[0]["big"], rows[0]["small"], rows[0]["raw"], rows[0]["sizes"]) == (
        2**64 - 1,
        0.5,
        b"\x00\x01",
        [-1, 2],
    )
    unset: dict[str, Any] = {
        "took": None,
        "note": None,
        "extra": None,
        "ping": None,
        "parent": None,
        "parts": [],
        "level": None,
    }
    assert {k: rows[1][k] for k in unset} == unset
    assert rows[2]["level"] == "LEVEL_UNSPECIFIED"  # set to its zero value: present, unlike rows[1]


def test_a_uri_or_a_given_filesystem_is_written_like_a_directory(tmp_path: Path) -> None:
    export(tmp_path / "uri", "partner-1", reviews_feed(2))
    assert ParquetExport(f"file://{tmp_path}/uri", "partner-1").position == 2

    # A filesystem other than the local one (as an object store would be): the state is overwritten.
    subtree = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    first = ParquetExport("bucket/exports", "partner-1", filesystem=subtree)
    first.write(reviews_feed(2))
    first.commit()
    second = ParquetExport("bucket/exports", "partner-1", filesystem=subtree)
    second.write(reviews_feed(3))
    summary = second.commit()
    assert (summary.events, summary.position) == (1, 3)
    positions = query(f"SELECT event_position FROM read_parquet('{tmp_path}/bucket/exports/*/*/*.parquet') ORDER BY 1")
    assert [p for (p,) in positions] == [1, 2, 3]
