"""Proof of origin on workflow inputs: the orchestrator signs, the agent and connections verify.

Anyone who can reach an org's task queue (a worker with another org's Temporal access, a person
with the Temporal UI) can start a workflow there, and can copy an old workflow's encrypted input
into a new one. The payload codec stops them writing a readable input, not replaying one. So
every input carries a proof: a compact JWS (EdDSA, the orchestrator's own Ed25519 key, ``kid``
naming it so it can rotate) over the org, the workflow type, the workflow id, a digest of the
rest of the input and an expiry. The agent verifies it before it resolves a credential or
opens a database session; connections verifies it again at resolve and binds the workflow id
to the first Temporal run that presents it, which stops a copy started under the same id.

Three kinds of proof (``kind`` claim):
- ``run``: the orchestrator started this workflow id itself; expires with the work's timeout.
- ``schedule``: the org's admin set schedule ``sub`` (who, when, at what interval). Temporal
  names a scheduled run ``<schedule id>-<nominal time>``; the nominal time must be one the
  schedule produces (``set_at`` plus a whole number of intervals) and recent, so a manual
  trigger or an old backfill is refused.
- ``vouch``: the orchestrator vouches for a proof-less workflow it started before proofs
  existed (an upgrade); no input digest, short expiry.
See docs/work-proof.md for what this does and does not cover.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf.message import Message

from sevvo.runtime.errors import PermissionDenied

ALGORITHM = "EdDSA"
ISSUER = "sevvo-orchestrator"
AUDIENCE = "sevvo:agent-work"
KIND_RUN = "run"
KIND_SCHEDULE = "schedule"
KIND_VOUCH = "vouch"
# Clocks of the orchestrator, the agent and connections may disagree this much.
LEEWAY = timedelta(seconds=30)
# A proof outlives its work's own timeout by this much (queue waits are in that timeout).
MARGIN = timedelta(minutes=2)
# How long after its nominal time a scheduled run may still start: the scheduler's own lag
# (its catch-up window is at most this) plus the run's execution timeout.
SCHEDULE_LATENESS = timedelta(minutes=15)
_REQUIRED = ("iss", "aud", "sub", "iat", "org_id", "wft", "kind")


class WorkRefused(PermissionDenied):
    """The work's proof of origin failed; ``reason`` says how (stable, UPPER_SNAKE)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"work refused: {message}", reason=reason)


# Every reason a refusal can carry, so callers can tell a refusal from other denials.
REASONS = frozenset(
    {
        "WORK_PROOF_MISSING",
        "WORK_PROOF_INVALID",
        "WORK_PROOF_UNKNOWN_KEY",
        "WORK_PROOF_EXPIRED",
        "WORK_PROOF_FOREIGN_ORG",
        "WORK_PROOF_WRONG_WORKFLOW",
        "WORK_PROOF_INPUT_CHANGED",
        "WORK_PROOF_SCHEDULE_TIME",
        "WORK_NOT_VOUCHED",
        "WORK_REPLAYED",
    }
)


def input_digest(message: Message) -> str:
    """SHA-256 (hex) of the input without its ``proof`` field, serialized deterministically."""
    copy = type(message)()
    copy.CopyFrom(message)
    copy.ClearField("proof")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def attach(message: Message, token: str) -> None:
    """Sets a workflow input's ``proof`` field (every sevvo.workflows.v1 input has one)."""
    setattr(message, "proof", token)  # noqa: B010 - any input message, one field name.


