"""Lease rules through the domain seam: LeasesDomain on a real Postgres store, no servers.

The state machine, renewals, failure counts, the reap list and every malformed request are
rules of services/connections/leases.py; they are driven here as the servicer drives them,
with the caller a verified token would give. tests/test_leases.py keeps what needs the real
TLS servers: tokens and audiences, tenancy, audit through the RPC, and one or two malformed
requests per RPC to prove the servicer maps the domain's errors to gRPC codes.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from services.connections.leases import STATES, TRANSITIONS
from services.connections.store import LeaseRow
from sevvo.connections.v1 import connections_pb2 as pb
from sevvo.runtime.errors import FailedPrecondition, InvalidArgument, SevvoError
from tests.plugins.domains import ConnectionsDomains, OrgCallers, org_callers

SECRET = "privileged-Pa55-lease-canary"


def _in(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


class Tenant:
    """An org with one dynamic connection (max TTL 2 hours), acting through the domain."""

    def __init__(self, domains: ConnectionsDomains, callers: OrgCallers, connection_id: str):
        self.domains = domains
        self.callers = callers
        self.connection_id = connection_id
        self._roles = 0

    def create(self, ttl: float = 600, max_ttl: float = 3600, **fields: Any) -> LeaseRow:
        """Records a new lease as the org's agent (role names are unique per call)."""
        self._roles += 1
        values: dict[str, Any] = {
            "connection_id": self.connection_id,
            "role_name": f"v_sync_{self._roles}_{uuid.uuid4().hex[:6]}",
            "purpose": "sync",
            "expire_time": _in(ttl),
            "max_expire_time": _in(max_ttl),
        }
        values.update(fields)
        return self.domains.leases.create(self.callers.agent, **values)

    def update(self, lease_id: str, state: str, **fields: Any) -> LeaseRow:
        """Moves a lease as the org's agent."""
        fields.setdefault("expire_time", None)
        fields.setdefault("failure_reason", "CONNECTION_REFUSED" if state == "failing" else "")
        return self.domains.leases.update(
            self.callers.agent, lease_id=str(lease_id), state=state, **fields
        )

    def revoke(self, lease_id: str = "") -> list[LeaseRow]:
        """Asks, as the org's admin, for leases of the connection to be revoked."""
        return self.domains.leases.revoke(self.callers.admin, self.connection_id, lease_id)

    def listed(self, state: str = "") -> list[LeaseRow]:
        """The org's leases (one page), newest first."""
        rows, _ = self.domains.leases.list_page(self.callers.admin, "", state, 100, "")
        return rows

    def in_state(self, state: str, **fields: Any) -> LeaseRow:
        """A new lease brought to ``state`` along a legal path."""
        lease = self.create(**fields)
        if state == "revoke_requested":
            (lease,) = self.revoke(str(lease.id))
        elif state != "creating":
            lease = self.update(str(lease.id), state)
        assert lease.state == state
        return lease


@pytest.fixture
def tenant(connections_domains: ConnectionsDomains) -> Tenant:
    """A fresh org with one dynamic connection (max TTL 2 hours)."""
    callers = org_callers()
    created = asyncio.run(
        connections_domains.create(
            callers.admin,
            pb.CreateConnectionRequest(
                display_name="dyn",
                dynamic=pb.PostgresDynamic(
                    host="db.acme.internal",
                    database="analytics",
                    privileged_username="sevvo_admin",
                    privileged_password=SECRET,
                    ssl_mode=pb.SSL_MODE_REQUIRE,
                    default_ttl_seconds=600,
                    max_ttl_seconds=7200,
                ),
            ),
        )
    )
    return Tenant(connections_domains, callers, str(created.id))


def _refused(call: Any) -> SevvoError:
    with pytest.raises(SevvoError) as caught:
        call()
    return caught.value


# The state machine.


@pytest.mark.parametrize("from_state", STATES)
def test_only_legal_transitions_are_accepted(tenant: Tenant, from_state: str) -> None:
    """From each state, exactly the documented target states succeed; others are refused."""
    for to_state in STATES:
        lease = tenant.in_state(from_state)
        if to_state in TRANSITIONS[from_state]:
            extra = {"expire_time": _in(1200)} if to_state == "active" else {}
            assert tenant.update(str(lease.id), to_state, **extra).state == to_state
            continue
        refused = _refused(lambda: tenant.update(str(lease.id), to_state))  # noqa: B023
        assert isinstance(refused, FailedPrecondition)
        assert refused.reason == "ILLEGAL_LEASE_TRANSITION"
        assert lease.id in {item.id for item in tenant.listed(from_state)}


