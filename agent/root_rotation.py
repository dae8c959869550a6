"""The privileged role of a dynamic connection: logging in as it, and rotating its password.

A rotation has three durable steps in two systems: stage the new password (sealed, in the
control plane), ``ALTER ROLE`` (in the database), commit the staged password (control
plane). A crash between them leaves the database holding either the stored password or the
staged one, never a third. So every login as the privileged role goes through
``connect_privileged``: when the stored password fails authentication and a staged one
exists, it tries that, and if it works the interrupted rotation is committed on the spot.
The stored password is therefore never wrong for longer than the next use of the
connection, and no secret ever leaves the agent except to the control plane's sealed store.
"""

from __future__ import annotations

import time

import psycopg
from psycopg.rows import TupleRow

from agent.dynamic_credentials import RootRotationFailed, rotate_root
from agent.postgres_probe import InvalidStoredCredentials, connect, connection_failure_category
from sevvo.connections.v1 import connections_pb2, connections_pb2_grpc
from sevvo.runtime.logs import get_logger
from sevvo.workflows.v1 import workflows_pb2

log = get_logger(__name__)

_PASSWORD_FAILED = workflows_pb2.TEST_CATEGORY_PASSWORD_AUTHENTICATION_FAILED
_CATEGORY = workflows_pb2.RootRotationCategory


class PrivilegedLoginFailed(Exception):
    """Neither the stored nor a staged password logs in as the privileged role."""


async def connect_privileged(
    credentials: connections_pb2_grpc.ConnectionCredentialServiceStub,
    connection_id: str,
    postgres: connections_pb2.PostgresCredentials,
    *,
    connect_timeout: float = 10.0,
) -> tuple[psycopg.AsyncConnection[TupleRow], bool]:
    """Logs in as the privileged role; returns the connection and whether it recovered.

    Recovering means: the stored password failed authentication, the staged one worked, so
    a rotation had set it before its agent died; it is committed before anything else runs.
    Raises PrivilegedLoginFailed when neither password works, and psycopg errors for
    failures other than authentication.
    """
    try:
        return await connect(postgres, connect_timeout=connect_timeout), False
    except psycopg.OperationalError as exc:
        if connection_failure_category(exc) != _PASSWORD_FAILED:
            raise
        if not postgres.HasField("pending_password"):
            raise PrivilegedLoginFailed("the stored privileged password fails") from None
    staged = connections_pb2.PostgresCredentials()
    staged.CopyFrom(postgres)
    staged.password = staged.pending_password
    try:
        admin = await connect(staged, connect_timeout=connect_timeout)
    except psycopg.OperationalError as exc:
        if connection_failure_category(exc) != _PASSWORD_FAILED:
            raise
        raise PrivilegedLoginFailed("neither the stored nor the staged password logs in") from None
    try:
        await _commit(credentials, connection_id)
        await _record(credentials, connection_id, connections_pb2.ROTATION_OUTCOME_SUCCEEDED)
    except BaseException:
        await admin.close()
        raise
    log.info("root rotation recovered", connection_id=connection_id)
    return admin, True


