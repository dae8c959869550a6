"""The append-only audit log: who did what to which resource, when, and whether it worked.

Services write a record in the same transaction as the change it describes, so a change and
its audit record exist together or not at all; refused attempts are recorded on their own.
Records hold ids, action names and stable reasons, never a secret.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from sevvo.runtime import migrations, paging
from sevvo.runtime.tokens import Principal

SCHEMA = "audit"
MIGRATIONS = Path(__file__).parent / "audit_migrations"


@dataclass(frozen=True)
class Actor:
    """Who acted: a user, an agent deployment, or the control plane itself."""

    kind: str
    id: str

    @classmethod
    def of(cls, principal: Principal) -> Actor:
        """The actor behind a verified caller."""
        return cls(kind=principal.kind.value, id=principal.subject_id)


SYSTEM = Actor(kind="system", id="sevvo")


@dataclass(frozen=True)
class AuditEvent:
    """One stored audit record."""

    id: uuid.UUID
    org_id: uuid.UUID
    occurred_at: datetime
    actor_kind: str
    actor_id: str
    action: str
    target_type: str
    target_id: str
    outcome: str
    reason: str | None
    details: dict[str, Any] = field(default_factory=dict)


def apply_migrations(conninfo: str) -> None:
    """Creates or updates the audit schema; every service that writes audit calls this."""
    migrations.apply(conninfo, SCHEMA, MIGRATIONS)


def record(
    conn: psycopg.Connection[Any],
    *,
    org_id: uuid.UUID | str,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: str,
    outcome: str = "success",
    reason: str | None = None,
    details: Mapping[str, str] | None = None,
) -> None:
    """Appends one record on ``conn``, inside whatever transaction the caller holds."""
    conn.execute(
        "insert into audit.events (id, org_id, actor_kind, actor_id, action, target_type,"
        " target_id, outcome, reason, details) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            uuid.uuid4(),
            org_id,
            actor.kind,
            actor.id,
            action,
            target_type,
            target_id,
            outcome,
            reason,
            Jsonb(dict(details or {})),
        ),
    )


def list_events(
    conn: psycopg.Connection[Any],
    org_id: uuid.UUID,
    *,
    limit: int,
    before: tuple[datetime, str] | None,
    target_id: str | None = None,
) -> list[AuditEvent]:
    """One page of an org's events, newest first, optionally about one target."""
    conditions = [sql.SQL("org_id = %s")]
    params: list[Any] = [org_id]
    if target_id:
        conditions.append(sql.SQL("target_id = %s"))
        params.append(target_id)
    if before is not None:
        conditions.append(sql.SQL("(occurred_at, id) < (%s, %s::uuid)"))
        params.extend(before)
    params.append(limit)
    query = sql.SQL(
        "select * from audit.events where {} order by occurred_at desc, id desc limit %s"
    ).format(sql.SQL(" and ").join(conditions))
    with conn.cursor(row_factory=class_row(AuditEvent)) as cur:
        cur.execute(query, params)
        return cur.fetchall()


def list_page(
    conn: psycopg.Connection[Any],
    org_id: uuid.UUID,
    page_size: int,
    page_token: str,
    target_id: str = "",
) -> tuple[list[AuditEvent], str]:
    """One page of an org's events for a List RPC, and the token for the next page."""
    limit = paging.page_size(page_size)
    events = list_events(
        conn,
        org_id,
        limit=limit + 1,
        before=paging.decode_cursor(page_token),
        target_id=target_id or None,
    )
    return paging.page_of(events, limit, lambda e: (e.occurred_at, e.id))
