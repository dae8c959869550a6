"""A run: where it stands, and how it ended. Long work (tests, rotations, syncs) returns a run
at once; its page can be left and come back to, and reloads itself while the run is running."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from console.web import Viewer, backend_of, render, signed_in
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.runtime import outcomes
from sevvo.runtime.outcomes import Kind

KINDS = {
    opb.RUN_KIND_CREDENTIAL_TEST: ("credential test", Kind.CREDENTIAL_TEST),
    opb.RUN_KIND_PREVIEW: ("preview", Kind.PREVIEW),
    opb.RUN_KIND_ROOT_ROTATION: ("root rotation", Kind.ROOT_ROTATION),
    opb.RUN_KIND_SYNC: ("sync", Kind.SYNC),
}
STATES = {
    opb.RUN_STATE_RUNNING: "running",
    opb.RUN_STATE_SUCCEEDED: "succeeded",
    opb.RUN_STATE_FAILED: "failed",
    opb.RUN_STATE_TIMED_OUT: "timed out",
}
# How often a running run's page reloads itself (a meta refresh: no script needed).
REFRESH_SECONDS = 3
# How long a page load waits for a running run to end before showing it as running.
_WAIT_SECONDS = 1


@signed_in
async def show_run(request: Request, viewer: Viewer) -> Response:
    """The run's state, its outcome as the user's guide words it, and its metadata."""
    backend = backend_of(request)
    run = await backend.orchestrator.GetRun(
        opb.GetRunRequest(id=request.path_params["run_id"]), timeout=backend.call_timeout
    )
    if run.state == opb.RUN_STATE_RUNNING:
        run = await backend.orchestrator.WaitRun(
            opb.WaitRunRequest(id=run.id, timeout=Duration(seconds=_WAIT_SECONDS)),
            timeout=backend.call_timeout,
        )
    kind_name, kind = KINDS.get(run.kind, ("run", Kind.RUN))
    outcome = outcomes.get(run.outcome_category) if run.outcome_category else None
    return render(
        request,
        "run.html",
        viewer,
        run=run,
        kind_name=kind_name,
        state=STATES.get(run.state, "unknown"),
        running=run.state == opb.RUN_STATE_RUNNING,
        refresh_seconds=REFRESH_SECONDS,
        outcome_message=outcome.message(kind) if outcome else "",
        hint=(outcome.hint(kind) if outcome and not outcome.succeeded else "") or "",
    )


routes: list[BaseRoute] = [Route("/runs/{run_id}", show_run, methods=["GET"])]
