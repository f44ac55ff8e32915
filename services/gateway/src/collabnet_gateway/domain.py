"""The gateway's rules, without I/O: rate limits, webhook signatures, idempotency, field paths."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from collabnet_kit.errors import InvalidArgument, Validator


@dataclass
class TokenBucket:
    """``rate`` tokens a second, up to ``burst``; each request takes one."""

    rate: float
    burst: float
    tokens: float = -1.0
    updated: float = 0.0

    def take(self, now: float) -> float:
        """0 when the request may go ahead; otherwise the seconds until a token is there."""
        if self.tokens < 0:
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass
class RateLimiter:
    """One bucket per API key (per gateway replica)."""

    rate: float
    burst: float
    buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def check(self, key: str, now: float) -> float:
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = TokenBucket(self.rate, self.burst)
        return bucket.take(now)


# --- webhooks ----------------------------------------------------------------------------------

SIGNATURE_HEADER = "X-Collabnet-Signature"
"""``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``, as Stripe and others do it."""
TOLERANCE_SECONDS = 300

# No whitespace or control characters (a NUL could not even be stored).
_URL = re.compile(r"^https?://[^\s\x00-\x1f\x7f/$.?#][^\s\x00-\x1f\x7f]*$")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, now: int, tolerance: int = TOLERANCE_SECONDS) -> bool:
    """What a partner's endpoint does with a delivery: check the signature and that it is recent."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), f"t={timestamp},v1={parts.get('v1', '')}")


def validate_subscription(url: str, event_types: list[str], known: set[str]) -> None:
    check = Validator()
    check.require(bool(_URL.match(url)) and len(url) <= 2000, "url", "must be an http(s) URL")
    check.require(bool(event_types), "event_types", "subscribe to at least one event type")
    unknown = sorted(set(event_types) - known)
    check.require(not unknown, "event_types", f"unknown event types: {', '.join(unknown)}")
    check.raise_if_any()


def backoff_seconds(attempt: int, base: float = 1.0, cap: float = 600.0) -> float:
    """Delay before delivery attempt ``attempt + 1`` (attempt counts from 1)."""
    return min(cap, base * 2.0 ** (attempt - 1))


# --- idempotency -------------------------------------------------------------------------------


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    """What must match for a retry to count as the same request."""
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":")).encode()
    except json.JSONDecodeError:
        canonical = body
    return hashlib.sha256(f"{method} {path}\n".encode() + canonical).hexdigest()


def validate_idempotency_key(key: str) -> None:
    if not 1 <= len(key) <= 200 or not key.isprintable():
        raise InvalidArgument.field("Idempotency-Key", "must be 1 to 200 printable characters")


def field_path(location: Sequence[str | int], body_field: str | None = None) -> str:
    """A request validation error's location as a field path: ``("body", "lines", 0, "sku")`` is
    ``lines[0].sku``; on a route whose body is one field of the request, that field leads."""
    where, *rest = location or ("body",)
    path = body_field if where == "body" and body_field else ""
    for part in rest:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path or str(where)
