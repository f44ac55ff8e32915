"""Client channels: retries only for idempotent methods, the right principal on every call, a deadline."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol, TypeAlias

import grpc
import jwt
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2_grpc
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collabnet.kittest.v1 import kittest_pb2, kittest_pb2_grpc
from collabnet.kittest.v1.kittest_pb2_grpc import SampleServiceStub
from collabnet_kit import client
from collabnet_kit.client import ServiceTokens, health_status, service_config
from collabnet_kit.nats_server import free_port
from collabnet_kit.principal import Principal, PrincipalSigner, acting_as
from collabnet_kit.server import Service
from collabnet_kit.settings import DEV_SIGNING_KEY
from collabnet_kit.telemetry import Telemetry, setup_telemetry

SAMPLE_SERVICE = kittest_pb2.DESCRIPTOR.services_by_name["SampleService"]
signer = PrincipalSigner(DEV_SIGNING_KEY)
Level: TypeAlias = descriptor_pb2.MethodOptions.IdempotencyLevel.ValueType


def service_with(name: str, methods: dict[str, Level | None]) -> ServiceDescriptor:
    """A service whose methods have the given idempotency levels, built in a private descriptor pool."""
    file = descriptor_pb2.FileDescriptorProto(name=f"collabnet/ct/v1/{name.lower()}.proto", package="collabnet.ct.v1")
    file.message_type.add(name="Request")
    file.message_type.add(name="Response")
    service = file.service.add(name=name)
    for method_name, idempotency in methods.items():
        method = service.method.add(
            name=method_name, input_type=".collabnet.ct.v1.Request", output_type=".collabnet.ct.v1.Response"
        )
        if idempotency is not None:
            method.options.idempotency_level = idempotency
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return pool.FindServiceByName(f"collabnet.ct.v1.{name}")


def ledger_service() -> ServiceDescriptor:
    level = descriptor_pb2.MethodOptions
    return service_with(
        "LedgerService",
        {
            "GetEntry": level.NO_SIDE_EFFECTS,
            "PutEntry": level.IDEMPOTENT,
            "AppendEntry": level.IDEMPOTENCY_UNKNOWN,
            "Transfer": None,
        },
    )


def retried_methods(config: str) -> list[tuple[str, str]]:
    return [
        (name["service"], name["method"])
        for method_config in json.loads(config).get("methodConfig", [])
        for name in method_config["name"]
    ]


def test_only_the_no_side_effects_method_of_the_sample_service_is_retried() -> None:
    assert retried_methods(service_config([SAMPLE_SERVICE])) == [("collabnet.kittest.v1.SampleService", "Echo")]


def test_no_side_effects_and_idempotent_methods_are_retried_and_no_others() -> None:
    assert retried_methods(service_config([ledger_service()])) == [
        ("collabnet.ct.v1.LedgerService", "GetEntry"),
        ("collabnet.ct.v1.LedgerService", "PutEntry"),
    ]


def test_methods_of_several_services_share_one_retry_policy() -> None:
    config = json.loads(service_config([SAMPLE_SERVICE, ledger_service()], max_attempts=3))
    (method_config,) = config["methodConfig"]
    assert {(name["service"], name["method"]) for name in method_config["name"]} == {
        ("collabnet.kittest.v1.SampleService", "Echo"),
        ("collabnet.ct.v1.LedgerService", "GetEntry"),
        ("collabnet.ct.v1.LedgerService", "PutEntry"),
    }
    policy = method_config["retryPolicy"]
    assert policy["maxAttempts"] == 3
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]


def test_a_service_without_idempotent_methods_gets_no_retries_but_still_round_robin() -> None:
    level = descriptor_pb2.MethodOptions
    audit = service_with("AuditService", {"Record": level.IDEMPOTENCY_UNKNOWN, "Erase": None})
    round_robin: dict[str, object] = {"loadBalancingConfig": [{"round_robin": {}}]}
    assert json.loads(service_config([audit])) == round_robin
    assert json.loads(service_config([])) == round_robin


class Clock:
    """Stands in for the time module inside ``collabnet_kit.client``: only ``time()``, set by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def test_service_tokens_reuse_the_token_until_half_its_lifetime_then_sign_a_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ttl = 300
    start = int(time.time()) - 200  # tokens signed at any of the clock's times are still valid now
    clock = Clock(start)
    monkeypatch.setattr(client, "time", SimpleNamespace(time=clock.time))
    tokens = ServiceTokens(PrincipalSigner(DEV_SIGNING_KEY, ttl_seconds=ttl), "reviews")

    first = tokens()
    clock.now = start + ttl / 2 - 1
    assert tokens() == first
    clock.now = start + ttl / 2
    renewed = tokens()
    assert renewed != first
    clock.now = start + ttl - 1
    assert tokens() == renewed

    issued = [jwt.decode(token, options={"verify_signature": False})["iat"] for token in (first, renewed)]
    assert issued == [start, start + ttl // 2]
    for token in (first, renewed):
        assert signer.verify(token) == Principal(service="reviews")


def test_a_service_token_verifies_as_the_service_principal() -> None:
    tokens = ServiceTokens(signer, "reviews")
    token = tokens()
    assert tokens() == token
    principal = signer.verify(token)
    assert principal == Principal(service="reviews")
    assert principal.subject == "service:reviews"


# --- calls through a real server -----------------------------------------------------------------


@pytest.fixture
def caller_telemetry(tmp_path: Path, span_processor: SimpleSpanProcessor) -> Iterator[Telemetry]:
    """The calling service's telemetry; its client spans land in the same in-memory exporter."""
    telemetry = setup_telemetry("caller", "0.1.0", tmp_path, span_processor=span_processor, set_global=False)
    yield telemetry
    telemetry.shutdown()


class ChannelFactory(Protocol):
    def __call__(self, default_timeout: float = ...) -> grpc.aio.Channel: ...


@pytest.fixture
async def open_channel(service: Service, caller_telemetry: Telemetry) -> AsyncIterator[ChannelFactory]:
    """Opens ``client.channel``s to the sample service as the service "caller"; closes them afterwards."""
    opened: list[grpc.aio.Channel] = []

    def open_(default_timeout: float = 5.0) -> grpc.aio.Channel:
        ch = client.channel(
            service.address,
            SAMPLE_SERVICE,
            telemetry=caller_telemetry,
            service_token=ServiceTokens(signer, "caller"),
            default_timeout=default_timeout,
        )
        opened.append(ch)
        return ch

    yield open_
    for ch in opened:
        await ch.close()


def server_span_principal(span_exporter: InMemorySpanExporter, rpc: str) -> str:
    (span,) = [
        s
        for s in span_exporter.get_finished_spans()
        if s.kind.name == "SERVER" and s.name.endswith(f"SampleService/{rpc}")
    ]
    assert span.attributes is not None
    return str(span.attributes["collabnet.principal"])


async def test_without_a_current_principal_a_call_carries_the_callers_own_service_token(
    open_channel: ChannelFactory, span_exporter: InMemorySpanExporter
) -> None:
    reply = await SampleServiceStub(open_channel()).Echo(kittest_pb2.EchoRequest(text="hi"))
    assert reply.text == "hi"
    assert reply.partner_id == ""
    assert server_span_principal(span_exporter, "Echo") == "service:caller"


async def test_inside_acting_as_a_call_forwards_the_token_of_the_rpc_being_served(
    open_channel: ChannelFactory, span_exporter: InMemorySpanExporter
) -> None:
    partner = Principal(partner_id="retailer-r", party_id="consumer-c")
    with acting_as(partner, signer.sign(partner)):
        reply = await SampleServiceStub(open_channel()).Echo(kittest_pb2.EchoRequest(text="hi"))
    assert reply.partner_id == "retailer-r"
    assert server_span_principal(span_exporter, "Echo") == "partner:retailer-r"


async def test_after_acting_as_ends_calls_carry_the_service_token_again(open_channel: ChannelFactory) -> None:
    stub = SampleServiceStub(open_channel())
    partner = Principal(partner_id="retailer-r")
    with acting_as(partner, signer.sign(partner)):
        assert (await stub.Echo(kittest_pb2.EchoRequest(text="inside"))).partner_id == "retailer-r"
    assert (await stub.Echo(kittest_pb2.EchoRequest(text="after"))).partner_id == ""


async def test_an_authorization_header_given_by_the_caller_is_kept(open_channel: ChannelFactory) -> None:
    explicit = signer.sign(Principal(partner_id="maker-m"))
    reply = await SampleServiceStub(open_channel()).Echo(
        kittest_pb2.EchoRequest(text="hi"), metadata=(("authorization", f"Bearer {explicit}"),)
    )
    assert reply.partner_id == "maker-m"


async def test_the_call_continues_the_callers_trace(
    open_channel: ChannelFactory, caller_telemetry: Telemetry, span_exporter: InMemorySpanExporter
) -> None:
    with caller_telemetry.tracer("test").start_as_current_span("handling a request") as outer:
        await SampleServiceStub(open_channel()).Echo(kittest_pb2.EchoRequest(text="hi"))
    spans = [s for s in span_exporter.get_finished_spans() if s.name.endswith("SampleService/Echo")]
    assert {s.kind.name for s in spans} == {"CLIENT", "SERVER"}
    for span in spans:
        assert span.context is not None and span.context.trace_id == outer.get_span_context().trace_id


class SlowEcho(kittest_pb2_grpc.SampleServiceServicer):
    """Echo that never answers; it notes the deadline each call arrived with."""

    def __init__(self) -> None:
        self.time_remaining: list[float | None] = []
        self.release = asyncio.Event()

    async def Echo(
        self, request: kittest_pb2.EchoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> kittest_pb2.EchoResponse:
        self.time_remaining.append(context.time_remaining())
        await self.release.wait()
        return kittest_pb2.EchoResponse(text=request.text)

    async def Fail(self, request: kittest_pb2.FailRequest, context: Any) -> kittest_pb2.FailResponse:
        raise NotImplementedError

    async def AddNote(self, request: kittest_pb2.AddNoteRequest, context: Any) -> kittest_pb2.AddNoteResponse:
        raise NotImplementedError


@pytest.fixture
async def slow_echo() -> AsyncIterator[tuple[str, SlowEcho]]:
    """A bare gRPC server whose Echo hangs until the test ends: (address, servicer)."""
    servicer = SlowEcho()
    server = grpc.aio.server()
    kittest_pb2_grpc.add_SampleServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", servicer
    servicer.release.set()
    await server.stop(None)


async def test_a_call_without_a_timeout_gets_the_channels_default_deadline(
    slow_echo: tuple[str, SlowEcho], caller_telemetry: Telemetry
) -> None:
    address, servicer = slow_echo
    default_timeout = 0.3
    async with client.channel(
        address,
        SAMPLE_SERVICE,
        telemetry=caller_telemetry,
        service_token=ServiceTokens(signer, "caller"),
        default_timeout=default_timeout,
    ) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            # The outer guard only keeps a missing deadline from hanging the run.
            await asyncio.wait_for(SampleServiceStub(ch).Echo(kittest_pb2.EchoRequest(text="hi")), 30)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server saw the default deadline (gRPC rounds deadlines up a little; no deadline would be None).
    (remaining,) = servicer.time_remaining
    assert remaining is not None and remaining < 1


async def test_an_explicit_timeout_replaces_the_default_deadline(
    slow_echo: tuple[str, SlowEcho], caller_telemetry: Telemetry
) -> None:
    address, servicer = slow_echo
    async with client.channel(
        address,
        SAMPLE_SERVICE,
        telemetry=caller_telemetry,
        service_token=ServiceTokens(signer, "caller"),
        default_timeout=3600,
    ) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await asyncio.wait_for(SampleServiceStub(ch).Echo(kittest_pb2.EchoRequest(text="hi"), timeout=0.3), 30)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The server saw the explicit deadline, not the hour-long default.
    (remaining,) = servicer.time_remaining
    assert remaining is not None and remaining < 1


async def test_a_new_channel_reaches_a_callee_restarted_on_the_address_another_channel_saw_fail(
    caller_telemetry: Telemetry,
) -> None:
    async def serve(port: int) -> grpc.aio.Server:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        return server

    def open_channel() -> grpc.aio.Channel:
        return client.channel(
            f"127.0.0.1:{port}", telemetry=caller_telemetry, service_token=ServiceTokens(signer, "caller")
        )

    port = free_port()
    server = await serve(port)
    first = open_channel()
    try:
        assert await health_status(first) == "SERVING"
        await server.stop(None)
        with pytest.raises(grpc.aio.AioRpcError):  # its connection fails, and backs off
            await health_status(first, timeout=0.5)
        server = await serve(port)
        second = open_channel()
        try:
            assert await health_status(second, timeout=2) == "SERVING"
        finally:
            await second.close()
    finally:
        await first.close()
        await server.stop(None)
