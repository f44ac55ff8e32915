"""Wiring: the improvement service from its settings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from pydantic import Field

from collabnet.community.v1 import events_pb2 as community
from collabnet.improvement.v1 import improvement_pb2, improvement_pb2_grpc
from collabnet.reviews.v1 import events_pb2 as reviews
from collabnet.supplychain.v1 import events_pb2 as supplychain
from collabnet_improvement import events, store
from collabnet_improvement.api import ImprovementApi
from collabnet_kit.db import Database
from collabnet_kit.server import Api, Runtime, Service, Wiring
from collabnet_kit.settings import ServiceSettings

NAME = "improvement"
log = structlog.get_logger(__name__)


class Settings(ServiceSettings):
    grpc_port: int = 50065
    # How often resolved cases past their recovery window are marked not recovered.
    recovery_check_seconds: float = Field(default=300.0, gt=0)


def recovery_job(db: Database, every: float) -> Callable[[], Coroutine[Any, Any, None]]:
    """Every ``every`` seconds, mark the cases whose recovery window ran out as not recovered.

    The kit stops jobs by cancelling them; a batch in progress is shielded and finished first, so a
    cancellation never lands inside a transaction (on SQLite that could leave a pooled connection
    in one)."""

    async def run() -> None:
        while True:
            await asyncio.sleep(every)
            changed = 0
            while True:
                batch = asyncio.ensure_future(events.mark_not_recovered_batch(db))
                try:
                    done = await asyncio.shield(batch)
                except asyncio.CancelledError:
                    with contextlib.suppress(Exception):
                        await batch
                    raise
                except Exception:
                    log.exception("recovery_job_failed")
                    break
                changed += done
                if done < events.RECOVERY_BATCH:
                    break
            if changed:
                log.info("cases_not_recovered", cases=changed)

    return run


def create(settings: Settings, **options: object) -> Service:
    def wire(runtime: Runtime) -> Wiring:
        api = Api(
            improvement_pb2.DESCRIPTOR.services_by_name["ImprovementService"],
            ImprovementApi(runtime.db),
            improvement_pb2_grpc.add_ImprovementServiceServicer_to_server,
        )
        consumers = [
            runtime.consumer(
                "reviews",
                {
                    reviews.ReviewPublished: events.on_review_published,
                    reviews.ReviewRevised: events.on_review_revised,
                    reviews.ReviewWithdrawn: events.on_review_withdrawn,
                },
            ),
            runtime.consumer(
                "supplychain",
                {
                    supplychain.ProductRegistered: events.on_product_registered,
                    supplychain.ProductRevised: events.on_product_revised,
                    supplychain.ProductListed: events.on_product_listed,
                    supplychain.ProductDelisted: events.on_product_delisted,
                    supplychain.SupplyNetworkChanged: events.on_supply_network_changed,
                },
            ),
            runtime.consumer("community", {community.IdeaPromoted: events.on_idea_promoted}),
        ]
        return Wiring(apis=[api], consumers=consumers, jobs=[recovery_job(runtime.db, settings.recovery_check_seconds)])

    return Service(settings, wire, histories=[store.HISTORY], publishes=[NAME], **options)  # type: ignore[arg-type]
