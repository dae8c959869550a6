"""The orchestrator's ``rewrap``: its payload keys and proof keys re-sealed under the keyring's
primary key (the walk itself is sevvo/runtime/rewrap.py).

Replicas cache the keys they unsealed, not the sealed rows, and a row's kek_id and sealed key
change together in one update, so serving replicas never see a half-rewrapped key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from services.orchestrator.config import KEYRING_VARIABLE
from services.orchestrator.payload_keys import payload_key_aad
from services.orchestrator.proofs import proof_key_aad
from services.orchestrator.store import OrchestratorStore
from sevvo.runtime.rewrap import (
    DEFAULT_BATCH_SIZE,
    SealedRow,
    SealedTable,
    rewrap_command,
)
from sevvo.runtime.sealing import Sealed


class SealedKeys:
    """One of the orchestrator's tables of sealed keys, as rewrap walks it."""

    def __init__(
        self,
        store: OrchestratorStore,
        table: str,
        name: str,
        aad: Callable[[Mapping[str, Any]], bytes],
    ) -> None:
        self._store = store
        self._table = table
        self.name = name
        self._aad = aad

    def transaction(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """A connection inside one transaction."""
        return self._store.transaction()

    def count_by_kek(self) -> Mapping[str, int]:
        """How many keys each key-encryption key seals."""
        return self._store.count_sealed_by_kek(self._table)

    def lock_not_under(
        self, conn: psycopg.Connection[Any], kek_id: str, limit: int
    ) -> Sequence[SealedRow]:
        """Locks up to ``limit`` keys sealed under another key-encryption key."""
        rows = self._store.lock_sealed_not_under(conn, self._table, kek_id, limit)
        return [
            SealedRow(
                ids={k: v for k, v in row.items() if k not in ("kek_id", "sealed_key")},
                sealed=Sealed(row["kek_id"], bytes(row["sealed_key"])),
                aad=self._aad(row),
            )
            for row in rows
        ]

    def replace(self, conn: psycopg.Connection[Any], row: SealedRow, sealed: Sealed) -> bool:
        """Writes the re-sealed key if the row is still sealed as it was read."""
        return self._store.reseal(
            conn, self._table, dict(row.ids), row.sealed.key_id, sealed.key_id, sealed.blob
        )


def sealed_tables(store: OrchestratorStore) -> list[SealedTable]:
    """The orchestrator's sealed keys: every org's payload keys, then the proof keys."""
    return [
        SealedKeys(
            store,
            "payload_keys",
            "payload keys",
            lambda row: payload_key_aad(row["org_id"], row["key_id"]),
        ),
        SealedKeys(store, "proof_keys", "proof keys", lambda row: proof_key_aad(row["key_id"])),
    ]


def main(env: Mapping[str, str], batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """Runs ``python -m services.orchestrator rewrap``; returns the exit code."""
    return rewrap_command(
        "orchestrator", KEYRING_VARIABLE, OrchestratorStore, sealed_tables, env, batch_size
    )
