"""The agent's workflows with stand-in activities, on a real Temporal dev server.

The activities are replaced (registered under the contract's names) so the workflows' own
rules are what is tested: which failures are retried and for how long.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from google.protobuf.message import Message
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from agent.workflows import (
    SYNC_HEARTBEAT_TIMEOUT,
    CredentialTestWorkflow,
    PreviewQueryWorkflow,
    RootRotationWorkflow,
    SyncWorkflow,
)
from devstack.temporal import TemporalDevServer
from sevvo.runtime import temporal as names
from sevvo.workflows.v1 import workflows_pb2 as wpb


@pytest.fixture(scope="module")
def temporal() -> Iterator[TemporalDevServer]:
    """A throwaway in-memory Temporal dev server for this module."""
    with TemporalDevServer() as server:
        yield server


def test_a_preview_outlasts_a_control_plane_that_is_briefly_unreachable(
    temporal: TemporalDevServer,
) -> None:
    """Five failed attempts in a row (a resolve call that cannot reach connections) are
    retried; the preview then answers. It used to give up after three."""
    attempts: list[int] = []

    @activity.defn(name=names.PREVIEW_ACTIVITY)
    async def flaky_preview(request: wpb.PreviewQueryInput) -> wpb.PreviewQueryResult:
        attempts.append(activity.info().attempt)
        if len(attempts) <= 5:
            raise RuntimeError("control plane unreachable")
        return wpb.PreviewQueryResult(category=wpb.PREVIEW_CATEGORY_OK)

    async def scenario() -> wpb.PreviewQueryResult:
        client = await Client.connect(temporal.address)
        queue = f"tenant-{uuid.uuid4()}"
        async with Worker(
            client,
            task_queue=queue,
            workflows=[PreviewQueryWorkflow],
            activities=[flaky_preview],
        ):
            result: wpb.PreviewQueryResult = await client.execute_workflow(
                names.PREVIEW_WORKFLOW,
                wpb.PreviewQueryInput(run_id="r", connection_id=str(uuid.uuid4()), sql="select 1"),
                id=f"preview-{uuid.uuid4()}",
                task_queue=queue,
                result_type=wpb.PreviewQueryResult,
            )
            return result

    result = asyncio.run(scenario())
    assert result.category == wpb.PREVIEW_CATEGORY_OK
    assert len(attempts) == 6


def test_a_credential_test_runs_as_a_local_activity_and_is_retried(
    temporal: TemporalDevServer,
) -> None:
    """A credential test skips the activity task queue (no activity task in its history) and
    an infrastructure failure is retried until the test answers."""
    attempts: list[int] = []

    @activity.defn(name=names.TEST_CREDENTIALS_ACTIVITY)
    async def flaky_test(request: wpb.CredentialTestInput) -> wpb.CredentialTestResult:
        attempts.append(activity.info().attempt)
        if len(attempts) <= 2:
            raise RuntimeError("control plane unreachable")
        return wpb.CredentialTestResult(category=wpb.TEST_CATEGORY_OK)

    async def scenario() -> tuple[wpb.CredentialTestResult, set[str]]:
        client = await Client.connect(temporal.address)
        queue = f"tenant-{uuid.uuid4()}"
        async with Worker(
            client, task_queue=queue, workflows=[CredentialTestWorkflow], activities=[flaky_test]
        ):
            handle = await client.start_workflow(
                names.CREDENTIAL_TEST_WORKFLOW,
                wpb.CredentialTestInput(run_id="r", connection_id=str(uuid.uuid4())),
                id=f"test-{uuid.uuid4()}",
                task_queue=queue,
                result_type=wpb.CredentialTestResult,
            )
            result: wpb.CredentialTestResult = await handle.result()
            kinds = {
                EventType.Name(event.event_type) async for event in handle.fetch_history_events()
            }
            return result, kinds

    result, kinds = asyncio.run(scenario())
    assert result.category == wpb.TEST_CATEGORY_OK
    assert len(attempts) == 3
    assert "EVENT_TYPE_MARKER_RECORDED" in kinds
    assert "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED" not in kinds


@pytest.mark.parametrize(
    ("workflow", "activity_name", "request_message", "result_message"),
    [
        (
            CredentialTestWorkflow,
            names.TEST_CREDENTIALS_ACTIVITY,
            wpb.CredentialTestInput(run_id="r", connection_id=str(uuid.uuid4())),
            wpb.CredentialTestResult(category=wpb.TEST_CATEGORY_OK),
        ),
        (
            PreviewQueryWorkflow,
            names.PREVIEW_ACTIVITY,
            wpb.PreviewQueryInput(run_id="r", connection_id=str(uuid.uuid4()), sql="select 1"),
            wpb.PreviewQueryResult(category=wpb.PREVIEW_CATEGORY_OK),
        ),
        (
            RootRotationWorkflow,
            names.ROOT_ROTATION_ACTIVITY,
            wpb.RootRotationInput(run_id="r", connection_id=str(uuid.uuid4())),
            wpb.RootRotationResult(),
        ),
        (
            SyncWorkflow,
            names.SYNC_ACTIVITY,
            wpb.SyncInput(run_id="r", model_id=str(uuid.uuid4()), sql="select 1"),
            wpb.SyncResult(category=wpb.SYNC_CATEGORY_OK),
        ),
    ],
    ids=["credential-test", "preview", "root-rotation", "sync"],
)
def test_every_agent_workflow_passes_the_determinism_sandbox(
    temporal: TemporalDevServer,
    workflow: type,
    activity_name: str,
    request_message: Message,
    result_message: Message,
) -> None:
    """The agent runs its workflows without Temporal's sandbox (re-importing their module for
    every run cost a fifth of its event loop under load), so the sandbox's checks run here:
    each workflow completes inside it, with the sandbox's default restrictions."""

    @activity.defn(name=activity_name)
    async def stand_in(request):  # type: ignore[no-untyped-def]
        # No annotation: the converter decodes the request by the message type it names.
        return result_message

    async def scenario() -> Message:
        client = await Client.connect(temporal.address)
        queue = f"tenant-{uuid.uuid4()}"
        async with Worker(
            client,
            task_queue=queue,
            workflows=[workflow],
            activities=[stand_in],
            workflow_runner=SandboxedWorkflowRunner(),
        ):
            result: Message = await client.execute_workflow(
                workflow.run,  # type: ignore[attr-defined]
                request_message,
                id=f"sandboxed-{uuid.uuid4()}",
                task_queue=queue,
                execution_timeout=timedelta(seconds=30),
            )
            return result

    assert asyncio.run(scenario()) == result_message


