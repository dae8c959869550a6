"""Envelope encryption of credential payloads: sealing, binding to a record, key rotation."""

from __future__ import annotations

import base64
import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sevvo.runtime.config import ConfigError
from sevvo.runtime.sealing import (
    CredentialsUnreadable,
    Keyring,
    Sealed,
    rewrap,
    seal,
    unseal,
    write_keyring_file,
)

# The blob layout, spelled out here so a silent format change fails these tests.
WRAP_NONCE = slice(1, 13)
WRAPPED_KEY = slice(13, 61)
PAYLOAD_NONCE = slice(61, 73)
PAYLOAD_OFFSET = 61
MIN_BLOB = 61 + 12 + 16

PLAINTEXT = b'{"username": "app", "password": "hunter2-very-secret"}'
AAD = b"org-1/conn-1"
SOURCE = "SEVVO_CONNECTIONS_KEYRING_FILE"
# Module level rather than a fixture: hypothesis runs many examples per test call.
KEYRING = Keyring.generate("k1")


def reason_of(excinfo: pytest.ExceptionInfo[CredentialsUnreadable]) -> str:
    """The stable reason of a caught CredentialsUnreadable."""
    return excinfo.value.reason


def assert_safe(message: str, *secrets: bytes) -> None:
    """Fails if an error message shows any secret, raw or base64-encoded."""
    for secret in secrets:
        assert secret.decode("latin-1") not in message
        assert base64.b64encode(secret).decode() not in message
        assert secret.hex() not in message


# --- sealing and opening -------------------------------------------------------------------


def test_unseal_returns_what_was_sealed() -> None:
    """A sealed payload opens with the same keyring and aad to the original bytes."""
    sealed = seal(KEYRING, PLAINTEXT, AAD)
    assert sealed.key_id == "k1"
    assert unseal(KEYRING, sealed, AAD) == PLAINTEXT


def test_blob_does_not_contain_the_plaintext() -> None:
    """The sealed blob carries no recognisable piece of the plaintext."""
    sealed = seal(KEYRING, PLAINTEXT, AAD)
    assert b"hunter2" not in sealed.blob
    assert b"username" not in sealed.blob


def test_each_seal_uses_a_fresh_data_key_and_nonces() -> None:
    """Two seals of the same plaintext share no nonce, wrapped key or ciphertext."""
    first = seal(KEYRING, PLAINTEXT, AAD).blob
    second = seal(KEYRING, PLAINTEXT, AAD).blob
    assert first[WRAP_NONCE] != second[WRAP_NONCE]
    assert first[WRAPPED_KEY] != second[WRAPPED_KEY]
    assert first[PAYLOAD_NONCE] != second[PAYLOAD_NONCE]
    assert first[PAYLOAD_OFFSET + 12 :] != second[PAYLOAD_OFFSET + 12 :]


def test_blob_has_the_documented_layout() -> None:
    """The blob is version 1, a 60-byte wrapped key, then nonce, ciphertext and tag."""
    blob = seal(KEYRING, PLAINTEXT, AAD).blob
    assert blob[0] == 1
    assert len(blob) == MIN_BLOB + len(PLAINTEXT)


def test_empty_plaintext_round_trips() -> None:
    """An empty payload seals to the minimum blob and opens to empty bytes."""
    sealed = seal(KEYRING, b"", AAD)
    assert len(sealed.blob) == MIN_BLOB
    assert unseal(KEYRING, sealed, AAD) == b""


def test_other_aad_fails_as_data_mismatch() -> None:
    """A blob opened for another record fails with SEALED_DATA_MISMATCH, naming neither aad."""
    sealed = seal(KEYRING, PLAINTEXT, AAD)
    with pytest.raises(CredentialsUnreadable) as caught:
        unseal(KEYRING, sealed, b"org-1/conn-2")
    assert reason_of(caught) == "SEALED_DATA_MISMATCH"
    assert "corrupted or belongs to another record" in caught.value.message
    assert "conn-1" not in caught.value.message
    assert "conn-2" not in caught.value.message


