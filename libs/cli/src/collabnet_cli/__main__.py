"""The ``collabnet`` command.

collabnet up               start nats-server and every installed service on this machine, load the
                           demo network, and run until Ctrl-C
collabnet demo             tell the closed loop against the running stack, step by step
collabnet traces [ID]      draw a trace (the latest by default) from the local span files
collabnet deadletter list  the events consumers gave up on, still in the dead-letter stream
collabnet deadletter replay --seq N ... | --all
                           publish them again to their subjects, then delete them
collabnet export --partner P --to DIR [--since T]
                           write the partner's analytics feed as Parquet, continuing where the
                           last export to DIR stopped
collabnet platform add NAME
                           create the durable consumers an internal platform reads the streams with
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import grpc
from nats.js import JetStreamContext

from collabnet_cli import deadletter, demo_network, export, operator, platform, traces
from collabnet_cli.gateway import Caller, Gateway, GatewayError, WebhookEndpoint
from collabnet_cli.stack import NATS_PORT, Component, Stack, StackError, installed_components, tail
from collabnet_cli.story import ClosedLoop, Step
from collabnet_kit.bus import Bus
from collabnet_kit.errors import DomainError

GATEWAY_URL = os.environ.get("COLLABNET_GATEWAY_URL", "http://127.0.0.1:8080")


def _say(text: str) -> None:
    print(text, flush=True)


async def up(state_dir: Path, nats_port: int, port_offset: int, demo: bool = True) -> int:
    stack = Stack(state_dir, installed_components(port_offset), nats_port=nats_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await _serve(stack, stop, demo)
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


async def _serve(stack: Stack, stop: asyncio.Event, demo: bool) -> int:
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
    first = await _first(_welcome(stack, demo), stop.wait())
    if stop.is_set():
        return 0
    try:
        first.result()
    except (OSError, GatewayError, TimeoutError) as error:
        print(f"collabnet up: loading the demo network failed: {error}", file=sys.stderr, flush=True)
        return 1
    _say("collabnet is up; Ctrl-C stops it")

    first = await _first(stack.watch(), stop.wait())
    if stop.is_set():
        return 0
    died = first.result()
    assert isinstance(died, Component)
    log = stack.log_file(died)
    print(f"collabnet up: {died.name} stopped unexpectedly; its last lines ({log}):\n{tail(log)}", file=sys.stderr)
    return 1


async def _welcome(stack: Stack, demo: bool) -> None:
    """The operator's key, and the demo network unless asked not to: what a newcomer tries first."""
    components = {c.name: c for c in stack.components}
    if "identity" not in components or "gateway" not in components:
        return
    key = await operator.ensure_operator(stack.state_dir, components["identity"].address)
    _say(f"{'operator key':<16} {key.secret}  (scope network:admin; kept in {operator.key_file(stack.state_dir)})")
    if demo:
        gateway_url = f"http://{components['gateway'].address}"
        network = await demo_network.ensure(stack.state_dir, gateway_url, Caller(key.partner_id, key.secret))
        for line in network.summary():
            _say(line)


async def demo(key: operator.OperatorKey, gateway_url: str) -> int:
    """The closed loop against the running stack, each step told with its ids and its trace."""
    with WebhookEndpoint() as webhooks:
        async with Gateway(gateway_url) as gateway:
            loop = ClosedLoop(gateway, Caller(key.partner_id, key.secret), webhooks)
            try:
                await loop.run(_tell)
            except (OSError, GatewayError, TimeoutError) as error:
                print(f"collabnet demo: {error}", file=sys.stderr, flush=True)
                return 1
    review_trace = loop.seen["review_trace"]
    _say(f"\nThe review's trace crosses the gateway, reviews, NATS and improvement: collabnet traces {review_trace}")
    return 0


def _tell(step: Step) -> None:
    _say(f"\n== {step.title}  (trace {step.trace_id})")
    for line in step.lines:
        _say(f"   {line}")


def show_trace(state_dir: Path, trace_id: str | None) -> int:
    try:
        _say(traces.show(state_dir, trace_id))
    except LookupError as error:
        print(f"collabnet traces: {error.args[0]}", file=sys.stderr)
        return 1
    return 0


def _server(url: str) -> str:
    """``url`` without a password it may hold, for messages."""
    scheme, _, rest = url.rpartition("://")
    host = rest.rpartition("@")[2]
    return f"{scheme}://{host}" if scheme else host


