"""Reputation from events: the ledger, its idempotence under replays, ranks and badges; and the read
model of products, listings and purchases the other rules rely on."""

from __future__ import annotations

from datetime import timedelta

import grpc
import sqlalchemy as sa
from community_testing import (
    BLENDER,
    KETTLE,
    MAKER,
    OTHER_RETAILER,
    RETAILER,
    T0,
    Community,
    EventLog,
    Feed,
    Market,
    answer,
    ask,
    consumer,
    create_community,
    entries,
    join,
    order,
    partner,
    product_registered,
    refused,
    reputation,
)
from google.protobuf.message import Message

from collabnet.community.v1 import community_pb2 as pb
from collabnet.community.v1 import events_pb2
from collabnet.improvement.v1 import events_pb2 as improvement
from collabnet.reviews.v1 import events_pb2 as reviews
from collabnet.supplychain.v1 import events_pb2 as supplychain
from collabnet_kit.server import Service
from collabnet_kit.tables import inbox


def review(review_id: str, author: str, rating: int = 5) -> reviews.ReviewPublished:
    return reviews.ReviewPublished(
        review_id=review_id,
        product_id=BLENDER,
        revision=1,
        author_id=author,
        channel_partner_id=RETAILER,
        rating=rating,
    )


def co_design(invitation_id: str, party: str, label: str = "revision B") -> improvement.CoDesignJoined:
    return improvement.CoDesignJoined(
        invitation_id=invitation_id, case_id="case-1", party_id=party, product_id=BLENDER, label=label
    )


def resolved(case_id: str, customer: str, outcome: improvement.CaseOutcome.ValueType) -> improvement.CaseResolved:
    return improvement.CaseResolved(
        case_id=case_id, review_id="rev", product_id=BLENDER, customer_id=customer, outcome=outcome, maker_id=MAKER
    )


async def test_reviews_co_design_and_recovered_cases_earn_points_each_naming_its_event(
    community: Community, feed: Feed, events: EventLog
) -> None:
    published = [
        (await feed.publish(review("rev-1", "C"), "reviews"), 10, "review_published", "rev-1"),
        (await feed.publish(co_design("inv-1", "C"), "improvement"), 30, "co_design_joined", "inv-1"),
        (
            await feed.publish(resolved("case-1", "C", improvement.CASE_OUTCOME_RECOVERED), "improvement"),
            20,
            "case_recovered",
            "case-1",
        ),
    ]
    # Cases resolved without recovery earn nothing.
    await feed.publish(resolved("case-2", "C", improvement.CASE_OUTCOME_NOT_RECOVERED), "improvement")
    await feed.publish(resolved("case-3", "C", improvement.CASE_OUTCOME_RESOLVED), "improvement")
    await feed.handled("reviews")
    await feed.handled("improvement")

    ledger = await entries(community, "C")
    assert sorted((e.cause_event_id, e.delta, e.reason, e.subject_id) for e in ledger) == sorted(published)
    shown = await reputation(community, "C")
    assert shown.points == 60
    assert (shown.rank, shown.next_rank, shown.points_to_next_rank) == ("contributor", "regular", 40)
    assert [(b.kind, b.label, b.product_id) for b in shown.badges] == [
        ("co_designer", "Co-designed revision B", BLENDER)
    ]
    changed = await events.wait_for(events_pb2.ReputationChanged, 3)
    assert sorted((c.party_id, c.delta, c.reason, c.cause_event_id) for c in changed) == sorted(
        ("C", delta, reason, cause) for cause, delta, reason, _ in published
    )
    # The streams are consumed side by side, so the running totals depend on which came first.
    totals = sorted(c.total for c in changed)
    assert len(set(totals)) == 3
    assert totals[-1] == 60


async def snapshot(community: Community, parties: list[str]) -> dict[str, tuple[object, ...]]:
    """What a party's reputation looks like from outside: points, rank, badges and ledger."""
    found: dict[str, tuple[object, ...]] = {}
    for party in parties:
        shown = await reputation(community, party)
        ledger = sorted((e.delta, e.reason, e.cause_event_id, e.subject_id) for e in await entries(community, party))
        badges = [(b.kind, b.label, b.product_id, b.count) for b in shown.badges]
        found[party] = (shown.points, shown.rank, tuple(badges), tuple(ledger))
    return found


