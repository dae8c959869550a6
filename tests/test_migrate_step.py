"""Migrations as their own step: the migrate command, serve's schema check, the lock timeout."""

from __future__ import annotations

import importlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from devstack.pki import DevPki
from devstack.processes import free_port
from services.auth.config import write_key_encryption_key
from services.auth.store import AuthStore
from services.connections.store import ConnectionStore
from services.orchestrator.store import OrchestratorStore
from sevvo.runtime import migrations
from sevvo.runtime.config import ConfigError, MigrationSettings, migration_settings
from sevvo.runtime.store import SchemaStore
from tests.test_service_processes import _wait_serving

ROOT = Path(__file__).resolve().parent.parent
AUTH_MIGRATIONS = sorted((ROOT / "services" / "auth" / "migrations").glob("*.sql"))


def _auth_env(database_url: str, dev_pki: DevPki, tmp_path: Path, port: int) -> dict[str, str]:
    write_key_encryption_key(tmp_path / "kek")
    (tmp_path / "db").write_text(database_url)
    return {
        "PATH": os.environ.get("PATH", ""),
        "SEVVO_DATABASE_URL_FILE": str(tmp_path / "db"),
        "SEVVO_TLS_CERT_FILE": str(dev_pki.server_cert),
        "SEVVO_TLS_KEY_FILE": str(dev_pki.server_key),
        "SEVVO_AUTH_KEK_FILE": str(tmp_path / "kek"),
        "SEVVO_GRPC_HOST": "127.0.0.1",
        "SEVVO_GRPC_PORT": str(port),
        "SEVVO_AUTH_JWKS_PORT": "0",
        "SEVVO_LOG_LEVEL": "warning",
        "SEVVO_MIGRATE_ON_START": "false",
    }


def _run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.auth", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_migrate_then_serve_without_migrating_on_start(
    database_url: str, dev_pki: DevPki, tmp_path: Path
) -> None:
    """migrate brings a fresh database to the code's version; serve then starts without DDL."""
    port = free_port()
    env = _auth_env(database_url, dev_pki, tmp_path, port)
    done = _run("migrate", env)
    assert done.returncode == 0, done.stderr
    assert "auth migrations done" in done.stdout
    every = ", ".join(f"{n:04d}" for n in range(1, len(AUTH_MIGRATIONS) + 1))
    assert f"auth: {every})" in done.stdout
    again = migrations.apply_all(database_url, AuthStore.migration_sets())
    assert again == {"audit": [], "auth": []}
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.auth", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_serving(port, dev_pki.ca_cert, "sevvo.auth.v1.AuthService", proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def test_serve_refuses_a_schema_behind_its_code(
    database_url: str, dev_pki: DevPki, tmp_path: Path
) -> None:
    """With migrate-on-start off, serve exits 1 naming the migration that is not applied."""
    env = _auth_env(database_url, dev_pki, tmp_path, free_port())
    migrations.apply_all(database_url, AuthStore.migration_sets())
    last = AUTH_MIGRATIONS[-1]
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "delete from sevvo_schema_migrations where schema_name = 'auth' and version = %s",
            (int(last.name[:4]),),
        )
    refused = _run("serve", env)
    assert refused.returncode == 1
    assert f"schema auth is behind this code: {last.name} not applied" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_store_open_checks_without_migrating(database_url: str) -> None:
    """With migrate-on-start off, opening a store on an empty database fails and creates nothing."""
    store = OrchestratorStore(database_url, migration=MigrationSettings(migrate_on_start=False))
    with pytest.raises(migrations.MigrationError, match="schema audit is behind this code"):
        store.open()
    with psycopg.connect(database_url) as conn:
        row = conn.execute("select to_regclass('public.sevvo_schema_migrations')").fetchone()
    assert row == (None,)


def test_migration_blocked_by_a_lock_fails_within_the_lock_timeout(
    database_url: str, tmp_path: Path
) -> None:
    """A migration queued behind another session's lock gives up at lock_timeout, unapplied."""
    (tmp_path / "0001_table.sql").write_text("create table t (id int);")
    assert migrations.apply(database_url, "demo", tmp_path) == [1]
    (tmp_path / "0002_column.sql").write_text("alter table t add column note text;")
    settings = MigrationSettings(lock_timeout_seconds=0.3)
    with psycopg.connect(database_url) as holder:
        holder.execute("select * from demo.t")  # a reader's lock, held by the open transaction
        started = time.monotonic()
        with pytest.raises(migrations.MigrationError, match=r"waited more than 0\.3 s for a lock"):
            migrations.apply(database_url, "demo", tmp_path, settings)
        elapsed = time.monotonic() - started
        holder.rollback()
    assert elapsed < 3
    with psycopg.connect(database_url) as conn:
        versions = conn.execute(
            "select version from sevvo_schema_migrations where schema_name = 'demo'"
        ).fetchall()
        columns = conn.execute(
            "select column_name from information_schema.columns where table_name = 't'"
        ).fetchall()
    assert versions == [(1,)]
    assert columns == [("id",)]


def test_concurrent_migrators_wait_for_each_other(database_url: str, tmp_path: Path) -> None:
    """The advisory lock is not bounded by lock_timeout: a second migrator waits its turn."""
    (tmp_path / "0001_slow.sql").write_text("select pg_sleep(0.5); create table t (id int);")
    settings = MigrationSettings(lock_timeout_seconds=0.1)
    results: list[list[int]] = []
    other = threading.Thread(
        target=lambda: results.append(migrations.apply(database_url, "demo", tmp_path, settings))
    )
    other.start()
    results.append(migrations.apply(database_url, "demo", tmp_path, settings))
    other.join()
    assert sorted(results) == [[], [1]]


