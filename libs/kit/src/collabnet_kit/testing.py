"""pytest fixtures for collabnet services, loaded by the root ``conftest.py``.

- ``nats_server``: a real ``nats-server`` with JetStream on a free port, in a temporary folder.
- ``database_url``: a fresh database per test: a temporary SQLite file, and, when
  ``COLLABNET_TEST_POSTGRES_URL`` is set, also a PostgreSQL database (tests using it run on both).
  ``database_factory`` makes more on the same backend, for tests that run several services.
  The PostgreSQL databases of a run are dropped when the run ends.
- ``span_exporter`` / ``span_processor``: spans kept in memory.
- ``service_settings(...)``, ``running(service)``: a service's gRPC server in-process.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.engine import make_url

from collabnet_kit.nats_server import NatsServer
from collabnet_kit.server import Service
from collabnet_kit.settings import ServiceSettings

POSTGRES_ENV = "COLLABNET_TEST_POSTGRES_URL"
S = TypeVar("S", bound=ServiceSettings)


def backends() -> list[str]:
    """The database backends tests run on: SQLite always, PostgreSQL when configured."""
    return ["sqlite", "postgresql"] if os.environ.get(POSTGRES_ENV) else ["sqlite"]


class PostgresDatabases:
    """Creates databases on the configured server for one test run and drops them at its end."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self._admin = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        self._url = parsed.set(drivername="postgresql+asyncpg")
        self._prefix = f"collabnet_test_{os.getpid()}_{secrets.token_hex(3)}"
        self._created: list[str] = []

    async def _execute(self, statement: str) -> None:
        connection = await asyncpg.connect(self._admin)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    def _run(self, statement: str) -> None:
        """Run ``statement`` to completion, also when called from a running event loop (an async
        fixture making databases): then in a thread with a loop of its own."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self._execute(statement))
            return
        with ThreadPoolExecutor(1) as pool:
            pool.submit(lambda: asyncio.run(self._execute(statement))).result()

    def create(self) -> str:
        name = f"{self._prefix}_{len(self._created)}"
        self._run(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        return self._url.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        async def drop() -> None:
            for name in self._created:
                await self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        asyncio.run(drop())


@pytest.fixture(scope="session")
def _postgres_databases() -> Iterator[PostgresDatabases | None]:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        yield None
        return
    databases = PostgresDatabases(url)
    yield databases
    databases.drop_all()


@pytest.fixture(params=backends())
def database_factory(
    request: pytest.FixtureRequest, tmp_path: Path, _postgres_databases: PostgresDatabases | None
) -> Callable[[], str]:
    """Makes fresh, empty databases on this test's backend: one per service a test runs."""
    made = iter(range(1_000))

    def make() -> str:
        if request.param == "postgresql":
            assert _postgres_databases is not None
            return _postgres_databases.create()
        return f"sqlite+aiosqlite:///{tmp_path / f'test-{next(made)}.db'}"

    return make


@pytest.fixture
def database_url(database_factory: Callable[[], str]) -> str:
    """A fresh, empty database for this test, on each configured backend."""
    return database_factory()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real nats-server with JetStream, private to this test."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


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
