"""The partner boundary with the real services: keys, acting for consumers, limits, problems,
idempotency, tracing, health and the OpenAPI document."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from gateway_testing import SERVICES, TEST_GATEWAY, Stack, bearer, service, unique
from opentelemetry.trace import SpanKind

from collabnet.identity.v1 import identity_pb2 as identity
from collabnet_gateway import domain
from collabnet_gateway.app import Settings, create
from collabnet_gateway.store import IdempotencyRecord
from collabnet_kit import telemetry
from collabnet_kit.testing import eventually, service_settings

pytestmark = pytest.mark.asyncio(loop_scope="module")
PROBLEM = "application/problem+json"


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The RFC 9457 problem document of ``response``, after checking its status and media type."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"] and body["detail"]
    assert "Traceback" not in response.text
    return body


@asynccontextmanager
async def another_gateway(stack: Stack, tmp: Any, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A second gateway in front of the same services, with its own settings."""
    gateway_settings = service_settings(
        Settings,
        "gateway",
        f"sqlite+aiosqlite:///{tmp}/gateway.db",
        stack.gateway.settings.nats_url,
        tmp,
        http_port=0,
        **{f"{name}_address": stack.services[name].address for name in SERVICES},
        **(TEST_GATEWAY | settings),
    )
    gateway = create(gateway_settings, span_processor=None, set_global_telemetry=False)
    await gateway.start()
    try:
        await gateway.service.ready.wait()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.port}", timeout=15) as http:
            yield http
    finally:
        await gateway.stop()


# --- who is calling ---------------------------------------------------------------------------------


async def test_a_request_without_a_key_is_401_with_a_bearer_challenge(shared_stack: Stack) -> None:
    response = await shared_stack.http.get("/v1/partners")
    body = problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in body["detail"]


async def test_an_unknown_key_is_401(shared_stack: Stack) -> None:
    response = await shared_stack.http.get("/v1/partners", headers=bearer("cn_not-a-real-key"))
    problem(response, 401)
    assert "invalid_token" in response.headers["www-authenticate"]


