"""The supply chain's rules, without I/O."""

from __future__ import annotations

import pytest

from collabnet_kit.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from collabnet_kit.principal import Principal
from collabnet_supplychain import domain
from collabnet_supplychain.domain import (
    Access,
    BomLine,
    InputLot,
    LegKind,
    LegPlan,
    LegStatus,
    LotStatus,
    Money,
    Offer,
    OrderFacts,
    OrderParties,
    OrderStatus,
    RequestedLine,
)

HOME = domain.Contact("Carla", "carla@example.org", None, domain.Address(("Lindenstr. 5",), "Berlin", "10969", "DE"))


def fields(error: InvalidArgument) -> list[str]:
    return sorted(v.field for v in error.violations)


# --- orders ----------------------------------------------------------------------------------------


def test_zero_and_negative_quantities_name_their_lines() -> None:
    lines = [RequestedLine("A", 1), RequestedLine("B", 0), RequestedLine("C", -2)]
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_order("c", "r", lines, "EUR", HOME, "")
    assert fields(raised.value) == ["lines[1].quantity", "lines[2].quantity"]


def test_an_order_needs_lines_a_currency_and_a_home() -> None:
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_order("c", "r", [], "euro", None, "")
    assert fields(raised.value) == ["contact", "currency_code", "lines"]
    no_address = domain.Contact("Carla", None, None, None)
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_order("c", "r", [RequestedLine("A", 1)], "EUR", no_address, "")
    assert fields(raised.value) == ["contact.address"]


def offer(price: Money | None, *, listed: bool = True, available: bool = True) -> Offer:
    return Offer("p", 3, "m", listed, available, price)


def test_pricing_records_the_revision_and_totals_in_minor_units() -> None:
    lines = [RequestedLine("A", 2), RequestedLine("B", 1)]
    offers = {"A": offer(Money("EUR", 1999)), "B": Offer("q", 1, "m", True, True, Money("EUR", 500))}
    priced, total = domain.price_order(lines, offers, "r", "EUR")
    assert [(p.number, p.revision, p.line_total) for p in priced] == [
        (1, 3, Money("EUR", 3998)),
        (2, 1, Money("EUR", 500)),
    ]
    assert total == Money("EUR", 4498)


def test_unknown_skus_and_other_currencies_are_invalid_arguments() -> None:
    lines = [RequestedLine("A", 1), RequestedLine("X", 1), RequestedLine("B", 1)]
    offers = {"A": offer(Money("EUR", 100)), "X": None, "B": offer(Money("USD", 100))}
    with pytest.raises(InvalidArgument) as raised:
        domain.price_order(lines, offers, "r", "EUR")
    assert fields(raised.value) == ["currency_code", "lines[1].sku"]


def test_an_unlisted_or_unavailable_product_cannot_be_ordered() -> None:
    with pytest.raises(FailedPrecondition, match=r"^lines\[0\]\.sku: A is not listed"):
        domain.price_order([RequestedLine("A", 1)], {"A": offer(None, listed=False)}, "r", "EUR")
    with pytest.raises(FailedPrecondition, match=r"^lines\[0\]\.sku: A is not available"):
        domain.price_order([RequestedLine("A", 1)], {"A": offer(Money("EUR", 1), available=False)}, "r", "EUR")


def test_adding_money_in_two_currencies_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        domain.total([Money("EUR", 1), Money("USD", 1)], "EUR")


def test_the_same_request_has_the_same_fingerprint_and_a_changed_one_does_not() -> None:
    lines = [RequestedLine("A", 1)]
    first = domain.order_fingerprint("r", lines, "EUR", HOME)
    assert domain.order_fingerprint("r", [RequestedLine("A", 1)], "EUR", HOME) == first
    assert domain.order_fingerprint("r", [RequestedLine("A", 2)], "EUR", HOME) != first
    assert domain.order_fingerprint("other", lines, "EUR", HOME) != first


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (OrderStatus.PLACED, OrderStatus.CONFIRMED),
        (OrderStatus.PLACED, OrderStatus.CANCELLED),
        (OrderStatus.CONFIRMED, OrderStatus.SHIPPED),
        (OrderStatus.CONFIRMED, OrderStatus.CANCELLED),
        (OrderStatus.SHIPPED, OrderStatus.DELIVERED),
    ],
)
def test_orders_move_forward_or_are_cancelled_before_shipping(current: OrderStatus, target: OrderStatus) -> None:
    domain.order_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (OrderStatus.PLACED, OrderStatus.SHIPPED),
        (OrderStatus.PLACED, OrderStatus.DELIVERED),
        (OrderStatus.CONFIRMED, OrderStatus.CONFIRMED),
        (OrderStatus.SHIPPED, OrderStatus.CANCELLED),
        (OrderStatus.DELIVERED, OrderStatus.CANCELLED),
        (OrderStatus.CANCELLED, OrderStatus.CONFIRMED),
    ],
)
def test_illegal_order_transitions_are_refused_naming_the_status(current: OrderStatus, target: OrderStatus) -> None:
    with pytest.raises(FailedPrecondition, match=r"^status: "):
        domain.order_transition(current, target)


