"""Running credential tests through the orchestrator, on the calling user's behalf."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import grpc

from sevvo.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from sevvo.runtime.errors import Unavailable
from sevvo.runtime.grpc_client import ClientTls, secure_channel


@dataclass(frozen=True)
class TestOutcome:
    """What a credential test found: a category ("ok" on success) and a safe message."""

    category: str
    message: str
    run_id: str
    finished_at: datetime | None

    @property
    def ok(self) -> bool:
        """Whether the agent connected."""
        return self.category == "ok"


class CredentialTester(Protocol):
    """Runs a credential test of a saved connection or a draft."""

    def test(self, bearer: str, *, connection_id: str = "", draft_id: str = "") -> TestOutcome:
        """Tests and waits for the outcome."""
        ...


class OrchestratorTester:
    """A CredentialTester that asks the orchestrator, forwarding the user's own bearer.

    Forwarding keeps the tenancy rule intact: the orchestrator takes the org from the very
    token the user presented here, never from anything connections asserts.
    """

    def __init__(self, endpoint: str, tls: ClientTls, *, timeout: float = 120.0) -> None:
        self._channel = secure_channel(endpoint, tls)
        self._stub = orchestrator_pb2_grpc.OrchestratorServiceStub(self._channel)
        self._timeout = timeout

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()

    def test(self, bearer: str, *, connection_id: str = "", draft_id: str = "") -> TestOutcome:
        """Starts the test through the orchestrator and waits for its run to finish."""
        request = orchestrator_pb2.TestConnectionRequest()
        if draft_id:
            request.draft_id = draft_id
        else:
            request.connection_id = connection_id
        try:
            run = self._stub.TestConnection(
                request, metadata=(("authorization", f"Bearer {bearer}"),), timeout=self._timeout
            )
        except grpc.RpcError as exc:
            raise Unavailable(
                "the credential test could not be run; try again", reason="TEST_UNAVAILABLE"
            ) from exc
        finished = run.finish_time.ToDatetime() if run.HasField("finish_time") else None
        return TestOutcome(run.outcome_category, run.message, run.id, finished)
