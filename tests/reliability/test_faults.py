"""Faults, nothing lost: partners write reviews, orders and answers through the gateway while
improvement is killed (SIGKILL) and restarted twice, nats-server restarts once and the reviews
database is unavailable for a while. Afterwards every negative review has exactly one case, every
rating summary and every reputation is exact, no outbox holds an unsent event, every event recorded
is in its stream, every durable consumer has handled everything, and no event is a dead letter."""

from __future__ import annotations

import asyncio
import math
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

import asyncpg
import grpc
import httpx
from sqlalchemy.engine import make_url

from collabnet_cli import operator
from collabnet_cli.gateway import Caller, Gateway, until
from collabnet_cli.stack import Stack
from collabnet_kit.client import health_status
from tests.reliability.network import (
    Client,
    EventAudit,
    Network,
    Plan,
    Progress,
    Tally,
    audit_events,
    case_tally,
    database_url,
    drive,
    order_tally,
    postgres_dsn,
    reputation_tally,
    settled,
    summary_tally,
)

if TYPE_CHECKING:
    from tests.reliability.conftest import Sizes


CONCURRENCY = 16
"""Requests in flight at once, as a partner's backend with a small worker pool sends them."""
NEGATIVE_SHARE = 0.3
OUTAGE_SECONDS = 12.0
"""How long the reviews database refuses work: longer than the gateway's deadline for a call (5 s),
SQLite's busy timeout (10 s) and a consumer's retries of an event (7.5 s over 5 deliveries)."""
"""How long the system has, once the faults are over, to reach the expected state."""


@dataclass(frozen=True)
class Fault:
    what: str
    at_share: float  # of the workload done when it began
    seconds: float  # from the fault to the component being healthy again


