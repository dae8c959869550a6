"""Envelope encryption (AES-256-GCM) for credential payloads at rest, with rotating keys by id."""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

import grpc
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sevvo.runtime.config import ConfigError, optional_string, required_secret
from sevvo.runtime.errors import SevvoError
from sevvo.runtime.files import write_private_file
from sevvo.runtime.logs import get_logger
from sevvo.runtime.watched_files import DEFAULT_CHECK_SECONDS, FileWatch

_log = get_logger(__name__)

KEY_BYTES = 32
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")

_VERSION = 1
_NONCE_BYTES = 12
_TAG_BYTES = 16
_WRAPPED_KEY_BYTES = _NONCE_BYTES + KEY_BYTES + _TAG_BYTES
_PAYLOAD_OFFSET = 1 + _WRAPPED_KEY_BYTES
_MIN_BLOB_BYTES = _PAYLOAD_OFFSET + _NONCE_BYTES + _TAG_BYTES
# Distinct labels keep a wrapped data key and a payload from ever authenticating as each other,
# and a future format version from accepting this one's ciphertexts.
_WRAP_LABEL = b"sevvo.sealing.v1.data-key\x00"
_PAYLOAD_LABEL = b"sevvo.sealing.v1.payload\x00"


class CredentialsUnreadable(SevvoError):
    """Sealed credentials cannot be opened with this keyring; ``reason`` says why.

    FAILED_PRECONDITION rather than INTERNAL: the request is valid and the server is not
    broken; the stored record cannot be opened until someone acts (an operator restores the
    key or rewraps, or the user saves the credentials again). Retrying will not help, and
    INTERNAL would hide that actionable state behind "internal error".
    """

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "CREDENTIALS_UNREADABLE"


