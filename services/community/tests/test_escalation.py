"""The escalation job with several replicas on one database: every question is escalated exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from community_testing import (
    ESCALATE_AFTER,
    MAKER,
    SERVICE,
    Clock,
    Community,
    EventLog,
    Market,
    ask,
    community_settings,
    create_community,
    join,
)
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from collabnet.community.v1 import community_pb2 as pb
from collabnet.community.v1 import events_pb2
from collabnet_community.app import create
from collabnet_kit.nats_server import NatsServer
from collabnet_kit.testing import running

QUESTIONS = 40


async def test_replicas_sharing_a_database_escalate_each_due_question_exactly_once(
    community: Community,
    market: Market,
    events: EventLog,
    clock: Clock,
    database_url: str,
    nats_server: NatsServer,
    tmp_path: Path,
    span_processor: SimpleSpanProcessor,
) -> None:
    acme = await create_community(community, "Acme owners")
    await join(community, acme.community_id, market.asker)
    asked = [await ask(community, acme.community_id, market.asker, title=f"Question {i}") for i in range(QUESTIONS)]
    # Two more replicas on the same database; batches are small in tests, so their claims interleave.
    replicas = [
        create(
            community_settings(database_url, nats_server.url, tmp_path / f"replica-{n}"),
            clock=clock,
            span_processor=span_processor,
            set_global_telemetry=False,
        )
        for n in range(2)
    ]
    async with running(replicas[0]), running(replicas[1]):
        clock.advance(seconds=ESCALATE_AFTER.total_seconds() + 1)
        escalated = await events.wait_for(events_pb2.QuestionEscalated, QUESTIONS)
        await asyncio.sleep(0.5)  # time for a second escalation of anything, were there one
    assert Counter(e.question_id for e in events.of(events_pb2.QuestionEscalated)) == Counter(
        q.question_id for q in asked
    )
    assert {e.maker_id for e in escalated} == {MAKER}
    listed = await community.ListEscalatedQuestions(
        pb.ListEscalatedQuestionsRequest(maker_id=MAKER, page_size=100), metadata=SERVICE
    )
    assert sorted(q.question_id for q in listed.questions) == sorted(q.question_id for q in asked)
