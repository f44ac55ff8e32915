"""Tenancy: another partner gets nothing of a partner's private resources, by any door.

Partner B (a retailer that makes what it sells) builds its world through the gateway: a customer C
recorded as customer_of B (with e-mail and phone), C's consent given to B, C's order with B (a
delivery name and address), its shipment, a recall of the lot, C's 2-star review and the case it
opens with B's messages, internal note, action, supplier corrective-action request and co-design
invitation, an initiative with an objective, a measurement and a redesign proposal, a community C
belongs to, a spare API key and a webhook with a delivery. Partner A (another retailer and maker,
with a key that may manage keys) then tries every read and write of the matrix below on them:
through the gateway with A's key, through the gateway acting for C (``X-On-Behalf-Of``, which A has
no relationship to), and straight at each service over gRPC with A's principal. Every answer is a
refusal (403/404, PERMISSION_DENIED/NOT_FOUND) or, for reads that filter rather than refuse, an
answer without B's data; no answer, refused or not, contains any of B's private values; and B's
resources read the same afterwards as before.

The matrix is data, and checked complete: every route of the gateway's OpenAPI document with a
private kind of id in its path must be in it, so a new route cannot skip the check.

Nor may A make B's customer its own: A recording a person B registered as A's customer is refused
(identity lets a partner relate to itself only a person it registered or acts for), so A never
comes to act for them and sees nothing of their dealings with B.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import grpc
import pytest
import pytest_asyncio
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from collabnet_cli import operator
from collabnet_cli.gateway import Caller, Gateway, WebhookEndpoint, eventually_created, join, until
from collabnet_cli.stack import Component, Stack, installed_components
from collabnet_gateway.app import DESCRIPTORS, STUBS
from collabnet_gateway.catalog import ROUTES
from collabnet_gateway.routes import Route
from collabnet_gateway.schemas import fill, to_json
from collabnet_kit.nats_server import free_port
from collabnet_kit.principal import Principal, PrincipalSigner
from collabnet_kit.settings import ServiceSettings
from collabnet_kit.testing import DatabaseFactory, PostgresDatabases, SqliteTemplates, backends

pytestmark = pytest.mark.asyncio(loop_scope="module")

# As the reliability suite's conftest: PostgreSQL when configured, else SQLite.
BACKEND = backends()[-1]

CASE_OPENED = "collabnet.improvement.v1.CaseOpened"
DENIED: tuple[int, ...] = (403, 404)
DENIED_RPC = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND)

# Path parameters that name something private to a partner or a consumer: every route with one is
# in the matrix. Products, listings, reviews, communities, questions, answers and ideas are public
# (their writes by another partner are in the matrix all the same).
PRIVATE_KINDS = frozenset(
    {
        "party_id",
        "partner_id",
        "maker_id",
        "api_key_id",
        "relationship_id",
        "order_id",
        "lot_id",
        "recall_id",
        "shipment_id",
        "leg_id",
        "proposal_id",
        "case_id",
        "action_id",
        "request_id",
        "invitation_id",
        "initiative_id",
        "objective_id",
        "webhook_id",
        "delivery_id",
    }
)
ROUTE_BY_PATH: dict[tuple[str, str], Route] = {(r.method, r.path): r for routes in ROUTES.values() for r in routes}


# --- the world ------------------------------------------------------------------------------------


def in_days(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


NOBODY = Caller("", "")


@dataclass
class World:
    """B's world and A's: the callers, the ids of what B made, and the values only B may know."""

    gateway: Gateway
    operator: Caller
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    b: Caller = NOBODY
    a: Caller = NOBODY
    s: Caller = NOBODY
    a_scopes: tuple[str, ...] = ("reviews:write", "keys:manage")
    ids: dict[str, str] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)

    def keep(self, name: str, value: str) -> str:
        """Remember one of B's private values (an id or a text) under ``name``."""
        assert value, name
        self.ids[name] = value
        self.secrets.add(value)
        return value

    @property
    def c(self) -> Caller:
        """B acting for its customer C."""
        return self.b.for_party(self.ids["C"])

    async def post(self, caller: Caller, path: str, body: Any = None) -> dict[str, Any]:
        reply = await self.gateway.post(caller, path, body)
        result: dict[str, Any] = reply.body
        return result

    async def get(self, caller: Caller, path: str, **params: Any) -> dict[str, Any]:
        reply = await self.gateway.get(caller, path, **params)
        result: dict[str, Any] = reply.body
        return result

    async def join(self, name: str, kinds: list[str], scopes: list[str]) -> Caller:
        return await join(self.gateway, self.operator, f"{name} {self.tag}", kinds, scopes)

    async def build(self, webhooks: WebhookEndpoint) -> None:
        await self._partners(webhooks)
        await self._catalog()
        await self._customer()
        await self._order()
        await self._case()
        await self._initiative()
        await self._community()
        await self._recall()
        await self._delivery()

    async def _partners(self, webhooks: WebhookEndpoint) -> None:
        self.b = await self.join("Brightmart", ["retailer", "manufacturer"], ["reviews:write"])
        self.a = await self.join("Acmeshop", ["retailer", "manufacturer"], list(self.a_scopes))
        self.s = await self.join("Sealworks", ["supplier"], ["reviews:write"])
        self.secrets.add(self.b.key)
        b_keys = await self.get(self.operator, f"/v1/partners/{self.b.partner_id}/api-keys")
        (b_key,) = b_keys["api_keys"]
        self.keep("b_key", b_key["api_key_id"])
        self.keep("b_key_prefix", f"cnk_{b_key['prefix']}")
        spare = await self.post(
            self.operator, f"/v1/partners/{self.b.partner_id}/api-keys", {"name": "spare", "scopes": ["reviews:write"]}
        )
        self.keep("b_spare_key", spare["api_key"]["api_key_id"])
        self.keep("b_spare_secret", spare["secret"])
        self.keep("b_spare_prefix", f"cnk_{spare['api_key']['prefix']}")
        hook = await self.post(self.b, "/v1/webhooks", {"url": webhooks.url, "event_types": [CASE_OPENED]})
        self.keep("webhook", hook["id"])
        self.keep("webhook_secret", hook["secret"])
        self.keep("webhook_url", webhooks.url)

    async def _catalog(self) -> None:
        seal = await self.post(
            self.s,
            "/v1/products",
            {"sku": f"SEAL-{self.tag}", "name": "Seal", "category": "parts", "kind": "component"},
        )
        product = await self.post(
            self.b,
            "/v1/products",
            {"sku": f"KET-{self.tag}", "name": "Brightmart kettle", "category": "kitchen", "kind": "finished_good"},
        )
        self.ids |= {"P": product["product_id"], "sku": product["sku"], "seal": seal["product_id"]}
        item = {"component_id": self.ids["seal"], "supplier_id": self.s.partner_id, "quantity": 1}
        await self.gateway.call(self.b, "PUT", f"/v1/products/{self.ids['P']}/structure", {"items": [item]})
        listing = await self.post(
            self.b,
            "/v1/listings",
            {"product_id": self.ids["P"], "price": {"currency_code": "EUR", "amount_minor": 3999}, "available": True},
        )
        self.ids["listing"] = listing["listing_id"]
        lot = await self.post(
            self.b, "/v1/lots", {"product_id": self.ids["P"], "code": f"LOT-{self.tag}", "quantity": 50}
        )
        self.keep("lot", lot["lot_id"])
        self.keep("lot_code", f"LOT-{self.tag}")

    async def _customer(self) -> None:
        party = await self.post(
            self.b,
            "/v1/parties",
            {
                "kind": "person",
                "display_name": f"Cora {self.tag}",
                "email": self.keep("email", f"cora.{self.tag}@example.org"),
                "phone": self.keep("phone", f"+49 30 {int(self.tag, 16) % 10**8:08d}"),
            },
        )
        self.ids["C"] = party["party_id"]
        relationship = await self.post(
            self.b,
            "/v1/relationships",
            {"from_party_id": self.ids["C"], "to_party_id": self.b.partner_id, "type": "customer_of"},
        )
        self.keep("relationship", relationship["relationship_id"])
        consent = await self.post(
            self.c,
            f"/v1/parties/{self.ids['C']}/consents",
            {
                "partner_id": self.b.partner_id,
                "purpose": "contact:recall",
                "source": self.keep("consent_source", f"checkout form {self.tag}"),
            },
        )
        self.keep("consent", consent["consent_id"])

    async def _order(self) -> None:
        contact = {
            "name": self.keep("contact_name", f"Cora Delivery-{self.tag}"),
            "address": {
                "lines": [self.keep("street", f"Geheimweg {int(self.tag[:4], 16)}")],
                "locality": "Hamburg",
                "postal_code": "20095",
                "region_code": "DE",
            },
        }
        order = await self.post(
            self.c,
            "/v1/orders",
            {
                "customer_id": self.ids["C"],
                "retailer_id": self.b.partner_id,
                "lines": [{"sku": self.ids["sku"], "quantity": 1}],
                "currency_code": "EUR",
                "contact": contact,
            },
        )
        order_id = self.keep("order", order["order_id"])
        await self.post(self.b, f"/v1/orders/{order_id}:confirm")
        await self.post(
            self.b, f"/v1/orders/{order_id}:allocate", {"line_number": 1, "lot_id": self.ids["lot"], "quantity": 1}
        )
        leg = {
            "kind": "retailer_to_consumer",
            "from_party_id": self.b.partner_id,
            "to_party_id": self.ids["C"],
            "carrier_id": self.b.partner_id,
        }
        shipment = await self.post(self.b, "/v1/shipments", {"order_id": order_id, "legs": [leg]})
        self.keep("shipment", shipment["shipment_id"])
        self.keep("leg", shipment["legs"][0]["leg_id"])

    async def _case(self) -> None:
        review = await eventually_created(
            self.gateway,
            self.c,
            "/v1/reviews",
            {
                "product_id": self.ids["P"],
                "author_id": self.ids["C"],
                "rating": 2,
                "title": "Leaks",
                "body": "The lid leaks after a week.",
            },
            "reviews hears of the product",
        )
        self.ids["review"] = review["review_id"]

        async def opened() -> dict[str, Any] | None:
            listed = await self.get(self.b, "/v1/cases", product_id=self.ids["P"])
            return next((c for c in listed["cases"] if c["review_id"] == self.ids["review"]), None)

        case_id = self.keep("case", (await until(opened, "the review opens a case"))["case_id"])
        await self.post(
            self.b, f"/v1/cases/{case_id}:engage", {"message": self.keep("engage", f"Sorry about the lid ({self.tag})")}
        )
        note = await self.post(
            self.b,
            f"/v1/cases/{case_id}/messages",
            {"body": self.keep("note", f"Internal: batch {self.tag} had the thin seal"), "internal": True},
        )
        self.keep("note_entry", note["entry_id"])
        await self.post(
            self.b, f"/v1/cases/{case_id}:startInvestigation", {"note": self.keep("investigation", f"x-{self.tag}")}
        )
        action = await self.post(
            self.b,
            f"/v1/cases/{case_id}/actions",
            {
                "kind": "corrective",
                "description": self.keep("action_text", f"Swap seals of batch {self.tag}"),
                "owner_id": self.b.partner_id,
                "due_time": in_days(30),
            },
        )
        self.keep("action", action["action_id"])

        async def scar() -> dict[str, Any] | None:
            reply = await self.gateway.call(
                self.b,
                "POST",
                "/v1/supplier-corrective-actions",
                {
                    "case_id": case_id,
                    "supplier_id": self.s.partner_id,
                    "problem": self.ids.get("scar_text") or self.keep("scar_text", f"Seal {self.tag} is too thin"),
                    "due_time": in_days(14),
                },
                expect=(201, 400),  # 400 until improvement hears of the bill of materials
            )
            return reply.body if reply.status == 201 else None

        self.keep("scar", (await until(scar, "the case's supplier corrective-action request"))["request_id"])
        invitation = await self.post(
            self.b,
            "/v1/co-design-invitations",
            {"case_id": case_id, "label": "lid v2", "message": self.keep("invite_text", f"Design lid {self.tag}?")},
        )
        self.keep("invitation", invitation["invitation_id"])

    async def _initiative(self) -> None:
        initiative = await self.post(
            self.b,
            "/v1/initiatives",
            {
                "title": self.keep("initiative_title", f"Tight lids {self.tag}"),
                "description": "Redesign the seal",
                "kind": "product_redesign",
                "product_id": self.ids["P"],
                "case_ids": [self.ids["case"]],
            },
        )
        initiative_id = self.keep("initiative", initiative["initiative_id"])
        objective = await self.post(
            self.b,
            f"/v1/initiatives/{initiative_id}/objectives",
            {
                "description": self.keep("objective_text", f"Seal failures of {self.tag} down"),
                "metric": {"kind": "reported", "name": "seal_failures", "unit": "per 1000"},
                "direction": "decrease",
                "baseline": 12.0,
                "target": 3.0,
                "due_time": in_days(90),
            },
        )
        objective_id = self.keep("objective", objective["objective_id"])
        measured = await self.post(
            self.b,
            f"/v1/objectives/{objective_id}/measurements",
            {"value": 9.0, "note": self.keep("measure_note", f"pilot line {self.tag}")},
        )
        self.ids["measured"] = str(measured.get("current"))
        for stage in ("do", "check", "act"):
            await self.post(self.b, f"/v1/initiatives/{initiative_id}:changeStage", {"stage": stage, "decision": stage})
        await self.post(
            self.b,
            f"/v1/initiatives/{initiative_id}:requestRedesign",
            {"changes": self.keep("redesign", f"Thicker seal {self.tag}"), "reason": "leaks"},
        )

        async def proposed() -> dict[str, Any] | None:
            listed = await self.get(self.b, "/v1/revision-proposals", product_id=self.ids["P"])
            return next(iter(listed.get("proposals", [])), None)

        self.keep("proposal", (await until(proposed, "supplychain hears of the redesign request"))["proposal_id"])

    async def _community(self) -> None:
        community = await eventually_created(
            self.gateway,
            self.b,
            "/v1/communities",
            {
                "partner_id": self.b.partner_id,
                "name": f"Brightmart owners {self.tag}",
                "description": "Members only",
                "scope": {"products": {"product_ids": [self.ids["P"]]}},
                "open_to_non_members": False,
            },
            "the community hears of the product",
        )
        self.ids["community"] = community["community_id"]
        await self.post(self.c, f"/v1/communities/{self.ids['community']}:join", {})

    async def _recall(self) -> None:
        recall = await self.post(
            self.b, f"/v1/lots/{self.ids['lot']}:recall", {"reason": self.keep("recall_reason", f"seal {self.tag}")}
        )
        self.keep("recall", recall["recall_id"])

    async def _delivery(self) -> None:
        async def delivered() -> dict[str, Any] | None:
            listed = await self.get(self.b, f"/v1/webhooks/{self.ids['webhook']}/deliveries", state="delivered")
            return next(iter(listed["deliveries"]), None)

        self.keep("delivery", (await until(delivered, "B's webhook receives CaseOpened"))["id"])

    async def a_initiative(self) -> str:
        """An initiative of A's own, to try linking B's case to."""
        made = await self.post(
            self.a,
            "/v1/initiatives",
            {"title": "A's own", "description": "A's", "kind": "process", "product_id": self.ids["P"]},
        )
        return str(made["initiative_id"])


