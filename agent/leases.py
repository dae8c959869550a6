"""Per-workload credentials: a minted role per workload when the connection is dynamic.

The lease's metadata (id, role name, connection role, purpose, expiry, state) is recorded in
the control plane before the role exists, so a crash leaves a record the reaper can act on.
Each lease is minted from one named role of the connection and revoked with that role's own
revocation statements. Passwords never leave the agent's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
from psycopg.rows import TupleRow

from agent.dynamic_credentials import (
    MintedRole,
    RoleNotFound,
    find_expired,
    mint,
    renew,
    revoke,
)
from agent.root_rotation import connect_privileged
from sevvo.connections.v1 import connections_pb2, connections_pb2_grpc
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.logs import get_logger
from sevvo.runtime.servicing import timestamp
from sevvo.runtime.workload_grants import DEFAULT_ROLE

log = get_logger(__name__)


class LeaseManager:
    """Mints, records and revokes the role each workload on a dynamic connection runs as."""

    def __init__(
        self,
        leases: connections_pb2_grpc.LeaseServiceStub,
        credentials: connections_pb2_grpc.ConnectionCredentialServiceStub,
    ) -> None:
        self._leases = leases
        self._credentials = credentials

    async def privileged(
        self, connection_id: str, resolved: connections_pb2.ResolveConnectionCredentialsResponse
    ) -> psycopg.AsyncConnection[TupleRow]:
        """Logs in as the privileged role, completing an interrupted root rotation first."""
        admin, _ = await connect_privileged(self._credentials, connection_id, resolved.postgres)
        return admin

    @asynccontextmanager
    async def workload_credentials(
        self,
        connection_id: str,
        purpose: str,
        resolved: connections_pb2.ResolveConnectionCredentialsResponse,
        role: str = DEFAULT_ROLE,
        *,
        keep_alive: timedelta | None = None,
    ) -> AsyncIterator[connections_pb2.PostgresCredentials]:
        """Yields the credentials a workload uses; for dynamic connections a fresh role.

        The role is minted from the connection role ``role``, whose settings ``resolved``
        must hold (resolved with that role; sevvo's own work uses "default"). It is revoked
        when the workload ends, however it ends; a revoke that fails is recorded as failing
        so the reaper retries it instead of forgetting it. With ``keep_alive`` (a long
        workload, such as a sync) the lease is renewed by its default TTL that often while
        the workload runs, up to the role's maximum TTL, so neither the role's VALID UNTIL nor
        the reaper ends it mid-work.
        """
        if not resolved.HasField("dynamic"):
            yield resolved.postgres
            return
        settings = resolved.dynamic
        if (settings.role or DEFAULT_ROLE) != role:
            raise ValueError("resolved holds the settings of another connection role")
        ttl = timedelta(seconds=settings.default_ttl_seconds)
        headroom = timedelta(seconds=settings.max_ttl_seconds - settings.default_ttl_seconds)
        lease_id = str(uuid.uuid4())
        admin = await self.privileged(connection_id, resolved)
        try:
            minted = await mint_recorded(
                self._leases,
                admin,
                settings,
                lease_id=lease_id,
                connection_id=connection_id,
                purpose=purpose,
                ttl=ttl,
                headroom=headroom,
            )
            log.info(
                "lease minted",
                lease_id=lease_id,
                role=minted.name,
                connection_role=role,
                purpose=purpose,
            )
            renewing = (
                None
                if keep_alive is None
                else asyncio.ensure_future(
                    self._keep_alive(lease_id, minted.name, admin, ttl, keep_alive)
                )
            )
            try:
                workload = connections_pb2.PostgresCredentials()
                workload.CopyFrom(resolved.postgres)
                workload.ClearField("pending_password")
                workload.username, workload.password = minted.name, minted.password
                yield workload
            finally:
                if renewing is not None:
                    renewing.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await renewing
                await self.revoke_lease(lease_id, minted.name, settings, admin)
        finally:
            await admin.close()

    async def _keep_alive(
        self,
        lease_id: str,
        name: str,
        admin: psycopg.AsyncConnection[TupleRow],
        ttl: timedelta,
        every: timedelta,
    ) -> None:
        """Renews the lease by ``ttl`` every ``every`` until cancelled or at its maximum TTL.

        The record moves first, then the role's VALID UNTIL: the reaper acts on the record,
        so the record never says less than the role. A failed renewal is logged and tried
        again next time; the lease still has what is left of its TTL.
        """
        while True:
            await asyncio.sleep(every.total_seconds())
            expiry = datetime.now(UTC) + ttl
            request = connections_pb2.UpdateLeaseRequest(
                lease_id=lease_id, state=connections_pb2.LEASE_STATE_ACTIVE
            )
            request.expire_time.FromDatetime(expiry)
            try:
                await self._leases.UpdateLease(request, timeout=10)
                await renew(admin, name, new_valid_until=expiry)
            except grpc.aio.AioRpcError as exc:
                reason = error_details(exc).reason
                if reason == "LEASE_PAST_MAX_TTL":
                    log.warning("lease at its maximum TTL; not renewed", lease_id=lease_id)
                    return
                log.warning("lease renewal failed; retried", lease_id=lease_id, reason=reason)
                continue
            except RoleNotFound:
                log.warning("lease role gone; not renewed", lease_id=lease_id)
                return
            except psycopg.Error as exc:
                log.warning(
                    "lease role not renewed; retried", lease_id=lease_id, sqlstate=exc.sqlstate
                )
                continue
            log.info("lease renewed", lease_id=lease_id, expire_time=expiry.isoformat())

    async def revoke_lease(
        self,
        lease_id: str,
        name: str,
        settings: connections_pb2.DynamicSettings,
        admin: psycopg.AsyncConnection[TupleRow],
    ) -> None:
        """Revokes a lease's role and records the outcome; never raises for a failed revoke."""
        try:
            await self._update(lease_id, connections_pb2.LEASE_STATE_REVOKING)
            await revoke(admin, name, revocation=list(settings.revocation_statements) or None)
            await self._update(lease_id, connections_pb2.LEASE_STATE_REVOKED)
            log.info("lease revoked", lease_id=lease_id, role=name)
        except Exception as exc:  # Recorded, never dropped: the reaper retries failing leases.
            log.warning("lease revoke failed", lease_id=lease_id, error=type(exc).__name__)
            await self._update(
                lease_id, connections_pb2.LEASE_STATE_FAILING, failure_reason=type(exc).__name__
            )

    async def _update(
        self, lease_id: str, state: connections_pb2.LeaseState, *, failure_reason: str = ""
    ) -> None:
        await self._leases.UpdateLease(
            connections_pb2.UpdateLeaseRequest(
                lease_id=lease_id,
                state=state,
                failure_reason=failure_reason,
            ),
            timeout=10,
        )


async def mint_recorded(
    leases: connections_pb2_grpc.LeaseServiceStub,
    admin: psycopg.AsyncConnection[TupleRow],
    settings: connections_pb2.DynamicSettings,
    *,
    lease_id: str,
    connection_id: str,
    purpose: str,
    ttl: timedelta,
    headroom: timedelta,
) -> MintedRole:
    """Mints a login role from ``settings``' role for ``ttl``, its lease recorded (state
    creating) before the role's creation commits and marked active after; renewals may
    reach ``headroom`` past the first expiry. The lease of a failed mint stays for the
    reaper."""

    async def record_intent(name: str, valid_until: datetime) -> None:
        await leases.CreateLease(
            connections_pb2.CreateLeaseRequest(
                lease_id=lease_id,
                connection_id=connection_id,
                role_name=name,
                role=settings.role or DEFAULT_ROLE,
                purpose=purpose,
                expire_time=timestamp(valid_until),
                max_expire_time=timestamp(valid_until + headroom),
            ),
            timeout=10,
        )

    minted = await mint(
        admin,
        creation=list(settings.creation_statements),
        ttl=ttl,
        purpose=purpose,
        before_commit=record_intent,
    )
    await leases.UpdateLease(
        connections_pb2.UpdateLeaseRequest(
            lease_id=lease_id, state=connections_pb2.LEASE_STATE_ACTIVE
        ),
        timeout=10,
    )
    return minted


class Reaper:
    """Revokes what workloads left behind: requested, expired or failing leases, and
    expired ``sevvo_dyn_`` roles that no lease knows about (a crash before the intent landed
    cannot happen, but a crash mid-revoke can leave a NOLOGIN role).

    Runs periodically in the agent; every pass starts from the control plane's lease list,
    so a restarted agent picks up where a dead one stopped.
    """

    def __init__(
        self,
        credentials: connections_pb2_grpc.ConnectionCredentialServiceStub,
        leases: connections_pb2_grpc.LeaseServiceStub,
    ) -> None:
        self._credentials = credentials
        self._leases = leases
        self._manager = LeaseManager(leases, credentials)

    async def _to_reap(self) -> list[connections_pb2.Lease]:
        found: list[connections_pb2.Lease] = []
        token = ""
        while True:
            page = await self._leases.ListLeasesToReap(
                connections_pb2.ListLeasesToReapRequest(page_size=200, page_token=token),
                timeout=10,
            )
            found.extend(page.leases)
            token = page.next_page_token
            if not token:
                return found

    async def reap_once(self) -> int:
        """One pass; returns how many roles were revoked."""
        by_connection: dict[str, list[connections_pb2.Lease]] = {}
        for lease in await self._to_reap():
            by_connection.setdefault(lease.connection_id, []).append(lease)
        revoked = 0
        for connection_id, leases in by_connection.items():
            settings = _RoleSettings(self._credentials, connection_id)
            resolved = await settings.resolve(DEFAULT_ROLE)
            if resolved is None or not resolved.HasField("dynamic"):
                continue
            admin = await self._manager.privileged(connection_id, resolved)
            try:
                for lease in leases:
                    # Each lease goes with its own role's revocation statements.
                    await self._manager.revoke_lease(
                        lease.id, lease.role_name, await settings.of(lease.role), admin
                    )
                    revoked += 1
                # Roles past their expiry that no listed lease names (e.g. left NOLOGIN by a
                # revoke that died half-way) go too; revoke is idempotent.
                known = {lease.role_name for lease in leases}
                strays = [name for name in await find_expired(admin) if name not in known]
                revoked += await self._revoke_strays(connection_id, strays, settings, admin)
            finally:
                await admin.close()
        if revoked:
            log.info("reaper revoked roles", count=revoked)
        return revoked

    async def _revoke_strays(
        self,
        connection_id: str,
        names: list[str],
        settings: _RoleSettings,
        admin: psycopg.AsyncConnection[TupleRow],
    ) -> int:
        if not names:
            return 0
        # Most strays expired between the lease list and the role scan: list again, so their
        # leases are recorded revoked in this pass, not left active until the next one.
        leases = {
            lease.role_name: lease
            for lease in await self._to_reap()
            if lease.connection_id == connection_id
        }
        for name in names:
            lease = leases.get(name)
            if lease is None:
                await revoke(admin, name)
            else:
                await self._manager.revoke_lease(
                    lease.id, name, await settings.of(lease.role), admin
                )
        return len(names)

    async def run(self, interval: float) -> None:
        """Reaps every ``interval`` seconds until cancelled; a failed pass is retried later."""
        while True:
            try:
                await self.reap_once()
            except Exception as exc:  # The next pass retries; failing leases stay listed.
                log.warning("reaper pass failed", error=type(exc).__name__)
            await asyncio.sleep(interval)


class _RoleSettings:
    """One reaper pass's view of a connection's roles: each role's settings, resolved once.

    A role removed with force still resolves until its leases are revoked. Should one not
    (it never should), its leases are revoked with the built-in revocation, which drops the
    role whatever its creation statements granted, rather than left behind.
    """

    def __init__(
        self, credentials: connections_pb2_grpc.ConnectionCredentialServiceStub, connection_id: str
    ) -> None:
        self._credentials = credentials
        self._connection_id = connection_id
        self._known: dict[str, connections_pb2.DynamicSettings] = {}

    async def resolve(
        self, role: str
    ) -> connections_pb2.ResolveConnectionCredentialsResponse | None:
        """The connection's credentials with ``role``'s settings; None when it has no such
        role. Other failures raise, failing the pass (the next one retries)."""
        try:
            resolved: connections_pb2.ResolveConnectionCredentialsResponse = (
                await self._credentials.ResolveConnectionCredentials(
                    connections_pb2.ResolveConnectionCredentialsRequest(
                        connection_id=self._connection_id, purpose="reaper", role=role
                    ),
                    timeout=10,
                )
            )
        except grpc.aio.AioRpcError as exc:
            if error_details(exc).reason == "ROLE_NOT_FOUND":
                log.warning("reaper found no settings for a lease's role", connection_role=role)
                return None
            raise
        if resolved.HasField("dynamic"):
            self._known[role] = resolved.dynamic
        return resolved

    async def of(self, role: str) -> connections_pb2.DynamicSettings:
        """``role``'s settings (the built-in revocation's when it has none)."""
        role = role or DEFAULT_ROLE
        if role not in self._known and await self.resolve(role) is None:
            self._known[role] = connections_pb2.DynamicSettings(role=role)
        return self._known[role]
