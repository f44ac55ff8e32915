"""Community's rules, without I/O."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest

from collabnet_community import domain
from collabnet_community.domain import IdeaStatus, Product, Reason, Role, Scope
from collabnet_kit.errors import AlreadyExists, FailedPrecondition, InvalidArgument, PermissionDenied
from collabnet_kit.principal import Principal

BLENDER = Product("P", "M", "Blender", "Kitchen/Blenders", "Acme", frozenset({"R1", "R2"}))
CLOSED = domain.Community("C1", "M", "Acme owners", Scope.brand("acme"))
OPEN = domain.Community("C2", "R1", "Kitchen", Scope.category("kitchen"), open_to_non_members=True)
T0 = datetime(2026, 3, 14, 15, 9, tzinfo=UTC)


def fields(error: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in error.value.violations]


def test_scopes_cover_by_brand_ignoring_case_by_category_and_below_and_by_list() -> None:
    assert Scope.brand("  ACME ").covers(BLENDER)
    assert not Scope.brand("Boltz").covers(BLENDER)
    assert Scope.category("kitchen").covers(BLENDER)
    assert Scope.category("/Kitchen/blenders/").covers(BLENDER)
    assert not Scope.category("kitchen/blend").covers(BLENDER)
    assert not Scope.category("kitchen/blenders/pro").covers(BLENDER)
    assert Scope.products(["Q", "P", "Q"]).covers(BLENDER)
    assert Scope.products(["Q", "P", "Q"]).product_ids == ("Q", "P")
    assert not Scope.products(["Q"]).covers(BLENDER)
    assert domain.category_ancestors("A/b/C") == ["a", "a/b", "a/b/c"]
    assert domain.category_ancestors("") == []


def test_a_product_outside_the_scope_is_refused_with_the_scope_named() -> None:
    with pytest.raises(FailedPrecondition, match="brand 'boltz'"):
        domain.require_in_scope(domain.Community("C", "M", "Boltz", Scope.brand("Boltz")), BLENDER)
    domain.require_in_scope(CLOSED, BLENDER)


def test_an_invalid_community_names_every_wrong_field() -> None:
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_community("", " ", "", None)
    assert fields(raised) == ["community.partner_id", "community.name", "community.scope"]
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_community("M", "Ok", "", Scope.products([]))
    assert fields(raised) == ["community.scope.products"]
    domain.validate_community("M", "Ok", "", Scope.category("kitchen"))


def test_the_acting_party_is_the_principals_and_services_name_one() -> None:
    assert domain.acting_party(Principal(partner_id="R1", party_id="C"), "", "party_id", "x") == "C"
    assert domain.acting_party(Principal(partner_id="R1", party_id="C"), "C", "party_id", "x") == "C"
    with pytest.raises(PermissionDenied, match="not D"):
        domain.acting_party(Principal(partner_id="R1", party_id="C"), "D", "party_id", "x")
    with pytest.raises(PermissionDenied, match="X-On-Behalf-Of"):
        domain.acting_party(Principal(partner_id="R1"), "", "party_id", "joining")
    assert domain.acting_party(Principal(service="gateway"), "D", "party_id", "x") == "D"
    with pytest.raises(InvalidArgument) as raised:
        domain.acting_party(Principal(service="gateway"), "", "voter_party_id", "x")
    assert fields(raised) == ["voter_party_id"]


def test_a_partner_as_itself_answers_officially_only_for_products_it_makes_or_sells() -> None:
    maker = domain.answerer_of(Principal(partner_id="M"), BLENDER, "", False, "")
    assert maker == domain.Answerer("M", "M")
    seller = domain.answerer_of(Principal(partner_id="R2"), BLENDER, "", False, "")
    assert seller == domain.Answerer("R2", "R2")
    with pytest.raises(PermissionDenied, match="neither makes nor sells"):
        domain.answerer_of(Principal(partner_id="X"), BLENDER, "", False, "")


def test_a_partner_acting_for_a_party_answers_as_the_party_and_officially_only_when_asked() -> None:
    customer = domain.answerer_of(Principal(partner_id="R1", party_id="C"), BLENDER, "", False, "")
    assert customer == domain.Answerer("C", None)
    staff = domain.answerer_of(Principal(partner_id="M", party_id="E"), BLENDER, "", True, "")
    assert staff == domain.Answerer("E", "M")
    with pytest.raises(PermissionDenied):
        domain.answerer_of(Principal(partner_id="X", party_id="E"), BLENDER, "", True, "")
    with pytest.raises(PermissionDenied, match="for itself only"):
        domain.answerer_of(Principal(partner_id="M", party_id="E"), BLENDER, "", True, "R1")


def test_a_service_names_the_answerer_and_for_official_answers_the_partner() -> None:
    service = Principal(service="gateway")
    assert domain.answerer_of(service, BLENDER, "C", False, "") == domain.Answerer("C", None)
    assert domain.answerer_of(service, BLENDER, "", True, "R1") == domain.Answerer("R1", "R1")
    with pytest.raises(InvalidArgument):
        domain.answerer_of(service, BLENDER, "C", True, "")
    with pytest.raises(InvalidArgument):
        domain.answerer_of(service, BLENDER, "", False, "")


def test_answering_needs_membership_unless_invited_official_or_open() -> None:
    member = domain.Answerer("A", None)
    with pytest.raises(PermissionDenied, match="join it first"):
        domain.may_answer(CLOSED, "Q", member, is_member=False, invited=False, answered_before=False)
    domain.may_answer(CLOSED, "Q", member, is_member=False, invited=True, answered_before=False)
    domain.may_answer(CLOSED, "Q", domain.Answerer("M", "M"), is_member=False, invited=False, answered_before=False)
    domain.may_answer(OPEN, "Q", member, is_member=False, invited=False, answered_before=False)
    with pytest.raises(FailedPrecondition):
        domain.may_answer(CLOSED, "A", member, is_member=True, invited=False, answered_before=False)
    with pytest.raises(AlreadyExists):
        domain.may_answer(CLOSED, "Q", member, is_member=True, invited=False, answered_before=True)


def test_only_the_asker_accepts_and_only_once() -> None:
    domain.may_accept("Q", "Q", None, "a1")
    with pytest.raises(PermissionDenied, match="only the asker"):
        domain.may_accept("Q", "X", None, "a1")
    with pytest.raises(AlreadyExists):
        domain.may_accept("Q", "Q", "a1", "a1")
    with pytest.raises(FailedPrecondition):
        domain.may_accept("Q", "Q", "a1", "a2")


def test_answer_votes_are_once_and_not_on_ones_own() -> None:
    domain.may_vote_answer("A", "V", voted_before=False)
    with pytest.raises(FailedPrecondition):
        domain.may_vote_answer("A", "A", voted_before=False)
    with pytest.raises(AlreadyExists):
        domain.may_vote_answer("A", "V", voted_before=True)


def test_idea_statuses_follow_the_workflow_done_is_final_declined_may_be_reconsidered() -> None:
    path = [IdeaStatus.NEW, IdeaStatus.UNDER_REVIEW, IdeaStatus.PLANNED, IdeaStatus.IN_PROGRESS, IdeaStatus.DONE]
    for old, new in itertools.pairwise(path):
        domain.check_transition(old, new)
    for old in path[:-1]:
        domain.check_transition(old, IdeaStatus.DECLINED)
    domain.check_transition(IdeaStatus.DECLINED, IdeaStatus.UNDER_REVIEW)
    with pytest.raises(FailedPrecondition, match="final"):
        domain.check_transition(IdeaStatus.DONE, IdeaStatus.PLANNED)
    with pytest.raises(FailedPrecondition, match="already"):
        domain.check_transition(IdeaStatus.NEW, IdeaStatus.NEW)
    with pytest.raises(FailedPrecondition, match="may move to"):
        domain.check_transition(IdeaStatus.NEW, IdeaStatus.DONE)


def test_idea_votes_are_once_not_for_ones_own_and_only_while_open() -> None:
    domain.may_vote_idea("S", "V", IdeaStatus.PLANNED, voted_before=False)
    with pytest.raises(FailedPrecondition):
        domain.may_vote_idea("S", "S", IdeaStatus.NEW, voted_before=False)
    with pytest.raises(FailedPrecondition, match="voting is closed"):
        domain.may_vote_idea("S", "V", IdeaStatus.DECLINED, voted_before=False)
    with pytest.raises(AlreadyExists):
        domain.may_vote_idea("S", "V", IdeaStatus.NEW, voted_before=True)


def test_the_community_partner_and_the_products_maker_and_sellers_promote_ideas() -> None:
    domain.may_promote("M", CLOSED, None, IdeaStatus.NEW, [])
    domain.may_promote("R2", CLOSED, BLENDER, IdeaStatus.PLANNED, ["M"])
    with pytest.raises(PermissionDenied):
        domain.may_promote("R2", CLOSED, None, IdeaStatus.NEW, [])
    with pytest.raises(FailedPrecondition):
        domain.may_promote("M", CLOSED, None, IdeaStatus.DECLINED, [])
    with pytest.raises(AlreadyExists):
        domain.may_promote("M", CLOSED, None, IdeaStatus.NEW, ["M"])


def test_roles_are_set_by_the_partner_and_experts_also_by_moderators() -> None:
    partner = Principal(partner_id="M")
    moderator = Principal(partner_id="R1", party_id="Mod")
    domain.may_set_role(partner, CLOSED, None, "A", Role.MEMBER, Role.MODERATOR)
    domain.may_set_role(moderator, CLOSED, Role.MODERATOR, "A", Role.MEMBER, Role.EXPERT)
    with pytest.raises(PermissionDenied):
        domain.may_set_role(moderator, CLOSED, Role.MODERATOR, "A", Role.MEMBER, Role.MODERATOR)
    with pytest.raises(PermissionDenied):
        domain.may_set_role(moderator, CLOSED, Role.MODERATOR, "Mod", Role.MODERATOR, Role.MEMBER)
    with pytest.raises(PermissionDenied):
        domain.may_set_role(
            Principal(partner_id="R1", party_id="E"), CLOSED, Role.EXPERT, "A", Role.MEMBER, Role.EXPERT
        )
    # The partner acting for a consumer is that consumer, not the partner.
    with pytest.raises(PermissionDenied):
        domain.may_set_role(Principal(partner_id="M", party_id="C"), CLOSED, Role.MEMBER, "A", Role.MEMBER, Role.EXPERT)


def test_ranks_rise_with_points_and_say_what_is_next() -> None:
    assert domain.rank_of(0) == domain.Rank("newcomer", "contributor", 25)
    assert domain.rank_of(24) == domain.Rank("newcomer", "contributor", 1)
    assert domain.rank_of(25) == domain.Rank("contributor", "regular", 75)
    assert domain.rank_of(2999) == domain.Rank("leader", "champion", 1)
    assert domain.rank_of(10_000) == domain.Rank("champion", "", 0)
    assert domain.POINTS[Reason.ANSWER_ACCEPTED] > domain.POINTS[Reason.ANSWER_POSTED]


def test_badges_come_from_purchases_co_design_roles_and_what_was_earned() -> None:
    found = domain.badges(
        [domain.Ownership("P", "Blender", T0), domain.Ownership("Q", "", T0 - timedelta(days=400))],
        [domain.CoDesign("P", "revision B", T0)],
        [
            domain.RoleHeld("C1", "Acme owners", Role.MODERATOR, T0),
            domain.RoleHeld("C2", "Kitchen", Role.MEMBER, T0),
        ],
        [
            domain.Earned(Reason.ANSWER_ACCEPTED, 3, T0),
            domain.Earned(Reason.REVIEW_PUBLISHED, 9, T0),
            domain.Earned(Reason.IDEA_PROMOTED, 1, T0),
        ],
    )
    assert [(b.kind, b.label) for b in found] == [
        ("owner", "Owner since 2025-02"),
        ("owner", "Owner Blender since 2026-03"),
        ("co_designer", "Co-designed revision B"),
        ("moderator", "Moderator in Acme owners"),
        ("accepted_answers", "3 accepted answers"),
        ("promoted_ideas", "1 promoted idea"),
    ]


def test_days_weeks_and_months_are_whole_utc_periods_counted_from_1970() -> None:
    assert domain.day_number(datetime(1970, 1, 1, 23, 59, tzinfo=UTC)) == 0
    monday = datetime(2026, 3, 9, tzinfo=UTC)
    day = domain.day_number(monday)
    assert domain.day_start(day) == monday
    assert {domain.week_number(day + i) for i in range(7)} == {domain.week_number(day)}
    assert domain.week_number(day - 1) == domain.week_number(day) - 1
    assert domain.week_start(domain.week_number(day + 6)) == monday
    assert domain.month_start(domain.day_month(day)) == datetime(2026, 3, 1, tzinfo=UTC)
    assert domain.month_start(domain.month_number(date(2025, 12, 31))) == datetime(2025, 12, 1, tzinfo=UTC)


def test_a_metric_range_is_rounded_out_to_whole_days_and_bounded() -> None:
    days = domain.metric_range(datetime(2026, 1, 1, 10, tzinfo=UTC), datetime(2026, 1, 3, 0, 0, 1, tzinfo=UTC))
    assert (domain.day_start(days.first), domain.day_start(days.end)) == (
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 4, tzinfo=UTC),
    )
    exact = domain.metric_range(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
    assert exact.days == 31
    assert exact.months() == [domain.month_number(date(2026, 1, 1))]
    assert len(exact.weeks()) == 5  # Monday 29 Dec 2025 to Monday 26 Jan 2026
    with pytest.raises(InvalidArgument) as raised:
        domain.metric_range(T0, T0)
    assert fields(raised) == ["end_time"]
    with pytest.raises(InvalidArgument) as raised:
        domain.metric_range(T0, T0 + timedelta(days=domain.MAX_METRIC_DAYS + 1))
    assert fields(raised) == ["end_time"]
    with pytest.raises(InvalidArgument) as raised:
        domain.metric_range(None, None)
    assert fields(raised) == ["start_time", "end_time"]


def test_page_sizes_default_when_zero_and_are_bounded() -> None:
    assert domain.page_size(0) == domain.DEFAULT_PAGE_SIZE
    assert domain.page_size(7) == 7
    with pytest.raises(InvalidArgument):
        domain.page_size(domain.MAX_PAGE_SIZE + 1)


def test_a_range_splits_into_whole_weeks_and_months_and_the_days_at_its_edges() -> None:
    def day(text: str) -> int:
        return domain.day_number(datetime.fromisoformat(text).replace(tzinfo=UTC))

    # Wednesday 1 January 2025 to Friday 14 March 2025 (exclusive).
    days = domain.DayRange(day("2025-01-01"), day("2025-03-14"))
    weeks = days.split_weeks()
    assert domain.week_start(weeks.first_period) == datetime(2025, 1, 6, tzinfo=UTC)
    assert domain.week_start(weeks.end_period) == datetime(2025, 3, 10, tzinfo=UTC)
    assert weeks.edges == ((day("2025-01-01"), day("2025-01-06")), (day("2025-03-10"), day("2025-03-14")))
    months = days.split_months()
    assert (domain.month_start(months.first_period), domain.month_start(months.end_period)) == (
        datetime(2025, 1, 1, tzinfo=UTC),
        datetime(2025, 3, 1, tzinfo=UTC),
    )
    assert months.edges == ((day("2025-01-01"), day("2025-01-01")), (day("2025-03-01"), day("2025-03-14")))
    # Shorter than any whole period: everything is edge.
    short = domain.DayRange(day("2025-02-04"), day("2025-02-08"))
    for split in (short.split_weeks(), short.split_months()):
        assert split.first_period >= split.end_period
        assert split.edges == ((short.first, short.end), (short.end, short.end))
    # Every day of a range is in exactly one whole period or one edge.
    for first, end in ((day("2024-12-30"), day("2025-04-01")), (day("2025-05-17"), day("2025-07-02"))):
        span = domain.DayRange(first, end)
        for split, first_day in (
            (span.split_weeks(), domain.week_first_day),
            (span.split_months(), domain.month_first_day),
        ):
            whole = set(range(first_day(split.first_period), first_day(split.end_period)))
            edge = {d for a, b in split.edges for d in range(a, b)}
            assert not whole & edge
            assert whole | edge == set(range(first, end))
