"""Feedback cases from review events: opening by policy, exactly once, engaging the customer, the
timeline and who sees it, resolution and the one neutral invitation, and closing the loop."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import grpc
import sqlalchemy as sa
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from improvement_testing import SERVICE, Harness, customer, in_days, invalid, partner, refused
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlmodel import col

from collabnet.improvement.v1 import events_pb2 as ev
from collabnet.improvement.v1 import improvement_pb2 as pb
from collabnet.reviews.v1 import events_pb2 as reviews
from collabnet.supplychain.v1 import events_pb2 as supplychain
from collabnet_improvement import app, domain, events, store
from collabnet_kit.testing import eventually


async def test_a_2_star_review_delivered_three_times_opens_exactly_one_case(h: Harness) -> None:
    event = reviews.ReviewPublished(
        review_id="review-thrice",
        product_id=h.world.product,
        revision=1,
        author_id=h.world.customer,
        channel_partner_id=h.world.retailer,
        rating=2,
    )
    event_id = await h.publish(event, "reviews")
    await h.publish(event, "reviews", event_id=event_id, attempt=1)  # a redelivery the inbox catches
    await h.publish(event, "reviews")  # the same review under a new event id: only the unique review id catches it
    case = await h.case_of("review-thrice")
    await h.settle()
    assert [c.case_id for c in await h.cases_of()] == [case.case_id]
    assert len(h.log.of(ev.CaseOpened)) == 1
    opened = h.log.of(ev.CaseOpened)[0]
    assert (opened.case_id, opened.review_id, opened.rating) == (case.case_id, "review-thrice", 2)
    assert (opened.maker_id, opened.retailer_id, opened.customer_id) == (
        h.world.maker,
        h.world.retailer,
        h.world.customer,
    )
    metrics = await h.improvement.GetProductMetrics(
        pb.GetProductMetricsRequest(product_id=h.world.product), metadata=SERVICE
    )
    assert metrics.review_count == 1


async def test_a_case_is_assigned_to_the_maker_and_the_retailer_with_their_targets(h: Harness) -> None:
    _, case = await h.negative_case(1)
    assert case.state == pb.CASE_STATE_OPEN
    assert case.outcome == ev.CASE_OUTCOME_UNSPECIFIED
    assert {(a.partner_id, a.role) for a in case.assignments} == {
        (h.world.maker, pb.CASE_ROLE_MAKER),
        (h.world.retailer, pb.CASE_ROLE_RETAILER),
    }
    assert all(a.first_engagement_target.ToTimedelta() == timedelta(hours=24) for a in case.assignments)
    assert case.opening_rating == case.current_rating == 1
    assert case.recovery_rating_threshold == 4
    assert [(t.from_state, t.to_state) for t in case.transitions] == [(pb.CASE_STATE_UNSPECIFIED, pb.CASE_STATE_OPEN)]


async def test_the_review_events_span_names_the_case_it_opened(h: Harness, span_exporter: InMemorySpanExporter) -> None:
    _, case = await h.negative_case(2)
    (span,) = [
        s for s in span_exporter.get_finished_spans() if (s.attributes or {}).get(events.CASE_ID) == case.case_id
    ]
    assert span.kind == SpanKind.CONSUMER and span.name.endswith("ReviewPublished process")
    (opened,) = [e for e in span.events if e.name == "case opened"]
    assert opened.attributes == {
        events.CASE_ID: case.case_id,
        "collabnet.case.partners": tuple(sorted([h.world.maker, h.world.retailer])),
    }


async def test_reviews_above_the_threshold_open_no_case(h: Harness) -> None:
    three = await h.review(3)
    _, marker = await h.negative_case(2)
    await h.settle()
    assert [c.case_id for c in await h.cases_of()] == [marker.case_id]
    assert three.review_id != marker.review_id


async def test_a_partner_policy_raises_the_threshold_for_its_cases(h: Harness) -> None:
    policy = await h.improvement.UpdatePartnerPolicy(
        pb.UpdatePartnerPolicyRequest(
            policy=pb.PartnerPolicy(case_rating_threshold=3, first_engagement_target=Duration(seconds=3600)),
            update_mask=FieldMask(paths=["case_rating_threshold", "first_engagement_target"]),
        ),
        metadata=h.world.as_retailer,
    )
    assert (policy.case_rating_threshold, policy.recovery_rating_threshold, policy.customized) == (3, 4, True)
    review = await h.review(3)
    case = await h.case_of(review.review_id)
    targets = {a.partner_id: a.first_engagement_target.ToTimedelta() for a in case.assignments}
    assert targets == {h.world.retailer: timedelta(hours=1), h.world.maker: timedelta(hours=24)}
    read = await h.improvement.GetPartnerPolicy(
        pb.GetPartnerPolicyRequest(partner_id=h.world.retailer), metadata=h.world.as_retailer
    )
    assert read == policy
    other = await h.improvement.GetPartnerPolicy(pb.GetPartnerPolicyRequest(partner_id=h.world.maker), metadata=SERVICE)
    assert (other.case_rating_threshold, other.customized) == (2, False)


async def test_a_revision_down_to_the_threshold_opens_the_case(h: Harness) -> None:
    review = await h.review(4)
    await h.revise(review, 2, version=2)
    case = await h.case_of(review.review_id)
    assert case.opened_by_revision
    assert (case.opening_rating, case.current_rating) == (2, 2)
    await h.revise(review, 1, version=3)
    await h.until_case(case.case_id, lambda c: c.current_rating == 1)
    assert len(await h.cases_of()) == 1


async def test_a_later_revision_to_4_stars_marks_the_case_recovered(h: Harness) -> None:
    review, resolved = await h.resolved_case()
    assert resolved.outcome == ev.CASE_OUTCOME_RESOLVED
    await h.revise(review, 4, version=2)
    case = await h.until_case(resolved.case_id, lambda c: c.outcome == ev.CASE_OUTCOME_RECOVERED)
    assert case.current_rating == 4
    outcomes = [e.outcome for e in await h.log.wait(ev.CaseResolved, 2) if e.case_id == case.case_id]
    assert outcomes == [ev.CASE_OUTCOME_RESOLVED, ev.CASE_OUTCOME_RECOVERED]
    metrics = await h.improvement.GetPartnerMetrics(
        pb.GetPartnerMetricsRequest(partner_id=h.world.maker), metadata=h.world.as_maker
    )
    assert (metrics.cases_assigned, metrics.cases_recovered, metrics.recovery_rate) == (1, 1, 1.0)
    product = await h.improvement.GetProductMetrics(
        pb.GetProductMetricsRequest(product_id=h.world.product), metadata=SERVICE
    )
    assert (product.cases_opened, product.cases_recovered, product.recovery_rate) == (1, 1, 1.0)


async def test_a_revision_redelivered_or_out_of_date_changes_nothing(h: Harness) -> None:
    review, resolved = await h.resolved_case()
    event_id = await h.revise(review, 5, version=3)
    await h.until_case(resolved.case_id, lambda c: c.outcome == ev.CASE_OUTCOME_RECOVERED)
    await h.revise(review, 1, version=2)  # an older version arriving late
    await h.publish(
        reviews.ReviewRevised(
            review_id=review.review_id, product_id=review.product_id, revision=1, new_rating=5, version=3
        ),
        "reviews",
        event_id=event_id,
        attempt=1,
    )
    await h.settle()
    case = await h.get_case(resolved.case_id)
    assert (case.current_rating, case.outcome) == (5, ev.CASE_OUTCOME_RECOVERED)
    assert len([e for e in h.log.of(ev.CaseResolved) if e.outcome == ev.CASE_OUTCOME_RECOVERED]) == 1


async def test_a_withdrawal_records_not_recovered(h: Harness) -> None:
    review, case = await h.engaged_case()
    await h.withdraw(review)
    withdrawn = await h.until_case(case.case_id, lambda c: c.review_withdrawn)
    assert withdrawn.outcome == ev.CASE_OUTCOME_NOT_RECOVERED
    resolved = await h.log.wait(ev.CaseResolved)
    assert resolved[0].outcome == ev.CASE_OUTCOME_NOT_RECOVERED
    await h.revise(review, 5, version=2)  # after a withdrawal, a revision is out of date
    await h.settle()
    assert (await h.get_case(case.case_id)).outcome == ev.CASE_OUTCOME_NOT_RECOVERED


async def test_no_revision_within_the_window_records_not_recovered(h: Harness) -> None:
    review, resolved = await h.resolved_case()
    assert resolved.recovery_window.ToTimedelta() == timedelta(days=30)
    db = h.service.runtime.db  # type: ignore[union-attr]
    assert await events.mark_not_recovered(db, datetime.now(UTC) + timedelta(days=29)) == 0
    assert await events.mark_not_recovered(db, datetime.now(UTC) + timedelta(days=31)) == 1
    assert await events.mark_not_recovered(db, datetime.now(UTC) + timedelta(days=32)) == 0
    case = await h.get_case(resolved.case_id)
    assert case.outcome == ev.CASE_OUTCOME_NOT_RECOVERED
    await h.revise(review, 4, version=2)  # late, but the customer did come round
    await h.until_case(case.case_id, lambda c: c.outcome == ev.CASE_OUTCOME_RECOVERED)


async def test_the_periodic_job_closes_loops_whose_window_ran_out_and_stops_cleanly(h: Harness) -> None:
    _, resolved = await h.resolved_case()
    db = h.service.runtime.db  # type: ignore[union-attr]
    # Thirty-one days later, as far as this case is concerned.
    async with db.transaction() as session:
        await session.exec(
            sa.update(store.CaseRow)
            .where(col(store.CaseRow.id) == resolved.case_id)
            .values(recovery_deadline=datetime.now(UTC) - timedelta(days=1))
        )
    job = asyncio.create_task(app.recovery_job(db, 0.05)())
    try:
        case = await h.until_case(resolved.case_id, lambda c: c.outcome == ev.CASE_OUTCOME_NOT_RECOVERED)
    finally:
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job
    assert case.HasField("outcome_time")
    (event,) = [e for e in await h.log.wait(ev.CaseResolved, 2) if e.outcome == ev.CASE_OUTCOME_NOT_RECOVERED]
    assert event.case_id == resolved.case_id
    timeline = await h.improvement.ListCaseEntries(
        pb.ListCaseEntriesRequest(case_id=case.case_id), metadata=h.world.as_customer
    )
    assert timeline.entries[-1].body == "The recovery window ended without a revision."


async def test_engagement_is_timed_against_the_partners_target(h: Harness) -> None:
    _, case = await h.negative_case()
    engaged = await h.improvement.EngageCase(
        pb.EngageCaseRequest(case_id=case.case_id, message="Sorry to hear that; we will call you today."),
        metadata=h.world.as_retailer,
    )
    assert engaged.state == pb.CASE_STATE_ENGAGED
    retailer = next(a for a in engaged.assignments if a.partner_id == h.world.retailer)
    assert retailer.within_target and retailer.engage_time.seconds > 0
    assert retailer.time_to_first_engagement.ToTimedelta() < timedelta(hours=24)
    maker = next(a for a in engaged.assignments if a.partner_id == h.world.maker)
    assert not maker.HasField("engage_time")
    assert [(t.from_state, t.to_state) for t in engaged.transitions][-1] == (pb.CASE_STATE_OPEN, pb.CASE_STATE_ENGAGED)
    assert engaged.transitions[-1].time_in_previous_state.ToTimedelta() >= timedelta(0)
    (event,) = await h.log.wait(ev.CaseEngaged)
    assert (event.partner_id, event.within_target) == (h.world.retailer, True)
    await refused(
        h.improvement.EngageCase(
            pb.EngageCaseRequest(case_id=case.case_id, message="Hello again"), metadata=h.world.as_retailer
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    # The maker's first message to the customer is its engagement.
    await h.improvement.PostCaseMessage(
        pb.PostCaseMessageRequest(case_id=case.case_id, body="The maker here: we are looking into the seal."),
        metadata=h.world.as_maker,
    )
    await h.log.wait(ev.CaseEngaged, 2)
    metrics = await h.improvement.GetPartnerMetrics(
        pb.GetPartnerMetricsRequest(partner_id=h.world.maker), metadata=h.world.as_maker
    )
    assert (metrics.engaged, metrics.engaged_within_target, metrics.within_target_rate) == (1, 1, 1.0)
    assert metrics.mean_hours_to_first_engagement < 1


async def test_internal_notes_never_reach_the_customers_view(h: Harness) -> None:
    _, case = await h.engaged_case()
    cid = case.case_id
    await h.improvement.PostCaseMessage(
        pb.PostCaseMessageRequest(case_id=cid, body="Third complaint this month about S1's seals.", internal=True),
        metadata=h.world.as_maker,
    )
    await h.improvement.PostCaseMessage(
        pb.PostCaseMessageRequest(case_id=cid, body="It leaks from the lid, photo attached."),
        metadata=h.world.as_customer,
    )
    await h.improvement.StartInvestigation(pb.StartInvestigationRequest(case_id=cid), metadata=h.world.as_maker)
    await h.improvement.RequestSupplierCorrectiveAction(
        pb.RequestSupplierCorrectiveActionRequest(
            case_id=cid, supplier_id=h.world.s1, problem="Seals leak", due_time=in_days(14)
        ),
        metadata=h.world.as_maker,
    )
    partner_view = await h.improvement.ListCaseEntries(
        pb.ListCaseEntriesRequest(case_id=cid), metadata=h.world.as_maker
    )
    customer_view = await h.improvement.ListCaseEntries(
        pb.ListCaseEntriesRequest(case_id=cid), metadata=h.world.as_customer
    )
    partner_bodies = [e.body for e in partner_view.entries]
    customer_bodies = [e.body for e in customer_view.entries]
    assert "Third complaint this month about S1's seals." in partner_bodies
    assert not any("S1's seals" in b or "Seals leak" in b for b in customer_bodies)
    assert not any(e.internal for e in customer_view.entries)
    assert {e.kind for e in partner_view.entries} >= {pb.ENTRY_KIND_INTERNAL_NOTE, pb.ENTRY_KIND_SUPPLIER_REQUEST}
    assert "It leaks from the lid, photo attached." in customer_bodies
    mine = next(e for e in customer_view.entries if e.body.startswith("It leaks"))
    assert (mine.author_party_id, mine.kind) == (h.world.customer, pb.ENTRY_KIND_MESSAGE)
    customer_case = await h.get_case(cid, h.world.as_customer)
    assert customer_case.view == pb.CASE_VIEW_CUSTOMER
    assert len(customer_case.supplier_corrective_actions) == 0
    assert len((await h.get_case(cid, h.world.as_maker)).supplier_corrective_actions) == 1
    # Paging the customer's view never surfaces an internal entry either.
    seen, token = [], ""
    while True:
        page = await h.improvement.ListCaseEntries(
            pb.ListCaseEntriesRequest(case_id=cid, page_size=1, page_token=token), metadata=h.world.as_customer
        )
        seen += list(page.entries)
        token = page.next_page_token
        if not token:
            break
    assert [e.entry_id for e in seen] == [e.entry_id for e in customer_view.entries]
    await refused(
        h.improvement.PostCaseMessage(
            pb.PostCaseMessageRequest(case_id=cid, body="peek", internal=True), metadata=h.world.as_customer
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )


async def test_a_case_is_visible_only_to_its_partners_its_customer_and_services(h: Harness) -> None:
    _, case = await h.negative_case()
    cid = case.case_id
    assert (await h.get_case(cid, h.world.as_retailer)).view == pb.CASE_VIEW_PARTNER
    assert (await h.get_case(cid, SERVICE)).view == pb.CASE_VIEW_PARTNER
    for outsider in (
        partner(h.world.retailer2),
        partner(h.world.s1),
        customer(h.world.other_customer, h.world.retailer),
    ):
        await refused(h.get_case(cid, outsider), grpc.StatusCode.PERMISSION_DENIED)
        await refused(
            h.improvement.ListCaseEntries(pb.ListCaseEntriesRequest(case_id=cid), metadata=outsider),
            grpc.StatusCode.PERMISSION_DENIED,
        )
    # The retailer acting for the customer is the customer, not the retailer.
    assert (await h.get_case(cid, customer(h.world.customer, h.world.retailer))).view == pb.CASE_VIEW_CUSTOMER
    listed = await h.improvement.ListCases(pb.ListCasesRequest(), metadata=partner(h.world.retailer2))
    assert list(listed.cases) == []
    mine = await h.improvement.ListCases(pb.ListCasesRequest(), metadata=h.world.as_customer)
    assert [c.case_id for c in mine.cases] == [cid]
    await refused(
        h.improvement.ListCases(pb.ListCasesRequest(partner_id=h.world.maker), metadata=h.world.as_retailer),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await refused(
        h.improvement.ListCases(pb.ListCasesRequest(customer_id=h.world.other_customer), metadata=h.world.as_customer),
        grpc.StatusCode.PERMISSION_DENIED,
    )


async def test_list_cases_filters_and_pages_newest_first(h: Harness) -> None:
    first = await h.review(2)
    second = await h.review(1, author=h.world.other_customer)
    third = await h.review(2, channel=h.world.retailer2)
    for review in (first, second, third):
        await h.case_of(review.review_id)
    ids, token = [], ""
    while True:
        page = await h.improvement.ListCases(
            pb.ListCasesRequest(page_size=2, page_token=token), metadata=h.world.as_maker
        )
        ids += [c.review_id for c in page.cases]
        token = page.next_page_token
        if not token:
            break
    assert ids == [third.review_id, second.review_id, first.review_id]
    retailer = await h.improvement.ListCases(pb.ListCasesRequest(), metadata=h.world.as_retailer)
    assert {c.review_id for c in retailer.cases} == {first.review_id, second.review_id}
    by_customer = await h.improvement.ListCases(
        pb.ListCasesRequest(customer_id=h.world.other_customer), metadata=SERVICE
    )
    assert [c.review_id for c in by_customer.cases] == [second.review_id]
    open_ones = await h.improvement.ListCases(
        pb.ListCasesRequest(state=pb.CASE_STATE_OPEN, outcome=ev.CASE_OUTCOME_UNSPECIFIED), metadata=h.world.as_maker
    )
    assert len(open_ones.cases) == 3
    await invalid(h.improvement.ListCases(pb.ListCasesRequest(page_token="nonsense"), metadata=SERVICE), "page_token")
    await invalid(h.improvement.ListCases(pb.ListCasesRequest(page_size=501), metadata=SERVICE), "page_size")
    await invalid(h.improvement.ListCases(pb.ListCasesRequest(state=99), metadata=SERVICE), "state")  # type: ignore[arg-type]


async def test_after_resolution_the_customer_gets_one_neutral_invitation_to_update(h: Harness) -> None:
    _, resolved = await h.resolved_case()
    cid = resolved.case_id
    assert resolved.state == pb.CASE_STATE_RESOLVED
    assert resolved.HasField("update_invitation_time")
    notes = await h.improvement.ListNotifications(
        pb.ListNotificationsRequest(party_id=h.world.customer), metadata=h.world.as_customer
    )
    (invitation,) = [n for n in notes.notifications if n.kind == pb.NOTIFICATION_KIND_REVIEW_UPDATE_INVITATION]
    assert invitation.body == domain.UPDATE_INVITATION_TEXT
    assert (invitation.case_id, invitation.review_id) == (cid, resolved.review_id)
    for word in ("star", "incentive", "voucher", "discount", "better rating"):
        assert word not in invitation.body.lower()
    # A failed check reopens the case; resolving it again sends no second invitation.
    await h.improvement.RecordEffectivenessCheck(
        pb.RecordEffectivenessCheckRequest(case_id=cid, passed=False, evidence="still leaks"), metadata=h.world.as_maker
    )
    await h.improvement.ProposeResolution(
        pb.ProposeResolutionRequest(case_id=cid, resolution="A second replacement."), metadata=h.world.as_maker
    )
    await h.improvement.ResolveCase(pb.ResolveCaseRequest(case_id=cid), metadata=h.world.as_maker)
    notes = await h.improvement.ListNotifications(
        pb.ListNotificationsRequest(party_id=h.world.customer), metadata=SERVICE
    )
    assert [n.kind for n in notes.notifications] == [pb.NOTIFICATION_KIND_REVIEW_UPDATE_INVITATION]
    timeline = await h.improvement.ListCaseEntries(pb.ListCaseEntriesRequest(case_id=cid), metadata=h.world.as_customer)
    assert [e.kind for e in timeline.entries].count(pb.ENTRY_KIND_UPDATE_INVITATION) == 1
    await refused(
        h.improvement.ListNotifications(
            pb.ListNotificationsRequest(party_id=h.world.customer), metadata=h.world.as_retailer
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )


async def test_outreach_that_asks_for_a_better_rating_is_refused_and_nothing_is_written(h: Harness) -> None:
    _, case = await h.negative_case()
    for ask in (
        "Could you please update your review once this is sorted?",
        "We would love a 5-star rating after this!",
        "Happy to send a voucher if you change your rating.",
        "Would you consider removing the review?",
    ):
        await invalid(
            h.improvement.EngageCase(
                pb.EngageCaseRequest(case_id=case.case_id, message=ask), metadata=h.world.as_retailer
            ),
            "message",
        )
        await invalid(
            h.improvement.PostCaseMessage(
                pb.PostCaseMessageRequest(case_id=case.case_id, body=ask), metadata=h.world.as_maker
            ),
            "body",
        )
    after = await h.get_case(case.case_id)
    assert after.state == pb.CASE_STATE_OPEN
    assert not any(a.HasField("engage_time") for a in after.assignments)
    entries = await h.improvement.ListCaseEntries(pb.ListCaseEntriesRequest(case_id=case.case_id), metadata=SERVICE)
    assert [e.kind for e in entries.entries] == [pb.ENTRY_KIND_REVIEW_CHANGE]
    # An internal note may speak of ratings: the customer never reads it.
    await h.improvement.PostCaseMessage(
        pb.PostCaseMessageRequest(case_id=case.case_id, body="a 2-star review, third this month", internal=True),
        metadata=h.world.as_maker,
    )


async def test_a_case_opened_before_the_maker_was_known_is_assigned_to_it_later(h: Harness) -> None:
    review = await h.review(1, product="late-product")

    async def opened() -> pb.Case | None:
        found = await h.cases_of("late-product")
        return found[0] if found else None

    case = await eventually(opened)
    assert case.maker_id == ""
    assert [a.partner_id for a in case.assignments] == [h.world.retailer]
    await h.publish(
        supplychain.ProductRegistered(product_id="late-product", name="Toaster", maker_id=h.world.maker, revision=1),
        "supplychain",
    )
    assigned = await h.until_case(case.case_id, lambda c: c.maker_id == h.world.maker)
    assert {a.partner_id for a in assigned.assignments} == {h.world.maker, h.world.retailer}
    assert (await h.get_case(case.case_id, h.world.as_maker)).review_id == review.review_id
