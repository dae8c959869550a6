"""One sync as the agent's activity runs it: the engine on a thread, heartbeats on the loop.

The engines (agent/sync/postgres.py into a Postgres destination, agent/sync/parquet.py into a
Parquet directory) work with blocking connections, so each runs on a thread of its own while
the activity's event loop heartbeats how far it got. A cancelled activity (the workflow ended,
or Temporal gave the attempt up) stops the engine at its next progress report: the destination
transaction rolls back and the destination stays as it was.

What goes back is a SyncResult: a category, a safe message and the allow-listed counts of
SyncReport. Neither a value from the rows nor a server's own message ever enters it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from agent.postgres_probe import (
    InvalidStoredCredentials,
    connect_blocking,
    connection_failure_category,
)
from agent.sync.parquet import sync_to_parquet
from agent.sync.plan import LoadMode, SyncFailed, SyncPlan, SyncReport, TableName
from agent.sync.postgres import sync
from sevvo.connections.v1 import connections_pb2
from sevvo.runtime import outcomes
from sevvo.runtime.outcomes import SYNC_CATEGORIES, TEST_CATEGORIES
from sevvo.workflows.v1 import workflows_pb2

Destination = connections_pb2.PostgresCredentials | Path
"""Where a sync writes: a Postgres login, or a Parquet directory the agent may write."""

# Connecting to either database; libpq's per-address bound.
CONNECT_TIMEOUT_SECONDS = 15.0
# How often the activity tells Temporal it is alive (well inside the workflow's heartbeat
# timeout; the SDK throttles further).
HEARTBEAT_SECONDS = 5.0

_LOAD_MODES = {
    workflows_pb2.SYNC_LOAD_MODE_FULL_REFRESH: LoadMode.FULL_REFRESH,
    workflows_pb2.SYNC_LOAD_MODE_INCREMENTAL: LoadMode.INCREMENTAL,
}


class _Cancelled(Exception):
    """Raised inside the engine's thread when the activity was cancelled."""


def plan_of(request: workflows_pb2.SyncInput) -> SyncPlan:
    """The engine's plan for a sync input; ValueError names what is wrong with it."""
    mode = _LOAD_MODES.get(request.load_mode)
    if mode is None:
        raise ValueError("the model has no load mode")
    if not request.destination_schema or not request.destination_table:
        raise ValueError("the model names no destination table")
    return SyncPlan(
        model_id=request.model_id,
        query=request.sql,
        destination=TableName(request.destination_schema, request.destination_table),
        mode=mode,
        cursor_column=request.cursor_column or None,
        primary_key=tuple(request.primary_key),
        allow_schema_evolution=request.allow_schema_evolution,
    )


def failure(
    category: outcomes.Outcome, message: str = "", sqlstate: str = ""
) -> workflows_pb2.SyncResult:
    """A sync's result for a failure of ``category``, worded by the catalogue unless told."""
    return workflows_pb2.SyncResult(
        category=SYNC_CATEGORIES.value(category),
        message=message or SYNC_CATEGORIES.message(category),
        sqlstate=sqlstate,
    )


def result_of(report: SyncReport, attempt: int) -> workflows_pb2.SyncResult:
    """A successful sync's result: the report's fields, one for one."""
    return workflows_pb2.SyncResult(
        category=SYNC_CATEGORIES.value(outcomes.OK),
        message=SYNC_CATEGORIES.message(outcomes.OK),
        rows=report.rows,
        bytes=report.bytes,
        duration_ms=report.duration_ms,
        schema_fingerprint=report.schema_fingerprint,
        created_table=report.created_table,
        schema_changed=report.schema_changed,
        full_reload=report.full_reload,
        attempt=attempt,
    )


async def run_sync(
    request: workflows_pb2.SyncInput,
    source: connections_pb2.PostgresCredentials,
    destination: Destination,
    *,
    heartbeat: Callable[[int], None],
    attempt: int = 1,
) -> workflows_pb2.SyncResult:
    """Runs the sync of ``request`` between the two logins; every ending is a result.

    ``heartbeat`` is called on the event loop with the bytes copied so far, every
    HEARTBEAT_SECONDS. Raises only what the caller should retry: nothing here does.
    """
    try:
        plan = plan_of(request)
    except ValueError as exc:
        return failure(outcomes.INVALID_MODEL, f"{outcomes.INVALID_MODEL.message()}: {exc}")
    copied = [0]
    cancelled = threading.Event()

    def progress(done: int) -> None:
        copied[0] = done
        if cancelled.is_set():
            raise _Cancelled

    def reader() -> psycopg.Connection[Any]:
        return connect_blocking(source, connect_timeout=CONNECT_TIMEOUT_SECONDS)

    def run() -> SyncReport:
        if isinstance(destination, Path):
            return sync_to_parquet(reader, destination, plan, progress=progress)
        return sync(
            reader,
            lambda: connect_blocking(destination, connect_timeout=CONNECT_TIMEOUT_SECONDS),
            plan,
            progress=progress,
        )

    work = asyncio.ensure_future(asyncio.to_thread(run))
    # A run left behind by a cancelled activity ends on its own; its ending is read here.
    work.add_done_callback(lambda finished: finished.cancelled() or finished.exception())
    try:
        while True:
            done, _ = await asyncio.wait({work}, timeout=HEARTBEAT_SECONDS)
            if done:
                break
            heartbeat(copied[0])
        return result_of(work.result(), attempt)
    except asyncio.CancelledError:
        # The thread cannot be stopped from here: it stops itself at its next report, and
        # its destination transaction rolls back.
        cancelled.set()
        raise
    except SyncFailed as exc:
        entry = outcomes.get(exc.category) or outcomes.OTHER
        return failure(entry, exc.message, exc.sqlstate or "")
    except InvalidStoredCredentials:
        return failure(outcomes.INVALID_STORED_CREDENTIALS)
    except (psycopg.Error, TimeoutError) as exc:
        # Connecting failed (the engine turns errors after that into SyncFailed).
        return failure(_connection_outcome(exc), sqlstate=_sqlstate(exc))


def _connection_outcome(exc: psycopg.Error | TimeoutError) -> outcomes.Outcome:
    """The credential test's category for a failure to connect, read as a sync's."""
    entry = TEST_CATEGORIES.outcome(connection_failure_category(exc))
    return entry if SYNC_CATEGORIES.has(entry) else outcomes.OTHER


def _sqlstate(exc: BaseException) -> str:
    value: Any = getattr(exc, "sqlstate", None)
    return value if isinstance(value, str) else ""
