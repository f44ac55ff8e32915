"""Identity's tables and the queries over them. Rows are not the domain: ``to_*`` maps between them."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import registry
from sqlmodel import JSON, Column, Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet_identity import domain
from collabnet_kit.db import UtcDateTime
from collabnet_kit.errors import NotFound
from collabnet_kit.migrations import History

IN_CHUNK = 5000
"""Ids per IN list: below the bound-parameter limits of asyncpg (32767) and SQLite (32766)."""


class Table(SQLModel, registry=registry()):
    """Base of identity's tables, kept apart from every other service's metadata."""


def _time(**kwargs: Any) -> Any:
    return Field(sa_type=UtcDateTime, **kwargs)


def _json(default: Any) -> Any:
    return Field(default_factory=lambda: type(default)(), sa_column=Column(JSON, nullable=False))


class PartyRow(Table, table=True):
    __tablename__ = "party"
    id: str = Field(primary_key=True, max_length=36)
    kind: str = Field(max_length=20)
    display_name: str = Field(max_length=200)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=40)
    attributes: dict[str, str] = _json({})
    # Relationships of every time and type; a cost estimate for graph searches, nothing more.
    degree: int = 0
    created_at: datetime = _time()
    # The partner that registered the party (None when a service did): only it, or a partner acting
    # for the party, may relate the party to itself while the party is not a partner.
    registered_by: str | None = Field(default=None, max_length=36)


class PartnerRow(Table, table=True):
    __tablename__ = "partner"
    party_id: str = Field(primary_key=True, foreign_key="party.id", max_length=36)
    kinds: list[str] = _json([])
    joined_at: datetime = _time()


class CapabilityRow(Table, table=True):
    __tablename__ = "partner_capability"
    partner_id: str = Field(primary_key=True, foreign_key="partner.party_id", max_length=36)
    capability: str = Field(primary_key=True, max_length=100, index=True)
    declared_at: datetime = _time()


class RelationshipTypeRow(Table, table=True):
    __tablename__ = "relationship_type"
    name: str = Field(primary_key=True, max_length=63)
    inverse_name: str = Field(max_length=63, unique=True)
    description: str = Field(default="", max_length=500)
    public: bool = False


class RelationshipRow(Table, table=True):
    __tablename__ = "relationship"
    __table_args__ = (
        # At most one open-ended relationship of a type between two parties.
        sa.Index(
            "relationship_open_unique",
            "from_party",
            "to_party",
            "type",
            unique=True,
            sqlite_where=sa.text("valid_to IS NULL"),
            postgresql_where=sa.text("valid_to IS NULL"),
        ),
        sa.Index("relationship_from", "from_party", "to_party"),
        sa.Index("relationship_to", "to_party", "from_party"),
        # RolesOf reads only the relationships with a partner at the other end.
        sa.Index(
            "relationship_from_to_partner",
            "from_party",
            sqlite_where=sa.text("to_is_partner"),
            postgresql_where=sa.text("to_is_partner"),
        ),
        sa.Index(
            "relationship_to_from_partner",
            "to_party",
            sqlite_where=sa.text("from_is_partner"),
            postgresql_where=sa.text("from_is_partner"),
        ),
    )
    id: str = Field(primary_key=True, max_length=36)
    from_party: str = Field(foreign_key="party.id", max_length=36)
    to_party: str = Field(foreign_key="party.id", max_length=36)
    type: str = Field(foreign_key="relationship_type.name", max_length=63)
    context_partner: str = Field(max_length=36)
    attributes: dict[str, str] = _json({})
    valid_from: datetime = _time()
    valid_to: datetime | None = _time(default=None, nullable=True)
    from_is_partner: bool = False
    to_is_partner: bool = False
    created_at: datetime = _time()
    end_reason: str = Field(default="", max_length=500)


class ConsentRow(Table, table=True):
    __tablename__ = "consent"
    __table_args__ = (sa.Index("consent_lookup", "party_id", "partner_id", "purpose", "captured_at"),)
    id: str = Field(primary_key=True, max_length=36)
    party_id: str = Field(foreign_key="party.id", max_length=36)
    partner_id: str = Field(foreign_key="partner.party_id", max_length=36)
    purpose: str = Field(max_length=100)
    granted: bool
    source: str = Field(max_length=200)
    captured_at: datetime = _time()
    expires_at: datetime | None = _time(default=None, nullable=True)


class ApiKeyRow(Table, table=True):
    __tablename__ = "api_key"
    id: str = Field(primary_key=True, max_length=36)
    partner_id: str = Field(foreign_key="partner.party_id", max_length=36, index=True)
    name: str = Field(max_length=200)
    prefix: str = Field(max_length=16, unique=True)
    secret_hash: str = Field(max_length=64)
    scopes: list[str] = _json([])
    created_at: datetime = _time()
    last_used_at: datetime | None = _time(default=None, nullable=True)
    revoked_at: datetime | None = _time(default=None, nullable=True)


HISTORY = History(Path(__file__).parent / "migrations", Table.metadata)

# --- mapping -----------------------------------------------------------------------------------


def to_relationship(row: RelationshipRow) -> domain.Relationship:
    return domain.Relationship(
        id=row.id,
        from_party=row.from_party,
        to_party=row.to_party,
        type=row.type,
        context_partner=row.context_partner,
        attributes=dict(row.attributes),
        valid_from=row.valid_from,
        valid_to=row.valid_to,
        created_at=row.created_at,
        end_reason=row.end_reason,
    )


def to_consent(row: ConsentRow) -> domain.ConsentRecord:
    return domain.ConsentRecord(
        id=row.id,
        party=row.party_id,
        partner=row.partner_id,
        purpose=row.purpose,
        granted=row.granted,
        source=row.source,
        captured_at=row.captured_at,
        expires_at=row.expires_at,
    )


def among(session: AsyncSession, column: Any, ids: Collection[str]) -> Any:
    """``column IN ids``: on PostgreSQL as ``= ANY(array)``, one parameter, so the statement is
    prepared once whatever the number of ids; elsewhere as a plain IN list."""
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        return column == sa.any_(sa.bindparam(None, list(ids), type_=postgresql.ARRAY(sa.String)))
    return column.in_(list(ids))


async def plan_for_actual_ids(session: AsyncSession) -> None:
    """For the rest of this transaction, plan each query for its actual ids (PostgreSQL).

    Graph searches pass party ids as arrays. A generic plan, which PostgreSQL adopts for prepared
    statements after a few runs, assumes every party has the average number of relationships; a
    plan for the actual ids sees the hub with a hundred thousand and reads it from the other side.
    """
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        await (await session.connection()).execute(sa.text("SET LOCAL plan_cache_mode = force_custom_plan"))


def chunked(ids: Iterable[str], size: int = IN_CHUNK) -> Iterable[list[str]]:
    batch: list[str] = []
    for ident in ids:
        batch.append(ident)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- relationship types ------------------------------------------------------------------------


class TypeCatalog:
    """Relationship types are data, read often and changed rarely: cached for a few seconds,
    and re-read at once when a name is not found (it may have been created on another replica)."""

    def __init__(self, ttl_seconds: float = 5.0) -> None:
        self._ttl = ttl_seconds
        self._types: dict[str, domain.RelationshipType] = {}
        self._read_at = float("-inf")

    async def all(self, session: AsyncSession, *, fresh: bool = False) -> dict[str, domain.RelationshipType]:
        if fresh or time.monotonic() - self._read_at > self._ttl:
            rows = (await session.exec(select(RelationshipTypeRow))).all()
            self._types = {
                r.name: domain.RelationshipType(r.name, r.inverse_name, r.description, r.public) for r in rows
            }
            self._read_at = time.monotonic()
        return self._types

    async def knowing(self, session: AsyncSession, names: Collection[str]) -> dict[str, domain.RelationshipType]:
        """The catalog, re-read when it does not know one of ``names``."""
        types = await self.all(session)
        if not set(names) <= set(types):
            types = await self.all(session, fresh=True)
        return types

    def forget(self) -> None:
        self._read_at = float("-inf")


# --- parties and partners ----------------------------------------------------------------------


async def party(session: AsyncSession, party_id: str) -> PartyRow:
    row = await session.get(PartyRow, party_id)
    if row is None:
        raise NotFound(f"party {party_id} not found")
    return row


async def require_parties(session: AsyncSession, *party_ids: str) -> dict[str, PartyRow]:
    rows = (await session.exec(select(PartyRow).where(col(PartyRow.id).in_(set(party_ids))))).all()
    found = {r.id: r for r in rows}
    for party_id in party_ids:
        if party_id not in found:
            raise NotFound(f"party {party_id} not found")
    return found


async def partner(session: AsyncSession, partner_id: str) -> PartnerRow:
    row = await session.get(PartnerRow, partner_id)
    if row is None:
        raise NotFound(f"partner {partner_id} not found")
    return row


async def list_partners(
    session: AsyncSession, kind: domain.PartnerKind | None, after: str | None, limit: int
) -> list[tuple[PartnerRow, PartyRow]]:
    """Partners in id order, after ``after``; the kind filter runs here because kinds are a JSON list
    and partners number in the thousands, not millions."""
    query = select(PartnerRow, PartyRow).join(PartyRow, col(PartyRow.id) == col(PartnerRow.party_id))
    if after is not None:
        query = query.where(col(PartnerRow.party_id) > after)
    query = query.order_by(col(PartnerRow.party_id))
    found: list[tuple[PartnerRow, PartyRow]] = []
    for partner_row, party_row in (await session.exec(query)).all():
        if kind is None or kind.value in partner_row.kinds:
            found.append((partner_row, party_row))
            if len(found) == limit:
                break
    return found


async def mark_partner_ends(session: AsyncSession, party_id: str) -> None:
    """A party has joined the network: its relationships recorded before now have a partner at this end."""
    await session.exec(
        sa.update(RelationshipRow).where(col(RelationshipRow.from_party) == party_id).values(from_is_partner=True)
    )
    await session.exec(
        sa.update(RelationshipRow).where(col(RelationshipRow.to_party) == party_id).values(to_is_partner=True)
    )


async def partners_among(session: AsyncSession, party_ids: Collection[str]) -> set[str]:
    found: set[str] = set()
    for batch in chunked(party_ids):
        found |= set((await session.exec(select(PartnerRow.party_id).where(col(PartnerRow.party_id).in_(batch)))).all())
    return found


async def capabilities(session: AsyncSession, partner_ids: Collection[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {p: [] for p in partner_ids}
    for batch in chunked(partner_ids):
        query = select(CapabilityRow).where(col(CapabilityRow.partner_id).in_(batch)).order_by(CapabilityRow.capability)
        for row in (await session.exec(query)).all():
            found[row.partner_id].append(row.capability)
    return found


async def partner_rows(session: AsyncSession, partner_ids: Collection[str]) -> dict[str, tuple[PartnerRow, PartyRow]]:
    found: dict[str, tuple[PartnerRow, PartyRow]] = {}
    for batch in chunked(partner_ids):
        query = (
            select(PartnerRow, PartyRow)
            .join(PartyRow, col(PartyRow.id) == col(PartnerRow.party_id))
            .where(col(PartnerRow.party_id).in_(batch))
        )
        for partner_row, party_row in (await session.exec(query)).all():
            found[partner_row.party_id] = (partner_row, party_row)
    return found


# --- relationships -----------------------------------------------------------------------------


def valid_at(at: datetime) -> Any:
    return sa.and_(
        col(RelationshipRow.valid_from) <= at,
        sa.or_(col(RelationshipRow.valid_to).is_(None), col(RelationshipRow.valid_to) > at),
    )


def visible_to(viewer: domain.Viewer, public_types: Collection[str]) -> Any:
    """The SQL form of ``Viewer.sees``."""
    if viewer.service:
        return sa.true()
    mine = [p for p in (viewer.partner, viewer.acting_for) if p]
    return sa.or_(
        col(RelationshipRow.type).in_(list(public_types)),
        col(RelationshipRow.context_partner) == viewer.partner,
        col(RelationshipRow.from_party).in_(mine),
        col(RelationshipRow.to_party).in_(mine),
    )


async def relationship(session: AsyncSession, relationship_id: str, *, lock: bool = False) -> RelationshipRow:
    """The relationship; with ``lock``, locked for the transaction (FOR UPDATE on PostgreSQL), so
    two transactions changing it one after the other each see the other's change."""
    row = await session.get(RelationshipRow, relationship_id, with_for_update=lock)
    if row is None:
        raise NotFound(f"relationship {relationship_id} not found")
    return row


