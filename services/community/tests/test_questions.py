"""Product questions and answers through the real gRPC server: asking, routing to owners, verified and
official answers, votes, acceptance, lists, and escalation to the maker."""

from __future__ import annotations

import grpc
from community_testing import (
    BLENDER,
    DRILL,
    KETTLE,
    MAKER,
    OTHER_RETAILER,
    RETAILER,
    SERVICE,
    STRANGER,
    Clock,
    Community,
    EventLog,
    Feed,
    Market,
    answer,
    as_principal,
    ask,
    consumer,
    create_community,
    join,
    order,
    partner,
    refused,
    reputation,
    violated_fields,
)

from collabnet.community.v1 import community_pb2 as pb
from collabnet.community.v1 import events_pb2
from collabnet_kit.principal import Principal


async def acme(community: Community, market: Market, *members: str) -> str:
    """The maker's brand community with the market's people as members (the newcomer stays out)."""
    created = await create_community(community, "Acme owners")
    await join(
        community, created.community_id, *(members or (market.asker, market.owner1, market.owner2, market.owner3))
    )
    return created.community_id


async def questions_of(community: Community, product_id: str = BLENDER, **fields: object) -> list[pb.Question]:
    response = await community.ListQuestions(
        pb.ListQuestionsRequest(product_id=product_id, page_size=100, **fields),  # type: ignore[arg-type]
        metadata=SERVICE,
    )
    return list(response.questions)


async def invitations_of(community: Community, party: str, include_answered: bool = False) -> list[pb.Invitation]:
    response = await community.ListInvitations(
        pb.ListInvitationsRequest(include_answered=include_answered), metadata=consumer(party)
    )
    return list(response.invitations)


async def test_a_member_asks_about_a_product_in_scope_and_owners_who_are_members_are_invited(
    community: Community, market: Market, events: EventLog
) -> None:
    cid = await acme(community, market)
    question = await ask(community, cid, market.asker)
    assert question.question_id
    assert (question.community_id, question.product_id, question.asker_id) == (cid, BLENDER, market.asker)
    assert question.maker_id == MAKER
    assert question.answer_count == 0
    assert not question.HasField("first_answer_time")
    # Both blender owners bought it (at different retailers) and are members; owner3 owns a kettle.
    assert question.invitation_count == 2
    for owner in (market.owner1, market.owner2):
        (invitation,) = await invitations_of(community, owner)
        assert invitation.question_id == question.question_id
        assert invitation.reason.startswith("bought the product (owner since ")
        assert invitation.question.title == "Does it crush ice?"
    assert await invitations_of(community, market.owner3) == []
    (asked,) = await events.wait_for(events_pb2.QuestionAsked)
    assert (asked.question_id, asked.product_id, asked.community_id, asked.asker_id) == (
        question.question_id,
        BLENDER,
        cid,
        market.asker,
    )
    read = await community.GetQuestion(pb.GetQuestionRequest(question_id=question.question_id), metadata=SERVICE)
    assert read == question


async def test_owners_who_are_members_of_any_partners_community_are_invited(
    community: Community, market: Market
) -> None:
    cid = await acme(community, market, market.asker)
    # owner2 belongs only to a retailer's community, elsewhere; owner1 to none at all.
    kitchen = await create_community(
        community, "Kitchen", by=OTHER_RETAILER, scope=pb.CommunityScope(category="kitchen")
    )
    await join(community, kitchen.community_id, market.owner2)
    question = await ask(community, cid, market.asker)
    assert question.invitation_count == 1
    assert [i.question_id for i in await invitations_of(community, market.owner2)] == [question.question_id]
    assert await invitations_of(community, market.owner1) == []


async def test_invitations_are_capped_per_question(community: Community, market: Market, feed: Feed) -> None:
    owners = [f"C-extra{i}" for i in range(5)]
    for i, owner in enumerate(owners):
        await feed.publish(order(f"OX{i}", owner, RETAILER, BLENDER, placed=market.bought_at), "supplychain")
    await feed.handled("supplychain")
    cid = await acme(community, market, market.asker, market.owner1, market.owner2, *owners)
    question = await ask(community, cid, market.asker)
    assert question.invitation_count == 3  # the tests' setting


