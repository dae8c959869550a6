"""The one way a service reaches its schema in the control-plane Postgres: a pool and migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from sevvo.runtime import migrations
from sevvo.runtime.config import MigrationSettings

# How long a request waits for a pooled connection. While the database is down no connection
# comes back healthy, so this bounds how long callers wait before UNAVAILABLE.
CHECKOUT_TIMEOUT_SECONDS = 5.0


class SchemaStore:
    """A connection pool whose sessions use one service's schema, migrated on open.

    Each service subclasses it with its own queries; SQL stays in the service's store module.

    Connections are checked before each checkout (one empty round trip), so those that died
    with a database restart are replaced rather than handed out; the pool reconnects in the
    background with backoff. A checkout that finds no healthy connection within
    ``checkout_timeout`` raises psycopg_pool.PoolTimeout, which the gRPC layer answers as
    UNAVAILABLE (sevvo.runtime.errors.database_error).
    """

    schema: str
    migrations_dir: Path

    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        checkout_timeout: float = CHECKOUT_TIMEOUT_SECONDS,
        migration: MigrationSettings | None = None,
    ) -> None:
        self._conninfo = conninfo
        self._migration = migration or MigrationSettings()
        self._pool = ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=checkout_timeout,
            check=ConnectionPool.check_connection,
            kwargs={"options": f"-c search_path={self.schema}"},
        )

    @classmethod
    def migration_sets(cls) -> tuple[migrations.MigrationSet, ...]:
        """The schemas this store needs, in the order they are migrated."""
        return (migrations.MigrationSet(cls.schema, cls.migrations_dir),)

    def open(self) -> None:
        """Applies pending migrations (or, with migrate-on-start off, checks none is pending),
        then opens the pool; raises migrations.MigrationError when the schema is not ready."""
        sets = self.migration_sets()
        if self._migration.migrate_on_start:
            migrations.apply_all(self._conninfo, sets, self._migration)
        else:
            migrations.check_current(self._conninfo, sets)
        self._pool.open(wait=True, timeout=30)

    def close(self) -> None:
        """Closes the pool."""
        self._pool.close()

    def ping(self, timeout: float) -> None:
        """Raises unless the database answers a trivial query through the pool in ``timeout``.

        A pool whose every connection is checked out is busy, not broken: its connections
        were healthy when handed out, so that counts as reachable rather than failing a
        readiness check under load (which would shift the load onto fewer replicas).
        """
        try:
            with self._pool.connection(timeout=timeout) as conn:
                conn.execute("select 1")
        except PoolTimeout:
            stats = self._pool.get_stats()
            if stats.get("pool_size", 0) >= self._pool.max_size and not stats.get(
                "pool_available", 0
            ):
                return
            raise

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection inside one transaction: committed on success, else rolled back."""
        with self._pool.connection() as conn, conn.transaction():
            yield conn

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection for reads."""
        with self._pool.connection() as conn:
            yield conn
