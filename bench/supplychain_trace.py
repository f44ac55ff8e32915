"""TraceDownstream and TraceUpstream on generated supply networks, as the network grows.

    python bench/supplychain_trace.py [--sizes 1000,10000,100000] [--calls 200] [--database URL]

For each size, a network with that many production lots is generated and loaded straight into a
fresh database (PostgreSQL when ``--database`` or ``COLLABNET_TEST_POSTGRES_URL`` names a server,
otherwise SQLite), the supplychain service is started on it as its own process, and the two RPCs are
called through gRPC, one at a time, as a service: TraceDownstream from random steel lots (what was
built from them, down to the consumers' orders) and TraceUpstream from random orders (the lots and
shipments behind them, up to the ore). Latencies are measured at the client.

The network: four products, ore -> steel -> frame -> bike, made by pools of partners. Of the lots,
10% are ore, 20% steel, 30% frames and 40% bikes; each steel lot is made from 2 ore lots, each frame
from 2 steel lots, each bike lot from 1 frame lot and 1 steel lot, picked at random across the whole
network. Every bike lot is allocated to 3 orders on average, and every ore and steel lot arrived
over one shipment leg. A lot's fan-out is the same at every size, so a trace reaches about as many
nodes in a network of 100k lots as in one of 1k: when traces are computed level by level in the
database (one query per level for the whole frontier, on indexes), their cost follows the size of
the trace and stays flat as the network grows.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import uvloop
from sqlalchemy.engine import make_url

from collabnet.supplychain.v1 import supplychain_pb2 as pb
from collabnet.supplychain.v1.supplychain_pb2_grpc import SupplyChainServiceStub
from collabnet_kit.client import health_status
from collabnet_kit.logging import configure_logging
from collabnet_kit.nats_server import NatsServer, free_port
from collabnet_kit.principal import Principal, PrincipalSigner
from collabnet_kit.settings import DEV_SIGNING_KEY

SHARES = (("ore", 0.10), ("steel", 0.20), ("frame", 0.30), ("bike", 0.40))
ORDERS_PER_BIKE_LOT = 3
PRODUCERS_PER_TIER = 20


@dataclass
class Network:
    tables: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = field(default_factory=dict)
    steel_lots: list[str] = field(default_factory=list)
    orders: list[str] = field(default_factory=list)

    def add(self, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        self.tables[table] = (columns, rows)

    @property
    def rows(self) -> int:
        return sum(len(rows) for _, rows in self.tables.values())


def generate(lots: int, seed: int = 11) -> Network:
    rng = random.Random(seed)

    def ident() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128)))

    created = datetime.now(UTC) - timedelta(days=30)
    network = Network()
    products: dict[str, str] = {}
    makers: dict[str, list[str]] = {}
    product_rows = []
    for name, _ in SHARES:
        products[name] = ident()
        makers[name] = [ident() for _ in range(PRODUCERS_PER_TIER)]
        kind = "raw_material" if name == "ore" else "finished_good" if name == "bike" else "component"
        product_rows.append(
            (products[name], f"{name.upper()}-1", name, "bench", kind, makers[name][0], "{}", 1, created, created)
        )
    network.add(
        "product",
        ["id", "sku", "name", "category", "kind", "maker_id", "attributes", "revision", "created_at", "updated_at"],
        product_rows,
    )
    bom = [("steel", "ore", 2), ("frame", "steel", 2), ("bike", "frame", 1), ("bike", "steel", 1)]
    network.add(
        "bom_item",
        ["parent_id", "component_id", "supplier_id", "position", "quantity", "unit"],
        [
            (products[parent], products[child], makers[child][0], position, quantity, "each")
            for position, (parent, child, quantity) in enumerate(bom)
        ],
    )

    by_tier: dict[str, list[str]] = {}
    lot_rows = []
    input_rows = []
    for name, share in SHARES:
        count = max(1, round(lots * share))
        by_tier[name] = [ident() for _ in range(count)]
        for number, lot_id in enumerate(by_tier[name]):
            producer = rng.choice(makers[name])
            lot_rows.append(
                (
                    *(lot_id, f"{name}-{number}", products[name], 1, producer, 1000, 0, "released", "", None),
                    *(created, created, created),
                )
            )
        inputs = {"steel": [("ore", 2)], "frame": [("steel", 2)], "bike": [("frame", 1), ("steel", 1)]}.get(name, [])
        for lot_id in by_tier[name]:
            for source, how_many in inputs:
                for input_lot in rng.sample(by_tier[source], min(how_many, len(by_tier[source]))):
                    input_rows.append((lot_id, input_lot, 10))
    network.add(
        "lot",
        [
            "id",
            "code",
            "product_id",
            "revision",
            "producer_id",
            "quantity",
            "used",
            "status",
            "status_reason",
            "recall_id",
            "produced_at",
            "created_at",
            "updated_at",
        ],
        lot_rows,
    )
    network.add("lot_input", ["lot_id", "input_lot_id", "quantity"], input_rows)
    network.steel_lots = by_tier["steel"]

    shipment_rows, leg_rows, leg_lot_rows = [], [], []
    for name in ("ore", "steel"):
        for lot_id in by_tier[name]:
            shipment_id, leg_id = ident(), ident()
            shipment_rows.append((shipment_id, None, "bench", created))
            leg_rows.append(
                (
                    *(leg_id, shipment_id, 1, "supplier_to_maker", makers[name][0], makers["steel"][0], "carrier"),
                    *("delivered", None, created, created, created),
                )
            )
            leg_lot_rows.append((leg_id, lot_id, 10))

    retailers = [ident() for _ in range(PRODUCERS_PER_TIER)]
    order_rows, line_rows, allocation_rows = [], [], []
    for lot_id in by_tier["bike"]:
        for _ in range(rng.randint(ORDERS_PER_BIKE_LOT - 2, ORDERS_PER_BIKE_LOT + 2)):
            order_id = ident()
            placed = created + timedelta(seconds=rng.randrange(30 * 86400))
            order_rows.append(
                (
                    *(order_id, ident(), rng.choice(retailers), "confirmed", "EUR", 49_900),
                    *(None, "bench", "{}", placed, placed, placed, None, None, None, ""),
                )
            )
            line_rows.append((order_id, 1, products["bike"], "BIKE-1", 1, makers["bike"][0], 1, 49_900))
            allocation_rows.append((order_id, 1, lot_id, 1))
            network.orders.append(order_id)
    network.add("shipment", ["id", "order_id", "created_by", "created_at"], shipment_rows)
    network.add(
        "shipment_leg",
        [
            "id",
            "shipment_id",
            "sequence",
            "kind",
            "from_party",
            "to_party",
            "carrier_id",
            "status",
            "expected_at",
            "picked_up_at",
            "delivered_at",
            "updated_at",
        ],
        leg_rows,
    )
    network.add("leg_lot", ["leg_id", "lot_id", "quantity"], leg_lot_rows)
    network.add(
        "purchase_order",
        [
            "id",
            "customer_id",
            "retailer_id",
            "status",
            "currency",
            "total_minor",
            "idempotency_key",
            "fingerprint",
            "contact",
            "placed_at",
            "updated_at",
            "confirmed_at",
            "shipped_at",
            "delivered_at",
            "cancelled_at",
            "cancel_reason",
        ],
        order_rows,
    )
    network.add(
        "order_line",
        ["order_id", "line_number", "product_id", "sku", "revision", "maker_id", "quantity", "unit_price_minor"],
        line_rows,
    )
    network.add("allocation", ["order_id", "line_number", "lot_id", "quantity"], allocation_rows)
    return network


LOAD_ORDER = [
    "product",
    "bom_item",
    "lot",
    "lot_input",
    "purchase_order",
    "order_line",
    "allocation",
    "shipment",
    "shipment_leg",
    "leg_lot",
]


async def load(url: str, network: Network) -> None:
    """Write the network straight into the service's tables (migrated already)."""
    if url.startswith("postgresql"):
        connection = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
        try:
            for table in LOAD_ORDER:
                columns, rows = network.tables[table]
                await connection.copy_records_to_table(table, records=rows, columns=columns)
            await connection.execute("ANALYZE")
        finally:
            await connection.close()
        return

    def sqlite_value(value: Any) -> Any:
        return value.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(value, datetime) else value

    database = make_url(url).database
    assert database is not None
    connection = sqlite3.connect(database)
    with connection:
        for table in LOAD_ORDER:
            columns, rows = network.tables[table]
            marks = ", ".join("?" for _ in columns)
            connection.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                ([sqlite_value(v) for v in row] for row in rows),
            )
        connection.execute("ANALYZE")
    connection.close()


