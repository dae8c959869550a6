"""The forwarded workload bearer, checked without servers: parsing the metadata, verifying it
for an agent, the refusal reasons, and the TTL a lease request asks for."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import jwt
import pytest

from sevvo.runtime.errors import Unauthenticated
from sevvo.runtime.tokens import ISSUER, Principal, PrincipalKind, TokenVerifier
from sevvo.runtime.workload_bearer import (
    CLOCK_LEEWAY,
    METADATA_KEY,
    borrow_refusal,
    forwarded_token,
    requested_ttl_seconds,
    verify_forwarded,
)
from sevvo.runtime.workload_grants import Grant
from tests.trust_source import KEY, MutableTrust

ORG = "0f8b6a1e-5d3c-4a7e-9b21-3c4d5e6f7a80"
WORKLOAD = "6ed1c4c8-6bad-4ead-b169-1b9760ecfcd3"
CONNECTION = "74fec01a-0515-4fa0-8e58-394d0ce554b7"
LEEWAY = int(CLOCK_LEEWAY.total_seconds())


def _bearer(**changes: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": PrincipalKind.WORKLOAD.audience,
        "sub": WORKLOAD,
        "org_id": ORG,
        "kind": "workload",
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "grants": [{"connection_id": CONNECTION, "role": "readonly"}],
        "max_ttl": 3600,
        "gen": 1,
        **changes,
    }
    return jwt.encode(claims, KEY, algorithm="EdDSA", headers={"kid": "k1"})


def _agent(org_id: str = ORG) -> Principal:
    return Principal(
        kind=PrincipalKind.AGENT,
        org_id=org_id,
        subject_id=str(uuid.uuid4()),
        token_id="t",
        expires_at=datetime.now(UTC) + timedelta(minutes=5),
    )


@pytest.fixture
def trust() -> MutableTrust:
    """The trust state the verifier refreshes from."""
    return MutableTrust()


@pytest.fixture
def verifier(trust: MutableTrust) -> TokenVerifier:
    """A verifier refreshed by hand."""
    verifier = TokenVerifier(trust)
    verifier.refresh()
    return verifier


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ((), None),
        ((("authorization", "Bearer agent"),), None),
        (((METADATA_KEY, "Bearer abc.def.ghi"),), "abc.def.ghi"),
        (((METADATA_KEY, "bearer   abc "),), "abc"),
    ],
)
def test_the_forwarded_token_is_read_from_its_own_key(
    metadata: tuple[tuple[str, str], ...], expected: str | None
) -> None:
    """Only x-sevvo-workload-authorization counts; absent is None, not an error."""
    assert forwarded_token(metadata) == expected


@pytest.mark.parametrize("value", ["abc.def.ghi", "Basic abc", "Bearer ", "Bearer", b"Bearer x"])
def test_a_present_but_malformed_workload_header_is_unauthenticated(value: object) -> None:
    """A header that is there but not "Bearer <token>" fails; it is never read as absent."""
    with pytest.raises(Unauthenticated) as caught:
        forwarded_token(((METADATA_KEY, value),))
    assert caught.value.reason == "WORKLOAD_TOKEN_MALFORMED"
    assert METADATA_KEY in caught.value.message


def test_a_valid_bearer_of_the_agents_org_gives_the_workload(verifier: TokenVerifier) -> None:
    """The verified principal carries the grants and max TTL; nothing is refused."""
    forwarded = verify_forwarded(verifier, _bearer(), _agent())
    workload = forwarded.require()
    assert (workload.kind, workload.subject_id, workload.org_id) == (
        PrincipalKind.WORKLOAD,
        WORKLOAD,
        ORG,
    )
    assert workload.grants == (Grant(CONNECTION, "readonly"),)
    assert forwarded.error is None and forwarded.workload_id == WORKLOAD


def test_a_workload_of_another_org_is_permission_denied(verifier: TokenVerifier) -> None:
    """WORKLOAD_OF_ANOTHER_ORG, kept (not raised) so it can be audited, then raised."""
    forwarded = verify_forwarded(verifier, _bearer(), _agent(org_id=str(uuid.uuid4())))
    assert forwarded.principal is None and forwarded.error is not None
    assert forwarded.error.code is grpc.StatusCode.PERMISSION_DENIED
    assert forwarded.error.reason == "WORKLOAD_OF_ANOTHER_ORG"
    assert forwarded.workload_id == WORKLOAD
    with pytest.raises(type(forwarded.error)):
        forwarded.require()


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("not-a-jwt", "WORKLOAD_TOKEN_MALFORMED"),
        (_bearer(exp=int(time.time()) - 120), "WORKLOAD_TOKEN_EXPIRED"),
        (_bearer(kind="agent", aud=PrincipalKind.AGENT.audience), "WORKLOAD_TOKEN_WRONG_AUDIENCE"),
        (_bearer(max_ttl=True), "WORKLOAD_TOKEN_INVALID"),
    ],
    # The bearers differ per process (times, ids); xdist needs the same test ids everywhere.
    ids=["malformed", "expired", "wrong_audience", "invalid"],
)
def test_a_bad_bearer_is_unauthenticated_with_a_workload_reason(
    verifier: TokenVerifier, token: str, reason: str
) -> None:
    """The verifier's reasons are renamed WORKLOAD_*, so an agent never reads them as its own."""
    forwarded = verify_forwarded(verifier, token, _agent())
    assert forwarded.error is not None
    assert (forwarded.error.code, forwarded.error.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        reason,
    )


