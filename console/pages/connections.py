"""Connections: the list (the form, detail and preview pages build on it)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from console.web import Viewer, backend_of, render, signed_in
from sevvo.connections.v1 import connections_pb2 as cpb

STATUS_NAMES = {
    cpb.CONNECTION_STATUS_PENDING: "not tested",
    cpb.CONNECTION_STATUS_CONNECTED: "connected",
    cpb.CONNECTION_STATUS_ERROR: "failing",
}


@signed_in
async def list_connections(request: Request, viewer: Viewer) -> Response:
    """The org's connections with their status and last test."""
    backend = backend_of(request)
    page = await backend.connections.ListConnections(
        cpb.ListConnectionsRequest(
            page_size=50, page_token=request.query_params.get("page_token", "")
        ),
        timeout=backend.call_timeout,
    )
    return render(
        request,
        "connections.html",
        viewer,
        connections=page.connections,
        next_page_token=page.next_page_token,
        status_names=STATUS_NAMES,
    )


routes: list[BaseRoute] = [
    Route("/connections", list_connections, methods=["GET"]),
]
