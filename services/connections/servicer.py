"""Thin gRPC servicers for connections: protobuf in, domain call, protobuf out.

Responses are built from stored metadata only; no response message has a field that could
carry a password, except the agent-only ResolveConnectionCredentials.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from google.protobuf import empty_pb2, timestamp_pb2
from google.protobuf.message import Message

from services.connections.domain import ConnectionsDomain, ConnectionUpdate, WorkClaim
from services.connections.kinds import (
    PURPOSE_TO_PB,
    Payload,
    kind_for_request,
    kind_named,
    kind_of,
)
from services.connections.kinds.postgres import request_preview, ssl_mode
from services.connections.kinds.postgres import (  # Re-exported for tests/plugins/domains.py.
    target_from_request as target_from_request,
)
from services.connections.leases import LeasesDomain
from services.connections.roles import RolesDomain, RoleSettingsInput
from services.connections.store import ConnectionRoleRow, ConnectionRow, ConnectionStore, LeaseRow
from sevvo.audit.v1 import audit_pb2, audit_pb2_grpc
from sevvo.connections.v1 import connections_pb2 as pb
from sevvo.connections.v1 import connections_pb2_grpc as pb_grpc
from sevvo.runtime import audit, validation
from sevvo.runtime.errors import InvalidArgument
from sevvo.runtime.grpc_server import current_bearer, current_principal, current_workload
from sevvo.runtime.servicing import blocking, timestamp

# Kinds without credentials ("none") show no mode.
_MODE_TO_PB = {
    "fields": pb.CREDENTIAL_MODE_FIELDS,
    "dsn": pb.CREDENTIAL_MODE_DSN,
    "dynamic": pb.CREDENTIAL_MODE_DYNAMIC,
    "none": pb.CREDENTIAL_MODE_UNSPECIFIED,
}
_LEASE_STATE_TO_PB = {
    "creating": pb.LEASE_STATE_CREATING,
    "active": pb.LEASE_STATE_ACTIVE,
    "revoke_requested": pb.LEASE_STATE_REVOKE_REQUESTED,
    "revoking": pb.LEASE_STATE_REVOKING,
    "revoked": pb.LEASE_STATE_REVOKED,
    "failing": pb.LEASE_STATE_FAILING,
}
# Unknown or unset values become "", which the domain rejects (or reads as "no filter").
_LEASE_STATE_FROM_PB: dict[int, str] = {v: k for k, v in _LEASE_STATE_TO_PB.items()}
_STATUS_TO_PB = {
    "pending": pb.CONNECTION_STATUS_PENDING,
    "connected": pb.CONNECTION_STATUS_CONNECTED,
    "error": pb.CONNECTION_STATUS_ERROR,
}


def connection_pb(row: ConnectionRow) -> pb.Connection:
    """A connection as users see it: metadata, purposes and status, never credentials."""
    kind = kind_named(row.type)
    message = pb.Connection(
        id=str(row.id),
        display_name=row.display_name,
        type=kind.connection_type,
        credential_mode=_MODE_TO_PB[row.credential_mode],
        has_password=row.credential_mode != "none" and bool(row.sealed_credentials),
        status=_STATUS_TO_PB[row.status],
        last_test_time=timestamp(row.last_test_at),
        last_test_category=row.last_test_category or "",
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
        purposes=[PURPOSE_TO_PB[purpose] for purpose in kind.purposes],
    )
    kind.describe(row, message)
    return message


def lease_pb(row: LeaseRow) -> pb.Lease:
    """A lease's metadata; there is no secret to leave out."""
    return pb.Lease(
        id=str(row.id),
        connection_id=str(row.connection_id),
        role_name=row.role_name,
        purpose=row.purpose,
        state=_LEASE_STATE_TO_PB[row.state],
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
        expire_time=timestamp(row.expires_at),
        max_expire_time=timestamp(row.max_expires_at),
        revoke_time=timestamp(row.revoked_at),
        failure_reason=row.failure_reason or "",
        failure_count=row.failure_count,
        role=row.role,
        workload_id="" if row.workload_id is None else str(row.workload_id),
    )


def connection_role_pb(row: ConnectionRoleRow) -> pb.ConnectionRole:
    """A connection role as users see it: lifetimes and statement counts, never statements."""
    return pb.ConnectionRole(
        connection_id=str(row.connection_id),
        name=row.name,
        default_ttl_seconds=row.default_ttl_seconds,
        max_ttl_seconds=row.max_ttl_seconds,
        group_role=row.group_role,
        creation_statement_count=row.creation_statement_count,
        revocation_statement_count=row.revocation_statement_count,
        create_time=timestamp(row.created_at),
        update_time=timestamp(row.updated_at),
    )


