"""pytest fixtures for collabnet services, loaded by the root ``conftest.py``.

- ``nats_server``: a real ``nats-server`` with JetStream on a free port, private to the test.
- ``database_url``: a fresh database per test: a temporary SQLite file, and, when
  ``COLLABNET_TEST_POSTGRES_URL`` is set, also a PostgreSQL database (tests using it run on both).
  ``database_factory`` makes more on the same backend, for tests that run several services, empty
  or already migrated (``database_factory(migrated=[store.HISTORY])``); ``migrated_database_url``
  makes a fixture of the latter. A test's PostgreSQL
  databases are dropped once it is over.
- ``span_exporter`` / ``span_processor``: spans kept in memory.
- ``service_settings(...)``, ``running(service)``: a service's gRPC server in-process.

What a test would otherwise wait for is done once per run or while the previous test runs: each
migration history is migrated once per backend into a template that migrated databases are copied
from, the next PostgreSQL database of each kind and the next nats-server are made ahead, and
PostgreSQL drops its databases while the next test runs.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import shutil
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.engine import make_url

from collabnet_kit.db import Database
from collabnet_kit.migrations import History, upgrade
from collabnet_kit.nats_server import NatsServer
from collabnet_kit.server import Service
from collabnet_kit.settings import ServiceSettings

POSTGRES_ENV = "COLLABNET_TEST_POSTGRES_URL"
S = TypeVar("S", bound=ServiceSettings)
T = TypeVar("T")


def backends() -> list[str]:
    """The database backends tests run on: SQLite always, PostgreSQL when configured."""
    return ["sqlite", "postgresql"] if os.environ.get(POSTGRES_ENV) else ["sqlite"]


class _Loop:
    """An event loop in a thread of its own, for the database work of the fixtures: they are called
    from plain functions and from tests' running loops alike, and work goes on between tests."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="collabnet-test-databases", daemon=True)
        self._thread.start()

    def submit(self, work: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(work, self._loop)

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.submit(work).result()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


async def _migrate(url: str, histories: Sequence[History]) -> None:
    db = Database(url)
    try:
        await upgrade(db, histories)
    finally:
        await db.dispose()


def _key(histories: Sequence[History]) -> tuple[tuple[str, str], ...]:
    return tuple((str(history.versions), history.version_table) for history in histories)


class SqliteTemplates:
    """SQLite files migrated once per run, which migrated test databases are copies of."""

    def __init__(self, directory: Path, loop: _Loop) -> None:
        self._directory = directory
        self._loop = loop
        self._names = itertools.count()
        self._templates: dict[tuple[tuple[str, str], ...], Path] = {}

    def copy(self, histories: Sequence[History], to: Path) -> None:
        key = _key(histories)
        if key not in self._templates:
            template = self._directory / f"template-{next(self._names)}.db"
            self._loop.run(_migrate(f"sqlite+aiosqlite:///{template}", histories))
            self._templates[key] = template
        template = self._templates[key]
        for suffix in ("", "-wal"):  # closing the last connection folds the WAL in; copy it if it is there
            if Path(f"{template}{suffix}").exists():
                shutil.copyfile(f"{template}{suffix}", f"{to}{suffix}")


class PostgresDatabases:
    """Makes databases on the configured server for one test run, and drops them.

    Migrated databases are copies (``CREATE DATABASE ... TEMPLATE``) of a database migrated once per
    run. The statements run on a loop of their own, so a test waits for none of them: the next
    database of each kind is made ahead while a test runs, and :meth:`drop` returns at once (a drop
    makes PostgreSQL checkpoint and remove files, which takes longer than a create).
    """

    def __init__(self, url: str, loop: _Loop) -> None:
        parsed = make_url(url)
        self._admin = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        self._url = parsed.set(drivername="postgresql+asyncpg")
        self._prefix = f"collabnet_test_{os.getpid()}_{secrets.token_hex(3)}"
        self._loop = loop
        self._names = itertools.count()
        self._templates: dict[tuple[tuple[str, str], ...], str] = {}
        self._ahead: dict[str | None, Future[str]] = {}
        self._dropping: list[Future[None]] = []
        self._drop_one_at_a_time = asyncio.Lock()

    def url(self, name: str) -> str:
        return self._url.set(database=name).render_as_string(hide_password=False)

    async def _execute(self, statement: str) -> None:
        connection = await asyncpg.connect(self._admin)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    async def _create(self, template: str | None) -> str:
        name = f"{self._prefix}_{next(self._names)}"
        await self._execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return name

    def _template(self, histories: Sequence[History]) -> str:
        key = _key(histories)
        if key not in self._templates:
            name = self._loop.run(self._create(None))
            try:
                self._loop.run(_migrate(self.url(name), histories))
            except BaseException:
                self.drop([name])
                raise
            self._templates[key] = name
        return self._templates[key]

    def create(self, migrated: Sequence[History] | None = None) -> str:
        """A new database, empty or migrated to the heads of the kit's and ``migrated``'s histories;
        returns its name."""
        template = None if migrated is None else self._template(migrated)
        ahead = self._ahead.pop(template, None)
        name = ahead.result() if ahead is not None else self._loop.run(self._create(template))
        self._ahead[template] = self._loop.submit(self._create(template))
        return name

    def drop(self, names: Sequence[str]) -> None:
        """Drop ``names`` in the background; :meth:`close` waits for it."""

        async def drop() -> None:
            failed: list[BaseException] = []
            async with self._drop_one_at_a_time:
                for name in names:
                    try:
                        await self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    except Exception as error:
                        failed.append(error)
            if failed:
                raise failed[0]

        self._dropping.append(self._loop.submit(drop()))

    def close(self) -> None:
        """Drop what is left (the databases made ahead and the templates), once every drop is done."""
        left = [*self._templates.values()]
        for ahead in self._ahead.values():
            if ahead.exception() is None:
                left.append(ahead.result())
        self.drop(left)
        errors = [error for dropping in self._dropping if (error := dropping.exception()) is not None]
        if errors:
            raise errors[0]


class DatabaseFactory:
    """Makes fresh databases on one test's backend, each its own: empty, or already migrated."""

    def __init__(
        self, backend: str, directory: Path, sqlite: SqliteTemplates, postgres: PostgresDatabases | None
    ) -> None:
        self.backend = backend
        self._directory = directory
        self._sqlite = sqlite
        self._postgres = postgres
        self._made = itertools.count()
        self.postgres_databases: list[str] = []

    def __call__(self, *, migrated: Sequence[History] | None = None) -> str:
        """The URL of a new database; with ``migrated``, at the heads of the kit's history and
        those, as a service's would be after migrating at start (the histories' migrations ran once
        in this run, on this backend, to make the template it is a copy of)."""
        if self.backend == "postgresql":
            assert self._postgres is not None
            name = self._postgres.create(migrated)
            self.postgres_databases.append(name)
            return self._postgres.url(name)
        path = self._directory / f"test-{next(self._made)}.db"
        if migrated is not None:
            self._sqlite.copy(migrated, path)
        return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session")
def _database_loop() -> Iterator[_Loop]:
    loop = _Loop()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def _sqlite_templates(tmp_path_factory: pytest.TempPathFactory, _database_loop: _Loop) -> SqliteTemplates:
    return SqliteTemplates(tmp_path_factory.mktemp("database-templates"), _database_loop)


@pytest.fixture(scope="session")
def _postgres_databases(_database_loop: _Loop) -> Iterator[PostgresDatabases | None]:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        yield None
        return
    databases = PostgresDatabases(url, _database_loop)
    yield databases
    databases.close()


@pytest.fixture(params=backends())
def database_factory(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    _sqlite_templates: SqliteTemplates,
    _postgres_databases: PostgresDatabases | None,
) -> Iterator[DatabaseFactory]:
    """Makes fresh databases on this test's backend: one per service a test runs."""
    factory = DatabaseFactory(request.param, tmp_path, _sqlite_templates, _postgres_databases)
    yield factory
    if _postgres_databases is not None:
        _postgres_databases.drop(factory.postgres_databases)


@pytest.fixture
def database_url(database_factory: DatabaseFactory) -> str:
    """A fresh, empty database for this test, on each configured backend."""
    return database_factory()


def migrated_database_url(*histories: History, name: str = "database_url") -> Any:
    """A fixture called ``name`` (by default taking ``database_url``'s place): a fresh database of
    this test's backend at the heads of the kit's history and ``histories``, as a service leaves its
    own at start. Its migrations themselves are tested on ``database_factory()``.

        database_url = migrated_database_url(store.HISTORY)  # in a service's test fixtures
    """

    @pytest.fixture(name=name)
    def migrated(database_factory: DatabaseFactory) -> str:
        return database_factory(migrated=list(histories))

    return migrated


class NatsServers:
    """Starts nats-servers for tests, one ahead: the next test's starts while this one runs."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._count = itertools.count()
        self._ahead: NatsServer | None = None

    def _launch(self) -> NatsServer:
        server = NatsServer(self._directory / f"nats-{next(self._count)}")
        server.launch()
        return server

    def take(self) -> NatsServer:
        """A server that is ready, for one test alone."""
        server, self._ahead = self._ahead or self._launch(), None
        try:
            server.wait_ready()
        except RuntimeError:
            # Its port was free when chosen, but the test that ran meanwhile may have taken it for a
            # connection of its own: start another on a port chosen now.
            server = self._launch()
            server.wait_ready()
        self._ahead = self._launch()
        return server

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.kill()


@pytest.fixture(scope="session")
def _nats_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServers]:
    servers = NatsServers(tmp_path_factory.mktemp("nats"))
    yield servers
    servers.close()


@pytest.fixture
def nats_server(_nats_servers: NatsServers) -> Iterator[NatsServer]:
    """A real nats-server with JetStream, private to this test."""
    server = _nats_servers.take()
    yield server
    server.kill()  # its store is thrown away: nothing to shut down gracefully for


@pytest.fixture
def span_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def span_processor(span_exporter: InMemorySpanExporter) -> SimpleSpanProcessor:
    """Hands every finished span to ``span_exporter`` at once."""
    return SimpleSpanProcessor(span_exporter)


def service_settings(cls: type[S], name: str, database_url: str, nats_url: str, state_dir: Path, **overrides: Any) -> S:
    """Settings for a service under test: its own port, quick health checks and retries."""
    values: dict[str, Any] = {
        "service_name": name,
        "database_url": database_url,
        "nats_url": nats_url,
        "state_dir": state_dir,
        "grpc_port": 0,
        "health_check_seconds": 0.1,
        "consumer_backoff_seconds": 0.05,
        "outbox_poll_seconds": 0.2,
        "shutdown_grace_seconds": 2.0,
        "migrate_on_start": True,
    }
    return cls(**(values | overrides))


@asynccontextmanager
async def running(service: Service, timeout: float = 30.0) -> AsyncIterator[Service]:
    """Start ``service`` in this process, wait until it is ready, and stop it afterwards."""
    await service.start()
    try:
        await asyncio.wait_for(service.ready.wait(), timeout)
        yield service
    finally:
        await service.stop()


async def eventually(check: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Await ``check()`` until it returns something truthy, and return it; fail after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last result: {result!r})")
        await asyncio.sleep(interval)
