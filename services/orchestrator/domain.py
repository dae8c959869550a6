"""The orchestrator's rules: start work on the org's queue, keep run metadata, own schedules.

The org always comes from the caller's verified token, so a user of one org can neither
start work on another org's task queue nor read its runs. Work on a saved connection starts
only after the connections service, asked with the caller's own token, confirms the
connection is the caller's org's (NOT_FOUND otherwise, before any run is recorded).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from google.protobuf import json_format
from google.protobuf.message import Message
from temporalio.service import RPCError

from services.orchestrator import schedules
from services.orchestrator.connections_client import (
    ConnectionInfo,
    ConnectionLookup,
    not_dynamic,
    require_source,
)
from services.orchestrator.models import ModelRow
from services.orchestrator.payload_keys import (
    Maintenance,
    PayloadKeys,
    Rotation,
    RotationReason,
)
from services.orchestrator.proofs import ProofKeys
from services.orchestrator.runs import (
    DEFAULT_QUEUE_ALLOWANCE,
    WATCH_MARGIN,
    OrgClients,
    Outcome,
    RunFateUnknown,
    RunTracker,
    WorkKind,
    outcome_of,
)
from services.orchestrator.schedules import RotationSchedule
from services.orchestrator.store import OrchestratorStore, RunRow, SyncRunning
from sevvo.runtime import audit, outcomes, paging, validation, work_proof
from sevvo.runtime import temporal as names
from sevvo.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from sevvo.runtime.logs import get_logger
from sevvo.runtime.outcomes import (
    PREVIEW_CATEGORIES,
    ROOT_ROTATION_CATEGORIES,
    SYNC_CATEGORIES,
    TEST_CATEGORIES,
)
from sevvo.runtime.payload_codec import OrgPayloadKeys
from sevvo.runtime.tokens import Principal
from sevvo.workflows.v1 import workflows_pb2

log = get_logger(__name__)


MAX_PREVIEW_SQL_BYTES = 100 * 1024
# Audit actions of the orchestrator (docs/user-guide.md lists every action).
RUN_START_ACTION = "run.start"
PREVIEW_ACTION = "connection.preview"
SCHEDULE_SET_ACTION = "connection.rotation_schedule.set"
SCHEDULE_DELETE_ACTION = "connection.rotation_schedule.delete"
# The statement timeout is 10 s; connecting, the round trips and a wait in the queue get the rest.
PREVIEW_TIMEOUT = timedelta(seconds=40)
# Who starts a model's scheduled syncs, as runs and the audit log name it.
SCHEDULE_ACTOR = audit.Actor(kind="system", id="schedule")
# The longest a sync may run in the agent; the activity heartbeats, so a lost agent is noticed
# within a minute and the sync retried, not waited out.
SYNC_TIMEOUT = timedelta(hours=6)
# The longest one WaitRun call waits; a caller asks again for a run that is still running.
MAX_RUN_WAIT = timedelta(seconds=60)


# A run whose work answered takes its category's name and state from the outcome catalogue:
# only a success (ok, rotated) is succeeded; a wrong password or a rejected preview failed.


def _test_outcome(result: workflows_pb2.CredentialTestResult) -> Outcome:
    return outcome_of(TEST_CATEGORIES.outcome(result.category), result.message)


def _preview_outcome(result: workflows_pb2.PreviewQueryResult) -> Outcome:
    # Never the rows and never the database's message (it can quote a value): counts only.
    return outcome_of(
        PREVIEW_CATEGORIES.outcome(result.category),
        f"sqlstate {result.sqlstate}" if result.sqlstate else None,
        row_count=len(result.rows),
        truncated=result.truncated,
    )


def _rotation_outcome(result: workflows_pb2.RootRotationResult) -> Outcome:
    return outcome_of(ROOT_ROTATION_CATEGORIES.outcome(result.category), result.message)


def sync_report(result: workflows_pb2.SyncResult) -> dict[str, object]:
    """What a run keeps of a sync's result: every field but the category and message (the
    run's own columns). SyncResult holds only counts, durations, flags and a fingerprint
    (tests/test_sync_report.py), so neither does this."""
    report = json_format.MessageToDict(result, preserving_proto_field_name=True)
    report.pop("category", None)
    report.pop("message", None)
    return report


def _sync_outcome(result: workflows_pb2.SyncResult) -> Outcome:
    return outcome_of(
        SYNC_CATEGORIES.outcome(result.category), result.message, sync_report=sync_report(result)
    )


_LOAD_MODES = {
    "full_refresh": workflows_pb2.SYNC_LOAD_MODE_FULL_REFRESH,
    "incremental": workflows_pb2.SYNC_LOAD_MODE_INCREMENTAL,
}


def sync_input(run: RunRow, model: ModelRow) -> workflows_pb2.SyncInput:
    """The sync workflow's input for a run of ``model``: its definition, nothing of its rows."""
    return workflows_pb2.SyncInput(
        run_id=str(run.id),
        model_id=str(model.id),
        source_connection_id=str(model.source_connection_id),
        sql=model.sql,
        destination_connection_id=str(model.destination_connection_id),
        destination_schema=model.destination_schema,
        destination_table=model.destination_table,
        load_mode=_LOAD_MODES[model.load_mode],
        cursor_column=model.cursor_column or "",
        primary_key=list(model.primary_key),
        allow_schema_evolution=model.allow_schema_evolution,
    )


