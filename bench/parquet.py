"""Parquet sync throughput and memory: ``sync_to_parquet`` against the read side alone,
``COPY (query) TO STDOUT`` by psql into /dev/null, from the same database.

Both read the same model (text, numeric, timestamptz, jsonb, bytea, arrays, nulls; bench/sync.py's)
from one throwaway embedded server, alternating run by run so drift hits both alike. The
sync also reads in a REPEATABLE READ snapshot through a server-side cursor, turns rows into
Arrow arrays, writes a Parquet row group per batch, fsyncs and renames. MB/s are of the model's
COPY text stream (the same bytes for both). The sync runs in a process of its own so its peak RSS
is its own: growth is measured against the same process importing the engine and not syncing.

``python -m bench parquet`` (1,000,000 rows); ``python -m bench.parquet --rows 5000000`` for more.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.sync import QUERY, ROUNDS, _database, _seed, print_peak, print_rates, run_child
from devstack.postgres import EmbeddedPostgres, postgres_bin_dir
from sevvo.runtime.logs import configure_logging

_CHILD = """
import json, sys, time
from pathlib import Path
def peak_kb():
    # VmHWM starts again at exec; ru_maxrss would keep the parent's high-water mark.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
from agent.sync.parquet import sync_to_parquet
from agent.sync.plan import SyncPlan, TableName
source, directory, run = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "run"
started = time.monotonic()
report = None
if run:
    report = sync_to_parquet(source, directory, SyncPlan("bench", sys.argv[4],
                                                         TableName("bench", "orders")))
print(json.dumps({
    "seconds": time.monotonic() - started,
    "rows": report.rows if report else 0,
    "bytes": report.bytes if report else 0,
    "peak_kb": peak_kb(),
}))
"""


def _copy_out(source: str, into: str) -> float:
    """Seconds for psql's ``\\copy (query) to stdout`` into ``into``."""
    psql = str(postgres_bin_dir() / "psql")
    started = time.monotonic()
    with open(into, "wb") as sink:
        subprocess.run(
            [psql, "-X", "-q", "-d", source, "-c", f"\\copy ({QUERY}) to stdout"],
            stdout=sink,
            check=True,
        )
    return time.monotonic() - started


def measure(rows: int) -> None:
    """Seeds ``rows`` rows, then alternates COPY-out and sync runs; prints rates and ratios."""
    configure_logging("bench", level="WARNING", json=True)
    directory = Path(tempfile.mkdtemp(prefix="sevvo-bench-parquet-"))
    directory.chmod(0o755)
    files = directory / "files"
    files.mkdir()
    try:
        with EmbeddedPostgres(directory / "pg", durable=False) as server:
            source = _database(server, "source")
            _seed(source, rows)
            stream = directory / "stream.copy"
            _copy_out(source, str(stream))  # Once to a file: the stream's size.
            size = stream.stat().st_size
            stream.unlink()
            idle = run_child(_CHILD, source, str(files), run=False)
            copies, syncs, peaks, written = [], [], [], 0
            for _ in range(ROUNDS):
                copies.append(_copy_out(source, "/dev/null"))
                result = run_child(_CHILD, source, str(files), run=True)
                assert result["rows"] == rows, result
                syncs.append(result["seconds"])
                peaks.append(result["peak_kb"])
                written = int(result["bytes"])
        copied, synced = statistics.median(copies), statistics.median(syncs)
        print(
            f"rows: {rows:,}, COPY text stream: {size / 1e6:.1f} MB, Parquet file:"
            f" {written / 1e6:.1f} MB, {ROUNDS} rounds each"
        )
        print_rates(rows, size, [("COPY to /dev/null", copied), ("sync_to_parquet", synced)])
        print(f"parquet / COPY-out throughput: {copied / synced:.2f}x")
        print_peak(peaks, idle)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.parquet [--rows N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args(argv if argv is not None else [])
    measure(args.rows)


if __name__ == "__main__":
    main(sys.argv[1:])
