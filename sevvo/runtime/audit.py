"""The append-only audit log: who did what to which resource, when, and whether it worked.

Services write a record in the same transaction as the change it describes, so a change and
its audit record exist together or not at all; refused attempts are recorded on their own.
Records hold ids, action names, stable reasons and the acting user's email, never a secret.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from sevvo.runtime import migrations, paging
from sevvo.runtime.errors import InvalidArgument
from sevvo.runtime.rows import dataclass_row
from sevvo.runtime.tokens import Principal
from sevvo.runtime.validation import has_control_characters

SCHEMA = "audit"
MIGRATIONS = Path(__file__).parent / "audit_migrations"
# Every service that writes audit records migrates (or checks) this schema before its own.
MIGRATION_SET = migrations.MigrationSet(SCHEMA, MIGRATIONS)
# Action names are lower_snake words joined by dots ("connection.credentials.resolve").
_ACTION_FILTER = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*\.?$")
MAX_FILTER_LENGTH = 200
# The longest address auth accepts (64 + 1 + 255 + 1 + 63); anything longer matches nothing.
MAX_EMAIL_LENGTH = 384


@dataclass(frozen=True)
class Actor:
    """Who acted: a user, an agent deployment, or the control plane itself.

    ``email`` is a user's address as their verified session names it, kept with the record
    so the log reads by person even after the user is deleted; "" for agents and the system.
    """

    kind: str
    id: str
    email: str = ""

    @classmethod
    def of(cls, principal: Principal) -> Actor:
        """The actor behind a verified caller."""
        return cls(kind=principal.kind.value, id=principal.subject_id, email=principal.email or "")


SYSTEM = Actor(kind="system", id="sevvo")


@dataclass(frozen=True)
class Entry:
    """One record to append: what a domain decides, written by a store in its transaction."""

    org_id: uuid.UUID | str
    actor: Actor
    action: str
    target_type: str
    target_id: str
    outcome: str = "success"
    reason: str | None = None
    details: Mapping[str, str] = field(default_factory=dict)


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
    # None for records written before emails were kept, and for agents and the system.
    actor_email: str | None = None


@dataclass(frozen=True)
class Filter:
    """Which events a List asks for; every set field must match. Build with ``make_filter``.

    ``action`` matches exactly, or, when it ends with a dot ("connection."), as a prefix.
    ``start`` is inclusive and ``end`` exclusive.
    """

    action: str = ""
    actor_id: str = ""
    actor_email: str = ""
    target_id: str = ""
    start: datetime | None = None
    end: datetime | None = None

    def scope(self) -> str:
        """A short digest of the filter that page tokens carry; "" when nothing is filtered.

        A token used with other filters would silently skip or repeat events, so it is
        refused instead (see ``list_page``).
        """
        if self == Filter():
            return ""
        values = {
            k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()
        }
        digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()
        return digest[:16]


def _text_filter(name: str, value: str, limit: int = MAX_FILTER_LENGTH) -> str:
    value = value.strip()
    if len(value) > limit:
        raise InvalidArgument(name, f"must be at most {limit} characters")
    if has_control_characters(value) or any(ch.isspace() for ch in value):
        raise InvalidArgument(name, "must not contain spaces, control or invisible characters")
    return value


def make_filter(
    *,
    action: str = "",
    actor_id: str = "",
    actor_email: str = "",
    target_id: str = "",
    start: datetime | None = None,
    end: datetime | None = None,
) -> Filter:
    """Checks a List's filters and returns them; InvalidArgument names the first bad one."""
    action = _text_filter("action", action)
    if action and not _ACTION_FILTER.match(action):
        raise InvalidArgument(
            "action",
            "must be an action such as connection.create, or a prefix ending in a dot such as"
            " connection. (lower-case letters, digits, _ and dots)",
        )
    actor_id = _text_filter("actor_id", actor_id).lower()
    if actor_id and actor_id != SYSTEM.id:
        try:
            actor_id = str(uuid.UUID(actor_id))
        except ValueError:
            raise InvalidArgument(
                "actor_id",
                f"must be a user's or deployment's id (a UUID), or {SYSTEM.id} for the control"
                " plane; to name a user by email, set actor_email",
            ) from None
    actor_email = _text_filter("actor_email", actor_email, MAX_EMAIL_LENGTH).lower()
    if actor_email and actor_email.count("@") != 1:
        raise InvalidArgument("actor_email", "must be an email address such as ada@example.com")
    target_id = _text_filter("target_id", target_id)
    for name, when in (("start_time", start), ("end_time", end)):
        if when is not None and when.utcoffset() is None:
            raise InvalidArgument(name, "must carry a time zone")
    # In UTC, so one moment is one filter (and one page token scope) however it was written.
    start = start.astimezone(UTC) if start is not None else None
    end = end.astimezone(UTC) if end is not None else None
    if start is not None and end is not None and start >= end:
        raise InvalidArgument(
            "end_time", "must be after start_time (start is inclusive, end exclusive)"
        )
    return Filter(action, actor_id, actor_email, target_id, start, end)


