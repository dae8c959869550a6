"""The console's ASGI application: its pages, static files and security headers."""

from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from console import security
from console.backend import Backend
from console.pages import (
    audit,
    connections,
    deployments,
    leases,
    models,
    preview,
    roles,
    rotation,
    runs,
    session,
)
from console.web import STATIC, error_page
from sevvo.runtime.logs import get_logger

log = get_logger(__name__)

PAGE_MODULES = (
    session,
    connections,
    preview,
    leases,
    roles,
    rotation,
    runs,
    models,
    deployments,
    audit,
)
_HEADERS = [(k.encode(), v.encode()) for k, v in security.SECURITY_HEADERS.items()]


class SecurityHeaders:
    """Adds the console's security headers (security.SECURITY_HEADERS) to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.decode("latin-1").lower() not in security.SECURITY_HEADERS
                ]
                message = {**message, "headers": kept + _HEADERS}
            await send(message)

        await self.app(scope, receive, with_headers)


async def _home(request: Request) -> Response:
    return RedirectResponse("/connections", status_code=303)


async def _health(request: Request) -> Response:
    return PlainTextResponse("ok")


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_page(request, None, "there is no such page", 404)


async def _failed(request: Request, exc: Exception) -> Response:
    log.error("console.page_failed", path=request.url.path, error=type(exc).__name__)
    return error_page(request, None, "the console failed to show this page; try again", 500)


def create_app(backend: Callable[[], Backend]) -> ASGIApp:
    """The console over the backend ``backend()`` returns (made on the serving event loop);
    every page calls the services as its signed-in user."""
    routes: list[BaseRoute] = [
        Route("/", _home, methods=["GET"]),
        Route("/healthz", _health, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    for module in PAGE_MODULES:
        routes += module.routes
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 500: _failed})
    app.state.backend_factory = backend
    return SecurityHeaders(app)
