"""Wiring: the gateway from its settings: the FastAPI app, the partner boundary in front of it, the
gRPC clients behind it, and the kit's runtime (database, bus, consumers, jobs) beside it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import sqlalchemy as sa
import structlog
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from pydantic import Field, field_validator
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from collabnet.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from collabnet.community.v1 import community_pb2, community_pb2_grpc
from collabnet.identity.v1 import events_pb2 as identity_events
from collabnet.identity.v1 import identity_pb2, identity_pb2_grpc
from collabnet.improvement.v1 import improvement_pb2, improvement_pb2_grpc
from collabnet.reviews.v1 import reviews_pb2, reviews_pb2_grpc
from collabnet.supplychain.v1 import supplychain_pb2, supplychain_pb2_grpc
from collabnet_gateway import catalog, domain, feed, problems, schemas, subscriptions, views, webhooks
from collabnet_gateway.auth import Authenticator
from collabnet_gateway.boundary import Boundary
from collabnet_gateway.problems import Problem
from collabnet_gateway.routes import RouteBuilder
from collabnet_gateway.store import HISTORY, IdempotencyRecord
from collabnet_kit.client import health_status
from collabnet_kit.errors import FieldViolation
from collabnet_kit.principal import current_principal
from collabnet_kit.server import Runtime, Service, Wiring
from collabnet_kit.settings import ServiceSettings

NAME = "gateway"
log = structlog.get_logger(__name__)

# The services the gateway fronts, by name: the descriptor of each one's public service and its stub.
DESCRIPTORS: dict[str, ServiceDescriptor] = {
    "identity": identity_pb2.DESCRIPTOR.services_by_name["IdentityService"],
    "supplychain": supplychain_pb2.DESCRIPTOR.services_by_name["SupplyChainService"],
    "reviews": reviews_pb2.DESCRIPTOR.services_by_name["ReviewsService"],
    "community": community_pb2.DESCRIPTOR.services_by_name["CommunityService"],
    "improvement": improvement_pb2.DESCRIPTOR.services_by_name["ImprovementService"],
    "analytics": analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"],
}
STUBS: dict[str, Any] = {
    "identity": identity_pb2_grpc.IdentityServiceStub,
    "supplychain": supplychain_pb2_grpc.SupplyChainServiceStub,
    "reviews": reviews_pb2_grpc.ReviewsServiceStub,
    "community": community_pb2_grpc.CommunityServiceStub,
    "improvement": improvement_pb2_grpc.ImprovementServiceStub,
    "analytics": analytics_pb2_grpc.AnalyticsServiceStub,
}
CRITICAL = ("identity",)
"""Without these the gateway cannot authenticate anyone, so it is not ready."""


class Settings(ServiceSettings):
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    # How long an idle keep-alive connection is kept: longer than clients' and proxies' own idle
    # timeouts (httpx 5 s, ingress-nginx 60 s), so they close it first and never send a request on a
    # connection the gateway is closing.
    http_keep_alive_seconds: int = Field(default=75, gt=0)
    identity_address: str = "127.0.0.1:50061"
    supplychain_address: str = "127.0.0.1:50062"
    reviews_address: str = "127.0.0.1:50063"
    community_address: str = "127.0.0.1:50064"
    improvement_address: str = "127.0.0.1:50065"
    analytics_address: str = "127.0.0.1:50066"
    # Partners whose incoming traceparent is taken as the parent of their requests' spans.
    trusted_partners: list[str] = Field(default_factory=list)
    rate_limit_per_second: float = Field(default=50.0, gt=0)
    rate_limit_burst: float = Field(default=100.0, ge=1)
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    max_page_size: int = Field(default=100, gt=0)
    auth_cache_seconds: float = Field(default=30.0, ge=0)
    call_timeout_seconds: float = Field(default=5.0, gt=0)
    view_part_timeout_seconds: float = Field(default=1.0, gt=0)
    # How long a complete product page is served as it is to the same caller; 0 turns that off
    # (concurrent requests for the same page still share one fan-out).
    view_cache_seconds: float = Field(default=1.0, ge=0)
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    webhook_poll_seconds: float = Field(default=0.5, gt=0)
    # The first retry's delay; each later one doubles it (up to ten minutes).
    webhook_backoff_seconds: float = Field(default=1.0, gt=0)
    idempotency_retention_hours: int = Field(default=24, gt=0)
    # A key's first request still running after this long was abandoned (its gateway stopped
    # mid-request): a retry with the key takes it over instead of being told to retry later.
    idempotency_abandoned_seconds: float = Field(default=60.0, gt=0)

    @field_validator("trusted_partners", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    def address(self, service: str) -> str:
        return str(getattr(self, f"{service}_address"))


class Gateway:
    """The gateway process: ``await start()``, ``await stop()``, or ``await run()`` until SIGTERM."""

    def __init__(self, settings: Settings, **options: Any) -> None:
        self.settings = settings
        self.service = Service(settings, self._wire, histories=[HISTORY], publishes=[], serve_grpc=False, **options)
        self.stubs: dict[str, Any] = {}
        self.authenticator: Authenticator | None = None
        self.models = schemas.Models()
        self.limiter = domain.RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
        self.app = self._build_app()
        self._server: uvicorn.Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self._ready_cache: tuple[float, list[str]] = (0.0, [])
        self.port: int | None = None

    @property
    def histories(self) -> list[Any]:
        return self.service.histories

    @property
    def runtime(self) -> Runtime:
        assert self.service.runtime is not None
        return self.service.runtime

    # --- wiring --------------------------------------------------------------------------------

    def _wire(self, runtime: Runtime) -> Wiring:
        s = self.settings
        for name, descriptor in DESCRIPTORS.items():
            self.stubs[name] = STUBS[name](runtime.channel(s.address(name), descriptor, timeout=s.call_timeout_seconds))
        self.authenticator = Authenticator(self.stubs["identity"], ttl=s.auth_cache_seconds)
        # Analytics decides who may see each event, and what of it: the webhooks deliver what it shares.
        consumers = [runtime.consumer("analytics", webhooks.HANDLERS)]
        deliverer = webhooks.Deliverer(
            runtime.db,
            max_attempts=s.webhook_max_attempts,
            timeout=s.webhook_timeout_seconds,
            poll_seconds=s.webhook_poll_seconds,
            backoff_seconds=s.webhook_backoff_seconds,
        )
        return Wiring(
            apis=[], consumers=consumers, jobs=[self._watch_revocations, deliverer.run, self._purge_idempotency_records]
        )

    async def _watch_revocations(self) -> None:
        """Every replica hears every revocation (a plain subscription, not a shared durable consumer)."""

        async def revoked(message: Any) -> None:
            event = identity_events.ApiKeyRevoked.FromString(message.data)
            if self.authenticator is not None:
                self.authenticator.revoked(event.api_key_id)
            log.info("api_key_revoked", api_key_id=event.api_key_id, partner_id=event.partner_id)

        subject = identity_events.ApiKeyRevoked.DESCRIPTOR.full_name
        subscription = await self.runtime.bus.nc.subscribe(subject, cb=revoked)
        try:
            await asyncio.Event().wait()
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _purge_idempotency_records(self, every_seconds: float = 600.0) -> None:
        """Forget idempotency records past their retention, every few minutes."""
        while True:
            try:
                await self.purge_idempotency_records(datetime.now(UTC))
            except Exception:
                log.exception("idempotency_purge_failed")
            await asyncio.sleep(every_seconds)

    async def purge_idempotency_records(self, now: datetime) -> None:
        cutoff = now - timedelta(hours=self.settings.idempotency_retention_hours)
        async with self.runtime.db.transaction() as session:
            await session.exec(sa.delete(IdempotencyRecord).where(col(IdempotencyRecord.created_at) < cutoff))

    async def call(self, service: str, rpc: str, message: Message) -> Message:
        stub = self.stubs.get(service)
        if stub is None:
            raise Problem(503, f"the {service} service is not available")
        reply: Message = await getattr(stub, rpc)(message, timeout=self.settings.call_timeout_seconds)
        return reply

    # --- the HTTP app --------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(
            # The boundary makes the request's server span, with the partner's identity and the
            # trust rules for its traceparent; FastAPI's own would start a second trace from the
            # headers alone. The boundary also records http.server.request.duration: FastAPI's
            # would use the global meter provider (not the gateway's, made later, at start), miss
            # the requests the boundary refuses, and add labels of its own. Logs are structlog's.
            telemetry={"tracing": False, "metrics": False, "logs": False},
            title="collabnet partner API",
            version="1.0.0",
            description=(
                "The HTTP/JSON API partners use: parties and relationships, products and orders, reviews, "
                "questions and ideas, cases and initiatives, and the feed of the events a partner may see. "
                "Authenticate with `Authorization: Bearer <API key>`; "
                "act for a consumer with `X-On-Behalf-Of: <party id>`. Errors are RFC 9457 problem documents. "
                "Every response carries a `traceresponse` header with the request's trace id."
            ),
        )
        app.openapi_version = "3.1.0"
        builder = RouteBuilder(DESCRIPTORS, self.call, self._idempotent, self.models, self.settings.max_page_size)
        for service, routes in catalog.ROUTES.items():
            if service in DESCRIPTORS:
                builder.add(app.router, routes)
        app.include_router(subscriptions.router(lambda: self.runtime.db))
        app.include_router(feed.router(self.call))
        cache = views.ViewCache(self.settings.view_cache_seconds, time.monotonic)
        views.add(app, self.stubs, self.models, self.settings.view_part_timeout_seconds, cache)

        @app.get("/healthz", tags=["health"], summary="Liveness: the process answers")
        async def healthz() -> dict[str, str]:
            return {"status": "ok"}

        @app.get("/readyz", tags=["health"], summary="Readiness: the gateway and the services it needs answer")
        async def readyz() -> JSONResponse:
            missing = await self._not_ready()
            if missing:
                return problems.response(Problem(503, f"not ready: {', '.join(missing)}"), "/readyz")
            return JSONResponse({"status": "ready"})

        @app.exception_handler(Problem)
        async def on_problem(request: Request, problem: Problem) -> JSONResponse:
            return problems.response(problem, request.url.path)

        @app.exception_handler(RequestValidationError)
        async def on_invalid(request: Request, error: RequestValidationError) -> JSONResponse:
            # Named as the services name fields: the request's field path, list items as [i].
            route = request.scope.get("route")
            body_field = builder.body_fields.get((request.method, getattr(route, "path", "")))
            violations = [FieldViolation(domain.field_path(e["loc"], body_field), e["msg"]) for e in error.errors()]
            detail = "; ".join(f"{v.field}: {v.description}" for v in violations)
            return problems.response(Problem(400, detail, violations=violations), request.url.path)

        @app.exception_handler(grpc.aio.AioRpcError)
        async def on_rpc(request: Request, error: grpc.aio.AioRpcError) -> JSONResponse:
            return problems.response(Problem.of_rpc(error), request.url.path)

        @app.exception_handler(Exception)
        async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
            log.exception("request_failed", path=request.url.path)
            return problems.response(Problem(500, "internal error"), request.url.path)

        return app

    def asgi(self) -> Any:
        """The app behind the partner boundary."""
        return Boundary(
            self.app,
            router=self.app.router,
            authenticator=lambda: self.authenticator,
            signer=lambda: self.service.runtime.signer if self.service.runtime else None,
            tracer=lambda: self.runtime.telemetry.tracer("collabnet_gateway"),
            limiter=self.limiter,
            trusted_partners=frozenset(self.settings.trusted_partners),
            max_body_bytes=self.settings.max_body_bytes,
            meter=lambda: self.runtime.telemetry.meter("collabnet_gateway") if self.service.runtime else None,
        )

    async def _not_ready(self) -> list[str]:
        now = time.monotonic()
        if now - self._ready_cache[0] < 1.0:
            return self._ready_cache[1]
        missing = [] if await self.service.healthy() else [NAME]
        for name in CRITICAL:
            try:
                async with grpc.aio.insecure_channel(self.settings.address(name)) as channel:
                    if await health_status(channel, timeout=1.0) != "SERVING":
                        missing.append(name)
            except grpc.aio.AioRpcError:
                missing.append(name)
        self._ready_cache = (now, missing)
        return missing

    async def _idempotent(self, request: Request, respond: Callable[[], Awaitable[JSONResponse]]) -> JSONResponse:
        key = request.headers.get("idempotency-key")
        if not key:
            return await respond()
        try:
            domain.validate_idempotency_key(key)
        except Exception as error:
            raise Problem.of_domain(error) from None  # type: ignore[arg-type]
        partner = current_principal().partner_id or ""
        fingerprint = domain.request_fingerprint(request.method, request.url.path, await request.body())
        db = self.runtime.db
        now = datetime.now(UTC)
        abandoned = timedelta(seconds=self.settings.idempotency_abandoned_seconds)
        try:
            async with db.transaction() as session:
                record = await session.get(IdempotencyRecord, (partner, key))
                if record is None:
                    session.add(
                        IdempotencyRecord(
                            partner_id=partner, key=key, fingerprint=fingerprint, state="pending", created_at=now
                        )
                    )
                elif record.state == "pending" and record.fingerprint == fingerprint:
                    # A first request pending for longer than any request runs was abandoned (its gateway
                    # stopped before it finished): this one takes the key over, unless another retry did.
                    claimed = await session.exec(
                        sa.update(IdempotencyRecord)
                        .where(
                            col(IdempotencyRecord.partner_id) == partner,
                            col(IdempotencyRecord.key) == key,
                            col(IdempotencyRecord.state) == "pending",
                            col(IdempotencyRecord.created_at) <= now - abandoned,
                        )
                        .values(created_at=now)
                    )
                    if claimed.rowcount == 1:
                        record = None
        except IntegrityError:
            record = None
            raise Problem(409, "a request with this Idempotency-Key is being processed; retry later") from None
        if record is not None:
            if record.fingerprint != fingerprint:
                raise Problem(422, "this Idempotency-Key was used for a different request")
            if record.state != "done":
                raise Problem(409, "a request with this Idempotency-Key is being processed; retry later")
            return JSONResponse(
                json.loads(record.body), status_code=record.status_code, headers={"Idempotency-Replayed": "true"}
            )
        try:
            response = await respond()
        except Problem as problem:
            if problem.status >= 500:
                await self._forget(partner, key)
            else:
                rendered = problems.response(problem, request.url.path)
                await self._remember(partner, key, rendered)
            raise
        except BaseException:
            await self._forget(partner, key)
            raise
        await self._remember(partner, key, response)
        return response

    async def _remember(self, partner: str, key: str, response: JSONResponse) -> None:
        async with self.runtime.db.transaction() as session:
            record = await session.get(IdempotencyRecord, (partner, key))
            if record is not None:
                record.state = "done"
                record.status_code = response.status_code
                record.body = bytes(response.body).decode()
                session.add(record)

    async def _forget(self, partner: str, key: str) -> None:
        async with self.runtime.db.transaction() as session:
            record = await session.get(IdempotencyRecord, (partner, key))
            if record is not None:
                await session.delete(record)

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.service.start()
        config = uvicorn.Config(
            self.asgi(),
            host=self.settings.http_host,
            port=self.settings.http_port,
            log_config=None,
            access_log=False,
            lifespan="off",
            http="httptools",
            loop="none",
            timeout_keep_alive=self.settings.http_keep_alive_seconds,
        )
        self._server = _Server(config)
        self._serving = asyncio.create_task(self._server.serve(), name="gateway-http")
        while not self._server.started:
            if self._serving.done():
                self._serving.result()
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        log.info("gateway_listening", address=f"{self.settings.http_host}:{self.port}")

    async def stop(self) -> None:
        """Finish in-flight requests, then stop the runtime (flushing the outbox and the spans)."""
        if self._server is not None:
            self._server.should_exit = True
            if self._serving is not None:
                await self._serving
        await self.service.stop()

    async def run(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        await self.stop()


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the gateway decides when and how to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def create(settings: Settings, **options: Any) -> Gateway:
    return Gateway(settings, **options)