async def dead_letters(args: argparse.Namespace) -> int:
    """``collabnet deadletter list`` and ``replay``: connect, do it, print it."""
    settings = deadletter.nats_settings()
    try:
        nc = await deadletter.connect(args.nats_url, settings.nats_user, settings.nats_password.get_secret_value())
    except deadletter.CONNECTION_ERRORS as error:
        _fail(f"cannot connect to NATS at {_server(args.nats_url)}: {deadletter.describe(error)}")
        return 1
    try:
        js = nc.jetstream()
        letters = await deadletter.list_dead_letters(js, args.consumer)
        if args.action == "list":
            if args.json:
                for letter in letters:
                    _say(json.dumps(letter.as_json()))
            else:
                for line in deadletter.table(letters, shutil.get_terminal_size((120, 24)).columns):
                    _say(line)
            return 0
        return await _replay(js, letters, args)
    except deadletter.CONNECTION_ERRORS as error:
        _fail(f"NATS at {_server(args.nats_url)}: {deadletter.describe(error)}")
        return 1
    finally:
        with contextlib.suppress(*deadletter.CONNECTION_ERRORS):
            await nc.close()


async def _replay(js: JetStreamContext, letters: list[deadletter.DeadLetter], args: argparse.Namespace) -> int:
    chosen, missing = deadletter.select(letters, None if args.all else args.seq)
    of = f" of consumer {args.consumer}" if args.consumer else ""
    for seq in missing:
        _fail(f"no dead letter {seq}{of} (replayed or deleted already?)")
    if not chosen:
        _say(f"no dead letters{of} to replay")
        return 1 if missing else 0
    results = await deadletter.replay(js, chosen)
    for result in results:
        letter = result.letter
        what = f"{letter.seq} ({letter.consumer}, event {letter.event_id or '-'})"
        if not result.stream:
            _fail(f"{what} not replayed, the dead letter stays: {result.error}")
            continue
        where = f"{result.stream} #{result.stream_seq}"
        if result.duplicate:
            where = f"dropped by {result.stream} as a duplicate of a replay moments ago"
        _say(f"replayed {what} to {letter.subject}: {where}")
        if not result.ok:
            _fail(f"{letter.seq}: {result.error}")
    replayed = sum(1 for result in results if result.stream)
    _say(f"replayed {replayed} of {len(chosen)} dead letter{'' if len(chosen) == 1 else 's'}")
    return 0 if not missing and all(result.ok for result in results) else 1


def _fail(text: str) -> None:
    print(f"collabnet deadletter: {text}", file=sys.stderr, flush=True)


def _sequence(text: str) -> int:
    try:
        seq = int(text)
    except ValueError:
        seq = 0
    if seq < 1:
        raise argparse.ArgumentTypeError(f"not a stream sequence: {text!r}")
    return seq


async def export_feed(args: argparse.Namespace) -> int:
    try:
        summary = await export.export(args.partner, args.to, since=args.since, address=args.analytics)
    except grpc.aio.AioRpcError as error:
        print(f"collabnet export: analytics at {args.analytics}: {error.details()}", file=sys.stderr, flush=True)
        return 1
    except DomainError as error:
        print(f"collabnet export: {error}", file=sys.stderr, flush=True)
        return 1
    _say(f"exported {summary.events} events in {len(summary.files)} files to {args.to}; position {summary.position}")
    return 0


async def add_platform(args: argparse.Namespace) -> int:
    settings = deadletter.nats_settings()
    bus = Bus(
        args.nats_url,
        name="collabnet-cli",
        user=settings.nats_user,
        password=settings.nats_password.get_secret_value(),
        duplicate_window_seconds=settings.stream_duplicate_window_seconds,
        stream_replicas=settings.stream_replicas,
    )
    try:
        try:
            await asyncio.wait_for(bus.connect(), timeout=10)
        except TimeoutError:
            print(
                f"collabnet platform: cannot connect to NATS at {_server(args.nats_url)}", file=sys.stderr, flush=True
            )
            return 1
        for stream, durable in await platform.add(bus, args.name, args.domains):
            _say(f"{stream}: durable pull consumer {durable}")
    except deadletter.CONNECTION_ERRORS as error:
        message = f"NATS at {_server(args.nats_url)}: {deadletter.describe(error)}"
        print(f"collabnet platform: {message}", file=sys.stderr, flush=True)
        return 1
    finally:
        with contextlib.suppress(*deadletter.CONNECTION_ERRORS):
            await bus.close()
    return 0


