"""ExchangeDeploymentToken throughput with 16 in flight, against a no-op RPC in the same run.

Every agent trades its deployment token for a bearer at start and before each bearer
expires, so a fleet restarting at once leans on this path. The server is bench.auth_server
on one CPU with production logging; the target (issue 11) is at least 1,000 exchanges/s.

Then the exchange's own steps, measured in this process without gRPC (as rpc_auth measures
the auth step): the in-memory path the server takes for a cached deployment, its signature
alone, the Temporal token signed beside every bearer, and the path that reads Postgres plus
the hop to a worker thread it takes in the server, as every exchange did before
services/auth/deployment_cache.py. The rest of an
exchange's cost is the per-RPC floor (gRPC, TLS, interceptors, log line) that the no-op RPC
pays too.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.auth_server import bench_server, run_bench
from bench.rpc_auth import IN_FLIGHT, ROUNDS, SECONDS, echo_call, interleaved_rates
from bench.rpc_auth import signed_in_tokens as bootstrap_tokens
from devstack.pki import ensure_dev_pki
from services.auth.config import AuthConfig
from services.auth.server import AuthApp
from sevvo.auth.v1 import auth_pb2, auth_pb2_grpc
from sevvo.runtime.grpc_client import ClientTls, secure_aio_channel
from sevvo.runtime.grpc_server import TlsFiles
from sevvo.runtime.logs import configure_logging
from sevvo.runtime.tokens import Principal, PrincipalKind

TARGET_PER_SECOND = 1000
STEP_CALLS = 2000
STEP_ROUNDS = 5


def _cpu_us(call: Callable[[], object]) -> float:
    """Median CPU microseconds per call of ``call`` (this process, every thread)."""
    samples = []
    for _ in range(STEP_ROUNDS):
        started = time.process_time()
        for _ in range(STEP_CALLS):
            call()
        samples.append((time.process_time() - started) / STEP_CALLS * 1e6)
    return sorted(samples)[len(samples) // 2]


async def _thread_hop_us() -> float:
    """CPU µs that awaiting asyncio.to_thread adds to a call, over awaiting it in place."""

    async def in_place() -> None:
        pass

    costs = []
    for hop in (True, False):
        started = time.process_time()
        for _ in range(STEP_CALLS):
            await (asyncio.to_thread(lambda: None) if hop else in_place())
        costs.append((time.process_time() - started) / STEP_CALLS * 1e6)
    return costs[0] - costs[1]


def exchange_steps_us(database_url: str, pki_dir: Path) -> dict[str, float]:
    """CPU µs per exchange by path, in process on a database of its own."""
    database = f"bench_steps_{secrets.token_hex(6)}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(database)))
    pki = ensure_dev_pki(pki_dir)
    app = AuthApp(
        AuthConfig(
            database_url=make_conninfo(database_url, dbname=database),
            tls=TlsFiles(cert=pki.server_cert, key=pki.server_key),
            key_encryption_key=secrets.token_bytes(32),
        )
    )
    app.open()
    try:
        admin = app.domain.create_org_with_admin("Bench", "bench@sevvo.dev", "bench-password-1")
        caller = Principal(
            PrincipalKind.USER,
            str(admin.org_id),
            str(admin.id),
            "bench",
            datetime.now(UTC),
            "admin",
        )
        token = app.domain.create_deployment(caller, "bench").token
        while not app.deployments.trusted:
            time.sleep(0.01)
        app.domain.exchange(token)  # Cached from now on.

        def in_memory() -> object:
            issued = app.domain.exchange_in_memory(token)
            # The keys' periodic reload is a database read the server does on a thread.
            return issued if issued is not None else app.domain.exchange(token)

        issued = app.domain.exchange(token)

        def temporal_token() -> object:
            # Signed beside every bearer (ES256: Temporal's authorizer takes no Ed25519 key).
            args = (issued.org_id, issued.subject_id, issued.expires_at)
            signed = app.temporal_tokens.for_agent_in_memory(*args)
            return signed if signed is not None else app.temporal_tokens.for_agent(*args)

        claims = {"iss": "bench", "sub": "bench", "exp": 0, "jti": "bench"}
        steps = {
            "in memory (the server's path)": _cpu_us(in_memory),
            "  of which signing the bearer": _cpu_us(lambda: app.keys.sign(claims)),
            "  plus the Temporal token (ES256)": _cpu_us(temporal_token),
        }
        app.deployments.stop()  # Bypassed from now on: every exchange reads Postgres.
        steps["reading Postgres (before)"] = _cpu_us(lambda: app.domain.exchange(token))
        steps["  plus the hop to a worker thread"] = asyncio.run(_thread_hop_us())
        return steps
    finally:
        app.close()


async def _run(database_url: str, pki_dir: Path) -> None:
    bootstrap = secrets.token_urlsafe(32)
    with bench_server(database_url, pki_dir, bootstrap_token=bootstrap) as server:
        channel = secure_aio_channel(server.target, ClientTls(server.ca_file))
        _, deployment_token, _ = await bootstrap_tokens(channel, bootstrap)
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        request = auth_pb2.ExchangeDeploymentTokenRequest(deployment_token=deployment_token)

        async def exchange() -> object:
            return await auth.ExchangeDeploymentToken(request)

        baseline = "no-op RPC (PUBLIC, baseline)"
        rates = await interleaved_rates(
            channel,
            {baseline: echo_call(channel, "Public", None), "ExchangeDeploymentToken": exchange},
        )
        await channel.close()
    steps = await asyncio.to_thread(exchange_steps_us, database_url, pki_dir)
    print(
        f"{IN_FLIGHT} calls in flight; {ROUNDS} rounds of {SECONDS:.0f} s per case, ratios paired"
        " within a round; server on one CPU with production logging"
    )
    print(
        f"{'call':<32}{'per s':>8}{'paired':>8}{'server busy':>13}"
        f"{'CPU µs/call':>13}{'1-core per s':>14}"
    )
    for name, rate in rates.items():
        busy = rate.per_second * rate.cpu_us_per_call / 1e6
        print(
            f"{name:<32}{rate.per_second:>8,.0f}{rate.qps_ratio:>7.2f}x{busy:>12.0%}"
            f"{rate.cpu_us_per_call:>13,.0f}{1e6 / rate.cpu_us_per_call:>14,.0f}"
        )
    measured = rates["ExchangeDeploymentToken"]
    one_core = 1e6 / measured.cpu_us_per_call
    verdict = "meets" if one_core >= TARGET_PER_SECOND else "BELOW"
    floor = rates[baseline].cpu_us_per_call
    print(
        f"exchange: {measured.per_second:,.0f}/s as the client saw it; {one_core:,.0f}/s on a core"
        f" of its own by server CPU per call ({verdict} the {TARGET_PER_SECOND:,}/s target);"
        f" {measured.cpu_us_per_call / floor:.2f}x the CPU of a no-op RPC, whose cost on this"
        " machine's shared cores the last column also carries"
    )
    print(f"exchange steps in process, CPU µs per call (the no-op RPC's floor: {floor:,.0f}):")
    for name, cost in steps.items():
        print(f"  {name:<42}{cost:>8,.0f}")


def main() -> None:
    """Starts a throwaway Postgres and bench server, measures exchanges, prints ratios."""
    configure_logging("bench", level="WARNING", json=True)  # The in-process auth's lines.
    run_bench(_run)


if __name__ == "__main__":
    main()
