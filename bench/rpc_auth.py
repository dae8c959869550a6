"""What authentication costs per call: QPS of a no-op RPC for each kind of caller.

The server (bench.auth_server, its own process on one CPU, logging as services do) serves
one echo method per access level. Sixteen calls stay in flight; the baseline is the PUBLIC
method (the same interceptor chain, no token), measured in the same run and interleaved
with the others round by round, so machine noise hits every case alike. The target
(issue 11): authentication costs at most 5% of QPS for every kind of caller.
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench.auth_server import Rate, bench_server, closed_loop_rate, echo_method, run_bench
from sevvo.auth.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    deployments_pb2,
    deployments_pb2_grpc,
)
from sevvo.runtime.auth_client import RemoteTrustSource
from sevvo.runtime.grpc_client import ClientTls, secure_aio_channel, secure_channel
from sevvo.runtime.grpc_server import Access, AuthInterceptor
from sevvo.runtime.tokens import TokenVerifier

IN_FLIGHT = 16
ROUNDS = 15
SECONDS = 1.0
AUTH_STEP_CALLS = 5_000
PASSWORD = "bench-password-123"
BOOTSTRAP_TOKEN_METADATA = "x-sevvo-bootstrap-token"
TARGET_COST = 0.05


async def bootstrap_admin(channel: grpc.aio.Channel, bootstrap_token: str) -> tuple[str, str]:
    """Bootstraps an org; returns its admin's email and signed-in session."""
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
    return email, session


async def signed_in_tokens(channel: grpc.aio.Channel, bootstrap_token: str) -> tuple[str, str, str]:
    """Bootstraps an org; returns an admin session, a deployment token and an agent bearer."""
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    _, session = await bootstrap_admin(channel, bootstrap_token)
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


@dataclass(frozen=True)
class Measured:
    """One case over all rounds: medians, and its ratios to the baseline of the same round."""

    per_second: float
    cpu_us_per_call: float
    # Paired within a round, so load that comes and goes between rounds cancels out.
    qps_ratio: float
    cpu_ratio: float


async def interleaved_rates(
    channel: grpc.aio.Channel,
    cases: dict[str, Callable[[], Awaitable[object]]],
    *,
    rounds: int = ROUNDS,
    seconds: float = SECONDS,
) -> dict[str, Measured]:
    """Each case over ``rounds`` rounds, against the first case (the baseline) of each round.

    Every round takes every case in turn, starting from a different case each round, so no
    case always follows the same one.
    """
    names = list(cases)
    for call in cases.values():  # Warm up: connections, caches, first-call imports.
        await closed_loop_rate(channel, call, in_flight=IN_FLIGHT, seconds=0.3)
    rates: dict[str, list[Rate]] = {name: [] for name in names}
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            rate = await closed_loop_rate(
                channel, cases[name], in_flight=IN_FLIGHT, seconds=seconds
            )
            rates[name].append(rate)
    base = rates[names[0]]
    return {
        name: Measured(
            per_second=statistics.median(r.per_second for r in values),
            cpu_us_per_call=statistics.median(r.cpu_us_per_call for r in values),
            qps_ratio=statistics.median(
                r.per_second / b.per_second for r, b in zip(values, base, strict=True)
            ),
            cpu_ratio=statistics.median(
                b.cpu_us_per_call / r.cpu_us_per_call for r, b in zip(values, base, strict=True)
            ),
        )
        for name, values in rates.items()
    }


