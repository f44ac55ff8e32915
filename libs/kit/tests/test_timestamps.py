from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp

from collabnet.common.v1 import common_pb2
from collabnet_kit.timestamps import moment, timestamp


def test_a_datetime_goes_to_a_timestamp_and_back_in_utc() -> None:
    local = datetime(2026, 11, 22, 10, 30, tzinfo=timezone(timedelta(hours=2)))
    stamp = timestamp(local)
    assert isinstance(stamp, Timestamp)
    audit = common_pb2.AuditStamp()
    audit.create_time.CopyFrom(stamp)
    assert moment(audit, "create_time") == datetime(2026, 11, 22, 8, 30, tzinfo=UTC)


def test_unset_stays_unset() -> None:
    assert timestamp(None) is None
    assert moment(common_pb2.AuditStamp(), "create_time") is None
