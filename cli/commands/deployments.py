"""``sevvo deployments``: your org's agent installations and their tokens."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cli import resolve
from cli.client import CALL_TIMEOUT
from cli.errors import CliError, usage_error
from cli.inputs import TokenFile, cli_of, pages, refuse_existing_token_file
from cli.output import Column, key, message_dict
from sevvo.auth.v1 import deployments_pb2
from sevvo.runtime.files import write_private_file

app = typer.Typer(help="Manage your org's agent deployments.", no_args_is_help=True)

COLUMNS: list[Column] = [
    ("id", key("id")),
    ("name", key("display_name")),
    ("state", key("state")),
    ("created", key("create_time")),
    ("revoked", key("revoke_time")),
]


@app.command(
    epilog="Example: sevvo deployments create --name prod-eu-cluster --token-file agent.token"
)
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="A name, such as the cluster it runs in.")],
    token_file: TokenFile = None,
) -> None:
    """Create a deployment and give its agent token once: printed, or written to a file."""
    refuse_existing_token_file(token_file)
    cli = cli_of(ctx)
    response = cli.deployments().CreateDeployment(
        deployments_pb2.CreateDeploymentRequest(display_name=name), timeout=CALL_TIMEOUT
    )
    deployment = message_dict(response.deployment)
    if token_file is not None:
        write_private_file(token_file, response.deployment_token + "\n")
        cli.output.note(
            f"the deployment token is in {token_file} (readable by you only): give it to the"
            " agent as its SEVVO_DEPLOYMENT_TOKEN_FILE secret; it is not shown anywhere else"
        )
        if cli.output.json:
            cli.output.emit_json({"deployment": deployment, "token_file": str(token_file)})
        else:
            cli.output.record(deployment, deployment, COLUMNS[:3])
        return
    cli.output.warn(
        "the deployment token is shown only this once: store it as the agent's"
        " SEVVO_DEPLOYMENT_TOKEN_FILE secret now"
    )
    if cli.output.json:
        cli.output.emit_json({"deployment": deployment, "token": response.deployment_token})
        return
    cli.output.record(deployment, deployment, COLUMNS[:3])
    # On a line of its own, unwrapped, so it copies whole.
    cli.output.line(f"token: {response.deployment_token}")


@app.command("list", epilog="Example: sevvo deployments list")
def list_deployments(ctx: typer.Context) -> None:
    """List your org's deployments, oldest first."""
    cli = cli_of(ctx)
    stub = cli.deployments()
    deployments = [
        message_dict(d)
        for page in pages(
            lambda token: stub.ListDeployments(
                deployments_pb2.ListDeploymentsRequest(page_size=500, page_token=token),
                timeout=CALL_TIMEOUT,
            )
        )
        for d in page.deployments
    ]
    cli.output.records({"deployments": deployments}, deployments, COLUMNS)


@app.command(epilog="Example: sevvo deployments get 3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10")
def get(ctx: typer.Context, deployment_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Show one deployment."""
    cli = cli_of(ctx)
    deployment_id = resolve.deployment_id(cli, deployment_id)
    deployment = cli.deployments().GetDeployment(
        deployments_pb2.GetDeploymentRequest(id=deployment_id), timeout=CALL_TIMEOUT
    )
    data = message_dict(deployment)
    cli.output.record(data, data, [*COLUMNS, ("creator", key("creator_user_id"))])


@app.command(
    epilog="Example: sevvo deployments revoke 3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10\n\n"
    "Example: sevvo deployments revoke prod-eu-cluster --yes"
)
def revoke(
    ctx: typer.Context,
    deployment_id: Annotated[str, typer.Argument(metavar="ID")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Revoke a deployment: its agent is refused everywhere within seconds (admins only).

    There is no undo: the agent needs a new deployment's token to work again.
    """
    cli = cli_of(ctx)
    deployment_id = resolve.deployment_id(cli, deployment_id)
    if not yes:
        if not sys.stdin.isatty():
            raise usage_error("refusing to revoke without confirmation: pass --yes")
        if not typer.confirm(
            f"Revoke deployment {deployment_id}? Its agent stops within seconds, for good.",
            err=True,
        ):
            raise CliError("not revoked")
    deployment = cli.deployments().RevokeDeployment(
        deployments_pb2.RevokeDeploymentRequest(id=deployment_id), timeout=CALL_TIMEOUT
    )
    data = message_dict(deployment)
    cli.output.record(data, data, COLUMNS)
