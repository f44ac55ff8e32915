"""Who may do what, through the real gRPC server: principals, ActsFor, Check and visibility."""

from __future__ import annotations

import grpc
import pytest
from identity_testing import SERVICE, Identity, Metadata, Network, as_principal, partner, refused, violated_fields

from collabnet.identity.v1 import identity_pb2
from collabnet_identity import domain
from collabnet_kit.principal import Principal

OTHER_KEY = "a-different-signing-key-that-is-long-enough-0123456789"


# --- principals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "principal",
    [Principal(service="tests"), Principal(partner_id="someone", scopes=frozenset({"network:admin"}))],
    ids=["service", "partner"],
)
async def test_a_token_signed_with_another_key_is_unauthenticated(
    identity: Identity, network: Network, principal: Principal
) -> None:
    forged = as_principal(principal, key=OTHER_KEY)
    error = await refused(
        identity.GetParty(identity_pb2.GetPartyRequest(party_id=network.c), metadata=forged),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert "Signature verification failed" in (error.details() or "")
    await refused(
        identity.JoinNetwork(
            identity_pb2.JoinNetworkRequest(display_name="Forged", kinds=[identity_pb2.PARTNER_KIND_RETAILER]),
            metadata=forged,
        ),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    listed = await identity.ListPartners(identity_pb2.ListPartnersRequest(), metadata=SERVICE)
    assert "Forged" not in {p.display_name for p in listed.partners}


async def test_a_call_without_a_token_is_unauthenticated(identity: Identity, network: Network) -> None:
    await refused(identity.GetParty(identity_pb2.GetPartyRequest(party_id=network.c)), grpc.StatusCode.UNAUTHENTICATED)


# --- ActsFor -------------------------------------------------------------------------------------


async def acts_for(identity: Identity, partner_id: str, party_id: str) -> identity_pb2.Decision:
    return await identity.ActsFor(
        identity_pb2.ActsForRequest(partner_id=partner_id, party_id=party_id), metadata=SERVICE
    )


async def test_a_retailer_acts_for_its_customer_on_the_strength_of_the_relationship(
    identity: Identity, network: Network
) -> None:
    for retailer, relationship in zip(network.r, network.customer_of, strict=True):
        decision = await acts_for(identity, retailer, network.c)
        assert decision.allowed
        assert decision.relationship_id == relationship.relationship_id
        assert decision.reason == f"{network.c} is customer_of {retailer}"


async def test_a_maker_acts_for_its_supplier_and_its_employee(identity: Identity, network: Network) -> None:
    supplier = await acts_for(identity, network.m, network.c)
    assert supplier.allowed
    assert supplier.relationship_id == network.consumer_supplies_maker.relationship_id
    employee = await acts_for(identity, network.m, network.e)
    assert employee.allowed
    assert employee.relationship_id == network.employment.relationship_id
    assert employee.reason == f"{network.e} is employee_of {network.m}"


async def test_a_partner_the_party_has_no_relationship_with_may_not_act_for_it(
    identity: Identity, network: Network
) -> None:
    decision = await acts_for(identity, network.o, network.c)
    assert not decision.allowed
    assert decision.relationship_id == ""
    assert decision.reason == f"{network.c} has no current relationship with {network.o}: {domain.ACTS_FOR_NOTE}"


async def test_a_partner_may_no_longer_act_for_a_party_once_their_relationship_ended(
    identity: Identity, network: Network
) -> None:
    await identity.EndRelationship(
        identity_pb2.EndRelationshipRequest(relationship_id=network.customer_of[1].relationship_id, reason="closed"),
        metadata=partner(network.r[1]),
    )
    decision = await acts_for(identity, network.r[1], network.c)
    assert not decision.allowed
    assert network.c in decision.reason
    assert decision.relationship_id == ""


async def test_a_partner_acts_for_itself(identity: Identity, network: Network) -> None:
    decision = await acts_for(identity, network.m, network.m)
    assert decision.allowed
    assert decision.reason == "a partner acts for itself"


async def test_a_partner_may_not_ask_whom_another_partner_acts_for(identity: Identity, network: Network) -> None:
    retailer, relationship = network.r[0], network.customer_of[0]
    own = await identity.ActsFor(
        identity_pb2.ActsForRequest(partner_id=retailer, party_id=network.c), metadata=partner(retailer)
    )
    assert (own.allowed, own.relationship_id) == (True, relationship.relationship_id)
    error = await refused(
        identity.ActsFor(
            identity_pb2.ActsForRequest(partner_id=retailer, party_id=network.c), metadata=partner(network.o)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert relationship.relationship_id not in (error.details() or "")


async def test_acts_for_a_party_that_is_not_a_partner_is_not_found(identity: Identity, network: Network) -> None:
    await refused(acts_for(identity, network.e, network.c), grpc.StatusCode.NOT_FOUND)


# --- Check ---------------------------------------------------------------------------------------


async def check(identity: Identity, action: str, resource: str, metadata: Metadata) -> identity_pb2.Decision:
    return await identity.Check(identity_pb2.CheckRequest(action=action, resource=resource), metadata=metadata)


def check_cases(network: Network) -> list[tuple[str, str, Metadata, bool, str, str]]:
    """(action, resource, caller, allowed, reason, relationship id) for every action, both ways."""
    customer = network.customer_of[0]
    return [
        (
            "party.act_for",
            f"party/{network.c}",
            partner(network.r[0]),
            True,
            f"{network.c} is customer_of {network.r[0]}",
            customer.relationship_id,
        ),
        (
            "party.act_for",
            f"party/{network.c}",
            partner(network.o),
            False,
            f"{network.c} has no current relationship with {network.o}: {domain.ACTS_FOR_NOTE}",
            "",
        ),
        (
            "party.read_contact",
            f"party/{network.c}",
            partner(network.r[0]),
            True,
            f"the party relates to the caller: {network.c} is customer_of {network.r[0]}",
            customer.relationship_id,
        ),
        (
            "party.read_contact",
            f"party/{network.c}",
            partner(network.o, acting_for=network.c),
            True,
            "the party's own contact data",
            "",
        ),
        (
            "party.read_contact",
            f"party/{network.c}",
            partner(network.o),
            False,
            f"{network.c} has no current relationship with {network.o}, so its contact data is not shared",
            "",
        ),
        ("partner.manage", f"partner/{network.m}", partner(network.m), True, "a partner manages itself", ""),
        (
            "partner.manage",
            f"partner/{network.m}",
            partner(network.s),
            False,
            f"partner {network.s} may not manage partner {network.m}",
            "",
        ),
        (
            "relationship.read",
            f"relationship/{customer.relationship_id}",
            partner(network.r[0]),
            True,
            "the relationship is public or the caller is party to it",
            customer.relationship_id,
        ),
        (
            "relationship.read",
            f"relationship/{network.mill_supplies_maker.relationship_id}",
            partner(network.o),
            True,
            "the relationship is public or the caller is party to it",
            network.mill_supplies_maker.relationship_id,
        ),
        (
            "relationship.read",
            f"relationship/{customer.relationship_id}",
            partner(network.r[1]),
            False,
            "the relationship is private to its ends and the network that recorded it",
            "",
        ),
    ]


async def test_check_decides_every_action_both_ways_and_says_why(identity: Identity, network: Network) -> None:
    cases = check_cases(network)
    assert {case[0] for case in cases} == set(domain.CHECK_ACTIONS)
    for action, resource, caller, allowed, reason, relationship_id in cases:
        decision = await check(identity, action, resource, caller)
        assert (decision.allowed, decision.reason, decision.relationship_id) == (allowed, reason, relationship_id), (
            action,
            resource,
        )


@pytest.mark.parametrize("action", sorted(domain.CHECK_ACTIONS))
async def test_check_allows_a_service_every_action(identity: Identity, network: Network, action: str) -> None:
    kind = domain.CHECK_ACTIONS[action][0]
    ident = {"party": network.c, "partner": network.m, "relationship": network.employment.relationship_id}[kind]
    decision = await check(identity, action, f"{kind}/{ident}", SERVICE)
    assert decision.allowed
    assert decision.reason == f"service tests may {action}"


async def test_check_party_act_for_is_denied_once_the_relationship_ended(identity: Identity, network: Network) -> None:
    await identity.EndRelationship(
        identity_pb2.EndRelationshipRequest(relationship_id=network.customer_of[0].relationship_id),
        metadata=partner(network.r[0]),
    )
    decision = await check(identity, "party.act_for", f"party/{network.c}", partner(network.r[0]))
    assert not decision.allowed
    assert decision.reason


@pytest.mark.parametrize(
    ("action", "resource", "field"),
    [
        ("party.delete", "party/{c}", "action"),
        ("party.read_contact", "partner/{m}", "resource"),
        ("party.read_contact", "person/{c}", "resource"),
        ("party.read_contact", "party/", "resource"),
    ],
    ids=["unknown-action", "wrong-kind", "unknown-kind", "no-id"],
)
async def test_a_bad_check_is_invalid_argument_naming_the_field(
    identity: Identity, network: Network, action: str, resource: str, field: str
) -> None:
    error = await refused(
        check(identity, action, resource.format(c=network.c, m=network.m), partner(network.r[0])),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == [field]


@pytest.mark.parametrize(
    ("action", "resource", "field"),
    [("party.delete", "party/nobody", "action"), ("relationship.read", "party/nobody", "resource")],
    ids=["unknown-action", "wrong-kind"],
)
async def test_a_bad_check_on_an_unknown_resource_is_invalid_argument_not_not_found(
    identity: Identity, action: str, resource: str, field: str
) -> None:
    error = await refused(check(identity, action, resource, SERVICE), grpc.StatusCode.INVALID_ARGUMENT)
    assert violated_fields(error) == [field]


async def test_check_on_an_unknown_relationship_is_not_found(identity: Identity) -> None:
    await refused(check(identity, "relationship.read", "relationship/nothing", SERVICE), grpc.StatusCode.NOT_FOUND)


# --- visibility ----------------------------------------------------------------------------------


async def test_a_partner_sees_public_relationships_but_not_the_private_ones_of_other_networks(
    identity: Identity, network: Network
) -> None:
    stranger = partner(network.o)

    consumer = await identity.ListRelationships(
        identity_pb2.ListRelationshipsRequest(party_id=network.c), metadata=stranger
    )
    assert [(r.type, r.relationship_id) for r in consumer.relationships] == [
        ("supplier_of", network.consumer_supplies_maker.relationship_id)
    ]
    maker = await identity.ListRelationships(
        identity_pb2.ListRelationshipsRequest(party_id=network.m), metadata=stranger
    )
    assert {r.relationship_id for r in maker.relationships} == {
        network.consumer_supplies_maker.relationship_id,
        network.mill_supplies_maker.relationship_id,
    }

    around = await identity.Neighborhood(
        identity_pb2.NeighborhoodRequest(party_id=network.c, depth=2), metadata=stranger
    )
    assert {n.party.party_id: n.distance for n in around.parties} == {network.c: 0, network.m: 1, network.s: 2}
    assert {r.type for r in around.relationships} == {"supplier_of"}

    hidden_path = await identity.FindPaths(
        identity_pb2.FindPathsRequest(from_party_id=network.r[0], to_party_id=network.m), metadata=stranger
    )
    assert list(hidden_path.paths) == []
    public_path = await identity.FindPaths(
        identity_pb2.FindPathsRequest(from_party_id=network.c, to_party_id=network.o), metadata=stranger
    )
    assert len(public_path.paths) == 1
    assert [s.type for s in public_path.paths[0].steps] == ["supplier_of", "supplied_by", "supplied_by"]


async def test_a_partner_sees_the_private_relationships_it_is_an_end_of_but_not_its_competitors(
    identity: Identity, network: Network
) -> None:
    retailer = partner(network.r[0])
    consumer = await identity.ListRelationships(
        identity_pb2.ListRelationshipsRequest(party_id=network.c), metadata=retailer
    )
    assert {r.relationship_id for r in consumer.relationships} == {
        network.customer_of[0].relationship_id,
        network.consumer_supplies_maker.relationship_id,
    }
    path = await identity.FindPaths(
        identity_pb2.FindPathsRequest(from_party_id=network.r[0], to_party_id=network.m), metadata=retailer
    )
    assert [[(s.type, s.relationship_id) for s in p.steps] for p in path.paths] == [
        [
            ("serves", network.customer_of[0].relationship_id),
            ("supplier_of", network.consumer_supplies_maker.relationship_id),
        ]
    ]
    competitor = await identity.FindPaths(
        identity_pb2.FindPathsRequest(from_party_id=network.r[1], to_party_id=network.m), metadata=retailer
    )
    assert list(competitor.paths) == []


async def test_a_partner_acting_for_a_party_sees_all_of_that_partys_relationships(
    identity: Identity, network: Network
) -> None:
    listed = await identity.ListRelationships(
        identity_pb2.ListRelationshipsRequest(party_id=network.c), metadata=partner(network.o, acting_for=network.c)
    )
    assert {r.relationship_id for r in listed.relationships} == {
        *(r.relationship_id for r in network.customer_of),
        network.consumer_supplies_maker.relationship_id,
    }


async def test_the_maker_sees_the_employment_it_recorded_and_a_stranger_does_not(
    identity: Identity, network: Network
) -> None:
    by_maker = await identity.ListRelationships(
        identity_pb2.ListRelationshipsRequest(party_id=network.e), metadata=partner(network.m)
    )
    assert {r.relationship_id for r in by_maker.relationships} == {
        network.employment.relationship_id,
        network.partnership.relationship_id,
    }
    by_stranger = await identity.ListRelationships(
        identity_pb2.ListRelationshipsRequest(party_id=network.e), metadata=partner(network.o)
    )
    assert {r.relationship_id for r in by_stranger.relationships} == {network.partnership.relationship_id}
