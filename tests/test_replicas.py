"""Two replicas of every service behind the router: calls are shared, and a killed replica
loses no run.

The control plane runs as processes (devstack.process_stack, ``replicas=2``): auth-1/2,
connections-1/2 and orchestrator-1/2, balanced by the router, which the services also dial
for each other. A slice of the end-to-end flows runs through it; then the orchestrator
replica that started a preview is SIGKILLed mid-preview, the one that started a credential
test mid-test, and a connections replica mid-TestConnection. Each time the caller gets a
clear UNAVAILABLE or the result (connections asks another orchestrator replica how the run
ended), and the run ends in the state its work really had (read back through the surviving
replica) within the work's own time plus one reconciliation pass: no run is lost or left
``running``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from devstack.postgres import EmbeddedPostgres
from devstack.source_db import create_source_database, drop_source_database
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.connections.v1 import connections_pb2_grpc as cpb_grpc
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.orchestrator.v1 import orchestrator_pb2_grpc as opb_grpc
from tests.plugins.auth_stack import BackgroundLoop
from tests.plugins.dev_stack import EndToEnd, Tenant
from tests.plugins.process_stack import REPLICATED_SERVICE_ENV, ProcessHarness

pytestmark = pytest.mark.timeout(120)

RECONCILE_SECONDS = float(REPLICATED_SERVICE_ENV["SEVVO_ORCHESTRATOR_RECONCILE_SECONDS"])
# Room for a reconciliation pass's own round trips on a loaded two-core machine.
MARGIN_SECONDS = 5.0
# The longest the door holds a connection: less than the agent's 10 s connect timeout, so held
# work still succeeds, and more than a replica takes to restart on a loaded machine.
HOLD_SECONDS = 8.0
PREVIEW = "select count(*) as orders from orders"
CALL_TIMEOUT = 30.0


class Door:
    """A TCP relay to the source database that can hold new connections until released: work
    through it stays mid-flight (the agent connecting) for as long as a test needs."""

    def __init__(self, loop: BackgroundLoop, upstream_port: int) -> None:
        self._loop = loop
        self._upstream_port = upstream_port
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self.port = 0

    def start(self) -> None:
        """Listens on a free loopback port."""

        async def start() -> asyncio.Server:
            return await asyncio.start_server(self._relay, "127.0.0.1", 0)

        self._server = self._loop.run(start())
        self.port = self._server.sockets[0].getsockname()[1]

    def hold(self) -> None:
        """New connections wait (at most HOLD_SECONDS, below the agent's connect timeout)."""
        self._loop.loop.call_soon_threadsafe(self._open.clear)

    def release(self) -> None:
        """Lets held and new connections through."""
        self._loop.loop.call_soon_threadsafe(self._open.set)

    def stop(self) -> None:
        """Stops listening."""
        if self._server is not None:
            self._server.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._open.wait(), HOLD_SECONDS)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@dataclass
class World:
    """The replicated stack, a tenant with its agent, and its two connections."""

    harness: ProcessHarness
    tenant: Tenant
    direct_id: str  # straight to the source database
    held_id: str  # through the door
    door: Door

    def orchestrator(self) -> opb_grpc.OrchestratorServiceStub:
        """The orchestrator as the tenant's admin, through the router."""
        return self.harness.stub(opb_grpc.OrchestratorServiceStub, self.tenant.admin_token)

    def connections(self) -> cpb_grpc.ConnectionServiceStub:
        """The connections service as the tenant's admin, through the router."""
        return self.harness.stub(cpb_grpc.ConnectionServiceStub, self.tenant.admin_token)

    def log(self, component: str) -> Path:
        """Where a component of the stack writes its JSON log lines."""
        return self.harness.stack.state_dir / "logs" / f"{component}.log"


@pytest.fixture(scope="module")
def world(
    replicated_stack: ProcessHarness,
    tls_source_pg: EmbeddedPostgres,
    background_loop: BackgroundLoop,
) -> Iterator[World]:
    """A tenant on the replicated stack with a direct connection to its database and one
    through a door the tests can hold."""
    suffix = uuid.uuid4().hex[:12]
    source = create_source_database(
        tls_source_pg.url,
        database=f"source_{suffix}",
        reader=f"reader_{suffix}",
        reader_password=secrets.token_urlsafe(24),
    )
    door = Door(background_loop, source.port)
    door.start()
    try:
        tenant = replicated_stack.new_tenant()
        connections = replicated_stack.stub(cpb_grpc.ConnectionServiceStub, tenant.admin_token)
        ids = [
            connections.CreateConnection(
                cpb.CreateConnectionRequest(
                    display_name=name, fields=EndToEnd.fields(source, port=port)
                ),
                timeout=CALL_TIMEOUT,
            ).id
            for name, port in (("direct", source.port), ("held", door.port))
        ]
        yield World(replicated_stack, tenant, ids[0], ids[1], door)
    finally:
        door.stop()
        drop_source_database(tls_source_pg.url, database=source.database, reader=source.reader)


