"""``sevvo connections roles``: the named roles of a dynamic connection.

Each role is a set of creation and revocation statements with its own lease lifetimes;
leases are minted from one role. Statements are stored sealed and never shown back: a role
shows how many it has.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Annotated

import typer
from google.protobuf.field_mask_pb2 import FieldMask

from cli import resolve
from cli.client import AGENT_TIMEOUT, CALL_TIMEOUT, Cli
from cli.errors import CliError, usage_error
from cli.inputs import cli_of, pages, parse_duration
from cli.output import Column, JsonValue, key, message_dict
from sevvo.connections.v1 import connections_pb2 as cpb

app = typer.Typer(
    help="Manage the named roles of a dynamic connection (writes: org admins).",
    no_args_is_help=True,
)

_ID = "3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10"

# Most important first: a narrow terminal drops columns from the end.
COLUMNS: list[Column] = [
    ("name", key("name")),
    ("default ttl", key("default_ttl_seconds")),
    ("max ttl", key("max_ttl_seconds")),
    ("group role", key("group_role")),
    ("creation", key("creation_statement_count")),
    ("revocation", key("revocation_statement_count")),
    ("updated", key("update_time")),
]
DETAIL: list[Column] = [
    ("connection", key("connection_id")),
    ("name", key("name")),
    ("default ttl (s)", key("default_ttl_seconds")),
    ("max ttl (s)", key("max_ttl_seconds")),
    ("group role", key("group_role")),
    ("creation statements", key("creation_statement_count")),
    ("revocation statements", key("revocation_statement_count")),
    ("created", key("create_time")),
    ("updated", key("update_time")),
]

Connection = Annotated[str, typer.Argument(metavar="CONNECTION", help="Its id or name.")]
Role = Annotated[str, typer.Argument(metavar="ROLE", help="The role's name, such as readonly.")]
DefaultTtl = Annotated[
    str | None,
    typer.Option("--default-ttl", help="Lease lifetime, such as 1h \\[default: 1h]."),
]
MaxTtl = Annotated[
    str | None, typer.Option("--max-ttl", help="Longest lease, such as 8h \\[default: 8h].")
]
GroupRole = Annotated[
    str | None,
    typer.Option(
        "--group-role",
        help="The role leases join through the default creation statement"
        " \\[default: sevvo_readers].",
    ),
]
CreationStatement = Annotated[
    list[str] | None,
    typer.Option(
        "--creation-statement",
        metavar="SQL",
        help="A statement that creates a lease's role, using {{name}} (and {{password}},"
        " {{expiration}}); repeat for more, in order. The whole list is replaced.",
        show_default=False,
    ),
]
RevocationStatement = Annotated[
    list[str] | None,
    typer.Option(
        "--revocation-statement",
        metavar="SQL",
        help="A statement run to revoke a lease's role; repeat for more, in order. The whole"
        " list is replaced.",
        show_default=False,
    ),
]


def _show(cli: Cli, role: cpb.ConnectionRole) -> None:
    data = message_dict(role)
    cli.output.record(data, data, DETAIL)


@dataclass(frozen=True)
class RoleEdit:
    """What ``roles update`` was asked to change; None leaves a setting as it is."""

    default_ttl: str | None = None
    max_ttl: str | None = None
    group_role: str | None = None
    creation: list[str] | None = None
    revocation: list[str] | None = None
    default_creation: bool = False
    default_revocation: bool = False

    def __post_init__(self) -> None:
        if self.creation is not None and self.default_creation:
            raise usage_error("give --creation-statement or --default-creation, not both")
        if self.revocation is not None and self.default_revocation:
            raise usage_error("give --revocation-statement or --default-revocation, not both")
        if not self.paths:
            raise usage_error(
                "nothing to update: give --default-ttl, --max-ttl, --group-role,"
                " --creation-statement, --default-creation, --revocation-statement or"
                " --default-revocation"
            )

    @property
    def paths(self) -> list[str]:
        """The update mask: the settings given, in a stable order."""
        given = {
            "default_ttl_seconds": self.default_ttl is not None,
            "max_ttl_seconds": self.max_ttl is not None,
            "creation_statements": self.creation is not None or self.default_creation,
            "revocation_statements": self.revocation is not None or self.default_revocation,
            "group_role": self.group_role is not None,
        }
        return [path for path, present in given.items() if present]

    @property
    def changes_statements(self) -> bool:
        """Whether the agent dry-runs the change (new statements or group role)."""
        return bool(
            {"creation_statements", "revocation_statements", "group_role"} & set(self.paths)
        )

    def request(self, connection_id: str, name: str) -> cpb.UpdateConnectionRoleRequest:
        """The UpdateConnectionRole request."""
        return cpb.UpdateConnectionRoleRequest(
            connection_id=connection_id,
            name=name,
            settings=settings(
                self.default_ttl, self.max_ttl, self.group_role, self.creation, self.revocation
            ),
            update_mask=FieldMask(paths=self.paths),
        )


def settings(
    default_ttl: str | None,
    max_ttl: str | None,
    group_role: str | None,
    creation: list[str] | None,
    revocation: list[str] | None,
) -> cpb.ConnectionRoleSettings:
    """A role's settings from the flags; what is not given is left for the server's default."""
    return cpb.ConnectionRoleSettings(
        default_ttl_seconds=parse_duration("--default-ttl", default_ttl) if default_ttl else 0,
        max_ttl_seconds=parse_duration("--max-ttl", max_ttl) if max_ttl else 0,
        group_role=group_role or "",
        creation_statements=creation or [],
        revocation_statements=revocation or [],
    )


@app.command("list", epilog=f"Example: sevvo connections roles list {_ID}")
def list_roles(ctx: typer.Context, connection: Connection) -> None:
    """List a dynamic connection's roles, "default" first."""
    cli = cli_of(ctx)
    connection_id = resolve.connection_id(cli, connection)
    stub = cli.connection_roles()
    roles: list[dict[str, JsonValue]] = [
        message_dict(role)
        for page in pages(
            lambda token: stub.ListConnectionRoles(
                cpb.ListConnectionRolesRequest(
                    connection_id=connection_id, page_size=500, page_token=token
                ),
                timeout=CALL_TIMEOUT,
            )
        )
        for role in page.roles
    ]
    cli.output.records({"roles": roles}, roles, COLUMNS)


