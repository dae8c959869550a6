"""What reading an org's current payload key before every workflow start costs.

Every orchestrator replica now asks the store for the org's keys before it starts work, so
work started after a rotation uses the new key whichever replica starts it. Measured in one
run against the floor it cannot beat: ``select 1`` through the same pool, one round trip.
``fresh`` is the read the start path makes (keys already unsealed, nothing changed);
``after rotation`` is the first read once another replica rotated (one new key to unseal).
For scale, a preview end to end is tens of milliseconds (``python -m bench preview``).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from devstack.postgres import EmbeddedPostgres
from services.orchestrator.payload_keys import KeyPolicy, PayloadKeys, RotationReason
from services.orchestrator.store import OrchestratorStore
from sevvo.runtime import audit
from sevvo.runtime.logs import configure_logging
from sevvo.runtime.sealing import Keyring

ROUNDS = 2000
ROTATIONS = 200


def _median_us(action: Callable[[], object], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def _run(url: str) -> None:
    store = OrchestratorStore(url)
    store.open()
    try:
        policy = KeyPolicy(timedelta(days=30), timedelta(days=30), timedelta(minutes=7))
        keyring = Keyring.generate()
        keys = PayloadKeys(store, keyring, policy)
        other = PayloadKeys(store, keyring, policy)
        org = uuid.uuid4()
        keys.fresh(org)

        def select_one() -> None:
            with store.connection() as conn:
                conn.execute("select 1").fetchone()

        floor = _median_us(select_one, ROUNDS)
        fresh = _median_us(lambda: keys.fresh(org), ROUNDS)
        after = []
        for _ in range(ROTATIONS):  # A new org each time: two keys, as after a first rotation.
            rotated_org = uuid.uuid4()
            keys.fresh(rotated_org)
            other.rotate(rotated_org, audit.SYSTEM, RotationReason.OPERATOR)
            started = time.perf_counter()
            keys.fresh(rotated_org)
            after.append(time.perf_counter() - started)
        rotated = statistics.median(after) * 1e6
    finally:
        store.close()
    print(f"select 1 (floor)          {floor:8.0f} µs")
    print(f"fresh (before each start) {fresh:8.0f} µs  {fresh / floor:5.2f}x floor")
    print(f"fresh after a rotation    {rotated:8.0f} µs  {rotated / floor:5.2f}x floor")


def main() -> None:
    """Runs the benchmark against an embedded Postgres."""
    configure_logging("bench", level="WARNING", json=True)
    directory = Path(tempfile.mkdtemp(prefix="sevvo-bench-keys-"))
    try:
        with EmbeddedPostgres(directory, durable=False) as server:
            _run(server.url)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
