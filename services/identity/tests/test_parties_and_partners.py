"""Parties and partners through the real gRPC server: registering, joining, capabilities, contact data."""

from __future__ import annotations

import grpc
import pytest
from identity_testing import (
    SERVICE,
    Identity,
    Metadata,
    Network,
    partner,
    refused,
    register_person,
    relate,
    violated_fields,
)

from collabnet.identity.v1 import identity_pb2

RETAILER = identity_pb2.PARTNER_KIND_RETAILER
SUPPLIER = identity_pb2.PARTNER_KIND_SUPPLIER


async def test_a_registered_party_is_read_back_with_its_kind_name_attributes_and_contact_data(
    identity: Identity,
) -> None:
    registered = await identity.RegisterParty(
        identity_pb2.RegisterPartyRequest(
            kind=identity_pb2.PARTY_KIND_PERSON,
            display_name="  Dora Doe ",
            email="dora@example.org",
            phone="+1 555 0100",
            attributes={"locale": "en-GB"},
        ),
        metadata=SERVICE,
    )
    assert registered.party_id
    assert registered.display_name == "Dora Doe"
    assert registered.HasField("create_time")

    read = await identity.GetParty(identity_pb2.GetPartyRequest(party_id=registered.party_id), metadata=SERVICE)
    assert read == registered
    assert read.kind == identity_pb2.PARTY_KIND_PERSON
    assert (read.email, read.phone) == ("dora@example.org", "+1 555 0100")
    assert dict(read.attributes) == {"locale": "en-GB"}
    assert not read.partner


async def test_a_party_registered_without_contact_data_has_the_fields_absent(identity: Identity) -> None:
    registered = await register_person(identity, "No Contact")
    read = await identity.GetParty(identity_pb2.GetPartyRequest(party_id=registered.party_id), metadata=SERVICE)
    assert not read.HasField("email")
    assert not read.HasField("phone")


