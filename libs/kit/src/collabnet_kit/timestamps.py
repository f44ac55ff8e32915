"""google.protobuf.Timestamp fields to and from aware datetimes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from collabnet_kit.errors import InvalidArgument


def timestamp(value: datetime | None) -> Timestamp | None:
    """``value`` as a Timestamp; None stays None (a field left unset)."""
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def moment(message: Any, field_name: str) -> datetime | None:
    """A Timestamp field of ``message`` as an aware datetime in UTC, or None when unset.

    A Timestamp outside its valid range (years 1 to 9999, nanos 0 to 999,999,999) is the caller's
    mistake: ``InvalidArgument`` naming the field."""
    if not message.HasField(field_name):
        return None
    try:
        return getattr(message, field_name).ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]
    except (ValueError, OverflowError):
        raise InvalidArgument.field(
            field_name, "must be a valid timestamp (years 1 to 9999, nanos 0 to 999999999)"
        ) from None
