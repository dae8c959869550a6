"""The `make dev` launcher: starts the whole stack on loopback, keeps its banner on screen, and
stops without leftovers."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.launcher import (
    READY_LINE,
    DevEndpoints,
    SampleEndpoint,
    TerminalTee,
    banner,
    env_file_text,
)
from devstack.processes import free_port
from devstack.stack import DEV_CONSOLE_PORT, StackSettings
from sevvo.auth.v1 import auth_pb2, auth_pb2_grpc
from sevvo.runtime.grpc_client import ClientTls, secure_channel
from tests.dev_launcher import (
    ROOT,
    Launcher,
    launcher_env,
    running_directory,
    wait_until_gone,
)


@pytest.fixture
def work_dir() -> Iterator[Path]:
    """A directory under /tmp (short enough for Postgres's unix socket path) to run in."""
    with running_directory("sevvo-dev-") as work:
        yield work


def test_launcher_at_warning_level_serves_and_stops_cleanly_on_ctrl_c(work_dir: Path) -> None:
    """With SEVVO_LOG_LEVEL=warning (a documented value) `python -m devstack` still comes up
    with its agent polling, serves over TLS only, shows its banner again on Enter, and SIGINT
    leaves nothing behind."""
    port = free_port()
    env = launcher_env(
        SEVVO_GRPC_PORT=str(port), SEVVO_LOG_LEVEL="warning", SEVVO_DEV_SAMPLE_DB="false"
    )
    state = work_dir / ".dev"
    with Launcher(work_dir, env, keyboard=True) as launcher:
        launcher.wait_until_up(timeout=90)
        children = launcher.descendants()
        names = sorted({p.name() for p in children})
        assert "postgres" in names
        assert "temporal" in names
        # The agent logs nothing at warning level; its ready file says it polls.
        assert (state / "dev-agent.log.ready").read_text().startswith("polling tenant-")
        ca = ClientTls(ca_file=state / "pki" / "ca.crt")
        channel = secure_channel(f"localhost:{port}", ca)
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="sevvo.auth.v1.AuthService"), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        password = (state / "admin-password").read_text().strip()
        assert (state / "admin-password").stat().st_mode & 0o077 == 0
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
        # The web console, in the same process, over HTTPS with the dev CA's certificate.
        console = re.search(r"web console +(https://localhost:\d+) ", launcher.output)
        assert console is not None, launcher.output
        trusting_dev_ca = ssl.create_default_context(cafile=str(state / "pki" / "ca.crt"))
        with urllib.request.urlopen(
            f"{console.group(1)}/healthz", context=trusting_dev_ca, timeout=5
        ) as answer:
            assert answer.status == 200
        launcher.press_enter()
        deadline = time.monotonic() + 10
        while launcher.output.count(READY_LINE) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert launcher.output.count(READY_LINE) == 2
        assert launcher.stop() == 0
        assert not wait_until_gone(children)
    log = (state / "devstack.log").read_text().splitlines()
    log_levels = {json.loads(line)["level"] for line in log}
    assert log_levels <= {"warning", "error", "critical"}
    assert "sample database" not in launcher.output  # SEVVO_DEV_SAMPLE_DB=false
    assert password not in launcher.output
    assert launcher.output.rstrip().endswith("stopped.")


@pytest.mark.parametrize(
    ("variable", "value"), [("SEVVO_GRPC_PORT", "seventy"), ("SEVVO_LOG_LEVEL", "loud")]
)
def test_launcher_reports_a_bad_variable_by_name(work_dir: Path, variable: str, value: str) -> None:
    """A malformed setting stops the launcher at once with the variable's name."""
    env = launcher_env(SEVVO_STATE_DIR=str(work_dir / ".dev"), **{variable: value})
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
    assert variable in result.stderr


def test_stack_settings_start_the_console_on_8444_unless_told_not_to() -> None:
    """`make dev` serves the console on 8444 by default; SEVVO_DEV_CONSOLE_PORT moves it and
    SEVVO_DEV_CONSOLE=false leaves it out (the tests' stacks never start one)."""
    state = Path("/srv/dev")
    assert StackSettings.load({}, state).console_port == DEV_CONSOLE_PORT == 8444
    assert StackSettings.load({"SEVVO_DEV_CONSOLE_PORT": "9444"}, state).console_port == 9444
    assert StackSettings.load({"SEVVO_DEV_CONSOLE": "false"}, state).console_port is None
    assert StackSettings(state, 0, None, None).console_port is None


