"""End to end: a model synced by a real agent from a source Postgres into a destination Postgres.

The control plane holds the model's definition and learns counts; the rows go from one
database to the other inside the agent. Canary values in the rows are looked for wherever the
control plane or Temporal could have kept them.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import psycopg
import pytest
from google.protobuf.duration_pb2 import Duration
from psycopg import sql
from structlog.testing import capture_logs
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from devstack.postgres import EmbeddedPostgres
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.orchestrator.v1 import models_pb2 as mpb
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.runtime.temporal import namespace_for
from tests.plugins.auth_stack import BackgroundLoop
from tests.plugins.dev_stack import EndToEnd, Tenant
from tests.plugins.postgres import with_dbname
from tests.row_checksum import checksum

CANARY = "canary-row-value-5e1f"
CURSOR_CANARY = "2031-07-04 05:06:07.654321+00"
ROWS = 1_000_000
QUERY = "select id, note, amount, placed_at, doc, raw, tags, updated_at from public.events"


@dataclass
class Warehouse:
    """A tenant with its agent, a source database and a destination, and a connection each."""

    tenant: Tenant
    source_url: str
    destination_url: str
    source_id: str
    destination_id: str


def _create_database(admin_url: str, database: str, owner: str, password: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("create role {} login password {}").format(
                sql.Identifier(owner), sql.Literal(password)
            )
        )
        admin.execute(
            sql.SQL("create database {} owner {}").format(
                sql.Identifier(database), sql.Identifier(owner)
            )
        )
    return with_dbname(admin_url, database)


def _connection(
    e2e: EndToEnd, tenant: Tenant, name: str, port: int, database: str, user: str, password: str
) -> str:
    created: cpb.Connection = e2e.connections(tenant.admin_token).CreateConnection(
        cpb.CreateConnectionRequest(
            display_name=name,
            fields=cpb.PostgresFields(
                host="localhost",
                port=port,
                database=database,
                username=user,
                password=password,
                ssl_mode=cpb.SSL_MODE_REQUIRE,
            ),
        )
    )
    return created.id


@pytest.fixture(scope="module")
def warehouse(e2e: EndToEnd, tls_source_pg: EmbeddedPostgres) -> Iterator[Warehouse]:
    """One tenant and two databases on the TLS server: ``events`` at the source (every kind of
    value, canaries in a text column and in the cursor column), nothing at the destination."""
    tenant = e2e.new_tenant()
    suffix = uuid.uuid4().hex[:10]
    reader, writer = f"reader_{suffix}", f"writer_{suffix}"
    source_db, destination_db = f"shop_{suffix}", f"warehouse_{suffix}"
    reader_password, writer_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    admin = tls_source_pg.url
    try:
        source_url = _create_database(admin, source_db, f"owner_{suffix}", secrets.token_hex(8))
        with psycopg.connect(source_url, autocommit=True) as conn:
            conn.execute(
                "create table events (id bigint primary key, note text, amount numeric(12, 2),"
                " placed_at timestamptz, doc jsonb, raw bytea, tags text[],"
                " updated_at timestamptz not null)"
            )
            conn.execute(
                "insert into events select g, case when g %% 9 = 0 then null"
                " else %s || ' ' || g end, g * 1.5,"
                " '2026-01-01'::timestamptz + g * interval '1 minute',"
                " jsonb_build_object('n', g), decode(md5(g::text), 'hex'),"
                " array['t' || g, null], '2026-02-01'::timestamptz + g * interval '1 second'"
                " from generate_series(1, %s) g",
                (CANARY, ROWS),
            )
            # The greatest cursor value, which becomes the high-water mark, is a canary too.
            conn.execute("update events set updated_at = %s where id = %s", (CURSOR_CANARY, ROWS))
            conn.execute(
                sql.SQL("create role {} login password {}").format(
                    sql.Identifier(reader), sql.Literal(reader_password)
                )
            )
            conn.execute(sql.SQL("grant select on events to {}").format(sql.Identifier(reader)))
        destination_url = _create_database(admin, destination_db, writer, writer_password)
        yield Warehouse(
            tenant,
            source_url,
            destination_url,
            _connection(
                e2e, tenant, "shop", tls_source_pg.port, source_db, reader, reader_password
            ),
            _connection(
                e2e,
                tenant,
                "warehouse",
                tls_source_pg.port,
                destination_db,
                writer,
                writer_password,
            ),
        )
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for database in (source_db, destination_db):
                conn.execute(
                    sql.SQL("drop database if exists {} with (force)").format(
                        sql.Identifier(database)
                    )
                )
            for role in (reader, writer, f"owner_{suffix}"):
                conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))


def _model(w: Warehouse, name: str, **fields: object) -> mpb.Model:
    model = mpb.Model(
        name=name,
        source_connection_id=w.source_id,
        sql=QUERY,
        destination_connection_id=w.destination_id,
        destination_table=f"analytics.{name.replace('-', '_')}",
        load_mode=mpb.LOAD_MODE_FULL_REFRESH,
    )
    for key, value in fields.items():
        if isinstance(value, list):
            getattr(model, key).extend(value)
        elif isinstance(value, Duration):
            getattr(model, key).CopyFrom(value)
        else:
            setattr(model, key, value)
    return model


def _sync(e2e: EndToEnd, w: Warehouse, model_id: str) -> opb.Run:
    started = e2e.models(w.tenant.admin_token).SyncModel(mpb.SyncModelRequest(id=model_id))
    assert started.state == opb.RUN_STATE_RUNNING and started.kind == opb.RUN_KIND_SYNC
    return e2e.finished(w.tenant.admin_token, started)


def test_a_model_arrives_identical_and_the_control_plane_learns_only_counts(
    e2e: EndToEnd,
    warehouse: Warehouse,
    background_loop: BackgroundLoop,
) -> None:
    """A full-refresh model's rows arrive identical (checksums); the run records rows, bytes
    and a fingerprint; no canary value is in the run, the control plane's database, the
    workflow's history, the agent's log or the services' logs (they run in this process)."""
    w = warehouse
    model = e2e.models(w.tenant.admin_token).CreateModel(
        mpb.CreateModelRequest(model=_model(w, "events-full"))
    )
    with capture_logs() as events:
        run = _sync(e2e, w, model.id)
    assert run.state == opb.RUN_STATE_SUCCEEDED, run
    assert (run.outcome_category, run.model_id) == ("ok", model.id)
    assert run.sync.rows == ROWS and run.sync.bytes > 0 and run.sync.created_table
    assert len(run.sync.schema_fingerprint) >= 16
    source = checksum(w.source_url, QUERY)
    assert checksum(w.destination_url, "select * from analytics.events_full") == source

    async def history() -> bytes:
        client = await Client.connect(
            e2e.stack.temporal_address, namespace=namespace_for(w.tenant.org_id)
        )
        events = (await client.get_workflow_handle(f"sync-{run.id}").fetch_history()).events
        return b"".join(e.SerializeToString() for e in events)

    raw = background_loop.run(history())
    assert raw, "the sync's history is kept (metadata only)"
    stored = _control_plane_text(e2e.stack.database_url)
    assert str(run.id) in stored, "the dump reads the orchestrator's tables"
    for canary in (CANARY, CURSOR_CANARY[:19]):
        assert canary.encode() not in raw
        assert canary not in str(run)
        assert canary not in stored
    assert w.tenant.agent is not None
    assert CANARY not in w.tenant.agent.output()
    logged = "\n".join(map(str, events))
    assert str(run.id) in logged, "the services' logs were captured"
    assert CANARY not in logged


