"""The ``collabnet`` command.

collabnet up      start nats-server and every installed service on this machine, until Ctrl-C
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Sequence
from pathlib import Path

from collabnet_cli.stack import NATS_PORT, Component, Stack, StackError, installed_components, tail


def _say(text: str) -> None:
    print(text, flush=True)


async def up(state_dir: Path, nats_port: int, port_offset: int) -> int:
    stack = Stack(state_dir, installed_components(port_offset), nats_port=nats_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await _serve(stack, stop)
    finally:
        _say("stopping")
        await stack.down()
        _say("stopped")


async def _first(*aws: Awaitable[object]) -> asyncio.Future[object]:
    """Wait for the first of ``aws`` to finish; cancel the others and return the finished one."""
    futures = [asyncio.ensure_future(aw) for aw in aws]
    done, pending = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    for future in pending:
        future.cancel()
    return next(iter(done))


async def _serve(stack: Stack, stop: asyncio.Event) -> int:
    names = ", ".join(c.name for c in stack.components) or "no services installed yet"
    _say(f"starting nats-server and {names} (state in {stack.state_dir})")
    first = await _first(stack.up(), stop.wait())
    if stop.is_set():
        _say("interrupted while starting")
        return 130
    try:
        first.result()
    except StackError as error:
        print(f"collabnet up: {error}", file=sys.stderr, flush=True)
        return 1

    _say(f"{'nats-server':<16} {stack.nats.url}")
    for component in stack.components:
        scheme = "http://" if component.protocol == "http" else ""
        _say(f"{component.name:<16} {scheme}{component.address}  (log: {stack.log_file(component)})")
    _say(f"{'traces':<16} {stack.state_dir / 'traces'}")
    _say("collabnet is up; Ctrl-C stops it")

    first = await _first(stack.watch(), stop.wait())
    if stop.is_set():
        return 0
    died = first.result()
    assert isinstance(died, Component)
    log = stack.log_file(died)
    print(f"collabnet up: {died.name} stopped unexpectedly; its last lines ({log}):\n{tail(log)}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="collabnet", description="Run and operate collabnet.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("up", help="start the local stack until Ctrl-C")
    run.add_argument("--state-dir", type=Path, default=Path(".collabnet"), help="where data, logs and traces go")
    run.add_argument("--nats-port", type=int, default=NATS_PORT, help=f"nats-server's port (default {NATS_PORT})")
    run.add_argument("--port-offset", type=int, default=0, help="add this to every service's default port")
    args = parser.parse_args(argv)
    if args.command == "up":
        sys.exit(asyncio.run(up(args.state_dir, args.nats_port, args.port_offset)))


if __name__ == "__main__":
    main()
