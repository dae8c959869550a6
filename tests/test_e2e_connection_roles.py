"""End to end: named roles of a dynamic connection with a real agent and a real database.

Role statements are dry-run through the agent before they are saved; leases minted from two
roles carry each role's own statements into the database; a role removed with force has its
leases revoked by the agent's reaper with that role's revocation statements; and the
``sevvo connections roles`` commands drive it all from the command line.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2
from psycopg import sql

from agent.dynamic_credentials import mint
from agent.leases import LeaseManager
from agent.postgres_probe import connect
from devstack.postgres import EmbeddedPostgres
from devstack.source_db import SourceDatabase, create_dynamic_roles, drop_roles
from sevvo.auth.v1 import auth_pb2, auth_pb2_grpc, deployments_pb2
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.connections.v1 import connections_pb2_grpc as cpb_grpc
from sevvo.runtime.grpc_client import ClientTls, error_details, secure_aio_channel
from sevvo.runtime.servicing import timestamp
from tests.cli_runner import Result, run_sevvo, run_sevvo_in_process, user_env
from tests.plugins.auth_stack import PASSWORD, BackgroundLoop
from tests.plugins.dev_stack import REAPER_SECONDS, EndToEnd, Tenant
from tests.plugins.source_db import SourceTargetFactory

PRIVILEGED_PASSWORD = "privileged-pw-roles-4242"


@dataclass
class Source:
    """A source database with a privileged role and two groups a role may put logins in."""

    db: SourceDatabase
    admin_url: str
    readers: str
    writers: str
    privileged: str

    def etl_creation(self) -> list[str]:
        """Creation statements of the role "etl": a login in the writers group."""
        return [
            "CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}"
            f' IN ROLE "{self.writers}"'
        ]

    @staticmethod
    def etl_revocation() -> list[str]:
        """Revocation statements of the role "etl", leaving a trace of each revocation."""
        return [
            "REASSIGN OWNED BY {{name}} TO CURRENT_USER",
            "DROP OWNED BY {{name}}",
            "INSERT INTO public.role_revocations (role) VALUES ('etl')",
        ]

    def query(self, text: str, *params: object) -> list[tuple[object, ...]]:
        """Runs ``text`` as the superuser in the source database."""
        with psycopg.connect(self.admin_url) as conn:
            return conn.execute(text, params or None).fetchall()

    def minted(self) -> list[str]:
        """The minted login roles that exist now."""
        return [
            str(row[0])
            for row in self.query("select rolname from pg_roles where rolname like 'sevvo_dyn_%'")
        ]

    def groups_of(self, login: str) -> set[str]:
        """The roles ``login`` is a member of."""
        return {
            str(row[0])
            for row in self.query(
                "select g.rolname from pg_auth_members m join pg_roles g on g.oid = m.roleid"
                " join pg_roles r on r.oid = m.member where r.rolname = %s",
                login,
            )
        }

    def revocations(self) -> int:
        """How many times the role "etl"'s revocation statements ran."""
        (row,) = self.query("select count(*) from public.role_revocations")
        return int(str(row[0]))

    def credentials(self) -> cpb.PostgresCredentials:
        """The privileged role's login."""
        return cpb.PostgresCredentials(
            host="localhost",
            port=self.db.port,
            database=self.db.database,
            username=self.privileged,
            password=PRIVILEGED_PASSWORD,
            ssl_mode=cpb.SSL_MODE_REQUIRE,
        )


@pytest.fixture
def source(tls_source_pg: EmbeddedPostgres, source_target: SourceTargetFactory) -> Iterator[Source]:
    """A seeded source database, its privileged role, a readers and a writers group, and a
    table the role "etl"'s revocation statements write to."""
    db = source_target(tls_source_pg)
    admin_url = tls_source_pg.admin_url(db.database)
    readers, privileged = create_dynamic_roles(
        admin_url, database=db.database, password=PRIVILEGED_PASSWORD
    )
    writers = f"writers_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for statement in (
            "CREATE ROLE {writers} NOLOGIN",
            "GRANT {writers} TO {privileged} WITH ADMIN OPTION",
            "CREATE TABLE public.role_revocations (role text NOT NULL)",
            "GRANT USAGE ON SCHEMA public TO {privileged}",
            "GRANT INSERT ON public.role_revocations TO {privileged}",
        ):
            conn.execute(
                sql.SQL(statement).format(
                    writers=sql.Identifier(writers), privileged=sql.Identifier(privileged)
                )
            )
    yield Source(db, admin_url, readers, writers, privileged)
    drop_roles(admin_url, privileged, readers, writers)


