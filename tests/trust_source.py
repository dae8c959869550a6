"""A TrustSource a unit test edits by hand, and the key its tokens are signed with."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sevvo.runtime.tokens import TrustState, VerificationKey

KEY = Ed25519PrivateKey.generate()
"""Signs the tests' tokens; published under kid ``k1``."""


@dataclass
class MutableTrust:
    """A TrustSource whose state a test edits, as auth's store would change."""

    state: TrustState = field(
        default_factory=lambda: TrustState(
            keys={"k1": VerificationKey("k1", KEY.public_key(), datetime.now(UTC))},
            revoked_deployments={},
        )
    )

    def fetch(self) -> TrustState:
        """The current state, freshly fetched."""
        return replace(self.state, fetched_at=time.monotonic())
