"""``sevvo connections``: your org's connections (Postgres databases, Parquet directories).

Passwords come from a prompt or stdin only. A DSN holding a password is refused before
anything is sent: the password goes in on stdin and is put into the URI here.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

import typer
from google.protobuf.field_mask_pb2 import FieldMask

from cli import resolve
from cli.client import AGENT_TIMEOUT, CALL_TIMEOUT, Cli
from cli.commands.runs import COLUMNS as RUN_COLUMNS
from cli.commands.runs import raise_for_outcome, wait_for_run
from cli.errors import CliError, category_failure, usage_error
from cli.inputs import (
    cli_of,
    format_duration,
    pages,
    parse_duration,
    parse_interval,
    read_secret,
)
from cli.output import Column, JsonValue, key, message_dict
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.runtime import outcomes
from sevvo.runtime.outcomes import Kind

app = typer.Typer(
    help="Manage your org's connections: Postgres databases and Parquet directories.",
    no_args_is_help=True,
)

_ID = "3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10"


def _target(record: Mapping[str, JsonValue]) -> str:
    directory = record.get("parquet_directory")
    if directory:
        return str(directory.get("path"))
    meta = record.get("safe_metadata") or {}
    return f"{meta.get('host')}:{meta.get('port')}/{meta.get('database')}"


def _purposes(record: Mapping[str, JsonValue]) -> object:
    """What the connection can be used for: "source, destination"."""
    return ", ".join(str(p) for p in record.get("purposes") or ()) or None


def _path(record: Mapping[str, JsonValue]) -> object:
    return (record.get("parquet_directory") or {}).get("path")


def _meta(name: str) -> Callable[[Mapping[str, JsonValue]], object]:
    return lambda record: (record.get("safe_metadata") or {}).get(name)


def _allowed_functions(record: Mapping[str, JsonValue]) -> object:
    return ", ".join((record.get("preview") or {}).get("allowed_functions") or ()) or None


def _root_certs(record: Mapping[str, JsonValue]) -> object:
    """The CA bundle in a line: each certificate's subject and expiry day (JSON has more)."""
    certificates = (record.get("safe_metadata") or {}).get("ssl_root_certs") or []
    shown = [
        f"{c.get('subject') or c.get('sha256_fingerprint')} (expires"
        f" {str(c.get('expire_time'))[:10]})"
        for c in certificates[:3]
    ]
    if len(certificates) > len(shown):
        shown.append(f"and {len(certificates) - len(shown)} more")
    return "; ".join(shown) or None


def _max_plan_cost(record: Mapping[str, JsonValue]) -> object:
    cost = (record.get("preview") or {}).get("max_plan_cost") or 0.0
    # 0 is "no budget": shown as "-", like any setting that is not set.
    return None if not cost else (f"{cost:,.0f}" if float(cost).is_integer() else f"{cost:,}")


# Most important first: a narrow terminal drops columns from the end.
COLUMNS: list[Column] = [
    ("id", key("id")),
    ("name", key("display_name")),
    ("type", key("type")),
    ("purposes", _purposes),
    ("status", key("status")),
    ("last test", key("last_test_category")),
    ("target", _target),
    ("user", _meta("username")),
    ("mode", key("credential_mode")),
]
DETAIL: list[Column] = [
    ("id", key("id")),
    ("name", key("display_name")),
    ("type", key("type")),
    ("purposes", _purposes),
    ("directory", _path),
    ("host", _meta("host")),
    ("port", _meta("port")),
    ("database", _meta("database")),
    ("username", _meta("username")),
    ("ssl mode", _meta("ssl_mode")),
    ("ssl root certs", _root_certs),
    ("credentials", key("credential_mode")),
    ("password stored", key("has_password")),
    ("status", key("status")),
    ("last test", key("last_test_category")),
    ("last tested", key("last_test_time")),
    ("preview functions", _allowed_functions),
    ("preview cost budget", _max_plan_cost),
    ("created", key("create_time")),
    ("updated", key("update_time")),
]


class SslMode(enum.StrEnum):
    """How TLS to the database is negotiated."""

    REQUIRE = "require"
    DISABLE = "disable"
    VERIFY_CA = "verify-ca"
    VERIFY_FULL = "verify-full"


