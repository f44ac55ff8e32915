"""The CommunityService servicer: protos in, domain rules and store queries, protos out."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet.community.v1 import community_pb2 as pb
from collabnet.community.v1 import community_pb2_grpc, events_pb2
from collabnet_community import domain, metrics, store
from collabnet_community.domain import IdeaStatus, Reason, Role
from collabnet_community.reputation import award
from collabnet_kit.db import Database
from collabnet_kit.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from collabnet_kit.outbox import new_event_id, record
from collabnet_kit.principal import Principal, current_principal
from collabnet_kit.timestamps import moment, timestamp

SOURCE = "community"

_ROLE_TO_PROTO = {
    Role.MEMBER: pb.MEMBER_ROLE_MEMBER,
    Role.EXPERT: pb.MEMBER_ROLE_EXPERT,
    Role.MODERATOR: pb.MEMBER_ROLE_MODERATOR,
}
_ROLE_FROM_PROTO = {v: k for k, v in _ROLE_TO_PROTO.items()}
_STATUS_TO_PROTO = {
    IdeaStatus.NEW: pb.IDEA_STATUS_NEW,
    IdeaStatus.UNDER_REVIEW: pb.IDEA_STATUS_UNDER_REVIEW,
    IdeaStatus.PLANNED: pb.IDEA_STATUS_PLANNED,
    IdeaStatus.IN_PROGRESS: pb.IDEA_STATUS_IN_PROGRESS,
    IdeaStatus.DONE: pb.IDEA_STATUS_DONE,
    IdeaStatus.DECLINED: pb.IDEA_STATUS_DECLINED,
}
_STATUS_FROM_PROTO = {v: k for k, v in _STATUS_TO_PROTO.items()}
_NOTIFICATION_TO_PROTO = {
    "idea_status_changed": pb.NOTIFICATION_KIND_IDEA_STATUS_CHANGED,
    "idea_promoted": pb.NOTIFICATION_KIND_IDEA_PROMOTED,
    "question_answered": pb.NOTIFICATION_KIND_QUESTION_ANSWERED,
    "answer_accepted": pb.NOTIFICATION_KIND_ANSWER_ACCEPTED,
}
_QUESTION_ORDER = {
    pb.QUESTION_ORDER_UNSPECIFIED: "unanswered_first",
    pb.QUESTION_ORDER_UNANSWERED_FIRST: "unanswered_first",
    pb.QUESTION_ORDER_MOST_HELPFUL: "most_helpful",
}
_IDEA_ORDER = {pb.IDEA_ORDER_UNSPECIFIED: "top", pb.IDEA_ORDER_TOP: "top", pb.IDEA_ORDER_NEWEST: "newest"}


def new_id() -> str:
    return str(uuid.uuid4())


def require(value: str, field_name: str) -> str:
    if not value:
        raise InvalidArgument.field(field_name, "is required")
    return value


# --- page tokens -------------------------------------------------------------------------------


def encode_cursor(values: Sequence[Any]) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode()


def decode_cursor(token: str, kinds: Sequence[type]) -> list[Any] | None:
    """The values of a token this service issued, checked against the kinds its order uses."""
    if not token:
        return None
    refused = InvalidArgument.field("page_token", "is not a token this service issued")
    try:
        values = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, json.JSONDecodeError):
        raise refused from None
    if not isinstance(values, list) or len(values) != len(kinds):
        raise refused
    decoded: list[Any] = []
    for value, kind in zip(values, kinds, strict=True):
        if kind is datetime:
            try:
                when = datetime.fromisoformat(value) if isinstance(value, str) else None
            except ValueError:
                when = None
            if when is None or when.tzinfo is None:
                raise refused
            decoded.append(when)
            continue
        # bool is an int in Python, but not in a token: an int slot wants a number, a bool slot a bool.
        # And no value of a token holds a NUL character (no text column could).
        if (
            not isinstance(value, kind)
            or (kind is int and isinstance(value, bool))
            or (isinstance(value, str) and "\x00" in value)
        ):
            raise refused
        decoded.append(value)
    return decoded


def page(rows: Sequence[Any], size: int, key: Callable[[Any], Sequence[Any]]) -> tuple[Sequence[Any], str]:
    """The first ``size`` of ``size + 1`` rows, and the token for the next page (empty at the end)."""
    shown = rows[:size]
    return shown, encode_cursor(key(shown[-1])) if len(rows) > size else ""


_QUESTION_KINDS = {"unanswered_first": (bool, datetime, str), "most_helpful": (bool, int, datetime, str)}
_IDEA_KINDS = {"top": (int, datetime, str), "newest": (datetime, str)}
_TIME_ID = (datetime, str)


# --- protos ------------------------------------------------------------------------------------


def scope_from_proto(scope: pb.CommunityScope) -> domain.Scope | None:
    which = scope.WhichOneof("scope")
    if which == "brand":
        return domain.Scope.brand(scope.brand)
    if which == "category":
        return domain.Scope.category(scope.category)
    if which == "products":
        return domain.Scope.products(p.strip() for p in scope.products.product_ids)
    return None


def scope_proto(scope: domain.Scope) -> pb.CommunityScope:
    if scope.kind is domain.ScopeKind.BRAND:
        return pb.CommunityScope(brand=scope.value)
    if scope.kind is domain.ScopeKind.CATEGORY:
        return pb.CommunityScope(category=scope.value)
    return pb.CommunityScope(products=pb.ProductSet(product_ids=scope.product_ids))


def community_proto(row: store.CommunityRow, community: domain.Community, members: int) -> pb.Community:
    return pb.Community(
        community_id=row.id,
        partner_id=row.partner_id,
        name=row.name,
        description=row.description,
        scope=scope_proto(community.scope),
        open_to_non_members=row.open_to_non_members,
        member_count=members,
        create_time=timestamp(row.created_at),
    )


def membership_proto(row: store.MembershipRow, community: store.CommunityRow) -> pb.Membership:
    return pb.Membership(
        membership_id=row.id,
        community_id=row.community_id,
        party_id=row.party_id,
        role=_ROLE_TO_PROTO[Role(row.role)],
        join_time=timestamp(row.joined_at),
        leave_time=timestamp(row.left_at),
        partner_id=community.partner_id,
        community_name=community.name,
    )


def answer_proto(row: store.AnswerRow) -> pb.Answer:
    return pb.Answer(
        answer_id=row.id,
        question_id=row.question_id,
        product_id=row.product_id,
        answerer_id=row.answerer_id,
        body=row.body,
        verified_owner=row.verified_owner,
        official=row.official_partner_id is not None,
        official_partner_id=row.official_partner_id or "",
        accepted=row.accepted,
        helpful_votes=row.helpful,
        unhelpful_votes=row.unhelpful,
        create_time=timestamp(row.created_at),
    )


def question_proto(row: store.QuestionRow, answers: Sequence[store.AnswerRow] = ()) -> pb.Question:
    return pb.Question(
        question_id=row.id,
        community_id=row.community_id,
        product_id=row.product_id,
        asker_id=row.asker_id,
        title=row.title,
        body=row.body,
        answer_count=row.answer_count,
        accepted_answer_id=row.accepted_answer_id or "",
        ask_time=timestamp(row.asked_at),
        first_answer_time=timestamp(row.first_answer_at),
        escalate_time=timestamp(row.escalated_at),
        maker_id=row.maker_id,
        top_answers=[answer_proto(a) for a in answers],
        invitation_count=row.invitation_count,
    )


def idea_proto(row: store.IdeaRow, promoted_by: Sequence[str]) -> pb.Idea:
    return pb.Idea(
        idea_id=row.id,
        community_id=row.community_id,
        submitter_id=row.submitter_id,
        title=row.title,
        description=row.description,
        product_id=row.product_id or "",
        status=_STATUS_TO_PROTO[IdeaStatus(row.status)],
        vote_count=row.vote_count,
        status_note=row.status_note,
        promoted_by=promoted_by,
        create_time=timestamp(row.created_at),
        status_time=timestamp(row.status_at),
    )


def notification_proto(row: store.NotificationRow) -> pb.Notification:
    return pb.Notification(
        notification_id=row.id,
        party_id=row.party_id,
        kind=_NOTIFICATION_TO_PROTO.get(row.kind, pb.NOTIFICATION_KIND_UNSPECIFIED),
        message=row.message,
        idea_id=row.idea_id or "",
        question_id=row.question_id or "",
        answer_id=row.answer_id or "",
        create_time=timestamp(row.created_at),
        read_time=timestamp(row.read_at),
    )


def entry_proto(row: store.ReputationEntryRow) -> pb.ReputationEntry:
    return pb.ReputationEntry(
        entry_id=row.id,
        party_id=row.party_id,
        delta=row.delta,
        reason=row.reason,
        cause_event_id=row.cause_event_id,
        subject_id=row.subject_id,
        create_time=timestamp(row.created_at),
    )


def badge_proto(badge: domain.Badge) -> pb.Badge:
    return pb.Badge(
        kind=badge.kind,
        label=badge.label,
        product_id=badge.product_id,
        community_id=badge.community_id,
        since=timestamp(badge.since),
        count=badge.count,
    )


def engagement_proto(community_id: str, found: metrics.Engagement) -> pb.EngagementMetrics:
    days = found.days
    seconds = found.median_seconds_to_first_answer
    median = None
    if seconds is not None:
        median = Duration()
        median.FromTimedelta(timedelta(seconds=round(seconds, 6)))
    return pb.EngagementMetrics(
        community_id=community_id,
        start_time=timestamp(domain.day_start(days.first)),
        end_time=timestamp(domain.day_start(days.end)),
        members=found.members,
        contributors=found.contributors,
        participation_rate=domain.ratio(found.contributors, found.members),
        contributions=found.contributions,
        contributions_per_member=domain.ratio(found.contributions, found.members),
        contributions_per_contributor=domain.ratio(found.contributions, found.contributors),
        median_contributions_per_contributor=found.median_per_contributor,
        daily_active=[
            pb.ActiveMembers(period_start=timestamp(domain.day_start(d)), active_members=found.daily.get(d, 0))
            for d in range(days.first, days.end)
        ],
        weekly_active=[
            pb.ActiveMembers(period_start=timestamp(domain.week_start(w)), active_members=found.weekly.get(w, 0))
            for w in days.weeks()
        ],
        monthly_active=[
            pb.ActiveMembers(period_start=timestamp(domain.month_start(m)), active_members=found.monthly.get(m, 0))
            for m in days.months()
        ],
        questions=found.questions,
        questions_answered=found.answered,
        questions_answered_by_verified_owner=found.answered_by_owner,
        verified_owner_answer_share=domain.ratio(found.answered_by_owner, found.answered),
        median_time_to_first_answer=median,
        retention=[
            pb.RetentionCohort(
                join_month=timestamp(domain.month_start(cohort.month)),
                members=cohort.members,
                points=[
                    pb.RetentionPoint(days=p.days, eligible=p.eligible, retained=p.retained, rate=p.rate)
                    for p in cohort.points
                ],
            )
            for cohort in found.cohorts
        ],
    )


async def flush_or(session: AsyncSession, error: Exception) -> None:
    """Flush pending rows; a unique constraint that a concurrent call won becomes ``error``."""
    try:
        await session.flush()
    except IntegrityError:
        raise error from None


class CommunityApi(community_pb2_grpc.CommunityServiceServicer):
    def __init__(self, db: Database, clock: Callable[[], datetime], invitations_per_question: int) -> None:
        self.db = db
        self.now = clock
        self.invitations_per_question = invitations_per_question

    async def _role(self, session: AsyncSession, principal: Principal, community_id: str) -> Role | None:
        """The role of the party the caller acts for in the community, if it is a member."""
        if not principal.party_id:
            return None
        membership = await store.current_membership(session, community_id, principal.party_id)
        return Role(membership.role) if membership is not None else None

    # --- communities ---------------------------------------------------------------------------

    async def CreateCommunity(self, request: pb.CreateCommunityRequest, context: Any) -> pb.Community:
        principal = current_principal()
        given = request.community
        partner_id = domain.own_partner(principal, given.partner_id, "community.partner_id")
        scope = scope_from_proto(given.scope)
        domain.validate_community(partner_id, given.name, given.description, scope)
        assert scope is not None
        row = store.CommunityRow(
            id=new_id(),
            partner_id=partner_id,
            name=given.name.strip(),
            description=given.description.strip(),
            scope_kind=scope.kind.value,
            scope_value=scope.value,
            open_to_non_members=given.open_to_non_members,
            created_at=self.now(),
        )
        clash = AlreadyExists(f"partner {partner_id} runs a community named {row.name!r} already")
        async with self.db.transaction() as session:
            session.add(row)
            await flush_or(session, clash)
            for product_id in scope.product_ids:
                session.add(store.CommunityProductRow(community_id=row.id, product_id=product_id))
        return community_proto(row, store.to_community(row, scope.product_ids), 0)

    async def GetCommunity(self, request: pb.GetCommunityRequest, context: Any) -> pb.Community:
        current_principal()
        community_id = require(request.community_id, "community_id")
        async with self.db.read() as session:
            row, community = await store.community(session, community_id)
            members = await store.member_counts(session, [row.id])
        return community_proto(row, community, members[row.id])

    async def ListCommunities(self, request: pb.ListCommunitiesRequest, context: Any) -> pb.ListCommunitiesResponse:
        current_principal()
        size = domain.page_size(request.page_size)
        cursor = decode_cursor(request.page_token, _TIME_ID)
        async with self.db.read() as session:
            product = await store.product(session, request.product_id) if request.product_id else None
            rows = await store.list_communities(
                session,
                request.partner_id,
                product,
                request.product_id,
                size + 1,
                (cursor[0], cursor[1]) if cursor else None,
            )
            shown, token = page(rows, size, lambda r: [r.created_at, r.id])
            products = await store.scope_products(session, [r.id for r in shown])
            members = await store.member_counts(session, [r.id for r in shown])
        return pb.ListCommunitiesResponse(
            communities=[community_proto(r, store.to_community(r, products[r.id]), members[r.id]) for r in shown],
            next_page_token=token,
        )

    # --- memberships ---------------------------------------------------------------------------

    async def JoinCommunity(self, request: pb.JoinCommunityRequest, context: Any) -> pb.Membership:
        principal = current_principal()
        community_id = require(request.community_id, "community_id")
        party = domain.acting_party(principal, request.party_id, "party_id", "joining a community")
        at = self.now()
        day = domain.day_number(at)
        clash = AlreadyExists(f"party {party} is a member of community {community_id} already")
        async with self.db.transaction() as session:
            row = await store.community_row(session, community_id)
            if await store.current_membership(session, community_id, party) is not None:
                raise clash
            member = await store.member(session, community_id, party)
            if member is None:
                member = store.MemberRow(
                    community_id=community_id,
                    party_id=party,
                    number=await store.next_member_number(session, community_id),
                    first_joined_at=at,
                    first_join_day=day,
                    first_join_month=domain.day_month(day),
                )
                session.add(member)
            membership = store.MembershipRow(
                id=new_id(),
                community_id=community_id,
                party_id=party,
                member=member.number,
                role=Role.MEMBER.value,
                joined_at=at,
                role_since=at,
                join_day=day,
            )
            session.add(membership)
            await flush_or(session, clash)
            await record(
                session,
                events_pb2.MemberJoined(
                    community_id=community_id, party_id=party, partner_id=row.partner_id, role=Role.MEMBER.value
                ),
                source=SOURCE,
            )
        return membership_proto(membership, row)

    async def LeaveCommunity(self, request: pb.LeaveCommunityRequest, context: Any) -> pb.Membership:
        principal = current_principal()
        community_id = require(request.community_id, "community_id")
        party = domain.acting_party(principal, request.party_id, "party_id", "leaving a community")
        at = self.now()
        async with self.db.transaction() as session:
            row = await store.community_row(session, community_id)
            membership = await store.current_membership(session, community_id, party)
            if membership is None:
                raise NotFound(f"party {party} is not a member of community {community_id}")
            membership.left_at = at
            membership.left_day = domain.day_number(at)
            session.add(membership)
            await record(
                session,
                events_pb2.MemberLeft(community_id=community_id, party_id=party, partner_id=row.partner_id),
                source=SOURCE,
            )
        return membership_proto(membership, row)

    async def SetMemberRole(self, request: pb.SetMemberRoleRequest, context: Any) -> pb.Membership:
        principal = current_principal()
        community_id = require(request.community_id, "community_id")
        party = require(request.party_id, "party_id")
        new = _ROLE_FROM_PROTO.get(request.role)
        if new is None:
            raise InvalidArgument.field("role", "must be MEMBER, EXPERT or MODERATOR")
        async with self.db.transaction() as session:
            row, community = await store.community(session, community_id)
            membership = await store.current_membership(session, community_id, party)
            if membership is None:
                raise NotFound(f"party {party} is not a member of community {community_id}")
            old = Role(membership.role)
            domain.may_set_role(
                principal, community, await self._role(session, principal, community_id), party, old, new
            )
            if old is not new:
                membership.role = new.value
                membership.role_since = self.now()
                session.add(membership)
                await record(
                    session,
                    events_pb2.MemberRoleChanged(
                        community_id=community_id,
                        party_id=party,
                        partner_id=row.partner_id,
                        old_role=old.value,
                        new_role=new.value,
                    ),
                    source=SOURCE,
                )
        return membership_proto(membership, row)

    async def ListMembers(self, request: pb.ListMembersRequest, context: Any) -> pb.ListMembersResponse:
        principal = current_principal()
        community_id = require(request.community_id, "community_id")
        size = domain.page_size(request.page_size)
        cursor = decode_cursor(request.page_token, _TIME_ID)
        role = _ROLE_FROM_PROTO.get(request.role) if request.role else None
        async with self.db.read() as session:
            row, community = await store.community(session, community_id)
            if principal.partner_id != community.partner_id:
                domain.may_manage(
                    principal, community, await self._role(session, principal, community_id), "listing members"
                )
            rows = await store.list_members(
                session, community_id, role, size + 1, (cursor[0], cursor[1]) if cursor else None
            )
        shown, token = page(rows, size, lambda m: [m.joined_at, m.id])
        return pb.ListMembersResponse(memberships=[membership_proto(m, row) for m in shown], next_page_token=token)

    async def ListMemberships(self, request: pb.ListMembershipsRequest, context: Any) -> pb.ListMembershipsResponse:
        principal = current_principal()
        party = require(request.party_id or principal.party_id or "", "party_id")
        size = domain.page_size(request.page_size)
        cursor = decode_cursor(request.page_token, _TIME_ID)
        # The party and services see all of its memberships; another partner only those in its own communities.
        only_partner = None if principal.service or principal.party_id == party else principal.partner_id
        async with self.db.read() as session:
            rows = await store.list_memberships(
                session, party, only_partner, size + 1, (cursor[0], cursor[1]) if cursor else None
            )
        shown, token = page(rows, size, lambda r: [r[0].joined_at, r[0].id])
        return pb.ListMembershipsResponse(memberships=[membership_proto(m, c) for m, c in shown], next_page_token=token)

    # --- questions and answers -----------------------------------------------------------------

    async def AskQuestion(self, request: pb.AskQuestionRequest, context: Any) -> pb.Question:
        principal = current_principal()
        domain.validate_question(request.community_id, request.product_id, request.title, request.body)
        asker = domain.acting_party(principal, request.asker_party_id, "asker_party_id", "asking a question")
        at = self.now()
        async with self.db.transaction() as session:
            _, community = await store.community(session, request.community_id)
            product = await store.require_product(session, request.product_id)
            domain.require_in_scope(community, product)
            membership = await store.current_membership(session, community.id, asker)
            domain.require_member_to_post(community, membership is not None, "asking")
            question = store.QuestionRow(
                id=new_id(),
                community_id=community.id,
                product_id=product.id,
                maker_id=product.maker_id,
                asker_id=asker,
                title=request.title.strip(),
                body=request.body.strip(),
                asked_at=at,
                ask_day=domain.day_number(at),
            )
            owners = await store.owners_to_invite(session, product.id, asker, self.invitations_per_question)
            question.invitation_count = len(owners)
            session.add(question)
            await session.flush()
            for owner in owners:
                session.add(
                    store.InvitationRow(
                        question_id=question.id,
                        party_id=owner.party_id,
                        reason=f"bought the product (owner since {owner.since:%Y-%m-%d})",
                        invited_at=at,
                    )
                )
            if membership is not None:
                await store.note_activity(session, community.id, membership.member, at, contribution=True)
            await record(
                session,
                events_pb2.QuestionAsked(
                    question_id=question.id, product_id=product.id, community_id=community.id, asker_id=asker
                ),
                source=SOURCE,
            )
        return question_proto(question)

    async def GetQuestion(self, request: pb.GetQuestionRequest, context: Any) -> pb.Question:
        current_principal()
        question_id = require(request.question_id, "question_id")
        async with self.db.read() as session:
            question = await store.question(session, question_id)
            answers = await store.top_answers(session, [question.id], domain.TOP_ANSWERS)
        return question_proto(question, answers[question.id])

    async def ListQuestions(self, request: pb.ListQuestionsRequest, context: Any) -> pb.ListQuestionsResponse:
        current_principal()
        product_id = require(request.product_id, "product_id")
        order = _QUESTION_ORDER.get(request.order)
        if order is None:
            raise InvalidArgument.field("order", "must be UNANSWERED_FIRST or MOST_HELPFUL")
        size = domain.page_size(request.page_size)
        cursor = decode_cursor(request.page_token, _QUESTION_KINDS[order])
        async with self.db.read() as session:
            rows = await store.list_questions(session, product_id, request.community_id, order, size + 1, cursor)
            shown, token = page(rows, size, lambda q: store.question_cursor(q, order))
            answers = await store.top_answers(session, [q.id for q in shown], domain.TOP_ANSWERS)
        return pb.ListQuestionsResponse(
            questions=[question_proto(q, answers[q.id]) for q in shown], next_page_token=token
        )

    async def AnswerQuestion(self, request: pb.AnswerQuestionRequest, context: Any) -> pb.Answer:
        principal = current_principal()
        domain.validate_answer(request.question_id, request.body)
        at = self.now()
        async with self.db.transaction() as session:
            question = await store.question(session, request.question_id, for_update=True)
            _, community = await store.community(session, question.community_id)
            product = await store.require_product(session, question.product_id)
            who = domain.answerer_of(
                principal, product, request.answerer_party_id, request.official, request.official_partner_id
            )
            membership = await store.current_membership(session, community.id, who.party_id)
            invitation = await store.invitation(session, question.id, who.party_id)
            answered_before = await store.has_answered(session, question.id, who.party_id)
            domain.may_answer(
                community, question.asker_id, who, membership is not None, invitation is not None, answered_before
            )
            owner = await store.owner_since(session, who.party_id, product.id) is not None
            answer = store.AnswerRow(
                id=new_id(),
                question_id=question.id,
                community_id=community.id,
                product_id=product.id,
                answerer_id=who.party_id,
                body=request.body.strip(),
                verified_owner=owner,
                official_partner_id=who.official_partner,
                created_at=at,
            )
            session.add(answer)
            await flush_or(session, AlreadyExists(f"party {who.party_id} has answered this question already"))
            await store.record_answer_on_question(session, question.id, at, question.asked_at, owner)
            if invitation is not None:
                invitation.answered_at = at
                session.add(invitation)
            if membership is not None and who.official_partner is None:
                await store.note_activity(session, community.id, membership.member, at, contribution=True)
            event_id = new_event_id()
            await record(
                session,
                events_pb2.AnswerPosted(
                    answer_id=answer.id,
                    question_id=question.id,
                    product_id=product.id,
                    answerer_id=who.party_id,
                    verified_owner=owner,
                    official=who.official_partner is not None,
                ),
                source=SOURCE,
                event_id=event_id,
            )
            if who.official_partner is None:
                await award(session, who.party_id, Reason.ANSWER_POSTED, event_id, answer.id, at)
            await store.notify(
                session,
                [question.asker_id],
                "question_answered",
                f"Your question “{question.title}” has a new answer.",
                at,
                question_id=question.id,
                answer_id=answer.id,
            )
        return answer_proto(answer)

    async def ListAnswers(self, request: pb.ListAnswersRequest, context: Any) -> pb.ListAnswersResponse:
        current_principal()
        question_id = require(request.question_id, "question_id")
        size = domain.page_size(request.page_size)
        cursor = decode_cursor(request.page_token, (bool, int, datetime, str))
        async with self.db.read() as session:
            await store.question(session, question_id)
            rows = await store.list_answers(session, question_id, size + 1, cursor)
        shown, token = page(rows, size, store.answer_cursor)
        return pb.ListAnswersResponse(answers=[answer_proto(a) for a in shown], next_page_token=token)

    async def VoteAnswer(self, request: pb.VoteAnswerRequest, context: Any) -> pb.Answer:
        principal = current_principal()
        answer_id = require(request.answer_id, "answer_id")
        voter = domain.acting_party(principal, request.voter_party_id, "voter_party_id", "voting on an answer")
        at = self.now()
        async with self.db.transaction() as session:
            answer = await store.answer(session, answer_id)
            _, community = await store.community(session, answer.community_id)
            membership = await store.current_membership(session, community.id, voter)
            domain.require_member_to_post(community, membership is not None, "voting on answers")
            voted = await session.get(store.AnswerVoteRow, (answer.id, voter)) is not None
            domain.may_vote_answer(answer.answerer_id, voter, voted)
            session.add(
                store.AnswerVoteRow(answer_id=answer.id, voter_id=voter, helpful=request.helpful, created_at=at)
            )
            await flush_or(session, AlreadyExists(f"party {voter} has voted on this answer already"))
            await store.add_answer_vote(session, answer, request.helpful)
            if membership is not None:
                await store.note_activity(session, community.id, membership.member, at, contribution=False)
            await session.refresh(answer)
        return answer_proto(answer)

    async def AcceptAnswer(self, request: pb.AcceptAnswerRequest, context: Any) -> pb.Question:
        principal = current_principal()
        answer_id = require(request.answer_id, "answer_id")
        actor = domain.acting_party(principal, request.asker_party_id, "asker_party_id", "accepting an answer")
        at = self.now()
        async with self.db.transaction() as session:
            answer = await store.answer(session, answer_id)
            question = await store.question(session, answer.question_id, for_update=True)
            domain.may_accept(question.asker_id, actor, question.accepted_answer_id, answer.id)
            question.accepted_answer_id = answer.id
            answer.accepted = True
            session.add_all([question, answer])
            await store.note_member_activity(session, question.community_id, actor, at, contribution=False)
            event_id = new_event_id()
            await record(
                session,
                events_pb2.AnswerAccepted(
                    answer_id=answer.id, question_id=question.id, answerer_id=answer.answerer_id, asker_id=actor
                ),
                source=SOURCE,
                event_id=event_id,
            )
            if answer.official_partner_id is None:
                await award(session, answer.answerer_id, Reason.ANSWER_ACCEPTED, event_id, answer.id, at)
            await store.notify(
                session,
                [answer.answerer_id],
                "answer_accepted",
                f"Your answer to “{question.title}” was accepted.",
                at,
                question_id=question.id,
                answer_id=answer.id,
            )
            await session.flush()
            answers = await store.top_answers(session, [question.id], domain.TOP_ANSWERS)
        return question_proto(question, answers[question.id])

    async def ListInvitations(self, request: pb.ListInvitationsRequest, context: Any) -> pb.ListInvitationsResponse:
        principal = current_principal()
        party = require(request.party_id or principal.party_id or "", "party_id")
        domain.require_own(principal, party, "invitations")
        size = domain.page_size(request.page_size)
        cursor = decode_cursor(request.page_token, _TIME_ID)
        async with self.db.read() as session:
            rows = await store.list_invitations(session, party, request.include_answered, size + 1, cursor)
        shown, token = page(rows, size, lambda r: [r[0].invited_at, r[0].question_id])
        return pb.ListInvitationsResponse(
            invitations=[
                pb.Invitation(
                    question_id=i.question_id,
                    party_id=i.party_id,
                    reason=i.reason,
                    invite_time=timestamp(i.invited_at),
                    answered=i.answered_at is not None,
                    question=question_proto(q),
                )
                for i, q in shown
            ],
            next_page_token=token,
        )

    async def ListEscalatedQuestions(
        self, request: pb.ListEscalatedQuestionsRequest, context: Any
    ) -> pb.ListEscalatedQuestionsResponse:
        principal = current_principal()
        maker = domain.own_partner(principal, request.maker_id, "maker_id")
        size = domain.page_size(request.page_size)
        cursor = decode_cursor(request.page_token, _TIME_ID)
        async with self.db.read() as session:
            rows = await store.list_escalated(session, maker, request.include_answered, size + 1, cursor)
        shown, token = page(rows, size, lambda q: [q.escalated_at, q.id])
        return pb.ListEscalatedQuestionsResponse(questions=[question_proto(q) for q in shown], next_page_token=token)

    # --- reputation ----------------------------------------------------------------------------

    async def GetReputation(self, request: pb.GetReputationRequest, context: Any) -> pb.Reputation:
        principal = current_principal()
        party = require(request.party_id or principal.party_id or "", "party_id")
        async with self.db.read() as session:
            total = await store.points(session, party)
            owned = await store.ownerships(session, party)
            designs = await store.co_designs(session, party)
            roles = await store.roles_held(session, party)
            earned = await store.earned(session, party)
        rank = domain.rank_of(total)
        return pb.Reputation(
            party_id=party,
            points=total,
            rank=rank.name,
            next_rank=rank.next_name,
            points_to_next_rank=rank.points_to_next,
            badges=[badge_proto(b) for b in domain.badges(owned, designs, roles, earned)],
        )

    async def ListReputationEntries(
        self, request: pb.ListReputationEntriesRequest, context: Any
    ) -> pb.ListReputationEntriesResponse:
        principal = current_principal()
        party = require(request.party_id or principal.party_id or "", "party_id")
        domain.require_own(principal, party, "reputation entries")
        size = domain.page_size(request.page_size)
        cursor = decode_cursor(request.page_token, _TIME_ID)
        async with self.db.read() as session:
            rows = await store.list_entries(session, party, size + 1, cursor)
        shown, token = page(rows, size, lambda e: [e.created_at, e.id])
        return pb.ListReputationEntriesResponse(entries=[entry_proto(e) for e in shown], next_page_token=token)

    # --- ideas ---------------------------------------------------------------------------------

    async def SubmitIdea(self, request: pb.SubmitIdeaRequest, context: Any) -> pb.Idea:
        principal = current_principal()
        domain.validate_idea(request.community_id, request.title, request.description)
        submitter = domain.acting_party(
            principal, request.submitter_party_id, "submitter_party_id", "submitting an idea"
        )
        at = self.now()
        async with self.db.transaction() as session:
            row, community = await store.community(session, request.community_id)
            if request.product_id:
                domain.require_in_scope(community, await store.require_product(session, request.product_id))
            membership = await store.current_membership(session, community.id, submitter)
            if membership is None:
                raise PermissionDenied(f"ideas in community {community.id} are submitted by its members: join it first")
            idea = store.IdeaRow(
                id=new_id(),
                community_id=community.id,
                submitter_id=submitter,
                title=request.title.strip(),
                description=request.description.strip(),
                product_id=request.product_id or None,
                status=IdeaStatus.NEW.value,
                created_at=at,
                status_at=at,
            )
            session.add(idea)
            await store.note_activity(session, community.id, membership.member, at, contribution=True)
            await record(
                session,
                events_pb2.IdeaSubmitted(
                    idea_id=idea.id,
                    community_id=community.id,
                    partner_id=row.partner_id,
                    submitter_id=submitter,
                    title=idea.title,
                    product_id=request.product_id,
                ),
                source=SOURCE,
            )
        return idea_proto(idea, [])

    async def GetIdea(self, request: pb.GetIdeaRequest, context: Any) -> pb.Idea:
        current_principal()
        idea_id = require(request.idea_id, "idea_id")
        async with self.db.read() as session:
            idea = await store.idea(session, idea_id)
            promoted = await store.promoters(session, [idea.id])
        return idea_proto(idea, promoted[idea.id])

    async def ListIdeas(self, request: pb.ListIdeasRequest, context: Any) -> pb.ListIdeasResponse:
        current_principal()
        community_id = require(request.community_id, "community_id")
        order = _IDEA_ORDER.get(request.order)
        if order is None:
            raise InvalidArgument.field("order", "must be TOP or NEWEST")
        status = _STATUS_FROM_PROTO.get(request.status) if request.status else None
        if request.status and status is None:
            raise InvalidArgument.field("status", "is not an idea status")
        size = domain.page_size(request.page_size)
        cursor = decode_cursor(request.page_token, _IDEA_KINDS[order])
        async with self.db.read() as session:
            await store.community_row(session, community_id)
            rows = await store.list_ideas(session, community_id, status, order, size + 1, cursor)
            shown, token = page(rows, size, lambda i: store.idea_cursor(i, order))
            promoted = await store.promoters(session, [i.id for i in shown])
        return pb.ListIdeasResponse(ideas=[idea_proto(i, promoted[i.id]) for i in shown], next_page_token=token)

    async def VoteIdea(self, request: pb.VoteIdeaRequest, context: Any) -> pb.Idea:
        principal = current_principal()
        idea_id = require(request.idea_id, "idea_id")
        voter = domain.acting_party(principal, request.voter_party_id, "voter_party_id", "voting for an idea")
        at = self.now()
        clash = AlreadyExists(f"party {voter} has voted for this idea already")
        async with self.db.transaction() as session:
            idea = await store.idea(session, idea_id)
            membership = await store.current_membership(session, idea.community_id, voter)
            if membership is None:
                raise PermissionDenied(
                    f"voting on ideas in community {idea.community_id} is for its members: join it first"
                )
            voted = await session.get(store.IdeaVoteRow, (idea.id, voter)) is not None
            domain.may_vote_idea(idea.submitter_id, voter, IdeaStatus(idea.status), voted)
            session.add(store.IdeaVoteRow(idea_id=idea.id, voter_id=voter, created_at=at))
            await flush_or(session, clash)
            await store.change_votes(session, idea.id, +1)
            await store.note_activity(session, idea.community_id, membership.member, at, contribution=False)
            await session.refresh(idea)
            promoted = await store.promoters(session, [idea.id])
        return idea_proto(idea, promoted[idea.id])

    async def WithdrawIdeaVote(self, request: pb.WithdrawIdeaVoteRequest, context: Any) -> pb.Idea:
        principal = current_principal()
        idea_id = require(request.idea_id, "idea_id")
        voter = domain.acting_party(principal, request.voter_party_id, "voter_party_id", "withdrawing a vote")
        async with self.db.transaction() as session:
            idea = await store.idea(session, idea_id)
            # Deleted by statement: of two concurrent withdrawals, the second finds nothing to delete.
            if not await store.delete_idea_vote(session, idea.id, voter):
                raise NotFound(f"party {voter} has not voted for idea {idea.id}")
            await store.change_votes(session, idea.id, -1)
            await session.refresh(idea)
            promoted = await store.promoters(session, [idea.id])
        return idea_proto(idea, promoted[idea.id])

    async def ChangeIdeaStatus(self, request: pb.ChangeIdeaStatusRequest, context: Any) -> pb.Idea:
        principal = current_principal()
        idea_id = require(request.idea_id, "idea_id")
        new = _STATUS_FROM_PROTO.get(request.status)
        if new is None:
            raise InvalidArgument.field("status", "must be an idea status")
        note = request.note.strip()
        if len(note) > domain.MAX_NOTE:
            raise InvalidArgument.field("note", f"must be at most {domain.MAX_NOTE} characters")
        at = self.now()
        async with self.db.transaction() as session:
            idea = await store.idea(session, idea_id, for_update=True)
            _, community = await store.community(session, idea.community_id)
            role = await self._role(session, principal, community.id)
            domain.may_manage(principal, community, role, "changing the status of ideas")
            old = IdeaStatus(idea.status)
            domain.check_transition(old, new)
            idea.status, idea.status_note, idea.status_at = new.value, note, at
            session.add(idea)
            voters = await store.idea_voters(session, idea.id)
            await store.notify(
                session,
                [idea.submitter_id, *voters],
                "idea_status_changed",
                domain.status_message(idea.title, old, new, note),
                at,
                idea_id=idea.id,
            )
            await record(
                session,
                events_pb2.IdeaStatusChanged(
                    idea_id=idea.id, community_id=idea.community_id, old_status=old.value, new_status=new.value
                ),
                source=SOURCE,
            )
            promoted = await store.promoters(session, [idea.id])
        return idea_proto(idea, promoted[idea.id])

    async def PromoteIdea(self, request: pb.PromoteIdeaRequest, context: Any) -> pb.Idea:
        principal = current_principal()
        idea_id = require(request.idea_id, "idea_id")
        partner = domain.own_partner(principal, request.partner_id, "partner_id")
        at = self.now()
        async with self.db.transaction() as session:
            idea = await store.idea(session, idea_id, for_update=True)
            _, community = await store.community(session, idea.community_id)
            product = await store.product(session, idea.product_id) if idea.product_id else None
            promoted = (await store.promoters(session, [idea.id]))[idea.id]
            domain.may_promote(partner, community, product, IdeaStatus(idea.status), promoted)
            event_id = new_event_id()
            session.add(store.IdeaPromotionRow(idea_id=idea.id, partner_id=partner, promoted_at=at, event_id=event_id))
            await flush_or(session, AlreadyExists(f"partner {partner} has promoted this idea already"))
            await record(
                session,
                events_pb2.IdeaPromoted(
                    idea_id=idea.id,
                    community_id=idea.community_id,
                    partner_id=partner,
                    title=idea.title,
                    description=idea.description,
                    product_id=idea.product_id or "",
                    submitter_id=idea.submitter_id,
                ),
                source=SOURCE,
                event_id=event_id,
            )
            # Points for the first promotion only: the ledger holds one entry per idea.
            await award(session, idea.submitter_id, Reason.IDEA_PROMOTED, event_id, idea.id, at)
            await store.notify(
                session,
                [idea.submitter_id, *await store.idea_voters(session, idea.id)],
                "idea_promoted",
                f"The idea “{idea.title}” was taken into partner {partner}'s improvement program.",
                at,
                idea_id=idea.id,
            )
        return idea_proto(idea, [*promoted, partner])

    async def ListNotifications(
        self, request: pb.ListNotificationsRequest, context: Any
    ) -> pb.ListNotificationsResponse:
        principal = current_principal()
        party = require(request.party_id or principal.party_id or "", "party_id")
        domain.require_own(principal, party, "notifications")
        size = domain.page_size(request.page_size)
        cursor = decode_cursor(request.page_token, _TIME_ID)
        async with self.db.read() as session:
            rows = await store.list_notifications(session, party, request.unread_only, size + 1, cursor)
        shown, token = page(rows, size, lambda n: [n.created_at, n.id])
        return pb.ListNotificationsResponse(notifications=[notification_proto(n) for n in shown], next_page_token=token)

    async def MarkNotificationsRead(
        self, request: pb.MarkNotificationsReadRequest, context: Any
    ) -> pb.MarkNotificationsReadResponse:
        principal = current_principal()
        party = require(request.party_id or principal.party_id or "", "party_id")
        domain.require_own(principal, party, "notifications")
        async with self.db.transaction() as session:
            marked = await store.mark_read(session, party, list(request.notification_ids), self.now())
        return pb.MarkNotificationsReadResponse(marked=marked)

    # --- engagement ----------------------------------------------------------------------------

    async def GetEngagementMetrics(self, request: pb.GetEngagementMetricsRequest, context: Any) -> pb.EngagementMetrics:
        principal = current_principal()
        community_id = require(request.community_id, "community_id")
        days = domain.metric_range(moment(request, "start_time"), moment(request, "end_time"))
        async with self.db.read() as session:
            _, community = await store.community(session, community_id)
        domain.require_runner(principal, community, "engagement metrics")
        found = await metrics.engagement(self.db, community_id, days, domain.day_number(self.now()))
        return engagement_proto(community_id, found)
