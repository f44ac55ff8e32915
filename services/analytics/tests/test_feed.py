"""A partner's feed holds exactly the events it may see, in order and resumable; people appear in it
as themselves only with their consent."""

from __future__ import annotations

import grpc
from analytics_testing import SERVICE, Network, new_id, partner, refused

from collabnet.analytics.v1 import analytics_pb2 as pb
from collabnet.analytics.v1 import events_pb2 as analytics
from collabnet.community.v1 import events_pb2 as community
from collabnet.identity.v1 import events_pb2 as identity
from collabnet.improvement.v1 import events_pb2 as improvement
from collabnet.reviews.v1 import events_pb2 as reviews
from collabnet.supplychain.v1 import events_pb2 as supplychain
from collabnet_kit import paging
from collabnet_kit.bus import stream_name
from collabnet_kit.testing import eventually


async def test_each_of_two_retailers_and_two_makers_sees_exactly_the_events_about_its_own_resources(
    network: Network,
) -> None:
    m1, m2, r1, r2 = (new_id() for _ in range(4))
    consumer = new_id()
    await network.join(m1, m2, r1, r2)
    p1, p2, p3 = new_id(), new_id(), new_id()
    expected: dict[str, list[str]] = {m1: [], m2: [], r1: [], r2: []}

    async def event(message: object, *partners: str) -> str:
        event_id = await network.publish(message)  # type: ignore[arg-type]
        await network.settled()  # streams are read side by side: one at a time keeps the order known
        for p in partners:
            expected[p].append(event_id)
        return event_id

    # P1 and P3 are M1's, P2 is M2's; R1 lists P1 and P3, R2 lists P2 and P3.
    await event(supplychain.ProductRegistered(product_id=p1, maker_id=m1, sku="P1", name="Kettle"), m1)
    await event(supplychain.ProductRegistered(product_id=p2, maker_id=m2, sku="P2", name="Toaster"), m2)
    await event(supplychain.ProductRegistered(product_id=p3, maker_id=m1, sku="P3", name="Mixer"), m1)
    await network.settled()
    await event(supplychain.ProductListed(product_id=p1, retailer_id=r1, listing_id=new_id()), r1, m1)
    await event(supplychain.ProductListed(product_id=p2, retailer_id=r2, listing_id=new_id()), r2, m2)
    await event(supplychain.ProductListed(product_id=p3, retailer_id=r1, listing_id=new_id()), r1, m1)
    await network.settled()
    await event(supplychain.ProductListed(product_id=p3, retailer_id=r2, listing_id=new_id()), r2, m1, r1)
    await network.settled()

    # Reviews and ratings go to the product's maker and every retailer listing it.
    await event(reviews.ReviewPublished(review_id=new_id(), product_id=p1, author_id=consumer, rating=2), m1, r1)
    await event(reviews.ReviewPublished(review_id=new_id(), product_id=p2, author_id=consumer, rating=5), m2, r2)
    await event(reviews.RatingSummaryChanged(product_id=p3, count=1, mean=4.0), m1, r1, r2)
    # An order goes to its retailer and the makers of its lines; its later events follow it.
    order = new_id()
    lines = [supplychain.OrderLine(product_id=p2, quantity=1), supplychain.OrderLine(product_id=p3, quantity=2)]
    await event(supplychain.OrderPlaced(order_id=order, customer_id=consumer, retailer_id=r2, lines=lines), r2, m1, m2)
    await network.settled()
    await event(supplychain.OrderCancelled(order_id=order, customer_id=consumer, retailer_id=r2), r2, m1, m2)
    # A case goes to its maker and retailer, and so do its later events.
    case = new_id()
    await event(
        improvement.CaseOpened(case_id=case, product_id=p1, customer_id=consumer, maker_id=m1, retailer_id=r1), m1, r1
    )
    await network.settled()
    await event(improvement.CaseEngaged(case_id=case, partner_id=m1), m1, r1)
    # An initiative goes to its owner; a community's events to the partner running it.
    initiative = new_id()
    await event(improvement.InitiativeLaunched(initiative_id=initiative, owner_id=m2, product_id=p2), m2)
    community_id = new_id()
    await event(community.MemberJoined(community_id=community_id, party_id=consumer, partner_id=r1), r1)
    await network.settled()
    await event(improvement.ObjectiveMet(initiative_id=initiative, objective_id=new_id(), target=4.2, value=4.3), m2)
    await event(community.IdeaStatusChanged(idea_id=new_id(), community_id=community_id, new_status="planned"), r1)
    # Nobody's: a person's reputation, identity's own events.
    await event(community.ReputationChanged(party_id=consumer, delta=5, total=5))
    await event(identity.PartyRegistered(party_id=consumer, display_name="Carla"))
    await network.settled()

    for who, ids in expected.items():
        feed = await network.feed(who)
        assert [e.id for e in feed] == ids, who
        positions = [e.position for e in feed]
        assert positions == sorted(set(positions))
    assert sum(map(len, expected.values())) == 33


