"""``make dev``'s sample customer database: the demo's shop, on a TLS PostgreSQL of its own.

The README's tour connects to it, so a new user has a real database to connect, test and
preview without bringing one. It is the database ``make demo`` builds (devstack.demo_data),
with the roles made by docs/user-guide.md's own SQL, and it is kept in the state directory
between runs like the rest of the dev stack, on the same port (saved connections keep
working). The roles' passwords are random, reach the server only as SCRAM verifiers, and are
written to 0600 files that the tour reads with ``--password-stdin``.
"""

from __future__ import annotations

import secrets
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psycopg

from devstack import demo_guide as guide
from devstack.demo_data import run_as_dba, seed_shop
from devstack.pki import DevPki, issue_server_cert
from devstack.postgres import HOST, EmbeddedPostgres
from devstack.source_db import os_postgres_bin_dir
from sevvo.runtime.files import write_private_file
from sevvo.runtime.logs import get_logger

log = get_logger(__name__)

# The guide's sections, in the order they must run (the privileged role's grants name the
# database the reader's section already relies on), and the login role each one creates.
ROLE_SECTIONS: Final = (
    (guide.READER_ROLE_HEADING, guide.READER),
    (guide.PRIVILEGED_ROLE_HEADING, guide.PRIVILEGED),
    (guide.LOADER_ROLE_HEADING, guide.LOADER),
)


@dataclass
class SampleDatabase:
    """The running sample database and where its roles' passwords are."""

    server: EmbeddedPostgres
    directory: Path

    @property
    def host(self) -> str:
        """The host the agent dials: the server listens on IPv4 loopback only."""
        return "localhost"

    @property
    def port(self) -> int:
        """The server's TCP port, the same across restarts while it stays free."""
        return self.server.port

    @property
    def database(self) -> str:
        """The database the guide's SQL grants on."""
        return guide.DATABASE

    def password_file(self, role: str) -> Path:
        """The 0600 file holding ``role``'s password."""
        return password_file(self.directory, role)

    def stop(self) -> None:
        """Stops the server; its data stays for the next start."""
        self.server.stop()


def password_file(directory: Path, role: str) -> Path:
    """Where the sample database in ``directory`` keeps ``role``'s password."""
    return directory / f"{role}-password"


def start_sample_database(directory: Path, pki: DevPki) -> SampleDatabase:
    """Starts the sample database kept in ``directory``, creating and seeding it on first use.

    Runs the OS's PostgreSQL (installed with apt-get when missing and run as root; otherwise
    ServerStartError says what to install), because the embedded wheel cannot serve TLS. A
    directory left half-made by an interrupted first start is made again from scratch; one
    made before a role of the guide existed gains that role, and keeps its data and the other
    roles' passwords (connections saved in the dev stack still log in).
    """
    # Traversable by the unprivileged user Postgres runs as when we are root.
    directory.mkdir(mode=0o711, parents=True, exist_ok=True)
    directory.chmod(0o711)
    bin_dir = os_postgres_bin_dir()
    cluster = directory / "postgres"
    # The first role's password file is written after the shop is seeded and that role made,
    # so together with the cluster it marks a first start that got that far.
    ready = (cluster / "pgdata" / "PG_VERSION").exists() and (
        password_file(directory, ROLE_SECTIONS[0][1]).exists()
    )
    if not ready:
        shutil.rmtree(cluster, ignore_errors=True)
    tls = issue_server_cert(pki, directory / "tls", name="shop-postgres")
    port_file = directory / "port"
    port = _saved_port(port_file)
    server = EmbeddedPostgres(cluster, port=port, bin_dir=bin_dir, tls=tls).start()
    try:
        port_file.write_text(f"{server.port}\n")
        if not ready:
            counts = seed_shop(server)
            log.info("devstack.sample_db.created", port=server.port, rows=counts)
        _add_missing_roles(server, directory)
    except BaseException:
        server.stop()
        raise
    return SampleDatabase(server, directory)


def _saved_port(port_file: Path) -> int:
    """The port of the previous run, or 0 (any) when there was none or it is now taken."""
    try:
        port = int(port_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return 0
    with socket.socket(socket.AF_INET) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            log.warning(
                "devstack.sample_db.port_taken",
                port=port,
                hint="the sample database moves to another port; update saved connections",
            )
            return 0
    return port


def _add_missing_roles(server: EmbeddedPostgres, directory: Path) -> None:
    """Runs the guide's role SQL as written for each role without a password file (a role
    already in the cluster only gets a new password), and writes that file."""
    text = guide.read_guide()
    for heading, role in ROLE_SECTIONS:
        if password_file(directory, role).exists():
            continue
        password = secrets.token_urlsafe(24)
        with psycopg.connect(server.admin_url(guide.DATABASE), autocommit=True) as conn:
            exists = conn.execute("select from pg_roles where rolname = %s", (role,)).fetchone()
            if exists is None:
                run_as_dba(server, list(guide.section(text, heading).statements))
            guide.set_password(conn, role, password)
        write_private_file(password_file(directory, role), password + "\n")
        log.info("devstack.sample_db.role_added", port=server.port, role=role)


__all__ = ["ROLE_SECTIONS", "SampleDatabase", "password_file", "start_sample_database"]
