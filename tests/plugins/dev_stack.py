"""pytest plugin: the whole system from the dev launcher, shared by the end-to-end tests.

One stack per test process (control-plane Postgres, Temporal, the three services, the TLS proxy
in front of Temporal), shared by the end-to-end modules; each test makes its own orgs and starts
real ``python -m agent`` processes for them, so tests never share a tenant.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from devstack.agent_process import AgentProcess
from devstack.process_stack import ReplicasBeside
from devstack.processes import free_port
from devstack.source_db import SourceDatabase
from devstack.stack import RunningStack, StackSettings, start_stack
from sevvo.auth.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    deployments_pb2,
    deployments_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.connections.v1 import connections_pb2_grpc as cpb_grpc
from sevvo.orchestrator.v1 import models_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc
from sevvo.runtime.grpc_client import ClientTls, secure_channel
from tests.plugins.auth_stack import PASSWORD, BackgroundLoop

TEST_TIMEOUT_SECONDS = 45
REAPER_SECONDS = 2.0


@dataclass
class Tenant:
    """An org with a signed-in admin, one deployment and (usually) its running agent."""

    org_id: str
    admin_token: str
    deployment_id: str
    deployment_token: str
    agent: AgentProcess | None = None
    # The admin signs in with this email and auth_stack.PASSWORD (the console's tests do).
    admin_email: str = ""


@dataclass
class EndToEnd:
    """The running system and ways to call it as users and agents do."""

    stack: RunningStack
    _channels: list[grpc.Channel]

    def _channel(self, bearer: str | None) -> grpc.Channel:
        channel = secure_channel(
            self.stack.grpc_target,
            ClientTls(self.stack.pki.ca_cert),
            (lambda: bearer) if bearer else None,
        )
        self._channels.append(channel)
        return channel

    def connections(self, bearer: str) -> cpb_grpc.ConnectionServiceStub:
        """ConnectionService as the given caller."""
        return cpb_grpc.ConnectionServiceStub(self._channel(bearer))

    def orchestrator(self, bearer: str) -> orchestrator_pb2_grpc.OrchestratorServiceStub:
        """OrchestratorService as the given caller."""
        return orchestrator_pb2_grpc.OrchestratorServiceStub(self._channel(bearer))

    def models(self, bearer: str) -> models_pb2_grpc.ModelServiceStub:
        """ModelService as the given caller."""
        return models_pb2_grpc.ModelServiceStub(self._channel(bearer))

    def finished(
        self, bearer: str, run: orchestrator_pb2.Run, timeout: float = 120.0
    ) -> orchestrator_pb2.Run:
        """The run (as work starts return it, still running) once WaitRun says it ended."""
        stub = self.orchestrator(bearer)
        give_up = time.monotonic() + timeout
        while run.state == orchestrator_pb2.RUN_STATE_RUNNING:
            assert time.monotonic() < give_up, f"run {run.id} still running after {timeout} s"
            run = stub.WaitRun(orchestrator_pb2.WaitRunRequest(id=run.id), timeout=65)
        return run

    def deployments(self, bearer: str) -> deployments_pb2_grpc.DeploymentServiceStub:
        """DeploymentService as the given caller."""
        return deployments_pb2_grpc.DeploymentServiceStub(self._channel(bearer))

    def new_tenant(self, *, start_agent: bool = True, file_roots: str = "") -> Tenant:
        """A new org and admin, a deployment, and (by default) its agent polling, allowed to
        write under ``file_roots`` (SEVVO_AGENT_FILE_ROOTS)."""
        name = f"org-{uuid.uuid4().hex[:8]}"
        email = f"admin@{name}.example"
        self.stack.auth.domain.create_org_with_admin(name, email, PASSWORD)
        signed_in = auth_pb2_grpc.AuthServiceStub(self._channel(None)).SignIn(
            auth_pb2.SignInRequest(email=email, password=PASSWORD)
        )
        created = self.deployments(signed_in.session_token).CreateDeployment(
            deployments_pb2.CreateDeploymentRequest(display_name=f"{name}-agent")
        )
        tenant = Tenant(
            org_id=signed_in.org_id,
            admin_token=signed_in.session_token,
            deployment_id=created.deployment.id,
            deployment_token=created.deployment_token,
            admin_email=email,
        )
        if start_agent:
            tenant.agent = self.start_agent(tenant, file_roots=file_roots)
        return tenant

    def new_member(self, tenant: Tenant) -> str:
        """A new member (not admin) of the tenant's org, signed in; returns their session."""
        email = f"member-{uuid.uuid4().hex[:8]}@{tenant.org_id[:8]}.example"
        users_pb2_grpc.UserServiceStub(self._channel(tenant.admin_token)).CreateUser(
            users_pb2.CreateUserRequest(email=email, password=PASSWORD)
        )
        signed_in = auth_pb2_grpc.AuthServiceStub(self._channel(None)).SignIn(
            auth_pb2.SignInRequest(email=email, password=PASSWORD)
        )
        return str(signed_in.session_token)

    def start_agent(
        self, tenant: Tenant, *, wait: bool = True, file_roots: str = ""
    ) -> AgentProcess:
        """Starts (or restarts) the tenant's agent as a separate process."""
        return self.stack.start_agent(
            tenant.deployment_token,
            name=f"agent-{tenant.org_id[:8]}",
            wait=wait,
            reaper_seconds=REAPER_SECONDS,
            file_roots=file_roots,
        )

    @staticmethod
    def fields(
        source: SourceDatabase,
        *,
        password: str | None = None,
        ssl: cpb.SslMode = cpb.SSL_MODE_REQUIRE,
        port: int | None = None,
    ) -> cpb.PostgresFields:
        """The connection form for a source database (see tests.plugins.source_db)."""
        return cpb.PostgresFields(
            host="localhost",
            port=port if port is not None else source.port,
            database=source.database,
            username=source.reader,
            password=password if password is not None else source.reader_password,
            ssl_mode=ssl,
        )

    @staticmethod
    def dynamic(
        source: SourceDatabase,
        *,
        privileged: str,
        privileged_password: str,
        group: str,
        ttl: int = 300,
        max_ttl: int = 900,
        creation: tuple[str, ...] = (),
    ) -> cpb.PostgresDynamic:
        """The dynamic-connection form for a source database and its privileged role."""
        return cpb.PostgresDynamic(
            host="localhost",
            port=source.port,
            database=source.database,
            ssl_mode=cpb.SSL_MODE_REQUIRE,
            privileged_username=privileged,
            privileged_password=privileged_password,
            default_ttl_seconds=ttl,
            max_ttl_seconds=max_ttl,
            group_role=group,
            creation_statements=creation,
        )


