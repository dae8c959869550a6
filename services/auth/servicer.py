"""Thin gRPC servicers for auth: protobuf in, domain call, protobuf out.

Blocking domain calls (Postgres) run in worker threads; the caller's verified principal
travels with them through the copied context. Password checks are coroutines of the domain,
which hashes on a pool of its own. A token exchange runs on the event loop when it needs no
I/O (services/auth/deployment_cache.py), and in a worker thread only when it does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import grpc
import structlog
from google.protobuf import any_pb2, duration_pb2, empty_pb2, timestamp_pb2
from google.rpc import error_details_pb2

from services.auth.callers import TrustedProxies
from services.auth.domain import AuthDomain
from services.auth.keys import StoreTrustSource
from services.auth.last_seen import LastSeen
from services.auth.limits import TooManyAttempts, source_of
from services.auth.orchestrator_client import OrchestratorNotices
from services.auth.store import DeploymentRow, UserRow
from services.auth.temporal_tokens import SERVICE_TOKEN_METADATA, TemporalTokenIssuer
from services.auth.workload_servicer import grants_pb
from services.auth.workloads import WorkloadDomain
from sevvo.auth.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    deployments_pb2,
    deployments_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)
from sevvo.runtime.grpc_server import current_bearer, current_principal, status_for
from sevvo.runtime.logs import get_logger
from sevvo.runtime.servicing import blocking, timestamp
from sevvo.runtime.tokens import PrincipalKind

T = TypeVar("T")

_ROLE_TO_PB = {"admin": users_pb2.USER_ROLE_ADMIN, "member": users_pb2.USER_ROLE_MEMBER}
_ROLE_FROM_PB = {
    users_pb2.USER_ROLE_UNSPECIFIED: "member",
    users_pb2.USER_ROLE_MEMBER: "member",
    users_pb2.USER_ROLE_ADMIN: "admin",
}

log = get_logger(__name__)


def user_pb(row: UserRow) -> users_pb2.User:
    """A user as the API shows it: never the password hash."""
    return users_pb2.User(
        id=str(row.id),
        org_id=str(row.org_id),
        email=row.email,
        role=_ROLE_TO_PB[row.role],
        create_time=timestamp(row.created_at),
        state=(users_pb2.USER_STATE_DISABLED if row.disabled_at else users_pb2.USER_STATE_ACTIVE),
        disable_time=timestamp(row.disabled_at),
    )


def deployment_pb(row: DeploymentRow) -> deployments_pb2.Deployment:
    """A deployment as the API shows it: never the secret hash."""
    return deployments_pb2.Deployment(
        id=str(row.id),
        org_id=str(row.org_id),
        display_name=row.display_name,
        state=(
            deployments_pb2.DEPLOYMENT_STATE_REVOKED
            if row.revoked_at
            else deployments_pb2.DEPLOYMENT_STATE_ACTIVE
        ),
        create_time=timestamp(row.created_at),
        revoke_time=timestamp(row.revoked_at),
        creator_user_id=str(row.creator_user_id) if row.creator_user_id else "",
        last_seen_time=timestamp(row.last_seen_at),
    )


BOOTSTRAP_TOKEN_METADATA = "x-sevvo-bootstrap-token"


def _metadata_value(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key and isinstance(value, str):
            return value
    return None


# How long a refusal is held before it is sent. A guesser that ignores RetryInfo would
# otherwise loop as fast as refusals come back, each costing the server a whole RPC; held,
# each of its streams costs a sleeping coroutine and at most one refusal a second.
REFUSAL_HOLD_SECONDS = 1.0


async def _limited(context: grpc.aio.ServicerContext, call: Awaitable[T]) -> T:
    """Awaits a limited check (a password, a workload token); TooManyAttempts answers
    RESOURCE_EXHAUSTED with a RetryInfo.

    The shared error mapping carries ErrorInfo; the retry delay is added here, so clients
    (and the CLI) can wait exactly as long as the limiter asks.
    """
    try:
        return await call
    except TooManyAttempts as error:
        await asyncio.sleep(min(error.retry_after, REFUSAL_HOLD_SECONDS))
        status = status_for(error, structlog.contextvars.get_contextvars().get("request_id"))
        retry = any_pb2.Any()
        retry.Pack(
            error_details_pb2.RetryInfo(
                retry_delay=duration_pb2.Duration(seconds=error.retry_after)
            )
        )
        status.details.append(retry)
        await context.abort(
            error.code,
            error.message,
            trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
        )
        raise  # context.abort raised already; this satisfies the type checker.


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """sevvo.auth.v1.AuthService."""

    def __init__(
        self,
        domain: AuthDomain,
        trust: StoreTrustSource,
        refresh_seconds: float,
        temporal_tokens: TemporalTokenIssuer,
        workloads: WorkloadDomain,
        notices: OrchestratorNotices | None = None,
        proxies: TrustedProxies | None = None,
    ) -> None:
        self._domain = domain
        self._workloads = workloads
        self._proxies = proxies or TrustedProxies()
        self._trust = trust
        self._refresh_seconds = refresh_seconds
        self._temporal = temporal_tokens
        self._notices = notices
        self._last_seen = LastSeen()
        self._background: set[asyncio.Task[None]] = set()

    def _source(self, context: grpc.aio.ServicerContext) -> str:
        """The network source the caller's attempts count against: its address (behind a
        trusted proxy, the proxy's client), an IPv6 caller's /64."""
        return source_of(self._proxies.of(context))

    async def SignIn(
        self, request: auth_pb2.SignInRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.SignInResponse:
        issued = await _limited(
            context,
            self._domain.sign_in(request.email, request.password, self._source(context)),
        )
        return auth_pb2.SignInResponse(
            session_token=issued.token,
            expire_time=timestamp(issued.expires_at),
            org_id=issued.org_id,
            user_id=issued.subject_id,
        )

    async def ExchangeDeploymentToken(
        self, request: auth_pb2.ExchangeDeploymentTokenRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ExchangeDeploymentTokenResponse:
        issued = self._domain.exchange_in_memory(request.deployment_token)
        if issued is None:  # The deployment or the signing keys must be read from Postgres.
            issued = await blocking(self._domain.exchange, request.deployment_token)
        if self._last_seen.due(issued.subject_id):
            task = asyncio.create_task(self._record_seen(issued.subject_id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        temporal = self._temporal.for_agent_in_memory(
            issued.org_id, issued.subject_id, issued.expires_at
        )
        if temporal is None:  # The Temporal signing keys are due for a reload from Postgres.
            temporal = await blocking(
                self._temporal.for_agent, issued.org_id, issued.subject_id, issued.expires_at
            )
        return auth_pb2.ExchangeDeploymentTokenResponse(
            bearer_token=issued.token,
            # The bearer's own ``exp`` (whole seconds), at under half of timestamp()'s cost.
            expire_time=timestamp_pb2.Timestamp(seconds=int(issued.expires_at.timestamp())),
            org_id=issued.org_id,
            deployment_id=issued.subject_id,
            temporal_token=temporal.token,
            temporal_namespace=temporal.namespace,
        )

    async def _record_seen(self, deployment_id: str) -> None:
        """Writes the deployment's last-seen time beside the exchange, which never waits for
        it; a failed write is retried at the next exchange."""
        try:
            await blocking(self._domain.record_seen, deployment_id)
        except Exception as exc:  # The exchange succeeded; "last seen" is only late.
            self._last_seen.forget(deployment_id)
            log.warning(
                "deployment last-seen not recorded",
                deployment_id=deployment_id,
                error=type(exc).__name__,
            )

    async def ExchangeWorkloadToken(
        self, request: auth_pb2.ExchangeWorkloadTokenRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ExchangeWorkloadTokenResponse:
        issued = await _limited(
            context,
            self._workloads.exchange(request.workload_token, self._source(context)),
        )
        return auth_pb2.ExchangeWorkloadTokenResponse(
            bearer_token=issued.token,
            expire_time=timestamp_pb2.Timestamp(seconds=int(issued.expires_at.timestamp())),
            org_id=str(issued.workload.org_id),
            workload_id=str(issued.workload.id),
            grants=grants_pb(issued.workload.grants),
            max_ttl_seconds=issued.workload.max_ttl_seconds,
        )

    async def IssueTemporalToken(
        self, request: auth_pb2.IssueTemporalTokenRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.IssueTemporalTokenResponse:
        issued = await blocking(
            self._temporal.for_orchestrator,
            _metadata_value(context, SERVICE_TOKEN_METADATA),
            request.org_id,
        )
        return auth_pb2.IssueTemporalTokenResponse(
            temporal_token=issued.token,
            temporal_namespace=issued.namespace,
            expire_time=timestamp(issued.expires_at),
        )

    async def GetPublicKeys(
        self, request: auth_pb2.GetPublicKeysRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.GetPublicKeysResponse:
        keys = await blocking(self._trust.published_keys)
        return auth_pb2.GetPublicKeysResponse(
            keys=[
                auth_pb2.PublicKey(
                    kid=k.kid,
                    algorithm="EdDSA",
                    public_key=k.public_key.public_bytes_raw(),
                    not_before=timestamp(k.not_before),
                    verify_until=timestamp(k.verify_until),
                )
                for k in keys
            ],
            refresh_interval_seconds=max(1, int(self._refresh_seconds)),
        )

    async def ListRevokedDeployments(
        self, request: auth_pb2.ListRevokedDeploymentsRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListRevokedDeploymentsResponse:
        revoked = await blocking(self._trust.revoked)
        return auth_pb2.ListRevokedDeploymentsResponse(
            deployments=[
                auth_pb2.RevokedDeployment(deployment_id=d, revoke_time=timestamp(at))
                for d, at in revoked.items()
            ]
        )

    async def ListRevokedWorkloads(
        self, request: auth_pb2.ListRevokedWorkloadsRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListRevokedWorkloadsResponse:
        changes = await blocking(self._trust.workload_changes)
        return auth_pb2.ListRevokedWorkloadsResponse(
            workloads=[
                auth_pb2.RevokedWorkload(workload_id=w, revoke_time=timestamp(at))
                for w, at in changes.revoked.items()
            ],
            changed=[
                auth_pb2.ChangedWorkload(
                    workload_id=w, generation=generation, update_time=timestamp(at)
                )
                for w, (generation, at) in changes.generations.items()
            ],
        )

    async def ListRevokedSessions(
        self, request: auth_pb2.ListRevokedSessionsRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListRevokedSessionsResponse:
        revoked = await blocking(self._trust.revoked_sessions)
        return auth_pb2.ListRevokedSessionsResponse(
            sessions=[
                auth_pb2.RevokedSession(token_id=token_id, expire_time=timestamp(at))
                for token_id, at in revoked.sessions.items()
            ],
            cutoffs=[
                auth_pb2.UserSessionCutoff(user_id=user_id, valid_after=timestamp(at))
                for user_id, at in revoked.cutoffs.items()
            ],
        )

    async def BootstrapOrg(
        self, request: auth_pb2.BootstrapOrgRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.BootstrapOrgResponse:
        admin = await _limited(
            context,
            self._domain.bootstrap_org(
                _metadata_value(context, BOOTSTRAP_TOKEN_METADATA),
                request.org_name,
                request.admin_email,
                request.admin_password,
            ),
        )
        if self._notices is not None:
            # The org's Temporal namespace exists from its creation on (issue 13).
            await self._notices.org_created(self._domain.admin_notice_bearer(admin))
        return auth_pb2.BootstrapOrgResponse(org_id=str(admin.org_id), admin=user_pb(admin))

    async def GetCaller(
        self, request: auth_pb2.GetCallerRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.GetCallerResponse:
        caller = current_principal()
        kind = (
            auth_pb2.PRINCIPAL_KIND_USER
            if caller.kind is PrincipalKind.USER
            else auth_pb2.PRINCIPAL_KIND_AGENT
        )
        return auth_pb2.GetCallerResponse(
            kind=kind,
            org_id=caller.org_id,
            subject_id=caller.subject_id,
            org_name=await blocking(self._domain.org_name, caller),
        )

    async def SignOut(
        self, request: auth_pb2.SignOutRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.SignOutResponse:
        caller = current_principal()
        await blocking(self._domain.sign_out, caller)
        return auth_pb2.SignOutResponse(token_id=caller.token_id)

    async def ChangePassword(
        self, request: auth_pb2.ChangePasswordRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ChangePasswordResponse:
        issued = await _limited(
            context,
            self._domain.change_password(
                current_principal(),
                request.current_password,
                request.new_password,
                self._source(context),
            ),
        )
        return auth_pb2.ChangePasswordResponse(
            session_token=issued.token, expire_time=timestamp(issued.expires_at)
        )


class UserServicer(users_pb2_grpc.UserServiceServicer):
    """sevvo.auth.v1.UserService."""

    def __init__(self, domain: AuthDomain) -> None:
        self._domain = domain

    async def CreateUser(
        self, request: users_pb2.CreateUserRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.User:
        role = _ROLE_FROM_PB.get(request.role, "")
        row = await _limited(
            context,
            self._domain.create_user(current_principal(), request.email, request.password, role),
        )
        return user_pb(row)

    async def GetUser(
        self, request: users_pb2.GetUserRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.User:
        return user_pb(await blocking(self._domain.get_user, current_principal(), request.id))

    async def ListUsers(
        self, request: users_pb2.ListUsersRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.ListUsersResponse:
        rows, token = await blocking(
            self._domain.list_users, current_principal(), request.page_size, request.page_token
        )
        return users_pb2.ListUsersResponse(users=[user_pb(r) for r in rows], next_page_token=token)

    async def DisableUser(
        self, request: users_pb2.DisableUserRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.User:
        return user_pb(await blocking(self._domain.disable_user, current_principal(), request.id))

    async def EnableUser(
        self, request: users_pb2.EnableUserRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.User:
        return user_pb(await blocking(self._domain.enable_user, current_principal(), request.id))

    async def DeleteUser(
        self, request: users_pb2.DeleteUserRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await blocking(self._domain.delete_user, current_principal(), request.id)
        return empty_pb2.Empty()

    async def RevokeUserSessions(
        self, request: users_pb2.RevokeUserSessionsRequest, context: grpc.aio.ServicerContext
    ) -> users_pb2.RevokeUserSessionsResponse:
        at = await blocking(self._domain.revoke_user_sessions, current_principal(), request.id)
        return users_pb2.RevokeUserSessionsResponse(revoke_time=timestamp(at))


class DeploymentServicer(deployments_pb2_grpc.DeploymentServiceServicer):
    """sevvo.auth.v1.DeploymentService."""

    def __init__(self, domain: AuthDomain, rotator: OrchestratorNotices | None = None) -> None:
        self._domain = domain
        self._rotator = rotator

    async def CreateDeployment(
        self, request: deployments_pb2.CreateDeploymentRequest, context: grpc.aio.ServicerContext
    ) -> deployments_pb2.CreateDeploymentResponse:
        created = await blocking(
            self._domain.create_deployment, current_principal(), request.display_name
        )
        return deployments_pb2.CreateDeploymentResponse(
            deployment=deployment_pb(created.deployment), deployment_token=created.token
        )

    async def GetDeployment(
        self, request: deployments_pb2.GetDeploymentRequest, context: grpc.aio.ServicerContext
    ) -> deployments_pb2.Deployment:
        row = await blocking(self._domain.get_deployment, current_principal(), request.id)
        return deployment_pb(row)

    async def ListDeployments(
        self, request: deployments_pb2.ListDeploymentsRequest, context: grpc.aio.ServicerContext
    ) -> deployments_pb2.ListDeploymentsResponse:
        rows, token = await blocking(
            self._domain.list_deployments,
            current_principal(),
            request.page_size,
            request.page_token,
        )
        return deployments_pb2.ListDeploymentsResponse(
            deployments=[deployment_pb(r) for r in rows], next_page_token=token
        )

    async def RevokeDeployment(
        self, request: deployments_pb2.RevokeDeploymentRequest, context: grpc.aio.ServicerContext
    ) -> deployments_pb2.Deployment:
        row = await blocking(self._domain.revoke_deployment, current_principal(), request.id)
        if self._rotator is not None:
            # Before answering: once the admin sees the revocation, work started afterwards is
            # encrypted with a key the revoked agent never held (when the call fails, the
            # orchestrator's own check of revocations rotates within seconds instead).
            await self._rotator.deployment_revoked(current_bearer(), str(row.id))
        return deployment_pb(row)
