"""``python -m devstack`` (what ``make dev`` runs) as a subprocess, started and stopped as a
user would: the terminal output is read as it comes, Ctrl-C is SIGINT."""

from __future__ import annotations

import os
import pty
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

import psutil

from devstack.launcher import READY_LINE

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def running_directory(prefix: str) -> Iterator[Path]:
    """A fresh directory under /tmp (short enough for Postgres's unix socket path) to run the
    launcher in, removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        # As a checkout is: enterable by the user Postgres runs as when the test runs as root.
        work.chmod(0o711)
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def launcher_env(**overrides: str) -> dict[str, str]:
    """This environment without any SEVVO_ or PG variable (the caller's own stack, database
    or session must not leak in), plus ``overrides``. The web console listens on a free port
    (not `make dev`'s 8444, which a developer's stack or another test may hold)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SEVVO_", "PG"))}
    return {**base, "SEVVO_DEV_CONSOLE_PORT": "0", **overrides}


class Launcher:
    """One ``python -m devstack`` child whose terminal output (stdout and stderr) is collected
    line by line on a thread."""

    def __init__(self, cwd: Path, env: Mapping[str, str], *, keyboard: bool = False) -> None:
        """With ``keyboard``, standard input is a terminal (a pty) that press_enter() types
        on; otherwise it is empty, as under a CI runner."""
        self.cwd = cwd
        self._keyboard: int | None = None
        stdin: int = subprocess.DEVNULL
        if keyboard:
            self._keyboard, stdin = pty.openpty()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "devstack"],
            cwd=cwd,
            env=dict(env),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if keyboard:
            os.close(stdin)  # The child holds its own copy.
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self.lines.append(line)
            if READY_LINE in line:
                self._ready.set()

    @property
    def output(self) -> str:
        """Everything the launcher printed so far."""
        return "".join(self.lines)

    def wait_until_up(self, timeout: float) -> float:
        """Waits for the banner's last line; returns how long that took. Fails with the
        output when the launcher exits or takes longer than ``timeout``."""
        started = time.monotonic()
        while not self._ready.wait(0.2):
            if self._proc.poll() is not None or time.monotonic() - started > timeout:
                self._reader.join(timeout=5)
                raise AssertionError(
                    f"the launcher did not come up (exit {self._proc.poll()}):\n"
                    + "".join(self.lines[-40:])
                )
        return time.monotonic() - started

    def press_enter(self) -> None:
        """Types Enter on the launcher's terminal."""
        assert self._keyboard is not None, "started without keyboard=True"
        os.write(self._keyboard, b"\n")

    def descendants(self) -> list[psutil.Process]:
        """Every process the launcher started, and theirs."""
        found: list[psutil.Process] = psutil.Process(self._proc.pid).children(recursive=True)
        return found

    def stop(self, timeout: float = 60) -> int:
        """Ctrl-C: SIGINT, then waits for the launcher to exit; returns its exit code."""
        self._proc.send_signal(signal.SIGINT)
        code = self._proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # A failed test must not leave a stack behind: its children die with it (their
        # parent-death signal), once it is gone.
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        if self._keyboard is not None:
            os.close(self._keyboard)


def wait_until_gone(processes: list[psutil.Process], timeout: float = 10) -> list[str]:
    """Waits for ``processes`` to exit; returns a description of those still running."""
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    left = []
    for process in alive:
        try:
            left.append(f"{process.pid} ({process.name()})")
        except psutil.NoSuchProcess:
            continue  # exited just now
    return left
