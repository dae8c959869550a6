"""Token verification: every forged, expired or misused token is rejected over real gRPC."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.auth.keys import encode, header_for
from services.auth.last_seen import LastSeen
from sevvo.auth.v1 import auth_pb2, auth_pb2_grpc, deployments_pb2, users_pb2
from sevvo.runtime.errors import Unauthenticated
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.tokens import ISSUER, PrincipalKind
from tests.plugins.auth_stack import AuthStack, Org


@pytest.fixture
def auth_stack(module_auth_stack: AuthStack) -> AuthStack:
    """One auth service for the module: every test makes its own org, so none meet."""
    return module_auth_stack


@pytest.fixture(scope="module")
def org(module_auth_stack: AuthStack) -> Org:
    """One org for the module: its tests forge tokens for it and change nothing about it."""
    return module_auth_stack.create_org()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _claims(org: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": PrincipalKind.USER.audience,
        "sub": str(uuid.uuid4()),
        "org_id": org,
        "kind": "user",
        "role": "admin",
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    for key, value in changes.items():
        if value is None:
            claims.pop(key, None)
        else:
            claims[key] = value
    return claims


def _caller_error(stack: AuthStack, token: str) -> str | None:
    with pytest.raises(grpc.RpcError) as caught:
        stack.auth(token).GetCaller(auth_pb2.GetCallerRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    return error_details(caught.value).reason


def test_valid_session_identifies_the_caller(auth_stack: AuthStack, org: Org) -> None:
    """A genuine session token passes and names the caller's org."""
    caller = auth_stack.auth(org.admin_token).GetCaller(auth_pb2.GetCallerRequest())
    assert caller.kind == auth_pb2.PRINCIPAL_KIND_USER
    assert caller.org_id == org.org_id


def test_alg_none_is_rejected(auth_stack: AuthStack, org: Org) -> None:
    """An unsigned token (alg none) is rejected."""
    kid = jwt.get_unverified_header(org.admin_token)["kid"]
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    payload = _b64(json.dumps(_claims(org.org_id)).encode())
    assert _caller_error(auth_stack, f"{header}.{payload}.") == "TOKEN_ALGORITHM"


def test_hs256_signed_with_the_public_key_is_rejected(auth_stack: AuthStack, org: Org) -> None:
    """The classic key-confusion forgery (HMAC keyed with the public key) is rejected."""
    kid = jwt.get_unverified_header(org.admin_token)["kid"]
    public = auth_stack.app.trust.published_keys()[0].public_key.public_bytes_raw()
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = _b64(json.dumps(_claims(org.org_id)).encode())
    signature = hmac.new(public, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert _caller_error(auth_stack, f"{header}.{payload}.{_b64(signature)}") == "TOKEN_ALGORITHM"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"exp": int(time.time()) - 120}, "TOKEN_EXPIRED"),
        ({"exp": None}, "TOKEN_INVALID"),
        ({"iss": None}, "TOKEN_INVALID"),
        ({"aud": None}, "TOKEN_INVALID"),
        ({"iss": "someone-else"}, "TOKEN_INVALID"),
        ({"aud": "sevvo:somewhere-else"}, "TOKEN_WRONG_AUDIENCE"),
        ({"org_id": None}, "TOKEN_INVALID"),
        ({"kind": "agent"}, "TOKEN_WRONG_AUDIENCE"),
    ],
    ids=["expired", "no-exp", "no-iss", "no-aud", "wrong-iss", "wrong-aud", "no-org", "kind"],
)
def test_signed_tokens_with_bad_claims_are_rejected(
    auth_stack: AuthStack, changes: dict[str, Any], reason: str, org: Org
) -> None:
    """Tokens signed by auth's real key but with missing or wrong claims are rejected."""
    token = auth_stack.app.keys.sign(_claims(org.org_id, **changes))
    assert _caller_error(auth_stack, token) == reason


def test_unknown_kid_is_rejected(auth_stack: AuthStack, org: Org) -> None:
    """A token signed by a key auth never published is rejected."""
    rogue = Ed25519PrivateKey.generate()
    token = jwt.encode(_claims(org.org_id), rogue, algorithm="EdDSA", headers={"kid": "rogue"})
    assert _caller_error(auth_stack, token) == "TOKEN_UNKNOWN_KEY"


def test_known_kid_with_a_foreign_signature_is_rejected(auth_stack: AuthStack, org: Org) -> None:
    """A token naming auth's kid but signed by another key fails its signature check."""
    kid = jwt.get_unverified_header(org.admin_token)["kid"]
    rogue = Ed25519PrivateKey.generate()
    token = jwt.encode(_claims(org.org_id), rogue, algorithm="EdDSA", headers={"kid": kid})
    assert _caller_error(auth_stack, token) == "TOKEN_INVALID"