def _run_target(run: RunRow) -> tuple[str, str]:
    """What a run is about, as its audit records name it: a connection, or a draft."""
    if run.connection_id is not None:
        return "connection", str(run.connection_id)
    return "draft", str(run.draft_id)


def _preview_entry(caller: Principal, row: RunRow, statement: Mapping[str, str]) -> audit.Entry:
    """A finished preview: who, which connection, the outcome and row count, never a row."""
    outcome = outcomes.get(row.outcome_category or "") or outcomes.OTHER
    return audit.Entry(
        row.org_id,
        audit.Actor.of(caller),
        PREVIEW_ACTION,
        *_run_target(row),
        outcome="success" if outcome.succeeded else "failure",
        reason=None if outcome.succeeded else "PREVIEW_FAILED",
        details={
            "run_id": str(row.id),
            "category": outcome.name,
            "row_count": str(row.row_count or 0),
            "truncated": "true" if row.truncated else "false",
            **statement,
        },
    )


def work_kinds(test_timeout: timedelta) -> dict[str, WorkKind]:
    """Every kind of run the orchestrator starts, by the kind name its rows carry."""
    return {
        "credential_test": WorkKind(
            "credential_test",
            names.CREDENTIAL_TEST_WORKFLOW,
            workflows_pb2.CredentialTestResult,
            test_timeout,
            _test_outcome,
        ),
        "preview": WorkKind(
            "preview",
            names.PREVIEW_WORKFLOW,
            workflows_pb2.PreviewQueryResult,
            PREVIEW_TIMEOUT,
            _preview_outcome,
            keep_history=False,
        ),
        "root_rotation": WorkKind(
            "root_rotation",
            names.ROOT_ROTATION_WORKFLOW,
            workflows_pb2.RootRotationResult,
            test_timeout,
            _rotation_outcome,
        ),
        "sync": WorkKind(
            "sync",
            names.SYNC_WORKFLOW,
            workflows_pb2.SyncResult,
            SYNC_TIMEOUT,
            _sync_outcome,
        ),
    }


def longest_run(test_timeout: timedelta, queue_allowance: timedelta) -> timedelta:
    """The longest any run can go on: its kind's time to run, the wait in the queue, a margin."""
    slowest = max(kind.timeout for kind in work_kinds(test_timeout).values())
    return slowest + queue_allowance + WATCH_MARGIN


