"""The ImprovementService servicer: protos in, domain rules and store queries, protos out."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet.improvement.v1 import events_pb2 as ev
from collabnet.improvement.v1 import improvement_pb2 as pb
from collabnet.improvement.v1 import improvement_pb2_grpc
from collabnet_improvement import convert, domain, events, store
from collabnet_improvement.convert import ident, optional_ident
from collabnet_improvement.domain import Actor, CaseAccess, CaseState, Outcome, Stage
from collabnet_improvement.events import SOURCE, add_entry, new_id, now, transition
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
from collabnet_kit.principal import current_principal
from collabnet_kit.timestamps import moment, timestamp

_INVESTIGATION_STATES = (CaseState.INVESTIGATING.value, CaseState.RESOLUTION_PROPOSED.value, CaseState.RESOLVED.value)
_OBJECTIVE_FIELDS = ("description", "target", "forecast", "due_time")
_INITIATIVE_FIELDS = ("title", "description", "kind", "product_id")


@dataclass(frozen=True)
class CaseContext:
    case: store.CaseRow
    partners: list[store.CasePartnerRow]
    access: CaseAccess

    def assignment(self, partner_id: str | None) -> store.CasePartnerRow | None:
        return next((p for p in self.partners if p.partner_id == partner_id), None)


def _assigned(found: CaseContext, partner_id: str) -> bool:
    """Whether the partner is assigned to the case; actions of others (suppliers) are internal."""
    return found.assignment(partner_id) is not None


class ImprovementApi(improvement_pb2_grpc.ImprovementServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- shared ------------------------------------------------------------------------------------

    async def _case(self, session: AsyncSession, case_id: str, actor: Actor, *, lock: bool = False) -> CaseContext:
        if lock:
            case = await store.lock(session, store.CaseRow, case_id, "case")
        else:
            case = await store.require(session, store.CaseRow, case_id, "case")
        partners = await store.case_partners(session, case.id)
        access = domain.case_access(actor, case.id, case.customer_id, [p.partner_id for p in partners])
        return CaseContext(case, partners, access)

    async def _partner_case(self, session: AsyncSession, case_id: str, actor: Actor, what: str) -> CaseContext:
        found = await self._case(session, case_id, actor, lock=True)
        domain.require_partner_access(found.access, what)
        return found

    async def _case_reply(self, session: AsyncSession, case: store.CaseRow, access: CaseAccess) -> pb.Case:
        (bundle,) = await store.case_bundles(session, [case])
        return convert.case_proto(bundle, access, now())

    async def _initiative_role(self, session: AsyncSession, row: store.InitiativeRow, actor: Actor) -> str | None:
        """owner, stakeholder, participant, service, or None when the initiative is not the actor's to see."""
        if actor.service:
            return "service"
        if actor.party is not None:
            return "participant" if actor.party in await store.participants(session, initiative_id=row.id) else None
        if actor.partner == row.owner_id:
            return "owner"
        held = await session.get(store.StakeholderRow, (row.id, f"partner:{actor.partner}"))
        return "stakeholder" if held is not None else None

    async def _initiative(
        self,
        session: AsyncSession,
        initiative_id: str,
        actor: Actor,
        *,
        allow: tuple[str, ...],
        what: str,
        lock: bool = False,
        asked: str = "",
    ) -> store.InitiativeRow:
        """The initiative, when the actor may ``what``; ``asked`` names what the caller asked for
        (an objective), so that a refusal does not name an initiative the caller may not see."""
        if lock:
            row = await store.lock(session, store.InitiativeRow, initiative_id, "initiative")
        else:
            row = await store.require(session, store.InitiativeRow, initiative_id, "initiative")
        role = await self._initiative_role(session, row, actor)
        if role is None:
            if asked:
                raise PermissionDenied(
                    f"{asked} is visible to its initiative's owner, partner stakeholders and participants"
                )
            raise PermissionDenied(
                f"initiative {row.id} is visible to its owner, its partner stakeholders and participants"
            )
        if role != "service" and role not in allow:
            who = " or ".join(allow)
            raise PermissionDenied(f"only the initiative's {who} may {what}; the caller is {actor.label}")
        return row

    async def _initiative_reply(self, session: AsyncSession, row: store.InitiativeRow) -> pb.Initiative:
        (bundle,) = await store.initiative_bundles(session, [row])
        return convert.initiative_proto(bundle, now())

    # --- policy ------------------------------------------------------------------------------------

    async def GetPartnerPolicy(self, request: pb.GetPartnerPolicyRequest, context: Any) -> pb.PartnerPolicy:
        actor = Actor.of(current_principal())
        partner_id = ident(request.partner_id, "partner_id")
        domain.require_own_partner(actor, partner_id, "the case policy")
        async with self.db.read() as session:
            row = await session.get(store.PolicyRow, partner_id)
        policy = store.to_policy(row) if row is not None else domain.DEFAULT_POLICY
        return convert.policy_proto(partner_id, policy, row)

    async def UpdatePartnerPolicy(self, request: pb.UpdatePartnerPolicyRequest, context: Any) -> pb.PartnerPolicy:
        actor = Actor.of(current_principal())
        given = request.policy
        partner_id = optional_ident(given.partner_id, "policy.partner_id") or actor.partner or ""
        if not partner_id:
            raise InvalidArgument.field("policy.partner_id", "is required")
        domain.require_own_partner(actor, partner_id, "the case policy")
        paths = convert.mask_paths(request.update_mask, domain.POLICY_FIELDS, default_all=True)
        default = domain.DEFAULT_POLICY
        async with self.db.transaction() as session:
            row = await session.get(store.PolicyRow, partner_id)
            current = store.to_policy(row) if row is not None else default
            values = {
                "case_threshold": current.case_threshold,
                "recovery_threshold": current.recovery_threshold,
                "engagement_target": current.engagement_target,
                "recovery_window": current.recovery_window,
            }
            if "case_rating_threshold" in paths:
                values["case_threshold"] = given.case_rating_threshold or default.case_threshold
            if "recovery_rating_threshold" in paths:
                values["recovery_threshold"] = given.recovery_rating_threshold or default.recovery_threshold
            if "first_engagement_target" in paths:
                values["engagement_target"] = (
                    convert.timedelta_of(given.first_engagement_target, "policy.first_engagement_target")
                    if given.HasField("first_engagement_target")
                    else default.engagement_target
                )
            if "recovery_window" in paths:
                values["recovery_window"] = (
                    convert.timedelta_of(given.recovery_window, "policy.recovery_window")
                    if given.HasField("recovery_window")
                    else default.recovery_window
                )
            policy = domain.Policy(**values)  # type: ignore[arg-type]
            domain.validate_policy(policy)
            if row is None:
                row = store.PolicyRow(
                    partner_id=partner_id,
                    case_threshold=0,
                    recovery_threshold=0,
                    engagement_target_seconds=0,
                    recovery_window_seconds=0,
                    updated_at=now(),
                )
            row.case_threshold = policy.case_threshold
            row.recovery_threshold = policy.recovery_threshold
            row.engagement_target_seconds = int(policy.engagement_target.total_seconds())
            row.recovery_window_seconds = int(policy.recovery_window.total_seconds())
            row.updated_at = now()
            session.add(row)
        return convert.policy_proto(partner_id, policy, row)

    # --- cases: reading ----------------------------------------------------------------------------

    async def GetCase(self, request: pb.GetCaseRequest, context: Any) -> pb.Case:
        actor = Actor.of(current_principal())
        case_id = ident(request.case_id, "case_id")
        async with self.db.read() as session:
            found = await self._case(session, case_id, actor)
            return await self._case_reply(session, found.case, found.access)

    async def ListCases(self, request: pb.ListCasesRequest, context: Any) -> pb.ListCasesResponse:
        actor = Actor.of(current_principal())
        size = domain.page_size(request.page_size)
        before = convert.decode_cursor(request.page_token)
        partner_id = optional_ident(request.partner_id, "partner_id")
        customer_id = optional_ident(request.customer_id, "customer_id")
        product_id = optional_ident(request.product_id, "product_id")
        if request.state and request.state not in convert.STATE_FROM:
            raise InvalidArgument.field("state", "is not a case state")
        if request.outcome and request.outcome not in convert.OUTCOME_FROM:
            raise InvalidArgument.field("outcome", "is not a case outcome")
        if actor.party is not None:
            if customer_id and customer_id != actor.party:
                raise PermissionDenied("a customer lists only their own cases")
            customer_id = actor.party
        elif actor.partner is not None:
            if partner_id and partner_id != actor.partner:
                raise PermissionDenied("a partner lists only the cases it is assigned to")
            partner_id = actor.partner
        async with self.db.read() as session:
            rows = await store.list_cases(
                session,
                partner_id=partner_id,
                customer_id=customer_id,
                product_id=product_id,
                state=convert.STATE_FROM[request.state].value if request.state else "",
                outcome=convert.OUTCOME_FROM[request.outcome].value if request.outcome else "",
                before=before,
                limit=size + 1,
            )
            bundles = await store.case_bundles(session, rows[:size])
        access = CaseAccess.CUSTOMER if actor.party is not None else CaseAccess.PARTNER
        at = now()
        return pb.ListCasesResponse(
            cases=[convert.case_proto(b, access, at) for b in bundles],
            next_page_token=convert.next_token(rows, size, "opened_at"),
        )

    async def ListCaseEntries(self, request: pb.ListCaseEntriesRequest, context: Any) -> pb.ListCaseEntriesResponse:
        actor = Actor.of(current_principal())
        case_id = ident(request.case_id, "case_id")
        size = domain.page_size(request.page_size)
        after = convert.decode_cursor(request.page_token)
        async with self.db.read() as session:
            found = await self._case(session, case_id, actor)
            rows = await store.entries(
                session, case_id, internal=found.access is CaseAccess.PARTNER, after=after, limit=size + 1
            )
        return pb.ListCaseEntriesResponse(
            entries=[convert.entry_proto(r) for r in rows[:size]],
            next_page_token=convert.next_token(rows, size, "created_at"),
        )

    # --- cases: engaging the customer ----------------------------------------------------------------

    async def EngageCase(self, request: pb.EngageCaseRequest, context: Any) -> pb.Case:
        actor = Actor.of(current_principal())
        case_id = ident(request.case_id, "case_id")
        message = domain.text(request.message, "message")
        domain.validate_outreach(message, "message")
        if actor.partner is None:
            raise PermissionDenied("engagement is a partner's: call as one of the case's assigned partners")
        async with self.db.transaction() as session:
            found = await self._partner_case(session, case_id, actor, "engage the customer")
            case = found.case
            domain.require_not_closed(case.id, CaseState(case.state))
            assignment = found.assignment(actor.partner)
            assert assignment is not None
            if assignment.engaged_at is not None:
                raise FailedPrecondition(
                    f"partner {actor.partner} first engaged case {case.id} at {assignment.engaged_at.isoformat()}"
                )
            at = now()
            await add_entry(session, case.id, domain.EntryKind.MESSAGE, message, partner=actor.partner, at=at)
            await events.engage(session, case, assignment, at)
            return await self._case_reply(session, case, found.access)

    async def PostCaseMessage(self, request: pb.PostCaseMessageRequest, context: Any) -> pb.CaseEntry:
        actor = Actor.of(current_principal())
        case_id = ident(request.case_id, "case_id")
        body = domain.text(request.body, "body")
        async with self.db.transaction() as session:
            found = await self._case(session, case_id, actor, lock=True)
            case = found.case
            if request.internal:
                domain.require_partner_access(found.access, "write internal notes")
            domain.require_not_closed(case.id, CaseState(case.state))
            at = now()
            if found.access is CaseAccess.CUSTOMER:
                return convert.entry_proto(
                    await add_entry(session, case.id, domain.EntryKind.MESSAGE, body, party=actor.party or "", at=at)
                )
            if request.internal:
                kind = domain.EntryKind.INTERNAL_NOTE
            else:
                domain.validate_outreach(body, "body")
                kind = domain.EntryKind.MESSAGE
            entry = await add_entry(
                session, case.id, kind, body, internal=request.internal, partner=actor.partner or "", at=at
            )
            assignment = found.assignment(actor.partner)
            if not request.internal and assignment is not None and assignment.engaged_at is None:
                await events.engage(session, case, assignment, at)
            return convert.entry_proto(entry)

    # --- cases: investigation ------------------------------------------------------------------------

    async def StartInvestigation(self, request: pb.StartInvestigationRequest, context: Any) -> pb.Case:
        actor = Actor.of(current_principal())
        case_id = ident(request.case_id, "case_id")
        note = domain.text(request.note, "note", required=False)
        async with self.db.transaction() as session:
            found = await self._partner_case(session, case_id, actor, "investigate")
            await transition(session, found.case, CaseState.INVESTIGATING, actor.label, note, now())
            return await self._case_reply(session, found.case, found.access)

    async def RecordRootCause(self, request: pb.RecordRootCauseRequest, context: Any) -> pb.Case:
        actor = Actor.of(current_principal())
        case_id = ident(request.case_id, "case_id")
        given = request.root_cause
        cause = domain.RootCause(
            method=convert.METHOD_FROM.get(given.method),
            whys=list(given.whys),
            categories=[convert.CATEGORY_FROM.get(c) for c in given.categories],
            summary=given.summary,
        )
        domain.validate_root_cause(cause)
        assert cause.method is not None
        async with self.db.transaction() as session:
            found = await self._partner_case(session, case_id, actor, "record the root cause")
            case = found.case
            if case.state != CaseState.INVESTIGATING.value:
                raise FailedPrecondition(
                    f"case {case.id} is {case.state}; the root cause is recorded while investigating"
                )
            at = now()
            case.root_cause = {
                "method": cause.method.value,
                "whys": [w.strip() for w in cause.whys],
                "categories": [c.value for c in cause.categories if c is not None],
                "summary": cause.summary.strip(),
                "recorded_by": actor.label,
                "recorded_at": at.isoformat(),
            }
            case.updated_at = at
            session.add(case)
            described = " → ".join(case.root_cause["whys"]) or ", ".join(case.root_cause["categories"])
            await add_entry(
                session,
                case.id,
                domain.EntryKind.INVESTIGATION,
                f"Root cause ({cause.method.value}): {described}",
                partner=actor.partner or "",
                at=at,
            )
            return await self._case_reply(session, case, found.access)

    async def _action_owner_ok(self, session: AsyncSession, found: CaseContext, owner_id: str) -> None:
        if owner_id in {p.partner_id for p in found.partners}:
            return
        if owner_id in {s.supplier_id for s in await store.suppliers(session, found.case.product_id)}:
            return
        raise InvalidArgument.field(
            "owner_id", "must be a partner assigned to the case or a supplier in the product's supply network"
        )

    async def AddCaseAction(self, request: pb.AddCaseActionRequest, context: Any) -> pb.CaseAction:
        actor = Actor.of(current_principal())
        at = now()
        check = Validator()
        check.require(bool(request.case_id), "case_id", "is required")
        kind = convert.ACTION_KIND_FROM.get(request.kind)
        check.require(kind is not None, "kind", "must be CORRECTIVE or PREVENTIVE")
        domain.validate_text(check, request.description, "description")
        check.require(bool(request.owner_id) and len(request.owner_id) <= domain.MAX_ID, "owner_id", "is required")
        check.raise_if_any()
        due_at = domain.due(moment(request, "due_time"), "due_time", at)
        assert kind is not None
        async with self.db.transaction() as session:
            found = await self._partner_case(session, request.case_id, actor, "add actions")
            case = found.case
            if case.state not in _INVESTIGATION_STATES:
                raise FailedPrecondition(f"case {case.id} is {case.state}; actions come with the investigation")
            await self._action_owner_ok(session, found, request.owner_id)
            row = store.ActionRow(
                id=new_id(),
                case_id=case.id,
                kind=kind.value,
                description=request.description.strip(),
                owner_id=request.owner_id,
                due_at=due_at,
                status=domain.ActionStatus.OPEN.value,
                created_by=actor.label,
                created_at=at,
            )
            session.add(row)
            await add_entry(
                session,
                case.id,
                domain.EntryKind.INVESTIGATION,
                f"{kind.value.capitalize()} action for {request.owner_id}, due {due_at.date().isoformat()}: "
                f"{row.description}",
                internal=not _assigned(found, request.owner_id),
                partner=actor.partner or "",
                at=at,
            )
            case.updated_at = at
            session.add(case)
        return convert.action_proto(row, at)

    async def UpdateCaseAction(self, request: pb.UpdateCaseActionRequest, context: Any) -> pb.CaseAction:
        actor = Actor.of(current_principal())
        action_id = ident(request.action_id, "action_id")
        status = convert.ACTION_STATUS_FROM.get(request.status)
        if status not in (domain.ActionStatus.DONE, domain.ActionStatus.CANCELLED):
            raise InvalidArgument.field("status", "must be DONE or CANCELLED")
        note = domain.text(request.note, "note", required=status is domain.ActionStatus.CANCELLED)
        at = now()
        async with self.db.transaction() as session:
            row = await store.lock(session, store.ActionRow, action_id, "action")
            try:
                found = await self._partner_case(session, row.case_id, actor, "update actions")
            except PermissionDenied:
                # Not in the case's words: they would name the case to someone who may not know of it.
                raise PermissionDenied(f"action {row.id} is updated by its case's assigned partners only") from None
            domain.require_not_closed(found.case.id, CaseState(found.case.state))
            if row.status != domain.ActionStatus.OPEN.value:
                raise FailedPrecondition(f"action {row.id} is {row.status} already")
            row.status = status.value
            row.completed_at = at
            row.note = note
            session.add(row)
            await add_entry(
                session,
                row.case_id,
                domain.EntryKind.INVESTIGATION,
                f"Action {status.value}: {row.description}" + (f" ({note})" if note else ""),
                internal=not _assigned(found, row.owner_id),
                partner=actor.partner or "",
                at=at,
            )
        return convert.action_proto(row, at)

    # --- cases: resolution and closure ---------------------------------------------------------------

    async def ProposeResolution(self, request: pb.ProposeResolutionRequest, context: Any) -> pb.Case:
        actor = Actor.of(current_principal())
        case_id = ident(request.case_id, "case_id")
        resolution = domain.text(request.resolution, "resolution")
        domain.validate_outreach(resolution, "resolution")
        async with self.db.transaction() as session:
            found = await self._partner_case(session, case_id, actor, "propose a resolution")
            case = found.case
            domain.require_transition(case.id, CaseState(case.state), CaseState.RESOLUTION_PROPOSED)
            if not case.root_cause:
                raise FailedPrecondition(
                    f"case {case.id} needs its root cause recorded before a resolution is proposed"
                )
            at = now()
            case.resolution = resolution
            await transition(session, case, CaseState.RESOLUTION_PROPOSED, actor.label, resolution, at)
            return await self._case_reply(session, case, found.access)

    async def ResolveCase(self, request: pb.ResolveCaseRequest, context: Any) -> pb.Case:
        actor = Actor.of(current_principal())
        case_id = ident(request.case_id, "case_id")
        note = domain.text(request.note, "note", required=False)
        async with self.db.transaction() as session:
            found = await self._case(session, case_id, actor, lock=True)
            case = found.case
            at = now()
            await transition(session, case, CaseState.RESOLVED, actor.label, note, at)
            case.resolved_at = at
            await events.change_outcome(session, case, domain.outcome_at_resolution(Outcome(case.outcome)), at)
            if case.outcome == Outcome.RESOLVED.value:
                case.recovery_deadline = at + timedelta(seconds=case.recovery_window_seconds)
            session.add(case)
            await events.publish_resolved(session, case, at)
            if case.invited_at is None and not case.review_withdrawn:
                await self._invite_to_update(session, case, at)
            return await self._case_reply(session, case, found.access)

    async def _invite_to_update(self, session: AsyncSession, case: store.CaseRow, at: Any) -> None:
        """The one neutral invitation to update the review, ever, for each case."""
        added = await store.add_notification(
            session,
            store.NotificationRow(
                id=new_id(),
                dedupe_key=f"review-update:{case.id}",
                party_id=case.customer_id,
                kind="review_update_invitation",
                case_id=case.id,
                review_id=case.review_id,
                body=domain.UPDATE_INVITATION_TEXT,
                created_at=at,
            ),
        )
        if added:
            case.invited_at = at
            session.add(case)
            await add_entry(session, case.id, domain.EntryKind.UPDATE_INVITATION, domain.UPDATE_INVITATION_TEXT, at=at)

    async def RecordEffectivenessCheck(self, request: pb.RecordEffectivenessCheckRequest, context: Any) -> pb.Case:
        actor = Actor.of(current_principal())
        case_id = ident(request.case_id, "case_id")
        evidence = domain.text(request.evidence, "evidence")
        async with self.db.transaction() as session:
            found = await self._partner_case(session, case_id, actor, "check effectiveness")
            case = found.case
            if case.state != CaseState.RESOLVED.value:
                raise FailedPrecondition(
                    f"case {case.id} is {case.state}; effectiveness is checked once it is resolved"
                )
            at = now()
            session.add(
                store.CheckRow(
                    id=new_id(),
                    case_id=case.id,
                    passed=request.passed,
                    evidence=evidence,
                    checked_by=actor.label,
                    checked_at=at,
                )
            )
            verdict = "passed" if request.passed else "failed"
            await add_entry(
                session,
                case.id,
                domain.EntryKind.INVESTIGATION,
                f"Effectiveness check {verdict}: {evidence}",
                partner=actor.partner or "",
                at=at,
            )
            if not request.passed:
                case.reopen_count += 1
                await transition(session, case, CaseState.INVESTIGATING, actor.label, f"reopened: {evidence}", at)
                await events.change_outcome(session, case, domain.outcome_at_reopening(Outcome(case.outcome)), at)
                await record(
                    session,
                    ev.CaseReopened(
                        case_id=case.id, product_id=case.product_id, reopen_count=case.reopen_count, reason=evidence
                    ),
                    source=SOURCE,
                )
            case.updated_at = at
            session.add(case)
            return await self._case_reply(session, case, found.access)

    async def CloseCase(self, request: pb.CloseCaseRequest, context: Any) -> pb.Case:
        actor = Actor.of(current_principal())
        case_id = ident(request.case_id, "case_id")
        note = domain.text(request.note, "note", required=False)
        async with self.db.transaction() as session:
            found = await self._partner_case(session, case_id, actor, "close the case")
            case = found.case
            (bundle,) = await store.case_bundles(session, [case])
            since = [c for c in bundle.checks if case.resolved_at is not None and c.checked_at >= case.resolved_at]
            last = since[-1].passed if since else None
            open_actions = sum(a.status == domain.ActionStatus.OPEN.value for a in bundle.actions)
            open_scars = sum(s.status != domain.ScarStatus.ACCEPTED.value for s in bundle.scars)
            domain.require_closable(case.id, CaseState(case.state), last, open_actions, open_scars)
            at = now()
            await transition(session, case, CaseState.CLOSED, actor.label, note, at)
            case.closed_at = at
            session.add(case)
            await record(
                session,
                ev.CaseClosed(
                    case_id=case.id,
                    product_id=case.product_id,
                    outcome=convert.OUTCOME_TO[Outcome(case.outcome)],
                    close_time=timestamp(at),
                ),
                source=SOURCE,
            )
            return await self._case_reply(session, case, found.access)

    # --- supplier corrective action ------------------------------------------------------------------

    async def RequestSupplierCorrectiveAction(
        self, request: pb.RequestSupplierCorrectiveActionRequest, context: Any
    ) -> pb.SupplierCorrectiveAction:
        actor = Actor.of(current_principal())
        at = now()
        check = Validator()
        check.require(bool(request.case_id), "case_id", "is required")
        check.require(
            bool(request.supplier_id) and len(request.supplier_id) <= domain.MAX_ID, "supplier_id", "is required"
        )
        domain.validate_text(check, request.problem, "problem")
        check.raise_if_any()
        due_at = domain.due(moment(request, "due_time"), "due_time", at)
        async with self.db.transaction() as session:
            found = await self._partner_case(
                session, request.case_id, actor, "request corrective action from suppliers"
            )
            case = found.case
            domain.require_not_closed(case.id, CaseState(case.state))
            network = [
                s for s in await store.suppliers(session, case.product_id) if s.supplier_id == request.supplier_id
            ]
            if not network:
                raise InvalidArgument.field(
                    "supplier_id", f"is not a supplier in the supply network of product {case.product_id}"
                )
            if await store.open_scar_for(session, case.id, request.supplier_id) is not None:
                raise AlreadyExists(
                    f"supplier {request.supplier_id} has an open corrective-action request on case {case.id}"
                )
            nearest = min(network, key=lambda s: (s.tier, s.item))
            row = store.ScarRow(
                id=new_id(),
                case_id=case.id,
                product_id=case.product_id,
                supplier_id=request.supplier_id,
                tier=nearest.tier,
                item=", ".join(sorted({s.item for s in network if s.item}))[:200],
                requested_by=actor.partner or actor.label,
                problem=request.problem.strip(),
                due_at=due_at,
                status=domain.ScarStatus.REQUESTED.value,
                created_at=at,
            )
            session.add(row)
            await add_entry(
                session,
                case.id,
                domain.EntryKind.SUPPLIER_REQUEST,
                f"Corrective action requested from supplier {row.supplier_id} (tier {row.tier}): {row.problem}",
                internal=True,
                partner=actor.partner or "",
                at=at,
            )
            await record(
                session,
                ev.CorrectiveActionRequested(
                    request_id=row.id,
                    case_id=case.id,
                    product_id=case.product_id,
                    supplier_id=row.supplier_id,
                    requested_by=row.requested_by,
                ),
                source=SOURCE,
            )
        return convert.scar_proto(row)

    async def _scar(
        self, session: AsyncSession, request_id: str, actor: Actor, *, lock: bool = False
    ) -> tuple[store.ScarRow, bool]:
        """The request, and whether the caller is its supplier (True) or one of the case's partners (False)."""
        if lock:
            row = await store.lock(session, store.ScarRow, request_id, "corrective-action request")
        else:
            row = await store.require(session, store.ScarRow, request_id, "corrective-action request")
        if actor.partner is not None and actor.partner == row.supplier_id:
            return row, True
        try:
            found = await self._case(session, row.case_id, actor)
            domain.require_partner_access(found.access, "see supplier corrective-action requests")
        except PermissionDenied:
            # Not in the case's words: they would name the case to someone who may not know of it.
            raise PermissionDenied(
                f"corrective-action request {row.id} is visible to its supplier and the case's assigned partners"
            ) from None
        return row, False

    async def GetSupplierCorrectiveAction(
        self, request: pb.GetSupplierCorrectiveActionRequest, context: Any
    ) -> pb.SupplierCorrectiveAction:
        actor = Actor.of(current_principal())
        request_id = ident(request.request_id, "request_id")
        async with self.db.read() as session:
            row, _ = await self._scar(session, request_id, actor)
        return convert.scar_proto(row)

    async def ListSupplierCorrectiveActions(
        self, request: pb.ListSupplierCorrectiveActionsRequest, context: Any
    ) -> pb.ListSupplierCorrectiveActionsResponse:
        actor = Actor.of(current_principal())
        case_id = optional_ident(request.case_id, "case_id")
        supplier_id = optional_ident(request.supplier_id, "supplier_id")
        if bool(case_id) == bool(supplier_id):
            raise InvalidArgument.field("case_id", "give a case_id or a supplier_id, exactly one")
        size = domain.page_size(request.page_size)
        after = convert.decode_cursor(request.page_token)
        async with self.db.read() as session:
            if case_id:
                found = await self._case(session, case_id, actor)
                domain.require_partner_access(found.access, "see supplier corrective-action requests")
            else:
                domain.require_own_partner(actor, supplier_id, "the supplier's corrective-action requests")
            rows = await store.list_scars(
                session, case_id=case_id, supplier_id=supplier_id, after=after, limit=size + 1
            )
        return pb.ListSupplierCorrectiveActionsResponse(
            requests=[convert.scar_proto(r) for r in rows[:size]],
            next_page_token=convert.next_token(rows, size, "created_at"),
        )

    async def RespondToSupplierCorrectiveAction(
        self, request: pb.RespondToSupplierCorrectiveActionRequest, context: Any
    ) -> pb.SupplierCorrectiveAction:
        actor = Actor.of(current_principal())
        check = Validator()
        check.require(bool(request.request_id), "request_id", "is required")
        domain.validate_text(check, request.containment, "containment")
        domain.validate_text(check, request.root_cause, "root_cause")
        domain.validate_text(check, request.corrective_action, "corrective_action")
        check.raise_if_any()
        async with self.db.transaction() as session:
            row, is_supplier = await self._scar(session, request.request_id, actor, lock=True)
            if not is_supplier and not actor.service:
                raise PermissionDenied(f"only supplier {row.supplier_id} responds to its corrective-action request")
            if row.status not in (domain.ScarStatus.REQUESTED.value, domain.ScarStatus.REJECTED.value):
                raise FailedPrecondition(f"corrective-action request {row.id} is {row.status}; it awaits no response")
            at = now()
            row.containment = request.containment.strip()
            row.root_cause = request.root_cause.strip()
            row.corrective_action = request.corrective_action.strip()
            row.responded_at = at
            row.status = domain.ScarStatus.RESPONDED.value
            session.add(row)
            await add_entry(
                session,
                row.case_id,
                domain.EntryKind.SUPPLIER_REQUEST,
                f"Supplier {row.supplier_id} responded: containment: {row.containment}; root cause: {row.root_cause}; "
                f"action: {row.corrective_action}",
                internal=True,
                partner=row.supplier_id,
                at=at,
            )
        return convert.scar_proto(row)

    async def ReviewSupplierCorrectiveAction(
        self, request: pb.ReviewSupplierCorrectiveActionRequest, context: Any
    ) -> pb.SupplierCorrectiveAction:
        actor = Actor.of(current_principal())
        request_id = ident(request.request_id, "request_id")
        comment = domain.text(request.comment, "comment", required=not request.accepted)
        async with self.db.transaction() as session:
            row, is_supplier = await self._scar(session, request_id, actor, lock=True)
            if is_supplier:
                raise PermissionDenied("a supplier does not review its own response")
            if row.status != domain.ScarStatus.RESPONDED.value:
                raise FailedPrecondition(
                    f"corrective-action request {row.id} is {row.status}; there is no response to review"
                )
            at = now()
            row.status = (domain.ScarStatus.ACCEPTED if request.accepted else domain.ScarStatus.REJECTED).value
            row.review_comment = comment
            row.reviewed_at = at
            session.add(row)
            await add_entry(
                session,
                row.case_id,
                domain.EntryKind.SUPPLIER_REQUEST,
                f"Response of supplier {row.supplier_id} {row.status}" + (f": {comment}" if comment else ""),
                internal=True,
                partner=actor.partner or "",
                at=at,
            )
        return convert.scar_proto(row)

    # --- co-design ------------------------------------------------------------------------------------

    async def InviteToCoDesign(self, request: pb.InviteToCoDesignRequest, context: Any) -> pb.CoDesignInvitation:
        actor = Actor.of(current_principal())
        check = Validator()
        check.require(
            bool(request.case_id) != bool(request.initiative_id),
            "case_id",
            "give a case_id or an initiative_id, exactly one",
        )
        check.require(len(request.party_id) <= domain.MAX_ID, "party_id", f"must be at most {domain.MAX_ID} characters")
        domain.validate_text(check, request.label, "label", required=False, limit=domain.MAX_TITLE)
        domain.validate_text(check, request.message, "message", required=False)
        check.raise_if_any()
        domain.validate_outreach(request.message, "message")
        at = now()
        async with self.db.transaction() as session:
            case_id, initiative_id = request.case_id, request.initiative_id
            if case_id:
                found = await self._partner_case(session, case_id, actor, "invite the customer to co-design")
                domain.require_not_closed(case_id, CaseState(found.case.state))
                party_id = request.party_id or found.case.customer_id
                if party_id != found.case.customer_id:
                    raise InvalidArgument.field("party_id", "a case's co-design invitation goes to the case's customer")
                product_id = found.case.product_id
            else:
                initiative = await self._initiative(
                    session, initiative_id, actor, allow=("owner", "stakeholder"), what="invite co-designers", lock=True
                )
                domain.require_open_initiative(initiative.id, Stage(initiative.stage))
                party_id = ident(request.party_id, "party_id")
                product_id = initiative.product_id
            if party_id in await store.participants(session, case_id=case_id, initiative_id=initiative_id):
                raise AlreadyExists(f"party {party_id} takes part in the co-design already")
            if await store.pending_invitation(session, party_id, case_id, initiative_id) is not None:
                raise AlreadyExists(f"party {party_id} has a pending invitation already")
            row = store.InvitationRow(
                id=new_id(),
                case_id=case_id,
                initiative_id=initiative_id,
                party_id=party_id,
                product_id=product_id,
                label=request.label.strip(),
                message=request.message.strip(),
                status="pending",
                invited_by=actor.partner or actor.label,
                created_at=at,
            )
            session.add(row)
            body = row.message or "You are invited to help design the fix together with the partners."
            await store.add_notification(
                session,
                store.NotificationRow(
                    id=new_id(),
                    dedupe_key=f"co-design:{row.id}",
                    party_id=party_id,
                    kind="co_design_invitation",
                    case_id=case_id,
                    initiative_id=initiative_id,
                    invitation_id=row.id,
                    body=(f"{row.label}: " if row.label else "") + body,
                    created_at=at,
                ),
            )
            if case_id:
                await add_entry(
                    session,
                    case_id,
                    domain.EntryKind.CO_DESIGN,
                    f"Invitation to co-design {row.label}".strip() + f": {body}",
                    partner=actor.partner or "",
                    at=at,
                )
        return convert.invitation_proto(row)

    async def RespondToCoDesignInvitation(
        self, request: pb.RespondToCoDesignInvitationRequest, context: Any
    ) -> pb.CoDesignInvitation:
        actor = Actor.of(current_principal())
        invitation_id = ident(request.invitation_id, "invitation_id")
        async with self.db.transaction() as session:
            row = await store.lock(session, store.InvitationRow, invitation_id, "co-design invitation")
            domain.require_party(actor, row.party_id, "the co-design invitation")
            if row.status != "pending":
                raise FailedPrecondition(f"invitation {row.id} was {row.status} already")
            at = now()
            row.status = "accepted" if request.accept else "declined"
            row.responded_at = at
            session.add(row)
            if row.case_id:
                await add_entry(
                    session,
                    row.case_id,
                    domain.EntryKind.CO_DESIGN,
                    f"The customer {'joined' if request.accept else 'declined'} the co-design.",
                    party=row.party_id,
                    at=at,
                )
            if request.accept:
                await record(
                    session,
                    ev.CoDesignJoined(
                        invitation_id=row.id,
                        case_id=row.case_id,
                        initiative_id=row.initiative_id,
                        party_id=row.party_id,
                        product_id=row.product_id,
                        label=row.label,
                    ),
                    source=SOURCE,
                )
        return convert.invitation_proto(row)

    async def ListCoDesignInvitations(
        self, request: pb.ListCoDesignInvitationsRequest, context: Any
    ) -> pb.ListCoDesignInvitationsResponse:
        actor = Actor.of(current_principal())
        party_id = optional_ident(request.party_id, "party_id")
        case_id = optional_ident(request.case_id, "case_id")
        initiative_id = optional_ident(request.initiative_id, "initiative_id")
        if sum(map(bool, (party_id, case_id, initiative_id))) != 1:
            raise InvalidArgument.field("party_id", "give a party_id, a case_id or an initiative_id, exactly one")
        size = domain.page_size(request.page_size)
        after = convert.decode_cursor(request.page_token)
        async with self.db.read() as session:
            if party_id:
                domain.require_party(actor, party_id, "the party's invitations")
            elif case_id:
                await self._case(session, case_id, actor)
            else:
                await self._initiative(
                    session, initiative_id, actor, allow=("owner", "stakeholder", "participant"), what="see invitations"
                )
            rows = await store.list_invitations(
                session, party_id=party_id, case_id=case_id, initiative_id=initiative_id, after=after, limit=size + 1
            )
        return pb.ListCoDesignInvitationsResponse(
            invitations=[convert.invitation_proto(r) for r in rows[:size]],
            next_page_token=convert.next_token(rows, size, "created_at"),
        )

    async def ListNotifications(
        self, request: pb.ListNotificationsRequest, context: Any
    ) -> pb.ListNotificationsResponse:
        actor = Actor.of(current_principal())
        party_id = ident(request.party_id, "party_id")
        domain.require_party(actor, party_id, "the party's notifications")
        size = domain.page_size(request.page_size)
        before = convert.decode_cursor(request.page_token)
        async with self.db.read() as session:
            rows = await store.notifications(session, party_id, before, size + 1)
        return pb.ListNotificationsResponse(
            notifications=[convert.notification_proto(r) for r in rows[:size]],
            next_page_token=convert.next_token(rows, size, "created_at"),
        )

    # --- initiatives ----------------------------------------------------------------------------------

    def _stakeholder(self, given: pb.Stakeholder, field: str) -> domain.StakeholderKey:
        which = given.WhichOneof("stakeholder")
        platform = convert.PLATFORM_FROM.get(given.platform) if which == "platform" else None
        return domain.validate_stakeholder(
            given.partner_id if which == "partner_id" else "", platform, which == "platform", given.role, field
        )

    async def CreateInitiative(self, request: pb.CreateInitiativeRequest, context: Any) -> pb.Initiative:
        actor = Actor.of(current_principal())
        if actor.party is not None:
            raise PermissionDenied("initiatives are owned by partners; call as the partner, not on a customer's behalf")
        owner_id = optional_ident(request.owner_id, "owner_id") or actor.partner or ""
        if not owner_id:
            raise InvalidArgument.field("owner_id", "is required when a service creates an initiative")
        domain.require_own_partner(actor, owner_id, "an initiative")
        kind = convert.KIND_FROM.get(request.kind)
        domain.validate_initiative(request.title, request.description, kind, request.product_id)
        assert kind is not None
        stakeholders: dict[str, tuple[domain.StakeholderKey, str]] = {}
        for index, given in enumerate(request.stakeholders):
            key = self._stakeholder(given, f"stakeholders[{index}]")
            if key.partner == owner_id:
                raise InvalidArgument.field(f"stakeholders[{index}]", "the owner is not its own stakeholder")
            if key.key in stakeholders:
                raise InvalidArgument.field(f"stakeholders[{index}]", "is listed twice")
            stakeholders[key.key] = (key, given.role.strip())
        if len(set(request.case_ids)) != len(request.case_ids):
            raise InvalidArgument.field("case_ids", "must not repeat")
        at = now()
        async with self.db.transaction() as session:
            for case_id in request.case_ids:
                found = await self._case(session, case_id, actor)
                if not actor.service and owner_id not in {p.partner_id for p in found.partners}:
                    raise PermissionDenied(f"case {case_id} is not assigned to the owner {owner_id}")
            row = store.InitiativeRow(
                id=new_id(),
                owner_id=owner_id,
                title=request.title.strip(),
                description=request.description.strip(),
                kind=kind.value,
                product_id=request.product_id,
                stage=Stage.PLAN.value,
                created_at=at,
                launched_at=at,
                stage_changed_at=at,
                updated_at=at,
            )
            session.add(row)
            await session.flush()
            for key, role in stakeholders.values():
                session.add(
                    store.StakeholderRow(
                        initiative_id=row.id,
                        key=key.key,
                        partner_id=key.partner,
                        platform=key.platform.value if key.platform else None,
                        role=role,
                        added_at=at,
                    )
                )
            for case_id in request.case_ids:
                session.add(store.InitiativeCaseRow(initiative_id=row.id, case_id=case_id, linked_at=at))
            session.add(
                store.StageRow(
                    id=new_id(),
                    initiative_id=row.id,
                    from_stage="",
                    to_stage=Stage.PLAN.value,
                    decision="launched",
                    decided_by=actor.label,
                    at=at,
                    cycle=1,
                )
            )
            await self._launched(session, row, list(request.case_ids))
            return await self._initiative_reply(session, row)

    async def _launched(self, session: AsyncSession, row: store.InitiativeRow, case_ids: list[str]) -> None:
        await record(
            session,
            ev.InitiativeLaunched(
                initiative_id=row.id,
                owner_id=row.owner_id,
                title=row.title,
                kind=row.kind,
                product_id=row.product_id,
                case_ids=case_ids,
            ),
            source=SOURCE,
        )

    async def GetInitiative(self, request: pb.GetInitiativeRequest, context: Any) -> pb.Initiative:
        actor = Actor.of(current_principal())
        initiative_id = ident(request.initiative_id, "initiative_id")
        async with self.db.read() as session:
            row = await self._initiative(
                session, initiative_id, actor, allow=("owner", "stakeholder", "participant"), what="see it"
            )
            return await self._initiative_reply(session, row)

    async def ListInitiatives(self, request: pb.ListInitiativesRequest, context: Any) -> pb.ListInitiativesResponse:
        actor = Actor.of(current_principal())
        size = domain.page_size(request.page_size)
        before = convert.decode_cursor(request.page_token)
        check = Validator()
        check.require(not request.stage or request.stage in convert.STAGE_FROM, "stage", "is not an initiative stage")
        check.require(not request.kind or request.kind in convert.KIND_FROM, "kind", "is not an initiative kind")
        check.require(not request.health or request.health in convert.HEALTH_FROM, "health", "is not a health")
        check.raise_if_any()
        filters = dict(
            owner_id=optional_ident(request.owner_id, "owner_id"),
            stakeholder_partner_id=optional_ident(request.stakeholder_partner_id, "stakeholder_partner_id"),
            product_id=optional_ident(request.product_id, "product_id"),
            stage=convert.STAGE_FROM[request.stage].value if request.stage else "",
            kind=convert.KIND_FROM[request.kind].value if request.kind else "",
        )
        at = now()
        async with self.db.read() as session:
            if not request.health:
                rows = await store.list_initiatives(session, actor, **filters, before=before, limit=size + 1)
                bundles = await store.initiative_bundles(session, rows[:size])
                return pb.ListInitiativesResponse(
                    initiatives=[convert.initiative_proto(b, at) for b in bundles],
                    next_page_token=convert.next_token(rows, size, "created_at"),
                )
            # Health is computed, not stored: judge the candidates page by page.
            wanted = convert.HEALTH_FROM[request.health]
            matching: list[store.InitiativeBundle] = []
            while len(matching) <= size:
                rows = await store.list_initiatives(session, actor, **filters, before=before, limit=size + 1)
                for bundle in await store.initiative_bundles(session, rows):
                    if convert.initiative_health(bundle, at) is wanted:
                        matching.append(bundle)
                if len(rows) <= size:
                    break
                before = (rows[-1].created_at, rows[-1].id)
        page = matching[:size]
        token = (
            convert.encode_cursor(page[-1].initiative.created_at, page[-1].initiative.id)
            if len(matching) > size
            else ""
        )
        return pb.ListInitiativesResponse(
            initiatives=[convert.initiative_proto(b, at) for b in page], next_page_token=token
        )

    async def UpdateInitiative(self, request: pb.UpdateInitiativeRequest, context: Any) -> pb.Initiative:
        actor = Actor.of(current_principal())
        given = request.initiative
        initiative_id = ident(given.initiative_id, "initiative.initiative_id")
        paths = convert.mask_paths(request.update_mask, _INITIATIVE_FIELDS, default_all=False)
        async with self.db.transaction() as session:
            row = await self._initiative(session, initiative_id, actor, allow=("owner",), what="change it", lock=True)
            domain.require_open_initiative(row.id, Stage(row.stage))
            title = given.title if "title" in paths else row.title
            description = given.description if "description" in paths else row.description
            kind = convert.KIND_FROM.get(given.kind) if "kind" in paths else domain.InitiativeKind(row.kind)
            product_id = given.product_id if "product_id" in paths else row.product_id
            domain.validate_initiative(title, description, kind, product_id, prefix="initiative.")
            if {"kind", "product_id"} & set(paths):
                domain.require_reshapable(row.id, Stage(row.stage))
            assert kind is not None
            row.title, row.description, row.kind, row.product_id = (
                title.strip(),
                description.strip(),
                kind.value,
                product_id,
            )
            row.updated_at = now()
            session.add(row)
            return await self._initiative_reply(session, row)

    async def ChangeInitiativeStage(self, request: pb.ChangeInitiativeStageRequest, context: Any) -> pb.Initiative:
        actor = Actor.of(current_principal())
        initiative_id = ident(request.initiative_id, "initiative_id")
        target = convert.STAGE_FROM.get(request.stage)
        check = Validator()
        check.require(
            target is not None and target is not Stage.PROPOSED, "stage", "must be PLAN, DO, CHECK, ACT or CLOSED"
        )
        domain.validate_text(check, request.decision, "decision")
        check.raise_if_any()
        assert target is not None
        async with self.db.transaction() as session:
            row = await self._initiative(
                session, initiative_id, actor, allow=("owner",), what="change its stage", lock=True
            )
            current = Stage(row.stage)
            domain.require_stage_change(row.id, current, target)
            at = now()
            row.cycle = domain.next_cycle(row.cycle, current, target)
            row.stage = target.value
            row.stage_changed_at = at
            row.updated_at = at
            if target is Stage.CLOSED:
                row.closed_at = at
            session.add(row)
            decision = request.decision.strip()
            session.add(
                store.StageRow(
                    id=new_id(),
                    initiative_id=row.id,
                    from_stage=current.value,
                    to_stage=target.value,
                    decision=decision,
                    decided_by=actor.label,
                    at=at,
                    cycle=row.cycle,
                )
            )
            if current is Stage.PROPOSED and target is Stage.PLAN:
                row.launched_at = at
                linked = await session.exec(
                    select(store.InitiativeCaseRow.case_id).where(col(store.InitiativeCaseRow.initiative_id) == row.id)
                )
                await self._launched(session, row, list(linked.all()))
            await record(
                session,
                ev.InitiativeStageChanged(
                    initiative_id=row.id, old_stage=current.value, new_stage=target.value, decision=decision
                ),
                source=SOURCE,
            )
            return await self._initiative_reply(session, row)

    async def AddStakeholder(self, request: pb.AddStakeholderRequest, context: Any) -> pb.Initiative:
        actor = Actor.of(current_principal())
        initiative_id = ident(request.initiative_id, "initiative_id")
        key = self._stakeholder(request.stakeholder, "stakeholder")
        async with self.db.transaction() as session:
            row = await self._initiative(
                session, initiative_id, actor, allow=("owner",), what="add stakeholders", lock=True
            )
            domain.require_open_initiative(row.id, Stage(row.stage))
            if key.partner == row.owner_id:
                raise InvalidArgument.field("stakeholder.partner_id", "the owner is not its own stakeholder")
            if await session.get(store.StakeholderRow, (row.id, key.key)) is not None:
                raise AlreadyExists(f"{key.key} is a stakeholder of initiative {row.id} already")
            at = now()
            session.add(
                store.StakeholderRow(
                    initiative_id=row.id,
                    key=key.key,
                    partner_id=key.partner,
                    platform=key.platform.value if key.platform else None,
                    role=request.stakeholder.role.strip(),
                    added_at=at,
                )
            )
            row.updated_at = at
            session.add(row)
            return await self._initiative_reply(session, row)

    async def RemoveStakeholder(self, request: pb.RemoveStakeholderRequest, context: Any) -> pb.Initiative:
        actor = Actor.of(current_principal())
        initiative_id = ident(request.initiative_id, "initiative_id")
        key = self._stakeholder(request.stakeholder, "stakeholder")
        async with self.db.transaction() as session:
            row = await self._initiative(
                session, initiative_id, actor, allow=("owner",), what="remove stakeholders", lock=True
            )
            domain.require_open_initiative(row.id, Stage(row.stage))
            held = await session.get(store.StakeholderRow, (row.id, key.key))
            if held is None:
                raise NotFound(f"{key.key} is not a stakeholder of initiative {row.id}")
            await session.delete(held)
            row.updated_at = now()
            session.add(row)
            return await self._initiative_reply(session, row)

    async def LinkCase(self, request: pb.LinkCaseRequest, context: Any) -> pb.Initiative:
        actor = Actor.of(current_principal())
        initiative_id = ident(request.initiative_id, "initiative_id")
        case_id = ident(request.case_id, "case_id")
        async with self.db.transaction() as session:
            row = await self._initiative(session, initiative_id, actor, allow=("owner",), what="link cases", lock=True)
            domain.require_open_initiative(row.id, Stage(row.stage))
            found = await self._case(session, case_id, Actor(partner=row.owner_id) if not actor.service else actor)
            domain.require_partner_access(found.access, "link the case")
            if await session.get(store.InitiativeCaseRow, (row.id, case_id)) is not None:
                raise AlreadyExists(f"case {case_id} is linked to initiative {row.id} already")
            at = now()
            session.add(store.InitiativeCaseRow(initiative_id=row.id, case_id=case_id, linked_at=at))
            row.updated_at = at
            session.add(row)
            return await self._initiative_reply(session, row)

    async def LinkIdea(self, request: pb.LinkIdeaRequest, context: Any) -> pb.Initiative:
        actor = Actor.of(current_principal())
        initiative_id = ident(request.initiative_id, "initiative_id")
        idea_id = ident(request.idea_id, "idea_id")
        async with self.db.transaction() as session:
            row = await self._initiative(session, initiative_id, actor, allow=("owner",), what="link ideas", lock=True)
            domain.require_open_initiative(row.id, Stage(row.stage))
            idea = await session.get(store.IdeaRow, idea_id)
            if idea is None:
                raise NotFound(f"idea {idea_id} has not been promoted into an improvement program")
            if idea.partner_id != row.owner_id:
                raise PermissionDenied(f"idea {idea_id} was promoted by partner {idea.partner_id}, not by the owner")
            if await session.get(store.InitiativeIdeaRow, (row.id, idea_id)) is not None:
                raise AlreadyExists(f"idea {idea_id} is linked to initiative {row.id} already")
            at = now()
            session.add(store.InitiativeIdeaRow(initiative_id=row.id, idea_id=idea_id, linked_at=at))
            row.updated_at = at
            session.add(row)
            return await self._initiative_reply(session, row)

    # --- objectives -----------------------------------------------------------------------------------

    async def AddObjective(self, request: pb.AddObjectiveRequest, context: Any) -> pb.Objective:
        actor = Actor.of(current_principal())
        initiative_id = ident(request.initiative_id, "initiative_id")
        given = request.metric
        spec = domain.metric_spec(
            convert.METRIC_FROM.get(given.kind),
            given.product_id,
            given.revision,
            given.partner_id,
            given.name,
            given.unit,
        )
        direction = domain.objective_direction(
            spec, convert.DIRECTION_FROM.get(request.direction) if request.direction else None
        )
        description = domain.text(request.description, "description", required=False)
        target = convert.finite(request.target, "target")
        forecast = convert.finite(request.forecast, "forecast") if request.HasField("forecast") else None
        at = now()
        due_at = domain.due(moment(request, "due_time"), "due_time", at)
        async with self.db.transaction() as session:
            row = await self._initiative(
                session, initiative_id, actor, allow=("owner",), what="add objectives", lock=True
            )
            domain.require_open_initiative(row.id, Stage(row.stage))
            current = await events.metric_value(session, spec, at) if spec.computed else None
            if request.HasField("baseline"):
                baseline = convert.finite(request.baseline, "baseline")
            elif current is not None:
                baseline = current
            else:
                raise InvalidArgument.field(
                    "baseline",
                    "the metric has no value yet to start from; give one"
                    if spec.computed
                    else "a reported metric needs its baseline",
                )
            domain.validate_objective_values(spec, direction, baseline, target, forecast)
            objective = store.ObjectiveRow(
                id=new_id(),
                initiative_id=row.id,
                description=description,
                metric_kind=spec.kind.value,
                subject=spec.subject,
                subject_id=spec.subject_id,
                revision=spec.revision,
                metric_name=spec.name,
                unit=spec.unit,
                direction=direction.value,
                baseline=baseline,
                target=target,
                forecast=forecast,
                due_at=due_at,
                created_at=at,
                updated_at=at,
            )
            session.add(objective)
            await session.flush()
            if current is not None:
                await events.apply_value(session, objective, current, at, source="computed")
            row.updated_at = at
            session.add(row)
        return convert.objective_proto(objective, at)

    async def _objective(
        self,
        session: AsyncSession,
        objective_id: str,
        actor: Actor,
        *,
        allow: tuple[str, ...],
        what: str,
        lock: bool = False,
    ) -> tuple[store.ObjectiveRow, store.InitiativeRow]:
        if lock:
            objective = await store.lock(session, store.ObjectiveRow, objective_id, "objective")
        else:
            objective = await store.require(session, store.ObjectiveRow, objective_id, "objective")
        row = await self._initiative(
            session, objective.initiative_id, actor, allow=allow, what=what, asked=f"objective {objective.id}"
        )
        return objective, row

    async def UpdateObjective(self, request: pb.UpdateObjectiveRequest, context: Any) -> pb.Objective:
        actor = Actor.of(current_principal())
        given = request.objective
        objective_id = ident(given.objective_id, "objective.objective_id")
        paths = convert.mask_paths(request.update_mask, _OBJECTIVE_FIELDS, default_all=False)
        at = now()
        async with self.db.transaction() as session:
            objective, row = await self._objective(
                session, objective_id, actor, allow=("owner",), what="change objectives", lock=True
            )
            domain.require_open_initiative(row.id, Stage(row.stage))
            if "description" in paths:
                objective.description = domain.text(given.description, "objective.description", required=False)
            if "target" in paths:
                objective.target = convert.finite(given.target, "objective.target")
            if "forecast" in paths:
                objective.forecast = (
                    convert.finite(given.forecast, "objective.forecast") if given.HasField("forecast") else None
                )
            if "due_time" in paths:
                objective.due_at = domain.due(moment(given, "due_time"), "objective.due_time", at)
            spec = events.spec_of(objective)
            domain.validate_objective_values(
                spec,
                domain.Direction(objective.direction),
                objective.baseline,
                objective.target,
                objective.forecast,
                prefix="objective.",
            )
            objective.updated_at = at
            session.add(objective)
            await events.check_met(session, objective, at)
        return convert.objective_proto(objective, at)

    async def RecordMeasurement(self, request: pb.RecordMeasurementRequest, context: Any) -> pb.Objective:
        actor = Actor.of(current_principal())
        objective_id = ident(request.objective_id, "objective_id")
        value = convert.finite(request.value, "value")
        note = domain.text(request.note, "note", required=False)
        at = now()
        measured = moment(request, "measure_time") or at
        if measured > at + timedelta(minutes=5):
            raise InvalidArgument.field("measure_time", "must not be in the future")
        async with self.db.transaction() as session:
            objective, row = await self._objective(
                session, objective_id, actor, allow=("owner", "stakeholder"), what="record measurements", lock=True
            )
            domain.require_open_initiative(row.id, Stage(row.stage))
            if objective.metric_kind != domain.MetricKind.REPORTED.value:
                raise FailedPrecondition(
                    f"objective {objective.id} measures {objective.metric_kind}, computed from events"
                )
            latest = await store.measurements_latest(session, objective.id)
            await events.apply_value(
                session,
                objective,
                value,
                measured,
                source="reported",
                note=note,
                by=actor.label,
                current=latest is None or measured >= latest,
            )
        return convert.objective_proto(objective, at)

    async def ListMeasurements(self, request: pb.ListMeasurementsRequest, context: Any) -> pb.ListMeasurementsResponse:
        actor = Actor.of(current_principal())
        objective_id = ident(request.objective_id, "objective_id")
        size = domain.page_size(request.page_size)
        after = convert.decode_cursor(request.page_token)
        async with self.db.read() as session:
            await self._objective(
                session, objective_id, actor, allow=("owner", "stakeholder", "participant"), what="see measurements"
            )
            rows = await store.measurements(session, objective_id, after, size + 1)
        return pb.ListMeasurementsResponse(
            measurements=[convert.measurement_proto(r) for r in rows[:size]],
            next_page_token=convert.next_token(rows, size, "measured_at"),
        )

    async def RequestRedesign(self, request: pb.RequestRedesignRequest, context: Any) -> pb.Initiative:
        actor = Actor.of(current_principal())
        initiative_id = ident(request.initiative_id, "initiative_id")
        check = Validator()
        domain.validate_text(check, request.changes, "changes")
        domain.validate_text(check, request.reason, "reason")
        check.raise_if_any()
        async with self.db.transaction() as session:
            row = await self._initiative(
                session, initiative_id, actor, allow=("owner",), what="request a redesign", lock=True
            )
            if row.kind != domain.InitiativeKind.PRODUCT_REDESIGN.value:
                raise FailedPrecondition(
                    f"initiative {row.id} is a {row.kind} initiative; only product redesigns request one"
                )
            if row.stage != Stage.ACT.value:
                raise FailedPrecondition(f"initiative {row.id} is in {row.stage}; a redesign is requested in act")
            product = await session.get(store.ProductRow, row.product_id)
            if product is None or not product.maker_id:
                raise FailedPrecondition(f"the maker of product {row.product_id} is not known yet (from supplychain)")
            exists = await session.exec(
                select(store.RedesignRow).where(
                    col(store.RedesignRow.initiative_id) == row.id, col(store.RedesignRow.cycle) == row.cycle
                )
            )
            if exists.first() is not None:
                raise AlreadyExists(f"initiative {row.id} requested a redesign in cycle {row.cycle} already")
            at = now()
            redesign = store.RedesignRow(
                id=new_id(),
                initiative_id=row.id,
                cycle=row.cycle,
                product_id=row.product_id,
                maker_id=product.maker_id,
                changes=request.changes.strip(),
                reason=request.reason.strip(),
                requested_by=actor.label,
                requested_at=at,
            )
            session.add(redesign)
            try:
                await session.flush()
            except IntegrityError:
                raise AlreadyExists(f"initiative {row.id} requested a redesign in cycle {row.cycle} already") from None
            row.updated_at = at
            session.add(row)
            await record(
                session,
                ev.RedesignRequested(
                    initiative_id=row.id,
                    product_id=row.product_id,
                    maker_id=product.maker_id,
                    changes=redesign.changes,
                    reason=redesign.reason,
                ),
                source=SOURCE,
            )
            return await self._initiative_reply(session, row)

    async def SummarizePortfolio(
        self, request: pb.SummarizePortfolioRequest, context: Any
    ) -> pb.SummarizePortfolioResponse:
        actor = Actor.of(current_principal())
        owner_id = optional_ident(request.owner_id, "owner_id")
        stakeholder_partner = optional_ident(request.stakeholder_partner_id, "stakeholder_partner_id")
        platform = None
        if request.stakeholder_platform:
            platform = convert.PLATFORM_FROM.get(request.stakeholder_platform)
            if platform is None:
                raise InvalidArgument.field("stakeholder_platform", "is not a platform")
        if sum(map(bool, (owner_id, stakeholder_partner, platform))) > 1:
            raise InvalidArgument.field("owner_id", "filter by an owner or by a stakeholder, not both")
        at = now()
        async with self.db.read() as session:
            rows = await store.list_initiatives(
                session,
                actor,
                owner_id="",
                stakeholder_partner_id="",
                product_id="",
                stage="",
                kind="",
                before=None,
                limit=None,
            )
            bundles = await store.initiative_bundles(session, rows)
        groups: dict[tuple[str, str], _Group] = {}
        for bundle in bundles:
            keys = [("owner", bundle.initiative.owner_id)]
            keys += [
                ("partner", s.partner_id) if s.partner_id else ("platform", s.platform or "")
                for s in bundle.stakeholders
            ]
            for key in keys:
                if owner_id and key != ("owner", owner_id):
                    continue
                if stakeholder_partner and key != ("partner", stakeholder_partner):
                    continue
                if platform is not None and key != ("platform", platform.value):
                    continue
                groups.setdefault(key, _Group()).add(bundle, at)
        return pb.SummarizePortfolioResponse(groups=[groups[k].proto(k) for k in sorted(groups)])

    # --- metrics and read models ----------------------------------------------------------------------

    async def GetProductMetrics(self, request: pb.GetProductMetricsRequest, context: Any) -> pb.ProductMetrics:
        current_principal()
        product_id = ident(request.product_id, "product_id")
        async with self.db.read() as session:
            stats = await store.rating_stats(session, product_id)
            recovery = await store.recovery_by_product(session, product_id)
        overall = stats.get(0)
        message = pb.ProductMetrics(
            product_id=product_id,
            review_count=overall.reviews if overall else 0,
            revisions=[
                pb.RevisionRating(
                    revision=s.revision,
                    review_count=s.reviews,
                    average_rating=s.rating_sum / s.reviews,
                    negative_review_rate=s.negative / s.reviews,
                )
                for revision, s in sorted(stats.items())
                if revision and s.reviews > 0
            ],
            cases_opened=recovery.cases,
            cases_recovered=recovery.recovered,
            cases_not_recovered=recovery.not_recovered,
        )
        if overall is not None and overall.reviews > 0:
            message.average_rating = overall.rating_sum / overall.reviews
            message.negative_review_rate = overall.negative / overall.reviews
        if recovery.rate is not None:
            message.recovery_rate = recovery.rate
        return message

    async def GetPartnerMetrics(self, request: pb.GetPartnerMetricsRequest, context: Any) -> pb.PartnerMetrics:
        actor = Actor.of(current_principal())
        partner_id = ident(request.partner_id, "partner_id")
        domain.require_own_partner(actor, partner_id, "the partner's metrics")
        at = now()
        async with self.db.read() as session:
            recovery = await store.recovery_by_partner(session, partner_id)
            engaged = await store.engagements(session, partner_id, at)
        message = pb.PartnerMetrics(
            partner_id=partner_id,
            cases_assigned=recovery.cases,
            cases_recovered=recovery.recovered,
            cases_not_recovered=recovery.not_recovered,
            engaged=engaged.engaged,
            engaged_within_target=engaged.within_target,
            overdue=engaged.overdue,
        )
        if recovery.rate is not None:
            message.recovery_rate = recovery.rate
        if engaged.mean_seconds is not None:
            message.mean_hours_to_first_engagement = engaged.mean_seconds / 3600
        if engaged.engaged:
            message.within_target_rate = engaged.within_target / engaged.engaged
        return message

    async def GetProductNetwork(self, request: pb.GetProductNetworkRequest, context: Any) -> pb.ProductNetwork:
        current_principal()
        product_id = ident(request.product_id, "product_id")
        async with self.db.read() as session:
            product = await session.get(store.ProductRow, product_id)
            retailers = await store.retailers(session, product_id)
            suppliers = await store.suppliers(session, product_id)
        if product is None and not retailers:
            raise NotFound(f"product {product_id} is not known (from supplychain's events)")
        return pb.ProductNetwork(
            product_id=product_id,
            maker_id=product.maker_id if product else "",
            name=product.name if product else "",
            revision=product.revision if product else 0,
            retailer_ids=retailers,
            suppliers=[pb.NetworkSupplier(supplier_id=s.supplier_id, tier=s.tier, item=s.item) for s in suppliers],
        )