# --- bills of materials ----------------------------------------------------------------------------


def test_a_bill_of_materials_names_each_bad_item() -> None:
    items = [
        BomLine("p", "s", 1, "each"),
        BomLine("c", "", 0, "Kilo"),
        BomLine("d", "s", -1, "kg"),
        BomLine("d", "s", 1, "kg"),
    ]
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_bom("p", items)
    assert fields(raised.value) == [
        "items[0].component_id",
        "items[1].quantity",
        "items[1].supplier_id",
        "items[1].unit",
        "items[2].quantity",
        "items[3]",
    ]


def test_the_cycle_path_runs_from_the_product_through_the_component_back_to_it() -> None:
    # Adding C to P, where C contains B and B contains P.
    assert domain.cycle_path("P", "C", {"B": "C", "P": "B"}) == ["P", "C", "B", "P"]
    # Adding C to P, where C contains P directly.
    assert domain.cycle_path("P", "C", {"P": "C"}) == ["P", "C", "P"]
    error = domain.bom_cycle(2, ["P", "C", "P"])
    assert fields(error) == ["items[2].component_id"]
    assert "P -> C -> P" in error.message


# --- lots and legs ---------------------------------------------------------------------------------


def test_only_released_lots_may_be_used() -> None:
    domain.lot_usable(LotStatus.RELEASED, "lot_id", "L", "shipped")
    for status in (LotStatus.ON_HOLD, LotStatus.QUARANTINED, LotStatus.RECALLED):
        with pytest.raises(FailedPrecondition, match=r"^lot_id: lot L is"):
            domain.lot_usable(status, "lot_id", "L", "shipped")


def test_recalled_is_final_and_set_only_by_a_recall() -> None:
    with pytest.raises(InvalidArgument):
        domain.lot_status_target(LotStatus.RECALLED)
    with pytest.raises(InvalidArgument):
        domain.lot_status_target(None)
    assert domain.lot_status_target(LotStatus.ON_HOLD) is LotStatus.ON_HOLD
    with pytest.raises(FailedPrecondition, match=r"^status: "):
        domain.lot_status_change(LotStatus.RECALLED, LotStatus.RELEASED)
    domain.lot_status_change(LotStatus.QUARANTINED, LotStatus.RELEASED)


def test_a_lot_needs_a_code_a_positive_quantity_and_distinct_inputs() -> None:
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_lot("", "m", 0, [InputLot("a", 1), InputLot("a", -1)], LotStatus.RECALLED)
    assert fields(raised.value) == ["code", "inputs[1].lot_id", "inputs[1].quantity", "quantity", "status"]


def test_legs_go_created_picked_up_in_transit_delivered_with_delays_between() -> None:
    domain.leg_transition(LegStatus.CREATED, False, LegStatus.PICKED_UP)
    domain.leg_transition(LegStatus.CREATED, False, LegStatus.DELAYED)
    domain.leg_transition(LegStatus.DELAYED, False, LegStatus.PICKED_UP)
    domain.leg_transition(LegStatus.PICKED_UP, True, LegStatus.DELIVERED)
    domain.leg_transition(LegStatus.DELAYED, True, LegStatus.IN_TRANSIT)
    for current, picked_up, target in [
        (LegStatus.CREATED, False, LegStatus.DELIVERED),
        (LegStatus.DELAYED, False, LegStatus.IN_TRANSIT),
        (LegStatus.DELAYED, True, LegStatus.PICKED_UP),
        (LegStatus.DELIVERED, True, LegStatus.IN_TRANSIT),
    ]:
        with pytest.raises(FailedPrecondition, match=r"^status: "):
            domain.leg_transition(current, picked_up, target)
    with pytest.raises(InvalidArgument):
        domain.leg_status_target(LegStatus.CREATED)