def _moment(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="collabnet", description="Run and operate collabnet.")
    commands = parser.add_subparsers(dest="command", required=True)
    state_dir = argparse.ArgumentParser(add_help=False)
    state_dir.add_argument("--state-dir", type=Path, default=Path(".collabnet"), help="where data, logs and traces go")
    run = commands.add_parser("up", parents=[state_dir], help="start the local stack until Ctrl-C")
    run.add_argument("--nats-port", type=int, default=NATS_PORT, help=f"nats-server's port (default {NATS_PORT})")
    run.add_argument("--port-offset", type=int, default=0, help="add this to every service's default port")
    run.add_argument("--no-demo", action="store_true", help="do not load the demo network")
    story = commands.add_parser("demo", parents=[state_dir], help="tell the closed loop against the running stack")
    story.add_argument("--gateway", default=GATEWAY_URL, help=f"the gateway's address (default {GATEWAY_URL})")
    draw = commands.add_parser("traces", parents=[state_dir], help="draw a trace from the local span files")
    draw.add_argument("trace_id", nargs="?", help="a trace id or a prefix of 8 or more digits (default: the latest)")
    nats_url = deadletter.nats_settings().nats_url
    dead = commands.add_parser("deadletter", help="list and replay the events consumers gave up on")
    dead_commands = dead.add_subparsers(dest="action", required=True)
    nats_options = argparse.ArgumentParser(add_help=False)
    nats_options.add_argument(
        "--nats-url", default=nats_url, help=f"NATS (default COLLABNET_NATS_URL: {_server(nats_url)})"
    )
    nats_options.add_argument("--consumer", help="only the dead letters of this consumer (durable name)")
    show = dead_commands.add_parser("list", parents=[nats_options], help="the dead letters still in the stream")
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    again = dead_commands.add_parser(
        "replay", parents=[nats_options], help="publish dead letters again to their subjects, then delete them"
    )
    which = again.add_mutually_exclusive_group()
    which.add_argument(
        "--seq", type=_sequence, nargs="+", action="extend", metavar="N", help="the dead letters' sequences (list)"
    )
    which.add_argument("--all", action="store_true", help="every dead letter (of --consumer, when given)")
    out = commands.add_parser("export", help="write a partner's analytics feed as Parquet, partitioned by type and day")
    out.add_argument("--partner", required=True, help="the partner whose feed to export")
    out.add_argument("--to", required=True, help="a directory (or s3://..., gs://...); continues an earlier export")
    out.add_argument("--since", type=_moment, help="only events at or after this time (ISO 8601)")
    out.add_argument(
        "--analytics",
        default=export.ANALYTICS_ADDRESS,
        help=f"analytics' gRPC address (default {export.ANALYTICS_ADDRESS})",
    )
    feeds = commands.add_parser("platform", help="internal platforms' durable consumers on the domain streams")
    feed_commands = feeds.add_subparsers(dest="action", required=True)
    add = feed_commands.add_parser("add", help="create (or update) the platform's durable consumers")
    add.add_argument("name", type=platform.valid_name, help="the platform's name: letters, digits, - and _")
    add.add_argument("--domains", nargs="+", default=list(platform.DOMAINS), choices=platform.DOMAINS)
    add.add_argument("--nats-url", default=nats_url, help=f"NATS (default COLLABNET_NATS_URL: {_server(nats_url)})")
    args = parser.parse_args(argv)
    if args.command == "export":
        sys.exit(asyncio.run(export_feed(args)))
    if args.command == "platform":
        sys.exit(asyncio.run(add_platform(args)))
    if args.command == "deadletter":
        if args.action == "replay" and not args.seq and not args.all:
            again.error("say which dead letters to replay: --seq N ... (from collabnet deadletter list) or --all")
        sys.exit(asyncio.run(dead_letters(args)))
    if args.command == "up":
        sys.exit(asyncio.run(up(args.state_dir, args.nats_port, args.port_offset, demo=not args.no_demo)))
    if args.command == "demo":
        key = operator.load(args.state_dir)
        if key is None:
            parser.exit(1, f"collabnet demo: no operator key in {args.state_dir}; start the stack (make run) first\n")
        sys.exit(asyncio.run(demo(key, args.gateway)))
    if args.command == "traces":
        sys.exit(show_trace(args.state_dir, args.trace_id))


if __name__ == "__main__":
    main()