def _control_plane_text(url: str) -> str:
    """Every row of every table the control plane's services keep, as text."""
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "select table_schema, table_name from information_schema.tables"
            " where table_schema not in ('pg_catalog', 'information_schema')"
            " and table_type = 'BASE TABLE'"
        ).fetchall()
        dumped = []
        for schema, table in tables:
            row = conn.execute(
                sql.SQL("select string_agg(t::text, '|') from {} t").format(
                    sql.Identifier(schema, table)
                )
            ).fetchone()
            dumped.append((row[0] if row else None) or "")
    return "\n".join(dumped)


def test_an_incremental_model_merges_exactly_the_changed_rows(
    e2e: EndToEnd, warehouse: Warehouse
) -> None:
    """The first run loads everything; after 10,000 inserts and 1,000 updates at the source the
    next run loads exactly those 11,000 rows and the destination equals the source again. The
    high-water mark stays in the destination."""
    w = warehouse
    model = e2e.models(w.tenant.admin_token).CreateModel(
        mpb.CreateModelRequest(
            model=_model(
                w,
                "events-incremental",
                load_mode=mpb.LOAD_MODE_INCREMENTAL,
                cursor_column="updated_at",
                primary_key=["id"],
            )
        )
    )
    first = _sync(e2e, w, model.id)
    assert (first.outcome_category, first.sync.rows) == ("ok", ROWS), first
    with psycopg.connect(w.source_url, autocommit=True) as conn:
        conn.execute(
            "insert into events select g, 'new ' || g, g, now(), '{}'::jsonb, null, null,"
            " %s::timestamptz + interval '1 day' from generate_series(%s, %s) g",
            (CURSOR_CANARY, ROWS + 1, ROWS + 10_000),
        )
        conn.execute(
            "update events set note = 'changed', updated_at = %s::timestamptz + interval '2 days'"
            " where id between 1 and 1000",
            (CURSOR_CANARY,),
        )
    second = _sync(e2e, w, model.id)
    assert (second.outcome_category, second.sync.rows) == ("ok", 11_000), second
    assert not second.sync.full_reload
    target = "select * from analytics.events_incremental"
    assert checksum(w.destination_url, target) == checksum(w.source_url, QUERY)
    with psycopg.connect(w.destination_url) as conn:
        marks = conn.execute("select count(*) from sevvo_sync.sync_state").fetchone()
    assert marks == (1,)
    # Every mark the model had (2031-07-04, then 2031-07-06) stayed in the destination.
    assert "2031-07" not in _control_plane_text(e2e.stack.database_url)


