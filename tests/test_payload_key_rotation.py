"""Payload key rotation and retirement rules, with an in-memory store and a clock tests move.

The same rules run against the real store in tests/test_payload_key_store.py and end to end in
tests/test_e2e_payload_keys.py; here each rule is one fast case.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest

from services.orchestrator.payload_keys import (
    RETIRE_ACTION,
    ROTATE_ACTION,
    KeyPolicy,
    Maintenance,
    PayloadKeys,
    RotationReason,
)
from services.orchestrator.store import PayloadKeyRow
from sevvo.runtime import audit
from sevvo.runtime.errors import PermissionDenied
from sevvo.runtime.sealing import Keyring

ORG = uuid.UUID("00000000-0000-4000-8000-0000000000a1")
OTHER_ORG = uuid.UUID("00000000-0000-4000-8000-0000000000b2")
AGENT = "00000000-0000-4000-8000-00000000d001"
OTHER_AGENT = "00000000-0000-4000-8000-00000000d002"
ADMIN = audit.Actor("user", "admin-1")
POLICY = KeyPolicy(
    rotation_period=timedelta(days=30),
    history_retention=timedelta(days=7),
    longest_run=timedelta(minutes=7),
)


@dataclass
class FakeStore:
    """The KeyStore protocol over dicts: keys, fetches, refusals and audit records."""

    keys: list[PayloadKeyRow] = field(default_factory=list)
    fetches: set[tuple[uuid.UUID, str, str]] = field(default_factory=set)
    refused: set[tuple[uuid.UUID, str]] = field(default_factory=set)
    audit: list[tuple[uuid.UUID, str, str, str, dict[str, str]]] = field(default_factory=list)

    def payload_keys(self, org_id: uuid.UUID) -> list[PayloadKeyRow]:
        return sorted(
            (k for k in self.keys if k.org_id == org_id), key=lambda k: (k.created_at, k.key_id)
        )

    def insert_payload_key_if_none(self, row: PayloadKeyRow) -> None:
        if not self.payload_keys(row.org_id):
            self.keys.append(row)

    def payload_keys_for_deployment(
        self, org_id: uuid.UUID, deployment_id: str
    ) -> list[PayloadKeyRow] | None:
        if (org_id, deployment_id) in self.refused:
            return None
        rows = self.payload_keys(org_id)
        self.fetches.update((org_id, deployment_id, row.key_id) for row in rows)
        return rows

    @contextmanager
    def key_rotation(self, org_id: uuid.UUID) -> Iterator[_FakeTransaction]:
        yield _FakeTransaction(self, org_id)

    def orgs_with_keys_created_before(self, before: datetime, limit: int) -> list[uuid.UUID]:
        orgs = {k.org_id for k in self.keys}
        return [o for o in orgs if self.payload_keys(o)[-1].created_at < before][:limit]

    def superseded_keys(self, before: datetime, limit: int) -> list[tuple[uuid.UUID, str]]:
        found = []
        for org in {k.org_id for k in self.keys}:
            rows = self.payload_keys(org)
            found += [
                (org, old.key_id)
                for old, new in itertools.pairwise(rows)
                if new.created_at < before
            ]
        return found[:limit]

    def unrefused_holders(self, deployment_ids: list[str]) -> list[tuple[uuid.UUID, str]]:
        return sorted(
            {
                (org, dep)
                for org, dep, _ in self.fetches
                if dep in deployment_ids and (org, dep) not in self.refused
            }
        )


@dataclass
class _FakeTransaction:
    store: FakeStore
    org_id: uuid.UUID

    def current(self) -> PayloadKeyRow | None:
        rows = self.store.payload_keys(self.org_id)
        return rows[-1] if rows else None

    def refuse(self, deployment_id: str, at: datetime) -> bool:
        newly = (self.org_id, deployment_id) not in self.store.refused
        self.store.refused.add((self.org_id, deployment_id))
        return newly

    def fetched(self, deployment_id: str, key_id: str) -> bool:
        return (self.org_id, deployment_id, key_id) in self.store.fetches

    def insert(self, row: PayloadKeyRow) -> PayloadKeyRow:
        current = self.current()
        if current is not None and row.created_at <= current.created_at:
            row = replace(row, created_at=current.created_at + timedelta(microseconds=1))
        self.store.keys.append(row)
        return row

    def retire(self, key_id: str, superseded_before: datetime) -> bool:
        rows = self.store.payload_keys(self.org_id)
        for old, new in itertools.pairwise(rows):
            if old.key_id == key_id and new.created_at < superseded_before:
                self.store.keys.remove(old)
                return True
        return False

    def audit(self, actor: audit.Actor, action: str, key_id: str, details: dict[str, str]) -> None:
        self.store.audit.append((self.org_id, actor.kind, action, key_id, dict(details)))


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Keys:
    """Payload keys over a fake store, their clock, and the schedules they rewrote."""

    keys: PayloadKeys
    store: FakeStore
    clock: Clock
    rekeyed: list[uuid.UUID] = field(default_factory=list)
    rekey_fails: bool = False

    async def rekey(self, org_id: uuid.UUID) -> None:
        if self.rekey_fails:
            raise RuntimeError("temporal unreachable")
        self.rekeyed.append(org_id)

    def maintain(self, revoked: dict[str, datetime] | None = None) -> Maintenance:
        return asyncio.run(self.keys.maintain(revoked or {}, self.rekey))

    def replica(self) -> PayloadKeys:
        """Another orchestrator replica over the same store."""
        return PayloadKeys(self.store, KEYRING, POLICY, clock=self.clock)


@pytest.fixture
def k() -> Keys:
    """Payload keys with a fake store and clock."""
    store, clock = FakeStore(), Clock()
    return Keys(PayloadKeys(store, KEYRING, POLICY, clock=clock), store, clock)


KEYRING = Keyring.generate()


def test_operator_rotation_makes_a_new_key_current_and_keeps_the_old_one() -> None:
    """After a rotation work encrypts with a new key while the old one still decrypts."""
    store, clock = FakeStore(), Clock()
    keys = PayloadKeys(store, KEYRING, POLICY, clock=clock)
    before = keys.fresh(ORG)
    old = before.current_id
    clock.now += timedelta(seconds=1)
    rotation = keys.rotate(ORG, ADMIN, RotationReason.OPERATOR)
    assert rotation.rotated and rotation.previous_key_id == old
    assert before.current_id == rotation.current.key_id != old
    assert before.key_ids == {old, rotation.current.key_id}


def test_every_rotation_is_audited_with_its_reason_and_no_key_bytes(k: Keys) -> None:
    """Each rotation leaves one audit record: actor, key ids, reason; never key material."""
    k.keys.fresh(ORG)
    rotation = k.keys.rotate(ORG, ADMIN, RotationReason.OPERATOR)
    assert k.store.audit == [
        (
            ORG,
            "user",
            ROTATE_ACTION,
            rotation.current.key_id,
            {"reason": "operator", "previous_key_id": rotation.previous_key_id},
        )
    ]


def test_another_replica_encrypts_with_the_rotated_key_on_its_next_read(k: Keys) -> None:
    """A replica holding the org's keys switches to the key another replica made current."""
    other = PayloadKeys(k.store, KEYRING, POLICY, clock=k.clock)
    held = other.fresh(ORG)
    rotation = k.keys.rotate(ORG, ADMIN, RotationReason.OPERATOR)
    assert other.fresh(ORG) is held
    assert held.current_id == rotation.current.key_id


