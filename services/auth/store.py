"""Every SQL statement auth runs, against its own schema in the control-plane Postgres."""

from __future__ import annotations

import dataclasses
import secrets
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from sevvo.runtime import audit
from sevvo.runtime.errors import AlreadyExists
from sevvo.runtime.migrations import MigrationSet
from sevvo.runtime.rows import dataclass_row
from sevvo.runtime.store import SchemaStore

SCHEMA = "auth"
MIGRATIONS = Path(__file__).parent / "migrations"
_ROTATION_LOCK = 0x5E7700A1  # pg_advisory_xact_lock key serialising key rotation.
# The tables of auth's key sets, each with its own rotation lock: the Ed25519 keys that sign
# sevvo's tokens, and the ES256 keys that sign Temporal's (services/auth/temporal_tokens.py).
SIGNING_KEYS = "signing_keys"
TEMPORAL_SIGNING_KEYS = "temporal_signing_keys"
_KEY_TABLE_LOCKS = {SIGNING_KEYS: _ROTATION_LOCK, TEMPORAL_SIGNING_KEYS: _ROTATION_LOCK + 1}
_ORG_NAME_LOCK = 0x5E7700A2  # pg_advisory_xact_lock key serialising name-checked org creation.
# The channels migrations 0003 and 0005's triggers notify on every change to a deployment or
# a workload, and how each listening connection shows in pg_stat_activity.
DEPLOYMENT_CHANNEL = "sevvo_auth_deployments"
LISTENER_APPLICATION_NAME = "sevvo-auth-deployment-listener"
WORKLOAD_CHANNEL = "sevvo_auth_workloads"
WORKLOAD_LISTENER_APPLICATION_NAME = "sevvo-auth-workload-listener"


@dataclass(frozen=True)
class OrgRow:
    """An org."""

    id: uuid.UUID
    name: str
    created_at: datetime


@dataclass(frozen=True)
class UserRow:
    """A user, including the password hash (never leaves the domain layer)."""

    id: uuid.UUID
    org_id: uuid.UUID
    email: str
    password_hash: str
    role: str
    created_at: datetime
    disabled_at: datetime | None = None


@dataclass(frozen=True)
class Revocations:
    """Signed-out sessions (token id to expiry) and session cutoffs (user id to instant)."""

    sessions: dict[str, datetime]
    cutoffs: dict[str, datetime]


@dataclass(frozen=True)
class DeploymentRow:
    """An agent deployment, including the hash of its secret."""

    id: uuid.UUID
    org_id: uuid.UUID
    display_name: str
    secret_hash: bytes
    creator_user_id: uuid.UUID | None
    created_at: datetime
    revoked_at: datetime | None
    last_seen_at: datetime | None = None


# Deployments with the time each was last seen (deployment_sightings), as DeploymentRow reads.
_DEPLOYMENTS_SEEN = (
    "select d.*, s.seen_at as last_seen_at from deployments d"
    " left join deployment_sightings s on s.deployment_id = d.id"
)


@dataclass(frozen=True)
class DeploymentSecretRow:
    """What an exchange needs of a deployment: its org, the hash of its secret, revocation."""

    id: uuid.UUID
    org_id: uuid.UUID
    secret_hash: bytes
    revoked_at: datetime | None


@dataclass(frozen=True)
class SigningKeyRow:
    """A signing key with its sealed private half."""

    kid: str
    public_key: bytes
    sealed_private_key: bytes
    kek_id: str
    created_at: datetime
    activates_at: datetime
    verify_until: datetime | None


