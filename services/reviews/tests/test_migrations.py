"""The migration history and the tables stay in step, on every backend."""

from __future__ import annotations

from collabnet_kit.db import Database
from collabnet_kit.migrations import pending_changes, upgrade
from collabnet_kit.testing import DatabaseFactory
from collabnet_reviews import store


async def test_after_upgrade_the_tables_match_the_migrations(database_factory: DatabaseFactory) -> None:
    db = Database(database_factory())  # empty: every migration runs
    try:
        await upgrade(db, [store.HISTORY])
        assert await pending_changes(db, store.HISTORY) == []
    finally:
        await db.dispose()