def statement_details(sql: str) -> dict[str, str]:
    """What the audit log keeps of a user's SQL (a preview's, a model's): its length and
    digest, never its text.

    The text can hold literals (a customer's email in a WHERE clause). A digest tells the same
    statement again; guessing a literal from it reveals nothing an admin, the only reader of
    the log, could not preview for themself.
    """
    raw = sql.encode()
    return {"sql_bytes": str(len(raw)), "sql_sha256": hashlib.sha256(raw).hexdigest()}


def append(conn: psycopg.Connection[Any], entry: Entry) -> None:
    """Appends one record on ``conn``, inside whatever transaction the caller holds."""
    conn.execute(
        "insert into audit.events (id, org_id, actor_kind, actor_id, actor_email, action,"
        " target_type, target_id, outcome, reason, details)"
        " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            uuid.uuid4(),
            entry.org_id,
            entry.actor.kind,
            entry.actor.id,
            entry.actor.email or None,
            entry.action,
            entry.target_type,
            entry.target_id,
            entry.outcome,
            entry.reason,
            Jsonb(dict(entry.details)),
        ),
    )


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
    append(
        conn,
        Entry(org_id, actor, action, target_type, target_id, outcome, reason, dict(details or {})),
    )


def _like_prefix(prefix: str) -> str:
    # Action names hold "_", a LIKE wildcard: escaped, so "user.sign_" is no pattern.
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def list_events(
    conn: psycopg.Connection[Any],
    org_id: uuid.UUID,
    *,
    limit: int,
    before: tuple[datetime, str] | None,
    target_id: str | None = None,
    where: Filter | None = None,
) -> list[AuditEvent]:
    """One page of an org's events, newest first, that match ``where`` (and ``target_id``)."""
    where = where or Filter()
    conditions: list[sql.Composable] = [sql.SQL("org_id = %s")]
    params: list[Any] = [org_id]
    for column, value in (
        ("target_id", target_id or where.target_id),
        ("actor_id", where.actor_id),
        ("actor_email", where.actor_email),
    ):
        if value:
            conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if where.action.endswith("."):
        conditions.append(sql.SQL("action like %s"))
        params.append(_like_prefix(where.action))
    elif where.action:
        conditions.append(sql.SQL("action = %s"))
        params.append(where.action)
    if where.start is not None:
        conditions.append(sql.SQL("occurred_at >= %s"))
        params.append(where.start)
    if where.end is not None:
        conditions.append(sql.SQL("occurred_at < %s"))
        params.append(where.end)
    if before is not None:
        conditions.append(sql.SQL("(occurred_at, id) < (%s, %s::uuid)"))
        params.extend(before)
    params.append(limit)
    query = sql.SQL(
        "select * from audit.events where {} order by occurred_at desc, id desc limit %s"
    ).format(sql.SQL(" and ").join(conditions))
    with conn.cursor(row_factory=dataclass_row(AuditEvent)) as cur:
        cur.execute(query, params)
        return cur.fetchall()


def list_page(
    conn: psycopg.Connection[Any],
    org_id: uuid.UUID,
    page_size: int,
    page_token: str,
    where: Filter | None = None,
) -> tuple[list[AuditEvent], str]:
    """One page of an org's matching events for a List RPC, and the token for the next page.

    A page token is valid only with the filters of the page that returned it.
    """
    where = where or Filter()
    limit = paging.page_size(page_size)
    events = list_events(
        conn,
        org_id,
        limit=limit + 1,
        before=paging.decode_cursor(page_token, scope=where.scope()),
        where=where,
    )
    return paging.page_of(events, limit, lambda e: (e.occurred_at, e.id), scope=where.scope())
