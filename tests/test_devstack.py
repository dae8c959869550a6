"""The embedded dev stack: dev PKI, embedded Postgres and the Temporal dev server."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import psycopg
import pytest
import structlog
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client

from devstack.agent_process import AgentProcess, AgentSettings
from devstack.pki import DevPki, ensure_dev_pki, issue_server_cert
from devstack.postgres import EmbeddedPostgres
from devstack.processes import child_pids, free_port, pid_alive
from devstack.temporal import TemporalDevServer

REPO_ROOT = Path(__file__).resolve().parents[1]


# --- helpers -------------------------------------------------------------------------


def _wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    """Wait until none of ``pids`` is alive; return those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if pid_alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def _listeners(port: int) -> list[str]:
    """Local addresses (as hex, the /proc format) of sockets listening on TCP ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.append(address)
    return found


@pytest.fixture
def pg_dir() -> Iterator[Path]:
    # Under /tmp, not tmp_path: see tests/plugins/postgres.py for why.
    directory = Path(tempfile.mkdtemp(prefix="sevvo-pg-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def embedded_pg() -> Iterator[EmbeddedPostgres]:
    directory = Path(tempfile.mkdtemp(prefix="sevvo-pg-"))
    with EmbeddedPostgres(directory, durable=False) as server:
        yield server
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def temporal_server() -> Iterator[TemporalDevServer]:
    with TemporalDevServer() as server:
        yield server


def _start_launcher(code: str) -> tuple[subprocess.Popen[str], int]:
    """Run ``code`` in a child Python that prints ``SERVER_PID <pid>``; return it and the pid."""
    launcher = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert launcher.stdout is not None
    for line in launcher.stdout:
        if line.startswith("SERVER_PID "):
            return launcher, int(line.split()[1])
    launcher.wait()
    raise AssertionError(f"launcher exited with {launcher.returncode} before starting a server")


def _kill_launcher_and_check_server_dies(launcher: subprocess.Popen[str], pid: int) -> None:
    try:
        launcher.kill()
        launcher.wait()
        assert _wait_gone([pid]) == []
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        assert launcher.stdout is not None
        launcher.stdout.close()


# --- embedded Postgres ---------------------------------------------------------------


def test_embedded_postgres_accepts_scram_password_login(embedded_pg: EmbeddedPostgres) -> None:
    """The superuser logs in over TCP with its password, checked by SCRAM-SHA-256."""
    with psycopg.connect(embedded_pg.url) as conn:
        user = conn.execute("select current_user").fetchone()
        methods = conn.execute(
            "select distinct auth_method from pg_hba_file_rules where type = 'host'"
        ).fetchall()
    assert user == ("sevvo",)
    assert methods == [("scram-sha-256",)]


def test_embedded_postgres_rejects_wrong_password(embedded_pg: EmbeddedPostgres) -> None:
    """A login with the wrong password fails with password authentication failed."""
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host="127.0.0.1",
            port=embedded_pg.port,
            user="sevvo",
            password="not-the-password",
            dbname="postgres",
        )


def test_embedded_postgres_listens_only_on_ipv4_loopback(embedded_pg: EmbeddedPostgres) -> None:
    """The only listening socket on the server's port is bound to 127.0.0.1."""
    assert _listeners(embedded_pg.port) == ["0100007F"]


def test_embedded_postgres_keeps_its_password_private(embedded_pg: EmbeddedPostgres) -> None:
    """The password file is readable by its owner only."""
    mode = stat.S_IMODE((embedded_pg.directory / "password").stat().st_mode)
    assert mode == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root launcher switches users")
def test_embedded_postgres_runs_unprivileged_under_root(embedded_pg: EmbeddedPostgres) -> None:
    """Launched by root, the server runs as the sevvo-pg system user."""
    status = Path(f"/proc/{embedded_pg.pid}/status").read_text()
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uids) == {str(pwd.getpwnam("sevvo-pg").pw_uid)}


def test_embedded_postgres_never_logs_its_password(pg_dir: Path) -> None:
    """No log event of a start and stop mentions the password."""
    server = EmbeddedPostgres(pg_dir, durable=False)
    with structlog.testing.capture_logs() as events, server:
        password = (pg_dir / "password").read_text().strip()
    assert events
    assert all(password not in repr(event) for event in events)


def test_embedded_postgres_stop_leaves_no_process(pg_dir: Path) -> None:
    """After stop() neither the postmaster nor any of its children is left."""
    with EmbeddedPostgres(pg_dir, durable=False) as server:
        pids = [server.pid, *child_pids(server.pid)]
    assert len(pids) > 1
    assert [p for p in pids if pid_alive(p)] == []


