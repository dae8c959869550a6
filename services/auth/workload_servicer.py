"""Thin gRPC servicer for sevvo.auth.v1.WorkloadService: protobuf in, domain call, protobuf out."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from services.auth.workload_store import WorkloadRow
from services.auth.workloads import WorkloadDomain, WorkloadUpdate
from sevvo.auth.v1 import workloads_pb2, workloads_pb2_grpc
from sevvo.runtime.grpc_server import current_principal
from sevvo.runtime.servicing import blocking, timestamp
from sevvo.runtime.workload_grants import Grant


def grants_pb(grants: Iterable[Grant]) -> list[workloads_pb2.WorkloadGrant]:
    """Grants as the API shows them."""
    return [workloads_pb2.WorkloadGrant(connection_id=g.connection_id, role=g.role) for g in grants]


def _pairs(grants: Iterable[workloads_pb2.WorkloadGrant]) -> tuple[tuple[str, str], ...]:
    return tuple((grant.connection_id, grant.role) for grant in grants)


def workload_pb(row: WorkloadRow) -> workloads_pb2.Workload:
    """A workload as the API shows it: never the secret hash."""
    return workloads_pb2.Workload(
        id=str(row.id),
        org_id=str(row.org_id),
        display_name=row.display_name,
        description=row.description,
        grants=grants_pb(row.grants),
        max_ttl_seconds=row.max_ttl_seconds,
        state=(
            workloads_pb2.WORKLOAD_STATE_REVOKED
            if row.revoked_at
            else workloads_pb2.WORKLOAD_STATE_ACTIVE
        ),
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
        revoke_time=timestamp(row.revoked_at),
        creator_user_id=str(row.creator_user_id) if row.creator_user_id else "",
    )


class WorkloadServicer(workloads_pb2_grpc.WorkloadServiceServicer):
    """sevvo.auth.v1.WorkloadService."""

    def __init__(self, domain: WorkloadDomain) -> None:
        self._domain = domain

    async def CreateWorkload(
        self, request: workloads_pb2.CreateWorkloadRequest, context: grpc.aio.ServicerContext
    ) -> workloads_pb2.CreateWorkloadResponse:
        created = await blocking(
            self._domain.create,
            current_principal(),
            request.display_name,
            request.description,
            _pairs(request.grants),
            request.max_ttl_seconds,
        )
        return workloads_pb2.CreateWorkloadResponse(
            workload=workload_pb(created.workload), workload_token=created.token
        )

    async def GetWorkload(
        self, request: workloads_pb2.GetWorkloadRequest, context: grpc.aio.ServicerContext
    ) -> workloads_pb2.Workload:
        return workload_pb(await blocking(self._domain.get, current_principal(), request.id))

    async def ListWorkloads(
        self, request: workloads_pb2.ListWorkloadsRequest, context: grpc.aio.ServicerContext
    ) -> workloads_pb2.ListWorkloadsResponse:
        rows, token = await blocking(
            self._domain.list_workloads, current_principal(), request.page_size, request.page_token
        )
        return workloads_pb2.ListWorkloadsResponse(
            workloads=[workload_pb(r) for r in rows], next_page_token=token
        )

    async def UpdateWorkload(
        self, request: workloads_pb2.UpdateWorkloadRequest, context: grpc.aio.ServicerContext
    ) -> workloads_pb2.Workload:
        update = WorkloadUpdate(
            display_name=request.workload.display_name,
            description=request.workload.description,
            grants=_pairs(request.workload.grants),
            max_ttl_seconds=request.workload.max_ttl_seconds,
        )
        row = await blocking(
            self._domain.update,
            current_principal(),
            request.id,
            update,
            tuple(request.update_mask.paths),
        )
        return workload_pb(row)

    async def RevokeWorkload(
        self, request: workloads_pb2.RevokeWorkloadRequest, context: grpc.aio.ServicerContext
    ) -> workloads_pb2.Workload:
        return workload_pb(await blocking(self._domain.revoke, current_principal(), request.id))
