"""Named roles of dynamic connections over real gRPC/TLS and Postgres: CRUD, sealing, leases
per role, forced removal, tenancy, permissions, audit, and the migration of older data.

This control plane has no orchestrator, so roles save without the agent's dry run (as
connections do); tests/test_e2e_connection_roles.py covers the dry run and minting with a
real agent.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from services.connections.domain import ConnectionsDomain
from services.connections.leases import LeasesDomain
from services.connections.postgres_target import from_dynamic
from services.connections.roles import RolesDomain, RoleSettingsInput
from services.connections.store import MIGRATIONS, ConnectionStore
from sevvo.audit.v1 import audit_pb2
from sevvo.auth.v1 import auth_pb2, users_pb2, workloads_pb2, workloads_pb2_grpc
from sevvo.connections.v1 import connections_pb2 as pb
from sevvo.connections.v1 import connections_pb2_grpc as pb_grpc
from sevvo.runtime import credential_templates, migrations
from sevvo.runtime.errors import FailedPrecondition, NotFound
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.sealing import Keyring, seal
from sevvo.runtime.tokens import Principal, PrincipalKind
from sevvo.runtime.workload_bearer import METADATA_KEY
from tests.plugins.auth_stack import PASSWORD, Org
from tests.plugins.control_plane import ControlPlane

SECRET = "privileged-Pa55-roles-canary"
CREATE_ETL = (
    "CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}"
    " IN ROLE etl_canary_writers"
)
REVOKE_ETL = "REVOKE etl_canary_writers FROM {{name}}"


def _ts(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _in(seconds: float) -> Timestamp:
    return _ts(datetime.now(UTC) + timedelta(seconds=seconds))


@dataclass
class Tenant:
    """An org with one dynamic connection, and stubs as its admin and its agent."""

    org: Org
    connection_id: str
    roles: pb_grpc.ConnectionRoleServiceStub
    leases: pb_grpc.LeaseServiceStub
    agent_leases: pb_grpc.LeaseServiceStub
    agent_credentials: pb_grpc.ConnectionCredentialServiceStub

    def create_role(self, name: str, **settings: Any) -> pb.ConnectionRole:
        """Adds a role as the org's admin."""
        created: pb.ConnectionRole = self.roles.CreateConnectionRole(
            pb.CreateConnectionRoleRequest(
                connection_id=self.connection_id,
                name=name,
                settings=pb.ConnectionRoleSettings(**settings),
            )
        )
        return created

    def lease(self, role: str = "", max_ttl: float = 600, **fields: Any) -> pb.Lease:
        """Records a lease as the org's agent, minted from ``role``."""
        lease: pb.Lease = self.agent_leases.CreateLease(
            pb.CreateLeaseRequest(
                connection_id=self.connection_id,
                role_name=f"sevvo_dyn_{uuid.uuid4().hex[:10]}",
                purpose="sync",
                expire_time=_in(min(60, max_ttl)),
                max_expire_time=_in(max_ttl),
                role=role,
                **fields,
            )
        )
        return lease

    def resolve(self, role: str = "") -> pb.ResolveConnectionCredentialsResponse:
        """The credentials as the org's agent resolves them for ``role``."""
        resolved: pb.ResolveConnectionCredentialsResponse = (
            self.agent_credentials.ResolveConnectionCredentials(
                pb.ResolveConnectionCredentialsRequest(
                    connection_id=self.connection_id, purpose="reaper", role=role
                )
            )
        )
        return resolved

    def delete_role(self, name: str, *, force: bool = False) -> pb.DeleteConnectionRoleResponse:
        """Removes a role as the org's admin."""
        removed: pb.DeleteConnectionRoleResponse = self.roles.DeleteConnectionRole(
            pb.DeleteConnectionRoleRequest(connection_id=self.connection_id, name=name, force=force)
        )
        return removed

    def role_names(self) -> list[str]:
        """The names ListConnectionRoles shows, in its order."""
        listed = self.roles.ListConnectionRoles(
            pb.ListConnectionRolesRequest(connection_id=self.connection_id)
        )
        return [role.name for role in listed.roles]


