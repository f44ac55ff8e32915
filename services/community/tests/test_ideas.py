"""Ideas through the real gRPC server: submitting, voting once and withdrawing, public statuses that
notify submitter and voters, promotion into a partner's improvement program, notifications."""

from __future__ import annotations

import grpc
from community_testing import (
    BLENDER,
    DRILL,
    MAKER,
    OTHER_RETAILER,
    RETAILER,
    SERVICE,
    STRANGER,
    Clock,
    Community,
    EventLog,
    Market,
    consumer,
    create_community,
    join,
    partner,
    refused,
    reputation,
    violated_fields,
)

from collabnet.community.v1 import community_pb2 as pb
from collabnet.community.v1 import events_pb2

MEMBERS = ("Sue", "Vic", "Val", "Mod")


async def setup(community: Community) -> str:
    acme = await create_community(community, "Acme owners")
    await join(community, acme.community_id, *MEMBERS)
    await community.SetMemberRole(
        pb.SetMemberRoleRequest(community_id=acme.community_id, party_id="Mod", role=pb.MEMBER_ROLE_MODERATOR),
        metadata=partner(MAKER),
    )
    return acme.community_id


async def submit(community: Community, community_id: str, by: str = "Sue", **fields: str) -> pb.Idea:
    values = {"title": "A quieter motor", "description": "It wakes the whole house."} | fields
    return await community.SubmitIdea(pb.SubmitIdeaRequest(community_id=community_id, **values), metadata=consumer(by))


async def vote(community: Community, idea_id: str, voter: str) -> pb.Idea:
    return await community.VoteIdea(pb.VoteIdeaRequest(idea_id=idea_id), metadata=consumer(voter))


async def notifications(community: Community, party: str, unread_only: bool = False) -> list[pb.Notification]:
    response = await community.ListNotifications(
        pb.ListNotificationsRequest(unread_only=unread_only), metadata=consumer(party)
    )
    return list(response.notifications)


async def change(
    community: Community, idea_id: str, status: pb.IdeaStatus.ValueType, by: object, note: str = ""
) -> pb.Idea:
    return await community.ChangeIdeaStatus(
        pb.ChangeIdeaStatusRequest(idea_id=idea_id, status=status, note=note),
        metadata=by,  # type: ignore[arg-type]
    )


async def test_a_member_submits_an_idea_about_a_product_or_the_community(
    community: Community, market: Market, events: EventLog
) -> None:
    cid = await setup(community)
    about_product = await submit(community, cid, product_id=BLENDER)
    assert about_product.idea_id
    assert (about_product.submitter_id, about_product.product_id) == ("Sue", BLENDER)
    assert about_product.status == pb.IDEA_STATUS_NEW
    assert about_product.vote_count == 0
    about_community = await submit(community, cid, title="Monthly meetups", description="In person.")
    assert about_community.product_id == ""
    read = await community.GetIdea(pb.GetIdeaRequest(idea_id=about_product.idea_id), metadata=SERVICE)
    assert read == about_product
    submitted = await events.wait_for(events_pb2.IdeaSubmitted, 2)
    assert [(e.idea_id, e.community_id, e.partner_id, e.submitter_id, e.product_id) for e in submitted] == [
        (about_product.idea_id, cid, MAKER, "Sue", BLENDER),
        (about_community.idea_id, cid, MAKER, "Sue", ""),
    ]


async def test_submitting_is_for_members_with_a_valid_idea_in_scope(community: Community, market: Market) -> None:
    cid = await setup(community)
    open_community = await create_community(community, "Open", open_to_non_members=True)
    await refused(submit(community, cid, by="Outsider"), grpc.StatusCode.PERMISSION_DENIED)
    # Ideas are for members even where questions are open to all.
    await refused(submit(community, open_community.community_id, by="Outsider"), grpc.StatusCode.PERMISSION_DENIED)
    error = await refused(submit(community, cid, title="", description=" "), grpc.StatusCode.INVALID_ARGUMENT)
    assert violated_fields(error) == ["title", "description"]
    await refused(submit(community, cid, product_id=DRILL), grpc.StatusCode.FAILED_PRECONDITION)
    await refused(submit(community, cid, product_id="P-unknown"), grpc.StatusCode.NOT_FOUND)
    await refused(submit(community, "nope"), grpc.StatusCode.NOT_FOUND)
    listed = await community.ListIdeas(pb.ListIdeasRequest(community_id=cid), metadata=SERVICE)
    assert list(listed.ideas) == []


