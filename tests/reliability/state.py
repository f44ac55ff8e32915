"""What every service has written: a fingerprint of each database's contents, and a wait until the
whole stack is quiet (outboxes sent, every consumer caught up, nothing changing).

A refused request must leave no trace. Checking that needs a "before" that nothing else is about to
change: after a request that wrote something, its events travel to other services and their
handlers write too, so :meth:`Databases.settle` waits until each outbox has sent its rows, every
JetStream consumer has acknowledged everything, and two fingerprints in a row agree.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import nats
import sqlalchemy as sa
from nats.aio.client import Client as Nats
from sqlalchemy.engine import make_url

from collabnet_kit.db import Database

# Columns left out of a table's fingerprint: each is written without any request asking for it.
SKIPPED_COLUMNS: Mapping[str, frozenset[str]] = {
    # The outbox relay marks rows as sent (or failed, to retry later) after the transaction that
    # recorded them; a new row (an event) still counts.
    "outbox": frozenset({"sent_at", "attempts", "last_error", "available_at"}),
    # identity notes when a key was last used (at most once a minute) while authenticating any
    # request, whatever its outcome: bookkeeping of the credential, not a write the request asked for.
    "api_key": frozenset({"last_used_at"}),
    # The gateway's deliverer works through deliveries on its own schedule (attempts, backoff,
    # outcome); which deliveries exist still counts.
    "webhook_delivery": frozenset(
        {"state", "attempts", "next_attempt_at", "last_status_code", "last_error", "delivered_at"}
    ),
}

IDEMPOTENCY_TABLE = "idempotency_record"
"""The gateway keeps a refused creating request's answer under its ``Idempotency-Key``, so that a
retry with that key gets the same answer: the one write a refusal makes by design (to leave out of
the comparison for requests that carry the header, and only for those)."""


@dataclass(frozen=True)
class Fingerprint:
    """One database's contents: a digest of each table, and how many outbox rows wait to be sent."""

    tables: Mapping[str, str]
    unsent: int

    def changed(self, other: Fingerprint) -> list[str]:
        """The tables whose contents differ between the two."""
        names = set(self.tables) | set(other.tables)
        return sorted(n for n in names if self.tables.get(n) != other.tables.get(n))


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