def _tenant(control_plane: ControlPlane, name: str = "Acme") -> Tenant:
    org = control_plane.auth.create_org(name)
    connection = control_plane.create_dynamic(
        org, "dyn", SECRET, default_ttl_seconds=600, max_ttl_seconds=7200
    )
    agent = control_plane.agent_for(org)
    return Tenant(
        org=org,
        connection_id=connection.id,
        roles=pb_grpc.ConnectionRoleServiceStub(control_plane._channel(org.admin_token)),
        leases=control_plane.leases(org.admin_token),
        agent_leases=control_plane.leases(agent),
        agent_credentials=control_plane.credentials(agent),
    )


@pytest.fixture
def control_plane(shared_control_plane: ControlPlane) -> ControlPlane:
    """One control plane for the module: every test makes its own org, so none meet."""
    return shared_control_plane


@pytest.fixture
def tenant(control_plane: ControlPlane) -> Tenant:
    """A fresh org with one dynamic connection (default role: 10 min, at most 2 h)."""
    return _tenant(control_plane)


def _refused(call: Callable[[], object]) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    details = error_details(caught.value)
    return details.code, details.reason or "", details.field or details.message


def _member(control_plane: ControlPlane, org: Org) -> str:
    email = f"member-{uuid.uuid4().hex[:6]}@acme.example"
    control_plane.auth.users(org.admin_token).CreateUser(
        users_pb2.CreateUserRequest(email=email, password=PASSWORD)
    )
    return str(
        control_plane.auth.auth()
        .SignIn(auth_pb2.SignInRequest(email=email, password=PASSWORD))
        .session_token
    )


def _sql(control_plane: ControlPlane, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(control_plane.app.config.database_url) as conn:
        return conn.execute(query, params).fetchall()


# Create, read, update.


def test_a_dynamic_connection_starts_with_its_default_role(tenant: Tenant) -> None:
    """The single set of a new dynamic connection is its role "default", as resolve sees it."""
    (default,) = tenant.roles.ListConnectionRoles(
        pb.ListConnectionRolesRequest(connection_id=tenant.connection_id)
    ).roles
    assert (default.name, default.default_ttl_seconds, default.max_ttl_seconds) == (
        "default",
        600,
        7200,
    )
    assert (default.group_role, default.creation_statement_count) == ("sevvo_readers", 1)
    resolved = tenant.resolve()
    assert resolved.dynamic.role == "default"
    assert resolved.dynamic.max_ttl_seconds == 7200


def test_roles_are_created_listed_and_resolved_with_their_own_statements(
    control_plane: ControlPlane, tenant: Tenant
) -> None:
    """Each role keeps its statements and TTLs; users see counts, the agent the statements."""
    created = tenant.create_role(
        "etl",
        default_ttl_seconds=120,
        max_ttl_seconds=900,
        creation_statements=[CREATE_ETL],
        revocation_statements=[REVOKE_ETL],
    )
    assert (created.name, created.default_ttl_seconds, created.max_ttl_seconds) == (
        "etl",
        120,
        900,
    )
    assert (created.creation_statement_count, created.revocation_statement_count) == (1, 1)
    tenant.create_role("readonly", group_role="shop_readers")
    assert tenant.role_names() == ["default", "etl", "readonly"]
    fetched = tenant.roles.GetConnectionRole(
        pb.GetConnectionRoleRequest(connection_id=tenant.connection_id, name="etl")
    )
    assert fetched == created
    assert "etl_canary_writers" not in str(fetched)

    etl = tenant.resolve("etl").dynamic
    assert (etl.role, list(etl.creation_statements), list(etl.revocation_statements)) == (
        "etl",
        [CREATE_ETL],
        [REVOKE_ETL],
    )
    readonly = tenant.resolve("readonly").dynamic
    assert list(readonly.creation_statements) == credential_templates.default_creation(
        "shop_readers"
    )
    # The default role and the connection's summary are untouched.
    assert list(tenant.resolve().dynamic.creation_statements) == (
        credential_templates.default_creation("sevvo_readers")
    )
    code, reason, _ = _refused(lambda: tenant.resolve("missing"))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "ROLE_NOT_FOUND")


