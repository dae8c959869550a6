"""The agent fails safe: it stops polling once it cannot prove it is still authorised.

A real ``python -m agent`` polls a real Temporal dev server (behind the TLS proxy) while a
small control plane on loopback TLS answers its AuthService and PayloadKeyService calls as
each test scripts: it is a gRPC *server* implementing the stubs, not a mock of gRPC.
"""

from __future__ import annotations

import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from agent.worker import EXIT_UNAUTHORISED
from devstack.agent_process import AgentProcess, AgentSettings
from devstack.pki import DevPki
from devstack.temporal import TemporalDevServer
from devstack.tls_proxy import ThreadedTlsProxy
from sevvo.auth.v1 import auth_pb2, auth_pb2_grpc
from sevvo.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from sevvo.runtime import deployment_token, temporal
from sevvo.runtime.files import write_private_file

ORG_ID = "7d1f0c2a-0000-4000-8000-00000000abcd"
DEPLOYMENT_ID = "7d1f0c2a-0000-4000-8000-00000000dcba"
CHECK_SECONDS = 1.0


@dataclass
class Script:
    """What the control plane answers; tests change it while the agent runs."""

    check_error: grpc.StatusCode | None = None
    exchange_error: grpc.StatusCode | None = None
    bearer_lifetime: float = 300.0
    # The namespace the exchange names; empty: the agent computes its org's.
    temporal_namespace: str = ""
    expiries: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Auth(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, script: Script) -> None:
        self._script = script

    def ExchangeDeploymentToken(
        self, request: auth_pb2.ExchangeDeploymentTokenRequest, context: grpc.ServicerContext
    ) -> auth_pb2.ExchangeDeploymentTokenResponse:
        with self._script.lock:
            if self._script.exchange_error is not None:
                context.abort(self._script.exchange_error, "scripted")
            expiry = time.time() + self._script.bearer_lifetime
            self._script.expiries.append(expiry)
        response = auth_pb2.ExchangeDeploymentTokenResponse(
            bearer_token=f"bearer-{secrets.token_hex(8)}",
            org_id=ORG_ID,
            deployment_id=DEPLOYMENT_ID,
            temporal_namespace=self._script.temporal_namespace,
        )
        response.expire_time.FromDatetime(datetime.fromtimestamp(expiry, UTC))
        return response

    def GetCaller(
        self, request: auth_pb2.GetCallerRequest, context: grpc.ServicerContext
    ) -> auth_pb2.GetCallerResponse:
        if self._script.check_error is not None:
            context.abort(self._script.check_error, "scripted")
        return auth_pb2.GetCallerResponse(
            kind=auth_pb2.PRINCIPAL_KIND_AGENT, org_id=ORG_ID, subject_id=DEPLOYMENT_ID
        )


class _PayloadKeys(orchestrator_pb2_grpc.PayloadKeyServiceServicer):
    key = secrets.token_bytes(32)

    def GetPayloadKeys(
        self, request: orchestrator_pb2.GetPayloadKeysRequest, context: grpc.ServicerContext
    ) -> orchestrator_pb2.GetPayloadKeysResponse:
        return orchestrator_pb2.GetPayloadKeysResponse(
            keys=[orchestrator_pb2.PayloadKey(key_id="pk-test", key=self.key)],
            current_key_id="pk-test",
        )


@pytest.fixture(scope="module")
def temporal_over_tls(dev_pki: DevPki) -> Iterator[str]:
    """A Temporal dev server reachable over TLS, as the agent requires."""
    # The org's namespace, as the orchestrator registers it when an agent fetches its keys.
    with TemporalDevServer(namespaces=[temporal.namespace_for(ORG_ID)]) as server:
        host, _, port = server.address.rpartition(":")
        with ThreadedTlsProxy((host, int(port)), dev_pki.server_cert, dev_pki.server_key) as proxy:
            yield f"localhost:{proxy.address.rpartition(':')[2]}"


