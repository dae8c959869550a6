"""How auth tells the orchestrator a deployment was revoked, on the revoking admin's behalf.

A revoked deployment's agent captured the org's payload key before revocation; the
orchestrator rotates it so work started afterwards is unreadable with any key that agent
held. The admin's own bearer is forwarded: the orchestrator takes the org from it and checks
the admin role itself, as for any other call, so auth asserts nothing it could not prove.
The call is a prompt first notice, not the only one: when it fails, the orchestrator finds the
revocation among auth's published revocations within its maintenance interval and rotates then.
"""

from __future__ import annotations

import grpc

from sevvo.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from sevvo.runtime.grpc_client import ClientTls, secure_aio_channel
from sevvo.runtime.logs import get_logger

log = get_logger(__name__)


class PayloadKeyRotator:
    """PayloadKeyService.RotatePayloadKey over gRPC with TLS."""

    def __init__(self, endpoint: str, tls: ClientTls, *, timeout: float = 10.0) -> None:
        self._endpoint = endpoint
        self._tls = tls
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None

    async def deployment_revoked(self, bearer: str, deployment_id: str) -> bool:
        """Asks for the org's key to rotate; True when the orchestrator confirmed it.

        Never raises: the revocation itself has already happened and stands either way.
        """
        if self._channel is None:  # Opened inside the serving event loop it belongs to.
            self._channel = secure_aio_channel(self._endpoint, self._tls)
        stub = orchestrator_pb2_grpc.PayloadKeyServiceStub(self._channel)
        try:
            response = await stub.RotatePayloadKey(
                orchestrator_pb2.RotatePayloadKeyRequest(revoked_deployment_id=deployment_id),
                metadata=(("authorization", f"Bearer {bearer}"),),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "payload key rotation after revocation not confirmed; the orchestrator's own"
                " check of revocations will rotate it",
                deployment_id=deployment_id,
                status=exc.code().name,
            )
            return False
        log.info(
            "payload key rotated after revocation",
            deployment_id=deployment_id,
            key_id=response.current_key_id,
            rotated=response.rotated,
        )
        return True

    async def close(self) -> None:
        """Closes the channel, if it was ever opened."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
