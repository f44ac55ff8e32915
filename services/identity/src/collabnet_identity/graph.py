"""Searches over the relationship graph: neighborhoods, k shortest paths, nearest capable partners.

The graph is read through an ``EdgeSource`` (the database, for the service; a dict, in tests), one
frontier at a time, so a search touches only the parties it reaches. Edges are walked in both
directions. Power-law networks have hubs (a retailer with a hundred thousand customers), so the
searches are built to stay off them when they can: the shortest-path search grows the side whose
frontier has the lower total degree, and finishes with one query for edges joining the two
frontiers instead of growing a side once more.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Protocol

Edge = tuple[str, str, str, str]
"""(relationship id, from party, to party, type)."""


class EdgeSource(Protocol):
    async def edges(self, parties: Collection[str], limit: int | None = None) -> list[Edge]:
        """Edges with an end among ``parties`` (at most ``limit`` per query when given)."""

    async def edges_between(self, a: Collection[str], b: Collection[str]) -> list[Edge]:
        """Edges with one end in ``a`` and the other in ``b``."""

    async def degrees(self, parties: Collection[str]) -> dict[str, int]:
        """How many edges each party has: a cost estimate, not an exact count."""


def other(edge: Edge, node: str) -> str:
    return edge[2] if edge[1] == node else edge[1]


@dataclass
class CachedGraph:
    """The edges and degrees one request has read, so its searches read each party once."""

    source: EdgeSource
    _adjacency: dict[str, list[Edge]] = field(default_factory=dict)
    _degrees: dict[str, int] = field(default_factory=dict)

    async def adjacency(self, nodes: Iterable[str]) -> dict[str, list[Edge]]:
        wanted = set(nodes)
        missing = wanted - self._adjacency.keys()
        if missing:
            for node in missing:
                self._adjacency[node] = []
            for edge in await self.source.edges(missing):
                for end in (edge[1], edge[2]):
                    if end in missing:
                        self._adjacency[end].append(edge)
        return {node: self._adjacency[node] for node in wanted}

    async def costs(self, *groups: Collection[str]) -> list[int]:
        """The total degree of each group of nodes (one query for whatever is not known yet)."""
        missing = {n for group in groups for n in group if n not in self._degrees and n not in self._adjacency}
        if missing:
            self._degrees.update(await self.source.degrees(missing))
        return [
            sum(len(self._adjacency[n]) if n in self._adjacency else self._degrees.get(n, 0) for n in group)
            for group in groups
        ]

    async def between(self, a: Collection[str], b: Collection[str]) -> list[Edge]:
        """Edges joining ``a`` and ``b``: from the cache where an end's edges are known, else from the source."""
        if not a or not b:
            return []
        found: dict[str, Edge] = {}
        for near, far in ((a, set(b)), (b, set(a))):
            for node in near:
                for edge in self._adjacency.get(node, ()):
                    if other(edge, node) in far:
                        found[edge[0]] = edge
        unknown_a = [n for n in a if n not in self._adjacency]
        unknown_b = [n for n in b if n not in self._adjacency]
        if unknown_a and unknown_b:
            for edge in await self.source.edges_between(unknown_a, unknown_b):
                found[edge[0]] = edge
        return sorted(found.values())


@dataclass(frozen=True, order=True)
class Path:
    """A walk from the first node to the last, each edge read in the walking direction."""

    nodes: tuple[str, ...]
    edges: tuple[Edge, ...]

    def __len__(self) -> int:
        return len(self.edges)

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(e[0] for e in self.edges)

    def steps(self) -> list[tuple[str, str, Edge]]:
        """(from, to, edge) for each step, in walking order."""
        return [(self.nodes[i], self.nodes[i + 1], edge) for i, edge in enumerate(self.edges)]


async def shortest_path(
    graph: CachedGraph,
    source: str,
    target: str,
    max_depth: int,
    blocked_nodes: Collection[str] = frozenset(),
    blocked_edges: Collection[str] = frozenset(),
) -> Path | None:
    """One shortest path of at most ``max_depth`` edges avoiding the blocked nodes and edges, or None."""
    if source == target:
        return Path((source,), ())
    # For each side: node -> (previous node, edge) towards that side's start.
    parents: tuple[dict[str, tuple[str, Edge] | None], dict[str, tuple[str, Edge] | None]] = (
        {source: None},
        {target: None},
    )
    frontiers: list[list[str]] = [[source], [target]]
    depths = [0, 0]

    def usable(edge: Edge) -> bool:
        return edge[0] not in blocked_edges and edge[1] not in blocked_nodes and edge[2] not in blocked_nodes

    while depths[0] + depths[1] < max_depth:
        links = sorted(e for e in await graph.between(frontiers[0], frontiers[1]) if usable(e))
        if links:
            forward = set(frontiers[0])
            link = links[0]
            near = link[1] if link[1] in forward else link[2]
            return _join(parents, near, other(link, near), link)
        if depths[0] + depths[1] + 1 >= max_depth:
            return None
        costs = await graph.costs(frontiers[0], frontiers[1])
        side = 0 if costs[0] <= costs[1] else 1
        mine, theirs = parents[side], parents[1 - side]
        adjacency = await graph.adjacency(frontiers[side])
        grown: list[str] = []
        meetings: list[tuple[str, str, Edge]] = []
        for node in frontiers[side]:
            for edge in adjacency[node]:
                if not usable(edge):
                    continue
                nxt = other(edge, node)
                if nxt in theirs:
                    meetings.append((nxt, node, edge))
                if nxt in mine:
                    continue
                mine[nxt] = (node, edge)
                grown.append(nxt)
        if meetings:
            # A node the other side reached earlier: the shortest such join wins.
            depth_of = _depths(theirs)
            meet, node, edge = min(meetings, key=lambda m: (depth_of[m[0]], m[2][0]))
            if depths[side] + 1 + depth_of[meet] <= max_depth:
                near, far = (node, meet) if side == 0 else (meet, node)
                return _join(parents, near, far, edge)
        if not grown:
            return None
        frontiers[side] = sorted(grown)
        depths[side] += 1
    return None


