"""Engagement metrics on a generated history whose answers are known in advance.

The history is generated through the service's own RPCs on a moved clock, from a plan: three cohorts
of members join in January, February and March 2025; of each cohort, the first ``r30`` members ask a
question 35 days after joining (a contribution in the 30-day window), the first ``r60`` vote on an
answer 65 days after (activity in the 60-day window, not a contribution), the first ``r90`` submit an
idea 95 days after (a contribution in the 90-day window). A helper who joined in 2024 and owns the
product answers the odd questions, the maker answers the even ones officially; question k is answered
k + 1 hours after it was asked. One January member leaves five days after joining.

So, for 2025 as a whole: retention by cohort is the plan's; members are the 25 who joined plus the
helper; contributors are the helper and the 15 askers; contributions are 15 questions, 3 ideas and
the helper's 7 answers; the median time to the first answer is 8 hours; 7 of 15 answered questions
have an answer by a verified owner. Shorter ranges are checked against a plain Python count of the
same actions.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import grpc
import pytest
from community_testing import (
    BLENDER,
    MAKER,
    RETAILER,
    SERVICE,
    Clock,
    Community,
    Feed,
    Market,
    answer,
    ask,
    consumer,
    create_community,
    order,
    partner,
    refused,
    stamp,
    violated_fields,
)

from collabnet.community.v1 import community_pb2 as pb


@dataclass(frozen=True)
class Plan:
    joined: datetime
    members: int
    r30: int
    r60: int
    r90: int


PLANS = [
    Plan(datetime(2025, 1, 10, 9, tzinfo=UTC), 12, 7, 4, 2),
    Plan(datetime(2025, 2, 14, 9, tzinfo=UTC), 8, 5, 2, 0),
    Plan(datetime(2025, 3, 3, 9, tzinfo=UTC), 5, 3, 3, 1),
]
HELPER = "H-helper"
LEAVER = "c0-11"


@dataclass
class History:
    """What the generator did, for a plain count to compare with."""

    community_id: str
    joined: dict[str, date] = field(default_factory=dict)
    left: dict[str, date] = field(default_factory=dict)
    # (party, day, contribution?) of every action of a member.
    actions: list[tuple[str, date, bool]] = field(default_factory=list)

    def act(self, party: str, when: datetime, *, contribution: bool) -> None:
        self.actions.append((party, when.date(), contribution))

    def members(self, first: date, end: date) -> set[str]:
        return {p for p, j in self.joined.items() if j < end and (p not in self.left or self.left[p] >= first)}

    def within(self, first: date, end: date) -> list[tuple[str, date, bool]]:
        return [a for a in self.actions if first <= a[1] < end]


async def generate(community: Community, clock: Clock, feed: Feed) -> History:
    clock.at = datetime(2024, 11, 1, 9, tzinfo=UTC)
    created = await create_community(community, "Acme owners")
    history = History(created.community_id)
    await feed.publish(
        order("O-helper", HELPER, RETAILER, BLENDER, placed=datetime(2024, 11, 15, tzinfo=UTC)), "supplychain"
    )
    await feed.handled("supplychain")

    async def join(party: str, when: datetime) -> None:
        clock.at = when
        await community.JoinCommunity(
            pb.JoinCommunityRequest(community_id=created.community_id), metadata=consumer(party)
        )
        history.joined[party] = when.date()

    await join(HELPER, datetime(2024, 12, 1, 9, tzinfo=UTC))
    questions = 0
    voted_answer = ""
    for c, plan in enumerate(PLANS):
        for i in range(plan.members):
            await join(f"c{c}-{i}", plan.joined)
    clock.at = PLANS[0].joined + timedelta(days=5)
    await community.LeaveCommunity(
        pb.LeaveCommunityRequest(community_id=created.community_id), metadata=consumer(LEAVER)
    )
    history.left[LEAVER] = clock.at.date()
    # Window by window, so the answer the 60-day voters vote on exists by then.
    for c, plan in enumerate(PLANS):
        for i in range(plan.r30):
            party = f"c{c}-{i}"
            clock.at = asked = plan.joined + timedelta(days=35, hours=1)
            question = await ask(community, created.community_id, party, title=f"Question {questions}")
            history.act(party, asked, contribution=True)
            clock.at = asked + timedelta(hours=questions + 1)
            if questions % 2:
                given = await answer(community, question.question_id, consumer(HELPER))
                assert given.verified_owner
                history.act(HELPER, clock.at, contribution=True)
                voted_answer = voted_answer or given.answer_id
            else:
                assert (await answer(community, question.question_id, partner(MAKER))).official
            questions += 1
    for c, plan in enumerate(PLANS):
        for i in range(plan.r60):
            party = f"c{c}-{i}"
            clock.at = plan.joined + timedelta(days=65, hours=1)
            await community.VoteAnswer(
                pb.VoteAnswerRequest(answer_id=voted_answer, helpful=True), metadata=consumer(party)
            )
            history.act(party, clock.at, contribution=False)
    for c, plan in enumerate(PLANS):
        for i in range(plan.r90):
            party = f"c{c}-{i}"
            clock.at = plan.joined + timedelta(days=95, hours=1)
            await community.SubmitIdea(
                pb.SubmitIdeaRequest(community_id=created.community_id, title=f"Idea of {party}", description="."),
                metadata=consumer(party),
            )
            history.act(party, clock.at, contribution=True)
    clock.at = datetime(2025, 12, 31, 12, tzinfo=UTC)
    return history


async def measure(community: Community, community_id: str, first: date, end: date) -> pb.EngagementMetrics:
    start = datetime.combine(first, datetime.min.time(), UTC)
    stop = datetime.combine(end, datetime.min.time(), UTC)
    return await community.GetEngagementMetrics(
        pb.GetEngagementMetricsRequest(community_id=community_id, start_time=stamp(start), end_time=stamp(stop)),
        metadata=partner(MAKER),
    )


@pytest.fixture
async def history(community: Community, clock: Clock, feed: Feed, market: Market) -> History:
    return await generate(community, clock, feed)


async def test_retention_cohorts_and_participation_for_the_year_are_the_plans(
    community: Community, history: History
) -> None:
    found = await measure(community, history.community_id, date(2025, 1, 1), date(2026, 1, 1))
    cohorts = [
        (c.join_month.ToDatetime().date(), c.members, [(p.days, p.eligible, p.retained) for p in c.points])
        for c in found.retention
    ]
    assert cohorts == [
        (date(2025, 1, 1), 12, [(30, 12, 7), (60, 12, 4), (90, 12, 2)]),
        (date(2025, 2, 1), 8, [(30, 8, 5), (60, 8, 2), (90, 8, 0)]),
        (date(2025, 3, 1), 5, [(30, 5, 3), (60, 5, 3), (90, 5, 1)]),
    ]
    assert found.retention[0].points[0].rate == pytest.approx(7 / 12)
    assert (found.members, found.contributors) == (26, 16)
    assert found.participation_rate == pytest.approx(16 / 26)
    assert found.contributions == 25
    assert found.contributions_per_member == pytest.approx(25 / 26)
    assert found.contributions_per_contributor == pytest.approx(25 / 16)
    # Twelve askers contributed once, three (who also submitted ideas) twice, the helper seven times.
    assert found.median_contributions_per_contributor == 1
    assert (found.questions, found.questions_answered, found.questions_answered_by_verified_owner) == (15, 15, 7)
    assert found.verified_owner_answer_share == pytest.approx(7 / 15)
    assert found.median_time_to_first_answer.ToTimedelta() == timedelta(hours=8)
    assert found.start_time.ToDatetime(tzinfo=UTC) == datetime(2025, 1, 1, tzinfo=UTC)
    assert found.end_time.ToDatetime(tzinfo=UTC) == datetime(2026, 1, 1, tzinfo=UTC)
    assert len(found.daily_active) == 365
    assert len(found.monthly_active) == 12


def week_of(day: date) -> date:
    return day - timedelta(days=day.weekday())


@pytest.mark.parametrize(
    ("first", "end"),
    [
        (date(2025, 1, 1), date(2026, 1, 1)),
        (date(2025, 2, 1), date(2025, 4, 1)),
        (date(2025, 4, 10), date(2025, 6, 20)),
    ],
    ids=["year", "february-march", "april-june"],
)
async def test_active_members_and_participation_match_a_plain_count_of_the_history(
    community: Community, history: History, first: date, end: date
) -> None:
    found = await measure(community, history.community_id, first, end)
    actions = history.within(first, end)
    daily: dict[date, set[str]] = defaultdict(set)
    weekly: dict[date, set[str]] = defaultdict(set)
    monthly: dict[date, set[str]] = defaultdict(set)
    for party, day, _ in actions:
        daily[day].add(party)
        weekly[week_of(day)].add(party)
        monthly[day.replace(day=1)].add(party)

    def series(points: list[pb.ActiveMembers]) -> dict[date, int]:
        return {p.period_start.ToDatetime().date(): p.active_members for p in points if p.active_members}

    assert series(list(found.daily_active)) == {d: len(p) for d, p in daily.items()}
    assert series(list(found.weekly_active)) == {w: len(p) for w, p in weekly.items()}
    assert series(list(found.monthly_active)) == {m: len(p) for m, p in monthly.items()}
    assert found.daily_active[0].period_start.ToDatetime().date() == first
    assert len(found.daily_active) == (end - first).days
    assert found.weekly_active[0].period_start.ToDatetime().date() == week_of(first)
    members = history.members(first, end)
    contributors = {p for p, _, contribution in actions if contribution}
    assert found.members == len(members)
    assert found.contributors == len(contributors)
    assert found.participation_rate == pytest.approx(len(contributors) / len(members))
    assert found.contributions == sum(1 for *_, contribution in actions if contribution)
    expected_cohorts = sorted({j.replace(day=1) for p, j in history.joined.items() if first <= j < end})
    assert [c.join_month.ToDatetime().date() for c in found.retention] == expected_cohorts


async def test_a_member_who_left_counts_only_for_ranges_it_was_a_member_in(
    community: Community, history: History
) -> None:
    january = await measure(community, history.community_id, date(2025, 1, 1), date(2025, 2, 1))
    february = await measure(community, history.community_id, date(2025, 2, 1), date(2025, 3, 1))
    assert january.members == 1 + 12
    assert february.members == 1 + 11 + 8
    # Still one of the January cohort, which it first joined.
    assert january.retention[0].members == 12


async def test_retention_counts_only_members_whose_window_has_ended(
    community: Community, history: History, clock: Clock
) -> None:
    clock.at = PLANS[2].joined + timedelta(days=100)  # March's 90-day window is still open
    found = await measure(community, history.community_id, date(2025, 3, 1), date(2025, 4, 1))
    (march,) = found.retention
    assert [(p.days, p.eligible, p.retained) for p in march.points] == [(30, 5, 3), (60, 5, 3), (90, 0, 0)]
    assert march.points[2].rate == 0


async def test_metrics_are_for_the_community_partner_over_a_valid_range(community: Community, history: History) -> None:
    cid = history.community_id
    start, end = stamp(datetime(2025, 1, 1, tzinfo=UTC)), stamp(datetime(2025, 2, 1, tzinfo=UTC))
    request = pb.GetEngagementMetricsRequest(community_id=cid, start_time=start, end_time=end)
    await refused(
        community.GetEngagementMetrics(request, metadata=partner(RETAILER)), grpc.StatusCode.PERMISSION_DENIED
    )
    await refused(community.GetEngagementMetrics(request, metadata=consumer("c0-0")), grpc.StatusCode.PERMISSION_DENIED)
    assert (await community.GetEngagementMetrics(request, metadata=SERVICE)).members == 13
    backwards = pb.GetEngagementMetricsRequest(community_id=cid, start_time=end, end_time=start)
    error = await refused(community.GetEngagementMetrics(backwards, metadata=SERVICE), grpc.StatusCode.INVALID_ARGUMENT)
    assert violated_fields(error) == ["end_time"]
    missing = pb.GetEngagementMetricsRequest(community_id=cid)
    error = await refused(community.GetEngagementMetrics(missing, metadata=SERVICE), grpc.StatusCode.INVALID_ARGUMENT)
    assert violated_fields(error) == ["start_time", "end_time"]
    # A range inside one day is rounded out to the whole day.
    noon = pb.GetEngagementMetricsRequest(
        community_id=cid,
        start_time=stamp(datetime(2025, 2, 14, 10, tzinfo=UTC)),
        end_time=stamp(datetime(2025, 2, 14, 11, tzinfo=UTC)),
    )
    day = await community.GetEngagementMetrics(noon, metadata=SERVICE)
    assert [p.active_members for p in day.daily_active] == [
        len({p for p, d, _ in history.actions if d == date(2025, 2, 14)})
    ]
    assert day.end_time.ToDatetime(tzinfo=UTC) - day.start_time.ToDatetime(tzinfo=UTC) == timedelta(days=1)


async def test_an_empty_range_has_zero_rates_and_no_median(community: Community, history: History) -> None:
    found = await measure(community, history.community_id, date(2023, 1, 1), date(2023, 2, 1))
    assert (found.members, found.contributors, found.participation_rate, found.contributions) == (0, 0, 0.0, 0)
    assert not found.HasField("median_time_to_first_answer")
    assert found.verified_owner_answer_share == 0.0
    assert list(found.retention) == []
    assert all(p.active_members == 0 for p in found.daily_active)