def test_role_statements_stay_sealed(control_plane: ControlPlane, tenant: Tenant) -> None:
    """No table holds a role's statements in clear: they are in the sealed payload only."""
    tenant.create_role("etl", creation_statements=[CREATE_ETL], revocation_statements=[REVOKE_ETL])
    dumped = _sql(
        control_plane,
        "select (select json_agg(c)::text from connections.connections c),"
        " (select json_agg(r)::text from connections.connection_roles r),"
        " (select json_agg(e)::text from audit.events e)",
    )[0]
    for text in dumped:
        assert "etl_canary_writers" not in text
        assert SECRET not in text
    assert tenant.resolve("etl").postgres.password == SECRET


def test_update_changes_the_masked_settings_and_default_follows_the_connection(
    control_plane: ControlPlane, tenant: Tenant
) -> None:
    """A masked update keeps the rest; updating "default" updates the connection's summary."""
    tenant.create_role(
        "etl", default_ttl_seconds=300, max_ttl_seconds=900, creation_statements=[CREATE_ETL]
    )
    updated = tenant.roles.UpdateConnectionRole(
        pb.UpdateConnectionRoleRequest(
            connection_id=tenant.connection_id,
            name="etl",
            settings=pb.ConnectionRoleSettings(max_ttl_seconds=1800, group_role="ignored"),
            update_mask=field_mask_pb2.FieldMask(paths=["max_ttl_seconds"]),
        )
    )
    assert (updated.max_ttl_seconds, updated.group_role) == (1800, "sevvo_readers")
    assert list(tenant.resolve("etl").dynamic.creation_statements) == [CREATE_ETL]

    tenant.roles.UpdateConnectionRole(
        pb.UpdateConnectionRoleRequest(
            connection_id=tenant.connection_id,
            name="default",
            settings=pb.ConnectionRoleSettings(group_role="shop_readers"),
            update_mask=field_mask_pb2.FieldMask(paths=["group_role"]),
        )
    )
    connection = control_plane.connections(tenant.org.admin_token).GetConnection(
        pb.GetConnectionRequest(id=tenant.connection_id)
    )
    assert connection.dynamic.group_role == "shop_readers"
    assert list(tenant.resolve().dynamic.creation_statements) == (
        credential_templates.default_creation("shop_readers")
    )


@pytest.mark.parametrize(
    ("name", "settings", "field"),
    [
        ("Bad-Name", pb.ConnectionRoleSettings(), "name"),
        ("etl", pb.ConnectionRoleSettings(default_ttl_seconds=30), "settings.default_ttl_seconds"),
        (
            "etl",
            pb.ConnectionRoleSettings(creation_statements=["GRANT SELECT ON t TO x"]),
            "settings.creation_statements",
        ),
    ],
    ids=["name", "ttl", "statements"],
)
def test_invalid_create_is_refused_naming_the_field_and_stores_nothing(
    tenant: Tenant, name: str, settings: pb.ConnectionRoleSettings, field: str
) -> None:
    """INVALID_ARGUMENT names the field; the connection keeps only its default role."""
    code, _, named = _refused(
        lambda: tenant.roles.CreateConnectionRole(
            pb.CreateConnectionRoleRequest(
                connection_id=tenant.connection_id, name=name, settings=settings
            )
        )
    )
    assert (code, named) == (grpc.StatusCode.INVALID_ARGUMENT, field)
    assert tenant.role_names() == ["default"]


def test_invalid_update_is_refused_and_changes_nothing(tenant: Tenant) -> None:
    """A bad mask, or a max TTL under the default TTL, is INVALID_ARGUMENT; the role stays."""
    before = tenant.create_role("etl", default_ttl_seconds=600, max_ttl_seconds=900)
    cases: list[tuple[list[str], pb.ConnectionRoleSettings, str]] = [
        (["name"], pb.ConnectionRoleSettings(), "update_mask"),
        ([], pb.ConnectionRoleSettings(), "update_mask"),
        (
            ["max_ttl_seconds"],
            pb.ConnectionRoleSettings(max_ttl_seconds=300),
            "settings.default_ttl_seconds",
        ),
    ]
    for paths, settings, field in cases:
        request = pb.UpdateConnectionRoleRequest(
            connection_id=tenant.connection_id,
            name="etl",
            settings=settings,
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        )
        code, _, named = _refused(partial(tenant.roles.UpdateConnectionRole, request))
        assert (code, named) == (grpc.StatusCode.INVALID_ARGUMENT, field)
    after = tenant.roles.GetConnectionRole(
        pb.GetConnectionRoleRequest(connection_id=tenant.connection_id, name="etl")
    )
    assert after == before


