"""The ReviewsService servicer: protos in, domain rules and store queries, protos out."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from collabnet.reviews.v1 import events_pb2, reviews_pb2, reviews_pb2_grpc
from collabnet_kit.db import Database
from collabnet_kit.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from collabnet_kit.outbox import record
from collabnet_kit.paging import decode_cursor, encode_cursor
from collabnet_kit.principal import Principal, current_principal
from collabnet_kit.timestamps import timestamp
from collabnet_reviews import domain, store
from collabnet_reviews.affiliations import Affiliations
from collabnet_reviews.domain import Reason, Sort, Stats, Status, Vote, Words
from collabnet_reviews.events import SOURCE, Before, Prior, disclosure_event, settle
from collabnet_reviews.store import ModerationRow, ReviewRow, ReviewVersionRow

_STATUS_TO_PROTO = {
    Status.PENDING: reviews_pb2.REVIEW_STATUS_PENDING,
    Status.PUBLISHED: reviews_pb2.REVIEW_STATUS_PUBLISHED,
    Status.REJECTED: reviews_pb2.REVIEW_STATUS_REJECTED,
    Status.WITHDRAWN: reviews_pb2.REVIEW_STATUS_WITHDRAWN,
}
_STATUS_FROM_PROTO = {v: k for k, v in _STATUS_TO_PROTO.items()}
_REASON_TO_PROTO = {
    Reason.TOO_SHORT: reviews_pb2.MODERATION_REASON_TOO_SHORT,
    Reason.PROFANITY: reviews_pb2.MODERATION_REASON_PROFANITY,
    Reason.PERSONAL_DATA: reviews_pb2.MODERATION_REASON_PERSONAL_DATA,
    Reason.DUPLICATE: reviews_pb2.MODERATION_REASON_DUPLICATE,
    Reason.AWAITING_DISCLOSURE: reviews_pb2.MODERATION_REASON_AWAITING_DISCLOSURE,
    Reason.OFF_TOPIC: reviews_pb2.MODERATION_REASON_OFF_TOPIC,
    Reason.SPAM: reviews_pb2.MODERATION_REASON_SPAM,
    Reason.ABUSE: reviews_pb2.MODERATION_REASON_ABUSE,
    Reason.ILLEGAL_CONTENT: reviews_pb2.MODERATION_REASON_ILLEGAL_CONTENT,
}
_REASON_FROM_PROTO = {v: k for k, v in _REASON_TO_PROTO.items()}
_SORT_FROM_PROTO = {
    reviews_pb2.REVIEW_SORT_UNSPECIFIED: Sort.RECENT,
    reviews_pb2.REVIEW_SORT_RECENT: Sort.RECENT,
    reviews_pb2.REVIEW_SORT_HELPFUL: Sort.HELPFUL,
    reviews_pb2.REVIEW_SORT_RATING_HIGH: Sort.RATING_HIGH,
    reviews_pb2.REVIEW_SORT_RATING_LOW: Sort.RATING_LOW,
}
_VOTE_TO_PROTO = {
    Vote.HELPFUL: reviews_pb2.HELPFUL_VOTE_HELPFUL,
    Vote.NOT_HELPFUL: reviews_pb2.HELPFUL_VOTE_NOT_HELPFUL,
    Vote.NONE: reviews_pb2.HELPFUL_VOTE_NONE,
}
_VOTE_FROM_PROTO = {v: k for k, v in _VOTE_TO_PROTO.items()}
_DECISION_FROM_PROTO = {
    reviews_pb2.MODERATION_DECISION_PUBLISH: domain.Decision.PUBLISH,
    reviews_pb2.MODERATION_DECISION_REJECT: domain.Decision.REJECT,
}
AUTOMATIC = "automatic"
DEFAULT_PRIOR = Prior()


def new_id() -> str:
    return str(uuid.uuid4())


def now() -> datetime:
    return datetime.now(UTC)


def require(value: str, field_name: str) -> str:
    if not value:
        raise InvalidArgument.field(field_name, "is required")
    return value


def moderator_of(principal: Principal) -> str:
    return principal.partner_id or f"service:{principal.service}"


# --- protos ------------------------------------------------------------------------------------


def moderation_proto(row: ModerationRow) -> reviews_pb2.Moderation:
    return reviews_pb2.Moderation(
        status=_STATUS_TO_PROTO[Status(row.status)],
        reasons=[_REASON_TO_PROTO[Reason(r)] for r in row.reasons],
        note=row.note,
        moderator_partner_id="" if row.automatic else row.moderator,
        automatic=row.automatic,
        version=row.version,
        decide_time=timestamp(row.decided_at),
    )


def response_proto(row: store.ResponseRow) -> reviews_pb2.ReviewResponse:
    return reviews_pb2.ReviewResponse(
        response_id=row.id,
        review_id=row.review_id,
        partner_id=row.partner_id,
        body=row.body,
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
        edits=row.edits,
    )


def version_proto(row: ReviewVersionRow) -> reviews_pb2.ReviewVersion:
    return reviews_pb2.ReviewVersion(
        version=row.version,
        rating=row.rating,
        title=row.title,
        body=row.body,
        media_urls=row.media_urls,
        revision=row.revision,
        create_time=timestamp(row.created_at),
    )


def review_proto(
    row: ReviewRow,
    *,
    listing_partner: str | None,
    responses: Sequence[store.ResponseRow] = (),
    moderation: ModerationRow | None = None,
    history: Sequence[ReviewVersionRow] = (),
    moderation_history: Sequence[ModerationRow] = (),
) -> reviews_pb2.Review:
    return reviews_pb2.Review(
        review_id=row.id,
        product_id=row.product_id,
        revision=row.revision,
        author_id=row.author_id,
        channel_partner_id=row.channel_partner_id,
        rating=row.rating,
        title=row.title,
        body=row.body,
        media_urls=row.media_urls,
        status=_STATUS_TO_PROTO[row.state],
        disclosure=disclosure_event(row, domain.syndicated_from(row.channel_partner_id, listing_partner)),
        version=row.version,
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.posted_at),
        publish_time=timestamp(row.published_at),
        helpful_votes=row.helpful_count,
        unhelpful_votes=row.unhelpful_count,
        responses=[response_proto(r) for r in responses],
        moderation=moderation_proto(moderation) if moderation is not None else None,
        history=[version_proto(v) for v in history],
        moderation_history=[moderation_proto(m) for m in moderation_history],
        withdraw_time=timestamp(row.withdrawn_at),
    )


def summary_proto(
    product_id: str,
    revision: int,
    stats: Stats,
    trend: domain.Trend,
    prior: Prior,
    updated_at: datetime | None,
) -> reviews_pb2.RatingSummary:
    return reviews_pb2.RatingSummary(
        product_id=product_id,
        revision=revision,
        count=stats.count,
        mean=stats.mean,
        distribution=list(stats.distribution),
        smoothed_mean=stats.smoothed(prior.mean, prior.weight),
        trend=reviews_pb2.RatingTrend(
            count=trend.current.count,
            mean=trend.current.mean,
            previous_count=trend.previous.count,
            previous_mean=trend.previous.mean,
            mean_change=trend.mean_change,
            days=[
                reviews_pb2.DailyRatings(day=day.isoformat(), count=day_stats.count, mean=day_stats.mean)
                for day, day_stats in trend.days
            ],
        ),
        prior_mean=prior.mean,
        prior_weight=prior.weight,
        update_time=timestamp(updated_at),
    )


def words_of(request: Any) -> Words:
    return Words(request.rating, request.title, request.body, tuple(request.media_urls))


class ReviewsApi(reviews_pb2_grpc.ReviewsServiceServicer):
    def __init__(
        self,
        db: Database,
        affiliations: Affiliations,
        *,
        prior: Prior = DEFAULT_PRIOR,
        profanity: Collection[str] = domain.PROFANITY,
    ) -> None:
        self.db = db
        self.affiliations = affiliations
        self.prior = prior
        self.profanity = frozenset(profanity)

    # --- disclosure --------------------------------------------------------------------------

    async def _counterparties(self, session: AsyncSession, author_id: str, product: store.ProductRow) -> set[str]:
        """The partners an author may be affiliated with for a product: its maker, the retailers
        listing it, and the retailers the author bought it from."""
        bought = await store.purchases(session, author_id, product.product_id)
        return {product.maker_id, *await store.sellers(session, product.product_id)} | {
            p.retailer for p in bought if p.counts
        }

    async def check_disclosure(self, review_id: str) -> bool:
        """Ask identity about an unchecked review's author; publish it when it only waited for that.
        False when identity still cannot answer."""
        async with self.db.read() as session:
            row = await store.review(session, review_id)
            product = await store.product(session, row.product_id)
            partners = await self._counterparties(session, row.author_id, product)
        affiliated = await self.affiliations.affiliated(row.author_id, partners)
        if affiliated is None:
            return False
        at = now()
        async with self.db.transaction() as session:
            row = await store.review(session, review_id, for_update=True)
            if row.affiliation_checked or row.state is Status.WITHDRAWN:
                return True
            before = Before.of(row)
            row.affiliated = affiliated
            row.affiliation_checked = True
            if row.state is Status.PENDING:
                self._publish(row, at)
                session.add(self._moderation(row, Status.PUBLISHED, [], at))
            await settle(session, row, before, self.prior, at)
        return True

    @staticmethod
    def _publish(row: ReviewRow, at: datetime) -> None:
        row.status = Status.PUBLISHED.value
        row.published_at = at
        row.counted_day = at.date()

    @staticmethod
    def _moderation(
        row: ReviewRow,
        status: Status,
        reasons: Sequence[Reason],
        at: datetime,
        *,
        moderator: str = AUTOMATIC,
        note: str = "",
    ) -> ModerationRow:
        return ModerationRow(
            id=new_id(),
            review_id=row.id,
            version=row.version,
            status=status.value,
            reasons=[r.value for r in reasons],
            note=note,
            moderator=moderator,
            automatic=moderator == AUTOMATIC,
            decided_at=at,
        )

    # --- writing ----------------------------------------------------------------------------

    async def SubmitReview(self, request: reviews_pb2.SubmitReviewRequest, context: Any) -> reviews_pb2.Review:
        principal = current_principal()
        words = words_of(request)
        domain.validate_submission(
            request.product_id, request.author_id, words, request.incentivized, request.incentive
        )
        channel = domain.submitter(principal, request.author_id, request.channel_partner_id)
        author, product_id = request.author_id, request.product_id
        async with self.db.read() as session:
            product = await store.product(session, product_id)
            body_hash = domain.text_fingerprint(words.body)
            duplicate = False
            for other in await store.author_texts(session, author):
                if other.product_id == product_id:
                    raise AlreadyExists(
                        f"{author} has reviewed product {product_id} already (review {other.id}): revise it"
                    )
                duplicate |= other.body_hash == body_hash and other.status in domain.SHOWN_OR_PENDING
            partners = await self._counterparties(session, author, product)
        affiliated = await self.affiliations.affiliated(author, partners)
        at = now()
        async with self.db.transaction() as session:
            # Read again in the writing transaction: an order event handled since must count.
            purchase = domain.latest_purchase(await store.purchases(session, author, product_id))
            checks = domain.automatic_checks(words, duplicate=duplicate, profanity=self.profanity)
            status, reasons = domain.outcome(checks, affiliated is not None)
            revision = (purchase.revision if purchase else 0) or product.latest_revision or 1
            row = ReviewRow(
                id=new_id(),
                product_id=product_id,
                revision=revision,
                author_id=author,
                channel_partner_id=channel,
                rating=words.rating,
                title=words.title,
                body=words.body,
                media_urls=list(words.media_urls),
                body_hash=body_hash,
                status=Status.PENDING.value,
                verified=purchase is not None,
                revision_bought=purchase.revision if purchase else 0,
                incentivized=request.incentivized,
                incentive=request.incentive.strip() if request.incentivized else "",
                affiliated=bool(affiliated),
                affiliation_checked=affiliated is not None,
                created_at=at,
                posted_at=at,
            )
            row.status = status.value
            if status is Status.PUBLISHED:
                self._publish(row, at)
            session.add(row)
            try:
                await session.flush()
            except IntegrityError:
                raise AlreadyExists(f"{author} has reviewed product {product_id} already: revise it") from None
            moderation = self._moderation(row, status, reasons, at)
            session.add(self._version(row, at))
            session.add(moderation)
            await settle(session, row, Before.of(None), self.prior, at)
        return review_proto(row, listing_partner=channel, moderation=moderation)

    @staticmethod
    def _version(row: ReviewRow, at: datetime) -> ReviewVersionRow:
        return ReviewVersionRow(
            review_id=row.id,
            version=row.version,
            rating=row.rating,
            title=row.title,
            body=row.body,
            media_urls=list(row.media_urls),
            revision=row.revision,
            created_at=at,
        )

    async def ReviseReview(self, request: reviews_pb2.ReviseReviewRequest, context: Any) -> reviews_pb2.Review:
        principal = current_principal()
        words = words_of(request)
        domain.validate_revision(request.review_id, words)
        async with self.db.read() as session:
            row = await store.review(session, request.review_id)
            domain.require_author(principal, row.author_id, "revise a review", services=False)
            if row.state is Status.WITHDRAWN:
                raise FailedPrecondition(f"review {row.id} was withdrawn; submit a new review instead")
            partners = await self._counterparties(session, row.author_id, await store.product(session, row.product_id))
        affiliated = await self.affiliations.affiliated(row.author_id, partners)
        at = now()
        body_hash = domain.text_fingerprint(words.body)
        async with self.db.transaction() as session:
            row = await store.review(session, request.review_id, for_update=True)
            if row.state is Status.WITHDRAWN:
                raise FailedPrecondition(f"review {row.id} was withdrawn; submit a new review instead")
            before = Before.of(row)
            old_rating = row.rating
            shown_before = row.published_at is not None
            purchase = domain.latest_purchase(await store.purchases(session, row.author_id, row.product_id))
            if purchase is not None:
                row.verified = True
                row.revision_bought = purchase.revision
                row.revision = purchase.revision or row.revision
            if affiliated is not None:
                row.affiliated = affiliated
                row.affiliation_checked = True
            duplicate = await store.duplicate_text(session, row.author_id, body_hash, row.id)
            checks = domain.automatic_checks(words, duplicate=duplicate, profanity=self.profanity)
            status, reasons = domain.outcome(checks, row.affiliation_checked)
            row.version += 1
            row.rating, row.title, row.body = words.rating, words.title, words.body
            row.media_urls = list(words.media_urls)
            row.body_hash = body_hash
            row.posted_at = at
            row.status = status.value
            if status is Status.PUBLISHED:
                # The rating counts on the day it was given: a revision moves it to today.
                row.counted_day = at.date()
                if not before.published:
                    row.published_at = at
            else:
                row.counted_day = None
            moderation = self._moderation(row, status, reasons, at)
            session.add(self._version(row, at))
            session.add(moderation)
            if shown_before:
                # Readers have seen a rating of this review: tell them it changed, even when the
                # review was hidden in between (its consumers keep the rating they saw).
                await record(
                    session,
                    events_pb2.ReviewRevised(
                        review_id=row.id,
                        product_id=row.product_id,
                        revision=row.revision,
                        author_id=row.author_id,
                        channel_partner_id=row.channel_partner_id,
                        old_rating=old_rating,
                        new_rating=row.rating,
                        version=row.version,
                        revise_time=timestamp(at),
                    ),
                    source=SOURCE,
                )
            await settle(session, row, before, self.prior, at)
            if before.published and status is not Status.PUBLISHED:
                await self._record_moderated(session, row, reasons, AUTOMATIC)
            history = await store.versions(session, row.id)
        return review_proto(row, listing_partner=row.channel_partner_id, moderation=moderation, history=history[:-1])

    async def _record_moderated(
        self, session: AsyncSession, row: ReviewRow, reasons: Sequence[Reason], moderator: str
    ) -> None:
        await record(
            session,
            events_pb2.ReviewModerated(
                review_id=row.id,
                product_id=row.product_id,
                author_id=row.author_id,
                channel_partner_id=row.channel_partner_id,
                published=row.state is Status.PUBLISHED,
                reasons=[r.value for r in reasons],
                moderator=moderator,
                rating=row.rating,
                revision=row.revision,
            ),
            source=SOURCE,
        )

    async def WithdrawReview(self, request: reviews_pb2.WithdrawReviewRequest, context: Any) -> reviews_pb2.Review:
        principal = current_principal()
        review_id = require(request.review_id, "review_id")
        at = now()
        async with self.db.transaction() as session:
            row = await store.review(session, review_id, for_update=True)
            domain.require_author(principal, row.author_id, "withdraw a review", services=True)
            if row.state is not Status.WITHDRAWN:
                before = Before.of(row)
                row.status = Status.WITHDRAWN.value
                row.withdrawn_at = at
                row.counted_day = None
                await settle(session, row, before, self.prior, at)
                await record(
                    session,
                    events_pb2.ReviewWithdrawn(
                        review_id=row.id,
                        product_id=row.product_id,
                        author_id=row.author_id,
                        channel_partner_id=row.channel_partner_id,
                        rating=row.rating,
                        revision=row.revision,
                        was_published=before.published,
                    ),
                    source=SOURCE,
                )
        return review_proto(row, listing_partner=row.channel_partner_id)

    # --- reading ----------------------------------------------------------------------------

    async def GetReview(self, request: reviews_pb2.GetReviewRequest, context: Any) -> reviews_pb2.Review:
        principal = current_principal()
        review_id = require(request.review_id, "review_id")
        async with self.db.read() as session:
            row = await store.review(session, review_id)
            insider = domain.sees_unpublished(principal, row.author_id, row.channel_partner_id)
            if row.state is not Status.PUBLISHED and not insider:
                raise NotFound(f"review {review_id} not found")
            history = await store.versions(session, review_id)
            moderations = await store.moderations(session, review_id)
            responses = await store.responses(session, [review_id])
        return review_proto(
            row,
            listing_partner=request.listing_partner_id or principal.partner_id,
            responses=responses[review_id],
            moderation=moderations[-1] if moderations else None,
            history=[v for v in history if v.version < row.version],
            moderation_history=moderations if insider else (),
        )

    async def ListReviews(
        self, request: reviews_pb2.ListReviewsRequest, context: Any
    ) -> reviews_pb2.ListReviewsResponse:
        principal = current_principal()
        domain.validate_list_filters(request.product_id, request.author_id, request.ratings, request.revision)
        size = domain.page_size(request.page_size)
        sort = _SORT_FROM_PROTO.get(request.sort)
        if sort is None:
            raise InvalidArgument.field("sort", "must be RECENT, HELPFUL, RATING_HIGH or RATING_LOW")
        status = _STATUS_FROM_PROTO.get(request.status) if request.status else Status.PUBLISHED
        if status is None:
            raise InvalidArgument.field("status", "must be PENDING, PUBLISHED, REJECTED or WITHDRAWN")
        cursor = decode_cursor(request.page_token, store.cursor_size(sort))
        try:
            after = store.parse_cursor(sort, cursor) if cursor is not None else None
        except ValueError:
            raise InvalidArgument.field("page_token", "is not a token of this sort") from None
        listing_partner = request.listing_partner_id or principal.partner_id
        async with self.db.read() as session:
            listing = await self._listing(session, principal, request, sort, status, listing_partner)
            rows = await store.list_reviews(session, listing, after, size + 1)
            page = rows[:size]
            ids = [r.id for r in page]
            responses = await store.responses(session, ids)
            moderations = await store.latest_moderations(session, ids)
        token = encode_cursor(*store.cursor_values(sort, page[-1])) if len(rows) > size else ""
        return reviews_pb2.ListReviewsResponse(
            reviews=[
                review_proto(
                    r, listing_partner=listing_partner, responses=responses[r.id], moderation=moderations.get(r.id)
                )
                for r in page
            ],
            next_page_token=token,
        )

    async def _listing(
        self,
        session: AsyncSession,
        principal: Principal,
        request: reviews_pb2.ListReviewsRequest,
        sort: Sort,
        status: Status,
        listing_partner: str | None,
    ) -> store.Listing:
        """Which reviews a list may show this caller, on this partner's listing."""
        filters: dict[str, Any] = {
            "sort": sort,
            "ratings": list(request.ratings),
            "verified_only": request.verified_only,
            "revision": request.revision,
        }
        if request.author_id:
            own = principal.service is not None or request.author_id in (principal.party_id, principal.partner_id)
            if status is not Status.PUBLISHED and not own:
                raise InvalidArgument.field(
                    "status", "only an author and services list an author's unpublished reviews"
                )
            statuses = [status] if request.status or not own else list(Status)
            excluded: list[str] = []
            if not own and listing_partner:
                excluded = sorted(await store.opted_out(session) - {listing_partner})
            return store.Listing(None, request.author_id, statuses, excluded_channels=excluded, **filters)
        product = await store.product(session, request.product_id)
        if status is not Status.PUBLISHED:
            # The moderation queue: a channel partner's own reviews, or every review for a service.
            if principal.service is not None:
                return store.Listing(product.product_id, None, [status], **filters)
            domain.require_scope(principal, domain.MODERATE_SCOPE, "listing reviews that are not published")
            assert principal.partner_id is not None
            return store.Listing(product.product_id, None, [status], channels=[principal.partner_id], **filters)
        if not listing_partner:
            return store.Listing(product.product_id, None, [status], **filters)
        shows_product = product.maker_id == listing_partner or await store.lists_product(
            session, listing_partner, product.product_id
        )
        if not shows_product:
            return store.Listing(product.product_id, None, [status], channels=[listing_partner], **filters)
        excluded = sorted(await store.opted_out(session) - {listing_partner})
        return store.Listing(product.product_id, None, [status], excluded_channels=excluded, **filters)

    # --- responses and votes ----------------------------------------------------------------

    async def RespondToReview(
        self, request: reviews_pb2.RespondToReviewRequest, context: Any
    ) -> reviews_pb2.ReviewResponse:
        principal = current_principal()
        domain.validate_response(request.review_id, request.body)
        partner = domain.responder(principal, request.partner_id)
        at = now()
        async with self.db.transaction() as session:
            row = await store.review(session, request.review_id)
            product = await store.product(session, row.product_id)
            sellers = await self._counterparties(session, row.author_id, product)
            domain.require_maker_or_seller(partner, product.maker_id, sellers, product.product_id)
            if row.state is not Status.PUBLISHED:
                raise FailedPrecondition(f"review {row.id} is {row.status}: only published reviews take responses")
            response = await store.response(session, row.id, partner)
            edited = response is not None
            if response is None:
                response = store.ResponseRow(
                    id=new_id(), review_id=row.id, partner_id=partner, body=request.body, created_at=at, updated_at=at
                )
            else:
                response.body = request.body
                response.edits += 1
                response.updated_at = at
            session.add(response)
            try:
                await session.flush()
            except IntegrityError:
                raise Aborted(f"partner {partner} responded to review {row.id} at the same moment; retry") from None
            await record(
                session,
                events_pb2.ReviewResponded(
                    review_id=row.id,
                    product_id=row.product_id,
                    partner_id=partner,
                    response_id=response.id,
                    edited=edited,
                    author_id=row.author_id,
                ),
                source=SOURCE,
            )
        return response_proto(response)

    async def VoteHelpful(
        self, request: reviews_pb2.VoteHelpfulRequest, context: Any
    ) -> reviews_pb2.VoteHelpfulResponse:
        principal = current_principal()
        review_id = require(request.review_id, "review_id")
        choice = _VOTE_FROM_PROTO.get(request.vote)
        if choice is None:
            raise InvalidArgument.field("vote", "must be HELPFUL, NOT_HELPFUL or NONE")
        voter_id = domain.voter(principal, request.voter_id)
        at = now()
        async with self.db.transaction() as session:
            row = await store.review(session, review_id, for_update=True)
            domain.require_votable(row.state, row.author_id, voter_id)
            existing = await store.vote(session, review_id, voter_id)
            helpful, unhelpful = 0, 0
            if existing is not None:
                helpful -= existing.helpful
                unhelpful -= not existing.helpful
                if choice is Vote.NONE:
                    await session.delete(existing)
            if choice is not Vote.NONE:
                is_helpful = choice is Vote.HELPFUL
                helpful += is_helpful
                unhelpful += not is_helpful
                vote = existing or store.VoteRow(review_id=review_id, voter_id=voter_id, helpful=is_helpful)
                vote.helpful = is_helpful
                vote.updated_at = at
                session.add(vote)
            await session.flush()
            counts = (row.helpful_count, row.unhelpful_count)
            if helpful or unhelpful:
                counts = await store.add_votes(session, review_id, helpful, unhelpful)
        return reviews_pb2.VoteHelpfulResponse(
            review_id=review_id,
            voter_id=voter_id,
            vote=_VOTE_TO_PROTO[choice],
            helpful_votes=counts[0],
            unhelpful_votes=counts[1],
        )

    # --- summaries --------------------------------------------------------------------------

    async def GetRatingSummary(
        self, request: reviews_pb2.GetRatingSummaryRequest, context: Any
    ) -> reviews_pb2.RatingSummary:
        current_principal()
        product_id = require(request.product_id, "product_id")
        today = now().date()
        async with self.db.read() as session:
            await store.product(session, product_id)
            rows = await store.summaries(session, product_id)
            daily = await store.daily_stats(session, product_id, today - timedelta(days=2 * domain.TREND_DAYS - 1))
        by_revision = {r.revision: r for r in rows}

        def summary(revision: int) -> reviews_pb2.RatingSummary:
            row = by_revision.get(revision)
            stats = row.stats if row is not None else Stats.zero()
            days: dict[date, Stats] = daily.get(revision, {})
            return summary_proto(
                product_id,
                revision,
                stats,
                domain.trend(days, today),
                self.prior,
                row.updated_at if row is not None else None,
            )

        overall = summary(0)
        overall.revisions.extend(summary(r) for r in sorted(by_revision) if r != 0)
        return overall

    # --- moderation and syndication ---------------------------------------------------------

    async def ModerateReview(self, request: reviews_pb2.ModerateReviewRequest, context: Any) -> reviews_pb2.Review:
        principal = current_principal()
        review_id = require(request.review_id, "review_id")
        decision = _DECISION_FROM_PROTO.get(request.decision)
        reasons = domain.validate_moderation(
            decision, [_REASON_FROM_PROTO.get(r) for r in request.reasons], request.note
        )
        assert decision is not None
        at = now()
        async with self.db.transaction() as session:
            row = await store.review(session, review_id, for_update=True)
            domain.require_moderator(principal, row.channel_partner_id)
            status = domain.moderation_transition(row.state, decision)
            if status is Status.PUBLISHED and not row.affiliation_checked:
                raise FailedPrecondition(
                    f"review {row.id} waits for its disclosure (identity has not answered yet); "
                    "it is published as soon as its affiliations are known"
                )
            before = Before.of(row)
            moderator = moderator_of(principal)
            if status is not row.state:
                row.status = status.value
                if status is Status.PUBLISHED:
                    self._publish(row, at)
                else:
                    row.counted_day = None
            moderation = self._moderation(row, status, reasons, at, moderator=moderator, note=request.note.strip())
            session.add(moderation)
            await settle(session, row, before, self.prior, at)
            if before.published != (status is Status.PUBLISHED):
                await self._record_moderated(session, row, reasons, moderator)
            moderations = await store.moderations(session, row.id)
            responses = await store.responses(session, [row.id])
        return review_proto(
            row,
            listing_partner=row.channel_partner_id,
            responses=responses[row.id],
            moderation=moderation,
            moderation_history=moderations,
        )

    async def GetSyndicationPolicy(
        self, request: reviews_pb2.GetSyndicationPolicyRequest, context: Any
    ) -> reviews_pb2.SyndicationPolicy:
        current_principal()
        partner_id = require(request.partner_id, "partner_id")
        async with self.db.read() as session:
            row = await store.policy(session, partner_id)
        if row is None:
            return reviews_pb2.SyndicationPolicy(partner_id=partner_id, opt_out=False)
        return reviews_pb2.SyndicationPolicy(
            partner_id=partner_id, opt_out=row.opt_out, update_time=timestamp(row.updated_at)
        )

    async def UpdateSyndicationPolicy(
        self, request: reviews_pb2.UpdateSyndicationPolicyRequest, context: Any
    ) -> reviews_pb2.SyndicationPolicy:
        principal = current_principal()
        partner_id = require(request.policy.partner_id, "policy.partner_id")
        domain.require_policy_owner(principal, partner_id)
        at = now()
        async with self.db.transaction() as session:
            row = await store.policy(session, partner_id)
            if row is None:
                row = store.SyndicationRow(partner_id=partner_id, opt_out=request.policy.opt_out, updated_at=at)
            else:
                row.opt_out = request.policy.opt_out
                row.updated_at = at
            session.add(row)
        return reviews_pb2.SyndicationPolicy(partner_id=partner_id, opt_out=row.opt_out, update_time=timestamp(at))
