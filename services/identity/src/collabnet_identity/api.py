"""The IdentityService servicer: protos in, domain rules and store queries, protos out."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet.identity.v1 import events_pb2, identity_pb2, identity_pb2_grpc
from collabnet_identity import domain, graph, store
from collabnet_identity.domain import Viewer
from collabnet_kit.db import Database
from collabnet_kit.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unauthenticated
from collabnet_kit.outbox import record
from collabnet_kit.paging import decode_cursor, encode_cursor
from collabnet_kit.principal import Principal, current_principal
from collabnet_kit.timestamps import moment, timestamp

SOURCE = "identity"
LAST_USED_EVERY = timedelta(minutes=1)
"""How stale an API key's last-used time may get: authenticating writes at most this often."""

_KIND_TO_PROTO = {
    domain.PartyKind.PERSON: identity_pb2.PARTY_KIND_PERSON,
    domain.PartyKind.ORGANIZATION: identity_pb2.PARTY_KIND_ORGANIZATION,
}
_KIND_FROM_PROTO = {v: k for k, v in _KIND_TO_PROTO.items()}
_PARTNER_KIND_TO_PROTO = {
    domain.PartnerKind.RETAILER: identity_pb2.PARTNER_KIND_RETAILER,
    domain.PartnerKind.MANUFACTURER: identity_pb2.PARTNER_KIND_MANUFACTURER,
    domain.PartnerKind.SUPPLIER: identity_pb2.PARTNER_KIND_SUPPLIER,
    domain.PartnerKind.DISTRIBUTOR: identity_pb2.PARTNER_KIND_DISTRIBUTOR,
    domain.PartnerKind.CARRIER: identity_pb2.PARTNER_KIND_CARRIER,
    domain.PartnerKind.SERVICE_PROVIDER: identity_pb2.PARTNER_KIND_SERVICE_PROVIDER,
}
_PARTNER_KIND_FROM_PROTO = {v: k for k, v in _PARTNER_KIND_TO_PROTO.items()}
_DIRECTION_FROM_PROTO = {
    identity_pb2.DIRECTION_UNSPECIFIED: domain.Direction.BOTH,
    identity_pb2.DIRECTION_BOTH: domain.Direction.BOTH,
    identity_pb2.DIRECTION_OUTGOING: domain.Direction.OUTGOING,
    identity_pb2.DIRECTION_INCOMING: domain.Direction.INCOMING,
}
PEOPLE_TYPES = ("employee_of", "member_of")
"""Relationships that make a party one of a partner's people, for Affiliations."""


def new_id() -> str:
    return str(uuid.uuid4())


def now() -> datetime:
    return datetime.now(UTC)


def party_proto(row: store.PartyRow, *, partner: bool, contact: bool) -> identity_pb2.Party:
    message = identity_pb2.Party(
        party_id=row.id,
        kind=_KIND_TO_PROTO[domain.PartyKind(row.kind)],
        display_name=row.display_name,
        attributes=row.attributes,
        partner=partner,
        create_time=timestamp(row.created_at),
    )
    if contact:
        if row.email is not None:
            message.email = row.email
        if row.phone is not None:
            message.phone = row.phone
    return message


def partner_proto(
    partner: store.PartnerRow, party: store.PartyRow, capabilities: Iterable[str]
) -> identity_pb2.Partner:
    return identity_pb2.Partner(
        partner_id=partner.party_id,
        display_name=party.display_name,
        kinds=[_PARTNER_KIND_TO_PROTO[domain.PartnerKind(k)] for k in partner.kinds],
        capabilities=sorted(capabilities),
        join_time=timestamp(partner.joined_at),
    )


def relationship_proto(row: store.RelationshipRow | domain.Relationship) -> identity_pb2.Relationship:
    rel = row if isinstance(row, domain.Relationship) else store.to_relationship(row)
    return identity_pb2.Relationship(
        relationship_id=rel.id,
        from_party_id=rel.from_party,
        to_party_id=rel.to_party,
        type=rel.type,
        context_partner_id=rel.context_partner,
        attributes=dict(rel.attributes),
        valid_from=timestamp(rel.valid_from),
        valid_to=timestamp(rel.valid_to),
        create_time=timestamp(rel.created_at),
        end_reason=rel.end_reason,
    )


def type_proto(kind: domain.RelationshipType) -> identity_pb2.RelationshipType:
    return identity_pb2.RelationshipType(
        name=kind.name, inverse_name=kind.inverse_name, description=kind.description, public=kind.public
    )


