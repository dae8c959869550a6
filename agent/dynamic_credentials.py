"""The database side of dynamic credentials: mint, renew and revoke per-workload Postgres roles.

docs/design.md ("Dynamic credentials") has the product story; this module is the narrow interface
Vault's database plugin keeps — new user (``mint``), update user (``renew``,
``rotate_root``), delete user (``revoke``, idempotent) — plus the reaper's query
(``find_expired``). Every function runs on an autocommit connection (as
``agent.postgres_probe.connect`` opens) of the connection's *privileged* role: LOGIN
CREATEROLE, never superuser, holding ADMIN OPTION on the read-only group role that minted
roles join.

Templates
---------
Creation and revocation statements are lists of SQL strings, one statement each (no
transaction control), with three placeholders written exactly as below. They are substituted
as psycopg ``sql`` objects, never by string formatting:

``{{name}}``
    The minted role's name as a quoted identifier, e.g. ``"sevvo_dyn_preview_k3x9q2m7ab"``.
    Write it bare: ``"{{name}}"`` or ``'{{name}}'`` is rejected.
``{{password}}``
    A string literal holding the SCRAM-SHA-256 *verifier* of the password
    (``'SCRAM-SHA-256$4096:…'``), computed on the agent. The plaintext never appears in SQL,
    so ``log_statement = all``, ``pg_stat_statements`` and replication streams never see it;
    the server stores the verifier as is, whatever its ``password_encryption`` says.
``{{expiration}}``
    A ``timestamptz`` string literal with an explicit UTC offset, e.g.
    ``'2026-11-21 12:00:00.123456+00:00'``, so the server's TimeZone cannot shift it.

A revocation runs long after the password and the expiry are forgotten (a lease carries only
what it needs to be revoked), so there ``{{password}}`` is the verifier of a fresh password
nobody learns and ``{{expiration}}`` is the server's current time.

Revocation is staged, so a failure part-way leaves the role harmless rather than usable:
1. ``ALTER ROLE … NOLOGIN``, committed on its own: no new session can start.
2. Terminate the role's sessions, waiting for them to end (their TEMP objects die with them).
3. In one transaction, the revocation statements (by default ``REASSIGN OWNED BY … TO
   CURRENT_USER`` and ``DROP OWNED BY …``), then always ``DROP ROLE IF EXISTS …``.
Stages 1 and 2 and the final drop are not templated: a template can neither weaken the
cut-off nor leave the role behind. A role that no longer exists, whatever stage finds it
gone, was revoked by someone else first, which counts as done.

CREATEROLE on PostgreSQL 16+ (checked on 18)
--------------------------------------------
Creating a role grants it to its creator WITH ADMIN OPTION but INHERIT FALSE, SET FALSE
(``createrole_self_grant`` is empty by default). ADMIN OPTION is enough to ALTER and DROP the
role, but not for the revocation steps that check ``has_privs_of_role``:
``pg_terminate_backend`` ("permission denied to terminate process"), ``REASSIGN OWNED`` and
``DROP OWNED`` (42501 each). So ``mint`` also runs ``GRANT <role> TO CURRENT_USER WITH INHERIT
TRUE, SET FALSE`` in the creating transaction; the privileged role gains only what the
minted role has (membership of the group it already administers) and cannot SET ROLE to it.
On PostgreSQL 15, CREATEROLE may alter, grant and drop every non-superuser role but gets no
automatic membership, so the grant is a plain ``GRANT <role> TO CURRENT_USER``.
``pg_signal_backend`` is not needed and should not be granted: it would let the privileged
role terminate every non-superuser's sessions, not just those of the roles it minted.

Limits: ``REASSIGN OWNED`` and ``DROP OWNED`` act on the current database only. The default
template's minted role can create nothing outside TEMP (PUBLIC has no CREATE on ``public``
since PostgreSQL 15), and TEMP objects end with the sessions stage 2 terminates; a template
that grants more must revoke it in the databases concerned, or ``DROP ROLE`` fails with
2BP01 and the role stays NOLOGIN for the caller to retry.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import re
import secrets
import string
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final

import psycopg
from psycopg import errors, sql
from psycopg.rows import TupleRow

from agent.postgres_probe import InvalidStoredCredentials, connect, connection_failure_category
from sevvo.connections.v1 import connections_pb2
from sevvo.runtime import credential_templates as templates
from sevvo.runtime import outcomes
from sevvo.runtime.errors import FailedPrecondition, NotFound, Unavailable
from sevvo.runtime.logs import get_logger
from sevvo.runtime.outcomes import TEST_CATEGORIES
from sevvo.runtime.tasks import settle

log = get_logger(__name__)

ROLE_PREFIX: Final = "sevvo_dyn_"
"""Every minted role's name starts with this; the reaper and ``revoke`` touch no other role."""

