"""``sevvo audit``: your org's append-only audit log (admins only)."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from cli import resolve
from cli.client import CALL_TIMEOUT
from cli.inputs import AllPages, Limit, PageToken, cli_of, collect, parse_time
from cli.output import Column, key, message_dict
from sevvo.audit.v1 import audit_pb2

app = typer.Typer(help="Read your org's audit log.", no_args_is_help=True)


def _actor(event: Mapping[str, Any]) -> str:
    # A person by email; agents and the control plane (and older records) by kind and id.
    return str(event.get("actor_email") or f"{event.get('actor_kind')}:{event.get('actor_id')}")


# Most important first: a narrow terminal drops columns from the end.
COLUMNS: list[Column] = [
    ("time", key("occur_time")),
    ("action", key("action")),
    ("outcome", key("outcome")),
    ("actor", _actor),
    ("target", lambda e: f"{e.get('target_type')}:{e.get('target_id')}"),
    ("reason", key("reason")),
]


@app.command(
    "list",
    epilog="Example: sevvo audit list --action connection. --since 7d\n\n"
    "Example: sevvo audit list --actor ada@acme.example --action user.sign_in --limit 200\n\n"
    "Example: sevvo audit list --target shop --since 2025-05-01 --until 2025-06-01 --all",
)
def list_events(
    ctx: typer.Context,
    action: Annotated[
        str | None,
        typer.Option(
            "--action",
            metavar="ACTION",
            help="Only this action (user.sign_in), or every action under a prefix ending in a"
            " dot (connection.).",
        ),
    ] = None,
    actor: Annotated[
        str | None,
        typer.Option(
            "--actor",
            metavar="WHO",
            help="Only what this user (email, id) or deployment (name, id) did.",
        ),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            metavar="ID",
            help="Only events about this id (or a connection, user or deployment by name).",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="TIME",
            help="From this time on: ISO-8601 (UTC unless it says) or a duration ago (7d).",
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until", metavar="TIME", help="Before this time: ISO-8601 or a duration ago (1h)."
        ),
    ] = None,
    limit: Limit = 50,
    page_token: PageToken = "",
    everything: AllPages = False,
) -> None:
    """List audit events, newest first; says how to page on when more follow.

    A --page-token continues only a listing with the same filters.
    """
    cli = cli_of(ctx)
    request = audit_pb2.ListAuditEventsRequest(action=action or "")
    # The filters as resolved (ids, absolute times): a page token holds only with these.
    again = ["sevvo", "audit", "list"] + (["--action", action] if action else [])
    if actor:
        request.actor_id, request.actor_email = resolve.actor(cli, actor)
        again += ["--actor", request.actor_id or request.actor_email]
    if target:
        request.target_id = resolve.target_id(cli, target)
        again += ["--target", request.target_id]
    if since:
        start = parse_time("--since", since)
        request.start_time.FromDatetime(start)
        again += ["--since", start.isoformat()]
    if until:
        end = parse_time("--until", until)
        request.end_time.FromDatetime(end)
        again += ["--until", end.isoformat()]
    stub = cli.audit()

    def fetch(token: str, size: int) -> audit_pb2.ListAuditEventsResponse:
        page = audit_pb2.ListAuditEventsRequest()
        page.CopyFrom(request)
        page.page_size, page.page_token = size, token
        response: audit_pb2.ListAuditEventsResponse = stub.ListAuditEvents(
            page, timeout=CALL_TIMEOUT
        )
        return response

    listing = collect(
        fetch,
        lambda page: (message_dict(event) for event in page.events),
        limit=limit,
        page_token=page_token,
        everything=everything,
    )
    cli.output.listing("events", listing.items, listing.next_page_token, COLUMNS, shlex.join(again))
