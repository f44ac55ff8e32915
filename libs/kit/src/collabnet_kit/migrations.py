"""Alembic, wired so each service keeps its own migration history beside the kit's.

A database holds two histories: the kit's (outbox, inbox; version table ``collabnet_kit_version``)
and the service's own (version table ``alembic_version``). Both share one Alembic environment
(``alembic_env``), so a service's ``migrations/`` folder holds nothing but its revision files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from collabnet_kit import tables
from collabnet_kit.db import Database

_ENV = Path(__file__).parent / "alembic_env"


@dataclass(frozen=True)
class History:
    """One migration history: where its revisions are, its version table, the tables it owns."""

    versions: Path
    metadata: MetaData
    version_table: str = "alembic_version"

    def owns(self, name: str | None, type_: str, _: Any) -> bool:
        # Autogenerate compares only this history's tables, never another history's.
        return type_ != "table" or name in self.metadata.tables

    def config(self, connection: Connection | None = None) -> Config:
        config = Config()
        config.set_main_option("script_location", str(_ENV))
        config.set_main_option("version_locations", str(self.versions))
        config.set_main_option("path_separator", "os")
        config.set_main_option("file_template", "%%(year)d%%(month).2d%%(day).2d_%%(slug)s")
        # The template imports what autogenerate may use; ruff formats, then drops what went unused.
        hooks = {"ruff_format": "format", "ruff_fix": "check --fix --quiet"}
        config.set_section_option("post_write_hooks", "hooks", ", ".join(hooks))
        for hook, arguments in hooks.items():
            config.set_section_option("post_write_hooks", f"{hook}.type", "module")
            config.set_section_option("post_write_hooks", f"{hook}.module", "ruff")
            config.set_section_option("post_write_hooks", f"{hook}.options", f"{arguments} REVISION_SCRIPT_FILENAME")
        config.attributes.update(
            connection=connection,
            version_table=self.version_table,
            target_metadata=self.metadata,
            include_name=self.owns,
        )
        return config


KIT = History(Path(__file__).parent / "kit_migrations", tables.metadata, "collabnet_kit_version")


async def upgrade(db: Database, histories: Sequence[History]) -> None:
    """Bring the kit's history and then each given history to head."""
    for history in (KIT, *histories):

        def to_head(sync: Connection, history: History = history) -> None:
            command.upgrade(history.config(sync), "head")

        async with db.engine.begin() as connection:
            await connection.run_sync(to_head)


async def revision(db: Database, history: History, message: str) -> None:
    """Write a new revision into ``history`` from the difference between its metadata and the database."""
    await upgrade(db, [history])
    async with db.engine.begin() as connection:
        await connection.run_sync(
            lambda sync: command.revision(history.config(sync), message=message, autogenerate=True)
        )


async def pending_changes(db: Database, history: History) -> list[Any]:
    """What autogenerate would still write after upgrading: empty when the revisions match the tables."""

    def compare(sync: Connection) -> list[Any]:
        options = {"include_name": history.owns, "compare_type": True}
        context = MigrationContext.configure(sync, opts=options)
        return list(compare_metadata(context, history.metadata))

    async with db.engine.connect() as connection:
        return await connection.run_sync(compare)
