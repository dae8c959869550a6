"""Every run reaches a final state with a true category: the orchestrator's RunTracker.

Against a real Temporal dev server and a real Postgres, with stand-in workflows registered
under the contract's names by a worker in this process (the agent's real workflows are tested
end to end elsewhere). The cases are the ways a run used to stay ``running`` forever: a caller
that goes away, a watcher that dies with its process, a start that never reached Temporal, a
Temporal that cannot be reached; and the timeouts, whose category says whether an agent was
polling at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from devstack.processes import free_port
from devstack.temporal import TemporalDevServer
from services.orchestrator.domain import work_kinds
from services.orchestrator.runs import OrgClients, RunFateUnknown, RunTracker
from services.orchestrator.store import OrchestratorStore, RunRow
from sevvo.runtime import temporal as names
from sevvo.runtime.payload_codec import OrgPayloadKeys, PayloadKey, data_converter
from sevvo.workflows.v1 import workflows_pb2 as wpb

# Stand-in behaviours, chosen by the connection id each workflow input carries.
SLOW = "00000000-0000-4000-8000-00000000051a"
FAILING = "00000000-0000-4000-8000-0000000000fa"
BUSY = "00000000-0000-4000-8000-00000000b05e"  # Runs a one-second activity.
TIMEOUT = timedelta(seconds=3)
BOUND_SECONDS = 30


@workflow.defn(name=names.PREVIEW_WORKFLOW)
class StandInPreview:
    """Answers two rows after a second, as an agent's preview would."""

    @workflow.run
    async def run(self, request: wpb.PreviewQueryInput) -> wpb.PreviewQueryResult:
        """Sleeps, then returns rows."""
        await workflow.sleep(1)
        return wpb.PreviewQueryResult(
            category=wpb.PREVIEW_CATEGORY_OK,
            columns=[wpb.PreviewColumn(name="n", type_name="int4")],
            rows=[wpb.PreviewRow(cells=[wpb.PreviewCell(text="1")])] * 2,
        )


@activity.defn(name=names.TEST_CREDENTIALS_ACTIVITY)
async def stand_in_probe(request: wpb.CredentialTestInput) -> None:
    """Takes a second, as a probe of a slow database would."""
    await asyncio.sleep(1)


@workflow.defn(name=names.CREDENTIAL_TEST_WORKFLOW)
class StandInCredentialTest:
    """Answers at once, sleeps past every timeout, or fails, by connection id."""

    @workflow.run
    async def run(self, request: wpb.CredentialTestInput) -> wpb.CredentialTestResult:
        """Behaves as the connection id says."""
        if request.connection_id == SLOW:
            await workflow.sleep(600)
        if request.connection_id == FAILING:
            raise ApplicationError("broken agent", non_retryable=True)
        if request.connection_id == BUSY:
            await workflow.execute_activity(
                stand_in_probe, request, start_to_close_timeout=timedelta(seconds=10)
            )
        return wpb.CredentialTestResult(
            category=wpb.TEST_CATEGORY_PASSWORD_AUTHENTICATION_FAILED, message="stand-in"
        )


@pytest.fixture(scope="module")
def temporal() -> Iterator[TemporalDevServer]:
    """A throwaway in-memory Temporal dev server for this module."""
    with TemporalDevServer() as server:
        yield server


@pytest.fixture
def store(database_url: str) -> Iterator[OrchestratorStore]:
    """The orchestrator's store on a fresh database."""
    store = OrchestratorStore(database_url)
    store.open()
    yield store
    store.close()