# --- the matrix -----------------------------------------------------------------------------------

Expect = Literal["denied", "clean", "boundary"]


@dataclass(frozen=True)
class Attempt:
    """One read or write A tries on B's resource: the route (as in the OpenAPI document), its path
    parameters, query and body. ``denied``: it must be refused (403 or 404; PERMISSION_DENIED or
    NOT_FOUND). ``clean``: a read that may succeed (a filtered list, a public view) or be refused, but
    holds none of B's private values. (``boundary``: refused by the gateway before any service.)"""

    resource: str
    method: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, Any] = field(default_factory=dict)
    body: Any = None
    expect: Expect = "denied"
    shows: frozenset[str] = frozenset()  # B's values the answer may hold all the same (a public notice's)

    @property
    def url(self) -> str:
        return self.path.format(**self.params)

    @property
    def write(self) -> bool:
        return self.method != "GET"

    @property
    def route(self) -> Route | None:
        """The route of the service RPC behind it; None for the gateway's own resources."""
        return ROUTE_BY_PATH.get((self.method, self.path))

    @property
    def sent(self) -> set[str]:
        """Every string A sent (and the values it may be shown): an answer may repeat these."""
        return set(_strings([dict(self.params), dict(self.query), self.body])) | self.shows

    def __str__(self) -> str:
        return f"{self.method} {self.path} [{self.resource}]"


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def matrix(w: World, a_initiative: str) -> list[Attempt]:
    """Every read and write A tries on B's resources (and on C's, B's customer)."""
    i = w.ids
    b, c, a = w.b.partner_id, i["C"], w.a.partner_id
    order, case, initiative, objective = i["order"], i["case"], i["initiative"], i["objective"]
    return [
        # --- C's contact data, relationships and consent ---
        Attempt("contact", "GET", "/v1/parties/{party_id}", {"party_id": c}, expect="clean"),
        Attempt("contact", "GET", "/v1/parties/{party_id}/network", {"party_id": c}, expect="clean"),
        Attempt("relationships", "GET", "/v1/parties/{party_id}/roles", {"party_id": c}, expect="clean"),
        Attempt("relationships", "GET", "/v1/parties/{party_id}/relationships", {"party_id": c}, expect="clean"),
        Attempt("relationships", "GET", "/v1/parties/{party_id}/neighborhood", {"party_id": c}, expect="clean"),
        Attempt(
            "relationships",
            "GET",
            "/v1/parties/{party_id}/serving-partners",
            {"party_id": c},
            {"capability": "repair"},
            expect="clean",
        ),
        Attempt(
            "relationships",
            "GET",
            "/v1/parties/{party_id}/affiliations",
            {"party_id": c},
            {"partner_id": b},
            expect="clean",
        ),
        Attempt("relationships", "GET", "/v1/paths", query={"from_party_id": c, "to_party_id": b}, expect="clean"),
        Attempt(
            "relationships", "GET", "/v1/partners/{partner_id}/acts-for/{party_id}", {"partner_id": b, "party_id": c}
        ),
        Attempt("relationships", "GET", "/v1/relationships/{relationship_id}", {"relationship_id": i["relationship"]}),
        Attempt(
            "relationships",
            "POST",
            "/v1/relationships/{relationship_id}:end",
            {"relationship_id": i["relationship"]},
            body={"reason": "ended by another partner"},
        ),
        Attempt(
            "relationships",
            "POST",
            "/v1/relationships",
            body={"from_party_id": c, "to_party_id": b, "type": "advocate_of"},
        ),
        Attempt(
            "relationships",
            "POST",
            "/v1/relationships",
            body={"from_party_id": c, "to_party_id": a, "type": "customer_of"},
        ),
        Attempt(
            "relationships",
            "GET",
            "/v1/checks",
            query={"action": "party.read_contact", "resource": f"party/{c}"},
            expect="clean",
        ),
        Attempt("consent", "GET", "/v1/parties/{party_id}/consents", {"party_id": c}, expect="clean"),
        Attempt(
            "consent",
            "GET",
            "/v1/parties/{party_id}/consent-check",
            {"party_id": c},
            {"partner_id": b, "purpose": "contact:recall"},
        ),
        Attempt(
            "consent",
            "POST",
            "/v1/parties/{party_id}/consents",
            {"party_id": c},
            body={"partner_id": b, "purpose": "analytics", "source": "another partner"},
        ),
        Attempt(
            "consent",
            "POST",
            "/v1/parties/{party_id}/consents:revoke",
            {"party_id": c},
            body={"partner_id": b, "purpose": "contact:recall", "source": "another partner"},
        ),
        # --- B as a partner: keys, capabilities, policy, metrics ---
        Attempt("partner", "GET", "/v1/partners/{partner_id}", {"partner_id": b}, expect="clean"),
        Attempt(
            "partner",
            "POST",
            "/v1/partners/{partner_id}/capabilities",
            {"partner_id": b},
            body={"capability": "repair"},
        ),
        Attempt("api keys", "GET", "/v1/partners/{partner_id}/api-keys", {"partner_id": b}),
        Attempt(
            "api keys",
            "POST",
            "/v1/partners/{partner_id}/api-keys",
            {"partner_id": b},
            body={"name": "planted", "scopes": ["reviews:write"]},
        ),
        Attempt("api keys", "POST", "/v1/api-keys/{api_key_id}:revoke", {"api_key_id": i["b_spare_key"]}),
        Attempt("api keys", "POST", "/v1/api-keys/{api_key_id}:revoke", {"api_key_id": i["b_key"]}),
        Attempt("policy", "GET", "/v1/case-policies/{partner_id}", {"partner_id": b}),
        Attempt(
            "policy",
            "PATCH",
            "/v1/case-policies",
            body={"policy": {"partner_id": b, "case_rating_threshold": 1}, "update_mask": "case_rating_threshold"},
        ),
        Attempt("policy", "GET", "/v1/syndication-policies/{partner_id}", {"partner_id": b}, expect="clean"),
        Attempt("policy", "PUT", "/v1/syndication-policies", body={"partner_id": b, "opt_out": True}),
        Attempt("metrics", "GET", "/v1/partners/{partner_id}/metrics", {"partner_id": b}),
        Attempt("questions", "GET", "/v1/partners/{maker_id}/escalated-questions", {"maker_id": b}),
        # --- B's catalog: public, but only B changes it ---
        Attempt(
            "catalog",
            "POST",
            "/v1/products/{product_id}/revisions",
            {"product_id": i["P"]},
            body={"changes": "planted", "reason": "planted"},
        ),
        Attempt("catalog", "PUT", "/v1/products/{product_id}/structure", {"product_id": i["P"]}, body={"items": []}),
        Attempt(
            "catalog",
            "PATCH",
            "/v1/listings/{listing_id}",
            {"listing_id": i["listing"]},
            body={"price": {"currency_code": "EUR", "amount_minor": 1}},
        ),
        Attempt("catalog", "POST", "/v1/listings/{listing_id}:delist", {"listing_id": i["listing"]}),
        Attempt("proposals", "GET", "/v1/revision-proposals", query={"product_id": i["P"]}, expect="clean"),
        Attempt("proposals", "POST", "/v1/revision-proposals/{proposal_id}:confirm", {"proposal_id": i["proposal"]}),
        Attempt(
            "proposals",
            "POST",
            "/v1/revision-proposals/{proposal_id}:decline",
            {"proposal_id": i["proposal"]},
            body={"reason": "planted"},
        ),
        # --- orders, lots, recalls, shipments ---
        Attempt("orders", "GET", "/v1/orders/{order_id}", {"order_id": order}),
        Attempt("orders", "GET", "/v1/orders", query={"customer_id": c}, expect="clean"),
        Attempt("orders", "GET", "/v1/orders", query={"retailer_id": b}, expect="clean"),
        Attempt("orders", "GET", "/v1/orders", query={"product_id": i["P"]}, expect="clean"),
        Attempt("orders", "POST", "/v1/orders/{order_id}:confirm", {"order_id": order}),
        Attempt("orders", "POST", "/v1/orders/{order_id}:cancel", {"order_id": order}, body={"reason": "planted"}),
        Attempt(
            "orders",
            "POST",
            "/v1/orders/{order_id}:allocate",
            {"order_id": order},
            body={"line_number": 1, "lot_id": i["lot"], "quantity": 1},
        ),
        Attempt(
            "orders",
            "POST",
            "/v1/orders",
            body={
                "customer_id": c,
                "retailer_id": b,
                "lines": [{"sku": i["sku"], "quantity": 1}],
                "currency_code": "EUR",
                "contact": {
                    "name": "planted",
                    "address": {"lines": ["planted 1"], "locality": "Berlin", "region_code": "DE"},
                },
            },
        ),
        Attempt("orders", "GET", "/v1/traces/upstream", query={"order_id": order}),
        Attempt("lots", "GET", "/v1/lots/{lot_id}", {"lot_id": i["lot"]}),
        Attempt("lots", "GET", "/v1/lots", query={"producer_id": b}, expect="clean"),
        Attempt("lots", "GET", "/v1/lots", query={"product_id": i["P"]}, expect="clean"),
        Attempt(
            "lots",
            "POST",
            "/v1/lots/{lot_id}:changeStatus",
            {"lot_id": i["lot"]},
            body={"status": "on_hold", "reason": "planted"},
        ),
        Attempt("lots", "POST", "/v1/lots/{lot_id}:recall", {"lot_id": i["lot"]}, body={"reason": "planted"}),
        Attempt("lots", "GET", "/v1/traces/downstream", query={"lot_id": i["lot"]}),
        # A recall notice names the recalled lots, for anyone; the affected orders only for their parties.
        Attempt(
            "recalls",
            "GET",
            "/v1/recalls/{recall_id}",
            {"recall_id": i["recall"]},
            expect="clean",
            shows=frozenset({i["lot"], i["recall_reason"]}),
        ),
        Attempt("shipments", "GET", "/v1/shipments/{shipment_id}", {"shipment_id": i["shipment"]}),
        Attempt("shipments", "GET", "/v1/shipments", query={"order_id": order}, expect="clean"),
        Attempt("shipments", "GET", "/v1/shipments", query={"lot_id": i["lot"]}, expect="clean"),
        Attempt(
            "shipments",
            "POST",
            "/v1/shipment-legs/{leg_id}/events",
            {"leg_id": i["leg"]},
            body={"status": "picked_up"},
        ),
        Attempt(
            "shipments",
            "POST",
            "/v1/shipments",
            body={
                "order_id": order,
                "legs": [{"kind": "retailer_to_consumer", "from_party_id": b, "to_party_id": c, "carrier_id": a}],
            },
        ),
        # --- the case, its notes, actions, supplier requests and co-design ---
        Attempt("cases", "GET", "/v1/cases/{case_id}", {"case_id": case}),
        Attempt("cases", "GET", "/v1/cases/{case_id}/record", {"case_id": case}),
        Attempt("cases", "GET", "/v1/cases/{case_id}/entries", {"case_id": case}),
        Attempt("cases", "GET", "/v1/cases", query={"partner_id": b}),
        Attempt("cases", "GET", "/v1/cases", query={"customer_id": c}, expect="clean"),
        Attempt("cases", "GET", "/v1/cases", query={"product_id": i["P"]}, expect="clean"),
        Attempt("cases", "POST", "/v1/cases/{case_id}:engage", {"case_id": case}, body={"message": "Hello"}),
        Attempt("cases", "POST", "/v1/cases/{case_id}/messages", {"case_id": case}, body={"body": "Hello"}),
        Attempt(
            "notes", "POST", "/v1/cases/{case_id}/messages", {"case_id": case}, body={"body": "x", "internal": True}
        ),
        Attempt("cases", "POST", "/v1/cases/{case_id}:startInvestigation", {"case_id": case}, body={"note": "x"}),
        Attempt(
            "cases",
            "PUT",
            "/v1/cases/{case_id}/root-cause",
            {"case_id": case},
            body={"method": "five_whys", "whys": ["planted"]},
        ),
        Attempt(
            "cases",
            "POST",
            "/v1/cases/{case_id}/actions",
            {"case_id": case},
            body={"kind": "corrective", "description": "planted", "owner_id": a, "due_time": in_days(30)},
        ),
        Attempt(
            "cases",
            "PATCH",
            "/v1/case-actions/{action_id}",
            {"action_id": i["action"]},
            body={"status": "cancelled", "note": "planted"},
        ),
        Attempt("cases", "POST", "/v1/cases/{case_id}:proposeResolution", {"case_id": case}, body={"resolution": "x"}),
        Attempt("cases", "POST", "/v1/cases/{case_id}:resolve", {"case_id": case}, body={"note": "x"}),
        Attempt(
            "cases",
            "POST",
            "/v1/cases/{case_id}/effectiveness-checks",
            {"case_id": case},
            body={"passed": True, "evidence": "planted"},
        ),
        Attempt("cases", "POST", "/v1/cases/{case_id}:close", {"case_id": case}, body={"note": "x"}),
        Attempt("supplier requests", "GET", "/v1/supplier-corrective-actions/{request_id}", {"request_id": i["scar"]}),
        Attempt("supplier requests", "GET", "/v1/supplier-corrective-actions", query={"case_id": case}),
        Attempt(
            "supplier requests",
            "GET",
            "/v1/supplier-corrective-actions",
            query={"supplier_id": w.s.partner_id},
            expect="clean",
        ),
        Attempt(
            "supplier requests",
            "POST",
            "/v1/supplier-corrective-actions",
            body={"case_id": case, "supplier_id": w.s.partner_id, "problem": "planted", "due_time": in_days(14)},
        ),
        Attempt(
            "supplier requests",
            "POST",
            "/v1/supplier-corrective-actions/{request_id}:respond",
            {"request_id": i["scar"]},
            body={"containment": "x", "root_cause": "x", "corrective_action": "x"},
        ),
        Attempt(
            "supplier requests",
            "POST",
            "/v1/supplier-corrective-actions/{request_id}:review",
            {"request_id": i["scar"]},
            body={"accepted": False, "comment": "planted"},
        ),
        Attempt("co-design", "GET", "/v1/co-design-invitations", query={"case_id": case}),
        Attempt("co-design", "GET", "/v1/co-design-invitations", query={"party_id": c}),
        Attempt("co-design", "POST", "/v1/co-design-invitations", body={"case_id": case, "label": "x", "message": "x"}),
        Attempt(
            "co-design",
            "POST",
            "/v1/co-design-invitations/{invitation_id}:respond",
            {"invitation_id": i["invitation"]},
            body={"accept": False},
        ),
        Attempt("notifications", "GET", "/v1/parties/{party_id}/improvement-notifications", {"party_id": c}),
        # --- the initiative, its objective and measurements ---
        Attempt("initiatives", "GET", "/v1/initiatives/{initiative_id}", {"initiative_id": initiative}),
        Attempt("initiatives", "GET", "/v1/initiatives", query={"owner_id": b}, expect="clean"),
        Attempt("initiatives", "GET", "/v1/initiatives", query={"product_id": i["P"]}, expect="clean"),
        Attempt("initiatives", "GET", "/v1/portfolio-summary", query={"owner_id": b}, expect="clean"),
        Attempt(
            "initiatives",
            "PATCH",
            "/v1/initiatives",
            body={"initiative": {"initiative_id": initiative, "title": "planted"}, "update_mask": "title"},
        ),
        Attempt(
            "initiatives",
            "POST",
            "/v1/initiatives/{initiative_id}:changeStage",
            {"initiative_id": initiative},
            body={"stage": "closed", "decision": "planted"},
        ),
        Attempt(
            "initiatives",
            "POST",
            "/v1/initiatives/{initiative_id}:addStakeholder",
            {"initiative_id": initiative},
            body={"stakeholder": {"partner_id": a, "role": "planted"}},
        ),
        Attempt(
            "initiatives",
            "POST",
            "/v1/initiatives/{initiative_id}:removeStakeholder",
            {"initiative_id": initiative},
            body={"stakeholder": {"partner_id": b}},
        ),
        Attempt(
            "initiatives",
            "POST",
            "/v1/initiatives/{initiative_id}:linkCase",
            {"initiative_id": initiative},
            body={"case_id": case},
        ),
        Attempt(
            "initiatives",
            "POST",
            "/v1/initiatives/{initiative_id}:linkIdea",
            {"initiative_id": initiative},
            body={"idea_id": str(uuid.uuid4())},
        ),
        Attempt(
            "initiatives",
            "POST",
            "/v1/initiatives/{initiative_id}:requestRedesign",
            {"initiative_id": initiative},
            body={"changes": "planted", "reason": "planted"},
        ),
        Attempt(
            "initiatives",
            "POST",
            "/v1/initiatives/{initiative_id}/objectives",
            {"initiative_id": initiative},
            body={
                "description": "planted",
                "metric": {"kind": "reported", "name": "planted", "unit": "x"},
                "direction": "decrease",
                "baseline": 1.0,
                "target": 0.5,
                "due_time": in_days(30),
            },
        ),
        Attempt(
            "initiatives",
            "POST",
            "/v1/initiatives/{initiative_id}:linkCase",
            {"initiative_id": a_initiative},
            body={"case_id": case},
        ),
        Attempt(
            "initiatives",
            "POST",
            "/v1/initiatives",
            body={"title": "x", "description": "x", "kind": "process", "product_id": i["P"], "case_ids": [case]},
        ),
        Attempt(
            "objectives",
            "PATCH",
            "/v1/objectives",
            body={"objective": {"objective_id": objective, "target": 1.0}, "update_mask": "target"},
        ),
        Attempt(
            "objectives",
            "POST",
            "/v1/objectives/{objective_id}/measurements",
            {"objective_id": objective},
            body={"value": 1.0},
        ),
        Attempt("objectives", "GET", "/v1/objectives/{objective_id}/measurements", {"objective_id": objective}),
        # --- C's community life ---
        Attempt("community", "GET", "/v1/parties/{party_id}/memberships", {"party_id": c}, expect="clean"),
        Attempt("community", "GET", "/v1/communities/{community_id}/members", {"community_id": i["community"]}),
        Attempt(
            "community",
            "POST",
            "/v1/communities/{community_id}/members/{party_id}:setRole",
            {"community_id": i["community"], "party_id": c},
            body={"role": "moderator"},
        ),
        Attempt(
            "community",
            "POST",
            "/v1/communities/{community_id}:leave",
            {"community_id": i["community"]},
            body={"party_id": c},
        ),
        Attempt("community", "GET", "/v1/parties/{party_id}/question-invitations", {"party_id": c}),
        Attempt("community", "GET", "/v1/parties/{party_id}/reputation", {"party_id": c}, expect="clean"),
        Attempt("community", "GET", "/v1/parties/{party_id}/reputation/entries", {"party_id": c}),
        Attempt("notifications", "GET", "/v1/parties/{party_id}/community-notifications", {"party_id": c}),
        Attempt(
            "notifications",
            "POST",
            "/v1/parties/{party_id}/community-notifications:markRead",
            {"party_id": c},
            body={"notification_ids": []},
        ),
        # --- C's review of B's product: public, but only C revises or withdraws it ---
        Attempt(
            "reviews",
            "POST",
            "/v1/reviews/{review_id}:revise",
            {"review_id": i["review"]},
            body={"rating": 5, "title": "planted", "body": "planted"},
        ),
        Attempt("reviews", "POST", "/v1/reviews/{review_id}:withdraw", {"review_id": i["review"]}),
        Attempt(
            "reviews", "POST", "/v1/reviews/{review_id}:respond", {"review_id": i["review"]}, body={"body": "planted"}
        ),
        Attempt(
            "reviews",
            "POST",
            "/v1/reviews/{review_id}:moderate",
            {"review_id": i["review"]},
            body={"decision": "reject", "reasons": ["spam"], "note": "planted"},
        ),
        # --- B's webhook and its deliveries (the gateway's own) ---
        Attempt("webhooks", "GET", "/v1/webhooks", expect="clean"),
        Attempt("webhooks", "DELETE", "/v1/webhooks/{webhook_id}", {"webhook_id": i["webhook"]}),
        Attempt("webhooks", "GET", "/v1/webhooks/{webhook_id}/deliveries", {"webhook_id": i["webhook"]}),
        Attempt(
            "webhooks",
            "POST",
            "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}:replay",
            {"webhook_id": i["webhook"], "delivery_id": i["delivery"]},
        ),
    ]