def test_migrate_command_keeps_the_password_out_of_its_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreachable database exits 1 with libpq's reason, never the URL's password."""
    url = f"postgresql://sevvo_migrate:hunter2-secret@127.0.0.1:{free_port()}/sevvo"
    code = migrations.migrate_command(
        "auth",
        (migrations.MigrationSet("demo", tmp_path),),
        {"SEVVO_DATABASE_URL": url, "SEVVO_LOG_LEVEL": "error"},
    )
    out = capsys.readouterr()
    assert code == 1
    assert "error: cannot reach the database" in out.err
    assert "hunter2" not in out.err + out.out


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, MigrationSettings(True, 5.0, 300.0)),
        (
            {
                "SEVVO_MIGRATE_ON_START": "false",
                "SEVVO_MIGRATION_LOCK_TIMEOUT_SECONDS": "2.5",
                "SEVVO_MIGRATION_STATEMENT_TIMEOUT_SECONDS": "60",
            },
            MigrationSettings(False, 2.5, 60.0),
        ),
    ],
)
def test_migration_settings_read_from_the_environment(
    env: dict[str, str], expected: MigrationSettings
) -> None:
    """The three variables are read with their defaults."""
    assert migration_settings(env) == expected


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"SEVVO_MIGRATE_ON_START": "maybe"}, "SEVVO_MIGRATE_ON_START"),
        ({"SEVVO_MIGRATION_LOCK_TIMEOUT_SECONDS": "0"}, "SEVVO_MIGRATION_LOCK_TIMEOUT_SECONDS"),
        ({"SEVVO_MIGRATION_STATEMENT_TIMEOUT_SECONDS": "x"}, "SEVVO_MIGRATION_STATEMENT_TIMEOUT"),
    ],
)
def test_bad_migration_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    """A malformed value fails at start naming its variable."""
    with pytest.raises(ConfigError, match=variable):
        migration_settings(env)


def _documented_grants() -> str:
    readme = (ROOT / "deploy" / "k8s" / "README.md").read_text()
    section = readme.split("### Migrations", 1)[1].split("\n### ", 1)[0]
    return section.split("```sql\n", 1)[1].split("```", 1)[0]


def _as_role(url: str, role: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}"))


def test_documented_roles_migrate_and_serve_without_ddl_for_the_services(
    database_url: str,
) -> None:
    """The README's GRANTs let the migration role migrate and the services' role run on DML."""
    suffix = uuid.uuid4().hex[:8]
    migrate_role, app_role = f"sevvo_migrate_{suffix}", f"sevvo_app_{suffix}"
    dbname = urlsplit(database_url).path.lstrip("/")
    grants = (
        _documented_grants()
        .replace("sevvo_migrate", migrate_role)
        .replace("sevvo_app", app_role)
        .replace("on database sevvo ", f'on database "{dbname}" ')
    )
    password = secrets.token_urlsafe(16)
    stores = [AuthStore, ConnectionStore, OrchestratorStore]
    opened: list[SchemaStore] = []
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(grants.encode())
        for role in (migrate_role, app_role):
            admin.execute(
                sql.SQL("alter role {} password {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )
        try:
            migrate_url = _as_role(database_url, migrate_role, password)
            for store_class in stores:
                migrations.apply_all(migrate_url, store_class.migration_sets())
            app_url = _as_role(database_url, app_role, password)
            for store_class in stores:
                store = store_class(
                    app_url, min_size=1, migration=MigrationSettings(migrate_on_start=False)
                )
                opened.append(store)
                store.open()
            with psycopg.connect(app_url) as app:
                tables = app.execute(
                    "select format('%I.%I', schemaname, tablename), tableowner,"
                    " has_table_privilege(format('%I.%I', schemaname, tablename),"
                    "  'select, insert, update, delete')"
                    " from pg_tables"
                    " where schemaname in ('auth', 'connections', 'orchestrator', 'audit')"
                ).fetchall()
                assert len(tables) >= 10
                assert {owner for _, owner, _ in tables} == {migrate_role}
                assert [name for name, _, allowed in tables if not allowed] == []
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    app.execute("create table auth.not_allowed (id int)")
        finally:
            for store in opened:
                store.close()
            for role in (migrate_role, app_role):
                admin.execute(sql.SQL("drop owned by {} cascade").format(sql.Identifier(role)))
            admin.execute(
                sql.SQL("drop role {}, {}").format(
                    sql.Identifier(migrate_role), sql.Identifier(app_role)
                )
            )


def test_a_role_without_ddl_rights_gets_a_clear_migration_error(
    database_url: str, tmp_path: Path
) -> None:
    """Migrating as a role that may not create the schema fails naming the schema and why."""
    (tmp_path / "0001_table.sql").write_text("create table t (id int);")
    role, password = f"sevvo_nocreate_{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(16)
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("create role {} login password {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        try:
            with pytest.raises(migrations.MigrationError) as raised:
                migrations.apply(_as_role(database_url, role, password), "demo", tmp_path)
        finally:
            admin.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))
    message = str(raised.value)
    assert message.startswith("preparing schema demo failed (42501: permission denied")
    assert password not in message


@pytest.mark.parametrize("service", ["auth", "connections", "orchestrator"])
def test_each_service_has_a_migrate_command_needing_only_the_database(
    service: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``migrate`` reads its own small configuration: without a database URL it names that
    variable, not the service's TLS or key files it never needs."""
    for name in list(os.environ):
        if name.startswith("SEVVO_"):
            monkeypatch.delenv(name)
    module = importlib.import_module(f"services.{service}.__main__")
    assert module.main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert "configuration error: SEVVO_DATABASE_URL is required" in err
    assert "TLS" not in err