def consent_proto(row: store.ConsentRow) -> identity_pb2.ConsentRecord:
    return identity_pb2.ConsentRecord(
        consent_id=row.id,
        party_id=row.party_id,
        partner_id=row.partner_id,
        purpose=row.purpose,
        granted=row.granted,
        source=row.source,
        capture_time=timestamp(row.captured_at),
        expire_time=timestamp(row.expires_at),
    )


def key_proto(row: store.ApiKeyRow) -> identity_pb2.ApiKey:
    return identity_pb2.ApiKey(
        api_key_id=row.id,
        partner_id=row.partner_id,
        name=row.name,
        prefix=row.prefix,
        scopes=row.scopes,
        create_time=timestamp(row.created_at),
        last_used_time=timestamp(row.last_used_at),
        revoke_time=timestamp(row.revoked_at),
    )


def decision_proto(decision: domain.Decision) -> identity_pb2.Decision:
    return identity_pb2.Decision(
        allowed=decision.allowed, reason=decision.reason, relationship_id=decision.relationship_id
    )


def require(value: str, field_name: str) -> str:
    if not value:
        raise InvalidArgument.field(field_name, "is required")
    return value


class DatabaseEdges:
    """The graph as the database holds it at one moment, for one viewer: an ``EdgeSource``."""

    def __init__(
        self,
        session: AsyncSession,
        at: datetime,
        types: Collection[str],
        viewer: Viewer,
        public_types: Collection[str],
    ) -> None:
        self.session = session
        self.at = at
        self.types = types
        self.viewer = viewer
        self.public_types = public_types

    async def edges(self, parties: Collection[str], limit: int | None = None) -> list[graph.Edge]:
        return await store.edges_touching(
            self.session, parties, self.at, self.types, self.viewer, self.public_types, limit
        )

    async def edges_between(self, a: Collection[str], b: Collection[str]) -> list[graph.Edge]:
        return await store.edges_joining(self.session, a, b, self.at, self.types, self.viewer, self.public_types)

    async def degrees(self, parties: Collection[str]) -> dict[str, int]:
        return await store.degrees(self.session, parties)


