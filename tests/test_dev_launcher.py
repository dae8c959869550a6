"""The `make dev` launcher: starts the whole stack on loopback and stops it without leftovers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.processes import free_port
from sevvo.auth.v1 import auth_pb2, auth_pb2_grpc
from sevvo.runtime.grpc_client import ClientTls, secure_channel

ROOT = Path(__file__).resolve().parent.parent


def _wait_for_banner(proc: subprocess.Popen[str], lines: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Press Ctrl-C to stop." in line:
            return
    raise AssertionError("launcher did not come up:\n" + "".join(lines[-30:]))


def _pids(lines: list[str]) -> dict[str, int]:
    found = {}
    for line in lines:
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") in {
                "devstack.postgres.started",
                "devstack.temporal.started",
                "devstack.agent.started",
            }:
                found[event["event"].split(".")[1]] = int(event["pid"])
    return found


@pytest.fixture
def state_dir() -> Path:
    """A state directory under /tmp (short enough for Postgres's unix socket path)."""
    return Path(tempfile.mkdtemp(prefix="sevvo-dev-"))


def test_launcher_serves_and_stops_cleanly_on_ctrl_c(state_dir: Path) -> None:
    """`python -m devstack` serves over TLS with an agent polling; SIGINT leaves nothing behind."""
    port = free_port()
    env = {
        **os.environ,
        "SEVVO_STATE_DIR": str(state_dir),
        "SEVVO_GRPC_PORT": str(port),
        "SEVVO_LOG_LEVEL": "info",
    }
    env.pop("SEVVO_DATABASE_URL", None)
    env.pop("SEVVO_TEMPORAL_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack"],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines: list[str] = []
    try:
        _wait_for_banner(proc, lines)
        children = _pids(lines)
        assert set(children) == {"postgres", "temporal", "agent"}
        agent_log = (state_dir / "dev-agent.log").read_text()
        assert "agent polling" in agent_log
        ca = ClientTls(ca_file=state_dir / "pki" / "ca.crt")
        channel = secure_channel(f"localhost:{port}", ca)
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="sevvo.auth.v1.AuthService"), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        password = (state_dir / "admin-password").read_text().strip()
        assert (state_dir / "admin-password").stat().st_mode & 0o077 == 0
        signed_in = auth_pb2_grpc.AuthServiceStub(channel).SignIn(
            auth_pb2.SignInRequest(email="admin@sevvo.dev", password=password), timeout=5
        )
        assert signed_in.session_token
        with pytest.raises(grpc.RpcError):
            # Plaintext is refused: the port speaks TLS only.
            health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}")).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        channel.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in children.values()):
            time.sleep(0.1)
        assert not [name for name, pid in children.items() if psutil.pid_exists(pid)]
        assert password not in "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_launcher_reports_a_bad_variable_by_name(state_dir: Path) -> None:
    """A malformed setting stops the launcher at once with the variable's name."""
    env = {**os.environ, "SEVVO_STATE_DIR": str(state_dir), "SEVVO_GRPC_PORT": "seventy"}
    result = subprocess.run(
        [sys.executable, "-m", "devstack"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "SEVVO_GRPC_PORT" in result.stderr
