"""The credential API's pieces that need no control plane: configuration, conninfo, CA files,
the workload-bearer cache, the socket's upkeep, and the TLS listener's refusals."""

from __future__ import annotations

import asyncio
import socket
import stat
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from agent.config import AgentConfig, CredentialApiConfig
from agent.credential_broker import (
    CredentialBroker,
    PrivilegedSessions,
    RoleSettings,
    WorkloadBearers,
    conninfo,
    token_key,
    write_ca_bundle,
)
from agent.credential_server import SocketInUse, clear_stale_socket, serving
from devstack.pki import DevPki
from sevvo.agent.v1 import credentials_pb2 as apb
from sevvo.agent.v1 import credentials_pb2_grpc as apb_grpc
from sevvo.auth.v1 import auth_pb2
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.runtime.config import ConfigError
from sevvo.runtime.credential_token import WORKLOAD_TOKEN, Credentials
from sevvo.runtime.deployment_token import DeploymentCredentials, wrap
from sevvo.runtime.errors import Unauthenticated
from sevvo.runtime.grpc_client import error_details

DEPLOYMENT_TOKEN = wrap(DeploymentCredentials("0b8e6c2e-5d56-4b8e-9a53-0d5d3f3c1a11", "s" * 43))
WORKLOAD = WORKLOAD_TOKEN.wrap(Credentials("9d0c35a4-8f1e-4df5-8b0a-4c3d1f2e5a77", "w" * 43))
BASE = {
    "SEVVO_DEPLOYMENT_TOKEN": DEPLOYMENT_TOKEN,
    "SEVVO_CONTROL_PLANE_ENDPOINT": "cp.example",
    "SEVVO_TEMPORAL_ADDRESS": "temporal.example",
}


def _load(**env: str) -> CredentialApiConfig:
    return AgentConfig.load({**BASE, **env}).credential_api


def test_the_socket_is_on_by_default_and_an_empty_value_turns_it_off() -> None:
    """Unset: /var/run/sevvo/agent.sock, 0660, CA files beside it; empty: no socket."""
    default = _load()
    assert default.socket == Path("/var/run/sevvo/agent.sock")
    assert default.socket_mode == 0o660
    assert default.ca_dir == Path("/var/run/sevvo")
    assert default.tls_port is None
    off = _load(SEVVO_CREDENTIAL_SOCKET="")
    assert (off.socket, off.ca_dir) == (None, None)
    assert _load(SEVVO_CREDENTIAL_SOCKET_MODE="0600").socket_mode == 0o600


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"SEVVO_CREDENTIAL_SOCKET": "relative/agent.sock"}, "SEVVO_CREDENTIAL_SOCKET"),
        ({"SEVVO_CREDENTIAL_SOCKET": "/" + "d" * 120 + "/a.sock"}, "SEVVO_CREDENTIAL_SOCKET"),
        ({"SEVVO_CREDENTIAL_SOCKET_MODE": "0666"}, "SEVVO_CREDENTIAL_SOCKET_MODE"),
        ({"SEVVO_CREDENTIAL_TLS_PORT": "https"}, "SEVVO_CREDENTIAL_TLS_PORT"),
        ({"SEVVO_CREDENTIAL_TLS_PORT": "70000"}, "SEVVO_CREDENTIAL_TLS_PORT"),
        ({"SEVVO_CREDENTIAL_TLS_PORT": "8443"}, "SEVVO_CREDENTIAL_TLS_CERT"),
        ({"SEVVO_CREDENTIAL_TLS_CERT": "/nonexistent.crt"}, "SEVVO_CREDENTIAL_TLS_CERT"),
        ({"SEVVO_CREDENTIAL_CA_DIR": "ca"}, "SEVVO_CREDENTIAL_CA_DIR"),
        ({"SEVVO_CREDENTIAL_ADMIN_SESSIONS": "0"}, "SEVVO_CREDENTIAL_ADMIN_SESSIONS"),
    ],
)
def test_bad_listener_settings_fail_at_start_naming_the_variable(
    env: dict[str, str], variable: str
) -> None:
    """Each listener setting that could never work is a ConfigError naming its variable."""
    with pytest.raises(ConfigError) as caught:
        _load(**env)
    assert variable in str(caught.value)
    assert DEPLOYMENT_TOKEN not in str(caught.value)


def test_a_tls_port_needs_both_files_and_the_files_need_the_port(tmp_path: Path) -> None:
    """Port, cert and key come together; with all three the port is served."""
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("x")
    key.write_text("x")
    with pytest.raises(ConfigError, match="SEVVO_CREDENTIAL_TLS_PORT is not"):
        _load(SEVVO_CREDENTIAL_TLS_CERT=str(cert), SEVVO_CREDENTIAL_TLS_KEY=str(key))
    loaded = _load(
        SEVVO_CREDENTIAL_TLS_PORT="8443",
        SEVVO_CREDENTIAL_TLS_CERT=str(cert),
        SEVVO_CREDENTIAL_TLS_KEY=str(key),
    )
    assert (loaded.tls_port, loaded.tls_cert, loaded.tls_key) == (8443, cert, key)


