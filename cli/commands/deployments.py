"""``sevvo deployments``: your org's agent installations and their tokens."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import resolve
from cli.client import CALL_TIMEOUT
from cli.inputs import cli_of, pages
from cli.output import Column, key, message_dict
from sevvo.auth.v1 import deployments_pb2

app = typer.Typer(help="Manage your org's agent deployments.", no_args_is_help=True)

COLUMNS: list[Column] = [
    ("id", key("id")),
    ("name", key("display_name")),
    ("state", key("state")),
    ("created", key("create_time")),
    ("revoked", key("revoke_time")),
]


@app.command(epilog="Example: sevvo deployments create --name prod-eu-cluster")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="A name, such as the cluster it runs in.")],
) -> None:
    """Create a deployment and print its agent token; the token is shown this once only."""
    cli = cli_of(ctx)
    response = cli.deployments().CreateDeployment(
        deployments_pb2.CreateDeploymentRequest(display_name=name), timeout=CALL_TIMEOUT
    )
    deployment = message_dict(response.deployment)
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


@app.command(epilog="Example: sevvo deployments revoke 3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10")
def revoke(ctx: typer.Context, deployment_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Revoke a deployment: its agent is refused everywhere within seconds (admins only)."""
    cli = cli_of(ctx)
    deployment_id = resolve.deployment_id(cli, deployment_id)
    deployment = cli.deployments().RevokeDeployment(
        deployments_pb2.RevokeDeploymentRequest(id=deployment_id), timeout=CALL_TIMEOUT
    )
    data = message_dict(deployment)
    cli.output.record(data, data, COLUMNS)
