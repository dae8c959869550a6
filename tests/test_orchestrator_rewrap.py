"""The orchestrator's rewrap against the real store: payload and proof keys re-sealed under the
keyring's primary key, idempotent, all-or-nothing on a missing key, safe twice at once."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import structlog

from services.orchestrator.__main__ import main
from services.orchestrator.payload_keys import (
    KeyPolicy,
    PayloadKeys,
    RotationReason,
    payload_key_aad,
)
from services.orchestrator.proofs import ProofKeys, proof_key_aad
from services.orchestrator.rewrap import sealed_tables
from services.orchestrator.store import OrchestratorStore
from sevvo.runtime import audit
from sevvo.runtime.rewrap import RewrapReport, rewrap_tables
from sevvo.runtime.sealing import CredentialsUnreadable, Keyring, Sealed, unseal, write_keyring_file

ROOT = Path(__file__).resolve().parent.parent
POLICY = KeyPolicy(timedelta(days=30), timedelta(days=1), timedelta(minutes=7))
OLD = Keyring.generate("k1")
NEW = OLD.with_new_primary("k2")
ORGS = [uuid.uuid4() for _ in range(3)]


@pytest.fixture
def store(orchestrator_store: OrchestratorStore) -> OrchestratorStore:
    """The orchestrator's store on a fresh database (tests/plugins/domains.py)."""
    return orchestrator_store


def _seed(store: OrchestratorStore, keyring: Keyring) -> None:
    """Three orgs' payload keys (one org rotated once) and two proof keys, sealed by ``keyring``."""
    keys = PayloadKeys(store, keyring, POLICY)
    for org in ORGS:
        keys.fresh(org)
    keys.rotate(ORGS[0], audit.SYSTEM, RotationReason.OPERATOR)
    proofs = ProofKeys(store, keyring)
    proofs.signer()
    proofs.rotate()


def _rows(database_url: str) -> list[tuple[Any, ...]]:
    """Every sealed key as stored: table, ids, kek_id, sealed bytes."""
    with psycopg.connect(database_url) as conn:
        payload = conn.execute(
            "select 'payload', org_id::text, key_id, kek_id, sealed_key"
            " from orchestrator.payload_keys order by 2, 3"
        ).fetchall()
        proof = conn.execute(
            "select 'proof', '', key_id, kek_id, sealed_key from orchestrator.proof_keys order by 3"
        ).fetchall()
    return [(*row[:4], bytes(row[4])) for row in payload + proof]


def _opened(rows: list[tuple[Any, ...]], keyring: Keyring) -> dict[tuple[str, str], bytes]:
    """Each stored key unsealed with ``keyring``, by (org, key id)."""
    opened = {}
    for kind, org, key_id, kek_id, blob in rows:
        aad = (
            payload_key_aad(uuid.UUID(org), key_id) if kind == "payload" else proof_key_aad(key_id)
        )
        opened[(org, key_id)] = unseal(keyring, Sealed(kek_id, blob), aad)
    return opened


def test_rewrap_reseals_every_key_under_the_primary_and_the_keys_stay_the_same(
    store: OrchestratorStore, database_url: str
) -> None:
    """Keys under the old primary move to the new one and open, without the old key, to the
    same bytes; payload keys and the proof signer still work from the store."""
    _seed(store, OLD)
    before = _opened(_rows(database_url), OLD)
    signer = ProofKeys(store, OLD).signer()

    report = rewrap_tables(sealed_tables(store), NEW, batch_size=2)

    assert report == RewrapReport(
        "k2", {"payload keys": 4, "proof keys": 2}, {"payload keys": {}, "proof keys": {}}
    )
    rows = _rows(database_url)
    assert {row[3] for row in rows} == {"k2"}
    only_new = NEW.without("k1")
    assert _opened(rows, only_new) == before
    current = store.payload_keys(ORGS[0])[-1].key_id
    assert PayloadKeys(store, only_new, POLICY).fresh(ORGS[0]).current_id == current
    assert ProofKeys(store, only_new).signer().key_id == signer.key_id


def test_a_second_rewrap_moves_nothing(store: OrchestratorStore, database_url: str) -> None:
    """Run again, rewrap finds nothing to do and changes no row."""
    _seed(store, OLD)
    rewrap_tables(sealed_tables(store), NEW)
    after_first = _rows(database_url)
    report = rewrap_tables(sealed_tables(store), NEW)
    assert report.moved == {"payload keys": 0, "proof keys": 0}
    assert report.done
    assert _rows(database_url) == after_first


