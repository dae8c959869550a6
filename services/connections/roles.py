"""Named roles of dynamic connections: add, read, change and remove them, each audited.

A role is one set of creation and revocation statements with its own lease lifetimes. Its
settings are sealed in the connection's payload, where the single set always lived
("dynamic" is the role "default", "roles" the others); ``connection_roles`` rows hold
display copies and each role's life. Every change locks the connection's row, so changes to
one connection's roles, and rotations of its privileged password, happen one at a time.

Removal with live leases (forced) is a soft delete: the role disappears from listings and no
new lease may use it, while its statements stay sealed until every one of its leases is
revoked, so the agent's reaper revokes each lease with its own role's statements. Roles
whose last lease is revoked are dropped for good at the next change to the connection's
roles.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg

from services.connections.domain import (
    TARGET_TYPE,
    ConnectionsDomain,
    run_audited,
)
from services.connections.dynamic import (
    DynamicSettings,
    dynamic_settings,
    role_update_mask,
    updated_settings,
)
from services.connections.kinds import kind_named, unsupported
from services.connections.kinds.postgres import dynamic_columns
from services.connections.leases import request_revocation
from services.connections.postgres_target import PostgresTarget
from services.connections.store import ConnectionRoleRow, ConnectionRow, ConnectionStore, LeaseRow
from sevvo.runtime import paging, validation
from sevvo.runtime.errors import AlreadyExists, FailedPrecondition, NotFound
from sevvo.runtime.logs import get_logger
from sevvo.runtime.tokens import Principal
from sevvo.runtime.workload_grants import DEFAULT_ROLE, role_name

log = get_logger(__name__)
T = TypeVar("T")

# Every role's statements ride in the connection's sealed payload, which every resolve
# unseals; this keeps that payload bounded (20 roles of at most 20 statements of 4 KB).
MAX_ROLES_PER_CONNECTION = 20


@dataclass(frozen=True)
class RoleSettingsInput:
    """A role's settings as an admin gave them, not yet validated (ConnectionRoleSettings)."""

    default_ttl_seconds: int = 0
    max_ttl_seconds: int = 0
    creation_statements: Sequence[str] = ()
    revocation_statements: Sequence[str] = ()
    group_role: str = ""

    def validated(self, prefix: str = "settings") -> DynamicSettings:
        """The settings under every rule, defaults filled in; InvalidArgument naming the field."""
        return dynamic_settings(
            default_ttl_seconds=self.default_ttl_seconds,
            max_ttl_seconds=self.max_ttl_seconds,
            creation_statements=self.creation_statements,
            revocation_statements=self.revocation_statements,
            group_role=self.group_role,
            prefix=prefix,
        )


@dataclass(frozen=True)
class RoleRemoval:
    """What removing a role left for the agent: leases this call asked to revoke, and how
    many of the role's leases are not revoked yet."""

    marked: list[LeaseRow]
    unrevoked: int


def _connection_not_found() -> NotFound:
    return NotFound("connection not found", reason="CONNECTION_NOT_FOUND")


def _role_not_found(name: str) -> NotFound:
    return NotFound(f'the connection has no role "{name}"', reason="ROLE_NOT_FOUND")


def _not_dynamic() -> FailedPrecondition:
    return FailedPrecondition(
        "only a dynamic connection has roles; this one has fixed credentials",
        reason="NOT_DYNAMIC_CONNECTION",
    )


def _statements_changed(before: DynamicSettings, after: DynamicSettings) -> bool:
    return (before.creation_statements, before.revocation_statements) != (
        after.creation_statements,
        after.revocation_statements,
    )