class Clock:
    """A clock tests can move forward."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


class Harness:
    """A RunTracker for one org, its Temporal client and (optionally) a polling stand-in agent."""

    def __init__(
        self,
        tracker: RunTracker,
        client: Client,
        org_id: uuid.UUID,
        *,
        address: str,
        keys: OrgPayloadKeys,
    ) -> None:
        self.tracker = tracker
        self.client = client
        self.org_id = org_id
        self.address = address
        self.keys = keys

    @asynccontextmanager
    async def agent(self) -> AsyncIterator[None]:
        """A worker on the org's queue running the stand-in workflows."""
        async with Worker(
            self.client,
            task_queue=names.task_queue(str(self.org_id)),
            workflows=[StandInPreview, StandInCredentialTest],
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):
            yield

    async def run(
        self, kind: str, request_for: Callable[[RunRow], Any], connection_id: str
    ) -> tuple[RunRow, Any]:
        """Runs one piece of work to its end through the tracker."""
        run = await self.tracker.begin(
            self.org_id, kind, request_for, connection_id=uuid.UUID(connection_id)
        )
        return await self.tracker.outcome(run)

    async def history_gone(self, workflow_id: str) -> bool:
        """Whether Temporal no longer has the workflow."""
        try:
            await self.client.get_workflow_handle(workflow_id).describe()
        except RPCError as exc:
            return exc.status == RPCStatusCode.NOT_FOUND
        return False


async def _harness(
    address: str,
    store: OrchestratorStore,
    clock: Clock,
    timeout: timedelta = TIMEOUT,
    queue_allowance: timedelta = timedelta(0),
) -> Harness:
    org_id = uuid.uuid4()
    keys = OrgPayloadKeys(str(org_id), [PayloadKey("pk-test", secrets.token_bytes(32))], "pk-test")
    base = await Client.connect(address)
    clients = OrgClients(base, lambda _: keys)
    tracker = _tracker(store, clients, clock, timeout, queue_allowance)
    # The org's namespace, registered by the tracker's clients as the orchestrator does.
    await clients.for_org_async(org_id)
    org_client = await Client.connect(
        address, namespace=names.namespace_for(str(org_id)), data_converter=data_converter(keys)
    )
    return Harness(tracker, org_client, org_id, address=address, keys=keys)


def _tracker(
    store: OrchestratorStore,
    clients: OrgClients,
    clock: Clock,
    timeout: timedelta = TIMEOUT,
    queue_allowance: timedelta = timedelta(0),
) -> RunTracker:
    """A RunTracker as one orchestrator replica has it, with short test timings."""
    return RunTracker(
        store,
        clients,
        work_kinds(timeout),
        clock=clock,
        start_rpc_timeout=timedelta(seconds=2),
        start_retry_window=timedelta(seconds=3),
        queue_allowance=queue_allowance,
        absent_after=timedelta(seconds=2),
    )


async def _other_replica(h: Harness, store: OrchestratorStore, clock: Clock) -> RunTracker:
    """A second replica's tracker: same store, Temporal and keys; its own clients, watchers."""
    base = await Client.connect(h.address)
    return _tracker(store, OrgClients(base, lambda _: h.keys), clock)


def _preview(connection_id: str) -> Callable[[RunRow], wpb.PreviewQueryInput]:
    return lambda run: wpb.PreviewQueryInput(
        run_id=str(run.id), connection_id=connection_id, sql="select 1"
    )


def _test(connection_id: str) -> Callable[[RunRow], wpb.CredentialTestInput]:
    return lambda run: wpb.CredentialTestInput(run_id=str(run.id), connection_id=connection_id)


def _running_test(org_id: uuid.UUID, connection_id: str, run_id: uuid.UUID) -> RunRow:
    """A credential test's row as the orchestrator writes it before starting the workflow."""
    return RunRow(
        id=run_id,
        org_id=org_id,
        kind="credential_test",
        state="running",
        connection_id=uuid.UUID(connection_id),
        draft_id=None,
        workflow_id=f"credential-test-{run_id}",
        outcome_category=None,
        message=None,
        started_at=datetime.now(UTC),
        finished_at=None,
        duration_ms=None,
    )


