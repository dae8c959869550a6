"""auth's ``rewrap``: its signing keys (EdDSA and Temporal's ES256) re-sealed under the current
key-encryption key, SEVVO_AUTH_KEK, so retired KEKs can be removed (the walk itself is
sevvo/runtime/rewrap.py; rotation steps in deploy/k8s/README.md).

Serving replicas reload the signing keys from the store and open each row with whichever
configured KEK its kek_id names; a row's kek_id and sealed key change together in one update,
so a replica never reads a half-rewrapped key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from services.auth.config import load_key_encryption_keys
from services.auth.keys import KeyEncryptionKeys, reseal
from services.auth.store import SIGNING_KEYS, TEMPORAL_SIGNING_KEYS, AuthStore
from sevvo.runtime.rewrap import (
    DEFAULT_BATCH_SIZE,
    KeyScheme,
    SealedRow,
    SealedTable,
    rewrap_command,
)
from sevvo.runtime.sealing import Keyring, Sealed


def load_keys(env: Mapping[str, str]) -> Keyring:
    """SEVVO_AUTH_KEK and SEVVO_AUTH_RETIRED_KEKS as a keyring by kek_id, the current one
    primary; ConfigError (naming the variable, never a key) as auth's own start gives."""
    current, retired = load_key_encryption_keys(env)
    return KeyEncryptionKeys(current, retired).keyring()


KEK_SCHEME = KeyScheme(
    load=load_keys, reseal=reseal, holder="SEVVO_AUTH_KEK or SEVVO_AUTH_RETIRED_KEKS"
)
"""How auth's signing keys are sealed, for the shared rewrap walk."""


class SealedSigningKeys:
    """One of auth's key sets (a table of signing keys), as rewrap walks it."""

    def __init__(self, store: AuthStore, table: str, name: str) -> None:
        self._store = store
        self._table = table
        self.name = name

    def transaction(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """A connection inside one transaction."""
        return self._store.transaction()

    def count_by_kek(self) -> Mapping[str, int]:
        """How many keys each key-encryption key seals."""
        return self._store.count_keys_by_kek(self._table)

    def lock_not_under(
        self, conn: psycopg.Connection[Any], kek_id: str, limit: int
    ) -> Sequence[SealedRow]:
        """Locks up to ``limit`` keys sealed under another key-encryption key."""
        return [
            # The kid is the associated data every private key is sealed with.
            SealedRow(ids={"kid": kid}, sealed=Sealed(kek, blob), aad=kid.encode())
            for kid, kek, blob in self._store.lock_keys_not_under(conn, self._table, kek_id, limit)
        ]

    def replace(self, conn: psycopg.Connection[Any], row: SealedRow, sealed: Sealed) -> bool:
        """Writes the re-sealed key if the row is still sealed as it was read."""
        return self._store.reseal_key(
            conn, self._table, row.ids["kid"], row.sealed.key_id, sealed.key_id, sealed.blob
        )


def sealed_tables(store: AuthStore) -> list[SealedTable]:
    """auth's sealed keys: the EdDSA signing keys, then the ES256 keys of Temporal's tokens."""
    return [
        SealedSigningKeys(store, SIGNING_KEYS, "signing keys"),
        SealedSigningKeys(store, TEMPORAL_SIGNING_KEYS, "temporal signing keys"),
    ]


def main(env: Mapping[str, str], batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """Runs ``python -m services.auth rewrap``; returns the exit code."""
    return rewrap_command("auth", KEK_SCHEME, AuthStore, sealed_tables, env, batch_size)