# --- calling ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What one attempt got: the door, the outcome (an HTTP status or a gRPC code) and all the text."""

    door: str
    attempt: Attempt
    outcome: str
    text: str


async def via_gateway(gateway: Gateway, caller: Caller, attempt: Attempt, door: str) -> Answer:
    response = await gateway.http.request(
        attempt.method, attempt.url, params=dict(attempt.query) or None, json=attempt.body, headers=caller.headers
    )
    return Answer(door, attempt, str(response.status_code), response.text)


def rpc_request(route: Route, attempt: Attempt) -> Message:
    """The request message the gateway would send for ``attempt``: path and query fields, then the body."""
    method = DESCRIPTORS[route.service].methods_by_name[route.rpc]
    message = GetMessageClass(method.input_type)()
    fill(message, {**attempt.params, **attempt.query})
    if attempt.body is not None:
        if route.body == "*":
            fill(message, attempt.body)
        else:
            assert route.body is not None, attempt
            fill(getattr(message, route.body), attempt.body, f"{route.body}.")
            getattr(message, route.body).SetInParent()
    return message


async def via_grpc(channels: Mapping[str, grpc.aio.Channel], token: str, attempt: Attempt) -> Answer:
    route = attempt.route
    assert route is not None, attempt
    stub = STUBS[route.service](channels[route.service])
    metadata = (("authorization", f"Bearer {token}"),)
    try:
        reply = await getattr(stub, route.rpc)(rpc_request(route, attempt), metadata=metadata, timeout=20)
    except grpc.aio.AioRpcError as error:
        trailers = "".join(f"{k}={v!r}" for k, v in (error.trailing_metadata() or ()))
        return Answer("grpc", attempt, error.code().name, f"{error.details()} {trailers}")
    return Answer("grpc", attempt, grpc.StatusCode.OK.name, json.dumps(to_json(reply)))