def test_revocation_refuses_the_deployment_every_key(k: Keys) -> None:
    """A deployment rotated away from is given no key, old or new; others still are."""
    k.keys.for_deployment(ORG, AGENT)
    k.keys.rotate(ORG, ADMIN, RotationReason.DEPLOYMENT_REVOKED, revoked_deployment=AGENT)
    with pytest.raises(PermissionDenied) as refused:
        k.keys.for_deployment(ORG, AGENT)
    assert refused.value.reason == "DEPLOYMENT_REVOKED"
    assert k.keys.for_deployment(ORG, OTHER_AGENT).current_id == k.keys.fresh(ORG).current_id


def test_revocation_of_a_deployment_in_one_org_refuses_nothing_in_another(k: Keys) -> None:
    """The refusal is the caller's org's: a deployment id named by org A stays served in B."""
    k.keys.fresh(ORG)
    k.keys.rotate(ORG, ADMIN, RotationReason.DEPLOYMENT_REVOKED, revoked_deployment=AGENT)
    assert k.keys.for_deployment(OTHER_ORG, AGENT).org_id == str(OTHER_ORG)


def test_a_second_notice_of_the_same_revocation_rotates_nothing(k: Keys) -> None:
    """Auth's call and the maintenance pass both report a revocation: one rotation."""
    k.keys.for_deployment(ORG, AGENT)
    first = k.keys.rotate(ORG, ADMIN, RotationReason.DEPLOYMENT_REVOKED, revoked_deployment=AGENT)
    again = k.keys.rotate(ORG, ADMIN, RotationReason.DEPLOYMENT_REVOKED, revoked_deployment=AGENT)
    assert first.rotated and not again.rotated
    assert again.current.key_id == first.current.key_id


