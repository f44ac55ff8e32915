"""The command line every service shares: ``python -m collabnet_<name> [serve|migrate|revision]``.

serve                 run the service until SIGTERM (the default)
migrate               bring the database to the latest revision and exit (production's migration job)
revision -m MESSAGE   write a new revision of the service's history from its tables (development)
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import structlog
import uvloop

from collabnet_kit import migrations
from collabnet_kit.db import Database
from collabnet_kit.logging import configure_logging
from collabnet_kit.settings import ServiceSettings, load_settings

S = TypeVar("S", bound=ServiceSettings)
log = structlog.get_logger(__name__)


class Process(Protocol):
    """What a service's ``create`` returns: a kit ``Service``, or something that runs one (the gateway)."""

    @property
    def histories(self) -> Sequence[migrations.History]: ...

    async def run(self) -> None: ...


def main(
    name: str,
    settings_class: type[S],
    create: Callable[[S], Process],
    argv: Sequence[str] | None = None,
) -> None:
    parser = argparse.ArgumentParser(prog=f"collabnet_{name}", description=f"The collabnet {name} service.")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the service until SIGTERM (default)")
    commands.add_parser("migrate", help="bring the database to the latest revision and exit")
    revise = commands.add_parser("revision", help="write a new migration from the service's tables")
    revise.add_argument("-m", "--message", required=True)
    args = parser.parse_args(argv)

    settings = load_settings(settings_class, name)
    configure_logging(name, settings.log_level, settings.log_format)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    service = create(settings)
    if args.command in (None, "serve"):
        uvloop.run(service.run())
    elif args.command == "migrate":
        asyncio.run(_migrate(settings, service))
    else:
        asyncio.run(_revision(settings, service, args.message))


async def _migrate(settings: ServiceSettings, service: Process) -> None:
    db = Database(settings.database)
    try:
        await migrations.upgrade(db, service.histories)
        log.info("database_migrated", histories=len(service.histories) + 1)
    finally:
        await db.dispose()


async def _revision(settings: ServiceSettings, service: Process, message: str) -> None:
    if len(service.histories) != 1:
        raise SystemExit("revision needs a service with exactly one migration history")
    db = Database(settings.database)
    try:
        await migrations.revision(db, service.histories[0], message)
    finally:
        await db.dispose()
