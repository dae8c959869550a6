"""The console process's configuration, read from the environment at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sevvo.runtime import config as c
from sevvo.runtime.grpc_server import TlsFiles


@dataclass(frozen=True)
class ConsoleConfig:
    """Everything the console needs; built by ``load`` so tests can pass a dict."""

    # The control plane's gRPC endpoint (host:port) every service answers on.
    services_endpoint: str
    # The console's own HTTPS certificate and key (browsers only send Secure cookies there).
    tls: TlsFiles
    # The CA the services' certificates chain to; None trusts the system's roots.
    ca_file: Path | None = None
    host: str = "0.0.0.0"  # noqa: S104 - a server in a pod listens on its pod address.
    port: int = 8444
    log_level: str = "INFO"
    # Seconds an ordinary call to a service may take, and one that waits for the agent.
    call_timeout: float = 30.0
    agent_timeout: float = 120.0

    @classmethod
    def load(cls, env: Mapping[str, str]) -> ConsoleConfig:
        """Reads and validates the configuration; raises ConfigError naming a bad variable."""
        return cls(
            services_endpoint=c.string(env, "SEVVO_CONSOLE_SERVICES_ENDPOINT"),
            tls=TlsFiles(
                cert=c.existing_file(env, "SEVVO_TLS_CERT_FILE"),
                key=c.existing_file(env, "SEVVO_TLS_KEY_FILE"),
            ),
            ca_file=c.optional_file(env, "SEVVO_CA_FILE"),
            host=c.string(env, "SEVVO_CONSOLE_HOST", "0.0.0.0"),  # noqa: S104
            port=c.integer(env, "SEVVO_CONSOLE_PORT", 8444, minimum=0, maximum=65535),
            log_level=c.log_level(env),
        )
