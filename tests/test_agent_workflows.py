"""The agent's workflows with stand-in activities, on a real Temporal dev server.

The activities are replaced (registered under the contract's names) so the workflows' own
rules are what is tested: which failures are retried and for how long.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from agent.workflows import PreviewQueryWorkflow
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
