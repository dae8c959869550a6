"""Workload identities without a server: the token format, bearer verification, input rules."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest

from services.auth.limits import WORKLOAD_EXCHANGE, SignInLimiter, SignInLimits, TooManyAttempts
from services.auth.workloads import UPDATABLE_PATHS, description, max_ttl
from sevvo.runtime import deployment_token
from sevvo.runtime.credential_token import (
    DEPLOYMENT_TOKEN,
    WORKLOAD_TOKEN,
    Credentials,
    new_secret,
    secret_hash,
    secret_matches,
)
from sevvo.runtime.errors import InvalidArgument, Unauthenticated
from sevvo.runtime.logs import redact_text
from sevvo.runtime.tokens import ISSUER, PrincipalKind, TokenVerifier
from sevvo.runtime.workload_grants import Grant
from tests.trust_source import KEY, MutableTrust

WORKLOAD_ID = str(uuid.uuid4())
CONNECTION = "3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10"


# --- the token format ---------------------------------------------------------------------------


def test_a_workload_token_round_trips_and_hides_its_secret() -> None:
    """wrap/unwrap give back the id and secret; repr never shows the secret."""
    credentials = Credentials(WORKLOAD_ID, new_secret())
    token = WORKLOAD_TOKEN.wrap(credentials)
    assert token.startswith("sevvo_wt_")
    assert WORKLOAD_TOKEN.unwrap(f"  {token}\n") == credentials
    assert credentials.secret not in repr(credentials)


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("", "is not a sevvo workload token"),
        ("sevvo_wt_tooshort", "is not a sevvo workload token"),
        ("sevvo_wt_" + "!" * 30, "is not a sevvo workload token"),
        ("sevvo_wt_" + "A" * 30, "is corrupted"),
        (
            WORKLOAD_TOKEN.prefix + DEPLOYMENT_TOKEN.wrap(Credentials(WORKLOAD_ID, "s" * 43))[9:],
            "is corrupted",
        ),
    ],
)
def test_a_malformed_workload_token_names_the_field_and_never_echoes_it(
    token: str, message: str
) -> None:
    """Every malformed token is InvalidArgument on workload_token, its text not repeated."""
    with pytest.raises(InvalidArgument) as caught:
        WORKLOAD_TOKEN.unwrap(token)
    assert (caught.value.field, caught.value.description) == ("workload_token", message)
    if len(token) > 12:
        assert token[9:] not in caught.value.message


def test_deployment_tokens_keep_their_format() -> None:
    """The shared format leaves deployment tokens as agents in the field hold them."""
    credentials = deployment_token.DeploymentCredentials(WORKLOAD_ID, new_secret())
    token = deployment_token.wrap(credentials)
    assert token.startswith("sevvo_dt_")
    assert deployment_token.unwrap(token) == credentials
    with pytest.raises(InvalidArgument) as caught:
        deployment_token.unwrap(WORKLOAD_TOKEN.wrap(Credentials(WORKLOAD_ID, "s" * 43)))
    assert caught.value.field == "deployment_token"


def test_only_the_secret_that_made_a_hash_matches_it() -> None:
    """secret_matches is true for the secret, false for any other."""
    secret = new_secret()
    assert secret_matches(secret, secret_hash(secret))
    assert not secret_matches(new_secret(), secret_hash(secret))


def test_logs_redact_workload_tokens() -> None:
    """A workload token in any text leaves only its prefix."""
    token = WORKLOAD_TOKEN.wrap(Credentials(WORKLOAD_ID, new_secret()))
    redacted = redact_text(f"service started with {token}.")
    assert token[9:] not in redacted
    assert "sevvo_wt_" in redacted


# --- verifying workload bearers -----------------------------------------------------------------


def _bearer(**changes: Any) -> str:
    """A workload bearer signed by the trusted key; a None in ``changes`` removes that claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": PrincipalKind.WORKLOAD.audience,
        "sub": WORKLOAD_ID,
        "org_id": str(uuid.uuid4()),
        "kind": "workload",
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "grants": [{"connection_id": CONNECTION, "role": "readonly"}],
        "max_ttl": 7200,
        "gen": 2,
    }
    for name, value in changes.items():
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


def test_a_workload_bearer_names_its_grants_and_max_ttl(verifier: TokenVerifier) -> None:
    """The Principal carries the grants and TTL of the claims; no role, no admin."""
    principal = verifier.verify(_bearer(), PrincipalKind.WORKLOAD)
    assert principal.kind is PrincipalKind.WORKLOAD
    assert principal.subject_id == WORKLOAD_ID
    assert principal.grants == (Grant(CONNECTION, "readonly"),)
    assert principal.max_ttl_seconds == 7200
    assert not principal.is_admin


