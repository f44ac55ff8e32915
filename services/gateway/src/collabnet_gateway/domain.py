"""The gateway's rules, without I/O: rate limits, webhook signatures, idempotency, who hears of what."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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


# --- who may hear of an event ------------------------------------------------------------------


@dataclass(frozen=True)
class ProductParties:
    """A product's maker and the retailers that list it, from supplychain's events."""

    maker: str = ""
    retailers: frozenset[str] = frozenset()

    def all(self) -> set[str]:
        return {p for p in {self.maker, *self.retailers} if p}


def audience(event_type: str, event: Mapping[str, Any], products: Mapping[str, ProductParties]) -> set[str]:
    """The partners that may receive an event: those the resource it is about belongs to.

    ``event`` is the event as JSON; ``products`` the product parties of the products it names.
    An event about a consumer is never sent to partners unrelated to the product or order.
    """
    name = event_type.rsplit(".", 1)[-1]

    def product(product_id: str) -> set[str]:
        return products.get(product_id, ProductParties()).all()

    if name in {"CaseOpened", "CaseResolved"}:
        return {p for p in (event.get("maker_id"), event.get("retailer_id")) if p}
    if name in {"CaseEngaged"}:
        return {event["partner_id"]} if event.get("partner_id") else set()
    if name == "CorrectiveActionRequested":
        return {p for p in (event.get("supplier_id"), event.get("requested_by")) if p}
    if name in {"ReviewPublished", "ReviewRevised", "ReviewWithdrawn", "ReviewResponded", "RatingSummaryChanged"}:
        return product(event.get("product_id", ""))
    if name in {"OrderPlaced", "OrderDelivered", "OrderCancelled"}:
        makers = {products.get(line.get("product_id", ""), ProductParties()).maker for line in event.get("lines", [])}
        return {p for p in {event.get("retailer_id"), *makers} if p}
    if name == "RecallIssued":
        parties = set().union(*(product(p) for p in event.get("product_ids", [])))
        return parties | {o["retailer_id"] for o in event.get("affected_orders", []) if o.get("retailer_id")}
    if name in {"ProductRegistered", "ProductRevised", "SupplyNetworkChanged"}:
        return {event["maker_id"]} | product(event.get("product_id", "")) if event.get("maker_id") else set()
    if name in {"ProductListed", "ProductDelisted"}:
        return {event["retailer_id"]} | product(event.get("product_id", "")) if event.get("retailer_id") else set()
    if name in {"QuestionAsked", "AnswerPosted", "QuestionEscalated"}:
        return product(event.get("product_id", ""))
    if name in {"IdeaPromoted", "IdeaSubmitted", "MemberJoined", "MemberLeft"}:
        return {event["partner_id"]} if event.get("partner_id") else set()
    if name in {"InitiativeLaunched"}:
        return {event["owner_id"]} if event.get("owner_id") else set()
    if name == "RedesignRequested":
        return {event["maker_id"]} if event.get("maker_id") else set()
    return set()


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