def test_a_refused_deployment_that_still_got_the_current_key_forces_another_rotation(
    k: Keys,
) -> None:
    """A fetch that raced the refusal and got the new key makes the next notice rotate again."""
    k.keys.fresh(ORG)
    first = k.keys.rotate(ORG, ADMIN, RotationReason.DEPLOYMENT_REVOKED, revoked_deployment=AGENT)
    k.store.fetches.add((ORG, AGENT, first.current.key_id))  # The raced fetch.
    again = k.keys.rotate(ORG, ADMIN, RotationReason.DEPLOYMENT_REVOKED, revoked_deployment=AGENT)
    assert again.rotated and again.current.key_id != first.current.key_id


def test_maintenance_rotates_for_a_revoked_holder_auth_did_not_report(k: Keys) -> None:
    """A revocation seen only in the verifier's list rotates the key its deployment held."""
    held = k.keys.for_deployment(ORG, AGENT).current_id
    k.keys.for_deployment(OTHER_ORG, OTHER_AGENT)
    done = k.maintain({AGENT: k.clock.now})
    assert done.revocation_rotations == 1
    assert k.keys.fresh(ORG).current_id != held
    assert (ORG, AGENT) in k.store.refused
    assert k.store.audit[-1][1:3] == ("system", ROTATE_ACTION)
    assert k.store.audit[-1][4]["reason"] == "deployment_revoked"
    assert len(k.store.payload_keys(OTHER_ORG)) == 1


def test_maintenance_ignores_revoked_deployments_that_never_held_a_key(k: Keys) -> None:
    """A revoked deployment that fetched nothing from this org rotates nothing."""
    k.keys.fresh(ORG)
    assert k.maintain({AGENT: k.clock.now}) == Maintenance()


@pytest.mark.parametrize(
    ("age", "rotates"),
    [(timedelta(days=29, hours=23), False), (timedelta(days=30, seconds=1), True)],
)
def test_a_key_rotates_on_schedule_once_older_than_the_period(
    k: Keys, age: timedelta, rotates: bool
) -> None:
    """The current key is replaced once it is older than the rotation period, not before."""
    first = k.keys.fresh(ORG).current_id
    k.clock.now += age
    assert k.maintain().scheduled_rotations == int(rotates)
    assert (k.keys.fresh(ORG).current_id != first) is rotates


def test_a_scheduled_rotation_another_replica_did_first_is_not_repeated(k: Keys) -> None:
    """Two replicas due the same org at once make one new key between them."""
    k.keys.fresh(ORG)
    k.clock.now += timedelta(days=31)
    due = k.clock.now - POLICY.rotation_period
    first = k.keys.rotate(ORG, audit.SYSTEM, RotationReason.SCHEDULE, due_before=due)
    second = k.replica().rotate(ORG, audit.SYSTEM, RotationReason.SCHEDULE, due_before=due)
    assert first.rotated and not second.rotated


def test_a_superseded_key_is_kept_until_retention_plus_the_longest_run(k: Keys) -> None:
    """The old key still decrypts until retention + longest run after it stopped being current."""
    old = k.keys.fresh(ORG).current_id
    k.clock.now += timedelta(hours=1)
    k.keys.rotate(ORG, ADMIN, RotationReason.OPERATOR)
    k.clock.now += POLICY.retire_after - timedelta(seconds=1)
    assert k.maintain().retired == 0
    assert old in k.keys.fresh(ORG).key_ids
    k.clock.now += timedelta(seconds=2)
    assert k.maintain().retired == 1
    assert old not in k.keys.fresh(ORG).key_ids
    assert old not in k.keys.for_deployment(ORG, AGENT).key_ids
    assert k.store.audit[-1][1:4] == ("system", RETIRE_ACTION, old)


def test_the_current_key_is_never_retired(k: Keys) -> None:
    """However old, an org's only key stays (it is rotated on schedule instead)."""
    k.keys.fresh(ORG)
    k.clock.now += timedelta(days=3650)
    assert k.maintain().retired == 0
    assert len(k.store.payload_keys(ORG)) == 2  # Rotated on schedule; the old one not yet due.


def test_schedules_are_rewritten_before_old_keys_retire(k: Keys) -> None:
    """Retirement waits until the org's schedules were rewritten under the current key."""
    old = k.keys.fresh(ORG).current_id
    k.keys.rotate(ORG, ADMIN, RotationReason.OPERATOR)
    k.clock.now += POLICY.retire_after + timedelta(seconds=1)
    k.rekey_fails = True
    assert k.maintain().retired == 0
    assert old in k.keys.fresh(ORG).key_ids
    k.rekey_fails = False
    assert k.maintain().retired == 1
    assert k.rekeyed == [ORG]


def test_retention_is_the_namespace_retention_plus_the_longest_run() -> None:
    """retire_after adds the two durations."""
    assert POLICY.retire_after == timedelta(days=7, minutes=7)
