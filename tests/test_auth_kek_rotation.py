"""Rotating auth's key-encryption key against a real store: retired KEKs still open signing
keys, ``python -m services.auth rewrap`` moves them to the current KEK, and auth then starts
without the retired one; unknown KEKs and bad configuration fail clearly, never showing keys."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from devstack.pki import DevPki
from services.auth import rewrap
from services.auth.config import AuthConfig, load_key_encryption_keys
from services.auth.keys import (
    EDDSA,
    ES256,
    KeyEncryptionKey,
    KeyEncryptionKeys,
    SigningAlgorithm,
    SigningKeys,
    reseal,
)
from services.auth.store import SIGNING_KEYS, TEMPORAL_SIGNING_KEYS, AuthStore
from sevvo.runtime import config as c
from sevvo.runtime.errors import Unavailable
from sevvo.runtime.rewrap import rewrap_tables
from sevvo.runtime.sealing import CredentialsUnreadable, Sealed

ROOT = Path(__file__).resolve().parent.parent
OLD = b"o" * 32
NEW = b"n" * 32
OLD_ID = KeyEncryptionKey(OLD).key_id
NEW_ID = KeyEncryptionKey(NEW).key_id
TABLES = (SIGNING_KEYS, TEMPORAL_SIGNING_KEYS)


@pytest.fixture
def store(database_url: str) -> Iterator[AuthStore]:
    """auth's store, migrated on a fresh database."""
    store = AuthStore(database_url)
    store.open()
    try:
        yield store
    finally:
        store.close()


def _keys(store: AuthStore, keks: KeyEncryptionKeys, algorithm: SigningAlgorithm) -> SigningKeys:
    return SigningKeys(
        store,
        keks,
        max_token_ttl=timedelta(minutes=10),
        leeway=timedelta(seconds=10),
        refresh_interval=60,
        rotation_period=timedelta(days=30),
        algorithm=algorithm,
    )


def _seed(store: AuthStore, kek: bytes) -> None:
    """A first key in each key set, plus a pending one for EdDSA, all sealed under ``kek``."""
    for algorithm in (EDDSA, ES256):
        _keys(store, KeyEncryptionKeys(kek), algorithm).ensure_key()
    _keys(store, KeyEncryptionKeys(kek), EDDSA).rotate()


def _rows(database_url: str) -> list[tuple[str, str, str, bytes]]:
    """Every stored signing key: table, kid, kek_id, sealed private key."""
    with psycopg.connect(database_url) as conn:
        return [
            (table, kid, kek, bytes(blob))
            for table in TABLES
            for kid, kek, blob in conn.execute(
                f"select kid, kek_id, sealed_private_key from auth.{table} order by kid"
            ).fetchall()
        ]


def _private_keys(rows: list[tuple[str, str, str, bytes]], keks: dict[str, bytes]) -> list[bytes]:
    """Each row's private key, opened with the KEK its kek_id names."""
    return [KeyEncryptionKey(keks[kek]).open(blob, kid.encode()) for _, kid, kek, blob in rows]


def _verifies(store: AuthStore, algorithm: SigningAlgorithm, token: str) -> str:
    """Checks ``token`` against its key as published in the store; returns that key's kid."""
    kid = jwt.get_unverified_header(token)["kid"]
    (row,) = [r for r in store.signing_keys(algorithm.table) if r.kid == kid]
    public: Any = (
        Ed25519PublicKey.from_public_bytes(row.public_key)
        if algorithm is EDDSA
        else ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), row.public_key)
    )
    assert jwt.decode(token, public, algorithms=[algorithm.name]) == {"sub": "ada"}
    return str(kid)


def _no_key_material(text: str, keys: list[bytes]) -> None:
    for key in keys:
        for form in (key.hex(), base64.b64encode(key).decode(), repr(key)[2:-1]):
            assert form not in text


def test_keys_sealed_under_a_retired_kek_still_sign_and_new_ones_seal_under_the_current(
    store: AuthStore, database_url: str
) -> None:
    """With the old KEK retired, keys it sealed sign tokens that verify; a rotation seals the
    new key under the current KEK; without the old KEK the keys refuse, naming its id."""
    _seed(store, OLD)
    before = _rows(database_url)
    rotated = KeyEncryptionKeys(NEW, [OLD])
    for algorithm in (EDDSA, ES256):
        keys = _keys(store, rotated, algorithm)
        keys.ensure_key()
        kid = _verifies(store, algorithm, keys.sign({"sub": "ada"}))
        assert kid in {row[1] for row in before if row[0] == algorithm.table}
    new_kid = _keys(store, rotated, ES256).rotate()
    assert (TEMPORAL_SIGNING_KEYS, new_kid, NEW_ID) in {r[:3] for r in _rows(database_url)}

    with pytest.raises(Unavailable) as refused:
        _keys(store, KeyEncryptionKeys(NEW), EDDSA).ensure_key()
    assert refused.value.reason == "SIGNING_KEY_SEALED_ELSEWHERE"
    assert OLD_ID in refused.value.message
    assert "SEVVO_AUTH_RETIRED_KEKS" in refused.value.message