async def overlapping(
    session: AsyncSession,
    from_party: str,
    to_party: str,
    type_name: str,
    valid_from: datetime,
    valid_to: datetime | None,
) -> RelationshipRow | None:
    """A relationship of the same type between the same parties whose validity overlaps the given one."""
    conditions = [
        col(RelationshipRow.from_party) == from_party,
        col(RelationshipRow.to_party) == to_party,
        col(RelationshipRow.type) == type_name,
        sa.or_(col(RelationshipRow.valid_to).is_(None), col(RelationshipRow.valid_to) > valid_from),
    ]
    if valid_to is not None:
        conditions.append(col(RelationshipRow.valid_from) < valid_to)
    return (await session.exec(select(RelationshipRow).where(*conditions).limit(1))).first()


async def add_degree(session: AsyncSession, *party_ids: str) -> None:
    # In id order, so two transactions touching the same two parties never wait on each other in a cycle.
    for party_id in sorted(party_ids):
        await session.exec(sa.update(PartyRow).where(col(PartyRow.id) == party_id).values(degree=PartyRow.degree + 1))


async def lock_parties(session: AsyncSession, party_ids: Sequence[str], *, exclusive: bool) -> None:
    """Row locks on PostgreSQL (FOR SHARE or FOR UPDATE), so joining the network and recording a
    relationship of the same party never interleave; SQLite's single writer already serializes them."""
    query = select(PartyRow.id).where(col(PartyRow.id).in_(sorted(party_ids))).order_by(PartyRow.id)
    await session.exec(query.with_for_update(read=not exclusive))


