"""Verifying the JWTs that auth issues: user sessions, agent bearers and workload bearers.

Auth alone holds the Ed25519 private keys. Every service verifies locally with the public keys
auth publishes (keys by ``kid``) and with auth's revocations: recently revoked deployments and
workloads, workloads whose grants changed, signed-out sessions, and per-user instants before
which every session is void (sign out everywhere, a disabled or deleted user, a password
change). All of it is refreshed in the background, so a revoked agent's or workload's bearer or
a signed-out user's session stops working within seconds rather than at its expiry. See
docs/design.md, "The three services" and "Customer workloads".
"""

from __future__ import annotations

import enum
import math
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sevvo.runtime.errors import Unauthenticated, Unavailable
from sevvo.runtime.logs import get_logger
from sevvo.runtime.workload_grants import Grant, grants_from_claim

ALGORITHM = "EdDSA"
ISSUER = "sevvo-auth"
MAX_LEEWAY_SECONDS = 30
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub", "jti", "org_id", "kind")
# A workload bearer also carries what its workload may borrow, and the workload's generation
# (bumped by every change to its grants or maximum TTL) when the bearer was issued.
WORKLOAD_CLAIMS = ("grants", "max_ttl", "gen")

log = get_logger(__name__)


class PrincipalKind(enum.StrEnum):
    """Who a token speaks for; each kind has its own audience, so one is never taken for another."""

    USER = "user"
    AGENT = "agent"
    WORKLOAD = "workload"

    @property
    def audience(self) -> str:
        """The ``aud`` claim that tokens of this kind carry."""
        return f"sevvo:{self.value}"


@dataclass(frozen=True)
class Principal:
    """A verified caller. ``org_id`` here is the only org a request may act on."""

    kind: PrincipalKind
    org_id: str
    subject_id: str
    token_id: str
    expires_at: datetime
    role: str | None = None
    # When the token was issued; sessions issued at or before a user's cutoff are void.
    issued_at: datetime | None = None
    # A user's email as auth signed it into the session, for the audit log; None for agents
    # and for sessions issued before sessions carried it.
    email: str | None = None
    # A workload's grants and the longest lease it may ask for, as its bearer carries them;
    # empty and None for users and agents.
    grants: tuple[Grant, ...] = ()
    max_ttl_seconds: int | None = None

    @property
    def is_admin(self) -> bool:
        """Whether this is a user holding the org's admin role."""
        return self.kind is PrincipalKind.USER and self.role == "admin"


@dataclass(frozen=True)
class VerificationKey:
    """One published public key and the window in which tokens it signed are valid."""

    kid: str
    public_key: Ed25519PublicKey
    not_before: datetime
    verify_until: datetime | None = None


@dataclass(frozen=True)
class TrustState:
    """What a verifier trusts right now: keys by kid, and what auth has revoked.

    ``revoked_sessions`` maps the token id (``jti``) of each signed-out session to its expiry;
    ``sessions_valid_after`` maps a user id to the instant at or before which every session
    issued to that user is void. ``revoked_workloads`` maps a workload id to its revocation
    time; ``workload_generations`` maps a recently changed workload's id to its generation,
    below which its bearers hold outdated grants. Auth keeps each entry only until the tokens
    it refuses would have expired anyway, so all stay small.
    """

    keys: Mapping[str, VerificationKey]
    revoked_deployments: Mapping[str, datetime]
    revoked_sessions: Mapping[str, datetime] = field(default_factory=dict)
    sessions_valid_after: Mapping[str, datetime] = field(default_factory=dict)
    revoked_workloads: Mapping[str, datetime] = field(default_factory=dict)
    workload_generations: Mapping[str, int] = field(default_factory=dict)
    fetched_at: float = field(default_factory=time.monotonic)


class TrustSource(Protocol):
    """Where a verifier learns keys and revocations (auth's store locally, or auth over gRPC)."""

    def fetch(self) -> TrustState:
        """Returns the current keys and revocations; raises on failure."""
        ...


_ONLY = {kind: frozenset({kind}) for kind in PrincipalKind}
_REQUIRED = {
    kind: [*REQUIRED_CLAIMS, *(WORKLOAD_CLAIMS if kind is PrincipalKind.WORKLOAD else ())]
    for kind in PrincipalKind
}
_KIND_BY_CLAIM = {kind.value: kind for kind in PrincipalKind}


