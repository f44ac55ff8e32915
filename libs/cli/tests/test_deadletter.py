"""``collabnet deadletter``: dead letters made by real consumers on a real nats-server, listed and replayed.

Two consumers read the reviews stream, as improvement and community do: ``improvement`` fails on
the events in ``Handlers.failing`` until told otherwise, ``community`` handles everything. One
event fails at improvement, and one message cannot be decoded at all (both dead-letter it).

The streams have a deployment's duplicate window (120 s): a replayed event that fails again is
dead-lettered anew at once, and a dead letter is replayable as soon as it is listed.
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet.reviews.v1.events_pb2 import ReviewPublished
from collabnet_cli import deadletter
from collabnet_cli.__main__ import main
from collabnet_kit.bus import DEADLETTER_STREAM, Bus, Envelope, cloudevent_headers, stream_name
from collabnet_kit.consumer import Consumer, Handler
from collabnet_kit.db import Database
from collabnet_kit.migrations import upgrade
from collabnet_kit.nats_server import NatsServer, free_port
from collabnet_kit.outbox import new_event_id
from collabnet_kit.testing import eventually

SUBJECT = ReviewPublished.DESCRIPTOR.full_name
CONSUMERS = ("improvement", "community")


class HandlerFailed(Exception):
    pass


@dataclass
class Handlers:
    """Each consumer's successful handlings by review id: the effect that must happen once."""

    failing: set[str] = field(default_factory=set)
    effects: dict[str, Counter[str]] = field(default_factory=lambda: {name: Counter() for name in CONSUMERS})

    def of(self, name: str) -> Handler:
        async def handle(session: AsyncSession, event: ReviewPublished, envelope: Envelope) -> None:
            if name == "improvement" and event.review_id in self.failing:
                raise HandlerFailed(f"cannot open a case for {event.review_id}")
            self.effects[name][event.review_id] += 1

        return handle


@dataclass
class Network:
    bus: Bus
    consumers: list[Consumer]
    handlers: Handlers

    @property
    def url(self) -> str:
        return self.bus.url

    async def publish(self, review_id: str, payload: bytes | None = None) -> str:
        """A ReviewPublished event (or ``payload`` under its headers); returns its event id."""
        event_id = new_event_id()
        headers = cloudevent_headers(event_id, SUBJECT, "/collabnet/reviews", datetime.now(UTC))
        data = ReviewPublished(review_id=review_id).SerializeToString() if payload is None else payload
        await self.bus.publish(SUBJECT, data, headers)
        return event_id

    async def settled(self) -> bool:
        """Every message of the stream delivered to every consumer and acked."""
        for consumer in self.consumers:
            info = await self.bus.js.consumer_info(stream_name("reviews"), consumer.name)
            if info.num_pending or info.num_ack_pending:
                return False
        return True

    async def letters(self, consumer: str | None = None) -> list[deadletter.DeadLetter]:
        return await deadletter.list_dead_letters(self.bus.js, consumer)


@pytest.fixture
async def network(database_url: str, nats_server: NatsServer) -> AsyncIterator[Network]:
    db = Database(database_url)
    await upgrade(db, [])  # the kit's own tables: the inbox is all the consumers need
    bus = Bus(nats_server.url, name="deadletter-test")
    await bus.connect()
    handlers = Handlers()
    consumers = [
        Consumer(
            bus,
            db,
            name=name,
            domain="reviews",
            handlers={ReviewPublished: handlers.of(name)},
            max_deliveries=2,
            backoff_seconds=0.02,
            ack_wait_seconds=2.0,
            fetch_seconds=0.5,
        )
        for name in CONSUMERS
    ]
    for consumer in consumers:
        await consumer.start()
    try:
        yield Network(bus, consumers, handlers)
    finally:
        for consumer in consumers:
            await consumer.stop()
        await bus.close()
        await db.dispose()


@dataclass
class DeadLettered:
    """The test's events: ``failed`` dead-lettered by improvement alone, ``garbage`` by both."""

    failed: str
    garbage: str
    healthy: str


@pytest.fixture
async def dead_lettered(network: Network) -> DeadLettered:
    network.handlers.failing.add("r-failed")
    failed = await network.publish("r-failed")
    garbage = await network.publish("r-garbage", payload=b"\xff\xff not protobuf")
    healthy = await network.publish("r-healthy")

    async def three_letters() -> bool:
        return len(await network.letters()) == 3 and await network.settled()

    await eventually(three_letters)
    return DeadLettered(failed, garbage, healthy)


