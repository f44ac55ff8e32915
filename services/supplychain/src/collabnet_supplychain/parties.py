"""What supplychain asks identity: whether a consumer consented to something with a partner, and
the consumer's contact data. Both are asked as the supplychain service itself, never with the
caller's token: the answer must not depend on who happened to trigger the question."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from collabnet.identity.v1 import identity_pb2
from collabnet_kit.principal import METADATA_KEY

if TYPE_CHECKING:  # the async stub's type exists only in the typed stubs
    from collabnet.identity.v1.identity_pb2_grpc import IdentityServiceAsyncStub

CONCURRENT_CALLS = 16
"""Calls to identity in flight at once for one request."""


class IdentityUnavailable(Exception):
    """Identity did not answer (or answered with something other than a decision)."""


@dataclass(frozen=True)
class ContactData:
    email: str | None
    phone: str | None


class Parties:
    def __init__(self, identity: IdentityServiceAsyncStub, service_token: Callable[[], str]) -> None:
        self._identity = identity
        self._token = service_token

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return ((METADATA_KEY, f"Bearer {self._token()}"),)

    async def consented(self, party_id: str, partner_id: str, purpose: str) -> bool:
        """Whether ``party_id``'s consent for ``purpose`` with ``partner_id`` holds now; an unknown party has none."""
        request = identity_pb2.CheckConsentRequest(party_id=party_id, partner_id=partner_id, purpose=purpose)
        try:
            reply = await self._identity.CheckConsent(request, metadata=self._metadata())
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise IdentityUnavailable(f"CheckConsent: {error.code().name} {error.details()}") from error
        return bool(reply.granted)

    async def consents(self, pairs: Iterable[tuple[str, str]], purpose: str) -> dict[tuple[str, str], bool]:
        """``consented`` for many (party, partner) pairs, a few calls at a time."""
        unique = sorted(set(pairs))
        limit = asyncio.Semaphore(CONCURRENT_CALLS)

        async def one(pair: tuple[str, str]) -> bool:
            async with limit:
                return await self.consented(pair[0], pair[1], purpose)

        answers = await asyncio.gather(*(one(pair) for pair in unique))
        return dict(zip(unique, answers, strict=True))

    async def contact(self, party_id: str) -> ContactData:
        """A party's e-mail and phone as identity holds them (services see them); none for an unknown party."""
        try:
            party = await self._identity.GetParty(
                identity_pb2.GetPartyRequest(party_id=party_id), metadata=self._metadata()
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return ContactData(None, None)
            raise IdentityUnavailable(f"GetParty: {error.code().name} {error.details()}") from error
        return ContactData(
            party.email if party.HasField("email") else None, party.phone if party.HasField("phone") else None
        )
