"""Models and their syncs: the list, the editor (with a preview of its query), a model's page
with its runs and a chart of them, Sync now, and deletion after a confirmation.

The services check every field; the editor shows each field violation they name next to its
field (``aria-invalid`` and ``aria-describedby``) and keeps what was typed. The schedule is
the one field read here first: ``6h`` becomes seconds before anything is sent.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from console import charts
from console.web import (
    Viewer,
    backend_of,
    form_fields,
    http_status,
    notice,
    redirect,
    render,
    signed_in,
)
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.orchestrator.v1 import models_pb2 as mpb
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.runtime import outcomes
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.outcomes import PREVIEW_CATEGORIES, Kind

NOTICES = {
    "created": "Model created.",
    "updated": "Model saved.",
    "unchanged": "Nothing to save: no field changed.",
    "sync_started": "Sync started in your agent. Reload this page to see how it ends.",
    "deleted": "Model deleted. Its destination table and its past runs stay.",
}

LOAD_MODES = {
    mpb.LOAD_MODE_FULL_REFRESH: "full refresh",
    mpb.LOAD_MODE_INCREMENTAL: "incremental",
}
STATE_NAMES = {
    opb.RUN_STATE_RUNNING: "running",
    opb.RUN_STATE_SUCCEEDED: "succeeded",
    opb.RUN_STATE_FAILED: "failed",
    opb.RUN_STATE_TIMED_OUT: "timed out",
}
# The editor's fields, in order; each Model field an error may name maps onto one of them.
FIELDS = (
    "name",
    "source_connection_id",
    "sql",
    "destination_connection_id",
    "destination_table",
    "load_mode",
    "cursor_column",
    "primary_key",
    "allow_schema_evolution",
    "schedule",
)
_ERROR_FIELDS = {"schedule_interval": "schedule", "connection_id": "source_connection_id"}
_INDEX = re.compile(r"\[\d+\]$")
_DURATION = re.compile(r"^(\d+)\s*([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# How long a page load waits on each running run before showing it as it stands.
POLL_SECONDS = 1
RUNS_SHOWN = 50


@dataclass
class FormErrors:
    """What the services (or the schedule's parsing) refused: per editor field, and the rest."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        name = _INDEX.sub("", path.removeprefix("model.")).rsplit(".", 1)[-1]
        name = _ERROR_FIELDS.get(name, name)
        if name in FIELDS:
            self.fields.setdefault(name, []).append(message)
        else:
            self.general.append(f"{path}: {message}" if path else message)

    def __bool__(self) -> bool:
        return bool(self.fields or self.general)


def errors_of(exc: grpc.aio.AioRpcError) -> FormErrors:
    """The call's refusal by field: every BadRequest violation, else the message."""
    details = error_details(exc)
    errors = FormErrors()
    for path, description in details.violations:
        errors.add(path, description)
    if not details.violations:
        if details.field:
            errors.add(details.field, details.message)
        elif exc.code() == grpc.StatusCode.ALREADY_EXISTS:
            errors.add("name", details.message)
        else:
            errors.general.append(details.message)
    return errors


def format_interval(seconds: int) -> str:
    """``6h``, ``15m``, ``90s``; empty for no schedule."""
    if seconds <= 0:
        return ""
    for unit in ("d", "h", "m"):
        if seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


def parse_interval(text: str) -> int | None:
    """Seconds in ``90s``, ``15m``, ``6h``, ``1d`` (0 for empty or ``off``); None if unreadable."""
    text = text.strip().lower()
    if text in ("", "off"):
        return 0
    match = _DURATION.match(text)
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else None


def form_values(model: mpb.Model | None = None) -> dict[str, str]:
    """The editor's field values for a model (a new model's defaults without one)."""
    if model is None:
        return {name: "" for name in FIELDS} | {"load_mode": "full_refresh"}
    return {
        "name": model.name,
        "source_connection_id": model.source_connection_id,
        "sql": model.sql,
        "destination_connection_id": model.destination_connection_id,
        "destination_table": model.destination_table,
        "load_mode": "incremental"
        if model.load_mode == mpb.LOAD_MODE_INCREMENTAL
        else "full_refresh",
        "cursor_column": model.cursor_column,
        "primary_key": ", ".join(model.primary_key),
        "allow_schema_evolution": "on" if model.allow_schema_evolution else "",
        "schedule": format_interval(model.schedule_interval.seconds),
    }


def model_of(values: Mapping[str, str], errors: FormErrors, model_id: str = "") -> mpb.Model:
    """The Model the editor's values describe; a schedule that cannot be read is an error.

    A full refresh has no cursor and no primary key: what was typed in them is not sent."""
    incremental = values.get("load_mode") == "incremental"
    model = mpb.Model(
        id=model_id,
        name=values.get("name", "").strip(),
        source_connection_id=values.get("source_connection_id", ""),
        sql=values.get("sql", ""),
        destination_connection_id=values.get("destination_connection_id", ""),
        destination_table=values.get("destination_table", "").strip(),
        load_mode=mpb.LOAD_MODE_INCREMENTAL if incremental else mpb.LOAD_MODE_FULL_REFRESH,
        allow_schema_evolution=bool(values.get("allow_schema_evolution")),
    )
    if incremental:
        model.cursor_column = values.get("cursor_column", "").strip()
        model.primary_key.extend(
            part.strip() for part in values.get("primary_key", "").split(",") if part.strip()
        )
    seconds = parse_interval(values.get("schedule", ""))
    if seconds is None:
        errors.add(
            "schedule",
            "must be a duration such as 15m, 6h or 1d (5 minutes to 365 days), or empty",
        )
    else:
        model.schedule_interval.CopyFrom(Duration(seconds=seconds))
    return model


_MASKED = (
    "name",
    "source_connection_id",
    "sql",
    "destination_connection_id",
    "destination_table",
    "load_mode",
    "cursor_column",
    "primary_key",
    "allow_schema_evolution",
    "schedule_interval",
)


def changed_fields(before: mpb.Model, after: mpb.Model) -> list[str]:
    """The Model fields ``after`` changes: the update's field mask."""
    return [name for name in _MASKED if getattr(before, name) != getattr(after, name)]


async def _connections(request: Request) -> list[cpb.Connection]:
    backend = backend_of(request)
    page = await backend.connections.ListConnections(
        cpb.ListConnectionsRequest(page_size=500), timeout=backend.call_timeout
    )
    return list(page.connections)


def _usable(connections: Sequence[cpb.Connection], purpose: int) -> list[cpb.Connection]:
    # A connection without purposes predates them: a Postgres database, both.
    return [c for c in connections if not c.purposes or purpose in c.purposes]


@dataclass(frozen=True)
class PreviewView:
    """A preview's outcome as the editor shows it."""

    ok: bool
    category: str
    message: str
    hint: str
    columns: list[tuple[str, str]]
    rows: list[list[tuple[str, bool, bool]]]
    truncated: bool


def preview_view(response: opb.PreviewQueryResponse) -> PreviewView:
    """Columns, and rows of (text, is NULL, was cut) cells, or why there are none."""
    result = response.result
    outcome = PREVIEW_CATEGORIES.outcome(result.category)
    message = result.message
    if result.position:
        message = f"{message} (at character {result.position})"
    if result.sqlstate:
        message = f"{message} [SQLSTATE {result.sqlstate}]"
    return PreviewView(
        ok=outcome.succeeded,
        category=response.run.outcome_category or outcome.name,
        message=message or outcome.message(Kind.PREVIEW),
        hint=outcome.hint(Kind.PREVIEW),
        columns=[(c.name, c.type_name) for c in result.columns],
        rows=[[(c.text, c.is_null, c.truncated) for c in row.cells] for row in result.rows],
        truncated=result.truncated,
    )


async def _editor(
    request: Request,
    viewer: Viewer,
    values: Mapping[str, str],
    *,
    model: mpb.Model | None = None,
    errors: FormErrors | None = None,
    preview: PreviewView | None = None,
    status_code: int = 200,
) -> Response:
    connections = await _connections(request)
    return render(
        request,
        "model_form.html",
        viewer,
        status_code=status_code,
        model=model,
        values=values,
        errors=errors or FormErrors(),
        preview=preview,
        sources=_usable(connections, cpb.CONNECTION_PURPOSE_SOURCE),
        destinations=_usable(connections, cpb.CONNECTION_PURPOSE_DESTINATION),
    )


async def _preview(
    request: Request, viewer: Viewer, values: Mapping[str, str], model: mpb.Model | None
) -> Response:
    """The editor again, the preview of its SQL on its source connection under it."""
    errors = FormErrors()
    if not values.get("source_connection_id"):
        errors.add("source_connection_id", "choose the connection to preview the query on")
    if not values.get("sql", "").strip():
        errors.add("sql", "write the query to preview")
    if errors:
        return await _editor(request, viewer, values, model=model, errors=errors, status_code=400)
    backend = backend_of(request)
    try:
        response = await backend.orchestrator.PreviewQuery(
            opb.PreviewQueryRequest(
                connection_id=values["source_connection_id"], sql=values["sql"]
            ),
            timeout=backend.agent_timeout,
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            raise
        return await _editor(
            request,
            viewer,
            values,
            model=model,
            errors=errors_of(exc),
            status_code=http_status(exc.code()),
        )
    return await _editor(request, viewer, values, model=model, preview=preview_view(response))


@signed_in
async def list_models(request: Request, viewer: Viewer) -> Response:
    """The org's models: where each reads and writes, how, how often, and its last run."""
    backend = backend_of(request)
    page, connections = await asyncio.gather(
        backend.models.ListModels(
            mpb.ListModelsRequest(
                page_size=50, page_token=request.query_params.get("page_token", "")
            ),
            timeout=backend.call_timeout,
        ),
        _connections(request),
    )
    last_runs = await asyncio.gather(
        *(
            backend.orchestrator.ListRuns(
                opb.ListRunsRequest(model_id=m.id, page_size=1), timeout=backend.call_timeout
            )
            for m in page.models
        )
    )
    return render(
        request,
        "models.html",
        viewer,
        models=[
            (m, runs.runs[0] if runs.runs else None)
            for m, runs in zip(page.models, last_runs, strict=True)
        ],
        names={c.id: c.display_name for c in connections},
        next_page_token=page.next_page_token,
        load_modes=LOAD_MODES,
        state_names=STATE_NAMES,
        format_interval=format_interval,
        notice=notice(request.query_params, NOTICES),
    )


@signed_in
async def new_model(request: Request, viewer: Viewer) -> Response:
    """The editor for a new model."""
    return await _editor(request, viewer, form_values())


@signed_in
async def create_model(request: Request, viewer: Viewer) -> Response:
    """Creates the model (or previews its query: the editor's other button)."""
    values = await form_fields(request)
    if values.get("action") == "preview":
        return await _preview(request, viewer, values, None)
    errors = FormErrors()
    model = model_of(values, errors)
    if errors:
        return await _editor(request, viewer, values, errors=errors, status_code=400)
    backend = backend_of(request)
    try:
        created = await backend.models.CreateModel(
            mpb.CreateModelRequest(model=model), timeout=backend.call_timeout
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            raise
        return await _editor(
            request, viewer, values, errors=errors_of(exc), status_code=http_status(exc.code())
        )
    return redirect(f"/models/{created.id}?notice=created")


async def _get_model(request: Request) -> mpb.Model:
    backend = backend_of(request)
    model: mpb.Model = await backend.models.GetModel(
        mpb.GetModelRequest(id=request.path_params["model_id"]), timeout=backend.call_timeout
    )
    return model


@signed_in
async def edit_model(request: Request, viewer: Viewer) -> Response:
    """The editor over a model's fields."""
    model = await _get_model(request)
    return await _editor(request, viewer, form_values(model), model=model)


@signed_in
async def update_model(request: Request, viewer: Viewer) -> Response:
    """Saves the fields that changed (the update's field mask names exactly them)."""
    values = await form_fields(request)
    current = await _get_model(request)
    if values.get("action") == "preview":
        return await _preview(request, viewer, values, current)
    errors = FormErrors()
    model = model_of(values, errors, current.id)
    if errors:
        return await _editor(request, viewer, values, model=current, errors=errors, status_code=400)
    mask = changed_fields(current, model)
    if not mask:
        return redirect(f"/models/{current.id}?notice=unchanged")
    backend = backend_of(request)
    try:
        await backend.models.UpdateModel(
            mpb.UpdateModelRequest(model=model, update_mask=FieldMask(paths=mask)),
            timeout=backend.call_timeout,
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            raise
        return await _editor(
            request,
            viewer,
            values,
            model=current,
            errors=errors_of(exc),
            status_code=http_status(exc.code()),
        )
    return redirect(f"/models/{current.id}?notice=updated")


@dataclass(frozen=True)
class RunView:
    """One sync of a model as its page lists it."""

    run: opb.Run
    state: str
    started: str
    rows: str
    bytes: str
    duration: str
    fingerprint: str
    schema_changed: bool
    hint: str


def format_bytes(count: int) -> str:
    """``812 B``, ``1.5 KB``, ``3.2 MB``…"""
    size = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"


def format_ms(ms: int) -> str:
    """``850 ms``, ``12.3 s``, ``4 min 5 s``."""
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms // 60_000} min {ms % 60_000 // 1000} s"


def _time(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def run_view(run: opb.Run) -> RunView:
    has_sync = run.HasField("sync")
    running = run.state == opb.RUN_STATE_RUNNING
    failed = not running and run.state != opb.RUN_STATE_SUCCEEDED
    return RunView(
        run=run,
        state=STATE_NAMES.get(run.state, "unknown"),
        started=_time(run.start_time.ToDatetime(tzinfo=UTC)) if run.HasField("start_time") else "",
        rows=f"{run.sync.rows:,}" if has_sync else "",
        bytes=format_bytes(run.sync.bytes) if has_sync else "",
        duration="" if running else format_ms(run.duration_ms),
        fingerprint=run.sync.schema_fingerprint[:12] if has_sync else "",
        schema_changed=has_sync and run.sync.schema_changed,
        hint=(outcomes.hint_for(run.outcome_category, Kind.SYNC) or "") if failed else "",
    )


def run_charts(runs: Sequence[opb.Run]) -> tuple[Markup, Markup]:
    """SVG charts of the rows each finished sync loaded, and of how long each took."""
    done = [
        r
        for r in runs
        if r.HasField("sync") and r.HasField("start_time") and r.state != opb.RUN_STATE_RUNNING
    ]
    rows = charts.line_chart(
        [(r.start_time.ToDatetime(tzinfo=UTC), float(r.sync.rows)) for r in done],
        chart_id="chart-rows",
        title="Rows loaded per sync",
        description="The rows each sync of this model loaded, by when it started.",
        unit="rows",
    )
    durations = charts.line_chart(
        [(r.start_time.ToDatetime(tzinfo=UTC), r.duration_ms / 1000) for r in done],
        chart_id="chart-duration",
        title="Duration of each sync",
        description="How long each sync of this model took, by when it started.",
        unit="s",
        format_value=lambda v: f"{v:,.1f}",
    )
    # Safe: line_chart escapes every piece of text it puts in the SVG.
    return Markup(rows), Markup(durations)  # noqa: S704


@signed_in
async def show_model(request: Request, viewer: Viewer) -> Response:
    """A model's definition, its actions, and its runs (running ones polled briefly first)."""
    backend = backend_of(request)
    model = await _get_model(request)
    listed, connections = await asyncio.gather(
        backend.orchestrator.ListRuns(
            opb.ListRunsRequest(model_id=model.id, page_size=RUNS_SHOWN),
            timeout=backend.call_timeout,
        ),
        _connections(request),
    )
    runs = list(listed.runs)
    running = [i for i, r in enumerate(runs) if r.state == opb.RUN_STATE_RUNNING]
    polled = await asyncio.gather(
        *(
            backend.orchestrator.WaitRun(
                opb.WaitRunRequest(id=runs[i].id, timeout=Duration(seconds=POLL_SECONDS)),
                timeout=POLL_SECONDS + backend.call_timeout,
            )
            for i in running
        )
    )
    for i, run in zip(running, polled, strict=True):
        runs[i] = run
    return render(
        request,
        "model.html",
        viewer,
        **model_page(
            model,
            runs,
            {c.id: c.display_name for c in connections},
            notice(request.query_params, NOTICES),
        ),
    )


def model_page(
    model: mpb.Model, runs: Sequence[opb.Run], names: Mapping[str, str], shown: str | None
) -> dict[str, Any]:
    """The model page's context: its definition, runs and charts, and the notice to show
    (``sync_started`` only while a sync is still running: then the runs table says how)."""
    rows_chart, duration_chart = run_charts(runs)
    any_running = any(r.state == opb.RUN_STATE_RUNNING for r in runs)
    if shown == NOTICES["sync_started"] and not any_running:
        shown = None
    return {
        "model": model,
        "names": names,
        "load_modes": LOAD_MODES,
        "schedule": format_interval(model.schedule_interval.seconds),
        "runs": [run_view(r) for r in runs],
        "any_running": any_running,
        "rows_chart": rows_chart,
        "duration_chart": duration_chart,
        "notice": shown,
    }


@signed_in
async def sync_model(request: Request, viewer: Viewer) -> Response:
    """Starts a sync now; its run shows on the model's page."""
    backend = backend_of(request)
    model_id = request.path_params["model_id"]
    await backend.models.SyncModel(mpb.SyncModelRequest(id=model_id), timeout=backend.call_timeout)
    return redirect(f"/models/{model_id}?notice=sync_started")


@signed_in
async def confirm_delete(request: Request, viewer: Viewer) -> Response:
    """Asks before deleting: what goes (the model, its schedule) and what stays."""
    model = await _get_model(request)
    return render(request, "model_delete.html", viewer, model=model)


@signed_in
async def delete_model(request: Request, viewer: Viewer) -> Response:
    """Deletes the model after the confirmation page's button."""
    backend = backend_of(request)
    await backend.models.DeleteModel(
        mpb.DeleteModelRequest(id=request.path_params["model_id"]), timeout=backend.call_timeout
    )
    return redirect("/models?notice=deleted")


routes: list[BaseRoute] = [
    Route("/models", list_models, methods=["GET"]),
    Route("/models", create_model, methods=["POST"]),
    Route("/models/new", new_model, methods=["GET"]),
    Route("/models/{model_id}", show_model, methods=["GET"]),
    Route("/models/{model_id}/edit", edit_model, methods=["GET"]),
    Route("/models/{model_id}/edit", update_model, methods=["POST"]),
    Route("/models/{model_id}/sync", sync_model, methods=["POST"]),
    Route("/models/{model_id}/delete", confirm_delete, methods=["GET"]),
    Route("/models/{model_id}/delete", delete_model, methods=["POST"]),
]
