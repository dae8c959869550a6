"""``sevvo audit``: your org's append-only audit log (admins only)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.client import CALL_TIMEOUT
from cli.inputs import AllPages, Limit, PageToken, cli_of, collect
from cli.output import Column, key, message_dict
from sevvo.audit.v1 import audit_pb2

app = typer.Typer(help="Read your org's audit log.", no_args_is_help=True)

# Most important first: a narrow terminal drops columns from the end.
COLUMNS: list[Column] = [
    ("time", key("occur_time")),
    ("action", key("action")),
    ("outcome", key("outcome")),
    ("actor", lambda e: f"{e.get('actor_kind')}:{e.get('actor_id')}"),
    ("target", lambda e: f"{e.get('target_type')}:{e.get('target_id')}"),
    ("reason", key("reason")),
]


@app.command("list", epilog="Example: sevvo audit list --limit 200 --output json")
def list_events(
    ctx: typer.Context,
    target: Annotated[
        str | None, typer.Option("--target", metavar="ID", help="Only events about this id.")
    ] = None,
    limit: Limit = 50,
    page_token: PageToken = "",
    everything: AllPages = False,
) -> None:
    """List audit events, newest first; says how to page on when more follow."""
    cli = cli_of(ctx)
    stub = cli.audit()
    listing = collect(
        lambda token, size: stub.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(
                page_size=size, page_token=token, target_id=target or ""
            ),
            timeout=CALL_TIMEOUT,
        ),
        lambda page: (message_dict(event) for event in page.events),
        limit=limit,
        page_token=page_token,
        everything=everything,
    )
    cli.output.listing(
        "events", listing.items, listing.next_page_token, COLUMNS, "sevvo audit list"
    )
