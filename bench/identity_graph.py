"""RolesOf and FindPaths on synthetic networks with power-law degrees, as they grow.

    python bench/identity_graph.py [--sizes 10000,100000,1000000] [--database URL]

For each size, a network of that many relationships is generated and loaded straight into a fresh
database (PostgreSQL when ``--database`` or ``COLLABNET_TEST_POSTGRES_URL`` names a server,
otherwise SQLite), the identity service is started on it as its own process, and the two RPCs are
called through gRPC: RolesOf for random parties, FindPaths (depth 4, k 3) from random consumers to
random suppliers. Latencies are measured at the client, one call at a time; the service's peak
resident memory is read from /proc when it stops.

The network: about one party per five relationships, 3% of them partners (retailers, makers,
suppliers, carriers). Consumers are customers of retailers picked with Zipf-distributed popularity
(exponent 1.2), so a few retailers have most customers; partners supply each other along tiers;
some consumers are also employees, members or suppliers. Targets on PostgreSQL at 1M relationships:
RolesOf p99 under 10 ms, FindPaths depth 4 p99 under 100 ms, service memory under 500 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import uvloop
from sqlalchemy.engine import make_url

from collabnet.identity.v1 import identity_pb2 as pb
from collabnet.identity.v1.identity_pb2_grpc import IdentityServiceStub
from collabnet_kit.client import health_status
from collabnet_kit.logging import configure_logging
from collabnet_kit.nats_server import NatsServer, free_port
from collabnet_kit.principal import Principal, PrincipalSigner
from collabnet_kit.settings import DEV_SIGNING_KEY

ROLES_CALLS = 400
PATH_CALLS = 150
KINDS = ("retailer", "manufacturer", "supplier", "carrier")


@dataclass
class Network:
    parties: list[tuple[str, str, str]]  # id, kind, name
    partners: dict[str, str]  # id -> kind
    relationships: list[tuple[str, str, str, str, str, str]]  # id, from, to, type, context, attributes json
    consumers: list[str]
    suppliers: list[str]


def zipf_choice(rng: random.Random, items: list[str], exponent: float, count: int) -> list[str]:
    weights = [1 / (rank + 1) ** exponent for rank in range(len(items))]
    return rng.choices(items, weights=weights, k=count)


def generate(size: int, seed: int = 7) -> Network:
    rng = random.Random(seed)
    party_count = max(200, size // 5)
    partner_count = max(20, party_count * 3 // 100)
    partners = {str(uuid.UUID(int=rng.getrandbits(128))): KINDS[i % len(KINDS)] for i in range(partner_count)}
    persons = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(party_count - partner_count)]
    by_kind = {k: [p for p, kind in partners.items() if kind == k] for k in KINDS}
    parties = [(p, "organization", f"{kind} {i}") for i, (p, kind) in enumerate(partners.items())]
    parties += [(p, "person", f"consumer {i}") for i, p in enumerate(persons)]
    relationships: list[tuple[str, str, str, str, str, str]] = []
    seen: set[tuple[str, str, str]] = set()

    def add(source: str, target: str, kind: str, context: str, attributes: dict[str, str] | None = None) -> None:
        if source == target or (source, target, kind) in seen:
            return
        seen.add((source, target, kind))
        relationships.append(
            (str(uuid.UUID(int=rng.getrandbits(128))), source, target, kind, context, json.dumps(attributes or {}))
        )

    # Supply tiers between partners: suppliers -> manufacturers -> retailers, carriers for many.
    for maker in by_kind["manufacturer"]:
        for supplier in rng.sample(by_kind["supplier"], min(4, len(by_kind["supplier"]))):
            add(supplier, maker, "supplier_of", maker)
        for retailer in zipf_choice(rng, by_kind["retailer"], 1.0, 3):
            add(maker, retailer, "supplier_of", retailer)
    for supplier in by_kind["supplier"]:
        for upstream in rng.sample(by_kind["supplier"], min(2, len(by_kind["supplier"]))):
            add(upstream, supplier, "supplier_of", supplier)
    for carrier in by_kind["carrier"]:
        for shipper in rng.sample(list(partners), min(10, len(partners))):
            add(carrier, shipper, "carrier_for", shipper)
    # Consumers: customers of popular retailers; some employees, members, suppliers of makers.
    retailers = by_kind["retailer"]
    customer_types = ("retail", "wholesale", "subscription")
    while len(relationships) < size:
        person = persons[min(len(persons) - 1, int(rng.paretovariate(1.5)) - 1 + rng.randrange(len(persons)) // 1)]
        roll = rng.random()
        if roll < 0.80:
            retailer = zipf_choice(rng, retailers, 1.2, 1)[0]
            add(person, retailer, "customer_of", retailer, {"customer_type": rng.choice(customer_types)})
        elif roll < 0.88:
            employer = rng.choice(list(partners))
            add(person, employer, "employee_of", employer)
        elif roll < 0.96:
            other = rng.choice(persons)
            add(person, other, "partner_of", zipf_choice(rng, retailers, 1.2, 1)[0])
        else:
            maker = rng.choice(by_kind["manufacturer"])
            add(person, maker, "supplier_of", maker)
    return Network(parties, partners, relationships[:size], persons, by_kind["supplier"])


async def load(url: str, network: Network) -> None:
    """Write the network straight into the service's tables (migrated already)."""
    degree: Counter[str] = Counter()
    for _, source, target, *_rest in network.relationships:
        degree[source] += 1
        degree[target] += 1
    created = datetime.now(UTC) - timedelta(days=400)
    valid_from = created + timedelta(days=1)
    party_rows = [(p, kind, name, None, None, "{}", degree[p], created) for p, kind, name in network.parties]
    partner_rows = [(p, json.dumps([kind]), created) for p, kind in network.partners.items()]
    rel_rows = [
        (rid, s, t, kind, ctx, attrs, valid_from, None, s in network.partners, t in network.partners, created, "")
        for rid, s, t, kind, ctx, attrs in network.relationships
    ]
    if url.startswith("postgresql"):
        connection = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
        try:
            await connection.copy_records_to_table(
                "party",
                records=party_rows,
                columns=["id", "kind", "display_name", "email", "phone", "attributes", "degree", "created_at"],
            )
            await connection.copy_records_to_table(
                "partner", records=partner_rows, columns=["party_id", "kinds", "joined_at"]
            )
            await connection.copy_records_to_table(
                "relationship",
                records=rel_rows,
                columns=[
                    "id",
                    "from_party",
                    "to_party",
                    "type",
                    "context_partner",
                    "attributes",
                    "valid_from",
                    "valid_to",
                    "from_is_partner",
                    "to_is_partner",
                    "created_at",
                    "end_reason",
                ],
            )
            await connection.execute("ANALYZE")
        finally:
            await connection.close()
        return
    import sqlite3

    database = make_url(url).database
    assert database is not None
    connection3 = sqlite3.connect(database)
    stamp = created.strftime("%Y-%m-%d %H:%M:%S.%f")
    since = valid_from.strftime("%Y-%m-%d %H:%M:%S.%f")
    with connection3:
        connection3.executemany(
            "INSERT INTO party VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [(*r[:7], stamp) for r in party_rows]
        )
        connection3.executemany("INSERT INTO partner VALUES (?, ?, ?)", [(r[0], r[1], stamp) for r in partner_rows])
        connection3.executemany(
            "INSERT INTO relationship VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*r[:6], since, None, r[8], r[9], stamp, "") for r in rel_rows],
        )
        connection3.execute("ANALYZE")
    connection3.close()