async def test_an_event_about_a_product_not_yet_known_waits_for_it_and_is_shared_once(network: Network) -> None:
    maker, retailer, product = new_id(), new_id(), new_id()
    await network.join(maker, retailer)
    review = await network.publish(reviews.ReviewPublished(review_id=new_id(), product_id=product, rating=4))
    await network.settled()
    assert await network.feed(maker) == []

    registered = await network.publish(supplychain.ProductRegistered(product_id=product, maker_id=maker))
    await network.settled()
    feed = await network.feed(maker)
    assert [e.id for e in feed] == [registered, review]
    # Redelivered (the same event again): nothing twice.
    await network.publish(reviews.ReviewPublished(review_id=new_id(), product_id=product, rating=4), event_id=review)
    await network.settled()
    assert [e.id for e in await network.feed(maker)] == [registered, review]


async def test_a_consumer_without_consent_is_a_pseudonym_stable_for_a_partner_and_different_for_each(
    network: Network,
) -> None:
    maker, r1, r2, product = new_id(), new_id(), new_id(), new_id()
    carla, dan = new_id(), new_id()
    await network.join(maker, r1, r2)
    await network.publish(supplychain.ProductRegistered(product_id=product, maker_id=maker))
    await network.settled()
    for retailer in (r1, r2):
        await network.publish(supplychain.ProductListed(product_id=product, retailer_id=retailer))
    await network.settled()
    for author in (carla, carla, dan):
        await network.publish(reviews.ReviewPublished(review_id=new_id(), product_id=product, author_id=author))
    await network.settled()

    def authors(feed: list[pb.FeedEvent]) -> list[str]:
        found = []
        for e in feed:
            if e.type == "collabnet.reviews.v1.ReviewPublished":
                review = reviews.ReviewPublished()
                assert e.event.Unpack(review)
                found.append(review.author_id)
        return found

    seen = {p: authors(await network.feed(p)) for p in (maker, r1, r2)}
    for names in seen.values():
        assert carla not in names and dan not in names
        assert names[0] == names[1] != names[2]  # Carla twice under one name, Dan under another
    assert len({names[0] for names in seen.values()}) == 3  # each partner its own name for Carla
    assert len({names[2] for names in seen.values()}) == 3


async def test_consent_to_analytics_shows_the_person_to_that_partner_only_and_withdrawing_it_hides_them_again(
    network: Network,
) -> None:
    runs, other = new_id(), new_id()  # two partners running communities
    carla = new_id()
    await network.join(runs, other)
    community_id = new_id()
    idea = community.IdeaSubmitted(
        idea_id=new_id(), community_id=community_id, partner_id=runs, submitter_id=carla, title="A lid that locks"
    )
    await network.publish(idea)
    await network.settled()

    async def seen() -> community.IdeaSubmitted:
        (entry,) = await network.feed(runs)
        found = community.IdeaSubmitted()
        assert entry.event.Unpack(found)
        return found

    hidden = await seen()
    assert hidden.submitter_id.startswith("anon-") and hidden.title == ""
    assert hidden.partner_id == runs and hidden.idea_id == idea.idea_id  # partners and ids stay

    await network.consent(carla, other)  # consent with another partner changes nothing here
    await network.settled()
    assert await seen() == hidden

    await network.consent(carla, runs)
    await network.settled()
    assert await seen() == idea

    await network.consent(carla, runs, granted=False)
    await network.settled()
    assert await seen() == hidden


