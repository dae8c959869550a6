"""The life of a run: recorded, started on Temporal, watched, and always brought to an end.

A run is a row in the orchestrator's store and a workflow in Temporal with the id the row
names. The row is written first and finished exactly once (the store keeps the first outcome),
so any number of watchers may race to finish it. The RPC that started the work watches it in a
task of its own, shielded from the caller: a client that goes away does not stop the run
being recorded. A watcher that dies with its process leaves the row ``running``; the
reconciler, run periodically by every orchestrator replica, asks Temporal by workflow id what
became of such runs and records the true outcome. It also deletes finished previews' histories
(the one place the org's rows passed through Temporal, encrypted) until Temporal confirms each
is gone, whatever the run's ending: crash, timeout or cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.message import Message
from temporalio import exceptions as temporal_errors
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    DeleteWorkflowExecutionRequest,
    DescribeTaskQueueRequest,
)
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from services.orchestrator.org_clients import OrgClients
from services.orchestrator.proofs import ProofKeys
from services.orchestrator.store import OrchestratorStore, RunRow
from sevvo.runtime import audit, temporal, work_proof
from sevvo.runtime import outcomes as catalogue
from sevvo.runtime.logs import get_logger

log = get_logger(__name__)

# How long after its row was written a run may still be starting (the start RPC is bounded
# by START_RPC_TIMEOUT); only older runs that Temporal does not know are "not started".
START_RPC_TIMEOUT = timedelta(seconds=10)
# A start that fails (Temporal overloaded, restarting, unreachable) is tried again, with the
# same workflow id, for this long: a duplicate is refused, which proves the first one landed.
START_RETRY_WINDOW = timedelta(seconds=30)
# Another replica may still be starting a run this long after its retry window (it wrote the
# row, then tried to start): only then does "Temporal does not know it" mean not started.
START_GRACE = timedelta(seconds=20)
# A watcher waits this much past the workflow's own execution timeout, which Temporal enforces.
WATCH_MARGIN = timedelta(seconds=10)
# An agent seen polling this recently counts as connected (busy rather than absent). An idle
# agent's long poll is renewed about every minute, so its last poll is at most that old.
POLLER_RECENCY = timedelta(seconds=90)
# How long work may wait in the queue for a busy agent of its org, beyond its own time to run:
# under a burst the agent works through the queue instead of timing work out.
DEFAULT_QUEUE_ALLOWANCE = timedelta(minutes=5)
# Work that no agent is there to pick up ends agent_unavailable once it has waited this long
# (and no agent polled for POLLER_RECENCY), not only when the queue allowance runs out.
AGENT_ABSENT_AFTER = timedelta(seconds=30)
_CHECK_SECONDS = 5.0
# Temporal deletes a history a few seconds after being asked (about 30 s on a server with the
# default transfer-queue settings); a deletion asked for is checked again after this long.
HISTORY_RECHECK = timedelta(seconds=10)
# A preview a reconciler settled may still be watched on another replica, which reads its rows
# from the history: the reconciler deletes a finished preview's history only this long after.
HISTORY_GRACE = timedelta(minutes=1)
_BATCH = 200
_DESCRIBE_TIMEOUT = timedelta(seconds=5)
_UNREACHABLE_RETRY_SECONDS = 1.0
# The reason work no agent was there to pick up is terminated with: whichever replica learns
# of the termination records the run agent_unavailable, not failed.
_ABANDONED = "no agent of the org is polling its task queue"
# How often a waiter reads a run that another replica watches: quick at first (most work ends
# within a second), then at most once a second per waiter.
_WAIT_FIRST_PAUSE = 0.05
_WAIT_MAX_PAUSE = 1.0


@dataclass(frozen=True)
class Outcome:
    """How a run ended, as its row records it: never rows, never credentials."""

    state: str
    category: str
    message: str | None
    row_count: int | None = None
    truncated: bool | None = None
    # For syncs: the agent's metadata report, by SyncResult field name.
    sync_report: Mapping[str, Any] | None = None


def outcome_of(
    entry: catalogue.Outcome,
    message: str | None,
    *,
    row_count: int | None = None,
    truncated: bool | None = None,
    sync_report: Mapping[str, Any] | None = None,
) -> Outcome:
    """The row's outcome for a catalogue entry: its name, and the state the catalogue gives it."""
    return Outcome(entry.state, entry.name, message, row_count, truncated, sync_report)


