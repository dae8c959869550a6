"""Lending minted Postgres roles to the customer's workloads: generate, renew, revoke.

The domain behind the agent's credential API (agent/credential_api.py is the thin servicer).
A workload presents its workload token; the agent exchanges it with auth for a short-lived
workload bearer and forwards that bearer (metadata ``x-sevvo-workload-authorization``) on
every lease call, so connections checks the workload's grants, records the lease as the
workload's, and audits refusals. The lease is recorded before the role's creation commits,
as for sevvo's own work, so the reaper covers these leases too: CREATE ROLE runs while
CreateLease is under way, and its transaction commits only once the lease is recorded (see
dynamic_credentials.mint), unless the bearer's own grants foresee a refusal. Its activation
(creating -> active) is sent in the background, so the workload does not wait for that round
trip: a renewal or revoke from creating is legal, and a lost activation leaves a creating
lease the reaper revokes at expiry. Passwords and tokens stay in this process's
memory: never on disk, never in a log, never sent to the control plane.

Warm pool hook
--------------
``CredentialBroker(pool=...)`` takes an optional object with one method::

    async def take(connection_id: str, role: str, ttl: timedelta, bearer: str,
                   purpose: str, *, max_ttl: timedelta) -> IssuedCredential | None

called on every Generate after the workload is authenticated and the connection role is
resolved, before anything is minted. ``bearer`` is the workload bearer to forward (as
``workload_metadata(bearer)``) on ClaimLease; ``max_ttl`` is the longest lease the workload
may hold (connections refuses a claim of a lease that may outlive it). Return an issued
credential (see ``issued_credential`` to build one) to hand out a pre-minted role, or None
to mint afresh.
Exceptions other than SevvoError are logged and fall back to a fresh mint; a SevvoError
(a refusal of ClaimLease, for example) is the workload's answer.

Caches
------
- Workload bearers, per token (keyed by its SHA-256, never the token), until
  ``BEARER_REFRESH_MARGIN`` before they expire; concurrent first calls share one exchange, so
  200 borrowers with one token cost auth one exchange, not 200 (auth rate-limits exchanges
  per caller address, and every workload's exchange comes from the agent's address).
- A connection role's resolved settings, ``SETTINGS_TTL`` (10 s): a borrow then costs no
  resolve round trip (nor an unseal in connections). Staleness is harmless: CreateLease is the
  authority on whether the role still exists and is granted, and a changed creation template
  takes effect within 10 s.
- Privileged sessions, a few per connection (``PrivilegedSessions``), so a borrow does not log
  in (a TLS handshake and SCRAM exchange, several round trips) before CREATE ROLE.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, NoReturn, Protocol, TypeVar

import grpc
import jwt
import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

from agent.dynamic_credentials import (
    MintedRole,
    RoleNotFound,
    SessionsStillOpen,
    mint,
    renew,
    revoke,
)
from agent.root_rotation import PrivilegedLoginFailed, connect_privileged
from sevvo.auth.v1 import auth_pb2, auth_pb2_grpc
from sevvo.connections.v1 import connections_pb2, connections_pb2_grpc
from sevvo.runtime.credential_token import WORKLOAD_TOKEN
from sevvo.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SevvoError,
    Unauthenticated,
    Unavailable,
)
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.logs import get_logger
from sevvo.runtime.servicing import timestamp
from sevvo.runtime.tasks import settle
from sevvo.runtime.workload_grants import (
    DEFAULT_ROLE,
    Grant,
    grants_from_claim,
    may_borrow,
    role_name,
)

log = get_logger(__name__)
T = TypeVar("T")

WORKLOAD_METADATA_KEY: Final = "x-sevvo-workload-authorization"
BEARER_REFRESH_MARGIN: Final = timedelta(seconds=30)
"""A cached workload bearer is exchanged again this long before it expires, so a call never
carries one that expires in flight (bearers last 5 minutes)."""
SETTINGS_TTL: Final = 10.0
"""Seconds a connection role's resolved settings are reused; see the module docstring."""
SESSION_MAX_AGE: Final = 600.0
"""Seconds a privileged session is reused at most, so a rotated password is picked up."""
DEFAULT_PURPOSE: Final = "workload"
RPC_TIMEOUT: Final = 10.0


class ExchangeThrottled(SevvoError):
    """auth slowed the workload's token exchanges down; retry after a while."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "WORKLOAD_EXCHANGE_RATE_LIMITED"


class _Relayed(SevvoError):
    """A control-plane refusal passed on to the workload with its code, reason and text."""

    def __init__(
        self, code: grpc.StatusCode, message: str, reason: str, metadata: dict[str, str]
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.code = code


def relayed(exc: grpc.aio.AioRpcError, doing: str) -> SevvoError:
    """A control-plane error as the workload's: refusals keep their code and reason (the
    services' messages hold no secret); an unreachable control plane is UNAVAILABLE."""
    details = error_details(exc)
    if details.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(
            f"the control plane did not answer while {doing}; retry shortly",
            reason="CONTROL_PLANE_UNAVAILABLE",
        )
    if details.reason is None or details.code in (
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    ):
        return Unavailable(
            f"the control plane failed while {doing}; retry shortly",
            reason="CONTROL_PLANE_FAILED",
        )
    metadata = {k: v for k, v in (details.metadata or {}).items() if k != "request_id"}
    return _Relayed(details.code, details.message, details.reason, metadata)


