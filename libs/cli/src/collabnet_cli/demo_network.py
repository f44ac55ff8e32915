"""The demo network ``collabnet up`` loads, so a newcomer has something to look at.

Three retailers, three makers with three suppliers, two carriers and fifty consumers, each a
customer of two or three retailers and some also a maker's employee or advocate or a member of a
retailer's loyalty programme. Makers build finished goods from their suppliers' components, lot by
lot; retailers list them; consumers order them (some delivered, some on the way, some just placed),
review what they bought (the bad reviews open improvement cases by themselves), ask and answer
questions in the makers' communities and vote for each other's ideas.

Everything goes through the gateway's HTTP API, as partners would do it. What happens is planned
first from one seeded ``random.Random`` (so two loads look alike whatever order the concurrent calls
finish in), then made. What was made, the partners' keys included, is kept in
``<state dir>/demo.json``, readable by its owner only; a later start reads it back.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import time
import unicodedata
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from collabnet_cli.gateway import Caller, Gateway, GatewayError, Reply, until

T = TypeVar("T")

SEED = 20261122
DEMO_FILE = "demo.json"
CONCURRENCY = 8
"""Requests in flight at once: enough to keep the services busy, few enough for SQLite's writers."""
KEY_RATE = 40.0
KEY_BURST = 80.0
"""What one key may send a second, and at once: under the gateway's default limit (50 a second,
bursts of 100, per key), so the load is not slowed down by refusals."""
BUSY_STATUSES = (429, 503)
ATTEMPTS = 8
CURRENCY = "EUR"

# --- who is in the network ------------------------------------------------------------------------------

RETAILERS = {"shopwell": "Shopwell", "hearth": "Hearth & Home", "pedalpoint": "Pedalpoint"}
MAKERS = {"kettlo": "Kettlo", "velora": "Velora Bikes", "nordhaus": "Nordhaus Textiles"}
SUPPLIERS = {"sealco": "SealCo Components", "brixen": "Brixen Metal & Glass", "lanacraft": "Lanacraft Fibres"}
CARRIERS = {"swift": "Swift Parcel", "nordlink": "Nordlink Freight"}
KINDS = {"retailer": RETAILERS, "manufacturer": MAKERS, "supplier": SUPPLIERS, "carrier": CARRIERS}
TRY_RETAILER = "shopwell"

BRANDS = {"kettlo": "Kettlo", "velora": "Velora", "nordhaus": "Nordhaus"}
LOYALTY = {"shopwell": "Shopwell Plus", "hearth": "Hearth & Home Friends", "pedalpoint": "Pedalpoint Club"}
RETAILER_CARRIER = {"shopwell": "swift", "hearth": "swift", "pedalpoint": "nordlink"}
PRICE_FACTOR = {"shopwell": 1.0, "hearth": 1.05, "pedalpoint": 0.97}

# Relationships between partners, each recorded by its first end: (from, type, to).
PARTNER_RELATIONSHIPS = (
    ("sealco", "supplier_of", "kettlo"),
    ("sealco", "supplier_of", "velora"),
    ("brixen", "supplier_of", "kettlo"),
    ("brixen", "supplier_of", "velora"),
    ("lanacraft", "supplier_of", "nordhaus"),
    ("swift", "carrier_for", "shopwell"),
    ("swift", "carrier_for", "hearth"),
    ("swift", "carrier_for", "kettlo"),
    ("swift", "carrier_for", "nordhaus"),
    ("nordlink", "carrier_for", "pedalpoint"),
    ("nordlink", "carrier_for", "velora"),
    ("nordlink", "carrier_for", "sealco"),
    ("nordlink", "carrier_for", "brixen"),
    ("nordlink", "carrier_for", "lanacraft"),
    ("hearth", "partner_of", "nordhaus"),
)


@dataclass(frozen=True)
class Part:
    """A component a supplier makes, and the unit its bills of materials count it in."""

    code: str
    supplier: str
    sku: str
    name: str
    category: str
    unit: str = "each"


@dataclass(frozen=True)
class Good:
    """A finished good: its maker, its bill of materials (component code, quantity), the size of
    its lot, its price before the retailers' margins, and how buyers tend to rate it (weights of
    1 to 5 stars)."""

    code: str
    maker: str
    sku: str
    name: str
    category: str
    bom: tuple[tuple[str, int], ...]
    lot_size: int
    price_minor: int
    ratings: tuple[int, int, int, int, int]


COMPONENTS = (
    Part("seal", "sealco", "SC-LIDSEAL-58", "Silicone lid seal 58 mm", "kitchen/parts"),
    Part("thermostat", "sealco", "SC-THERMO-B2", "Bimetal thermostat B2", "kitchen/parts"),
    Part("bearing", "sealco", "SC-BRG-6001", "Sealed cartridge bearing 6001", "cycling/parts"),
    Part("body", "brixen", "BX-KBODY-17", "Stainless steel kettle body 1.7 l", "kitchen/parts"),
    Part("jug", "brixen", "BX-JUG-15", "Borosilicate glass jug 1.5 l", "kitchen/parts"),
    Part("housing", "brixen", "BX-TOAST-2", "Brushed steel toaster housing", "kitchen/parts"),
    Part("frame", "brixen", "BX-FRAME-AL", "Aluminium bike frame", "cycling/parts"),
    Part("chain", "brixen", "BX-CHAIN-7", "Seven-speed bike chain", "cycling/parts"),
    Part("yarn", "lanacraft", "LC-MERINO-19", "Merino wool yarn, 19 micron", "textiles/yarn", "kg"),
    Part("linen", "lanacraft", "LC-LINEN-240", "Washed linen, 240 cm wide", "textiles/fabric", "m"),
    Part("thread", "lanacraft", "LC-THREAD-CT", "Cotton sewing thread", "textiles/haberdashery", "m"),
)

GOODS = (
    Good(
        "classic", "kettlo", "KT-CLASSIC-17", "Kettlo Classic kettle 1.7 l", "kitchen/kettles",
        (("seal", 1), ("thermostat", 1), ("body", 1)), 150, 4999, (1, 1, 2, 6, 10),
    ),
    Good(
        "glass", "kettlo", "KT-GLASS-15", "Kettlo Glass kettle 1.5 l", "kitchen/kettles",
        (("seal", 1), ("thermostat", 1), ("jug", 1)), 150, 5999, (3, 4, 3, 3, 2),
    ),
    Good(
        "toaster", "kettlo", "KT-TOAST-2", "Kettlo two-slice toaster", "kitchen/toasters",
        (("thermostat", 1), ("housing", 1)), 120, 3999, (1, 2, 3, 6, 4),
    ),
    Good(
        "city", "velora", "VB-CITY-7", "Velora City 7 bike", "cycling/bikes",
        (("frame", 1), ("chain", 1), ("bearing", 4)), 40, 64900, (0, 1, 1, 5, 8),
    ),
    Good(
        "kids", "velora", "VB-KIDS-20", "Velora Kids 20 bike", "cycling/bikes",
        (("frame", 1), ("chain", 1), ("bearing", 2)), 40, 34900, (0, 1, 2, 5, 6),
    ),
    Good(
        "throw", "nordhaus", "NH-THROW-MER", "Nordhaus Merino throw", "home/textiles",
        (("yarn", 2), ("thread", 20)), 120, 12900, (0, 0, 1, 4, 9),
    ),
    Good(
        "duvet", "nordhaus", "NH-DUVET-LIN", "Nordhaus Linen duvet cover", "home/textiles",
        (("linen", 5), ("thread", 60)), 120, 8900, (1, 2, 3, 5, 4),
    ),
    Good(
        "cushion", "nordhaus", "NH-CUSH-WOOL", "Nordhaus Wool cushion", "home/textiles",
        (("yarn", 1), ("linen", 1), ("thread", 10)), 120, 4900, (0, 1, 2, 5, 5),
    ),
)  # fmt: skip

