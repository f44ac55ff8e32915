"""The partner boundary, as ASGI middleware: who is calling, may they act for whom they name, are
they within their rate, is the body within bounds, and one server span and one
``http.server.request.duration`` measurement per request (the probes ``/healthz`` and ``/readyz``
are not measured).

A partner's incoming ``traceparent`` becomes the parent of the request's span only when the partner
is configured as trusted; otherwise the span starts a new trace that links to the partner's. The
response's ``traceresponse`` header gives the trace id either way, so a partner can quote it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from starlette.datastructures import Headers
from starlette.routing import Match, Router

from collabnet_gateway import problems
from collabnet_gateway.auth import Authenticator, principal_of
from collabnet_gateway.domain import RateLimiter
from collabnet_gateway.problems import Problem
from collabnet_kit import telemetry
from collabnet_kit.principal import PrincipalSigner, acting_as

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = ("/healthz", "/readyz", "/openapi.json", "/docs", "/redoc")
PROBE_PATHS = ("/healthz", "/readyz")
ON_BEHALF_OF = "x-on-behalf-of"


class BodyTooLarge(Exception):
    pass


class Boundary:
    def __init__(
        self,
        app: ASGIApp,
        *,
        router: Router,
        authenticator: Callable[[], Authenticator | None],
        signer: Callable[[], PrincipalSigner | None],
        tracer: Callable[[], trace.Tracer],
        limiter: RateLimiter,
        trusted_partners: frozenset[str],
        max_body_bytes: int,
        meter: Callable[[], metrics.Meter | None] | None = None,
    ) -> None:
        """``meter`` gives the meter of the request metric once the gateway's telemetry is up."""
        self.app = app
        self.router = router
        self.authenticator = authenticator
        self.signer = signer
        self.tracer = tracer
        self.limiter = limiter
        self.trusted = trusted_partners
        self.max_body = max_body_bytes
        self.meter = meter or (lambda: None)
        self._duration: tuple[metrics.Meter, metrics.Histogram] | None = None

    def _template(self, scope: Scope) -> str | None:
        """The route template a request matches, None when it matches none; the router records it in
        the scope as it routes (so this scans the routes only for requests refused before that)."""
        if "route" in scope:
            path = getattr(scope["route"], "path", None)
            return str(path) if path is not None else None
        partial = None
        for route in self.router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return str(getattr(route, "path", None) or "") or None
            if match is Match.PARTIAL and partial is None:
                partial = getattr(route, "path", None)
        return str(partial) if partial is not None else None

    def _route(self, scope: Scope) -> str:
        return self._template(scope) or scope["path"]

    def _histogram(self) -> metrics.Histogram | None:
        meter = self.meter()
        if meter is None:
            return None
        if self._duration is None or self._duration[0] is not meter:
            histogram = meter.create_histogram(
                "http.server.request.duration",
                unit="s",
                description="Duration of the gateway's HTTP requests, by method, route template and status.",
                explicit_bucket_boundaries_advisory=telemetry.SECONDS_BUCKETS,
            )
            self._duration = (meter, histogram)
        return self._duration[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app fails before responding

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, send_with_status)
        finally:
            histogram = self._histogram()
            if histogram is not None:
                attributes: dict[str, Any] = {
                    "http.request.method": scope["method"],
                    "http.response.status_code": status,
                }
                route = self._template(scope)
                if route is not None:
                    attributes["http.route"] = route
                histogram.record(time.perf_counter() - started, attributes)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] in OPEN_PATHS or scope["path"].startswith("/docs"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        remote = telemetry.extract(dict(headers))
        problem: Problem | None = None
        caller = None
        acting_for = headers.get(ON_BEHALF_OF) or None
        try:
            caller = await self._authenticate(headers)
            if acting_for is not None:
                allowed, reason = await self._require_authenticator().may_act_for(caller.partner_id, acting_for)
                if not allowed:
                    raise Problem(403, f"{caller.partner_id} may not act for {acting_for}: {reason}")
            wait = self.limiter.check(caller.key_id, time.monotonic())
            if wait > 0:
                raise Problem(
                    429, "the API key's request rate is exceeded", headers={"Retry-After": str(max(1, round(wait)))}
                )
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body:
                raise Problem(413, f"the request body is larger than {self.max_body} bytes")
        except Problem as refused:
            problem = refused

        trusted = caller is not None and caller.partner_id in self.trusted
        remote_span = trace.get_current_span(remote).get_span_context()
        parent: Context = remote if trusted else Context()
        links = [] if trusted or not remote_span.is_valid else [Link(remote_span, {"collabnet.link": "partner"})]
        if caller is not None:
            parent = telemetry.with_partner(caller.partner_id, parent)
        attributes: dict[str, Any] = {
            "http.request.method": scope["method"],
            "url.path": scope["path"],
            # Refused requests never reach the router: their route is found here; the others' once routed.
            "http.route": self._route(scope) if problem is not None else scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "user_agent.original": headers.get("user-agent", ""),
        }
        if caller is not None:
            attributes[telemetry.PARTNER_ID] = caller.partner_id
            attributes["collabnet.trusted_parent"] = trusted
        if acting_for is not None:
            attributes["collabnet.acts_for"] = acting_for
        name = f"{scope['method']} {attributes['http.route']}"
        # ``parent`` is made current first, so its baggage (the partner) is current inside too.
        with (
            telemetry.attached(parent),
            self.tracer().start_as_current_span(
                name, context=parent, kind=SpanKind.SERVER, links=links, attributes=attributes
            ) as span,
        ):
            context = span.get_span_context()
            traceresponse = f"00-{context.trace_id:032x}-{context.span_id:016x}-01"
            status = 500

            async def send_with_trace(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    message.setdefault("headers", [])
                    message["headers"] = [*message["headers"], (b"traceresponse", traceresponse.encode())]
                await send(message)

            if problem is not None:
                await problems.response(problem, scope["path"])(scope, receive, send_with_trace)
            else:
                assert caller is not None
                principal = principal_of(caller, acting_for)
                signer = self.signer()
                assert signer is not None
                with acting_as(principal, signer.sign(principal)):
                    try:
                        await self.app(scope, self._bounded(receive), send_with_trace)
                    except BodyTooLarge:
                        too_large = Problem(413, f"the request body is larger than {self.max_body} bytes")
                        await problems.response(too_large, scope["path"])(scope, receive, send_with_trace)
            route = self._route(scope)
            if route != attributes["http.route"]:
                span.set_attribute("http.route", route)
                span.update_name(f"{scope['method']} {route}")
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))

    def _require_authenticator(self) -> Authenticator:
        authenticator = self.authenticator()
        if authenticator is None:
            raise Problem(503, "the gateway is starting; try again shortly")
        return authenticator

    async def _authenticate(self, headers: Headers) -> Any:
        scheme, _, secret = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Problem(
                401, "send the partner API key as 'Authorization: Bearer <key>'", headers={"WWW-Authenticate": "Bearer"}
            )
        try:
            return await self._require_authenticator().authenticate(secret.strip())
        except Problem as refused:
            if refused.status == 401:
                refused.headers.setdefault("WWW-Authenticate", 'Bearer error="invalid_token"')
            raise

    def _bounded(self, receive: Receive) -> Receive:
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge
            return message

        return bounded
