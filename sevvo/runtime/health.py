"""The grpc.health.v1 status of a service process, kept in step with its readiness.

Every name a server registers (each service, and ``""`` for the server as a whole) is SERVING
only while each of the process's readiness checks passes (the control-plane database answers,
its keys are loaded), NOT_SERVING otherwise, and NOT_SERVING for good once shutdown begins,
so a load balancer stops sending before the server's grace period. ``LIVENESS`` is separate:
it answers SERVING while the process's event loop does, so a database outage makes a replica
unready without getting it restarted.

Kubernetes' ``grpc:`` probe dials plaintext (1.37 adds a TLS mode the older releases the
charts support reject), so the same status can also be served on a plaintext port that carries
nothing but this service (deploy/k8s/README.md, "Probes").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from sevvo.runtime.logs import get_logger

log = get_logger(__name__)

LIVENESS = "sevvo.liveness"
"""The health name probes use for liveness: SERVING while the process answers at all."""
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
DEFAULT_INTERVAL_SECONDS = 5.0
DEFAULT_TIMEOUT_SECONDS = 2.0

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class ReadinessCheck:
    """One condition a service needs to serve: ``probe`` returns normally when it holds and
    raises when it does not. Blocking probes (a database round trip) run in a thread."""

    name: str
    probe: Callable[[], object]
    blocking: bool = False


class NotReady(Exception):
    """Raised by a probe whose condition does not hold; the message says which, never a secret."""


def require(condition: bool, message: str) -> None:
    """Raises NotReady(message) unless ``condition`` holds: the body of most probes."""
    if not condition:
        raise NotReady(message)


class Pingable(Protocol):
    """A store that can tell whether its database answers (sevvo.runtime.store.SchemaStore)."""

    def ping(self, timeout: float) -> None:
        """Raises unless the database answers within ``timeout`` seconds."""


class HasTrust(Protocol):
    """A token verifier (sevvo.runtime.tokens.TokenVerifier)."""

    @property
    def trust_fetched_at(self) -> float | None:
        """When its keys were fetched, if ever."""


def database_check(
    store: Pingable, timeout: float = DEFAULT_TIMEOUT_SECONDS, *, name: str = "database"
) -> ReadinessCheck:
    """Ready while the control-plane database answers through ``store``'s pool."""
    return ReadinessCheck(name, lambda: store.ping(timeout), blocking=True)


def verification_keys_check(verifier: HasTrust) -> ReadinessCheck:
    """Ready once ``verifier`` holds auth's public keys: before that every signed-in call
    would fail. Staleness later is not checked here: the verifier already answers those calls
    UNAVAILABLE, and taking every replica out of rotation while auth is away would turn
    a clear error into refused connections."""
    return ReadinessCheck(
        "verification keys",
        lambda: require(
            verifier.trust_fetched_at is not None, "auth's public keys are not loaded yet"
        ),
    )


class ServerHealth:
    """Runs a process's readiness checks every ``interval`` seconds and publishes the result
    as the health status of every service name on its server(s).

    Only one round of checks is in flight at a time: a probe stuck on a database that does not
    answer holds one thread, not one per interval.
    """

    def __init__(
        self,
        checks: Sequence[ReadinessCheck] = (),
        *,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.servicer = HealthServicer()
        self._checks = tuple(checks)
        self._interval = interval
        self._timeout = timeout
        self._names: list[str] = [""]
        self._ready: bool | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._probe_server: grpc.aio.Server | None = None
        self._shutting_down = False
        # A blocking probe still running from an earlier round, by check.
        self._in_flight: dict[int, asyncio.Future[object]] = {}
        self.probe_port: int | None = None

    @property
    def ready(self) -> bool:
        """Whether the last round of checks passed (False before the first, and at shutdown)."""
        return bool(self._ready) and not self._shutting_down

    def add_to(self, server: grpc.aio.Server) -> None:
        """Serves the health service on ``server``."""
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    async def start(self, names: Iterable[str]) -> None:
        """Publishes ``names`` (plus ``""`` and LIVENESS), runs the checks once so the first
        answer is already true, then keeps checking in the background."""
        self._names = ["", *names]
        await self.servicer.set(LIVENESS, SERVING)
        await self.check_now()
        if self._checks and self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(
                self._run(), name="readiness-checks"
            )

    async def listen_plaintext(self, host: str, port: int) -> int:
        """Serves this health service, and nothing else, on a plaintext port for probes that
        cannot speak TLS; returns the port bound."""
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        self.add_to(server)
        bound: int = server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise OSError(f"could not listen for health probes on {host}:{port}")
        await server.start()
        self._probe_server = server
        self.probe_port = bound
        log.info("health probe port listening", host=host, port=bound)
        return bound

    async def check_now(self) -> bool:
        """Runs every check once, publishes the outcome, and returns whether all passed."""
        failures = await asyncio.gather(*(self._failure(check) for check in self._checks))
        failed = [f for f in failures if f is not None]
        await self._publish(not failed, failed)
        return not failed

    async def _failure(self, check: ReadinessCheck) -> str | None:
        try:
            if check.blocking:
                pending = self._in_flight.get(id(check))
                if pending is not None and not pending.done():
                    return f"{check.name}: the previous check has not answered yet"
                future = asyncio.ensure_future(asyncio.to_thread(check.probe))
                self._in_flight[id(check)] = future
                # Retrieved here so an answer that comes after the timeout is not reported
                # as never retrieved.
                future.add_done_callback(lambda f: f.cancelled() or f.exception())
                # Shielded: a timeout leaves the thread to finish rather than start another.
                await asyncio.wait_for(asyncio.shield(future), self._timeout)
            else:
                check.probe()
        except NotReady as exc:
            return f"{check.name}: {exc}"
        except TimeoutError:
            return f"{check.name}: no answer within {self._timeout:g} s"
        except Exception as exc:  # Its type says enough; messages may quote a DSN.
            return f"{check.name}: {type(exc).__name__}"
        return None

    async def _publish(self, ready: bool, failed: list[str]) -> None:
        if ready == self._ready or self._shutting_down:
            return
        if ready:
            log.info("ready", checks=[c.name for c in self._checks])
        else:
            log.warning("not ready", failed=failed)
        self._ready = ready
        for name in self._names:
            await self.servicer.set(name, SERVING if ready else NOT_SERVING)

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            await self.check_now()
            await asyncio.sleep(max(0.0, self._interval - (time.monotonic() - started)))

    async def shutdown(self) -> None:
        """Answers NOT_SERVING for every name from now on and stops checking; the plaintext
        port keeps answering so probes see NOT_SERVING, not a refused connection."""
        self._shutting_down = True
        await self.servicer.enter_graceful_shutdown()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None

    async def close(self) -> None:
        """Shuts down (if not yet) and stops the plaintext probe port."""
        await self.shutdown()
        if self._probe_server is not None:
            await self._probe_server.stop(grace=None)
            self._probe_server = None


__all__ = [
    "HEALTH_SERVICE",
    "LIVENESS",
    "NOT_SERVING",
    "SERVING",
    "NotReady",
    "ReadinessCheck",
    "ServerHealth",
    "database_check",
    "require",
    "verification_keys_check",
]