LISTINGS = {
    "shopwell": ("classic", "glass", "toaster", "city", "throw", "duvet"),
    "hearth": ("classic", "glass", "toaster", "throw", "duvet", "cushion"),
    "pedalpoint": ("city", "kids", "throw"),
}


@dataclass(frozen=True)
class CommunitySpec:
    code: str
    partner: str
    name: str
    description: str
    scope: Mapping[str, str]
    goods: tuple[str, ...]


COMMUNITIES = (
    CommunitySpec(
        "kettlo", "kettlo", "Kettlo Kitchen Club", "Tea, coffee and toast: tips and questions from Kettlo owners",
        {"brand": "Kettlo"}, ("classic", "glass", "toaster"),
    ),
    CommunitySpec(
        "velora", "velora", "Velora Riders", "Routes, fitting and maintenance, from people who ride Velora bikes",
        {"brand": "Velora"}, ("city", "kids"),
    ),
    CommunitySpec(
        "nordhaus", "nordhaus", "Nordhaus at Home", "Washing, care and styling of wool and linen at home",
        {"brand": "Nordhaus"}, ("throw", "duvet", "cushion"),
    ),
    CommunitySpec(
        "kitchen", "hearth", "Hearth & Home Kitchen Table", "Everything about the kitchen appliances we sell",
        {"category": "kitchen"}, ("classic", "glass", "toaster"),
    ),
)  # fmt: skip

# --- the people -----------------------------------------------------------------------------------------

FIRST_NAMES = (
    "Lena", "Jonas", "Sophie", "Lukas", "Mia", "Felix", "Hannah", "Paul", "Emma", "Noah", "Clara", "Elias",
    "Anna", "Leon", "Marie", "Finn", "Laura", "Ben", "Julia", "Tim", "Sara", "David", "Nina", "Jan", "Eva",
    "Tobias", "Lisa", "Matteo", "Giulia", "Lucas", "Chloé", "Hugo", "Léa", "Daan", "Sanne", "Bram", "Fleur",
    "Oskar", "Ingrid", "Mikkel", "Freja", "Kasia", "Piotr", "Marta", "Pablo", "Lucía", "Aylin", "Emre", "Zoe",
    "Theo",
)  # fmt: skip
LAST_NAMES = (
    "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Hoffmann", "Schulz",
    "Koch", "Richter", "Klein", "Wolf", "Neumann", "Schwarz", "Braun", "Zimmermann", "Krüger", "Hartmann",
    "Lange", "Werner", "Krause", "Lehmann", "Köhler", "de Vries", "Jansen", "van Dijk", "Bakker", "Visser",
    "Rossi", "Bianchi", "Moreau", "Laurent", "Nielsen", "Hansen", "Lindqvist", "Kowalski", "Nowak", "García",
    "Fernández", "Kaya", "Demir", "Huber", "Gruber", "Bauer", "Pichler", "Keller", "Frei", "Brunner",
)  # fmt: skip
CITIES = (
    ("Berlin", "10969", "DE", ("Lindenstr.", "Bergmannstr.", "Kastanienallee")),
    ("Hamburg", "20357", "DE", ("Schanzenstr.", "Eppendorfer Weg", "Lange Reihe")),
    ("München", "80469", "DE", ("Klenzestr.", "Gärtnerplatz", "Fraunhoferstr.")),
    ("Köln", "50667", "DE", ("Breite Str.", "Ehrenstr.", "Brüsseler Str.")),
    ("Leipzig", "04109", "DE", ("Karl-Liebknecht-Str.", "Gottschedstr.")),
    ("Wien", "1070", "AT", ("Neubaugasse", "Zollergasse", "Siebensterngasse")),
    ("Graz", "8010", "AT", ("Sporgasse", "Herrengasse")),
    ("Amsterdam", "1015", "NL", ("Prinsengracht", "Westerstraat", "Bloemgracht")),
    ("Utrecht", "3511", "NL", ("Oudegracht", "Twijnstraat")),
    ("Zürich", "8004", "CH", ("Langstrasse", "Bäckerstrasse")),
    ("København", "1620", "DK", ("Istedgade", "Vesterbrogade")),
    ("Lyon", "69002", "FR", ("Rue Mercière", "Rue des Remparts d'Ainay")),
)  # fmt: skip
CONSUMERS = 50
EMPLOYEES_PER_MAKER = 2
ADVOCATES = 5
LOYAL_MEMBERS = 15
JOBS = ("Product engineer", "Customer service lead", "Quality inspector", "Industrial designer", "Supply planner")

# --- what they write --------------------------------------------------------------------------------------