async def fresh_database(base: str | None, folder: Path, size: int) -> str:
    if base is None:
        return f"sqlite+aiosqlite:///{folder / f'supplychain-{size}.db'}"
    url = make_url(base)
    admin = url.set(drivername="postgresql").render_as_string(False)
    name = f"collabnet_bench_supplychain_{size}"
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return url.set(drivername="postgresql+asyncpg", database=name).render_as_string(False)


async def drop_database(base: str | None, size: int) -> None:
    if base is None:
        return
    admin = make_url(base).set(drivername="postgresql").render_as_string(False)
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "collabnet_bench_supplychain_{size}" WITH (FORCE)')
    finally:
        await connection.close()


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def measure(size: int, calls: int, base: str | None, nats: NatsServer, folder: Path) -> dict[str, Any]:
    started = time.perf_counter()
    network = generate(size)
    url = await fresh_database(base, folder, size)
    env = dict(os.environ) | {
        "COLLABNET_DATABASE_URL": url,
        "COLLABNET_NATS_URL": nats.url,
        "COLLABNET_STATE_DIR": str(folder),
        "COLLABNET_LOG_LEVEL": "warning",
        "OTEL_TRACES_SAMPLER": "always_off",
    }
    migrate = await asyncio.create_subprocess_exec(sys.executable, "-m", "collabnet_supplychain", "migrate", env=env)
    assert await migrate.wait() == 0
    await load(url, network)
    loaded = time.perf_counter() - started
    port = free_port()
    service = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collabnet_supplychain", env=env | {"COLLABNET_GRPC_PORT": str(port)}
    )
    metadata = (("authorization", f"Bearer {PrincipalSigner(DEV_SIGNING_KEY).sign(Principal(service='bench'))}"),)
    rng = random.Random(size)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for _ in range(300):
                try:
                    if await health_status(channel) == "SERVING":
                        break
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)
            stub = SupplyChainServiceStub(channel)
            for lot_id, order_id in zip(
                rng.sample(network.steel_lots, 10), rng.sample(network.orders, 10), strict=True
            ):
                # Warm up: connections in the pool, statements prepared.
                await stub.TraceDownstream(pb.TraceDownstreamRequest(lot_id=lot_id), metadata=metadata, timeout=60)
                await stub.TraceUpstream(pb.TraceUpstreamRequest(order_id=order_id), metadata=metadata, timeout=60)
            down: list[float] = []
            down_nodes: list[int] = []
            for _ in range(calls):
                request = pb.TraceDownstreamRequest(lot_id=rng.choice(network.steel_lots))
                t = time.perf_counter()
                reply = await stub.TraceDownstream(request, metadata=metadata, timeout=60)
                down.append((time.perf_counter() - t) * 1000)
                down_nodes.append(len(reply.nodes))
            up: list[float] = []
            up_nodes: list[int] = []
            for _ in range(calls):
                upstream = pb.TraceUpstreamRequest(order_id=rng.choice(network.orders))
                t = time.perf_counter()
                reply = await stub.TraceUpstream(upstream, metadata=metadata, timeout=60)
                up.append((time.perf_counter() - t) * 1000)
                up_nodes.append(len(reply.nodes))
    finally:
        service.terminate()
        await service.wait()
        await drop_database(base, size)
    return {
        "size": size,
        "rows": network.rows,
        "load_s": loaded,
        "down_p50": percentile(down, 50),
        "down_p99": percentile(down, 99),
        "down_nodes": statistics.fmean(down_nodes),
        "down_per_node": statistics.fmean(down) / statistics.fmean(down_nodes),
        "up_p50": percentile(up, 50),
        "up_p99": percentile(up, 99),
        "up_nodes": statistics.fmean(up_nodes),
        "up_per_node": statistics.fmean(up) / statistics.fmean(up_nodes),
    }