def run_outcome(entry: catalogue.Outcome) -> Outcome:
    """An outcome the orchestrator records itself, with the catalogue's message."""
    return outcome_of(entry, entry.message(catalogue.Kind.RUN))


NOT_STARTED = run_outcome(catalogue.NOT_STARTED)
WORKFLOW_FAILED = run_outcome(catalogue.WORKFLOW_FAILED)
AGENT_UNAVAILABLE = run_outcome(catalogue.AGENT_UNAVAILABLE)
AGENT_BUSY = run_outcome(catalogue.AGENT_BUSY)


@dataclass(frozen=True)
class WorkKind:
    """One kind of run: its workflow, its result message and how a result becomes an outcome."""

    kind: str
    workflow: str
    result_type: type[Message]
    timeout: timedelta
    outcome: Callable[[Any], Outcome]
    # Previews carry the org's rows through Temporal (encrypted): their history is deleted.
    keep_history: bool = True


class RunTracker:
    """Starts runs, watches them to the end, and reconciles the ones nobody is watching."""

    def __init__(
        self,
        store: OrchestratorStore,
        clients: OrgClients,
        kinds: Mapping[str, WorkKind],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        start_rpc_timeout: timedelta = START_RPC_TIMEOUT,
        start_retry_window: timedelta = START_RETRY_WINDOW,
        queue_allowance: timedelta = DEFAULT_QUEUE_ALLOWANCE,
        absent_after: timedelta = AGENT_ABSENT_AFTER,
        proofs: ProofKeys | None = None,
    ) -> None:
        self._store = store
        # Without proof keys (some unit tests) inputs go out unproved and agents refuse them.
        self._proofs = proofs
        self._clients = clients
        self._kinds = dict(kinds)
        self._clock = clock
        self._start_rpc_timeout = start_rpc_timeout
        self._start_retry_window = start_retry_window
        self._queue_allowance = queue_allowance
        self._absent_after = absent_after
        self._polling: dict[uuid.UUID, tuple[float, bool]] = {}
        self._watching: dict[uuid.UUID, asyncio.Task[tuple[RunRow, Any]]] = {}
        self._background: set[asyncio.Task[None]] = set()

    # Starting and watching.

    async def run(
        self,
        org_id: uuid.UUID,
        kind: str,
        request_for: Callable[[RunRow], Message],
        **options: Any,
    ) -> tuple[RunRow, Any]:
        """``begin`` with ``options``, then ``outcome``: records and starts a run and waits for
        its end."""
        return await self.outcome(await self.begin(org_id, kind, request_for, **options))

    async def outcome(self, run: RunRow) -> tuple[RunRow, Any]:
        """Waits for the end of a run this replica just began; returns its row and result.

        The result is None when the run ended without one (its row says why). Raises
        Unavailable-mapped ``RunFateUnknown`` when Temporal cannot be reached to learn the
        end: the run is then left for the reconciler, never reported with a made-up outcome.
        """
        # Shielded: the caller may go away (cancel, deadline); the run is still watched.
        return await asyncio.shield(self._watching[run.id])

    async def begin(
        self,
        org_id: uuid.UUID,
        kind: str,
        request_for: Callable[[RunRow], Message],
        *,
        connection_id: uuid.UUID | None = None,
        draft_id: uuid.UUID | None = None,
        model_id: uuid.UUID | None = None,
        creator: str = "",
        audit_start: Callable[[RunRow], audit.Entry] | None = None,
    ) -> RunRow:
        """Records a run and returns its row at once, still running (AIP-151's long-running
        operation); a task of this replica starts the workflow and watches it to its end.

        ``audit_start`` makes the audit record written with the run's row (same transaction).
        Should this replica go away first, another one's reconciler settles the run; callers
        wait for the end with ``wait``, on whichever replica they reach, or here with
        ``outcome`` (before yielding to the event loop: a finished watch is forgotten).
        """
        spec = self._kinds[kind]
        run = await self._insert(
            org_id, kind, connection_id, draft_id, creator, audit_start, model_id=model_id
        )
        watch = asyncio.get_running_loop().create_task(
            self._start_and_watch(run, spec, request_for), name=f"watch-{run.id}"
        )
        self._watching[run.id] = watch
        watch.add_done_callback(lambda done: self._watch_done(run.id, done))
        return run

    def _watch_done(self, run_id: uuid.UUID, watch: asyncio.Task[tuple[RunRow, Any]]) -> None:
        self._watching.pop(run_id, None)
        # Retrieved here because nobody may await a begun run: an unknown fate is logged and
        # left to the reconciler, and any other failure is logged, never lost.
        if watch.cancelled():
            return
        error = watch.exception()
        if isinstance(error, RunFateUnknown):
            log.info("run left for reconciliation", run_id=str(run_id))
        elif error is not None:
            log.warning("run watch failed", run_id=str(run_id), error=type(error).__name__)

    async def wait(self, org_id: uuid.UUID, run_id: uuid.UUID, timeout: float) -> RunRow | None:
        """The run once finished, or as it stands when ``timeout`` seconds have passed; None
        when the org has no such run.

        A run this replica watches is awaited directly; any other run (started by another
        replica, or left by one that went away and settled by a reconciler) is read from the
        store, often at first and then less often.
        """
        loop = asyncio.get_running_loop()
        give_up = loop.time() + max(timeout, 0.0)
        pause = _WAIT_FIRST_PAUSE
        while True:
            row = await asyncio.to_thread(self._store.get_run, org_id, run_id)
            if row is None or row.state != "running":
                return row
            remaining = give_up - loop.time()
            if remaining <= 0:
                return row
            watch = self._watching.get(run_id)
            if watch is not None:
                with contextlib.suppress(Exception):  # TimeoutError included
                    # Shielded: a waiter that goes away must not stop the watch.
                    await asyncio.wait_for(asyncio.shield(watch), remaining)
                continue
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, _WAIT_MAX_PAUSE)

    async def _insert(
        self,
        org_id: uuid.UUID,
        kind: str,
        connection_id: uuid.UUID | None,
        draft_id: uuid.UUID | None,
        creator: str,
        audit_start: Callable[[RunRow], audit.Entry] | None = None,
        *,
        model_id: uuid.UUID | None = None,
    ) -> RunRow:
        run_id = uuid.uuid4()
        run = RunRow(
            id=run_id,
            org_id=org_id,
            kind=kind,
            state="running",
            connection_id=connection_id,
            draft_id=draft_id,
            workflow_id=f"{kind.replace('_', '-')}-{run_id}",
            outcome_category=None,
            message=None,
            started_at=self._clock(),
            finished_at=None,
            duration_ms=None,
            proved=self._proofs is not None,
            creator=creator,
            model_id=model_id,
        )
        entry = audit_start(run) if audit_start is not None else None
        await asyncio.to_thread(self._store.insert_run, run, entry)
        return run

    async def _start_and_watch(
        self, run: RunRow, spec: WorkKind, request_for: Callable[[RunRow], Message]
    ) -> tuple[RunRow, Any]:
        handle = await self._start(run, spec, request_for)
        log.info("workflow started", run_id=str(run.id), kind=run.kind)
        return await self._watch(run, spec, handle)

    async def _start(
        self, run: RunRow, spec: WorkKind, request_for: Callable[[RunRow], Message]
    ) -> WorkflowHandle[Any, Any]:
        """Starts the run's workflow, trying again while Temporal cannot take it.

        Every attempt uses the run's workflow id, and Temporal refuses a second workflow with
        an id it has seen: "already started" means an earlier attempt landed. When no attempt
        is answered within the retry window the run is left for the reconciler, which ends it
        not_started once Temporal (answering again) still does not know it.
        """
        request = await self._proved(run, spec, request_for(run))
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._start_retry_window.total_seconds()
        delay = 0.5
        while True:
            try:
                # Inside the retries: the org's first run registers its namespace, and its
                # Temporal token comes from auth; either may be briefly unreachable. The org's
                # keys are read before every attempt: a rotation may have just committed.
                client = await self._clients.for_new_work(run.org_id)
                return await client.start_workflow(
                    spec.workflow,
                    request,
                    id=run.workflow_id,
                    task_queue=temporal.task_queue(str(run.org_id)),
                    execution_timeout=spec.timeout + self._queue_allowance,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    result_type=spec.result_type,
                    rpc_timeout=self._start_rpc_timeout,
                )
            except WorkflowAlreadyStartedError:
                return client.get_workflow_handle(run.workflow_id, result_type=spec.result_type)
            except Exception as exc:
                if loop.time() + delay > give_up:
                    log.warning(
                        "workflow not started", run_id=str(run.id), error=type(exc).__name__
                    )
                    raise RunFateUnknown(run) from None
                log.info("workflow start retried", run_id=str(run.id), error=type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _proved(self, run: RunRow, spec: WorkKind, request: Message) -> Message:
        """The input with the proof that this orchestrator started the run's workflow id.

        It expires when the workflow's own execution timeout would have ended it.
        """
        if self._proofs is None:
            return request
        signer = await asyncio.to_thread(self._proofs.signer)
        token = signer.for_run(
            org_id=str(run.org_id),
            workflow_type=spec.workflow,
            workflow_id=run.workflow_id,
            message=request,
            lifetime=spec.timeout + self._queue_allowance,
            now=self._clock(),
        )
        work_proof.attach(request, token)
        return request

    async def _watch(
        self, run: RunRow, spec: WorkKind, handle: WorkflowHandle[Any, Any]
    ) -> tuple[RunRow, Any]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        total = spec.timeout + self._queue_allowance + WATCH_MARGIN
        deadline = started + total.total_seconds()
        waiter: asyncio.Future[Any] | None = None
        try:
            while (remaining := deadline - loop.time()) > 0:
                if waiter is None:
                    waiter = asyncio.ensure_future(handle.result())
                done, _ = await asyncio.wait({waiter}, timeout=min(remaining, _CHECK_SECONDS))
                if not done:
                    waited = loop.time() - started
                    if waited >= self._absent_after.total_seconds() and await self._abandon(
                        run, handle
                    ):
                        return await self._finish(run, spec, AGENT_UNAVAILABLE), None
                    continue
                finished, waiter = waiter, None
                try:
                    result = finished.result()
                except WorkflowFailureError as exc:
                    outcome = await self._failure_outcome(run, exc)
                    return await self._finish(run, spec, outcome), None
                except RPCError as exc:
                    # Temporal is unreachable or restarting: keep asking until the deadline.
                    log.warning("waiting on temporal", run_id=str(run.id), status=exc.status.name)
                    await asyncio.sleep(min(_UNREACHABLE_RETRY_SECONDS, max(remaining, 0)))
                    continue
                return await self._finish(run, spec, spec.outcome(result)), result
        finally:
            if waiter is not None:
                waiter.cancel()
        settled = await self._settle(run, spec, handle, not_found=NOT_STARTED)
        if settled is None:
            raise RunFateUnknown(run)
        return settled

    async def _abandon(self, run: RunRow, handle: WorkflowHandle[Any, Any]) -> bool:
        """Terminates work no agent of the org is there to pick up; True when it is ended.

        An agent that is merely busy keeps polling, so its work waits in the queue instead.
        """
        if await self._agent_polling(run.org_id, cached=True):
            return False
        try:
            await handle.terminate(reason=_ABANDONED)
        except RPCError as exc:
            # It may have just finished (or an agent just took it): the next pass sees which.
            log.info("work not abandoned", run_id=str(run.id), status=exc.status.name)
            return False
        log.info("work abandoned: no agent polling", run_id=str(run.id))
        return True

    async def _failure_outcome(self, run: RunRow, exc: WorkflowFailureError) -> Outcome:
        if isinstance(exc.cause, temporal_errors.TimeoutError):
            return await self._timeout_outcome(run.org_id)
        cause = exc.cause
        if isinstance(cause, temporal_errors.TerminatedError) and cause.message == _ABANDONED:
            return AGENT_UNAVAILABLE
        return WORKFLOW_FAILED

    async def _timeout_outcome(self, org_id: uuid.UUID) -> Outcome:
        """Timed out: busy if an agent of the org was polling its queue lately, else unavailable."""
        return AGENT_BUSY if await self._agent_polling(org_id) else AGENT_UNAVAILABLE

    async def _agent_polling(self, org_id: uuid.UUID, *, cached: bool = False) -> bool:
        """Whether an agent of the org polled its queue lately (cached briefly when asked:
        every watcher of a busy org asks every few seconds)."""
        now = asyncio.get_running_loop().time()
        seen = self._polling.get(org_id)
        if cached and seen is not None and now - seen[0] < _CHECK_SECONDS:
            return seen[1]
        polling = await self._ask_pollers(org_id)
        self._polling[org_id] = (now, polling)
        return polling

    async def _ask_pollers(self, org_id: uuid.UUID) -> bool:
        try:
            client = await self._clients.for_org_async(org_id)
        except Exception:  # As unreachable as an RPCError below: nobody seen polling.
            return False
        queue = TaskQueue(name=temporal.task_queue(str(org_id)))
        recent = self._clock() - POLLER_RECENCY
        for queue_type in (
            TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        ):
            try:
                described = await client.workflow_service.describe_task_queue(
                    DescribeTaskQueueRequest(
                        namespace=client.namespace, task_queue=queue, task_queue_type=queue_type
                    ),
                    timeout=timedelta(seconds=5),
                )
            except RPCError:
                return False
            for poller in described.pollers:
                if poller.last_access_time.ToDatetime(tzinfo=UTC) >= recent:
                    return True
        return False

    async def _settle(
        self,
        run: RunRow,
        spec: WorkKind,
        handle: WorkflowHandle[Any, Any],
        *,
        not_found: Outcome | None,
        in_legacy: bool = False,
        watching: bool = True,
    ) -> tuple[RunRow, Any] | None:
        """Asks Temporal how the run's workflow ended and records it; None while unknown.

        A run its org's namespace does not know may have started in the old shared namespace
        before the upgrade to namespaces per org: it is settled there while that is drained.
        """
        try:
            status = (await handle.describe(rpc_timeout=_DESCRIBE_TIMEOUT)).status
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                return None
            legacy = None if in_legacy else await self._clients.legacy_for_org(run.org_id)
            if legacy is not None:
                legacy_handle = legacy.get_workflow_handle(
                    run.workflow_id, result_type=spec.result_type
                )
                return await self._settle(
                    run, spec, legacy_handle, not_found=not_found, in_legacy=True, watching=watching
                )
            if not_found is None:
                return None
            return await self._finish(run, spec, not_found, forget_now=watching), None
        if status is None or status in (
            WorkflowExecutionStatus.RUNNING,
            WorkflowExecutionStatus.CONTINUED_AS_NEW,
        ):
            return None
        if status is WorkflowExecutionStatus.COMPLETED:
            try:
                result = await handle.result()
            except RPCError:
                return None
            return await self._finish(run, spec, spec.outcome(result), forget_now=watching), result
        if status is WorkflowExecutionStatus.TIMED_OUT:
            return await self._finish(
                run, spec, await self._timeout_outcome(run.org_id), forget_now=watching
            ), None
        try:
            await handle.result()
        except WorkflowFailureError as exc:  # Says why: failed, or abandoned by a replica.
            return await self._finish(
                run, spec, await self._failure_outcome(run, exc), forget_now=watching
            ), None
        except RPCError:
            return None
        return await self._finish(run, spec, WORKFLOW_FAILED, forget_now=watching), None

    async def _finish(
        self, run: RunRow, spec: WorkKind, outcome: Outcome, *, forget_now: bool = True
    ) -> RunRow:
        """Records the outcome (the first one recorded wins) and forgets a preview's history.

        Only the run's watcher forgets it at once, having read the result itself. A reconciler
        (``forget_now=False``) may settle a preview whose watcher, on another replica, is still
        reading the rows: its history is left to the reconciliation passes after HISTORY_GRACE.
        """
        now = self._clock()
        finished = await asyncio.to_thread(
            self._store.finish_run,
            run.id,
            state=outcome.state,
            category=outcome.category,
            message=outcome.message,
            finished_at=now,
            duration_ms=max(int((now - run.started_at).total_seconds() * 1000), 0),
            row_count=outcome.row_count,
            truncated=outcome.truncated,
            sync_report=outcome.sync_report,
        )
        if finished is None:  # Another watcher or replica finished it first: theirs stands.
            finished = await asyncio.to_thread(self._store.get_run, run.org_id, run.id)
            assert finished is not None
        else:
            log.info(
                "run finished",
                run_id=str(run.id),
                kind=run.kind,
                state=outcome.state,
                category=outcome.category,
                duration_ms=finished.duration_ms,
            )
        if not spec.keep_history and forget_now:
            self._in_background(self._forget_history(finished))
        return finished

    # Histories.

    def _in_background(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _forget_history(self, run: RunRow) -> bool:
        """Asks Temporal to delete a run's history; True once Temporal says it is gone.

        Deletion is asynchronous in Temporal, so success is recorded only when the workflow
        can no longer be found; until then every reconciliation pass asks again.
        """
        try:
            clients = [await self._clients.for_org_async(run.org_id)]
            # A preview from before namespaces per org has its history in the old namespace.
            legacy = await self._clients.legacy_for_org(run.org_id)
        except Exception as exc:  # Temporal or auth unreachable: the reconciler asks again.
            log.warning("history not deleted yet", run_id=str(run.id), error=type(exc).__name__)
            return False
        if legacy is not None:
            clients.append(legacy)
        for client in clients:
            try:
                await client.workflow_service.delete_workflow_execution(
                    DeleteWorkflowExecutionRequest(
                        namespace=client.namespace,
                        workflow_execution=WorkflowExecution(workflow_id=run.workflow_id),
                    ),
                    timeout=timedelta(seconds=5),
                )
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    log.warning(
                        "history not deleted yet", run_id=str(run.id), status=exc.status.name
                    )
                    return False
            else:
                await asyncio.to_thread(
                    self._store.mark_history_delete_requested, run.id, self._clock()
                )
                return False
        await asyncio.to_thread(self._store.mark_history_deleted, run.id, self._clock())
        log.info("preview history gone", run_id=str(run.id))
        return True

    # Reconciliation.

    async def reconcile_once(self) -> int:
        """Settles every unwatched running run that Temporal has an answer for; returns how many.

        Then deletes the histories of finished previews that Temporal still holds.
        """
        settled = 0
        for run in await asyncio.to_thread(self._store.running_runs, _BATCH):
            if run.id in self._watching or run.kind not in self._kinds:
                continue
            spec = self._kinds[run.kind]
            too_old_to_start = (
                self._clock() - run.started_at
                > self._start_retry_window + self._start_rpc_timeout + START_GRACE
            )
            try:
                client = await self._clients.for_org_async(run.org_id)
                handle = client.get_workflow_handle(run.workflow_id, result_type=spec.result_type)
                done = await self._settle(
                    run,
                    spec,
                    handle,
                    not_found=NOT_STARTED if too_old_to_start else None,
                    watching=False,
                )
            except Exception as exc:  # One bad run must not stop the others being settled.
                log.warning("run not reconciled", run_id=str(run.id), error=type(exc).__name__)
                continue
            if done is None and self._clock() - run.started_at >= self._absent_after:
                # Nobody here watches it, and the replica that did may be gone: work that no
                # agent is there to pick up ends now, as its watcher would have ended it.
                with contextlib.suppress(Exception):
                    if await self._abandon(run, handle):
                        done = (
                            await self._finish(run, spec, AGENT_UNAVAILABLE, forget_now=False),
                            None,
                        )
            if done is not None:
                settled += 1
                log.info("run reconciled", run_id=str(run.id), state=done[0].state)
        now = self._clock()
        for run in await asyncio.to_thread(
            self._store.previews_with_history, _BATCH, now - HISTORY_RECHECK, now - HISTORY_GRACE
        ):
            await self._forget_history(run)
        return settled

    async def reconcile_forever(self, interval: float) -> None:
        """Reconciles every ``interval`` seconds until cancelled; errors wait for the next pass."""
        while True:
            try:
                await self.reconcile_once()
            except Exception as exc:  # The store or Temporal may be restarting.
                log.warning("reconciliation pass failed", error=type(exc).__name__)
            await asyncio.sleep(interval)

    async def close(self) -> None:
        """Cancels background history deletions and the watches of runs still going: the
        reconciler of another replica (or of this one, restarted) finishes both later."""
        for task in [*self._background, *self._watching.values()]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class RunFateUnknown(Exception):
    """Temporal could not be asked how a run ended; the reconciler will settle it."""

    def __init__(self, run: RunRow) -> None:
        super().__init__(f"run {run.id} is left for reconciliation")
        self.run = run


__all__ = [
    "AGENT_BUSY",
    "AGENT_UNAVAILABLE",
    "NOT_STARTED",
    "WATCH_MARGIN",
    "WORKFLOW_FAILED",
    "OrgClients",
    "Outcome",
    "RunFateUnknown",
    "RunTracker",
    "WorkKind",
    "outcome_of",
    "run_outcome",
]
