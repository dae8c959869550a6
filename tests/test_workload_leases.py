"""A workload's lease requests checked against its grants, over real gRPC/TLS and Postgres.

The agent calls LeaseService with its own bearer and forwards the workload's (a real one, from
auth's ExchangeWorkloadToken) in x-sevvo-workload-authorization. Granted roles give leases of
the workload; ungranted roles, TTLs over the workload's maximum, another org's workload, a
revoked workload and another workload's lease are refused with their code and reason, each
with one lease.refuse audit record; ClaimLease hands a warm-pool lease to exactly one of two
racing workloads; an agent resolves a connection by name.
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from sevvo.audit.v1 import audit_pb2
from sevvo.auth.v1 import auth_pb2, workloads_pb2, workloads_pb2_grpc
from sevvo.connections.v1 import connections_pb2 as pb
from sevvo.connections.v1 import connections_pb2_grpc as pb_grpc
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.logs import configure_logging
from sevvo.runtime.workload_bearer import CLOCK_LEEWAY, METADATA_KEY
from tests.plugins.auth_stack import Org
from tests.plugins.control_plane import ControlPlane
from tests.plugins.log_setup import configure_test_logging

SECRET = "privileged-Pa55-workload-canary"
WORKLOAD_MAX_TTL = 1800
# DESIGN.md: a revoked workload stops borrowing "within seconds"; verifiers fail closed at 5 s.
REVOCATION_BOUND_SECONDS = 5.0


@pytest.fixture
def control_plane(shared_control_plane: ControlPlane) -> ControlPlane:
    """One control plane for the module; every test makes its own org."""
    return shared_control_plane


def _in(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(seconds=seconds))
    return stamp


def _refused(call: Callable[[], object]) -> tuple[grpc.StatusCode, str, str]:
    """The code, reason and message of a call that must fail."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    details = error_details(caught.value)
    return details.code, details.reason or "", details.message


@dataclass
class Tenant:
    """An org with a dynamic connection (roles default, readonly, etl), its agent, and a
    workload granted readonly only."""

    plane: ControlPlane
    org: Org
    connection_id: str
    agent: pb_grpc.LeaseServiceStub
    agent_credentials: pb_grpc.ConnectionCredentialServiceStub
    workload_id: str
    workload_token: str
    bearer: str

    def lease(
        self, role: str = "readonly", ttl: float = 600, bearer: str | None = "", **fields: Any
    ) -> pb.Lease:
        """CreateLease as the agent, for the workload (its bearer unless ``bearer`` is None)."""
        metadata = () if bearer is None else ((METADATA_KEY, f"Bearer {bearer or self.bearer}"),)
        lease: pb.Lease = self.agent.CreateLease(
            pb.CreateLeaseRequest(
                connection_id=self.connection_id,
                role_name=f"sevvo_wl_{uuid.uuid4().hex[:10]}",
                purpose=fields.pop("purpose", "reporting"),
                expire_time=_in(min(60, ttl)),
                max_expire_time=_in(ttl),
                role=role,
                **fields,
            ),
            metadata=metadata,
        )
        return lease

    def update(self, lease_id: str, bearer: str | None, **fields: Any) -> pb.Lease:
        """UpdateLease as the agent, forwarding ``bearer`` when given."""
        metadata = () if bearer is None else ((METADATA_KEY, f"Bearer {bearer}"),)
        lease: pb.Lease = self.agent.UpdateLease(
            pb.UpdateLeaseRequest(lease_id=lease_id, **fields), metadata=metadata
        )
        return lease

    def claim(self, lease_id: str, bearer: str | None, purpose: str = "reporting") -> pb.Lease:
        """ClaimLease as the agent, forwarding ``bearer`` when given."""
        metadata = () if bearer is None else ((METADATA_KEY, f"Bearer {bearer}"),)
        lease: pb.Lease = self.agent.ClaimLease(
            pb.ClaimLeaseRequest(lease_id=lease_id, purpose=purpose), metadata=metadata
        )
        return lease

    def pool_lease(self, role: str = "readonly", ttl: float = 600) -> pb.Lease:
        """An active warm-pool lease the agent minted on its own account."""
        lease = self.lease(role=role, ttl=ttl, bearer=None, purpose="warm_pool")
        return self.update(lease.id, None, state=pb.LEASE_STATE_ACTIVE)

    def new_workload(
        self, grants: tuple[tuple[str, str], ...], max_ttl: int = WORKLOAD_MAX_TTL
    ) -> tuple[str, str, str]:
        """Another workload of this org: its id, token and a fresh bearer."""
        return _workload(self.plane, self.org, grants, max_ttl)

    def refusals(self) -> list[tuple[Any, ...]]:
        """The org's lease.refuse records: actor kind and id, reason, details."""
        return _sql(
            self.plane,
            "select actor_kind, actor_id, reason, details from audit.events"
            " where org_id = %s and action = 'lease.refuse' order by occurred_at, id",
            self.org.org_id,
        )

    def lease_count(self) -> int:
        """How many leases the org has."""
        return int(
            _sql(
                self.plane,
                "select count(*) from connections.leases where org_id = %s",
                self.org.org_id,
            )[0][0]
        )


