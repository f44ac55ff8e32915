"""The gRPC service bootstrap: everything a service runs besides its own servicers and handlers.

A service's ``app.py`` says what it is: its settings, its migration history, the domain it publishes
to, and a ``wire`` function that builds its servicers and consumers from the runtime (database,
bus, telemetry, principal signer). ``Service`` then

- serves gRPC with the standard health service: the overall status ("") and each API's are
  NOT_SERVING until the database and NATS are ready, and again whenever either is lost (readiness);
  ``liveness`` is SERVING as long as the process answers (a lost dependency is no reason to
  restart it); then reflection, server spans and ``rpc.server.call.duration``
  (health and reflection left out), principal verification, requests whose strings hold NUL
  characters refused, access logs, and errors mapped from
  ``DomainError`` (a failure because the database is unavailable is UNAVAILABLE, not INTERNAL);
- exports metrics over OTLP when configured, and as Prometheus text when ``metrics_port`` is set;
- migrates the database at start in development; runs the outbox relay and the consumers;
- on SIGTERM stops accepting, finishes in-flight RPCs and handlers, flushes the outbox and the spans.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.trace import SpanProcessor

from collabnet_kit import client, grpc_errors, telemetry
from collabnet_kit.bus import Bus
from collabnet_kit.consumer import Consumer
from collabnet_kit.db import Database
from collabnet_kit.errors import DomainError, Unauthenticated
from collabnet_kit.migrations import History, upgrade
from collabnet_kit.outbox import Relay
from collabnet_kit.principal import METADATA_KEY, PrincipalSigner, acting_as
from collabnet_kit.settings import ServiceSettings

log = structlog.get_logger(__name__)

LIVENESS = "liveness"
"""The health service name that is SERVING while the process answers, whatever its dependencies do."""

_UNTRACED_PREFIXES = ("/grpc.health.", "/grpc.reflection.")


@dataclass(frozen=True)
class Api:
    """One gRPC service a process serves: its descriptor, its servicer and the generated adder."""

    descriptor: ServiceDescriptor
    servicer: Any
    add_to_server: Callable[[Any, grpc.aio.Server], None]


@dataclass
class Wiring:
    """What a service's ``wire`` function returns: its APIs, its consumers, its periodic jobs."""

    apis: list[Api]
    consumers: list[Consumer] = field(default_factory=list)
    jobs: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)


@dataclass
class Runtime:
    """The adapters a service's servicers and handlers are built with."""

    settings: ServiceSettings
    telemetry: telemetry.Telemetry
    db: Database
    bus: Bus
    signer: PrincipalSigner
    service_token: client.ServiceTokens

    @property
    def name(self) -> str:
        return self.settings.service_name

    def channel(self, target: str, *services: ServiceDescriptor, timeout: float = 5.0) -> grpc.aio.Channel:
        """A channel to another service (see ``collabnet_kit.client``)."""
        return client.channel(
            target, *services, telemetry=self.telemetry, service_token=self.service_token, default_timeout=timeout
        )

    def consumer(self, domain: str, handlers: dict[Any, Any]) -> Consumer:
        """A durable consumer named after this service on ``domain``'s stream."""
        s = self.settings
        return Consumer(
            self.bus,
            self.db,
            name=self.name,
            domain=domain,
            handlers=handlers,
            tracer_provider=self.telemetry.tracer_provider,
            meter=self.telemetry.meter("collabnet_kit.consumer"),
            max_deliveries=s.consumer_max_deliveries,
            backoff_seconds=s.consumer_backoff_seconds,
            ack_wait_seconds=s.consumer_ack_wait_seconds,
        )


def _bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    for key, value in metadata or ():
        if key == METADATA_KEY:
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip()
    raise Unauthenticated("the call carries no principal token (metadata 'authorization: Bearer <token>')")


def _trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


_STATUS_NAMES = {status.value[0]: status.name for status in grpc.StatusCode}


