"""The shared gRPC bootstrap: TLS, health, reflection, access policies and error mapping."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterator

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from devstack.pki import DevPki
from sevvo.auth.v1 import auth_pb2, auth_pb2_grpc
from sevvo.runtime.errors import InvalidArgument
from sevvo.runtime.grpc_client import ClientTls, error_details, secure_channel
from sevvo.runtime.grpc_server import MAX_ERROR_TEXT, Access, ServerSpec, TlsFiles, start_server
from sevvo.runtime.logs import configure_logging
from sevvo.runtime.tokens import TokenVerifier, TrustState
from tests.plugins.auth_stack import BackgroundLoop
from tests.plugins.log_setup import configure_test_logging

LEAKY = "postgresql://app:hunter2-canary@db.internal:5432/prod"


class _NoKeys:
    def fetch(self) -> TrustState:
        return TrustState(keys={}, revoked_deployments={})


class _Misbehaving(auth_pb2_grpc.AuthServiceServicer):
    async def SignIn(self, request, context):  # type: ignore[no-untyped-def]
        raise RuntimeError(f"could not connect to {LEAKY}")

    async def GetPublicKeys(self, request, context):  # type: ignore[no-untyped-def]
        raise InvalidArgument("page_token", "is not a token returned by this method")

    async def ListRevokedDeployments(self, request, context):  # type: ignore[no-untyped-def]
        return auth_pb2.ListRevokedDeploymentsResponse()

    async def ExchangeDeploymentToken(self, request, context):  # type: ignore[no-untyped-def]
        return auth_pb2.ExchangeDeploymentTokenResponse()

    async def GetCaller(self, request, context):  # type: ignore[no-untyped-def]
        return auth_pb2.GetCallerResponse()

    async def BootstrapOrg(self, request, context):  # type: ignore[no-untyped-def]
        return auth_pb2.BootstrapOrgResponse()

    async def IssueTemporalToken(self, request, context):  # type: ignore[no-untyped-def]
        return auth_pb2.IssueTemporalTokenResponse()

    async def ListRevokedSessions(self, request, context):  # type: ignore[no-untyped-def]
        return auth_pb2.ListRevokedSessionsResponse()

    async def SignOut(self, request, context):  # type: ignore[no-untyped-def]
        return auth_pb2.SignOutResponse()

    async def ChangePassword(self, request, context):  # type: ignore[no-untyped-def]
        return auth_pb2.ChangePasswordResponse()

    async def ExchangeWorkloadToken(self, request, context):  # type: ignore[no-untyped-def]
        return auth_pb2.ExchangeWorkloadTokenResponse()

    async def ListRevokedWorkloads(self, request, context):  # type: ignore[no-untyped-def]
        return auth_pb2.ListRevokedWorkloadsResponse()


_SERVICE = "sevvo.auth.v1.AuthService"


@pytest.fixture
def target(dev_pki: DevPki, background_loop: BackgroundLoop) -> Iterator[str]:
    """A server hosting a misbehaving AuthService with a partial access policy."""
    verifier = TokenVerifier(_NoKeys())
    verifier.refresh()
    spec = ServerSpec(
        name="test",
        register=lambda server: auth_pb2_grpc.add_AuthServiceServicer_to_server(
            _Misbehaving(), server
        ),
        service_names=[_SERVICE],
        access={
            f"/{_SERVICE}/SignIn": Access.PUBLIC,
            f"/{_SERVICE}/GetPublicKeys": Access.PUBLIC,
            f"/{_SERVICE}/GetCaller": Access.USER,
        },
    )
    server, port = background_loop.run(
        start_server(
            [spec], verifier=verifier, tls=TlsFiles(dev_pki.server_cert, dev_pki.server_key)
        )
    )
    yield f"localhost:{port}"
    background_loop.run(server.stop(grace=0))


@pytest.fixture
def stub(target: str, dev_pki: DevPki) -> auth_pb2_grpc.AuthServiceStub:
    """A client that trusts the dev CA."""
    return auth_pb2_grpc.AuthServiceStub(secure_channel(target, ClientTls(dev_pki.ca_cert)))


def test_unexpected_errors_are_internal_and_hide_their_text(
    stub: auth_pb2_grpc.AuthServiceStub,
) -> None:
    """A crash inside a servicer reaches the client as INTERNAL with no DSN or password."""
    with pytest.raises(grpc.RpcError) as caught:
        stub.SignIn(auth_pb2.SignInRequest(), metadata=(("x-request-id", "req-42"),))
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "hunter2" not in caught.value.details() and "db.internal" not in caught.value.details()
    details = error_details(caught.value)
    assert details.reason == "INTERNAL"
    assert details.metadata == {"request_id": "req-42"}


def test_domain_errors_carry_reason_and_field(stub: auth_pb2_grpc.AuthServiceStub) -> None:
    """InvalidArgument becomes INVALID_ARGUMENT with ErrorInfo and a BadRequest field."""
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetPublicKeys(auth_pb2.GetPublicKeysRequest())
    details = error_details(caught.value)
    assert (details.code, details.reason, details.field) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "page_token",
    )


def test_method_without_policy_is_refused(stub: auth_pb2_grpc.AuthServiceStub) -> None:
    """A method missing from the access policy is unreachable even though it is implemented."""
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListRevokedDeployments(auth_pb2.ListRevokedDeploymentsRequest())
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_details(caught.value).reason == "NO_ACCESS_POLICY"


def test_protected_method_without_bearer_is_unauthenticated(
    stub: auth_pb2_grpc.AuthServiceStub,
) -> None:
    """Calling a user method with no bearer says how to authenticate."""
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetCaller(auth_pb2.GetCallerRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer" in caught.value.details()


def test_health_and_reflection_are_served(target: str, dev_pki: DevPki) -> None:
    """The standard health service reports SERVING and reflection lists the services."""
    channel = secure_channel(target, ClientTls(dev_pki.ca_cert))
    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=_SERVICE)
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    responses = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert _SERVICE in names and "grpc.health.v1.Health" in names


def test_client_rejects_a_server_it_does_not_trust(
    target: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A client with another CA refuses the server's certificate."""
    from devstack.pki import ensure_dev_pki

    other = ensure_dev_pki(tmp_path_factory.mktemp("other-ca"))
    stub = auth_pb2_grpc.AuthServiceStub(secure_channel(target, ClientTls(other.ca_cert)))
    with pytest.raises(grpc.RpcError) as caught:
        stub.SignIn(auth_pb2.SignInRequest(), timeout=3)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_streaming_methods_cannot_bypass_authentication(
    dev_pki: DevPki, background_loop: BackgroundLoop
) -> None:
    """A server-streaming method, even declared public, is refused rather than run unchecked."""
    called: list[bytes] = []

    async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        called.append(request)
        yield b"rows"

    handler = grpc.method_handlers_generic_handler(
        "test.Streamer", {"Stream": grpc.unary_stream_rpc_method_handler(stream)}
    )
    spec = ServerSpec(
        name="streamer",
        register=lambda server: server.add_generic_rpc_handlers((handler,)),
        service_names=["test.Streamer"],
        access={"/test.Streamer/Stream": Access.PUBLIC},
    )
    verifier = TokenVerifier(_NoKeys())
    verifier.refresh()
    server, port = background_loop.run(
        start_server(
            [spec], verifier=verifier, tls=TlsFiles(dev_pki.server_cert, dev_pki.server_key)
        )
    )
    try:
        channel = secure_channel(f"localhost:{port}", ClientTls(dev_pki.ca_cert))
        with pytest.raises(grpc.RpcError) as caught:
            list(channel.unary_stream("/test.Streamer/Stream")(b"hello", timeout=5))
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert called == []
    finally:
        background_loop.run(server.stop(grace=0))


