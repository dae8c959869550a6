"""pytest plugin: the control plane as separate OS processes (devstack.process_stack).

``process_stack`` (module scope) starts Postgres, Temporal, auth, connections, orchestrator,
the router and the Temporal TLS proxy, each its own process that a test may SIGKILL and
restart; users and agents reach the services through the router, as through a production
gateway. ``replicated_stack`` (module scope) is the same with two processes of each service
(``auth-1``, ``auth-2`` ...), balanced by the router. Tenants are created over gRPC
(BootstrapOrg with the operator's token), so the test process holds no service code.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from devstack.process_stack import ProcessStack, start_process_stack
from services.auth.servicer import BOOTSTRAP_TOKEN_METADATA
from sevvo.auth.v1 import auth_pb2, auth_pb2_grpc, deployments_pb2, deployments_pb2_grpc
from sevvo.runtime.grpc_client import ClientTls, secure_channel
from tests.plugins.auth_stack import PASSWORD
from tests.plugins.dev_stack import Tenant

# The services' settings for fault injection: credential tests give up after 20 s.
SERVICE_ENV: Mapping[str, str] = {
    "SEVVO_CREDENTIAL_TEST_TIMEOUT_SECONDS": "20",
    "SEVVO_ORCHESTRATOR_RECONCILE_SECONDS": "2",
    # Work may wait this long for a busy agent; short here, so the bound below stays short.
    "SEVVO_ORCHESTRATOR_QUEUE_SECONDS": "20",
}
# Replicas: short reconciliation, so a run whose replica died is settled by another quickly.
REPLICATED_SERVICE_ENV: Mapping[str, str] = {
    **SERVICE_ENV,
    "SEVVO_ORCHESTRATOR_RECONCILE_SECONDS": "1",
}
StubT = TypeVar("StubT")
CREDENTIAL_TEST_TIMEOUT_SECONDS = float(SERVICE_ENV["SEVVO_CREDENTIAL_TEST_TIMEOUT_SECONDS"])
RECONCILE_SECONDS = float(SERVICE_ENV["SEVVO_ORCHESTRATOR_RECONCILE_SECONDS"])
QUEUE_SECONDS = float(SERVICE_ENV["SEVVO_ORCHESTRATOR_QUEUE_SECONDS"])


@dataclass
class ProcessHarness:
    """The running processes and ways to call them, through the router, as users and agents do."""

    stack: ProcessStack
    _channels: list[grpc.Channel] = field(default_factory=list)

    def channel(self, bearer: str | None = None) -> grpc.Channel:
        """A TLS channel to the router; ``bearer`` goes with every call."""
        channel = secure_channel(
            self.stack.grpc_target,
            ClientTls(self.stack.pki.ca_cert),
            (lambda: bearer) if bearer else None,
        )
        self._channels.append(channel)
        return channel

    def stub(self, stub_class: Callable[[grpc.Channel], StubT], bearer: str | None = None) -> StubT:
        """A service stub (``cpb_grpc.ConnectionServiceStub`` ...) calling as ``bearer``."""
        return stub_class(self.channel(bearer))

    def new_tenant(self, *, reaper_seconds: float = 60.0) -> Tenant:
        """A new org (bootstrapped over gRPC), its signed-in admin and its running agent.

        The agent is the stack's component ``agent-<org id prefix>``.
        """
        name = f"org-{uuid.uuid4().hex[:8]}"
        email = f"admin@{name}.example"
        auth = self.stub(auth_pb2_grpc.AuthServiceStub)
        auth.BootstrapOrg(
            auth_pb2.BootstrapOrgRequest(org_name=name, admin_email=email, admin_password=PASSWORD),
            metadata=(
                (BOOTSTRAP_TOKEN_METADATA, self.stack.bootstrap_token_file.read_text().strip()),
            ),
            timeout=30,
        )
        signed_in = auth.SignIn(auth_pb2.SignInRequest(email=email, password=PASSWORD), timeout=30)
        created = self.stub(
            deployments_pb2_grpc.DeploymentServiceStub, signed_in.session_token
        ).CreateDeployment(
            deployments_pb2.CreateDeploymentRequest(display_name=f"{name}-agent"), timeout=30
        )
        agent = self.stack.add_agent(
            f"agent-{signed_in.org_id[:8]}",
            created.deployment_token,
            reaper_seconds=reaper_seconds,
        )
        return Tenant(
            org_id=signed_in.org_id,
            admin_token=signed_in.session_token,
            deployment_id=created.deployment.id,
            deployment_token=created.deployment_token,
            agent=agent.process,
        )


@contextmanager
def _running(replicas: int, service_env: Mapping[str, str]) -> Iterator[ProcessHarness]:
    # Under /tmp, not pytest's 0700 base directory: as root, Postgres runs as another user.
    state = Path(tempfile.mkdtemp(prefix="sevvo-procs-"))
    stack = start_process_stack(state, service_env=service_env, replicas=replicas)
    harness = ProcessHarness(stack)
    try:
        yield harness
    finally:
        for channel in harness._channels:
            channel.close()
        stack.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def process_stack() -> Iterator[ProcessHarness]:
    """Every control-plane component as its own process, one stack per test module."""
    with _running(1, SERVICE_ENV) as harness:
        yield harness


@pytest.fixture(scope="module")
def replicated_stack() -> Iterator[ProcessHarness]:
    """Like process_stack, with two replicas of each service behind the router."""
    with _running(2, REPLICATED_SERVICE_ENV) as harness:
        yield harness


__all__ = [
    "CREDENTIAL_TEST_TIMEOUT_SECONDS",
    "REPLICATED_SERVICE_ENV",
    "ProcessHarness",
    "process_stack",
    "replicated_stack",
]
