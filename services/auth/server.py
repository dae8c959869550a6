"""Wires auth together: store, signing keys, domain, token verifier and gRPC servicers."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc

from services.auth import passwords
from services.auth.config import AuthConfig
from services.auth.deployment_cache import DeploymentCache
from services.auth.domain import AuthDomain
from services.auth.keys import ES256, KeyEncryptionKeys, SigningKeys, StoreTrustSource
from services.auth.limits import WORKLOAD_EXCHANGE, HashingPool, SignInLimiter
from services.auth.orchestrator_client import OrchestratorNotices
from services.auth.servicer import AuthServicer, DeploymentServicer, UserServicer
from services.auth.store import AuthStore
from services.auth.temporal_tokens import JwksServer, TemporalTokenIssuer
from services.auth.workload_servicer import WorkloadServicer
from services.auth.workload_store import WorkloadStore
from services.auth.workloads import WorkloadCache, WorkloadDomain
from sevvo.auth.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    deployments_pb2,
    deployments_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
    workloads_pb2,
    workloads_pb2_grpc,
)
from sevvo.runtime.grpc_client import ClientTls
from sevvo.runtime.grpc_server import Access, ServerSpec, run_until_signalled, start_service
from sevvo.runtime.health import (
    ReadinessCheck,
    database_check,
    require,
    verification_keys_check,
)
from sevvo.runtime.logs import get_logger
from sevvo.runtime.tokens import TokenVerifier

log = get_logger(__name__)


def _methods(service: str, access: dict[str, Access]) -> dict[str, Access]:
    return {f"/{service}/{name}": level for name, level in access.items()}


_AUTH = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
_USERS = users_pb2.DESCRIPTOR.services_by_name["UserService"].full_name
_DEPLOYMENTS = deployments_pb2.DESCRIPTOR.services_by_name["DeploymentService"].full_name
_WORKLOADS = workloads_pb2.DESCRIPTOR.services_by_name["WorkloadService"].full_name

ACCESS: dict[str, Access] = {
    **_methods(
        _AUTH,
        {
            # Sign-in and exchange are how a caller gets a token; keys and revocations are
            # public data every verifier polls.
            "SignIn": Access.PUBLIC,
            "ExchangeDeploymentToken": Access.PUBLIC,
            "ExchangeWorkloadToken": Access.PUBLIC,
            "GetPublicKeys": Access.PUBLIC,
            "ListRevokedDeployments": Access.PUBLIC,
            "ListRevokedSessions": Access.PUBLIC,
            "ListRevokedWorkloads": Access.PUBLIC,
            "GetCaller": Access.USER_OR_AGENT,
            "SignOut": Access.USER,
            "ChangePassword": Access.USER,
            # Public to the interceptor; the domain checks the operator's bootstrap token.
            "BootstrapOrg": Access.PUBLIC,
            # Public to the interceptor; the issuer checks the orchestrator's service token.
            "IssueTemporalToken": Access.PUBLIC,
        },
    ),
    **_methods(
        _USERS,
        {
            "CreateUser": Access.ADMIN,
            "GetUser": Access.USER,
            "ListUsers": Access.USER,
            "DisableUser": Access.ADMIN,
            "EnableUser": Access.ADMIN,
            "DeleteUser": Access.ADMIN,
            # Anyone for themself; the domain lets only admins name another user.
            "RevokeUserSessions": Access.USER,
        },
    ),
    **_methods(
        _DEPLOYMENTS,
        {
            "CreateDeployment": Access.ADMIN,
            "GetDeployment": Access.USER,
            "ListDeployments": Access.USER,
            "RevokeDeployment": Access.ADMIN,
        },
    ),
    # Admins only, reads included: grants say what may reach the org's databases.
    **_methods(
        _WORKLOADS,
        {
            "CreateWorkload": Access.ADMIN,
            "GetWorkload": Access.ADMIN,
            "ListWorkloads": Access.ADMIN,
            "UpdateWorkload": Access.ADMIN,
            "RevokeWorkload": Access.ADMIN,
        },
    ),
}


class AuthApp:
    """auth's long-lived parts, opened once per process."""

    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self.store = AuthStore(config.database_url, migration=config.migration)
        leeway = timedelta(seconds=config.leeway_seconds)
        max_ttl = timedelta(seconds=config.max_token_ttl_seconds)
        kek = KeyEncryptionKeys(config.key_encryption_key, config.retired_key_encryption_keys)
        self.keys = SigningKeys(
            self.store,
            kek,
            max_token_ttl=max_ttl,
            leeway=leeway,
            refresh_interval=config.refresh_seconds,
            rotation_period=timedelta(days=config.key_rotation_days),
        )
        # Temporal's keys: published a Temporal JWKS refresh ahead, rotated on the same period.
        self.temporal_keys = SigningKeys(
            self.store,
            kek,
            max_token_ttl=timedelta(seconds=config.max_temporal_token_ttl_seconds),
            leeway=leeway,
            refresh_interval=config.temporal_jwks_refresh_seconds,
            rotation_period=timedelta(days=config.key_rotation_days),
            algorithm=ES256,
        )
        self.temporal_tokens = TemporalTokenIssuer(
            self.temporal_keys,
            self.store,
            service_token=config.service_token,
            orchestrator_ttl=timedelta(seconds=config.temporal_token_ttl_seconds),
        )
        self.workload_store = WorkloadStore(self.store)
        self.trust = StoreTrustSource(
            self.store,
            revocation_window=timedelta(seconds=config.bearer_ttl_seconds) + leeway,
            leeway=leeway,
            workloads=self.workload_store,
            # A minute more than a bearer's life: one issued from a replica's cache just after
            # a revocation or change (services/auth/deployment_cache.py bounds that to
            # seconds) is refused until it expires too.
            workload_window=timedelta(seconds=config.workload_bearer_ttl_seconds + 60) + leeway,
        )
        self.hashing = HashingPool(threads=config.hashing_threads, queue=config.hashing_queue)
        self.verifier = TokenVerifier(
            self.trust,
            refresh_interval=config.refresh_seconds,
            max_staleness=max(5.0, 3 * config.refresh_seconds),
            leeway_seconds=config.leeway_seconds,
        )
        self.notices = (
            OrchestratorNotices(config.orchestrator_endpoint, ClientTls(ca_file=config.ca_file))
            if config.orchestrator_endpoint
            else None
        )
        self.deployments = DeploymentCache(
            self.store.deployment_secret, self.store.listen_to_deployments, self.store.notify
        )
        self.domain = AuthDomain(
            self.store,
            self.keys,
            self.deployments,
            session_ttl=timedelta(seconds=config.session_ttl_seconds),
            bearer_ttl=timedelta(seconds=config.bearer_ttl_seconds),
            hashing=self.hashing,
            limiter=SignInLimiter(config.sign_in_limits),
            leeway=leeway,
            # auth itself rejects a revoked bearer or session at once; others within a refresh.
            on_revoke=self.verifier.refresh,
            bootstrap_token=config.bootstrap_token,
        )
        self.workload_cache = WorkloadCache(
            self.workload_store.secret,
            self.store.listen_to_workloads,
            self.store.notify,
            what="workload",
        )
        self.workloads = WorkloadDomain(
            self.workload_store,
            self.keys,
            self.workload_cache,
            claims=self.domain.bearer_claims,
            bearer_ttl=timedelta(seconds=config.workload_bearer_ttl_seconds),
            limiter=SignInLimiter(config.sign_in_limits, wording=WORKLOAD_EXCHANGE),
            on_revoke=self.verifier.refresh,
        )

    def open(self) -> None:
        """Migrates the schema, ensures a signing key, starts the verifier and the cache."""
        self.store.open()
        self.keys.ensure_key()
        self.temporal_keys.ensure_key()
        self.verifier.start()
        self.deployments.start()
        self.workload_cache.start()
        passwords.dummy_hash()  # Computed once now, not on the first unknown email's sign-in.

    def close(self) -> None:
        """Stops the cache, the verifier and the hashing threads, and closes the store."""
        self.workload_cache.stop()
        self.deployments.stop()
        self.verifier.stop()
        self.hashing.close()
        self.store.close()

    def readiness(self) -> list[ReadinessCheck]:
        """What auth needs to serve: its database, and its signing keys loaded (they sign
        every session and bearer; the verifier reads the same store)."""
        return [
            database_check(self.store),
            ReadinessCheck(
                "signing keys",
                lambda: require(
                    self.keys.has_active_key() and self.temporal_keys.has_active_key(),
                    "no signing key is loaded and active",
                ),
            ),
            verification_keys_check(self.verifier),
        ]

    def spec(self) -> ServerSpec:
        """The services auth adds to a gRPC server."""

        def register(server: grpc.aio.Server) -> None:
            auth_pb2_grpc.add_AuthServiceServicer_to_server(
                AuthServicer(
                    self.domain,
                    self.trust,
                    self.config.refresh_seconds,
                    self.temporal_tokens,
                    self.workloads,
                    self.notices,
                    self.config.trusted_proxies,
                ),
                server,
            )
            users_pb2_grpc.add_UserServiceServicer_to_server(UserServicer(self.domain), server)
            deployments_pb2_grpc.add_DeploymentServiceServicer_to_server(
                DeploymentServicer(self.domain, self.notices), server
            )
            workloads_pb2_grpc.add_WorkloadServiceServicer_to_server(
                WorkloadServicer(self.workloads), server
            )

        return ServerSpec(
            name="auth",
            register=register,
            service_names=[_AUTH, _USERS, _DEPLOYMENTS, _WORKLOADS],
            access=ACCESS,
        )


async def serve(config: AuthConfig) -> None:
    """Runs auth until SIGINT or SIGTERM, then drains in-flight calls."""
    app = AuthApp(config)
    await asyncio.to_thread(app.open)
    server, port, health = await start_service(
        app.spec(),
        verifier=app.verifier,
        checks=app.readiness(),
        tls=config.tls,
        host=config.host,
        port=config.port,
        settings=config.health,
    )
    jwks = JwksServer(app.temporal_tokens, config.host, config.jwks_port)
    jwks.start()
    log.info("auth serving", port=port, jwks_port=jwks.port)
    await run_until_signalled(server, health, drain=config.health.drain_seconds)
    await app.domain.settle_audits()
    if app.notices is not None:
        await app.notices.close()
    jwks.stop()
    app.close()
