"""The agent's Postgres credential test, against the session's real PostgreSQL server."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict

from agent.postgres_probe import probe_postgres
from devstack.pki import DevPki, ensure_dev_pki
from devstack.postgres import EmbeddedPostgres
from devstack.processes import free_port
from devstack.source_db import SourceDatabase
from sevvo.connections.v1.connections_pb2 import (
    SSL_MODE_DISABLE,
    SSL_MODE_REQUIRE,
    SSL_MODE_UNSPECIFIED,
    SSL_MODE_VERIFY_CA,
    SSL_MODE_VERIFY_FULL,
    PostgresCredentials,
    SslMode,
)
from sevvo.runtime.outcomes import TEST_CATEGORIES
from sevvo.workflows.v1 import workflows_pb2
from sevvo.workflows.v1.workflows_pb2 import CredentialTestResult
from tests.plugins.source_db import SourceTargetFactory


@dataclass(frozen=True)
class Role:
    """A role created for one test, with what a stored connection would hold for it."""

    name: str
    password: str
    host: str
    port: int
    database: str

    def credentials(self, **overrides: Any) -> PostgresCredentials:
        """Stored credentials for this role, plaintext unless overridden."""
        fields: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "database": self.database,
            "username": self.name,
            "password": self.password,
            "ssl_mode": SSL_MODE_DISABLE,
        }
        return PostgresCredentials(**(fields | overrides))


@pytest.fixture
def make_role(pg_server_url: str, database_url: str) -> Iterator[Callable[..., Role]]:
    """A factory for roles with a random password and unique name, dropped after the test."""
    server = conninfo_to_dict(pg_server_url)
    database = str(conninfo_to_dict(database_url)["dbname"])
    created: list[str] = []

    def make(*, login: bool = True) -> Role:
        name = f"probe_{uuid.uuid4().hex[:12]}"
        password = secrets.token_urlsafe(18)
        statement = sql.SQL("CREATE ROLE {} {} PASSWORD {}").format(
            sql.Identifier(name),
            sql.SQL("LOGIN" if login else "NOLOGIN"),
            sql.Literal(password),
        )
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(statement)
        created.append(name)
        return Role(name, password, str(server["host"]), int(str(server["port"])), database)

    yield make
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        for name in created:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def probe(credentials: PostgresCredentials, **kwargs: Any) -> CredentialTestResult:
    """Run the async probe from a sync test (this suite has no asyncio plugin)."""
    return asyncio.run(probe_postgres(credentials, **kwargs))


def assert_failed_safely(
    result: CredentialTestResult,
    category: workflows_pb2.TestCategory,
    credentials: PostgresCredentials,
) -> None:
    """The result has ``category``, its fixed message, and echoes nothing it was given."""
    assert workflows_pb2.TestCategory.Name(result.category) == (
        workflows_pb2.TestCategory.Name(category)
    )
    assert result.message == TEST_CATEGORIES.message(category)
    assert result.server_version == ""
    for value in (
        credentials.password,
        credentials.host,
        credentials.database,
        credentials.username,
    ):
        if value:
            assert value not in result.message


def test_valid_credentials_connect_and_report_the_server_version(
    make_role: Callable[..., Role], pg_server_url: str
) -> None:
    """A login role with the right password gets OK, the server's version and a duration."""
    role = make_role()

    result = probe(role.credentials())

    assert result.category == workflows_pb2.TEST_CATEGORY_OK
    assert result.message == TEST_CATEGORIES.message(workflows_pb2.TEST_CATEGORY_OK)
    with psycopg.connect(pg_server_url) as conn:
        major = conn.info.server_version // 10000
    assert result.server_version.startswith(f"{major}.")
    assert result.duration_ms >= 0


def test_the_probe_closes_its_connection(
    make_role: Callable[..., Role], pg_server_url: str
) -> None:
    """After an OK probe no session of the role remains on the server."""
    role = make_role()

    assert probe(role.credentials()).category == workflows_pb2.TEST_CATEGORY_OK

    # The backend exits just after the client's Terminate message; give it a moment.
    deadline = time.monotonic() + 5
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "select count(*) from pg_stat_activity where usename = %s", (role.name,)
            ).fetchone()
            if row == (0,) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
    assert row == (0,)


def test_wrong_password_is_password_authentication_failed(
    make_role: Callable[..., Role],
) -> None:
    """A wrong password is PASSWORD_AUTHENTICATION_FAILED."""
    credentials = make_role().credentials(password="not-" + secrets.token_urlsafe(12))

    result = probe(credentials)

    assert_failed_safely(
        result, workflows_pb2.TEST_CATEGORY_PASSWORD_AUTHENTICATION_FAILED, credentials
    )


