"""The connections service's rules: create, read, update, delete and resolve, all audited.

Every method takes the verified caller and acts only inside ``caller.org_id``. Credentials are
sealed with the org and connection ids as associated data, so a payload copied onto another
row does not open.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg

from services.connections.kinds import Payload, kind_named, kind_of, unsupported
from services.connections.kinds.postgres import (
    dynamic_columns,
    preview_column,
    root_certs_column,
)
from services.connections.orchestrator_client import Orchestrator, TestOutcome
from services.connections.postgres_target import (
    VERIFY_MODES,
    PostgresTarget,
    from_fields,
    password_problem,
)
from services.connections.preview_settings import PreviewSettings
from services.connections.store import (
    ConnectionRoleRow,
    ConnectionRow,
    ConnectionStore,
    DraftRow,
)
from sevvo.runtime import audit, paging, validation
from sevvo.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, SevvoError
from sevvo.runtime.logs import get_logger
from sevvo.runtime.rewrap import DEFAULT_BATCH_SIZE, SealedRow, rewrap_tables
from sevvo.runtime.sealing import KeySource, Sealed, seal, unseal
from sevvo.runtime.tokens import Principal
from sevvo.runtime.work_proof import REASONS, ProofKeyCache, VerifiedWork, WorkRefused
from sevvo.runtime.workload_grants import DEFAULT_ROLE, role_name

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
    "fields.ssl_root_cert",
)
# The preview settings ride in the sealed payload too, but changing them changes no login.
PREVIEW_PATH = "fields.preview"
UPDATABLE_PATHS = ("display_name", *FIELD_PATHS, PREVIEW_PATH)
CREDENTIAL_PATHS = {"fields.username", "fields.password"}
_PURPOSE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# Failure reasons are stable tokens, never error text: messages can quote SQL and passwords.
_REASON_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


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
    ssl_root_cert: str = ""
    preview: PreviewSettings | None = None


def _aad(org_id: uuid.UUID, connection_id: uuid.UUID) -> bytes:
    return f"sevvo.connections.v1|{org_id}|{connection_id}".encode()


def _draft_aad(org_id: uuid.UUID, draft_id: uuid.UUID) -> bytes:
    return f"sevvo.connections.v1.draft|{org_id}|{draft_id}".encode()


DRAFT_LIFETIME = timedelta(minutes=10)


def _test_failed(outcome: TestOutcome) -> FailedPrecondition:
    return FailedPrecondition(
        f"credential test failed ({outcome.category}): {outcome.message}",
        reason="CREDENTIAL_TEST_FAILED",
        metadata={"category": outcome.category, "run_id": outcome.run_id},
    )


@dataclass(frozen=True)
class WorkClaim:
    """The Temporal run an agent resolves credentials for, with the work's proof of origin."""

    proof: str
    workflow_id: str
    workflow_run_id: str
    workflow_type: str


WORKFLOW_TARGET = "workflow"
# Workflow ids and types are whatever the starter chose: bounded before they reach the log.
_MAX_WORKFLOW_FIELD = 255


def _not_found() -> NotFound:
    return NotFound("connection not found", reason="CONNECTION_NOT_FOUND")


