"""Borrow latency: a credential from the agent's warm pool, and one freshly minted, against a
bare CREATE ROLE + DROP ROLE in the same run.

The whole path a workload takes: a real ``python -m agent`` process serving its credential
API on a Unix socket, called through a gRPC stub on that socket with a workload token (as
the client library does), against the dev stack's control plane (auth, connections, on this
process's loop) and an embedded customer Postgres. The workload is a process of its own
(``python -m bench.warm_pool --measure``, its handles on stdin, its samples on stdout), as
a customer's service is: timed on this process's loop, a borrow waited behind the control
plane's handling of the agent's calls, which no workload does. The agent keeps a warm pool of the
connection's role "default"; its role "fresh" has the same statements and no pool, so every
borrow of it mints.

- warm: GenerateCredential of "default", served from the pool: the agent checks the
  workload's bearer and grants itself and records the claim (ClaimLease) right after, so
  nothing on the path reaches the control plane or the customer's database. Timed one at a
  time, in bursts (the pool refilling beside them) and paced (the pool full before each);
  every borrow must come from the pool or the run fails.
- fresh: GenerateCredential of "fresh" (CREATE ROLE while CreateLease records the lease,
  committed after it), then RevokeCredential (the staged revoke while the revocation is
  recorded); the borrow alone and the whole cycle.
- bare: CREATE ROLE ... LOGIN PASSWORD + DROP ROLE, as the privileged role, over one reused
  session, next to CREATE ROLE alone. Alternated sample by sample with fresh, so drift
  hits both alike.

Targets (issue 15): warm borrow p50 under 2 ms; a fresh borrow's p50 within 2x of the bare
CREATE ROLE + DROP ROLE. Also printed: the fresh borrow against CREATE ROLE alone, and the
whole cycle against the bare pair, which is not like for like: the staged revoke (NOLOGIN,
ending sessions, REASSIGN/DROP OWNED) does what a bare DROP ROLE does not.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import grpc
import psycopg
from psycopg import sql

from agent import dynamic_credentials as dc
from devstack.agent_process import AgentProcess
from devstack.postgres import EmbeddedPostgres
from devstack.source_db import create_dynamic_roles, create_source_database
from devstack.stack import RunningStack, StackSettings, start_stack
from sevvo.agent.v1 import credentials_pb2, credentials_pb2_grpc
from sevvo.auth.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    deployments_pb2,
    deployments_pb2_grpc,
    workloads_pb2,
    workloads_pb2_grpc,
)
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.connections.v1 import connections_pb2_grpc as cpb_grpc
from sevvo.runtime.files import write_private_file
from sevvo.runtime.grpc_client import ClientTls, secure_aio_channel
from sevvo.runtime.logs import configure_logging

POOL_SIZE = 40
BATCH = 30
WARM_SAMPLES = 150
CYCLE_SAMPLES = 100
WARMUP = 10
IDLE_SAMPLES = 50
PACE_SECONDS = 0.2
"""How often a paced borrow checks that the pool is full again: the idle before each."""
TTL_SECONDS = 60
PASSWORD = "bench-password-123"
PRIVILEGED_PASSWORD = "bench-privileged-456"


def _p(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


async def _timed(call: Callable[[], Awaitable[object]]) -> tuple[float, object]:
    started = time.perf_counter()
    result = await call()
    return (time.perf_counter() - started) * 1000, result


class _Bench:
    """The tenant, its agent and a workload's view of the credential API."""

    def __init__(self, stack: RunningStack, source_pg: EmbeddedPostgres, state: Path) -> None:
        self.stack = stack
        self.source_pg = source_pg
        self.state = state
        self.socket = state / "agent.sock"

    async def setup(self) -> None:
        """Org, agent (with its pool), dynamic connection, role "fresh", workload."""
        stack, pg = self.stack, self.source_pg
        db = create_source_database(
            pg.url, database="shop", reader="shop_reader", reader_password=PASSWORD
        )
        self.group, self.privileged = create_dynamic_roles(
            pg.admin_url(db.database), database=db.database, password=PRIVILEGED_PASSWORD
        )
        stack.auth.domain.create_org_with_admin("bench", "bench@bench.example", PASSWORD)
        tls = ClientTls(stack.pki.ca_cert)
        anonymous = secure_aio_channel(stack.grpc_target, tls)
        session = await auth_pb2_grpc.AuthServiceStub(anonymous).SignIn(
            auth_pb2.SignInRequest(email="bench@bench.example", password=PASSWORD)
        )
        await anonymous.close()
        self.user = secure_aio_channel(stack.grpc_target, tls, lambda: session.session_token)
        created = await deployments_pb2_grpc.DeploymentServiceStub(self.user).CreateDeployment(
            deployments_pb2.CreateDeploymentRequest(display_name="bench-agent")
        )
        token_file = self.state / "bench-agent-token"
        write_private_file(token_file, created.deployment_token + "\n")
        settings = replace(
            stack.agent_settings(token_file),
            credential_socket=self.socket,
            # Named before the connection exists: the pool fills once it does.
            warm_pool=f"shop:default={POOL_SIZE}",
            warm_pool_refill_seconds=0.2,
        )
        self.agent = AgentProcess(settings, self.state / "bench-agent.log")
        stack.agents.append(self.agent)
        await asyncio.to_thread(self.agent.start, wait=True, timeout=60)
        connection = await cpb_grpc.ConnectionServiceStub(self.user).CreateConnection(
            cpb.CreateConnectionRequest(
                display_name="shop",
                dynamic=cpb.PostgresDynamic(
                    host="localhost",
                    port=pg.port,
                    database=db.database,
                    ssl_mode=cpb.SSL_MODE_DISABLE,
                    privileged_username=self.privileged,
                    privileged_password=PRIVILEGED_PASSWORD,
                    default_ttl_seconds=300,
                    max_ttl_seconds=900,
                    group_role=self.group,
                ),
            )
        )
        if connection.status != cpb.CONNECTION_STATUS_CONNECTED:
            raise RuntimeError("the bench connection did not pass its credential test")
        self.connection_id = connection.id
        await cpb_grpc.ConnectionRoleServiceStub(self.user).CreateConnectionRole(
            cpb.CreateConnectionRoleRequest(
                connection_id=connection.id,
                name="fresh",
                settings=cpb.ConnectionRoleSettings(
                    default_ttl_seconds=300, max_ttl_seconds=900, group_role=self.group
                ),
            )
        )
        workload = await workloads_pb2_grpc.WorkloadServiceStub(self.user).CreateWorkload(
            workloads_pb2.CreateWorkloadRequest(
                display_name="bench-reporting",
                grants=[
                    workloads_pb2.WorkloadGrant(connection_id=connection.id, role=role)
                    for role in ("default", "fresh")
                ],
                max_ttl_seconds=900,
            )
        )
        self.handles = _Handles(
            socket=str(self.socket),
            workload_token=workload.workload_token,
            session_token=session.session_token,
            grpc_target=stack.grpc_target,
            ca_cert=str(stack.pki.ca_cert),
            connection_id=connection.id,
            source_port=pg.port,
            source_database=db.database,
            privileged=self.privileged,
        )

    async def measure(self) -> dict[str, list[float]]:
        """Runs the workload's process and returns its samples (this loop serves meanwhile)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.warm_pool",
            "--measure",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await process.communicate(json.dumps(asdict(self.handles)).encode())
        if process.returncode != 0:
            raise RuntimeError(f"the measuring process failed (exit {process.returncode})")
        samples: dict[str, list[float]] = json.loads(out)
        return samples

    async def close(self) -> None:
        """Closes the user's channel (the stack stops the agent)."""
        await self.user.close()


