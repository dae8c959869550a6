"""The orchestrator process's configuration, read from the environment at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sevvo.runtime import config as c
from sevvo.runtime.grpc_server import TlsFiles
from sevvo.runtime.logs import register_secret
from sevvo.runtime.sealing import KeySource, load_keyring

KEYRING_VARIABLE = "SEVVO_ORCHESTRATOR_KEYRING"


@dataclass(frozen=True)
class OrchestratorConfig:
    """Everything the orchestrator needs; built by ``load`` so tests can pass a dict."""

    # Credential-bearing: never in a repr (a config printed in a log or traceback).
    database_url: str = field(repr=False)
    tls: TlsFiles
    # Read again when its file changes (sevvo.runtime.sealing.KeyringFile).
    keyring: KeySource
    temporal_address: str
    auth_endpoint: str
    connections_endpoint: str
    ca_file: Path | None = None
    # The namespace every org shared before namespaces per org: its runs are still settled
    # there and its rotation schedules moved out at start-up while ``temporal_drain_legacy``.
    temporal_legacy_namespace: str = "default"
    temporal_drain_legacy: bool = True
    # How long Temporal keeps a closed workflow's history in the org namespaces the
    # orchestrator registers; a superseded payload key is kept that long plus the longest run.
    temporal_retention_days: int = 3
    # The orchestrator's proof to auth's IssueTemporalToken; None sends Temporal no token
    # (the dev server enforces nothing).
    service_token: str | None = field(default=None, repr=False)
    temporal_tls: bool = False
    host: str = "0.0.0.0"  # noqa: S104 - a service in a pod listens on its pod address.
    port: int = 8443
    test_timeout_seconds: float = 60.0
    reconcile_seconds: float = 10.0
    queue_seconds: float = 300.0
    refresh_seconds: float = 2.0
    leeway_seconds: int = 10
    # How often each org's payload key rotates on schedule.
    payload_key_rotation_days: int = 30
    log_level: str = "INFO"
    health: c.HealthSettings = field(default_factory=c.HealthSettings)
    migration: c.MigrationSettings = field(default_factory=c.MigrationSettings)

    @classmethod
    def load(cls, env: Mapping[str, str]) -> OrchestratorConfig:
        """Reads and validates the configuration; raises ConfigError naming a bad variable."""
        return cls(
            database_url=c.required_secret(env, "SEVVO_DATABASE_URL"),
            tls=TlsFiles(
                cert=c.existing_file(env, "SEVVO_TLS_CERT_FILE"),
                key=c.existing_file(env, "SEVVO_TLS_KEY_FILE"),
            ),
            keyring=load_keyring(env, KEYRING_VARIABLE),
            temporal_address=c.string(env, "SEVVO_TEMPORAL_ADDRESS"),
            auth_endpoint=c.string(env, "SEVVO_AUTH_ENDPOINT"),
            connections_endpoint=c.string(env, "SEVVO_CONNECTIONS_ENDPOINT"),
            ca_file=c.optional_file(env, "SEVVO_CA_FILE"),
            # SEVVO_TEMPORAL_NAMESPACE named the shared namespace before namespaces per org.
            temporal_legacy_namespace=c.string(
                env,
                "SEVVO_TEMPORAL_LEGACY_NAMESPACE",
                c.string(env, "SEVVO_TEMPORAL_NAMESPACE", "default"),
            ),
            temporal_drain_legacy=c.boolean(env, "SEVVO_TEMPORAL_DRAIN_LEGACY", True),
            temporal_retention_days=c.integer(
                env, "SEVVO_TEMPORAL_RETENTION_DAYS", 3, minimum=1, maximum=3650
            ),
            service_token=_service_token(env),
            temporal_tls=c.boolean(env, "SEVVO_TEMPORAL_TLS", False),
            host=c.string(env, "SEVVO_GRPC_HOST", "0.0.0.0"),  # noqa: S104
            port=c.integer(env, "SEVVO_GRPC_PORT", 8443, minimum=0, maximum=65535),
            test_timeout_seconds=c.number(
                env, "SEVVO_CREDENTIAL_TEST_TIMEOUT_SECONDS", 60.0, minimum=5, maximum=600
            ),
            queue_seconds=c.number(
                env, "SEVVO_ORCHESTRATOR_QUEUE_SECONDS", 300.0, minimum=0, maximum=3600
            ),
            reconcile_seconds=c.number(
                env, "SEVVO_ORCHESTRATOR_RECONCILE_SECONDS", 10.0, minimum=0.2, maximum=300
            ),
            refresh_seconds=c.number(
                env, "SEVVO_TOKEN_REFRESH_SECONDS", 2.0, minimum=0.05, maximum=2.0
            ),
            leeway_seconds=c.integer(env, "SEVVO_TOKEN_LEEWAY_SECONDS", 10, minimum=0, maximum=30),
            payload_key_rotation_days=c.integer(
                env, "SEVVO_PAYLOAD_KEY_ROTATION_DAYS", 30, minimum=1, maximum=365
            ),
            log_level=c.log_level(env),
            health=c.health_settings(env),
            migration=c.migration_settings(env),
        )


def _service_token(env: Mapping[str, str]) -> str | None:
    """The orchestrator's proof to auth's IssueTemporalToken, kept out of every log line."""
    value = c.secret(env, "SEVVO_ORCHESTRATOR_SERVICE_TOKEN", required=False)
    if value is not None:
        register_secret(value)
    return value
