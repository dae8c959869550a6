"""A control plane whose every part is its own OS process, each killable (SIGKILL) and restartable.

Built for fault injection: control-plane Postgres, the Temporal dev server (state in a SQLite
file), auth, connections and orchestrator (each its production entry point,
``python -m services.<name> serve``), the gRPC router that gives agents and users one endpoint
(devstack.grpc_router), the TLS proxy in front of Temporal (devstack.tls_proxy) and agents
(``python -m agent``). Every component keeps its port and its state across ``kill()`` and
``restart()``, so peers reconnect to the same address and find their data, as after a pod
restart. Services verify tokens remotely, through auth's published keys, as in production.

With ``replicas=N`` each service runs as N processes (components ``auth-1`` ... ``auth-N``),
each on its own port, sharing the database, keys and secrets; the router balances each
service's calls across its replicas (devstack.grpc_router), and the services reach each other
through the router too, never a fixed replica, as through Kubernetes Services.

Unlike devstack.stack, nothing runs in the caller's process: the caller only spawns, probes
and signals. Spawn, kill and restart from one long-lived thread (the main thread): a child's
parent-death signal fires when the thread that forked it exits (see devstack.processes.spawn).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.agent_process import AgentProcess, AgentSettings
from devstack.grpc_router import READINESS_NAMES
from devstack.pki import DevPki, ensure_dev_pki
from devstack.postgres import EmbeddedPostgres
from devstack.processes import (
    ServerStartError,
    child_pids,
    free_port,
    log_tail,
    open_private_log,
    pid_alive,
    spawn,
    stop_process,
    wait_until_ready,
)
from devstack.stack import CONTROL_PLANE_DATABASE, _ensure_database
from devstack.temporal import TemporalDevServer
from services.auth.config import write_bootstrap_token, write_key_encryption_key
from sevvo.runtime.files import write_private_file
from sevvo.runtime.grpc_client import ClientTls, secure_channel
from sevvo.runtime.logs import get_logger
from sevvo.runtime.sealing import Keyring, write_keyring_file

log = get_logger(__name__)

SERVICES = ("auth", "connections", "orchestrator")
# How long a Postgres child may take to notice that its postmaster is gone.
_ORPHAN_EXIT_SECONDS = 10.0
_PROBE_INTERVAL = 0.1


class Component(Protocol):
    """One part of the stack that can be killed at once and brought back as it was."""

    name: str

    def start(self) -> None:
        """Starts the component and returns once it is ready."""
        ...

    def kill(self) -> None:
        """Kills it with SIGKILL, as a node or OOM kill would, and reaps what it leaves."""
        ...

    def restart(self) -> None:
        """Starts it again on the same port and state; returns once it is ready."""
        ...

    def stop(self) -> None:
        """Stops it gracefully; idempotent."""
        ...


def grpc_health_probe(target: str, ca_file: Path, service: str = "") -> Callable[[], None]:
    """A readiness probe: raises until ``service`` at ``target`` reports SERVING over TLS."""

    def probe() -> None:
        with secure_channel(target, ClientTls(ca_file=ca_file)) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1
            )
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise ServerStartError(f"{service or 'server'} at {target} is not serving yet")

    return probe


def tcp_probe(port: int) -> Callable[[], None]:
    """A readiness probe: raises until something accepts TCP connections on 127.0.0.1:port."""

    def probe() -> None:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()

    return probe


class ChildProcess:
    """A command as a component: its own process group, output to a log file."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        env: Mapping[str, str],
        log_file: Path,
        probe: Callable[[], None],
        *,
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.log_file = log_file
        self._argv = list(command)
        self._env = dict(env)
        self._probe = probe
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The process id (also its process group id)."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._proc.pid

    def spawn(self) -> None:
        """Starts the process without waiting for it to be ready (see wait_ready)."""
        if self._proc is not None:
            raise RuntimeError(f"{self.name} is already running")
        with open_private_log(self.log_file) as output:
            self._proc = spawn(
                self._argv, death_signal=signal.SIGTERM, env=self._env, output=output
            )

    def wait_ready(self) -> None:
        """Waits until the probe passes; raises ServerStartError quoting the log otherwise."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} is not running")
        try:
            wait_until_ready(
                self._proc,
                self._probe,
                timeout=self._startup_timeout,
                what=self.name,
                interval=_PROBE_INTERVAL,
            )
        except ServerStartError as exc:
            raise ServerStartError(f"{exc}; log tail:\n{log_tail(self.log_file)}") from None

    def start(self) -> None:
        """Spawns the process and waits until it is ready."""
        self.spawn()
        self.wait_ready()

    def kill(self) -> None:
        """SIGKILLs the whole process group and reaps it."""
        if self._proc is not None:
            stop_process(self._proc, stop_signal=signal.SIGKILL, signal_group=True, timeout=5)
            self._proc = None

    def restart(self) -> None:
        """Starts the process again, with the same arguments, environment and port."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """SIGTERM (services drain their calls), SIGKILL after ``stop_timeout`` seconds."""
        if self._proc is not None:
            stop_process(
                self._proc,
                stop_signal=signal.SIGTERM,
                signal_group=True,
                timeout=self._stop_timeout,
            )
            self._proc = None


class PythonProcess(ChildProcess):
    """``python -m <module> ...`` as a component."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_file: Path,
        probe: Callable[[], None],
        *,
        startup_timeout: float = 60.0,
    ) -> None:
        super().__init__(
            name,
            [sys.executable, "-m", *argv],
            env,
            log_file,
            probe,
            startup_timeout=startup_timeout,
        )