def test_refusals_of_state_name_their_reason(control_plane: ControlPlane, tenant: Tenant) -> None:
    """A taken name, a fixed-password connection, "default" removal and a missing role."""
    tenant.create_role("etl")
    plain = control_plane.create(tenant.org, "plain", SECRET)
    cases: list[tuple[Callable[[], object], grpc.StatusCode, str]] = [
        (lambda: tenant.create_role("etl"), grpc.StatusCode.ALREADY_EXISTS, "ROLE_NAME_TAKEN"),
        (
            lambda: tenant.roles.CreateConnectionRole(
                pb.CreateConnectionRoleRequest(connection_id=plain.id, name="etl")
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "NOT_DYNAMIC_CONNECTION",
        ),
        (
            lambda: tenant.delete_role("default"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "DEFAULT_ROLE_REQUIRED",
        ),
        (lambda: tenant.delete_role("missing"), grpc.StatusCode.NOT_FOUND, "ROLE_NOT_FOUND"),
        (
            lambda: tenant.roles.GetConnectionRole(
                pb.GetConnectionRoleRequest(connection_id=tenant.connection_id, name="missing")
            ),
            grpc.StatusCode.NOT_FOUND,
            "ROLE_NOT_FOUND",
        ),
    ]
    for call, code, reason in cases:
        assert _refused(call)[:2] == (code, reason)
    assert tenant.role_names() == ["default", "etl"]


def test_a_new_privileged_password_keeps_the_roles_and_preview_settings(
    control_plane: ControlPlane,
) -> None:
    """Replacing the connection's password through UpdateConnection re-seals its payload with
    every role and the owner's preview settings still in it."""
    org = control_plane.auth.create_org("Keep")
    connection = control_plane.create_dynamic(
        org, "dyn", SECRET, preview=pb.PreviewSettings(allowed_functions=["similarity"])
    )
    roles = pb_grpc.ConnectionRoleServiceStub(control_plane._channel(org.admin_token))
    roles.CreateConnectionRole(
        pb.CreateConnectionRoleRequest(
            connection_id=connection.id,
            name="etl",
            settings=pb.ConnectionRoleSettings(creation_statements=[CREATE_ETL]),
        )
    )
    control_plane.connections(org.admin_token).UpdateConnection(
        pb.UpdateConnectionRequest(
            id=connection.id,
            connection=pb.ConnectionUpdate(fields=pb.PostgresFields(password="new-Pa55-canary")),
            update_mask=field_mask_pb2.FieldMask(paths=["fields.password"]),
        )
    )
    agent = control_plane.credentials(control_plane.agent_for(org))
    resolved = agent.ResolveConnectionCredentials(
        pb.ResolveConnectionCredentialsRequest(connection_id=connection.id, role="etl")
    )
    assert resolved.postgres.password == "new-Pa55-canary"
    assert list(resolved.dynamic.creation_statements) == [CREATE_ETL]
    assert list(resolved.preview.allowed_functions) == ["similarity"]


def test_a_connection_holds_at_most_twenty_roles(tenant: Tenant) -> None:
    """The 21st role is refused (ROLE_LIMIT_REACHED): every role rides in the sealed payload."""
    for index in range(19):
        tenant.create_role(f"role_{index}")
    code, reason, _ = _refused(lambda: tenant.create_role("one_too_many"))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ROLE_LIMIT_REACHED")
    assert len(tenant.role_names()) == 20


# Leases carry their role.


def test_leases_take_the_ttl_limit_of_their_role(tenant: Tenant) -> None:
    """A lease's max expiry is bounded by its role's max TTL, not the connection's."""
    tenant.create_role("short", default_ttl_seconds=60, max_ttl_seconds=300)
    assert tenant.lease("short", max_ttl=290).role == "short"
    code, reason, _ = _refused(lambda: tenant.lease("short", max_ttl=3600))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "LEASE_PAST_MAX_TTL")
    # The default role (2 hours) allows it; an empty role is the default role.
    assert tenant.lease("", max_ttl=3600).role == "default"
    code, reason, _ = _refused(lambda: tenant.lease("nope"))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "ROLE_NOT_FOUND")
    code, _, field = _refused(lambda: tenant.lease("Not A Role"))
    assert (code, field) == (grpc.StatusCode.INVALID_ARGUMENT, "role")


