"""End to end: preview queries through the orchestrator, Temporal and a real agent."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator

import grpc
import psycopg
import pytest
from psycopg import sql

from devstack.postgres import EmbeddedPostgres
from devstack.source_db import SourceDatabase, create_source_database, drop_source_database
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.runtime.grpc_client import error_details
from sevvo.workflows.v1 import workflows_pb2 as wpb
from tests.plugins.dev_stack import EndToEnd, Tenant
from tests.plugins.source_db import SourceTargetFactory


def _connection(e2e: EndToEnd, tenant: Tenant, source: SourceDatabase) -> str:
    created: cpb.Connection = e2e.connections(tenant.admin_token).CreateConnection(
        cpb.CreateConnectionRequest(display_name="shop", fields=e2e.fields(source))
    )
    return created.id


def _preview(
    e2e: EndToEnd, tenant: Tenant, connection_id: str, text: str
) -> opb.PreviewQueryResponse:
    response: opb.PreviewQueryResponse = e2e.orchestrator(tenant.admin_token).PreviewQuery(
        opb.PreviewQueryRequest(connection_id=connection_id, sql=text)
    )
    return response


@pytest.fixture(scope="module")
def shop(
    e2e: EndToEnd, tls_source_pg: EmbeddedPostgres
) -> Iterator[tuple[Tenant, SourceDatabase, str]]:
    """A tenant with its agent and a saved connection to a seeded shop database.

    One per module: starting an agent process costs more than most tests here, and no test
    changes what the others read (a preview writes nothing; the one table a test adds is
    its own).
    """
    tenant = e2e.new_tenant()
    suffix = uuid.uuid4().hex[:12]
    database, reader = f"source_{suffix}", f"reader_{suffix}"
    try:
        source = create_source_database(
            tls_source_pg.url,
            database=database,
            reader=reader,
            reader_password=secrets.token_urlsafe(24),
        )
        yield tenant, source, _connection(e2e, tenant, source)
    finally:
        drop_source_database(tls_source_pg.url, database=database, reader=reader)


def test_preview_returns_at_most_100_rows_and_records_metadata_only(
    e2e: EndToEnd, shop: tuple[Tenant, SourceDatabase, str]
) -> None:
    """200 orders come back as 100 rows flagged truncated; the run keeps counts, not rows."""
    tenant, _, connection_id = shop
    response = _preview(e2e, tenant, connection_id, "select * from orders order by id")
    result = response.result
    assert result.category == wpb.PREVIEW_CATEGORY_OK
    assert len(result.rows) == 100
    assert result.truncated
    assert [c.name for c in result.columns][:1] == ["id"]
    assert response.run.kind == opb.RUN_KIND_PREVIEW
    assert (response.run.row_count, response.run.truncated) == (100, True)
    emails = _preview(e2e, tenant, connection_id, "select email from customers").result
    values = [row.cells[0].text for row in emails.rows]
    assert len(values) == 50
    assert all("@" in v for v in values)
    with psycopg.connect(e2e.stack.database_url) as conn:
        stored = conn.execute(
            "select coalesce(json_agg(r)::text, '') || coalesce("
            "(select json_agg(e)::text from audit.events e), '') from orchestrator.runs r"
        ).fetchone()
    assert stored is not None
    assert not [v for v in values if v in stored[0]]


def test_preview_of_fewer_rows_is_not_truncated(
    e2e: EndToEnd, shop: tuple[Tenant, SourceDatabase, str]
) -> None:
    """50 customers come back whole."""
    tenant, _, connection_id = shop
    result = _preview(e2e, tenant, connection_id, "TABLE customers").result
    assert (len(result.rows), result.truncated) == (50, False)


@pytest.mark.parametrize(
    "statement",
    [
        "delete from orders",
        "with gone as (delete from orders returning *) select * from gone",
        "select * from orders for update",
        "select 1; delete from orders",
    ],
)
def test_write_attempts_are_rejected_and_change_nothing(
    e2e: EndToEnd,
    shop: tuple[Tenant, SourceDatabase, str],
    tls_source_pg: EmbeddedPostgres,
    statement: str,
) -> None:
    """Writes in any disguise come back query_rejected and the table keeps every row."""
    tenant, source, connection_id = shop
    result = _preview(e2e, tenant, connection_id, statement).result
    assert result.category == wpb.PREVIEW_CATEGORY_QUERY_REJECTED
    assert result.message
    with psycopg.connect(tls_source_pg.admin_url(source.database)) as conn:
        assert conn.execute("select count(*) from orders").fetchone() == (200,)


def test_long_query_times_out_within_eleven_seconds_and_leaves_no_backend(
    e2e: EndToEnd, shop: tuple[Tenant, SourceDatabase, str], tls_source_pg: EmbeddedPostgres
) -> None:
    """pg_sleep(60) is cancelled by the 10 s statement timeout; no session of the role stays."""
    tenant, source, connection_id = shop
    started = time.monotonic()
    result = _preview(e2e, tenant, connection_id, "select pg_sleep(60)").result
    elapsed = time.monotonic() - started
    assert result.category == wpb.PREVIEW_CATEGORY_QUERY_TIMEOUT
    assert elapsed < 11, elapsed
    with psycopg.connect(tls_source_pg.url) as conn:
        left = conn.execute(
            "select count(*) from pg_stat_activity where usename = %s", (source.reader,)
        ).fetchone()
    assert left == (0,)


def test_permission_denied_names_the_relation(
    e2e: EndToEnd, shop: tuple[Tenant, SourceDatabase, str], tls_source_pg: EmbeddedPostgres
) -> None:
    """A table the reader may not select from gives permission_denied naming it."""
    tenant, source, connection_id = shop
    with psycopg.connect(tls_source_pg.admin_url(source.database), autocommit=True) as conn:
        conn.execute(sql.SQL("create table payroll (salary int)"))
    result = _preview(e2e, tenant, connection_id, "select * from payroll").result
    assert result.category == wpb.PREVIEW_CATEGORY_PERMISSION_DENIED
    assert "payroll" in result.message


def test_invalid_preview_requests_are_refused_up_front(
    e2e: EndToEnd, shop: tuple[Tenant, SourceDatabase, str]
) -> None:
    """Empty or oversized SQL and bad ids are INVALID_ARGUMENT before any work starts."""
    tenant, _, connection_id = shop
    for connection, text in (
        (connection_id, ""),
        (connection_id, "select 1 " + "-" * (100 * 1024)),
        ("not-a-uuid", "select 1"),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            _preview(e2e, tenant, connection, text)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_other_org_cannot_preview_a_connection(
    e2e: EndToEnd, shop: tuple[Tenant, SourceDatabase, str]
) -> None:
    """Org B's preview of org A's connection is NOT_FOUND, as a random id, and records no run."""
    _, _, connection_id = shop
    other = e2e.new_tenant()
    answers = []
    for target in (connection_id, str(uuid.uuid4())):
        with pytest.raises(grpc.RpcError) as caught:
            _preview(e2e, other, target, "select * from customers")
        answers.append((caught.value.code(), error_details(caught.value).reason))
    assert answers == [(grpc.StatusCode.NOT_FOUND, "CONNECTION_NOT_FOUND")] * 2
    runs = e2e.orchestrator(other.admin_token).ListRuns(opb.ListRunsRequest())
    assert list(runs.runs) == []


def test_an_unclean_receipt_reaches_the_user_and_the_audit_log(
    e2e: EndToEnd, tls_source_pg: EmbeddedPostgres, source_target: SourceTargetFactory
) -> None:
    """A function the owner opted in takes an advisory lock: the preview's receipt says so,
    and the agent audits the run as a security event."""
    tenant = e2e.new_tenant()
    source = source_target(tls_source_pg)
    with psycopg.connect(tls_source_pg.admin_url(source.database), autocommit=True) as conn:
        conn.execute(
            "create function public.grab_lock() returns int language plpgsql as"
            " $$ begin perform pg_advisory_lock(77); return 1; end $$"
        )
    fields = e2e.fields(source)
    fields.preview.allowed_functions.append("grab_lock")
    connection: cpb.Connection = e2e.connections(tenant.admin_token).CreateConnection(
        cpb.CreateConnectionRequest(display_name="shop", fields=fields)
    )

    response = _preview(e2e, tenant, connection.id, "select public.grab_lock()")

    receipt = response.result.receipt
    assert response.result.category == wpb.PREVIEW_CATEGORY_OK
    assert (receipt.status, receipt.advisory_locks_held) == (
        wpb.PREVIEW_RECEIPT_STATUS_NOT_CLEAN,
        1,
    )
    with psycopg.connect(e2e.stack.database_url) as conn:
        events = conn.execute(
            "select reason, details->>'advisory_locks_held', details->>'run_id'"
            " from audit.events where action = 'connection.preview.receipt' and target_id = %s",
            (connection.id,),
        ).fetchall()
    assert events == [("PREVIEW_RECEIPT_NOT_CLEAN", "1", response.run.id)]