TITLES = {
    5: ("Love it", "Excellent", "Five stars from me", "Great quality", "Could not be happier"),
    4: ("Very good", "Happy with it", "Nearly perfect", "Good buy", "Recommended"),
    3: ("Average", "It is okay", "Some doubts", "Fine for now", "Mixed feelings"),
    2: ("Disappointing", "Not convinced", "Problems after a month", "Expected better"),
    1: ("Broke quickly", "Avoid", "Poor quality", "Sent it back"),
}
OPENERS = {
    5: ("Really happy with it.", "Exactly what I hoped for.", "Best purchase this year.", "Would buy it again."),
    4: ("Very good.", "Solid and well made.", "Does the job well.", "Good value for money."),
    3: ("It is fine, nothing more.", "Mixed feelings after a few weeks.", "Okay for the price.", "Decent enough."),
    2: ("Disappointed so far.", "Not what I hoped for.", "I expected more at this price."),
    1: ("I would not buy it again.", "Very disappointed.", "It let me down far too soon."),
}
PROS = {
    "classic": ("It boils a full litre in under three minutes.", "The steel body still looks new after months.",
                "It switches itself off reliably.", "The handle stays cool."),
    "glass": ("Watching the water boil is oddly relaxing.", "It looks lovely on the counter.",
              "The blue light is a nice touch.", "It is easy to see how much water is left."),
    "toaster": ("Both sides brown evenly.", "The crumb tray pulls out easily.", "Thick slices fit without trouble.",
                "The defrost setting actually works."),
    "city": ("It rides smoothly on cobblestones.", "The gears change cleanly even uphill.",
             "It is light enough to carry up the stairs.", "The upright position is kind to my back."),
    "kids": ("Our son learnt to ride it in one afternoon.", "The brakes are easy for small hands.",
             "It survived a whole summer of rough play.", "The low step-through frame helps a lot."),
    "throw": ("It is warm without being heavy.", "The wool does not itch at all.",
              "It came out of the wool wash as soft as before.", "The colour is even nicer in person."),
    "duvet": ("The linen gets softer with every wash.", "It keeps cool on warm nights.",
              "The buttons are sturdy and well sewn.", "The stone colour goes with everything."),
    "cushion": ("The filling keeps its shape.", "The zip is hidden well.", "It feels firm but comfortable.",
                "The wool cover looks very cosy."),
}  # fmt: skip
CONS = {
    "classic": ("The lid spring feels a little weak.", "It is louder than I expected.",
                "Limescale shows quickly in hard water."),
    "glass": ("The lid seal started to leak after a few weeks.", "Water drips over the handle when pouring.",
              "The lid no longer closes tightly.", "The glass clouds with limescale very fast."),
    "toaster": ("The outside gets very hot.", "The browning is uneven on the left slot.",
                "The lever sometimes pops up too early."),
    "city": ("The kickstand is wobbly.", "The front light is too weak for country roads.",
             "The saddle is hard on longer rides."),
    "kids": ("The chain came off twice in the first week.", "It is heavier than it looks.",
             "The bell broke within a month."),
    "throw": ("It sheds a little at first.", "It is smaller than the photos suggest."),
    "duvet": ("It shrank a little in the first wash.", "The buttons came loose after a few washes.",
              "It creases a lot, even for linen."),
    "cushion": ("The seams opened after a couple of months.", "It went flat quickly.",
                "The wool pills where you lean on it."),
}  # fmt: skip
RESPONSES = (
    "We are sorry to read this. Our service team will contact you to put it right.",
    "Thank you for telling us. We are looking into it and will be in touch about a replacement.",
    "Sorry it let you down. Please reply to our message so we can fix this for you.",
)


@dataclass(frozen=True)
class QuestionText:
    title: str
    body: str
    official: str
    owner: str


QUESTIONS = {
    "classic": QuestionText(
        "Does the water taste of plastic?",
        "My old kettle left a plastic taste. Is everything that touches the water steel?",
        "Only the lid seal is silicone; the body and the spout are stainless steel.",
        "No taste at all, even in the first week.",
    ),
    "glass": QuestionText(
        "Does the lid seal leak after a while?",
        "I have read about leaking lids. Has anyone had that after a few months of daily use?",
        "Some early seals were too thin. We send a thicker replacement seal free of charge.",
        "Mine started to drip after two months; the replacement seal fixed it.",
    ),
    "toaster": QuestionText(
        "Does it fit thick slices of sourdough?",
        "We buy whole loaves from the bakery and cut them quite thick.",
        "The slots are 3.6 cm wide, enough for most bakery bread.",
        "Thick sourdough fits fine, and so do bagels.",
    ),
    "city": QuestionText(
        "Which frame size for a tall rider?",
        "I am quite tall and my current bike always feels cramped. Is there a large frame?",
        "Take the L frame: it suits riders from 1.80 m to 1.98 m.",
        "I am tall too and ride the L frame comfortably.",
    ),
    "kids": QuestionText(
        "From what age is the Kids 20 right?",
        "Our daughter is six and rides a 16 inch bike at the moment.",
        "Most children ride it from about six to nine years.",
        "Ours started on it at six and a half and loved it.",
    ),
    "throw": QuestionText(
        "Can the Merino throw go in the washing machine?",
        "I would rather not take it to the dry cleaner every time.",
        "Yes, on the wool programme at 30 degrees; dry it flat.",
        "I wash mine on the wool cycle and it is still soft.",
    ),
    "duvet": QuestionText(
        "Does the linen cover shrink?",
        "My last linen cover shrank so much that it no longer fitted the duvet.",
        "It is washed before sewing, so it shrinks by less than two percent.",
        "Mine has not shrunk after many washes at 40 degrees.",
    ),
    "cushion": QuestionText(
        "Is the cushion cover removable?",
        "With a dog in the house, covers need a wash now and then.",
        "Yes, it has a hidden zip on the back.",
        "Yes, the zip is hidden at the back and works well.",
    ),
}
QUESTIONS_PER_COMMUNITY = 2


@dataclass(frozen=True)
class IdeaText:
    community: str
    good: str
    title: str
    description: str


IDEAS = (
    IdeaText(
        "kettlo", "glass", "A keep-warm setting for the Glass kettle",
        "Keep the water at 80 degrees for green tea for half an hour after it boils.",
    ),
    IdeaText(
        "velora", "city", "A longer rear rack that takes a child seat",
        "The City 7 rack is too short for most child seats; a longer one as an option would help families.",
    ),
    IdeaText(
        "nordhaus", "", "Undyed natural wool colours",
        "Throws and cushions in the natural colours of the sheep, without any dye.",
    ),
)  # fmt: skip


# --- the plan: every choice, made before any call ---------------------------------------------------------


@dataclass
class PersonPlan:
    name: str
    email: str
    address: dict[str, Any]
    retailers: list[str]
    customer_types: list[str]
    employer: str = ""
    job: str = ""
    advocate_of: str = ""
    loyal_to: str = ""
    communities: dict[str, str] = field(default_factory=dict)
    """Community code -> the retailer it joins through."""

    @property
    def affiliated_with(self) -> set[str]:
        return {m for m in (self.employer, self.advocate_of) if m}


@dataclass(frozen=True)
class OrderPlan:
    person: int
    retailer: str
    lines: tuple[tuple[str, int], ...]
    fate: str
    """delivered, in_transit or placed."""
    via_maker: bool
    """Shipped from the maker to the retailer first, rather than from the retailer's stock."""


@dataclass(frozen=True)
class ReviewPlan:
    person: int
    good: str
    retailer: str
    rating: int
    title: str
    body: str
    response: str


@dataclass(frozen=True)
class QuestionPlan:
    community: str
    good: str
    asker: int
    answerer: int | None
    accept: bool


@dataclass(frozen=True)
class IdeaPlan:
    text: IdeaText
    submitter: int
    voters: tuple[int, ...]


@dataclass
class Plan:
    people: list[PersonPlan]
    orders: list[OrderPlan]
    reviews: list[ReviewPlan]
    questions: list[QuestionPlan]
    ideas: list[IdeaPlan]


def ascii_of(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in folded.lower().replace(" ", "") if c.isalnum())


def retail_price(good: Good, retailer: str) -> int:
    """The good's price at ``retailer``, ending in .99."""
    return max(99, round(good.price_minor * PRICE_FACTOR[retailer] / 100) * 100 - 1)


def goods_of(maker: str) -> list[Good]:
    return [g for g in GOODS if g.maker == maker]


