"""The client library's own logic: durations, settings from the environment, error mapping,
and the borrow / renew / re-borrow / revoke lifecycle against a stand-in agent on a real
gRPC Unix socket (seconds-long leases; tests/test_e2e_workload_credentials.py runs the real
agent)."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from devstack.pki import DevPki
from sevvo.agent.v1 import credentials_pb2_grpc
from sevvo.runtime.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from sevvo_client import (
    AgentUnavailable,
    ConfigurationError,
    Credential,
    CredentialError,
    InvalidRequest,
    NotGranted,
    PastMaxTTL,
    Unauthenticated,
    managed_credentials,
    parse_duration,
    sevvo_credentials,
)
from sevvo_client import NotFound as ClientNotFound
from sevvo_client.errors import error_class
from sevvo_client.settings import DEFAULT_SOCKET, resolve
from tests.credential_fake import TOKEN, FakeAgent, serving
from tests.plugins.auth_stack import BackgroundLoop
from tests.plugins.pki import ca_certificate_pem


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a Unix socket's path is limited to ~107 bytes."""
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="sc-") as name:
        yield Path(name)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2h", 7200),
        ("30m", 1800),
        ("90s", 90),
        ("1h30m", 5400),
        ("1h30m15s", 5415),
        (" 2H ", 7200),
        ("3600", 3600),
        (45, 45),
        (2.5, 2),
        (timedelta(minutes=2), 120),
    ],
)
def test_durations_parse_as_people_write_them(
    text: str | int | float | timedelta, seconds: int
) -> None:
    """Hours, minutes, seconds and plain numbers are whole seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "2", "h", "2x", "30m2h", "1h1h", "1.5h", "-5m", "0s", 0, True]
)
def test_malformed_durations_are_refused_with_an_example(text: str | int) -> None:
    """Anything else, and zero, is a ValueError that shows what a duration looks like."""
    if text == "2":  # A bare number is seconds, but it must be at least 1.
        assert parse_duration(text) == 2
        return
    with pytest.raises(ValueError, match=r"duration"):
        parse_duration(text)


def test_settings_default_to_the_sidecar_socket_and_the_token_file(tmp_path: Path) -> None:
    """With no arguments, the agent is at the default socket and the token comes from its file."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    settings = resolve(env={"SEVVO_WORKLOAD_TOKEN_FILE": str(token_file)})
    assert settings.agent.target == f"unix://{DEFAULT_SOCKET}"
    assert not settings.agent.tls
    assert settings.token == TOKEN
    assert settings.metadata == (("authorization", f"Bearer {TOKEN}"),)
    assert TOKEN not in repr(settings)


def test_settings_read_socket_address_and_token_from_the_environment(tmp_path: Path) -> None:
    """SEVVO_AGENT_SOCKET (path or unix:// URL), SEVVO_AGENT_ADDRESS with its CA, the token."""
    env = {"SEVVO_AGENT_SOCKET": "unix:///run/x/agent.sock", "SEVVO_WORKLOAD_TOKEN": TOKEN}
    assert resolve(env=env).agent.target == "unix:///run/x/agent.sock"
    env["SEVVO_AGENT_SOCKET"] = "/run/y.sock"
    assert resolve(env=env).agent.target == "unix:///run/y.sock"
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    tls = resolve(
        env={
            "SEVVO_AGENT_ADDRESS": "sevvo-agent.apps.svc:7443",
            "SEVVO_AGENT_CA_FILE": str(ca),
            "SEVVO_WORKLOAD_TOKEN": TOKEN,
        }
    ).agent
    assert (tls.target, tls.tls, tls.ca_file) == ("sevvo-agent.apps.svc:7443", True, ca)
    # An argument wins over the environment.
    assert resolve(socket="/s.sock", env=env).agent.target == "unix:///s.sock"


