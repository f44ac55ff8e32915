"""The AnalyticsService servicer: partners' feeds, read and exported, minimised at the time of reading."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
from google.protobuf import any_pb2

from collabnet.analytics.v1 import analytics_pb2 as pb
from collabnet.analytics.v1 import analytics_pb2_grpc
from collabnet_analytics import domain, events, export, store
from collabnet_kit import paging
from collabnet_kit.db import Database
from collabnet_kit.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from collabnet_kit.principal import current_principal
from collabnet_kit.timestamps import moment, timestamp

EXPORT_PAGE = 5000
"""Events read from the database per round of an export."""


class Feeds:
    """Reads a partner's feed from the database, minimised by the consents in force now."""

    def __init__(self, db: Database, pseudonym_key: bytes) -> None:
        self.db = db
        self.key = pseudonym_key

    async def page(
        self,
        partner_id: str,
        *,
        after: int,
        limit: int,
        event_types: Sequence[str] = (),
        since: datetime | None = None,
    ) -> list[domain.Shared]:
        async with self.db.read() as session:
            rows = await store.feed(session, partner_id, after=after, limit=limit, event_types=event_types, since=since)
            decoded = [(position, row, events.decode(row)) for position, row in rows]
            people = set().union(*(domain.persons(event) for _, _, event in decoded))
            disclosed = (await store.disclosed(session, [partner_id], people, datetime.now(UTC)))[partner_id]
        key = domain.partner_key(self.key, partner_id)
        return [
            domain.Shared(
                position=position,
                id=row.id,
                type=row.type,
                source=row.source,
                time=row.time,
                event=domain.minimise(event, key=key, partner_id=partner_id, disclosed=disclosed),
            )
            for position, row, event in decoded
        ]


_POSITION = re.compile(r"[0-9]{1,18}")


def _position(token: str) -> int | None:
    values = paging.decode_cursor(token, 1)
    if values is None:
        return None
    if not _POSITION.fullmatch(values[0]):
        raise InvalidArgument.field("page_token", "is not a token this service issued")
    return int(values[0])


def _feed_event(shared: domain.Shared) -> pb.FeedEvent:
    packed = any_pb2.Any()
    packed.Pack(shared.event)
    return pb.FeedEvent(
        position=shared.position,
        id=shared.id,
        type=shared.type,
        source=shared.source,
        time=timestamp(shared.time),
        event=packed,
    )


class AnalyticsApi(analytics_pb2_grpc.AnalyticsServiceServicer):
    def __init__(self, db: Database, pseudonym_key: bytes, export_root: Path) -> None:
        self.feeds = Feeds(db, pseudonym_key)
        self.export_root = PurePosixPath(export_root.resolve())

    async def ListFeedEvents(self, request: pb.ListFeedEventsRequest, context: Any) -> pb.ListFeedEventsResponse:
        principal = current_principal()
        if principal.service is not None:
            if not request.partner_id:
                raise InvalidArgument.field("partner_id", "name the partner whose feed to read")
            partner_id = request.partner_id
        else:
            partner_id = principal.partner_id or ""
            if request.partner_id and request.partner_id != partner_id:
                raise PermissionDenied("a partner reads only its own feed")
            if principal.party_id and principal.party_id != partner_id:
                raise PermissionDenied("the feed is the partner's own: it is not read acting for someone")
        size = domain.page_size(request.page_size)
        after = domain.start(_position(request.page_token), request.after_position)
        domain.validate_event_types(request.event_types, events.SHARED_TYPES)
        page = await self.feeds.page(
            partner_id, after=after, limit=size, event_types=list(request.event_types), since=moment(request, "since")
        )
        token = paging.encode_cursor(str(page[-1].position if page else after))
        return pb.ListFeedEventsResponse(events=[_feed_event(s) for s in page], next_page_token=token)

    async def ExportFeed(self, request: pb.ExportFeedRequest, context: Any) -> pb.ExportFeedResponse:
        principal = current_principal()
        if principal.service is None:
            raise PermissionDenied("exports are written by internal platforms: call as a service")
        if not request.partner_id:
            raise InvalidArgument.field("partner_id", "name the partner whose feed to export")
        if not request.destination:
            raise InvalidArgument.field("destination", "name a directory or a URI to write to")
        since = moment(request, "since")
        destination = domain.export_destination(self.export_root, request.destination)
        try:
            summary = await run_export(self.feeds, request.partner_id, destination, since=since)
        except (OSError, pa.ArrowException) as error:
            raise FailedPrecondition(f"destination: {destination} cannot be written: {error}"[:1000]) from error
        return pb.ExportFeedResponse(events=summary.events, files=summary.files, position=summary.position)


async def run_export(
    feeds: Feeds, partner_id: str, destination: str, *, since: datetime | None = None
) -> export.Summary:
    """Write the partner's feed after the destination's last position, one bounded page at a time."""

    async def pages(after: int) -> list[domain.Shared]:
        return await feeds.page(partner_id, after=after, limit=EXPORT_PAGE, since=since)

    return await export.run(destination, partner_id, pages)
