"""The gateway's composed product page beside a bare FastAPI endpoint making one gRPC call, in one run.

    python bench/gateway.py [--concurrency 16] [--duration 10] [--warmup 2] [--quick]
                            [--observability off|runner]

System under test: a private nats-server, the six services and the gateway, each its own process
on its own SQLite file in a temporary folder, started as ``collabnet up`` starts them (the runner's
``Stack``, on free ports; the gateway's rate limit raised out of the way). It is seeded over gRPC,
straight to the services, with one product as the closed-loop story has it: made by a
manufacturer, listed by three retailers, 30 published reviews (through the three retailers'
channels, a few voted helpful), 5 questions with 2 or 3 answers each (some official, from the
maker), and 2 improvement initiatives under way with the retailers as stakeholders. The page,
``GET /v1/products/{id}/page`` with one retailer's API key, is checked to be complete (nothing
degraded, 3 listings, a first page of 10 reviews, 5 questions with their answers, 2 initiatives)
before it is measured: the gateway makes 6 RPCs to 4 services for it, all at once.

Baseline, in the same run, after the system under test is stopped: a bare FastAPI endpoint served
by uvicorn as the gateway is (httptools, no access log; its own process) that makes exactly one
gRPC call (the standard health Check) to a grpc.aio server in another process and returns a small
JSON.

The page is measured twice, each time on a fresh system: as the gateway runs by default (a complete
page is kept for one second per caller, and concurrent requests for it share one fan-out), and with
``COLLABNET_VIEW_CACHE_SECONDS=0`` (concurrent requests still share a fan-out, but every other
request makes all six calls).

Both are driven by the same load generator in this process: an httpx.AsyncClient with
``--concurrency`` requests in flight, ``--warmup`` seconds unrecorded, then ``--duration`` seconds
measured. Printed: requests per second, p50 and p99 latency, responses that were not a whole page
(degraded, or refused) and why, the ratio of the page's rate to the bare endpoint's (target 0.3 or
more), CPU per request of each process (the load generator included: on a 2-core machine it
shares the cores with the servers) and the ratio of the totals (the rate ratio a machine with
nothing else running would approach), load average and CPU count.

``--observability off`` (the default, as the service benchmarks do) runs the services with
warnings-only logs and the trace sampler off; ``runner`` keeps the runner's defaults: an info log
line per RPC and every span written to ``traces/<service>.jsonl``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import resource
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import httpx
import uvicorn
import uvloop
from fastapi import FastAPI
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from collabnet.common.v1 import common_pb2
from collabnet.community.v1 import community_pb2 as cm
from collabnet.community.v1.community_pb2_grpc import CommunityServiceStub
from collabnet.identity.v1 import identity_pb2 as idn
from collabnet.identity.v1.identity_pb2_grpc import IdentityServiceStub
from collabnet.improvement.v1 import improvement_pb2 as imp
from collabnet.improvement.v1.improvement_pb2_grpc import ImprovementServiceStub
from collabnet.reviews.v1 import reviews_pb2 as rv
from collabnet.reviews.v1.reviews_pb2_grpc import ReviewsServiceStub
from collabnet.supplychain.v1 import supplychain_pb2 as sc
from collabnet.supplychain.v1.supplychain_pb2_grpc import SupplyChainServiceStub
from collabnet_cli.stack import COMPONENTS, Component, Stack
from collabnet_kit.logging import configure_logging
from collabnet_kit.nats_server import free_port
from collabnet_kit.principal import Principal, PrincipalSigner
from collabnet_kit.settings import DEV_SIGNING_KEY

if TYPE_CHECKING:
    from collabnet.community.v1.community_pb2_grpc import CommunityServiceAsyncStub
    from collabnet.identity.v1.identity_pb2_grpc import IdentityServiceAsyncStub
    from collabnet.improvement.v1.improvement_pb2_grpc import ImprovementServiceAsyncStub
    from collabnet.reviews.v1.reviews_pb2_grpc import ReviewsServiceAsyncStub
    from collabnet.supplychain.v1.supplychain_pb2_grpc import SupplyChainServiceAsyncStub

T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]
WRITE = frozenset({"reviews:write"})

REVIEWS, QUESTIONS, INITIATIVES, LISTINGS, FIRST_PAGE = 30, 5, 2, 3, 10
RATINGS = (5, 4, 5, 4, 3, 5, 4, 2, 5, 4, 1, 5, 4, 3, 5)
WORDS = [
    *("boils", "quickly", "quiet", "sturdy", "handle", "lid", "spout", "pours", "cleanly", "steel"),
    *("limescale", "filter", "cord", "base", "light", "switch", "warm", "heavy", "compact", "glossy"),
    *("kitchen", "morning", "tea", "coffee", "family", "counter", "daily", "evening", "water", "cup"),
]
QUESTION_TEXTS = [
    ("Is the inside all steel?", "Does any plastic touch the water while it boils?"),
    ("How loud is it?", "Can I boil water early without waking everyone up?"),
    ("Does the lid open wide?", "I want to reach inside to descale it by hand."),
    ("Is the cord long enough?", "My socket is a little far from the counter."),
    ("Does it keep water warm?", "Is there a keep-warm setting, or does it switch off?"),
]


def metadata(principal: Principal) -> Metadata:
    return (("authorization", f"Bearer {PrincipalSigner(DEV_SIGNING_KEY).sign(principal)}"),)


SERVICE = metadata(Principal(service="bench"))


def partner(partner_id: str, acting_for: str | None = None, scopes: frozenset[str] = frozenset()) -> Metadata:
    return metadata(Principal(partner_id=partner_id, party_id=acting_for, scopes=scopes))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def settled(call: Callable[[], Awaitable[T]], what: str, timeout: float = 60.0) -> T:
    """``call()``, again while it fails NOT_FOUND or FAILED_PRECONDITION: a service that has not yet
    handled the events it learns the product from."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            waiting = error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)
            if not waiting or time.monotonic() > deadline:
                raise RuntimeError(f"{what}: {error.code().name}: {error.details()}") from error
        await asyncio.sleep(0.1)