class RolesDomain:
    """The operations behind ConnectionRoleService."""

    def __init__(
        self,
        store: ConnectionStore,
        connections: ConnectionsDomain,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        # Sealing and test-before-save are the connection's: one implementation of each.
        self._connections = connections
        self._clock = clock

    def _audited(
        self,
        caller: Principal,
        action: str,
        connection_id: uuid.UUID,
        work: Callable[[psycopg.Connection[Any]], T],
        details: Mapping[str, str],
    ) -> T:
        return run_audited(
            self._store, caller, action, TARGET_TYPE, str(connection_id), work, details, record=True
        )

    def _dynamic_connection(
        self, conn: psycopg.Connection[Any], org_id: uuid.UUID, cid: uuid.UUID, *, lock: bool
    ) -> ConnectionRow:
        row = self._store.get(conn, org_id, cid, for_update=lock)
        if row is None:
            raise _connection_not_found()
        if row.type != "postgres":
            raise unsupported(kind_named(row.type), "connection roles")
        if row.credential_mode != "dynamic":
            raise _not_dynamic()
        return row

    def _live_role(
        self, conn: psycopg.Connection[Any], org_id: uuid.UUID, cid: uuid.UUID, name: str
    ) -> ConnectionRoleRow:
        role = self._store.get_role(conn, org_id, cid, name)
        if role is None or role.deleted_at is not None:
            raise _role_not_found(name)
        return role

    def _save(
        self,
        conn: psycopg.Connection[Any],
        row: ConnectionRow,
        target: PostgresTarget,
        now: datetime,
    ) -> None:
        """Re-seals the connection's payload as ``target``; the display copies of "default"
        on the connection row follow it."""
        sealed = self._connections.seal_target(row.org_id, row.id, target)
        self._store.update(
            conn,
            replace(
                row,
                **dynamic_columns(target),
                kek_id=sealed.key_id,
                sealed_credentials=sealed.blob,
                updated_at=now,
            ),
        )

    def _purge_removed(
        self, conn: psycopg.Connection[Any], row: ConnectionRow, target: PostgresTarget
    ) -> PostgresTarget:
        """Drops the rows and statements of removed roles whose every lease is revoked."""
        for removed in self._store.removed_roles_without_leases(conn, row.org_id, row.id):
            self._store.delete_role(conn, row.org_id, removed.id)
            target = target.without_role(removed.name)
        return target

    # Reads (any user of the org).

    def get(self, caller: Principal, connection_id: str, name: str) -> ConnectionRoleRow:
        """One role of a connection of the caller's org; another org's is NOT_FOUND."""
        cid = validation.resource_id("connection_id", connection_id)
        role = role_name("name", name)
        with self._store.connection() as conn:
            self._dynamic_connection(conn, uuid.UUID(caller.org_id), cid, lock=False)
            return self._live_role(conn, uuid.UUID(caller.org_id), cid, role)

    def list(
        self, caller: Principal, connection_id: str, page_size: int, page_token: str
    ) -> tuple[list[ConnectionRoleRow], str]:
        """One page of a connection's roles, oldest first, and the next page token."""
        cid = validation.resource_id("connection_id", connection_id)
        limit = paging.page_size(page_size)
        org_id = uuid.UUID(caller.org_id)
        with self._store.connection() as conn:
            self._dynamic_connection(conn, org_id, cid, lock=False)
            rows = self._store.list_roles(
                conn, org_id, cid, limit + 1, paging.decode_cursor(page_token)
            )
        return paging.page_of(rows, limit, lambda r: (r.created_at, r.id))

    # Writes (admins).

    async def create(
        self,
        caller: Principal,
        connection_id: str,
        name: str,
        settings: RoleSettingsInput,
        bearer: str = "",
    ) -> ConnectionRoleRow:
        """Adds a role to a dynamic connection once a dry run of its statements passed.

        A failed dry run saves nothing (CREDENTIAL_TEST_FAILED with the category, audited);
        without a tester configured the role is saved untested, as connections are.
        """
        cid = validation.resource_id("connection_id", connection_id)
        role = role_name("name", name)
        wanted = settings.validated()
        org_id = uuid.UUID(caller.org_id)
        action, details = "connection.role.create", {"role": role}

        def check(conn: psycopg.Connection[Any]) -> PostgresTarget:
            # The cheap refusals come before the agent's dry run, and are audited.
            row = self._dynamic_connection(conn, org_id, cid, lock=False)
            existing = self._store.get_role(conn, org_id, cid, role)
            if existing is not None and existing.deleted_at is None:
                raise _name_taken(role)
            return self._connections.unseal_row(row)

        current = await asyncio.to_thread(self._audited_check, caller, action, cid, check, details)
        # The draft is the connection's privileged login with this role as its statements.
        draft = replace(current, dynamic=wanted, roles=())
        tested = await self._connections.test_before_save(
            caller, bearer, draft, action=action, target_id=str(cid), details=details
        )

        def work(conn: psycopg.Connection[Any]) -> ConnectionRoleRow:
            row = self._dynamic_connection(conn, org_id, cid, lock=True)
            existing = self._store.get_role(conn, org_id, cid, role, lock="update")
            if existing is not None and existing.deleted_at is None:
                raise _name_taken(role)
            target = self._purge_removed(conn, row, self._connections.unseal_row(row))
            if existing is not None and self._store.get_role(conn, org_id, cid, role) is not None:
                # Removed with force, and some of its leases still wait for the reaper, who
                # needs the old statements to revoke them.
                unrevoked = self._store.count_unrevoked_leases(conn, org_id, cid, role)
                raise FailedPrecondition(
                    f'role "{role}" is still being removed: {unrevoked} of its leases are not'
                    " revoked yet; try again once the agent has revoked them",
                    reason="ROLE_BEING_REMOVED",
                    metadata={"unrevoked_leases": str(unrevoked)},
                )
            if self._store.count_roles(conn, org_id, cid) >= MAX_ROLES_PER_CONNECTION:
                raise FailedPrecondition(
                    f"a connection has at most {MAX_ROLES_PER_CONNECTION} roles (roles being"
                    " removed included); delete one first",
                    reason="ROLE_LIMIT_REACHED",
                )
            now = self._clock()
            self._save(conn, row, target.with_role(role, wanted), now)
            created = ConnectionRoleRow(
                id=uuid.uuid4(),
                org_id=org_id,
                connection_id=cid,
                name=role,
                **_role_columns(wanted),
                created_at=now,
                updated_at=now,
            )
            self._store.insert_role(conn, created)
            return created

        created = await asyncio.to_thread(
            self._audited, caller, action, cid, work, {**details, "tested": str(tested).lower()}
        )
        log.info("connection role created", connection_id=str(cid), role=role, tested=tested)
        return created

    async def update(
        self,
        caller: Principal,
        connection_id: str,
        name: str,
        mask: Sequence[str],
        settings: RoleSettingsInput,
        bearer: str = "",
    ) -> ConnectionRoleRow:
        """Changes the masked settings of a role; changed statements are dry-run first.

        A failed dry run leaves the role exactly as it was. A change that lands while the
        dry run ran is refused (CONCURRENT_UPDATE) rather than overwritten.
        """
        cid = validation.resource_id("connection_id", connection_id)
        role = role_name("name", name)
        paths = role_update_mask(mask)
        org_id = uuid.UUID(caller.org_id)
        action = "connection.role.update"
        details = {"role": role, "fields": ",".join(sorted(paths))}

        def check(conn: psycopg.Connection[Any]) -> tuple[PostgresTarget, ConnectionRoleRow]:
            row = self._dynamic_connection(conn, org_id, cid, lock=False)
            return self._connections.unseal_row(row), self._live_role(conn, org_id, cid, role)

        current, seen = await asyncio.to_thread(
            self._audited_check, caller, action, cid, check, details
        )
        before = current.role_settings(role)
        if before is None:  # A row without sealed settings: never written so.
            raise _role_not_found(role)
        after = updated_settings(
            before,
            paths,
            default_ttl_seconds=settings.default_ttl_seconds,
            max_ttl_seconds=settings.max_ttl_seconds,
            creation_statements=settings.creation_statements,
            revocation_statements=settings.revocation_statements,
            group_role=settings.group_role,
        )
        tested = False
        if _statements_changed(before, after):
            draft = replace(current, dynamic=after, roles=())
            tested = await self._connections.test_before_save(
                caller, bearer, draft, action=action, target_id=str(cid), details=details
            )

        def work(conn: psycopg.Connection[Any]) -> ConnectionRoleRow:
            row = self._dynamic_connection(conn, org_id, cid, lock=True)
            found = self._store.get_role(conn, org_id, cid, role, lock="update")
            if found is None or found.deleted_at is not None:
                raise _role_not_found(role)
            if found.updated_at != seen.updated_at:
                raise FailedPrecondition(
                    "the role changed while its new statements were tested; try again",
                    reason="CONCURRENT_UPDATE",
                )
            now = self._clock()
            target = self._purge_removed(conn, row, self._connections.unseal_row(row))
            self._save(conn, row, target.with_role(role, after), now)
            updated = replace(found, **_role_columns(after), updated_at=now)
            self._store.update_role(conn, updated)
            return updated

        updated = await asyncio.to_thread(
            self._audited, caller, action, cid, work, {**details, "tested": str(tested).lower()}
        )
        log.info("connection role updated", connection_id=str(cid), role=role, tested=tested)
        return updated

    def delete(self, caller: Principal, connection_id: str, name: str, force: bool) -> RoleRemoval:
        """Removes a role; with leases not yet revoked, only with ``force``, which first asks
        the agent to revoke them (see the module docstring). "default" stays."""
        cid = validation.resource_id("connection_id", connection_id)
        role = role_name("name", name)
        org_id = uuid.UUID(caller.org_id)
        details = {"role": role, "force": str(force).lower()}

        def work(conn: psycopg.Connection[Any]) -> RoleRemoval:
            row = self._dynamic_connection(conn, org_id, cid, lock=True)
            # Locked before its leases are looked at: a lease being recorded now either is
            # seen below or sees the role gone (LeasesDomain.create).
            found = self._store.get_role(conn, org_id, cid, role, lock="update")
            if found is None or found.deleted_at is not None:
                raise _role_not_found(role)
            if role == DEFAULT_ROLE:
                raise FailedPrecondition(
                    'the role "default" cannot be removed: sevvo\'s own credential tests and'
                    " previews mint from it, and a dynamic connection keeps at least one role;"
                    " change its statements instead",
                    reason="DEFAULT_ROLE_REQUIRED",
                )
            unrevoked = self._store.count_unrevoked_leases(conn, org_id, cid, role)
            if unrevoked and not force:
                raise FailedPrecondition(
                    f'role "{role}" has {unrevoked} leases not yet revoked; revoke them and let'
                    " the agent drop their roles, or delete with force, which asks the agent"
                    " to revoke them first",
                    reason="ROLE_HAS_LEASES",
                    metadata={"unrevoked_leases": str(unrevoked)},
                )
            now = self._clock()
            marked: list[LeaseRow] = []
            if unrevoked:
                leases = self._store.lock_revocable_leases(conn, org_id, cid, None, role)
                marked = request_revocation(conn, caller, leases, now)
                self._store.update_role(conn, replace(found, deleted_at=now, updated_at=now))
                target = self._purge_removed(conn, row, self._connections.unseal_row(row))
            else:
                self._store.delete_role(conn, org_id, found.id)
                target = self._purge_removed(conn, row, self._connections.unseal_row(row))
                target = target.without_role(role)
            self._save(conn, row, target, now)
            return RoleRemoval(marked, unrevoked)

        removal = run_audited(
            self._store,
            caller,
            "connection.role.delete",
            TARGET_TYPE,
            str(cid),
            _with_count(work, details),
            details,
            record=True,
        )
        log.info(
            "connection role deleted",
            connection_id=str(cid),
            role=role,
            unrevoked=removal.unrevoked,
            revoke_requested=len(removal.marked),
        )
        return removal

    def _audited_check(
        self,
        caller: Principal,
        action: str,
        cid: uuid.UUID,
        check: Callable[[psycopg.Connection[Any]], T],
        details: Mapping[str, str],
    ) -> T:
        """Runs a read-only check; a refusal is audited as ``action``, success is not (the
        write that follows records it)."""
        return run_audited(
            self._store, caller, action, TARGET_TYPE, str(cid), check, details, record=False
        )


def _name_taken(role: str) -> AlreadyExists:
    return AlreadyExists(
        f'the connection already has a role "{role}"; update it, or pick another name',
        reason="ROLE_NAME_TAKEN",
    )


def _role_columns(settings: DynamicSettings) -> dict[str, Any]:
    """A role row's display copies of its sealed settings."""
    return {
        "default_ttl_seconds": settings.default_ttl_seconds,
        "max_ttl_seconds": settings.max_ttl_seconds,
        "group_role": settings.group_role,
        "creation_statement_count": len(settings.creation_statements),
        "revocation_statement_count": len(settings.revocation_statements),
    }


def _with_count(
    work: Callable[[psycopg.Connection[Any]], RoleRemoval], details: dict[str, str]
) -> Callable[[psycopg.Connection[Any]], RoleRemoval]:
    """``work``, adding to the audit details how many leases the removal left unrevoked."""

    def counted(conn: psycopg.Connection[Any]) -> RoleRemoval:
        removal = work(conn)
        details["unrevoked_leases"] = str(removal.unrevoked)
        return removal

    return counted
