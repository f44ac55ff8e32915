"""Dead letters: the events a consumer gave up on, in the ``COLLABNET_DEADLETTER`` stream.

A consumer that gives up on a message (its handler failed at every delivery, or it could not be
decoded) publishes it to ``collabnet.deadletter.<consumer>`` with the original payload and headers
plus ``collabnet-error``, ``collabnet-error-type``, ``collabnet-original-subject`` and
``collabnet-deliveries`` (see ``collabnet_kit.consumer``).

:func:`list_dead_letters` reads them with the stream's message-get API, which neither acks nor
deletes anything. :func:`replay` publishes each one's payload with its original headers to its
original subject, under a new ``Nats-Msg-Id`` (the original id may still be in the stream's
de-duplication window, which would drop the message silently), and deletes the dead letter once
JetStream has acknowledged the publish. Every consumer of that subject receives the event again;
the ones that had handled it already skip it by its event id (their inbox), so a replay is safe.
A replayed event that fails again is dead-lettered anew: a consumer's dead-letter id carries the
stream sequence of the message it gave up on, and the replayed event is a new message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from collabnet_kit.bus import (
    DEADLETTER_PREFIX,
    DEADLETTER_STREAM,
    DELIVERIES_HEADER,
    ERROR_HEADER,
    ERROR_TYPE_HEADER,
    ORIGINAL_SUBJECT_HEADER,
    deadletter_subject,
)
from collabnet_kit.settings import ServiceSettings, load_settings

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, nats.errors.Error)
"""What talking to NATS may raise when it is unreachable, refuses us or has no JetStream."""
SEQUENCE_NOT_FOUND = 10043
"""JetStream's error code for deleting a message that is not (or no longer) in the stream."""


@dataclass(frozen=True)
class DeadLetter:
    """One message of the dead-letter stream, with what its headers say about the failure."""

    seq: int
    """Its sequence in ``COLLABNET_DEADLETTER``: what ``replay --seq`` takes."""
    time: datetime | None
    consumer: str
    """The consumer that gave up on the event (from the dead letter's subject)."""
    subject: str
    """The subject the event was originally published on."""
    event_id: str
    event_type: str
    deliveries: int | None
    error_type: str
    error: str
    headers: Mapping[str, str] = field(repr=False)
    data: bytes = field(repr=False)

    @classmethod
    def from_message(
        cls, seq: int, subject: str, time: datetime | None, headers: Mapping[str, str], data: bytes
    ) -> DeadLetter:
        deliveries = headers.get(DELIVERIES_HEADER, "")
        return cls(
            seq=seq,
            time=time,
            consumer=subject.removeprefix(f"{DEADLETTER_PREFIX}."),
            subject=headers.get(ORIGINAL_SUBJECT_HEADER, ""),
            event_id=headers.get("ce-id", ""),
            event_type=headers.get("ce-type", ""),
            deliveries=int(deliveries) if deliveries.isdigit() else None,
            error_type=headers.get(ERROR_TYPE_HEADER, ""),
            error=headers.get(ERROR_HEADER, ""),
            headers=dict(headers),
            data=data,
        )

    def original_headers(self) -> dict[str, str]:
        """The headers the event was published with: without the dead letter's own (``collabnet-*``)
        and without the stream's (``Nats-*``: its de-duplication id, and what a direct get adds)."""
        return {
            key: value for key, value in self.headers.items() if not key.lower().startswith(("collabnet-", "nats-"))
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": _iso(self.time),
            "consumer": self.consumer,
            "subject": self.subject,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "deliveries": self.deliveries,
            "error_type": self.error_type,
            "error": self.error,
        }


@dataclass(frozen=True)
class Replayed:
    """What became of one dead letter's replay: republished (and deleted), or left where it was."""

    letter: DeadLetter
    msg_id: str
    stream: str = ""
    """The stream the event went to again, and its sequence there."""
    stream_seq: int = 0
    duplicate: bool = False
    """The stream dropped it by its ``Nats-Msg-Id``: this dead letter had been replayed moments ago."""
    error: str = ""
    """Why the republish failed (the dead letter stays), or why the dead letter could not be deleted."""
    deleted: bool = False

    @property
    def ok(self) -> bool:
        return not self.error


def _iso(time: datetime | None) -> str | None:
    if time is None:
        return None
    return time.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def replay_msg_id(letter: DeadLetter) -> str:
    """A new de-duplication id for the replayed event: unique per dead letter, so the same dead
    letter replayed twice within the stream's window is published once."""
    return f"replay:{letter.seq}:{letter.event_id or letter.headers.get('Nats-Msg-Id', '')}"


async def connect(url: str, user: str = "", password: str = "") -> Client:
    """Connect, trying the server twice: a tool should fail soon when NATS is not there, with the
    reason (a refused connection, a timeout, bad credentials) rather than "no servers available"."""
    errors: list[Exception] = []

    async def remember(error: Exception) -> None:
        """nats-py logs every connection error with its traceback; the caller reports the last."""
        errors.append(error)

    try:
        return await nats.connect(
            url,
            user=user or None,
            password=password or None,
            name="collabnet-deadletter",
            connect_timeout=2,
            allow_reconnect=False,
            max_reconnect_attempts=1,  # 0 would mean trying for ever
            reconnect_time_wait=0.1,
            error_cb=remember,
        )
    except nats.errors.NoServersError as error:
        if errors:
            raise errors[-1] from error
        raise


