"""Signing in and out: the session cookie is set from auth's SignIn and revoked at SignOut."""

from __future__ import annotations

import time

import grpc
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from console import security
from console.backend import acting_as
from console.web import (
    Viewer,
    backend_of,
    error_page,
    form_fields,
    notice,
    redirect,
    render,
    signed_in,
)
from sevvo.auth.v1 import auth_pb2
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.logs import get_logger

log = get_logger(__name__)

_NOTICES = {"signed_out": "You are signed out."}


def forwarded_for(request: Request) -> tuple[tuple[str, str], ...]:
    """The ``x-forwarded-for`` the console sends auth for a sign-in it makes for a browser.

    The console signs in for its users, so auth would see every one of them at the console's
    address and count their wrong passwords together. It passes the address on as a proxy
    does: the header the request came with (from an ingress in front of it), then the peer
    that sent it. Auth believes it only when told to trust the console's pods (and reads past
    the proxies it trusts from the right, so what a browser writes into the header changes
    nothing).
    """
    hops = [value for value in request.headers.getlist("x-forwarded-for") if value.strip()]
    if request.client is not None and request.client.host:
        hops.append(request.client.host)
    return (("x-forwarded-for", ", ".join(hops)),) if hops else ()


def _next_page(value: str | None) -> str:
    """Where to go after signing in: a path of this console only (never another site)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


async def sign_in_form(request: Request) -> Response:
    """The sign-in form."""
    return render(
        request,
        "sign_in.html",
        next=_next_page(request.query_params.get("next")),
        notice=notice(request.query_params, _NOTICES),
    )


async def sign_in(request: Request) -> Response:
    """Signs in with email and password; on success the session cookie is set."""
    if not security.same_origin(
        request.headers.get("origin"), request.url.scheme, request.headers.get("host")
    ):
        return error_page(request, None, "this form was sent from another site", 403)
    fields = await form_fields(request)
    email = fields.get("email", "").strip()
    next_page = _next_page(fields.get("next"))
    backend = backend_of(request)
    try:
        with acting_as(None):
            signed = await backend.auth.SignIn(
                auth_pb2.SignInRequest(email=email, password=fields.get("password", "")),
                metadata=forwarded_for(request),
                timeout=backend.call_timeout,
            )
    except grpc.aio.AioRpcError as exc:
        details = error_details(exc)
        status = 401 if exc.code() == grpc.StatusCode.UNAUTHENTICATED else 400
        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            status = 429
        # The email is shown back to be corrected; the password never is.
        return render(
            request,
            "sign_in.html",
            status_code=status,
            email=email,
            next=next_page,
            error=details.message,
        )
    response = redirect(next_page)
    lifetime = int(signed.expire_time.ToSeconds() - time.time())
    security.set_session_cookie(response, signed.session_token, lifetime)
    log.info("console.signed_in", user_id=signed.user_id, org_id=signed.org_id)
    return response


@signed_in
async def sign_out(request: Request, viewer: Viewer) -> Response:
    """Revokes the session at auth and clears the cookie."""
    backend = backend_of(request)
    await backend.auth.SignOut(auth_pb2.SignOutRequest(), timeout=backend.call_timeout)
    response = redirect("/sign-in?notice=signed_out")
    security.clear_session_cookie(response)
    log.info("console.signed_out", user_id=viewer.user_id, org_id=viewer.org_id)
    return response


routes: list[BaseRoute] = [
    Route("/sign-in", sign_in_form, methods=["GET"]),
    Route("/sign-in", sign_in, methods=["POST"]),
    Route("/sign-out", sign_out, methods=["POST"]),
]
