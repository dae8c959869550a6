"""Per-org payload keys: created on first use, sealed at rest, rotated and retired.

An org's current key is its newest row; every replica reads it from the store before it starts
work, so work started after a rotation committed is encrypted with the new key whichever
replica starts it. A key rotates when a deployment that may hold it is revoked (auth asks at
once; the maintenance pass also catches revocations the verifier reports, for when that call
failed), when it is older than the rotation period, and when an org admin asks. A superseded
key keeps decrypting the histories started under it and is retired (its row deleted, so no
agent is given it again) once the namespace retention plus the longest run have passed since
it stopped being current. A deployment revoked here is refused every key from then on.
"""

from __future__ import annotations

import asyncio
import enum
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from services.orchestrator.store import PayloadKeyRow
from sevvo.runtime import audit
from sevvo.runtime.errors import PermissionDenied
from sevvo.runtime.logs import get_logger
from sevvo.runtime.payload_codec import OrgPayloadKeys, PayloadKey
from sevvo.runtime.sealing import KeySource, Sealed, seal, unseal

log = get_logger(__name__)

ROTATE_ACTION = "payload_key.rotate"
RETIRE_ACTION = "payload_key.retire"
_BATCH = 100


class RotationReason(enum.StrEnum):
    """Why a key rotated, as its audit record says."""

    OPERATOR = "operator"
    DEPLOYMENT_REVOKED = "deployment_revoked"
    SCHEDULE = "schedule"


@dataclass(frozen=True)
class KeyPolicy:
    """How often keys rotate and how long a superseded key must keep decrypting."""

    rotation_period: timedelta
    # The Temporal namespace's retention: how long a closed workflow's history is kept.
    history_retention: timedelta
    # The longest a run started under a key can still be running.
    longest_run: timedelta

    @property
    def retire_after(self) -> timedelta:
        """How long after it stopped being current a key may still be needed."""
        return self.history_retention + self.longest_run


@dataclass(frozen=True)
class Rotation:
    """The outcome of a rotation request."""

    previous_key_id: str | None
    current: PayloadKeyRow
    rotated: bool


@dataclass(frozen=True)
class Maintenance:
    """What one maintenance pass did, by count."""

    revocation_rotations: int = 0
    scheduled_rotations: int = 0
    retired: int = 0


class KeyTransaction(Protocol):
    """One org's keys inside a transaction holding its key lock (store.KeyRotation)."""

    def current(self) -> PayloadKeyRow | None:
        """The org's current key."""
        ...

    def refuse(self, deployment_id: str, at: datetime) -> bool:
        """Refuses a deployment every key; True unless it already was."""
        ...

    def fetched(self, deployment_id: str, key_id: str) -> bool:
        """Whether the deployment was ever given the key."""
        ...

    def insert(self, row: PayloadKeyRow) -> PayloadKeyRow:
        """Adds a key that becomes current."""
        ...

    def retire(self, key_id: str, superseded_before: datetime) -> bool:
        """Deletes a key superseded before the given time."""
        ...

    def audit(self, actor: audit.Actor, action: str, key_id: str, details: dict[str, str]) -> None:
        """Records what happened to a key."""
        ...


class KeyStore(Protocol):
    """The store as payload keys use it (services/orchestrator/store.py)."""

    def payload_keys(self, org_id: uuid.UUID) -> list[PayloadKeyRow]:
        """An org's keys, oldest first."""
        ...

    def insert_payload_key_if_none(self, row: PayloadKeyRow) -> None:
        """Stores an org's first key unless it has one."""
        ...

    def payload_keys_for_deployment(
        self, org_id: uuid.UUID, deployment_id: str
    ) -> list[PayloadKeyRow] | None:
        """An org's keys, recorded as given to a deployment; None when it is refused."""
        ...

    def key_rotation(self, org_id: uuid.UUID) -> AbstractContextManager[KeyTransaction]:
        """A transaction holding the org's key lock."""
        ...

    def orgs_with_keys_created_before(self, before: datetime, limit: int) -> list[uuid.UUID]:
        """Orgs whose current key is older than ``before``."""
        ...

    def superseded_keys(self, before: datetime, limit: int) -> list[tuple[uuid.UUID, str]]:
        """Keys that stopped being current before ``before``."""
        ...

    def unrefused_holders(self, deployment_ids: list[str]) -> list[tuple[uuid.UUID, str]]:
        """Revoked deployments that were given a key and are not refused yet."""
        ...


