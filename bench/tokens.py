"""Token verification cost: full EdDSA verification against the verified-token cache.

Every authenticated RPC verifies a bearer, so this is on the hot path of every service. The
baseline is the uncached verifier measured in the same run; the ratios say what the cache and
the per-call revocation and key checks cost relative to it.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sevvo.runtime.tokens import (
    ISSUER,
    PrincipalKind,
    TokenVerifier,
    TrustState,
    VerificationKey,
)

ROUNDS = 5
CALLS = 3000


class _StaticTrust:
    def __init__(self, state: TrustState) -> None:
        self._state = state

    def fetch(self) -> TrustState:
        return TrustState(
            keys=self._state.keys, revoked_deployments=self._state.revoked_deployments
        )


def _rate(fn: Callable[[], object]) -> float:
    rates = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(CALLS):
            fn()
        rates.append(CALLS / (time.perf_counter() - started))
    return statistics.median(rates)


def main() -> None:
    """Prints calls per second for each path and its ratio to uncached verification."""
    key = Ed25519PrivateKey.generate()
    now = int(time.time())
    revoked = {str(uuid.uuid4()): datetime.now(UTC) for _ in range(1000)}
    trust = _StaticTrust(
        TrustState(
            keys={"k1": VerificationKey("k1", key.public_key(), datetime.now(UTC))},
            revoked_deployments=revoked,
        )
    )
    claims = {
        "iss": ISSUER,
        "aud": PrincipalKind.AGENT.audience,
        "sub": str(uuid.uuid4()),
        "org_id": str(uuid.uuid4()),
        "kind": "agent",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": "k1"})

    uncached = TokenVerifier(trust, cache_size=0)
    cached = TokenVerifier(trust)
    uncached.start()  # Background refresh, as in a service, keeps the state fresh.
    cached.start()

    def verify_uncached() -> object:
        uncached._cache.clear()
        return uncached.verify(token, PrincipalKind.AGENT)

    baseline = _rate(verify_uncached)
    results = {
        "sign (auth, EdDSA)": _rate(lambda: jwt.encode(claims, key, algorithm="EdDSA")),
        "verify, cached (revocations: 1000)": _rate(
            lambda: cached.verify(token, PrincipalKind.AGENT)
        ),
    }
    print(f"{'path':<40}{'calls/s':>12}{'vs uncached verify':>22}")
    print(f"{'verify, uncached (baseline)':<40}{baseline:>12,.0f}{1.0:>21.2f}x")
    for name, rate in results.items():
        print(f"{name:<40}{rate:>12,.0f}{rate / baseline:>21.2f}x")
    uncached.stop()
    cached.stop()


if __name__ == "__main__":
    main()
