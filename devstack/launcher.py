"""``make dev``: the stack, the tour's sample database, and a banner that stays on screen.

The terminal is for the person at it: the banner (where everything is, and the ``export``
lines another shell needs, also written to ``<state>/env``), then only warnings and errors.
Every log line goes to ``<state>/devstack.log``, so the services' request logs never scroll
the banner away; on a terminal, Enter shows the banner again.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

from devstack.pki import ensure_dev_pki
from devstack.processes import ServerStartError
from devstack.sample_db import ROLE_SECTIONS, SampleDatabase, start_sample_database
from devstack.stack import RunningStack, StackSettings, dev_lake_dir, start_stack
from sevvo.runtime.config import ConfigError
from sevvo.runtime.files import write_private_file
from sevvo.runtime.logs import configure_logging, get_logger

log = get_logger(__name__)

LOG_FILE: Final = "devstack.log"
ENV_FILE: Final = "env"
# The last line of the banner; tests wait for it.
READY_LINE: Final = "Press Ctrl-C to stop."
# Log levels the terminal shows besides the log file.
_TERMINAL_LEVELS: Final = frozenset({"warning", "error", "critical"})


@dataclass(frozen=True)
class DevEndpoints:
    """What a user of the running dev stack needs to know: addresses and file paths only."""

    state_dir: Path
    grpc_target: str
    ca_file: Path
    temporal_tls_address: str
    temporal_client_cert: Path
    temporal_client_key: Path
    admin_email: str
    admin_password_file: Path
    bootstrap_token_file: Path
    log_file: Path
    agent_logs: tuple[Path, ...]
    venv_bin: Path | None
    sample: SampleEndpoint | None
    sample_problem: str | None = None
    # The web console's address (https://localhost:8444), when the stack started it.
    console_url: str | None = None

    @classmethod
    def of(
        cls,
        stack: RunningStack,
        sample: SampleDatabase | None,
        *,
        log_file: Path,
        sample_problem: str | None = None,
    ) -> DevEndpoints:
        """The endpoints of a running stack and, when it started, the sample database."""
        return cls(
            state_dir=stack.state_dir,
            grpc_target=stack.grpc_target,
            ca_file=stack.pki.ca_cert,
            # The TLS proxy the agents use: the dev server's own port speaks plaintext only.
            temporal_tls_address=stack.agent_temporal_address,
            temporal_client_cert=stack.pki.client_cert,
            temporal_client_key=stack.pki.client_key,
            admin_email=stack.admin_email,
            admin_password_file=stack.admin_password_file,
            bootstrap_token_file=stack.bootstrap_token_file,
            log_file=log_file,
            agent_logs=tuple(agent.log_file for agent in stack.agents),
            venv_bin=_venv_bin(),
            sample=None if sample is None else SampleEndpoint.of(sample),
            sample_problem=sample_problem,
            console_url=stack.console_url,
        )


@dataclass(frozen=True)
class SampleEndpoint:
    """Where the sample database listens and where its roles' passwords are."""

    host: str
    port: int
    database: str
    password_files: tuple[tuple[str, Path], ...]

    @classmethod
    def of(cls, sample: SampleDatabase) -> SampleEndpoint:
        """The running sample database's endpoint."""
        return cls(
            host=sample.host,
            port=sample.port,
            database=sample.database,
            password_files=tuple((role, sample.password_file(role)) for _, role in ROLE_SECTIONS),
        )


def _venv_bin() -> Path | None:
    """This interpreter's virtualenv ``bin`` (where ``sevvo`` is), if it runs in one."""
    if sys.prefix == sys.base_prefix:
        return None
    return Path(sys.prefix) / "bin"


