"""Exit codes, the command line's one error type, and how gRPC failures map onto both."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable

import grpc

from sevvo.runtime import outcomes
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.outcomes import Kind, hint_for


class ExitCode(enum.IntEnum):
    """The process exit codes, documented in ``sevvo --help``."""

    # A run's outcome gives these two (sevvo/runtime/outcomes.py, one exit code per category).
    OK = outcomes.EXIT_OK
    FAILED = outcomes.EXIT_FAILED
    USAGE = 2
    NOT_SIGNED_IN = 3
    PERMISSION_DENIED = 4
    NOT_FOUND = 5


EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 the operation failed (a failed test or preview, a refused request);"
    " 2 usage error (also a request the server found invalid); 3 not signed in, session"
    " expired or unauthenticated; 4 permission denied; 5 not found."
)

_CODE_EXITS = {
    # The request as typed was invalid (a malformed id, a value out of range): the user's
    # to correct, like a usage error the command line catches itself.
    grpc.StatusCode.INVALID_ARGUMENT: ExitCode.USAGE,
    grpc.StatusCode.UNAUTHENTICATED: ExitCode.NOT_SIGNED_IN,
    grpc.StatusCode.PERMISSION_DENIED: ExitCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND: ExitCode.NOT_FOUND,
}


class CliError(Exception):
    """A failure to report on stderr: message, optional reason/category/hint, exit code."""

    def __init__(
        self,
        message: str,
        *,
        exit_code: ExitCode = ExitCode.FAILED,
        reason: str | None = None,
        category: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.reason = reason
        self.category = category
        self.hint = hint


def usage_error(message: str) -> CliError:
    """A mistake in how the command was called (exit code 2)."""
    return CliError(message, exit_code=ExitCode.USAGE)


def not_signed_in(message: str = "not signed in: run sevvo login") -> CliError:
    """No usable session (exit code 3)."""
    return CliError(message, exit_code=ExitCode.NOT_SIGNED_IN)


def category_failure(what: str, category: str, message: str, kind: Kind) -> CliError:
    """Work that ran but did not succeed: its category, the message (the catalogue's when the
    run has none of its own), the guide's hint and the category's exit code."""
    outcome = outcomes.get(category)
    if outcome is None:
        # A category newer than this command line: no hint to give, but still a failure.
        text = f"{what} ({category}): {message}" if message else f"{what} ({category})"
        return CliError(text, category=category)
    text = f"{what} ({category}): {message or outcome.message(kind)}"
    return CliError(
        text,
        exit_code=ExitCode(outcome.exit_code),
        category=category,
        hint=outcome.hint(kind) or None,
    )


# What gRPC says when a channel cannot be opened, and the sentence a user can act on.
_TRANSPORT_FAILURES = (
    # First: a plaintext server fails the TLS handshake too, with its own marker.
    (
        ("WRONG_VERSION_NUMBER", "Socket closed"),
        "the endpoint did not answer with TLS gRPC: check that --endpoint (or SEVVO_ENDPOINT)"
        " names sevvo's gRPC port, written HOST:PORT",
    ),
    (
        ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed", "Tls handshake failed"),
        "the endpoint's TLS certificate is not trusted here: set --ca-file (or SEVVO_CA_FILE)"
        " to the CA bundle that signed it (with make dev: .dev/pki/ca.crt)",
    ),
    (
        ("Connection refused",),
        "nothing is listening at the endpoint: start the control plane, or set --endpoint"
        " (or SEVVO_ENDPOINT) to its HOST:PORT",
    ),
    (
        ("DNS resolution failed", "lookup error", "Domain name not found", "Misformatted"),
        "the endpoint's host name does not resolve: check --endpoint (or SEVVO_ENDPOINT),"
        " written HOST:PORT",
    ),
    (
        ("Timeout occurred", "timed out", "Deadline Exceeded"),
        "the endpoint did not answer: check --endpoint (or SEVVO_ENDPOINT) and that a"
        " firewall lets the connection through",
    ),
)


def unreachable(grpc_message: str) -> str:
    """One sentence for a channel that could not be opened, saying what to set.

    gRPC's own text (resolver, socket and TLS errors, joined per address) is kept out: it
    names C-core internals, not the setting that fixes it.
    """
    for markers, sentence in _TRANSPORT_FAILURES:
        if any(marker in grpc_message for marker in markers):
            return f"cannot reach sevvo: {sentence}"
    return (
        "cannot reach sevvo: the connection failed; check --endpoint (or SEVVO_ENDPOINT) and"
        " --ca-file (or SEVVO_CA_FILE)"
    )


# The last part of an API field path and the flag a user typed for it; request prefixes such
# as "fields.", "dsn." or "dynamic." are dropped first.
_FLAGS = {
    "display_name": "--name",
    "host": "--host",
    "port": "--port",
    "database": "--database",
    "username": "--username",
    "password": "the password",
    "ssl_mode": "--ssl-mode",
    "ssl_root_cert": "--ssl-root-cert",
    "uri": "--dsn",
    "path": "--parquet-directory",
    "default_ttl_seconds": "--default-ttl",
    "max_ttl_seconds": "--max-ttl",
    "group_role": "--group-role",
    "allowed_functions": "--allow-function",
    "max_plan_cost": "--max-plan-cost",
    "interval": "--every",
    "email": "--email",
    "role": "--role",
    "sql": "the SQL",
    # Models (sevvo models create/update; a model file's keys are the same words).
    "source_connection_id": "--source",
    "destination_connection_id": "--destination",
    "destination_table": "--table",
    "load_mode": "--incremental",
    "cursor_column": "--cursor",
    "primary_key": "--primary-key",
    "allow_schema_evolution": "--allow-schema-evolution",
    "schedule_interval": "--every",
}
_FIELD_PREFIX = re.compile(r"^(?P<path>[a-z_]+(?:\.[a-z_]+)*(?:\[\d+\])?): ")


def with_flag_names(message: str, field: str | None) -> str:
    """``message`` with its leading API field path replaced by the flag the user typed.

    The services name fields as the API does (``fields.port: must be ...``); a user of the
    command line knows ``--port``. A field with no flag keeps its API name.
    """
    match = _FIELD_PREFIX.match(message)
    path = field or (match.group("path") if match else None)
    if path is None or match is None or match.group("path") != path:
        return message
    flag = _FLAGS.get(re.sub(r"\[\d+\]$", "", path).rsplit(".", 1)[-1])
    return message if flag is None else f"{flag}: {message[match.end() :]}"


def invalid_fields(message: str, field: str | None, violations: Iterable[tuple[str, str]]) -> str:
    """An INVALID_ARGUMENT's text with flag names (see ``with_flag_names``): the status
    ``message`` (naming ``field``), then every field violation it does not already say, each
    as ``--flag: description`` (the API field where no flag is known), joined by ``; ``.

    A service that checks a whole request names each invalid field in BadRequest; the status
    message alone may name only the first, or none.
    """
    shown = [with_flag_names(message, field)]
    for path, description in violations:
        if f"{path}: {description}" not in message:
            shown.append(with_flag_names(f"{path}: {description}", path))
    return "; ".join(shown)


def from_rpc_error(error: grpc.RpcError) -> CliError:
    """Translates a failed call into what the user reads, keeping the stable reason."""
    details = error_details(error)
    category = (details.metadata or {}).get("category") or None
    exit_code = _CODE_EXITS.get(details.code, ExitCode.FAILED)
    message = details.message or details.code.name.lower()
    if details.code is grpc.StatusCode.UNAUTHENTICATED and details.reason not in (
        "INVALID_CREDENTIALS",
        None,
    ):
        # The session was refused after the local expiry check passed (clock skew, a
        # rotated key, another install at the same address): signing in again fixes it.
        message = (
            "session expired: run sevvo login"
            if details.reason == "TOKEN_EXPIRED"
            else f"session not accepted ({message}): run sevvo login"
        )
    elif details.code is grpc.StatusCode.UNAVAILABLE:
        message = unreachable(message)
    elif details.code is grpc.StatusCode.INVALID_ARGUMENT:
        field = (details.metadata or {}).get("field")
        message = invalid_fields(message, field, details.violations)
    elif details.code is grpc.StatusCode.DEADLINE_EXCEEDED:
        message = "sevvo did not answer in time"
    elif details.code is grpc.StatusCode.UNIMPLEMENTED:
        # A command line newer than the control plane it talks to (a call added since).
        message = (
            "the control plane does not offer this yet: it is older than this command line;"
            " upgrade it, or use a sevvo command line of its version"
        )
    return CliError(
        message,
        exit_code=exit_code,
        reason=details.reason,
        category=category,
        # Only a failed credential test (CREDENTIAL_TEST_FAILED) carries a category.
        hint=hint_for(category, Kind.CREDENTIAL_TEST) if category else None,
    )
