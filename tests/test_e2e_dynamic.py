"""End to end: workloads on a dynamic connection run as a fresh role minted for each one."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from psycopg import sql
from temporalio.client import Client, ScheduleBackfill
from temporalio.service import RPCError, RPCStatusCode

from agent.dynamic_credentials import default_creation, mint
from agent.postgres_probe import connect
from devstack.agent_process import AgentProcess
from devstack.postgres import EmbeddedPostgres
from devstack.source_db import SourceDatabase, create_dynamic_roles, drop_roles
from sevvo.audit.v1.audit_pb2 import AUDIT_OUTCOME_SUCCESS, ListAuditEventsRequest
from sevvo.audit.v1.audit_pb2_grpc import AuditServiceStub
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.connections.v1 import connections_pb2_grpc as cpb_grpc
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.servicing import timestamp
from sevvo.runtime.temporal import namespace_for
from sevvo.workflows.v1 import workflows_pb2 as wpb
from tests.plugins.auth_stack import BackgroundLoop
from tests.plugins.dev_stack import REAPER_SECONDS, EndToEnd, Tenant
from tests.plugins.source_db import SourceTargetFactory

PRIVILEGED_PASSWORD = "privileged-pw-4242"


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


def _create_dynamic(
    e2e: EndToEnd,
    tenant: Tenant,
    dynamic_source: tuple[SourceDatabase, str, str],
    name: str,
    *,
    ttl: int = 300,
    max_ttl: int = 900,
    creation: tuple[str, ...] = (),
) -> cpb.Connection:
    source, group, privileged = dynamic_source
    created: cpb.Connection = e2e.connections(tenant.admin_token).CreateConnection(
        cpb.CreateConnectionRequest(
            display_name=name,
            dynamic=EndToEnd.dynamic(
                source,
                privileged=privileged,
                privileged_password=PRIVILEGED_PASSWORD,
                group=group,
                ttl=ttl,
                max_ttl=max_ttl,
                creation=creation,
            ),
        )
    )
    return created


def _as_agent(e2e: EndToEnd, tenant: Tenant) -> grpc.Channel:
    """A channel calling as the tenant's agent does, with a bearer from its deployment."""
    return e2e._channel(e2e.stack.auth.domain.exchange(tenant.deployment_token).token)


def _minted_roles(server: EmbeddedPostgres) -> list[str]:
    with psycopg.connect(server.url) as conn:
        rows = conn.execute("select rolname from pg_roles where rolname like 'sevvo_dyn_%'")
        return [r[0] for r in rows.fetchall()]


def test_preview_on_a_dynamic_connection_runs_as_a_minted_role_that_is_then_gone(
    e2e: EndToEnd,
    tls_source_pg: EmbeddedPostgres,
    dynamic_source: tuple[SourceDatabase, str, str],
) -> None:
    """Each workload mints a role, reads as it, and leaves no role behind; leases say so."""
    tenant: Tenant = e2e.new_tenant()
    created = _create_dynamic(e2e, tenant, dynamic_source, "dynamic-shop")
    assert created.credential_mode == cpb.CREDENTIAL_MODE_DYNAMIC
    tested = e2e.connections(tenant.admin_token).TestConnection(
        cpb.TestConnectionRequest(id=created.id)
    )
    assert tested.status == cpb.CONNECTION_STATUS_CONNECTED
    preview = (
        e2e.orchestrator(tenant.admin_token)
        .PreviewQuery(
            opb.PreviewQueryRequest(connection_id=created.id, sql="select count(*) from orders")
        )
        .result
    )
    assert preview.category == wpb.PREVIEW_CATEGORY_OK, preview.message
    assert preview.rows[0].cells[0].text == "200"
    assert _minted_roles(tls_source_pg) == []

    leases = (
        cpb_grpc.LeaseServiceStub(e2e._channel(tenant.admin_token))
        .ListLeases(cpb.ListLeasesRequest(connection_id=created.id))
        .leases
    )
    assert sorted(lease.purpose for lease in leases) == ["credential_test", "preview"]
    assert all(lease.state == cpb.LEASE_STATE_REVOKED for lease in leases)
    assert all(lease.role_name.startswith("sevvo_dyn_") for lease in leases)
    assert PRIVILEGED_PASSWORD not in str(leases)
    assert tenant.agent is not None
    assert PRIVILEGED_PASSWORD not in tenant.agent.output()


