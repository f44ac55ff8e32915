"""The sample service through its real gRPC server: health, principals, error mapping, shutdown."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import grpc
import pytest
import sample
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collabnet.kittest.v1 import kittest_pb2
from collabnet.kittest.v1.kittest_pb2_grpc import SampleServiceStub
from collabnet_kit import db as db_module
from collabnet_kit import grpc_errors
from collabnet_kit.bus import Bus, stream_name
from collabnet_kit.client import health_status
from collabnet_kit.db import Database
from collabnet_kit.errors import FieldViolation, InvalidArgument
from collabnet_kit.nats_server import NatsServer
from collabnet_kit.principal import Principal, PrincipalSigner
from collabnet_kit.server import LIVENESS, Service
from collabnet_kit.settings import DEV_SIGNING_KEY, ServiceSettings
from collabnet_kit.testing import eventually, running, service_settings

SERVING, NOT_SERVING = "SERVING", "NOT_SERVING"
signer = PrincipalSigner(DEV_SIGNING_KEY)
OTHER_KEY = "another-signing-key-of-a-proper-length-0123456789"


def bearer(principal: Principal, *, key: str = DEV_SIGNING_KEY, now: float | None = None) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {PrincipalSigner(key).sign(principal, now=now)}"),)


PARTNER = bearer(Principal(partner_id="retailer-r"))


@pytest.fixture
async def channel(service: Service) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(service.address) as ch:
        yield ch


async def health_of(channel: grpc.aio.Channel, name: str = "") -> str:
    return await health_status(channel, name)


async def test_health_reports_serving_for_the_process_and_each_service(channel: grpc.aio.Channel) -> None:
    assert await health_of(channel) == SERVING
    assert await health_of(channel, "collabnet.kittest.v1.SampleService") == SERVING


async def test_health_turns_not_serving_while_nats_is_away_and_back_when_it_returns(
    channel: grpc.aio.Channel, nats_server: NatsServer
) -> None:
    nats_server.kill()

    async def not_serving() -> bool:
        return await health_of(channel) == NOT_SERVING

    async def serving() -> bool:
        return await health_of(channel) == SERVING

    await eventually(not_serving, timeout=10)
    assert await health_of(channel, LIVENESS) == SERVING  # alive, only not ready: no reason to restart it
    nats_server.start()
    await eventually(serving, timeout=20)


async def test_health_is_not_serving_until_the_service_is_ready(
    database_url: str, tmp_path: Path, span_processor: SimpleSpanProcessor
) -> None:
    # NATS is not there yet: the server listens, but says it cannot serve.
    nats = NatsServer(tmp_path / "late-nats")
    settings = service_settings(ServiceSettings, sample.NAME, database_url, nats.url, tmp_path)
    svc = sample.create(settings, span_processor=span_processor, set_global_telemetry=False)
    await svc.start()
    try:
        async with grpc.aio.insecure_channel(svc.address) as ch:
            assert await health_of(ch) == NOT_SERVING
            assert await health_of(ch, LIVENESS) == SERVING
            nats.start()

            async def serving() -> bool:
                return await health_of(ch) == SERVING

            await eventually(serving, timeout=20)
    finally:
        await svc.stop()
        nats.stop()


async def test_the_principal_reaches_the_servicer(channel: grpc.aio.Channel) -> None:
    reply = await SampleServiceStub(channel).Echo(kittest_pb2.EchoRequest(text="hi"), metadata=PARTNER)
    assert reply.text == "hi"
    assert reply.partner_id == "retailer-r"


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "carries no principal token"),
        ((("authorization", "Basic dXNlcjpwYXNz"),), "carries no principal token"),
        (
            bearer(Principal(partner_id="r"), key="another-signing-key-of-a-proper-length-0123456789"),
            "Signature verification failed",
        ),
        (bearer(Principal(partner_id="r"), now=1_000_000), "expired"),
        ((("authorization", "Bearer not.a.jwt"),), "not valid"),
    ],
    ids=["missing", "not-bearer", "wrong-key", "expired", "malformed"],
)
async def test_calls_without_a_valid_principal_are_unauthenticated(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...], reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await SampleServiceStub(channel).Echo(kittest_pb2.EchoRequest(text="hi"), metadata=metadata)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason in (raised.value.details() or "")


async def test_a_tampered_token_is_unauthenticated(channel: grpc.aio.Channel) -> None:
    token = signer.sign(Principal(partner_id="retailer-r"))
    header, _, signature = token.split(".")
    forged_claims = signer.sign(Principal(partner_id="maker-m")).split(".")[1]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await SampleServiceStub(channel).Echo(
            kittest_pb2.EchoRequest(text="hi"),
            metadata=(("authorization", f"Bearer {header}.{forged_claims}.{signature}"),),
        )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ("invalid", grpc.StatusCode.INVALID_ARGUMENT),
        ("not_found", grpc.StatusCode.NOT_FOUND),
        ("exists", grpc.StatusCode.ALREADY_EXISTS),
        ("denied", grpc.StatusCode.PERMISSION_DENIED),
        ("precondition", grpc.StatusCode.FAILED_PRECONDITION),
        ("unauthenticated", grpc.StatusCode.UNAUTHENTICATED),
    ],
)
async def test_each_domain_error_becomes_its_status(
    channel: grpc.aio.Channel, error: str, code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await SampleServiceStub(channel).Fail(kittest_pb2.FailRequest(error=error), metadata=PARTNER)
    assert raised.value.code() == code
    assert raised.value.details() == sample.ERRORS[error].message
    domain_error = grpc_errors.from_rpc_error(raised.value)
    assert type(domain_error) is type(sample.ERRORS[error])


async def test_invalid_argument_carries_its_field_violations(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await SampleServiceStub(channel).Fail(kittest_pb2.FailRequest(error="invalid"), metadata=PARTNER)
    bad_request = error_details_pb2.BadRequest()
    assert any(detail.Unpack(bad_request) for detail in grpc_errors.status_details(raised.value))
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("text", "must not be empty"),
        ("rating", "must be between 1 and 5"),
    ]
    error = grpc_errors.from_rpc_error(raised.value)
    assert isinstance(error, InvalidArgument)
    assert error.violations == [
        FieldViolation("text", "must not be empty"),
        FieldViolation("rating", "must be between 1 and 5"),
    ]


async def test_a_refusal_quoting_long_input_arrives_as_itself_cut_short(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await SampleServiceStub(channel).Fail(kittest_pb2.FailRequest(error="quoting"), metadata=PARTNER)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # not RESOURCE_EXHAUSTED on the trailers' size
    error = grpc_errors.from_rpc_error(raised.value)
    assert isinstance(error, InvalidArgument)
    assert error.message.startswith("sku: \u00e9\u00e9") and error.message.endswith("\u2026")
    assert len(error.message.encode()) <= grpc_errors.MAX_MESSAGE_BYTES
    assert [v.field for v in error.violations] == [f"lines[{i}].sku" for i in range(grpc_errors.MAX_VIOLATIONS)]


async def test_a_string_with_a_nul_character_is_an_invalid_argument_naming_its_field(
    channel: grpc.aio.Channel,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await SampleServiceStub(channel).AddNote(kittest_pb2.AddNoteRequest(text="a\x00b"), metadata=PARTNER)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = grpc_errors.from_rpc_error(raised.value)
    assert isinstance(error, InvalidArgument)
    assert error.violations == [FieldViolation("text", "must not contain NUL characters")]


def test_nul_characters_are_found_at_any_depth_of_a_request() -> None:
    request = struct_pb2.Struct(
        fields={
            "plain": struct_pb2.Value(string_value="fine"),
            "deep": struct_pb2.Value(
                list_value=struct_pb2.ListValue(
                    values=[struct_pb2.Value(string_value="ok"), struct_pb2.Value(string_value="x\x00")]
                )
            ),
            "key\x00": struct_pb2.Value(bool_value=True),
        }
    )
    assert sorted(v.field for v in grpc_errors.nul_violations(request)) == [
        "fields",
        "fields.list_value.values[1].string_value",
    ]
    assert grpc_errors.nul_violations(struct_pb2.Struct(fields={"a": struct_pb2.Value(string_value="b")})) == []


async def test_an_unexpected_error_is_internal_with_the_trace_id_and_no_traceback(
    channel: grpc.aio.Channel, span_exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await SampleServiceStub(channel).Fail(kittest_pb2.FailRequest(error="boom"), metadata=PARTNER)
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    details = raised.value.details() or ""
    assert "hunter2" not in details
    assert "Traceback" not in details and "RuntimeError" not in details
    server_span = next(s for s in span_exporter.get_finished_spans() if s.name.endswith("SampleService/Fail"))
    assert f"trace_id={server_span.context.trace_id:032x}" in details


@asynccontextmanager
async def database_away(db: Database, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """The database refuses work: on SQLite another connection holds the file's lock (and the
    service's connections wait only briefly for it); on PostgreSQL the database accepts no
    connections and the service's are terminated."""
    if db.dialect == "sqlite":
        monkeypatch.setattr(db_module, "SQLITE_BUSY_TIMEOUT_MS", 100)
        await db.engine.dispose()  # connections made from now on wait that long
        other = sqlite3.connect(str(db.url.database), isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
            other.close()
        return
    name = db.url.database
    admin = await asyncpg.connect(
        db.url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    )
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            yield
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    finally:
        await admin.close()


async def test_a_call_while_the_database_is_away_is_unavailable_and_succeeds_once_it_is_back(
    channel: grpc.aio.Channel, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert service.runtime is not None
    stub = SampleServiceStub(channel)
    async with database_away(service.runtime.db, monkeypatch):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.AddNote(kittest_pb2.AddNoteRequest(text="while away"), metadata=PARTNER)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "try again" in (raised.value.details() or "")
    reply = await stub.AddNote(kittest_pb2.AddNoteRequest(text="back"), metadata=PARTNER)
    assert reply.note_id


async def test_a_rejected_call_writes_nothing(channel: grpc.aio.Channel, service: Service) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await SampleServiceStub(channel).AddNote(kittest_pb2.AddNoteRequest(text=""), metadata=PARTNER)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert service.relay is not None
    assert await service.relay.pending() == 0


async def test_server_spans_carry_the_partner_and_health_checks_are_not_traced(
    channel: grpc.aio.Channel, service: Service, span_exporter: InMemorySpanExporter
) -> None:
    await health_of(channel)
    reply = await SampleServiceStub(channel).AddNote(kittest_pb2.AddNoteRequest(text="traced"), metadata=PARTNER)
    assert service.runtime is not None

    async def handled() -> int:
        assert service.runtime is not None
        return await sample.effects(service.runtime.db, reply.note_id)

    await eventually(handled)
    spans = span_exporter.get_finished_spans()
    assert not [s for s in spans if "grpc.health" in s.name]
    rpc = next(s for s in spans if s.name.endswith("SampleService/AddNote"))
    assert rpc.attributes is not None and rpc.attributes["collabnet.partner.id"] == "retailer-r"
    trace_spans = [s for s in spans if s.context.trace_id == rpc.context.trace_id]
    names = {s.name for s in trace_spans}
    assert "collabnet.kittest.v1.NoteAdded publish" in names
    assert "collabnet.kittest.v1.NoteAdded process" in names
    # The partner travels as baggage: it is on the database, publish and consume spans too.
    for span in trace_spans:
        assert span.attributes is not None and span.attributes.get("collabnet.partner.id") == "retailer-r", span.name


async def test_stop_finishes_in_flight_work_and_flushes_the_outbox(
    database_url: str, nats_server: NatsServer, tmp_path: Path, span_processor: SimpleSpanProcessor
) -> None:
    settings = service_settings(
        ServiceSettings, sample.NAME, database_url, nats_server.url, tmp_path, outbox_poll_seconds=60
    )
    svc = sample.create(settings, span_processor=span_processor, set_global_telemetry=False)
    async with running(svc):
        assert svc.relay is not None
        await svc.relay.stop(flush=False)  # nothing publishes until the service stops
        async with grpc.aio.insecure_channel(svc.address) as ch:
            for text in ("one", "two", "three"):
                await SampleServiceStub(ch).AddNote(kittest_pb2.AddNoteRequest(text=text), metadata=PARTNER)
        assert await svc.relay.pending() == 3
    # stop() flushed the outbox on its way out
    bus = Bus(nats_server.url, name="check")
    await bus.connect()
    try:
        info = await bus.js.stream_info(stream_name(sample.NAME))
        assert info.state.messages == 3
    finally:
        await bus.close()
