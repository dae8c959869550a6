"""Encryption of every Temporal payload with per-org keys, so the Temporal server holds ciphertext.

The orchestrator (which starts workflows) and the customer-side agent (which runs them) build
their Temporal clients and workers with :func:`data_converter`. Each payload becomes
``nonce || AES-256-GCM(payload proto)`` under the org's current payload key, authenticated
together with the org id and key id. Failure messages and stack traces are moved into an
encoded attribute first, so they are encrypted as well.

What the server still sees in clear, by Temporal's design: workflow and activity type names,
workflow ids, task queues, search attributes, timestamps and failure *types* (the exception
class name). None of those may carry customer data or secrets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import grpc
import temporalio.converter
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload

from sevvo.runtime.config import ConfigError
from sevvo.runtime.errors import SevvoError
from sevvo.runtime.logs import get_logger
from sevvo.runtime.sealing import KEY_BYTES, KEY_ID_PATTERN

log = get_logger(__name__)

ENCODING = b"binary/encrypted"
"""The ``encoding`` metadata of an encrypted payload."""

KEY_ID_METADATA = "encryption-key-id"
"""Metadata naming the payload key that encrypted a payload."""

_NONCE_BYTES = 12
_TAG_BYTES = 16
# A distinct label keeps these ciphertexts from ever authenticating as another sevvo format
# (sealing uses its own labels), and a future v2 from accepting v1's.
_AAD_LABEL = b"sevvo.payload-codec.v1\x00"


class PayloadUnreadable(SevvoError):
    """A Temporal payload cannot be decrypted here; ``reason`` says why.

    FAILED_PRECONDITION, like sealed credentials: retrying the same bytes will not help until
    someone acts (installs the missing key, or stops sending plaintext).
    """

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "PAYLOAD_UNREADABLE"


class PayloadKeyUnknown(PayloadUnreadable):
    """A payload names a key id this process does not hold (not fetched yet, or retired)."""

    default_reason = "PAYLOAD_KEY_UNKNOWN"

    def __init__(self, org_id: str, key_id: str) -> None:
        shown = _shown(key_id)
        super().__init__(
            f"payload key {shown} of org {_shown(org_id)} is not among this process's keys; "
            "fetch the org's current payload keys and retry",
            metadata={"key_id": key_id[:64]},
        )
        self.key_id = key_id


@dataclass(frozen=True)
class PayloadKey:
    """One AES-256 payload key and the id that payloads encrypted under it carry."""

    key_id: str
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, str) or not KEY_ID_PATTERN.fullmatch(self.key_id):
            raise ConfigError(
                f"payload key id {_shown(self.key_id)} must match {KEY_ID_PATTERN.pattern}"
            )
        if not isinstance(self.key, bytes) or len(self.key) != KEY_BYTES:
            size = f"{len(self.key)} bytes" if isinstance(self.key, bytes) else "not bytes"
            raise ConfigError(f"payload key {self.key_id!r} must be {KEY_BYTES} bytes, got {size}")

    @classmethod
    def generate(cls, key_id: str) -> PayloadKey:
        """A fresh random key under ``key_id``."""
        return cls(key_id, AESGCM.generate_key(bit_length=KEY_BYTES * 8))


@dataclass(frozen=True)
class _KeySet:
    """One consistent snapshot: readers never see a current id without its key."""

    current: PayloadKey
    by_id: Mapping[str, PayloadKey]


class OrgPayloadKeys:
    """An org's payload keys by id; the current one encrypts, any held one decrypts.

    An agent starts with the keys it was given and installs rotated ones with :meth:`update`
    while workers run; the codec reads one immutable snapshot per payload, so an update never
    pairs one key id with another key's bytes.
    """

    def __init__(self, org_id: str, keys: Iterable[PayloadKey], current_id: str) -> None:
        """Hold ``keys`` for ``org_id``; ``current_id`` names the key new payloads use."""
        if not isinstance(org_id, str) or not org_id:
            raise ConfigError("payload keys need a non-empty org id")
        self._org_id = org_id
        self._lock = threading.Lock()
        self._keys = _key_set(keys, current_id)

    @property
    def org_id(self) -> str:
        """The org every payload is bound to."""
        return self._org_id

    @property
    def current_id(self) -> str:
        """Id of the key new payloads are encrypted with."""
        return self._keys.current.key_id

    @property
    def key_ids(self) -> frozenset[str]:
        """Ids of every key held (for logs and health checks; never the keys)."""
        return frozenset(self._keys.by_id)

    def current(self) -> PayloadKey:
        """The key to encrypt with."""
        return self._keys.current

    def get(self, key_id: str) -> PayloadKey:
        """The key named ``key_id``; raises :class:`PayloadKeyUnknown` if it is not held."""
        key = self._keys.by_id.get(key_id)
        if key is None:
            raise PayloadKeyUnknown(self._org_id, key_id)
        return key

    def update(self, keys: Iterable[PayloadKey], current_id: str) -> None:
        """Replace the held keys with ``keys`` (the org's complete set) and make ``current_id``
        current.

        The set is replaced, not merged, so a key the control plane retired stops decrypting
        here too; keys still needed for histories in flight must be part of ``keys``. On a
        validation error nothing changes.
        """
        new = _key_set(keys, current_id)
        # Building the snapshot outside the lock and swapping one reference inside it keeps
        # readers lock-free; the lock only orders concurrent updates.
        with self._lock:
            self._keys = new

    def __repr__(self) -> str:
        keys = self._keys
        return (
            f"OrgPayloadKeys(org_id={self._org_id!r}, current_id={keys.current.key_id!r}, "
            f"key_ids={tuple(sorted(keys.by_id))!r})"
        )


class KeyRefresher:
    """Fetches an org's keys again when a payload names a key this process does not hold.

    Keys rotate (on a schedule, by an operator, when a deployment is revoked), and work started
    under a new key can reach a process before its periodic refresh does. Each caller gets a
    fetch that started after it asked, so a payload under a key created a moment ago is
    readable on the retry; fetches run one at a time, at most one per ``min_interval`` seconds,
    so payloads naming made-up key ids cannot turn into a flood of key requests.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[object]],
        *,
        min_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``fetch`` installs the org's current keys (raising when it cannot)."""
        self._fetch = fetch
        self._min_interval = min_interval
        self._clock = clock
        self._lock: asyncio.Lock | None = None
        self._last_started: float | None = None

    async def refresh(self) -> None:
        """Fetches the keys, unless a fetch that started after this call already ran."""
        asked = self._clock()
        if self._lock is None:  # Created here: it belongs to the loop the codec runs in.
            self._lock = asyncio.Lock()
        async with self._lock:
            last = self._last_started
            if last is not None and last >= asked:
                return
            if last is not None and (wait := last + self._min_interval - self._clock()) > 0:
                await asyncio.sleep(wait)
            self._last_started = self._clock()
            await self._fetch()