# --- the system under test -----------------------------------------------------------------------


def components(observability: str, view_cache_seconds: float) -> list[Component]:
    """The runner's components on free ports; the gateway with its rate limit out of the way."""
    quiet = {"COLLABNET_LOG_LEVEL": "warning", "OTEL_TRACES_SAMPLER": "always_off"} if observability == "off" else {}
    chosen = []
    for component in COMPONENTS:
        port = free_port()
        env = dict(component.env) | quiet
        if component.protocol == "http":
            # The runner sets COLLABNET_GRPC_PORT for every component; the gateway listens on its HTTP port.
            env |= {
                "COLLABNET_HTTP_PORT": str(port),
                "COLLABNET_RATE_LIMIT_PER_SECOND": "1000000",
                "COLLABNET_RATE_LIMIT_BURST": "1000000",
                "COLLABNET_VIEW_CACHE_SECONDS": str(view_cache_seconds),
            }
        chosen.append(Component(component.name, component.module, port, component.protocol, env))
    missing = [c.name for c in chosen if not c.installed]
    if missing:
        raise SystemExit(f"not installed: {', '.join(missing)}")
    return chosen


@dataclass
class Seeded:
    product_id: str
    maker: str
    retailers: list[str]
    api_key: str
    answers: list[int] = field(default_factory=list)


@dataclass
class Stubs:
    """The five services, called straight (not through the gateway) to seed them."""

    identity: IdentityServiceAsyncStub
    supplychain: SupplyChainServiceAsyncStub
    reviews: ReviewsServiceAsyncStub
    community: CommunityServiceAsyncStub
    improvement: ImprovementServiceAsyncStub

    @classmethod
    async def open(cls, stack: Stack, channels: contextlib.AsyncExitStack) -> Stubs:
        async def channel(name: str) -> grpc.aio.Channel:
            address = next(c.address for c in stack.components if c.name == name)
            return await channels.enter_async_context(grpc.aio.insecure_channel(address))

        return cls(
            IdentityServiceStub(await channel("identity")),
            SupplyChainServiceStub(await channel("supplychain")),
            ReviewsServiceStub(await channel("reviews")),
            CommunityServiceStub(await channel("community")),
            ImprovementServiceStub(await channel("improvement")),
        )