def by_consumer_and_event(letters: Sequence[deadletter.DeadLetter]) -> dict[tuple[str, str], deadletter.DeadLetter]:
    return {(letter.consumer, letter.event_id): letter for letter in letters}


async def test_list_shows_each_dead_letter_with_its_error_and_original_subject(
    network: Network, dead_lettered: DeadLettered
) -> None:
    letters = await network.letters()
    assert [letter.seq for letter in letters] == sorted(letter.seq for letter in letters)
    found = by_consumer_and_event(letters)
    assert set(found) == {
        ("improvement", dead_lettered.failed),
        ("improvement", dead_lettered.garbage),
        ("community", dead_lettered.garbage),
    }
    failed = found["improvement", dead_lettered.failed]
    assert failed.error_type == "HandlerFailed"
    assert failed.error == "cannot open a case for r-failed"
    assert failed.subject == failed.event_type == SUBJECT
    assert failed.deliveries == 2
    assert failed.time is not None
    assert ReviewPublished.FromString(failed.data).review_id == "r-failed"
    garbage = found["community", dead_lettered.garbage]
    assert garbage.error_type == "Undecodable"
    assert f"not a valid {SUBJECT}" in garbage.error
    assert garbage.subject == SUBJECT
    assert garbage.deliveries == 1

    assert {(x.consumer, x.event_id) for x in await network.letters("improvement")} == {
        ("improvement", dead_lettered.failed),
        ("improvement", dead_lettered.garbage),
    }
    assert [x.event_id for x in await network.letters("community")] == [dead_lettered.garbage]
    assert await network.letters("gateway") == []
    assert await network.letters() == letters  # listing took nothing away


async def test_replay_after_the_fix_has_the_effect_once_and_only_where_it_was_missing(
    network: Network, dead_lettered: DeadLettered
) -> None:
    effects = network.handlers.effects
    assert effects["improvement"]["r-failed"] == 0
    assert effects["community"]["r-failed"] == 1  # community handled the event that improvement gave up on
    letters = by_consumer_and_event(await network.letters())
    failed = letters["improvement", dead_lettered.failed]

    network.handlers.failing.clear()  # the fix is out
    # The same dead letter twice (say, a second list taken meanwhile): the stream drops the second
    # by the replay's id, and its dead letter is gone already.
    replayed, again = await deadletter.replay(network.bus.js, [failed, failed])
    assert replayed.ok and replayed.deleted and not replayed.duplicate
    assert replayed.stream == stream_name("reviews")
    assert replayed.msg_id == f"replay:{failed.seq}:{dead_lettered.failed}"
    assert again.ok and again.duplicate

    await eventually(lambda: _handled(network, "improvement", "r-failed"))
    await eventually(network.settled)
    await asyncio.sleep(0.3)  # room for a second effect to show up, were there one
    assert effects["improvement"]["r-failed"] == 1
    assert effects["community"]["r-failed"] == 1  # delivered again, skipped by its inbox
    assert effects["improvement"]["r-healthy"] == effects["community"]["r-healthy"] == 1
    left = by_consumer_and_event(await network.letters())
    assert set(left) == {("improvement", dead_lettered.garbage), ("community", dead_lettered.garbage)}


async def test_replaying_an_event_that_was_in_fact_handled_has_no_second_effect(
    network: Network, dead_lettered: DeadLettered
) -> None:
    # A dead letter of an event both consumers did handle: what a handling that committed but whose
    # ack was lost, and that then failed on redelivery, would leave behind.
    assert network.handlers.effects["community"]["r-healthy"] == 1
    headers = cloudevent_headers(dead_lettered.healthy, SUBJECT, "/collabnet/reviews", datetime.now(UTC)) | {
        "collabnet-error": "database is locked",
        "collabnet-error-type": "OperationalError",
        "collabnet-original-subject": SUBJECT,
        "collabnet-deliveries": "2",
        "Nats-Msg-Id": f"community:{dead_lettered.healthy}",
    }
    data = ReviewPublished(review_id="r-healthy").SerializeToString()
    await network.bus.js.publish("collabnet.deadletter.community", data, headers=headers)
    [letter] = [x for x in await network.letters("community") if x.event_id == dead_lettered.healthy]
    assert letter.error_type == "OperationalError"
    assert letter.original_headers() == {k: v for k, v in headers.items() if k.startswith(("ce-", "content-type"))}

    [replayed] = await deadletter.replay(network.bus.js, [letter])
    assert replayed.ok and replayed.deleted
    await eventually(network.settled)
    await asyncio.sleep(0.3)
    assert network.handlers.effects["community"]["r-healthy"] == 1
    assert network.handlers.effects["improvement"]["r-healthy"] == 1
    assert dead_lettered.healthy not in {x.event_id for x in await network.letters()}