@dataclass(frozen=True)
class Keyring:
    """Key-encryption keys by id; ``primary_id`` seals, every key still opens what it sealed."""

    primary_id: str
    keys: Mapping[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        problem = _keyring_problem(self.primary_id, self.keys)
        if problem is not None:
            raise ConfigError(f"keyring: {problem}")
        # A read-only copy, so a keyring cannot change under code that holds it.
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))

    def __repr__(self) -> str:
        return f"Keyring(primary_id={self.primary_id!r}, key_ids={tuple(sorted(self.keys))!r})"

    def current(self) -> Keyring:
        """This keyring itself: a fixed keyring never changes (compare KeyringFile)."""
        return self

    @classmethod
    def from_json(cls, text: str, source: str) -> Keyring:
        """Parses ``{"primary": id, "keys": {id: base64}}``; errors name ``source``, not keys."""
        try:
            document = json.loads(text, object_pairs_hook=_reject_duplicates)
        except _DuplicateField as exc:
            raise ConfigError(f"{source}: keyring names {_shown(exc.name)} twice") from None
        except json.JSONDecodeError as exc:
            # exc.msg and the position describe the problem without quoting the document.
            raise ConfigError(
                f"{source}: keyring is not valid JSON ({exc.msg} at line {exc.lineno} "
                f"column {exc.colno})"
            ) from None
        if not isinstance(document, dict):
            raise ConfigError(f'{source}: keyring must be a JSON object with "primary" and "keys"')
        unknown = sorted(set(document) - {"primary", "keys"})
        if unknown:
            raise ConfigError(f"{source}: keyring has unknown fields {_names(unknown)}")
        primary = document.get("primary")
        if not isinstance(primary, str):
            raise ConfigError(f'{source}: keyring needs "primary", the id of the key that seals')
        encoded = document.get("keys")
        if not isinstance(encoded, dict) or not encoded:
            raise ConfigError(f'{source}: keyring needs "keys", an object of id: base64 key')
        keys: dict[str, bytes] = {}
        for key_id, value in encoded.items():
            if not KEY_ID_PATTERN.fullmatch(key_id):
                raise ConfigError(f"{source}: {_id_problem(key_id)}")
            if not isinstance(value, str):
                raise ConfigError(f"{source}: key {key_id!r} must be a base64 string")
            try:
                keys[key_id] = base64.b64decode(value.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError(f"{source}: key {key_id!r} is not valid base64") from None
        try:
            return cls(primary, keys)
        except ConfigError as exc:
            problem = str(exc).removeprefix("keyring: ")
            raise ConfigError(f"{source}: {problem}") from None

    @classmethod
    def generate(cls, key_id: str | None = None) -> Keyring:
        """A keyring holding one fresh random key, which is primary."""
        key_id = _new_key_id() if key_id is None else key_id
        return cls(key_id, {key_id: AESGCM.generate_key(bit_length=256)})

    def to_json(self) -> str:
        """The keyring in the form ``from_json`` reads; it holds the keys, so store it secret."""
        document = {
            "primary": self.primary_id,
            "keys": {
                key_id: base64.b64encode(key).decode("ascii")
                for key_id, key in sorted(self.keys.items())
            },
        }
        return json.dumps(document, indent=2) + "\n"

    def with_new_primary(self, key_id: str | None = None) -> Keyring:
        """Adds a fresh key as primary; older keys stay so existing blobs still open."""
        key_id = _new_key_id() if key_id is None else key_id
        if key_id in self.keys:
            raise ConfigError(f"keyring: key {key_id!r} already exists; choose a new id")
        return Keyring(key_id, {**self.keys, key_id: AESGCM.generate_key(bit_length=256)})

    def without(self, key_id: str) -> Keyring:
        """Drops a retired key (after every blob sealed under it has been rewrapped)."""
        if key_id == self.primary_id:
            raise ConfigError(f"keyring: key {key_id!r} is primary and cannot be removed")
        if key_id not in self.keys:
            raise ConfigError(f"keyring: there is no key {key_id!r} to remove")
        return Keyring(self.primary_id, {k: v for k, v in self.keys.items() if k != key_id})


class KeyringFile:
    """A keyring read from a mounted file and read again when the file changes.

    Rotation adds a key to the Secret and makes it primary; the kubelet swaps the file in
    place and, within ``check_seconds``, this process seals under the new key and opens what
    other replicas sealed under it, without a restart. A changed file that does not parse
    (or drops the primary, or is cut short) leaves the last good keyring in use and is
    reported once with the parser's message, which names the variable and key ids, never
    key material.
    """

    def __init__(
        self,
        path: Path,
        source: str,
        *,
        check_seconds: float = DEFAULT_CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._source = source
        self._watch = FileWatch([path], check_seconds=check_seconds, clock=clock)
        # At start a bad file is a ConfigError naming the variable: the process does not start.
        self._keyring = self._read()

    def __repr__(self) -> str:
        return f"KeyringFile({str(self.path)!r}, {self._keyring!r})"

    def _read(self) -> Keyring:
        try:
            text = self.path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            problem = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(
                f"{self._source} names {self.path}, which cannot be read: {problem}"
            ) from None
        if not text:
            raise ConfigError(f"{self._source} names {self.path}, which is empty")
        return Keyring.from_json(text, self._source)

    def current(self) -> Keyring:
        """The keyring in the file now, or the last good one while the file is unusable."""
        changed = self._watch.changed()
        if changed is not None:
            self._watch.take(changed)
            try:
                keyring = self._read()
            except ConfigError as exc:
                _log.warning(
                    "keyring file changed but cannot be used; keeping the previous keyring",
                    problem=str(exc),
                    key_ids=sorted(self._keyring.keys),
                )
            else:
                if keyring != self._keyring:
                    _log.info(
                        "keyring reloaded",
                        source=self._source,
                        primary=keyring.primary_id,
                        key_ids=sorted(keyring.keys),
                    )
                self._keyring = keyring
        return self._keyring

    @property
    def primary_id(self) -> str:
        """The id of the key that seals now."""
        return self.current().primary_id

    @property
    def keys(self) -> Mapping[str, bytes]:
        """The keys by id now."""
        return self.current().keys


KeySource = Keyring | KeyringFile
"""A keyring, fixed or read from a file; ``current()`` gives the keyring to use for one call."""


def load_keyring(env: Mapping[str, str], variable: str) -> KeySource:
    """The keyring named by ``VARIABLE_FILE`` (a mounted file, re-read when it changes) or
    held in ``VARIABLE`` (fixed until restart); raises ConfigError naming the variable."""
    file_name = optional_string(env, f"{variable}_FILE")
    if file_name is not None:
        return KeyringFile(Path(file_name), f"{variable}_FILE")
    return Keyring.from_json(required_secret(env, variable), variable)


def write_keyring_file(path: Path, keyring: Keyring) -> None:
    """Writes the keyring to ``path`` with mode 0600, atomically replacing any existing file."""
    write_private_file(path, keyring.to_json())


@dataclass(frozen=True)
class Sealed:
    """A sealed payload: the id of the key that wrapped its data key, and the versioned blob.

    The blob is ``version (1 byte) || wrap nonce (12) || wrapped data key (32 + 16 tag)
    || payload nonce (12) || payload ciphertext + tag (16)``.
    """

    key_id: str
    blob: bytes

    def __repr__(self) -> str:
        return f"Sealed(key_id={self.key_id!r}, blob=<{len(self.blob)} bytes>)"


def seal(source: KeySource, plaintext: bytes, aad: bytes) -> Sealed:
    """Encrypts ``plaintext`` under a fresh data key wrapped by the primary key.

    ``aad`` names the record the payload belongs to (e.g. org id + connection id); opening
    needs the same bytes, so a blob copied to another record does not open.
    """
    keyring = source.current()
    data_key = AESGCM.generate_key(bit_length=256)
    # Each data key encrypts exactly one payload, so nonce reuse under it is impossible; the
    # random wrap nonce keeps well inside GCM's limit for one key-encryption key.
    payload_nonce = secrets.token_bytes(_NONCE_BYTES)
    payload = AESGCM(data_key).encrypt(payload_nonce, plaintext, _PAYLOAD_LABEL + aad)
    wrapped = _wrap(keyring, keyring.primary_id, data_key, aad)
    return Sealed(keyring.primary_id, bytes([_VERSION]) + wrapped + payload_nonce + payload)


def unseal(source: KeySource, sealed: Sealed, aad: bytes) -> bytes:
    """Decrypts what ``seal`` produced for the same ``aad``; raises CredentialsUnreadable."""
    keyring = source.current()
    wrapped, payload = _split(sealed)
    data_key = _unwrap(keyring, sealed.key_id, wrapped, aad)
    return _open_payload(sealed.key_id, data_key, payload, aad)


def rewrap(source: KeySource, sealed: Sealed, aad: bytes) -> Sealed:
    """Re-wraps the data key under the primary key; the payload ciphertext is kept as is.

    Returns ``sealed`` itself when it is already under the primary, so a rotation job can
    write back only what changed.
    """
    keyring = source.current()
    if sealed.key_id == keyring.primary_id:
        return sealed
    wrapped, payload = _split(sealed)
    data_key = _unwrap(keyring, sealed.key_id, wrapped, aad)
    # Open the payload too, so rotation reports a damaged record now rather than carrying it
    # forward under a new key to fail on some later read.
    _open_payload(sealed.key_id, data_key, payload, aad)
    rewrapped = _wrap(keyring, keyring.primary_id, data_key, aad)
    return Sealed(keyring.primary_id, bytes([_VERSION]) + rewrapped + payload)


def _wrap(keyring: Keyring, key_id: str, data_key: bytes, aad: bytes) -> bytes:
    nonce = secrets.token_bytes(_NONCE_BYTES)
    wrap_aad = _wrap_aad(key_id, aad)
    return nonce + AESGCM(keyring.keys[key_id]).encrypt(nonce, data_key, wrap_aad)


def _unwrap(keyring: Keyring, key_id: str, wrapped: bytes, aad: bytes) -> bytes:
    key = keyring.keys.get(key_id)
    if key is None:
        raise CredentialsUnreadable(
            f"sealed credentials name key {_shown(key_id)}, which is not in the keyring: "
            "restore that key to the keyring, or rewrap the record before removing a key",
            reason="SEALED_KEY_UNKNOWN",
            metadata={"key_id": key_id[:64]},
        )
    try:
        data_key = AESGCM(key).decrypt(
            wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], _wrap_aad(key_id, aad)
        )
    except InvalidTag:
        raise _mismatch(key_id) from None
    return data_key


def _open_payload(key_id: str, data_key: bytes, payload: bytes, aad: bytes) -> bytes:
    try:
        return AESGCM(data_key).decrypt(
            payload[:_NONCE_BYTES], payload[_NONCE_BYTES:], _PAYLOAD_LABEL + aad
        )
    except InvalidTag:
        raise _mismatch(key_id) from None


def _split(sealed: Sealed) -> tuple[bytes, bytes]:
    """The wrapped data key and the payload (nonce + ciphertext) of a version 1 blob."""
    blob = sealed.blob
    if not blob:
        raise _format_error("the sealed payload is empty")
    if blob[0] != _VERSION:
        raise _format_error(f"the sealed payload has unknown format version {blob[0]}")
    if len(blob) < _MIN_BLOB_BYTES:
        raise _format_error(
            f"the sealed payload is truncated ({len(blob)} bytes, at least {_MIN_BLOB_BYTES})"
        )
    return blob[1:_PAYLOAD_OFFSET], blob[_PAYLOAD_OFFSET:]


def _wrap_aad(key_id: str, aad: bytes) -> bytes:
    # The key id is length-prefixed so no (key id, aad) pair can be read as another one.
    encoded = key_id.encode("ascii")
    return _WRAP_LABEL + bytes([len(encoded)]) + encoded + aad


def _mismatch(key_id: str) -> CredentialsUnreadable:
    return CredentialsUnreadable(
        f"sealed credentials under key {_shown(key_id)} failed authentication: the sealed "
        "payload is corrupted or belongs to another record",
        reason="SEALED_DATA_MISMATCH",
        metadata={"key_id": key_id[:64]},
    )


def _format_error(problem: str) -> CredentialsUnreadable:
    return CredentialsUnreadable(
        f"sealed credentials cannot be read: {problem}", reason="SEALED_FORMAT"
    )


def _keyring_problem(primary_id: str, keys: Mapping[str, bytes]) -> str | None:
    for key_id, key in keys.items():
        if not isinstance(key_id, str) or not KEY_ID_PATTERN.fullmatch(key_id):
            return _id_problem(key_id)
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            size = f"{len(key)} bytes" if isinstance(key, bytes) else type(key).__name__
            return f"key {key_id!r} must be {KEY_BYTES} bytes, got {size}"
    if primary_id not in keys:
        return f"primary key {_shown(primary_id)} is not among the keys {_names(sorted(keys))}"
    return None


def _id_problem(key_id: object) -> str:
    return f"key id {_shown(key_id)} must match {KEY_ID_PATTERN.pattern} (1-64 characters)"


def _shown(value: object) -> str:
    """A value for a message, cut short: ids are not secret but may come from damaged input."""
    text = repr(value)
    return text if len(text) <= 70 else text[:66] + "...'"


class _DuplicateField(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # json.loads keeps the last of two equal names; for a keyring that would silently drop a
    # key that blobs may still be sealed under.
    document: dict[str, object] = {}
    for name, value in pairs:
        if name in document:
            raise _DuplicateField(name)
        document[name] = value
    return document


def _names(names: list[str]) -> str:
    return ", ".join(_shown(name) for name in names)


def _new_key_id() -> str:
    # Date first so operators can tell keys' ages apart; random suffix so ids never collide.
    return f"k{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"
