"""The reliability suite: the whole system under faults, bad input, other partners and load.

Each test runs once, on PostgreSQL when it is configured (production's database) and on SQLite
otherwise. Sizes are bounded for ``make test``; ``make soak`` (``COLLABNET_SOAK=1``) runs the long
version. Every test records its figures with the ``figures`` fixture; they are printed together at
the end of the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from collabnet_kit.testing import backends

SOAK = os.environ.get("COLLABNET_SOAK") == "1"
# PostgreSQL when configured, else SQLite: each reliability test runs on one backend.
BACKEND = backends()[-1]
FIGURES = pytest.StashKey[dict[str, dict[str, object]]]()


@dataclass(frozen=True)
class Sizes:
    """How much each test does: bounded in ``make test``, the long version in ``make soak``."""

    reviews: int
    products: int
    load_rate: float  # requests offered per second
    load_seconds: float
    examples: int  # generated inputs per operation or RPC


SIZES = (
    Sizes(reviews=1000, products=100, load_rate=20.0, load_seconds=120.0, examples=50)
    if SOAK
    else Sizes(reviews=250, products=25, load_rate=20.0, load_seconds=10.0, examples=5)
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the reliability tests' runs on the other backend."""
    here = os.path.dirname(__file__)
    other = [
        item
        for item in items
        if str(item.path).startswith(here)
        and getattr(item, "callspec", None) is not None
        and item.callspec.params.get("database_factory", BACKEND) != BACKEND  # type: ignore[attr-defined]
    ]
    if other:
        config.hook.pytest_deselected(items=other)
        items[:] = [item for item in items if item not in other]


def pytest_configure(config: pytest.Config) -> None:
    config.stash[FIGURES] = {}


@pytest.fixture
def sizes() -> Sizes:
    return SIZES


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, object]]:
    """This test's figures, by name (``figures["lost"] = 0``), printed at the end of the run."""
    recorded: dict[str, object] = {}
    yield recorded
    request.config.stash[FIGURES][request.node.name] = recorded


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    recorded = config.stash.get(FIGURES, {})
    if not recorded:
        return
    mode = "soak" if SOAK else "bounded"
    terminalreporter.section(f"reliability figures ({mode}, {BACKEND})")
    for test, values in recorded.items():
        terminalreporter.write_line(test)
        for name, value in values.items():
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            terminalreporter.write_line(f"    {name:<40} {shown}")
