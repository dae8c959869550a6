"""The one catalogue of outcome categories: how each way a run can end reads to a user.

A run ends in one category, under the lower_snake name its row carries: the agent's answer to a
credential test, a preview or a root rotation (the wire enums of workflows.proto), or an ending
the orchestrator records itself when no answer came back (``not_started`` and its kin). Each
category is defined here once, with the message that says what happened, the hint that says
what to do (the sentence docs/user-guide.md quotes under the category's heading), whether
trying again can help, the run state it gives and the command line's exit code. The agent
sends these messages, the orchestrator records them, connections and the command line read
names, hints and exit codes from here, and tests/test_outcome_catalogue.py fails when a
category is defined anywhere else or lacks its entry in the guide. The protobuf enums stay the
wire format; their numbers map to entries by name (TEST_CATEGORY_PERMISSION_DENIED is
``permission_denied``), as psycopg keeps one SQLSTATE → exception map.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Generic, TypeVar, cast

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from sevvo.workflows.v1 import workflows_pb2

EXIT_OK: Final = 0
"""The command line's exit code for an outcome that succeeded."""
EXIT_FAILED: Final = 1
"""The command line's exit code for an operation that ran and did not succeed."""


class Kind(enum.Enum):
    """The work a category can end: each kind of agent answer, or any run (the orchestrator's)."""

    CREDENTIAL_TEST = "credential_test"
    PREVIEW = "preview"
    ROOT_ROTATION = "root_rotation"
    SYNC = "sync"
    # Endings the orchestrator records for a run of any kind that brought back no answer.
    RUN = "run"


@dataclass(frozen=True)
class Wording:
    """What a category says: the message (what happened) and the hint (what to do)."""

    message: str
    hint: str = ""

    @property
    def sentence(self) -> str:
        """Message and hint as one sentence, as the guide quotes them."""
        return f"{self.message} — {self.hint}" if self.hint else self.message


