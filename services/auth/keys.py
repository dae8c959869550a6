"""Signing keys: creation, sealing at rest, rotation without failed requests.

Two key sets live here with one life: Ed25519 keys (EdDSA) for sevvo's own tokens, and P-256
keys (ES256) for the tokens Temporal's stock JWT authorizer verifies, since its JWKS key
provider accepts RSA and ECDSA keys only (services/auth/temporal_tokens.py).

A new key is published (GetPublicKeys) as soon as it is stored but signs only from
``activates_at``, a little more than two verifier refresh intervals later, so every verifier
already knows it when the first token signed by it arrives. The key it replaces keeps
verifying until the last token it signed has expired, then leaves the published set.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_der_private_key,
)

from services.auth.store import (
    SIGNING_KEYS,
    TEMPORAL_SIGNING_KEYS,
    AuthStore,
    Revocations,
    SigningKeyRow,
)
from services.auth.workload_store import WorkloadChanges, WorkloadStore
from sevvo.runtime.errors import Unavailable
from sevvo.runtime.logs import get_logger
from sevvo.runtime.sealing import CredentialsUnreadable, Keyring, Sealed
from sevvo.runtime.tokens import ALGORITHM, TrustState, VerificationKey

log = get_logger(__name__)
_NONCE_BYTES = 12


class KeyEncryptionKey:
    """Seals private keys at rest with AES-256-GCM; the kid is bound as associated data."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        # Identifies which key sealed a row without revealing anything about the key.
        self.key_id = kek_id_of(key)

    def __repr__(self) -> str:
        return f"KeyEncryptionKey(key_id={self.key_id!r})"

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        """Encrypts with a fresh nonce; returns nonce || ciphertext."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, associated)

    def open(self, sealed: bytes, associated: bytes) -> bytes:
        """Decrypts what ``seal`` produced for the same associated data."""
        return self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], associated)


def kek_id_of(key: bytes) -> str:
    """The id stored beside every row a key-encryption key seals (a hash, not the key)."""
    return hashlib.sha256(b"sevvo-kek-id" + key).hexdigest()[:16]


class KeyEncryptionKeys:
    """auth's key-encryption keys: the current one seals and opens; retired ones only open.

    Retired keys let a KEK rotate without downtime: rows sealed before the rotation still open
    until ``python -m services.auth rewrap`` has re-sealed them under the current key (rotation
    steps: deploy/k8s/README.md, "Rotating auth's key-encryption key").
    """

    def __init__(self, current: bytes, retired: Sequence[bytes] = ()) -> None:
        self.current = KeyEncryptionKey(current)
        self._raw = {kek_id_of(key): key for key in retired}
        self._raw[self.current.key_id] = current
        self._opening = {kek_id: KeyEncryptionKey(key) for kek_id, key in self._raw.items()}

    def __repr__(self) -> str:
        retired = sorted(set(self._opening) - {self.current.key_id})
        return f"KeyEncryptionKeys(current={self.current.key_id!r}, retired={retired!r})"

    @property
    def key_id(self) -> str:
        """The id of the key that seals new and re-sealed rows."""
        return self.current.key_id

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        """Seals under the current key (``KeyEncryptionKey.seal``)."""
        return self.current.seal(plaintext, associated)

    def opener(self, kek_id: str) -> KeyEncryptionKey | None:
        """The key that opens rows stored with ``kek_id``, or None when it is not configured."""
        return self._opening.get(kek_id)

    def keyring(self) -> Keyring:
        """These keys as a keyring by kek_id, the current one primary: what the shared rewrap
        walk (sevvo/runtime/rewrap.py) reads key ids from and hands to ``reseal``."""
        return Keyring(self.current.key_id, self._raw)


def reseal(keyring: Keyring, sealed: Sealed, associated: bytes) -> Sealed:
    """A signing key row's private key re-sealed under the keyring's primary KEK (rewrap).

    ``sealed`` is the row's kek_id and sealed private key, ``associated`` its kid. Returns
    ``sealed`` itself when it is already under the primary. Raises CredentialsUnreadable when
    the row's KEK is not in ``keyring`` or the row does not open, naming the kek_id only.
    """
    if sealed.key_id == keyring.primary_id:
        return sealed
    key = keyring.keys.get(sealed.key_id)
    if key is None:
        raise CredentialsUnreadable(
            f"sealed under key-encryption key {sealed.key_id!r}, which is not configured",
            reason="SEALED_KEY_UNKNOWN",
            metadata={"key_id": sealed.key_id[:64]},
        )
    try:
        private = KeyEncryptionKey(key).open(sealed.blob, associated)
    except InvalidTag:
        raise CredentialsUnreadable(
            f"sealed under key-encryption key {sealed.key_id!r} but does not open with it:"
            " the row is corrupted or belongs to another key",
            reason="SEALED_DATA_MISMATCH",
            metadata={"key_id": sealed.key_id[:64]},
        ) from None
    primary = KeyEncryptionKey(keyring.keys[keyring.primary_id])
    return Sealed(primary.key_id, primary.seal(private, associated))


class SigningAlgorithm(Protocol):
    """A JWS algorithm with its key set's table: how its keys are made, stored and used."""

    name: str
    table: str

    def generate(self) -> tuple[Any, bytes, bytes]:
        """A new private key, its private bytes to seal and its public bytes to publish."""
        ...

    def load(self, private_bytes: bytes) -> Any:
        """The private key from the bytes ``generate`` returned."""
        ...

    def sign(self, private_key: Any, signing_input: bytes) -> bytes:
        """The JWS signature (RFC 7515/7518 encoding) of ``signing_input``."""
        ...