def test_role_without_login_is_password_authentication_failed(
    make_role: Callable[..., Role],
) -> None:
    """A role without LOGIN, even with the right password, is PASSWORD_AUTHENTICATION_FAILED."""
    credentials = make_role(login=False).credentials()

    result = probe(credentials)

    assert_failed_safely(
        result, workflows_pb2.TEST_CATEGORY_PASSWORD_AUTHENTICATION_FAILED, credentials
    )


def test_missing_database_is_database_does_not_exist(make_role: Callable[..., Role]) -> None:
    """A database name the server does not have is DATABASE_DOES_NOT_EXIST."""
    credentials = make_role().credentials(database=f"missing_{uuid.uuid4().hex[:12]}")

    result = probe(credentials)

    assert_failed_safely(result, workflows_pb2.TEST_CATEGORY_DATABASE_DOES_NOT_EXIST, credentials)


def test_role_without_connect_privilege_is_permission_denied(
    make_role: Callable[..., Role], database_url: str
) -> None:
    """A login role lacking CONNECT on the database is PERMISSION_DENIED."""
    role = make_role()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(
                sql.Identifier(role.database)
            )
        )
    credentials = role.credentials()

    result = probe(credentials)

    assert_failed_safely(result, workflows_pb2.TEST_CATEGORY_PERMISSION_DENIED, credentials)


def test_closed_port_is_connection_refused_quickly(make_role: Callable[..., Role]) -> None:
    """A port nobody listens on is CONNECTION_REFUSED_OR_TIMEOUT without waiting for a timeout."""
    credentials = make_role().credentials(port=free_port())

    started = time.monotonic()
    result = probe(credentials, connect_timeout=10)

    assert time.monotonic() - started < 2
    assert_failed_safely(
        result, workflows_pb2.TEST_CATEGORY_CONNECTION_REFUSED_OR_TIMEOUT, credentials
    )


def test_silent_server_is_connection_refused_or_timeout_within_the_deadline(
    make_role: Callable[..., Role],
) -> None:
    """A listener that never answers is CONNECTION_REFUSED_OR_TIMEOUT once connect_timeout ends."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        # The kernel completes the TCP handshake for the backlog; nothing ever replies.
        credentials = make_role().credentials(port=listener.getsockname()[1])

        started = time.monotonic()
        result = probe(credentials, connect_timeout=0.5)
        elapsed = time.monotonic() - started

    assert 0.4 < elapsed < 2
    assert_failed_safely(
        result, workflows_pb2.TEST_CATEGORY_CONNECTION_REFUSED_OR_TIMEOUT, credentials
    )


def test_ssl_require_against_a_server_without_tls_is_ssl_required_not_offered(
    make_role: Callable[..., Role], pg_server_url: str
) -> None:
    """ssl_mode require against a server that does not offer TLS is SSL_REQUIRED_NOT_OFFERED."""
    with psycopg.connect(pg_server_url) as conn:
        if conn.execute("show ssl").fetchone() == ("on",):
            pytest.skip("the session's server offers TLS")
    credentials = make_role().credentials(ssl_mode=SSL_MODE_REQUIRE)

    result = probe(credentials)

    assert_failed_safely(result, workflows_pb2.TEST_CATEGORY_SSL_REQUIRED_NOT_OFFERED, credentials)


# --- certificate verification (the OS's TLS server; its certificate names localhost only) ---

_UNVERIFIED = workflows_pb2.TEST_CATEGORY_SSL_CERTIFICATE_UNVERIFIED


def _tls_credentials(
    source: SourceDatabase, mode: SslMode, ca_file: Path, *, host: str = "127.0.0.1"
) -> PostgresCredentials:
    """The reader's stored credentials with ``mode`` and ``ca_file`` as the CA bundle."""
    return PostgresCredentials(
        host=host,
        port=source.port,
        database=source.database,
        username=source.reader,
        password=source.reader_password,
        ssl_mode=mode,
        ssl_root_cert=ca_file.read_text(),
    )


@pytest.fixture
def tls_source(
    tls_source_pg: EmbeddedPostgres, source_target: SourceTargetFactory
) -> SourceDatabase:
    """A seeded database and reader on the TLS server."""
    return source_target(tls_source_pg)


@pytest.fixture
def other_ca(tmp_path: Path) -> Path:
    """The certificate of a CA that did not sign the TLS server's certificate."""
    return ensure_dev_pki(tmp_path / "other-ca").ca_cert


