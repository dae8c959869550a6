"""The agent's Temporal token comes with its bearer and is handed over at every renewal.

A fake AuthService stub stands in for auth (the exchange itself is tested end to end in
tests/test_temporal_namespaces.py); this checks the hand-over the worker relies on.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agent.bearer import BearerSession
from agent.config import AgentConfig
from sevvo.auth.v1 import auth_pb2
from sevvo.runtime.deployment_token import DeploymentCredentials, wrap

ORG_ID = "7d1f0c2a-0000-4000-8000-00000000abcd"
CREDENTIALS = DeploymentCredentials("7d1f0c2a-0000-4000-8000-00000000dcba", "s" * 32)


class _Auth:
    """Answers each exchange with a new bearer and a new Temporal token."""

    def __init__(self) -> None:
        self.exchanges = 0

    async def ExchangeDeploymentToken(
        self, request: auth_pb2.ExchangeDeploymentTokenRequest, timeout: float
    ) -> auth_pb2.ExchangeDeploymentTokenResponse:
        self.exchanges += 1
        response = auth_pb2.ExchangeDeploymentTokenResponse(
            bearer_token=f"bearer-{self.exchanges}",
            org_id=ORG_ID,
            deployment_id=CREDENTIALS.deployment_id,
            temporal_token=f"temporal-{self.exchanges}",
            temporal_namespace="sevvo-0123456789abcdef01234567",
        )
        response.expire_time.seconds = int(time.time()) + 600
        return response


def test_every_exchange_hands_the_new_temporal_token_over() -> None:
    """The first exchange sets token and namespace; a renewal calls on_renewed with the next."""
    auth: Any = _Auth()
    session = BearerSession(auth, CREDENTIALS)
    handed: list[str] = []

    async def scenario() -> None:
        await session.exchange()
        assert (session.temporal_token, session.temporal_namespace) == (
            "temporal-1",
            "sevvo-0123456789abcdef01234567",
        )
        session.on_renewed = lambda: handed.append(session.temporal_token)
        await session.exchange()

    asyncio.run(scenario())
    assert handed == ["temporal-2"]


def test_the_old_namespace_drain_can_be_turned_off() -> None:
    """The agent drains `default` unless told otherwise; the old variable still names it."""
    base = {
        "SEVVO_DEPLOYMENT_TOKEN": wrap(CREDENTIALS),
        "SEVVO_CONTROL_PLANE_ENDPOINT": "cp.example",
        "SEVVO_TEMPORAL_ADDRESS": "temporal.example",
    }
    default = AgentConfig.load(base)
    assert (default.temporal_legacy_namespace, default.temporal_drain_legacy) == ("default", True)
    old = AgentConfig.load({**base, "SEVVO_TEMPORAL_NAMESPACE": "shared"})
    assert old.temporal_legacy_namespace == "shared"
    off = AgentConfig.load({**base, "SEVVO_TEMPORAL_DRAIN_LEGACY": "false"})
    assert off.temporal_drain_legacy is False