class AuthStore(SchemaStore):
    """Auth's data access; one method per query."""

    schema = SCHEMA
    migrations_dir = MIGRATIONS

    @classmethod
    def migration_sets(cls) -> tuple[MigrationSet, ...]:
        """The shared audit log's schema, then this service's own."""
        return (audit.MIGRATION_SET, *super().migration_sets())

    def append_audit(self, entry: audit.Entry) -> None:
        """Appends one audit record on its own, for an event that changes nothing else (a
        sign-in)."""
        with self.transaction() as conn:
            audit.append(conn, entry)

    # Orgs and users.

    def create_org_with_admin(
        self,
        org: OrgRow,
        admin: UserRow,
        audit_entries: Sequence[audit.Entry],
        *,
        unique_name: bool = False,
    ) -> None:
        """Inserts an org, its first admin and their audit records in one transaction.

        With ``unique_name``, raises AlreadyExists when an org of that name (ignoring case)
        exists; the lock makes two concurrent bootstraps of one name see each other.
        """
        try:
            with self.transaction() as conn:
                if unique_name:
                    conn.execute("select pg_advisory_xact_lock(%s)", (_ORG_NAME_LOCK,))
                    taken = conn.execute(
                        "select 1 from orgs where lower(name) = lower(%s)", (org.name,)
                    ).fetchone()
                    if taken:
                        raise AlreadyExists(
                            "an org with this name already exists", reason="ORG_EXISTS"
                        )
                conn.execute(
                    "insert into orgs (id, name, created_at) values (%s, %s, %s)",
                    (org.id, org.name, org.created_at),
                )
                self._insert_user(conn, admin)
                for entry in audit_entries:
                    audit.append(conn, entry)
        except pg_errors.UniqueViolation:
            raise AlreadyExists(
                "a user with this email already exists", reason="EMAIL_TAKEN"
            ) from None

    def create_user(self, user: UserRow, entry: audit.Entry) -> None:
        """Inserts a user and its audit record; raises AlreadyExists when the email is taken."""
        try:
            with self.transaction() as conn:
                self._insert_user(conn, user)
                audit.append(conn, entry)
        except pg_errors.UniqueViolation:
            raise AlreadyExists(
                "a user with this email already exists", reason="EMAIL_TAKEN"
            ) from None

    @staticmethod
    def _insert_user(conn: psycopg.Connection[tuple[object, ...]], user: UserRow) -> None:
        conn.execute(
            "insert into users (id, org_id, email, password_hash, role, created_at)"
            " values (%s, %s, %s, %s, %s, %s)",
            (user.id, user.org_id, user.email, user.password_hash, user.role, user.created_at),
        )

    def user_by_email(self, email: str) -> UserRow | None:
        """Finds a user by email, case-insensitively, across orgs, for a sign-in.

        FOR SHARE waits for a disable, delete or password change in progress, so a sign-in
        reads either the state before it (and its session then predates the cutoff the change
        sets) or the state after it, never a stale row after the cutoff was taken.
        """
        with (
            self.transaction() as conn,
            conn.cursor(row_factory=dataclass_row(UserRow)) as cur,
        ):
            cur.execute("select * from users where lower(email) = lower(%s) for share", (email,))
            return cur.fetchone()

    def org_name(self, org_id: uuid.UUID) -> str | None:
        """The org's display name; None when there is no such org."""
        with self.connection() as conn:
            row = conn.execute("select name from orgs where id = %s", (org_id,)).fetchone()
            return str(row[0]) if row else None

    def get_user(self, org_id: uuid.UUID, user_id: uuid.UUID) -> UserRow | None:
        """Finds a user of one org."""
        with self.connection() as conn, conn.cursor(row_factory=dataclass_row(UserRow)) as cur:
            cur.execute("select * from users where org_id = %s and id = %s", (org_id, user_id))
            return cur.fetchone()

    @contextmanager
    def user_change(self, org_id: uuid.UUID, user_id: uuid.UUID) -> Iterator[UserChangeTx]:
        """A transaction changing one user of one org, holding the org's user-change lock.

        The lock (the org's row) serialises changes within an org, so two admins disabling
        each other cannot both pass the "another enabled admin remains" check.
        """
        with self.transaction() as conn:
            conn.execute("select 1 from orgs where id = %s for update", (org_id,))
            with conn.cursor(row_factory=dataclass_row(UserRow)) as cur:
                cur.execute(
                    "select * from users where org_id = %s and id = %s for update",
                    (org_id, user_id),
                )
                yield UserChangeTx(conn, org_id, user_id, cur.fetchone())

    def revoke_session(
        self,
        token_id: str,
        user_id: uuid.UUID,
        expires_at: datetime,
        now: datetime,
        entry: audit.Entry,
    ) -> None:
        """Records a signed-out session (audited the first time), and forgets those whose
        tokens have expired."""
        with self.transaction() as conn:
            inserted = conn.execute(
                "insert into revoked_sessions (token_id, user_id, expires_at)"
                " values (%s, %s, %s) on conflict (token_id) do nothing",
                (token_id, user_id, expires_at),
            )
            if inserted.rowcount == 1:
                audit.append(conn, entry)
            conn.execute("delete from revoked_sessions where expires_at < %s", (now,))

    def revocations(self, now: datetime, leeway: timedelta) -> Revocations:
        """Signed-out sessions and session cutoffs that can still refuse an unexpired token."""
        with self.connection() as conn:
            sessions = conn.execute(
                "select token_id, expires_at from revoked_sessions where expires_at > %s",
                (now - leeway,),
            ).fetchall()
            cutoffs = conn.execute(
                "select user_id, valid_after from session_cutoffs where keep_until > %s", (now,)
            ).fetchall()
        return Revocations(
            sessions={str(token_id): at for token_id, at in sessions},
            cutoffs={str(user_id): at for user_id, at in cutoffs},
        )

    def list_users(
        self, org_id: uuid.UUID, limit: int, after: tuple[datetime, str] | None
    ) -> list[UserRow]:
        """One page of an org's users in creation order."""
        with self.connection() as conn, conn.cursor(row_factory=dataclass_row(UserRow)) as cur:
            if after is None:
                cur.execute(
                    "select * from users where org_id = %s order by created_at, id limit %s",
                    (org_id, limit),
                )
            else:
                cur.execute(
                    "select * from users where org_id = %s and (created_at, id) > (%s, %s::uuid)"
                    " order by created_at, id limit %s",
                    (org_id, after[0], after[1], limit),
                )
            return cur.fetchall()

    # Deployments.

    def create_deployment(self, deployment: DeploymentRow, entry: audit.Entry) -> None:
        """Inserts a deployment and its audit record."""
        with self.transaction() as conn:
            conn.execute(
                "insert into deployments"
                " (id, org_id, display_name, secret_hash, creator_user_id, created_at)"
                " values (%s, %s, %s, %s, %s, %s)",
                (
                    deployment.id,
                    deployment.org_id,
                    deployment.display_name,
                    deployment.secret_hash,
                    deployment.creator_user_id,
                    deployment.created_at,
                ),
            )
            audit.append(conn, entry)

    def deployment_secret(self, deployment_id: uuid.UUID) -> DeploymentSecretRow | None:
        """Finds a deployment by id alone: only the token exchange, which proves the secret.

        One round trip: autocommit, with no BEGIN and COMMIT around a single statement, which
        sees every revocation committed before it starts.
        """
        with self.connection() as conn:
            conn.autocommit = True
            try:
                with conn.cursor(row_factory=dataclass_row(DeploymentSecretRow)) as cur:
                    cur.execute(
                        "select id, org_id, secret_hash, revoked_at from deployments where id = %s",
                        (deployment_id,),
                    )
                    return cur.fetchone()
            finally:
                if not conn.closed:  # A broken connection is discarded by the pool anyway.
                    conn.autocommit = False

    def record_deployment_seen(self, deployment_id: uuid.UUID, at: datetime) -> None:
        """Sets the deployment's last-seen time to ``at`` unless it is already later."""
        with self.connection() as conn:
            conn.execute(
                "insert into deployment_sightings (deployment_id, seen_at) values (%s, %s)"
                " on conflict (deployment_id) do update set seen_at = excluded.seen_at"
                " where deployment_sightings.seen_at < excluded.seen_at",
                (deployment_id, at),
            )

    def notify(self, channel: str, payload: str, *, timeout: float = 1.0) -> None:
        """Sends a notification on ``channel``, waiting at most ``timeout`` s for a connection.

        For waking a listener as auth stops, which must not wait the pool's usual 5 s for a
        connection when Postgres is gone.
        """
        with self._pool.connection(timeout=timeout) as conn:  # Commits on leaving.
            conn.execute("select pg_notify(%s, %s)", (channel, payload))

    def listen_to_deployments(self) -> RowChanges:
        """Opens a connection of its own that listens for changes to deployments."""
        return RowChanges(self._conninfo, DEPLOYMENT_CHANNEL, LISTENER_APPLICATION_NAME)

    def listen_to_workloads(self) -> RowChanges:
        """Opens a connection of its own that listens for changes to workloads."""
        return RowChanges(self._conninfo, WORKLOAD_CHANNEL, WORKLOAD_LISTENER_APPLICATION_NAME)

    def get_deployment(self, org_id: uuid.UUID, deployment_id: uuid.UUID) -> DeploymentRow | None:
        """Finds a deployment of one org."""
        with (
            self.connection() as conn,
            conn.cursor(row_factory=dataclass_row(DeploymentRow)) as cur,
        ):
            cur.execute(
                f"{_DEPLOYMENTS_SEEN} where d.org_id = %s and d.id = %s", (org_id, deployment_id)
            )
            return cur.fetchone()

    def list_deployments(
        self, org_id: uuid.UUID, limit: int, after: tuple[datetime, str] | None
    ) -> list[DeploymentRow]:
        """One page of an org's deployments in creation order."""
        with (
            self.connection() as conn,
            conn.cursor(row_factory=dataclass_row(DeploymentRow)) as cur,
        ):
            if after is None:
                cur.execute(
                    f"{_DEPLOYMENTS_SEEN} where d.org_id = %s order by d.created_at, d.id limit %s",
                    (org_id, limit),
                )
            else:
                cur.execute(
                    f"{_DEPLOYMENTS_SEEN} where d.org_id = %s"
                    " and (d.created_at, d.id) > (%s, %s::uuid) order by d.created_at, d.id"
                    " limit %s",
                    (org_id, after[0], after[1], limit),
                )
            return cur.fetchall()

    def revoke_deployment(
        self, org_id: uuid.UUID, deployment_id: uuid.UUID, at: datetime, entry: audit.Entry
    ) -> DeploymentRow | None:
        """Marks a deployment revoked (keeping the first revocation time); None if not found.

        ``entry`` is recorded only by the call that revoked it: a repeat changes nothing.
        """
        with (
            self.transaction() as conn,
            conn.cursor(row_factory=dataclass_row(DeploymentRow)) as cur,
        ):
            cur.execute(
                f"{_DEPLOYMENTS_SEEN} where d.org_id = %s and d.id = %s for update of d",
                (org_id, deployment_id),
            )
            row = cur.fetchone()
            if row is None or row.revoked_at is not None:
                return row
            conn.execute(
                "update deployments set revoked_at = %s where id = %s", (at, deployment_id)
            )
            audit.append(conn, entry)
            return dataclasses.replace(row, revoked_at=at)

    def revoked_since(self, since: datetime) -> list[tuple[uuid.UUID, datetime]]:
        """Deployments revoked at or after ``since``."""
        with self.connection() as conn:
            rows = conn.execute(
                "select id, revoked_at from deployments where revoked_at >= %s", (since,)
            ).fetchall()
        return [(row[0], row[1]) for row in rows]

    # Signing keys.

    def signing_keys(self, table: str = SIGNING_KEYS) -> list[SigningKeyRow]:
        """Every stored key of a key set (SIGNING_KEYS by default), newest activation first."""
        with (
            self.connection() as conn,
            conn.cursor(row_factory=dataclass_row(SigningKeyRow)) as cur,
        ):
            cur.execute(_select_keys(table))
            return cur.fetchall()

    # Re-sealing signing keys under the current KEK (services/auth/rewrap.py).

    def count_keys_by_kek(self, table: str) -> dict[str, int]:
        """How many of a key set's keys each key-encryption key seals."""
        with self.connection() as conn:
            rows = conn.execute(
                sql.SQL("select kek_id, count(*) from {} group by kek_id").format(_key_table(table))
            ).fetchall()
        return {str(kek): int(n) for kek, n in rows}

    @staticmethod
    def lock_keys_not_under(
        conn: psycopg.Connection[Any], table: str, kek_id: str, limit: int
    ) -> list[tuple[str, str, bytes]]:
        """Locks up to ``limit`` keys sealed under another KEK, skipping rows another
        transaction holds; (kid, kek_id, sealed private key) each."""
        rows = conn.execute(
            sql.SQL(
                "select kid, kek_id, sealed_private_key from {} where kek_id <> %s"
                " order by kid limit %s for update skip locked"
            ).format(_key_table(table)),
            (kek_id, limit),
        ).fetchall()
        return [(str(kid), str(kek), bytes(sealed)) for kid, kek, sealed in rows]

    @staticmethod
    def reseal_key(
        conn: psycopg.Connection[Any],
        table: str,
        kid: str,
        old_kek_id: str,
        kek_id: str,
        sealed_private_key: bytes,
    ) -> bool:
        """Replaces one key's sealed private key if it is still under ``old_kek_id`` (so a
        second rewrap never writes over the first); True if it did."""
        cur = conn.execute(
            sql.SQL(
                "update {} set kek_id = %s, sealed_private_key = %s where kid = %s and kek_id = %s"
            ).format(_key_table(table)),
            (kek_id, sealed_private_key, kid, old_kek_id),
        )
        return cur.rowcount == 1

    @contextmanager
    def key_rotation(self, table: str = SIGNING_KEYS) -> Iterator[KeyRotationTx]:
        """A transaction holding the key set's rotation lock, so replicas never rotate twice."""
        with self.transaction() as conn:
            conn.execute("select pg_advisory_xact_lock(%s)", (_KEY_TABLE_LOCKS[table],))
            yield KeyRotationTx(conn, table)