def export_lines(endpoints: DevEndpoints) -> list[str]:
    """The ``export`` lines a shell needs for the ``sevvo`` command line and the tour.

    Addresses and file paths only, never a secret: the admin's password and the roles'
    passwords stay in their 0600 files, read with ``--password-stdin``. Paths are absolute,
    so the lines work in any directory. SEVVO_TEMPORAL_ADDRESS is left out on purpose: set
    in a shell that later runs ``make dev``, it would make the stack use that address
    instead of starting its own Temporal.
    """
    lines = [
        f"export SEVVO_ENDPOINT={shlex.quote(endpoints.grpc_target)}",
        f"export SEVVO_CA_FILE={shlex.quote(str(endpoints.ca_file))}",
    ]
    if endpoints.sample is not None:
        lines.append(f"export SEVVO_DEV_SHOP_PORT={endpoints.sample.port}")
    if endpoints.agent_logs:
        lake = shlex.quote(str(dev_lake_dir(endpoints.state_dir)))
        lines.append(f"export SEVVO_DEV_LAKE={lake}")
    if endpoints.venv_bin is not None:
        lines.append(f'export PATH={shlex.quote(str(endpoints.venv_bin))}:"$PATH"')
    return lines


def env_file_text(endpoints: DevEndpoints) -> str:
    """The contents of ``<state>/env``: the export lines, for ``. .dev/env``."""
    header = "# The sevvo dev stack's settings for a shell: run `. .dev/env` (or paste these).\n"
    return header + "\n".join(export_lines(endpoints)) + "\n"


def banner(endpoints: DevEndpoints, *, interactive: bool) -> str:
    """The text shown once the stack is up; paths relative to the working directory."""
    e = endpoints
    rows: list[tuple[str, str]] = []
    if e.console_url is not None:
        rows.append(
            (
                "web console",
                f"{e.console_url}   sign in as {e.admin_email}, password in"
                f" {_shown(e.admin_password_file)} (certificate from the dev CA)",
            )
        )
    rows += [
        ("gRPC endpoint (TLS)", f"{e.grpc_target}   CA {_shown(e.ca_file)}"),
        (
            "Temporal (mTLS)",
            f"{e.temporal_tls_address}   client certificate {_shown(e.temporal_client_cert)},"
            f" key {_shown(e.temporal_client_key)}",
        ),
        ("dev org admin", f"{e.admin_email}   password in {_shown(e.admin_password_file)}"),
        (
            "dev org agent",
            ", ".join(f"polling; log {_shown(p)}" for p in e.agent_logs) or "none started",
        ),
    ]
    if e.agent_logs:
        rows.append(
            (
                "Parquet directory root",
                f"{_shown(dev_lake_dir(e.state_dir))} (the dev agent's SEVVO_AGENT_FILE_ROOTS)",
            )
        )
    if e.sample is not None:
        passwords = ", ".join(
            f"{role}'s password in {_shown(p)}" for role, p in e.sample.password_files
        )
        rows.append(
            (
                "sample database",
                f"{e.sample.host}:{e.sample.port}/{e.sample.database} (TLS); {passwords}",
            )
        )
    elif e.sample_problem is not None:
        rows.append(("sample database", f"not started: {e.sample_problem}"))
    rows += [
        ("bootstrap token", f"in {_shown(e.bootstrap_token_file)} (for `sevvo bootstrap`)"),
        ("logs", f"{_shown(e.log_file)} (this terminal shows warnings and errors only)"),
    ]
    width = max(len(label) for label, _ in rows)
    out = ["", "sevvo dev stack is up", ""]
    out += [f"  {label:<{width}}  {value}" for label, value in rows]
    out += [
        "",
        f"In another shell, paste these lines (or run `. {_shown(e.state_dir / ENV_FILE)}`),",
        "then follow the tour in README.md:",
        "",
        *(f"  {line}" for line in export_lines(e)),
        f"  sevvo login --email {e.admin_email} --password-stdin < {_shown(e.admin_password_file)}",
        "",
        ("Press Enter to show this again. " if interactive else "") + READY_LINE,
    ]
    return "\n".join(out) + "\n"


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class TerminalTee(io.TextIOBase):
    """The launcher's log stream: every line to the log file; warnings and errors also, in
    one short line each, to the terminal.

    Lines arrive rendered as JSON and already redacted (sevvo.runtime.logs), one line per
    write.
    """

    def __init__(self, log_file: TextIO, terminal: TextIO, log_path: Path) -> None:
        super().__init__()
        self._file = log_file
        self._terminal = terminal
        self._log_path = log_path

    def write(self, text: str) -> int:
        """Writes ``text`` to the log file; echoes its warnings and errors to the terminal."""
        self._file.write(text)
        self._file.flush()
        for line in text.splitlines():
            shown = _terminal_line(line)
            if shown is not None:
                self._terminal.write(f"{shown} (details in {_shown(self._log_path)})\n")
                self._terminal.flush()
        return len(text)

    def flush(self) -> None:
        """Flushes the log file."""
        self._file.flush()


