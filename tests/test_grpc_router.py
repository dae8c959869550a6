"""The dev gRPC router: one TLS endpoint forwarding each call to the service that owns its path,
balanced across the service's replicas."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from devstack.grpc_router import READINESS_NAMES, GrpcRouter, RouterConfig, routes_for
from devstack.pki import DevPki
from devstack.processes import free_port
from sevvo.auth.v1 import auth_pb2, auth_pb2_grpc
from sevvo.runtime.config import ConfigError
from sevvo.runtime.grpc_client import ClientTls, error_details, secure_channel
from sevvo.runtime.grpc_server import TlsFiles
from tests.plugins.auth_stack import AuthStack, BackgroundLoop

ECHO = "/sevvo.orchestrator.v1.Echo/Echo"
FAIL = "/sevvo.orchestrator.v1.Echo/Fail"


class _EchoBackend(grpc.GenericRpcHandler):  # type: ignore[misc]
    """A real gRPC backend that reports what reached it, or fails with rich details."""

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        if handler_call_details.method == FAIL:
            return grpc.unary_unary_rpc_method_handler(self._fail)
        return grpc.unary_unary_rpc_method_handler(self._echo)

    @staticmethod
    async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        metadata = [[k, v] for k, v in context.invocation_metadata() or () if isinstance(v, str)]
        context.set_trailing_metadata((("x-backend", "echo"),))
        return json.dumps(
            {"request": request.decode(), "metadata": metadata, "left": context.time_remaining()}
        ).encode()

    @staticmethod
    async def _fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        info = any_pb2.Any()
        info.Pack(error_details_pb2.ErrorInfo(reason="ECHO_REFUSED", domain="sevvo.dev"))
        status = status_pb2.Status(code=9, message="echo refuses", details=[info])
        await context.abort(
            grpc.StatusCode.FAILED_PRECONDITION,
            "echo refuses",
            trailing_metadata=(
                ("grpc-status-details-bin", status.SerializeToString()),
                ("x-backend", "echo"),
            ),
        )
        raise AssertionError("abort returns only by raising")


@dataclass
class Routed:
    """A router in front of real auth, an echo backend as orchestrator, and no connections."""

    channel: grpc.Channel
    auth: AuthStack


@pytest.fixture
def routed(
    auth_stack: AuthStack, dev_pki: DevPki, background_loop: BackgroundLoop
) -> Iterator[Routed]:
    """The router on loopback TLS; connections' route points at a port nobody listens on."""
    tls = TlsFiles(cert=dev_pki.server_cert, key=dev_pki.server_key)

    async def start_echo() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers([_EchoBackend()])
        port = server.add_secure_port("127.0.0.1:0", tls.credentials())
        await server.start()
        return server, port

    echo, echo_port = background_loop.run(start_echo())
    router = GrpcRouter(
        routes_for(
            {
                "auth": auth_stack.target,
                "connections": f"localhost:{free_port()}",
                "orchestrator": f"localhost:{echo_port}",
            }
        ),
        tls,
        ClientTls(ca_file=dev_pki.ca_cert),
    )
    port = background_loop.run(router.start())
    channel = secure_channel(f"localhost:{port}", ClientTls(ca_file=dev_pki.ca_cert))
    try:
        yield Routed(channel, auth_stack)
    finally:
        channel.close()
        background_loop.run(router.stop())
        background_loop.run(echo.stop(None))


def test_a_service_call_reaches_its_backend_with_the_callers_bearer(routed: Routed) -> None:
    """GetCaller through the router is answered by auth for the bearer the caller sent."""
    org = routed.auth.create_org()
    caller = auth_pb2_grpc.AuthServiceStub(routed.channel).GetCaller(
        auth_pb2.GetCallerRequest(), metadata=(("authorization", f"Bearer {org.admin_token}"),)
    )
    assert caller.org_id == org.org_id


def test_a_backend_error_comes_back_with_its_code_message_and_details(routed: Routed) -> None:
    """A refused SignIn reads the same through the router as from auth directly."""
    request = auth_pb2.SignInRequest(email="nobody@example.com", password="wrong password 1")
    metadata = (("x-request-id", "router-test-1"),)
    with pytest.raises(grpc.RpcError) as direct:
        routed.auth.auth().SignIn(request, metadata=metadata)
    with pytest.raises(grpc.RpcError) as via_router:
        auth_pb2_grpc.AuthServiceStub(routed.channel).SignIn(request, metadata=metadata)
    assert error_details(via_router.value) == error_details(direct.value)
    assert (error_details(via_router.value).metadata or {})["request_id"] == "router-test-1"


def test_trailing_metadata_and_status_details_pass_unchanged(routed: Routed) -> None:
    """A backend's grpc-status-details-bin and its own trailers reach the caller as sent."""
    with pytest.raises(grpc.RpcError) as failed:
        routed.channel.unary_unary(FAIL)(b"x", timeout=5)
    error: Any = failed.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == "echo refuses"
    trailers = dict(error.trailing_metadata())
    assert trailers["x-backend"] == "echo"
    assert error_details(error).reason == "ECHO_REFUSED"


def test_request_bytes_metadata_and_deadline_reach_the_backend(routed: Routed) -> None:
    """The backend sees the caller's bytes, its metadata and (about) its deadline."""
    reply, call = routed.channel.unary_unary(ECHO).with_call(
        b"hello", metadata=(("x-request-id", "abc-123"), ("x-custom", "kept")), timeout=5
    )
    seen = json.loads(reply)
    assert seen["request"] == "hello"
    assert ["x-request-id", "abc-123"] in seen["metadata"]
    assert ["x-custom", "kept"] in seen["metadata"]
    assert 3 < seen["left"] <= 5
    assert dict(call.trailing_metadata())["x-backend"] == "echo"


