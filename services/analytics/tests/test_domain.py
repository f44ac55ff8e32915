"""analytics' rules without I/O: audiences, references, minimisation, pseudonyms, consents, paging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath

import pytest

from collabnet.community.v1 import events_pb2 as community
from collabnet.improvement.v1 import events_pb2 as improvement
from collabnet.reviews.v1 import events_pb2 as reviews
from collabnet.supplychain.v1 import events_pb2 as supplychain
from collabnet_analytics import domain
from collabnet_kit.errors import InvalidArgument

KEY = b"k" * 32
NOW = datetime(2026, 11, 23, tzinfo=UTC)


def test_a_review_goes_to_the_product_maker_and_every_retailer_listing_it() -> None:
    review = reviews.ReviewPublished(product_id="p", author_id="carla")
    assert domain.needs(review) == {("product", "p")}
    assert domain.wants(review) == {("product", "p"), ("listing", "p")}
    refs = {("product", "p"): frozenset({"m"}), ("listing", "p"): frozenset({"r1", "r2"})}
    assert domain.audience(review, refs) == {"m", "r1", "r2"}


def test_listings_are_remembered_as_they_come_and_go() -> None:
    refs = {("product", "p"): frozenset({"m"}), ("listing", "p"): frozenset({"r1"})}
    listed = supplychain.ProductListed(product_id="p", retailer_id="r2")
    assert domain.remembers(listed, refs) == {("listing", "p"): {"r1", "r2"}}
    assert domain.audience(listed, refs) == {"m", "r1", "r2"}
    delisted = supplychain.ProductDelisted(product_id="p", retailer_id="r1")
    assert domain.remembers(delisted, refs) == {("listing", "p"): frozenset()}


def test_an_order_goes_to_its_retailer_and_the_makers_of_its_lines_and_its_later_events_follow_it() -> None:
    refs = {("product", "a"): frozenset({"m1"}), ("product", "b"): frozenset({"m2"})}
    lines = [supplychain.OrderLine(product_id="a"), supplychain.OrderLine(product_id="b")]
    placed = supplychain.OrderPlaced(order_id="o", retailer_id="r", customer_id="carla", lines=lines)
    assert domain.needs(placed) == {("product", "a"), ("product", "b")}
    assert domain.audience(placed, refs) == {"r", "m1", "m2"}
    assert domain.remembers(placed, refs) == {("order", "o"): {"r", "m1", "m2"}}
    cancelled = supplychain.OrderCancelled(order_id="o", retailer_id="r")
    assert domain.needs(cancelled) == {("order", "o")}
    assert domain.audience(cancelled, {("order", "o"): frozenset({"r", "m1", "m2"})}) == {"r", "m1", "m2"}
    delayed = supplychain.ShipmentDelayed(order_id="o", carrier_id="c")
    assert domain.audience(delayed, {("order", "o"): frozenset({"r"})}) == {"r", "c"}


def test_cases_initiatives_and_communities_go_to_their_partners() -> None:
    opened = improvement.CaseOpened(case_id="c", maker_id="m", retailer_id="r", customer_id="carla")
    assert domain.audience(opened, {}) == {"m", "r"}
    assert domain.remembers(opened, {}) == {("case", "c"): {"m", "r"}}
    closed = improvement.CaseClosed(case_id="c")
    assert domain.audience(closed, {("case", "c"): frozenset({"m", "r"})}) == {"m", "r"}
    met = improvement.ObjectiveMet(initiative_id="i")
    assert domain.needs(met) == {("initiative", "i")}
    assert domain.audience(met, {("initiative", "i"): frozenset({"m"})}) == {"m"}
    joined = community.MemberJoined(community_id="k", partner_id="r", party_id="carla")
    assert domain.audience(joined, {}) == {"r"}
    assert domain.remembers(joined, {}) == {("community", "k"): {"r"}}


def test_events_about_people_alone_go_to_no_partner() -> None:
    assert domain.audience(community.ReputationChanged(party_id="carla", delta=5), {}) == frozenset()
    assert "ReputationChanged" not in domain.SHARED_EVENTS


def test_a_person_without_consent_becomes_the_partners_pseudonym_and_their_words_are_left_out() -> None:
    idea = community.IdeaPromoted(
        partner_id="r", submitter_id="carla", title="A lid that locks", description="Mine came off", product_id="p"
    )
    assert domain.persons(idea) == {"carla"}
    hidden = domain.minimise(idea, key=KEY, partner_id="r", disclosed=set())
    assert isinstance(hidden, community.IdeaPromoted)
    assert hidden.submitter_id == domain.pseudonym(KEY, "r", "carla")
    assert hidden.title == "" and hidden.description == ""
    assert hidden.partner_id == "r" and hidden.product_id == "p"
    assert idea.submitter_id == "carla"  # the original is untouched
    assert domain.minimise(idea, key=KEY, partner_id="r", disclosed={"carla"}) == idea


def test_nested_and_optional_personal_fields_are_minimised_by_their_owner() -> None:
    recall = supplychain.RecallIssued(
        product_ids=["p"],
        affected_orders=[
            supplychain.RecallIssued.AffectedOrder(order_id="o1", customer_id="carla", retailer_id="r", email="c@x"),
            supplychain.RecallIssued.AffectedOrder(order_id="o2", customer_id="dan", retailer_id="r", phone="+1"),
        ],
    )
    assert domain.persons(recall) == {"carla", "dan"}
    seen = domain.minimise(recall, key=KEY, partner_id="r", disclosed={"dan"})
    assert isinstance(seen, supplychain.RecallIssued)
    carla, dan = seen.affected_orders
    assert carla.customer_id.startswith("anon-") and not carla.HasField("email")
    assert dan.customer_id == "dan" and dan.phone == "+1"


def test_pseudonyms_are_stable_for_a_partner_and_differ_between_partners_and_keys() -> None:
    first = domain.pseudonym(KEY, "r1", "carla")
    assert first == domain.pseudonym(KEY, "r1", "carla")
    assert first != domain.pseudonym(KEY, "r2", "carla")
    assert first != domain.pseudonym(KEY, "r1", "dan")
    assert first != domain.pseudonym(b"another key", "r1", "carla")
    assert domain.partner_key(KEY, "r1") != domain.partner_key(KEY, "r2")


def test_a_consent_is_in_force_while_granted_and_unexpired_and_an_older_change_never_replaces_a_newer() -> None:
    granted = domain.Consent(True, None, NOW)
    assert granted.in_force(NOW)
    assert not domain.Consent(True, NOW - timedelta(seconds=1), NOW).in_force(NOW)
    assert not domain.Consent(False, None, NOW).in_force(NOW)
    older = domain.Consent(False, None, NOW - timedelta(minutes=1))
    assert not domain.newer(granted, older)
    assert domain.newer(granted, domain.Consent(False, None, NOW + timedelta(minutes=1)))
    assert domain.newer(None, older)


def test_page_sizes_are_bounded_and_unknown_types_are_refused() -> None:
    assert domain.page_size(0) == domain.DEFAULT_PAGE_SIZE
    assert domain.page_size(10**6) == domain.MAX_PAGE_SIZE
    with pytest.raises(InvalidArgument):
        domain.page_size(-1)
    with pytest.raises(InvalidArgument) as refused:
        domain.validate_event_types(["x.Y"], ["a.B"])
    assert refused.value.violations[0].field == "event_types"


def test_an_export_goes_to_an_object_store_or_under_the_export_root_and_nowhere_else() -> None:
    root = PurePosixPath("/srv/exports")
    assert domain.export_destination(root, "s3://bucket/r1") == "s3://bucket/r1"
    assert domain.export_destination(root, "r1/2026") == "/srv/exports/r1/2026"
    assert domain.export_destination(root, "/srv/exports/r1") == "/srv/exports/r1"
    for outside in ("/etc", "../r1", "r1/../../etc", "file:///etc", "http://example.org/x"):
        with pytest.raises(InvalidArgument) as refused:
            domain.export_destination(root, outside)
        assert refused.value.violations[0].field == "destination"
