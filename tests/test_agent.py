"""The agent as a process: configuration, TLS and mTLS to Temporal, back-off, revocation."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.config import AgentConfig
from devstack.agent_process import AgentProcess, AgentSettings
from devstack.postgres import EmbeddedPostgres
from devstack.processes import free_port
from devstack.tls_proxy import ThreadedTlsProxy
from sevvo.auth.v1 import deployments_pb2
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.runtime import deployment_token
from sevvo.runtime.config import ConfigError
from tests.plugins.dev_stack import EndToEnd
from tests.plugins.source_db import SourceTargetFactory

TOKEN = deployment_token.wrap(
    deployment_token.DeploymentCredentials(
        "0b0e7a7e-0000-4000-8000-000000000001", deployment_token.new_secret()
    )
)


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("cp.sevvo.example", "cp.sevvo.example:443"),
        ("cp.sevvo.example:8443", "cp.sevvo.example:8443"),
        ("[::1]", "[::1]:443"),
        ("[::1]:9443", "[::1]:9443"),
    ],
)
def test_endpoints_default_to_port_443(endpoint: str, expected: str) -> None:
    """The control plane and Temporal are reached on 443 unless a port is given."""
    config = AgentConfig.load(
        {
            "SEVVO_DEPLOYMENT_TOKEN": TOKEN,
            "SEVVO_CONTROL_PLANE_ENDPOINT": endpoint,
            "SEVVO_TEMPORAL_ADDRESS": endpoint,
        }
    )
    assert config.control_plane_endpoint == expected
    assert config.temporal_address == expected


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"SEVVO_DEPLOYMENT_TOKEN": ""}, "SEVVO_DEPLOYMENT_TOKEN"),
        ({"SEVVO_DEPLOYMENT_TOKEN": "not-a-token"}, "SEVVO_DEPLOYMENT_TOKEN"),
        ({"SEVVO_CONTROL_PLANE_ENDPOINT": ""}, "SEVVO_CONTROL_PLANE_ENDPOINT"),
        ({"SEVVO_CONTROL_PLANE_ENDPOINT": "cp:http"}, "SEVVO_CONTROL_PLANE_ENDPOINT"),
        ({"SEVVO_TEMPORAL_ADDRESS": "t:99999"}, "SEVVO_TEMPORAL_ADDRESS"),
        ({"SEVVO_TEMPORAL_TLS_CERT": "/nonexistent/cert"}, "SEVVO_TEMPORAL_TLS_CERT"),
    ],
)
def test_bad_configuration_names_the_variable(env: dict[str, str], variable: str) -> None:
    """Each bad setting fails at start naming its variable and never echoing the token."""
    base = {
        "SEVVO_DEPLOYMENT_TOKEN": TOKEN,
        "SEVVO_CONTROL_PLANE_ENDPOINT": "cp.example",
        "SEVVO_TEMPORAL_ADDRESS": "temporal.example",
    }
    with pytest.raises(ConfigError) as caught:
        AgentConfig.load({**base, **env})
    assert variable in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_client_cert_without_key_is_rejected(tmp_path: Path) -> None:
    """mTLS needs both halves; one alone is a configuration error."""
    (tmp_path / "cert").write_text("x")
    with pytest.raises(ConfigError, match="SEVVO_TEMPORAL_TLS_KEY"):
        AgentConfig.load(
            {
                "SEVVO_DEPLOYMENT_TOKEN": TOKEN,
                "SEVVO_CONTROL_PLANE_ENDPOINT": "cp.example",
                "SEVVO_TEMPORAL_ADDRESS": "temporal.example",
                "SEVVO_TEMPORAL_TLS_CERT": str(tmp_path / "cert"),
            }
        )


def test_config_repr_hides_the_token() -> None:
    """The deployment token never shows in the config's repr."""
    config = AgentConfig.load(
        {
            "SEVVO_DEPLOYMENT_TOKEN": TOKEN,
            "SEVVO_CONTROL_PLANE_ENDPOINT": "cp.example",
            "SEVVO_TEMPORAL_ADDRESS": "temporal.example",
        }
    )
    assert TOKEN not in repr(config)


