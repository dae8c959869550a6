"""A connection's preview: one read-only statement run through the org's agent.

The rows go to the browser and nowhere else: nothing here logs a result, a cell or the SQL.
A statement the agent's parser rejects comes back with the character it points at; the page
keeps the SQL and shows that character marked, with its line and column.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from console.web import Viewer, backend_of, form_fields, http_status, render, signed_in
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.outcomes import CATALOGUE, PREVIEW_CATEGORIES, Kind
from sevvo.workflows.v1 import workflows_pb2 as wpb

MAX_ROWS = 100
DEFAULT_SQL = "select 1"


@dataclass(frozen=True)
class Marker:
    """Where a rejection points in the statement: the text around the character, and its
    1-based line and column (a position past the end marks the end of the text)."""

    before: str
    at: str
    after: str
    line: int
    column: int


def locate(sql: str, position: int) -> Marker | None:
    """The marker for a 1-based character ``position`` in ``sql``; None for no position."""
    if position <= 0:
        return None
    index = min(position - 1, len(sql))
    before = sql[:index]
    line = before.count("\n") + 1
    column = index - (before.rfind("\n") + 1) + 1
    at = sql[index : index + 1]
    # A position on a line break, or past the end, still needs something to mark.
    shown = at if at and at != "\n" else " "
    after = sql[index + 1 :] if at else ""
    if at == "\n":
        after = "\n" + after
    return Marker(before=before, at=shown, after=after, line=line, column=column)


def normalized_sql(text: str) -> str:
    """The statement as typed: browsers send a textarea's line breaks as CRLF."""
    return text.replace("\r\n", "\n")


@dataclass(frozen=True)
class Failure:
    """A preview that brought back no rows: its category, what happened, what to do."""

    category: str
    message: str
    hint: str
    sqlstate: str = ""


def failure_of(response: opb.PreviewQueryResponse) -> Failure | None:
    """None when the preview ran; else the category, the agent's message and the hint."""
    result = response.result
    if result.category == wpb.PREVIEW_CATEGORY_OK:
        return None
    category = response.run.outcome_category or PREVIEW_CATEGORIES.name(result.category)
    outcome = CATALOGUE.get(category)
    message = result.message or (outcome.message(Kind.PREVIEW) if outcome else "")
    hint = outcome.hint(Kind.PREVIEW) if outcome else ""
    return Failure(category, message or "the preview failed", hint, result.sqlstate)


def receipt_note(result: wpb.PreviewQueryResult) -> tuple[str, bool] | None:
    """The receipt in one sentence and whether it is clean; None when none is owed."""
    if not result.HasField("receipt"):
        return None
    receipt = result.receipt
    if receipt.status == wpb.PREVIEW_RECEIPT_STATUS_CLEAN:
        return "Receipt: clean — nothing was written, locked or ended.", True
    if receipt.status == wpb.PREVIEW_RECEIPT_STATUS_MISSING:
        return (
            "No receipt: the connection was lost before the checks; recorded in the audit log.",
            False,
        )
    if receipt.status == wpb.PREVIEW_RECEIPT_STATUS_NOT_CLEAN:
        return "Receipt not clean: recorded in the audit log as a security event.", False
    return None


async def _connection(request: Request, connection_id: str) -> cpb.Connection:
    backend = backend_of(request)
    connection: cpb.Connection = await backend.connections.GetConnection(
        cpb.GetConnectionRequest(id=connection_id), timeout=backend.call_timeout
    )
    return connection


def _page(
    request: Request,
    viewer: Viewer,
    connection: cpb.Connection,
    sql: str,
    *,
    status_code: int = 200,
    **context: object,
) -> Response:
    return render(
        request,
        "preview.html",
        viewer,
        status_code=status_code,
        connection=connection,
        sql=sql,
        max_rows=MAX_ROWS,
        **context,
    )


@signed_in
async def preview_form(request: Request, viewer: Viewer) -> Response:
    """The SQL editor for a connection."""
    connection = await _connection(request, request.path_params["connection_id"])
    return _page(request, viewer, connection, DEFAULT_SQL)


@signed_in
async def run_preview(request: Request, viewer: Viewer) -> Response:
    """Runs the statement through the agent and shows its rows, or why there are none."""
    connection_id = request.path_params["connection_id"]
    connection = await _connection(request, connection_id)
    sql = normalized_sql((await form_fields(request)).get("sql", ""))
    if not sql.strip():
        return _page(
            request, viewer, connection, sql, status_code=400, field_error="Write a statement."
        )
    backend = backend_of(request)
    try:
        response: opb.PreviewQueryResponse = await backend.orchestrator.PreviewQuery(
            opb.PreviewQueryRequest(connection_id=connection.id, sql=sql),
            timeout=backend.agent_timeout,
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND):
            raise
        # Anything else keeps the statement in the editor, with what went wrong above it.
        details = error_details(exc)
        status = http_status(exc.code())
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT and details.field == "sql":
            return _page(
                request, viewer, connection, sql, status_code=status, field_error=details.message
            )
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            message = "No answer from your agent in time; it may be busy or stopped. Try again."
        elif exc.code() == grpc.StatusCode.UNAVAILABLE:
            message = f"The preview could not be run now; try again. ({details.message})"
        else:
            message = details.message or "The preview could not be run."
        return _page(request, viewer, connection, sql, status_code=status, call_error=message)
    result = response.result
    failure = failure_of(response)
    marker = locate(sql, result.position) if failure is not None else None
    return _page(
        request,
        viewer,
        connection,
        sql,
        status_code=200,
        run=response.run,
        result=result if failure is None else None,
        failure=failure,
        marker=marker,
        receipt=receipt_note(result),
    )


routes: list[BaseRoute] = [
    Route("/connections/{connection_id}/preview", preview_form, methods=["GET"]),
    Route("/connections/{connection_id}/preview", run_preview, methods=["POST"]),
]
