"""What auth tells the orchestrator, on an admin's behalf: an org was created, a deployment
was revoked.

A new org's Temporal namespace is registered at once, so it exists from the org's creation
on. A revoked deployment's agent captured the org's payload key before revocation; the
orchestrator rotates it so work started afterwards is unreadable with any key that agent
held. An admin's bearer is forwarded (the revoking admin's, or a one-minute session of a new
org's first admin): the orchestrator takes the org from it and checks the admin role itself,
as for any other call, so auth asserts nothing it could not prove. Each call is a prompt first
notice, not the only one: when it fails, the orchestrator registers the namespace at the org's
first need, and finds the revocation among auth's published revocations within its
maintenance interval.
"""

from __future__ import annotations

import grpc

from sevvo.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from sevvo.runtime.grpc_client import ClientTls, secure_aio_channel
from sevvo.runtime.logs import get_logger

log = get_logger(__name__)


class OrchestratorNotices:
    """PrepareOrgNamespace and RotatePayloadKey over gRPC with TLS."""

    def __init__(self, endpoint: str, tls: ClientTls, *, timeout: float = 10.0) -> None:
        self._endpoint = endpoint
        self._tls = tls
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None

    def _open(self) -> grpc.aio.Channel:
        if self._channel is None:  # Opened inside the serving event loop it belongs to.
            self._channel = secure_aio_channel(self._endpoint, self._tls)
        return self._channel

    async def org_created(self, admin_bearer: str) -> bool:
        """Asks for the new org's namespace; True when the orchestrator confirmed it.

        Never raises: the org exists either way, and its namespace is registered at its first
        need if this notice is lost.
        """
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(self._open())
        try:
            response = await stub.PrepareOrgNamespace(
                orchestrator_pb2.PrepareOrgNamespaceRequest(),
                metadata=(("authorization", f"Bearer {admin_bearer}"),),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "org namespace not confirmed; it is registered at the org's first need",
                status=exc.code().name,
            )
            return False
        log.info("org namespace ready", namespace=response.namespace)
        return True

    async def deployment_revoked(self, bearer: str, deployment_id: str) -> bool:
        """Asks for the org's key to rotate; True when the orchestrator confirmed it.

        Never raises: the revocation itself has already happened and stands either way.
        """
        stub = orchestrator_pb2_grpc.PayloadKeyServiceStub(self._open())
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