def test_embedded_postgres_restart_reuses_data_and_password(pg_dir: Path) -> None:
    """A server restarted on the same directory has the same data and password."""
    with EmbeddedPostgres(pg_dir, durable=False) as first, psycopg.connect(first.url) as conn:
        conn.execute("create table kept (value text)")
        conn.execute("insert into kept values ('still here')")
        conn.commit()
        first_password = urlsplit(first.url).password
    with EmbeddedPostgres(pg_dir, durable=False) as second, psycopg.connect(second.url) as conn:
        assert conn.execute("select value from kept").fetchall() == [("still here",)]
        assert urlsplit(second.url).password == first_password


def test_embedded_postgres_dies_with_its_launcher(pg_dir: Path) -> None:
    """Killing the launching process with SIGKILL takes the server down too."""
    launcher, pid = _start_launcher(
        f"""
        import time
        from pathlib import Path
        from devstack.postgres import EmbeddedPostgres
        server = EmbeddedPostgres(Path({str(pg_dir)!r}), durable=False).start()
        print("SERVER_PID", server.pid, flush=True)
        time.sleep(60)
        """
    )
    _kill_launcher_and_check_server_dies(launcher, pid)


def test_database_url_is_a_fresh_empty_database(database_url: str) -> None:
    """The database_url fixture hands each test its own database without tables."""
    with psycopg.connect(database_url) as conn:
        name = conn.execute("select current_database()").fetchone()
        tables = conn.execute(
            "select count(*) from information_schema.tables where table_schema = 'public'"
        ).fetchone()
    assert name is not None
    assert name[0].startswith("test_")
    assert tables == (0,)