@dataclass(frozen=True)
class _CachedToken:
    # Floats computed once, so the per-call checks are comparisons and dict lookups.
    principal: Principal
    kid: str
    expires: float
    issued: float
    generation: int = 0  # A workload bearer's ``gen`` claim.


class TokenVerifier:
    """Verifies session and bearer tokens against a periodically refreshed TrustState.

    Signature checks cost far more than a gRPC call's other work, so a verified token is cached
    until it expires; the cheap checks that can change (revocation, key retirement, expiry) run
    on every call, cached or not.
    """

    def __init__(
        self,
        source: TrustSource,
        *,
        refresh_interval: float = 2.0,
        max_staleness: float = 5.0,
        leeway_seconds: int = 10,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 <= leeway_seconds <= MAX_LEEWAY_SECONDS:
            raise ValueError(f"leeway must be between 0 and {MAX_LEEWAY_SECONDS} seconds")
        self._source = source
        self._refresh_interval = refresh_interval
        self._max_staleness = max_staleness
        self._leeway = leeway_seconds
        self._cache_size = cache_size
        self._clock = clock
        self._state: TrustState | None = None
        self._cache: dict[str, _CachedToken] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refresh_lock = threading.Lock()

    def refresh(self) -> None:
        """Fetches keys and revocations now; raises if the source fails."""
        with self._refresh_lock:
            state = self._source.fetch()
            self._state = state

    @property
    def trust_fetched_at(self) -> float | None:
        """When the keys and revocations in use were fetched (``time.monotonic()``), if ever."""
        state = self._state
        return None if state is None else state.fetched_at

    def revoked_deployments(self) -> Mapping[str, datetime]:
        """Deployments auth reports revoked (recent ones), by id; empty before the first fetch."""
        state = self._state
        return {} if state is None else state.revoked_deployments

    def start(self) -> None:
        """Starts background refreshing; the first fetch is attempted before returning."""
        try:
            self.refresh()
        except Exception as exc:  # The source may come up after us; the loop keeps trying.
            log.warning("token trust state not yet available", error=type(exc).__name__)
        self._thread = threading.Thread(target=self._run, name="token-trust-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops background refreshing."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        failures = 0
        while not self._stop.wait(self._refresh_interval if failures == 0 else 0.5):
            try:
                self.refresh()
                if failures:
                    log.info("token trust state refreshed again", failed_attempts=failures)
                failures = 0
            except Exception as exc:  # Keep serving with the last state until it goes stale.
                failures += 1
                log.warning("token trust state refresh failed", error=type(exc).__name__)

    def _current_state(self) -> TrustState:
        state = self._state
        if state is None:
            raise Unavailable(
                "token verification keys are not loaded yet", reason="AUTH_UNAVAILABLE"
            )
        if time.monotonic() - state.fetched_at > self._max_staleness:
            # Fail closed: without fresh revocations a revoked agent could keep working.
            raise Unavailable(
                "token verification state is stale; auth is unreachable", reason="AUTH_UNAVAILABLE"
            )
        return state

    def verify(self, token: str, kind: PrincipalKind | Collection[PrincipalKind]) -> Principal:
        """Returns the principal a token speaks for, or raises Unauthenticated.

        ``kind`` is what the caller's method accepts: one kind, or several (``USER_OR_AGENT``).
        A user session presented where only an agent bearer is accepted (or the reverse) fails
        as TOKEN_WRONG_AUDIENCE. The signature is verified once per token, for the kind its
        claims name, and the result cached until the token expires; revocation, key
        retirement and expiry are checked on every call, cached or not.
        """
        accepted = _ONLY[kind] if isinstance(kind, PrincipalKind) else kind
        state = self._current_state()
        cached = self._cache.get(token)
        if cached is None:
            cached = self._verify_signature(token, accepted, state)
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[token] = cached
        elif cached.principal.kind not in accepted:
            raise _wrong_audience(accepted)
        self._check_still_valid(cached, state)
        return cached.principal

    def _verify_signature(
        self, token: str, accepted: Collection[PrincipalKind], state: TrustState
    ) -> _CachedToken:
        try:
            unverified = jwt.api_jwt.decode_complete(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise Unauthenticated("token is malformed", reason="TOKEN_MALFORMED") from None
        header = unverified["header"]
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str):
            raise Unauthenticated("token is not signed by auth", reason="TOKEN_ALGORITHM")
        key = state.keys.get(kid)
        if key is None:
            raise Unauthenticated("token signed by an unknown key", reason="TOKEN_UNKNOWN_KEY")
        # The unverified claims only choose which audience to verify against; nothing is
        # accepted before the signature and every claim have been checked for that kind.
        claimed = unverified["payload"].get("kind")
        kind = _KIND_BY_CLAIM.get(claimed) if isinstance(claimed, str) else None
        if kind is None:
            raise Unauthenticated("token is invalid (no kind)", reason="TOKEN_INVALID")
        if kind not in accepted:
            raise _wrong_audience(accepted)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.public_key,
                algorithms=[ALGORITHM],
                audience=kind.audience,
                issuer=ISSUER,
                leeway=self._leeway,
                options={"require": _REQUIRED[kind]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token has expired", reason="TOKEN_EXPIRED") from None
        except jwt.InvalidAudienceError:
            raise _wrong_audience(accepted) from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(
                f"token is invalid ({type(exc).__name__})", reason="TOKEN_INVALID"
            ) from None
        if claims.get("kind") != kind.value:  # Checked again, now that the signature holds.
            raise _wrong_audience(accepted)
        role = claims.get("role")
        email = claims.get("email") if kind is PrincipalKind.USER else None
        expires = float(claims["exp"])
        issued = float(claims["iat"])
        if not (math.isfinite(expires) and math.isfinite(issued)):
            raise Unauthenticated("token is invalid (times)", reason="TOKEN_INVALID")
        grants, max_ttl, generation = (
            _workload_claims(claims) if kind is PrincipalKind.WORKLOAD else ((), None, 0)
        )
        principal = Principal(
            kind=kind,
            org_id=str(claims["org_id"]),
            subject_id=str(claims["sub"]),
            token_id=str(claims["jti"]),
            expires_at=datetime.fromtimestamp(expires, UTC),
            role=str(role) if role is not None else None,
            issued_at=datetime.fromtimestamp(issued, UTC),
            email=email if isinstance(email, str) and email else None,
            grants=grants,
            max_ttl_seconds=max_ttl,
        )
        return _CachedToken(principal, kid, expires, issued, generation)

    def _check_still_valid(self, token: _CachedToken, state: TrustState) -> None:
        now = self._clock()
        if now > token.expires + self._leeway:
            raise Unauthenticated("token has expired", reason="TOKEN_EXPIRED")
        key = state.keys.get(token.kid)
        if key is None or (
            key.verify_until is not None and now > key.verify_until.timestamp() + self._leeway
        ):
            raise Unauthenticated("token signed by a retired key", reason="TOKEN_UNKNOWN_KEY")
        principal = token.principal
        if principal.kind is PrincipalKind.AGENT:
            if principal.subject_id in state.revoked_deployments:
                raise Unauthenticated("deployment has been revoked", reason="DEPLOYMENT_REVOKED")
            return
        if principal.kind is PrincipalKind.WORKLOAD:
            if principal.subject_id in state.revoked_workloads:
                raise Unauthenticated("workload has been revoked", reason="WORKLOAD_REVOKED")
            current = state.workload_generations.get(principal.subject_id)
            if current is not None and token.generation < current:
                raise Unauthenticated(
                    "the workload's grants changed since this bearer was issued:"
                    " exchange the workload token again",
                    reason="WORKLOAD_CHANGED",
                )
            return
        cutoff = state.sessions_valid_after.get(principal.subject_id)
        if principal.token_id in state.revoked_sessions or (
            cutoff is not None and token.issued <= cutoff.timestamp()
        ):
            raise Unauthenticated(
                "session has been signed out: sign in again", reason="SESSION_REVOKED"
            )


def _workload_claims(claims: Mapping[str, Any]) -> tuple[tuple[Grant, ...], int, int]:
    """A verified workload bearer's grants, maximum lease TTL and generation."""
    max_ttl, generation = claims.get("max_ttl"), claims.get("gen")
    # bool is an int to Python; a JSON true is no TTL.
    if not all(
        isinstance(value, int) and not isinstance(value, bool) and value > 0
        for value in (max_ttl, generation)
    ) or not isinstance(claims.get("grants"), list):
        raise Unauthenticated("token is invalid (workload claims)", reason="TOKEN_INVALID")
    assert isinstance(max_ttl, int) and isinstance(generation, int)
    return grants_from_claim(claims["grants"]), max_ttl, generation


def _wrong_audience(accepted: Collection[PrincipalKind]) -> Unauthenticated:
    names = " or ".join(sorted(kind.value for kind in accepted))
    return Unauthenticated(f"token is not a {names} token", reason="TOKEN_WRONG_AUDIENCE")
