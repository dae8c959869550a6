"""The one error model: domain errors with a stable reason, mapped to gRPC status codes.

Every error carries a machine ``reason`` (UPPER_SNAKE, stable, what clients branch on) and a
human message that holds no secret and no raw SQL. ``sevvo.runtime.grpc_server`` turns them
into ``google.rpc.Status`` with an ``ErrorInfo`` (domain ``sevvo.dev``).
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

ERROR_DOMAIN = "sevvo.dev"


class SevvoError(Exception):
    """Base of every domain error; subclasses fix the gRPC code."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})


class InvalidArgument(SevvoError):
    """The request is malformed; ``field`` names the offending field."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str, *, reason: str | None = None) -> None:
        super().__init__(f"{field}: {message}", reason=reason, metadata={"field": field})
        self.field = field
        self.description = message


class Unauthenticated(SevvoError):
    """The caller did not prove who it is (missing, invalid, expired or revoked token)."""

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(SevvoError):
    """The caller is known but may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class NotFound(SevvoError):
    """The resource does not exist in the caller's org (or exists only in another org)."""

    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(SevvoError):
    """A resource with the same unique key already exists."""

    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(SevvoError):
    """The resource is not in a state that allows the operation."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Unavailable(SevvoError):
    """A dependency is unreachable; the caller may retry."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"
