"""What every page shares: the signed-in viewer, rendering, forms with CSRF, service errors.

A page handler is ``async def page(request, viewer) -> Response`` wrapped by ``signed_in``:
the wrapper reads the session cookie, calls the services as that user for the rest of the
request, refuses a POST without the session's CSRF token, and turns the services' errors into
pages (an expired or revoked session goes back to the sign-in form).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from console import security
from console.backend import Backend, acting_as
from sevvo.auth.v1 import auth_pb2, users_pb2
from sevvo.runtime.grpc_client import ErrorDetails, error_details
from sevvo.runtime.logs import get_logger

log = get_logger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

_ROLE_NAMES = {users_pb2.USER_ROLE_ADMIN: "admin", users_pb2.USER_ROLE_MEMBER: "member"}


@dataclass(frozen=True)
class Viewer:
    """The signed-in user a request acts for, as auth verified their session."""

    token: str = field(repr=False)
    org_id: str
    user_id: str
    email: str
    role: str
    org_name: str = ""

    @property
    def is_admin(self) -> bool:
        """Whether the user is an admin of the org (the services decide; pages only hide)."""
        return self.role == "admin"

    @property
    def csrf(self) -> str:
        """The CSRF token every form of this session carries."""
        return security.csrf_token(self.token)


Handler = Callable[[Request, Viewer], Awaitable[Response]]


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["csrf_field"] = security.CSRF_FIELD
    return env


_templates = _environment()


def backend_of(request: Request) -> Backend:
    """The app's backend (made on first use, on the serving event loop)."""
    backend: Backend = request.app.state.backend_factory()
    return backend


def render(
    request: Request,
    template: str,
    viewer: Viewer | None = None,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """The template rendered (autoescaped) with the viewer and the path for the nav."""
    page = _templates.get_template(template).render(viewer=viewer, path=request.url.path, **context)
    return HTMLResponse(page, status_code=status_code)


def redirect(url: str) -> RedirectResponse:
    """A 303 to ``url`` (a POST's answer: the browser then GETs it)."""
    return RedirectResponse(url, status_code=303)


def sign_in_redirect(request: Request) -> RedirectResponse:
    """To the sign-in form, coming back to this page (a GET's) afterwards."""
    back = request.url.path if request.method == "GET" else "/"
    response = redirect(f"/sign-in?next={quote(back, safe='/')}")
    security.clear_session_cookie(response)
    return response


async def load_viewer(backend: Backend, token: str) -> Viewer:
    """The user ``token`` belongs to; raises the services' error when it is not a session."""
    with acting_as(token):
        caller = await backend.auth.GetCaller(
            auth_pb2.GetCallerRequest(), timeout=backend.call_timeout
        )
        if caller.kind != auth_pb2.PRINCIPAL_KIND_USER:
            raise PermissionError("only users sign in to the console")
        user = await backend.users.GetUser(
            users_pb2.GetUserRequest(id=caller.subject_id), timeout=backend.call_timeout
        )
    return Viewer(
        token=token,
        org_id=caller.org_id,
        user_id=user.id,
        email=user.email,
        role=_ROLE_NAMES.get(user.role, "member"),
        org_name=caller.org_name,
    )


def error_page(
    request: Request, viewer: Viewer | None, error: ErrorDetails | str, status_code: int
) -> HTMLResponse:
    """A page saying what went wrong, in the service's words (which never hold a secret)."""
    message = error if isinstance(error, str) else error.message
    return render(request, "error.html", viewer, status_code=status_code, message=message)


_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status a page answers with for a service's gRPC status."""
    return _STATUS.get(code, 500)


def signed_in(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wraps a page: session, CSRF on POST, the services called as the viewer, errors."""

    @functools.wraps(handler)
    async def page(request: Request) -> Response:
        if request.method == "POST" and not security.same_origin(
            request.headers.get("origin"), request.url.scheme, request.headers.get("host")
        ):
            return error_page(request, None, "this form was sent from another site", 403)
        token = request.cookies.get(security.SESSION_COOKIE)
        if not token:
            return sign_in_redirect(request)
        backend = backend_of(request)
        try:
            viewer = await load_viewer(backend, token)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND):
                return sign_in_redirect(request)
            return error_page(request, None, error_details(exc), http_status(exc.code()))
        except PermissionError as exc:
            return error_page(request, None, str(exc), 403)
        if request.method == "POST":
            form = await request.form()
            if not security.csrf_valid(token, _text(form, security.CSRF_FIELD)):
                return error_page(
                    request, viewer, "the form expired or was not sent from this page", 403
                )
        with acting_as(token):
            try:
                return await handler(request, viewer)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                    return sign_in_redirect(request)
                return error_page(request, viewer, error_details(exc), http_status(exc.code()))

    return page


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


async def form_fields(request: Request) -> dict[str, str]:
    """The request's form as text fields (files are not accepted anywhere); parsed once."""
    form = await request.form()
    return {key: value for key, value in form.multi_items() if isinstance(value, str)}


def notice(query: Mapping[str, str], notices: Mapping[str, str]) -> str | None:
    """The fixed message a redirect asked to show (``?notice=...``); unknown names show none,
    so no text from a URL is ever put on a page."""
    return notices.get(query.get("notice", ""))