def _connection(e2e: EndToEnd, tenant: Tenant, source: Source) -> cpb.Connection:
    created: cpb.Connection = e2e.connections(tenant.admin_token).CreateConnection(
        cpb.CreateConnectionRequest(
            display_name=f"dyn-{uuid.uuid4().hex[:6]}",
            dynamic=EndToEnd.dynamic(
                source.db,
                privileged=source.privileged,
                privileged_password=PRIVILEGED_PASSWORD,
                group=source.readers,
                ttl=300,
                max_ttl=900,
            ),
        )
    )
    assert created.status == cpb.CONNECTION_STATUS_CONNECTED
    return created


def _roles(e2e: EndToEnd, tenant: Tenant) -> cpb_grpc.ConnectionRoleServiceStub:
    return cpb_grpc.ConnectionRoleServiceStub(e2e._channel(tenant.admin_token))


def _role_names(e2e: EndToEnd, tenant: Tenant, connection_id: str) -> list[str]:
    listed = _roles(e2e, tenant).ListConnectionRoles(
        cpb.ListConnectionRolesRequest(connection_id=connection_id)
    )
    return [role.name for role in listed.roles]


def _agent_bearer(e2e: EndToEnd, tenant: Tenant) -> str:
    return str(e2e.stack.auth.domain.exchange(tenant.deployment_token).token)


def _leases(e2e: EndToEnd, tenant: Tenant, connection_id: str) -> list[cpb.Lease]:
    return list(
        cpb_grpc.LeaseServiceStub(e2e._channel(tenant.admin_token))
        .ListLeases(cpb.ListLeasesRequest(connection_id=connection_id, page_size=500))
        .leases
    )


