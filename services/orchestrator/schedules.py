"""Root-rotation schedules: one Temporal schedule per dynamic connection on the org's queue.

A schedule lives in its org's namespace, so no other org can list, describe or trigger it
where Temporal's authorizer enforces namespaces; its id keeps the org (only visible inside
that namespace) so ids stay as they were before namespaces per org. Its stored input travels
encrypted with the org's payload key like any other, and carries the orchestrator's proof that
the org's admin set the schedule (who, when, how often). The schedule's phase is the moment it
was set, so the agent can tell the runs it produces (``<schedule id>-<set time + n
intervals>``) from a manual trigger (see work_proof).
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio.api.schedule.v1 import Schedule as ScheduleProto
from temporalio.api.workflowservice.v1 import (
    DescribeScheduleRequest,
    DescribeScheduleResponse,
    UpdateScheduleRequest,
)
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

from sevvo.runtime import temporal, work_proof
from sevvo.runtime.errors import InvalidArgument
from sevvo.runtime.logs import get_logger
from sevvo.runtime.payload_codec import PayloadUnreadable
from sevvo.runtime.work_proof import ProofSigner
from sevvo.workflows.v1 import workflows_pb2

log = get_logger(__name__)

MIN_ROTATION_INTERVAL = timedelta(hours=1)
MAX_ROTATION_INTERVAL = timedelta(days=365)
# A run the scheduler starts later than this after its time (it was down) is skipped rather
# than caught up: the agent accepts a scheduled run only near its time.
CATCHUP_WINDOW = timedelta(minutes=10)
_PREFIX = "root-rotation-"
# Who set a schedule that the orchestrator re-proved when it upgraded to proofs.
UPGRADE_SETTER = "system:upgrade"


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
    *,
    signer: ProofSigner | None,
    set_by: str,
    now: datetime | None = None,
) -> RotationSchedule:
    """Creates or replaces the connection's schedule, proved as set by ``set_by`` now.

    Returns the schedule as it now stands. Its runs fall at the moment it was set plus whole
    intervals.
    """
    set_at = (now or datetime.now(UTC)).replace(microsecond=0)
    request = workflows_pb2.RootRotationInput(connection_id=str(connection_id))
    if signer is not None:
        sid = schedule_id(org_id, connection_id)
        _attach_proof(request, signer, org_id, sid, interval, execution_timeout, set_by, set_at)
    await _write(client, org_id, connection_id, interval, execution_timeout, request, set_at)
    return await get(client, org_id, connection_id)


def _attach_proof(
    request: workflows_pb2.RootRotationInput,
    signer: ProofSigner,
    org_id: uuid.UUID,
    sid: str,
    interval: timedelta,
    execution_timeout: timedelta,
    set_by: str,
    set_at: datetime,
) -> None:
    """Attaches to ``request`` the proof that ``set_by`` set schedule ``sid`` at ``set_at``."""
    work_proof.attach(
        request,
        signer.for_schedule(
            org_id=str(org_id),
            workflow_type=temporal.ROOT_ROTATION_WORKFLOW,
            schedule_id=sid,
            message=request,
            interval=timedelta(seconds=int(interval.total_seconds())),
            set_by=set_by,
            set_at=set_at,
            lateness=min(interval, CATCHUP_WINDOW) + execution_timeout,
        ),
    )


def _phase(set_at: datetime, interval: timedelta) -> timedelta:
    """The offset that makes a schedule's runs fall at ``set_at`` plus whole intervals."""
    return timedelta(seconds=int(set_at.timestamp()) % int(interval.total_seconds()))


async def _write(
    client: Client,
    org_id: uuid.UUID,
    connection_id: uuid.UUID,
    interval: timedelta,
    execution_timeout: timedelta,
    request: workflows_pb2.RootRotationInput,
    set_at: datetime,
) -> None:
    """Creates or replaces the schedule with ``request`` as its input, phased at ``set_at``."""
    sid = schedule_id(org_id, connection_id)
    every = int(interval.total_seconds())
    catchup = min(interval, CATCHUP_WINDOW)
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            temporal.ROOT_ROTATION_WORKFLOW,
            request,
            id=sid,
            task_queue=temporal.task_queue(str(org_id)),
            execution_timeout=execution_timeout,
        ),
        spec=ScheduleSpec(
            intervals=[
                ScheduleIntervalSpec(
                    every=timedelta(seconds=every), offset=_phase(set_at, interval)
                )
            ]
        ),
        # A scheduler that was down starts at most one late run, and only within the window
        # the agent accepts; overlapping rotations are skipped.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=catchup),
    )
    handle = client.get_schedule_handle(sid)
    try:
        await client.create_schedule(sid, schedule)
    except ScheduleAlreadyRunningError:
        await handle.update(lambda _: ScheduleUpdate(schedule=schedule))


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


async def rekey(client: Client, org_id: uuid.UUID) -> int:
    """Writes each of the org's schedules again, so its stored input is encrypted with the key
    ``client`` encrypts with now; returns how many. Old keys can then retire without breaking a
    schedule's next start. Everything else is written back as it was: proof, spec and phase."""
    count = 0
    async for listed in await client.list_schedules():
        ids = parse_schedule_id(listed.id)
        if ids is None or ids[0] != org_id:
            continue
        described = await describe(client, listed.id)
        if described is None:
            continue  # Deleted since the listing.
        try:
            rewritten = await reencrypt(client, listed.id, described)
        except PayloadUnreadable:
            # Unreadable with the org's keys, it is unusable to the agent too; the others go on.
            log.warning("schedule not rekeyed: input unreadable", schedule_id=listed.id)
            continue
        count += rewritten
    return count


