"""gRPC channels for calling other services: traced, with a principal, a deadline and retries.

    channel = runtime.channel(settings.identity_address, identity_pb2.DESCRIPTOR.services_by_name["IdentityService"])
    identity = IdentityServiceStub(channel)

Every call carries the principal: the token of the RPC being served when there is one (so the
callee sees the same partner and party), otherwise the calling service's own. A call without a
timeout gets the channel's default deadline. Methods declared ``idempotency_level =
NO_SIDE_EFFECTS`` or ``IDEMPOTENT`` in the proto are retried when the callee is UNAVAILABLE. Calls
are balanced round-robin over every address the target resolves to; servers close connections
after ``grpc_max_connection_age_seconds``, so clients resolve again and find new replicas.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.descriptor_pb2 import MethodOptions
from grpc_health.v1 import health_pb2

from collabnet_kit.principal import METADATA_KEY, Principal, PrincipalSigner, current_token
from collabnet_kit.telemetry import Telemetry

_RETRYABLE = (MethodOptions.NO_SIDE_EFFECTS, MethodOptions.IDEMPOTENT)


def service_config(services: Sequence[ServiceDescriptor], max_attempts: int = 4) -> str:
    """A gRPC service config that balances calls round-robin over the target's addresses and retries
    the idempotent methods of ``services`` on UNAVAILABLE."""
    names = [
        {"service": service.full_name, "method": method.name}
        for service in services
        for method in service.methods
        if method.GetOptions().idempotency_level in _RETRYABLE
    ]
    # Calls spread over every address the target resolves to (each replica behind a headless
    # Kubernetes Service) instead of all riding one connection to one of them.
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if not names:
        return json.dumps(config)
    policy = {
        "maxAttempts": max_attempts,
        "initialBackoff": "0.05s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    return json.dumps({**config, "methodConfig": [{"name": names, "retryPolicy": policy}]})


async def health_status(channel: grpc.aio.Channel, service: str = "", timeout: float = 2.0) -> str:
    """The health service's answer for ``service`` ("" is the whole process): SERVING, NOT_SERVING, ..."""
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    response = await check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


class ServiceTokens:
    """The calling service's own principal token, re-signed before it expires."""

    def __init__(self, signer: PrincipalSigner, service: str) -> None:
        self._signer = signer
        self._principal = Principal(service=service)
        self._token = ""
        self._renew_at = 0.0

    def __call__(self) -> str:
        now = time.time()
        if now >= self._renew_at:
            self._token = self._signer.sign(self._principal, now=now)
            self._renew_at = now + self._signer.ttl_seconds / 2
        return self._token


class _CallerInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
):
    """Adds the principal and a default deadline to every call."""

    def __init__(self, token: Callable[[], str], default_timeout: float) -> None:
        self._token = token
        self._default_timeout = default_timeout

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if not any(key == METADATA_KEY for key, _ in metadata):
            metadata.add(METADATA_KEY, f"Bearer {self._token()}")
        return grpc.aio.ClientCallDetails(
            method=details.method,
            timeout=details.timeout if details.timeout is not None else self._default_timeout,
            metadata=metadata,
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
        )

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


def channel(
    target: str,
    *services: ServiceDescriptor,
    telemetry: Telemetry,
    service_token: Callable[[], str],
    default_timeout: float = 5.0,
    credentials: grpc.ChannelCredentials | None = None,
) -> grpc.aio.Channel:
    """A channel to ``target`` for calling ``services``; see the module's documentation."""

    def token() -> str:
        return current_token() or service_token()

    interceptors = [*telemetry.grpc_client_interceptors(), _CallerInterceptor(token, default_timeout)]
    options = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", service_config(services)),
        ("grpc.keepalive_time_ms", 30_000),
        # Connections of its own: from gRPC's process-wide pool a new channel would take over another
        # channel's connection to the same address, and with it the back-off of that connection's
        # failures (a restarted callee on the same address would be UNAVAILABLE until it ran out).
        ("grpc.use_local_subchannel_pool", 1),
        # A callee that restarts is back within seconds: try it again at most every 2 s (gRPC's default
        # back-off grows to 120 s, and calls fail fast as UNAVAILABLE until the next attempt).
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.min_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]
    if credentials is not None:
        return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