def _sql(plane: ControlPlane, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(plane.app.config.database_url) as conn:
        return conn.execute(query, params).fetchall()


def _workloads(plane: ControlPlane, org: Org) -> workloads_pb2_grpc.WorkloadServiceStub:
    return workloads_pb2_grpc.WorkloadServiceStub(plane.auth.channel(org.admin_token))


def _exchange(plane: ControlPlane, token: str) -> str:
    response = plane.auth.auth().ExchangeWorkloadToken(
        auth_pb2.ExchangeWorkloadTokenRequest(workload_token=token)
    )
    return str(response.bearer_token)


def _workload(
    plane: ControlPlane, org: Org, grants: tuple[tuple[str, str], ...], max_ttl: int
) -> tuple[str, str, str]:
    created = _workloads(plane, org).CreateWorkload(
        workloads_pb2.CreateWorkloadRequest(
            display_name=f"svc-{uuid.uuid4().hex[:8]}",
            grants=[workloads_pb2.WorkloadGrant(connection_id=c, role=r) for c, r in grants],
            max_ttl_seconds=max_ttl,
        )
    )
    return created.workload.id, created.workload_token, _exchange(plane, created.workload_token)


def _tenant(plane: ControlPlane, name: str = "Acme") -> Tenant:
    org = plane.auth.create_org(name)
    connection = plane.create_dynamic(
        org, "reporting-db", SECRET, default_ttl_seconds=600, max_ttl_seconds=7200
    )
    roles = pb_grpc.ConnectionRoleServiceStub(plane._channel(org.admin_token))
    for role in ("readonly", "etl"):
        roles.CreateConnectionRole(
            pb.CreateConnectionRoleRequest(
                connection_id=connection.id,
                name=role,
                settings=pb.ConnectionRoleSettings(default_ttl_seconds=300, max_ttl_seconds=7200),
            )
        )
    workload_id, token, bearer = _workload(
        plane, org, ((connection.id, "readonly"),), WORKLOAD_MAX_TTL
    )
    agent = plane.agent_for(org)
    return Tenant(
        plane=plane,
        org=org,
        connection_id=connection.id,
        agent=plane.leases(agent),
        agent_credentials=plane.credentials(agent),
        workload_id=workload_id,
        workload_token=token,
        bearer=bearer,
    )


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Everything the process logs during the test, at DEBUG, through the real pipeline."""
    stream = io.StringIO()
    configure_logging("tests", level="DEBUG", json=True, stream=stream)
    yield stream
    configure_test_logging()


@pytest.fixture
def tenant(control_plane: ControlPlane) -> Tenant:
    """A fresh org with its connection, roles, agent and readonly workload."""
    return _tenant(control_plane)


# --- CreateLease ----------------------------------------------------------------------------


def test_a_granted_role_gives_a_lease_of_the_workload(tenant: Tenant) -> None:
    """The lease's workload is the bearer's; the audit names the workload as actor, the agent
    in details; ListLeases filters by it; no token is stored anywhere in the audit log."""
    lease = tenant.lease()
    assert (lease.workload_id, lease.role, lease.state) == (
        tenant.workload_id,
        "readonly",
        pb.LEASE_STATE_CREATING,
    )
    other = tenant.lease(role="default", bearer=None)
    assert other.workload_id == ""
    listed = tenant.plane.leases(tenant.org.admin_token).ListLeases(
        pb.ListLeasesRequest(workload_id=tenant.workload_id)
    )
    assert [item.id for item in listed.leases] == [lease.id]

    ((actor_kind, actor_id, details),) = _sql(
        tenant.plane,
        "select actor_kind, actor_id, details from audit.events"
        " where action = 'lease.create' and target_id = %s",
        lease.id,
    )
    assert (actor_kind, actor_id) == ("workload", tenant.workload_id)
    assert details["workload_id"] == tenant.workload_id and details["agent_id"]
    events = tenant.plane.audit(tenant.org.admin_token).ListAuditEvents(
        audit_pb2.ListAuditEventsRequest(target_id=lease.id)
    )
    assert [e.actor_kind for e in events.events] == [audit_pb2.ACTOR_KIND_WORKLOAD]
    logged = str(
        _sql(tenant.plane, "select * from audit.events where org_id = %s", tenant.org.org_id)
    )
    assert tenant.bearer not in logged and tenant.workload_token not in logged


def test_a_role_the_workload_was_not_granted_is_refused_and_audited(tenant: Tenant) -> None:
    """PERMISSION_DENIED, ROLE_NOT_GRANTED; no lease; one lease.refuse naming what was asked."""
    code, reason, message = _refused(lambda: tenant.lease(role="etl", ttl=300))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_GRANTED")
    assert "etl" in message and "sevvo workloads update" in message
    assert tenant.lease_count() == 0
    ((actor_kind, actor_id, audit_reason, details),) = tenant.refusals()
    assert (actor_kind, actor_id, audit_reason) == (
        "workload",
        tenant.workload_id,
        "ROLE_NOT_GRANTED",
    )
    assert details["connection_id"] == tenant.connection_id
    assert (details["role"], details["operation"], details["workload_id"]) == (
        "etl",
        "create",
        tenant.workload_id,
    )
    assert 295 <= int(details["ttl_seconds"]) <= 300
    assert tenant.bearer not in str(details)


def test_a_ttl_over_the_workloads_maximum_is_refused_and_audited(tenant: Tenant) -> None:
    """Up to the maximum (plus the agent-clock leeway) passes; beyond it is refused,
    TTL_OVER_WORKLOAD_MAXIMUM."""
    assert tenant.lease(ttl=WORKLOAD_MAX_TTL).workload_id == tenant.workload_id
    over = WORKLOAD_MAX_TTL + CLOCK_LEEWAY.total_seconds() + 30
    code, reason, message = _refused(lambda: tenant.lease(ttl=over))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "TTL_OVER_WORKLOAD_MAXIMUM")
    assert str(WORKLOAD_MAX_TTL) in message and "shorter" in message
    assert tenant.lease_count() == 1
    ((_, _, audit_reason, details),) = tenant.refusals()
    assert audit_reason == "TTL_OVER_WORKLOAD_MAXIMUM"
    assert int(details["ttl_seconds"]) > WORKLOAD_MAX_TTL + CLOCK_LEEWAY.total_seconds()


def test_another_orgs_workload_is_refused_and_audited(
    control_plane: ControlPlane, tenant: Tenant
) -> None:
    """WORKLOAD_OF_ANOTHER_ORG, whatever its grants; recorded in the agent's org, no lease."""
    other = _tenant(control_plane, "Globex")
    # Globex's workload is granted readonly of Globex's connection; Acme's agent forwards it.
    code, reason, _ = _refused(lambda: tenant.lease(bearer=other.bearer))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "WORKLOAD_OF_ANOTHER_ORG")
    assert tenant.lease_count() == 0 and other.lease_count() == 0
    ((actor_kind, _, audit_reason, details),) = tenant.refusals()
    assert (actor_kind, audit_reason) == ("agent", "WORKLOAD_OF_ANOTHER_ORG")
    assert details["claimed_workload_id"] == other.workload_id
    assert other.refusals() == []


