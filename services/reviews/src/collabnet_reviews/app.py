"""Wiring: the reviews service from its settings."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog
from pydantic import Field

from collabnet.identity.v1 import identity_pb2, identity_pb2_grpc
from collabnet.reviews.v1 import reviews_pb2, reviews_pb2_grpc
from collabnet.supplychain.v1 import events_pb2 as supplychain
from collabnet_kit.server import Api, Runtime, Service, Wiring
from collabnet_kit.settings import ServiceSettings
from collabnet_reviews import domain, store
from collabnet_reviews.affiliations import Affiliations
from collabnet_reviews.api import ReviewsApi
from collabnet_reviews.events import Handlers, Prior

if TYPE_CHECKING:
    from collabnet.identity.v1.identity_pb2_grpc import IdentityServiceAsyncStub

NAME = "reviews"
log = structlog.get_logger(__name__)


class Settings(ServiceSettings):
    grpc_port: int = 50063
    identity_address: str = "127.0.0.1:50061"
    # The smoothed mean adds this many imagined ratings of this value to a product's own.
    rating_prior_mean: float = Field(default=3.0, ge=1.0, le=5.0)
    rating_prior_weight: float = Field(default=5.0, ge=0.0)
    # Relationship types (read from the reviewer's side) that make a reviewer affiliated with a
    # product's maker or seller, and those that do with one of their people.
    affiliation_types: list[str] = Field(default_factory=lambda: list(domain.AFFILIATING_TYPES))
    affiliation_types_via_people: list[str] = Field(default_factory=lambda: list(domain.AFFILIATING_TYPES_VIA_PEOPLE))
    # Words added to the built-in profanity list, lower case.
    profanity: list[str] = Field(default_factory=list)
    # How often reviews whose disclosure identity could not give yet are checked again.
    disclosure_retry_seconds: float = Field(default=5.0, gt=0)
    # How long a submission waits for identity to say whether its author is affiliated (else pending).
    affiliation_timeout_seconds: float = Field(default=3.0, gt=0)


def create(settings: Settings, **options: object) -> Service:
    def wire(runtime: Runtime) -> Wiring:
        channel = runtime.channel(
            settings.identity_address, identity_pb2.DESCRIPTOR.services_by_name["IdentityService"]
        )
        identity: IdentityServiceAsyncStub = identity_pb2_grpc.IdentityServiceStub(channel)
        affiliations = Affiliations(
            identity,
            runtime.service_token,
            types=settings.affiliation_types,
            via_people=settings.affiliation_types_via_people,
            timeout=settings.affiliation_timeout_seconds,
        )
        prior = Prior(settings.rating_prior_mean, settings.rating_prior_weight)
        servicer = ReviewsApi(runtime.db, affiliations, prior=prior, profanity={*domain.PROFANITY, *settings.profanity})
        api = Api(
            reviews_pb2.DESCRIPTOR.services_by_name["ReviewsService"],
            servicer,
            reviews_pb2_grpc.add_ReviewsServiceServicer_to_server,
        )
        handlers = Handlers(prior)
        products_and_orders = runtime.consumer(
            "supplychain",
            {
                supplychain.ProductRegistered: handlers.on_product_registered,
                supplychain.ProductRevised: handlers.on_product_revised,
                supplychain.ProductListed: handlers.on_product_listed,
                supplychain.ProductDelisted: handlers.on_product_delisted,
                supplychain.OrderPlaced: handlers.on_order_placed,
                supplychain.OrderDelivered: handlers.on_order_delivered,
                supplychain.OrderCancelled: handlers.on_order_cancelled,
            },
        )

        async def recheck_disclosures() -> None:
            """Reviews whose affiliations identity could not give (it was away, or an order named a
            new seller) are asked about again; a pending one is published once they are known."""
            while True:
                await asyncio.sleep(settings.disclosure_retry_seconds)
                try:
                    async with runtime.db.read() as session:
                        waiting = await store.unchecked_reviews(session, 50)
                    for row in waiting:
                        if not await servicer.check_disclosure(row.id):
                            break  # identity is still away
                except Exception:
                    log.exception("disclosure_recheck_failed")

        return Wiring(apis=[api], consumers=[products_and_orders], jobs=[recheck_disclosures])

    return Service(settings, wire, histories=[store.HISTORY], publishes=[NAME], **options)  # type: ignore[arg-type]
