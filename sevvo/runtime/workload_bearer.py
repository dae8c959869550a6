"""A workload's bearer forwarded by the agent that acts for it, and the checks it gates.

When the agent's credential API serves a customer workload, the agent calls the control plane
with its own bearer (who is calling) and forwards the workload's bearer in METADATA_KEY (for
whom). Both are verified here, once, for every service that accepts the pair; see the
LeaseService comment in protos/sevvo/connections/v1/connections.proto.
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sevvo.runtime.errors import PermissionDenied, SevvoError, Unauthenticated
from sevvo.runtime.tokens import Principal, PrincipalKind, TokenVerifier
from sevvo.runtime.workload_grants import may_borrow

METADATA_KEY = "x-sevvo-workload-authorization"
# The verifier's reasons that already name the workload; the others (TOKEN_EXPIRED and so on)
# would read as the agent's own bearer failing, so they are renamed WORKLOAD_TOKEN_*.
_WORKLOAD_REASONS = frozenset({"WORKLOAD_REVOKED", "WORKLOAD_CHANGED"})
# An agent's clock may run a little ahead of ours: a lease's lifetime is measured from our
# clock, so a request for exactly a maximum (the workload's, or the connection role's) may
# arrive this much over it, and is still accepted.
CLOCK_LEEWAY = timedelta(seconds=60)


@dataclass(frozen=True)
class ForwardedWorkload:
    """The outcome of verifying a forwarded workload bearer: a principal or the refusal.

    A refusal is kept rather than raised so that the service can audit it before failing the
    call. ``claimed_id`` is the workload id the bearer names before verification (a UUID or
    ""): only for the audit record of a refusal, never for a decision.
    """

    principal: Principal | None
    error: SevvoError | None
    claimed_id: str = ""

    def require(self) -> Principal:
        """The verified workload, or the refusal raised."""
        if self.principal is None:
            assert self.error is not None
            raise self.error
        return self.principal

    @property
    def workload_id(self) -> str:
        """The verified workload's id, else the id the refused bearer claimed (may be "")."""
        return self.principal.subject_id if self.principal is not None else self.claimed_id


def forwarded_token(metadata: Iterable[tuple[str, object]]) -> str | None:
    """The token in METADATA_KEY ("Bearer <jwt>"); None when the key is absent.

    A value that is present but not a bearer is Unauthenticated, never ignored: an agent that
    meant to act for a workload must not silently act on its own account.
    """
    for key, value in metadata:
        if key != METADATA_KEY:
            continue
        scheme, _, token = value.partition(" ") if isinstance(value, str) else ("", "", "")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(
                f"malformed workload bearer: send `{METADATA_KEY}: Bearer <token>`, the"
                " token from AuthService.ExchangeWorkloadToken",
                reason="WORKLOAD_TOKEN_MALFORMED",
            )
        return token.strip()
    return None


def verify_forwarded(verifier: TokenVerifier, token: str, agent: Principal) -> ForwardedWorkload:
    """Verifies a forwarded workload bearer for ``agent``'s call; never raises a refusal.

    Invalid, expired, revoked or changed bearers are Unauthenticated (reasons WORKLOAD_*); a
    workload of another org than the agent's is PermissionDenied, WORKLOAD_OF_ANOTHER_ORG.
    """
    try:
        principal = verifier.verify(token, PrincipalKind.WORKLOAD)
    except Unauthenticated as error:
        reason = error.reason
        if reason not in _WORKLOAD_REASONS:
            known = reason.startswith("TOKEN_")
            reason = "WORKLOAD_" + reason if known else "WORKLOAD_TOKEN_INVALID"
        refusal: SevvoError = Unauthenticated(
            f"the forwarded workload bearer was refused: {error.message}; the workload must"
            " exchange its workload token again (or be re-enabled by an admin)",
            reason=reason,
        )
        return ForwardedWorkload(None, refusal, _claimed_subject(token))
    if principal.org_id != agent.org_id:
        denied = PermissionDenied(
            "the forwarded workload belongs to another org than this agent; a workload can"
            " borrow only through an agent of its own org",
            reason="WORKLOAD_OF_ANOTHER_ORG",
        )
        return ForwardedWorkload(None, denied, principal.subject_id)
    return ForwardedWorkload(principal, None)


def requested_ttl_seconds(now: datetime, max_expire_time: datetime) -> int:
    """A lease's requested lifetime in whole seconds: from ``now`` to its max expiry, rounded
    up, so that a lease over its maximum by a fraction of a second counts as over."""
    return max(0, math.ceil((max_expire_time - now).total_seconds()))


def borrow_refusal(
    workload: Principal, connection_id: str, role: str, ttl_seconds: int
) -> PermissionDenied | None:
    """Why ``workload`` may not borrow ``role`` of ``connection_id`` for ``ttl_seconds``.

    The workload's maximum is extended by CLOCK_LEEWAY, as a role's maximum TTL is, for the
    agent's clock; None when the grants allow the lease.
    """
    allowance = int(CLOCK_LEEWAY.total_seconds())
    reason = may_borrow(
        workload.grants,
        (workload.max_ttl_seconds or 0) + allowance,
        connection_id,
        role,
        ttl_seconds,
    )
    if reason is None:
        return None
    if reason == "ROLE_NOT_GRANTED":
        return PermissionDenied(
            f"the workload is not granted role {role!r} of this connection; an admin can add"
            " the grant with `sevvo workloads update`",
            reason=reason,
            metadata={"connection_id": connection_id, "role": role},
        )
    return PermissionDenied(
        f"the lease would last {ttl_seconds} s, over the workload's maximum of"
        f" {workload.max_ttl_seconds} s; ask for a shorter ttl",
        reason=reason,
        metadata={"max_ttl_seconds": str(workload.max_ttl_seconds)},
    )


def _claimed_subject(token: str) -> str:
    """The ``sub`` claim of an unverified JWT when it is a UUID, else ""."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(uuid.UUID(str(claims["sub"])))
    except (IndexError, ValueError, KeyError, TypeError):
        return ""


__all__ = [
    "CLOCK_LEEWAY",
    "METADATA_KEY",
    "ForwardedWorkload",
    "borrow_refusal",
    "forwarded_token",
    "requested_ttl_seconds",
    "verify_forwarded",
]