async def test_asking_is_refused_with_a_reason_and_writes_nothing(community: Community, market: Market) -> None:
    cid = await acme(community, market)
    await refused(ask(community, cid, market.newcomer), grpc.StatusCode.PERMISSION_DENIED)  # not a member
    await refused(ask(community, cid, market.asker, product_id="P-unknown"), grpc.StatusCode.NOT_FOUND)
    error = await refused(ask(community, cid, market.asker, product_id=DRILL), grpc.StatusCode.FAILED_PRECONDITION)
    assert "outside" in (error.details() or "")
    error = await refused(ask(community, cid, market.asker, title="?"), grpc.StatusCode.INVALID_ARGUMENT)
    assert violated_fields(error) == ["title"]
    await refused(ask(community, "nope", market.asker), grpc.StatusCode.NOT_FOUND)
    await refused(
        community.AskQuestion(
            pb.AskQuestionRequest(community_id=cid, product_id=BLENDER, title="Who am I?"), metadata=partner(RETAILER)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert await questions_of(community) == []
    assert await invitations_of(community, market.owner1) == []


async def test_in_an_open_community_non_members_ask_answer_and_vote(community: Community, market: Market) -> None:
    opened = await create_community(community, "Open Acme", open_to_non_members=True)
    question = await ask(community, opened.community_id, market.newcomer)
    given = await answer(community, question.question_id, consumer(market.asker))
    voted = await community.VoteAnswer(
        pb.VoteAnswerRequest(answer_id=given.answer_id, helpful=True), metadata=consumer(market.owner3)
    )
    assert voted.helpful_votes == 1


async def test_an_owner_answer_is_verified_and_a_non_owner_answer_is_not(
    community: Community, market: Market, events: EventLog
) -> None:
    cid = await acme(community, market)
    question = await ask(community, cid, market.asker)
    owned = await answer(community, question.question_id, consumer(market.owner1))
    assert owned.verified_owner
    assert not owned.official
    assert owned.answerer_id == market.owner1
    # owner3 bought the kettle, not the blender; answering through R1's site does not make it official.
    other = await answer(community, question.question_id, consumer(market.owner3))
    assert not other.verified_owner
    assert not other.official
    posted = await events.wait_for(events_pb2.AnswerPosted, 2)
    assert [(e.answerer_id, e.verified_owner, e.official) for e in posted] == [
        (market.owner1, True, False),
        (market.owner3, False, False),
    ]
    read = await community.GetQuestion(pb.GetQuestionRequest(question_id=question.question_id), metadata=SERVICE)
    assert read.answer_count == 2
    assert read.HasField("first_answer_time")


async def test_official_answers_come_from_the_maker_and_the_sellers_only(community: Community, market: Market) -> None:
    cid = await acme(community, market)
    question = await ask(community, cid, market.asker)
    by_seller = await answer(community, question.question_id, partner(OTHER_RETAILER))
    assert by_seller.official
    assert (by_seller.answerer_id, by_seller.official_partner_id) == (OTHER_RETAILER, OTHER_RETAILER)
    # The maker's employee, answering for the maker.
    staff = as_principal(Principal(partner_id=MAKER, party_id="E-maker"))
    by_staff = await answer(community, question.question_id, staff, official=True)
    assert by_staff.official
    assert (by_staff.answerer_id, by_staff.official_partner_id) == ("E-maker", MAKER)
    # A partner that neither makes nor sells the blender.
    await refused(answer(community, question.question_id, partner(STRANGER)), grpc.StatusCode.PERMISSION_DENIED)
    stranger_staff = as_principal(Principal(partner_id=STRANGER, party_id="E-x"))
    await refused(
        answer(community, question.question_id, stranger_staff, official=True), grpc.StatusCode.PERMISSION_DENIED
    )
    await refused(
        answer(community, question.question_id, staff, official=True, official_partner_id=RETAILER),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    # A service names the partner it answers for.
    by_service = await answer(
        community, question.question_id, SERVICE, official=True, official_partner_id=RETAILER, answerer_party_id="E-r1"
    )
    assert (by_service.answerer_id, by_service.official_partner_id) == ("E-r1", RETAILER)
    error = await refused(
        answer(community, question.question_id, SERVICE, official=True), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert violated_fields(error) == ["official_partner_id"]
    read = await community.GetQuestion(pb.GetQuestionRequest(question_id=question.question_id), metadata=SERVICE)
    assert read.answer_count == 3


async def test_answering_rules_refuse_with_a_reason_and_write_nothing(community: Community, market: Market) -> None:
    cid = await acme(community, market, market.asker, market.owner1)
    question = await ask(community, cid, market.asker)
    await refused(answer(community, question.question_id, consumer(market.asker)), grpc.StatusCode.FAILED_PRECONDITION)
    await refused(answer(community, question.question_id, consumer(market.newcomer)), grpc.StatusCode.PERMISSION_DENIED)
    await refused(answer(community, "nope", consumer(market.owner1)), grpc.StatusCode.NOT_FOUND)
    error = await refused(
        answer(community, question.question_id, consumer(market.owner1), body=" "), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert violated_fields(error) == ["body"]
    await answer(community, question.question_id, consumer(market.owner1))
    await refused(answer(community, question.question_id, consumer(market.owner1)), grpc.StatusCode.ALREADY_EXISTS)
    read = await community.GetQuestion(pb.GetQuestionRequest(question_id=question.question_id), metadata=SERVICE)
    assert read.answer_count == 1
    assert [a.answerer_id for a in read.top_answers] == [market.owner1]


async def test_an_invited_owner_answers_without_joining_and_the_invitation_is_marked_answered(
    community: Community, market: Market
) -> None:
    cid = await acme(community, market, market.asker)
    kitchen = await create_community(community, "Kitchen", by=RETAILER, scope=pb.CommunityScope(category="kitchen"))
    await join(community, kitchen.community_id, market.owner2)
    question = await ask(community, cid, market.asker)
    given = await answer(community, question.question_id, consumer(market.owner2))
    assert given.verified_owner
    assert await invitations_of(community, market.owner2) == []
    (done,) = await invitations_of(community, market.owner2, include_answered=True)
    assert done.answered


async def test_invitations_are_the_invited_partys_own(community: Community, market: Market) -> None:
    await refused(
        community.ListInvitations(pb.ListInvitationsRequest(party_id=market.owner1), metadata=consumer(market.asker)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    listed = await community.ListInvitations(pb.ListInvitationsRequest(party_id=market.owner1), metadata=SERVICE)
    assert list(listed.invitations) == []


async def test_votes_count_once_per_party_and_never_on_ones_own_answer(community: Community, market: Market) -> None:
    cid = await acme(community, market)
    question = await ask(community, cid, market.asker)
    given = await answer(community, question.question_id, consumer(market.owner1))

    def vote(helpful: bool) -> pb.VoteAnswerRequest:
        return pb.VoteAnswerRequest(answer_id=given.answer_id, helpful=helpful)

    assert (await community.VoteAnswer(vote(True), metadata=consumer(market.asker))).helpful_votes == 1
    after = await community.VoteAnswer(vote(False), metadata=consumer(market.owner2))
    assert (after.helpful_votes, after.unhelpful_votes) == (1, 1)
    await refused(community.VoteAnswer(vote(True), metadata=consumer(market.asker)), grpc.StatusCode.ALREADY_EXISTS)
    await refused(
        community.VoteAnswer(vote(True), metadata=consumer(market.owner1)), grpc.StatusCode.FAILED_PRECONDITION
    )
    await refused(
        community.VoteAnswer(vote(True), metadata=consumer(market.newcomer)), grpc.StatusCode.PERMISSION_DENIED
    )
    await refused(
        community.VoteAnswer(pb.VoteAnswerRequest(answer_id="nope", helpful=True), metadata=consumer(market.asker)),
        grpc.StatusCode.NOT_FOUND,
    )
    (listed,) = (
        await community.ListAnswers(pb.ListAnswersRequest(question_id=question.question_id), metadata=SERVICE)
    ).answers
    assert (listed.helpful_votes, listed.unhelpful_votes) == (1, 1)


async def test_only_the_asker_accepts_an_answer_once(
    community: Community, market: Market, events: EventLog, clock: Clock
) -> None:
    cid = await acme(community, market)
    question = await ask(community, cid, market.asker)
    first = await answer(community, question.question_id, consumer(market.owner1))
    clock.advance(minutes=1)
    second = await answer(community, question.question_id, consumer(market.owner2))
    accept = pb.AcceptAnswerRequest(answer_id=second.answer_id)
    await refused(community.AcceptAnswer(accept, metadata=consumer(market.owner1)), grpc.StatusCode.PERMISSION_DENIED)
    await refused(community.AcceptAnswer(accept, metadata=partner(MAKER)), grpc.StatusCode.PERMISSION_DENIED)
    accepted = await community.AcceptAnswer(accept, metadata=consumer(market.asker))
    assert accepted.accepted_answer_id == second.answer_id
    # The accepted answer comes first, whatever the votes.
    assert [a.answer_id for a in accepted.top_answers] == [second.answer_id, first.answer_id]
    assert accepted.top_answers[0].accepted
    await refused(community.AcceptAnswer(accept, metadata=consumer(market.asker)), grpc.StatusCode.ALREADY_EXISTS)
    await refused(
        community.AcceptAnswer(pb.AcceptAnswerRequest(answer_id=first.answer_id), metadata=consumer(market.asker)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    (event,) = await events.wait_for(events_pb2.AnswerAccepted)
    assert (event.answer_id, event.question_id, event.answerer_id, event.asker_id) == (
        second.answer_id,
        question.question_id,
        market.owner2,
        market.asker,
    )
    # Answering earns 5 points, an accepted answer 25 more.
    assert (await reputation(community, market.owner2)).points == 30
    assert (await reputation(community, market.owner1)).points == 5


async def test_the_asker_and_the_answerer_are_notified(community: Community, market: Market) -> None:
    cid = await acme(community, market)
    question = await ask(community, cid, market.asker)
    given = await answer(community, question.question_id, consumer(market.owner1))
    await community.AcceptAnswer(pb.AcceptAnswerRequest(answer_id=given.answer_id), metadata=consumer(market.asker))
    (to_asker,) = (
        await community.ListNotifications(pb.ListNotificationsRequest(), metadata=consumer(market.asker))
    ).notifications
    assert to_asker.kind == pb.NOTIFICATION_KIND_QUESTION_ANSWERED
    assert (to_asker.question_id, to_asker.answer_id) == (question.question_id, given.answer_id)
    (to_answerer,) = (
        await community.ListNotifications(pb.ListNotificationsRequest(), metadata=consumer(market.owner1))
    ).notifications
    assert to_answerer.kind == pb.NOTIFICATION_KIND_ANSWER_ACCEPTED
    assert "accepted" in to_answerer.message


async def test_questions_list_unanswered_first_or_most_helpful_first(
    community: Community, market: Market, clock: Clock
) -> None:
    cid = await acme(community, market)
    kitchen = await create_community(community, "Kitchen", by=RETAILER, scope=pb.CommunityScope(category="kitchen"))
    await join(community, kitchen.community_id, market.asker)
    titles = ["Old answered", "Old open", "New answered", "Newest open"]
    asked = {}
    for title in titles:
        where = kitchen.community_id if title == "Newest open" else cid
        asked[title] = await ask(community, where, market.asker, title=title)
        clock.advance(hours=1)
    low = await answer(community, asked["Old answered"].question_id, consumer(market.owner1))
    high = await answer(community, asked["New answered"].question_id, consumer(market.owner1))
    for voter in (market.owner2, market.owner3):
        await community.VoteAnswer(
            pb.VoteAnswerRequest(answer_id=high.answer_id, helpful=True), metadata=consumer(voter)
        )
    await community.VoteAnswer(
        pb.VoteAnswerRequest(answer_id=low.answer_id, helpful=False), metadata=consumer(market.owner2)
    )

    unanswered_first = [q.title for q in await questions_of(community)]
    assert unanswered_first == ["Newest open", "Old open", "New answered", "Old answered"]
    helpful = await questions_of(community, order=pb.QUESTION_ORDER_MOST_HELPFUL)
    assert [q.title for q in helpful] == ["New answered", "Old answered", "Newest open", "Old open"]
    assert [a.answer_id for a in helpful[0].top_answers] == [high.answer_id]
    # Across communities by default; one community on request.
    assert [q.title for q in await questions_of(community, community_id=cid)] == [
        "Old open",
        "New answered",
        "Old answered",
    ]
    assert await questions_of(community, product_id=KETTLE) == []

    for ordering in (pb.QUESTION_ORDER_UNANSWERED_FIRST, pb.QUESTION_ORDER_MOST_HELPFUL):
        seen: list[str] = []
        token = ""
        while True:
            response = await community.ListQuestions(
                pb.ListQuestionsRequest(product_id=BLENDER, order=ordering, page_size=1, page_token=token),
                metadata=SERVICE,
            )
            seen += [q.title for q in response.questions]
            if not (token := response.next_page_token):
                break
        assert seen == [q.title for q in await questions_of(community, order=ordering)]
    error = await refused(
        community.ListQuestions(pb.ListQuestionsRequest(), metadata=SERVICE), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert violated_fields(error) == ["product_id"]


async def test_answers_list_accepted_first_then_most_helpful(
    community: Community, market: Market, clock: Clock
) -> None:
    cid = await acme(community, market, market.asker, market.owner1, market.owner2, market.owner3, market.newcomer)
    question = await ask(community, cid, market.asker)
    answers = []
    for party in (market.owner1, market.owner2, market.owner3):
        answers.append(await answer(community, question.question_id, consumer(party)))
        clock.advance(minutes=1)
    await community.VoteAnswer(
        pb.VoteAnswerRequest(answer_id=answers[2].answer_id, helpful=True), metadata=consumer(market.newcomer)
    )
    await community.AcceptAnswer(
        pb.AcceptAnswerRequest(answer_id=answers[1].answer_id), metadata=consumer(market.asker)
    )
    expected = [answers[1].answer_id, answers[2].answer_id, answers[0].answer_id]
    listed = await community.ListAnswers(pb.ListAnswersRequest(question_id=question.question_id), metadata=SERVICE)
    assert [a.answer_id for a in listed.answers] == expected
    first = await community.ListAnswers(
        pb.ListAnswersRequest(question_id=question.question_id, page_size=2), metadata=SERVICE
    )
    rest = await community.ListAnswers(
        pb.ListAnswersRequest(question_id=question.question_id, page_size=2, page_token=first.next_page_token),
        metadata=SERVICE,
    )
    assert [a.answer_id for a in [*first.answers, *rest.answers]] == expected
    assert not rest.next_page_token


async def test_a_question_unanswered_past_the_deadline_is_escalated_to_the_maker_once(
    community: Community, market: Market, events: EventLog, clock: Clock
) -> None:
    cid = await acme(community, market)
    waiting = await ask(community, cid, market.asker, title="Still waiting")
    answered = await ask(community, cid, market.asker, title="Answered soon")
    await answer(community, answered.question_id, consumer(market.owner1))
    clock.advance(hours=47)
    later = await ask(community, cid, market.asker, title="Asked later")
    clock.advance(hours=2)  # past 48 hours for the first two, not the third

    (escalated,) = await events.wait_for(events_pb2.QuestionEscalated)
    assert (escalated.question_id, escalated.product_id, escalated.maker_id) == (waiting.question_id, BLENDER, MAKER)
    read = await community.GetQuestion(pb.GetQuestionRequest(question_id=waiting.question_id), metadata=SERVICE)
    assert read.HasField("escalate_time")
    listed = await community.ListEscalatedQuestions(pb.ListEscalatedQuestionsRequest(), metadata=partner(MAKER))
    assert [q.question_id for q in listed.questions] == [waiting.question_id]
    await refused(
        community.ListEscalatedQuestions(pb.ListEscalatedQuestionsRequest(maker_id=MAKER), metadata=partner(STRANGER)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    # The maker answers; the question drops off the open list but stays escalated.
    await answer(community, waiting.question_id, partner(MAKER))
    assert (
        list(
            (
                await community.ListEscalatedQuestions(pb.ListEscalatedQuestionsRequest(), metadata=partner(MAKER))
            ).questions
        )
        == []
    )
    everything = await community.ListEscalatedQuestions(
        pb.ListEscalatedQuestionsRequest(maker_id=MAKER, include_answered=True), metadata=SERVICE
    )
    assert [q.question_id for q in everything.questions] == [waiting.question_id]
    clock.advance(hours=48)
    (_, second) = await events.wait_for(events_pb2.QuestionEscalated, 2)
    assert second.question_id == later.question_id
    assert [e.question_id for e in events.of(events_pb2.QuestionEscalated)] == [waiting.question_id, later.question_id]