async def fresh_database(base: str | None, folder: Path, size: int) -> str:
    if base is None:
        return f"sqlite+aiosqlite:///{folder / f'identity-{size}.db'}"
    url = make_url(base)
    admin = url.set(drivername="postgresql").render_as_string(False)
    name = f"collabnet_bench_identity_{size}"
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
        await connection.execute(f'DROP DATABASE IF EXISTS "collabnet_bench_identity_{size}" WITH (FORCE)')
    finally:
        await connection.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def measure(size: int, base: str | None, nats: NatsServer, folder: Path) -> dict[str, Any]:
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
    migrate = await asyncio.create_subprocess_exec(sys.executable, "-m", "collabnet_identity", "migrate", env=env)
    assert await migrate.wait() == 0
    await load(url, network)
    loaded = time.perf_counter() - started
    port = free_port()
    service = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collabnet_identity", env=env | {"COLLABNET_GRPC_PORT": str(port)}
    )
    signer = PrincipalSigner(DEV_SIGNING_KEY)
    metadata = (("authorization", f"Bearer {signer.sign(Principal(service='bench'))}"),)
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
            stub = IdentityServiceStub(channel)
            everyone = [p for p, _, _ in network.parties]
            roles: list[float] = []
            for party in rng.sample(everyone, min(ROLES_CALLS, len(everyone))):
                t = time.perf_counter()
                await stub.RolesOf(pb.RolesOfRequest(party_id=party), metadata=metadata, timeout=30)
                roles.append((time.perf_counter() - t) * 1000)
            paths: list[float] = []
            found = 0
            for _ in range(PATH_CALLS):
                request = pb.FindPathsRequest(
                    from_party_id=rng.choice(network.consumers),
                    to_party_id=rng.choice(network.suppliers),
                    k=3,
                    max_depth=4,
                )
                t = time.perf_counter()
                reply = await stub.FindPaths(request, metadata=metadata, timeout=60)
                paths.append((time.perf_counter() - t) * 1000)
                found += bool(reply.paths)
        status = await asyncio.to_thread(Path(f"/proc/{service.pid}/status").read_text)
        peak_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    finally:
        service.terminate()
        await service.wait()
        await drop_database(base, size)
    return {
        "size": size,
        "parties": len(network.parties),
        "max_degree": max(Counter(x for r in network.relationships for x in (r[1], r[2])).values()),
        "load_s": loaded,
        "roles_p50": percentile(roles, 50),
        "roles_p99": percentile(roles, 99),
        "paths_p50": percentile(paths, 50),
        "paths_p99": percentile(paths, 99),
        "paths_mean": statistics.fmean(paths),
        "paths_found": found / PATH_CALLS,
        "memory_mb": peak_kb / 1024,
    }