def stamp(value: datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(value)
    return message


def review_text(rng: random.Random, index: int) -> tuple[str, str]:
    words = [rng.choice(WORDS) for _ in range(rng.randint(25, 60))]
    title = " ".join(rng.choice(WORDS) for _ in range(4)).capitalize()
    return title, f"Review {index} of the kettle: " + " ".join(words) + "."


async def seed(stubs: Stubs) -> Seeded:
    """One product's worth of network, reviews, questions and initiatives, over gRPC."""
    rng = random.Random(7)
    tag = uuid.uuid4().hex[:8]

    async def join(name: str, kind: idn.PartnerKind.ValueType) -> str:
        joined = await stubs.identity.JoinNetwork(
            idn.JoinNetworkRequest(display_name=name, kinds=[kind]), metadata=SERVICE
        )
        return joined.partner_id

    maker = await join("Benchware Appliances", idn.PARTNER_KIND_MANUFACTURER)
    retailers = [await join(f"Bench Retail {i + 1}", idn.PARTNER_KIND_RETAILER) for i in range(LISTINGS)]

    async def person(name: str, retailer: str) -> str:
        party = await stubs.identity.RegisterParty(
            idn.RegisterPartyRequest(kind=idn.PARTY_KIND_PERSON, display_name=name), metadata=SERVICE
        )
        await stubs.identity.EstablishRelationship(
            idn.EstablishRelationshipRequest(
                from_party_id=party.party_id, to_party_id=retailer, type="customer_of", context_partner_id=retailer
            ),
            metadata=SERVICE,
        )
        return party.party_id

    # Reviewers (who also answer questions) and askers, each a customer of one retailer.
    people = [await person(f"Bench Person {i}", retailers[i % LISTINGS]) for i in range(REVIEWS + QUESTIONS)]
    retailer_of = {p: retailers[i % LISTINGS] for i, p in enumerate(people)}
    authors, askers = people[:REVIEWS], people[REVIEWS:]

    product = await stubs.supplychain.RegisterProduct(
        sc.RegisterProductRequest(
            sku=f"BENCH-KETTLE-{tag}",
            name="Benchware Kettle 2000",
            category="kitchen/kettles",
            kind=sc.PRODUCT_KIND_FINISHED_GOOD,
            attributes={"brand": "Benchware", "capacity": "1.7 l", "color": "brushed steel"},
        ),
        metadata=partner(maker),
    )
    product_id = product.product_id
    for i, retailer in enumerate(retailers):
        await stubs.supplychain.CreateListing(
            sc.CreateListingRequest(
                product_id=product_id,
                price=common_pb2.Money(currency_code="EUR", amount_minor=4999 + 100 * i),
                available=True,
            ),
            metadata=partner(retailer),
        )

    # Reviews: through each author's retailer, acting for the author.
    review_ids = []
    for i, author in enumerate(authors):
        title, body = review_text(rng, i)
        request = rv.SubmitReviewRequest(
            product_id=product_id, author_id=author, rating=RATINGS[i % len(RATINGS)], title=title, body=body
        )
        by = partner(retailer_of[author], author, WRITE)
        review = await settled(partial(stubs.reviews.SubmitReview, request, metadata=by), "SubmitReview")
        assert review.status == rv.REVIEW_STATUS_PUBLISHED, (review.status, review.moderation)
        review_ids.append(review.review_id)
    for asker in askers:  # a few helpful votes, so that the most helpful sort has something to sort by
        for review_id in rng.sample(review_ids, 6):
            await stubs.reviews.VoteHelpful(
                rv.VoteHelpfulRequest(review_id=review_id, vote=rv.HELPFUL_VOTE_HELPFUL),
                metadata=partner(retailer_of[asker], asker, WRITE),
            )

    # Questions and answers, in an open community of the first retailer's covering the product.
    community = await settled(
        lambda: stubs.community.CreateCommunity(
            cm.CreateCommunityRequest(
                community=cm.Community(
                    name="Benchware kettle owners",
                    description="Questions and answers about Benchware kettles",
                    scope=cm.CommunityScope(products=cm.ProductSet(product_ids=[product_id])),
                    open_to_non_members=True,
                )
            ),
            metadata=partner(retailers[0]),
        ),
        "CreateCommunity",
    )
    answers = []
    for q, (asker, (title, body)) in enumerate(zip(askers, QUESTION_TEXTS, strict=True)):
        ask = cm.AskQuestionRequest(community_id=community.community_id, product_id=product_id, title=title, body=body)
        by = partner(retailer_of[asker], asker)
        question = await settled(partial(stubs.community.AskQuestion, ask, metadata=by), "AskQuestion")
        count = 2 + q % 2
        for k in range(count):
            text = f"Answer {k + 1} to question {q + 1}: " + " ".join(rng.choice(WORDS) for _ in range(20)) + "."
            if k == 0 and q % 2 == 0:  # the maker answers officially, as itself
                answer = cm.AnswerQuestionRequest(question_id=question.question_id, body=text)
                by = partner(maker)
            else:
                answerer = authors[(q * 3 + k) % REVIEWS]
                answer = cm.AnswerQuestionRequest(question_id=question.question_id, body=text)
                by = partner(retailer_of[answerer], answerer)
            await settled(partial(stubs.community.AnswerQuestion, answer, metadata=by), "AnswerQuestion")
        answers.append(count)

    # Initiatives: the maker's, with the retailers as stakeholders (so that they see them).
    stakeholders = [imp.Stakeholder(partner_id=r, role="seller") for r in retailers]
    redesign = await stubs.improvement.CreateInitiative(
        imp.CreateInitiativeRequest(
            title="A quieter boil",
            description="Reviews say it is loud: a new heating element and a damped base",
            kind=imp.INITIATIVE_KIND_PRODUCT_REDESIGN,
            product_id=product_id,
            stakeholders=[*stakeholders, imp.Stakeholder(platform=imp.PLATFORM_COMMUNITY, role="co-design")],
        ),
        metadata=partner(maker),
    )
    objective = imp.AddObjectiveRequest(
        initiative_id=redesign.initiative_id,
        description="Average rating at least 4.2",
        metric=imp.Metric(kind=imp.METRIC_KIND_PRODUCT_AVERAGE_RATING, product_id=product_id),
        target=4.2,
        due_time=stamp(datetime.now(UTC) + timedelta(days=90)),
    )
    await settled(lambda: stubs.improvement.AddObjective(objective, metadata=partner(maker)), "AddObjective")
    process = await stubs.improvement.CreateInitiative(
        imp.CreateInitiativeRequest(
            title="Spare lids within two days",
            description="Retailers stock spare lids and filters",
            kind=imp.INITIATIVE_KIND_PROCESS,
            product_id=product_id,
            stakeholders=stakeholders,
        ),
        metadata=partner(maker),
    )
    await stubs.improvement.ChangeInitiativeStage(
        imp.ChangeInitiativeStageRequest(
            initiative_id=process.initiative_id, stage=imp.INITIATIVE_STAGE_DO, decision="pilot with one retailer"
        ),
        metadata=partner(maker),
    )

    key = await stubs.identity.CreateApiKey(
        idn.CreateApiKeyRequest(partner_id=retailers[0], name="bench", scopes=["catalog:read"]), metadata=SERVICE
    )
    return Seeded(product_id, maker, retailers, key.secret, answers)


def incomplete(seeded: Seeded, status: int, page: Any) -> list[str]:
    """What the page lacks (nothing when it is complete)."""
    if status != 200:
        return [f"status {status}: {page}"]
    missing = []
    if page.get("degraded") != []:
        missing.append(f"degraded: {page.get('degraded')}")
    if (page.get("product") or {}).get("product_id") != seeded.product_id:
        missing.append("product")
    if len(page.get("listings") or []) != LISTINGS:
        missing.append(f"{len(page.get('listings') or [])} listings of {LISTINGS}")
    reviews = page.get("reviews") or {}
    if len(reviews.get("items") or []) != FIRST_PAGE:
        missing.append(f"{len(reviews.get('items') or [])} reviews of {FIRST_PAGE}")
    if int((reviews.get("summary") or {}).get("count") or 0) != REVIEWS:
        missing.append(f"summary counts {(reviews.get('summary') or {}).get('count')} reviews of {REVIEWS}")
    questions = page.get("questions") or []
    answered = sorted(len(q.get("top_answers") or []) for q in questions)
    if answered != sorted(seeded.answers):
        missing.append(f"questions with {answered} answers, not {sorted(seeded.answers)}")
    if len(page.get("initiatives") or []) != INITIATIVES:
        missing.append(f"{len(page.get('initiatives') or [])} initiatives of {INITIATIVES}")
    return missing


async def complete_page(client: httpx.AsyncClient, path: str, headers: dict[str, str], seeded: Seeded) -> bytes:
    """The page once every service has handled the events it needs; fails saying what is missing."""
    deadline = time.monotonic() + 60
    while True:
        response = await client.get(path, headers=headers)
        page = response.json()
        missing = incomplete(seeded, response.status_code, page)
        if not missing:
            return response.content
        if time.monotonic() > deadline:
            raise RuntimeError("the product page is incomplete: " + "; ".join(missing))
        await asyncio.sleep(0.2)


# --- the baseline ---------------------------------------------------------------------------------


async def serve_grpc(port: int) -> None:
    """A grpc.aio server with the standard health service and nothing else."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


async def serve_bare(port: int, grpc_port: int) -> None:
    """FastAPI on uvicorn as the gateway runs it, one endpoint making one gRPC call."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        app = FastAPI()

        @app.get("/v1/ping")
        async def ping() -> dict[str, str]:
            reply = await check(health_pb2.HealthCheckRequest(), timeout=5)
            return {"status": health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}

        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            http="httptools",
            loop="none",
        )
        await uvicorn.Server(config).serve()  # until SIGTERM or SIGINT


