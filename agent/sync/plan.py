"""What one sync does, and the only things it reports back."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from dataclasses import dataclass

from psycopg import sql


class LoadMode(enum.Enum):
    """How a sync writes the destination table."""

    # Replace the table's rows with the query's, all at once.
    FULL_REFRESH = "full_refresh"
    # Merge the rows past the cursor's high-water mark by primary key.
    INCREMENTAL = "incremental"


@dataclass(frozen=True)
class TableName:
    """A destination table, ``schema.name``."""

    schema: str
    name: str

    def identifier(self, suffix: str = "") -> sql.Identifier:
        """The quoted identifier, optionally of a sibling table named with ``suffix``."""
        return sql.Identifier(self.schema, self.name + suffix)

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Column:
    """A result column: its name and its type as the source spells it (``format_type``)."""

    name: str
    type_sql: str


def fingerprint(columns: tuple[Column, ...]) -> str:
    """A schema fingerprint: names and types in order, hashed (reports carry this, not names)."""
    text = "\n".join(f"{c.name}\t{c.type_sql}" for c in columns)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe_drift(before: tuple[Column, ...], now: tuple[Column, ...], made: str) -> str:
    """What changed since the destination ``made`` (a table, a file) was made, by column name
    and type (the model's shape, never its data)."""
    old = {c.name: c.type_sql for c in before}
    new = {c.name: c.type_sql for c in now}
    parts = [f"{name} dropped" for name in old if name not in new]
    parts += [f"{name} added" for name in new if name not in old]
    parts += [
        f"{name} retyped {old[name]} -> {new[name]}"
        for name in new
        if name in old and old[name] != new[name]
    ]
    if not parts:
        parts = ["columns reordered"]
    return (
        f"the source's columns changed since the destination {made} was made ("
        + ", ".join(parts)
        + f"); allow schema evolution on the model or change the {made}"
    )


@dataclass(frozen=True)
class SyncPlan:
    """One model's sync: its validated query, where it lands and how."""

    model_id: str
    query: str
    destination: TableName
    mode: LoadMode = LoadMode.FULL_REFRESH
    cursor_column: str | None = None
    primary_key: tuple[str, ...] = ()
    # Whether a source column dropped or retyped may change the destination table's shape.
    allow_schema_evolution: bool = False

    def __post_init__(self) -> None:
        if self.mode is LoadMode.INCREMENTAL and (not self.cursor_column or not self.primary_key):
            raise ValueError("an incremental sync needs a cursor column and a primary key")


@dataclass(frozen=True)
class SyncReport:
    """What a sync reports to the control plane. Every field is a count, a duration, a flag or
    a fingerprint: tests/test_sync_engine.py fails when a field of another type is added."""

    rows: int
    bytes: int
    duration_ms: int
    schema_fingerprint: str
    created_table: bool
    schema_changed: bool
    full_reload: bool


REPORT_FIELDS = tuple(f.name for f in dataclasses.fields(SyncReport))


class SyncFailed(Exception):
    """A sync that changed nothing in the destination, with a category and a safe message.

    Messages name columns and tables (the model's own definition), never a value, and never a
    database's own message, which can quote one.
    """

    def __init__(self, category: str, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.category = category
        self.message = message
        self.sqlstate = sqlstate
