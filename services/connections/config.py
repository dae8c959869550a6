"""The connections process's configuration, read from the environment at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sevvo.runtime import config as c
from sevvo.runtime.grpc_server import TlsFiles
from sevvo.runtime.sealing import KeySource, load_keyring

KEYRING_VARIABLE = "SEVVO_CONNECTIONS_KEYRING"


@dataclass(frozen=True)
class ConnectionsConfig:
    """Everything connections needs; built by ``load`` so tests can pass a dict."""

    # Credential-bearing: never in a repr (a config printed in a log or traceback).
    database_url: str = field(repr=False)
    tls: TlsFiles
    # Read again when its file changes (sevvo.runtime.sealing.KeyringFile).
    keyring: KeySource
    auth_endpoint: str
    ca_file: Path | None = None
    orchestrator_endpoint: str | None = None
    host: str = "0.0.0.0"  # noqa: S104 - a service in a pod listens on its pod address.
    port: int = 8443
    refresh_seconds: float = 2.0
    leeway_seconds: int = 10
    log_level: str = "INFO"
    health: c.HealthSettings = field(default_factory=c.HealthSettings)
    migration: c.MigrationSettings = field(default_factory=c.MigrationSettings)

    @classmethod
    def load(cls, env: Mapping[str, str]) -> ConnectionsConfig:
        """Reads and validates the configuration; raises ConfigError naming a bad variable."""
        return cls(
            database_url=c.required_secret(env, "SEVVO_DATABASE_URL"),
            tls=TlsFiles(
                cert=c.existing_file(env, "SEVVO_TLS_CERT_FILE"),
                key=c.existing_file(env, "SEVVO_TLS_KEY_FILE"),
            ),
            keyring=load_keyring(env, KEYRING_VARIABLE),
            auth_endpoint=c.string(env, "SEVVO_AUTH_ENDPOINT"),
            ca_file=c.optional_file(env, "SEVVO_CA_FILE"),
            # Test-before-save goes through the orchestrator; unset, saves are untested.
            orchestrator_endpoint=c.optional_string(env, "SEVVO_ORCHESTRATOR_ENDPOINT"),
            host=c.string(env, "SEVVO_GRPC_HOST", "0.0.0.0"),  # noqa: S104
            port=c.integer(env, "SEVVO_GRPC_PORT", 8443, minimum=0, maximum=65535),
            refresh_seconds=c.number(
                env, "SEVVO_TOKEN_REFRESH_SECONDS", 2.0, minimum=0.05, maximum=2.0
            ),
            leeway_seconds=c.integer(env, "SEVVO_TOKEN_LEEWAY_SECONDS", 10, minimum=0, maximum=30),
            log_level=c.log_level(env),
            health=c.health_settings(env),
            migration=c.migration_settings(env),
        )
