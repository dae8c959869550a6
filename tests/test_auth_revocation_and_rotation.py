"""Revoking deployments and rotating signing keys, as every verifying service sees them."""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace

import grpc
import jwt
import pytest

from devstack.pki import DevPki
from services.auth.server import AuthApp
from sevvo.auth.v1 import auth_pb2, deployments_pb2
from sevvo.runtime.auth_client import RemoteTrustSource
from sevvo.runtime.errors import Unauthenticated
from sevvo.runtime.grpc_client import ClientTls, error_details, secure_channel
from sevvo.runtime.grpc_server import start_server
from sevvo.runtime.tokens import ISSUER, PrincipalKind, TokenVerifier
from tests.plugins.auth_stack import AuthStack, BackgroundLoop, auth_config


@pytest.fixture
def remote_verifier(auth_stack: AuthStack) -> Iterator[TokenVerifier]:
    """A verifier as connections or orchestrator run it: polling auth over TLS, default cadence."""
    channel = secure_channel(auth_stack.target, auth_stack.client_tls)
    verifier = TokenVerifier(RemoteTrustSource(channel), refresh_interval=2.0, max_staleness=5.0)
    verifier.start()
    yield verifier
    verifier.stop()
    channel.close()


def test_revoked_deployment_cannot_exchange(auth_stack: AuthStack) -> None:
    """After revocation the next exchange fails at once with DEPLOYMENT_REVOKED."""
    org = auth_stack.create_org()
    deployment_id, token = auth_stack.new_deployment(org)
    auth_stack.agent_bearer(token)
    auth_stack.deployments(org.admin_token).RevokeDeployment(
        deployments_pb2.RevokeDeploymentRequest(id=deployment_id)
    )
    with pytest.raises(grpc.RpcError) as caught:
        auth_stack.agent_bearer(token)
    assert error_details(caught.value).reason == "DEPLOYMENT_REVOKED"


def test_revoked_bearer_fails_everywhere_within_five_seconds(
    auth_stack: AuthStack, remote_verifier: TokenVerifier
) -> None:
    """A revoked deployment's unexpired bearer fails in auth and in a remote verifier in < 5 s."""
    org = auth_stack.create_org()
    deployment_id, token = auth_stack.new_deployment(org)
    bearer = auth_stack.agent_bearer(token)
    assert remote_verifier.verify(bearer, PrincipalKind.AGENT).subject_id == deployment_id

    revoked_at = time.monotonic()
    auth_stack.deployments(org.admin_token).RevokeDeployment(
        deployments_pb2.RevokeDeploymentRequest(id=deployment_id)
    )
    rejected_by_auth = rejected_remotely = None
    auth_reason = remote_reason = None
    while time.monotonic() - revoked_at < 10 and None in (rejected_by_auth, rejected_remotely):
        if rejected_by_auth is None:
            try:
                auth_stack.auth(bearer).GetCaller(auth_pb2.GetCallerRequest())
            except grpc.RpcError as exc:
                rejected_by_auth = time.monotonic() - revoked_at
                auth_reason = error_details(exc).reason
        if rejected_remotely is None:
            try:
                remote_verifier.verify(bearer, PrincipalKind.AGENT)
            except Unauthenticated as exc:
                rejected_remotely = time.monotonic() - revoked_at
                remote_reason = exc.reason
        time.sleep(0.05)
    assert (auth_reason, remote_reason) == ("DEPLOYMENT_REVOKED", "DEPLOYMENT_REVOKED")
    assert rejected_by_auth is not None
    assert rejected_by_auth < 5
    assert rejected_remotely is not None
    assert rejected_remotely < 5


def test_other_deployments_keep_working_after_a_revocation(auth_stack: AuthStack) -> None:
    """Revoking one deployment leaves the org's other deployments untouched."""
    org = auth_stack.create_org()
    first, _ = auth_stack.new_deployment(org, "first")
    _, second_token = auth_stack.new_deployment(org, "second")
    auth_stack.deployments(org.admin_token).RevokeDeployment(
        deployments_pb2.RevokeDeploymentRequest(id=first)
    )
    bearer = auth_stack.agent_bearer(second_token)
    assert auth_stack.auth(bearer).GetCaller(auth_pb2.GetCallerRequest()).org_id == org.org_id


def test_key_rotation_under_load_has_zero_failures(
    auth_stack: AuthStack, remote_verifier: TokenVerifier
) -> None:
    """Continuous sign-in, exchange and verification across two rotations never fails."""
    org = auth_stack.create_org()
    _, token = auth_stack.new_deployment(org)
    remote_verifier._refresh_interval = 0.2  # As fast as auth's own test cadence.
    stop = threading.Event()
    failures: list[str] = []
    kids: set[str] = set()
    calls = 0

    def hammer() -> None:
        nonlocal calls
        stub = auth_stack.auth()
        while not stop.is_set():
            try:
                bearer = stub.ExchangeDeploymentToken(
                    auth_pb2.ExchangeDeploymentTokenRequest(deployment_token=token)
                ).bearer_token
                kids.add(jwt.get_unverified_header(bearer)["kid"])
                auth_stack.auth(bearer).GetCaller(auth_pb2.GetCallerRequest())
                remote_verifier.verify(bearer, PrincipalKind.AGENT)
                calls += 1
            except Exception as exc:
                failures.append(repr(exc))

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        for _ in range(2):
            time.sleep(0.5)
            auth_stack.app.keys.rotate()
            time.sleep(auth_stack.app.keys.publish_delay.total_seconds() + 0.5)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert failures == []
    assert len(kids) == 3, "tokens should have been signed by the original and two new keys"
    assert calls > 50


def test_retired_key_is_rejected_after_its_last_token_expires(
    database_url: str, dev_pki: DevPki, background_loop: BackgroundLoop
) -> None:
    """Once the old key's window closes, even a long-lived token it signed is refused."""
    config = replace(
        auth_config(database_url, dev_pki, secrets.token_bytes(32)),
        session_ttl_seconds=1,
        bearer_ttl_seconds=1,
        workload_bearer_ttl_seconds=1,
        leeway_seconds=0,
    )
    app = AuthApp(config)
    app.open()
    server, port = background_loop.run(
        start_server([app.spec()], verifier=app.verifier, tls=config.tls, port=0)
    )
    try:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": PrincipalKind.USER.audience,
            "sub": str(uuid.uuid4()),
            "org_id": str(uuid.uuid4()),
            "kind": "user",
            "iat": now,
            "exp": now + 3600,
            "jti": uuid.uuid4().hex,
        }
        old_token = app.keys.sign(claims)
        stub_channel = secure_channel(
            f"localhost:{port}", ClientTls(dev_pki.ca_cert), lambda: old_token
        )
        from sevvo.auth.v1 import auth_pb2_grpc

        stub = auth_pb2_grpc.AuthServiceStub(stub_channel)
        assert stub.GetCaller(auth_pb2.GetCallerRequest()).org_id == claims["org_id"]
        app.keys.rotate()
        time.sleep(app.keys.publish_delay.total_seconds() + 0.3)
        # Still inside the old key's window (activation + 1 s token lifetime): accepted.
        assert stub.GetCaller(auth_pb2.GetCallerRequest()).org_id == claims["org_id"]
        time.sleep(1.5)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetCaller(auth_pb2.GetCallerRequest())
        assert error_details(caught.value).reason == "TOKEN_UNKNOWN_KEY"
        published = {k.kid for k in app.trust.published_keys()}
        assert jwt.get_unverified_header(old_token)["kid"] not in published
    finally:
        background_loop.run(server.stop(grace=1))
        app.close()
