"""What the request log line costs: CPU per line, and a trivial RPC's QPS with it on and off.

Every RPC of every service writes one line (sevvo.runtime.grpc_server.LoggingInterceptor)
through the redacting structlog pipeline (sevvo.runtime.logs). Measured in one run:

- µs of CPU per call of the interceptor around a servicer that does nothing, with the
  pipeline configured as services run it (JSON, redaction) writing to /dev/null, at INFO
  (line written) and at WARNING (line filtered); the difference is the line itself.
- Health/Check (no auth, no database: the cheapest RPC, so the line's share is largest) on a
  TLS server in its own process, 16 calls in flight, with the line written (INFO), filtered
  (WARNING), and with no logging interceptor at all: the baseline of the ratios. Per mode,
  the QPS the client saw and the server's CPU per call, of the whole process and of the
  event loop's thread, whose inverse bounds a Python server's QPS.

CPU time rather than wall time, and the best of several rounds (other work on the machine
only ever adds), so the figures hold on a shared machine; QPS seen does not.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROUNDS = 4
SECONDS = 2.0
WARMUP_SECONDS = 0.5
IN_FLIGHT = 16
LINES = 20_000
MODES = ("no request log", "INFO (line written)", "WARNING (line filtered)")


class _Context:
    """The two things LoggingInterceptor asks of a gRPC context."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def code(self) -> None:
        return None