@pytest.mark.parametrize(
    "changes",
    [
        {"grants": None},
        {"max_ttl": None},
        {"gen": None},
        {"grants": "readonly"},
        {"max_ttl": True},
        {"max_ttl": 0},
        {"max_ttl": "7200"},
        {"gen": 1.5},
    ],
    ids=lambda c: ",".join(f"{k}={v!r}" for k, v in c.items()),
)
def test_a_workload_bearer_without_well_formed_workload_claims_is_invalid(
    verifier: TokenVerifier, changes: dict[str, Any]
) -> None:
    """Missing or mistyped grants, max_ttl or gen: TOKEN_INVALID, never a default."""
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(_bearer(**changes), PrincipalKind.WORKLOAD)
    assert caught.value.reason == "TOKEN_INVALID"


def test_malformed_grant_entries_grant_nothing(verifier: TokenVerifier) -> None:
    """Entries that are not {connection_id, role} are dropped, not guessed at."""
    grants = [{"connection_id": CONNECTION}, {"role": "Bad Role", "connection_id": CONNECTION}, 7]
    principal = verifier.verify(_bearer(grants=grants), PrincipalKind.WORKLOAD)
    assert principal.grants == ()


def test_a_revoked_workloads_bearer_is_refused_after_the_next_refresh(
    trust: MutableTrust, verifier: TokenVerifier
) -> None:
    """Listed as revoked: WORKLOAD_REVOKED, even for a bearer verified (and cached) before."""
    bearer = _bearer()
    verifier.verify(bearer, PrincipalKind.WORKLOAD)
    trust.state = replace(trust.state, revoked_workloads={WORKLOAD_ID: datetime.now(UTC)})
    verifier.refresh()
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(bearer, PrincipalKind.WORKLOAD)
    assert caught.value.reason == "WORKLOAD_REVOKED"


def test_a_bearer_of_an_earlier_generation_is_refused(
    trust: MutableTrust, verifier: TokenVerifier
) -> None:
    """Grants changed (generation 3): a gen-2 bearer is WORKLOAD_CHANGED, a gen-3 one passes."""
    trust.state = replace(trust.state, workload_generations={WORKLOAD_ID: 3})
    verifier.refresh()
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(_bearer(gen=2), PrincipalKind.WORKLOAD)
    assert caught.value.reason == "WORKLOAD_CHANGED"
    assert verifier.verify(_bearer(gen=3), PrincipalKind.WORKLOAD).subject_id == WORKLOAD_ID


def test_a_workload_bearer_is_not_an_agent_or_user_bearer(verifier: TokenVerifier) -> None:
    """Its own audience: refused wherever USER, AGENT or both are required."""
    for accepted in (
        PrincipalKind.USER,
        PrincipalKind.AGENT,
        (PrincipalKind.USER, PrincipalKind.AGENT),
    ):
        with pytest.raises(Unauthenticated) as caught:
            verifier.verify(_bearer(), accepted)
        assert caught.value.reason == "TOKEN_WRONG_AUDIENCE"
    # Claiming the workload kind with an agent's audience does not pass either.
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(_bearer(aud=PrincipalKind.AGENT.audience), PrincipalKind.WORKLOAD)
    assert caught.value.reason == "TOKEN_WRONG_AUDIENCE"


# --- input rules and the limiter ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "ok"), [(59, False), (60, True), (86_400, True), (86_401, False)]
)
def test_max_ttl_is_bounded_by_a_minute_and_a_day(seconds: int, ok: bool) -> None:
    """60 and 86400 are the inclusive bounds."""
    if ok:
        assert max_ttl("max_ttl_seconds", seconds) == seconds
    else:
        with pytest.raises(InvalidArgument) as caught:
            max_ttl("max_ttl_seconds", seconds)
        assert caught.value.field == "max_ttl_seconds"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  nightly report\n", "nightly report"),
        ("line one\nline two\twith a tab", "line one\nline two\twith a tab"),
        ("", ""),
        ("bidi \u202e override", None),
        ("x" * 1001, None),
    ],
)
def test_a_description_is_printable_text_of_at_most_1000_characters(
    text: str, expected: str | None
) -> None:
    """Line breaks and tabs are allowed; control and invisible characters are not."""
    if expected is None:
        with pytest.raises(InvalidArgument):
            description("description", text)
    else:
        assert description("description", text) == expected


def test_the_updatable_fields_are_the_ones_the_proto_documents() -> None:
    """UpdateWorkload's mask may name these fields and no others."""
    assert UPDATABLE_PATHS == ("display_name", "description", "grants", "max_ttl_seconds")


def test_exchange_failures_back_off_with_their_own_reasons() -> None:
    """The workload limiter speaks of workload exchanges, not sign-ins."""
    limiter = SignInLimiter(
        SignInLimits(free_failures=1), wording=WORKLOAD_EXCHANGE, clock=lambda: 0.0
    )
    limiter.settle(limiter.admit(WORKLOAD_ID, "10.0.0.1"), succeeded=False)
    with pytest.raises(TooManyAttempts) as caught:
        limiter.admit(WORKLOAD_ID, "10.0.0.1")
    assert caught.value.reason == "WORKLOAD_EXCHANGE_BACKOFF"
    assert "workload token exchanges for this workload" in caught.value.message
    limiter.admit(str(uuid.uuid4()), "10.0.0.1")  # Another workload is not held back.