def _endpoints(state: Path) -> DevEndpoints:
    return DevEndpoints(
        state_dir=state,
        grpc_target="localhost:8443",
        ca_file=state / "pki" / "ca.crt",
        temporal_tls_address="localhost:40001",
        temporal_client_cert=state / "pki" / "client.crt",
        temporal_client_key=state / "pki" / "client.key",
        admin_email="admin@sevvo.dev",
        admin_password_file=state / "admin-password",
        bootstrap_token_file=state / "bootstrap-token",
        log_file=state / "devstack.log",
        agent_logs=(state / "dev-agent.log",),
        venv_bin=Path("/opt/my venv/bin"),
        sample=SampleEndpoint(
            "localhost", 54321, "shop", (("sevvo_reader", state / "shop" / "r-password"),)
        ),
    )


def test_banner_shows_the_tls_temporal_proxy_and_the_export_lines_last() -> None:
    """The banner names the mTLS proxy (not the plaintext dev server) and ends with the
    lines to paste, then how to stop."""
    text = banner(_endpoints(Path("/srv/dev")), interactive=False)
    assert "localhost:40001" in text
    assert "client certificate /srv/dev/pki/client.crt" in text
    lines = text.rstrip().splitlines()
    assert lines[-1] == READY_LINE
    assert "  export SEVVO_ENDPOINT=localhost:8443" in lines
    assert "  export SEVVO_DEV_SHOP_PORT=54321" in lines
    assert "Press Enter" in banner(_endpoints(Path("/srv/dev")), interactive=True)


def test_banner_leads_with_the_console_and_its_sign_in() -> None:
    """The console's URL comes first, with who signs in and where the password is."""
    endpoints = dataclasses.replace(
        _endpoints(Path("/srv/dev")), console_url="https://localhost:8444"
    )
    text = banner(endpoints, interactive=False)
    first_row = text.split("sevvo dev stack is up\n\n", 1)[1].splitlines()[0]
    assert "https://localhost:8444" in first_row
    assert "admin@sevvo.dev" in first_row
    assert "/srv/dev/admin-password" in first_row
    assert "web console" not in banner(_endpoints(Path("/srv/dev")), interactive=False)


def test_env_file_sets_the_cli_variables_in_a_posix_shell(tmp_path: Path) -> None:
    """`. .dev/env` in sh exports the endpoint, the CA file, the sample port and PATH, even
    with a space in a path, and nothing the launcher itself would read as a setting."""
    state = tmp_path / "with space" / ".dev"
    env_file = tmp_path / "env"
    env_file.write_text(env_file_text(_endpoints(state)))
    shown = subprocess.run(
        ["sh", "-c", f'. "{env_file}" && env'],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert "SEVVO_ENDPOINT=localhost:8443" in shown
    assert f"SEVVO_CA_FILE={state}/pki/ca.crt" in shown
    assert "SEVVO_DEV_SHOP_PORT=54321" in shown
    assert "PATH=/opt/my venv/bin:/usr/bin:/bin" in shown
    assert not [line for line in shown if line.startswith("SEVVO_TEMPORAL")]


def test_terminal_shows_warnings_only_and_the_log_file_gets_everything(tmp_path: Path) -> None:
    """Info lines go to the log file alone; a warning also reaches the terminal, in short."""
    log_file, terminal = io.StringIO(), io.StringIO()
    tee = TerminalTee(log_file, terminal, tmp_path / "devstack.log")
    info = json.dumps({"event": "rpc", "level": "info"})
    warning = json.dumps({"event": "devstack.sample_db.port_taken", "level": "warning"})
    tee.write(info + "\n")
    tee.write(warning + "\n")
    tee.write("not json\n")
    assert log_file.getvalue() == f"{info}\n{warning}\nnot json\n"
    assert terminal.getvalue().startswith("warning: devstack.sample_db.port_taken (details in ")
    assert terminal.getvalue().count("\n") == 1
