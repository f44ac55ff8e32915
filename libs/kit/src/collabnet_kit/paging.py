"""Opaque page tokens (AIP-158): the sort key of the last item of a page, for the next page to start after."""

from __future__ import annotations

import base64
import json

from collabnet_kit.errors import InvalidArgument


def encode_cursor(*values: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode()


def decode_cursor(token: str, size: int, field: str = "page_token") -> list[str] | None:
    """The values a token carries, or None for an empty token; INVALID_ARGUMENT naming ``field`` when
    the token was not made by :func:`encode_cursor` with ``size`` values."""
    if not token:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, json.JSONDecodeError):
        raise InvalidArgument.field(field, "is not a token this service issued") from None
    # A NUL character is in no value a token was made of (and no text column could hold one).
    if (
        not isinstance(values, list)
        or len(values) != size
        or not all(isinstance(v, str) and "\x00" not in v for v in values)
    ):
        raise InvalidArgument.field(field, "is not a token this service issued")
    return values
