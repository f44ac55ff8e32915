"""Improvement's rules, without I/O."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from collabnet_improvement import domain
from collabnet_improvement.domain import (
    Actor,
    CaseAccess,
    CaseState,
    Direction,
    Health,
    MetricKind,
    ObjectiveState,
    Outcome,
    Policy,
    Stage,
)
from collabnet_kit.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from collabnet_kit.principal import Principal

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def fields(raised: pytest.ExceptionInfo[InvalidArgument]) -> set[str]:
    return {v.field for v in raised.value.violations}


def test_the_default_policy_opens_a_case_at_2_stars_or_below() -> None:
    assert domain.DEFAULT_POLICY.opens_case(1)
    assert domain.DEFAULT_POLICY.opens_case(2)
    assert not domain.DEFAULT_POLICY.opens_case(3)


def test_a_policy_is_refused_field_by_field() -> None:
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_policy(Policy(case_threshold=4, recovery_threshold=3, engagement_target=timedelta(0)))
    assert fields(raised) == {"policy.recovery_rating_threshold", "policy.first_engagement_target"}
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_policy(Policy(case_threshold=5, recovery_threshold=5, recovery_window=timedelta(days=400)))
    assert fields(raised) == {
        "policy.case_rating_threshold",
        "policy.recovery_rating_threshold",
        "policy.recovery_window",
    }
    domain.validate_policy(Policy(case_threshold=3, recovery_threshold=5, engagement_target=timedelta(minutes=1)))


def test_a_case_opens_on_either_partners_policy_and_closes_its_loop_for_both() -> None:
    strict = Policy(case_threshold=1, recovery_threshold=5, recovery_window=timedelta(days=10))
    lenient = Policy(case_threshold=3, recovery_threshold=4, recovery_window=timedelta(days=60))
    terms = domain.case_terms(3, [strict, lenient])
    assert terms.opens
    assert (terms.recovery_threshold, terms.recovery_window) == (5, timedelta(days=60))
    assert not domain.case_terms(3, [strict]).opens
    assert domain.case_terms(2, []).opens  # no partner known yet: the defaults


def test_case_states_move_only_forward_except_a_rejected_proposal_and_a_failed_check() -> None:
    order = list(CaseState)
    for current, target in itertools.pairwise(order):
        domain.require_transition("c", current, target)
    domain.require_transition("c", CaseState.RESOLUTION_PROPOSED, CaseState.INVESTIGATING)
    domain.require_transition("c", CaseState.RESOLVED, CaseState.INVESTIGATING)
    for current, target in (
        (CaseState.OPEN, CaseState.INVESTIGATING),
        (CaseState.ENGAGED, CaseState.RESOLVED),
        (CaseState.CLOSED, CaseState.INVESTIGATING),
        (CaseState.INVESTIGATING, CaseState.OPEN),
    ):
        with pytest.raises(FailedPrecondition):
            domain.require_transition("c", current, target)


def test_the_outcome_follows_the_review() -> None:
    assert domain.outcome_after_revision(Outcome.RESOLVED, 4, 4, resolved=True) is Outcome.RECOVERED
    assert domain.outcome_after_revision(Outcome.PENDING, 3, 4, resolved=False) is Outcome.PENDING
    assert domain.outcome_after_revision(Outcome.NOT_RECOVERED, 5, 4, resolved=True) is Outcome.RECOVERED
    assert domain.outcome_after_revision(Outcome.RECOVERED, 2, 4, resolved=True) is Outcome.RESOLVED
    assert domain.outcome_after_revision(Outcome.RECOVERED, 2, 4, resolved=False) is Outcome.PENDING
    assert domain.outcome_after_withdrawal(Outcome.RESOLVED) is Outcome.NOT_RECOVERED
    assert domain.outcome_after_withdrawal(Outcome.RECOVERED) is Outcome.RECOVERED
    assert domain.outcome_at_resolution(Outcome.PENDING) is Outcome.RESOLVED
    assert domain.outcome_at_resolution(Outcome.RECOVERED) is Outcome.RECOVERED
    assert domain.outcome_at_reopening(Outcome.RESOLVED) is Outcome.PENDING
    assert domain.outcome_at_reopening(Outcome.RECOVERED) is Outcome.RECOVERED


def test_the_recovery_window_passes_only_for_resolved_cases_past_their_deadline() -> None:
    deadline = T0 + timedelta(days=30)
    assert domain.recovery_window_passed(Outcome.RESOLVED, deadline, deadline)
    assert not domain.recovery_window_passed(Outcome.RESOLVED, deadline, deadline - timedelta(seconds=1))
    assert not domain.recovery_window_passed(Outcome.RECOVERED, deadline, deadline + timedelta(days=1))
    assert not domain.recovery_window_passed(Outcome.RESOLVED, None, deadline)


def test_engagement_is_timed_from_assignment_against_the_target() -> None:
    quick = domain.engagement(T0, T0 + timedelta(hours=2), timedelta(hours=24))
    assert (quick.seconds, quick.within_target) == (7200.0, True)
    late = domain.engagement(T0, T0 + timedelta(hours=25), timedelta(hours=24))
    assert not late.within_target


@pytest.mark.parametrize(
    "text",
    [
        "Could you update your review?",
        "Please consider changing the rating now that it works.",
        "We'd appreciate a 5-star review",
        "A better rating would mean a lot",
        "would you remove your review",
        "give us five stars",
        "Mind revising your 2 star review?",
    ],
)
def test_outreach_asking_for_a_rating_is_refused(text: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_outreach(text, "message")
    assert fields(raised) == {"message"}


@pytest.mark.parametrize(
    "text",
    [
        "We are sorry the kettle leaked. A replacement is on its way.",
        "Thank you for the review; it helped us find a faulty seal.",
        "Could you send us a photo of the lid?",
        "We updated the firmware after your review; it helped us find the bug.",
        "Our reviews team forwarded your message to the maker.",
    ],
)
def test_ordinary_outreach_passes(text: str) -> None:
    domain.validate_outreach(text, "message")


def test_the_update_invitation_is_neutral() -> None:
    text = domain.UPDATE_INVITATION_TEXT.lower()
    assert "if you wish" in text
    for word in ("star", "better", "voucher", "discount", "reward", "incentive"):
        assert word not in text


def test_a_root_cause_is_a_chain_of_one_to_five_whys_or_a_set_of_categories() -> None:
    domain.validate_root_cause(domain.RootCause(domain.RootCauseMethod.FIVE_WHYS, ["a", "b"], [], ""))
    domain.validate_root_cause(
        domain.RootCause(domain.RootCauseMethod.CATEGORIES, [], [domain.CauseCategory.DESIGN], "the lid design")
    )
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_root_cause(
            domain.RootCause(domain.RootCauseMethod.FIVE_WHYS, [], [domain.CauseCategory.DESIGN], "")
        )
    assert fields(raised) == {"root_cause.whys", "root_cause.categories"}
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_root_cause(domain.RootCause(domain.RootCauseMethod.FIVE_WHYS, ["a", " "], [], ""))
    assert fields(raised) == {"root_cause.whys[1]"}
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_root_cause(domain.RootCause(domain.RootCauseMethod.CATEGORIES, [], [None], "x"))
    assert fields(raised) == {"root_cause.categories"}


def test_closure_needs_a_passed_check_since_resolution_and_nothing_open() -> None:
    domain.require_closable("c", CaseState.RESOLVED, True, 0, 0)
    for state, check, actions, scars, reason in (
        (CaseState.INVESTIGATING, True, 0, 0, "cannot move"),
        (CaseState.RESOLVED, None, 0, 0, "needs an effectiveness check"),
        (CaseState.RESOLVED, False, 0, 0, "failed"),
        (CaseState.RESOLVED, True, 1, 0, "open action"),
        (CaseState.RESOLVED, True, 0, 2, "not yet accepted"),
    ):
        with pytest.raises(FailedPrecondition, match=reason):
            domain.require_closable("c", state, check, actions, scars)


def test_a_partner_acting_for_a_customer_is_the_customer() -> None:
    assert Actor.of(Principal(partner_id="R", party_id="C")) == Actor(party="C")
    assert Actor.of(Principal(partner_id="R", party_id="R")) == Actor(partner="R")
    assert Actor.of(Principal(partner_id="R")) == Actor(partner="R")
    assert Actor.of(Principal(service="gateway")).service == "gateway"


def test_a_case_is_seen_by_its_partners_its_customer_and_services_only() -> None:
    partners = ["M", "R"]
    assert domain.case_access(Actor(partner="M"), "c", "C", partners) is CaseAccess.PARTNER
    assert domain.case_access(Actor(service="gateway"), "c", "C", partners) is CaseAccess.PARTNER
    assert domain.case_access(Actor(party="C"), "c", "C", partners) is CaseAccess.CUSTOMER
    for stranger in (Actor(partner="S1"), Actor(party="D")):
        with pytest.raises(PermissionDenied):
            domain.case_access(stranger, "c", "C", partners)


def test_initiatives_go_round_pdca_and_count_their_cycles() -> None:
    for current, target in (
        (Stage.PROPOSED, Stage.PLAN),
        (Stage.PLAN, Stage.DO),
        (Stage.DO, Stage.CHECK),
        (Stage.CHECK, Stage.DO),
        (Stage.CHECK, Stage.ACT),
        (Stage.ACT, Stage.PLAN),
        (Stage.ACT, Stage.CLOSED),
    ):
        domain.require_stage_change("i", current, target)
    for current, target in ((Stage.PLAN, Stage.ACT), (Stage.CLOSED, Stage.PLAN), (Stage.DO, Stage.PROPOSED)):
        with pytest.raises(FailedPrecondition):
            domain.require_stage_change("i", current, target)
    assert domain.next_cycle(1, Stage.ACT, Stage.PLAN) == 2
    assert domain.next_cycle(1, Stage.CHECK, Stage.DO) == 1


def test_metrics_name_the_subject_they_measure() -> None:
    rating = domain.metric_spec(MetricKind.PRODUCT_AVERAGE_RATING, "P", 2, "", "", "")
    assert (rating.subject, rating.subject_id, rating.unit, rating.computed) == ("product", "P", "stars", True)
    assert rating.label == "product_average_rating:product/P/revision/2"
    recovery = domain.metric_spec(MetricKind.CASE_RECOVERY_RATE, "", 0, "M", "", "")
    assert (recovery.subject, recovery.label) == ("partner", "case_recovery_rate:partner/M")
    reported = domain.metric_spec(MetricKind.REPORTED, "", 0, "", "return_rate", "%")
    assert (reported.label, reported.unit, reported.computed) == ("return_rate", "%", False)
    with pytest.raises(InvalidArgument) as raised:
        domain.metric_spec(MetricKind.CASE_RECOVERY_RATE, "P", 0, "M", "", "")
    assert fields(raised) == {"metric.product_id"}
    with pytest.raises(InvalidArgument) as raised:
        domain.metric_spec(MetricKind.REPORTED, "P", 0, "", "Return Rate", "")
    assert fields(raised) == {"metric.name", "metric"}
    with pytest.raises(InvalidArgument) as raised:
        domain.metric_spec(None, "", 0, "", "", "")
    assert fields(raised) == {"metric.kind"}


def test_an_objectives_direction_and_values_must_fit_its_metric() -> None:
    rating = domain.metric_spec(MetricKind.PRODUCT_AVERAGE_RATING, "P", 0, "", "", "")
    assert domain.objective_direction(rating, None) is Direction.INCREASE
    with pytest.raises(InvalidArgument):
        domain.objective_direction(rating, Direction.DECREASE)
    reported = domain.metric_spec(MetricKind.REPORTED, "", 0, "", "returns", "")
    with pytest.raises(InvalidArgument):
        domain.objective_direction(reported, None)
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_objective_values(rating, Direction.INCREASE, 3.5, 5.5, 0.5)
    assert fields(raised) == {"target", "forecast"}
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_objective_values(reported, Direction.DECREASE, 5, 6, None)
    assert fields(raised) == {"target"}
    domain.validate_objective_values(reported, Direction.DECREASE, 5, 2, 3)


def test_progress_and_benefit_run_in_the_metrics_better_direction() -> None:
    assert domain.progress(Direction.INCREASE, 3.5, 4.5, 4.0) == 0.5
    assert domain.progress(Direction.DECREASE, 8, 4, 7) == 0.25
    assert domain.progress(Direction.DECREASE, 8, 4, 9) == 0.0
    assert domain.progress(Direction.INCREASE, 3.5, 4.5, None) == 0.0
    assert domain.benefit(Direction.DECREASE, 8, 5) == 3
    assert domain.reached(Direction.DECREASE, 4, 4)
    assert not domain.reached(Direction.INCREASE, None, 4)


def objective(current: float | None, *, forecast: float | None = None, met: datetime | None = None) -> ObjectiveState:
    return ObjectiveState(Direction.INCREASE, 0.0, 10.0, forecast, current, T0, T0 + timedelta(days=100), met)


def test_health_compares_progress_with_the_time_gone_by() -> None:
    at = T0 + timedelta(days=50)
    assert domain.objective_health(objective(5), at) is Health.ON_TRACK
    assert domain.objective_health(objective(2), at) is Health.AT_RISK
    assert domain.objective_health(objective(None), T0 + timedelta(days=60)) is Health.OFF_TRACK
    assert domain.objective_health(objective(6, forecast=8), at) is Health.AT_RISK
    assert domain.objective_health(objective(9), T0 + timedelta(days=100)) is Health.OFF_TRACK
    assert domain.objective_health(objective(10), T0 + timedelta(days=200)) is Health.ON_TRACK
    assert domain.objective_health(objective(3, met=T0), at) is Health.ON_TRACK
    assert domain.worst([Health.ON_TRACK, Health.OFF_TRACK, Health.AT_RISK]) is Health.OFF_TRACK
    assert domain.worst([]) is None


def test_page_sizes_default_and_name_the_field_when_out_of_range() -> None:
    assert domain.page_size(0) == domain.DEFAULT_PAGE_SIZE
    with pytest.raises(InvalidArgument) as raised:
        domain.page_size(domain.MAX_PAGE_SIZE + 1)
    assert fields(raised) == {"page_size"}


def test_due_dates_are_in_the_future_and_within_three_years() -> None:
    assert domain.due(T0 + timedelta(days=1), "due_time", T0) == T0 + timedelta(days=1)
    for value in (None, T0, T0 + timedelta(days=4 * 365)):
        with pytest.raises(InvalidArgument) as raised:
            domain.due(value, "due_time", T0)
        assert fields(raised) == {"due_time"}