async def _until(check: Callable[[], Any], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND_SECONDS
    while not await check():
        assert loop.time() < deadline, f"{what} within {BOUND_SECONDS} s"
        await asyncio.sleep(0.2)


def test_a_run_whose_caller_goes_away_is_still_recorded_and_its_history_deleted(
    temporal: TemporalDevServer, store: OrchestratorStore
) -> None:
    """A cancelled caller does not stop the run: it ends `ok` and its preview history goes."""

    async def scenario() -> None:
        h = await _harness(temporal.address, store, Clock())
        connection_id = str(uuid.uuid4())
        async with h.agent():
            caller = asyncio.create_task(h.run("preview", _preview(connection_id), connection_id))
            await asyncio.sleep(0.3)
            caller.cancel()
            with pytest.raises(asyncio.CancelledError):
                await caller
            (run,) = store.list_runs(h.org_id, 10, None)

            async def finished() -> bool:
                row = store.get_run(h.org_id, run.id)
                return row is not None and row.state != "running"

            await _until(finished, "the run finished")
            row = store.get_run(h.org_id, run.id)
            assert row is not None
            assert (row.state, row.outcome_category, row.row_count) == ("succeeded", "ok", 2)

            async def purged() -> bool:
                await h.tracker.reconcile_once()
                row = store.get_run(h.org_id, run.id)
                return row is not None and row.history_deleted_at is not None

            await _until(purged, "the preview's history was confirmed deleted")
            assert await h.history_gone(run.workflow_id)

    asyncio.run(scenario())


async def _settled_unwatched(h: Harness, store: OrchestratorStore, client: Client) -> RunRow:
    """Writes a credential test's row and runs its workflow to the end in ``client``'s
    namespace with nobody watching (as when the orchestrator died); then one reconciliation
    pass must settle it. Returns the row as settled."""
    connection_id, run_id = str(uuid.uuid4()), uuid.uuid4()
    row = _running_test(h.org_id, connection_id, run_id)
    store.insert_run(row)
    async with Worker(
        client,
        task_queue=names.task_queue(str(h.org_id)),
        workflows=[StandInCredentialTest],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        handle = await client.start_workflow(
            names.CREDENTIAL_TEST_WORKFLOW,
            wpb.CredentialTestInput(run_id=str(run_id), connection_id=connection_id),
            id=row.workflow_id,
            task_queue=names.task_queue(str(h.org_id)),
            result_type=wpb.CredentialTestResult,
        )
        await handle.result()
    assert await h.tracker.reconcile_once() == 1
    settled = store.get_run(h.org_id, run_id)
    assert settled is not None
    return settled


def test_a_run_left_running_by_a_dead_watcher_gets_its_workflows_true_outcome(
    temporal: TemporalDevServer, store: OrchestratorStore
) -> None:
    """A row whose workflow finished while nobody watched is settled from Temporal's result."""

    async def scenario() -> None:
        h = await _harness(temporal.address, store, Clock())
        settled = await _settled_unwatched(h, store, h.client)
        assert (settled.state, settled.outcome_category) == (
            "failed",
            "password_authentication_failed",
        )

    asyncio.run(scenario())


def test_a_run_started_in_the_old_shared_namespace_is_settled_from_there(
    temporal: TemporalDevServer, store: OrchestratorStore
) -> None:
    """After the upgrade to namespaces per org, a run whose workflow an older orchestrator
    started in the shared namespace (and finished unwatched) is settled from that namespace."""

    async def scenario() -> None:
        h = await _harness(temporal.address, store, Clock())
        config = h.client.config()
        config["namespace"] = names.LEGACY_NAMESPACE
        settled = await _settled_unwatched(h, store, Client(**config))
        assert (settled.state, settled.outcome_category) == (
            "failed",
            "password_authentication_failed",
        )

    asyncio.run(scenario())


def test_a_run_whose_workflow_never_started_ends_not_started_after_the_grace(
    temporal: TemporalDevServer, store: OrchestratorStore
) -> None:
    """A row Temporal never heard of stays running while it may still be starting, then ends."""

    async def scenario() -> None:
        clock = Clock()
        h = await _harness(temporal.address, store, clock)
        run_id = uuid.uuid4()
        store.insert_run(
            RunRow(
                id=run_id,
                org_id=h.org_id,
                kind="preview",
                state="running",
                connection_id=uuid.uuid4(),
                draft_id=None,
                workflow_id=f"preview-{run_id}",
                outcome_category=None,
                message=None,
                started_at=clock(),
                finished_at=None,
                duration_ms=None,
            )
        )
        assert await h.tracker.reconcile_once() == 0
        young = store.get_run(h.org_id, run_id)
        assert young is not None
        assert young.state == "running"
        clock.offset = timedelta(minutes=2)
        assert await h.tracker.reconcile_once() == 1
        old = store.get_run(h.org_id, run_id)
        assert old is not None
        assert (old.state, old.outcome_category) == ("failed", "not_started")
        assert old.message is not None
        assert "nothing ran" in old.message

    asyncio.run(scenario())


def test_a_timeout_with_no_agent_polling_says_agent_unavailable(
    temporal: TemporalDevServer, store: OrchestratorStore
) -> None:
    """Nobody polls the org's queue: timed out, agent_unavailable."""

    async def scenario() -> None:
        h = await _harness(temporal.address, store, Clock())
        connection_id = str(uuid.uuid4())
        row, result = await h.run("credential_test", _test(connection_id), connection_id)
        assert result is None
        assert (row.state, row.outcome_category) == ("timed_out", "agent_unavailable")
        assert row.message is not None
        assert "no agent of this org is polling" in row.message

    asyncio.run(scenario())


def test_work_nobody_polls_for_ends_agent_unavailable_long_before_the_queue_allowance(
    temporal: TemporalDevServer, store: OrchestratorStore
) -> None:
    """With minutes of queue allowance and no agent at all, the run ends agent_unavailable as
    soon as the absence is seen, and its workflow is terminated (no agent runs it later)."""

    async def scenario() -> None:
        h = await _harness(temporal.address, store, Clock(), queue_allowance=timedelta(minutes=5))
        connection_id = str(uuid.uuid4())
        started = asyncio.get_running_loop().time()
        row, _ = await h.run("credential_test", _test(connection_id), connection_id)
        assert asyncio.get_running_loop().time() - started < 60
        assert (row.state, row.outcome_category) == ("timed_out", "agent_unavailable")
        described = await h.client.get_workflow_handle(row.workflow_id).describe()
        assert described.status == WorkflowExecutionStatus.TERMINATED

    asyncio.run(scenario())


def test_work_waits_in_the_queue_for_a_busy_agent_instead_of_timing_out(
    temporal: TemporalDevServer, store: OrchestratorStore
) -> None:
    """An agent that polls but is busy (one activity slot, each probe a second) leaves queued
    work waiting well past the work's own 3 s timeout; it then runs and the runs succeed."""

    async def scenario() -> None:
        h = await _harness(temporal.address, store, Clock(), queue_allowance=timedelta(minutes=5))
        async with Worker(
            h.client,
            task_queue=names.task_queue(str(h.org_id)),
            workflows=[StandInCredentialTest],
            activities=[stand_in_probe],
            workflow_runner=UnsandboxedWorkflowRunner(),
            max_concurrent_activities=1,
        ):
            started = asyncio.get_running_loop().time()
            rows = await asyncio.gather(
                *(h.run("credential_test", _test(BUSY), BUSY) for _ in range(6))
            )
            waited = asyncio.get_running_loop().time() - started
        assert waited > TIMEOUT.total_seconds()  # The last ones waited longer than 3 s.
        assert [(row.state, row.outcome_category) for row, _ in rows] == [
            ("failed", "password_authentication_failed")
        ] * 6

    asyncio.run(scenario())


def test_a_timeout_while_an_agent_polls_says_agent_busy(
    temporal: TemporalDevServer, store: OrchestratorStore
) -> None:
    """An agent polls but does not finish in time: timed out, agent_busy, not "no agent"."""

    async def scenario() -> None:
        h = await _harness(temporal.address, store, Clock())
        async with h.agent():
            row, _ = await h.run("credential_test", _test(SLOW), SLOW)
        assert (row.state, row.outcome_category) == ("timed_out", "agent_busy")

    asyncio.run(scenario())


def test_a_failed_workflow_ends_workflow_failed(
    temporal: TemporalDevServer, store: OrchestratorStore
) -> None:
    """A workflow that fails ends its run failed with workflow_failed."""

    async def scenario() -> None:
        h = await _harness(temporal.address, store, Clock())
        async with h.agent():
            row, result = await h.run("credential_test", _test(FAILING), FAILING)
        assert result is None
        assert (row.state, row.outcome_category) == ("failed", "workflow_failed")

    asyncio.run(scenario())


def test_a_run_started_while_temporal_is_down_is_settled_when_it_is_back(
    store: OrchestratorStore,
) -> None:
    """Temporal unreachable: the caller learns the fate is pending, never a made-up outcome;
    once Temporal answers, the reconciler ends the run not_started."""
    port = free_port()

    async def scenario() -> None:
        clock = Clock()
        with TemporalDevServer(port=port) as server:
            h = await _harness(server.address, store, clock)
        # The server is gone now.
        connection_id = str(uuid.uuid4())
        with pytest.raises(RunFateUnknown) as pending:
            await h.run("credential_test", _test(connection_id), connection_id)
        run_id = pending.value.run.id
        left = store.get_run(h.org_id, run_id)
        assert left is not None
        assert left.state == "running"
        with TemporalDevServer(port=port):
            clock.offset = timedelta(minutes=2)

            async def settled() -> bool:
                await h.tracker.reconcile_once()
                row = store.get_run(h.org_id, run_id)
                return row is not None and row.state != "running"

            await _until(settled, "the run was settled once Temporal was back")
        row = store.get_run(h.org_id, run_id)
        assert row is not None
        assert (row.state, row.outcome_category) == ("failed", "not_started")

    asyncio.run(scenario())


def test_work_returns_its_run_at_once_and_any_replica_waits_for_its_end(
    temporal: TemporalDevServer, store: OrchestratorStore
) -> None:
    """begin() returns the run still running before the work is done (AIP-151); the replica
    that watches it and another replica that only reads the store both wait to its end; a
    wait that times out returns the run as it stands; an unknown run is None."""

    async def scenario() -> None:
        clock = Clock()
        h = await _harness(temporal.address, store, clock, queue_allowance=timedelta(minutes=5))
        other = await _other_replica(h, store, clock)
        loop = asyncio.get_running_loop()
        async with Worker(
            h.client,
            task_queue=names.task_queue(str(h.org_id)),
            workflows=[StandInCredentialTest],
            activities=[stand_in_probe],
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):
            started = loop.time()
            run = await h.tracker.begin(
                h.org_id, "credential_test", _test(BUSY), connection_id=uuid.UUID(BUSY)
            )
            assert loop.time() - started < 0.9  # The work itself takes a second.
            assert (run.state, run.outcome_category) == ("running", None)
            cut_short = await other.wait(h.org_id, run.id, 0.2)
            assert cut_short is not None
            assert cut_short.state == "running"
            elsewhere, here = await asyncio.gather(
                other.wait(h.org_id, run.id, 30), h.tracker.wait(h.org_id, run.id, 30)
            )
        for row in (elsewhere, here):
            assert row is not None
            assert (row.id, row.state, row.outcome_category) == (
                run.id,
                "failed",
                "password_authentication_failed",
            )
        assert await other.wait(h.org_id, uuid.uuid4(), 1) is None
        # Another org's id for the same run finds nothing.
        assert await other.wait(uuid.uuid4(), run.id, 1) is None

    asyncio.run(scenario())


def test_work_left_by_a_gone_replica_with_no_agent_is_abandoned_by_another(
    temporal: TemporalDevServer, store: OrchestratorStore
) -> None:
    """A run whose watching replica died, on a queue no agent polls, is ended agent_unavailable
    by another replica's reconciler (its workflow terminated), not left to the queue allowance;
    and a workflow some replica abandoned settles agent_unavailable wherever it is read."""

    async def scenario() -> None:
        clock = Clock()
        h = await _harness(temporal.address, store, clock, queue_allowance=timedelta(minutes=5))
        other = await _other_replica(h, store, clock)
        rows = []
        for _ in range(2):
            connection_id, run_id = str(uuid.uuid4()), uuid.uuid4()
            row = _running_test(h.org_id, connection_id, run_id)
            store.insert_run(row)
            await h.client.start_workflow(
                names.CREDENTIAL_TEST_WORKFLOW,
                wpb.CredentialTestInput(run_id=str(run_id), connection_id=connection_id),
                id=row.workflow_id,
                task_queue=names.task_queue(str(h.org_id)),
                execution_timeout=timedelta(minutes=5),
            )
            rows.append(row)
        # The second was abandoned by a replica that died before recording it.
        await h.client.get_workflow_handle(rows[1].workflow_id).terminate(
            reason="no agent of the org is polling its task queue"
        )
        assert await other.reconcile_once() == 1  # Only the terminated one: too young yet.
        clock.offset = timedelta(seconds=5)
        assert await other.reconcile_once() == 1
        for row in rows:
            settled = store.get_run(h.org_id, row.id)
            assert settled is not None
            assert (settled.state, settled.outcome_category) == ("timed_out", "agent_unavailable")
        described = await h.client.get_workflow_handle(rows[0].workflow_id).describe()
        assert described.status == WorkflowExecutionStatus.TERMINATED

    asyncio.run(scenario())


def test_a_preview_settled_by_a_reconciler_keeps_its_history_through_the_grace(
    temporal: TemporalDevServer, store: OrchestratorStore
) -> None:
    """Another replica's watcher may still be reading a preview's rows from its history: a
    reconciler that settles the preview leaves the history for a minute, then deletes it."""

    async def scenario() -> None:
        clock = Clock()
        h = await _harness(temporal.address, store, clock)
        run_id = uuid.uuid4()
        row = dataclasses.replace(
            _running_test(h.org_id, str(uuid.uuid4()), run_id),
            kind="preview",
            workflow_id=f"preview-{run_id}",
        )
        store.insert_run(row)
        async with h.agent():
            handle = await h.client.start_workflow(
                names.PREVIEW_WORKFLOW,
                wpb.PreviewQueryInput(run_id=str(run_id), connection_id=str(row.connection_id)),
                id=row.workflow_id,
                task_queue=names.task_queue(str(h.org_id)),
                result_type=wpb.PreviewQueryResult,
            )
            await handle.result()
        assert await h.tracker.reconcile_once() == 1
        settled = store.get_run(h.org_id, run_id)
        assert settled is not None
        assert (settled.state, settled.outcome_category) == ("succeeded", "ok")
        await asyncio.sleep(0.5)  # A deletion asked for now would be under way.
        assert (await handle.result()).rows  # Still there for a watcher to read.
        clock.offset = timedelta(minutes=2)

        async def purged() -> bool:
            await h.tracker.reconcile_once()
            return await h.history_gone(row.workflow_id)

        await _until(purged, "the preview's history was deleted after the grace")

    asyncio.run(scenario())


def test_runs_are_listed_by_connection_newest_first(store: OrchestratorStore) -> None:
    """list_runs with a connection: only that connection's runs of that org, newest first."""
    org, other_org = uuid.uuid4(), uuid.uuid4()
    ours, theirs = uuid.uuid4(), uuid.uuid4()
    start = datetime(2026, 12, 1, tzinfo=UTC)

    def run(org_id: uuid.UUID, connection_id: uuid.UUID | None, minutes: int) -> RunRow:
        row = RunRow(
            id=uuid.uuid4(),
            org_id=org_id,
            kind="credential_test",
            state="running",
            connection_id=connection_id,
            draft_id=None if connection_id else uuid.uuid4(),
            workflow_id=f"test-{uuid.uuid4()}",
            outcome_category=None,
            message=None,
            started_at=start + timedelta(minutes=minutes),
            finished_at=None,
            duration_ms=None,
        )
        store.insert_run(row)
        return row

    older, newer = run(org, ours, 1), run(org, ours, 2)
    run(org, theirs, 3)
    run(org, None, 4)
    run(other_org, ours, 5)  # the same id under another org is not ours
    listed = store.list_runs(org, 10, None, connection_id=ours)
    assert [r.id for r in listed] == [newer.id, older.id]
    assert [
        r.id for r in store.list_runs(org, 1, (newer.started_at, str(newer.id)), None, ours)
    ] == [older.id]
    assert len(store.list_runs(org, 10, None)) == 4
