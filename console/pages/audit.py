"""Audit: the org's audit trail, newest first, filtered and paged as ListAuditEvents allows,
and the same filtered events exported as JSON Lines.

The filters are a GET form's, so a filtered view is a URL to share; they are the API's
(action or action prefix, actor by id or email, target id, time range), read the way
``sevvo audit list`` reads them. A page token holds only with the filters it came with: the
Next link carries both.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import grpc
from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from console.backend import Backend, acting_as
from console.web import Viewer, backend_of, error_page, render, signed_in
from sevvo.audit.v1 import audit_pb2 as apb
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.logs import get_logger

log = get_logger(__name__)

PAGE_SIZE = 50
EXPORT_PAGE_SIZE = 500
# An export stops after this many events; narrow the filters (a time range) for the rest.
EXPORT_LIMIT = 100_000
FILTERS = ("action", "actor", "target", "since", "until")

ACTOR_KINDS = {
    apb.ACTOR_KIND_USER: "user",
    apb.ACTOR_KIND_AGENT: "agent",
    apb.ACTOR_KIND_SYSTEM: "system",
    apb.ACTOR_KIND_WORKLOAD: "workload",
}
OUTCOMES = {apb.AUDIT_OUTCOME_SUCCESS: "success", apb.AUDIT_OUTCOME_FAILURE: "failure"}


class FilterError(ValueError):
    """A filter the form sent cannot be read (the message says which and why)."""


@dataclass(frozen=True)
class Filters:
    """The audit filters from a query string, as the form shows them back."""

    values: dict[str, str]
    request: apb.ListAuditEventsRequest

    def query(self, **extra: str) -> str:
        """The filters (the set ones) and ``extra`` as a query string."""
        return urlencode({k: v for k, v in {**self.values, **extra}.items() if v})


def parse_time(name: str, text: str) -> datetime:
    """A form's time: ISO-8601 (a datetime-local field's ``2026-05-01T09:30``, or a date);
    without an offset it is UTC, as the table shows times."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(
            f"{name}: {text!r} is not a time such as 2026-05-01 or 2026-05-01T09:30"
        ) from None
    return when if when.utcoffset() is not None else when.replace(tzinfo=UTC)


def filters_of(query: Mapping[str, str]) -> Filters:
    """The ListAuditEventsRequest (no paging) the query's filters ask for.

    Actor: an email (has an @) is matched by email, case-insensitively; anything else is a
    user's or deployment's id, or ``sevvo`` for the control plane. Raises FilterError for a
    time that cannot be read; the service judges the rest.
    """
    values = {name: query.get(name, "").strip() for name in FILTERS}
    request = apb.ListAuditEventsRequest(action=values["action"], target_id=values["target"])
    actor = values["actor"]
    if "@" in actor:
        request.actor_email = actor
    else:
        request.actor_id = actor
    if values["since"]:
        request.start_time.FromDatetime(parse_time("From", values["since"]))
    if values["until"]:
        request.end_time.FromDatetime(parse_time("Until", values["until"]))
    return Filters(values, request)


def event_json(event: apb.AuditEvent) -> str:
    """One event as a JSON Lines line (protobuf's JSON mapping, proto field names)."""
    data = json_format.MessageToDict(event, preserving_proto_field_name=True)
    return json.dumps(data, separators=(",", ":"), sort_keys=True) + "\n"


async def _page(
    backend: Backend, filters: Filters, page_token: str, page_size: int
) -> apb.ListAuditEventsResponse:
    request = apb.ListAuditEventsRequest()
    request.CopyFrom(filters.request)
    request.page_size, request.page_token = page_size, page_token
    response: apb.ListAuditEventsResponse = await backend.audit.ListAuditEvents(
        request, timeout=backend.call_timeout
    )
    return response


@signed_in
async def audit_trail(request: Request, viewer: Viewer) -> Response:
    """One page of the filtered audit trail, newest first, with a Next link."""
    backend = backend_of(request)
    context: dict[str, Any] = {
        "actor_kinds": ACTOR_KINDS,
        "outcomes": OUTCOMES,
        "failure": apb.AUDIT_OUTCOME_FAILURE,
        "export_limit": EXPORT_LIMIT,
    }
    try:
        filters = filters_of(request.query_params)
        page = await _page(backend, filters, request.query_params.get("page_token", ""), PAGE_SIZE)
    except FilterError as exc:
        return _refused(request, viewer, context, str(exc))
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
            raise
        return _refused(request, viewer, context, error_details(exc).message)
    return render(
        request,
        "audit.html",
        viewer,
        values=filters.values,
        events=page.events,
        filtered=any(filters.values.values()),
        first_page=not request.query_params.get("page_token"),
        next_url=(
            f"/audit?{filters.query(page_token=page.next_page_token)}"
            if page.next_page_token
            else None
        ),
        newest_url=f"/audit?{filters.query()}".rstrip("?"),
        export_url=f"/audit/export?{filters.query()}".rstrip("?"),
        **context,
    )


def _refused(request: Request, viewer: Viewer, context: dict[str, Any], message: str) -> Response:
    """The form again, with what is wrong with its filters, and no events."""
    values = {name: request.query_params.get(name, "").strip() for name in FILTERS}
    return render(
        request,
        "audit.html",
        viewer,
        status_code=400,
        values=values,
        events=[],
        error=message,
        **context,
    )


@signed_in
async def export(request: Request, viewer: Viewer) -> Response:
    """The filtered events as JSON Lines, newest first, page by page, at most EXPORT_LIMIT.

    The first page is read before answering, so a refused call (not an admin, a bad filter)
    is an error page; a later page's failure breaks the download off (no final chunk), so a
    client never takes a partial export for a whole one.
    """
    backend = backend_of(request)
    try:
        filters = filters_of(request.query_params)
    except FilterError as exc:
        return error_page(request, viewer, str(exc), 400)
    first = await _page(backend, filters, "", EXPORT_PAGE_SIZE)

    async def lines() -> AsyncIterator[str]:
        # The response streams after the handler returned, outside the signed-in block:
        # each later call is made as the viewer again.
        page, sent = first, 0
        while True:
            for event in page.events[: EXPORT_LIMIT - sent]:
                yield event_json(event)
            sent += min(len(page.events), EXPORT_LIMIT - sent)
            if not page.next_page_token:
                break
            if sent >= EXPORT_LIMIT:
                log.warning("console.audit_export_capped", org_id=viewer.org_id, events=sent)
                break
            with acting_as(viewer.token):
                page = await _page(backend, filters, page.next_page_token, EXPORT_PAGE_SIZE)
        log.info("console.audit_exported", org_id=viewer.org_id, events=sent)

    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={"content-disposition": 'attachment; filename="sevvo-audit.jsonl"'},
    )


routes: list[BaseRoute] = [
    Route("/audit", audit_trail, methods=["GET"]),
    Route("/audit/export", export, methods=["GET"]),
]
