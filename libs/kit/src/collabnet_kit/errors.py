"""Domain errors: what a rule says when it refuses.

Pure Python on purpose, so every service's ``domain.py`` can raise these without importing gRPC.
The gRPC edge turns each class into its status code through one table (``collabnet_kit.grpc_errors``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One field of a request that broke a rule: its path (``review.rating``) and why."""

    field: str
    description: str


class DomainError(Exception):
    """A request refused by a rule. The message is safe to show to the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    """The request itself is wrong, whatever the state of the system. Names the fields at fault."""

    def __init__(self, message: str, violations: list[FieldViolation] | None = None) -> None:
        super().__init__(message)
        self.violations = list(violations or [])

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        """The common case: one field is wrong; the message names it."""
        return cls(f"{field}: {description}", [FieldViolation(field, description)])


class NotFound(DomainError):
    """The resource the request names does not exist (or the caller may not know that it does)."""


class AlreadyExists(DomainError):
    """The resource the request would create exists already."""


class PermissionDenied(DomainError):
    """The caller is known but may not do this. The message gives the reason."""


class FailedPrecondition(DomainError):
    """The request is well formed but the system is not in a state that allows it."""


class Unauthenticated(DomainError):
    """The caller could not be identified: no credentials, or credentials that do not verify."""


class ResourceExhausted(DomainError):
    """A quota or rate limit was hit; the caller may retry later."""


class Aborted(DomainError):
    """A concurrent change won; the caller may retry the whole operation."""


class Validator:
    """Collects field violations so a request reports every wrong field at once::

    check = Validator()
    check.require(1 <= rating <= 5, "rating", "must be between 1 and 5")
    check.require(bool(body.strip()), "body", "must not be empty")
    check.raise_if_any()
    """

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def require(self, ok: bool, field: str, description: str) -> None:
        if not ok:
            self.violations.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        if self.violations:
            summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
            raise InvalidArgument(summary, self.violations)