def test_a_sync_is_retried_after_a_lost_attempt_and_its_outcomes_are_not(
    temporal: TemporalDevServer,
) -> None:
    """An attempt that fails (an agent gone, a control plane unreachable) is tried again; a
    sync that ends in an outcome (here schema drift) is returned once, not retried. The
    activity runs with a heartbeat timeout, so a silent agent is noticed in seconds."""
    attempts: list[int] = []

    @activity.defn(name=names.SYNC_ACTIVITY)
    async def flaky_sync(request: wpb.SyncInput) -> wpb.SyncResult:
        attempts.append(activity.info().attempt)
        if len(attempts) == 1:
            raise RuntimeError("agent lost mid-stream")
        return wpb.SyncResult(category=wpb.SYNC_CATEGORY_SCHEMA_CHANGED, attempt=len(attempts))

    async def scenario() -> tuple[wpb.SyncResult, timedelta | None]:
        client = await Client.connect(temporal.address)
        queue = f"tenant-{uuid.uuid4()}"
        workflow_id = f"sync-{uuid.uuid4()}"
        async with Worker(
            client, task_queue=queue, workflows=[SyncWorkflow], activities=[flaky_sync]
        ):
            result: wpb.SyncResult = await client.execute_workflow(
                names.SYNC_WORKFLOW,
                wpb.SyncInput(run_id="r", model_id=str(uuid.uuid4()), sql="select 1"),
                id=workflow_id,
                task_queue=queue,
                result_type=wpb.SyncResult,
                execution_timeout=timedelta(seconds=60),
            )
        heartbeat = None
        async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                attributes = event.activity_task_scheduled_event_attributes
                heartbeat = attributes.heartbeat_timeout.ToTimedelta()
        return result, heartbeat

    result, heartbeat = asyncio.run(scenario())
    assert result.category == wpb.SYNC_CATEGORY_SCHEMA_CHANGED
    assert attempts == [1, 2]
    assert heartbeat == SYNC_HEARTBEAT_TIMEOUT