class ControlPlanePostgres:
    """The control plane's PostgreSQL, with a kill that leaves it restartable.

    A SIGKILLed postmaster leaves its backends running until they notice (within a second or
    so); a new postmaster refuses to start while any of them still holds the old shared
    memory, so ``kill`` waits for them, and SIGKILLs the stragglers. The restart then runs
    crash recovery from the WAL, as after a real crash. fsync is off (fine: the OS survives a
    process kill) but commits are synchronous, so no acknowledged commit is lost to the kill.
    """

    name = "postgres"

    def __init__(self, directory: Path, port: int) -> None:
        self.server = EmbeddedPostgres(
            directory, port=port, durable=False, settings={"synchronous_commit": "on"}
        )

    def start(self) -> None:
        """Starts the server (initializing the cluster the first time)."""
        self.server.start()

    def kill(self) -> None:
        """SIGKILLs the postmaster and waits until none of its children is left."""
        postmaster = self.server.pid
        children = child_pids(postmaster)
        with suppress(ProcessLookupError):
            os.kill(postmaster, signal.SIGKILL)
        deadline = time.monotonic() + _ORPHAN_EXIT_SECONDS
        while any(pid_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in children:
            if pid_alive(pid):
                log.warning("postgres child outlived its postmaster; killing it", pid=pid)
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        while any(pid_alive(pid) for pid in children):
            time.sleep(0.05)
        self.server.stop()  # Only reaps the dead postmaster now.

    def restart(self) -> None:
        """Starts the server again on the same port and data directory."""
        self.start()

    def stop(self) -> None:
        """Fast shutdown."""
        self.server.stop()


class TemporalProcess:
    """The Temporal dev server on a fixed port with its state in a SQLite file."""

    name = "temporal"

    def __init__(self, db_filename: Path, log_file: Path, port: int) -> None:
        # The default dynamic config, as devstack.temporal sets it for every dev server.
        self.server = TemporalDevServer(db_filename=db_filename, port=port, log_file=log_file)

    def start(self) -> None:
        """Starts the server; workflows, schedules and namespaces come back from the file."""
        self.server.start()

    def kill(self) -> None:
        """SIGKILLs the server's process group and reaps it."""
        with suppress(ProcessLookupError):
            os.killpg(self.server.pid, signal.SIGKILL)
        self.server.stop()  # Reaps; nothing is left to signal.

    def restart(self) -> None:
        """Starts the server again on the same port and file."""
        self.start()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after its stop timeout."""
        self.server.stop()


class Agent:
    """An agent process (``python -m agent``) as a component."""

    def __init__(self, name: str, process: AgentProcess) -> None:
        self.name = name
        self.process = process

    def start(self) -> None:
        """Starts the agent and returns once it polls its task queue."""
        self.process.start(wait=True, timeout=60)

    def kill(self) -> None:
        """SIGKILLs the agent's process group."""
        self.process.kill()

    def restart(self) -> None:
        """Starts the agent again with the same deployment token."""
        self.start()

    def stop(self) -> None:
        """SIGTERM; the agent cancels its activities and exits."""
        self.process.stop()


@dataclass
class ProcessStack:
    """A running stack of processes and what clients need to reach it."""

    state_dir: Path
    pki: DevPki
    # The one endpoint agents and users dial (the router), ``localhost:PORT``.
    grpc_target: str
    # Temporal's plaintext frontend (for the orchestrator and for inspection).
    temporal_address: str
    # Temporal behind the mTLS proxy, as agents reach it.
    agent_temporal_address: str
    bootstrap_token_file: Path
    components: dict[str, Component] = field(default_factory=dict)
    # Each service's replicas, by component name (``["auth"]``, or ``["auth-1", "auth-2"]``).
    replicas: dict[str, list[str]] = field(default_factory=dict)

    def kill(self, name: str) -> None:
        """SIGKILLs one component."""
        log.info("killing", component=name)
        self.components[name].kill()

    def restart(self, name: str) -> None:
        """Restarts one component on its port and state and waits until it is ready."""
        self.components[name].restart()
        log.info("restarted", component=name)

    def add_agent(self, name: str, deployment_token: str, *, reaper_seconds: float = 60.0) -> Agent:
        """Starts an agent for a deployment token (kept in a 0600 file) as component ``name``."""
        token_file = self.state_dir / f"{name}-deployment-token"
        write_private_file(token_file, deployment_token + "\n")
        settings = AgentSettings(
            token_file=token_file,
            control_plane_endpoint=self.grpc_target,
            temporal_address=self.agent_temporal_address,
            ca_file=self.pki.ca_cert,
            temporal_client_cert=self.pki.client_cert,
            temporal_client_key=self.pki.client_key,
            reaper_seconds=reaper_seconds,
        )
        agent = Agent(name, AgentProcess(settings, self.state_dir / "logs" / f"{name}.log"))
        self.components[name] = agent
        agent.start()
        return agent

    def stop(self) -> None:
        """Stops agents first and Postgres last: the reverse of the start order."""
        for component in reversed(list(self.components.values())):
            try:
                component.stop()
            except Exception as exc:  # Stop the rest regardless; the first error is logged.
                log.warning("component did not stop", component=component.name, error=str(exc))
        self.components.clear()


def _write_secrets(state: Path, database_url: str) -> dict[str, str]:
    """The services' secret files (created once, 0600), as ``*_FILE`` variables."""
    files = {
        "SEVVO_DATABASE_URL_FILE": state / "database-url",
        "SEVVO_AUTH_KEK_FILE": state / "auth-kek",
        "SEVVO_AUTH_BOOTSTRAP_TOKEN_FILE": state / "bootstrap-token",
        "SEVVO_CONNECTIONS_KEYRING_FILE": state / "connections-keyring.json",
        "SEVVO_ORCHESTRATOR_KEYRING_FILE": state / "orchestrator-keyring.json",
        # One secret, two readers: the orchestrator proves itself to auth with it.
        "SEVVO_AUTH_SERVICE_TOKEN_FILE": state / "service-token",
        "SEVVO_ORCHESTRATOR_SERVICE_TOKEN_FILE": state / "service-token",
    }
    write_private_file(files["SEVVO_DATABASE_URL_FILE"], database_url)
    if not files["SEVVO_AUTH_KEK_FILE"].exists():
        write_key_encryption_key(files["SEVVO_AUTH_KEK_FILE"])
    for name in ("SEVVO_AUTH_BOOTSTRAP_TOKEN_FILE", "SEVVO_AUTH_SERVICE_TOKEN_FILE"):
        if not files[name].exists():
            write_bootstrap_token(files[name])
    for name in ("SEVVO_CONNECTIONS_KEYRING_FILE", "SEVVO_ORCHESTRATOR_KEYRING_FILE"):
        if not files[name].exists():
            write_keyring_file(files[name], Keyring.generate())
    return {name: str(path) for name, path in files.items()}


def _common_env(pki: DevPki) -> dict[str, str]:
    """What every Python process of the stack is given: TLS files, loopback, log level."""
    common = {
        "PATH": os.environ.get("PATH", ""),
        "SEVVO_TLS_CERT_FILE": str(pki.server_cert),
        "SEVVO_TLS_KEY_FILE": str(pki.server_key),
        "SEVVO_CA_FILE": str(pki.ca_cert),
        "SEVVO_GRPC_HOST": "127.0.0.1",
        "SEVVO_LOG_LEVEL": "info",
    }
    if "PYTHONPATH" in os.environ:  # A worktree's code, not the installed package's.
        common["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return common


def _service_process(
    pki: DevPki,
    logs: Path,
    service: str,
    name: str,
    base_env: Mapping[str, str],
    port: int,
    jwks_port: int | None,
) -> PythonProcess:
    """One replica of a service (``python -m services.<service> serve``) named ``name``."""
    env = {**base_env, "SEVVO_GRPC_PORT": str(port)}
    if jwks_port is not None:
        env["SEVVO_AUTH_JWKS_PORT"] = str(jwks_port)
    probe = grpc_health_probe(f"localhost:{port}", pki.ca_cert, READINESS_NAMES[service])
    return PythonProcess(name, [f"services.{service}", "serve"], env, logs / f"{name}.log", probe)


def _router_process(
    pki: DevPki,
    logs: Path,
    common: Mapping[str, str],
    backends: Mapping[str, str],
    port: int,
) -> PythonProcess:
    """The router (devstack.grpc_router) on ``port``, forwarding to ``backends``' endpoints."""
    return PythonProcess(
        "router",
        ["devstack.grpc_router"],
        {**common, **backends, "SEVVO_GRPC_PORT": str(port)},
        logs / "router.log",
        grpc_health_probe(f"localhost:{port}", pki.ca_cert),
    )


def replica_names(service: str, replicas: int) -> list[str]:
    """The component names of a service's replicas: its own name when it runs alone."""
    return [service] if replicas == 1 else [f"{service}-{i}" for i in range(1, replicas + 1)]


def start_process_stack(
    state_dir: Path, *, service_env: Mapping[str, str] | None = None, replicas: int = 1
) -> ProcessStack:
    """Starts Postgres, Temporal, the three services, the router and the Temporal proxy.

    ``state_dir`` must be reachable by an unprivileged user when running as root (Postgres
    runs as one), e.g. under /tmp. ``service_env`` adds variables for the services (timeouts,
    log level). ``replicas`` processes of each service run behind the router (see the module's
    docstring). On failure, whatever had started is stopped and the error re-raised.
    """
    if replicas < 1:
        raise ValueError("replicas must be at least 1")
    state_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
    state_dir.chmod(0o711)
    logs = state_dir / "logs"
    pki = ensure_dev_pki(state_dir / "pki")
    ports = {name: free_port() for name in ("postgres", "temporal", "router", "temporal-proxy")}
    names = {service: replica_names(service, replicas) for service in SERVICES}
    # Each replica its own gRPC port, and each auth replica its own Temporal JWKS port.
    grpc_ports = {name: free_port() for service in SERVICES for name in names[service]}
    jwks_ports = {name: free_port() for name in names["auth"]}
    stack = ProcessStack(
        state_dir=state_dir,
        pki=pki,
        grpc_target=f"localhost:{ports['router']}",
        temporal_address=f"127.0.0.1:{ports['temporal']}",
        agent_temporal_address=f"localhost:{ports['temporal-proxy']}",
        bootstrap_token_file=state_dir / "bootstrap-token",
        replicas=names,
    )
    try:
        postgres = ControlPlanePostgres(state_dir / "postgres", ports["postgres"])
        stack.components["postgres"] = postgres
        postgres.start()
        _ensure_database(postgres.server.url, CONTROL_PLANE_DATABASE)
        temporal = TemporalProcess(
            state_dir / "temporal.sqlite", logs / "temporal.log", ports["temporal"]
        )
        stack.components["temporal"] = temporal
        temporal.start()

        common = _common_env(pki)
        # What the router forwards to: every replica of each service.
        backends = {
            f"SEVVO_{service.upper()}_ENDPOINT": ",".join(
                f"localhost:{grpc_ports[name]}" for name in names[service]
            )
            for service in SERVICES
        }
        # What the services dial for each other: with one replica each, each other directly
        # (as before replicas existed); with more, the router, which balances across them.
        peers = (
            backends if replicas == 1 else {variable: stack.grpc_target for variable in backends}
        )
        service_base = {
            **common,
            **peers,
            **_write_secrets(state_dir, postgres.server.admin_url(CONTROL_PLANE_DATABASE)),
            "SEVVO_TEMPORAL_ADDRESS": stack.temporal_address,
            # Other services learn auth's keys and revocations by polling it, every 2 s.
            "SEVVO_TOKEN_REFRESH_SECONDS": "2",
            **(service_env or {}),
        }

        def python(
            name: str, argv: Sequence[str], env: Mapping[str, str], probe: Callable[[], None]
        ) -> PythonProcess:
            process = PythonProcess(name, argv, env, logs / f"{name}.log", probe)
            stack.components[name] = process
            return process

        def service_process(service: str, name: str) -> PythonProcess:
            process = _service_process(
                pki, logs, service, name, service_base, grpc_ports[name], jwks_ports.get(name)
            )
            stack.components[name] = process
            return process

        router = _router_process(pki, logs, common, backends, ports["router"])
        stack.components["router"] = router
        if replicas > 1:
            # The services reach each other through it, from their first call on.
            router.start()
        # auth first: the others fetch its keys as they start.
        _spawn_then_wait([service_process("auth", name) for name in names["auth"]])
        _spawn_then_wait(
            [
                service_process(service, name)
                for service in ("connections", "orchestrator")
                for name in names[service]
            ]
        )
        proxy = python(
            "temporal-proxy",
            ["devstack.tls_proxy"],
            {
                **common,
                "SEVVO_PROXY_UPSTREAM": stack.temporal_address,
                "SEVVO_PROXY_PORT": str(ports["temporal-proxy"]),
                # Agents present the dev client certificate: mutual TLS, as in production.
                "SEVVO_PROXY_CLIENT_CA_FILE": str(pki.ca_cert),
            },
            tcp_probe(ports["temporal-proxy"]),
        )
        _spawn_then_wait([router, proxy] if replicas == 1 else [proxy])
    except BaseException:
        stack.stop()
        raise
    log.info(
        "process stack up",
        grpc_target=stack.grpc_target,
        state_dir=str(state_dir),
        replicas=replicas,
    )
    return stack


class ReplicasBeside:
    """A second replica of each service, each its own process, beside a stack that serves all
    three in one process (devstack.stack), and the router balancing each service's calls
    between the two.

    For running the end-to-end suite against replicas (tests/plugins/dev_stack.py): the tests
    keep their hold on the in-process services' objects, while any call through the router,
    and any call the services make to each other (configure the in-process stack to dial
    ``grpc_target``), may land on either replica. Start the router first (``start_router``),
    then the in-process stack, then ``start_services``.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        in_process_port: int,
        service_env: Mapping[str, str] | None = None,
    ) -> None:
        state_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
        self._state_dir = state_dir
        self._logs = state_dir / "logs"
        self.pki = ensure_dev_pki(state_dir / "pki")
        self._service_env = dict(service_env or {})
        self._ports = {service: free_port() for service in SERVICES}
        self._jwks_port = free_port()
        router_port = free_port()
        self.grpc_target = f"localhost:{router_port}"
        self.components: dict[str, PythonProcess] = {}
        self._common = _common_env(self.pki)
        backends = {
            f"SEVVO_{service.upper()}_ENDPOINT": (
                f"localhost:{in_process_port},localhost:{self._ports[service]}"
            )
            for service in SERVICES
        }
        self.components["router"] = _router_process(
            self.pki, self._logs, self._common, backends, router_port
        )

    def start_router(self) -> None:
        """Starts the router; calls wait for (or fail without) a ready replica behind it."""
        self.components["router"].start()

    def start_services(self, database_url: str, temporal_address: str) -> None:
        """Starts ``auth-2``, ``connections-2`` and ``orchestrator-2`` on the stack's database,
        secrets (the same files in the state directory) and Temporal."""
        base = {
            **self._common,
            **{f"SEVVO_{s.upper()}_ENDPOINT": self.grpc_target for s in SERVICES},
            **_write_secrets(self._state_dir, database_url),
            "SEVVO_TEMPORAL_ADDRESS": temporal_address,
            **self._service_env,
        }
        processes = [
            _service_process(
                self.pki,
                self._logs,
                service,
                f"{service}-2",
                base,
                self._ports[service],
                self._jwks_port if service == "auth" else None,
            )
            for service in SERVICES
        ]
        for process in processes:
            self.components[process.name] = process
        try:
            _spawn_then_wait(processes)
        except BaseException:
            self.stop()
            raise

    def calls_served(self) -> dict[str, int]:
        """How many sevvo calls each process replica has logged answering, by name."""
        served = {}
        for name in self.components:
            if name == "router":
                continue
            path = self._logs / f"{name}.log"
            text = path.read_text(errors="replace") if path.exists() else ""
            served[name] = sum(
                1
                for line in text.splitlines()
                if '"event": "rpc"' in line and '"method": "/sevvo.' in line
            )
        return served

    def stop(self) -> None:
        """Stops the services, then the router; idempotent."""
        for process in reversed(list(self.components.values())):
            try:
                process.stop()
            except Exception as exc:  # Stop the rest regardless.
                log.warning("component did not stop", component=process.name, error=str(exc))


def _spawn_then_wait(processes: Sequence[PythonProcess]) -> None:
    """Starts processes side by side (their imports take the longest), then waits for each."""
    for process in processes:
        process.spawn()
    for process in processes:
        process.wait_ready()


__all__ = [
    "Agent",
    "Component",
    "ControlPlanePostgres",
    "ProcessStack",
    "PythonProcess",
    "ReplicasBeside",
    "TemporalProcess",
    "grpc_health_probe",
    "replica_names",
    "start_process_stack",
    "tcp_probe",
]
