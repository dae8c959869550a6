"""Deployments: the list, a new deployment (its token shown once) and revoking one.

The token CreateDeployment returns is put in the page that answers the POST and nowhere
else: not in a redirect, a cookie, the session, a log or the browser's storage. Every response
carries Cache-Control: no-store (security.SECURITY_HEADERS), so going back or reloading the
list never shows it again; only a new deployment gets a new token.
"""

from __future__ import annotations

import grpc
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from console.web import (
    Viewer,
    backend_of,
    form_fields,
    notice,
    redirect,
    render,
    signed_in,
)
from sevvo.auth.v1 import deployments_pb2 as dpb
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.logs import get_logger

log = get_logger(__name__)

STATE_NAMES = {
    dpb.DEPLOYMENT_STATE_ACTIVE: "active",
    dpb.DEPLOYMENT_STATE_REVOKED: "revoked",
}
_NOTICES = {"revoked": "The deployment is revoked: its agent is refused and stops within seconds."}
PAGE_SIZE = 50


async def _list_page(
    request: Request,
    viewer: Viewer,
    *,
    status_code: int = 200,
    name: str = "",
    name_error: str | None = None,
) -> Response:
    backend = backend_of(request)
    page = await backend.deployments.ListDeployments(
        dpb.ListDeploymentsRequest(
            page_size=PAGE_SIZE, page_token=request.query_params.get("page_token", "")
        ),
        timeout=backend.call_timeout,
    )
    return render(
        request,
        "deployments.html",
        viewer,
        status_code=status_code,
        deployments=page.deployments,
        next_page_token=page.next_page_token,
        state_names=STATE_NAMES,
        revoked=dpb.DEPLOYMENT_STATE_REVOKED,
        notice=notice(request.query_params, _NOTICES),
        name=name,
        name_error=name_error,
    )


@signed_in
async def list_deployments(request: Request, viewer: Viewer) -> Response:
    """The org's deployments, oldest first, and (for admins) the new deployment form."""
    return await _list_page(request, viewer)


@signed_in
async def create_deployment(request: Request, viewer: Viewer) -> Response:
    """Creates a deployment and answers with its token, shown this once (never a redirect)."""
    fields = await form_fields(request)
    name = fields.get("display_name", "").strip()
    backend = backend_of(request)
    try:
        created = await backend.deployments.CreateDeployment(
            dpb.CreateDeploymentRequest(display_name=name), timeout=backend.call_timeout
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
            raise
        # The name is shown back to be corrected, with the service's words for what is wrong.
        return await _list_page(
            request, viewer, status_code=400, name=name, name_error=error_details(exc).message
        )
    log.info("console.deployment_created", deployment_id=created.deployment.id)
    return render(
        request,
        "deployment_created.html",
        viewer,
        deployment=created.deployment,
        token=created.deployment_token,
    )


@signed_in
async def confirm_revoke(request: Request, viewer: Viewer) -> Response:
    """Asks before revoking: there is no undo."""
    backend = backend_of(request)
    deployment = await backend.deployments.GetDeployment(
        dpb.GetDeploymentRequest(id=request.path_params["id"]), timeout=backend.call_timeout
    )
    return render(
        request,
        "deployment_revoke.html",
        viewer,
        deployment=deployment,
        already_revoked=deployment.state == dpb.DEPLOYMENT_STATE_REVOKED,
    )


@signed_in
async def revoke_deployment(request: Request, viewer: Viewer) -> Response:
    """Revokes the deployment; back to the list with a notice."""
    backend = backend_of(request)
    revoked = await backend.deployments.RevokeDeployment(
        dpb.RevokeDeploymentRequest(id=request.path_params["id"]), timeout=backend.call_timeout
    )
    log.info("console.deployment_revoked", deployment_id=revoked.id)
    return redirect("/deployments?notice=revoked")


routes: list[BaseRoute] = [
    Route("/deployments", list_deployments, methods=["GET"]),
    Route("/deployments", create_deployment, methods=["POST"]),
    Route("/deployments/{id}/revoke", confirm_revoke, methods=["GET"]),
    Route("/deployments/{id}/revoke", revoke_deployment, methods=["POST"]),
]