async def describe(client: Client, sid: str) -> DescribeScheduleResponse | None:
    """The schedule as Temporal stores it (its input still encrypted), with the conflict token
    that a write of it must carry; None when there is none."""
    try:
        return await client.workflow_service.describe_schedule(
            DescribeScheduleRequest(namespace=client.namespace, schedule_id=sid), retry=True
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def reencrypt(client: Client, sid: str, described: DescribeScheduleResponse) -> bool:
    """Writes the schedule ``described`` back with its input encrypted under ``client``'s current
    key; False when the schedule is gone, True when written (or superseded, below).

    The write is an update carrying the description's conflict token, never a create: Temporal
    drops it when the schedule was set again since the description (that write used the current
    key already), and refuses it when the schedule was deleted meanwhile, which stays deleted.
    A create-or-replace here brought a deleted schedule back, and replaced one set meanwhile
    with its old interval.
    """
    schedule, request = await _editable(client, described)
    await _set_input(client, schedule, request)
    return await _update(client, sid, schedule, described.conflict_token)


async def _editable(
    client: Client, described: DescribeScheduleResponse
) -> tuple[ScheduleProto, workflows_pb2.RootRotationInput]:
    """A copy of the described schedule to change, and its input decrypted."""
    schedule = ScheduleProto()
    schedule.CopyFrom(described.schedule)
    (request,) = await client.data_converter.decode(
        list(schedule.action.start_workflow.input.payloads), [workflows_pb2.RootRotationInput]
    )
    assert isinstance(request, workflows_pb2.RootRotationInput)
    return schedule, request


async def _set_input(
    client: Client, schedule: ScheduleProto, request: workflows_pb2.RootRotationInput
) -> None:
    """Sets the schedule's input to ``request``, encrypted with ``client``'s current key."""
    stored = schedule.action.start_workflow.input.payloads
    encoded = await client.data_converter.encode([request])
    del stored[:]
    stored.extend(encoded)


async def _update(client: Client, sid: str, schedule: ScheduleProto, conflict_token: bytes) -> bool:
    """Replaces schedule ``sid`` unless it changed since ``conflict_token`` (Temporal drops the
    update then); False when it is gone."""
    try:
        await client.workflow_service.update_schedule(
            UpdateScheduleRequest(
                namespace=client.namespace,
                schedule_id=sid,
                schedule=schedule,
                conflict_token=conflict_token,
                identity=client.identity,
                request_id=str(uuid.uuid4()),
            ),
            retry=True,
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


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


def parse_schedule_id(sid: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The org and connection of a rotation schedule's id; None for any other id."""
    rest = sid.removeprefix(_PREFIX)
    if rest == sid or len(rest) != 73 or rest[36] != "-":
        return None
    try:
        return uuid.UUID(rest[:36]), uuid.UUID(rest[37:])
    except ValueError:
        return None


async def prove_unproved(
    org_ids: Iterable[uuid.UUID],
    client_for: Callable[[uuid.UUID], Awaitable[Client]],
    signer: ProofSigner,
    execution_timeout: timedelta,
) -> int:
    """Adds a proof to every rotation schedule set before schedules carried one.

    Run at start-up (and after old-layout schedules are moved into their orgs' namespaces):
    such a schedule's runs would otherwise be refused by the agent. Each org's namespace is
    walked; a schedule's interval is kept and its setter recorded as UPGRADE_SETTER. Returns
    how many it proved.
    """
    proved = 0
    for org in org_ids:
        client = await client_for(org)
        async for listed in await client.list_schedules():
            ids = parse_schedule_id(listed.id)
            if ids is None or ids[0] != org:
                continue
            try:
                described = await describe(client, listed.id)
                if described is None or not await prove(
                    client, listed.id, described, signer, execution_timeout
                ):
                    continue
            except Exception as exc:  # One unreadable schedule must not stop the others.
                log.warning(
                    "schedule not re-proved", schedule_id=listed.id, error=type(exc).__name__
                )
                continue
            proved += 1
            log.info("schedule re-proved", schedule_id=listed.id)
    return proved


async def prove(
    client: Client,
    sid: str,
    described: DescribeScheduleResponse,
    signer: ProofSigner,
    execution_timeout: timedelta,
    *,
    now: datetime | None = None,
) -> bool:
    """Writes the unproved schedule ``described`` back with a proof that UPGRADE_SETTER set it
    now, phased at now, its interval kept; False when it has a proof already or is gone.

    Like ``reencrypt``, an update under the description's conflict token: a schedule set or
    deleted meanwhile stays as it was set or deleted.
    """
    ids = parse_schedule_id(sid)
    schedule, request = await _editable(client, described)
    intervals = schedule.spec.interval
    if ids is None or not intervals or request.proof:
        return False
    interval = intervals[0].interval.ToTimedelta()
    set_at = (now or datetime.now(UTC)).replace(microsecond=0)
    _attach_proof(request, signer, ids[0], sid, interval, execution_timeout, UPGRADE_SETTER, set_at)
    await _set_input(client, schedule, request)
    intervals[0].phase.FromTimedelta(_phase(set_at, interval))
    return await _update(client, sid, schedule, described.conflict_token)
