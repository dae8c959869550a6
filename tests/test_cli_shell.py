"""The ``sevvo`` command as a subprocess, without a control plane: version, completion and
what it says when the endpoint cannot be reached."""

from __future__ import annotations

import importlib.metadata
import os
import pty
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from devstack.pki import DevPki
from devstack.processes import free_port
from tests.cli_runner import ROOT, run_sevvo


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEVVO_", "_SEVVO_"))}
    env.update(extra)
    return env


def test_version_prints_the_installed_version() -> None:
    """--version prints the package's version and exits 0, before any session is needed."""
    result = run_sevvo(("--version",), _env(), "", timeout=60)
    assert result.code == 0
    assert result.stdout.strip() == f"sevvo {importlib.metadata.version('sevvo')}"


@pytest.mark.parametrize(
    ("words", "cword", "expected", "unexpected"),
    [
        ("sevvo conn", "1", {"connections"}, {"users"}),
        ("sevvo connections ", "2", {"create", "get", "update", "list", "delete"}, {"login"}),
        ("sevvo deployments re", "2", {"revoke"}, {"create"}),
    ],
    ids=["group", "commands", "prefix"],
)
def test_bash_completion_offers_the_commands(
    words: str, cword: str, expected: set[str], unexpected: set[str]
) -> None:
    """The completion protocol bash's script uses answers with matching commands only."""
    env = _env(_SEVVO_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=cword)
    result = run_sevvo((), env, "", timeout=60)
    assert result.code == 0
    offered = set(result.stdout.split())
    assert expected <= offered
    assert not unexpected & offered


def test_show_completion_prints_a_bash_script() -> None:
    """--show-completion bash prints the script a user sources or installs."""
    result = run_sevvo(("--show-completion", "bash"), _env(), "", timeout=60)
    assert result.code == 0
    assert "_SEVVO_COMPLETE=complete_bash" in result.stdout
    assert "complete " in result.stdout


@pytest.fixture
def untrusted_tls_endpoint(dev_pki: DevPki) -> Iterator[str]:
    """A real TLS gRPC server whose certificate the system roots do not trust."""
    server = grpc.server(ThreadPoolExecutor(max_workers=1))
    credentials = grpc.ssl_server_credentials(
        [(dev_pki.server_key.read_bytes(), dev_pki.server_cert.read_bytes())]
    )
    port = server.add_secure_port("localhost:0", credentials)
    server.start()
    try:
        yield f"localhost:{port}"
    finally:
        server.stop(None)


@pytest.fixture
def plaintext_endpoint() -> Iterator[str]:
    """A listener that answers like an HTTP server, not TLS gRPC (a wrong port)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def answer() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield f"localhost:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        listener.close()


@pytest.mark.parametrize(
    ("endpoint_kind", "sentence"),
    [
        ("untrusted", "TLS certificate is not trusted here: set --ca-file (or SEVVO_CA_FILE)"),
        ("refused", "nothing is listening at the endpoint"),
        ("plaintext", "did not answer with TLS gRPC"),
        ("unresolvable", "host name does not resolve"),
    ],
)
def test_an_unreachable_endpoint_is_one_sentence_naming_the_setting(
    request: pytest.FixtureRequest, tmp_path: Path, endpoint_kind: str, sentence: str
) -> None:
    """A transport failure prints one line that says what to set, without gRPC's C-core log
    lines or its internal error text; the exit code is 1."""
    endpoint: str
    if endpoint_kind == "untrusted":
        endpoint = request.getfixturevalue("untrusted_tls_endpoint")
    elif endpoint_kind == "plaintext":
        endpoint = request.getfixturevalue("plaintext_endpoint")
    elif endpoint_kind == "refused":
        endpoint = f"localhost:{free_port()}"
    else:
        endpoint = "sevvo-endpoint.invalid:443"
    env = _env(SEVVO_CONFIG_DIR=str(tmp_path / "config"))
    result = run_sevvo(
        ("--endpoint", endpoint, "login", "--email", "ada@example.com", "--password-stdin"),
        env,
        "not-the-password\n",
        timeout=60,
    )
    assert result.code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot reach sevvo: ")
    assert sentence in lines[0]
    assert "ssl_transport_security" not in result.stderr
    assert "failed to connect to all addresses" not in result.stderr


def test_a_url_endpoint_is_a_usage_error_with_the_fix() -> None:
    """--endpoint http://host:port/ is refused before any call, suggesting HOST:PORT."""
    result = run_sevvo(("--endpoint", "http://localhost:8443/", "whoami"), _env(), "", timeout=60)
    assert result.code == 2
    assert "try localhost:8443" in result.stderr


def _on_a_terminal(args: tuple[str, ...], env: dict[str, str]) -> str:
    """What ``sevvo args`` writes to a real terminal (a pseudo-terminal), stdout and stderr."""
    main, secondary = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", *args],
            cwd=ROOT,
            env={**env, "COLUMNS": "100", "TERM": "xterm-256color"},
            stdin=secondary,
            stdout=secondary,
            stderr=secondary,
        )
        os.close(secondary)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        process.wait(timeout=60)
    finally:
        os.close(main)
    return b"".join(chunks).decode(errors="replace")


# SGR parameters that set a colour: 30-37, 38;..., 40-47, 48;..., 90-97, 100-107.
_COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-8]|4[0-8]|9[0-7]|10[0-7])(?:;[0-9;]*)?m")


@pytest.mark.parametrize(
    "args",
    [("--help",), ("--endpoint", "http://x", "whoami"), ("--endpoint", "localhost:1", "whoami")],
    ids=["help", "usage-error", "error"],
)
def test_no_color_turns_every_colour_off_on_a_terminal(args: tuple[str, ...]) -> None:
    """With NO_COLOR set, nothing the command writes to a terminal is coloured (help, usage
    panels, errors); without it, the same output is."""
    env = _env()
    env.pop("NO_COLOR", None)
    assert _COLOUR.search(_on_a_terminal(args, env))
    assert not _COLOUR.search(_on_a_terminal(args, {**env, "NO_COLOR": "1"}))
