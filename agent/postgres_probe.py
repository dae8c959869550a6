"""Credential test: one short-lived connection to a customer's Postgres, reported safely.

The result goes upstream to the control plane, so it follows docs/design.md's data boundary: a
category from the outcome catalogue (sevvo/runtime/outcomes.py) and its fixed message, never
the server's error text (which echoes role and database names), the host or any credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import psycopg
from psycopg import errors
from psycopg.rows import TupleRow

from sevvo.connections.v1 import connections_pb2
from sevvo.runtime.ca_bundle import CaBundleError, parse_ca_bundle
from sevvo.runtime.outcomes import TEST_CATEGORIES
from sevvo.runtime.validation import has_control_characters
from sevvo.workflows.v1 import workflows_pb2

APPLICATION_NAME: Final = "sevvo-agent"

_OK = workflows_pb2.TEST_CATEGORY_OK
_CONNECTION_REFUSED_OR_TIMEOUT = workflows_pb2.TEST_CATEGORY_CONNECTION_REFUSED_OR_TIMEOUT
_PASSWORD_AUTHENTICATION_FAILED = workflows_pb2.TEST_CATEGORY_PASSWORD_AUTHENTICATION_FAILED
_SSL_REQUIRED_NOT_OFFERED = workflows_pb2.TEST_CATEGORY_SSL_REQUIRED_NOT_OFFERED
_SSL_CERTIFICATE_UNVERIFIED = workflows_pb2.TEST_CATEGORY_SSL_CERTIFICATE_UNVERIFIED
_DATABASE_DOES_NOT_EXIST = workflows_pb2.TEST_CATEGORY_DATABASE_DOES_NOT_EXIST
_PERMISSION_DENIED = workflows_pb2.TEST_CATEGORY_PERMISSION_DENIED
_INVALID_STORED_CREDENTIALS = workflows_pb2.TEST_CATEGORY_INVALID_STORED_CREDENTIALS
_OTHER = workflows_pb2.TEST_CATEGORY_OTHER

_SSL_MODES: Final[Mapping[int, str]] = MappingProxyType(
    {
        connections_pb2.SSL_MODE_DISABLE: "disable",
        connections_pb2.SSL_MODE_REQUIRE: "require",
        connections_pb2.SSL_MODE_VERIFY_CA: "verify-ca",
        connections_pb2.SSL_MODE_VERIFY_FULL: "verify-full",
    }
)
# The modes in which libpq checks the server's certificate against ssl_root_cert.
_VERIFY_MODES: Final = frozenset({"verify-ca", "verify-full"})

# Mapping by SQLSTATE, as STYLE.md asks (psycopg's exception class for each code is named).
# psycopg raises these classes for errors the server reports on an established session; see
# _STARTUP_ERROR_SQLSTATES for errors during connection start-up.
_SQLSTATE_CATEGORIES: Final[Mapping[str, workflows_pb2.TestCategory]] = MappingProxyType(
    {
        "28P01": _PASSWORD_AUTHENTICATION_FAILED,  # errors.InvalidPassword
        # errors.InvalidAuthorizationSpecification: also a role without LOGIN, and a
        # pg_hba.conf rejection.
        "28000": _PASSWORD_AUTHENTICATION_FAILED,
        "3D000": _DATABASE_DOES_NOT_EXIST,  # errors.InvalidCatalogName
        "42501": _PERMISSION_DENIED,  # errors.InsufficientPrivilege
    }
)
# Class 08, "connection exception": the session could not be established or was lost.
_CONNECTION_EXCEPTION_CLASS: Final = "08"

# libpq and psycopg do not expose the SQLSTATE of an error the server sends before the
# connection is established: AsyncConnection.connect raises a bare OperationalError whose
# sqlstate is None, with the server's message in its text (psycopg/psycopg#1188). So for
# start-up errors alone we recover the SQLSTATE from the server's own wording, anchored on
# the "FATAL:  " prefix that libpq puts before a server-reported error. The wording is the
# server's English message catalogue, stable across releases; a server running with a
# translated lc_messages does not match and its errors fall back to OTHER, never to a wrong
# category.
_STARTUP_ERROR_SQLSTATES: Final = (
    # auth.c auth_failed(): "<method> authentication failed for user ..." (28P01 for
    # password methods, 28000 for the others; both are the same category).
    (re.compile(r'FATAL:  \S+ authentication failed for user "'), "28P01"),
    # miscinit.c InitializeSessionUserId(): a role without LOGIN, or (under trust or peer
    # authentication, which never asks for a password) a role that does not exist.
    (re.compile(r'FATAL:  role ".*" is not permitted to log in'), "28000"),
    (re.compile(r'FATAL:  role ".*" does not exist'), "28000"),
    # auth.c ClientAuthentication(): pg_hba.conf has no line for this client or rejects it.
    (
        re.compile(r"FATAL:  (?:no pg_hba\.conf entry|pg_hba\.conf rejects connection) for "),
        "28000",
    ),
    # postinit.c InitPostgres() and CheckMyDatabase().
    (re.compile(r'FATAL:  database ".*" does not exist'), "3D000"),
    (re.compile(r'FATAL:  permission denied for database ".*"'), "42501"),
)

# TLS refusal is decided by libpq itself, which assigns no SQLSTATE and has no other way to
# report it than this text (fe-connect.c). The agent never calls setlocale(LC_MESSAGES), so
# libpq's client-side messages stay in English.
_SSL_NOT_OFFERED_TEXT: Final = "server does not support SSL, but SSL was required"

# A server certificate that failed verification, in the same client-side wording: OpenSSL's
# reason for a chain that does not lead to a trusted root, an expired or not yet valid
# certificate, and libpq's own host name check (fe-secure-common.c, fe-secure-openssl.c).
_CERTIFICATE_UNVERIFIED_TEXTS: Final = (
    "certificate verify failed",
    "does not match host name",
    "could not get server's host name from server certificate",
)

# Client-side failures to reach a server: libpq's and psycopg's own wording plus the C
# library's strerror() texts that libpq appends (also untranslated, as above). A connect
# timeout needs no entry: psycopg raises errors.ConnectionTimeout for it.
_UNREACHABLE_TEXTS: Final = (
    "Connection refused",
    "Connection timed out",
    "Connection reset by peer",
    "No route to host",
    "Network is unreachable",
    "timeout expired",
    "could not translate host name",  # libpq's DNS failure
    "failed to resolve host",  # psycopg's DNS failure (it resolves names itself in async mode)
    # A listener (often a load balancer or proxy) that accepts and then drops the connection.
    "server closed the connection unexpectedly",
)


@dataclass(frozen=True, slots=True)
class _Target:
    """Connection parameters that passed validation, in libpq's keyword names."""

    host: str
    port: int
    dbname: str
    user: str
    password: str
    sslmode: str
    # The CA bundle's PEM for the verify modes, "" otherwise.
    sslrootcert: str


