"""ServerHealth's own rules, without a server: what a failing or hung readiness probe
publishes, and that shutdown is final."""

from __future__ import annotations

import asyncio
import threading

from grpc_health.v1 import health_pb2
from structlog.testing import capture_logs

from sevvo.runtime.health import (
    LIVENESS,
    NOT_SERVING,
    SERVING,
    ReadinessCheck,
    ServerHealth,
    require,
)

SERVICE = "sevvo.test.v1.TestService"


async def _status(health: ServerHealth, name: str) -> int:
    reply = await health.servicer.Check(health_pb2.HealthCheckRequest(service=name), None)
    return int(reply.status)


def test_a_failing_probe_publishes_not_serving_and_logs_its_type_not_its_message() -> None:
    """Every name but liveness is NOT_SERVING; the log names the check and the exception's
    type, never its text (which may quote a DSN with a password)."""

    def leaky() -> None:
        raise RuntimeError("connection to postgresql://sevvo:hunter2@db failed")

    async def scenario() -> tuple[int, int, int]:
        health = ServerHealth([ReadinessCheck("database", leaky)])
        await health.start([SERVICE])
        return (
            await _status(health, ""),
            await _status(health, SERVICE),
            await _status(health, LIVENESS),
        )

    with capture_logs() as events:
        whole, service, liveness = asyncio.run(scenario())
    assert (whole, service, liveness) == (NOT_SERVING, NOT_SERVING, SERVING)
    (event,) = [e for e in events if e["event"] == "not ready"]
    assert event["failed"] == ["database: RuntimeError"]
    assert "hunter2" not in repr(events)


def test_not_ready_says_why_and_the_status_follows_the_condition() -> None:
    """A NotReady message is published as is; the status returns to SERVING when the
    condition holds again."""
    loaded = False

    async def scenario() -> tuple[bool, int, bool, int]:
        health = ServerHealth([ReadinessCheck("keys", lambda: require(loaded, "no key yet"))])
        await health.start([SERVICE])
        first = (health.ready, await _status(health, SERVICE))
        nonlocal loaded
        loaded = True
        return (*first, await health.check_now(), await _status(health, SERVICE))

    with capture_logs() as events:
        ready_before, before, passed, after = asyncio.run(scenario())
    assert (ready_before, before, passed, after) == (False, NOT_SERVING, True, SERVING)
    assert ["keys: no key yet"] in [e.get("failed") for e in events]


def test_a_hung_probe_holds_one_thread_and_fails_until_it_answers() -> None:
    """A blocking probe that does not answer within the timeout fails the round, and later
    rounds do not start another call while it still hangs."""
    release = threading.Event()
    calls = 0

    def hangs() -> None:
        nonlocal calls
        calls += 1
        release.wait(5)

    async def scenario() -> list[bool]:
        health = ServerHealth([ReadinessCheck("database", hangs, blocking=True)], timeout=0.05)
        outcomes = [await health.check_now(), await health.check_now()]
        release.set()
        await asyncio.sleep(0.05)
        outcomes.append(await health.check_now())
        return outcomes

    assert asyncio.run(scenario()) == [False, False, True]
    assert calls == 2  # The hung call, then one more once it had answered.


def test_shutdown_is_final_for_every_name() -> None:
    """After shutdown every name, liveness included, stays NOT_SERVING even when the checks
    pass again."""

    async def scenario() -> list[int]:
        health = ServerHealth([ReadinessCheck("always", lambda: None)], interval=0.01)
        await health.start([SERVICE])
        assert await _status(health, SERVICE) == SERVING
        await health.shutdown()
        await health.check_now()
        statuses = [await _status(health, name) for name in ("", SERVICE, LIVENESS)]
        await health.close()
        return statuses

    assert asyncio.run(scenario()) == [NOT_SERVING] * 3
