"""End to end: the agent's credential API, over its real Unix socket, for customer workloads.

A real agent process serves the socket; the control plane and Temporal are the dev stack's;
the customer database is an embedded Postgres logging every statement (log_statement = all).
Workloads are asyncio gRPC clients (and, for the crash test, a subprocess that is killed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from temporalio.client import Client

from devstack.agent_process import AgentProcess
from devstack.pki import DevPki
from devstack.postgres import EmbeddedPostgres
from devstack.source_db import create_dynamic_roles, create_source_database, drop_roles
from sevvo.agent.v1 import credentials_pb2 as apb
from sevvo.agent.v1 import credentials_pb2_grpc as apb_grpc
from sevvo.audit.v1 import audit_pb2, audit_pb2_grpc
from sevvo.auth.v1 import workloads_pb2, workloads_pb2_grpc
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.connections.v1 import connections_pb2_grpc as cpb_grpc
from sevvo.runtime.credential_token import WORKLOAD_TOKEN, Credentials
from sevvo.runtime.files import write_private_file
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.logs import configure_logging
from sevvo.runtime.temporal import namespace_for
from tests.plugins.auth_stack import BackgroundLoop
from tests.plugins.dev_stack import REAPER_SECONDS, EndToEnd, Tenant
from tests.plugins.source_db import SourceTargetFactory

PRIVILEGED_PASSWORD = "privileged-pw-credapi-7171"
ROLE_DEFAULT_TTL = 300
ROLE_MAX_TTL = 900


@pytest.fixture(scope="module")
def logging_pg() -> Iterator[EmbeddedPostgres]:
    """The customer's database server, logging every statement and connection."""
    directory = Path(tempfile.mkdtemp(prefix="sevvo-credapi-"))
    try:
        settings = {"log_statement": "all", "log_connections": "on"}
        with EmbeddedPostgres(directory, durable=False, settings=settings) as server:
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class Setup:
    """A tenant with its agent serving the socket, a dynamic connection with roles
    "default" and "reporting", and a workload granted both."""

    tenant: Tenant
    agent: AgentProcess
    socket: Path
    connection: cpb.Connection
    admin_url: str
    workload_id: str
    token: str

    def query(self, text: str, *params: object) -> list[tuple[object, ...]]:
        """Runs ``text`` as the superuser in the customer database."""
        with psycopg.connect(self.admin_url) as conn:
            return conn.execute(text, params or None).fetchall()

    def minted(self) -> list[str]:
        """The minted login roles that exist now."""
        rows = self.query("select rolname from pg_roles where rolname like 'sevvo_dyn_%'")
        return sorted(str(row[0]) for row in rows)

    def sessions_of(self, role: str) -> int:
        """How many sessions ``role`` has open."""
        (row,) = self.query("select count(*) from pg_stat_activity where usename = %s", role)
        return int(str(row[0]))

    def catalog_state(self) -> tuple[object, ...]:
        """pg_roles, table ACLs and schema ACLs, to compare before and after."""
        return (
            self.query("select rolname from pg_roles order by 1"),
            self.query(
                "select relname, relacl::text from pg_class where relnamespace ="
                " 'public'::regnamespace order by 1"
            ),
            self.query("select nspname, nspacl::text from pg_namespace order by 1"),
        )


def _workload(
    e2e: EndToEnd, tenant: Tenant, grants: list[tuple[str, str]], max_ttl: int = 3600
) -> workloads_pb2.CreateWorkloadResponse:
    stub = workloads_pb2_grpc.WorkloadServiceStub(e2e._channel(tenant.admin_token))
    created: workloads_pb2.CreateWorkloadResponse = stub.CreateWorkload(
        workloads_pb2.CreateWorkloadRequest(
            display_name=f"svc-{uuid.uuid4().hex[:6]}",
            grants=[workloads_pb2.WorkloadGrant(connection_id=c, role=r) for c, r in grants],
            max_ttl_seconds=max_ttl,
        )
    )
    return created