def test_verify_ca_with_the_signing_ca_connects(
    tls_source: SourceDatabase, dev_pki: DevPki
) -> None:
    """verify-ca with the CA that signed the server's certificate connects, by IP address too."""
    result = probe(_tls_credentials(tls_source, SSL_MODE_VERIFY_CA, dev_pki.ca_cert))

    assert result.category == workflows_pb2.TEST_CATEGORY_OK


def test_verify_ca_with_another_ca_is_certificate_unverified(
    tls_source: SourceDatabase, other_ca: Path
) -> None:
    """verify-ca with a CA that did not sign the certificate fails with its own category."""
    credentials = _tls_credentials(tls_source, SSL_MODE_VERIFY_CA, other_ca)

    result = probe(credentials)

    assert_failed_safely(result, _UNVERIFIED, credentials)
    assert result.message.startswith("server certificate could not be verified: ")


def test_verify_full_by_a_name_in_the_certificate_connects(
    tls_source: SourceDatabase, dev_pki: DevPki
) -> None:
    """verify-full connects when the host is a name the certificate lists (localhost)."""
    credentials = _tls_credentials(
        tls_source, SSL_MODE_VERIFY_FULL, dev_pki.ca_cert, host="localhost"
    )

    assert probe(credentials).category == workflows_pb2.TEST_CATEGORY_OK


def test_verify_full_by_an_address_the_certificate_lacks_is_unverified(
    tls_source: SourceDatabase, dev_pki: DevPki
) -> None:
    """verify-full by 127.0.0.1, which the certificate does not list, fails (verify-ca passed)."""
    credentials = _tls_credentials(tls_source, SSL_MODE_VERIFY_FULL, dev_pki.ca_cert)

    assert_failed_safely(probe(credentials), _UNVERIFIED, credentials)


def test_verify_full_against_a_server_without_tls_is_ssl_required_not_offered(
    plain_source_pg: EmbeddedPostgres, source_target: SourceTargetFactory, dev_pki: DevPki
) -> None:
    """A verify mode requires TLS: a server without it is SSL_REQUIRED_NOT_OFFERED."""
    credentials = _tls_credentials(
        source_target(plain_source_pg), SSL_MODE_VERIFY_FULL, dev_pki.ca_cert
    )

    assert_failed_safely(
        probe(credentials), workflows_pb2.TEST_CATEGORY_SSL_REQUIRED_NOT_OFFERED, credentials
    )