def test_a_key_missing_from_the_keyring_is_named_and_nothing_changes(
    store: OrchestratorStore, database_url: str
) -> None:
    """One org's key sealed under a key the keyring lacks: rewrap fails naming that key id
    and leaves every row, the rewrappable ones too, as it was."""
    _seed(store, OLD)
    PayloadKeys(store, Keyring.generate("k0"), POLICY).fresh(uuid.uuid4())
    before = _rows(database_url)
    with pytest.raises(CredentialsUnreadable) as raised:
        rewrap_tables(sealed_tables(store), NEW)
    assert raised.value.reason == "SEALED_KEY_UNKNOWN"
    assert "'k0'" in raised.value.message
    assert "1 payload keys under 'k0'" in raised.value.message
    assert _rows(database_url) == before


def test_two_rewraps_at_once_reseal_each_key_exactly_once(
    store: OrchestratorStore, database_url: str
) -> None:
    """Two rewraps started together (each with its own pool) share the rows between them:
    every key is re-sealed once, both report nothing left, every key still opens."""
    _seed(store, OLD)
    before = _opened(_rows(database_url), OLD)
    other = OrchestratorStore(database_url)
    other.open()
    start = threading.Barrier(2)
    reports: list[RewrapReport] = []

    def run(on: OrchestratorStore) -> None:
        start.wait()
        reports.append(rewrap_tables(sealed_tables(on), NEW, batch_size=1, pause_seconds=0.05))

    try:
        threads = [threading.Thread(target=run, args=(s,)) for s in (store, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        other.close()
    assert len(reports) == 2
    assert all(report.done for report in reports)
    assert sum(r.moved["payload keys"] for r in reports) == 4
    assert sum(r.moved["proof keys"] for r in reports) == 2
    assert _opened(_rows(database_url), NEW.without("k1")) == before


def test_rewrap_logs_counts_and_key_ids_only(store: OrchestratorStore, database_url: str) -> None:
    """Nothing rewrap logs holds a keyring key or a payload or proof key."""
    _seed(store, OLD)
    secrets = [*NEW.keys.values(), *_opened(_rows(database_url), OLD).values()]
    with structlog.testing.capture_logs() as logged:
        rewrap_tables(sealed_tables(store), NEW, batch_size=3)
    assert [e["event"] for e in logged] == [*["rewrap batch"] * 3, "rewrap finished"]
    _assert_no_secret(repr(logged), secrets)


def _assert_no_secret(text: str, secrets: list[bytes]) -> None:
    for secret in secrets:
        for form in (secret.hex(), base64.b64encode(secret).decode(), repr(secret)[2:-1]):
            assert form not in text


def _run_command(
    tmp_path: Path, keyring: Keyring, database_url: str
) -> subprocess.CompletedProcess[str]:
    write_keyring_file(tmp_path / "keyring.json", keyring)
    (tmp_path / "url").write_text(database_url)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SEVVO_DATABASE_URL_FILE": str(tmp_path / "url"),
        "SEVVO_ORCHESTRATOR_KEYRING_FILE": str(tmp_path / "keyring.json"),
        "SEVVO_LOG_LEVEL": "debug",
    }
    return subprocess.run(
        [sys.executable, "-m", "services.orchestrator", "rewrap", "--batch-size", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_rewrap_command_reports_counts_then_fails_on_a_missing_key(
    store: OrchestratorStore, database_url: str, tmp_path: Path
) -> None:
    """`python -m services.orchestrator rewrap` with only the database URL and keyring prints
    counts and exits 0; with the old key dropped too early it exits 1 naming it, and neither
    run prints key material."""
    _seed(store, OLD)
    secrets = [*NEW.keys.values(), *_opened(_rows(database_url), OLD).values()]
    done = _run_command(tmp_path, NEW, database_url)
    assert done.returncode == 0, done.stderr
    assert "re-sealed 4 payload keys, 2 proof keys under k2" in done.stdout
    _assert_no_secret(done.stdout + done.stderr, secrets)

    with psycopg.connect(database_url) as conn:
        conn.execute("update orchestrator.proof_keys set kek_id = 'k1'")
    failed = _run_command(tmp_path, NEW.without("k1"), database_url)
    assert failed.returncode == 1
    assert "'k1'" in failed.stderr
    assert "SEALED_KEY_UNKNOWN" in failed.stderr
    _assert_no_secret(failed.stdout + failed.stderr, secrets)


@pytest.mark.parametrize("size", ["0", "10001", "many"])
def test_batch_size_out_of_range_is_a_usage_error(size: str) -> None:
    """--batch-size outside 1-10000 stops the command with argparse's exit code 2."""
    with pytest.raises(SystemExit) as exited:
        main(["rewrap", "--batch-size", size])
    assert exited.value.code == 2
