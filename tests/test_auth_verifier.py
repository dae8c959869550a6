"""TokenVerifier without a server: revoked sessions, session cutoffs, one verification per token."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest

from sevvo.runtime.errors import Unauthenticated
from sevvo.runtime.grpc_server import Access, AuthInterceptor
from sevvo.runtime.tokens import (
    ISSUER,
    PrincipalKind,
    TokenVerifier,
)
from tests.trust_source import KEY, MutableTrust

BOTH = (PrincipalKind.USER, PrincipalKind.AGENT)


def _token(
    kind: PrincipalKind, *, issued: float | None = None, changes: dict[str, Any] | None = None
) -> str:
    """A token signed by the trusted key; a None in ``changes`` removes that claim."""
    now = time.time() if issued is None else issued
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": kind.audience,
        "sub": str(uuid.uuid4()),
        "org_id": str(uuid.uuid4()),
        "kind": kind.value,
        "iat": now,
        "exp": int(now) + 600,
        "jti": uuid.uuid4().hex,
    }
    for name, value in (changes or {}).items():
        if value is None:
            claims.pop(name)
        else:
            claims[name] = value
    return jwt.encode(claims, KEY, algorithm="EdDSA", headers={"kid": "k1"})


@pytest.fixture
def trust() -> MutableTrust:
    """The trust state the verifier refreshes from."""
    return MutableTrust()


@pytest.fixture
def verifier(trust: MutableTrust) -> TokenVerifier:
    """A verifier refreshed by hand, as the background thread would."""
    verifier = TokenVerifier(trust)
    verifier.refresh()
    return verifier


def _reason(verifier: TokenVerifier, token: str, kind: Any) -> str:
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(token, kind)
    return caught.value.reason


def test_a_signed_out_session_is_refused_although_cached(
    trust: MutableTrust, verifier: TokenVerifier
) -> None:
    """Once its token id is revoked, a session verified and cached before is refused."""
    token = _token(PrincipalKind.USER)
    principal = verifier.verify(token, PrincipalKind.USER)
    trust.state = replace(trust.state, revoked_sessions={principal.token_id: principal.expires_at})
    verifier.refresh()
    assert _reason(verifier, token, PrincipalKind.USER) == "SESSION_REVOKED"
    assert _reason(verifier, token, BOTH) == "SESSION_REVOKED"


def test_sessions_issued_up_to_the_cutoff_are_refused_and_later_ones_pass(
    trust: MutableTrust, verifier: TokenVerifier
) -> None:
    """A user's cutoff voids sessions issued at or before it, to the microsecond, not after."""
    user = str(uuid.uuid4())
    # Microseconds, as auth stores instants; its sessions' iat are timestamps of the same.
    cutoff_at = datetime.now(UTC)
    cutoff = cutoff_at.timestamp()
    before = _token(PrincipalKind.USER, issued=cutoff, changes={"sub": user})
    after = _token(PrincipalKind.USER, issued=cutoff + 1e-6, changes={"sub": user})
    other_user = _token(PrincipalKind.USER, issued=cutoff - 5)
    verifier.verify(before, PrincipalKind.USER)
    trust.state = replace(trust.state, sessions_valid_after={user: cutoff_at})
    verifier.refresh()
    assert _reason(verifier, before, PrincipalKind.USER) == "SESSION_REVOKED"
    assert verifier.verify(after, PrincipalKind.USER).subject_id == user
    verifier.verify(other_user, PrincipalKind.USER)


def test_a_cutoff_does_not_touch_agent_bearers(
    trust: MutableTrust, verifier: TokenVerifier
) -> None:
    """Session revocations apply to user sessions only: a deployment id is not a user id."""
    bearer = _token(PrincipalKind.AGENT, issued=time.time() - 1)
    deployment = verifier.verify(bearer, PrincipalKind.AGENT).subject_id
    trust.state = replace(trust.state, sessions_valid_after={deployment: datetime.now(UTC)})
    verifier.refresh()
    assert verifier.verify(bearer, PrincipalKind.AGENT).subject_id == deployment


def test_an_agent_on_a_user_or_agent_method_is_verified_once(
    verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Repeated calls check one agent bearer's signature once, not once per call as a user."""
    decodes = 0
    real_decode = jwt.decode

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        nonlocal decodes
        decodes += 1
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    bearer = _token(PrincipalKind.AGENT)
    interceptor = AuthInterceptor(verifier, {})
    for _ in range(20):
        principal = interceptor._authenticate(bearer, Access.USER_OR_AGENT)
        assert principal.kind is PrincipalKind.AGENT
    assert decodes == 1


def test_a_cached_token_of_the_wrong_kind_is_refused_without_verifying_again(
    verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached user session on an agent-only method fails on its audience from the cache."""
    session = _token(PrincipalKind.USER)
    verifier.verify(session, PrincipalKind.USER)
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: pytest.fail("verified again"))
    assert _reason(verifier, session, PrincipalKind.AGENT) == "TOKEN_WRONG_AUDIENCE"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"kind": "robot"}, "TOKEN_INVALID"),
        ({"kind": None}, "TOKEN_INVALID"),
        ({"kind": "agent"}, "TOKEN_WRONG_AUDIENCE"),
    ],
    ids=["unknown-kind", "no-kind", "agent-kind-user-audience"],
)
def test_the_claimed_kind_must_be_known_and_match_the_audience(
    verifier: TokenVerifier, claims: dict[str, Any], reason: str
) -> None:
    """The unverified kind only picks the audience; a mismatch or an unknown kind is refused."""
    assert _reason(verifier, _token(PrincipalKind.USER, changes=claims), BOTH) == reason
