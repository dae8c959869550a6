"""The privileged role of a dynamic connection: logging in as it, and rotating its password.

A rotation has three durable steps in two systems: stage the new password (sealed, in the
control plane, under a stage id), ``ALTER ROLE`` (in the database), commit that stage
(control plane). Two rules keep the stored password one that logs in:

- Rotations of a role are serialised by ``root_rotation_lock``, an advisory lock in the
  customer's database held from before the stage to after the commit, and each commit names
  its own stage, so it can never store another rotation's password. Under the lock the
  rotation re-reads the stored credentials and proves by a fresh login which password is in
  force before it changes anything: whatever happened while it waited is taken into account.
- A crash between the steps leaves the database holding either the stored password or the
  staged one, never a third. So every login as the privileged role goes through
  ``connect_privileged``: when the stored password fails and a staged one works, the
  interrupted (or still running) rotation is settled under the lock, committing the staged
  password if no live rotation does. The stored password is therefore never wrong for longer
  than the next use of the connection, and no secret ever leaves the agent except to the
  control plane's sealed store.

The control plane refuses to stage a password for a role that another connection of the org
also logs in as (same host, port and username): the new password would break that
connection. The rotation reports it as ROLE_SHARED, changing nothing.
"""

from __future__ import annotations

import time
import uuid

import grpc
import psycopg
from psycopg.rows import TupleRow

from agent.dynamic_credentials import (
    RootRotationFailed,
    restore_password,
    root_rotation_lock,
    rotate_root,
)
from agent.postgres_probe import InvalidStoredCredentials, connect, connection_failure_category
from sevvo.connections.v1 import connections_pb2, connections_pb2_grpc
from sevvo.runtime import outcomes
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.logs import get_logger
from sevvo.runtime.outcomes import ROOT_ROTATION_CATEGORIES, Outcome
from sevvo.workflows.v1 import workflows_pb2

log = get_logger(__name__)

_PASSWORD_FAILED = workflows_pb2.TEST_CATEGORY_PASSWORD_AUTHENTICATION_FAILED
_Credentials = connections_pb2_grpc.ConnectionCredentialServiceStub
# A login that fails while the stored credentials keep changing underneath (rotations
# elsewhere) is retried with the fresh ones this many times in all.
_LOGIN_ATTEMPTS = 4


class PrivilegedLoginFailed(Exception):
    """No login as the privileged role: ``category`` says why, as a credential test would.

    PASSWORD_AUTHENTICATION_FAILED means no password the control plane holds logs in; the
    other categories are failures to reach the server or unusable stored credentials.
    """

    def __init__(self, message: str, category: workflows_pb2.TestCategory = _PASSWORD_FAILED):
        super().__init__(message)
        self.category = category


class _RoleShared(Exception):
    """The control plane refused the stage: another connection logs in as this role."""


class _Superseded(Exception):
    """The control plane refused the commit: the stage was replaced while the rotation ran."""


async def connect_privileged(
    credentials: _Credentials,
    connection_id: str,
    postgres: connections_pb2.PostgresCredentials,
    *,
    connect_timeout: float = 10.0,
) -> tuple[psycopg.AsyncConnection[TupleRow], bool]:
    """Logs in as the privileged role; returns the connection and whether it recovered.

    Recovering means: the stored password failed, the staged one worked, so a rotation had
    set it and died before its commit; it is committed (under the rotation lock, so a
    rotation still running commits it itself) before anything else runs. Raises
    PrivilegedLoginFailed when no password the control plane holds works, or the server
    cannot be reached, with the category a credential test would report.
    """
    admin, used_staged = await _login(credentials, connection_id, postgres, connect_timeout)
    if not used_staged:
        return admin, False
    try:
        async with root_rotation_lock(admin):
            _, recovered = await _in_force(credentials, connection_id, connect_timeout)
    except BaseException:
        await admin.close()
        raise
    return admin, recovered


async def rotate_privileged_password(
    credentials: _Credentials,
    connection_id: str,
    resolved: connections_pb2.ResolveConnectionCredentialsResponse,
    *,
    connect_timeout: float = 10.0,
) -> workflows_pb2.RootRotationResult:
    """Rotates the privileged password: under the role's rotation lock, find the password in
    force, stage a new one, ALTER ROLE, prove it by a fresh login, commit that stage.

    Safe to retry at any point: a retry settles what an interrupted attempt left and rotates
    once more. Concurrent rotations of the role run one after the other.
    """
    started = time.monotonic()
    if not resolved.HasField("dynamic"):
        return _result(outcomes.NOT_DYNAMIC, started)
    try:
        admin, _ = await _login(credentials, connection_id, resolved.postgres, connect_timeout)
    except PrivilegedLoginFailed as exc:
        return await _login_failed(credentials, connection_id, exc, started)
    try:
        async with root_rotation_lock(admin):
            return await _rotate_locked(credentials, connection_id, admin, connect_timeout, started)
    finally:
        await admin.close()