def _depths(parents: dict[str, tuple[str, Edge] | None]) -> dict[str, int]:
    depth: dict[str, int] = {}
    for node in parents:
        steps, current = 0, node
        while (hop := parents[current]) is not None:
            steps += 1
            current = hop[0]
        depth[node] = steps
    return depth


def _join(
    parents: tuple[dict[str, tuple[str, Edge] | None], dict[str, tuple[str, Edge] | None]],
    near: str,
    far: str,
    link: Edge,
) -> Path:
    """The path source ... near -link- far ... target, from both sides' parent pointers."""
    nodes: list[str] = [near]
    edges: list[Edge] = []
    while (hop := parents[0][nodes[0]]) is not None:
        nodes.insert(0, hop[0])
        edges.insert(0, hop[1])
    nodes.append(far)
    edges.append(link)
    while (hop := parents[1][nodes[-1]]) is not None:
        nodes.append(hop[0])
        edges.append(hop[1])
    return Path(tuple(nodes), tuple(edges))


async def k_shortest_paths(graph: CachedGraph, source: str, target: str, k: int, max_depth: int) -> list[Path]:
    """Up to ``k`` simple paths of at most ``max_depth`` edges, shortest first (Yen's algorithm)."""
    first = await shortest_path(graph, source, target, max_depth)
    if first is None or not first.edges:
        return [first] if first is not None else []
    found = [first]
    seen = {first.key}
    candidates: list[tuple[int, tuple[str, ...], Path]] = []
    while len(found) < k:
        previous = found[-1]
        for i in range(len(previous.edges)):
            spur = previous.nodes[i]
            root_nodes, root_edges = previous.nodes[: i + 1], previous.edges[:i]
            blocked_edges = {p.edges[i][0] for p in found if p.nodes[: i + 1] == root_nodes and len(p.edges) > i}
            tail = await shortest_path(graph, spur, target, max_depth - i, set(root_nodes[:-1]), blocked_edges)
            if tail is None:
                continue
            path = Path(root_nodes[:-1] + tail.nodes, root_edges + tail.edges)
            if path.key not in seen and len(set(path.nodes)) == len(path.nodes):
                seen.add(path.key)
                heapq.heappush(candidates, (len(path), path.key, path))
        if not candidates:
            break
        found.append(heapq.heappop(candidates)[2])
    return found


@dataclass
class Neighborhood:
    distances: dict[str, int]
    edges: list[Edge]
    truncated: bool


async def neighborhood(source: EdgeSource, start: str, depth: int, max_parties: int) -> Neighborhood:
    """The parties within ``depth`` hops of ``start`` (at most ``max_parties``), nearest first, and
    the edges among them."""
    distances = {start: 0}
    edges: dict[str, Edge] = {}
    frontier = [start]
    truncated = False
    for hop in range(1, depth + 1):
        if not frontier:
            break
        room = max(0, max_parties - len(distances))
        # Ask for a little more than there is room for, to know whether anything was left out
        # without reading all of a hub. Edges back to parties already reached count against the
        # limit too: while an answer cut short leaves room, ask for more.
        limit = room + 1
        while True:
            found = await source.edges(frontier, limit=limit)
            reached = {other(e, near) for e in found for near in (e[1], e[2]) if distances.get(near) == hop - 1}
            if len(found) < limit or len(reached - distances.keys()) > room:
                break
            limit *= 4
        grown: list[str] = []
        for edge in found:
            for near in (edge[1], edge[2]):
                far = other(edge, near)
                if near in distances and distances[near] == hop - 1 and far not in distances:
                    if len(distances) >= max_parties:
                        truncated = True
                        continue
                    distances[far] = hop
                    grown.append(far)
        for edge in found:
            if edge[1] in distances and edge[2] in distances:
                edges[edge[0]] = edge
        frontier = sorted(grown)
    return Neighborhood(distances, sorted(edges.values()), truncated)


async def nearest(
    graph: CachedGraph, start: str, targets: set[str], max_hops: int, limit: int
) -> list[tuple[str, int]]:
    """Targets within ``max_hops`` of ``start``, nearest first (ties by id), at most ``limit``."""
    found: dict[str, int] = {}
    if start in targets:
        found[start] = 0
    visited = {start}
    frontier = [start]
    for hop in range(1, max_hops + 1):
        if len(found) >= limit or not frontier:
            break
        remaining = targets - found.keys() - {start}
        # The targets one hop beyond the frontier, without reading all of the frontier's edges.
        for edge in await graph.between(frontier, remaining):
            for end in (edge[1], edge[2]):
                if end in remaining:
                    found.setdefault(end, hop)
        if hop == max_hops:
            break
        adjacency = await graph.adjacency(frontier)
        grown = {other(e, node) for node in frontier for e in adjacency[node]} - visited
        visited |= grown
        frontier = sorted(grown)
    return sorted(found.items(), key=lambda item: (item[1], item[0]))[:limit]
