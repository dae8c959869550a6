"""Every SQL statement the orchestrator runs, against its own schema."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from sevvo.runtime import audit
from sevvo.runtime.migrations import MigrationSet
from sevvo.runtime.rows import dataclass_row
from sevvo.runtime.store import SchemaStore

SCHEMA = "orchestrator"
MIGRATIONS = Path(__file__).parent / "migrations"
_KEY_CREATION_LOCK = 0x5E770C0D
# The tables holding keys sealed under the keyring, by the columns that name one row: what
# ``rewrap`` walks (services/orchestrator/rewrap.py).
SEALED_KEY_TABLES: dict[str, tuple[str, ...]] = {
    "payload_keys": ("org_id", "key_id"),
    "proof_keys": ("key_id",),
}


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
    # Whether the workflow's input carried a proof of origin (false for runs from before).
    proved: bool = False
    # Who started it, as the audit log names actors ("user:<id>"); "" for older runs.
    creator: str = ""
    # For syncs: the model, and the metadata the agent reported (SyncResult's fields by name).
    model_id: uuid.UUID | None = None
    sync_report: dict[str, Any] | None = None


class SyncRunning(Exception):
    """A sync of the model is already running; the store refused a second one."""


@dataclass(frozen=True)
class ProofKeyRow:
    """One of the orchestrator's proof signing keys, its private half sealed."""

    key_id: str
    kek_id: str
    sealed_key: bytes
    public_key: bytes
    created_at: datetime


@dataclass(frozen=True)
class PayloadKeyRow:
    """One org's payload key, sealed."""

    org_id: uuid.UUID
    key_id: str
    kek_id: str
    sealed_key: bytes
    created_at: datetime


class KeyRotation:
    """One org's payload keys inside a transaction that holds the org's key lock.

    Replicas rotating the same org at once take turns, so each decides on the key the other
    left current; the change and its audit record commit together or not at all.
    """

    def __init__(self, conn: psycopg.Connection[Any], org_id: uuid.UUID) -> None:
        self._conn = conn
        self.org_id = org_id

    def current(self) -> PayloadKeyRow | None:
        """The org's current (newest) key, if it has one."""
        with self._conn.cursor(row_factory=dataclass_row(PayloadKeyRow)) as cur:
            cur.execute(
                "select * from payload_keys where org_id = %s"
                " order by created_at desc, key_id desc limit 1",
                (self.org_id,),
            )
            return cur.fetchone()

    def refuse(self, deployment_id: str, at: datetime) -> bool:
        """Refuses the deployment every key from now on; True unless it already was."""
        cur = self._conn.execute(
            "insert into payload_key_refused_deployments (org_id, deployment_id, refused_at)"
            " values (%s, %s, %s) on conflict do nothing",
            (self.org_id, deployment_id, at),
        )
        return cur.rowcount == 1

    def fetched(self, deployment_id: str, key_id: str) -> bool:
        """Whether the deployment was ever given the key."""
        return (
            self._conn.execute(
                "select 1 from payload_key_fetches where org_id = %s and deployment_id = %s"
                " and key_id = %s",
                (self.org_id, deployment_id, key_id),
            ).fetchone()
            is not None
        )

    def insert(self, row: PayloadKeyRow) -> PayloadKeyRow:
        """Adds a key that becomes current: created after every key the org has, whatever
        this replica's clock says."""
        with self._conn.cursor(row_factory=dataclass_row(PayloadKeyRow)) as cur:
            cur.execute(
                "insert into payload_keys (org_id, key_id, kek_id, sealed_key, created_at)"
                " select %s, %s, %s, %s, greatest(%s, max(created_at) + interval '1 microsecond')"
                " from payload_keys where org_id = %s returning *",
                (row.org_id, row.key_id, row.kek_id, row.sealed_key, row.created_at, row.org_id),
            )
            inserted = cur.fetchone()
        assert inserted is not None
        return inserted

    def retire(self, key_id: str, superseded_before: datetime) -> bool:
        """Deletes a key that stopped being current before ``superseded_before``."""
        cur = self._conn.execute(
            "delete from payload_keys k where org_id = %s and key_id = %s and exists ("
            " select 1 from payload_keys n where n.org_id = k.org_id"
            " and (n.created_at, n.key_id) > (k.created_at, k.key_id) and n.created_at < %s)",
            (self.org_id, key_id, superseded_before),
        )
        return cur.rowcount == 1

    def audit(
        self,
        actor: audit.Actor,
        action: str,
        key_id: str,
        details: dict[str, str],
    ) -> None:
        """Records what happened to one of the org's keys (ids and reasons, never key bytes)."""
        audit.record(
            self._conn,
            org_id=self.org_id,
            actor=actor,
            action=action,
            target_type="payload_key",
            target_id=key_id,
            details=details,
        )


