"""Sync throughput and memory: the agent's sync against ``COPY ... TO STDOUT | COPY ... FROM
STDIN`` piped between the same two databases by two psql processes.

Both move the same model (text, numeric, timestamptz, jsonb, bytea, arrays, nulls) from a
source database into a destination database on one throwaway embedded server, alternating
run by run so drift hits both alike, each run after a CHECKPOINT; both in binary COPY
format. The sync also reads its source in a REPEATABLE READ snapshot, loads a staging table and
swaps it in, all in one transaction. Target: at least 0.9x of the pipe's rows/s. The sync runs
in a process of its own so its peak RSS is its own: growth is measured against the same process
importing the engine and not syncing (target: under 100 MB at 1M rows, none from 1M to 5M).

``python -m bench sync`` (1,000,000 rows); ``python -m bench.sync --rows 5000000`` for more.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

from devstack.postgres import EmbeddedPostgres, postgres_bin_dir
from sevvo.runtime.logs import configure_logging

ROUNDS = 3
# A checkpoint that lands inside one timed run (max_wal_size is 1 GB by default, and 5M rows
# write more WAL than that) slowed that run alone by up to 40 % here: each run starts after a
# CHECKPOINT instead, with room for its WAL, so both sides are timed under the same conditions.
SERVER_SETTINGS = {"max_wal_size": "16GB", "checkpoint_timeout": "1h"}
QUERY = "select id, note, amount, placed_at, doc, raw, tags from public.orders"
COLUMNS = (
    "id bigint primary key, note text, amount numeric(12,2), placed_at timestamptz,"
    " doc jsonb, raw bytea, tags text[]"
)
_PIPE_INTO = "\\copy pipe.orders from stdin (format binary)"
_CHILD = """
import json, sys, time
def peak_kb():
    # VmHWM starts again at exec; ru_maxrss would keep the parent's high-water mark.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
from agent.sync.plan import SyncPlan, TableName
from agent.sync.postgres import sync
source, destination, run = sys.argv[1], sys.argv[2], sys.argv[3] == "run"
started = time.monotonic()
report = None
if run:
    report = sync(source, destination, SyncPlan("bench", sys.argv[4], TableName("bench", "orders"),
                  primary_key=("id",)))
print(json.dumps({
    "seconds": time.monotonic() - started,
    "rows": report.rows if report else 0,
    "bytes": report.bytes if report else 0,
    "peak_kb": peak_kb(),
}))
"""


def _database(server: EmbeddedPostgres, name: str) -> str:
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    return psycopg.conninfo.make_conninfo(server.url, dbname=name)


def _seed(source: str, rows: int) -> None:
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(f"create table orders ({COLUMNS})")
        conn.execute(
            "insert into orders select g, case when g %% 7 = 0 then null else 'note ' || g end,"
            " g * 1.25, '2026-01-01'::timestamptz + g * interval '1 second',"
            " jsonb_build_object('n', g, 'tag', 'x' || (g %% 100)),"
            " case when g %% 5 = 0 then null else decode(md5(g::text), 'hex') end,"
            " array['a' || (g %% 10), null, 'b'] from generate_series(1, %s) g",
            (rows,),
        )
        conn.execute("vacuum analyze orders")


def checkpoint(database: str) -> None:
    """Writes out the server's dirty pages, so the next timed run does not pay for them."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("checkpoint")


def _pipe(source: str, destination: str) -> float:
    """Seconds for psql | psql, binary COPY, into a table truncated first."""
    with psycopg.connect(destination, autocommit=True) as conn:
        conn.execute("create schema if not exists pipe")
        conn.execute(f"create table if not exists pipe.orders ({COLUMNS})")
        conn.execute("truncate pipe.orders")
    checkpoint(destination)
    psql = str(postgres_bin_dir() / "psql")
    started = time.monotonic()
    out = subprocess.Popen(
        [psql, "-X", "-q", "-d", source, "-c", f"\\copy ({QUERY}) to stdout (format binary)"],
        stdout=subprocess.PIPE,
    )
    into = subprocess.run(
        [psql, "-X", "-q", "-d", destination, "-c", _PIPE_INTO],
        stdin=out.stdout,
        check=True,
    )
    assert out.stdout is not None
    out.stdout.close()
    if out.wait() != 0 or into.returncode != 0:
        raise SystemExit("the psql pipe failed")
    return time.monotonic() - started


def run_child(script: str, source: str, target: str, run: bool) -> dict[str, float]:
    """Runs a bench's sync ``script`` in a process of its own (so its peak RSS is its own),
    syncing or only importing; returns the JSON it prints last."""
    done = subprocess.run(
        [sys.executable, "-c", script, source, target, "run" if run else "idle", QUERY],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def print_rates(rows: int, size: int, timings: list[tuple[str, float]]) -> None:
    """One line per labelled median: seconds, rows/s and MB/s of a ``size``-byte stream."""
    for label, seconds in timings:
        print(
            f"{label:20} {seconds:6.2f} s  {rows / seconds:12,.0f} rows/s"
            f"  {size / 1e6 / seconds:6.1f} MB/s"
        )


def print_peak(peaks: list[float], idle: dict[str, float], target: str = "") -> None:
    """The sync process's peak RSS and its growth over the same process not syncing."""
    growth = (max(peaks) - idle["peak_kb"]) / 1024
    print(
        f"agent peak RSS: {max(peaks) / 1024:.0f} MB, {growth:+.1f} MB over the same process"
        f" not syncing ({idle['peak_kb'] / 1024:.0f} MB){target}"
    )


def _spread(seconds: list[float]) -> str:
    return " ".join(f"{value:.2f}" for value in seconds)


def measure(rows: int, rounds: int = ROUNDS) -> None:
    """Seeds ``rows`` rows, then alternates pipe and sync runs; prints rates and ratios."""
    configure_logging("bench", level="WARNING", json=True)
    directory = Path(tempfile.mkdtemp(prefix="sevvo-bench-sync-"))
    directory.chmod(0o755)
    try:
        with EmbeddedPostgres(directory, durable=False, settings=SERVER_SETTINGS) as server:
            source, destination = _database(server, "source"), _database(server, "destination")
            _seed(source, rows)
            idle = run_child(_CHILD, source, destination, run=False)
            pipes, syncs, peaks, size = [], [], [], 0
            for _ in range(rounds):
                pipes.append(_pipe(source, destination))
                checkpoint(destination)
                result = run_child(_CHILD, source, destination, run=True)
                assert result["rows"] == rows, result
                syncs.append(result["seconds"])
                peaks.append(result["peak_kb"])
                size = int(result["bytes"])
        pipe, synced = statistics.median(pipes), statistics.median(syncs)
        print(f"rows: {rows:,}, binary COPY stream: {size / 1e6:.1f} MB, {rounds} rounds each")
        print_rates(rows, size, [("pipe (psql | psql)", pipe), ("sync (agent)", synced)])
        print(f"spread (s): pipe {_spread(pipes)}; sync {_spread(syncs)}")
        print(f"sync / pipe throughput: {pipe / synced:.2f}x  (target: at least 0.9x)")
        print_peak(peaks, idle, "  (target: under 100 MB)")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.sync [--rows N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args(argv if argv is not None else [])
    measure(args.rows, args.rounds)


if __name__ == "__main__":
    main(sys.argv[1:])