class InvalidStoredCredentials(ValueError):
    """The stored credentials are missing or malformed, so nothing was dialled."""


async def probe_postgres(
    credentials: connections_pb2.PostgresCredentials, *, connect_timeout: float = 10.0
) -> workflows_pb2.CredentialTestResult:
    """Test ``credentials`` from the agent's network and return a category and a safe message.

    Opens one connection with the SSL mode exactly as stored (``require`` refuses a server
    without TLS, ``verify-ca`` also checks its certificate against the stored CA bundle,
    ``verify-full`` its host name too, ``disable`` is plaintext), runs ``select 1``, reads
    the server version and closes the connection. ``connect_timeout`` bounds the whole test,
    name resolution and every address tried included. Malformed credentials are reported
    without connecting.

    Failures of the database, the network or the credentials are results, not exceptions;
    anything else (a bug) propagates, and so does cancellation.
    """
    _check_connect_timeout(connect_timeout)
    started = time.monotonic()
    try:
        # connect() bounds the connection alone; this deadline takes in the query too.
        async with asyncio.timeout(connect_timeout):
            server_version = await _connect_and_query(credentials, connect_timeout)
    except InvalidStoredCredentials:
        return _result(_INVALID_STORED_CREDENTIALS, duration_ms=0)
    except (TimeoutError, psycopg.Error) as exc:
        category = connection_failure_category(exc)
    else:
        return _result(_OK, duration_ms=_elapsed_ms(started), server_version=server_version)
    return _result(category, duration_ms=_elapsed_ms(started))