async def rotate_privileged_password(
    credentials: connections_pb2_grpc.ConnectionCredentialServiceStub,
    connection_id: str,
    resolved: connections_pb2.ResolveConnectionCredentialsResponse,
) -> workflows_pb2.RootRotationResult:
    """Rotates the privileged password: stage, ALTER ROLE, prove by a fresh login, commit.

    Safe to retry at any point: a retry logs in through ``connect_privileged`` (finishing
    an interrupted rotation) and rotates once more.
    """
    started = time.monotonic()
    if not resolved.HasField("dynamic"):
        return _result(_CATEGORY.ROOT_ROTATION_CATEGORY_NOT_DYNAMIC, started)
    try:
        admin, recovered = await connect_privileged(credentials, connection_id, resolved.postgres)
    except PrivilegedLoginFailed:
        await _record(
            credentials, connection_id, connections_pb2.ROTATION_OUTCOME_FAILED, "LOGIN_FAILED"
        )
        return _result(_CATEGORY.ROOT_ROTATION_CATEGORY_LOGIN_FAILED, started)
    except InvalidStoredCredentials:
        return _result(_CATEGORY.ROOT_ROTATION_CATEGORY_INVALID_STORED_CREDENTIALS, started)
    current = connections_pb2.PostgresCredentials()
    current.CopyFrom(resolved.postgres)
    current.ClearField("pending_password")
    if recovered:
        current.password = resolved.postgres.pending_password

    async def stage(new_password: str) -> None:
        # The current password was just seen to work, so any older staged one never reached
        # the database and may be replaced.
        await credentials.StagePrivilegedPassword(
            connections_pb2.StagePrivilegedPasswordRequest(
                connection_id=connection_id, pending_password=new_password, replace_pending=True
            ),
            timeout=10,
        )

    try:
        await rotate_root(admin, current, before_alter=stage)
    except RootRotationFailed as exc:
        if exc.restored:
            category = _CATEGORY.ROOT_ROTATION_CATEGORY_UNVERIFIED_RESTORED
        else:
            # The server holds the staged password: storing it is the only way to keep
            # the stored password right, even though the agent could not log in with it.
            await _commit(credentials, connection_id)
            category = _CATEGORY.ROOT_ROTATION_CATEGORY_UNVERIFIED_NOT_RESTORED
        reason = _CATEGORY.Name(category).removeprefix("ROOT_ROTATION_CATEGORY_")
        await _record(credentials, connection_id, connections_pb2.ROTATION_OUTCOME_FAILED, reason)
        return _result(category, started, recovered=recovered)
    finally:
        await admin.close()
    await _commit(credentials, connection_id)
    await _record(credentials, connection_id, connections_pb2.ROTATION_OUTCOME_SUCCEEDED)
    return _result(_CATEGORY.ROOT_ROTATION_CATEGORY_ROTATED, started, recovered=recovered)


ROTATION_MESSAGES = {
    _CATEGORY.ROOT_ROTATION_CATEGORY_ROTATED: (
        "rotated: the privileged role has a new password, proved by a fresh login and stored"
        " sealed; the old one no longer logs in"
    ),
    _CATEGORY.ROOT_ROTATION_CATEGORY_NOT_DYNAMIC: (
        "not a dynamic connection: only a dynamic connection's privileged password is rotated"
        " by sevvo; rotate a fixed password with the connection's password update"
    ),
    _CATEGORY.ROOT_ROTATION_CATEGORY_LOGIN_FAILED: (
        "the stored privileged password no longer logs in, so nothing was rotated — someone"
        " changed it outside sevvo; save the current password on the connection"
    ),
    _CATEGORY.ROOT_ROTATION_CATEGORY_UNVERIFIED_RESTORED: (
        "not rotated: a fresh login with the new password failed (a pooler caching"
        " authentication, or pg_hba rules), so the old password was put back and still works"
    ),
    _CATEGORY.ROOT_ROTATION_CATEGORY_UNVERIFIED_NOT_RESTORED: (
        "a fresh login with the new password failed and the old one could not be put back;"
        " the new one is stored — check the server's pg_hba rules and any pooler in between"
    ),
    _CATEGORY.ROOT_ROTATION_CATEGORY_INVALID_STORED_CREDENTIALS: (
        "the connection is gone or its stored credentials are unreadable; edit and save it"
    ),
    _CATEGORY.ROOT_ROTATION_CATEGORY_OTHER: "the rotation failed for another reason",
}


def _result(
    category: workflows_pb2.RootRotationCategory,
    started: float,
    *,
    recovered: bool = False,
) -> workflows_pb2.RootRotationResult:
    return workflows_pb2.RootRotationResult(
        category=category,
        message=ROTATION_MESSAGES[category],
        recovered=recovered,
        duration_ms=int((time.monotonic() - started) * 1000),
    )


async def _commit(
    credentials: connections_pb2_grpc.ConnectionCredentialServiceStub, connection_id: str
) -> None:
    """Makes the staged password the stored one."""
    await credentials.CommitPrivilegedPassword(
        connections_pb2.CommitPrivilegedPasswordRequest(connection_id=connection_id), timeout=10
    )


async def _record(
    credentials: connections_pb2_grpc.ConnectionCredentialServiceStub,
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
