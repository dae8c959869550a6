"""Stores read rows by the columns their dataclasses declare, so the next release may add one.

Under expand/contract the previous release keeps running while the next one's migration adds
columns; ``select *`` then returns them. Against a real Postgres.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.rows import class_row

from services.orchestrator.store import OrchestratorStore, RunRow
from sevvo.runtime.rows import dataclass_row, known_columns


@dataclasses.dataclass(frozen=True)
class Pair:
    """Two of a query's columns."""

    a: int
    b: str


def test_a_column_the_dataclass_does_not_declare_is_left_out(database_url: str) -> None:
    """An extra column is ignored where class_row fails; a missing declared one still fails."""
    with psycopg.connect(database_url) as conn:
        with conn.cursor(row_factory=dataclass_row(Pair)) as cur:
            cur.execute("select 1 as a, 'x' as b, now() as added_later")
            assert cur.fetchone() == Pair(1, "x")
        with conn.cursor(row_factory=class_row(Pair)) as cur:
            cur.execute("select 1 as a, 'x' as b, now() as added_later")
            with pytest.raises(TypeError):
                cur.fetchone()
        with conn.cursor(row_factory=dataclass_row(Pair)) as cur:
            cur.execute("select 1 as a")
            with pytest.raises(TypeError):
                cur.fetchone()


def test_known_columns_keeps_the_declared_entries() -> None:
    """A dict row loses the entries the dataclass does not declare, and only those."""
    assert known_columns(Pair, {"a": 1, "b": "x", "c": 2}) == {"a": 1, "b": "x"}


def test_the_orchestrator_reads_runs_after_a_later_release_adds_a_column(
    database_url: str,
) -> None:
    """Runs written and read by this release survive a column the next release adds."""
    store = OrchestratorStore(database_url)
    store.open()
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("alter table orchestrator.runs add column added_later text default 'x'")
            conn.execute("alter table orchestrator.payload_keys add column added_later int")
        org_id, run_id = uuid.uuid4(), uuid.uuid4()
        run = RunRow(
            id=run_id,
            org_id=org_id,
            kind="preview",
            state="running",
            connection_id=uuid.uuid4(),
            draft_id=None,
            workflow_id=f"preview-{run_id}",
            outcome_category=None,
            message=None,
            started_at=datetime.now(UTC),
            finished_at=None,
            duration_ms=None,
        )
        store.insert_run(run)
        assert store.get_run(org_id, run_id) == run
        assert [r.id for r in store.list_runs(org_id, 10, None)] == [run_id]
        assert store.payload_keys(org_id) == []
    finally:
        store.close()
