"""Wires connections together: store, keyring, domain, token verifier and gRPC servicers."""

from __future__ import annotations

import asyncio

import grpc

from services.connections.config import ConnectionsConfig
from services.connections.domain import ConnectionsDomain
from services.connections.leases import LeasesDomain
from services.connections.orchestrator_client import OrchestratorClient
from services.connections.roles import RolesDomain
from services.connections.servicer import (
    AuditServicer,
    ConnectionRoleServicer,
    ConnectionServicer,
    CredentialServicer,
    LeaseServicer,
)
from services.connections.store import ConnectionStore
from sevvo.audit.v1 import audit_pb2, audit_pb2_grpc
from sevvo.connections.v1 import connections_pb2, connections_pb2_grpc
from sevvo.runtime.auth_client import remote_verifier
from sevvo.runtime.grpc_client import ClientTls
from sevvo.runtime.grpc_server import Access, ServerSpec, run_until_signalled, start_service
from sevvo.runtime.health import (
    ReadinessCheck,
    database_check,
    verification_keys_check,
)
from sevvo.runtime.logs import get_logger
from sevvo.runtime.tokens import TokenVerifier
from sevvo.runtime.work_proof import ProofKeyCache

log = get_logger(__name__)

_CONNECTIONS = connections_pb2.DESCRIPTOR.services_by_name["ConnectionService"].full_name
_CREDENTIALS = connections_pb2.DESCRIPTOR.services_by_name["ConnectionCredentialService"].full_name
_LEASES = connections_pb2.DESCRIPTOR.services_by_name["LeaseService"].full_name
_ROLES = connections_pb2.DESCRIPTOR.services_by_name["ConnectionRoleService"].full_name
_AUDIT = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name

ACCESS: dict[str, Access] = {
    **{
        f"/{_CONNECTIONS}/{method}": Access.USER
        for method in (
            "CreateConnection",
            "GetConnection",
            "ListConnections",
            "UpdateConnection",
            "TestConnection",
        )
    },
    # One permission model (the user guide's table): members use connections and keep their
    # details current; what removes a connection or changes its privileged credentials
    # (delete, root rotation and its schedule, revoking leases, the audit log) is an admin's.
    f"/{_CONNECTIONS}/DeleteConnection": Access.ADMIN,
    # Only the org's own agents may see or rotate credentials; user sessions are refused.
    **{
        f"/{_CREDENTIALS}/{method}": Access.AGENT
        for method in (
            "ResolveConnectionCredentials",
            "ReplaceConnectionCredentials",
            "StagePrivilegedPassword",
            "CommitPrivilegedPassword",
            "RecordRootRotation",
            "RecordPreviewSecurityEvent",
            "RecordWorkRefused",
        )
    },
    # Lease records are written by the agent that creates and drops the roles...
    # (for a customer workload, with its forwarded bearer on the first three)...
    **{
        f"/{_LEASES}/{method}": Access.AGENT_FOR_WORKLOAD
        for method in ("CreateLease", "UpdateLease", "ClaimLease")
    },
    f"/{_LEASES}/ListLeasesToReap": Access.AGENT,
    # ...read by the org's users, and revoked at an admin's request.
    f"/{_LEASES}/ListLeases": Access.USER,
    f"/{_LEASES}/CountLeases": Access.USER,
    f"/{_LEASES}/RevokeLeases": Access.ADMIN,
    # A connection's roles decide what minted logins may do in the customer's database:
    # every member sees them, admins change them (as they delete connections).
    f"/{_ROLES}/GetConnectionRole": Access.USER,
    f"/{_ROLES}/ListConnectionRoles": Access.USER,
    **{
        f"/{_ROLES}/{method}": Access.ADMIN
        for method in ("CreateConnectionRole", "UpdateConnectionRole", "DeleteConnectionRole")
    },
    f"/{_AUDIT}/ListAuditEvents": Access.ADMIN,
}


class ConnectionsApp:
    """The connections service's long-lived parts, opened once per process."""

    def __init__(self, config: ConnectionsConfig) -> None:
        self.config = config
        self.store = ConnectionStore(config.database_url, migration=config.migration)
        self.orchestrator = (
            OrchestratorClient(config.orchestrator_endpoint, ClientTls(ca_file=config.ca_file))
            if config.orchestrator_endpoint
            else None
        )
        if self.orchestrator is None:
            log.warning("no SEVVO_ORCHESTRATOR_ENDPOINT: connections are saved without a test")
        self.domain = ConnectionsDomain(
            self.store,
            config.keyring,
            orchestrator=self.orchestrator,
            proof_keys=(
                None if self.orchestrator is None else ProofKeyCache(self.orchestrator.proof_keys)
            ),
        )
        self.leases = LeasesDomain(self.store)
        self.roles = RolesDomain(self.store, self.domain)
        self._auth_channel: grpc.Channel | None = None

    def open(self) -> None:
        """Migrates the schema and opens the store."""
        self.store.open()

    async def aclose(self) -> None:
        """Closes the channel to the orchestrator, then everything ``close`` closes."""
        if self.orchestrator is not None:
            await self.orchestrator.close()
        self.close()

    def close(self) -> None:
        """Closes the store and the channel to auth."""
        self.store.close()
        if self._auth_channel is not None:
            self._auth_channel.close()

    def remote_verifier(self) -> TokenVerifier:
        """A verifier that learns keys and revocations from auth over TLS."""
        verifier, self._auth_channel = remote_verifier(
            self.config.auth_endpoint,
            ClientTls(ca_file=self.config.ca_file),
            refresh_seconds=self.config.refresh_seconds,
            leeway_seconds=self.config.leeway_seconds,
        )
        return verifier

    def readiness(self, verifier: TokenVerifier) -> list[ReadinessCheck]:
        """What this service needs to serve: its database, and auth's public keys in
        ``verifier``. Its keyring needs no check: configuration refuses to start without
        a valid one."""
        return [database_check(self.store), verification_keys_check(verifier)]

    def spec(self) -> ServerSpec:
        """The services connections adds to a gRPC server."""

        def register(server: grpc.aio.Server) -> None:
            connections_pb2_grpc.add_ConnectionServiceServicer_to_server(
                ConnectionServicer(self.domain), server
            )
            connections_pb2_grpc.add_ConnectionCredentialServiceServicer_to_server(
                CredentialServicer(self.domain), server
            )
            connections_pb2_grpc.add_LeaseServiceServicer_to_server(
                LeaseServicer(self.leases), server
            )
            connections_pb2_grpc.add_ConnectionRoleServiceServicer_to_server(
                ConnectionRoleServicer(self.roles), server
            )
            audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(self.store), server)

        return ServerSpec(
            name="connections",
            register=register,
            service_names=[_CONNECTIONS, _CREDENTIALS, _LEASES, _ROLES, _AUDIT],
            access=ACCESS,
        )


async def serve(config: ConnectionsConfig) -> None:
    """Runs connections until SIGINT or SIGTERM, then drains in-flight calls."""
    app = ConnectionsApp(config)
    await asyncio.to_thread(app.open)
    verifier = app.remote_verifier()
    verifier.start()
    server, port, health = await start_service(
        app.spec(),
        verifier=verifier,
        checks=app.readiness(verifier),
        tls=config.tls,
        host=config.host,
        port=config.port,
        settings=config.health,
    )
    log.info("connections serving", port=port)
    await run_until_signalled(server, health, drain=config.health.drain_seconds)
    verifier.stop()
    await app.aclose()
