"""A stand-in for the agent's CredentialService, served by a real gRPC server on a Unix socket.

For the client library's and the sidecar's own logic (renewal timing, re-borrowing past max
TTL, revoking on exit, error mapping) with lease times of seconds; the end-to-end tests run
the real agent against real Postgres.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from google.protobuf import empty_pb2, timestamp_pb2
from grpc_status import rpc_status

from sevvo.agent.v1 import credentials_pb2, credentials_pb2_grpc
from sevvo.runtime.errors import FailedPrecondition, SevvoError
from sevvo.runtime.grpc_server import status_for

TOKEN = "sevvo_wt_fake0123456789abcdefghijklmnopqrstuvwxyz"


def _quoted(value: str) -> str:
    """A libpq conninfo value: single-quoted, with backslash and quote escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _timestamp(when: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


@dataclass
class Lease:
    """A lease the fake handed out."""

    lease_id: str
    username: str
    password: str
    expire_time: datetime
    max_expire_time: datetime
    revoked: bool = False
    renewals: int = 0


@dataclass
class FakeAgent(credentials_pb2_grpc.CredentialServiceServicer):
    """Leases of ``ttl`` seconds (the default) up to ``max_ttl``; ``fail`` injects errors."""

    ttl: float = 2.0
    max_ttl: float = 6.0
    leases: dict[str, Lease] = field(default_factory=dict)
    requests: list[credentials_pb2.GenerateCredentialRequest] = field(default_factory=list)
    fail: dict[str, SevvoError] = field(default_factory=dict)
    _names: itertools.count[int] = field(default_factory=itertools.count)

    async def _check(self, method: str, context: grpc.aio.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata() or ())
        if metadata.get("authorization") != f"Bearer {TOKEN}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown workload token")
        error = self.fail.get(method)
        if error is not None:
            await context.abort_with_status(rpc_status.to_status(status_for(error)))

    async def GenerateCredential(
        self,
        request: credentials_pb2.GenerateCredentialRequest,
        context: grpc.aio.ServicerContext,
    ) -> credentials_pb2.Credential:
        await self._check("generate", context)
        self.requests.append(request)
        now = datetime.now(UTC)
        ttl = request.ttl_seconds or self.ttl
        name = f"v_fake_{next(self._names)}"
        lease = Lease(
            lease_id=str(uuid.uuid4()),
            username=name,
            password=f"pw:{uuid.uuid4().hex}\\'x",
            expire_time=now + timedelta(seconds=ttl),
            max_expire_time=now + timedelta(seconds=self.max_ttl),
        )
        self.leases[lease.lease_id] = lease
        return credentials_pb2.Credential(
            lease_id=lease.lease_id,
            username=name,
            password=lease.password,
            conninfo=f"host=db.internal port=5432 dbname=shop user={name} "
            f"password={_quoted(lease.password)} sslmode=require",
            expire_time=_timestamp(lease.expire_time),
            max_expire_time=_timestamp(lease.max_expire_time),
            connection_id=str(uuid.uuid4()),
            role=request.role or "default",
            host="db.internal",
            port=5432,
            database="shop",
            ssl_mode="require",
        )

    async def RenewCredential(
        self, request: credentials_pb2.RenewCredentialRequest, context: grpc.aio.ServicerContext
    ) -> credentials_pb2.CredentialLease:
        await self._check("renew", context)
        lease = self.leases[request.lease_id]
        new_expiry = datetime.now(UTC) + timedelta(seconds=request.increment_seconds or self.ttl)
        if new_expiry > lease.max_expire_time:
            await context.abort_with_status(
                rpc_status.to_status(
                    status_for(
                        FailedPrecondition(
                            "the renewal would pass the lease's max TTL",
                            reason="LEASE_PAST_MAX_TTL",
                        )
                    )
                )
            )
        lease.expire_time = new_expiry
        lease.renewals += 1
        return credentials_pb2.CredentialLease(
            lease_id=lease.lease_id,
            expire_time=_timestamp(lease.expire_time),
            max_expire_time=_timestamp(lease.max_expire_time),
        )

    async def RevokeCredential(
        self, request: credentials_pb2.RevokeCredentialRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self._check("revoke", context)
        self.leases[request.lease_id].revoked = True
        return empty_pb2.Empty()

    def live(self) -> list[Lease]:
        """Leases not revoked yet."""
        return [lease for lease in self.leases.values() if not lease.revoked]


@asynccontextmanager
async def serving(agent: FakeAgent, socket: Path) -> AsyncIterator[str]:
    """Serves ``agent`` on the Unix socket ``socket``; yields the client's target."""
    server = grpc.aio.server()
    credentials_pb2_grpc.add_CredentialServiceServicer_to_server(agent, server)
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    try:
        yield f"unix://{socket}"
    finally:
        await server.stop(None)