class OrchestratorDomain:
    """The operations behind OrchestratorService and PayloadKeyService."""

    def __init__(
        self,
        store: OrchestratorStore,
        payload_keys: PayloadKeys,
        clients: OrgClients,
        connections: ConnectionLookup,
        *,
        test_timeout: timedelta,
        queue_allowance: timedelta = DEFAULT_QUEUE_ALLOWANCE,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        revoked_deployments: Callable[[], Mapping[str, datetime]] = dict,
        proofs: ProofKeys | None = None,
    ) -> None:
        self._store = store
        self.revoked_deployments = revoked_deployments
        self._keys = payload_keys
        self._clients = clients
        self._connections = connections
        self._test_timeout = test_timeout
        self._queue_allowance = queue_allowance
        self._clock = clock
        self._proofs = proofs
        self._kinds = work_kinds(test_timeout)
        self.runs = RunTracker(
            store,
            clients,
            self._kinds,
            clock=clock,
            queue_allowance=queue_allowance,
            proofs=proofs,
        )

    async def _connection(
        self, caller: Principal, bearer: str, connection_id: uuid.UUID
    ) -> ConnectionInfo:
        return await self._connections.get(bearer, str(connection_id), caller.org_id)

    async def _begin(
        self,
        caller: Principal,
        kind: str,
        request_for: Callable[[RunRow], Message],
        *,
        connection_id: uuid.UUID | None = None,
        draft_id: uuid.UUID | None = None,
        model_id: uuid.UUID | None = None,
        details: Mapping[str, str] | None = None,
    ) -> RunRow:
        """Starts work for the caller and returns its run at once; the start is audited with
        the run's row."""

        def started(run: RunRow) -> audit.Entry:
            return audit.Entry(
                run.org_id,
                audit.Actor.of(caller),
                RUN_START_ACTION,
                *_run_target(run),
                details={"kind": run.kind, "run_id": str(run.id), **(details or {})},
            )

        return await self.runs.begin(
            uuid.UUID(caller.org_id),
            kind,
            request_for,
            connection_id=connection_id,
            draft_id=draft_id,
            model_id=model_id,
            creator=f"{caller.kind.value}:{caller.subject_id}",
            audit_start=started,
        )

    async def _run(
        self,
        caller: Principal,
        kind: str,
        request_for: Callable[[RunRow], Message],
        *,
        connection_id: uuid.UUID,
        details: Mapping[str, str],
    ) -> tuple[RunRow, object]:
        """Runs work for the caller and waits for its end (previews: their rows are returned
        once and stored nowhere, so there is nothing to fetch later)."""
        run = await self._begin(
            caller, kind, request_for, connection_id=connection_id, details=details
        )
        try:
            return await self.runs.outcome(run)
        except RunFateUnknown as exc:
            raise Unavailable(
                "the workflow service could not be reached to learn how the run ended; it is"
                " recorded and will be settled when the service is back: check it with"
                " `sevvo runs get`",
                reason="RUN_OUTCOME_PENDING",
                metadata={"run_id": str(exc.run.id)},
            ) from None

    async def test_connection(
        self, caller: Principal, bearer: str, *, connection_id: str = "", draft_id: str = ""
    ) -> RunRow:
        """Starts a test of a connection (or a draft) on the caller's org's queue; returns the
        run at once (see ``wait_run``)."""
        if bool(connection_id) == bool(draft_id):
            raise InvalidArgument("target", "set exactly one of connection_id or draft_id")
        field = "connection_id" if connection_id else "draft_id"
        target = validation.resource_id(field, connection_id or draft_id)
        if connection_id:
            await self._connection(caller, bearer, target)

        def request_for(run: RunRow) -> workflows_pb2.CredentialTestInput:
            request = workflows_pb2.CredentialTestInput(run_id=str(run.id))
            if connection_id:
                request.connection_id = str(target)
            else:
                request.draft_id = str(target)
            return request

        return await self._begin(
            caller,
            "credential_test",
            request_for,
            connection_id=target if connection_id else None,
            draft_id=target if draft_id else None,
        )

    async def rotate_root(self, caller: Principal, bearer: str, connection_id: str) -> RunRow:
        """Starts a rotation of a dynamic connection's privileged password through the org's
        agent; returns the run at once (see ``wait_run``).

        The run records the outcome category; the password is generated, set and proved in
        the agent and reaches only the connections service's sealed store.
        """
        target = validation.resource_id("connection_id", connection_id)
        info = await self._connection(caller, bearer, target)
        require_source(info, "it has no password to rotate")
        if not info.dynamic:
            raise not_dynamic()
        return await self._begin(
            caller,
            "root_rotation",
            lambda run: workflows_pb2.RootRotationInput(
                run_id=str(run.id), connection_id=str(target)
            ),
            connection_id=target,
        )

    async def start_sync(self, caller: Principal, bearer: str, model: ModelRow) -> RunRow:
        """Starts a sync of the caller's org's ``model`` on its agents; returns the run at once
        (see ``wait_run``).

        Both connections must still be the org's (NOT_FOUND otherwise, before any run is
        recorded). The run records the agent's counts and fingerprint, never a row.
        """
        if str(model.org_id) != caller.org_id:
            raise NotFound("model not found", reason="MODEL_NOT_FOUND")
        await self._connection(caller, bearer, model.source_connection_id)
        await self._connection(caller, bearer, model.destination_connection_id)
        try:
            return await self._begin(
                caller,
                "sync",
                lambda run: sync_input(run, model),
                connection_id=model.source_connection_id,
                model_id=model.id,
                details={"model_id": str(model.id), "model_name": model.name},
            )
        except SyncRunning:
            raise await self._sync_running(model) from None

    async def start_scheduled_sync(self, model: ModelRow) -> RunRow | None:
        """Starts the sync a model's schedule calls for; None when one of it is still running
        (that slot is skipped, as a second load beside it would only wait for the first).

        No user is behind it: the run's creator and its audit record name the schedule, and
        the connections are checked by the agent when it resolves them (a deleted connection
        ends the run invalid_stored_credentials).
        """

        def started(run: RunRow) -> audit.Entry:
            return audit.Entry(
                run.org_id,
                SCHEDULE_ACTOR,
                RUN_START_ACTION,
                *_run_target(run),
                details={"kind": run.kind, "run_id": str(run.id), "model_id": str(model.id)},
            )

        try:
            return await self.runs.begin(
                model.org_id,
                "sync",
                lambda run: sync_input(run, model),
                connection_id=model.source_connection_id,
                model_id=model.id,
                creator=f"{SCHEDULE_ACTOR.kind}:{SCHEDULE_ACTOR.id}",
                audit_start=started,
            )
        except SyncRunning:
            log.info("scheduled sync skipped: one is running", model_id=str(model.id))
            return None

    async def _sync_running(self, model: ModelRow) -> FailedPrecondition:
        running = await asyncio.to_thread(self._store.running_sync, model.org_id, model.id)
        run_id = str(running.id) if running is not None else ""
        return FailedPrecondition(
            "a sync of this model is already running; wait for it to end"
            + (f" (sevvo runs wait {run_id})" if run_id else ""),
            reason="SYNC_RUNNING",
            metadata={"run_id": run_id} if run_id else None,
        )

    async def preview_query(
        self, caller: Principal, bearer: str, connection_id: str, sql: str
    ) -> tuple[RunRow, workflows_pb2.PreviewQueryResult]:
        """Runs a user's preview through the agent; the rows go back to the caller only.

        The run keeps the category, SQLSTATE, row count and truncated flag, never the rows or
        the database's message (which can quote a value). The workflow's history, the only
        other place the (encrypted) rows passed through, is deleted once the run is finished.
        """
        target = validation.resource_id("connection_id", connection_id)
        if not sql.strip():
            raise InvalidArgument("sql", "must not be empty")
        if len(sql.encode()) > MAX_PREVIEW_SQL_BYTES:
            raise InvalidArgument("sql", f"must be at most {MAX_PREVIEW_SQL_BYTES // 1024} KB")
        require_source(
            await self._connection(caller, bearer, target), "preview its model's source instead"
        )
        statement = audit.statement_details(sql)
        row, result = await self._run(
            caller,
            "preview",
            lambda run: workflows_pb2.PreviewQueryInput(
                run_id=str(run.id), connection_id=str(target), sql=sql
            ),
            connection_id=target,
            details=statement,
        )
        if not isinstance(result, workflows_pb2.PreviewQueryResult):
            result = workflows_pb2.PreviewQueryResult(
                category=workflows_pb2.PREVIEW_CATEGORY_OTHER, message=row.message or ""
            )
        # Before the rows go back: a preview whose outcome cannot be recorded returns none.
        await asyncio.to_thread(self._store.append_audit, _preview_entry(caller, row, statement))
        log.info(
            "preview finished",
            run_id=str(row.id),
            category=row.outcome_category,
            rows=row.row_count or 0,
            duration_ms=row.duration_ms,
        )
        return row, result

    # Rotation schedules.

    async def set_root_rotation_schedule(
        self, caller: Principal, bearer: str, connection_id: str, interval: timedelta
    ) -> RotationSchedule:
        """Creates, changes or (for a zero interval) removes a connection's rotation schedule.

        Only a dynamic connection of the caller's org gets one. Returns the schedule as it
        now stands.
        """
        target = validation.resource_id("connection_id", connection_id)
        schedules.check_interval(interval)
        info = await self._connection(caller, bearer, target)
        require_source(info, "it has no password to rotate")
        if not info.dynamic:
            raise not_dynamic()
        org_id = uuid.UUID(caller.org_id)
        # A schedule's input is encrypted once, when written: with the key current now.
        client = await self._clients.for_new_work(org_id)
        try:
            if not interval:
                if await schedules.delete(client, org_id, target):
                    await self._audit_schedule(caller, SCHEDULE_DELETE_ACTION, target)
                log.info("root rotation schedule removed", connection_id=str(target))
                return schedules.NO_SCHEDULE
            current = await schedules.put(
                client,
                org_id,
                target,
                interval,
                self._test_timeout,
                signer=await self._signer(),
                set_by=f"user:{caller.subject_id}",
            )
        except RPCError as exc:
            raise _temporal_unavailable(exc) from None
        await self._audit_schedule(
            caller,
            SCHEDULE_SET_ACTION,
            target,
            {"interval_seconds": str(int(interval.total_seconds()))},
        )
        log.info("root rotation scheduled", connection_id=str(target), interval=str(interval))
        return current

    async def _audit_schedule(
        self,
        caller: Principal,
        action: str,
        connection_id: uuid.UUID,
        details: Mapping[str, str] | None = None,
    ) -> None:
        # Temporal holds the schedule, so its record follows the change in a transaction of
        # its own; a failure here fails the call, which the caller may repeat (both are
        # idempotent) until the change is on record.
        entry = audit.Entry(
            caller.org_id,
            audit.Actor.of(caller),
            action,
            "connection",
            str(connection_id),
            details=dict(details or {}),
        )
        await asyncio.to_thread(self._store.append_audit, entry)

    async def get_root_rotation_schedule(
        self, caller: Principal, bearer: str, connection_id: str
    ) -> RotationSchedule:
        """A connection's rotation schedule (interval None when it has none)."""
        target = validation.resource_id("connection_id", connection_id)
        await self._connection(caller, bearer, target)
        org_id = uuid.UUID(caller.org_id)
        client = await self._clients.for_org_async(org_id)
        try:
            return await schedules.get(client, org_id, target)
        except RPCError as exc:
            raise _temporal_unavailable(exc) from None

    async def delete_root_rotation_schedule(
        self, caller: Principal, bearer: str, connection_id: str
    ) -> bool:
        """Removes a connection's schedule: any for an admin, a deleted connection's for anyone.

        The connections service calls this after deleting a connection, on the deleting user's
        behalf; a member may not otherwise stop an admin's rotation schedule.
        """
        target = validation.resource_id("connection_id", connection_id)
        if not caller.is_admin:
            try:
                # Asked afresh, never from the recent-answers cache: the connection was just
                # deleted, and a remembered "it exists" would keep its schedule alive.
                await self._connections.get(bearer, str(target))
            except NotFound:
                pass
            else:
                raise PermissionDenied(
                    "only an org admin may remove the rotation schedule of an existing connection",
                    reason="ADMIN_REQUIRED",
                )
        org_id = uuid.UUID(caller.org_id)
        client = await self._clients.for_org_async(org_id)
        try:
            deleted = await schedules.delete(client, org_id, target)
        except RPCError as exc:
            raise _temporal_unavailable(exc) from None
        if deleted:
            await self._audit_schedule(caller, SCHEDULE_DELETE_ACTION, target)
        log.info("root rotation schedule deleted", connection_id=str(target), existed=deleted)
        return deleted

    # Runs.

    async def get_run(self, caller: Principal, run_id: str) -> RunRow:
        """A run of the caller's org."""
        rid = validation.resource_id("id", run_id)
        row = await asyncio.to_thread(self._store.get_run, uuid.UUID(caller.org_id), rid)
        if row is None:
            raise NotFound("run not found", reason="RUN_NOT_FOUND")
        return row

    async def wait_run(self, caller: Principal, run_id: str, timeout: timedelta | None) -> RunRow:
        """A run of the caller's org once it has finished, or as it stands after ``timeout``
        (at most MAX_RUN_WAIT; None or zero means MAX_RUN_WAIT)."""
        rid = validation.resource_id("id", run_id)
        if timeout is not None and timeout < timedelta(0):
            raise InvalidArgument("timeout", "must not be negative")
        if timeout is None or not timeout or timeout > MAX_RUN_WAIT:
            timeout = MAX_RUN_WAIT
        row = await self.runs.wait(uuid.UUID(caller.org_id), rid, timeout.total_seconds())
        if row is None:
            raise NotFound("run not found", reason="RUN_NOT_FOUND")
        return row

    async def list_runs(
        self,
        caller: Principal,
        page_size: int,
        page_token: str,
        model_id: str = "",
        connection_id: str = "",
    ) -> tuple[list[RunRow], str]:
        """One page of the caller's org's runs (of one model or connection, when given),
        newest first."""
        limit = paging.page_size(page_size)
        model = validation.resource_id("model_id", model_id) if model_id else None
        connection = (
            validation.resource_id("connection_id", connection_id) if connection_id else None
        )
        rows = await asyncio.to_thread(
            self._store.list_runs,
            uuid.UUID(caller.org_id),
            limit + 1,
            paging.decode_cursor(page_token),
            model,
            connection,
        )
        return paging.page_of(rows, limit, lambda r: (r.started_at, r.id))

    # Proofs of origin.

    async def _signer(self) -> work_proof.ProofSigner | None:
        return None if self._proofs is None else await asyncio.to_thread(self._proofs.signer)

    async def proof_keys(self) -> dict[str, bytes]:
        """The public halves of the proof keys, by key id."""
        if self._proofs is None:
            return {}
        return await asyncio.to_thread(self._proofs.published)

    async def vouch(self, caller: Principal, workflow_id: str, workflow_type: str) -> str:
        """A proof for a workflow of the caller's org that this orchestrator started without one.

        Only a run recorded before proofs existed and still running qualifies; its proof
        expires when the run's workflow would have timed out. NOT_FOUND otherwise.
        """
        signer = await self._signer()
        row = await asyncio.to_thread(
            self._store.run_by_workflow_id, uuid.UUID(caller.org_id), workflow_id
        )
        spec = self._kinds.get(row.kind) if row is not None else None
        if (
            signer is None
            or row is None
            or spec is None
            or row.proved
            or row.state != "running"
            or spec.workflow != workflow_type
        ):
            log.warning("work not vouched")  # The id is the starter's choice: not logged.
            raise NotFound(
                "no proof-less run of this org is in progress under that workflow id",
                reason="WORK_NOT_VOUCHED",
            )
        log.info("work vouched", run_id=str(row.id), kind=row.kind)
        return signer.vouch(
            org_id=caller.org_id,
            workflow_type=workflow_type,
            workflow_id=workflow_id,
            expires_at=row.started_at + spec.timeout + self._queue_allowance + work_proof.MARGIN,
            now=self._clock(),
        )

    async def prove_schedules(self) -> int:
        """Re-creates with proofs the rotation schedules set before schedules carried them."""
        signer = await self._signer()
        if signer is None:
            return 0
        orgs = await asyncio.to_thread(self._store.org_ids_with_keys)
        return await schedules.prove_unproved(
            orgs, self._clients.for_new_work, signer, self._test_timeout
        )

    async def prepare_namespace(self, caller: Principal) -> str:
        """Registers the caller's org's namespace unless it exists; returns its name."""
        client = await self._clients.for_org_async(uuid.UUID(caller.org_id))
        return client.namespace

    # Payload keys.

    async def payload_keys(self, caller: Principal) -> OrgPayloadKeys:
        """The caller's org's payload keys (agents only; a deployment known revoked gets none).

        An agent asks for them as it starts, before it polls its org's namespace: the
        namespace is registered then if it is not yet, so a new org's agent finds it there.
        """
        org_id = uuid.UUID(caller.org_id)
        try:
            await self._clients.for_org_async(org_id)
        except Exception as exc:  # The agent retries polling; work registers it later too.
            log.warning("org namespace not ensured", error=type(exc).__name__)
        return await asyncio.to_thread(self._keys.for_deployment, org_id, caller.subject_id)

    async def rotate_payload_key(self, caller: Principal, revoked_deployment_id: str) -> Rotation:
        """Makes a new key the caller's org's current one (admins; the interceptor checks).

        Naming a revoked deployment (auth does, forwarding the revoking admin's bearer) also
        refuses that deployment every key, and makes a second call for it rotate nothing.
        """
        deployment = (
            str(validation.resource_id("revoked_deployment_id", revoked_deployment_id))
            if revoked_deployment_id
            else None
        )
        return await asyncio.to_thread(
            self._keys.rotate,
            uuid.UUID(caller.org_id),
            audit.Actor.of(caller),
            RotationReason.DEPLOYMENT_REVOKED if deployment else RotationReason.OPERATOR,
            revoked_deployment=deployment,
        )

    async def maintain_payload_keys(self) -> Maintenance:
        """Rotates for revocations the verifier knows and on schedule; retires old keys."""
        return await self._keys.maintain(self.revoked_deployments(), self._rekey_schedules)

    async def _rekey_schedules(self, org_id: uuid.UUID) -> None:
        client = await self._clients.for_new_work(org_id)
        count = await schedules.rekey(client, org_id)
        if count:
            log.info("schedules rewritten under the current payload key", schedules=count)

    async def maintain_payload_keys_forever(self, interval: float) -> None:
        """Runs :meth:`maintain_payload_keys` every ``interval`` seconds until cancelled."""
        while True:
            try:
                done = await self.maintain_payload_keys()
                if done != Maintenance():
                    log.info(
                        "payload keys maintained",
                        revocation_rotations=done.revocation_rotations,
                        scheduled_rotations=done.scheduled_rotations,
                        retired=done.retired,
                    )
            except Exception as exc:  # The store or Temporal may be restarting.
                log.warning("payload key maintenance failed", error=type(exc).__name__)
            await asyncio.sleep(interval)


def _temporal_unavailable(exc: RPCError) -> Unavailable:
    log.warning("temporal call failed", status=exc.status.name)
    return Unavailable(
        "the workflow service is unreachable; try again", reason="WORKFLOW_SERVICE_UNAVAILABLE"
    )