def test_a_backend_that_is_down_answers_unavailable_naming_the_service(routed: Routed) -> None:
    """Nothing listens behind the connections route: UNAVAILABLE says which service is down."""
    with pytest.raises(grpc.RpcError) as down:
        routed.channel.unary_unary("/sevvo.connections.v1.ConnectionService/ListConnections")(
            b"", timeout=5
        )
    error: Any = down.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details() == "the connections service is unavailable; retry shortly"


def test_a_path_no_route_owns_is_unimplemented(routed: Routed) -> None:
    """Only the sevvo service packages are routed."""
    with pytest.raises(grpc.RpcError) as unrouted:
        routed.channel.unary_unary("/other.v1.Thing/Do")(b"", timeout=5)
    assert unrouted.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_health_is_answered_by_the_router_itself(routed: Routed) -> None:
    """The router reports SERVING although one of its backends is down."""
    reply = health_pb2_grpc.HealthStub(routed.channel).Check(
        health_pb2.HealthCheckRequest(service=""), timeout=5
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_the_router_configuration_names_a_missing_variable(dev_pki: DevPki) -> None:
    """A missing backend endpoint fails at start, naming the variable."""
    env = {
        "SEVVO_TLS_CERT_FILE": str(dev_pki.server_cert),
        "SEVVO_TLS_KEY_FILE": str(dev_pki.server_key),
        "SEVVO_AUTH_ENDPOINT": "localhost:1",
        "SEVVO_ORCHESTRATOR_ENDPOINT": "localhost:2",
    }
    with pytest.raises(ConfigError, match="SEVVO_CONNECTIONS_ENDPOINT"):
        RouterConfig.load(env)
    routes = RouterConfig.load({**env, "SEVVO_CONNECTIONS_ENDPOINT": "localhost:3"}).routes()
    assert {(r.prefix, r.target) for r in routes} == {
        ("/sevvo.auth.", "localhost:1"),
        ("/sevvo.connections.", "localhost:3"),
        ("/sevvo.audit.", "localhost:3"),
        ("/sevvo.orchestrator.", "localhost:2"),
    }


def test_replica_lists_must_be_host_port_with_one_host_name(dev_pki: DevPki) -> None:
    """A backend's replicas are host:port,host:port on one host name; anything else fails at
    start, naming the variable."""
    env = {
        "SEVVO_TLS_CERT_FILE": str(dev_pki.server_cert),
        "SEVVO_TLS_KEY_FILE": str(dev_pki.server_key),
        "SEVVO_AUTH_ENDPOINT": "localhost:1, localhost:2",
        "SEVVO_CONNECTIONS_ENDPOINT": "localhost:3",
        "SEVVO_ORCHESTRATOR_ENDPOINT": "localhost:4",
    }
    routes = RouterConfig.load(env).routes()
    assert [r.replicas for r in routes if r.backend == "auth"] == [["localhost:1", "localhost:2"]]
    for bad in ("localhost:1,", "localhost:1,localhost", "localhost:1,127.0.0.1:2"):
        with pytest.raises(ConfigError, match="SEVVO_AUTH_ENDPOINT"):
            RouterConfig.load({**env, "SEVVO_AUTH_ENDPOINT": bad})


class _Replica(grpc.GenericRpcHandler):  # type: ignore[misc]
    """A backend replica that answers every call with its own name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        async def answer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return self.name.encode()

        return grpc.unary_unary_rpc_method_handler(answer)


def test_replicas_share_calls_and_one_unready_or_down_gets_none(
    dev_pki: DevPki, background_loop: BackgroundLoop
) -> None:
    """Calls alternate between two replicas; a replica whose health says NOT_SERVING, or that
    is gone, is skipped without a failed call."""
    tls = TlsFiles(cert=dev_pki.server_cert, key=dev_pki.server_key)
    readiness = READINESS_NAMES["orchestrator"]

    async def start_replica(name: str) -> tuple[grpc.aio.Server, HealthServicer, int]:
        server = grpc.aio.server()
        health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        server.add_generic_rpc_handlers([_Replica(name)])
        port = server.add_secure_port("127.0.0.1:0", tls.credentials())
        await server.start()
        await health.set(readiness, health_pb2.HealthCheckResponse.SERVING)
        return server, health, port

    (one, one_health, one_port), (two, _, two_port) = (
        background_loop.run(start_replica(name)) for name in ("one", "two")
    )
    router = GrpcRouter(
        routes_for(
            {
                "auth": f"localhost:{free_port()}",
                "connections": f"localhost:{free_port()}",
                "orchestrator": f"localhost:{one_port},localhost:{two_port}",
            }
        ),
        tls,
        ClientTls(ca_file=dev_pki.ca_cert),
    )
    port = background_loop.run(router.start())
    channel = secure_channel(f"localhost:{port}", ClientTls(ca_file=dev_pki.ca_cert))
    call = channel.unary_unary(ECHO)

    def answers() -> list[str]:
        return [call(b"", timeout=5).decode() for _ in range(6)]

    try:
        assert sorted(set(answers())) == ["one", "two"]
        background_loop.run(one_health.set(readiness, health_pb2.HealthCheckResponse.NOT_SERVING))
        time.sleep(0.3)  # The router's health watch hears of it.
        assert set(answers()) == {"two"}
        background_loop.run(one_health.set(readiness, health_pb2.HealthCheckResponse.SERVING))
        background_loop.run(two.stop(None))
        time.sleep(0.3)
        assert set(answers()) == {"one"}
    finally:
        channel.close()
        background_loop.run(router.stop())
        background_loop.run(one.stop(None))
        background_loop.run(two.stop(None))
