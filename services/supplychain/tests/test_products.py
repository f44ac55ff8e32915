"""Products, revisions, bills of materials and supply networks, through the real gRPC server."""

from __future__ import annotations

import grpc
from supplychain_testing import (
    SERVICE,
    Chain,
    EventLog,
    SupplyChain,
    invalid,
    of_type,
    only,
    partner,
    refused,
    register,
    set_bom,
)

from collabnet.supplychain.v1 import events_pb2
from collabnet.supplychain.v1 import supplychain_pb2 as pb


async def test_a_maker_registers_a_product_at_revision_1_and_everyone_can_find_it(
    supplychain: SupplyChain, events: EventLog
) -> None:
    bike = await supplychain.RegisterProduct(
        pb.RegisterProductRequest(
            sku="BIKE-1",
            name="City bike",
            category="bikes",
            kind=pb.PRODUCT_KIND_FINISHED_GOOD,
            attributes={"frame": "steel"},
        ),
        metadata=partner("maker"),
    )
    assert (bike.maker_id, bike.revision, bike.attributes["frame"]) == ("maker", 1, "steel")
    assert await supplychain.GetProduct(pb.GetProductRequest(product_id=bike.product_id), metadata=partner("x")) == bike
    registered = only(await events.drain(supplychain), events_pb2.ProductRegistered)
    assert (registered.product_id, registered.sku, registered.maker_id, registered.revision) == (
        bike.product_id,
        "BIKE-1",
        "maker",
        1,
    )
    assert registered.attributes["frame"] == "steel"

    await register(supplychain, "other", "LAMP-1", "Lamp", pb.PRODUCT_KIND_COMPONENT, "lights")
    await register(supplychain, "maker", "BELL-1", "Bell", pb.PRODUCT_KIND_COMPONENT, "bells")
    mine = await supplychain.ListProducts(pb.ListProductsRequest(maker_id="maker"), metadata=partner("x"))
    assert sorted(p.sku for p in mine.products) == ["BELL-1", "BIKE-1"]
    by_sku = await supplychain.ListProducts(pb.ListProductsRequest(sku="LAMP-1"), metadata=partner("x"))
    assert [p.maker_id for p in by_sku.products] == ["other"]
    by_category = await supplychain.ListProducts(pb.ListProductsRequest(category="bikes"), metadata=SERVICE)
    assert [p.sku for p in by_category.products] == ["BIKE-1"]

    first = await supplychain.ListProducts(pb.ListProductsRequest(maker_id="maker", page_size=1), metadata=SERVICE)
    assert len(first.products) == 1 and first.next_page_token
    rest = await supplychain.ListProducts(
        pb.ListProductsRequest(maker_id="maker", page_size=1, page_token=first.next_page_token), metadata=SERVICE
    )
    assert not rest.next_page_token
    assert sorted(p.sku for p in [*first.products, *rest.products]) == ["BELL-1", "BIKE-1"]
    await invalid(
        supplychain.ListProducts(pb.ListProductsRequest(page_token="nonsense"), metadata=SERVICE), "page_token"
    )
    await invalid(supplychain.ListProducts(pb.ListProductsRequest(page_size=501), metadata=SERVICE), "page_size")