def _postgres(**fields: Any) -> cpb.PostgresCredentials:
    defaults: dict[str, Any] = {
        "host": "db.internal",
        "port": 5433,
        "database": "reporting db",
        "ssl_mode": cpb.SSL_MODE_REQUIRE,
    }
    return cpb.PostgresCredentials(**{**defaults, **fields})


@pytest.mark.parametrize(
    "password", ["plain", "with space", "quote'in", "back\\slash", "eq=ual", "'", ""]
)
def test_conninfo_quotes_every_value_so_libpq_reads_it_back_exactly(password: str) -> None:
    """Whatever the characters, libpq parses the conninfo into exactly the values given."""
    text = conninfo(_postgres(), "sevvo_dyn_x_abcdefghij", password, None)
    parsed = psycopg.conninfo.conninfo_to_dict(text)
    assert parsed == {
        "host": "db.internal",
        "port": "5433",
        "dbname": "reporting db",
        "user": "sevvo_dyn_x_abcdefghij",
        "password": password,
        "sslmode": "require",
    }


def test_a_verifying_connection_gets_a_shared_readable_ca_file(tmp_path: Path) -> None:
    """The bundle is written once per content, 0644, and named by sslrootcert."""
    pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    first = write_ca_bundle(tmp_path, pem)
    assert write_ca_bundle(tmp_path, pem) == first
    assert first.read_text() == pem
    assert stat.S_IMODE(first.stat().st_mode) == 0o644
    assert write_ca_bundle(tmp_path, pem + "\n") != first
    text = conninfo(
        _postgres(ssl_mode=cpb.SSL_MODE_VERIFY_FULL), "sevvo_dyn_abcdefghij", "pw", first
    )
    parsed = psycopg.conninfo.conninfo_to_dict(text)
    assert (parsed["sslmode"], parsed["sslrootcert"]) == ("verify-full", str(first))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


class _CountingAuth:
    """An AuthService stand-in that counts exchanges and answers after a pause."""

    def __init__(self, *, refuse: bool = False, lifetime: timedelta = timedelta(minutes=5)):
        self.calls = 0
        self.refuse = refuse
        self.lifetime = lifetime

    async def ExchangeWorkloadToken(
        self, request: auth_pb2.ExchangeWorkloadTokenRequest, **_: Any
    ) -> auth_pb2.ExchangeWorkloadTokenResponse:
        self.calls += 1
        await asyncio.sleep(0.05)
        if self.refuse:
            raise _refused()
        expires = Timestamp()
        expires.FromDatetime(datetime.now(UTC) + self.lifetime)
        return auth_pb2.ExchangeWorkloadTokenResponse(
            bearer_token=f"jwt-{self.calls}",
            expire_time=expires,
            org_id="org",
            workload_id="wl",
            max_ttl_seconds=3600,
        )


def _refused() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details="workload token refused",
    )


def test_concurrent_borrowers_with_one_token_cost_one_exchange() -> None:
    """100 calls at once share one exchange; later calls reuse the cached bearer."""
    auth = _CountingAuth()
    bearers = WorkloadBearers(auth)  # type: ignore[arg-type]

    async def body() -> set[str]:
        got = await asyncio.gather(*(bearers.bearer_for(WORKLOAD) for _ in range(100)))
        again = await bearers.bearer_for(WORKLOAD)
        return {b.bearer for b in got} | {again.bearer}

    assert asyncio.run(body()) == {"jwt-1"}
    assert auth.calls == 1


def test_a_bearer_near_its_expiry_is_exchanged_again_and_the_cache_holds_no_token() -> None:
    """A bearer within the refresh margin is replaced; the cache is keyed by the token's hash."""
    auth = _CountingAuth(lifetime=timedelta(seconds=10))
    bearers = WorkloadBearers(auth)  # type: ignore[arg-type]

    async def body() -> None:
        await bearers.bearer_for(WORKLOAD)
        await bearers.bearer_for(WORKLOAD)

    asyncio.run(body())
    assert auth.calls == 2
    assert list(bearers._cached) == [token_key(WORKLOAD)]
    assert WORKLOAD not in repr(bearers._cached)


def test_malformed_tokens_never_reach_auth_and_refusals_are_unauthenticated() -> None:
    """A token of the wrong shape is refused locally; one auth refuses is UNAUTHENTICATED."""
    auth = _CountingAuth(refuse=True)
    bearers = WorkloadBearers(auth)  # type: ignore[arg-type]
    for token in ("", "sevvo_dt_abc", "Bearer x", DEPLOYMENT_TOKEN):
        with pytest.raises(Unauthenticated) as caught:
            asyncio.run(bearers.bearer_for(token))
        assert caught.value.reason == "INVALID_WORKLOAD_TOKEN"
    assert auth.calls == 0
    with pytest.raises(Unauthenticated):
        asyncio.run(bearers.bearer_for(WORKLOAD))
    assert auth.calls == 1


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short private directory (a socket path is limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="sevvo-sock-") as directory:
        yield Path(directory)


