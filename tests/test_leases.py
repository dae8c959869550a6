"""LeaseService over real gRPC/TLS and Postgres: lease states, reaping, tenancy and audit."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from sevvo.audit.v1 import audit_pb2
from sevvo.auth.v1 import auth_pb2, users_pb2
from sevvo.connections.v1 import connections_pb2 as pb
from sevvo.connections.v1 import connections_pb2_grpc as pb_grpc
from sevvo.runtime.grpc_client import error_details
from tests.plugins.auth_stack import PASSWORD, Org
from tests.plugins.control_plane import ControlPlane

SECRET = "privileged-Pa55-lease-canary"
STATES = {
    "creating": pb.LEASE_STATE_CREATING,
    "active": pb.LEASE_STATE_ACTIVE,
    "revoke_requested": pb.LEASE_STATE_REVOKE_REQUESTED,
    "revoking": pb.LEASE_STATE_REVOKING,
    "revoked": pb.LEASE_STATE_REVOKED,
    "failing": pb.LEASE_STATE_FAILING,
}


@pytest.fixture
def control_plane(shared_control_plane: ControlPlane) -> ControlPlane:
    """One control plane for the module: every test makes its own org, so none meet."""
    return shared_control_plane


def _ts(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _in(seconds: float) -> Timestamp:
    return _ts(datetime.now(UTC) + timedelta(seconds=seconds))


@dataclass
class Tenant:
    """An org with a dynamic connection, its agent's lease stub and its admin's."""

    org: Org
    connection_id: str
    agent: pb_grpc.LeaseServiceStub
    admin: pb_grpc.LeaseServiceStub
    _roles: int = 0

    def create(self, ttl: float = 600, max_ttl: float = 3600, **fields: Any) -> pb.Lease:
        """Records a new lease through the agent (role names are unique per call)."""
        self._roles += 1
        values: dict[str, Any] = {
            "connection_id": self.connection_id,
            "role_name": f"v_sync_{self._roles}_{uuid.uuid4().hex[:6]}",
            "purpose": "sync",
            "expire_time": _in(ttl),
            "max_expire_time": _in(max_ttl),
        }
        values.update(fields)
        lease: pb.Lease = self.agent.CreateLease(pb.CreateLeaseRequest(**values))
        return lease

    def update(self, lease_id: str, state: str, **fields: Any) -> pb.Lease:
        """Moves a lease through the agent."""
        if state == "failing":
            fields.setdefault("failure_reason", "CONNECTION_REFUSED")
        lease: pb.Lease = self.agent.UpdateLease(
            pb.UpdateLeaseRequest(lease_id=lease_id, state=STATES[state], **fields)
        )
        return lease

    def revoke(self, lease_id: str = "") -> list[pb.Lease]:
        """Asks, as the admin, for leases of the connection to be revoked."""
        response = self.admin.RevokeLeases(
            pb.RevokeLeasesRequest(connection_id=self.connection_id, lease_id=lease_id)
        )
        return list(response.leases)

    def in_state(self, state: str, **fields: Any) -> pb.Lease:
        """A new lease brought to ``state`` along a legal path."""
        lease = self.create(**fields)
        if state == "revoke_requested":
            (lease,) = self.revoke(lease.id)
        elif state != "creating":
            lease = self.update(lease.id, state)
        assert lease.state == STATES[state]
        return lease


@pytest.fixture
def tenant(control_plane: ControlPlane) -> Tenant:
    """A fresh org with one dynamic connection (max TTL 2 hours)."""
    return _tenant(control_plane, "Acme")


def _tenant(control_plane: ControlPlane, name: str) -> Tenant:
    org = control_plane.auth.create_org(name)
    connection = control_plane.create_dynamic(
        org, "dyn", SECRET, default_ttl_seconds=600, max_ttl_seconds=7200
    )
    return Tenant(
        org=org,
        connection_id=connection.id,
        agent=control_plane.leases(control_plane.agent_for(org)),
        admin=control_plane.leases(org.admin_token),
    )


def _member_token(control_plane: ControlPlane, org: Org) -> str:
    email = f"member-{uuid.uuid4().hex[:6]}@acme.example"
    control_plane.auth.users(org.admin_token).CreateUser(
        users_pb2.CreateUserRequest(email=email, password=PASSWORD)
    )
    return str(
        control_plane.auth.auth()
        .SignIn(auth_pb2.SignInRequest(email=email, password=PASSWORD))
        .session_token
    )


def _code_and_reason(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    details = error_details(caught.value)
    return details.code, details.reason or ""


# The life of a lease.


def test_lease_lives_from_intent_to_revoked(tenant: Tenant) -> None:
    """creating -> active -> renewed -> revoking -> revoked, every step visible to users."""
    created = tenant.create(ttl=600, max_ttl=3600, purpose="preview")
    assert created.state == pb.LEASE_STATE_CREATING
    assert (created.connection_id, created.purpose) == (tenant.connection_id, "preview")
    assert not created.HasField("revoke_time")
    active = tenant.update(created.id, "active")
    assert active.expire_time == created.expire_time
    later = _in(1800)
    renewed = tenant.update(created.id, "active", expire_time=later)
    assert renewed.expire_time == later
    assert tenant.update(created.id, "revoking").state == pb.LEASE_STATE_REVOKING
    revoked = tenant.update(created.id, "revoked")
    assert revoked.state == pb.LEASE_STATE_REVOKED
    assert revoked.HasField("revoke_time")
    listed = tenant.admin.ListLeases(pb.ListLeasesRequest()).leases
    assert [(lease.id, lease.state) for lease in listed] == [(created.id, pb.LEASE_STATE_REVOKED)]


def test_create_needs_a_dynamic_connection(control_plane: ControlPlane, tenant: Tenant) -> None:
    """A form connection has no leases: NOT_DYNAMIC_CONNECTION."""
    plain = control_plane.create(tenant.org, "plain", SECRET)
    code, reason = _code_and_reason(lambda: tenant.create(connection_id=plain.id))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_DYNAMIC_CONNECTION")


def test_create_is_retry_safe_with_a_lease_id(control_plane: ControlPlane, tenant: Tenant) -> None:
    """The same lease_id returns the same lease, recorded once; role names stay unique."""
    lease_id = str(uuid.uuid4())
    first = tenant.create(lease_id=lease_id, role_name="v_retry")
    second = tenant.create(lease_id=lease_id, role_name="v_retry")
    assert first == second
    assert first.id == lease_id
    events = (
        control_plane.audit(tenant.org.admin_token)
        .ListAuditEvents(audit_pb2.ListAuditEventsRequest(target_id=lease_id))
        .events
    )
    assert [e.action for e in events] == ["lease.create"]
    code, reason = _code_and_reason(lambda: tenant.create(lease_id=lease_id, role_name="v_other"))
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "LEASE_ID_TAKEN")
    code, reason = _code_and_reason(lambda: tenant.create(role_name="v_retry"))
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "LEASE_ROLE_NAME_TAKEN")


# The rules themselves are tested through the domain seam (tests/test_leases_domain.py);
# these cases prove the servicer maps them to INVALID_ARGUMENT naming the field. A missing
# timestamp and an unset or unknown state enum are decided by the servicer's own mapping.
@pytest.mark.parametrize(
    ("fields", "field"),
    [({"connection_id": "nope"}, "connection_id"), ({"expire_time": None}, "expire_time")],
    ids=["connection-id", "no-expiry"],
)
def test_invalid_create_names_the_field(tenant: Tenant, fields: dict[str, Any], field: str) -> None:
    """Malformed CreateLease requests are INVALID_ARGUMENT naming the field; nothing is stored."""
    with pytest.raises(grpc.RpcError) as caught:
        tenant.create(**fields)
    details = error_details(caught.value)
    assert (details.code, details.field) == (grpc.StatusCode.INVALID_ARGUMENT, field)
    assert list(tenant.admin.ListLeases(pb.ListLeasesRequest()).leases) == []


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"state": pb.LEASE_STATE_UNSPECIFIED}, "state"),
        ({"state": 42}, "state"),
        (
            {"state": pb.LEASE_STATE_FAILING, "failure_reason": f"password {SECRET} failed"},
            "failure_reason",
        ),
    ],
    ids=["unspecified", "unknown-state", "free-text"],
)
def test_invalid_update_names_the_field(
    tenant: Tenant, request_fields: dict[str, Any], field: str
) -> None:
    """Malformed UpdateLease requests are INVALID_ARGUMENT naming the field, echoing nothing."""
    lease = tenant.create()
    values = {"lease_id": lease.id, **request_fields}
    with pytest.raises(grpc.RpcError) as caught:
        tenant.agent.UpdateLease(pb.UpdateLeaseRequest(**values))
    details = error_details(caught.value)
    assert (details.code, details.field) == (grpc.StatusCode.INVALID_ARGUMENT, field)
    assert SECRET not in details.message


# Revocation and reaping.


def test_revoking_twice_is_not_an_error(tenant: Tenant) -> None:
    """RevokeLeases marks creating and active leases once; repeating it changes nothing."""
    creating = tenant.create()
    active = tenant.in_state("active")
    revoked = tenant.in_state("revoked")
    failing = tenant.in_state("failing")
    marked = tenant.revoke()
    assert {lease.id for lease in marked} == {creating.id, active.id}
    assert all(lease.state == pb.LEASE_STATE_REVOKE_REQUESTED for lease in marked)
    assert tenant.revoke() == []
    assert tenant.revoke(active.id) == []
    assert tenant.revoke(revoked.id) == []
    states = {
        lease.id: lease.state for lease in tenant.admin.ListLeases(pb.ListLeasesRequest()).leases
    }
    assert states[revoked.id] == pb.LEASE_STATE_REVOKED
    assert states[failing.id] == pb.LEASE_STATE_FAILING


def test_revoking_one_lease_leaves_the_others(tenant: Tenant) -> None:
    """With lease_id, only that lease is marked."""
    first, second = tenant.in_state("active"), tenant.in_state("active")
    assert [lease.id for lease in tenant.revoke(first.id)] == [first.id]
    states = {
        lease.id: lease.state for lease in tenant.admin.ListLeases(pb.ListLeasesRequest()).leases
    }
    assert states == {first.id: pb.LEASE_STATE_REVOKE_REQUESTED, second.id: pb.LEASE_STATE_ACTIVE}


def test_revoke_is_for_admins_only(control_plane: ControlPlane, tenant: Tenant) -> None:
    """Members may read leases but not revoke them; agents may do neither."""
    lease = tenant.in_state("active")
    member = control_plane.leases(_member_token(control_plane, tenant.org))
    assert [item.id for item in member.ListLeases(pb.ListLeasesRequest()).leases] == [lease.id]
    request = pb.RevokeLeasesRequest(connection_id=tenant.connection_id)
    code, reason = _code_and_reason(lambda: member.RevokeLeases(request))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_REQUIRED")
    code, _ = _code_and_reason(lambda: tenant.agent.RevokeLeases(request))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    code, _ = _code_and_reason(lambda: tenant.agent.ListLeases(pb.ListLeasesRequest()))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_agent_lease_rpcs_refuse_user_sessions(tenant: Tenant) -> None:
    """An admin's session cannot create, update or reap leases."""
    lease = tenant.create()
    calls: list[Callable[[], object]] = [
        lambda: tenant.admin.CreateLease(
            pb.CreateLeaseRequest(
                connection_id=tenant.connection_id,
                role_name="v_admin",
                purpose="sync",
                expire_time=_in(60),
                max_expire_time=_in(120),
            )
        ),
        lambda: tenant.admin.UpdateLease(
            pb.UpdateLeaseRequest(lease_id=lease.id, state=pb.LEASE_STATE_REVOKED)
        ),
        lambda: tenant.admin.ListLeasesToReap(pb.ListLeasesToReapRequest()),
    ]
    for call in calls:
        code, reason = _code_and_reason(call)
        assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_WRONG_AUDIENCE")


