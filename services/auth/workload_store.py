"""Every SQL statement about workload identities, on auth's pool and schema (migration 0005)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from services.auth.store import AuthStore
from sevvo.runtime import audit
from sevvo.runtime.rows import known_columns
from sevvo.runtime.workload_grants import Grant


@dataclass(frozen=True)
class WorkloadRow:
    """A workload identity, including the hash of its secret (never leaves the domain layer)."""

    id: uuid.UUID
    org_id: uuid.UUID
    display_name: str
    description: str
    grants: tuple[Grant, ...]
    max_ttl_seconds: int
    secret_hash: bytes
    creator_user_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime | None = None
    generation: int = 1
    grants_changed_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class WorkloadSecretRow:
    """What an exchange needs of a workload: its org, secret hash, grants and revocation."""

    id: uuid.UUID
    org_id: uuid.UUID
    secret_hash: bytes
    grants: tuple[Grant, ...]
    max_ttl_seconds: int
    generation: int
    revoked_at: datetime | None


@dataclass(frozen=True)
class WorkloadChanges:
    """Workloads revoked (id to time) and with changed grants (id to generation) lately."""

    revoked: dict[str, datetime]
    generations: dict[str, tuple[int, datetime]]


def _grants_json(grants: Sequence[Grant]) -> Jsonb:
    return Jsonb([grant.claim() for grant in grants])


def _grants(value: Any) -> tuple[Grant, ...]:
    # Written by this module only, from checked grants, so read back as they were written.
    return tuple(Grant(item["connection_id"], item["role"]) for item in value)


def _row(values: Mapping[str, Any]) -> WorkloadRow:
    return WorkloadRow(
        **{**known_columns(WorkloadRow, values), "grants": _grants(values["grants"])}
    )


class WorkloadStore:
    """Workload queries, on the pool of auth's store; one method per query or transaction."""

    def __init__(self, store: AuthStore) -> None:
        self._store = store

    def create(self, row: WorkloadRow, actor: audit.Actor, details: Mapping[str, str]) -> None:
        """Inserts a workload and its ``workload.create`` audit record, together."""
        with self._store.transaction() as conn:
            conn.execute(
                "insert into workloads (id, org_id, display_name, description, grants,"
                " max_ttl_seconds, secret_hash, creator_user_id, created_at)"
                " values (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    row.id,
                    row.org_id,
                    row.display_name,
                    row.description,
                    _grants_json(row.grants),
                    row.max_ttl_seconds,
                    row.secret_hash,
                    row.creator_user_id,
                    row.created_at,
                ),
            )
            _record(conn, row, actor, "workload.create", details=details)

    def get(self, org_id: uuid.UUID, workload_id: uuid.UUID) -> WorkloadRow | None:
        """Finds a workload of one org."""
        with self._store.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "select * from workloads where org_id = %s and id = %s", (org_id, workload_id)
            )
            found = cur.fetchone()
        return _row(found) if found else None

    def list_workloads(
        self, org_id: uuid.UUID, limit: int, after: tuple[datetime, str] | None
    ) -> list[WorkloadRow]:
        """One page of an org's workloads in creation order."""
        with self._store.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            if after is None:
                cur.execute(
                    "select * from workloads where org_id = %s order by created_at, id limit %s",
                    (org_id, limit),
                )
            else:
                cur.execute(
                    "select * from workloads where org_id = %s"
                    " and (created_at, id) > (%s, %s::uuid) order by created_at, id limit %s",
                    (org_id, after[0], after[1], limit),
                )
            return [_row(found) for found in cur.fetchall()]

    @contextmanager
    def change(self, org_id: uuid.UUID, workload_id: uuid.UUID) -> Iterator[WorkloadChangeTx]:
        """A transaction changing one workload of one org, its row locked until the end."""
        with self._store.transaction() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "select * from workloads where org_id = %s and id = %s for update",
                (org_id, workload_id),
            )
            found = cur.fetchone()
            yield WorkloadChangeTx(conn, _row(found) if found else None)

    def secret(self, workload_id: uuid.UUID) -> WorkloadSecretRow | None:
        """Finds a workload by id alone: only the token exchange, which proves the secret."""
        with self._store.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "select id, org_id, secret_hash, grants, max_ttl_seconds, generation, revoked_at"
                " from workloads where id = %s",
                (workload_id,),
            )
            found = cur.fetchone()
        if found is None:
            return None
        return WorkloadSecretRow(
            **{**known_columns(WorkloadSecretRow, found), "grants": _grants(found["grants"])}
        )

    def record_refused_exchange(
        self, workload: WorkloadSecretRow, reason: str, source: str
    ) -> None:
        """Audits a refused exchange of the workload's token, on its own."""
        with self._store.transaction() as conn:
            audit.record(
                conn,
                org_id=workload.org_id,
                actor=audit.Actor(kind="workload", id=str(workload.id)),
                action="workload.token.exchange",
                target_type="workload",
                target_id=str(workload.id),
                outcome="failure",
                reason=reason,
                details={"source": source},
            )

    def changes_since(self, since: datetime) -> WorkloadChanges:
        """Workloads revoked, or whose grants changed, at or after ``since``."""
        with self._store.connection() as conn:
            rows = conn.execute(
                "select id, revoked_at, generation, grants_changed_at from workloads"
                " where revoked_at >= %s or grants_changed_at >= %s",
                (since, since),
            ).fetchall()
        return WorkloadChanges(
            revoked={str(row[0]): row[1] for row in rows if row[1] is not None and row[1] >= since},
            generations={
                str(row[0]): (row[2], row[3])
                for row in rows
                if row[3] is not None and row[3] >= since
            },
        )


class WorkloadChangeTx:
    """The statements of one change to a workload, inside its transaction."""

    def __init__(self, conn: psycopg.Connection[Any], workload: WorkloadRow | None) -> None:
        self._conn = conn
        self.workload = workload
        """The workload as it is now, locked; None when the org has no such workload."""

    def update(
        self,
        updated: WorkloadRow,
        actor: audit.Actor,
        action: str,
        details: Mapping[str, str] | None = None,
    ) -> WorkloadRow:
        """Stores ``updated`` (every changeable column) with its audit record; returns it."""
        with self._conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "update workloads set display_name = %s, description = %s, grants = %s,"
                " max_ttl_seconds = %s, updated_at = %s, generation = %s,"
                " grants_changed_at = %s, revoked_at = %s where id = %s returning *",
                (
                    updated.display_name,
                    updated.description,
                    _grants_json(updated.grants),
                    updated.max_ttl_seconds,
                    updated.updated_at,
                    updated.generation,
                    updated.grants_changed_at,
                    updated.revoked_at,
                    updated.id,
                ),
            )
            found = cur.fetchone()
        assert found is not None, "the workload row is locked by this transaction"
        stored = _row(found)
        _record(self._conn, stored, actor, action, details=details)
        return stored


def _record(
    conn: psycopg.Connection[Any],
    workload: WorkloadRow,
    actor: audit.Actor,
    action: str,
    *,
    details: Mapping[str, str] | None,
) -> None:
    audit.record(
        conn,
        org_id=workload.org_id,
        actor=actor,
        action=action,
        target_type="workload",
        target_id=str(workload.id),
        details=details,
    )