@dataclass
class Bare:
    processes: dict[str, asyncio.subprocess.Process]
    port: int

    @classmethod
    async def start(cls) -> Bare:
        grpc_port, http_port = free_port(), free_port()
        bare = cls({}, http_port)
        try:
            for name, role in (
                ("grpc server", ["--serve-grpc", str(grpc_port)]),
                ("bare endpoint", ["--serve-bare", str(http_port), str(grpc_port)]),
            ):
                bare.processes[name] = await asyncio.create_subprocess_exec(
                    sys.executable, __file__, *role, stdin=asyncio.subprocess.DEVNULL, start_new_session=True
                )
            await bare.wait_ready()
        except BaseException:
            await bare.stop()
            raise
        return bare

    async def wait_ready(self) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=2) as client:
            for _ in range(300):
                for name, process in self.processes.items():
                    if process.returncode is not None:
                        raise RuntimeError(f"the baseline's {name} exited with code {process.returncode}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/v1/ping")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError("the bare endpoint never answered")

    async def stop(self) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        for process in self.processes.values():
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()


# --- the load generator ---------------------------------------------------------------------------


@dataclass
class Result:
    requests: int
    seconds: float
    latencies: list[float]
    failures: Counter[str]
    cpu_ms: dict[str, float]
    load: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


