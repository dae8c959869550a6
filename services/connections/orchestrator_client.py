"""What connections asks the orchestrator, always on the calling user's behalf.

Credential tests run as orchestrator runs; a deleted connection's rotation schedule is removed
there too. Forwarding the user's own bearer keeps the tenancy rule intact: the orchestrator
takes the org from the very token the user presented here, never from anything connections
asserts. Calls are asynchronous, so a test that takes seconds holds no thread that other
requests (the agent's own credential resolves among them) need.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
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


# One WaitRun call waits at most this long (the orchestrator's own limit); then it asks again.
_WAIT_SECONDS = 60.0
# A replica that went away, or a deadline passed on the way: another replica can answer.
_ASK_AGAIN = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
_ASK_AGAIN_PAUSE = 0.5


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
            run = await self._stub.TestConnection(request, metadata=_auth(bearer), timeout=15)
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(
                "the credential test could not be run; try again", reason="TEST_UNAVAILABLE"
            ) from exc
        run = await self._until_finished(run, bearer)
        finished = run.finish_time.ToDatetime() if run.HasField("finish_time") else None
        return TestOutcome(run.outcome_category, run.message, run.id, finished)

    async def _until_finished(self, run: orchestrator_pb2.Run, bearer: str) -> orchestrator_pb2.Run:
        """Waits for a started run's end with WaitRun, asking again (of whichever orchestrator
        replica answers) while it runs or when a replica goes away mid-wait."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._timeout
        while run.state == orchestrator_pb2.RUN_STATE_RUNNING:
            remaining = give_up - loop.time()
            if remaining <= 0:
                raise Unavailable(
                    f"the credential test did not finish in time; its run is {run.id}",
                    reason="TEST_UNAVAILABLE",
                )
            request = orchestrator_pb2.WaitRunRequest(id=run.id)
            request.timeout.FromTimedelta(timedelta(seconds=min(remaining, _WAIT_SECONDS)))
            try:
                run = await self._stub.WaitRun(
                    request, metadata=_auth(bearer), timeout=min(remaining, _WAIT_SECONDS) + 5
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _ASK_AGAIN:
                    raise Unavailable(
                        f"the credential test's outcome could not be learned; see run {run.id}",
                        reason="TEST_UNAVAILABLE",
                    ) from exc
                await asyncio.sleep(_ASK_AGAIN_PAUSE)
        return run

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