DEFAULT_GROUP: Final = templates.DEFAULT_GROUP_ROLE
"""The NOLOGIN group whose membership grants read-only access in the default template."""

DEFAULT_REVOCATION: Final[tuple[str, ...]] = (
    "REASSIGN OWNED BY {{name}} TO CURRENT_USER",
    "DROP OWNED BY {{name}}",
)
"""Stage 3's cleanup when a connection gives none; ``DROP ROLE IF EXISTS`` always follows."""

DEFAULT_TERMINATE_TIMEOUT: Final = timedelta(seconds=5)
DEFAULT_ROOT_LOCK_TIMEOUT: Final = timedelta(seconds=20)
"""How long a rotation waits for another to finish; rotations take well under a second."""
DEFAULT_ROOT_LOCK_ABANDON: Final = timedelta(seconds=60)
"""Idle time after which the server ends a lock holder's session; a rotation never idles
this long (its every step is bounded at 10 s)."""

# Postgres truncates identifiers to NAMEDATALEN - 1 bytes; a truncated name would not be the
# one the lease records.
_MAX_ROLE_NAME_BYTES: Final = 63
_PURPOSE_CHARS: Final = 20
_RANDOM_CHARS: Final = 10
_RANDOM_ALPHABET: Final = string.ascii_lowercase + string.digits
_ROLE_NAME_PATTERN: Final = re.compile(
    re.escape(ROLE_PREFIX) + r"(?:[a-z0-9]+(?:_[a-z0-9]+)*_)?[a-z0-9]{" + f"{_RANDOM_CHARS}}}"
)
_SCRAM_ALGORITHM: Final = b"scram-sha-256"
_SCRAM_PREFIX: Final = "SCRAM-SHA-256$"
_SCRAM_SALT_BYTES: Final = 16  # what libpq and the server use
_DEFAULT_SCRAM_ITERATIONS: Final = 4096
# Server versions as libpq reports them (180006 is 18.6).
_PG14: Final = 140000
_PG16: Final = 160000


class RenewalRefused(FailedPrecondition):
    """The renewal would take the lease past its maximum TTL."""

    default_reason = "LEASE_PAST_MAX_TTL"


class RoleNotFound(NotFound):
    """The minted role no longer exists (revoked, reaped or never created)."""

    default_reason = "DYNAMIC_ROLE_NOT_FOUND"


class SessionsStillOpen(Unavailable):
    """The role is NOLOGIN but some of its sessions outlived the wait; revoke again."""

    default_reason = "DYNAMIC_ROLE_SESSIONS_OPEN"


class RootRotationFailed(FailedPrecondition):
    """A login with the new root password failed; ``restored`` says if the old one is back."""

    default_reason = "ROOT_ROTATION_UNVERIFIED"

    def __init__(self, message: str, *, restored: bool) -> None:
        super().__init__(message)
        self.restored = restored


@dataclass(frozen=True, slots=True)
class MintedRole:
    """A freshly minted login role; only ``name`` and ``valid_until`` may leave the agent."""

    name: str
    password: str = field(repr=False)
    valid_until: datetime


def default_creation(group: str = DEFAULT_GROUP) -> tuple[str, ...]:
    """The default creation template: a login role that reads through ``group``'s grants.

    Membership in the NOLOGIN group carries every privilege, so revocation needs no per-role
    REVOKE and churn leaves table ACLs untouched. The privileged role must hold ADMIN OPTION
    on ``group`` to put the new role in it. The same template connections stores when a
    dynamic connection gives none (sevvo.runtime.credential_templates).
    """
    problem = templates.group_role_problem(group)
    if problem is not None:
        raise ValueError(f"group {problem}")
    return tuple(templates.default_creation(group))


DEFAULT_CREATION: Final = default_creation()


def validate_templates(creation: Sequence[str], revocation: Sequence[str]) -> None:
    """Raise TemplateError unless both templates are usable by ``mint`` and ``revoke``.

    The very rules connections applied when the connection was saved
    (sevvo.runtime.credential_templates), so a saved template never fails here.
    """
    templates.validate_templates(creation, revocation)


def role_name(purpose: str) -> str:
    """A fresh role name: the prefix, a slug of ``purpose`` and 10 random characters.

    The slug only helps a DBA reading ``pg_stat_activity``; uniqueness comes from the random
    part (36^10 values). Lower-case ASCII, so the name never needs case-folding thoughts.
    """
    slug = re.sub(r"[^a-z0-9]+", "_", purpose.lower())[:_PURPOSE_CHARS].strip("_")
    random_part = "".join(secrets.choice(_RANDOM_ALPHABET) for _ in range(_RANDOM_CHARS))
    name = f"{ROLE_PREFIX}{slug}_{random_part}" if slug else ROLE_PREFIX + random_part
    assert len(name.encode()) <= _MAX_ROLE_NAME_BYTES  # the lengths above guarantee it
    return name