async def test_a_replayed_event_that_fails_again_is_dead_lettered_again_at_once(
    network: Network, dead_lettered: DeadLettered
) -> None:
    info = await network.bus.js.stream_info(DEADLETTER_STREAM)
    assert info.config.duplicate_window == 120  # a deployment's: the new dead letter comes well within it
    first = by_consumer_and_event(await network.letters())["improvement", dead_lettered.failed]

    [replayed] = await deadletter.replay(network.bus.js, [first])  # the cause is still there
    assert replayed.ok and replayed.deleted and not replayed.duplicate

    async def dead_lettered_again() -> list[deadletter.DeadLetter]:
        return [x for x in await network.letters("improvement") if x.event_id == dead_lettered.failed]

    [second] = await eventually(dead_lettered_again)
    assert second.seq > first.seq
    assert (second.error_type, second.error) == (first.error_type, first.error)
    assert second.data == first.data
    # Each dead letter's id names the stream message it gave up on: the original, then the replay.
    assert first.headers["Nats-Msg-Id"] != second.headers["Nats-Msg-Id"]
    assert second.headers["Nats-Msg-Id"] == f"improvement:{replayed.stream_seq}:{dead_lettered.failed}"
    assert network.handlers.effects["improvement"]["r-failed"] == 0

    network.handlers.failing.clear()  # the fix is out: the second dead letter's replay goes through
    [replayed] = await deadletter.replay(network.bus.js, [second])
    assert replayed.ok and replayed.deleted
    await eventually(lambda: _handled(network, "improvement", "r-failed"))
    assert dead_lettered.failed not in {x.event_id for x in await network.letters()}


async def test_a_message_dead_lettered_twice_is_one_dead_letter(network: Network) -> None:
    """A consumer that crashed between dead-lettering a message and acking it gets the message again,
    and dead-letters it again: the dead-letter stream drops the second by its id."""
    probe = Consumer(
        network.bus,
        network.consumers[0].db,
        name="improvement",
        domain="reviews",
        handlers={ReviewPublished: network.handlers.of("improvement")},
    )
    await network.bus.js.add_consumer(
        stream_name("reviews"), ConsumerConfig(durable_name="probe", ack_policy=AckPolicy.EXPLICIT)
    )
    subscription = await network.bus.js.pull_subscribe_bind("probe", stream=stream_name("reviews"))
    event_id = await network.publish("r-twice")
    [message] = await subscription.fetch(1, timeout=5)
    first = copy.copy(message)  # the first delivery, as the consumer held it when it crashed
    await message.nak()
    [redelivered] = await subscription.fetch(1, timeout=5)
    assert redelivered.metadata.num_delivered == 2
    assert redelivered.metadata.sequence.stream == message.metadata.sequence.stream

    for delivery in (first, redelivered):
        await probe._dead_letter(delivery, HandlerFailed("cannot open a case for r-twice"))
    letters = [x for x in await network.letters("improvement") if x.event_id == event_id]
    assert len(letters) == 1
    assert letters[0].headers["Nats-Msg-Id"] == f"improvement:{message.metadata.sequence.stream}:{event_id}"


async def _handled(network: Network, consumer: str, review_id: str) -> bool:
    return network.handlers.effects[consumer][review_id] > 0


async def test_a_dead_letter_whose_republish_fails_stays(network: Network, dead_lettered: DeadLettered) -> None:
    letters = by_consumer_and_event(await network.letters())
    failed = letters["improvement", dead_lettered.failed]
    await network.bus.js.delete_stream(stream_name("reviews"))  # nothing takes collabnet.reviews.> now

    [replayed] = await deadletter.replay(network.bus.js, [failed], timeout=0.5)
    assert not replayed.ok and not replayed.deleted
    assert "republishing failed" in replayed.error
    assert failed.seq in {letter.seq for letter in await network.letters()}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``collabnet ...`` in this process: its exit code, standard output and standard error."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