def _start_agent(e2e: EndToEnd, tenant: Tenant, socket: Path) -> AgentProcess:
    name = f"credapi-{tenant.org_id[:8]}"
    token_file = e2e.stack.state_dir / f"{name}-deployment-token"
    write_private_file(token_file, tenant.deployment_token + "\n")
    settings = dataclasses.replace(
        e2e.stack.agent_settings(token_file, reaper_seconds=REAPER_SECONDS),
        credential_socket=socket,
    )
    agent = AgentProcess(settings, e2e.stack.state_dir / f"{name}.log")
    e2e.stack.agents.append(agent)
    return agent.start()


@pytest.fixture
def setup(e2e: EndToEnd, logging_pg: EmbeddedPostgres) -> Iterator[Setup]:
    """A fresh tenant, database, connection with two roles, workload and socket agent."""
    suffix = uuid.uuid4().hex[:10]
    database = f"credapi_{suffix}"
    create_source_database(
        logging_pg.url, database=database, reader=f"reader_{suffix}", reader_password=suffix
    )
    admin_url = logging_pg.admin_url(database)
    group, privileged = create_dynamic_roles(
        admin_url, database=database, password=PRIVILEGED_PASSWORD
    )
    tenant = e2e.new_tenant(start_agent=False)
    # Short enough for a Unix socket path (108 bytes), private to this test.
    socket_dir = Path(tempfile.mkdtemp(prefix="sevvo-sock-"))
    socket = socket_dir / "agent.sock"
    agent = _start_agent(e2e, tenant, socket)
    connection = e2e.connections(tenant.admin_token).CreateConnection(
        cpb.CreateConnectionRequest(
            display_name=f"reporting-db-{suffix}",
            dynamic=cpb.PostgresDynamic(
                host="127.0.0.1",
                port=logging_pg.port,
                database=database,
                ssl_mode=cpb.SSL_MODE_DISABLE,
                privileged_username=privileged,
                privileged_password=PRIVILEGED_PASSWORD,
                default_ttl_seconds=ROLE_DEFAULT_TTL,
                max_ttl_seconds=ROLE_MAX_TTL,
                group_role=group,
            ),
        )
    )
    assert connection.status == cpb.CONNECTION_STATUS_CONNECTED
    cpb_grpc.ConnectionRoleServiceStub(e2e._channel(tenant.admin_token)).CreateConnectionRole(
        cpb.CreateConnectionRoleRequest(
            connection_id=connection.id,
            name="reporting",
            settings=cpb.ConnectionRoleSettings(
                default_ttl_seconds=120,
                max_ttl_seconds=600,
                creation_statements=[
                    "CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL"
                    f' {{{{expiration}}}} IN ROLE "{group}"'
                ],
            ),
        )
    )
    workload = _workload(e2e, tenant, [(connection.id, "default"), (connection.id, "reporting")])
    yield Setup(
        tenant,
        agent,
        socket,
        connection,
        admin_url,
        workload.workload.id,
        workload.workload_token,
    )
    agent.stop()
    assert not socket.exists()  # The agent removes its socket when it stops.
    shutil.rmtree(socket_dir, ignore_errors=True)
    drop_roles(admin_url, privileged, group)


def _stub(socket: Path) -> tuple[grpc.aio.Channel, apb_grpc.CredentialServiceStub]:
    channel = grpc.aio.insecure_channel(f"unix:{socket}")
    return channel, apb_grpc.CredentialServiceStub(channel)


def _auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def _refusal(call: Callable[[], object]) -> tuple[grpc.StatusCode, str | None, str]:
    try:
        await call()  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        details = error_details(exc)
        return details.code, details.reason, details.message
    raise AssertionError("the call was not refused")