class Databases:
    """Read-only access to each component's database, by component name.

    SQLite: a connection of the standard library per file, whose ``PRAGMA data_version`` tells in a
    moment whether any other connection committed since the last look, so an unchanged database is
    not read again. PostgreSQL: one statement per database that digests every table on the server.
    """

    def __init__(self, urls: Mapping[str, str], nats_url: str) -> None:
        self.urls = {name: make_url(url) for name, url in urls.items()}
        self.nats_url = nats_url
        self._sqlite: dict[str, sqlite3.Connection] = {}
        self._seen: dict[str, tuple[int, Fingerprint]] = {}
        self._postgres: dict[str, Database] = {}
        self._digests: dict[str, sa.TextClause] = {}
        self._nc: Nats | None = None

    async def close(self) -> None:
        for connection in self._sqlite.values():
            connection.close()
        for db in self._postgres.values():
            await db.dispose()
        if self._nc is not None:
            await self._nc.close()

    @staticmethod
    def _columns(tables: Mapping[str, list[str]]) -> dict[str, list[str]]:
        return {t: [c for c in cols if c not in SKIPPED_COLUMNS.get(t, ())] for t, cols in tables.items()}

    def _sqlite_fingerprint(self, name: str) -> Fingerprint:
        connection = self._sqlite.get(name)
        if connection is None:
            connection = sqlite3.connect(str(self.urls[name].database), isolation_level=None)
            self._sqlite[name] = connection
        connection.execute("BEGIN")  # one snapshot for every table below
        try:
            tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            version = connection.execute("PRAGMA data_version").fetchone()[0]
            seen = self._seen.get(name)
            if seen is not None and seen[0] == version:
                return seen[1]
            columns = self._columns(
                {t: [c[1] for c in connection.execute(f"PRAGMA table_info({_quoted(t)})")] for t in tables}
            )
            digests = {}
            for table, cols in columns.items():
                query = f"SELECT {', '.join(_quoted(c) for c in cols)} FROM {_quoted(table)}"
                rows = sorted(repr(row) for row in connection.execute(query))
                digests[table] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
            unsent = 0
            if "outbox" in columns:
                unsent = connection.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0]
            found = Fingerprint(digests, unsent)
            self._seen[name] = (version, found)
            return found
        finally:
            connection.execute("COMMIT")

    async def _postgres_fingerprint(self, name: str) -> Fingerprint:
        db = self._postgres.get(name)
        if db is None:
            db = self._postgres[name] = Database(self.urls[name], pool_size=1)
        async with db.engine.connect() as connection:
            # One snapshot for every table, as SQLite's read transaction gives.
            await connection.execution_options(isolation_level="REPEATABLE READ")
            if name not in self._digests:

                def inspect(sync: sa.Connection) -> dict[str, list[str]]:
                    inspector = sa.inspect(sync)
                    return {t: [c["name"] for c in inspector.get_columns(t)] for t in inspector.get_table_names()}

                columns = self._columns(await connection.run_sync(inspect))
                quote = db.engine.dialect.identifier_preparer.quote
                parts = [
                    f"SELECT '{table}', coalesce(md5(string_agg(r::text, E'\\n' ORDER BY r::text)), '') "
                    f"FROM (SELECT {', '.join(quote(c) for c in cols)} FROM {quote(table)}) AS r"
                    for table, cols in columns.items()
                ]
                if "outbox" in columns:
                    parts.append("SELECT '', count(*)::text FROM outbox WHERE sent_at IS NULL")
                self._digests[name] = sa.text(" UNION ALL ".join(parts))
            rows = {str(r[0]): str(r[1]) for r in await connection.execute(self._digests[name])}
        unsent = int(rows.pop("", "0"))
        return Fingerprint(rows, unsent)

    async def fingerprint(self, name: str) -> Fingerprint:
        """The contents of one component's database, table by table (row order does not count)."""
        if self.urls[name].get_backend_name() == "sqlite":
            return self._sqlite_fingerprint(name)
        return await self._postgres_fingerprint(name)

    async def fingerprints(self, names: Iterable[str] | None = None) -> dict[str, Fingerprint]:
        chosen = list(self.urls if names is None else names)
        found = await asyncio.gather(*(self.fingerprint(n) for n in chosen))
        return dict(zip(chosen, found, strict=True))

    async def ids(self) -> dict[str, list[str]]:
        """The ids of every row of every table with an ``id`` column, by table name (across services)."""
        found: dict[str, set[str]] = {}
        for name, url in self.urls.items():
            if url.get_backend_name() == "sqlite":
                await self.fingerprint(name)  # opens the connection
                sqlite = self._sqlite[name]
                tables = [r[0] for r in sqlite.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
                for table in tables:
                    if "id" in [c[1] for c in sqlite.execute(f"PRAGMA table_info({_quoted(table)})")]:
                        rows = sqlite.execute(f"SELECT id FROM {_quoted(table)}")
                        found.setdefault(table, set()).update(str(r[0]) for r in rows)
                continue
            await self.fingerprint(name)
            async with self._postgres[name].engine.connect() as connection:
                tables = [
                    str(r[0])
                    for r in await connection.execute(
                        sa.text(
                            "SELECT table_name FROM information_schema.columns "
                            "WHERE table_schema = current_schema() AND column_name = 'id'"
                        )
                    )
                ]
                for table in tables:
                    result = await connection.execute(sa.text(f"SELECT id FROM {_quoted(table)}"))
                    found.setdefault(table, set()).update(str(r[0]) for r in result)
        return {table: sorted(ids) for table, ids in found.items()}

    async def consumers_caught_up(self) -> bool:
        """Whether every durable consumer of every stream has been given and has acknowledged all."""
        if self._nc is None:
            self._nc = await nats.connect(self.nats_url)
        js = self._nc.jetstream()
        for stream in await js.streams_info():
            for consumer in await js.consumers_info(str(stream.config.name)):
                if consumer.num_pending or consumer.num_ack_pending:
                    return False
        return True

    async def settle(self, timeout: float = 60.0) -> dict[str, Fingerprint]:
        """Every database's fingerprint once the stack is quiet: no outbox row unsent, every consumer
        caught up in between two fingerprints, and the two alike. Raises TimeoutError otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        previous = await self.fingerprints()
        while True:
            caught_up = await self.consumers_caught_up()
            current = await self.fingerprints()
            quiet = all(f.unsent == 0 for f in (*previous.values(), *current.values()))
            if caught_up and quiet and current == previous:
                return current
            if loop.time() > deadline:
                moving = [n for n in current if current[n] != previous[n]]
                raise TimeoutError(f"the stack did not settle within {timeout:.0f}s (still changing: {moving})")
            previous = current
            await asyncio.sleep(0.02)