GOOD = {g.code: g for g in GOODS}


def plan(rng: random.Random) -> Plan:
    """Who the consumers are, what they do, and what they write."""
    people = _people(rng)
    orders = _orders(rng, people)
    owners = _owners(orders)
    _memberships(rng, people, owners)
    return Plan(people, orders, _reviews(rng, people, orders), _questions(rng, people, owners), _ideas(rng, people))


def _people(rng: random.Random) -> list[PersonPlan]:
    firsts, lasts = list(FIRST_NAMES), list(LAST_NAMES)
    rng.shuffle(firsts)
    rng.shuffle(lasts)
    people = []
    for first, last in zip(firsts[:CONSUMERS], lasts[:CONSUMERS], strict=True):
        locality, postal_code, region, streets = rng.choice(CITIES)
        retailers = rng.sample(sorted(RETAILERS), rng.choice((2, 2, 3)))
        people.append(
            PersonPlan(
                name=f"{first} {last}",
                email=f"{ascii_of(first)}.{ascii_of(last)}@example.org",
                address={
                    "lines": [f"{rng.choice(streets)} {rng.randint(1, 120)}"],
                    "locality": locality,
                    "postal_code": postal_code,
                    "region_code": region,
                },
                retailers=retailers,
                customer_types=[rng.choice(("retail", "retail", "retail", "subscription")) for _ in retailers],
            )
        )
    chosen = rng.sample(range(CONSUMERS), EMPLOYEES_PER_MAKER * len(MAKERS) + ADVOCATES)
    for n, index in enumerate(chosen[: EMPLOYEES_PER_MAKER * len(MAKERS)]):
        people[index].employer = sorted(MAKERS)[n % len(MAKERS)]
        people[index].job = rng.choice(JOBS)
    for index in chosen[EMPLOYEES_PER_MAKER * len(MAKERS) :]:
        people[index].advocate_of = rng.choice(sorted(MAKERS))
    for index in rng.sample(range(CONSUMERS), LOYAL_MEMBERS):
        people[index].loyal_to = rng.choice(people[index].retailers)
    return people


def _orders(rng: random.Random, people: list[PersonPlan]) -> list[OrderPlan]:
    orders = []
    for index, person in enumerate(people):
        for _ in range(rng.choice((0, 1, 1, 1, 2, 2, 2))):
            retailer = rng.choice(person.retailers)
            listed = LISTINGS[retailer]
            goods = rng.sample(listed, 1 if rng.random() < 0.75 else 2)
            lines = tuple((g, 2 if GOOD[g].maker == "nordhaus" and rng.random() < 0.3 else 1) for g in goods)
            fate = rng.choices(("delivered", "in_transit", "placed"), (65, 20, 15))[0]
            orders.append(OrderPlan(index, retailer, lines, fate, len(lines) == 1 and rng.random() < 0.5))
    return orders


def _owners(orders: Sequence[OrderPlan]) -> dict[str, list[int]]:
    """Good code -> the people whose order of it was delivered, in order."""
    owners: dict[str, list[int]] = {}
    for order in orders:
        if order.fate == "delivered":
            for good, _ in order.lines:
                if order.person not in owners.setdefault(good, []):
                    owners[good].append(order.person)
    return owners


def _memberships(rng: random.Random, people: list[PersonPlan], owners: Mapping[str, list[int]]) -> None:
    """Owners join their maker's community; others join where their shops sell the brand, now and then."""
    for index, person in enumerate(people):
        for spec in COMMUNITIES:
            sellers = [r for r in person.retailers if set(LISTINGS[r]) & set(spec.goods)]
            if spec.partner in RETAILERS:
                sellers = [r for r in sellers if r == spec.partner]
            if not sellers:
                continue
            owns = any(index in owners.get(g, ()) for g in spec.goods)
            if owns or person.employer == spec.partner or rng.random() < 0.35:
                person.communities[spec.code] = rng.choice(sellers)


def _review_words(rng: random.Random, good: str, rating: int) -> tuple[str, str]:
    if rating == 5:
        details = rng.sample(PROS[good], 2)
    elif rating == 4:
        con = rng.choice(CONS[good])
        details = [rng.choice(PROS[good]), f"One small niggle: {con[0].lower()}{con[1:]}"]
    elif rating == 3:
        details = [rng.choice(PROS[good]), rng.choice(CONS[good])]
    else:
        details = rng.sample(CONS[good], 2 if rating == 1 else 1)
    return rng.choice(TITLES[rating]), " ".join([rng.choice(OPENERS[rating]), *details])


def _reviews(rng: random.Random, people: list[PersonPlan], orders: Sequence[OrderPlan]) -> list[ReviewPlan]:
    """Most buyers of a delivered order review what they bought, through the retailer they bought
    it from; nobody reviews the goods of a maker they work or speak for."""
    reviews: list[ReviewPlan] = []
    done: set[tuple[int, str]] = set()
    for order in orders:
        if order.fate != "delivered":
            continue
        for good, _ in order.lines:
            key = (order.person, good)
            if key in done or GOOD[good].maker in people[order.person].affiliated_with or rng.random() > 0.85:
                continue
            done.add(key)
            rating = rng.choices(range(1, 6), GOOD[good].ratings)[0]
            title, body = _review_words(rng, good, rating)
            response = rng.choice(RESPONSES) if rating <= 2 else ""
            reviews.append(ReviewPlan(order.person, good, order.retailer, rating, title, body, response))
    return reviews


def _members(people: Sequence[PersonPlan], community: str) -> list[int]:
    return [i for i, p in enumerate(people) if community in p.communities]


def _questions(rng: random.Random, people: list[PersonPlan], owners: Mapping[str, list[int]]) -> list[QuestionPlan]:
    """Two questions a community, each about a different good: a member who does not own it asks,
    the maker answers officially, and a member who owns it answers too."""
    questions = []
    asked: set[str] = set()
    for spec in COMMUNITIES:
        members = _members(people, spec.code)
        fresh = [g for g in spec.goods if g not in asked]
        for good in rng.sample(fresh, min(len(fresh), QUESTIONS_PER_COMMUNITY)):
            owning = [m for m in members if m in owners.get(good, ())]
            askers = [m for m in members if m not in owning]
            if not askers:
                continue
            asked.add(good)
            asker = rng.choice(askers)
            answerer = rng.choice(owning) if owning else None
            questions.append(QuestionPlan(spec.code, good, asker, answerer, rng.random() < 0.5))
    return questions


def _ideas(rng: random.Random, people: list[PersonPlan]) -> list[IdeaPlan]:
    ideas = []
    for text in IDEAS:
        members = _members(people, text.community)
        if len(members) < 2:
            continue
        submitter = rng.choice(members)
        others = [m for m in members if m != submitter]
        voters = tuple(rng.sample(others, min(len(others), rng.randint(3, 8))))
        ideas.append(IdeaPlan(text, submitter, voters))
    return ideas


