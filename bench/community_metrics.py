"""GetEngagementMetrics on a generated community with a year of history, as it grows.

    python bench/community_metrics.py [--sizes 10000:100000,30000:300000 | --full] [--database URL] [--calls 30]

Each size is MEMBERS:CONTRIBUTIONS. ``--full`` runs 10k:100k and the issue's 100k:1M, whose generation
and loading alone take two to four minutes on a 2-core machine; the default stops at 30k:300k.

For each size, one community's year (2025) is generated and loaded straight into a fresh database
after migrating it (PostgreSQL when ``--database`` or ``COLLABNET_TEST_POSTGRES_URL`` names a server,
otherwise SQLite): members and memberships (a fifth joined before the year, the rest during it, a
tenth of them left again), questions, answers (with their time to the first answer and verified
owners), ideas, helpful votes on answers (a fifth as many as the contributions: activity that is not
a contribution), and the per-day, per-week and per-month activity rows and retention flags the
service keeps for them. Who contributes follows a Zipf law (exponent 1.1): a few members contribute
most. The community service then runs as its own process and GetEngagementMetrics is called through
gRPC, one call at a time (after five unmeasured calls that open its database connections), for
ranges of a week, a month, a quarter and the whole year at random offsets; latencies are measured
at the client. The service's peak resident memory is read from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import os
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import uvloop
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.engine import make_url

from collabnet.community.v1 import community_pb2 as pb
from collabnet.community.v1.community_pb2_grpc import CommunityServiceStub
from collabnet_community import domain
from collabnet_kit.client import health_status
from collabnet_kit.logging import configure_logging
from collabnet_kit.nats_server import NatsServer, free_port
from collabnet_kit.principal import Principal, PrincipalSigner
from collabnet_kit.settings import DEV_SIGNING_KEY

YEAR = datetime(2025, 1, 1, tzinfo=UTC)
YEAR_END = datetime(2026, 1, 1, tzinfo=UTC)
SECONDS = (YEAR_END - YEAR).total_seconds()
PARTNER = "partner-maker"
PRODUCTS = [f"product-{i}" for i in range(200)]
RANGES = {"week": 7, "month": 30, "quarter": 91, "year": 365}
COMMUNITY = str(uuid.UUID(int=1))
WARM_UP = 5
FULL = "100000:1000000"
"""The issue's size: 100k members, 1M contributions over a year."""


def uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128)))


@dataclass
class Data:
    """Rows per table, as tuples in the tables' column order (see COLUMNS)."""

    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=lambda: defaultdict(list))


COLUMNS = {
    "community": [
        "id",
        "partner_id",
        "name",
        "description",
        "scope_kind",
        "scope_value",
        "open_to_non_members",
        "created_at",
        "member_seq",
    ],
    "member": [
        "community_id",
        "party_id",
        "number",
        "first_joined_at",
        "first_join_day",
        "first_join_month",
        "active_30",
        "active_60",
        "active_90",
    ],
    "membership": [
        "id",
        "community_id",
        "party_id",
        "member",
        "role",
        "joined_at",
        "role_since",
        "join_day",
        "left_at",
        "left_day",
    ],
    "question": [
        "id",
        "community_id",
        "product_id",
        "maker_id",
        "asker_id",
        "title",
        "body",
        "asked_at",
        "ask_day",
        "answered",
        "answer_count",
        "first_answer_at",
        "first_answer_seconds",
        "owner_answered_at",
        "accepted_answer_id",
        "top_score",
        "escalated_at",
        "invitation_count",
    ],
    "answer": [
        "id",
        "question_id",
        "community_id",
        "product_id",
        "answerer_id",
        "body",
        "verified_owner",
        "official_partner_id",
        "accepted",
        "helpful",
        "unhelpful",
        "score",
        "created_at",
    ],
    "answer_vote": ["answer_id", "voter_id", "helpful", "created_at"],
    "idea": [
        "id",
        "community_id",
        "submitter_id",
        "title",
        "description",
        "product_id",
        "status",
        "status_note",
        "vote_count",
        "created_at",
        "status_at",
    ],
    "activity_day": ["community_id", "day", "member", "week", "month", "actions", "contributions"],
    "activity_week": ["community_id", "week", "member", "actions", "contributions"],
    "activity_month": ["community_id", "month", "member", "actions", "contributions"],
}


