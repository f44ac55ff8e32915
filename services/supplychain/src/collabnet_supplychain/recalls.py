"""Issuing a recall: announcing it (RecallIssued) with the orders it affects.

A recall takes effect at once (RecallLot marks the lots in its own transaction, so they can no
longer be allocated, built into other lots or shipped), but it is announced only once identity has
said which customers consented to be contacted: identity is called outside any transaction, and
when it does not answer, the recall stays unissued and a periodic job tries again. Recalled lots
cannot gain orders, so the affected orders no longer change while it waits.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet.supplychain.v1 import events_pb2
from collabnet_kit.db import Database
from collabnet_kit.outbox import record
from collabnet_supplychain import domain, store
from collabnet_supplychain.convert import now
from collabnet_supplychain.parties import ContactData, IdentityUnavailable, Parties

log = structlog.get_logger(__name__)

SOURCE = "supplychain"
ATTEMPTS = 3
JOB_GRACE = timedelta(seconds=2)
"""How old an unissued recall must be before the job takes it: younger ones are the RPC's to issue."""
JOB_BATCH = 20


@dataclass(frozen=True)
class Affected:
    order_id: str
    customer_id: str
    retailer_id: str
    status: str


async def affected_orders(session: AsyncSession, lot_ids: list[str]) -> list[Affected]:
    """The orders holding any of the lots, except cancelled ones (which never received them)."""
    found: dict[str, Affected] = {}
    for _, order in await store.orders_of_lots(session, lot_ids):
        if order.status != domain.OrderStatus.CANCELLED.value:
            found[order.id] = Affected(order.id, order.customer_id, order.retailer_id, order.status)
    return sorted(found.values(), key=lambda a: a.order_id)


class Recalls:
    def __init__(self, db: Database, parties: Parties) -> None:
        self.db = db
        self.parties = parties

    async def _contacts(self, affected: list[Affected]) -> dict[tuple[str, str], ContactData | None]:
        """For each (customer, retailer): the customer's contact data where they consented to
        `contact:recall` with the retailer, else None."""
        pairs = {(a.customer_id, a.retailer_id) for a in affected}
        consents = await self.parties.consents(pairs, domain.RECALL_CONTACT_PURPOSE)
        consenting = sorted({customer for (customer, _), granted in consents.items() if granted})
        data = await asyncio.gather(*(self.parties.contact(customer) for customer in consenting))
        contact_of = dict(zip(consenting, data, strict=True))
        return {pair: contact_of[pair[0]] if granted else None for pair, granted in consents.items()}

    async def issue(self, recall_id: str) -> bool:
        """Record RecallIssued for a recall unless it was issued already; False when the affected orders
        kept changing under it. Raises ``IdentityUnavailable`` when identity does not answer."""
        for _ in range(ATTEMPTS):
            async with self.db.read() as session:
                row = await store.recall(session, recall_id)
                if row.issued_at is not None:
                    return True
                affected = await affected_orders(session, await store.recall_lot_ids(session, recall_id))
            contacts = await self._contacts(affected)
            async with self.db.transaction() as session:
                row = await store.recall(session, recall_id, lock=True)
                if row.issued_at is not None:
                    return True
                lot_ids = await store.recall_lot_ids(session, recall_id)
                current = await affected_orders(session, lot_ids)
                if any((a.customer_id, a.retailer_id) not in contacts for a in current):
                    continue  # an order we have not asked identity about: ask again
                event = events_pb2.RecallIssued(
                    recall_id=row.id, lot_ids=lot_ids, product_ids=row.product_ids, reason=row.reason
                )
                kept = []
                for a in current:
                    contact = contacts[(a.customer_id, a.retailer_id)]
                    notice = events_pb2.RecallIssued.AffectedOrder(
                        order_id=a.order_id, customer_id=a.customer_id, retailer_id=a.retailer_id
                    )
                    if contact is not None:
                        if contact.email is not None:
                            notice.email = contact.email
                        if contact.phone is not None:
                            notice.phone = contact.phone
                    event.affected_orders.append(notice)
                    kept.append(
                        {
                            "order_id": a.order_id,
                            "customer_id": a.customer_id,
                            "retailer_id": a.retailer_id,
                            "status": a.status,
                            "contact_consented": contact is not None,
                        }
                    )
                row.affected = kept
                row.issued_at = now()
                session.add(row)
                await record(session, event, source=SOURCE)
            log.info("recall_issued", recall_id=recall_id, lots=len(lot_ids), orders=len(kept))
            return True
        return False

    async def issue_pending(self) -> int:
        """Issue the recalls an earlier attempt left unissued; returns how many were issued."""
        async with self.db.read() as session:
            pending = await store.unissued_recalls(session, now() - JOB_GRACE, JOB_BATCH)
        issued = 0
        for recall_id in pending:
            try:
                issued += await self.issue(recall_id)
            except IdentityUnavailable as error:
                log.warning("recall_not_issued", recall_id=recall_id, error=str(error))
                break  # identity is away: the rest would fail the same way
        return issued

    async def job(self, every_seconds: float) -> None:
        while True:
            try:
                await self.issue_pending()
            except Exception:
                log.exception("recall_job_failed")
            await asyncio.sleep(every_seconds)
