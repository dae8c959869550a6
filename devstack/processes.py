"""Child-process plumbing shared by the embedded servers: ports, privilege drop, lifetimes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

import structlog

from sevvo.runtime.config import ConfigError
from sevvo.runtime.logs import configure_logging

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class ServerStartError(RuntimeError):
    """An embedded server did not come up; the message says why and quotes its log."""


@dataclass(frozen=True)
class ServiceUser:
    """An unprivileged system account that servers run as when the launcher is root."""

    name: str
    uid: int
    gid: int


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that was free a moment ago.

    The port is released before the caller binds it, so another process can take it in
    between; callers that choose a port this way retry on a bind failure.
    """
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_system_user(name: str) -> ServiceUser:
    """Return the system account ``name``, creating it (no home, no login shell) if missing.

    Postgres refuses to run as root, so a root launcher needs some other account; a
    dedicated one keeps the data directory away from every other user on the machine.
    """
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        result = subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        # Exit status 9 means another process created the account first; that is fine.
        if result.returncode not in (0, 9):
            raise ServerStartError(
                f"could not create system user {name!r}: {result.stderr.strip()}"
            ) from None
        entry = pwd.getpwnam(name)
        log.info("devstack.system_user_created", user=name, uid=entry.pw_uid)
    return ServiceUser(name=name, uid=entry.pw_uid, gid=entry.pw_gid)


def check_traversable(path: Path, user: ServiceUser) -> None:
    """Raise ServerStartError unless ``user`` can reach ``path`` through every parent directory.

    Without this, a data directory under a private home (``/root``, pytest's 0700 base temp)
    fails much later with a bare "Permission denied" from inside the server.
    """
    for directory in [path, *path.parents]:
        try:
            st = directory.stat()
        except FileNotFoundError:
            continue
        if st.st_uid == user.uid:
            allowed = bool(st.st_mode & 0o100)
        elif st.st_gid == user.gid:
            allowed = bool(st.st_mode & 0o010)
        else:
            allowed = bool(st.st_mode & 0o001)
        if not allowed:
            raise ServerStartError(
                f"user {user.name!r} cannot enter {directory} (needed to reach {path}); "
                "use a directory outside it, for example under /tmp or the project checkout"
            )


def _launcher_prefix(death_signal: signal.Signals, run_as: ServiceUser | None) -> list[str]:
    """``setpriv`` arguments that drop privileges and set the parent-death signal.

    Doing this in setpriv (util-linux, on every Debian) rather than in a Python preexec_fn
    lets subprocess start children with vfork, which never runs fork handlers in the
    child: with gRPC threads alive in this process, gRPC's fork handlers can abort a
    forked child before it reaches exec. setpriv applies the signal after changing user,
    since a credential change would clear it.
    """
    prefix = ["setpriv", f"--pdeathsig={death_signal.name}"]
    if run_as is not None:
        prefix += [f"--reuid={run_as.uid}", f"--regid={run_as.gid}", "--clear-groups"]
    return [*prefix, "--"]