async def test_nothing_is_lost_while_improvement_crashes_nats_restarts_and_the_reviews_database_goes_away(
    stack: Stack, sizes: Sizes, figures: dict[str, object]
) -> None:
    started = time.monotonic()
    key = await operator.ensure_operator(stack.state_dir, stack.address("identity"))
    async with Gateway(f"http://{stack.address('gateway')}", timeout=30) as gateway:
        network = await Network.build(
            gateway,
            Caller(key.partner_id, key.secret),
            products=sizes.products,
            customers=max(math.ceil(sizes.reviews / sizes.products), sizes.reviews // 10),
        )
        built = time.monotonic()
        network.client = Client(gateway)  # count the workload's requests only
        plan = Plan.make(
            network,
            reviews=sizes.reviews,
            negative_share=NEGATIVE_SHARE,
            orders=sizes.reviews // 10,
            answers_per_question=1,
        )
        progress = Progress(len(plan.steps))
        async with asyncio.TaskGroup() as group:
            group.create_task(drive(network, plan, concurrency=CONCURRENCY, progress=progress))
            injected = group.create_task(inject_faults(stack, progress))
        driven = time.monotonic()
        workload = replace(network.client.counts, server_errors=Counter(network.client.counts.server_errors))
        faults = injected.result()

        # What the services learn from each other's events arrives once they are back: wait for it.
        audit = await settled(lambda: audit_events(stack), lambda a: a.unsent == 0 and not a.consumers_behind)
        cases = await settled(lambda: case_tally(network), _exact)
        summaries = await settled(lambda: summary_tally(network), _exact)
        reputations = await settled(lambda: reputation_tally(network), _exact)
        orders = await order_tally(network)
        audit = await audit_events(stack)
        unhealthy = await unhealthy_components(stack)
        settled_at = time.monotonic()

    ledger = network.ledger
    checks = (cases, summaries, reputations, orders)
    figures |= {
        "faults injected": len(faults),
        **{f"  {f.what} at {f.at_share:.0%} (s to healthy)": round(f.seconds, 2) for f in faults},
        "reviews accepted": len(ledger.reviews),
        "  negative": len(ledger.negative_reviews()),
        "orders accepted": len(ledger.orders),
        "answers accepted": len(ledger.answers),
        **workload.figures(),
        "cases expected": cases.expected,
        "cases lost": cases.lost,
        "cases duplicated": cases.duplicated,
        "rating summaries wrong": len(summaries.wrong),
        "reputations wrong": len(reputations.wrong),
        "reputation entries counted twice": reputations.duplicated,
        "orders lost": orders.lost,
        "orders duplicated": orders.duplicated,
        **audit.figures(),
        "lost (all checks)": sum(c.lost for c in checks) + audit.lost + audit.unsent,
        "duplicated (all checks)": sum(c.duplicated for c in checks),
        "setup s": round(built - started, 2),
        "workload s": round(driven - built, 2),
        "settling s": round(settled_at - driven, 2),
        "wall time s": round(settled_at - started, 2),
    }

    assert [f.what for f in faults] == [
        "improvement killed",
        "nats-server restarted",
        "reviews database away",
        "improvement killed",
    ]
    assert len(ledger.reviews) == plan.count("review")
    assert len(ledger.orders) == plan.count("order")
    assert len(ledger.answers) == plan.count("answer")
    assert workload.server_errors[500] == 0, "a fault is answered as a bug (500), not as unavailable (503)"
    assert cases.exact, cases
    assert summaries.exact, summaries.wrong[:5]
    assert reputations.exact, reputations.wrong[:5]
    assert orders.exact, orders
    assert_nothing_lost(audit)
    assert unhealthy == []


def _exact(tally: Tally) -> bool:
    return tally.exact


def assert_nothing_lost(audit: EventAudit) -> None:
    assert audit.unsent == 0, "events left in an outbox"
    assert audit.lost == 0, "events recorded but not in their stream"
    assert audit.consumers_behind == {}, "durable consumers with messages not handled"
    assert audit.dead_letters == [], [(d.consumer, d.subject, d.error) for d in audit.dead_letters]


# --- the faults -------------------------------------------------------------------------------------


async def inject_faults(stack: Stack, progress: Progress) -> list[Fault]:
    """The faults, each at its point of the workload, each over before the next begins."""
    script: list[tuple[float, str, Callable[[], Awaitable[None]]]] = [
        (0.10, "improvement killed", partial(crash_and_restart, stack, "improvement")),
        (0.30, "nats-server restarted", partial(restart_nats, stack)),
        (0.50, "reviews database away", partial(database_outage, stack, "reviews", OUTAGE_SECONDS)),
        (0.70, "improvement killed", partial(crash_and_restart, stack, "improvement")),
    ]
    faults = []
    for share, what, fault in script:
        await progress.reached(share)
        at_share = progress.share
        began = time.monotonic()
        await fault()
        faults.append(Fault(what, at_share, time.monotonic() - began))
    return faults


async def crash_and_restart(stack: Stack, name: str) -> None:
    """SIGKILL ``name``, as a crash would, and start it again (returns once it reports healthy)."""
    assert await stack.stop(name, signal.SIGKILL) == -signal.SIGKILL
    await stack.start(name)


async def restart_nats(stack: Stack) -> None:
    """Restart nats-server; return once every service reports healthy again (reconnected)."""
    await stack.restart_nats()
    await wait_healthy(stack)


async def database_outage(stack: Stack, name: str, seconds: float) -> None:
    """Make ``name``'s database refuse work for ``seconds``, then let it back; return once the
    service reports healthy. SQLite: another process holds the file's write lock. PostgreSQL:
    the database accepts no connections and the service's are terminated."""
    url = database_url(stack, name)
    if make_url(url).get_backend_name() == "sqlite":
        await _sqlite_locked(make_url(url).database or "", seconds)
    else:
        await _postgres_closed(url, seconds)
    await wait_healthy(stack)


async def _sqlite_locked(path: str, seconds: float) -> None:
    connection = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    try:
        await asyncio.to_thread(connection.execute, "BEGIN EXCLUSIVE")
        await asyncio.sleep(seconds)  # the outage lasts this long
        await asyncio.to_thread(connection.execute, "ROLLBACK")
    finally:
        connection.close()


async def _postgres_closed(url: str, seconds: float) -> None:
    database = make_url(url).database
    admin = await asyncpg.connect(postgres_dsn(url, database="postgres"))
    try:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
            await asyncio.sleep(seconds)  # the outage lasts this long
        finally:
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
    finally:
        await admin.close()


async def unhealthy_components(stack: Stack) -> list[str]:
    """The components that are not running or do not report healthy."""
    unhealthy = []
    for component in stack.components:
        if stack.processes[component.name].returncode is not None:
            unhealthy.append(f"{component.name} exited")
        elif component.protocol == "http":
            async with httpx.AsyncClient() as http:
                if (await http.get(f"http://{component.address}/readyz")).status_code != 200:
                    unhealthy.append(component.name)
        else:
            try:
                async with grpc.aio.insecure_channel(component.address) as channel:
                    if await health_status(channel, timeout=2.0) != "SERVING":
                        unhealthy.append(component.name)
            except grpc.aio.AioRpcError:
                unhealthy.append(component.name)
    return unhealthy


async def wait_healthy(stack: Stack, timeout: float = 60.0) -> None:
    async def healthy() -> bool:
        return not await unhealthy_components(stack)

    await until(healthy, "every component reports healthy", timeout)