async def test_reputation_after_replaying_the_event_stream_twice_equals_reputation_after_once(
    community: Community, feed: Feed, service: Service
) -> None:
    parties = [f"C{i}" for i in range(6)]
    stream: list[tuple[str, Message, str]] = []
    for i, party in enumerate(parties):
        stream.append(("reviews", review(f"rev-{i}", party), f"e-rev-{i}"))
        stream.append(("reviews", review(f"rev-{i}b", party), f"e-rev-{i}b"))
        if i % 2 == 0:
            stream.append(("improvement", co_design(f"inv-{i}", party, f"revision {i}"), f"e-co-{i}"))
        if i % 3 == 0:
            stream.append(
                ("improvement", resolved(f"case-{i}", party, improvement.CASE_OUTCOME_RECOVERED), f"e-case-{i}")
            )
        stream.append(
            (
                "supplychain",
                order(f"O-{i}", party, RETAILER, BLENDER, placed=T0 - timedelta(days=100 - i)),
                f"e-order-{i}",
            )
        )

    async def play(round_name: str) -> None:
        for source, event, event_id in stream:
            # A new message id each round: the stream's de-duplication window does not hide the replay.
            await feed.publish(event, source, event_id=event_id, msg_id=f"{event_id}-{round_name}")
        for source in ("reviews", "improvement", "supplychain"):
            await feed.handled(source)

    await play("once")
    once = await snapshot(community, parties)
    assert once["C0"][0] == 10 + 10 + 30 + 20

    await play("twice")  # the inbox recognises every event
    assert await snapshot(community, parties) == once

    # The inbox forgets events after its window; the ledger's constraints still recognise them.
    assert service.runtime is not None
    async with service.runtime.db.transaction() as session:
        await session.exec(inbox.delete())
    await play("after-the-inbox-forgot")
    assert await snapshot(community, parties) == once

    # The same review published again under a new event id earns nothing either.
    await feed.publish(review("rev-0", "C0"), "reviews")
    await feed.handled("reviews")
    assert await snapshot(community, parties) == once
    async with service.runtime.db.read() as session:
        handled = await session.scalar(sa.select(sa.func.count()).select_from(inbox))
    assert handled == len(stream) + 1


async def test_ranks_follow_points_and_badges_follow_verified_roles(
    community: Community, market: Market, feed: Feed
) -> None:
    acme = await create_community(community, "Acme owners")
    await join(community, acme.community_id, market.asker, market.owner1)
    await community.SetMemberRole(
        pb.SetMemberRoleRequest(community_id=acme.community_id, party_id=market.owner1, role=pb.MEMBER_ROLE_EXPERT),
        metadata=partner(MAKER),
    )
    question = await ask(community, acme.community_id, market.asker)
    given = await answer(community, question.question_id, consumer(market.owner1))
    await community.AcceptAnswer(pb.AcceptAnswerRequest(answer_id=given.answer_id), metadata=consumer(market.asker))
    for i in range(8):
        await feed.publish(review(f"r{i}", market.owner1), "reviews")
    await feed.handled("reviews")
    shown = await reputation(community, market.owner1)
    assert shown.points == 5 + 25 + 80
    assert (shown.rank, shown.next_rank, shown.points_to_next_rank) == ("regular", "trusted", 190)
    assert [(b.kind, b.label) for b in shown.badges] == [
        ("owner", f"Owner Blender 3000 since {market.bought_at:%Y-%m}"),
        ("expert", "Expert in Acme owners"),
        ("accepted_answers", "1 accepted answer"),
    ]
    nobody = await reputation(community, "C-nobody")
    assert (nobody.points, nobody.rank, nobody.next_rank, nobody.points_to_next_rank) == (
        0,
        "newcomer",
        "contributor",
        25,
    )
    assert list(nobody.badges) == []