def refused(answer: Answer) -> bool:
    if answer.door == "grpc":
        return answer.outcome in {code.name for code in DENIED_RPC}
    return int(answer.outcome) in DENIED


def succeeded(answer: Answer) -> bool:
    return answer.outcome == grpc.StatusCode.OK.name if answer.door == "grpc" else answer.outcome.startswith("2")


def leaks(answer: Answer, secrets: set[str]) -> list[str]:
    """B's private values in the answer that A did not send itself."""
    return sorted(s for s in secrets - answer.attempt.sent if s in answer.text)


def judge(answer: Answer, secrets: set[str], expect: Expect) -> list[str]:
    """What is wrong with an answer: not refused (or not a success, for ``clean`` reads), or leaking."""
    faults = []
    if expect == "boundary" and answer.outcome != "403":
        faults.append(f"{answer.door}: {answer.attempt} passed the gateway's boundary: {answer.outcome}")
    if expect == "denied" and not refused(answer):
        faults.append(f"{answer.door}: {answer.attempt} answered {answer.outcome}: {answer.text[:300]}")
    if expect == "clean" and not (succeeded(answer) or refused(answer)):
        faults.append(
            f"{answer.door}: {answer.attempt} (a filtered read) answered {answer.outcome}: {answer.text[:300]}"
        )
    leaked = leaks(answer, secrets)
    if leaked:
        faults.append(f"{answer.door}: {answer.attempt} ({answer.outcome}) leaks {leaked}: {answer.text[:300]}")
    return faults


