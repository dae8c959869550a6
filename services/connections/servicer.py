"""Thin gRPC servicers for connections: protobuf in, domain call, protobuf out.

Responses are built from stored metadata only; no response message has a field that could
carry a password, except the agent-only ResolveConnectionCredentials.
"""

from __future__ import annotations

import uuid

import grpc
from google.protobuf import empty_pb2

from services.connections.domain import ConnectionsDomain, ConnectionUpdate
from services.connections.postgres_target import PostgresTarget, from_dsn, from_fields
from services.connections.store import ConnectionRow, ConnectionStore
from sevvo.audit.v1 import audit_pb2, audit_pb2_grpc
from sevvo.connections.v1 import connections_pb2 as pb
from sevvo.connections.v1 import connections_pb2_grpc as pb_grpc
from sevvo.runtime import audit
from sevvo.runtime.errors import InvalidArgument
from sevvo.runtime.grpc_server import current_bearer, current_principal
from sevvo.runtime.servicing import blocking, timestamp

_SSL_TO_PB = {"disable": pb.SSL_MODE_DISABLE, "require": pb.SSL_MODE_REQUIRE}
_SSL_FROM_PB: dict[int, str] = {pb.SSL_MODE_DISABLE: "disable", pb.SSL_MODE_REQUIRE: "require"}
_MODE_TO_PB = {"fields": pb.CREDENTIAL_MODE_FIELDS, "dsn": pb.CREDENTIAL_MODE_DSN}
_STATUS_TO_PB = {
    "pending": pb.CONNECTION_STATUS_PENDING,
    "connected": pb.CONNECTION_STATUS_CONNECTED,
    "error": pb.CONNECTION_STATUS_ERROR,
}


def connection_pb(row: ConnectionRow) -> pb.Connection:
    """A connection as users see it: metadata and status, never credentials."""
    return pb.Connection(
        id=str(row.id),
        display_name=row.display_name,
        type=pb.CONNECTION_TYPE_POSTGRES,
        safe_metadata=pb.PostgresMetadata(
            host=row.host,
            port=row.port,
            database=row.database,
            username=row.username,
            ssl_mode=_SSL_TO_PB[row.ssl_mode],
        ),
        credential_mode=_MODE_TO_PB[row.credential_mode],
        has_password=bool(row.sealed_credentials),
        status=_STATUS_TO_PB[row.status],
        last_test_time=timestamp(row.last_test_at),
        last_test_category=row.last_test_category or "",
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
    )


def _ssl(value: int) -> str:
    return _SSL_FROM_PB.get(value, "")


def target_from_request(request: pb.CreateConnectionRequest) -> tuple[PostgresTarget, str]:
    """The validated target and credential mode of a create request."""
    which = request.WhichOneof("credentials")
    if which == "fields":
        f = request.fields
        target = from_fields(
            host=f.host,
            port=f.port if f.HasField("port") else None,
            database=f.database,
            username=f.username,
            password=f.password,
            ssl_mode=_ssl(f.ssl_mode),
            prefix="fields",
        )
        return target, "fields"
    if which == "dsn":
        return from_dsn(request.dsn.uri, _ssl(request.dsn.ssl_mode) or None, prefix="dsn"), "dsn"
    raise InvalidArgument("credentials", "one of fields or dsn is required")


