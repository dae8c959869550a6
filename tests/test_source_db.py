"""Stand-in customer databases: the OS's PostgreSQL with TLS, and least-privileged readers."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from devstack.pki import DevPki
from devstack.postgres import EmbeddedPostgres
from devstack.processes import ServerStartError
from devstack.source_db import (
    ORDER_ROWS,
    SourceDatabase,
    create_source_database,
    drop_source_database,
    os_postgres_bin_dir,
)
from tests.plugins.source_db import SourceTargetFactory

SSL_OF_THIS_SESSION = "select ssl from pg_stat_ssl where pid = pg_backend_pid()"
SERVERS = ["tls_source_pg", "plain_source_pg"]


def _session_uses_ssl(conninfo: str) -> bool:
    with psycopg.connect(conninfo, connect_timeout=5) as conn:
        row = conn.execute(SSL_OF_THIS_SESSION).fetchone()
    assert row is not None
    return bool(row[0])


@pytest.fixture(params=SERVERS)
def any_target(
    request: pytest.FixtureRequest, source_target: SourceTargetFactory
) -> SourceDatabase:
    """A fresh source database on each of the two servers in turn."""
    server: EmbeddedPostgres = request.getfixturevalue(request.param)
    return source_target(server)


# --- servers -------------------------------------------------------------------------


def test_tls_source_serves_sslmode_require(
    tls_source_pg: EmbeddedPostgres, source_target: SourceTargetFactory
) -> None:
    """A reader connecting with sslmode=require gets a TLS session."""
    target = source_target(tls_source_pg)
    assert _session_uses_ssl(target.reader_conninfo(sslmode="require"))


def test_tls_source_certificate_verifies_against_the_dev_ca(
    tls_source_pg: EmbeddedPostgres, dev_pki: DevPki
) -> None:
    """sslmode=verify-full by localhost with the dev CA as root accepts the certificate."""
    conninfo = psycopg.conninfo.make_conninfo(
        tls_source_pg.url,
        host="localhost",
        sslmode="verify-full",
        sslrootcert=str(dev_pki.ca_cert),
    )
    assert _session_uses_ssl(conninfo)


def test_tls_source_also_accepts_plaintext(
    tls_source_pg: EmbeddedPostgres, source_target: SourceTargetFactory
) -> None:
    """TLS is offered, not required: sslmode=disable logs in without TLS."""
    target = source_target(tls_source_pg)
    assert not _session_uses_ssl(target.reader_conninfo(sslmode="disable"))


def test_tls_source_keeps_its_key_owner_only(tls_source_pg: EmbeddedPostgres) -> None:
    """The server's copy of its private key is mode 0600, as Postgres demands."""
    key = next(tls_source_pg.pgdata.glob("*.key"))
    assert key.stat().st_mode & 0o777 == 0o600


def test_plain_source_refuses_sslmode_require(
    plain_source_pg: EmbeddedPostgres, source_target: SourceTargetFactory
) -> None:
    """The embedded server has no TLS, so sslmode=require fails to connect."""
    target = source_target(plain_source_pg)
    with (
        pytest.raises(psycopg.OperationalError, match="SSL"),
        psycopg.connect(target.reader_conninfo(sslmode="require"), connect_timeout=5),
    ):
        pass


# --- the reader role -----------------------------------------------------------------


def test_reader_can_select_the_seeded_rows(any_target: SourceDatabase) -> None:
    """The reader role reads the seeded orders table."""
    with psycopg.connect(any_target.reader_conninfo()) as conn:
        row = conn.execute("select count(*) from orders").fetchone()
    assert row == (ORDER_ROWS,)


def test_reader_cannot_insert(any_target: SourceDatabase) -> None:
    """The reader role may not write to the tables it can read."""
    with (
        psycopg.connect(any_target.reader_conninfo()) as conn,
        pytest.raises(errors.InsufficientPrivilege),
    ):
        conn.execute(
            "insert into customers (name, email, country, created_at)"
            " values ('x', 'x@example.com', 'DE', now())"
        )


def test_reader_cannot_create_tables(any_target: SourceDatabase) -> None:
    """The reader role may not create objects in schema public."""
    with (
        psycopg.connect(any_target.reader_conninfo()) as conn,
        pytest.raises(errors.InsufficientPrivilege),
    ):
        conn.execute("create table stolen (id int)")


def test_reader_cannot_create_temporary_tables(any_target: SourceDatabase) -> None:
    """PUBLIC's TEMPORARY right on the database is revoked, so the reader has none."""
    with (
        psycopg.connect(any_target.reader_conninfo()) as conn,
        pytest.raises(errors.InsufficientPrivilege),
    ):
        conn.execute("create temporary table scratch (id int)")


def test_other_roles_cannot_connect_to_the_source(
    tls_source_pg: EmbeddedPostgres, source_target: SourceTargetFactory
) -> None:
    """PUBLIC's CONNECT is revoked: another reader's role is refused by this database."""
    first, second = source_target(tls_source_pg), source_target(tls_source_pg)
    intruder = psycopg.conninfo.make_conninfo(first.reader_conninfo(), dbname=second.database)
    with (
        pytest.raises(psycopg.OperationalError, match="permission denied"),
        psycopg.connect(intruder, connect_timeout=5),
    ):
        pass


def test_drop_source_database_removes_database_and_reader(
    tls_source_pg: EmbeddedPostgres,
) -> None:
    """After drop_source_database, neither the database nor the reader role remains."""
    target = create_source_database(
        tls_source_pg.url,
        database="source_dropped",
        reader="reader_dropped",
        reader_password="dropped-reader-password",
    )
    drop_source_database(tls_source_pg.url, database=target.database, reader=target.reader)
    with psycopg.connect(tls_source_pg.url) as conn:
        left = conn.execute(
            "select (select count(*) from pg_database where datname = 'source_dropped'),"
            " (select count(*) from pg_roles where rolname = 'reader_dropped')"
        ).fetchone()
    assert left == (0, 0)


# --- finding the OS's PostgreSQL -----------------------------------------------------


def _fake_install(root: Path, version: str, *, server: bool = True) -> None:
    bin_dir = root / version / "bin"
    bin_dir.mkdir(parents=True)
    if server:
        (bin_dir / "postgres").touch()


def test_os_postgres_bin_dir_picks_the_newest_version_numerically(tmp_path: Path) -> None:
    """Among installed versions, 15 beats 9 (numeric order, not string order)."""
    _fake_install(tmp_path, "9")
    _fake_install(tmp_path, "15")
    assert os_postgres_bin_dir(tmp_path, install=False) == tmp_path / "15" / "bin"


def test_os_postgres_bin_dir_skips_versions_without_a_server(tmp_path: Path) -> None:
    """A version directory with client tools only (no postgres binary) is not chosen."""
    _fake_install(tmp_path, "15")
    _fake_install(tmp_path, "16", server=False)
    assert os_postgres_bin_dir(tmp_path, install=False) == tmp_path / "15" / "bin"


def test_os_postgres_bin_dir_names_the_package_when_missing(tmp_path: Path) -> None:
    """With no server installed (and no install allowed) the error says what to install."""
    with pytest.raises(ServerStartError, match="apt-get install postgresql"):
        os_postgres_bin_dir(tmp_path, install=False)
