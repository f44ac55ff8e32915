"""Communities and memberships through the real gRPC server: creating, scoping, joining, leaving, roles."""

from __future__ import annotations

import base64
import json

import grpc
import pytest
from community_testing import (
    BLENDER,
    DRILL,
    KETTLE,
    MAKER,
    RETAILER,
    SERVICE,
    Clock,
    Community,
    EventLog,
    Market,
    as_principal,
    consumer,
    create_community,
    join,
    partner,
    refused,
    violated_fields,
)

from collabnet.community.v1 import community_pb2 as pb
from collabnet.community.v1 import events_pb2
from collabnet_kit.principal import Principal


async def test_a_partner_creates_a_community_and_reads_it_back(community: Community) -> None:
    created = await create_community(community, "  Acme owners ", scope=pb.CommunityScope(brand=" ACME  Tools "))
    assert created.community_id
    assert created.partner_id == MAKER
    assert created.name == "Acme owners"
    assert created.scope.brand == "acme tools"
    assert created.member_count == 0
    assert not created.open_to_non_members
    read = await community.GetCommunity(pb.GetCommunityRequest(community_id=created.community_id), metadata=SERVICE)
    assert read == created


async def test_a_community_of_products_keeps_its_products_once_each(community: Community) -> None:
    scope = pb.CommunityScope(products=pb.ProductSet(product_ids=[BLENDER, KETTLE, BLENDER]))
    created = await create_community(community, "Kitchen helpers", by=RETAILER, scope=scope)
    assert list(created.scope.products.product_ids) == [BLENDER, KETTLE]
    read = await community.GetCommunity(pb.GetCommunityRequest(community_id=created.community_id), metadata=SERVICE)
    assert sorted(read.scope.products.product_ids) == [BLENDER, KETTLE]


@pytest.mark.parametrize(
    ("fields", "violations"),
    [
        ({"name": " ", "scope": pb.CommunityScope(brand="Acme")}, ["community.name"]),
        ({"name": "No scope"}, ["community.scope"]),
        ({"name": "Empty brand", "scope": pb.CommunityScope(brand=" ")}, ["community.scope.brand"]),
        ({"name": "No products", "scope": pb.CommunityScope(products=pb.ProductSet())}, ["community.scope.products"]),
        ({"name": "x" * 201, "scope": pb.CommunityScope(category="")}, ["community.name", "community.scope.category"]),
    ],
    ids=["empty-name", "no-scope", "empty-brand", "no-products", "long-name-empty-category"],
)
async def test_an_invalid_community_is_invalid_argument_naming_every_field(
    community: Community, fields: dict[str, object], violations: list[str]
) -> None:
    request = pb.CreateCommunityRequest(community=pb.Community(**fields))  # type: ignore[arg-type]
    error = await refused(community.CreateCommunity(request, metadata=partner(MAKER)), grpc.StatusCode.INVALID_ARGUMENT)
    assert violated_fields(error) == violations


async def test_a_partner_creates_communities_for_itself_only_and_names_are_unique_per_partner(
    community: Community,
) -> None:
    request = pb.CreateCommunityRequest(
        community=pb.Community(partner_id=RETAILER, name="Not mine", scope=pb.CommunityScope(brand="Acme"))
    )
    await refused(community.CreateCommunity(request, metadata=partner(MAKER)), grpc.StatusCode.PERMISSION_DENIED)
    await create_community(community, "Acme owners")
    await refused(create_community(community, "Acme owners"), grpc.StatusCode.ALREADY_EXISTS)
    await create_community(community, "Acme owners", by=RETAILER)  # another partner may use the name
    # A service creates for the partner it names, and must name one.
    request.community.partner_id = ""
    error = await refused(community.CreateCommunity(request, metadata=SERVICE), grpc.StatusCode.INVALID_ARGUMENT)
    assert violated_fields(error) == ["community.partner_id"]
    request.community.partner_id = RETAILER
    assert (await community.CreateCommunity(request, metadata=SERVICE)).partner_id == RETAILER


async def test_get_community_of_an_unknown_id_is_not_found(community: Community) -> None:
    await refused(
        community.GetCommunity(pb.GetCommunityRequest(community_id="nope"), metadata=SERVICE), grpc.StatusCode.NOT_FOUND
    )


async def test_communities_are_listed_by_partner_and_by_the_products_they_cover(
    community: Community, market: Market, clock: Clock
) -> None:
    await create_community(community, "Acme", scope=pb.CommunityScope(brand="acme"))
    clock.advance(minutes=1)
    await create_community(community, "Kitchen", by=RETAILER, scope=pb.CommunityScope(category="kitchen"))
    clock.advance(minutes=1)
    await create_community(community, "Blenders", by=RETAILER, scope=pb.CommunityScope(category="KITCHEN/blenders"))
    clock.advance(minutes=1)
    drills = pb.CommunityScope(products=pb.ProductSet(product_ids=[DRILL]))
    await create_community(community, "Drills", by=RETAILER, scope=drills)

    async def listed(**fields: str) -> list[str]:
        response = await community.ListCommunities(pb.ListCommunitiesRequest(**fields), metadata=SERVICE)  # type: ignore[arg-type]
        return [c.name for c in response.communities]

    assert await listed(partner_id=MAKER) == ["Acme"]
    assert await listed(partner_id=RETAILER) == ["Kitchen", "Blenders", "Drills"]
    assert await listed(product_id=BLENDER) == ["Acme", "Kitchen", "Blenders"]
    assert await listed(product_id=KETTLE) == ["Acme", "Kitchen"]
    assert await listed(product_id=DRILL) == ["Drills"]
    assert await listed(product_id="unknown") == []


