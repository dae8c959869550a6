"""A dynamic connection's named roles: the kinds of login role the agent mints for workloads,
each with its own statements and lease lifetimes. Adding or changing one is dry-run through
the org's agent first (the service's rule); a failed dry run saves nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

import grpc
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

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
from sevvo.runtime import outcomes
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.outcomes import Kind

NOTICES = {
    "created": "Role added: the agent dry-ran its statements.",
    "deleted": "Role removed.",
}
FIELDS = (
    "name",
    "default_ttl_seconds",
    "max_ttl_seconds",
    "group_role",
    "creation_statements",
    "revocation_statements",
)


@dataclass
class RoleErrors:
    """What the service refused: messages by form field, and one for the whole form."""

    fields: dict[str, str] = field(default_factory=dict)
    form: str = ""
    hint: str = ""


def statements(text: str) -> list[str]:
    """The statements of a textarea: separated by blank lines, each kept as typed (a
    statement may span lines; splitting on semicolons would cut literals)."""
    blocks, current = [], []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.strip():
            current.append(line)
        elif current:
            blocks.append("\n".join(current).strip())
            current = []
    if current:
        blocks.append("\n".join(current).strip())
    return blocks


def _number(text: str) -> int:
    """A TTL field: 0 (the service's default) when empty; non-numbers also 0 after the browser's
    own check, which type=number enforces."""
    text = text.strip()
    return int(text) if text.isdigit() else 0


def role_request(connection_id: str, values: dict[str, str]) -> cpb.CreateConnectionRoleRequest:
    """The create request for the form's values."""
    return cpb.CreateConnectionRoleRequest(
        connection_id=connection_id,
        name=values.get("name", "").strip(),
        settings=cpb.ConnectionRoleSettings(
            default_ttl_seconds=_number(values.get("default_ttl_seconds", "")),
            max_ttl_seconds=_number(values.get("max_ttl_seconds", "")),
            group_role=values.get("group_role", "").strip(),
            creation_statements=statements(values.get("creation_statements", "")),
            revocation_statements=statements(values.get("revocation_statements", "")),
        ),
    )


def errors_of(exc: grpc.aio.AioRpcError) -> RoleErrors:
    """The service's refusal placed on the form: field violations by the last part of their
    path (``settings.max_ttl_seconds`` → max_ttl_seconds), a failed dry run with its category
    and the guide's hint."""
    details = error_details(exc)
    errors = RoleErrors()
    for path, description in details.violations:
        name = path.rsplit(".", 1)[-1]
        if name in FIELDS:
            errors.fields.setdefault(name, description)
        else:
            errors.form = description
    category = (details.metadata or {}).get("category", "")
    if category:
        outcome = outcomes.get(category)
        errors.form = f"The agent's dry run failed ({category}): " + (
            outcome.message(Kind.CREDENTIAL_TEST) if outcome else details.message
        )
        errors.hint = outcomes.hint_for(category, Kind.CREDENTIAL_TEST) or ""
    elif not errors.fields and not errors.form:
        errors.form = details.message
    return errors


async def _page(
    request: Request,
    viewer: Viewer,
    *,
    values: dict[str, str] | None = None,
    errors: RoleErrors | None = None,
    status_code: int = 200,
) -> Response:
    backend = backend_of(request)
    connection_id = request.path_params["id"]
    connection = await backend.connections.GetConnection(
        cpb.GetConnectionRequest(id=connection_id), timeout=backend.call_timeout
    )
    roles = await backend.connection_roles.ListConnectionRoles(
        cpb.ListConnectionRolesRequest(connection_id=connection_id, page_size=100),
        timeout=backend.call_timeout,
    )
    return render(
        request,
        "roles.html",
        viewer,
        status_code=status_code,
        connection=connection,
        dynamic=connection.credential_mode == cpb.CREDENTIAL_MODE_DYNAMIC,
        roles=roles.roles,
        values=values or {},
        errors=errors or RoleErrors(),
        notice=notice(request.query_params, NOTICES),
    )


@signed_in
async def list_roles(request: Request, viewer: Viewer) -> Response:
    """The connection's roles and the form to add one."""
    return await _page(request, viewer)


@signed_in
async def create_role(request: Request, viewer: Viewer) -> Response:
    """Adds a role (dry-run by the agent first); the page again with what was refused."""
    backend = backend_of(request)
    connection_id = request.path_params["id"]
    values = await form_fields(request)
    try:
        await backend.connection_roles.CreateConnectionRole(
            role_request(connection_id, values), timeout=backend.agent_timeout
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND):
            raise
        return await _page(
            request,
            viewer,
            values=values,
            errors=errors_of(exc),
            status_code=http_status(exc.code()),
        )
    return redirect(f"/connections/{quote(connection_id)}/roles?notice=created")


@signed_in
async def delete_role(request: Request, viewer: Viewer) -> Response:
    """Removes a role (its live leases revoked first when "force" was ticked)."""
    backend = backend_of(request)
    connection_id = request.path_params["id"]
    values = await form_fields(request)
    await backend.connection_roles.DeleteConnectionRole(
        cpb.DeleteConnectionRoleRequest(
            connection_id=connection_id,
            name=request.path_params["name"],
            force=values.get("force") == "yes",
        ),
        timeout=backend.call_timeout,
    )
    return redirect(f"/connections/{quote(connection_id)}/roles?notice=deleted")


routes: list[BaseRoute] = [
    Route("/connections/{id}/roles", list_roles, methods=["GET"]),
    Route("/connections/{id}/roles", create_role, methods=["POST"]),
    Route("/connections/{id}/roles/{name}/delete", delete_role, methods=["POST"]),
]
