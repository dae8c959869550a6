"""A service's gRPC health follows its readiness: auth on its own Postgres, which this module
stops and starts, answers NOT_SERVING while its database is away and SERVING once it is back,
and NOT_SERVING for every name as soon as shutdown begins, on its TLS port and on the
plaintext port Kubernetes' grpc probes dial."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.pki import DevPki
from devstack.postgres import EmbeddedPostgres
from devstack.processes import free_port
from services.auth.config import AuthConfig, write_key_encryption_key
from services.auth.server import AuthApp
from sevvo.runtime.grpc_client import ClientTls, secure_channel
from sevvo.runtime.grpc_server import start_server, stop_serving
from sevvo.runtime.health import LIVENESS, NOT_SERVING, SERVING, ServerHealth
from tests.plugins.auth_stack import BackgroundLoop

AUTH = "sevvo.auth.v1.AuthService"
USERS = "sevvo.auth.v1.UserService"


@pytest.fixture(scope="module")
def postgres() -> Iterator[EmbeddedPostgres]:
    """A Postgres of this module's own, so stopping it disturbs no other test."""
    # Its own directory: as root, Postgres runs as a user that cannot enter a 0700 one.
    pg_dir = Path(tempfile.mkdtemp(prefix="sevvo-health-pg-"))
    server = EmbeddedPostgres(pg_dir, port=free_port(), durable=False).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def kek_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One key-encryption key for the module: the signing keys in its database are sealed
    with it."""
    path = tmp_path_factory.mktemp("health") / "kek"
    write_key_encryption_key(path)
    return path


@dataclass
class Served:
    """auth serving on TLS, its health also on a plaintext port, and clients for both."""

    app: AuthApp
    server: grpc.aio.Server
    health: ServerHealth
    tls: grpc.Channel
    plaintext: grpc.Channel

    def status(self, channel: grpc.Channel, service: str = "") -> int:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
        return int(reply.status)

    def wait_for(self, status: int, timeout: float) -> float:
        """Seconds until both ports report ``status`` for every name; fails after timeout."""
        started = time.monotonic()
        while True:
            seen = {
                self.status(channel, name)
                for channel in (self.tls, self.plaintext)
                for name in ("", AUTH, USERS)
            }
            if seen == {status}:
                return time.monotonic() - started
            assert time.monotonic() - started < timeout, f"still {seen}, not {status}"
            time.sleep(0.05)


@pytest.fixture
def served(
    postgres: EmbeddedPostgres,
    dev_pki: DevPki,
    background_loop: BackgroundLoop,
    kek_file: Path,
) -> Iterator[Served]:
    """auth on ``postgres``, checking readiness every 0.1 s."""
    config = AuthConfig.load(
        {
            "SEVVO_DATABASE_URL": postgres.url,
            "SEVVO_TLS_CERT_FILE": str(dev_pki.server_cert),
            "SEVVO_TLS_KEY_FILE": str(dev_pki.server_key),
            "SEVVO_AUTH_KEK_FILE": str(kek_file),
            "SEVVO_HEALTH_PORT": "0",
            "SEVVO_HEALTH_CHECK_SECONDS": "0.1",
        }
    )
    app = AuthApp(config)
    app.open()
    health = ServerHealth(app.readiness(), interval=config.health.check_seconds, timeout=0.5)
    server, port = background_loop.run(
        start_server([app.spec()], verifier=app.verifier, tls=config.tls, health=health)
    )
    assert config.health.probe_port == 0
    probe_port = background_loop.run(health.listen_plaintext("127.0.0.1", 0))
    tls = secure_channel(f"localhost:{port}", ClientTls(dev_pki.ca_cert))
    plaintext = grpc.insecure_channel(f"127.0.0.1:{probe_port}")
    try:
        yield Served(app, server, health, tls, plaintext)
    finally:
        tls.close()
        plaintext.close()
        background_loop.run(stop_serving(server, health, grace=0))
        app.close()


def test_health_is_not_serving_while_the_database_is_down_and_serving_once_back(
    served: Served, postgres: EmbeddedPostgres
) -> None:
    """Every name goes NOT_SERVING within a few checks of Postgres stopping, on both ports,
    while liveness stays SERVING (a restart would not bring the database back); all return to
    SERVING once Postgres is up again."""
    served.wait_for(SERVING, timeout=5)
    postgres.stop()
    try:
        assert served.wait_for(NOT_SERVING, timeout=10) < 5
        assert served.status(served.plaintext, LIVENESS) == SERVING
    finally:
        postgres.start()
    served.wait_for(SERVING, timeout=30)


def test_every_name_is_not_serving_as_soon_as_shutdown_begins(
    served: Served, background_loop: BackgroundLoop
) -> None:
    """A client watching auth's health hears NOT_SERVING at once, long before the grace
    period ends (its own open stream is what the server waits for); during the drain the TLS
    port still answers calls (NOT_SERVING), and the plaintext port answers NOT_SERVING for
    every name, liveness included, until the server has stopped."""
    served.wait_for(SERVING, timeout=5)
    watch = health_pb2_grpc.HealthStub(served.tls).Watch(
        health_pb2.HealthCheckRequest(service=AUTH), timeout=30
    )
    assert next(watch).status == SERVING
    grace = 10.0
    started = time.monotonic()
    stopping = asyncio.run_coroutine_threadsafe(
        stop_serving(served.server, served.health, grace=grace, drain=1.0), background_loop.loop
    )
    try:
        assert next(watch).status == NOT_SERVING
        assert time.monotonic() - started < grace / 2
        assert served.status(served.tls, AUTH) == NOT_SERVING  # Draining: still answering.
        assert not stopping.done()  # Still draining, or waiting for the watch in flight.
        for name in ("", AUTH, USERS, LIVENESS):
            assert served.status(served.plaintext, name) == NOT_SERVING, name
    finally:
        watch.cancel()
    stopping.result(timeout=grace + 5)
    with pytest.raises(grpc.RpcError):  # The probe port closes last.
        served.status(served.plaintext)
