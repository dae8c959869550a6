"""``sevvo leases``: the login roles agents minted for dynamic connections (no passwords)."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from cli import resolve
from cli.client import CALL_TIMEOUT
from cli.errors import usage_error
from cli.inputs import AllPages, Limit, PageToken, cli_of, collect
from cli.output import Column, JsonValue, key, message_dict
from sevvo.connections.v1 import connections_pb2 as cpb

app = typer.Typer(help="Inspect and revoke dynamic-credential leases.", no_args_is_help=True)

# Most important first: a narrow terminal drops columns from the end.
COLUMNS: list[Column] = [
    ("id", key("id")),
    ("state", key("state")),
    ("expires", key("expire_time")),
    ("connection", key("connection_id")),
    ("purpose", key("purpose")),
    ("connection role", key("role")),
    ("workload", key("workload_id")),
    ("login", key("role_name")),
    ("failure", key("failure_reason")),
]

# ``leases count``: one row per (group, value); purposes and roles count unrevoked leases.
COUNT_COLUMNS: list[Column] = [
    ("by", key("group")),
    ("value", key("value")),
    ("leases", key("count")),
]

# The LeaseState values users filter by, named as the JSON output names them.
LeaseState = enum.StrEnum(  # type: ignore[misc]
    "LeaseState",
    {
        name.removeprefix("LEASE_STATE_"): name.removeprefix("LEASE_STATE_").lower()
        for name, number in cpb.LeaseState.items()
        if number != cpb.LEASE_STATE_UNSPECIFIED
    },
)


@app.command(
    "list",
    epilog="Example: sevvo leases list --connection 3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10"
    " --state active\n\n"
    "Example: sevvo leases list --role readonly --state active\n\n"
    "Example: sevvo leases list --workload reporting-service",
)
def list_leases(
    ctx: typer.Context,
    connection: Annotated[
        str | None, typer.Option("--connection", metavar="ID", help="Only this connection's.")
    ] = None,
    state: Annotated[
        LeaseState | None, typer.Option("--state", help="Only leases in this state.")
    ] = None,
    role: Annotated[
        str | None,
        typer.Option(
            "--role", metavar="NAME", help="Only leases minted from the connection role NAME."
        ),
    ] = None,
    workload: Annotated[
        str | None,
        typer.Option(
            "--workload",
            metavar="NAME|ID",
            help="Only leases borrowed by this workload identity (name, id or id prefix).",
        ),
    ] = None,
    limit: Limit = 50,
    page_token: PageToken = "",
    everything: AllPages = False,
) -> None:
    """List your org's leases, newest first; says how to page on when more follow."""
    cli = cli_of(ctx)
    if connection is not None:
        connection = resolve.connection_id(cli, connection)
    if workload is not None:
        workload = resolve.workload_id(cli, workload)
    stub = cli.leases()
    state_name = f"LEASE_STATE_{state.value.upper()}" if state else None
    listing = collect(
        lambda token, size: stub.ListLeases(
            cpb.ListLeasesRequest(
                connection_id=connection or "",
                state=state_name,
                role=role or "",
                workload_id=workload or "",
                page_size=size,
                page_token=token,
            ),
            timeout=CALL_TIMEOUT,
        ),
        lambda page: (message_dict(lease) for lease in page.leases),
        limit=limit,
        page_token=page_token,
        everything=everything,
    )
    cli.output.listing(
        "leases", listing.items, listing.next_page_token, COLUMNS, "sevvo leases list"
    )


@app.command(
    epilog="Example: sevvo leases count\n\nExample: sevvo leases count --connection reporting-db"
)
def count(
    ctx: typer.Context,
    connection: Annotated[
        str | None,
        typer.Option("--connection", metavar="NAME|ID", help="Only this connection's leases."),
    ] = None,
) -> None:
    """Count your org's leases by state, and the unrevoked ones by purpose and role.

    A count by role or purpose that only grows is a caller that borrows and never gives back.
    """
    cli = cli_of(ctx)
    if connection is not None:
        connection = resolve.connection_id(cli, connection)
    response = cli.leases().CountLeases(
        cpb.CountLeasesRequest(connection_id=connection or ""), timeout=CALL_TIMEOUT
    )
    data = message_dict(response)
    rows: list[dict[str, JsonValue]] = [
        {"group": group, "value": item[group], "count": item["count"]}
        for group in ("state", "purpose", "role")
        for item in data[f"by_{group}"]
    ]
    cli.output.records(data, rows, COUNT_COLUMNS)


@app.command(
    epilog="Example: sevvo leases revoke --connection 3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10"
    " --all\n\n"
    "Example: sevvo leases revoke --connection 3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10"
    " --lease 0b0c3a4e-2f7e-4d8c-a1a4-7e3c5a3b9f10"
)
def revoke(
    ctx: typer.Context,
    connection: Annotated[str, typer.Option("--connection", metavar="ID", help="The connection.")],
    lease: Annotated[
        str | None, typer.Option("--lease", metavar="ID", help="Revoke only this lease.")
    ] = None,
    all_leases: Annotated[
        bool, typer.Option("--all", help="Revoke every live lease of the connection.")
    ] = False,
) -> None:
    """Ask the agent to drop lease roles now (admins only); the agent's reaper does it."""
    if (lease is None) == (not all_leases):
        raise usage_error("give exactly one of --lease ID or --all")
    cli = cli_of(ctx)
    if connection is not None:
        connection = resolve.connection_id(cli, connection)
    response = cli.leases().RevokeLeases(
        cpb.RevokeLeasesRequest(connection_id=connection, lease_id=lease or ""),
        timeout=CALL_TIMEOUT,
    )
    leases = [message_dict(item) for item in response.leases]
    cli.output.records({"leases": leases}, leases, COLUMNS)
    if not cli.output.json:
        cli.output.note(f"{len(leases)} lease(s) now wait for the agent to revoke them")