# SEVVO_E2E_REPLICAS=2 (``make test-replicas``) runs the end-to-end tests against two
# replicas of each service: the in-process stack and a process of each service beside it,
# balanced by the router, which the services also dial for each other.
REPLICAS_VARIABLE = "SEVVO_E2E_REPLICAS"
_SERVICE_SETTINGS = {
    "SEVVO_CREDENTIAL_TEST_TIMEOUT_SECONDS": str(TEST_TIMEOUT_SECONDS),
    "SEVVO_TOKEN_REFRESH_SECONDS": "0.5",
    "SEVVO_ORCHESTRATOR_RECONCILE_SECONDS": "1",
}


def _e2e_replicas() -> int:
    value = os.environ.get(REPLICAS_VARIABLE, "1").strip() or "1"
    if value not in ("1", "2"):
        raise pytest.UsageError(f"{REPLICAS_VARIABLE} must be 1 or 2, not {value!r}")
    return int(value)


@pytest.fixture(scope="session")
def e2e_stack(background_loop: BackgroundLoop) -> Iterator[RunningStack]:
    """The whole system from the dev launcher (no dev agent), one per test process.

    Starting and stopping it costs seconds, so every end-to-end module of a worker shares it;
    tests never share a tenant (each makes its own orgs), and ``e2e`` stops the agents a
    module started when the module ends. With SEVVO_E2E_REPLICAS=2, ``grpc_target`` is the
    router in front of two replicas of each service (see above).
    """
    env = {**os.environ, **_SERVICE_SETTINGS}
    env.pop("SEVVO_DATABASE_URL", None)
    replicated = _e2e_replicas() == 2
    # The stack's port is chosen free and bound only after the services are configured with
    # it (connections dials the orchestrator on it), so another process can take it first.
    # Every end-to-end test of this worker stands on this one stack: choose again.
    for attempt in range(1, 4):
        state = Path(tempfile.mkdtemp(prefix="sevvo-e2e-"))
        port = free_port() if replicated else 0
        beside = (
            ReplicasBeside(state, in_process_port=port, service_env=_SERVICE_SETTINGS)
            if replicated
            else None
        )
        settings = StackSettings(
            state_dir=state,
            grpc_port=port,
            database_url=None,
            temporal_address=None,
            durable=False,
            start_agent=False,
            peer_target=beside.grpc_target if beside is not None else None,
        )
        try:
            if beside is not None:
                beside.start_router()
            stack = background_loop.run(start_stack(settings, env), timeout=120)
            break
        except RuntimeError as exc:
            if beside is not None:
                beside.stop()
            shutil.rmtree(state, ignore_errors=True)
            if attempt == 3 or "Failed to bind" not in str(exc):
                raise
    try:
        if beside is not None:
            beside.start_services(stack.database_url, stack.temporal_address)
            stack.grpc_target = beside.grpc_target
        yield stack
        if beside is not None:
            # Else the run only looked replicated: each process replica must have served.
            idle = [name for name, count in beside.calls_served().items() if not count]
            assert not idle, f"these replicas served no call through the router: {idle}"
    finally:
        background_loop.run(stack.stop(), timeout=120)
        if beside is not None:
            beside.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def e2e(e2e_stack: RunningStack) -> Iterator[EndToEnd]:
    """The worker's whole system, as one module uses it.

    At the module's end its channels close and the agents it started stop, so no agent
    process outlives the module that needs it.
    """
    first_agent = len(e2e_stack.agents)
    harness = EndToEnd(e2e_stack, [])
    try:
        yield harness
    finally:
        for channel in harness._channels:
            channel.close()
        started = e2e_stack.agents[first_agent:]
        del e2e_stack.agents[first_agent:]
        with ThreadPoolExecutor(max_workers=max(1, len(started))) as pool:
            list(pool.map(AgentProcess.stop, started))
