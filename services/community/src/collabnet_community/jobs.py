"""The periodic job: escalate questions left unanswered to the product's maker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from collabnet.community.v1 import events_pb2
from collabnet_community import store
from collabnet_kit.db import Database
from collabnet_kit.outbox import record

log = structlog.get_logger(__name__)
SOURCE = "community"


class Escalation:
    """Every ``poll_seconds``, marks questions unanswered for ``after`` as escalated to their
    product's maker and publishes QuestionEscalated for each, in batches. Safe on every replica:
    each question is claimed by exactly one transaction (see ``store.claim_due``)."""

    def __init__(
        self, db: Database, clock: Callable[[], datetime], after: timedelta, poll_seconds: float, batch_size: int
    ) -> None:
        self.db = db
        self.now = clock
        self.after = after
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size

    async def escalate_due(self) -> int:
        """Escalate one batch of due questions; returns how many."""
        at = self.now()
        async with self.db.transaction() as session:
            claimed = await store.claim_due(session, at - self.after, at, self.batch_size)
            for question in claimed:
                await record(
                    session,
                    events_pb2.QuestionEscalated(
                        question_id=question.id, product_id=question.product_id, maker_id=question.maker_id
                    ),
                    source=SOURCE,
                )
        if claimed:
            log.info("questions_escalated", count=len(claimed))
        return len(claimed)

    async def run(self) -> None:
        while True:
            try:
                while await self.escalate_due() == self.batch_size:
                    pass
            except Exception:
                log.exception("escalation_failed")
            await asyncio.sleep(self.poll_seconds)
