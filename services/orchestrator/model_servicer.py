"""The thin gRPC servicer of ModelService: protobuf in, ModelsDomain call, protobuf out."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from google.protobuf.duration_pb2 import Duration

from services.orchestrator.models import ModelRow, ModelsDomain, ModelSpec, next_sync_time
from services.orchestrator.servicer import run_pb
from sevvo.orchestrator.v1 import models_pb2 as pb
from sevvo.orchestrator.v1 import models_pb2_grpc as pb_grpc
from sevvo.orchestrator.v1 import orchestrator_pb2
from sevvo.runtime.grpc_server import current_bearer, current_principal
from sevvo.runtime.servicing import timestamp

_LOAD_MODE_FROM_PB = {
    pb.LOAD_MODE_FULL_REFRESH: "full_refresh",
    pb.LOAD_MODE_INCREMENTAL: "incremental",
}
_LOAD_MODE_TO_PB = {name: value for value, name in _LOAD_MODE_FROM_PB.items()}


def spec_from_pb(model: pb.Model) -> ModelSpec:
    """The fields a caller sets, from a request's Model; output-only fields are not read.

    The request's durations are already in protobuf's range (sevvo.runtime.validation's
    request check runs before every servicer), so the conversion cannot fail.
    """
    return ModelSpec(
        name=model.name,
        source_connection_id=model.source_connection_id,
        sql=model.sql,
        destination_connection_id=model.destination_connection_id,
        destination_table=model.destination_table,
        load_mode=_LOAD_MODE_FROM_PB.get(model.load_mode, ""),
        cursor_column=model.cursor_column,
        primary_key=tuple(model.primary_key),
        allow_schema_evolution=model.allow_schema_evolution,
        schedule_interval=model.schedule_interval.ToTimedelta(),
    )


def model_pb(row: ModelRow, now: datetime | None = None) -> pb.Model:
    """A stored model as the API shows it, its next scheduled sync as of ``now``."""
    return pb.Model(
        id=str(row.id),
        name=row.name,
        source_connection_id=str(row.source_connection_id),
        sql=row.sql,
        destination_connection_id=str(row.destination_connection_id),
        destination_table=f"{row.destination_schema}.{row.destination_table}",
        load_mode=_LOAD_MODE_TO_PB[row.load_mode],
        cursor_column=row.cursor_column or "",
        primary_key=list(row.primary_key),
        allow_schema_evolution=row.allow_schema_evolution,
        schedule_interval=_duration(row),
        next_sync_time=timestamp(next_sync_time(row, now or datetime.now(UTC))),
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
    )


def _duration(row: ModelRow) -> Duration | None:
    if row.schedule_interval is None:
        return None
    duration = Duration()
    duration.FromTimedelta(row.schedule_interval)
    return duration


def update_mask(request: pb.UpdateModelRequest) -> tuple[str, ...]:
    """The fields an update names: its mask, or every field set in its model when the mask is
    empty (AIP-134). Which of them may change is the domain's rule."""
    if request.update_mask.paths:
        return tuple(request.update_mask.paths)
    return tuple(field.name for field, _ in request.model.ListFields())


class ModelServicer(pb_grpc.ModelServiceServicer):
    """sevvo.orchestrator.v1.ModelService."""

    def __init__(self, domain: ModelsDomain) -> None:
        self._domain = domain

    async def CreateModel(
        self, request: pb.CreateModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.Model:
        row = await self._domain.create(
            current_principal(), current_bearer(), spec_from_pb(request.model)
        )
        return model_pb(row)

    async def GetModel(
        self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.Model:
        return model_pb(await self._domain.get(current_principal(), request.id))

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        rows, token = await self._domain.list_models(
            current_principal(), request.page_size, request.page_token
        )
        return pb.ListModelsResponse(models=[model_pb(r) for r in rows], next_page_token=token)

    async def UpdateModel(
        self, request: pb.UpdateModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.Model:
        row = await self._domain.update(
            current_principal(),
            current_bearer(),
            request.model.id,
            spec_from_pb(request.model),
            update_mask(request),
        )
        return model_pb(row)

    async def DeleteModel(
        self, request: pb.DeleteModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteModelResponse:
        row = await self._domain.delete(current_principal(), request.id)
        return pb.DeleteModelResponse(id=str(row.id))

    async def SyncModel(
        self, request: pb.SyncModelRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.Run:
        row = await self._domain.sync(current_principal(), current_bearer(), request.id)
        return run_pb(row)