def test_unreadable_credentials_map_to_failed_precondition() -> None:
    """CredentialsUnreadable carries FAILED_PRECONDITION for the gRPC error interceptor."""
    sealed = seal(KEYRING, PLAINTEXT, AAD)
    with pytest.raises(CredentialsUnreadable) as caught:
        unseal(KEYRING, sealed, b"other")
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize(
    "position",
    [1, 12, 13, 44, 60, 61, 72, 73, 73 + len(PLAINTEXT) - 1, -16, -1],
    ids=lambda p: f"byte{p}",
)
def test_any_tampered_byte_fails_as_data_mismatch(position: int) -> None:
    """Flipping one bit anywhere after the version byte makes the blob fail to open."""
    blob = bytearray(seal(KEYRING, PLAINTEXT, AAD).blob)
    blob[position] ^= 0x01
    with pytest.raises(CredentialsUnreadable) as caught:
        unseal(KEYRING, Sealed("k1", bytes(blob)), AAD)
    assert reason_of(caught) == "SEALED_DATA_MISMATCH"
    assert_safe(caught.value.message, PLAINTEXT, KEYRING.keys["k1"])


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unknown_version_fails_as_format(version: int) -> None:
    """A blob whose version byte is not 1 fails with SEALED_FORMAT naming the version."""
    blob = bytes([version]) + seal(KEYRING, PLAINTEXT, AAD).blob[1:]
    with pytest.raises(CredentialsUnreadable) as caught:
        unseal(KEYRING, Sealed("k1", blob), AAD)
    assert reason_of(caught) == "SEALED_FORMAT"
    assert f"version {version}" in caught.value.message


@pytest.mark.parametrize("length", [0, 1, PAYLOAD_OFFSET, MIN_BLOB - 1])
def test_truncated_blob_fails_as_format(length: int) -> None:
    """A blob shorter than the smallest possible sealed payload fails with SEALED_FORMAT."""
    blob = seal(KEYRING, b"", AAD).blob[:length]
    with pytest.raises(CredentialsUnreadable) as caught:
        unseal(KEYRING, Sealed("k1", blob), AAD)
    assert reason_of(caught) == "SEALED_FORMAT"


def test_payload_cut_short_fails_as_data_mismatch() -> None:
    """Dropping the last byte of a long enough blob fails authentication."""
    blob = seal(KEYRING, PLAINTEXT, AAD).blob[:-1]
    with pytest.raises(CredentialsUnreadable) as caught:
        unseal(KEYRING, Sealed("k1", blob), AAD)
    assert reason_of(caught) == "SEALED_DATA_MISMATCH"


def test_unknown_key_id_fails_naming_the_key() -> None:
    """A blob under a key the keyring lacks fails with SEALED_KEY_UNKNOWN naming its id."""
    sealed = seal(Keyring.generate("retired-2024"), PLAINTEXT, AAD)
    with pytest.raises(CredentialsUnreadable) as caught:
        unseal(KEYRING, sealed, AAD)
    assert reason_of(caught) == "SEALED_KEY_UNKNOWN"
    assert "'retired-2024'" in caught.value.message
    assert "restore" in caught.value.message
    assert "rewrap" in caught.value.message
    assert caught.value.metadata == {"key_id": "retired-2024"}


def test_key_id_is_bound_into_the_wrapped_data_key() -> None:
    """Relabelling a blob with another id of the same key bytes fails to open."""
    key = KEYRING.keys["k1"]
    twins = Keyring("a", {"a": key, "b": key})
    sealed = seal(twins, PLAINTEXT, AAD)
    with pytest.raises(CredentialsUnreadable) as caught:
        unseal(twins, replace(sealed, key_id="b"), AAD)
    assert reason_of(caught) == "SEALED_DATA_MISMATCH"


def test_sealed_repr_shows_length_not_bytes() -> None:
    """A Sealed in a log line shows its key id and size, not its ciphertext."""
    sealed = seal(KEYRING, PLAINTEXT, AAD)
    assert repr(sealed) == f"Sealed(key_id='k1', blob=<{len(sealed.blob)} bytes>)"


# --- rotation ------------------------------------------------------------------------------


def test_old_blobs_open_after_a_new_primary() -> None:
    """A blob sealed under k1 still opens once k2 has become primary."""
    sealed = seal(KEYRING, PLAINTEXT, AAD)
    rotated = KEYRING.with_new_primary("k2")
    assert rotated.primary_id == "k2"
    assert unseal(rotated, sealed, AAD) == PLAINTEXT


