"""What authentication costs per call: QPS of a no-op RPC for each kind of caller.

The server (bench.auth_server, its own process on one CPU, logging as services do) serves
one echo method per access level. Sixteen calls stay in flight; the baseline is the PUBLIC
method (the same interceptor chain, no token), measured in the same run and interleaved
with the others round by round, so machine noise hits every case alike. The target
(issue 11): authentication costs at most 5% of QPS for every kind of caller.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from bench.auth_server import (
    CLIENT_CPU,
    Rate,
    bench_environment,
    bench_server,
    closed_loop_rate,
    echo_method,
    pin_to_cpu,
)
from sevvo.auth.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    deployments_pb2,
    deployments_pb2_grpc,
)
from sevvo.runtime.grpc_client import ClientTls, secure_aio_channel

IN_FLIGHT = 16
ROUNDS = 5
SECONDS = 2.0
PASSWORD = "bench-password-123"
BOOTSTRAP_TOKEN_METADATA = "x-sevvo-bootstrap-token"
TARGET_COST = 0.05


async def signed_in_tokens(channel: grpc.aio.Channel, bootstrap_token: str) -> tuple[str, str, str]:
    """Bootstraps an org; returns an admin session, a deployment token and an agent bearer."""
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    email = f"bench-{secrets.token_hex(4)}@sevvo.dev"
    await auth.BootstrapOrg(
        auth_pb2.BootstrapOrgRequest(
            org_name=f"Bench {email}", admin_email=email, admin_password=PASSWORD
        ),
        metadata=((BOOTSTRAP_TOKEN_METADATA, bootstrap_token),),
    )
    session = (
        await auth.SignIn(auth_pb2.SignInRequest(email=email, password=PASSWORD))
    ).session_token
    created = await deployments_pb2_grpc.DeploymentServiceStub(channel).CreateDeployment(
        deployments_pb2.CreateDeploymentRequest(display_name="bench"),
        metadata=(("authorization", f"Bearer {session}"),),
    )
    bearer = (
        await auth.ExchangeDeploymentToken(
            auth_pb2.ExchangeDeploymentTokenRequest(deployment_token=created.deployment_token)
        )
    ).bearer_token
    return session, created.deployment_token, bearer


def echo_call(
    channel: grpc.aio.Channel, method: str, bearer: str | None
) -> Callable[[], Awaitable[object]]:
    """One call of an echo method, with ``bearer`` when given."""
    stub = channel.unary_unary(echo_method(method))
    metadata = (("authorization", f"Bearer {bearer}"),) if bearer else ()

    async def call() -> object:
        return await stub(b"", metadata=metadata)

    return call


async def interleaved_rates(
    channel: grpc.aio.Channel,
    cases: dict[str, Callable[[], Awaitable[object]]],
    *,
    rounds: int = ROUNDS,
) -> dict[str, Rate]:
    """Each case's median QPS and CPU per call over ``rounds`` rounds taking the cases in turn."""
    for call in cases.values():  # Warm up: connections, caches, first-call imports.
        await closed_loop_rate(channel, call, in_flight=IN_FLIGHT, seconds=0.3)
    rates: dict[str, list[Rate]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, call in cases.items():
            rates[name].append(
                await closed_loop_rate(channel, call, in_flight=IN_FLIGHT, seconds=SECONDS)
            )
    return {
        name: Rate(
            statistics.median(r.per_second for r in values),
            statistics.median(r.cpu_us_per_call for r in values),
        )
        for name, values in rates.items()
    }


async def _run(database_url: str, pki_dir: Path) -> None:
    bootstrap = secrets.token_urlsafe(32)
    with bench_server(database_url, pki_dir, bootstrap_token=bootstrap) as server:
        channel = secure_aio_channel(server.target, ClientTls(server.ca_file))
        session, _, bearer = await signed_in_tokens(channel, bootstrap)
        baseline = "no auth (PUBLIC method, baseline)"
        cases = {
            baseline: echo_call(channel, "Public", None),
            "user session on a USER method": echo_call(channel, "User", session),
            "agent bearer on an AGENT method": echo_call(channel, "Agent", bearer),
            "agent bearer on a USER_OR_AGENT method": echo_call(channel, "UserOrAgent", bearer),
            "user session on a USER_OR_AGENT method": echo_call(channel, "UserOrAgent", session),
        }
        rates = await interleaved_rates(channel, cases)
        await channel.close()
    print(
        f"{IN_FLIGHT} calls in flight, median of {ROUNDS} interleaved {SECONDS:.0f} s rounds;"
        " server on one CPU with production logging. QPS moves with the machine's other load;"
        " server CPU per call does not, so its ratio is the steadier QPS ratio."
    )
    print(f"{'caller':<42}{'QPS':>8}{'vs no auth':>12}{'CPU µs/call':>13}{'QPS ratio by CPU':>18}")
    base = rates[baseline]
    worst = 0.0
    for name, rate in rates.items():
        by_cpu = base.cpu_us_per_call / rate.cpu_us_per_call
        if name != baseline:
            worst = max(worst, 1 - min(rate.per_second / base.per_second, by_cpu))
        print(
            f"{name:<42}{rate.per_second:>8,.0f}{rate.per_second / base.per_second:>11.2f}x"
            f"{rate.cpu_us_per_call:>13,.0f}{by_cpu:>17.2f}x"
        )
    verdict = "within" if worst <= TARGET_COST else "OVER"
    print(f"worst auth cost {worst:.1%} ({verdict} the {TARGET_COST:.0%} target)")


def main() -> None:
    """Starts a throwaway Postgres and bench server, measures each caller, prints ratios."""
    pin_to_cpu(CLIENT_CPU)
    with bench_environment() as (database_url, pki_dir):
        asyncio.run(_run(database_url, pki_dir))


if __name__ == "__main__":
    main()