def test_renewal_past_max_is_refused(tenant: Tenant) -> None:
    """A renewal beyond max_expire_time is LEASE_PAST_MAX_TTL and leaves the lease as it was."""
    lease = tenant.in_state("active", ttl=600, max_ttl=1200)
    refused = _refused(lambda: tenant.update(str(lease.id), "active", expire_time=_in(1500)))
    assert (type(refused), refused.reason) == (FailedPrecondition, "LEASE_PAST_MAX_TTL")
    (stored,) = tenant.listed()
    assert stored.expires_at == lease.expires_at
    exactly_max = tenant.update(str(lease.id), "active", expire_time=lease.max_expires_at)
    assert exactly_max.expires_at == lease.max_expires_at


def test_renewal_cannot_shorten_or_omit_the_expiry(tenant: Tenant) -> None:
    """A renewal needs an expire_time no earlier than the current one."""
    lease = tenant.in_state("active", ttl=600)
    refused = _refused(lambda: tenant.update(str(lease.id), "active", expire_time=_in(60)))
    assert (type(refused), refused.reason) == (FailedPrecondition, "LEASE_RENEWAL_EARLIER")
    omitted = _refused(lambda: tenant.update(str(lease.id), "active"))
    assert isinstance(omitted, InvalidArgument)
    assert omitted.field == "expire_time"


def test_failures_are_counted_and_kept(tenant: Tenant) -> None:
    """Each move to failing counts once and keeps the latest reason."""
    lease = tenant.in_state("failing")
    again = tenant.update(str(lease.id), "failing", failure_reason="permission_denied")
    assert (again.failure_count, again.failure_reason) == (2, "permission_denied")
    revoked = tenant.update(str(lease.id), "revoked")
    assert (revoked.failure_count, revoked.failure_reason) == (2, "permission_denied")


def test_create_refuses_a_max_expiry_past_the_connection_max_ttl(tenant: Tenant) -> None:
    """max_expire_time beyond now + the connection's max TTL is LEASE_PAST_MAX_TTL."""
    refused = _refused(lambda: tenant.create(ttl=600, max_ttl=7200 + 600))
    assert (type(refused), refused.reason) == (FailedPrecondition, "LEASE_PAST_MAX_TTL")
    assert tenant.create(ttl=600, max_ttl=7200).state == "creating"


# Malformed requests: each names its field and stores nothing.

# (fields of CreateLease, the field named); "connection-id" and "no-expiry" are also sent
# over the wire by tests/test_leases.py.
INVALID_CREATE: dict[str, tuple[dict[str, Any], str]] = {
    "connection-id": ({"connection_id": "nope"}, "connection_id"),
    "role-empty": ({"role_name": ""}, "role_name"),
    "role-digit-first": ({"role_name": "1abc"}, "role_name"),
    "role-space": ({"role_name": "a b"}, "role_name"),
    "role-quote": ({"role_name": 'a"b'}, "role_name"),
    "role-64": ({"role_name": "r" * 64}, "role_name"),
    "purpose-case": ({"purpose": "Sync"}, "purpose"),
    "purpose-empty": ({"purpose": ""}, "purpose"),
    "no-expiry": ({"expire_time": None}, "expire_time"),
    "no-max-expiry": ({"max_expire_time": None}, "max_expire_time"),
    "expiry-after-max": ({"expire_time": _in(4000), "max_expire_time": _in(3000)}, "expire_time"),
    "lease-id": ({"lease_id": "nope"}, "lease_id"),
}


@pytest.mark.parametrize(
    ("fields", "field"), list(INVALID_CREATE.values()), ids=list(INVALID_CREATE)
)
def test_invalid_create_names_the_field(tenant: Tenant, fields: dict[str, Any], field: str) -> None:
    """Malformed CreateLease requests are InvalidArgument naming the field; nothing is stored."""
    refused = _refused(lambda: tenant.create(**fields))
    assert isinstance(refused, InvalidArgument)
    assert refused.field == field
    assert tenant.listed() == []