async def _rotate_locked(
    credentials: _Credentials,
    connection_id: str,
    admin: psycopg.AsyncConnection[TupleRow],
    connect_timeout: float,
    started: float,
) -> workflows_pb2.RootRotationResult:
    """The rotation proper, holding the rotation lock on ``admin``."""
    try:
        current, recovered = await _in_force(credentials, connection_id, connect_timeout)
    except PrivilegedLoginFailed as exc:
        return await _login_failed(credentials, connection_id, exc, started)
    stage_id = str(uuid.uuid4())

    async def stage(new_password: str) -> None:
        # The current password was just seen to work under the lock, so any other staged
        # password never reached the database and may be replaced.
        try:
            await credentials.StagePrivilegedPassword(
                connections_pb2.StagePrivilegedPasswordRequest(
                    connection_id=connection_id,
                    pending_password=new_password,
                    replace_pending=True,
                    stage_id=stage_id,
                ),
                timeout=10,
            )
        except grpc.aio.AioRpcError as exc:
            if error_details(exc).reason == "PRIVILEGED_ROLE_SHARED":
                raise _RoleShared(exc.details() or "") from None
            raise

    try:
        await rotate_root(admin, current, before_alter=stage, connect_timeout=connect_timeout)
        await _commit(credentials, connection_id, stage_id)
    except _RoleShared as exc:
        return await _failed(
            credentials, connection_id, outcomes.ROLE_SHARED, started, detail=str(exc)
        )
    except RootRotationFailed as exc:
        if exc.restored:
            outcome = outcomes.UNVERIFIED_RESTORED
        else:
            # The server holds the staged password: storing it is the only way to keep
            # the stored password right, even though the agent could not log in with it.
            await _commit(credentials, connection_id, stage_id)
            outcome = outcomes.UNVERIFIED_NOT_RESTORED
        return await _failed(credentials, connection_id, outcome, started, recovered=recovered)
    except _Superseded:
        # A user's edit replaced the password while the rotation ran: the stored one wins,
        # so the database gets it back (the session stays logged in through the change).
        stored, _ = await _stored(credentials, connection_id)
        restored = await restore_password(admin, stored)
        log.warning("root rotation superseded", connection_id=connection_id, restored=restored)
        outcome = outcomes.SUPERSEDED
        return await _failed(credentials, connection_id, outcome, started, recovered=recovered)
    await _record(credentials, connection_id, connections_pb2.ROTATION_OUTCOME_SUCCEEDED)
    return _result(outcomes.ROTATED, started, recovered=recovered)


async def _login(
    credentials: _Credentials,
    connection_id: str,
    postgres: connections_pb2.PostgresCredentials,
    connect_timeout: float,
) -> tuple[psycopg.AsyncConnection[TupleRow], bool]:
    """Logs in with the stored password, else the staged one; says whether it was the staged.

    When neither works, the credentials are resolved again: a rotation elsewhere may have
    changed the password between the resolve and the login. Fails only when the control
    plane's credentials stop changing and still none of them works.
    """
    for _ in range(_LOGIN_ATTEMPTS):
        admin = await _try(postgres, connect_timeout)
        if admin is not None:
            return admin, False
        if postgres.HasField("pending_password"):
            admin = await _try(_with_password(postgres, postgres.pending_password), connect_timeout)
            if admin is not None:
                return admin, True
        _, fresh = await _stored(credentials, connection_id)
        if _same_passwords(fresh, postgres):
            break
        postgres = fresh
    raise PrivilegedLoginFailed("no password the control plane holds logs in")


async def _in_force(
    credentials: _Credentials, connection_id: str, connect_timeout: float
) -> tuple[connections_pb2.PostgresCredentials, bool]:
    """Under the rotation lock: the credentials whose password is in force, and whether a
    staged one had to be committed to get them (recovering an interrupted rotation).

    No rotation can run meanwhile, so the server holds the stored or the staged password;
    fresh logins tell which. Raises PrivilegedLoginFailed when it holds neither.
    """
    stored, postgres = await _stored(credentials, connection_id)
    if await _logs_in(stored, connect_timeout):
        return stored, False
    if not postgres.HasField("pending_password"):
        raise PrivilegedLoginFailed("the stored privileged password fails")
    staged = _with_password(stored, postgres.pending_password)
    if not await _logs_in(staged, connect_timeout):
        raise PrivilegedLoginFailed("neither the stored nor the staged password logs in")
    await _commit(credentials, connection_id, postgres.pending_stage_id)
    await _record(credentials, connection_id, connections_pb2.ROTATION_OUTCOME_SUCCEEDED)
    log.info("root rotation recovered", connection_id=connection_id)
    return staged, True