async def main(sizes: list[int], base: str | None) -> None:
    backend = "PostgreSQL" if base else "SQLite"
    with tempfile.TemporaryDirectory() as tmp:
        nats = NatsServer(Path(tmp) / "nats")
        nats.start()
        try:
            results = [await measure(size, base, nats, Path(tmp)) for size in sizes]
        finally:
            nats.stop()
    print(f"identity graph on {backend}: RolesOf x{ROLES_CALLS}, FindPaths (depth 4, k 3) x{PATH_CALLS}; milliseconds")
    header = (
        f"{'relationships':>13} {'parties':>8} {'max deg':>8} {'RolesOf p50':>12} {'p99':>8} "
        f"{'FindPaths p50':>14} {'p99':>8} {'found':>6} {'service MB':>11}"
    )
    print(header)
    for r in results:
        print(
            f"{r['size']:>13,} {r['parties']:>8,} {r['max_degree']:>8,} {r['roles_p50']:>12.2f} {r['roles_p99']:>8.2f} "
            f"{r['paths_p50']:>14.2f} {r['paths_p99']:>8.2f} {r['paths_found']:>6.0%} {r['memory_mb']:>11.0f}"
        )
    for previous, current in itertools.pairwise(results):
        growth = current["size"] / previous["size"]
        print(
            f"x{growth:.0f} relationships ({previous['size']:,} -> {current['size']:,}): RolesOf p99 "
            f"x{current['roles_p99'] / previous['roles_p99']:.2f}, FindPaths p99 "
            f"x{current['paths_p99'] / previous['paths_p99']:.2f}"
        )
    last = results[-1]
    if base and last["size"] >= 1_000_000:
        checks = [
            ("RolesOf p99 < 10 ms", last["roles_p99"] < 10),
            ("FindPaths p99 < 100 ms", last["paths_p99"] < 100),
            ("service memory < 500 MB", last["memory_mb"] < 500),
        ]
        print("targets at 1M on PostgreSQL: " + ", ".join(f"{n}: {'met' if ok else 'MISSED'}" for n, ok in checks))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="relationship counts, comma-separated")
    parser.add_argument("--database", default=os.environ.get("COLLABNET_TEST_POSTGRES_URL"), help="a PostgreSQL URL")
    args = parser.parse_args()
    configure_logging("bench", "warning")
    uvloop.run(main([int(s) for s in args.sizes.split(",")], args.database))