def auth_step_us(
    target: str, ca_file: Path, tokens: dict[str, tuple[str, Access]]
) -> dict[str, float]:
    """Microseconds of CPU that authenticating one call takes, measured in this process.

    The same verifier and interceptor code as the server's, against the bench server's
    keys: the part of a call's cost that authentication alone adds, free of network noise.
    """
    channel = secure_channel(target, ClientTls(ca_file))
    verifier = TokenVerifier(RemoteTrustSource(channel))
    verifier.start()  # Refreshed in the background, as in a service.
    interceptor = AuthInterceptor(verifier, {})
    costs = {}
    for name, (token, access) in tokens.items():
        interceptor._authenticate(token, access)  # The first call verifies; then cached.
        started = time.process_time()
        for _ in range(AUTH_STEP_CALLS):
            interceptor._authenticate(token, access)
        costs[name] = (time.process_time() - started) / AUTH_STEP_CALLS * 1e6
    verifier.stop()
    channel.close()
    return costs


async def _run(database_url: str, pki_dir: Path) -> None:
    bootstrap = secrets.token_urlsafe(32)
    with bench_server(database_url, pki_dir, bootstrap_token=bootstrap) as server:
        channel = secure_aio_channel(server.target, ClientTls(server.ca_file))
        session, _, bearer = await signed_in_tokens(channel, bootstrap)
        callers = {
            "user session on a USER method": (session, "User", Access.USER),
            "agent bearer on an AGENT method": (bearer, "Agent", Access.AGENT),
            "agent bearer on a USER_OR_AGENT method": (bearer, "UserOrAgent", Access.USER_OR_AGENT),
            "user session on a USER_OR_AGENT method": (
                session,
                "UserOrAgent",
                Access.USER_OR_AGENT,
            ),
        }
        baseline = "no auth (PUBLIC method, baseline)"
        cases = {
            baseline: echo_call(channel, "Public", None),
            **{
                name: echo_call(channel, method, token)
                for name, (token, method, _) in callers.items()
            },
            # Not auth: what sending the header costs (HTTP/2, gRPC metadata), for reading the
            # rows above; a PUBLIC method ignores it.
            "(PUBLIC method, user session attached)": echo_call(channel, "Public", session),
        }
        rates = await interleaved_rates(channel, cases)
        await channel.close()
        steps = auth_step_us(
            server.target,
            server.ca_file,
            {name: (token, access) for name, (token, _, access) in callers.items()},
        )
    print(
        f"{IN_FLIGHT} calls in flight; {ROUNDS} rounds of {SECONDS:.0f} s per case, ratios paired"
        " within a round; server on one CPU with production logging"
    )
    print(
        f"{'caller':<42}{'QPS':>6}{'paired':>8}{'server busy':>13}"
        f"{'CPU µs/call':>13}{'1-core QPS':>12}{'auth step µs':>15}"
    )
    base_cpu = rates[baseline].cpu_us_per_call
    worst = 0.0
    for name, rate in rates.items():
        step = steps.get(name)
        one_core = base_cpu / rate.cpu_us_per_call
        if step is not None:
            worst = max(worst, 1 - one_core)
        busy = rate.per_second * rate.cpu_us_per_call / 1e6
        print(
            f"{name:<42}{rate.per_second:>6,.0f}{rate.qps_ratio:>7.2f}x{busy:>12.0%}"
            f"{rate.cpu_us_per_call:>13,.0f}{one_core:>11.2f}x"
            + (f"{step:>8.1f} ({step / base_cpu:.1%})" if step is not None else "")
        )
    verdict = "within" if worst <= TARGET_COST else "OVER"
    print(
        f"worst auth cost on one core (server CPU per call vs no auth): {worst:.1%}"
        f" ({verdict} the {TARGET_COST:.0%} target)"
    )
    print(
        "QPS and 'paired' (QPS over the no-auth QPS of the same round) are what the client saw;"
        " while 'server busy' is well under 100% the client or the machine's other load sets"
        " them, and '1-core QPS' (no-auth CPU per call over the caller's) is the server's"
        " throughput ratio on a core of its own. 'auth step' is the interceptor's verification"
        " alone, measured in process: µs of CPU per call, and its share of a no-auth call."
    )


def main() -> None:
    """Starts a throwaway Postgres and bench server, measures each caller, prints ratios."""
    run_bench(_run)


if __name__ == "__main__":
    main()
