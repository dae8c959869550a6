"""What connections asks the orchestrator, always on the calling user's behalf.

Credential tests run as orchestrator runs; a deleted connection's rotation schedule is removed
there too. Forwarding the user's own bearer keeps the tenancy rule intact: the orchestrator
takes the org from the very token the user presented here, never from anything connections
asserts. Calls are asynchronous, so a test that takes seconds holds no thread that other
requests (the agent's own credential resolves among them) need.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sevvo.orchestrator.v1 import (
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    work_proof_pb2,
    work_proof_pb2_grpc,
)
from sevvo.runtime import outcomes, work_proof
from sevvo.runtime.errors import Unavailable
from sevvo.runtime.grpc_client import ClientTls, secure_aio_channel


@dataclass(frozen=True)
class TestOutcome:
    """What a credential test found: a category (see sevvo/runtime/outcomes.py) and a safe
    message."""

    category: str
    message: str
    run_id: str
    finished_at: datetime | None

    @property
    def ok(self) -> bool:
        """Whether the agent connected: the category is a success in the outcome catalogue."""
        outcome = outcomes.get(self.category)
        return outcome is not None and outcome.succeeded


class Orchestrator(Protocol):
    """The orchestrator as connections uses it."""

    async def test(
        self, bearer: str, *, connection_id: str = "", draft_id: str = ""
    ) -> TestOutcome:
        """Tests a saved connection or a draft and waits for the outcome."""
        ...

    async def delete_rotation_schedule(self, bearer: str, connection_id: str) -> bool:
        """Removes a (deleted) connection's rotation schedule; False when it had none."""
        ...


def _auth(bearer: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {bearer}"),)


class OrchestratorClient:
    """An Orchestrator over gRPC with TLS."""

    # Longer than the orchestrator's longest run (its work time plus the time work may wait
    # for a busy agent), so this side never gives up on a run that is still going.
    def __init__(self, endpoint: str, tls: ClientTls, *, timeout: float = 600.0) -> None:
        self._endpoint = endpoint
        self._tls = tls
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None

    def _opened(self) -> grpc.aio.Channel:
        # Opened on first use, inside the serving event loop that the channel belongs to.
        if self._channel is None:
            self._channel = secure_aio_channel(self._endpoint, self._tls)
        return self._channel

    @property
    def _stub(self) -> orchestrator_pb2_grpc.OrchestratorServiceStub:
        return orchestrator_pb2_grpc.OrchestratorServiceStub(self._opened())

    async def proof_keys(self) -> dict[str, Ed25519PublicKey]:
        """The orchestrator's published proof keys (public: asked without a bearer)."""
        response = await work_proof_pb2_grpc.WorkProofServiceStub(self._opened()).GetWorkProofKeys(
            work_proof_pb2.GetWorkProofKeysRequest(), timeout=5
        )
        return work_proof.public_keys({k.key_id: k.public_key for k in response.keys})

    async def close(self) -> None:
        """Closes the channel, if it was ever opened."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def test(
        self, bearer: str, *, connection_id: str = "", draft_id: str = ""
    ) -> TestOutcome:
        """Starts the test through the orchestrator and waits for its run to finish."""
        request = orchestrator_pb2.TestConnectionRequest()
        if draft_id:
            request.draft_id = draft_id
        else:
            request.connection_id = connection_id
        try:
            run = await self._stub.TestConnection(
                request, metadata=_auth(bearer), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(
                "the credential test could not be run; try again", reason="TEST_UNAVAILABLE"
            ) from exc
        finished = run.finish_time.ToDatetime() if run.HasField("finish_time") else None
        return TestOutcome(run.outcome_category, run.message, run.id, finished)

    async def delete_rotation_schedule(self, bearer: str, connection_id: str) -> bool:
        """Removes the connection's rotation schedule; raises Unavailable when that fails."""
        try:
            response = await self._stub.DeleteRootRotationSchedule(
                orchestrator_pb2.DeleteRootRotationScheduleRequest(connection_id=connection_id),
                metadata=_auth(bearer),
                timeout=15,
            )
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(
                "the connection's rotation schedule could not be removed",
                reason="SCHEDULE_REMOVAL_FAILED",
            ) from exc
        return bool(response.deleted)
