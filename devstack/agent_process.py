"""An agent run as its own process (``python -m agent``), as it runs in a customer's cluster.

The dev stack and the end-to-end tests start agents this way so that what they exercise is
the real entry point: configuration from the environment, TLS to the control plane and to
Temporal, and a process that can be stopped, killed and restarted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from devstack.processes import (
    ServerStartError,
    log_tail,
    open_private_log,
    spawn,
    stop_process,
)
from sevvo.runtime.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class AgentSettings:
    """Where an agent dials and what it presents."""

    token_file: Path
    control_plane_endpoint: str
    temporal_address: str
    ca_file: Path
    temporal_client_cert: Path | None = None
    temporal_client_key: Path | None = None
    bearer_check_seconds: float = 15.0
    reaper_seconds: float = 60.0
    # The credential API's Unix socket for workloads; None turns it off.
    credential_socket: Path | None = None
    # SEVVO_WARM_POOL (agent.warm_pool), e.g. "shop:readonly=5"; empty: no pool.
    warm_pool: str = ""
    warm_pool_refill_seconds: float = 5.0
    # How often the agent refreshes its liveness file (agent.liveness).
    liveness_interval_seconds: float = 5.0
    # SEVVO_AGENT_FILE_ROOTS: the directories Parquet directory connections may name; "" none.
    file_roots: str = ""

    def environment(self) -> dict[str, str]:
        """The agent's environment, secrets passed as file paths only."""
        env = {
            "PATH": os.environ.get("PATH", ""),
            "SEVVO_DEPLOYMENT_TOKEN_FILE": str(self.token_file),
            "SEVVO_CONTROL_PLANE_ENDPOINT": self.control_plane_endpoint,
            "SEVVO_TEMPORAL_ADDRESS": self.temporal_address,
            "SEVVO_CA_FILE": str(self.ca_file),
            "SEVVO_LOG_LEVEL": os.environ.get("SEVVO_LOG_LEVEL", "info"),
            "SEVVO_BEARER_CHECK_SECONDS": str(self.bearer_check_seconds),
            "SEVVO_REAPER_SECONDS": str(self.reaper_seconds),
            "SEVVO_CREDENTIAL_SOCKET": str(self.credential_socket or ""),
            "SEVVO_WARM_POOL": self.warm_pool,
            "SEVVO_WARM_POOL_REFILL_SECONDS": str(self.warm_pool_refill_seconds),
            "SEVVO_AGENT_LIVENESS_INTERVAL_SECONDS": str(self.liveness_interval_seconds),
            "SEVVO_AGENT_FILE_ROOTS": self.file_roots,
        }
        if self.temporal_client_cert and self.temporal_client_key:
            env["SEVVO_TEMPORAL_TLS_CERT"] = str(self.temporal_client_cert)
            env["SEVVO_TEMPORAL_TLS_KEY"] = str(self.temporal_client_key)
        return env


class AgentProcess:
    """One ``python -m agent`` child; its output goes to ``log_file``.

    ``command`` runs the agent instead of this interpreter's ``-m agent`` (scripts/images_demo.py
    runs the agent image); it gets ``settings.environment()`` as its environment.
    """

    def __init__(
        self, settings: AgentSettings, log_file: Path, command: Sequence[str] = ()
    ) -> None:
        self.settings = settings
        self.log_file = log_file
        self.command = list(command) or [sys.executable, "-m", "agent"]
        # Readiness comes from the agent's ready file, not its log, which a log level above
        # info would silence.
        self.ready_file = log_file.with_name(log_file.name + ".ready")
        # Its own liveness file, not the shared default under /tmp: several agents may run.
        self.liveness_file = log_file.with_name(log_file.name + ".alive")
        self._proc: subprocess.Popen[bytes] | None = None
        self._offset = 0

    @property
    def pid(self) -> int:
        """The agent's process id."""
        if self._proc is None:
            raise RuntimeError("the agent is not running")
        return self._proc.pid

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> AgentProcess:
        """Starts the agent; with ``wait``, returns once it polls its task queue."""
        self._offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        self.ready_file.unlink(missing_ok=True)  # A killed agent never removed its own.
        # The agent's log names hosts, roles and connection ids: owner-only from the start.
        with open_private_log(self.log_file) as output:
            self._proc = spawn(
                self.command,
                death_signal=signal.SIGTERM,
                env={
                    **self.settings.environment(),
                    "SEVVO_AGENT_READY_FILE": str(self.ready_file),
                    "SEVVO_AGENT_LIVENESS_FILE": str(self.liveness_file),
                },
                output=output,
            )
        log.info("devstack.agent.started", pid=self._proc.pid, log_file=str(self.log_file))
        if wait:
            self.wait_until_ready(timeout=timeout)
        return self

    def wait_until_ready(self, *, timeout: float) -> None:
        """Waits until the agent polls its task queue (its ready file exists); fails early
        if it exits."""
        self._wait(self.ready_file.exists, "did not get ready", timeout)

    def output(self) -> str:
        """What this run of the agent has written so far."""
        with self.log_file.open("rb") as f:
            f.seek(self._offset)
            return f.read().decode(errors="replace")

    def wait_for(self, text: str, *, timeout: float) -> None:
        """Waits until the agent's output contains ``text``; fails early if it exits."""
        self._wait(lambda: text in self.output(), f"did not log {text!r}", timeout)

    def _wait(self, done: Callable[[], bool], failure: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return
            if self._proc is not None and self._proc.poll() is not None:
                raise ServerStartError(
                    f"the agent exited with {self._proc.returncode}:\n{log_tail(self.log_file)}"
                )
            time.sleep(0.05)
        raise ServerStartError(f"the agent {failure} in {timeout:.0f}s")

    def wait(self, timeout: float) -> int:
        """Waits for the agent to exit by itself and returns its exit code."""
        if self._proc is None:
            raise RuntimeError("the agent is not running")
        return self._proc.wait(timeout)

    def stop(self) -> None:
        """Asks the agent to stop (SIGTERM) and waits; kills it after 15 s."""
        if self._proc is not None:
            stop_process(self._proc, stop_signal=signal.SIGTERM, signal_group=True, timeout=15)

    def kill(self) -> None:
        """Kills the agent at once, as a node failure would."""
        if self._proc is not None:
            stop_process(self._proc, stop_signal=signal.SIGKILL, signal_group=True, timeout=5)
