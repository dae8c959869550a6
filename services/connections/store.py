"""Every SQL statement the connections service runs, against its own schema."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import class_row

from sevvo.runtime import audit
from sevvo.runtime.errors import AlreadyExists
from sevvo.runtime.store import SchemaStore

SCHEMA = "connections"
MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass(frozen=True)
class ConnectionRow:
    """A stored connection, sealed credentials included (they never leave the domain layer)."""

    id: uuid.UUID
    org_id: uuid.UUID
    display_name: str
    type: str
    credential_mode: str
    host: str
    port: int
    database: str
    username: str
    ssl_mode: str
    kek_id: str
    sealed_credentials: bytes
    status: str
    last_test_at: datetime | None
    last_test_category: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class DraftRow:
    """Credentials being tested before they are saved; sealed, and gone within minutes."""

    id: uuid.UUID
    org_id: uuid.UUID
    kek_id: str
    sealed_credentials: bytes
    created_at: datetime
    expires_at: datetime


_NAME_TAKEN = AlreadyExists(
    "a connection with this display name already exists", reason="CONNECTION_NAME_TAKEN"
)


class ConnectionStore(SchemaStore):
    """Data access for connections; writes take the transaction the domain opens."""

    schema = SCHEMA
    migrations_dir = MIGRATIONS

    def open(self) -> None:
        """Applies connections' and the shared audit log's migrations, then opens the pool."""
        audit.apply_migrations(self._conninfo)
        super().open()

    @staticmethod
    def insert(conn: psycopg.Connection[Any], row: ConnectionRow) -> None:
        """Inserts a connection; a duplicate display name in the org is AlreadyExists."""
        try:
            with conn.transaction():
                conn.execute(
                    "insert into connections (id, org_id, display_name, type, credential_mode,"
                    " host, port, database, username, ssl_mode, kek_id, sealed_credentials,"
                    " status, created_at, updated_at) values"
                    " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        row.id,
                        row.org_id,
                        row.display_name,
                        row.type,
                        row.credential_mode,
                        row.host,
                        row.port,
                        row.database,
                        row.username,
                        row.ssl_mode,
                        row.kek_id,
                        row.sealed_credentials,
                        row.status,
                        row.created_at,
                        row.updated_at,
                    ),
                )
        except pg_errors.UniqueViolation:
            raise _NAME_TAKEN from None

    @staticmethod
    def get(
        conn: psycopg.Connection[Any],
        org_id: uuid.UUID,
        connection_id: uuid.UUID,
        *,
        for_update: bool = False,
    ) -> ConnectionRow | None:
        """One connection of one org; ``for_update`` locks it until the transaction ends."""
        query = (
            "select * from connections where org_id = %s and id = %s for update"
            if for_update
            else "select * from connections where org_id = %s and id = %s"
        )
        with conn.cursor(row_factory=class_row(ConnectionRow)) as cur:
            cur.execute(query, (org_id, connection_id))
            return cur.fetchone()

    @staticmethod
    def list_page(
        conn: psycopg.Connection[Any],
        org_id: uuid.UUID,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[ConnectionRow]:
        """One page of an org's connections in creation order."""
        with conn.cursor(row_factory=class_row(ConnectionRow)) as cur:
            if after is None:
                cur.execute(
                    "select * from connections where org_id = %s order by created_at, id limit %s",
                    (org_id, limit),
                )
            else:
                cur.execute(
                    "select * from connections where org_id = %s"
                    " and (created_at, id) > (%s, %s::uuid) order by created_at, id limit %s",
                    (org_id, after[0], after[1], limit),
                )
            return cur.fetchall()

    @staticmethod
    def update(conn: psycopg.Connection[Any], row: ConnectionRow) -> None:
        """Writes back every mutable column of a connection."""
        try:
            with conn.transaction():
                conn.execute(
                    "update connections set display_name = %s, credential_mode = %s, host = %s,"
                    " port = %s, database = %s, username = %s, ssl_mode = %s, kek_id = %s,"
                    " sealed_credentials = %s, status = %s, last_test_at = %s,"
                    " last_test_category = %s, updated_at = %s where org_id = %s and id = %s",
                    (
                        row.display_name,
                        row.credential_mode,
                        row.host,
                        row.port,
                        row.database,
                        row.username,
                        row.ssl_mode,
                        row.kek_id,
                        row.sealed_credentials,
                        row.status,
                        row.last_test_at,
                        row.last_test_category,
                        row.updated_at,
                        row.org_id,
                        row.id,
                    ),
                )
        except pg_errors.UniqueViolation:
            raise _NAME_TAKEN from None

    @staticmethod
    def delete(conn: psycopg.Connection[Any], org_id: uuid.UUID, connection_id: uuid.UUID) -> bool:
        """Deletes a connection with its sealed credentials; False if it was not there."""
        cur = conn.execute(
            "delete from connections where org_id = %s and id = %s", (org_id, connection_id)
        )
        return cur.rowcount == 1

    @staticmethod
    def lock_batch_not_under(
        conn: psycopg.Connection[Any], kek_id: str, limit: int
    ) -> list[ConnectionRow]:
        """Locks up to ``limit`` rows sealed under another key, skipping rows being edited."""
        with conn.cursor(row_factory=class_row(ConnectionRow)) as cur:
            cur.execute(
                "select * from connections where kek_id <> %s order by id limit %s"
                " for update skip locked",
                (kek_id, limit),
            )
            return cur.fetchall()

    @staticmethod
    def set_sealed(
        conn: psycopg.Connection[Any], connection_id: uuid.UUID, kek_id: str, sealed: bytes
    ) -> None:
        """Replaces one row's sealed payload (used by rewrap)."""
        conn.execute(
            "update connections set kek_id = %s, sealed_credentials = %s where id = %s",
            (kek_id, sealed, connection_id),
        )

    @staticmethod
    def insert_draft(conn: psycopg.Connection[Any], draft: DraftRow) -> None:
        """Stores a sealed draft and drops drafts that have expired."""
        conn.execute("delete from drafts where expires_at < now()")
        conn.execute(
            "insert into drafts (id, org_id, kek_id, sealed_credentials, created_at, expires_at)"
            " values (%s, %s, %s, %s, %s, %s)",
            (
                draft.id,
                draft.org_id,
                draft.kek_id,
                draft.sealed_credentials,
                draft.created_at,
                draft.expires_at,
            ),
        )

    @staticmethod
    def get_draft(
        conn: psycopg.Connection[Any], org_id: uuid.UUID, draft_id: uuid.UUID
    ) -> DraftRow | None:
        """An unexpired draft of one org."""
        with conn.cursor(row_factory=class_row(DraftRow)) as cur:
            cur.execute(
                "select * from drafts where org_id = %s and id = %s and expires_at > now()",
                (org_id, draft_id),
            )
            return cur.fetchone()

    @staticmethod
    def delete_draft(conn: psycopg.Connection[Any], draft_id: uuid.UUID) -> None:
        """Removes a draft once its test is over."""
        conn.execute("delete from drafts where id = %s", (draft_id,))

    def count_by_kek(self) -> dict[str, int]:
        """How many payloads each key-encryption key seals."""
        with self.connection() as conn:
            rows = conn.execute(
                "select kek_id, count(*) from connections group by kek_id"
            ).fetchall()
        return {str(kek): int(n) for kek, n in rows}
