"""The connections service's rules: create, read, update, delete and resolve, all audited.

Every method takes the verified caller and acts only inside ``caller.org_id``. Credentials are
sealed with the org and connection ids as associated data, so a payload copied onto another
row does not open.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg

from services.connections.postgres_target import PostgresTarget, from_fields
from services.connections.store import ConnectionRow, ConnectionStore
from sevvo.runtime import audit, paging, validation
from sevvo.runtime.errors import InvalidArgument, NotFound, SevvoError
from sevvo.runtime.logs import get_logger
from sevvo.runtime.sealing import Keyring, Sealed, rewrap, seal, unseal
from sevvo.runtime.tokens import Principal

log = get_logger(__name__)
T = TypeVar("T")

TARGET_TYPE = "connection"
FIELD_PATHS = (
    "fields.host",
    "fields.port",
    "fields.database",
    "fields.username",
    "fields.password",
    "fields.ssl_mode",
)
UPDATABLE_PATHS = ("display_name", *FIELD_PATHS)
CREDENTIAL_PATHS = {"fields.username", "fields.password"}
_PURPOSE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True)
class ConnectionUpdate:
    """New values for an update; only the paths in ``mask`` are read."""

    mask: tuple[str, ...]
    display_name: str = ""
    host: str = ""
    port: int | None = None
    database: str = ""
    username: str = ""
    password: str = ""
    ssl_mode: str = ""


def _aad(org_id: uuid.UUID, connection_id: uuid.UUID) -> bytes:
    return f"sevvo.connections.v1|{org_id}|{connection_id}".encode()


def _not_found() -> NotFound:
    return NotFound("connection not found", reason="CONNECTION_NOT_FOUND")


class ConnectionsDomain:
    """The operations behind ConnectionService and ConnectionCredentialService."""

    def __init__(
        self,
        store: ConnectionStore,
        keyring: Keyring,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._keyring = keyring
        self._clock = clock

    # Sealing.

    def _seal(self, org_id: uuid.UUID, connection_id: uuid.UUID, target: PostgresTarget) -> Sealed:
        return seal(self._keyring, target.to_json(), _aad(org_id, connection_id))

    def _unseal(self, row: ConnectionRow) -> PostgresTarget:
        plaintext = unseal(
            self._keyring, Sealed(row.kek_id, row.sealed_credentials), _aad(row.org_id, row.id)
        )
        return PostgresTarget.from_json(plaintext)

    # Auditing.

    def _audited(
        self,
        caller: Principal,
        action: str,
        target_id: str,
        work: Callable[[psycopg.Connection[Any]], T],
        details: Mapping[str, str] | None = None,
    ) -> T:
        """Runs ``work`` and its success record in one transaction; records refusals apart.

        Malformed requests (InvalidArgument) change nothing and are not recorded.
        """
        actor = audit.Actor.of(caller)
        try:
            with self._store.transaction() as conn:
                result = work(conn)
                audit.record(
                    conn,
                    org_id=caller.org_id,
                    actor=actor,
                    action=action,
                    target_type=TARGET_TYPE,
                    target_id=target_id,
                    details=details,
                )
                return result
        except InvalidArgument:
            raise
        except SevvoError as error:
            with self._store.transaction() as conn:
                audit.record(
                    conn,
                    org_id=caller.org_id,
                    actor=actor,
                    action=action,
                    target_type=TARGET_TYPE,
                    target_id=target_id,
                    outcome="failure",
                    reason=error.reason,
                    details=details,
                )
            raise

    # User-facing operations.

    def create(
        self, caller: Principal, display_name: str, target: PostgresTarget, credential_mode: str
    ) -> ConnectionRow:
        """Creates a connection with status pending; its credentials are sealed before storing."""
        name = validation.display_name("display_name", display_name)
        org_id, connection_id, now = uuid.UUID(caller.org_id), uuid.uuid4(), self._clock()
        sealed = self._seal(org_id, connection_id, target)
        row = ConnectionRow(
            id=connection_id,
            org_id=org_id,
            display_name=name,
            type="postgres",
            credential_mode=credential_mode,
            host=target.host,
            port=target.port,
            database=target.database,
            username=target.username,
            ssl_mode=target.ssl_mode,
            kek_id=sealed.key_id,
            sealed_credentials=sealed.blob,
            status="pending",
            last_test_at=None,
            last_test_category=None,
            created_at=now,
            updated_at=now,
        )
        self._audited(
            caller,
            "connection.create",
            str(connection_id),
            lambda conn: self._store.insert(conn, row),
            {"credential_mode": credential_mode},
        )
        log.info("connection created", connection_id=str(connection_id))
        return row

    def get(self, caller: Principal, connection_id: str) -> ConnectionRow:
        """A connection of the caller's org; another org's looks exactly like a missing one."""
        cid = validation.resource_id("id", connection_id)
        with self._store.connection() as conn:
            row = self._store.get(conn, uuid.UUID(caller.org_id), cid)
        if row is None:
            raise _not_found()
        return row

    def list(
        self, caller: Principal, page_size: int, page_token: str
    ) -> tuple[list[ConnectionRow], str]:
        """One page of the caller's org's connections and the next page token."""
        limit = paging.page_size(page_size)
        with self._store.connection() as conn:
            rows = self._store.list_page(
                conn, uuid.UUID(caller.org_id), limit + 1, paging.decode_cursor(page_token)
            )
        if len(rows) <= limit:
            return rows, ""
        rows = rows[:limit]
        return rows, paging.encode_cursor(rows[-1].created_at, str(rows[-1].id))

    def update(
        self, caller: Principal, connection_id: str, update: ConnectionUpdate
    ) -> ConnectionRow:
        """Applies the masked fields; any change to connection fields re-seals and resets status."""
        cid = validation.resource_id("id", connection_id)
        paths = _check_mask(update.mask)
        name = (
            validation.display_name("connection.display_name", update.display_name)
            if "display_name" in paths
            else None
        )
        changes_credentials = bool(paths & CREDENTIAL_PATHS)
        action = "connection.credentials.update" if changes_credentials else "connection.update"

        def work(conn: psycopg.Connection[Any]) -> ConnectionRow:
            current = self._store.get(conn, uuid.UUID(caller.org_id), cid, for_update=True)
            if current is None:
                raise _not_found()
            row = replace(current, updated_at=self._clock())
            if name is not None:
                row = replace(row, display_name=name)
            if paths & set(FIELD_PATHS):
                target = _apply_fields(self._unseal(current), update, paths)
                sealed = self._seal(row.org_id, row.id, target)
                row = replace(
                    row,
                    host=target.host,
                    port=target.port,
                    database=target.database,
                    username=target.username,
                    ssl_mode=target.ssl_mode,
                    kek_id=sealed.key_id,
                    sealed_credentials=sealed.blob,
                    credential_mode="fields",
                    status="pending",
                    last_test_at=None,
                    last_test_category=None,
                )
            self._store.update(conn, row)
            return row

        row = self._audited(caller, action, str(cid), work, {"fields": ",".join(sorted(paths))})
        log.info("connection updated", connection_id=str(cid), fields=sorted(paths))
        return row

    def delete(self, caller: Principal, connection_id: str) -> None:
        """Deletes a connection of the caller's org together with its sealed credentials."""
        cid = validation.resource_id("id", connection_id)

        def work(conn: psycopg.Connection[Any]) -> None:
            if not self._store.delete(conn, uuid.UUID(caller.org_id), cid):
                raise _not_found()

        self._audited(caller, "connection.delete", str(cid), work)
        log.info("connection deleted", connection_id=str(cid))

    # Agent-only.

    def resolve(self, caller: Principal, connection_id: str, purpose: str) -> PostgresTarget:
        """Unseals a connection's credentials for an agent of the same org, and audits it."""
        cid = validation.resource_id("connection_id", connection_id)
        purpose = purpose or "unspecified"
        if not _PURPOSE_RE.match(purpose):
            raise InvalidArgument("purpose", "must be lower_snake_case, at most 64 characters")

        def work(conn: psycopg.Connection[Any]) -> PostgresTarget:
            row = self._store.get(conn, uuid.UUID(caller.org_id), cid)
            if row is None:
                raise _not_found()
            return self._unseal(row)

        target = self._audited(
            caller, "connection.credentials.resolve", str(cid), work, {"purpose": purpose}
        )
        log.info("credentials resolved", connection_id=str(cid), purpose=purpose)
        return target

    # Operator tasks.

    def rewrap_all(self, batch_size: int = 200) -> int:
        """Re-wraps every payload not under the primary key; returns how many were moved.

        Rows locked by concurrent edits are skipped and picked up on a later pass; edits seal
        under the primary anyway.
        """
        moved = 0
        while True:
            with self._store.transaction() as conn:
                rows = self._store.lock_batch_not_under(conn, self._keyring.primary_id, batch_size)
                for row in rows:
                    sealed = rewrap(
                        self._keyring,
                        Sealed(row.kek_id, row.sealed_credentials),
                        _aad(row.org_id, row.id),
                    )
                    self._store.set_sealed(conn, row.id, sealed.key_id, sealed.blob)
            moved += len(rows)
            if not rows:
                break
        log.info("rewrap finished", moved=moved, primary=self._keyring.primary_id)
        return moved


def _check_mask(mask: Iterable[str]) -> set[str]:
    paths = set(mask)
    if not paths:
        raise InvalidArgument("update_mask", "must name at least one field")
    unknown = sorted(paths - set(UPDATABLE_PATHS))
    if unknown:
        raise InvalidArgument(
            "update_mask",
            f"cannot update {', '.join(unknown)}; updatable: {', '.join(UPDATABLE_PATHS)}",
        )
    return paths


def _apply_fields(
    current: PostgresTarget, update: ConnectionUpdate, paths: set[str]
) -> PostgresTarget:
    def pick(path: str, new: Any, old: Any) -> Any:
        return new if path in paths else old

    return from_fields(
        host=pick("fields.host", update.host, current.host),
        port=pick("fields.port", update.port, current.port),
        database=pick("fields.database", update.database, current.database),
        username=pick("fields.username", update.username, current.username),
        password=pick("fields.password", update.password, current.password),
        ssl_mode=pick("fields.ssl_mode", update.ssl_mode, current.ssl_mode),
        prefix="connection.fields",
    )
