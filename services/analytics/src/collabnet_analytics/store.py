"""The analytics tables: the events as received, each partner's feed entries, the references that
decide who sees an event, events waiting for theirs, partners, and consents to ``analytics``.

A feed position comes from one counter row, taken with an UPDATE that holds its lock until the
sharing transaction commits: positions are therefore handed out in commit order, and a reader that
has seen position *n* will never find an entry below *n* appear later.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import registry
from sqlmodel import JSON, Column, Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet_analytics.domain import Consent, Ref
from collabnet_kit.db import UtcDateTime, insert
from collabnet_kit.migrations import History

FEED_COUNTER = "feed"


class Table(SQLModel, registry=registry()):
    """Base of analytics' tables, kept apart from every other service's metadata."""


def _time(**kwargs: Any) -> Any:
    return Field(sa_type=UtcDateTime, **kwargs)


class EventRow(Table, table=True):
    """A domain event as it was received, shared or waiting to be."""

    __tablename__ = "feed_event"
    id: str = Field(primary_key=True, max_length=64)
    type: str = Field(max_length=255)
    source: str = Field(max_length=255)
    time: datetime = _time()
    payload: bytes = Field(sa_type=sa.LargeBinary)
    received_at: datetime = _time()


class EntryRow(Table, table=True):
    """An event in one partner's feed."""

    __tablename__ = "feed_entry"
    __table_args__ = (
        sa.UniqueConstraint("partner_id", "event_id", name="feed_entry_once"),
        sa.Index("feed_entry_partner_position", "partner_id", "position"),
    )
    position: int = Field(sa_column=Column(sa.BigInteger, primary_key=True, autoincrement=False))
    partner_id: str = Field(max_length=36)
    event_id: str = Field(foreign_key="feed_event.id", max_length=64)


class CounterRow(Table, table=True):
    __tablename__ = "feed_counter"
    name: str = Field(primary_key=True, max_length=20)
    value: int = Field(sa_column=Column(sa.BigInteger, nullable=False))


class ReferenceRow(Table, table=True):
    """``(kind, id)`` -> the partners it grants: a product's maker, its listings, an order's partners..."""

    __tablename__ = "reference"
    kind: str = Field(primary_key=True, max_length=20)
    ref_id: str = Field(primary_key=True, max_length=64)
    partners: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class WaitingRow(Table, table=True):
    """An event whose audience waits for a reference not known yet."""

    __tablename__ = "waiting_event"
    __table_args__ = (sa.Index("waiting_event_reference", "kind", "ref_id"),)
    event_id: str = Field(primary_key=True, foreign_key="feed_event.id", max_length=64)
    kind: str = Field(primary_key=True, max_length=20)
    ref_id: str = Field(primary_key=True, max_length=64)


class PartnerRow(Table, table=True):
    __tablename__ = "partner"
    partner_id: str = Field(primary_key=True, max_length=36)


class ConsentRow(Table, table=True):
    """A person's consent to ``analytics`` with one partner, as last changed."""

    __tablename__ = "consent"
    party_id: str = Field(primary_key=True, max_length=36)
    partner_id: str = Field(primary_key=True, max_length=36)
    granted: bool
    expire_time: datetime | None = _time(default=None, nullable=True)
    change_time: datetime = _time()


HISTORY = History(Path(__file__).parent / "migrations", Table.metadata)


# --- references --------------------------------------------------------------------------------


async def references(session: AsyncSession, refs: Iterable[Ref]) -> dict[Ref, frozenset[str]]:
    wanted = set(refs)
    if not wanted:
        return {}
    query = select(ReferenceRow).where(
        sa.tuple_(col(ReferenceRow.kind), col(ReferenceRow.ref_id)).in_([sa.tuple_(k, i) for k, i in wanted])
    )
    return {(r.kind, r.ref_id): frozenset(r.partners) for r in (await session.exec(query)).all()}


async def remember(session: AsyncSession, values: dict[Ref, frozenset[str]]) -> None:
    for (kind, ref_id), partners in values.items():
        statement = insert(session, ReferenceRow).values(kind=kind, ref_id=ref_id, partners=sorted(partners))
        await session.exec(
            statement.on_conflict_do_update(
                index_elements=["kind", "ref_id"], set_={"partners": statement.excluded.partners}
            )
        )


async def wait(session: AsyncSession, event_id: str, refs: Iterable[Ref]) -> None:
    for kind, ref_id in refs:
        statement = insert(session, WaitingRow).values(event_id=event_id, kind=kind, ref_id=ref_id)
        await session.exec(statement.on_conflict_do_nothing())


