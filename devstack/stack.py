"""The embedded dev stack: control-plane Postgres, Temporal, the services and an agent.

Used by ``make dev`` (``python -m devstack``) and by the end-to-end tests. Everything listens
on loopback; gRPC is TLS with a development CA generated under the state directory, and the
agent reaches Temporal through a TLS-terminating proxy (mTLS with a dev client certificate),
because the Temporal dev server speaks plaintext only. Existing servers are used instead of
the embedded ones when ``SEVVO_DATABASE_URL`` or ``SEVVO_TEMPORAL_ADDRESS`` is set.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from console.config import ConsoleConfig
from console.server import ConsoleServer
from devstack.agent_process import AgentProcess, AgentSettings
from devstack.pki import DevPki, ensure_dev_pki
from devstack.postgres import EmbeddedPostgres
from devstack.processes import ServerStartError, free_port
from devstack.temporal import TemporalDevServer
from devstack.tls_proxy import TlsProxy
from services.auth.config import AuthConfig, write_bootstrap_token, write_key_encryption_key
from services.auth.server import AuthApp
from services.connections.config import ConnectionsConfig
from services.connections.server import ConnectionsApp
from services.orchestrator.config import OrchestratorConfig
from services.orchestrator.server import OrchestratorApp
from sevvo.runtime import config as c
from sevvo.runtime.errors import AlreadyExists
from sevvo.runtime.files import write_private_file
from sevvo.runtime.grpc_server import TlsFiles, start_server, stop_serving
from sevvo.runtime.health import ServerHealth, database_check
from sevvo.runtime.logs import get_logger
from sevvo.runtime.sealing import Keyring, write_keyring_file
from sevvo.runtime.tokens import Principal, PrincipalKind

log = get_logger(__name__)

DEV_ORG = "Dev Org"
DEV_ADMIN_EMAIL = "admin@sevvo.dev"
CONTROL_PLANE_DATABASE = "sevvo"
# Where `make dev` serves the web console (SEVVO_DEV_CONSOLE_PORT); the gRPC port is 8443.
DEV_CONSOLE_PORT = 8444


@dataclass(frozen=True)
class StackSettings:
    """What the launcher reads from the environment."""

    state_dir: Path
    grpc_port: int
    database_url: str | None
    temporal_address: str | None
    durable: bool = True
    start_agent: bool = True
    # Read by the launcher (devstack.launcher), not by start_stack: the level of its log and
    # whether it starts the tour's sample database beside the stack.
    log_level: str = "INFO"
    sample_database: bool = False
    # Where the services dial each other: their own port by default; a balancer in front of
    # them and their replicas when there are some (devstack.process_stack.ReplicasBeside).
    peer_target: str | None = None
    # The web console (console/) on this loopback port, in this process: None (the tests'
    # stacks, which start their own) starts none; 0 picks a free port.
    console_port: int | None = None

    @classmethod
    def load(cls, env: Mapping[str, str], default_state_dir: Path) -> StackSettings:
        """Reads SEVVO_STATE_DIR, SEVVO_GRPC_PORT, SEVVO_DATABASE_URL, SEVVO_TEMPORAL_ADDRESS,
        SEVVO_DEV_AGENT, SEVVO_DEV_SAMPLE_DB, SEVVO_DEV_CONSOLE, SEVVO_DEV_CONSOLE_PORT and
        SEVVO_LOG_LEVEL."""
        console_port = c.integer(
            env, "SEVVO_DEV_CONSOLE_PORT", DEV_CONSOLE_PORT, minimum=0, maximum=65535
        )
        return cls(
            state_dir=Path(c.string(env, "SEVVO_STATE_DIR", str(default_state_dir))).absolute(),
            grpc_port=c.integer(env, "SEVVO_GRPC_PORT", 8443, minimum=0, maximum=65535),
            database_url=c.secret(env, "SEVVO_DATABASE_URL", required=False),
            temporal_address=c.optional_string(env, "SEVVO_TEMPORAL_ADDRESS"),
            start_agent=c.boolean(env, "SEVVO_DEV_AGENT", True),
            log_level=c.log_level(env),
            sample_database=c.boolean(env, "SEVVO_DEV_SAMPLE_DB", True),
            console_port=console_port if c.boolean(env, "SEVVO_DEV_CONSOLE", True) else None,
        )


@dataclass
class RunningStack:
    """Endpoints of a running stack, and ways to start agents against it."""

    state_dir: Path
    grpc_target: str
    pki: DevPki
    database_url: str
    temporal_address: str
    agent_temporal_address: str
    admin_email: str
    admin_password_file: Path
    # The operator's token for AuthService.BootstrapOrg (``sevvo bootstrap``), mode 0600.
    bootstrap_token_file: Path
    auth: AuthApp
    connections: ConnectionsApp
    orchestrator: OrchestratorApp
    _exit: AsyncExitStack
    agents: list[AgentProcess] = field(default_factory=list)
    # The web console, when StackSettings.console_port asked for one.
    console: ConsoleServer | None = None
    _closed: bool = False

    @property
    def console_url(self) -> str | None:
        """The console's address (``https://localhost:<port>``), or None without one."""
        return self.console.url if self.console is not None else None

    def agent_settings(
        self,
        token_file: Path,
        *,
        mtls: bool = True,
        reaper_seconds: float = 60.0,
        file_roots: str = "",
    ) -> AgentSettings:
        """How an agent with this token reaches this stack (mTLS to Temporal by default)."""
        return AgentSettings(
            token_file=token_file,
            control_plane_endpoint=self.grpc_target,
            temporal_address=self.agent_temporal_address,
            ca_file=self.pki.ca_cert,
            temporal_client_cert=self.pki.client_cert if mtls else None,
            temporal_client_key=self.pki.client_key if mtls else None,
            reaper_seconds=reaper_seconds,
            file_roots=file_roots,
        )

    def start_agent(
        self,
        deployment_token: str,
        *,
        name: str = "agent",
        wait: bool = True,
        reaper_seconds: float = 60.0,
        file_roots: str = "",
    ) -> AgentProcess:
        """Starts ``python -m agent`` for a deployment token (written to a 0600 file);
        ``file_roots`` is its SEVVO_AGENT_FILE_ROOTS."""
        token_file = self.state_dir / f"{name}-deployment-token"
        write_private_file(token_file, deployment_token + "\n")
        agent = AgentProcess(
            self.agent_settings(token_file, reaper_seconds=reaper_seconds, file_roots=file_roots),
            self.state_dir / f"{name}.log",
        )
        self.agents.append(agent)
        return agent.start(wait=wait)

    async def stop(self) -> None:
        """Stops agents, services, proxy, Temporal and Postgres, in that order; idempotent."""
        if self._closed:
            return
        self._closed = True
        # Agents stop independently, each up to its worker's shutdown timeout: in parallel.
        await asyncio.gather(*(asyncio.to_thread(agent.stop) for agent in self.agents))
        await self._exit.aclose()
        log.info("dev stack stopped")


