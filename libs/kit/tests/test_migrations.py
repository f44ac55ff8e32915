"""Migrations on SQLite and PostgreSQL: two histories side by side, idempotent, matching the tables."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sample
import sqlalchemy as sa
import structlog
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from collabnet_kit import entrypoint
from collabnet_kit.db import Database
from collabnet_kit.migrations import KIT, History, pending_changes, upgrade
from collabnet_kit.settings import ServiceSettings, SettingsError
from collabnet_kit.tables import outbox

KIT_TABLES = {"outbox", "inbox"}
SAMPLE_TABLES = {"kittest_note", "kittest_effect"}


def head(history: History) -> str:
    revision = ScriptDirectory.from_config(history.config()).get_current_head()
    assert revision is not None
    return revision


async def table_names(db: Database) -> set[str]:
    async with db.engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: sa.inspect(sync).get_table_names()))


async def versions(db: Database, table: str) -> list[str]:
    async with db.engine.connect() as connection:
        rows = await connection.execute(sa.text(f"SELECT version_num FROM {table}"))
        return [row[0] for row in rows]


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.dispose()


async def test_upgrade_creates_the_kits_tables_and_the_services(db: Database) -> None:
    await upgrade(db, [sample.HISTORY])
    assert await table_names(db) >= KIT_TABLES | SAMPLE_TABLES


async def test_upgrade_without_service_histories_creates_only_the_kits_tables(db: Database) -> None:
    await upgrade(db, [])
    tables = await table_names(db)
    assert tables >= KIT_TABLES
    assert not tables & SAMPLE_TABLES
    assert "alembic_version" not in tables


async def test_each_history_records_its_head_in_its_own_version_table(db: Database) -> None:
    await upgrade(db, [sample.HISTORY])
    assert KIT.version_table == "collabnet_kit_version"
    assert sample.HISTORY.version_table == "alembic_version"
    assert await versions(db, "collabnet_kit_version") == [head(KIT)]
    assert await versions(db, "alembic_version") == [head(sample.HISTORY)]
    assert head(KIT) != head(sample.HISTORY)


async def test_upgrading_twice_changes_nothing_and_keeps_the_data(db: Database) -> None:
    await upgrade(db, [sample.HISTORY])
    async with db.transaction() as session:
        session.add(sample.Note(id="n-1", text="kept"))
    tables = await table_names(db)

    await upgrade(db, [sample.HISTORY])

    assert await table_names(db) == tables
    assert await versions(db, "collabnet_kit_version") == [head(KIT)]
    assert await versions(db, "alembic_version") == [head(sample.HISTORY)]
    async with db.read() as session:
        note = await session.get(sample.Note, "n-1")
    assert note is not None and note.text == "kept"


async def test_the_kits_revisions_match_its_table_definitions(db: Database) -> None:
    await upgrade(db, [sample.HISTORY])
    assert await pending_changes(db, KIT) == []


async def test_the_services_revisions_match_its_table_definitions(db: Database) -> None:
    await upgrade(db, [sample.HISTORY])
    assert await pending_changes(db, sample.HISTORY) == []


async def test_pending_changes_reports_the_tables_a_history_still_lacks(db: Database) -> None:
    await upgrade(db, [])  # the kit's tables only
    changes = await pending_changes(db, sample.HISTORY)
    added = {change[1].name for change in changes if isinstance(change, tuple) and change[0] == "add_table"}
    assert added == SAMPLE_TABLES
    # The kit's tables and version table belong to another history: never reported as removable.
    assert not [change for change in changes if isinstance(change, tuple) and change[0] == "remove_table"]


async def test_the_outbox_index_of_pending_events_exists(db: Database) -> None:
    await upgrade(db, [])

    def index_names(sync: Connection) -> set[str]:
        return {index["name"] for index in sa.inspect(sync).get_indexes(outbox.name) if index["name"]}

    async with db.engine.connect() as connection:
        assert "outbox_pending" in await connection.run_sync(index_names)


# --- the entry point's migrate command --------------------------------------------------------------


@pytest.fixture
def service_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Only the variables a test sets; and the logging the entry point configures undone afterwards."""
    for name in list(os.environ):
        if name.startswith("COLLABNET_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLLABNET_STATE_DIR", str(tmp_path / "state"))
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = {name: logging.getLogger(name).level for name in ("alembic.runtime.migration", "nats")}
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, noisy_level in noisy.items():
        logging.getLogger(name).setLevel(noisy_level)


def test_the_migrate_command_brings_the_database_to_head(
    database_url: str, service_environment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLLABNET_DATABASE_URL", database_url)

    entrypoint.main("kittest", ServiceSettings, sample.create, ["migrate"])

    async def check() -> tuple[set[str], list[str], list[str]]:
        db = Database(database_url)
        try:
            return (
                await table_names(db),
                await versions(db, "collabnet_kit_version"),
                await versions(db, "alembic_version"),
            )
        finally:
            await db.dispose()

    tables, kit_versions, service_versions = asyncio.run(check())
    assert tables >= KIT_TABLES | SAMPLE_TABLES
    assert kit_versions == [head(KIT)]
    assert service_versions == [head(sample.HISTORY)]


def test_the_migrate_command_defaults_to_a_sqlite_file_in_the_state_dir(
    service_environment: None, tmp_path: Path
) -> None:
    entrypoint.main("kittest", ServiceSettings, sample.create, ["migrate"])

    async def tables() -> set[str]:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'state' / 'kittest.db'}")
        try:
            return await table_names(db)
        finally:
            await db.dispose()

    assert (tmp_path / "state" / "kittest.db").is_file()
    assert asyncio.run(tables()) >= KIT_TABLES | SAMPLE_TABLES


def test_the_migrate_command_in_production_without_a_database_url_stops_naming_it(
    service_environment: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("COLLABNET_ENV", "production")
    monkeypatch.setenv("COLLABNET_NATS_URL", "nats://nats:4222")
    monkeypatch.setenv("COLLABNET_PRINCIPAL_SIGNING_KEY", "a-production-signing-key-0123456789abcdef")
    with pytest.raises(SettingsError) as raised:
        entrypoint.main("kittest", ServiceSettings, sample.create, ["migrate"])
    assert "COLLABNET_DATABASE_URL" in str(raised.value.code)
    assert not (tmp_path / "state").exists()