@pytest.mark.parametrize(
    ("kwargs", "env", "message"),
    [
        ({}, {}, "no workload token: set SEVVO_WORKLOAD_TOKEN_FILE"),
        (
            {},
            {"SEVVO_WORKLOAD_TOKEN": "sevvo_dt_secret-deploy-token"},
            "not a sevvo workload token",
        ),
        ({"token": "hunter2-not-a-token"}, {}, "the token argument is not a sevvo workload token"),
        ({}, {"SEVVO_WORKLOAD_TOKEN_FILE": "/nonexistent/token"}, "cannot be read"),
        ({"socket": "/a", "address": "b:1", "token": TOKEN}, {}, "not both"),
        (
            {"token": TOKEN},
            {"SEVVO_AGENT_SOCKET": "/a", "SEVVO_AGENT_ADDRESS": "b:1"},
            "SEVVO_AGENT_SOCKET or SEVVO_AGENT_ADDRESS, not both",
        ),
        ({"address": "no-port", "token": TOKEN}, {}, "must be host:port"),
        ({"address": "h:1", "ca_file": "/nonexistent/ca", "token": TOKEN}, {}, "does not exist"),
    ],
)
def test_missing_or_malformed_settings_say_what_to_set(
    kwargs: dict[str, str], env: dict[str, str], message: str
) -> None:
    """ConfigurationError names the variable or argument, and never echoes a token."""
    with pytest.raises(ConfigurationError, match=message) as caught:
        resolve(env=env, **kwargs)
    for secret in ("sevvo_dt_secret-deploy-token", "hunter2"):
        assert secret not in str(caught.value)
        assert secret not in repr(caught.value)


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_GRANTED", NotGranted),
        (grpc.StatusCode.PERMISSION_DENIED, "TTL_OVER_WORKLOAD_MAXIMUM", NotGranted),
        (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED", NotGranted),
        (grpc.StatusCode.FAILED_PRECONDITION, "LEASE_PAST_MAX_TTL", PastMaxTTL),
        (grpc.StatusCode.FAILED_PRECONDITION, "SOMETHING_ELSE", CredentialError),
        (grpc.StatusCode.NOT_FOUND, "NOT_FOUND", ClientNotFound),
        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", InvalidRequest),
        (grpc.StatusCode.UNAVAILABLE, "", AgentUnavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "", AgentUnavailable),
        (grpc.StatusCode.INTERNAL, "INTERNAL", CredentialError),
    ],
)
def test_status_code_and_reason_map_to_one_exception(
    code: grpc.StatusCode, reason: str, expected: type[CredentialError]
) -> None:
    """Each gRPC code + ErrorInfo reason the agent answers with has its exception class."""
    assert error_class(code, reason) is expected


@pytest.mark.parametrize(
    ("error", "expected", "reason"),
    [
        (
            PermissionDenied("role readonly is not granted", reason="ROLE_NOT_GRANTED"),
            NotGranted,
            "ROLE_NOT_GRANTED",
        ),
        (NotFound("no connection named reporting-db"), ClientNotFound, "NOT_FOUND"),
        (
            InvalidArgument("purpose", "must be lower_snake_case"),
            InvalidRequest,
            "INVALID_ARGUMENT",
        ),
        (Unavailable("the control plane did not answer"), AgentUnavailable, "UNAVAILABLE"),
    ],
)
def test_agent_errors_arrive_as_exceptions_with_their_reason(
    short_dir: Path, error: Exception, expected: type[CredentialError], reason: str
) -> None:
    """Over a real gRPC socket, the agent's status and ErrorInfo become the library's exception."""
    agent = FakeAgent(fail={"generate": error})  # type: ignore[dict-item]

    async def borrow() -> None:
        async with (
            serving(agent, short_dir / "a.sock") as target,
            managed_credentials("reporting-db", socket=target, token=TOKEN),
        ):
            pass

    with pytest.raises(expected) as caught:
        asyncio.run(borrow())
    assert caught.value.reason == reason
    assert str(error.args[0]).split(":")[0] in str(caught.value)


