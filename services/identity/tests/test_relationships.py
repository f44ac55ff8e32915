"""Relationships and their types through the real gRPC server: recording, ending, listing, roles, time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from identity_testing import (
    CUSTOMER_TYPES,
    SERVICE,
    EventLog,
    Identity,
    Network,
    at,
    partner,
    refused,
    register_person,
    relate,
    relationship_ids,
    stamp,
    violated_fields,
)

from collabnet.identity.v1 import identity_pb2


def establish(
    from_party: str,
    to_party: str,
    type_name: str,
    *,
    context: str = "",
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
) -> identity_pb2.EstablishRelationshipRequest:
    request = identity_pb2.EstablishRelationshipRequest(
        from_party_id=from_party, to_party_id=to_party, type=type_name, context_partner_id=context
    )
    if valid_from is not None:
        request.valid_from.CopyFrom(stamp(valid_from))
    if valid_to is not None:
        request.valid_to.CopyFrom(stamp(valid_to))
    return request


# --- recording -----------------------------------------------------------------------------------


async def test_a_relationship_is_recorded_in_the_calling_partners_network_from_now_and_read_back(
    identity: Identity, network: Network
) -> None:
    newcomer = await register_person(identity, "Nina Newcomer", by=partner(network.r[1]))
    before = datetime.now(UTC)
    recorded = await identity.EstablishRelationship(
        identity_pb2.EstablishRelationshipRequest(
            from_party_id=newcomer.party_id,
            to_party_id=network.r[1],
            type="customer_of",
            attributes={"customer_type": "retail"},
        ),
        metadata=partner(network.r[1]),
    )
    after = datetime.now(UTC)
    assert recorded.relationship_id
    assert (recorded.from_party_id, recorded.to_party_id, recorded.type) == (
        newcomer.party_id,
        network.r[1],
        "customer_of",
    )
    assert recorded.context_partner_id == network.r[1]
    assert dict(recorded.attributes) == {"customer_type": "retail"}
    assert before <= at(recorded.valid_from) <= after
    assert not recorded.HasField("valid_to")

    read = await identity.GetRelationship(
        identity_pb2.GetRelationshipRequest(relationship_id=recorded.relationship_id), metadata=SERVICE
    )
    assert read == recorded


async def test_a_service_records_a_relationship_in_the_network_it_names(identity: Identity, network: Network) -> None:
    recorded = await identity.EstablishRelationship(
        establish(network.m, network.o, "partner_of", context=network.o), metadata=SERVICE
    )
    assert recorded.context_partner_id == network.o
    assert recorded.relationship_id in await relationship_ids(identity, network.o)


async def test_a_service_must_name_the_network_a_relationship_is_recorded_in(
    identity: Identity, network: Network
) -> None:
    error = await refused(
        identity.EstablishRelationship(establish(network.m, network.o, "partner_of"), metadata=SERVICE),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == ["context_partner_id"]


async def test_a_partner_may_not_record_a_relationship_it_is_no_end_of(identity: Identity, network: Network) -> None:
    before = await relationship_ids(identity, network.m)
    await refused(
        identity.EstablishRelationship(establish(network.o, network.m, "supplier_of"), metadata=partner(network.r[0])),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await refused(
        identity.EstablishRelationship(
            establish(network.o, network.m, "supplier_of", context=network.o), metadata=partner(network.r[0])
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert await relationship_ids(identity, network.m) == before


async def test_a_partner_may_not_make_another_partners_consumer_its_own_without_the_consumer(
    identity: Identity, network: Network
) -> None:
    shop, maker = network.r[0], network.m
    dana = (await register_person(identity, "Dana", email="dana@example.org", by=partner(shop))).party_id
    await relate(identity, dana, "customer_of", shop, by=partner(shop))

    def acts_for(partner_id: str) -> Awaitable[identity_pb2.Decision]:
        return identity.ActsFor(identity_pb2.ActsForRequest(partner_id=partner_id, party_id=dana), metadata=SERVICE)

    for request in (establish(dana, maker, "customer_of"), establish(maker, dana, "employee_of")):
        error = await refused(
            identity.EstablishRelationship(request, metadata=partner(maker)), grpc.StatusCode.PERMISSION_DENIED
        )
        details = error.details() or ""
        field_name = "from_party_id" if request.from_party_id == dana else "to_party_id"
        assert details.startswith(f"{field_name}: {dana} is not a partner"), details
        assert "registered that party or acts for it" in details
        assert shop not in details  # who registered Dana is not the maker's business
    assert len(await relationship_ids(identity, dana)) == 1
    assert not (await acts_for(maker)).allowed

    # A person a service registered is no partner's to claim either.
    walk_in = (await register_person(identity, "Walk-in")).party_id
    await refused(
        identity.EstablishRelationship(establish(walk_in, shop, "customer_of"), metadata=partner(shop)),
        grpc.StatusCode.PERMISSION_DENIED,
    )

    # Dana introduces herself to the maker through the shop, which acts for her: the relationship
    # is the maker's (in its network), and the shop, no longer acting for her, does not see it.
    introduced = await identity.EstablishRelationship(
        establish(dana, maker, "customer_of", context=maker), metadata=partner(shop, acting_for=dana)
    )
    assert introduced.context_partner_id == maker
    assert (await acts_for(maker)).relationship_id == introduced.relationship_id
    read = identity_pb2.GetRelationshipRequest(relationship_id=introduced.relationship_id)
    assert await identity.GetRelationship(read, metadata=partner(maker)) == introduced
    await refused(identity.GetRelationship(read, metadata=partner(shop)), grpc.StatusCode.NOT_FOUND)
    # Acting for Dana, the shop records in its own network or the other end's, no third partner's.
    await refused(
        identity.EstablishRelationship(
            establish(dana, network.r[1], "customer_of", context=network.r[2]), metadata=partner(shop, acting_for=dana)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )


async def test_get_relationship_of_a_private_relationship_is_not_found_for_a_partner_who_may_not_see_it(
    identity: Identity, network: Network
) -> None:
    private = network.customer_of[0].relationship_id
    seen = await identity.GetRelationship(
        identity_pb2.GetRelationshipRequest(relationship_id=private), metadata=partner(network.r[0])
    )
    assert seen == network.customer_of[0]
    await refused(
        identity.GetRelationship(
            identity_pb2.GetRelationshipRequest(relationship_id=private), metadata=partner(network.o)
        ),
        grpc.StatusCode.NOT_FOUND,
    )


# --- bad input -----------------------------------------------------------------------------------

BAD_RELATIONSHIPS = {
    "self": ("a self-relationship", "to_party_id"),
    "unknown-type": ("an unknown relationship type", "type"),
    "ends-before-it-starts": ("valid_to before valid_from", "valid_to"),
    "ends-as-it-starts": ("valid_to equal to valid_from", "valid_to"),
}


def bad_relationship(case: str, network: Network) -> identity_pb2.EstablishRelationshipRequest:
    start = datetime.now(UTC) - timedelta(days=1)
    if case == "self":
        return establish(network.c, network.c, "customer_of", context=network.r[0])
    if case == "unknown-type":
        return establish(network.c, network.o, "friend_of", context=network.o)
    if case == "ends-before-it-starts":
        return establish(
            network.c,
            network.o,
            "supplier_of",
            context=network.o,
            valid_from=start,
            valid_to=start - timedelta(hours=1),
        )
    assert case == "ends-as-it-starts"
    return establish(network.c, network.o, "supplier_of", context=network.o, valid_from=start, valid_to=start)


@pytest.mark.parametrize("case", sorted(BAD_RELATIONSHIPS))
async def test_a_bad_relationship_is_invalid_argument_naming_the_field_and_writes_nothing(
    identity: Identity, network: Network, events: EventLog, case: str
) -> None:
    before = {party: await relationship_ids(identity, party) for party in (network.c, network.o)}
    await events.drain(identity)
    error = await refused(
        identity.EstablishRelationship(bad_relationship(case, network), metadata=SERVICE),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == [BAD_RELATIONSHIPS[case][1]], BAD_RELATIONSHIPS[case][0]
    assert {party: await relationship_ids(identity, party) for party in (network.c, network.o)} == before
    assert await events.drain(identity) == []


async def test_a_self_relationship_is_invalid_argument_naming_to_party_id(identity: Identity, network: Network) -> None:
    error = await refused(
        identity.EstablishRelationship(establish(network.m, network.m, "partner_of"), metadata=partner(network.m)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == ["to_party_id"]


async def test_a_relationship_with_an_unknown_party_is_not_found_and_writes_nothing(
    identity: Identity, network: Network, events: EventLog
) -> None:
    before = await relationship_ids(identity, network.m)
    await events.drain(identity)
    await refused(
        identity.EstablishRelationship(establish("nobody", network.m, "supplier_of"), metadata=partner(network.m)),
        grpc.StatusCode.NOT_FOUND,
    )
    await refused(
        identity.EstablishRelationship(
            establish(network.c, network.m, "partner_of", context="no-such-partner"), metadata=SERVICE
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert await relationship_ids(identity, network.m) == before
    assert await events.drain(identity) == []


async def test_a_duplicate_current_relationship_of_the_same_type_is_already_exists_and_writes_nothing(
    identity: Identity, network: Network, events: EventLog
) -> None:
    before = await relationship_ids(identity, network.c)
    await events.drain(identity)
    error = await refused(
        identity.EstablishRelationship(
            establish(network.c, network.r[0], "customer_of"), metadata=partner(network.r[0])
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert network.customer_of[0].relationship_id in (error.details() or "")
    assert await relationship_ids(identity, network.c) == before
    assert await events.drain(identity) == []


async def test_a_relationship_overlapping_an_earlier_one_of_the_same_type_in_time_is_already_exists(
    identity: Identity, network: Network
) -> None:
    # The consumer was a customer since network.since; a second one starting before that overlaps.
    await refused(
        identity.EstablishRelationship(
            establish(
                network.c,
                network.r[0],
                "customer_of",
                valid_from=network.since - timedelta(days=10),
                valid_to=network.since + timedelta(days=1),
            ),
            metadata=partner(network.r[0]),
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )


async def test_another_type_between_the_same_parties_and_a_new_one_after_the_end_are_allowed(
    identity: Identity, network: Network
) -> None:
    retailer = network.r[0]
    advocate = await relate(identity, network.c, "advocate_of", retailer, by=partner(retailer))
    assert advocate.type == "advocate_of"
    await identity.EndRelationship(
        identity_pb2.EndRelationshipRequest(relationship_id=network.customer_of[0].relationship_id),
        metadata=partner(retailer),
    )
    again = await relate(identity, network.c, "customer_of", retailer, by=partner(retailer))
    current = await identity.ListRelationships(
        identity_pb2.ListRelationshipsRequest(party_id=network.c, types=["customer_of"]), metadata=SERVICE
    )
    assert again.relationship_id in {r.relationship_id for r in current.relationships}
    assert network.customer_of[0].relationship_id not in {r.relationship_id for r in current.relationships}


async def test_relationships_recorded_at_once_with_the_same_party_are_all_recorded(
    identity: Identity, network: Network
) -> None:
    customers = [await register_person(identity, f"Rush Customer {i}", by=partner(network.r[0])) for i in range(10)]
    recorded = await asyncio.gather(
        *(relate(identity, c.party_id, "customer_of", network.r[0], by=partner(network.r[0])) for c in customers)
    )
    assert await relationship_ids(identity, network.r[0]) == {
        network.customer_of[0].relationship_id,
        *(r.relationship_id for r in recorded),
    }


async def test_of_the_same_relationship_recorded_at_once_exactly_one_is_recorded_and_the_rest_already_exist(
    identity: Identity, network: Network
) -> None:
    customer = await register_person(identity, "Double Click", by=partner(network.r[0]))
    results = await asyncio.gather(
        *(relate(identity, customer.party_id, "customer_of", network.r[0], by=partner(network.r[0])) for _ in range(6)),
        return_exceptions=True,
    )
    recorded = [r for r in results if isinstance(r, identity_pb2.Relationship)]
    refusals = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(recorded) == 1
    assert [r.code() for r in refusals] == [grpc.StatusCode.ALREADY_EXISTS] * 5
    assert await relationship_ids(identity, customer.party_id) == {recorded[0].relationship_id}


# --- ending --------------------------------------------------------------------------------------


async def test_an_ended_relationship_keeps_its_history_with_its_end_and_reason(
    identity: Identity, network: Network
) -> None:
    subscription = network.customer_of[2]
    before = datetime.now(UTC)
    ended = await identity.EndRelationship(
        identity_pb2.EndRelationshipRequest(relationship_id=subscription.relationship_id, reason=" cancelled "),
        metadata=partner(network.r[2]),
    )
    assert ended.HasField("valid_to")
    assert at(ended.valid_to) >= before
    assert ended.end_reason == "cancelled"
    assert ended.valid_from == subscription.valid_from
    read = await identity.GetRelationship(
        identity_pb2.GetRelationshipRequest(relationship_id=subscription.relationship_id), metadata=SERVICE
    )
    assert read == ended


async def test_ending_an_ended_relationship_is_failed_precondition(identity: Identity, network: Network) -> None:
    request = identity_pb2.EndRelationshipRequest(relationship_id=network.employment.relationship_id)
    await identity.EndRelationship(request, metadata=partner(network.m))
    await refused(identity.EndRelationship(request, metadata=partner(network.m)), grpc.StatusCode.FAILED_PRECONDITION)


async def test_ending_before_the_relationship_began_is_invalid_argument_naming_valid_to(
    identity: Identity, network: Network
) -> None:
    request = identity_pb2.EndRelationshipRequest(
        relationship_id=network.employment.relationship_id, valid_to=stamp(network.since - timedelta(days=1))
    )
    error = await refused(
        identity.EndRelationship(request, metadata=partner(network.m)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert violated_fields(error) == ["valid_to"]
    assert network.employment.relationship_id in await relationship_ids(identity, network.m)


async def test_only_the_recording_network_or_an_end_may_end_a_relationship(
    identity: Identity, network: Network
) -> None:
    request = identity_pb2.EndRelationshipRequest(relationship_id=network.customer_of[0].relationship_id)
    await refused(identity.EndRelationship(request, metadata=partner(network.o)), grpc.StatusCode.PERMISSION_DENIED)
    assert network.customer_of[0].relationship_id in await relationship_ids(identity, network.c)
    ended = await identity.EndRelationship(request, metadata=partner(network.o, acting_for=network.c))
    assert ended.HasField("valid_to")


async def test_ending_an_unknown_relationship_is_not_found(identity: Identity) -> None:
    await refused(
        identity.EndRelationship(identity_pb2.EndRelationshipRequest(relationship_id="nothing"), metadata=SERVICE),
        grpc.StatusCode.NOT_FOUND,
    )


# --- listing -------------------------------------------------------------------------------------


async def test_list_relationships_filters_by_direction_and_type(identity: Identity, network: Network) -> None:
    def ids(response: identity_pb2.ListRelationshipsResponse) -> set[str]:
        return {r.relationship_id for r in response.relationships}

    def listing(direction: identity_pb2.Direction.ValueType, *types: str) -> identity_pb2.ListRelationshipsRequest:
        return identity_pb2.ListRelationshipsRequest(party_id=network.m, direction=direction, types=types)

    incoming = {
        network.consumer_supplies_maker.relationship_id,
        network.mill_supplies_maker.relationship_id,
        network.employment.relationship_id,
    }
    both = await identity.ListRelationships(listing(identity_pb2.DIRECTION_BOTH), metadata=SERVICE)
    assert ids(both) == incoming
    unspecified = await identity.ListRelationships(listing(identity_pb2.DIRECTION_UNSPECIFIED), metadata=SERVICE)
    assert ids(unspecified) == incoming
    assert ids(await identity.ListRelationships(listing(identity_pb2.DIRECTION_INCOMING), metadata=SERVICE)) == incoming
    assert ids(await identity.ListRelationships(listing(identity_pb2.DIRECTION_OUTGOING), metadata=SERVICE)) == set()
    suppliers = await identity.ListRelationships(listing(identity_pb2.DIRECTION_BOTH, "supplier_of"), metadata=SERVICE)
    assert ids(suppliers) == incoming - {network.employment.relationship_id}

    outgoing = await identity.ListRelationships(
        identity_pb2.ListRelationshipsRequest(party_id=network.s, direction=identity_pb2.DIRECTION_OUTGOING),
        metadata=SERVICE,
    )
    assert [r.relationship_id for r in outgoing.relationships] == [network.mill_supplies_maker.relationship_id]


async def test_list_relationships_pages_through_every_relationship_once(identity: Identity, network: Network) -> None:
    # Recorded at different times, so the pages cross different valid_from values.
    for day in (1, 2, 3):
        other = await register_person(identity, f"Friend {day}", by=partner(network.m))
        await relate(
            identity,
            network.c,
            "partner_of",
            other.party_id,
            by=partner(network.m, acting_for=network.c),
            since=network.since + timedelta(days=day),
        )
    everything = await relationship_ids(identity, network.c)
    assert len(everything) == 7

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await identity.ListRelationships(
            identity_pb2.ListRelationshipsRequest(party_id=network.c, page_size=2, page_token=token), metadata=SERVICE
        )
        assert len(page.relationships) <= 2
        seen += [r.relationship_id for r in page.relationships]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 4
    assert len(seen) == len(everything)
    assert set(seen) == everything


@pytest.mark.parametrize("page_size", [-1, 501])
async def test_a_page_size_out_of_range_is_invalid_argument_naming_page_size(
    identity: Identity, network: Network, page_size: int
) -> None:
    error = await refused(
        identity.ListRelationships(
            identity_pb2.ListRelationshipsRequest(party_id=network.c, page_size=page_size), metadata=SERVICE
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == ["page_size"]


async def test_listing_by_an_unknown_type_is_invalid_argument_naming_types(
    identity: Identity, network: Network
) -> None:
    error = await refused(
        identity.ListRelationships(
            identity_pb2.ListRelationshipsRequest(party_id=network.c, types=["friend_of"]), metadata=SERVICE
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == ["types"]


# --- roles ---------------------------------------------------------------------------------------


def roles_by_partner(response: identity_pb2.RolesOfResponse) -> dict[str, list[tuple[str, str, dict[str, str]]]]:
    return {
        p.partner.partner_id: [(r.role, r.relationship_id, dict(r.attributes)) for r in p.roles]
        for p in response.partners
    }


async def test_roles_of_the_consumer_shows_three_retailers_with_their_customer_types_and_the_manufacturer(
    identity: Identity, network: Network
) -> None:
    response = await identity.RolesOf(identity_pb2.RolesOfRequest(party_id=network.c), metadata=SERVICE)
    expected = {
        retailer: [("customer_of", relationship.relationship_id, {"customer_type": customer_type})]
        for retailer, relationship, customer_type in zip(network.r, network.customer_of, CUSTOMER_TYPES, strict=True)
    }
    expected[network.m] = [("supplier_of", network.consumer_supplies_maker.relationship_id, {})]
    assert roles_by_partner(response) == expected
    assert [p.partner.display_name for p in response.partners] == [
        "Maker",
        "Retailer One",
        "Retailer Three",
        "Retailer Two",
    ]
    maker = next(p.partner for p in response.partners if p.partner.partner_id == network.m)
    assert list(maker.kinds) == [identity_pb2.PARTNER_KIND_MANUFACTURER]
    assert list(maker.capabilities) == ["assemble"]


async def test_roles_of_a_partner_lists_only_partners_at_the_other_end_read_from_its_side(
    identity: Identity, network: Network
) -> None:
    maker = await identity.RolesOf(identity_pb2.RolesOfRequest(party_id=network.m), metadata=SERVICE)
    # The consumer and the employee relate to M too, but are not partners.
    assert roles_by_partner(maker) == {network.s: [("supplied_by", network.mill_supplies_maker.relationship_id, {})]}
    mill = await identity.RolesOf(identity_pb2.RolesOfRequest(party_id=network.s), metadata=SERVICE)
    assert roles_by_partner(mill) == {
        network.m: [("supplier_of", network.mill_supplies_maker.relationship_id, {})],
        network.o: [("supplied_by", network.ore_supplies_mill.relationship_id, {})],
    }
    retailer = await identity.RolesOf(identity_pb2.RolesOfRequest(party_id=network.r[0]), metadata=SERVICE)
    assert roles_by_partner(retailer) == {}


async def test_roles_of_a_party_with_no_relationships_is_empty(identity: Identity) -> None:
    loner = await register_person(identity, "Lonely")
    response = await identity.RolesOf(identity_pb2.RolesOfRequest(party_id=loner.party_id), metadata=SERVICE)
    assert list(response.partners) == []


async def test_roles_of_shows_a_partner_only_the_private_roles_it_may_see(identity: Identity, network: Network) -> None:
    response = await identity.RolesOf(identity_pb2.RolesOfRequest(party_id=network.c), metadata=partner(network.r[0]))
    assert roles_by_partner(response) == {
        network.r[0]: [("customer_of", network.customer_of[0].relationship_id, {"customer_type": "retail"})],
        network.m: [("supplier_of", network.consumer_supplies_maker.relationship_id, {})],
    }


# --- time ----------------------------------------------------------------------------------------


async def test_an_ended_relationship_leaves_current_queries_but_stays_in_queries_as_of_before_its_end(
    identity: Identity, network: Network
) -> None:
    subscription = network.customer_of[2]
    r3 = network.r[2]
    await identity.EndRelationship(
        identity_pb2.EndRelationshipRequest(relationship_id=subscription.relationship_id, reason="cancelled"),
        metadata=partner(r3),
    )
    earlier = stamp(datetime.now(UTC) - timedelta(days=1))

    listed = await identity.ListRelationships(
        identity_pb2.ListRelationshipsRequest(party_id=network.c), metadata=SERVICE
    )
    assert subscription.relationship_id not in {r.relationship_id for r in listed.relationships}
    assert len(listed.relationships) == 3
    listed_then = await identity.ListRelationships(
        identity_pb2.ListRelationshipsRequest(party_id=network.c, as_of=earlier), metadata=SERVICE
    )
    assert subscription.relationship_id in {r.relationship_id for r in listed_then.relationships}
    assert len(listed_then.relationships) == 4

    roles = await identity.RolesOf(identity_pb2.RolesOfRequest(party_id=network.c), metadata=SERVICE)
    assert r3 not in roles_by_partner(roles)
    roles_then = await identity.RolesOf(
        identity_pb2.RolesOfRequest(party_id=network.c, as_of=earlier), metadata=SERVICE
    )
    assert roles_by_partner(roles_then)[r3] == [
        ("customer_of", subscription.relationship_id, {"customer_type": "subscription"})
    ]

    paths = await identity.FindPaths(
        identity_pb2.FindPathsRequest(from_party_id=network.c, to_party_id=r3), metadata=SERVICE
    )
    assert list(paths.paths) == []
    paths_then = await identity.FindPaths(
        identity_pb2.FindPathsRequest(from_party_id=network.c, to_party_id=r3, as_of=earlier), metadata=SERVICE
    )
    assert [[(s.from_party_id, s.type, s.to_party_id) for s in p.steps] for p in paths_then.paths] == [
        [(network.c, "customer_of", r3)]
    ]

    around = await identity.Neighborhood(identity_pb2.NeighborhoodRequest(party_id=network.c), metadata=SERVICE)
    assert r3 not in {n.party.party_id for n in around.parties}
    assert subscription.relationship_id not in {r.relationship_id for r in around.relationships}
    around_then = await identity.Neighborhood(
        identity_pb2.NeighborhoodRequest(party_id=network.c, as_of=earlier), metadata=SERVICE
    )
    assert r3 in {n.party.party_id for n in around_then.parties}
    assert subscription.relationship_id in {r.relationship_id for r in around_then.relationships}

    decision = await identity.ActsFor(identity_pb2.ActsForRequest(partner_id=r3, party_id=network.c), metadata=SERVICE)
    assert not decision.allowed
    assert decision.reason


async def test_a_relationship_is_absent_from_queries_as_of_before_it_began(
    identity: Identity, network: Network
) -> None:
    before_it_all = stamp(network.since - timedelta(days=1))
    listed = await identity.ListRelationships(
        identity_pb2.ListRelationshipsRequest(party_id=network.c, as_of=before_it_all), metadata=SERVICE
    )
    assert list(listed.relationships) == []
    roles = await identity.RolesOf(
        identity_pb2.RolesOfRequest(party_id=network.c, as_of=before_it_all), metadata=SERVICE
    )
    assert list(roles.partners) == []


async def test_a_relationship_recorded_with_an_end_in_the_future_is_current_until_then(
    identity: Identity, network: Network
) -> None:
    now = datetime.now(UTC)
    seasonal = await identity.EstablishRelationship(
        establish(
            network.o, network.m, "supplier_of", valid_from=now - timedelta(days=1), valid_to=now + timedelta(days=10)
        ),
        metadata=partner(network.o),
    )
    assert seasonal.relationship_id in await relationship_ids(identity, network.m)
    later = await identity.ListRelationships(
        identity_pb2.ListRelationshipsRequest(party_id=network.m, as_of=stamp(now + timedelta(days=11))),
        metadata=SERVICE,
    )
    assert seasonal.relationship_id not in {r.relationship_id for r in later.relationships}


# --- relationship types --------------------------------------------------------------------------


async def test_the_seeded_relationship_types_are_listed_with_inverse_names_and_visibility(identity: Identity) -> None:
    listed = await identity.ListRelationshipTypes(identity_pb2.ListRelationshipTypesRequest(), metadata=SERVICE)
    types = {t.name: (t.inverse_name, t.public) for t in listed.relationship_types}
    assert types["supplier_of"] == ("supplied_by", True)
    assert types["customer_of"] == ("serves", False)
    assert types["employee_of"] == ("employs", False)
    assert types["partner_of"] == ("partner_of", True)
    assert set(types) >= {"member_of", "carrier_for", "distributor_for", "advocate_of"}


async def test_a_created_relationship_type_is_listed_and_usable_at_once(identity: Identity, network: Network) -> None:
    created = await identity.CreateRelationshipType(
        identity_pb2.CreateRelationshipTypeRequest(
            relationship_type=identity_pb2.RelationshipType(
                name="franchisee_of", inverse_name="franchises", description=" runs a franchise of ", public=True
            )
        ),
        metadata=partner(network.m),
    )
    assert created == identity_pb2.RelationshipType(
        name="franchisee_of", inverse_name="franchises", description="runs a franchise of", public=True
    )
    listed = await identity.ListRelationshipTypes(identity_pb2.ListRelationshipTypesRequest(), metadata=SERVICE)
    assert created in listed.relationship_types

    franchise = await relate(identity, network.r[0], "franchisee_of", network.m, by=partner(network.m))
    roles = await identity.RolesOf(identity_pb2.RolesOfRequest(party_id=network.m), metadata=SERVICE)
    assert roles_by_partner(roles)[network.r[0]] == [("franchises", franchise.relationship_id, {})]


async def test_a_relationship_type_reusing_a_name_is_invalid_argument_naming_it(identity: Identity) -> None:
    error = await refused(
        identity.CreateRelationshipType(
            identity_pb2.CreateRelationshipTypeRequest(
                relationship_type=identity_pb2.RelationshipType(name="supplied_by", inverse_name="supplies_to")
            ),
            metadata=SERVICE,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == ["relationship_type.name"]


async def test_creating_a_relationship_type_needs_the_network_admin_scope(identity: Identity, network: Network) -> None:
    await refused(
        identity.CreateRelationshipType(
            identity_pb2.CreateRelationshipTypeRequest(relationship_type=identity_pb2.RelationshipType(name="likes")),
            metadata=partner(network.m, scopes=frozenset({"reviews:write"})),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    listed = await identity.ListRelationshipTypes(identity_pb2.ListRelationshipTypesRequest(), metadata=SERVICE)
    assert "likes" not in {t.name for t in listed.relationship_types}