def test_a_stale_socket_is_removed_and_a_live_one_or_a_file_is_refused(socket_dir: Path) -> None:
    """Nobody answering: removed. Someone answering, or not a socket: left alone, refused."""
    path = socket_dir / "agent.sock"
    clear_stale_socket(path)  # Nothing there: nothing to do.
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    try:
        with pytest.raises(SocketInUse):
            clear_stale_socket(path)
        assert path.exists()
    finally:
        listener.close()
    clear_stale_socket(path)  # Bound but closed: stale.
    assert not path.exists()
    path.write_text("not a socket")
    with pytest.raises(ConfigError, match="no socket"):
        clear_stale_socket(path)
    assert path.read_text() == "not a socket"


def _broker(auth: Any) -> CredentialBroker:
    return CredentialBroker(
        org_id="org",
        bearers=WorkloadBearers(auth),
        settings=RoleSettings(None),  # type: ignore[arg-type]
        sessions=PrivilegedSessions(None),  # type: ignore[arg-type]
        leases=None,  # type: ignore[arg-type]
        ca_dir=None,
    )


def test_the_socket_and_the_tls_port_serve_the_api_and_refuse_without_a_token(
    socket_dir: Path, dev_pki: DevPki
) -> None:
    """Both listeners answer with UNAUTHENTICATED (TOKEN_MISSING) and, for a token auth
    refuses, UNAUTHENTICATED; the socket is 0600 as configured and gone afterwards."""
    path = socket_dir / "agent.sock"
    config = AgentConfig(
        deployment_token=DEPLOYMENT_TOKEN,
        control_plane_endpoint="cp:443",
        temporal_address="t:443",
        credential_api=CredentialApiConfig(
            socket=path,
            socket_mode=0o600,
            tls_port=0,
            tls_host="127.0.0.1",
            tls_cert=dev_pki.server_cert,
            tls_key=dev_pki.server_key,
        ),
    )
    auth = _CountingAuth(refuse=True)

    async def body() -> list[tuple[grpc.StatusCode, str | None]]:
        results = []
        async with serving(config, _broker(auth)) as addresses:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            tls = grpc.ssl_channel_credentials(dev_pki.ca_cert.read_bytes())
            channels = [
                grpc.aio.insecure_channel(addresses[0]),
                grpc.aio.secure_channel(addresses[1].replace("127.0.0.1", "localhost"), tls),
            ]
            for channel in channels:
                async with channel:
                    stub = apb_grpc.CredentialServiceStub(channel)
                    for metadata in (None, (("authorization", f"Bearer {WORKLOAD}"),)):
                        try:
                            await stub.GenerateCredential(
                                apb.GenerateCredentialRequest(connection="db"),
                                metadata=metadata,
                            )
                        except grpc.aio.AioRpcError as exc:
                            details = error_details(exc)
                            results.append((details.code, details.reason))
        assert not path.exists()
        return results

    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    assert (
        asyncio.run(body())
        == [
            (unauthenticated, "TOKEN_MISSING"),
            (unauthenticated, "INVALID_WORKLOAD_TOKEN"),
        ]
        * 2
    )


def test_privileged_sessions_are_reused_and_a_dead_one_is_replaced(pg_server_url: str) -> None:
    """Borrows reuse one logged-in session; one the server ended while idle is replaced
    without failing the work."""
    url = psycopg.conninfo.conninfo_to_dict(pg_server_url)
    postgres = cpb.PostgresCredentials(
        host=str(url.get("host", "127.0.0.1")),
        port=int(str(url.get("port", 5432))),
        database=str(url.get("dbname", "postgres")),
        username=str(url["user"]),
        password=str(url["password"]),
        ssl_mode=cpb.SSL_MODE_DISABLE,
    )
    sessions = PrivilegedSessions(None, size=2)  # type: ignore[arg-type]

    async def backend(admin: psycopg.AsyncConnection[Any]) -> int:
        cur = await admin.execute("select pg_backend_pid()")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def body() -> tuple[int, int, int]:
        first = await sessions.run("c1", postgres, backend)
        second = await sessions.run("c1", postgres, backend)
        with psycopg.connect(pg_server_url, autocommit=True) as killer:
            killer.execute("select pg_terminate_backend(%s, 5000)", (second,))
        third = await sessions.run("c1", postgres, backend)
        await sessions.close()
        return first, second, third

    first, second, third = asyncio.run(body())
    assert first == second
    assert third != second
