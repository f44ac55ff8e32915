"""Composed views: one response from several services, fetched in parallel, each part with its own
deadline. A non-critical part that fails or runs late is left out and named in ``degraded``; a
critical part that fails fails the view (its own status: 404 for a product that does not exist, 503
when its service is down)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Optional

import grpc
import structlog
from fastapi import FastAPI, Path, Query
from fastapi.responses import JSONResponse
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from pydantic import BaseModel, Field, create_model

from collabnet.community.v1 import community_pb2 as community
from collabnet.identity.v1 import identity_pb2 as identity
from collabnet.improvement.v1 import improvement_pb2 as improvement
from collabnet.reviews.v1 import reviews_pb2 as reviews
from collabnet.supplychain.v1 import supplychain_pb2 as supplychain
from collabnet_gateway import schemas
from collabnet_gateway.problems import Problem
from collabnet_gateway.routes import PROBLEM_RESPONSES
from collabnet_kit.principal import current_principal

log = structlog.get_logger(__name__)

Fetch = Callable[[float], Awaitable[Any]]
"""Given the seconds it may take: a message, a list of messages, or JSON."""


@dataclass(frozen=True)
class Part:
    """One piece of a view: how to fetch it (given the time it may take) and whether the view needs it."""

    fetch: Fetch
    critical: bool = False


def _json(value: Message | list[Message] | dict[str, Any]) -> Any:
    if isinstance(value, Message):
        return schemas.to_json(value)
    if isinstance(value, list):
        return [_json(v) for v in value]
    return value


async def compose(parts: dict[str, Part], deadline: float) -> dict[str, Any]:
    """Fetch every part at once; the result has each part's JSON and ``degraded``: the parts left out."""

    async def one(name: str, part: Part) -> tuple[str, Any, BaseException | None]:
        try:
            return name, _json(await asyncio.wait_for(part.fetch(deadline), deadline)), None
        except (grpc.aio.AioRpcError, TimeoutError, Problem) as error:
            return name, None, error

    results = await asyncio.gather(*(one(name, part) for name, part in parts.items()))
    view: dict[str, Any] = {}
    degraded: list[str] = []
    for name, value, error in results:
        if error is None:
            view[name] = value
            continue
        if parts[name].critical:
            if isinstance(error, Problem):
                raise error
            if isinstance(error, grpc.aio.AioRpcError):
                problem = Problem.of_rpc(error)
                if problem.status >= 500:
                    raise Problem(503, f"the view needs its {name}, which is not available") from None
                raise problem from None
            raise Problem(503, f"the view needs its {name}, which did not come in time") from None
        log.warning("view_part_degraded", part=name, error=_describe(error))
        degraded.append(name)
    view["degraded"] = sorted(degraded)
    return view


def model(name: str, models: schemas.Models, parts: dict[str, Any]) -> type[BaseModel]:
    """The OpenAPI model of a view: each part's message model (or a given type), and ``degraded``."""
    fields: dict[str, Any] = {
        part: (Optional[models.of(kind) if isinstance(kind, Descriptor) else kind], None)  # noqa: UP045
        for part, kind in parts.items()
    }
    fields["degraded"] = (list[str], Field(default_factory=list, description="Parts left out: failed or late."))
    return create_model(name, **fields)