async def test_one_vote_per_member_withdrawable_never_for_ones_own_idea(community: Community) -> None:
    cid = await setup(community)
    idea = await submit(community, cid)
    assert (await vote(community, idea.idea_id, "Vic")).vote_count == 1
    assert (await vote(community, idea.idea_id, "Val")).vote_count == 2
    await refused(vote(community, idea.idea_id, "Vic"), grpc.StatusCode.ALREADY_EXISTS)
    await refused(vote(community, idea.idea_id, "Sue"), grpc.StatusCode.FAILED_PRECONDITION)
    await refused(vote(community, idea.idea_id, "Outsider"), grpc.StatusCode.PERMISSION_DENIED)
    await refused(vote(community, "nope", "Vic"), grpc.StatusCode.NOT_FOUND)
    withdraw = pb.WithdrawIdeaVoteRequest(idea_id=idea.idea_id)
    assert (await community.WithdrawIdeaVote(withdraw, metadata=consumer("Vic"))).vote_count == 1
    await refused(community.WithdrawIdeaVote(withdraw, metadata=consumer("Vic")), grpc.StatusCode.NOT_FOUND)
    assert (await vote(community, idea.idea_id, "Vic")).vote_count == 2  # a withdrawn vote may be cast again
    read = await community.GetIdea(pb.GetIdeaRequest(idea_id=idea.idea_id), metadata=SERVICE)
    assert read.vote_count == 2


async def test_every_status_change_notifies_the_submitter_and_the_current_voters(
    community: Community, events: EventLog, clock: Clock
) -> None:
    cid = await setup(community)
    idea = await submit(community, cid)
    for voter in ("Vic", "Val"):
        await vote(community, idea.idea_id, voter)
    await community.WithdrawIdeaVote(pb.WithdrawIdeaVoteRequest(idea_id=idea.idea_id), metadata=consumer("Val"))
    clock.advance(days=1)
    reviewed = await change(
        community, idea.idea_id, pb.IDEA_STATUS_UNDER_REVIEW, partner(MAKER), "Our engineers look at it."
    )
    assert reviewed.status == pb.IDEA_STATUS_UNDER_REVIEW
    assert reviewed.status_note == "Our engineers look at it."
    clock.advance(days=1)
    planned = await change(community, idea.idea_id, pb.IDEA_STATUS_PLANNED, consumer("Mod"))  # a moderator may
    assert planned.status == pb.IDEA_STATUS_PLANNED
    for party in ("Sue", "Vic"):
        received = await notifications(community, party)
        assert [n.kind for n in received] == [pb.NOTIFICATION_KIND_IDEA_STATUS_CHANGED] * 2
        assert received[0].message == "The idea “A quieter motor” moved from under review to planned."
        assert (
            received[1].message
            == "The idea “A quieter motor” moved from new to under review. Our engineers look at it."
        )
        assert {n.idea_id for n in received} == {idea.idea_id}
    assert await notifications(community, "Val") == []  # withdrew before the changes
    changes = await events.wait_for(events_pb2.IdeaStatusChanged, 2)
    assert [(e.idea_id, e.community_id, e.old_status, e.new_status) for e in changes] == [
        (idea.idea_id, cid, "new", "under_review"),
        (idea.idea_id, cid, "under_review", "planned"),
    ]


