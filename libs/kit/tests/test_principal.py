"""Principal tokens: what is signed is what verifies; anything expired, foreign or anonymous is refused."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest

from collabnet_kit.errors import Unauthenticated
from collabnet_kit.principal import (
    ISSUER,
    Principal,
    PrincipalSigner,
    acting_as,
    current_principal,
    current_token,
)

KEY = "a-signing-key-for-the-principal-tests-0123456789"
OTHER_KEY = "another-signing-key-of-a-proper-length-0123456789"
signer = PrincipalSigner(KEY, ttl_seconds=300)


@pytest.mark.parametrize(
    "principal",
    [
        Principal(partner_id="retailer-r"),
        Principal(partner_id="retailer-r", party_id="consumer-c"),
        Principal(partner_id="retailer-r", party_id="consumer-c", scopes=frozenset({"reviews:write", "reviews:read"})),
        Principal(service="reviews"),
    ],
    ids=["partner", "acting-for-a-party", "with-scopes", "service"],
)
def test_a_signed_principal_verifies_as_itself(principal: Principal) -> None:
    assert signer.verify(signer.sign(principal)) == principal


def test_the_token_names_issuer_subject_and_lifetime() -> None:
    token = signer.sign(Principal(partner_id="retailer-r", scopes=frozenset({"b", "a"})), now=1_700_000_000)
    claims = jwt.decode(token, KEY, algorithms=["HS256"], options={"verify_exp": False})
    assert claims["iss"] == ISSUER
    assert claims["sub"] == "partner:retailer-r"
    assert claims["iat"] == 1_700_000_000
    assert claims["exp"] == 1_700_000_300
    assert claims["scopes"] == ["a", "b"]


def test_a_service_principal_is_its_own_subject_and_has_every_scope() -> None:
    principal = signer.verify(signer.sign(Principal(service="reviews")))
    assert principal.subject == "service:reviews"
    assert principal.partner_id is None
    assert principal.has_scope("anything:at-all")


def test_a_partner_has_only_the_scopes_of_its_key() -> None:
    principal = signer.verify(signer.sign(Principal(partner_id="retailer-r", scopes=frozenset({"reviews:read"}))))
    assert principal.has_scope("reviews:read")
    assert not principal.has_scope("reviews:write")


def test_an_expired_token_is_unauthenticated() -> None:
    issued_long_ago = time.time() - 3600
    token = signer.sign(Principal(partner_id="retailer-r"), now=issued_long_ago)
    with pytest.raises(Unauthenticated, match="expired"):
        signer.verify(token)


def test_a_token_signed_with_another_key_is_unauthenticated() -> None:
    token = PrincipalSigner(OTHER_KEY).sign(Principal(partner_id="retailer-r"))
    with pytest.raises(Unauthenticated, match="not valid"):
        signer.verify(token)


def test_a_tampered_token_is_unauthenticated() -> None:
    header, _, signature = signer.sign(Principal(partner_id="retailer-r")).split(".")
    forged_claims = signer.sign(Principal(partner_id="maker-m")).split(".")[1]
    with pytest.raises(Unauthenticated):
        signer.verify(f"{header}.{forged_claims}.{signature}")


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c"])
def test_a_malformed_token_is_unauthenticated(token: str) -> None:
    with pytest.raises(Unauthenticated, match="not valid"):
        signer.verify(token)


def test_a_token_naming_neither_partner_nor_service_is_unauthenticated() -> None:
    token = signer.sign(Principal(party_id="consumer-c", scopes=frozenset({"reviews:read"})))
    with pytest.raises(Unauthenticated, match="neither a partner nor a service"):
        signer.verify(token)


def test_a_token_from_another_issuer_is_unauthenticated() -> None:
    now = int(time.time())
    token = jwt.encode(
        {"iss": "someone-else", "sub": "partner:r", "iat": now, "exp": now + 60, "partner": "r"}, KEY, "HS256"
    )
    with pytest.raises(Unauthenticated, match="not valid"):
        signer.verify(token)


def test_a_token_without_an_expiry_is_unauthenticated() -> None:
    token = jwt.encode({"iss": ISSUER, "sub": "partner:r", "iat": int(time.time()), "partner": "r"}, KEY, "HS256")
    with pytest.raises(Unauthenticated, match="not valid"):
        signer.verify(token)


def test_an_unsigned_token_is_unauthenticated() -> None:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "partner:r", "iat": now, "exp": now + 60, "partner": "r"}
    token = jwt.encode(claims, None, algorithm="none")
    with pytest.raises(Unauthenticated):
        signer.verify(token)


def test_an_empty_signing_key_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        PrincipalSigner("")


def test_there_is_no_current_principal_outside_acting_as() -> None:
    with pytest.raises(Unauthenticated):
        current_principal()
    assert current_token() is None


def test_acting_as_makes_the_principal_and_its_token_current_and_resets_them_after() -> None:
    principal = Principal(partner_id="retailer-r")
    token = signer.sign(principal)
    with acting_as(principal, token):
        assert current_principal() == principal
        assert current_token() == token
    with pytest.raises(Unauthenticated):
        current_principal()
    assert current_token() is None


def test_acting_as_resets_even_when_the_block_raises() -> None:
    principal = Principal(partner_id="retailer-r")
    with pytest.raises(RuntimeError), acting_as(principal, signer.sign(principal)):
        raise RuntimeError("the handler failed")
    with pytest.raises(Unauthenticated):
        current_principal()


def test_nested_acting_as_restores_the_outer_principal() -> None:
    outer, inner = Principal(partner_id="retailer-r"), Principal(service="reviews")
    with acting_as(outer, "outer-token"):
        with acting_as(inner, "inner-token"):
            assert current_principal() == inner
            assert current_token() == "inner-token"
        assert current_principal() == outer
        assert current_token() == "outer-token"


async def test_concurrent_tasks_each_see_only_their_own_principal() -> None:
    seen: dict[str, str | None] = {}
    both_inside = asyncio.Barrier(2)

    async def serve(partner: str) -> None:
        with acting_as(Principal(partner_id=partner), f"token-of-{partner}"):
            await both_inside.wait()
            seen[partner] = current_principal().partner_id

    await asyncio.gather(serve("retailer-r"), serve("maker-m"))
    assert seen == {"retailer-r": "retailer-r", "maker-m": "maker-m"}
    assert current_token() is None
