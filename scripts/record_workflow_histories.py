"""Records a history of every path of every agent workflow, for replay by later releases.

Each workflow type the agent's worker registers (agent.worker.WORKFLOWS) runs through the
paths that give it different histories — an answer, another answer, infrastructure failures
retried, a forged work proof refused, a non-retryable failure, retries exhausted, a run timed
out — on a real Temporal dev server with a real worker. Each history is fetched and written to
tests/workflow_histories/<release>/<workflow type>.<path>.json, where
tests/test_workflow_replay.py replays it against later workflow code.

The activities are test doubles registered under the contract's names, except on the refused
paths, where the agent's real activities and work gate refuse a forged proof. Replay checks
only the commands a workflow issues against the events recorded, never what an activity did,
so doubles record the same history the real activities would. Every payload is encrypted with
the agent's data converter under the published test-only key in
tests/workflow_histories/payload_key.json, and every input and answer is made up here: the
histories hold nothing secret.

    make workflow-histories                                    # the current release
    PYTHONPATH=. python scripts/record_workflow_histories.py --release 0.1.0 --force
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import Message
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

if __package__ in (None, ""):
    # `python scripts/record_workflow_histories.py` puts scripts/, not the repository, on
    # sys.path.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.activities import AgentActivities
from agent.leases import LeaseManager
from agent.work_gate import WorkGate
from agent.worker import WORKFLOWS
from devstack.processes import free_port
from devstack.temporal import TemporalDevServer
from scripts.workflow_histories import (
    HISTORIES,
    current_release,
    history_converter,
    history_keys,
    load_history,
    registered_type,
    workflow_type,
)
from sevvo.connections.v1 import connections_pb2_grpc
from sevvo.orchestrator.v1 import work_proof_pb2_grpc
from sevvo.runtime import temporal as names
from sevvo.runtime import work_proof
from sevvo.runtime.work_proof import ProofKeyCache, ProofSigner
from sevvo.workflows.v1 import workflows_pb2 as wpb

IDENTITY = "sevvo-history-recorder"
"""The client's and worker's identity in the histories, in place of ``pid@hostname``."""
PROOF_KEY_ID = "history-proof-k1"


class RecordingFailed(Exception):
    """A scenario's run did not end the way its history is meant to show."""


@dataclass(frozen=True)
class Contract:
    """One workflow type: its activity's name, a made-up input, and its outcome categories."""

    workflow: str
    activity: str
    request: Callable[[], Message]
    ok: Message
    refusal: Message
    other_answer: tuple[str, Message]
    local: bool
    """Whether the workflow runs its activity as a local one (retried inside the worker)."""


CONTRACTS = (
    Contract(
        names.CREDENTIAL_TEST_WORKFLOW,
        names.TEST_CREDENTIALS_ACTIVITY,
        lambda: wpb.CredentialTestInput(run_id="history-run", connection_id=str(uuid.uuid4())),
        wpb.CredentialTestResult(category=wpb.TEST_CATEGORY_OK),
        wpb.CredentialTestResult(category=wpb.TEST_CATEGORY_WORK_REFUSED),
        (
            "password-failed",
            wpb.CredentialTestResult(category=wpb.TEST_CATEGORY_PASSWORD_AUTHENTICATION_FAILED),
        ),
        local=True,
    ),
    Contract(
        names.PREVIEW_WORKFLOW,
        names.PREVIEW_ACTIVITY,
        lambda: wpb.PreviewQueryInput(
            run_id="history-run", connection_id=str(uuid.uuid4()), sql="select 1 as one"
        ),
        wpb.PreviewQueryResult(
            category=wpb.PREVIEW_CATEGORY_OK,
            columns=[wpb.PreviewColumn(name="one", type_name="int4")],
            rows=[wpb.PreviewRow(cells=[wpb.PreviewCell(text="1")])],
            duration_ms=1,
        ),
        wpb.PreviewQueryResult(category=wpb.PREVIEW_CATEGORY_WORK_REFUSED),
        ("query-rejected", wpb.PreviewQueryResult(category=wpb.PREVIEW_CATEGORY_QUERY_REJECTED)),
        local=True,
    ),
    Contract(
        names.ROOT_ROTATION_WORKFLOW,
        names.ROOT_ROTATION_ACTIVITY,
        lambda: wpb.RootRotationInput(run_id="history-run", connection_id=str(uuid.uuid4())),
        wpb.RootRotationResult(category=wpb.ROOT_ROTATION_CATEGORY_ROTATED),
        wpb.RootRotationResult(category=wpb.ROOT_ROTATION_CATEGORY_WORK_REFUSED),
        ("login-failed", wpb.RootRotationResult(category=wpb.ROOT_ROTATION_CATEGORY_LOGIN_FAILED)),
        local=False,
    ),
    Contract(
        names.SYNC_WORKFLOW,
        names.SYNC_ACTIVITY,
        lambda: wpb.SyncInput(
            run_id="history-run",
            model_id=str(uuid.uuid4()),
            source_connection_id=str(uuid.uuid4()),
            sql="select 1 as one",
            destination_connection_id=str(uuid.uuid4()),
            destination_schema="analytics",
            destination_table="one",
            load_mode=wpb.SYNC_LOAD_MODE_FULL_REFRESH,
        ),
        wpb.SyncResult(category=wpb.SYNC_CATEGORY_OK, rows=1, bytes=16, attempt=1),
        wpb.SyncResult(category=wpb.SYNC_CATEGORY_WORK_REFUSED),
        ("schema-changed", wpb.SyncResult(category=wpb.SYNC_CATEGORY_SCHEMA_CHANGED)),
        local=False,
    ),
)


