"""The connections command line: rewrap after a key-encryption-key rotation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

from sevvo.runtime.sealing import write_keyring_file
from tests.plugins.control_plane import ControlPlane

ROOT = Path(__file__).resolve().parent.parent


def test_rewrap_command_moves_every_payload_to_the_primary(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """`python -m services.connections rewrap` exits 0 once nothing is sealed under old keys;
    it needs only the database URL and the keyring (what the chart's rewrap Job mounts)."""
    org = control_plane.auth.create_org()
    for i in range(3):
        control_plane.create(org, f"c{i}", f"password-number-{i}")
    config = control_plane.app.config
    write_keyring_file(tmp_path / "keyring.json", config.keyring.current().with_new_primary("k2"))
    (tmp_path / "db").write_text(config.database_url)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SEVVO_DATABASE_URL_FILE": str(tmp_path / "db"),
        "SEVVO_CONNECTIONS_KEYRING_FILE": str(tmp_path / "keyring.json"),
        "SEVVO_LOG_LEVEL": "warning",
    }
    result = subprocess.run(
        [sys.executable, "-m", "services.connections", "rewrap"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "re-sealed 3 connections under k2" in result.stdout
    with psycopg.connect(config.database_url) as conn:
        kek_ids = conn.execute("select distinct kek_id from connections.connections").fetchall()
    assert kek_ids == [("k2",)]


def test_bad_keyring_file_names_the_variable(control_plane: ControlPlane, tmp_path: Path) -> None:
    """A malformed keyring stops the command with exit 2 naming the variable."""
    (tmp_path / "keyring.json").write_text('{"primary": "k1", "keys": {"k1": "c2hvcnQ="}}')
    config = control_plane.app.config
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SEVVO_DATABASE_URL": config.database_url,
        "SEVVO_TLS_CERT_FILE": str(config.tls.cert),
        "SEVVO_TLS_KEY_FILE": str(config.tls.key),
        "SEVVO_CONNECTIONS_KEYRING_FILE": str(tmp_path / "keyring.json"),
        "SEVVO_AUTH_ENDPOINT": control_plane.auth.target,
    }
    result = subprocess.run(
        [sys.executable, "-m", "services.connections", "rewrap"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "SEVVO_CONNECTIONS_KEYRING_FILE" in result.stderr
    assert "c2hvcnQ=" not in result.stderr