def _terminal_line(line: str) -> str | None:
    """``level: event`` for a warning or error log line; None for anything quieter."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    level = str(event.get("level", "")).lower()
    if level not in _TERMINAL_LEVELS:
        return None
    return f"{level}: {event.get('event', '')}"


async def run(settings: StackSettings, out: TextIO) -> None:
    """Starts everything, shows the banner, and stops everything on SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"starting the sevvo dev stack in {_shown(settings.state_dir)} …", file=out, flush=True)
    sample: SampleDatabase | None = None
    sample_problem: str | None = None
    if settings.sample_database:
        try:
            # Started first, on this thread: a server's parent-death signal is tied to the
            # thread that spawned it, and nothing needs the event loop yet.
            sample = start_sample_database(
                settings.state_dir / "shop", ensure_dev_pki(settings.state_dir / "pki")
            )
        except ServerStartError as exc:
            # The control plane is useful without it; the banner says why it is missing.
            sample_problem = str(exc).splitlines()[0]
            log.warning("devstack.sample_db.not_started", problem=sample_problem)
    try:
        stack = await start_stack(settings)
        try:
            endpoints = DevEndpoints.of(
                stack,
                sample,
                log_file=settings.state_dir / LOG_FILE,
                sample_problem=sample_problem,
            )
            write_private_file(settings.state_dir / ENV_FILE, env_file_text(endpoints))
            interactive = _is_terminal(sys.stdin)
            text = banner(endpoints, interactive=interactive)
            out.write(text)
            out.flush()
            if interactive:
                loop.add_reader(sys.stdin.fileno(), _reprint, out, text)
            await stop.wait()
            print("stopping…", file=out, flush=True)
        finally:
            if _is_terminal(sys.stdin):
                loop.remove_reader(sys.stdin.fileno())
            await stack.stop()
    finally:
        if sample is not None:
            sample.stop()
    print("stopped.", file=out, flush=True)


def _reprint(out: TextIO, text: str) -> None:
    if not sys.stdin.readline():
        # End of input: nothing more to read, so stop watching it.
        asyncio.get_running_loop().remove_reader(sys.stdin.fileno())
        return
    out.write(text)
    out.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the dev stack until SIGINT or SIGTERM; exits 2 naming a bad variable."""
    del argv  # No arguments: everything comes from the environment.
    try:
        settings = StackSettings.load(os.environ, Path.cwd() / ".dev")
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    settings.state_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
    log_path = settings.state_dir / LOG_FILE
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)  # The log names hosts, roles and ids: owner-only.
    with os.fdopen(fd, "a", encoding="utf-8") as log_file:
        configure_logging(
            "devstack",
            level=settings.log_level,
            # A text stream in all but name: logging calls only write() and flush().
            stream=TerminalTee(log_file, sys.stderr, log_path),  # type: ignore[arg-type]
        )
        try:
            asyncio.run(run(settings, sys.stdout))
        except ServerStartError as exc:
            print(f"the dev stack could not start: {exc}", file=sys.stderr)
            return 1
    return 0


__all__ = [
    "ENV_FILE",
    "LOG_FILE",
    "READY_LINE",
    "DevEndpoints",
    "SampleEndpoint",
    "TerminalTee",
    "banner",
    "env_file_text",
    "export_lines",
    "main",
    "run",
]
