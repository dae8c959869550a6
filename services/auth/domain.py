"""auth's rules: sign-in, sessions, deployments and the token exchange.

Every method that acts for a caller takes the verified Principal and uses its ``org_id``;
no org id is ever read from a request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.auth import passwords
from services.auth.keys import SigningKeys
from services.auth.store import AuthStore, DeploymentRow, OrgRow, UserRow
from sevvo.runtime import deployment_token, paging, validation
from sevvo.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from sevvo.runtime.logs import get_logger
from sevvo.runtime.tokens import ISSUER, Principal, PrincipalKind

log = get_logger(__name__)

_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}$")
ROLES = ("admin", "member")
_BOOTSTRAP_FIELDS = {"email": "admin_email", "password": "admin_password"}


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


def _secret_hash(secret: str) -> bytes:
    # The secret is 256 random bits, so a fast hash is enough; a KDF would only slow exchange.
    return hashlib.sha256(secret.encode()).digest()


def normalize_email(email: str) -> str:
    """Lower-cases and validates an email address."""
    email = email.strip().lower()
    if not _EMAIL_RE.match(email):
        raise InvalidArgument("email", "must be an email address such as ada@example.com")
    return email


def validate_password(password: str) -> None:
    """Enforces the length rules for a new password."""
    if len(password) < passwords.MIN_LENGTH:
        raise InvalidArgument("password", f"must be at least {passwords.MIN_LENGTH} characters")
    if len(password) > passwords.MAX_LENGTH:
        raise InvalidArgument("password", f"must be at most {passwords.MAX_LENGTH} characters")


class AuthDomain:
    """The operations behind AuthService, UserService and DeploymentService."""

    def __init__(
        self,
        store: AuthStore,
        keys: SigningKeys,
        *,
        session_ttl: timedelta,
        bearer_ttl: timedelta,
        on_revoke: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        bootstrap_token: str | None = None,
    ) -> None:
        self._store = store
        self._bootstrap_token = bootstrap_token
        self._keys = keys
        self._session_ttl = session_ttl
        self._bearer_ttl = bearer_ttl
        self._on_revoke = on_revoke
        self._clock = clock

    def _issue(
        self,
        kind: PrincipalKind,
        org_id: uuid.UUID,
        subject: uuid.UUID,
        ttl: timedelta,
        role: str | None = None,
    ) -> IssuedToken:
        now = self._clock()
        expires = now + ttl
        claims: dict[str, object] = {
            "iss": ISSUER,
            "aud": kind.audience,
            "sub": str(subject),
            "org_id": str(org_id),
            "kind": kind.value,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": uuid.uuid4().hex,
        }
        if role is not None:
            claims["role"] = role
        return IssuedToken(self._keys.sign(claims), expires, str(org_id), str(subject))

    # Orgs and users.

    def bootstrap_org(
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
            return self.create_org_with_admin(org_name, email, password, unique_name=True)
        except InvalidArgument as invalid:
            # Name the field as BootstrapOrgRequest spells it.
            field = _BOOTSTRAP_FIELDS.get(invalid.field, invalid.field)
            raise InvalidArgument(field, invalid.description, reason=invalid.reason) from None

    def create_org_with_admin(
        self, org_name: str, email: str, password: str, *, unique_name: bool = False
    ) -> UserRow:
        """Bootstraps an org and its first admin user."""
        name = validation.display_name("org_name", org_name)
        email = normalize_email(email)
        validate_password(password)
        now = self._clock()
        org = OrgRow(id=uuid.uuid4(), name=name, created_at=now)
        admin = UserRow(
            id=uuid.uuid4(),
            org_id=org.id,
            email=email,
            password_hash=passwords.hash_password(password),
            role="admin",
            created_at=now,
        )
        self._store.create_org_with_admin(org, admin, unique_name=unique_name)
        log.info("org created", org_id=str(org.id), admin_user_id=str(admin.id))
        return admin

    def sign_in(self, email: str, password: str) -> IssuedToken:
        """Checks email and password; the error never says which of the two was wrong."""
        failure = Unauthenticated("email or password is incorrect", reason="INVALID_CREDENTIALS")
        if not email.strip() or not password:
            raise failure
        user = self._store.user_by_email(email.strip())
        if user is None:
            passwords.verify_password(password, passwords.dummy_hash())
            raise failure
        if not passwords.verify_password(password, user.password_hash):
            log.info("sign-in failed", user_id=str(user.id))
            raise failure
        log.info("signed in", user_id=str(user.id), org_id=str(user.org_id))
        return self._issue(PrincipalKind.USER, user.org_id, user.id, self._session_ttl, user.role)

    def create_user(self, caller: Principal, email: str, password: str, role: str) -> UserRow:
        """Creates a user in the caller's org."""
        email = normalize_email(email)
        validate_password(password)
        if role not in ROLES:
            raise InvalidArgument("role", "must be USER_ROLE_MEMBER or USER_ROLE_ADMIN")
        user = UserRow(
            id=uuid.uuid4(),
            org_id=uuid.UUID(caller.org_id),
            email=email,
            password_hash=passwords.hash_password(password),
            role=role,
            created_at=self._clock(),
        )
        self._store.create_user(user)
        log.info("user created", user_id=str(user.id), role=role)
        return user

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
        self._store.create_deployment(row)
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
        """Revokes a deployment of the caller's org; revoking twice keeps the first time."""
        row = self._store.revoke_deployment(
            uuid.UUID(caller.org_id), validation.resource_id("id", deployment_id), self._clock()
        )
        if row is None:
            raise NotFound("deployment not found", reason="DEPLOYMENT_NOT_FOUND")
        log.info("deployment revoked", deployment_id=str(row.id))
        self._on_revoke()
        return row

    def exchange(self, token: str) -> IssuedToken:
        """Trades a deployment token for a short-lived agent bearer."""
        credentials = deployment_token.unwrap(token)
        failure = Unauthenticated(
            "deployment token is not valid", reason="INVALID_DEPLOYMENT_TOKEN"
        )
        row = self._store.deployment_by_id(uuid.UUID(credentials.deployment_id))
        if row is None:
            raise failure
        if not hmac.compare_digest(row.secret_hash, _secret_hash(credentials.secret)):
            log.info("deployment token rejected", deployment_id=str(row.id))
            raise failure
        if row.revoked_at is not None:
            log.info("revoked deployment tried to exchange", deployment_id=str(row.id))
            raise Unauthenticated("deployment has been revoked", reason="DEPLOYMENT_REVOKED")
        return self._issue(PrincipalKind.AGENT, row.org_id, row.id, self._bearer_ttl)