class _Group:
    """One portfolio group's running totals."""

    def __init__(self) -> None:
        self.initiatives = 0
        self.health: dict[domain.Health | None, int] = defaultdict(int)
        self.benefits: dict[tuple[str, str, str], list[float]] = {}

    def add(self, bundle: store.InitiativeBundle, at: Any) -> None:
        self.initiatives += 1
        self.health[convert.initiative_health(bundle, at)] += 1
        for o in bundle.objectives:
            direction = domain.Direction(o.direction)
            totals = self.benefits.setdefault((o.metric_kind, o.metric_name, o.unit), [0, 0, 0.0, 0.0, 0.0])
            totals[0] += 1
            totals[1] += 1 if o.met_at is not None else 0
            totals[2] += domain.benefit(direction, o.baseline, o.target)
            totals[3] += domain.benefit(direction, o.baseline, o.forecast if o.forecast is not None else o.target)
            totals[4] += domain.benefit(direction, o.baseline, o.current) if o.current is not None else 0.0

    def proto(self, key: tuple[str, str]) -> pb.PortfolioGroup:
        kind, value = key
        group = pb.PortfolioGroup(
            initiatives=self.initiatives,
            on_track=self.health[domain.Health.ON_TRACK],
            at_risk=self.health[domain.Health.AT_RISK],
            off_track=self.health[domain.Health.OFF_TRACK],
            unmeasured=self.health[None],
            benefits=[
                pb.MetricBenefit(
                    kind=convert.METRIC_TO[domain.MetricKind(metric)],
                    name=name,
                    unit=unit,
                    objectives=int(t[0]),
                    met=int(t[1]),
                    target_benefit=t[2],
                    forecast_benefit=t[3],
                    actual_benefit=t[4],
                )
                for (metric, name, unit), t in sorted(self.benefits.items())
            ],
        )
        if kind == "owner":
            group.owner_id = value
        elif kind == "partner":
            group.stakeholder_partner_id = value
        else:
            group.stakeholder_platform = convert.PLATFORM_TO[domain.Platform(value)]
        return group