def test_new_seals_use_the_new_primary() -> None:
    """After rotation, seal wraps under the new primary key."""
    rotated = KEYRING.with_new_primary("k2")
    assert seal(rotated, PLAINTEXT, AAD).key_id == "k2"


def test_rewrap_moves_the_data_key_and_keeps_the_payload() -> None:
    """Rewrap puts the blob under the primary with byte-identical payload ciphertext."""
    sealed = seal(KEYRING, PLAINTEXT, AAD)
    rotated = KEYRING.with_new_primary("k2")
    moved = rewrap(rotated, sealed, AAD)
    assert moved.key_id == "k2"
    assert moved.blob[PAYLOAD_OFFSET:] == sealed.blob[PAYLOAD_OFFSET:]
    assert moved.blob[WRAPPED_KEY] != sealed.blob[WRAPPED_KEY]
    assert unseal(rotated, moved, AAD) == PLAINTEXT


def test_rewrap_under_the_primary_returns_the_same_object() -> None:
    """A blob already under the primary is returned as is, so nothing needs writing."""
    sealed = seal(KEYRING, PLAINTEXT, AAD)
    assert rewrap(KEYRING, sealed, AAD) is sealed


def test_rewrap_with_other_aad_fails() -> None:
    """Rewrap refuses a blob that does not belong to the named record."""
    sealed = seal(KEYRING, PLAINTEXT, AAD)
    with pytest.raises(CredentialsUnreadable) as caught:
        rewrap(KEYRING.with_new_primary("k2"), sealed, b"org-1/conn-2")
    assert reason_of(caught) == "SEALED_DATA_MISMATCH"


def test_rewrap_reports_a_damaged_payload() -> None:
    """Rewrap fails on a corrupted payload instead of carrying it forward under a new key."""
    blob = bytearray(seal(KEYRING, PLAINTEXT, AAD).blob)
    blob[-1] ^= 0x01
    with pytest.raises(CredentialsUnreadable) as caught:
        rewrap(KEYRING.with_new_primary("k2"), Sealed("k1", bytes(blob)), AAD)
    assert reason_of(caught) == "SEALED_DATA_MISMATCH"


def test_dropping_the_old_key_keeps_rewrapped_blobs_only() -> None:
    """Without k1, a rewrapped blob opens and an un-rewrapped one fails as SEALED_KEY_UNKNOWN."""
    moved_source = seal(KEYRING, PLAINTEXT, AAD)
    left_behind = seal(KEYRING, b"other secret", b"org-1/conn-9")
    rotated = KEYRING.with_new_primary("k2")
    moved = rewrap(rotated, moved_source, AAD)
    retired = rotated.without("k1")
    assert unseal(retired, moved, AAD) == PLAINTEXT
    with pytest.raises(CredentialsUnreadable) as caught:
        unseal(retired, left_behind, b"org-1/conn-9")
    assert reason_of(caught) == "SEALED_KEY_UNKNOWN"
    assert "'k1'" in caught.value.message


# --- keyring -------------------------------------------------------------------------------


def test_generate_makes_one_primary_256_bit_key() -> None:
    """A generated keyring holds one 32-byte key, which is primary, under a valid id."""
    keyring = Keyring.generate()
    assert list(keyring.keys) == [keyring.primary_id]
    assert len(keyring.keys[keyring.primary_id]) == 32
    assert Keyring(keyring.primary_id, dict(keyring.keys)) == keyring


def test_generated_keys_and_ids_are_fresh() -> None:
    """Two generated keyrings share neither key id nor key bytes."""
    first, second = Keyring.generate(), Keyring.generate()
    assert first.primary_id != second.primary_id
    assert first.keys[first.primary_id] != second.keys[second.primary_id]


def test_with_new_primary_keeps_old_keys() -> None:
    """Rotation adds a fresh key as primary and keeps the old key unchanged."""
    rotated = KEYRING.with_new_primary()
    assert set(rotated.keys) == {"k1", rotated.primary_id}
    assert rotated.keys["k1"] == KEYRING.keys["k1"]
    assert rotated.keys[rotated.primary_id] != KEYRING.keys["k1"]


