"""Versioned SQL migrations for the control-plane store: the ``migrate`` step and its checks.

Each service owns one Postgres schema and a folder of ``NNNN_description.sql`` files. Applied
versions are recorded per schema; an advisory lock serialises migrators starting together, and
each file runs in its own transaction, so a failing migration leaves the schema as it was.
In production ``python -m services.<name> migrate`` runs them as a Helm hook Job with its own
database role, and ``serve`` only checks the schema is current (``check_current``); the dev
stack and tests still migrate on start. The expand/contract rule migrations follow is in
deploy/k8s/README.md ("Migrations") and held by tests/test_migration_rules.py.
We chose this small runner over Alembic/yoyo: those bring an ORM or a second driver layer,
and all we need is ordered plain SQL under a lock.
"""

from __future__ import annotations

import re
import sys
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from sevvo.runtime import config as c
from sevvo.runtime.logs import configure_logging, get_logger

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
log = get_logger(__name__)


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    path: Path


@dataclass(frozen=True)
class MigrationSet:
    """A schema and the folder of migrations that builds it."""

    schema: str
    directory: Path


class MigrationError(Exception):
    """A migration could not be applied, or the schema is not the one the code expects; the
    message says which and what to do, and never holds the database URL."""


def discover(directory: Path) -> list[Migration]:
    """Returns the migrations in a folder, ordered by version; rejects gaps and duplicates."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if match is None:
            raise ValueError(f"migration file {path.name} must be named NNNN_description.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise ValueError(f"migration {migration.path.name} should be version {expected:04d}")
    return found


def _milliseconds(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _failure(what: str, exc: psycopg.Error, settings: c.MigrationSettings) -> MigrationError:
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return MigrationError(
            f"{what} waited more than {settings.lock_timeout_seconds:g} s for a lock another"
            " session holds (SEVVO_MIGRATION_LOCK_TIMEOUT_SECONDS); nothing of it was applied."
            " Find the long transaction in pg_stat_activity, then run migrate again."
        )
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return MigrationError(
            f"{what} ran longer than {settings.statement_timeout_seconds:g} s"
            " (SEVVO_MIGRATION_STATEMENT_TIMEOUT_SECONDS); nothing of it was applied."
        )
    # The primary message names objects ("permission denied for schema auth"), never values.
    primary = exc.diag.message_primary or type(exc).__name__
    return MigrationError(
        f"{what} failed ({exc.sqlstate or 'no SQLSTATE'}: {primary}); nothing of it was applied."
    )


def apply(
    conninfo: str,
    schema: str,
    directory: Path,
    settings: c.MigrationSettings | None = None,
) -> list[int]:
    """Applies pending migrations of ``schema`` and returns the versions applied now.

    Raises MigrationError when a file fails (including a lock or statement timeout); that
    file's transaction is rolled back and earlier files stay applied and recorded.
    """
    settings = settings or c.MigrationSettings()
    migrations = discover(directory)
    applied_now: list[int] = []
    lock_key = zlib.crc32(f"sevvo-migrations:{schema}".encode())
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # Waiting here blocks only other migrators of this schema, never traffic, so it is not
        # bounded by lock_timeout: replicas migrating on start together wait their turn.
        conn.execute("select pg_advisory_lock(%s)", (lock_key,))
        try:
            _set_timeouts(conn, settings)
            try:
                _prepare(conn, schema)
            except psycopg.Error as exc:
                raise _failure(f"preparing schema {schema}", exc, settings) from exc
            done = _applied_versions(conn, schema)
            for migration in migrations:
                if migration.version in done:
                    continue
                try:
                    with conn.transaction():
                        conn.execute(
                            sql.SQL("set local search_path to {}").format(sql.Identifier(schema))
                        )
                        conn.execute(migration.path.read_text(encoding="utf-8").encode())
                        conn.execute(
                            "insert into public.sevvo_schema_migrations"
                            " (schema_name, version, name) values (%s, %s, %s)",
                            (schema, migration.version, migration.name),
                        )
                except psycopg.Error as exc:
                    raise _failure(
                        f"migration {schema} {migration.path.name}", exc, settings
                    ) from exc
                applied_now.append(migration.version)
                log.info("migration applied", schema=schema, version=migration.version)
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (lock_key,))
    return applied_now


def _prepare(conn: psycopg.Connection[Any], schema: str) -> None:
    conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
    conn.execute(
        """
        create table if not exists public.sevvo_schema_migrations (
            schema_name text not null,
            version integer not null,
            name text not null,
            applied_at timestamptz not null default now(),
            primary key (schema_name, version)
        )
        """
    )


def apply_all(
    conninfo: str, sets: Iterable[MigrationSet], settings: c.MigrationSettings | None = None
) -> dict[str, list[int]]:
    """Applies every set in order; returns the versions applied now, by schema."""
    return {s.schema: apply(conninfo, s.schema, s.directory, settings) for s in sets}


def _set_timeouts(conn: psycopg.Connection[Any], settings: c.MigrationSettings) -> None:
    conn.execute(
        "select set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
        (
            _milliseconds(settings.lock_timeout_seconds),
            _milliseconds(settings.statement_timeout_seconds),
        ),
    )


def _applied_versions(conn: psycopg.Connection[Any], schema: str) -> set[int]:
    row = conn.execute("select to_regclass('public.sevvo_schema_migrations')").fetchone()
    if row is None or row[0] is None:
        return set()
    rows = conn.execute(
        "select version from public.sevvo_schema_migrations where schema_name = %s", (schema,)
    ).fetchall()
    return {r[0] for r in rows}


def check_current(conninfo: str, sets: Iterable[MigrationSet]) -> None:
    """Raises MigrationError unless every migration the code ships is applied.

    Reads only, so the runtime role needs no DDL rights. Versions the database has beyond the
    code's are fine: under expand/contract the previous release runs on the next one's schema
    while a rolling upgrade is under way.
    """
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for s in sets:
            done = _applied_versions(conn, s.schema)
            missing = [m for m in discover(s.directory) if m.version not in done]
            if missing:
                names = ", ".join(m.path.name for m in missing)
                raise MigrationError(
                    f"schema {s.schema} is behind this code: {names} not applied. Run"
                    " `python -m services.<name> migrate` (the chart's migrate Job) first,"
                    " or set SEVVO_MIGRATE_ON_START=true."
                )


@dataclass(frozen=True)
class MigrateConfig:
    """The migrate command's configuration: the migration role's URL and the timeouts.

    Its own object, not the service's: the Job mounts the migration role's database URL and
    nothing else (no TLS key, no key-encryption key).
    """

    database_url: str = field(repr=False)
    settings: c.MigrationSettings
    log_level: str = "INFO"

    @classmethod
    def load(cls, env: Mapping[str, str]) -> MigrateConfig:
        """Reads SEVVO_DATABASE_URL(_FILE), the migration timeouts and SEVVO_LOG_LEVEL."""
        return cls(
            database_url=c.required_secret(env, "SEVVO_DATABASE_URL"),
            settings=c.migration_settings(env),
            log_level=c.log_level(env),
        )


def migrate_command(service: str, sets: Iterable[MigrationSet], env: Mapping[str, str]) -> int:
    """Runs ``python -m services.<service> migrate``: applies pending migrations and returns
    the exit code (0 done, 1 a migration failed or the database is unreachable, 2 bad
    configuration), printing one line on what happened."""
    try:
        config = MigrateConfig.load(env)
    except c.ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(f"{service}-migrate", level=config.log_level)
    try:
        applied = apply_all(config.database_url, sets, config.settings)
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        # libpq's message names host, port and user, never the password.
        print(f"error: cannot reach the database: {exc}", file=sys.stderr)
        return 1
    summary = ", ".join(
        f"{schema}: {', '.join(f'{v:04d}' for v in versions) if versions else 'up to date'}"
        for schema, versions in applied.items()
    )
    print(f"{service} migrations done ({summary})")
    return 0