@dataclass(frozen=True)
class ProofSigner:
    """The orchestrator's current signing key."""

    key_id: str
    private_key: Ed25519PrivateKey

    def _sign(self, claims: dict[str, Any]) -> str:
        claims = {"iss": ISSUER, "aud": AUDIENCE, **claims}
        return jwt.encode(
            claims, self.private_key, algorithm=ALGORITHM, headers={"kid": self.key_id}
        )

    def for_run(
        self,
        *,
        org_id: str,
        workflow_type: str,
        workflow_id: str,
        message: Message,
        lifetime: timedelta,
        now: datetime,
    ) -> str:
        """A proof that the orchestrator started ``workflow_id`` with exactly ``message``."""
        return self._sign(
            {
                "kind": KIND_RUN,
                "sub": workflow_id,
                "org_id": org_id,
                "wft": workflow_type,
                "dig": input_digest(message),
                "iat": int(now.timestamp()),
                "exp": int((now + lifetime + MARGIN).timestamp()),
            }
        )

    def for_schedule(
        self,
        *,
        org_id: str,
        workflow_type: str,
        schedule_id: str,
        message: Message,
        interval: timedelta,
        set_by: str,
        set_at: datetime,
        lateness: timedelta,
    ) -> str:
        """A proof that ``set_by`` set schedule ``schedule_id`` at ``set_at`` (whole seconds)."""
        return self._sign(
            {
                "kind": KIND_SCHEDULE,
                "sub": schedule_id,
                "org_id": org_id,
                "wft": workflow_type,
                "dig": input_digest(message),
                "iat": int(set_at.timestamp()),
                "every": int(interval.total_seconds()),
                "late": int(lateness.total_seconds()),
                "set_by": set_by,
            }
        )

    def vouch(
        self,
        *,
        org_id: str,
        workflow_type: str,
        workflow_id: str,
        expires_at: datetime,
        now: datetime,
    ) -> str:
        """A proof for a proof-less workflow the orchestrator started before proofs existed."""
        return self._sign(
            {
                "kind": KIND_VOUCH,
                "sub": workflow_id,
                "org_id": org_id,
                "wft": workflow_type,
                "iat": int(now.timestamp()),
                "exp": int(expires_at.timestamp()),
            }
        )


@dataclass(frozen=True)
class VerifiedWork:
    """A proof that verified, and until when a claim on its workflow id must be remembered."""

    kind: str
    workflow_id: str
    workflow_type: str
    claim_until: datetime


