"""Activities the agent runs next to the customer's data. Credentials are fetched by reference.

The workflow input names a connection or draft; the credentials come from the connections
service at run time, over the agent's own authenticated channel, and never enter Temporal.
"""

from __future__ import annotations

import grpc
from temporalio import activity

from agent.postgres_probe import CATEGORY_HINTS, probe_postgres
from sevvo.connections.v1 import connections_pb2, connections_pb2_grpc
from sevvo.runtime import temporal
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.logs import get_logger
from sevvo.workflows.v1 import workflows_pb2

log = get_logger(__name__)

# The control plane answered, and the answer means these credentials cannot be used.
_UNUSABLE = {
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.INVALID_ARGUMENT,
}


class AgentActivities:
    """The agent's activities, sharing one channel to the control plane."""

    def __init__(self, credentials: connections_pb2_grpc.ConnectionCredentialServiceStub) -> None:
        self._credentials = credentials

    @activity.defn(name=temporal.TEST_CREDENTIALS_ACTIVITY)
    async def test_credentials(
        self, request: workflows_pb2.CredentialTestInput
    ) -> workflows_pb2.CredentialTestResult:
        """Resolves the credentials and probes the database with them."""
        log.info("credential test started", run_id=request.run_id)
        resolve = connections_pb2.ResolveConnectionCredentialsRequest(purpose="credential_test")
        if request.WhichOneof("target") == "draft_id":
            resolve.draft_id = request.draft_id
        else:
            resolve.connection_id = request.connection_id
        try:
            resolved = await self._credentials.ResolveConnectionCredentials(resolve, timeout=10)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in _UNUSABLE:
                raise  # Unreachable or unauthenticated: let Temporal retry the activity.
            reason = error_details(exc).reason
            log.info("stored credentials unusable", run_id=request.run_id, reason=reason)
            category = workflows_pb2.TEST_CATEGORY_INVALID_STORED_CREDENTIALS
            return workflows_pb2.CredentialTestResult(
                category=category, message=CATEGORY_HINTS[category]
            )
        result = await probe_postgres(resolved.postgres)
        log.info(
            "credential test done",
            run_id=request.run_id,
            category=workflows_pb2.TestCategory.Name(result.category),
            duration_ms=result.duration_ms,
        )
        return result