def test_generate_use_renew_revoke_over_the_socket(
    setup: Setup, background_loop: BackgroundLoop
) -> None:
    """Generate by name gives a working login (SELECT works); renew moves its expiry; renewing
    past the maximum is FAILED_PRECONDITION LEASE_PAST_MAX_TTL; revoke drops the role, twice."""
    mode = setup.socket.stat().st_mode & 0o777
    assert mode == 0o660

    async def body() -> None:
        channel, stub = _stub(setup.socket)
        async with channel:
            credential = await stub.GenerateCredential(
                apb.GenerateCredentialRequest(
                    connection=setup.connection.display_name,
                    role="reporting",
                    purpose="count_orders",
                ),
                metadata=_auth(setup.token),
            )
            assert credential.connection_id == setup.connection.id
            assert credential.role == "reporting"
            assert credential.ssl_mode == "disable"
            assert credential.username.startswith("sevvo_dyn_count_orders_")
            lifetime = credential.expire_time.seconds - time.time()
            assert 100 < lifetime <= 121  # The role's default TTL, 120 s.
            with psycopg.connect(credential.conninfo) as conn:
                (count,) = conn.execute("select count(*) from orders").fetchone() or (0,)
                assert int(count) > 0
                assert conn.execute("select current_user").fetchone() == (credential.username,)
            assert credential.username in setup.minted()

            renewed = await stub.RenewCredential(
                apb.RenewCredentialRequest(lease_id=credential.lease_id, increment_seconds=400),
                metadata=_auth(setup.token),
            )
            assert renewed.expire_time.seconds > credential.expire_time.seconds
            (until,) = setup.query(
                "select extract(epoch from rolvaliduntil)::bigint from pg_roles where rolname = %s",
                credential.username,
            )
            assert abs(int(str(until[0])) - renewed.expire_time.seconds) <= 1
            code, reason, message = await _refusal(
                lambda: stub.RenewCredential(
                    apb.RenewCredentialRequest(
                        lease_id=credential.lease_id, increment_seconds=3000
                    ),
                    metadata=_auth(setup.token),
                )
            )
            assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "LEASE_PAST_MAX_TTL")
            assert "borrow a new credential" in message

            for _ in range(2):  # Idempotent.
                await stub.RevokeCredential(
                    apb.RevokeCredentialRequest(lease_id=credential.lease_id),
                    metadata=_auth(setup.token),
                )
            assert setup.minted() == []
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(credential.conninfo, connect_timeout=5).close()

            # One borrower at a time, for the report (a shared machine: noisy, not asserted).
            generate_ms = []
            for _ in range(10):
                started = time.perf_counter()
                lent = await stub.GenerateCredential(
                    apb.GenerateCredentialRequest(connection=setup.connection.id),
                    metadata=_auth(setup.token),
                )
                generate_ms.append((time.perf_counter() - started) * 1000)
                await stub.RevokeCredential(
                    apb.RevokeCredentialRequest(lease_id=lent.lease_id),
                    metadata=_auth(setup.token),
                )
            bare_ms = []
            with psycopg.connect(setup.admin_url, autocommit=True) as conn:
                for i in range(10):
                    name = psycopg.sql.Identifier(f"bare_{i}_{uuid.uuid4().hex[:6]}")
                    started = time.perf_counter()
                    conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'x'").format(name))
                    conn.execute(psycopg.sql.SQL("DROP ROLE {}").format(name))
                    bare_ms.append((time.perf_counter() - started) * 1000)
            print(
                f"sequential generate p50 {sorted(generate_ms)[5]:.1f} ms; bare CREATE ROLE +"
                f" DROP ROLE p50 {sorted(bare_ms)[5]:.1f} ms (shared machine)"
            )
            assert setup.minted() == []

    background_loop.run(body(), timeout=60)