@dataclass(frozen=True)
class _Handles:
    """What the workload's process is given: its token, the socket, and (for the untimed
    pool checks and the baseline) an admin's session and the privileged login."""

    socket: str
    workload_token: str
    session_token: str
    grpc_target: str
    ca_cert: str
    connection_id: str
    source_port: int
    source_database: str
    privileged: str


class _Workload:
    """The credential API as the workload's process sees it, and the admin's lease view."""

    def __init__(self, handles: _Handles) -> None:
        self.handles = handles
        self.metadata = (("authorization", f"Bearer {handles.workload_token}"),)
        # A blocking channel, as the client library's (sevvo_client.CredentialClient).
        self.socket_channel = grpc.insecure_channel(f"unix:{handles.socket}")
        self.api = credentials_pb2_grpc.CredentialServiceStub(self.socket_channel)
        self.user = secure_aio_channel(
            handles.grpc_target, ClientTls(Path(handles.ca_cert)), lambda: handles.session_token
        )
        self.leases = cpb_grpc.LeaseServiceStub(self.user)
        self.connection_id = handles.connection_id

    async def generate(self, role: str) -> credentials_pb2.Credential:
        """One borrow, as a workload makes it."""
        credential: credentials_pb2.Credential = self.api.GenerateCredential(
            credentials_pb2.GenerateCredentialRequest(
                connection="shop", role=role, ttl_seconds=TTL_SECONDS, purpose="bench"
            ),
            metadata=self.metadata,
            timeout=30,
        )
        return credential

    def refused(self) -> None:
        """A Generate the agent refuses after authenticating the workload (a negative TTL)."""
        try:
            self.api.GenerateCredential(
                credentials_pb2.GenerateCredentialRequest(connection="shop", ttl_seconds=-1),
                metadata=self.metadata,
                timeout=30,
            )
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
        else:
            raise RuntimeError("the agent accepted a negative TTL")

    async def give_back(self, lease_id: str) -> None:
        """Revokes a borrowed lease."""
        self.api.RevokeCredential(
            credentials_pb2.RevokeCredentialRequest(lease_id=lease_id),
            metadata=self.metadata,
            timeout=30,
        )

    async def pooled(self) -> int:
        """How many unclaimed pool leases are active now (the admin's view)."""
        count, token = 0, ""
        while True:
            page = await self.leases.ListLeases(
                cpb.ListLeasesRequest(
                    connection_id=self.connection_id,
                    state=cpb.LEASE_STATE_ACTIVE,
                    page_size=500,
                    page_token=token,
                )
            )
            count += sum(
                1 for lease in page.leases if lease.purpose == "warm_pool" and not lease.workload_id
            )
            token = page.next_page_token
            if not token:
                return count

    async def wait_for_full_pool(self, timeout: float = 120) -> None:
        """Waits (untimed) until the agent's pool holds POOL_SIZE roles."""
        deadline = time.monotonic() + timeout
        while await self.pooled() < POOL_SIZE:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the warm pool did not fill in {timeout:.0f} s")
            await asyncio.sleep(PACE_SECONDS)

    async def close(self) -> None:
        """Closes the channels."""
        self.socket_channel.close()
        await self.user.close()


