"""The command line's view of the control plane: one TLS channel, a stub per service.

Every service is reachable at one endpoint (the control plane's gRPC port). Calls that act
for a user carry the stored session as ``authorization: Bearer``; the session is loaded only
when such a call is made, so ``sevvo login`` and ``sevvo bootstrap`` work without one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import grpc

from cli.errors import CliError
from cli.output import Output, OutputFormat
from cli.session import Session, SessionStore
from sevvo.audit.v1 import audit_pb2_grpc
from sevvo.auth.v1 import (
    auth_pb2_grpc,
    deployments_pb2_grpc,
    users_pb2_grpc,
    workloads_pb2_grpc,
)
from sevvo.connections.v1 import connections_pb2_grpc
from sevvo.orchestrator.v1 import models_pb2_grpc, orchestrator_pb2_grpc
from sevvo.runtime.grpc_client import ClientTls, secure_channel

DEFAULT_ENDPOINT = "localhost:8443"
CALL_TIMEOUT = 30.0
"""Seconds an ordinary call may take."""
AGENT_TIMEOUT = 420.0
"""Seconds a call that waits for the agent (a test, a preview, a save with its test) may take."""


@dataclass
class Cli:
    """The global options of one invocation, and the connections made for it."""

    endpoint_option: str | None
    ca_file: Path | None
    output: Output
    sessions: SessionStore
    _channels: list[grpc.Channel] = field(default_factory=list)
    _session: Session | None = None

    @classmethod
    def create(
        cls, endpoint: str | None, ca_file: Path | None, fmt: OutputFormat, config_dir: Path
    ) -> Cli:
        """The state for one invocation."""
        return cls(endpoint, ca_file, Output(fmt), SessionStore(config_dir))

    @property
    def endpoint(self) -> str:
        """The endpoint to call: the option, else the stored session's, else the default."""
        if self.endpoint_option:
            return self.endpoint_option
        stored = self._session
        if stored is None:
            try:
                stored = self.sessions.load()
            except CliError:  # A damaged file must not keep `sevvo login` from working.
                stored = None
        return stored.endpoint if stored is not None else DEFAULT_ENDPOINT

    def session(self) -> Session:
        """The usable session for the endpoint; raises the exit-3 error when there is none."""
        if self._session is None:
            self._session = self.sessions.current(self.endpoint_option)
        return self._session

    def _channel(self, *, signed_in: bool) -> grpc.Channel:
        tls = ClientTls(ca_file=self.ca_file)
        if signed_in:
            token = self.session().session_token
            channel = secure_channel(self.endpoint, tls, lambda: token)
        else:
            channel = secure_channel(self.endpoint, tls)
        self._channels.append(channel)
        return channel

    def auth(self, *, signed_in: bool = False) -> auth_pb2_grpc.AuthServiceStub:
        """AuthService, anonymously (sign-in, bootstrap) or as the signed-in user."""
        return auth_pb2_grpc.AuthServiceStub(self._channel(signed_in=signed_in))

    def users(self) -> users_pb2_grpc.UserServiceStub:
        """UserService as the signed-in user."""
        return users_pb2_grpc.UserServiceStub(self._channel(signed_in=True))

    def deployments(self) -> deployments_pb2_grpc.DeploymentServiceStub:
        """DeploymentService as the signed-in user."""
        return deployments_pb2_grpc.DeploymentServiceStub(self._channel(signed_in=True))

    def workloads(self) -> workloads_pb2_grpc.WorkloadServiceStub:
        """WorkloadService as the signed-in user."""
        return workloads_pb2_grpc.WorkloadServiceStub(self._channel(signed_in=True))

    def connections(self) -> connections_pb2_grpc.ConnectionServiceStub:
        """ConnectionService as the signed-in user."""
        return connections_pb2_grpc.ConnectionServiceStub(self._channel(signed_in=True))

    def connection_roles(self) -> connections_pb2_grpc.ConnectionRoleServiceStub:
        """ConnectionRoleService as the signed-in user."""
        return connections_pb2_grpc.ConnectionRoleServiceStub(self._channel(signed_in=True))

    def leases(self) -> connections_pb2_grpc.LeaseServiceStub:
        """LeaseService as the signed-in user."""
        return connections_pb2_grpc.LeaseServiceStub(self._channel(signed_in=True))

    def orchestrator(self) -> orchestrator_pb2_grpc.OrchestratorServiceStub:
        """OrchestratorService as the signed-in user."""
        return orchestrator_pb2_grpc.OrchestratorServiceStub(self._channel(signed_in=True))

    def models(self) -> models_pb2_grpc.ModelServiceStub:
        """ModelService as the signed-in user."""
        return models_pb2_grpc.ModelServiceStub(self._channel(signed_in=True))

    def payload_keys(self) -> orchestrator_pb2_grpc.PayloadKeyServiceStub:
        """PayloadKeyService as the signed-in user."""
        return orchestrator_pb2_grpc.PayloadKeyServiceStub(self._channel(signed_in=True))

    def audit(self) -> audit_pb2_grpc.AuditServiceStub:
        """AuditService as the signed-in user."""
        return audit_pb2_grpc.AuditServiceStub(self._channel(signed_in=True))

    def close(self) -> None:
        """Closes every channel opened for this invocation."""
        for channel in self._channels:
            channel.close()
        self._channels.clear()
