"""Every corpus input, accepted or rejected, leaves a real database exactly as it was.

Accepted inputs run through the agent's real path (validator, then the read-only executor)
as a role that could write if anything let it. Rejected inputs are refused by the validator
and never run; as a second line of defence they are then also sent straight to the executor,
bypassing the validator, to show the READ ONLY transaction and the one-statement protocol
hold on their own. State is compared before and after: table checksums, sequences, large
objects, catalog objects, sessions, advisory locks and server-side files.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from agent.preview_executor import run_preview
from agent.preview_validator import QueryRejected, validate_preview_sql
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.workflows.v1 import workflows_pb2 as wpb
from tests.preview_corpus import ACCEPT, CORPUS, NEEDS_LIBXML, SCHEMA

SNAPSHOT_QUERIES = {
    "sequences": "select last_value::text || ':' || is_called::text from s",
    "large_objects": "select count(*)::text from pg_largeobject_metadata",
    "catalog": "select count(*)::text from pg_class where relnamespace = 'public'::regnamespace",
    "roles": "select count(*)::text from pg_roles",
    "advisory_locks": "select count(*)::text from pg_locks where locktype = 'advisory'",
    "files": "select string_agg(f, ',' order by f) from pg_ls_dir('.') f",
}


@dataclass
class Target:
    """The database under test, its superuser URL and the previewing role's credentials."""

    admin_url: str
    role: str
    credentials: cpb.PostgresCredentials


@pytest.fixture
def target(database_url: str) -> Iterator[Target]:
    """A seeded database and a role with DML rights on everything in it."""
    role, password = f"previewer_{uuid.uuid4().hex[:8]}", "previewer-pw-123"
    dbname = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(SCHEMA.encode())
        conn.execute(
            sql.SQL("create role {} login password {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        for grant in (
            "grant select, insert, update, delete, truncate on all tables in schema public to {}",
            "grant usage, select, update on all sequences in schema public to {}",
            "grant create on schema public to {}",
        ):
            conn.execute(sql.SQL(grant).format(sql.Identifier(role)))
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    yield Target(
        admin_url=database_url,
        role=role,
        credentials=cpb.PostgresCredentials(
            host=str(info.get("host", "127.0.0.1")),
            port=int(str(info.get("port", 5432))),
            database=str(dbname),
            username=role,
            password=password,
            ssl_mode=cpb.SSL_MODE_DISABLE,
        ),
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop owned by {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


def _scalar(conn: psycopg.Connection[Any], query: str | sql.Composed) -> str | None:
    row = conn.execute(query.encode() if isinstance(query, str) else query).fetchone()
    return None if row is None else row[0]


def _snapshot(target: Target) -> dict[str, str | None]:
    with psycopg.connect(target.admin_url, autocommit=True) as conn:
        state = {name: _scalar(conn, query) for name, query in SNAPSHOT_QUERIES.items()}
        tables = conn.execute(
            "select relname from pg_class where relkind = 'r'"
            " and relnamespace = 'public'::regnamespace order by relname"
        ).fetchall()
        for (table,) in tables:
            checksum = conn.execute(
                sql.SQL(
                    "select md5(coalesce(string_agg(x::text, ',' order by x::text), ''))"
                    " from public.{} x"
                ).format(sql.Identifier(table))
            ).fetchone()
            state[f"table {table}"] = checksum[0] if checksum else None
        state["sessions"] = _scalar(
            conn,
            sql.SQL("select count(*)::text from pg_stat_activity where usename = {}").format(
                sql.Literal(target.role)
            ),
        )
    return state


def _run(target: Target, statement: str) -> wpb.PreviewQueryResult:
    return asyncio.run(run_preview(target.credentials, statement, statement_timeout_ms=3000))


def test_no_corpus_input_changes_anything(target: Target) -> None:
    """Accepted inputs run and rejected ones (even when forced through) change nothing."""
    before = _snapshot(target)
    ran = forced = 0
    for case_id, text, expected in CORPUS:
        if case_id in NEEDS_LIBXML:
            continue
        try:
            statement = validate_preview_sql(text)
            verdict = ACCEPT
        except QueryRejected as rejection:
            statement, verdict = "", rejection.reason
        assert verdict == expected, case_id
        if verdict != ACCEPT:
            if verdict in {"empty", "too_long", "invalid_character"}:
                continue  # Nothing a server could run: no text, too much, or not encodable.
            # Second line of defence: no validator at all. Some forced inputs only read and may
            # succeed (rejected for style, e.g. an ambiguous string); the snapshot is the judge.
            _run(target, text)
            forced += 1
        else:
            result = _run(target, statement)
            assert result.category in {
                wpb.PREVIEW_CATEGORY_OK,
                wpb.PREVIEW_CATEGORY_QUERY_ERROR,
                wpb.PREVIEW_CATEGORY_PERMISSION_DENIED,
            }, (case_id, result.message)
            ran += 1
        assert _snapshot(target) == before, case_id
    assert ran >= 60
    assert forced >= 100