def test_with_new_primary_refuses_an_existing_id() -> None:
    """Rotation to an id already in the keyring is refused rather than replacing a key."""
    with pytest.raises(ConfigError, match="'k1' already exists"):
        KEYRING.with_new_primary("k1")


def test_without_refuses_the_primary() -> None:
    """The primary key cannot be dropped."""
    with pytest.raises(ConfigError, match="'k1' is primary"):
        KEYRING.without("k1")


def test_without_refuses_an_unknown_key() -> None:
    """Dropping a key that is not there is reported, since it is likely a typo."""
    with pytest.raises(ConfigError, match="no key 'k9'"):
        KEYRING.with_new_primary("k2").without("k9")


def test_keyring_cannot_be_changed_through_its_mapping() -> None:
    """The keys mapping is read-only, and changing the caller's dict does not reach it."""
    source = {"k1": b"\x01" * 32}
    keyring = Keyring("k1", source)
    source["k1"] = b"\x02" * 32
    assert keyring.keys["k1"] == b"\x01" * 32
    with pytest.raises(TypeError):
        keyring.keys["k1"] = b"\x03" * 32  # type: ignore[index]


def test_keyring_repr_hides_key_bytes() -> None:
    """repr and str show key ids only, never key material in any encoding."""
    keyring = KEYRING.with_new_primary("k2")
    for text in (repr(keyring), str(keyring)):
        assert text == "Keyring(primary_id='k2', key_ids=('k1', 'k2'))"


@pytest.mark.parametrize(
    ("primary", "keys", "problem"),
    [
        ("k2", {"k1": b"\x00" * 32}, "primary key 'k2' is not among the keys 'k1'"),
        ("k1", {"k1": b"\x00" * 31}, "key 'k1' must be 32 bytes, got 31 bytes"),
        ("k1", {"k1": b"\x00" * 33}, "key 'k1' must be 32 bytes, got 33 bytes"),
        ("k1", {"k1": "0" * 32}, "key 'k1' must be 32 bytes, got str"),
        ("bad id", {"bad id": b"\x00" * 32}, "key id 'bad id' must match"),
        ("", {"": b"\x00" * 32}, "key id '' must match"),
        ("k" * 65, {"k" * 65: b"\x00" * 32}, "must match"),
        ("k1\n", {"k1\n": b"\x00" * 32}, "must match"),
    ],
    ids=[
        "primary-missing",
        "short-key",
        "long-key",
        "text-key",
        "space-in-id",
        "empty-id",
        "long-id",
        "newline-in-id",
    ],
)
def test_keyring_validates_on_construction(
    primary: str, keys: dict[str, bytes], problem: str
) -> None:
    """An invalid keyring is refused when built, with a message stating the problem."""
    with pytest.raises(ConfigError) as caught:
        Keyring(primary, keys)
    assert problem in str(caught.value)


# --- keyring files -------------------------------------------------------------------------


def test_json_round_trip() -> None:
    """to_json output parses back to an equal keyring."""
    keyring = KEYRING.with_new_primary("k2")
    assert Keyring.from_json(keyring.to_json(), SOURCE) == keyring


def test_from_json_tolerates_whitespace_around_keys() -> None:
    """Base64 values with surrounding whitespace (hand-edited files) still decode."""
    encoded = base64.b64encode(b"\x07" * 32).decode()
    text = json.dumps({"primary": "k1", "keys": {"k1": f"  {encoded}\n"}})
    assert Keyring.from_json(text, SOURCE).keys["k1"] == b"\x07" * 32


