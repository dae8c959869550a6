"""Configuration loading: typed values, secrets from files, errors that name the variable."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import pytest

from services.auth.config import AuthConfig
from services.connections.config import ConnectionsConfig
from services.orchestrator.config import OrchestratorConfig
from sevvo.runtime import config as c


@pytest.fixture
def auth_env(tmp_path: Path) -> dict[str, str]:
    """A complete, valid auth environment using mounted-file secrets."""
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_text("x")
    (tmp_path / "kek").write_text(base64.b64encode(b"k" * 32).decode())
    (tmp_path / "db").write_text("postgresql://auth:pw@db:5432/sevvo\n")
    return {
        "SEVVO_DATABASE_URL_FILE": str(tmp_path / "db"),
        "SEVVO_TLS_CERT_FILE": str(tmp_path / "tls.crt"),
        "SEVVO_TLS_KEY_FILE": str(tmp_path / "tls.key"),
        "SEVVO_AUTH_KEK_FILE": str(tmp_path / "kek"),
    }


def test_valid_environment_loads_with_defaults(auth_env: dict[str, str]) -> None:
    """Secrets come from their files; unset values take documented defaults."""
    config = AuthConfig.load(auth_env)
    assert config.database_url == "postgresql://auth:pw@db:5432/sevvo"
    assert config.key_encryption_key == b"k" * 32
    assert (config.port, config.bearer_ttl_seconds, config.leeway_seconds) == (8443, 600, 10)


def test_a_configs_repr_holds_no_secret(auth_env: dict[str, str]) -> None:
    """Printed in a log or a traceback, the config shows neither the database URL (it carries
    a password) nor a key."""
    shown = repr(AuthConfig.load(auth_env))
    assert "pw@" not in shown and "postgresql://" not in shown
    assert repr(b"k" * 32) not in shown
    for config in (ConnectionsConfig, OrchestratorConfig):
        assert "database_url" not in {f.name for f in dataclasses.fields(config) if f.repr}, (
            config.__name__
        )


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"SEVVO_DATABASE_URL_FILE": ""}, "SEVVO_DATABASE_URL"),
        ({"SEVVO_DATABASE_URL_FILE": "/nonexistent/db"}, "SEVVO_DATABASE_URL_FILE"),
        ({"SEVVO_TLS_CERT_FILE": "/nonexistent/cert"}, "SEVVO_TLS_CERT_FILE"),
        ({"SEVVO_GRPC_PORT": "70000"}, "SEVVO_GRPC_PORT"),
        ({"SEVVO_GRPC_PORT": "https"}, "SEVVO_GRPC_PORT"),
        ({"SEVVO_AUTH_BEARER_TTL_SECONDS": "3600"}, "SEVVO_AUTH_BEARER_TTL_SECONDS"),
        ({"SEVVO_AUTH_BEARER_TTL_SECONDS": "60"}, "SEVVO_AUTH_BEARER_TTL_SECONDS"),
        ({"SEVVO_TOKEN_LEEWAY_SECONDS": "31"}, "SEVVO_TOKEN_LEEWAY_SECONDS"),
        ({"SEVVO_TOKEN_REFRESH_SECONDS": "10"}, "SEVVO_TOKEN_REFRESH_SECONDS"),
        ({"SEVVO_LOG_LEVEL": "loud"}, "SEVVO_LOG_LEVEL"),
    ],
)
def test_bad_values_name_the_variable(
    auth_env: dict[str, str], change: dict[str, str], variable: str
) -> None:
    """Each missing or malformed setting fails with a message naming its variable."""
    with pytest.raises(c.ConfigError) as caught:
        AuthConfig.load({**auth_env, **change})
    assert variable in str(caught.value)


@pytest.mark.parametrize("kek", [base64.b64encode(b"short").decode(), "not base64!!"])
def test_bad_key_encryption_key_is_named_but_not_echoed(
    auth_env: dict[str, str], tmp_path: Path, kek: str
) -> None:
    """A malformed key-encryption key names the variable and does not quote the value."""
    (tmp_path / "kek").write_text(kek)
    with pytest.raises(c.ConfigError) as caught:
        AuthConfig.load(auth_env)
    assert "SEVVO_AUTH_KEK" in str(caught.value)
    assert kek not in str(caught.value)


def test_plain_variable_is_used_when_no_file_is_given(auth_env: dict[str, str]) -> None:
    """Without NAME_FILE, a secret may come from NAME itself (local use)."""
    auth_env.pop("SEVVO_DATABASE_URL_FILE")
    auth_env["SEVVO_DATABASE_URL"] = "postgresql://local/sevvo"
    assert AuthConfig.load(auth_env).database_url == "postgresql://local/sevvo"


def test_empty_secret_file_is_an_error(auth_env: dict[str, str], tmp_path: Path) -> None:
    """An empty mounted secret is reported, not silently used."""
    (tmp_path / "db").write_text("\n")
    with pytest.raises(c.ConfigError, match="SEVVO_DATABASE_URL_FILE"):
        AuthConfig.load(auth_env)


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("0", False), ("On", True)])
def test_boolean_values(raw: str, expected: bool) -> None:
    """Booleans accept the usual spellings."""
    assert c.boolean({"X": raw}, "X", default=not expected) is expected