_SSL = {
    SslMode.REQUIRE: cpb.SSL_MODE_REQUIRE,
    SslMode.DISABLE: cpb.SSL_MODE_DISABLE,
    SslMode.VERIFY_CA: cpb.SSL_MODE_VERIFY_CA,
    SslMode.VERIFY_FULL: cpb.SSL_MODE_VERIFY_FULL,
}
# Far above any provider's bundle (the service takes 512 KiB): a larger file is a mistake,
# read no further.
_MAX_ROOT_CERT_BYTES = 1024 * 1024

PasswordStdin = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password from the first line of stdin."),
]
AllowFunction = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-function",
        metavar="NAME",
        help="Preview: a function previews may call beyond the reviewed built-ins, as name"
        " or schema.name; repeat for more.",
        show_default=False,
    ),
]
SslRootCert = Annotated[
    Path | None,
    typer.Option(
        "--ssl-root-cert",
        metavar="FILE",
        help="The CA bundle (PEM) that signs the server's certificate, for --ssl-mode"
        " verify-ca or verify-full: your provider's download, such as global-bundle.pem.",
        show_default=False,
    ),
]
MaxPlanCost = Annotated[
    float | None,
    typer.Option(
        "--max-plan-cost",
        metavar="N",
        min=0,
        help="Preview: refuse a statement the planner estimates above N before it runs;"
        " 0 for no budget.",
        show_default=False,
    ),
]


def check_dsn(dsn: str) -> None:
    """Refuses a DSN that holds a password (or has no user), before any password is read."""
    parts = urlsplit(dsn)
    userinfo, at, _ = parts.netloc.rpartition("@")
    if ":" in userinfo or "password" in parse_qs(parts.query):
        # Never echo the DSN: it holds the very secret we refuse to take this way.
        raise usage_error(
            "the DSN contains a password; remove it and pass the password on stdin"
            " (--password-stdin) or at the prompt: secrets are never taken as flag values"
        )
    if not at or not userinfo:
        raise usage_error(
            "the DSN needs a user, as in postgresql://user@host:5432/db?sslmode=require"
        )


def dsn_with_password(dsn: str, password: str) -> str:
    """The checked DSN with ``password`` put, percent-encoded, into its userinfo."""
    check_dsn(dsn)
    parts = urlsplit(dsn)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    netloc = f"{userinfo}:{quote(password, safe='')}@{hostport}"
    return urlunsplit(parts._replace(netloc=netloc))


def dsn_ssl_mode(dsn: str, flag: SslMode | None, *, has_root_cert: bool = False) -> cpb.SslMode:
    """The SSL mode to send with a DSN: the flag's, else none (the URI's sslmode decides),
    else the default the help promises (see ``default_ssl_mode``)."""
    if flag is not None:
        return _SSL[flag]
    if "sslmode" in parse_qs(urlsplit(dsn).query, keep_blank_values=True):
        return cpb.SSL_MODE_UNSPECIFIED
    return _SSL[default_ssl_mode(has_root_cert=has_root_cert)]


def default_ssl_mode(*, has_root_cert: bool) -> SslMode:
    """Without --ssl-mode: ``verify-full`` when a CA bundle is given (the reason to give
    one), ``require`` otherwise."""
    return SslMode.VERIFY_FULL if has_root_cert else SslMode.REQUIRE


def read_root_cert(path: Path) -> str:
    """The PEM text of a CA bundle file; the service checks the certificates themselves."""
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_ROOT_CERT_BYTES + 1)
    except OSError as error:
        raise usage_error(f"--ssl-root-cert: cannot read {path}: {error.strerror}") from None
    if len(data) > _MAX_ROOT_CERT_BYTES:
        raise usage_error(f"--ssl-root-cert: {path} is larger than a CA bundle can be (1 MiB)")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise usage_error(
            f"--ssl-root-cert: {path} is not PEM text; convert a DER (binary) certificate with"
            " openssl x509 -inform der -in ca.der -out ca.pem"
        ) from None