GOOD_KEY = b"G" * 31 + b"!"
GOOD = base64.b64encode(GOOD_KEY).decode()
SHORT_KEY = b"S" * 31
SHORT = base64.b64encode(SHORT_KEY).decode()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f'{{"primary": "k1", "keys": {{"k1": "{GOOD}"', "not valid JSON"),
        (f'["k1", "{GOOD}"]', "must be a JSON object"),
        (json.dumps({"keys": {"k1": GOOD}}), 'needs "primary"'),
        (json.dumps({"primary": 1, "keys": {"k1": GOOD}}), 'needs "primary"'),
        (json.dumps({"primary": "k1"}), 'needs "keys"'),
        (json.dumps({"primary": "k1", "keys": {}}), 'needs "keys"'),
        (json.dumps({"primary": "k1", "keys": [GOOD]}), 'needs "keys"'),
        (json.dumps({"primary": "k2", "keys": {"k1": GOOD}}), "primary key 'k2' is not among"),
        (json.dumps({"primary": "k1", "keys": {"k1": 7}}), "'k1' must be a base64 string"),
        (json.dumps({"primary": "k1", "keys": {"k1": "S3cr*t=="}}), "'k1' is not valid base64"),
        (json.dumps({"primary": "k1", "keys": {"k1": SHORT}}), "must be 32 bytes, got 31"),
        (json.dumps({"primary": "k 1", "keys": {"k 1": GOOD}}), "key id 'k 1' must match"),
        (json.dumps({"primary": "k1", "keys": {"k1": GOOD}, "primay": "k1"}), "'primay'"),
        (f'{{"primary": "k1", "keys": {{"k1": "{SHORT}", "k1": "{GOOD}"}}}}', "'k1' twice"),
    ],
    ids=[
        "bad-json",
        "not-object",
        "missing-primary",
        "primary-not-string",
        "missing-keys",
        "empty-keys",
        "keys-not-object",
        "primary-not-in-keys",
        "key-not-string",
        "key-not-base64",
        "key-wrong-length",
        "bad-id",
        "unknown-field",
        "duplicate-id",
    ],
)
def test_from_json_errors_name_source_not_keys(text: str, problem: str) -> None:
    """Each malformed keyring fails naming the source and the problem, never key material."""
    with pytest.raises(ConfigError) as caught:
        Keyring.from_json(text, SOURCE)
    message = str(caught.value)
    assert message.startswith(f"{SOURCE}: ")
    assert problem in message
    for leaked in (GOOD, SHORT, "S3cr*t", GOOD_KEY.decode(), SHORT_KEY.decode()):
        assert leaked not in message


def test_keyring_file_is_owner_only_and_round_trips(tmp_path: Path) -> None:
    """write_keyring_file creates a 0600 file that from_json reads back equal."""
    path = tmp_path / "keyring.json"
    write_keyring_file(path, KEYRING)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Keyring.from_json(path.read_text(encoding="utf-8"), str(path)) == KEYRING


def test_keyring_file_replaces_a_world_readable_file_as_0600(tmp_path: Path) -> None:
    """Rewriting over an 0644 file leaves a 0600 file holding the new keyring, and no temp file."""
    path = tmp_path / "keyring.json"
    path.write_text("old")
    path.chmod(0o644)
    rotated = KEYRING.with_new_primary("k2")
    write_keyring_file(path, rotated)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Keyring.from_json(path.read_text(encoding="utf-8"), str(path)) == rotated
    assert os.listdir(tmp_path) == ["keyring.json"]


def test_keyring_file_mode_does_not_depend_on_the_umask(tmp_path: Path) -> None:
    """Even a umask that strips the owner's bits leaves the file at exactly 0600."""
    path = tmp_path / "keyring.json"
    previous = os.umask(0o377)
    try:
        write_keyring_file(path, KEYRING)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- properties ----------------------------------------------------------------------------


@given(plaintext=st.binary(max_size=2048), aad=st.binary(max_size=256))
def test_any_plaintext_and_aad_round_trip(plaintext: bytes, aad: bytes) -> None:
    """Every plaintext sealed for any aad opens to itself with that aad."""
    assert unseal(KEYRING, seal(KEYRING, plaintext, aad), aad) == plaintext


@given(plaintext=st.binary(max_size=256), aad=st.binary(max_size=64), other=st.binary(max_size=64))
def test_any_other_aad_fails(plaintext: bytes, aad: bytes, other: bytes) -> None:
    """A blob never opens for an aad that differs from the one it was sealed for."""
    assume(aad != other)
    with pytest.raises(CredentialsUnreadable) as caught:
        unseal(KEYRING, seal(KEYRING, plaintext, aad), other)
    assert reason_of(caught) == "SEALED_DATA_MISMATCH"