async def test_bad_registrations_are_refused_and_write_nothing(supplychain: SupplyChain, events: EventLog) -> None:
    await invalid(
        supplychain.RegisterProduct(
            pb.RegisterProductRequest(sku="bad sku!", name=" ", category="bikes"), metadata=partner("maker")
        ),
        "sku",
        "name",
        "kind",
    )
    await invalid(
        supplychain.RegisterProduct(
            pb.RegisterProductRequest(sku="A-1", name="A", category="c", kind=pb.PRODUCT_KIND_COMPONENT),
            metadata=SERVICE,
        ),
        "maker_id",
    )
    await refused(
        supplychain.RegisterProduct(
            pb.RegisterProductRequest(
                sku="A-1", name="A", category="c", kind=pb.PRODUCT_KIND_COMPONENT, maker_id="someone-else"
            ),
            metadata=partner("maker"),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await register(supplychain, "maker", "A-1", "A", pb.PRODUCT_KIND_COMPONENT)
    await refused(
        register(supplychain, "other", "A-1", "Another A", pb.PRODUCT_KIND_COMPONENT), grpc.StatusCode.ALREADY_EXISTS
    )
    listed = await supplychain.ListProducts(pb.ListProductsRequest(), metadata=SERVICE)
    assert [p.sku for p in listed.products] == ["A-1"]
    assert [p.type for p in await events.drain(supplychain)] == ["collabnet.supplychain.v1.ProductRegistered"]
    await refused(
        supplychain.GetProduct(pb.GetProductRequest(product_id="nope"), metadata=SERVICE), grpc.StatusCode.NOT_FOUND
    )
    await invalid(supplychain.GetProduct(pb.GetProductRequest(), metadata=SERVICE), "product_id")


async def test_a_redesign_makes_revision_n_plus_1_recording_what_why_and_the_initiative(
    supplychain: SupplyChain, events: EventLog
) -> None:
    bike = await register(supplychain, "maker", "BIKE-1", "City bike", pb.PRODUCT_KIND_FINISHED_GOOD)
    await events.drain(supplychain)
    revised = await supplychain.ReviseProduct(
        pb.ReviseProductRequest(
            product_id=bike.product_id, changes="stiffer rear fork", reason="reviews: fork flexes", initiative_id="i-1"
        ),
        metadata=partner("maker"),
    )
    assert revised.revision == 2
    history = await supplychain.ListProductRevisions(
        pb.ListProductRevisionsRequest(product_id=bike.product_id), metadata=partner("x")
    )
    assert [(r.revision, r.changes, r.initiative_id, r.created_by) for r in history.revisions] == [
        (1, "first revision", "", "maker"),
        (2, "stiffer rear fork", "i-1", "maker"),
    ]
    event = only(await events.drain(supplychain), events_pb2.ProductRevised)
    assert (event.product_id, event.maker_id, event.revision, event.changes, event.reason, event.initiative_id) == (
        bike.product_id,
        "maker",
        2,
        "stiffer rear fork",
        "reviews: fork flexes",
        "i-1",
    )

    await refused(
        supplychain.ReviseProduct(
            pb.ReviseProductRequest(product_id=bike.product_id, changes="x", reason="y"), metadata=partner("other")
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await invalid(
        supplychain.ReviseProduct(
            pb.ReviseProductRequest(product_id=bike.product_id, changes="", reason=""), metadata=partner("maker")
        ),
        "changes",
        "reason",
    )
    await refused(
        supplychain.ReviseProduct(
            pb.ReviseProductRequest(product_id="nope", changes="x", reason="y"), metadata=SERVICE
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    current = await supplychain.GetProduct(pb.GetProductRequest(product_id=bike.product_id), metadata=SERVICE)
    assert current.revision == 2
    assert await events.drain(supplychain) == []


async def test_the_supply_network_lists_suppliers_tier_by_tier_and_the_retailers(
    chain: Chain, supplychain: SupplyChain
) -> None:
    network = await supplychain.GetSupplyNetwork(
        pb.GetSupplyNetworkRequest(product_id=chain.bike.product_id), metadata=partner("anyone")
    )
    assert network.maker_id == chain.maker
    assert [(s.tier, s.supplier_id, s.component_sku, s.customer_id, s.quantity, s.unit) for s in network.suppliers] == [
        (1, chain.mill, "STEEL-1", chain.maker, 3, "kg"),
        (2, chain.ore_supplier, "ORE-1", chain.mill, 2, "kg"),
    ]
    assert [(x.retailer_id, x.price.amount_minor, x.available) for x in network.listings] == [
        (chain.retailer, 49_900, True)
    ]
    bom = await supplychain.GetBillOfMaterials(
        pb.GetBillOfMaterialsRequest(product_id=chain.bike.product_id), metadata=SERVICE
    )
    assert [(i.component_id, i.component_sku, i.supplier_id, i.quantity) for i in bom.items] == [
        (chain.steel.product_id, "STEEL-1", chain.mill, 3)
    ]
    assert bom.HasField("update_time")


async def test_a_bill_of_materials_change_announces_the_network_of_the_product_and_of_what_uses_it(
    chain: Chain, supplychain: SupplyChain, events: EventLog
) -> None:
    await events.drain(supplychain)
    second_source = await register(supplychain, "mine-2", "ORE-2", "Ore", pb.PRODUCT_KIND_RAW_MATERIAL, "ores")
    await set_bom(
        supplychain,
        chain.steel,
        pb.BomItem(component_id=chain.ore.product_id, supplier_id=chain.ore_supplier, quantity=2, unit="kg"),
        pb.BomItem(component_id=second_source.product_id, supplier_id="mine-2", quantity=1, unit="kg"),
    )
    changed = of_type(await events.drain(supplychain), events_pb2.SupplyNetworkChanged)
    assert [(e.product_id, e.maker_id) for e in changed] == [
        (chain.steel.product_id, chain.mill),
        (chain.bike.product_id, chain.maker),
    ]
    steel, bike = changed
    assert sorted((s.tier, s.supplier_id, s.item) for s in steel.suppliers) == sorted(
        [(1, chain.ore_supplier, chain.ore.product_id), (1, "mine-2", second_source.product_id)]
    )
    assert sorted((s.tier, s.supplier_id, s.item) for s in bike.suppliers) == sorted(
        [
            (1, chain.mill, chain.steel.product_id),
            (2, chain.ore_supplier, chain.ore.product_id),
            (2, "mine-2", second_source.product_id),
        ]
    )
    emptied = await set_bom(supplychain, chain.steel)
    assert list(emptied.items) == []
    changed = of_type(await events.drain(supplychain), events_pb2.SupplyNetworkChanged)
    assert [[(s.tier, s.supplier_id) for s in e.suppliers] for e in changed] == [[], [(1, chain.mill)]]


async def test_a_bill_of_materials_that_would_close_a_cycle_is_refused_and_nothing_changes(
    chain: Chain, supplychain: SupplyChain, events: EventLog
) -> None:
    await events.drain(supplychain)
    # Ore would contain bikes, which contain steel, which contains ore.
    error = await invalid(
        supplychain.SetBillOfMaterials(
            pb.SetBillOfMaterialsRequest(
                product_id=chain.ore.product_id,
                items=[pb.BomItem(component_id=chain.bike.product_id, supplier_id=chain.maker, quantity=1)],
            ),
            metadata=partner(chain.ore_supplier),
        ),
        "items[0].component_id",
    )
    ore, steel, bike = chain.ore.product_id, chain.steel.product_id, chain.bike.product_id
    assert f"{ore} -> {bike} -> {steel} -> {ore}" in (error.details() or "")
    await invalid(
        supplychain.SetBillOfMaterials(
            pb.SetBillOfMaterialsRequest(
                product_id=bike, items=[pb.BomItem(component_id=bike, supplier_id=chain.maker, quantity=1)]
            ),
            metadata=partner(chain.maker),
        ),
        "items[0].component_id",
    )
    await invalid(
        supplychain.SetBillOfMaterials(
            pb.SetBillOfMaterialsRequest(
                product_id=bike,
                items=[
                    pb.BomItem(component_id="no-such-product", supplier_id=chain.mill, quantity=1),
                    pb.BomItem(component_id=steel, supplier_id=chain.mill, quantity=0),
                    pb.BomItem(component_id=ore, supplier_id="", quantity=-3),
                ],
            ),
            metadata=partner(chain.maker),
        ),
        "items[1].quantity",
        "items[2].quantity",
        "items[2].supplier_id",
    )
    await invalid(
        supplychain.SetBillOfMaterials(
            pb.SetBillOfMaterialsRequest(
                product_id=bike, items=[pb.BomItem(component_id="no-such-product", supplier_id=chain.mill, quantity=1)]
            ),
            metadata=partner(chain.maker),
        ),
        "items[0].component_id",
    )
    await refused(
        supplychain.SetBillOfMaterials(
            pb.SetBillOfMaterialsRequest(product_id=bike, items=[]), metadata=partner(chain.retailer)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    for product, component in ((ore, None), (bike, steel)):
        bom = await supplychain.GetBillOfMaterials(pb.GetBillOfMaterialsRequest(product_id=product), metadata=SERVICE)
        assert [i.component_id for i in bom.items] == ([component] if component else [])
    assert await events.drain(supplychain) == []
