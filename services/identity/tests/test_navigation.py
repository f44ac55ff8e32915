"""Graph navigation through the real gRPC server: paths, neighborhoods, who can serve, affiliations."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import pytest
from identity_testing import (
    SERVICE,
    Identity,
    Network,
    partner,
    refused,
    register_person,
    relate,
    violated_fields,
)

from collabnet.identity.v1 import identity_pb2

Step = tuple[str, str, str, str]


def walks(response: identity_pb2.FindPathsResponse) -> list[list[Step]]:
    """Each path as (from, type, to, relationship id) steps."""
    return [[(s.from_party_id, s.type, s.to_party_id, s.relationship_id) for s in p.steps] for p in response.paths]


def consumer_to_ore(network: Network) -> list[Step]:
    return [
        (network.c, "supplier_of", network.m, network.consumer_supplies_maker.relationship_id),
        (network.m, "supplied_by", network.s, network.mill_supplies_maker.relationship_id),
        (network.s, "supplied_by", network.o, network.ore_supplies_mill.relationship_id),
    ]


# --- FindPaths -----------------------------------------------------------------------------------


async def test_find_paths_walks_from_the_consumer_through_the_maker_and_the_mill_to_the_ore_supplier(
    identity: Identity, network: Network
) -> None:
    found = await identity.FindPaths(
        identity_pb2.FindPathsRequest(from_party_id=network.c, to_party_id=network.o), metadata=SERVICE
    )
    assert walks(found) == [consumer_to_ore(network)]


async def test_find_paths_reads_each_step_in_the_walking_direction_both_ways(
    identity: Identity, network: Network
) -> None:
    found = await identity.FindPaths(
        identity_pb2.FindPathsRequest(from_party_id=network.o, to_party_id=network.c), metadata=SERVICE
    )
    assert walks(found) == [
        [
            (network.o, "supplier_of", network.s, network.ore_supplies_mill.relationship_id),
            (network.s, "supplier_of", network.m, network.mill_supplies_maker.relationship_id),
            (network.m, "supplied_by", network.c, network.consumer_supplies_maker.relationship_id),
        ]
    ]


async def test_a_path_needing_more_hops_than_max_depth_is_not_returned(identity: Identity, network: Network) -> None:
    def request(max_depth: int) -> identity_pb2.FindPathsRequest:
        return identity_pb2.FindPathsRequest(from_party_id=network.c, to_party_id=network.o, max_depth=max_depth)

    assert walks(await identity.FindPaths(request(2), metadata=SERVICE)) == []
    assert walks(await identity.FindPaths(request(3), metadata=SERVICE)) == [consumer_to_ore(network)]
    assert walks(await identity.FindPaths(request(6), metadata=SERVICE)) == [consumer_to_ore(network)]


async def test_find_paths_returns_at_most_k_paths_shortest_first(identity: Identity, network: Network) -> None:
    # The ore supplier also supplies the maker directly: a two-hop path besides the three-hop one.
    direct = await relate(identity, network.o, "supplier_of", network.m, by=partner(network.o))
    shorter = [
        (network.c, "supplier_of", network.m, network.consumer_supplies_maker.relationship_id),
        (network.m, "supplied_by", network.o, direct.relationship_id),
    ]

    def request(k: int, max_depth: int = 0) -> identity_pb2.FindPathsRequest:
        return identity_pb2.FindPathsRequest(from_party_id=network.c, to_party_id=network.o, k=k, max_depth=max_depth)

    assert walks(await identity.FindPaths(request(1), metadata=SERVICE)) == [shorter]
    assert walks(await identity.FindPaths(request(2), metadata=SERVICE)) == [shorter, consumer_to_ore(network)]
    assert walks(await identity.FindPaths(request(10), metadata=SERVICE)) == [shorter, consumer_to_ore(network)]
    assert walks(await identity.FindPaths(request(10, max_depth=2), metadata=SERVICE)) == [shorter]


async def test_find_paths_follows_only_the_types_asked_for(identity: Identity, network: Network) -> None:
    only_customers = await identity.FindPaths(
        identity_pb2.FindPathsRequest(from_party_id=network.c, to_party_id=network.o, types=["customer_of"]),
        metadata=SERVICE,
    )
    assert walks(only_customers) == []
    between_retailers = await identity.FindPaths(
        identity_pb2.FindPathsRequest(from_party_id=network.r[0], to_party_id=network.r[1], types=["customer_of"]),
        metadata=SERVICE,
    )
    assert walks(between_retailers) == [
        [
            (network.r[0], "serves", network.c, network.customer_of[0].relationship_id),
            (network.c, "customer_of", network.r[1], network.customer_of[1].relationship_id),
        ]
    ]


async def test_find_paths_from_a_party_to_itself_is_one_empty_path(identity: Identity, network: Network) -> None:
    found = await identity.FindPaths(
        identity_pb2.FindPathsRequest(from_party_id=network.c, to_party_id=network.c), metadata=SERVICE
    )
    assert walks(found) == [[]]


@pytest.mark.parametrize(
    ("field", "value"),
    [("k", 11), ("k", -1), ("max_depth", 7), ("max_depth", -1)],
    ids=["k-11", "k-negative", "max_depth-7", "max_depth-negative"],
)
async def test_find_paths_out_of_range_is_invalid_argument_naming_the_field(
    identity: Identity, network: Network, field: str, value: int
) -> None:
    request = identity_pb2.FindPathsRequest(from_party_id=network.c, to_party_id=network.o)
    setattr(request, field, value)
    error = await refused(identity.FindPaths(request, metadata=SERVICE), grpc.StatusCode.INVALID_ARGUMENT)
    assert violated_fields(error) == [field]


async def test_find_paths_with_an_unknown_type_is_invalid_argument_naming_types(
    identity: Identity, network: Network
) -> None:
    error = await refused(
        identity.FindPaths(
            identity_pb2.FindPathsRequest(from_party_id=network.c, to_party_id=network.o, types=["friend_of"]),
            metadata=SERVICE,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == ["types"]


# --- Neighborhood --------------------------------------------------------------------------------


def distances(response: identity_pb2.NeighborhoodResponse) -> dict[str, int]:
    return {n.party.party_id: n.distance for n in response.parties}


async def test_the_neighborhood_at_depth_one_is_the_consumers_partners_and_the_relationships_among_them(
    identity: Identity, network: Network
) -> None:
    response = await identity.Neighborhood(
        identity_pb2.NeighborhoodRequest(party_id=network.c, depth=1), metadata=SERVICE
    )
    assert distances(response) == {network.c: 0, **dict.fromkeys(network.r, 1), network.m: 1}
    assert response.parties[0].party.party_id == network.c
    assert [n.distance for n in response.parties] == sorted(n.distance for n in response.parties)
    assert {r.relationship_id for r in response.relationships} == {
        *(r.relationship_id for r in network.customer_of),
        network.consumer_supplies_maker.relationship_id,
    }
    assert not response.truncated
    by_id = {n.party.party_id: n.party for n in response.parties}
    assert by_id[network.m].partner
    assert not by_id[network.c].partner
    assert not by_id[network.c].HasField("email")


async def test_the_neighborhood_at_depth_two_reaches_the_mill_and_the_employee(
    identity: Identity, network: Network
) -> None:
    response = await identity.Neighborhood(
        identity_pb2.NeighborhoodRequest(party_id=network.c, depth=2), metadata=SERVICE
    )
    assert distances(response) == {
        network.c: 0,
        **dict.fromkeys(network.r, 1),
        network.m: 1,
        network.s: 2,
        network.e: 2,
    }
    assert {r.relationship_id for r in response.relationships} == {
        *(r.relationship_id for r in network.customer_of),
        network.consumer_supplies_maker.relationship_id,
        network.mill_supplies_maker.relationship_id,
        network.employment.relationship_id,
    }
    assert not response.truncated


async def test_the_neighborhood_at_depth_three_reaches_the_whole_network(identity: Identity, network: Network) -> None:
    response = await identity.Neighborhood(
        identity_pb2.NeighborhoodRequest(party_id=network.c, depth=3), metadata=SERVICE
    )
    assert distances(response)[network.o] == 3
    assert distances(response)[network.x] == 3
    assert len(response.parties) == 9
    assert {r.relationship_id for r in response.relationships} == {r.relationship_id for r in network.relationships}
    assert not response.truncated


async def test_the_neighborhood_is_truncated_when_max_parties_is_smaller_than_it(
    identity: Identity, network: Network
) -> None:
    response = await identity.Neighborhood(
        identity_pb2.NeighborhoodRequest(party_id=network.c, depth=2, max_parties=3), metadata=SERVICE
    )
    assert response.truncated
    assert len(response.parties) == 3
    assert response.parties[0].party.party_id == network.c
    assert response.parties[0].distance == 0
    assert {n.distance for n in response.parties[1:]} == {1}
    returned = set(distances(response))
    for relationship in response.relationships:
        assert {relationship.from_party_id, relationship.to_party_id} <= returned


@pytest.mark.parametrize("depth", [1, 2, 3])
async def test_a_neighborhood_that_fits_max_parties_exactly_is_complete_and_not_truncated(
    identity: Identity, network: Network, depth: int
) -> None:
    whole = await identity.Neighborhood(
        identity_pb2.NeighborhoodRequest(party_id=network.c, depth=depth), metadata=SERVICE
    )
    exact = await identity.Neighborhood(
        identity_pb2.NeighborhoodRequest(party_id=network.c, depth=depth, max_parties=len(whole.parties)),
        metadata=SERVICE,
    )
    assert distances(exact) == distances(whole)
    assert {r.relationship_id for r in exact.relationships} == {r.relationship_id for r in whole.relationships}
    assert not exact.truncated


async def test_a_neighborhood_whose_last_hop_leads_back_to_known_parties_is_not_truncated(
    identity: Identity, network: Network
) -> None:
    # From the ore supplier: the mill, then the maker, then the consumer and the employee. At the last
    # hop the maker has three relationships but only two lead to parties not reached yet.
    response = await identity.Neighborhood(
        identity_pb2.NeighborhoodRequest(party_id=network.o, depth=3, max_parties=5), metadata=SERVICE
    )
    assert distances(response) == {network.o: 0, network.s: 1, network.m: 2, network.c: 3, network.e: 3}
    assert not response.truncated


async def test_the_neighborhood_follows_only_the_types_asked_for(identity: Identity, network: Network) -> None:
    response = await identity.Neighborhood(
        identity_pb2.NeighborhoodRequest(party_id=network.c, depth=3, types=["supplier_of"]), metadata=SERVICE
    )
    assert distances(response) == {network.c: 0, network.m: 1, network.s: 2, network.o: 3}


@pytest.mark.parametrize(("field", "value"), [("depth", 4), ("depth", -1), ("max_parties", 2001)])
async def test_a_neighborhood_out_of_range_is_invalid_argument_naming_the_field(
    identity: Identity, network: Network, field: str, value: int
) -> None:
    request = identity_pb2.NeighborhoodRequest(party_id=network.c)
    setattr(request, field, value)
    error = await refused(identity.Neighborhood(request, metadata=SERVICE), grpc.StatusCode.INVALID_ARGUMENT)
    assert violated_fields(error) == [field]


# --- WhoCanServe ---------------------------------------------------------------------------------


async def declare(identity: Identity, partner_id: str, capability: str) -> None:
    await identity.DeclareCapability(
        identity_pb2.DeclareCapabilityRequest(partner_id=partner_id, capability=capability), metadata=SERVICE
    )


async def test_who_can_serve_finds_the_partners_declaring_a_capability_nearest_first_within_max_hops(
    identity: Identity, network: Network
) -> None:
    for capable in (network.o, network.s, network.r[1]):
        await declare(identity, capable, "repair")

    def request(max_hops: int = 0) -> identity_pb2.WhoCanServeRequest:
        return identity_pb2.WhoCanServeRequest(party_id=network.c, capability="repair", max_hops=max_hops)

    def served(response: identity_pb2.WhoCanServeResponse) -> list[tuple[str, int]]:
        return [(p.partner.partner_id, p.hops) for p in response.partners]

    everyone = await identity.WhoCanServe(request(), metadata=SERVICE)
    assert served(everyone) == [(network.r[1], 1), (network.s, 2), (network.o, 3)]
    assert "repair" in everyone.partners[0].partner.capabilities
    assert served(await identity.WhoCanServe(request(2), metadata=SERVICE)) == [(network.r[1], 1), (network.s, 2)]
    assert served(await identity.WhoCanServe(request(1), metadata=SERVICE)) == [(network.r[1], 1)]
    limited = await identity.WhoCanServe(
        identity_pb2.WhoCanServeRequest(party_id=network.c, capability="repair", limit=2), metadata=SERVICE
    )
    assert served(limited) == [(network.r[1], 1), (network.s, 2)]
    nobody = await identity.WhoCanServe(
        identity_pb2.WhoCanServeRequest(party_id=network.c, capability="ship:eu"), metadata=SERVICE
    )
    assert served(nobody) == []


async def test_who_can_serve_finds_a_capability_declared_when_joining(identity: Identity, network: Network) -> None:
    response = await identity.WhoCanServe(
        identity_pb2.WhoCanServeRequest(party_id=network.e, capability="assemble"), metadata=SERVICE
    )
    assert [(p.partner.partner_id, p.hops) for p in response.partners] == [(network.m, 1)]


@pytest.mark.parametrize("max_hops", [5, -1])
async def test_who_can_serve_with_max_hops_out_of_range_is_invalid_argument_naming_max_hops(
    identity: Identity, network: Network, max_hops: int
) -> None:
    error = await refused(
        identity.WhoCanServe(
            identity_pb2.WhoCanServeRequest(party_id=network.c, capability="repair", max_hops=max_hops),
            metadata=SERVICE,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == ["max_hops"]


# --- Affiliations --------------------------------------------------------------------------------


def affiliated(response: identity_pb2.AffiliationsResponse) -> list[tuple[str, str]]:
    return [(a.relationship.relationship_id, a.via_party_id) for a in response.affiliations]


async def test_an_employee_is_affiliated_with_the_maker_through_the_employee_of_relationship(
    identity: Identity, network: Network
) -> None:
    response = await identity.Affiliations(
        identity_pb2.AffiliationsRequest(party_id=network.e, partner_id=network.m), metadata=SERVICE
    )
    assert affiliated(response) == [(network.employment.relationship_id, "")]
    assert response.affiliations[0].relationship.type == "employee_of"


async def test_a_partner_of_an_employee_is_affiliated_with_the_maker_via_the_employee(
    identity: Identity, network: Network
) -> None:
    response = await identity.Affiliations(
        identity_pb2.AffiliationsRequest(party_id=network.x, partner_id=network.m), metadata=SERVICE
    )
    assert affiliated(response) == [(network.partnership.relationship_id, network.e)]
    assert response.affiliations[0].relationship.type == "partner_of"


async def test_a_supplier_is_affiliated_with_the_maker_it_supplies_and_an_unrelated_party_with_nothing(
    identity: Identity, network: Network
) -> None:
    supplier = await identity.Affiliations(
        identity_pb2.AffiliationsRequest(party_id=network.c, partner_id=network.m), metadata=SERVICE
    )
    assert affiliated(supplier) == [(network.consumer_supplies_maker.relationship_id, "")]
    stranger = await register_person(identity, "Stranger")
    nothing = await identity.Affiliations(
        identity_pb2.AffiliationsRequest(party_id=stranger.party_id, partner_id=network.m), metadata=SERVICE
    )
    assert affiliated(nothing) == []


async def test_affiliations_end_with_the_employment(identity: Identity, network: Network) -> None:
    await identity.EndRelationship(
        identity_pb2.EndRelationshipRequest(relationship_id=network.employment.relationship_id, reason="left"),
        metadata=partner(network.m),
    )
    for party in (network.e, network.x):
        response = await identity.Affiliations(
            identity_pb2.AffiliationsRequest(party_id=party, partner_id=network.m), metadata=SERVICE
        )
        assert affiliated(response) == []


async def test_affiliations_hide_private_relationships_from_a_partner_who_may_not_see_them(
    identity: Identity, network: Network
) -> None:
    seen_by_maker = await identity.Affiliations(
        identity_pb2.AffiliationsRequest(party_id=network.e, partner_id=network.m), metadata=partner(network.m)
    )
    assert affiliated(seen_by_maker) == [(network.employment.relationship_id, "")]
    seen_by_stranger = await identity.Affiliations(
        identity_pb2.AffiliationsRequest(party_id=network.e, partner_id=network.m), metadata=partner(network.o)
    )
    assert affiliated(seen_by_stranger) == []


# --- unknown parties -----------------------------------------------------------------------------

UNKNOWN = "00000000-0000-0000-0000-000000000000"
Call = Callable[[Identity, Network], Awaitable[object]]

UNKNOWN_PARTY_CALLS: dict[str, Call] = {
    "GetParty": lambda i, n: i.GetParty(identity_pb2.GetPartyRequest(party_id=UNKNOWN), metadata=SERVICE),
    "EstablishRelationship": lambda i, n: i.EstablishRelationship(
        identity_pb2.EstablishRelationshipRequest(
            from_party_id=n.c, to_party_id=UNKNOWN, type="customer_of", context_partner_id=n.m
        ),
        metadata=SERVICE,
    ),
    "ListRelationships": lambda i, n: i.ListRelationships(
        identity_pb2.ListRelationshipsRequest(party_id=UNKNOWN), metadata=SERVICE
    ),
    "RolesOf": lambda i, n: i.RolesOf(identity_pb2.RolesOfRequest(party_id=UNKNOWN), metadata=SERVICE),
    "Neighborhood": lambda i, n: i.Neighborhood(identity_pb2.NeighborhoodRequest(party_id=UNKNOWN), metadata=SERVICE),
    "FindPaths-from": lambda i, n: i.FindPaths(
        identity_pb2.FindPathsRequest(from_party_id=UNKNOWN, to_party_id=n.o), metadata=SERVICE
    ),
    "FindPaths-to": lambda i, n: i.FindPaths(
        identity_pb2.FindPathsRequest(from_party_id=n.c, to_party_id=UNKNOWN), metadata=SERVICE
    ),
    "WhoCanServe": lambda i, n: i.WhoCanServe(
        identity_pb2.WhoCanServeRequest(party_id=UNKNOWN, capability="repair"), metadata=SERVICE
    ),
    "Affiliations-party": lambda i, n: i.Affiliations(
        identity_pb2.AffiliationsRequest(party_id=UNKNOWN, partner_id=n.m), metadata=SERVICE
    ),
    "Affiliations-partner": lambda i, n: i.Affiliations(
        identity_pb2.AffiliationsRequest(party_id=n.e, partner_id=UNKNOWN), metadata=SERVICE
    ),
    "GrantConsent": lambda i, n: i.GrantConsent(
        identity_pb2.GrantConsentRequest(party_id=UNKNOWN, partner_id=n.m, purpose="analytics", source="form"),
        metadata=SERVICE,
    ),
    "CheckConsent": lambda i, n: i.CheckConsent(
        identity_pb2.CheckConsentRequest(party_id=UNKNOWN, partner_id=n.m, purpose="analytics"), metadata=SERVICE
    ),
    "ListConsents": lambda i, n: i.ListConsents(identity_pb2.ListConsentsRequest(party_id=UNKNOWN), metadata=SERVICE),
    "ActsFor-party": lambda i, n: i.ActsFor(
        identity_pb2.ActsForRequest(partner_id=n.m, party_id=UNKNOWN), metadata=SERVICE
    ),
    "ActsFor-partner": lambda i, n: i.ActsFor(
        identity_pb2.ActsForRequest(partner_id=UNKNOWN, party_id=n.c), metadata=SERVICE
    ),
    "Check": lambda i, n: i.Check(
        identity_pb2.CheckRequest(action="party.read_contact", resource=f"party/{UNKNOWN}"), metadata=SERVICE
    ),
}


@pytest.mark.parametrize("call", sorted(UNKNOWN_PARTY_CALLS))
async def test_an_unknown_party_or_partner_is_not_found(identity: Identity, network: Network, call: str) -> None:
    error = await refused(UNKNOWN_PARTY_CALLS[call](identity, network), grpc.StatusCode.NOT_FOUND)
    assert UNKNOWN in (error.details() or "")