async def list_relationships(
    session: AsyncSession,
    party_id: str,
    direction: domain.Direction,
    types: Collection[str],
    at: datetime,
    viewer: domain.Viewer,
    public_types: Collection[str],
    limit: int,
    after: tuple[datetime, str] | None,
) -> list[RelationshipRow]:
    if direction is domain.Direction.OUTGOING:
        touches = col(RelationshipRow.from_party) == party_id
    elif direction is domain.Direction.INCOMING:
        touches = col(RelationshipRow.to_party) == party_id
    else:
        touches = sa.or_(col(RelationshipRow.from_party) == party_id, col(RelationshipRow.to_party) == party_id)
    query = select(RelationshipRow).where(touches, valid_at(at), visible_to(viewer, public_types))
    if types:
        query = query.where(col(RelationshipRow.type).in_(list(types)))
    if after is not None:
        query = query.where(sa.tuple_(col(RelationshipRow.valid_from), col(RelationshipRow.id)) > sa.tuple_(*after))
    query = query.order_by(col(RelationshipRow.valid_from), col(RelationshipRow.id)).limit(limit)
    return list((await session.exec(query)).all())


async def partner_relationships(
    session: AsyncSession, party_id: str, at: datetime
) -> list[tuple[domain.Relationship, PartnerRow, PartyRow]]:
    """The relationships valid at ``at`` between a party and partners, in both directions, each
    with the partner at the other end: one round trip."""
    table = RelationshipRow.__table__  # type: ignore[attr-defined]
    relationship_columns = [c for c in table.columns if c.name not in ("from_is_partner", "to_is_partner")]
    ends = []
    for near, far, far_is_partner in (
        (RelationshipRow.from_party, RelationshipRow.to_party, RelationshipRow.to_is_partner),
        (RelationshipRow.to_party, RelationshipRow.from_party, RelationshipRow.from_is_partner),
    ):
        ends.append(
            sa.select(
                *relationship_columns, col(PartnerRow.kinds), col(PartnerRow.joined_at), col(PartyRow.display_name)
            )
            .join(PartnerRow, col(PartnerRow.party_id) == col(far))
            .join(PartyRow, col(PartyRow.id) == col(far))
            .where(col(near) == party_id, col(far_is_partner), valid_at(at))
        )
    rows = (await (await session.connection()).execute(sa.union_all(*ends))).mappings().all()
    found = []
    for row in rows:
        relationship = RelationshipRow.model_validate({c.name: row[c.name] for c in relationship_columns})
        far = relationship.to_party if relationship.from_party == party_id else relationship.from_party
        partner_row = PartnerRow(party_id=far, kinds=row["kinds"], joined_at=row["joined_at"])
        party_row = PartyRow(
            id=far,
            kind=domain.PartyKind.ORGANIZATION.value,
            display_name=row["display_name"],
            created_at=row["joined_at"],
        )
        found.append((to_relationship(relationship), partner_row, party_row))
    return sorted(found, key=lambda r: (r[0].valid_from, r[0].id))


