"""The console's calls to the services: one TLS channel, the signed-in user's token on each.

The channel is shared by every request; the bearer comes from a context variable that the
session middleware sets for the request being served, so a page calls a stub as if it were
the user, and a request without a session calls with no token at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from sevvo.audit.v1 import audit_pb2_grpc
from sevvo.auth.v1 import auth_pb2_grpc, deployments_pb2_grpc, users_pb2_grpc
from sevvo.connections.v1 import connections_pb2_grpc
from sevvo.orchestrator.v1 import models_pb2_grpc, orchestrator_pb2_grpc
from sevvo.runtime.grpc_client import ClientTls, secure_aio_channel

_bearer: ContextVar[str | None] = ContextVar("sevvo_console_bearer", default=None)


@contextmanager
def acting_as(token: str | None) -> Iterator[None]:
    """Calls made inside the block carry ``token`` (a user's session) as their bearer."""
    reset = _bearer.set(token)
    try:
        yield
    finally:
        _bearer.reset(reset)


@dataclass
class Backend:
    """A stub per service on one asyncio channel to the control plane's gRPC endpoint."""

    channel: grpc.aio.Channel
    call_timeout: float
    agent_timeout: float
    auth: auth_pb2_grpc.AuthServiceStub = field(init=False)
    users: users_pb2_grpc.UserServiceStub = field(init=False)
    deployments: deployments_pb2_grpc.DeploymentServiceStub = field(init=False)
    connections: connections_pb2_grpc.ConnectionServiceStub = field(init=False)
    leases: connections_pb2_grpc.LeaseServiceStub = field(init=False)
    connection_roles: connections_pb2_grpc.ConnectionRoleServiceStub = field(init=False)
    orchestrator: orchestrator_pb2_grpc.OrchestratorServiceStub = field(init=False)
    models: models_pb2_grpc.ModelServiceStub = field(init=False)
    audit: audit_pb2_grpc.AuditServiceStub = field(init=False)

    def __post_init__(self) -> None:
        self.auth = auth_pb2_grpc.AuthServiceStub(self.channel)
        self.users = users_pb2_grpc.UserServiceStub(self.channel)
        self.deployments = deployments_pb2_grpc.DeploymentServiceStub(self.channel)
        self.connections = connections_pb2_grpc.ConnectionServiceStub(self.channel)
        self.leases = connections_pb2_grpc.LeaseServiceStub(self.channel)
        self.connection_roles = connections_pb2_grpc.ConnectionRoleServiceStub(self.channel)
        self.orchestrator = orchestrator_pb2_grpc.OrchestratorServiceStub(self.channel)
        self.models = models_pb2_grpc.ModelServiceStub(self.channel)
        self.audit = audit_pb2_grpc.AuditServiceStub(self.channel)

    @classmethod
    def connect(
        cls,
        endpoint: str,
        ca_file: Path | None,
        *,
        call_timeout: float = 30.0,
        agent_timeout: float = 120.0,
    ) -> Backend:
        """A backend on a new channel to ``endpoint``, trusting ``ca_file`` (None: system)."""
        tls = ClientTls(ca_file=ca_file)
        channel = secure_aio_channel(endpoint, tls, _bearer.get)
        return cls(channel, call_timeout, agent_timeout)

    async def close(self) -> None:
        """Closes the channel; calls in flight are cancelled."""
        await self.channel.close()
