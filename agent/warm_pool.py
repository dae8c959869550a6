"""The agent's warm pool: login roles minted ahead of time, so a borrow skips CREATE ROLE.

Configured per (connection, role) with SEVVO_WARM_POOL (``parse_warm_pool``). Each pooled
role is an ordinary lease: recorded in the control plane before its creation commits, with purpose
"warm_pool" and no workload, minted from the role's own creation statements, and revoked
with its own revocation statements. Pooled roles
expire like any lease: one with less than ``retire_below`` of its life left is revoked and
replaced rather than handed out, and a pool left behind by a dead agent is dropped by the
reaper after its expiry. On shutdown the unclaimed roles are revoked. Passwords live only
in this process's memory.

Freshness band
--------------
A pooled role was minted earlier, so its expiry lies before now + TTL. The band is
``fresh_band`` (30 s) or a tenth of the TTL, whichever is less. The refill pass renews every
pooled role that drifted more than half the band below now + its TTL (within its max TTL),
and a borrow accepts a role whose expiry is at most the band short of what was asked; the
workload is told the role's true expiry. Only a role further off is renewed on the borrow's
path.

Deciding locally, recording right after
---------------------------------------
With a ``verifier`` (sevvo.runtime.tokens.TokenVerifier polling auth's keys and
revocations, as the services' verifiers do), a borrow costs no control-plane round trip: the
agent verifies the workload's bearer itself, so a revoked or changed workload is refused
within the verifier's refresh (about 2 s, the services' bound too), checks ``may_borrow``
against the bearer's grants and maximum TTL, hands out the role and sends
LeaseService.ClaimLease in the background. If connections refuses the claim (a revocation
that raced the borrow), the role is revoked at once and the refusal logged (connections
audits it). A borrow the bearer's grants do not allow, or any borrow when the verifier has
no fresh state, claims synchronously instead, so connections decides and audits as before.
Trade-off: if the agent dies between hand-out and claim, the lease stays an unclaimed pool
lease (no workload recorded) and the reaper revokes it at its expiry; and for the few
milliseconds before the claim lands, the workload's own Renew or Revoke of that lease is
refused as not its lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import grpc
import psycopg
from psycopg.rows import TupleRow

from agent.credential_broker import (
    IssuedCredential,
    is_uuid,
    issued_credential,
    relayed,
    workload_metadata,
)
from agent.dynamic_credentials import renew
from agent.leases import LeaseManager, mint_recorded
from sevvo.connections.v1 import connections_pb2, connections_pb2_grpc
from sevvo.runtime.config import ConfigError
from sevvo.runtime.errors import Unauthenticated, Unavailable
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.logs import get_logger
from sevvo.runtime.servicing import timestamp
from sevvo.runtime.tokens import PrincipalKind, TokenVerifier
from sevvo.runtime.workload_grants import (
    DEFAULT_ROLE,
    ROLE_NAME_HELP,
    ROLE_NAME_RULE,
    may_borrow,
)

log = get_logger(__name__)

POOL_PURPOSE: Final = "warm_pool"
"""The purpose of every pooled lease until a workload claims it (ClaimLease's contract)."""
MAX_POOL_SIZE: Final = 50
MAX_POOLED_ROLES: Final = 200
"""All pools together: each pooled role is a live login role in a customer's database."""
NOT_CLAIMABLE: Final = "LEASE_NOT_CLAIMABLE"
FRESH_BAND: Final = timedelta(seconds=30)
"""How far short of the asked expiry a pooled role may be handed out, at most (a tenth of
the TTL when that is less; see the module docstring)."""
_CLAIM_ATTEMPTS: Final = 3


@dataclass(frozen=True)
class PoolSpec:
    """One configured pool: keep ``size`` roles of ``connection``'s ``role`` minted."""

    connection: str
    """The connection's name or UUID, as a workload names it."""
    role: str
    size: int


def parse_warm_pool(variable: str, value: str) -> tuple[PoolSpec, ...]:
    """Parses ``CONNECTION[:ROLE]=SIZE,...`` (ROLE defaults to "default"); ConfigError naming
    ``variable`` and the faulty entry otherwise.

    A connection whose name holds ',', '=' or ':' (or surrounding spaces) is named by its
    UUID instead.
    """
    specs: list[PoolSpec] = []
    seen: set[tuple[str, str]] = set()
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            continue
        target, equals, size_text = entry.rpartition("=")
        if not equals:
            raise ConfigError(
                f"{variable}: entry {entry!r} has no size; write CONNECTION[:ROLE]=SIZE,"
                " e.g. reporting-db:readonly=5"
            )
        connection, colon, role = target.partition(":")
        connection, role = connection.strip(), role.strip() if colon else DEFAULT_ROLE
        if not connection:
            raise ConfigError(f"{variable}: entry {entry!r} names no connection")
        if ":" in role or "=" in connection:
            raise ConfigError(
                f"{variable}: entry {entry!r} is ambiguous; name a connection whose name holds"
                " ',', '=' or ':' by its UUID"
            )
        if not ROLE_NAME_RULE.fullmatch(role):
            raise ConfigError(f"{variable}: role {role!r} in entry {entry!r} {ROLE_NAME_HELP}")
        try:
            size = int(size_text.strip())
        except ValueError:
            raise ConfigError(
                f"{variable}: size {size_text.strip()!r} in entry {entry!r} is not a whole number"
            ) from None
        if not 1 <= size <= MAX_POOL_SIZE:
            raise ConfigError(
                f"{variable}: size in entry {entry!r} must be between 1 and {MAX_POOL_SIZE}"
            )
        if (connection, role) in seen:
            raise ConfigError(f"{variable}: {connection}:{role} is configured twice")
        seen.add((connection, role))
        specs.append(PoolSpec(connection, role, size))
    total = sum(spec.size for spec in specs)
    if total > MAX_POOLED_ROLES:
        raise ConfigError(
            f"{variable}: {total} pooled roles in all; at most {MAX_POOLED_ROLES} are allowed"
        )
    return tuple(specs)


@dataclass
class PooledRole:
    """A minted, active, unclaimed role; the password never leaves this process but to the
    workload that claims it."""

    lease_id: str
    name: str
    password: str = field(repr=False)
    valid_until: datetime
    max_expire: datetime
    ttl: timedelta


@dataclass
class _Pool:
    spec: PoolSpec
    entries: deque[PooledRole] = field(default_factory=deque)
    retired: list[PooledRole] = field(default_factory=list)
    connection_id: str | None = None
    resolved: connections_pb2.ResolveConnectionCredentialsResponse | None = None
    admin: psycopg.AsyncConnection[TupleRow] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def matches(self, connection: str, role: str) -> bool:
        return (role or DEFAULT_ROLE) == self.spec.role and connection in (
            self.spec.connection,
            self.connection_id,
        )


class WarmPool:
    """Keeps each configured pool full and hands its roles to workloads (``take``)."""

    def __init__(
        self,
        specs: Iterable[PoolSpec],
        leases: connections_pb2_grpc.LeaseServiceStub,
        credentials: connections_pb2_grpc.ConnectionCredentialServiceStub,
        *,
        ca_dir: Path | None = None,
        refill_seconds: float = 5.0,
        retire_below: float = 0.5,
        ttl: timedelta | None = None,
        fresh_band: timedelta = FRESH_BAND,
        verifier: TokenVerifier | None = None,
    ) -> None:
        """``retire_below``: the share of its TTL a role must have left to be handed out
        (the rest of the time it is revoked and replaced); ``ttl`` caps the role's default
        TTL for pooled roles (None: the role's default); ``ca_dir`` is where CA bundles are
        written for the workloads' sslrootcert (the credential API's); ``fresh_band`` and
        ``verifier``: see the module docstring (no verifier: every claim is synchronous)."""
        if not 0 < retire_below < 1:
            raise ValueError("retire_below must be between 0 and 1")
        if fresh_band < timedelta(0):
            raise ValueError("fresh_band must not be negative")
        self._pools = [_Pool(spec) for spec in specs]
        self._leases = leases
        self._credentials = credentials
        self._ca_dir = ca_dir
        self._manager = LeaseManager(leases, credentials)
        self._refill_seconds = refill_seconds
        self._retire_below = retire_below
        self._ttl = ttl
        self._fresh_band = fresh_band
        self._verifier = verifier
        self._claims: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._closed = False

    def sizes(self) -> dict[tuple[str, str], int]:
        """How many roles each pool holds now, by (connection as configured, role)."""
        return {(p.spec.connection, p.spec.role): len(p.entries) for p in self._pools}

    async def take(
        self,
        connection_id: str,
        role: str,
        ttl: timedelta | None,
        bearer: str,
        purpose: str,
        *,
        max_ttl: timedelta | None = None,
    ) -> IssuedCredential | None:
        """Hands a pooled role to the workload whose bearer this is, or None when there is
        no pool for (connection, role), it is empty, or its roles cannot serve the request.

        ``ttl`` None means the role's default. A role whose expiry comes more than
        ``fresh_band`` before now + ttl is renewed after the claim, within its max TTL.
        ``max_ttl`` is the longest lease the workload may hold: a pooled lease may live the
        role's max TTL, and connections refuses a claim past the workload's, so such a
        workload gets None (a fresh mint, capped to its maximum) rather than a refusal. A
        refusal (a role not granted, a revoked workload) is raised as a SevvoError (the
        workload's answer), and the role stays pooled for the next borrower.
        """
        pool = next((p for p in self._pools if p.matches(connection_id, role)), None)
        if pool is None or self._closed:
            return None
        try:
            while pool.entries:
                # Taken off the deque before any await: no two borrowers see the same role.
                entry = pool.entries.popleft()
                now = datetime.now(UTC)
                if self._stale(entry, now):
                    # Revoked by the next refill pass, off the borrower's path.
                    pool.retired.append(entry)
                    continue
                ttl_used = ttl if ttl is not None else entry.ttl
                wanted = now + ttl_used
                too_long = max_ttl is not None and entry.max_expire > now + max_ttl
                if wanted > entry.max_expire or too_long:
                    # Every pooled role was minted alike: none lasts that long. A fresh
                    # mint may, or is refused by connections with the reason.
                    pool.entries.appendleft(entry)
                    return None
                fresh = wanted - entry.valid_until <= self._band(entry)
                try:
                    local = fresh and self._allowed_locally(bearer, pool, ttl_used)
                except Unauthenticated:
                    pool.entries.appendleft(entry)  # Still the pool's, for the next borrower.
                    raise
                if local:
                    return self._hand_out(pool, entry, bearer, purpose)
                try:
                    lease: connections_pb2.Lease = await self._leases.ClaimLease(
                        connections_pb2.ClaimLeaseRequest(lease_id=entry.lease_id, purpose=purpose),
                        metadata=workload_metadata(bearer),
                        timeout=10,
                    )
                except grpc.aio.AioRpcError as exc:
                    if error_details(exc).reason == NOT_CLAIMABLE:
                        # Revoked by a user or the reaper meanwhile: not ours to hand out.
                        log.warning("pooled lease not claimable", lease_id=entry.lease_id)
                        continue
                    pool.entries.appendleft(entry)
                    raise relayed(exc, "claiming a pooled credential") from None
                try:
                    if not fresh:
                        lease = await self._renew(pool, entry, wanted, bearer)
                    issued = issued_credential(
                        lease_id=entry.lease_id,
                        connection_id=lease.connection_id,
                        role=pool.spec.role,
                        postgres=self._settings_postgres(pool),
                        username=entry.name,
                        password=entry.password,
                        expire_time=lease.expire_time.ToDatetime(UTC),
                        max_expire_time=lease.max_expire_time.ToDatetime(UTC),
                        ca_dir=self._ca_dir,
                    )
                except BaseException:
                    # Claimed but never handed out: nobody will use it, so it goes now.
                    admin = await self._admin(pool)
                    await self._manager.revoke_lease(
                        entry.lease_id, entry.name, self._settings(pool), admin
                    )
                    raise
                log.info(
                    "pooled lease claimed",
                    lease_id=entry.lease_id,
                    role=entry.name,
                    connection_role=pool.spec.role,
                    purpose=purpose,
                )
                return issued
            return None
        finally:
            self._wake.set()

    def _allowed_locally(self, bearer: str, pool: _Pool, ttl: timedelta) -> bool:
        """Whether the agent may hand the role out before connections records the claim.

        A revoked or changed workload is refused here (Unauthenticated, the verifier's
        reason). False (claim synchronously, so connections decides and audits) when there
        is no verifier, it has no fresh state, or the bearer's grants do not allow it.
        """
        if self._verifier is None or pool.connection_id is None:
            return False
        try:
            principal = self._verifier.verify(bearer, PrincipalKind.WORKLOAD)
        except Unavailable:
            return False
        except Unauthenticated:
            log.warning("pooled borrow refused: workload bearer no longer valid")
            raise
        return principal.max_ttl_seconds is not None and (
            may_borrow(
                principal.grants,
                principal.max_ttl_seconds,
                pool.connection_id,
                pool.spec.role,
                int(ttl.total_seconds()),
            )
            is None
        )

    def _hand_out(
        self, pool: _Pool, entry: PooledRole, bearer: str, purpose: str
    ) -> IssuedCredential:
        """The credential for ``entry``, its claim recorded in the background."""
        assert pool.connection_id is not None
        try:
            issued = issued_credential(
                lease_id=entry.lease_id,
                connection_id=pool.connection_id,
                role=pool.spec.role,
                postgres=self._settings_postgres(pool),
                username=entry.name,
                password=entry.password,
                expire_time=entry.valid_until,
                max_expire_time=entry.max_expire,
                ca_dir=self._ca_dir,
            )
        except BaseException:
            pool.retired.append(entry)  # Never handed out: revoked by the next refill pass.
            raise
        task = asyncio.create_task(self._claim_behind(pool, entry, bearer, purpose))
        self._claims.add(task)
        task.add_done_callback(self._claims.discard)
        log.info(
            "pooled lease lent",
            lease_id=entry.lease_id,
            role=entry.name,
            connection_role=pool.spec.role,
            purpose=purpose,
        )
        return issued

    async def _claim_behind(
        self, pool: _Pool, entry: PooledRole, bearer: str, purpose: str
    ) -> None:
        """Records the claim of a role already handed out; revokes it if connections refuses."""
        for attempt in range(1, _CLAIM_ATTEMPTS + 1):
            try:
                await self._leases.ClaimLease(
                    connections_pb2.ClaimLeaseRequest(lease_id=entry.lease_id, purpose=purpose),
                    metadata=workload_metadata(bearer),
                    timeout=10,
                )
                return
            except grpc.aio.AioRpcError as exc:
                details = error_details(exc)
                if details.code in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ):
                    if attempt < _CLAIM_ATTEMPTS:
                        await asyncio.sleep(0.2 * attempt)
                        continue
                    # Unrecorded, as if the agent had died: the reaper revokes it at expiry.
                    log.warning(
                        "pooled lease claim not recorded; it stays a pool lease until expiry",
                        lease_id=entry.lease_id,
                    )
                    return
                log.warning(
                    "pooled lease claim refused; revoking the role lent",
                    lease_id=entry.lease_id,
                    role=entry.name,
                    reason=details.reason or details.code.name,
                )
                break
        try:
            async with pool.lock:  # The pool's session is the refill pass's too.
                admin = await self._admin(pool)
                await self._manager.revoke_lease(
                    entry.lease_id, entry.name, self._settings(pool), admin
                )
        except Exception as exc:  # The reaper revokes it at expiry.
            log.warning("revoking a refused pooled lease failed", error=type(exc).__name__)

    async def _renew(
        self, pool: _Pool, entry: PooledRole, wanted: datetime, bearer: str
    ) -> connections_pb2.Lease:
        # The record first: a lease recorded as lasting longer than its role is harmless,
        # a role outliving its record would be reaped while the workload uses it.
        try:
            lease: connections_pb2.Lease = await self._leases.UpdateLease(
                connections_pb2.UpdateLeaseRequest(
                    lease_id=entry.lease_id,
                    state=connections_pb2.LEASE_STATE_ACTIVE,
                    expire_time=timestamp(wanted),
                ),
                metadata=workload_metadata(bearer),
                timeout=10,
            )
        except grpc.aio.AioRpcError as exc:
            raise relayed(exc, "renewing a pooled credential") from None
        await renew(await self._admin(pool), entry.name, new_valid_until=wanted)
        return lease

    @staticmethod
    def _settings(pool: _Pool) -> connections_pb2.DynamicSettings:
        assert pool.resolved is not None  # set before the first role was minted
        return pool.resolved.dynamic

    @staticmethod
    def _settings_postgres(pool: _Pool) -> connections_pb2.PostgresCredentials:
        assert pool.resolved is not None  # set before the first role was minted
        return pool.resolved.postgres

    def _band(self, entry: PooledRole) -> timedelta:
        """How far short of the asked expiry ``entry`` may be handed out: ``fresh_band``,
        or a tenth of its TTL if that is less."""
        return min(self._fresh_band, entry.ttl / 10)

    def _stale(self, entry: PooledRole, now: datetime) -> bool:
        return entry.valid_until - now < entry.ttl * self._retire_below

    async def fill_once(self) -> int:
        """One refill pass over every pool: revokes stale roles and mints up to each size.
        Returns how many roles were minted; a pool that fails is retried next pass."""
        minted = 0
        for pool in self._pools:
            if self._closed:
                break
            try:
                minted += await self._fill(pool)
            except Exception as exc:  # One broken pool must not starve the others.
                log.warning(
                    "warm pool refill failed",
                    connection=pool.spec.connection,
                    connection_role=pool.spec.role,
                    error=type(exc).__name__,
                )
                await self._drop_admin(pool)
        return minted

    async def _fill(self, pool: _Pool) -> int:
        async with pool.lock:
            now = datetime.now(UTC)
            stale = [e for e in pool.entries if self._stale(e, now)]
            pool.entries = deque(e for e in pool.entries if e not in stale)
            stale, pool.retired = [*pool.retired, *stale], []
            if stale:
                try:
                    admin = await self._admin(pool)
                except BaseException:
                    pool.retired.extend(stale)  # The next pass tries again.
                    raise
                for entry in stale:  # revoke_lease records a failure instead of raising.
                    await self._manager.revoke_lease(
                        entry.lease_id, entry.name, self._settings(pool), admin
                    )
                log.info("warm pool retired roles", count=len(stale), role=pool.spec.role)
            await self._keep_fresh(pool)
            minted = 0
            while len(pool.entries) < pool.spec.size and not self._closed:
                pool.entries.append(await self._mint(pool))
                minted += 1
            return minted

    async def _keep_fresh(self, pool: _Pool) -> None:
        """Renews the pooled roles that drifted more than half the band below now + TTL,
        so a borrow finds them within the band (see the module docstring)."""
        for entry in list(pool.entries):
            if self._closed:
                return
            now = datetime.now(UTC)
            target = min(now + entry.ttl, entry.max_expire)
            if target - entry.valid_until <= self._band(entry) / 2:
                continue
            try:
                # Off the deque while renewed: a borrower never gets a role mid-renewal.
                pool.entries.remove(entry)
            except ValueError:
                continue  # Borrowed meanwhile.
            try:
                # The record first, as for any renewal (see _renew).
                await self._leases.UpdateLease(
                    connections_pb2.UpdateLeaseRequest(
                        lease_id=entry.lease_id,
                        state=connections_pb2.LEASE_STATE_ACTIVE,
                        expire_time=timestamp(target),
                    ),
                    timeout=10,
                )
                await renew(await self._admin(pool), entry.name, new_valid_until=target)
            except BaseException:
                pool.retired.append(entry)  # Revoked and replaced by the next pass.
                raise
            entry.valid_until = target
            pool.entries.append(entry)

    async def _mint(self, pool: _Pool) -> PooledRole:
        admin = await self._admin(pool)
        assert pool.resolved is not None and pool.connection_id is not None
        settings = pool.resolved.dynamic
        ttl = timedelta(seconds=settings.default_ttl_seconds)
        if self._ttl is not None:
            ttl = min(ttl, self._ttl)
        headroom = timedelta(seconds=settings.max_ttl_seconds) - ttl
        lease_id = str(uuid.uuid4())
        minted = await mint_recorded(
            self._leases,
            admin,
            settings,
            lease_id=lease_id,
            connection_id=pool.connection_id,
            purpose=POOL_PURPOSE,
            ttl=ttl,
            headroom=headroom,
        )
        log.info("warm pool minted", lease_id=lease_id, role=minted.name)
        return PooledRole(
            lease_id=lease_id,
            name=minted.name,
            password=minted.password,
            valid_until=minted.valid_until,
            max_expire=minted.valid_until + headroom,
            ttl=ttl,
        )

    async def _admin(self, pool: _Pool) -> psycopg.AsyncConnection[TupleRow]:
        """The pool's privileged session, opened (with fresh settings) when there is none."""
        if pool.admin is not None and not pool.admin.closed and not pool.admin.broken:
            return pool.admin
        request = connections_pb2.ResolveConnectionCredentialsRequest(
            purpose=POOL_PURPOSE, role=pool.spec.role
        )
        if pool.connection_id is not None:
            request.connection_id = pool.connection_id
        elif is_uuid(pool.spec.connection):
            request.connection_id = str(uuid.UUID(pool.spec.connection))
        else:
            request.connection_name = pool.spec.connection
        resolved: connections_pb2.ResolveConnectionCredentialsResponse = (
            await self._credentials.ResolveConnectionCredentials(request, timeout=10)
        )
        if not resolved.HasField("dynamic"):
            raise ValueError(f"connection {pool.spec.connection!r} is not dynamic")
        pool.resolved = resolved
        pool.connection_id = resolved.connection_id or request.connection_id
        pool.admin = await self._manager.privileged(pool.connection_id, resolved)
        return pool.admin

    async def _drop_admin(self, pool: _Pool) -> None:
        if pool.admin is not None:
            with contextlib.suppress(Exception):
                await pool.admin.close()
        pool.admin = None

    async def run(self) -> None:
        """Refills every ``refill_seconds``, and at once after each borrow, until cancelled."""
        while not self._closed:
            self._wake.clear()
            await self.fill_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._refill_seconds)

    async def close(self) -> int:
        """Revokes every unclaimed role (recorded revoked) and closes the sessions; returns
        how many were revoked. No borrow succeeds afterwards."""
        self._closed = True
        if self._claims:  # Claims under way finish (or revoke) before the pool goes.
            await asyncio.gather(*self._claims, return_exceptions=True)
        revoked = 0
        for pool in self._pools:
            async with pool.lock:
                entries = [*pool.entries, *pool.retired]
                pool.entries, pool.retired = deque(), []
                try:
                    if entries:
                        admin = await self._admin(pool)
                        assert pool.resolved is not None
                        for entry in entries:
                            await self._manager.revoke_lease(
                                entry.lease_id, entry.name, pool.resolved.dynamic, admin
                            )
                            revoked += 1
                except Exception as exc:  # The reaper drops the rest once they expire.
                    log.warning("warm pool revoke on shutdown failed", error=type(exc).__name__)
                finally:
                    await self._drop_admin(pool)
        log.info("warm pool closed", revoked=revoked)
        return revoked