def _status_name(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The name of the status the RPC ends with (``NOT_FOUND``), if one was set or aborted with."""
    code = context.code() if hasattr(context, "code") else None
    if isinstance(code, grpc.StatusCode):
        return code.name
    return _STATUS_NAMES.get(code) if isinstance(code, int) else None


class RpcInterceptor(grpc.aio.ServerInterceptor):
    """Verifies the principal, maps domain errors to statuses and writes one access-log line and
    one ``rpc.server.call.duration`` measurement per RPC. A failure because ``database`` is
    unavailable is UNAVAILABLE (the caller may try again), any other unexpected one INTERNAL."""

    def __init__(
        self, signer: PrincipalSigner, meter: metrics.Meter | None = None, *, database: Database | None = None
    ) -> None:
        self._signer = signer
        self._database = database
        self._duration = (meter or metrics.NoOpMeter("collabnet_kit.server")).create_histogram(
            "rpc.server.call.duration",
            unit="s",
            description="Duration of gRPC calls this server handled, by service, method and status.",
            explicit_bucket_boundaries_advisory=telemetry.SECONDS_BUCKETS,
        )

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(_UNTRACED_PREFIXES):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._unary_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    @contextlib.asynccontextmanager
    async def _rpc(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
        started = time.perf_counter()
        partner = None
        # What the call ends with when the context names no status: OK, unless it did not end well.
        outcome = "OK"
        try:
            token = _bearer(context.invocation_metadata())
            principal = self._signer.verify(token)
            partner = principal.partner_id
            span = trace.get_current_span()
            span.set_attribute("collabnet.principal", principal.subject)
            if principal.party_id:
                span.set_attribute("collabnet.acts_for", principal.party_id)
            # The verified principal, not what the caller put in its baggage, names the partner
            # on every span below this one and on every call and event this RPC causes.
            ctx = telemetry.with_partner(partner) if partner else otel_context.get_current()
            if partner:
                span.set_attribute(telemetry.PARTNER_ID, partner)
            attached = otel_context.attach(ctx)
            try:
                with acting_as(principal, token):
                    yield
            finally:
                otel_context.detach(attached)
        except DomainError as error:
            status = grpc_errors.to_status(error, _trace_id())
            outcome = status.code.name
            await context.abort(*_abort_args(status))
        except grpc.aio.AbortError:
            outcome = "UNKNOWN"
            raise
        except asyncio.CancelledError:
            outcome = "CANCELLED"
            raise
        except Exception as error:
            if self._database is not None and await self._database.refused(error):
                outcome = "UNAVAILABLE"
                log.warning("rpc_database_unavailable", method=method, error=f"{type(error).__name__}: {error}")
                status = grpc_errors.unavailable_status(_trace_id())
            else:
                outcome = "INTERNAL"
                log.exception("rpc_failed", method=method)
                status = grpc_errors.internal_status(_trace_id())
            await context.abort(*_abort_args(status))
        except BaseException:
            outcome = "UNKNOWN"
            raise
        finally:
            elapsed = time.perf_counter() - started
            code = _status_name(context) or outcome
            service, _, name = method.lstrip("/").rpartition("/")
            self._duration.record(
                elapsed,
                {
                    "rpc.system": "grpc",
                    "rpc.service": service,
                    "rpc.method": name,
                    "rpc.response.status_code": code,
                },
            )
            log.info("rpc", method=method, code=code, duration_ms=round(elapsed * 1000, 3), partner=partner)

    def _unary(self, method: str, behavior: Any) -> Any:
        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            async with self._rpc(method, context):
                grpc_errors.refuse_nul(request)
                return await behavior(request, context)

        return unary

    def _unary_stream(self, method: str, behavior: Any) -> Any:
        async def unary_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            async with self._rpc(method, context):
                grpc_errors.refuse_nul(request)
                async for response in behavior(request, context):
                    yield response

        return unary_stream


def _abort_args(status: grpc.Status) -> tuple[grpc.StatusCode, str, Any]:
    return status.code, status.details, status.trailing_metadata


class Service:
    """A collabnet service process: build it from settings and a ``wire`` function, then run it."""

    def __init__(
        self,
        settings: ServiceSettings,
        wire: Callable[[Runtime], Wiring],
        *,
        version: str = "0.1.0",
        histories: Sequence[History] = (),
        publishes: Sequence[str] = (),
        span_processor: SpanProcessor | None = None,
        set_global_telemetry: bool = True,
        serve_grpc: bool = True,
        metric_readers: Sequence[MetricReader] = (),
    ) -> None:
        """``serve_grpc`` off runs everything but the gRPC server: for a process that serves
        another protocol (the gateway) and reports its health through it (see :meth:`healthy`).
        ``metric_readers`` are added to the service's meter provider (tests read metrics in memory)."""
        self.settings = settings
        self.serve_grpc = serve_grpc
        self.name = settings.service_name
        self.version = version
        self.histories = list(histories)
        self.publishes = list(publishes)
        self._wire = wire
        self._span_processor = span_processor
        self._set_global = set_global_telemetry
        self._metric_readers = list(metric_readers)
        self.port: int | None = None
        self.ready = asyncio.Event()
        self._up = False
        self.stopped = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._health = health.aio.HealthServicer()
        self._served: list[str] = []
        self.runtime: Runtime | None = None
        self.wiring: Wiring | None = None
        self.relay: Relay | None = None
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        return f"{self.settings.grpc_host}:{self.port}"

    async def start(self) -> None:
        """Listen at once (reporting NOT_SERVING), then bring the database and NATS up in the background."""
        s = self.settings
        tel = telemetry.setup_telemetry(
            self.name,
            self.version,
            s.state_dir,
            span_processor=self._span_processor,
            set_global=self._set_global,
            metrics_port=s.metrics_port,
            metrics_host=s.metrics_host,
            metric_readers=self._metric_readers,
        )
        if tel.scrape_endpoint is not None:
            log.info("metrics_listening", url=tel.scrape_endpoint.url)
        db = Database(s.database, telemetry=tel)
        bus = Bus(
            s.nats_url,
            name=self.name,
            tracer_provider=tel.tracer_provider,
            user=s.nats_user,
            password=s.nats_password.get_secret_value(),
            duplicate_window_seconds=s.stream_duplicate_window_seconds,
            stream_replicas=s.stream_replicas,
            on_change=self._refresh_health_soon,
        )
        signer = PrincipalSigner(s.principal_signing_key.get_secret_value(), s.principal_ttl_seconds)
        self.runtime = Runtime(s, tel, db, bus, signer, client.ServiceTokens(signer, self.name))
        self.relay = Relay(
            db,
            bus,
            batch_size=s.outbox_batch_size,
            poll_seconds=s.outbox_poll_seconds,
            meter=tel.meter("collabnet_kit.outbox"),
        )
        self.wiring = self._wire(self.runtime)

        self._served = [api.descriptor.full_name for api in self.wiring.apis]
        await self._set_health(False)
        if self.serve_grpc:
            await self._listen(tel, signer)
        self._tasks.append(asyncio.create_task(self._bring_up(), name=f"{self.name}-bring-up"))

    async def _listen(self, tel: telemetry.Telemetry, signer: PrincipalSigner) -> None:
        assert self.wiring is not None and self.runtime is not None
        s = self.settings
        rpc = RpcInterceptor(signer, tel.meter("collabnet_kit.server"), database=self.runtime.db)
        options = [
            ("grpc.max_connection_age_ms", int(s.grpc_max_connection_age_seconds * 1000)),
            ("grpc.max_connection_age_grace_ms", int(s.shutdown_grace_seconds * 1000)),
        ]
        server = grpc.aio.server(interceptors=[tel.grpc_server_interceptor(), rpc], options=options)
        for api in self.wiring.apis:
            api.add_to_server(api.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection([*self._served, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
        self.port = server.add_insecure_port(f"{s.grpc_host}:{s.grpc_port}")
        await server.start()
        self._server = server
        # Liveness is the process answering; readiness ("" and each API) also needs the database and NATS.
        await self._health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        log.info("service_listening", address=self.address, version=self.version)

    async def _bring_up(self) -> None:
        assert self.runtime is not None and self.wiring is not None and self.relay is not None
        runtime = self.runtime
        if self.settings.migrate_at_start:
            while True:
                try:
                    await upgrade(runtime.db, self.histories)
                    break
                except (OSError, ConnectionError) as exc:
                    log.warning("database_unavailable", error=str(exc))
                    await asyncio.sleep(1)
        await runtime.bus.connect()
        for domain in self.publishes:
            await runtime.bus.ensure_stream(domain)
        self.relay.start()
        for consumer in self.wiring.consumers:
            await consumer.start()
        for job in self.wiring.jobs:
            self._tasks.append(asyncio.create_task(job(), name=f"{self.name}-job"))
        self._up = True
        await self._refresh_health()  # SERVING before anyone waiting on ``ready`` looks
        self.ready.set()
        self._tasks.append(asyncio.create_task(self._watch_health(), name=f"{self.name}-health"))
        log.info("service_ready", address=self.address)

    async def healthy(self) -> bool:
        """Ready, and the database and NATS both answer: what the health service reports as SERVING."""
        return await self._healthy()

    async def _healthy(self) -> bool:
        assert self.runtime is not None
        if self.stopped.is_set() or not self._up:
            return False
        return self.runtime.bus.connected and await self.runtime.db.ping()

    async def _set_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self._served):
            await self._health.set(name, status)

    def _refresh_health_soon(self) -> None:
        if self._up and not self.stopped.is_set():
            self._tasks.append(asyncio.create_task(self._refresh_health()))

    async def _refresh_health(self) -> None:
        await self._set_health(await self._healthy())

    async def _watch_health(self) -> None:
        serving: bool | None = None
        while True:
            now = await self._healthy()
            if now != serving:
                await self._set_health(now)
                log.info("health_changed", serving=now)
                serving = now
            await asyncio.sleep(self.settings.health_check_seconds)

    async def stop(self) -> None:
        """Stop gracefully: NOT_SERVING, finish handlers and RPCs, flush the outbox, close, flush spans."""
        if self.stopped.is_set() or self.runtime is None:
            return
        self.stopped.set()
        log.info("service_stopping")
        await self._health.enter_graceful_shutdown()
        assert self.wiring is not None and self.relay is not None
        for consumer in self.wiring.consumers:
            await consumer.stop()
        if self._server is not None:
            await self._server.stop(self.settings.shutdown_grace_seconds)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.relay.stop(flush=True)
        await self.runtime.bus.close()
        await self.runtime.db.dispose()
        self.runtime.telemetry.shutdown()
        log.info("service_stopped")

    async def run(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop gracefully."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        await self.stop()