IN_FLIGHT = 8


async def concurrently(calls: list[tuple[Awaitable[Answer], Expect]]) -> list[tuple[Answer, Expect]]:
    """The answers to ``calls``, a few in flight at a time (all are refusals, in any order)."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(call: Awaitable[Answer], expect: Expect) -> tuple[Answer, Expect]:
        async with gate:
            return await call, expect

    return list(await asyncio.gather(*(one(call, expect) for call, expect in calls)))


def principal_token(partner_id: str, scopes: tuple[str, ...]) -> str:
    """The principal the gateway signs for a partner's request, with the configured signing key."""
    signer = PrincipalSigner(ServiceSettings().principal_signing_key.get_secret_value())
    return signer.sign(Principal(partner_id=partner_id, scopes=frozenset(scopes)))


# --- B's world as B sees it ---------------------------------------------------------------------------

VOLATILE = frozenset({"last_used_time"})  # an API key's, as B uses it


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


async def snapshot(w: World) -> dict[str, Any]:
    """Everything of B's the matrix could change, read by B (and by B acting for C)."""
    i, b, c = w.ids, w.b, w.c
    reads: dict[str, tuple[Caller, str, dict[str, Any]]] = {
        "party": (b, f"/v1/parties/{i['C']}", {}),
        "relationships": (b, f"/v1/parties/{i['C']}/relationships", {}),
        "consents": (c, f"/v1/parties/{i['C']}/consents", {}),
        "partner": (b, f"/v1/partners/{b.partner_id}", {}),
        "api_keys": (b, f"/v1/partners/{b.partner_id}/api-keys", {}),
        "case_policy": (b, f"/v1/case-policies/{b.partner_id}", {}),
        "syndication": (b, f"/v1/syndication-policies/{b.partner_id}", {}),
        "product": (b, f"/v1/products/{i['P']}", {}),
        "revisions": (b, f"/v1/products/{i['P']}/revisions", {}),
        "structure": (b, f"/v1/products/{i['P']}/structure", {}),
        "listings": (b, "/v1/listings", {"product_id": i["P"], "include_delisted": True}),
        "proposals": (b, "/v1/revision-proposals", {"product_id": i["P"]}),
        "order": (b, f"/v1/orders/{i['order']}", {}),
        "orders": (b, "/v1/orders", {"retailer_id": b.partner_id}),
        "lot": (b, f"/v1/lots/{i['lot']}", {}),
        "recall": (b, f"/v1/recalls/{i['recall']}", {}),
        "shipment": (b, f"/v1/shipments/{i['shipment']}", {}),
        "case": (b, f"/v1/cases/{i['case']}/record", {}),
        "entries": (b, f"/v1/cases/{i['case']}/entries", {}),
        "cases": (b, "/v1/cases", {}),
        "scars": (b, "/v1/supplier-corrective-actions", {"case_id": i["case"]}),
        "co_design": (b, "/v1/co-design-invitations", {"case_id": i["case"]}),
        "notifications": (c, f"/v1/parties/{i['C']}/improvement-notifications", {}),
        "initiative": (b, f"/v1/initiatives/{i['initiative']}", {}),
        "initiatives": (b, "/v1/initiatives", {"owner_id": b.partner_id}),
        "measurements": (b, f"/v1/objectives/{i['objective']}/measurements", {}),
        "members": (b, f"/v1/communities/{i['community']}/members", {}),
        "memberships": (c, f"/v1/parties/{i['C']}/memberships", {}),
        "community_notifications": (c, f"/v1/parties/{i['C']}/community-notifications", {}),
        "review": (b, f"/v1/reviews/{i['review']}", {}),
        "webhooks": (b, "/v1/webhooks", {}),
        "deliveries": (b, f"/v1/webhooks/{i['webhook']}/deliveries", {}),
    }
    replies = await asyncio.gather(*(w.gateway.get(caller, path, **params) for caller, path, params in reads.values()))
    seen = {name: _stable(reply.body) for name, reply in zip(reads, replies, strict=True)}
    # Only the delivery A tries to replay: B's webhook may hear of more while the matrix runs.
    seen["deliveries"] = [d for d in seen["deliveries"]["deliveries"] if d["id"] == i["delivery"]]
    return seen


