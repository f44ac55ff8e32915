"""Investigation and corrective action: the case's steps in order, root cause, actions with owners
and due dates, supplier corrective-action requests across tiers, and closure after an
effectiveness check that must pass."""

from __future__ import annotations

import grpc
from improvement_testing import SERVICE, Harness, customer, in_days, invalid, partner, refused

from collabnet.improvement.v1 import events_pb2 as ev
from collabnet.improvement.v1 import improvement_pb2 as pb


async def test_the_case_moves_through_its_states_in_order_with_every_transition_timed(h: Harness) -> None:
    _, case = await h.negative_case()
    cid = case.case_id
    await refused(
        h.improvement.StartInvestigation(pb.StartInvestigationRequest(case_id=cid), metadata=h.world.as_maker),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    await refused(
        h.improvement.ResolveCase(pb.ResolveCaseRequest(case_id=cid), metadata=h.world.as_maker),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    _, resolved = await h.resolved_case()
    states = [(t.from_state, t.to_state) for t in resolved.transitions]
    assert states == [
        (pb.CASE_STATE_UNSPECIFIED, pb.CASE_STATE_OPEN),
        (pb.CASE_STATE_OPEN, pb.CASE_STATE_ENGAGED),
        (pb.CASE_STATE_ENGAGED, pb.CASE_STATE_INVESTIGATING),
        (pb.CASE_STATE_INVESTIGATING, pb.CASE_STATE_RESOLUTION_PROPOSED),
        (pb.CASE_STATE_RESOLUTION_PROPOSED, pb.CASE_STATE_RESOLVED),
    ]
    times = [t.transition_time.ToDatetime() for t in resolved.transitions]
    assert times == sorted(times)
    assert all(t.HasField("time_in_previous_state") for t in resolved.transitions)
    assert resolved.transitions[-1].actor == f"party:{h.world.customer}"
    assert resolved.root_cause.whys[1] == "the seal is too thin"
    assert resolved.resolution == "A replacement kettle with the new seal."


async def test_a_resolution_needs_a_root_cause_and_can_go_back_to_investigation(h: Harness) -> None:
    _, case = await h.investigating_case()
    cid = case.case_id
    await refused(
        h.improvement.ProposeResolution(
            pb.ProposeResolutionRequest(case_id=cid, resolution="A refund."), metadata=h.world.as_maker
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    categories = await h.improvement.RecordRootCause(
        pb.RecordRootCauseRequest(
            case_id=cid,
            root_cause=pb.RootCause(
                method=pb.ROOT_CAUSE_METHOD_CATEGORIES,
                categories=[pb.CAUSE_CATEGORY_SUPPLIER, pb.CAUSE_CATEGORY_MATERIAL],
                summary="The rubber compound changed at the tier-2 supplier.",
            ),
        ),
        metadata=h.world.as_maker,
    )
    assert list(categories.root_cause.categories) == [pb.CAUSE_CATEGORY_SUPPLIER, pb.CAUSE_CATEGORY_MATERIAL]
    assert categories.root_cause.recorded_by == f"partner:{h.world.maker}"
    await h.improvement.ProposeResolution(
        pb.ProposeResolutionRequest(case_id=cid, resolution="A refund."), metadata=h.world.as_maker
    )
    back = await h.improvement.StartInvestigation(
        pb.StartInvestigationRequest(case_id=cid, note="the customer prefers a repair"), metadata=h.world.as_retailer
    )
    assert back.state == pb.CASE_STATE_INVESTIGATING
    await invalid(
        h.improvement.RecordRootCause(
            pb.RecordRootCauseRequest(
                case_id=cid,
                root_cause=pb.RootCause(method=pb.ROOT_CAUSE_METHOD_FIVE_WHYS, whys=["a", "b", "c", "d", "e", "f"]),
            ),
            metadata=h.world.as_maker,
        ),
        "root_cause.whys",
    )
    still = await h.get_case(cid)
    assert list(still.root_cause.categories) == [pb.CAUSE_CATEGORY_SUPPLIER, pb.CAUSE_CATEGORY_MATERIAL]


async def test_a_failed_effectiveness_check_reopens_the_case(h: Harness) -> None:
    review, resolved = await h.resolved_case()
    cid = resolved.case_id
    reopened = await h.improvement.RecordEffectivenessCheck(
        pb.RecordEffectivenessCheckRequest(case_id=cid, passed=False, evidence="two more leaks from the same lot"),
        metadata=h.world.as_maker,
    )
    assert reopened.state == pb.CASE_STATE_INVESTIGATING
    assert reopened.reopen_count == 1
    assert reopened.outcome == ev.CASE_OUTCOME_UNSPECIFIED
    assert [c.passed for c in reopened.effectiveness_checks] == [False]
    assert (reopened.transitions[-1].from_state, reopened.transitions[-1].to_state) == (
        pb.CASE_STATE_RESOLVED,
        pb.CASE_STATE_INVESTIGATING,
    )
    (event,) = await h.log.wait(ev.CaseReopened)
    assert (event.case_id, event.reopen_count, event.reason) == (cid, 1, "two more leaks from the same lot")
    await refused(
        h.improvement.CloseCase(pb.CloseCaseRequest(case_id=cid), metadata=h.world.as_maker),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    # Fixed for real this time: resolve, pass the check, close.
    await h.improvement.ProposeResolution(
        pb.ProposeResolutionRequest(case_id=cid, resolution="New seal supplier."), metadata=h.world.as_maker
    )
    await h.improvement.ResolveCase(pb.ResolveCaseRequest(case_id=cid), metadata=h.world.as_maker)
    await refused(
        h.improvement.CloseCase(pb.CloseCaseRequest(case_id=cid), metadata=h.world.as_maker),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    await h.improvement.RecordEffectivenessCheck(
        pb.RecordEffectivenessCheckRequest(case_id=cid, passed=True, evidence="no leaks in 500 units"),
        metadata=h.world.as_maker,
    )
    closed = await h.improvement.CloseCase(pb.CloseCaseRequest(case_id=cid, note="done"), metadata=h.world.as_retailer)
    assert closed.state == pb.CASE_STATE_CLOSED and closed.HasField("close_time")
    (closed_event,) = await h.log.wait(ev.CaseClosed)
    assert closed_event.outcome == ev.CASE_OUTCOME_RESOLVED
    # The loop can still close after the case did.
    await h.revise(review, 5, version=2)
    await h.until_case(cid, lambda c: c.outcome == ev.CASE_OUTCOME_RECOVERED)
    await refused(
        h.improvement.PostCaseMessage(
            pb.PostCaseMessageRequest(case_id=cid, body="hello"), metadata=h.world.as_customer
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )


async def test_closure_waits_for_every_action_and_supplier_request(h: Harness) -> None:
    _, case = await h.investigating_case()
    cid = case.case_id
    corrective = await h.improvement.AddCaseAction(
        pb.AddCaseActionRequest(
            case_id=cid,
            kind=pb.ACTION_KIND_CORRECTIVE,
            description="Replace the seal in stock",
            owner_id=h.world.maker,
            due_time=in_days(7),
        ),
        metadata=h.world.as_maker,
    )
    preventive = await h.improvement.AddCaseAction(
        pb.AddCaseActionRequest(
            case_id=cid,
            kind=pb.ACTION_KIND_PREVENTIVE,
            description="Incoming inspection of seals",
            owner_id=h.world.s1,
            due_time=in_days(30),
        ),
        metadata=h.world.as_maker,
    )
    assert (corrective.status, corrective.overdue, preventive.owner_id) == (pb.ACTION_STATUS_OPEN, False, h.world.s1)
    # The customer sees the maker's action, not the supplier's.
    seen = await h.get_case(cid, h.world.as_customer)
    assert [a.action_id for a in seen.actions] == [corrective.action_id]
    timeline = await h.improvement.ListCaseEntries(pb.ListCaseEntriesRequest(case_id=cid), metadata=h.world.as_customer)
    assert not any(h.world.s1 in e.body for e in timeline.entries)
    assert len((await h.get_case(cid, h.world.as_maker)).actions) == 2
    scar = await h.improvement.RequestSupplierCorrectiveAction(
        pb.RequestSupplierCorrectiveActionRequest(
            case_id=cid, supplier_id=h.world.s2, problem="Compound too soft", due_time=in_days(14)
        ),
        metadata=h.world.as_maker,
    )
    _, resolved = await _resolve(h, cid)
    await h.improvement.RecordEffectivenessCheck(
        pb.RecordEffectivenessCheckRequest(case_id=cid, passed=True, evidence="no leaks"), metadata=h.world.as_maker
    )
    for action in (corrective, preventive):
        await refused(
            h.improvement.CloseCase(pb.CloseCaseRequest(case_id=cid), metadata=h.world.as_maker),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        await h.improvement.UpdateCaseAction(
            pb.UpdateCaseActionRequest(action_id=action.action_id, status=pb.ACTION_STATUS_DONE),
            metadata=h.world.as_maker,
        )
    await refused(
        h.improvement.CloseCase(pb.CloseCaseRequest(case_id=cid), metadata=h.world.as_maker),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    await h.improvement.RespondToSupplierCorrectiveAction(
        pb.RespondToSupplierCorrectiveActionRequest(
            request_id=scar.request_id,
            containment="Quarantined lot 42",
            root_cause="Curing time shortened",
            corrective_action="Curing time restored and monitored",
        ),
        metadata=partner(h.world.s2),
    )
    await h.improvement.ReviewSupplierCorrectiveAction(
        pb.ReviewSupplierCorrectiveActionRequest(request_id=scar.request_id, accepted=True), metadata=h.world.as_maker
    )
    closed = await h.improvement.CloseCase(pb.CloseCaseRequest(case_id=cid), metadata=h.world.as_maker)
    assert closed.state == pb.CASE_STATE_CLOSED
    assert [a.status for a in closed.actions] == [pb.ACTION_STATUS_DONE, pb.ACTION_STATUS_DONE]
    assert resolved.state == pb.CASE_STATE_RESOLVED


async def _resolve(h: Harness, cid: str) -> tuple[None, pb.Case]:
    await h.improvement.RecordRootCause(
        pb.RecordRootCauseRequest(
            case_id=cid, root_cause=pb.RootCause(method=pb.ROOT_CAUSE_METHOD_FIVE_WHYS, whys=["leaks", "soft compound"])
        ),
        metadata=h.world.as_maker,
    )
    await h.improvement.ProposeResolution(
        pb.ProposeResolutionRequest(case_id=cid, resolution="New seals."), metadata=h.world.as_maker
    )
    return None, await h.improvement.ResolveCase(pb.ResolveCaseRequest(case_id=cid), metadata=h.world.as_maker)


async def test_actions_have_owners_in_the_case_or_its_supply_network_and_future_due_dates(h: Harness) -> None:
    _, case = await h.investigating_case()
    cid = case.case_id

    def action(owner: str, due_days: float) -> pb.AddCaseActionRequest:
        return pb.AddCaseActionRequest(
            case_id=cid,
            kind=pb.ACTION_KIND_CORRECTIVE,
            description="Fix it",
            owner_id=owner,
            due_time=in_days(due_days),
        )

    await invalid(h.improvement.AddCaseAction(action(h.world.outsider, 7), metadata=h.world.as_maker), "owner_id")
    await invalid(h.improvement.AddCaseAction(action(h.world.maker, -1), metadata=h.world.as_maker), "due_time")
    await invalid(
        h.improvement.AddCaseAction(
            pb.AddCaseActionRequest(case_id=cid, owner_id=h.world.maker), metadata=h.world.as_maker
        ),
        "kind",
        "description",
    )
    assert len((await h.get_case(cid)).actions) == 0
    added = await h.improvement.AddCaseAction(action(h.world.retailer, 7), metadata=h.world.as_retailer)
    cancelled = await h.improvement.UpdateCaseAction(
        pb.UpdateCaseActionRequest(action_id=added.action_id, status=pb.ACTION_STATUS_CANCELLED, note="superseded"),
        metadata=h.world.as_maker,
    )
    assert (cancelled.status, cancelled.note) == (pb.ACTION_STATUS_CANCELLED, "superseded")
    await refused(
        h.improvement.UpdateCaseAction(
            pb.UpdateCaseActionRequest(action_id=added.action_id, status=pb.ACTION_STATUS_DONE),
            metadata=h.world.as_maker,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    await invalid(
        h.improvement.UpdateCaseAction(
            pb.UpdateCaseActionRequest(action_id=added.action_id, status=pb.ACTION_STATUS_OPEN),
            metadata=h.world.as_maker,
        ),
        "status",
    )
    await refused(
        h.improvement.UpdateCaseAction(
            pb.UpdateCaseActionRequest(action_id=added.action_id, status=pb.ACTION_STATUS_DONE),
            metadata=h.world.as_customer,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )


async def test_refusing_a_cases_action_or_supplier_request_does_not_name_the_case(h: Harness) -> None:
    _, case = await h.investigating_case()
    cid = case.case_id
    action = await h.improvement.AddCaseAction(
        pb.AddCaseActionRequest(
            case_id=cid,
            kind=pb.ACTION_KIND_CORRECTIVE,
            description="Fix it",
            owner_id=h.world.maker,
            due_time=in_days(7),
        ),
        metadata=h.world.as_maker,
    )
    scar = await h.improvement.RequestSupplierCorrectiveAction(
        pb.RequestSupplierCorrectiveActionRequest(
            case_id=cid, supplier_id=h.world.s1, problem="Seal leaks", due_time=in_days(14)
        ),
        metadata=h.world.as_maker,
    )
    for who in (partner(h.world.outsider), customer(h.world.other_customer, h.world.retailer)):
        for call in (
            h.improvement.UpdateCaseAction(
                pb.UpdateCaseActionRequest(action_id=action.action_id, status=pb.ACTION_STATUS_DONE), metadata=who
            ),
            h.improvement.GetSupplierCorrectiveAction(
                pb.GetSupplierCorrectiveActionRequest(request_id=scar.request_id), metadata=who
            ),
            h.improvement.ReviewSupplierCorrectiveAction(
                pb.ReviewSupplierCorrectiveActionRequest(request_id=scar.request_id, accepted=True), metadata=who
            ),
        ):
            error = await refused(call, grpc.StatusCode.PERMISSION_DENIED)
            assert cid not in (error.details() or "")


async def test_a_supplier_sees_only_its_own_corrective_action_request(h: Harness) -> None:
    _, case = await h.investigating_case()
    cid = case.case_id
    tier1 = await h.improvement.RequestSupplierCorrectiveAction(
        pb.RequestSupplierCorrectiveActionRequest(
            case_id=cid, supplier_id=h.world.s1, problem="Seal leaks", due_time=in_days(14)
        ),
        metadata=h.world.as_maker,
    )
    tier2 = await h.improvement.RequestSupplierCorrectiveAction(
        pb.RequestSupplierCorrectiveActionRequest(
            case_id=cid, supplier_id=h.world.s2, problem="Compound soft", due_time=in_days(14)
        ),
        metadata=h.world.as_maker,
    )
    assert (tier1.supplier_tier, tier1.item, tier2.supplier_tier, tier2.item) == (1, "lid seal", 2, "rubber compound")
    assert tier1.status == pb.SCAR_STATUS_REQUESTED
    requested = await h.log.wait(ev.CorrectiveActionRequested, 2)
    assert {(e.supplier_id, e.case_id, e.requested_by) for e in requested} == {
        (h.world.s1, cid, h.world.maker),
        (h.world.s2, cid, h.world.maker),
    }
    s1 = partner(h.world.s1)
    own = await h.improvement.GetSupplierCorrectiveAction(
        pb.GetSupplierCorrectiveActionRequest(request_id=tier1.request_id), metadata=s1
    )
    assert own.problem == "Seal leaks"
    await refused(
        h.improvement.GetSupplierCorrectiveAction(
            pb.GetSupplierCorrectiveActionRequest(request_id=tier2.request_id), metadata=s1
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    listed = await h.improvement.ListSupplierCorrectiveActions(
        pb.ListSupplierCorrectiveActionsRequest(supplier_id=h.world.s1), metadata=s1
    )
    assert [r.request_id for r in listed.requests] == [tier1.request_id]
    for call in (
        h.get_case(cid, s1),
        h.improvement.ListCaseEntries(pb.ListCaseEntriesRequest(case_id=cid), metadata=s1),
        h.improvement.ListSupplierCorrectiveActions(pb.ListSupplierCorrectiveActionsRequest(case_id=cid), metadata=s1),
        h.improvement.ListSupplierCorrectiveActions(
            pb.ListSupplierCorrectiveActionsRequest(supplier_id=h.world.s2), metadata=s1
        ),
    ):
        await refused(call, grpc.StatusCode.PERMISSION_DENIED)
    all_of_case = await h.improvement.ListSupplierCorrectiveActions(
        pb.ListSupplierCorrectiveActionsRequest(case_id=cid), metadata=h.world.as_retailer
    )
    assert {r.request_id for r in all_of_case.requests} == {tier1.request_id, tier2.request_id}
    await refused(
        h.improvement.GetSupplierCorrectiveAction(
            pb.GetSupplierCorrectiveActionRequest(request_id=tier1.request_id), metadata=h.world.as_customer
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )


async def test_a_supplier_responds_and_the_requester_accepts_or_asks_again(h: Harness) -> None:
    _, case = await h.investigating_case()
    scar = await h.improvement.RequestSupplierCorrectiveAction(
        pb.RequestSupplierCorrectiveActionRequest(
            case_id=case.case_id, supplier_id=h.world.s1, problem="Seal leaks", due_time=in_days(14)
        ),
        metadata=h.world.as_maker,
    )
    rid = scar.request_id
    await refused(
        h.improvement.RequestSupplierCorrectiveAction(
            pb.RequestSupplierCorrectiveActionRequest(
                case_id=case.case_id, supplier_id=h.world.s1, problem="again", due_time=in_days(3)
            ),
            metadata=h.world.as_maker,
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    respond = pb.RespondToSupplierCorrectiveActionRequest(
        request_id=rid, containment="Stock sorted", root_cause="Mould worn", corrective_action="New mould"
    )
    await refused(
        h.improvement.RespondToSupplierCorrectiveAction(respond, metadata=partner(h.world.s2)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await refused(
        h.improvement.RespondToSupplierCorrectiveAction(respond, metadata=h.world.as_maker),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    responded = await h.improvement.RespondToSupplierCorrectiveAction(respond, metadata=partner(h.world.s1))
    assert responded.status == pb.SCAR_STATUS_RESPONDED
    assert (responded.response.containment, responded.response.root_cause, responded.response.corrective_action) == (
        "Stock sorted",
        "Mould worn",
        "New mould",
    )
    await refused(
        h.improvement.ReviewSupplierCorrectiveAction(
            pb.ReviewSupplierCorrectiveActionRequest(request_id=rid, accepted=True), metadata=partner(h.world.s1)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await invalid(
        h.improvement.ReviewSupplierCorrectiveAction(
            pb.ReviewSupplierCorrectiveActionRequest(request_id=rid, accepted=False), metadata=h.world.as_maker
        ),
        "comment",
    )
    rejected = await h.improvement.ReviewSupplierCorrectiveAction(
        pb.ReviewSupplierCorrectiveActionRequest(
            request_id=rid, accepted=False, comment="Containment must cover transit stock"
        ),
        metadata=h.world.as_maker,
    )
    assert rejected.status == pb.SCAR_STATUS_REJECTED
    again = pb.RespondToSupplierCorrectiveActionRequest(
        request_id=rid, containment="Stock and transit sorted", root_cause="Mould worn", corrective_action="New mould"
    )
    await h.improvement.RespondToSupplierCorrectiveAction(again, metadata=partner(h.world.s1))
    accepted = await h.improvement.ReviewSupplierCorrectiveAction(
        pb.ReviewSupplierCorrectiveActionRequest(request_id=rid, accepted=True), metadata=h.world.as_retailer
    )
    assert (accepted.status, accepted.response.containment) == (pb.SCAR_STATUS_ACCEPTED, "Stock and transit sorted")
    await refused(
        h.improvement.RespondToSupplierCorrectiveAction(again, metadata=partner(h.world.s1)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )


async def test_a_corrective_action_request_goes_only_to_the_products_supply_network(h: Harness) -> None:
    _, case = await h.investigating_case()
    await invalid(
        h.improvement.RequestSupplierCorrectiveAction(
            pb.RequestSupplierCorrectiveActionRequest(
                case_id=case.case_id, supplier_id=h.world.outsider, problem="Glass cracks", due_time=in_days(14)
            ),
            metadata=h.world.as_maker,
        ),
        "supplier_id",
    )
    await refused(
        h.improvement.RequestSupplierCorrectiveAction(
            pb.RequestSupplierCorrectiveActionRequest(
                case_id=case.case_id, supplier_id=h.world.s1, problem="Seal leaks", due_time=in_days(14)
            ),
            metadata=partner(h.world.retailer2),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    listed = await h.improvement.ListSupplierCorrectiveActions(
        pb.ListSupplierCorrectiveActionsRequest(case_id=case.case_id), metadata=SERVICE
    )
    assert list(listed.requests) == []
    assert not h.log.of(ev.CorrectiveActionRequested)