async def test_a_valid_key_reaches_the_service_as_its_partner(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    response = await shared_stack.http.get(f"/v1/partners/{partner.id}", headers=partner.auth)
    assert response.status_code == 200, response.text
    assert response.json()["partner_id"] == partner.id


async def test_a_revoked_key_is_refused_long_before_the_cache_would_forget_it(shared_stack: Stack) -> None:
    # The key is cached for auth_cache_seconds (30 s); ApiKeyRevoked drops it from the cache at once.
    assert shared_stack.gateway.settings.auth_cache_seconds >= 30
    partner = await shared_stack.partner()
    assert (await shared_stack.http.get("/v1/partners", headers=partner.auth)).status_code == 200
    revoked_at = time.monotonic()
    await shared_stack.identity.RevokeApiKey(
        identity.RevokeApiKeyRequest(api_key_id=partner.key_id), metadata=service()
    )

    async def refused() -> bool:
        return (await shared_stack.http.get("/v1/partners", headers=partner.auth)).status_code == 401

    await eventually(refused, timeout=10)
    print(f"revoked key refused {time.monotonic() - revoked_at:.3f} s after RevokeApiKey returned")


# --- acting for consumers --------------------------------------------------------------------------


async def test_a_partner_acts_for_its_customer(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    customer = await shared_stack.person(customer_of=partner.id)
    response = await shared_stack.http.get(f"/v1/parties/{customer}/consents", headers=partner.acting_for(customer))
    assert response.status_code == 200, response.text


async def test_a_partner_acting_for_someone_who_is_not_its_customer_is_403(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    other = await shared_stack.partner()
    stranger = await shared_stack.person(customer_of=other.id)
    response = await shared_stack.http.get(f"/v1/parties/{stranger}/consents", headers=partner.acting_for(stranger))
    body = problem(response, 403)
    assert stranger in body["detail"]


async def test_acting_for_a_party_that_does_not_exist_is_403(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    response = await shared_stack.http.get("/v1/partners", headers=partner.acting_for("nobody"))
    problem(response, 403)


# --- limits ------------------------------------------------------------------------------------------


async def test_a_key_over_its_rate_gets_429_with_retry_after(shared_stack: Stack, tmp_path: Any) -> None:
    partner = await shared_stack.partner()
    async with another_gateway(shared_stack, tmp_path, rate_limit_per_second=0.5, rate_limit_burst=2) as http:
        statuses = [(await http.get("/v1/partners", headers=partner.auth)).status_code for _ in range(3)]
        assert statuses[:2] == [200, 200]
        response = await http.get("/v1/partners", headers=partner.auth)
        problem(response, 429)
        assert int(response.headers["retry-after"]) >= 1
        # Another key has its own bucket.
        other = await shared_stack.partner()
        assert (await http.get("/v1/partners", headers=other.auth)).status_code == 200


async def test_a_body_over_the_limit_is_413_and_changes_nothing(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    limit = shared_stack.gateway.settings.max_body_bytes
    name = unique("Too large")
    body = {"kind": "organization", "display_name": name, "attributes": {"note": "x" * (limit + 1)}}
    problem(await shared_stack.http.post("/v1/parties", json=body, headers=partner.auth), 413)


async def test_a_page_size_over_the_limit_is_400_naming_the_field(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    too_many = shared_stack.gateway.settings.max_page_size + 1
    response = await shared_stack.http.get(f"/v1/partners?page_size={too_many}", headers=partner.auth)
    body = problem(response, 400)
    assert [v["field"] for v in body["errors"]] == ["page_size"]


# --- problems ---------------------------------------------------------------------------------------


async def test_a_missing_resource_is_404(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    body = problem(await shared_stack.http.get("/v1/parties/nope", headers=partner.auth), 404)
    assert "nope" in body["detail"]


async def test_invalid_fields_are_400_naming_each_one(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    response = await shared_stack.http.post(
        "/v1/parties", json={"kind": "robot", "display_nam": "x"}, headers=partner.auth
    )
    body = problem(response, 400)
    assert {v["field"] for v in body["errors"]} == {"kind", "display_nam"}


async def test_a_body_that_is_not_json_is_400(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    response = await shared_stack.http.post(
        "/v1/parties", content=b"{not json", headers=partner.auth | {"content-type": "application/json"}
    )
    problem(response, 400)


async def test_an_action_whose_fields_are_all_optional_needs_no_body(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    # Registered by the partner: a partner relates to itself only persons it registered or acts for.
    registered = await shared_stack.http.post(
        "/v1/parties", json={"kind": "person", "display_name": unique("Customer")}, headers=partner.auth
    )
    assert registered.status_code == 201, registered.text
    customer = registered.json()["party_id"]
    created = await shared_stack.http.post(
        "/v1/relationships",
        json={"from_party_id": customer, "to_party_id": partner.id, "type": "customer_of"},
        headers=partner.auth,
    )
    assert created.status_code == 201, created.text
    ended = await shared_stack.http.post(
        f"/v1/relationships/{created.json()['relationship_id']}:end", headers=partner.auth
    )
    assert ended.status_code == 200, ended.text
    assert ended.json()["valid_to"]


# --- idempotency -----------------------------------------------------------------------------------


async def test_a_retried_create_with_the_same_key_returns_the_first_result(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    body = {"kind": "person", "display_name": unique("Retried")}
    headers = partner.auth | {"Idempotency-Key": "create-1"}
    first = await shared_stack.http.post("/v1/parties", json=body, headers=headers)
    second = await shared_stack.http.post("/v1/parties", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers["idempotency-replayed"] == "true"
    # The same key from another partner is another request.
    other = await shared_stack.partner()
    third = await shared_stack.http.post("/v1/parties", json=body, headers=other.auth | {"Idempotency-Key": "create-1"})
    assert third.json()["party_id"] != first.json()["party_id"]


async def test_the_same_idempotency_key_for_another_request_is_422(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    headers = partner.auth | {"Idempotency-Key": "create-2"}
    await shared_stack.http.post("/v1/parties", json={"kind": "person", "display_name": "A"}, headers=headers)
    response = await shared_stack.http.post(
        "/v1/parties", json={"kind": "person", "display_name": "B"}, headers=headers
    )
    problem(response, 422)


async def test_a_key_is_forgotten_after_its_retention(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    headers = partner.auth | {"Idempotency-Key": "create-4"}
    first = await shared_stack.http.post("/v1/parties", json={"kind": "person", "display_name": "A"}, headers=headers)
    retention = timedelta(hours=shared_stack.gateway.settings.idempotency_retention_hours)
    await shared_stack.gateway.purge_idempotency_records(datetime.now(UTC) + retention - timedelta(minutes=1))
    again = await shared_stack.http.post("/v1/parties", json={"kind": "person", "display_name": "A"}, headers=headers)
    assert again.json() == first.json()
    await shared_stack.gateway.purge_idempotency_records(datetime.now(UTC) + retention + timedelta(minutes=1))
    later = await shared_stack.http.post("/v1/parties", json={"kind": "person", "display_name": "A"}, headers=headers)
    assert later.status_code == 201
    assert later.json()["party_id"] != first.json()["party_id"]


async def test_concurrent_retries_create_once(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    body = {"kind": "person", "display_name": unique("Concurrent")}
    headers = partner.auth | {"Idempotency-Key": "create-3"}
    responses = await asyncio.gather(
        *(shared_stack.http.post("/v1/parties", json=body, headers=headers) for _ in range(5))
    )
    created = {r.json()["party_id"] for r in responses if r.status_code == 201}
    assert len(created) == 1
    assert {r.status_code for r in responses} <= {201, 409}


async def test_a_key_whose_first_request_was_abandoned_is_taken_over_by_a_retry(shared_stack: Stack) -> None:
    """A gateway stopped mid-request leaves its key pending: a retry is told to wait while the
    first request could still be running, and takes the key over once it cannot be."""
    partner = await shared_stack.partner()
    body = {"kind": "person", "display_name": unique("Abandoned")}
    request = shared_stack.http.build_request("POST", "/v1/parties", json=body)
    fingerprint = domain.request_fingerprint("POST", "/v1/parties", request.content)
    lease = timedelta(seconds=shared_stack.gateway.settings.idempotency_abandoned_seconds)
    headers = partner.auth | {"Idempotency-Key": "abandoned-1"}
    async with shared_stack.gateway.runtime.db.transaction() as session:
        session.add(
            IdempotencyRecord(
                partner_id=partner.id,
                key="abandoned-1",
                fingerprint=fingerprint,
                state="pending",
                created_at=datetime.now(UTC) - lease / 2,
            )
        )
    problem(await shared_stack.http.post("/v1/parties", json=body, headers=headers), 409)

    async with shared_stack.gateway.runtime.db.transaction() as session:
        record = await session.get(IdempotencyRecord, (partner.id, "abandoned-1"))
        assert record is not None
        record.created_at = datetime.now(UTC) - lease
        session.add(record)
    taken_over = await shared_stack.http.post("/v1/parties", json=body, headers=headers)
    assert taken_over.status_code == 201, taken_over.text
    replayed = await shared_stack.http.post("/v1/parties", json=body, headers=headers)
    assert replayed.headers["idempotency-replayed"] == "true"
    assert replayed.json() == taken_over.json()


# --- tracing at the boundary ----------------------------------------------------------------------

PARTNER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARTNER_PARENT = f"00-{PARTNER_TRACE}-00f067aa0ba902b7-01"


def server_span(stack: Stack, trace_id: str) -> Any:
    spans = [
        s
        for s in stack.spans.get_finished_spans()
        if s.kind == SpanKind.SERVER and f"{s.context.trace_id:032x}" == trace_id and s.name.startswith("GET /v1")
    ]
    assert len(spans) == 1, spans
    return spans[0]


async def test_an_untrusted_partners_trace_is_linked_not_continued(shared_stack: Stack) -> None:
    partner = await shared_stack.partner()
    response = await shared_stack.http.get(
        f"/v1/partners/{partner.id}", headers=partner.auth | {"traceparent": PARTNER_PARENT}
    )
    assert response.status_code == 200
    trace_id = response.headers["traceresponse"].split("-")[1]
    assert trace_id != PARTNER_TRACE
    span = await eventually(lambda: _found(shared_stack, trace_id))
    assert span.attributes[telemetry.PARTNER_ID] == partner.id
    assert span.attributes["http.route"] == "/v1/partners/{partner_id}"
    assert span.parent is None
    assert [f"{link.context.trace_id:032x}" for link in span.links] == [PARTNER_TRACE]
    # identity served the call in the same trace, as a child of the gateway's span.
    children = await eventually(lambda: _children(shared_stack, trace_id))
    assert any(c.name.endswith("GetPartner") for c in children)
    # The gateway's own call carries the partner too (as baggage, so every later hop does).
    (call,) = [
        s
        for s in shared_stack.spans.get_finished_spans()
        if f"{s.context.trace_id:032x}" == trace_id and s.kind == SpanKind.CLIENT and s.name.endswith("GetPartner")
    ]
    assert call.attributes is not None and call.attributes[telemetry.PARTNER_ID] == partner.id


async def test_a_trusted_partners_trace_is_continued(shared_stack: Stack, tmp_path: Any) -> None:
    partner = await shared_stack.partner()
    async with another_gateway(shared_stack, tmp_path, trusted_partners=[partner.id]) as http:
        response = await http.get(f"/v1/partners/{partner.id}", headers=partner.auth | {"traceparent": PARTNER_PARENT})
    assert response.status_code == 200
    assert response.headers["traceresponse"].split("-")[1] == PARTNER_TRACE


async def test_a_refused_request_still_has_a_span_and_a_trace_id(shared_stack: Stack) -> None:
    response = await shared_stack.http.get("/v1/partners", headers=bearer("cn_wrong"))
    assert response.status_code == 401
    trace_id = response.headers["traceresponse"].split("-")[1]
    span = await eventually(lambda: _found(shared_stack, trace_id))
    assert span.attributes["http.response.status_code"] == 401


async def _found(stack: Stack, trace_id: str) -> Any:
    try:
        return server_span(stack, trace_id)
    except AssertionError:
        return None


async def _children(stack: Stack, trace_id: str) -> Any:
    spans = [
        s
        for s in stack.spans.get_finished_spans()
        if f"{s.context.trace_id:032x}" == trace_id and s.kind == SpanKind.SERVER and s.parent is not None
    ]
    return spans or None


# --- health and documentation --------------------------------------------------------------------


async def test_health_and_readiness(shared_stack: Stack) -> None:
    assert (await shared_stack.http.get("/healthz")).json() == {"status": "ok"}
    assert (await shared_stack.http.get("/readyz")).status_code == 200


async def test_the_openapi_document_describes_every_route(shared_stack: Stack) -> None:
    document = (await shared_stack.http.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    operations = [(path, method, op) for path, item in document["paths"].items() for method, op in item.items()]
    assert len(operations) > 150
    for path, method, operation in operations:
        if path in ("/healthz", "/readyz"):
            continue
        assert operation.get("summary"), (method, path)
        success = [code for code in operation["responses"] if code.startswith("2")]
        assert success, (method, path)
        assert {"400", "401", "404", "429", "503"} <= set(operation["responses"]), (method, path)
    assert (await shared_stack.http.get("/docs")).status_code == 200