def _wait_for(condition: Callable[[], bool], what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_role_statements_are_dry_run_before_save_and_a_failure_saves_nothing(
    e2e: EndToEnd, source: Source
) -> None:
    """A statement that would fail at mint time fails create (named, with its SQLSTATE) and
    update alike; nothing is saved, and no scratch role is left in the database."""
    tenant = e2e.new_tenant()
    connection = _connection(e2e, tenant, source)
    roles = _roles(e2e, tenant)
    broken = cpb.ConnectionRoleSettings(
        creation_statements=[*source.etl_creation(), "GRANT SELECT ON no_such_table TO {{name}}"]
    )
    with pytest.raises(grpc.RpcError) as refused:
        roles.CreateConnectionRole(
            cpb.CreateConnectionRoleRequest(
                connection_id=connection.id, name="etl", settings=broken
            )
        )
    details = error_details(refused.value)
    assert (details.code, details.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CREDENTIAL_TEST_FAILED",
    )
    assert (details.metadata or {}).get("category") == "dynamic_statements_failed"
    assert "creation_statements[1] failed" in details.message
    assert "42P01" in details.message
    assert PRIVILEGED_PASSWORD not in details.message
    assert _role_names(e2e, tenant, connection.id) == ["default"]

    created = roles.CreateConnectionRole(
        cpb.CreateConnectionRoleRequest(
            connection_id=connection.id,
            name="etl",
            settings=cpb.ConnectionRoleSettings(
                creation_statements=source.etl_creation(),
                revocation_statements=source.etl_revocation(),
            ),
        )
    )
    assert created.revocation_statement_count == 3
    with pytest.raises(grpc.RpcError) as refused:
        roles.UpdateConnectionRole(
            cpb.UpdateConnectionRoleRequest(
                connection_id=connection.id,
                name="etl",
                settings=cpb.ConnectionRoleSettings(
                    revocation_statements=["REVOKE SELECT ON no_such_table FROM {{name}}"]
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["revocation_statements"]),
            )
        )
    assert "revocation_statements[0] failed" in error_details(refused.value).message
    unchanged = roles.GetConnectionRole(
        cpb.GetConnectionRoleRequest(connection_id=connection.id, name="etl")
    )
    assert unchanged == created
    assert source.minted() == []
    assert source.revocations() == 0  # A dry run always rolls back.


def test_two_roles_mint_their_own_logins_and_a_forced_removal_is_reaped_with_its_statements(
    e2e: EndToEnd, source: Source, background_loop: BackgroundLoop
) -> None:
    """Leases of "default" and "etl" join their own groups; "etl"'s removal is refused while
    its leases live, and with force the agent's reaper drops them with "etl"'s revocation
    statements, after which no minted role is left."""
    tenant = e2e.new_tenant()
    connection = _connection(e2e, tenant, source)
    _roles(e2e, tenant).CreateConnectionRole(
        cpb.CreateConnectionRoleRequest(
            connection_id=connection.id,
            name="etl",
            settings=cpb.ConnectionRoleSettings(
                default_ttl_seconds=120,
                max_ttl_seconds=600,
                creation_statements=source.etl_creation(),
                revocation_statements=source.etl_revocation(),
            ),
        )
    )
    bearer = _agent_bearer(e2e, tenant)
    seen: dict[str, set[str]] = {}

    async def borrow_both() -> None:
        # The agent's own lease code, in this process, as the tenant's agent.
        channel = secure_aio_channel(
            e2e.stack.grpc_target, ClientTls(e2e.stack.pki.ca_cert), lambda: bearer
        )
        try:
            credentials = cpb_grpc.ConnectionCredentialServiceStub(channel)
            manager = LeaseManager(cpb_grpc.LeaseServiceStub(channel), credentials)
            resolved = {
                role: await credentials.ResolveConnectionCredentials(
                    cpb.ResolveConnectionCredentialsRequest(
                        connection_id=connection.id, purpose="sync", role=role
                    )
                )
                for role in ("default", "etl")
            }
            async with (
                manager.workload_credentials(connection.id, "sync", resolved["default"]) as reader,
                manager.workload_credentials(
                    connection.id, "sync", resolved["etl"], role="etl"
                ) as writer,
            ):
                seen[reader.username] = source.groups_of(reader.username)
                seen[writer.username] = source.groups_of(writer.username)
                seen["etl"] = {writer.username}
        finally:
            await channel.close()

    background_loop.run(borrow_both())
    (writer,) = seen.pop("etl")
    (reader,) = set(seen) - {writer}
    assert seen[reader] == {source.readers}
    assert seen[writer] == {source.writers}
    assert source.minted() == []
    assert source.revocations() == 1  # Only the "etl" lease ran "etl"'s revocation.
    leases = _leases(e2e, tenant, connection.id)
    assert {(lease.role_name, lease.role) for lease in leases} >= {
        (reader, "default"),
        (writer, "etl"),
    }

    # Two "etl" leases left live, as a workload that still holds them would.
    agent_leases = cpb_grpc.LeaseServiceStub(e2e._channel(bearer))

    async def leave_two_live() -> None:
        admin = await connect(source.credentials(), connect_timeout=10)
        try:
            for _ in range(2):
                lease_id = str(uuid.uuid4())

                async def intent(
                    name: str, valid_until: datetime, lease_id: str = lease_id
                ) -> None:
                    # Off the loop: the stack's servers run on it.
                    await asyncio.to_thread(
                        agent_leases.CreateLease,
                        cpb.CreateLeaseRequest(
                            lease_id=lease_id,
                            connection_id=connection.id,
                            role_name=name,
                            role="etl",
                            purpose="sync",
                            expire_time=timestamp(valid_until),
                            max_expire_time=timestamp(valid_until + timedelta(minutes=5)),
                        ),
                    )

                await mint(
                    admin,
                    creation=source.etl_creation(),
                    ttl=timedelta(minutes=5),
                    purpose="sync",
                    before_commit=intent,
                )
        finally:
            await admin.close()

    background_loop.run(leave_two_live())
    assert len(source.minted()) == 2
    roles = _roles(e2e, tenant)
    with pytest.raises(grpc.RpcError) as refused:
        roles.DeleteConnectionRole(
            cpb.DeleteConnectionRoleRequest(connection_id=connection.id, name="etl")
        )
    details = error_details(refused.value)
    assert (details.code, details.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ROLE_HAS_LEASES",
    )
    assert "2 leases" in details.message
    assert len(source.minted()) == 2

    removed = roles.DeleteConnectionRole(
        cpb.DeleteConnectionRoleRequest(connection_id=connection.id, name="etl", force=True)
    )
    assert len(removed.leases) == 2
    assert _role_names(e2e, tenant, connection.id) == ["default"]
    _wait_for(lambda: source.minted() == [], "the reaper drops the etl logins", 10 * REAPER_SECONDS)
    # Each was revoked with "etl"'s own statements, although the role is gone for users.
    assert source.revocations() == 3
    _wait_for(
        lambda: (
            {lease.state for lease in _leases(e2e, tenant, connection.id)}
            == {cpb.LEASE_STATE_REVOKED}
        ),
        "every lease recorded revoked",
        10 * REAPER_SECONDS,
    )
    # With its leases revoked, the name is free again.
    again = roles.CreateConnectionRole(
        cpb.CreateConnectionRoleRequest(
            connection_id=connection.id,
            name="etl",
            settings=cpb.ConnectionRoleSettings(group_role=source.readers),
        )
    )
    assert again.creation_statement_count == 1
    assert tenant.agent is not None
    assert PRIVILEGED_PASSWORD not in tenant.agent.output()


# The command line.


def _signed_in_tenant(e2e: EndToEnd, config_dir: Path) -> tuple[Tenant, dict[str, str]]:
    """A new org whose admin is signed in through ``sevvo login``, with its agent running."""
    name = f"roles-{uuid.uuid4().hex[:8]}"
    email = f"admin@{name}.example"
    e2e.stack.auth.domain.create_org_with_admin(name, email, PASSWORD)
    env = user_env(e2e.stack.grpc_target, e2e.stack.pki.ca_cert, config_dir)
    login = run_sevvo(("login", "--email", email, "--password-stdin"), env, PASSWORD + "\n", 60)
    assert login.code == 0, login.stderr
    signed_in = auth_pb2_grpc.AuthServiceStub(e2e._channel(None)).SignIn(
        auth_pb2.SignInRequest(email=email, password=PASSWORD)
    )
    created = e2e.deployments(signed_in.session_token).CreateDeployment(
        deployments_pb2.CreateDeploymentRequest(display_name=f"{name}-agent")
    )
    tenant = Tenant(
        org_id=signed_in.org_id,
        admin_token=signed_in.session_token,
        deployment_id=created.deployment.id,
        deployment_token=created.deployment_token,
    )
    tenant.agent = e2e.start_agent(tenant)
    return tenant, env


def test_roles_commands_add_show_change_and_remove_a_role(
    e2e: EndToEnd, source: Source, tmp_path: Path
) -> None:
    """``sevvo connections roles`` creates (dry-run by the agent), lists, gets, updates and
    deletes; a bad name is a usage error; ``leases list --role`` filters."""
    tenant, env = _signed_in_tenant(e2e, tmp_path / "sevvo")
    connection = _connection(e2e, tenant, source)

    def sevvo(*args: str) -> Result:
        # In this process (the sign-in above ran the real ``python -m cli``).
        return run_sevvo_in_process(args, env, "")

    def ok(*args: str) -> Any:
        result = sevvo(*args)
        assert result.code == 0, result.stderr
        return result.json()

    created = ok(
        "connections",
        "roles",
        "create",
        connection.display_name,
        "etl",
        "--default-ttl",
        "5m",
        "--max-ttl",
        "1h",
        *(arg for s in source.etl_creation() for arg in ("--creation-statement", s)),
    )
    assert (created["name"], created["default_ttl_seconds"], created["max_ttl_seconds"]) == (
        "etl",
        300,
        3600,
    )
    assert created["creation_statement_count"] == 1
    listed = ok("connections", "roles", "list", connection.id)["roles"]
    assert [role["name"] for role in listed] == ["default", "etl"]
    assert ok("connections", "roles", "get", connection.id, "etl")["max_ttl_seconds"] == 3600
    updated = ok("connections", "roles", "update", connection.id, "etl", "--max-ttl", "2h")
    assert (updated["max_ttl_seconds"], updated["default_ttl_seconds"]) == (7200, 300)
    assert ok("leases", "list", "--connection", connection.id, "--role", "etl")["leases"] == []

    bad = sevvo("connections", "roles", "create", connection.id, "Not-A-Role")
    assert bad.code == 2, bad.stderr
    assert "name" in bad.stderr and "lowercase" in bad.stderr
    unconfirmed = sevvo("connections", "roles", "delete", connection.id, "etl")
    assert unconfirmed.code == 2
    assert "--yes" in unconfirmed.stderr
    kept = sevvo("connections", "roles", "delete", connection.id, "default", "--yes")
    assert kept.code == 1
    assert "DEFAULT_ROLE_REQUIRED" in kept.stderr
    deleted = ok("connections", "roles", "delete", connection.id, "etl", "--yes")
    assert deleted == {"deleted": "etl", "leases": [], "unrevoked_lease_count": 0}
    remaining = ok("connections", "roles", "list", connection.id)["roles"]
    assert [role["name"] for role in remaining] == ["default"]


def test_a_long_workload_keeps_its_lease_alive_until_it_ends(
    e2e: EndToEnd, source: Source, background_loop: BackgroundLoop
) -> None:
    """With keep-alive (a sync's leases) the lease record and the role's VALID UNTIL move
    forward while the workload runs, so neither the reaper nor the server ends a sync longer
    than the TTL; when it ends the lease is revoked as any other."""
    tenant = e2e.new_tenant()
    connection = _connection(e2e, tenant, source)
    bearer = _agent_bearer(e2e, tenant)
    seen: dict[str, Any] = {}

    def valid_until(login: str) -> datetime:
        (row,) = source.query("select rolvaliduntil from pg_roles where rolname = %s", login)
        assert isinstance(row[0], datetime)
        return row[0]

    def expiry(login: str) -> datetime:
        (lease,) = [
            lease for lease in _leases(e2e, tenant, connection.id) if lease.role_name == login
        ]
        return lease.expire_time.ToDatetime(UTC)

    async def borrow() -> None:
        channel = secure_aio_channel(
            e2e.stack.grpc_target, ClientTls(e2e.stack.pki.ca_cert), lambda: bearer
        )
        try:
            credentials = cpb_grpc.ConnectionCredentialServiceStub(channel)
            manager = LeaseManager(cpb_grpc.LeaseServiceStub(channel), credentials)
            resolved = await credentials.ResolveConnectionCredentials(
                cpb.ResolveConnectionCredentialsRequest(
                    connection_id=connection.id, purpose="sync_source"
                )
            )
            async with manager.workload_credentials(
                connection.id, "sync_source", resolved, keep_alive=timedelta(seconds=1)
            ) as login:
                name = login.username
                first = await asyncio.to_thread(lambda: (expiry(name), valid_until(name)))
                await asyncio.sleep(2.5)
                later = await asyncio.to_thread(lambda: (expiry(name), valid_until(name)))
                seen.update(name=name, first=first, later=later)
        finally:
            await channel.close()

    background_loop.run(borrow())
    (first_record, first_role), (later_record, later_role) = seen["first"], seen["later"]
    assert later_record > first_record + timedelta(seconds=1)
    assert later_role > first_role + timedelta(seconds=1)
    assert later_record >= later_role - timedelta(seconds=1)
    assert seen["name"] not in source.minted()
