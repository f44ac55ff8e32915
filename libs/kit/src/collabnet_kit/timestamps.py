"""google.protobuf.Timestamp fields to and from aware datetimes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(value: datetime | None) -> Timestamp | None:
    """``value`` as a Timestamp; None stays None (a field left unset)."""
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def moment(message: Any, field_name: str) -> datetime | None:
    """A Timestamp field of ``message`` as an aware datetime in UTC, or None when unset."""
    if not message.HasField(field_name):
        return None
    return getattr(message, field_name).ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]