def test_a_revoked_workload_is_refused_within_the_verifiers_refresh(tenant: Tenant) -> None:
    """After RevokeWorkload the bearer is UNAUTHENTICATED, WORKLOAD_REVOKED, within seconds."""
    tenant.lease()
    _workloads(tenant.plane, tenant.org).RevokeWorkload(
        workloads_pb2.RevokeWorkloadRequest(id=tenant.workload_id)
    )
    revoked_at = time.monotonic()
    while True:
        try:
            tenant.lease()
        except grpc.RpcError as error:
            details = error_details(error)
            break
        assert time.monotonic() - revoked_at < REVOCATION_BOUND_SECONDS, "still borrowing"
        time.sleep(0.05)
    took = time.monotonic() - revoked_at
    assert (details.code, details.reason) == (grpc.StatusCode.UNAUTHENTICATED, "WORKLOAD_REVOKED")
    assert took < REVOCATION_BOUND_SECONDS
    ((actor_kind, _, audit_reason, facts),) = tenant.refusals()
    assert (actor_kind, audit_reason) == ("agent", "WORKLOAD_REVOKED")
    assert facts["claimed_workload_id"] == tenant.workload_id


def test_a_malformed_or_forged_bearer_is_unauthenticated(
    tenant: Tenant, captured_logs: io.StringIO
) -> None:
    """A header that is not a bearer, and a token that is not auth's, both fail and are
    audited; the services' logs note the refusals and never hold the bearer."""
    code, reason, _ = _refused(
        lambda: tenant.agent.CreateLease(
            pb.CreateLeaseRequest(
                connection_id=tenant.connection_id,
                role_name="sevvo_wl_x",
                purpose="reporting",
                expire_time=_in(60),
                max_expire_time=_in(60),
                role="readonly",
            ),
            metadata=((METADATA_KEY, tenant.bearer),),
        )
    )
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "WORKLOAD_TOKEN_MALFORMED")
    code, reason, _ = _refused(lambda: tenant.lease(bearer=tenant.bearer[:-4] + "AAAA"))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "WORKLOAD_TOKEN_INVALID")
    assert [r[2] for r in tenant.refusals()] == [
        "WORKLOAD_TOKEN_MALFORMED",
        "WORKLOAD_TOKEN_INVALID",
    ]
    assert tenant.lease_count() == 0
    logged = captured_logs.getvalue()
    assert "lease request refused" in logged
    assert tenant.bearer.split(".")[2][:20] not in logged and tenant.bearer not in logged