def is_minted_role_name(name: str) -> bool:
    """Whether ``name`` has the shape ``role_name`` produces."""
    return _ROLE_NAME_PATTERN.fullmatch(name) is not None


def generate_password() -> str:
    """A fresh password: 32 random bytes, URL-safe base64 (43 characters, no quoting needed)."""
    return secrets.token_urlsafe(32)


def scram_verifier(
    conn: psycopg.AsyncConnection[Any] | psycopg.Connection[Any], password: str, role: str
) -> str:
    """The SCRAM-SHA-256 verifier of ``password``, computed on this machine (RFC 5802, 7677).

    The iteration count is the server's ``scram_iterations`` (reported by PostgreSQL 16+),
    else 4096, its default: the same choice libpq's PQencryptPasswordConn makes. The
    verifier lets the server check a password but not log in as the role; ``role`` only
    matters to MD5, which is never used, and is kept for parity with libpq.

    An ASCII password is hashed with hashlib (OpenSSL's PBKDF2, twice as fast as libpq's
    and free of the connection, so mint() runs it off the event loop). Any other password
    goes through libpq, which applies SASLprep (RFC 4013) exactly as the server and libpq's
    login do; for ASCII, SASLprep is the identity in PostgreSQL's implementation.
    """
    if password.isascii():
        return _scram_sha_256(password, scram_iterations(conn))
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), _SCRAM_ALGORITHM)
    text = verifier.decode("ascii")
    if not text.startswith(_SCRAM_PREFIX):  # a libpq that ignored the algorithm
        raise RuntimeError("libpq did not produce a SCRAM-SHA-256 verifier")
    return text


def scram_iterations(conn: psycopg.AsyncConnection[Any] | psycopg.Connection[Any]) -> int:
    """The server's ``scram_iterations``, or PostgreSQL's default when it does not say."""
    reported = conn.info.parameter_status("scram_iterations")
    if reported is None or not reported.isdigit() or int(reported) < 1:
        return _DEFAULT_SCRAM_ITERATIONS
    return int(reported)


async def _verifier(admin: psycopg.AsyncConnection[Any], password: str, role: str) -> str:
    """scram_verifier(), with PBKDF2 off the event loop whenever it can be."""
    if password.isascii():
        # Milliseconds of PBKDF2; hashlib releases the GIL, so other activities keep running.
        return await asyncio.to_thread(_scram_sha_256, password, scram_iterations(admin))
    return scram_verifier(admin, password, role)  # libpq needs the connection's thread


