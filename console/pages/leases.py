"""A dynamic connection's leases: the login roles its agent minted, by connection role.

Admins can ask for one lease, or every live lease of the connection, to be revoked; the
agent's reaper then drops the roles. Leases hold no secret, so the page shows them whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from console.web import Viewer, backend_of, form_fields, notice, redirect, render, signed_in
from sevvo.connections.v1 import connections_pb2 as cpb

PAGE_SIZE = 200
STATE_NAMES = {
    number: name.removeprefix("LEASE_STATE_").lower().replace("_", " ")
    for name, number in cpb.LeaseState.items()
}
# Leases a revoke request still applies to (RevokeLeases moves creating and active ones).
REVOCABLE = frozenset({cpb.LEASE_STATE_CREATING, cpb.LEASE_STATE_ACTIVE})
NOTICES = {
    "revoked": "Revoke requested: the agent drops the login role within seconds.",
    "revoked-all": "Revoke requested for every live lease of this connection.",
    "none-revoked": "No lease needed revoking.",
}


@dataclass
class RoleGroup:
    """One connection role's leases: the live ones, and how many are revoked."""

    role: str
    leases: list[cpb.Lease] = field(default_factory=list)
    revoked: int = 0


def group_by_role(leases: Iterable[cpb.Lease], *, with_revoked: bool) -> list[RoleGroup]:
    """Leases per connection role ("default" first, then by name), newest first within one;
    revoked leases are counted, and listed only ``with_revoked``."""
    groups: dict[str, RoleGroup] = {}
    for lease in leases:
        role = lease.role or "default"
        group = groups.setdefault(role, RoleGroup(role))
        if lease.state == cpb.LEASE_STATE_REVOKED:
            group.revoked += 1
            if not with_revoked:
                continue
        group.leases.append(lease)
    return sorted(groups.values(), key=lambda g: (g.role != "default", g.role))


@signed_in
async def list_leases(request: Request, viewer: Viewer) -> Response:
    """The connection's leases grouped by role, with revoke buttons for admins."""
    backend = backend_of(request)
    connection_id = request.path_params["connection_id"]
    connection = await backend.connections.GetConnection(
        cpb.GetConnectionRequest(id=connection_id), timeout=backend.call_timeout
    )
    page = await backend.leases.ListLeases(
        cpb.ListLeasesRequest(
            connection_id=connection.id,
            page_size=PAGE_SIZE,
            page_token=request.query_params.get("page_token", ""),
        ),
        timeout=backend.call_timeout,
    )
    with_revoked = request.query_params.get("revoked") == "shown"
    groups = group_by_role(page.leases, with_revoked=with_revoked)
    return render(
        request,
        "leases.html",
        viewer,
        connection=connection,
        dynamic=connection.credential_mode == cpb.CREDENTIAL_MODE_DYNAMIC,
        groups=groups,
        live=sum(1 for lease in page.leases if lease.state in REVOCABLE),
        with_revoked=with_revoked,
        next_page_token=page.next_page_token,
        state_names=STATE_NAMES,
        revocable=REVOCABLE,
        notice=notice(request.query_params, NOTICES),
    )


@signed_in
async def revoke_leases(request: Request, viewer: Viewer) -> Response:
    """Asks the agent to revoke one lease (``lease_id``) or every live lease of the connection."""
    backend = backend_of(request)
    connection_id = request.path_params["connection_id"]
    lease_id = (await form_fields(request)).get("lease_id", "")
    answer = await backend.leases.RevokeLeases(
        cpb.RevokeLeasesRequest(connection_id=connection_id, lease_id=lease_id),
        timeout=backend.call_timeout,
    )
    outcome = "revoked" if lease_id else "revoked-all"
    if not answer.leases:
        outcome = "none-revoked"
    return redirect(f"/connections/{connection_id}/leases?notice={outcome}")


routes: list[BaseRoute] = [
    Route("/connections/{connection_id}/leases", list_leases, methods=["GET"]),
    Route("/connections/{connection_id}/leases/revoke", revoke_leases, methods=["POST"]),
]