class ConnectionsDomain:
    """The operations behind ConnectionService and ConnectionCredentialService."""

    def __init__(
        self,
        store: ConnectionStore,
        keyring: KeySource,
        *,
        orchestrator: Orchestrator | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        proof_keys: ProofKeyCache | None = None,
    ) -> None:
        self._store = store
        self._keyring = keyring
        # The orchestrator's proof keys; without them (no orchestrator configured) a claim's
        # proof cannot be checked and a resolve that carries one is refused.
        self._proof_keys = proof_keys
        # Without an orchestrator configured, saves skip the test: status pending.
        self._tester = orchestrator
        self._clock = clock

    # Sealing.

    def _seal(self, org_id: uuid.UUID, connection_id: uuid.UUID, target: Payload) -> Sealed:
        return seal(self._keyring, target.to_json(), _aad(org_id, connection_id))

    def _unseal_payload(self, row: ConnectionRow) -> Payload:
        """The row's sealed payload, read by its kind."""
        plaintext = unseal(
            self._keyring, Sealed(row.kek_id, row.sealed_credentials), _aad(row.org_id, row.id)
        )
        return kind_named(row.type).from_json(plaintext)

    def _unseal(self, row: ConnectionRow) -> PostgresTarget:
        """A Postgres connection's target; other kinds have no login, roles or previews."""
        _require_postgres(row, "logins, previews, roles and rotations")
        target = self._unseal_payload(row)
        assert isinstance(target, PostgresTarget)
        return target

    # Test-before-save.

    async def _test_draft(self, caller: Principal, bearer: str, target: Payload) -> TestOutcome:
        """Seals ``target`` as a short-lived draft, has the agent test it, then drops it."""
        assert self._tester is not None
        org_id, draft_id, now = uuid.UUID(caller.org_id), uuid.uuid4(), self._clock()
        sealed = seal(self._keyring, target.to_json(), _draft_aad(org_id, draft_id))
        draft = DraftRow(
            draft_id,
            org_id,
            sealed.key_id,
            sealed.blob,
            now,
            now + DRAFT_LIFETIME,
            type=kind_of(target).name,
        )
        await asyncio.to_thread(self._in_transaction, self._store.insert_draft, draft)
        try:
            return await self._tester.test(bearer, draft_id=str(draft_id))
        finally:
            await asyncio.to_thread(self._in_transaction, self._store.delete_draft, draft_id)

    def _in_transaction(self, work: Callable[[psycopg.Connection[Any], T], object], arg: T) -> None:
        with self._store.transaction() as conn:
            work(conn, arg)

    def _record_failure(
        self,
        caller: Principal,
        action: str,
        target_id: str,
        outcome: TestOutcome,
        details: Mapping[str, str] | None = None,
    ) -> None:
        with self._store.transaction() as conn:
            audit.record(
                conn,
                org_id=caller.org_id,
                actor=audit.Actor.of(caller),
                action=action,
                target_type=TARGET_TYPE,
                target_id=target_id,
                outcome="failure",
                reason="CREDENTIAL_TEST_FAILED",
                details={**(details or {}), "category": outcome.category},
            )

    # What services.connections.roles shares: sealing, and test-before-save of a role.

    def seal_target(
        self, org_id: uuid.UUID, connection_id: uuid.UUID, target: PostgresTarget
    ) -> Sealed:
        """``target`` sealed for the connection's row (bound to its org and id)."""
        return self._seal(org_id, connection_id, target)

    def unseal_row(self, row: ConnectionRow) -> PostgresTarget:
        """The connection's credentials and settings, unsealed."""
        return self._unseal(row)

    async def test_before_save(
        self,
        caller: Principal,
        bearer: str,
        target: PostgresTarget,
        *,
        action: str,
        target_id: str,
        details: Mapping[str, str],
    ) -> bool:
        """Tests ``target`` as a draft through the agent (for a dynamic target, a login and a
        dry run of its statements); False when no tester is configured.

        A failed test is audited as ``action`` and raised as CREDENTIAL_TEST_FAILED with the
        category; nothing is saved.
        """
        if self._tester is None:
            return False
        outcome = await self._test_draft(caller, bearer, target)
        if not outcome.ok:
            await asyncio.to_thread(
                self._record_failure, caller, action, target_id, outcome, details
            )
            raise _test_failed(outcome)
        return True

    # Auditing.

    def _audited(
        self,
        caller: Principal,
        action: str,
        target_id: str,
        work: Callable[[psycopg.Connection[Any]], T],
        details: Mapping[str, str] | None = None,
    ) -> T:
        return run_audited(
            self._store, caller, action, TARGET_TYPE, target_id, work, details, record=True
        )

    # User-facing operations.

    async def create(
        self,
        caller: Principal,
        display_name: str,
        target: Payload,
        credential_mode: str,
        bearer: str = "",
    ) -> ConnectionRow:
        """Tests the credentials through the agent, then stores the connection sealed.

        A failed test stores nothing and reports the category; with no tester configured the
        connection is stored untested (status pending). For a dynamic connection the test is
        the same login test, of the privileged role; a dry run of the creation and revocation
        statements is left to the agent's lease workflow. ``target`` is any kind's payload
        (services/connections/kinds); the kind decides the row's display copies.
        """
        name = validation.display_name("display_name", display_name)
        kind = kind_of(target)
        org_id, connection_id = uuid.UUID(caller.org_id), uuid.uuid4()
        status, tested_at = "pending", None
        if self._tester is not None:
            outcome = await self._test_draft(caller, bearer, target)
            if not outcome.ok:
                await asyncio.to_thread(
                    self._record_failure, caller, "connection.create", str(connection_id), outcome
                )
                raise _test_failed(outcome)
            status, tested_at = "connected", self._clock()
        now = self._clock()
        sealed = self._seal(org_id, connection_id, target)
        row = ConnectionRow(
            id=connection_id,
            org_id=org_id,
            display_name=name,
            type=kind.name,
            credential_mode=credential_mode,
            kek_id=sealed.key_id,
            sealed_credentials=sealed.blob,
            status=status,
            last_test_at=tested_at,
            last_test_category=None,
            created_at=now,
            updated_at=now,
            **kind.columns(target),
        )
        await asyncio.to_thread(
            self._audited,
            caller,
            "connection.create",
            str(connection_id),
            lambda conn: self._insert(conn, row),
            {"credential_mode": credential_mode},
        )
        log.info("connection created", connection_id=str(connection_id))
        return row

    def _insert(self, conn: psycopg.Connection[Any], row: ConnectionRow) -> None:
        """Stores a new connection and, for a dynamic one, its role "default"'s row."""
        self._store.insert(conn, row)
        role = default_role_row(row)
        if role is not None:
            self._store.insert_role(conn, role)

    def _find(self, org_id: uuid.UUID, connection_id: uuid.UUID) -> ConnectionRow | None:
        with self._store.connection() as conn:
            return self._store.get(conn, org_id, connection_id)

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
        return paging.page_of(rows, limit, lambda r: (r.created_at, r.id))

    async def update(
        self,
        caller: Principal,
        connection_id: str,
        update: ConnectionUpdate,
        bearer: str = "",
    ) -> ConnectionRow:
        """Applies the masked fields. Changed connection fields are tested first, then sealed.

        A failed test leaves the stored credentials exactly as they were.
        """
        cid = validation.resource_id("id", connection_id)
        paths = _check_mask(update.mask)
        name = (
            validation.display_name("connection.display_name", update.display_name)
            if "display_name" in paths
            else None
        )
        changes_credentials = bool(paths & CREDENTIAL_PATHS)
        action = "connection.credentials.update" if changes_credentials else "connection.update"
        org_id = uuid.UUID(caller.org_id)
        new_target: PostgresTarget | None = None
        seen_update: datetime | None = None
        status: str | None = None
        login_changed = bool(paths & set(FIELD_PATHS))
        if login_changed or PREVIEW_PATH in paths:
            current = await asyncio.to_thread(self._find, org_id, cid)
            if current is None:
                await asyncio.to_thread(self._audited, caller, action, str(cid), _raise_not_found)
                raise _not_found()  # Unreachable: _audited re-raises.
            new_target = self._unseal(current)
            if login_changed:
                new_target, status = _apply_fields(new_target, update, paths), "pending"
            if PREVIEW_PATH in paths:
                new_target = replace(new_target, preview=update.preview)
            seen_update = current.updated_at
            if login_changed and self._tester is not None:
                # Tested outside any transaction: a test takes seconds and must hold no lock.
                outcome = await self._test_draft(caller, bearer, new_target)
                if not outcome.ok:
                    await asyncio.to_thread(self._record_failure, caller, action, str(cid), outcome)
                    raise _test_failed(outcome)
                status = "connected"

        def work(conn: psycopg.Connection[Any]) -> ConnectionRow:
            current = self._store.get(conn, org_id, cid, for_update=True)
            if current is None:
                raise _not_found()
            if seen_update is not None and current.updated_at != seen_update:
                raise FailedPrecondition(
                    "the connection changed while its new credentials were tested; try again",
                    reason="CONCURRENT_UPDATE",
                )
            now = self._clock()
            row = replace(current, updated_at=now)
            if name is not None:
                row = replace(row, display_name=name)
            if new_target is not None:
                sealed = self._seal(row.org_id, row.id, new_target)
                row = replace(
                    row,
                    **dynamic_columns(new_target),
                    preview_settings=preview_column(new_target),
                    kek_id=sealed.key_id,
                    sealed_credentials=sealed.blob,
                )
            if new_target is not None and status is not None:
                row = replace(
                    row,
                    host=new_target.host,
                    port=new_target.port,
                    database=new_target.database,
                    username=new_target.username,
                    ssl_mode=new_target.ssl_mode,
                    ssl_root_certs=root_certs_column(new_target),
                    # A dynamic connection's fields are its privileged login; it stays dynamic.
                    credential_mode="dynamic" if new_target.dynamic else "fields",
                    status=status,
                    last_test_at=now if status == "connected" else None,
                    last_test_category=None,
                )
            self._store.update(conn, row)
            return row

        row = await asyncio.to_thread(
            self._audited, caller, action, str(cid), work, {"fields": ",".join(sorted(paths))}
        )
        log.info("connection updated", connection_id=str(cid), fields=sorted(paths))
        return row

    async def delete(
        self, caller: Principal, connection_id: str, bearer: str = "", force: bool = False
    ) -> None:
        """Deletes a connection of the caller's org with its credentials and rotation schedule.

        While leases may still have roles in the database, only a forced delete goes ahead:
        afterwards no agent could resolve the privileged login to drop them. The schedule is
        removed once the connection is gone (the orchestrator lets a member remove only a
        deleted connection's schedule); if that fails, the failure is audited and a rotation it
        starts finds no connection and changes nothing.
        """
        cid = validation.resource_id("id", connection_id)
        org_id = uuid.UUID(caller.org_id)

        def work(conn: psycopg.Connection[Any]) -> None:
            if self._store.get(conn, org_id, cid, for_update=True) is None:
                raise _not_found()
            live = self._store.count_unrevoked_leases(conn, org_id, cid)
            if live and not force:
                raise FailedPrecondition(
                    f"the connection has {live} leases not yet revoked; revoke them and let the"
                    " agent drop their roles, or delete with force",
                    reason="CONNECTION_HAS_LEASES",
                    metadata={"unrevoked_leases": str(live)},
                )
            self._store.delete(conn, org_id, cid)

        details = {"force": "true"} if force else None
        await asyncio.to_thread(self._audited, caller, "connection.delete", str(cid), work, details)
        log.info("connection deleted", connection_id=str(cid))
        if self._tester is None:
            return
        try:
            await self._tester.delete_rotation_schedule(bearer, str(cid))
        except SevvoError as exc:
            log.warning("rotation schedule not removed", connection_id=str(cid), reason=exc.reason)
            await asyncio.to_thread(self._record_schedule_left, caller, str(cid), exc.reason)

    def _record_schedule_left(self, caller: Principal, target_id: str, reason: str) -> None:
        with self._store.transaction() as conn:
            audit.record(
                conn,
                org_id=caller.org_id,
                actor=audit.Actor.of(caller),
                action="connection.rotation_schedule.delete",
                target_type=TARGET_TYPE,
                target_id=target_id,
                outcome="failure",
                reason=reason,
            )

    async def test(self, caller: Principal, connection_id: str, bearer: str) -> ConnectionRow:
        """Tests a saved connection through the agent and records the outcome as its status."""
        cid = validation.resource_id("id", connection_id)
        if self._tester is None:
            raise FailedPrecondition(
                "credential tests are not configured on this control plane",
                reason="TESTS_NOT_CONFIGURED",
            )
        # NOT_FOUND before anything starts on the org's queue.
        await asyncio.to_thread(self.get, caller, connection_id)
        outcome = await self._tester.test(bearer, connection_id=str(cid))

        def work(conn: psycopg.Connection[Any]) -> ConnectionRow:
            current = self._store.get(conn, uuid.UUID(caller.org_id), cid, for_update=True)
            if current is None:
                raise _not_found()
            row = replace(
                current,
                status="connected" if outcome.ok else "error",
                last_test_at=self._clock(),
                last_test_category=None if outcome.ok else outcome.category,
            )
            self._store.update(conn, row)
            return row

        row = await asyncio.to_thread(
            self._audited,
            caller,
            "connection.test",
            str(cid),
            work,
            {"category": outcome.category, "run_id": outcome.run_id},
        )
        log.info("connection tested", connection_id=str(cid), category=outcome.category)
        return row

    # Agent-only.

    async def verify_work(self, caller: Principal, claim: WorkClaim) -> VerifiedWork:
        """Verifies a resolve's proof of origin (not its input, which connections never sees).

        A refusal is audited as work.refused (workflow id and reason, never the input) and
        raised as PERMISSION_DENIED.
        """
        _check_workflow_fields(claim.workflow_id, claim.workflow_run_id, claim.workflow_type)
        try:
            if self._proof_keys is None:
                raise WorkRefused(
                    "WORK_PROOF_UNKNOWN_KEY", "this service cannot check proofs of origin"
                )
            return await self._proof_keys.verify(
                claim.proof,
                org_id=caller.org_id,
                workflow_id=claim.workflow_id,
                workflow_type=claim.workflow_type,
                digest=None,
                now=self._clock(),
            )
        except WorkRefused as refused:
            await asyncio.to_thread(
                self.record_work_refused, caller, claim, refused.reason, refused_by="connections"
            )
            raise

    def record_work_refused(
        self, caller: Principal, claim: WorkClaim, reason: str, *, refused_by: str = "agent"
    ) -> None:
        """Audits a workflow refused for its proof of origin: ids and the reason only."""
        _check_workflow_fields(claim.workflow_id, claim.workflow_run_id, claim.workflow_type)
        if reason not in REASONS:
            raise InvalidArgument("reason", f"must be one of {', '.join(sorted(REASONS))}")
        with self._store.transaction() as conn:
            audit.record(
                conn,
                org_id=caller.org_id,
                actor=audit.Actor.of(caller),
                action="work.refused",
                target_type=WORKFLOW_TARGET,
                target_id=claim.workflow_id,
                outcome="failure",
                reason=reason,
                details={
                    "workflow_type": claim.workflow_type,
                    "workflow_run_id": claim.workflow_run_id,
                    "refused_by": refused_by,
                },
            )
        # Ids and types are the starter's choice: they go to the audit record, not the log.
        log.warning("work refused", reason=reason, refused_by=refused_by)

    def connection_id_by_name(self, caller: Principal, name: str) -> uuid.UUID:
        """The id of the caller's org's connection named ``name``; NOT_FOUND naming it."""
        name = validation.display_name("connection_name", name)
        with self._store.connection() as conn:
            found = self._store.id_by_name(conn, uuid.UUID(caller.org_id), name)
        if found is None:
            raise NotFound(
                f"no connection named {name!r} in this org; `sevvo connections list` shows"
                " the names",
                reason="CONNECTION_NOT_FOUND",
                metadata={"connection_name": name},
            )
        return found

    def resolve(
        self,
        caller: Principal,
        connection_id: str,
        purpose: str,
        draft_id: str = "",
        work: tuple[WorkClaim, VerifiedWork] | None = None,
        role: str = "",
        connection_name: str = "",
    ) -> PostgresTarget:
        """``resolve_payload`` for a Postgres connection (the roles, leases and rotations that
        need its login); another kind is FAILED_PRECONDITION."""
        payload = self.resolve_payload(
            caller, connection_id, purpose, draft_id, work, role, connection_name
        )
        if not isinstance(payload, PostgresTarget):
            raise unsupported(kind_of(payload), "logins")
        return payload

    def resolve_payload(
        self,
        caller: Principal,
        connection_id: str,
        purpose: str,
        draft_id: str = "",
        work: tuple[WorkClaim, VerifiedWork] | None = None,
        role: str = "",
        connection_name: str = "",
    ) -> Payload:
        """Unseals a connection's (or draft's) credentials for an agent of the same org.

        The connection is named by exactly one of ``connection_id``, ``connection_name`` (its
        display name in the caller's org, as a workload names it) or ``draft_id``.

        For a dynamic connection, ``dynamic`` of the result holds the settings of the
        connection role ``role`` (empty: "default"), a role being removed included so the
        reaper can revoke its leases; ROLE_NOT_FOUND, audited, when there is no such role.
        With ``work`` (a claim whose proof verify_work accepted), the workflow id is bound to
        the first run that presents it; another run is refused (WORK_REPLAYED), audited.
        """
        if sum(map(bool, (connection_id, connection_name, draft_id))) != 1:
            raise InvalidArgument(
                "connection_id", "set exactly one of connection_id, connection_name or draft_id"
            )
        if connection_name:
            connection_id = str(self.connection_id_by_name(caller, connection_name))
        if role and draft_id:
            raise InvalidArgument("role", "must be empty with draft_id: a draft has one role")
        wanted = role_name("role", role) if role else DEFAULT_ROLE
        is_draft = bool(draft_id)
        target_id = validation.resource_id(
            "draft_id" if is_draft else "connection_id", draft_id or connection_id
        )
        purpose = check_purpose("purpose", purpose or "unspecified")
        org_id = uuid.UUID(caller.org_id)

        def work_(conn: psycopg.Connection[Any]) -> Payload:
            if work is not None:
                claim, verified = work
                holder = self._store.claim_work(
                    conn,
                    org_id,
                    claim.workflow_id,
                    claim.workflow_run_id,
                    claim.workflow_type,
                    keep_until=verified.claim_until,
                    now=self._clock(),
                )
                if holder != claim.workflow_run_id:
                    raise WorkRefused(
                        "WORK_REPLAYED", "another run of this workflow id already used its proof"
                    )
            if is_draft:
                draft = self._store.get_draft(conn, org_id, target_id)
                if draft is None:
                    raise NotFound("draft not found or expired", reason="DRAFT_NOT_FOUND")
                plaintext = unseal(
                    self._keyring,
                    Sealed(draft.kek_id, draft.sealed_credentials),
                    _draft_aad(org_id, target_id),
                )
                return kind_named(draft.type).from_json(plaintext)
            row = self._store.get(conn, org_id, target_id)
            if row is None:
                raise _not_found()
            payload = self._unseal_payload(row)
            if not isinstance(payload, PostgresTarget):
                if wanted != DEFAULT_ROLE:
                    _require_postgres(row, "connection roles")
                return payload
            target = payload
            if target.dynamic is None:
                if wanted != DEFAULT_ROLE:
                    raise _not_dynamic()
                return target
            settings = target.role_settings(wanted)
            if settings is None:
                raise NotFound("the connection has no role of this name", reason="ROLE_NOT_FOUND")
            return replace(target, dynamic=settings, roles=())

        action = "draft.credentials.resolve" if is_draft else "connection.credentials.resolve"
        details = {"purpose": purpose}
        if wanted != DEFAULT_ROLE:
            details["role"] = wanted
        if work is not None:
            details["workflow_id"] = work[0].workflow_id
            details["workflow_run_id"] = work[0].workflow_run_id
        target = self._audited(caller, action, str(target_id), work_, details)
        log.info("credentials resolved", target_id=str(target_id), purpose=purpose)
        return target

    # Rotation of a dynamic connection's privileged password (agent-only).

    def _change_privileged(
        self,
        caller: Principal,
        connection_id: str,
        action: str,
        change: Callable[[psycopg.Connection[Any], ConnectionRow, PostgresTarget], PostgresTarget],
        details: Mapping[str, str],
    ) -> None:
        """Re-seals a dynamic connection's payload as ``change`` makes it, audited.

        ``change`` sees the locked row and its unsealed target; returning the target itself
        means the change is already in place (a retry), and nothing is written.
        """
        cid = validation.resource_id("connection_id", connection_id)
        org_id = uuid.UUID(caller.org_id)

        def work(conn: psycopg.Connection[Any]) -> None:
            current = self._store.get(conn, org_id, cid, for_update=True)
            if current is None:
                raise _not_found()
            _require_postgres(current, "password rotations")
            if current.credential_mode != "dynamic":
                raise _not_dynamic()
            before = self._unseal(current)
            target = change(conn, current, before)
            if target is before:
                return
            sealed = self._seal(org_id, cid, target)
            self._store.update(
                conn,
                replace(
                    current,
                    kek_id=sealed.key_id,
                    sealed_credentials=sealed.blob,
                    updated_at=self._clock(),
                ),
            )

        self._audited(caller, action, str(cid), work, details)
        log.info("privileged credentials changed", connection_id=str(cid), step=details["step"])

    def replace_password(self, caller: Principal, connection_id: str, new_password: str) -> None:
        """Stores a new privileged password already in effect; drops any staged one."""
        self._check_password("new_password", new_password)
        self._change_privileged(
            caller,
            connection_id,
            "connection.credentials.rotate",
            lambda conn, row, target: target.with_password(new_password, field="new_password"),
            {"step": "replace"},
        )

    def stage_password(
        self,
        caller: Principal,
        connection_id: str,
        pending_password: str,
        replace_pending: bool,
        stage_id: str = "",
    ) -> None:
        """Stores a rotation's new password beside the current one, before the database has it.

        Staging the same password under the same ``stage_id`` again is a retry and succeeds.
        A different staged password is kept unless ``replace_pending``: the database may
        already use it. Refused while another connection of the org logs in as the same role
        on the same server, whose login the new password would break.
        """
        self._check_password("pending_password", pending_password)
        stage = _stage_id(stage_id)

        def change(
            conn: psycopg.Connection[Any], row: ConnectionRow, target: PostgresTarget
        ) -> PostgresTarget:
            self._refuse_shared_role(conn, row, target)
            staged = target.pending_password
            if (
                staged is not None
                and not (
                    hmac.compare_digest(staged.encode(), pending_password.encode())
                    and target.pending_stage_id == stage
                )
                and not replace_pending
            ):
                raise FailedPrecondition(
                    "another password is staged and may already be in effect; try it, then"
                    " commit it, or stage again with replace_pending once the current one works",
                    reason="PENDING_PASSWORD_EXISTS",
                )
            return target.with_pending_password(
                pending_password, field="pending_password", stage_id=stage
            )

        self._change_privileged(
            caller, connection_id, "connection.credentials.rotate.stage", change, {"step": "stage"}
        )

    def _refuse_shared_role(
        self, conn: psycopg.Connection[Any], row: ConnectionRow, target: PostgresTarget
    ) -> None:
        """Raises PRIVILEGED_ROLE_SHARED when another connection of the org has this login.

        A role is recognised by host, port and username, so this misses the same server
        reached under another name (an IP address and a host name, a DNS alias, a pooler in
        front) and connections of other orgs; see the user's guide.
        """
        login = (target.host, target.port, target.username)
        others = self._store.others_with_login(conn, row.org_id, row.id, login)
        if not others:
            return
        named = ", ".join(f'"{name}" ({other_id})' for other_id, name in others)
        raise FailedPrecondition(
            f'role "{target.username}" on {target.host}:{target.port} is also the login of'
            f" connection {named}; a new password would break it — give each connection a"
            " privileged role of its own",
            reason="PRIVILEGED_ROLE_SHARED",
            metadata={"connection_ids": ",".join(str(other_id) for other_id, _ in others)},
        )

    def commit_password(self, caller: Principal, connection_id: str, stage_id: str = "") -> None:
        """Makes the password staged under ``stage_id`` the current one, and no other.

        Committing a stage whose password is already current succeeds and changes nothing
        (a retry, or a rotation whose password a recovering agent committed first).
        """
        stage = _stage_id(stage_id)

        def change(
            conn: psycopg.Connection[Any], row: ConnectionRow, target: PostgresTarget
        ) -> PostgresTarget:
            if target.pending_password is not None and target.pending_stage_id == stage:
                return target.with_staged_committed()
            if stage is not None and target.password_stage_id == stage:
                return target
            if target.pending_password is None and stage is None:
                raise FailedPrecondition(
                    "no password is staged for this connection", reason="NO_PENDING_PASSWORD"
                )
            raise FailedPrecondition(
                "the password of this stage is no longer staged: another rotation or a user's"
                " edit replaced it, so nothing was committed",
                reason="STAGED_PASSWORD_SUPERSEDED",
            )

        self._change_privileged(
            caller, connection_id, "connection.credentials.rotate", change, {"step": "commit"}
        )

    def record_root_rotation(
        self, caller: Principal, connection_id: str, succeeded: bool, failure_reason: str
    ) -> None:
        """Audits how a rotation of a dynamic connection's privileged password ended."""
        cid = validation.resource_id("connection_id", connection_id)
        reason = reason_token("failure_reason", failure_reason, required=not succeeded)
        if succeeded and reason:
            raise InvalidArgument("failure_reason", "must be empty when the rotation succeeded")

        def check(current: ConnectionRow) -> None:
            if current.credential_mode != "dynamic":
                raise _not_dynamic()

        self._record_agent_report(
            caller,
            cid,
            "connection.root.rotate",
            outcome="success" if succeeded else "failure",
            reason=reason or None,
            check=check,
        )
        log.info("root rotation recorded", connection_id=str(cid), succeeded=succeeded)

    def record_preview_security_event(
        self, caller: Principal, connection_id: str, run_id: str, findings: dict[str, str]
    ) -> None:
        """Audits a preview that could not prove it changed nothing, as a security event.

        ``findings`` are the receipt's (booleans and counts as text; ``receipt_missing``
        among them); they go into the record's details as they are.
        """
        cid = validation.resource_id("connection_id", connection_id)
        run = str(validation.resource_id("run_id", run_id)) if run_id else ""
        missing = findings.get("receipt_missing") == "true"
        reason = "PREVIEW_RECEIPT_MISSING" if missing else "PREVIEW_RECEIPT_NOT_CLEAN"
        self._record_agent_report(
            caller,
            cid,
            "connection.preview.receipt",
            outcome="failure",
            reason=reason,
            details={"security_event": "true", "run_id": run, **findings},
        )
        log.warning("preview security event recorded", connection_id=str(cid), reason=reason)

    def _record_agent_report(
        self,
        caller: Principal,
        cid: uuid.UUID,
        action: str,
        *,
        outcome: str,
        reason: str | None,
        details: Mapping[str, str] | None = None,
        check: Callable[[ConnectionRow], None] | None = None,
    ) -> None:
        """Appends what an agent reports about a connection of its org to the audit log.

        NOT_FOUND, itself audited, when the connection is not the caller's org's; ``check``
        may refuse a connection the report does not apply to.
        """
        org_id = uuid.UUID(caller.org_id)

        def work(conn: psycopg.Connection[Any]) -> None:
            current = self._store.get(conn, org_id, cid)
            if current is None:
                raise _not_found()
            if check is not None:
                check(current)
            audit.record(
                conn,
                org_id=org_id,
                actor=audit.Actor.of(caller),
                action=action,
                target_type=TARGET_TYPE,
                target_id=str(cid),
                outcome=outcome,
                reason=reason,
                details=details,
            )

        run_audited(self._store, caller, action, TARGET_TYPE, str(cid), work, record=False)

    @staticmethod
    def _check_password(field: str, password: str) -> None:
        problem = password_problem(password)
        if problem is not None:
            raise InvalidArgument(field, problem)

    # Operator tasks.

    def rewrap_all(self, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
        """Re-wraps every payload not under the primary key; returns how many were moved.

        Rows locked by concurrent edits are skipped and looked for again; edits seal under
        the primary anyway. The walk is sevvo/runtime/rewrap.py's.
        """
        report = rewrap_tables([SealedConnections(self._store)], self._keyring, batch_size)
        return sum(report.moved.values())


class SealedConnections:
    """The connections' sealed credentials, as rewrap walks them."""

    name = "connections"

    def __init__(self, store: ConnectionStore) -> None:
        self._store = store

    def transaction(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """A connection inside one transaction."""
        return self._store.transaction()

    def count_by_kek(self) -> Mapping[str, int]:
        """How many payloads each key-encryption key seals."""
        return self._store.count_by_kek()

    def lock_not_under(
        self, conn: psycopg.Connection[Any], kek_id: str, limit: int
    ) -> list[SealedRow]:
        """Locks up to ``limit`` connections sealed under another key, skipping those being
        edited."""
        return [
            SealedRow(
                ids={"org_id": row.org_id, "connection_id": row.id},
                sealed=Sealed(row.kek_id, row.sealed_credentials),
                aad=_aad(row.org_id, row.id),
            )
            for row in self._store.lock_batch_not_under(conn, kek_id, limit)
        ]

    def replace(self, conn: psycopg.Connection[Any], row: SealedRow, sealed: Sealed) -> bool:
        """Writes the re-wrapped payload (the row is locked, so it is still as read)."""
        self._store.set_sealed(conn, row.ids["connection_id"], sealed.key_id, sealed.blob)
        return True


def run_audited(
    store: ConnectionStore,
    caller: Principal,
    action: str,
    target_type: str,
    target_id: str,
    work: Callable[[psycopg.Connection[Any]], T],
    details: Mapping[str, str] | None = None,
    *,
    record: bool,
) -> T:
    """Runs ``work`` in one transaction; records refusals apart, and success when ``record``.

    With ``record=False`` the work writes its own success records (several, or none for a
    retried call that changed nothing). Malformed requests (InvalidArgument) change nothing
    and are not recorded.
    """
    actor = audit.Actor.of(caller)
    try:
        with store.transaction() as conn:
            result = work(conn)
            if record:
                audit.record(
                    conn,
                    org_id=caller.org_id,
                    actor=actor,
                    action=action,
                    target_type=target_type,
                    target_id=target_id,
                    details=details,
                )
            return result
    except InvalidArgument:
        raise
    except SevvoError as error:
        with store.transaction() as conn:
            audit.record(
                conn,
                org_id=caller.org_id,
                actor=actor,
                action=action,
                target_type=target_type,
                target_id=target_id,
                outcome="failure",
                reason=error.reason,
                details=details,
            )
        raise


def default_role_row(row: ConnectionRow) -> ConnectionRoleRow | None:
    """The row of a new dynamic connection's role "default" (None for other connections)."""
    if (
        row.credential_mode != "dynamic"
        or row.default_ttl_seconds is None
        or row.max_ttl_seconds is None
        or row.group_role is None
        or row.creation_statement_count is None
        or row.revocation_statement_count is None
    ):
        return None
    return ConnectionRoleRow(
        id=uuid.uuid4(),
        org_id=row.org_id,
        connection_id=row.id,
        name=DEFAULT_ROLE,
        default_ttl_seconds=row.default_ttl_seconds,
        max_ttl_seconds=row.max_ttl_seconds,
        group_role=row.group_role,
        creation_statement_count=row.creation_statement_count,
        revocation_statement_count=row.revocation_statement_count,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _require_postgres(row: ConnectionRow, what: str) -> None:
    """Refuses ``what`` (plural) on a connection of another kind than Postgres."""
    if row.type != "postgres":
        raise unsupported(kind_named(row.type), what)


def _not_dynamic() -> FailedPrecondition:
    return FailedPrecondition(
        "this connection does not use dynamic credentials", reason="NOT_DYNAMIC_CONNECTION"
    )


def _check_workflow_fields(workflow_id: str, run_id: str, workflow_type: str) -> None:
    for name, value in (
        ("workflow_id", workflow_id),
        ("workflow_run_id", run_id),
        ("workflow_type", workflow_type),
    ):
        if not value or len(value) > _MAX_WORKFLOW_FIELD or not value.isprintable():
            raise InvalidArgument(
                f"work.{name}", f"must be 1 to {_MAX_WORKFLOW_FIELD} printable characters"
            )


def _stage_id(value: str) -> str | None:
    """A stage id in canonical form, or None for a stage without one."""
    return str(validation.resource_id("stage_id", value)) if value else None


def check_purpose(field: str, value: str) -> str:
    """A purpose recorded with resolves and leases: lower_snake_case, at most 64 characters."""
    if not _PURPOSE_RE.match(value):
        raise InvalidArgument(field, "must be lower_snake_case, at most 64 characters")
    return value


def reason_token(field: str, value: str, *, required: bool) -> str:
    """A stable failure reason: letters, digits and underscores, at most 64; '' if unset."""
    if not value:
        if required:
            raise InvalidArgument(field, "is required")
        return ""
    if not _REASON_RE.match(value):
        raise InvalidArgument(
            field,
            "must be a stable reason token (letters, digits, underscores; at most 64),"
            " not an error message",
        )
    return value


def _raise_not_found(conn: psycopg.Connection[Any]) -> None:
    raise _not_found()


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

    ssl_mode = pick("fields.ssl_mode", update.ssl_mode, current.ssl_mode)
    stored_bundle = "" if current.ssl_root_cert is None else current.ssl_root_cert.pem
    root_cert = pick("fields.ssl_root_cert", update.ssl_root_cert, stored_bundle)
    if "fields.ssl_root_cert" not in paths and ssl_mode.strip().lower() not in VERIFY_MODES:
        # Moving to a mode that verifies nothing drops the bundle it would not use; moving
        # between verify-ca and verify-full keeps it.
        root_cert = ""
    target = from_fields(
        host=pick("fields.host", update.host, current.host),
        port=pick("fields.port", update.port, current.port),
        database=pick("fields.database", update.database, current.database),
        username=pick("fields.username", update.username, current.username),
        password=pick("fields.password", update.password, current.password),
        ssl_mode=ssl_mode,
        ssl_root_cert=root_cert,
        prefix="connection.fields",
    )
    # A user who sets the password decides it; otherwise a staged rotation stays staged.
    if "fields.password" in paths:
        return replace(
            target, dynamic=current.dynamic, roles=current.roles, preview=current.preview
        )
    return current.with_login_of(target)