@dataclass(frozen=True)
class Outcome:
    """One category: its name, its wording for each kind of work it ends, and what it means."""

    name: str
    wordings: Mapping[Kind, Wording]
    retryable: bool = False
    """Whether trying the same work again, unchanged, can end differently."""
    state: str = "failed"
    """The state a run ending in this category records: succeeded, failed or timed_out."""
    exit_code: int = EXIT_FAILED
    """The command line's exit code when this is how its operation ended."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "wordings", MappingProxyType(dict(self.wordings)))

    @property
    def kinds(self) -> frozenset[Kind]:
        """The kinds of work this category can end."""
        return frozenset(self.wordings)

    @property
    def succeeded(self) -> bool:
        """Whether a run ending here did what it was asked."""
        return self.state == "succeeded"

    def wording(self, kind: Kind | None = None) -> Wording:
        """The wording for ``kind``: its own, else the one every run shares, else the first."""
        if kind is not None and kind in self.wordings:
            return self.wordings[kind]
        if Kind.RUN in self.wordings:
            return self.wordings[Kind.RUN]
        return next(iter(self.wordings.values()))

    def message(self, kind: Kind | None = None) -> str:
        """What happened, for ``kind`` (see ``wording``)."""
        return self.wording(kind).message

    def hint(self, kind: Kind | None = None) -> str:
        """What to do, for ``kind`` (see ``wording``); empty for a success."""
        return self.wording(kind).hint


_CATALOGUE: dict[str, Outcome] = {}


def _define(
    name: str,
    wordings: Mapping[Kind, Wording],
    *,
    retryable: bool = False,
    state: str = "failed",
) -> Outcome:
    if name in _CATALOGUE:
        raise ValueError(f"outcome {name} is defined twice")
    exit_code = EXIT_OK if state == "succeeded" else EXIT_FAILED
    outcome = Outcome(name, wordings, retryable=retryable, state=state, exit_code=exit_code)
    _CATALOGUE[name] = outcome
    return outcome


def _same(message: str, hint: str, *kinds: Kind) -> dict[Kind, Wording]:
    return dict.fromkeys(kinds, Wording(message, hint))


_TEST, _PREVIEW, _ROTATION, _RUN = Kind.CREDENTIAL_TEST, Kind.PREVIEW, Kind.ROOT_ROTATION, Kind.RUN
_SYNC = Kind.SYNC
_WORK = (_TEST, _PREVIEW, _ROTATION, _SYNC)

# Successes.

OK: Final = _define(
    "ok",
    {
        _TEST: Wording("connected: the agent logged in and ran a test query"),
        _PREVIEW: Wording("the query ran; its rows are in the preview"),
        _SYNC: Wording("synced: the model's rows are in the destination table"),
    },
    state="succeeded",
)
ROTATED: Final = _define(
    "rotated",
    {
        _ROTATION: Wording(
            "rotated: the privileged role has a new password, proved by a fresh login and"
            " stored sealed; the old one no longer logs in"
        )
    },
    state="succeeded",
)

# Logging in: a credential test's findings, which a preview that cannot connect shares.

CONNECTION_REFUSED_OR_TIMEOUT: Final = _define(
    "connection_refused_or_timeout",
    _same(
        "connection refused or timed out: the agent could not reach the server",
        "check the host and port, and that firewalls and the server's listen_addresses accept"
        " TCP connections from the agent's network",
        _TEST,
        _PREVIEW,
        _SYNC,
    ),
    # A server restarting or a network blip passes.
    retryable=True,
)
PASSWORD_AUTHENTICATION_FAILED: Final = _define(
    "password_authentication_failed",
    _same(
        "password authentication failed: the username or password is wrong, or the role lacks"
        " LOGIN",
        "test from the agent's host with psql using the same credentials",
        _TEST,
        _PREVIEW,
        _SYNC,
    ),
)
SSL_REQUIRED_NOT_OFFERED: Final = _define(
    "ssl_required_not_offered",
    _same(
        "SSL required but not offered: the connection's SSL mode asks for TLS and the server"
        " does not offer it",
        "turn on ssl on the server, or use SSL mode disable only on a trusted network",
        _TEST,
        _PREVIEW,
        _SYNC,
    ),
)
SSL_CERTIFICATE_UNVERIFIED: Final = _define(
    "ssl_certificate_unverified",
    _same(
        "server certificate could not be verified: the server's certificate is not signed by a"
        " CA in the connection's CA bundle, has expired, or (with verify-full) does not name"
        " the host the connection uses",
        "save your provider's current CA bundle on the connection, and under verify-full"
        " connect by a name the certificate lists; if verify-ca passes, the host name is the"
        " problem",
        _TEST,
        _PREVIEW,
        _SYNC,
    ),
)
DATABASE_DOES_NOT_EXIST: Final = _define(
    "database_does_not_exist",
    _same(
        "database does not exist: the server has no database of the connection's name, which"
        " is case-sensitive",
        "check the name, and list the server's databases from the agent's host with psql -l",
        _TEST,
        _PREVIEW,
        _SYNC,
    ),
)
PERMISSION_DENIED: Final = _define(
    "permission_denied",
    {
        _TEST: Wording(
            "permission denied: the role can log in but lacks CONNECT on the database",
            "grant it with GRANT CONNECT ON DATABASE",
        ),
        _PREVIEW: Wording(
            "permission denied for a relation: the connection's role may not read a table the"
            " query uses",
            "grant it SELECT on that table (or CONNECT on the database)",
        ),
        _SYNC: Wording(
            "permission denied: a connection's role may not connect to its database",
            "grant it with GRANT CONNECT ON DATABASE",
        ),
    },
)
INVALID_STORED_CREDENTIALS: Final = _define(
    "invalid_stored_credentials",
    _same(
        "invalid stored credentials: the connection is gone, or what sevvo holds for it (host,"
        " port, database, username, password, SSL mode) is missing, malformed or unreadable",
        "edit the connection and save it again",
        *_WORK,
    ),
)
DYNAMIC_STATEMENTS_FAILED: Final = _define(
    "dynamic_statements_failed",
    {
        _TEST: Wording(
            "dynamic statements failed: the privileged role logged in, but creating or dropping"
            " a scratch role with the connection's statements failed",
            "fix the named statement, or give the privileged role CREATEROLE and ADMIN OPTION"
            " on the group role",
        )
    },
)

# Previews.

QUERY_REJECTED: Final = _define(
    "query_rejected",
    {
        _PREVIEW: Wording(
            "query rejected: the statement is not one a preview may run",
            "preview one read-only statement: a SELECT, WITH … SELECT, TABLE or VALUES,"
            " without data-modifying CTEs, SELECT INTO or locking clauses, calling only"
            " reviewed read-only functions of pg_catalog and those the connection's owner"
            " allowed by name",
        ),
        _SYNC: Wording(
            "query rejected: the model's statement is not one a sync may run",
            "define the model with one read-only statement, as a preview would run it;"
            " preview the model (sevvo models preview) to see the reason",
        ),
    },
)
QUERY_TIMEOUT: Final = _define(
    "query_timeout",
    {
        _PREVIEW: Wording(
            "query timed out: the statement ran longer than the 10 s statement timeout",
            "narrow it with a WHERE clause or preview a smaller table",
        )
    },
)
QUERY_ERROR: Final = _define(
    "query_error",
    {
        _PREVIEW: Wording(
            "the database reported an error",
            "check the SQL against the schema; the SQLSTATE names the error",
        )
    },
)
CREDENTIALS_TOO_PRIVILEGED: Final = _define(
    "credentials_too_privileged",
    {
        _PREVIEW: Wording(
            "credentials too privileged: the connection's role is a superuser, a replication"
            " role, bypasses row-level security, or is a member of a role that reads server"
            " files or signals other sessions",
            "connect with the least-privilege reader of the user guide",
        )
    },
)
OVER_COST_BUDGET: Final = _define(
    "over_cost_budget",
    {
        _PREVIEW: Wording(
            "over the cost budget: the planner estimates the query costs more than the"
            " connection's preview budget",
            "narrow it with a WHERE clause or a LIMIT, or ask the connection's owner to raise"
            " the budget",
        )
    },
)

# Root rotations.

NOT_DYNAMIC: Final = _define(
    "not_dynamic",
    {
        _ROTATION: Wording(
            "not a dynamic connection: only a dynamic connection's privileged password is"
            " rotated by sevvo",
            "change a fixed password with sevvo connections rotate-password",
        )
    },
)
LOGIN_FAILED: Final = _define(
    "login_failed",
    {
        _ROTATION: Wording(
            "the stored privileged password no longer logs in, so nothing was rotated: someone"
            " changed it outside sevvo",
            "save the current password on the connection with sevvo connections rotate-password",
        )
    },
)
UNVERIFIED_RESTORED: Final = _define(
    "unverified_restored",
    {
        _ROTATION: Wording(
            "not rotated: a fresh login with the new password failed, so the old password was"
            " put back and still works",
            "check the server's pg_hba rules and any pooler in between that caches"
            " authentication, then rotate again",
        )
    },
    retryable=True,
)
UNVERIFIED_NOT_RESTORED: Final = _define(
    "unverified_not_restored",
    {
        _ROTATION: Wording(
            "a fresh login with the new password failed and the old one could not be put back;"
            " the new one is stored",
            "check the server's pg_hba rules and any pooler in between that caches authentication",
        )
    },
)
ROLE_SHARED: Final = _define(
    "role_shared",
    {
        _ROTATION: Wording(
            "not rotated: another connection of this org logs in as the same role on the same"
            " server, and a new password would break it",
            "give each dynamic connection a privileged role of its own, then rotate again",
        )
    },
)
SUPERSEDED: Final = _define(
    "superseded",
    {
        _ROTATION: Wording(
            "not rotated: the connection's password was changed while the rotation ran; the"
            " stored password is in force again",
            "rotate again if it still needs a new password",
        )
    },
    retryable=True,
)

# Any kind of work.

WORK_REFUSED: Final = _define(
    "work_refused",
    _same(
        "work refused: the agent would not act on this workflow because it does not carry the"
        " control plane's proof that it asked for it (missing, forged, expired, of another"
        " org, or already used by another run); nothing was resolved or run, and the org's"
        " audit log names the workflow (work.refused)",
        "start the work again through sevvo; if you did not start it, someone with access to"
        " your Temporal queue did",
        *_WORK,
    ),
    # Work whose proof expired in the queue goes through when started again.
    retryable=True,
)
OTHER: Final = _define(
    "other",
    {
        _TEST: Wording(
            "the credential test failed for another reason",
            "test from the agent's host with psql using the same credentials and check the"
            " server's log",
        ),
        _PREVIEW: Wording(
            "the preview failed for another reason",
            "run the query from the agent's host with psql using the same credentials, and"
            " check the agent's log and the server's log",
        ),
        _ROTATION: Wording(
            "the rotation failed for another reason",
            "check the agent's log for the run id and the server's log",
        ),
        _SYNC: Wording(
            "the sync failed for another reason; the destination is as it was before the run",
            "check the agent's log for the run id and both servers' logs",
        ),
    },
)

# Files: a Parquet directory connection's directory.

DIRECTORY_UNUSABLE: Final = _define(
    "directory_unusable",
    _same(
        "directory unusable: the agent may not write the connection's directory (it is outside"
        " the roots the agent's operator allowed, does not exist, or is not writable by the"
        " agent)",
        "mount the volume into the agent's pod, list its path in SEVVO_AGENT_FILE_ROOTS and"
        " let the agent's user write to it",
        _TEST,
        _SYNC,
    ),
)

# Syncs. Each leaves the destination exactly as it was before the run.

SOURCE_QUERY_FAILED: Final = _define(
    "source_query_failed",
    {
        _SYNC: Wording(
            "the source failed running the model's statement; the destination is unchanged",
            "preview the model (sevvo models preview) to see the database's error, and check"
            " the SQLSTATE the run reports",
        )
    },
    # A statement cancelled by a restart or a conflict with recovery passes.
    retryable=True,
)
DESTINATION_FAILED: Final = _define(
    "destination_failed",
    {
        _SYNC: Wording(
            "the destination refused the load; it is unchanged",
            "check the SQLSTATE the run reports: grant the destination connection's role CREATE"
            " on the schema and ownership of the table, or free space on its server",
        )
    },
    retryable=True,
)
DESTINATION_TYPE_MISSING: Final = _define(
    "destination_type_missing",
    {
        _SYNC: Wording(
            "a column's type does not exist in the destination database (an enum, a domain or"
            " an extension's type); nothing was loaded",
            "create the type in the destination, or cast the column to a built-in type in the"
            " model's statement",
        )
    },
)
SCHEMA_CHANGED: Final = _define(
    "schema_changed",
    {
        _SYNC: Wording(
            "a column was dropped or retyped at the source, and the model does not allow schema"
            " evolution; the destination is unchanged",
            "fix the model's statement to return the same columns, or allow schema evolution on"
            " the model so the next sync reshapes the destination table",
        )
    },
)
INVALID_MODEL: Final = _define(
    "invalid_model",
    {
        _SYNC: Wording(
            "the model cannot be loaded as defined: its statement returns two columns of one"
            " name, or not the cursor column or a primary key column it names",
            "alias the columns apart in the statement, or name columns it returns",
        )
    },
)

# The orchestrator's own endings, for runs that brought back no answer.

NOT_STARTED: Final = _define(
    "not_started",
    {
        _RUN: Wording(
            "not started: the control plane could not start the work (the workflow service was"
            " unreachable, or the control plane stopped first), so nothing ran",
            "try again",
        )
    },
    retryable=True,
)
AGENT_UNAVAILABLE: Final = _define(
    "agent_unavailable",
    {
        _RUN: Wording(
            "agent unavailable: no agent of this org is polling for work",
            "check that the org's agent is running and can reach the control plane and Temporal",
        )
    },
    state="timed_out",
)
AGENT_BUSY: Final = _define(
    "agent_busy",
    {
        _RUN: Wording(
            "agent busy: the org's agent is connected but did not finish the work in time; it"
            " is busy with other work or the database is slow",
            "try again, or run more agent replicas",
        )
    },
    retryable=True,
    state="timed_out",
)
WORKFLOW_FAILED: Final = _define(
    "workflow_failed",
    {
        _RUN: Wording(
            "the work failed inside the agent or was terminated",
            "check the agent's log for the run id",
        )
    },
)

CATALOGUE: Final[Mapping[str, Outcome]] = MappingProxyType(_CATALOGUE)
"""Every outcome category by its lower_snake name, in the order defined above."""


def get(name: str) -> Outcome | None:
    """The category of that name (as runs, connections and errors carry it), if there is one."""
    return CATALOGUE.get(name)


def hint_for(name: str, kind: Kind | None = None) -> str | None:
    """The guide's hint for a category name, read for ``kind``; None for an unknown name."""
    outcome = CATALOGUE.get(name)
    return None if outcome is None else outcome.hint(kind) or None


