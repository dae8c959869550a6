"""sevvo.agent.v1.CredentialService: the workload's token and protobuf in, the broker's answer out.

Thin on purpose: the rules live in agent/credential_broker.py. The workload token arrives as
``authorization: Bearer sevvo_wt_...``; it is handed to the broker and never logged.
"""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2

from agent.credential_broker import CredentialBroker
from sevvo.agent.v1 import credentials_pb2 as pb
from sevvo.agent.v1 import credentials_pb2_grpc as pb_grpc
from sevvo.runtime.errors import Unauthenticated
from sevvo.runtime.servicing import timestamp

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CredentialService"].full_name


def workload_token(context: grpc.aio.ServicerContext) -> str:
    """The token of ``authorization: Bearer <token>``; UNAUTHENTICATED when there is none."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            break
    raise Unauthenticated(
        "missing workload token: send `authorization: Bearer sevvo_wt_...`",
        reason="TOKEN_MISSING",
    )


class CredentialServicer(pb_grpc.CredentialServiceServicer):
    """Generate, renew and revoke credentials for the workload whose token comes with the call."""

    def __init__(self, broker: CredentialBroker) -> None:
        self._broker = broker

    async def GenerateCredential(
        self, request: pb.GenerateCredentialRequest, context: grpc.aio.ServicerContext
    ) -> pb.Credential:
        issued = await self._broker.generate(
            workload_token(context),
            request.connection,
            request.role,
            request.ttl_seconds,
            request.purpose,
        )
        return pb.Credential(
            lease_id=issued.lease_id,
            username=issued.username,
            password=issued.password,
            conninfo=issued.conninfo,
            expire_time=timestamp(issued.expire_time),
            max_expire_time=timestamp(issued.max_expire_time),
            connection_id=issued.connection_id,
            role=issued.role,
            host=issued.host,
            port=issued.port,
            database=issued.database,
            ssl_mode=issued.ssl_mode,
        )

    async def RenewCredential(
        self, request: pb.RenewCredentialRequest, context: grpc.aio.ServicerContext
    ) -> pb.CredentialLease:
        renewed = await self._broker.renew(
            workload_token(context), request.lease_id, request.increment_seconds
        )
        return pb.CredentialLease(
            lease_id=renewed.lease_id,
            expire_time=timestamp(renewed.expire_time),
            max_expire_time=timestamp(renewed.max_expire_time),
        )

    async def RevokeCredential(
        self, request: pb.RevokeCredentialRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self._broker.revoke(workload_token(context), request.lease_id)
        return empty_pb2.Empty()