def key_id_of(token: str) -> str:
    """The ``kid`` a proof names; WorkRefused when the token is not a JWS at all."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise WorkRefused("WORK_PROOF_INVALID", "the proof is not a signed token") from None
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise WorkRefused("WORK_PROOF_INVALID", "the proof names no key")
    return kid


def verify(
    token: str,
    keys: Mapping[str, Ed25519PublicKey],
    *,
    org_id: str,
    workflow_id: str,
    workflow_type: str,
    digest: str | None,
    now: datetime,
) -> VerifiedWork:
    """Checks a proof against the work at hand; raises WorkRefused saying what failed.

    ``digest`` is the input's digest, or None where the input is not at hand (connections,
    which checks signature, org, workflow and time but never sees the input).
    """
    if not token:
        raise WorkRefused("WORK_PROOF_MISSING", "the workflow input carries no proof of origin")
    key = keys.get(key_id_of(token))
    if key is None:
        raise WorkRefused("WORK_PROOF_UNKNOWN_KEY", "the proof is signed by an unknown key")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=LEEWAY,
            # Times are checked below against the caller's clock, not PyJWT's.
            options={"require": list(_REQUIRED), "verify_exp": False, "verify_iat": False},
        )
    except jwt.PyJWTError:
        raise WorkRefused(
            "WORK_PROOF_INVALID", "the proof's signature or claims are invalid"
        ) from None
    if not isinstance(claims["iat"], int) or claims["iat"] > (now + LEEWAY).timestamp():
        raise WorkRefused("WORK_PROOF_INVALID", "the proof is issued in the future")
    if claims["org_id"] != org_id:
        raise WorkRefused("WORK_PROOF_FOREIGN_ORG", "the proof was issued for another org")
    if claims["wft"] != workflow_type:
        raise WorkRefused("WORK_PROOF_WRONG_WORKFLOW", "the proof is for another workflow type")
    kind = claims["kind"]
    if kind == KIND_SCHEDULE:
        claim_until = _check_scheduled(claims, workflow_id, now)
    elif kind in (KIND_RUN, KIND_VOUCH):
        if claims["sub"] != workflow_id:
            raise WorkRefused("WORK_PROOF_WRONG_WORKFLOW", "the proof is for another workflow id")
        exp = claims.get("exp")
        if not isinstance(exp, int):
            raise WorkRefused("WORK_PROOF_INVALID", "the proof has no expiry")
        claim_until = datetime.fromtimestamp(exp, UTC)
        if now > claim_until + LEEWAY:
            raise WorkRefused("WORK_PROOF_EXPIRED", "the proof has expired")
    else:
        raise WorkRefused("WORK_PROOF_INVALID", "the proof is of an unknown kind")
    if kind != KIND_VOUCH and digest is not None and claims.get("dig") != digest:
        raise WorkRefused("WORK_PROOF_INPUT_CHANGED", "the input differs from the one proved")
    return VerifiedWork(kind, workflow_id, workflow_type, claim_until + LEEWAY)


def _check_scheduled(claims: Mapping[str, Any], workflow_id: str, now: datetime) -> datetime:
    """Checks a scheduled run's id: ``<schedule id>-<nominal time>``, a time the schedule
    produces, recently. Returns the end of the window in which it may run."""
    prefix = f"{claims['sub']}-"
    every, late, set_at = claims.get("every"), claims.get("late"), claims["iat"]
    if not (isinstance(every, int) and every > 0 and isinstance(late, int) and late >= 0):
        raise WorkRefused("WORK_PROOF_INVALID", "the schedule proof lacks its interval")
    if not workflow_id.startswith(prefix):
        raise WorkRefused("WORK_PROOF_WRONG_WORKFLOW", "the run is not of the proved schedule")
    try:
        nominal = datetime.strptime(workflow_id.removeprefix(prefix), "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise WorkRefused(
            "WORK_PROOF_WRONG_WORKFLOW", "the run's id carries no scheduled time"
        ) from None
    nominal = nominal.replace(tzinfo=UTC)
    offset = int(nominal.timestamp()) - set_at
    if offset < 0 or offset % every:
        raise WorkRefused(
            "WORK_PROOF_SCHEDULE_TIME", "the run's time is not one its schedule produces"
        )
    if not nominal - LEEWAY <= now <= nominal + timedelta(seconds=late):
        raise WorkRefused("WORK_PROOF_SCHEDULE_TIME", "the run's scheduled time is not near now")
    return nominal + timedelta(seconds=late)


class ProofKeyCache:
    """The orchestrator's published proof keys, fetched again when a proof names a new one.

    A refetch for an unknown kid happens at most every ``min_refresh_seconds``, so a flood of
    forged kids cannot turn into a flood of calls to the orchestrator.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[Mapping[str, Ed25519PublicKey]]],
        *,
        min_refresh_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._min_refresh = min_refresh_seconds
        self._clock = clock
        self._keys: Mapping[str, Ed25519PublicKey] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def keys_for(self, token: str) -> Mapping[str, Ed25519PublicKey]:
        """The known keys, refreshed first when the token's kid is not among them."""
        kid = key_id_of(token) if token else ""
        if not kid or kid in self._keys:
            return self._keys
        async with self._lock:
            fresh = self._fetched_at is not None and (
                self._clock() - self._fetched_at < self._min_refresh
            )
            if kid not in self._keys and not fresh:
                self._keys = dict(await self._fetch())
                self._fetched_at = self._clock()
        return self._keys

    async def verify(
        self,
        token: str,
        *,
        org_id: str,
        workflow_id: str,
        workflow_type: str,
        digest: str | None,
        now: datetime | None = None,
    ) -> VerifiedWork:
        """``verify`` with the cached keys (refreshed for a new kid)."""
        keys = await self.keys_for(token)
        return verify(
            token,
            keys,
            org_id=org_id,
            workflow_id=workflow_id,
            workflow_type=workflow_type,
            digest=digest,
            now=now or datetime.now(UTC),
        )


def public_keys(entries: Mapping[str, bytes]) -> dict[str, Ed25519PublicKey]:
    """Published raw Ed25519 public keys by kid, as the key RPC carries them."""
    return {kid: Ed25519PublicKey.from_public_bytes(raw) for kid, raw in entries.items()}


__all__ = [
    "AUDIENCE",
    "ISSUER",
    "KIND_RUN",
    "KIND_SCHEDULE",
    "KIND_VOUCH",
    "REASONS",
    "SCHEDULE_LATENESS",
    "ProofKeyCache",
    "ProofSigner",
    "VerifiedWork",
    "WorkRefused",
    "attach",
    "input_digest",
    "key_id_of",
    "public_keys",
    "verify",
]
