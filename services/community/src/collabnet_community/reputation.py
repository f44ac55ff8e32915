"""Points for what a party did, written to the ledger with the event that earned them."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet.community.v1 import events_pb2
from collabnet_community import domain, store
from collabnet_kit.outbox import record

SOURCE = "community"


async def award(
    session: AsyncSession, party_id: str, reason: domain.Reason, cause_event_id: str, subject_id: str, at: datetime
) -> bool:
    """Credit ``party_id`` for ``reason`` and publish ReputationChanged, in the caller's transaction.

    Nothing happens when the ledger already has an entry for the same cause event, or for the same
    reason and subject (a review, an answer, an idea, an invitation, a case): replaying events, or
    receiving them again after the inbox has forgotten them, never counts twice.
    """
    added = await store.add_points(session, str(uuid.uuid4()), party_id, reason, cause_event_id, subject_id, at)
    if added is None:
        return False
    delta, total = added
    await record(
        session,
        events_pb2.ReputationChanged(
            party_id=party_id, delta=delta, total=total, reason=reason.value, cause_event_id=cause_event_id
        ),
        source=SOURCE,
    )
    return True