class _EdDSA:
    name = ALGORITHM
    table = SIGNING_KEYS

    def generate(self) -> tuple[Any, bytes, bytes]:
        private = Ed25519PrivateKey.generate()
        raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return private, raw, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def load(self, private_bytes: bytes) -> Any:
        return Ed25519PrivateKey.from_private_bytes(private_bytes)

    def sign(self, private_key: Any, signing_input: bytes) -> bytes:
        signature: bytes = private_key.sign(signing_input)
        return signature


class _ES256:
    name = "ES256"
    table = TEMPORAL_SIGNING_KEYS

    def generate(self) -> tuple[Any, bytes, bytes]:
        private = ec.generate_private_key(ec.SECP256R1())
        der = private.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
        # The uncompressed point (0x04 || x || y): the JWKS publishes x and y from it.
        point = private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return private, der, point

    def load(self, private_bytes: bytes) -> Any:
        return load_der_private_key(private_bytes, password=None)

    def sign(self, private_key: Any, signing_input: bytes) -> bytes:
        # JWS wants r || s, 32 bytes each (RFC 7518 3.4), not the DER that cryptography emits.
        r, s = decode_dss_signature(private_key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


EDDSA: SigningAlgorithm = _EdDSA()
"""sevvo's own tokens (sessions, agent bearers), verified by sevvo/runtime/tokens.py."""
ES256: SigningAlgorithm = _ES256()
"""Temporal's tokens, verified by Temporal's default JWT claim mapper."""


@dataclass(frozen=True)
class _LoadedKey:
    kid: str
    private_key: Any
    activates_at: datetime
    # The encoded token header naming this key: built once per key, not once per token.
    header: bytes


class SigningKeys:
    """A set of auth's signing keys: signs tokens with the active key and rotates on schedule.

    ``refresh_interval`` is how often the keys' verifiers fetch the published keys (a new key
    signs only after two of those), and how often this process reloads them from the store.
    """

    def __init__(
        self,
        store: AuthStore,
        kek: KeyEncryptionKeys,
        *,
        max_token_ttl: timedelta,
        leeway: timedelta,
        refresh_interval: float,
        rotation_period: timedelta,
        algorithm: SigningAlgorithm = EDDSA,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self.algorithm = algorithm
        self._kek = kek
        self._max_token_ttl = max_token_ttl
        self._leeway = leeway
        self._refresh_interval = refresh_interval
        # Two refresh intervals plus a second: every verifier has polled at least once.
        self.publish_delay = timedelta(seconds=2 * refresh_interval + 1)
        self._rotation_period = rotation_period
        self._clock = clock
        self._loaded: list[_LoadedKey] = []
        self._loaded_at = 0.0
        self._lock = threading.Lock()

    def ensure_key(self) -> None:
        """Creates a first key, active at once, when the store has none."""
        with self._store.key_rotation(self.algorithm.table) as tx:
            if not tx.keys():
                now = self._clock()
                tx.insert(self._new_row(now, activates_at=now))
                log.info("first signing key created")
        self._reload()

    def rotate(self) -> str:
        """Publishes a new key that takes over after the publish delay; returns its kid.

        A rotation already pending is returned instead of starting another, so repeated calls
        (or two replicas on schedule) converge on one new key.
        """
        now = self._clock()
        with self._store.key_rotation(self.algorithm.table) as tx:
            keys = tx.keys()
            pending = [k for k in keys if k.activates_at > now]
            if pending:
                return pending[0].kid
            row = self._new_row(now, activates_at=now + self.publish_delay)
            tx.insert(row)
            # Tokens from the old key are signed until activation and live max_token_ttl.
            tx.retire_all_but(row.kid, row.activates_at + self._max_token_ttl + self._leeway)
            removed = tx.delete_expired(now - timedelta(days=1))
        log.info("signing key rotation started", kid=row.kid, removed_keys=removed)
        self._reload()
        return row.kid

    def _new_row(self, now: datetime, *, activates_at: datetime) -> SigningKeyRow:
        _, raw_private, public = self.algorithm.generate()
        kid = f"k{int(now.timestamp())}-{secrets.token_hex(4)}"
        return SigningKeyRow(
            kid=kid,
            public_key=public,
            sealed_private_key=self._kek.seal(raw_private, kid.encode()),
            kek_id=self._kek.key_id,
            created_at=now,
            activates_at=activates_at,
            verify_until=None,
        )

    def _reload(self) -> None:
        loaded: list[_LoadedKey] = []
        now = self._clock()
        for row in self._store.signing_keys(self.algorithm.table):
            if row.verify_until is not None and row.verify_until <= now:
                continue  # Expired keys neither sign nor verify.
            kek = self._kek.opener(row.kek_id)
            if kek is None:
                raise Unavailable(
                    f"signing key {row.kid} is sealed under key-encryption key {row.kek_id!r},"
                    " which is neither SEVVO_AUTH_KEK nor among SEVVO_AUTH_RETIRED_KEKS",
                    reason="SIGNING_KEY_SEALED_ELSEWHERE",
                )
            try:
                raw = kek.open(row.sealed_private_key, row.kid.encode())
            except InvalidTag:
                raise Unavailable(
                    f"signing key {row.kid} failed to decrypt", reason="SIGNING_KEY_CORRUPT"
                ) from None
            loaded.append(
                _LoadedKey(
                    row.kid,
                    self.algorithm.load(raw),
                    row.activates_at,
                    header_for(row.kid, self.algorithm.name),
                )
            )
        self._loaded = loaded
        self._loaded_at = time.monotonic()

    def _reload_due(self) -> bool:
        return time.monotonic() - self._loaded_at > self._refresh_interval

    def _active(self) -> _LoadedKey:
        if self._reload_due():
            with self._lock:
                if self._reload_due():  # Another thread may have reloaded while we waited.
                    self._reload()
                    self._maybe_rotate_on_schedule()
        return self._newest_usable()

    def _newest_usable(self) -> _LoadedKey:
        now = self._clock()
        usable = [k for k in self._loaded if k.activates_at <= now]
        if not usable:
            raise Unavailable("no signing key is active", reason="NO_SIGNING_KEY")
        return max(usable, key=lambda k: k.activates_at)

    def _maybe_rotate_on_schedule(self) -> None:
        now = self._clock()
        if self._loaded and all(k.activates_at <= now for k in self._loaded):
            newest = max(k.activates_at for k in self._loaded)
            if now - newest > self._rotation_period:
                self.rotate()

    def has_active_key(self) -> bool:
        """Whether a key that may sign now is loaded (no I/O: for readiness checks)."""
        now = self._clock()
        return any(k.activates_at <= now for k in self._loaded)

    def sign(self, claims: Mapping[str, Any]) -> str:
        """Signs claims with the active key, naming it in the ``kid`` header; may read Postgres."""
        key = self._active()
        return _encode(claims, self.algorithm, key.private_key, key.header)

    def sign_in_memory(self, claims: Mapping[str, Any]) -> str | None:
        """``sign`` without I/O, for the event loop; None when the keys are due for a reload."""
        if self._reload_due():
            return None
        key = self._newest_usable()
        return _encode(claims, self.algorithm, key.private_key, key.header)


# Compact JSON, as PyJWT writes it; one encoder, not one built per token by json.dumps.
_JSON = json.JSONEncoder(separators=(",", ":"))


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def header_for(kid: str, algorithm: str = ALGORITHM) -> bytes:
    """The encoded JOSE header of tokens signed by key ``kid``."""
    return _b64(_JSON.encode({"alg": algorithm, "kid": kid, "typ": "JWT"}).encode())


def encode(claims: Mapping[str, Any], private_key: Ed25519PrivateKey, header: bytes) -> str:
    """The JWS compact serialization (RFC 7515) of ``claims``, signed with EdDSA.

    The very bytes jwt.encode produces, without the work PyJWT repeats on every call (25-50
    µs measured here, beside the signature's ~45 µs), which a token exchange pays each time:
    the header is encoded once per key, and the claims, built by auth itself, are not
    re-validated. Verifiers still decode with PyJWT (sevvo/runtime/tokens.py), and
    tests/test_auth_tokens.py checks that both encodings agree byte for byte. ``header``
    comes from ``header_for``.
    """
    return _encode(claims, EDDSA, private_key, header)


def _encode(
    claims: Mapping[str, Any], algorithm: SigningAlgorithm, private_key: Any, header: bytes
) -> str:
    signing_input = header + b"." + _b64(_JSON.encode(claims).encode())
    return (signing_input + b"." + _b64(algorithm.sign(private_key, signing_input))).decode()


class StoreTrustSource:
    """The trust state as auth's store holds it: published keys and recent revocations.

    ``workload_window`` is how long a workload's revocation or change is listed: as long as a
    bearer issued before it (or, from a replica's cache, just after it) can be unexpired.
    """

    def __init__(
        self,
        store: AuthStore,
        *,
        revocation_window: timedelta,
        leeway: timedelta,
        workloads: WorkloadStore,
        workload_window: timedelta,
    ) -> None:
        self._store = store
        self._revocation_window = revocation_window
        self._leeway = leeway
        self._workloads = workloads
        self._workload_window = workload_window

    def published_keys(self, now: datetime | None = None) -> list[VerificationKey]:
        """Keys a verifier should accept: current and pending ones, and retired ones still valid."""
        now = now or datetime.now(UTC)
        return [
            VerificationKey(
                kid=row.kid,
                public_key=Ed25519PublicKey.from_public_bytes(row.public_key),
                not_before=row.activates_at,
                verify_until=row.verify_until,
            )
            for row in self._store.signing_keys()
            if row.verify_until is None or row.verify_until > now
        ]

    def revoked(self, now: datetime | None = None) -> dict[str, datetime]:
        """Deployments revoked within the longest bearer lifetime, by id."""
        now = now or datetime.now(UTC)
        return {
            str(deployment_id): at
            for deployment_id, at in self._store.revoked_since(now - self._revocation_window)
        }

    def workload_changes(self, now: datetime | None = None) -> WorkloadChanges:
        """Workloads revoked, or whose grants changed, within the longest workload bearer's life."""
        now = now or datetime.now(UTC)
        return self._workloads.changes_since(now - self._workload_window)

    def revoked_sessions(self, now: datetime | None = None) -> Revocations:
        """Signed-out sessions and per-user cutoffs that may still refuse an unexpired token."""
        return self._store.revocations(now or datetime.now(UTC), self._leeway)

    def fetch(self) -> TrustState:
        """Reads keys and revocations for the in-process verifier."""
        keys = self.published_keys()
        sessions = self.revoked_sessions()
        workloads = self.workload_changes()
        return TrustState(
            keys={k.kid: k for k in keys},
            revoked_deployments=self.revoked(),
            revoked_sessions=sessions.sessions,
            sessions_valid_after=sessions.cutoffs,
            revoked_workloads=workloads.revoked,
            workload_generations={
                workload_id: generation
                for workload_id, (generation, _) in workloads.generations.items()
            },
        )
