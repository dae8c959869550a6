"""Workflow implementations of the sevvo.workflows.v1 contract. Deterministic: no I/O here."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

# One attempt of a sync may take this long; the orchestrator's run allows six hours in all.
SYNC_ATTEMPT_TIMEOUT = timedelta(hours=2)
# An agent that stops heartbeating this long is taken as gone, and the attempt retried.
SYNC_HEARTBEAT_TIMEOUT = timedelta(seconds=20)

with workflow.unsafe.imports_passed_through():
    from sevvo.runtime import temporal
    from sevvo.workflows.v1 import workflows_pb2


@workflow.defn(name=temporal.CREDENTIAL_TEST_WORKFLOW)
class CredentialTestWorkflow:
    """Tests a connection's (or draft's) credentials from inside the customer's network."""

    @workflow.run
    async def run(
        self, request: workflows_pb2.CredentialTestInput
    ) -> workflows_pb2.CredentialTestResult:
        """Runs the test as a local activity; infrastructure failures are retried, outcomes
        are not.

        The user is waiting, and a local activity skips an activity task's round trip through
        the queue (a third of the Temporal work of a test). An agent killed mid-test loses
        its workflow task; Temporal hands the workflow to a restarted agent after the
        workflow task timeout, which reruns the test; the workflow's own execution timeout
        bounds the retries.
        """
        result: workflows_pb2.CredentialTestResult = await workflow.execute_local_activity(
            temporal.TEST_CREDENTIALS_ACTIVITY,
            request,
            result_type=workflows_pb2.CredentialTestResult,
            # Connecting, a minted login for a dynamic connection and the probe.
            start_to_close_timeout=timedelta(seconds=15),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                maximum_interval=timedelta(seconds=5),
            ),
        )
        return result


@workflow.defn(name=temporal.PREVIEW_WORKFLOW)
class PreviewQueryWorkflow:
    """Runs one user preview query next to the data and returns at most 100 rows."""

    @workflow.run
    async def run(
        self, request: workflows_pb2.PreviewQueryInput
    ) -> workflows_pb2.PreviewQueryResult:
        """Runs the preview as a local activity, retrying only infrastructure failures.

        The user is waiting, and a local activity skips a round trip through the task queue.
        Query outcomes are results, not errors; the statement is read-only, so a retry after
        a lost worker is harmless.
        """
        result: workflows_pb2.PreviewQueryResult = await workflow.execute_local_activity(
            temporal.PREVIEW_ACTIVITY,
            request,
            result_type=workflows_pb2.PreviewQueryResult,
            # 10 s statement timeout plus connecting; the orchestrator waits 40 s in all.
            start_to_close_timeout=timedelta(seconds=25),
            # A control plane restarting for a few seconds (the resolve call fails) is retried
            # rather than ending the preview at once; the whole is bounded inside the 40 s.
            schedule_to_close_timeout=timedelta(seconds=35),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(milliseconds=200),
                maximum_interval=timedelta(seconds=2),
            ),
        )
        return result


@workflow.defn(name=temporal.ROOT_ROTATION_WORKFLOW)
class RootRotationWorkflow:
    """Rotates a dynamic connection's privileged password inside the customer's network."""

    @workflow.run
    async def run(
        self, request: workflows_pb2.RootRotationInput
    ) -> workflows_pb2.RootRotationResult:
        """Runs the rotation activity; a retry after a lost worker finishes what it started.

        The activity recovers an interrupted rotation before rotating again, so retrying it
        never leaves the stored password wrong; three attempts bound a broken environment.
        """
        result: workflows_pb2.RootRotationResult = await workflow.execute_activity(
            temporal.ROOT_ROTATION_ACTIVITY,
            request,
            result_type=workflows_pb2.RootRotationResult,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                maximum_interval=timedelta(seconds=5),
                maximum_attempts=3,
            ),
        )
        return result


@workflow.defn(name=temporal.SYNC_WORKFLOW)
class SyncWorkflow:
    """Syncs a model from its source into its destination inside the customer's network."""

    @workflow.run
    async def run(self, request: workflows_pb2.SyncInput) -> workflows_pb2.SyncResult:
        """Runs the sync activity; a lost agent is noticed by the missed heartbeats and the
        sync runs again from the start on whichever agent of the org picks it up.

        A sync's outcomes (a query error, schema drift) are results, not retried. Every
        attempt leaves the destination whole: it loads in one transaction, and a second
        attempt waits on the model's lock until a first one still running has ended.
        """
        result: workflows_pb2.SyncResult = await workflow.execute_activity(
            temporal.SYNC_ACTIVITY,
            request,
            result_type=workflows_pb2.SyncResult,
            start_to_close_timeout=SYNC_ATTEMPT_TIMEOUT,
            heartbeat_timeout=SYNC_HEARTBEAT_TIMEOUT,
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=2),
                maximum_interval=timedelta(seconds=30),
                maximum_attempts=10,
            ),
        )
        return result