# --- dev PKI -------------------------------------------------------------------------


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_server_cert_is_issued_by_ca_for_loopback_names(dev_pki: DevPki) -> None:
    """The server certificate verifies against the CA and names localhost, 127.0.0.1, ::1."""
    server = _cert(dev_pki.server_cert)
    server.verify_directly_issued_by(_cert(dev_pki.ca_cert))
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_client_cert_is_for_client_auth(dev_pki: DevPki) -> None:
    """The client certificate is issued by the CA, named sevvo-dev-client, for clientAuth."""
    client = _cert(dev_pki.client_cert)
    client.verify_directly_issued_by(_cert(dev_pki.ca_cert))
    names = client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [n.value for n in names] == ["sevvo-dev-client"]
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_private_keys_are_owner_only(dev_pki: DevPki) -> None:
    """Every private key file has mode 0600."""
    for key in (dev_pki.ca_key, dev_pki.server_key, dev_pki.client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_ensure_dev_pki_reuses_valid_files(tmp_path: Path) -> None:
    """A second call keeps every certificate and key as it was."""
    first = ensure_dev_pki(tmp_path)
    before = {p: p.read_bytes() for p in vars(first).values()}
    ensure_dev_pki(tmp_path)
    assert {p: p.read_bytes() for p in before} == before


def test_ensure_dev_pki_reissues_a_bad_server_cert_under_the_same_ca(tmp_path: Path) -> None:
    """A damaged server certificate is replaced by one from the existing CA."""
    pki = ensure_dev_pki(tmp_path)
    ca_before = pki.ca_cert.read_bytes()
    pki.server_cert.write_text("not a certificate")
    ensure_dev_pki(tmp_path)
    assert pki.ca_cert.read_bytes() == ca_before
    _cert(pki.server_cert).verify_directly_issued_by(_cert(pki.ca_cert))


def test_issue_server_cert_names_the_given_hosts(dev_pki: DevPki, tmp_path: Path) -> None:
    """issue_server_cert covers exactly the requested names and writes its key 0600."""
    cert_path, key_path = issue_server_cert(
        dev_pki, tmp_path, name="pg", hostnames=["db.internal"], ips=["10.0.0.7"]
    )
    sans = _cert(cert_path).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sans.value.get_values_for_type(x509.DNSName) == ["db.internal"]
    assert sans.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


# --- gRPC over TLS with the dev PKI --------------------------------------------------


def _health_server(credentials: grpc.ServerCredentials) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


def _check_health(target: str, credentials: grpc.ChannelCredentials) -> int:
    with grpc.secure_channel(target, credentials) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    status: int = response.status
    return status


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_grpc_tls_client_trusting_the_ca_reaches_the_server(dev_pki: DevPki, host: str) -> None:
    """A gRPC server using the dev server cert answers a client that trusts only the CA."""
    server, port = _health_server(
        grpc.ssl_server_credentials(
            [(dev_pki.server_key.read_bytes(), dev_pki.server_cert.read_bytes())]
        )
    )
    try:
        status = _check_health(
            f"{host}:{port}",
            grpc.ssl_channel_credentials(root_certificates=dev_pki.ca_cert.read_bytes()),
        )
    finally:
        server.stop(None)
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_grpc_mtls_accepts_the_dev_client_cert(dev_pki: DevPki) -> None:
    """A gRPC server requiring client certificates from the CA accepts the dev client cert."""
    server, port = _health_server(
        grpc.ssl_server_credentials(
            [(dev_pki.server_key.read_bytes(), dev_pki.server_cert.read_bytes())],
            root_certificates=dev_pki.ca_cert.read_bytes(),
            require_client_auth=True,
        )
    )
    try:
        status = _check_health(
            f"localhost:{port}",
            grpc.ssl_channel_credentials(
                root_certificates=dev_pki.ca_cert.read_bytes(),
                private_key=dev_pki.client_key.read_bytes(),
                certificate_chain=dev_pki.client_cert.read_bytes(),
            ),
        )
    finally:
        server.stop(None)
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_grpc_mtls_rejects_a_client_without_cert(dev_pki: DevPki) -> None:
    """A gRPC server requiring client certificates refuses a client that has none."""
    server, port = _health_server(
        grpc.ssl_server_credentials(
            [(dev_pki.server_key.read_bytes(), dev_pki.server_cert.read_bytes())],
            root_certificates=dev_pki.ca_cert.read_bytes(),
            require_client_auth=True,
        )
    )
    try:
        with pytest.raises(grpc.RpcError) as caught:
            _check_health(
                f"localhost:{port}",
                grpc.ssl_channel_credentials(root_certificates=dev_pki.ca_cert.read_bytes()),
            )
    finally:
        server.stop(None)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


# --- Temporal dev server -------------------------------------------------------------


def test_temporal_dev_server_answers_system_info(temporal_server: TemporalDevServer) -> None:
    """A temporalio client connects to the dev server and reads its version."""

    async def server_version() -> str:
        client = await Client.connect(temporal_server.address)
        info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
        version: str = info.server_version
        return version

    assert asyncio.run(server_version())


def test_temporal_dev_server_listens_on_loopback(temporal_server: TemporalDevServer) -> None:
    """The frontend listens on 127.0.0.1 only."""
    port = int(temporal_server.address.rpartition(":")[2])
    assert _listeners(port) == ["0100007F"]


def test_temporal_dev_server_keeps_state_in_db_filename(tmp_path: Path) -> None:
    """With db_filename the server keeps its state in that SQLite file."""
    db = tmp_path / "temporal.db"
    with TemporalDevServer(db_filename=db):
        assert db.stat().st_size > 0


@contextlib.contextmanager
def _permissive_umask() -> Iterator[None]:
    """The usual 022, so a file created without care would be world-readable (0644)."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _modes(directory: Path, prefix: str) -> dict[str, str]:
    return {
        path.name: oct(stat.S_IMODE(path.stat().st_mode))
        for path in directory.iterdir()
        if path.name.startswith(prefix)
    }


def test_temporal_dev_server_state_and_log_are_owner_only(tmp_path: Path) -> None:
    """temporal.sqlite (with its -wal/-shm) and temporal.log are created 0600."""
    with (
        _permissive_umask(),
        TemporalDevServer(
            db_filename=tmp_path / "temporal.sqlite", log_file=tmp_path / "temporal.log"
        ),
    ):
        created = _modes(tmp_path, "temporal.")
    assert "temporal.sqlite" in created and "temporal.log" in created
    assert set(created.values()) == {"0o600"}, created


def test_dev_agent_log_is_owner_only(tmp_path: Path, dev_pki: DevPki) -> None:
    """The agent's log file is created 0600: it names hosts, roles and connections."""
    token = tmp_path / "token"
    token.write_text("sevvo_dt_unused")
    settings = AgentSettings(
        token_file=token,
        control_plane_endpoint=f"localhost:{free_port()}",
        temporal_address=f"localhost:{free_port()}",
        ca_file=dev_pki.ca_cert,
    )
    with _permissive_umask():
        agent = AgentProcess(settings, tmp_path / "agent.log").start(wait=False)
    try:
        assert _modes(tmp_path, "agent.log") == {"agent.log": "0o600"}
    finally:
        agent.stop()


def test_temporal_dev_server_stop_leaves_no_process() -> None:
    """After stop() the temporal process is gone."""
    with TemporalDevServer() as server:
        pids = [server.pid, *child_pids(server.pid)]
    assert [p for p in pids if pid_alive(p)] == []


def test_temporal_dev_server_dies_with_its_launcher() -> None:
    """Killing the launching process with SIGKILL takes the Temporal server down too."""
    launcher, pid = _start_launcher(
        """
        import time
        from devstack.temporal import TemporalDevServer
        server = TemporalDevServer().start()
        print("SERVER_PID", server.pid, flush=True)
        time.sleep(60)
        """
    )
    _kill_launcher_and_check_server_dies(launcher, pid)