# --- the stack, once for the module ---------------------------------------------------------------------

# The matrix is a few hundred requests with A's key: the gateway's rate limit is not what is tested here.
UNLIMITED = {"COLLABNET_RATE_LIMIT_PER_SECOND": "10000", "COLLABNET_RATE_LIMIT_BURST": "10000"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    tmp_path_factory: pytest.TempPathFactory,
    _sqlite_templates: SqliteTemplates,
    _postgres_databases: PostgresDatabases | None,
) -> AsyncIterator[Stack]:
    """nats-server, the six services and the gateway, each on a database of the suite's backend,
    shared by this module's tests (B's world is built once)."""
    directory = tmp_path_factory.mktemp("tenancy")
    databases = DatabaseFactory(BACKEND, directory, _sqlite_templates, _postgres_databases)
    components = [
        Component(c.name, c.module, free_port(), c.protocol, {"COLLABNET_DATABASE_URL": databases(), **UNLIMITED})
        for c in installed_components()
    ]
    system = Stack(directory / "state", components, nats_port=free_port(), start_timeout=120)
    try:
        await system.up()
        yield system
    finally:
        await system.down()
        if _postgres_databases is not None:
            _postgres_databases.drop(databases.postgres_databases)


@dataclass
class Built:
    world: World
    a_initiative: str
    webhooks: WebhookEndpoint
    seconds: float


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def built(stack: Stack) -> AsyncIterator[Built]:
    """B's world (and A's key and initiative), made through the gateway."""
    key = await operator.ensure_operator(stack.state_dir, stack.address("identity"))
    with WebhookEndpoint() as webhooks:
        async with Gateway(f"http://{stack.address('gateway')}", timeout=60) as gateway:
            loop = asyncio.get_running_loop()
            started = loop.time()
            world = World(gateway, Caller(key.partner_id, key.secret))
            await world.build(webhooks)
            a_initiative = await world.a_initiative()
            yield Built(world, a_initiative, webhooks, loop.time() - started)


