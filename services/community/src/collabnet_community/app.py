"""Wiring: the community service from its settings."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pydantic import Field

from collabnet.community.v1 import community_pb2, community_pb2_grpc
from collabnet_community import store
from collabnet_community.api import CommunityApi
from collabnet_community.events import Handlers
from collabnet_community.jobs import Escalation
from collabnet_kit.server import Api, Runtime, Service, Wiring
from collabnet_kit.settings import ServiceSettings

NAME = "community"


class Settings(ServiceSettings):
    grpc_port: int = 50064
    escalate_after_seconds: float = Field(default=48 * 3600.0, gt=0)
    """How long a question may stay unanswered before it is escalated to the product's maker."""
    escalation_poll_seconds: float = Field(default=60.0, gt=0)
    escalation_batch_size: int = Field(default=100, gt=0)
    invitations_per_question: int = Field(default=25, ge=0)
    """How many owners of the product a new question is offered to, at most."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def create(settings: Settings, clock: Callable[[], datetime] | None = None, **options: object) -> Service:
    """The service. ``clock`` replaces the wall clock for what the service records (tests move it)."""
    now = clock or utc_now

    def wire(runtime: Runtime) -> Wiring:
        api = Api(
            community_pb2.DESCRIPTOR.services_by_name["CommunityService"],
            CommunityApi(runtime.db, now, settings.invitations_per_question),
            community_pb2_grpc.add_CommunityServiceServicer_to_server,
        )
        handlers = Handlers(now)
        consumers = [
            runtime.consumer("supplychain", handlers.for_supplychain()),
            runtime.consumer("reviews", handlers.for_reviews()),
            runtime.consumer("improvement", handlers.for_improvement()),
        ]
        escalation = Escalation(
            runtime.db,
            now,
            timedelta(seconds=settings.escalate_after_seconds),
            settings.escalation_poll_seconds,
            settings.escalation_batch_size,
        )
        return Wiring(apis=[api], consumers=consumers, jobs=[escalation.run])

    return Service(settings, wire, histories=[store.HISTORY], publishes=[NAME], **options)  # type: ignore[arg-type]
