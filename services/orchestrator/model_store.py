"""Every SQL statement about models, on the orchestrator's store (its pool and schema).

Every query names the org, so a model of another org is never read, changed or deleted,
whatever id a caller sends. Each change commits together with its audit record.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import dict_row

from services.orchestrator.models import ModelRow
from services.orchestrator.store import OrchestratorStore
from sevvo.runtime import audit
from sevvo.runtime.errors import Aborted, AlreadyExists
from sevvo.runtime.rows import known_columns

# The columns a model is written with, in one place for insert and update.
_COLUMNS = (
    "id",
    "org_id",
    "name",
    "source_connection_id",
    "sql",
    "destination_connection_id",
    "destination_schema",
    "destination_table",
    "load_mode",
    "cursor_column",
    "primary_key",
    "allow_schema_evolution",
    "schedule_interval_seconds",
    "created_at",
    "updated_at",
    "schedule_set_at",
)
# What an update may change: everything but the ids and the creation time.
_UPDATED = tuple(c for c in _COLUMNS if c not in ("id", "org_id", "created_at"))
_SELECT = sql.SQL("select {} from models").format(sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)))
# What each unique index of models (0009_models.sql) protects: (message, reason).
_TAKEN = {
    "models_name_key": ("a model with this name already exists", "MODEL_NAME_TAKEN"),
    "models_destination_key": (
        "another model of the org already fills this destination table",
        "MODEL_DESTINATION_TAKEN",
    ),
}


def _values(row: ModelRow) -> dict[str, Any]:
    """A model's column values: the interval in whole seconds, the key as an array."""
    values = {c: getattr(row, c) for c in _COLUMNS if c != "schedule_interval_seconds"}
    interval = row.schedule_interval
    values["schedule_interval_seconds"] = int(interval.total_seconds()) if interval else None
    values["primary_key"] = list(row.primary_key)
    return values


def _row(record: dict[str, Any]) -> ModelRow:
    """A stored model from its columns: the interval back to a timedelta, the key to a tuple."""
    seconds = record["schedule_interval_seconds"]
    return ModelRow(
        **{
            **known_columns(ModelRow, record),
            "primary_key": tuple(record["primary_key"]),
            "schedule_interval": timedelta(seconds=seconds) if seconds is not None else None,
        }
    )


def _taken(error: pg_errors.UniqueViolation) -> AlreadyExists:
    """The unique rule a write broke, by the index Postgres names (never by its message)."""
    message, reason = _TAKEN.get(
        error.diag.constraint_name or "", ("a model with the same id already exists", "")
    )
    return AlreadyExists(message, reason=reason or None)


class ModelStore:
    """Data access for models, on the orchestrator's store."""

    def __init__(self, store: OrchestratorStore) -> None:
        self._store = store

    def insert(self, row: ModelRow, entry: audit.Entry) -> None:
        """Stores a new model and its audit record; a name or destination the org already
        uses is AlreadyExists."""
        values = _values(row)
        query = sql.SQL("insert into models ({}) values ({})").format(
            sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)),
            sql.SQL(", ").join(sql.Placeholder(c) for c in _COLUMNS),
        )
        try:
            with self._store.transaction() as conn:
                conn.execute(query, values)
                audit.append(conn, entry)
        except pg_errors.UniqueViolation as error:
            raise _taken(error) from None

    def get(self, org_id: uuid.UUID, model_id: uuid.UUID) -> ModelRow | None:
        """One model of one org."""
        with self._store.connection() as conn:
            return self._get(conn, org_id, model_id)

    @staticmethod
    def _get(
        conn: psycopg.Connection[Any], org_id: uuid.UUID, model_id: uuid.UUID
    ) -> ModelRow | None:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL("{} where org_id = %s and id = %s").format(_SELECT), (org_id, model_id)
            )
            record = cur.fetchone()
        return None if record is None else _row(record)

    def list_page(self, org_id: uuid.UUID, limit: int, after: str | None) -> list[ModelRow]:
        """Up to ``limit`` of an org's models by name, those after ``after`` when given."""
        where = (
            sql.SQL("where org_id = %s")
            if after is None
            else sql.SQL("where org_id = %s and name > %s")
        )
        params: tuple[Any, ...] = (org_id, limit) if after is None else (org_id, after, limit)
        with self._store.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql.SQL("{} {} order by name limit %s").format(_SELECT, where), params)
            return [_row(record) for record in cur.fetchall()]

    def update(self, row: ModelRow, seen: datetime, entry: audit.Entry) -> ModelRow | None:
        """Replaces a model's fields with ``row``'s, with its audit record, if the model is
        still as it was when read (its ``updated_at`` is ``seen``). None when the model is
        gone; Aborted when it changed meanwhile."""
        values = _values(row)
        query = sql.SQL(
            "update models set {} where org_id = %(org_id)s and id = %(id)s"
            " and updated_at = %(seen)s"
        ).format(
            sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(c)) for c in _UPDATED
            )
        )
        try:
            with self._store.transaction() as conn:
                if conn.execute(query, {**values, "seen": seen}).rowcount == 1:
                    audit.append(conn, entry)
                    return row
                if self._get(conn, row.org_id, row.id) is None:
                    return None
        except pg_errors.UniqueViolation as error:
            raise _taken(error) from None
        raise Aborted(
            "the model changed while this update was checked; read it again and retry",
            reason="MODEL_CHANGED",
        )

    def claim_due(self, now: datetime, limit: int) -> list[ModelRow]:
        """Claims the scheduled models whose latest time slot is due and unclaimed, across
        orgs; each slot is claimed by one caller only, whichever replica it is.

        A model is due once a whole interval has passed since its schedule was set; its slot
        is the latest such moment not after ``now``, so after downtime only the latest missed
        slot runs. Models another replica is claiming are skipped, not waited for.
        """
        with self._store.transaction() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "with due as ("
                "  select m.id, m.schedule_set_at + make_interval(secs =>"
                "    m.schedule_interval_seconds * floor(extract(epoch from"
                "    (%(now)s - m.schedule_set_at)) / m.schedule_interval_seconds)) as slot"
                "  from models m"
                "  where m.schedule_interval_seconds is not null"
                "    and m.schedule_set_at + make_interval(secs => m.schedule_interval_seconds)"
                "      <= %(now)s"
                "  order by m.schedule_set_at limit %(limit)s for update of m skip locked"
                ") insert into model_schedule_slots (model_id, slot)"
                " select id, slot from due"
                " on conflict (model_id) do update set slot = excluded.slot"
                " where model_schedule_slots.slot < excluded.slot"
                " returning model_id",
                {"now": now, "limit": limit},
            )
            claimed = [record["model_id"] for record in cur.fetchall()]
            if not claimed:
                return []
            cur.execute(sql.SQL("{} where id = any(%s)").format(_SELECT), (claimed,))
            return [_row(record) for record in cur.fetchall()]

    def delete(self, org_id: uuid.UUID, model_id: uuid.UUID, entry: audit.Entry) -> bool:
        """Deletes one model of one org with its audit record; False when there was none."""
        with self._store.transaction() as conn:
            deleted = conn.execute(
                "delete from models where org_id = %s and id = %s", (org_id, model_id)
            ).rowcount
            if deleted:
                audit.append(conn, entry)
            return deleted == 1
