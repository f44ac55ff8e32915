"""The local stack: nats-server and every service as its own process, on SQLite files.

Everything lives under the state folder (``.collabnet/`` by default): ``nats/`` for JetStream,
``<service>.db`` for each database, ``logs/<service>.log`` for each process's output and
``traces/<service>.jsonl`` for its spans.

Adding a service is one entry in ``COMPONENTS``; a component whose module is not installed is left
out, so the stack runs whatever exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import grpc

from collabnet_kit.client import health_status
from collabnet_kit.nats_server import NatsServer, port_in_use


@dataclass(frozen=True)
class Component:
    """One process of the stack: a module run with ``python -m`` and the port it serves on."""

    name: str
    module: str
    port: int
    protocol: Literal["grpc", "http"] = "grpc"
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def installed(self) -> bool:
        """Whether the module is installed and runnable with ``python -m``."""
        try:
            return importlib.util.find_spec(f"{self.module}.__main__") is not None
        except ModuleNotFoundError:
            return False


COMPONENTS = [
    Component("identity", "collabnet_identity", 50061),
    Component("supplychain", "collabnet_supplychain", 50062),
    Component("reviews", "collabnet_reviews", 50063),
    Component("community", "collabnet_community", 50064),
    Component("improvement", "collabnet_improvement", 50065),
    Component("analytics", "collabnet_analytics", 50066),
    Component("gateway", "collabnet_gateway", 8080, protocol="http"),
]
NATS_PORT = 14222


class StackError(Exception):
    """The stack could not start; the message says which process and shows its last log lines."""


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no output)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Stack:
    """Starts, watches and stops the processes of the local stack."""

    def __init__(
        self,
        state_dir: Path,
        components: Sequence[Component],
        *,
        nats_port: int = NATS_PORT,
        start_timeout: float = 60.0,
        stop_timeout: float = 15.0,
    ) -> None:
        self.state_dir = state_dir.resolve()
        self.components = list(components)
        self.nats = NatsServer(self.state_dir / "nats", port=nats_port)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.processes: dict[str, asyncio.subprocess.Process] = {}

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def address(self, name: str) -> str:
        """Where the component ``name`` listens (host:port)."""
        return self.component(name).address

    def log_file(self, component: Component) -> Path:
        return self.state_dir / "logs" / f"{component.name}.log"

    def environment(self, component: Component) -> dict[str, str]:
        """What a component's process is configured with: its own place, and where everyone else is."""
        env = dict(os.environ)
        env |= {
            "COLLABNET_STATE_DIR": str(self.state_dir),
            "COLLABNET_DATABASE_URL": f"sqlite+aiosqlite:///{self.state_dir / (component.name + '.db')}",
            "COLLABNET_NATS_URL": self.nats.url,
            "COLLABNET_GRPC_HOST": "127.0.0.1",
            "COLLABNET_GRPC_PORT": str(component.port),
            "COLLABNET_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }
        if component.protocol == "http":
            env |= {"COLLABNET_HTTP_HOST": "127.0.0.1", "COLLABNET_HTTP_PORT": str(component.port)}
        for other in self.components:
            env[f"COLLABNET_{other.name.upper()}_ADDRESS"] = other.address
        return env | dict(component.env)

    def check_ports(self) -> None:
        taken = [f"{c.name} ({c.port})" for c in self.components if port_in_use(c.port)]
        if port_in_use(self.nats.port):
            taken.insert(0, f"nats-server ({self.nats.port})")
        if taken:
            raise StackError(f"ports already in use: {', '.join(taken)}; is another stack running?")

    async def up(self) -> None:
        """Start nats-server, then every component, and wait until each reports healthy."""
        self.check_ports()
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.nats.start)
        for component in self.components:
            await self._spawn(component)
        await asyncio.gather(*(self._wait_healthy(c) for c in self.components))

    async def _spawn(self, component: Component) -> None:
        with self.log_file(component).open("ab") as log:
            self.processes[component.name] = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                component.module,
                env=self.environment(component),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the runner only; it stops the rest in order
            )

    async def stop(self, name: str, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send ``sig`` to one component (SIGKILL: it dies at once, as in a crash) and wait until it
        has exited; returns its exit code. After SIGTERM it gets ``stop_timeout`` before SIGKILL."""
        process = self.processes[name]
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
        await self._reap(process)
        assert process.returncode is not None
        return process.returncode

    async def start(self, name: str) -> None:
        """Start one component that has stopped (on its port, with its database) and wait until it
        reports healthy."""
        process = self.processes.get(name)
        if process is not None and process.returncode is None:
            raise StackError(f"{name} is running")
        component = self.component(name)
        await self._spawn(component)
        await self._wait_healthy(component)

    async def restart_nats(self) -> None:
        """Stop nats-server and start it again on its port with its store, as a server restart does."""
        await asyncio.to_thread(self.nats.stop)
        await asyncio.to_thread(self.nats.start)

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    async def _wait_healthy(self, component: Component) -> None:
        process = self.processes[component.name]
        deadline = asyncio.get_running_loop().time() + self.start_timeout
        while asyncio.get_running_loop().time() < deadline:
            if process.returncode is not None:
                raise StackError(
                    f"{component.name} exited with code {process.returncode} while starting; "
                    f"its last lines ({self.log_file(component)}):\n{tail(self.log_file(component))}"
                )
            if await self._healthy(component):
                return
            await asyncio.sleep(0.1)
        raise StackError(
            f"{component.name} did not report healthy within {self.start_timeout:.0f}s; "
            f"its last lines:\n{tail(self.log_file(component))}"
        )

    async def _healthy(self, component: Component) -> bool:
        if component.protocol == "http":
            return await asyncio.to_thread(_http_ready, f"http://{component.address}/readyz")
        try:
            async with grpc.aio.insecure_channel(component.address) as channel:
                return await health_status(channel, timeout=1.0) == "SERVING"
        except grpc.aio.AioRpcError:
            return False

    async def watch(self) -> Component:
        """Wait until a component exits, and return it (with no components, wait forever)."""
        waits = {asyncio.ensure_future(p.wait()): name for name, p in self.processes.items()}
        if not waits:
            await asyncio.Event().wait()
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()
        name = waits[next(iter(done))]
        return next(c for c in self.components if c.name == name)

    async def down(self) -> None:
        """SIGTERM every component (gateway first), wait for each to finish, then stop nats-server."""
        for component in reversed(self.components):
            process = self.processes.get(component.name)
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            await self._reap(process)
        await asyncio.to_thread(self.nats.stop)

    async def _reap(self, process: asyncio.subprocess.Process) -> None:
        """Wait ``stop_timeout`` for a signalled process to exit, then kill it."""
        try:
            await asyncio.wait_for(process.wait(), self.stop_timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


def _http_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def installed_components(port_offset: int = 0) -> list[Component]:
    """The components whose code is installed, their ports shifted by ``port_offset``."""
    return [Component(c.name, c.module, c.port + port_offset, c.protocol, c.env) for c in COMPONENTS if c.installed]