def test_leases_record_their_workload_and_are_listed_and_counted_by_role(
    control_plane: ControlPlane, tenant: Tenant
) -> None:
    """workload_id is stored and filterable; ListLeases filters by role; CountLeases groups."""
    tenant.create_role("etl")
    created = workloads_pb2_grpc.WorkloadServiceStub(
        control_plane.auth.channel(tenant.org.admin_token)
    ).CreateWorkload(
        workloads_pb2.CreateWorkloadRequest(
            display_name="etl-job",
            grants=[workloads_pb2.WorkloadGrant(connection_id=tenant.connection_id, role="etl")],
            max_ttl_seconds=3600,
        )
    )
    workload = created.workload.id
    bearer = control_plane.auth.auth().ExchangeWorkloadToken(
        auth_pb2.ExchangeWorkloadTokenRequest(workload_token=created.workload_token)
    )
    # The workload is the forwarded bearer's (tests/test_workload_leases.py covers the rules).
    borrowed = tenant.agent_leases.CreateLease(
        pb.CreateLeaseRequest(
            connection_id=tenant.connection_id,
            role_name=f"sevvo_dyn_{uuid.uuid4().hex[:10]}",
            purpose="sync",
            expire_time=_in(60),
            max_expire_time=_in(600),
            role="etl",
        ),
        metadata=((METADATA_KEY, f"Bearer {bearer.bearer_token}"),),
    )
    assert (borrowed.role, borrowed.workload_id) == ("etl", workload)
    tenant.lease("etl")
    chore = tenant.lease()
    assert chore.workload_id == ""
    code, _, field = _refused(lambda: tenant.lease("etl", workload_id="not-a-uuid"))
    assert (code, field) == (grpc.StatusCode.INVALID_ARGUMENT, "workload_id")

    def listed(**filters: Any) -> list[str]:
        return [
            lease.id for lease in tenant.leases.ListLeases(pb.ListLeasesRequest(**filters)).leases
        ]

    assert len(listed(role="etl")) == 2
    assert listed(role="default") == [chore.id]
    assert listed(workload_id=workload) == [borrowed.id]
    assert listed(role="etl", workload_id=workload) == [borrowed.id]
    counts = tenant.leases.CountLeases(pb.CountLeasesRequest(connection_id=tenant.connection_id))
    assert {(c.role, c.count) for c in counts.by_role} == {("default", 1), ("etl", 2)}
    code, _, field = _refused(lambda: tenant.leases.ListLeases(pb.ListLeasesRequest(role="A B")))
    assert (code, field) == (grpc.StatusCode.INVALID_ARGUMENT, "role")


# Removal.


def test_removing_a_role_with_live_leases_needs_force_and_names_the_count(
    tenant: Tenant,
) -> None:
    """Unrevoked leases block removal (ROLE_HAS_LEASES, with the count); nothing changes."""
    tenant.create_role("etl")
    tenant.lease("etl")
    tenant.lease("etl")
    with pytest.raises(grpc.RpcError) as caught:
        tenant.delete_role("etl")
    details = error_details(caught.value)
    assert (details.code, details.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ROLE_HAS_LEASES",
    )
    assert "2 leases not yet revoked" in details.message
    assert (details.metadata or {}).get("unrevoked_leases") == "2"
    assert tenant.role_names() == ["default", "etl"]
    states = {lease.state for lease in tenant.leases.ListLeases(pb.ListLeasesRequest()).leases}
    assert states == {pb.LEASE_STATE_CREATING}


def test_a_role_without_leases_is_removed_at_once(tenant: Tenant) -> None:
    """Its row and sealed statements go; the name can be used again."""
    tenant.create_role("etl", creation_statements=[CREATE_ETL])
    removed = tenant.delete_role("etl")
    assert (list(removed.leases), removed.unrevoked_lease_count) == ([], 0)
    assert tenant.role_names() == ["default"]
    assert _refused(lambda: tenant.resolve("etl"))[1] == "ROLE_NOT_FOUND"
    assert tenant.create_role("etl").creation_statement_count == 1


