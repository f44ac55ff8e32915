"""Walks over the chain, computed in the database, so a walk reads only what it reaches and its cost
grows with the size of its answer, not of the network:

- traces walk the lot genealogy, up (what a lot was built from) or down (what was built from it),
  with one recursive query (``WITH RECURSIVE``), then read the orders that received the lots and
  every node's details with one query each;
- bills of materials (supply networks, cycle checks, where an item is used) and recalls walk one
  level at a time, one query for the whole frontier (``= ANY(array)`` on PostgreSQL); a recall
  locks each level before reading the next, so no lot is built from one it is recalling meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet.supplychain.v1 import supplychain_pb2 as pb
from collabnet_kit.timestamps import timestamp
from collabnet_supplychain import convert, domain, store
from collabnet_supplychain.domain import LegKind, LegStatus, LotStatus, OrderStatus, ProductKind

BOM_MAX_DEPTH = 50
"""Deeper than any real product structure; a guard, since cycles are refused when they would form."""


# --- bills of materials ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """One bill-of-materials edge as a supply network sees it."""

    tier: int
    parent_id: str
    item: store.BomItemRow


async def supply_links(session: AsyncSession, product_id: str) -> list[Link]:
    """Every bill-of-materials edge below a product, each at the tier its parent was first reached + 1."""
    links: list[Link] = []
    seen = {product_id}
    frontier = [product_id]
    tier = 0
    while frontier and tier < BOM_MAX_DEPTH:
        tier += 1
        items = await store.bom_items(session, frontier)
        frontier = []
        for item in items:
            links.append(Link(tier, item.parent_id, item))
            if item.component_id not in seen:
                seen.add(item.component_id)
                frontier.append(item.component_id)
    return links


async def reaches(session: AsyncSession, roots: Collection[str], target: str) -> dict[str, str] | None:
    """Search down the bills of materials from ``roots``; when ``target`` is reached, each item's
    predecessor on the way (for ``domain.cycle_path``), else None."""
    reached_from: dict[str, str] = {}
    seen = set(roots)
    frontier = sorted(seen)
    for _ in range(BOM_MAX_DEPTH):
        if not frontier:
            break
        items = await store.bom_items(session, frontier)
        frontier = []
        for item in items:
            if item.component_id in seen:
                continue
            seen.add(item.component_id)
            reached_from[item.component_id] = item.parent_id
            if item.component_id == target:
                return reached_from
            frontier.append(item.component_id)
    return None


def root_of(node: str, reached_from: dict[str, str]) -> str:
    while node in reached_from:
        node = reached_from[node]
    return node


async def ancestors(session: AsyncSession, product_id: str) -> list[str]:
    """Every product whose bill of materials contains ``product_id`` at any depth, nearest first."""
    found: list[str] = []
    seen = {product_id}
    frontier = [product_id]
    for _ in range(BOM_MAX_DEPTH):
        if not frontier:
            break
        frontier = sorted({parent for parent, _ in await store.used_in(session, frontier)} - seen)
        seen.update(frontier)
        found += frontier
    return found


# --- lots ------------------------------------------------------------------------------------------


async def descendants(session: AsyncSession, lot_id: str, *, lock: bool = False) -> list[str]:
    """The lot and every lot built from it, at any depth, nearest first.

    With ``lock``, each level's lots are locked (PostgreSQL) before the lots built from them are
    read: a lot being built from one of them at that moment either committed first (and is found)
    or waits, and then finds its input recalled.
    """
    found = [lot_id]
    seen = {lot_id}
    frontier = [lot_id]
    while frontier:
        if lock:
            await store.lots(session, frontier, lock=True)
        frontier = sorted({child for _, child, _ in await store.built_from(session, frontier)} - seen)
        seen.update(frontier)
        found += frontier
    return found


# --- traces ----------------------------------------------------------------------------------------


def lot_node(lot_id: str) -> str:
    return f"lot/{lot_id}"


def order_node(order_id: str) -> str:
    return f"order/{order_id}"


class TraceBuilder:
    """A trace being built: the tree's shape in ``tree``, and what each node is about."""

    def __init__(self, max_depth: int, max_nodes: int) -> None:
        self.max_depth = max_depth
        self.tree = domain.TraceTree(max_nodes)
        self.lots: set[str] = set()
        self.products: dict[str, tuple[str, str, int]] = {}  # node -> product, supplier, revision
        self.orders: dict[str, str] = {}  # node -> order id
        self.order_rows: dict[str, store.OrderRow] = {}

    def _add_edges(self, edges: list[tuple[str, str, int, int]], base: int) -> None:
        """Hang walked genealogy edges (nearest first) under their parents, ``base`` steps from the start."""
        for parent, child, quantity, depth in edges:
            if base + depth > self.max_depth:
                self.tree.truncated = True
                continue
            if lot_node(parent) in self.tree.nodes and self.tree.add(
                lot_node(child), lot_node(parent), base + depth, quantity
            ):
                self.lots.add(child)

    async def _walk(self, session: AsyncSession, roots: list[str], base: int, *, downstream: bool) -> None:
        """Add the lots within reach of ``roots`` (at ``base`` steps from the start), in one recursive
        query; one step further is read only to tell whether the depth limit cut the trace short."""
        if not roots:
            return
        limit = self.tree.max_nodes * 4
        edges = await store.lot_walk(
            session, roots, downstream=downstream, max_depth=self.max_depth - base + 1, limit=limit + 1
        )
        if len(edges) > limit:
            self.tree.truncated = True
            edges = edges[:limit]
        self._add_edges(edges, base)

    async def lots_up(self, session: AsyncSession, start: list[str], depth: int) -> None:
        """Add what the ``start`` lots (at ``depth``) were built from, at any depth."""
        await self._walk(session, start, depth, downstream=False)

    async def lots_down(self, session: AsyncSession, start: list[str], depth: int) -> None:
        """Add the lots built from the ``start`` lots (at ``depth``) at any depth, and the orders each
        of them was allocated to, under the nearest lot that holds them."""
        await self._walk(session, start, depth, downstream=True)
        held = await store.orders_of_lots(session, self.lots)
        held.sort(key=lambda item: self.tree.nodes[lot_node(item[0].lot_id)].depth)
        for allocation, order in held:
            if order.status == OrderStatus.CANCELLED.value:
                continue
            parent = self.tree.nodes[lot_node(allocation.lot_id)]
            if parent.depth + 1 > self.max_depth:
                self.tree.truncated = True
                continue
            node = order_node(order.id)
            if self.tree.add(node, parent.node_id, parent.depth + 1, allocation.quantity):
                self.orders[node] = order.id
                self.order_rows[order.id] = order

    async def bom_down(self, session: AsyncSession, product_id: str, node: str, depth: int) -> None:
        frontier = [(product_id, node)]
        while frontier:
            nodes_of: dict[str, list[str]] = {}
            for product, at in frontier:
                nodes_of.setdefault(product, []).append(at)
            items = await store.bom_items(session, list(nodes_of))
            if depth >= self.max_depth:
                if items:
                    self.tree.truncated = True
                return
            depth += 1
            following: list[tuple[str, str]] = []
            for item in items:
                for parent in nodes_of[item.parent_id]:
                    child = f"product/{item.component_id}/{item.supplier_id}"
                    if self.tree.add(child, parent, depth, item.quantity, item.unit):
                        self.products[child] = (item.component_id, item.supplier_id, 0)
                        following.append((item.component_id, child))
            frontier = following

    async def render(
        self, session: AsyncSession, customer_visible: Callable[[store.OrderRow, frozenset[str]], bool]
    ) -> pb.Trace:
        """The trace as a message, with every node's details read in one query per kind."""
        details = await store.lot_details(session, self.lots)
        legs = await store.legs_carrying(session, self.lots)
        products = await store.products(session, {p for p, _, _ in self.products.values()})
        missing = set(self.orders.values()) - set(self.order_rows)
        orders = self.order_rows | await store.rows_by_id(session, store.OrderRow, missing)
        makers = await store.order_makers(session, list(orders))
        nodes: list[pb.TraceNode] = []
        for node in self.tree.ordered():
            message = pb.TraceNode(
                node_id=node.node_id,
                parent_node_id=node.parent_id,
                other_parent_node_ids=node.other_parents,
                depth=node.depth,
                quantity=node.quantity,
                unit=node.unit,
            )
            if node.node_id.startswith("lot/"):
                lot_row, product_row = details[node.node_id[4:]]
                message.lot.CopyFrom(traced_lot(lot_row, product_row, legs.get(lot_row.id, [])))
            elif node.node_id in self.orders:
                order = orders[self.orders[node.node_id]]
                message.order.CopyFrom(traced_order(order, customer_visible(order, makers.get(order.id, frozenset()))))
            elif node.node_id in self.products:
                product_id, supplier_id, revision = self.products[node.node_id]
                message.product.CopyFrom(traced_product(products[product_id], supplier_id, revision))
            nodes.append(message)
        return pb.Trace(nodes=nodes, truncated=self.tree.truncated)


