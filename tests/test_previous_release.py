"""The previous release's code keeps working on this tree's schema, as a rolling upgrade needs.

During ``helm upgrade`` the migration Job applies this tree's migrations first, and the
previous release's pods keep serving on that schema until they are replaced (expand/contract,
deploy/k8s/README.md "Migrations"). tests/test_migration_rules.py holds the rule statically;
this runs the previous release's own tests (the release named in tests/previous_release.toml,
taken from git history) against a PostgreSQL whose every new database starts with this tree's
schema, plus one more column on every table, as the release after this one may add.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from devstack.postgres import EmbeddedPostgres
from services.auth.store import AuthStore
from services.connections.store import ConnectionStore
from services.orchestrator.store import OrchestratorStore
from sevvo.runtime import migrations

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "tests" / "previous_release.toml"
# Every schema the services own, with the code that migrates it.
STORES = (AuthStore, ConnectionStore, OrchestratorStore)
PROBE_COLUMN = "added_by_a_later_release"


def _baseline() -> dict[str, object]:
    with BASELINE.open("rb") as file:
        return tomllib.load(file)


def _git(*args: str) -> bytes:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=False)
    if done.returncode != 0:
        pytest.fail(
            f"git {' '.join(args)} failed ({done.stderr.decode(errors='replace').strip()}):"
            " this test needs the repository's history (a full clone, not a shallow one)"
        )
    return done.stdout


@pytest.fixture(scope="module")
def previous_tree() -> Iterator[Path]:
    """The previous release's files, exported from git history."""
    commit = str(_baseline()["commit"])
    archive = _git("archive", "--format=tar", commit)
    directory = Path(tempfile.mkdtemp(prefix="sevvo-previous-"))
    try:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(directory, filter="data")
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def new_schema_server() -> Iterator[str]:
    """A PostgreSQL of its own whose template1 holds this tree's schema and a probe column on
    every table: each database the previous release's tests create starts that way."""
    directory = Path(tempfile.mkdtemp(prefix="sevvo-pg-next-"))
    os.chmod(directory, 0o755)  # As root, the server runs as an unprivileged user.
    try:
        with EmbeddedPostgres(directory, durable=False) as server:
            template = make_conninfo(server.url, dbname="template1")
            schemas: list[str] = []
            for store in STORES:
                migrations.apply_all(template, store.migration_sets())
                schemas.extend(s.schema for s in store.migration_sets())
            with psycopg.connect(template, autocommit=True) as conn:
                tables = conn.execute(
                    "select table_schema, table_name from information_schema.tables"
                    " where table_schema = any(%s) and table_type = 'BASE TABLE'",
                    (sorted(set(schemas)),),
                ).fetchall()
                for schema, table in tables:
                    conn.execute(
                        sql.SQL("alter table {} add column {} text").format(
                            sql.Identifier(schema, table), sql.Identifier(PROBE_COLUMN)
                        )
                    )
            assert tables, "no tables were migrated"
            yield server.url
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_the_new_schema_keeps_every_migration_the_previous_release_applied(
    previous_tree: Path,
) -> None:
    """A migration file, once released, is never removed or renamed: the previous release's
    schema versions are all still here."""
    for store in STORES:
        for migration_set in store.migration_sets():
            here = {m.version: m.name for m in migrations.discover(migration_set.directory)}
            relative = migration_set.directory.relative_to(ROOT)
            before = {m.version: m.name for m in migrations.discover(previous_tree / relative)}
            assert before.items() <= here.items(), relative


# Those tests run one after another in a process of their own: about 40 s on an idle machine.
@pytest.mark.timeout(600)
def test_the_previous_releases_tests_pass_on_the_new_schema(
    previous_tree: Path, new_schema_server: str
) -> None:
    """The previous release's own tests of every store, through its servers, pass on a
    database migrated by this tree (and widened as the next release may widen it)."""
    listed = _baseline()["tests"]
    assert isinstance(listed, list), "tests/previous_release.toml: tests must be a list"
    files = [str(name) for name in listed]
    environment = {
        # Not this run's pytest or xdist settings: the previous release's suite is its own run.
        **{k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHON"))},
        "PYTHONPATH": str(previous_tree),
        "SEVVO_TEST_PG_DSN": new_schema_server,
    }
    imported = subprocess.run(
        [sys.executable, "-c", "import services, sevvo; print(services.__file__, sevvo.__file__)"],
        cwd=previous_tree,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(Path(path).is_relative_to(previous_tree) for path in imported), imported
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *files],
        cwd=previous_tree,
        env=environment,
        capture_output=True,
        text=True,
        timeout=590,
        check=False,
    )
    summary = "\n".join(line for line in done.stdout.splitlines()[-40:] if not line.startswith("{"))
    assert done.returncode == 0, summary
    assert " passed" in summary