def _scram_sha_256(password: str, iterations: int, salt: bytes | None = None) -> str:
    """``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``, as the server stores it."""
    if not password.isascii():
        raise ValueError("only ASCII passwords skip SASLprep")
    salt = secrets.token_bytes(_SCRAM_SALT_BYTES) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = base64.b64encode
    return (
        f"{_SCRAM_PREFIX}{iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


class PasswordStock:
    """Passwords with their SCRAM verifiers computed ahead of time, so a mint skips PBKDF2.

    A verifier costs milliseconds of PBKDF2 and depends only on the password, a random salt
    and the iteration count, never on the role, so it can be computed before a role is
    minted. ``take`` hands out each pair once; ``replenish`` refills the stock for an
    iteration count on a background thread, up to ``size`` pairs. The passwords live only
    in this process's memory, as a warm pool's do, and none is ever handed out twice.
    """

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._stock: dict[int, deque[tuple[str, str]]] = {}
        self._lock = threading.Lock()
        self._wanted: set[int] = set()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def take(self, iterations: int) -> tuple[str, str] | None:
        """A (password, verifier) pair for ``iterations``, or None when the stock is out."""
        with self._lock:
            stock = self._stock.get(iterations)
            return stock.popleft() if stock else None

    def replenish(self, iterations: int) -> None:
        """Refills the stock for ``iterations`` in the background (a daemon thread)."""
        if self._size < 1:
            return
        with self._lock:
            if len(self._stock.get(iterations, ())) >= self._size:
                return
            self._wanted.add(iterations)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._fill, name="sevvo-password-stock", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def _fill(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                self._wake.clear()
                wanted = sorted(self._wanted)
                self._wanted.clear()
            for iterations in wanted:
                while True:
                    with self._lock:
                        if len(self._stock.setdefault(iterations, deque())) >= self._size:
                            break
                    password = generate_password()
                    pair = (password, _scram_sha_256(password, iterations))
                    with self._lock:
                        self._stock[iterations].append(pair)


PASSWORDS: Final = PasswordStock()
"""The process's stock, which ``mint`` draws from unless told otherwise."""


async def mint(
    admin: psycopg.AsyncConnection[TupleRow],
    *,
    creation: Sequence[str],
    ttl: timedelta,
    purpose: str,
    before_commit: Callable[[str, datetime], Awaitable[None]] | None = None,
    overlap: bool = True,
    passwords: PasswordStock | None = PASSWORDS,
) -> MintedRole:
    """Create a login role from ``creation`` that expires ``ttl`` from now by the server's clock.

    The creation statements and the self-grant that revocation needs (see the module
    docstring) run in one transaction: the role exists completely or not at all.

    ``before_commit(name, valid_until)`` lets the caller record its intent: it runs while
    the creation statements run (the server's PBKDF2 check of the verifier takes
    milliseconds, as does a record in the control plane), and the transaction commits only
    after it returns. So no other session sees the role before the record exists, and a
    crash or a failing hook leaves no role: if it raises, the transaction rolls back and
    its exception propagates. With ``overlap`` False the hook runs first and the statements
    only after it returned (for a record the caller expects to be refused: the database then
    does no work for it). The expiry is fixed before the hook runs, so time spent in it
    comes out of the TTL. ``passwords`` supplies a password and its verifier computed ahead
    of time (None: computed now).
    """
    _check_autocommit(admin)
    if ttl <= timedelta(0):
        raise ValueError("ttl must be positive")
    templates.validate_templates(creation, ())
    name = role_name(purpose)
    iterations = scram_iterations(admin)
    stocked = passwords.take(iterations) if passwords is not None else None
    if stocked is None:
        password = generate_password()
        # PBKDF2 off the event loop, overlapping the round trip for the expiry.
        verifier: asyncio.Future[str] = asyncio.ensure_future(_verifier(admin, password, name))
    else:
        password, stocked_verifier = stocked
        verifier = asyncio.get_running_loop().create_future()
        verifier.set_result(stocked_verifier)
    try:
        # The server's clock decides when VALID UNTIL passes, so it also decides the expiry;
        # the agent host's clock may be off by minutes.
        cur = await admin.execute("SELECT now() + %s", (ttl,))
        valid_until = _one(await cur.fetchone()).astimezone(UTC)
        values = _creation_values(name, await verifier, valid_until)
    finally:
        await settle(verifier)
    rendered = [*(_render(template, values) for template in creation), _self_grant(admin, name)]
    if before_commit is None:
        await admin.execute(_one_transaction(rendered))
    elif not overlap:
        await before_commit(name, valid_until)
        await admin.execute(_one_transaction(rendered))
    else:
        await _create_then_commit(admin, rendered, partial(before_commit, name, valid_until))
    if passwords is not None:
        passwords.replenish(iterations)  # After the commit: its PBKDF2 is off this mint's path.
    log.info("dynamic_credentials.minted", role=name, valid_until=valid_until.isoformat())
    return MintedRole(name=name, password=password, valid_until=valid_until)


async def _create_then_commit(
    admin: psycopg.AsyncConnection[TupleRow],
    statements: Sequence[sql.Composable],
    hook: Callable[[], Awaitable[None]],
) -> None:
    """Runs ``statements`` in an open transaction while ``hook`` runs; commits when both
    succeeded, else rolls back and raises the hook's exception (or the statements')."""
    create = asyncio.ensure_future(admin.execute(_one_transaction([sql.SQL("BEGIN"), *statements])))
    try:
        await hook()
    except BaseException:
        await settle(create)
        await _roll_back(admin)
        raise
    try:
        await create
    except BaseException:
        await _roll_back(admin)
        raise
    await admin.execute("COMMIT")


async def _roll_back(admin: psycopg.AsyncConnection[TupleRow]) -> None:
    """Ends an open or failed transaction; a session that cannot is closed (never reused)."""
    if admin.closed or admin.info.transaction_status is psycopg.pq.TransactionStatus.IDLE:
        return
    try:
        await admin.execute("ROLLBACK")
    except BaseException:
        await admin.close()
        raise


@dataclass(frozen=True)
class DryRunFailure:
    """Which statement of a dry run failed and why; holds no secret, safe to report upstream."""

    step: str
    """``creation_statements[i]``, ``revocation_statements[i]`` or a built-in step's name."""
    sqlstate: str
    message: str
    """The server's primary message, the scratch role's name shown as ``{{name}}``."""

    def describe(self) -> str:
        """One line for the person editing the statements."""
        return f"{self.step} failed: {self.message} (SQLSTATE {self.sqlstate})"


class _DryRunStopped(Exception):
    """Unwinds the dry run's transaction after the first failing step."""


async def dry_run(
    admin: psycopg.AsyncConnection[TupleRow],
    *,
    creation: Sequence[str],
    revocation: Sequence[str] | None = None,
    ttl: timedelta = timedelta(minutes=5),
) -> DryRunFailure | None:
    """Create and drop a scratch role exactly as ``mint`` and ``revoke`` would, then undo it.

    Every step runs in one transaction that always rolls back. Role DDL is transactional in
    Postgres, so this finds what the statements or the privileged role's grants would fail
    on, while nothing it did can outlive it: a crash mid-way needs no lease and no reaper.
    Terminating sessions is skipped (a role that never committed has none). Returns the
    first failure, or None when every step worked.
    """
    _check_autocommit(admin)
    statements = tuple(revocation) if revocation else DEFAULT_REVOCATION
    templates.validate_templates(creation, statements)
    used = templates.placeholders(statements)
    name = role_name("dry_run")
    role = sql.Identifier(name)
    verifier = await _verifier(admin, generate_password(), name)
    failure: DryRunFailure | None = None

    async def step(label: str, statement: sql.Composed) -> None:
        nonlocal failure
        try:
            await admin.execute(statement)
        except psycopg.Error as exc:
            primary = exc.diag.message_primary or type(exc).__name__
            failure = DryRunFailure(
                step=label,
                sqlstate=exc.sqlstate or "",
                message=primary.replace(verifier, "{{password}}").replace(name, "{{name}}")[:300],
            )
            raise _DryRunStopped from None

    try:
        async with admin.transaction(force_rollback=True):
            await admin.execute("SET LOCAL statement_timeout = '10s'")
            cur = await admin.execute("SELECT now() + %s", (ttl,))
            values = _creation_values(name, verifier, _one(await cur.fetchone()))
            for index, template in enumerate(creation):
                await step(f"creation_statements[{index}]", _render(template, values))
            await step(
                "the grant that lets the privileged role revoke (GRANT {{name}} TO CURRENT_USER)",
                _self_grant(admin, name),
            )
            await step("ALTER ROLE {{name}} NOLOGIN", sql.SQL("ALTER ROLE {} NOLOGIN").format(role))
            revocation_values = await _revocation_values(admin, role, used)
            labels = (
                [f"revocation_statements[{i}]" for i in range(len(statements))]
                if revocation
                else [f"the built-in revocation {template!r}" for template in statements]
            )
            for label, template in zip(labels, statements, strict=True):
                await step(label, _render(template, revocation_values))
            await step("DROP ROLE {{name}}", sql.SQL("DROP ROLE {}").format(role))
    except _DryRunStopped:
        pass
    log.info("dynamic_credentials.dry_run", ok=failure is None)
    return failure


async def renew(
    admin: psycopg.AsyncConnection[TupleRow], name: str, *, new_valid_until: datetime
) -> None:
    """Move the role's VALID UNTIL to ``new_valid_until``; the max-TTL policy is the caller's.

    Use plan_renewal() to compute ``new_valid_until``. Raises RoleNotFound when the role is
    gone, so a lease cannot be renewed after it was revoked or reaped.
    """
    _check_minted_name(name)
    _check_autocommit(admin)
    if new_valid_until.tzinfo is None:
        raise ValueError("new_valid_until must be timezone-aware")
    statement = sql.SQL("ALTER ROLE {} VALID UNTIL {}").format(
        sql.Identifier(name), sql.Literal(_timestamptz_literal(new_valid_until))
    )
    try:
        await admin.execute(_one_transaction([_lock_role(name), statement]))
    except errors.UndefinedObject:
        raise RoleNotFound(f"role {name} no longer exists; mint a new one") from None
    log.info("dynamic_credentials.renewed", role=name, valid_until=new_valid_until.isoformat())


def plan_renewal(
    created_at: datetime, requested_ttl: timedelta, max_ttl: timedelta, now: datetime
) -> datetime:
    """The expiry a renewal for ``requested_ttl`` gives, or RenewalRefused past ``max_ttl``.

    A lease may live at most ``max_ttl`` from ``created_at``, however often it is renewed,
    so a leaked credential cannot be kept alive forever by renewing it.
    """
    for label, value in (("created_at", created_at), ("now", now)):
        if value.tzinfo is None:
            raise ValueError(f"{label} must be timezone-aware")
    if requested_ttl <= timedelta(0) or max_ttl <= timedelta(0):
        raise ValueError("requested_ttl and max_ttl must be positive")
    new_valid_until = now + requested_ttl
    ceiling = created_at + max_ttl
    if new_valid_until > ceiling:
        raise RenewalRefused(
            f"renewing for {requested_ttl} would end the lease at {_utc(new_valid_until)},"
            f" past max_ttl ({max_ttl} after its creation at {_utc(created_at)}, so"
            f" {_utc(ceiling)} at the latest); renew for less, or mint a new credential"
        )
    return new_valid_until


async def revoke(
    admin: psycopg.AsyncConnection[TupleRow],
    name: str,
    *,
    revocation: Sequence[str] | None = None,
    terminate_timeout: timedelta = DEFAULT_TERMINATE_TIMEOUT,
) -> None:
    """Disable, disconnect and drop a minted role; a role that is already gone is done.

    Stages as in the module docstring; ``revocation`` None or empty means
    DEFAULT_REVOCATION. Safe to repeat and to race with another revoker:
    whatever fails, a role that no longer exists counts as revoked.
    Raises SessionsStillOpen when a session outlives ``terminate_timeout`` (the role is
    NOLOGIN by then, so retrying later is safe), ValueError for a name ``mint`` would never
    produce, TemplateError for a broken ``revocation`` (after the cut-off), and psycopg
    errors for anything else (the role stays NOLOGIN).
    """
    _check_minted_name(name)
    _check_autocommit(admin)
    statements = tuple(revocation) if revocation else DEFAULT_REVOCATION
    role = sql.Identifier(name)
    try:
        nologin = sql.SQL("ALTER ROLE {} NOLOGIN").format(role)
        await admin.execute(_one_transaction([_lock_role(name), nologin]))
        await _terminate_sessions(admin, name, terminate_timeout)
        # Checked only now, so that even a broken template cannot delay the cut-off.
        templates.validate_revocation(statements)
        used = templates.placeholders(statements)
        values = await _revocation_values(admin, role, used)
        cleanup = [_render(template, values) for template in statements]
        drop = sql.SQL("DROP ROLE IF EXISTS {}").format(role)
        await admin.execute(_one_transaction([_lock_role(name), *cleanup, drop]))
    except psycopg.Error:
        # The role may be gone: never minted, or revoked before, perhaps by a racing
        # revoker (an activity retry and the reaper) while we waited for the lock. Gone is
        # what revoking is for. Anything else, such as a template naming a missing table,
        # is an error.
        if admin.closed or await _role_exists(admin, name):
            raise
    log.info("dynamic_credentials.revoked", role=name)


async def find_expired(
    admin: psycopg.AsyncConnection[TupleRow], *, now: datetime | None = None
) -> list[str]:
    """Minted roles to reap: expired (VALID UNTIL before ``now``) or left NOLOGIN by a revoke.

    ``now`` defaults to the server's clock, the one VALID UNTIL is checked against. Only
    roles this privileged role can revoke are listed, so agents of several connections
    sharing a cluster (and the ``sevvo_dyn_`` prefix) do not trip over each other's roles.
    Oldest expiry first.
    """
    if now is not None and now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    cur = await admin.execute(
        # A prefixed NOLOGIN role can only come from a revoke that stopped after stage 1:
        # mint creates the role with LOGIN in one transaction.
        "SELECT rolname FROM pg_roles"
        " WHERE starts_with(rolname, %s)"
        " AND (rolvaliduntil < coalesce(%s, now()) OR NOT rolcanlogin)"
        " AND pg_has_role(oid, 'USAGE')"
        " ORDER BY rolvaliduntil, rolname",
        (ROLE_PREFIX, now),
    )
    return [row[0] for row in await cur.fetchall() if is_minted_role_name(row[0])]


async def rotate_root(
    admin: psycopg.AsyncConnection[TupleRow],
    credentials: connections_pb2.PostgresCredentials,
    *,
    before_alter: Callable[[str], Awaitable[None]] | None = None,
    connect_timeout: float = 10.0,
) -> str:
    """Give the privileged role a new password, prove it with a fresh login, and return it.

    ``admin`` must be logged in as ``credentials.username``. Crash safety is the caller's,
    through ``before_alter(new_password)``: seal the new password as *pending* next to the
    current one there, before the server changes. After a crash, try the current password
    and then the pending one and keep whichever logs in; once this returns, promote the
    pending one. If ``before_alter`` raises, nothing changed.

    When the fresh login fails (a pooler caching auth, a load balancer reaching another
    server, pg_hba rules the admin session did not go through), the old password is put
    back over ``admin`` and RootRotationFailed is raised with ``restored=True``; keep the
    old sealed payload. ``restored=False`` means the old password could not be put back
    either: the pending one is the one the server holds.
    """
    _check_autocommit(admin)
    cur = await admin.execute("SELECT current_user")
    if _one(await cur.fetchone()) != credentials.username:
        raise ValueError("admin must be logged in as credentials.username")
    new_password = generate_password()
    new_verifier = await _verifier(admin, new_password, credentials.username)
    if before_alter is not None:
        await before_alter(new_password)
    await admin.execute(_set_own_password(new_verifier))
    pending = connections_pb2.PostgresCredentials()
    pending.CopyFrom(credentials)
    pending.password = new_password
    try:
        conn = await connect(pending, connect_timeout=connect_timeout)
        try:
            await conn.execute("SELECT 1")
        finally:
            await conn.close()
    except (psycopg.Error, TimeoutError, InvalidStoredCredentials) as exc:
        # A category's name, as a credential test would report the login.
        category = (
            outcomes.INVALID_STORED_CREDENTIALS.name
            if isinstance(exc, InvalidStoredCredentials)
            else TEST_CATEGORIES.name(connection_failure_category(exc))
        )
        restored = await restore_password(admin, credentials)
        log.warning("dynamic_credentials.root_rotation_unverified", restored=restored)
        raise RootRotationFailed(
            f"a fresh login with the new password failed ({category}); "
            + (
                "the old password was restored"
                if restored
                else "the old password could NOT be restored: the new one is in force"
            ),
            restored=restored,
        ) from None
    log.info("dynamic_credentials.root_rotated", role=credentials.username)
    return new_password


async def restore_password(
    admin: psycopg.AsyncConnection[TupleRow], credentials: connections_pb2.PostgresCredentials
) -> bool:
    """Sets the password of ``admin``'s role back to ``credentials.password``; False if the
    server refused. The session stays logged in through any change of its password."""
    try:
        old_verifier = await _verifier(admin, credentials.password, credentials.username)
        await admin.execute(_set_own_password(old_verifier))
    except psycopg.Error:
        return False
    return True


async def _revocation_values(
    admin: psycopg.AsyncConnection[TupleRow], role: sql.Identifier, used: frozenset[str]
) -> dict[str, sql.Composable]:
    """Values for revocation templates; only ``{{name}}`` comes from the lease.

    A revocation runs without the password or the expiry (the lease keeps neither), so
    ``{{password}}`` is the verifier of a fresh password nobody learns (scrambling the
    role's) and ``{{expiration}}`` is the server's current time (expiring it now).
    """
    values: dict[str, sql.Composable] = {"name": role}
    if "password" in used:
        values["password"] = sql.Literal(await _verifier(admin, generate_password(), ""))
    if "expiration" in used:
        cur = await admin.execute("SELECT now()")
        values["expiration"] = sql.Literal(_timestamptz_literal(_one(await cur.fetchone())))
    return values


def _creation_values(name: str, verifier: str, valid_until: datetime) -> dict[str, sql.Composable]:
    """What creation templates' placeholders stand for (see the module docstring)."""
    return {
        "name": sql.Identifier(name),
        "password": sql.Literal(verifier),
        "expiration": sql.Literal(_timestamptz_literal(valid_until)),
    }


def _set_own_password(verifier: str) -> sql.Composed:
    # CURRENT_USER, not a name: a role may always change its own password, while a
    # CREATEROLE role may not alter its own other attributes on PostgreSQL 16+.
    return sql.SQL("ALTER ROLE CURRENT_USER PASSWORD {}").format(sql.Literal(verifier))


def _self_grant(admin: psycopg.AsyncConnection[TupleRow], name: str) -> sql.Composed:
    """The grant that lets the privileged role terminate, reassign and drop for ``name``."""
    if admin.info.server_version >= _PG16:
        # Membership with privileges (INHERIT) but no SET ROLE: enough for has_privs_of_role.
        return sql.SQL("GRANT {} TO CURRENT_USER WITH INHERIT TRUE, SET FALSE").format(
            sql.Identifier(name)
        )
    return sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(name))


async def _terminate_sessions(
    admin: psycopg.AsyncConnection[TupleRow], name: str, timeout: timedelta
) -> None:
    """Terminate the role's sessions and wait for them to end (so their TEMP objects go too).

    The role is NOLOGIN by now, so no session can start after this scan; one that passed
    authentication just before the NOLOGIN commit but is not yet listed is the one gap,
    microseconds wide; once the role is dropped such a session keeps only what PUBLIC may
    do, because the role's grants and group membership go with it.
    """
    timeout_ms = max(1, round(timeout.total_seconds() * 1000))
    cur = await admin.execute(
        "SELECT count(*) FILTER (WHERE NOT pg_terminate_backend(pid, %s))"
        " FROM pg_stat_activity WHERE usename = %s",
        (timeout_ms, name),
    )
    if _one(await cur.fetchone()) == 0:
        return
    # false also means the session ended on its own between the scan and the signal.
    cur = await admin.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (name,))
    if _one(await cur.fetchone()) > 0:
        raise SessionsStillOpen(
            f"role {name} is NOLOGIN but sessions outlived {timeout}; revoke again"
        )


