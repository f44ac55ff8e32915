"""Partners' analytics through the whole system: after the closed loop's first steps, each partner's
feed (GET /v1/feed) holds the events about its own product, a consumer without consent appears in
it only under a name that differs per partner, consent to `analytics` shows her to that partner
alone, and ``collabnet export`` writes the feed as Parquet that DuckDB reads, continuing where the
last export stopped."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import duckdb

from collabnet_cli import operator
from collabnet_cli.gateway import Caller, Gateway, WebhookEndpoint, until
from collabnet_cli.stack import Stack
from collabnet_cli.story import ClosedLoop

REVIEW_PUBLISHED = "collabnet.reviews.v1.ReviewPublished"
CASE_OPENED = "collabnet.improvement.v1.CaseOpened"


async def feed(gateway: Gateway, partner: Caller, **params: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    token = ""
    while True:
        page = await gateway.get(partner, "/v1/feed", page_size=50, page_token=token, **params)
        events.extend(page["events"])
        if not page["events"]:
            return events
        token = page["next_page_token"]


async def collabnet(stack: Stack, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("collabnet")),
        *args,
        env=os.environ | {"COLLABNET_ANALYTICS_ADDRESS": stack.address("analytics")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_feeds_minimised_by_consent_and_their_export_through_the_whole_system(
    stack: Stack, tmp_path: Path
) -> None:
    key = await operator.ensure_operator(stack.state_dir, stack.address("identity"))
    with WebhookEndpoint() as webhooks:
        async with Gateway(f"http://{stack.address('gateway')}") as gateway:
            loop = ClosedLoop(gateway, Caller(key.partner_id, key.secret), webhooks)
            for step in (loop.join, loop.catalog, loop.customers, loop.earlier_buyer, loop.read_page, loop.buy):
                await step()
            await loop.review()  # C's 2-star review opens a case for M and R
            carla, review = loop.ids["C"], loop.ids["review"]

            async def authors(partner: Caller) -> dict[str, str] | None:
                events = await feed(gateway, partner, event_types=[REVIEW_PUBLISHED, CASE_OPENED])
                found = {
                    e["type"]: e["data"].get("author_id") or e["data"].get("customer_id")
                    for e in events
                    if e["data"].get("review_id") == review
                }
                return found if len(found) == 2 else None

            seen = {
                who: await until(lambda p=p: authors(p), f"{who}'s feed has C's review and case")  # type: ignore[misc]
                for who, p in (("R", loop.retailer), ("M", loop.maker))
            }
            for names in seen.values():
                assert carla not in names.values()
                assert len(set(names.values())) == 1  # one name for C within a partner's feed
            assert seen["R"][REVIEW_PUBLISHED] != seen["M"][REVIEW_PUBLISHED]
            # Other partners' feeds hold nothing of it.
            assert all(e["data"].get("review_id") != review for e in await feed(gateway, loop.supplier))

            # C consents to analytics with R: R sees her from now on; M still does not.
            await gateway.post(
                loop.customer,
                f"/v1/parties/{carla}/consents",
                {"partner_id": loop.retailer.partner_id, "purpose": "analytics", "source": "web form"},
            )

            async def named(partner: Caller) -> str | None:
                events = await feed(gateway, partner, event_types=[REVIEW_PUBLISHED])
                mine = [e["data"]["author_id"] for e in events if e["data"]["review_id"] == review]
                return mine[0] if mine and mine[0] == carla else None

            await until(lambda: named(loop.retailer), "R's feed names C once she consented")
            assert await named(loop.maker) is None

            # The export: Parquet by event type and day, read by DuckDB; the next run adds only what is new.
            retailer = loop.retailer.partner_id
            out = tmp_path / "export"
            said = await collabnet(stack, "export", "--partner", retailer, "--to", str(out))
            assert said.startswith("exported ")
            files = f"{out}/event_type={REVIEW_PUBLISHED}/*/*.parquet"
            with duckdb.connect() as db:
                rows = db.sql(
                    f"SELECT product_id, revision, avg(rating), count(DISTINCT author_id) "
                    f"FROM read_parquet('{files}', hive_partitioning=true) GROUP BY ALL ORDER BY ALL"
                ).fetchall()
                cases = db.sql(
                    f"SELECT count(*) FROM read_parquet('{out}/event_type={CASE_OPENED}/*/*.parquet')"
                ).fetchall()
            assert [(p, avg) for p, _, avg, _ in rows] == [(loop.ids["P"], 3.5)]  # B's 5 stars and C's 2
            assert cases == [(1,)]
            assert "exported 0 events" in await collabnet(stack, "export", "--partner", retailer, "--to", str(out))
            await loop.engage()
            again = await collabnet(stack, "export", "--partner", retailer, "--to", str(out))
            assert not again.startswith("exported 0 ")
            with duckdb.connect() as db:
                counts = db.sql(
                    f"SELECT count(*), count(DISTINCT event_id) FROM read_parquet('{out}/*/*/*.parquet')"
                ).fetchall()
            assert counts[0][0] == counts[0][1]  # nothing twice
