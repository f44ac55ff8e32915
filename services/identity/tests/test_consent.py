"""Consent through the real gRPC server: granting, revoking, expiry, answers in time, listing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from identity_testing import SERVICE, Identity, Metadata, Network, at, partner, refused, stamp, violated_fields

from collabnet.identity.v1 import identity_pb2

RECALL = "contact:recall"


async def grant(
    identity: Identity,
    network: Network,
    partner_id: str,
    purpose: str = RECALL,
    *,
    expires: datetime | None = None,
    metadata: Metadata = SERVICE,
) -> identity_pb2.ConsentRecord:
    request = identity_pb2.GrantConsentRequest(
        party_id=network.c, partner_id=partner_id, purpose=purpose, source="signup form"
    )
    if expires is not None:
        request.expire_time.CopyFrom(stamp(expires))
    return await identity.GrantConsent(request, metadata=metadata)


async def revoke(
    identity: Identity, network: Network, partner_id: str, purpose: str = RECALL
) -> identity_pb2.ConsentRecord:
    return await identity.RevokeConsent(
        identity_pb2.RevokeConsentRequest(party_id=network.c, partner_id=partner_id, purpose=purpose, source="call"),
        metadata=SERVICE,
    )


async def check(
    identity: Identity,
    network: Network,
    partner_id: str,
    purpose: str = RECALL,
    *,
    when: datetime | None = None,
    metadata: Metadata = SERVICE,
) -> identity_pb2.CheckConsentResponse:
    request = identity_pb2.CheckConsentRequest(party_id=network.c, partner_id=partner_id, purpose=purpose)
    if when is not None:
        request.at.CopyFrom(stamp(when))
    return await identity.CheckConsent(request, metadata=metadata)


async def test_a_granted_consent_holds_and_check_consent_names_the_record_it_relied_on(
    identity: Identity, network: Network
) -> None:
    before = datetime.now(UTC)
    granted = await grant(identity, network, network.r[0])
    assert granted.consent_id
    assert (granted.party_id, granted.partner_id, granted.purpose) == (network.c, network.r[0], RECALL)
    assert granted.granted
    assert granted.source == "signup form"
    assert at(granted.capture_time) >= before
    assert not granted.HasField("expire_time")

    answer = await check(identity, network, network.r[0])
    assert answer.granted
    assert answer.record == granted
    assert "signup form" in answer.reason


async def test_no_consent_ever_recorded_is_not_granted_and_has_no_record(identity: Identity, network: Network) -> None:
    answer = await check(identity, network, network.r[0])
    assert not answer.granted
    assert not answer.HasField("record")
    assert answer.reason == "no consent was ever recorded"


async def test_a_revoked_consent_no_longer_holds_but_a_check_at_an_earlier_time_gives_the_earlier_answer(
    identity: Identity, network: Network
) -> None:
    granted = await grant(identity, network, network.r[0])
    revoked = await revoke(identity, network, network.r[0])
    assert not revoked.granted
    assert revoked.consent_id != granted.consent_id

    now = await check(identity, network, network.r[0])
    assert not now.granted
    assert now.record == revoked
    assert "revoked" in now.reason

    then = await check(identity, network, network.r[0], when=at(granted.capture_time))
    assert then.granted
    assert then.record == granted

    before_any = await check(identity, network, network.r[0], when=at(granted.capture_time) - timedelta(seconds=1))
    assert not before_any.granted
    assert not before_any.HasField("record")


async def test_a_consent_granted_again_after_a_revocation_holds_again(identity: Identity, network: Network) -> None:
    await grant(identity, network, network.r[0])
    await revoke(identity, network, network.r[0])
    again = await grant(identity, network, network.r[0])
    answer = await check(identity, network, network.r[0])
    assert answer.granted
    assert answer.record == again


async def test_a_consent_holds_until_its_expiry_and_a_check_after_it_says_it_expired(
    identity: Identity, network: Network
) -> None:
    expiry = datetime.now(UTC) + timedelta(days=30)
    granted = await grant(identity, network, network.r[0], expires=expiry)
    assert at(granted.expire_time) == expiry

    now = await check(identity, network, network.r[0])
    assert now.granted
    assert now.record == granted

    later = await check(identity, network, network.r[0], when=expiry + timedelta(days=1))
    assert not later.granted
    assert later.record == granted
    assert "expired" in later.reason


async def test_consent_is_per_partner_and_purpose(identity: Identity, network: Network) -> None:
    await grant(identity, network, network.r[0])
    assert not (await check(identity, network, network.r[1])).granted
    assert not (await check(identity, network, network.r[0], "analytics")).granted


async def test_list_consents_returns_the_latest_record_of_each_partner_and_purpose_newest_first(
    identity: Identity, network: Network
) -> None:
    await grant(identity, network, network.r[0])
    revoked = await revoke(identity, network, network.r[0])
    analytics = await grant(identity, network, network.r[0], "analytics")
    second = await grant(identity, network, network.r[1])

    listed = await identity.ListConsents(identity_pb2.ListConsentsRequest(party_id=network.c), metadata=SERVICE)
    assert list(listed.consents) == [second, analytics, revoked]

    mine = await identity.ListConsents(
        identity_pb2.ListConsentsRequest(party_id=network.c), metadata=partner(network.r[0])
    )
    assert list(mine.consents) == [analytics, revoked]
    the_partys_own = await identity.ListConsents(
        identity_pb2.ListConsentsRequest(party_id=network.c), metadata=partner(network.o, acting_for=network.c)
    )
    assert list(the_partys_own.consents) == [second, analytics, revoked]


async def test_the_party_itself_grants_consent_through_a_partner_acting_for_it(
    identity: Identity, network: Network
) -> None:
    granted = await grant(identity, network, network.m, metadata=partner(network.r[0], acting_for=network.c))
    assert (await check(identity, network, network.m)).record == granted


async def test_a_partner_may_not_change_a_partys_consent_without_acting_for_it(
    identity: Identity, network: Network
) -> None:
    await refused(
        grant(identity, network, network.r[0], metadata=partner(network.r[0])), grpc.StatusCode.PERMISSION_DENIED
    )
    answer = await check(identity, network, network.r[0])
    assert not answer.HasField("record")


async def test_a_partner_may_check_only_consent_given_to_it(identity: Identity, network: Network) -> None:
    await grant(identity, network, network.r[0])
    mine = await check(identity, network, network.r[0], metadata=partner(network.r[0]))
    assert mine.granted
    await refused(
        check(identity, network, network.r[0], metadata=partner(network.r[1])), grpc.StatusCode.PERMISSION_DENIED
    )


@pytest.mark.parametrize(
    ("purpose", "source", "expires_in", "field"),
    [
        ("Contact Me!", "form", None, "purpose"),
        (RECALL, " ", None, "source"),
        (RECALL, "form", timedelta(days=-1), "expire_time"),
    ],
    ids=["bad-purpose", "no-source", "expired-already"],
)
async def test_a_bad_consent_is_invalid_argument_naming_the_field_and_records_nothing(
    identity: Identity, network: Network, purpose: str, source: str, expires_in: timedelta | None, field: str
) -> None:
    request = identity_pb2.GrantConsentRequest(
        party_id=network.c, partner_id=network.r[0], purpose=purpose, source=source
    )
    if expires_in is not None:
        request.expire_time.CopyFrom(stamp(datetime.now(UTC) + expires_in))
    error = await refused(identity.GrantConsent(request, metadata=SERVICE), grpc.StatusCode.INVALID_ARGUMENT)
    assert violated_fields(error) == [field]
    listed = await identity.ListConsents(identity_pb2.ListConsentsRequest(party_id=network.c), metadata=SERVICE)
    assert list(listed.consents) == []


async def test_consent_with_an_unknown_partner_is_not_found(identity: Identity, network: Network) -> None:
    await refused(grant(identity, network, "no-such-partner"), grpc.StatusCode.NOT_FOUND)