async def test_every_entry_is_published_minimised_for_its_partner(network: Network) -> None:
    maker, retailer, product, carla = new_id(), new_id(), new_id(), new_id()
    await network.join(maker, retailer)
    await network.consent(carla, retailer)
    await network.publish(supplychain.ProductRegistered(product_id=product, maker_id=maker))
    await network.settled()
    await network.publish(supplychain.ProductListed(product_id=product, retailer_id=retailer))
    await network.settled()
    review_id = await network.publish(
        reviews.ReviewPublished(review_id=new_id(), product_id=product, author_id=carla, rating=1)
    )
    await network.settled()

    stream = stream_name("analytics")
    subscription = await network.bus.js.pull_subscribe("collabnet.analytics.v1.EventShared", stream=stream)
    shared: dict[str, reviews.ReviewPublished] = {}

    async def both() -> bool:
        try:
            for message in await subscription.fetch(10, timeout=0.5):
                event = analytics.EventShared.FromString(message.data)
                if event.event_id == review_id:
                    review = reviews.ReviewPublished()
                    assert event.event.Unpack(review)
                    shared[event.partner_id] = review
        except TimeoutError:
            pass
        return len(shared) == 2

    await eventually(both)
    assert shared[retailer].author_id == carla  # consented with the retailer
    assert shared[maker].author_id.startswith("anon-")


async def test_feed_pages_resume_from_their_token_and_filter_by_type(network: Network) -> None:
    maker, product = new_id(), new_id()
    await network.join(maker)
    await network.publish(supplychain.ProductRegistered(product_id=product, maker_id=maker))
    await network.settled()
    for rating in (1, 2, 3):
        await network.publish(reviews.ReviewPublished(review_id=new_id(), product_id=product, rating=rating))
    await network.settled()

    first = await network.analytics.ListFeedEvents(pb.ListFeedEventsRequest(page_size=2), metadata=partner(maker))
    assert len(first.events) == 2 and first.next_page_token
    rest = await network.analytics.ListFeedEvents(
        pb.ListFeedEventsRequest(page_token=first.next_page_token), metadata=partner(maker)
    )
    assert len(rest.events) == 2
    assert first.events[-1].position < rest.events[0].position
    stored = await network.analytics.ListFeedEvents(
        pb.ListFeedEventsRequest(after_position=first.events[-1].position), metadata=partner(maker)
    )
    assert stored.events == rest.events
    # At the end, the token stays where the feed is: polling with it gives what comes next.
    end = await network.analytics.ListFeedEvents(
        pb.ListFeedEventsRequest(page_token=rest.next_page_token), metadata=partner(maker)
    )
    assert list(end.events) == [] and end.next_page_token == rest.next_page_token
    later = await network.publish(reviews.ReviewPublished(review_id=new_id(), product_id=product, rating=5))
    await network.settled()
    polled = await network.analytics.ListFeedEvents(
        pb.ListFeedEventsRequest(page_token=end.next_page_token), metadata=partner(maker)
    )
    assert [e.id for e in polled.events] == [later]

    reviewed = await network.feed(maker, event_types=["collabnet.reviews.v1.ReviewPublished"])
    assert len(reviewed) == 4


async def test_a_partner_reads_only_its_own_feed_and_bad_requests_are_refused(network: Network) -> None:
    mine, theirs, carla = new_id(), new_id(), new_id()
    request = pb.ListFeedEventsRequest
    first_token = (await network.analytics.ListFeedEvents(request(), metadata=partner(mine))).next_page_token
    await refused(
        network.analytics.ListFeedEvents(request(partner_id=theirs), metadata=partner(mine)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await refused(
        network.analytics.ListFeedEvents(request(), metadata=partner(mine, acting_for=carla)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    for bad in (
        request(page_token="nonsense"),
        *(request(page_token=paging.encode_cursor(odd)) for odd in ("²", "9" * 30, "\u0661", "-1")),
        request(event_types=["collabnet.identity.v1.PartyRegistered"]),
        request(page_size=-1),
        request(after_position=-1),
        request(after_position=3, page_token=first_token),
    ):
        await refused(network.analytics.ListFeedEvents(bad, metadata=partner(mine)), grpc.StatusCode.INVALID_ARGUMENT)
    await refused(network.analytics.ListFeedEvents(request(), metadata=SERVICE), grpc.StatusCode.INVALID_ARGUMENT)
    await refused(
        network.analytics.ExportFeed(
            pb.ExportFeedRequest(partner_id=mine, destination="/tmp/x"), metadata=partner(mine)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