def _lock_role(name: str) -> sql.Composed:
    """A statement serializing changes to role ``name`` across sessions until its commit.

    Role DDL takes no lock on the role: two sessions altering or dropping the same role at
    once fail with XX000 "tuple concurrently updated" or "could not find tuple for role".
    That is exactly what a revoke racing the reaper, or a renewal, would do. The key is a
    hash of the name, so it needs no catalog lookup and works for a role already dropped.
    """
    key = _advisory_key(name, b"sevvo.dyn")
    return sql.SQL("SELECT pg_advisory_xact_lock({})").format(sql.Literal(key))


def _advisory_key(name: str, person: bytes) -> int:
    """A 64-bit advisory lock key for ``name`` in the key space ``person`` names."""
    digest = hashlib.blake2b(name.encode(), digest_size=8, person=person).digest()
    return int.from_bytes(digest, "big", signed=True)


@asynccontextmanager
async def root_rotation_lock(
    admin: psycopg.AsyncConnection[TupleRow],
    *,
    timeout: timedelta = DEFAULT_ROOT_LOCK_TIMEOUT,
    abandon_after: timedelta = DEFAULT_ROOT_LOCK_ABANDON,
) -> AsyncIterator[None]:
    """Holds the lock that serialises changes to the privileged role's password.

    A session-level advisory lock of the customer's database, keyed by the role's name and
    taken as that role: every agent of every org that rotates (or finishes a rotation of) this
    role in this database waits for it, whatever started the work (a schedule, an on-demand
    call, a workload recovering a crash). It ends with the session, so an agent that dies
    cannot keep it; ``abandon_after`` (PostgreSQL 14+ ``idle_session_timeout``) also ends a
    session whose agent vanished without closing its socket, instead of TCP's hours.

    Raises psycopg.errors.LockNotAvailable after ``timeout``. Limits: a pooler in transaction
    mode between agent and server breaks session locks, and the lock is per database, so
    connections reaching the same role through two databases are not serialised (the control
    plane refuses rotating a role two connections share).
    """
    _check_autocommit(admin)
    cur = await admin.execute("SELECT current_user")
    key = _advisory_key(_one(await cur.fetchone()), b"sevvo.root")
    await admin.execute("SELECT set_config('lock_timeout', %s, false)", (_milliseconds(timeout),))
    try:
        await admin.execute("SELECT pg_advisory_lock(%s)", (key,))
    finally:
        await admin.execute("RESET lock_timeout")
    if admin.info.server_version >= _PG14:
        await admin.execute(
            "SELECT set_config('idle_session_timeout', %s, false)", (_milliseconds(abandon_after),)
        )
    try:
        yield
    finally:
        # A session that broke meanwhile took its lock with it; nothing is left to release.
        with contextlib.suppress(psycopg.OperationalError):
            await admin.execute("SELECT pg_advisory_unlock(%s)", (key,))
            if admin.info.server_version >= _PG14:
                await admin.execute("RESET idle_session_timeout")