@pytest.fixture
def control_plane(dev_pki: DevPki) -> Iterator[tuple[Script, str]]:
    """The scripted control plane on loopback TLS, and its address."""
    script = Script()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    # The agent calls only the two methods _Auth implements; the rest answer UNIMPLEMENTED.
    auth_pb2_grpc.add_AuthServiceServicer_to_server(_Auth(script), server)  # type: ignore[abstract]
    # The agent only fetches keys; rotation answers UNIMPLEMENTED.
    orchestrator_pb2_grpc.add_PayloadKeyServiceServicer_to_server(
        _PayloadKeys(),  # type: ignore[abstract]
        server,
    )
    credentials = grpc.ssl_server_credentials(
        [(dev_pki.server_key.read_bytes(), dev_pki.server_cert.read_bytes())]
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield script, f"localhost:{port}"
    finally:
        server.stop(None)


@pytest.fixture
def start_agent(
    control_plane: tuple[Script, str], temporal_over_tls: str, dev_pki: DevPki, tmp_path: Path
) -> Iterator[Callable[..., AgentProcess]]:
    """Starts an agent against the scripted control plane; it checks its bearer every second."""
    started: list[AgentProcess] = []

    def start(*, wait: bool = True) -> AgentProcess:
        token = deployment_token.wrap(
            deployment_token.DeploymentCredentials(DEPLOYMENT_ID, deployment_token.new_secret())
        )
        token_file = tmp_path / "token"
        write_private_file(token_file, token)
        settings = AgentSettings(
            token_file=token_file,
            control_plane_endpoint=control_plane[1],
            temporal_address=temporal_over_tls,
            ca_file=dev_pki.ca_cert,
            bearer_check_seconds=CHECK_SECONDS,
        )
        started.append(AgentProcess(settings, tmp_path / "agent.log"))
        return started[-1].start(wait=wait)

    try:
        yield start
    finally:
        for process in started:
            process.kill()


def _running(agent: AgentProcess) -> bool:
    try:
        agent.wait(0.01)
    except subprocess.TimeoutExpired:
        return True
    return False


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
    ],
)
def test_a_refused_authorisation_check_stops_the_agent(
    control_plane: tuple[Script, str],
    start_agent: Callable[[], AgentProcess],
    code: grpc.StatusCode,
) -> None:
    """Any non-retryable answer to the check stops the agent with EXIT_UNAUTHORISED."""
    script, _ = control_plane
    agent = start_agent()
    script.check_error = code
    assert agent.wait(15) == EXIT_UNAUTHORISED
    output = agent.output()
    assert "agent stopped: authorisation lost" in output
    assert code.name in output
    assert "could not prove it is still authorised" in output


def test_a_refused_renewal_stops_the_agent(
    control_plane: tuple[Script, str], start_agent: Callable[[], AgentProcess]
) -> None:
    """A renewal answered with PERMISSION_DENIED (not a revocation) stops the agent too."""
    script, _ = control_plane
    agent = start_agent()
    with script.lock:
        script.exchange_error = grpc.StatusCode.PERMISSION_DENIED
    script.check_error = grpc.StatusCode.UNAUTHENTICATED  # The bearer is refused: renew.
    assert agent.wait(15) == EXIT_UNAUTHORISED
    assert "the control plane refused the bearer token renewal (PERMISSION_DENIED" in agent.output()


def test_a_short_outage_does_not_stop_the_agent(
    control_plane: tuple[Script, str], start_agent: Callable[[], AgentProcess]
) -> None:
    """UNAVAILABLE for a few checks, well before the bearer expires, is retried."""
    script, _ = control_plane
    agent = start_agent()
    script.check_error = grpc.StatusCode.UNAVAILABLE
    deadline = time.monotonic() + 10
    while agent.output().count("authorisation check failed; retrying") < 3:
        assert time.monotonic() < deadline, agent.output()
        time.sleep(0.1)
    script.check_error = None
    time.sleep(2 * CHECK_SECONDS)
    assert _running(agent)
    assert "authorisation lost" not in agent.output()


def test_an_unreachable_control_plane_stops_the_agent_when_its_bearer_expires(
    control_plane: tuple[Script, str], start_agent: Callable[[], AgentProcess]
) -> None:
    """Checks and renewals failing UNAVAILABLE are retried until the bearer expires, then stop."""
    script, _ = control_plane
    script.bearer_lifetime = 6.0  # Renewed every 4 s while the control plane answers.
    agent = start_agent()
    with script.lock:
        script.exchange_error = grpc.StatusCode.UNAVAILABLE
        expiry = script.expiries[-1]
    script.check_error = grpc.StatusCode.UNAVAILABLE
    time.sleep(max(expiry - 0.5 - time.time(), 0))
    assert _running(agent), agent.output()
    assert agent.wait(expiry + CHECK_SECONDS + 5 - time.time()) == EXIT_UNAUTHORISED
    assert "the bearer token expired and could not be renewed" in agent.output()


def test_an_agent_whose_namespace_is_not_registered_yet_drains_the_old_one_and_waits(
    control_plane: tuple[Script, str], start_agent: Callable[..., AgentProcess]
) -> None:
    """Before the control plane registers its org's namespace (an orchestrator not upgraded
    yet), the agent keeps running: it polls the old shared namespace and waits for its own."""
    script, _ = control_plane
    script.temporal_namespace = "sevvo-000000000000000000000000"
    agent = start_agent(wait=False)
    agent.wait_for("agent draining the old namespace", timeout=20)
    agent.wait_for("temporal namespace not ready", timeout=20)
    assert _running(agent)
    assert "agent polling" not in agent.output()
