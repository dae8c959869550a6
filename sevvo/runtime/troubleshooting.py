"""The user's troubleshooting guide in code: one fixed sentence per outcome category.

The agent sends these sentences upstream instead of the server's error text (which echoes
role and database names), and the ``sevvo`` command line prints them as hints beside a
failure's category. One copy, so the agent's message and the CLI's hint never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from sevvo.workflows.v1 import workflows_pb2

_T = _P = workflows_pb2  # Short names keep the table below readable.

WORK_REFUSED_HINT: Final = (
    "work refused: the agent would not act on this workflow because it does not carry the"
    " control plane's proof that it asked for it (missing, forged, expired, of another org, or"
    " already used by another run) — nothing was resolved or run; the org's audit log names"
    " the workflow (work.refused). Start the work again through sevvo; if you did not start"
    " it, someone with access to your Temporal queue did"
)

TEST_CATEGORY_HINTS: Final[Mapping[int, str]] = MappingProxyType(
    {
        _T.TEST_CATEGORY_OK: "connected: the agent logged in and ran a test query",
        _T.TEST_CATEGORY_CONNECTION_REFUSED_OR_TIMEOUT: (
            "connection refused or timed out: the agent could not reach the server — check the"
            " host and port, and that firewalls and the server's listen_addresses accept TCP"
            " connections from the agent's network"
        ),
        _T.TEST_CATEGORY_PASSWORD_AUTHENTICATION_FAILED: (
            "password authentication failed: the username or password is wrong, or the role"
            " lacks LOGIN — test from the agent's host with psql using the same credentials"
        ),
        _T.TEST_CATEGORY_SSL_REQUIRED_NOT_OFFERED: (
            "SSL required but not offered: the connection's SSL mode is require and the server"
            " does not accept TLS — turn on ssl on the server, or use SSL mode disable only on"
            " a trusted network"
        ),
        _T.TEST_CATEGORY_DATABASE_DOES_NOT_EXIST: (
            "database does not exist: check the database name, which is case-sensitive — list"
            " the server's databases from the agent's host with psql -l"
        ),
        _T.TEST_CATEGORY_PERMISSION_DENIED: (
            "permission denied: the role can log in but lacks CONNECT on the database — grant"
            " it with GRANT CONNECT ON DATABASE"
        ),
        _T.TEST_CATEGORY_INVALID_STORED_CREDENTIALS: (
            "invalid stored credentials: the host, port, database, username, password or SSL"
            " mode is missing or malformed — edit the connection and save it again"
        ),
        _T.TEST_CATEGORY_OTHER: (
            "the credential test failed for another reason — test from the agent's host with"
            " psql using the same credentials and check the server's log"
        ),
        _T.TEST_CATEGORY_DYNAMIC_STATEMENTS_FAILED: (
            "dynamic statements failed: the privileged role logged in, but creating or dropping"
            " a scratch role with the connection's statements failed — fix the named statement,"
            " or give the privileged role CREATEROLE and ADMIN OPTION on the group role"
        ),
        _T.TEST_CATEGORY_WORK_REFUSED: WORK_REFUSED_HINT,
        _T.TEST_CATEGORY_SSL_CERTIFICATE_UNVERIFIED: (
            "server certificate could not be verified: the server's certificate is not signed"
            " by a CA in the connection's CA bundle, has expired, or (with verify-full) does"
            " not name the host the connection uses — save your provider's current CA bundle"
            " on the connection, and under verify-full connect by a name the certificate"
            " lists; if verify-ca passes, the host name is the problem"
        ),
    }
)
"""The sentence for each credential test category (workflows_pb2.TestCategory)."""

PREVIEW_CATEGORY_HINTS: Final[Mapping[int, str]] = MappingProxyType(
    {
        _P.PREVIEW_CATEGORY_OK: "the query ran; its rows are in the preview",
        _P.PREVIEW_CATEGORY_QUERY_REJECTED: (
            "query rejected: a preview runs one read-only statement — a SELECT, WITH … SELECT,"
            " TABLE or VALUES, without data-modifying CTEs, SELECT INTO or locking clauses —"
            " calling only reviewed read-only functions of pg_catalog and those the"
            " connection's owner allowed by name"
        ),
        _P.PREVIEW_CATEGORY_QUERY_TIMEOUT: (
            "query timed out: the statement ran longer than the 10 s statement timeout — narrow"
            " it with a WHERE clause or preview a smaller table"
        ),
        _P.PREVIEW_CATEGORY_PERMISSION_DENIED: (
            "permission denied for a relation: the connection's role may not read a table the"
            " query uses — grant it SELECT on that table (or CONNECT on the database)"
        ),
        _P.PREVIEW_CATEGORY_QUERY_ERROR: (
            "the database reported an error: check the SQL against the schema; the SQLSTATE"
            " names the error"
        ),
        # Failures to connect are the credential test's failures: the same sentence.
        _P.PREVIEW_CATEGORY_CONNECTION_REFUSED_OR_TIMEOUT: TEST_CATEGORY_HINTS[
            _T.TEST_CATEGORY_CONNECTION_REFUSED_OR_TIMEOUT
        ],
        _P.PREVIEW_CATEGORY_PASSWORD_AUTHENTICATION_FAILED: TEST_CATEGORY_HINTS[
            _T.TEST_CATEGORY_PASSWORD_AUTHENTICATION_FAILED
        ],
        _P.PREVIEW_CATEGORY_SSL_REQUIRED_NOT_OFFERED: TEST_CATEGORY_HINTS[
            _T.TEST_CATEGORY_SSL_REQUIRED_NOT_OFFERED
        ],
        _P.PREVIEW_CATEGORY_DATABASE_DOES_NOT_EXIST: TEST_CATEGORY_HINTS[
            _T.TEST_CATEGORY_DATABASE_DOES_NOT_EXIST
        ],
        _P.PREVIEW_CATEGORY_INVALID_STORED_CREDENTIALS: TEST_CATEGORY_HINTS[
            _T.TEST_CATEGORY_INVALID_STORED_CREDENTIALS
        ],
        _P.PREVIEW_CATEGORY_OTHER: (
            "the preview failed for another reason — check the agent's log and the"
            " database server's log"
        ),
        _P.PREVIEW_CATEGORY_CREDENTIALS_TOO_PRIVILEGED: (
            "credentials too privileged: the connection's role is a superuser, a replication"
            " role, bypasses row-level security, or is a member of a role that reads server"
            " files or signals other sessions — connect with the least-privilege reader of"
            " the user guide"
        ),
        _P.PREVIEW_CATEGORY_OVER_COST_BUDGET: (
            "over the cost budget: the planner estimates the query costs more than the"
            " connection's preview budget — narrow it with a WHERE clause or a LIMIT, or ask"
            " the connection's owner to raise the budget"
        ),
        _P.PREVIEW_CATEGORY_WORK_REFUSED: WORK_REFUSED_HINT,
        _P.PREVIEW_CATEGORY_SSL_CERTIFICATE_UNVERIFIED: TEST_CATEGORY_HINTS[
            _T.TEST_CATEGORY_SSL_CERTIFICATE_UNVERIFIED
        ],
    }
)
"""The sentence for each preview category (workflows_pb2.PreviewCategory)."""

# Outcomes the orchestrator records when no agent result came back at all.
RUN_OUTCOME_HINTS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "not_started": (
            "not started: the control plane could not start the work (the workflow service"
            " was unreachable, or the control plane stopped first), so nothing ran — try again"
        ),
        "agent_unavailable": (
            "agent unavailable: no agent of this org is polling for work — check that the"
            " org's agent is running and can reach the control plane and Temporal"
        ),
        "agent_busy": (
            "agent busy: the org's agent is connected but did not finish the work in time —"
            " it is busy with other work or the database is slow; try again, or run more"
            " agent replicas"
        ),
        "workflow_failed": (
            "the work failed inside the agent or was terminated — check the agent's log for"
            " the run id"
        ),
    }
)
"""The sentence for each outcome the orchestrator records without an agent's result."""


