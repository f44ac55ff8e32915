"""The migration history and the tables stay in step, on every backend."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Connection

from collabnet_gateway import store
from collabnet_kit.db import Database
from collabnet_kit.migrations import pending_changes, upgrade
from collabnet_kit.testing import DatabaseFactory

FIRST = "d599498f9f80"
READ_MODEL = {"product_maker", "product_listing"}


def _tables(sync: Connection) -> set[str]:
    return set(sa.inspect(sync).get_table_names())


async def test_after_upgrade_the_tables_match_the_migrations(database_factory: DatabaseFactory) -> None:
    db = Database(database_factory())  # empty: every migration runs
    try:
        await upgrade(db, [store.HISTORY])
        assert await pending_changes(db, store.HISTORY) == []
        async with db.engine.connect() as connection:
            assert await connection.run_sync(_tables) & READ_MODEL == set()
    finally:
        await db.dispose()


async def test_the_product_read_model_is_dropped_and_comes_back_on_downgrade(database_factory: DatabaseFactory) -> None:
    db = Database(database_factory())
    try:
        await upgrade(db, [store.HISTORY])
        async with db.engine.begin() as connection:
            await connection.run_sync(lambda sync: command.downgrade(store.HISTORY.config(sync), FIRST))
            assert await connection.run_sync(_tables) >= READ_MODEL
        await upgrade(db, [store.HISTORY])
        async with db.engine.connect() as connection:
            assert await connection.run_sync(_tables) & READ_MODEL == set()
    finally:
        await db.dispose()
