"""``collabnet export``: a partner's analytics feed, read from the analytics service page by page,
written as Parquet under a local directory (or a URI pyarrow's filesystems know), partitioned by
event type and day. A directory exported to before continues where that export stopped.

The command calls analytics as an internal service, with a principal signed by
``COLLABNET_PRINCIPAL_SIGNING_KEY``; the feed it receives is minimised by the consents in force as
it reads, exactly as the partner would receive it.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import grpc

import collabnet_analytics.events  # noqa: F401  (imports the event types to unpack)
from collabnet.analytics.v1 import analytics_pb2 as pb
from collabnet.analytics.v1.analytics_pb2_grpc import AnalyticsServiceStub
from collabnet_analytics.domain import MAX_PAGE_SIZE, Shared
from collabnet_analytics.export import Summary, run
from collabnet_kit.bus import message_class
from collabnet_kit.principal import Principal, PrincipalSigner
from collabnet_kit.settings import ServiceSettings, load_settings
from collabnet_kit.timestamps import timestamp

if TYPE_CHECKING:
    from collabnet.analytics.v1.analytics_pb2_grpc import AnalyticsServiceAsyncStub

ANALYTICS_ADDRESS = os.environ.get("COLLABNET_ANALYTICS_ADDRESS", "127.0.0.1:50066")


def _shared(entry: pb.FeedEvent) -> Shared:
    event = message_class(entry.type)()
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
    async with grpc.aio.insecure_channel(address) as channel:
        stub: AnalyticsServiceAsyncStub = AnalyticsServiceStub(channel)

        async def pages(after: int) -> list[Shared]:
            # Signed per page: a long export outlives one token.
            metadata = (("authorization", f"Bearer {signer.sign(Principal(service='collabnet-cli'))}"),)
            request = pb.ListFeedEventsRequest(
                partner_id=partner_id, page_size=MAX_PAGE_SIZE, after_position=after, since=timestamp(since)
            )
            page = await stub.ListFeedEvents(request, metadata=metadata, timeout=60)
            return [_shared(e) for e in page.events]

        return await run(destination, partner_id, pages)
