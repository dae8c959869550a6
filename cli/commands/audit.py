"""``sevvo audit``: your org's append-only audit log (admins only)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.client import CALL_TIMEOUT
from cli.inputs import cli_of, pages
from cli.output import Column, JsonValue, key, message_dict
from sevvo.audit.v1 import audit_pb2

app = typer.Typer(help="Read your org's audit log.", no_args_is_help=True)

COLUMNS: list[Column] = [
    ("time", key("occur_time")),
    ("actor", lambda e: f"{e.get('actor_kind')}:{e.get('actor_id')}"),
    ("action", key("action")),
    ("target", lambda e: f"{e.get('target_type')}:{e.get('target_id')}"),
    ("outcome", key("outcome")),
    ("reason", key("reason")),
]


@app.command("list", epilog="Example: sevvo audit list --limit 200 --output json")
def list_events(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many events.")] = 50,
    target: Annotated[
        str | None, typer.Option("--target", metavar="ID", help="Only events about this id.")
    ] = None,
) -> None:
    """List audit events, newest first, following pages up to --limit."""
    cli = cli_of(ctx)
    stub = cli.audit()
    events: list[dict[str, JsonValue]] = []
    for page in pages(
        lambda token: stub.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(
                page_size=min(limit - len(events), 500), page_token=token, target_id=target or ""
            ),
            timeout=CALL_TIMEOUT,
        )
    ):
        events.extend(message_dict(event) for event in page.events)
        if len(events) >= limit:
            break
    events = events[:limit]
    cli.output.records({"events": events}, events, COLUMNS)