@app.command(epilog=f"Example: sevvo connections roles get {_ID} readonly")
def get(ctx: typer.Context, connection: Connection, role: Role) -> None:
    """Show one role: its lifetimes and how many statements it has (never the statements)."""
    cli = cli_of(ctx)
    connection_id = resolve.connection_id(cli, connection)
    found = cli.connection_roles().GetConnectionRole(
        cpb.GetConnectionRoleRequest(connection_id=connection_id, name=role), timeout=CALL_TIMEOUT
    )
    _show(cli, found)


@app.command(
    epilog=(
        f"Example: sevvo connections roles create {_ID} readonly --group-role shop_readers"
        " --default-ttl 1h --max-ttl 4h\n\n"
        f"Example: sevvo connections roles create {_ID} etl --creation-statement"
        " 'CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}"
        " IN ROLE shop_writers'"
    )
)
def create(
    ctx: typer.Context,
    connection: Connection,
    role: Role,
    default_ttl: DefaultTtl = None,
    max_ttl: MaxTtl = None,
    group_role: GroupRole = None,
    creation_statement: CreationStatement = None,
    revocation_statement: RevocationStatement = None,
) -> None:
    """Add a role; your agent dry-runs its statements first and nothing is saved on failure."""
    cli = cli_of(ctx)
    connection_id = resolve.connection_id(cli, connection)
    request = cpb.CreateConnectionRoleRequest(
        connection_id=connection_id,
        name=role,
        settings=settings(
            default_ttl, max_ttl, group_role, creation_statement, revocation_statement
        ),
    )
    with cli.output.progress("Dry-running the role's statements through your agent…"):
        created = cli.connection_roles().CreateConnectionRole(request, timeout=AGENT_TIMEOUT)
    _show(cli, created)


@app.command(
    epilog=(
        f"Example: sevvo connections roles update {_ID} readonly --max-ttl 2h\n\n"
        f"Example: sevvo connections roles update {_ID} default --group-role shop_readers"
    )
)
def update(
    ctx: typer.Context,
    connection: Connection,
    role: Role,
    default_ttl: DefaultTtl = None,
    max_ttl: MaxTtl = None,
    group_role: GroupRole = None,
    creation_statement: CreationStatement = None,
    revocation_statement: RevocationStatement = None,
    default_creation: Annotated[
        bool,
        typer.Option(
            "--default-creation",
            help="Go back to the default creation statement for the group role.",
        ),
    ] = False,
    default_revocation: Annotated[
        bool,
        typer.Option("--default-revocation", help="Go back to the agent's built-in revoke."),
    ] = False,
) -> None:
    """Change some settings of a role; the rest stays. New statements are dry-run first.

    A new group role alone also moves default creation statements to the new group.
    """
    edit = RoleEdit(
        default_ttl=default_ttl,
        max_ttl=max_ttl,
        group_role=group_role,
        creation=creation_statement,
        revocation=revocation_statement,
        default_creation=default_creation,
        default_revocation=default_revocation,
    )
    cli = cli_of(ctx)
    connection_id = resolve.connection_id(cli, connection)
    stub = cli.connection_roles()
    request = edit.request(connection_id, role)
    if edit.changes_statements:
        with cli.output.progress("Dry-running the new statements through your agent…"):
            updated = stub.UpdateConnectionRole(request, timeout=AGENT_TIMEOUT)
    else:
        updated = stub.UpdateConnectionRole(request, timeout=CALL_TIMEOUT)
    _show(cli, updated)


@app.command(
    epilog=f"Example: sevvo connections roles delete {_ID} readonly\n\n"
    f"Example: sevvo connections roles delete {_ID} etl --force --yes"
)
def delete(
    ctx: typer.Context,
    connection: Connection,
    role: Role,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Also while leases of the role are live: the agent revokes them first.",
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a role ("default" stays). Refused while its leases are live, unless --force."""
    cli = cli_of(ctx)
    connection_id = resolve.connection_id(cli, connection)
    if not yes:
        if not sys.stdin.isatty():
            raise usage_error("refusing to delete without confirmation: pass --yes")
        question = f"Delete role {role} of connection {connection_id}?" + (
            " Its live leases are revoked: the logins minted from it stop working." if force else ""
        )
        if not typer.confirm(question, err=True):
            raise CliError("not deleted")
    removal = cli.connection_roles().DeleteConnectionRole(
        cpb.DeleteConnectionRoleRequest(connection_id=connection_id, name=role, force=force),
        timeout=CALL_TIMEOUT,
    )
    leases = [message_dict(lease) for lease in removal.leases]
    if cli.output.json:
        cli.output.emit_json(
            {
                "deleted": role,
                "leases": leases,
                "unrevoked_lease_count": removal.unrevoked_lease_count,
            }
        )
        return
    cli.output.note(f"deleted role {role}")
    if removal.unrevoked_lease_count:
        cli.output.note(
            f"{removal.unrevoked_lease_count} of its lease(s) wait for the agent to revoke them"
            " (sevvo leases list --role " + role + ")"
        )
