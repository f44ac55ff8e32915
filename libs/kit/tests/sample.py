"""A small service built on the kit, as a real service would be: used by the kit's own tests.

It stores notes (AddNote records a NoteAdded event in the same transaction) and consumes its own
NoteAdded events into a table of effects, so tests can count how often a handler's effect landed.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel, col
from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet.kittest.v1 import kittest_pb2, kittest_pb2_grpc
from collabnet_kit import errors
from collabnet_kit.bus import Envelope
from collabnet_kit.db import Database
from collabnet_kit.migrations import History
from collabnet_kit.outbox import new_event_id, record
from collabnet_kit.principal import current_principal
from collabnet_kit.server import Api, Runtime, Service, Wiring
from collabnet_kit.settings import ServiceSettings

NAME = "kittest"


class Table(SQLModel, registry=registry()):
    """Base of this service's tables, kept apart from every other service's metadata."""


class Note(Table, table=True):
    __tablename__ = "kittest_note"
    id: str = Field(primary_key=True, max_length=64)
    text: str


class Effect(Table, table=True):
    """One row per handler run that committed: the count tests compare with 1."""

    __tablename__ = "kittest_effect"
    seq: int | None = Field(default=None, primary_key=True)
    note_id: str = Field(index=True, max_length=64)
    event_id: str = Field(max_length=64)


HISTORY = History(Path(__file__).parent / "sample_migrations", Table.metadata)

ERRORS: dict[str, errors.DomainError] = {
    "invalid": errors.InvalidArgument(
        "text: must not be empty; rating: must be between 1 and 5",
        [
            errors.FieldViolation("text", "must not be empty"),
            errors.FieldViolation("rating", "must be between 1 and 5"),
        ],
    ),
    "not_found": errors.NotFound("note n-1 not found"),
    "exists": errors.AlreadyExists("note n-1 exists already"),
    "denied": errors.PermissionDenied("only the note's author may change it"),
    "precondition": errors.FailedPrecondition("the note is archived"),
    "unauthenticated": errors.Unauthenticated("who are you?"),
    # A refusal that quotes long input back, as "listing <10,000 characters> not found" would.
    "quoting": errors.InvalidArgument(
        "sku: " + "\u00e9" * 5000 + " is not a SKU",
        [errors.FieldViolation(f"lines[{i}].sku", "\u00e9" * 1000) for i in range(30)],
    ),
}


class SampleApi(kittest_pb2_grpc.SampleServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.db = runtime.db

    async def Echo(self, request: kittest_pb2.EchoRequest, context: object) -> kittest_pb2.EchoResponse:
        return kittest_pb2.EchoResponse(text=request.text, partner_id=current_principal().partner_id or "")

    async def Fail(self, request: kittest_pb2.FailRequest, context: object) -> kittest_pb2.FailResponse:
        if request.error in ERRORS:
            raise ERRORS[request.error]
        raise RuntimeError("the secret database password is hunter2")

    async def AddNote(self, request: kittest_pb2.AddNoteRequest, context: object) -> kittest_pb2.AddNoteResponse:
        if not request.text:
            raise errors.InvalidArgument.field("text", "must not be empty")
        note_id = new_event_id()
        async with self.db.transaction() as session:
            session.add(Note(id=note_id, text=request.text))
            await record(session, kittest_pb2.NoteAdded(note_id=note_id, text=request.text), source=NAME)
        return kittest_pb2.AddNoteResponse(note_id=note_id)


class Behaviour:
    """What the NoteAdded handler does; tests change it to fail on purpose."""

    def __init__(self) -> None:
        self.failures_left: dict[str, int] = {}
        self.always_fail: set[str] = set()
        # Deliveries that find the database unreachable, by text.
        self.unreachable_left: dict[str, int] = {}
        self.calls: dict[str, int] = {}

    async def on_note_added(self, session: AsyncSession, event: kittest_pb2.NoteAdded, envelope: Envelope) -> None:
        self.calls[event.note_id] = self.calls.get(event.note_id, 0) + 1
        session.add(Effect(note_id=event.note_id, event_id=envelope.id))
        await session.flush()
        if event.text in self.always_fail:
            raise RuntimeError(f"cannot handle {event.text!r}")
        if self.unreachable_left.get(event.text, 0) > 0:
            self.unreachable_left[event.text] -= 1
            raise ConnectionRefusedError(f"the database is unreachable while handling {event.text!r}")
        if self.failures_left.get(event.text, 0) > 0:
            self.failures_left[event.text] -= 1
            raise RuntimeError(f"transient failure for {event.text!r}")


def create(settings: ServiceSettings, behaviour: Behaviour | None = None, **options: object) -> Service:
    behaviour = behaviour or Behaviour()

    def wire(runtime: Runtime) -> Wiring:
        api = Api(
            kittest_pb2.DESCRIPTOR.services_by_name["SampleService"],
            SampleApi(runtime),
            kittest_pb2_grpc.add_SampleServiceServicer_to_server,
        )
        consumer = runtime.consumer(NAME, {kittest_pb2.NoteAdded: behaviour.on_note_added})
        return Wiring(apis=[api], consumers=[consumer])

    return Service(settings, wire, histories=[HISTORY], publishes=[NAME], **options)  # type: ignore[arg-type]


async def effects(db: Database, note_id: str) -> int:
    """How many committed handler runs the note's event had."""
    async with db.read() as session:
        count = await session.scalar(sa.select(sa.func.count()).where(col(Effect.note_id) == note_id))
    return int(count or 0)


if __name__ == "__main__":
    from collabnet_kit.entrypoint import main

    main(NAME, ServiceSettings, create)
