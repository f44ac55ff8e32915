"""``collabnet export``: a partner's analytics feed, read from the analytics service page by page,
written as Parquet under a local directory (or a URI pyarrow's filesystems know), partitioned by
event type and day. A directory exported to before continues where that export stopped.

The command calls analytics as an internal service, with a principal signed by
``COLLABNET_PRINCIPAL_SIGNING_KEY``; the feed it receives is minimised by the consents in force as
it reads, exactly as the partner would receive it.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import grpc

from collabnet.analytics.v1 import analytics_pb2 as pb
from collabnet.analytics.v1.analytics_pb2_grpc import AnalyticsServiceStub
from collabnet_analytics import events
from collabnet_analytics.domain import MAX_PAGE_SIZE, Shared
from collabnet_analytics.export import ParquetExport, Summary
from collabnet_kit.principal import Principal, PrincipalSigner
from collabnet_kit.settings import ServiceSettings, load_settings
from collabnet_kit.timestamps import timestamp

if TYPE_CHECKING:
    from collabnet.analytics.v1.analytics_pb2_grpc import AnalyticsServiceAsyncStub

ANALYTICS_ADDRESS = os.environ.get("COLLABNET_ANALYTICS_ADDRESS", "127.0.0.1:50066")


def _shared(entry: pb.FeedEvent) -> Shared:
    event = events.event_class(entry.type)()
    if not entry.event.Unpack(event):
        raise ValueError(f"feed entry {entry.position} holds {entry.event.type_url}, not {entry.type}")
    return Shared(
        position=entry.position,
        id=entry.id,
        type=entry.type,
        source=entry.source,
        time=entry.time.ToDatetime(tzinfo=UTC),
        event=event,
    )


async def export(
    partner_id: str, destination: str, *, since: datetime | None = None, address: str = ANALYTICS_ADDRESS
) -> Summary:
    """Export the partner's feed after the destination's last position."""
    settings = load_settings(ServiceSettings, "collabnet-cli", env="development")
    signer = PrincipalSigner(settings.principal_signing_key.get_secret_value())
    writer = await asyncio.to_thread(ParquetExport, destination, partner_id)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub: AnalyticsServiceAsyncStub = AnalyticsServiceStub(channel)
            after = writer.position
            while True:
                # Signed per page: a long export outlives one token.
                metadata = (("authorization", f"Bearer {signer.sign(Principal(service='collabnet-cli'))}"),)
                request = pb.ListFeedEventsRequest(
                    partner_id=partner_id, page_size=MAX_PAGE_SIZE, after_position=after, since=timestamp(since)
                )
                page = await stub.ListFeedEvents(request, metadata=metadata, timeout=60)
                if not page.events:
                    break
                await asyncio.to_thread(writer.write, [_shared(e) for e in page.events])
                after = page.events[-1].position
    except BaseException:
        await asyncio.to_thread(writer.abort)
        raise
    return await asyncio.to_thread(writer.commit)
