"""The orchestrator's proof keys: Ed25519, sealed at rest like its payload keys, rotatable.

The newest key signs every proof (sevvo/runtime/work_proof.py); every stored key is published,
so proofs signed before a rotation (a schedule's, an in-flight run's) still verify.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.orchestrator.store import OrchestratorStore, ProofKeyRow
from sevvo.runtime.sealing import KeySource, Sealed, seal, unseal
from sevvo.runtime.work_proof import ProofSigner


def proof_key_aad(key_id: str) -> bytes:
    """What a sealed proof key is bound to: its id (rewrap opens it with this too)."""
    return f"sevvo.orchestrator.v1.proof_key|{key_id}".encode()


class ProofKeys:
    """Loads (creating on first use) and rotates the proof keys; caches the signer."""

    def __init__(self, store: OrchestratorStore, keyring: KeySource) -> None:
        self._store = store
        self._keyring = keyring
        self._signer: ProofSigner | None = None
        self._published: dict[str, bytes] = {}

    def _new_row(self) -> ProofKeyRow:
        private = Ed25519PrivateKey.generate()
        key_id = f"wp-{secrets.token_hex(6)}"
        raw = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        sealed = seal(self._keyring, raw, proof_key_aad(key_id))
        return ProofKeyRow(key_id, sealed.key_id, sealed.blob, public, datetime.now(UTC))

    def _load(self) -> ProofSigner:
        rows = self._store.proof_keys()
        if not rows:
            self._store.insert_proof_key(self._new_row(), only_if_none=True)
            rows = self._store.proof_keys()
        newest = rows[-1]
        raw = unseal(
            self._keyring, Sealed(newest.kek_id, newest.sealed_key), proof_key_aad(newest.key_id)
        )
        self._published = {row.key_id: row.public_key for row in rows}
        self._signer = ProofSigner(newest.key_id, Ed25519PrivateKey.from_private_bytes(raw))
        return self._signer

    def signer(self) -> ProofSigner:
        """The key that signs new proofs (blocking on first use: it reads the store)."""
        return self._signer if self._signer is not None else self._load()

    def published(self) -> dict[str, bytes]:
        """Every proof key's raw public half, by key id, read afresh from the store.

        Read afresh (it is asked only when a verifier meets a new kid) so a key another
        replica just added is published by every replica, and this one signs with it too.
        """
        rows = self._store.proof_keys()
        if self._signer is None or not rows or rows[-1].key_id != self._signer.key_id:
            self._load()  # A new newest key: sign with it too (unsealed only then).
        else:
            self._published = {row.key_id: row.public_key for row in rows}
        return dict(self._published)

    def rotate(self) -> str:
        """Adds a new signing key (the old ones stay published); returns its id."""
        row = self._new_row()
        self._store.insert_proof_key(row, only_if_none=False)
        self._load()
        return row.key_id