# --- what was made ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoPartner:
    code: str
    name: str
    kind: str
    partner_id: str
    api_key_id: str
    key: str

    @property
    def caller(self) -> Caller:
        return Caller(self.partner_id, self.key)


@dataclass
class DemoConsumer:
    party_id: str
    name: str
    retailer_ids: list[str]
    """The retailers the consumer is a customer of; the first acts for the consumer in the demo."""
    roles: list[str]
    """What the consumer is to partners, as recorded: ``customer_of Shopwell``, ``employee_of Kettlo``..."""


@dataclass
class DemoProduct:
    product_id: str
    sku: str
    name: str
    kind: str
    maker_id: str
    lot_ids: list[str] = field(default_factory=list)
    component_ids: list[str] = field(default_factory=list)
    listing_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DemoOrder:
    order_id: str
    customer_id: str
    retailer_id: str
    status: str
    shipment_id: str


@dataclass(frozen=True)
class DemoReview:
    review_id: str
    product_id: str
    author_id: str
    retailer_id: str
    rating: int


@dataclass
class DemoCommunity:
    community_id: str
    name: str
    partner_id: str
    member_ids: list[str]


@dataclass
class DemoQuestion:
    question_id: str
    community_id: str
    product_id: str
    asker_id: str
    answer_ids: list[str]


@dataclass
class DemoIdea:
    idea_id: str
    community_id: str
    title: str
    voter_ids: list[str]


@dataclass
class DemoNetwork:
    """What the demo network is made of: ids, and the partners' keys."""

    gateway_url: str
    partners: list[DemoPartner]
    consumers: list[DemoConsumer]
    relationship_ids: list[str]
    products: list[DemoProduct]
    orders: list[DemoOrder]
    shipment_ids: list[str]
    reviews: list[DemoReview]
    case_ids: list[str]
    communities: list[DemoCommunity]
    questions: list[DemoQuestion]
    ideas: list[DemoIdea]
    load_seconds: float

    def partner(self, code: str) -> DemoPartner:
        return next(p for p in self.partners if p.code == code)

    def of_kind(self, kind: str) -> list[DemoPartner]:
        return [p for p in self.partners if p.kind == kind]

    @property
    def try_retailer(self) -> DemoPartner:
        return self.partner(TRY_RETAILER)

    @property
    def try_key(self) -> str:
        """The API key of the retailer the summary suggests trying."""
        return self.try_retailer.key

    def summary(self) -> list[str]:
        finished = [p for p in self.products if p.kind == "finished_good"]
        components = [p for p in self.products if p.kind == "component"]
        statuses = {s: sum(o.status == s for o in self.orders) for s in ("delivered", "shipped", "placed")}
        mean = sum(r.rating for r in self.reviews) / len(self.reviews) if self.reviews else 0.0
        roles = sum(len(c.roles) for c in self.consumers)
        retailer = self.try_retailer
        showcase = next((p for p in finished if p.sku.startswith(GOOD["glass"].sku)), finished[0])
        kinds = ", ".join(f"{len(self.of_kind(k))} {k}s" for k in KINDS)
        lots = sum(len(p.lot_ids) for p in self.products)
        listings = sum(len(p.listing_ids) for p in finished)
        members = sum(len(c.member_ids) for c in self.communities)
        answers = sum(len(q.answer_ids) for q in self.questions)
        votes = sum(len(i.voter_ids) for i in self.ideas)
        indent = " " * 17
        return [
            f"demo network     {kinds}; {len(self.consumers)} consumers in {roles} roles",
            f"{indent}{len(finished)} finished goods with bills of materials, {len(components)} components, "
            f"{lots} lots, {listings} listings",
            f"{indent}{len(self.orders)} orders: {statuses['delivered']} delivered, {statuses['shipped']} in transit, "
            f"{statuses['placed']} placed",
            f"{indent}{len(self.reviews)} reviews, {mean:.1f} stars on average; "
            f"{len(self.case_ids)} cases opened by bad reviews",
            f"{indent}{len(self.communities)} communities with {members} memberships; {len(self.questions)} questions, "
            f"{answers} answers; {len(self.ideas)} ideas, {votes} votes",
            f"{indent}(loaded in {self.load_seconds:.0f}s; kept in {DEMO_FILE} with the partners' keys)",
            f"try it as        {retailer.name} (retailer {retailer.partner_id}), key {retailer.key}",
            f"  curl -s -H 'Authorization: Bearer {retailer.key}' "
            f"{self.gateway_url}/v1/products/{showcase.product_id}/page",
        ]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DemoNetwork:
        return cls(
            gateway_url=data["gateway_url"],
            partners=[DemoPartner(**p) for p in data["partners"]],
            consumers=[DemoConsumer(**c) for c in data["consumers"]],
            relationship_ids=list(data["relationship_ids"]),
            products=[DemoProduct(**p) for p in data["products"]],
            orders=[DemoOrder(**o) for o in data["orders"]],
            shipment_ids=list(data["shipment_ids"]),
            reviews=[DemoReview(**r) for r in data["reviews"]],
            case_ids=list(data["case_ids"]),
            communities=[DemoCommunity(**c) for c in data["communities"]],
            questions=[DemoQuestion(**q) for q in data["questions"]],
            ideas=[DemoIdea(**i) for i in data["ideas"]],
            load_seconds=float(data["load_seconds"]),
        )


# --- loading --------------------------------------------------------------------------------------------


class Pace:
    """A token bucket that keeps one key's requests under the gateway's rate limit."""

    def __init__(self, rate: float = KEY_RATE, burst: float = KEY_BURST) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self) -> None:
        async with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await asyncio.sleep((1 - self.tokens) / self.rate)
            self.tokens = 0
            self.stamp = time.monotonic()


async def gather(aws: Iterable[Awaitable[T]]) -> list[T]:
    return list(await asyncio.gather(*aws))


