"""ExchangeDeploymentToken throughput with 16 in flight, against a no-op RPC in the same run.

Every agent trades its deployment token for a bearer at start and before each bearer
expires, so a fleet restarting at once leans on this path. The server is bench.auth_server
on one CPU with production logging; the target (issue 11) is at least 1,000 exchanges/s.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from bench.auth_server import bench_server, run_bench
from bench.rpc_auth import IN_FLIGHT, ROUNDS, SECONDS, echo_call, interleaved_rates
from bench.rpc_auth import signed_in_tokens as bootstrap_tokens
from sevvo.auth.v1 import auth_pb2, auth_pb2_grpc
from sevvo.runtime.grpc_client import ClientTls, secure_aio_channel

TARGET_PER_SECOND = 1000


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
    print(
        f"exchange: {measured.per_second:,.0f}/s as the client saw it; {one_core:,.0f}/s on a core"
        f" of its own by server CPU per call ({verdict} the {TARGET_PER_SECOND:,}/s target);"
        f" {measured.cpu_us_per_call / rates[baseline].cpu_us_per_call:.2f}x the CPU of a no-op"
        " RPC, whose cost on this machine's shared cores the last column also carries"
    )


def main() -> None:
    """Starts a throwaway Postgres and bench server, measures exchanges, prints ratios."""
    run_bench(_run)


if __name__ == "__main__":
    main()