class ConnectionServicer(pb_grpc.ConnectionServiceServicer):
    """sevvo.connections.v1.ConnectionService."""

    def __init__(self, domain: ConnectionsDomain) -> None:
        self._domain = domain

    async def CreateConnection(
        self, request: pb.CreateConnectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Connection:
        target, mode = target_from_request(request)
        row = await blocking(
            self._domain.create,
            current_principal(),
            request.display_name,
            target,
            mode,
            current_bearer(),
        )
        return connection_pb(row)

    async def GetConnection(
        self, request: pb.GetConnectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Connection:
        return connection_pb(await blocking(self._domain.get, current_principal(), request.id))

    async def ListConnections(
        self, request: pb.ListConnectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListConnectionsResponse:
        rows, token = await blocking(
            self._domain.list, current_principal(), request.page_size, request.page_token
        )
        return pb.ListConnectionsResponse(
            connections=[connection_pb(r) for r in rows], next_page_token=token
        )

    async def UpdateConnection(
        self, request: pb.UpdateConnectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Connection:
        f = request.connection.fields
        update = ConnectionUpdate(
            mask=tuple(request.update_mask.paths),
            display_name=request.connection.display_name,
            host=f.host,
            port=f.port if f.HasField("port") else None,
            database=f.database,
            username=f.username,
            password=f.password,
            ssl_mode=_ssl(f.ssl_mode),
        )
        row = await blocking(
            self._domain.update, current_principal(), request.id, update, current_bearer()
        )
        return connection_pb(row)

    async def TestConnection(
        self, request: pb.TestConnectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Connection:
        row = await blocking(self._domain.test, current_principal(), request.id, current_bearer())
        return connection_pb(row)

    async def DeleteConnection(
        self, request: pb.DeleteConnectionRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await blocking(self._domain.delete, current_principal(), request.id)
        return empty_pb2.Empty()


class CredentialServicer(pb_grpc.ConnectionCredentialServiceServicer):
    """sevvo.connections.v1.ConnectionCredentialService (agent bearers only)."""

    def __init__(self, domain: ConnectionsDomain) -> None:
        self._domain = domain

    async def ResolveConnectionCredentials(
        self, request: pb.ResolveConnectionCredentialsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResolveConnectionCredentialsResponse:
        target = await blocking(
            self._domain.resolve,
            current_principal(),
            request.connection_id,
            request.purpose,
            request.draft_id,
        )
        return pb.ResolveConnectionCredentialsResponse(
            postgres=pb.PostgresCredentials(
                host=target.host,
                port=target.port,
                database=target.database,
                username=target.username,
                password=target.password,
                ssl_mode=_SSL_TO_PB[target.ssl_mode],
            )
        )


_ACTOR_TO_PB = {
    "user": audit_pb2.ACTOR_KIND_USER,
    "agent": audit_pb2.ACTOR_KIND_AGENT,
    "system": audit_pb2.ACTOR_KIND_SYSTEM,
}
_OUTCOME_TO_PB = {
    "success": audit_pb2.AUDIT_OUTCOME_SUCCESS,
    "failure": audit_pb2.AUDIT_OUTCOME_FAILURE,
}


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    """sevvo.audit.v1.AuditService over the shared audit log (admins only)."""

    def __init__(self, store: ConnectionStore) -> None:
        self._store = store

    def _list(
        self, org_id: str, page_size: int, page_token: str, target_id: str
    ) -> tuple[list[audit.AuditEvent], str]:
        with self._store.connection() as conn:
            return audit.list_page(conn, uuid.UUID(org_id), page_size, page_token, target_id)

    async def ListAuditEvents(
        self, request: audit_pb2.ListAuditEventsRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.ListAuditEventsResponse:
        events, token = await blocking(
            self._list,
            current_principal().org_id,
            request.page_size,
            request.page_token,
            request.target_id,
        )
        return audit_pb2.ListAuditEventsResponse(
            events=[
                audit_pb2.AuditEvent(
                    id=str(e.id),
                    occur_time=timestamp(e.occurred_at),
                    actor_kind=_ACTOR_TO_PB[e.actor_kind],
                    actor_id=e.actor_id,
                    action=e.action,
                    target_type=e.target_type,
                    target_id=e.target_id,
                    outcome=_OUTCOME_TO_PB[e.outcome],
                    reason=e.reason or "",
                    details={k: str(v) for k, v in e.details.items()},
                )
                for e in events
            ],
            next_page_token=token,
        )
