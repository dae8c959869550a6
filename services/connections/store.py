"""Every SQL statement the connections service runs, against its own schema."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.types.json import Jsonb

from sevvo.runtime import audit
from sevvo.runtime.errors import AlreadyExists, NotFound
from sevvo.runtime.migrations import MigrationSet
from sevvo.runtime.rows import dataclass_row
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
    # A Postgres connection's display copies; None for every other kind.
    host: str | None
    port: int | None
    database: str | None
    username: str | None
    ssl_mode: str | None
    kek_id: str
    sealed_credentials: bytes
    status: str
    last_test_at: datetime | None
    last_test_category: str | None
    created_at: datetime
    updated_at: datetime
    # Copies of the sealed dynamic settings, set only for credential_mode "dynamic".
    default_ttl_seconds: int | None = None
    max_ttl_seconds: int | None = None
    group_role: str | None = None
    creation_statement_count: int | None = None
    revocation_statement_count: int | None = None
    # A copy of the sealed preview settings (allowed_functions, max_plan_cost), or None.
    preview_settings: dict[str, Any] | None = None
    # A summary of the sealed CA bundle (subject, sha256_fingerprint, expire_time per
    # certificate), or None when the SSL mode verifies nothing.
    ssl_root_certs: list[dict[str, str]] | None = None
    # Another kind's display copy of its non-secret details (services/connections/kinds).
    details: dict[str, Any] | None = None


@dataclass(frozen=True)
class DraftRow:
    """Credentials being tested before they are saved; sealed, and gone within minutes."""

    id: uuid.UUID
    org_id: uuid.UUID
    kek_id: str
    sealed_credentials: bytes
    created_at: datetime
    expires_at: datetime
    # The kind whose payload is sealed here (services/connections/kinds).
    type: str = "postgres"


@dataclass(frozen=True)
class LeaseRow:
    """The metadata of one lease role; there is no password to hold."""

    id: uuid.UUID
    org_id: uuid.UUID
    connection_id: uuid.UUID
    role_name: str
    purpose: str
    state: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    max_expires_at: datetime
    revoked_at: datetime | None
    failure_reason: str | None
    failure_count: int
    # The connection role the login role was minted from, and the workload that borrowed it
    # (None for sevvo's own work).
    role: str = "default"
    workload_id: uuid.UUID | None = None


@dataclass(frozen=True)
class ConnectionRoleRow:
    """Display copies of one named role's sealed settings, and the role's life.

    ``deleted_at`` is set on a role removed with force whose leases are still being revoked.
    """

    id: uuid.UUID
    org_id: uuid.UUID
    connection_id: uuid.UUID
    name: str
    default_ttl_seconds: int
    max_ttl_seconds: int
    group_role: str
    creation_statement_count: int
    revocation_statement_count: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None


# Leases whose role may exist and that the reaper still has to drop.
LIVE_STATES = ("creating", "active", "revoke_requested", "failing")
# A reaper that claimed a lease (revoking) and went quiet this long is presumed dead.
STALE_REVOKING = "5 minutes"

_NAME_TAKEN = AlreadyExists(
    "a connection with this display name already exists", reason="CONNECTION_NAME_TAKEN"
)


class ConnectionStore(SchemaStore):
    """Data access for connections; writes take the transaction the domain opens."""

    schema = SCHEMA
    migrations_dir = MIGRATIONS

    @classmethod
    def migration_sets(cls) -> tuple[MigrationSet, ...]:
        """The shared audit log's schema, then this service's own."""
        return (audit.MIGRATION_SET, *super().migration_sets())

    @staticmethod
    def insert(conn: psycopg.Connection[Any], row: ConnectionRow) -> None:
        """Inserts a connection; a duplicate display name in the org is AlreadyExists."""
        try:
            with conn.transaction():
                conn.execute(
                    "insert into connections (id, org_id, display_name, type, credential_mode,"
                    " host, port, database, username, ssl_mode, kek_id, sealed_credentials,"
                    " status, created_at, updated_at, default_ttl_seconds, max_ttl_seconds,"
                    " group_role, creation_statement_count, revocation_statement_count,"
                    " preview_settings, ssl_root_certs, details, last_test_at,"
                    " last_test_category) values"
                    " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                    " %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
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
                        row.default_ttl_seconds,
                        row.max_ttl_seconds,
                        row.group_role,
                        row.creation_statement_count,
                        row.revocation_statement_count,
                        _jsonb(row.preview_settings),
                        _jsonb(row.ssl_root_certs),
                        _jsonb(row.details),
                        row.last_test_at,
                        row.last_test_category,
                    ),
                )
        except pg_errors.UniqueViolation:
            raise _NAME_TAKEN from None

    @staticmethod
    def id_by_name(
        conn: psycopg.Connection[Any], org_id: uuid.UUID, display_name: str
    ) -> uuid.UUID | None:
        """The id of the org's connection of this display name (case-insensitive, as the
        names are unique), or None."""
        row = conn.execute(
            "select id from connections where org_id = %s and lower(display_name) = lower(%s)",
            (org_id, display_name),
        ).fetchone()
        return None if row is None else uuid.UUID(str(row[0]))

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
        with conn.cursor(row_factory=dataclass_row(ConnectionRow)) as cur:
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
        with conn.cursor(row_factory=dataclass_row(ConnectionRow)) as cur:
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
                    " last_test_category = %s, updated_at = %s, default_ttl_seconds = %s,"
                    " max_ttl_seconds = %s, group_role = %s, creation_statement_count = %s,"
                    " revocation_statement_count = %s, preview_settings = %s,"
                    " ssl_root_certs = %s, details = %s where org_id = %s and id = %s",
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
                        row.default_ttl_seconds,
                        row.max_ttl_seconds,
                        row.group_role,
                        row.creation_statement_count,
                        row.revocation_statement_count,
                        _jsonb(row.preview_settings),
                        _jsonb(row.ssl_root_certs),
                        _jsonb(row.details),
                        row.org_id,
                        row.id,
                    ),
                )
        except pg_errors.UniqueViolation:
            raise _NAME_TAKEN from None

    @staticmethod
    def others_with_login(
        conn: psycopg.Connection[Any],
        org_id: uuid.UUID,
        connection_id: uuid.UUID,
        login: tuple[str, int, str],
        limit: int = 5,
    ) -> list[tuple[uuid.UUID, str]]:
        """(id, display name) of the org's other connections with the same ``login``.

        ``login`` is (host, port, username); hosts match without case or a trailing dot, as
        DNS names do. Oldest first, at most ``limit``.
        """
        host, port, username = login
        cur = conn.execute(
            "select id, display_name from connections where org_id = %s and id <> %s"
            " and port = %s and username = %s and lower(rtrim(host, '.')) = lower(rtrim(%s, '.'))"
            " order by created_at, id limit %s",
            (org_id, connection_id, port, username, host, limit),
        )
        return [(row[0], row[1]) for row in cur.fetchall()]

    @staticmethod
    def delete(conn: psycopg.Connection[Any], org_id: uuid.UUID, connection_id: uuid.UUID) -> bool:
        """Deletes a connection with its sealed credentials and lease records.

        False if it was not there.
        """
        cur = conn.execute(
            "delete from connections where org_id = %s and id = %s", (org_id, connection_id)
        )
        return cur.rowcount == 1

    @staticmethod
    def lock_batch_not_under(
        conn: psycopg.Connection[Any], kek_id: str, limit: int
    ) -> list[ConnectionRow]:
        """Locks up to ``limit`` rows sealed under another key, skipping rows being edited."""
        with conn.cursor(row_factory=dataclass_row(ConnectionRow)) as cur:
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
    def claim_work(
        conn: psycopg.Connection[Any],
        org_id: uuid.UUID,
        workflow_id: str,
        run_id: str,
        workflow_type: str,
        *,
        keep_until: datetime,
        now: datetime,
    ) -> str:
        """Binds a workflow id to its first run; returns the run id that holds it.

        Drops claims whose proofs have expired (those proofs are refused anyway).
        """
        conn.execute("delete from work_claims where keep_until < %s", (now,))
        conn.execute(
            "insert into work_claims (org_id, workflow_id, run_id, workflow_type, claimed_at,"
            " keep_until) values (%s, %s, %s, %s, %s, %s)"
            " on conflict (org_id, workflow_id) do nothing",
            (org_id, workflow_id, run_id, workflow_type, now, keep_until),
        )
        row = conn.execute(
            "select run_id from work_claims where org_id = %s and workflow_id = %s",
            (org_id, workflow_id),
        ).fetchone()
        assert row is not None
        return str(row[0])

    @staticmethod
    def insert_draft(conn: psycopg.Connection[Any], draft: DraftRow) -> None:
        """Stores a sealed draft and drops drafts that have expired."""
        conn.execute("delete from drafts where expires_at < now()")
        conn.execute(
            "insert into drafts (id, org_id, kek_id, sealed_credentials, created_at, expires_at,"
            " type) values (%s, %s, %s, %s, %s, %s, %s)",
            (
                draft.id,
                draft.org_id,
                draft.kek_id,
                draft.sealed_credentials,
                draft.created_at,
                draft.expires_at,
                draft.type,
            ),
        )

    @staticmethod
    def get_draft(
        conn: psycopg.Connection[Any], org_id: uuid.UUID, draft_id: uuid.UUID
    ) -> DraftRow | None:
        """An unexpired draft of one org."""
        with conn.cursor(row_factory=dataclass_row(DraftRow)) as cur:
            cur.execute(
                "select * from drafts where org_id = %s and id = %s and expires_at > now()",
                (org_id, draft_id),
            )
            return cur.fetchone()

    @staticmethod
    def delete_draft(conn: psycopg.Connection[Any], draft_id: uuid.UUID) -> None:
        """Removes a draft once its test is over."""
        conn.execute("delete from drafts where id = %s", (draft_id,))

    # Leases. Every query is scoped by org_id, the caller's org.

    @staticmethod
    def insert_lease(conn: psycopg.Connection[Any], lease: LeaseRow) -> bool:
        """Inserts a lease; False when its id exists already (a retried create).

        A role name taken on the connection by another lease is AlreadyExists.
        """
        try:
            with conn.transaction():
                cur = conn.execute(
                    "insert into leases (id, org_id, connection_id, role_name, purpose, state,"
                    " created_at, updated_at, expires_at, max_expires_at, revoked_at,"
                    " failure_reason, failure_count, role, workload_id) values"
                    " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " on conflict (id) do nothing",
                    (
                        lease.id,
                        lease.org_id,
                        lease.connection_id,
                        lease.role_name,
                        lease.purpose,
                        lease.state,
                        lease.created_at,
                        lease.updated_at,
                        lease.expires_at,
                        lease.max_expires_at,
                        lease.revoked_at,
                        lease.failure_reason,
                        lease.failure_count,
                        lease.role,
                        lease.workload_id,
                    ),
                )
        except pg_errors.UniqueViolation:
            raise AlreadyExists(
                "the connection already has a lease for this role name",
                reason="LEASE_ROLE_NAME_TAKEN",
            ) from None
        except pg_errors.ForeignKeyViolation:
            # The connection was deleted between the caller's check and this insert.
            raise NotFound("connection not found", reason="CONNECTION_NOT_FOUND") from None
        return cur.rowcount == 1

    @staticmethod
    def get_lease(
        conn: psycopg.Connection[Any],
        org_id: uuid.UUID,
        lease_id: uuid.UUID,
        *,
        for_update: bool = False,
    ) -> LeaseRow | None:
        """One lease of one org; ``for_update`` locks it until the transaction ends."""
        query = (
            "select * from leases where org_id = %s and id = %s for update"
            if for_update
            else "select * from leases where org_id = %s and id = %s"
        )
        with conn.cursor(row_factory=dataclass_row(LeaseRow)) as cur:
            cur.execute(query, (org_id, lease_id))
            return cur.fetchone()

    @staticmethod
    def update_lease(conn: psycopg.Connection[Any], lease: LeaseRow) -> None:
        """Writes back a lease's mutable columns."""
        conn.execute(
            "update leases set state = %s, updated_at = %s, expires_at = %s, revoked_at = %s,"
            " failure_reason = %s, failure_count = %s where org_id = %s and id = %s",
            (
                lease.state,
                lease.updated_at,
                lease.expires_at,
                lease.revoked_at,
                lease.failure_reason,
                lease.failure_count,
                lease.org_id,
                lease.id,
            ),
        )

    def claim_lease(
        self,
        *,
        org_id: uuid.UUID,
        lease_id: uuid.UUID,
        workload_id: uuid.UUID,
        purpose: str,
        now: datetime,
        grants: list[tuple[str, str]],
        latest_max_expiry: datetime,
        actor: audit.Actor,
        details: dict[str, str],
    ) -> LeaseRow | None:
        """Hands an unclaimed, active, unexpired warm-pool lease of a granted (connection,
        role) whose max expiry is at most ``latest_max_expiry`` to ``workload_id``, and
        audits it (lease.claim), in one statement; None when no lease met every condition.

        One statement in autocommit, so a claim costs one round trip (a warm-pool borrow has
        2 ms in all); the conditional UPDATE lets exactly one of two racing claims win.
        """
        query = """
            with claimed as (
                update leases set workload_id = %(workload)s, purpose = %(purpose)s,
                    updated_at = %(now)s
                where org_id = %(org)s and id = %(id)s and state = 'active'
                    and purpose = 'warm_pool' and workload_id is null
                    and expires_at > %(now)s and max_expires_at <= %(latest)s
                    and (connection_id::text, role) in (
                        select * from unnest(%(conns)s::text[], %(roles)s::text[]))
                returning *
            ), logged as (
                insert into audit.events (id, org_id, actor_kind, actor_id, action,
                    target_type, target_id, outcome, details)
                select gen_random_uuid(), org_id, %(actor_kind)s, %(actor_id)s, 'lease.claim',
                    'lease', id::text, 'success', %(details)s::jsonb || jsonb_build_object(
                        'connection_id', connection_id::text, 'role_name', role_name,
                        'role', role, 'purpose', purpose, 'state', state,
                        'expire_time', to_json(expires_at) #>> '{}',
                        'workload_id', workload_id::text)
                from claimed
            )
            select * from claimed
        """
        params = {
            "workload": workload_id,
            "purpose": purpose,
            "now": now,
            "org": org_id,
            "id": lease_id,
            "latest": latest_max_expiry,
            "conns": [conn for conn, _ in grants],
            "roles": [role for _, role in grants],
            "actor_kind": actor.kind,
            "actor_id": actor.id,
            "details": Jsonb(details),
        }
        with self._pool.connection() as conn:
            conn.autocommit = True
            try:
                with conn.cursor(row_factory=dataclass_row(LeaseRow)) as cur:
                    cur.execute(query, params)
                    return cur.fetchone()
            finally:
                conn.autocommit = False

    @staticmethod
    def list_leases(
        conn: psycopg.Connection[Any],
        org_id: uuid.UUID,
        *,
        connection_id: uuid.UUID | None,
        state: str | None,
        limit: int,
        before: tuple[datetime, str] | None,
        role: str | None = None,
        workload_id: uuid.UUID | None = None,
    ) -> list[LeaseRow]:
        """One page of an org's leases, newest first, optionally of one connection, state,
        connection role or workload."""
        conditions: list[sql.Composable] = [sql.SQL("org_id = %s")]
        params: list[Any] = [org_id]
        for column, value in (
            ("connection_id", connection_id),
            ("state", state),
            ("role", role),
            ("workload_id", workload_id),
        ):
            if value is not None:
                conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        if before is not None:
            conditions.append(sql.SQL("(created_at, id) < (%s, %s::uuid)"))
            params.extend(before)
        params.append(limit)
        query = sql.SQL(
            "select * from leases where {} order by created_at desc, id desc limit %s"
        ).format(sql.SQL(" and ").join(conditions))
        with conn.cursor(row_factory=dataclass_row(LeaseRow)) as cur:
            cur.execute(query, params)
            return cur.fetchall()

    @staticmethod
    def list_leases_to_reap(
        conn: psycopg.Connection[Any],
        org_id: uuid.UUID,
        *,
        connection_id: uuid.UUID | None,
        now: datetime,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[LeaseRow]:
        """Live leases past expiry or asked to revoke, and stale revoking ones, by expiry.

        A revoking lease is also listed once expired: an agent killed mid-revoke leaves it
        revoking, and its role must not outlive the TTL by the stale-claim delay. Revoking
        twice is harmless.
        """
        conditions = [
            sql.SQL("org_id = %s"),
            sql.SQL(
                "((state = any(%s) and (expires_at <= %s or state = 'revoke_requested'))"
                " or (state = 'revoking'"
                " and (expires_at <= %s or updated_at <= %s - interval {})))"
            ).format(sql.Literal(STALE_REVOKING)),
        ]
        params: list[Any] = [org_id, list(LIVE_STATES), now, now, now]
        if connection_id is not None:
            conditions.append(sql.SQL("connection_id = %s"))
            params.append(connection_id)
        if after is not None:
            conditions.append(sql.SQL("(expires_at, id) > (%s, %s::uuid)"))
            params.extend(after)
        params.append(limit)
        query = sql.SQL("select * from leases where {} order by expires_at, id limit %s").format(
            sql.SQL(" and ").join(conditions)
        )
        with conn.cursor(row_factory=dataclass_row(LeaseRow)) as cur:
            cur.execute(query, params)
            return cur.fetchall()

    @staticmethod
    def count_leases(
        conn: psycopg.Connection[Any], org_id: uuid.UUID, connection_id: uuid.UUID | None
    ) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        """Lease counts by state (all), by purpose and by connection role (unrevoked only)."""
        scope = sql.SQL("org_id = %s")
        params: list[Any] = [org_id]
        if connection_id is not None:
            scope = sql.SQL("org_id = %s and connection_id = %s")
            params.append(connection_id)
        by_state = conn.execute(
            sql.SQL("select state, count(*) from leases where {} group by state").format(scope),
            params,
        ).fetchall()
        by_purpose = conn.execute(
            sql.SQL(
                "select purpose, count(*) from leases where {} and state <> 'revoked'"
                " group by purpose order by purpose"
            ).format(scope),
            params,
        ).fetchall()
        by_role = conn.execute(
            sql.SQL(
                "select role, count(*) from leases where {} and state <> 'revoked'"
                " group by role order by role"
            ).format(scope),
            params,
        ).fetchall()
        return (
            {str(state): int(n) for state, n in by_state},
            {str(purpose): int(n) for purpose, n in by_purpose},
            {str(role): int(n) for role, n in by_role},
        )

    @staticmethod
    def lock_revocable_leases(
        conn: psycopg.Connection[Any],
        org_id: uuid.UUID,
        connection_id: uuid.UUID,
        lease_id: uuid.UUID | None,
        role: str | None = None,
    ) -> list[LeaseRow]:
        """Locks a connection's creating and active leases (or just ``lease_id``'s, or just
        those minted from the connection role ``role``)."""
        with conn.cursor(row_factory=dataclass_row(LeaseRow)) as cur:
            cur.execute(
                "select * from leases where org_id = %s and connection_id = %s"
                " and state in ('creating', 'active') and (%s::uuid is null or id = %s::uuid)"
                " and (%s::text is null or role = %s::text)"
                " order by created_at, id for update",
                (org_id, connection_id, lease_id, lease_id, role, role),
            )
            return cur.fetchall()

    @staticmethod
    def count_unrevoked_leases(
        conn: psycopg.Connection[Any],
        org_id: uuid.UUID,
        connection_id: uuid.UUID,
        role: str | None = None,
    ) -> int:
        """How many of a connection's leases (of one connection role, when ``role`` is set)
        may still have a role in the database."""
        row = conn.execute(
            "select count(*) from leases where org_id = %s and connection_id = %s"
            " and state <> 'revoked' and (%s::text is null or role = %s::text)",
            (org_id, connection_id, role, role),
        ).fetchone()
        return int(row[0]) if row else 0

    # Named roles of dynamic connections. Every query is scoped by org_id, the caller's org.

    @staticmethod
    def insert_role(conn: psycopg.Connection[Any], role: ConnectionRoleRow) -> None:
        """Inserts a role's row; the caller has checked the name is free (and locked the
        connection, which serialises every change to its roles)."""
        conn.execute(
            "insert into connection_roles (id, org_id, connection_id, name, default_ttl_seconds,"
            " max_ttl_seconds, group_role, creation_statement_count, revocation_statement_count,"
            " created_at, updated_at, deleted_at) values"
            " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                role.id,
                role.org_id,
                role.connection_id,
                role.name,
                role.default_ttl_seconds,
                role.max_ttl_seconds,
                role.group_role,
                role.creation_statement_count,
                role.revocation_statement_count,
                role.created_at,
                role.updated_at,
                role.deleted_at,
            ),
        )

    @staticmethod
    def get_role(
        conn: psycopg.Connection[Any],
        org_id: uuid.UUID,
        connection_id: uuid.UUID,
        name: str,
        *,
        lock: str = "",
    ) -> ConnectionRoleRow | None:
        """One role of one connection, a role being removed included (see ``deleted_at``).

        ``lock`` is "update" or "share" to lock the row until the transaction ends: a lease
        recorded under a share lock cannot slip past a removal, which takes the update lock
        before it looks for the role's leases.
        """
        query = sql.SQL(
            "select * from connection_roles where org_id = %s and connection_id = %s"
            " and name = %s{}"
        ).format(sql.SQL({"": "", "update": " for update", "share": " for share"}[lock]))
        with conn.cursor(row_factory=dataclass_row(ConnectionRoleRow)) as cur:
            cur.execute(query, (org_id, connection_id, name))
            return cur.fetchone()

    @staticmethod
    def list_roles(
        conn: psycopg.Connection[Any],
        org_id: uuid.UUID,
        connection_id: uuid.UUID,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[ConnectionRoleRow]:
        """One page of a connection's roles in creation order, without roles being removed."""
        with conn.cursor(row_factory=dataclass_row(ConnectionRoleRow)) as cur:
            cur.execute(
                "select * from connection_roles where org_id = %s and connection_id = %s"
                " and deleted_at is null and (%s::timestamptz is null"
                " or (created_at, id) > (%s::timestamptz, %s::uuid))"
                " order by created_at, id limit %s",
                (
                    org_id,
                    connection_id,
                    after and after[0],
                    after and after[0],
                    after and after[1],
                    limit,
                ),
            )
            return cur.fetchall()

    @staticmethod
    def count_roles(
        conn: psycopg.Connection[Any], org_id: uuid.UUID, connection_id: uuid.UUID
    ) -> int:
        """How many roles a connection has, roles being removed included."""
        row = conn.execute(
            "select count(*) from connection_roles where org_id = %s and connection_id = %s",
            (org_id, connection_id),
        ).fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def update_role(conn: psycopg.Connection[Any], role: ConnectionRoleRow) -> None:
        """Writes back a role's display copies and life."""
        conn.execute(
            "update connection_roles set default_ttl_seconds = %s, max_ttl_seconds = %s,"
            " group_role = %s, creation_statement_count = %s, revocation_statement_count = %s,"
            " updated_at = %s, deleted_at = %s where org_id = %s and id = %s",
            (
                role.default_ttl_seconds,
                role.max_ttl_seconds,
                role.group_role,
                role.creation_statement_count,
                role.revocation_statement_count,
                role.updated_at,
                role.deleted_at,
                role.org_id,
                role.id,
            ),
        )

    @staticmethod
    def delete_role(conn: psycopg.Connection[Any], org_id: uuid.UUID, role_id: uuid.UUID) -> None:
        """Removes a role's row for good."""
        conn.execute(
            "delete from connection_roles where org_id = %s and id = %s", (org_id, role_id)
        )

    @staticmethod
    def removed_roles_without_leases(
        conn: psycopg.Connection[Any], org_id: uuid.UUID, connection_id: uuid.UUID
    ) -> list[ConnectionRoleRow]:
        """A connection's roles removed with force whose every lease is revoked by now."""
        with conn.cursor(row_factory=dataclass_row(ConnectionRoleRow)) as cur:
            cur.execute(
                "select * from connection_roles r where org_id = %s and connection_id = %s"
                " and deleted_at is not null and not exists (select 1 from leases l"
                " where l.connection_id = r.connection_id and l.role = r.name"
                " and l.state <> 'revoked')",
                (org_id, connection_id),
            )
            return cur.fetchall()

    def count_by_kek(self) -> dict[str, int]:
        """How many payloads each key-encryption key seals."""
        with self.connection() as conn:
            rows = conn.execute(
                "select kek_id, count(*) from connections group by kek_id"
            ).fetchall()
        return {str(kek): int(n) for kek, n in rows}


def _jsonb(value: dict[str, Any] | list[Any] | None) -> Jsonb | None:
    return None if value is None else Jsonb(value)