def test_an_agent_cannot_name_a_workload_on_its_own_word(tenant: Tenant) -> None:
    """workload_id without a bearer, or unlike the bearer's, is INVALID_ARGUMENT; equal passes."""
    code, _, message = _refused(lambda: tenant.lease(bearer=None, workload_id=tenant.workload_id))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "workload_id" in message
    code, _, message = _refused(lambda: tenant.lease(workload_id=str(uuid.uuid4())))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "workload_id" in message
    assert tenant.lease_count() == 0
    assert tenant.lease(workload_id=tenant.workload_id).workload_id == tenant.workload_id


def test_a_missing_role_or_connection_is_still_not_found(tenant: Tenant) -> None:
    """A granted pair whose role no longer exists is NOT_FOUND (ROLE_NOT_FOUND), as before."""
    admin_roles = pb_grpc.ConnectionRoleServiceStub(tenant.plane._channel(tenant.org.admin_token))
    admin_roles.DeleteConnectionRole(
        pb.DeleteConnectionRoleRequest(connection_id=tenant.connection_id, name="readonly")
    )
    code, reason, _ = _refused(lambda: tenant.lease())
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "ROLE_NOT_FOUND")
    assert tenant.refusals() == []


# --- UpdateLease ----------------------------------------------------------------------------