def generate(members: int, contributions: int, seed: int = 11) -> Data:
    rng = random.Random(seed)
    data = Data()
    data.rows["community"].append(
        (COMMUNITY, PARTNER, "Bench community", "", "brand", "acme", False, YEAR - timedelta(days=400), members)
    )
    parties = [uid(rng) for _ in range(members)]
    joined: list[datetime] = []
    first_days: list[int] = []
    left: list[datetime | None] = []
    for number, party in enumerate(parties, start=1):
        if rng.random() < 0.2:
            start = YEAR - timedelta(days=rng.uniform(1, 365))
        else:
            start = YEAR + timedelta(seconds=rng.uniform(0, SECONDS * 0.95))
        end = start + timedelta(days=rng.uniform(10, 300)) if rng.random() < 0.1 else None
        if end is not None and end >= YEAR_END:
            end = None
        joined.append(start)
        left.append(end)
        day = domain.day_number(start)
        first_days.append(day)
        data.rows["membership"].append(
            (
                uid(rng),
                COMMUNITY,
                party,
                number,
                "member",
                start,
                start,
                day,
                end,
                None if end is None else domain.day_number(end),
            )
        )
    # A few members do most: Zipf weights over a shuffled order, as cumulative sums for bisect.
    order = list(range(members))
    rng.shuffle(order)
    cumulative = list(itertools.accumulate(1 / (rank + 1) ** 1.1 for rank in range(members)))
    total_weight = cumulative[-1]

    def someone() -> int:
        return order[min(members - 1, bisect.bisect(cumulative, rng.random() * total_weight))]

    def moment_for(member: int) -> datetime | None:
        start = max(joined[member], YEAR)
        end = left[member] or YEAR_END
        if end <= start:
            return None
        return start + timedelta(seconds=rng.uniform(0, (end - start).total_seconds()))

    activity: Counter[tuple[int, int]] = Counter()
    contributed: Counter[tuple[int, int]] = Counter()

    def act(member: int, at: datetime, contribution: bool) -> None:
        key = (member + 1, domain.day_number(at))
        activity[key] += 1
        if contribution:
            contributed[key] += 1

    n_questions = contributions * 3 // 10
    n_ideas = contributions // 10
    n_answers = contributions - n_questions - n_ideas
    questions: list[list[Any]] = []
    while len(questions) < n_questions:
        asker = someone()
        asked = moment_for(asker)
        if asked is None:
            continue
        product = rng.choice(PRODUCTS)
        questions.append([uid(rng), asker, asked, product, 0, None, None, None])
        act(asker, asked, True)
    answered_by: set[tuple[int, int]] = set()
    answers: list[tuple[str, int, int, datetime, bool]] = []
    while len(answers) < n_answers:
        index = rng.randrange(n_questions)
        question = questions[index]
        answerer = someone()
        if answerer == question[1] or (index, answerer) in answered_by:
            continue
        at = question[2] + timedelta(seconds=rng.expovariate(1 / 20_000))
        gone = left[answerer]
        if at >= YEAR_END or at < joined[answerer] or (gone is not None and at >= gone):
            continue
        answered_by.add((index, answerer))
        owner = rng.random() < 0.4
        answers.append((uid(rng), index, answerer, at, owner))
        act(answerer, at, True)
        question[4] += 1
        if question[5] is None or at < question[5]:
            question[5] = at
        if owner and (question[7] is None or at < question[7]):
            question[7] = at
    for qid, asker, asked, product, count, first, _, owner_at in questions:
        data.rows["question"].append(
            (
                qid,
                COMMUNITY,
                product,
                PARTNER,
                parties[asker],
                "A question",
                "",
                asked,
                domain.day_number(asked),
                count > 0,
                count,
                first,
                None if first is None else (first - asked).total_seconds(),
                owner_at,
                None,
                0,
                None,
                0,
            )
        )
    for aid, index, answerer, at, owner in answers:
        question = questions[index]
        data.rows["answer"].append(
            (aid, question[0], COMMUNITY, question[3], parties[answerer], "An answer", owner, None, False, 0, 0, 0, at)
        )
    voted: set[tuple[int, int]] = set()
    while len(voted) < contributions // 5:
        voter = someone()
        index = rng.randrange(len(answers))
        if (index, voter) in voted or answers[index][2] == voter:
            continue
        at = answers[index][3] + timedelta(seconds=rng.expovariate(1 / 86_400))
        gone = left[voter]
        if at >= YEAR_END or at < joined[voter] or (gone is not None and at >= gone):
            continue
        voted.add((index, voter))
        data.rows["answer_vote"].append((answers[index][0], parties[voter], True, at))
        act(voter, at, False)
    statuses = [s.value for s in domain.IdeaStatus]
    while len(data.rows["idea"]) < n_ideas:
        submitter = someone()
        at = moment_for(submitter)
        if at is None:
            continue
        data.rows["idea"].append(
            (uid(rng), COMMUNITY, parties[submitter], "An idea", ".", None, rng.choice(statuses), "", 0, at, at)
        )
        act(submitter, at, True)
    # The week and month tables and the members' retention flags, as the service keeps them.
    weeks: Counter[tuple[int, int]] = Counter()
    months: Counter[tuple[int, int]] = Counter()
    weeks_contributed: Counter[tuple[int, int]] = Counter()
    months_contributed: Counter[tuple[int, int]] = Counter()
    windows: dict[int, set[int]] = defaultdict(set)
    for (number, day), actions in activity.items():
        week, month, contributions = domain.week_number(day), domain.day_month(day), contributed[(number, day)]
        data.rows["activity_day"].append((COMMUNITY, day, number, week, month, actions, contributions))
        weeks[(week, number)] += actions
        weeks_contributed[(week, number)] += contributions
        months[(month, number)] += actions
        months_contributed[(month, number)] += contributions
        since = day - first_days[number - 1]
        for window in domain.RETENTION_DAYS:
            if window <= since < window + domain.RETENTION_WINDOW_DAYS:
                windows[number].add(window)
    for (week, number), actions in weeks.items():
        data.rows["activity_week"].append((COMMUNITY, week, number, actions, weeks_contributed[(week, number)]))
    for (month, number), actions in months.items():
        data.rows["activity_month"].append((COMMUNITY, month, number, actions, months_contributed[(month, number)]))
    for number, party in enumerate(parties, start=1):
        day = first_days[number - 1]
        flags = tuple(window in windows[number] for window in domain.RETENTION_DAYS)
        data.rows["member"].append((COMMUNITY, party, number, joined[number - 1], day, domain.day_month(day), *flags))
    return data