def _token_file(directory: Path, token: str) -> Path:
    path = directory / "token"
    path.write_text(token)
    path.chmod(0o600)
    return path


def test_agent_backs_off_while_the_control_plane_is_unreachable(
    e2e: EndToEnd, tmp_path: Path
) -> None:
    """With nothing listening on the endpoint the agent retries with growing delays, then stops."""
    settings = AgentSettings(
        token_file=_token_file(tmp_path, TOKEN),
        control_plane_endpoint=f"localhost:{free_port()}",
        temporal_address=e2e.stack.agent_temporal_address,
        ca_file=e2e.stack.pki.ca_cert,
    )
    agent = AgentProcess(settings, tmp_path / "agent.log").start(wait=False)
    try:
        deadline = time.monotonic() + 20
        while agent.output().count("control plane unreachable") < 3:
            assert time.monotonic() < deadline, agent.output()
            time.sleep(0.1)
        delays = [
            line.split('"retry_in_s": ')[1].split(",")[0]
            for line in agent.output().splitlines()
            if "control plane unreachable" in line
        ]
        assert [float(d) for d in delays[:3]] == [1.0, 2.0, 4.0]
    finally:
        agent.stop()
    assert agent.wait(5) == 0


def test_revoked_agent_exits_with_a_clear_message(e2e: EndToEnd) -> None:
    """Revoking the deployment shuts its running agent out: exit code 3 and an explanation."""
    tenant = e2e.new_tenant()
    assert tenant.agent is not None
    e2e.deployments(tenant.admin_token).RevokeDeployment(
        deployments_pb2.RevokeDeploymentRequest(id=tenant.deployment_id)
    )
    code = tenant.agent.wait(40)
    output = tenant.agent.output()
    assert code == 3, output
    assert "no longer accepts this deployment token" in output
    assert tenant.deployment_token not in output


def test_agent_works_over_plain_tls_to_temporal(
    e2e: EndToEnd,
    tls_source_pg: EmbeddedPostgres,
    source_target: SourceTargetFactory,
    tmp_path: Path,
) -> None:
    """Without a client certificate, through a TLS-only proxy, the agent runs tests too."""
    tenant = e2e.new_tenant(start_agent=False)
    host, _, port = e2e.stack.temporal_address.rpartition(":")
    pki = e2e.stack.pki
    with ThreadedTlsProxy((host, int(port)), pki.server_cert, pki.server_key) as proxy:
        settings = AgentSettings(
            token_file=_token_file(tmp_path, tenant.deployment_token),
            control_plane_endpoint=e2e.stack.grpc_target,
            temporal_address=f"localhost:{proxy.address.rpartition(':')[2]}",
            ca_file=pki.ca_cert,
        )
        agent = AgentProcess(settings, tmp_path / "agent.log").start()
        try:
            source = source_target(tls_source_pg)
            created = e2e.connections(tenant.admin_token).CreateConnection(
                cpb.CreateConnectionRequest(display_name="over-tls", fields=e2e.fields(source))
            )
            assert created.status == cpb.CONNECTION_STATUS_CONNECTED
            assert source.reader_password not in agent.output()
        finally:
            agent.stop()


def test_mtls_proxy_refuses_an_agent_without_a_client_certificate(
    e2e: EndToEnd, tmp_path: Path
) -> None:
    """Against the mTLS front of Temporal, an agent lacking a client cert never polls."""
    tenant = e2e.new_tenant(start_agent=False)
    settings = AgentSettings(
        token_file=_token_file(tmp_path, tenant.deployment_token),
        control_plane_endpoint=e2e.stack.grpc_target,
        temporal_address=e2e.stack.agent_temporal_address,
        ca_file=e2e.stack.pki.ca_cert,
    )
    agent = AgentProcess(settings, tmp_path / "agent.log").start(wait=False)
    try:
        agent.wait_for("temporal unreachable", timeout=20)
        assert "agent polling" not in agent.output()
    finally:
        agent.stop()
    assert agent.wait(5) == 0
