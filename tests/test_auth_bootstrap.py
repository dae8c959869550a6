"""AuthService.BootstrapOrg: the operator creates an org and its admin with the bootstrap token."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
import structlog

from devstack.pki import DevPki
from services.auth.config import AuthConfig, write_bootstrap_token
from services.auth.server import AuthApp
from sevvo.auth.v1 import auth_pb2, users_pb2
from sevvo.runtime.config import ConfigError
from sevvo.runtime.grpc_client import ClientTls, error_details
from sevvo.runtime.grpc_server import start_server
from tests.plugins.auth_stack import PASSWORD, AuthStack, BackgroundLoop, auth_config

TOKEN = secrets.token_urlsafe(32)
METADATA = "x-sevvo-bootstrap-token"


@pytest.fixture
def bootstrap_auth(
    database_url: str, dev_pki: DevPki, background_loop: BackgroundLoop
) -> Iterator[AuthStack]:
    """auth with a bootstrap token configured, over TLS on loopback."""
    config = auth_config(database_url, dev_pki, secrets.token_bytes(32), bootstrap_token=TOKEN)
    app = AuthApp(config)
    app.open()
    server, port = background_loop.run(
        start_server([app.spec()], verifier=app.verifier, tls=config.tls, host="127.0.0.1", port=0)
    )
    try:
        yield AuthStack(app, f"localhost:{port}", ClientTls(ca_file=dev_pki.ca_cert))
    finally:
        background_loop.run(server.stop(grace=1))
        app.close()


def _bootstrap(
    stack: AuthStack,
    token: str | None = TOKEN,
    *,
    org: str = "Acme",
    email: str = "ada@acme.example",
    password: str = PASSWORD,
) -> auth_pb2.BootstrapOrgResponse:
    metadata = ((METADATA, token),) if token is not None else ()
    response: auth_pb2.BootstrapOrgResponse = stack.auth().BootstrapOrg(
        auth_pb2.BootstrapOrgRequest(org_name=org, admin_email=email, admin_password=password),
        metadata=metadata,
        timeout=10,
    )
    return response


def _refused(stack: AuthStack, token: str | None = TOKEN, **kwargs: str) -> tuple[str, str | None]:
    with pytest.raises(grpc.RpcError) as caught:
        _bootstrap(stack, token, **kwargs)
    details = error_details(caught.value)
    return details.code.name, details.reason


def test_bootstrap_creates_an_org_whose_admin_can_sign_in(bootstrap_auth: AuthStack) -> None:
    """With the right token, the org and an admin exist and the admin signs in."""
    created = _bootstrap(bootstrap_auth)
    assert created.admin.email == "ada@acme.example"
    assert created.admin.role == users_pb2.USER_ROLE_ADMIN
    assert created.admin.org_id == created.org_id
    signed_in = bootstrap_auth.auth().SignIn(
        auth_pb2.SignInRequest(email="ada@acme.example", password=PASSWORD)
    )
    assert signed_in.org_id == created.org_id


def test_bootstrap_is_audited_as_the_operators_in_the_new_org(bootstrap_auth: AuthStack) -> None:
    """The new org's log opens with org.create and user.create by sevvo itself (no user yet),
    via the bootstrap token; neither the password nor the token is in it."""
    created = _bootstrap(bootstrap_auth)
    with psycopg.connect(bootstrap_auth.app.config.database_url) as conn:
        rows = conn.execute(
            "select action, actor_kind, actor_id, target_id, details->>'via', details::text"
            " from audit.events where org_id = %s order by action",
            (created.org_id,),
        ).fetchall()
    assert [row[:5] for row in rows] == [
        ("org.create", "system", "sevvo", created.org_id, "bootstrap"),
        ("user.create", "system", "sevvo", created.admin.id, "bootstrap"),
    ]
    assert not [row for row in rows if PASSWORD in row[5] or TOKEN in row[5]]


def test_bootstrap_is_disabled_without_a_configured_token(auth_stack: AuthStack) -> None:
    """auth without SEVVO_AUTH_BOOTSTRAP_TOKEN_FILE refuses every bootstrap."""
    assert _refused(auth_stack) == ("FAILED_PRECONDITION", "BOOTSTRAP_DISABLED")


@pytest.mark.parametrize(
    "token",
    [None, "", "wrong-" + TOKEN, TOKEN[:-1]],
    # Fixed ids: the token is random, and parallel workers must collect the same test names.
    ids=["missing", "empty", "prefixed", "truncated"],
)
def test_bootstrap_refuses_a_missing_or_wrong_token(
    bootstrap_auth: AuthStack, token: str | None
) -> None:
    """A missing, empty or wrong token is PERMISSION_DENIED, and nothing is created."""
    assert _refused(bootstrap_auth, token) == ("PERMISSION_DENIED", "BOOTSTRAP_TOKEN_INVALID")
    assert bootstrap_auth.app.store.user_by_email("ada@acme.example") is None


def test_a_refused_bootstrap_is_logged_without_the_token(bootstrap_auth: AuthStack) -> None:
    """The refusal is logged with its reason; neither token appears in any event."""
    wrong = "wrong-" + TOKEN
    with structlog.testing.capture_logs() as events:
        _refused(bootstrap_auth, wrong)
    refusals = [e for e in events if e["event"] == "bootstrap refused"]
    assert [e["reason"] for e in refusals] == ["BOOTSTRAP_TOKEN_INVALID"]
    assert TOKEN not in repr(events)
    assert wrong not in repr(events)


def test_bootstrap_refuses_a_taken_email(bootstrap_auth: AuthStack) -> None:
    """A second org whose admin email is taken (in any case) is ALREADY_EXISTS/EMAIL_TAKEN."""
    _bootstrap(bootstrap_auth)
    assert _refused(bootstrap_auth, org="Other", email="ADA@acme.example") == (
        "ALREADY_EXISTS",
        "EMAIL_TAKEN",
    )


def test_bootstrap_refuses_a_taken_org_name(bootstrap_auth: AuthStack) -> None:
    """Re-running a bootstrap does not make a second org of the same name (ignoring case)."""
    _bootstrap(bootstrap_auth)
    assert _refused(bootstrap_auth, org="ACME", email="bob@acme.example") == (
        "ALREADY_EXISTS",
        "ORG_EXISTS",
    )
    assert bootstrap_auth.app.store.user_by_email("bob@acme.example") is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"org": ""}, "org_name"),
        ({"email": "not-an-email"}, "admin_email"),
        ({"password": "short"}, "admin_password"),
    ],
)
def test_bootstrap_names_the_invalid_request_field(
    bootstrap_auth: AuthStack, kwargs: dict[str, str], field: str
) -> None:
    """Invalid input is INVALID_ARGUMENT naming the field as the request spells it."""
    with pytest.raises(grpc.RpcError) as caught:
        _bootstrap(bootstrap_auth, **kwargs)
    details = error_details(caught.value)
    assert (details.code, details.field) == (grpc.StatusCode.INVALID_ARGUMENT, field)


def test_the_bootstrap_token_is_read_from_its_file(tmp_path: Path) -> None:
    """SEVVO_AUTH_BOOTSTRAP_TOKEN_FILE is optional; a short token fails at start by name."""
    base = {
        "SEVVO_DATABASE_URL": "postgresql://localhost/x",
        "SEVVO_TLS_CERT_FILE": __file__,
        "SEVVO_TLS_KEY_FILE": __file__,
        "SEVVO_AUTH_KEK": "A" * 43 + "=",
    }
    assert AuthConfig.load(base).bootstrap_token is None
    write_bootstrap_token(tmp_path / "token")
    loaded = AuthConfig.load({**base, "SEVVO_AUTH_BOOTSTRAP_TOKEN_FILE": str(tmp_path / "token")})
    assert loaded.bootstrap_token == (tmp_path / "token").read_text().strip()
    assert (tmp_path / "token").stat().st_mode & 0o777 == 0o600
    (tmp_path / "short").write_text("too-short\n")
    with pytest.raises(ConfigError, match="SEVVO_AUTH_BOOTSTRAP_TOKEN"):
        AuthConfig.load({**base, "SEVVO_AUTH_BOOTSTRAP_TOKEN_FILE": str(tmp_path / "short")})