def _line_cost(level: str) -> float:
    """µs of CPU per call of LoggingInterceptor around a servicer that does nothing.

    The servicer binds an org id, as authentication does, so the line has every field a real
    one has. Written minus filtered is the line itself.
    """
    from sevvo.runtime import grpc_server
    from sevvo.runtime.logs import configure_logging

    org_id = str(uuid.uuid4())

    async def servicer(request: object, context: object) -> None:
        structlog.contextvars.bind_contextvars(org_id=org_id)

    logged = grpc_server.LoggingInterceptor()._wrap(
        servicer, "/sevvo.connections.v1.ConnectionService/ListConnections"
    )
    context = _Context()

    async def calls(count: int) -> None:
        for _ in range(count):
            await logged(None, context)

    with open(os.devnull, "w") as sink:
        configure_logging("bench", level=level, json=True, stream=sink)
        asyncio.run(calls(LINES // 10))
        samples = []
        for _ in range(ROUNDS):
            started = time.process_time()
            asyncio.run(calls(LINES))
            samples.append((time.process_time() - started) / LINES * 1e6)
    return min(samples)


def _serve(mode: str, pki_dir: str, reply: Connection) -> None:
    """Child process: a TLS server with health only, logging as ``mode`` says, until killed."""
    from devstack.pki import ensure_dev_pki
    from sevvo.runtime import grpc_server
    from sevvo.runtime.logs import configure_logging
    from sevvo.runtime.tokens import TokenVerifier, TrustState

    class _NoTrust:
        def fetch(self) -> TrustState:
            return TrustState(keys={}, revoked_deployments={})

    class _Unlogged(grpc_server.LoggingInterceptor):
        def _wrap(self, behavior: Any, method: str) -> Any:
            return behavior

    sink = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    level = "WARNING" if mode.startswith("WARNING") else "INFO"
    configure_logging("bench", level=level, json=True, stream=sink)
    if mode == MODES[0]:
        grpc_server.LoggingInterceptor = _Unlogged  # type: ignore[misc]
    pki = ensure_dev_pki(Path(pki_dir))
    verifier = TokenVerifier(_NoTrust())
    verifier.refresh()

    loop_thread = time.pthread_getcpuclockid(threading.get_ident())

    def cpu_windows() -> None:
        # "start" / "stop" from the parent bracket the measured window; the reply is the CPU
        # seconds of the whole process and of the event loop's thread in between.
        while True:
            reply.recv()
            process, loop = time.process_time(), time.clock_gettime(loop_thread)
            reply.recv()
            reply.send((time.process_time() - process, time.clock_gettime(loop_thread) - loop))

    async def run() -> None:
        server, port = await grpc_server.start_server(
            [], verifier=verifier, tls=grpc_server.TlsFiles(pki.server_cert, pki.server_key)
        )
        reply.send(port)
        threading.Thread(target=cpu_windows, daemon=True).start()
        await server.wait_for_termination()

    asyncio.run(run())


@dataclass(frozen=True)
class _Window:
    """One measured window against one server: client QPS and server CPU per call."""

    qps: float
    process_us: float
    loop_us: float


async def _window(target: str, ca: Path, server: Connection) -> _Window:
    from sevvo.runtime.grpc_client import ClientTls, secure_aio_channel

    channel = secure_aio_channel(target, ClientTls(ca))
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest()
    done = 0
    counting = False

    async def worker(until: float) -> None:
        nonlocal done
        while time.perf_counter() < until:
            await stub.Check(request)
            if counting:
                done += 1

    started = time.perf_counter()
    warm = started + WARMUP_SECONDS
    await asyncio.gather(*(worker(warm) for _ in range(IN_FLIGHT)))
    counting = True
    server.send("start")
    started = time.perf_counter()
    await asyncio.gather(*(worker(started + SECONDS) for _ in range(IN_FLIGHT)))
    elapsed = time.perf_counter() - started
    server.send("stop")
    process_s, loop_s = await asyncio.to_thread(server.recv)
    await channel.close()
    return _Window(done / elapsed, process_s / done * 1e6, loop_s / done * 1e6)


def _measure_servers(pki_dir: Path, ca: Path) -> dict[str, _Window]:
    """The best window of each mode: interference from other work only ever adds."""
    context = multiprocessing.get_context("spawn")
    windows: dict[str, list[_Window]] = {mode: [] for mode in MODES}
    for _ in range(ROUNDS):
        for mode in MODES:
            parent, child = context.Pipe()
            process = context.Process(target=_serve, args=(mode, str(pki_dir), child))
            process.start()
            try:
                if not parent.poll(30):
                    raise RuntimeError(f"the {mode} server did not start")
                port = parent.recv()
                windows[mode].append(asyncio.run(_window(f"localhost:{port}", ca, parent)))
            finally:
                process.terminate()
                process.join(10)
    return {
        mode: _Window(
            max(w.qps for w in found),
            min(w.process_us for w in found),
            min(w.loop_us for w in found),
        )
        for mode, found in windows.items()
    }


def main() -> None:
    """Prints µs per request line, then QPS and CPU per call per mode, against no request log."""
    from devstack.pki import ensure_dev_pki

    written = _line_cost("INFO")
    filtered = _line_cost("WARNING")
    print(f"LoggingInterceptor around a no-op servicer, {LINES:,} calls x {ROUNDS} rounds (best)")
    print(f"{'written (INFO)':<28}{written:>8.1f} µs of CPU")
    print(f"{'filtered (WARNING)':<28}{filtered:>8.1f} µs of CPU")
    print(f"{'the line itself':<28}{written - filtered:>8.1f} µs of CPU")

    pki_dir = Path(tempfile.mkdtemp(prefix="sevvo-bench-log-"))
    try:
        best = _measure_servers(pki_dir, ensure_dev_pki(pki_dir).ca_cert)
    finally:
        shutil.rmtree(pki_dir, ignore_errors=True)
    base = best[MODES[0]]
    print(
        f"\nHealth/Check over TLS, {IN_FLIGHT} in flight, {SECONDS:.0f} s x {ROUNDS} rounds"
        " (best); the event loop's thread bounds a Python server's QPS"
    )
    print(
        f"{'server logging':<26}{'QPS seen':>9}{'ratio':>7}{'CPU µs/call':>12}"
        f"{'loop µs/call':>13}{'loop QPS':>10}{'ratio':>7}"
    )
    for mode, w in best.items():
        print(
            f"{mode:<26}{w.qps:>9,.0f}{w.qps / base.qps:>6.2f}x{w.process_us:>12.0f}"
            f"{w.loop_us:>13.0f}{1e6 / w.loop_us:>10,.0f}{base.loop_us / w.loop_us:>6.2f}x"
        )
    added = best[MODES[1]].loop_us - base.loop_us
    print(f"the written line adds {added:.0f} µs of event-loop CPU per call")


if __name__ == "__main__":
    main()
