"""Every SQL statement the orchestrator runs, against its own schema."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from psycopg.rows import class_row

from sevvo.runtime.store import SchemaStore

SCHEMA = "orchestrator"
MIGRATIONS = Path(__file__).parent / "migrations"
_KEY_CREATION_LOCK = 0x5E770C0D


@dataclass(frozen=True)
class RunRow:
    """The metadata of one run: never rows, never credentials."""

    id: uuid.UUID
    org_id: uuid.UUID
    kind: str
    state: str
    connection_id: uuid.UUID | None
    draft_id: uuid.UUID | None
    workflow_id: str
    outcome_category: str | None
    message: str | None
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    row_count: int | None = None
    truncated: bool | None = None
    # For previews: when Temporal confirmed the run's history gone, and when it was asked to.
    history_deleted_at: datetime | None = None
    history_delete_requested_at: datetime | None = None


@dataclass(frozen=True)
class PayloadKeyRow:
    """One org's payload key, sealed."""

    org_id: uuid.UUID
    key_id: str
    kek_id: str
    sealed_key: bytes
    created_at: datetime


class OrchestratorStore(SchemaStore):
    """Data access for runs and payload keys."""

    schema = SCHEMA
    migrations_dir = MIGRATIONS

    def insert_run(self, run: RunRow) -> None:
        """Records a run that is starting."""
        with self.transaction() as conn:
            conn.execute(
                "insert into runs (id, org_id, kind, state, connection_id, draft_id, workflow_id,"
                " started_at) values (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    run.id,
                    run.org_id,
                    run.kind,
                    run.state,
                    run.connection_id,
                    run.draft_id,
                    run.workflow_id,
                    run.started_at,
                ),
            )

    def finish_run(
        self,
        run_id: uuid.UUID,
        *,
        state: str,
        category: str | None,
        message: str | None,
        finished_at: datetime,
        duration_ms: int,
        row_count: int | None = None,
        truncated: bool | None = None,
    ) -> RunRow | None:
        """Records a run's outcome once; a run already finished keeps its first outcome."""
        with self.transaction() as conn, conn.cursor(row_factory=class_row(RunRow)) as cur:
            cur.execute(
                "update runs set state = %s, outcome_category = %s, message = %s,"
                " finished_at = %s, duration_ms = %s, row_count = %s, truncated = %s"
                " where id = %s and state = 'running' returning *",
                (
                    state,
                    category,
                    message,
                    finished_at,
                    duration_ms,
                    row_count,
                    truncated,
                    run_id,
                ),
            )
            return cur.fetchone()

    def get_run(self, org_id: uuid.UUID, run_id: uuid.UUID) -> RunRow | None:
        """One run of one org."""
        with self.connection() as conn, conn.cursor(row_factory=class_row(RunRow)) as cur:
            cur.execute("select * from runs where org_id = %s and id = %s", (org_id, run_id))
            return cur.fetchone()

    def list_runs(
        self, org_id: uuid.UUID, limit: int, before: tuple[datetime, str] | None
    ) -> list[RunRow]:
        """One page of an org's runs, newest first."""
        with self.connection() as conn, conn.cursor(row_factory=class_row(RunRow)) as cur:
            if before is None:
                cur.execute(
                    "select * from runs where org_id = %s"
                    " order by started_at desc, id desc limit %s",
                    (org_id, limit),
                )
            else:
                cur.execute(
                    "select * from runs where org_id = %s and (started_at, id) < (%s, %s::uuid)"
                    " order by started_at desc, id desc limit %s",
                    (org_id, before[0], before[1], limit),
                )
            return cur.fetchall()

    def running_runs(self, limit: int) -> list[RunRow]:
        """Runs of every org not yet finished, oldest first: the reconciler's work list."""
        with self.connection() as conn, conn.cursor(row_factory=class_row(RunRow)) as cur:
            cur.execute(
                "select * from runs where state = 'running' order by started_at limit %s",
                (limit,),
            )
            return cur.fetchall()

    def previews_with_history(self, limit: int, asked_before: datetime) -> list[RunRow]:
        """Finished previews whose history is not confirmed deleted and was not asked to be
        deleted since ``asked_before``."""
        with self.connection() as conn, conn.cursor(row_factory=class_row(RunRow)) as cur:
            cur.execute(
                "select * from runs where kind = 'preview' and state <> 'running'"
                " and history_deleted_at is null and (history_delete_requested_at is null"
                " or history_delete_requested_at < %s) order by finished_at limit %s",
                (asked_before, limit),
            )
            return cur.fetchall()

    def mark_history_delete_requested(self, run_id: uuid.UUID, at: datetime) -> None:
        """Records that Temporal was asked to delete a preview's history."""
        with self.transaction() as conn:
            conn.execute(
                "update runs set history_delete_requested_at = %s where id = %s", (at, run_id)
            )

    def mark_history_deleted(self, run_id: uuid.UUID, at: datetime) -> None:
        """Records that Temporal no longer holds a preview's history."""
        with self.transaction() as conn:
            conn.execute(
                "update runs set history_deleted_at = %s where id = %s"
                " and history_deleted_at is null",
                (at, run_id),
            )

    def payload_keys(self, org_id: uuid.UUID) -> list[PayloadKeyRow]:
        """An org's payload keys, oldest first."""
        with (
            self.connection() as conn,
            conn.cursor(row_factory=class_row(PayloadKeyRow)) as cur,
        ):
            cur.execute(
                "select * from payload_keys where org_id = %s order by created_at, key_id",
                (org_id,),
            )
            return cur.fetchall()

    def insert_payload_key_if_none(self, row: PayloadKeyRow) -> None:
        """Stores an org's first key, unless a concurrent caller already did."""
        with self.transaction() as conn:
            conn.execute(
                "select pg_advisory_xact_lock(%s, hashtext(%s))",
                (_KEY_CREATION_LOCK, str(row.org_id)),
            )
            exists = conn.execute(
                "select 1 from payload_keys where org_id = %s", (row.org_id,)
            ).fetchone()
            if exists is None:
                conn.execute(
                    "insert into payload_keys (org_id, key_id, kek_id, sealed_key, created_at)"
                    " values (%s, %s, %s, %s, %s)",
                    (row.org_id, row.key_id, row.kek_id, row.sealed_key, row.created_at),
                )