E = TypeVar("E", bound=int)


class Wire(Generic[E]):
    """A kind's protobuf enum, mapped to and from catalogue entries by name.

    ``TEST_CATEGORY_PASSWORD_AUTHENTICATION_FAILED`` is the entry
    ``password_authentication_failed``; UNSPECIFIED and numbers no entry names read as
    ``other``.
    """

    def __init__(self, kind: Kind, enum_type: EnumTypeWrapper, prefix: str) -> None:
        self.kind = kind
        self.enum_type = enum_type
        self.prefix = prefix
        self._values: dict[str, E] = {}
        self._outcomes: dict[int, Outcome] = {}
        for enum_name, number in enum_type.items():
            outcome = CATALOGUE.get(enum_name.removeprefix(prefix).lower())
            if outcome is not None and kind in outcome.kinds:
                self._values[outcome.name] = cast(E, number)
                self._outcomes[number] = outcome

    def outcome(self, value: int) -> Outcome:
        """The entry for a wire value; ``other`` for UNSPECIFIED or a number not known here."""
        return self._outcomes.get(value, OTHER)

    def name(self, value: int) -> str:
        """The lower_snake name a run records for a wire value."""
        return self.outcome(value).name

    def message(self, category: int | Outcome) -> str:
        """The message the agent sends for a wire value or an entry, worded for this kind."""
        outcome = category if isinstance(category, Outcome) else self.outcome(category)
        return outcome.message(self.kind)

    def value(self, outcome: Outcome) -> E:
        """The wire value of an entry; KeyError when this kind cannot end that way."""
        return self._values[outcome.name]

    def value_named(self, name: str | None) -> E:
        """The wire value of the entry called ``name``; UNSPECIFIED (0) when this kind cannot
        end that way (a run-level ending such as ``agent_unavailable``)."""
        return self._values.get(name or "", cast(E, 0))

    def has(self, outcome: Outcome) -> bool:
        """Whether this kind of work can end in ``outcome``."""
        return outcome.name in self._values


