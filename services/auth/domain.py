"""auth's rules: sign-in, sessions, users, deployments and the token exchange.

Every method that acts for a caller takes the verified Principal and uses its ``org_id``;
no org id is ever read from a request. Methods that check or hash a password are coroutines:
scrypt runs on the HashingPool, never on the thread pool the other RPCs' database work uses
(see services/auth/limits.py); the rest are plain functions the servicers run in a thread,
except ``exchange_in_memory``, which does no I/O and runs on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.auth import passwords
from services.auth.deployment_cache import DeploymentCache
from services.auth.keys import SigningKeys
from services.auth.limits import HashingPool, SignInLimiter
from services.auth.store import (
    AuthStore,
    DeploymentRow,
    DeploymentSecretRow,
    OrgRow,
    UserChangeTx,
    UserRow,
)
from sevvo.runtime import deployment_token, paging, validation
from sevvo.runtime.audit import SYSTEM, Actor, Entry
from sevvo.runtime.credential_token import secret_hash as _secret_hash
from sevvo.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from sevvo.runtime.logs import get_logger
from sevvo.runtime.servicing import blocking
from sevvo.runtime.tokens import ISSUER, Principal, PrincipalKind

log = get_logger(__name__)

_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}$")
_MAX_EMAIL = 64 + 1 + 255 + 1 + 63  # The longest address _EMAIL_RE accepts.
ROLES = ("admin", "member")
_BOOTSTRAP_FIELDS = {"email": "admin_email", "password": "admin_password"}
# A session issued in the same instant as a cutoff is void; its replacement is issued after.
_AFTER = timedelta(microseconds=1)
# Refused sign-ins waiting to be audited; beyond this (a database far too slow to keep up with
# a flood of wrong passwords) further refusals are logged only.
_MAX_PENDING_REFUSALS = 1000


@dataclass(frozen=True)
class IssuedToken:
    """A freshly signed token and its expiry."""

    token: str
    expires_at: datetime
    org_id: str
    subject_id: str


@dataclass(frozen=True)
class NewDeployment:
    """A created deployment and its token, which exists only in this response."""

    deployment: DeploymentRow
    token: str


def normalize_email(email: str) -> str:
    """Lower-cases and validates an email address."""
    email = email.strip().lower()
    if not _EMAIL_RE.match(email):
        raise InvalidArgument("email", "must be an email address such as ada@example.com")
    return email


def validate_password(password: str, field: str = "password") -> None:
    """Enforces the length rules for a new password."""
    if len(password) < passwords.MIN_LENGTH:
        raise InvalidArgument(field, f"must be at least {passwords.MIN_LENGTH} characters")
    if len(password) > passwords.MAX_LENGTH:
        raise InvalidArgument(field, f"must be at most {passwords.MAX_LENGTH} characters")


def _new_org_fields(org_name: str, email: str, password: str) -> tuple[str, str]:
    name = validation.display_name("org_name", org_name)
    email = normalize_email(email)
    validate_password(password)
    return name, email


class AuthDomain:
    """The operations behind AuthService, UserService and DeploymentService."""

    def __init__(
        self,
        store: AuthStore,
        keys: SigningKeys,
        deployments: DeploymentCache,
        *,
        session_ttl: timedelta,
        bearer_ttl: timedelta,
        hashing: HashingPool,
        limiter: SignInLimiter,
        leeway: timedelta = timedelta(0),
        on_revoke: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        bootstrap_token: str | None = None,
    ) -> None:
        self._store = store
        self._deployments = deployments
        self._bootstrap_token = bootstrap_token
        self._keys = keys
        self._session_ttl = session_ttl
        self._bearer_ttl = bearer_ttl
        self._hashing = hashing
        self._limiter = limiter
        # A cutoff outlives every session it can refuse: those issued before it, at most
        # one session lifetime (plus the verifiers' leeway) ago.
        self._cutoff_retention = session_ttl + leeway
        self._on_revoke = on_revoke
        self._clock = clock
        self._pending_refusals: set[asyncio.Task[None]] = set()

    def _issue(
        self,
        kind: PrincipalKind,
        org_id: uuid.UUID,
        subject: uuid.UUID,
        ttl: timedelta,
        role: str | None = None,
        now: datetime | None = None,
        email: str | None = None,
    ) -> IssuedToken:
        claims, expires = self._claims(kind, org_id, subject, ttl, role, now, email)
        return IssuedToken(self._keys.sign(claims), expires, str(org_id), str(subject))

    def _session(self, user: UserRow, now: datetime | None = None) -> IssuedToken:
        """A session for ``user``, naming their email so every service's audit records do."""
        return self._issue(
            PrincipalKind.USER,
            user.org_id,
            user.id,
            self._session_ttl,
            user.role,
            now,
            user.email,
        )

    def _claims(
        self,
        kind: PrincipalKind,
        org_id: uuid.UUID,
        subject: uuid.UUID,
        ttl: timedelta,
        role: str | None = None,
        now: datetime | None = None,
        email: str | None = None,
    ) -> tuple[dict[str, object], datetime]:
        now = now or self._clock()
        expires = now + ttl
        claims: dict[str, object] = {
            "iss": ISSUER,
            "aud": kind.audience,
            "sub": str(subject),
            "org_id": str(org_id),
            "kind": kind.value,
            # Sessions carry the exact instant (RFC 7519 allows a fraction), which their
            # user's cutoff is compared with: a sign-in right after "sign out everywhere"
            # must not fall in the same second as the sessions it voided.
            "iat": now.timestamp() if kind is PrincipalKind.USER else int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": uuid.uuid4().hex,
        }
        if role is not None:
            claims["role"] = role
        if email is not None:
            claims["email"] = email
        return claims, expires

    def bearer_claims(
        self, kind: PrincipalKind, org_id: uuid.UUID, subject: uuid.UUID, ttl: timedelta
    ) -> tuple[dict[str, object], datetime]:
        """The claims every bearer of ``kind`` starts with, and its expiry; for the workload
        exchange (services/auth/workloads.py), which adds its own."""
        return self._claims(kind, org_id, subject, ttl)

    # Orgs and users.

    async def bootstrap_org(
        self, presented_token: str | None, org_name: str, email: str, password: str
    ) -> UserRow:
        """Creates an org and its admin for the operator, who proves itself with the token.

        Unlike the operator's own ``create-org`` command, an org name already in use is
        refused, so a repeated bootstrap does not leave two orgs of the same name.
        """
        if self._bootstrap_token is None:
            log.info("bootstrap refused", reason="BOOTSTRAP_DISABLED")
            raise FailedPrecondition(
                "bootstrap is disabled: auth has no SEVVO_AUTH_BOOTSTRAP_TOKEN_FILE configured",
                reason="BOOTSTRAP_DISABLED",
            )
        # Digests first, so the comparison takes the same time whatever the lengths.
        presented = hashlib.sha256((presented_token or "").encode()).digest()
        expected = hashlib.sha256(self._bootstrap_token.encode()).digest()
        if not presented_token or not hmac.compare_digest(presented, expected):
            log.warning(
                "bootstrap refused",
                reason="BOOTSTRAP_TOKEN_INVALID",
                token_present=bool(presented_token),
            )
            raise PermissionDenied(
                "the bootstrap token is missing or wrong", reason="BOOTSTRAP_TOKEN_INVALID"
            )
        try:
            name, email = _new_org_fields(org_name, email, password)
        except InvalidArgument as invalid:
            # Name the field as BootstrapOrgRequest spells it.
            field = _BOOTSTRAP_FIELDS.get(invalid.field, invalid.field)
            raise InvalidArgument(field, invalid.description, reason=invalid.reason) from None
        password_hash = await self._hashing.run(passwords.hash_password, password)
        return await blocking(
            self._create_org, name, email, password_hash, unique_name=True, via="bootstrap"
        )

    def admin_notice_bearer(self, admin: UserRow) -> str:
        """A one-minute session of a new org's first admin, for auth's own notice to the
        orchestrator that the org exists (never handed to anyone)."""
        issued = self._issue(
            PrincipalKind.USER,
            admin.org_id,
            admin.id,
            timedelta(minutes=1),
            admin.role,
            email=admin.email,
        )
        return issued.token

    def create_org_with_admin(
        self, org_name: str, email: str, password: str, *, unique_name: bool = False
    ) -> UserRow:
        """Bootstraps an org and its first admin user, hashing on the calling thread.

        For the operator's ``create-org`` command and the dev stack, outside any server; the
        BootstrapOrg RPC goes through ``bootstrap_org``.
        """
        name, email = _new_org_fields(org_name, email, password)
        return self._create_org(
            name, email, passwords.hash_password(password), unique_name=unique_name, via="operator"
        )

    def _create_org(
        self, name: str, email: str, password_hash: str, *, unique_name: bool, via: str
    ) -> UserRow:
        now = self._clock()
        org = OrgRow(id=uuid.uuid4(), name=name, created_at=now)
        admin = UserRow(
            id=uuid.uuid4(),
            org_id=org.id,
            email=email,
            password_hash=password_hash,
            role="admin",
            created_at=now,
        )
        # The operator acted, through the bootstrap token or auth's own command: no user yet.
        entries = [
            Entry(
                org.id,
                SYSTEM,
                "org.create",
                "org",
                str(org.id),
                details={"name": name, "admin_user_id": str(admin.id), "via": via},
            ),
            Entry(
                org.id,
                SYSTEM,
                "user.create",
                "user",
                str(admin.id),
                details={"email": email, "role": admin.role, "via": via},
            ),
        ]
        self._store.create_org_with_admin(org, admin, entries, unique_name=unique_name)
        log.info("org created", org_id=str(org.id), admin_user_id=str(admin.id))
        return admin

    async def sign_in(self, email: str, password: str, source: str) -> IssuedToken:
        """Checks email and password; the error never says which of the two was wrong.

        ``source`` is the caller's network address, which the limiter counts failures by.
        """
        failure = Unauthenticated("email or password is incorrect", reason="INVALID_CREDENTIALS")
        account = email.strip().lower()
        # No such address can exist, and the limiter must not keep arbitrarily long keys.
        if not account or not password or "\x00" in account or len(account) > _MAX_EMAIL:
            raise failure
        attempt = self._limiter.admit(account, source)
        checked: bool | None = None
        try:
            # Taken before the read: see AuthStore.user_by_email for why the order matters.
            issued_at = self._clock()
            user = await blocking(self._store.user_by_email, account)
            encoded = user.password_hash if user is not None else passwords.dummy_hash()
            matches = await self._hashing.run(passwords.verify_password, password, encoded)
            checked = matches and user is not None
        finally:
            self._limiter.settle(attempt, succeeded=checked)
        if user is None or not checked:
            if user is None:
                # No org to file it under: an address no user has is in no audit log.
                log.info("sign-in failed", reason="UNKNOWN_ACCOUNT")
            else:
                log.info("sign-in failed", user_id=str(user.id))
                self._audit_refusal(user, "INVALID_CREDENTIALS", source)
            raise failure
        if user.disabled_at is not None:
            log.info("sign-in refused", user_id=str(user.id), reason="USER_DISABLED")
            self._audit_refusal(user, "USER_DISABLED", source)
            raise Unauthenticated(
                "this user is disabled: ask an admin of your org to enable it",
                reason="USER_DISABLED",
            )
        issued = await blocking(self._session, user, issued_at)
        # A session nobody can account for is not handed out: no record, no session.
        await blocking(self._store.append_audit, _sign_in_entry(user, source))
        log.info("signed in", user_id=str(user.id), org_id=str(user.org_id))
        return issued

    def _audit_refusal(self, user: UserRow, reason: str, source: str) -> None:
        """Audits a refused sign-in in the background, never delaying or changing the refusal.

        Awaiting the write would make a wrong password for an existing account answer later
        than one for an unknown address (which has no org to record it in), telling a guesser
        which addresses exist; and a failed write must not turn the refusal into another error.
        """
        if len(self._pending_refusals) >= _MAX_PENDING_REFUSALS:
            log.warning("sign-in refusal not audited", reason="TOO_MANY_PENDING")
            return
        entry = _sign_in_entry(user, source, refused=reason)
        task = asyncio.get_running_loop().create_task(self._append_quietly(entry))
        self._pending_refusals.add(task)
        task.add_done_callback(self._pending_refusals.discard)

    async def _append_quietly(self, entry: Entry) -> None:
        try:
            await blocking(self._store.append_audit, entry)
        except Exception as exc:  # The refusal stands whatever became of its record.
            log.warning("sign-in refusal not audited", error=type(exc).__name__)

    async def settle_audits(self) -> None:
        """Waits for refused sign-ins still being audited (on shutdown, and for tests)."""
        if self._pending_refusals:
            await asyncio.gather(*self._pending_refusals, return_exceptions=True)

    def sign_out(self, caller: Principal) -> None:
        """Revokes the caller's own session; their other sessions keep working."""
        self._store.revoke_session(
            caller.token_id,
            uuid.UUID(caller.subject_id),
            caller.expires_at,
            self._clock(),
            Entry(caller.org_id, Actor.of(caller), "user.sign_out", "user", caller.subject_id),
        )
        log.info("signed out", user_id=caller.subject_id)
        self._on_revoke()

    async def change_password(
        self, caller: Principal, current_password: str, new_password: str, source: str
    ) -> IssuedToken:
        """Replaces the caller's password and voids their sessions; returns a new session.

        The current password is checked like a sign-in (same limiter, same pool), so a stolen
        session cannot be used to guess it faster than signing in would.
        """
        if not current_password:
            raise InvalidArgument("current_password", "is required")
        validate_password(new_password, "new_password")
        user = await blocking(self.get_user, caller, caller.subject_id)
        attempt = self._limiter.admit(user.email, source)
        checked: bool | None = None
        try:
            checked = await self._hashing.run(
                passwords.verify_password, current_password, user.password_hash
            )
        finally:
            self._limiter.settle(attempt, succeeded=checked)
        if not checked:
            log.info("password change refused", user_id=str(user.id))
            raise PermissionDenied(
                "the current password is incorrect", reason="CURRENT_PASSWORD_INCORRECT"
            )
        new_hash = await self._hashing.run(passwords.hash_password, new_password)
        cutoff = await blocking(self._replace_password, caller, user, new_hash)
        await blocking(self._on_revoke)
        log.info("password changed", user_id=str(user.id))
        return await blocking(self._session, user, max(self._clock(), cutoff + _AFTER))

    def _replace_password(self, caller: Principal, seen: UserRow, new_hash: str) -> datetime:
        with self._user_change(caller, seen.id) as (tx, user):
            if user.password_hash != seen.password_hash:
                raise FailedPrecondition(
                    "the password was changed meanwhile: sign in again and retry",
                    reason="PASSWORD_CHANGED_CONCURRENTLY",
                )
            tx.set_password_hash(new_hash)
            cutoff = self._cut_off(tx)
            tx.audit(Actor.of(caller), "user.password.change")
        return cutoff

    async def create_user(self, caller: Principal, email: str, password: str, role: str) -> UserRow:
        """Creates a user in the caller's org."""
        email = normalize_email(email)
        validate_password(password)
        if role not in ROLES:
            raise InvalidArgument("role", "must be USER_ROLE_MEMBER or USER_ROLE_ADMIN")
        user = UserRow(
            id=uuid.uuid4(),
            org_id=uuid.UUID(caller.org_id),
            email=email,
            password_hash=await self._hashing.run(passwords.hash_password, password),
            role=role,
            created_at=self._clock(),
        )
        entry = Entry(
            user.org_id,
            Actor.of(caller),
            "user.create",
            "user",
            str(user.id),
            details={"email": email, "role": role},
        )
        await blocking(self._store.create_user, user, entry)
        log.info("user created", user_id=str(user.id), role=role)
        return user

    def org_name(self, caller: Principal) -> str:
        """The caller's org's display name ("" if the org is gone)."""
        return self._store.org_name(uuid.UUID(caller.org_id)) or ""

    def get_user(self, caller: Principal, user_id: str) -> UserRow:
        """A user of the caller's org; other orgs' users are indistinguishable from missing."""
        user = self._store.get_user(uuid.UUID(caller.org_id), validation.resource_id("id", user_id))
        if user is None:
            raise NotFound("user not found", reason="USER_NOT_FOUND")
        return user

    def list_users(
        self, caller: Principal, page_size: int, page_token: str
    ) -> tuple[list[UserRow], str]:
        """One page of the caller's org's users, and the next page token."""
        limit = paging.page_size(page_size)
        rows = self._store.list_users(
            uuid.UUID(caller.org_id), limit + 1, paging.decode_cursor(page_token)
        )
        return paging.page_of(rows, limit, lambda r: (r.created_at, r.id))

    # Disabling, enabling, deleting and signing users out: org-scoped, audited changes.

    @contextmanager
    def _user_change(
        self, caller: Principal, user_id: uuid.UUID
    ) -> Iterator[tuple[UserChangeTx, UserRow]]:
        # Another org's user and a random id are both simply not in the caller's org.
        with self._store.user_change(uuid.UUID(caller.org_id), user_id) as tx:
            if tx.user is None:
                raise NotFound("user not found", reason="USER_NOT_FOUND")
            yield tx, tx.user

    def _cut_off(self, tx: UserChangeTx) -> datetime:
        # Taken inside the transaction, after the user's row is locked: a sign-in that read
        # the row before the lock was taken got an earlier issue time, so it is cut off too.
        now = self._clock()
        tx.cut_off_sessions(now, now + self._cutoff_retention)
        return now

    @staticmethod
    def _keep_an_enabled_admin(tx: UserChangeTx, user: UserRow) -> None:
        if user.role == "admin" and user.disabled_at is None and tx.other_enabled_admins() == 0:
            raise FailedPrecondition(
                "this is the org's last enabled admin: create or enable another admin first",
                reason="LAST_ADMIN",
            )

    def disable_user(self, caller: Principal, user_id: str) -> UserRow:
        """Disables a user of the caller's org and voids their sessions; idempotent."""
        target = validation.resource_id("id", user_id)
        with self._user_change(caller, target) as (tx, user):
            if user.disabled_at is not None:
                return user
            self._keep_an_enabled_admin(tx, user)
            user = tx.set_disabled_at(self._cut_off(tx))
            tx.audit(Actor.of(caller), "user.disable")
        log.info("user disabled", user_id=str(target))
        self._on_revoke()
        return user

    def enable_user(self, caller: Principal, user_id: str) -> UserRow:
        """Lets a disabled user of the caller's org sign in again; idempotent."""
        target = validation.resource_id("id", user_id)
        with self._user_change(caller, target) as (tx, user):
            if user.disabled_at is None:
                return user
            user = tx.set_disabled_at(None)
            tx.audit(Actor.of(caller), "user.enable")
        log.info("user enabled", user_id=str(target))
        return user

    def delete_user(self, caller: Principal, user_id: str) -> None:
        """Deletes a user of the caller's org and voids their sessions."""
        target = validation.resource_id("id", user_id)
        with self._user_change(caller, target) as (tx, user):
            self._keep_an_enabled_admin(tx, user)
            self._cut_off(tx)
            tx.delete()
            tx.audit(Actor.of(caller), "user.delete")
        log.info("user deleted", user_id=str(target))
        self._on_revoke()

    def revoke_user_sessions(self, caller: Principal, user_id: str) -> datetime:
        """Signs a user out everywhere: the caller themself, or (for an admin) any org user."""
        target = validation.resource_id("id", user_id)
        # Permission before existence: a member learns nothing about other ids.
        if str(target) != caller.subject_id and not caller.is_admin:
            raise PermissionDenied(
                "only an admin can sign out another user", reason="ADMIN_REQUIRED"
            )
        with self._user_change(caller, target) as (tx, _):
            cutoff = self._cut_off(tx)
            tx.audit(Actor.of(caller), "user.sessions.revoke")
        log.info("user signed out everywhere", user_id=str(target))
        self._on_revoke()
        return cutoff

    # Deployments.

    def create_deployment(self, caller: Principal, display_name: str) -> NewDeployment:
        """Creates a deployment; its token is returned here and never again."""
        name = validation.display_name("display_name", display_name)
        secret = deployment_token.new_secret()
        row = DeploymentRow(
            id=uuid.uuid4(),
            org_id=uuid.UUID(caller.org_id),
            display_name=name,
            secret_hash=_secret_hash(secret),
            creator_user_id=uuid.UUID(caller.subject_id),
            created_at=self._clock(),
            revoked_at=None,
        )
        self._store.create_deployment(
            row,
            Entry(
                row.org_id,
                Actor.of(caller),
                "deployment.create",
                "deployment",
                str(row.id),
                details={"display_name": name},
            ),
        )
        log.info("deployment created", deployment_id=str(row.id))
        token = deployment_token.wrap(
            deployment_token.DeploymentCredentials(deployment_id=str(row.id), secret=secret)
        )
        return NewDeployment(row, token)

    def get_deployment(self, caller: Principal, deployment_id: str) -> DeploymentRow:
        """A deployment of the caller's org."""
        row = self._store.get_deployment(
            uuid.UUID(caller.org_id), validation.resource_id("id", deployment_id)
        )
        if row is None:
            raise NotFound("deployment not found", reason="DEPLOYMENT_NOT_FOUND")
        return row

    def list_deployments(
        self, caller: Principal, page_size: int, page_token: str
    ) -> tuple[list[DeploymentRow], str]:
        """One page of the caller's org's deployments, and the next page token."""
        limit = paging.page_size(page_size)
        rows = self._store.list_deployments(
            uuid.UUID(caller.org_id), limit + 1, paging.decode_cursor(page_token)
        )
        return paging.page_of(rows, limit, lambda r: (r.created_at, r.id))

    def revoke_deployment(self, caller: Principal, deployment_id: str) -> DeploymentRow:
        """Revokes a deployment of the caller's org; revoking twice keeps the first time.

        The deployment leaves this replica's cache before the call returns, so its next
        exchange here fails at once; other replicas hear of it from Postgres (see
        services/auth/deployment_cache.py for the bounds).
        """
        target = validation.resource_id("id", deployment_id)
        try:
            row = self._store.revoke_deployment(
                uuid.UUID(caller.org_id),
                target,
                self._clock(),
                Entry(
                    caller.org_id, Actor.of(caller), "deployment.revoke", "deployment", str(target)
                ),
            )
        finally:
            # Even when the answer was lost: the commit may have happened all the same.
            self._deployments.forget(target)
        if row is None:
            raise NotFound("deployment not found", reason="DEPLOYMENT_NOT_FOUND")
        log.info("deployment revoked", deployment_id=str(row.id))
        self._on_revoke()
        return row

    def record_seen(self, deployment_id: str) -> None:
        """Records that the deployment's agent was seen now (it exchanged its token)."""
        self._store.record_deployment_seen(uuid.UUID(deployment_id), self._clock())

    def exchange(self, token: str) -> IssuedToken:
        """Trades a deployment token for a short-lived agent bearer; may read Postgres."""
        credentials = deployment_token.unwrap(token)
        deployment = self._proven(
            credentials, self._deployments.get(uuid.UUID(credentials.deployment_id))
        )
        return self._issue(PrincipalKind.AGENT, deployment.org_id, deployment.id, self._bearer_ttl)

    def exchange_in_memory(self, token: str) -> IssuedToken | None:
        """``exchange`` without any I/O, or None when it would need Postgres.

        That is when the deployment is not cached (or the cache is bypassed) or the signing
        keys are due for a reload. Refusals are the same as ``exchange``'s.
        """
        credentials = deployment_token.unwrap(token)
        cached = self._deployments.cached(uuid.UUID(credentials.deployment_id))
        if cached is None:
            return None
        deployment = self._proven(credentials, cached)
        claims, expires = self._claims(
            PrincipalKind.AGENT, deployment.org_id, deployment.id, self._bearer_ttl
        )
        signed = self._keys.sign_in_memory(claims)
        if signed is None:
            return None
        return IssuedToken(signed, expires, str(deployment.org_id), str(deployment.id))

    @staticmethod
    def _proven(
        credentials: deployment_token.DeploymentCredentials, deployment: DeploymentSecretRow | None
    ) -> DeploymentSecretRow:
        """The deployment, if the secret matches its hash and it is not revoked."""
        failure = Unauthenticated(
            "deployment token is not valid", reason="INVALID_DEPLOYMENT_TOKEN"
        )
        if deployment is None:
            raise failure
        if not hmac.compare_digest(deployment.secret_hash, _secret_hash(credentials.secret)):
            log.info("deployment token rejected", deployment_id=str(deployment.id))
            raise failure
        if deployment.revoked_at is not None:
            log.info("revoked deployment tried to exchange", deployment_id=str(deployment.id))
            raise Unauthenticated("deployment has been revoked", reason="DEPLOYMENT_REVOKED")
        return deployment


def _sign_in_entry(user: UserRow, source: str, *, refused: str | None = None) -> Entry:
    """A sign-in as the signed-in account's org records it: never the password.

    The actor is the account signed in to (for a refusal: the account someone tried), and
    ``source`` the network address the sign-in limiter counts by.
    """
    return Entry(
        user.org_id,
        Actor("user", str(user.id), user.email),
        "user.sign_in",
        "user",
        str(user.id),
        outcome="failure" if refused else "success",
        reason=refused,
        details={"source": source},
    )
