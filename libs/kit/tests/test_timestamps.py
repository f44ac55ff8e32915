from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from collabnet.common.v1 import common_pb2
from collabnet_kit.errors import InvalidArgument
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


@pytest.mark.parametrize(
    ("seconds", "nanos"), [(0, -1), (0, 1_000_000_000), (253_402_300_800, 0), (-62_135_596_801, 0), (2**62, 0)]
)
def test_a_timestamp_outside_its_range_is_an_invalid_argument_naming_the_field(seconds: int, nanos: int) -> None:
    audit = common_pb2.AuditStamp()
    audit.create_time.CopyFrom(Timestamp(seconds=seconds, nanos=nanos))
    with pytest.raises(InvalidArgument) as refused:
        moment(audit, "create_time")
    assert [v.field for v in refused.value.violations] == ["create_time"]