def test_refusals_are_counted_and_none_mints(
    e2e: EndToEnd, setup: Setup, background_loop: BackgroundLoop, logging_pg: EmbeddedPostgres
) -> None:
    """No, malformed, wrong and revoked tokens are UNAUTHENTICATED; an ungranted role, a TTL
    over the workload's maximum and another workload's lease are PERMISSION_DENIED; another
    org's workload is refused too. Nothing is minted by a refused call, and a refusal the
    bearer's grants foretell sends the database no CREATE ROLE at all."""
    ungranted = _workload(e2e, setup.tenant, [(setup.connection.id, "reporting")], max_ttl=60)
    other = _workload(e2e, setup.tenant, [(setup.connection.id, "default")])
    revoked = _workload(e2e, setup.tenant, [(setup.connection.id, "default")])
    foreign_tenant = e2e.new_tenant(start_agent=False)
    foreign = _workload(e2e, foreign_tenant, [(str(uuid.uuid4()), "default")])
    # An unknown workload: a wrong secret for a real one would slow that one's exchanges down.
    wrong = WORKLOAD_TOKEN.wrap(Credentials(str(uuid.uuid4()), "x" * 43))
    outcomes: dict[str, tuple[grpc.StatusCode, str | None]] = {}
    late_successes: list[str] = []

    def generate(
        stub: apb_grpc.CredentialServiceStub, token: str | None, role: str = "default", ttl: int = 0
    ) -> Any:
        return stub.GenerateCredential(
            apb.GenerateCredentialRequest(
                connection=setup.connection.id, role=role, ttl_seconds=ttl
            ),
            metadata=_auth(token) if token is not None else None,
        )

    async def borrow(token: str) -> apb.Credential:
        channel, stub = _stub(setup.socket)
        async with channel:
            credential: apb.Credential = await generate(stub, token)
            return credential

    # The revoked workload borrowed once, so the agent holds its bearer in cache.
    held = background_loop.run(borrow(revoked.workload_token))
    workloads_pb2_grpc.WorkloadServiceStub(e2e._channel(setup.tenant.admin_token)).RevokeWorkload(
        workloads_pb2.RevokeWorkloadRequest(id=revoked.workload.id)
    )
    mine = background_loop.run(borrow(setup.token))

    async def body() -> None:
        channel, stub = _stub(setup.socket)
        async with channel:
            cases: dict[str, Callable[[], object]] = {
                "no_token": lambda: generate(stub, None),
                "malformed_token": lambda: generate(stub, "sevvo_wt_nope"),
                "wrong_secret": lambda: generate(stub, wrong),
                "revoked_workload": lambda: generate(stub, revoked.workload_token),
                "ungranted_role": lambda: generate(
                    stub, ungranted.workload_token, role="default", ttl=30
                ),
                "ttl_over_workload_max": lambda: generate(
                    stub, ungranted.workload_token, role="reporting", ttl=300
                ),
                "another_org": lambda: generate(stub, foreign.workload_token),
                "renew_others_lease": lambda: stub.RenewCredential(
                    apb.RenewCredentialRequest(lease_id=mine.lease_id, increment_seconds=60),
                    metadata=_auth(other.workload_token),
                ),
                "revoke_others_lease": lambda: stub.RevokeCredential(
                    apb.RevokeCredentialRequest(lease_id=mine.lease_id),
                    metadata=_auth(other.workload_token),
                ),
            }
            deadline = time.monotonic() + 10
            for name, call in cases.items():
                logged_before = _statement_log_mark(setup, logging_pg, f"before {name}")
                while True:
                    try:
                        lent = await call()  # type: ignore[misc]
                    except grpc.aio.AioRpcError as exc:
                        details = error_details(exc)
                        assert setup.token not in details.message
                        outcomes[name] = (details.code, details.reason)
                        break
                    # A revocation reaches every verifier within seconds, not at once: a
                    # borrow in between still works (and is given back here).
                    assert name == "revoked_workload", f"{name} was not refused"
                    assert time.monotonic() < deadline, "the revocation never took effect"
                    await stub.RevokeCredential(
                        apb.RevokeCredentialRequest(lease_id=lent.lease_id),
                        metadata=_auth(revoked.workload_token),
                    )
                    late_successes.append(name)
                    await asyncio.sleep(0.5)
                if name in ("ungranted_role", "ttl_over_workload_max"):
                    logged = _statement_log_mark(setup, logging_pg, f"after {name}")
                    statements = logging_pg.log_file.read_bytes()[logged_before:logged]
                    assert b"CREATE ROLE" not in statements, name
            await stub.RevokeCredential(
                apb.RevokeCredentialRequest(lease_id=mine.lease_id), metadata=_auth(setup.token)
            )

    background_loop.run(body(), timeout=90)
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert outcomes == {
        "no_token": (unauthenticated, "TOKEN_MISSING"),
        "malformed_token": (unauthenticated, "INVALID_WORKLOAD_TOKEN"),
        "wrong_secret": (unauthenticated, "INVALID_WORKLOAD_TOKEN"),
        "revoked_workload": (unauthenticated, "WORKLOAD_REVOKED"),
        "ungranted_role": (denied, "ROLE_NOT_GRANTED"),
        "ttl_over_workload_max": (denied, "TTL_OVER_WORKLOAD_MAXIMUM"),
        "another_org": (denied, "WORKLOAD_OF_ANOTHER_ORG"),
        "renew_others_lease": (denied, "LEASE_OF_ANOTHER_WORKLOAD"),
        "revoke_others_lease": (denied, "LEASE_OF_ANOTHER_WORKLOAD"),
    }
    # Every refusal past authentication reached connections, which audited it in the agent's
    # org: the other org's workload too, though the agent could have refused it itself.
    refusals = (
        audit_pb2_grpc.AuditServiceStub(e2e._channel(setup.tenant.admin_token))
        .ListAuditEvents(audit_pb2.ListAuditEventsRequest(action="lease.refuse", page_size=100))
        .events
    )
    audited = [event.reason for event in refusals]
    # The revoked workload's cached bearer may reach connections before the agent forgets
    # it; connections refuses and audits that too.
    assert sorted(reason for reason in audited if reason != "WORKLOAD_REVOKED") == sorted(
        str(reason) for code, reason in outcomes.values() if code is denied
    )
    print(
        f"refusals: {len(outcomes) + len(late_successes)} attempts, {len(outcomes)} refused,"
        f" {len(late_successes)} succeeded (a revoked workload before the revocation arrived)"
    )
    # Only the revoked workload's earlier lease is left; an admin has the reaper revoke it.
    assert setup.minted() == [held.username]
    cpb_grpc.LeaseServiceStub(e2e._channel(setup.tenant.admin_token)).RevokeLeases(
        cpb.RevokeLeasesRequest(connection_id=setup.connection.id, lease_id=held.lease_id)
    )
    deadline = time.monotonic() + 5 * REAPER_SECONDS + 10
    while setup.minted():
        assert time.monotonic() < deadline, "the reaper did not revoke the lease"
        time.sleep(0.25)


