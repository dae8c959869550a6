"""The rows of a query as a count and one digest, to compare a sync's two sides."""

from __future__ import annotations

import psycopg
from psycopg import sql


def checksum(url: str, query: str) -> tuple[int, str]:
    """``query``'s row count and the MD5 of its rows' text forms in ``id`` order.

    Both sides spell values alike (ISO dates, UTC), whatever the database's own settings.
    """
    with psycopg.connect(url) as conn:
        conn.execute("set datestyle = 'ISO, YMD'")
        conn.execute("set timezone = 'UTC'")
        row = conn.execute(
            sql.SQL(
                "select count(*), md5(coalesce(string_agg(t::text, '|' order by t.id), ''))"
                " from ({}) t"
            ).format(sql.SQL(query))
        ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])
