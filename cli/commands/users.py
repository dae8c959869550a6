"""``sevvo users``: the people of your org."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from cli.client import CALL_TIMEOUT
from cli.inputs import cli_of, pages, read_secret
from cli.output import Column, key, message_dict
from sevvo.auth.v1 import users_pb2

app = typer.Typer(help="Manage the users of your org.", no_args_is_help=True)

COLUMNS: list[Column] = [
    ("id", key("id")),
    ("email", key("email")),
    ("role", key("role")),
    ("created", key("create_time")),
]


class Role(enum.StrEnum):
    """A user's role."""

    ADMIN = "admin"
    MEMBER = "member"


_ROLES = {Role.ADMIN: users_pb2.USER_ROLE_ADMIN, Role.MEMBER: users_pb2.USER_ROLE_MEMBER}


@app.command(
    epilog="Example: sevvo users create --email grace@acme.example --role member\n\n"
    "Example: sevvo users create --email bob@acme.example --password-stdin < pw.txt"
)
def create(
    ctx: typer.Context,
    email: Annotated[str, typer.Option("--email", help="The new user's email.")],
    role: Annotated[Role, typer.Option("--role", help="admin or member.")] = Role.MEMBER,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the initial password from stdin.")
    ] = False,
) -> None:
    """Create a user in your org (admins only); the initial password is prompted for."""
    password = read_secret("Initial password", from_stdin=password_stdin, confirm=True)
    cli = cli_of(ctx)
    user = cli.users().CreateUser(
        users_pb2.CreateUserRequest(email=email, password=password, role=_ROLES[role]),
        timeout=CALL_TIMEOUT,
    )
    data = message_dict(user)
    cli.output.record(data, data, COLUMNS)


@app.command("list", epilog="Example: sevvo users list --output json")
def list_users(ctx: typer.Context) -> None:
    """List the users of your org, oldest first."""
    cli = cli_of(ctx)
    stub = cli.users()
    users = [
        message_dict(user)
        for page in pages(
            lambda token: stub.ListUsers(
                users_pb2.ListUsersRequest(page_size=500, page_token=token), timeout=CALL_TIMEOUT
            )
        )
        for user in page.users
    ]
    cli.output.records({"users": users}, users, COLUMNS)


@app.command(epilog="Example: sevvo users get 3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10")
def get(ctx: typer.Context, user_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Show one user of your org."""
    cli = cli_of(ctx)
    user = cli.users().GetUser(users_pb2.GetUserRequest(id=user_id), timeout=CALL_TIMEOUT)
    data = message_dict(user)
    cli.output.record(data, data, [*COLUMNS, ("org id", key("org_id"))])