def role_settings(message: pb.ConnectionRoleSettings) -> RoleSettingsInput:
    """A request's role settings, as given; the domain validates them."""
    return RoleSettingsInput(
        default_ttl_seconds=message.default_ttl_seconds,
        max_ttl_seconds=message.max_ttl_seconds,
        creation_statements=tuple(message.creation_statements),
        revocation_statements=tuple(message.revocation_statements),
        group_role=message.group_role,
    )


def _work_claim(work: pb.WorkClaim) -> WorkClaim:
    return WorkClaim(work.proof, work.workflow_id, work.workflow_run_id, work.workflow_type)


def _time(message: Message, field: str) -> datetime | None:
    """An optional Timestamp field as an aware datetime (None when unset)."""
    if not message.HasField(field):
        return None
    value: timestamp_pb2.Timestamp = getattr(message, field)
    return value.ToDatetime(tzinfo=UTC)


@dataclass(frozen=True)
class CreateArguments:
    """A create request, validated: what the domain stores once the agent's test passes."""

    display_name: str
    # Any kind's payload (services/connections/kinds): a PostgresTarget for Postgres.
    target: Payload
    credential_mode: str


def create_arguments(request: pb.CreateConnectionRequest) -> CreateArguments:
    """Every rule a create request must meet, checked without I/O (INVALID_ARGUMENT naming
    the first field that breaks one); the seam fast tests drive the rules through."""
    target, mode = kind_for_request(request).from_request(request)
    name = validation.display_name("display_name", request.display_name)
    return CreateArguments(name, target, mode)


