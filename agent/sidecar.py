"""Sidecar mode: keep a borrowed Postgres credential rendered in a file for the app beside us.

The Vault Agent pattern. The agent borrows a login role from its own credential API (over
its Unix socket, as any workload would, with a workload token), writes it to a file the app
reads (libpq conninfo, a pgpass line, or PG* environment assignments), renews the lease
before it expires, borrows a new role when the next renewal would pass the max TTL and
rewrites the file, and on shutdown revokes the lease and removes the file. The file is
written mode 0600 and atomically, so the app never reads half a credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from sevvo.runtime import config as c
from sevvo.runtime.files import write_private_file
from sevvo.runtime.logs import get_logger
from sevvo_client import AgentUnavailable, Credential, CredentialError, managed_credentials
from sevvo_client.durations import parse_duration

log = get_logger(__name__)

FORMATS = ("conninfo", "pgpass", "env")
RETRY_SECONDS = 2.0
# libpq connection keywords and the environment variables libpq reads for them.
_ENV_NAMES = {
    "host": "PGHOST",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
}


@dataclass(frozen=True)
class SidecarConfig:
    """What to borrow and where to render it; the workload token stays out of repr."""

    connection: str
    file: Path
    socket: str
    workload_token: str
    role: str = "default"
    ttl_seconds: int | None = None
    format: str = "conninfo"
    purpose: str = "sidecar"
    grace_seconds: float = 30.0

    def __repr__(self) -> str:
        return (
            f"SidecarConfig(connection={self.connection!r}, role={self.role!r}, "
            f"file={str(self.file)!r}, format={self.format!r})"
        )

    @classmethod
    def load(cls, env: Mapping[str, str], socket: Path | None) -> SidecarConfig | None:
        """The sidecar's settings, or None when SEVVO_SIDECAR_CONNECTION is unset (off).

        ``socket`` is the agent's own credential API socket, which the sidecar borrows
        through. Raises ConfigError naming a missing or malformed variable.
        """
        connection = c.optional_string(env, "SEVVO_SIDECAR_CONNECTION")
        if connection is None:
            return None
        if socket is None:
            raise c.ConfigError(
                "SEVVO_SIDECAR_CONNECTION needs the credential API's socket: leave "
                "SEVVO_CREDENTIAL_SOCKET unset (the default) or set it to a path"
            )
        file = Path(c.string(env, "SEVVO_SIDECAR_FILE"))
        if not file.is_absolute():
            raise c.ConfigError(f"SEVVO_SIDECAR_FILE must be an absolute path, got {str(file)!r}")
        ttl = c.optional_string(env, "SEVVO_SIDECAR_TTL")
        try:
            ttl_seconds = None if ttl is None else parse_duration(ttl)
        except ValueError as exc:
            raise c.ConfigError(f"SEVVO_SIDECAR_TTL: {exc}") from None
        token = c.required_secret(env, "SEVVO_WORKLOAD_TOKEN")
        if not token.startswith("sevvo_wt_"):
            raise c.ConfigError("SEVVO_WORKLOAD_TOKEN is not a sevvo workload token (sevvo_wt_...)")
        return cls(
            connection=connection,
            file=file,
            # The agent's own credential API: the sidecar borrows like any workload would.
            socket=str(socket),
            workload_token=token,
            role=c.string(env, "SEVVO_SIDECAR_ROLE", "default"),
            ttl_seconds=ttl_seconds,
            format=c.choice(env, "SEVVO_SIDECAR_FORMAT", "conninfo", FORMATS),
            purpose=c.string(env, "SEVVO_SIDECAR_PURPOSE", "sidecar"),
            # How long a replaced credential keeps working, so the app can reconnect.
            grace_seconds=c.number(
                env, "SEVVO_SIDECAR_GRACE_SECONDS", 30.0, minimum=0, maximum=3600
            ),
        )


def render(credential: Credential, fmt: str) -> str:
    """The file's text for ``credential`` in format ``fmt`` (one of FORMATS)."""
    if fmt == "conninfo":
        return credential.conninfo + "\n"
    if fmt == "pgpass":
        fields = (
            credential.host,
            str(credential.port),
            credential.database,
            credential.username,
            credential.password,
        )
        return ":".join(_pgpass_escape(f) for f in fields) + "\n"
    if fmt == "env":
        params = conninfo_to_dict(credential.conninfo)
        lines = [
            f"{_ENV_NAMES[key]}={shlex.quote(str(value))}"
            for key, value in params.items()
            if key in _ENV_NAMES and value is not None
        ]
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown sidecar file format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _pgpass_escape(value: str) -> str:
    # libpq's pgpass: fields are ':'-separated; '\' escapes ':' and '\' inside a field.
    return value.replace("\\", "\\\\").replace(":", "\\:")


async def run_sidecar(config: SidecarConfig, stop: asyncio.Event) -> None:
    """Keeps the credential file current until ``stop`` is set, then revokes and removes it."""
    while not stop.is_set():
        try:
            await _serve(config, stop)
            return
        except AgentUnavailable as exc:  # The credential API is not listening yet.
            log.info("sidecar waiting for the credential API", reason=exc.reason)
        except CredentialError as exc:
            # Not granted, unknown connection, revoked token: nothing to render. Retried, so
            # a grant added later takes effect without a restart.
            log.error("sidecar could not borrow a credential", reason=exc.reason, error=exc.message)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RETRY_SECONDS)


async def _serve(config: SidecarConfig, stop: asyncio.Event) -> None:
    def write(credential: Credential) -> None:
        write_private_file(config.file, render(credential, config.format))
        log.info(
            "sidecar credential written",
            file=str(config.file),
            lease_id=credential.lease_id,
            username=credential.username,
            expire_time=credential.expire_time.isoformat(),
        )

    def renewed(credential: Credential) -> None:
        log.info(
            "sidecar credential renewed",
            lease_id=credential.lease_id,
            expire_time=credential.expire_time.isoformat(),
        )

    async with managed_credentials(
        config.connection,
        role=config.role,
        ttl=config.ttl_seconds,
        purpose=config.purpose,
        on_change=write,
        on_renew=renewed,
        grace=config.grace_seconds,
        socket=config.socket,
        token=config.workload_token,
    ) as managed:
        try:
            write(managed.current)
            await stop.wait()
        finally:
            # The app must not pick up a credential that is about to stop working.
            config.file.unlink(missing_ok=True)
    log.info("sidecar credential revoked", lease_id=managed.current.lease_id)