def test_reaper_revokes_requested_leases_and_expired_orphans(
    e2e: EndToEnd,
    tls_source_pg: EmbeddedPostgres,
    dynamic_source: tuple[SourceDatabase, str, str],
    background_loop: BackgroundLoop,
) -> None:
    """An admin's revoke request and an expired role with no lease are both cleaned up."""
    source, group, privileged = dynamic_source
    tenant = e2e.new_tenant()
    created = _create_dynamic(e2e, tenant, dynamic_source, "dynamic-reap")
    leases_as_agent = cpb_grpc.LeaseServiceStub(_as_agent(e2e, tenant))
    privileged_credentials = cpb.PostgresCredentials(
        host="localhost",
        port=source.port,
        database=source.database,
        username=privileged,
        password=PRIVILEGED_PASSWORD,
        ssl_mode=cpb.SSL_MODE_REQUIRE,
    )
    lease_id = str(uuid.uuid4())

    async def leave_roles_behind() -> None:
        # As a crashed agent would: one leased role still active, one expired orphan.
        admin = await connect(privileged_credentials, connect_timeout=10)
        try:

            async def intent(name: str, valid_until: datetime) -> None:
                await asyncio.to_thread(
                    leases_as_agent.CreateLease,
                    cpb.CreateLeaseRequest(
                        lease_id=lease_id,
                        connection_id=created.id,
                        role_name=name,
                        purpose="preview",
                        expire_time=timestamp(valid_until),
                        max_expire_time=timestamp(valid_until),
                    ),
                )

            await mint(
                admin,
                creation=default_creation(group),
                ttl=timedelta(minutes=5),
                purpose="preview",
                before_commit=intent,
            )
            await mint(
                admin, creation=default_creation(group), ttl=timedelta(seconds=1), purpose="orphan"
            )
        finally:
            await admin.close()

    background_loop.run(leave_roles_behind())
    assert len(_minted_roles(tls_source_pg)) == 2
    time.sleep(1.5)  # The orphan's VALID UNTIL passes.
    cpb_grpc.LeaseServiceStub(e2e._channel(tenant.admin_token)).RevokeLeases(
        cpb.RevokeLeasesRequest(connection_id=created.id)
    )
    deadline = time.monotonic() + 20
    while _minted_roles(tls_source_pg):
        assert time.monotonic() < deadline, _minted_roles(tls_source_pg)
        time.sleep(0.2)
    leases = (
        cpb_grpc.LeaseServiceStub(e2e._channel(tenant.admin_token))
        .ListLeases(cpb.ListLeasesRequest(connection_id=created.id))
        .leases
    )
    assert [lease.state for lease in leases] == [cpb.LEASE_STATE_REVOKED]


def test_saving_runs_a_dry_run_that_reports_the_failing_statement_and_saves_nothing(
    e2e: EndToEnd,
    tls_source_pg: EmbeddedPostgres,
    dynamic_source: tuple[SourceDatabase, str, str],
) -> None:
    """A statement that would fail at mint time fails the save, named, with no role left."""
    _, group, _ = dynamic_source
    tenant = e2e.new_tenant()
    broken = (
        *default_creation(group),
        "GRANT SELECT ON no_such_table TO {{name}}",
    )
    with pytest.raises(grpc.RpcError) as refused:
        _create_dynamic(e2e, tenant, dynamic_source, "dynamic-broken", creation=broken)
    error = refused.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = error_details(error)
    assert details.reason == "CREDENTIAL_TEST_FAILED"
    assert (details.metadata or {}).get("category") == "dynamic_statements_failed"
    assert "creation_statements[1] failed" in error.details()
    assert "no_such_table" in error.details() and "42P01" in error.details()
    assert PRIVILEGED_PASSWORD not in error.details()
    listed = e2e.connections(tenant.admin_token).ListConnections(cpb.ListConnectionsRequest())
    assert list(listed.connections) == []
    assert _minted_roles(tls_source_pg) == []
    # The same statements without the broken one save.
    saved = _create_dynamic(
        e2e, tenant, dynamic_source, "dynamic-fixed", creation=default_creation(group)
    )
    assert saved.credential_mode == cpb.CREDENTIAL_MODE_DYNAMIC
    assert _minted_roles(tls_source_pg) == []