def traced_lot(lot: store.LotRow, product: store.ProductRow, legs: list[tuple[store.LegRow, int]]) -> pb.TracedLot:
    return pb.TracedLot(
        lot_id=lot.id,
        code=lot.code,
        product_id=product.id,
        sku=product.sku,
        product_name=product.name,
        revision=lot.revision,
        producer_id=lot.producer_id,
        status=convert.LOT_STATUS[LotStatus(lot.status)],
        produce_time=timestamp(lot.produced_at),
        shipments=[
            pb.TracedLeg(
                shipment_id=leg.shipment_id,
                leg_id=leg.id,
                kind=convert.LEG_KIND[LegKind(leg.kind)],
                from_party_id=leg.from_party,
                to_party_id=leg.to_party,
                carrier_id=leg.carrier_id,
                status=convert.LEG_STATUS[LegStatus(leg.status)],
                quantity=quantity,
                update_time=timestamp(leg.updated_at),
            )
            for leg, quantity in legs
        ],
    )


def traced_order(order: store.OrderRow, customer: bool) -> pb.TracedOrder:
    message = pb.TracedOrder(
        order_id=order.id,
        retailer_id=order.retailer_id,
        status=convert.ORDER_STATUS[OrderStatus(order.status)],
        place_time=timestamp(order.placed_at),
        deliver_time=timestamp(order.delivered_at),
    )
    if customer:
        message.customer_id = order.customer_id
    return message


