"""Identity's rules, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from collabnet_identity import domain
from collabnet_identity.domain import ConsentRecord, Relationship, Viewer
from collabnet_kit.errors import InvalidArgument, PermissionDenied
from collabnet_kit.principal import Principal

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TYPES = {t.name: t for t in domain.DEFAULT_TYPES}


def rel(source: str, target: str, kind: str = "customer_of", *, context: str = "R", **dates: datetime) -> Relationship:
    return Relationship(
        id=f"{source}-{kind}-{target}",
        from_party=source,
        to_party=target,
        type=kind,
        context_partner=context,
        attributes={},
        valid_from=dates.get("valid_from", T0),
        valid_to=dates.get("valid_to"),
        created_at=T0,
    )


def violations(error: pytest.ExceptionInfo[InvalidArgument]) -> set[str]:
    return {v.field for v in error.value.violations}


def test_a_relationship_is_valid_from_its_start_until_just_before_its_end() -> None:
    ended = rel("C", "R", valid_to=T0 + timedelta(days=10))
    assert not ended.valid_at(T0 - timedelta(seconds=1))
    assert ended.valid_at(T0)
    assert ended.valid_at(T0 + timedelta(days=10) - timedelta(microseconds=1))
    assert not ended.valid_at(T0 + timedelta(days=10))
    assert rel("C", "R").valid_at(T0 + timedelta(days=10_000))


def test_overlapping_intervals_share_a_moment_and_touching_ones_do_not() -> None:
    day = timedelta(days=1)
    assert domain.overlaps(T0, T0 + day, T0 + day / 2, None)
    assert not domain.overlaps(T0, T0 + day, T0 + day, None)
    assert domain.overlaps(T0, None, T0 + 100 * day, T0 + 101 * day)


def test_a_role_reads_the_type_from_the_partys_side() -> None:
    supplies = rel("S", "M", "supplier_of")
    assert domain.role_of("S", supplies, TYPES) == "supplier_of"
    assert domain.role_of("M", supplies, TYPES) == "supplied_by"
    partners = rel("A", "B", "partner_of")
    assert domain.role_of("B", partners, TYPES) == "partner_of"


def test_a_self_relationship_an_unknown_type_and_an_end_before_the_start_are_refused_together() -> None:
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_relationship("C", "C", "friend_of", TYPES, T0, T0 - timedelta(days=1), {})
    assert violations(raised) == {"to_party_id", "type", "valid_to"}


def test_capabilities_and_purposes_are_namespaced_strings() -> None:
    for good in ("repair", "ship:eu", "answer:category/kitchen"):
        domain.validate_capability(good)
    for bad in ("", "Repair", "ship eu", ":eu"):
        with pytest.raises(InvalidArgument):
            domain.validate_capability(bad)
    domain.validate_purpose("share:contact-with-maker")
    with pytest.raises(InvalidArgument):
        domain.validate_purpose("share contact")


def test_bounded_values_default_when_zero_and_name_the_field_when_out_of_range() -> None:
    assert domain.bounded(0, "depth", 1, 1, 3) == 1
    assert domain.bounded(3, "depth", 1, 1, 3) == 3
    with pytest.raises(InvalidArgument) as raised:
        domain.bounded(4, "depth", 1, 1, 3)
    assert violations(raised) == {"depth"}


def test_a_relationship_type_may_not_reuse_a_name_or_an_inverse_name() -> None:
    with pytest.raises(InvalidArgument) as raised:
        domain.validate_relationship_type(domain.RelationshipType("serves", "supplied_by"), TYPES)
    assert violations(raised) == {"relationship_type.name", "relationship_type.inverse_name"}
    domain.validate_relationship_type(domain.RelationshipType("repairs_for", "repaired_by"), TYPES)


def consent(granted: bool, at: datetime, expires: datetime | None = None, ident: str = "x") -> ConsentRecord:
    return ConsentRecord(ident, "C", "R", "contact:recall", granted, "web form", at, expires)


def test_the_latest_consent_record_decides() -> None:
    records = [consent(True, T0, ident="a"), consent(False, T0 + timedelta(days=2), ident="b")]
    assert domain.consent_at(records, T0 + timedelta(days=1)).granted
    later = domain.consent_at(records, T0 + timedelta(days=3))
    assert not later.granted
    assert later.record is not None
    assert later.record.id == "b"
    assert "revoked" in later.reason


def test_a_consent_past_its_expiry_no_longer_holds_and_no_record_means_no_consent() -> None:
    records = [consent(True, T0, expires=T0 + timedelta(days=30))]
    assert domain.consent_at(records, T0 + timedelta(days=29)).granted
    expired = domain.consent_at(records, T0 + timedelta(days=30))
    assert not expired.granted
    assert "expired" in expired.reason
    none = domain.consent_at([], T0)
    assert not none.granted
    assert none.record is None


def test_an_api_key_secret_carries_its_prefix_and_matches_only_its_hash() -> None:
    key = domain.new_api_key()
    assert domain.key_prefix(key.secret) == key.prefix
    assert domain.same_secret(key.secret, key.secret_hash)
    assert not domain.same_secret(key.secret + "x", key.secret_hash)
    assert key.secret not in key.secret_hash
    assert domain.key_prefix("not-a-key") is None


def test_a_partner_acts_for_a_party_only_while_they_have_a_current_relationship() -> None:
    allowed = domain.acts_for("R", "C", [rel("C", "R")], TYPES)
    assert allowed.allowed
    assert allowed.relationship_id == "C-customer_of-R"
    assert "customer_of" in allowed.reason
    denied = domain.acts_for("R2", "C", [], TYPES)
    assert not denied.allowed
    assert "no current relationship" in denied.reason


def test_a_partner_records_relationships_only_in_its_own_network_and_as_an_end() -> None:
    retailer = Principal(partner_id="R")
    domain.may_record_relationship(retailer, "C", "R", "R")
    domain.may_record_relationship(Principal(partner_id="R", party_id="C"), "C", "M", "R")
    with pytest.raises(PermissionDenied):
        domain.may_record_relationship(retailer, "C", "R", "M")
    with pytest.raises(PermissionDenied):
        domain.may_record_relationship(retailer, "C", "M", "R")
    domain.may_record_relationship(Principal(service="gateway"), "C", "M", "R")


def test_a_partner_acting_for_a_party_may_record_its_relationship_in_the_other_ends_network() -> None:
    introducer = Principal(partner_id="R", party_id="C")
    domain.may_record_relationship(introducer, "C", "R2", "R2")
    domain.may_record_relationship(introducer, "C", "R2", "R")
    with pytest.raises(PermissionDenied):
        domain.may_record_relationship(introducer, "C", "R2", "M")
    with pytest.raises(PermissionDenied):
        domain.may_record_relationship(introducer, "C", "R2", "C")
    with pytest.raises(PermissionDenied):
        domain.may_record_relationship(Principal(partner_id="R"), "C", "R2", "R2")


def test_a_partner_relates_a_party_that_is_not_a_partner_only_if_it_registered_it_or_acts_for_it() -> None:
    registered_by = {"C": "R"}  # C is a person R registered; R2 and M are partners
    domain.may_relate_outsiders(Principal(partner_id="R"), "C", "R", registered_by)
    domain.may_relate_outsiders(Principal(partner_id="R", party_id="C"), "C", "R2", registered_by)
    domain.may_relate_outsiders(Principal(partner_id="R2"), "M", "R2", {})
    domain.may_relate_outsiders(Principal(service="gateway"), "C", "R2", registered_by)
    with pytest.raises(PermissionDenied) as raised:
        domain.may_relate_outsiders(Principal(partner_id="R2"), "C", "R2", registered_by)
    assert raised.value.message.startswith("from_party_id: C is not a partner")
    assert "registered that party or acts for it" in raised.value.message
    assert " R " not in f" {raised.value.message} "  # who registered C is not the caller's business
    with pytest.raises(PermissionDenied) as raised:
        domain.may_relate_outsiders(Principal(partner_id="R2"), "R2", "C", registered_by)
    assert raised.value.message.startswith("to_party_id: C")
    # A party a service registered: only a partner acting for it relates it to itself.
    with pytest.raises(PermissionDenied):
        domain.may_relate_outsiders(Principal(partner_id="R"), "D", "R", {"D": None})
    domain.may_relate_outsiders(Principal(partner_id="R", party_id="D"), "D", "R", {"D": None})
    # Acting for one end opens nothing about a third party: the other end must be the caller's own.
    with pytest.raises(PermissionDenied):
        domain.may_relate_outsiders(Principal(partner_id="R2", party_id="C"), "C", "D", {"C": "R", "D": "R"})


def test_partners_see_public_relationships_and_the_private_ones_they_are_party_to() -> None:
    private = rel("C", "R2", "customer_of", context="R2")
    public = rel("S", "M", "supplier_of", context="M")
    stranger = Viewer.of(Principal(partner_id="R"))
    assert stranger.sees(public, TYPES)
    assert not stranger.sees(private, TYPES)
    assert Viewer.of(Principal(partner_id="R", party_id="C")).sees(private, TYPES)
    assert Viewer.of(Principal(partner_id="R2")).sees(private, TYPES)
    assert Viewer.of(Principal(service="reviews")).sees(private, TYPES)


def test_check_names_unknown_actions_and_resources_that_do_not_fit() -> None:
    retailer = Principal(partner_id="R")
    with pytest.raises(InvalidArgument) as raised:
        domain.check(retailer, "party.delete", "party/C", domain.Facts(), TYPES)
    assert violations(raised) == {"action"}
    with pytest.raises(InvalidArgument) as raised:
        domain.check(retailer, "partner.manage", "party/C", domain.Facts(), TYPES)
    assert violations(raised) == {"resource"}


def test_check_decides_contact_data_by_relationship_and_always_says_why() -> None:
    retailer = Principal(partner_id="R")
    facts = domain.Facts(relationships=[rel("C", "R")])
    related = domain.check(retailer, "party.read_contact", "party/C", facts, TYPES)
    assert related.allowed
    assert related.reason
    unrelated = domain.check(retailer, "party.read_contact", "party/C", domain.Facts(), TYPES)
    assert not unrelated.allowed
    assert "not shared" in unrelated.reason
    assert domain.check(retailer, "partner.manage", "partner/R", domain.Facts(), TYPES).allowed
    assert not domain.check(retailer, "partner.manage", "partner/M", domain.Facts(), TYPES).allowed
