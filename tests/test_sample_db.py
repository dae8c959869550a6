"""`make dev`'s sample database across an upgrade of the checkout: a `.dev/shop` made before a
role of the user's guide existed gains that role, and keeps its rows and the other roles'
passwords, so connections already saved in the dev stack still log in.

Runs the OS's PostgreSQL, as `make dev` does (the embedded wheel has no TLS).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from devstack import demo_guide as guide
from devstack.pki import ensure_dev_pki
from devstack.sample_db import ROLE_SECTIONS, SampleDatabase, start_sample_database


@pytest.fixture
def state() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sevvo-sample-") as directory:
        path = Path(directory)
        path.chmod(0o755)  # The OS's postgres user must reach the cluster below it.
        yield path


def _logs_in(sample: SampleDatabase, role: str) -> int:
    """Logs in as ``role`` with its saved password; the number of orders it sees (or -1 when
    it may not read them)."""
    password = sample.password_file(role).read_text().strip()
    with psycopg.connect(
        host=sample.host,
        port=sample.port,
        dbname=sample.database,
        user=role,
        password=password,
        sslmode="require",
    ) as conn:
        try:
            found = conn.execute("select count(*) from orders").fetchone()
        except psycopg.errors.InsufficientPrivilege:
            return -1
    return int(found[0]) if found else 0


def test_a_sample_database_from_before_a_role_existed_gains_it_and_keeps_the_rest(
    state: Path,
) -> None:
    pki = ensure_dev_pki(state / "pki")
    shop = state / "shop"
    sample = start_sample_database(shop, pki)
    try:
        orders = _logs_in(sample, guide.READER)
        assert orders > 0
        # The checkout before the loader role: no such role, no password file, no schemas.
        with psycopg.connect(sample.server.admin_url(guide.DATABASE), autocommit=True) as conn:
            conn.execute(sql.SQL("drop owned by {}").format(sql.Identifier(guide.LOADER)))
            conn.execute(sql.SQL("drop role {}").format(sql.Identifier(guide.LOADER)))
        sample.password_file(guide.LOADER).unlink()
        reader_password = sample.password_file(guide.READER).read_text()
    finally:
        sample.stop()

    sample = start_sample_database(shop, pki)
    try:
        kept = sample.password_file(guide.READER).read_text() == reader_password
        # The message, not the values: a failing test prints no password.
        assert kept, "the reader's password changed"
        assert _logs_in(sample, guide.READER) == orders
        assert _logs_in(sample, guide.LOADER) == -1  # It writes; it reads nothing of the shop.
        with psycopg.connect(sample.server.admin_url(guide.DATABASE)) as conn:
            owned = conn.execute(
                "select nspname from pg_namespace where nspowner = %s::regrole order by 1",
                (guide.LOADER,),
            ).fetchall()
        assert [name for (name,) in owned] == ["analytics", "sevvo_sync"]
        assert all(sample.password_file(role).exists() for _, role in ROLE_SECTIONS)
    finally:
        sample.stop()
