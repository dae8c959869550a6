"""Preview latency end to end, against the two floors it cannot beat, all measured in one run.

- direct: the same query with psycopg from this process (new connection each time, as the
  agent does for every preview);
- bare Temporal: a workflow with one no-op activity on the same dev server, through the same
  TLS proxy the agent uses — the round trip any Temporal-routed request pays;
- sevvo preview: user → orchestrator (gRPC/TLS) → Temporal → agent → Postgres → back, for
  QUERY (names no function or operator) and for CALLING_QUERY, whose functions and operators
  the agent looks up in the catalog before it runs (agent.preview_functions).

Dev server tuning: ``history.transferProcessorMaxPollRPS=1000`` (devstack.temporal); the agent
runs the preview as a local activity, which skips one task-queue round trip.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg
from temporalio.client import Client
from temporalio.worker import Worker

from bench.bare_workflow import BareWorkflow, noop
from bench.tenant import create_tenant
from devstack.postgres import EmbeddedPostgres
from devstack.source_db import create_source_database
from devstack.stack import StackSettings, start_stack
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.orchestrator.v1 import orchestrator_pb2_grpc as opb_grpc
from sevvo.runtime import temporal
from sevvo.runtime.logs import configure_logging
from sevvo.workflows.v1 import workflows_pb2 as wpb

WARMUP = 10
SAMPLES = 100
QUERY = "select id, name, email from customers order by id"
CALLING_QUERY = (
    "select id, upper(name), lower(email) from customers"
    " where id > 10 and email like '%@%' order by id"
)
PASSWORD = "bench-password-123"


async def _measure(calls: dict[str, Callable[[], Awaitable[object]]]) -> dict[str, list[float]]:
    """Latencies of each call in ms, the calls taking turns sample by sample.

    Interleaved rather than one path after another, so a machine whose load changes during
    the run (CI, other jobs) slows every path alike and the ratios stay comparable.
    """
    for _ in range(WARMUP):
        for call in calls.values():
            await call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(SAMPLES):
        for name, call in calls.items():
            started = time.perf_counter()
            await call()
            samples[name].append((time.perf_counter() - started) * 1000)
    return samples


def _p(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1]


async def _run(state: Path) -> None:
    source_dir = Path(tempfile.mkdtemp(prefix="sevvo-bench-src-"))
    source_pg = EmbeddedPostgres(source_dir, durable=False).start()
    stack = await start_stack(StackSettings(state, 0, None, None, durable=False, start_agent=False))
    try:
        source = create_source_database(
            source_pg.url, database="shop", reader="shop_reader", reader_password=PASSWORD
        )
        tenant = await create_tenant(stack, source_pg, source, "bench", PASSWORD)
        user = tenant.channel
        orchestrator = opb_grpc.OrchestratorServiceStub(user)

        def preview(text: str) -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                response = await orchestrator.PreviewQuery(
                    opb.PreviewQueryRequest(connection_id=tenant.connection_id, sql=text)
                )
                assert response.result.category == wpb.PREVIEW_CATEGORY_OK, response.result

            return call

        async def direct() -> None:
            async with await psycopg.AsyncConnection.connect(
                host="localhost",
                port=source_pg.port,
                dbname=source.database,
                user=source.reader,
                password=PASSWORD,
                sslmode="disable",
            ) as conn:
                cur = await conn.execute(
                    "select * from (\n" + QUERY + "\n) as preview_query limit 101"
                )
                await cur.fetchall()

        pki = stack.pki
        bare_client = await Client.connect(
            stack.agent_temporal_address,
            tls=temporal.tls_config(
                ca_file=pki.ca_cert, cert_file=pki.client_cert, key_file=pki.client_key
            ),
        )
        queue = f"bench-{uuid.uuid4()}"

        async def bare() -> None:
            await bare_client.execute_workflow(
                BareWorkflow.run, id=f"bare-{uuid.uuid4()}", task_queue=queue
            )

        async with Worker(
            bare_client, task_queue=queue, workflows=[BareWorkflow], activities=[noop]
        ):
            results = await _measure(
                {
                    "direct psycopg (connect + query)": direct,
                    "bare Temporal workflow (1 no-op activity)": bare,
                    "sevvo preview (end to end)": preview(QUERY),
                    "sevvo preview, functions and operators": preview(CALLING_QUERY),
                }
            )
        floor = statistics.median(results["bare Temporal workflow (1 no-op activity)"])
        print(f"{SAMPLES} interleaved samples each after {WARMUP} warm-up calls; query: {QUERY}")
        print(f"the second preview: {CALLING_QUERY}")
        print(f"{'path':<44}{'p50 ms':>9}{'p95 ms':>9}{'p50 vs bare Temporal':>23}")
        for name, samples in results.items():
            p50 = statistics.median(samples)
            print(f"{name:<44}{p50:>9.1f}{_p(samples, 95):>9.1f}{p50 / floor:>22.2f}x")
        added = statistics.median(results["sevvo preview (end to end)"]) / floor - 1
        verdict = "within" if added <= 0.25 else "OVER"
        print(
            f"preview adds {added:+.0%} to the bare Temporal round trip ({verdict} the 25% target)"
        )
        await user.close()
    finally:
        await stack.stop()
        source_pg.stop()
        shutil.rmtree(source_dir, ignore_errors=True)


def main() -> None:
    """Starts a throwaway stack, measures the three paths, prints p50/p95 and ratios."""
    configure_logging("bench", level="WARNING", json=True)
    state = Path(tempfile.mkdtemp(prefix="sevvo-bench-"))
    try:
        asyncio.run(_run(state))
    finally:
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