def test_an_agent_killed_mid_sync_leaves_the_last_load_and_the_run_completes(
    e2e: EndToEnd, warehouse: Warehouse
) -> None:
    """SIGKILL while the rows stream, twice: each time the destination keeps its previous
    complete load; the attempt's missed heartbeats hand the sync to the restarted agent, which
    completes it. A second start while the sync runs is refused."""
    w = warehouse
    big = "select id, note, amount, doc from public.events"
    model = e2e.models(w.tenant.admin_token).CreateModel(
        mpb.CreateModelRequest(
            model=_model(w, "events-big", sql="select 1 as id", allow_schema_evolution=True)
        )
    )
    assert _sync(e2e, w, model.id).outcome_category == "ok"
    e2e.models(w.tenant.admin_token).UpdateModel(
        mpb.UpdateModelRequest(
            model=mpb.Model(id=model.id, sql=big), update_mask={"paths": ["sql"]}
        )
    )
    before = checksum(w.destination_url, "select * from analytics.events_big")
    assert before[0] == 1
    started = e2e.models(w.tenant.admin_token).SyncModel(mpb.SyncModelRequest(id=model.id))
    with pytest.raises(grpc.RpcError) as second:
        e2e.models(w.tenant.admin_token).SyncModel(mpb.SyncModelRequest(id=model.id))
    assert second.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert started.id in (second.value.details() or "")
    for _ in range(2):
        _wait_for(lambda: _copying(w.destination_url), "the sync never started loading", 90)
        assert w.tenant.agent is not None
        w.tenant.agent.kill()
        _wait_for(lambda: not _copying(w.destination_url), "the killed load never ended", 30)
        assert checksum(w.destination_url, "select * from analytics.events_big") == before
        w.tenant.agent = e2e.start_agent(w.tenant)
    run = e2e.finished(w.tenant.admin_token, started, timeout=240)
    assert run.outcome_category == "ok", run
    assert run.sync.attempt >= 3
    expected = checksum(w.source_url, big)
    assert run.sync.rows == expected[0]
    assert checksum(w.destination_url, "select * from analytics.events_big") == expected