async def waiting_on(session: AsyncSession, refs: Iterable[Ref]) -> list[EventRow]:
    """The events waiting for any of ``refs``, oldest first."""
    wanted = set(refs)
    if not wanted:
        return []
    ids = select(col(WaitingRow.event_id)).where(
        sa.tuple_(col(WaitingRow.kind), col(WaitingRow.ref_id)).in_([sa.tuple_(k, i) for k, i in wanted])
    )
    query = select(EventRow).where(col(EventRow.id).in_(ids)).order_by(col(EventRow.received_at), col(EventRow.id))
    return list((await session.exec(query)).all())


async def stop_waiting(session: AsyncSession, event_id: str) -> None:
    await session.exec(sa.delete(WaitingRow).where(col(WaitingRow.event_id) == event_id))


# --- the feed ----------------------------------------------------------------------------------


async def add_event(session: AsyncSession, row: EventRow) -> bool:
    """Keep an event; False when it is kept already."""
    statement = insert(session, EventRow).values(
        id=row.id, type=row.type, source=row.source, time=row.time, payload=row.payload, received_at=row.received_at
    )
    result = await session.exec(statement.on_conflict_do_nothing())
    return bool(result.rowcount)


async def take_positions(session: AsyncSession, count: int) -> int:
    """Reserve ``count`` consecutive feed positions; returns the first. Holds the counter's lock
    until the transaction ends."""
    statement = (
        sa.update(CounterRow)
        .where(col(CounterRow.name) == FEED_COUNTER)
        .values(value=col(CounterRow.value) + count)
        .returning(col(CounterRow.value))
    )
    last = (await session.exec(statement)).scalar_one()
    return int(last) - count + 1


async def append(session: AsyncSession, event_id: str, partners: Sequence[str]) -> list[tuple[int, str]]:
    """Add the event to each partner's feed, in the order given; returns (position, partner) pairs."""
    if not partners:
        return []
    first = await take_positions(session, len(partners))
    entries = [(first + i, partner) for i, partner in enumerate(partners)]
    for position, partner in entries:
        session.add(EntryRow(position=position, partner_id=partner, event_id=event_id))
    await session.flush()
    return entries


async def feed(
    session: AsyncSession,
    partner_id: str,
    *,
    after: int,
    limit: int,
    event_types: Sequence[str] = (),
    since: datetime | None = None,
) -> list[tuple[int, EventRow]]:
    """The partner's entries after ``after``, in position order, with their events."""
    query = (
        select(col(EntryRow.position), EventRow)
        .join(EventRow, col(EventRow.id) == col(EntryRow.event_id))
        .where(col(EntryRow.partner_id) == partner_id, col(EntryRow.position) > after)
    )
    if event_types:
        query = query.where(col(EventRow.type).in_(event_types))
    if since is not None:
        query = query.where(col(EventRow.time) >= since)
    rows = (await session.exec(query.order_by(col(EntryRow.position)).limit(limit))).all()
    return [(int(position), event) for position, event in rows]


# --- people ------------------------------------------------------------------------------------


async def add_partner(session: AsyncSession, partner_id: str) -> None:
    await session.exec(insert(session, PartnerRow).values(partner_id=partner_id).on_conflict_do_nothing())


async def consent(session: AsyncSession, party_id: str, partner_id: str) -> Consent | None:
    row = await session.get(ConsentRow, (party_id, partner_id))
    return None if row is None else Consent(row.granted, row.expire_time, row.change_time)


async def set_consent(session: AsyncSession, party_id: str, partner_id: str, value: Consent) -> None:
    statement = insert(session, ConsentRow).values(
        party_id=party_id,
        partner_id=partner_id,
        granted=value.granted,
        expire_time=value.expire_time,
        change_time=value.change_time,
    )
    await session.exec(
        statement.on_conflict_do_update(
            index_elements=["party_id", "partner_id"],
            set_={
                "granted": statement.excluded.granted,
                "expire_time": statement.excluded.expire_time,
                "change_time": statement.excluded.change_time,
            },
        )
    )


async def disclosed(
    session: AsyncSession, partner_ids: Iterable[str], parties: Iterable[str], now: datetime
) -> dict[str, set[str]]:
    """For each partner, those of ``parties`` it may see as they are: partners, and people whose
    consent to ``analytics`` with it is in force at ``now``. Two queries, whatever the numbers."""
    receivers, wanted = set(partner_ids), set(parties)
    if not wanted:
        return {p: set() for p in receivers}
    partners = select(col(PartnerRow.partner_id)).where(col(PartnerRow.partner_id).in_(wanted))
    known = {str(p) for p in (await session.exec(partners)).all()}
    found = {p: set(known) for p in receivers}
    consents = select(ConsentRow).where(
        col(ConsentRow.partner_id).in_(receivers), col(ConsentRow.party_id).in_(wanted - known)
    )
    for row in (await session.exec(consents)).all():
        if Consent(row.granted, row.expire_time, row.change_time).in_force(now):
            found[row.partner_id].add(row.party_id)
    return found