def _prefixed_sessions(server: EmbeddedPostgres) -> int:
    with psycopg.connect(server.url) as conn:
        row = conn.execute(
            "select count(*) from pg_stat_activity where usename like 'sevvo_dyn_%'"
        ).fetchone()
        assert row is not None
        return int(row[0])


CRASH_TTL_SECONDS = 60  # The shortest TTL a connection accepts.
CRASHES = 20
# A preview that holds its minted role's session for a while, so kills land in "use" too.
SLOW_PREVIEW = "select pg_sleep(0.4) as slept, count(*) as orders from orders"


def _kill_point(agent: AgentProcess, phase: str, submitted: float, rng: random.Random) -> None:
    """Waits until the agent is in ``phase`` of a workload (give or take a random jitter)."""
    if phase == "mint":
        # Anywhere from before the intent is recorded to just after CREATE ROLE.
        time.sleep(max(0.0, submitted + rng.uniform(0.0, 0.15) - time.monotonic()))
        return
    minted_before = agent.output().count("lease minted")
    deadline = time.monotonic() + 15
    while agent.output().count("lease minted") == minted_before:
        if time.monotonic() > deadline:
            return  # The agent never got there; killing it now is still a random point.
        time.sleep(0.005)
    # "use" lands inside the 0.4 s query; "revoke" just after it, while the role is dropped.
    time.sleep(rng.uniform(0.0, 0.3) if phase == "use" else 0.4 + rng.uniform(0.0, 0.15))


@pytest.mark.timeout(360)
def test_agents_killed_mid_lease_leave_no_role_or_session_after_ttl_and_one_reap(
    e2e: EndToEnd,
    tls_source_pg: EmbeddedPostgres,
    dynamic_source: tuple[SourceDatabase, str, str],
) -> None:
    """SIGKILL the agent 20 times during mint, use and revoke; the reaper cleans up after."""
    tenant = e2e.new_tenant()
    created = _create_dynamic(
        e2e, tenant, dynamic_source, "dynamic-crash", ttl=CRASH_TTL_SECONDS, max_ttl=120
    )
    orchestrator = e2e.orchestrator(tenant.admin_token)
    rng = random.Random()  # Different points every run: the property must hold for any.
    phases = ["mint", "use", "revoke"]
    assert tenant.agent is not None
    agent = tenant.agent
    last_kill = time.monotonic()
    with ThreadPoolExecutor(max_workers=CRASHES + 1) as pool:
        previews = []
        for crash in range(CRASHES):
            submitted = time.monotonic()
            previews.append(
                pool.submit(
                    orchestrator.PreviewQuery,
                    opb.PreviewQueryRequest(connection_id=created.id, sql=SLOW_PREVIEW),
                    timeout=60,
                )
            )
            _kill_point(agent, phases[crash % len(phases)], submitted, rng)
            agent.kill()
            last_kill = time.monotonic()
            agent = e2e.start_agent(tenant)
        # The interrupted previews are retried by the restarted agent or time out; either
        # way each ends, and each retry mints (and revokes) a role of its own.
        for preview in previews:
            with contextlib.suppress(grpc.RpcError):
                preview.result(timeout=90)

    lease_stub = cpb_grpc.LeaseServiceStub(e2e._channel(tenant.admin_token))

    def lease_states() -> set[str]:
        listed = lease_stub.ListLeases(
            cpb.ListLeasesRequest(connection_id=created.id, page_size=500)
        ).leases
        # At least one lease per crash was minted (retries add more).
        assert len(listed) >= CRASHES
        return {cpb.LeaseState.Name(lease.state) for lease in listed}

    # Every role a killed agent minted expires within the TTL of its kill; one reaper pass
    # after that (plus the reaper's own run time) must leave nothing behind, and every lease
    # recorded revoked.
    deadline = last_kill + CRASH_TTL_SECONDS + REAPER_SECONDS + 5
    while time.monotonic() < deadline and (
        _minted_roles(tls_source_pg)
        or _prefixed_sessions(tls_source_pg)
        or lease_states() != {"LEASE_STATE_REVOKED"}
    ):
        time.sleep(0.5)
    assert _minted_roles(tls_source_pg) == []
    assert _prefixed_sessions(tls_source_pg) == 0
    assert lease_states() == {"LEASE_STATE_REVOKED"}
    assert PRIVILEGED_PASSWORD not in agent.output()


