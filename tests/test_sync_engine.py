"""The agent's sync engine (agent/sync): a model's rows from a source Postgres into a destination.

Two real databases on the test server: the customer's source and their destination. Rows are
compared by checksum of their text form, on both sides.
"""

from __future__ import annotations

import dataclasses
import secrets
import subprocess
import sys
import threading
import time
import typing
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from agent.sync.plan import (
    REPORT_FIELDS,
    LoadMode,
    SyncFailed,
    SyncPlan,
    SyncReport,
    TableName,
)
from agent.sync.postgres import STATE_SCHEMA, sync
from tests.plugins.postgres import fresh_database
from tests.row_checksum import checksum

CANARY = "canary-value-7f3a"
ROWS = 2_000
TABLE = TableName("analytics", "orders")
QUERY = "select id, note, amount, placed_at, doc, raw, tags, updated_at from public.orders"


@pytest.fixture
def source(database_url: str) -> str:
    """The customer's source database with an ``orders`` table of every kind of value."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "create table orders (id bigint primary key, note text, amount numeric(12, 2),"
            " placed_at timestamptz, doc jsonb, raw bytea, tags text[],"
            " updated_at timestamptz not null default now())"
        )
        conn.execute(
            "insert into orders (id, note, amount, placed_at, doc, raw, tags, updated_at)"
            " select g, case when g %% 7 = 0 then null else %s || g end, g * 1.25,"
            " '2026-01-01'::timestamptz + g * interval '1 minute',"
            " jsonb_build_object('n', g, 'even', g %% 2 = 0),"
            " case when g %% 5 = 0 then null else decode(md5(g::text), 'hex') end,"
            " array['a' || g, null, 'b'], '2026-01-01'::timestamptz + g * interval '1 second'"
            " from generate_series(1, %s) g",
            (CANARY, ROWS),
        )
    return database_url


@pytest.fixture
def destination(pg_server_url: str) -> Iterator[str]:
    """The customer's destination database, empty."""
    with fresh_database(pg_server_url) as url:
        yield url


def _destination_rows(url: str) -> tuple[int, str]:
    return checksum(url, f"select * from {TABLE}")


def _run(source: str, destination: str, **plan: typing.Any) -> SyncReport:
    return sync(source, destination, SyncPlan("model-1", plan.pop("query", QUERY), TABLE, **plan))


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select table_schema || '.' || table_name from information_schema.tables"
            " where table_schema not in ('pg_catalog', 'information_schema')"
        ).fetchall()
    return {r[0] for r in rows}


def test_a_full_refresh_copies_every_kind_of_value_exactly(source: str, destination: str) -> None:
    """Text, numeric, timestamptz, jsonb, bytea, arrays and nulls arrive identical; the table
    is created from the source's types; the report is counts only."""
    report = _run(source, destination)
    assert _destination_rows(destination) == checksum(source, QUERY)
    assert (report.rows, report.created_table, report.full_reload) == (ROWS, True, True)
    assert report.bytes > 0 and not report.schema_changed
    with psycopg.connect(destination) as conn:
        types = conn.execute(
            "select format_type(atttypid, atttypmod) from pg_attribute"
            " where attrelid = 'analytics.orders'::regclass and attnum > 0 order by attnum"
        ).fetchall()
    assert [t[0] for t in types] == [
        "bigint",
        "text",
        "numeric(12,2)",
        "timestamp with time zone",
        "jsonb",
        "bytea",
        "text[]",
        "timestamp with time zone",
    ]