class ConnectionServicer(pb_grpc.ConnectionServiceServicer):
    """sevvo.connections.v1.ConnectionService."""

    def __init__(self, domain: ConnectionsDomain) -> None:
        self._domain = domain

    async def CreateConnection(
        self, request: pb.CreateConnectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Connection:
        arguments = create_arguments(request)
        row = await self._domain.create(
            current_principal(),
            arguments.display_name,
            arguments.target,
            arguments.credential_mode,
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
            ssl_mode=ssl_mode(f.ssl_mode),
            ssl_root_cert=f.ssl_root_cert,
            preview=request_preview(f, "connection.fields"),
        )
        row = await self._domain.update(current_principal(), request.id, update, current_bearer())
        return connection_pb(row)

    async def TestConnection(
        self, request: pb.TestConnectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Connection:
        row = await self._domain.test(current_principal(), request.id, current_bearer())
        return connection_pb(row)

    async def DeleteConnection(
        self, request: pb.DeleteConnectionRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self._domain.delete(
            current_principal(), request.id, current_bearer(), force=request.force
        )
        return empty_pb2.Empty()


class CredentialServicer(pb_grpc.ConnectionCredentialServiceServicer):
    """sevvo.connections.v1.ConnectionCredentialService (agent bearers only)."""

    def __init__(self, domain: ConnectionsDomain) -> None:
        self._domain = domain

    async def ResolveConnectionCredentials(
        self, request: pb.ResolveConnectionCredentialsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResolveConnectionCredentialsResponse:
        caller = current_principal()
        work = None
        if request.HasField("work"):
            claim = _work_claim(request.work)
            work = (claim, await self._domain.verify_work(caller, claim))
        connection_id = request.connection_id
        if request.connection_name and not (connection_id or request.draft_id):
            # Resolved to an id first, so the response can name it: the agent records the
            # workload's leases by id.
            connection_id = str(
                await blocking(self._domain.connection_id_by_name, caller, request.connection_name)
            )
        target = await blocking(
            self._domain.resolve_payload,
            caller,
            connection_id,
            request.purpose,
            request.draft_id,
            work,
            request.role,
            "" if connection_id != request.connection_id else request.connection_name,
        )
        response = kind_of(target).resolved(target, request.role)
        response.connection_id = connection_id
        return response

    async def ReplaceConnectionCredentials(
        self, request: pb.ReplaceConnectionCredentialsRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await blocking(
            self._domain.replace_password,
            current_principal(),
            request.connection_id,
            request.new_password,
        )
        return empty_pb2.Empty()

    async def StagePrivilegedPassword(
        self, request: pb.StagePrivilegedPasswordRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await blocking(
            self._domain.stage_password,
            current_principal(),
            request.connection_id,
            request.pending_password,
            request.replace_pending,
            request.stage_id,
        )
        return empty_pb2.Empty()

    async def CommitPrivilegedPassword(
        self, request: pb.CommitPrivilegedPasswordRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await blocking(
            self._domain.commit_password,
            current_principal(),
            request.connection_id,
            request.stage_id,
        )
        return empty_pb2.Empty()

    async def RecordRootRotation(
        self, request: pb.RecordRootRotationRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        if request.outcome not in (pb.ROTATION_OUTCOME_SUCCEEDED, pb.ROTATION_OUTCOME_FAILED):
            raise InvalidArgument("outcome", "must be succeeded or failed")
        await blocking(
            self._domain.record_root_rotation,
            current_principal(),
            request.connection_id,
            request.outcome == pb.ROTATION_OUTCOME_SUCCEEDED,
            request.failure_reason,
        )
        return empty_pb2.Empty()

    async def RecordWorkRefused(
        self, request: pb.RecordWorkRefusedRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        claim = WorkClaim("", request.workflow_id, request.workflow_run_id, request.workflow_type)
        await blocking(self._domain.record_work_refused, current_principal(), claim, request.reason)
        return empty_pb2.Empty()

    async def RecordPreviewSecurityEvent(
        self, request: pb.RecordPreviewSecurityEventRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        for name in ("advisory_locks_held", "role_sessions_ended"):
            if getattr(request, name) < 0:
                raise InvalidArgument(name, "must not be negative")
        findings = {
            name: str(getattr(request, name)).lower()
            for name in (
                "receipt_missing",
                "transaction_id_assigned",
                "advisory_locks_held",
                "role_sessions_ended",
                "backend_outlived_call",
            )
        }
        await blocking(
            self._domain.record_preview_security_event,
            current_principal(),
            request.connection_id,
            request.run_id,
            findings,
        )
        return empty_pb2.Empty()


class LeaseServicer(pb_grpc.LeaseServiceServicer):
    """sevvo.connections.v1.LeaseService (agent methods and user methods; see server.ACCESS)."""

    def __init__(self, domain: LeasesDomain) -> None:
        self._domain = domain

    async def CreateLease(
        self, request: pb.CreateLeaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.Lease:
        row = await blocking(
            self._domain.create,
            current_principal(),
            connection_id=request.connection_id,
            role_name=request.role_name,
            purpose=request.purpose,
            expire_time=_time(request, "expire_time"),
            max_expire_time=_time(request, "max_expire_time"),
            lease_id=request.lease_id,
            role=request.role,
            workload_id=request.workload_id,
            forwarded=current_workload(),
        )
        return lease_pb(row)

    async def UpdateLease(
        self, request: pb.UpdateLeaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.Lease:
        row = await blocking(
            self._domain.update,
            current_principal(),
            lease_id=request.lease_id,
            state=_LEASE_STATE_FROM_PB.get(request.state, ""),
            expire_time=_time(request, "expire_time"),
            failure_reason=request.failure_reason,
            forwarded=current_workload(),
        )
        return lease_pb(row)

    async def ClaimLease(
        self, request: pb.ClaimLeaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.Lease:
        row = await blocking(
            self._domain.claim,
            current_principal(),
            lease_id=request.lease_id,
            purpose=request.purpose,
            forwarded=current_workload(),
        )
        return lease_pb(row)

    async def ListLeasesToReap(
        self, request: pb.ListLeasesToReapRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListLeasesToReapResponse:
        rows, token = await blocking(
            self._domain.list_to_reap,
            current_principal(),
            request.connection_id,
            request.page_size,
            request.page_token,
        )
        return pb.ListLeasesToReapResponse(
            leases=[lease_pb(r) for r in rows], next_page_token=token
        )

    async def ListLeases(
        self, request: pb.ListLeasesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListLeasesResponse:
        if request.state and request.state not in _LEASE_STATE_FROM_PB:
            raise InvalidArgument("state", "is not a known lease state")
        rows, token = await blocking(
            self._domain.list_page,
            current_principal(),
            request.connection_id,
            _LEASE_STATE_FROM_PB.get(request.state, ""),
            request.page_size,
            request.page_token,
            role=request.role,
            workload_id=request.workload_id,
        )
        return pb.ListLeasesResponse(leases=[lease_pb(r) for r in rows], next_page_token=token)

    async def CountLeases(
        self, request: pb.CountLeasesRequest, context: grpc.aio.ServicerContext
    ) -> pb.CountLeasesResponse:
        by_state, by_purpose, by_role = await blocking(
            self._domain.count, current_principal(), request.connection_id
        )
        return pb.CountLeasesResponse(
            by_state=[
                pb.LeaseStateCount(state=_LEASE_STATE_TO_PB[state], count=n)
                for state, n in sorted(by_state.items(), key=lambda i: _LEASE_STATE_TO_PB[i[0]])
            ],
            by_purpose=[pb.LeasePurposeCount(purpose=p, count=n) for p, n in by_purpose.items()],
            by_role=[pb.LeaseRoleCount(role=r, count=n) for r, n in by_role.items()],
        )

    async def RevokeLeases(
        self, request: pb.RevokeLeasesRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeLeasesResponse:
        rows = await blocking(
            self._domain.revoke, current_principal(), request.connection_id, request.lease_id
        )
        return pb.RevokeLeasesResponse(leases=[lease_pb(r) for r in rows])


class ConnectionRoleServicer(pb_grpc.ConnectionRoleServiceServicer):
    """sevvo.connections.v1.ConnectionRoleService (writes: admins; see server.ACCESS)."""

    def __init__(self, domain: RolesDomain) -> None:
        self._domain = domain

    async def CreateConnectionRole(
        self, request: pb.CreateConnectionRoleRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConnectionRole:
        row = await self._domain.create(
            current_principal(),
            request.connection_id,
            request.name,
            role_settings(request.settings),
            current_bearer(),
        )
        return connection_role_pb(row)

    async def GetConnectionRole(
        self, request: pb.GetConnectionRoleRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConnectionRole:
        row = await blocking(
            self._domain.get, current_principal(), request.connection_id, request.name
        )
        return connection_role_pb(row)

    async def ListConnectionRoles(
        self, request: pb.ListConnectionRolesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListConnectionRolesResponse:
        rows, token = await blocking(
            self._domain.list,
            current_principal(),
            request.connection_id,
            request.page_size,
            request.page_token,
        )
        return pb.ListConnectionRolesResponse(
            roles=[connection_role_pb(r) for r in rows], next_page_token=token
        )

    async def UpdateConnectionRole(
        self, request: pb.UpdateConnectionRoleRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConnectionRole:
        row = await self._domain.update(
            current_principal(),
            request.connection_id,
            request.name,
            tuple(request.update_mask.paths),
            role_settings(request.settings),
            current_bearer(),
        )
        return connection_role_pb(row)

    async def DeleteConnectionRole(
        self, request: pb.DeleteConnectionRoleRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteConnectionRoleResponse:
        removal = await blocking(
            self._domain.delete,
            current_principal(),
            request.connection_id,
            request.name,
            request.force,
        )
        return pb.DeleteConnectionRoleResponse(
            leases=[lease_pb(r) for r in removal.marked],
            unrevoked_lease_count=removal.unrevoked,
        )


_ACTOR_TO_PB = {
    "user": audit_pb2.ACTOR_KIND_USER,
    "agent": audit_pb2.ACTOR_KIND_AGENT,
    "system": audit_pb2.ACTOR_KIND_SYSTEM,
    "workload": audit_pb2.ACTOR_KIND_WORKLOAD,
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
        self, org_id: str, page_size: int, page_token: str, where: audit.Filter
    ) -> tuple[list[audit.AuditEvent], str]:
        with self._store.connection() as conn:
            return audit.list_page(conn, uuid.UUID(org_id), page_size, page_token, where)

    async def ListAuditEvents(
        self, request: audit_pb2.ListAuditEventsRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.ListAuditEventsResponse:
        where = audit.make_filter(
            action=request.action,
            actor_id=request.actor_id,
            actor_email=request.actor_email,
            target_id=request.target_id,
            start=_time(request, "start_time"),
            end=_time(request, "end_time"),
        )
        events, token = await blocking(
            self._list,
            current_principal().org_id,
            request.page_size,
            request.page_token,
            where,
        )
        return audit_pb2.ListAuditEventsResponse(
            events=[
                audit_pb2.AuditEvent(
                    id=str(e.id),
                    occur_time=timestamp(e.occurred_at),
                    actor_kind=_ACTOR_TO_PB[e.actor_kind],
                    actor_id=e.actor_id,
                    actor_email=e.actor_email or "",
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
