"""The one error model: domain errors with a stable reason, mapped to gRPC status codes.

Every error carries a machine ``reason`` (UPPER_SNAKE, stable, what clients branch on) and a
human message that holds no secret and no raw SQL. ``sevvo.runtime.grpc_server`` turns them
into ``google.rpc.Status`` with an ``ErrorInfo`` (domain ``sevvo.dev``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    import psycopg

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


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request: its path (``model.sql``) and what is wrong with it."""

    field: str
    description: str


class InvalidArgument(SevvoError):
    """The request is malformed; ``field`` names the offending field.

    ``also`` names further invalid fields of the same request, so a form can mark every one
    at once; each becomes a field violation of the BadRequest the client receives, and
    ``field`` (the first) stays what a client that reads one field sees.
    """

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        field: str,
        message: str,
        *,
        reason: str | None = None,
        also: Sequence[FieldViolation] = (),
    ) -> None:
        self.violations = (FieldViolation(field, message), *also)
        text = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(text, reason=reason, metadata={"field": field})
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


class Aborted(SevvoError):
    """A concurrent change got in the way; the caller may retry the whole request."""

    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"


class Unimplemented(SevvoError):
    """The server declares the method but does not serve it."""

    code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = "UNIMPLEMENTED"


DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
# SQLSTATE classes (the first two characters) that mean the database could not serve the
# request at all: connection exception, insufficient resources, operator intervention
# (shutdown, restart, cancel), system error.
_UNAVAILABLE_CLASSES = frozenset({"08", "53", "57", "58"})


def database_error(error: psycopg.Error) -> SevvoError | None:
    """The domain error for a Postgres error no domain code handled, by SQLSTATE class.

    Decided by the SQLSTATE psycopg carries (one exception class per code), never by the
    message, which can quote the offending input. None means a fault of ours (e.g. class
    42, a query that does not parse), which stays INTERNAL. Client-side errors carry no
    SQLSTATE: a value psycopg cannot send is a data error, a lost connection (or no pooled
    connection in time) an operational one.
    """
    # Imported here: clients such as the CLI import this module and never talk to Postgres.
    import psycopg

    state = error.sqlstate or ""
    if state.startswith("40"):
        # Serialization failure or deadlock: checked first, it is also an OperationalError.
        return Aborted(
            "the request collided with a concurrent change; retry it", reason="CONCURRENT_CHANGE"
        )
    if state[:2] in _UNAVAILABLE_CLASSES or (
        not state and isinstance(error, psycopg.OperationalError)
    ):
        return Unavailable(
            "the control-plane database is unavailable; retry in a few seconds",
            reason=DATABASE_UNAVAILABLE,
        )
    if state.startswith("22") or (not state and isinstance(error, psycopg.DataError)):
        return InvalidArgument(
            "request",
            "holds a value the database cannot store (malformed, out of range or too long)",
            reason="INVALID_VALUE",
        )
    if state.startswith("54"):
        return InvalidArgument(
            "request", "holds a value too large for the database to store", reason="VALUE_TOO_LARGE"
        )
    if state == "23505":  # unique_violation
        return AlreadyExists("a resource with the same unique key already exists")
    if state.startswith("23"):
        return FailedPrecondition(
            "the change conflicts with stored data; re-read it and retry",
            reason="CONSTRAINT_VIOLATION",
        )
    return None
