"""Who auth counts a sign-in against behind a proxy (services/auth/callers.py): the peer, or,
from a proxy it trusts, the client that proxy names in x-forwarded-for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from starlette.requests import Request

from console.pages.session import forwarded_for
from devstack.pki import DevPki
from services.auth.callers import TrustedProxies
from services.auth.config import AuthConfig
from services.auth.limits import SignInLimits
from sevvo.auth.v1 import auth_pb2
from sevvo.runtime.config import ConfigError
from sevvo.runtime.grpc_client import error_details
from tests.plugins.auth_stack import PASSWORD, AuthStack, BackgroundLoop, running_auth

GATEWAY = "ipv4:10.1.2.3:41000"
HOME = "198.51.100.7"
ATTACKER = "203.0.113.9"
PROXIES = TrustedProxies.parse("10.0.0.0/8, fd00::/8")


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "caller"),
    [
        # From a trusted proxy: its client, the first hop from the right it does not trust.
        (GATEWAY, [ATTACKER], f"ipv4:{ATTACKER}:0"),
        (GATEWAY, [f"{HOME}, {ATTACKER}"], f"ipv4:{ATTACKER}:0"),
        (GATEWAY, [HOME, ATTACKER], f"ipv4:{ATTACKER}:0"),
        (GATEWAY, [f"{ATTACKER}, 10.9.9.9"], f"ipv4:{ATTACKER}:0"),
        (GATEWAY, [f"{ATTACKER}:5123"], f"ipv4:{ATTACKER}:0"),
        (GATEWAY, ["[2001:db8::5]:443"], "ipv6:[2001:db8::5]:0"),
        (GATEWAY, ["2001:db8::5"], "ipv6:[2001:db8::5]:0"),
        ("ipv6:[fd00::7]:41000", [ATTACKER], f"ipv4:{ATTACKER}:0"),
        ("ipv6:[::ffff:10.1.2.3]:41000", [ATTACKER], f"ipv4:{ATTACKER}:0"),
        # Nothing to believe: the proxy itself is counted.
        (GATEWAY, [], GATEWAY),
        (GATEWAY, ["10.9.9.9"], GATEWAY),
        (GATEWAY, [f"{ATTACKER}, unknown"], GATEWAY),
        # From anyone else the header is the caller's own word, and ignored.
        (f"ipv4:{ATTACKER}:5000", [HOME], f"ipv4:{ATTACKER}:5000"),
        ("unix:/run/auth.sock", [HOME], "unix:/run/auth.sock"),
    ],
)
def test_the_caller_is_the_first_untrusted_hop_from_a_trusted_proxy(
    peer: str, forwarded_for: list[str], caller: str
) -> None:
    assert PROXIES.caller(peer, forwarded_for) == caller


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    """The default: every caller is its peer, whatever it claims."""
    assert TrustedProxies().caller(GATEWAY, [HOME]) == GATEWAY


def test_the_trusted_proxies_come_from_the_environment_and_a_bad_one_names_itself(
    tmp_path: Path,
) -> None:
    env = {
        "SEVVO_DATABASE_URL": "postgresql://auth@db/sevvo",
        "SEVVO_TLS_CERT_FILE": str(tmp_path / "tls.crt"),
        "SEVVO_TLS_KEY_FILE": str(tmp_path / "tls.key"),
        "SEVVO_AUTH_KEK": "A" * 43 + "=",
    }
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_text("x")
    assert AuthConfig.load(env).trusted_proxies == TrustedProxies()
    loaded = AuthConfig.load({**env, "SEVVO_AUTH_TRUSTED_PROXIES": " 10.0.0.0/8 ,192.0.2.1,"})
    assert [str(n) for n in loaded.trusted_proxies.networks] == ["10.0.0.0/8", "192.0.2.1/32"]
    with pytest.raises(ConfigError) as caught:
        AuthConfig.load({**env, "SEVVO_AUTH_TRUSTED_PROXIES": "10.0.0.0/8, gateway"})
    assert "SEVVO_AUTH_TRUSTED_PROXIES" in str(caught.value) and "'gateway'" in str(caught.value)


@pytest.fixture
def proxied_auth(
    database_url: str, dev_pki: DevPki, background_loop: BackgroundLoop
) -> Iterator[AuthStack]:
    """Auth behind a proxy on loopback it trusts, with a budget of two failures per source."""
    with running_auth(
        database_url,
        dev_pki,
        background_loop,
        trusted_proxies=TrustedProxies.parse("127.0.0.0/8, ::1"),
        sign_in_limits=SignInLimits(source_burst=2, source_per_minute=1),
    ) as stack:
        yield stack


def _sign_in(stack: AuthStack, email: str, password: str, client: str) -> grpc.StatusCode:
    try:
        stack.auth().SignIn(
            auth_pb2.SignInRequest(email=email, password=password),
            metadata=(("x-forwarded-for", client),),
        )
    except grpc.RpcError as exc:
        return error_details(exc).code
    return grpc.StatusCode.OK


def test_behind_a_trusted_proxy_a_guesser_spends_only_its_own_budget(
    proxied_auth: AuthStack, database_url: str
) -> None:
    """Every call arrives from the proxy: the guesser is refused once its budget is spent,
    also when it writes the user's address into the header itself, while the user signs in."""
    org = proxied_auth.create_org()
    guess = "guess-guess-123"
    assert (
        _sign_in(proxied_auth, org.admin_email, guess, ATTACKER) == grpc.StatusCode.UNAUTHENTICATED
    )
    assert (
        _sign_in(proxied_auth, org.admin_email, guess, ATTACKER) == grpc.StatusCode.UNAUTHENTICATED
    )
    spent = grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _sign_in(proxied_auth, org.admin_email, guess, ATTACKER) == spent
    assert _sign_in(proxied_auth, org.admin_email, guess, f"{HOME}, {ATTACKER}") == spent
    assert _sign_in(proxied_auth, org.admin_email, PASSWORD, HOME) == grpc.StatusCode.OK
    # The audit records name the addresses the limits counted (refusals are not recorded).
    with psycopg.connect(database_url) as conn:
        sources = conn.execute(
            "select outcome, details->>'source' from audit.events"
            " where action = 'user.sign_in' and org_id = %s order by occurred_at",
            (org.org_id,),
        ).fetchall()
    assert sources == [
        ("success", "127.0.0.1"),
        ("failure", ATTACKER),
        ("failure", ATTACKER),
        ("success", HOME),
    ]


def _browser_request(client: str, forwarded: str | None = None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return Request({"type": "http", "headers": headers, "client": (client, 50000)})


@pytest.mark.parametrize(
    ("request_from", "header", "counted"),
    [
        # A browser calling the console directly.
        (ATTACKER, None, ATTACKER),
        # One that writes its victim's address into the header itself.
        (ATTACKER, HOME, ATTACKER),
        # Through an ingress (10.0.0.0/8 here) that names the browser.
        ("10.0.0.5", ATTACKER, ATTACKER),
    ],
)
def test_the_console_passes_its_browsers_addresses_on_as_a_proxy(
    request_from: str, header: str | None, counted: str
) -> None:
    """The console's sign-in for a browser carries the browser's address, read by auth when
    it trusts the console (here at 10.1.2.3, within the trusted 10.0.0.0/8)."""
    metadata = forwarded_for(_browser_request(request_from, header))
    values = [value for key, value in metadata if key == "x-forwarded-for"]
    assert PROXIES.caller(GATEWAY, values) == f"ipv4:{counted}:0"
