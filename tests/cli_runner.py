"""Running the real ``sevvo`` command as a user would, for the CLI test modules.

Two ways, one ``Result``: ``run_sevvo`` starts ``python -m cli`` as a separate process (the
real wiring: entry point, interpreter start-up, exit status), and ``run_sevvo_in_process``
calls the same ``cli.app.main`` in this process with the user's environment, argv and stdin
swapped in and stdout/stderr captured. The in-process run saves an interpreter start and
every import (~0.7 s a call on a loaded CI machine), so the CLI modules use it for what a
command does and keep a few subprocess cases for the wiring.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    """What one run of the command did."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout parsed as JSON."""
        return json.loads(self.stdout)


def user_env(endpoint: str, ca_file: Path, config_dir: Path) -> dict[str, str]:
    """The environment of a user of this endpoint: no other SEVVO_ setting leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEVVO_")}
    env.update(
        SEVVO_ENDPOINT=endpoint, SEVVO_CA_FILE=str(ca_file), SEVVO_CONFIG_DIR=str(config_dir)
    )
    return env


def run_sevvo(args: tuple[str, ...], env: dict[str, str], stdin: str, timeout: float) -> Result:
    """Runs ``sevvo`` with stdout as a pipe (so its output is JSON unless --output says not)."""
    done = subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


# One in-process run at a time: argv, the environment and the standard streams are global.
_IN_PROCESS = threading.Lock()


def run_sevvo_in_process(args: tuple[str, ...], env: Mapping[str, str], stdin: str) -> Result:
    """Runs ``sevvo``'s ``main`` here as ``run_sevvo`` would run it in a process.

    stdout and stderr are pipes (not terminals, so output is JSON unless --output says not),
    stdin holds ``stdin``, ``os.environ`` is exactly ``env`` and argv is ``sevvo *args`` for
    the call; all are restored after it. The exit code is the one the process would exit
    with. An unexpected exception propagates (a process would print a traceback and exit 1).
    """
    from cli.app import main  # The CLI modules import it anyway; others need not.

    stdout, stderr = _pipe(), _pipe()
    with (
        _IN_PROCESS,
        _environ(env),
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
        _swapped(sys, "stdin", _pipe(stdin)),
        _swapped(sys, "argv", ["sevvo", *args]),
    ):
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = _exit_status(exit_.code, stderr)
    return Result(code, _read(stdout), _read(stderr))


@dataclass
class Sevvo:
    """Runs ``sevvo`` against a stack as one signed-in user; keeps what it printed."""

    endpoint: str
    ca_file: Path
    config_dir: Path
    printed: list[str] = field(default_factory=list)

    def __call__(self, *args: str, stdin: str = "", process: bool = False) -> Result:
        """The command's result (in this process unless ``process``); JSON on stdout."""
        env = user_env(self.endpoint, self.ca_file, self.config_dir)
        if process:
            result = run_sevvo(args, env, stdin, timeout=150)
        else:
            result = run_sevvo_in_process(args, env, stdin)
        self.printed.append(result.stdout + result.stderr)
        return result

    def ok(self, *args: str, stdin: str = "") -> Any:
        """Runs the command, asserts it succeeded, and returns its JSON."""
        result = self(*args, stdin=stdin)
        assert result.code == 0, result.stderr
        return result.json()


def _pipe(content: str = "") -> io.TextIOWrapper:
    """A text stream that, like a pipe, is no terminal and has a byte buffer beneath."""
    return io.TextIOWrapper(io.BytesIO(content.encode()), encoding="utf-8", write_through=True)


def _read(stream: io.TextIOWrapper) -> str:
    stream.flush()
    buffer = stream.buffer
    assert isinstance(buffer, io.BytesIO)
    return buffer.getvalue().decode()


def _exit_status(code: object, stderr: io.TextIOWrapper) -> int:
    """What ``sys.exit(code)`` makes the process exit with (a message prints and exits 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    stderr.write(f"{code}\n")
    return 1


@contextlib.contextmanager
def _environ(env: Mapping[str, str]) -> Iterator[None]:
    # Only the keys that differ change: servers this process runs in threads keep reading
    # every other variable undisturbed.
    saved = {key: os.environ.get(key) for key in set(os.environ) | set(env)}
    for key in set(os.environ) - set(env):
        del os.environ[key]
    for key, value in env.items():
        if os.environ.get(key) != value:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            elif os.environ.get(key) != old:
                os.environ[key] = old


@contextlib.contextmanager
def _swapped(owner: object, name: str, value: object) -> Iterator[None]:
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)