class OrchestratorStore(SchemaStore):
    """Data access for runs and payload keys."""

    schema = SCHEMA
    migrations_dir = MIGRATIONS

    @classmethod
    def migration_sets(cls) -> tuple[MigrationSet, ...]:
        """The shared audit log's schema, then this service's own."""
        return (audit.MIGRATION_SET, *super().migration_sets())

    def append_audit(self, entry: audit.Entry) -> None:
        """Appends one audit record on its own: for a change stored elsewhere (Temporal's
        schedules) or an outcome nothing else stores (a preview's)."""
        with self.transaction() as conn:
            audit.append(conn, entry)

    def insert_run(self, run: RunRow, entry: audit.Entry | None = None) -> None:
        """Records a run that is starting, and its audit record when given.

        Raises SyncRunning for a sync of a model that has one running.
        """
        with self.transaction() as conn:
            try:
                self._insert_run(conn, run)
            except psycopg.errors.UniqueViolation as exc:
                if exc.diag.constraint_name == "runs_one_running_sync":
                    raise SyncRunning(str(run.model_id)) from None
                raise
            if entry is not None:
                audit.append(conn, entry)

    @staticmethod
    def _insert_run(conn: psycopg.Connection[Any], run: RunRow) -> None:
        conn.execute(
            "insert into runs (id, org_id, kind, state, connection_id, draft_id, workflow_id,"
            " started_at, proved, creator, model_id)"
            " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                run.id,
                run.org_id,
                run.kind,
                run.state,
                run.connection_id,
                run.draft_id,
                run.workflow_id,
                run.started_at,
                run.proved,
                run.creator,
                run.model_id,
            ),
        )

    def running_sync(self, org_id: uuid.UUID, model_id: uuid.UUID) -> RunRow | None:
        """The model's sync that is running, if one is."""
        with self.connection() as conn, conn.cursor(row_factory=dataclass_row(RunRow)) as cur:
            cur.execute(
                "select * from runs where org_id = %s and model_id = %s and kind = 'sync'"
                " and state = 'running'",
                (org_id, model_id),
            )
            return cur.fetchone()

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
        sync_report: Mapping[str, Any] | None = None,
    ) -> RunRow | None:
        """Records a run's outcome once; a run already finished keeps its first outcome."""
        with (
            self.transaction() as conn,
            conn.cursor(row_factory=dataclass_row(RunRow)) as cur,
        ):
            cur.execute(
                "update runs set state = %s, outcome_category = %s, message = %s,"
                " finished_at = %s, duration_ms = %s, row_count = %s, truncated = %s,"
                " sync_report = %s where id = %s and state = 'running' returning *",
                (
                    state,
                    category,
                    message,
                    finished_at,
                    duration_ms,
                    row_count,
                    truncated,
                    None if sync_report is None else Jsonb(dict(sync_report)),
                    run_id,
                ),
            )
            return cur.fetchone()

    def get_run(self, org_id: uuid.UUID, run_id: uuid.UUID) -> RunRow | None:
        """One run of one org."""
        with self.connection() as conn, conn.cursor(row_factory=dataclass_row(RunRow)) as cur:
            cur.execute("select * from runs where org_id = %s and id = %s", (org_id, run_id))
            return cur.fetchone()

    def list_runs(
        self,
        org_id: uuid.UUID,
        limit: int,
        before: tuple[datetime, str] | None,
        model_id: uuid.UUID | None = None,
        connection_id: uuid.UUID | None = None,
    ) -> list[RunRow]:
        """One page of an org's runs (of one model or connection, when given), newest first."""
        where: sql.Composable = sql.SQL("org_id = %(org)s")
        if model_id is not None:
            where = sql.SQL("{} and model_id = %(model)s").format(where)
        if connection_id is not None:
            where = sql.SQL("{} and connection_id = %(connection)s").format(where)
        if before is not None:
            where = sql.SQL("{} and (started_at, id) < (%(at)s, %(id)s::uuid)").format(where)
        query = sql.SQL(
            "select * from runs where {} order by started_at desc, id desc limit %(limit)s"
        ).format(where)
        params: dict[str, Any] = {
            "org": org_id,
            "model": model_id,
            "connection": connection_id,
            "limit": limit,
        }
        if before is not None:
            params.update(at=before[0], id=before[1])
        with self.connection() as conn, conn.cursor(row_factory=dataclass_row(RunRow)) as cur:
            cur.execute(query, params)
            return cur.fetchall()

    def org_ids_with_keys(self) -> list[uuid.UUID]:
        """Every org that has a payload key: the only orgs whose encrypted schedules exist."""
        with self.connection() as conn:
            rows = conn.execute("select distinct org_id from payload_keys order by org_id")
            return [row[0] for row in rows.fetchall()]

    def running_runs(self, limit: int) -> list[RunRow]:
        """Runs of every org not yet finished, oldest first: the reconciler's work list."""
        with self.connection() as conn, conn.cursor(row_factory=dataclass_row(RunRow)) as cur:
            cur.execute(
                "select * from runs where state = 'running' order by started_at limit %s",
                (limit,),
            )
            return cur.fetchall()

    def previews_with_history(
        self, limit: int, asked_before: datetime, finished_before: datetime
    ) -> list[RunRow]:
        """Finished previews whose history is not confirmed deleted: asked to be deleted before
        ``asked_before``, or never asked and finished before ``finished_before``."""
        with self.connection() as conn, conn.cursor(row_factory=dataclass_row(RunRow)) as cur:
            cur.execute(
                "select * from runs where kind = 'preview' and state <> 'running'"
                " and history_deleted_at is null"
                " and (history_delete_requested_at < %s"
                " or (history_delete_requested_at is null and finished_at < %s))"
                " order by finished_at limit %s",
                (asked_before, finished_before, limit),
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
            conn.cursor(row_factory=dataclass_row(PayloadKeyRow)) as cur,
        ):
            cur.execute(
                "select * from payload_keys where org_id = %s order by created_at, key_id",
                (org_id,),
            )
            return cur.fetchall()

    def payload_keys_for_deployment(
        self, org_id: uuid.UUID, deployment_id: str
    ) -> list[PayloadKeyRow] | None:
        """An org's keys for one of its deployments, recorded as given to it; None when the
        deployment is refused.

        One statement reads the keys and the refusal, so a rotation that refuses the
        deployment is seen whole or not at all: a refused deployment never gets the key that
        replaced the ones it held.
        """
        with (
            self.transaction() as conn,
            conn.cursor(row_factory=dataclass_row(PayloadKeyRow)) as cur,
        ):
            cur.execute(
                "select * from payload_keys where org_id = %s and not exists ("
                " select 1 from payload_key_refused_deployments where org_id = %s"
                " and deployment_id = %s) order by created_at, key_id",
                (org_id, org_id, deployment_id),
            )
            rows = cur.fetchall()
            if not rows:
                refused = conn.execute(
                    "select 1 from payload_key_refused_deployments where org_id = %s"
                    " and deployment_id = %s",
                    (org_id, deployment_id),
                ).fetchone()
                return None if refused is not None else []
            conn.execute(
                "insert into payload_key_fetches (org_id, deployment_id, key_id)"
                " select org_id, %s, key_id from payload_keys where org_id = %s"
                " and key_id = any(%s) on conflict do nothing",
                (deployment_id, org_id, [row.key_id for row in rows]),
            )
            return rows

    @contextmanager
    def key_rotation(self, org_id: uuid.UUID) -> Iterator[KeyRotation]:
        """A transaction holding the org's key lock (the same lock that guards its first key)."""
        with self.transaction() as conn:
            conn.execute(
                "select pg_advisory_xact_lock(%s, hashtext(%s))", (_KEY_CREATION_LOCK, str(org_id))
            )
            yield KeyRotation(conn, org_id)

    def orgs_with_keys_created_before(self, before: datetime, limit: int) -> list[uuid.UUID]:
        """Orgs whose current key was created before ``before``: due for a scheduled rotation."""
        with self.connection() as conn:
            rows = conn.execute(
                "select org_id from payload_keys group by org_id having max(created_at) < %s"
                " limit %s",
                (before, limit),
            ).fetchall()
        return [row[0] for row in rows]

    def superseded_keys(self, before: datetime, limit: int) -> list[tuple[uuid.UUID, str]]:
        """(org, key id) of keys that stopped being current before ``before``."""
        with self.connection() as conn:
            rows = conn.execute(
                "select k.org_id, k.key_id from payload_keys k where exists ("
                " select 1 from payload_keys n where n.org_id = k.org_id"
                " and (n.created_at, n.key_id) > (k.created_at, k.key_id) and n.created_at < %s)"
                " order by k.created_at limit %s",
                (before, limit),
            ).fetchall()
        return [(row[0], row[1]) for row in rows]

    def unrefused_holders(self, deployment_ids: Sequence[str]) -> list[tuple[uuid.UUID, str]]:
        """(org, deployment) pairs among ``deployment_ids`` that were given a key and are not
        refused yet: revoked deployments whose org still needs a rotation."""
        if not deployment_ids:
            return []
        with self.connection() as conn:
            rows = conn.execute(
                "select distinct f.org_id, f.deployment_id from payload_key_fetches f"
                " where f.deployment_id = any(%s) and not exists ("
                " select 1 from payload_key_refused_deployments r where r.org_id = f.org_id"
                " and r.deployment_id = f.deployment_id)",
                (list(deployment_ids),),
            ).fetchall()
        return [(row[0], row[1]) for row in rows]

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

    def run_by_workflow_id(self, org_id: uuid.UUID, workflow_id: str) -> RunRow | None:
        """The run of one org that started ``workflow_id``, if any."""
        with self.connection() as conn, conn.cursor(row_factory=dataclass_row(RunRow)) as cur:
            cur.execute(
                "select * from runs where org_id = %s and workflow_id = %s",
                (org_id, workflow_id),
            )
            return cur.fetchone()

    def proof_keys(self) -> list[ProofKeyRow]:
        """The proof signing keys, oldest first (the last one signs)."""
        with self.connection() as conn, conn.cursor(row_factory=dataclass_row(ProofKeyRow)) as cur:
            cur.execute("select * from proof_keys order by created_at, key_id")
            return cur.fetchall()

    def insert_proof_key(self, row: ProofKeyRow, *, only_if_none: bool) -> None:
        """Stores a proof key; with ``only_if_none``, only when no replica stored one first."""
        with self.transaction() as conn:
            conn.execute("select pg_advisory_xact_lock(%s, 0)", (_KEY_CREATION_LOCK,))
            if only_if_none and conn.execute("select 1 from proof_keys").fetchone() is not None:
                return
            conn.execute(
                "insert into proof_keys (key_id, kek_id, sealed_key, public_key, created_at)"
                " values (%s, %s, %s, %s, %s)",
                (row.key_id, row.kek_id, row.sealed_key, row.public_key, row.created_at),
            )

    # Rewrap: re-sealing stored keys under the keyring's primary key.

    def count_sealed_by_kek(self, table: str) -> dict[str, int]:
        """How many of ``table``'s keys each key-encryption key seals."""
        with self.connection() as conn:
            rows = conn.execute(
                sql.SQL("select kek_id, count(*) from {} group by kek_id").format(
                    sql.Identifier(table)
                )
            ).fetchall()
        return {str(kek): int(n) for kek, n in rows}

    @staticmethod
    def lock_sealed_not_under(
        conn: psycopg.Connection[Any], table: str, kek_id: str, limit: int
    ) -> list[dict[str, Any]]:
        """Locks up to ``limit`` of ``table``'s rows sealed under another key (their ids,
        kek_id and sealed_key), skipping rows another transaction holds."""
        ids = sql.SQL(", ").join(map(sql.Identifier, SEALED_KEY_TABLES[table]))
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL(
                    "select {ids}, kek_id, sealed_key from {table} where kek_id <> %s"
                    " order by {ids} limit %s for update skip locked"
                ).format(ids=ids, table=sql.Identifier(table)),
                (kek_id, limit),
            )
            return cur.fetchall()

    @staticmethod
    def reseal(
        conn: psycopg.Connection[Any],
        table: str,
        ids: dict[str, Any],
        old_kek_id: str,
        kek_id: str,
        sealed: bytes,
    ) -> bool:
        """Replaces one row's sealed key if it is still sealed under ``old_kek_id`` (so a
        second rewrap never writes over the first); True if it did."""
        columns = SEALED_KEY_TABLES[table]
        where = sql.SQL(" and ").join(
            sql.SQL("{} = %s").format(sql.Identifier(column)) for column in columns
        )
        cur = conn.execute(
            sql.SQL(
                "update {table} set kek_id = %s, sealed_key = %s where {where} and kek_id = %s"
            ).format(table=sql.Identifier(table), where=where),
            (kek_id, sealed, *(ids[column] for column in columns), old_kek_id),
        )
        return cur.rowcount == 1