# --- the tests ----------------------------------------------------------------------------------------


async def test_every_route_with_a_private_id_is_in_the_matrix(built: Built) -> None:
    w = built.world
    document = (await w.gateway.http.get("/openapi.json")).json()
    operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    tried = {(a.method, a.path) for a in matrix(w, built.a_initiative)}
    assert tried <= operations, sorted(tried - operations)
    private = {
        (method, path)
        for method, path in operations
        if {p.strip("{}") for p in path.replace(":", "/").split("/") if p.startswith("{")} & PRIVATE_KINDS
    }
    assert private - tried == set(), f"routes with a private id that A never tries: {sorted(private - tried)}"


async def test_another_partner_gets_nothing_of_a_partners_private_resources(
    stack: Stack, built: Built, figures: dict[str, object]
) -> None:
    w = built.world
    attempts = matrix(w, built.a_initiative)
    before = await snapshot(w)
    loop = asyncio.get_running_loop()
    started = loop.time()
    # A with its own key, and claiming to act for C, whom A has no relationship with: the gateway
    # refuses that at its boundary (403) whatever the route. Then straight at the services, with
    # A's principal as the gateway would sign it.
    acting = w.a.for_party(w.ids["C"])
    token = principal_token(w.a.partner_id, w.a_scopes)
    services = {route.service for a in attempts if (route := a.route) is not None}
    channels = {name: grpc.aio.insecure_channel(stack.address(name)) for name in services}
    try:
        answers: list[tuple[Answer, Expect]] = await concurrently(
            [
                *((via_gateway(w.gateway, w.a, a, "gateway"), a.expect) for a in attempts),
                *((via_gateway(w.gateway, acting, a, "gateway acting for C"), "boundary") for a in attempts),
                *((via_grpc(channels, token, a), a.expect) for a in attempts if a.route is not None),
            ]
        )
    finally:
        for channel in channels.values():
            await channel.close()
    seconds = loop.time() - started
    after = await snapshot(w)

    faults = [fault for answer, expect in answers for fault in judge(answer, w.secrets, expect)]
    changed = sorted(name for name in before if before[name] != after[name])

    by_door = Counter(answer.door for answer, _ in answers)
    figures["world built (s)"] = round(built.seconds, 2)
    figures["matrix (s)"] = round(seconds, 2)
    figures["routes and operations in the matrix"] = len(attempts)
    figures["writes among them"] = sum(a.write for a in attempts)
    figures["attempts via gateway (A's key)"] = by_door["gateway"]
    figures["attempts via gateway acting for C"] = by_door["gateway acting for C"]
    figures["attempts via gRPC"] = by_door["grpc"]
    figures["denied"] = sum(refused(answer) for answer, _ in answers)
    figures["filtered reads (success, none of B's data)"] = sum(
        succeeded(answer) and expect == "clean" for answer, expect in answers
    )
    figures["denied 403 / 404 (gateway, A's key)"] = (
        f"{sum(a.outcome == '403' for a, _ in answers if a.door == 'gateway')} / "
        f"{sum(a.outcome == '404' for a, _ in answers if a.door == 'gateway')}"
    )
    # Existence hiding is not one rule: supplychain, the gateway's webhooks and identity's reads say 404,
    # improvement and identity's writes 403 (which tells that the id exists).
    for status in ("404", "403"):
        refusals = Counter(a.attempt.resource for a, _ in answers if a.door == "gateway" and a.outcome == status)
        figures[f"refused {status} (A's key), by resource"] = ", ".join(f"{r} {n}" for r, n in sorted(refusals.items()))
    figures["leaks"] = sum(bool(leaks(answer, w.secrets)) for answer, _ in answers)
    figures["B's private values scanned for"] = len(w.secrets)
    figures["B's resources changed"] = len(changed)
    for resource, count in sorted(Counter(a.resource for a in attempts).items()):
        figures[f"attempts on {resource}"] = count
    assert faults == [], "\n".join(faults)
    assert changed == [], {name: (before[name], after[name]) for name in changed}


