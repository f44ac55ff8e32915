"""A partner's view of the gateway: calls with an API key, problems as exceptions, the trace id of
every answer, and a local endpoint that receives webhook deliveries."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

T = TypeVar("T")


class GatewayError(Exception):
    """The gateway answered with a problem (RFC 9457) the caller did not expect."""

    def __init__(self, method: str, path: str, status: int, problem: Any) -> None:
        detail = problem.get("detail", "") if isinstance(problem, dict) else str(problem)
        super().__init__(f"{method} {path}: {status} {detail}".rstrip())
        self.status = status
        self.problem = problem


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    trace_id: str

    def __getitem__(self, name: str) -> Any:
        return self.body[name]


@dataclass(frozen=True)
class Caller:
    """Whose key a request is made with, and the party it acts for (``X-On-Behalf-Of``)."""

    partner_id: str
    key: str
    acting_for: str = ""

    def for_party(self, party_id: str) -> Caller:
        return Caller(self.partner_id, self.key, party_id)

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.key}"}
        if self.acting_for:
            headers["X-On-Behalf-Of"] = self.acting_for
        return headers


def trace_id_of(response: httpx.Response) -> str:
    """The trace id of the gateway's ``traceresponse`` header (``00-<trace id>-<span id>-01``)."""
    parts = response.headers.get("traceresponse", "").split("-")
    return parts[1] if len(parts) == 4 else ""


class Gateway:
    """Calls the gateway at ``base_url``; use as an async context manager."""

    def __init__(self, base_url: str, *, timeout: float = 20.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.http.aclose()

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
        """One request; an answer whose status is not in ``expect`` raises :class:`GatewayError`."""
        response = await self.http.request(method, path, json=body, params=params, headers=caller.headers)
        payload = response.json() if response.content else None
        if response.status_code not in expect:
            raise GatewayError(method, path, response.status_code, payload)
        return Reply(response.status_code, payload, trace_id_of(response))

    async def get(self, caller: Caller, path: str, **params: Any) -> Reply:
        return await self.call(caller, "GET", path, params=params)

    async def post(self, caller: Caller, path: str, body: Any = None) -> Reply:
        return await self.call(caller, "POST", path, {} if body is None else body)


async def join(
    gateway: Gateway,
    operator: Caller,
    name: str,
    kinds: Sequence[str],
    scopes: Sequence[str] = ("reviews:write",),
) -> Caller:
    """A new partner, joined by the network's ``operator`` (scope ``network:admin``), with a first
    key of ``scopes``."""
    joined = await gateway.post(operator, "/v1/partners", {"display_name": name, "kinds": list(kinds)})
    partner_id = joined["partner_id"]
    key = await gateway.post(
        operator, f"/v1/partners/{partner_id}/api-keys", {"name": f"{name} backend", "scopes": list(scopes)}
    )
    return Caller(partner_id, key["secret"])


async def until(check: Callable[[], Awaitable[T | None]], what: str, timeout: float = 30.0) -> T:
    """``check()``'s first result that is not None or False: what a service learns from another's
    events arrives shortly after the request that caused it. Raises TimeoutError naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result is not None and result is not False:
            return result
        if loop.time() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        await asyncio.sleep(0.1)


async def eventually_created(
    gateway: Gateway, caller: Caller, path: str, body: Any, what: str, *, waiting_on: tuple[int, ...] = (404, 422)
) -> Reply:
    """POST ``body`` until it is created: a service answers 404 (or 422) for a product it has not
    heard of yet from supplychain's events."""

    async def attempt() -> Reply | None:
        reply = await gateway.call(caller, "POST", path, body, expect=(200, 201, *waiting_on))
        return reply if reply.status in (200, 201) else None

    return await until(attempt, what)


@dataclass
class Delivery:
    """One POST the endpoint received; header names in lower case."""

    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)
        return event


@dataclass
class WebhookEndpoint:
    """A partner's webhook endpoint on 127.0.0.1 that answers 204 and keeps what it received."""

    deliveries: list[Delivery] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start the endpoint first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hooks"

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [d.event for d in list(self.deliveries) if d.event.get("type") == event_type]

    def __enter__(self) -> Self:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                headers = {name.lower(): value for name, value in self.headers.items()}
                endpoint.deliveries.append(Delivery(headers, self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="webhooks", daemon=True).start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