def test_forced_removal_asks_the_reaper_and_keeps_the_statements_until_revoked(
    tenant: Tenant,
) -> None:
    """Force marks the role's live leases revoke_requested; the role is gone for users and
    new leases, but the reaper still resolves its statements until the last lease is revoked,
    after which the next change to the connection's roles drops them."""
    tenant.create_role("etl", creation_statements=[CREATE_ETL], revocation_statements=[REVOKE_ETL])
    first, second = tenant.lease("etl"), tenant.lease("etl")
    other = tenant.lease()
    removed = tenant.delete_role("etl", force=True)
    assert sorted(lease.id for lease in removed.leases) == sorted([first.id, second.id])
    assert {lease.state for lease in removed.leases} == {pb.LEASE_STATE_REVOKE_REQUESTED}
    assert removed.unrevoked_lease_count == 2
    assert tenant.role_names() == ["default"]
    assert _refused(lambda: tenant.lease("etl"))[1] == "ROLE_NOT_FOUND"
    assert _refused(lambda: tenant.create_role("etl"))[1] == "ROLE_BEING_REMOVED"
    # The reaper finds them, with their role, and can still resolve its revocation.
    to_reap = tenant.agent_leases.ListLeasesToReap(pb.ListLeasesToReapRequest()).leases
    assert sorted((lease.id, lease.role) for lease in to_reap) == sorted(
        [(first.id, "etl"), (second.id, "etl")]
    )
    assert list(tenant.resolve("etl").dynamic.revocation_statements) == [REVOKE_ETL]
    # The default role's lease was not touched.
    assert (
        tenant.leases.ListLeases(pb.ListLeasesRequest(role="default")).leases[0].state
        == other.state
    )
    for lease in (first, second):
        tenant.agent_leases.UpdateLease(
            pb.UpdateLeaseRequest(lease_id=lease.id, state=pb.LEASE_STATE_REVOKED)
        )
    # Every lease revoked: the next change drops the role's statements for good.
    assert tenant.create_role("etl").creation_statement_count == 1
    assert list(tenant.resolve("etl").dynamic.revocation_statements) == []


# Tenancy and permissions.


def test_another_org_can_neither_see_nor_touch_a_connections_roles(
    control_plane: ControlPlane, tenant: Tenant
) -> None:
    """Org B's admin and agent get NOT_FOUND for org A's connection and roles."""
    tenant.create_role("etl")
    b = _tenant(control_plane, "Other")
    a_connection = tenant.connection_id
    calls: list[Callable[[], object]] = [
        lambda: b.roles.ListConnectionRoles(
            pb.ListConnectionRolesRequest(connection_id=a_connection)
        ),
        lambda: b.roles.GetConnectionRole(
            pb.GetConnectionRoleRequest(connection_id=a_connection, name="etl")
        ),
        lambda: b.roles.CreateConnectionRole(
            pb.CreateConnectionRoleRequest(connection_id=a_connection, name="stolen")
        ),
        lambda: b.roles.UpdateConnectionRole(
            pb.UpdateConnectionRoleRequest(
                connection_id=a_connection,
                name="etl",
                settings=pb.ConnectionRoleSettings(max_ttl_seconds=600),
                update_mask=field_mask_pb2.FieldMask(paths=["max_ttl_seconds"]),
            )
        ),
        lambda: b.roles.DeleteConnectionRole(
            pb.DeleteConnectionRoleRequest(connection_id=a_connection, name="etl", force=True)
        ),
        lambda: b.agent_credentials.ResolveConnectionCredentials(
            pb.ResolveConnectionCredentialsRequest(connection_id=a_connection, role="etl")
        ),
        lambda: b.agent_leases.CreateLease(
            pb.CreateLeaseRequest(
                connection_id=a_connection,
                role_name="sevvo_dyn_x",
                role="etl",
                purpose="sync",
                expire_time=_in(60),
                max_expire_time=_in(60),
            )
        ),
    ]
    for call in calls:
        assert _refused(call)[0] == grpc.StatusCode.NOT_FOUND
    assert tenant.role_names() == ["default", "etl"]
    assert list(b.leases.CountLeases(pb.CountLeasesRequest()).by_role) == []


