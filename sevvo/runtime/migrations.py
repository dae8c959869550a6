"""Versioned SQL migrations for the control-plane store, applied on service start.

Each service owns one Postgres schema and a folder of ``NNNN_description.sql`` files. Applied
versions are recorded per schema; an advisory lock serialises replicas starting together, and
each file runs in its own transaction, so a failing migration leaves the schema as it was.
We chose this small runner over Alembic/yoyo: those bring an ORM or a second driver layer,
and all we need is ordered plain SQL under a lock.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from sevvo.runtime.logs import get_logger

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
log = get_logger(__name__)


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    path: Path


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


def apply(conninfo: str, schema: str, directory: Path) -> list[int]:
    """Applies pending migrations of ``schema`` and returns the versions applied now."""
    migrations = discover(directory)
    applied_now: list[int] = []
    lock_key = zlib.crc32(f"sevvo-migrations:{schema}".encode())
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (lock_key,))
        try:
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
            rows = conn.execute(
                "select version from public.sevvo_schema_migrations where schema_name = %s",
                (schema,),
            ).fetchall()
            done = {row[0] for row in rows}
            for migration in migrations:
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(
                        sql.SQL("set local search_path to {}").format(sql.Identifier(schema))
                    )
                    conn.execute(migration.path.read_text(encoding="utf-8").encode())
                    conn.execute(
                        "insert into public.sevvo_schema_migrations (schema_name, version, name)"
                        " values (%s, %s, %s)",
                        (schema, migration.version, migration.name),
                    )
                applied_now.append(migration.version)
                log.info("migration applied", schema=schema, version=migration.version)
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (lock_key,))
    return applied_now
