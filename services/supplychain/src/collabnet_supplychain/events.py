"""Handlers of the events supplychain consumes.

RedesignRequested (improvement): the program asks a maker to redesign a product. It becomes a
revision proposal the maker confirms (ConfirmRevisionProposal makes the next revision) or declines.
One proposal per request, found again by its content's fingerprint, so a redelivery (even after the
inbox has forgotten the event) or a request arriving before or after others changes nothing twice.
"""

from __future__ import annotations

import uuid

from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet.improvement.v1 import events_pb2 as improvement
from collabnet_kit.bus import Envelope
from collabnet_supplychain import domain, store

PROPOSALS = uuid.UUID("0b6c2f9e-8a51-4c3b-9d0e-5f1a7c2e4b90")
"""Namespace of proposal ids: a proposal's id is derived from its request, like its fingerprint."""


async def on_redesign_requested(
    session: AsyncSession, event: improvement.RedesignRequested, envelope: Envelope
) -> None:
    if not event.product_id:
        # Nothing a retry can fix: let the consumer dead-letter it, where someone will see it.
        raise ValueError(f"RedesignRequested {envelope.id} names no product")
    changes = (event.changes.strip() or "(the program did not say what to change)")[: domain.MAX_LONG_TEXT]
    reason = event.reason.strip()[: domain.MAX_LONG_TEXT]
    fingerprint = domain.proposal_fingerprint(event.initiative_id, event.product_id, changes, reason)
    if await store.proposal_by_fingerprint(session, fingerprint) is not None:
        return
    product = await session.get(store.ProductRow, event.product_id)
    session.add(
        store.ProposalRow(
            id=str(uuid.uuid5(PROPOSALS, fingerprint)),
            fingerprint=fingerprint,
            initiative_id=event.initiative_id[:64],
            product_id=event.product_id[:36],
            # The catalog knows the maker better than the request does.
            maker_id=product.maker_id if product is not None else event.maker_id[:36],
            changes=changes,
            reason=reason,
            status=domain.ProposalStatus.PROPOSED.value,
            received_at=envelope.time,
        )
    )