def preview_settings(
    allow_functions: list[str] | None, max_plan_cost: float | None
) -> cpb.PreviewSettings | None:
    """A new connection's preview settings from the flags; None when no flag was given."""
    if allow_functions is None and max_plan_cost is None:
        return None
    return cpb.PreviewSettings(
        allowed_functions=allow_functions or [], max_plan_cost=max_plan_cost or 0.0
    )


# The login details ``connections update`` can change (ConnectionEdit's attribute names)
# and their update-mask paths: changing any of them runs a credential test.
_LOGIN_PATHS = {
    "host": "fields.host",
    "port": "fields.port",
    "database": "fields.database",
    "username": "fields.username",
    "password": "fields.password",
    "ssl_mode": "fields.ssl_mode",
    "ssl_root_cert": "fields.ssl_root_cert",
}
PREVIEW_PATH = "fields.preview"


@dataclass(frozen=True)
class ConnectionEdit:
    """What ``connections update`` was asked to change; None leaves a value as it is."""

    name: str | None = None
    host: str | None = None
    port: int | None = None
    database: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_mode: SslMode | None = None
    ssl_root_cert: str | None = None
    allow_functions: list[str] | None = None
    no_allowed_functions: bool = False
    max_plan_cost: float | None = None

    def __post_init__(self) -> None:
        if self.allow_functions is not None and self.no_allowed_functions:
            raise usage_error("give --allow-function or --no-allowed-functions, not both")
        if not (self.login_paths or self.name is not None or self.changes_preview):
            raise usage_error(
                "nothing to update: give --name, a connection detail (--host, --port,"
                " --database, --username, --new-password, --ssl-mode, --ssl-root-cert) or a"
                " preview setting"
                " (--allow-function, --no-allowed-functions, --max-plan-cost)"
            )

    @property
    def login_paths(self) -> list[str]:
        """The mask paths of the login details given: any of them runs a credential test."""
        return [path for name, path in _LOGIN_PATHS.items() if getattr(self, name) is not None]

    @property
    def changes_preview(self) -> bool:
        """Whether the preview settings change."""
        return self.functions_given or self.max_plan_cost is not None

    @property
    def functions_given(self) -> bool:
        """Whether the allow-list is replaced (or cleared)."""
        return self.allow_functions is not None or self.no_allowed_functions

    @property
    def needs_current(self) -> bool:
        """Whether the current preview settings are needed: the mask replaces both at once,
        so the one not given is carried over."""
        return self.functions_given != (self.max_plan_cost is not None)

    def request(
        self, connection_id: str, current: cpb.PreviewSettings | None = None
    ) -> cpb.UpdateConnectionRequest:
        """The UpdateConnection request; ``current`` holds the connection's preview settings
        when ``needs_current``."""
        fields = cpb.PostgresFields(
            host=self.host or "",
            database=self.database or "",
            username=self.username or "",
            password=self.password or "",
            ssl_mode=_SSL[self.ssl_mode] if self.ssl_mode else cpb.SSL_MODE_UNSPECIFIED,
            ssl_root_cert=self.ssl_root_cert or "",
        )
        if self.port is not None:
            fields.port = self.port
        paths = (["display_name"] if self.name is not None else []) + self.login_paths
        if self.changes_preview:
            paths.append(PREVIEW_PATH)
            current = current or cpb.PreviewSettings()
            functions = (
                self.allow_functions or []
                if self.functions_given
                else list(current.allowed_functions)
            )
            cost = current.max_plan_cost if self.max_plan_cost is None else self.max_plan_cost
            # Nothing allowed and no budget is no settings: the mask path without a value.
            if functions or cost:
                fields.preview.CopyFrom(
                    cpb.PreviewSettings(allowed_functions=functions, max_plan_cost=cost)
                )
        return cpb.UpdateConnectionRequest(
            id=connection_id,
            connection=cpb.ConnectionUpdate(display_name=self.name or "", fields=fields),
            update_mask=FieldMask(paths=paths),
        )


def _show(cli: Cli, connection: cpb.Connection) -> dict[str, JsonValue]:
    data = message_dict(connection)
    cli.output.record(data, data, DETAIL)
    return data


