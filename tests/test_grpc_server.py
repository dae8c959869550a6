"""The shared gRPC bootstrap: TLS, health, reflection, access policies and error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from devstack.pki import DevPki
from sevvo.auth.v1 import auth_pb2, auth_pb2_grpc
from sevvo.runtime.errors import InvalidArgument
from sevvo.runtime.grpc_client import ClientTls, error_details, secure_channel
from sevvo.runtime.grpc_server import Access, ServerSpec, TlsFiles, start_server
from sevvo.runtime.tokens import TokenVerifier, TrustState
from tests.plugins.auth_stack import BackgroundLoop

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

    async def ListRevokedSessions(self, request, context):  # type: ignore[no-untyped-def]
        return auth_pb2.ListRevokedSessionsResponse()

    async def SignOut(self, request, context):  # type: ignore[no-untyped-def]
        return auth_pb2.SignOutResponse()

    async def ChangePassword(self, request, context):  # type: ignore[no-untyped-def]
        return auth_pb2.ChangePasswordResponse()


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