async def test_the_ledger_is_its_partys_own(community: Community) -> None:
    await refused(
        community.ListReputationEntries(pb.ListReputationEntriesRequest(party_id="C"), metadata=consumer("D")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    mine = await community.ListReputationEntries(pb.ListReputationEntriesRequest(), metadata=consumer("C"))
    assert list(mine.entries) == []
    # Reputation itself is public.
    assert (await community.GetReputation(pb.GetReputationRequest(party_id="C"), metadata=consumer("D"))).points == 0


async def test_a_cancelled_order_makes_no_owner_whichever_event_arrives_first(
    community: Community, market: Market, feed: Feed
) -> None:
    assert [b.kind for b in (await reputation(community, market.owner1)).badges] == ["owner"]
    await feed.publish(
        supplychain.OrderCancelled(order_id="O1", customer_id=market.owner1, retailer_id=RETAILER), "supplychain"
    )
    # The cancellation of O9 overtakes its placement.
    await feed.publish(
        supplychain.OrderCancelled(order_id="O9", customer_id="C-late", retailer_id=RETAILER), "supplychain"
    )
    await feed.publish(order("O9", "C-late", RETAILER, KETTLE, placed=market.bought_at), "supplychain")
    await feed.handled("supplychain")
    assert list((await reputation(community, market.owner1)).badges) == []
    assert list((await reputation(community, "C-late")).badges) == []
    acme = await create_community(community, "Acme owners")
    await join(community, acme.community_id, market.asker, market.owner1, "C-late")
    question = await ask(community, acme.community_id, market.asker)
    assert question.invitation_count == 0  # owner2 bought it too, but is no member anywhere
    assert not (await answer(community, question.question_id, consumer(market.owner1))).verified_owner


async def test_a_delisted_retailer_no_longer_answers_officially_even_when_the_events_cross(
    community: Community, market: Market, feed: Feed
) -> None:
    await feed.publish(
        supplychain.ProductDelisted(listing_id="L2", product_id=BLENDER, retailer_id=OTHER_RETAILER), "supplychain"
    )
    # A delisting that overtook its listing: the listing stays delisted.
    await feed.publish(
        supplychain.ProductDelisted(listing_id="L4", product_id=KETTLE, retailer_id=OTHER_RETAILER), "supplychain"
    )
    await feed.publish(
        supplychain.ProductListed(listing_id="L4", product_id=KETTLE, retailer_id=OTHER_RETAILER, available=True),
        "supplychain",
    )
    # A late copy of an older registration changes nothing; a newer revision renames the product.
    await feed.publish(
        product_registered(BLENDER, "Blender 4000", "kitchen/blenders", "Acme", revision=2), "supplychain"
    )
    await feed.publish(
        product_registered(BLENDER, "Blender 2000", "kitchen/blenders", "Acme", revision=1), "supplychain"
    )
    await feed.handled("supplychain")
    acme = await create_community(community, "Acme owners")
    await join(community, acme.community_id, market.asker)
    blender = await ask(community, acme.community_id, market.asker)
    kettle = await ask(community, acme.community_id, market.asker, product_id=KETTLE)
    for question in (blender, kettle):
        await refused(
            answer(community, question.question_id, partner(OTHER_RETAILER)), grpc.StatusCode.PERMISSION_DENIED
        )
    assert (await answer(community, blender.question_id, partner(RETAILER))).official
    owner = await reputation(community, market.owner1)
    assert owner.badges[0].label.startswith("Owner Blender 4000 since")


async def test_events_without_a_party_are_handled_and_change_nothing(feed: Feed, service: Service) -> None:
    await feed.publish(reviews.ReviewPublished(review_id="anon", product_id=BLENDER, rating=3), "reviews")
    await feed.publish(improvement.CoDesignJoined(invitation_id="inv-x", label="revision C"), "improvement")
    await feed.handled("reviews")
    await feed.handled("improvement")
    assert service.runtime is not None
    async with service.runtime.db.read() as session:
        for table in ("reputation_entry", "reputation", "co_design"):
            assert await session.scalar(sa.select(sa.func.count()).select_from(sa.table(table))) == 0
        assert await session.scalar(sa.select(sa.func.count()).select_from(inbox)) == 2


async def test_points_for_answers_and_promoted_ideas_name_the_events_the_community_published(
    community: Community, market: Market, events: EventLog
) -> None:
    acme = await create_community(community, "Acme owners")
    await join(community, acme.community_id, market.asker, market.owner1)
    question = await ask(community, acme.community_id, market.asker)
    given = await answer(community, question.question_id, consumer(market.owner1))
    await community.AcceptAnswer(pb.AcceptAnswerRequest(answer_id=given.answer_id), metadata=consumer(market.asker))
    # Official answers are the partner's work, not a member's: no points.
    await answer(community, question.question_id, partner(MAKER))
    idea = await community.SubmitIdea(
        pb.SubmitIdeaRequest(community_id=acme.community_id, title="Glass jar", description="Please."),
        metadata=consumer(market.owner1),
    )
    await community.PromoteIdea(pb.PromoteIdeaRequest(idea_id=idea.idea_id), metadata=partner(MAKER))
    await events.wait_for(events_pb2.ReputationChanged, 3)
    published = {
        p.type.rsplit(".", 1)[1]: p.id
        for p in events.received
        if getattr(p.event, "answer_id", given.answer_id) == given.answer_id  # not the maker's answer
    }
    ledger = {e.reason: (e.cause_event_id, e.subject_id, e.delta) for e in await entries(community, market.owner1)}
    assert ledger == {
        "answer_posted": (published["AnswerPosted"], given.answer_id, 5),
        "answer_accepted": (published["AnswerAccepted"], given.answer_id, 25),
        "idea_promoted": (published["IdeaPromoted"], idea.idea_id, 50),
    }
    changed = events.of(events_pb2.ReputationChanged)
    assert [(c.party_id, c.delta, c.total, c.reason) for c in changed] == [
        (market.owner1, 5, 5, "answer_posted"),
        (market.owner1, 25, 30, "answer_accepted"),
        (market.owner1, 50, 80, "idea_promoted"),
    ]
    assert {c.cause_event_id for c in changed} == {cause for cause, _, _ in ledger.values()}
    assert (await reputation(community, MAKER)).points == 0