async def between(session: AsyncSession, a: str, b: str, at: datetime) -> list[RelationshipRow]:
    """Relationships valid at ``at`` between two parties, in either direction."""
    query = select(RelationshipRow).where(
        sa.or_(
            sa.and_(col(RelationshipRow.from_party) == a, col(RelationshipRow.to_party) == b),
            sa.and_(col(RelationshipRow.from_party) == b, col(RelationshipRow.to_party) == a),
        ),
        valid_at(at),
    )
    return list((await session.exec(query)).all())


async def people_of(session: AsyncSession, partner_id: str, at: datetime, types: Collection[str]) -> list[str]:
    """Parties that are, at ``at``, the partner's people: in a relationship of ``types`` towards it."""
    query = select(RelationshipRow.from_party).where(
        col(RelationshipRow.to_party) == partner_id, col(RelationshipRow.type).in_(list(types)), valid_at(at)
    )
    return list((await session.exec(query)).all())


async def edges_touching(
    session: AsyncSession,
    party_ids: Collection[str],
    at: datetime,
    types: Collection[str],
    viewer: domain.Viewer,
    public_types: Collection[str],
    limit: int | None = None,
) -> list[tuple[str, str, str, str]]:
    """(id, from, to, type) of the relationships valid at ``at`` with an end among ``party_ids``."""
    found: dict[str, tuple[str, str, str, str]] = {}
    columns = (
        col(RelationshipRow.id),
        col(RelationshipRow.from_party),
        col(RelationshipRow.to_party),
        col(RelationshipRow.type),
    )
    connection = await session.connection()
    for batch in chunked(party_ids):
        # One index scan per end, glued together: an OR of the two would not use both indexes.
        ends = []
        for end in (RelationshipRow.from_party, RelationshipRow.to_party):
            query = sa.select(*columns).where(
                among(session, col(end), batch), valid_at(at), visible_to(viewer, public_types)
            )
            if types:
                query = query.where(col(RelationshipRow.type).in_(list(types)))
            if limit is not None:
                # In a subquery: SQLite refuses a LIMIT on a member of a compound select.
                query = sa.select(query.limit(limit).subquery())
            ends.append(query)
        for row in (await connection.execute(sa.union_all(*ends))).all():
            found[row[0]] = (row[0], row[1], row[2], row[3])
    return sorted(found.values())