async def drive(
    url: str,
    headers: dict[str, str],
    concurrency: int,
    warmup: float,
    duration: float,
    pids: dict[str, int],
    check: Callable[[httpx.Response], str | None],
) -> Result:
    """``concurrency`` workers calling ``url`` back to back: ``warmup`` seconds, then ``duration`` measured."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker(until: float, latencies: list[float] | None, failures: Counter[str]) -> None:
            while time.perf_counter() < until:
                started = time.perf_counter()
                response = await client.get(url, headers=headers)
                elapsed = time.perf_counter() - started
                problem = check(response)
                if problem is not None:
                    failures[problem] += 1
                if latencies is not None:
                    latencies.append(elapsed * 1000)

        until = time.perf_counter() + warmup
        await asyncio.gather(*(worker(until, None, Counter()) for _ in range(concurrency)))
        latencies: list[float] = []
        failures: Counter[str] = Counter()
        before = {name: cpu_seconds(pid) for name, pid in pids.items()} | {"load generator": own_cpu_seconds()}
        started = time.perf_counter()
        await asyncio.gather(*(worker(started + duration, latencies, failures) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        after = {name: cpu_seconds(pid) for name, pid in pids.items()} | {"load generator": own_cpu_seconds()}
    cpu_ms = {name: (after[name] - before[name]) * 1000 / len(latencies) for name in before}
    return Result(len(latencies), seconds, latencies, failures, cpu_ms, os.getloadavg()[0])


def refused(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", "")
    except ValueError:
        detail = response.text[:80]
    return f"HTTP {response.status_code} ({detail})"


def check_page(response: httpx.Response) -> str | None:
    """Why a response is not a whole page (only such responses are parsed)."""
    if response.status_code != 200:
        return refused(response)
    if b'"degraded":[]' not in response.content:
        return f"degraded ({', '.join(response.json()['degraded'])})"
    return None


def check_bare(response: httpx.Response) -> str | None:
    return None if response.status_code == 200 else refused(response)


# --- the run ---------------------------------------------------------------------------------------


async def measure_page(args: argparse.Namespace, view_cache_seconds: float) -> tuple[Result, int]:
    with tempfile.TemporaryDirectory(prefix="collabnet-bench-gateway-") as tmp:
        chosen = components(args.observability, view_cache_seconds)
        stack = Stack(Path(tmp), chosen, nats_port=free_port(), start_timeout=120)
        try:
            await stack.up()
            async with contextlib.AsyncExitStack() as channels:
                stubs = await Stubs.open(stack, channels)
                started = time.perf_counter()
                seeded = await seed(stubs)
                gateway = next(c for c in chosen if c.name == "gateway")
                url = f"http://{gateway.address}/v1/products/{seeded.product_id}/page"
                headers = {"Authorization": f"Bearer {seeded.api_key}"}
                async with httpx.AsyncClient(timeout=30) as client:
                    body = await complete_page(client, url, headers, seeded)
                print(
                    f"seeded in {time.perf_counter() - started:.1f} s; the page is complete: "
                    f"{len(body):,} bytes of JSON"
                )
            pids = {c.name: stack.processes[c.name].pid for c in chosen}
            result = await drive(url, headers, args.concurrency, args.warmup, args.duration, pids, check_page)
        finally:
            await stack.down()
    return result, len(body)


async def measure_bare(args: argparse.Namespace) -> Result:
    bare = await Bare.start()
    try:
        pids = {name: process.pid for name, process in bare.processes.items()}
        url = f"http://127.0.0.1:{bare.port}/v1/ping"
        return await drive(url, {}, args.concurrency, args.warmup, args.duration, pids, check_bare)
    finally:
        await bare.stop()


def line(name: str, result: Result) -> str:
    failed = sum(result.failures.values())
    text = (
        f"{name:<50} {result.rate:>7.1f} {percentile(result.latencies, 50):>8.1f} "
        f"{percentile(result.latencies, 99):>8.1f} {result.requests:>9,} {result.load:>5.1f}"
    )
    if failed:
        text += "\n  NOT OK: " + "; ".join(f"{n} {what}" for what, n in result.failures.most_common())
    return text


def cpu_line(name: str, result: Result) -> str:
    parts = ", ".join(f"{process} {ms:.2f}" for process, ms in sorted(result.cpu_ms.items(), key=lambda kv: -kv[1]))
    return f"  CPU ms per request, {name}: {parts} (total {sum(result.cpu_ms.values()):.2f})"


async def main(args: argparse.Namespace) -> None:
    # SIGTERM as Ctrl-C: cancelled, the run still stops every process it started on the way out.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    page, size = await measure_page(args, 1.0)
    fanned, _ = await measure_page(args, 0.0)
    bare = await measure_bare(args)
    print(
        f"\ngateway: {args.concurrency} requests in flight, {args.warmup:g} s warm-up, then {args.duration:g} s "
        f"measured; observability {args.observability}; latency in milliseconds at the client; load: the "
        "1-minute load average as measuring ended"
    )
    print(f"{'endpoint':<50} {'req/s':>7} {'p50':>8} {'p99':>8} {'requests':>9} {'load':>5}")
    print(line("GET /v1/products/{id}/page (kept 1 s, the default)", page))
    print(line("GET /v1/products/{id}/page (not kept: 6 RPCs each)", fanned))
    print(line("bare FastAPI + one gRPC call", bare))
    print(cpu_line("page, kept", page))
    print(cpu_line("page, not kept", fanned))
    print(cpu_line("bare", bare))
    ratio = page.rate / bare.rate
    print(f"page response: {size:,} bytes")
    print(f"ratio page/bare req/s: {ratio:.2f} (target 0.3 or more: {'met' if ratio >= 0.3 else 'MISSED'})")
    print(f"ratio page/bare req/s, every page fanned out (view cache off): {fanned.rate / bare.rate:.2f}")
    by_cpu = sum(bare.cpu_ms.values()) / sum(fanned.cpu_ms.values())
    print(f"ratio of CPU per request, bare/page not kept: {by_cpu:.2f} (the req/s ratio where CPU is all that limits)")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured, per endpoint")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 s measured after 0.5 s of warm-up")
    parser.add_argument(
        "--observability",
        choices=("off", "runner"),
        default="off",
        help="quiet services, or the runner's logs and spans",
    )
    parser.add_argument("--serve-grpc", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", type=int, nargs=2, metavar=("PORT", "GRPC_PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    configure_logging("bench", "warning")
    if args.serve_grpc is not None:
        uvloop.run(serve_grpc(args.serve_grpc))
    elif args.serve_bare is not None:
        uvloop.run(serve_bare(*args.serve_bare))
    else:
        if args.quick:
            args.duration, args.warmup = 2.0, 0.5
        try:
            uvloop.run(main(args))
        except (KeyboardInterrupt, asyncio.CancelledError):
            sys.exit("interrupted; every process it started is stopped")


if __name__ == "__main__":
    run()
