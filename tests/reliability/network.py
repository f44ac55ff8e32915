"""A network to drive through the gateway, as partners would, and what the system holds afterwards.

:class:`Network` is one retailer R and one maker M with N products that M makes and R lists, a
community open to everyone over those products, customers of R, and one question per product.
:class:`Plan` is a workload over it: reviews with a known share of negative ratings (one per
customer and product), orders and answers. :class:`Client` sends each request as a careful partner
does: creating POSTs carry an ``Idempotency-Key`` that every retry repeats, and answers that say
"try again" (429, 5xx, a retry still in flight, a dropped connection) are retried with back-off.
:class:`Ledger` keeps what the gateway accepted, from which the expected state follows: one case
per negative review, each product's rating summary, each customer's reputation.

The audits at the end read what the system holds: the outbox of every service's database, the
event streams, the durable consumers and the dead-letter stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import sqlite3
import statistics
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, TypeVar

import asyncpg
import httpx
import nats
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from sqlalchemy.engine import URL, make_url

from collabnet_cli.deadletter import DeadLetter, list_dead_letters
from collabnet_cli.gateway import Caller, Gateway, GatewayError, Reply, trace_id_of, until
from collabnet_cli.stack import Stack
from collabnet_kit.bus import stream_name

HOME = {
    "name": "A customer",
    "address": {"lines": ["Lindenstr. 5"], "locality": "Berlin", "postal_code": "10969", "region_code": "DE"},
}
NEGATIVE_RATING = 2
"""At or below it a review opens a case, by default (improvement's ``Policy.case_threshold``)."""
POINTS = {"review_published": 10, "answer_posted": 5}
"""Reputation per published review and per answer (community's ``domain.POINTS``)."""
STARS = {1: "One", 2: "Two", 3: "Three", 4: "Four", 5: "Five"}
DOMAINS = ("identity", "supplychain", "reviews", "community", "improvement", "analytics")
"""The services that publish events, each to its own stream."""


T = TypeVar("T")


# --- a careful partner's client -------------------------------------------------------------------


@dataclass
class Counts:
    """What the client did: requests sent, how they were answered, and how often it tried again."""

    operations: int = 0
    sent: int = 0
    accepted: int = 0
    retried: int = 0
    rate_limited: int = 0
    transport_errors: int = 0
    server_errors: Counter[int] = field(default_factory=Counter)

    def figures(self) -> dict[str, object]:
        figures: dict[str, object] = {
            "operations": self.operations,
            "requests sent": self.sent,
            "requests accepted (2xx)": self.accepted,
            "requests retried": self.retried,
            "429 answers": self.rate_limited,
            "connection errors": self.transport_errors,
            "5xx answers": sum(self.server_errors.values()),
        }
        for status, count in sorted(self.server_errors.items()):
            figures[f"  {status} answers"] = count
        return figures


@dataclass(frozen=True)
class Outcome:
    """The final answer to one operation, and whether an earlier try may have taken effect."""

    reply: Reply
    ambiguous: bool

    @property
    def status(self) -> int:
        return self.reply.status


class Client:
    """Sends each operation until it gets an answer that is not "try again", within ``give_up_after``."""

    def __init__(self, gateway: Gateway, *, give_up_after: float = 120.0, max_backoff: float = 2.0) -> None:
        self.gateway = gateway
        self.counts = Counts()
        self.give_up_after = give_up_after
        self.max_backoff = max_backoff

    async def send(
        self,
        caller: Caller,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Outcome:
        """One operation, tried until answered. ``key``: the Idempotency-Key of a creating POST."""
        headers = caller.headers | ({"Idempotency-Key": key} if key else {})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.give_up_after
        self.counts.operations += 1
        ambiguous = False
        attempt = 0
        while True:
            if attempt:
                self.counts.retried += 1
            attempt += 1
            self.counts.sent += 1
            wait = min(self.max_backoff, 0.1 * 2**attempt)
            try:
                response = await self.gateway.http.request(method, path, json=body, params=params, headers=headers)
            except httpx.TransportError as error:
                self.counts.transport_errors += 1
                ambiguous = True
                last = f"{type(error).__name__}: {error}"
            else:
                status = response.status_code
                payload = response.json() if response.content else None
                if status == 429:
                    self.counts.rate_limited += 1
                    wait = float(response.headers.get("Retry-After", "1"))
                elif status >= 500:
                    self.counts.server_errors[status] += 1
                    ambiguous = True
                elif status == 409 and "Idempotency-Key" in _detail(payload):
                    pass  # the first try is still being processed
                else:
                    if 200 <= status < 300:
                        self.counts.accepted += 1
                    return Outcome(Reply(status, payload, trace_id_of(response)), ambiguous)
                last = f"{status} {_detail(payload)}"
            if loop.time() + wait > deadline:
                raise TimeoutError(f"{method} {path}: only 'try again' for {self.give_up_after:.0f}s: {last}")
            await asyncio.sleep(wait)

    async def ok(
        self,
        caller: Caller,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Reply:
        """An operation that must succeed: any other final answer raises :class:`GatewayError`."""
        outcome = await self.send(caller, method, path, body, key=key, params=params)
        if not 200 <= outcome.status < 300:
            raise GatewayError(method, path, outcome.status, outcome.reply.body)
        return outcome.reply

    async def get(self, caller: Caller, path: str, **params: Any) -> Reply:
        return await self.ok(caller, "GET", path, params=params)

    async def pages(self, caller: Caller, path: str, items: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paged listing."""
        found: list[dict[str, Any]] = []
        token = ""
        while True:
            reply = await self.get(caller, path, **params, page_size=100, **({"page_token": token} if token else {}))
            found += reply[items]
            token = reply.body.get("next_page_token", "")
            if not token:
                return found


def _detail(payload: Any) -> str:
    return str(payload.get("detail", "")) if isinstance(payload, dict) else ""


async def bounded(work: Iterable[Callable[[], Awaitable[None]]], concurrency: int) -> None:
    """Run each piece of work, at most ``concurrency`` at once; the first failure stops the rest."""
    queue = iter(work)

    async def worker() -> None:
        for job in queue:
            await job()

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())


# --- the network ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Product:
    product_id: str
    sku: str


@dataclass(frozen=True)
class Review:
    review_id: str
    author_id: str
    product_id: str
    rating: int


@dataclass(frozen=True)
class Answer:
    answer_id: str
    answerer_id: str
    question_id: str


@dataclass
class Ledger:
    """What the gateway accepted, by operation: the truth the system's state is checked against."""

    reviews: dict[str, Review] = field(default_factory=dict)
    orders: dict[str, str] = field(default_factory=dict)  # idempotency key -> order id
    answers: dict[str, Answer] = field(default_factory=dict)

    def negative_reviews(self) -> set[str]:
        return {r.review_id for r in self.reviews.values() if r.rating <= NEGATIVE_RATING}

    def summary(self, product_id: str) -> tuple[int, float, list[int]]:
        """(count, mean, distribution of 1 to 5 stars) of the product's reviews."""
        ratings = [r.rating for r in self.reviews.values() if r.product_id == product_id]
        mean = statistics.fmean(ratings) if ratings else 0.0
        return len(ratings), mean, [ratings.count(stars) for stars in range(1, 6)]

    def points(self, party_id: str) -> int:
        reviews = sum(1 for r in self.reviews.values() if r.author_id == party_id)
        answers = sum(1 for a in self.answers.values() if a.answerer_id == party_id)
        return reviews * POINTS["review_published"] + answers * POINTS["answer_posted"]


@dataclass
class Network:
    """R sells N products M makes, to customers of R; M runs a community open to everyone about them."""

    client: Client
    tag: str
    retailer: Caller
    maker: Caller
    products: list[Product]
    customers: list[str]
    community_id: str
    questions: dict[str, tuple[str, str]] = field(default_factory=dict)  # product -> (question, asker)
    ledger: Ledger = field(default_factory=Ledger)

    @classmethod
    async def build(
        cls,
        gateway: Gateway,
        operator: Caller,
        *,
        products: int,
        customers: int,
        concurrency: int = 16,
        client: Client | None = None,
    ) -> Network:
        """Join R and M, register and list ``products``, record ``customers`` as R's customers, open
        the community and ask one question per product; return once every service that learns of
        the products from events (reviews, community) knows them."""
        client = client or Client(gateway)
        tag = uuid.uuid4().hex[:8]
        retailer = await _join(client, operator, f"Shopwell {tag}", "retailer")
        maker = await _join(client, operator, f"Kettlo {tag}", "manufacturer")
        category = f"reliability/{tag}"
        made: list[Product] = []
        people: list[str] = []

        async def product(index: int) -> None:
            body = {"sku": f"NET-{tag}-{index:04d}", "name": f"Kettle {index}", "category": category}
            registered = await client.ok(
                maker, "POST", "/v1/products", body | {"kind": "finished_good"}, key=f"{tag}-product-{index}"
            )
            listing = {
                "product_id": registered["product_id"],
                "price": {"currency_code": "EUR", "amount_minor": 2999 + index},
                "available": True,
            }
            await client.ok(retailer, "POST", "/v1/listings", listing, key=f"{tag}-listing-{index}")
            made.append(Product(registered["product_id"], registered["sku"]))

        async def customer(index: int) -> None:
            party = await client.ok(
                retailer,
                "POST",
                "/v1/parties",
                {"kind": "person", "display_name": f"Customer {index} {tag}"},
                key=f"{tag}-party-{index}",
            )
            relationship = {
                "from_party_id": party["party_id"],
                "to_party_id": retailer.partner_id,
                "type": "customer_of",
            }
            await client.ok(retailer, "POST", "/v1/relationships", relationship, key=f"{tag}-customer-{index}")
            people.append(party["party_id"])

        await bounded([partial(product, i) for i in range(products)], concurrency)
        await bounded([partial(customer, i) for i in range(customers)], concurrency)
        made.sort(key=lambda p: p.sku)
        community = await client.ok(
            maker,
            "POST",
            "/v1/communities",
            {
                "partner_id": maker.partner_id,
                "name": f"Kettle owners {tag}",
                "description": "Questions and answers about the kettles",
                "scope": {"category": category},
                "open_to_non_members": True,
            },
            key=f"{tag}-community",
        )
        network = cls(client, tag, retailer, maker, made, people, community["community_id"])
        await bounded([partial(network._known_to_reviews, p) for p in made], concurrency)
        rng = random.Random(tag)
        await bounded([partial(network._ask, p, rng.choice(people)) for p in made], concurrency)
        return network

    def customer(self, party_id: str) -> Caller:
        """R acting for its customer."""
        return self.retailer.for_party(party_id)

    async def _known_to_reviews(self, product: Product) -> None:
        async def known() -> bool:
            outcome = await self.client.send(self.retailer, "GET", f"/v1/products/{product.product_id}/rating-summary")
            return outcome.status == 200

        await until(known, f"reviews hears of product {product.product_id}", timeout=60)

    async def _ask(self, product: Product, asker: str) -> None:
        body = {
            "community_id": self.community_id,
            "product_id": product.product_id,
            "title": f"How is {product.sku} after a few months?",
            "body": "Does the lid still close tight, and has the limescale been a problem?",
        }

        async def asked() -> Reply | None:
            # 404 (422) until community has heard of the product from supplychain's events.
            outcome = await self.client.send(
                self.customer(asker), "POST", "/v1/questions", body, key=f"{self.tag}-question-{product.sku}"
            )
            if outcome.status in (404, 422):
                return None
            if outcome.status != 201:
                raise GatewayError("POST", "/v1/questions", outcome.status, outcome.reply.body)
            return outcome.reply

        question = await until(asked, f"community hears of product {product.product_id}", timeout=60)
        self.questions[product.product_id] = (question["question_id"], asker)

    # --- what customers do ------------------------------------------------------------------------

    async def review(self, author: str, product: str, rating: int) -> Review:
        """``author`` reviews ``product``. A try that may have been written before its answer was
        lost makes the retry find the review there already (409): then it is looked up."""
        path = "/v1/reviews"
        body = {
            "product_id": product,
            "author_id": author,
            "rating": rating,
            "title": f"{STARS[rating]} stars",
            "body": f"Used it every day for a month, {STARS[rating]} stars. Signed {_letters(author + product)}.",
        }
        outcome = await self.client.send(self.customer(author), "POST", path, body, key=f"{author}:{product}:review")
        if outcome.status == 201:
            review = Review(outcome.reply["review_id"], author, product, rating)
        elif outcome.status == 409 and outcome.ambiguous:
            written = await self._written(author, product)
            review = Review(written["review_id"], author, product, written["rating"])
        else:
            raise GatewayError("POST", path, outcome.status, outcome.reply.body)
        self.ledger.reviews[review.review_id] = review
        return review

    async def _written(self, author: str, product: str) -> dict[str, Any]:
        """The review ``author`` wrote of ``product``: published, or waiting for its disclosure."""
        for status in ("published", "pending"):
            found = await self.client.pages(
                self.customer(author), "/v1/reviews", "reviews", author_id=author, status=status
            )
            written = [r for r in found if r["product_id"] == product]
            if written:
                return written[0]
        raise LookupError(f"the gateway said {author} has reviewed {product}, but no such review is listed")

    async def order(self, customer: str, product: Product, key: str) -> str:
        """``customer`` orders one ``product`` from R; the order's key makes every retry the same order."""
        body = {
            "customer_id": customer,
            "retailer_id": self.retailer.partner_id,
            "lines": [{"sku": product.sku, "quantity": 1}],
            "currency_code": "EUR",
            "contact": HOME,
        }
        placed = await self.client.ok(self.customer(customer), "POST", "/v1/orders", body, key=f"{self.tag}-{key}")
        self.ledger.orders[key] = placed["order_id"]
        return str(placed["order_id"])

    async def answer(self, answerer: str, product: str) -> Answer:
        """``answerer`` answers the question about ``product`` (409 after an ambiguous try: it did)."""
        question, _ = self.questions[product]
        path = f"/v1/questions/{question}/answers"
        body = {"body": f"Mine is fine after three months ({answerer})."}
        outcome = await self.client.send(self.customer(answerer), "POST", path, body, key=f"{answerer}:{question}")
        if outcome.status == 201:
            answer = Answer(outcome.reply["answer_id"], answerer, question)
        elif outcome.status == 409 and outcome.ambiguous:
            listed = await self.client.pages(self.retailer, path, "answers")
            (mine,) = [a for a in listed if a["answerer_id"] == answerer]
            answer = Answer(mine["answer_id"], answerer, question)
        else:
            raise GatewayError("POST", path, outcome.status, outcome.reply.body)
        self.ledger.answers[answer.answer_id] = answer
        return answer


async def _join(client: Client, operator: Caller, name: str, kind: str) -> Caller:
    """A partner joins the network; the operator issues its first key."""
    joined = await client.ok(operator, "POST", "/v1/partners", {"display_name": name, "kinds": [kind]}, key=name)
    partner_id = joined["partner_id"]
    key = await client.ok(
        operator,
        "POST",
        f"/v1/partners/{partner_id}/api-keys",
        {"name": f"{name} backend", "scopes": ["reviews:write"]},
        key=f"{name} key",
    )
    return Caller(partner_id, key["secret"])


def _letters(text: str) -> str:
    """A word of letters only that ``text`` determines: unique words for a review's body without
    digits, which moderation could take for a phone number and reject as personal data."""
    return "".join(chr(ord("a") + int(c, 16)) for c in hashlib.sha256(text.encode()).hexdigest()[:16])


# --- a workload -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    kind: Literal["review", "order", "answer"]
    party_id: str
    product: Product
    rating: int = 0
    key: str = ""


@dataclass
class Plan:
    """What the customers will do, in a shuffled order fixed by ``seed``."""

    steps: list[Step]

    @classmethod
    def make(
        cls,
        network: Network,
        *,
        reviews: int,
        negative_share: float = 0.3,
        orders: int = 0,
        answers_per_question: int = 0,
        seed: int = 11,
    ) -> Plan:
        """``reviews`` spread evenly over the products (each by a different customer), a share of
        them negative (1 or 2 stars, the rest 3 to 5); ``orders`` of random products; and
        ``answers_per_question`` answers to each product's question by customers other than its asker."""
        rng = random.Random(seed)
        products = network.products
        per_product = [reviews // len(products) + (i < reviews % len(products)) for i in range(len(products))]
        if max(per_product) > len(network.customers):
            raise ValueError(f"{max(per_product)} reviews of one product need as many customers")
        negative = round(reviews * negative_share)
        ratings = [rng.choice((1, 2)) for _ in range(negative)]
        ratings += [rng.choice((3, 4, 5)) for _ in range(reviews - negative)]
        rng.shuffle(ratings)
        steps: list[Step] = []
        for product, count in zip(products, per_product, strict=True):
            for author in rng.sample(network.customers, count):
                steps.append(Step("review", author, product, rating=ratings.pop()))
        for index in range(orders):
            steps.append(Step("order", rng.choice(network.customers), rng.choice(products), key=f"order-{index}"))
        for product in products:
            _, asker = network.questions[product.product_id]
            others = [c for c in network.customers if c != asker]
            for answerer in rng.sample(others, answers_per_question):
                steps.append(Step("answer", answerer, product))
        rng.shuffle(steps)
        return cls(steps)

    def count(self, kind: str) -> int:
        return sum(1 for s in self.steps if s.kind == kind)


@dataclass
class Progress:
    """How many steps are done, for whoever waits for a point in the run."""

    total: int
    done: int = 0

    @property
    def share(self) -> float:
        return self.done / self.total if self.total else 1.0

    async def reached(self, share: float) -> None:
        await until(_now(lambda: self.share >= share), f"{share:.0%} of the workload", timeout=600)


async def drive(network: Network, plan: Plan, *, concurrency: int, progress: Progress | None = None) -> None:
    """Every step of ``plan``, at most ``concurrency`` requests in flight."""

    async def run(step: Step) -> None:
        if step.kind == "review":
            await network.review(step.party_id, step.product.product_id, step.rating)
        elif step.kind == "order":
            await network.order(step.party_id, step.product, step.key)
        else:
            await network.answer(step.party_id, step.product.product_id)
        if progress is not None:
            progress.done += 1

    await bounded([partial(run, s) for s in plan.steps], concurrency)


async def settled(check: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float = 120.0) -> T:
    """``check()``'s first result that is ``done``, or its last one when ``timeout`` has passed (to be
    reported as found): what the system settles into after the workload."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if done(result) or loop.time() > deadline:
            return result
        await asyncio.sleep(0.5)


def _now(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def checked() -> bool:
        return check()

    return checked


# --- what the system holds, through the gateway -----------------------------------------------------


@dataclass
class Tally:
    """How what was found compares with what was expected."""

    expected: int = 0
    lost: int = 0
    duplicated: int = 0
    wrong: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not (self.lost or self.duplicated or self.wrong)


async def case_tally(network: Network) -> Tally:
    """One case per negative review accepted, no case for any other."""
    cases = await network.client.pages(network.retailer, "/v1/cases", "cases", partner_id=network.retailer.partner_id)
    opened = Counter(c["review_id"] for c in cases)
    expected = network.ledger.negative_reviews()
    return Tally(
        expected=len(expected),
        lost=len(expected - set(opened)),
        duplicated=sum(n - 1 for n in opened.values()),
        wrong=[f"a case for review {r}, not negative" for r in set(opened) - expected],
    )


async def order_tally(network: Network) -> Tally:
    """One order per order key the gateway accepted, and no other order with R."""
    retailer = network.retailer
    orders = await network.client.pages(retailer, "/v1/orders", "orders", retailer_id=retailer.partner_id)
    placed = Counter(o["idempotency_key"] for o in orders)
    expected = {f"{network.tag}-{key}" for key in network.ledger.orders}
    return Tally(
        expected=len(expected),
        lost=len(expected - set(placed)),
        duplicated=sum(n - 1 for n in placed.values()),
        wrong=[f"an order with key {k!r}, not placed by the workload" for k in set(placed) - expected],
    )


async def summary_tally(network: Network) -> Tally:
    """Each product's rating summary (count, mean, distribution) as its accepted reviews make it."""
    tally = Tally(expected=len(network.products))

    async def check(product: Product) -> None:
        summary = (await network.client.get(network.retailer, f"/v1/products/{product.product_id}/rating-summary")).body
        count, mean, distribution = network.ledger.summary(product.product_id)
        found = int(summary["count"])
        tally.lost += max(0, count - found)
        tally.duplicated += max(0, found - count)
        if [int(n) for n in summary["distribution"]] != distribution or abs(float(summary["mean"]) - mean) > 1e-9:
            tally.wrong.append(
                f"{product.product_id}: {found} reviews, mean {summary['mean']}, {summary['distribution']}; "
                f"expected {count}, {mean}, {distribution}"
            )

    await bounded([partial(check, p) for p in network.products], 8)
    return tally


async def reputation_tally(network: Network) -> Tally:
    """Each customer's points as the community's rules give them for what was accepted, and no
    ledger entry counted twice (the same reason for the same subject)."""
    tally = Tally(expected=len(network.customers))

    async def check(party: str) -> None:
        caller = network.customer(party)
        reputation = (await network.client.get(caller, f"/v1/parties/{party}/reputation")).body
        entries = await network.client.pages(caller, f"/v1/parties/{party}/reputation/entries", "entries")
        twice = Counter((e["reason"], e["subject_id"]) for e in entries)
        tally.duplicated += sum(n - 1 for n in twice.values())
        expected, found = network.ledger.points(party), int(reputation["points"])
        if found < expected:
            tally.lost += 1
        if found != expected or found != sum(int(e["delta"]) for e in entries):
            tally.wrong.append(f"{party}: {found} points, {len(entries)} entries; expected {expected}")

    await bounded([partial(check, c) for c in network.customers], 8)
    return tally


# --- what the system holds, read directly -----------------------------------------------------------


@dataclass(frozen=True)
class Outbox:
    """One service's outbox: every event it recorded, and those not yet published."""

    event_ids: dict[str, str]  # event id -> subject
    unsent: int


async def read_outbox(database_url: str) -> Outbox:
    """Read the outbox table of a service's database (SQLite file or PostgreSQL database)."""
    query = "SELECT event_id, subject, sent_at IS NULL FROM outbox"
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":

        def read() -> list[tuple[str, str, int]]:
            with sqlite3.connect(f"file:{url.database}?mode=ro", uri=True, timeout=30) as connection:
                return list(connection.execute(query))

        rows: Sequence[Any] = await asyncio.to_thread(read)
    else:
        connection = await asyncpg.connect(postgres_dsn(database_url))
        try:
            rows = await connection.fetch(query)
        finally:
            await connection.close()
    return Outbox({row[0]: row[1] for row in rows}, sum(1 for row in rows if row[2]))


def postgres_dsn(database_url: str | URL, *, database: str | None = None) -> str:
    """A SQLAlchemy PostgreSQL URL (``postgresql+asyncpg://...``) as asyncpg takes it, of another
    ``database`` on the same server when given."""
    url = make_url(database_url).set(drivername="postgresql")
    return (url.set(database=database) if database else url).render_as_string(hide_password=False)


def database_url(stack: Stack, name: str) -> str:
    component = stack.component(name)
    return component.env.get("COLLABNET_DATABASE_URL") or stack.environment(component)["COLLABNET_DATABASE_URL"]


@dataclass
class EventAudit:
    """Every service's outbox against the streams: recorded, published, lost, published twice,
    left unsent; durable consumers still behind; dead letters."""

    recorded: int = 0
    in_streams: int = 0
    unsent: int = 0
    lost: int = 0
    duplicated: int = 0
    consumers_behind: dict[str, int] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def figures(self) -> dict[str, object]:
        return {
            "events recorded (outbox rows)": self.recorded,
            "events in the streams": self.in_streams,
            "events left unsent": self.unsent,
            "events lost": self.lost,
            "events published twice": self.duplicated,
            "consumer messages not handled": sum(self.consumers_behind.values()),
            "dead letters": len(self.dead_letters),
        }


async def audit_events(stack: Stack) -> EventAudit:
    """Compare each publishing service's outbox with its stream, message by message."""
    audit = EventAudit()
    connection = await nats.connect(stack.nats.url, connect_timeout=5, allow_reconnect=False)
    try:
        js = connection.jetstream()
        for domain in DOMAINS:
            outbox = await read_outbox(database_url(stack, domain))
            published = await stream_event_ids(js, stream_name(domain), f"collabnet.{domain}.>")
            in_stream = set(published)
            audit.recorded += len(outbox.event_ids)
            audit.in_streams += len(published)
            audit.unsent += outbox.unsent
            audit.lost += len(set(outbox.event_ids) - in_stream)
            audit.duplicated += len(published) - len(in_stream)
            for info in await js.consumers_info(stream_name(domain)):
                behind = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
                if behind and info.config.durable_name:
                    audit.consumers_behind[f"{domain}/{info.config.durable_name}"] = behind
        audit.dead_letters = await list_dead_letters(js)
    finally:
        await connection.close()
    return audit


async def stream_event_ids(js: JetStreamContext, stream: str, subject: str) -> list[str]:
    """The event id (``ce-id``) of every message in ``stream``, read with an ephemeral consumer."""
    try:
        total = int((await js.stream_info(stream)).state.messages or 0)
    except NotFoundError:
        return []
    config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, inactive_threshold=30.0)
    subscription = await js.pull_subscribe(subject, stream=stream, config=config)
    ids: list[str] = []
    try:
        while len(ids) < total:
            for message in await subscription.fetch(min(500, total - len(ids)), timeout=10):
                ids.append((message.headers or {}).get("ce-id", ""))
    finally:
        await subscription.unsubscribe()
    return ids
