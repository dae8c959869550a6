"""The agent's configuration: a deployment token and where the control plane and Temporal are.

The agent only dials out, so everything here is an address to reach or a credential to
present; it opens no listening port.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.warm_pool import PoolSpec, parse_warm_pool
from sevvo.runtime import config as c
from sevvo.runtime.deployment_token import DeploymentCredentials, unwrap
from sevvo.runtime.errors import InvalidArgument

DEFAULT_PORT = 443


def _with_default_port(variable: str, address: str) -> str:
    """Appends :443 to a bare host; validates an explicit port."""
    if address.startswith("["):  # [IPv6]:port or [IPv6]
        host, _, rest = address.partition("]")
        port = rest.removeprefix(":")
        host += "]"
    elif address.count(":") == 1:
        host, _, port = address.partition(":")
    else:
        host, port = address, ""
    if not host or host == "[]":
        raise c.ConfigError(f"{variable} must be host or host:port, got {address!r}")
    if not port:
        return f"{host}:{DEFAULT_PORT}"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise c.ConfigError(f"{variable} has an invalid port in {address!r}")
    return f"{host}:{port}"


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent needs; built by ``load`` so tests can pass a dict."""

    deployment_token: str
    control_plane_endpoint: str
    temporal_address: str
    ca_file: Path | None = None
    temporal_tls_cert: Path | None = None
    temporal_tls_key: Path | None = None
    # The namespace every org shared before namespaces per org (the agent's own namespace
    # comes from the token exchange): work started there before the upgrade is still run
    # while ``temporal_drain_legacy``, on the same queue ``tenant-{orgId}``.
    temporal_legacy_namespace: str = "default"
    temporal_drain_legacy: bool = True
    temporal_server_name: str | None = None
    bearer_check_seconds: float = 15.0
    reaper_seconds: float = 60.0
    max_concurrent_work: int = 20
    # Written once the agent polls its org's queue and removed when it stops: readiness for
    # a supervisor (a Kubernetes exec probe, the dev stack) that does not depend on log lines.
    ready_file: Path | None = None
    log_level: str = "INFO"
    # Login roles kept minted per (connection, role) for the credential API's borrowers
    # (agent.warm_pool); empty: every borrow mints.
    warm_pool: tuple[PoolSpec, ...] = ()
    warm_pool_refill_seconds: float = 5.0

    def __repr__(self) -> str:  # The token is a secret; keep it out of any repr.
        return (
            f"AgentConfig(control_plane_endpoint={self.control_plane_endpoint!r}, "
            f"temporal_address={self.temporal_address!r})"
        )

    @property
    def credentials(self) -> DeploymentCredentials:
        """The deployment id and secret inside the token."""
        return unwrap(self.deployment_token)

    @classmethod
    def load(cls, env: Mapping[str, str]) -> AgentConfig:
        """Reads and validates the configuration; raises ConfigError naming a bad variable."""
        token = c.required_secret(env, "SEVVO_DEPLOYMENT_TOKEN")
        try:
            unwrap(token)
        except InvalidArgument:
            raise c.ConfigError(
                "SEVVO_DEPLOYMENT_TOKEN is not a sevvo deployment token (sevvo_dt_...)"
            ) from None
        cert = c.optional_file(env, "SEVVO_TEMPORAL_TLS_CERT")
        key = c.optional_file(env, "SEVVO_TEMPORAL_TLS_KEY")
        if (cert is None) != (key is None):
            raise c.ConfigError(
                "SEVVO_TEMPORAL_TLS_CERT and SEVVO_TEMPORAL_TLS_KEY must be set together"
            )
        return cls(
            deployment_token=token,
            control_plane_endpoint=_with_default_port(
                "SEVVO_CONTROL_PLANE_ENDPOINT", c.string(env, "SEVVO_CONTROL_PLANE_ENDPOINT")
            ),
            temporal_address=_with_default_port(
                "SEVVO_TEMPORAL_ADDRESS", c.string(env, "SEVVO_TEMPORAL_ADDRESS")
            ),
            ca_file=c.optional_file(env, "SEVVO_CA_FILE"),
            temporal_tls_cert=cert,
            temporal_tls_key=key,
            # SEVVO_TEMPORAL_NAMESPACE named the shared namespace before namespaces per org.
            temporal_legacy_namespace=c.string(
                env,
                "SEVVO_TEMPORAL_LEGACY_NAMESPACE",
                c.string(env, "SEVVO_TEMPORAL_NAMESPACE", "default"),
            ),
            temporal_drain_legacy=c.boolean(env, "SEVVO_TEMPORAL_DRAIN_LEGACY", True),
            temporal_server_name=c.optional_string(env, "SEVVO_TEMPORAL_SERVER_NAME"),
            # How soon a revoked deployment is noticed between bearer renewals.
            bearer_check_seconds=c.number(
                env, "SEVVO_BEARER_CHECK_SECONDS", 15.0, minimum=1, maximum=300
            ),
            # How often leftover minted roles are looked for and revoked.
            reaper_seconds=c.number(env, "SEVVO_REAPER_SECONDS", 60.0, minimum=1, maximum=3600),
            # Previews (and, separately, tests and rotations) this agent runs at once; each
            # holds a database session (two on a dynamic connection). More waits in Temporal's
            # queue, so a burst cannot exhaust the database's max_connections. Scale out with
            # replicas.
            max_concurrent_work=c.integer(
                env, "SEVVO_AGENT_MAX_CONCURRENT_WORK", 20, minimum=1, maximum=500
            ),
            ready_file=_path(c.optional_string(env, "SEVVO_AGENT_READY_FILE")),
            log_level=c.log_level(env),
            warm_pool=parse_warm_pool(
                "SEVVO_WARM_POOL", c.optional_string(env, "SEVVO_WARM_POOL") or ""
            ),
            warm_pool_refill_seconds=c.number(
                env, "SEVVO_WARM_POOL_REFILL_SECONDS", 5.0, minimum=0.1, maximum=3600
            ),
        )


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)