async def test_the_command_lists_and_replays(
    network: Network, dead_lettered: DeadLettered, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # the terminal's width, which errors are cut to
    capsys.readouterr()
    # asyncio.run needs a thread without a running loop: the command's own, as in a terminal.
    code, out, err = await asyncio.to_thread(run, ["deadletter", "list", "--nats-url", network.url], capsys)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["seq", "time", "consumer", "subject", "event", "id", "type", "deliveries", "error"]
    assert lines[-1] == "3 dead letters"
    [failed_line] = [line for line in lines if dead_lettered.failed in line]
    assert "improvement" in failed_line
    assert SUBJECT in failed_line
    assert "HandlerFailed: cannot open a case for r-failed" in failed_line
    assert sum("Undecodable: the payload is not a valid" in line for line in lines) == 2

    code, out, _ = await asyncio.to_thread(
        run, ["deadletter", "list", "--json", "--consumer", "community", "--nats-url", network.url], capsys
    )
    assert code == 0
    [record] = [json.loads(line) for line in out.splitlines()]
    assert record["consumer"] == "community"
    assert record["event_id"] == dead_lettered.garbage
    assert record["error_type"] == "Undecodable"
    assert record["subject"] == SUBJECT

    failed = by_consumer_and_event(await network.letters())["improvement", dead_lettered.failed]
    network.handlers.failing.clear()
    code, out, err = await asyncio.to_thread(
        run, ["deadletter", "replay", "--seq", str(failed.seq), "--nats-url", network.url], capsys
    )
    assert (code, err) == (0, "")
    assert f"replayed {failed.seq} (improvement, event {dead_lettered.failed}) to {SUBJECT}: COLLABNET_REVIEWS #" in out
    assert out.splitlines()[-1] == "replayed 1 of 1 dead letter"
    await eventually(lambda: _handled(network, "improvement", "r-failed"))

    # Asked again for the same sequence: it is gone, and the command says so.
    code, out, err = await asyncio.to_thread(
        run, ["deadletter", "replay", "--seq", str(failed.seq), "--nats-url", network.url], capsys
    )
    assert code == 1
    assert f"no dead letter {failed.seq}" in err

    # The consumers would log the undecodable message's dead-lettering, again, to this process's
    # standard output while the command prints: they wait until it is done.
    await eventually(network.settled)
    for consumer in network.consumers:
        await consumer.stop()
    code, out, _ = await asyncio.to_thread(
        run, ["deadletter", "replay", "--all", "--consumer", "community", "--nats-url", network.url], capsys
    )
    assert code == 0
    assert out.splitlines()[-1] == "replayed 1 of 1 dead letter"
    for consumer in network.consumers:
        await consumer.start()

    async def dead_lettered_again() -> bool:
        return sorted(x.consumer for x in await network.letters() if x.seq > failed.seq) == ["community", "improvement"]

    # The undecodable message, replayed, is dead-lettered again by both consumers, as new letters.
    await eventually(dead_lettered_again)


async def test_python_m_collabnet_cli_lists(network: Network, dead_lettered: DeadLettered) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "collabnet_cli",
        "deadletter",
        "list",
        "--nats-url",
        network.url,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[-1] == "3 dead letters"
    assert any(dead_lettered.failed in line and "HandlerFailed" in line for line in lines)


async def test_errors_are_cut_to_the_width(network: Network, dead_lettered: DeadLettered) -> None:
    letters = await network.letters("improvement")
    narrow = deadletter.table(letters, width=80)
    assert narrow[-1] == "2 dead letters"
    assert all(len(line) <= len(narrow[0]) + 30 for line in narrow)
    assert any(line.endswith("…") for line in narrow)
    wide = deadletter.table(letters, width=1000)
    assert any(line.endswith("HandlerFailed: cannot open a case for r-failed") for line in wide)
    assert deadletter.table([]) == ["0 dead letters"]


def test_replay_needs_seq_or_all(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["deadletter", "replay", "--nats-url", "nats://127.0.0.1:1"], capsys)
    assert code == 2
    assert "--seq N ... (from collabnet deadletter list) or --all" in err
    code, _, err = run(["deadletter", "replay", "--seq", "3", "--all"], capsys)
    assert code == 2
    assert "not allowed with" in err


def test_an_unreachable_nats_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"nats://user:secret@127.0.0.1:{free_port()}"
    code, out, err = run(["deadletter", "list", "--nats-url", url], capsys)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("collabnet deadletter: cannot connect to NATS at nats://127.0.0.1:")
    assert "secret" not in err
    assert "Traceback" not in err


async def test_no_dead_letter_stream_is_no_dead_letters(nats_server: NatsServer) -> None:
    bus = Bus(nats_server.url, name="deadletter-test")
    await bus.connect()
    try:
        assert await deadletter.list_dead_letters(bus.js) == []
    finally:
        await bus.close()
