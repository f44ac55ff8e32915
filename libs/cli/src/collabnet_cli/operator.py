"""The network's operator: the first partner, whose key (scope ``network:admin``) joins the others.

A new network has no partners, so no key to call the gateway with. The operator is made by asking
identity directly, as a service (a principal token signed with the principal-signing key, as any
internal tool does), for a partner and one key of it. The key is kept in
``<state dir>/operator.json``, readable by its owner only; a later start reuses it while identity
still accepts it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from collabnet.identity.v1 import identity_pb2 as identity
from collabnet.identity.v1.identity_pb2_grpc import IdentityServiceStub
from collabnet_kit.principal import Principal, PrincipalSigner
from collabnet_kit.settings import ServiceSettings

if TYPE_CHECKING:
    from collabnet.identity.v1.identity_pb2_grpc import IdentityServiceAsyncStub

OPERATOR_NAME = "Network operator"
OPERATOR_SCOPES = ("network:admin", "keys:manage", "reviews:write", "reviews:moderate")


@dataclass(frozen=True)
class OperatorKey:
    partner_id: str
    api_key_id: str
    secret: str


def key_file(state_dir: Path) -> Path:
    return state_dir / "operator.json"


def load(state_dir: Path) -> OperatorKey | None:
    """The operator's key kept under ``state_dir``, if there is one."""
    path = key_file(state_dir)
    if not path.exists():
        return None
    return OperatorKey(**json.loads(path.read_text()))


def _save(state_dir: Path, key: OperatorKey) -> None:
    path = key_file(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(asdict(key), out)


def _metadata(signing_key: str) -> tuple[tuple[str, str], ...]:
    token = PrincipalSigner(signing_key).sign(Principal(service="collabnet-cli"))
    return (("authorization", f"Bearer {token}"),)


async def ensure_operator(state_dir: Path, identity_address: str, signing_key: str | None = None) -> OperatorKey:
    """The operator's key: the one kept under ``state_dir`` while identity accepts it, else a new
    operator partner and key, kept there. ``signing_key`` defaults to the configured one
    (``COLLABNET_PRINCIPAL_SIGNING_KEY``, or the development key)."""
    signing_key = signing_key or ServiceSettings().principal_signing_key.get_secret_value()
    metadata = _metadata(signing_key)
    async with grpc.aio.insecure_channel(identity_address) as channel:
        stub: IdentityServiceAsyncStub = IdentityServiceStub(channel)
        kept = load(state_dir)
        if kept is not None:
            try:
                await stub.AuthenticateApiKey(
                    identity.AuthenticateApiKeyRequest(secret=kept.secret), metadata=metadata, timeout=10
                )
                return kept
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAUTHENTICATED:
                    raise
        joined = await stub.JoinNetwork(
            identity.JoinNetworkRequest(
                display_name=OPERATOR_NAME,
                kinds=[identity.PARTNER_KIND_SERVICE_PROVIDER],
            ),
            metadata=metadata,
            timeout=10,
        )
        created = await stub.CreateApiKey(
            identity.CreateApiKeyRequest(partner_id=joined.partner_id, name="operator", scopes=OPERATOR_SCOPES),
            metadata=metadata,
            timeout=10,
        )
    key = OperatorKey(joined.partner_id, created.api_key.api_key_id, created.secret)
    _save(state_dir, key)
    return key