@pytest.mark.parametrize("signing_ca", [True, False], ids=["verified", "unverified"])
def test_the_root_certificate_file_is_private_and_removed_after_connecting(
    signing_ca: bool,
    tls_source: SourceDatabase,
    dev_pki: DevPki,
    other_ca: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """libpq reads the bundle from a 0600 file in a 0700 directory, gone once connect ends."""
    real_connect = psycopg.AsyncConnection.connect
    seen: list[tuple[str, int, int, str]] = []

    async def spy(*args: Any, **kwargs: Any) -> Any:
        path = kwargs["sslrootcert"]
        seen.append(
            (
                path,
                stat.S_IMODE(os.stat(path).st_mode),
                stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode),
                Path(path).read_text(),
            )
        )
        return await real_connect(*args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", spy)
    ca_file = dev_pki.ca_cert if signing_ca else other_ca

    result = probe(_tls_credentials(tls_source, SSL_MODE_VERIFY_CA, ca_file))

    assert (result.category == workflows_pb2.TEST_CATEGORY_OK) is signing_ca
    ((path, file_mode, dir_mode, text),) = seen
    assert (file_mode, dir_mode) == (0o600, 0o700)
    assert text == ca_file.read_text()
    assert not os.path.exists(path)
    assert not os.path.exists(os.path.dirname(path))


_VALID: dict[str, Any] = {
    "host": "db.example.com",
    "port": 5432,
    "database": "app",
    "username": "app",
    "password": "secret",
    "ssl_mode": SSL_MODE_REQUIRE,
}


@pytest.mark.parametrize(
    "overrides",
    [
        {"host": ""},
        {"host": "   "},
        {"host": "a.example.com,b.example.com"},
        {"host": "/var/run/postgresql"},
        {"host": "db.example.com\n"},
        {"port": 0},
        {"port": 65536},
        {"port": -1},
        {"database": ""},
        {"database": "app\0"},
        {"username": ""},
        {"password": ""},
        {"password": "sec\0ret"},
        {"ssl_mode": SSL_MODE_UNSPECIFIED},
        {"ssl_mode": 99},
        # The verify modes need a bundle that parses; the others take none.
        {"ssl_mode": SSL_MODE_VERIFY_FULL},
        {"ssl_mode": SSL_MODE_VERIFY_CA, "ssl_root_cert": "not a certificate"},
        {"ssl_root_cert": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
    ],
    ids=repr,
)
def test_malformed_credentials_are_invalid_without_connecting(
    overrides: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Missing or malformed stored fields are INVALID_STORED_CREDENTIALS; nothing is dialled."""

    async def refuse_to_connect(*args: object, **kwargs: object) -> None:
        raise AssertionError("the probe connected with invalid credentials")

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", refuse_to_connect)
    credentials = PostgresCredentials(**(_VALID | overrides))

    result = probe(credentials)

    assert_failed_safely(
        result, workflows_pb2.TEST_CATEGORY_INVALID_STORED_CREDENTIALS, credentials
    )
    assert result.duration_ms == 0


_ADDRESS = 'connection to server at "db.example.com" (10.0.0.5), port 5432 failed: '


@pytest.mark.parametrize(
    ("error", "category"),
    [
        (
            psycopg.OperationalError(
                "connection failed: " + _ADDRESS + "FATAL:  no pg_hba.conf entry for host "
                '"10.0.0.9", user "app", database "app", no encryption'
            ),
            workflows_pb2.TEST_CATEGORY_PASSWORD_AUTHENTICATION_FAILED,
        ),
        (
            psycopg.OperationalError(
                "connection failed: " + _ADDRESS + "FATAL:  Ident authentication failed for "
                'user "app"'
            ),
            workflows_pb2.TEST_CATEGORY_PASSWORD_AUTHENTICATION_FAILED,
        ),
        (
            # Several addresses tried: the one where a server answered decides.
            psycopg.OperationalError(
                "connection failed: " + _ADDRESS + "Connection refused\n"
                "Multiple connection attempts failed. All failures were:\n"
                "- host: 'db.example.com', port: 5432, hostaddr: '10.0.0.4': connection "
                'failed: FATAL:  database "app" does not exist\n'
                "- host: 'db.example.com', port: 5432, hostaddr: '10.0.0.5': connection "
                "failed: Connection refused"
            ),
            workflows_pb2.TEST_CATEGORY_DATABASE_DOES_NOT_EXIST,
        ),
        (
            errors.ConnectionTimeout("connection timeout expired"),
            workflows_pb2.TEST_CATEGORY_CONNECTION_REFUSED_OR_TIMEOUT,
        ),
        (
            psycopg.OperationalError(
                "failed to resolve host 'db.example.com': [Errno -2] Name or service not known"
            ),
            workflows_pb2.TEST_CATEGORY_CONNECTION_REFUSED_OR_TIMEOUT,
        ),
        (
            # A server with a translated lc_messages: no guessing, the generic category.
            psycopg.OperationalError(
                "connection failed: " + _ADDRESS + "FATAL:  Passwort-Authentifizierung für "
                "Benutzer »app« fehlgeschlagen"
            ),
            workflows_pb2.TEST_CATEGORY_OTHER,
        ),
        (
            # Older libpq names OpenSSL's reason alone; the host name check is libpq's own.
            psycopg.OperationalError(
                "connection failed: " + _ADDRESS + "SSL error: certificate verify failed"
            ),
            workflows_pb2.TEST_CATEGORY_SSL_CERTIFICATE_UNVERIFIED,
        ),
        (
            psycopg.OperationalError(
                "connection failed: " + _ADDRESS + 'server certificate for "db.example.com" (and'
                ' 2 other names) does not match host name "10.0.0.5"'
            ),
            workflows_pb2.TEST_CATEGORY_SSL_CERTIFICATE_UNVERIFIED,
        ),
        (
            errors.TooManyConnections("sorry, too many clients already"),
            workflows_pb2.TEST_CATEGORY_OTHER,
        ),
        (
            errors.InsufficientPrivilege('permission denied for database "app"'),
            workflows_pb2.TEST_CATEGORY_PERMISSION_DENIED,
        ),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_connection_errors_map_to_categories_without_echoing_them(
    error: psycopg.Error,
    category: workflows_pb2.TestCategory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Errors a test server cannot produce map by SQLSTATE or libpq's wording, never echoed."""

    async def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", fail)
    credentials = PostgresCredentials(**_VALID)

    result = probe(credentials)

    assert_failed_safely(result, category, credentials)
    assert str(error) not in result.message