def _write_env(
    tmp_path: Path, database_url: str, pki: DevPki, retired: str | None
) -> dict[str, str]:
    """A deployed auth's environment: the current KEK is NEW, ``retired`` the retired file."""
    (tmp_path / "db").write_text(database_url)
    (tmp_path / "kek").write_text(base64.b64encode(NEW).decode())
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SEVVO_DATABASE_URL_FILE": str(tmp_path / "db"),
        "SEVVO_TLS_CERT_FILE": str(pki.server_cert),
        "SEVVO_TLS_KEY_FILE": str(pki.server_key),
        "SEVVO_AUTH_KEK_FILE": str(tmp_path / "kek"),
        "SEVVO_LOG_LEVEL": "debug",
    }
    if retired is not None:
        (tmp_path / "retired").write_text(retired)
        env["SEVVO_AUTH_RETIRED_KEKS_FILE"] = str(tmp_path / "retired")
    return env


def _auth(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.auth", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_rewrap_moves_every_key_to_the_current_kek_and_auth_then_starts_without_the_old(
    store: AuthStore, database_url: str, dev_pki: DevPki, tmp_path: Path
) -> None:
    """`python -m services.auth rewrap` re-seals both key sets under SEVVO_AUTH_KEK, printing
    counts and never keys; then auth starts (and rotates) with no retired KEK configured, and
    the keys are the same keys."""
    _seed(store, OLD)
    before = _rows(database_url)
    private = _private_keys(before, {OLD_ID: OLD})
    shown = [OLD, NEW, *private]
    retired = f"# rotated out 2026-12\n{base64.b64encode(OLD).decode()}\n"

    done = _auth(
        _write_env(tmp_path, database_url, dev_pki, retired), "rewrap", "--batch-size", "1"
    )
    assert done.returncode == 0, done.stderr
    assert f"re-sealed 2 signing keys, 1 temporal signing keys under {NEW_ID}" in done.stdout
    _no_key_material(done.stdout + done.stderr, shown)
    after = _rows(database_url)
    assert {kek for _, _, kek, _ in after} == {NEW_ID}
    assert [r[:2] for r in after] == [r[:2] for r in before]
    assert _private_keys(after, {NEW_ID: NEW}) == private

    again = _auth(_write_env(tmp_path, database_url, dev_pki, ""), "rewrap")
    assert again.returncode == 0, again.stderr
    assert "re-sealed 0 signing keys, 0 temporal signing keys" in again.stdout
    started = _auth(_write_env(tmp_path, database_url, dev_pki, None), "rotate-signing-key")
    assert started.returncode == 0, started.stderr
    _no_key_material(started.stdout + started.stderr, shown)


def test_rewrap_refuses_a_key_under_an_unknown_kek_naming_it_and_changes_nothing(
    store: AuthStore, database_url: str, dev_pki: DevPki, tmp_path: Path
) -> None:
    """A row sealed under a KEK that is neither current nor retired stops rewrap (exit 1)
    before any row changes, naming that kek_id; no key appears in the output."""
    _seed(store, OLD)
    _keys(store, KeyEncryptionKeys(NEW, [OLD]), ES256).rotate()  # One row already under NEW.
    before = _rows(database_url)
    failed = _auth(_write_env(tmp_path, database_url, dev_pki, None), "rewrap")
    assert failed.returncode == 1
    assert repr(OLD_ID) in failed.stderr
    assert "SEALED_KEY_UNKNOWN" in failed.stderr
    assert "SEVVO_AUTH_RETIRED_KEKS" in failed.stderr
    assert _rows(database_url) == before
    _no_key_material(failed.stdout + failed.stderr, [OLD, NEW])


def test_rewrap_logs_counts_only_and_names_a_row_that_does_not_open(
    store: AuthStore, database_url: str
) -> None:
    """In-process, the walk logs counts and key ids but no key; a row whose sealed bytes do not
    open under its KEK fails naming the row's kid (SEALED_DATA_MISMATCH)."""
    _seed(store, OLD)
    private = _private_keys(_rows(database_url), {OLD_ID: OLD})
    keyring = KeyEncryptionKeys(NEW, [OLD]).keyring()
    with structlog.testing.capture_logs() as logged:
        report = rewrap_tables(rewrap.sealed_tables(store), keyring, scheme=rewrap.KEK_SCHEME)
    assert report.done
    assert report.moved == {"signing keys": 2, "temporal signing keys": 1}
    _no_key_material(repr(logged) + repr(keyring), [OLD, NEW, *private])

    with psycopg.connect(database_url) as conn:
        kid = conn.execute(
            "update auth.temporal_signing_keys set kek_id = %s, sealed_private_key = %s"
            " returning kid",
            (OLD_ID, secrets.token_bytes(60)),
        ).fetchone()
    assert kid is not None
    with pytest.raises(CredentialsUnreadable) as caught:
        rewrap_tables(rewrap.sealed_tables(store), keyring, scheme=rewrap.KEK_SCHEME)
    assert caught.value.reason == "SEALED_DATA_MISMATCH"
    assert f"kid {kid[0]}" in caught.value.message


