"""``sevvo workloads``: identities of your services that borrow database credentials."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from cli import resolve
from cli.client import CALL_TIMEOUT, Cli
from cli.errors import CliError, usage_error
from cli.inputs import (
    AllPages,
    Limit,
    PageToken,
    TokenFile,
    cli_of,
    collect,
    parse_duration,
    refuse_existing_token_file,
)
from cli.output import Column, JsonValue, key, message_dict
from sevvo.auth.v1 import workloads_pb2
from sevvo.runtime.files import write_private_file
from sevvo.runtime.workload_grants import ROLE_NAME_HELP, ROLE_NAME_RULE

app = typer.Typer(
    help="Manage workload identities: which of your services may borrow which connection roles.",
    no_args_is_help=True,
)


def _grants_text(record: Mapping[str, JsonValue]) -> str:
    return ", ".join(f"{g['connection_id']}:{g['role']}" for g in record.get("grants") or [])


def _duration_text(record: Mapping[str, JsonValue]) -> str:
    seconds = int(record.get("max_ttl_seconds") or 0)
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# Most important first: a narrow terminal drops columns from the end.
COLUMNS: list[Column] = [
    ("id", key("id")),
    ("name", key("display_name")),
    ("state", key("state")),
    ("max ttl", _duration_text),
    ("grants", _grants_text),
    ("created", key("create_time")),
    ("revoked", key("revoke_time")),
]
DETAIL: list[Column] = [
    *COLUMNS,
    ("description", key("description")),
    ("updated", key("update_time")),
    ("creator", key("creator_user_id")),
]
_ID = "3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10"
WorkloadId = Annotated[
    str, typer.Argument(metavar="ID", help="The workload's id, id prefix or name.")
]
GrantOption = typer.Option(
    "--grant",
    metavar="CONNECTION:ROLE",
    help="What it may borrow: a connection (name, id prefix or id) and one of its roles."
    " Repeat for more.",
)
MaxTtlOption = typer.Option(
    "--max-ttl",
    metavar="DURATION",
    help="The longest lease it may ask for, 1m to 1d (90s, 15m, 2h, 1d).",
)
DescriptionOption = typer.Option(
    "--description", metavar="TEXT", help="What the service is, for whoever reads this later."
)


def _grants(cli: Cli, texts: list[str]) -> list[workloads_pb2.WorkloadGrant]:
    """``CONNECTION:ROLE`` flags as grants, each connection resolved once."""
    connections: dict[str, str] = {}
    grants = []
    for text in texts:
        # Roles hold no colon, connection names may: the role is what follows the last one.
        connection, _, role = text.rpartition(":")
        if not connection or not role:
            raise usage_error(
                f"--grant {text!r}: give CONNECTION:ROLE, such as reporting-db:readonly"
            )
        if not ROLE_NAME_RULE.fullmatch(role):
            raise usage_error(f"--grant {text!r}: the role {ROLE_NAME_HELP}")
        if connection not in connections:
            connections[connection] = resolve.connection_id(cli, connection)
        grants.append(workloads_pb2.WorkloadGrant(connection_id=connections[connection], role=role))
    return grants


def _write_token(cli: Cli, token_file: Path | None, data: dict[str, JsonValue], token: str) -> None:
    """Gives the token once: into a new 0600 file, or printed with a warning."""
    if token_file is not None:
        write_private_file(token_file, token + "\n")
        cli.output.note(
            f"the workload token is in {token_file} (readable by you only): mount it into the"
            " service's pod as a secret; it is not shown anywhere else"
        )
        if cli.output.json:
            cli.output.emit_json({"workload": data, "token_file": str(token_file)})
        else:
            cli.output.record(data, data, COLUMNS[:5])
        return
    cli.output.warn(
        "the workload token is shown only this once: store it as the service's secret now"
    )
    if cli.output.json:
        cli.output.emit_json({"workload": data, "token": token})
        return
    cli.output.record(data, data, COLUMNS[:5])
    # On a line of its own, unwrapped, so it copies whole.
    cli.output.line(f"token: {token}")


@app.command(
    epilog="Example: sevvo workloads create reporting-service --grant reporting-db:readonly"
    " --max-ttl 2h --token-file reporting.token"
)
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="A name, such as the service's.")],
    grant: Annotated[list[str], GrantOption],
    max_ttl: Annotated[str, MaxTtlOption] = "1h",
    description: Annotated[str, DescriptionOption] = "",
    token_file: TokenFile = None,
) -> None:
    """Create a workload identity (admins only) and give its token once."""
    refuse_existing_token_file(token_file)
    cli = cli_of(ctx)
    request = workloads_pb2.CreateWorkloadRequest(
        display_name=name,
        description=description,
        grants=_grants(cli, grant),
        max_ttl_seconds=parse_duration("--max-ttl", max_ttl),
    )
    response = cli.workloads().CreateWorkload(request, timeout=CALL_TIMEOUT)
    _write_token(cli, token_file, message_dict(response.workload), response.workload_token)


@app.command("list", epilog="Example: sevvo workloads list --all")
def list_workloads(
    ctx: typer.Context,
    limit: Limit = 50,
    page_token: PageToken = "",
    everything: AllPages = False,
) -> None:
    """List your org's workloads, oldest first (admins only); says how to page on."""
    cli = cli_of(ctx)
    stub = cli.workloads()
    listing = collect(
        lambda token, size: stub.ListWorkloads(
            workloads_pb2.ListWorkloadsRequest(page_size=size, page_token=token),
            timeout=CALL_TIMEOUT,
        ),
        lambda page: (message_dict(workload) for workload in page.workloads),
        limit=limit,
        page_token=page_token,
        everything=everything,
    )
    cli.output.listing(
        "workloads", listing.items, listing.next_page_token, COLUMNS, "sevvo workloads list"
    )


