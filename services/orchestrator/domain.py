"""The orchestrator's rules: start credential tests on the org's queue and keep run metadata.

The org always comes from the caller's verified token, so a user of one org can neither
start work on another org's task queue nor read its runs.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from google.protobuf.message import Message
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    WorkflowFailureError,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from services.orchestrator.store import OrchestratorStore, PayloadKeyRow, RunRow
from sevvo.runtime import paging, temporal, validation
from sevvo.runtime.errors import InvalidArgument, NotFound
from sevvo.runtime.logs import get_logger
from sevvo.runtime.payload_codec import OrgPayloadKeys, PayloadKey, data_converter
from sevvo.runtime.sealing import Keyring, Sealed, seal, unseal
from sevvo.runtime.tokens import Principal
from sevvo.workflows.v1 import workflows_pb2

log = get_logger(__name__)

_CATEGORY_NAMES = {
    value: name.removeprefix("TEST_CATEGORY_").lower()
    for name, value in workflows_pb2.TestCategory.items()
}


_PREVIEW_CATEGORY_NAMES = {
    value: name.removeprefix("PREVIEW_CATEGORY_").lower()
    for name, value in workflows_pb2.PreviewCategory.items()
}
MIN_ROTATION_INTERVAL = timedelta(hours=1)
MAX_ROTATION_INTERVAL = timedelta(days=365)
MAX_PREVIEW_SQL_BYTES = 100 * 1024
# The statement timeout is 10 s; connecting and the round trips get the rest.
PREVIEW_TIMEOUT = timedelta(seconds=40)

_Failure = tuple[str, str, str]  # (state, category, message) of a finished run
_TIMED_OUT: _Failure = (
    "timed_out",
    "agent_unavailable",
    "no agent of this org finished the work in time: check that an agent is running",
)
_FAILED: _Failure = (
    "failed",
    "workflow_failed",
    "the work failed inside the agent; see the agent's logs",
)
ResultT = TypeVar("ResultT", bound=Message)


def preview_category_name(category: int) -> str:
    """The stable lower_snake name of a preview category."""
    return _PREVIEW_CATEGORY_NAMES.get(category, "other")


_ROTATION_CATEGORY_NAMES = {
    value: name.removeprefix("ROOT_ROTATION_CATEGORY_").lower()
    for name, value in workflows_pb2.RootRotationCategory.items()
}


def category_name(category: int) -> str:
    """The stable lower_snake name of a test category, as runs and connections record it."""
    return _CATEGORY_NAMES.get(category, "other")


def _key_aad(org_id: uuid.UUID, key_id: str) -> bytes:
    return f"sevvo.orchestrator.v1.payload_key|{org_id}|{key_id}".encode()


class PayloadKeys:
    """Per-org payload keys: created on first use, sealed at rest, cached in memory."""

    def __init__(self, store: OrchestratorStore, keyring: Keyring) -> None:
        self._store = store
        self._keyring = keyring
        self._cache: dict[uuid.UUID, OrgPayloadKeys] = {}

    def for_org(self, org_id: uuid.UUID) -> OrgPayloadKeys:
        """The org's keys, creating its first key when it has none."""
        cached = self._cache.get(org_id)
        if cached is not None:
            return cached
        rows = self._store.payload_keys(org_id)
        if not rows:
            key_id = f"pk-{secrets.token_hex(6)}"
            sealed = seal(self._keyring, secrets.token_bytes(32), _key_aad(org_id, key_id))
            self._store.insert_payload_key_if_none(
                PayloadKeyRow(org_id, key_id, sealed.key_id, sealed.blob, datetime.now(UTC))
            )
            rows = self._store.payload_keys(org_id)
        keys = [
            PayloadKey(
                row.key_id,
                unseal(
                    self._keyring, Sealed(row.kek_id, row.sealed_key), _key_aad(org_id, row.key_id)
                ),
            )
            for row in rows
        ]
        org_keys = OrgPayloadKeys(str(org_id), keys, current_id=rows[-1].key_id)
        self._cache[org_id] = org_keys
        return org_keys