@pytest.mark.parametrize(
    ("request_fields", "fields"),
    [
        ({"kind": identity_pb2.PARTY_KIND_PERSON, "display_name": " "}, ["display_name"]),
        ({"display_name": "No Kind"}, ["kind"]),
        ({"kind": identity_pb2.PARTY_KIND_PERSON, "display_name": "P", "email": "not-an-address"}, ["email"]),
        ({"kind": identity_pb2.PARTY_KIND_PERSON, "display_name": "P", "phone": "call me"}, ["phone"]),
    ],
    ids=["empty-name", "no-kind", "bad-email", "bad-phone"],
)
async def test_an_invalid_party_is_invalid_argument_naming_the_field(
    identity: Identity, request_fields: dict[str, object], fields: list[str]
) -> None:
    error = await refused(
        identity.RegisterParty(identity_pb2.RegisterPartyRequest(**request_fields), metadata=SERVICE),  # type: ignore[arg-type]
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == fields


async def test_get_party_of_an_unknown_party_is_not_found(identity: Identity) -> None:
    await refused(
        identity.GetParty(identity_pb2.GetPartyRequest(party_id="nobody"), metadata=SERVICE), grpc.StatusCode.NOT_FOUND
    )


# --- contact data ------------------------------------------------------------------------------


def contact_readers(network: Network) -> dict[str, Metadata]:
    return {
        "a service": SERVICE,
        "the party itself, through a partner acting for it": partner(network.o, acting_for=network.c),
        "a retailer the party is a customer of": partner(network.r[0]),
        "the manufacturer the party supplies": partner(network.m),
    }


async def test_get_party_shows_contact_data_to_callers_allowed_to_see_it(identity: Identity, network: Network) -> None:
    for who, metadata in contact_readers(network).items():
        party = await identity.GetParty(identity_pb2.GetPartyRequest(party_id=network.c), metadata=metadata)
        assert party.HasField("email"), who
        assert party.HasField("phone"), who
        assert (party.email, party.phone) == ("carla@example.org", "+49 30 1234567"), who


async def test_get_party_leaves_contact_data_absent_for_an_unrelated_partner(
    identity: Identity, network: Network
) -> None:
    party = await identity.GetParty(identity_pb2.GetPartyRequest(party_id=network.c), metadata=partner(network.o))
    assert party.display_name == "Carla Consumer"
    assert not party.HasField("email")
    assert not party.HasField("phone")


async def test_get_party_stops_showing_contact_data_once_the_relationship_with_the_caller_ended(
    identity: Identity, network: Network
) -> None:
    retailer = network.r[0]
    await identity.EndRelationship(
        identity_pb2.EndRelationshipRequest(relationship_id=network.customer_of[0].relationship_id, reason="moved"),
        metadata=partner(retailer),
    )
    party = await identity.GetParty(identity_pb2.GetPartyRequest(party_id=network.c), metadata=partner(retailer))
    assert not party.HasField("email")
    assert not party.HasField("phone")


async def test_get_party_says_whether_the_party_is_a_partner(identity: Identity, network: Network) -> None:
    maker = await identity.GetParty(identity_pb2.GetPartyRequest(party_id=network.m), metadata=SERVICE)
    consumer = await identity.GetParty(identity_pb2.GetPartyRequest(party_id=network.c), metadata=SERVICE)
    assert maker.partner
    assert maker.kind == identity_pb2.PARTY_KIND_ORGANIZATION
    assert maker.display_name == "Maker"
    assert not consumer.partner


# --- joining the network -----------------------------------------------------------------------


async def test_joining_without_a_party_registers_a_new_organization_as_a_partner(identity: Identity) -> None:
    joined = await identity.JoinNetwork(
        identity_pb2.JoinNetworkRequest(
            display_name="Fresh Retail",
            kinds=[RETAILER, identity_pb2.PARTNER_KIND_DISTRIBUTOR],
            capabilities=["ship:eu", "repair", "repair"],
        ),
        metadata=SERVICE,
    )
    assert joined.display_name == "Fresh Retail"
    assert sorted(joined.kinds) == sorted([RETAILER, identity_pb2.PARTNER_KIND_DISTRIBUTOR])
    assert list(joined.capabilities) == ["repair", "ship:eu"]
    assert joined.HasField("join_time")

    read = await identity.GetPartner(identity_pb2.GetPartnerRequest(partner_id=joined.partner_id), metadata=SERVICE)
    assert read == joined
    party = await identity.GetParty(identity_pb2.GetPartyRequest(party_id=joined.partner_id), metadata=SERVICE)
    assert party.partner
    assert party.kind == identity_pb2.PARTY_KIND_ORGANIZATION


async def test_an_existing_organization_joins_and_its_earlier_relationships_show_in_roles_of(
    identity: Identity, network: Network
) -> None:
    shop = await identity.RegisterParty(
        identity_pb2.RegisterPartyRequest(kind=identity_pb2.PARTY_KIND_ORGANIZATION, display_name="Corner Shop"),
        metadata=partner(network.m),
    )
    relationship = await relate(
        identity, network.c, "customer_of", shop.party_id, by=partner(network.m, acting_for=network.c)
    )
    before = await identity.RolesOf(identity_pb2.RolesOfRequest(party_id=network.c), metadata=SERVICE)
    assert shop.party_id not in {p.partner.partner_id for p in before.partners}

    joined = await identity.JoinNetwork(
        identity_pb2.JoinNetworkRequest(party_id=shop.party_id, kinds=[RETAILER]), metadata=SERVICE
    )
    assert joined.partner_id == shop.party_id
    assert joined.display_name == "Corner Shop"

    after = await identity.RolesOf(identity_pb2.RolesOfRequest(party_id=network.c), metadata=SERVICE)
    roles = {p.partner.partner_id: [(r.role, r.relationship_id) for r in p.roles] for p in after.partners}
    assert roles[shop.party_id] == [("customer_of", relationship.relationship_id)]


async def test_a_person_cannot_join_the_network(identity: Identity, network: Network) -> None:
    await refused(
        identity.JoinNetwork(identity_pb2.JoinNetworkRequest(party_id=network.c, kinds=[RETAILER]), metadata=SERVICE),
        grpc.StatusCode.FAILED_PRECONDITION,
    )


async def test_joining_twice_is_already_exists(identity: Identity, network: Network) -> None:
    await refused(
        identity.JoinNetwork(identity_pb2.JoinNetworkRequest(party_id=network.m, kinds=[SUPPLIER]), metadata=SERVICE),
        grpc.StatusCode.ALREADY_EXISTS,
    )


async def test_joining_without_a_kind_is_invalid_argument_naming_kinds(identity: Identity) -> None:
    error = await refused(
        identity.JoinNetwork(identity_pb2.JoinNetworkRequest(display_name="Kindless"), metadata=SERVICE),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == ["kinds"]


async def test_a_partner_without_the_network_admin_scope_may_not_join_others(
    identity: Identity, network: Network
) -> None:
    before = await identity.ListPartners(identity_pb2.ListPartnersRequest(), metadata=SERVICE)
    await refused(
        identity.JoinNetwork(
            identity_pb2.JoinNetworkRequest(display_name="Sneaky", kinds=[RETAILER]),
            metadata=partner(network.r[0], scopes=frozenset({"reviews:write"})),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    after = await identity.ListPartners(identity_pb2.ListPartnersRequest(), metadata=SERVICE)
    assert after == before


async def test_list_partners_filters_by_kind_and_pages_through_all_of_them(
    identity: Identity, network: Network
) -> None:
    everyone = await identity.ListPartners(identity_pb2.ListPartnersRequest(), metadata=SERVICE)
    expected = {network.m, network.s, network.o, *network.r}
    assert {p.partner_id for p in everyone.partners} == expected
    assert not everyone.next_page_token

    retailers = await identity.ListPartners(identity_pb2.ListPartnersRequest(kind=RETAILER), metadata=SERVICE)
    assert {p.partner_id for p in retailers.partners} == set(network.r)
    suppliers = await identity.ListPartners(identity_pb2.ListPartnersRequest(kind=SUPPLIER), metadata=SERVICE)
    assert {p.display_name for p in suppliers.partners} == {"Steel Mill", "Ore Supplier"}

    paged: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await identity.ListPartners(
            identity_pb2.ListPartnersRequest(page_size=2, page_token=token), metadata=partner(network.r[0])
        )
        assert len(page.partners) <= 2
        paged += [p.partner_id for p in page.partners]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert sorted(paged) == paged
    assert set(paged) == expected
    assert len(paged) == len(expected)


async def test_a_page_token_the_service_did_not_issue_is_invalid_argument_naming_page_token(
    identity: Identity,
) -> None:
    error = await refused(
        identity.ListPartners(identity_pb2.ListPartnersRequest(page_token="not-a-token"), metadata=SERVICE),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == ["page_token"]


async def test_get_partner_of_a_party_that_is_not_a_partner_is_not_found(identity: Identity, network: Network) -> None:
    await refused(
        identity.GetPartner(identity_pb2.GetPartnerRequest(partner_id=network.c), metadata=SERVICE),
        grpc.StatusCode.NOT_FOUND,
    )


# --- capabilities ------------------------------------------------------------------------------


async def test_a_partner_declares_a_capability_once_and_get_partner_shows_it(
    identity: Identity, network: Network
) -> None:
    declared = await identity.DeclareCapability(
        identity_pb2.DeclareCapabilityRequest(partner_id=network.m, capability="repair:category/kitchen"),
        metadata=partner(network.m),
    )
    assert list(declared.capabilities) == ["assemble", "repair:category/kitchen"]
    again = await identity.DeclareCapability(
        identity_pb2.DeclareCapabilityRequest(partner_id=network.m, capability="repair:category/kitchen"),
        metadata=SERVICE,
    )
    assert list(again.capabilities) == ["assemble", "repair:category/kitchen"]
    read = await identity.GetPartner(identity_pb2.GetPartnerRequest(partner_id=network.m), metadata=SERVICE)
    assert list(read.capabilities) == ["assemble", "repair:category/kitchen"]


async def test_a_partner_may_not_declare_capabilities_for_another_partner(identity: Identity, network: Network) -> None:
    await refused(
        identity.DeclareCapability(
            identity_pb2.DeclareCapabilityRequest(partner_id=network.m, capability="repair"),
            metadata=partner(network.s),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    read = await identity.GetPartner(identity_pb2.GetPartnerRequest(partner_id=network.m), metadata=SERVICE)
    assert list(read.capabilities) == ["assemble"]


async def test_a_capability_that_is_not_namespaced_is_invalid_argument_naming_capability(
    identity: Identity, network: Network
) -> None:
    error = await refused(
        identity.DeclareCapability(
            identity_pb2.DeclareCapabilityRequest(partner_id=network.m, capability="Fix Things!"), metadata=SERVICE
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == ["capability"]


async def test_declaring_a_capability_for_an_unknown_partner_is_not_found(identity: Identity) -> None:
    await refused(
        identity.DeclareCapability(
            identity_pb2.DeclareCapabilityRequest(partner_id="nobody", capability="repair"), metadata=SERVICE
        ),
        grpc.StatusCode.NOT_FOUND,
    )
