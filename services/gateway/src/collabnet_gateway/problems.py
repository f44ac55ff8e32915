"""RFC 9457 problem responses: every error a partner sees, and only what it may see.

A gRPC status from a service becomes its HTTP status, with the service's message and field
violations carried through; anything unexpected is a 500 with the trace id and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from fastapi.responses import JSONResponse
from opentelemetry import trace

from collabnet_kit import errors
from collabnet_kit.grpc_errors import from_rpc_error

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://collabnet.dev/problems/"

HTTP_OF_GRPC: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 422,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
TITLES = {
    400: "Bad request",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Unprocessable request",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
    504: "Gateway timeout",
}
SLUGS = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    409: "conflict",
    413: "body-too-large",
    415: "unsupported-media-type",
    422: "unprocessable",
    429: "rate-limited",
    500: "internal",
    503: "unavailable",
    504: "timeout",
}


class Problem(Exception):
    """An error to answer with, as a problem response."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        violations: Sequence[errors.FieldViolation] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.violations = list(violations)
        self.headers = headers or {}

    @classmethod
    def of_domain(cls, error: errors.DomainError) -> Problem:
        code = {
            errors.InvalidArgument: 400,
            errors.Unauthenticated: 401,
            errors.PermissionDenied: 403,
            errors.NotFound: 404,
            errors.AlreadyExists: 409,
            errors.Aborted: 409,
            errors.FailedPrecondition: 422,
            errors.ResourceExhausted: 429,
        }
        status = next((code[c] for c in type(error).__mro__ if c in code), 422)
        violations = error.violations if isinstance(error, errors.InvalidArgument) else []
        return cls(status, error.message, violations=violations)

    @classmethod
    def of_rpc(cls, error: grpc.aio.AioRpcError) -> Problem:
        domain_error = from_rpc_error(error)
        if domain_error is not None:
            return cls.of_domain(domain_error)
        status = HTTP_OF_GRPC.get(error.code(), 500)
        if status == 503:
            return cls(503, "a service this request needs is not available; try again shortly")
        if status == 504:
            return cls(504, "a service this request needs did not answer in time")
        return cls(500, "internal error")


def trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def response(problem: Problem, instance: str) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + SLUGS.get(problem.status, "error"),
        "title": TITLES.get(problem.status, "Error"),
        "status": problem.status,
        "detail": problem.detail,
        "instance": instance,
    }
    if problem.violations:
        body["errors"] = [{"field": v.field, "description": v.description} for v in problem.violations]
    if (trace := trace_id()) is not None:
        body["trace_id"] = trace
    return JSONResponse(body, status_code=problem.status, media_type=MEDIA_TYPE, headers=problem.headers)