def payload_key_aad(org_id: uuid.UUID, key_id: str) -> bytes:
    """What a sealed payload key is bound to: its org and id (rewrap opens it with this too)."""
    return f"sevvo.orchestrator.v1.payload_key|{org_id}|{key_id}".encode()


def _new_key_id() -> str:
    return f"pk-{secrets.token_hex(6)}"


class PayloadKeys:
    """Every org's payload keys, read from the store whenever work starts.

    The unsealed keys are cached (unsealing is the costly part); which key is current never
    is: :meth:`fresh` asks the store every time.
    """

    def __init__(
        self,
        store: KeyStore,
        keyring: KeySource,
        policy: KeyPolicy,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._keyring = keyring
        self.policy = policy
        self._clock = clock
        self._orgs: dict[uuid.UUID, OrgPayloadKeys] = {}
        self._unsealed: dict[tuple[uuid.UUID, str], PayloadKey] = {}

    def _sealed_row(self, org_id: uuid.UUID) -> PayloadKeyRow:
        key_id = _new_key_id()
        sealed = seal(self._keyring, secrets.token_bytes(32), payload_key_aad(org_id, key_id))
        return PayloadKeyRow(org_id, key_id, sealed.key_id, sealed.blob, self._clock())

    def _unseal(self, row: PayloadKeyRow) -> PayloadKey:
        cached = self._unsealed.get((row.org_id, row.key_id))
        if cached is None:
            plain = unseal(
                self._keyring,
                Sealed(row.kek_id, row.sealed_key),
                payload_key_aad(row.org_id, row.key_id),
            )
            cached = self._unsealed[(row.org_id, row.key_id)] = PayloadKey(row.key_id, plain)
        return cached

    def _rows(self, org_id: uuid.UUID) -> list[PayloadKeyRow]:
        rows = self._store.payload_keys(org_id)
        if not rows:
            self._store.insert_payload_key_if_none(self._sealed_row(org_id))
            rows = self._store.payload_keys(org_id)
        return rows

    def fresh(self, org_id: uuid.UUID) -> OrgPayloadKeys:
        """The org's keys as the store holds them now (creating its first key if needed).

        Returns the same object for an org every time, updated in place, so the Temporal
        clients whose codecs hold it encrypt with the current key from then on.
        """
        rows = self._rows(org_id)
        keys = [self._unseal(row) for row in rows]
        current_id = rows[-1].key_id
        held = self._orgs.get(org_id)
        if held is None:
            held = self._orgs.setdefault(org_id, OrgPayloadKeys(str(org_id), keys, current_id))
        if held.current_id != current_id or held.key_ids != {k.key_id for k in keys}:
            held.update(keys, current_id)
            live = {k.key_id for k in keys}
            for gone in [k for k in self._unsealed if k[0] == org_id and k[1] not in live]:
                self._unsealed.pop(gone, None)
        return held

    def for_deployment(self, org_id: uuid.UUID, deployment_id: str) -> OrgPayloadKeys:
        """The keys an agent of the org may hold, recorded as given to its deployment.

        Raises PermissionDenied (DEPLOYMENT_REVOKED) for a deployment known to be revoked,
        whose token may still pass the verifier for a few seconds.
        """
        rows = self._store.payload_keys_for_deployment(org_id, deployment_id)
        if rows == []:  # The org's first key: created, then read (and recorded) again.
            self._rows(org_id)
            rows = self._store.payload_keys_for_deployment(org_id, deployment_id)
        if not rows:
            raise PermissionDenied(
                "this deployment has been revoked: it is given no payload keys",
                reason="DEPLOYMENT_REVOKED",
            )
        return OrgPayloadKeys(
            str(org_id), [self._unseal(row) for row in rows], current_id=rows[-1].key_id
        )

    def rotate(
        self,
        org_id: uuid.UUID,
        actor: audit.Actor,
        reason: RotationReason,
        *,
        revoked_deployment: str | None = None,
        due_before: datetime | None = None,
    ) -> Rotation:
        """Makes a new key current, audited, unless there is nothing to do.

        With ``revoked_deployment``, the deployment is refused every key from now on, and the
        key rotates unless that deployment was already refused and never held the current
        key (a second call for the same revocation rotates nothing). With ``due_before``, it
        rotates only if the current key was created before then (a scheduled rotation that
        another replica did not do first).
        """
        new = self._sealed_row(org_id)
        with self._store.key_rotation(org_id) as keys:
            current = keys.current()
            previous = current.key_id if current is not None else None
            details = {"reason": reason.value, "previous_key_id": previous or ""}
            if revoked_deployment is not None:
                details["deployment_id"] = revoked_deployment
                newly = keys.refuse(revoked_deployment, self._clock())
                if (
                    current is not None
                    and not newly
                    and not keys.fetched(revoked_deployment, current.key_id)
                ):
                    return Rotation(previous, current, rotated=False)
            if due_before is not None and current is not None and current.created_at >= due_before:
                return Rotation(previous, current, rotated=False)
            inserted = keys.insert(new)
            keys.audit(actor, ROTATE_ACTION, inserted.key_id, details)
        log.info(
            "payload key rotated",
            org_id=str(org_id),
            key_id=inserted.key_id,
            previous_key_id=previous,
            reason=reason.value,
        )
        self.fresh(org_id)  # This replica's cache at once; others read the store anyway.
        return Rotation(previous, inserted, rotated=True)

    async def maintain(
        self,
        revoked_deployments: Mapping[str, datetime],
        rekey_schedules: Callable[[uuid.UUID], Awaitable[None]],
    ) -> Maintenance:
        """One pass: rotate for revocations and on schedule, and retire keys no longer needed.

        ``revoked_deployments`` is what the token verifier knows revoked (auth's recent
        revocations); ``rekey_schedules`` rewrites an org's Temporal schedules under its
        current key, which must succeed before that org's older keys are retired (a schedule's
        stored input is encrypted once, when it is written).
        """
        now = self._clock()
        revocations = 0
        holders = await asyncio.to_thread(
            self._store.unrefused_holders, sorted(revoked_deployments)
        )
        for org_id, deployment_id in holders:
            rotation = await asyncio.to_thread(
                self.rotate,
                org_id,
                audit.SYSTEM,
                RotationReason.DEPLOYMENT_REVOKED,
                revoked_deployment=deployment_id,
            )
            revocations += rotation.rotated
        due_before = now - self.policy.rotation_period
        scheduled = 0
        for org_id in await asyncio.to_thread(
            self._store.orgs_with_keys_created_before, due_before, _BATCH
        ):
            rotation = await asyncio.to_thread(
                self.rotate, org_id, audit.SYSTEM, RotationReason.SCHEDULE, due_before=due_before
            )
            scheduled += rotation.rotated
        retired = await self._retire(now - self.policy.retire_after, rekey_schedules)
        return Maintenance(revocations, scheduled, retired)

    async def _retire(
        self, cutoff: datetime, rekey_schedules: Callable[[uuid.UUID], Awaitable[None]]
    ) -> int:
        retired = 0
        for org_id, key_ids in _by_org(
            await asyncio.to_thread(self._store.superseded_keys, cutoff, _BATCH)
        ):
            try:
                await asyncio.to_thread(self.fresh, org_id)
                await rekey_schedules(org_id)
            except Exception as exc:  # Keep the keys until the schedules are rewritten.
                log.warning("payload keys not retired yet", org_id=str(org_id), error=repr(exc))
                continue
            retired += await asyncio.to_thread(self._retire_org, org_id, key_ids, cutoff)
        return retired

    def _retire_org(self, org_id: uuid.UUID, key_ids: list[str], cutoff: datetime) -> int:
        retired = []
        with self._store.key_rotation(org_id) as keys:
            for key_id in key_ids:
                if keys.retire(key_id, cutoff):
                    keys.audit(audit.SYSTEM, RETIRE_ACTION, key_id, {})
                    retired.append(key_id)
        if retired:
            log.info("payload keys retired", org_id=str(org_id), key_ids=retired)
            if org_id in self._orgs:
                self.fresh(org_id)
        return len(retired)


def _by_org(pairs: list[tuple[uuid.UUID, str]]) -> Iterator[tuple[uuid.UUID, list[str]]]:
    grouped: dict[uuid.UUID, list[str]] = {}
    for org_id, key_id in pairs:
        grouped.setdefault(org_id, []).append(key_id)
    yield from grouped.items()