async def connect(
    credentials: connections_pb2.PostgresCredentials, *, connect_timeout: float
) -> psycopg.AsyncConnection[TupleRow]:
    """Open one autocommit connection with ``credentials``; the caller closes it.

    The SSL mode is used exactly as stored and GSSAPI encryption is off; for verify-ca and
    verify-full the stored CA bundle is libpq's root certificate file (see
    ``_root_cert_file``). ``connect_timeout`` bounds the whole attempt, name resolution and
    every address tried included. Every agent path to a customer database opens it here.

    Raises InvalidStoredCredentials before dialling when the stored fields are unusable,
    TimeoutError when the deadline passes, and psycopg.Error for what libpq or the server
    reports; connection_failure_category() maps the last two to a category.
    """
    _check_connect_timeout(connect_timeout)
    target = _validated_target(credentials)
    if target is None:
        raise InvalidStoredCredentials("the stored credentials are missing or malformed")
    # libpq's connect_timeout applies per address tried and leaves out name resolution, so
    # the asyncio deadline is what bounds the attempt as a whole.
    with _root_cert_file(target.sslrootcert) as root_cert:
        async with asyncio.timeout(connect_timeout):
            return await psycopg.AsyncConnection.connect(
                **_connect_parameters(target, root_cert, connect_timeout),
                # No transaction is left open by accident; callers that want one begin it.
                autocommit=True,
            )


def connect_blocking(
    credentials: connections_pb2.PostgresCredentials, *, connect_timeout: float
) -> psycopg.Connection[TupleRow]:
    """``connect`` for a thread that works with a blocking connection (a sync's COPY loop):
    the same parameters and checks, and a transaction begun by the first statement.

    libpq bounds each address's attempt with connect_timeout; a blocking connect has no
    deadline of its own for name resolution.
    """
    _check_connect_timeout(connect_timeout)
    target = _validated_target(credentials)
    if target is None:
        raise InvalidStoredCredentials("the stored credentials are missing or malformed")
    with _root_cert_file(target.sslrootcert) as root_cert:
        return psycopg.Connection.connect(**_connect_parameters(target, root_cert, connect_timeout))


def _connect_parameters(
    target: _Target, root_cert: str | None, connect_timeout: float
) -> dict[str, Any]:
    """libpq's parameters for ``target``, the one place every agent connection is shaped.

    Keyword arguments, never a DSN string: psycopg quotes each value, so a password or name
    with spaces, quotes or "=" cannot change the meaning of another one.
    """
    return {
        "host": target.host,
        "port": target.port,
        "dbname": target.dbname,
        "user": target.user,
        "password": target.password,
        "sslmode": target.sslmode,
        # None leaves the parameter out: the modes that verify nothing get no file.
        "sslrootcert": root_cert,
        # The product offers TLS or plaintext, nothing else; GSSAPI encryption ("prefer" by
        # default) would make the outcome depend on Kerberos tickets on the agent host.
        "gssencmode": "disable",
        "connect_timeout": math.ceil(connect_timeout),
        "application_name": APPLICATION_NAME,
    }


@contextlib.contextmanager
def _root_cert_file(pem: str) -> Iterator[str | None]:
    """The path of a file holding ``pem`` (None for ""), there while the block runs.

    libpq reads the root certificates from a file while it sets up TLS, and only then, so
    the file lives for one connection attempt: owner-only, in a directory of its own that
    only this process can enter, removed as soon as the attempt ends. A bundle is public, so
    this is about no other local user swapping it, not about keeping it secret.
    """
    if not pem:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="sevvo-ca-") as directory:  # mode 0700
        path = os.path.join(directory, "root.crt")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(pem)
        yield path


