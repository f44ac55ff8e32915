"""The service's database: one URL for SQLite (aiosqlite) or PostgreSQL (asyncpg), SQLModel's async sessions,
and a unit of work that commits a state change together with the events it caused.

    async with db.transaction() as session:   # writes: BEGIN IMMEDIATE on SQLite
        session.add(row)
        record(session, ReviewPublished(...))  # outbox row in the same transaction
    async with db.read() as session:          # reads: a plain (deferred) transaction
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, TypeDecorator, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Dialect, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import await_
from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet_kit.telemetry import Telemetry

SQLITE_BUSY_TIMEOUT_MS = 10_000
_RECORDED_EVENTS = "collabnet.recorded_events"
# SQLite's primary result codes for a database another connection holds locked.
_SQLITE_BUSY = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
# PostgreSQL's SQLSTATEs for a server that takes no work now: no connection (class 08), shutting
# down or starting (57P01 to 57P03), too many connections (53300), and a database that accepts no
# connections (55000, "object not in prerequisite state").
_POSTGRES_AWAY = ("08", "57P01", "57P02", "57P03", "53300", "55000")


def unavailable(error: BaseException) -> bool:
    """Whether ``error`` (or an error it wraps) says the database is out of reach or refuses work
    for now: a refused or lost connection, a server that accepts no connections, SQLite's lock held
    by another process past the busy timeout. The same work may succeed later, so it is a service
    that is unavailable, not a request that failed."""
    pending: list[BaseException | None] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) or (isinstance(current, DBAPIError) and current.connection_invalidated):
            return True
        code = getattr(current, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in _SQLITE_BUSY:
            return True
        state = getattr(current, "sqlstate", None)
        if isinstance(state, str) and state.startswith(_POSTGRES_AWAY):
            return True
        pending += [getattr(current, "orig", None), current.__cause__, current.__context__]
    return False


def _sqlite_on_connect(dbapi_connection: Any, _: ConnectionPoolEntry) -> None:
    # Take transaction control from the driver so BEGIN is ours (IMMEDIATE for writers, below).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "journal_mode=WAL",
        f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
        "synchronous=NORMAL",  # durable across application crashes; WAL checkpoints guard the rest
        "foreign_keys=ON",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    # A writer starts with the write lock, so two writers queue on busy_timeout instead of one
    # failing with "database is locked" when it upgrades a read lock. BEGIN goes straight to
    # aiosqlite: one trip to its thread instead of the three of a cursor's execute.
    mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
    driver = connection.connection.driver_connection
    if driver is None:
        connection.exec_driver_sql(f"BEGIN {mode}")
    else:
        await_(driver.execute(f"BEGIN {mode}"))


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and read back timezone-aware, on SQLite as on PostgreSQL.

    SQLite keeps no time zone, so without this its timestamps come back naive and cannot be
    compared with aware ones; naive values are refused on the way in for the same reason.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: collabnet stores only timezone-aware times")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Database:
    """An engine with the session factories a service uses. Creates nothing until constructed."""

    def __init__(self, url: str | URL, *, telemetry: Telemetry | None = None, pool_size: int = 10) -> None:
        self.url = make_url(url)
        if self.dialect == "sqlite" and self.url.database not in (None, "", ":memory:"):
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        options: dict[str, Any] = {}
        if self.dialect == "postgresql":
            # pre-ping: a server restart leaves dead connections in the pool; test each on checkout.
            options |= {"pool_size": pool_size, "max_overflow": pool_size, "pool_pre_ping": True}
        self.engine: AsyncEngine = create_async_engine(self.url, **options)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_on_connect)
            event.listen(self.engine.sync_engine, "begin", _sqlite_on_begin)
        if telemetry is not None:
            telemetry.instrument_engine(self.engine)
        writer = self.engine.execution_options(sqlite_begin="IMMEDIATE") if self.dialect == "sqlite" else self.engine
        self._writer = async_sessionmaker(writer, class_=AsyncSession, expire_on_commit=False)
        self._reader = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)
        self._commit_listeners: list[Callable[[list[dict[str, Any]]], None]] = []
        # SQLite has one writer per file. Queueing this process's writers here, instead of in
        # SQLite's busy handler (which sleeps in steps of milliseconds), keeps commits fast.
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else contextlib.nullcontext()

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.url.get_backend_name()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: commits when the block ends, rolls back if it raises.

        When the transaction recorded events (see :func:`note_recorded_event`), the listeners
        added with :meth:`on_events_committed` get them once the commit has succeeded.
        """
        async with self._write_lock, self._writer() as session:
            async with session.begin():
                yield session
            recorded = session.info.pop(_RECORDED_EVENTS, None)
            if recorded:
                for listener in self._commit_listeners:
                    listener(recorded)

    def on_events_committed(self, listener: Callable[[list[dict[str, Any]]], None]) -> None:
        """Give ``listener`` the outbox rows of each transaction that recorded events, once it has committed."""
        self._commit_listeners.append(listener)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only unit of work: never takes SQLite's write lock."""
        async with self._reader() as session, session.begin():
            yield session

    async def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def refused(self, error: BaseException, *, timeout: float = 2.0) -> bool:
        """Whether ``error`` came from the database being unavailable: it says so (see
        :func:`unavailable`), or it is a database error and the database does not answer now (a
        driver may report a connection killed under it as something else)."""
        if unavailable(error):
            return True
        if not isinstance(error, DBAPIError):
            return False
        try:
            return not await asyncio.wait_for(self.ping(), timeout)
        except TimeoutError:
            return True

    async def dispose(self) -> None:
        await self.engine.dispose()


def insert(session: AsyncSession, table: Any) -> Any:
    """An INSERT for the session's dialect (PostgreSQL's or SQLite's), which has the ON CONFLICT
    clauses: ``insert(session, T).values(...).on_conflict_do_nothing()``. ``table`` is a Table or a
    mapped class."""
    target = getattr(table, "__table__", table)
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(target)


def note_recorded_event(session: AsyncSession, row: dict[str, Any]) -> None:
    """Note an outbox row written by ``session``'s transaction, for the listeners of its commit."""
    session.info.setdefault(_RECORDED_EVENTS, []).append(row)
