"""The event path end to end against a real nats-server, on SQLite and PostgreSQL:
outbox -> relay -> JetStream -> consumer -> handler + inbox, exactly once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sample
import sqlalchemy as sa
from kit_testing import Stack
from nats.aio.msg import Msg
from nats.js.errors import ServerError
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from collabnet.kittest.v1 import kittest_pb2
from collabnet_kit import bus as bus_module
from collabnet_kit.bus import cloudevent_headers, deadletter_subject, stream_name
from collabnet_kit.nats_server import NatsServer
from collabnet_kit.outbox import Relay, new_event_id, record
from collabnet_kit.tables import inbox, outbox
from collabnet_kit.testing import eventually

NoteAdded = kittest_pb2.NoteAdded
SUBJECT = NoteAdded.DESCRIPTOR.full_name


async def add_note(stack: Stack, text: str) -> str:
    note_id = new_event_id()
    async with stack.db.transaction() as session:
        session.add(sample.Note(id=note_id, text=text))
        await record(session, NoteAdded(note_id=note_id, text=text), source=sample.NAME)
    return note_id


async def effects(stack: Stack, note_id: str) -> int:
    return await sample.effects(stack.db, note_id)


async def unsent(stack: Stack) -> int:
    async with stack.db.read() as session:
        count = await session.scalar(sa.select(sa.func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None)))
    return int(count or 0)


async def stream_messages(stack: Stack, domain: str = sample.NAME) -> int:
    info = await stack.bus.js.stream_info(stream_name(domain))
    return int(info.state.messages)


async def settle(stack: Stack) -> None:
    """Give in-flight deliveries time to arrive, so 'still exactly once' means something."""
    await asyncio.sleep(0.5)


async def start(stack: Stack) -> None:
    stack.relay.start()
    await stack.consumer.start()


async def test_event_of_a_committed_transaction_reaches_the_handler_once(stack: Stack) -> None:
    await start(stack)
    note_id = await add_note(stack, "hello")
    assert await eventually(lambda: effects(stack, note_id))
    await settle(stack)
    assert await effects(stack, note_id) == 1
    assert await unsent(stack) == 0
    assert stack.behaviour.calls[note_id] == 1


async def test_event_of_a_rolled_back_transaction_is_never_published(stack: Stack) -> None:
    await start(stack)
    note_id = new_event_id()

    async def change_then_fail() -> None:
        async with stack.db.transaction() as session:
            session.add(sample.Note(id=note_id, text="never"))
            await record(session, NoteAdded(note_id=note_id, text="never"), source=sample.NAME)
            raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError, match="changed my mind"):
        await change_then_fail()
    committed = await add_note(stack, "after")  # a later event proves the path was working
    assert await eventually(lambda: effects(stack, committed))
    await settle(stack)
    async with stack.db.read() as session:
        assert await session.scalar(sa.select(sa.func.count()).select_from(outbox)) == 1
    assert await stream_messages(stack) == 1
    assert await effects(stack, note_id) == 0
    assert note_id not in stack.behaviour.calls


async def test_the_same_event_delivered_twice_has_its_effect_once(stack: Stack) -> None:
    await start(stack)
    event_id = new_event_id()
    event = NoteAdded(note_id="n-twice", text="twice")
    headers = cloudevent_headers(event_id, NoteAdded.DESCRIPTOR.full_name, "/collabnet/kittest", datetime.now(UTC))
    # Two messages with one event id: what a redelivery after the stream's de-duplication window looks like.
    for attempt in range(2):
        await stack.bus.publish(
            event.DESCRIPTOR.full_name, event.SerializeToString(), headers | {"Nats-Msg-Id": f"{event_id}-{attempt}"}
        )
    assert await stream_messages(stack) == 2
    await eventually(lambda: consumer_done(stack, 2))
    assert await effects(stack, "n-twice") == 1
    assert stack.behaviour.calls["n-twice"] == 1


async def test_a_redelivery_after_a_lost_ack_has_no_second_effect(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    deliveries: list[int] = []
    original_ack = Msg.ack

    async def lose_first_ack(self: Msg) -> None:
        deliveries.append(self.metadata.num_delivered)
        if len(deliveries) > 1:
            await original_ack(self)
        # else: committed, but the ack never reaches the server

    monkeypatch.setattr(Msg, "ack", lose_first_ack)
    await start(stack)
    note_id = await add_note(stack, "ack lost")

    async def redelivered_and_acked() -> bool:
        return len(deliveries) == 2 and await consumer_done(stack, 1)

    # ack_wait is 1 s in these tests: the server redelivers, the inbox makes it a no-op.
    await eventually(redelivered_and_acked, timeout=15)
    assert deliveries == [1, 2]
    assert await effects(stack, note_id) == 1
    assert stack.behaviour.calls[note_id] == 1


async def test_a_handler_that_fails_once_then_succeeds_has_its_effect_once(stack: Stack) -> None:
    stack.behaviour.failures_left["flaky"] = 1
    await start(stack)
    note_id = await add_note(stack, "flaky")
    assert await eventually(lambda: effects(stack, note_id))
    await settle(stack)
    assert stack.behaviour.calls[note_id] == 2  # the failed run's effect was rolled back
    assert await effects(stack, note_id) == 1


async def test_a_relay_dying_between_publish_and_mark_publishes_nothing_twice(stack: Stack) -> None:
    class DiesAfterPublishing(Relay):
        async def _publish_rows(self, rows: Any) -> Any:
            await super()._publish_rows(rows)
            raise SystemExit("killed before marking the rows sent")

    note_id = await add_note(stack, "relay crash")
    with pytest.raises(SystemExit):
        await DiesAfterPublishing(stack.db, stack.bus).publish_pending(due_only=False)
    assert await unsent(stack) == 1  # the row was never marked
    assert await stream_messages(stack) == 1

    restarted = Relay(stack.db, stack.bus, poll_seconds=0.1)  # the process comes back
    restarted.start()
    try:
        await stack.consumer.start()
        await eventually(lambda: nothing_unsent(stack))
        assert await stream_messages(stack) == 1  # the second publish was dropped by de-duplication
        assert await eventually(lambda: effects(stack, note_id))
        await settle(stack)
        assert await effects(stack, note_id) == 1
    finally:
        await restarted.stop(flush=False)


async def test_a_publish_that_fails_is_retried_later(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    real_publish = stack.bus.js.publish
    failures = [ConnectionError("nats went away")]

    async def flaky_publish(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await real_publish(*args, **kwargs)

    monkeypatch.setattr(stack.bus.js, "publish", flaky_publish)
    note_id = await add_note(stack, "retry me")
    assert await stack.relay.publish_pending(due_only=False) == 0
    async with stack.db.read() as session:
        row = (await (await session.connection()).execute(sa.select(outbox))).one()
    assert row.attempts == 1
    assert "nats went away" in row.last_error
    await start(stack)
    assert await eventually(lambda: effects(stack, note_id))
    assert await unsent(stack) == 0


async def test_an_undecodable_message_is_dead_lettered_and_later_ones_still_flow(stack: Stack) -> None:
    await start(stack)
    deadletters = await stack.bus.js.subscribe(deadletter_subject(sample.NAME), stream=bus_module.DEADLETTER_STREAM)
    headers = cloudevent_headers(
        new_event_id(), NoteAdded.DESCRIPTOR.full_name, "/collabnet/kittest", datetime.now(UTC)
    )
    await stack.bus.publish(NoteAdded.DESCRIPTOR.full_name, b"\xff\xff not protobuf", headers)
    later = await add_note(stack, "still flowing")

    letter = await deadletters.next_msg(timeout=10)
    assert letter.data == b"\xff\xff not protobuf"
    assert letter.headers is not None
    assert letter.headers[bus_module.ERROR_TYPE_HEADER] == "Undecodable"
    assert "not a valid collabnet.kittest.v1.NoteAdded" in letter.headers[bus_module.ERROR_HEADER]
    assert letter.headers[bus_module.ORIGINAL_SUBJECT_HEADER] == NoteAdded.DESCRIPTOR.full_name
    assert await eventually(lambda: effects(stack, later))


async def test_a_handler_that_always_fails_is_dead_lettered_after_its_last_delivery(stack: Stack) -> None:
    stack.behaviour.always_fail.add("poison")
    await start(stack)
    deadletters = await stack.bus.js.subscribe(deadletter_subject(sample.NAME), stream=bus_module.DEADLETTER_STREAM)
    poison = await add_note(stack, "poison")
    later = await add_note(stack, "healthy")

    letter = await deadletters.next_msg(timeout=15)
    assert letter.headers is not None
    assert letter.headers[bus_module.ERROR_HEADER] == "cannot handle 'poison'"
    assert letter.headers[bus_module.DELIVERIES_HEADER] == "3"
    assert NoteAdded.FromString(letter.data).note_id == poison
    assert await eventually(lambda: effects(stack, later))
    assert stack.behaviour.calls[poison] == 3
    assert await effects(stack, poison) == 0
    async with stack.db.read() as session:
        handled = await session.scalar(
            sa.select(sa.func.count()).select_from(inbox).where(inbox.c.subject == NoteAdded.DESCRIPTOR.full_name)
        )
    assert handled == 1  # only the healthy event made it into the inbox


async def test_an_event_whose_database_is_unreachable_waits_for_it_past_its_last_delivery(stack: Stack) -> None:
    stack.behaviour.unreachable_left["outage"] = 5  # more deliveries than the consumer's 3
    await start(stack)
    note_id = await add_note(stack, "outage")

    assert await eventually(lambda: effects(stack, note_id), timeout=20)
    assert stack.behaviour.calls[note_id] == 6
    info = await stack.bus.js.stream_info(bus_module.DEADLETTER_STREAM)
    assert info.state.messages == 0


async def test_the_consumer_span_is_in_the_producer_trace(stack: Stack, span_exporter: InMemorySpanExporter) -> None:
    await start(stack)
    tracer = stack.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("POST /v1/notes") as request:
        note_id = await add_note(stack, "traced")
    assert await eventually(lambda: effects(stack, note_id))
    subject = NoteAdded.DESCRIPTOR.full_name
    spans = {span.name: span for span in span_exporter.get_finished_spans()}
    publish, process = spans[f"{subject} publish"], spans[f"{subject} process"]
    trace_id = request.get_span_context().trace_id
    assert publish.context.trace_id == trace_id
    assert process.context.trace_id == trace_id
    assert publish.parent is not None and publish.parent.span_id == request.get_span_context().span_id
    assert process.parent is not None and process.parent.span_id == publish.context.span_id
    assert publish.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert publish.attributes is not None and process.attributes is not None
    assert publish.attributes["messaging.system"] == "nats"
    assert process.attributes["messaging.destination.name"] == subject
    assert process.attributes["messaging.consumer.group.name"] == sample.NAME


async def consumer_done(stack: Stack, delivered: int) -> bool:
    """True once the consumer has been delivered ``delivered`` messages and nothing is awaiting an ack."""
    info = await stack.bus.js.consumer_info(stream_name(sample.NAME), sample.NAME)
    return bool(info.delivered.stream_seq >= delivered and info.num_ack_pending == 0 and info.num_pending == 0)


async def nothing_unsent(stack: Stack) -> bool:
    return await unsent(stack) == 0


async def test_sent_rows_are_purged_after_the_retention_and_unsent_ones_never(stack: Stack) -> None:
    await start(stack)
    handled = await add_note(stack, "old news")
    await eventually(lambda: effects(stack, handled))
    await eventually(lambda: nothing_unsent(stack))
    await stack.relay.stop(flush=False)
    await add_note(stack, "not yet published")  # the relay is stopped: it stays unsent

    keeps_a_day = Relay(stack.db, stack.bus)
    assert await keeps_a_day.purge_sent() == 0
    keeps_nothing = Relay(stack.db, stack.bus, keep_sent=timedelta(0))
    assert await keeps_nothing.purge_sent() == 1
    async with stack.db.read() as session:
        query = sa.select(outbox.c.headers, outbox.c.sent_at)
        left = (await (await session.connection()).execute(query)).all()
    assert len(left) == 1
    assert left[0].sent_at is None
    assert left[0].headers["ce-type"] == SUBJECT
    assert await unsent(stack) == 1


async def test_streams_are_made_with_the_replicas_asked_for(nats_server: NatsServer) -> None:
    one = bus_module.Bus(nats_server.url, name="replicas-one")
    three = bus_module.Bus(nats_server.url, name="replicas-three", stream_replicas=3)
    await one.connect()
    await three.connect()
    try:
        await one.ensure_stream("replicated")
        assert (await one.js.stream_info(stream_name("replicated"))).config.num_replicas == 1
        # One nats-server cannot keep three copies: JetStream refuses, rather than keeping fewer silently.
        with pytest.raises(ServerError, match="replicas"):
            await three.ensure_stream("replicated")
        with pytest.raises(ServerError, match="replicas"):
            await three.ensure_stream("unreplicated")
    finally:
        await one.close()
        await three.close()