def _agent_view(e2e: EndToEnd, tenant: Tenant, connection_id: str) -> cpb.PostgresCredentials:
    """The privileged credentials as the tenant's agent resolves them (the test's only
    window on the stored password, which no user-facing call returns)."""
    resolved: cpb.ResolveConnectionCredentialsResponse = cpb_grpc.ConnectionCredentialServiceStub(
        _as_agent(e2e, tenant)
    ).ResolveConnectionCredentials(
        cpb.ResolveConnectionCredentialsRequest(connection_id=connection_id, purpose="test")
    )
    return resolved.postgres


def _logs_in(source: SourceDatabase, role: str, password: str) -> bool:
    try:
        psycopg.connect(
            host="localhost",
            port=source.port,
            dbname=source.database,
            user=role,
            password=password,
            sslmode="require",
            connect_timeout=5,
        ).close()
    except psycopg.OperationalError:
        return False
    return True


def _preview_count(e2e: EndToEnd, tenant: Tenant, connection_id: str) -> str:
    result = (
        e2e.orchestrator(tenant.admin_token)
        .PreviewQuery(
            opb.PreviewQueryRequest(connection_id=connection_id, sql="select count(*) from orders")
        )
        .result
    )
    assert result.category == wpb.PREVIEW_CATEGORY_OK, result.message
    return str(result.rows[0].cells[0].text)


def test_root_rotation_on_demand_replaces_the_password_and_minting_continues(
    e2e: EndToEnd,
    tls_source_pg: EmbeddedPostgres,
    dynamic_source: tuple[SourceDatabase, str, str],
    background_loop: BackgroundLoop,
) -> None:
    """After rotation the old password fails, the new one works, previews still mint roles;
    no password is in the run, the agent's log or Temporal's history in clear."""
    source, _, privileged = dynamic_source
    tenant = e2e.new_tenant()
    created = _create_dynamic(e2e, tenant, dynamic_source, "dynamic-rotate")
    run = e2e.finished(
        tenant.admin_token,
        e2e.orchestrator(tenant.admin_token).RotateRootCredentials(
            opb.RotateRootCredentialsRequest(connection_id=created.id)
        ),
    )
    assert (run.kind, run.outcome_category) == (opb.RUN_KIND_ROOT_ROTATION, "rotated"), run
    stored = _agent_view(e2e, tenant, created.id)
    new_password = stored.password
    assert new_password != PRIVILEGED_PASSWORD and not stored.HasField("pending_password")
    assert not _logs_in(source, privileged, PRIVILEGED_PASSWORD)
    assert _logs_in(source, privileged, new_password)
    assert _preview_count(e2e, tenant, created.id) == "200"
    assert _minted_roles(tls_source_pg) == []

    async def history() -> bytes:
        client = await Client.connect(
            e2e.stack.temporal_address, namespace=namespace_for(tenant.org_id)
        )
        handle = client.get_workflow_handle(f"root-rotation-{run.id}")
        events = (await handle.fetch_history()).events
        return b"".join(e.SerializeToString() for e in events)

    raw = background_loop.run(history())
    assert tenant.agent is not None
    for secret in (PRIVILEGED_PASSWORD, new_password):
        assert secret.encode() not in raw
        assert secret not in str(run)
        assert secret not in tenant.agent.output()
    # Root rotation is an admin's decision, recorded in the audit log.
    events = (
        AuditServiceStub(e2e._channel(tenant.admin_token))
        .ListAuditEvents(ListAuditEventsRequest(page_size=50))
        .events
    )
    rotations = [
        (e.action, e.outcome)
        for e in events
        if e.target_id == created.id and e.action == "connection.root.rotate"
    ]
    assert rotations == [("connection.root.rotate", AUDIT_OUTCOME_SUCCESS)]


