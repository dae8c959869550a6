"""Thin gRPC servicers for the orchestrator: protobuf in, domain call, protobuf out."""

from __future__ import annotations

from datetime import timedelta

import grpc
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration

from services.orchestrator.domain import OrchestratorDomain
from services.orchestrator.schedules import RotationSchedule
from services.orchestrator.store import RunRow
from sevvo.orchestrator.v1 import orchestrator_pb2 as pb
from sevvo.orchestrator.v1 import orchestrator_pb2_grpc as pb_grpc
from sevvo.orchestrator.v1 import work_proof_pb2, work_proof_pb2_grpc
from sevvo.runtime.errors import InvalidArgument
from sevvo.runtime.grpc_server import current_bearer, current_principal
from sevvo.runtime.outcomes import SYNC_CATEGORIES
from sevvo.runtime.servicing import timestamp
from sevvo.workflows.v1 import workflows_pb2

# A WaitRun answers this long before the caller's deadline, so the answer arrives in time.
_ANSWER_MARGIN_SECONDS = 0.5
# protobuf's Duration range (about 10,000 years), which a timedelta also holds.
_MAX_DURATION_SECONDS = 315_576_000_000

_KIND_TO_PB = {
    "credential_test": pb.RUN_KIND_CREDENTIAL_TEST,
    "preview": pb.RUN_KIND_PREVIEW,
    "root_rotation": pb.RUN_KIND_ROOT_ROTATION,
    "sync": pb.RUN_KIND_SYNC,
}
_STATE_TO_PB = {
    "running": pb.RUN_STATE_RUNNING,
    "succeeded": pb.RUN_STATE_SUCCEEDED,
    "failed": pb.RUN_STATE_FAILED,
    "timed_out": pb.RUN_STATE_TIMED_OUT,
}


def run_pb(row: RunRow) -> pb.Run:
    """A run's metadata as the API shows it."""
    return pb.Run(
        id=str(row.id),
        kind=_KIND_TO_PB[row.kind],
        state=_STATE_TO_PB[row.state],
        connection_id=str(row.connection_id) if row.connection_id else "",
        draft_id=str(row.draft_id) if row.draft_id else "",
        outcome_category=row.outcome_category or "",
        message=row.message or "",
        start_time=timestamp(row.started_at),
        finish_time=timestamp(row.finished_at),
        duration_ms=row.duration_ms or 0,
        row_count=row.row_count or 0,
        truncated=bool(row.truncated),
        creator=row.creator,
        model_id=str(row.model_id) if row.model_id else "",
        sync=_sync_pb(row),
    )


def _sync_pb(row: RunRow) -> workflows_pb2.SyncResult | None:
    """A finished sync's report, with the run's category; None for other runs."""
    if row.sync_report is None:
        return None
    result = json_format.ParseDict(
        row.sync_report, workflows_pb2.SyncResult(), ignore_unknown_fields=True
    )
    result.category = SYNC_CATEGORIES.value_named(row.outcome_category)
    result.message = row.message or ""
    return result


def _duration(field: str, duration: Duration) -> timedelta:
    """A request's duration as a timedelta; out-of-range values are the caller's error."""
    if not -_MAX_DURATION_SECONDS <= duration.seconds <= _MAX_DURATION_SECONDS or not (
        -999_999_999 <= duration.nanos <= 999_999_999
    ):
        raise InvalidArgument(field, "is not a valid duration")
    return duration.ToTimedelta()


def schedule_pb(connection_id: str, schedule: RotationSchedule) -> pb.RootRotationSchedule:
    """A schedule as the API shows it; interval and next time unset when there is none."""
    message = pb.RootRotationSchedule(connection_id=connection_id)
    if schedule.interval is not None:
        message.interval.FromTimedelta(schedule.interval)
    if schedule.next_rotation is not None:
        message.next_rotation_time.FromDatetime(schedule.next_rotation)
    return message


