"""A dynamic connection's root rotation: rotate the privileged password now, or on a schedule.

A rotation is a run: the page shows the run it started (``?run=<id>``) as it stands, with a
link to look again; the password itself never reaches the console.
"""

from __future__ import annotations

from urllib.parse import quote

import grpc
from google.protobuf.duration_pb2 import Duration
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from console.web import Viewer, backend_of, form_fields, notice, redirect, render, signed_in
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.runtime.outcomes import CATALOGUE, Kind

MIN_HOURS, MAX_HOURS = 1, 365 * 24
RUN_STATES = {
    opb.RUN_STATE_RUNNING: "running",
    opb.RUN_STATE_SUCCEEDED: "succeeded",
    opb.RUN_STATE_FAILED: "failed",
    opb.RUN_STATE_TIMED_OUT: "timed out",
}
NOTICES = {
    "rotation-started": "Rotation started: refresh to see how it ends.",
    "schedule-set": "Rotation schedule saved.",
    "schedule-deleted": "Rotation schedule removed.",
    "schedule-none": "There was no rotation schedule to remove.",
}


def interval_hours(text: str) -> int | None:
    """The form's interval as whole hours within the API's bounds; None when it is not."""
    try:
        hours = int(text.strip())
    except ValueError:
        return None
    return hours if MIN_HOURS <= hours <= MAX_HOURS else None


def _url(connection_id: str, **query: str) -> str:
    tail = "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
    return f"/connections/{connection_id}/rotation" + (f"?{tail}" if tail else "")


async def _page(
    request: Request, viewer: Viewer, *, status_code: int = 200, **context: object
) -> Response:
    backend = backend_of(request)
    connection = await backend.connections.GetConnection(
        cpb.GetConnectionRequest(id=request.path_params["connection_id"]),
        timeout=backend.call_timeout,
    )
    dynamic = connection.credential_mode == cpb.CREDENTIAL_MODE_DYNAMIC
    schedule = None
    if dynamic:
        schedule = await backend.orchestrator.GetRootRotationSchedule(
            opb.GetRootRotationScheduleRequest(connection_id=connection.id),
            timeout=backend.call_timeout,
        )
    run = None
    run_id = request.query_params.get("run", "")
    if run_id:
        try:
            run = await backend.orchestrator.GetRun(
                opb.GetRunRequest(id=run_id), timeout=backend.call_timeout
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise
        if run is not None and run.connection_id != connection.id:
            run = None
    outcome = CATALOGUE.get(run.outcome_category) if run is not None else None
    return render(
        request,
        "rotation.html",
        viewer,
        status_code=status_code,
        connection=connection,
        dynamic=dynamic,
        schedule=schedule,
        has_schedule=schedule is not None and schedule.interval.seconds > 0,
        run=run,
        run_state=RUN_STATES.get(run.state, "unknown") if run is not None else "",
        run_hint=outcome.hint(Kind.ROOT_ROTATION) if outcome is not None else "",
        notice=notice(request.query_params, NOTICES),
        min_hours=MIN_HOURS,
        max_hours=MAX_HOURS,
        **context,
    )


@signed_in
async def rotation(request: Request, viewer: Viewer) -> Response:
    """The rotation page: the last run started here, the schedule, the forms."""
    return await _page(request, viewer)


@signed_in
async def rotate_now(request: Request, viewer: Viewer) -> Response:
    """Starts a rotation and comes back to the page showing its run."""
    backend = backend_of(request)
    run = await backend.orchestrator.RotateRootCredentials(
        opb.RotateRootCredentialsRequest(connection_id=request.path_params["connection_id"]),
        timeout=backend.call_timeout,
    )
    return redirect(_url(run.connection_id, notice="rotation-started", run=run.id))


@signed_in
async def set_schedule(request: Request, viewer: Viewer) -> Response:
    """Sets the rotation interval (whole hours)."""
    backend = backend_of(request)
    text = (await form_fields(request)).get("interval_hours", "")
    hours = interval_hours(text)
    if hours is None:
        return await _page(
            request,
            viewer,
            status_code=400,
            interval_error=f"Give a whole number of hours from {MIN_HOURS} to {MAX_HOURS}.",
            interval_text=text,
        )
    schedule = await backend.orchestrator.SetRootRotationSchedule(
        opb.SetRootRotationScheduleRequest(
            connection_id=request.path_params["connection_id"],
            interval=Duration(seconds=hours * 3600),
        ),
        timeout=backend.call_timeout,
    )
    return redirect(_url(schedule.connection_id, notice="schedule-set"))


@signed_in
async def delete_schedule(request: Request, viewer: Viewer) -> Response:
    """Removes the rotation schedule."""
    backend = backend_of(request)
    connection_id = request.path_params["connection_id"]
    answer = await backend.orchestrator.DeleteRootRotationSchedule(
        opb.DeleteRootRotationScheduleRequest(connection_id=connection_id),
        timeout=backend.call_timeout,
    )
    return redirect(
        _url(connection_id, notice="schedule-deleted" if answer.deleted else "schedule-none")
    )


routes: list[BaseRoute] = [
    Route("/connections/{connection_id}/rotation", rotation, methods=["GET"]),
    Route("/connections/{connection_id}/rotation/rotate", rotate_now, methods=["POST"]),
    Route("/connections/{connection_id}/rotation/schedule", set_schedule, methods=["POST"]),
    Route(
        "/connections/{connection_id}/rotation/schedule/delete", delete_schedule, methods=["POST"]
    ),
]
