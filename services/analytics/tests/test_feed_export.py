"""ExportFeed: the partner's feed as Parquet, minimised by the consents in force at each run, and
continued by the next run."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import grpc
from analytics_testing import SERVICE, Network, new_id, refused

from collabnet.analytics.v1 import analytics_pb2 as pb
from collabnet.improvement.v1 import events_pb2 as improvement
from collabnet.reviews.v1 import events_pb2 as reviews
from collabnet.supplychain.v1 import events_pb2 as supplychain

REVIEWS = "event_type=collabnet.reviews.v1.ReviewPublished"


def authors(directory: Path) -> list[tuple[int, str]]:
    files = f"{directory}/{REVIEWS}/*/*.parquet"
    with duckdb.connect() as connection:
        query = f"SELECT rating, author_id FROM read_parquet('{files}', hive_partitioning=true) ORDER BY event_position"
        return [(int(rating), str(author)) for rating, author in connection.sql(query).fetchall()]


async def test_an_incremental_export_adds_only_new_events_and_withdrawn_consent_applies_from_then_on(
    network: Network, tmp_path: Path
) -> None:
    maker, product, carla = new_id(), new_id(), new_id()
    await network.join(maker)
    await network.publish(supplychain.ProductRegistered(product_id=product, maker_id=maker))
    await network.settled()

    async def review(rating: int) -> None:
        await network.publish(
            reviews.ReviewPublished(review_id=new_id(), product_id=product, author_id=carla, rating=rating)
        )
        await network.settled()

    async def export() -> pb.ExportFeedResponse:
        request = pb.ExportFeedRequest(partner_id=maker, destination=str(tmp_path))
        response: pb.ExportFeedResponse = await network.analytics.ExportFeed(request, metadata=SERVICE)
        return response

    await review(1)
    first = await export()
    assert first.events == 2 and first.files  # the product and its review
    (row,) = authors(tmp_path)
    anonymous = row[1]
    assert anonymous.startswith("anon-")

    await network.consent(carla, maker)
    await review(2)
    second = await export()
    assert second.events == 1 and second.position > first.position
    assert authors(tmp_path) == [(1, anonymous), (2, carla)]  # what was written stays as it was

    nothing = await export()
    assert nothing.events == 0 and list(nothing.files) == [] and nothing.position == second.position

    await network.consent(carla, maker, granted=False)
    await review(3)
    await export()
    assert authors(tmp_path) == [(1, anonymous), (2, carla), (3, anonymous)]

    # A fresh export after the withdrawal holds no trace of who she is.
    again = tmp_path / "again"
    request = pb.ExportFeedRequest(partner_id=maker, destination=str(again))
    assert (await network.analytics.ExportFeed(request, metadata=SERVICE)).events == 4
    assert authors(again) == [(1, anonymous), (2, anonymous), (3, anonymous)]
    # The feed read now names her the same way the export does.
    feed = await network.feed(maker, event_types=["collabnet.reviews.v1.ReviewPublished"])
    for entry in feed:
        seen = reviews.ReviewPublished()
        assert entry.event.Unpack(seen) and seen.author_id == anonymous


async def test_an_export_for_another_partner_into_the_same_destination_is_refused(
    network: Network, tmp_path: Path
) -> None:
    first, second = new_id(), new_id()
    await network.analytics.ExportFeed(
        pb.ExportFeedRequest(partner_id=first, destination=str(tmp_path)), metadata=SERVICE
    )
    await refused(
        network.analytics.ExportFeed(
            pb.ExportFeedRequest(partner_id=second, destination=str(tmp_path)), metadata=SERVICE
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    await refused(
        network.analytics.ExportFeed(pb.ExportFeedRequest(partner_id=first), metadata=SERVICE),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_the_readmes_duckdb_query_answers_over_an_export(network: Network, tmp_path: Path) -> None:
    maker, retailer, product = new_id(), new_id(), new_id()
    await network.join(maker, retailer)
    await network.publish(supplychain.ProductRegistered(product_id=product, maker_id=maker, revision=1))
    await network.settled()
    cases = [new_id(), new_id()]
    for revision, rating in ((1, 2), (1, 1), (2, 5), (2, 4)):
        await network.publish(
            reviews.ReviewPublished(review_id=new_id(), product_id=product, revision=revision, rating=rating)
        )
    for case in cases:
        await network.publish(improvement.CaseOpened(case_id=case, product_id=product, maker_id=maker))
    await network.settled()
    await network.publish(
        improvement.CaseResolved(
            case_id=cases[0], product_id=product, maker_id=maker, outcome=improvement.CASE_OUTCOME_RECOVERED
        )
    )
    await network.settled()
    await network.analytics.ExportFeed(
        pb.ExportFeedRequest(partner_id=maker, destination=str(tmp_path / maker)), metadata=SERVICE
    )

    readme = (Path(__file__).parents[3] / "README.md").read_text()
    query = re.search(r"```sql\n(.*?)```", readme, re.DOTALL)
    assert query is not None
    with duckdb.connect() as connection:
        rows = connection.sql(query.group(1).replace("'export/", f"'{tmp_path}/")).fetchall()
    assert rows == [(product, 1, 1.5, 2, 2, 1), (product, 2, 4.5, 2, 2, 1)]
