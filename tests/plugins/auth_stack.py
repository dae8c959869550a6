"""pytest plugin: a real auth service over TLS on loopback, backed by a fresh database."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import pytest

from devstack.pki import DevPki
from services.auth.config import AuthConfig
from services.auth.server import AuthApp
from sevvo.auth.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    deployments_pb2,
    deployments_pb2_grpc,
    users_pb2_grpc,
)
from sevvo.runtime.grpc_client import ClientTls, secure_channel
from sevvo.runtime.grpc_server import TlsFiles, start_server

T = TypeVar("T")
PASSWORD = "correct horse battery staple"


class BackgroundLoop:
    """An asyncio loop on its own thread, so sync tests can drive aio servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Runs a coroutine on the loop and waits for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Stops the loop and its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@dataclass
class Org:
    """An org created through the bootstrap path, with its admin signed in."""

    org_id: str
    admin_email: str
    admin_token: str


@dataclass
class AuthStack:
    """A running auth service and ways to call it."""

    app: AuthApp
    target: str
    client_tls: ClientTls

    def channel(self, bearer: str | None = None) -> grpc.Channel:
        """A TLS channel to auth; ``bearer`` is attached to every call."""
        return secure_channel(self.target, self.client_tls, (lambda: bearer) if bearer else None)

    def auth(self, bearer: str | None = None) -> auth_pb2_grpc.AuthServiceStub:
        """An AuthService stub."""
        return auth_pb2_grpc.AuthServiceStub(self.channel(bearer))

    def users(self, bearer: str) -> users_pb2_grpc.UserServiceStub:
        """A UserService stub."""
        return users_pb2_grpc.UserServiceStub(self.channel(bearer))

    def deployments(self, bearer: str) -> deployments_pb2_grpc.DeploymentServiceStub:
        """A DeploymentService stub."""
        return deployments_pb2_grpc.DeploymentServiceStub(self.channel(bearer))

    def create_org(self, name: str = "Acme") -> Org:
        """Bootstraps an org and signs its admin in over gRPC."""
        email = f"admin-{uuid.uuid4().hex[:8]}@{name.lower().replace(' ', '-')}.example"
        self.app.domain.create_org_with_admin(name, email, PASSWORD)
        response = self.auth().SignIn(auth_pb2.SignInRequest(email=email, password=PASSWORD))
        return Org(org_id=response.org_id, admin_email=email, admin_token=response.session_token)

    def new_deployment(self, org: Org, name: str = "cluster-1") -> tuple[str, str]:
        """Creates a deployment; returns its id and its deployment token."""
        created = self.deployments(org.admin_token).CreateDeployment(
            deployments_pb2.CreateDeploymentRequest(display_name=name)
        )
        return created.deployment.id, created.deployment_token

    def agent_bearer(self, deployment_token: str) -> str:
        """Exchanges a deployment token for an agent bearer."""
        response = self.auth().ExchangeDeploymentToken(
            auth_pb2.ExchangeDeploymentTokenRequest(deployment_token=deployment_token)
        )
        return str(response.bearer_token)


@pytest.fixture(scope="session")
def background_loop() -> Iterator[BackgroundLoop]:
    """One event loop thread for the session's aio servers."""
    loop = BackgroundLoop()
    yield loop
    loop.close()


def auth_config(database_url: str, pki: DevPki, kek: bytes, **overrides: Any) -> AuthConfig:
    """An AuthConfig for tests: loopback, fast refresh so rotations and revocations are quick."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "tls": TlsFiles(cert=pki.server_cert, key=pki.server_key),
        "key_encryption_key": kek,
        "host": "127.0.0.1",
        "port": 0,
        "refresh_seconds": 0.2,
    }
    values.update(overrides)
    return AuthConfig(**values)


@pytest.fixture
def auth_stack(
    database_url: str, dev_pki: DevPki, background_loop: BackgroundLoop
) -> Iterator[AuthStack]:
    """A fresh auth service on a fresh database, over TLS on loopback."""
    with running_auth(database_url, dev_pki, background_loop) as stack:
        yield stack


@pytest.fixture(scope="module")
def module_auth_stack(
    module_database_url: str, dev_pki: DevPki, background_loop: BackgroundLoop
) -> Iterator[AuthStack]:
    """One auth service for a whole test module, for tests that keep apart by org.

    Starting auth on a new database costs more than most tests that use it; a test that
    makes its own org (``create_org``) meets no other test's users, deployments or keys. Tests
    that change service-wide state (keys, limits, configuration) keep ``auth_stack``.
    """
    with running_auth(module_database_url, dev_pki, background_loop) as stack:
        yield stack


@contextlib.contextmanager
def running_auth(
    database_url: str, dev_pki: DevPki, background_loop: BackgroundLoop, **overrides: Any
) -> Iterator[AuthStack]:
    """An auth service on ``database_url`` over TLS on loopback, for the ``with`` block;
    ``overrides`` are AuthConfig fields."""
    config = auth_config(database_url, dev_pki, secrets.token_bytes(32), **overrides)
    app = AuthApp(config)
    app.open()
    server, port = background_loop.run(
        start_server([app.spec()], verifier=app.verifier, tls=config.tls, host="127.0.0.1", port=0)
    )
    try:
        yield AuthStack(app, f"localhost:{port}", ClientTls(ca_file=dev_pki.ca_cert))
    finally:
        background_loop.run(server.stop(grace=1))
        app.close()


__all__ = ["PASSWORD", "AuthStack", "BackgroundLoop", "Org", "auth_config", "running_auth"]