@app.command(
    epilog="Example: sevvo workloads get reporting-service\n\n"
    f"Example: sevvo workloads get {_ID[:8]}"
)
def get(ctx: typer.Context, workload_id: WorkloadId) -> None:
    """Show one workload (admins only)."""
    cli = cli_of(ctx)
    workload = cli.workloads().GetWorkload(
        workloads_pb2.GetWorkloadRequest(id=resolve.workload_id(cli, workload_id)),
        timeout=CALL_TIMEOUT,
    )
    data = message_dict(workload)
    cli.output.record(data, data, DETAIL)


@app.command(
    epilog="Example: sevvo workloads update reporting-service --grant reporting-db:readonly"
    " --grant billing-db:readonly\n\n"
    "Example: sevvo workloads update reporting-service --max-ttl 30m"
)
def update(
    ctx: typer.Context,
    workload_id: WorkloadId,
    name: Annotated[str | None, typer.Option("--name", help="A new name.")] = None,
    grant: Annotated[list[str] | None, GrantOption] = None,
    max_ttl: Annotated[str | None, MaxTtlOption] = None,
    description: Annotated[str | None, DescriptionOption] = None,
) -> None:
    """Change a workload (admins only). --grant replaces every grant it had.

    New grants or a new --max-ttl take effect within seconds: bearers the service holds are
    refused, and its next exchange carries the new ones.
    """
    paths = [
        path
        for path, value in (
            ("display_name", name),
            ("grants", grant),
            ("max_ttl_seconds", max_ttl),
            ("description", description),
        )
        if value is not None
    ]
    if not paths:
        raise usage_error("nothing to change: give --name, --grant, --max-ttl or --description")
    cli = cli_of(ctx)
    target = resolve.workload_id(cli, workload_id)
    request = workloads_pb2.UpdateWorkloadRequest(
        id=target,
        workload=workloads_pb2.WorkloadUpdate(
            display_name=name or "",
            description=description or "",
            grants=_grants(cli, grant or []),
            max_ttl_seconds=parse_duration("--max-ttl", max_ttl) if max_ttl else 0,
        ),
    )
    request.update_mask.paths.extend(paths)
    workload = cli.workloads().UpdateWorkload(request, timeout=CALL_TIMEOUT)
    data = message_dict(workload)
    cli.output.record(data, data, DETAIL)


@app.command(
    epilog=f"Example: sevvo workloads revoke {_ID}\n\n"
    "Example: sevvo workloads revoke reporting-service --yes"
)
def revoke(
    ctx: typer.Context,
    workload_id: WorkloadId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Revoke a workload (admins only): it can borrow nothing new within seconds.

    Credentials it already borrowed last until their leases expire or are revoked. There is no
    undo: the service needs a new workload's token to work again.
    """
    cli = cli_of(ctx)
    target = resolve.workload_id(cli, workload_id)
    if not yes:
        if not sys.stdin.isatty():
            raise usage_error("refusing to revoke without confirmation: pass --yes")
        if not typer.confirm(
            f"Revoke workload {target}? It can borrow no new credential within seconds, for good.",
            err=True,
        ):
            raise CliError("not revoked")
    workload = cli.workloads().RevokeWorkload(
        workloads_pb2.RevokeWorkloadRequest(id=target), timeout=CALL_TIMEOUT
    )
    data = message_dict(workload)
    cli.output.record(data, data, COLUMNS)
