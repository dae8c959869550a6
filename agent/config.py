"""The agent's configuration: a deployment token and where the control plane and Temporal are.

Toward the control plane the agent only dials out: everything for it is an address to reach
or a credential to present. The one thing it listens on is the credential API for the
customer's workloads beside it (a Unix socket, optionally an in-cluster TLS port), never for
the control plane.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.liveness import LivenessConfig
from agent.sidecar import SidecarConfig
from agent.warm_pool import PoolSpec, parse_warm_pool
from sevvo.runtime import config as c
from sevvo.runtime.deployment_token import DeploymentCredentials, unwrap
from sevvo.runtime.errors import InvalidArgument
from sevvo.runtime.validation import directory_path_problem

DEFAULT_PORT = 443
DEFAULT_CREDENTIAL_SOCKET = "/var/run/sevvo/agent.sock"
# sun_path holds 108 bytes on Linux, the terminating NUL included.
MAX_SOCKET_PATH_BYTES = 107
SOCKET_MODES = {"0660": 0o660, "0600": 0o600}


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
class CredentialApiConfig:
    """Where the credential API for workloads listens; both listeners off by default here
    (``load`` turns the socket on unless told otherwise)."""

    socket: Path | None = None
    socket_mode: int = 0o660
    tls_port: int | None = None
    # In a pod the port must be reachable from other pods; a NetworkPolicy narrows who.
    tls_host: str = "0.0.0.0"  # noqa: S104
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Where CA bundles go for workloads' sslrootcert; by default the socket's directory.
    ca_dir: Path | None = None
    # Privileged sessions kept per dynamic connection for lending credentials.
    admin_sessions: int = 5


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
    # A file the event loop refreshes while it and the Temporal worker are healthy, read by
    # `python -m agent.liveness` (a Kubernetes exec liveness probe).
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    log_level: str = "INFO"
    credential_api: CredentialApiConfig = field(default_factory=CredentialApiConfig)
    # Login roles kept minted per (connection, role) for the credential API's borrowers
    # (agent.warm_pool); empty: every borrow mints.
    warm_pool: tuple[PoolSpec, ...] = ()
    warm_pool_refill_seconds: float = 5.0
    # Sidecar mode (agent/sidecar.py): a credential kept rendered in a file; None is off.
    sidecar: SidecarConfig | None = None
    # The only directories (and their subdirectories) a Parquet directory connection may name
    # (agent/directory_probe.py); empty: none.
    file_roots: tuple[Path, ...] = ()

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
            liveness=LivenessConfig.load(env),
            log_level=c.log_level(env),
            credential_api=(api := _credential_api(env)),
            sidecar=SidecarConfig.load(env, api.socket),
            warm_pool=parse_warm_pool(
                "SEVVO_WARM_POOL", c.optional_string(env, "SEVVO_WARM_POOL") or ""
            ),
            warm_pool_refill_seconds=c.number(
                env, "SEVVO_WARM_POOL_REFILL_SECONDS", 5.0, minimum=0.1, maximum=3600
            ),
            file_roots=parse_file_roots(
                "SEVVO_AGENT_FILE_ROOTS", c.optional_string(env, "SEVVO_AGENT_FILE_ROOTS") or ""
            ),
        )


def parse_file_roots(variable: str, value: str) -> tuple[Path, ...]:
    """Absolute, normalised directories separated by ':' or ','; empty entries are skipped.

    A root is checked as a path here; whether it exists is the credential test's question, so
    an agent starts before its volume is mounted.
    """
    roots: list[Path] = []
    for entry in re.split(r"[:,]", value):
        entry = entry.strip()
        if not entry:
            continue
        problem = directory_path_problem(entry)
        if problem is not None:
            raise c.ConfigError(f"{variable}: each directory {problem}")
        if Path(entry) not in roots:
            roots.append(Path(entry))
    return tuple(roots)


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def _credential_api(env: Mapping[str, str]) -> CredentialApiConfig:
    """The credential API's settings; a listener that could never start fails here."""
    # Unset means the default socket; set but empty turns the socket off.
    raw_socket = env.get("SEVVO_CREDENTIAL_SOCKET", DEFAULT_CREDENTIAL_SOCKET).strip()
    socket = Path(raw_socket) if raw_socket else None
    if socket is not None:
        if not socket.is_absolute():
            raise c.ConfigError(
                f"SEVVO_CREDENTIAL_SOCKET must be an absolute path, got {raw_socket!r}"
                " (set it empty to turn the socket off)"
            )
        if len(raw_socket.encode()) > MAX_SOCKET_PATH_BYTES:
            raise c.ConfigError(
                f"SEVVO_CREDENTIAL_SOCKET is {len(raw_socket.encode())} bytes long; a Unix"
                f" socket path may have at most {MAX_SOCKET_PATH_BYTES}"
            )
    mode = c.choice(env, "SEVVO_CREDENTIAL_SOCKET_MODE", "0660", tuple(SOCKET_MODES))
    port = c.integer(env, "SEVVO_CREDENTIAL_TLS_PORT", 0, minimum=0, maximum=65535) or None
    cert = c.optional_file(env, "SEVVO_CREDENTIAL_TLS_CERT")
    key = c.optional_file(env, "SEVVO_CREDENTIAL_TLS_KEY")
    if port is not None and (cert is None or key is None):
        raise c.ConfigError(
            "SEVVO_CREDENTIAL_TLS_PORT needs SEVVO_CREDENTIAL_TLS_CERT and"
            " SEVVO_CREDENTIAL_TLS_KEY (PEM files): the port serves TLS only"
        )
    if port is None and (cert is not None or key is not None):
        raise c.ConfigError(
            "SEVVO_CREDENTIAL_TLS_CERT and SEVVO_CREDENTIAL_TLS_KEY are set but"
            " SEVVO_CREDENTIAL_TLS_PORT is not; set the port to serve TLS"
        )
    ca_dir = _path(c.optional_string(env, "SEVVO_CREDENTIAL_CA_DIR"))
    if ca_dir is not None and not ca_dir.is_absolute():
        raise c.ConfigError(f"SEVVO_CREDENTIAL_CA_DIR must be an absolute path, got {ca_dir}")
    return CredentialApiConfig(
        socket=socket,
        socket_mode=SOCKET_MODES[mode],
        tls_port=port,
        tls_host=c.string(env, "SEVVO_CREDENTIAL_TLS_HOST", "0.0.0.0"),  # noqa: S104
        tls_cert=cert,
        tls_key=key,
        ca_dir=ca_dir if ca_dir is not None else (socket.parent if socket else None),
        admin_sessions=c.integer(env, "SEVVO_CREDENTIAL_ADMIN_SESSIONS", 5, minimum=1, maximum=50),
    )