def test_an_interrupted_root_rotation_is_completed_by_the_next_use(
    e2e: EndToEnd,
    tls_source_pg: EmbeddedPostgres,
    dynamic_source: tuple[SourceDatabase, str, str],
) -> None:
    """A crash after ALTER ROLE but before the commit: the next workload logs in with the
    staged password and commits it. A crash before ALTER ROLE: the staged one is dropped."""
    source, _, privileged = dynamic_source
    tenant = e2e.new_tenant()
    created = _create_dynamic(e2e, tenant, dynamic_source, "dynamic-recover")
    as_agent = cpb_grpc.ConnectionCredentialServiceStub(_as_agent(e2e, tenant))

    # Crashed after ALTER ROLE: the database holds the staged password, the store the old.
    applied = "staged-and-applied-5150"
    as_agent.StagePrivilegedPassword(
        cpb.StagePrivilegedPasswordRequest(connection_id=created.id, pending_password=applied)
    )
    with psycopg.connect(tls_source_pg.url, autocommit=True) as su:
        su.execute(
            sql.SQL("alter role {} password {}").format(
                sql.Identifier(privileged), sql.Literal(applied)
            )
        )
    assert _preview_count(e2e, tenant, created.id) == "200"
    stored = _agent_view(e2e, tenant, created.id)
    assert stored.password == applied and not stored.HasField("pending_password")

    # Crashed before ALTER ROLE: the staged password never reached the database.
    never = "staged-never-applied-8086"
    as_agent.StagePrivilegedPassword(
        cpb.StagePrivilegedPasswordRequest(connection_id=created.id, pending_password=never)
    )
    assert _preview_count(e2e, tenant, created.id) == "200"
    run = e2e.finished(
        tenant.admin_token,
        e2e.orchestrator(tenant.admin_token).RotateRootCredentials(
            opb.RotateRootCredentialsRequest(connection_id=created.id)
        ),
    )
    assert run.outcome_category == "rotated", run
    stored = _agent_view(e2e, tenant, created.id)
    assert stored.password not in (applied, never) and not stored.HasField("pending_password")
    assert _logs_in(source, privileged, stored.password)
    assert not _logs_in(source, privileged, applied)
    assert _minted_roles(tls_source_pg) == []