async def test_recording_another_partners_customer_as_ones_own_opens_nothing_of_the_other(
    built: Built, figures: dict[str, object]
) -> None:
    """D, a customer of B with an order, a consent and a case, is recorded by A as A's customer
    (nothing asks D or B); A then acts for D. What A sees and may change of D's dealings with B.

    identity refuses the relationship (A neither registered D nor acts for D), so the gateway
    refuses A acting for D at its boundary: every probe is a 403 that shows nothing of B's."""
    w = built.world
    b, tag = w.b, w.tag
    secrets = set(w.secrets)

    def keep(value: str) -> str:
        secrets.add(value)
        return value

    d = (
        await w.post(
            b,
            "/v1/parties",
            {"kind": "person", "display_name": f"Dana {tag}", "email": keep(f"dana.{tag}@example.org")},
        )
    )["party_id"]
    for_d = b.for_party(d)
    relationship = await w.post(
        b, "/v1/relationships", {"from_party_id": d, "to_party_id": b.partner_id, "type": "customer_of"}
    )
    keep(relationship["relationship_id"])
    consent = await w.post(
        for_d,
        f"/v1/parties/{d}/consents",
        {"partner_id": b.partner_id, "purpose": "contact:recall", "source": keep(f"app {tag}")},
    )
    keep(consent["consent_id"])
    contact = {
        "name": keep(f"Dana Delivery-{tag}"),
        "address": {"lines": [keep(f"Stillgasse {tag[:3]}")], "locality": "Wien", "region_code": "AT"},
    }
    order = await w.post(
        for_d,
        "/v1/orders",
        {
            "customer_id": d,
            "retailer_id": b.partner_id,
            "lines": [{"sku": w.ids["sku"], "quantity": 1}],
            "currency_code": "EUR",
            "contact": contact,
        },
    )
    order_id = keep(order["order_id"])
    await w.post(
        for_d,
        "/v1/reviews",
        {
            "product_id": w.ids["P"],
            "author_id": d,
            "rating": 1,
            "title": "Broken",
            "body": "The switch broke on the first day and it never heated again.",
        },
    )

    async def opened() -> dict[str, Any] | None:
        listed = await w.get(b, "/v1/cases", customer_id=d)
        return next(iter(listed["cases"]), None)

    case_id = keep((await until(opened, "D's review opens a case"))["case_id"])
    await w.post(b, f"/v1/cases/{case_id}:engage", {"message": keep(f"Dear Dana, we are on it ({tag})")})

    # A records D as its own customer, with no word from D: refused.
    claim = Attempt(
        "relationships",
        "POST",
        "/v1/relationships",
        body={"from_party_id": d, "to_party_id": w.a.partner_id, "type": "customer_of"},
    )
    claimed = await via_gateway(w.gateway, w.a, claim, "gateway")
    exposed = [] if claimed.outcome == "403" else [f"{claim} by A was not refused: {claimed.outcome} {claimed.text}"]
    if "from_party_id" not in claimed.text:
        exposed.append(f"{claim}: the refusal does not name the field: {claimed.text}")
    if leaked := leaks(claimed, secrets):
        exposed.append(f"{claim}: the refusal shows {len(leaked)} of B's values: {leaked}")
    acting = w.a.for_party(d)
    probes = [
        Attempt("contact", "GET", "/v1/parties/{party_id}", {"party_id": d}),
        Attempt("relationships", "GET", "/v1/parties/{party_id}/relationships", {"party_id": d}),
        Attempt("consent", "GET", "/v1/parties/{party_id}/consents", {"party_id": d}),
        Attempt(
            "consent",
            "GET",
            "/v1/parties/{party_id}/consent-check",
            {"party_id": d},
            {"partner_id": b.partner_id, "purpose": "contact:recall"},
        ),
        Attempt("orders", "GET", "/v1/orders", query={"customer_id": d}),
        Attempt("orders", "GET", "/v1/orders/{order_id}", {"order_id": order_id}),
        Attempt("cases", "GET", "/v1/cases", query={"customer_id": d}),
        Attempt("cases", "GET", "/v1/cases/{case_id}", {"case_id": case_id}),
        Attempt("cases", "GET", "/v1/cases/{case_id}/entries", {"case_id": case_id}),
        Attempt("cases", "POST", "/v1/cases/{case_id}/messages", {"case_id": case_id}, body={"body": "planted"}),
        Attempt("orders", "POST", "/v1/orders/{order_id}:cancel", {"order_id": order_id}, body={"reason": "planted"}),
        Attempt(
            "consent",
            "POST",
            "/v1/parties/{party_id}/consents:revoke",
            {"party_id": d},
            body={"partner_id": b.partner_id, "purpose": "contact:recall", "source": "planted"},
        ),
        Attempt(
            "relationships",
            "POST",
            "/v1/relationships/{relationship_id}:end",
            {"relationship_id": relationship["relationship_id"]},
            body={"reason": "planted"},
        ),
    ]
    for probe in probes:
        answer = await via_gateway(w.gateway, acting, probe, "gateway acting for D")
        if answer.outcome != "403":
            exposed.append(f"{probe} passed the gateway's boundary for A acting for D: {answer.outcome}")
        if probe.write and succeeded(answer):
            exposed.append(f"{probe} changed D's dealings with B ({answer.outcome})")
        elif leaked := leaks(answer, secrets):
            exposed.append(f"{probe} shows {len(leaked)} of B's values: {leaked}")
    figures["A recording B's customer D as its own"] = claimed.outcome
    figures["probes (A acting for D after recording D as its customer)"] = len(probes)
    figures["reads showing B's data"] = sum(" shows " in e for e in exposed)
    figures["writes to B's dealings allowed"] = sum(" changed " in e for e in exposed)
    assert exposed == [], "\n".join(exposed)
