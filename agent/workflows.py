"""Workflow implementations of the sevvo.workflows.v1 contract. Deterministic: no I/O here."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

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
        """Runs the test activity; infrastructure failures are retried, outcomes are not."""
        result: workflows_pb2.CredentialTestResult = await workflow.execute_activity(
            temporal.TEST_CREDENTIALS_ACTIVITY,
            request,
            result_type=workflows_pb2.CredentialTestResult,
            # Short enough that an agent killed mid-test is noticed and the test retried
            # on a restarted agent well within the orchestrator's wait.
            start_to_close_timeout=timedelta(seconds=15),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                maximum_interval=timedelta(seconds=5),
            ),
        )
        return result