class EncryptionCodec(temporalio.converter.PayloadCodec):
    """Encrypts every payload with the org's current key; decrypts only what it encrypted.

    Decoding *rejects* payloads that are not ``binary/encrypted`` instead of passing them
    through, as Temporal's encryption sample does. The Temporal server is outside the trust
    boundary: the AES-GCM tag is what proves a workflow input came from someone holding the
    org's key, and passing plaintext through would let anyone who can write to the namespace
    (a CLI or UI signal, a start request with a JSON input) hand the agent work it never
    authenticated. Nothing Temporal writes itself needs the pass-through: server-made failures
    (timeouts, terminations, cancellations) carry their text in proto fields, not payloads,
    and never reach a codec, and every payload an SDK writes here went through this codec.
    A rejected workflow input fails the workflow task, which Temporal retries and surfaces,
    rather than running. Headers are outside this: the SDK leaves them unencoded unless a
    client opts in with ``header_codec_behavior``, so interceptors must not put secrets there.
    """

    def __init__(self, keys: OrgPayloadKeys, refresher: KeyRefresher | None = None) -> None:
        """Encrypt and decrypt with ``keys``, which may be updated while the codec is in use.

        With a ``refresher``, a payload under a key not held here makes it fetch the org's
        keys once before the payload is refused.
        """
        self._keys = keys
        self._refresher = refresher

    @property
    def keys(self) -> OrgPayloadKeys:
        """The org keys this codec reads."""
        return self._keys

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypt each payload (its whole serialized proto, metadata included)."""
        key = self._keys.current()
        aesgcm = AESGCM(key.key)
        aad = _aad(self._keys.org_id, key.key_id)
        encoded = []
        for payload in payloads:
            # A random 96-bit nonce per payload: with well under 2**32 payloads per key the
            # chance of a repeat is negligible, and keys rotate long before that.
            nonce = os.urandom(_NONCE_BYTES)
            ciphertext = aesgcm.encrypt(nonce, payload.SerializeToString(), aad)
            encoded.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID_METADATA: key.key_id.encode()},
                    data=nonce + ciphertext,
                )
            )
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt each payload; raise :class:`PayloadUnreadable` for anything else."""
        try:
            return [self._decrypt(payload) for payload in payloads]
        except PayloadKeyUnknown as unknown:
            if self._refresher is None:
                raise
            try:
                await self._refresher.refresh()
            except Exception as exc:  # The key is still unknown: refuse as before.
                log.warning("payload key fetch failed", error=type(exc).__name__)
                raise unknown from None
            log.info("payload keys fetched for an unknown key", key_id=unknown.key_id[:64])
        return [self._decrypt(payload) for payload in payloads]

    def _decrypt(self, payload: Payload) -> Payload:
        encoding = payload.metadata.get("encoding", b"")
        if encoding != ENCODING:
            raise PayloadUnreadable(
                f"refusing an unencrypted Temporal payload (encoding {_shown(encoding)}); "
                "every payload must be written through sevvo's payload codec",
                reason="PAYLOAD_NOT_ENCRYPTED",
            )
        raw_id = payload.metadata.get(KEY_ID_METADATA)
        try:
            key_id = raw_id.decode() if raw_id is not None else ""
        except UnicodeDecodeError:
            key_id = ""
        if not key_id:
            raise PayloadUnreadable(
                "encrypted Temporal payload has no valid key id", reason="PAYLOAD_MALFORMED"
            )
        if len(payload.data) < _NONCE_BYTES + _TAG_BYTES:
            raise PayloadUnreadable(
                f"encrypted Temporal payload under key {_shown(key_id)} is truncated",
                reason="PAYLOAD_MALFORMED",
            )
        key = self._keys.get(key_id)
        nonce, ciphertext = payload.data[:_NONCE_BYTES], payload.data[_NONCE_BYTES:]
        try:
            plaintext = AESGCM(key.key).decrypt(nonce, ciphertext, _aad(self._keys.org_id, key_id))
        except InvalidTag:
            raise PayloadUnreadable(
                f"Temporal payload under key {_shown(key_id)} failed authentication for org "
                f"{_shown(self._keys.org_id)}: it belongs to another org or was altered",
                reason="PAYLOAD_UNDECRYPTABLE",
                metadata={"key_id": key_id[:64]},
            ) from None
        return Payload.FromString(plaintext)


