"""Reading typed process configuration from the environment and mounted secret files.

Each process defines one frozen dataclass with a ``load(env)`` classmethod built from these
readers, so a bad value fails at start with a message naming the variable, and tests pass a
plain dict instead of patching ``os.environ``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    """A configuration variable is missing or malformed; the message names it."""


def string(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    """Returns a non-empty string variable, or its default; raises ConfigError if neither."""
    value = env.get(name, "").strip()
    if value:
        return value
    if default is not None:
        return default
    raise ConfigError(f"{name} is required but not set")


def optional_string(env: Mapping[str, str], name: str) -> str | None:
    """Returns a string variable, or None when it is unset or empty."""
    value = env.get(name, "").strip()
    return value or None


def integer(
    env: Mapping[str, str],
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """Returns an integer variable within [minimum, maximum], or its default when unset."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, got {value}")
    return value


def boolean(env: Mapping[str, str], name: str, default: bool) -> bool:
    """Returns a boolean variable written as true/false, 1/0, yes/no or on/off."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    """Returns a variable that must be one of ``allowed`` (compared case-insensitively)."""
    value = string(env, name, default).lower()
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def existing_file(env: Mapping[str, str], name: str, default: str | None = None) -> Path:
    """Returns the path in a variable, which must name a readable file."""
    path = Path(string(env, name, default))
    if not path.is_file():
        raise ConfigError(f"{name} names {path}, which is not a readable file")
    return path


def optional_file(env: Mapping[str, str], name: str) -> Path | None:
    """Returns the path in a variable when set (it must then name a file), else None."""
    if optional_string(env, name) is None:
        return None
    return existing_file(env, name)


def secret(env: Mapping[str, str], name: str, *, required: bool = True) -> str | None:
    """Returns a secret from the file named by ``NAME_FILE`` or, failing that, from ``NAME``.

    Mounted files are the production path (Kubernetes Secrets); the plain variable is for local
    use. Error messages name the variable, never the value.
    """
    file_var = f"{name}_FILE"
    file_name = optional_string(env, file_var)
    if file_name is not None:
        path = Path(file_name)
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{file_var} names {path}, which cannot be read: {exc.strerror}"
            ) from None
        if not value:
            raise ConfigError(f"{file_var} names {path}, which is empty")
        return value
    value = env.get(name, "").strip()
    if value:
        return value
    if required:
        raise ConfigError(f"{name} is required: set {file_var} to a mounted file or {name}")
    return None


def required_secret(env: Mapping[str, str], name: str) -> str:
    """Returns a secret that must be set, from ``NAME_FILE`` or ``NAME``."""
    value = secret(env, name, required=True)
    assert value is not None
    return value


def number(
    env: Mapping[str, str],
    name: str,
    default: float,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """Returns a decimal number variable within [minimum, maximum], or its default when unset."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, got {value}")
    return value


def log_level(env: Mapping[str, str]) -> str:
    """The process log level from SEVVO_LOG_LEVEL (default INFO)."""
    return choice(env, "SEVVO_LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper()


@dataclass(frozen=True)
class HealthSettings:
    """How a service reports health: the plaintext port for probes (None: none), how often
    its readiness is checked, and how long it keeps serving after turning NOT_SERVING at
    shutdown."""

    probe_port: int | None = None
    check_seconds: float = 5.0
    drain_seconds: float = 0.0


def health_settings(env: Mapping[str, str]) -> HealthSettings:
    """Reads SEVVO_HEALTH_PORT (unset or empty: no plaintext probe port; 0: any free port),
    SEVVO_HEALTH_CHECK_SECONDS (default 5) and SEVVO_SHUTDOWN_DRAIN_SECONDS (default 0)."""
    raw = env.get("SEVVO_HEALTH_PORT", "").strip()
    port = integer(env, "SEVVO_HEALTH_PORT", 0, minimum=0, maximum=65535) if raw else None
    return HealthSettings(
        probe_port=port,
        check_seconds=number(env, "SEVVO_HEALTH_CHECK_SECONDS", 5.0, minimum=0.05, maximum=60),
        # Endpoints and load balancers learn of a terminating pod seconds late; calls they
        # still send meanwhile are served, not refused.
        drain_seconds=number(env, "SEVVO_SHUTDOWN_DRAIN_SECONDS", 0.0, minimum=0, maximum=60),
    )


@dataclass(frozen=True)
class MigrationSettings:
    """How a process treats migrations: apply them on start (dev, tests) or only check them
    (production, where the migrate Job applied them), and the timeouts migrations run under."""

    migrate_on_start: bool = True
    # A DDL statement queued behind a long transaction blocks every later query on the table;
    # giving up after a few seconds keeps traffic flowing, and the Job is simply run again.
    lock_timeout_seconds: float = 5.0
    statement_timeout_seconds: float = 300.0


def migration_settings(env: Mapping[str, str]) -> MigrationSettings:
    """Reads SEVVO_MIGRATE_ON_START (default true), SEVVO_MIGRATION_LOCK_TIMEOUT_SECONDS
    (default 5) and SEVVO_MIGRATION_STATEMENT_TIMEOUT_SECONDS (default 300)."""
    return MigrationSettings(
        migrate_on_start=boolean(env, "SEVVO_MIGRATE_ON_START", True),
        lock_timeout_seconds=number(
            env, "SEVVO_MIGRATION_LOCK_TIMEOUT_SECONDS", 5.0, minimum=0.1, maximum=600
        ),
        statement_timeout_seconds=number(
            env, "SEVVO_MIGRATION_STATEMENT_TIMEOUT_SECONDS", 300.0, minimum=1, maximum=86400
        ),
    )
