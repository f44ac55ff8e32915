"""What analytics consumes, and what it publishes.

Every event partners may see (``domain.SHARED_EVENTS``) is kept and appended to the feed of each
partner in its audience, in the same transaction as the inbox row; an event whose references are
not known yet waits for them, and is shared by the event that brings the last one. Events that
only set references (ProductRegistered sets a maker, OrderPlaced an order's partners...) are
handled the same way. From identity: PartnerJoined (a partner's id is never personal) and
ConsentChanged for the purpose ``analytics``.

Each entry is also published as ``EventShared``, minimised for its partner by the consents in
force at that moment: the gateway delivers these to the partner's webhooks.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.message import Message
from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet.analytics.v1 import events_pb2 as analytics
from collabnet.community.v1 import events_pb2 as community
from collabnet.identity.v1 import events_pb2 as identity
from collabnet.improvement.v1 import events_pb2 as improvement
from collabnet.reviews.v1 import events_pb2 as reviews
from collabnet.supplychain.v1 import events_pb2 as supplychain
from collabnet_analytics import domain, store
from collabnet_kit.bus import Envelope, message_class
from collabnet_kit.outbox import record
from collabnet_kit.timestamps import moment, timestamp

NAME = "analytics"
SHARES = uuid.UUID("5d0c9a43-8f6e-4b3a-a2c1-7e9b0f4d6c21")
"""Namespace of EventShared ids: one per event and partner, the same on every try."""

DOMAINS: dict[str, ModuleType] = {
    "supplychain": supplychain,
    "reviews": reviews,
    "community": community,
    "improvement": improvement,
}


def decode(row: store.EventRow) -> Message:
    return message_class(row.type).FromString(row.payload)


def consumed(module: ModuleType) -> list[type[Message]]:
    """The domain's events that partners may see (those that set references are among them)."""
    return [getattr(module, name) for name in sorted(domain.SHARED_EVENTS) if hasattr(module, name)]


class Sharing:
    """The handlers, with the key of the pseudonyms in the EventShared it publishes."""

    def __init__(self, pseudonym_key: bytes) -> None:
        self.key = pseudonym_key

    def handlers(self, module: ModuleType) -> dict[type[Message], Callable[..., Awaitable[None]]]:
        return {cls: self.on_event for cls in consumed(module)}

    async def on_event(self, session: AsyncSession, event: Message, envelope: Envelope) -> None:
        refs = await store.references(session, domain.wants(event))
        if event.DESCRIPTOR.name in domain.SHARED_EVENTS:
            row = store.EventRow(
                id=envelope.id,
                type=envelope.type,
                source=envelope.source,
                time=envelope.time,
                payload=event.SerializeToString(),
                received_at=datetime.now(UTC),
            )
            if await store.add_event(session, row):
                missing = domain.needs(event) - refs.keys()
                if missing:
                    await store.wait(session, row.id, missing)
                else:
                    await self.share(session, row, event, refs)
        remembered = domain.remembers(event, refs)
        if remembered:
            await store.remember(session, remembered)
            await self.resolve(session, set(remembered))

    async def resolve(self, session: AsyncSession, refs: set[domain.Ref]) -> None:
        """Share the events that were waiting for ``refs`` and now know all they need."""
        for row in await store.waiting_on(session, refs):
            event = decode(row)
            known = await store.references(session, domain.wants(event))
            if domain.needs(event) <= known.keys():
                await store.stop_waiting(session, row.id)
                await self.share(session, row, event, known)

    async def share(self, session: AsyncSession, row: store.EventRow, event: Message, refs: domain.Refs) -> None:
        entries = await store.append(session, row.id, sorted(domain.audience(event, refs)))
        disclosed = await store.disclosed(session, [p for _, p in entries], domain.persons(event), datetime.now(UTC))
        for position, partner in entries:
            visible = domain.minimise(
                event, key=domain.partner_key(self.key, partner), partner_id=partner, disclosed=disclosed[partner]
            )
            packed = any_pb2.Any()
            packed.Pack(visible)
            shared = analytics.EventShared(
                partner_id=partner,
                position=position,
                event_id=row.id,
                event_type=row.type,
                event_source=row.source,
                event_time=timestamp(row.time),
                event=packed,
            )
            await record(session, shared, source=NAME, event_id=str(uuid.uuid5(SHARES, f"{row.id}\x1f{partner}")))


async def on_partner_joined(session: AsyncSession, event: identity.PartnerJoined, envelope: Envelope) -> None:
    await store.add_partner(session, event.partner_id)


async def on_consent_changed(session: AsyncSession, event: identity.ConsentChanged, envelope: Envelope) -> None:
    if event.purpose != domain.ANALYTICS_PURPOSE or not event.party_id or not event.partner_id:
        return
    change = domain.Consent(
        granted=event.granted,
        expire_time=moment(event, "expire_time"),
        change_time=envelope.time,
    )
    if domain.newer(await store.consent(session, event.party_id, event.partner_id), change):
        await store.set_consent(session, event.party_id, event.partner_id, change)


IDENTITY_HANDLERS: dict[Any, Any] = {
    identity.PartnerJoined: on_partner_joined,
    identity.ConsentChanged: on_consent_changed,
}

SHARED_TYPES = frozenset(cls.DESCRIPTOR.full_name for module in DOMAINS.values() for cls in consumed(module))
"""The full names of the event types partners may see."""