def test_no_agent_listening_is_agent_unavailable(short_dir: Path) -> None:
    """Nothing on the socket: AgentUnavailable, saying the agent did not answer."""
    with (
        pytest.raises(AgentUnavailable, match="the sevvo agent did not answer"),
        sevvo_credentials("db", socket=str(short_dir / "none.sock"), token=TOKEN),
    ):
        pass


class _Served:
    """A FakeAgent on a background loop, for the blocking API."""

    def __init__(self, agent: FakeAgent, socket: Path) -> None:
        self.loop = BackgroundLoop()
        self._serving = serving(agent, socket)
        self.target = self.loop.run(self._serving.__aenter__())

    def close(self) -> None:
        self.loop.run(self._serving.__aexit__(None, None, None))
        self.loop.close()


@pytest.fixture
def served(short_dir: Path) -> Iterator[tuple[FakeAgent, str]]:
    """A stand-in agent and its socket target."""
    agent = FakeAgent()
    server = _Served(agent, short_dir / "a.sock")
    try:
        yield agent, server.target
    finally:
        server.close()


def test_a_wrong_token_is_unauthenticated_and_not_repeated(served: tuple[FakeAgent, str]) -> None:
    """A token the agent does not know is Unauthenticated; the message does not hold it."""
    agent, target = served
    wrong = "sevvo_wt_" + "z" * 40
    with (
        pytest.raises(Unauthenticated) as caught,
        sevvo_credentials("db", socket=target, token=wrong),
    ):
        pass
    assert wrong not in str(caught.value)
    assert wrong not in repr(caught.value)
    assert agent.leases == {}


def test_the_context_manager_borrows_and_revokes_on_exit(served: tuple[FakeAgent, str]) -> None:
    """The block gets a full credential; after it, the lease is revoked."""
    agent, target = served
    with sevvo_credentials(
        "reporting-db", role="readonly", ttl="30m", purpose="report", socket=target, token=TOKEN
    ) as creds:
        assert [lease.lease_id for lease in agent.live()] == [creds.lease_id]
        assert creds.username.startswith("v_fake_")
        assert (creds.host, creds.port, creds.database) == ("db.internal", 5432, "shop")
        assert f"user={creds.username}" in creds.conninfo
        assert creds.expire_time > creds.max_expire_time - timedelta(seconds=7)
    request = agent.requests[0]
    assert (request.connection, request.role, request.ttl_seconds, request.purpose) == (
        "reporting-db",
        "readonly",
        1800,
        "report",
    )
    assert agent.live() == []
    assert agent.leases[creds.lease_id].revoked


def test_the_context_manager_revokes_when_the_block_raises(served: tuple[FakeAgent, str]) -> None:
    """An exception in the block still gives the credential back, and propagates."""
    agent, target = served
    with (
        pytest.raises(RuntimeError, match="report failed"),
        sevvo_credentials("db", socket=target, token=TOKEN),
    ):
        raise RuntimeError("report failed")
    assert len(agent.leases) == 1
    assert agent.live() == []


def test_a_credentials_repr_holds_no_password(served: tuple[FakeAgent, str]) -> None:
    """Printing or logging the credential shows the user and lease, not password or conninfo."""
    _, target = served
    with sevvo_credentials("db", socket=target, token=TOKEN) as creds:
        text = repr(creds)
    assert creds.password not in text
    assert "password" not in text
    assert creds.username in text
    assert creds.lease_id in text


def test_a_bad_ttl_fails_before_any_call(served: tuple[FakeAgent, str]) -> None:
    """A malformed TTL is a ConfigurationError naming ttl; nothing is borrowed."""
    agent, target = served
    with (
        pytest.raises(ConfigurationError, match="ttl: "),
        sevvo_credentials("db", ttl="2 hours", socket=target, token=TOKEN),
    ):
        pass
    assert agent.leases == {}