@app.command(
    epilog=(
        "Example: sevvo connections create --name shop --host db.internal --database shop"
        " --username reader --ssl-mode require\n\n"
        "Example: sevvo connections create --name shop --dsn"
        " 'postgresql://reader@db.internal:5432/shop?sslmode=require' --password-stdin < pw\n\n"
        "Example: sevvo connections create --name shop --host shop.abc123.eu-west-1.rds"
        ".amazonaws.com --database shop --username reader --ssl-mode verify-full"
        " --ssl-root-cert global-bundle.pem\n\n"
        "Example: sevvo connections create --name shop --dynamic --host db.internal"
        " --database shop --username sevvo_admin --default-ttl 1h --max-ttl 8h\n\n"
        "Example: sevvo connections create --name shop --host db.internal --database shop"
        " --username reader --allow-function similarity --max-plan-cost 100000\n\n"
        "Example: sevvo connections create --name lake --parquet-directory /data/lake"
    )
)
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="A name for the connection.")],
    host: Annotated[str | None, typer.Option("--host", help="The server's host.")] = None,
    port: Annotated[int, typer.Option("--port", help="The server's port.")] = 5432,
    database: Annotated[str | None, typer.Option("--database", help="The database.")] = None,
    username: Annotated[
        str | None,
        typer.Option(
            "--username", help="The role to log in as (the privileged role if --dynamic)."
        ),
    ] = None,
    ssl_mode: Annotated[
        SslMode | None,
        typer.Option(
            "--ssl-mode",
            help="disable, require, verify-ca or verify-full \\[default: the DSN's, else"
            " verify-full with --ssl-root-cert, else require].",
        ),
    ] = None,
    ssl_root_cert: SslRootCert = None,
    dsn: Annotated[
        str | None,
        typer.Option(
            "--dsn",
            metavar="URI",
            help="postgresql://user@host:port/db?sslmode=... instead of the fields;"
            " without a password.",
        ),
    ] = None,
    dynamic: Annotated[
        bool,
        typer.Option(
            "--dynamic",
            help="Mint a short-lived login role per workload from this privileged role.",
        ),
    ] = False,
    default_ttl: Annotated[
        str | None, typer.Option("--default-ttl", help="Dynamic: lease lifetime, such as 1h.")
    ] = None,
    max_ttl: Annotated[
        str | None, typer.Option("--max-ttl", help="Dynamic: longest lease, such as 8h.")
    ] = None,
    group_role: Annotated[
        str | None,
        typer.Option(
            "--group-role", help="Dynamic: the role lease roles join \\[default: sevvo_readers]."
        ),
    ] = None,
    allow_function: AllowFunction = None,
    max_plan_cost: MaxPlanCost = None,
    password_stdin: PasswordStdin = False,
    parquet_directory: Annotated[
        str | None,
        typer.Option(
            "--parquet-directory",
            metavar="PATH",
            help="A directory of Parquet files in the agent's pod (a destination only), under"
            " the agent's SEVVO_AGENT_FILE_ROOTS; replaces every database option.",
        ),
    ] = None,
) -> None:
    """Create a connection; the agent tests the credentials (or, for a Parquet directory,
    that it may write there) before it is saved."""
    request = cpb.CreateConnectionRequest(display_name=name)
    if parquet_directory is not None:
        _refuse_database_options(
            host=host,
            port=port,
            database=database,
            username=username,
            ssl_mode=ssl_mode,
            ssl_root_cert=ssl_root_cert,
            dsn=dsn,
            dynamic=dynamic or None,
            default_ttl=default_ttl,
            max_ttl=max_ttl,
            group_role=group_role,
            allow_function=allow_function,
            max_plan_cost=max_plan_cost,
            password_stdin=password_stdin or None,
        )
        request.parquet_directory.CopyFrom(cpb.ParquetDirectory(path=parquet_directory))
        _create(ctx, request, "Checking the directory through your agent…")
        return
    preview = preview_settings(allow_function, max_plan_cost)
    root_cert = "" if ssl_root_cert is None else read_root_cert(ssl_root_cert)
    if dsn is not None:
        if dynamic or any(v is not None for v in (host, database, username)):
            raise usage_error("--dsn replaces --host, --database and --username, and not --dynamic")
        check_dsn(dsn)
        password = read_secret("Database password", from_stdin=password_stdin)
        request.dsn.CopyFrom(
            cpb.PostgresDsn(
                uri=dsn_with_password(dsn, password),
                ssl_mode=dsn_ssl_mode(dsn, ssl_mode, has_root_cert=bool(root_cert)),
                preview=preview,
                ssl_root_cert=root_cert,
            )
        )
    else:
        missing = [
            flag
            for flag, value in (
                ("--host", host),
                ("--database", database),
                ("--username", username),
            )
            if not value
        ]
        if missing:
            raise usage_error(f"missing {', '.join(missing)} (or give --dsn)")
        password = read_secret("Database password", from_stdin=password_stdin)
        ssl = _SSL[ssl_mode or default_ssl_mode(has_root_cert=bool(root_cert))]
        if dynamic:
            request.dynamic.CopyFrom(
                cpb.PostgresDynamic(
                    host=host,
                    port=port,
                    database=database,
                    ssl_mode=ssl,
                    privileged_username=username,
                    privileged_password=password,
                    default_ttl_seconds=parse_duration("--default-ttl", default_ttl)
                    if default_ttl
                    else 0,
                    max_ttl_seconds=parse_duration("--max-ttl", max_ttl) if max_ttl else 0,
                    group_role=group_role or "",
                    preview=preview,
                    ssl_root_cert=root_cert,
                )
            )
        else:
            if default_ttl or max_ttl or group_role:
                raise usage_error("--default-ttl, --max-ttl and --group-role need --dynamic")
            request.fields.CopyFrom(
                cpb.PostgresFields(
                    host=host,
                    port=port,
                    database=database,
                    username=username,
                    password=password,
                    ssl_mode=ssl,
                    preview=preview,
                    ssl_root_cert=root_cert,
                )
            )
    _create(ctx, request, "Testing the credentials through your agent…")