def test_a_revoked_workload_is_refused_and_its_claimed_id_kept(
    trust: MutableTrust, verifier: TokenVerifier
) -> None:
    """WORKLOAD_REVOKED after the next refresh; the unverified sub is kept for the audit only."""
    token = _bearer()
    assert verify_forwarded(verifier, token, _agent()).principal is not None
    trust.state = replace(trust.state, revoked_workloads={WORKLOAD: datetime.now(UTC)})
    verifier.refresh()
    forwarded = verify_forwarded(verifier, token, _agent())
    assert forwarded.error is not None and forwarded.error.reason == "WORKLOAD_REVOKED"
    assert forwarded.principal is None and forwarded.claimed_id == WORKLOAD
    assert token not in forwarded.error.message


def test_the_requested_ttl_rounds_up_to_whole_seconds() -> None:
    """A lease over a limit by a fraction of a second counts as over; the past is 0."""
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert requested_ttl_seconds(now, now + timedelta(seconds=3600)) == 3600
    assert requested_ttl_seconds(now, now + timedelta(seconds=3600, microseconds=1)) == 3601
    assert requested_ttl_seconds(now, now - timedelta(seconds=5)) == 0


@pytest.mark.parametrize(
    ("connection_id", "role", "ttl", "reason"),
    [
        (CONNECTION, "readonly", 3600, None),
        (CONNECTION, "readonly", 3600 + LEEWAY, None),
        (CONNECTION, "readonly", 3600 + LEEWAY + 1, "TTL_OVER_WORKLOAD_MAXIMUM"),
        (CONNECTION, "etl", 60, "ROLE_NOT_GRANTED"),
        ("9d2e4f60-1b3a-4c5d-8e7f-a0b1c2d3e4f5", "readonly", 60, "ROLE_NOT_GRANTED"),
    ],
)
def test_borrow_refusal_checks_grants_then_ttl(
    verifier: TokenVerifier, connection_id: str, role: str, ttl: int, reason: str | None
) -> None:
    """PERMISSION_DENIED with may_borrow's reason; the workload's max gets the clock leeway."""
    workload = verify_forwarded(verifier, _bearer(), _agent()).require()
    refusal = borrow_refusal(workload, connection_id, role, ttl)
    if reason is None:
        assert refusal is None
    else:
        assert refusal is not None
        assert (refusal.code, refusal.reason) == (grpc.StatusCode.PERMISSION_DENIED, reason)
