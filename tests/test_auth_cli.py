"""auth's command line: bootstrapping an org and rotating the signing key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from devstack.pki import DevPki
from services.auth.config import write_key_encryption_key

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def auth_env(database_url: str, dev_pki: DevPki, tmp_path: Path) -> dict[str, str]:
    """The environment a deployed auth process would get, with secrets in files."""
    write_key_encryption_key(tmp_path / "kek")
    (tmp_path / "db").write_text(database_url)
    return {
        "PATH": os.environ.get("PATH", ""),
        "SEVVO_DATABASE_URL_FILE": str(tmp_path / "db"),
        "SEVVO_TLS_CERT_FILE": str(dev_pki.server_cert),
        "SEVVO_TLS_KEY_FILE": str(dev_pki.server_key),
        "SEVVO_AUTH_KEK_FILE": str(tmp_path / "kek"),
        "SEVVO_LOG_LEVEL": "warning",
    }


def _auth(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.auth", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_create_org_bootstraps_an_admin_with_password_from_stdin(
    auth_env: dict[str, str], database_url: str
) -> None:
    """create-org stores the admin with a scrypt hash and never prints the password."""
    password = "bootstrap-password-123"
    result = _auth(
        auth_env, "create-org", "--org", "Acme", "--email", "Ada@Acme.example", stdin=password
    )
    assert result.returncode == 0, result.stderr
    assert "ada@acme.example" in result.stdout
    assert password not in result.stdout + result.stderr
    with psycopg.connect(database_url) as conn:
        row = conn.execute("select role, password_hash from auth.users").fetchone()
    assert row is not None
    assert row[0] == "admin"
    assert row[1].startswith("scrypt$")


def test_create_org_rejects_a_short_password(auth_env: dict[str, str]) -> None:
    """A weak bootstrap password fails with the rule and a non-zero exit."""
    result = _auth(auth_env, "create-org", "--org", "Acme", "--email", "a@acme.example", stdin="x")
    assert result.returncode == 1
    assert "password: must be at least 12 characters" in result.stderr


def test_rotate_signing_key_publishes_a_pending_key(
    auth_env: dict[str, str], database_url: str
) -> None:
    """rotate-signing-key adds a key that activates later and schedules the old one's end."""
    assert _auth(auth_env, "rotate-signing-key").returncode == 0
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select activates_at > now(), verify_until is not null"
            " from auth.signing_keys order by activates_at"
        ).fetchall()
    assert rows == [(False, True), (True, False)]


def test_rotate_temporal_key_publishes_a_pending_es256_key(
    auth_env: dict[str, str], database_url: str
) -> None:
    """rotate-temporal-key rotates Temporal's key set only, publishing two JWKS refreshes ahead."""
    auth_env["SEVVO_AUTH_TEMPORAL_JWKS_REFRESH_SECONDS"] = "60"
    result = _auth(auth_env, "rotate-temporal-key")
    assert result.returncode == 0, result.stderr
    assert "activates in 0:02:01" in result.stdout
    with psycopg.connect(database_url) as conn:
        temporal_keys = conn.execute(
            "select activates_at > now(), verify_until is not null"
            " from auth.temporal_signing_keys order by activates_at"
        ).fetchall()
        signing_keys = conn.execute("select count(*) from auth.signing_keys").fetchone()
    assert temporal_keys == [(False, True), (True, False)]
    assert signing_keys == (1,)


def test_missing_configuration_names_the_variable(auth_env: dict[str, str]) -> None:
    """Without a key-encryption key the command exits 2 naming SEVVO_AUTH_KEK."""
    del auth_env["SEVVO_AUTH_KEK_FILE"]
    result = _auth(auth_env, "rotate-signing-key")
    assert result.returncode == 2
    assert "SEVVO_AUTH_KEK" in result.stderr
