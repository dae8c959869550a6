"""Payload key rotation against the real orchestrator store: the SQL behind the rules."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from services.orchestrator.payload_keys import KeyPolicy, PayloadKeys, RotationReason
from services.orchestrator.store import OrchestratorStore
from sevvo.runtime import audit
from sevvo.runtime.errors import PermissionDenied
from sevvo.runtime.sealing import Keyring

ORG = uuid.uuid4()
AGENT = str(uuid.uuid4())
ADMIN = audit.Actor("user", str(uuid.uuid4()))
POLICY = KeyPolicy(timedelta(days=30), timedelta(days=1), timedelta(minutes=7))
KEYRING = Keyring.generate()


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(database_url: str) -> Iterator[OrchestratorStore]:
    """The orchestrator's store (and the audit log) on a fresh database."""
    store = OrchestratorStore(database_url)
    store.open()
    yield store
    store.close()


def _keys(store: OrchestratorStore, clock: Clock) -> PayloadKeys:
    return PayloadKeys(store, KEYRING, POLICY, clock=clock)


def test_a_rotation_is_current_even_from_a_replica_whose_clock_is_behind(
    store: OrchestratorStore,
) -> None:
    """The new key is created after the current one whatever the rotating replica's clock says."""
    ahead, behind = Clock(), Clock()
    behind.now -= timedelta(hours=1)
    _keys(store, ahead).fresh(ORG)
    rotation = _keys(store, behind).rotate(ORG, ADMIN, RotationReason.OPERATOR)
    assert _keys(store, ahead).fresh(ORG).current_id == rotation.current.key_id


def test_a_refused_deployment_gets_no_keys_and_its_fetches_were_recorded(
    store: OrchestratorStore, database_url: str
) -> None:
    """Fetches are recorded per key; after a revocation rotation the deployment gets nothing."""
    keys = _keys(store, Clock())
    held = keys.for_deployment(ORG, AGENT).current_id
    keys.rotate(ORG, ADMIN, RotationReason.DEPLOYMENT_REVOKED, revoked_deployment=AGENT)
    with pytest.raises(PermissionDenied):
        keys.for_deployment(ORG, AGENT)
    with psycopg.connect(database_url) as conn:
        fetched = conn.execute(
            "select key_id from orchestrator.payload_key_fetches where deployment_id = %s",
            (AGENT,),
        ).fetchall()
    assert fetched == [(held,)]


def test_maintenance_finds_a_revoked_holder_and_rotates_once(store: OrchestratorStore) -> None:
    """Only a revoked deployment given a key and not refused yet counts; a second pass idles."""
    keys = _keys(store, Clock())
    held = keys.for_deployment(ORG, AGENT).current_id

    async def no_schedules(org_id: uuid.UUID) -> None:
        return None

    revoked = {AGENT: datetime.now(UTC), str(uuid.uuid4()): datetime.now(UTC)}
    first = asyncio.run(keys.maintain(revoked, no_schedules))
    second = asyncio.run(keys.maintain(revoked, no_schedules))
    assert (first.revocation_rotations, second.revocation_rotations) == (1, 0)
    assert keys.fresh(ORG).current_id != held


def test_retirement_deletes_only_keys_superseded_long_enough_ago_and_audits_it(
    store: OrchestratorStore, database_url: str
) -> None:
    """Of three keys, the one superseded past retention goes; its fetch records go with it."""
    clock = Clock()
    keys = _keys(store, clock)
    oldest = keys.for_deployment(ORG, AGENT).current_id
    keys.rotate(ORG, ADMIN, RotationReason.OPERATOR)
    clock.now += POLICY.retire_after + timedelta(seconds=1)
    middle = keys.fresh(ORG).current_id
    newest = keys.rotate(ORG, ADMIN, RotationReason.OPERATOR).current.key_id

    async def no_schedules(org_id: uuid.UUID) -> None:
        return None

    assert asyncio.run(keys.maintain({}, no_schedules)).retired == 1
    assert [row.key_id for row in store.payload_keys(ORG)] == [middle, newest]
    with psycopg.connect(database_url) as conn:
        fetches = conn.execute(
            "select count(*) from orchestrator.payload_key_fetches where key_id = %s", (oldest,)
        ).fetchone()
        events = conn.execute(
            "select action, actor_kind, details::text from audit.events"
            " where org_id = %s and target_id = %s order by occurred_at",
            (ORG, oldest),
        ).fetchall()
    assert fetches == (0,)
    assert [(action, actor) for action, actor, _ in events] == [("payload_key.retire", "system")]


def test_rotation_audit_records_hold_ids_and_reasons_never_key_bytes(
    store: OrchestratorStore, database_url: str
) -> None:
    """The audit record of a rotation names the reason and key ids; the key bytes appear nowhere."""
    keys = _keys(store, Clock())
    first = keys.fresh(ORG).current()
    rotation = keys.rotate(ORG, ADMIN, RotationReason.OPERATOR)
    new = keys.fresh(ORG).current()
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select actor_id, action, target_id, details->>'reason', details->>'previous_key_id',"
            " details::text from audit.events where org_id = %s",
            (ORG,),
        ).fetchall()
    assert [row[:5] for row in rows] == [
        (ADMIN.id, "payload_key.rotate", rotation.current.key_id, "operator", first.key_id)
    ]
    for key in (first.key, new.key):
        assert key.hex() not in rows[0][5] and key.hex() not in str(rows)
