"""Workload identities: which customer service may borrow which connection roles, for how long.

An admin creates a workload identity for a service (a reporting job, an API) naming what it may
borrow: (connection, role) grants and the longest lease it may ask for. Its token is shown once
and stored as a hash, and the service trades it for a short-lived workload bearer whose claims
carry the org, the grants and the maximum TTL, so connections can check a lease request with no
call to auth (sevvo/runtime/workload_grants.py is the contract both sides read). Like a
deployment's, the token is revocable: the next exchange fails at once, and verifiers refuse the
outstanding bearers within a refresh interval (sevvo/runtime/tokens.py). A change to the grants
or the maximum TTL bumps the workload's generation, which voids outstanding bearers the same
way, so a narrowed grant takes effect within seconds too.

auth cannot see connections (they live in another service's schema), so grants are checked
here for form only; connections checks that the connection and role exist when the workload
asks for a lease, and a grant of something that does not exist grants nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Final

from services.auth.deployment_cache import SecretCache
from services.auth.keys import SigningKeys
from services.auth.limits import SignInLimiter
from services.auth.workload_store import WorkloadRow, WorkloadSecretRow, WorkloadStore
from sevvo.runtime import paging, validation
from sevvo.runtime.audit import Actor
from sevvo.runtime.credential_token import (
    WORKLOAD_TOKEN,
    Credentials,
    new_secret,
    secret_hash,
    secret_matches,
)
from sevvo.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, Unauthenticated
from sevvo.runtime.logs import get_logger
from sevvo.runtime.servicing import blocking
from sevvo.runtime.tokens import Principal, PrincipalKind
from sevvo.runtime.workload_grants import Grant, checked_grants

log = get_logger(__name__)

# The longest lease a workload may ask for, between these bounds. At least a minute: a shorter
# lease would expire before a service could renew it with any margin, and a role minted and
# dropped every few seconds costs the customer's database more than it protects. At most a day:
# a revoked workload can start no new lease, but keeps those it holds until they expire, so
# the maximum TTL is how long a leaked credential can outlive its workload; longer than a day is
# the long-lived DB_PASSWORD that workload credentials exist to replace.
MIN_MAX_TTL_SECONDS: Final = 60
MAX_MAX_TTL_SECONDS: Final = 86_400
MAX_DESCRIPTION_LENGTH: Final = 1000
UPDATABLE_PATHS: Final = ("display_name", "description", "grants", "max_ttl_seconds")

ClaimsFactory = Callable[
    [PrincipalKind, uuid.UUID, uuid.UUID, timedelta], tuple[dict[str, object], datetime]
]
"""Builds a bearer's standard claims and its expiry (AuthDomain.bearer_claims)."""


class WorkloadCache(SecretCache[WorkloadSecretRow]):
    """Workloads by id: what ExchangeWorkloadToken needs of each (see deployment_cache.py)."""


@dataclass(frozen=True)
class NewWorkload:
    """A created workload and its token, which exists only in this response."""

    workload: WorkloadRow
    token: str


@dataclass(frozen=True)
class WorkloadBearer:
    """A freshly signed workload bearer, its expiry, and the workload it speaks for."""

    token: str
    expires_at: datetime
    workload: WorkloadSecretRow


@dataclass(frozen=True)
class WorkloadUpdate:
    """The new values of an UpdateWorkload call; only those its mask names are used."""

    display_name: str = ""
    description: str = ""
    grants: tuple[tuple[str, str], ...] = ()
    max_ttl_seconds: int = 0


def max_ttl(field: str, seconds: int) -> int:
    """A workload's maximum lease TTL within the bounds above, or InvalidArgument naming it."""
    if not MIN_MAX_TTL_SECONDS <= seconds <= MAX_MAX_TTL_SECONDS:
        raise InvalidArgument(
            field,
            f"must be between {MIN_MAX_TTL_SECONDS} (one minute) and {MAX_MAX_TTL_SECONDS}"
            " (one day) seconds",
        )
    return seconds


def description(field: str, text: str) -> str:
    """An optional note: trimmed, printable, at most MAX_DESCRIPTION_LENGTH characters."""
    text = text.strip()
    if len(text) > MAX_DESCRIPTION_LENGTH:
        raise InvalidArgument(field, f"must be at most {MAX_DESCRIPTION_LENGTH} characters")
    # Line breaks and tabs are text; other control and invisible characters are not.
    if validation.has_control_characters(text.replace("\n", " ").replace("\t", " ")):
        raise InvalidArgument(field, "must not contain control or invisible format characters")
    return text


def _grant_list(grants: Iterable[Grant]) -> str:
    return ",".join(f"{grant.connection_id}:{grant.role}" for grant in grants)