def _wait_for(condition: Callable[[], bool], failure: str, timeout: float) -> None:
    give_up = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < give_up, failure
        time.sleep(0.02)


def _copying(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from pg_stat_activity where datname = current_database()"
            " and query ilike 'copy %%' and state = 'active'"
        ).fetchone()
    return row is not None and int(row[0]) > 0


def test_a_scheduled_model_syncs_on_its_schedule_and_its_deletion_ends_it(
    e2e: EndToEnd, warehouse: Warehouse
) -> None:
    """Once an interval has passed since the schedule was set, the orchestrator starts the
    model's sync itself (as the schedule); deleting the model deletes its schedule."""
    w = warehouse
    models = e2e.models(w.tenant.admin_token)
    model = models.CreateModel(
        mpb.CreateModelRequest(
            model=_model(
                w,
                "events-scheduled",
                sql="select id, note from public.events where id <= 100",
                schedule_interval=Duration(seconds=300),
            )
        )
    )
    assert model.next_sync_time.ToDatetime() > model.create_time.ToDatetime()
    # Five minutes are not waited out: the schedule is made to have been set that long ago.
    with psycopg.connect(e2e.stack.database_url, autocommit=True) as conn:
        conn.execute(
            "update orchestrator.models set schedule_set_at = schedule_set_at"
            " - interval '301 seconds' where id = %s",
            (model.id,),
        )
    runs = e2e.orchestrator(w.tenant.admin_token)

    def model_runs() -> list[opb.Run]:
        return list(runs.ListRuns(opb.ListRunsRequest(model_id=model.id)).runs)

    _wait_for(lambda: bool(model_runs()), "the schedule never started a sync", 30)
    (scheduled,) = model_runs()
    assert (scheduled.kind, scheduled.creator) == (opb.RUN_KIND_SYNC, "system:schedule")
    finished = e2e.finished(w.tenant.admin_token, scheduled)
    assert (finished.outcome_category, finished.sync.rows) == ("ok", 100), finished
    models.DeleteModel(mpb.DeleteModelRequest(id=model.id))
    with psycopg.connect(e2e.stack.database_url) as conn:
        slots = conn.execute(
            "select count(*) from orchestrator.model_schedule_slots where model_id = %s",
            (model.id,),
        ).fetchone()
    assert slots == (0,)
    time.sleep(3)  # Three passes of the scheduler (one a second here).
    assert [r.id for r in model_runs()] == [scheduled.id]


def test_two_agents_of_an_org_share_its_syncs_and_run_each_once(
    e2e: EndToEnd, warehouse: Warehouse, background_loop: BackgroundLoop
) -> None:
    """With a second agent polling the org's queue, syncs of several models all complete;
    every run was started by exactly one agent, once."""
    w = warehouse
    second = e2e.stack.start_agent(w.tenant.deployment_token, name=f"agent-b-{w.tenant.org_id[:8]}")
    try:

        async def pollers() -> set[str]:
            client = await Client.connect(
                e2e.stack.temporal_address, namespace=namespace_for(w.tenant.org_id)
            )
            described = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace,
                    task_queue=TaskQueue(name=f"tenant-{w.tenant.org_id}"),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
                )
            )
            return {poller.identity for poller in described.pollers}

        _wait_for(lambda: len(background_loop.run(pollers())) >= 2, "one agent polls", 30)
        models = e2e.models(w.tenant.admin_token)
        ids = [
            models.CreateModel(
                mpb.CreateModelRequest(
                    model=_model(
                        w,
                        f"shared-{n}",
                        sql=f"select id, note from public.events where id % 6 = {n}",
                    )
                )
            ).id
            for n in range(6)
        ]
        started = [models.SyncModel(mpb.SyncModelRequest(id=i)) for i in ids]
        finished = [e2e.finished(w.tenant.admin_token, run) for run in started]
        assert [run.outcome_category for run in finished] == ["ok"] * 6
        assert w.tenant.agent is not None
        logs = w.tenant.agent.output() + second.output()
        for run in finished:
            starts = [
                line for line in logs.splitlines() if "sync started" in line and run.id in line
            ]
            assert len(starts) == 1, (run.id, starts)
    finally:
        second.stop()