class OrchestratorServicer(pb_grpc.OrchestratorServiceServicer):
    """sevvo.orchestrator.v1.OrchestratorService."""

    def __init__(self, domain: OrchestratorDomain) -> None:
        self._domain = domain

    async def TestConnection(
        self, request: pb.TestConnectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Run:
        row = await self._domain.test_connection(
            current_principal(),
            current_bearer(),
            connection_id=request.connection_id,
            draft_id=request.draft_id,
        )
        return run_pb(row)

    async def PreviewQuery(
        self, request: pb.PreviewQueryRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreviewQueryResponse:
        row, result = await self._domain.preview_query(
            current_principal(), current_bearer(), request.connection_id, request.sql
        )
        return pb.PreviewQueryResponse(run=run_pb(row), result=result)

    async def PrepareOrgNamespace(
        self, request: pb.PrepareOrgNamespaceRequest, context: grpc.aio.ServicerContext
    ) -> pb.PrepareOrgNamespaceResponse:
        namespace = await self._domain.prepare_namespace(current_principal())
        return pb.PrepareOrgNamespaceResponse(namespace=namespace)

    async def RotateRootCredentials(
        self, request: pb.RotateRootCredentialsRequest, context: grpc.aio.ServicerContext
    ) -> pb.Run:
        row = await self._domain.rotate_root(
            current_principal(), current_bearer(), request.connection_id
        )
        return run_pb(row)

    async def SetRootRotationSchedule(
        self, request: pb.SetRootRotationScheduleRequest, context: grpc.aio.ServicerContext
    ) -> pb.RootRotationSchedule:
        schedule = await self._domain.set_root_rotation_schedule(
            current_principal(),
            current_bearer(),
            request.connection_id,
            _duration("interval", request.interval),
        )
        return schedule_pb(request.connection_id, schedule)

    async def GetRootRotationSchedule(
        self, request: pb.GetRootRotationScheduleRequest, context: grpc.aio.ServicerContext
    ) -> pb.RootRotationSchedule:
        schedule = await self._domain.get_root_rotation_schedule(
            current_principal(), current_bearer(), request.connection_id
        )
        return schedule_pb(request.connection_id, schedule)

    async def DeleteRootRotationSchedule(
        self, request: pb.DeleteRootRotationScheduleRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteRootRotationScheduleResponse:
        deleted = await self._domain.delete_root_rotation_schedule(
            current_principal(), current_bearer(), request.connection_id
        )
        return pb.DeleteRootRotationScheduleResponse(deleted=deleted)

    async def GetRun(self, request: pb.GetRunRequest, context: grpc.aio.ServicerContext) -> pb.Run:
        return run_pb(await self._domain.get_run(current_principal(), request.id))

    async def WaitRun(
        self, request: pb.WaitRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.Run:
        timeout = _duration("timeout", request.timeout) if request.HasField("timeout") else None
        remaining = context.time_remaining()
        if remaining is not None:
            # Answer before the caller's deadline, so a run still going is an answer, not an error.
            deadline = timedelta(seconds=max(remaining - _ANSWER_MARGIN_SECONDS, 0.0))
            timeout = deadline if timeout is None or not timeout else min(timeout, deadline)
        return run_pb(await self._domain.wait_run(current_principal(), request.id, timeout))

    async def ListRuns(
        self, request: pb.ListRunsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRunsResponse:
        rows, token = await self._domain.list_runs(
            current_principal(),
            request.page_size,
            request.page_token,
            request.model_id,
            request.connection_id,
        )
        return pb.ListRunsResponse(runs=[run_pb(r) for r in rows], next_page_token=token)


class PayloadKeyServicer(pb_grpc.PayloadKeyServiceServicer):
    """sevvo.orchestrator.v1.PayloadKeyService: keys for agents, rotation for admins."""

    def __init__(self, domain: OrchestratorDomain) -> None:
        self._domain = domain

    async def GetPayloadKeys(
        self, request: pb.GetPayloadKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetPayloadKeysResponse:
        keys = await self._domain.payload_keys(current_principal())
        return pb.GetPayloadKeysResponse(
            keys=[pb.PayloadKey(key_id=k, key=keys.get(k).key) for k in sorted(keys.key_ids)],
            current_key_id=keys.current_id,
        )

    async def RotatePayloadKey(
        self, request: pb.RotatePayloadKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RotatePayloadKeyResponse:
        rotation = await self._domain.rotate_payload_key(
            current_principal(), request.revoked_deployment_id
        )
        return pb.RotatePayloadKeyResponse(
            current_key_id=rotation.current.key_id,
            previous_key_id=rotation.previous_key_id or "",
            rotated=rotation.rotated,
            current_since_time=timestamp(rotation.current.created_at),
        )


class WorkProofServicer(work_proof_pb2_grpc.WorkProofServiceServicer):
    """sevvo.orchestrator.v1.WorkProofService: public proof keys, and vouching (agents only)."""

    def __init__(self, domain: OrchestratorDomain) -> None:
        self._domain = domain

    async def GetWorkProofKeys(
        self, request: work_proof_pb2.GetWorkProofKeysRequest, context: grpc.aio.ServicerContext
    ) -> work_proof_pb2.GetWorkProofKeysResponse:
        keys = await self._domain.proof_keys()
        return work_proof_pb2.GetWorkProofKeysResponse(
            keys=[
                work_proof_pb2.WorkProofKey(key_id=kid, public_key=raw, algorithm="EdDSA")
                for kid, raw in sorted(keys.items())
            ]
        )

    async def VouchForWork(
        self, request: work_proof_pb2.VouchForWorkRequest, context: grpc.aio.ServicerContext
    ) -> work_proof_pb2.VouchForWorkResponse:
        proof = await self._domain.vouch(
            current_principal(), request.workflow_id, request.workflow_type
        )
        return work_proof_pb2.VouchForWorkResponse(proof=proof)