# Listing and counting.


def test_list_filters_and_pages_newest_first(control_plane: ControlPlane, tenant: Tenant) -> None:
    """ListLeases filters by connection and state and pages newest first."""
    other = control_plane.create_dynamic(tenant.org, "dyn-2", SECRET)
    ids = [tenant.in_state("active").id for _ in range(3)]
    elsewhere = tenant.create(connection_id=other.id)
    seen: list[str] = []
    token = ""
    while True:
        page = tenant.admin.ListLeases(
            pb.ListLeasesRequest(connection_id=tenant.connection_id, page_size=2, page_token=token)
        )
        seen.extend(lease.id for lease in page.leases)
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    creating = tenant.admin.ListLeases(pb.ListLeasesRequest(state=pb.LEASE_STATE_CREATING))
    assert [lease.id for lease in creating.leases] == [elsewhere.id]
    code, _ = _code_and_reason(
        lambda: tenant.admin.ListLeases(pb.ListLeasesRequest(page_token="garbage!"))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_counts_by_state_and_purpose(control_plane: ControlPlane, tenant: Tenant) -> None:
    """CountLeases counts every state and the unrevoked leases of each purpose."""
    tenant.in_state("active", purpose="sync")
    tenant.in_state("active", purpose="sync")
    tenant.in_state("creating", purpose="preview")
    tenant.in_state("revoked", purpose="preview")
    other = control_plane.create_dynamic(tenant.org, "dyn-2", SECRET)
    tenant.create(connection_id=other.id, purpose="backfill")
    counts = tenant.admin.CountLeases(pb.CountLeasesRequest(connection_id=tenant.connection_id))
    assert {(c.state, c.count) for c in counts.by_state} == {
        (pb.LEASE_STATE_ACTIVE, 2),
        (pb.LEASE_STATE_CREATING, 1),
        (pb.LEASE_STATE_REVOKED, 1),
    }
    assert {(c.purpose, c.count) for c in counts.by_purpose} == {("sync", 2), ("preview", 1)}
    everything = tenant.admin.CountLeases(pb.CountLeasesRequest())
    assert sum(c.count for c in everything.by_state) == 5


# Tenancy.


def test_every_lease_rpc_is_confined_to_the_callers_org(
    control_plane: ControlPlane, tenant: Tenant
) -> None:
    """Org B's agent and admin can neither see nor touch org A's leases or connection."""
    a_lease = tenant.in_state("active", ttl=-30)
    b = _tenant(control_plane, "Other")
    not_found: list[Callable[[], object]] = [
        lambda: b.update(a_lease.id, "revoked"),
        lambda: b.create(connection_id=tenant.connection_id),
        lambda: b.admin.RevokeLeases(pb.RevokeLeasesRequest(connection_id=tenant.connection_id)),
        lambda: b.admin.RevokeLeases(
            pb.RevokeLeasesRequest(connection_id=b.connection_id, lease_id=a_lease.id)
        ),
    ]
    for call in not_found:
        code, _ = _code_and_reason(call)
        assert code == grpc.StatusCode.NOT_FOUND
    assert list(b.agent.ListLeasesToReap(pb.ListLeasesToReapRequest()).leases) == []
    scoped = pb.ListLeasesToReapRequest(connection_id=tenant.connection_id)
    assert list(b.agent.ListLeasesToReap(scoped).leases) == []
    assert list(b.admin.ListLeases(pb.ListLeasesRequest()).leases) == []
    by_connection = pb.ListLeasesRequest(connection_id=tenant.connection_id)
    assert list(b.admin.ListLeases(by_connection).leases) == []
    counts = b.admin.CountLeases(pb.CountLeasesRequest(connection_id=tenant.connection_id))
    assert (list(counts.by_state), list(counts.by_purpose)) == ([], [])
    (still,) = tenant.admin.ListLeases(pb.ListLeasesRequest()).leases
    assert still == a_lease
    # The reap list's own rules are tests/test_leases_domain.py's; here it reaches A's agent.
    due = tenant.agent.ListLeasesToReap(pb.ListLeasesToReapRequest(page_size=1))
    assert ([lease.id for lease in due.leases], due.next_page_token) == ([a_lease.id], "")


# Audit and deletion.


def test_lease_events_are_audited_without_secrets(
    control_plane: ControlPlane, tenant: Tenant
) -> None:
    """Generate, renew, revoke request, revoke and failure each leave a record with no secret."""
    lease = tenant.create()
    tenant.update(lease.id, "active")
    tenant.update(lease.id, "active", expire_time=_in(1200))
    tenant.revoke(lease.id)
    tenant.update(lease.id, "revoking")
    tenant.update(lease.id, "failing", failure_reason="DROP_ROLE_FAILED")
    tenant.update(lease.id, "revoked")
    events = (
        control_plane.audit(tenant.org.admin_token)
        .ListAuditEvents(audit_pb2.ListAuditEventsRequest(target_id=lease.id))
        .events
    )
    ordered = list(reversed(events))
    assert [(e.action, e.actor_kind) for e in ordered] == [
        ("lease.create", audit_pb2.ACTOR_KIND_AGENT),
        ("lease.activate", audit_pb2.ACTOR_KIND_AGENT),
        ("lease.renew", audit_pb2.ACTOR_KIND_AGENT),
        ("lease.revoke.request", audit_pb2.ACTOR_KIND_USER),
        ("lease.revoke.start", audit_pb2.ACTOR_KIND_AGENT),
        ("lease.fail", audit_pb2.ACTOR_KIND_AGENT),
        ("lease.revoke", audit_pb2.ACTOR_KIND_AGENT),
    ]
    failed = ordered[5]
    assert (failed.outcome, failed.reason) == (
        audit_pb2.AUDIT_OUTCOME_FAILURE,
        "DROP_ROLE_FAILED",
    )
    assert all(e.details["role_name"] == lease.role_name for e in ordered)
    assert all(e.details["connection_id"] == tenant.connection_id for e in ordered)
    with psycopg.connect(control_plane.app.config.database_url) as conn:
        dump = conn.execute("select json_agg(e)::text from audit.events e").fetchone()
        leases = conn.execute("select json_agg(l)::text from connections.leases l").fetchone()
    assert dump is not None and leases is not None
    assert SECRET not in dump[0]
    assert SECRET not in leases[0]


def test_refused_lease_calls_are_audited(control_plane: ControlPlane, tenant: Tenant) -> None:
    """An illegal transition and a renewal past max leave failure records with their reason."""
    lease = tenant.in_state("active", ttl=600, max_ttl=1200)
    with pytest.raises(grpc.RpcError):
        tenant.update(lease.id, "active", expire_time=_in(5000))
    with pytest.raises(grpc.RpcError):
        tenant.update(lease.id, "creating")
    events = (
        control_plane.audit(tenant.org.admin_token)
        .ListAuditEvents(audit_pb2.ListAuditEventsRequest(target_id=lease.id))
        .events
    )
    failures = [
        (e.outcome, e.reason) for e in events if e.outcome == audit_pb2.AUDIT_OUTCOME_FAILURE
    ]
    assert sorted(failures) == sorted(
        [
            (audit_pb2.AUDIT_OUTCOME_FAILURE, "LEASE_PAST_MAX_TTL"),
            (audit_pb2.AUDIT_OUTCOME_FAILURE, "ILLEGAL_LEASE_TRANSITION"),
        ]
    )


def test_deleting_a_connection_with_live_leases_needs_force(
    control_plane: ControlPlane, tenant: Tenant
) -> None:
    """Unrevoked leases block delete (CONNECTION_HAS_LEASES) unless forced; revoked ones don't."""
    stub = control_plane.connections(tenant.org.admin_token)
    lease = tenant.in_state("active")
    tenant.in_state("revoked")
    request = pb.DeleteConnectionRequest(id=tenant.connection_id)
    code, reason = _code_and_reason(lambda: stub.DeleteConnection(request))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONNECTION_HAS_LEASES")
    tenant.update(lease.id, "revoked")
    stub.DeleteConnection(request)
    assert list(tenant.admin.ListLeases(pb.ListLeasesRequest()).leases) == []

    forced = _tenant(control_plane, "Forced")
    forced.in_state("active")
    control_plane.connections(forced.org.admin_token).DeleteConnection(
        pb.DeleteConnectionRequest(id=forced.connection_id, force=True)
    )
    assert list(forced.admin.ListLeases(pb.ListLeasesRequest()).leases) == []