class Loader:
    """Makes the plan happen through the gateway. Requests share a few slots and each key is paced,
    so chains of calls (one order's life, one consumer's relationships) run side by side."""

    def __init__(self, gateway: Gateway, operator: Caller, plan: Plan) -> None:
        self.gateway = gateway
        self.operator = operator
        self.plan = plan
        self.suffix = ""
        self.slots = asyncio.Semaphore(CONCURRENCY)
        self.paces: dict[str, Pace] = {}
        self.partners: dict[str, DemoPartner] = {}
        self.relationships: list[str] = []
        self.products: dict[str, DemoProduct] = {}
        self.lots: dict[str, str] = {}
        self.listings: dict[tuple[str, str], str] = {}
        self.people: list[DemoConsumer] = []
        self.communities: dict[str, DemoCommunity] = {}
        # What is made side by side is kept by its place in the plan, and listed in that order.
        self.orders: dict[int, DemoOrder] = {}
        self.shipments: list[str] = []
        self.reviews: dict[int, DemoReview] = {}
        self.cases: list[str] = []
        self.questions: dict[int, DemoQuestion] = {}
        self.ideas: dict[int, DemoIdea] = {}

    # --- calling --------------------------------------------------------------------------------------

    async def call(
        self,
        caller: Caller,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, Any] | None = None,
        expect: tuple[int, ...] = (200, 201),
    ) -> Reply:
        """One request, paced and within the slots; refused for being too many (429) or while a
        service is briefly unavailable (503), it is tried again a little later."""
        pace = self.paces.setdefault(caller.key, Pace())
        for attempt in range(ATTEMPTS):
            await pace.take()
            async with self.slots:
                reply = await self.gateway.call(
                    caller, method, path, body, params=params, expect=expect + BUSY_STATUSES
                )
            if reply.status not in BUSY_STATUSES or reply.status in expect:
                return reply
            await asyncio.sleep(min(2.0, 0.25 * 2**attempt))
        raise GatewayError(method, path, reply.status, reply.body)

    async def post(self, caller: Caller, path: str, body: Any = None) -> Reply:
        return await self.call(caller, "POST", path, {} if body is None else body)

    async def get(self, caller: Caller, path: str, **params: Any) -> Reply:
        return await self.call(caller, "GET", path, params=params)

    async def post_when_known(self, caller: Caller, path: str, body: Any, what: str) -> Reply:
        """POST until a service that learns of a product from supplychain's events knows it (until
        then it answers 404)."""

        async def attempt() -> Reply | None:
            reply = await self.call(caller, "POST", path, body, expect=(200, 201, 404))
            return reply if reply.status in (200, 201) else None

        return await until(attempt, what)

    # --- who is who ------------------------------------------------------------------------------------

    def partner(self, code: str) -> Caller:
        return self.partners[code].caller

    def pid(self, code: str) -> str:
        return self.partners[code].partner_id

    def person(self, index: int) -> str:
        return self.people[index].party_id

    def acting(self, retailer: str, index: int) -> Caller:
        """``retailer`` acting for consumer ``index``."""
        return self.partner(retailer).for_party(self.person(index))

    def product(self, code: str) -> DemoProduct:
        return self.products[code]

    # --- the load ------------------------------------------------------------------------------------

    async def load(self) -> None:
        self.suffix = await self._free_suffix()
        await gather(self._join(kind, code, name) for kind, names in KINDS.items() for code, name in names.items())
        await asyncio.gather(self._partner_relationships(), self._catalog(), self._consumers_and_communities())
        await gather(self._order(n, order) for n, order in enumerate(self.plan.orders))
        await asyncio.gather(self._reviews(), self._questions(), self._ideas())

    async def _join(self, kind: str, code: str, name: str) -> None:
        joined = await self.post(self.operator, "/v1/partners", {"display_name": name, "kinds": [kind]})
        partner_id = joined["partner_id"]
        key = await self.post(
            self.operator,
            f"/v1/partners/{partner_id}/api-keys",
            {"name": f"{name} demo backend", "scopes": ["reviews:write"]},
        )
        self.partners[code] = DemoPartner(code, name, kind, partner_id, key["api_key"]["api_key_id"], key["secret"])

    async def _relate(
        self,
        by: Caller,
        from_party: str,
        kind: str,
        to_party: str,
        attributes: Mapping[str, str] | None = None,
        context: str | None = None,
    ) -> None:
        body: dict[str, Any] = {"from_party_id": from_party, "to_party_id": to_party, "type": kind}
        if attributes:
            body["attributes"] = dict(attributes)
        if context:
            body["context_partner_id"] = context
        relationship = await self.post(by, "/v1/relationships", body)
        self.relationships.append(relationship["relationship_id"])

    async def _partner_relationships(self) -> None:
        makers_to_retailers = sorted({(GOOD[g].maker, retailer) for retailer, goods in LISTINGS.items() for g in goods})
        pairs = [*PARTNER_RELATIONSHIPS, *((m, "supplier_of", r) for m, r in makers_to_retailers)]
        await gather(self._relate(self.partner(a), self.pid(a), kind, self.pid(b)) for a, kind, b in pairs)

    # --- products, their structure, lots and listings ---------------------------------------------------

    async def _catalog(self) -> None:
        await asyncio.gather(
            gather(self._register(c.code, c.supplier, c.sku, c.name, c.category, "component") for c in COMPONENTS),
            gather(self._register(g.code, g.maker, g.sku, g.name, g.category, "finished_good") for g in GOODS),
        )
        await asyncio.gather(
            gather(self._list(retailer, good) for retailer, goods in LISTINGS.items() for good in goods),
            self._supply(),
        )
        for (_, good), listing_id in sorted(self.listings.items()):
            self.product(good).listing_ids.append(listing_id)

    async def _register(self, code: str, owner: str, sku: str, name: str, category: str, kind: str) -> None:
        sku = f"{sku}{self.suffix}"
        body: dict[str, Any] = {"sku": sku, "name": name, "category": category, "kind": kind}
        if owner in BRANDS:
            body["attributes"] = {"brand": BRANDS[owner]}
        product = await self.post(self.partner(owner), "/v1/products", body)
        self.products[code] = DemoProduct(product["product_id"], sku, name, kind, self.pid(owner))

    async def _list(self, retailer: str, good: str) -> None:
        body = {
            "product_id": self.product(good).product_id,
            "price": {"currency_code": CURRENCY, "amount_minor": retail_price(GOOD[good], retailer)},
            "available": True,
        }
        listing = await self.post(self.partner(retailer), "/v1/listings", body)
        self.listings[(retailer, good)] = listing["listing_id"]

    async def _supply(self) -> None:
        """Bills of materials, the suppliers' component lots (shipped to the makers), then the
        makers' lots built from them."""
        await asyncio.gather(
            gather(self._structure(good) for good in GOODS),
            gather(self._component_lot(component) for component in COMPONENTS),
        )
        await gather(self._finished_lot(good) for good in GOODS)

    async def _structure(self, good: Good) -> None:
        supplier = {c.code: c.supplier for c in COMPONENTS}
        unit = {c.code: c.unit for c in COMPONENTS}
        items: list[dict[str, Any]] = [
            {
                "component_id": self.product(code).product_id,
                "supplier_id": self.pid(supplier[code]),
                "quantity": quantity,
                "unit": unit[code],
            }
            for code, quantity in good.bom
        ]
        path = f"/v1/products/{self.product(good.code).product_id}/structure"
        await self.call(self.partner(good.maker), "PUT", path, {"items": items})
        self.product(good.code).component_ids = [item["component_id"] for item in items]

    def _needed(self, component: str) -> int:
        return sum(q * g.lot_size for g in GOODS for c, q in g.bom if c == component)

    async def _component_lot(self, component: Part) -> None:
        supplier = self.partner(component.supplier)
        quantity = math.ceil(self._needed(component.code) * 1.2 / 100) * 100
        product = self.product(component.code)
        lot = await self.post(
            supplier,
            "/v1/lots",
            {"product_id": product.product_id, "code": f"{component.sku}-2611-01", "quantity": quantity},
        )
        lot_id = lot["lot_id"]
        product.lot_ids.append(lot_id)
        self.lots[component.code] = lot_id
        makers = sorted({g.maker for g in GOODS for c, _ in g.bom if c == component.code})
        for maker in makers:
            used = sum(q * g.lot_size for g in goods_of(maker) for c, q in g.bom if c == component.code)
            leg = {
                "kind": "supplier_to_maker",
                "from_party_id": supplier.partner_id,
                "to_party_id": self.pid(maker),
                "carrier_id": self.pid("nordlink"),
                "lots": [{"lot_id": lot_id, "quantity": used}],
            }
            shipment = await self.post(supplier, "/v1/shipments", {"legs": [leg]})
            self.shipments.append(shipment["shipment_id"])
            await self._travel(shipment["legs"][0]["leg_id"], "nordlink", "delivered")

    async def _finished_lot(self, good: Good) -> None:
        inputs = [{"lot_id": self.lots[code], "quantity": quantity * good.lot_size} for code, quantity in good.bom]
        product = self.product(good.code)
        body = {
            "product_id": product.product_id,
            "code": f"{good.sku}-2611-01",
            "quantity": good.lot_size,
            "inputs": inputs,
        }
        lot = await self.post(self.partner(good.maker), "/v1/lots", body)
        product.lot_ids.append(lot["lot_id"])
        self.lots[good.code] = lot["lot_id"]

    async def _travel(self, leg_id: str, carrier: str, until_status: str) -> None:
        """The carrier reports the leg picked up and, when ``until_status`` is delivered, delivered."""
        for status in ("picked_up", "delivered"):
            await self.post(self.partner(carrier), f"/v1/shipment-legs/{leg_id}/events", {"status": status})
            if status == until_status:
                return

    # --- consumers and their communities -----------------------------------------------------------------

    async def _consumers_and_communities(self) -> None:
        self.people = [DemoConsumer("", p.name, [], []) for p in self.plan.people]
        await asyncio.gather(
            gather(self._consumer(index) for index in range(len(self.plan.people))),
            gather(self._community(spec) for spec in COMMUNITIES),
        )
        await gather(
            self._join_community(index, code, retailer)
            for index, person in enumerate(self.plan.people)
            for code, retailer in person.communities.items()
        )
        for code, community in self.communities.items():
            community.member_ids = [self.person(index) for index in _members(self.plan.people, code)]

    async def _consumer(self, index: int) -> None:
        person = self.plan.people[index]
        first = self.partner(person.retailers[0])
        registration = {"kind": "person", "display_name": person.name, "email": person.email}
        party = await self.post(first, "/v1/parties", registration)
        consumer = self.people[index]
        party_id = consumer.party_id = party["party_id"]
        roles: list[tuple[str, str, Mapping[str, str]]] = [
            ("customer_of", retailer, {"customer_type": kind})
            for retailer, kind in zip(person.retailers, person.customer_types, strict=True)
        ]
        if person.loyal_to:
            roles.append(("member_of", person.loyal_to, {"programme": LOYALTY[person.loyal_to]}))
        if person.employer:
            roles.append(("employee_of", person.employer, {"job_title": person.job}))
        if person.advocate_of:
            roles.append(("advocate_of", person.advocate_of, {"programme": "ambassador"}))
        # The first retailer registered the person and records them as its customer. A partner
        # relates to itself only persons it registered or acts for, so the person meets every other
        # partner through the first retailer acting for them, each relationship in that partner's network.
        (kind, to, attrs), *others = roles
        await self._relate(first, party_id, kind, self.pid(to), attrs)
        introducer = first.for_party(party_id)
        await gather(
            self._relate(introducer, party_id, kind, self.pid(to), attrs, context=self.pid(to))
            for kind, to, attrs in others
        )
        consumer.retailer_ids = [self.pid(r) for r in person.retailers]
        names = {**RETAILERS, **MAKERS}
        consumer.roles = [f"{kind} {names[to]}" for kind, to, _ in roles]

    async def _community(self, spec: CommunitySpec) -> None:
        body = {
            "name": spec.name,
            "description": spec.description,
            "scope": dict(spec.scope),
            "open_to_non_members": False,
        }
        community = await self.post(self.partner(spec.partner), "/v1/communities", body)
        self.communities[spec.code] = DemoCommunity(community["community_id"], spec.name, self.pid(spec.partner), [])

    async def _join_community(self, index: int, code: str, retailer: str) -> None:
        community = self.communities[code]
        await self.post(self.acting(retailer, index), f"/v1/communities/{community.community_id}:join", {})

    # --- orders --------------------------------------------------------------------------------------

    async def _order(self, n: int, order: OrderPlan) -> None:
        """Placed by the retailer acting for its customer; confirmed, given units of the makers' lots,
        shipped (from the maker through the retailer, or from the retailer's stock) and carried home."""
        customer = self.acting(order.retailer, order.person)
        retailer = self.partner(order.retailer)
        person = self.plan.people[order.person]
        body = {
            "customer_id": customer.acting_for,
            "retailer_id": retailer.partner_id,
            "lines": [{"sku": self.product(good).sku, "quantity": quantity} for good, quantity in order.lines],
            "currency_code": CURRENCY,
            "contact": {"name": person.name, "address": person.address},
        }
        placed = await self.post(customer, "/v1/orders", body)
        order_id = placed["order_id"]
        status, shipment_id = "placed", ""
        if order.fate != "placed":
            await self.post(retailer, f"/v1/orders/{order_id}:confirm")
            for number, (good, quantity) in enumerate(order.lines, start=1):
                allocation = {"line_number": number, "lot_id": self.lots[good], "quantity": quantity}
                await self.post(retailer, f"/v1/orders/{order_id}:allocate", allocation)
            carrier = RETAILER_CARRIER[order.retailer]
            home = {
                "kind": "retailer_to_consumer",
                "from_party_id": retailer.partner_id,
                "to_party_id": customer.acting_for,
                "carrier_id": self.pid(carrier),
            }
            legs = [home]
            if order.via_maker:
                maker = GOOD[order.lines[0][0]].maker
                inbound = {
                    "kind": "maker_to_retailer",
                    "from_party_id": self.pid(maker),
                    "to_party_id": retailer.partner_id,
                }
                legs.insert(0, home | inbound)
            shipment = await self.post(retailer, "/v1/shipments", {"order_id": order_id, "legs": legs})
            shipment_id = shipment["shipment_id"]
            self.shipments.append(shipment_id)
            leg_ids = [leg["leg_id"] for leg in shipment["legs"]]
            for leg_id in leg_ids[:-1]:
                await self._travel(leg_id, carrier, "delivered")
            await self._travel(leg_ids[-1], carrier, "delivered" if order.fate == "delivered" else "picked_up")
            status = "delivered" if order.fate == "delivered" else "shipped"
        self.orders[n] = DemoOrder(order_id, customer.acting_for, retailer.partner_id, status, shipment_id)

    # --- what consumers say ------------------------------------------------------------------------------

    async def _reviews(self) -> None:
        await gather(self._review(n, review) for n, review in enumerate(self.plan.reviews))
        await self._cases_opened()

    async def _review(self, n: int, review: ReviewPlan) -> None:
        product = self.product(review.good)
        author = self.acting(review.retailer, review.person)
        body = {
            "product_id": product.product_id,
            "author_id": author.acting_for,
            "rating": review.rating,
            "title": review.title,
            "body": review.body,
        }
        written = await self.post_when_known(author, "/v1/reviews", body, "reviews hears of the product")
        self.reviews[n] = DemoReview(
            written["review_id"], product.product_id, author.acting_for, author.partner_id, review.rating
        )
        if review.response:
            maker = self.partner(GOOD[review.good].maker)
            await self.post(maker, f"/v1/reviews/{written['review_id']}:respond", {"body": review.response})

    async def _cases_opened(self) -> None:
        """Each bad review opens a case for the maker and the retailer by itself; wait until each has."""
        bad = [r.review_id for _, r in sorted(self.reviews.items()) if r.rating <= 2]
        makers = sorted({GOOD[r.good].maker for r in self.plan.reviews if r.rating <= 2})

        async def opened() -> list[str] | None:
            found: dict[str, str] = {}
            for maker in makers:
                listed = await self.get(self.partner(maker), "/v1/cases", page_size=100)
                found |= {c["review_id"]: c["case_id"] for c in listed["cases"] if c["review_id"] in bad}
            return [found[r] for r in bad] if set(found) == set(bad) else None

        self.cases = await until(opened, "the bad reviews open their cases", timeout=60.0)

    async def _questions(self) -> None:
        await gather(self._question(n, question) for n, question in enumerate(self.plan.questions))

    def _through(self, index: int, community: str) -> Caller:
        """Consumer ``index`` acting in ``community``, through the retailer it joined it through."""
        return self.acting(self.plan.people[index].communities[community], index)

    async def _question(self, n: int, question: QuestionPlan) -> None:
        text = QUESTIONS[question.good]
        community = self.communities[question.community]
        product = self.product(question.good)
        body = {
            "community_id": community.community_id,
            "product_id": product.product_id,
            "title": text.title,
            "body": text.body,
        }
        asker = self._through(question.asker, question.community)
        asked = await self.post_when_known(asker, "/v1/questions", body, "the community hears of the product")
        question_id = asked["question_id"]
        maker = self.partner(GOOD[question.good].maker)
        official = await self.post(maker, f"/v1/questions/{question_id}/answers", {"body": text.official})
        answers = [official["answer_id"]]
        if question.answerer is not None:
            owner = self._through(question.answerer, question.community)
            answer = await self.post(owner, f"/v1/questions/{question_id}/answers", {"body": text.owner})
            answers.append(answer["answer_id"])
        if question.accept:
            await self.post(asker, f"/v1/answers/{answers[-1]}:accept", {})
        self.questions[n] = DemoQuestion(
            question_id, community.community_id, product.product_id, asker.acting_for, answers
        )

    async def _ideas(self) -> None:
        await gather(self._idea(n, idea) for n, idea in enumerate(self.plan.ideas))

    async def _idea(self, n: int, idea: IdeaPlan) -> None:
        community = self.communities[idea.text.community]
        body = {
            "community_id": community.community_id,
            "title": idea.text.title,
            "description": idea.text.description,
            "product_id": self.product(idea.text.good).product_id if idea.text.good else "",
        }
        submitter = self._through(idea.submitter, idea.text.community)
        if idea.text.good:
            submitted = await self.post_when_known(submitter, "/v1/ideas", body, "the community hears of the product")
        else:
            submitted = await self.post(submitter, "/v1/ideas", body)
        idea_id = submitted["idea_id"]
        await gather(
            self.post(self._through(voter, idea.text.community), f"/v1/ideas/{idea_id}:vote", {})
            for voter in idea.voters
        )
        voters = [self.person(v) for v in idea.voters]
        self.ideas[n] = DemoIdea(idea_id, community.community_id, idea.text.title, voters)

    async def _free_suffix(self) -> str:
        """What to end SKUs with so they are new: nothing on a fresh network; a number when the demo
        was loaded into this network before (and its file has gone since)."""
        for n in range(1, 100):
            suffix = "" if n == 1 else f"-{n}"
            listed = await self.get(self.operator, "/v1/products", sku=f"{GOODS[0].sku}{suffix}")
            if not listed["products"]:
                return suffix
        raise RuntimeError("the demo network has been loaded into this network 99 times already")

    def network(self, gateway_url: str, seconds: float) -> DemoNetwork:
        order = {code: n for n, code in enumerate([*(c.code for c in COMPONENTS), *(g.code for g in GOODS)])}
        return DemoNetwork(
            gateway_url=gateway_url,
            partners=[self.partners[code] for names in KINDS.values() for code in names],
            consumers=self.people,
            relationship_ids=sorted(self.relationships),
            products=[self.products[code] for code in sorted(self.products, key=order.__getitem__)],
            orders=[order for _, order in sorted(self.orders.items())],
            shipment_ids=sorted(self.shipments),
            reviews=[review for _, review in sorted(self.reviews.items())],
            case_ids=self.cases,
            communities=[self.communities[spec.code] for spec in COMMUNITIES],
            questions=[question for _, question in sorted(self.questions.items())],
            ideas=[idea for _, idea in sorted(self.ideas.items())],
            load_seconds=round(seconds, 2),
        )