def _describe(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return type(error).__name__


# --- the views -----------------------------------------------------------------------------------

ACTIVE_STAGES = frozenset(
    {
        improvement.INITIATIVE_STAGE_PLAN,
        improvement.INITIATIVE_STAGE_DO,
        improvement.INITIATIVE_STAGE_CHECK,
        improvement.INITIATIVE_STAGE_ACT,
    }
)


class ViewCache:
    """Composed views kept for a moment, per caller: concurrent requests for the same view share
    one fan-out, and for ``seconds`` after it the result is served as it is. A degraded view is
    not kept (the next request tries the missing parts again), nor is a failure.

    What a view shows depends on who asks (initiatives are visible to their stakeholders, reviews
    to a listing partner), so the caller's partner and party are part of the key.
    """

    def __init__(self, seconds: float, clock: Callable[[], float], max_entries: int = 10_000) -> None:
        self.seconds = seconds
        self.clock = clock
        self.max_entries = max_entries
        self._entries: dict[tuple[Any, ...], tuple[float, asyncio.Future[dict[str, Any]]]] = {}

    async def get(self, key: tuple[Any, ...], compute: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        now = self.clock()
        entry = self._entries.get(key)
        if entry is None or (entry[0] <= now and entry[1].done()):
            if len(self._entries) >= self.max_entries:
                self._entries = {k: e for k, e in self._entries.items() if e[0] > now or not e[1].done()}
            # Its own task: a caller that goes away does not take the others' view with it.
            task = asyncio.ensure_future(compute())
            entry = (now + self.seconds, task)
            self._entries[key] = entry
            task.add_done_callback(lambda done: self._settled(key, done))
        return await asyncio.shield(entry[1])

    def _settled(self, key: tuple[Any, ...], done: asyncio.Future[dict[str, Any]]) -> None:
        """Keep a complete view; forget a failed or degraded one at once."""
        entry = self._entries.get(key)
        if entry is None or entry[1] is not done:
            return
        if done.cancelled() or done.exception() is not None or done.result().get("degraded") or self.seconds <= 0:
            del self._entries[key]


def add(app: FastAPI, stubs: dict[str, Any], models: schemas.Models, deadline: float, cache: ViewCache) -> None:
    """The composed views: a product's page, a party's network, a case with what it is about."""

    def caller() -> tuple[str | None, str | None]:
        principal = current_principal()
        return principal.partner_id, principal.party_id

    def stub(name: str) -> Any:
        """The service's stub (made when the gateway starts)."""
        return stubs[name]

    of = models.of

    page_model = model(
        "ProductPage",
        models,
        {
            "product": supplychain.Product.DESCRIPTOR,
            "listings": list[of(supplychain.Listing.DESCRIPTOR)],  # type: ignore[misc]
            "reviews": create_model(
                "ProductPageReviews",
                summary=(of(reviews.RatingSummary.DESCRIPTOR), ...),
                items=(list[of(reviews.Review.DESCRIPTOR)], ...),  # type: ignore[misc,arg-type]
                next_page_token=(str, ""),
            ),
            "questions": list[of(community.Question.DESCRIPTOR)],  # type: ignore[misc]
            "initiatives": list[of(improvement.Initiative.DESCRIPTOR)],  # type: ignore[misc]
        },
    )

    @app.get(
        "/v1/products/{product_id}/page",
        tags=["views"],
        summary="A product's page: the product, its listings, ratings and first reviews, top questions "
        "with answers, and the improvement initiatives under way",
        response_model=page_model,
        responses=PROBLEM_RESPONSES,
    )
    async def product_page(
        product_id: Annotated[str, Path()],
        reviews_page_size: Annotated[int, Query(ge=1, le=50)] = 10,
        questions_page_size: Annotated[int, Query(ge=1, le=20)] = 5,
    ) -> JSONResponse:
        async def product_reviews(t: float) -> dict[str, Any]:
            summary, first = await asyncio.gather(
                stub("reviews").GetRatingSummary(reviews.GetRatingSummaryRequest(product_id=product_id), timeout=t),
                stub("reviews").ListReviews(
                    reviews.ListReviewsRequest(
                        product_id=product_id, sort=reviews.REVIEW_SORT_HELPFUL, page_size=reviews_page_size
                    ),
                    timeout=t,
                ),
            )
            return {
                "summary": schemas.to_json(summary),
                "items": [schemas.to_json(r) for r in first.reviews],
                "next_page_token": first.next_page_token,
            }

        async def top_questions(t: float) -> list[Message]:
            # Each question comes with its best answers (accepted first, then most helpful).
            listed = await stub("community").ListQuestions(
                community.ListQuestionsRequest(
                    product_id=product_id, order=community.QUESTION_ORDER_MOST_HELPFUL, page_size=questions_page_size
                ),
                timeout=t,
            )
            return list(listed.questions)

        async def active_initiatives(t: float) -> list[Message]:
            listed = await stub("improvement").ListInitiatives(
                improvement.ListInitiativesRequest(product_id=product_id, page_size=20), timeout=t
            )
            return [i for i in listed.initiatives if i.stage in ACTIVE_STAGES]

        async def listings(t: float) -> list[Message]:
            listed = await stub("supplychain").ListListings(
                supplychain.ListListingsRequest(product_id=product_id), timeout=t
            )
            return list(listed.listings)

        parts = {
            "product": Part(
                lambda t: stub("supplychain").GetProduct(
                    supplychain.GetProductRequest(product_id=product_id), timeout=t
                ),
                critical=True,
            ),
            "listings": Part(listings),
            "reviews": Part(product_reviews),
            "questions": Part(top_questions),
            "initiatives": Part(active_initiatives),
        }
        key = ("product_page", *caller(), product_id, reviews_page_size, questions_page_size)
        return JSONResponse(await cache.get(key, lambda: compose(parts, deadline)))

    network_model = model(
        "PartyNetwork",
        models,
        {
            "party": identity.Party.DESCRIPTOR,
            "roles": identity.RolesOfResponse.DESCRIPTOR,
            "neighborhood": identity.NeighborhoodResponse.DESCRIPTOR,
        },
    )

    @app.get(
        "/v1/parties/{party_id}/network",
        tags=["views"],
        summary="A party with its roles and its neighborhood, in one response",
        response_model=network_model,
        responses=PROBLEM_RESPONSES,
    )
    async def party_network(
        party_id: Annotated[str, Path()], depth: Annotated[int, Query(ge=1, le=3)] = 1
    ) -> JSONResponse:
        parts = {
            "party": Part(
                lambda t: stub("identity").GetParty(identity.GetPartyRequest(party_id=party_id), timeout=t),
                critical=True,
            ),
            "roles": Part(lambda t: stub("identity").RolesOf(identity.RolesOfRequest(party_id=party_id), timeout=t)),
            "neighborhood": Part(
                lambda t: stub("identity").Neighborhood(
                    identity.NeighborhoodRequest(party_id=party_id, depth=depth), timeout=t
                )
            ),
        }
        return JSONResponse(await compose(parts, deadline))

    case_model = model(
        "CaseView",
        models,
        {
            "case": improvement.Case.DESCRIPTOR,
            "review": reviews.Review.DESCRIPTOR,
            "product": supplychain.Product.DESCRIPTOR,
            "order": supplychain.Order.DESCRIPTOR,
        },
    )

    @app.get(
        "/v1/cases/{case_id}",
        tags=["views"],
        summary="An improvement case with the review, the product and the customer's order it is about",
        response_model=case_model,
        responses=PROBLEM_RESPONSES,
    )
    async def case_view(case_id: Annotated[str, Path()]) -> JSONResponse:
        case_parts = {
            "case": Part(
                lambda t: stub("improvement").GetCase(improvement.GetCaseRequest(case_id=case_id), timeout=t),
                critical=True,
            )
        }
        case = (await compose(case_parts, deadline))["case"]
        review_id, product_id = case.get("review_id", ""), case.get("product_id", "")

        async def order(t: float) -> Message | dict[str, Any]:
            listed = await stub("supplychain").ListOrders(
                supplychain.ListOrdersRequest(
                    customer_id=case.get("customer_id", ""), product_id=product_id, page_size=1
                ),
                timeout=t,
            )
            return listed.orders[0] if listed.orders else {}

        parts = {
            "review": Part(
                lambda t: stub("reviews").GetReview(reviews.GetReviewRequest(review_id=review_id), timeout=t)
            ),
            "product": Part(
                lambda t: stub("supplychain").GetProduct(
                    supplychain.GetProductRequest(product_id=product_id), timeout=t
                )
            ),
            "order": Part(order),
        }
        rest = await compose(parts, deadline)
        if rest.get("order") == {}:
            rest["order"] = None
        return JSONResponse({"case": case, **rest})
