"""Dynamic credential cost: a mint + revoke cycle against a bare CREATE ROLE + DROP ROLE.

Both run in the same run, on the same throwaway embedded server, as the same CREATEROLE role
over one reused connection, alternating sample by sample so drift hits both alike. The
baseline is the least a per-workload role can cost (its plaintext password is hashed by the
server); the ratio is what staging, the client-side SCRAM verifier, the server-clock expiry,
the self-grant and session termination add. Target: p50 within 2x.

Both sides pay one PBKDF2 on the server, and it dominates: the baseline's to hash the
plaintext, mint's because CREATE ROLE checks that a given verifier is not that of an empty
password (user.c, plain_crypt_verify). Mint adds one on the client for the verifier.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from agent import dynamic_credentials as dc
from agent.postgres_probe import connect
from devstack.postgres import EmbeddedPostgres
from sevvo.connections.v1.connections_pb2 import SSL_MODE_DISABLE, PostgresCredentials
from sevvo.runtime.logs import configure_logging

WARMUP = 20
SAMPLES = 200
ADMIN = "sevvo_bench_admin"
GROUP = "sevvo_bench_readers"


def _provision(server: EmbeddedPostgres) -> PostgresCredentials:
    """The customer's side, done by the superuser: a CREATEROLE role and a read-only group."""
    password = dc.generate_password()
    with psycopg.connect(server.url, autocommit=True) as su:
        admin, group = sql.Identifier(ADMIN), sql.Identifier(GROUP)
        verifier = sql.Literal(dc.scram_verifier(su, password, ADMIN))
        su.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(admin, verifier))
        su.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(group))
        su.execute(sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(group, admin))
        su.execute("CREATE TABLE t (id int PRIMARY KEY)")
        su.execute(sql.SQL("GRANT SELECT ON t TO {}").format(group))
    return PostgresCredentials(
        host=server.host,
        port=server.port,
        database="postgres",
        username=ADMIN,
        password=password,
        ssl_mode=SSL_MODE_DISABLE,
    )


async def _cycle(admin: psycopg.AsyncConnection[TupleRow], creation: tuple[str, ...]) -> float:
    started = time.perf_counter()
    minted = await dc.mint(admin, creation=creation, ttl=timedelta(minutes=5), purpose="bench")
    await dc.revoke(admin, minted.name)
    return (time.perf_counter() - started) * 1000


async def _bare(admin: psycopg.AsyncConnection[TupleRow]) -> float:
    name = sql.Identifier(dc.role_name("bare"))
    password = sql.Literal(dc.generate_password())
    started = time.perf_counter()
    await admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(name, password))
    await admin.execute(sql.SQL("DROP ROLE {}").format(name))
    return (time.perf_counter() - started) * 1000


def _per_call_ms(call: Callable[[], object], calls: int = 50) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) * 1000 / calls


def _p(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


async def _run(server: EmbeddedPostgres) -> None:
    credentials = _provision(server)
    creation = dc.default_creation(GROUP)
    admin = await connect(credentials, connect_timeout=10)
    version = admin.info.server_version
    try:
        for _ in range(WARMUP):
            await _cycle(admin, creation)
            await _bare(admin)
        cycles: list[float] = []
        bare: list[float] = []
        for _ in range(SAMPLES):
            cycles.append(await _cycle(admin, creation))
            bare.append(await _bare(admin))
        scram_ms = _per_call_ms(lambda: dc.scram_verifier(admin, dc.generate_password(), ADMIN))
        libpq_ms = _per_call_ms(
            lambda: admin.pgconn.encrypt_password(
                dc.generate_password().encode(), ADMIN.encode(), b"scram-sha-256"
            )
        )
    finally:
        await admin.close()
    print(f"server: PostgreSQL {version // 10000}.{version % 10000}, {SAMPLES} samples each")
    for label, samples in (("bare CREATE+DROP ROLE", bare), ("mint + revoke", cycles)):
        print(f"{label:>24}: p50 {_p(samples, 50):6.2f} ms   p95 {_p(samples, 95):6.2f} ms")
    ratio = _p(cycles, 50) / _p(bare, 50)
    print(f"{'ratio (p50)':>24}: {ratio:.2f}x (target <= 2x)")
    print(f"{'SCRAM verifier, hashlib':>24}: {scram_ms:.2f} ms (off the event loop in mint)")
    print(f"{'SCRAM verifier, libpq':>24}: {libpq_ms:.2f} ms (PQencryptPasswordConn, for scale)")


def main() -> None:
    """Starts a throwaway server, measures both cycles, prints p50/p95 and the p50 ratio."""
    configure_logging("bench", level="WARNING", json=True)
    directory = Path(tempfile.mkdtemp(prefix="sevvo-bench-dyn-"))
    try:
        with EmbeddedPostgres(directory, durable=False) as server:
            asyncio.run(_run(server))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