def test_root_rotation_of_a_fixed_password_connection_says_so(
    e2e: EndToEnd, tls_source_pg: EmbeddedPostgres, source_target: SourceTargetFactory
) -> None:
    """Only dynamic connections have a privileged password to rotate, now or on a schedule."""
    tenant = e2e.new_tenant()
    source = source_target(tls_source_pg)
    created = e2e.connections(tenant.admin_token).CreateConnection(
        cpb.CreateConnectionRequest(display_name="fixed", fields=e2e.fields(source))
    )
    orchestrator = e2e.orchestrator(tenant.admin_token)
    runs_before = len(orchestrator.ListRuns(opb.ListRunsRequest()).runs)
    refusals = []
    calls: list[Callable[[], object]] = [
        lambda: orchestrator.RotateRootCredentials(
            opb.RotateRootCredentialsRequest(connection_id=created.id)
        ),
        lambda: orchestrator.SetRootRotationSchedule(
            _schedule_request(created.id, timedelta(days=30))
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        refusals.append((caught.value.code(), error_details(caught.value).reason))
    assert refusals == [(grpc.StatusCode.FAILED_PRECONDITION, "NOT_DYNAMIC")] * 2
    # Refused before anything started: no run, and the password is untouched.
    assert len(orchestrator.ListRuns(opb.ListRunsRequest()).runs) == runs_before
    assert _logs_in(source, source.reader, source.reader_password)


def test_root_rotation_of_another_orgs_connection_is_not_found(
    e2e: EndToEnd, dynamic_source: tuple[SourceDatabase, str, str]
) -> None:
    """Rotating, scheduling or reading the schedule of another org's connection is NOT_FOUND."""
    owner = e2e.new_tenant()
    created = _create_dynamic(e2e, owner, dynamic_source, "dynamic-foreign")
    other = e2e.orchestrator(e2e.new_tenant(start_agent=False).admin_token)
    answers = []
    for target in (created.id, str(uuid.uuid4())):
        calls: list[tuple[Callable[[Any], object], object]] = [
            (other.RotateRootCredentials, opb.RotateRootCredentialsRequest(connection_id=target)),
            (other.SetRootRotationSchedule, _schedule_request(target, timedelta(days=30))),
            (
                other.GetRootRotationSchedule,
                opb.GetRootRotationScheduleRequest(connection_id=target),
            ),
        ]
        for call, request in calls:
            with pytest.raises(grpc.RpcError) as caught:
                call(request)
            answers.append((caught.value.code(), error_details(caught.value).reason))
    assert answers == [(grpc.StatusCode.NOT_FOUND, "CONNECTION_NOT_FOUND")] * 6
    assert list(other.ListRuns(opb.ListRunsRequest()).runs) == []


def _schedule_gone(
    e2e: EndToEnd, background_loop: BackgroundLoop, tenant: Tenant, schedule_id: str
) -> bool:
    """Whether Temporal no longer has the schedule (in the org's namespace, its home)."""

    async def gone() -> bool:
        client = await Client.connect(
            e2e.stack.temporal_address, namespace=namespace_for(tenant.org_id)
        )
        try:
            await client.get_schedule_handle(schedule_id).describe()
        except RPCError as exc:
            return exc.status == RPCStatusCode.NOT_FOUND
        return False

    return background_loop.run(gone())


def _schedule_request(
    connection_id: str, interval: timedelta
) -> opb.SetRootRotationScheduleRequest:
    request = opb.SetRootRotationScheduleRequest(connection_id=connection_id)
    request.interval.FromTimedelta(interval)
    return request


def test_root_rotation_on_a_schedule(
    e2e: EndToEnd,
    tls_source_pg: EmbeddedPostgres,
    dynamic_source: tuple[SourceDatabase, str, str],
    background_loop: BackgroundLoop,
) -> None:
    """A schedule rotates through the agent like the on-demand call; zero removes it."""
    source, _, privileged = dynamic_source
    tenant = e2e.new_tenant()
    created = _create_dynamic(e2e, tenant, dynamic_source, "dynamic-scheduled")
    orchestrator = e2e.orchestrator(tenant.admin_token)
    with pytest.raises(grpc.RpcError) as too_often:
        orchestrator.SetRootRotationSchedule(_schedule_request(created.id, timedelta(minutes=5)))
    assert too_often.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1 hour to 365 days" in (too_often.value.details() or "")

    schedule = orchestrator.SetRootRotationSchedule(
        _schedule_request(created.id, timedelta(days=30))
    )
    assert schedule.interval.ToTimedelta() == timedelta(days=30)
    until_next = schedule.next_rotation_time.ToDatetime(tzinfo=UTC) - datetime.now(UTC)
    # The schedule's phase is the moment it was set: the first rotation is one interval on.
    assert timedelta(days=30) - timedelta(minutes=1) < until_next <= timedelta(days=30)
    schedule_id = f"root-rotation-{tenant.org_id}-{created.id}"

    async def run_its_first_time() -> list[bytes]:
        # As if its time had come round (a manual trigger is refused: test_e2e_work_proof);
        # without the org's codec, as Temporal holds it.
        client = await Client.connect(
            e2e.stack.temporal_address, namespace=namespace_for(tenant.org_id)
        )
        handle = client.get_schedule_handle(schedule_id)
        raw = (await handle.describe()).raw_description
        action = raw.schedule.action.start_workflow
        assert action.task_queue.name == f"tenant-{tenant.org_id}"
        now = datetime.now(UTC)
        await handle.backfill(ScheduleBackfill(start_at=now - timedelta(minutes=5), end_at=now))
        return [p.metadata["encoding"] for p in action.input.payloads]

    assert background_loop.run(run_its_first_time()) == [b"binary/encrypted"]
    deadline = time.monotonic() + 30
    while _agent_view(e2e, tenant, created.id).password == PRIVILEGED_PASSWORD:
        assert time.monotonic() < deadline, "the scheduled rotation did not happen"
        time.sleep(0.5)
    stored = _agent_view(e2e, tenant, created.id)
    assert not stored.HasField("pending_password")
    assert _logs_in(source, privileged, stored.password)
    assert not _logs_in(source, privileged, PRIVILEGED_PASSWORD)

    removed = orchestrator.SetRootRotationSchedule(_schedule_request(created.id, timedelta(0)))
    assert not removed.HasField("next_rotation_time")

    assert _schedule_gone(e2e, background_loop, tenant, schedule_id)
    read_back = orchestrator.GetRootRotationSchedule(
        opb.GetRootRotationScheduleRequest(connection_id=created.id)
    )
    assert not read_back.HasField("interval")
    # Removing a schedule that is not there is not an error.
    orchestrator.SetRootRotationSchedule(_schedule_request(created.id, timedelta(0)))


def test_deleting_a_connection_removes_its_rotation_schedule(
    e2e: EndToEnd,
    dynamic_source: tuple[SourceDatabase, str, str],
    background_loop: BackgroundLoop,
) -> None:
    """A schedule reads back as set; a member can neither stop it nor delete its connection
    (one permission model); the admin's delete removes the schedule too."""
    tenant = e2e.new_tenant()
    created = _create_dynamic(e2e, tenant, dynamic_source, "dynamic-deleted")
    orchestrator = e2e.orchestrator(tenant.admin_token)
    orchestrator.SetRootRotationSchedule(_schedule_request(created.id, timedelta(days=7)))
    read_back = orchestrator.GetRootRotationSchedule(
        opb.GetRootRotationScheduleRequest(connection_id=created.id)
    )
    assert read_back.interval.ToTimedelta() == timedelta(days=7)
    assert read_back.HasField("next_rotation_time")
    member = e2e.new_member(tenant)
    # A member may not stop an admin's schedule of a live connection...
    with pytest.raises(grpc.RpcError) as refused:
        e2e.orchestrator(member).DeleteRootRotationSchedule(
            opb.DeleteRootRotationScheduleRequest(connection_id=created.id)
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # ...nor delete the connection (which would end the schedule by another door)...
    with pytest.raises(grpc.RpcError) as refused:
        e2e.connections(member).DeleteConnection(cpb.DeleteConnectionRequest(id=created.id))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # ...while the admin's delete takes the schedule with it.
    e2e.connections(tenant.admin_token).DeleteConnection(cpb.DeleteConnectionRequest(id=created.id))
    schedule_id = f"root-rotation-{tenant.org_id}-{created.id}"

    assert _schedule_gone(e2e, background_loop, tenant, schedule_id)


CONCURRENT_ROTATIONS = 3
ROTATION_ROUNDS = 20


@pytest.mark.timeout(90)
def test_concurrent_root_rotations_always_leave_a_stored_password_that_logs_in(
    e2e: EndToEnd,
    dynamic_source: tuple[SourceDatabase, str, str],
) -> None:
    """Three rotations at once, 20 times: the stored password logs in and no older one does."""
    source, _, privileged = dynamic_source
    tenant = e2e.new_tenant()
    created = _create_dynamic(e2e, tenant, dynamic_source, "dynamic-race")
    orchestrator = e2e.orchestrator(tenant.admin_token)
    request = opb.RotateRootCredentialsRequest(connection_id=created.id)
    retired = [PRIVILEGED_PASSWORD]
    with ThreadPoolExecutor(max_workers=CONCURRENT_ROTATIONS) as pool:
        for round_ in range(ROTATION_ROUNDS):
            runs = list(
                pool.map(
                    lambda _: e2e.finished(
                        tenant.admin_token, orchestrator.RotateRootCredentials(request, timeout=60)
                    ),
                    range(CONCURRENT_ROTATIONS),
                )
            )
            assert [run.outcome_category for run in runs] == ["rotated"] * len(runs), runs
            stored = _agent_view(e2e, tenant, created.id)
            assert not stored.HasField("pending_password"), round_
            assert _logs_in(source, privileged, stored.password), f"round {round_}"
            assert not any(_logs_in(source, privileged, old) for old in retired), round_
            retired.append(stored.password)


def test_rotating_a_role_that_two_connections_share_is_refused_naming_the_other(
    e2e: EndToEnd,
    dynamic_source: tuple[SourceDatabase, str, str],
) -> None:
    """The rotation reports role_shared and names the other connection; both keep working."""
    source, _, privileged = dynamic_source
    tenant = e2e.new_tenant()
    first = _create_dynamic(e2e, tenant, dynamic_source, "dynamic-first")
    second = _create_dynamic(e2e, tenant, dynamic_source, "dynamic-second")
    run = e2e.finished(
        tenant.admin_token,
        e2e.orchestrator(tenant.admin_token).RotateRootCredentials(
            opb.RotateRootCredentialsRequest(connection_id=first.id)
        ),
    )
    assert run.outcome_category == "role_shared", run
    assert f'"dynamic-second" ({second.id})' in run.message
    assert PRIVILEGED_PASSWORD not in run.message
    stored = _agent_view(e2e, tenant, first.id)
    assert stored.password == PRIVILEGED_PASSWORD and not stored.HasField("pending_password")
    assert _logs_in(source, privileged, PRIVILEGED_PASSWORD)
    assert _preview_count(e2e, tenant, second.id) == "200"
    events = (
        AuditServiceStub(e2e._channel(tenant.admin_token))
        .ListAuditEvents(ListAuditEventsRequest(target_id=first.id, page_size=50))
        .events
    )
    assert [e.reason for e in events if e.action == "connection.root.rotate"] == ["ROLE_SHARED"]


def test_a_failing_privileged_login_is_reported_as_such_at_once(
    e2e: EndToEnd,
    tls_source_pg: EmbeddedPostgres,
    dynamic_source: tuple[SourceDatabase, str, str],
) -> None:
    """Password changed behind sevvo's back: the test and a preview say
    password_authentication_failed within seconds, and the test is not retried."""
    _, _, privileged = dynamic_source
    tenant = e2e.new_tenant()
    created = _create_dynamic(e2e, tenant, dynamic_source, "dynamic-locked-out")
    changed = "changed-behind-sevvos-back-77"
    with psycopg.connect(tls_source_pg.url, autocommit=True) as su:
        su.execute(
            sql.SQL("alter role {} password {}").format(
                sql.Identifier(privileged), sql.Literal(changed)
            )
        )
    assert tenant.agent is not None
    before = len(tenant.agent.output())
    started = time.monotonic()
    tested = e2e.connections(tenant.admin_token).TestConnection(
        cpb.TestConnectionRequest(id=created.id)
    )
    preview = (
        e2e.orchestrator(tenant.admin_token)
        .PreviewQuery(opb.PreviewQueryRequest(connection_id=created.id, sql="select 1"))
        .result
    )
    elapsed = time.monotonic() - started
    assert (tested.status, tested.last_test_category) == (
        cpb.CONNECTION_STATUS_ERROR,
        "password_authentication_failed",
    )
    assert preview.category == wpb.PREVIEW_CATEGORY_PASSWORD_AUTHENTICATION_FAILED
    # Well inside the orchestrator's 45 s wait that used to end in workflow_failed.
    assert elapsed < 30, elapsed
    output = tenant.agent.output()[before:]
    assert output.count("credential test started") == 1
    assert changed not in output and PRIVILEGED_PASSWORD not in output
