"""The embedded dev stack: control-plane Postgres, Temporal dev server and the services.

Used by ``make dev`` (``python -m devstack``) and by the tests. Everything listens on
loopback; gRPC is TLS with a development CA generated under the state directory. Existing
servers are used instead of the embedded ones when ``SEVVO_DATABASE_URL`` or
``SEVVO_TEMPORAL_ADDRESS`` is set.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
import psycopg
from psycopg import sql

from devstack.pki import DevPki, ensure_dev_pki
from devstack.postgres import EmbeddedPostgres
from devstack.temporal import TemporalDevServer
from services.auth.config import AuthConfig, write_key_encryption_key
from services.auth.server import AuthApp
from services.connections.config import ConnectionsConfig
from services.connections.server import ConnectionsApp
from sevvo.runtime import config as c
from sevvo.runtime.errors import AlreadyExists
from sevvo.runtime.grpc_server import start_server
from sevvo.runtime.logs import get_logger
from sevvo.runtime.sealing import Keyring, write_keyring_file

log = get_logger(__name__)

DEV_ORG = "Dev Org"
DEV_ADMIN_EMAIL = "admin@sevvo.dev"
CONTROL_PLANE_DATABASE = "sevvo"


@dataclass(frozen=True)
class StackSettings:
    """What the launcher reads from the environment."""

    state_dir: Path
    grpc_port: int
    database_url: str | None
    temporal_address: str | None
    durable: bool = True

    @classmethod
    def load(cls, env: Mapping[str, str], default_state_dir: Path) -> StackSettings:
        """Reads SEVVO_STATE_DIR, SEVVO_GRPC_PORT, SEVVO_DATABASE_URL, SEVVO_TEMPORAL_ADDRESS."""
        return cls(
            state_dir=Path(c.string(env, "SEVVO_STATE_DIR", str(default_state_dir))).absolute(),
            grpc_port=c.integer(env, "SEVVO_GRPC_PORT", 8443, minimum=0, maximum=65535),
            database_url=c.secret(env, "SEVVO_DATABASE_URL", required=False),
            temporal_address=c.optional_string(env, "SEVVO_TEMPORAL_ADDRESS"),
        )


@dataclass
class RunningStack:
    """Endpoints of a running stack, for users and tests."""

    grpc_target: str
    pki: DevPki
    database_url: str
    temporal_address: str
    admin_email: str
    admin_password_file: Path
    auth: AuthApp
    connections: ConnectionsApp
    _server: grpc.aio.Server
    _postgres: EmbeddedPostgres | None = None
    _temporal: TemporalDevServer | None = None
    _closed: bool = field(default=False)

    async def stop(self) -> None:
        """Stops the services, then Temporal, then Postgres; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self._server.stop(grace=3)
        self.connections.close()
        self.auth.close()
        if self._temporal is not None:
            self._temporal.stop()
        if self._postgres is not None:
            self._postgres.stop()
        log.info("dev stack stopped")


def _with_database(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{dbname}"))


def _ensure_database(admin_url: str, dbname: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (dbname,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


async def start_stack(
    settings: StackSettings, env: Mapping[str, str] | None = None
) -> RunningStack:
    """Starts every part of the stack; on failure, stops what had started and re-raises."""
    env = dict(env if env is not None else os.environ)
    state = settings.state_dir
    # Traversable (not listable) by others: as root, Postgres runs as its own user and must
    # reach its data directory below; every secret file in here is 0600 on its own.
    state.mkdir(mode=0o711, parents=True, exist_ok=True)
    state.chmod(0o711)
    postgres: EmbeddedPostgres | None = None
    temporal: TemporalDevServer | None = None
    auth: AuthApp | None = None
    connections: ConnectionsApp | None = None
    try:
        if settings.database_url:
            database_url = settings.database_url
        else:
            postgres = EmbeddedPostgres(state / "postgres", durable=settings.durable).start()
            _ensure_database(postgres.url, CONTROL_PLANE_DATABASE)
            database_url = postgres.admin_url(CONTROL_PLANE_DATABASE)
        if settings.temporal_address:
            temporal_address = settings.temporal_address
        else:
            temporal = TemporalDevServer(
                db_filename=state / "temporal.sqlite", log_file=state / "temporal.log"
            ).start()
            temporal_address = temporal.address
        pki = ensure_dev_pki(state / "pki")
        kek_file = state / "auth-kek"
        if not kek_file.exists():
            write_key_encryption_key(kek_file)
        keyring_file = state / "connections-keyring.json"
        if not keyring_file.exists():
            write_keyring_file(keyring_file, Keyring.generate())

        service_env = {
            **env,
            "SEVVO_DATABASE_URL": database_url,
            "SEVVO_TLS_CERT_FILE": str(pki.server_cert),
            "SEVVO_TLS_KEY_FILE": str(pki.server_key),
            "SEVVO_AUTH_KEK_FILE": str(kek_file),
            "SEVVO_CONNECTIONS_KEYRING_FILE": str(keyring_file),
            "SEVVO_CA_FILE": str(pki.ca_cert),
            "SEVVO_AUTH_ENDPOINT": f"localhost:{settings.grpc_port}",
            "SEVVO_GRPC_HOST": "127.0.0.1",
            "SEVVO_GRPC_PORT": str(settings.grpc_port),
        }
        service_env.pop("SEVVO_DATABASE_URL_FILE", None)
        auth_config = AuthConfig.load(service_env)
        auth = AuthApp(auth_config)
        auth.open()
        password_file = state / "admin-password"
        if not password_file.exists():
            password = secrets.token_urlsafe(18)
            try:
                auth.domain.create_org_with_admin(DEV_ORG, DEV_ADMIN_EMAIL, password)
                _write_private(password_file, password + "\n")
            except AlreadyExists:
                log.warning("dev admin exists but its password file is gone; reset the state dir")
        connections = ConnectionsApp(ConnectionsConfig.load(service_env))
        connections.open()
        # One process, one server: every service shares auth's in-process verifier, which
        # reads keys and revocations straight from auth's store.
        server, port = await start_server(
            [auth.spec(), connections.spec()],
            verifier=auth.verifier,
            tls=auth_config.tls,
            host="127.0.0.1",
            port=settings.grpc_port,
        )
    except BaseException:
        for app in (connections, auth):
            if app is not None:
                app.close()
        if temporal is not None:
            temporal.stop()
        if postgres is not None:
            postgres.stop()
        raise
    return RunningStack(
        grpc_target=f"localhost:{port}",
        pki=pki,
        database_url=database_url,
        temporal_address=temporal_address,
        admin_email=DEV_ADMIN_EMAIL,
        admin_password_file=password_file,
        auth=auth,
        connections=connections,
        _server=server,
        _postgres=postgres,
        _temporal=temporal,
    )