@dataclass(frozen=True)
class RowChanged:
    """A listened-to row changed (revoked, updated, deleted); ``row_id`` None means every row."""

    row_id: uuid.UUID | None


@dataclass(frozen=True)
class Echo:
    """A notification on the listener's own channel: a heartbeat it sent, or a wake-up call."""

    payload: str


class RowChanges:
    """A dedicated connection LISTENing to one table's changes, and to its own heartbeats.

    Postgres delivers notifications of different transactions in the order the transactions
    committed (the NOTIFY reference says so), on every channel and to the sender too: when a
    heartbeat this connection sent comes back, every change committed before the heartbeat
    was sent has been received. Listening is in effect once the LISTEN statements return
    (autocommit), before the constructor does.
    """

    def __init__(self, conninfo: str, channel: str, application_name: str) -> None:
        # Keepalives make a peer that vanished without a word (a network partition) fail this
        # connection in seconds, not after TCP's retransmissions give up; libpq ignores them
        # on a unix socket, whose peer cannot vanish that way.
        self._conn = psycopg.connect(
            conninfo,
            autocommit=True,
            application_name=application_name,
            connect_timeout=5,
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=2,
            tcp_user_timeout=5000,
        )
        # A fresh channel per connection: other replicas do not hear our heartbeats, and an
        # echo from an earlier connection can never vouch for this one.
        self.own_channel = f"sevvo_auth_listener_{secrets.token_hex(8)}"
        self._channel = channel
        try:
            for name in (channel, self.own_channel):
                self._conn.execute(sql.SQL("listen {}").format(sql.Identifier(name)))
        except BaseException:
            self._conn.close()
            raise

    def send_heartbeat(self, payload: str) -> None:
        """Notifies the listener's own channel; the echo arrives after every earlier change."""
        self._conn.execute("select pg_notify(%s, %s)", (self.own_channel, payload))

    def receive(self, timeout: float) -> Iterator[RowChanged | Echo]:
        """What arrives within ``timeout`` seconds; raises psycopg.Error if the connection fails."""
        for notify in self._conn.notifies(timeout=timeout):
            if notify.channel == self.own_channel:
                yield Echo(notify.payload)
            elif notify.channel == self._channel:
                yield RowChanged(_row_id(notify.payload))

    def close(self) -> None:
        """Closes the connection, which ends the listening."""
        self._conn.close()