async def _bare(admin: psycopg.AsyncConnection[tuple[object, ...]]) -> tuple[float, float]:
    name = sql.Identifier(dc.role_name("bare"))
    password = sql.Literal(dc.generate_password())
    started = time.perf_counter()
    await admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(name, password))
    created = time.perf_counter()
    await admin.execute(sql.SQL("DROP ROLE {}").format(name))
    ended = time.perf_counter()
    return (created - started) * 1000, (ended - started) * 1000


async def _warm(bench: _Workload, *, paced: bool) -> list[float]:
    """Warm borrows in batches from a full pool; ``paced`` waits (untimed) for the pool to be
    full again before each borrow, so no refill runs beside it, while a burst lets the
    refill mint replacements during the batch, as it does under real bursts."""
    samples: list[float] = []
    while len(samples) < WARM_SAMPLES + WARMUP:
        await bench.wait_for_full_pool()
        borrowed: list[str] = []
        for _ in range(min(BATCH, WARM_SAMPLES + WARMUP - len(samples))):
            if paced:
                await bench.wait_for_full_pool()
            elapsed, result = await _timed(lambda: bench.generate("default"))
            assert isinstance(result, credentials_pb2.Credential)
            if not result.username.startswith(dc.ROLE_PREFIX + "warm_pool_"):
                raise RuntimeError("a warm borrow was minted afresh: the pool ran dry")
            samples.append(elapsed)
            borrowed.append(result.lease_id)
        for lease_id in borrowed:
            await bench.give_back(lease_id)
    return samples[WARMUP:]


async def _floors(bench: _Workload) -> dict[str, list[float]]:
    """What every warm borrow pays before the pool: the socket hop into the agent with its
    cached workload authentication (a Generate the agent refuses right after it), back to
    back and after the same idle as a paced borrow (the machine's wake-up cost), and one
    authenticated round trip to the control plane (GetCaller, as ClaimLease is one)."""
    out: dict[str, list[float]] = {"socket": [], "socket_idle": [], "control_plane": []}
    auth = auth_pb2_grpc.AuthServiceStub(bench.user)
    for i in range(IDLE_SAMPLES + WARMUP):
        await asyncio.sleep(PACE_SECONDS)
        started = time.perf_counter()
        bench.refused()
        if i >= WARMUP:
            out["socket_idle"].append((time.perf_counter() - started) * 1000)
    for i in range(CYCLE_SAMPLES + WARMUP):
        started = time.perf_counter()
        bench.refused()
        middle = time.perf_counter()
        await auth.GetCaller(auth_pb2.GetCallerRequest(), timeout=30)
        ended = time.perf_counter()
        if i >= WARMUP:
            out["socket"].append((middle - started) * 1000)
            out["control_plane"].append((ended - middle) * 1000)
    return out