async def load(url: str, data: Data) -> None:
    if url.startswith("postgresql"):
        connection = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
        try:
            for table, columns in COLUMNS.items():
                await connection.copy_records_to_table(table, records=data.rows[table], columns=columns)
            await connection.execute("VACUUM ANALYZE")
        finally:
            await connection.close()
        return
    database = make_url(url).database
    assert database is not None

    def value(v: Any) -> Any:
        # The format SQLAlchemy stores timestamps in on SQLite (UTC, no zone).
        return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime) else v

    connection3 = sqlite3.connect(database)
    with connection3:
        for table, columns in COLUMNS.items():
            marks = ", ".join("?" for _ in columns)
            connection3.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                ([value(v) for v in row] for row in data.rows[table]),
            )
        connection3.execute("ANALYZE")
    connection3.close()


def database_name(members: int, contributions: int) -> str:
    return f"collabnet_bench_community_{members}_{contributions}"


async def fresh_database(base: str | None, folder: Path, members: int, contributions: int) -> str:
    name = database_name(members, contributions)
    if base is None:
        return f"sqlite+aiosqlite:///{folder / f'{name}.db'}"
    url = make_url(base)
    connection = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(False))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return url.set(drivername="postgresql+asyncpg", database=name).render_as_string(False)


async def drop_database(base: str | None, members: int, contributions: int) -> None:
    if base is None:
        return
    connection = await asyncpg.connect(make_url(base).set(drivername="postgresql").render_as_string(False))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{database_name(members, contributions)}" WITH (FORCE)')
    finally:
        await connection.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def stamp(value: datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(value)
    return message


async def measure(
    members: int, contributions: int, base: str | None, nats: NatsServer, folder: Path, calls: int
) -> dict[str, Any]:
    started = time.perf_counter()
    data = generate(members, contributions)
    generated = time.perf_counter() - started
    url = await fresh_database(base, folder, members, contributions)
    env = dict(os.environ) | {
        "COLLABNET_DATABASE_URL": url,
        "COLLABNET_NATS_URL": nats.url,
        "COLLABNET_STATE_DIR": str(folder),
        "COLLABNET_LOG_LEVEL": "warning",
        "OTEL_TRACES_SAMPLER": "always_off",
    }
    migrate = await asyncio.create_subprocess_exec(sys.executable, "-m", "collabnet_community", "migrate", env=env)
    assert await migrate.wait() == 0
    await load(url, data)
    loaded = time.perf_counter() - started - generated
    port = free_port()
    service = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collabnet_community", env=env | {"COLLABNET_GRPC_PORT": str(port)}
    )
    metadata = (("authorization", f"Bearer {PrincipalSigner(DEV_SIGNING_KEY).sign(Principal(partner_id=PARTNER))}"),)
    rng = random.Random(members)
    latencies: dict[str, list[float]] = {}
    year: pb.EngagementMetrics | None = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for _ in range(600):
                try:
                    if await health_status(channel) == "SERVING":
                        break
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)
            stub = CommunityServiceStub(channel)
            # Not measured: the first calls open the service's database connections.
            for _ in range(WARM_UP):
                whole = pb.GetEngagementMetricsRequest(
                    community_id=COMMUNITY, start_time=stamp(YEAR), end_time=stamp(YEAR_END)
                )
                await stub.GetEngagementMetrics(whole, metadata=metadata, timeout=120)
            for name, days in RANGES.items():
                latencies[name] = []
                for _ in range(calls):
                    start = YEAR + timedelta(days=rng.randrange(0, 366 - days))
                    request = pb.GetEngagementMetricsRequest(
                        community_id=COMMUNITY, start_time=stamp(start), end_time=stamp(start + timedelta(days=days))
                    )
                    t = time.perf_counter()
                    reply = await stub.GetEngagementMetrics(request, metadata=metadata, timeout=120)
                    latencies[name].append((time.perf_counter() - t) * 1000)
                    if days == 365:
                        year = reply
        status = await asyncio.to_thread(Path(f"/proc/{service.pid}/status").read_text)
        peak_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    finally:
        service.terminate()
        await service.wait()
        await drop_database(base, members, contributions)
    assert year is not None
    return {
        "members": members,
        "contributions": contributions,
        "activity_rows": len(data.rows["activity_day"]),
        "generate_s": generated,
        "load_s": loaded,
        "latency": {name: (percentile(v, 50), percentile(v, 99)) for name, v in latencies.items()},
        "year": year,
        "memory_mb": peak_kb / 1024,
    }


