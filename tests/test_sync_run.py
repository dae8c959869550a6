"""A sync as the agent's activity runs it (agent/sync/run.py), against real databases.

The engine's own rules are tested in tests/test_sync_engine.py; here, what the activity adds:
stored credentials in, every ending a SyncResult with a catalogue category, heartbeats while
the rows stream, and a cancelled attempt that leaves the destination as it was.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from agent.sync import run as sync_run
from agent.sync.run import run_sync
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.runtime.outcomes import SYNC_CATEGORIES
from sevvo.workflows.v1 import workflows_pb2 as wpb
from tests.plugins.postgres import fresh_database

ROWS = 200_000


def _credentials(url: str, *, password: str | None = None) -> cpb.PostgresCredentials:
    parts = conninfo_to_dict(url)
    return cpb.PostgresCredentials(
        host=str(parts.get("host") or "localhost"),
        port=int(parts.get("port") or 5432),
        database=str(parts["dbname"]),
        username=str(parts["user"]),
        password=password if password is not None else str(parts["password"]),
        ssl_mode=cpb.SSL_MODE_DISABLE,
    )


@pytest.fixture
def source(database_url: str) -> str:
    """A source database with ``events``, big enough to stream for a few seconds."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("create table events (id bigint primary key, payload text)")
        conn.execute(
            "insert into events select g, repeat(md5(g::text), 4) from generate_series(1, %s) g",
            (ROWS,),
        )
    return database_url


@pytest.fixture
def destination(pg_server_url: str) -> Iterator[str]:
    """An empty destination database."""
    with fresh_database(pg_server_url) as url:
        yield url


def _input(**fields: object) -> wpb.SyncInput:
    defaults: dict[str, object] = {
        "run_id": "run-1",
        "model_id": "model-1",
        "sql": "select id, payload from public.events",
        "destination_schema": "analytics",
        "destination_table": "events",
        "load_mode": wpb.SYNC_LOAD_MODE_FULL_REFRESH,
    }
    defaults.update(fields)
    return wpb.SyncInput(**defaults)  # type: ignore[arg-type]


def _count(url: str) -> int | None:
    with psycopg.connect(url) as conn:
        if conn.execute("select to_regclass('analytics.events')").fetchone() == (None,):
            return None
        row = conn.execute("select count(*) from analytics.events").fetchone()
    assert row is not None
    return int(row[0])


def test_a_sync_from_stored_credentials_reports_counts(source: str, destination: str) -> None:
    """Every row arrives; the result carries the counts, the fingerprint and the attempt."""
    result = asyncio.run(
        run_sync(
            _input(),
            _credentials(source),
            _credentials(destination),
            heartbeat=lambda _: None,
            attempt=3,
        )
    )
    assert SYNC_CATEGORIES.name(result.category) == "ok", result.message
    assert (result.rows, result.attempt, result.created_table) == (ROWS, 3, True)
    assert result.bytes > ROWS * 128 and len(result.schema_fingerprint) >= 16
    assert _count(destination) == ROWS


def test_endings_are_results_with_catalogue_categories(source: str, destination: str) -> None:
    """A wrong password, a statement the source refuses and a model without a load mode each
    end in their category with a safe message; nothing is loaded."""

    def run(request: wpb.SyncInput, src: cpb.PostgresCredentials) -> wpb.SyncResult:
        return asyncio.run(
            run_sync(request, src, _credentials(destination), heartbeat=lambda _: None)
        )

    wrong = run(_input(), _credentials(source, password="not-the-password"))
    assert SYNC_CATEGORIES.name(wrong.category) == "password_authentication_failed"
    assert "not-the-password" not in wrong.message
    failing = run(_input(sql="select id, 1 / (id - id) from public.events"), _credentials(source))
    assert SYNC_CATEGORIES.name(failing.category) == "source_query_failed"
    assert failing.sqlstate == "22012"
    # The server's own message would quote the value ("invalid input syntax … 'canary-…'").
    quoting = run(
        _input(sql="select id, ('canary-row-7c1d' || payload)::int from public.events"),
        _credentials(source),
    )
    assert (SYNC_CATEGORIES.name(quoting.category), quoting.sqlstate) == (
        "source_query_failed",
        "22P02",
    )
    assert "canary-row-7c1d" not in str(quoting)
    unplanned = run(_input(load_mode=wpb.SYNC_LOAD_MODE_UNSPECIFIED), _credentials(source))
    assert SYNC_CATEGORIES.name(unplanned.category) == "invalid_model"
    assert "load mode" in unplanned.message
    assert _count(destination) is None


def test_a_cancelled_attempt_leaves_the_destination_as_it_was(
    source: str, destination: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attempt heartbeats the bytes copied while rows stream; cancelled mid-stream (the
    workflow ended, or Temporal gave the attempt up), the engine stops at its next progress
    report and the previous load stays, whole."""
    # Every 5 s, a quiet machine streamed the 4M rows below before the first heartbeat, so
    # the test never saw one mid-stream: beat often enough to see the stream under way.
    monkeypatch.setattr(sync_run, "HEARTBEAT_SECONDS", 0.05)
    small = _input(sql="select id, payload from public.events where id <= 10")
    done = asyncio.run(
        run_sync(small, _credentials(source), _credentials(destination), heartbeat=lambda _: None)
    )
    assert done.rows == 10

    async def cancelled_mid_stream() -> None:
        streaming = asyncio.Event()
        task = asyncio.ensure_future(
            run_sync(
                _input(sql="select a.id, a.payload from public.events a, generate_series(1, 20)"),
                _credentials(source),
                _credentials(destination),
                heartbeat=lambda copied: streaming.set() if copied else None,
            )
        )
        await asyncio.wait_for(streaming.wait(), 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The engine's thread ends on its own; its transaction rolls back.
        for _ in range(200):
            with psycopg.connect(destination) as conn:
                busy = conn.execute(
                    "select count(*) from pg_stat_activity"
                    " where datname = current_database() and pid <> pg_backend_pid()"
                ).fetchone()
            if busy == (0,):
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the cancelled sync's session did not end")

    asyncio.run(cancelled_mid_stream())
    assert _count(destination) == 10