class IdentityApi(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db
        self.types = store.TypeCatalog()

    # --- parties -----------------------------------------------------------------------------

    async def RegisterParty(self, request: identity_pb2.RegisterPartyRequest, context: Any) -> identity_pb2.Party:
        principal = current_principal()
        kind = _KIND_FROM_PROTO.get(request.kind)
        email = request.email if request.HasField("email") else None
        phone = request.phone if request.HasField("phone") else None
        domain.validate_party(kind, request.display_name, email, phone, request.attributes)
        assert kind is not None
        row = store.PartyRow(
            id=new_id(),
            kind=kind.value,
            display_name=request.display_name.strip(),
            email=email,
            phone=phone,
            attributes=dict(request.attributes),
            created_at=now(),
            registered_by=None if principal.service is not None else principal.partner_id,
        )
        async with self.db.transaction() as session:
            session.add(row)
            await record(
                session,
                events_pb2.PartyRegistered(party_id=row.id, kind=request.kind, display_name=row.display_name),
                source=SOURCE,
            )
        return party_proto(row, partner=False, contact=True)

    async def GetParty(self, request: identity_pb2.GetPartyRequest, context: Any) -> identity_pb2.Party:
        principal = current_principal()
        party_id = require(request.party_id, "party_id")
        async with self.db.read() as session:
            row = await store.party(session, party_id)
            is_partner = await session.get(store.PartnerRow, party_id) is not None
            contact = await self._may_read_contact(session, principal, party_id)
        return party_proto(row, partner=is_partner, contact=contact)

    async def _may_read_contact(self, session: AsyncSession, principal: Principal, party_id: str) -> bool:
        facts = domain.Facts(relationships=await self._current_between(session, principal.partner_id, party_id))
        types = await self.types.all(session)
        return domain.check(principal, "party.read_contact", f"party/{party_id}", facts, types).allowed

    async def _current_between(
        self, session: AsyncSession, partner: str | None, party: str
    ) -> list[domain.Relationship]:
        if not partner:
            return []
        return [store.to_relationship(r) for r in await store.between(session, partner, party, now())]

    # --- partners ------------------------------------------------------------------------------

    async def JoinNetwork(self, request: identity_pb2.JoinNetworkRequest, context: Any) -> identity_pb2.Partner:
        principal = current_principal()
        if principal.service is None:
            domain.require_scope(principal, "network:admin", "joining a partner to the network")
        kinds = [_PARTNER_KIND_FROM_PROTO.get(k) for k in request.kinds]
        domain.validate_join(kinds, request.capabilities, None if request.party_id else request.display_name)
        joined = now()
        async with self.db.transaction() as session:
            if request.party_id:
                party_row = await store.party(session, request.party_id)
                if party_row.kind != domain.PartyKind.ORGANIZATION:
                    raise FailedPrecondition(f"party {party_row.id} is a person; only organizations join as partners")
                if await session.get(store.PartnerRow, party_row.id) is not None:
                    raise AlreadyExists(f"party {party_row.id} is a partner already")
                await store.lock_parties(session, [party_row.id], exclusive=True)
            else:
                party_row = store.PartyRow(
                    id=new_id(),
                    kind=domain.PartyKind.ORGANIZATION.value,
                    display_name=request.display_name.strip(),
                    created_at=joined,
                )
                session.add(party_row)
                # Without ORM relationships the unit of work orders inserts by class name, not by
                # foreign key: each row goes in before the rows that refer to it.
                await session.flush()
                await record(
                    session,
                    events_pb2.PartyRegistered(
                        party_id=party_row.id,
                        kind=identity_pb2.PARTY_KIND_ORGANIZATION,
                        display_name=party_row.display_name,
                    ),
                    source=SOURCE,
                )
            partner_row = store.PartnerRow(
                party_id=party_row.id, kinds=sorted({k.value for k in kinds if k is not None}), joined_at=joined
            )
            session.add(partner_row)
            await session.flush()  # before the capabilities that refer to it
            capabilities = sorted(set(request.capabilities))
            for capability in capabilities:
                session.add(store.CapabilityRow(partner_id=party_row.id, capability=capability, declared_at=joined))
            # Relationships recorded before the party joined now have a partner at this end.
            await store.mark_partner_ends(session, party_row.id)
            await record(
                session,
                events_pb2.PartnerJoined(
                    partner_id=party_row.id,
                    display_name=party_row.display_name,
                    kinds=list(request.kinds),
                    capabilities=capabilities,
                ),
                source=SOURCE,
            )
        return partner_proto(partner_row, party_row, capabilities)

    async def GetPartner(self, request: identity_pb2.GetPartnerRequest, context: Any) -> identity_pb2.Partner:
        current_principal()
        partner_id = require(request.partner_id, "partner_id")
        async with self.db.read() as session:
            found = await store.partner_rows(session, [partner_id])
            if partner_id not in found:
                raise NotFound(f"partner {partner_id} not found")
            capabilities = await store.capabilities(session, [partner_id])
        partner_row, party_row = found[partner_id]
        return partner_proto(partner_row, party_row, capabilities[partner_id])

    async def ListPartners(
        self, request: identity_pb2.ListPartnersRequest, context: Any
    ) -> identity_pb2.ListPartnersResponse:
        current_principal()
        size = domain.page_size(request.page_size)
        after = decode_cursor(request.page_token, 1)
        kind = _PARTNER_KIND_FROM_PROTO.get(request.kind) if request.kind else None
        async with self.db.read() as session:
            found = await store.list_partners(session, kind, after[0] if after else None, size + 1)
            page = found[:size]
            capabilities = await store.capabilities(session, [p.party_id for p, _ in page])
        partners = [partner_proto(p, party, capabilities[p.party_id]) for p, party in page]
        token = encode_cursor(page[-1][0].party_id) if len(found) > size else ""
        return identity_pb2.ListPartnersResponse(partners=partners, next_page_token=token)

    async def DeclareCapability(
        self, request: identity_pb2.DeclareCapabilityRequest, context: Any
    ) -> identity_pb2.Partner:
        principal = current_principal()
        partner_id = require(request.partner_id, "partner_id")
        domain.validate_capability(request.capability)
        domain.require_partner_or_service(principal, partner_id, "the partner's capabilities")
        async with self.db.transaction() as session:
            found = await store.partner_rows(session, [partner_id])
            if partner_id not in found:
                raise NotFound(f"partner {partner_id} not found")
            # So that of two declaring the same capability at once, the second sees the first's.
            await store.lock_parties(session, [partner_id], exclusive=True)
            declared = await store.capabilities(session, [partner_id])
            if request.capability not in declared[partner_id]:
                session.add(
                    store.CapabilityRow(partner_id=partner_id, capability=request.capability, declared_at=now())
                )
                declared[partner_id].append(request.capability)
                await record(
                    session,
                    events_pb2.CapabilityDeclared(partner_id=partner_id, capability=request.capability),
                    source=SOURCE,
                )
        return partner_proto(*found[partner_id], declared[partner_id])

    # --- relationship types --------------------------------------------------------------------

    async def CreateRelationshipType(
        self, request: identity_pb2.CreateRelationshipTypeRequest, context: Any
    ) -> identity_pb2.RelationshipType:
        principal = current_principal()
        if principal.service is None:
            domain.require_scope(principal, "network:admin", "creating a relationship type")
        given = request.relationship_type
        kind = domain.RelationshipType(
            given.name, given.inverse_name or given.name, given.description.strip(), given.public
        )
        async with self.db.transaction() as session:
            domain.validate_relationship_type(kind, await self.types.all(session, fresh=True))
            session.add(
                store.RelationshipTypeRow(
                    name=kind.name, inverse_name=kind.inverse_name, description=kind.description, public=kind.public
                )
            )
        self.types.forget()
        return type_proto(kind)

    async def ListRelationshipTypes(
        self, request: identity_pb2.ListRelationshipTypesRequest, context: Any
    ) -> identity_pb2.ListRelationshipTypesResponse:
        current_principal()
        async with self.db.read() as session:
            types = await self.types.all(session)
        return identity_pb2.ListRelationshipTypesResponse(
            relationship_types=[type_proto(types[name]) for name in sorted(types)]
        )

    # --- relationships -------------------------------------------------------------------------

    async def EstablishRelationship(
        self, request: identity_pb2.EstablishRelationshipRequest, context: Any
    ) -> identity_pb2.Relationship:
        principal = current_principal()
        context_partner = request.context_partner_id or principal.partner_id or ""
        valid_from = moment(request, "valid_from") or now()
        valid_to = moment(request, "valid_to")
        async with self.db.transaction() as session:
            types = await self.types.knowing(session, [request.type])
            domain.validate_relationship(
                request.from_party_id,
                request.to_party_id,
                request.type,
                types,
                valid_from,
                valid_to,
                request.attributes,
            )
            if not context_partner:
                raise InvalidArgument.field("context_partner_id", "is required when a service records a relationship")
            domain.may_record_relationship(principal, request.from_party_id, request.to_party_id, context_partner)
            ends = await store.require_parties(session, request.from_party_id, request.to_party_id)
            await store.partner(session, context_partner)
            # Exclusive: the transaction bumps both parties' degree, and two shared locks each
            # waiting to become an update are a deadlock.
            await store.lock_parties(session, [request.from_party_id, request.to_party_id], exclusive=True)
            partners = await store.partners_among(session, [request.from_party_id, request.to_party_id])
            outsiders = {party: row.registered_by for party, row in ends.items() if party not in partners}
            domain.may_relate_outsiders(principal, request.from_party_id, request.to_party_id, outsiders)
            clash = await store.overlapping(
                session, request.from_party_id, request.to_party_id, request.type, valid_from, valid_to
            )
            if clash is not None:
                raise AlreadyExists(
                    f"{request.from_party_id} is already {request.type} {request.to_party_id} "
                    f"in that time (relationship {clash.id})"
                )
            row = store.RelationshipRow(
                id=new_id(),
                from_party=request.from_party_id,
                to_party=request.to_party_id,
                type=request.type,
                context_partner=context_partner,
                attributes=dict(request.attributes),
                valid_from=valid_from,
                valid_to=valid_to,
                from_is_partner=request.from_party_id in partners,
                to_is_partner=request.to_party_id in partners,
                created_at=now(),
            )
            session.add(row)
            await store.add_degree(session, row.from_party, row.to_party)
            message = relationship_proto(row)
            await record(session, events_pb2.RelationshipEstablished(relationship=message), source=SOURCE)
            try:
                await session.flush()
            except IntegrityError:
                raise AlreadyExists(
                    f"{request.from_party_id} is already {request.type} {request.to_party_id}"
                ) from None
        return message

    async def EndRelationship(
        self, request: identity_pb2.EndRelationshipRequest, context: Any
    ) -> identity_pb2.Relationship:
        principal = current_principal()
        relationship_id = require(request.relationship_id, "relationship_id")
        valid_to = moment(request, "valid_to") or now()
        async with self.db.transaction() as session:
            row = await store.relationship(session, relationship_id, lock=True)
            domain.may_end_relationship(principal, store.to_relationship(row))
            if row.valid_to is not None and row.valid_to <= now():
                raise FailedPrecondition(f"relationship {row.id} ended at {row.valid_to.isoformat()}")
            if valid_to <= row.valid_from:
                raise InvalidArgument.field("valid_to", "must be after the relationship's valid_from")
            row.valid_to = valid_to
            row.end_reason = request.reason.strip()[:500]
            session.add(row)
            message = relationship_proto(row)
            await record(session, events_pb2.RelationshipEnded(relationship=message), source=SOURCE)
        return message

    async def GetRelationship(
        self, request: identity_pb2.GetRelationshipRequest, context: Any
    ) -> identity_pb2.Relationship:
        principal = current_principal()
        relationship_id = require(request.relationship_id, "relationship_id")
        async with self.db.read() as session:
            row = await store.relationship(session, relationship_id)
            types = await self.types.all(session)
        rel = store.to_relationship(row)
        if not Viewer.of(principal).sees(rel, types):
            raise NotFound(f"relationship {relationship_id} not found")
        return relationship_proto(rel)

    async def _graph_setup(
        self, session: AsyncSession, principal: Principal, type_names: Collection[str], as_of: datetime | None
    ) -> tuple[dict[str, domain.RelationshipType], DatabaseEdges]:
        types = await self.types.knowing(session, type_names)
        domain.validate_types_filter(type_names, types)
        await store.plan_for_actual_ids(session)
        source = DatabaseEdges(
            session, as_of or now(), list(type_names), Viewer.of(principal), store.public_type_names(types)
        )
        return types, source

    async def ListRelationships(
        self, request: identity_pb2.ListRelationshipsRequest, context: Any
    ) -> identity_pb2.ListRelationshipsResponse:
        principal = current_principal()
        party_id = require(request.party_id, "party_id")
        size = domain.page_size(request.page_size)
        cursor = decode_cursor(request.page_token, 2)
        after = (datetime.fromisoformat(cursor[0]), cursor[1]) if cursor else None
        async with self.db.read() as session:
            await store.party(session, party_id)
            _, source = await self._graph_setup(session, principal, request.types, moment(request, "as_of"))
            rows = await store.list_relationships(
                session,
                party_id,
                _DIRECTION_FROM_PROTO.get(request.direction, domain.Direction.BOTH),
                list(request.types),
                source.at,
                source.viewer,
                source.public_types,
                size + 1,
                after,
            )
        page = rows[:size]
        token = encode_cursor(page[-1].valid_from.isoformat(), page[-1].id) if len(rows) > size else ""
        return identity_pb2.ListRelationshipsResponse(
            relationships=[relationship_proto(r) for r in page], next_page_token=token
        )

    async def RolesOf(self, request: identity_pb2.RolesOfRequest, context: Any) -> identity_pb2.RolesOfResponse:
        principal = current_principal()
        party_id = require(request.party_id, "party_id")
        at = moment(request, "as_of") or now()
        async with self.db.read() as session:
            types = await self.types.all(session)
            viewer = Viewer.of(principal)
            found = await store.partner_relationships(session, party_id, at)
            if not found:
                await store.party(session, party_id)  # none, or no such party?
            rows = [rel for rel, _, _ in found if viewer.sees(rel, types)]
            partners = {partner_row.party_id: (partner_row, party_row) for _, partner_row, party_row in found}
            capabilities = await store.capabilities(session, list(partners)) if rows else {}
        by_partner: dict[str, list[identity_pb2.Role]] = {}
        for rel in rows:
            by_partner.setdefault(rel.other_end(party_id), []).append(
                identity_pb2.Role(
                    role=domain.role_of(party_id, rel, types), relationship_id=rel.id, attributes=dict(rel.attributes)
                )
            )
        return identity_pb2.RolesOfResponse(
            partners=[
                identity_pb2.PartnerRoles(
                    partner=partner_proto(*partners[partner_id], capabilities[partner_id]), roles=roles
                )
                for partner_id, roles in sorted(by_partner.items(), key=lambda item: partners[item[0]][1].display_name)
            ]
        )

    async def Neighborhood(
        self, request: identity_pb2.NeighborhoodRequest, context: Any
    ) -> identity_pb2.NeighborhoodResponse:
        principal = current_principal()
        party_id = require(request.party_id, "party_id")
        depth = domain.bounded(request.depth, "depth", 1, 1, domain.NEIGHBORHOOD_MAX_DEPTH)
        max_parties = domain.bounded(
            request.max_parties, "max_parties", domain.NEIGHBORHOOD_DEFAULT_PARTIES, 1, domain.NEIGHBORHOOD_MAX_PARTIES
        )
        async with self.db.read() as session:
            await store.party(session, party_id)
            _, source = await self._graph_setup(session, principal, request.types, moment(request, "as_of"))
            found = await graph.neighborhood(source, party_id, depth, max_parties)
            rows = await store.parties(session, found.distances)
            partners = await store.partners_among(session, found.distances)
            relationships = await store.relationships_by_id(session, [e[0] for e in found.edges])
        neighbors = [
            identity_pb2.Neighbor(party=party_proto(rows[p], partner=p in partners, contact=False), distance=distance)
            for p, distance in sorted(found.distances.items(), key=lambda item: (item[1], item[0]))
        ]
        return identity_pb2.NeighborhoodResponse(
            parties=neighbors,
            relationships=[relationship_proto(relationships[e[0]]) for e in found.edges],
            truncated=found.truncated,
        )

    async def FindPaths(self, request: identity_pb2.FindPathsRequest, context: Any) -> identity_pb2.FindPathsResponse:
        principal = current_principal()
        source_id = require(request.from_party_id, "from_party_id")
        target_id = require(request.to_party_id, "to_party_id")
        k = domain.bounded(request.k, "k", domain.PATHS_DEFAULT_K, 1, domain.PATHS_MAX_K)
        depth = domain.bounded(request.max_depth, "max_depth", domain.PATHS_DEFAULT_DEPTH, 1, domain.PATHS_MAX_DEPTH)
        async with self.db.read() as session:
            await store.require_parties(session, source_id, target_id)
            types, source = await self._graph_setup(session, principal, request.types, moment(request, "as_of"))
            paths = await graph.k_shortest_paths(graph.CachedGraph(source), source_id, target_id, k, depth)
        return identity_pb2.FindPathsResponse(
            paths=[
                identity_pb2.Path(
                    steps=[
                        identity_pb2.PathStep(
                            from_party_id=walk_from,
                            to_party_id=walk_to,
                            type=types[edge[3]].name if edge[1] == walk_from else types[edge[3]].inverse_name,
                            relationship_id=edge[0],
                        )
                        for walk_from, walk_to, edge in path.steps()
                    ]
                )
                for path in paths
            ]
        )

    async def WhoCanServe(
        self, request: identity_pb2.WhoCanServeRequest, context: Any
    ) -> identity_pb2.WhoCanServeResponse:
        principal = current_principal()
        party_id = require(request.party_id, "party_id")
        domain.validate_capability(request.capability)
        hops = domain.bounded(request.max_hops, "max_hops", domain.SERVE_DEFAULT_HOPS, 1, domain.SERVE_MAX_HOPS)
        limit = domain.bounded(request.limit, "limit", domain.SERVE_DEFAULT_LIMIT, 1, domain.SERVE_MAX_LIMIT)
        async with self.db.read() as session:
            await store.party(session, party_id)
            _, source = await self._graph_setup(session, principal, [], None)
            capable = await store.capable_partners(session, request.capability)
            found = await graph.nearest(graph.CachedGraph(source), party_id, capable, hops, limit)
            partners = await store.partner_rows(session, [p for p, _ in found])
            capabilities = await store.capabilities(session, list(partners))
        return identity_pb2.WhoCanServeResponse(
            partners=[
                identity_pb2.ServingPartner(partner=partner_proto(*partners[p], capabilities[p]), hops=hop)
                for p, hop in found
            ]
        )

    async def Affiliations(
        self, request: identity_pb2.AffiliationsRequest, context: Any
    ) -> identity_pb2.AffiliationsResponse:
        principal = current_principal()
        party_id = require(request.party_id, "party_id")
        partner_id = require(request.partner_id, "partner_id")
        at = now()
        async with self.db.read() as session:
            await store.party(session, party_id)
            await store.partner(session, partner_id)
            types = await self.types.all(session)
            viewer = Viewer.of(principal)
            found = [(r, "") for r in await store.between(session, party_id, partner_id, at)]
            people = set(await store.people_of(session, partner_id, at, PEOPLE_TYPES)) - {party_id}
            for person in sorted(people):
                found += [(r, person) for r in await store.between(session, party_id, person, at)]
        affiliations = [(store.to_relationship(row), via) for row, via in found]
        return identity_pb2.AffiliationsResponse(
            affiliations=[
                identity_pb2.Affiliation(relationship=relationship_proto(rel), via_party_id=via)
                for rel, via in affiliations
                if viewer.sees(rel, types)
            ]
        )

    # --- consent -------------------------------------------------------------------------------

    async def GrantConsent(self, request: identity_pb2.GrantConsentRequest, context: Any) -> identity_pb2.ConsentRecord:
        return await self._record_consent(request, granted=True, expires_at=moment(request, "expire_time"))

    async def RevokeConsent(
        self, request: identity_pb2.RevokeConsentRequest, context: Any
    ) -> identity_pb2.ConsentRecord:
        return await self._record_consent(request, granted=False, expires_at=None)

    async def _record_consent(
        self, request: Any, *, granted: bool, expires_at: datetime | None
    ) -> identity_pb2.ConsentRecord:
        principal = current_principal()
        party_id = require(request.party_id, "party_id")
        partner_id = require(request.partner_id, "partner_id")
        domain.validate_purpose(request.purpose)
        source = require(request.source.strip(), "source")
        captured = now()
        if expires_at is not None and expires_at <= captured:
            raise InvalidArgument.field("expire_time", "must be in the future")
        domain.require_acting_for(principal, party_id, "consent")
        async with self.db.transaction() as session:
            await store.party(session, party_id)
            await store.partner(session, partner_id)
            row = store.ConsentRow(
                id=new_id(),
                party_id=party_id,
                partner_id=partner_id,
                purpose=request.purpose,
                granted=granted,
                source=source[:200],
                captured_at=captured,
                expires_at=expires_at,
            )
            session.add(row)
            await record(
                session,
                events_pb2.ConsentChanged(
                    party_id=party_id,
                    partner_id=partner_id,
                    purpose=request.purpose,
                    granted=granted,
                    consent_id=row.id,
                    expire_time=timestamp(expires_at),
                ),
                source=SOURCE,
            )
        return consent_proto(row)

    async def CheckConsent(
        self, request: identity_pb2.CheckConsentRequest, context: Any
    ) -> identity_pb2.CheckConsentResponse:
        principal = current_principal()
        party_id = require(request.party_id, "party_id")
        partner_id = require(request.partner_id, "partner_id")
        domain.validate_purpose(request.purpose)
        if principal.service is None and principal.partner_id != partner_id and principal.party_id != party_id:
            domain.require_partner_or_service(principal, partner_id, "consent given to the partner")
        async with self.db.read() as session:
            await store.party(session, party_id)
            rows = await store.consent_records(session, party_id, partner_id, request.purpose)
        by_id = {r.id: r for r in rows}
        answer = domain.consent_at(map(store.to_consent, rows), moment(request, "at") or now())
        return identity_pb2.CheckConsentResponse(
            granted=answer.granted,
            record=consent_proto(by_id[answer.record.id]) if answer.record else None,
            reason=answer.reason,
        )

    async def ListConsents(
        self, request: identity_pb2.ListConsentsRequest, context: Any
    ) -> identity_pb2.ListConsentsResponse:
        principal = current_principal()
        party_id = require(request.party_id, "party_id")
        async with self.db.read() as session:
            await store.party(session, party_id)
            rows = await store.latest_consents(session, party_id)
        if principal.service is None and principal.party_id != party_id:
            # A partner sees the consents given to it, never those given to others.
            rows = [r for r in rows if r.partner_id == principal.partner_id]
        return identity_pb2.ListConsentsResponse(consents=[consent_proto(r) for r in rows])

    # --- API keys ------------------------------------------------------------------------------

    async def CreateApiKey(
        self, request: identity_pb2.CreateApiKeyRequest, context: Any
    ) -> identity_pb2.CreateApiKeyResponse:
        principal = current_principal()
        partner_id = require(request.partner_id, "partner_id")
        name = request.name.strip()
        if not name or len(name) > 200:
            raise InvalidArgument.field("name", "must be 1 to 200 characters")
        domain.validate_scopes(request.scopes)
        domain.require_key_manager(principal, partner_id, "the partner's API keys")
        if principal.service is None:
            domain.require_scope(principal, "keys:manage", "creating an API key")
            missing = sorted(set(request.scopes) - principal.scopes)
            if missing:
                raise InvalidArgument.field("scopes", f"a key cannot grant scopes its creator lacks: {missing}")
        key = domain.new_api_key()
        row = store.ApiKeyRow(
            id=new_id(),
            partner_id=partner_id,
            name=name,
            prefix=key.prefix,
            secret_hash=key.secret_hash,
            scopes=sorted(set(request.scopes)),
            created_at=now(),
        )
        async with self.db.transaction() as session:
            await store.partner(session, partner_id)
            session.add(row)
        return identity_pb2.CreateApiKeyResponse(api_key=key_proto(row), secret=key.secret)

    async def ListApiKeys(
        self, request: identity_pb2.ListApiKeysRequest, context: Any
    ) -> identity_pb2.ListApiKeysResponse:
        principal = current_principal()
        partner_id = require(request.partner_id, "partner_id")
        domain.require_key_manager(principal, partner_id, "the partner's API keys")
        async with self.db.read() as session:
            await store.partner(session, partner_id)
            rows = await store.api_keys(session, partner_id)
        return identity_pb2.ListApiKeysResponse(api_keys=[key_proto(r) for r in rows])

    async def RevokeApiKey(self, request: identity_pb2.RevokeApiKeyRequest, context: Any) -> identity_pb2.ApiKey:
        principal = current_principal()
        key_id = require(request.api_key_id, "api_key_id")
        async with self.db.transaction() as session:
            row = await store.api_key(session, key_id, lock=True)
            domain.require_key_manager(principal, row.partner_id, "the API key")
            if row.revoked_at is None:
                row.revoked_at = now()
                session.add(row)
                await record(
                    session,
                    events_pb2.ApiKeyRevoked(api_key_id=row.id, partner_id=row.partner_id, prefix=row.prefix),
                    source=SOURCE,
                )
        return key_proto(row)

    async def AuthenticateApiKey(
        self, request: identity_pb2.AuthenticateApiKeyRequest, context: Any
    ) -> identity_pb2.AuthenticateApiKeyResponse:
        principal = current_principal()
        domain.require_service(principal, "authenticate API keys")
        prefix = domain.key_prefix(request.secret)
        refused = Unauthenticated("the API key is not valid")
        if prefix is None:
            raise refused
        async with self.db.read() as session:
            row = await store.api_key_by_prefix(session, prefix)
        if row is None or not domain.same_secret(request.secret, row.secret_hash):
            raise refused
        if row.revoked_at is not None:
            raise Unauthenticated("the API key has been revoked")
        used = now()
        if row.last_used_at is None or used - row.last_used_at > LAST_USED_EVERY:
            async with self.db.transaction() as session:
                await store.touch_api_key(session, row.id, used)
        return identity_pb2.AuthenticateApiKeyResponse(partner_id=row.partner_id, scopes=row.scopes, api_key_id=row.id)

    # --- authorization -------------------------------------------------------------------------

    async def ActsFor(self, request: identity_pb2.ActsForRequest, context: Any) -> identity_pb2.Decision:
        principal = current_principal()
        partner_id = require(request.partner_id, "partner_id")
        party_id = require(request.party_id, "party_id")
        async with self.db.read() as session:
            await store.partner(session, partner_id)
            await store.party(session, party_id)
            # The answer names a relationship private to its ends: another partner may not ask.
            domain.require_partner_or_service(principal, partner_id, "whom the partner acts for")
            types = await self.types.all(session)
            current = await self._current_between(session, partner_id, party_id)
        return decision_proto(domain.acts_for(partner_id, party_id, current, types))

    async def Check(self, request: identity_pb2.CheckRequest, context: Any) -> identity_pb2.Decision:
        principal = current_principal()
        # The request is checked before anything is looked up: a bad one is refused as such.
        kind, ident = domain.parse_check(request.action, request.resource)
        async with self.db.read() as session:
            types = await self.types.all(session)
            facts = domain.Facts()
            if kind == "party":
                await store.party(session, ident)
                facts = domain.Facts(relationships=await self._current_between(session, principal.partner_id, ident))
            elif kind == "partner":
                await store.partner(session, ident)
            else:
                facts = domain.Facts(relationship=store.to_relationship(await store.relationship(session, ident)))
        return decision_proto(domain.check(principal, request.action, request.resource, facts, types))