async def main(sizes: list[tuple[int, int]], base: str | None, calls: int) -> None:
    backend = "PostgreSQL" if base else "SQLite"
    with tempfile.TemporaryDirectory() as tmp:
        nats = NatsServer(Path(tmp) / "nats")
        nats.start()
        try:
            results = [await measure(m, c, base, nats, Path(tmp), calls) for m, c in sizes]
        finally:
            nats.stop()
    print(f"community engagement metrics on {backend}: GetEngagementMetrics x{calls} per range; milliseconds")
    header = f"{'members':>8} {'contribs':>10} {'activity rows':>13} {'load s':>7}"
    header += "".join(f" {name + ' p50':>12} {'p99':>8}" for name in RANGES) + f" {'service MB':>11}"
    print(header)
    for r in results:
        line = f"{r['members']:>8,} {r['contributions']:>10,} {r['activity_rows']:>13,} {r['load_s']:>7.1f}"
        line += "".join(f" {r['latency'][name][0]:>12.1f} {r['latency'][name][1]:>8.1f}" for name in RANGES)
        print(line + f" {r['memory_mb']:>11.0f}")
    for previous, current in itertools.pairwise(results):
        growth = current["contributions"] / previous["contributions"]
        ratios = ", ".join(
            f"{name} p99 x{current['latency'][name][1] / previous['latency'][name][1]:.2f}" for name in RANGES
        )
        print(f"x{growth:.0f} contributions ({previous['contributions']:,} -> {current['contributions']:,}): {ratios}")
    year = results[-1]["year"]
    cohorts = ", ".join(
        f"{c.join_month.ToDatetime():%Y-%m} {c.members} ({'/'.join(f'{p.rate:.0%}' for p in c.points)})"
        for c in year.retention[:3]
    )
    print(
        f"the year at the largest size: {year.members:,} members, participation {year.participation_rate:.1%}, "
        f"{year.contributions:,} contributions, median first answer {year.median_time_to_first_answer.ToTimedelta()}, "
        f"verified-owner share {year.verified_owner_answer_share:.1%}; first cohorts (30/60/90 days): {cohorts}"
    )


def size(text: str) -> tuple[int, int]:
    members, _, contributions = text.partition(":")
    return int(members), int(contributions)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes",
        default="10000:100000,30000:300000",
        help="MEMBERS:CONTRIBUTIONS pairs, comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--full", action="store_true", help=f"the issue's size too: --sizes 10000:100000,{FULL} (loading takes minutes)"
    )
    parser.add_argument("--database", default=os.environ.get("COLLABNET_TEST_POSTGRES_URL"), help="a PostgreSQL URL")
    parser.add_argument("--calls", type=int, default=30, help="calls per range and size")
    args = parser.parse_args()
    configure_logging("bench", "warning")
    sizes = f"10000:100000,{FULL}" if args.full else args.sizes
    uvloop.run(main([size(s) for s in sizes.split(",")], args.database, args.calls))