def spawn(
    argv: Sequence[str],
    *,
    death_signal: signal.Signals,
    run_as: ServiceUser | None = None,
    env: Mapping[str, str] | None = None,
    output: IO[bytes] | None = None,
    umask: int = -1,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as a child that cannot outlive this process.

    The child gets its own process group (so a terminal's Ctrl-C reaches only the
    launcher, which then stops it in order, and so a group kill also reaches its
    helpers), runs as ``run_as`` when given, and receives ``death_signal`` from the kernel
    if this process dies, even by SIGKILL. Stdout and stderr both go to ``output``. A
    ``umask`` (such as 0o077) applies to the child alone, so every file it creates is born
    with the narrower mode; this process's own umask, shared by its threads, stays as it is.

    Linux delivers the parent-death signal when the *thread* that forked the child exits,
    so call this from a thread that lives as long as the server should (the main thread).
    """
    return subprocess.Popen(
        [*_launcher_prefix(death_signal, run_as), *argv],
        stdin=subprocess.DEVNULL,
        stdout=output if output is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if output is not None else subprocess.DEVNULL,
        env=dict(env) if env is not None else None,
        process_group=0,
        close_fds=True,
        umask=umask,
    )


def open_private_log(path: Path) -> IO[bytes]:
    """Opens ``path`` for appending, created owner-only (0600) so it is never readable by others.

    Server and agent logs can quote failing statements, role names and hosts. os.open gives
    a new file its mode at creation; fchmod narrows a file an older version left wider.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


def stop_process(
    proc: subprocess.Popen[bytes],
    *,
    stop_signal: signal.Signals,
    signal_group: bool,
    timeout: float,
) -> None:
    """Send ``stop_signal``, wait up to ``timeout`` seconds, then SIGKILL the whole group.

    ``signal_group`` chooses whether the polite signal goes to the whole process group or
    only to the leader (Postgres wants only the postmaster signalled: it then shuts its
    backends down itself). The forced kill covers the group; Postgres backends, which
    put themselves in groups of their own, exit by themselves once the postmaster is gone.
    """
    pgid = proc.pid  # spawn() makes every child the leader of its own group
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            if signal_group:
                os.killpg(pgid, stop_signal)
            else:
                proc.send_signal(stop_signal)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("devstack.process_kill", pid=proc.pid, waited_s=timeout)
    # Normally the group is already empty here and this finds nothing to kill.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    proc.wait()


def wait_until_ready(
    proc: subprocess.Popen[bytes],
    probe: Callable[[], None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.02,
) -> None:
    """Call ``probe`` until it returns without raising.

    Raises ServerStartError when ``proc`` exits first or ``timeout`` seconds pass; the
    message quotes the probe's last error, so probes must raise errors free of secrets.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        returncode = proc.poll()
        if returncode is not None:
            raise ServerStartError(f"{what} exited with status {returncode} while starting")
        try:
            probe()
        except Exception as exc:  # any failure means "not yet"; the last one is reported
            last_error = exc
        else:
            return
        if time.monotonic() >= deadline:
            detail = f"{type(last_error).__name__}: {last_error}" if last_error else "no answer"
            raise ServerStartError(f"{what} not ready after {timeout:g} s ({detail})")
        time.sleep(interval)


def log_tail(log: IO[bytes] | Path, lines: int = 20) -> str:
    """Return the last ``lines`` lines of a server log, for error messages."""
    try:
        if isinstance(log, Path):
            with log.open("rb") as stream:
                return log_tail(stream, lines)
        fd = log.fileno()
        size = os.fstat(fd).st_size
        # pread leaves the file offset alone: the child shares it and is still writing.
        data = os.pread(fd, min(size, 64 * 1024), max(0, size - 64 * 1024))
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def child_pids(pid: int) -> list[int]:
    """Process ids whose parent is ``pid``, read from /proc (Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name is in parentheses and may hold spaces or parentheses itself.
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # It exited while we looked.
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry.name))
    return found


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie does not (it holds no memory or sockets any more, and
    an orphan's may go unreaped here)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class _ProcessConfig(Protocol):
    @property
    def log_level(self) -> str: ...


ConfigT = TypeVar("ConfigT", bound=_ProcessConfig)


async def until_stop_signal() -> None:
    """Returns once SIGINT or SIGTERM arrives, the way a dev server run as a process is stopped."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def run_from_environment(
    name: str,
    load: Callable[[Mapping[str, str]], ConfigT],
    serve: Callable[[ConfigT], Coroutine[Any, Any, None]],
) -> int:
    """A dev server's ``main``: configuration from the environment, sevvo's logging, then
    ``serve`` until it returns; 2 for a configuration error (named, on stderr)."""
    try:
        config = load(os.environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(name, level=config.log_level)
    asyncio.run(serve(config))
    return 0