def test_members_read_roles_and_only_admins_change_them(
    control_plane: ControlPlane, tenant: Tenant
) -> None:
    """A member lists and gets roles; create, update and delete are PERMISSION_DENIED."""
    tenant.create_role("etl")
    member = pb_grpc.ConnectionRoleServiceStub(
        control_plane._channel(_member(control_plane, tenant.org))
    )
    listed = member.ListConnectionRoles(
        pb.ListConnectionRolesRequest(connection_id=tenant.connection_id)
    )
    assert [role.name for role in listed.roles] == ["default", "etl"]
    writes: list[Callable[[], object]] = [
        lambda: member.CreateConnectionRole(
            pb.CreateConnectionRoleRequest(connection_id=tenant.connection_id, name="mine")
        ),
        lambda: member.UpdateConnectionRole(
            pb.UpdateConnectionRoleRequest(
                connection_id=tenant.connection_id,
                name="etl",
                settings=pb.ConnectionRoleSettings(max_ttl_seconds=600),
                update_mask=field_mask_pb2.FieldMask(paths=["max_ttl_seconds"]),
            )
        ),
        lambda: member.DeleteConnectionRole(
            pb.DeleteConnectionRoleRequest(connection_id=tenant.connection_id, name="etl")
        ),
    ]
    for call in writes:
        assert _refused(call)[0] == grpc.StatusCode.PERMISSION_DENIED
    assert tenant.role_names() == ["default", "etl"]


def test_every_role_change_is_audited(control_plane: ControlPlane, tenant: Tenant) -> None:
    """Create, update and delete leave success records; a refused delete a failure record."""
    tenant.create_role("etl", default_ttl_seconds=300)
    tenant.roles.UpdateConnectionRole(
        pb.UpdateConnectionRoleRequest(
            connection_id=tenant.connection_id,
            name="etl",
            settings=pb.ConnectionRoleSettings(max_ttl_seconds=600),
            update_mask=field_mask_pb2.FieldMask(paths=["max_ttl_seconds"]),
        )
    )
    tenant.lease("etl")
    with pytest.raises(grpc.RpcError):
        tenant.delete_role("etl")
    tenant.delete_role("etl", force=True)
    events = (
        control_plane.audit(tenant.org.admin_token)
        .ListAuditEvents(audit_pb2.ListAuditEventsRequest(target_id=tenant.connection_id))
        .events
    )
    role_events = [
        (e.action, e.outcome, e.reason, e.details.get("role"), e.details.get("unrevoked_leases"))
        for e in reversed(events)
        if e.action.startswith("connection.role.")
    ]
    success, failure = audit_pb2.AUDIT_OUTCOME_SUCCESS, audit_pb2.AUDIT_OUTCOME_FAILURE
    assert role_events == [
        ("connection.role.create", success, "", "etl", None),
        ("connection.role.update", success, "", "etl", None),
        ("connection.role.delete", failure, "ROLE_HAS_LEASES", "etl", None),
        ("connection.role.delete", success, "", "etl", "1"),
    ]


# Migration of data written before named roles.


def _old_principal(org_id: uuid.UUID) -> Principal:
    return Principal(
        kind=PrincipalKind.AGENT,
        org_id=str(org_id),
        subject_id=str(uuid.uuid4()),
        token_id=str(uuid.uuid4()),
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )


