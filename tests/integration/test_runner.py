"""The local stack runner: `collabnet up` and the Stack it drives, with real processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from collabnet_cli.stack import Component, Stack, StackError
from collabnet_kit.client import health_status
from collabnet_kit.nats_server import free_port, port_in_use

REPO = Path(__file__).resolve().parents[2]
SAMPLE_ENV = {"PYTHONPATH": str(REPO / "libs/kit/tests")}


def sample(port: int, **env: str) -> Component:
    """The kit's sample service, run as its own process like any collabnet service."""
    return Component("kittest", "sample", port, env=SAMPLE_ENV | env)


async def test_stack_starts_each_service_as_a_process_and_waits_until_it_is_healthy(tmp_path: Path) -> None:
    component = sample(free_port())
    stack = Stack(tmp_path / "state", [component], nats_port=free_port())
    try:
        await stack.up()
        async with grpc.aio.insecure_channel(component.address) as channel:
            assert await health_status(channel) == "SERVING"
        assert (tmp_path / "state/kittest.db").exists()
        assert stack.log_file(component).exists()
        assert stack.processes["kittest"].pid != 0
    finally:
        await stack.down()
    assert stack.processes["kittest"].returncode == 0  # stopped by SIGTERM, gracefully
    assert not port_in_use(component.port)
    assert not port_in_use(stack.nats.port)


async def test_stack_reports_a_service_that_dies_while_starting_with_its_last_lines(tmp_path: Path) -> None:
    broken = sample(free_port(), COLLABNET_LOG_LEVEL="loud")
    stack = Stack(tmp_path / "state", [broken], nats_port=free_port())
    try:
        with pytest.raises(StackError) as raised:
            await stack.up()
    finally:
        await stack.down()
    message = str(raised.value)
    assert "kittest exited with code 1 while starting" in message
    assert "COLLABNET_LOG_LEVEL" in message  # the service's own complaint, from its log


async def test_stack_refuses_to_start_over_a_port_in_use(tmp_path: Path) -> None:
    taken = Stack(tmp_path / "first", [], nats_port=free_port())
    await taken.up()
    try:
        second = Stack(tmp_path / "second", [], nats_port=taken.nats.port)
        with pytest.raises(StackError, match="ports already in use: nats-server"):
            await second.up()
    finally:
        await taken.down()


def test_collabnet_up_starts_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    nats_port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "collabnet_cli", "up", "--no-demo"),
            *("--state-dir", str(tmp_path), "--nats-port", str(nats_port)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "collabnet is up" in line:
            assert port_in_use(nats_port)
            process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0, "".join(lines)
    output = "".join(lines)
    assert f"nats://127.0.0.1:{nats_port}" in output
    # A key to try: the network operator's, kept for the next start.
    kept = json.loads((tmp_path / "operator.json").read_text())
    assert f"operator key     {kept['secret']}" in output
    assert (tmp_path / "operator.json").stat().st_mode & 0o077 == 0
    assert output.rstrip().endswith("stopped")
    assert not port_in_use(nats_port)