def _row_id(payload: str) -> uuid.UUID | None:
    # Anything but one id (a TRUNCATE's empty payload, something unexpected) means all of them.
    try:
        return uuid.UUID(payload)
    except ValueError:
        return None


class UserChangeTx:
    """The statements of one change to a user, inside the org's user-change transaction."""

    def __init__(
        self,
        conn: psycopg.Connection[tuple[object, ...]],
        org_id: uuid.UUID,
        user_id: uuid.UUID,
        user: UserRow | None,
    ) -> None:
        self._conn = conn
        self._org_id = org_id
        self._user_id = user_id
        self.user = user
        """The user as it is now, locked; None when the org has no such user."""

    def other_enabled_admins(self) -> int:
        """How many enabled admins the org has besides this user."""
        row = self._conn.execute(
            "select count(*) from users where org_id = %s and id <> %s"
            " and role = 'admin' and disabled_at is null",
            (self._org_id, self._user_id),
        ).fetchone()
        count = row[0] if row else 0
        assert isinstance(count, int)
        return count

    def _updated(self, query: str, value: object) -> UserRow:
        with self._conn.cursor(row_factory=dataclass_row(UserRow)) as cur:
            cur.execute(query, (value, self._org_id, self._user_id))
            row = cur.fetchone()
        assert row is not None, "the user row is locked by this transaction"
        return row

    def set_disabled_at(self, at: datetime | None) -> UserRow:
        """Disables the user from ``at``, or enables them with None."""
        return self._updated(
            "update users set disabled_at = %s where org_id = %s and id = %s returning *", at
        )

    def set_password_hash(self, password_hash: str) -> UserRow:
        """Replaces the user's password hash."""
        return self._updated(
            "update users set password_hash = %s where org_id = %s and id = %s returning *",
            password_hash,
        )

    def delete(self) -> None:
        """Deletes the user; deployments they created lose only their creator link."""
        self._conn.execute(
            "delete from users where org_id = %s and id = %s", (self._org_id, self._user_id)
        )

    def cut_off_sessions(self, valid_after: datetime, keep_until: datetime) -> None:
        """Voids the user's sessions issued at or before ``valid_after``, until ``keep_until``.

        A later cutoff never moves back; rows whose sessions have all expired are deleted.
        """
        self._conn.execute(
            "insert into session_cutoffs (user_id, valid_after, keep_until) values (%s, %s, %s)"
            " on conflict (user_id) do update set"
            " valid_after = greatest(session_cutoffs.valid_after, excluded.valid_after),"
            " keep_until = greatest(session_cutoffs.keep_until, excluded.keep_until)",
            (self._user_id, valid_after, keep_until),
        )
        self._conn.execute("delete from session_cutoffs where keep_until < %s", (valid_after,))

    def audit(self, actor: audit.Actor, action: str) -> None:
        """Records the change in the org's audit log, in the same transaction, naming the
        user by email too (the id alone says nothing once the user is deleted)."""
        audit.record(
            self._conn,
            org_id=self._org_id,
            actor=actor,
            action=action,
            target_type="user",
            target_id=str(self._user_id),
            details={"email": self.user.email} if self.user is not None else None,
        )


