"""API keys through the real gRPC server: the secret shown once, authentication, revocation, who may."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from identity_testing import SERVICE, Identity, Network, partner, refused, violated_fields

from collabnet.identity.v1 import identity_pb2


async def create_key(
    identity: Identity, partner_id: str, *scopes: str, name: str = "shop backend"
) -> identity_pb2.CreateApiKeyResponse:
    return await identity.CreateApiKey(
        identity_pb2.CreateApiKeyRequest(partner_id=partner_id, name=name, scopes=scopes or ("reviews:write",)),
        metadata=partner(partner_id),
    )


async def authenticate(identity: Identity, secret: str) -> identity_pb2.AuthenticateApiKeyResponse:
    return await identity.AuthenticateApiKey(identity_pb2.AuthenticateApiKeyRequest(secret=secret), metadata=SERVICE)


async def test_a_created_key_returns_its_secret_once_and_listing_shows_only_its_prefix(
    identity: Identity, network: Network
) -> None:
    created = await create_key(identity, network.r[0], "reviews:write", "keys:manage", "reviews:write")
    key = created.api_key
    scheme, prefix, _ = created.secret.split("_", 2)
    assert scheme == "cnk"
    assert key.prefix == prefix
    assert len(prefix) == 8
    assert (key.partner_id, key.name) == (network.r[0], "shop backend")
    assert list(key.scopes) == ["keys:manage", "reviews:write"]
    assert key.HasField("create_time")
    assert not key.HasField("revoke_time")

    listed = await identity.ListApiKeys(
        identity_pb2.ListApiKeysRequest(partner_id=network.r[0]), metadata=partner(network.r[0])
    )
    assert [k.api_key_id for k in listed.api_keys] == [key.api_key_id]
    assert listed.api_keys[0].prefix == prefix
    assert created.secret not in str(listed)
    assert created.secret.encode() not in listed.SerializeToString()
    assert created.secret.split("_", 2)[2].encode() not in listed.SerializeToString()


async def test_a_service_authenticates_a_key_as_its_partner_and_scopes_and_the_key_records_its_use(
    identity: Identity, network: Network
) -> None:
    created = await create_key(identity, network.r[0], "reviews:write")
    who = await authenticate(identity, created.secret)
    assert who.partner_id == network.r[0]
    assert list(who.scopes) == ["reviews:write"]
    assert who.api_key_id == created.api_key.api_key_id

    listed = await identity.ListApiKeys(identity_pb2.ListApiKeysRequest(partner_id=network.r[0]), metadata=SERVICE)
    assert listed.api_keys[0].HasField("last_used_time")


async def test_a_revoked_key_stops_authenticating(identity: Identity, network: Network) -> None:
    created = await create_key(identity, network.r[0])
    await authenticate(identity, created.secret)
    revoked = await identity.RevokeApiKey(
        identity_pb2.RevokeApiKeyRequest(api_key_id=created.api_key.api_key_id), metadata=partner(network.r[0])
    )
    assert revoked.HasField("revoke_time")
    error = await refused(authenticate(identity, created.secret), grpc.StatusCode.UNAUTHENTICATED)
    assert "revoked" in (error.details() or "")

    again = await identity.RevokeApiKey(
        identity_pb2.RevokeApiKeyRequest(api_key_id=created.api_key.api_key_id), metadata=SERVICE
    )
    assert again.revoke_time == revoked.revoke_time
    listed = await identity.ListApiKeys(identity_pb2.ListApiKeysRequest(partner_id=network.r[0]), metadata=SERVICE)
    assert listed.api_keys[0].revoke_time == revoked.revoke_time


async def test_revoking_one_key_leaves_the_partners_other_keys_working(identity: Identity, network: Network) -> None:
    first = await create_key(identity, network.r[0], name="first")
    second = await create_key(identity, network.r[0], name="second")
    assert first.api_key.prefix != second.api_key.prefix
    await identity.RevokeApiKey(identity_pb2.RevokeApiKeyRequest(api_key_id=first.api_key.api_key_id), metadata=SERVICE)
    assert (await authenticate(identity, second.secret)).api_key_id == second.api_key.api_key_id


def tampered(secret: str) -> str:
    last = secret[-1]
    return secret[:-1] + ("A" if last != "A" else "B")


@pytest.mark.parametrize(
    "wrong",
    [tampered, lambda s: s + "x", lambda s: "cnk_00000000_" + s.split("_", 2)[2], lambda s: "not a key", lambda s: ""],
    ids=["tampered", "longer", "unknown-prefix", "not-shaped-like-a-key", "empty"],
)
async def test_a_wrong_secret_is_unauthenticated(
    identity: Identity, network: Network, wrong: Callable[[str], str]
) -> None:
    created = await create_key(identity, network.r[0])
    await refused(authenticate(identity, wrong(created.secret)), grpc.StatusCode.UNAUTHENTICATED)


async def test_a_partner_may_not_authenticate_api_keys(identity: Identity, network: Network) -> None:
    created = await create_key(identity, network.r[0])
    await refused(
        identity.AuthenticateApiKey(
            identity_pb2.AuthenticateApiKeyRequest(secret=created.secret), metadata=partner(network.r[0])
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )


async def test_a_partner_manages_only_its_own_keys(identity: Identity, network: Network) -> None:
    created = await create_key(identity, network.r[0])
    other = partner(network.r[1], scopes=frozenset({"keys:manage", "reviews:write"}))
    await refused(
        identity.CreateApiKey(
            identity_pb2.CreateApiKeyRequest(partner_id=network.r[0], name="sneaky", scopes=["reviews:write"]),
            metadata=other,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await refused(
        identity.ListApiKeys(identity_pb2.ListApiKeysRequest(partner_id=network.r[0]), metadata=other),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await refused(
        identity.RevokeApiKey(identity_pb2.RevokeApiKeyRequest(api_key_id=created.api_key.api_key_id), metadata=other),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert (await authenticate(identity, created.secret)).partner_id == network.r[0]
    listed = await identity.ListApiKeys(identity_pb2.ListApiKeysRequest(partner_id=network.r[0]), metadata=SERVICE)
    assert [k.name for k in listed.api_keys] == ["shop backend"]


async def test_creating_a_key_needs_the_keys_manage_scope_and_grants_no_scope_its_creator_lacks(
    identity: Identity, network: Network
) -> None:
    await refused(
        identity.CreateApiKey(
            identity_pb2.CreateApiKeyRequest(partner_id=network.r[0], name="k", scopes=["reviews:write"]),
            metadata=partner(network.r[0], scopes=frozenset({"reviews:write"})),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    error = await refused(
        identity.CreateApiKey(
            identity_pb2.CreateApiKeyRequest(partner_id=network.r[0], name="k", scopes=["orders:admin"]),
            metadata=partner(network.r[0]),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == ["scopes"]
    listed = await identity.ListApiKeys(identity_pb2.ListApiKeysRequest(partner_id=network.r[0]), metadata=SERVICE)
    assert list(listed.api_keys) == []


async def test_the_network_operator_issues_a_joining_partners_first_key_and_may_revoke_it(
    identity: Identity, network: Network
) -> None:
    operator = partner(network.r[1], scopes=frozenset({"network:admin", "keys:manage", "reviews:write"}))
    issued = await identity.CreateApiKey(
        identity_pb2.CreateApiKeyRequest(partner_id=network.r[0], name="first key", scopes=["reviews:write"]),
        metadata=operator,
    )
    assert (await authenticate(identity, issued.secret)).partner_id == network.r[0]
    listed = await identity.ListApiKeys(identity_pb2.ListApiKeysRequest(partner_id=network.r[0]), metadata=operator)
    assert [k.name for k in listed.api_keys] == ["first key"]
    error = await refused(
        identity.CreateApiKey(
            identity_pb2.CreateApiKeyRequest(partner_id=network.r[0], name="k", scopes=["orders:admin"]),
            metadata=operator,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == ["scopes"]  # no more than the operator's own scopes
    await identity.RevokeApiKey(
        identity_pb2.RevokeApiKeyRequest(api_key_id=issued.api_key.api_key_id), metadata=operator
    )
    await refused(authenticate(identity, issued.secret), grpc.StatusCode.UNAUTHENTICATED)


@pytest.mark.parametrize(
    ("name", "scopes", "fields"),
    [(" ", ["reviews:write"], ["name"]), ("k", [], ["scopes"]), ("k", ["Reviews Write"], ["scopes[0]"])],
    ids=["no-name", "no-scopes", "bad-scope"],
)
async def test_a_bad_key_request_is_invalid_argument_naming_the_field(
    identity: Identity, network: Network, name: str, scopes: list[str], fields: list[str]
) -> None:
    error = await refused(
        identity.CreateApiKey(
            identity_pb2.CreateApiKeyRequest(partner_id=network.r[0], name=name, scopes=scopes), metadata=SERVICE
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violated_fields(error) == fields


async def test_keys_of_an_unknown_partner_or_an_unknown_key_are_not_found(identity: Identity) -> None:
    await refused(
        identity.CreateApiKey(
            identity_pb2.CreateApiKeyRequest(partner_id="nobody", name="k", scopes=["reviews:write"]), metadata=SERVICE
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    await refused(
        identity.ListApiKeys(identity_pb2.ListApiKeysRequest(partner_id="nobody"), metadata=SERVICE),
        grpc.StatusCode.NOT_FOUND,
    )
    await refused(
        identity.RevokeApiKey(identity_pb2.RevokeApiKeyRequest(api_key_id="nothing"), metadata=SERVICE),
        grpc.StatusCode.NOT_FOUND,
    )
