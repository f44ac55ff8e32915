"""Domain errors to gRPC statuses and back, through one table.

A refusal travels as a ``google.rpc.Status`` in the ``grpc-status-details-bin`` trailer: field
violations as ``google.rpc.BadRequest``, the reason and trace id as ``google.rpc.ErrorInfo``. A
client turns it back into the same ``DomainError``, so a service calling another (and the gateway)
can pass a refusal on without losing the fields it names.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from collabnet_kit import errors

DOMAIN = "collabnet"
_DETAILS_KEY = "grpc-status-details-bin"

STATUS_OF: dict[type[errors.DomainError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Aborted: grpc.StatusCode.ABORTED,
}
_ERROR_OF = {code: cls for cls, code in STATUS_OF.items()}

# A refusal travels in the response's trailers (its message twice: percent-encoded, and inside the
# base64 details), and gRPC clients take at most 8 KiB of those: past that the caller gets
# RESOURCE_EXHAUSTED instead of the refusal. Refusals quote what the caller sent, which may be
# long, so each text is cut to a bound and the violations to a number, well within that.
MAX_MESSAGE_BYTES = 400
MAX_VIOLATIONS = 10
MAX_FIELD_BYTES = 100
MAX_DESCRIPTION_BYTES = 200


def _cut(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` bytes of UTF-8, ending in an ellipsis when it was cut."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode(errors="ignore") + "\u2026"


def status_code_of(error: errors.DomainError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return grpc.StatusCode.FAILED_PRECONDITION


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(error: errors.DomainError, trace_id: str | None = None) -> grpc.Status:
    """The status a domain error is sent as, with its field violations and reason attached."""
    code = status_code_of(error)
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=type(error).__name__,
                domain=DOMAIN,
                metadata={"trace_id": trace_id} if trace_id else {},
            )
        )
    ]
    if isinstance(error, errors.InvalidArgument) and error.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=_cut(v.field, MAX_FIELD_BYTES), description=_cut(v.description, MAX_DESCRIPTION_BYTES)
                )
                for v in error.violations[:MAX_VIOLATIONS]
            ]
        )
        details.insert(0, _pack(bad_request))
    message = _cut(error.message, MAX_MESSAGE_BYTES)
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=message, details=details))


NUL = "\x00"


def nul_violations(message: Message, prefix: str = "") -> list[errors.FieldViolation]:
    """The string fields of ``message``, at any depth, that hold a NUL character: no text column
    can store one (PostgreSQL refuses it outright), so a request carrying one is refused whole."""
    found: list[errors.FieldViolation] = []

    def check(path: str, value: object) -> None:
        if isinstance(value, str) and NUL in value:
            found.append(errors.FieldViolation(path, "must not contain NUL characters"))
        elif isinstance(value, Message):
            found.extend(nul_violations(value, f"{path}."))

    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                check(path, key)
                check(path, item)
        elif field.is_repeated:
            for index, item in enumerate(value):
                check(f"{path}[{index}]", item)
        else:
            check(path, value)
    return found


def refuse_nul(request: Message) -> None:
    """``InvalidArgument`` naming each string field of ``request`` that holds a NUL character."""
    violations = nul_violations(request)
    if violations:
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
        raise errors.InvalidArgument(summary, violations)


def internal_status(trace_id: str | None) -> grpc.Status:
    """The status for a failure nobody planned for: no traceback, only the trace id to look it up by."""
    message = f"internal error (trace_id={trace_id})" if trace_id else "internal error"
    info = error_details_pb2.ErrorInfo(reason="INTERNAL", domain=DOMAIN, metadata={"trace_id": trace_id or ""})
    return rpc_status.to_status(status_pb2.Status(code=code_pb2.INTERNAL, message=message, details=[_pack(info)]))


def unavailable_status(trace_id: str | None) -> grpc.Status:
    """The status for work the service cannot do now because a dependency (its database) is
    unavailable: the caller may try again shortly."""
    message = "the service's database is unavailable; try again shortly"
    info = error_details_pb2.ErrorInfo(reason="UNAVAILABLE", domain=DOMAIN, metadata={"trace_id": trace_id or ""})
    return rpc_status.to_status(status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message, details=[_pack(info)]))


def from_rpc_error(error: grpc.aio.AioRpcError) -> errors.DomainError | None:
    """The domain error a failed call carried, or None for statuses that are not refusals."""
    cls = _ERROR_OF.get(error.code())
    if cls is None:
        return None
    message = error.details() or error.code().name
    if cls is errors.InvalidArgument:
        violations = []
        for detail in status_details(error):
            bad_request = error_details_pb2.BadRequest()
            if detail.Unpack(bad_request):
                violations += [errors.FieldViolation(v.field, v.description) for v in bad_request.field_violations]
        return errors.InvalidArgument(message, violations)
    return cls(message)


def status_details(error: grpc.aio.AioRpcError) -> list[any_pb2.Any]:
    """The ``google.rpc.Status`` details a failed call carried in its trailers."""
    for key, value in error.trailing_metadata() or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            return list(status_pb2.Status.FromString(value).details)
    return []
