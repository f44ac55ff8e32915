"""The events identity publishes, as a real JetStream subscriber of COLLABNET_IDENTITY receives them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import grpc
from identity_testing import (
    SERVICE,
    EventLog,
    Identity,
    Network,
    join,
    only,
    partner,
    refused,
    register_person,
    relate,
    stamp,
)

from collabnet.identity.v1 import events_pb2, identity_pb2


async def test_registering_a_party_publishes_party_registered(identity: Identity, events: EventLog) -> None:
    await events.drain(identity)
    party = await register_person(identity, "Paula Person", email="paula@example.org")
    event = only(await events.drain(identity), events_pb2.PartyRegistered)
    assert event == events_pb2.PartyRegistered(
        party_id=party.party_id, kind=identity_pb2.PARTY_KIND_PERSON, display_name="Paula Person"
    )


async def test_joining_as_a_new_organization_publishes_party_registered_then_partner_joined(
    identity: Identity, events: EventLog
) -> None:
    await events.drain(identity)
    joined = await join(
        identity, "Event Retail", identity_pb2.PARTNER_KIND_RETAILER, capabilities=("ship:eu", "repair")
    )
    published = await events.drain(identity)
    assert [p.type for p in published] == [
        "collabnet.identity.v1.PartyRegistered",
        "collabnet.identity.v1.PartnerJoined",
    ]
    assert [p.subject for p in published] == [
        "collabnet.identity.v1.PartyRegistered",
        "collabnet.identity.v1.PartnerJoined",
    ]
    assert len({p.id for p in published}) == 2
    assert published[0].event == events_pb2.PartyRegistered(
        party_id=joined.partner_id, kind=identity_pb2.PARTY_KIND_ORGANIZATION, display_name="Event Retail"
    )
    assert published[1].event == events_pb2.PartnerJoined(
        partner_id=joined.partner_id,
        display_name="Event Retail",
        kinds=[identity_pb2.PARTNER_KIND_RETAILER],
        capabilities=["repair", "ship:eu"],
    )


async def test_an_existing_organization_joining_publishes_only_partner_joined(
    identity: Identity, events: EventLog
) -> None:
    shop = await identity.RegisterParty(
        identity_pb2.RegisterPartyRequest(kind=identity_pb2.PARTY_KIND_ORGANIZATION, display_name="Old Shop"),
        metadata=SERVICE,
    )
    await events.drain(identity)
    await identity.JoinNetwork(
        identity_pb2.JoinNetworkRequest(party_id=shop.party_id, kinds=[identity_pb2.PARTNER_KIND_RETAILER]),
        metadata=SERVICE,
    )
    event = only(await events.drain(identity), events_pb2.PartnerJoined)
    assert event.partner_id == shop.party_id
    assert event.display_name == "Old Shop"


async def test_declaring_a_new_capability_publishes_capability_declared_and_redeclaring_it_nothing(
    identity: Identity, network: Network, events: EventLog
) -> None:
    await events.drain(identity)
    request = identity_pb2.DeclareCapabilityRequest(partner_id=network.m, capability="repair")
    await identity.DeclareCapability(request, metadata=partner(network.m))
    event = only(await events.drain(identity), events_pb2.CapabilityDeclared)
    assert event == events_pb2.CapabilityDeclared(partner_id=network.m, capability="repair")
    await identity.DeclareCapability(request, metadata=partner(network.m))
    assert await events.drain(identity) == []


async def test_establishing_a_relationship_publishes_relationship_established_with_it(
    identity: Identity, network: Network, events: EventLog
) -> None:
    await events.drain(identity)
    relationship = await relate(
        identity, network.c, "member_of", network.r[0], by=partner(network.r[0]), attributes={"tier": "gold"}
    )
    event = only(await events.drain(identity), events_pb2.RelationshipEstablished)
    assert event.relationship == relationship


async def test_ending_a_relationship_publishes_relationship_ended_with_its_end(
    identity: Identity, network: Network, events: EventLog
) -> None:
    await events.drain(identity)
    ended = await identity.EndRelationship(
        identity_pb2.EndRelationshipRequest(relationship_id=network.employment.relationship_id, reason="retired"),
        metadata=partner(network.m),
    )
    event = only(await events.drain(identity), events_pb2.RelationshipEnded)
    assert event.relationship == ended
    assert event.relationship.end_reason == "retired"
    assert event.relationship.HasField("valid_to")


async def test_granting_and_revoking_consent_each_publish_consent_changed(
    identity: Identity, network: Network, events: EventLog
) -> None:
    await events.drain(identity)
    expiry = datetime.now(UTC) + timedelta(days=90)
    granted = await identity.GrantConsent(
        identity_pb2.GrantConsentRequest(
            party_id=network.c, partner_id=network.r[0], purpose="analytics", source="form", expire_time=stamp(expiry)
        ),
        metadata=SERVICE,
    )
    assert only(await events.drain(identity), events_pb2.ConsentChanged) == events_pb2.ConsentChanged(
        party_id=network.c,
        partner_id=network.r[0],
        purpose="analytics",
        granted=True,
        consent_id=granted.consent_id,
        expire_time=stamp(expiry),
    )
    revoked = await identity.RevokeConsent(
        identity_pb2.RevokeConsentRequest(
            party_id=network.c, partner_id=network.r[0], purpose="analytics", source="call"
        ),
        metadata=SERVICE,
    )
    assert only(await events.drain(identity), events_pb2.ConsentChanged) == events_pb2.ConsentChanged(
        party_id=network.c, partner_id=network.r[0], purpose="analytics", granted=False, consent_id=revoked.consent_id
    )


async def test_revoking_an_api_key_publishes_api_key_revoked_once(
    identity: Identity, network: Network, events: EventLog
) -> None:
    created = await identity.CreateApiKey(
        identity_pb2.CreateApiKeyRequest(partner_id=network.r[0], name="pos", scopes=["reviews:write"]),
        metadata=partner(network.r[0]),
    )
    await events.drain(identity)
    request = identity_pb2.RevokeApiKeyRequest(api_key_id=created.api_key.api_key_id)
    await identity.RevokeApiKey(request, metadata=partner(network.r[0]))
    assert only(await events.drain(identity), events_pb2.ApiKeyRevoked) == events_pb2.ApiKeyRevoked(
        api_key_id=created.api_key.api_key_id, partner_id=network.r[0], prefix=created.api_key.prefix
    )
    await identity.RevokeApiKey(request, metadata=partner(network.r[0]))
    assert await events.drain(identity) == []


async def test_calls_that_change_nothing_worth_an_event_publish_nothing(
    identity: Identity, network: Network, events: EventLog
) -> None:
    await events.drain(identity)
    created = await identity.CreateApiKey(
        identity_pb2.CreateApiKeyRequest(partner_id=network.r[0], name="pos", scopes=["reviews:write"]),
        metadata=partner(network.r[0]),
    )
    await identity.AuthenticateApiKey(identity_pb2.AuthenticateApiKeyRequest(secret=created.secret), metadata=SERVICE)
    await identity.RolesOf(identity_pb2.RolesOfRequest(party_id=network.c), metadata=SERVICE)
    await identity.FindPaths(
        identity_pb2.FindPathsRequest(from_party_id=network.c, to_party_id=network.o), metadata=SERVICE
    )
    assert await events.drain(identity) == []


async def test_rejected_calls_publish_nothing(identity: Identity, network: Network, events: EventLog) -> None:
    await events.drain(identity)
    rejected: list[tuple[Callable[[], Awaitable[object]], grpc.StatusCode]] = [
        (
            lambda: identity.EstablishRelationship(
                identity_pb2.EstablishRelationshipRequest(
                    from_party_id=network.c, to_party_id=network.c, type="customer_of"
                ),
                metadata=partner(network.r[0]),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            lambda: identity.EstablishRelationship(
                identity_pb2.EstablishRelationshipRequest(
                    from_party_id=network.c, to_party_id=network.r[0], type="customer_of"
                ),
                metadata=partner(network.r[0]),
            ),
            grpc.StatusCode.ALREADY_EXISTS,
        ),
        (
            lambda: identity.EndRelationship(
                identity_pb2.EndRelationshipRequest(relationship_id=network.customer_of[0].relationship_id),
                metadata=partner(network.o),
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        ),
        (
            lambda: identity.JoinNetwork(
                identity_pb2.JoinNetworkRequest(party_id=network.m, kinds=[identity_pb2.PARTNER_KIND_SUPPLIER]),
                metadata=SERVICE,
            ),
            grpc.StatusCode.ALREADY_EXISTS,
        ),
        (
            lambda: identity.JoinNetwork(
                identity_pb2.JoinNetworkRequest(party_id=network.c, kinds=[identity_pb2.PARTNER_KIND_SUPPLIER]),
                metadata=SERVICE,
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (
            lambda: identity.RegisterParty(
                identity_pb2.RegisterPartyRequest(kind=identity_pb2.PARTY_KIND_PERSON, display_name=""),
                metadata=SERVICE,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            lambda: identity.GrantConsent(
                identity_pb2.GrantConsentRequest(
                    party_id=network.c, partner_id="nobody", purpose="analytics", source="form"
                ),
                metadata=SERVICE,
            ),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            lambda: identity.DeclareCapability(
                identity_pb2.DeclareCapabilityRequest(partner_id=network.m, capability="repair"),
                metadata=partner(network.s),
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        ),
    ]
    for call, code in rejected:
        await refused(call(), code)
    assert await events.drain(identity) == []


# --- the same change asked for by several callers at once ------------------------------------------


async def test_a_relationship_ended_by_several_callers_at_once_is_ended_once(
    identity: Identity, network: Network, events: EventLog
) -> None:
    await events.drain(identity)
    request = identity_pb2.EndRelationshipRequest(relationship_id=network.employment.relationship_id, reason="left")
    results = await asyncio.gather(
        *(identity.EndRelationship(request, metadata=SERVICE) for _ in range(5)), return_exceptions=True
    )
    ended = [r for r in results if isinstance(r, identity_pb2.Relationship)]
    refusals = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ended) == 1
    assert [r.code() for r in refusals] == [grpc.StatusCode.FAILED_PRECONDITION] * 4
    assert only(await events.drain(identity), events_pb2.RelationshipEnded).relationship == ended[0]
    read = await identity.GetRelationship(
        identity_pb2.GetRelationshipRequest(relationship_id=network.employment.relationship_id), metadata=SERVICE
    )
    assert read == ended[0]


async def test_a_key_revoked_by_several_callers_at_once_is_revoked_once(
    identity: Identity, network: Network, events: EventLog
) -> None:
    created = await identity.CreateApiKey(
        identity_pb2.CreateApiKeyRequest(partner_id=network.r[0], name="pos", scopes=["reviews:write"]),
        metadata=partner(network.r[0]),
    )
    await events.drain(identity)
    request = identity_pb2.RevokeApiKeyRequest(api_key_id=created.api_key.api_key_id)
    revoked = await asyncio.gather(*(identity.RevokeApiKey(request, metadata=SERVICE) for _ in range(5)))
    assert len({r.revoke_time.ToJsonString() for r in revoked}) == 1
    only(await events.drain(identity), events_pb2.ApiKeyRevoked)


async def test_a_capability_declared_by_several_callers_at_once_is_declared_once(
    identity: Identity, network: Network, events: EventLog
) -> None:
    await events.drain(identity)
    request = identity_pb2.DeclareCapabilityRequest(partner_id=network.m, capability="repair")
    declared = await asyncio.gather(*(identity.DeclareCapability(request, metadata=SERVICE) for _ in range(5)))
    assert all(list(p.capabilities) == ["assemble", "repair"] for p in declared)
    assert only(await events.drain(identity), events_pb2.CapabilityDeclared).capability == "repair"