async def test_listing_communities_pages_through_all_of_them(community: Community, clock: Clock) -> None:
    names = [f"Community {i:02}" for i in range(7)]
    for name in names:
        await create_community(community, name)
        clock.advance(seconds=1)
    seen: list[str] = []
    token = ""
    while True:
        response = await community.ListCommunities(
            pb.ListCommunitiesRequest(page_size=3, page_token=token), metadata=SERVICE
        )
        seen += [c.name for c in response.communities]
        token = response.next_page_token
        if not token:
            break
    assert seen == names
    await refused(
        community.ListCommunities(pb.ListCommunitiesRequest(page_token="garbage"), metadata=SERVICE),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    # A forged token whose id holds a NUL character (PostgreSQL would refuse the query, not answer it).
    forged = base64.urlsafe_b64encode(json.dumps(["2026-11-22T10:00:00+00:00", "c\u0000"]).encode()).decode()
    await refused(
        community.ListCommunities(pb.ListCommunitiesRequest(page_token=forged), metadata=SERVICE),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await refused(
        community.ListCommunities(pb.ListCommunitiesRequest(page_size=501), metadata=SERVICE),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_one_consumer_is_a_member_of_many_partners_communities(
    community: Community, events: EventLog, clock: Clock
) -> None:
    acme = await create_community(community, "Acme")
    kitchen = await create_community(community, "Kitchen", by=RETAILER, scope=pb.CommunityScope(category="kitchen"))
    joined = await community.JoinCommunity(
        pb.JoinCommunityRequest(community_id=acme.community_id), metadata=consumer("C")
    )
    assert joined.party_id == "C"
    assert joined.role == pb.MEMBER_ROLE_MEMBER
    assert joined.partner_id == MAKER
    assert joined.community_name == "Acme"
    assert not joined.HasField("leave_time")
    clock.advance(minutes=5)
    # The same party, through another partner's site.
    await community.JoinCommunity(
        pb.JoinCommunityRequest(community_id=kitchen.community_id), metadata=consumer("C", through=MAKER)
    )
    mine = await community.ListMemberships(pb.ListMembershipsRequest(), metadata=consumer("C"))
    assert [(m.community_name, m.partner_id) for m in mine.memberships] == [("Acme", MAKER), ("Kitchen", RETAILER)]
    # Another partner, not acting for C, sees C's memberships in its own communities only.
    theirs = await community.ListMemberships(pb.ListMembershipsRequest(party_id="C"), metadata=partner(RETAILER))
    assert [m.community_name for m in theirs.memberships] == ["Kitchen"]
    read = await community.GetCommunity(pb.GetCommunityRequest(community_id=acme.community_id), metadata=SERVICE)
    assert read.member_count == 1
    joins = await events.wait_for(events_pb2.MemberJoined, 2)
    assert [(e.community_id, e.party_id, e.partner_id, e.role) for e in joins] == [
        (acme.community_id, "C", MAKER, "member"),
        (kitchen.community_id, "C", RETAILER, "member"),
    ]


async def test_joining_twice_is_already_exists_and_writes_nothing(community: Community, events: EventLog) -> None:
    acme = await create_community(community, "Acme")
    await join(community, acme.community_id, "C")
    await refused(
        community.JoinCommunity(pb.JoinCommunityRequest(community_id=acme.community_id), metadata=consumer("C")),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    members = await community.ListMembers(
        pb.ListMembersRequest(community_id=acme.community_id), metadata=partner(MAKER)
    )
    assert [m.party_id for m in members.memberships] == ["C"]
    await join(community, acme.community_id, "D")  # a later event proves the stream is flowing
    joins = await events.wait_for(events_pb2.MemberJoined, 2)
    assert [e.party_id for e in joins] == ["C", "D"]


async def test_joining_needs_a_party_and_a_community_that_exists(community: Community) -> None:
    acme = await create_community(community, "Acme")
    request = pb.JoinCommunityRequest(community_id=acme.community_id)
    await refused(community.JoinCommunity(request, metadata=partner(RETAILER)), grpc.StatusCode.PERMISSION_DENIED)
    other = pb.JoinCommunityRequest(community_id=acme.community_id, party_id="D")
    await refused(community.JoinCommunity(other, metadata=consumer("C")), grpc.StatusCode.PERMISSION_DENIED)
    error = await refused(community.JoinCommunity(request, metadata=SERVICE), grpc.StatusCode.INVALID_ARGUMENT)
    assert violated_fields(error) == ["party_id"]
    assert (await community.JoinCommunity(other, metadata=SERVICE)).party_id == "D"
    await refused(
        community.JoinCommunity(pb.JoinCommunityRequest(community_id="nope"), metadata=consumer("C")),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_a_member_leaves_and_may_join_again(community: Community, events: EventLog) -> None:
    acme = await create_community(community, "Acme")
    await join(community, acme.community_id, "C")
    left = await community.LeaveCommunity(
        pb.LeaveCommunityRequest(community_id=acme.community_id), metadata=consumer("C")
    )
    assert left.HasField("leave_time")
    await refused(
        community.LeaveCommunity(pb.LeaveCommunityRequest(community_id=acme.community_id), metadata=consumer("C")),
        grpc.StatusCode.NOT_FOUND,
    )
    read = await community.GetCommunity(pb.GetCommunityRequest(community_id=acme.community_id), metadata=SERVICE)
    assert read.member_count == 0
    again = await community.JoinCommunity(
        pb.JoinCommunityRequest(community_id=acme.community_id), metadata=consumer("C")
    )
    assert again.membership_id != left.membership_id
    (gone,) = await events.wait_for(events_pb2.MemberLeft)
    assert (gone.community_id, gone.party_id, gone.partner_id) == (acme.community_id, "C", MAKER)
    assert len(await events.wait_for(events_pb2.MemberJoined, 2)) == 2


async def test_roles_are_set_by_the_partner_and_experts_by_moderators(community: Community, events: EventLog) -> None:
    acme = await create_community(community, "Acme")
    cid = acme.community_id
    await join(community, cid, "Mod", "Ann", "Bob")

    def set_role(party: str, role: pb.MemberRole.ValueType) -> pb.SetMemberRoleRequest:
        return pb.SetMemberRoleRequest(community_id=cid, party_id=party, role=role)

    # Members do not set roles; the partner does.
    await refused(
        community.SetMemberRole(set_role("Mod", pb.MEMBER_ROLE_MODERATOR), metadata=consumer("Ann")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await refused(
        community.SetMemberRole(set_role("Mod", pb.MEMBER_ROLE_MODERATOR), metadata=partner(RETAILER)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    made = await community.SetMemberRole(set_role("Mod", pb.MEMBER_ROLE_MODERATOR), metadata=partner(MAKER))
    assert made.role == pb.MEMBER_ROLE_MODERATOR
    # A moderator makes experts, but no moderators, and leaves its own role alone.
    expert = await community.SetMemberRole(set_role("Ann", pb.MEMBER_ROLE_EXPERT), metadata=consumer("Mod"))
    assert expert.role == pb.MEMBER_ROLE_EXPERT
    await refused(
        community.SetMemberRole(set_role("Bob", pb.MEMBER_ROLE_MODERATOR), metadata=consumer("Mod")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await refused(
        community.SetMemberRole(set_role("Mod", pb.MEMBER_ROLE_MEMBER), metadata=consumer("Mod")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    error = await refused(
        community.SetMemberRole(set_role("Bob", pb.MEMBER_ROLE_UNSPECIFIED), metadata=partner(MAKER)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == ["role"]
    await refused(
        community.SetMemberRole(set_role("Nobody", pb.MEMBER_ROLE_EXPERT), metadata=partner(MAKER)),
        grpc.StatusCode.NOT_FOUND,
    )
    experts = await community.ListMembers(
        pb.ListMembersRequest(community_id=cid, role=pb.MEMBER_ROLE_EXPERT), metadata=consumer("Mod")
    )
    assert [m.party_id for m in experts.memberships] == ["Ann"]
    changes = await events.wait_for(events_pb2.MemberRoleChanged, 2)
    assert [(e.party_id, e.old_role, e.new_role) for e in changes] == [
        ("Mod", "member", "moderator"),
        ("Ann", "member", "expert"),
    ]


async def test_members_are_listed_for_the_partner_and_moderators_only_page_by_page(community: Community) -> None:
    acme = await create_community(community, "Acme")
    parties = [f"P{i}" for i in range(5)]
    await join(community, acme.community_id, *parties)
    await refused(
        community.ListMembers(pb.ListMembersRequest(community_id=acme.community_id), metadata=consumer("P0")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await refused(
        community.ListMembers(pb.ListMembersRequest(community_id=acme.community_id), metadata=partner(RETAILER)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    seen: list[str] = []
    token = ""
    while True:
        response = await community.ListMembers(
            pb.ListMembersRequest(community_id=acme.community_id, page_size=2, page_token=token),
            metadata=as_principal(Principal(service="gateway")),
        )
        seen += [m.party_id for m in response.memberships]
        if not (token := response.next_page_token):
            break
    assert sorted(seen) == parties
    assert len(seen) == len(set(seen))
