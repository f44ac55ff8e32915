"""The graph searches over an in-memory edge source: what they find, and what they read."""

from __future__ import annotations

from collections.abc import Collection

from collabnet_identity import graph
from collabnet_identity.graph import Edge


class Edges:
    """An ``EdgeSource`` over a list, counting what the searches ask for."""

    def __init__(self, edges: list[Edge]) -> None:
        self.all = edges
        self.read: list[str] = []

    async def edges(self, parties: Collection[str], limit: int | None = None) -> list[Edge]:
        self.read += sorted(parties)
        found = sorted(e for e in self.all if e[1] in parties or e[2] in parties)
        return found[:limit] if limit is not None else found

    async def edges_between(self, a: Collection[str], b: Collection[str]) -> list[Edge]:
        return sorted(e for e in self.all if (e[1] in a and e[2] in b) or (e[1] in b and e[2] in a))

    async def degrees(self, parties: Collection[str]) -> dict[str, int]:
        return {p: sum(p in (e[1], e[2]) for e in self.all) for p in parties}


def e(ident: str, source: str, target: str, kind: str = "supplier_of") -> Edge:
    return (ident, source, target, kind)


CHAIN = [
    e("1", "C", "M", "supplier_of"),
    e("2", "S", "M", "supplier_of"),
    e("3", "O", "S", "supplier_of"),
    e("4", "C", "R", "customer_of"),
]


async def test_the_shortest_path_walks_edges_in_both_directions() -> None:
    path = await graph.shortest_path(graph.CachedGraph(Edges(CHAIN)), "C", "O", 6)
    assert path is not None
    assert path.nodes == ("C", "M", "S", "O")
    assert [edge[0] for edge in path.edges] == ["1", "2", "3"]


async def test_no_path_within_the_depth_limit_is_none() -> None:
    assert await graph.shortest_path(graph.CachedGraph(Edges(CHAIN)), "C", "O", 2) is None
    assert await graph.shortest_path(graph.CachedGraph(Edges(CHAIN)), "R", "X", 6) is None


async def test_k_shortest_paths_come_shortest_first_and_are_simple() -> None:
    edges = [*CHAIN, e("5", "C", "X"), e("6", "X", "S"), e("7", "C", "M", "partner_of")]
    paths = await graph.k_shortest_paths(graph.CachedGraph(Edges(edges)), "C", "O", 5, 6)
    lengths = [len(p) for p in paths]
    assert lengths == sorted(lengths)
    assert {tuple(x[0] for x in p.edges) for p in paths} == {("1", "2", "3"), ("7", "2", "3"), ("5", "6", "3")}
    assert all(len(set(p.nodes)) == len(p.nodes) for p in paths)


async def test_a_search_stays_off_a_hub_when_the_other_side_is_cheaper() -> None:
    # C is a customer of the hub H, which has a thousand other customers; the supplier side is small.
    hub = [e(f"h{i}", f"c{i}", "H", "customer_of") for i in range(1000)]
    edges = [*hub, e("ch", "C", "H", "customer_of"), *CHAIN]
    source = Edges(edges)
    path = await graph.shortest_path(graph.CachedGraph(source), "C", "O", 4)
    assert path is not None
    assert path.nodes == ("C", "M", "S", "O")
    assert "H" not in source.read


async def test_the_neighborhood_is_nearest_first_and_says_when_it_was_cut_short() -> None:
    edges = [*CHAIN, e("5", "R", "Q", "partner_of")]
    whole = await graph.neighborhood(Edges(edges), "C", 2, 100)
    assert whole.distances == {"C": 0, "M": 1, "R": 1, "S": 2, "Q": 2}
    assert not whole.truncated
    assert {edge[0] for edge in whole.edges} == {"1", "2", "4", "5"}
    cut = await graph.neighborhood(Edges(edges), "C", 2, 3)
    assert len(cut.distances) == 3
    assert cut.truncated


async def test_nearest_finds_the_targets_by_hops_nearest_first_up_to_the_limit() -> None:
    source = Edges(CHAIN)
    found = await graph.nearest(graph.CachedGraph(source), "C", {"S", "R", "Z"}, 3, 10)
    assert found == [("R", 1), ("S", 2)]
    limited = await graph.nearest(graph.CachedGraph(Edges(CHAIN)), "C", {"S", "R"}, 3, 1)
    assert limited == [("R", 1)]
