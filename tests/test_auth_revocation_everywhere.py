"""A signed-out or disabled user's session is refused by every service within 5 seconds.

auth refuses at once (it refreshes its own verifier on every revocation). connections and the
orchestrator run as their own TLS servers and verify remotely, polling auth at the production
cadence (2 s), as deployed; the bound is docs/design.md's "within seconds", measured end to end.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest

from devstack.pki import DevPki
from devstack.temporal import TemporalDevServer
from services.connections.config import ConnectionsConfig
from services.connections.server import ConnectionsApp
from services.orchestrator.config import OrchestratorConfig
from services.orchestrator.server import OrchestratorApp
from sevvo.auth.v1 import auth_pb2, users_pb2
from sevvo.connections.v1 import connections_pb2, connections_pb2_grpc
from sevvo.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from sevvo.runtime.grpc_client import error_details, secure_channel
from sevvo.runtime.grpc_server import TlsFiles, start_server
from sevvo.runtime.sealing import Keyring
from tests.plugins.auth_stack import AuthStack, BackgroundLoop

PRODUCTION_REFRESH_SECONDS = 2.0
BOUND_SECONDS = 5.0


@dataclass
class Services:
    """auth plus connections and orchestrator, each its own server verifying remotely."""

    auth: AuthStack
    connections_target: str
    orchestrator_target: str
    _channels: list[grpc.Channel]

    def _channel(self, target: str, token: str) -> grpc.Channel:
        channel = secure_channel(target, self.auth.client_tls, lambda: token)
        self._channels.append(channel)
        return channel

    def probes(self, token: str) -> dict[str, Callable[[], object]]:
        """One user call per service, made with ``token``."""
        connections = connections_pb2_grpc.ConnectionServiceStub(
            self._channel(self.connections_target, token)
        )
        orchestrator = orchestrator_pb2_grpc.OrchestratorServiceStub(
            self._channel(self.orchestrator_target, token)
        )
        return {
            "auth": lambda: self.auth.auth(token).GetCaller(auth_pb2.GetCallerRequest()),
            "connections": lambda: connections.ListConnections(
                connections_pb2.ListConnectionsRequest()
            ),
            "orchestrator": lambda: orchestrator.ListRuns(orchestrator_pb2.ListRunsRequest()),
        }


@pytest.fixture(scope="module")
def temporal() -> Iterator[TemporalDevServer]:
    """A Temporal dev server for the orchestrator to connect to."""
    with TemporalDevServer() as server:
        yield server


@pytest.fixture
def services(
    auth_stack: AuthStack,
    database_url: str,
    dev_pki: DevPki,
    background_loop: BackgroundLoop,
    temporal: TemporalDevServer,
) -> Iterator[Services]:
    """connections and orchestrator beside the auth stack, at the production refresh cadence."""
    tls = TlsFiles(cert=dev_pki.server_cert, key=dev_pki.server_key)
    connections = ConnectionsApp(
        ConnectionsConfig(
            database_url=database_url,
            tls=tls,
            keyring=Keyring.generate("k1"),
            auth_endpoint=auth_stack.target,
            ca_file=dev_pki.ca_cert,
            host="127.0.0.1",
            port=0,
            refresh_seconds=PRODUCTION_REFRESH_SECONDS,
        )
    )
    orchestrator = OrchestratorApp(
        OrchestratorConfig(
            database_url=database_url,
            tls=tls,
            keyring=Keyring.generate("k1"),
            temporal_address=temporal.address,
            auth_endpoint=auth_stack.target,
            # Never called: these tests list runs, which needs no connection lookup.
            connections_endpoint="localhost:1",
            ca_file=dev_pki.ca_cert,
            host="127.0.0.1",
            port=0,
            refresh_seconds=PRODUCTION_REFRESH_SECONDS,
        )
    )
    connections.open()
    background_loop.run(orchestrator.open())
    verifiers = [connections.remote_verifier(), orchestrator.remote_verifier()]
    servers = []
    try:
        for spec, verifier in zip(
            (connections.spec(), orchestrator.spec()), verifiers, strict=True
        ):
            verifier.start()
            servers.append(background_loop.run(start_server([spec], verifier=verifier, tls=tls)))
        channels: list[grpc.Channel] = []
        yield Services(
            auth_stack, f"localhost:{servers[0][1]}", f"localhost:{servers[1][1]}", channels
        )
        for channel in channels:
            channel.close()
    finally:
        for server, _ in servers:
            background_loop.run(server.stop(grace=1))
        for verifier in verifiers:
            verifier.stop()
        connections.close()
        background_loop.run(orchestrator.aclose())


@dataclass
class Member:
    """A member of a new org, signed in, and the org's admin session."""

    id: str
    session: str
    admin_session: str


def _signed_in_member(stack: AuthStack) -> Member:
    org = stack.create_org()
    email, password = f"member-{uuid.uuid4().hex[:8]}@acme.example", secrets.token_urlsafe(18)
    member = stack.users(org.admin_token).CreateUser(
        users_pb2.CreateUserRequest(email=email, password=password)
    )
    session = stack.auth().SignIn(auth_pb2.SignInRequest(email=email, password=password))
    return Member(member.id, session.session_token, org.admin_token)


def _sign_out(stack: AuthStack, member: Member) -> None:
    stack.auth(member.session).SignOut(auth_pb2.SignOutRequest())


def _disable(stack: AuthStack, member: Member) -> None:
    stack.users(member.admin_session).DisableUser(users_pb2.DisableUserRequest(id=member.id))


def _seconds_until_refused(probes: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Calls every probe until it fails; returns each one's seconds to SESSION_REVOKED."""
    started = time.monotonic()
    refused: dict[str, float] = {}
    reasons: dict[str, str | None] = {}
    while len(refused) < len(probes) and time.monotonic() - started < 2 * BOUND_SECONDS:
        for name, probe in probes.items():
            if name in refused:
                continue
            try:
                probe()
            except grpc.RpcError as error:
                refused[name] = time.monotonic() - started
                reasons[name] = error_details(error).reason
        time.sleep(0.05)
    assert set(reasons.values()) <= {"SESSION_REVOKED"}, reasons
    return refused


@pytest.mark.parametrize("revoke", [_sign_out, _disable], ids=["signed-out", "disabled"])
def test_a_revoked_session_is_refused_everywhere_within_five_seconds(
    services: Services, revoke: Callable[[AuthStack, Member], None]
) -> None:
    """After SignOut or DisableUser auth refuses at once, the others within one 2 s refresh."""
    member = _signed_in_member(services.auth)
    probes = services.probes(member.session)
    for probe in probes.values():
        probe()
    revoke(services.auth, member)
    refused = _seconds_until_refused(probes)
    assert set(refused) == set(probes)
    assert refused["auth"] < 0.5
    assert max(refused.values()) < BOUND_SECONDS
