"""Re-sealing stored values under a keyring's primary key: the ``rewrap`` command of every
service that seals at rest (connections and orchestrator with a keyring, auth with its current
and retired KEKs), run by the chart's Job or by hand.

The walk is generic; each service names its tables of sealed values (SealedTable) and keeps
their SQL in its own store, and a KeyScheme says where its keys come from and how one value is
re-sealed. Rotation steps are in deploy/k8s/README.md ("Rotating a keyring", "Rotating
auth's key-encryption key").
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import psycopg

from sevvo.runtime import config as c
from sevvo.runtime.errors import SevvoError
from sevvo.runtime.logs import configure_logging, get_logger
from sevvo.runtime.migrations import MigrationError
from sevvo.runtime.sealing import (
    CredentialsUnreadable,
    Keyring,
    KeySource,
    Sealed,
    load_keyring,
    rewrap,
)
from sevvo.runtime.store import SchemaStore

log = get_logger(__name__)
S = TypeVar("S", bound=SchemaStore)

DEFAULT_BATCH_SIZE = 200
MAX_BATCH_SIZE = 10_000
# Rows locked by a concurrent edit or a second rewrap are skipped, then looked for again this
# many times, PAUSE_SECONDS apart, before the command reports them as left over.
RETRIES = 5
PAUSE_SECONDS = 1.0


Reseal = Callable[[Keyring, Sealed, bytes], Sealed]
"""Re-seals one stored value (its key id and blob, and its associated data) under the
keyring's primary key; returns it unchanged when it is already there."""


@dataclass(frozen=True)
class KeyScheme:
    """How a service's stored values are keyed, as rewrap sees them.

    ``load`` reads the keys from the environment as a keyring (key id -> key, the sealing key
    primary); ``reseal`` re-seals one value in the service's format; ``holder`` names where
    the keys are configured, for messages. A keyring (``keyring_scheme``) is the common case;
    auth's KEKs are another (services/auth/rewrap.py).
    """

    load: Callable[[Mapping[str, str]], KeySource]
    reseal: Reseal = rewrap
    holder: str = "the keyring"


def keyring_scheme(keyring_variable: str) -> KeyScheme:
    """Values sealed by sevvo/runtime/sealing.py with the keyring in ``keyring_variable``."""
    return KeyScheme(lambda env: load_keyring(env, keyring_variable))


@dataclass(frozen=True)
class RewrapConfig:
    """What ``rewrap`` needs: the runtime role's database URL, the keys and the log level.

    Its own object, not the service's: the Job mounts the database URL and the keys and
    nothing else (no TLS key, no service token).
    """

    database_url: str = field(repr=False)
    keyring: KeySource
    log_level: str = "INFO"

    @classmethod
    def load(cls, env: Mapping[str, str], keys: str | KeyScheme) -> RewrapConfig:
        """Reads SEVVO_DATABASE_URL(_FILE), the keys (a keyring variable's name, read with
        ``load_keyring``, or a scheme's ``load``) and SEVVO_LOG_LEVEL."""
        scheme = keyring_scheme(keys) if isinstance(keys, str) else keys
        return cls(
            database_url=c.required_secret(env, "SEVVO_DATABASE_URL"),
            keyring=scheme.load(env),
            log_level=c.log_level(env),
        )


@dataclass(frozen=True)
class SealedRow:
    """One stored sealed value: the ids that name its row, and what opening it needs."""

    ids: Mapping[str, Any]
    sealed: Sealed
    aad: bytes

    @property
    def label(self) -> str:
        """The row in messages: its ids, never key material."""
        return ", ".join(f"{name} {value}" for name, value in self.ids.items())


