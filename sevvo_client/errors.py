"""What can go wrong when borrowing a credential, as exceptions a caller can branch on.

The agent answers with a gRPC status code and a stable ``reason`` (google.rpc.ErrorInfo);
each maps to one class here. Messages come from the agent, which puts no secret in them, and
are scrubbed of the caller's own token anyway before they are shown.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.rpc import error_details_pb2, status_pb2

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


class CredentialError(Exception):
    """Base of every error this library raises; ``reason`` is stable, the message is for people."""

    def __init__(
        self, message: str, *, code: grpc.StatusCode | None = None, reason: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, message={self.message!r})"


class ConfigurationError(CredentialError):
    """The client is not configured: no agent address, no workload token, a bad duration."""


class AgentUnavailable(CredentialError):
    """The agent did not answer (not running, wrong socket, timed out); retrying may help."""


class Unauthenticated(CredentialError):
    """The agent refused the workload token: missing, malformed, unknown or revoked."""


class NotGranted(CredentialError):
    """The workload may not borrow this role, or not for that long (PERMISSION_DENIED)."""


class NotFound(CredentialError):
    """The org has no such connection or role, or no such lease."""


class PastMaxTTL(CredentialError):
    """A renewal would pass the lease's maximum TTL: borrow a new credential instead."""


class InvalidRequest(CredentialError):
    """The request was malformed (INVALID_ARGUMENT); the message names the field."""


_BY_CODE: dict[grpc.StatusCode, type[CredentialError]] = {
    grpc.StatusCode.UNAVAILABLE: AgentUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: AgentUnavailable,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: NotGranted,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
}
_BY_REASON: dict[str, type[CredentialError]] = {
    "LEASE_PAST_MAX_TTL": PastMaxTTL,
    "ROLE_NOT_GRANTED": NotGranted,
    "TTL_OVER_WORKLOAD_MAXIMUM": NotGranted,
}


def error_class(code: grpc.StatusCode, reason: str) -> type[CredentialError]:
    """The exception class for a status code and ErrorInfo reason; the reason wins."""
    return _BY_REASON.get(reason) or _BY_CODE.get(code) or CredentialError


def reason_of(trailing_metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The ErrorInfo reason in a call's trailing metadata, or "" when it carries none."""
    for key, value in tuple(trailing_metadata or ()):
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except Exception:  # A malformed trailer is no reason at all.
            return ""
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return str(info.reason)
    return ""


def from_rpc_error(error: grpc.RpcError, *, secrets: tuple[str, ...] = ()) -> CredentialError:
    """The library's exception for a failed call, with ``secrets`` scrubbed from its message."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else None) or ""
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else ()
    reason = reason_of(trailing)
    cls = error_class(code, reason)
    if cls is AgentUnavailable:
        message = f"the sevvo agent did not answer ({code.name}): {details}".rstrip(": ")
    else:
        message = details or code.name
    return cls(scrub(message, secrets), code=code, reason=reason or code.name)


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every non-empty secret in ``secrets`` replaced by "[redacted]"."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text