def _ensure_database(admin_url: str, dbname: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (dbname,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))


def _bootstrap_dev_org(auth: AuthApp, state: Path) -> tuple[Path, Path | None]:
    """Creates the dev org, admin and agent deployment once; returns their secret files."""
    password_file = state / "admin-password"
    token_file = state / "dev-deployment-token"
    if password_file.exists():
        return password_file, token_file if token_file.exists() else None
    password = secrets.token_urlsafe(18)
    try:
        admin = auth.domain.create_org_with_admin(DEV_ORG, DEV_ADMIN_EMAIL, password)
    except AlreadyExists:
        log.warning("dev admin exists but its password file is gone; reset the state dir")
        return password_file, None
    write_private_file(password_file, password + "\n")
    as_admin = Principal(
        kind=PrincipalKind.USER,
        org_id=str(admin.org_id),
        subject_id=str(admin.id),
        token_id="devstack-bootstrap",
        expires_at=datetime.now(UTC) + timedelta(minutes=1),
        role="admin",
    )
    created = auth.domain.create_deployment(as_admin, "dev-agent")
    write_private_file(token_file, created.token + "\n")
    return password_file, token_file


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
    # Known before the server binds it: connections must dial the orchestrator on it.
    port = settings.grpc_port or free_port()
    async with AsyncExitStack() as exit_stack:
        if settings.database_url:
            database_url = settings.database_url
        else:
            postgres = EmbeddedPostgres(state / "postgres", durable=settings.durable).start()
            exit_stack.callback(postgres.stop)
            _ensure_database(postgres.url, CONTROL_PLANE_DATABASE)
            database_url = postgres.admin_url(CONTROL_PLANE_DATABASE)
        if settings.temporal_address:
            temporal_address = settings.temporal_address
        else:
            temporal = TemporalDevServer(
                db_filename=state / "temporal.sqlite", log_file=state / "temporal.log"
            ).start()
            exit_stack.callback(temporal.stop)
            temporal_address = temporal.address
        pki = ensure_dev_pki(state / "pki")
        secrets_files = {
            "SEVVO_AUTH_KEK_FILE": state / "auth-kek",
            "SEVVO_AUTH_BOOTSTRAP_TOKEN_FILE": state / "bootstrap-token",
            "SEVVO_CONNECTIONS_KEYRING_FILE": state / "connections-keyring.json",
            "SEVVO_ORCHESTRATOR_KEYRING_FILE": state / "orchestrator-keyring.json",
            # One secret, two readers: the orchestrator proves itself to auth with it.
            "SEVVO_AUTH_SERVICE_TOKEN_FILE": state / "service-token",
            "SEVVO_ORCHESTRATOR_SERVICE_TOKEN_FILE": state / "service-token",
        }
        if not secrets_files["SEVVO_AUTH_KEK_FILE"].exists():
            write_key_encryption_key(secrets_files["SEVVO_AUTH_KEK_FILE"])
        for name in ("SEVVO_AUTH_BOOTSTRAP_TOKEN_FILE", "SEVVO_AUTH_SERVICE_TOKEN_FILE"):
            if not secrets_files[name].exists():
                write_bootstrap_token(secrets_files[name])
        for name in ("SEVVO_CONNECTIONS_KEYRING_FILE", "SEVVO_ORCHESTRATOR_KEYRING_FILE"):
            if not secrets_files[name].exists():
                write_keyring_file(secrets_files[name], Keyring.generate())
        peers = settings.peer_target or f"localhost:{port}"
        service_env = {
            **env,
            **{name: str(path) for name, path in secrets_files.items()},
            "SEVVO_DATABASE_URL": database_url,
            "SEVVO_TLS_CERT_FILE": str(pki.server_cert),
            "SEVVO_TLS_KEY_FILE": str(pki.server_key),
            "SEVVO_CA_FILE": str(pki.ca_cert),
            "SEVVO_AUTH_ENDPOINT": peers,
            "SEVVO_ORCHESTRATOR_ENDPOINT": peers,
            "SEVVO_CONNECTIONS_ENDPOINT": peers,
            "SEVVO_TEMPORAL_ADDRESS": temporal_address,
            "SEVVO_GRPC_HOST": "127.0.0.1",
            "SEVVO_GRPC_PORT": str(port),
        }
        for name in ("SEVVO_DATABASE_URL_FILE", "SEVVO_TEMPORAL_TLS"):
            service_env.pop(name, None)

        auth = AuthApp(AuthConfig.load(service_env))
        auth.open()
        exit_stack.callback(auth.close)
        if auth.notices is not None:
            exit_stack.push_async_callback(auth.notices.close)
        connections = ConnectionsApp(ConnectionsConfig.load(service_env))
        connections.open()
        exit_stack.push_async_callback(connections.aclose)
        orchestrator = OrchestratorApp(OrchestratorConfig.load(service_env))
        # Its schedules' proofs need a Temporal token from auth, over the port opened below.
        await orchestrator.open(prove_schedules=False)
        exit_stack.push_async_callback(orchestrator.aclose)
        orchestrator.watch_revocations(auth.verifier)
        password_file, dev_token_file = _bootstrap_dev_org(auth, state)

        # One process, one server: every service shares auth's in-process verifier, which
        # reads keys and revocations straight from auth's store.
        # Health as in production: SERVING while every service's database pool answers
        # and auth's keys are loaded (the three share auth's verifier).
        health = ServerHealth(
            [
                *auth.readiness(),
                database_check(connections.store, name="connections database"),
                database_check(orchestrator.store, name="orchestrator database"),
            ]
        )
        server, _ = await start_server(
            [auth.spec(), connections.spec(), orchestrator.spec()],
            verifier=auth.verifier,
            tls=auth.config.tls,
            host="127.0.0.1",
            port=port,
            health=health,
        )
        exit_stack.push_async_callback(stop_serving, server, health, grace=3)
        await orchestrator.prove_schedules()

        host, _, temporal_port = temporal_address.rpartition(":")
        proxy = TlsProxy(
            (host, int(temporal_port)), pki.server_cert, pki.server_key, client_ca=pki.ca_cert
        )
        await proxy.start()
        exit_stack.push_async_callback(proxy.stop)

        console = None
        if settings.console_port is not None:
            # As in production: its own HTTPS certificate (the dev one names localhost), the
            # one gRPC endpoint, the dev CA. Stopped first, before the services it calls.
            console = ConsoleServer(
                ConsoleConfig(
                    services_endpoint=f"localhost:{port}",
                    tls=TlsFiles(cert=pki.server_cert, key=pki.server_key),
                    ca_file=pki.ca_cert,
                    host="127.0.0.1",
                    port=settings.console_port,
                ),
                embedded=True,
            )
            try:
                await console.start()
            except OSError as exc:
                raise ServerStartError(
                    f"the web console could not listen on 127.0.0.1:{settings.console_port}"
                    f" ({exc.strerror}); set SEVVO_DEV_CONSOLE_PORT to a free port, or"
                    " SEVVO_DEV_CONSOLE=false"
                ) from exc
            exit_stack.push_async_callback(console.stop)

        stack = RunningStack(
            state_dir=state,
            grpc_target=f"localhost:{port}",
            pki=pki,
            database_url=database_url,
            temporal_address=temporal_address,
            agent_temporal_address=f"localhost:{proxy.address.rpartition(':')[2]}",
            admin_email=DEV_ADMIN_EMAIL,
            admin_password_file=password_file,
            bootstrap_token_file=secrets_files["SEVVO_AUTH_BOOTSTRAP_TOKEN_FILE"],
            auth=auth,
            connections=connections,
            orchestrator=orchestrator,
            console=console,
            _exit=exit_stack.pop_all(),
        )
    if settings.start_agent and dev_token_file is not None:
        try:
            # Spawned here (this thread outlives it), awaited off the loop: the loop must
            # keep serving the agent's own token exchange while we wait for it.
            # A directory the dev agent may write Parquet files into (a Parquet directory
            # connection names it), as an operator would mount a volume for it.
            lake = dev_lake_dir(state)
            lake.mkdir(mode=0o700, exist_ok=True)
            agent = stack.start_agent(
                dev_token_file.read_text().strip(),
                name="dev-agent",
                wait=False,
                file_roots=str(lake),
            )
            await asyncio.to_thread(agent.wait_until_ready, timeout=60)
        except BaseException:
            await stack.stop()
            raise
    return stack


def dev_lake_dir(state_dir: Path) -> Path:
    """The dev agent's one file root (SEVVO_AGENT_FILE_ROOTS), for Parquet directories."""
    return state_dir / "lake"


__all__ = ["DEV_CONSOLE_PORT", "RunningStack", "StackSettings", "dev_lake_dir", "start_stack"]