async def load(gateway_url: str, operator: Caller, seed: int = SEED) -> DemoNetwork:
    """Load the demo network through the gateway at ``gateway_url`` with the operator's key."""
    started = time.monotonic()
    async with Gateway(gateway_url, timeout=30.0) as gateway:
        loader = Loader(gateway, operator, plan(random.Random(seed)))
        await loader.load()
    return loader.network(gateway_url, time.monotonic() - started)


def demo_file(state_dir: Path) -> Path:
    return state_dir / DEMO_FILE


def save(state_dir: Path, network: DemoNetwork) -> None:
    """Keep ``network`` in ``<state_dir>/demo.json``, readable by its owner only (it holds keys)."""
    path = demo_file(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(network.to_json(), out, indent=1, ensure_ascii=False)
    partial.replace(path)


def read(state_dir: Path) -> DemoNetwork | None:
    path = demo_file(state_dir)
    if not path.exists():
        return None
    return DemoNetwork.from_json(json.loads(path.read_text()))


async def ensure(state_dir: Path, gateway_url: str, operator: Caller) -> DemoNetwork:
    """Load the demo network once: the first time, load it and keep what was made in
    <state_dir>/demo.json (mode 0600, it holds keys); later, read it back (loading again only when
    the file is missing)."""
    kept = read(state_dir)
    if kept is not None:
        return replace(kept, gateway_url=gateway_url.rstrip("/"))
    network = await load(gateway_url.rstrip("/"), operator)
    save(state_dir, network)
    return network
