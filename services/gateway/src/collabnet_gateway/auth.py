"""Who is calling: partner API keys checked through identity, cached briefly, dropped on revocation;
and whether the partner may act for the consumer it names."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from opentelemetry.instrumentation.utils import suppress_instrumentation

from collabnet.identity.v1 import identity_pb2
from collabnet_gateway.problems import Problem
from collabnet_kit.principal import Principal

if TYPE_CHECKING:
    from collabnet.identity.v1.identity_pb2_grpc import IdentityServiceAsyncStub


@dataclass(frozen=True)
class Caller:
    partner_id: str
    scopes: frozenset[str]
    key_id: str
    expires: float


class Authenticator:
    """API key secrets to callers, through identity, with a short cache.

    The cache holds a SHA-256 of each secret, never the secret. A revoked key leaves the cache as
    soon as the ApiKeyRevoked event reaches this replica, and in any case within ``ttl`` seconds.
    """

    def __init__(
        self, identity: IdentityServiceAsyncStub, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._identity = identity
        self._ttl = ttl
        self._clock = clock
        self._callers: dict[str, Caller] = {}
        self._pending: dict[str, asyncio.Future[Caller]] = {}
        self._acts_for: dict[tuple[str, str], tuple[bool, str, float]] = {}

    async def authenticate(self, secret: str) -> Caller:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        cached = self._callers.get(digest)
        if cached is not None and cached.expires > self._clock():
            return cached
        # One call to identity for many concurrent requests with the same key.
        if digest in self._pending:
            return await asyncio.shield(self._pending[digest])
        future: asyncio.Future[Caller] = asyncio.get_running_loop().create_future()
        self._pending[digest] = future
        try:
            caller = await self._ask(secret)
            self._callers[digest] = caller
            future.set_result(caller)
            return caller
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: concurrent waiters re-raise it, nobody else must
            raise
        finally:
            del self._pending[digest]

    async def _ask(self, secret: str) -> Caller:
        # Outside the request's trace: the server span starts once the caller is known, because
        # whether the caller's trace context is trusted depends on who the caller is.
        try:
            with suppress_instrumentation():
                reply = await self._identity.AuthenticateApiKey(
                    identity_pb2.AuthenticateApiKeyRequest(secret=secret), timeout=5
                )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise Problem(401, error.details() or "the API key is not valid") from None
            raise Problem.of_rpc(error) from None
        return Caller(reply.partner_id, frozenset(reply.scopes), reply.api_key_id, self._clock() + self._ttl)

    def revoked(self, key_id: str) -> None:
        """Forget a revoked key at once."""
        for digest in [d for d, c in self._callers.items() if c.key_id == key_id]:
            del self._callers[digest]

    async def may_act_for(self, partner: str, party: str) -> tuple[bool, str]:
        """identity's ActsFor, cached for a few seconds (an ended relationship counts within that)."""
        key = (partner, party)
        cached = self._acts_for.get(key)
        if cached is not None and cached[2] > self._clock():
            return cached[0], cached[1]
        try:
            with suppress_instrumentation():
                decision = await self._identity.ActsFor(
                    identity_pb2.ActsForRequest(partner_id=partner, party_id=party), timeout=5
                )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return False, error.details() or f"party {party} not found"
            raise Problem.of_rpc(error) from None
        self._acts_for[key] = (decision.allowed, decision.reason, self._clock() + min(self._ttl, 10.0))
        return decision.allowed, decision.reason


def principal_of(caller: Caller, acting_for: str | None) -> Principal:
    return Principal(partner_id=caller.partner_id, party_id=acting_for, scopes=caller.scopes)


Check = Callable[[], Awaitable[None]]