async def edges_joining(
    session: AsyncSession,
    a: Collection[str],
    b: Collection[str],
    at: datetime,
    types: Collection[str],
    viewer: domain.Viewer,
    public_types: Collection[str],
) -> list[tuple[str, str, str, str]]:
    """(id, from, to, type) of the relationships valid at ``at`` with one end in ``a`` and the other in ``b``."""
    found: dict[str, tuple[str, str, str, str]] = {}
    columns = (
        col(RelationshipRow.id),
        col(RelationshipRow.from_party),
        col(RelationshipRow.to_party),
        col(RelationshipRow.type),
    )
    source, target = col(RelationshipRow.from_party), col(RelationshipRow.to_party)
    connection = await session.connection()
    for a_batch in chunked(a, IN_CHUNK // 2):
        for b_batch in chunked(b, IN_CHUNK // 2):
            # Each direction on its own, glued together: PostgreSQL plans an OR of the two as a
            # sequential scan.
            directions = []
            for sources, targets in ((a_batch, b_batch), (b_batch, a_batch)):
                query = sa.select(*columns).where(
                    among(session, source, sources),
                    among(session, target, targets),
                    valid_at(at),
                    visible_to(viewer, public_types),
                )
                if types:
                    query = query.where(col(RelationshipRow.type).in_(list(types)))
                directions.append(query)
            for row in (await connection.execute(sa.union_all(*directions))).all():
                found[row[0]] = (row[0], row[1], row[2], row[3])
    return sorted(found.values())


async def degrees(session: AsyncSession, party_ids: Collection[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for batch in chunked(party_ids):
        query = select(PartyRow.id, PartyRow.degree).where(among(session, col(PartyRow.id), batch))
        found.update({ident: degree for ident, degree in (await session.exec(query)).all()})
    return found


async def parties(session: AsyncSession, party_ids: Collection[str]) -> dict[str, PartyRow]:
    found: dict[str, PartyRow] = {}
    for batch in chunked(party_ids):
        found.update({r.id: r for r in (await session.exec(select(PartyRow).where(col(PartyRow.id).in_(batch)))).all()})
    return found


async def relationships_by_id(session: AsyncSession, ids: Collection[str]) -> dict[str, RelationshipRow]:
    found: dict[str, RelationshipRow] = {}
    for batch in chunked(ids):
        query = select(RelationshipRow).where(col(RelationshipRow.id).in_(batch))
        found.update({r.id: r for r in (await session.exec(query)).all()})
    return found


async def capable_partners(session: AsyncSession, capability: str) -> set[str]:
    query = select(CapabilityRow.partner_id).where(col(CapabilityRow.capability) == capability)
    return set((await session.exec(query)).all())


# --- consent and keys --------------------------------------------------------------------------


async def consent_records(session: AsyncSession, party_id: str, partner_id: str, purpose: str) -> list[ConsentRow]:
    query = select(ConsentRow).where(
        col(ConsentRow.party_id) == party_id,
        col(ConsentRow.partner_id) == partner_id,
        col(ConsentRow.purpose) == purpose,
    )
    return list((await session.exec(query)).all())


async def latest_consents(session: AsyncSession, party_id: str) -> list[ConsentRow]:
    rows = (await session.exec(select(ConsentRow).where(col(ConsentRow.party_id) == party_id))).all()
    latest: dict[tuple[str, str], ConsentRow] = {}
    for row in sorted(rows, key=lambda r: (r.captured_at, r.id)):
        latest[(row.partner_id, row.purpose)] = row
    return sorted(latest.values(), key=lambda r: (r.captured_at, r.id), reverse=True)


async def api_key(session: AsyncSession, key_id: str, *, lock: bool = False) -> ApiKeyRow:
    """The key; with ``lock``, locked for the transaction, as ``relationship`` is."""
    row = await session.get(ApiKeyRow, key_id, with_for_update=lock)
    if row is None:
        raise NotFound(f"API key {key_id} not found")
    return row


async def api_keys(session: AsyncSession, partner_id: str) -> list[ApiKeyRow]:
    query = (
        select(ApiKeyRow)
        .where(col(ApiKeyRow.partner_id) == partner_id)
        .order_by(col(ApiKeyRow.created_at), col(ApiKeyRow.id))
    )
    return list((await session.exec(query)).all())


async def touch_api_key(session: AsyncSession, key_id: str, used: datetime) -> None:
    await session.exec(sa.update(ApiKeyRow).where(col(ApiKeyRow.id) == key_id).values(last_used_at=used))


async def api_key_by_prefix(session: AsyncSession, prefix: str) -> ApiKeyRow | None:
    return (await session.exec(select(ApiKeyRow).where(col(ApiKeyRow.prefix) == prefix))).first()


def public_type_names(types: Mapping[str, domain.RelationshipType]) -> list[str]:
    return sorted(name for name, kind in types.items() if kind.public)