async def test_status_changes_follow_the_workflow_and_are_for_the_partner_and_moderators(community: Community) -> None:
    cid = await setup(community)
    idea = await submit(community, cid)
    await refused(
        change(community, idea.idea_id, pb.IDEA_STATUS_PLANNED, consumer("Vic")), grpc.StatusCode.PERMISSION_DENIED
    )
    await refused(
        change(community, idea.idea_id, pb.IDEA_STATUS_PLANNED, partner(RETAILER)), grpc.StatusCode.PERMISSION_DENIED
    )
    await refused(
        change(community, idea.idea_id, pb.IDEA_STATUS_NEW, partner(MAKER)), grpc.StatusCode.FAILED_PRECONDITION
    )
    await refused(
        change(community, idea.idea_id, pb.IDEA_STATUS_DONE, partner(MAKER)), grpc.StatusCode.FAILED_PRECONDITION
    )
    error = await refused(
        change(community, idea.idea_id, pb.IDEA_STATUS_UNSPECIFIED, partner(MAKER)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert violated_fields(error) == ["status"]
    for status in (pb.IDEA_STATUS_PLANNED, pb.IDEA_STATUS_IN_PROGRESS, pb.IDEA_STATUS_DONE):
        await change(community, idea.idea_id, status, SERVICE)
    await refused(
        change(community, idea.idea_id, pb.IDEA_STATUS_PLANNED, partner(MAKER)), grpc.StatusCode.FAILED_PRECONDITION
    )
    await refused(vote(community, idea.idea_id, "Vic"), grpc.StatusCode.FAILED_PRECONDITION)  # voting closed
    assert await notifications(community, "Sue") != []
    read = await community.GetIdea(pb.GetIdeaRequest(idea_id=idea.idea_id), metadata=SERVICE)
    assert read.status == pb.IDEA_STATUS_DONE


async def test_ideas_list_top_or_newest_filtered_by_status(community: Community, clock: Clock) -> None:
    cid = await setup(community)
    ideas = []
    for i in range(4):
        ideas.append(await submit(community, cid, title=f"Idea {i}"))
        clock.advance(minutes=1)
    for voter, idea in (("Vic", 2), ("Val", 2), ("Vic", 0)):
        await vote(community, ideas[idea].idea_id, voter)
    await change(community, ideas[3].idea_id, pb.IDEA_STATUS_DECLINED, partner(MAKER))

    async def titles(**fields: object) -> list[str]:
        response = await community.ListIdeas(pb.ListIdeasRequest(community_id=cid, **fields), metadata=SERVICE)  # type: ignore[arg-type]
        return [i.title for i in response.ideas]

    assert await titles() == ["Idea 2", "Idea 0", "Idea 3", "Idea 1"]
    assert await titles(order=pb.IDEA_ORDER_NEWEST) == ["Idea 3", "Idea 2", "Idea 1", "Idea 0"]
    assert await titles(status=pb.IDEA_STATUS_DECLINED) == ["Idea 3"]
    first = await community.ListIdeas(pb.ListIdeasRequest(community_id=cid, page_size=3), metadata=SERVICE)
    rest = await community.ListIdeas(
        pb.ListIdeasRequest(community_id=cid, page_size=3, page_token=first.next_page_token), metadata=SERVICE
    )
    assert [i.title for i in [*first.ideas, *rest.ideas]] == await titles()
    # A token of one order is no token of the other.
    await refused(
        community.ListIdeas(
            pb.ListIdeasRequest(community_id=cid, order=pb.IDEA_ORDER_NEWEST, page_token=first.next_page_token),
            metadata=SERVICE,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await refused(
        community.ListIdeas(pb.ListIdeasRequest(community_id="nope"), metadata=SERVICE), grpc.StatusCode.NOT_FOUND
    )


async def test_partners_promote_an_idea_into_their_improvement_program_once_each(
    community: Community, market: Market, events: EventLog
) -> None:
    cid = await setup(community)
    idea = await submit(community, cid, product_id=BLENDER, title="Glass jar", description="Plastic scratches.")
    await vote(community, idea.idea_id, "Vic")
    promoted = await community.PromoteIdea(pb.PromoteIdeaRequest(idea_id=idea.idea_id), metadata=partner(MAKER))
    assert list(promoted.promoted_by) == [MAKER]
    (event,) = await events.wait_for(events_pb2.IdeaPromoted)
    assert (event.idea_id, event.community_id, event.partner_id, event.title, event.description) == (
        idea.idea_id,
        cid,
        MAKER,
        "Glass jar",
        "Plastic scratches.",
    )
    assert (event.product_id, event.submitter_id) == (BLENDER, "Sue")
    await refused(
        community.PromoteIdea(pb.PromoteIdeaRequest(idea_id=idea.idea_id), metadata=partner(MAKER)),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    # A retailer that sells the product may promote it into its own program; one that does not may not.
    both = await community.PromoteIdea(pb.PromoteIdeaRequest(idea_id=idea.idea_id), metadata=partner(OTHER_RETAILER))
    assert list(both.promoted_by) == [MAKER, OTHER_RETAILER]
    await refused(
        community.PromoteIdea(pb.PromoteIdeaRequest(idea_id=idea.idea_id), metadata=partner(STRANGER)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    # The submitter earns points for the first promotion only; submitter and voters hear of each.
    assert (await reputation(community, "Sue")).points == 50
    assert [b.kind for b in (await reputation(community, "Sue")).badges] == ["promoted_ideas"]
    for party in ("Sue", "Vic"):
        kinds = [n.kind for n in await notifications(community, party)]
        assert kinds == [pb.NOTIFICATION_KIND_IDEA_PROMOTED] * 2
    assert len(await events.wait_for(events_pb2.IdeaPromoted, 2)) == 2
    read = await community.GetIdea(pb.GetIdeaRequest(idea_id=idea.idea_id), metadata=SERVICE)
    assert list(read.promoted_by) == [MAKER, OTHER_RETAILER]


async def test_a_community_idea_is_promoted_by_the_community_partner_and_never_when_declined(
    community: Community,
) -> None:
    cid = await setup(community)
    idea = await submit(community, cid)
    await refused(
        community.PromoteIdea(pb.PromoteIdeaRequest(idea_id=idea.idea_id), metadata=partner(RETAILER)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await change(community, idea.idea_id, pb.IDEA_STATUS_DECLINED, partner(MAKER))
    await refused(
        community.PromoteIdea(pb.PromoteIdeaRequest(idea_id=idea.idea_id), metadata=partner(MAKER)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    await change(community, idea.idea_id, pb.IDEA_STATUS_UNDER_REVIEW, partner(MAKER))
    by_service = await community.PromoteIdea(
        pb.PromoteIdeaRequest(idea_id=idea.idea_id, partner_id=MAKER), metadata=SERVICE
    )
    assert list(by_service.promoted_by) == [MAKER]


async def test_notifications_are_read_by_their_party_who_marks_them_read(community: Community) -> None:
    cid = await setup(community)
    idea = await submit(community, cid)
    for status in (pb.IDEA_STATUS_UNDER_REVIEW, pb.IDEA_STATUS_PLANNED, pb.IDEA_STATUS_IN_PROGRESS):
        await change(community, idea.idea_id, status, partner(MAKER))
    received = await notifications(community, "Sue")
    assert len(received) == 3
    await refused(
        community.ListNotifications(pb.ListNotificationsRequest(party_id="Sue"), metadata=consumer("Vic")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await refused(
        community.MarkNotificationsRead(pb.MarkNotificationsReadRequest(party_id="Sue"), metadata=consumer("Vic")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    marked = await community.MarkNotificationsRead(
        pb.MarkNotificationsReadRequest(notification_ids=[received[0].notification_id]), metadata=consumer("Sue")
    )
    assert marked.marked == 1
    assert len(await notifications(community, "Sue", unread_only=True)) == 2
    everything = await community.MarkNotificationsRead(pb.MarkNotificationsReadRequest(), metadata=consumer("Sue"))
    assert everything.marked == 2
    assert await notifications(community, "Sue", unread_only=True) == []
    assert all(n.HasField("read_time") for n in await notifications(community, "Sue"))
    paged = await community.ListNotifications(
        pb.ListNotificationsRequest(party_id="Sue", page_size=2), metadata=SERVICE
    )
    assert len(paged.notifications) == 2
    assert paged.next_page_token
