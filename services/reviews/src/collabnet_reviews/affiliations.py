"""Whether a reviewer is affiliated with a product's maker or sellers, asked of identity.

Identity answers Affiliations with every current relationship between a party and a partner or
the partner's people; the rules of which ones make a reviewer affiliated are reviews' own
(``domain.affiliating``). The calls carry reviews' own service principal, never the caller's: a
partner sees only public relationships and its own, and employment is private.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

import grpc
import structlog

from collabnet.identity.v1 import identity_pb2
from collabnet_kit.errors import NotFound
from collabnet_kit.grpc_errors import from_rpc_error
from collabnet_kit.principal import METADATA_KEY
from collabnet_reviews import domain

if TYPE_CHECKING:
    from collabnet.identity.v1.identity_pb2_grpc import IdentityServiceAsyncStub

log = structlog.get_logger(__name__)


class Affiliations:
    def __init__(
        self,
        identity: IdentityServiceAsyncStub,
        token: Callable[[], str],
        *,
        types: Collection[str] = domain.AFFILIATING_TYPES,
        via_people: Collection[str] = domain.AFFILIATING_TYPES_VIA_PEOPLE,
        timeout: float = 3.0,
    ) -> None:
        self.identity = identity
        self.token = token
        self.types = frozenset(types)
        self.via_people = frozenset(via_people)
        self.timeout = timeout

    async def affiliated(self, author: str, partners: Collection[str]) -> bool | None:
        """Whether ``author`` is affiliated with any of ``partners``; None when identity could not say."""
        partners = sorted({p for p in partners if p})
        if author in partners:
            return True  # a maker or seller reviewing its own product
        if not partners:
            return False
        metadata = ((METADATA_KEY, f"Bearer {self.token()}"),)
        answers = await asyncio.gather(
            *(
                self.identity.Affiliations(
                    identity_pb2.AffiliationsRequest(party_id=author, partner_id=partner),
                    metadata=metadata,
                    timeout=self.timeout,
                )
                for partner in partners
            ),
            return_exceptions=True,
        )
        ties: list[domain.Tie] = []
        for partner, answer in zip(partners, answers, strict=True):
            if isinstance(answer, grpc.aio.AioRpcError):
                if isinstance(from_rpc_error(answer), NotFound):
                    continue  # a party or partner identity does not know relates to nobody
                log.warning("affiliations_unavailable", partner=partner, code=answer.code().name)
                return None
            if isinstance(answer, BaseException):
                log.warning("affiliations_failed", partner=partner, error=repr(answer))
                return None
            for found in answer.affiliations:
                edge = found.relationship
                ties.append(domain.Tie(edge.from_party_id, edge.to_party_id, edge.type, found.via_party_id))
        return bool(domain.affiliating(author, ties, self.types, self.via_people))