def test_tampered_payload_is_rejected(auth_stack: AuthStack, org: Org) -> None:
    """Changing the org in a genuine token's payload breaks its signature."""
    header, payload, signature = org.admin_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["org_id"] = str(uuid.uuid4())
    forged = f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"
    assert _caller_error(auth_stack, forged) == "TOKEN_INVALID"


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "Bearer"])
def test_malformed_tokens_are_rejected(auth_stack: AuthStack, token: str) -> None:
    """Missing or malformed bearers get UNAUTHENTICATED, not an internal error."""
    with pytest.raises(grpc.RpcError) as caught:
        auth_pb2_grpc.AuthServiceStub(auth_stack.channel()).GetCaller(
            auth_pb2.GetCallerRequest(), metadata=(("authorization", f"Bearer {token}"),)
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_user_session_is_not_an_agent_bearer(auth_stack: AuthStack, org: Org) -> None:
    """A user session presented where an agent bearer is required is rejected."""
    with pytest.raises(Unauthenticated) as caught:
        auth_stack.app.verifier.verify(org.admin_token, PrincipalKind.AGENT)
    assert caught.value.reason == "TOKEN_WRONG_AUDIENCE"


def test_agent_bearer_is_not_a_user_session(auth_stack: AuthStack, org: Org) -> None:
    """An agent bearer cannot call user methods, in the verifier or over gRPC."""
    _, token = auth_stack.new_deployment(org)
    bearer = auth_stack.agent_bearer(token)
    with pytest.raises(Unauthenticated):
        auth_stack.app.verifier.verify(bearer, PrincipalKind.USER)
    with pytest.raises(grpc.RpcError) as caught:
        auth_stack.users(bearer).ListUsers(users_pb2.ListUsersRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_details(caught.value).reason == "TOKEN_WRONG_AUDIENCE"


def test_agent_bearer_carries_required_claims(auth_stack: AuthStack, org: Org) -> None:
    """An exchanged bearer is EdDSA with kid, iss, aud, iat, exp, jti, org and deployment."""
    deployment_id, token = auth_stack.new_deployment(org)
    bearer = auth_stack.agent_bearer(token)
    header = jwt.get_unverified_header(bearer)
    claims = jwt.decode(bearer, options={"verify_signature": False})
    assert header["alg"] == "EdDSA"
    assert header["kid"]
    assert claims["org_id"] == org.org_id
    assert claims["sub"] == deployment_id
    assert claims["iss"] == ISSUER
    assert claims["aud"] == PrincipalKind.AGENT.audience
    assert 300 <= claims["exp"] - claims["iat"] <= 900
    assert claims["jti"]


def test_issued_tokens_are_what_pyjwt_would_sign() -> None:
    """auth's own JWS encoding yields PyJWT's bytes exactly (Ed25519 is deterministic)."""
    private_key = Ed25519PrivateKey.generate()
    claims = {"iss": ISSUER, "aud": "sevvo:agent", "sub": "s", "iat": 1, "exp": 2, "jti": "j"}
    expected = jwt.encode(claims, private_key, algorithm="EdDSA", headers={"kid": "k1-test"})
    assert encode(claims, private_key, header_for("k1-test")) == expected


def test_exchange_answers_the_bearers_own_expiry(auth_stack: AuthStack, org: Org) -> None:
    """ExchangeDeploymentToken's expire_time is exactly the bearer's exp claim."""
    _, token = auth_stack.new_deployment(org)
    response = auth_stack.auth().ExchangeDeploymentToken(
        auth_pb2.ExchangeDeploymentTokenRequest(deployment_token=token)
    )
    claims = jwt.decode(response.bearer_token, options={"verify_signature": False})
    assert (response.expire_time.seconds, response.expire_time.nanos) == (claims["exp"], 0)


def test_a_deployment_is_seen_when_its_agent_exchanges_its_token(
    auth_stack: AuthStack, org: Org
) -> None:
    """GetDeployment's last_seen_time: unset before any exchange, then the exchange's time."""
    deployment_id, token = auth_stack.new_deployment(org, "seen")
    deployments = auth_stack.deployments(org.admin_token)
    request = deployments_pb2.GetDeploymentRequest(id=deployment_id)
    assert not deployments.GetDeployment(request).HasField("last_seen_time")
    before = time.time()
    auth_stack.auth().ExchangeDeploymentToken(
        auth_pb2.ExchangeDeploymentTokenRequest(deployment_token=token)
    )
    give_up = time.monotonic() + 5
    while not (seen := deployments.GetDeployment(request)).HasField("last_seen_time"):
        assert time.monotonic() < give_up, "the exchange was not recorded as seen"
        time.sleep(0.02)
    assert before - 1 <= seen.last_seen_time.ToDatetime().timestamp() <= time.time() + 1


def test_last_seen_is_written_at_most_once_a_minute_per_deployment() -> None:
    now = [100.0]
    seen = LastSeen(every=60, clock=lambda: now[0])
    assert seen.due("a") and seen.due("b")
    now[0] += 59
    assert not seen.due("a")
    now[0] += 1
    assert seen.due("a")
    seen.forget("a")
    assert seen.due("a")  # a failed write is tried again at the next exchange


def test_get_caller_names_the_callers_org(auth_stack: AuthStack) -> None:
    """A user and an agent of an org both learn its display name from GetCaller."""
    name = f"Name Check {uuid.uuid4().hex[:6]}"
    org = auth_stack.create_org(name)
    as_user = auth_stack.auth(org.admin_token).GetCaller(auth_pb2.GetCallerRequest())
    assert (as_user.org_id, as_user.org_name) == (org.org_id, name)
    _, token = auth_stack.new_deployment(org, "named")
    bearer = auth_stack.auth().ExchangeDeploymentToken(
        auth_pb2.ExchangeDeploymentTokenRequest(deployment_token=token)
    )
    as_agent = auth_stack.auth(bearer.bearer_token).GetCaller(auth_pb2.GetCallerRequest())
    assert as_agent.org_name == name
