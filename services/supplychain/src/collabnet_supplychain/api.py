"""The SupplyChainService servicer: protos in, domain rules and store queries, protos out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet.supplychain.v1 import events_pb2, supplychain_pb2_grpc
from collabnet.supplychain.v1 import supplychain_pb2 as pb
from collabnet_kit import paging
from collabnet_kit.db import Database
from collabnet_kit.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Validator,
)
from collabnet_kit.outbox import record
from collabnet_kit.principal import Principal, current_principal
from collabnet_kit.timestamps import moment, timestamp
from collabnet_supplychain import convert, domain, store, trace
from collabnet_supplychain.convert import actor, new_id, now
from collabnet_supplychain.domain import Access, LegStatus, LotStatus, OrderStatus, ProposalStatus, require
from collabnet_supplychain.parties import IdentityUnavailable, Parties
from collabnet_supplychain.recalls import Recalls

log = structlog.get_logger(__name__)

SOURCE = "supplychain"


@dataclass
class OrderBundle:
    """An order with everything its message shows."""

    row: store.OrderRow
    lines: list[store.OrderLineRow]
    allocations: list[store.AllocationRow]
    shipment_id: str | None
    makers: frozenset[str]

    @property
    def parties(self) -> domain.OrderParties:
        return domain.OrderParties(self.row.retailer_id, self.row.customer_id, self.makers)


async def order_bundles(session: AsyncSession, rows: Sequence[store.OrderRow]) -> list[OrderBundle]:
    ids = [r.id for r in rows]
    lines = await store.order_lines(session, ids)
    allocations = await store.allocations(session, ids)
    shipments = await store.shipment_ids_of_orders(session, ids)
    return [
        OrderBundle(
            row,
            lines[row.id],
            allocations[row.id],
            shipments.get(row.id),
            frozenset(line.maker_id for line in lines[row.id]),
        )
        for row in rows
    ]


def lot_plan(items: Sequence[pb.CarriedLot]) -> tuple[domain.InputLot, ...]:
    return tuple(domain.InputLot(item.lot_id, item.quantity) for item in items)


class SupplyChainApi(supplychain_pb2_grpc.SupplyChainServiceServicer):
    def __init__(self, db: Database, parties: Parties, recalls: Recalls) -> None:
        self.db = db
        self.parties = parties
        self.recalls = recalls

    # --- products ----------------------------------------------------------------------------------

    async def RegisterProduct(self, request: pb.RegisterProductRequest, context: Any) -> pb.Product:
        principal = current_principal()
        maker_id = domain.own_party(principal, request.maker_id, "maker_id")
        kind = convert.PRODUCT_KIND_IN.get(request.kind)
        domain.validate_product(request.sku, request.name, request.category, kind, maker_id, request.attributes)
        assert kind is not None
        at = now()
        row = store.ProductRow(
            id=new_id(),
            sku=request.sku,
            name=request.name.strip(),
            category=request.category.strip(),
            kind=kind.value,
            maker_id=maker_id,
            attributes=dict(request.attributes),
            revision=1,
            created_at=at,
            updated_at=at,
        )
        try:
            async with self.db.transaction() as session:
                if await store.products_by_sku(session, [request.sku]):
                    raise AlreadyExists(f"sku: a product with SKU {request.sku} exists already")
                session.add(row)
                session.add(
                    store.RevisionRow(
                        product_id=row.id,
                        revision=1,
                        changes="first revision",
                        reason="registered",
                        created_by=actor(principal),
                        created_at=at,
                    )
                )
                await session.flush()
                await record(
                    session,
                    events_pb2.ProductRegistered(
                        product_id=row.id,
                        sku=row.sku,
                        name=row.name,
                        category=row.category,
                        maker_id=row.maker_id,
                        revision=1,
                        attributes=row.attributes,
                    ),
                    source=SOURCE,
                )
        except IntegrityError:
            raise AlreadyExists(f"sku: a product with SKU {request.sku} exists already") from None
        return convert.product(row)

    async def GetProduct(self, request: pb.GetProductRequest, context: Any) -> pb.Product:
        current_principal()
        product_id = require(request.product_id, "product_id")
        async with self.db.read() as session:
            row = await store.product(session, product_id)
        return convert.product(row)

    async def ListProducts(self, request: pb.ListProductsRequest, context: Any) -> pb.ListProductsResponse:
        current_principal()
        size = domain.page_size(request.page_size)
        after = paging.decode_cursor(request.page_token, 1)
        async with self.db.read() as session:
            rows = await store.list_products(
                session, request.maker_id, request.category, request.sku, after[0] if after else None, size + 1
            )
        page = rows[:size]
        token = paging.encode_cursor(page[-1].id) if len(rows) > size else ""
        return pb.ListProductsResponse(products=[convert.product(r) for r in page], next_page_token=token)

    async def ReviseProduct(self, request: pb.ReviseProductRequest, context: Any) -> pb.Product:
        principal = current_principal()
        product_id = require(request.product_id, "product_id")
        domain.validate_revision(request.changes, request.reason, request.initiative_id)
        async with self.db.transaction() as session:
            row = await store.product(session, product_id, lock=True)
            domain.require_service_or(principal, row.maker_id, "revising the product")
            await self._revise(
                session, principal, row, request.changes.strip(), request.reason.strip(), request.initiative_id, ""
            )
        return convert.product(row)

    async def _revise(
        self,
        session: AsyncSession,
        principal: Principal,
        row: store.ProductRow,
        changes: str,
        reason: str,
        initiative_id: str,
        proposal_id: str,
    ) -> None:
        at = now()
        row.revision += 1
        row.updated_at = at
        session.add(row)
        session.add(
            store.RevisionRow(
                product_id=row.id,
                revision=row.revision,
                changes=changes,
                reason=reason,
                initiative_id=initiative_id,
                proposal_id=proposal_id,
                created_by=actor(principal),
                created_at=at,
            )
        )
        await record(
            session,
            events_pb2.ProductRevised(
                product_id=row.id,
                maker_id=row.maker_id,
                revision=row.revision,
                changes=changes,
                reason=reason,
                initiative_id=initiative_id,
            ),
            source=SOURCE,
        )

    async def ListProductRevisions(
        self, request: pb.ListProductRevisionsRequest, context: Any
    ) -> pb.ListProductRevisionsResponse:
        current_principal()
        product_id = require(request.product_id, "product_id")
        async with self.db.read() as session:
            await store.product(session, product_id)
            rows = await store.revisions(session, product_id)
        return pb.ListProductRevisionsResponse(revisions=[convert.revision(r) for r in rows])

    async def ListRevisionProposals(
        self, request: pb.ListRevisionProposalsRequest, context: Any
    ) -> pb.ListRevisionProposalsResponse:
        principal = current_principal()
        size = domain.page_size(request.page_size)
        after = convert.time_cursor(request.page_token)
        status = convert.PROPOSAL_STATUS_IN.get(request.status) if request.status else None
        maker = None if principal.service is not None else principal.partner_id
        async with self.db.read() as session:
            rows = await store.list_proposals(
                session, request.product_id, maker, status.value if status else None, after, size + 1
            )
        page = rows[:size]
        token = paging.encode_cursor(page[-1].received_at.isoformat(), page[-1].id) if len(rows) > size else ""
        return pb.ListRevisionProposalsResponse(proposals=[convert.proposal(r) for r in page], next_page_token=token)

    async def ConfirmRevisionProposal(
        self, request: pb.ConfirmRevisionProposalRequest, context: Any
    ) -> pb.RevisionProposal:
        principal = current_principal()
        proposal_id = require(request.proposal_id, "proposal_id")
        if len(request.changes) > domain.MAX_LONG_TEXT:
            raise InvalidArgument.field("changes", f"must be at most {domain.MAX_LONG_TEXT} characters")
        async with self.db.transaction() as session:
            row = await store.proposal(session, proposal_id, lock=True)
            product = await store.product(session, row.product_id, lock=True)
            domain.require_service_or(principal, product.maker_id, "the revision proposal")
            domain.decide_proposal(ProposalStatus(row.status), "confirmed")
            changes = request.changes.strip() or row.changes
            await self._revise(session, principal, product, changes, row.reason, row.initiative_id, row.id)
            row.status = ProposalStatus.CONFIRMED.value
            row.revision = product.revision
            row.decided_by = actor(principal)
            row.decided_at = now()
            session.add(row)
        return convert.proposal(row)

    async def DeclineRevisionProposal(
        self, request: pb.DeclineRevisionProposalRequest, context: Any
    ) -> pb.RevisionProposal:
        principal = current_principal()
        proposal_id = require(request.proposal_id, "proposal_id")
        reason = require(request.reason, "reason")
        if len(reason) > domain.MAX_LONG_TEXT:
            raise InvalidArgument.field("reason", f"must be at most {domain.MAX_LONG_TEXT} characters")
        async with self.db.transaction() as session:
            row = await store.proposal(session, proposal_id, lock=True)
            product = await store.product(session, row.product_id)
            domain.require_service_or(principal, product.maker_id, "the revision proposal")
            domain.decide_proposal(ProposalStatus(row.status), "declined")
            row.status = ProposalStatus.DECLINED.value
            row.decline_reason = reason
            row.decided_by = actor(principal)
            row.decided_at = now()
            session.add(row)
        return convert.proposal(row)

    # --- structure ---------------------------------------------------------------------------------

    async def SetBillOfMaterials(self, request: pb.SetBillOfMaterialsRequest, context: Any) -> pb.BillOfMaterials:
        principal = current_principal()
        product_id = require(request.product_id, "product_id")
        items = [
            domain.BomLine(i.component_id, i.supplier_id, i.quantity, i.unit.strip() or "each") for i in request.items
        ]
        domain.validate_bom(product_id, items)
        at = now()
        async with self.db.transaction() as session:
            await store.lock_boms(session)
            product = await store.product(session, product_id, lock=True)
            domain.require_service_or(principal, product.maker_id, "the product's bill of materials")
            components = await store.products(session, {i.component_id for i in items})
            check = Validator()
            for index, item in enumerate(items):
                check.require(item.component_id in components, f"items[{index}].component_id", "unknown product")
            check.raise_if_any()
            reached_from = await trace.reaches(session, {i.component_id for i in items}, product_id)
            if reached_from is not None:
                component = trace.root_of(product_id, reached_from)
                index = next(n for n, i in enumerate(items) if i.component_id == component)
                raise domain.bom_cycle(index, domain.cycle_path(product_id, component, reached_from))
            await store.delete_rows(session, store.BomItemRow, col(store.BomItemRow.parent_id) == product_id)
            rows = [
                store.BomItemRow(
                    parent_id=product_id,
                    component_id=item.component_id,
                    supplier_id=item.supplier_id,
                    position=index,
                    quantity=item.quantity,
                    unit=item.unit,
                )
                for index, item in enumerate(items)
            ]
            session.add_all(rows)
            stamp = await session.get(store.BomStampRow, product_id)
            if stamp is None:
                session.add(store.BomStampRow(product_id=product_id, updated_at=at))
            else:
                stamp.updated_at = at
                session.add(stamp)
            await session.flush()
            # This product's network changed, and so did that of every product built from it.
            for affected in [product_id, *await trace.ancestors(session, product_id)]:
                await self._record_network(session, affected)
        return convert.bom(product_id, rows, components, at)

    async def _record_network(self, session: AsyncSession, product_id: str) -> None:
        product = await store.product(session, product_id)
        links = await trace.supply_links(session, product_id)
        seen: set[tuple[str, int, str]] = set()
        suppliers = []
        for link in links:
            key = (link.item.supplier_id, link.tier, link.item.component_id)
            if key not in seen:
                seen.add(key)
                suppliers.append(
                    events_pb2.SupplyNetworkChanged.Supplier(
                        supplier_id=link.item.supplier_id, tier=link.tier, item=link.item.component_id
                    )
                )
        await record(
            session,
            events_pb2.SupplyNetworkChanged(product_id=product_id, maker_id=product.maker_id, suppliers=suppliers),
            source=SOURCE,
        )

    async def GetBillOfMaterials(self, request: pb.GetBillOfMaterialsRequest, context: Any) -> pb.BillOfMaterials:
        current_principal()
        product_id = require(request.product_id, "product_id")
        async with self.db.read() as session:
            await store.product(session, product_id)
            items = await store.bom_items(session, [product_id])
            components = await store.products(session, {i.component_id for i in items})
            updated_at = await store.bom_updated_at(session, product_id)
        return convert.bom(product_id, items, components, updated_at)

    async def GetSupplyNetwork(self, request: pb.GetSupplyNetworkRequest, context: Any) -> pb.SupplyNetwork:
        current_principal()
        product_id = require(request.product_id, "product_id")
        async with self.db.read() as session:
            product = await store.product(session, product_id)
            links = await trace.supply_links(session, product_id)
            items = await store.products(session, {link.item.component_id for link in links})
            parents = await store.products(session, {link.parent_id for link in links})
            listings = await store.list_listings(session, product_id, "", False, None, domain.MAX_PAGE_SIZE)
        links.sort(key=lambda link: (link.tier, items[link.item.component_id].sku, link.item.supplier_id))
        return pb.SupplyNetwork(
            product_id=product.id,
            maker_id=product.maker_id,
            suppliers=[
                pb.SupplyLink(
                    supplier_id=link.item.supplier_id,
                    tier=link.tier,
                    component_id=link.item.component_id,
                    component_sku=items[link.item.component_id].sku,
                    component_name=items[link.item.component_id].name,
                    parent_id=link.parent_id,
                    customer_id=parents[link.parent_id].maker_id,
                    quantity=link.item.quantity,
                    unit=link.item.unit,
                )
                for link in links
            ],
            listings=[convert.listing(r) for r in listings],
        )

    # --- listings ----------------------------------------------------------------------------------

    async def CreateListing(self, request: pb.CreateListingRequest, context: Any) -> pb.Listing:
        principal = current_principal()
        retailer_id = domain.own_party(principal, request.retailer_id, "retailer_id")
        check = Validator()
        check.require(bool(request.product_id), "product_id", "is required")
        check.require(bool(retailer_id), "retailer_id", "is required when a service lists a product")
        check.require(request.HasField("price"), "price", "is required")
        if request.HasField("price"):
            domain.validate_price(check, request.price.currency_code, request.price.amount_minor, "price")
        check.raise_if_any()
        at = now()
        try:
            async with self.db.transaction() as session:
                await store.product(session, request.product_id)
                row = await store.listing_of(session, request.product_id, retailer_id)
                if row is not None and row.delisted_at is None:
                    raise AlreadyExists(f"retailer {retailer_id} lists product {request.product_id} already ({row.id})")
                if row is None:
                    row = store.ListingRow(
                        id=new_id(),
                        product_id=request.product_id,
                        retailer_id=retailer_id,
                        currency=request.price.currency_code,
                        price_minor=request.price.amount_minor,
                        listed_at=at,
                        updated_at=at,
                    )
                row.currency = request.price.currency_code
                row.price_minor = request.price.amount_minor
                row.available = request.available
                row.listed_at = at
                row.updated_at = at
                row.delisted_at = None
                session.add(row)
                await session.flush()
                await self._record_listed(session, row)
        except IntegrityError:
            raise AlreadyExists(f"retailer {retailer_id} lists product {request.product_id} already") from None
        return convert.listing(row)

    async def _record_listed(self, session: AsyncSession, row: store.ListingRow) -> None:
        await record(
            session,
            events_pb2.ProductListed(
                listing_id=row.id,
                product_id=row.product_id,
                retailer_id=row.retailer_id,
                price=convert.money(row.currency, row.price_minor),
                available=row.available,
            ),
            source=SOURCE,
        )

    async def UpdateListing(self, request: pb.UpdateListingRequest, context: Any) -> pb.Listing:
        principal = current_principal()
        listing_id = require(request.listing_id, "listing_id")
        check = Validator()
        check.require(
            request.HasField("price") or request.HasField("available"), "price", "give a price or availability"
        )
        if request.HasField("price"):
            domain.validate_price(check, request.price.currency_code, request.price.amount_minor, "price")
        check.raise_if_any()
        async with self.db.transaction() as session:
            row = await store.listing(session, listing_id, lock=True)
            domain.require_service_or(principal, row.retailer_id, "the listing")
            if row.delisted_at is not None:
                raise FailedPrecondition(f"listing_id: listing {row.id} was delisted; list the product again")
            if request.HasField("price"):
                row.currency = request.price.currency_code
                row.price_minor = request.price.amount_minor
            if request.HasField("available"):
                row.available = request.available
            row.updated_at = now()
            session.add(row)
            await self._record_listed(session, row)
        return convert.listing(row)

    async def DelistProduct(self, request: pb.DelistProductRequest, context: Any) -> pb.Listing:
        principal = current_principal()
        listing_id = require(request.listing_id, "listing_id")
        async with self.db.transaction() as session:
            row = await store.listing(session, listing_id, lock=True)
            domain.require_service_or(principal, row.retailer_id, "the listing")
            if row.delisted_at is not None:
                raise FailedPrecondition(f"listing_id: listing {row.id} was delisted already")
            row.delisted_at = row.updated_at = now()
            session.add(row)
            await record(
                session,
                events_pb2.ProductDelisted(listing_id=row.id, product_id=row.product_id, retailer_id=row.retailer_id),
                source=SOURCE,
            )
        return convert.listing(row)

    async def ListListings(self, request: pb.ListListingsRequest, context: Any) -> pb.ListListingsResponse:
        current_principal()
        size = domain.page_size(request.page_size)
        after = paging.decode_cursor(request.page_token, 1)
        async with self.db.read() as session:
            rows = await store.list_listings(
                session,
                request.product_id,
                request.retailer_id,
                request.include_delisted,
                after[0] if after else None,
                size + 1,
            )
        page = rows[:size]
        token = paging.encode_cursor(page[-1].id) if len(rows) > size else ""
        return pb.ListListingsResponse(listings=[convert.listing(r) for r in page], next_page_token=token)

    # --- orders ------------------------------------------------------------------------------------

    async def PlaceOrder(self, request: pb.PlaceOrderRequest, context: Any) -> pb.Order:
        principal = current_principal()
        lines = [domain.RequestedLine(line.sku.strip(), line.quantity) for line in request.lines]
        contact = convert.contact_in(request.contact, request.HasField("contact"))
        key = request.idempotency_key
        domain.validate_order(request.customer_id, request.retailer_id, lines, request.currency_code, contact, key)
        domain.may_order_for(principal, request.customer_id)
        fingerprint = domain.order_fingerprint(request.retailer_id, lines, request.currency_code, contact)
        if key:
            replayed = await self._replay(principal, request.customer_id, key, fingerprint)
            if replayed is not None:
                return replayed
        try:
            order_id = await self._place(request, lines, contact, fingerprint)
        except IntegrityError:
            if not key:
                raise
            # A concurrent call with the same key committed first (PostgreSQL): return what it placed.
            order_id = None
        if order_id is None:
            replayed = await self._replay(principal, request.customer_id, key, fingerprint)
            assert replayed is not None, "an order holds the key, or the insert would not have failed"
            return replayed
        return await self._order_message(principal, order_id)

    async def _replay(self, principal: Principal, customer_id: str, key: str, fingerprint: str) -> pb.Order | None:
        async with self.db.read() as session:
            row = await store.order_by_key(session, customer_id, key)
        if row is None:
            return None
        if row.fingerprint != fingerprint:
            raise InvalidArgument.field("idempotency_key", f"was used for a different order ({row.id})")
        return await self._order_message(principal, row.id)

    async def _place(
        self,
        request: pb.PlaceOrderRequest,
        lines: list[domain.RequestedLine],
        contact: domain.Contact | None,
        fingerprint: str,
    ) -> str | None:
        """Place the order and return its id; None when an order with the same key exists already."""
        key = request.idempotency_key or None
        async with self.db.transaction() as session:
            # A twin that committed since the first look (SQLite's writers queue, so they get here).
            if key is not None and await store.order_by_key(session, request.customer_id, key) is not None:
                return None
            products = await store.products_by_sku(session, [line.sku for line in lines])
            listings = await store.listings_for(session, [p.id for p in products.values()], request.retailer_id)
            offers: dict[str, domain.Offer | None] = {}
            for line in lines:
                product = products.get(line.sku)
                if product is None:
                    offers[line.sku] = None
                    continue
                listing = listings.get(product.id)
                offers[line.sku] = domain.Offer(
                    product_id=product.id,
                    revision=product.revision,
                    maker_id=product.maker_id,
                    listed=listing is not None and listing.delisted_at is None,
                    available=listing is not None and listing.available,
                    price=domain.Money(listing.currency, listing.price_minor) if listing is not None else None,
                )
            priced, amount = domain.price_order(lines, offers, request.retailer_id, request.currency_code)
            at = now()
            row = store.OrderRow(
                id=new_id(),
                customer_id=request.customer_id,
                retailer_id=request.retailer_id,
                status=OrderStatus.PLACED.value,
                currency=amount.currency,
                total_minor=amount.minor,
                idempotency_key=key,
                fingerprint=fingerprint,
                contact=contact.as_json() if contact else {},
                placed_at=at,
                updated_at=at,
            )
            session.add(row)
            await session.flush()  # a concurrent twin waits here, then fails on the key
            session.add_all(
                store.OrderLineRow(
                    order_id=row.id,
                    line_number=line.number,
                    product_id=line.product_id,
                    sku=line.sku,
                    revision=line.revision,
                    maker_id=line.maker_id,
                    quantity=line.quantity,
                    unit_price_minor=line.unit_price.minor,
                )
                for line in priced
            )
            await record(
                session,
                events_pb2.OrderPlaced(
                    order_id=row.id,
                    customer_id=row.customer_id,
                    retailer_id=row.retailer_id,
                    lines=[
                        events_pb2.OrderLine(
                            product_id=line.product_id,
                            revision=line.revision,
                            quantity=line.quantity,
                            unit_price=convert.money(line.unit_price.currency, line.unit_price.minor),
                        )
                        for line in priced
                    ],
                    total=convert.money(amount.currency, amount.minor),
                    place_time=timestamp(at),
                ),
                source=SOURCE,
            )
        return row.id

    async def _maker_contacts(self, bundles: Sequence[OrderBundle]) -> set[str]:
        """The orders among ``bundles`` whose customer consented to share contact data with makers."""
        pairs = {(b.row.customer_id, b.row.retailer_id): b.row.id for b in bundles}
        if not pairs:
            return set()
        try:
            consents = await self.parties.consents(list(pairs), domain.MAKER_CONTACT_PURPOSE)
        except IdentityUnavailable as error:
            # Without an answer, the contact data stays hidden: the safe side of consent.
            log.warning("consent_unknown", error=str(error), orders=len(bundles))
            return set()
        return {b.row.id for b in bundles if consents.get((b.row.customer_id, b.row.retailer_id))}

    async def _messages(self, principal: Principal, bundles: Sequence[OrderBundle]) -> list[pb.Order]:
        access = {b.row.id: domain.order_access(principal, b.parties) for b in bundles}
        consented = await self._maker_contacts([b for b in bundles if access[b.row.id] is Access.MAKER])
        return [
            convert.order(
                b.row,
                b.lines,
                b.allocations,
                b.shipment_id,
                contact=access[b.row.id] is Access.FULL or b.row.id in consented,
            )
            for b in bundles
        ]

    async def _order_message(self, principal: Principal, order_id: str) -> pb.Order:
        async with self.db.read() as session:
            (bundle,) = await order_bundles(session, [await store.order(session, order_id)])
        if domain.order_access(principal, bundle.parties) is Access.NONE:
            raise NotFound(f"order {order_id} not found")
        (message,) = await self._messages(principal, [bundle])
        return message

    async def _visible_order(
        self, session: AsyncSession, principal: Principal, order_id: str, *, lock: bool = False
    ) -> OrderBundle:
        row = await store.order(session, order_id, lock=lock)
        (bundle,) = await order_bundles(session, [row])
        if domain.order_access(principal, bundle.parties) is Access.NONE:
            raise NotFound(f"order {order_id} not found")
        return bundle

    async def GetOrder(self, request: pb.GetOrderRequest, context: Any) -> pb.Order:
        principal = current_principal()
        return await self._order_message(principal, require(request.order_id, "order_id"))

    async def ListOrders(self, request: pb.ListOrdersRequest, context: Any) -> pb.ListOrdersResponse:
        principal = current_principal()
        size = domain.page_size(request.page_size)
        after = convert.time_cursor(request.page_token)
        status = convert.ORDER_STATUS_IN.get(request.status) if request.status else None
        async with self.db.read() as session:
            visible = (
                None
                if principal.service is not None
                else store.visible_orders(session, domain.acting_parties(principal), principal.partner_id)
            )
            rows = await store.list_orders(
                session,
                visible=visible,
                customer_id=request.customer_id,
                retailer_id=request.retailer_id,
                product_id=request.product_id,
                status=status.value if status else None,
                after=after,
                limit=size + 1,
            )
            bundles = await order_bundles(session, rows[:size])
        token = ""
        if len(rows) > size:
            token = paging.encode_cursor(bundles[-1].row.placed_at.isoformat(), bundles[-1].row.id)
        return pb.ListOrdersResponse(orders=await self._messages(principal, bundles), next_page_token=token)

    async def ConfirmOrder(self, request: pb.ConfirmOrderRequest, context: Any) -> pb.Order:
        principal = current_principal()
        order_id = require(request.order_id, "order_id")
        async with self.db.transaction() as session:
            bundle = await self._visible_order(session, principal, order_id, lock=True)
            domain.require_service_or(principal, bundle.row.retailer_id, "confirming the order")
            domain.order_transition(OrderStatus(bundle.row.status), OrderStatus.CONFIRMED)
            bundle.row.status = OrderStatus.CONFIRMED.value
            bundle.row.confirmed_at = bundle.row.updated_at = now()
            session.add(bundle.row)
        return await self._order_message(principal, order_id)

    async def CancelOrder(self, request: pb.CancelOrderRequest, context: Any) -> pb.Order:
        principal = current_principal()
        order_id = require(request.order_id, "order_id")
        reason = request.reason.strip()
        if len(reason) > 500:
            raise InvalidArgument.field("reason", "must be at most 500 characters")
        async with self.db.transaction() as session:
            bundle = await self._visible_order(session, principal, order_id, lock=True)
            domain.may_cancel(principal, bundle.parties)
            domain.order_transition(OrderStatus(bundle.row.status), OrderStatus.CANCELLED)
            # What was reserved for the order is free again.
            held = await store.lots(session, {a.lot_id for a in bundle.allocations}, lock=True)
            for allocation in bundle.allocations:
                held[allocation.lot_id].used -= allocation.quantity
                session.add(held[allocation.lot_id])
            await store.delete_rows(session, store.AllocationRow, col(store.AllocationRow.order_id) == order_id)
            row = bundle.row
            row.status = OrderStatus.CANCELLED.value
            row.cancelled_at = row.updated_at = now()
            row.cancel_reason = reason
            session.add(row)
            await record(
                session,
                events_pb2.OrderCancelled(
                    order_id=row.id, customer_id=row.customer_id, retailer_id=row.retailer_id, reason=reason
                ),
                source=SOURCE,
            )
        return await self._order_message(principal, order_id)

    async def AllocateLot(self, request: pb.AllocateLotRequest, context: Any) -> pb.Order:
        principal = current_principal()
        order_id = require(request.order_id, "order_id")
        lot_id = require(request.lot_id, "lot_id")
        check = Validator()
        check.require(request.line_number > 0, "line_number", "must be positive")
        check.require(domain.quantity_ok(request.quantity), "quantity", "must be positive")
        check.raise_if_any()
        async with self.db.transaction() as session:
            bundle = await self._visible_order(session, principal, order_id, lock=True)
            line = next((x for x in bundle.lines if x.line_number == request.line_number), None)
            if line is None:
                raise InvalidArgument.field("line_number", f"the order has lines 1 to {len(bundle.lines)}")
            if principal.service is None and bundle.row.retailer_id not in domain.acting_parties(principal):
                domain.require_service_or(principal, line.maker_id, "allocating lots to the order")
            domain.allocatable(OrderStatus(bundle.row.status))
            lot = await store.lot(session, lot_id, lock=True)
            if lot.product_id != line.product_id:
                raise InvalidArgument.field(
                    "lot_id", f"lot {lot.id} is of another product than line {line.line_number}"
                )
            domain.lot_usable(LotStatus(lot.status), "lot_id", lot.id, "allocated")
            allocated = sum(a.quantity for a in bundle.allocations if a.line_number == line.line_number)
            if allocated + request.quantity > line.quantity:
                raise FailedPrecondition(
                    f"quantity: line {line.line_number} needs {line.quantity - allocated} more, not {request.quantity}"
                )
            domain.enough_left(lot.quantity - lot.used, request.quantity, "quantity", lot.id)
            existing = next(
                (a for a in bundle.allocations if a.line_number == line.line_number and a.lot_id == lot.id), None
            )
            if existing is None:
                session.add(
                    store.AllocationRow(
                        order_id=order_id, line_number=line.line_number, lot_id=lot.id, quantity=request.quantity
                    )
                )
            else:
                existing.quantity += request.quantity
                session.add(existing)
            lot.used += request.quantity
            lot.updated_at = now()
            session.add(lot)
        return await self._order_message(principal, order_id)

    # --- lots --------------------------------------------------------------------------------------

    async def CreateLot(self, request: pb.CreateLotRequest, context: Any) -> pb.Lot:
        principal = current_principal()
        product_id = require(request.product_id, "product_id")
        producer_id = domain.own_party(principal, request.producer_id, "producer_id")
        inputs = [domain.InputLot(i.lot_id, i.quantity) for i in request.inputs]
        status = convert.LOT_STATUS_IN.get(request.status, LotStatus.RELEASED)
        domain.validate_lot(request.code, producer_id, request.quantity, inputs, status)
        at = now()
        produced_at = moment(request, "produce_time") or at
        domain.no_later_than_now(produced_at, at, "produce_time")
        try:
            async with self.db.transaction() as session:
                product = await store.product(session, product_id)
                if principal.service is None and product.maker_id != producer_id:
                    raise PermissionDenied(f"product {product.id} is made by {product.maker_id}, not {producer_id}")
                revision = request.revision or product.revision
                if not 1 <= revision <= product.revision:
                    raise InvalidArgument.field("revision", f"the product has revisions 1 to {product.revision}")
                used = await store.lots(session, {i.lot_id for i in inputs}, lock=True)
                components = {item.component_id for item in await store.bom_items(session, [product_id])}
                check = Validator()
                for index, given in enumerate(inputs):
                    found = used.get(given.lot_id)
                    if found is None:
                        check.require(False, f"inputs[{index}].lot_id", "unknown lot")
                    elif found.product_id not in components:
                        check.require(
                            False,
                            f"inputs[{index}].lot_id",
                            f"lot {found.id} is of product {found.product_id}, which is not in the bill of "
                            f"materials of {product_id}",
                        )
                check.raise_if_any()
                for index, given in enumerate(inputs):
                    source = used[given.lot_id]
                    field_name = f"inputs[{index}].lot_id"
                    domain.lot_usable(LotStatus(source.status), field_name, source.id, "built into another lot")
                    domain.enough_left(source.quantity - source.used, given.quantity, field_name, source.id)
                if await store.lot_by_code(session, product_id, request.code) is not None:
                    raise AlreadyExists(f"code: product {product_id} has a lot {request.code} already")
                row = store.LotRow(
                    id=new_id(),
                    code=request.code,
                    product_id=product_id,
                    revision=revision,
                    producer_id=producer_id,
                    quantity=request.quantity,
                    status=status.value,
                    produced_at=produced_at,
                    created_at=at,
                    updated_at=at,
                )
                session.add(row)
                await session.flush()
                links = [
                    store.LotInputRow(lot_id=row.id, input_lot_id=given.lot_id, quantity=given.quantity)
                    for given in inputs
                ]
                session.add_all(links)
                for given in inputs:
                    used[given.lot_id].used += given.quantity
                    used[given.lot_id].updated_at = at
                    session.add(used[given.lot_id])
        except IntegrityError:
            raise AlreadyExists(f"code: product {product_id} has a lot {request.code} already") from None
        return convert.lot(row, links)

    async def _visible_lot(self, session: AsyncSession, principal: Principal, lot_id: str) -> store.LotRow:
        row = await store.lot(session, lot_id)
        if principal.service is None and not domain.acting_parties(principal) & await store.lot_parties(
            session, lot_id
        ):
            raise NotFound(f"lot {lot_id} not found")
        return row

    async def GetLot(self, request: pb.GetLotRequest, context: Any) -> pb.Lot:
        principal = current_principal()
        lot_id = require(request.lot_id, "lot_id")
        async with self.db.read() as session:
            row = await self._visible_lot(session, principal, lot_id)
            inputs = await store.lot_inputs(session, [lot_id])
        return convert.lot(row, inputs[lot_id])

    async def ListLots(self, request: pb.ListLotsRequest, context: Any) -> pb.ListLotsResponse:
        principal = current_principal()
        size = domain.page_size(request.page_size)
        after = paging.decode_cursor(request.page_token, 1)
        status = convert.LOT_STATUS_IN.get(request.status) if request.status else None
        async with self.db.read() as session:
            rows = await store.list_lots(
                session,
                request.product_id,
                request.producer_id,
                status.value if status else None,
                None if principal.service is not None else principal.partner_id,
                after[0] if after else None,
                size + 1,
            )
            page = rows[:size]
            inputs = await store.lot_inputs(session, [r.id for r in page])
        token = paging.encode_cursor(page[-1].id) if len(rows) > size else ""
        return pb.ListLotsResponse(lots=[convert.lot(r, inputs[r.id]) for r in page], next_page_token=token)

    async def UpdateLotStatus(self, request: pb.UpdateLotStatusRequest, context: Any) -> pb.Lot:
        principal = current_principal()
        lot_id = require(request.lot_id, "lot_id")
        if len(request.reason) > 500:
            raise InvalidArgument.field("reason", "must be at most 500 characters")
        target = domain.lot_status_target(convert.LOT_STATUS_IN.get(request.status))
        async with self.db.transaction() as session:
            row = await store.lot(session, lot_id, lock=True)
            product = await store.product(session, row.product_id)
            if principal.service is None and not domain.acting_parties(principal) & {row.producer_id, product.maker_id}:
                if not domain.acting_parties(principal) & await store.lot_parties(session, lot_id):
                    raise NotFound(f"lot {lot_id} not found")
                raise PermissionDenied("only the lot's producer or the product's maker may change its status")
            domain.lot_status_change(LotStatus(row.status), target)
            row.status = target.value
            row.status_reason = request.reason.strip()
            row.updated_at = now()
            session.add(row)
            inputs = await store.lot_inputs(session, [lot_id])
        return convert.lot(row, inputs[lot_id])

    # --- shipments ---------------------------------------------------------------------------------

    async def CreateShipment(self, request: pb.CreateShipmentRequest, context: Any) -> pb.Shipment:
        principal = current_principal()
        given = request.shipment
        plans = [
            domain.LegPlan(
                convert.LEG_KIND_IN.get(leg.kind),
                leg.from_party_id,
                leg.to_party_id,
                leg.carrier_id,
                lot_plan(leg.lots),
            )
            for leg in given.legs
        ]
        at = now()
        try:
            async with self.db.transaction() as session:
                bundle = None
                if given.order_id:
                    bundle = await self._visible_order(session, principal, given.order_id, lock=True)
                    facts = domain.OrderFacts(
                        bundle.row.customer_id, bundle.row.retailer_id, OrderStatus(bundle.row.status)
                    )
                    domain.validate_legs(plans, facts)
                else:
                    domain.validate_legs(plans, None)
                senders = {plan.from_party for plan in plans}
                if bundle is not None:
                    senders.add(bundle.row.retailer_id)
                if principal.service is None and not domain.acting_parties(principal) & senders:
                    raise PermissionDenied("a shipment is created by a party that sends one of its legs")
                if bundle is not None:
                    plans = self._order_lots(bundle, plans)
                lots = await store.lots(session, {lot.lot_id for plan in plans for lot in plan.lots})
                for index, plan in enumerate(plans):
                    for lot_index, carried in enumerate(plan.lots):
                        field_name = f"shipment.legs[{index}].lots[{lot_index}]"
                        found = lots.get(carried.lot_id)
                        if found is None:
                            raise InvalidArgument.field(f"{field_name}.lot_id", "unknown lot")
                        domain.lot_usable(LotStatus(found.status), f"{field_name}.lot_id", found.id, "shipped")
                        if carried.quantity > found.quantity:
                            raise InvalidArgument.field(
                                f"{field_name}.quantity", f"lot {found.id} holds only {found.quantity}"
                            )
                if bundle is not None and bundle.shipment_id is not None:
                    raise AlreadyExists(f"shipment.order_id: order {bundle.row.id} ships in {bundle.shipment_id}")
                row = store.ShipmentRow(
                    id=new_id(), order_id=given.order_id or None, created_by=actor(principal), created_at=at
                )
                session.add(row)
                await session.flush()
                for index, plan in enumerate(plans):
                    assert plan.kind is not None
                    leg = store.LegRow(
                        id=new_id(),
                        shipment_id=row.id,
                        sequence=index + 1,
                        kind=plan.kind.value,
                        from_party=plan.from_party,
                        to_party=plan.to_party,
                        carrier_id=plan.carrier_id,
                        status=LegStatus.CREATED.value,
                        expected_at=moment(given.legs[index], "expected_time"),
                        updated_at=at,
                    )
                    session.add(leg)
                    await session.flush()
                    session.add_all(
                        store.LegLotRow(leg_id=leg.id, lot_id=c.lot_id, quantity=c.quantity) for c in plan.lots
                    )
                    session.add(
                        store.LegEventRow(
                            leg_id=leg.id,
                            seq=1,
                            status=LegStatus.CREATED.value,
                            at=at,
                            expected_at=leg.expected_at,
                            recorded_by=actor(principal),
                        )
                    )
        except IntegrityError:
            raise AlreadyExists(f"shipment.order_id: order {given.order_id} has a shipment already") from None
        return await self._shipment_message(row.id)

    @staticmethod
    def _order_lots(bundle: OrderBundle, plans: list[domain.LegPlan]) -> list[domain.LegPlan]:
        """An order's legs carry the order's lots: all of them when a leg names none, else some."""
        for line in bundle.lines:
            allocated = sum(a.quantity for a in bundle.allocations if a.line_number == line.line_number)
            if allocated < line.quantity:
                raise FailedPrecondition(
                    f"shipment.order_id: line {line.line_number} has {allocated} of {line.quantity} allocated to lots"
                )
        held: dict[str, int] = {}
        for allocation in bundle.allocations:
            held[allocation.lot_id] = held.get(allocation.lot_id, 0) + allocation.quantity
        filled = []
        for index, plan in enumerate(plans):
            for lot_index, carried in enumerate(plan.lots):
                if carried.quantity > held.get(carried.lot_id, 0):
                    raise InvalidArgument.field(
                        f"shipment.legs[{index}].lots[{lot_index}].lot_id",
                        f"the order holds {held.get(carried.lot_id, 0)} of lot {carried.lot_id}",
                    )
            lots = plan.lots or tuple(domain.InputLot(lot_id, quantity) for lot_id, quantity in sorted(held.items()))
            filled.append(domain.LegPlan(plan.kind, plan.from_party, plan.to_party, plan.carrier_id, lots))
        return filled

    async def _shipment_message(self, shipment_id: str) -> pb.Shipment:
        async with self.db.read() as session:
            return await self._shipment_in(session, await store.shipment(session, shipment_id))

    async def _shipment_in(self, session: AsyncSession, row: store.ShipmentRow) -> pb.Shipment:
        legs = (await store.legs_of(session, [row.id]))[row.id]
        ids = [leg.id for leg in legs]
        return convert.shipment(row, legs, await store.leg_lots(session, ids), await store.leg_events(session, ids))

    async def _shipment_parties(self, session: AsyncSession, row: store.ShipmentRow) -> set[str]:
        legs = (await store.legs_of(session, [row.id]))[row.id]
        parties = {p for leg in legs for p in (leg.from_party, leg.to_party, leg.carrier_id)}
        if row.order_id:
            order = await store.order(session, row.order_id)
            parties |= {order.retailer_id, order.customer_id}
        return parties

    async def GetShipment(self, request: pb.GetShipmentRequest, context: Any) -> pb.Shipment:
        principal = current_principal()
        shipment_id = require(request.shipment_id, "shipment_id")
        async with self.db.read() as session:
            row = await store.shipment(session, shipment_id)
            if principal.service is None and not domain.acting_parties(principal) & await self._shipment_parties(
                session, row
            ):
                raise NotFound(f"shipment {shipment_id} not found")
            return await self._shipment_in(session, row)

    async def ListShipments(self, request: pb.ListShipmentsRequest, context: Any) -> pb.ListShipmentsResponse:
        principal = current_principal()
        size = domain.page_size(request.page_size)
        after = paging.decode_cursor(request.page_token, 1)
        parties = None if principal.service is not None else domain.acting_parties(principal)
        async with self.db.read() as session:
            rows = await store.list_shipments(
                session, request.order_id, request.lot_id, parties, after[0] if after else None, size + 1
            )
            page = rows[:size]
            shipments = [await self._shipment_in(session, r) for r in page]
        token = paging.encode_cursor(page[-1].id) if len(rows) > size else ""
        return pb.ListShipmentsResponse(shipments=shipments, next_page_token=token)

    async def RecordLegEvent(self, request: pb.RecordLegEventRequest, context: Any) -> pb.Shipment:
        principal = current_principal()
        leg_id = require(request.leg_id, "leg_id")
        target = domain.leg_status_target(convert.LEG_STATUS_IN.get(request.status))
        if len(request.note) > 500:
            raise InvalidArgument.field("note", "must be at most 500 characters")
        at = now()
        event_time = moment(request, "event_time") or at
        domain.no_later_than_now(event_time, at, "event_time")
        expected = moment(request, "expected_time")
        if target is LegStatus.DELAYED and expected is None:
            raise InvalidArgument.field("expected_time", "is required for a delay: when is the leg now expected")
        async with self.db.transaction() as session:
            leg = await store.leg(session, leg_id, lock=True)
            shipment = await store.shipment(session, leg.shipment_id)
            bundle = None
            if shipment.order_id:
                (bundle,) = await order_bundles(session, [await store.order(session, shipment.order_id, lock=True)])
            allowed = {leg.from_party, leg.to_party, leg.carrier_id}
            if bundle is not None:
                allowed.add(bundle.row.retailer_id)
            if principal.service is None and not domain.acting_parties(principal) & allowed:
                if not domain.acting_parties(principal) & await self._shipment_parties(session, shipment):
                    raise NotFound(f"shipment leg {leg_id} not found")
                raise PermissionDenied("a leg's events are recorded by its carrier, sender or receiver")
            domain.leg_transition(LegStatus(leg.status), leg.picked_up_at is not None, target)
            events = (await store.leg_events(session, [leg.id]))[leg.id]
            if events and event_time < events[-1].at:
                raise InvalidArgument.field("event_time", f"must not be before the leg's last event ({events[-1].at})")
            legs = (await store.legs_of(session, [shipment.id]))[shipment.id]
            if target is LegStatus.PICKED_UP:
                await self._check_pickup(session, leg, legs, bundle)
            leg.status = target.value
            leg.updated_at = at
            if expected is not None:
                leg.expected_at = expected
            if target is LegStatus.PICKED_UP:
                leg.picked_up_at = event_time
            session.add(
                store.LegEventRow(
                    leg_id=leg.id,
                    seq=store.sequence_of(events),
                    status=target.value,
                    at=event_time,
                    note=request.note.strip(),
                    expected_at=expected,
                    recorded_by=actor(principal),
                )
            )
            if target is LegStatus.DELAYED:
                await record(
                    session,
                    events_pb2.ShipmentDelayed(
                        shipment_id=shipment.id,
                        leg_id=leg.id,
                        order_id=shipment.order_id or "",
                        carrier_id=leg.carrier_id,
                        reason=request.note.strip(),
                        expected_time=timestamp(expected),
                    ),
                    source=SOURCE,
                )
            if target is LegStatus.DELIVERED:
                leg.delivered_at = event_time
                if bundle is not None and leg.sequence == legs[-1].sequence:
                    await self._delivered(session, bundle, event_time)
            session.add(leg)
        return await self._shipment_message(shipment.id)

    async def _check_pickup(
        self, session: AsyncSession, leg: store.LegRow, legs: list[store.LegRow], bundle: OrderBundle | None
    ) -> None:
        """A leg leaves only after the one before it arrived, with nothing but released lots, and
        (for an order) while the order is still wanted; the order's first pickup ships it."""
        before = [x for x in legs if x.sequence == leg.sequence - 1]
        if before and before[0].status != LegStatus.DELIVERED.value:
            raise FailedPrecondition(f"status: leg {before[0].sequence} of the shipment has not been delivered yet")
        carried = (await store.leg_lots(session, [leg.id]))[leg.id]
        lots = await store.lots(session, {c.lot_id for c in carried})
        for lot_id in sorted(lots):
            domain.lot_usable(LotStatus(lots[lot_id].status), "leg_id", lot_id, "shipped")
        if bundle is not None:
            status = OrderStatus(bundle.row.status)
            if status is OrderStatus.CANCELLED:
                raise FailedPrecondition(f"status: order {bundle.row.id} was cancelled; its shipment does not leave")
            if status is OrderStatus.CONFIRMED:
                domain.order_transition(status, OrderStatus.SHIPPED)
                bundle.row.status = OrderStatus.SHIPPED.value
                bundle.row.shipped_at = bundle.row.updated_at = now()
                session.add(bundle.row)

    async def _delivered(self, session: AsyncSession, bundle: OrderBundle, at: datetime) -> None:
        row = bundle.row
        domain.order_transition(OrderStatus(row.status), OrderStatus.DELIVERED)
        row.status = OrderStatus.DELIVERED.value
        row.delivered_at = at
        row.updated_at = now()
        session.add(row)
        await record(
            session,
            events_pb2.OrderDelivered(
                order_id=row.id,
                customer_id=row.customer_id,
                retailer_id=row.retailer_id,
                lines=[
                    events_pb2.OrderLine(
                        product_id=line.product_id,
                        revision=line.revision,
                        quantity=line.quantity,
                        unit_price=convert.money(row.currency, line.unit_price_minor),
                    )
                    for line in bundle.lines
                ],
                deliver_time=timestamp(at),
            ),
            source=SOURCE,
        )

    # --- traceability ------------------------------------------------------------------------------

    @staticmethod
    def _limits(max_depth: int, max_nodes: int) -> tuple[int, int]:
        return (
            domain.bounded(max_depth, "max_depth", domain.TRACE_DEFAULT_DEPTH, 1, domain.TRACE_MAX_DEPTH),
            domain.bounded(max_nodes, "max_nodes", domain.TRACE_DEFAULT_NODES, 1, domain.TRACE_MAX_NODES),
        )

    @staticmethod
    def _customer_visible(principal: Principal) -> Any:
        def visible(order: store.OrderRow, makers: frozenset[str]) -> bool:
            parties = domain.OrderParties(order.retailer_id, order.customer_id, makers)
            return domain.order_access(principal, parties) is not Access.NONE

        return visible

    async def TraceUpstream(self, request: pb.TraceUpstreamRequest, context: Any) -> pb.Trace:
        principal = current_principal()
        start = request.WhichOneof("start")
        if start is None:
            raise InvalidArgument.field("start", "give an order_id, a product_id or a lot_id")
        ident = require(getattr(request, start), start)
        builder = trace.TraceBuilder(*self._limits(request.max_depth, request.max_nodes))
        async with self.db.read() as session:
            if start == "order_id":
                bundle = await self._visible_order(session, principal, ident)
                await trace.upstream_of_order(builder, session, bundle.row, bundle.lines, bundle.allocations)
            elif start == "product_id":
                await store.product(session, ident)
                await trace.upstream_of_product(builder, session, ident)
            else:
                await self._visible_lot(session, principal, ident)
                await trace.upstream_of_lot(builder, session, ident)
            return await builder.render(session, self._customer_visible(principal))

    async def TraceDownstream(self, request: pb.TraceDownstreamRequest, context: Any) -> pb.Trace:
        principal = current_principal()
        lot_id = require(request.lot_id, "lot_id")
        builder = trace.TraceBuilder(*self._limits(request.max_depth, request.max_nodes))
        async with self.db.read() as session:
            await self._visible_lot(session, principal, lot_id)
            await trace.downstream_of_lot(builder, session, lot_id)
            return await builder.render(session, self._customer_visible(principal))

    # --- recalls -----------------------------------------------------------------------------------

    async def RecallLot(self, request: pb.RecallLotRequest, context: Any) -> pb.Recall:
        principal = current_principal()
        lot_id = require(request.lot_id, "lot_id")
        reason = require(request.reason, "reason")
        if len(reason) > domain.MAX_LONG_TEXT:
            raise InvalidArgument.field("reason", f"must be at most {domain.MAX_LONG_TEXT} characters")
        at = now()
        async with self.db.transaction() as session:
            root = await store.lot(session, lot_id, lock=True)
            product = await store.product(session, root.product_id)
            owners = {root.producer_id, product.maker_id}
            if principal.service is None and not domain.acting_parties(principal) & owners:
                if not domain.acting_parties(principal) & await store.lot_parties(session, lot_id):
                    raise NotFound(f"lot {lot_id} not found")
                raise PermissionDenied("only the lot's producer or the product's maker may recall it")
            if root.status == LotStatus.RECALLED.value:
                raise FailedPrecondition(f"lot_id: lot {lot_id} was recalled already (recall {root.recall_id})")
            recall_id = new_id()
            lot_ids = await trace.descendants(session, lot_id, lock=True)
            rows = await store.lots(session, lot_ids)
            product_ids = sorted({r.product_id for r in rows.values()})
            session.add(
                store.RecallRow(
                    id=recall_id,
                    lot_id=lot_id,
                    reason=reason,
                    product_ids=product_ids,
                    created_by=actor(principal),
                    created_at=at,
                )
            )
            await session.flush()
            for row in rows.values():
                if row.status != LotStatus.RECALLED.value:
                    row.status = LotStatus.RECALLED.value
                    row.status_reason = reason[:500]
                    row.recall_id = recall_id
                    row.updated_at = at
                    session.add(row)
            session.add_all(store.RecallLotRow(recall_id=recall_id, lot_id=x) for x in lot_ids)
        log.info("lot_recalled", recall_id=recall_id, lot_id=lot_id, lots=len(lot_ids))
        try:
            await self.recalls.issue(recall_id)
        except IdentityUnavailable as error:
            # The recall holds; its announcement waits for identity (the recall job retries).
            log.warning("recall_not_issued", recall_id=recall_id, error=str(error))
        return await self._recall_message(principal, recall_id)

    async def _recall_message(self, principal: Principal, recall_id: str) -> pb.Recall:
        async with self.db.read() as session:
            row = await store.recall(session, recall_id)
            lot_ids = await store.recall_lot_ids(session, recall_id)
            root = await store.lot(session, row.lot_id)
            product = await store.product(session, root.product_id)
        sees_all = principal.service is not None or bool(
            domain.acting_parties(principal) & {root.producer_id, product.maker_id, row.created_by}
        )
        mine = domain.acting_parties(principal)
        return pb.Recall(
            recall_id=row.id,
            lot_id=row.lot_id,
            reason=row.reason,
            lot_ids=lot_ids,
            product_ids=row.product_ids,
            affected_orders=[
                pb.AffectedOrder(
                    order_id=a["order_id"],
                    customer_id=a["customer_id"],
                    retailer_id=a["retailer_id"],
                    status=convert.ORDER_STATUS[OrderStatus(a["status"])],
                    contact_consented=bool(a["contact_consented"]),
                )
                for a in row.affected
                if sees_all or a["retailer_id"] in mine or a["customer_id"] in mine
            ],
            created_by=row.created_by,
            create_time=timestamp(row.created_at),
            issue_time=timestamp(row.issued_at),
        )

    async def GetRecall(self, request: pb.GetRecallRequest, context: Any) -> pb.Recall:
        principal = current_principal()
        return await self._recall_message(principal, require(request.recall_id, "recall_id"))