def _create(ctx: typer.Context, request: cpb.CreateConnectionRequest, progress: str) -> None:
    cli = cli_of(ctx)
    stub = cli.connections()
    with cli.output.progress(progress):
        connection = stub.CreateConnection(request, timeout=AGENT_TIMEOUT)
    _show(cli, connection)


def _refuse_database_options(**given: object) -> None:
    """Usage error naming the database options given with --parquet-directory (the port's
    default, 5432, counts as not given)."""
    flags = [
        "--" + name.replace("_", "-")
        for name, value in given.items()
        if value is not None and not (name == "port" and value == 5432)
    ]
    if flags:
        raise usage_error(
            f"--parquet-directory takes only --name; {', '.join(flags)} belong to a Postgres"
            " connection"
        )


@app.command(epilog=f"Example: sevvo connections get {_ID}")
def get(ctx: typer.Context, connection_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Show one connection (never its password)."""
    cli = cli_of(ctx)
    connection_id = resolve.connection_id(cli, connection_id)
    connection = cli.connections().GetConnection(
        cpb.GetConnectionRequest(id=connection_id), timeout=CALL_TIMEOUT
    )
    _show(cli, connection)


@app.command(
    epilog=(
        f"Example: sevvo connections update {_ID} --allow-function similarity"
        " --allow-function public.word_similarity\n\n"
        f"Example: sevvo connections update {_ID} --no-allowed-functions --max-plan-cost 0\n\n"
        f"Example: sevvo connections update {_ID} --host db2.internal\n\n"
        f"Example: sevvo connections update {_ID} --ssl-mode verify-full"
        " --ssl-root-cert ca.pem\n\n"
        f"Example: sevvo connections update {_ID} --username sevvo_reader --password-stdin < pw"
    )
)
def update(
    ctx: typer.Context,
    connection_id: Annotated[str, typer.Argument(metavar="ID")],
    name: Annotated[str | None, typer.Option("--name", help="A new name.")] = None,
    host: Annotated[str | None, typer.Option("--host", help="A new host.")] = None,
    port: Annotated[int | None, typer.Option("--port", help="A new port.")] = None,
    database: Annotated[str | None, typer.Option("--database", help="A new database.")] = None,
    username: Annotated[
        str | None,
        typer.Option(
            "--username", help="A new role to log in as (the privileged role if dynamic)."
        ),
    ] = None,
    ssl_mode: Annotated[
        SslMode | None,
        typer.Option(
            "--ssl-mode",
            help="disable, require, verify-ca or verify-full; disable or require drops a"
            " stored CA bundle.",
        ),
    ] = None,
    ssl_root_cert: SslRootCert = None,
    allow_function: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-function",
            metavar="NAME",
            help="Preview: replace the functions previews may call beyond the reviewed"
            " built-ins, as name or schema.name; repeat for more.",
            show_default=False,
        ),
    ] = None,
    no_allowed_functions: Annotated[
        bool,
        typer.Option(
            "--no-allowed-functions", help="Preview: allow no function beyond the built-ins."
        ),
    ] = False,
    max_plan_cost: MaxPlanCost = None,
    new_password: Annotated[
        bool,
        typer.Option(
            "--new-password",
            help="Also replace the password (asked for; or --password-stdin), as when"
            " logging in as another role.",
        ),
    ] = False,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin", help="Read the new password from the first line of stdin."
        ),
    ] = False,
) -> None:
    """Change a connection's name, details or preview settings; the rest stays as it is.

    A changed host, port, database, username, password, SSL mode or CA bundle is tested
    through your agent first (with the stored password unless you give a new one), and
    nothing changes if the test fails. Preview settings and the name change without a test.
    """
    replace_password = new_password or password_stdin
    edit = ConnectionEdit(
        name=name,
        host=host,
        port=port,
        database=database,
        username=username,
        # Checked with a stand-in first, so a mistake in the flags asks for no password.
        password="" if replace_password else None,
        ssl_mode=ssl_mode,
        ssl_root_cert=None if ssl_root_cert is None else read_root_cert(ssl_root_cert),
        allow_functions=allow_function,
        no_allowed_functions=no_allowed_functions,
        max_plan_cost=max_plan_cost,
    )
    if replace_password:
        secret = read_secret("New database password", from_stdin=password_stdin, confirm=True)
        edit = replace(edit, password=secret)
    cli = cli_of(ctx)
    connection_id = resolve.connection_id(cli, connection_id)
    stub = cli.connections()
    current = None
    if edit.needs_current:
        current = stub.GetConnection(
            cpb.GetConnectionRequest(id=connection_id), timeout=CALL_TIMEOUT
        ).preview
    request = edit.request(connection_id, current)
    if edit.login_paths:
        with cli.output.progress("Testing the new details through your agent…"):
            connection = stub.UpdateConnection(request, timeout=AGENT_TIMEOUT)
    else:
        connection = stub.UpdateConnection(request, timeout=CALL_TIMEOUT)
    _show(cli, connection)


@app.command("list", epilog="Example: sevvo connections list --output json")
def list_connections(ctx: typer.Context) -> None:
    """List your org's connections, oldest first."""
    cli = cli_of(ctx)
    stub = cli.connections()
    connections = [
        message_dict(c)
        for page in pages(
            lambda token: stub.ListConnections(
                cpb.ListConnectionsRequest(page_size=500, page_token=token), timeout=CALL_TIMEOUT
            )
        )
        for c in page.connections
    ]
    cli.output.records({"connections": connections}, connections, COLUMNS)


@app.command(epilog=f"Example: sevvo connections test {_ID}")
def test(ctx: typer.Context, connection_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Test a saved connection through your agent; exits 1 with a hint when it fails."""
    cli = cli_of(ctx)
    connection_id = resolve.connection_id(cli, connection_id)
    stub = cli.connections()
    with cli.output.progress("Testing the connection through your agent…"):
        connection = stub.TestConnection(
            cpb.TestConnectionRequest(id=connection_id), timeout=AGENT_TIMEOUT
        )
    _show(cli, connection)
    if connection.status != cpb.CONNECTION_STATUS_CONNECTED:
        category = connection.last_test_category or outcomes.OTHER.name
        raise category_failure("the connection test failed", category, "", Kind.CREDENTIAL_TEST)
    cli.output.note("connected")


@app.command(
    "rotate-password",
    epilog=f"Example: sevvo connections rotate-password {_ID} --password-stdin < new-pw",
)
def rotate_password(
    ctx: typer.Context,
    connection_id: Annotated[str, typer.Argument(metavar="ID")],
    password_stdin: PasswordStdin = False,
) -> None:
    """Replace the stored password; the agent tests it first and the old one stays on failure."""
    password = read_secret("New database password", from_stdin=password_stdin, confirm=True)
    cli = cli_of(ctx)
    connection_id = resolve.connection_id(cli, connection_id)
    stub = cli.connections()
    with cli.output.progress("Testing the new password through your agent…"):
        connection = stub.UpdateConnection(
            ConnectionEdit(password=password).request(connection_id), timeout=AGENT_TIMEOUT
        )
    _show(cli, connection)


@app.command("rotate-root", epilog=f"Example: sevvo connections rotate-root {_ID}")
def rotate_root(
    ctx: typer.Context, connection_id: Annotated[str, typer.Argument(metavar="ID")]
) -> None:
    """Rotate a dynamic connection's privileged password (org admins).

    The agent sets a new password, proves it and stores it sealed; nobody ever sees it.
    """
    cli = cli_of(ctx)
    connection_id = resolve.connection_id(cli, connection_id)
    with cli.output.progress("Rotating the privileged password through your agent…"):
        run = cli.orchestrator().RotateRootCredentials(
            opb.RotateRootCredentialsRequest(connection_id=connection_id), timeout=CALL_TIMEOUT
        )
        run = wait_for_run(cli, run)
    data = message_dict(run)
    cli.output.record(data, data, RUN_COLUMNS)
    raise_for_outcome(run, "the rotation did not happen", Kind.ROOT_ROTATION)
    cli.output.note(run.message)


@app.command(
    "schedule-root-rotation",
    epilog=(
        f"Example: sevvo connections schedule-root-rotation {_ID} --every 30d"
        f" (without --every: show the schedule)"
    ),
)
def schedule_root_rotation(
    ctx: typer.Context,
    connection_id: Annotated[str, typer.Argument(metavar="ID")],
    every: Annotated[
        str | None,
        typer.Option(
            "--every",
            help="Time between rotations (1h to 365d, such as 30d), or off; omit to show it.",
        ),
    ] = None,
) -> None:
    """Rotate a dynamic connection's privileged password on a schedule (setting it: admins)."""
    cli = cli_of(ctx)
    connection_id = resolve.connection_id(cli, connection_id)
    if every is None:
        schedule = cli.orchestrator().GetRootRotationSchedule(
            opb.GetRootRotationScheduleRequest(connection_id=connection_id), timeout=CALL_TIMEOUT
        )
    else:
        seconds = parse_interval("--every", every)
        request = opb.SetRootRotationScheduleRequest(connection_id=connection_id)
        request.interval.FromSeconds(seconds)
        schedule = cli.orchestrator().SetRootRotationSchedule(request, timeout=CALL_TIMEOUT)
    data = message_dict(schedule)
    cli.output.record(
        data,
        data,
        [
            ("connection", key("connection_id")),
            ("interval", lambda _: format_duration(schedule.interval.seconds)),
            ("next rotation", key("next_rotation_time")),
        ],
    )


@app.command(epilog=f"Example: sevvo connections delete {_ID} --yes")
def delete(
    ctx: typer.Context,
    connection_id: Annotated[str, typer.Argument(metavar="ID")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Delete even while dynamic-credential leases are live."),
    ] = False,
) -> None:
    """Delete a connection and its sealed credentials."""
    cli = cli_of(ctx)
    connection_id = resolve.connection_id(cli, connection_id)
    if not yes:
        if not sys.stdin.isatty():
            raise usage_error("refusing to delete without confirmation: pass --yes")
        if not typer.confirm(f"Delete connection {connection_id}?", err=True):
            raise CliError("not deleted")
    cli.connections().DeleteConnection(
        cpb.DeleteConnectionRequest(id=connection_id, force=force), timeout=CALL_TIMEOUT
    )
    if cli.output.json:
        cli.output.emit_json({"deleted": connection_id})
    else:
        cli.output.note(f"deleted {connection_id}")