def _statement_log_mark(setup: Setup, server: EmbeddedPostgres, label: str) -> int:
    """How long the server's statement log is once a marker statement run now is in it, so
    that the log up to there holds every statement sent before."""
    marker = f"log mark {uuid.uuid4().hex} {label}"
    setup.query("select %s::text", marker)
    deadline = time.monotonic() + 10
    while True:
        text = server.log_file.read_bytes()
        at = text.find(marker.encode())
        if at >= 0:
            return at
        assert time.monotonic() < deadline, "the statement log never showed the marker"
        time.sleep(0.05)


_CLIENT = """
import sys, time, grpc, psycopg
from sevvo.agent.v1 import credentials_pb2 as apb, credentials_pb2_grpc as apb_grpc
channel = grpc.insecure_channel("unix:" + sys.argv[1])
stub = apb_grpc.CredentialServiceStub(channel)
credential = stub.GenerateCredential(
    apb.GenerateCredentialRequest(connection=sys.argv[2], ttl_seconds=4, purpose="crashy"),
    metadata=(("authorization", "Bearer " + sys.stdin.readline().strip()),),
)
conn = psycopg.connect(credential.conninfo)
conn.execute("select count(*) from orders")
print(credential.username, flush=True)
time.sleep(600)
"""


def test_a_service_killed_mid_lease_leaves_no_role_and_no_session(setup: Setup) -> None:
    """A subprocess borrows a 4 s credential, holds a session, and is killed: after the
    TTL and a reaper pass, neither the role nor its session remains."""
    client = subprocess.Popen(
        [sys.executable, "-c", _CLIENT, str(setup.socket), setup.connection.id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write(setup.token + "\n")
        client.stdin.close()
        username = client.stdout.readline().strip()
        assert username in setup.minted()
        assert setup.sessions_of(username) == 1
    finally:
        client.kill()
        client.wait(10)
        if client.stdout is not None:
            client.stdout.close()
    started = time.monotonic()
    deadline = started + 4 + 3 * REAPER_SECONDS + 10
    while username in setup.minted() or setup.sessions_of(username):
        assert time.monotonic() < deadline, "the reaper left the role or its session"
        time.sleep(0.25)
    print(f"killed service's role reaped {time.monotonic() - started:.1f}s after the kill")


def _history_bytes(e2e: EndToEnd, org_id: str, background_loop: BackgroundLoop) -> bytes:
    async def collect() -> bytes:
        client = await Client.connect(e2e.stack.temporal_address, namespace=namespace_for(org_id))
        chunks = []
        async for execution in client.list_workflows():
            handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
            events = (await handle.fetch_history()).events
            chunks += [event.SerializeToString() for event in events]
        return b"".join(chunks)

    return background_loop.run(collect(), timeout=60)


def _control_plane_rows(database_url: str) -> str:
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "select table_schema, table_name from information_schema.tables where table_type ="
            " 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema')"
        ).fetchall()
        # Every service's schema is searched, and the leases table with it.
        assert {"auth", "connections", "orchestrator"} <= {schema for schema, _ in tables}
        assert ("connections", "leases") in tables
        texts = []
        for schema, table in tables:
            query = psycopg.sql.SQL("select t::text from {}.{} t").format(
                psycopg.sql.Identifier(schema), psycopg.sql.Identifier(table)
            )
            texts += [str(row[0]) for row in conn.execute(query).fetchall()]
    return "\n".join(texts)


def test_200_concurrent_borrowers_all_succeed_and_leave_the_catalog_as_it_was(
    e2e: EndToEnd,
    setup: Setup,
    logging_pg: EmbeddedPostgres,
    background_loop: BackgroundLoop,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """200 asyncio borrowers across two roles each generate, query and revoke; all succeed,
    every role is gone, pg_roles and the ACLs are as before, and no minted password is in
    the control plane's tables, any log, Temporal's history or the server's statement log."""
    # The in-process services' log, wherever an earlier test in this process pointed it.
    services_log = io.StringIO()
    configure_logging("tests", level="INFO", json=True, stream=services_log)
    before = setup.catalog_state()
    borrowers = 200
    passwords: list[str] = []
    timings: list[float] = []

    async def borrower(stub: apb_grpc.CredentialServiceStub, index: int) -> None:
        started = time.perf_counter()
        credential = await stub.GenerateCredential(
            apb.GenerateCredentialRequest(
                connection=setup.connection.id,
                role="reporting" if index % 2 else "default",
                purpose="load_test",
            ),
            metadata=_auth(setup.token),
        )
        timings.append(time.perf_counter() - started)
        passwords.append(credential.password)
        conn = await psycopg.AsyncConnection.connect(credential.conninfo)
        async with conn:
            await conn.execute("select count(*) from orders")
        await stub.RevokeCredential(
            apb.RevokeCredentialRequest(lease_id=credential.lease_id),
            metadata=_auth(setup.token),
        )

    async def body() -> list[BaseException | None]:
        channel, stub = _stub(setup.socket)
        async with channel:
            return await asyncio.gather(
                *(borrower(stub, i) for i in range(borrowers)), return_exceptions=True
            )

    started = time.monotonic()
    results = background_loop.run(body(), timeout=240)
    elapsed = time.monotonic() - started
    failures = [r for r in results if r is not None]
    assert failures == [], failures[:3]
    assert len(set(passwords)) == borrowers
    assert setup.minted() == []
    assert setup.catalog_state() == before
    timings.sort()
    with capfd.disabled():  # The numbers for the reader; the capture is for the leak check.
        print(
            f"{borrowers} borrowers: {borrowers - len(failures)} succeeded in {elapsed:.1f}s;"
            f" generate p50 {timings[len(timings) // 2] * 1000:.0f} ms,"
            f" p95 {timings[int(len(timings) * 0.95)] * 1000:.0f} ms (shared machine)"
        )

    # The roles are gone when RevokeCredential answers; the record of the revocation's end
    # lands right behind it (credential_broker, "revoke").
    lease_stub = cpb_grpc.LeaseServiceStub(e2e._channel(setup.tenant.admin_token))
    deadline = time.monotonic() + 10
    while True:
        leases = lease_stub.ListLeases(
            cpb.ListLeasesRequest(connection_id=setup.connection.id, page_size=500)
        ).leases
        revoked = sum(lease.state == cpb.LEASE_STATE_REVOKED for lease in leases)
        if revoked >= borrowers or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert revoked >= borrowers, sorted(cpb.LeaseState.Name(lease.state) for lease in leases)
    assert {lease.workload_id for lease in leases} == {setup.workload_id}

    captured = capfd.readouterr()
    haystacks = {
        "control-plane tables": _control_plane_rows(e2e.stack.database_url),
        "agent log": setup.agent.output(),
        "services' output": captured.out + captured.err + services_log.getvalue(),
        "temporal history": _history_bytes(e2e, setup.tenant.org_id, background_loop).decode(
            errors="replace"
        ),
        "postgres log": logging_pg.log_file.read_text(errors="replace"),
    }
    # Each haystack holds what it should: every statement, every lease event.
    assert 'CREATE ROLE "sevvo_dyn_load_test_' in haystacks["postgres log"]
    assert "workload lease minted" in haystacks["agent log"]
    assert "lease recorded" in haystacks["services' output"]
    for where, text in haystacks.items():
        leaked = [p for p in passwords if p in text]
        assert leaked == [], f"{len(leaked)} minted passwords in the {where}"
        assert setup.token not in text, f"the workload token is in the {where}"


def test_a_verifying_connection_lends_a_conninfo_with_its_ca_file(
    e2e: EndToEnd,
    setup: Setup,
    tls_source_pg: EmbeddedPostgres,
    source_target: SourceTargetFactory,
    dev_pki: DevPki,
    background_loop: BackgroundLoop,
) -> None:
    """For a verify-full connection the conninfo says sslmode=verify-full and names a CA file
    beside the socket, and a login with it verifies the server and works."""
    db = source_target(tls_source_pg)
    admin_url = tls_source_pg.admin_url(db.database)
    group, privileged = create_dynamic_roles(
        admin_url, database=db.database, password=PRIVILEGED_PASSWORD
    )
    try:
        connection = e2e.connections(setup.tenant.admin_token).CreateConnection(
            cpb.CreateConnectionRequest(
                display_name=f"verified-{uuid.uuid4().hex[:6]}",
                dynamic=cpb.PostgresDynamic(
                    host="localhost",
                    port=db.port,
                    database=db.database,
                    ssl_mode=cpb.SSL_MODE_VERIFY_FULL,
                    ssl_root_cert=dev_pki.ca_cert.read_text(),
                    privileged_username=privileged,
                    privileged_password=PRIVILEGED_PASSWORD,
                    group_role=group,
                ),
            )
        )
        assert connection.status == cpb.CONNECTION_STATUS_CONNECTED
        workload = _workload(e2e, setup.tenant, [(connection.id, "default")])

        async def body() -> tuple[apb.Credential, str]:
            channel, stub = _stub(setup.socket)
            async with channel:
                credential: apb.Credential = await stub.GenerateCredential(
                    apb.GenerateCredentialRequest(connection=connection.id),
                    metadata=_auth(workload.workload_token),
                )
                conn = await psycopg.AsyncConnection.connect(credential.conninfo)
                async with conn:
                    cur = await conn.execute(
                        "select ssl from pg_stat_ssl where pid = pg_backend_pid()"
                    )
                    ssl = str(await cur.fetchone())
                await stub.RevokeCredential(
                    apb.RevokeCredentialRequest(lease_id=credential.lease_id),
                    metadata=_auth(workload.workload_token),
                )
                return credential, ssl

        credential, ssl = background_loop.run(body(), timeout=60)
        parsed = psycopg.conninfo.conninfo_to_dict(credential.conninfo)
        assert (credential.ssl_mode, parsed["sslmode"]) == ("verify-full", "verify-full")
        root_cert = Path(str(parsed["sslrootcert"]))
        assert root_cert.parent == setup.socket.parent
        assert root_cert.read_text() == dev_pki.ca_cert.read_text()
        assert ssl == "(True,)"
        with psycopg.connect(admin_url) as conn:
            rows = conn.execute(
                "select count(*) from pg_roles where rolname = %s", (credential.username,)
            )
            assert rows.fetchone() == (0,)
    finally:
        drop_roles(admin_url, privileged, group)