def data_converter(
    keys: OrgPayloadKeys, refresher: KeyRefresher | None = None
) -> temporalio.converter.DataConverter:
    """Temporal's default converter (JSON, protobuf binary/JSON) with payloads encrypted.

    ``DefaultFailureConverterWithEncodedAttributes`` moves each failure's message and stack
    trace into a payload, which the codec then encrypts; with the plain failure converter
    they would travel and be stored in clear.
    """
    return dataclasses.replace(
        temporalio.converter.DataConverter.default,
        payload_codec=EncryptionCodec(keys, refresher),
        failure_converter_class=temporalio.converter.DefaultFailureConverterWithEncodedAttributes,
    )


def _key_set(keys: Iterable[PayloadKey], current_id: str) -> _KeySet:
    by_id: dict[str, PayloadKey] = {}
    for key in keys:
        if not isinstance(key, PayloadKey):
            raise ConfigError(f"payload keys must be PayloadKey, got {type(key).__name__}")
        if key.key_id in by_id:
            raise ConfigError(f"payload key id {key.key_id!r} appears twice")
        by_id[key.key_id] = key
    current = by_id.get(current_id)
    if current is None:
        raise ConfigError(
            f"current payload key {_shown(current_id)} is not among the keys "
            f"{', '.join(repr(k) for k in sorted(by_id)) or '(none)'}"
        )
    return _KeySet(current=current, by_id=MappingProxyType(by_id))


def _aad(org_id: str, key_id: str) -> bytes:
    # Length prefixes make the encoding unambiguous: no other (org, key id) pair yields the
    # same bytes, so a payload from another org's history cannot authenticate here even if
    # that org happened to use the same key id and key.
    org = org_id.encode()
    key = key_id.encode()
    return _AAD_LABEL + struct.pack(">I", len(org)) + org + struct.pack(">I", len(key)) + key


def _shown(value: object) -> str:
    """A value for a message, cut short: ids come from payload metadata the server controls."""
    text = repr(value)
    return text if len(text) <= 70 else text[:66] + "...'"