async def main(sizes: list[int], calls: int, base: str | None) -> None:
    backend = "PostgreSQL" if base else "SQLite"
    with tempfile.TemporaryDirectory() as tmp:
        nats = NatsServer(Path(tmp) / "nats")
        nats.start()
        try:
            results = [await measure(size, calls, base, nats, Path(tmp)) for size in sizes]
        finally:
            nats.stop()
    print(
        f"supplychain traces on {backend}: TraceDownstream from a steel lot and TraceUpstream from an order, "
        f"x{calls} each, one at a time; milliseconds"
    )
    print(
        f"{'lots':>8} {'rows':>9} {'load s':>7} | {'Down p50':>9} {'p99':>7} {'nodes':>6} {'ms/node':>8} | "
        f"{'Up p50':>7} {'p99':>7} {'nodes':>6} {'ms/node':>8}"
    )
    for r in results:
        print(
            f"{r['size']:>8,} {r['rows']:>9,} {r['load_s']:>7.1f} | {r['down_p50']:>9.2f} {r['down_p99']:>7.2f} "
            f"{r['down_nodes']:>6.0f} {r['down_per_node']:>8.3f} | {r['up_p50']:>7.2f} {r['up_p99']:>7.2f} "
            f"{r['up_nodes']:>6.0f} {r['up_per_node']:>8.3f}"
        )
    for previous, current in itertools.pairwise(results):
        growth = current["size"] / previous["size"]
        print(
            f"x{growth:.0f} lots ({previous['size']:,} -> {current['size']:,}): "
            f"TraceDownstream p50 x{current['down_p50'] / previous['down_p50']:.2f}, "
            f"p99 x{current['down_p99'] / previous['down_p99']:.2f}, "
            f"nodes x{current['down_nodes'] / previous['down_nodes']:.2f}; "
            f"TraceUpstream p50 x{current['up_p50'] / previous['up_p50']:.2f}, "
            f"p99 x{current['up_p99'] / previous['up_p99']:.2f}, "
            f"nodes x{current['up_nodes'] / previous['up_nodes']:.2f}"
        )
    first, last = results[0], results[-1]
    if len(results) > 1:
        growth = last["size"] / first["size"]
        print(
            f"network x{growth:.0f}: cost per traced node x{last['down_per_node'] / first['down_per_node']:.2f} "
            f"(downstream), x{last['up_per_node'] / first['up_per_node']:.2f} (upstream): the cost follows the "
            "trace, not the network"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="lot counts, comma-separated")
    parser.add_argument("--calls", type=int, default=200, help="calls of each RPC per size")
    parser.add_argument("--database", default=os.environ.get("COLLABNET_TEST_POSTGRES_URL"), help="a PostgreSQL URL")
    args = parser.parse_args()
    configure_logging("bench", "warning")
    uvloop.run(main([int(s) for s in args.sizes.split(",")], args.calls, args.database))
