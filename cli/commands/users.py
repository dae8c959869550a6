"""``sevvo users``: the people of your org."""

from __future__ import annotations

import enum
import sys
from typing import Annotated

import typer

from cli import resolve
from cli.client import CALL_TIMEOUT
from cli.errors import CliError, usage_error
from cli.inputs import cli_of, pages, read_secret
from cli.output import Column, key, message_dict
from sevvo.auth.v1 import users_pb2

app = typer.Typer(help="Manage the users of your org.", no_args_is_help=True)

COLUMNS: list[Column] = [
    ("id", key("id")),
    ("email", key("email")),
    ("role", key("role")),
    ("state", key("state")),
    ("created", key("create_time")),
]
_ID = "3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10"
UserId = Annotated[str, typer.Argument(metavar="ID", help="The user's id (sevvo users list).")]


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


@app.command(epilog=f"Example: sevvo users get {_ID}")
def get(ctx: typer.Context, user_id: UserId) -> None:
    """Show one user of your org."""
    cli = cli_of(ctx)
    user_id = resolve.user_id(cli, user_id)
    user = cli.users().GetUser(users_pb2.GetUserRequest(id=user_id), timeout=CALL_TIMEOUT)
    data = message_dict(user)
    cli.output.record(data, data, [*COLUMNS, ("org id", key("org_id"))])


@app.command(epilog=f"Example: sevvo users disable {_ID}")
def disable(ctx: typer.Context, user_id: UserId) -> None:
    """Disable a user of your org (admins only): no sign-in, sessions signed out in seconds."""
    cli = cli_of(ctx)
    user_id = resolve.user_id(cli, user_id)
    user = cli.users().DisableUser(users_pb2.DisableUserRequest(id=user_id), timeout=CALL_TIMEOUT)
    data = message_dict(user)
    cli.output.record(data, data, [*COLUMNS, ("disabled", key("disable_time"))])


@app.command(epilog=f"Example: sevvo users enable {_ID}")
def enable(ctx: typer.Context, user_id: UserId) -> None:
    """Let a disabled user of your org sign in again (admins only)."""
    cli = cli_of(ctx)
    user_id = resolve.user_id(cli, user_id)
    user = cli.users().EnableUser(users_pb2.EnableUserRequest(id=user_id), timeout=CALL_TIMEOUT)
    data = message_dict(user)
    cli.output.record(data, data, COLUMNS)


@app.command(epilog=f"Example: sevvo users delete {_ID} --yes")
def delete(
    ctx: typer.Context,
    user_id: UserId,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a user of your org (admins only); deployments they created stay."""
    cli = cli_of(ctx)
    user_id = resolve.user_id(cli, user_id)
    if not yes:
        if not sys.stdin.isatty():
            raise usage_error("refusing to delete without confirmation: pass --yes")
        if not typer.confirm(f"Delete user {user_id}?", err=True):
            raise CliError("not deleted")
    cli.users().DeleteUser(users_pb2.DeleteUserRequest(id=user_id), timeout=CALL_TIMEOUT)
    if cli.output.json:
        cli.output.emit_json({"deleted": user_id})
    else:
        cli.output.note(f"deleted user {user_id}")


@app.command("sign-out", epilog=f"Example: sevvo users sign-out {_ID}")
def sign_out(ctx: typer.Context, user_id: UserId) -> None:
    """Sign a user out everywhere: every session they hold stops working within seconds.

    Admins may do this for any user of their org, others only for themselves (for your own
    sessions, sevvo logout --everywhere also forgets the one stored here).
    """
    cli = cli_of(ctx)
    user_id = resolve.user_id(cli, user_id)
    response = cli.users().RevokeUserSessions(
        users_pb2.RevokeUserSessionsRequest(id=user_id), timeout=CALL_TIMEOUT
    )
    data = {"id": user_id, **message_dict(response)}
    cli.output.record(data, data, [("id", key("id")), ("signed out at", key("revoke_time"))])