_PREVIEW_BY_NAME: Final[Mapping[str, str]] = MappingProxyType(
    {
        name.removeprefix("PREVIEW_CATEGORY_").lower(): PREVIEW_CATEGORY_HINTS[value]
        for name, value in _P.PreviewCategory.items()
        if value in PREVIEW_CATEGORY_HINTS
    }
)
_TEST_BY_NAME: Final[Mapping[str, str]] = MappingProxyType(
    {
        name.removeprefix("TEST_CATEGORY_").lower(): TEST_CATEGORY_HINTS[value]
        for name, value in _T.TestCategory.items()
        if value in TEST_CATEGORY_HINTS
    }
)


def hint_for(category: str, *, preview: bool = False) -> str | None:
    """The guide's sentence for a lower_snake category name as runs and errors carry it.

    ``preview`` picks the preview reading of a name both kinds share (permission_denied).
    """
    # Connections and credential-test runs carry test categories, so those win by default.
    first, second = (
        (_PREVIEW_BY_NAME, _TEST_BY_NAME) if preview else (_TEST_BY_NAME, _PREVIEW_BY_NAME)
    )
    return first.get(category) or second.get(category) or RUN_OUTCOME_HINTS.get(category)


__all__ = [
    "PREVIEW_CATEGORY_HINTS",
    "RUN_OUTCOME_HINTS",
    "TEST_CATEGORY_HINTS",
    "WORK_REFUSED_HINT",
    "hint_for",
]