def connection_failure_category(
    exc: psycopg.Error | TimeoutError,
) -> workflows_pb2.TestCategory:
    """Map a failure to connect (or a lost connection) to a credential test category.

    Uses structured facts wherever libpq offers them: the SQLSTATE, psycopg's exception
    class, and libpq's own client-side wording only where it assigns no SQLSTATE.
    """
    if isinstance(exc, TimeoutError):
        return _CONNECTION_REFUSED_OR_TIMEOUT
    text = str(exc)
    sqlstate = exc.sqlstate or _startup_error_sqlstate(text)
    if sqlstate is not None:
        if sqlstate.startswith(_CONNECTION_EXCEPTION_CLASS):
            return _CONNECTION_REFUSED_OR_TIMEOUT
        return _SQLSTATE_CATEGORIES.get(sqlstate, _OTHER)
    if isinstance(exc, errors.ConnectionTimeout):
        return _CONNECTION_REFUSED_OR_TIMEOUT
    if _SSL_NOT_OFFERED_TEXT in text:
        return _SSL_REQUIRED_NOT_OFFERED
    if any(marker in text for marker in _CERTIFICATE_UNVERIFIED_TEXTS):
        return _SSL_CERTIFICATE_UNVERIFIED
    if any(marker in text for marker in _UNREACHABLE_TEXTS):
        return _CONNECTION_REFUSED_OR_TIMEOUT
    return _OTHER


def _check_connect_timeout(connect_timeout: float) -> None:
    if not (connect_timeout > 0 and math.isfinite(connect_timeout)):
        raise ValueError("connect_timeout must be a positive, finite number of seconds")


def _validated_target(credentials: connections_pb2.PostgresCredentials) -> _Target | None:
    """Return the parameters to connect with, or None when the stored ones are unusable."""
    sslmode = _SSL_MODES.get(credentials.ssl_mode)
    if sslmode is None or not 1 <= credentials.port <= 65535:
        return None
    names = (credentials.host, credentials.database, credentials.username)
    if any(not name.strip() or has_control_characters(name) for name in names):
        return None
    # libpq cannot carry a NUL; any other character is a legitimate part of a password.
    if not credentials.password or "\0" in credentials.password:
        return None
    # One network host only: libpq would read "a,b" as a list of hosts to try, and a path
    # as a unix socket on the agent's own machine, which no stored connection points at.
    if any(ch in credentials.host for ch in ", ") or credentials.host.startswith(("/", "@")):
        return None
    # The verify modes need a bundle that parses, the others none: the control plane stores
    # exactly that, so anything else is a payload to refuse, not to guess about.
    if (sslmode in _VERIFY_MODES) != bool(credentials.ssl_root_cert):
        return None
    if credentials.ssl_root_cert:
        try:
            # A check only: the control plane stores the bundle re-encoded already.
            parse_ca_bundle(credentials.ssl_root_cert)
        except CaBundleError:
            return None
    return _Target(
        host=credentials.host,
        port=credentials.port,
        dbname=credentials.database,
        user=credentials.username,
        password=credentials.password,
        sslmode=sslmode,
        sslrootcert=credentials.ssl_root_cert,
    )


async def _connect_and_query(
    credentials: connections_pb2.PostgresCredentials, connect_timeout: float
) -> str:
    """Connect, run ``select 1``, close; return the server's version as "major.minor"."""
    conn = await connect(credentials, connect_timeout=connect_timeout)
    try:
        await conn.execute("select 1")
        return _format_server_version(conn.info.server_version)
    finally:
        await conn.close()


def _startup_error_sqlstate(text: str) -> str | None:
    """Return the SQLSTATE the server sent with a start-up error quoted in ``text``, if known.

    Server-reported errors are checked before client-side ones because, when a host name
    resolves to several addresses, psycopg's message lists every attempt, and an address
    where a server answered says more than one that refused the connection.
    """
    for pattern, sqlstate in _STARTUP_ERROR_SQLSTATES:
        if pattern.search(text):
            return sqlstate
    return None


def _format_server_version(version: int) -> str:
    """Render libpq's integer server version (180006, 90624) as "18.6" or "9.6.24"."""
    if version <= 0:
        return ""
    major = version // 10000
    if major >= 10:
        return f"{major}.{version % 10000}"
    return f"{major}.{version // 100 % 100}.{version % 100}"


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _result(
    category: workflows_pb2.TestCategory, *, duration_ms: int, server_version: str = ""
) -> workflows_pb2.CredentialTestResult:
    return workflows_pb2.CredentialTestResult(
        category=category,
        message=TEST_CATEGORIES.message(category),
        duration_ms=duration_ms,
        server_version=server_version,
    )