def _key_table(table: str) -> sql.Identifier:
    if table not in _KEY_TABLE_LOCKS:
        raise ValueError(f"{table!r} is not a key table")
    return sql.Identifier(table)


def _select_keys(table: str) -> sql.Composed:
    return sql.SQL("select * from {} order by activates_at desc").format(_key_table(table))


class KeyRotationTx:
    """The statements of one key rotation, all inside the rotation lock's transaction."""

    def __init__(self, conn: psycopg.Connection[tuple[object, ...]], table: str) -> None:
        self._conn = conn
        self._select = _select_keys(table)  # Also checks the table is a key table.
        self._table = sql.Identifier(table)

    def keys(self) -> list[SigningKeyRow]:
        """Every stored key, newest activation first."""
        with self._conn.cursor(row_factory=dataclass_row(SigningKeyRow)) as cur:
            cur.execute(self._select)
            return cur.fetchall()

    def insert(self, row: SigningKeyRow) -> None:
        """Stores a new key."""
        self._conn.execute(
            sql.SQL(
                "insert into {}"
                " (kid, public_key, sealed_private_key, kek_id, created_at, activates_at)"
                " values (%s, %s, %s, %s, %s, %s)"
            ).format(self._table),
            (
                row.kid,
                row.public_key,
                row.sealed_private_key,
                row.kek_id,
                row.created_at,
                row.activates_at,
            ),
        )

    def retire_all_but(self, kid: str, verify_until: datetime) -> None:
        """Sets the end of validity on every current key other than ``kid``."""
        self._conn.execute(
            sql.SQL(
                "update {} set verify_until = %s where verify_until is null and kid <> %s"
            ).format(self._table),
            (verify_until, kid),
        )

    def delete_expired(self, before: datetime) -> int:
        """Deletes keys whose last token expired before ``before``; returns how many."""
        cur = self._conn.execute(
            sql.SQL("delete from {} where verify_until < %s").format(self._table), (before,)
        )
        return cur.rowcount