def leg(kind: LegKind, source: str, target: str, *lots: InputLot) -> LegPlan:
    return LegPlan(kind, source, target, "k", lots)


def test_an_orders_legs_connect_and_end_at_the_customers_home_from_the_retailer() -> None:
    order = OrderFacts("c", "r", OrderStatus.CONFIRMED)
    domain.validate_legs([leg(LegKind.MAKER_TO_RETAILER, "m", "r"), leg(LegKind.RETAILER_TO_CONSUMER, "r", "c")], order)
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_legs(
            [leg(LegKind.MAKER_TO_RETAILER, "m", "x"), leg(LegKind.MAKER_TO_RETAILER, "r", "someone")], order
        )
    assert fields(raised.value) == [
        "shipment.legs[1].from_party_id",
        "shipment.legs[1].kind",
        "shipment.legs[1].to_party_id",
    ]
    with pytest.raises(FailedPrecondition, match=r"^shipment\.order_id: "):
        domain.validate_legs([leg(LegKind.RETAILER_TO_CONSUMER, "r", "c")], OrderFacts("c", "r", OrderStatus.PLACED))


def test_a_leg_outside_an_order_carries_lots_and_never_goes_to_a_home() -> None:
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_legs([leg(LegKind.RETAILER_TO_CONSUMER, "r", "c")], None)
    assert fields(raised.value) == ["shipment.legs[0].kind", "shipment.legs[0].lots"]
    domain.validate_legs([leg(LegKind.SUPPLIER_TO_MAKER, "s", "m", InputLot("l", 5))], None)


# --- who sees what ---------------------------------------------------------------------------------


def test_order_access_by_role() -> None:
    order = OrderParties("r", "c", frozenset({"m"}))
    assert domain.order_access(Principal(service="gateway"), order) is Access.FULL
    assert domain.order_access(Principal(partner_id="r"), order) is Access.FULL
    assert domain.order_access(Principal(partner_id="x", party_id="c"), order) is Access.FULL
    assert domain.order_access(Principal(partner_id="m"), order) is Access.MAKER
    assert domain.order_access(Principal(partner_id="x"), order) is Access.NONE
    # A maker acting for someone else's customer sees only what a maker sees.
    assert domain.order_access(Principal(partner_id="m", party_id="someone"), order) is Access.MAKER


def test_a_partner_acts_only_as_itself_and_orders_only_for_whom_it_acts() -> None:
    assert domain.own_party(Principal(partner_id="m"), "", "maker_id") == "m"
    assert domain.own_party(Principal(service="s"), "m", "maker_id") == "m"
    with pytest.raises(PermissionDenied, match="maker_id"):
        domain.own_party(Principal(partner_id="m"), "other", "maker_id")
    domain.may_order_for(Principal(partner_id="r", party_id="c"), "c")
    with pytest.raises(PermissionDenied):
        domain.may_order_for(Principal(partner_id="r"), "c")


# --- traces ----------------------------------------------------------------------------------------


def test_a_trace_tree_keeps_each_node_once_under_its_nearest_parent() -> None:
    tree = domain.TraceTree(max_nodes=10)
    assert tree.add("lot/a", "", 0)
    assert tree.add("lot/b", "lot/a", 1, 5)
    assert tree.add("lot/c", "lot/a", 1, 5)
    assert tree.add("lot/d", "lot/b", 2, 1)
    assert not tree.add("lot/d", "lot/c", 2, 1)
    assert [n.node_id for n in tree.ordered()] == ["lot/a", "lot/b", "lot/c", "lot/d"]
    assert tree.nodes["lot/d"].parent_id == "lot/b"
    assert tree.nodes["lot/d"].other_parents == ["lot/c"]
    assert not tree.truncated


def test_a_full_trace_tree_says_it_was_cut_short() -> None:
    tree = domain.TraceTree(max_nodes=2)
    tree.add("a", "", 0)
    tree.add("b", "a", 1)
    assert not tree.add("c", "a", 1)
    assert tree.truncated
    assert set(tree.nodes) == {"a", "b"}


def test_a_redesign_request_has_one_fingerprint_however_often_it_arrives() -> None:
    first = domain.proposal_fingerprint("i", "p", "lighter frame", "reviews")
    assert domain.proposal_fingerprint("i", "p", "lighter frame", "reviews") == first
    assert domain.proposal_fingerprint("i", "p", "stronger frame", "reviews") != first
    with pytest.raises(FailedPrecondition, match=r"^status: "):
        domain.decide_proposal(domain.ProposalStatus.CONFIRMED, "declined")