async def _cycles(
    bench: _Workload, admin: psycopg.AsyncConnection[tuple[object, ...]]
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"generate": [], "cycle": [], "create": [], "bare": []}
    for i in range(CYCLE_SAMPLES + WARMUP):
        started = time.perf_counter()
        credential = await bench.generate("fresh")
        generated = time.perf_counter()
        await bench.give_back(credential.lease_id)
        ended = time.perf_counter()
        create, bare = await _bare(admin)
        if i >= WARMUP:
            out["generate"].append((generated - started) * 1000)
            out["cycle"].append((ended - started) * 1000)
            out["create"].append(create)
            out["bare"].append(bare)
    return out


async def _run(state: Path, source_pg: EmbeddedPostgres) -> None:
    stack = await start_stack(StackSettings(state, 0, None, None, durable=False, start_agent=False))
    bench = _Bench(stack, source_pg, state)
    try:
        await bench.setup()
        samples = await bench.measure()
        await bench.close()
    finally:
        await stack.stop()
    warm, paced = samples["warm"], samples["paced"]
    floors = {k: samples[k] for k in ("socket", "socket_idle", "control_plane")}
    cycles = {k: samples[k] for k in ("generate", "cycle", "create", "bare")}
    print(
        f"agent process, Unix socket, pool of {POOL_SIZE}; {WARM_SAMPLES} warm samples,"
        f" {CYCLE_SAMPLES} of the others (a shared machine: timings are noisy)"
    )
    rows = (
        ("warm borrow, burst", warm),
        ("warm borrow, paced", paced),
        ("floor: socket + agent", floors["socket"]),
        ("floor, after idle", floors["socket_idle"]),
        ("floor: control plane RTT", floors["control_plane"]),
        ("fresh borrow (mint)", cycles["generate"]),
        ("bare CREATE ROLE", cycles["create"]),
        ("fresh borrow + revoke", cycles["cycle"]),
        ("bare CREATE + DROP ROLE", cycles["bare"]),
    )
    for label, timed in rows:
        print(f"{label:>24}: p50 {_p(timed, 50):6.2f} ms   p95 {_p(timed, 95):6.2f} ms")
    print(f"{'warm p50, paced':>24}: {_p(paced, 50):.2f} ms (target < 2 ms)")
    ratio = _p(cycles["generate"], 50) / _p(cycles["bare"], 50)
    print(f"{'fresh borrow/bare pair':>24}: {ratio:.2f}x (p50; target <= 2x)")
    ratio = _p(cycles["generate"], 50) / _p(cycles["create"], 50)
    print(f"{'fresh borrow/bare create':>24}: {ratio:.2f}x (p50)")
    ratio = _p(cycles["cycle"], 50) / _p(cycles["bare"], 50)
    print(f"{'fresh cycle/bare pair':>24}: {ratio:.2f}x (p50; staged revoke vs DROP ROLE)")
    ratio = _p(cycles["generate"], 50) / _p(paced, 50)
    print(f"{'fresh/warm borrow (p50)':>24}: {ratio:.2f}x")


async def _measure(handles: _Handles) -> dict[str, list[float]]:
    """The workload process's part: every timed call, and the bare statements beside them."""
    bench = _Workload(handles)
    admin = await psycopg.AsyncConnection.connect(
        host="localhost",
        port=handles.source_port,
        dbname=handles.source_database,
        user=handles.privileged,
        password=PRIVILEGED_PASSWORD,
        sslmode="disable",
        autocommit=True,
    )
    try:
        samples = {"warm": await _warm(bench, paced=False)}
        samples["paced"] = await _warm(bench, paced=True)
        samples.update(await _floors(bench))
        samples.update(await _cycles(bench, admin))
    finally:
        await admin.close()
        await bench.close()
    return samples


def _measure_main() -> None:
    handles = _Handles(**json.loads(sys.stdin.read()))
    print(json.dumps(asyncio.run(_measure(handles))))


def main() -> None:
    """Starts the dev stack, an agent with a warm pool and a customer Postgres; prints p50/p95
    and the ratios."""
    configure_logging("bench", level="WARNING", json=True)
    state = Path(tempfile.mkdtemp(prefix="sevvo-bench-pool-"))
    # Its own directory: the server may run as another user, who cannot enter ``state``.
    source_dir = Path(tempfile.mkdtemp(prefix="sevvo-bench-pool-pg-"))
    source_pg = EmbeddedPostgres(source_dir, durable=False).start()
    try:
        asyncio.run(_run(state, source_pg))
    finally:
        source_pg.stop()
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(source_dir, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--measure"]:
        _measure_main()
    else:
        main()
