"""End to end: the orchestrator's audit records, through the whole stack and a real agent.

Who started which run, who previewed which connection with what outcome and how many rows
(never the statement's text, never a row), and who set or removed a rotation schedule, each
with the acting user's email as their session carries it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from devstack.postgres import EmbeddedPostgres
from devstack.source_db import SourceDatabase, create_dynamic_roles, drop_roles
from sevvo.audit.v1 import audit_pb2
from sevvo.audit.v1.audit_pb2_grpc import AuditServiceStub
from sevvo.auth.v1 import users_pb2, users_pb2_grpc
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.workflows.v1 import workflows_pb2 as wpb
from tests.plugins.dev_stack import EndToEnd, Tenant
from tests.plugins.source_db import SourceTargetFactory

# A literal only the preview's SQL holds: it must never reach the audit log.
CANARY = "literal-canary-4711"
PRIVILEGED_PASSWORD = "privileged-pw-audit-42"


def _events(e2e: EndToEnd, tenant: Tenant, **filters: Any) -> list[audit_pb2.AuditEvent]:
    page = AuditServiceStub(e2e._channel(tenant.admin_token)).ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(page_size=500, **filters)
    )
    return list(page.events)


def _admin_email(e2e: EndToEnd, tenant: Tenant) -> str:
    users = users_pb2_grpc.UserServiceStub(e2e._channel(tenant.admin_token)).ListUsers(
        users_pb2.ListUsersRequest()
    )
    return str(users.users[0].email)


def _audit_table(e2e: EndToEnd) -> str:
    with psycopg.connect(e2e.stack.database_url) as conn:
        row = conn.execute("select coalesce(json_agg(e)::text, '') from audit.events e").fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture
def shop(
    e2e: EndToEnd, tls_source_pg: EmbeddedPostgres, source_target: SourceTargetFactory
) -> tuple[Tenant, SourceDatabase, str]:
    """A tenant with its agent and a saved connection to a seeded shop database."""
    tenant = e2e.new_tenant()
    source = source_target(tls_source_pg)
    created = e2e.connections(tenant.admin_token).CreateConnection(
        cpb.CreateConnectionRequest(display_name="shop", fields=e2e.fields(source))
    )
    return tenant, source, created.id


def test_a_preview_is_recorded_with_who_where_outcome_and_counts_never_the_sql(
    e2e: EndToEnd, shop: tuple[Tenant, SourceDatabase, str]
) -> None:
    """Each preview is a run.start and a connection.preview by the admin, about the connection,
    with category and row count; the SQL only as its length and digest, no row anywhere."""
    tenant, _, connection_id = shop
    email = _admin_email(e2e, tenant)
    statement = f"select email from customers where email <> '{CANARY}@x.example'"
    orchestrator = e2e.orchestrator(tenant.admin_token)
    ok = orchestrator.PreviewQuery(
        opb.PreviewQueryRequest(connection_id=connection_id, sql=statement)
    )
    assert ok.result.category == wpb.PREVIEW_CATEGORY_OK
    rejected = orchestrator.PreviewQuery(
        opb.PreviewQueryRequest(connection_id=connection_id, sql="delete from orders")
    )
    assert rejected.result.category == wpb.PREVIEW_CATEGORY_QUERY_REJECTED

    previews = _events(e2e, tenant, action="connection.preview", target_id=connection_id)
    assert [
        (p.actor_email, p.target_type, p.outcome, p.reason, p.details["run_id"]) for p in previews
    ] == [
        (email, "connection", audit_pb2.AUDIT_OUTCOME_FAILURE, "PREVIEW_FAILED", rejected.run.id),
        (email, "connection", audit_pb2.AUDIT_OUTCOME_SUCCESS, "", ok.run.id),
    ]
    assert previews[0].details["category"] == "query_rejected"
    assert dict(previews[1].details) == {
        "run_id": ok.run.id,
        "category": "ok",
        "row_count": "50",
        "truncated": "false",
        "sql_bytes": str(len(statement.encode())),
        "sql_sha256": hashlib.sha256(statement.encode()).hexdigest(),
    }
    starts = _events(e2e, tenant, action="run.start", target_id=connection_id)
    preview_start = next(s for s in starts if s.details["run_id"] == ok.run.id)
    assert (preview_start.actor_email, preview_start.details["kind"]) == (email, "preview")
    assert preview_start.details["sql_sha256"] == previews[1].details["sql_sha256"]

    stored = _audit_table(e2e)
    assert CANARY not in stored
    assert not [row.cells[0].text for row in ok.result.rows if row.cells[0].text in stored]


def test_credential_test_runs_are_recorded_as_they_start(
    e2e: EndToEnd, shop: tuple[Tenant, SourceDatabase, str]
) -> None:
    """Saving tests a draft and a retest tests the connection: each start is a run.start by
    the admin about what was tested."""
    tenant, _, connection_id = shop
    email = _admin_email(e2e, tenant)
    e2e.connections(tenant.admin_token).TestConnection(cpb.TestConnectionRequest(id=connection_id))

    starts = [
        (s.actor_email, s.target_type, s.details["kind"])
        for s in _events(e2e, tenant, action="run.start")
    ]
    assert starts == [
        (email, "connection", "credential_test"),
        (email, "draft", "credential_test"),
    ]
    [retest] = _events(e2e, tenant, action="run.start", target_id=connection_id)
    [tested] = _events(e2e, tenant, action="connection.test", target_id=connection_id)
    assert retest.details["run_id"] == tested.details["run_id"]


@pytest.fixture
def dynamic_source(
    tls_source_pg: EmbeddedPostgres, source_target: SourceTargetFactory
) -> Iterator[tuple[SourceDatabase, str, str]]:
    """A source database, a NOLOGIN reader group, and a CREATEROLE (not superuser) role."""
    source = source_target(tls_source_pg)
    admin_url = tls_source_pg.admin_url(source.database)
    group, privileged = create_dynamic_roles(
        admin_url, database=source.database, password=PRIVILEGED_PASSWORD
    )
    yield source, group, privileged
    drop_roles(admin_url, privileged, group)


def _schedule(connection_id: str, interval: timedelta) -> opb.SetRootRotationScheduleRequest:
    request = opb.SetRootRotationScheduleRequest(connection_id=connection_id)
    request.interval.FromTimedelta(interval)
    return request


def test_rotation_schedule_changes_are_recorded_once_each(
    e2e: EndToEnd, dynamic_source: tuple[SourceDatabase, str, str]
) -> None:
    """Setting a schedule records its interval; removing it (by zero, or by deleting the
    connection) records a delete; removing one that is not there records nothing."""
    source, group, privileged = dynamic_source
    tenant = e2e.new_tenant()
    email = _admin_email(e2e, tenant)
    created = e2e.connections(tenant.admin_token).CreateConnection(
        cpb.CreateConnectionRequest(
            display_name="dynamic-audited",
            dynamic=EndToEnd.dynamic(
                source, privileged=privileged, privileged_password=PRIVILEGED_PASSWORD, group=group
            ),
        )
    )
    orchestrator = e2e.orchestrator(tenant.admin_token)
    orchestrator.SetRootRotationSchedule(_schedule(created.id, timedelta(days=30)))
    orchestrator.SetRootRotationSchedule(_schedule(created.id, timedelta(0)))
    orchestrator.SetRootRotationSchedule(_schedule(created.id, timedelta(0)))
    orchestrator.SetRootRotationSchedule(_schedule(created.id, timedelta(days=7)))
    e2e.connections(tenant.admin_token).DeleteConnection(cpb.DeleteConnectionRequest(id=created.id))

    changes = [
        (e.action, e.actor_email, dict(e.details))
        for e in _events(e2e, tenant, action="connection.rotation_schedule.", target_id=created.id)
    ]
    assert changes == [
        ("connection.rotation_schedule.delete", email, {}),
        ("connection.rotation_schedule.set", email, {"interval_seconds": str(7 * 86400)}),
        ("connection.rotation_schedule.delete", email, {}),
        ("connection.rotation_schedule.set", email, {"interval_seconds": str(30 * 86400)}),
    ]
