"""Each service's production entry point (`python -m services.<name> serve`) as its own process."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.pki import DevPki
from devstack.processes import free_port
from devstack.temporal import TemporalDevServer
from services.auth.config import write_key_encryption_key
from sevvo.runtime.grpc_client import ClientTls, secure_channel
from sevvo.runtime.sealing import Keyring, write_keyring_file

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def temporal() -> Iterator[TemporalDevServer]:
    """A throwaway in-memory Temporal dev server."""
    with TemporalDevServer() as server:
        yield server


def _wait_serving(port: int, ca: Path, service: str, proc: subprocess.Popen[bytes]) -> None:
    channel = secure_channel(f"localhost:{port}", ClientTls(ca))
    deadline = time.monotonic() + 30
    try:
        while True:
            assert proc.poll() is None, f"{service} exited with {proc.returncode}"
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=1
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, f"{service} never reported SERVING"
            time.sleep(0.2)
    finally:
        channel.close()


def test_each_service_serves_over_tls_and_stops_on_sigterm(
    database_url: str, dev_pki: DevPki, temporal: TemporalDevServer, tmp_path: Path
) -> None:
    """Each service starts from its env, reports SERVING over TLS and exits 0 on SIGTERM."""
    write_key_encryption_key(tmp_path / "kek")
    write_keyring_file(tmp_path / "connections.json", Keyring.generate())
    write_keyring_file(tmp_path / "orchestrator.json", Keyring.generate())
    (tmp_path / "db").write_text(database_url)
    ports = {name: free_port() for name in ("auth", "connections", "orchestrator")}
    common = {
        "PATH": os.environ.get("PATH", ""),
        "SEVVO_DATABASE_URL_FILE": str(tmp_path / "db"),
        "SEVVO_TLS_CERT_FILE": str(dev_pki.server_cert),
        "SEVVO_TLS_KEY_FILE": str(dev_pki.server_key),
        "SEVVO_CA_FILE": str(dev_pki.ca_cert),
        "SEVVO_GRPC_HOST": "127.0.0.1",
        "SEVVO_AUTH_ENDPOINT": f"localhost:{ports['auth']}",
        "SEVVO_LOG_LEVEL": "warning",
    }
    extra = {
        "auth": {"SEVVO_AUTH_KEK_FILE": str(tmp_path / "kek")},
        "connections": {
            "SEVVO_CONNECTIONS_KEYRING_FILE": str(tmp_path / "connections.json"),
            "SEVVO_ORCHESTRATOR_ENDPOINT": f"localhost:{ports['orchestrator']}",
        },
        "orchestrator": {
            "SEVVO_ORCHESTRATOR_KEYRING_FILE": str(tmp_path / "orchestrator.json"),
            "SEVVO_CONNECTIONS_ENDPOINT": f"localhost:{ports['connections']}",
            "SEVVO_TEMPORAL_ADDRESS": temporal.address,
        },
    }
    health_names = {
        "auth": "sevvo.auth.v1.AuthService",
        "connections": "sevvo.connections.v1.ConnectionService",
        "orchestrator": "sevvo.orchestrator.v1.OrchestratorService",
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in ("auth", "connections", "orchestrator"):
            env = {
                **common,
                **extra[name],
                "SEVVO_GRPC_PORT": str(ports[name]),
                "SEVVO_AUTH_JWKS_PORT": "0",
            }
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}", "serve"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            _wait_serving(ports[name], dev_pki.ca_cert, health_names[name], procs[name])
        for name, proc in procs.items():
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0, name
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()


def _wait_https(url: str, ca: Path, proc: subprocess.Popen[bytes]) -> int:
    """The status of GET ``url`` once the process answers it over TLS (trusting ``ca``)."""
    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, f"the console exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, context=context, timeout=2) as answer:
                return int(answer.status)
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.2)


def test_console_serves_https_from_its_env_and_stops_on_sigterm(dev_pki: DevPki) -> None:
    """`python -m console` (the chart's command) starts from its env alone, answers /healthz
    over HTTPS with its certificate (no service needs to be up for that), and exits 0 on
    SIGTERM; without its configuration it exits 2 naming the variable, as the services do."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        # Nothing listens there: /healthz calls no service.
        "SEVVO_CONSOLE_SERVICES_ENDPOINT": f"localhost:{free_port()}",
        "SEVVO_TLS_CERT_FILE": str(dev_pki.server_cert),
        "SEVVO_TLS_KEY_FILE": str(dev_pki.server_key),
        "SEVVO_CA_FILE": str(dev_pki.ca_cert),
        "SEVVO_CONSOLE_HOST": "127.0.0.1",
        "SEVVO_CONSOLE_PORT": str(port),
        "SEVVO_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "console"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert _wait_https(f"https://localhost:{port}/healthz", dev_pki.ca_cert, proc) == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    unconfigured = subprocess.run(
        [sys.executable, "-m", "console"],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert unconfigured.returncode == 2
    assert "configuration error: SEVVO_CONSOLE_SERVICES_ENDPOINT" in unconfigured.stderr
