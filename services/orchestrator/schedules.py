"""Root-rotation schedules: one Temporal schedule per dynamic connection on the org's queue.

A schedule lives in its org's namespace, so no other org can list, describe or trigger it
where Temporal's authorizer enforces namespaces; its id keeps the org (only visible inside
that namespace) so ids stay as they were before namespaces per org. Its stored input travels
encrypted with the org's payload key like any other.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
)
from temporalio.service import RPCError, RPCStatusCode

from sevvo.runtime import temporal
from sevvo.runtime.errors import InvalidArgument
from sevvo.runtime.logs import get_logger
from sevvo.workflows.v1 import workflows_pb2

log = get_logger(__name__)

MIN_ROTATION_INTERVAL = timedelta(hours=1)
MAX_ROTATION_INTERVAL = timedelta(days=365)


@dataclass(frozen=True)
class RotationSchedule:
    """A connection's schedule as Temporal holds it; no interval means none."""

    interval: timedelta | None
    next_rotation: datetime | None


NO_SCHEDULE = RotationSchedule(None, None)


def schedule_id(org_id: uuid.UUID, connection_id: uuid.UUID) -> str:
    """The schedule's id: org and connection, so it is unique and never shared across orgs."""
    return f"root-rotation-{org_id}-{connection_id}"


def check_interval(interval: timedelta) -> None:
    """Raises InvalidArgument unless the interval is zero or within the allowed range."""
    if interval and not MIN_ROTATION_INTERVAL <= interval <= MAX_ROTATION_INTERVAL:
        raise InvalidArgument("interval", "must be zero (no schedule) or from 1 hour to 365 days")


async def put(
    client: Client,
    org_id: uuid.UUID,
    connection_id: uuid.UUID,
    interval: timedelta,
    execution_timeout: timedelta,
) -> RotationSchedule:
    """Creates or replaces the connection's schedule; returns it as it now stands."""
    sid = schedule_id(org_id, connection_id)
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            temporal.ROOT_ROTATION_WORKFLOW,
            workflows_pb2.RootRotationInput(connection_id=str(connection_id)),
            id=sid,
            task_queue=temporal.task_queue(str(org_id)),
            execution_timeout=execution_timeout,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=interval)]),
        # An agent that is down for a while rotates once when it is back, not once per
        # missed interval.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=interval),
    )
    handle = client.get_schedule_handle(sid)
    try:
        await client.create_schedule(sid, schedule)
    except ScheduleAlreadyRunningError:
        await handle.update(lambda _: ScheduleUpdate(schedule=schedule))
    return await get(client, org_id, connection_id)


async def get(client: Client, org_id: uuid.UUID, connection_id: uuid.UUID) -> RotationSchedule:
    """The connection's schedule, or NO_SCHEDULE."""
    try:
        described = await client.get_schedule_handle(schedule_id(org_id, connection_id)).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return NO_SCHEDULE
        raise
    intervals = described.schedule.spec.intervals
    upcoming = described.info.next_action_times
    return RotationSchedule(
        interval=intervals[0].every if intervals else None,
        next_rotation=upcoming[0] if upcoming else None,
    )


async def rekey(client: Client, org_id: uuid.UUID, execution_timeout: timedelta) -> int:
    """Writes each of the org's schedules again, so its stored input is encrypted with the key
    ``client`` encrypts with now; returns how many. Old keys can then retire without breaking a
    schedule's next start."""
    prefix = schedule_id(org_id, uuid.UUID(int=0)).removesuffix(str(uuid.UUID(int=0)))
    count = 0
    async for listed in await client.list_schedules():
        if not listed.id.startswith(prefix):
            continue
        connection_id = uuid.UUID(listed.id.removeprefix(prefix))
        current = await get(client, org_id, connection_id)
        if current.interval is not None:
            await put(client, org_id, connection_id, current.interval, execution_timeout)
            count += 1
    return count


async def delete(client: Client, org_id: uuid.UUID, connection_id: uuid.UUID) -> bool:
    """Removes the connection's schedule; False when there was none."""
    return await delete_quietly(client.get_schedule_handle(schedule_id(org_id, connection_id)))


_UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_SCHEDULE_ID = re.compile(f"root-rotation-(?P<org>{_UUID})-(?P<connection>{_UUID})")


async def move_legacy(legacy: Client, org_client: Callable[[uuid.UUID], Awaitable[Client]]) -> int:
    """Moves rotation schedules from the old shared namespace into their orgs' namespaces.

    Run at start-up. Each schedule is created in its org's namespace (same id, same spec, its
    encrypted input copied as it is) before it is deleted from the old one, so a crash in
    between leaves a schedule in both and the next start-up finishes the move. Returns how
    many were moved.
    """
    moved = 0
    async for listed in await legacy.list_schedules():
        match = _SCHEDULE_ID.fullmatch(listed.id)
        if match is None:
            continue
        old = legacy.get_schedule_handle(listed.id)
        try:
            described = await old.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                continue  # Another replica moved it since the listing.
            raise
        target = await org_client(uuid.UUID(match["org"]))
        # Already there when an earlier start-up stopped between creating and deleting.
        with contextlib.suppress(ScheduleAlreadyRunningError):
            await target.create_schedule(listed.id, described.schedule)
        await delete_quietly(old)
        moved += 1
        log.info(
            "rotation schedule moved to its org's namespace", connection_id=match["connection"]
        )
    return moved


async def delete_quietly(handle: ScheduleHandle) -> bool:
    """Deletes a schedule; False when it was already gone."""
    try:
        await handle.delete()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True
