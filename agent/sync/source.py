"""The source side of every sync: one consistent, read-only session and the model's columns.

Shared by each destination's engine (agent/sync/postgres.py, agent/sync/parquet.py), so a
model's query is read, and its shape fingerprinted, the same way whatever it is written to.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from agent.sync.plan import Column, SyncFailed

Progress = Callable[[int], None]
Opener = Callable[[], psycopg.Connection[Any]]


def connect(target: str | Opener) -> psycopg.Connection[Any]:
    """A blocking connection from a conninfo, or from a callable that opens one."""
    return psycopg.connect(target) if isinstance(target, str) else target()


@contextlib.contextmanager
def source_session(source: str | Opener) -> Iterator[psycopg.Connection[Any]]:
    """The source, read in one READ ONLY, REPEATABLE READ transaction (one snapshot), its text
    forms pinned; closed after the ``with`` block."""
    with connect(source) as src:
        src.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        src.read_only = True
        pin_text_forms(src)
        yield src


# The high-water mark crosses from the destination (max(cursor)::text) to the source (a literal
# cast back to the column's type), and a value cast to text at the source lands in a file as
# is: every session spells values the same way whatever the databases' or roles' own settings,
# so a date or a float reads back as the value it was.
_TEXT_FORMS = {
    "datestyle": "ISO, YMD",
    "intervalstyle": "iso_8601",
    "timezone": "UTC",
    "extra_float_digits": "3",
}


def pin_text_forms(conn: psycopg.Connection[Any]) -> None:
    """Sets DateStyle, IntervalStyle, TimeZone and extra_float_digits for the session."""
    with conn.cursor() as cur:
        for name, value in _TEXT_FORMS.items():
            cur.execute("select set_config(%s, %s, false)", (name, value))
    conn.commit()


def result_columns(src: psycopg.Connection[Any], query: str) -> tuple[Column, ...]:
    """The query's columns and their types, from the source's own catalog."""
    return tuple(Column(c.name, c.type_sql) for c in typed_columns(src, query))


@dataclass(frozen=True)
class TypedColumn:
    """A result column with the type OID and modifier (-1: none) its result reports."""

    name: str
    type_sql: str
    oid: int
    mod: int


def typed_columns(src: psycopg.Connection[Any], query: str) -> tuple[TypedColumn, ...]:
    """The query's columns: names, ``format_type`` spellings, type OIDs and modifiers."""
    with src.cursor() as cur:
        cur.execute(sql.SQL("select * from ({}) as sevvo_model limit 0").format(sql.SQL(query)))
        result = cur.pgresult
        assert result is not None and cur.description is not None
        names = [c.name for c in cur.description]
        types = [result.ftype(i) for i in range(len(names))]
        mods = [result.fmod(i) for i in range(len(names))]
        cur.execute(
            "select format_type(t.oid, nullif(t.mod, -1)) from unnest(%s::oid[], %s::int[])"
            " with ordinality as t(oid, mod, n) order by t.n",
            (types, mods),
        )
        spelled = [row[0] for row in cur.fetchall()]
    if len(set(names)) != len(names):
        raise SyncFailed("invalid_model", "the model's query returns two columns of one name")
    return tuple(
        TypedColumn(n, t, o, m) for n, t, o, m in zip(names, spelled, types, mods, strict=True)
    )
