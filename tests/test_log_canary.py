"""Log canary: a run through sign-in, exchange and their failures leaks no secret to any log."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterator

import grpc
import pytest

from sevvo.auth.v1 import auth_pb2, deployments_pb2
from sevvo.connections.v1 import connections_pb2
from sevvo.runtime import deployment_token
from sevvo.runtime.logs import configure_logging
from tests.plugins.auth_stack import PASSWORD, AuthStack
from tests.plugins.control_plane import ControlPlane
from tests.plugins.log_setup import configure_test_logging

JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log line of the process (structlog and stdlib) rendered as in production."""
    stream = io.StringIO()
    configure_logging("canary", level="DEBUG", json=True, stream=stream)
    yield stream
    configure_test_logging()


def test_no_secret_reaches_the_logs(captured_logs: io.StringIO, auth_stack: AuthStack) -> None:
    """Passwords, deployment tokens, their secrets and JWTs never appear in a captured line."""
    org = auth_stack.create_org()
    deployment_id, token = auth_stack.new_deployment(org)
    secret = deployment_token.unwrap(token).secret
    bearer = auth_stack.agent_bearer(token)
    auth_stack.auth(bearer).GetCaller(auth_pb2.GetCallerRequest())
    wrong_password = "definitely-the-wrong-password"
    failing_calls: list[Callable[[], object]] = [
        lambda: auth_stack.auth().SignIn(
            auth_pb2.SignInRequest(email=org.admin_email, password=wrong_password)
        ),
        lambda: auth_stack.agent_bearer(token[:-4] + "AAAA"),
        lambda: auth_stack.agent_bearer("postgresql://app:" + wrong_password + "@db/x"),
        lambda: auth_stack.auth(bearer + "x").GetCaller(auth_pb2.GetCallerRequest()),
        lambda: auth_stack.auth(org.admin_token[:-3]).GetCaller(auth_pb2.GetCallerRequest()),
    ]
    for call in failing_calls:
        with pytest.raises(grpc.RpcError):
            call()
    auth_stack.deployments(org.admin_token).RevokeDeployment(
        deployments_pb2.RevokeDeploymentRequest(id=deployment_id)
    )
    with pytest.raises(grpc.RpcError):
        auth_stack.agent_bearer(token)
    logging.getLogger("grpc").warning("client said Authorization: Bearer %s", bearer)

    output = captured_logs.getvalue()
    assert "signed in" in output and "deployment revoked" in output, "logs were not captured"
    assert output.count('"event": "rpc"') + output.count('"event":"rpc"') >= 8
    for leaked in (PASSWORD, wrong_password, token, secret, bearer, org.admin_token):
        assert leaked not in output
    assert JWT_SHAPE.search(output) is None


def test_no_connection_secret_reaches_the_logs(
    captured_logs: io.StringIO, control_plane: ControlPlane
) -> None:
    """Creating, updating, resolving and mistyping connections logs no password or DSN."""
    org = control_plane.auth.create_org()
    password = "canary-Pg-password-42"
    dsn = f"postgresql://reader:{password}@db.acme.internal:5432/app?sslmode=require"
    stub = control_plane.connections(org.admin_token)
    created = control_plane.create(org, "form", password)
    stub.CreateConnection(
        connections_pb2.CreateConnectionRequest(
            display_name="dsn", dsn=connections_pb2.PostgresDsn(uri=dsn)
        )
    )
    for bad in (dsn + "&options=x", dsn.replace("sslmode=require", "sslmode=verify-full")):
        with pytest.raises(grpc.RpcError):
            stub.CreateConnection(
                connections_pb2.CreateConnectionRequest(
                    display_name="bad", dsn=connections_pb2.PostgresDsn(uri=bad)
                )
            )
    control_plane.credentials(control_plane.agent_for(org)).ResolveConnectionCredentials(
        connections_pb2.ResolveConnectionCredentialsRequest(connection_id=created.id)
    )
    output = captured_logs.getvalue()
    assert "credentials resolved" in output, "logs were not captured"
    assert password not in output
    assert dsn not in output