def test_a_second_full_refresh_replaces_the_rows_and_leaves_no_staging(
    source: str, destination: str
) -> None:
    """Rows deleted and changed at the source are gone and changed in the destination, and
    the new rows landed frozen: most pages already all-visible, so VACUUM skips them."""
    _run(source, destination)
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("delete from orders where id % 3 = 0")
        conn.execute("update orders set amount = amount + 1 where id % 10 = 1")
    report = _run(source, destination)
    assert _destination_rows(destination) == checksum(source, QUERY)
    assert (report.rows, report.created_table) == (ROWS - ROWS // 3, False)
    assert _tables(destination) == {str(TABLE)}
    with psycopg.connect(destination, autocommit=True) as conn:
        conn.execute(f"analyze {TABLE}")  # Counts the visibility map's all-visible pages.
        pages, visible = conn.execute(
            "select relpages, relallvisible from pg_class where oid = %s::regclass", (str(TABLE),)
        ).fetchone() or (0, 0)
    # COPY FREEZE marks the pages a batch of rows starts empty; one a batch ends in midway is
    # left to VACUUM. Loaded unfrozen, no page would be all-visible before a VACUUM.
    assert pages > 0 and visible >= pages // 2


def _relation(url: str, name: str) -> tuple[int, str | None]:
    """A relation's OID and its grants, as the catalog holds them."""
    with psycopg.connect(url) as conn:
        found = conn.execute(
            "select oid::int, relacl::text from pg_class where oid = %s::regclass", (name,)
        ).fetchone()
    assert found is not None
    return found[0], found[1]


def test_a_full_refresh_keeps_the_customers_grants_views_indexes_and_comments(
    source: str, destination: str
) -> None:
    """A destination table the customer built on (a grant, a view, an index, a comment) keeps
    its identity across full refreshes: its rows are replaced in place, nothing else is lost,
    and no staging table is left."""
    _run(source, destination)
    with psycopg.connect(destination, autocommit=True) as conn:
        conn.execute(f"grant select on {TABLE} to public")
        conn.execute(f"create view analytics.big_orders as select id from {TABLE} where id > 10")
        conn.execute(f"create index orders_amount on {TABLE} (amount)")
        conn.execute(f"comment on table {TABLE} is 'synced by sevvo'")
    before = _relation(destination, str(TABLE))
    assert before[1] is not None and "=r/" in before[1]  # PUBLIC may read
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("delete from orders where id % 4 = 0")
        conn.execute("update orders set amount = amount + 1 where id % 10 = 1")
    report = _run(source, destination)
    assert (report.rows, report.created_table) == (ROWS - ROWS // 4, False)
    assert _destination_rows(destination) == checksum(source, QUERY)
    assert _relation(destination, str(TABLE)) == before
    with psycopg.connect(destination) as conn:
        (viewed,) = conn.execute("select count(*) from analytics.big_orders").fetchone() or (0,)
        (indexes,) = conn.execute(
            "select count(*) from pg_indexes where indexname = 'orders_amount'"
        ).fetchone() or (0,)
    assert viewed == ROWS - ROWS // 4 - 8 and indexes == 1  # 8 of ids 1..10 are left
    assert _tables(destination) == {str(TABLE), "analytics.big_orders"}


def test_a_table_other_tables_reference_or_a_view_on_a_changed_shape_fails_clearly(
    source: str, destination: str
) -> None:
    """Rows another table's foreign key points at cannot be replaced wholesale, and a view
    cannot follow a table that changes shape: both refused with a message that says what to
    do, the destination unchanged."""
    keyed = {"primary_key": ("id",)}
    _run(source, destination, **keyed)
    before = _destination_rows(destination)
    with psycopg.connect(destination, autocommit=True) as conn:
        conn.execute(f"create table analytics.lines (order_id bigint references {TABLE} (id))")
    with pytest.raises(SyncFailed) as failed:
        _run(source, destination, **keyed)
    assert failed.value.category == "destination_failed"
    assert "foreign keys reference analytics.orders" in failed.value.message
    with psycopg.connect(destination, autocommit=True) as conn:
        conn.execute("drop table analytics.lines")
        conn.execute(f"create view analytics.notes as select note from {TABLE}")
    narrower = QUERY.replace(" raw,", "")
    with pytest.raises(SyncFailed) as failed:
        _run(source, destination, query=narrower, allow_schema_evolution=True, **keyed)
    assert (failed.value.category, failed.value.sqlstate) == ("schema_changed", "2BP01")
    assert "views or other objects depend on it" in failed.value.message
    assert _destination_rows(destination) == before
    assert _tables(destination) == {str(TABLE), "analytics.notes"}


def test_a_loader_that_owns_its_schemas_but_may_not_create_schemas_syncs(
    source: str, destination: str
) -> None:
    """The user's guide's loader role: it owns the model's schema and sevvo_sync, and has no
    CREATE on the database. Incremental runs, the first and the next, find what exists and
    create only what is missing (the state table)."""
    role = f"loader_{uuid.uuid4().hex[:12]}"
    password = secrets.token_urlsafe(16)
    with psycopg.connect(destination, autocommit=True) as conn:
        conn.execute(
            sql.SQL("create role {} login password {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        conn.execute(
            sql.SQL("revoke create on database {} from public").format(
                sql.Identifier(conn.info.dbname)
            )
        )
        for schema in (TABLE.schema, STATE_SCHEMA):
            conn.execute(
                sql.SQL("create schema {} authorization {}").format(
                    sql.Identifier(schema), sql.Identifier(role)
                )
            )
    loader = psycopg.conninfo.make_conninfo(destination, user=role, password=password)
    incremental = {
        "mode": LoadMode.INCREMENTAL,
        "cursor_column": "updated_at",
        "primary_key": ("id",),
    }
    try:
        assert _run(source, loader, **incremental).rows == ROWS
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute("update orders set note = 'again', updated_at = now() where id <= 5")
        assert _run(source, loader, **incremental).rows == 5
        assert _destination_rows(destination) == checksum(source, QUERY)
    finally:
        with psycopg.connect(destination, autocommit=True) as conn:
            conn.execute(sql.SQL("drop owned by {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


def test_a_run_that_fails_midway_leaves_the_destination_as_it_was(
    source: str, destination: str
) -> None:
    """The source query fails after streaming half its rows: the destination keeps the last
    complete data, no staging table is left, and the error quotes no value."""
    _run(source, destination)
    before = _destination_rows(destination)
    failing = QUERY.replace("note,", f"note || (1 / (id - {ROWS // 2}))::text as note,")
    with pytest.raises(SyncFailed) as failed:
        _run(source, destination, query=failing)
    assert (failed.value.category, failed.value.sqlstate) == ("source_query_failed", "22012")
    assert CANARY not in str(failed.value)
    assert _destination_rows(destination) == before
    assert _tables(destination) == {str(TABLE)}


def _primary_key(url: str, table: TableName) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select a.attname from pg_index i join pg_attribute a"
            " on a.attrelid = i.indrelid and a.attnum = any(i.indkey)"
            " where i.indrelid = %s::regclass and i.indisprimary order by a.attnum",
            (str(table),),
        ).fetchall()
    return [r[0] for r in rows]


def test_a_full_refresh_keys_its_table_and_fails_cleanly_on_a_repeated_key(
    source: str, destination: str
) -> None:
    """The model's primary key, added to the loaded table after its rows, is on the table the
    swap puts in place; rows that repeat a key (or leave it null) fail the run, quote no value
    and leave the destination as it was."""
    _run(source, destination, primary_key=("id",))
    assert _primary_key(destination, TABLE) == ["id"]
    before = _destination_rows(destination)
    null_key = (
        f"{QUERY} union all select null, note, amount, placed_at, doc, raw, tags, updated_at"
        " from orders where id = 7"
    )
    repeated_key = f"{QUERY} union all {QUERY} where id = 7"
    for broken, sqlstate in ((repeated_key, "23505"), (null_key, "23502")):
        with pytest.raises(SyncFailed) as failed:
            _run(source, destination, query=broken, primary_key=("id",))
        assert (failed.value.category, failed.value.sqlstate) == ("destination_failed", sqlstate)
        assert CANARY not in str(failed.value) and "7" not in str(failed.value)
        assert _destination_rows(destination) == before
        assert _tables(destination) == {str(TABLE)}
    _run(source, destination, primary_key=("id",))
    assert _primary_key(destination, TABLE) == ["id"]


def test_a_first_run_that_fails_leaves_no_schema_behind(source: str, destination: str) -> None:
    """The schemas a first incremental run creates (its table's and the state's) go with its
    failure: the destination is as it was, not one empty schema richer."""
    failing = QUERY.replace("note,", f"note || (1 / (id - {ROWS // 2}))::text as note,")
    with pytest.raises(SyncFailed):
        _run(
            source,
            destination,
            query=failing,
            mode=LoadMode.INCREMENTAL,
            cursor_column="updated_at",
            primary_key=("id",),
        )
    with psycopg.connect(destination) as conn:
        found = conn.execute(
            "select nspname from pg_namespace where nspname = any(%s)",
            ([TABLE.schema, STATE_SCHEMA],),
        ).fetchall()
    assert found == []


def test_an_incremental_sync_merges_exactly_the_new_and_changed_rows(
    source: str, destination: str
) -> None:
    """After a first full load, inserts and updates at the source (their cursor moved) are
    merged by primary key; a run with nothing new moves nothing; the mark stays in the
    destination."""
    incremental = {
        "mode": LoadMode.INCREMENTAL,
        "cursor_column": "updated_at",
        "primary_key": ("id",),
    }
    first = _run(source, destination, **incremental)
    assert (first.rows, first.full_reload) == (ROWS, True)
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(
            "insert into orders (id, note, updated_at) select g, 'new', now()"
            " from generate_series(%s::int, %s::int) g",
            (ROWS + 1, ROWS + 100),
        )
        conn.execute(
            "update orders set note = 'changed', updated_at = now() where id between 1 and 10"
        )
    second = _run(source, destination, **incremental)
    assert (second.rows, second.full_reload) == (110, False)
    assert _destination_rows(destination) == checksum(source, QUERY)
    third = _run(source, destination, **incremental)
    assert third.rows == 0
    with psycopg.connect(destination) as conn:
        marks = conn.execute(
            sql.SQL("select count(*) from {}").format(sql.Identifier(STATE_SCHEMA, "sync_state"))
        ).fetchone()
    assert marks == (1,)


def test_a_dropped_source_column_fails_clearly_unless_evolution_is_allowed(
    source: str, destination: str
) -> None:
    """Schema drift names the column and changes nothing; allowed, the table takes the new
    shape and the run says the schema changed."""
    _run(source, destination)
    before = _destination_rows(destination)
    narrower = QUERY.replace(" raw,", "")
    with pytest.raises(SyncFailed) as failed:
        _run(source, destination, query=narrower)
    assert failed.value.category == "schema_changed"
    assert "raw dropped" in failed.value.message
    assert _destination_rows(destination) == before
    evolved = _run(source, destination, query=narrower, allow_schema_evolution=True)
    assert evolved.schema_changed
    assert _destination_rows(destination) == checksum(source, narrower)


def test_the_report_is_an_allow_list_of_counts_flags_and_a_fingerprint() -> None:
    """A field that could carry row content (text other than the fingerprint, bytes, a list)
    cannot be added to the report unnoticed."""
    hints = typing.get_type_hints(SyncReport)
    assert tuple(f.name for f in dataclasses.fields(SyncReport)) == REPORT_FIELDS
    assert {name: hints[name] for name in REPORT_FIELDS} == {
        "rows": int,
        "bytes": int,
        "duration_ms": int,
        "schema_fingerprint": str,
        "created_table": bool,
        "schema_changed": bool,
        "full_reload": bool,
    }


BIG_ROWS = 300_000
BIG_QUERY = "select id, payload, updated_at from public.events"


@pytest.fixture
def big_source(database_url: str) -> str:
    """A source with enough rows (~40 MB of COPY) for a sync to be caught mid-stream."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "create table events (id bigint primary key, payload text, updated_at date not null)"
        )
        conn.execute(
            "insert into events select g, repeat(md5(g::text), 3), date '2026-01-01' + g / 1000"
            " from generate_series(1, %s) g",
            (BIG_ROWS,),
        )
    return database_url


def test_the_agents_other_threads_run_while_the_source_computes(
    source: str, destination: str
) -> None:
    """A source that takes a while before its first row (a sort, an aggregate) does not stop
    the agent's process: its Temporal heartbeats and other work go on in other threads. The
    sync once waited in libpq holding the GIL, and every other thread stood still."""
    slow = QUERY.replace("from public.orders", "from public.orders, pg_sleep(1.5)")
    stop, gaps = threading.Event(), []

    def tick() -> None:
        last = time.monotonic()
        while not stop.wait(0.01):
            gaps.append(time.monotonic() - last)
            last = time.monotonic()

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        report = _run(source, destination, query=slow)
    finally:
        stop.set()
        ticker.join()
    assert report.rows == ROWS
    assert max(gaps) < 0.5, f"the other thread stood still for {max(gaps):.2f} s"


_KILLED_CHILD = """
import sys, time
from pathlib import Path
from agent.sync.plan import SyncPlan, TableName
from agent.sync.postgres import sync
def progress(done):
    # Written beside and renamed, so the test never reads the marker half-written.
    marker = Path(sys.argv[3])
    marker.with_suffix(".tmp").write_text(str(done))
    marker.with_suffix(".tmp").rename(marker)
    time.sleep(60)  # Killed here, mid-COPY, its destination transaction open.
sync(sys.argv[1], sys.argv[2], SyncPlan("model-1", sys.argv[4], TableName("analytics", "orders")),
     progress=progress)
"""


def test_a_sync_killed_mid_stream_leaves_the_last_complete_data_and_a_retry_completes(
    big_source: str, destination: str, tmp_path: Path
) -> None:
    """SIGKILL while the rows stream: the destination still holds the previous complete load,
    nothing half-written and no staging table; the retried run completes."""
    small = "select * from public.events where id <= 100"
    sync(big_source, destination, SyncPlan("model-1", small, TABLE))
    before = _destination_rows(destination)
    assert before[0] == 100
    for _ in range(2):
        marker = tmp_path / "streaming"
        marker.unlink(missing_ok=True)
        child = subprocess.Popen(
            [sys.executable, "-c", _KILLED_CHILD, big_source, destination, str(marker), BIG_QUERY]
        )
        try:
            deadline = time.monotonic() + 60
            while not marker.exists():
                assert child.poll() is None, "the sync ended before it could be killed"
                assert time.monotonic() < deadline, "the sync never started streaming"
                time.sleep(0.05)
            assert int(marker.read_text()) > 0
        finally:
            child.kill()
            child.wait()
        assert _destination_rows(destination) == before
        assert _tables(destination) == {str(TABLE)}
    retried = sync(big_source, destination, SyncPlan("model-1", BIG_QUERY, TABLE))
    assert retried.rows == BIG_ROWS
    assert _destination_rows(destination) == checksum(big_source, BIG_QUERY)


def test_two_runs_of_one_model_never_overlap(big_source: str, destination: str) -> None:
    """A second run of the same model waits for the first's destination transaction (an
    advisory lock on the model) instead of loading beside it; both complete."""
    paused, release = threading.Event(), threading.Event()

    def hold(done: int) -> None:
        paused.set()
        release.wait(30)

    plan = SyncPlan("model-1", BIG_QUERY, TABLE)
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(sync, big_source, destination, plan, progress=hold)
        assert paused.wait(30)
        second = pool.submit(sync, big_source, destination, plan)
        deadline = time.monotonic() + 30
        with psycopg.connect(destination) as conn:
            while True:
                waiting = conn.execute(
                    "select count(*) from pg_locks where locktype = 'advisory' and not granted"
                ).fetchone()
                conn.rollback()
                if waiting == (1,):
                    break
                assert time.monotonic() < deadline, "the second run did not wait for the first"
                time.sleep(0.05)
        assert not second.done()
        release.set()
        assert first.result(60).rows == BIG_ROWS
        assert second.result(60).rows == BIG_ROWS
    assert _destination_rows(destination) == checksum(big_source, BIG_QUERY)


def test_the_mark_reads_back_whatever_the_databases_date_style(
    big_source: str, destination: str
) -> None:
    """A date cursor's mark, written by a destination whose default DateStyle is DMY and read by
    a source session, selects exactly the rows past it."""
    with psycopg.connect(destination, autocommit=True) as conn:
        name = conn.info.dbname
        conn.execute(
            sql.SQL("alter database {} set datestyle = 'SQL, DMY'").format(sql.Identifier(name))
        )
    with psycopg.connect(big_source, autocommit=True) as conn:
        conn.execute(
            sql.SQL("alter database {} set datestyle = 'SQL, MDY'").format(
                sql.Identifier(conn.info.dbname)
            )
        )
    plan = SyncPlan(
        "model-1",
        BIG_QUERY,
        TABLE,
        mode=LoadMode.INCREMENTAL,
        cursor_column="updated_at",
        primary_key=("id",),
    )
    assert sync(big_source, destination, plan).rows == BIG_ROWS
    with psycopg.connect(big_source, autocommit=True) as conn:
        conn.execute("update events set updated_at = date '2027-03-04' where id <= 5")
    assert sync(big_source, destination, plan).rows == 5
    assert _destination_rows(destination) == checksum(big_source, BIG_QUERY)


def test_syncs_of_several_models_into_one_new_schema_at_once_all_complete(
    source: str, destination: str
) -> None:
    """Models of one org load different tables of one schema side by side: the first of them
    creates the schema (and the state table), and the others do not fail on the race."""
    plans = [
        SyncPlan(
            f"model-{n}",
            QUERY,
            TableName("analytics", f"orders_{n}"),
            LoadMode.INCREMENTAL,
            "updated_at",
            ("id",),
        )
        for n in range(4)
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        reports = list(pool.map(lambda plan: sync(source, destination, plan), plans))
    assert [report.rows for report in reports] == [ROWS] * 4