TEST_CATEGORIES: Final = Wire[workflows_pb2.TestCategory](
    Kind.CREDENTIAL_TEST, workflows_pb2.TestCategory, "TEST_CATEGORY_"
)
"""A credential test's categories on the wire (workflows_pb2.TestCategory)."""
PREVIEW_CATEGORIES: Final = Wire[workflows_pb2.PreviewCategory](
    Kind.PREVIEW, workflows_pb2.PreviewCategory, "PREVIEW_CATEGORY_"
)
"""A preview's categories on the wire (workflows_pb2.PreviewCategory)."""
ROOT_ROTATION_CATEGORIES: Final = Wire[workflows_pb2.RootRotationCategory](
    Kind.ROOT_ROTATION, workflows_pb2.RootRotationCategory, "ROOT_ROTATION_CATEGORY_"
)
"""A root rotation's categories on the wire (workflows_pb2.RootRotationCategory)."""
SYNC_CATEGORIES: Final = Wire[workflows_pb2.SyncCategory](
    Kind.SYNC, workflows_pb2.SyncCategory, "SYNC_CATEGORY_"
)
"""A sync's categories on the wire (workflows_pb2.SyncCategory)."""
WIRES: Final = (TEST_CATEGORIES, PREVIEW_CATEGORIES, ROOT_ROTATION_CATEGORIES, SYNC_CATEGORIES)
"""Every kind whose categories travel as a protobuf enum."""

__all__ = [
    "CATALOGUE",
    "EXIT_FAILED",
    "EXIT_OK",
    "PREVIEW_CATEGORIES",
    "ROOT_ROTATION_CATEGORIES",
    "SYNC_CATEGORIES",
    "TEST_CATEGORIES",
    "WIRES",
    "Kind",
    "Outcome",
    "Wire",
    "Wording",
    "get",
    "hint_for",
]
