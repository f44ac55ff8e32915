"""Reviews' rules, without I/O."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from collabnet_kit.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from collabnet_kit.principal import Principal
from collabnet_reviews import domain
from collabnet_reviews.domain import Counted, Decision, Purchase, Reason, Stats, Status, Tie, Words

GOOD = "Boils a litre in two minutes and the lid closes firmly."
DAY = date(2026, 3, 1)


def violations(error: pytest.ExceptionInfo[InvalidArgument]) -> set[str]:
    return {v.field for v in error.value.violations}


def test_a_rating_outside_1_to_5_and_an_empty_or_oversized_body_name_their_fields() -> None:
    for rating in (0, 6, -1):
        with pytest.raises(InvalidArgument) as raised:
            domain.validate_submission("P", "C", Words(rating, "", GOOD), False, "")
        assert violations(raised) == {"rating"}
    for body in ("", "   \n", "x" * 10_001):
        with pytest.raises(InvalidArgument) as raised:
            domain.validate_submission("P", "C", Words(3, "", body), False, "")
        assert violations(raised) == {"body"}
    domain.validate_submission("P", "C", Words(5, "", "x" * 10_000), False, "")


def test_every_wrong_field_is_reported_at_once() -> None:
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_submission("", "", Words(9, "t" * 201, "", ("ftp://x", "https://ok.example/a.jpg")), False, "x")
    assert violations(raised) == {"product_id", "author_id", "rating", "body", "title", "media_urls[0]", "incentive"}
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_revision("R", Words(3, "", GOOD, tuple(f"https://cdn.example/{i}.jpg" for i in range(11))))
    assert violations(raised) == {"media_urls"}


def test_the_automatic_checks_find_short_profane_personal_and_duplicate_text() -> None:
    assert domain.automatic_checks(Words(5, "", GOOD), duplicate=False) == []
    assert domain.automatic_checks(Words(5, "", "Great!"), duplicate=False) == [Reason.TOO_SHORT]
    assert domain.automatic_checks(Words(2, "", GOOD + " What a shitty lid."), duplicate=False) == [Reason.PROFANITY]
    assert domain.automatic_checks(Words(2, "Mail me", GOOD + " carla@example.org"), duplicate=False) == [
        Reason.PERSONAL_DATA
    ]
    assert domain.automatic_checks(Words(2, "", GOOD + " Call +49 30 1234567."), duplicate=False) == [
        Reason.PERSONAL_DATA
    ]
    assert domain.automatic_checks(Words(4, "", GOOD), duplicate=True) == [Reason.DUPLICATE]


def test_a_harsh_one_star_review_passes_every_automatic_check() -> None:
    harsh = "Terrible kettle. It leaked on day two, the handle melted, and support ignored me. Avoid it."
    assert domain.automatic_checks(Words(1, "Worst purchase ever", harsh), duplicate=False) == []


def test_dates_model_numbers_and_scunthorpe_are_neither_phone_numbers_nor_profanity() -> None:
    assert not domain.has_personal_data("Bought on 2026-01-15, model KX-200, 1500 W, 1.7 l.")
    assert not domain.has_profanity("Shipped from Scunthorpe, a classic shape, the assessment is fair.")
    assert domain.has_personal_data("reach me at (030) 123 4567")


def test_duplicates_are_the_same_words_whatever_the_case_spacing_or_punctuation() -> None:
    assert domain.text_fingerprint("Great kettle, boils fast!") == domain.text_fingerprint("great  KETTLE boils fast")
    assert domain.text_fingerprint("Great kettle") != domain.text_fingerprint("Great kettle indeed")


def test_a_version_breaking_a_rule_is_rejected_and_one_with_unknown_disclosure_waits() -> None:
    assert domain.outcome([Reason.PROFANITY], True) == (Status.REJECTED, [Reason.PROFANITY])
    assert domain.outcome([Reason.PROFANITY], False) == (Status.REJECTED, [Reason.PROFANITY])
    assert domain.outcome([], False) == (Status.PENDING, [Reason.AWAITING_DISCLOSURE])
    assert domain.outcome([], True) == (Status.PUBLISHED, [])


def test_a_rejection_cites_a_rule_and_says_why_and_no_rule_is_about_being_negative() -> None:
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_moderation(Decision.REJECT, [], "too negative")
    assert violations(raised) == {"reasons"}
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_moderation(Decision.REJECT, [Reason.SPAM], "")
    assert violations(raised) == {"note"}
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_moderation(Decision.REJECT, [Reason.AWAITING_DISCLOSURE], "x")
    assert violations(raised) == {"reasons"}
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_moderation(None, [], "")
    assert violations(raised) == {"decision"}
    assert domain.validate_moderation(Decision.REJECT, [Reason.SPAM, Reason.SPAM], "a coupon link") == [Reason.SPAM]
    assert domain.validate_moderation(Decision.PUBLISH, [], "") == []
    assert not any("negative" in r.value or "rating" in r.value for r in Reason)


def test_working_for_supplying_or_partnering_with_the_maker_affiliates_and_buying_does_not() -> None:
    employee = Tie("C", "M", "employee_of")
    assert domain.affiliating("C", [employee]) == [employee]
    assert domain.affiliating("C", [Tie("C", "M", "supplier_of")])
    assert domain.affiliating("C", [Tie("M", "C", "partner_of")])  # symmetric
    assert not domain.affiliating("C", [Tie("C", "R", "customer_of"), Tie("C", "R", "member_of")])
    assert not domain.affiliating("C", [Tie("M", "C", "supplier_of")])  # C buys from M
    assert not domain.affiliating("C", [Tie("M", "C", "employee_of")])  # read from C's side: M works for C
    # Through the maker's people: partnering with (or working for) one of its employees.
    assert domain.affiliating("X", [Tie("X", "E", "partner_of", via="E")])
    assert domain.affiliating("X", [Tie("E", "X", "partner_of", via="E")])
    assert not domain.affiliating("X", [Tie("X", "E", "customer_of", via="E")])
    assert not domain.affiliating("X", [Tie("X", "E", "supplier_of", via="E")], via_people=("partner_of",))


def test_a_review_shows_on_its_own_listing_and_on_others_listing_the_product_unless_opted_out() -> None:
    assert domain.shown_at("R", "R", lists_product=False, opted_out={"R"})
    assert domain.shown_at("R", "R3", lists_product=True, opted_out=set())
    assert not domain.shown_at("R", "R3", lists_product=True, opted_out={"R"})
    assert not domain.shown_at("R", "R2", lists_product=False, opted_out=set())
    assert domain.syndicated_from("R", "R3") == "R"
    assert domain.syndicated_from("R", "R") == ""
    assert domain.syndicated_from("R", None) == ""


def test_the_latest_valid_purchase_verifies_and_a_cancelled_undelivered_order_does_not() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    first = Purchase("o1", 1, t0, "R")
    later = Purchase("o2", 2, t0 + timedelta(days=9), "R3")
    assert domain.latest_purchase([first, later]) == later
    assert domain.latest_purchase([first, Purchase("o2", 2, t0 + timedelta(days=9), "R3", cancelled=True)]) == first
    delivered_then_cancelled = Purchase("o3", 2, t0, "R", cancelled=True, delivered=True)
    assert domain.latest_purchase([delivered_then_cancelled]) == delivered_then_cancelled
    assert domain.latest_purchase([]) is None


def test_a_revision_from_2_to_4_moves_the_rating_between_days_and_keeps_the_totals() -> None:
    before = Counted(2, 1, DAY)
    after = Counted(4, 1, DAY + timedelta(days=3))
    deltas = domain.summary_deltas(before, after)
    assert deltas[(0, None)].count == 0
    assert deltas[(0, None)].total == 2
    assert deltas[(0, None)].distribution == [0, -1, 0, 1, 0]
    assert deltas[(0, DAY)].count == -1
    assert deltas[(0, DAY + timedelta(days=3))].count == 1
    assert deltas[(1, None)].total == 2
    assert list(deltas) == sorted(deltas, key=lambda key: (key[0], key[1] or date.min))


def test_an_unchanged_contribution_moves_nothing_and_a_withdrawal_takes_it_all_back() -> None:
    counted = Counted(5, 2, DAY)
    assert domain.summary_deltas(counted, counted) == {}
    taken = domain.summary_deltas(counted, None)
    assert set(taken) == {(0, None), (0, DAY), (2, None), (2, DAY)}
    assert all(d.count == -1 and d.total == -5 for d in taken.values())
    assert domain.counted(Status.REJECTED, 5, 2, DAY) is None
    assert domain.counted(Status.PUBLISHED, 5, 2, DAY) == counted


def test_the_smoothed_mean_pulls_a_few_ratings_towards_the_prior() -> None:
    few = Stats(3, 15, (0, 0, 0, 0, 3))
    many = Stats(300, 1440, (0, 0, 0, 60, 240))
    assert few.mean == 5.0
    assert few.smoothed(3.0, 5.0) == pytest.approx((15 + 15) / 8)
    assert many.smoothed(3.0, 5.0) > few.smoothed(3.0, 5.0)
    assert Stats.zero().smoothed(3.0, 5.0) == 3.0
    assert Stats.zero().mean == 0.0


def test_the_trend_compares_the_last_30_days_with_the_30_before() -> None:
    today = date(2026, 3, 31)
    daily = {
        today: Stats(2, 9, (0, 0, 0, 1, 1)),
        today - timedelta(days=29): Stats(1, 3, (0, 0, 1, 0, 0)),
        today - timedelta(days=30): Stats(2, 4, (0, 2, 0, 0, 0)),
        today - timedelta(days=60): Stats(9, 9, (9, 0, 0, 0, 0)),
    }
    trend = domain.trend(daily, today)
    assert trend.current.count == 3
    assert trend.current.mean == 4.0
    assert trend.previous.count == 2
    assert trend.mean_change == 2.0
    assert len(trend.days) == 30
    assert trend.days[0][0] == today - timedelta(days=29)
    assert trend.days[-1] == (today, daily[today])
    assert domain.trend({}, today).mean_change == 0.0


def test_a_partner_writes_for_the_party_it_acts_for_through_its_own_channel() -> None:
    acting = Principal(partner_id="R", party_id="C", scopes=frozenset({domain.WRITE_SCOPE}))
    assert domain.submitter(acting, "C", "") == "R"
    with pytest.raises(PermissionDenied):
        domain.submitter(acting, "D", "")
    with pytest.raises(PermissionDenied):
        domain.submitter(acting, "C", "R2")
    with pytest.raises(PermissionDenied):
        domain.submitter(Principal(partner_id="R", party_id="C"), "C", "")  # no reviews:write
    with pytest.raises(InvalidArgument):
        domain.submitter(Principal(service="gateway"), "C", "")
    assert domain.submitter(Principal(service="gateway"), "C", "R") == "R"


def test_only_the_author_revises_and_a_partner_or_service_never_edits_its_words() -> None:
    author = Principal(partner_id="R2", party_id="C", scopes=frozenset({domain.WRITE_SCOPE}))
    domain.require_author(author, "C", "revise a review", services=False)
    for other in (
        Principal(partner_id="R", scopes=frozenset({domain.WRITE_SCOPE})),
        Principal(partner_id="R", party_id="D", scopes=frozenset({domain.WRITE_SCOPE})),
        Principal(service="improvement"),
    ):
        with pytest.raises(PermissionDenied):
            domain.require_author(other, "C", "revise a review", services=False)
    domain.require_author(Principal(service="privacy"), "C", "withdraw a review", services=True)


def test_votes_are_by_one_party_on_published_reviews_of_others() -> None:
    acting = Principal(partner_id="R", party_id="D", scopes=frozenset({domain.WRITE_SCOPE}))
    assert domain.voter(acting, "") == "D"
    with pytest.raises(PermissionDenied):
        domain.voter(acting, "E")
    assert domain.voter(Principal(partner_id="R", scopes=frozenset({domain.WRITE_SCOPE})), "") == "R"
    domain.require_votable(Status.PUBLISHED, "C", "D")
    with pytest.raises(FailedPrecondition, match="withdrawn"):
        domain.require_votable(Status.WITHDRAWN, "C", "D")
    with pytest.raises(FailedPrecondition, match="own review"):
        domain.require_votable(Status.PUBLISHED, "C", "C")


def test_the_channel_partner_moderates_and_a_maker_with_a_stake_does_not() -> None:
    moderator = Principal(partner_id="R", scopes=frozenset({domain.MODERATE_SCOPE}))
    domain.require_moderator(moderator, "R")
    with pytest.raises(PermissionDenied):
        domain.require_moderator(Principal(partner_id="M", scopes=frozenset({domain.MODERATE_SCOPE})), "R")
    with pytest.raises(PermissionDenied):
        domain.require_moderator(Principal(partner_id="R"), "R")
    with pytest.raises(FailedPrecondition):
        domain.moderation_transition(Status.WITHDRAWN, Decision.PUBLISH)
    assert domain.moderation_transition(Status.REJECTED, Decision.PUBLISH) is Status.PUBLISHED


def test_only_a_maker_or_seller_responds() -> None:
    domain.require_maker_or_seller("M", "M", [], "P")
    domain.require_maker_or_seller("R", "M", ["R"], "P")
    with pytest.raises(PermissionDenied, match="makes or sells"):
        domain.require_maker_or_seller("R2", "M", ["R"], "P")


def test_list_filters_need_one_subject_and_ratings_in_range() -> None:
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_list_filters("", "", [], 0)
    assert violations(raised) == {"product_id"}
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_list_filters("P", "", [0, 6], -1)
    assert violations(raised) == {"ratings", "revision"}
    with pytest.raises(InvalidArgument) as raised:
        domain.page_size(101)
    assert violations(raised) == {"page_size"}
    assert domain.page_size(0) == domain.DEFAULT_PAGE_SIZE