def nats_settings() -> ServiceSettings:
    """NATS's URL, user and password as the services read them (``COLLABNET_NATS_*``); nothing else
    a service needs is asked for."""
    return load_settings(ServiceSettings, "collabnet-cli", env="development")


async def list_dead_letters(js: JetStreamContext, consumer: str | None = None) -> list[DeadLetter]:
    """Every dead letter still in the stream (of ``consumer`` only, when given), oldest first.

    Reads message by message with the stream's get API (``next_by_subj``), so nothing is acked,
    consumed or deleted. No dead-letter stream (no consumer has started yet) means no dead letters.
    """
    try:
        info = await js.stream_info(DEADLETTER_STREAM)
    except NotFoundError:
        return []
    last = int(info.state.last_seq or 0)
    subject = deadletter_subject(consumer) if consumer else f"{DEADLETTER_PREFIX}.>"
    letters: list[DeadLetter] = []
    seq = max(1, int(info.state.first_seq or 1))
    while seq <= last:
        try:
            message = await js.get_msg(DEADLETTER_STREAM, seq=seq, subject=subject, next=True)
        except NotFoundError:
            break  # nothing at or after seq on that subject
        if message.seq is None or message.seq > last:
            break
        letters.append(
            DeadLetter.from_message(
                message.seq, message.subject or "", message.time, message.headers or {}, message.data or b""
            )
        )
        seq = message.seq + 1
    return letters


def select(letters: Iterable[DeadLetter], seqs: Sequence[int] | None) -> tuple[list[DeadLetter], list[int]]:
    """The letters with the sequences asked for (all of them when ``seqs`` is None), and the
    sequences asked for that are not among them."""
    letters = list(letters)
    if seqs is None:
        return letters, []
    by_seq = {letter.seq: letter for letter in letters}
    wanted = list(dict.fromkeys(seqs))
    return [by_seq[seq] for seq in wanted if seq in by_seq], [seq for seq in wanted if seq not in by_seq]


async def replay(js: JetStreamContext, letters: Iterable[DeadLetter], *, timeout: float = 5.0) -> list[Replayed]:
    """Republish each dead letter's event to its original subject and, once JetStream acknowledged
    it, delete the dead letter. A dead letter whose republish fails stays in the stream."""
    done: list[Replayed] = []
    for letter in letters:
        msg_id = replay_msg_id(letter)
        if not letter.subject:
            done.append(Replayed(letter, msg_id, error=f"no {ORIGINAL_SUBJECT_HEADER} header: nowhere to replay it"))
            continue
        headers = letter.original_headers() | {"Nats-Msg-Id": msg_id}
        try:
            ack = await js.publish(letter.subject, letter.data, timeout=timeout, headers=headers)
        except CONNECTION_ERRORS as error:
            done.append(Replayed(letter, msg_id, error=f"republishing failed: {describe(error)}"))
            continue
        replayed = Replayed(letter, msg_id, stream=ack.stream, stream_seq=ack.seq, duplicate=bool(ack.duplicate))
        try:
            await js.delete_msg(DEADLETTER_STREAM, letter.seq)
        except APIError as error:
            if error.err_code != SEQUENCE_NOT_FOUND:
                done.append(
                    replace(replayed, error=f"republished, but deleting the dead letter failed: {describe(error)}")
                )
                continue
            # deleted meanwhile (by another replay): gone either way
        except CONNECTION_ERRORS as error:
            # Replaying it again is harmless: within the window the stream drops it by its id, and
            # after it the consumers skip it by its event id.
            done.append(replace(replayed, error=f"republished, but deleting the dead letter failed: {describe(error)}"))
            continue
        done.append(replace(replayed, deleted=True))
    return done


def describe(error: BaseException) -> str:
    """An exception in one line: its type, and its message when it has one."""
    text = " ".join(str(error).split())
    name = type(error).__name__
    return f"{name}: {text}" if text and text != name else name


_COLUMNS = ("seq", "time", "consumer", "subject", "event id", "type", "deliveries", "error")


def table(letters: Sequence[DeadLetter], width: int = 120) -> list[str]:
    """One line per dead letter under a header, columns aligned, each error (``Type: message``)
    cut to what is left of ``width`` (at least 30 characters); then the total."""
    rows = [
        (
            str(letter.seq),
            _iso(letter.time) or "-",
            letter.consumer,
            letter.subject or "-",
            letter.event_id or "-",
            letter.event_type or "-",
            "-" if letter.deliveries is None else str(letter.deliveries),
            " ".join(f"{letter.error_type}: {letter.error}".split()),
        )
        for letter in letters
    ]
    lines: list[str] = []
    if rows:
        widths = [max(len(row[i]) for row in [_COLUMNS, *rows]) for i in range(len(_COLUMNS) - 1)]
        room = max(30, width - sum(widths) - 2 * len(widths))
        for row in [_COLUMNS, *rows]:
            cells = [
                cell.rjust(w) if i in (0, 6) else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row[:-1], widths, strict=True))
            ]
            error = row[-1] if len(row[-1]) <= room else row[-1][: room - 1] + "…"
            lines.append("  ".join([*cells, error]).rstrip())
    lines.append(f"{len(rows)} dead letter{'' if len(rows) == 1 else 's'}")
    return lines
