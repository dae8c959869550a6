"""The auth process's configuration, read once from the environment at start."""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.auth.callers import TrustedProxies
from services.auth.limits import SignInLimits
from sevvo.runtime import config as c
from sevvo.runtime.files import write_private_file
from sevvo.runtime.grpc_server import TlsFiles
from sevvo.runtime.logs import register_secret


def default_hashing_threads() -> int:
    """Half the cores for password hashing, so guessing can never take the whole machine."""
    return max(1, (os.cpu_count() or 2) // 2)


@dataclass(frozen=True)
class AuthConfig:
    """Everything auth needs; built by ``load`` so tests can pass a dict."""

    # Credential-bearing: never in a repr (a config printed in a log or traceback).
    database_url: str = field(repr=False)
    tls: TlsFiles
    # Seals new and re-sealed signing keys; kept out of repr, as the retired keys are.
    key_encryption_key: bytes = field(repr=False)
    host: str = "0.0.0.0"  # noqa: S104 - a service in a pod listens on its pod address.
    port: int = 8443
    session_ttl_seconds: int = 3600
    bearer_ttl_seconds: int = 600
    # Workload bearers carry grants that connections trusts without asking auth; short-lived, so
    # a workload that lost them (or whose grants narrowed) soon has to exchange again.
    workload_bearer_ttl_seconds: int = 300
    leeway_seconds: int = 10
    refresh_seconds: float = 2.0
    key_rotation_days: int = 30
    log_level: str = "INFO"
    health: c.HealthSettings = field(default_factory=c.HealthSettings)
    migration: c.MigrationSettings = field(default_factory=c.MigrationSettings)
    # The operator's token for BootstrapOrg; None turns the RPC off.
    bootstrap_token: str | None = None
    # Threads that run scrypt (each can take a core) and checks that may wait for one.
    hashing_threads: int = field(default_factory=default_hashing_threads)
    hashing_queue: int = 16
    sign_in_limits: SignInLimits = field(default_factory=SignInLimits)
    # The Gateway or ingress controller in front of auth, whose x-forwarded-for names the caller
    # the sign-in limits count (services/auth/callers.py); none: the peer is the caller.
    trusted_proxies: TrustedProxies = field(default_factory=TrustedProxies)
    # Where to ask for an org's payload key to rotate when a deployment is revoked; None (no
    # orchestrator) leaves it to the orchestrator's own check of auth's revocations.
    orchestrator_endpoint: str | None = None
    ca_file: Path | None = None
    # The HTTP port of the JWKS that Temporal's JWT authorizer fetches (0: any free port).
    jwks_port: int = 8081
    # Temporal's jwtKeyProvider.refreshInterval: a new Temporal key signs two of these after
    # it is published, so Temporal knows it before the first token it signs arrives.
    temporal_jwks_refresh_seconds: float = 60.0
    # How long the orchestrator's Temporal tokens live (agents' expire with their bearer).
    temporal_token_ttl_seconds: int = 900
    # The orchestrator's proof for IssueTemporalToken; None turns the RPC off. Secret.
    service_token: str | None = field(default=None, repr=False)
    # Older key-encryption keys that still open signing keys sealed before a rotation, until
    # `python -m services.auth rewrap` has re-sealed them under key_encryption_key.
    retired_key_encryption_keys: tuple[bytes, ...] = field(default=(), repr=False)

    @property
    def max_token_ttl_seconds(self) -> int:
        """The longest any token auth issues can live."""
        return max(
            self.session_ttl_seconds, self.bearer_ttl_seconds, self.workload_bearer_ttl_seconds
        )

    @property
    def max_temporal_token_ttl_seconds(self) -> int:
        """The longest a Temporal token auth issues can live (an agent's lives as its bearer)."""
        return max(self.temporal_token_ttl_seconds, self.bearer_ttl_seconds)

    @classmethod
    def load(cls, env: Mapping[str, str]) -> AuthConfig:
        """Reads and validates the configuration; raises ConfigError naming a bad variable."""
        current, retired = load_key_encryption_keys(env)
        return cls(
            database_url=c.required_secret(env, "SEVVO_DATABASE_URL"),
            tls=TlsFiles(
                cert=c.existing_file(env, "SEVVO_TLS_CERT_FILE"),
                key=c.existing_file(env, "SEVVO_TLS_KEY_FILE"),
            ),
            key_encryption_key=current,
            retired_key_encryption_keys=retired,
            host=c.string(env, "SEVVO_GRPC_HOST", "0.0.0.0"),  # noqa: S104
            port=c.integer(env, "SEVVO_GRPC_PORT", 8443, minimum=0, maximum=65535),
            session_ttl_seconds=c.integer(
                env, "SEVVO_AUTH_SESSION_TTL_SECONDS", 3600, minimum=300, maximum=86400
            ),
            # docs/design.md: agent bearers live minutes; the issue pins 5 to 15.
            bearer_ttl_seconds=c.integer(
                env, "SEVVO_AUTH_BEARER_TTL_SECONDS", 600, minimum=300, maximum=900
            ),
            workload_bearer_ttl_seconds=c.integer(
                env, "SEVVO_AUTH_WORKLOAD_BEARER_TTL_SECONDS", 300, minimum=60, maximum=900
            ),
            leeway_seconds=c.integer(env, "SEVVO_TOKEN_LEEWAY_SECONDS", 10, minimum=0, maximum=30),
            refresh_seconds=c.number(
                env, "SEVVO_TOKEN_REFRESH_SECONDS", 2.0, minimum=0.05, maximum=2.0
            ),
            key_rotation_days=c.integer(
                env, "SEVVO_AUTH_KEY_ROTATION_DAYS", 30, minimum=1, maximum=365
            ),
            log_level=c.log_level(env),
            health=c.health_settings(env),
            migration=c.migration_settings(env),
            bootstrap_token=parse_bootstrap_token(
                c.secret(env, "SEVVO_AUTH_BOOTSTRAP_TOKEN", required=False),
                "SEVVO_AUTH_BOOTSTRAP_TOKEN",
            ),
            hashing_threads=c.integer(
                env, "SEVVO_AUTH_HASHING_THREADS", default_hashing_threads(), minimum=1, maximum=64
            ),
            hashing_queue=c.integer(env, "SEVVO_AUTH_HASHING_QUEUE", 16, minimum=0, maximum=1024),
            orchestrator_endpoint=c.optional_string(env, "SEVVO_ORCHESTRATOR_ENDPOINT"),
            ca_file=c.optional_file(env, "SEVVO_CA_FILE"),
            jwks_port=c.integer(env, "SEVVO_AUTH_JWKS_PORT", 8081, minimum=0, maximum=65535),
            temporal_jwks_refresh_seconds=c.number(
                env, "SEVVO_AUTH_TEMPORAL_JWKS_REFRESH_SECONDS", 60.0, minimum=0.05, maximum=3600
            ),
            temporal_token_ttl_seconds=c.integer(
                env, "SEVVO_AUTH_ORCHESTRATOR_TEMPORAL_TTL_SECONDS", 900, minimum=60, maximum=3600
            ),
            service_token=kept_out_of_logs(
                parse_bootstrap_token(
                    c.secret(env, "SEVVO_AUTH_SERVICE_TOKEN", required=False),
                    "SEVVO_AUTH_SERVICE_TOKEN",
                )
            ),
            sign_in_limits=SignInLimits(
                source_burst=c.integer(
                    env, "SEVVO_AUTH_SIGN_IN_BURST", 30, minimum=1, maximum=100_000
                ),
                source_per_minute=c.number(
                    env, "SEVVO_AUTH_SIGN_IN_PER_MINUTE", 10.0, minimum=0.1, maximum=100_000.0
                ),
                free_failures=c.integer(
                    env, "SEVVO_AUTH_SIGN_IN_FREE_FAILURES", 5, minimum=1, maximum=1000
                ),
            ),
            trusted_proxies=_trusted_proxies(env),
        )


def _trusted_proxies(env: Mapping[str, str]) -> TrustedProxies:
    variable = "SEVVO_AUTH_TRUSTED_PROXIES"
    try:
        return TrustedProxies.parse(env.get(variable, ""))
    except ValueError as exc:
        raise c.ConfigError(
            f"{variable}: {exc}; list the proxies in front of auth as addresses or CIDR"
            " blocks, comma-separated"
        ) from None


def parse_key_encryption_key(value: str, variable: str) -> bytes:
    """Decodes a base64 256-bit key; the error names the variable, never the value."""
    try:
        key = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise c.ConfigError(f"{variable} must be base64") from None
    if len(key) != 32:
        raise c.ConfigError(f"{variable} must decode to 32 bytes, got {len(key)}")
    return key


def load_key_encryption_keys(env: Mapping[str, str]) -> tuple[bytes, tuple[bytes, ...]]:
    """The current KEK (SEVVO_AUTH_KEK(_FILE)) and the retired ones
    (SEVVO_AUTH_RETIRED_KEKS(_FILE)): what auth and its rewrap command both read."""
    current = parse_key_encryption_key(c.required_secret(env, "SEVVO_AUTH_KEK"), "SEVVO_AUTH_KEK")
    retired = parse_retired_keks(*_retired_keks_text(env), current)
    return current, retired


def _retired_keks_text(env: Mapping[str, str]) -> tuple[str, str]:
    """The retired keys' text and the variable it came from. Unlike other secrets an empty
    file is allowed: it is how a Secret says a rotation is over (no retired keys)."""
    variable = "SEVVO_AUTH_RETIRED_KEKS_FILE"
    file_name = c.optional_string(env, variable)
    if file_name is None:
        return env.get("SEVVO_AUTH_RETIRED_KEKS", ""), "SEVVO_AUTH_RETIRED_KEKS"
    path = Path(file_name)
    try:
        return path.read_text(encoding="utf-8"), variable
    except OSError as exc:
        raise c.ConfigError(
            f"{variable} names {path}, which cannot be read: {exc.strerror}"
        ) from None
    except UnicodeDecodeError:
        raise c.ConfigError(f"{variable} names {path}, which is not UTF-8 text") from None


def parse_retired_keks(text: str, source: str, current: bytes) -> tuple[bytes, ...]:
    """Retired KEKs: base64 keys of 32 bytes separated by commas, spaces or newlines (a file
    may hold one per line; ``#`` starts a comment line), without ``current``. Errors name the
    variable and the entry's position, never a value."""
    lines = (line for line in text.splitlines() if not line.lstrip().startswith("#"))
    entries = [entry for line in lines for entry in line.replace(",", " ").split()]
    keys: list[bytes] = []
    for number, entry in enumerate(entries, start=1):
        key = parse_key_encryption_key(entry, f"{source} entry {number}")
        if key in keys:
            raise c.ConfigError(f"{source} entry {number} repeats entry {keys.index(key) + 1}")
        keys.append(key)
    # The current key among the retired ones is dropped, not refused: the rotation steps stage
    # the old key as retired while it is still current, so a restart never lacks it.
    return tuple(key for key in keys if key != current)


MIN_BOOTSTRAP_TOKEN_CHARS = 32


def parse_bootstrap_token(value: str | None, variable: str) -> str | None:
    """Checks an operator or service token is long enough to stand in for a password check."""
    if value is not None and len(value) < MIN_BOOTSTRAP_TOKEN_CHARS:
        raise c.ConfigError(
            f"{variable} must be at least {MIN_BOOTSTRAP_TOKEN_CHARS} characters"
            " (generate one with: openssl rand -base64 32)"
        )
    return value


def kept_out_of_logs(value: str | None) -> str | None:
    """Returns a secret read from configuration, registered for redaction from every log line."""
    if value is not None:
        register_secret(value)
    return value


def write_bootstrap_token(path: Path) -> None:
    """Writes a fresh random bootstrap token, readable by the owner only."""
    write_private_file(path, secrets.token_urlsafe(32) + "\n")


def write_key_encryption_key(path: Path) -> None:
    """Writes a fresh random key-encryption key, readable by the owner only."""
    write_private_file(path, base64.b64encode(secrets.token_bytes(32)).decode())