@dataclass(frozen=True)
class Scenario:
    """One path through one workflow, and how its run must end for the recording to count."""

    contract: Contract
    path: str
    behave: Callable[[int], Message] | None
    """The double's answer (or raise) per attempt; None runs the real, refusing activities."""
    status: WorkflowExecutionStatus
    result: Message | None = None
    execution_timeout: timedelta = timedelta(seconds=30)

    @property
    def name(self) -> str:
        """The history's file stem and workflow id."""
        return f"{self.contract.workflow}.{self.path}"


def _answer(message: Message) -> Callable[[int], Message]:
    return lambda attempt: message


def _after_failures(failures: int, message: Message) -> Callable[[int], Message]:
    def behave(attempt: int) -> Message:
        if attempt <= failures:
            raise RuntimeError("control plane unreachable")
        return message

    return behave


def _always_unreachable(attempt: int) -> Message:
    raise RuntimeError("control plane unreachable")


def _broken(attempt: int) -> Message:
    raise ApplicationError("broken beyond retrying", non_retryable=True)


def scenarios() -> list[Scenario]:
    """Every path recorded, for every workflow type."""
    done, failed = WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.FAILED
    found: list[Scenario] = []
    for c in CONTRACTS:
        other_path, other = c.other_answer
        found += [
            Scenario(c, "ok", _answer(c.ok), done, c.ok),
            Scenario(c, other_path, _answer(other), done, other),
            Scenario(c, "retried", _after_failures(2, c.ok), done, c.ok),
            Scenario(c, "work-refused", None, done),
            Scenario(c, "failed", _broken, failed),
        ]
        if c.local:
            # Retried inside the worker without end, until the run's own timeout.
            found.append(
                Scenario(
                    c,
                    "timed-out",
                    _always_unreachable,
                    WorkflowExecutionStatus.TIMED_OUT,
                    execution_timeout=timedelta(seconds=3),
                )
            )
        else:
            found.append(Scenario(c, "attempts-exhausted", _always_unreachable, failed))
    return found


def _double(contract: Contract, behave: Callable[[int], Message]) -> Callable[..., Any]:
    @activity.defn(name=contract.activity)
    async def double(request):  # type: ignore[no-untyped-def]
        # No annotation: the converter decodes the request by the message type it names.
        return behave(activity.info().attempt)

    return double


@dataclass
class RefusingAgent:
    """The agent's real activities and gate; the orchestrator's key is one the forger lacks."""

    org_id: str
    activities: AgentActivities
    channel: grpc.aio.Channel

    def functions(self) -> list[Callable[..., Any]]:
        """The activity functions a worker registers (the contract's names)."""
        acts = self.activities
        return [
            acts.test_credentials,
            acts.preview_query,
            acts.rotate_root_credentials,
            acts.sync_model,
        ]


def _refusing_agent(org_id: str) -> RefusingAgent:
    # The control plane is an address where nothing listens: the refusal comes before any call
    # that needs it, and the refusal's audit report failing to arrive is only logged.
    published = {PROOF_KEY_ID: Ed25519PrivateKey.generate().public_key()}

    async def fetch() -> dict[str, Any]:
        return published

    channel = grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}")
    credentials = connections_pb2_grpc.ConnectionCredentialServiceStub(channel)
    gate = WorkGate(
        org_id, ProofKeyCache(fetch), work_proof_pb2_grpc.WorkProofServiceStub(channel), credentials
    )
    leases = LeaseManager(connections_pb2_grpc.LeaseServiceStub(channel), credentials)
    return RefusingAgent(org_id, AgentActivities(credentials, leases, gate), channel)