def test_a_workload_renews_and_revokes_only_its_own_leases(tenant: Tenant) -> None:
    """Its own lease moves; another workload's (or sevvo's own) is LEASE_OF_ANOTHER_WORKLOAD,
    audited, and left as it was."""
    mine = tenant.lease(ttl=900)
    tenant.update(mine.id, tenant.bearer, state=pb.LEASE_STATE_ACTIVE)
    renewed = tenant.update(
        mine.id, tenant.bearer, state=pb.LEASE_STATE_ACTIVE, expire_time=_in(300)
    )
    assert renewed.state == pb.LEASE_STATE_ACTIVE
    _, _, other_bearer = tenant.new_workload(((tenant.connection_id, "readonly"),))
    for lease_id in (mine.id, tenant.lease(role="default", bearer=None).id):
        code, reason, message = _refused(
            partial(tenant.update, lease_id, other_bearer, state=pb.LEASE_STATE_REVOKED)
        )
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "LEASE_OF_ANOTHER_WORKLOAD")
        assert "only its own" in message
    assert [(r[2], r[3]["operation"]) for r in tenant.refusals()] == [
        ("LEASE_OF_ANOTHER_WORKLOAD", "update"),
        ("LEASE_OF_ANOTHER_WORKLOAD", "update"),
    ]
    state = _sql(tenant.plane, "select state from connections.leases where id = %s", mine.id)
    assert state == [("active",)]
    revoked = tenant.update(mine.id, tenant.bearer, state=pb.LEASE_STATE_REVOKED)
    assert revoked.state == pb.LEASE_STATE_REVOKED


def test_a_renewal_past_the_max_ttl_says_what_to_do(tenant: Tenant) -> None:
    """LEASE_PAST_MAX_TTL, with the lease's max expiry and the advice to borrow anew."""
    lease = tenant.lease(ttl=120)
    tenant.update(lease.id, tenant.bearer, state=pb.LEASE_STATE_ACTIVE)
    code, reason, message = _refused(
        lambda: tenant.update(
            lease.id, tenant.bearer, state=pb.LEASE_STATE_ACTIVE, expire_time=_in(600)
        )
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "LEASE_PAST_MAX_TTL")
    assert "borrow a new lease" in message


# --- ClaimLease -----------------------------------------------------------------------------


def test_two_concurrent_claims_of_one_pool_lease_one_wins(tenant: Tenant) -> None:
    """Exactly one claim gets the lease (workload and purpose set); the other is
    FAILED_PRECONDITION, LEASE_NOT_CLAIMABLE; one lease.claim success is recorded."""
    pool = tenant.pool_lease()
    other_id, _, other_bearer = tenant.new_workload(((tenant.connection_id, "readonly"),))
    outcomes: dict[str, Any] = {}
    start = threading.Barrier(2)

    def claim(name: str, bearer: str) -> None:
        start.wait()
        try:
            outcomes[name] = tenant.claim(pool.id, bearer, purpose=f"{name}_job")
        except grpc.RpcError as error:
            outcomes[name] = error_details(error)

    threads = [
        threading.Thread(target=claim, args=("first", tenant.bearer)),
        threading.Thread(target=claim, args=("second", other_bearer)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    won = {name: o for name, o in outcomes.items() if isinstance(o, pb.Lease)}
    lost = {name: o for name, o in outcomes.items() if not isinstance(o, pb.Lease)}
    assert len(won) == 1 and len(lost) == 1, outcomes
    ((winner, lease),) = won.items()
    ((_, refusal),) = lost.items()
    assert (refusal.code, refusal.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "LEASE_NOT_CLAIMABLE",
    )
    expected_workload = tenant.workload_id if winner == "first" else other_id
    assert (lease.workload_id, lease.purpose, lease.state) == (
        expected_workload,
        f"{winner}_job",
        pb.LEASE_STATE_ACTIVE,
    )
    stored = _sql(
        tenant.plane,
        "select workload_id::text, purpose from connections.leases where id = %s",
        pool.id,
    )
    assert stored == [(expected_workload, f"{winner}_job")]
    claims = _sql(
        tenant.plane,
        "select actor_kind, actor_id, outcome, reason, details from audit.events"
        " where action = 'lease.claim' and target_id = %s order by outcome desc",
        pool.id,
    )
    assert [(c[0], c[1], c[2]) for c in claims] == [
        ("workload", expected_workload, "success"),
        ("workload", other_id if winner == "first" else tenant.workload_id, "failure"),
    ]
    assert claims[0][4]["previous_purpose"] == "warm_pool"
    assert claims[0][4]["workload_id"] == expected_workload


def test_a_claim_checks_the_grants_and_ttl_against_the_pool_lease(tenant: Tenant) -> None:
    """A pool lease of an ungranted role, or longer than the workload may hold, stays in the
    pool; each refusal is audited; a claim without a bearer is UNAUTHENTICATED."""
    etl = tenant.pool_lease(role="etl")
    code, reason, _ = _refused(lambda: tenant.claim(etl.id, tenant.bearer))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_GRANTED")
    long = tenant.pool_lease(ttl=WORKLOAD_MAX_TTL + CLOCK_LEEWAY.total_seconds() + 60)
    code, reason, _ = _refused(lambda: tenant.claim(long.id, tenant.bearer))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "TTL_OVER_WORKLOAD_MAXIMUM")
    code, reason, _ = _refused(lambda: tenant.claim(etl.id, None))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "WORKLOAD_TOKEN_MISSING")
    assert [(r[2], r[3]["operation"]) for r in tenant.refusals()] == [
        ("ROLE_NOT_GRANTED", "claim"),
        ("TTL_OVER_WORKLOAD_MAXIMUM", "claim"),
        ("WORKLOAD_TOKEN_MISSING", "claim"),
    ]
    pool = _sql(
        tenant.plane,
        "select count(*) from connections.leases where org_id = %s and purpose = 'warm_pool'"
        " and workload_id is null",
        tenant.org.org_id,
    )
    assert pool == [(2,)]