HOSTILE_ID = "' or 1=1 -- hostile-canary"


class _Hostile(auth_pb2_grpc.AuthServiceServicer):
    """Fails the ways real servicers do when input is bad; BootstrapOrg is not implemented."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url

    async def SignIn(self, request, context):  # type: ignore[no-untyped-def]
        raise RuntimeError(f"could not connect to {LEAKY} for {request.email}")

    async def ExchangeDeploymentToken(self, request, context):  # type: ignore[no-untyped-def]
        # The mistake the page tokens made: caller text cast to uuid inside SQL.
        with psycopg.connect(self._database_url) as conn:
            conn.execute("select %s::uuid", (request.deployment_token,))
        return auth_pb2.ExchangeDeploymentTokenResponse()

    async def GetPublicKeys(self, request, context):  # type: ignore[no-untyped-def]
        raise InvalidArgument("page_token", "cannot be " + "x" * 50_000)

    async def GetCaller(self, request, context):  # type: ignore[no-untyped-def]
        return auth_pb2.GetCallerResponse(org_id="never-reached")

    async def ListRevokedDeployments(self, request, context):  # type: ignore[no-untyped-def]
        return auth_pb2.ListRevokedDeploymentsResponse()

    async def BootstrapOrg(self, request, context):  # type: ignore[no-untyped-def]
        # What a servicer that never overrode it does: the generated base sets
        # UNIMPLEMENTED and raises NotImplementedError.
        return auth_pb2_grpc.AuthServiceServicer.BootstrapOrg(self, request, context)

    async def SignOut(self, request, context):  # type: ignore[no-untyped-def]
        return auth_pb2_grpc.AuthServiceServicer.SignOut(self, request, context)

    async def IssueTemporalToken(self, request, context):  # type: ignore[no-untyped-def]
        return auth_pb2_grpc.AuthServiceServicer.IssueTemporalToken(self, request, context)

    async def ChangePassword(self, request, context):  # type: ignore[no-untyped-def]
        return auth_pb2_grpc.AuthServiceServicer.ChangePassword(self, request, context)

    async def ListRevokedSessions(self, request, context):  # type: ignore[no-untyped-def]
        return auth_pb2_grpc.AuthServiceServicer.ListRevokedSessions(self, request, context)

    async def ExchangeWorkloadToken(self, request, context):  # type: ignore[no-untyped-def]
        return auth_pb2_grpc.AuthServiceServicer.ExchangeWorkloadToken(self, request, context)

    async def ListRevokedWorkloads(self, request, context):  # type: ignore[no-untyped-def]
        return auth_pb2_grpc.AuthServiceServicer.ListRevokedWorkloads(self, request, context)


@pytest.fixture
def hostile(
    dev_pki: DevPki, background_loop: BackgroundLoop, database_url: str
) -> Iterator[tuple[auth_pb2_grpc.AuthServiceStub, io.StringIO, grpc.Channel]]:
    """A server over _Hostile whose logs are captured; yields a stub, the logs and a channel."""
    logs = io.StringIO()
    configure_logging("hostile", level="INFO", json=True, stream=logs)
    verifier = TokenVerifier(_NoKeys())
    verifier.refresh()
    public = ("SignIn", "ExchangeDeploymentToken", "GetPublicKeys", "BootstrapOrg")
    spec = ServerSpec(
        name="hostile",
        register=lambda server: auth_pb2_grpc.add_AuthServiceServicer_to_server(
            _Hostile(database_url), server
        ),
        service_names=[_SERVICE],
        access={
            **{f"/{_SERVICE}/{name}": Access.PUBLIC for name in public},
            f"/{_SERVICE}/GetCaller": Access.USER,
        },
    )
    server, port = background_loop.run(
        start_server(
            [spec], verifier=verifier, tls=TlsFiles(dev_pki.server_cert, dev_pki.server_key)
        )
    )
    channel = secure_channel(f"localhost:{port}", ClientTls(dev_pki.ca_cert))
    try:
        yield auth_pb2_grpc.AuthServiceStub(channel), logs, channel
    finally:
        channel.close()
        background_loop.run(server.stop(grace=0))
        configure_test_logging()


def test_unparsable_request_bytes_are_invalid_argument(
    hostile: tuple[auth_pb2_grpc.AuthServiceStub, io.StringIO, grpc.Channel],
) -> None:
    """Garbage bytes answer INVALID_ARGUMENT with a reason, not UNKNOWN naming DecodeError."""
    _, _, channel = hostile
    with pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(f"/{_SERVICE}/SignIn")(b"\x0a\xff\xff\xff\xff", timeout=5)
    details = error_details(caught.value)
    assert (details.code, details.reason, details.field) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "MALFORMED_REQUEST",
        "request",
    )
    assert "Error" not in caught.value.details() and "class" not in caught.value.details()


def test_unparsable_bytes_from_an_unauthenticated_caller_are_unauthenticated(
    hostile: tuple[auth_pb2_grpc.AuthServiceStub, io.StringIO, grpc.Channel],
) -> None:
    """Authentication runs before the request is judged: a stranger learns nothing of it."""
    _, _, channel = hostile
    with pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(f"/{_SERVICE}/GetCaller")(b"\xff\xff", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_unexpected_error_is_logged_as_types_and_frames_without_its_message(
    hostile: tuple[auth_pb2_grpc.AuthServiceStub, io.StringIO, grpc.Channel],
) -> None:
    """The log line names the exception and where it was raised, never the text it carries."""
    stub, logs, _ = hostile
    with pytest.raises(grpc.RpcError) as caught:
        stub.SignIn(auth_pb2.SignInRequest(email=HOSTILE_ID))
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    [unhandled] = [line for line in lines if line["event"] == "unhandled error"]
    assert unhandled["chain"][0]["type"] == "builtins.RuntimeError"
    assert any(frame.endswith(" SignIn") for frame in unhandled["chain"][0]["frames"])
    output = logs.getvalue()
    assert "hostile-canary" not in output and "db.internal" not in output
    assert "Traceback" not in output


def test_postgres_rejecting_caller_text_is_invalid_argument_and_not_logged(
    hostile: tuple[auth_pb2_grpc.AuthServiceStub, io.StringIO, grpc.Channel],
) -> None:
    """`invalid input syntax for type uuid` is the caller's fault; its text stays out of logs."""
    stub, logs, _ = hostile
    with pytest.raises(grpc.RpcError) as caught:
        stub.ExchangeDeploymentToken(
            auth_pb2.ExchangeDeploymentTokenRequest(deployment_token=HOSTILE_ID)
        )
    details = error_details(caught.value)
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_VALUE")
    output = logs.getvalue()
    assert "InvalidTextRepresentation" in output, "the database error was not logged"
    assert "hostile-canary" not in output and "invalid input syntax" not in output


def test_unimplemented_method_is_unimplemented(
    hostile: tuple[auth_pb2_grpc.AuthServiceStub, io.StringIO, grpc.Channel],
) -> None:
    """A declared method the servicer does not implement answers UNIMPLEMENTED, not INTERNAL."""
    stub, _, _ = hostile
    with pytest.raises(grpc.RpcError) as caught:
        stub.BootstrapOrg(auth_pb2.BootstrapOrgRequest())
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_error_text_is_cut_to_fit_a_client(
    hostile: tuple[auth_pb2_grpc.AuthServiceStub, io.StringIO, grpc.Channel],
) -> None:
    """An error quoting a huge input still reaches the client, cut, with its field."""
    stub, _, _ = hostile
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetPublicKeys(auth_pb2.GetPublicKeysRequest())
    details = error_details(caught.value)
    assert (details.code, details.field) == (grpc.StatusCode.INVALID_ARGUMENT, "page_token")
    assert len(caught.value.details()) <= MAX_ERROR_TEXT