def test_migration_turns_every_dynamic_connections_set_into_its_default_role(
    database_url: str, tmp_path: Path
) -> None:
    """A dynamic connection and its lease written by the schema before named roles come
    through the migration as role "default": listed, resolved, leased, reaped."""
    old = tmp_path / "old"
    old.mkdir()
    for path in sorted(MIGRATIONS.glob("*.sql"))[:5]:
        shutil.copy(path, old / path.name)
    assert migrations.apply(database_url, "connections", old) == [1, 2, 3, 4, 5]

    keyring = Keyring.generate("k1")
    org_id, connection_id, lease_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    target = from_dynamic(
        host="db.acme.internal",
        port=None,
        database="shop",
        ssl_mode="require",
        privileged_username="sevvo_admin",
        privileged_password=SECRET,
        default_ttl_seconds=600,
        max_ttl_seconds=1200,
        creation_statements=[CREATE_ETL],
        revocation_statements=[REVOKE_ETL],
        group_role="",
    )
    # Sealed as the release before named roles sealed it: the same payload, no roles section.
    sealed = seal(
        keyring, target.to_json(), f"sevvo.connections.v1|{org_id}|{connection_id}".encode()
    )
    created = datetime(2024, 1, 2, tzinfo=UTC)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "insert into connections.connections (id, org_id, display_name, credential_mode,"
            " host, port, database, username, ssl_mode, kek_id, sealed_credentials, status,"
            " created_at, updated_at, default_ttl_seconds, max_ttl_seconds, group_role,"
            " creation_statement_count, revocation_statement_count) values (%s, %s, 'old',"
            " 'dynamic', 'db.acme.internal', 5432, 'shop', 'sevvo_admin', 'require', %s, %s,"
            " 'connected', %s, %s, 600, 1200, 'sevvo_readers', 1, 1)",
            (connection_id, org_id, sealed.key_id, sealed.blob, created, created),
        )
        conn.execute(
            "insert into connections.leases (id, org_id, connection_id, role_name, purpose,"
            " state, created_at, updated_at, expires_at, max_expires_at) values"
            " (%s, %s, %s, 'sevvo_dyn_oldlease01', 'preview', 'active', %s, %s, %s, %s)",
            (lease_id, org_id, connection_id, created, created, created, created),
        )

    store = ConnectionStore(database_url)
    store.open()  # Applies 0006 onwards.
    try:
        caller = _old_principal(org_id)
        connections = ConnectionsDomain(store, keyring)
        roles = RolesDomain(store, connections)
        leases = LeasesDomain(store)
        listed, _ = roles.list(caller, str(connection_id), 0, "")
        assert [(r.name, r.default_ttl_seconds, r.max_ttl_seconds) for r in listed] == [
            ("default", 600, 1200)
        ]
        assert (listed[0].creation_statement_count, listed[0].created_at) == (1, created)
        resolved = connections.resolve(caller, str(connection_id), "reaper")
        assert resolved.dynamic is not None
        assert resolved.dynamic.creation_statements == (CREATE_ETL,)
        # The old lease is the default role's, still listed for the reaper.
        (old_lease,) = leases.list_to_reap(caller, str(connection_id), 0, "")[0]
        assert (old_lease.id, old_lease.role, old_lease.workload_id) == (lease_id, "default", None)
        # New leases and new roles work on the migrated connection.
        now = datetime.now(UTC)
        new_lease = leases.create(
            caller,
            connection_id=str(connection_id),
            role_name="sevvo_dyn_newlease01",
            purpose="preview",
            expire_time=now + timedelta(seconds=60),
            max_expire_time=now + timedelta(seconds=1200),
        )
        assert new_lease.role == "default"
        with pytest.raises(FailedPrecondition):
            leases.create(
                caller,
                connection_id=str(connection_id),
                role_name="sevvo_dyn_newlease02",
                purpose="preview",
                expire_time=now + timedelta(seconds=60),
                max_expire_time=now + timedelta(seconds=3600),
            )
        admin = _admin_of(caller)
        created_role = asyncio.run(
            roles.create(
                admin,
                str(connection_id),
                "etl",
                RoleSettingsInput(default_ttl_seconds=60, max_ttl_seconds=300),
            )
        )
        assert created_role.name == "etl"
        again = connections.resolve(caller, str(connection_id), "reaper", role="etl")
        assert again.dynamic is not None and again.dynamic.max_ttl_seconds == 300
        # The default role's statements survived the re-seal that added "etl".
        kept = connections.resolve(caller, str(connection_id), "reaper")
        assert kept.dynamic is not None and kept.dynamic.revocation_statements == (REVOKE_ETL,)
        with pytest.raises(NotFound):
            connections.resolve(caller, str(connection_id), "reaper", role="nope")
    finally:
        store.close()


def _admin_of(caller: Principal) -> Principal:
    """An admin user of the caller's org (role writes are an admin's)."""
    return Principal(
        kind=PrincipalKind.USER,
        org_id=caller.org_id,
        subject_id=str(uuid.uuid4()),
        token_id=str(uuid.uuid4()),
        expires_at=caller.expires_at,
        role="admin",
    )