def _one_transaction(statements: Sequence[sql.Composable]) -> sql.Composed:
    """``statements`` as one simple query: one round trip, run as one implicit transaction.

    On an autocommit connection the server commits all of them or none. That is what an
    explicit transaction gives, at a third of the latency of sending them one by one, which
    matters for the 2x budget against a bare CREATE ROLE (bench/dynamic_credentials.py).
    Without parameters psycopg uses the simple query protocol, which allows several
    statements. The newline before each semicolon keeps a template's trailing ``--``
    comment from swallowing it; each template was checked to be exactly one statement.
    """
    return sql.SQL("\n;\n").join(statements)


async def _role_exists(admin: psycopg.AsyncConnection[TupleRow], name: str) -> bool:
    cur = await admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
    return await cur.fetchone() is not None


def _check_autocommit(admin: psycopg.AsyncConnection[TupleRow]) -> None:
    # Each stage must commit by itself (NOLOGIN before sessions are terminated, a new root
    # password before the fresh login); inside a caller's transaction none would.
    if not admin.autocommit:
        raise ValueError("admin must be an autocommit connection, as connect() opens")


def _check_minted_name(name: str) -> None:
    # A bug that passed the privileged role's own name (or a customer's role) must not
    # reach ALTER ROLE ... NOLOGIN.
    if not is_minted_role_name(name):
        raise ValueError(f"{name!r} is not a role name mint() produces")


def _one(row: TupleRow | None) -> Any:
    if row is None:
        raise RuntimeError("the query returned no row")
    return row[0]


def _milliseconds(value: timedelta) -> str:
    return f"{max(1, round(value.total_seconds() * 1000))}ms"


def _timestamptz_literal(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(sep=" ")


def _utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(sep=" ", timespec="seconds")


def _render(template: str, values: dict[str, sql.Composable]) -> sql.Composed:
    """``template`` with each placeholder replaced by its sql object; the rest is verbatim."""
    return sql.Composed(
        [
            sql.SQL(text) if key is None else values[key]
            for text, key in templates.segments(template)
        ]
    )