def _forged(contract: Contract, org_id: str, workflow_id: str) -> Message:
    """The contract's input with a proof signed by a key that is not the orchestrator's."""
    request = contract.request()
    forger = ProofSigner(PROOF_KEY_ID, Ed25519PrivateKey.generate())
    token = forger.for_run(
        org_id=org_id,
        workflow_type=contract.workflow,
        workflow_id=workflow_id,
        message=request,
        lifetime=timedelta(minutes=5),
        now=datetime.now(UTC),
    )
    work_proof.attach(request, token)
    return request


async def record(client: Client, scenario: Scenario, folder: Path) -> str:
    """Runs ``scenario`` on a worker of its own, checks how it ended, writes its history."""
    org_id = history_keys().org_id
    contract = scenario.contract
    agent: RefusingAgent | None = None
    if scenario.behave is None:
        agent = _refusing_agent(org_id)
        activities = agent.functions()
        request = _forged(contract, org_id, scenario.name)
    else:
        activities = [_double(contract, scenario.behave)]
        request = contract.request()
    queue = f"{names.task_queue(org_id)}-{scenario.name}"
    try:
        async with Worker(
            client,
            task_queue=queue,
            workflows=list(WORKFLOWS),
            activities=activities,
            # As the agent's worker runs them.
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):
            handle = await client.start_workflow(
                contract.workflow,
                request,
                id=scenario.name,
                task_queue=queue,
                execution_timeout=scenario.execution_timeout,
                result_type=type(contract.ok),
            )
            result: Any = None
            with contextlib.suppress(WorkflowFailureError):  # The status says how it ended.
                result = await handle.result()
            status = (await handle.describe()).status
            history = await handle.fetch_history()
    finally:
        if agent is not None:
            await agent.channel.close()
    expected = scenario.result if scenario.behave else contract.refusal
    category = getattr(result, "category", None)
    intended = getattr(expected, "category", None)
    if status != scenario.status or category != intended:
        raise RecordingFailed(f"{scenario.name} ended {status} with {result}, not as intended")
    path = folder / f"{scenario.name}.json"
    # One event per line: a quarter smaller than to_json()'s indented form, still readable.
    events = history.to_json_dict()["events"]
    lines = ",\n".join(json.dumps(event, separators=(",", ":")) for event in events)
    path.write_text(f'{{"events": [\n{lines}\n]}}\n')
    # Read back as the replay test will, so a file that does not load is never committed.
    if workflow_type(load_history(path)) != contract.workflow:
        raise RecordingFailed(f"{path.name} does not read back as a {contract.workflow}")
    return f"{scenario.name}: {path.stat().st_size} bytes"


async def record_all(address: str, folder: Path, chosen: Sequence[Scenario]) -> None:
    """Records every scenario at once (most of the time is retries' back-off)."""
    client = await Client.connect(address, data_converter=history_converter(), identity=IDENTITY)
    for line in await asyncio.gather(*(record(client, s, folder) for s in chosen)):
        print(line)


def main(argv: Sequence[str] | None = None) -> int:
    """Records every scenario into tests/workflow_histories/<release>/."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", default=current_release(), help="folder name (version)")
    parser.add_argument(
        "--force", action="store_true", help="overwrite a release folder that already exists"
    )
    args = parser.parse_args(argv)
    folder = HISTORIES / args.release
    if folder.exists() and not args.force:
        # A release's histories are what its workflows really did; re-recording them with
        # newer code would hide exactly the change replay is there to catch.
        print(
            f"{folder} exists: a released version's histories are never re-recorded "
            "(--force, or make workflow-histories HISTORY_ARGS=--force, re-records a version "
            "not released yet)"
        )
        return 1
    chosen = scenarios()
    missing = {registered_type(w) for w in WORKFLOWS} - {s.contract.workflow for s in chosen}
    if missing:
        print(f"no scenario records {sorted(missing)}: add them to CONTRACTS")
        return 1
    # Recorded beside the folder and swapped in whole, so a failed recording leaves the
    # histories as they were.
    fresh = HISTORIES / f".{args.release}.recording"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    started = time.monotonic()
    try:
        with TemporalDevServer() as server:
            asyncio.run(record_all(server.address, fresh, chosen))
        shutil.rmtree(folder, ignore_errors=True)
        fresh.rename(folder)
    except RecordingFailed as exc:
        print(f"nothing recorded: {exc}")
        return 1
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    print(f"{len(chosen)} histories for {args.release} in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