class SealedTable(Protocol):
    """One table of sealed values as rewrap walks it; the SQL stays in the service's store."""

    @property
    def name(self) -> str:
        """What the table holds, plural, for messages ("payload keys")."""
        ...

    def transaction(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """A connection inside one transaction."""
        ...

    def count_by_kek(self) -> Mapping[str, int]:
        """How many rows each key-encryption key seals."""
        ...

    def lock_not_under(
        self, conn: psycopg.Connection[Any], kek_id: str, limit: int
    ) -> Sequence[SealedRow]:
        """Locks up to ``limit`` rows sealed under another key, skipping locked rows."""
        ...

    def replace(self, conn: psycopg.Connection[Any], row: SealedRow, sealed: Sealed) -> bool:
        """Writes ``sealed`` over ``row`` if it is still sealed as read; True if written."""
        ...


@dataclass(frozen=True)
class RewrapReport:
    """What a rewrap did: rows re-sealed and rows still under older keys, by table."""

    primary_id: str
    moved: Mapping[str, int]
    remaining: Mapping[str, Mapping[str, int]]

    @property
    def done(self) -> bool:
        """True when no row of any table is sealed under a key other than the primary."""
        return not any(self.remaining.values())


def rewrap_tables(
    tables: Sequence[SealedTable],
    source: KeySource,
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    retries: int = RETRIES,
    pause_seconds: float = PAUSE_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    scheme: KeyScheme | None = None,
) -> RewrapReport:
    """Re-seals every row of ``tables`` that is not under the primary key, a batch per
    transaction; idempotent, and safe beside serving replicas and another rewrap.

    ``scheme`` says how a row is re-sealed and where its keys are configured (default:
    sevvo/runtime/sealing.py's format, in a keyring). Raises CredentialsUnreadable
    (SEALED_KEY_UNKNOWN) before changing anything when a row is sealed under a key the keyring
    lacks, naming the key ids; and for a row that does not open, naming the row (batches
    before it stay re-sealed, which is harmless).
    """
    reseal = scheme.reseal if scheme is not None else rewrap
    holder = scheme.holder if scheme is not None else "the keyring"
    # One keyring for the whole run, even if its file changes meanwhile.
    keyring = source.current()
    counts = {table.name: dict(table.count_by_kek()) for table in tables}
    _check_known(keyring, counts, holder)
    moved: dict[str, int] = {}
    remaining: dict[str, dict[str, int]] = {}
    for table in tables:
        moved[table.name] = 0
        for attempt in range(retries + 1):
            while batch := _rewrap_batch(table, keyring, batch_size, reseal):
                moved[table.name] += batch
                log.info("rewrap batch", table=table.name, moved=batch)
            left = _not_under(table.count_by_kek(), keyring.primary_id)
            if not left or attempt == retries:
                break
            sleep(pause_seconds)  # Locked rows: wait for their transactions to end.
        remaining[table.name] = left
    log.info(
        "rewrap finished",
        primary=keyring.primary_id,
        moved=moved,
        remaining={name: left for name, left in remaining.items() if left},
    )
    return RewrapReport(keyring.primary_id, moved, remaining)


def _check_known(keyring: Keyring, counts: Mapping[str, Mapping[str, int]], holder: str) -> None:
    unknown = sorted({kek for by_kek in counts.values() for kek in by_kek} - set(keyring.keys))
    if not unknown:
        return
    where = "; ".join(
        f"{n} {name} under {kek!r}"
        for name, by_kek in counts.items()
        for kek, n in sorted(by_kek.items())
        if kek in unknown
    )
    raise CredentialsUnreadable(
        f"rows are sealed under key(s) {', '.join(repr(k) for k in unknown)}, which are not"
        f" in {holder} ({where}): put the key(s) back in {holder} and run again;"
        " nothing was changed",
        reason="SEALED_KEY_UNKNOWN",
        metadata={"key_ids": ",".join(unknown)[:256]},
    )


def _rewrap_batch(table: SealedTable, keyring: Keyring, batch_size: int, reseal: Reseal) -> int:
    written = 0
    with table.transaction() as conn:
        for row in table.lock_not_under(conn, keyring.primary_id, batch_size):
            try:
                sealed = reseal(keyring, row.sealed, row.aad)
            except CredentialsUnreadable as exc:
                raise CredentialsUnreadable(
                    f"{table.name} row ({row.label}): {exc.message}",
                    reason=exc.reason,
                    metadata=exc.metadata,
                ) from None
            written += table.replace(conn, row, sealed)
    return written


def _not_under(counts: Mapping[str, int], primary_id: str) -> dict[str, int]:
    return {kek: n for kek, n in sorted(counts.items()) if kek != primary_id and n}


def batch_size_argument(value: str) -> int:
    """argparse's type for ``--batch-size``: a whole number from 1 to MAX_BATCH_SIZE."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {value!r}") from None
    if not 1 <= number <= MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_BATCH_SIZE}, got {number}")
    return number


def add_rewrap_command(commands: Any) -> None:
    """Adds ``rewrap [--batch-size N]`` to a service's argparse subcommands."""
    parser = commands.add_parser(
        "rewrap",
        help="re-seal every stored secret under the current (primary) key, then exit"
        " (the chart's rewrap Job)",
    )
    parser.add_argument(
        "--batch-size",
        type=batch_size_argument,
        default=DEFAULT_BATCH_SIZE,
        help=f"rows per transaction (1-{MAX_BATCH_SIZE}, default {DEFAULT_BATCH_SIZE})",
    )


def rewrap_command(
    service: str,
    keys: str | KeyScheme,
    store_type: type[S],
    tables: Callable[[S], Sequence[SealedTable]],
    env: Mapping[str, str],
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> int:
    """Runs ``python -m services.<service> rewrap`` and returns its exit code: 0 when no row
    is sealed under an older key, 1 when some are (or the run failed), 2 on bad configuration.

    ``keys`` is the service's keyring variable or its KeyScheme. The service's store is opened
    checking its migrations, never applying them (the runtime role has no DDL rights);
    ``tables`` names its sealed tables. It prints counts and key ids, never keys.
    """
    scheme = keyring_scheme(keys) if isinstance(keys, str) else keys
    try:
        config = RewrapConfig.load(env, scheme)
    except c.ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(f"{service}-rewrap", level=config.log_level)
    try:
        store = store_type(
            config.database_url,
            max_size=2,
            migration=c.MigrationSettings(migrate_on_start=False),
        )
        store.open()
        try:
            report = rewrap_tables(tables(store), config.keyring, batch_size, scheme=scheme)
        finally:
            store.close()
    except SevvoError as exc:
        print(f"error: {exc.message} ({exc.reason})", file=sys.stderr)
        return 1
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        # libpq's message names host, port and user, never the password.
        print(f"error: database: {exc}", file=sys.stderr)
        return 1
    moved = ", ".join(f"{n} {name}" for name, n in report.moved.items())
    print(f"re-sealed {moved} under {report.primary_id}")
    if not report.done:
        left = "; ".join(
            f"{name}: {', '.join(f'{n} under {kek!r}' for kek, n in by_kek.items())}"
            for name, by_kek in report.remaining.items()
            if by_kek
        )
        print(
            f"still under older keys ({left}): rows locked throughout, or sealed by a replica"
            " that has not read the new primary yet; run again",
            file=sys.stderr,
        )
        return 1
    print(f"nothing remains under an older key; older keys may be removed from {scheme.holder}")
    return 0
