"""pytest plugin: auth plus connections as separate TLS servers sharing one database.

connections verifies tokens the production way, by polling auth over TLS.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from devstack.pki import DevPki
from services.connections.config import ConnectionsConfig
from services.connections.server import ConnectionsApp
from sevvo.audit.v1 import audit_pb2_grpc
from sevvo.connections.v1 import connections_pb2 as pb
from sevvo.connections.v1 import connections_pb2_grpc as pb_grpc
from sevvo.runtime.grpc_client import secure_channel
from sevvo.runtime.grpc_server import TlsFiles, start_server
from sevvo.runtime.sealing import Keyring
from sevvo.runtime.tokens import TokenVerifier
from tests.plugins.auth_stack import AuthStack, BackgroundLoop, Org


@dataclass
class ControlPlane:
    """Running auth and connections services and ways to call them."""

    auth: AuthStack
    app: ConnectionsApp
    target: str
    _loop: BackgroundLoop
    _server: grpc.aio.Server
    _verifier: TokenVerifier
    _pki: DevPki
    _database_url: str
    _channels: list[grpc.Channel] = field(default_factory=list)

    def _channel(self, bearer: str) -> grpc.Channel:
        channel = secure_channel(self.target, self.auth.client_tls, lambda: bearer)
        self._channels.append(channel)
        return channel

    def connections(self, bearer: str) -> pb_grpc.ConnectionServiceStub:
        """A ConnectionService stub calling with ``bearer``."""
        return pb_grpc.ConnectionServiceStub(self._channel(bearer))

    def credentials(self, bearer: str) -> pb_grpc.ConnectionCredentialServiceStub:
        """A ConnectionCredentialService stub calling with ``bearer``."""
        return pb_grpc.ConnectionCredentialServiceStub(self._channel(bearer))

    def leases(self, bearer: str) -> pb_grpc.LeaseServiceStub:
        """A LeaseService stub calling with ``bearer``."""
        return pb_grpc.LeaseServiceStub(self._channel(bearer))

    def audit(self, bearer: str) -> audit_pb2_grpc.AuditServiceStub:
        """An AuditService stub calling with ``bearer``."""
        return audit_pb2_grpc.AuditServiceStub(self._channel(bearer))

    def agent_for(self, org: Org) -> str:
        """A fresh deployment of ``org`` and its exchanged bearer."""
        _, token = self.auth.new_deployment(org)
        return self.auth.agent_bearer(token)

    def create(self, org: Org, name: str, password: str, **fields: Any) -> pb.Connection:
        """Creates a connection with the form (fields mode)."""
        values: dict[str, Any] = {
            "host": "db.acme.internal",
            "database": "analytics",
            "username": "reader",
            "password": password,
            "ssl_mode": pb.SSL_MODE_REQUIRE,
        }
        values.update(fields)
        created: pb.Connection = self.connections(org.admin_token).CreateConnection(
            pb.CreateConnectionRequest(display_name=name, fields=pb.PostgresFields(**values))
        )
        return created

    def create_dynamic(
        self, org: Org, name: str, privileged_password: str, **settings: Any
    ) -> pb.Connection:
        """Creates a dynamic connection (defaults: TTLs, statements and group role unset)."""
        values: dict[str, Any] = {
            "host": "db.acme.internal",
            "database": "analytics",
            "privileged_username": "sevvo_admin",
            "privileged_password": privileged_password,
            "ssl_mode": pb.SSL_MODE_REQUIRE,
        }
        values.update(settings)
        created: pb.Connection = self.connections(org.admin_token).CreateConnection(
            pb.CreateConnectionRequest(display_name=name, dynamic=pb.PostgresDynamic(**values))
        )
        return created

    def restart_connections(self, keyring: Keyring) -> None:
        """Replaces the connections server with one using ``keyring`` (as a redeploy would)."""
        self._stop()
        self.app, self._server, self._verifier, self.target = _start_connections(
            self._loop, self.auth, self._pki, self._database_url, keyring
        )

    def close_channels(self) -> None:
        """Closes every channel opened so far (a shared plane does so after each test)."""
        for channel in self._channels:
            channel.close()
        self._channels.clear()

    def _stop(self) -> None:
        self.close_channels()
        self._loop.run(self._server.stop(grace=1))
        self._verifier.stop()
        self.app.close()


def _start_connections(
    loop: BackgroundLoop, auth: AuthStack, pki: DevPki, database_url: str, keyring: Keyring
) -> tuple[ConnectionsApp, grpc.aio.Server, TokenVerifier, str]:
    config = ConnectionsConfig(
        database_url=database_url,
        tls=TlsFiles(cert=pki.server_cert, key=pki.server_key),
        keyring=keyring,
        auth_endpoint=auth.target,
        ca_file=pki.ca_cert,
        host="127.0.0.1",
        port=0,
        refresh_seconds=0.2,
    )
    app = ConnectionsApp(config)
    app.open()
    verifier = app.remote_verifier()
    verifier.start()
    server, port = loop.run(start_server([app.spec()], verifier=verifier, tls=config.tls))
    return app, server, verifier, f"localhost:{port}"


@pytest.fixture
def control_plane(
    auth_stack: AuthStack, database_url: str, dev_pki: DevPki, background_loop: BackgroundLoop
) -> Iterator[ControlPlane]:
    """auth and connections on one fresh database, each its own TLS server."""
    with running_control_plane(auth_stack, database_url, dev_pki, background_loop) as plane:
        yield plane


@pytest.fixture(scope="module")
def module_control_plane(
    module_auth_stack: AuthStack,
    module_database_url: str,
    dev_pki: DevPki,
    background_loop: BackgroundLoop,
) -> Iterator[ControlPlane]:
    """auth and connections shared by a whole test module, for tests that keep apart by org.

    Starting a database and two TLS servers costs more than most tests that use them. A
    module opts in by overriding ``control_plane`` with ``shared_control_plane``; its tests
    then make an org each and never read another org's rows. Tests that restart the service
    or count whole tables as if they were alone keep the per-test ``control_plane``.
    """
    with running_control_plane(
        module_auth_stack, module_database_url, dev_pki, background_loop
    ) as plane:
        yield plane


@pytest.fixture
def shared_control_plane(module_control_plane: ControlPlane) -> Iterator[ControlPlane]:
    """The module's control plane for one test; the test's channels are closed after it."""
    yield module_control_plane
    module_control_plane.close_channels()


@contextlib.contextmanager
def running_control_plane(
    auth: AuthStack, database_url: str, dev_pki: DevPki, background_loop: BackgroundLoop
) -> Iterator[ControlPlane]:
    """connections beside ``auth`` on ``database_url``, for the ``with`` block."""
    app, server, verifier, target = _start_connections(
        background_loop, auth, dev_pki, database_url, Keyring.generate("k1")
    )
    plane = ControlPlane(
        auth=auth,
        app=app,
        target=target,
        _loop=background_loop,
        _server=server,
        _verifier=verifier,
        _pki=dev_pki,
        _database_url=database_url,
    )
    try:
        yield plane
    finally:
        plane._stop()