def workload_metadata(bearer: str) -> tuple[tuple[str, str], ...]:
    """The metadata that forwards a workload's bearer to connections."""
    return ((WORKLOAD_METADATA_KEY, f"Bearer {bearer}"),)


def token_key(token: str) -> str:
    """What a workload token is cached under: its SHA-256, so memory holds no usable token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class WorkloadBearer:
    """A workload's exchanged bearer and the identity it carries."""

    bearer: str = field(repr=False)
    workload_id: str
    org_id: str
    max_ttl_seconds: int
    expires_at: datetime
    grants: tuple[Grant, ...] = ()
    """As the bearer carries them; only to predict connections' answer (see ``_mint``)."""


@dataclass(frozen=True)
class IssuedCredential:
    """A lent login role; password and conninfo go to the workload that borrowed it only."""

    lease_id: str
    username: str
    password: str = field(repr=False)
    conninfo: str = field(repr=False)
    expire_time: datetime
    max_expire_time: datetime
    connection_id: str
    role: str
    host: str
    port: int
    database: str
    ssl_mode: str


@dataclass(frozen=True)
class RenewedLease:
    """A lease's times after a renewal."""

    lease_id: str
    expire_time: datetime
    max_expire_time: datetime


class CredentialPool(Protocol):
    """The warm pool's hook; see the module docstring."""

    async def take(
        self,
        connection_id: str,
        role: str,
        ttl: timedelta,
        bearer: str,
        purpose: str,
        *,
        max_ttl: timedelta,
    ) -> IssuedCredential | None:
        """A pre-minted credential claimed for the workload, or None to mint afresh."""


_SSL_MODES: Final = {
    connections_pb2.SSL_MODE_DISABLE: "disable",
    connections_pb2.SSL_MODE_REQUIRE: "require",
    connections_pb2.SSL_MODE_VERIFY_CA: "verify-ca",
    connections_pb2.SSL_MODE_VERIFY_FULL: "verify-full",
}


def ssl_mode_name(mode: connections_pb2.SslMode) -> str:
    """libpq's name of a stored SSL mode."""
    name = _SSL_MODES.get(mode)
    if name is None:
        raise FailedPrecondition(
            "the connection has no usable SSL mode; fix the connection",
            reason="INVALID_STORED_CREDENTIALS",
        )
    return name


def conninfo(
    postgres: connections_pb2.PostgresCredentials,
    username: str,
    password: str,
    root_cert: Path | None,
) -> str:
    """A libpq key/value string for the minted login, every value quoted.

    sslrootcert names ``root_cert``, a file holding the connection's CA bundle, for the
    verify modes (libpq reads roots only from a file). Quoted here rather than by psycopg's
    make_conninfo, which parses its result through libpq again: a quarter of a warm
    borrow's time in the agent.
    """
    params: dict[str, str | int] = {
        "host": postgres.host,
        "port": postgres.port,
        "dbname": postgres.database,
        "user": username,
        "password": password,
        "sslmode": ssl_mode_name(postgres.ssl_mode),
    }
    if root_cert is not None:
        params["sslrootcert"] = str(root_cert)
    return " ".join(f"{key}={_conninfo_value(value)}" for key, value in params.items())


def _conninfo_value(value: str | int) -> str:
    """``value`` in single quotes, its backslashes and quotes escaped (libpq's rule for
    key/value connection strings; quoting is always allowed)."""
    escaped = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def write_ca_bundle(directory: Path, pem: str) -> Path:
    """The path of a file in ``directory`` holding ``pem``, written once per bundle.

    Named by the bundle's hash, so every lease of every connection with that bundle shares
    one file and a changed bundle gets a new one. Mode 0644 (a CA is public; the workload may
    run as another user) and written atomically, so a reader never sees half a file.
    """
    path = directory / f"ca-{hashlib.sha256(pem.encode()).hexdigest()[:24]}.crt"
    if path.exists():
        return path
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".ca-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(pem)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return path


