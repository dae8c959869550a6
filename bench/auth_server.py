"""The server side of the auth benches: auth, plus an echo service at every access level.

It runs as its own process, pinned to one CPU and logging as services do (JSON through the
redacting pipeline, here into /dev/null), so the client's work never shares its interpreter
and the numbers describe one core's worth of server. The echo methods do nothing, which
leaves the interceptor chain (and, for the authenticated ones, token verification) as the
whole cost of a call: ``Public`` is the no-auth baseline the others are compared with.

``python -m bench.auth_server DATABASE_URL PKI_DIR`` prints ``{"port": N}`` once serving and
stops when its standard input closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from devstack.pki import ensure_dev_pki
from devstack.postgres import EmbeddedPostgres
from services.auth.config import AuthConfig
from services.auth.server import AuthApp
from sevvo.runtime.grpc_server import Access, ServerSpec, TlsFiles, start_server
from sevvo.runtime.logs import configure_logging

ECHO_SERVICE = "bench.Echo"
ECHO_ACCESS = {
    # The server's CPU seconds so far, so a client can measure CPU per call: on a shared
    # machine that is steadier than QPS, which also moves with other processes' load.
    "CpuTime": Access.PUBLIC,
    "Public": Access.PUBLIC,
    "User": Access.USER,
    "Agent": Access.AGENT,
    "UserOrAgent": Access.USER_OR_AGENT,
}
SERVER_CPU = 0
CLIENT_CPU = 1


def echo_method(name: str) -> str:
    """The full method path of one echo method."""
    return f"/{ECHO_SERVICE}/{name}"


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def _cpu_time(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return str(time.process_time()).encode()


def _echo_spec() -> ServerSpec:
    def register(server: grpc.aio.Server) -> None:
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(_cpu_time if name == "CpuTime" else _echo)
            for name in ECHO_ACCESS
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(ECHO_SERVICE, handlers),)
        )

    return ServerSpec(
        name="echo",
        register=register,
        service_names=[ECHO_SERVICE],
        access={echo_method(name): level for name, level in ECHO_ACCESS.items()},
    )


def pin_to_cpu(cpu: int) -> None:
    """Keeps this process on one CPU when the machine has it (benches compare like with like)."""
    if hasattr(os, "sched_setaffinity") and cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {cpu})


async def _serve(config: AuthConfig) -> None:
    app = AuthApp(config)
    await asyncio.to_thread(app.open)
    server, port = await start_server(
        [app.spec(), _echo_spec()], verifier=app.verifier, tls=config.tls, port=0
    )
    print(json.dumps({"port": port}), flush=True)
    # The parent closes our stdin to stop us; EOF works even if it died without a word.
    await asyncio.to_thread(sys.stdin.read)
    await server.stop(grace=1)
    app.close()


def main(argv: list[str] | None = None) -> None:
    """Runs the bench server until standard input closes."""
    parser = argparse.ArgumentParser(prog="python -m bench.auth_server")
    parser.add_argument("pki_dir", type=Path)
    parser.add_argument("--env", default="{}", help="JSON object of extra AuthConfig fields")
    args = parser.parse_args(argv)
    pin_to_cpu(SERVER_CPU)
    configure_logging("auth", level="INFO", json=True, stream=open(os.devnull, "w"))  # noqa: SIM115
    pki = ensure_dev_pki(args.pki_dir)
    config = AuthConfig(
        # From the environment, not argv: a command line is readable by every local user.
        database_url=os.environ[DATABASE_URL_VARIABLE],
        tls=TlsFiles(cert=pki.server_cert, key=pki.server_key),
        key_encryption_key=secrets.token_bytes(32),
        host="127.0.0.1",
        port=0,
    )
    overrides = json.loads(args.env)
    if "sign_in_limits" in overrides:
        from services.auth.limits import SignInLimits  # Imported only when used.

        overrides["sign_in_limits"] = SignInLimits(**overrides["sign_in_limits"])
    asyncio.run(_serve(replace(config, **overrides)))


DATABASE_URL_VARIABLE = "SEVVO_BENCH_DATABASE_URL"


@dataclass
class BenchServer:
    """A running bench server process and where to reach it."""

    target: str
    ca_file: Path


@contextmanager
def bench_environment() -> Iterator[tuple[str, Path]]:
    """A throwaway Postgres and development PKI: the database URL and the PKI directory."""
    # The server runs as its own system user, which must enter its directory: a fresh
    # mkdtemp of its own rather than a subdirectory of another 0700 one.
    state = Path(tempfile.mkdtemp(prefix="sevvo-bench-auth-"))
    pg_dir = Path(tempfile.mkdtemp(prefix="sevvo-bench-pg-"))
    try:
        with EmbeddedPostgres(pg_dir, durable=False) as postgres:
            yield postgres.url, state / "pki"
    finally:
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(pg_dir, ignore_errors=True)


@contextmanager
def bench_server(database_url: str, pki_dir: Path, **config: Any) -> Iterator[BenchServer]:
    """Starts ``python -m bench.auth_server`` on a fresh database, and stops it on exit."""
    database = f"bench_{secrets.token_hex(6)}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(database)))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.auth_server",
            str(pki_dir),
            "--env",
            json.dumps(config),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, DATABASE_URL_VARIABLE: make_conninfo(database_url, dbname=database)},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("the bench server exited before serving")
        port = json.loads(line)["port"]
        yield BenchServer(f"localhost:{port}", ensure_dev_pki(pki_dir).ca_cert)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_bench(run: Callable[[str, Path], Coroutine[Any, Any, None]]) -> None:
    """Runs a bench's client on its own CPU against a throwaway Postgres and PKI."""
    pin_to_cpu(CLIENT_CPU)
    with bench_environment() as (database_url, pki_dir):
        asyncio.run(run(database_url, pki_dir))


@dataclass(frozen=True)
class Rate:
    """A closed-loop run's calls per second and the server's CPU time per call."""

    per_second: float
    cpu_us_per_call: float


async def server_cpu_seconds(channel: grpc.aio.Channel) -> float:
    """The bench server's process CPU time so far."""
    return float(await channel.unary_unary(echo_method("CpuTime"))(b""))


async def closed_loop_rate(
    channel: grpc.aio.Channel,
    call: Callable[[], Awaitable[object]],
    *,
    in_flight: int,
    seconds: float,
) -> Rate:
    """Calls per second with ``in_flight`` callers each starting a call as the last ends."""
    done = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def worker() -> None:
        nonlocal done
        while loop.time() < deadline:
            await call()
            done += 1

    cpu_before = await server_cpu_seconds(channel)
    started = loop.time()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = loop.time() - started
    cpu = await server_cpu_seconds(channel) - cpu_before
    return Rate(done / elapsed, cpu / max(done, 1) * 1e6)


if __name__ == "__main__":
    main()