async def _try(
    postgres: connections_pb2.PostgresCredentials, connect_timeout: float
) -> psycopg.AsyncConnection[TupleRow] | None:
    """A session logged in with ``postgres``, or None when its password fails.

    Other failures (an unreachable server, TLS, a missing database, malformed credentials)
    raise PrivilegedLoginFailed with their category.
    """
    try:
        return await connect(postgres, connect_timeout=connect_timeout)
    except InvalidStoredCredentials:
        category = workflows_pb2.TEST_CATEGORY_INVALID_STORED_CREDENTIALS
    except (psycopg.Error, TimeoutError) as exc:
        category = connection_failure_category(exc)
        if category == _PASSWORD_FAILED:
            return None
    raise PrivilegedLoginFailed("the privileged role cannot log in", category)


async def _logs_in(postgres: connections_pb2.PostgresCredentials, connect_timeout: float) -> bool:
    """Whether a fresh login with ``postgres`` works now."""
    conn = await _try(postgres, connect_timeout)
    if conn is None:
        return False
    await conn.close()
    return True


async def _stored(
    credentials: _Credentials, connection_id: str
) -> tuple[connections_pb2.PostgresCredentials, connections_pb2.PostgresCredentials]:
    """The control plane's credentials now: the stored login alone, and all of them."""
    resolved = await credentials.ResolveConnectionCredentials(
        connections_pb2.ResolveConnectionCredentialsRequest(
            connection_id=connection_id, purpose="privileged_login"
        ),
        timeout=10,
    )
    postgres = resolved.postgres
    stored = connections_pb2.PostgresCredentials()
    stored.CopyFrom(postgres)
    stored.ClearField("pending_password")
    stored.pending_stage_id = ""
    return stored, postgres


def _with_password(
    postgres: connections_pb2.PostgresCredentials, password: str
) -> connections_pb2.PostgresCredentials:
    login = connections_pb2.PostgresCredentials()
    login.CopyFrom(postgres)
    login.ClearField("pending_password")
    login.pending_stage_id = ""
    login.password = password
    return login


def _same_passwords(
    a: connections_pb2.PostgresCredentials, b: connections_pb2.PostgresCredentials
) -> bool:
    return (a.password, a.pending_password, a.pending_stage_id) == (
        b.password,
        b.pending_password,
        b.pending_stage_id,
    ) and a.HasField("pending_password") == b.HasField("pending_password")


def _result(
    outcome: Outcome,
    started: float,
    *,
    recovered: bool = False,
    detail: str = "",
) -> workflows_pb2.RootRotationResult:
    message = ROOT_ROTATION_CATEGORIES.message(outcome)
    return workflows_pb2.RootRotationResult(
        category=ROOT_ROTATION_CATEGORIES.value(outcome),
        message=f"{message} — {detail}" if detail else message,
        recovered=recovered,
        duration_ms=int((time.monotonic() - started) * 1000),
    )


async def _failed(
    credentials: _Credentials,
    connection_id: str,
    outcome: Outcome,
    started: float,
    *,
    recovered: bool = False,
    detail: str = "",
) -> workflows_pb2.RootRotationResult:
    """Records a rotation that ended without a new password, and says how it ended."""
    # The audit record's reason is the category's name, as a stable UPPER_SNAKE token.
    reason = outcome.name.upper()
    await _record(credentials, connection_id, connections_pb2.ROTATION_OUTCOME_FAILED, reason)
    return _result(outcome, started, recovered=recovered, detail=detail)


async def _login_failed(
    credentials: _Credentials, connection_id: str, exc: PrivilegedLoginFailed, started: float
) -> workflows_pb2.RootRotationResult:
    """The outcome of a rotation that could not log in; an unreachable server is retried."""
    if exc.category == workflows_pb2.TEST_CATEGORY_INVALID_STORED_CREDENTIALS:
        return _result(outcomes.INVALID_STORED_CREDENTIALS, started)
    if exc.category != _PASSWORD_FAILED:
        raise exc  # The activity fails and Temporal retries it.
    return await _failed(credentials, connection_id, outcomes.LOGIN_FAILED, started)


async def _commit(credentials: _Credentials, connection_id: str, stage_id: str) -> None:
    """Makes the password staged under ``stage_id`` the stored one (and no other)."""
    try:
        await credentials.CommitPrivilegedPassword(
            connections_pb2.CommitPrivilegedPasswordRequest(
                connection_id=connection_id, stage_id=stage_id
            ),
            timeout=10,
        )
    except grpc.aio.AioRpcError as exc:
        if error_details(exc).reason == "STAGED_PASSWORD_SUPERSEDED":
            raise _Superseded from None
        raise


async def _record(
    credentials: _Credentials,
    connection_id: str,
    outcome: connections_pb2.RotationOutcome,
    reason: str = "",
) -> None:
    await credentials.RecordRootRotation(
        connections_pb2.RecordRootRotationRequest(
            connection_id=connection_id, outcome=outcome, failure_reason=reason
        ),
        timeout=10,
    )
