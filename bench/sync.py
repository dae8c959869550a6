"""Sync throughput and memory: the agent's sync against ``COPY ... TO STDOUT | COPY ... FROM
STDIN`` piped between the same two databases by two psql processes.

Each moves the same model (text, numeric, timestamptz, jsonb, bytea, arrays, nulls) from a
source database into a destination database on one throwaway embedded server, in binary COPY
format, run by run in turn so drift hits all alike, each run after a CHECKPOINT and a sync of
the kernel's dirty pages, autovacuum off. Three streams:

- the pipe, into a table truncated before the clock starts (the issue's baseline; target: the
  sync at 0.9x of its rows/s or better);
- the pipe replacing the rows in one transaction (TRUNCATE and COPY under ``psql -1``): the old
  rows stay until the commit, as the sync keeps them (readable, even, which TRUNCATE's lock
  does not allow);
- the sync, which reads its source in a REPEATABLE READ snapshot, loads a staging table and
  swaps it in, all in one transaction.

The sync runs in a process of its own so its peak RSS is its own: growth is measured against
the same process importing the engine and not syncing (target: under 100 MB at 1M rows, none
from 1M to 5M).

``python -m bench sync`` (1,000,000 rows); ``python -m bench.sync --rows 5000000`` for more.
"""

from __future__ import annotations

import argparse
import json
import os
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
# Autovacuum is off for the same reason: here it vacuumed the previous run's 5M freshly
# inserted rows inside the next timed run, on the same two cores, and slowed that run by up to
# 70 %. Each side's own after-cost is timed instead: a VACUUM of the table it just loaded.
SERVER_SETTINGS = {"max_wal_size": "16GB", "checkpoint_timeout": "1h", "autovacuum": "off"}
QUERY = "select id, note, amount, placed_at, doc, raw, tags from public.orders"
COLUMNS = (
    "id bigint primary key, note text, amount numeric(12,2), placed_at timestamptz,"
    " doc jsonb, raw bytea, tags text[]"
)
# The streams timed, by key, with the label each is printed under.
_STREAMS = {
    "pipe": "pipe (psql | psql)",
    "pipe, one transaction": "pipe, psql -1",
    "sync": "sync (agent)",
}
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
    """Writes out the server's dirty pages, and the kernel's, so the next timed run does not
    pay for them."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("checkpoint")
    # With fsync off the checkpoint only hands its pages to the kernel, whose writeback of
    # gigabytes of them then throttled whichever run came next (here up to 2x slower).
    os.sync()


def vacuum(database: str, table: str) -> float:
    """Seconds of a VACUUM of ``table``: the maintenance a load leaves behind it."""
    with psycopg.connect(database, autocommit=True) as conn:
        started = time.monotonic()
        conn.execute(sql.SQL("vacuum {}").format(sql.Identifier(*table.split("."))))
        return time.monotonic() - started


def _pipe(source: str, destination: str, *, one_transaction: bool = False) -> float:
    """Seconds for psql | psql, binary COPY, into a table truncated first: before the clock
    starts, or with ``one_transaction`` in the COPY's own transaction."""
    with psycopg.connect(destination, autocommit=True) as conn:
        conn.execute("create schema if not exists pipe")
        conn.execute(f"create table if not exists pipe.orders ({COLUMNS})")
        if not one_transaction:
            conn.execute("truncate pipe.orders")
    checkpoint(destination)
    psql = str(postgres_bin_dir() / "psql")
    into = ["-1", "-c", "truncate pipe.orders"] if one_transaction else []
    started = time.monotonic()
    out = subprocess.Popen(
        [psql, "-X", "-q", "-d", source, "-c", f"\\copy ({QUERY}) to stdout (format binary)"],
        stdout=subprocess.PIPE,
    )
    loaded = subprocess.run(
        [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", destination, *into, "-c", _PIPE_INTO],
        stdin=out.stdout,
        check=False,
    )
    assert out.stdout is not None
    out.stdout.close()
    if out.wait() != 0 or loaded.returncode != 0:
        raise SystemExit("the psql pipe failed")
    return time.monotonic() - started


def run_child(script: str, source: str, target: str, run: bool) -> dict[str, float]:
    """Runs a bench's sync ``script`` in a process of its own (so its peak RSS is its own),
    syncing or only importing; returns the JSON it prints last."""
    done = subprocess.run(
        [sys.executable, "-c", script, source, target, "run" if run else "idle", QUERY],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        # Not CalledProcessError: its message would print the arguments, passwords and all.
        raise SystemExit(f"the bench's sync process failed:\n{done.stderr[-2000:]}")
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
    """Seeds ``rows`` rows, then runs the three streams in turn; prints rates and ratios.

    The spread between runs of one stream is this VM's, not the code's: its hypervisor takes
    back guest memory the moment the kernel frees it (free page reporting), so a run whose
    page-cache writes land on such pages faults them back in. A slow run's time was the
    kernel's (its copy into page-cache pages: 23 % of the samples in one 20 s run, under 2 % in
    a 12 s run of the same stream). Medians of three or more rounds, then.
    """
    configure_logging("bench", level="WARNING", json=True)
    directory = Path(tempfile.mkdtemp(prefix="sevvo-bench-sync-"))
    directory.chmod(0o755)
    try:
        with EmbeddedPostgres(directory, durable=False, settings=SERVER_SETTINGS) as server:
            source, destination = _database(server, "source"), _database(server, "destination")
            _seed(source, rows)
            idle = run_child(_CHILD, source, destination, run=False)
            runs: dict[str, list[float]] = {name: [] for name in _STREAMS}
            after: dict[str, list[float]] = {"pipe": [], "sync": []}
            peaks, size = [], 0
            for _ in range(rounds):
                runs["pipe"].append(_pipe(source, destination))
                after["pipe"].append(vacuum(destination, "pipe.orders"))
                runs["pipe, one transaction"].append(
                    _pipe(source, destination, one_transaction=True)
                )
                checkpoint(destination)
                result = run_child(_CHILD, source, destination, run=True)
                assert result["rows"] == rows, result
                runs["sync"].append(result["seconds"])
                peaks.append(result["peak_kb"])
                size = int(result["bytes"])
                after["sync"].append(vacuum(destination, "bench.orders"))
        median = {name: statistics.median(seconds) for name, seconds in runs.items()}
        print(f"rows: {rows:,}, binary COPY stream: {size / 1e6:.1f} MB, {rounds} rounds each")
        print_rates(rows, size, [(_STREAMS[name], median[name]) for name in _STREAMS])
        print("spread (s): " + "; ".join(f"{name} {_spread(runs[name])}" for name in _STREAMS))
        print(
            f"sync / pipe throughput: {median['pipe'] / median['sync']:.2f}x"
            "  (target: at least 0.9x)"
        )
        print(
            "sync / pipe replacing in one transaction:"
            f" {median['pipe, one transaction'] / median['sync']:.2f}x"
        )
        print(
            "VACUUM of the table just loaded (s): pipe "
            f"{statistics.median(after['pipe']):.2f}, sync {statistics.median(after['sync']):.2f}"
            " (the sync loads its staging table frozen)"
        )
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
