"""The whole system as separate processes, as ``collabnet up`` starts it, for the integration and
reliability tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from collabnet_cli.stack import Component, Stack, installed_components
from collabnet_kit.nats_server import free_port


@pytest.fixture
def component_env() -> Callable[[], dict[str, str]]:
    """More environment for each process of ``stack``, made once per process (a test overrides it)."""
    return dict


@pytest.fixture
async def stack(
    tmp_path: Path, database_factory: Callable[[], str], component_env: Callable[[], dict[str, str]]
) -> AsyncIterator[Stack]:
    """nats-server, the six services and the gateway, on free ports, each on a database of this
    test's backend (SQLite, and PostgreSQL when configured)."""
    components = [
        Component(
            c.name,
            c.module,
            free_port(),
            c.protocol,
            {"COLLABNET_DATABASE_URL": database_factory(), **component_env()},
        )
        for c in installed_components()
    ]
    system = Stack(tmp_path / "state", components, nats_port=free_port(), start_timeout=120)
    try:
        await system.up()
        yield system
    finally:
        await system.down()