def test_managed_credential_renews_then_reborrows_past_max_ttl(short_dir: Path) -> None:
    """Leases of 1 s up to 3 s: renewed in the background, replaced before the max, the old
    one revoked after the grace, every one revoked on exit."""
    agent = FakeAgent(ttl=1.0, max_ttl=3.0)
    changes: list[Credential] = []

    async def run() -> tuple[Credential, list[Credential]]:
        async with (
            serving(agent, short_dir / "a.sock") as target,
            managed_credentials(
                "db", ttl=1, grace=0.2, on_change=changes.append, socket=target, token=TOKEN
            ) as cred,
        ):
            first = cred.current
            seen: list[Credential] = []

            async def watch() -> None:
                async for new in cred.changes():
                    seen.append(new)

            watcher = asyncio.create_task(watch())
            # Borrowed at 0 (max 3 s), renewed at ~0.7 and ~1.3, replaced at ~2.0 (the
            # next renewal would pass 3 s), old one revoked at ~2.2, next swap at ~4.0.
            await asyncio.sleep(3.1)
            watcher.cancel()
            assert cred.renewals >= 2
            assert cred.borrows >= 2
            assert cred.current.lease_id != first.lease_id
            assert cred.current.max_expire_time > first.max_expire_time
            # The old lease was renewed, then retired after the grace.
            assert agent.leases[first.lease_id].renewals >= 1
            assert agent.leases[first.lease_id].revoked
            assert [lease.lease_id for lease in agent.live()] == [cred.current.lease_id]
            return first, seen

    first, seen = asyncio.run(run())
    assert changes
    assert changes[0].lease_id != first.lease_id
    assert [c.lease_id for c in seen] == [c.lease_id for c in changes][: len(seen)]
    assert agent.live() == []


def test_managed_credential_keeps_trying_while_the_agent_fails(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing renewal is retried and logged (lease id and reason only); the credential
    is renewed once the agent answers again."""
    agent = FakeAgent(ttl=2.0, max_ttl=30.0)

    async def run() -> int:
        async with (
            serving(agent, short_dir / "a.sock") as target,
            managed_credentials("db", ttl=2, socket=target, token=TOKEN) as cred,
        ):
            agent.fail["renew"] = Unavailable("the control plane did not answer")
            await asyncio.sleep(1.6)
            assert isinstance(cred.last_error, AgentUnavailable)
            assert cred.renewals == 0
            del agent.fail["renew"]
            await asyncio.sleep(0.8)
            assert cred.last_error is None
            return cred.renewals

    with caplog.at_level(logging.WARNING, logger="sevvo_client"):
        assert asyncio.run(run()) >= 1
    assert "renewal failed (UNAVAILABLE)" in caplog.text
    assert TOKEN not in caplog.text
    assert agent.live() == []


def test_the_agent_can_be_reached_over_tls_with_a_ca_file(dev_pki: DevPki, tmp_path: Path) -> None:
    """address= host:port with ca_file: the call goes over TLS, verified against that CA; a
    client that does not trust the CA is refused as AgentUnavailable."""
    agent = FakeAgent()
    loop = BackgroundLoop()

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        credentials_pb2_grpc.add_CredentialServiceServicer_to_server(agent, server)
        port = server.add_secure_port(
            "localhost:0",
            grpc.ssl_server_credentials(
                [(dev_pki.server_key.read_bytes(), dev_pki.server_cert.read_bytes())]
            ),
        )
        await server.start()
        return server, port

    server, port = loop.run(start())
    try:
        with sevvo_credentials(
            "db", address=f"localhost:{port}", ca_file=dev_pki.ca_cert, token=TOKEN
        ) as creds:
            assert [lease.lease_id for lease in agent.live()] == [creds.lease_id]
        assert agent.live() == []
        other_ca = tmp_path / "other-ca.crt"  # Not the CA that signed the server's cert.
        other_ca.write_text(ca_certificate_pem("someone else's CA")[0])
        with (
            pytest.raises(AgentUnavailable),
            sevvo_credentials("db", address=f"localhost:{port}", ca_file=other_ca, token=TOKEN),
        ):
            pass
    finally:
        loop.run(server.stop(None))
        loop.close()
