"""Lease metadata of dynamic credentials: the state machine, its checks and its audit trail.

The agent records a lease before it creates a login role (state ``creating``), then moves it
along the legal transitions as the role lives and dies; users list, count and ask to revoke
leases, and the agent's reaper drops the roles. Every method acts only inside
``caller.org_id``. Leases hold metadata only; no password ever reaches this module.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg

from services.connections.domain import check_purpose, reason_token, run_audited
from services.connections.kinds import kind_named, unsupported
from services.connections.store import ConnectionStore, LeaseRow
from sevvo.runtime import audit, paging, validation
from sevvo.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SevvoError,
    Unauthenticated,
)
from sevvo.runtime.logs import get_logger
from sevvo.runtime.tokens import Principal
from sevvo.runtime.workload_bearer import (
    CLOCK_LEEWAY,
    METADATA_KEY,
    ForwardedWorkload,
    borrow_refusal,
    requested_ttl_seconds,
)
from sevvo.runtime.workload_grants import DEFAULT_ROLE, role_name

log = get_logger(__name__)
T = TypeVar("T")

TARGET_TYPE = "lease"
STATES = ("creating", "active", "revoke_requested", "revoking", "revoked", "failing")
# Where each state may go through UpdateLease. revoke_requested is reached only through
# RevokeLeases. Self-transitions: active renews, failing counts another failure, revoking
# lets a reaper take over a stale claim, revoked absorbs a retried call.
TRANSITIONS: dict[str, frozenset[str]] = {
    "creating": frozenset({"active", "revoking", "revoked", "failing"}),
    "active": frozenset({"active", "revoking", "revoked", "failing"}),
    "revoke_requested": frozenset({"revoking", "revoked", "failing"}),
    "revoking": frozenset({"revoking", "revoked", "failing"}),
    "failing": frozenset({"revoking", "revoked", "failing"}),
    "revoked": frozenset({"revoked"}),
}
# The audit action of a move into each state (active from creating is "lease.activate").
_ACTIONS = {
    "active": "lease.renew",
    "revoking": "lease.revoke.start",
    "revoked": "lease.revoke",
    "failing": "lease.fail",
}
# The purpose of the leases an agent's warm pool holds, minted ahead for workloads to claim.
WARM_POOL = "warm_pool"
_ROLE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,62}$")


def _lease_not_found() -> NotFound:
    return NotFound("lease not found", reason="LEASE_NOT_FOUND")


def _connection_not_found() -> NotFound:
    return NotFound("connection not found", reason="CONNECTION_NOT_FOUND")


def _past_max(max_expires_at: datetime) -> FailedPrecondition:
    return FailedPrecondition(
        f"the expiry would pass the lease's maximum lifetime ({max_expires_at.isoformat()});"
        " renew up to that time at most, then borrow a new lease (a new login role)",
        reason="LEASE_PAST_MAX_TTL",
        metadata={"max_expire_time": max_expires_at.isoformat()},
    )


def _role_not_found() -> NotFound:
    return NotFound("the connection has no role of this name", reason="ROLE_NOT_FOUND")


def _details(lease: LeaseRow, **extra: str) -> dict[str, str]:
    details = {
        "connection_id": str(lease.connection_id),
        "role_name": lease.role_name,
        "role": lease.role,
        "purpose": lease.purpose,
        "state": lease.state,
        "expire_time": lease.expires_at.isoformat(),
        **extra,
    }
    if lease.workload_id is not None:
        details["workload_id"] = str(lease.workload_id)
    return details


def lease_actor(caller: Principal, workload: Principal | None) -> audit.Actor:
    """Who acts on a lease: the workload when the agent acts for one, else the caller.

    The agent that carried a workload's request is named in the record's details (agent_id).
    """
    return audit.Actor.of(workload if workload is not None else caller)


def _agent_details(caller: Principal, workload: Principal | None) -> dict[str, str]:
    return {} if workload is None else {"agent_id": caller.subject_id}


class _Refused(Exception):
    """A refusal found inside a transaction: the work is rolled back, the refusal audited."""

    def __init__(self, error: SevvoError) -> None:
        super().__init__(error.message)
        self.error = error


def record_lease_event(
    conn: psycopg.Connection[Any],
    caller: Principal,
    action: str,
    lease: LeaseRow,
    *,
    outcome: str = "success",
    reason: str | None = None,
    workload: Principal | None = None,
    **extra: str,
) -> None:
    """Appends one lease's audit record (metadata only) inside the caller's transaction;
    with ``workload``, the workload is the actor and the agent (``caller``) is in details."""
    extra = {**_agent_details(caller, workload), **extra}
    audit.record(
        conn,
        org_id=caller.org_id,
        actor=lease_actor(caller, workload),
        action=action,
        target_type=TARGET_TYPE,
        target_id=str(lease.id),
        outcome=outcome,
        reason=reason,
        details=_details(lease, **extra),
    )


def request_revocation(
    conn: psycopg.Connection[Any], caller: Principal, leases: list[LeaseRow], now: datetime
) -> list[LeaseRow]:
    """Marks locked creating or active leases revoke_requested for the agent's reaper, each
    audited (lease.revoke.request); returns them as they are now."""
    marked = []
    for lease in leases:
        updated = replace(lease, state="revoke_requested", updated_at=now)
        ConnectionStore.update_lease(conn, updated)
        record_lease_event(
            conn, caller, "lease.revoke.request", updated, previous_state=lease.state
        )
        marked.append(updated)
    return marked


def lease_role(field: str, value: str) -> str:
    """A lease's connection role: empty means "default", else a valid role name."""
    return role_name(field, value) if value else DEFAULT_ROLE


