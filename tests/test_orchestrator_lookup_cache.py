"""The orchestrator's connection lookups: positive answers reused briefly, per org, never negatives.

Pure logic: the lookup itself (``_ask``, a gRPC call as the caller) is replaced by a counter;
the real call is covered end to end in test_e2e_preview and test_e2e_dynamic.
"""

from __future__ import annotations

import asyncio

import pytest

from services.orchestrator.connections_client import ConnectionInfo, ConnectionsClient
from sevvo.runtime.errors import NotFound
from sevvo.runtime.grpc_client import ClientTls


class CountingClient(ConnectionsClient):
    """Answers from a table instead of connections, counting every question."""

    def __init__(self, existing: set[str], clock: list[float]) -> None:
        super().__init__("localhost:1", ClientTls(None), found_ttl=5.0, clock=lambda: clock[0])
        self.existing = existing
        self.asked = 0

    async def _ask(self, bearer: str, connection_id: str) -> ConnectionInfo:
        self.asked += 1
        if connection_id not in self.existing:
            raise NotFound("connection not found", reason="CONNECTION_NOT_FOUND")
        return ConnectionInfo(connection_id, dynamic=False)


def test_a_found_connection_is_asked_about_once_per_ttl_and_org() -> None:
    """Within the TTL the same org's lookup is reused; another org, or later, asks again."""
    now = [0.0]
    client = CountingClient({"c1"}, now)

    async def scenario() -> None:
        await client.get("bearer", "c1", "org-a")
        await client.get("bearer", "c1", "org-a")
        assert client.asked == 1
        await client.get("bearer", "c1", "org-b")
        assert client.asked == 2
        now[0] = 5.1
        await client.get("bearer", "c1", "org-a")
        assert client.asked == 3

    asyncio.run(scenario())


def test_a_missing_connection_is_never_remembered() -> None:
    """NOT_FOUND every time, each time asked: a missing id never starts work."""
    client = CountingClient(set(), [0.0])

    async def scenario() -> None:
        for _ in range(3):
            with pytest.raises(NotFound):
                await client.get("bearer", "gone", "org-a")

    asyncio.run(scenario())
    assert client.asked == 3


def test_without_an_org_the_answer_is_always_fresh() -> None:
    """A caller that needs a fresh answer (a just-deleted connection) gets one."""
    client = CountingClient({"c1"}, [0.0])

    async def scenario() -> None:
        await client.get("bearer", "c1", "org-a")
        client.existing.clear()
        with pytest.raises(NotFound):
            await client.get("bearer", "c1")

    asyncio.run(scenario())
    assert client.asked == 2
