"""Which database errors say the database is unavailable (so a caller may try again) rather than
that the work itself failed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from collabnet_kit import db as db_module
from collabnet_kit.db import Database, unavailable


def wrapped(error: Exception) -> DBAPIError:
    """``error`` as SQLAlchemy raises a driver's error."""
    raised = DBAPIError.instance("SELECT 1", {}, error, Exception)
    assert isinstance(raised, DBAPIError)
    return raised


async def write(db: Database, *statements: str) -> None:
    async with db.transaction() as session:
        for statement in statements:
            await (await session.connection()).execute(sa.text(statement))


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError("[Errno 111] Connection refused"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.exceptions.ObjectNotInPrerequisiteStateError('database "x" is not currently accepting connections'),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_of_a_database_out_of_reach_say_it_is_unavailable(error: Exception) -> None:
    assert unavailable(error)
    assert unavailable(wrapped(error))


def test_a_disconnect_noticed_by_sqlalchemy_says_it_is_unavailable() -> None:
    error = DBAPIError.instance("SELECT 1", {}, Exception("gone"), Exception, connection_invalidated=True)
    assert unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("not a database error"),
        asyncpg.exceptions.UniqueViolationError("duplicate key value violates unique constraint"),
        asyncpg.exceptions.UndefinedTableError('relation "x" does not exist'),
        sqlite3.OperationalError("no such table: x"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_of_the_work_itself_do_not(error: Exception) -> None:
    assert not unavailable(error)
    assert not unavailable(wrapped(error))


async def test_sqlite_locked_by_another_process_past_the_busy_timeout_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "SQLITE_BUSY_TIMEOUT_MS", 50)
    path = tmp_path / "locked.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await write(db, "CREATE TABLE t (x INTEGER NOT NULL)")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises((sqlite3.OperationalError, OperationalError)) as raised:
                await write(db, "INSERT INTO t VALUES (1)")
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert unavailable(raised.value)
        assert await db.refused(raised.value)
        with pytest.raises(IntegrityError) as failed:
            await write(db, "INSERT INTO t VALUES (NULL)")
        assert not await db.refused(failed.value)  # the database answers: the work failed
    finally:
        await db.dispose()