# (fields of UpdateLease, the field named); the unset and unknown states are decided by the
# servicer's enum mapping and tested over the wire by tests/test_leases.py.
INVALID_UPDATE: dict[str, tuple[dict[str, Any], str]] = {
    "lease-id": ({"lease_id": "nope", "state": "active"}, "lease_id"),
    "empty-state": ({"state": ""}, "state"),
    "fail-no-reason": ({"state": "failing", "failure_reason": ""}, "failure_reason"),
    "free-text": (
        {"state": "failing", "failure_reason": f"password {SECRET} failed"},
        "failure_reason",
    ),
    "expiry": ({"state": "revoking", "expire_time": _in(60)}, "expire_time"),
}


@pytest.mark.parametrize(
    ("request_fields", "field"), list(INVALID_UPDATE.values()), ids=list(INVALID_UPDATE)
)
def test_invalid_update_names_the_field(
    tenant: Tenant, request_fields: dict[str, Any], field: str
) -> None:
    """Malformed UpdateLease requests are InvalidArgument naming the field, echoing nothing;
    the lease stays as it was."""
    lease = tenant.create()
    values = {"lease_id": str(lease.id), **request_fields}
    values.setdefault("expire_time", None)
    values.setdefault("failure_reason", "")
    refused = _refused(lambda: tenant.domains.leases.update(tenant.callers.agent, **values))
    assert isinstance(refused, InvalidArgument)
    assert refused.field == field
    assert SECRET not in str(refused)
    assert [(row.id, row.state) for row in tenant.listed()] == [(lease.id, "creating")]


# Reaping.


def _age_revoking(tenant: Tenant, lease_id: uuid.UUID, minutes: int) -> None:
    with psycopg.connect(tenant.domains.database_url) as conn:
        conn.execute(
            "update connections.leases set updated_at = now() - make_interval(mins => %s)"
            " where id = %s",
            (minutes, lease_id),
        )


def test_reap_list_holds_expired_and_requested_leases_only(tenant: Tenant) -> None:
    """Expired live leases, revoke requests, stale or expired revoking claims; nothing else,
    soonest expired first, page by page."""
    expired = -30
    due = {
        "active_expired": tenant.in_state("active", ttl=expired),
        "creating_expired": tenant.in_state("creating", ttl=expired),
        "failing_expired": tenant.in_state("failing", ttl=expired),
        "requested": tenant.in_state("revoke_requested", ttl=600),
        "stale_revoking": tenant.in_state("revoking", ttl=600),
        # An agent killed mid-revoke: the role must not outlive its TTL by the stale delay.
        "revoking_expired": tenant.in_state("revoking", ttl=expired),
    }
    _age_revoking(tenant, due["stale_revoking"].id, 6)
    not_due = {
        "active": tenant.in_state("active", ttl=600),
        "creating": tenant.in_state("creating", ttl=600),
        "failing": tenant.in_state("failing", ttl=600),
        "revoked_expired": tenant.in_state("revoked", ttl=expired),
        "revoking_fresh": tenant.in_state("revoking", ttl=600),
    }
    seen: list[LeaseRow] = []
    token = ""
    while True:
        page, token = tenant.domains.leases.list_to_reap(tenant.callers.agent, "", 2, token)
        assert len(page) <= 2
        seen.extend(page)
        if not token:
            break
    assert sorted(lease.id for lease in seen) == sorted(lease.id for lease in due.values())
    assert not {lease.id for lease in seen} & {lease.id for lease in not_due.values()}
    expiries = [lease.expires_at for lease in seen]
    assert expiries == sorted(expiries)
    elsewhere, _ = tenant.domains.leases.list_to_reap(
        tenant.callers.agent, str(uuid.uuid4()), 0, ""
    )
    assert elsewhere == []


def test_a_stale_revoking_lease_can_be_taken_over(tenant: Tenant) -> None:
    """A reaper may claim a revoking lease again (revoking -> revoking) and finish it."""
    lease = tenant.in_state("revoking")
    _age_revoking(tenant, lease.id, 10)
    claimed = tenant.update(str(lease.id), "revoking")
    assert claimed.updated_at > lease.updated_at
    assert tenant.update(str(lease.id), "revoked").state == "revoked"
    assert tenant.update(str(lease.id), "revoked").state == "revoked"