def test_reseal_keeps_a_row_already_under_the_primary_and_refuses_an_unknown_kek() -> None:
    """reseal returns a row under the primary unchanged and names an unconfigured kek_id."""
    keyring = KeyEncryptionKeys(NEW, [OLD]).keyring()
    current = Sealed(NEW_ID, KeyEncryptionKey(NEW).seal(b"private", b"kid"))
    assert reseal(keyring, current, b"kid") is current
    moved = reseal(keyring, Sealed(OLD_ID, KeyEncryptionKey(OLD).seal(b"private", b"kid")), b"kid")
    assert moved.key_id == NEW_ID
    assert KeyEncryptionKey(NEW).open(moved.blob, b"kid") == b"private"
    with pytest.raises(CredentialsUnreadable) as caught:
        reseal(KeyEncryptionKeys(NEW).keyring(), Sealed(OLD_ID, b"x" * 40), b"kid")
    assert caught.value.reason == "SEALED_KEY_UNKNOWN"
    assert OLD_ID in caught.value.message


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


OTHER = b"t" * 32


@pytest.mark.parametrize(
    ("retired", "problem"),
    [
        ("not base64!!", "entry 1 must be base64"),
        (f"{_b64(OTHER)},{_b64(b'short')}", "entry 2 must decode to 32 bytes, got 5"),
        (f"{_b64(OLD)}\n{_b64(OTHER)} {_b64(OLD)}", "entry 3 repeats entry 1"),
    ],
    ids=["not-base64", "short", "repeated"],
)
def test_bad_retired_keks_name_the_variable_and_entry_never_the_value(
    retired: str, problem: str
) -> None:
    """Malformed SEVVO_AUTH_RETIRED_KEKS fails at start naming the variable and the entry's
    position; no key (base64 or raw) appears in the message."""
    env = {"SEVVO_AUTH_KEK": _b64(NEW), "SEVVO_AUTH_RETIRED_KEKS": retired}
    with pytest.raises(c.ConfigError) as caught:
        load_key_encryption_keys(env)
    message = str(caught.value)
    assert message.startswith("SEVVO_AUTH_RETIRED_KEKS ")
    assert problem in message
    assert retired.split(",")[0].split()[0] not in message
    _no_key_material(message, [OLD, NEW, OTHER])


def test_retired_keks_file_may_be_empty_or_list_several_and_stays_out_of_repr(
    tmp_path: Path, dev_pki: DevPki
) -> None:
    """An empty retired-KEKs file means none; a file lists keys one per line or comma-separated
    (the current KEK among them is dropped); an unreadable one is named; AuthConfig's repr
    shows no KEK."""
    env = _write_env(tmp_path, "postgresql://auth@db/sevvo", dev_pki, "")
    config = AuthConfig.load(env)
    assert config.retired_key_encryption_keys == ()
    (tmp_path / "retired").write_text(f"{_b64(OLD)}, {_b64(OTHER)}\n{_b64(NEW)}\n")
    config = AuthConfig.load(env)
    assert config.retired_key_encryption_keys == (OLD, OTHER)  # The current one is dropped.
    _no_key_material(repr(config), [OLD, NEW, OTHER])
    assert OLD_ID in repr(KeyEncryptionKeys(NEW, config.retired_key_encryption_keys))
    env["SEVVO_AUTH_RETIRED_KEKS_FILE"] = str(tmp_path / "missing")
    with pytest.raises(c.ConfigError, match="SEVVO_AUTH_RETIRED_KEKS_FILE names"):
        AuthConfig.load(env)


def test_rewrap_command_with_bad_retired_keks_exits_2_naming_the_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The rewrap command's own loader checks the KEKs as auth does: exit 2, variable named."""
    env = {
        "SEVVO_DATABASE_URL": "postgresql://auth@db/sevvo",
        "SEVVO_AUTH_KEK": _b64(NEW),
        "SEVVO_AUTH_RETIRED_KEKS": _b64(b"short"),
    }
    assert rewrap.main(env) == 2
    err = capsys.readouterr().err
    assert "SEVVO_AUTH_RETIRED_KEKS entry 1" in err
    assert _b64(b"short") not in err