def _refusal(
    workload: WorkloadSecretRow | None, credentials: Credentials
) -> Unauthenticated | None:
    """Why a token may not be exchanged, or None; the same error for unknown and wrong."""
    if workload is None or not secret_matches(credentials.secret, workload.secret_hash):
        return Unauthenticated("workload token is not valid", reason="INVALID_WORKLOAD_TOKEN")
    if workload.revoked_at is not None:
        return Unauthenticated("workload has been revoked", reason="WORKLOAD_REVOKED")
    return None


class WorkloadDomain:
    """The operations behind WorkloadService and AuthService.ExchangeWorkloadToken.

    Methods that act for an admin take the verified Principal and use its ``org_id``; no org id
    is ever read from a request. They are plain functions the servicer runs in a thread, except
    ``exchange``, a coroutine that reads Postgres only when the cache cannot answer.
    """

    def __init__(
        self,
        store: WorkloadStore,
        keys: SigningKeys,
        cache: WorkloadCache,
        *,
        claims: ClaimsFactory,
        bearer_ttl: timedelta,
        limiter: SignInLimiter,
        on_revoke: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._keys = keys
        self._cache = cache
        self._claims = claims
        self._bearer_ttl = bearer_ttl
        self._limiter = limiter
        self._on_revoke = on_revoke
        self._clock = clock

    # WorkloadService.

    def create(
        self,
        caller: Principal,
        display_name: str,
        note: str,
        grants: Iterable[tuple[str, str]],
        max_ttl_seconds: int,
    ) -> NewWorkload:
        """Creates a workload of the caller's org; its token is returned here and never again."""
        secret = new_secret()
        row = WorkloadRow(
            id=uuid.uuid4(),
            org_id=uuid.UUID(caller.org_id),
            display_name=validation.display_name("display_name", display_name),
            description=description("description", note),
            grants=checked_grants("grants", grants),
            max_ttl_seconds=max_ttl("max_ttl_seconds", max_ttl_seconds),
            secret_hash=secret_hash(secret),
            creator_user_id=uuid.UUID(caller.subject_id),
            created_at=self._clock(),
        )
        details = {
            "display_name": row.display_name,
            "grants": _grant_list(row.grants),
            "max_ttl_seconds": str(row.max_ttl_seconds),
        }
        self._store.create(row, Actor.of(caller), details)
        log.info("workload created", workload_id=str(row.id), grants=len(row.grants))
        return NewWorkload(row, WORKLOAD_TOKEN.wrap(Credentials(str(row.id), secret)))

    def get(self, caller: Principal, workload_id: str) -> WorkloadRow:
        """A workload of the caller's org; other orgs' are indistinguishable from missing."""
        row = self._store.get(uuid.UUID(caller.org_id), validation.resource_id("id", workload_id))
        if row is None:
            raise _not_found()
        return row

    def list_workloads(
        self, caller: Principal, page_size: int, page_token: str
    ) -> tuple[list[WorkloadRow], str]:
        """One page of the caller's org's workloads, oldest first, and the next page token."""
        limit = paging.page_size(page_size)
        rows = self._store.list_workloads(
            uuid.UUID(caller.org_id), limit + 1, paging.decode_cursor(page_token)
        )
        return paging.page_of(rows, limit, lambda r: (r.created_at, r.id))

    def update(
        self, caller: Principal, workload_id: str, update: WorkloadUpdate, mask: Collection[str]
    ) -> WorkloadRow:
        """Changes the masked fields of an active workload of the caller's org.

        Every value is checked before anything is stored, so a bad one changes nothing. A change
        to the grants or the maximum TTL bumps the generation, which voids outstanding bearers.
        """
        target = validation.resource_id("id", workload_id)
        paths = _checked_mask(mask)
        name = (
            validation.display_name("workload.display_name", update.display_name)
            if "display_name" in paths
            else None
        )
        note = (
            description("workload.description", update.description)
            if "description" in paths
            else None
        )
        grants = checked_grants("workload.grants", update.grants) if "grants" in paths else None
        ttl = (
            max_ttl("workload.max_ttl_seconds", update.max_ttl_seconds)
            if "max_ttl_seconds" in paths
            else None
        )
        try:
            with self._store.change(uuid.UUID(caller.org_id), target) as tx:
                current = tx.workload
                if current is None:
                    raise _not_found()
                if current.revoked_at is not None:
                    raise FailedPrecondition(
                        "the workload is revoked; create a new one instead",
                        reason="WORKLOAD_REVOKED",
                    )
                updated = replace(
                    current,
                    display_name=current.display_name if name is None else name,
                    description=current.description if note is None else note,
                    grants=current.grants if grants is None else grants,
                    max_ttl_seconds=current.max_ttl_seconds if ttl is None else ttl,
                )
                if updated == current:
                    return current  # Nothing to change, so nothing to record.
                now = self._clock()
                regranted = (updated.grants, updated.max_ttl_seconds) != (
                    current.grants,
                    current.max_ttl_seconds,
                )
                if regranted:
                    updated = replace(
                        updated, generation=current.generation + 1, grants_changed_at=now
                    )
                stored = tx.update(
                    replace(updated, updated_at=now),
                    Actor.of(caller),
                    "workload.update",
                    _update_details(current, updated),
                )
        finally:
            # Even when the answer was lost: the commit may have happened all the same.
            self._cache.forget(target)
        log.info("workload updated", workload_id=str(target), regranted=regranted)
        if regranted:
            self._on_revoke()
        return stored

    def revoke(self, caller: Principal, workload_id: str) -> WorkloadRow:
        """Revokes a workload of the caller's org; revoking twice keeps the first time.

        The workload leaves this replica's cache before the call returns, so its next exchange
        here fails at once; other replicas hear of it from Postgres within the cache's bounds
        (services/auth/deployment_cache.py), and verifiers within their refresh interval.
        """
        target = validation.resource_id("id", workload_id)
        try:
            with self._store.change(uuid.UUID(caller.org_id), target) as tx:
                current = tx.workload
                if current is None:
                    raise _not_found()
                if current.revoked_at is not None:
                    return current  # Already revoked: nothing changes, nothing is recorded.
                stored = tx.update(
                    replace(current, revoked_at=self._clock()), Actor.of(caller), "workload.revoke"
                )
        finally:
            self._cache.forget(target)
        log.info("workload revoked", workload_id=str(target))
        self._on_revoke()
        return stored

    # AuthService.ExchangeWorkloadToken.

    async def exchange(self, token: str, source: str) -> WorkloadBearer:
        """Trades a workload token for a short-lived workload bearer.

        ``source`` is the caller's network address: failures are limited per (workload,
        source) and per source, as sign-ins are (services/auth/limits.py), and each refusal of
        a workload that exists is audited in that workload's org. Reads Postgres only when the
        workload is not cached or the signing keys are due for a reload.
        """
        credentials = WORKLOAD_TOKEN.unwrap(token)
        workload_id = uuid.UUID(credentials.subject_id)
        attempt = self._limiter.admit(str(workload_id), source)
        proven: bool | None = None
        try:
            workload = self._cache.cached(workload_id)
            if workload is None:
                workload = await blocking(self._cache.get, workload_id)
            refusal = _refusal(workload, credentials)
            proven = refusal is None
        finally:
            self._limiter.settle(attempt, succeeded=proven)
        if refusal is not None:
            log.info(
                "workload token exchange refused",
                workload_id=str(workload_id),
                reason=refusal.reason,
            )
            if workload is not None:  # An unknown id has no org whose log could hold it.
                await self._audit_refusal(workload, refusal.reason, source)
            raise refusal
        assert workload is not None
        claims, expires = self._claims(
            PrincipalKind.WORKLOAD, workload.org_id, workload.id, self._bearer_ttl
        )
        claims["grants"] = [grant.claim() for grant in workload.grants]
        claims["max_ttl"] = workload.max_ttl_seconds
        claims["gen"] = workload.generation
        signed = self._keys.sign_in_memory(claims)
        if signed is None:  # The signing keys are due for a reload from Postgres.
            signed = await blocking(self._keys.sign, claims)
        return WorkloadBearer(signed, expires, workload)

    async def _audit_refusal(self, workload: WorkloadSecretRow, reason: str, source: str) -> None:
        try:
            await blocking(self._store.record_refused_exchange, workload, reason, source)
        except Exception as exc:  # The refusal stands whatever became of its record.
            log.warning("workload exchange refusal not audited", error=type(exc).__name__)


def _not_found() -> NotFound:
    return NotFound("workload not found", reason="WORKLOAD_NOT_FOUND")


def _checked_mask(mask: Collection[str]) -> set[str]:
    paths = set(mask)
    if not paths:
        raise InvalidArgument("update_mask", "must name at least one field")
    unknown = sorted(paths - set(UPDATABLE_PATHS))
    if unknown:
        # The names of unknown paths are not echoed: they are the caller's arbitrary text.
        raise InvalidArgument(
            "update_mask",
            f"names {len(unknown)} field(s) that cannot be updated; updatable: "
            + ", ".join(UPDATABLE_PATHS),
        )
    return paths


def _update_details(before: WorkloadRow, after: WorkloadRow) -> dict[str, str]:
    """The audit record of an update: which fields changed, and their new non-secret values."""
    changed = [path for path in UPDATABLE_PATHS if getattr(before, path) != getattr(after, path)]
    details = {"fields": ",".join(changed)}
    if "grants" in changed:
        details["grants"] = _grant_list(after.grants)
    if "max_ttl_seconds" in changed:
        details["max_ttl_seconds"] = str(after.max_ttl_seconds)
    if "display_name" in changed:
        details["display_name"] = after.display_name
    return details