def traced_product(product: store.ProductRow, supplier_id: str, revision: int) -> pb.TracedProduct:
    return pb.TracedProduct(
        product_id=product.id,
        sku=product.sku,
        name=product.name,
        kind=convert.PRODUCT_KIND[ProductKind(product.kind)],
        maker_id=product.maker_id,
        revision=revision or product.revision,
        supplier_id=supplier_id,
    )


async def upstream_of_lot(builder: TraceBuilder, session: AsyncSession, lot_id: str) -> None:
    builder.tree.add(lot_node(lot_id), "", 0)
    builder.lots.add(lot_id)
    await builder.lots_up(session, [lot_id], 0)


async def upstream_of_product(builder: TraceBuilder, session: AsyncSession, product_id: str) -> None:
    node = f"product/{product_id}"
    builder.tree.add(node, "", 0)
    builder.products[node] = (product_id, "", 0)
    await builder.bom_down(session, product_id, node, 0)


async def upstream_of_order(
    builder: TraceBuilder,
    session: AsyncSession,
    order: store.OrderRow,
    lines: list[store.OrderLineRow],
    allocations: list[store.AllocationRow],
) -> None:
    """The order, its lines (the product and revision sold), the lots allocated to each, and what
    those lots were built from."""
    root = order_node(order.id)
    builder.tree.add(root, "", 0)
    builder.orders[root] = order.id
    if builder.max_depth < 1:
        builder.tree.truncated = bool(lines)
        return
    for line in lines:
        node = f"line/{order.id}/{line.line_number}"
        if builder.tree.add(node, root, 1, line.quantity):
            builder.products[node] = (line.product_id, "", line.revision)
    allocated: list[str] = []
    for allocation in allocations:
        if builder.max_depth < 2:
            builder.tree.truncated = True
            break
        line_node = f"line/{order.id}/{allocation.line_number}"
        if line_node in builder.tree.nodes and builder.tree.add(
            lot_node(allocation.lot_id), line_node, 2, allocation.quantity
        ):
            builder.lots.add(allocation.lot_id)
            allocated.append(allocation.lot_id)
    await builder.lots_up(session, allocated, 2)


async def downstream_of_lot(builder: TraceBuilder, session: AsyncSession, lot_id: str) -> None:
    builder.tree.add(lot_node(lot_id), "", 0)
    builder.lots.add(lot_id)
    await builder.lots_down(session, [lot_id], 0)