def test_only_an_active_pool_lease_can_be_claimed(tenant: Tenant) -> None:
    """A workload's own lease, a creating pool lease and an unknown id are not claimable."""
    mine = tenant.lease()
    creating = tenant.lease(bearer=None, purpose="warm_pool")
    for lease_id in (mine.id, creating.id):
        code, reason, _ = _refused(partial(tenant.claim, lease_id, tenant.bearer))
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "LEASE_NOT_CLAIMABLE")
    code, reason, _ = _refused(lambda: tenant.claim(str(uuid.uuid4()), tenant.bearer))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "LEASE_NOT_FOUND")
    code, _, message = _refused(
        lambda: tenant.claim(creating.id, tenant.bearer, purpose="warm_pool")
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "purpose" in message


# --- ResolveConnectionCredentials by name ----------------------------------------------------


def test_an_agent_resolves_a_connection_by_name(tenant: Tenant) -> None:
    """connection_name finds the org's connection (any case); a missing name is NOT_FOUND
    naming it; none or two of id, name and draft is INVALID_ARGUMENT."""
    resolved = tenant.agent_credentials.ResolveConnectionCredentials(
        pb.ResolveConnectionCredentialsRequest(connection_name="Reporting-DB", role="readonly")
    )
    assert resolved.postgres.username == "sevvo_admin" and resolved.dynamic.role == "readonly"
    code, reason, message = _refused(
        lambda: tenant.agent_credentials.ResolveConnectionCredentials(
            pb.ResolveConnectionCredentialsRequest(connection_name="billing-db")
        )
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "CONNECTION_NOT_FOUND")
    assert "billing-db" in message
    for request in (
        pb.ResolveConnectionCredentialsRequest(),
        pb.ResolveConnectionCredentialsRequest(
            connection_id=tenant.connection_id, connection_name="reporting-db"
        ),
    ):
        code, _, message = _refused(
            partial(tenant.agent_credentials.ResolveConnectionCredentials, request)
        )
        assert code is grpc.StatusCode.INVALID_ARGUMENT and "connection_name" in message


def test_another_orgs_connection_name_is_not_found(
    control_plane: ControlPlane, tenant: Tenant
) -> None:
    """Names resolve inside the agent's org only."""
    control_plane.create_dynamic(
        tenant.org, "acme-billing", SECRET, default_ttl_seconds=300, max_ttl_seconds=600
    )
    other = _tenant(control_plane, "Globex")
    code, reason, _ = _refused(
        lambda: other.agent_credentials.ResolveConnectionCredentials(
            pb.ResolveConnectionCredentialsRequest(connection_name="acme-billing")
        )
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "CONNECTION_NOT_FOUND")