def _state(field: str, value: str, *, allow_empty: bool = False) -> str | None:
    if not value and allow_empty:
        return None
    if value not in STATES:
        raise InvalidArgument(field, f"must be one of {', '.join(STATES)}")
    return value


def _optional_id(field: str, value: str) -> uuid.UUID | None:
    return validation.resource_id(field, value) if value else None


class LeasesDomain:
    """The operations behind LeaseService."""

    def __init__(
        self,
        store: ConnectionStore,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._clock = clock

    def _run(
        self,
        caller: Principal,
        action: str,
        target_id: str,
        work: Callable[[psycopg.Connection[Any]], T],
        refusal: Callable[[SevvoError], None] | None = None,
    ) -> T:
        """Runs ``work`` (which audits its own changes) and audits failures; a refusal the
        work raises as ``_Refused`` is audited by ``refusal`` (as lease.refuse) instead."""
        try:
            return run_audited(
                self._store, caller, action, TARGET_TYPE, target_id, work, record=False
            )
        except _Refused as refused:
            if refusal is not None:
                refusal(refused.error)
            raise refused.error from None

    def _refuse(
        self,
        caller: Principal,
        forwarded: ForwardedWorkload,
        error: SevvoError,
        *,
        operation: str,
        target_id: str,
        **details: str,
    ) -> SevvoError:
        """Records a refused workload request (lease.refuse) in its own transaction, so the
        record stays though the call fails; returns ``error`` for the caller to raise."""
        workload = forwarded.principal
        facts = {"operation": operation, "agent_id": caller.subject_id, **details}
        if forwarded.workload_id:
            # A refused bearer's workload id is only what it claimed; the key says so.
            key = "workload_id" if workload is not None else "claimed_workload_id"
            facts[key] = forwarded.workload_id
        with self._store.transaction() as conn:
            audit.record(
                conn,
                org_id=caller.org_id,
                actor=lease_actor(caller, workload),
                action="lease.refuse",
                target_type=TARGET_TYPE,
                target_id=target_id,
                outcome="failure",
                reason=error.reason,
                details=facts,
            )
        log.info("lease request refused", reason=error.reason, operation=operation)
        return error

    def _record(
        self,
        conn: psycopg.Connection[Any],
        caller: Principal,
        action: str,
        lease: LeaseRow,
        *,
        outcome: str = "success",
        reason: str | None = None,
        workload: Principal | None = None,
        **extra: str,
    ) -> None:
        record_lease_event(
            conn, caller, action, lease, outcome=outcome, reason=reason, workload=workload, **extra
        )

    def _borrower(
        self,
        caller: Principal,
        forwarded: ForwardedWorkload | None,
        named: uuid.UUID | None,
        *,
        operation: str,
        target_id: str,
        connection_id: str,
        role: str,
        ttl_seconds: int,
    ) -> Principal | None:
        """The verified workload a create is for (None: sevvo's own work), after its grants
        allow ``role`` of ``connection_id`` for ``ttl_seconds``; refusals are audited."""
        if forwarded is None:
            if named is not None:
                raise InvalidArgument(
                    "workload_id",
                    "must be empty unless the workload's own bearer is forwarded (an agent"
                    " cannot name a workload on its own word)",
                )
            return None
        facts = {"connection_id": connection_id, "role": role, "ttl_seconds": str(ttl_seconds)}
        if forwarded.error is not None:
            error = forwarded.error
            raise self._refuse(
                caller, forwarded, error, operation=operation, target_id=target_id, **facts
            )
        workload = forwarded.require()
        if named is not None and str(named) != workload.subject_id:
            raise InvalidArgument(
                "workload_id", "must be empty or the id of the workload whose bearer is forwarded"
            )
        refusal = borrow_refusal(workload, connection_id, role, ttl_seconds)
        if refusal is not None:
            raise self._refuse(
                caller, forwarded, refusal, operation=operation, target_id=target_id, **facts
            )
        return workload

    # Agent-only.

    def create(
        self,
        caller: Principal,
        *,
        connection_id: str,
        role_name: str,
        purpose: str,
        expire_time: datetime | None,
        max_expire_time: datetime | None,
        lease_id: str = "",
        role: str = "",
        workload_id: str = "",
        forwarded: ForwardedWorkload | None = None,
    ) -> LeaseRow:
        """Records the intent to create ``role_name`` from the connection role ``role``
        (empty: "default") of a dynamic connection, for sevvo's own work or, with a
        ``forwarded`` workload bearer, for that workload.

        Written before the role's creation commits (the agent holds its transaction open until
        this returns), so a crash after it leaves a record the reaper finds.
        The connection role's max TTL bounds ``max_expire_time``; a workload's grants and
        maximum TTL are checked first (refusals audited as lease.refuse). ``workload_id``
        must be empty without a bearer and empty or the bearer's workload with one. A retry
        with the same ``lease_id`` returns the lease already recorded.
        """
        cid = validation.resource_id("connection_id", connection_id)
        connection_role = lease_role("role", role)
        workload = _optional_id("workload_id", workload_id)
        if not _ROLE_NAME_RE.match(role_name):
            raise InvalidArgument(
                "role_name",
                "must be 1-63 letters, digits, '_', '-' or '.', starting with a letter or '_'",
            )
        check_purpose("purpose", purpose)
        if expire_time is None:
            raise InvalidArgument("expire_time", "is required")
        if max_expire_time is None:
            raise InvalidArgument("max_expire_time", "is required")
        if expire_time > max_expire_time:
            raise InvalidArgument("expire_time", "must not be after max_expire_time")
        lid = _optional_id("lease_id", lease_id) or uuid.uuid4()
        org_id = uuid.UUID(caller.org_id)
        borrower = self._borrower(
            caller,
            forwarded,
            workload,
            operation="create",
            target_id=str(lid),
            connection_id=str(cid),
            role=connection_role,
            ttl_seconds=requested_ttl_seconds(self._clock(), max_expire_time),
        )
        if borrower is not None:
            workload = uuid.UUID(borrower.subject_id)

        def work(conn: psycopg.Connection[Any]) -> LeaseRow:
            connection = self._store.get(conn, org_id, cid)
            if connection is None:
                raise _connection_not_found()
            if connection.type != "postgres":
                raise unsupported(kind_named(connection.type), "leases")
            if connection.credential_mode != "dynamic" or connection.max_ttl_seconds is None:
                raise FailedPrecondition(
                    "this connection does not use dynamic credentials",
                    reason="NOT_DYNAMIC_CONNECTION",
                )
            # Shared: a forced removal of the role, which locks it for update first, either
            # sees this lease or makes this call see the role gone.
            found = self._store.get_role(conn, org_id, cid, connection_role, lock="share")
            if found is not None and found.deleted_at is not None:
                raise _role_not_found()
            if found is not None:
                max_ttl = found.max_ttl_seconds
            elif connection_role == DEFAULT_ROLE:
                # A connection saved by a release before named roles, during a rollout: its
                # single set is its default role.
                max_ttl = connection.max_ttl_seconds
            else:
                raise _role_not_found()
            now = self._clock()
            limit = now + timedelta(seconds=max_ttl) + CLOCK_LEEWAY
            if max_expire_time > limit:
                raise _past_max(limit)
            lease = LeaseRow(
                id=lid,
                org_id=org_id,
                connection_id=cid,
                role_name=role_name,
                purpose=purpose,
                state="creating",
                created_at=now,
                updated_at=now,
                expires_at=expire_time,
                max_expires_at=max_expire_time,
                revoked_at=None,
                failure_reason=None,
                failure_count=0,
                role=connection_role,
                workload_id=workload,
            )
            if self._store.insert_lease(conn, lease):
                self._record(conn, caller, "lease.create", lease, workload=borrower)
                return lease
            existing = self._store.get_lease(conn, org_id, lid)
            if existing is None or (
                existing.connection_id,
                existing.role_name,
                existing.role,
                existing.workload_id,
            ) != (cid, role_name, connection_role, workload):
                raise AlreadyExists("lease_id is taken by another lease", reason="LEASE_ID_TAKEN")
            return existing

        lease = self._run(caller, "lease.create", str(lid), work)
        log.info("lease recorded", lease_id=str(lease.id), connection_id=str(cid))
        return lease

    def update(
        self,
        caller: Principal,
        *,
        lease_id: str,
        state: str,
        expire_time: datetime | None,
        failure_reason: str,
        forwarded: ForwardedWorkload | None = None,
    ) -> LeaseRow:
        """Moves a lease along a legal transition; active to active renews it.

        With a ``forwarded`` workload bearer, only a lease of that workload (else
        PERMISSION_DENIED, LEASE_OF_ANOTHER_WORKLOAD), and a renewal only while its role is
        still granted; refusals are audited as lease.refuse.
        """
        lid = validation.resource_id("lease_id", lease_id)
        new_state = _state("state", state)
        assert new_state is not None
        reason = reason_token("failure_reason", failure_reason, required=new_state == "failing")
        if expire_time is not None and new_state != "active":
            raise InvalidArgument("expire_time", "may only be set with state active")
        org_id = uuid.UUID(caller.org_id)
        action = _ACTIONS.get(new_state, "lease.update")
        facts = {"state": new_state}
        if forwarded is not None and forwarded.error is not None:
            raise self._refuse(
                caller,
                forwarded,
                forwarded.error,
                operation="update",
                target_id=str(lid),
                **facts,
            )
        borrower = None if forwarded is None else forwarded.require()

        def refused(error: SevvoError) -> None:
            assert forwarded is not None
            self._refuse(caller, forwarded, error, operation="update", target_id=str(lid), **facts)

        def work(conn: psycopg.Connection[Any]) -> LeaseRow:
            nonlocal action
            lease = self._store.get_lease(conn, org_id, lid, for_update=True)
            if lease is None:
                raise _lease_not_found()
            if borrower is not None:
                facts.update(connection_id=str(lease.connection_id), role=lease.role)
                self._check_own_lease(borrower, lease, new_state)
            if new_state == "active" and lease.state == "creating":
                action = "lease.activate"
            if new_state not in TRANSITIONS[lease.state]:
                raise FailedPrecondition(
                    f"a lease cannot go from {lease.state} to {new_state}",
                    reason="ILLEGAL_LEASE_TRANSITION",
                    metadata={"from": lease.state, "to": new_state},
                )
            if lease.state == new_state == "revoked":
                return lease  # A retried call: nothing changes and nothing more is recorded.
            now = self._clock()
            updated = replace(lease, state=new_state, updated_at=now)
            if reason:
                updated = replace(updated, failure_reason=reason)
            if new_state == "failing":
                updated = replace(updated, failure_count=lease.failure_count + 1)
            if new_state == "revoked":
                updated = replace(updated, revoked_at=now)
            if new_state == "active":
                updated = replace(updated, expires_at=self._new_expiry(lease, expire_time))
            self._store.update_lease(conn, updated)
            self._record(
                conn,
                caller,
                action,
                updated,
                outcome="failure" if new_state == "failing" else "success",
                reason=reason if new_state == "failing" else None,
                workload=borrower,
                previous_state=lease.state,
            )
            return updated

        lease = self._run(caller, action, str(lid), work, refused)
        log.info("lease updated", lease_id=str(lid), state=lease.state)
        return lease

    @staticmethod
    def _check_own_lease(workload: Principal, lease: LeaseRow, new_state: str) -> None:
        """A workload may move only its own leases, and renew one only while its role is
        granted; giving a lease back is always allowed."""
        if lease.workload_id is None or str(lease.workload_id) != workload.subject_id:
            raise _Refused(
                PermissionDenied(
                    "this lease was borrowed by another workload (or by sevvo itself); a"
                    " workload can renew and revoke only its own leases",
                    reason="LEASE_OF_ANOTHER_WORKLOAD",
                )
            )
        if new_state == "active" and lease.state == "active":
            refusal = borrow_refusal(workload, str(lease.connection_id), lease.role, 0)
            if refusal is not None:
                raise _Refused(refusal)

    @staticmethod
    def _new_expiry(lease: LeaseRow, expire_time: datetime | None) -> datetime:
        """The expiry after a move to active: activation may set it, a renewal must."""
        if expire_time is None:
            if lease.state == "active":
                raise InvalidArgument("expire_time", "is required to renew a lease")
            return lease.expires_at
        if expire_time > lease.max_expires_at:
            raise _past_max(lease.max_expires_at)
        if lease.state == "active" and expire_time < lease.expires_at:
            raise FailedPrecondition(
                "a renewal cannot move the expiry earlier", reason="LEASE_RENEWAL_EARLIER"
            )
        return expire_time

    def claim(
        self,
        caller: Principal,
        *,
        lease_id: str,
        purpose: str,
        forwarded: ForwardedWorkload | None,
    ) -> LeaseRow:
        """Hands an active warm-pool lease (purpose "warm_pool", no workload) to the workload
        whose bearer is ``forwarded``, after the checks CreateLease makes with the lease's
        connection, role and max expiry.

        The claim and its audit record are one conditional statement (one round trip): of
        two concurrent claims of a lease exactly one wins; the other, and any claim of a
        lease that is not an unclaimed active pool lease, fails with LEASE_NOT_CLAIMABLE.
        Only when the claim fails is the lease read, to say why.
        """
        lid = validation.resource_id("lease_id", lease_id)
        check_purpose("purpose", purpose)
        if purpose == WARM_POOL:
            raise InvalidArgument("purpose", "must say what the workload borrows the lease for")
        if forwarded is None:
            forwarded = ForwardedWorkload(
                None,
                Unauthenticated(
                    "ClaimLease acts for a workload: forward its bearer in"
                    f" {METADATA_KEY} (Bearer <token>)",
                    reason="WORKLOAD_TOKEN_MISSING",
                ),
            )
        if forwarded.error is not None:
            raise self._refuse(
                caller, forwarded, forwarded.error, operation="claim", target_id=str(lid)
            )
        workload = forwarded.require()
        org_id = uuid.UUID(caller.org_id)
        now = self._clock()
        max_ttl = (workload.max_ttl_seconds or 0) + int(CLOCK_LEEWAY.total_seconds())
        claimed = self._store.claim_lease(
            org_id=org_id,
            lease_id=lid,
            workload_id=uuid.UUID(workload.subject_id),
            purpose=purpose,
            now=now,
            grants=[(g.connection_id, g.role) for g in workload.grants],
            latest_max_expiry=now + timedelta(seconds=max_ttl),
            actor=lease_actor(caller, workload),
            details={"agent_id": caller.subject_id, "previous_purpose": WARM_POOL},
        )
        if claimed is not None:
            log.info("lease claimed", lease_id=str(lid), connection_id=str(claimed.connection_id))
            return claimed
        raise self._claim_failure(caller, forwarded, workload, lid, now)

    def _claim_failure(
        self,
        caller: Principal,
        forwarded: ForwardedWorkload,
        workload: Principal,
        lid: uuid.UUID,
        now: datetime,
    ) -> SevvoError:
        """Why a claim changed nothing, audited: a refusal (lease.refuse), or a lease that is
        missing or not claimable (lease.claim, failure)."""
        with self._store.connection() as conn:
            lease = self._store.get_lease(conn, uuid.UUID(caller.org_id), lid)
        if lease is not None:
            ttl = requested_ttl_seconds(now, lease.max_expires_at)
            refusal = borrow_refusal(workload, str(lease.connection_id), lease.role, ttl)
            if refusal is not None:
                return self._refuse(
                    caller,
                    forwarded,
                    refusal,
                    operation="claim",
                    target_id=str(lid),
                    connection_id=str(lease.connection_id),
                    role=lease.role,
                    ttl_seconds=str(ttl),
                )
        error: SevvoError = (
            _lease_not_found()
            if lease is None
            else FailedPrecondition(
                "the lease is not an unclaimed, active warm-pool lease (another workload may"
                " have claimed it first); claim another pool lease or create a new one",
                reason="LEASE_NOT_CLAIMABLE",
            )
        )
        with self._store.transaction() as conn:
            audit.record(
                conn,
                org_id=caller.org_id,
                actor=lease_actor(caller, workload),
                action="lease.claim",
                target_type=TARGET_TYPE,
                target_id=str(lid),
                outcome="failure",
                reason=error.reason,
                details={"agent_id": caller.subject_id},
            )
        return error

    def list_to_reap(
        self, caller: Principal, connection_id: str, page_size: int, page_token: str
    ) -> tuple[list[LeaseRow], str]:
        """Leases whose role must be dropped now, soonest expired first, and the next token."""
        cid = _optional_id("connection_id", connection_id)
        limit = paging.page_size(page_size)
        with self._store.connection() as conn:
            rows = self._store.list_leases_to_reap(
                conn,
                uuid.UUID(caller.org_id),
                connection_id=cid,
                now=self._clock(),
                limit=limit + 1,
                after=paging.decode_cursor(page_token),
            )
        return paging.page_of(rows, limit, lambda r: (r.expires_at, r.id))

    # User-facing.

    def list_page(
        self,
        caller: Principal,
        connection_id: str,
        state: str,
        page_size: int,
        page_token: str,
        *,
        role: str = "",
        workload_id: str = "",
    ) -> tuple[list[LeaseRow], str]:
        """One page of the org's leases, newest first, and the next page token; filtered by
        connection, state, connection role and workload when those are set."""
        cid = _optional_id("connection_id", connection_id)
        wanted = _state("state", state, allow_empty=True)
        wanted_role = role_name("role", role) if role else None
        workload = _optional_id("workload_id", workload_id)
        limit = paging.page_size(page_size)
        with self._store.connection() as conn:
            rows = self._store.list_leases(
                conn,
                uuid.UUID(caller.org_id),
                connection_id=cid,
                state=wanted,
                role=wanted_role,
                workload_id=workload,
                limit=limit + 1,
                before=paging.decode_cursor(page_token),
            )
        return paging.page_of(rows, limit, lambda r: (r.created_at, r.id))

    def count(
        self, caller: Principal, connection_id: str
    ) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """Lease counts by state (all leases), by purpose and by connection role (unrevoked
        leases)."""
        cid = _optional_id("connection_id", connection_id)
        with self._store.connection() as conn:
            return self._store.count_leases(conn, uuid.UUID(caller.org_id), cid)

    def revoke(self, caller: Principal, connection_id: str, lease_id: str) -> list[LeaseRow]:
        """Marks creating and active leases revoke_requested for the agent's reaper.

        Idempotent: leases already on their way out are left alone, and the call succeeds.
        """
        cid = validation.resource_id("connection_id", connection_id)
        lid = _optional_id("lease_id", lease_id)
        org_id = uuid.UUID(caller.org_id)

        def work(conn: psycopg.Connection[Any]) -> list[LeaseRow]:
            if self._store.get(conn, org_id, cid) is None:
                raise _connection_not_found()
            if lid is not None:
                lease = self._store.get_lease(conn, org_id, lid)
                if lease is None or lease.connection_id != cid:
                    raise _lease_not_found()
            leases = self._store.lock_revocable_leases(conn, org_id, cid, lid)
            return request_revocation(conn, caller, leases, self._clock())

        marked = self._run(caller, "lease.revoke.request", str(lid or cid), work)
        log.info("lease revocation requested", connection_id=str(cid), count=len(marked))
        return marked