def _entries(path: Path, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """The JSON log lines of one file to keep."""
    found = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # Not one of our JSON lines (a native library's own output).
        if isinstance(entry, dict) and keep(entry):
            found.append(entry)
    return found


def _started(world: World, kind: str) -> dict[str, str]:
    """Run id -> the orchestrator replica that started its workflow, for runs of ``kind``."""
    return {
        entry["run_id"]: name
        for name in world.harness.stack.replicas["orchestrator"]
        for entry in _entries(
            world.log(name),
            lambda e: e.get("event") == "workflow started" and e.get("kind") == kind,
        )
    }


def _wait_for_new_start(world: World, kind: str, before: dict[str, str]) -> tuple[str, str]:
    """Waits for a replica to start a workflow of ``kind`` not in ``before``: (run, replica)."""
    deadline = time.monotonic() + CALL_TIMEOUT
    while time.monotonic() < deadline:
        new = {run: name for run, name in _started(world, kind).items() if run not in before}
        if new:
            assert len(new) == 1, new
            return next(iter(new.items()))
        time.sleep(0.02)
    raise AssertionError(f"no replica started a {kind} workflow")


class InThread:
    """A call made on its own thread, whose result or gRPC error is kept."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: grpc.RpcError | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self.result = call()
        except grpc.RpcError as exc:
            self.error = exc

    def join(self) -> None:
        """Waits for the call to return."""
        self._thread.join(CALL_TIMEOUT + 5)
        assert not self._thread.is_alive(), "the call never returned"


def _final_run(world: World, run_id: str, deadline: float) -> opb.Run:
    """The run, read through the router, once it is final (or as it is at ``deadline``)."""
    orchestrator = world.orchestrator()
    while True:
        run: opb.Run = orchestrator.GetRun(opb.GetRunRequest(id=run_id), timeout=CALL_TIMEOUT)
        if run.state != opb.RUN_STATE_RUNNING or time.time() > deadline:
            return run
        time.sleep(0.1)


def _running_runs(world: World) -> list[str]:
    """The org's runs still running, as ListRuns says."""
    runs = world.orchestrator().ListRuns(opb.ListRunsRequest(page_size=500), timeout=CALL_TIMEOUT)
    return [r.id for r in runs.runs if r.state == opb.RUN_STATE_RUNNING]


def _outcome(run: opb.Run) -> tuple[str, str, int]:
    return opb.RunState.Name(run.state), run.outcome_category, run.row_count


def test_each_replica_of_each_service_serves_the_end_to_end_flows(world: World) -> None:
    """Sign-in, exchange, test-before-save, credential tests, previews and run listings go
    through the router, and every replica of every service served some of them."""
    orchestrator = world.orchestrator()
    connections = world.connections()
    for _ in range(3):
        tested = connections.TestConnection(
            cpb.TestConnectionRequest(id=world.direct_id), timeout=CALL_TIMEOUT
        )
        assert tested.status == cpb.CONNECTION_STATUS_CONNECTED
    for _ in range(4):
        run = orchestrator.PreviewQuery(
            opb.PreviewQueryRequest(
                connection_id=world.direct_id, sql="select count(*) from orders"
            ),
            timeout=CALL_TIMEOUT,
        ).run
        assert _outcome(run) == ("RUN_STATE_SUCCEEDED", "ok", 1)
        assert orchestrator.GetRun(opb.GetRunRequest(id=run.id), timeout=CALL_TIMEOUT).id == run.id
    listed = orchestrator.ListRuns(opb.ListRunsRequest(page_size=100), timeout=CALL_TIMEOUT).runs
    # Two tests before save, three here; four previews.
    assert len(listed) == 9
    served = {
        name: len(
            _entries(
                world.log(name),
                lambda e: e.get("event") == "rpc" and str(e.get("method")).startswith("/sevvo."),
            )
        )
        for names in world.harness.stack.replicas.values()
        for name in names
    }
    print(f"calls served: {served}")
    assert sorted(served) == sorted(
        f"{service}-{i}" for service in ("auth", "connections", "orchestrator") for i in (1, 2)
    )
    assert all(count > 0 for count in served.values()), served


def test_killing_the_orchestrator_replica_mid_preview_loses_no_run(world: World) -> None:
    """The caller of a preview whose replica dies gets UNAVAILABLE; the surviving replica
    records the preview's true outcome once its work ends, and nothing is left running."""
    before = _started(world, "preview")
    world.door.hold()
    call = InThread(
        lambda: world.orchestrator().PreviewQuery(
            opb.PreviewQueryRequest(connection_id=world.held_id, sql=PREVIEW),
            timeout=CALL_TIMEOUT,
        )
    )
    try:
        run_id, replica = _wait_for_new_start(world, "preview", before)
        world.harness.stack.kill(replica)
        call.join()
    finally:
        released = time.time()
        world.door.release()
    try:
        assert call.error is not None, "the preview returned although its replica was killed"
        assert call.error.code() == grpc.StatusCode.UNAVAILABLE
        assert "orchestrator service is unavailable" in (call.error.details() or "")
        deadline = released + RECONCILE_SECONDS + MARGIN_SECONDS
        run = _final_run(world, run_id, deadline)
        # The agent ran the query once let through: one row (the count), returned to nobody.
        assert _outcome(run) == ("RUN_STATE_SUCCEEDED", "ok", 1)
        assert run.finish_time.seconds <= deadline
        assert _running_runs(world) == []
    finally:
        world.harness.stack.restart(replica)


def test_killing_the_orchestrator_replica_mid_credential_test_loses_no_run(world: World) -> None:
    """TestConnection whose run's orchestrator replica dies still answers the test's result
    (connections waits on the run through whichever replica answers); the run is settled by
    the surviving replica with its true outcome, and nothing is left running."""
    before = _started(world, "credential_test")
    world.door.hold()
    call = InThread(
        lambda: world.connections().TestConnection(
            cpb.TestConnectionRequest(id=world.held_id), timeout=CALL_TIMEOUT
        )
    )
    try:
        run_id, replica = _wait_for_new_start(world, "credential_test", before)
        world.harness.stack.kill(replica)
    finally:
        released = time.time()
        world.door.release()
    try:
        call.join()
        assert call.error is None, f"{call.error.code()}: {call.error.details()}"
        assert call.result.status == cpb.CONNECTION_STATUS_CONNECTED
        deadline = released + RECONCILE_SECONDS + MARGIN_SECONDS
        run = _final_run(world, run_id, deadline)
        assert _outcome(run)[:2] == ("RUN_STATE_SUCCEEDED", "ok")
        assert run.finish_time.seconds <= deadline
        assert _running_runs(world) == []
    finally:
        world.harness.stack.restart(replica)


def test_killing_a_connections_replica_mid_test_loses_no_run(world: World) -> None:
    """A connections replica killed while it waits on a credential test: its caller gets
    UNAVAILABLE, the orchestrator still records the test's true outcome, nothing is left
    running, and asking again (the other replica answers) gives the result."""
    stack = world.harness.stack
    first, second = stack.replicas["connections"]
    # With the second down, the call can only reach the first, which is then killed while the
    # call waits there; the second is back by then, to serve what follows.
    down = {second}
    stack.kill(second)
    before = _started(world, "credential_test")
    world.door.hold()
    call = InThread(
        lambda: world.connections().TestConnection(
            cpb.TestConnectionRequest(id=world.held_id), timeout=CALL_TIMEOUT
        )
    )
    try:
        try:
            run_id, _ = _wait_for_new_start(world, "credential_test", before)
            stack.restart(second)
            down = set()
            stack.kill(first)
            down = {first}
            call.join()
        finally:
            released = time.time()
            world.door.release()
        assert call.error is not None, "the test returned although its replica was killed"
        assert call.error.code() == grpc.StatusCode.UNAVAILABLE
        assert "connections service is unavailable" in (call.error.details() or "")
        deadline = released + RECONCILE_SECONDS + MARGIN_SECONDS
        run = _final_run(world, run_id, deadline)
        assert _outcome(run)[:2] == ("RUN_STATE_SUCCEEDED", "ok")
        assert run.finish_time.seconds <= deadline
        assert _running_runs(world) == []
        again = world.connections().TestConnection(
            cpb.TestConnectionRequest(id=world.held_id), timeout=CALL_TIMEOUT
        )
        assert again.status == cpb.CONNECTION_STATUS_CONNECTED
    finally:
        for name in down:
            stack.restart(name)
