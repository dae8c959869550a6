"""Throughput under load: previews and credential tests with 50 to 1,000 in flight.

Two orgs, each with its own agent process and a connection to a source database, get an equal
mix of previews (user → orchestrator → Temporal → agent → Postgres) and credential tests
(user → connections → orchestrator → Temporal → agent → connections' resolve → Postgres).
The floor is bare Temporal in the same run: a workflow with one no-op activity, started and
awaited at the same concurrency on the same dev server, through the same TLS proxy. Printed
per level: operations/s, p50/p99 latency, errors (any failed call or any outcome other than
ok), and sevvo's throughput as a ratio of bare Temporal's (target: at least 0.7x, 0 errors).

``python -m bench load`` runs every level; ``SEVVO_BENCH_LEVELS=50,200`` picks some.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from temporalio.client import Client
from temporalio.worker import Worker

from bench.bare_workflow import BareWorkflow, noop
from bench.tenant import Tenant, create_tenant
from devstack.postgres import EmbeddedPostgres
from devstack.source_db import create_source_database
from devstack.stack import StackSettings, start_stack
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.connections.v1 import connections_pb2_grpc as cpb_grpc
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.orchestrator.v1 import orchestrator_pb2_grpc as opb_grpc
from sevvo.runtime import temporal
from sevvo.runtime.logs import configure_logging
from sevvo.workflows.v1 import workflows_pb2 as wpb

LEVELS = (50, 200, 500, 1000)
QUERY = "select id, name, email from customers order by id limit 20"
PASSWORD = "bench-password-123"
# The deadline the sevvo command line gives calls that wait on an agent (cli.client
# AGENT_TIMEOUT); bare Temporal's calls have none. With 1,000 in flight the queue alone holds
# a call for minutes, and 180 s cut off calls that were still on their way to an answer.
CALL_TIMEOUT = 420.0

Operation = Callable[[], Awaitable[str | None]]  # None on success, else what went wrong


def _total(level: int) -> int:
    # Enough operations that the level is held for a while, not just its first wave.
    return max(3 * level, 600)


@dataclass
class LevelResult:
    """What one concurrency level measured."""

    level: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def ops_per_second(self) -> float:
        """Completed operations (errors included) per second of wall time."""
        return (len(self.latencies_ms) + sum(self.errors.values())) / self.seconds

    def quantile(self, q: int) -> float:
        """The q-th percentile latency in ms."""
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[q - 1]


async def _drive(level: int, operations: list[Operation]) -> LevelResult:
    """Keeps ``level`` operations in flight, cycling through ``operations``."""
    total = _total(level)
    budget = itertools.count()
    cycle = itertools.cycle(operations)
    result = LevelResult(level, 0.0)

    async def worker() -> None:
        while next(budget) < total:
            operation = next(cycle)
            started = time.perf_counter()
            try:
                problem = await operation()
            except grpc.aio.AioRpcError as exc:
                problem = f"{exc.code().name}: {exc.details()}"
            except Exception as exc:
                problem = type(exc).__name__
            if problem is None:
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
            else:
                result.errors[problem] = result.errors.get(problem, 0) + 1

    async def progress() -> None:
        # A level that stalls says so while it runs, instead of looking like a hang.
        while True:
            await asyncio.sleep(15)
            done = len(result.latencies_ms) + sum(result.errors.values())
            print(f"  … {level} in flight: {done}/{total} done", flush=True)

    started = time.perf_counter()
    reporter = asyncio.create_task(progress())
    try:
        await asyncio.gather(*(worker() for _ in range(level)))
    finally:
        reporter.cancel()
    result.seconds = time.perf_counter() - started
    return result


def _sevvo_operations(orgs: list[Tenant]) -> list[Operation]:
    operations: list[Operation] = []
    for org in orgs:
        orchestrator = opb_grpc.OrchestratorServiceStub(org.channel)
        connections = cpb_grpc.ConnectionServiceStub(org.channel)

        async def preview(
            orchestrator: opb_grpc.OrchestratorServiceStub = orchestrator, org: Tenant = org
        ) -> str | None:
            response = await orchestrator.PreviewQuery(
                opb.PreviewQueryRequest(connection_id=org.connection_id, sql=QUERY),
                timeout=CALL_TIMEOUT,
            )
            if response.result.category != wpb.PREVIEW_CATEGORY_OK:
                return f"preview {response.run.outcome_category}"
            return None

        async def test(
            connections: cpb_grpc.ConnectionServiceStub = connections, org: Tenant = org
        ) -> str | None:
            tested = await connections.TestConnection(
                cpb.TestConnectionRequest(id=org.connection_id), timeout=CALL_TIMEOUT
            )
            if tested.status != cpb.CONNECTION_STATUS_CONNECTED:
                return f"test {tested.last_test_category}"
            return None

        operations += [preview, test]
    return operations


def _print(name: str, results: list[LevelResult], floor: dict[int, float] | None) -> None:
    print(f"\n{name}")
    header = f"{'in flight':>10}{'ops':>7}{'ops/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
    print(header + ("" if floor is None else f"{'vs bare':>10}"))
    for r in results:
        line = (
            f"{r.level:>10}{len(r.latencies_ms) + sum(r.errors.values()):>7}"
            f"{r.ops_per_second:>9.1f}"
            f"{r.quantile(50) if r.latencies_ms else float('nan'):>9.0f}"
            f"{r.quantile(99) if r.latencies_ms else float('nan'):>9.0f}"
            f"{sum(r.errors.values()):>8}"
        )
        if floor is not None:
            line += f"{r.ops_per_second / floor[r.level]:>9.2f}x"
        print(line)
        for problem, count in sorted(r.errors.items(), key=lambda kv: -kv[1])[:5]:
            print(f"{'':>10}{count:>7} x {problem[:120]}")


async def _run(state: Path, levels: tuple[int, ...]) -> None:
    source_dir = Path(tempfile.mkdtemp(prefix="sevvo-bench-src-"))
    # Enough server connections for a thousand minted sessions' worth of headroom.
    source_pg = EmbeddedPostgres(source_dir, durable=False).start()
    stack = await start_stack(StackSettings(state, 0, None, None, durable=False, start_agent=False))
    try:
        source = create_source_database(
            source_pg.url, database="shop", reader="shop_reader", reader_password=PASSWORD
        )
        orgs = [
            await create_tenant(stack, source_pg, source, f"bench-{i}", PASSWORD) for i in range(2)
        ]
        pki = stack.pki
        bare_client = await Client.connect(
            stack.agent_temporal_address,
            tls=temporal.tls_config(
                ca_file=pki.ca_cert, cert_file=pki.client_cert, key_file=pki.client_key
            ),
        )
        queue = f"bench-{uuid.uuid4()}"

        async def bare() -> str | None:
            await bare_client.execute_workflow(
                BareWorkflow.run, id=f"bare-{uuid.uuid4()}", task_queue=queue
            )
            return None

        operations = _sevvo_operations(orgs)
        bare_results, sevvo_results = [], []
        for level in levels:
            print(f"level {level}: bare Temporal", flush=True)
            async with Worker(
                bare_client, task_queue=queue, workflows=[BareWorkflow], activities=[noop]
            ):
                bare_results.append(await _drive(level, [bare]))
            print(f"level {level}: sevvo", flush=True)
            sevvo_results.append(await _drive(level, operations))
        floor = {r.level: r.ops_per_second for r in bare_results}
        print(f"levels {levels}; operations per level: max(3 * level, 600)")
        _print("bare Temporal workflow (1 no-op activity)", bare_results, None)
        _print("sevvo previews + credential tests, two orgs", sevvo_results, floor)
        for org in orgs:
            await org.channel.close()
    finally:
        await stack.stop()
        source_pg.stop()
        shutil.rmtree(source_dir, ignore_errors=True)


def main() -> None:
    """Starts a throwaway stack, drives every level, prints throughput against bare Temporal."""
    configure_logging("bench", level="WARNING", json=True)
    chosen = os.environ.get("SEVVO_BENCH_LEVELS")
    levels = tuple(int(x) for x in chosen.split(",")) if chosen else LEVELS
    state = Path(tempfile.mkdtemp(prefix="sevvo-bench-"))
    try:
        asyncio.run(_run(state, levels))
    finally:
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
