"""Who is calling: the principal every RPC carries, as a short-lived signed token (JWT, HS256).

The gateway authenticates a partner's API key and passes the partner, the party it acts for and the
key's scopes on to the services in this token; a service calling another on its own behalf signs a
token naming itself. Every service verifies the token and checks its own rules against it.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import jwt

from collabnet_kit.errors import Unauthenticated

METADATA_KEY = "authorization"
ISSUER = "collabnet"
_ALGORITHM = "HS256"
_LEEWAY_SECONDS = 5


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of an RPC.

    ``partner_id`` is the partner that authenticated; ``party_id`` the party it acts for (a consumer,
    through ``X-On-Behalf-Of``), if any; ``service`` names an internal service calling on its own
    behalf. ``scopes`` are what the partner's key allows.
    """

    partner_id: str | None = None
    party_id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    service: str | None = None

    @property
    def subject(self) -> str:
        if self.service:
            return f"service:{self.service}"
        return f"partner:{self.partner_id}"

    def has_scope(self, scope: str) -> bool:
        return self.service is not None or scope in self.scopes


class PrincipalSigner:
    """Signs and verifies principal tokens with the shared signing key."""

    def __init__(self, key: str, ttl_seconds: int = 300) -> None:
        if not key:
            raise ValueError("the principal-signing key must not be empty")
        self._key = key
        self.ttl_seconds = ttl_seconds

    def sign(self, principal: Principal, *, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims: dict[str, object] = {
            "iss": ISSUER,
            "sub": principal.subject,
            "iat": issued,
            "exp": issued + self.ttl_seconds,
            "scopes": sorted(principal.scopes),
        }
        if principal.partner_id:
            claims["partner"] = principal.partner_id
        if principal.party_id:
            claims["acts_for"] = principal.party_id
        if principal.service:
            claims["svc"] = principal.service
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM)

    def verify(self, token: str) -> Principal:
        """The principal a token names; ``Unauthenticated`` when it is expired, tampered or malformed."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                issuer=ISSUER,
                leeway=_LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the principal token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"the principal token is not valid: {exc}") from None
        partner, service = claims.get("partner"), claims.get("svc")
        if not partner and not service:
            raise Unauthenticated("the principal token names neither a partner nor a service")
        return Principal(
            partner_id=partner,
            party_id=claims.get("acts_for"),
            scopes=frozenset(claims.get("scopes") or ()),
            service=service,
        )


_current: contextvars.ContextVar[tuple[Principal, str] | None] = contextvars.ContextVar("principal", default=None)


def current_principal() -> Principal:
    """The principal of the RPC being served; ``Unauthenticated`` outside one."""
    found = _current.get()
    if found is None:
        raise Unauthenticated("the call carries no principal")
    return found[0]


def current_token() -> str | None:
    """The token the current RPC came with, to forward on calls made while serving it."""
    found = _current.get()
    return found[1] if found else None


@contextmanager
def acting_as(principal: Principal, token: str) -> Iterator[None]:
    """Make ``principal`` (and the token that proved it) current for the enclosed block."""
    reset = _current.set((principal, token))
    try:
        yield
    finally:
        _current.reset(reset)