def issued_credential(
    *,
    lease_id: str,
    connection_id: str,
    role: str,
    postgres: connections_pb2.PostgresCredentials,
    username: str,
    password: str,
    expire_time: datetime,
    max_expire_time: datetime,
    ca_dir: Path | None,
) -> IssuedCredential:
    """The credential handed to a workload for a minted role of ``postgres``'s server."""
    root_cert = None
    if postgres.ssl_root_cert:
        if ca_dir is None:
            raise FailedPrecondition(
                "the connection verifies the server's certificate, but this agent has no"
                " directory to write the CA bundle to: set SEVVO_CREDENTIAL_CA_DIR",
                reason="CA_DIR_NOT_CONFIGURED",
            )
        root_cert = write_ca_bundle(ca_dir, postgres.ssl_root_cert)
    return IssuedCredential(
        lease_id=lease_id,
        username=username,
        password=password,
        conninfo=conninfo(postgres, username, password, root_cert),
        expire_time=expire_time,
        max_expire_time=max_expire_time,
        connection_id=connection_id,
        role=role,
        host=postgres.host,
        port=postgres.port,
        database=postgres.database,
        ssl_mode=ssl_mode_name(postgres.ssl_mode),
    )


class WorkloadBearers:
    """Exchanges workload tokens for bearers, cached per token until shortly before expiry."""

    def __init__(self, auth: auth_pb2_grpc.AuthServiceStub) -> None:
        self._auth = auth
        self._cached: dict[str, WorkloadBearer] = {}
        self._pending: dict[str, asyncio.Future[WorkloadBearer]] = {}

    async def bearer_for(self, token: str) -> WorkloadBearer:
        """The workload's bearer; UNAUTHENTICATED when auth refuses the token."""
        key = token_key(token)
        cached = self._cached.get(key)
        if cached is not None and cached.expires_at - BEARER_REFRESH_MARGIN > datetime.now(UTC):
            return cached  # Well formed: auth accepted it.
        try:
            WORKLOAD_TOKEN.unwrap(token)  # A malformed token never costs auth a call.
        except InvalidArgument:
            raise Unauthenticated(
                "the token is not a sevvo workload token (sevvo_wt_...)",
                reason="INVALID_WORKLOAD_TOKEN",
            ) from None
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._exchange(key, token))
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        return await asyncio.shield(pending)

    def forget(self, token: str) -> None:
        """Drops a bearer connections refused (its workload was revoked or regranted)."""
        self._cached.pop(token_key(token), None)

    async def _exchange(self, key: str, token: str) -> WorkloadBearer:
        self._cached.pop(key, None)
        try:
            response = await self._auth.ExchangeWorkloadToken(
                auth_pb2.ExchangeWorkloadTokenRequest(workload_token=token), timeout=RPC_TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            details = error_details(exc)
            if details.code in (
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.NOT_FOUND,
            ):
                raise Unauthenticated(
                    "auth refused the workload token: it is wrong, unknown or revoked",
                    reason=details.reason or "INVALID_WORKLOAD_TOKEN",
                ) from None
            if details.code is grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise ExchangeThrottled(
                    "auth is slowing down token exchanges after repeated failures; retry in a"
                    " few seconds",
                    reason=details.reason or ExchangeThrottled.default_reason,
                ) from None
            raise relayed(exc, "exchanging the workload token") from None
        bearer = WorkloadBearer(
            bearer=response.bearer_token,
            workload_id=response.workload_id,
            org_id=response.org_id,
            max_ttl_seconds=response.max_ttl_seconds,
            expires_at=response.expire_time.ToDatetime(UTC),
            grants=_grants_of(response.bearer_token),
        )
        now = datetime.now(UTC)
        for stale in [k for k, v in self._cached.items() if v.expires_at < now]:
            del self._cached[stale]
        self._cached[key] = bearer
        log.info("workload authenticated", workload_id=bearer.workload_id)
        return bearer


@dataclass(frozen=True)
class ResolvedRole:
    """A connection role's settings and the privileged login to mint it with."""

    connection_id: str
    role: str
    postgres: connections_pb2.PostgresCredentials = field(repr=False)
    dynamic: connections_pb2.DynamicSettings


class RoleSettings:
    """Resolves (connection, role) to its settings, reusing an answer for SETTINGS_TTL."""

    def __init__(
        self,
        credentials: connections_pb2_grpc.ConnectionCredentialServiceStub,
        *,
        ttl: float = SETTINGS_TTL,
    ) -> None:
        self._credentials = credentials
        self._ttl = ttl
        self._cached: dict[tuple[str, str], tuple[float, ResolvedRole]] = {}

    async def resolve(self, connection: str, role: str, bearer: str) -> ResolvedRole:
        """``connection`` (a name or UUID) with ``role``'s settings; NOT_FOUND when the org
        has no such connection or role, FAILED_PRECONDITION when it is not dynamic."""
        key = (connection, role)
        hit = self._cached.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        request = connections_pb2.ResolveConnectionCredentialsRequest(
            purpose="workload_credential", role=role
        )
        if is_uuid(connection):
            request.connection_id = connection
        else:
            request.connection_name = connection
        try:
            response = await self._credentials.ResolveConnectionCredentials(
                request, timeout=RPC_TIMEOUT, metadata=workload_metadata(bearer)
            )
        except grpc.aio.AioRpcError as exc:
            raise relayed(exc, "looking up the connection") from None
        if not response.HasField("dynamic"):
            raise FailedPrecondition(
                f"connection {connection!r} is not dynamic: only a dynamic connection lends"
                " credentials",
                reason="CONNECTION_NOT_DYNAMIC",
            )
        resolved = ResolvedRole(
            connection_id=request.connection_id or _connection_id_of(response, connection),
            role=response.dynamic.role or role,
            postgres=response.postgres,
            dynamic=response.dynamic,
        )
        self._cached[key] = (time.monotonic() + self._ttl, resolved)
        self._cached[(resolved.connection_id, role)] = (time.monotonic() + self._ttl, resolved)
        return resolved


def _connection_id_of(
    response: connections_pb2.ResolveConnectionCredentialsResponse, connection: str
) -> str:
    # Leases are recorded by id; a connections service older than resolution by name (or one
    # that does not say the id) cannot lend by name.
    connection_id = response.connection_id
    if not connection_id:
        raise FailedPrecondition(
            f"connections did not say which connection {connection!r} is; upgrade the"
            " control plane",
            reason="CONNECTION_ID_MISSING",
        )
    return str(connection_id)


def is_uuid(value: str) -> bool:
    """Whether ``value`` is a UUID (a connection named by id rather than by name)."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _session_died(admin: psycopg.AsyncConnection[TupleRow]) -> bool:
    return admin.closed or admin.broken


class _Sessions:
    """The idle privileged sessions of one connection and a bound on how many exist."""

    def __init__(self, size: int) -> None:
        self.idle: deque[tuple[float, psycopg.AsyncConnection[TupleRow]]] = deque()
        self.slots = asyncio.Semaphore(size)


class PrivilegedSessions:
    """A few logged-in privileged sessions per connection, reused across borrows.

    Not psycopg_pool: its connections come from a conninfo, while a privileged login goes
    through connect_privileged (the CA bundle written for the attempt, and recovery of a
    root rotation that died before its commit). A session that broke, or is left inside a
    transaction, is closed instead of reused; sessions older than SESSION_MAX_AGE are
    replaced, so a rotated password is picked up.
    """

    def __init__(
        self,
        credentials: connections_pb2_grpc.ConnectionCredentialServiceStub,
        *,
        size: int = 5,
    ) -> None:
        self._credentials = credentials
        self._size = size
        self._by_connection: dict[str, _Sessions] = {}

    @contextlib.asynccontextmanager
    async def session(
        self, connection_id: str, postgres: connections_pb2.PostgresCredentials
    ) -> AsyncIterator[psycopg.AsyncConnection[TupleRow]]:
        """A privileged autocommit session of ``connection_id``, returned after use."""
        sessions = self._by_connection.setdefault(connection_id, _Sessions(self._size))
        async with sessions.slots:
            admin = await self._checkout(sessions, connection_id, postgres)
            healthy = False
            try:
                yield admin
                healthy = True
            finally:
                if (
                    healthy
                    and not admin.closed
                    and not admin.broken
                    and admin.info.transaction_status is TransactionStatus.IDLE
                ):
                    sessions.idle.append((time.monotonic(), admin))
                else:
                    await admin.close()

    async def run(
        self,
        connection_id: str,
        postgres: connections_pb2.PostgresCredentials,
        work: Callable[[psycopg.AsyncConnection[TupleRow]], Awaitable[T]],
    ) -> T:
        """``work`` on a privileged session; once more on a fresh one if the session had
        died while idle (the server restarted, or ended idle sessions), which ``work`` shows
        by letting a psycopg error out of a closed or broken session.
        """
        for attempt in (1, 2):
            try:
                async with self.session(connection_id, postgres) as admin:
                    return await work(admin)
            except psycopg.Error:
                if attempt == 2 or not _session_died(admin):
                    raise
                self.discard_idle(connection_id)
                log.info("privileged session had died; retrying on a new one")
        raise AssertionError("unreachable")

    def discard_idle(self, connection_id: str) -> None:
        """Forgets the idle sessions of a connection (closing them without waiting)."""
        sessions = self._by_connection.get(connection_id)
        while sessions is not None and sessions.idle:
            admin = sessions.idle.pop()[1]
            admin.pgconn.finish()

    async def _checkout(
        self,
        sessions: _Sessions,
        connection_id: str,
        postgres: connections_pb2.PostgresCredentials,
    ) -> psycopg.AsyncConnection[TupleRow]:
        while sessions.idle:
            since, admin = sessions.idle.pop()
            if time.monotonic() - since < SESSION_MAX_AGE and not admin.closed:
                return admin
            await admin.close()
        try:
            admin, _ = await connect_privileged(self._credentials, connection_id, postgres)
        except PrivilegedLoginFailed as exc:
            raise FailedPrecondition(
                "the agent could not log in as the connection's privileged role"
                f" ({exc.category}); test the connection",
                reason="PRIVILEGED_LOGIN_FAILED",
            ) from None
        except (psycopg.OperationalError, TimeoutError):
            raise Unavailable(
                "the agent could not reach the database; retry shortly",
                reason="DATABASE_UNAVAILABLE",
            ) from None
        return admin

    async def close(self) -> None:
        """Closes every idle session."""
        for sessions in self._by_connection.values():
            while sessions.idle:
                await sessions.idle.pop()[1].close()


@dataclass(frozen=True)
class _Lent:
    """What this agent remembers of a lease it lent: enough to renew it by the role's TTL
    and to know, without asking, whose it is and which role to drop."""

    connection_id: str
    role: str
    default_ttl_seconds: int
    max_expire_time: datetime
    role_name: str
    workload_id: str


class _DropFailed(Exception):
    """A revocation the database did not complete; ``reason`` names the error's type."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _already_revoked(refused: _Relayed) -> bool:
    return (
        refused.reason == "ILLEGAL_LEASE_TRANSITION" and refused.metadata.get("from") == "revoked"
    )


# Refusals of a background activation that mean the workload renewed or revoked it first.
_MOVED_ON: Final = frozenset({"ILLEGAL_LEASE_TRANSITION", "LEASE_RENEWAL_EARLIER"})

# Leases remembered for renewal by the role's TTL; past this many, those past their maximum
# lifetime (never renewable again) are forgotten, so callers that never revoke cost no memory.
_LENT_PRUNE_AT: Final = 4096
_RECORD_ATTEMPTS: Final = 3


class CredentialBroker:
    """Generate, renew and revoke for workloads; see the module docstring."""

    def __init__(
        self,
        *,
        org_id: str,
        bearers: WorkloadBearers,
        settings: RoleSettings,
        sessions: PrivilegedSessions,
        leases: connections_pb2_grpc.LeaseServiceStub,
        ca_dir: Path | None,
        pool: CredentialPool | None = None,
    ) -> None:
        self._org_id = org_id
        self._bearers = bearers
        self._settings = settings
        self._sessions = sessions
        self._leases = leases
        self._ca_dir = ca_dir
        self.pool = pool
        self._lent: dict[str, _Lent] = {}
        self._background: set[asyncio.Future[None]] = set()

    async def generate(
        self, workload_token: str, connection: str, role: str, ttl_seconds: int, purpose: str
    ) -> IssuedCredential:
        """Records a lease for the workload, mints its role and returns how to log in."""
        workload = await self._authenticate(workload_token)
        if not connection.strip():
            raise InvalidArgument("connection", "is required: a dynamic connection's name or id")
        role = role_name("role", role) if role else DEFAULT_ROLE
        if ttl_seconds < 0:
            raise InvalidArgument("ttl_seconds", "must be 0 (the role's default) or positive")
        purpose = purpose or DEFAULT_PURPOSE
        resolved = await self._refused_as_unauthenticated(
            workload_token, self._settings.resolve(connection.strip(), role, workload.bearer)
        )
        dynamic = resolved.dynamic
        ttl = timedelta(seconds=ttl_seconds or dynamic.default_ttl_seconds)
        if ttl > timedelta(seconds=dynamic.max_ttl_seconds):
            raise InvalidArgument(
                "ttl_seconds",
                f"must be at most the role's maximum TTL, {dynamic.max_ttl_seconds} seconds",
            )
        # A lease lives at most the role's and the workload's maximum; never less than the
        # TTL asked for, so a TTL over the workload's maximum reaches connections, which
        # refuses it (TTL_OVER_WORKLOAD_MAXIMUM) and audits the refusal.
        lifetime = max(
            ttl, timedelta(seconds=min(dynamic.max_ttl_seconds, workload.max_ttl_seconds))
        )
        if self.pool is not None and workload.org_id == self._org_id:
            taken = await self._refused_as_unauthenticated(
                workload_token, self._from_pool(resolved, ttl, workload, purpose)
            )
            if taken is not None:
                # Renewable by the role's default TTL, as a freshly minted lease is.
                self._remember(
                    taken.lease_id,
                    _Lent(
                        resolved.connection_id,
                        resolved.role,
                        dynamic.default_ttl_seconds,
                        taken.max_expire_time,
                        taken.username,
                        workload.workload_id,
                    ),
                )
                return taken
        return await self._refused_as_unauthenticated(
            workload_token, self._mint(resolved, ttl, lifetime, workload, purpose)
        )

    async def renew(self, workload_token: str, lease_id: str, increment: int) -> RenewedLease:
        """Moves the lease's expiry to now + ``increment`` seconds (0: the role's default)."""
        workload = await self._authenticate(workload_token)
        lease_id = _lease_id(lease_id)
        if increment < 0:
            raise InvalidArgument("increment_seconds", "must be 0 (the role's default) or positive")
        if increment == 0:
            lent = self._lent.get(lease_id)
            if lent is None:
                raise InvalidArgument(
                    "increment_seconds",
                    "is required for a lease this agent did not lend since it started",
                )
            increment = lent.default_ttl_seconds
        new_expiry = datetime.now(UTC) + timedelta(seconds=increment)

        async def work() -> RenewedLease:
            try:
                lease = await self._update(
                    lease_id, connections_pb2.LEASE_STATE_ACTIVE, workload, expire_time=new_expiry
                )
            except _Relayed as refused:
                if refused.reason == "LEASE_PAST_MAX_TTL":
                    raise FailedPrecondition(
                        f"renewing by {increment} s would pass the lease's maximum lifetime"
                        f" (it ends at {refused.metadata.get('max_expire_time', 'its max TTL')});"
                        " renew by less, or borrow a new credential",
                        reason="LEASE_PAST_MAX_TTL",
                        metadata=refused.metadata,
                    ) from None
                raise
            resolved = await self._settings.resolve(
                lease.connection_id, lease.role, workload.bearer
            )

            async def alter(admin: psycopg.AsyncConnection[TupleRow]) -> None:
                await renew(admin, lease.role_name, new_valid_until=new_expiry)

            try:
                await self._sessions.run(lease.connection_id, resolved.postgres, alter)
            except RoleNotFound as exc:
                raise NotFound(str(exc), reason=exc.reason) from None
            log.info("workload lease renewed", lease_id=lease_id, workload_id=workload.workload_id)
            return RenewedLease(
                lease_id=lease_id,
                expire_time=lease.expire_time.ToDatetime(UTC),
                max_expire_time=lease.max_expire_time.ToDatetime(UTC),
            )

        return await self._refused_as_unauthenticated(workload_token, work())

    async def revoke(self, workload_token: str, lease_id: str) -> None:
        """Revokes the lease's role now (staged, see dynamic_credentials.revoke); idempotent.

        A lease this agent lent to this very workload is dropped while connections records
        the start of its revocation (the agent knows whose it is, and giving a lease back is
        always allowed), and the end is recorded in the background; if that record is lost,
        the lease stays revoking (or active) and the reaper settles it (the role is gone).
        Any other lease is moved to revoking first, so connections decides whose it is.
        """
        workload = await self._authenticate(workload_token)
        lease_id = _lease_id(lease_id)
        lent = self._lent.get(lease_id)
        if lent is not None and lent.workload_id == workload.workload_id:
            work = self._revoke_lent(lease_id, lent, workload)
        else:
            work = self._revoke_recorded(lease_id, workload)
        await self._refused_as_unauthenticated(workload_token, work)

    async def _revoke_recorded(self, lease_id: str, workload: WorkloadBearer) -> None:
        try:
            lease = await self._update(lease_id, connections_pb2.LEASE_STATE_REVOKING, workload)
        except _Relayed as refused:
            if _already_revoked(refused):
                self._lent.pop(lease_id, None)
                return  # Revoked before: revoking is idempotent.
            raise
        try:
            await self._drop(lease.connection_id, lease.role, lease.role_name, workload)
        except _DropFailed as failed:
            await self._revoke_incomplete(lease_id, workload, failed)
        await self._update(lease_id, connections_pb2.LEASE_STATE_REVOKED, workload)
        self._lent.pop(lease_id, None)
        log.info("workload lease revoked", lease_id=lease_id, workload_id=workload.workload_id)

    async def _revoke_lent(self, lease_id: str, lent: _Lent, workload: WorkloadBearer) -> None:
        started = asyncio.ensure_future(
            self._update(lease_id, connections_pb2.LEASE_STATE_REVOKING, workload)
        )
        try:
            await self._drop(lent.connection_id, lent.role, lent.role_name, workload)
        except _DropFailed as failed:
            await settle(started)  # So that failing is recorded after revoking, not before.
            await self._revoke_incomplete(lease_id, workload, failed)
        finally:
            await settle(started)
        self._lent.pop(lease_id, None)
        refused = asyncio.CancelledError() if started.cancelled() else started.exception()
        if isinstance(refused, _Relayed) and _already_revoked(refused):
            return  # Revoked before (by an admin, or a revoke that raced this one).
        if refused is not None:
            log.warning(
                "workload lease revoked but its revocation not recorded; the reaper settles it",
                lease_id=lease_id,
                error=type(refused).__name__,
            )
        self._behind(self._record_revoked(lease_id, workload))
        log.info("workload lease revoked", lease_id=lease_id, workload_id=workload.workload_id)

    async def _drop(
        self, connection_id: str, role: str, role_name: str, workload: WorkloadBearer
    ) -> None:
        """Revokes ``role_name`` in the database (raises _DropFailed when it could not)."""
        resolved = await self._settings.resolve(connection_id, role, workload.bearer)

        async def drop(admin: psycopg.AsyncConnection[TupleRow]) -> None:
            await revoke(
                admin,
                role_name,
                revocation=list(resolved.dynamic.revocation_statements) or None,
            )

        try:
            await self._sessions.run(connection_id, resolved.postgres, drop)
        except (psycopg.Error, SessionsStillOpen, SevvoError) as exc:
            raise _DropFailed(type(exc).__name__) from None

    async def _revoke_incomplete(
        self, lease_id: str, workload: WorkloadBearer, failed: _DropFailed
    ) -> NoReturn:
        # Recorded, never dropped: the reaper retries failing leases.
        await self._update(
            lease_id, connections_pb2.LEASE_STATE_FAILING, workload, failure_reason=failed.reason
        )
        raise Unavailable(
            "the role is disabled but could not be dropped yet; the agent's reaper retries it",
            reason="REVOKE_INCOMPLETE",
        ) from None

    async def _record_revoked(self, lease_id: str, workload: WorkloadBearer) -> None:
        for attempt in range(1, _RECORD_ATTEMPTS + 1):
            try:
                await self._update(lease_id, connections_pb2.LEASE_STATE_REVOKED, workload)
                return
            except Exception as exc:  # The lease stays as it was; the reaper settles it.
                if isinstance(exc, _Relayed) and _already_revoked(exc):
                    return
                if (
                    isinstance(exc, _Relayed)
                    and exc.reason == "LEASE_OF_ANOTHER_WORKLOAD"
                    and attempt < _RECORD_ATTEMPTS
                ):
                    # A pooled lease whose claim (warm_pool) has not landed yet.
                    await asyncio.sleep(0.25 * attempt)
                    continue
                log.warning(
                    "workload lease revocation not recorded; the reaper settles it",
                    lease_id=lease_id,
                    error=type(exc).__name__,
                )
                return

    def _remember(self, lease_id: str, lent: _Lent) -> None:
        if len(self._lent) >= _LENT_PRUNE_AT:
            now = datetime.now(UTC)
            for stale in [k for k, v in self._lent.items() if v.max_expire_time < now]:
                del self._lent[stale]
        self._lent[lease_id] = lent

    async def _authenticate(self, token: str) -> WorkloadBearer:
        workload = await self._bearers.bearer_for(token)
        if workload.org_id != self._org_id:
            # Not refused here: the request goes on to connections, which refuses it
            # (WORKLOAD_OF_ANOTHER_ORG) before anything is recorded or minted and writes the
            # audit record the agent cannot. Nothing of this org is lent before that: such a
            # workload never borrows from the warm pool (see generate).
            log.warning(
                "workload of another org: connections will refuse it",
                workload_id=workload.workload_id,
                workload_org_id=workload.org_id,
            )
        return workload

    async def _refused_as_unauthenticated(self, token: str, work: Awaitable[T]) -> T:
        """Runs ``work``; a bearer connections refuses (a revoked workload) is forgotten, so
        the next call exchanges the token again (and is refused by auth)."""
        try:
            return await work
        except (_Relayed, Unauthenticated) as refused:
            if refused.code is grpc.StatusCode.UNAUTHENTICATED:
                self._bearers.forget(token)
            raise

    async def _from_pool(
        self, resolved: ResolvedRole, ttl: timedelta, workload: WorkloadBearer, purpose: str
    ) -> IssuedCredential | None:
        assert self.pool is not None
        try:
            return await self.pool.take(
                resolved.connection_id,
                resolved.role,
                ttl,
                workload.bearer,
                purpose,
                max_ttl=timedelta(seconds=workload.max_ttl_seconds),
            )
        except SevvoError:
            raise
        except Exception as exc:  # A pool failure must not fail the borrow: mint instead.
            log.warning("warm pool failed; minting afresh", error=type(exc).__name__)
            return None

    async def _mint(
        self,
        resolved: ResolvedRole,
        ttl: timedelta,
        lifetime: timedelta,
        workload: WorkloadBearer,
        purpose: str,
    ) -> IssuedCredential:
        lease_id = str(uuid.uuid4())
        recorded: list[connections_pb2.Lease] = []

        async def record_intent(name: str, valid_until: datetime) -> None:
            try:
                lease = await self._leases.CreateLease(
                    connections_pb2.CreateLeaseRequest(
                        lease_id=lease_id,
                        connection_id=resolved.connection_id,
                        role_name=name,
                        role=resolved.role,
                        purpose=purpose,
                        expire_time=timestamp(valid_until),
                        max_expire_time=timestamp(valid_until - ttl + lifetime),
                        workload_id=workload.workload_id,
                    ),
                    timeout=RPC_TIMEOUT,
                    metadata=workload_metadata(workload.bearer),
                )
            except grpc.aio.AioRpcError as exc:
                raise relayed(exc, "recording the lease") from None
            recorded.append(lease)

        async def mint_on(admin: psycopg.AsyncConnection[TupleRow]) -> MintedRole:
            try:
                minted = await mint(
                    admin,
                    creation=list(resolved.dynamic.creation_statements),
                    ttl=ttl,
                    purpose=purpose,
                    before_commit=record_intent,
                    # The record overlaps CREATE ROLE's PBKDF2 when connections will accept
                    # it; a refusal foreseen from the bearer's grants costs the database
                    # nothing (connections still decides and audits it).
                    overlap=workload.org_id == self._org_id
                    and may_borrow(
                        workload.grants,
                        workload.max_ttl_seconds,
                        resolved.connection_id,
                        resolved.role,
                        int(ttl.total_seconds()),
                    )
                    is None,
                )
            except psycopg.Error as exc:
                if not recorded and _session_died(admin):
                    raise  # Nothing recorded, nothing created: another session may retry.
                if recorded:  # The role was not created (one transaction): say so.
                    await self._fail_quietly(lease_id, workload, type(exc).__name__)
                if _session_died(admin):
                    raise Unavailable(
                        "the connection to the database broke while minting; retry",
                        reason="DATABASE_UNAVAILABLE",
                    ) from None
                raise FailedPrecondition(
                    "the database refused the role's creation statements"
                    f" (SQLSTATE {exc.sqlstate}); fix the connection role",
                    reason="MINT_FAILED",
                ) from None
            # Activation (creating -> active) is recorded behind the workload's back: the
            # lease was recorded before the role was committed either way, a renewal or revoke from
            # creating is legal, and a lost activation leaves a creating lease that the
            # reaper revokes at its expiry.
            self._behind(self._activate(lease_id, workload, minted.valid_until))
            return minted

        minted = await self._sessions.run(resolved.connection_id, resolved.postgres, mint_on)
        lease = recorded[-1]
        self._remember(
            lease_id,
            _Lent(
                resolved.connection_id,
                resolved.role,
                resolved.dynamic.default_ttl_seconds,
                lease.max_expire_time.ToDatetime(UTC),
                minted.name,
                workload.workload_id,
            ),
        )
        log.info(
            "workload lease minted",
            lease_id=lease_id,
            role=minted.name,
            connection_role=resolved.role,
            workload_id=workload.workload_id,
        )
        return issued_credential(
            lease_id=lease_id,
            connection_id=resolved.connection_id,
            role=resolved.role,
            postgres=resolved.postgres,
            username=minted.name,
            password=minted.password,
            expire_time=minted.valid_until,
            max_expire_time=lease.max_expire_time.ToDatetime(UTC),
            ca_dir=self._ca_dir,
        )

    def _behind(self, work: Awaitable[None]) -> None:
        """Runs ``work`` in the background; ``close`` waits for it."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _activate(self, lease_id: str, workload: WorkloadBearer, expiry: datetime) -> None:
        try:
            # The expiry as recorded: an activation that lands after the workload's renewal
            # is refused as moving it earlier, rather than taken for a renewal.
            await self._update(
                lease_id, connections_pb2.LEASE_STATE_ACTIVE, workload, expire_time=expiry
            )
        except Exception as exc:  # The lease stays creating; the reaper revokes it at expiry.
            if isinstance(exc, _Relayed) and exc.reason in _MOVED_ON:
                # Renewed or revoked by the workload first: nothing left to activate.
                log.info("workload lease moved on before its activation", lease_id=lease_id)
                return
            log.warning("workload lease not activated", lease_id=lease_id, error=type(exc).__name__)

    async def _fail_quietly(self, lease_id: str, workload: WorkloadBearer, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self._update(
                lease_id, connections_pb2.LEASE_STATE_FAILING, workload, failure_reason=reason
            )

    async def _update(
        self,
        lease_id: str,
        state: connections_pb2.LeaseState,
        workload: WorkloadBearer,
        *,
        expire_time: datetime | None = None,
        failure_reason: str = "",
    ) -> connections_pb2.Lease:
        request = connections_pb2.UpdateLeaseRequest(
            lease_id=lease_id, state=state, failure_reason=failure_reason
        )
        if expire_time is not None:
            request.expire_time.FromDatetime(expire_time)
        try:
            lease: connections_pb2.Lease = await self._leases.UpdateLease(
                request, timeout=RPC_TIMEOUT, metadata=workload_metadata(workload.bearer)
            )
        except grpc.aio.AioRpcError as exc:
            raise relayed(exc, "updating the lease") from None
        return lease

    async def close(self) -> None:
        """Waits for the background lease updates, then closes the privileged sessions."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._sessions.close()


def _grants_of(bearer: str) -> tuple[Grant, ...]:
    """The grants claim of a bearer auth just issued (over TLS), read without verifying it:
    the agent only predicts connections' answer with it, connections verifies the bearer."""
    try:
        claims = jwt.decode(bearer, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return ()
    return grants_from_claim(claims.get("grants"))


def _lease_id(value: str) -> str:
    if not is_uuid(value):
        raise InvalidArgument("lease_id", "must be the lease id Generate returned (a UUID)")
    return str(uuid.UUID(value))


__all__: Sequence[str] = (
    "CredentialBroker",
    "CredentialPool",
    "IssuedCredential",
    "PrivilegedSessions",
    "RenewedLease",
    "RoleSettings",
    "WorkloadBearers",
    "issued_credential",
    "workload_metadata",
)
