"""Password guessing against SignIn, and what it does to every other RPC of the process.

Measures the p50/p99 of ListUsers (a signed-in call doing database work) with one call in
flight: alone, then while 16 clients in another process guess an admin's password as fast
as the server answers, all in one run. Issue 11 saw ListUsers go from 7 ms to 1,044 ms p50:
scrypt ran in the same thread pool as every RPC's database work. The guessers count how the
server answered them, so the run also shows the limiter at work.

``python -m bench.sign_in`` runs it; ``python -m bench.sign_in guess TARGET CA EMAIL`` is the
guessing process, which stops when its standard input closes.
"""

from __future__ import annotations

import asyncio
import collections
import json
import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bench.auth_server import bench_server, run_bench
from bench.rpc_auth import bootstrap_admin
from sevvo.auth.v1 import auth_pb2, auth_pb2_grpc, users_pb2, users_pb2_grpc
from sevvo.runtime.grpc_client import ClientTls, secure_aio_channel

GUESSERS = 16
SECONDS = 6.0


async def _guess(target: str, ca_file: Path, email: str) -> None:
    channel = secure_aio_channel(target, ClientTls(ca_file))
    auth = auth_pb2_grpc.AuthServiceStub(channel)
    codes: collections.Counter[str] = collections.Counter()
    stop = asyncio.Event()

    async def guesser() -> None:
        while not stop.is_set():
            try:
                await auth.SignIn(
                    auth_pb2.SignInRequest(email=email, password=secrets.token_urlsafe(12))
                )
                codes["OK"] += 1
            except grpc.aio.AioRpcError as error:
                codes[error.code().name] += 1

    async def until_stdin_closes() -> None:
        await asyncio.to_thread(sys.stdin.read)
        stop.set()

    await asyncio.gather(until_stdin_closes(), *(guesser() for _ in range(GUESSERS)))
    await channel.close()
    print(json.dumps(dict(codes)), flush=True)


class Guessers:
    """The guessing process: 16 concurrent SignIn loops with wrong passwords."""

    def __init__(self, target: str, ca_file: Path, email: str) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.sign_in", "guess", target, str(ca_file), email],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def stop(self) -> dict[str, int]:
        """Stops guessing; returns how many answers of each status code the guessers got."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.close()
        counts: dict[str, int] = json.loads(self._process.stdout.readline() or "{}")
        self._process.wait(timeout=30)
        return counts


async def _latencies(call: Any, seconds: float) -> list[float]:
    samples = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


@dataclass
class Outcome:
    """ListUsers latencies alone and under guessing, and how the guesses were answered."""

    alone: list[float]
    attacked: list[float]
    answers: dict[str, int]


async def _measure(database_url: str, pki_dir: Path, config: dict[str, Any]) -> Outcome:
    bootstrap = secrets.token_urlsafe(32)
    with bench_server(database_url, pki_dir, bootstrap_token=bootstrap, **config) as server:
        channel = secure_aio_channel(server.target, ClientTls(server.ca_file))
        email, session = await bootstrap_admin(channel, bootstrap)
        users = users_pb2_grpc.UserServiceStub(channel)
        metadata = (("authorization", f"Bearer {session}"),)

        async def list_users() -> object:
            return await users.ListUsers(users_pb2.ListUsersRequest(), metadata=metadata)

        await _latencies(list_users, 0.5)  # Warm up.
        alone = await _latencies(list_users, SECONDS)
        guessers = Guessers(server.target, server.ca_file, email)
        await asyncio.sleep(1)  # Let the guessing reach its steady state.
        attacked = await _latencies(list_users, SECONDS)
        answers = guessers.stop()
        await channel.close()
    return Outcome(alone, attacked, answers)


# The limiter's budgets lifted, so every guess reaches scrypt: what a distributed attack,
# each address under its budget, would cost; only the hashing pool stands in the way.
UNLIMITED = {"sign_in_limits": {"source_burst": 10**9, "free_failures": 10**9}}


async def _run(database_url: str, pki_dir: Path) -> None:
    outcomes = {
        "default limits": await _measure(database_url, pki_dir, {}),
        "limits lifted (hashing pool only)": await _measure(database_url, pki_dir, UNLIMITED),
    }
    print(
        f"ListUsers, one call in flight, {SECONDS:.0f} s each; server on one CPU with production"
        f" logging; {GUESSERS} guessing clients in another process"
    )
    print(f"{'ListUsers':<52}{'calls':>7}{'p50 ms':>9}{'p99 ms':>9}{'p50 vs alone':>14}")
    for label, outcome in outcomes.items():
        base = statistics.median(outcome.alone)
        for name, samples in (
            (f"{label}: alone (baseline)", outcome.alone),
            (f"{label}: with {GUESSERS} guessers", outcome.attacked),
        ):
            p50 = statistics.median(samples)
            print(
                f"{name:<52}{len(samples):>7}{p50:>9.1f}{_p99(samples):>9.1f}{p50 / base:>13.2f}x"
            )
        total = sum(outcome.answers.values())
        summary = ", ".join(f"{code} {count}" for code, count in sorted(outcome.answers.items()))
        print(f"{label}: guesses answered {total} ({summary})")


def main() -> None:
    """Measures ListUsers alone and while 16 clients guess passwords."""
    run_bench(_run)


if __name__ == "__main__":
    if sys.argv[1:2] == ["guess"]:
        asyncio.run(_guess(sys.argv[2], Path(sys.argv[3]), sys.argv[4]))
    else:
        main()