class OrchestratorDomain:
    """The operations behind OrchestratorService and PayloadKeyService."""

    def __init__(
        self,
        store: OrchestratorStore,
        payload_keys: PayloadKeys,
        temporal_client: Client,
        *,
        test_timeout: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._keys = payload_keys
        self._temporal = temporal_client
        self._test_timeout = test_timeout
        self._clock = clock
        self._clients: dict[uuid.UUID, Client] = {}
        self._background: set[asyncio.Task[None]] = set()

    def _client_for(self, org_id: uuid.UUID) -> Client:
        # One service connection; each org gets its own data converter so its payloads are
        # encrypted with its own key.
        client = self._clients.get(org_id)
        if client is None:
            config = self._temporal.config()
            config["data_converter"] = data_converter(self._keys.for_org(org_id))
            client = Client(**config)
            self._clients[org_id] = client
        return client

    async def _insert_run(
        self,
        caller: Principal,
        kind: str,
        *,
        connection_id: uuid.UUID | None = None,
        draft_id: uuid.UUID | None = None,
    ) -> RunRow:
        run_id = uuid.uuid4()
        prefix = kind.replace("_", "-")
        run = RunRow(
            id=run_id,
            org_id=uuid.UUID(caller.org_id),
            kind=kind,
            state="running",
            connection_id=connection_id,
            draft_id=draft_id,
            workflow_id=f"{prefix}-{run_id}",
            outcome_category=None,
            message=None,
            started_at=self._clock(),
            finished_at=None,
            duration_ms=None,
        )
        await asyncio.to_thread(self._store.insert_run, run)
        return run

    async def _execute(
        self,
        caller: Principal,
        run: RunRow,
        workflow_name: str,
        request: Message,
        result_type: type[ResultT],
        timeout: timedelta,
    ) -> tuple[ResultT | None, _Failure | None, int]:
        """Runs ``workflow_name`` on the caller's queue; returns its result or why there is none.

        Ids and categories only: the workflow id and queue hold no host, database or SQL, and
        the input travels encrypted with the org's payload key.
        """
        client = await asyncio.to_thread(self._client_for, run.org_id)
        started = time.monotonic()
        handle = await client.start_workflow(
            workflow_name,
            request,
            id=run.workflow_id,
            task_queue=temporal.task_queue(caller.org_id),
            execution_timeout=timeout,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            result_type=result_type,
        )
        log.info("workflow started", run_id=str(run.id), kind=run.kind)
        try:
            result = await asyncio.wait_for(handle.result(), timeout=timeout.total_seconds() + 5)
            return result, None, int((time.monotonic() - started) * 1000)
        except (TimeoutError, WorkflowFailureError) as exc:
            timed_out = isinstance(exc, TimeoutError) or "timed out" in str(exc.cause).lower()
            failure = _TIMED_OUT if timed_out else _FAILED
            return None, failure, int((time.monotonic() - started) * 1000)

    async def test_connection(
        self, caller: Principal, *, connection_id: str = "", draft_id: str = ""
    ) -> RunRow:
        """Starts a credential test on the caller's org's queue and waits for its outcome."""
        if bool(connection_id) == bool(draft_id):
            raise InvalidArgument("target", "set exactly one of connection_id or draft_id")
        field = "connection_id" if connection_id else "draft_id"
        target = validation.resource_id(field, connection_id or draft_id)
        run = await self._insert_run(
            caller,
            "credential_test",
            connection_id=target if connection_id else None,
            draft_id=target if draft_id else None,
        )
        request = workflows_pb2.CredentialTestInput(run_id=str(run.id))
        if connection_id:
            request.connection_id = str(target)
        else:
            request.draft_id = str(target)
        result, failure, elapsed_ms = await self._execute(
            caller,
            run,
            temporal.CREDENTIAL_TEST_WORKFLOW,
            request,
            workflows_pb2.CredentialTestResult,
            self._test_timeout,
        )
        if result is not None:
            outcome = ("succeeded", category_name(result.category), result.message)
        else:
            assert failure is not None
            outcome = failure
        return await self._finish(caller, run, outcome, elapsed_ms)

    async def _finish(
        self, caller: Principal, run: RunRow, outcome: _Failure, elapsed_ms: int
    ) -> RunRow:
        """Records how a run ended: its state, outcome category and safe message."""
        state, category, message = outcome
        finished = await asyncio.to_thread(
            self._store.finish_run,
            run.id,
            state=state,
            category=category,
            message=message,
            finished_at=self._clock(),
            duration_ms=elapsed_ms,
        )
        log.info("run finished", run_id=str(run.id), kind=run.kind, state=state, category=category)
        return finished or await self.get_run(caller, str(run.id))

    async def rotate_root(self, caller: Principal, connection_id: str) -> RunRow:
        """Rotates a dynamic connection's privileged password through the org's agent.

        The run records the outcome category; the password is generated, set and proved in
        the agent and reaches only the connections service's sealed store.
        """
        target = validation.resource_id("connection_id", connection_id)
        run = await self._insert_run(caller, "root_rotation", connection_id=target)
        result, failure, elapsed_ms = await self._execute(
            caller,
            run,
            temporal.ROOT_ROTATION_WORKFLOW,
            workflows_pb2.RootRotationInput(run_id=str(run.id), connection_id=str(target)),
            workflows_pb2.RootRotationResult,
            self._test_timeout,
        )
        if result is not None:
            outcome = (
                "succeeded",
                _ROTATION_CATEGORY_NAMES.get(result.category, "other"),
                result.message,
            )
        else:
            assert failure is not None
            outcome = failure
        return await self._finish(caller, run, outcome, elapsed_ms)

    async def set_root_rotation_schedule(
        self, caller: Principal, connection_id: str, interval: timedelta
    ) -> datetime | None:
        """Creates, changes or (for a zero interval) removes a connection's rotation schedule.

        The schedule starts the same workflow as an on-demand rotation on the caller's queue.
        Its id holds the org, so no org can touch another's schedule by naming its
        connection; its input travels encrypted like any other. Returns the next rotation.
        """
        target = validation.resource_id("connection_id", connection_id)
        if interval and not MIN_ROTATION_INTERVAL <= interval <= MAX_ROTATION_INTERVAL:
            raise InvalidArgument(
                "interval", "must be zero (no schedule) or from 1 hour to 365 days"
            )
        client = await asyncio.to_thread(self._client_for, uuid.UUID(caller.org_id))
        schedule_id = f"root-rotation-{caller.org_id}-{target}"
        handle = client.get_schedule_handle(schedule_id)
        if not interval:
            try:
                await handle.delete()
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
            log.info("root rotation schedule removed", connection_id=str(target))
            return None
        schedule = Schedule(
            action=ScheduleActionStartWorkflow(
                temporal.ROOT_ROTATION_WORKFLOW,
                workflows_pb2.RootRotationInput(connection_id=str(target)),
                id=schedule_id,
                task_queue=temporal.task_queue(caller.org_id),
                execution_timeout=self._test_timeout,
            ),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=interval)]),
            # An agent that is down for a while rotates once when it is back, not once per
            # missed interval.
            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=interval),
        )
        try:
            await client.create_schedule(schedule_id, schedule)
        except ScheduleAlreadyRunningError:
            await handle.update(lambda _: ScheduleUpdate(schedule=schedule))
        upcoming = (await handle.describe()).info.next_action_times
        log.info("root rotation scheduled", connection_id=str(target), interval=str(interval))
        return upcoming[0] if upcoming else None

    async def preview_query(
        self, caller: Principal, connection_id: str, sql: str
    ) -> tuple[RunRow, workflows_pb2.PreviewQueryResult]:
        """Runs a user's preview through the agent; the rows go back to the caller only.

        The run keeps the category, SQLSTATE, row count and truncated flag, never the rows or
        the database's message (which can quote a value). The workflow's history, the only
        other place the (encrypted) rows passed through, is deleted once the result is read.
        """
        target = validation.resource_id("connection_id", connection_id)
        if not sql.strip():
            raise InvalidArgument("sql", "must not be empty")
        if len(sql.encode()) > MAX_PREVIEW_SQL_BYTES:
            raise InvalidArgument("sql", f"must be at most {MAX_PREVIEW_SQL_BYTES // 1024} KB")
        run = await self._insert_run(caller, "preview", connection_id=target)
        request = workflows_pb2.PreviewQueryInput(
            run_id=str(run.id), connection_id=str(target), sql=sql
        )
        result, failure, elapsed_ms = await self._execute(
            caller,
            run,
            temporal.PREVIEW_WORKFLOW,
            request,
            workflows_pb2.PreviewQueryResult,
            PREVIEW_TIMEOUT,
        )
        message: str | None
        if result is None:
            assert failure is not None
            state, category, message = failure
            result = workflows_pb2.PreviewQueryResult(
                category=workflows_pb2.PREVIEW_CATEGORY_OTHER, message=message
            )
            row_count, truncated = 0, False
        else:
            category = preview_category_name(result.category)
            state = "succeeded"
            message = f"sqlstate {result.sqlstate}" if result.sqlstate else None
            row_count, truncated = len(result.rows), result.truncated
            self._forget(run)
        finished = await asyncio.to_thread(
            self._store.finish_run,
            run.id,
            state=state,
            category=category,
            message=message,
            finished_at=self._clock(),
            duration_ms=elapsed_ms,
            row_count=row_count,
            truncated=truncated,
        )
        log.info(
            "preview finished",
            run_id=str(run.id),
            category=category,
            rows=row_count,
            duration_ms=elapsed_ms,
        )
        return finished or await self.get_run(caller, str(run.id)), result

    def _forget(self, run: RunRow) -> None:
        """Deletes a finished preview's workflow history in the background."""

        async def delete() -> None:
            try:
                await self._temporal.workflow_service.delete_workflow_execution(
                    DeleteWorkflowExecutionRequest(
                        namespace=self._temporal.namespace,
                        workflow_execution=WorkflowExecution(workflow_id=run.workflow_id),
                    )
                )
                log.info("preview history deletion requested", run_id=str(run.id))
            except Exception as exc:  # The history then ages out with the namespace retention.
                log.warning(
                    "preview history not deleted", run_id=str(run.id), error=type(exc).__name__
                )

        task = asyncio.get_running_loop().create_task(delete())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def get_run(self, caller: Principal, run_id: str) -> RunRow:
        """A run of the caller's org."""
        rid = validation.resource_id("id", run_id)
        row = await asyncio.to_thread(self._store.get_run, uuid.UUID(caller.org_id), rid)
        if row is None:
            raise NotFound("run not found", reason="RUN_NOT_FOUND")
        return row

    async def list_runs(
        self, caller: Principal, page_size: int, page_token: str
    ) -> tuple[list[RunRow], str]:
        """One page of the caller's org's runs, newest first."""
        limit = paging.page_size(page_size)
        rows = await asyncio.to_thread(
            self._store.list_runs,
            uuid.UUID(caller.org_id),
            limit + 1,
            paging.decode_cursor(page_token),
        )
        return paging.page_of(rows, limit, lambda r: (r.started_at, r.id))

    async def payload_keys(self, caller: Principal) -> OrgPayloadKeys:
        """The caller's org's payload keys (agents only)."""
        return await asyncio.to_thread(self._keys.for_org, uuid.UUID(caller.org_id))
