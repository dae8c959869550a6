"""``sevvo models``: your org's models, each a read-only statement on a source connection and
the destination table its result fills; their previews, syncs, schedules and runs.

A model is defined by flags or by a TOML file whose keys are the flags' names (``FILE_FORMAT``
below, also in the command's help and docs/user-guide.md). Every mistake the command line can
see (a missing flag, an unknown key, a value of the wrong type, an unreadable SQL file) is a
usage error before anything is sent; the rest (names, the statement, the interval) the service
checks, naming each field it refuses.
"""

from __future__ import annotations

import difflib
import math
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any

import typer
from google.protobuf.field_mask_pb2 import FieldMask

from cli import resolve
from cli.client import CALL_TIMEOUT, Cli
from cli.commands.preview import run_preview
from cli.commands.runs import (
    SYNC_DETAIL,
    list_page,
    raise_for_outcome,
    sync_field,
    wait_for_run,
)
from cli.errors import CliError, usage_error
from cli.inputs import (
    AllPages,
    Limit,
    PageToken,
    cli_of,
    format_duration,
    pages,
    parse_interval,
)
from cli.output import Column, JsonValue, key, message_dict
from sevvo.orchestrator.v1 import models_pb2 as mpb
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.runtime.outcomes import Kind

app = typer.Typer(
    help="Manage your org's models: a read-only query on a source connection, loaded into a"
    " table of a destination connection by your agent; sync them now or on a schedule.",
    no_args_is_help=True,
)

_NAME = "orders-daily"
# Interrupted by Ctrl-C, as a shell reports it (128 + SIGINT).
EXIT_INTERRUPTED = 130


def _schedule(record: Mapping[str, JsonValue]) -> object:
    """The schedule as ``6h`` (``off`` without one); JSON keeps protobuf's ``21600s``."""
    interval = record.get("schedule_interval") or "0s"
    return format_duration(int(float(str(interval).removesuffix("s"))))


def _primary_key(record: Mapping[str, JsonValue]) -> object:
    return ", ".join(record.get("primary_key") or ()) or None


# Most important first: a narrow terminal drops columns from the end.
COLUMNS: list[Column] = [
    ("id", key("id")),
    ("name", key("name")),
    ("table", key("destination_table")),
    ("mode", key("load_mode")),
    ("schedule", _schedule),
    ("next sync", key("next_sync_time")),
    ("source", key("source_connection_id")),
    ("destination", key("destination_connection_id")),
]
DETAIL: list[Column] = [
    ("id", key("id")),
    ("name", key("name")),
    ("source", key("source_connection_id")),
    ("destination", key("destination_connection_id")),
    ("table", key("destination_table")),
    ("mode", key("load_mode")),
    ("cursor", key("cursor_column")),
    ("primary key", _primary_key),
    ("schema evolution", key("allow_schema_evolution")),
    ("schedule", _schedule),
    ("next sync", key("next_sync_time")),
    ("created", key("create_time")),
    ("updated", key("update_time")),
    ("sql", key("sql")),
]
SYNC_COLUMNS: list[Column] = [
    ("run", key("id")),
    ("state", key("state")),
    ("outcome", key("outcome_category")),
    ("model", key("model_id")),
    ("rows", sync_field("rows")),
    *SYNC_DETAIL,
    ("message", key("message")),
    ("started", key("start_time")),
    ("finished", key("finish_time")),
]
"""A sync's run as ``sevvo models sync`` shows it: what the agent loaded, never a row."""
RUN_LIST_COLUMNS: list[Column] = [
    ("id", key("id")),
    ("state", key("state")),
    ("outcome", key("outcome_category")),
    ("rows", sync_field("rows")),
    ("bytes", sync_field("bytes")),
    ("ms", key("duration_ms")),
    ("started", key("start_time")),
]
"""``sevvo models runs``: the columns of ``sevvo runs list`` that vary between syncs."""

FILE_FORMAT = """\
name = "orders-daily"           # the NAME argument
source = "shop"                 # connection name or id (--source)
destination = "warehouse"       # (--destination)
table = "analytics.orders"      # (--table)
sql-file = "orders.sql"         # beside this file (--sql-file), or:
# sql = "select * from orders"  # the query itself (--sql)
incremental = true              # (--incremental); false: full refresh
cursor = "updated_at"           # incremental only (--cursor)
primary-key = ["id"]            # incremental only (--primary-key)
allow-schema-evolution = false  # (--allow-schema-evolution)
every = "6h"                    # a schedule, or "off" (--every)"""
"""A model file: TOML whose keys are the flags' names (sql or sql-file for the query), needed
or optional as the flags are."""


@dataclass(frozen=True)
class ModelSpec:
    """A model as the user wrote it, by flags or in a file; None leaves a field unset.

    ``source`` and ``destination`` are connections as typed (a name, id or id prefix);
    ``every`` is seconds between scheduled syncs, 0 for no schedule.
    """

    name: str | None = None
    source: str | None = None
    destination: str | None = None
    table: str | None = None
    sql: str | None = None
    incremental: bool | None = None
    cursor: str | None = None
    primary_key: tuple[str, ...] | None = None
    allow_schema_evolution: bool | None = None
    every: int | None = None

    def given(self) -> list[str]:
        """The attributes set, in field order."""
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def check_new(self) -> None:
        """A usage error unless this defines a whole model, in a way the flags allow."""
        missing = [
            shown
            for attribute, shown in (
                ("name", "NAME"),
                ("source", "--source"),
                ("destination", "--destination"),
                ("table", "--table"),
                ("sql", "the SQL (--sql, --sql-file or --sql-stdin)"),
            )
            if not getattr(self, attribute)
        ]
        if missing:
            raise usage_error(f"a model needs {', '.join(missing)}")
        if self.incremental and not (self.cursor and self.primary_key):
            raise usage_error(
                "--incremental needs --cursor COLUMN (how far the last sync read) and"
                " --primary-key COLUMN[,COLUMN] (what rows are merged by)"
            )
        if not self.incremental and (self.cursor or self.primary_key):
            raise usage_error(
                "--cursor and --primary-key are for incremental models: add --incremental"
            )

    @property
    def update_mask(self) -> list[str]:
        """The Model fields this changes, by their API names: exactly the ones given."""
        return [_MASK_PATHS[attribute] for attribute in self.given()]

    def model(self, connection_id: Callable[[str], str], model_id: str = "") -> mpb.Model:
        """The Model to send; ``connection_id`` turns a connection as typed into its id."""
        model = mpb.Model(
            id=model_id,
            name=self.name or "",
            source_connection_id=connection_id(self.source) if self.source else "",
            destination_connection_id=connection_id(self.destination) if self.destination else "",
            destination_table=self.table or "",
            sql=self.sql or "",
            cursor_column=self.cursor or "",
            primary_key=self.primary_key or (),
            allow_schema_evolution=bool(self.allow_schema_evolution),
        )
        if self.incremental is not None:
            model.load_mode = (
                mpb.LOAD_MODE_INCREMENTAL if self.incremental else mpb.LOAD_MODE_FULL_REFRESH
            )
        if self.every is not None:
            model.schedule_interval.FromSeconds(self.every)
        return model

    def create_request(self, connection_id: Callable[[str], str]) -> mpb.CreateModelRequest:
        """The CreateModel request of a whole model (see ``check_new``); full refresh unless
        it says incremental."""
        model = self.model(connection_id)
        if self.incremental is None:
            model.load_mode = mpb.LOAD_MODE_FULL_REFRESH
        return mpb.CreateModelRequest(model=model)

    def check_update(self) -> None:
        """A usage error when nothing is to change."""
        if not self.given():
            raise usage_error(
                "nothing to update: give --name, --source, --destination, --table, the SQL"
                " (--sql, --sql-file or --sql-stdin), --incremental or --full-refresh,"
                " --cursor, --primary-key, --allow-schema-evolution or --no-schema-evolution,"
                " or --every"
            )

    def update_request(
        self, model_id: str, connection_id: Callable[[str], str]
    ) -> mpb.UpdateModelRequest:
        """The UpdateModel request changing exactly the fields given (see ``check_update``)."""
        self.check_update()
        return mpb.UpdateModelRequest(
            model=self.model(connection_id, model_id),
            update_mask=FieldMask(paths=self.update_mask),
        )


# ModelSpec's attributes and the Model fields they set (the update mask's paths).
_MASK_PATHS = {
    "name": "name",
    "source": "source_connection_id",
    "destination": "destination_connection_id",
    "table": "destination_table",
    "sql": "sql",
    "incremental": "load_mode",
    "cursor": "cursor_column",
    "primary_key": "primary_key",
    "allow_schema_evolution": "allow_schema_evolution",
    "every": "schedule_interval",
}


def read_sql(sql: str | None, sql_file: Path | None, sql_stdin: bool) -> str | None:
    """The statement from ``--sql``, ``--sql-file`` or ``--sql-stdin`` (at most one), or None.

    A file that cannot be read, or SQL that is empty, is a usage error: never an empty or
    partial statement sent on as if it were the model's.
    """
    given = [
        flag
        for flag, present in (
            ("--sql", sql is not None),
            ("--sql-file", sql_file is not None),
            ("--sql-stdin", sql_stdin),
        )
        if present
    ]
    if len(given) > 1:
        raise usage_error(f"give the SQL once: {' or '.join(given)}, not both")
    if sql_file is not None:
        text = _read_text("--sql-file", sql_file)
    elif sql_stdin:
        text = sys.stdin.read()
    elif sql is not None:
        text = sql
    else:
        return None
    if not text.strip():
        raise usage_error(f"{given[0]}: the SQL is empty")
    return text


def _read_text(option: str, path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise usage_error(f"{option}: {path} is not UTF-8 text") from None
    except OSError as error:
        raise usage_error(f"{option}: cannot read {path}: {error.strerror}") from None


def primary_key_columns(option: str, values: list[str]) -> tuple[str, ...]:
    """Columns from ``--primary-key a,b`` (repeatable); an empty name is a usage error."""
    columns = tuple(part.strip() for value in values for part in value.split(","))
    if not columns or not all(columns):
        raise usage_error(f"{option}: name each column, as in id or tenant_id,id")
    return columns


def spec_from_flags(
    *,
    name: str | None = None,
    source: str | None = None,
    destination: str | None = None,
    table: str | None = None,
    sql: str | None = None,
    sql_file: Path | None = None,
    sql_stdin: bool = False,
    incremental: bool | None = None,
    cursor: str | None = None,
    primary_key: list[str] | None = None,
    allow_schema_evolution: bool | None = None,
    every: str | None = None,
) -> ModelSpec:
    """The model the flags describe (the SQL read from where they say)."""
    return ModelSpec(
        name=name,
        source=source,
        destination=destination,
        table=table,
        sql=read_sql(sql, sql_file, sql_stdin),
        incremental=incremental,
        cursor=cursor,
        primary_key=None
        if primary_key is None
        else primary_key_columns("--primary-key", primary_key),
        allow_schema_evolution=allow_schema_evolution,
        every=None if every is None else parse_interval("--every", every),
    )


# A model file's keys: the flags' names, and what each must hold.
_STRING, _BOOLEAN, _COLUMNS = "a string", "true or false", "a string or a list of strings"
_FILE_KEYS = {
    "name": _STRING,
    "source": _STRING,
    "destination": _STRING,
    "table": _STRING,
    "sql": _STRING,
    "sql-file": _STRING,
    "incremental": _BOOLEAN,
    "cursor": _STRING,
    "primary-key": _COLUMNS,
    "allow-schema-evolution": _BOOLEAN,
    "every": _STRING,
}


def _fits(value: object, kind: str) -> bool:
    if kind == _BOOLEAN:
        return isinstance(value, bool)
    if kind == _COLUMNS and isinstance(value, list):
        return all(isinstance(item, str) for item in value)
    return isinstance(value, str)


def _toml_type(value: object) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}
    names |= {list: "a list", dict: "a table"}
    return names.get(type(value), f"a {type(value).__name__}")


def spec_from_toml(text: str, where: str, base: Path) -> ModelSpec:
    """The model a model file describes; ``sql-file`` is read relative to ``base``.

    Unknown keys (a misspelling would otherwise be a setting silently left out) and values of
    the wrong type are usage errors naming the file and the key.
    """
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise usage_error(f"{where} is not valid TOML: {error}") from None
    for name, value in data.items():
        kind = _FILE_KEYS.get(name)
        if kind is None:
            close = difflib.get_close_matches(name, _FILE_KEYS, n=1)
            suggestion = f"did you mean {close[0]}? " if close else ""
            raise usage_error(
                f"{where}: unknown key {name!r}; {suggestion}a model file takes"
                f" {', '.join(_FILE_KEYS)}"
            )
        if not _fits(value, kind):
            raise usage_error(f"{where}: {name} must be {kind}, not {_toml_type(value)}")
    if "sql" in data and "sql-file" in data:
        raise usage_error(f"{where}: give sql or sql-file, not both")
    sql = data.get("sql")
    if "sql-file" in data:
        sql = _read_text(f"{where}: sql-file", base / data["sql-file"])
    if sql is not None and not sql.strip():
        raise usage_error(f"{where}: the SQL is empty")
    primary_key = data.get("primary-key")
    every = data.get("every")
    return ModelSpec(
        name=data.get("name"),
        source=data.get("source"),
        destination=data.get("destination"),
        table=data.get("table"),
        sql=sql,
        incremental=data.get("incremental"),
        cursor=data.get("cursor"),
        primary_key=None
        if primary_key is None
        else primary_key_columns(
            f"{where}: primary-key", [primary_key] if isinstance(primary_key, str) else primary_key
        ),
        allow_schema_evolution=data.get("allow-schema-evolution"),
        every=None if every is None else parse_interval(f"{where}: every", every),
    )


def read_model_file(path: Path) -> ModelSpec:
    """The model in a file (``-``: standard input, its SQL files relative to here)."""
    if str(path) == "-":
        return spec_from_toml(sys.stdin.read(), "standard input", Path.cwd())
    return spec_from_toml(_read_text("--file", path), str(path), path.parent)


def _show(cli: Cli, model: mpb.Model) -> None:
    data = message_dict(model)
    cli.output.record(data, data, DETAIL)


def _connection_ids(cli: Cli) -> Callable[[str], str]:
    """Connections by id, id prefix or name, each looked up once."""
    found: dict[str, str] = {}

    def connection_id(text: str) -> str:
        if text not in found:
            found[text] = resolve.connection_id(cli, text)
        return found[text]

    return connection_id


ModelArgument = Annotated[str, typer.Argument(metavar="NAME|ID", help="The model's name or id.")]
Source = Annotated[
    str | None,
    typer.Option("--source", metavar="CONNECTION", help="The connection the query runs on."),
]
Destination = Annotated[
    str | None,
    typer.Option(
        "--destination", metavar="CONNECTION", help="The connection the result is written to."
    ),
]
Table = Annotated[
    str | None,
    typer.Option("--table", metavar="SCHEMA.TABLE", help="The destination table."),
]
Sql = Annotated[str | None, typer.Option("--sql", metavar="SQL", help="The query itself.")]
SqlFile = Annotated[
    Path | None,
    typer.Option("--sql-file", metavar="PATH", dir_okay=False, help="Read the query here."),
]
SqlStdin = Annotated[bool, typer.Option("--sql-stdin", help="Read the query from stdin.")]
Incremental = Annotated[
    bool | None,
    typer.Option(
        "--incremental/--full-refresh",
        help="Merge the rows past the cursor by primary key, or replace the whole table"
        " \\[default: full refresh].",
        show_default=False,
    ),
]
Cursor = Annotated[
    str | None,
    typer.Option(
        "--cursor", metavar="COLUMN", help="Incremental: the column that orders new rows."
    ),
]
PrimaryKey = Annotated[
    list[str] | None,
    typer.Option(
        "--primary-key",
        metavar="COLUMN[,COLUMN]",
        help="Incremental: the columns rows are merged by.",
        show_default=False,
    ),
]
SchemaEvolution = Annotated[
    bool | None,
    typer.Option(
        "--allow-schema-evolution/--no-schema-evolution",
        help="Whether a column dropped or retyped at the source may change the destination"
        " table \\[default: no].",
        show_default=False,
    ),
]
Every = Annotated[
    str | None,
    typer.Option(
        "--every",
        metavar="DURATION",
        help="Sync on a schedule, such as 15m, 6h or 1d (5m to 365d), or off.",
    ),
]


@app.command(
    epilog=(
        f"Example: sevvo models create {_NAME} --source shop --destination warehouse"
        " --table analytics.orders --sql-file orders.sql --every 6h\n\n"
        f"Example: sevvo models create {_NAME} --source shop --destination warehouse"
        " --table analytics.orders --incremental --cursor updated_at --primary-key id"
        " --sql-stdin < orders.sql\n\n"
        "Example: sevvo models create --file orders.toml\n\n"
        "A model file is TOML whose keys are the flags' names; sql-file is read relative to"
        " the model file, and an unknown key is refused:\n\n" + FILE_FORMAT
    )
)
def create(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Argument(metavar="[NAME]", help="A name: lower-case letters, digits, - and _."),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            metavar="PATH",
            dir_okay=False,
            help="Read the whole model from this TOML file (- for stdin), instead of flags.",
        ),
    ] = None,
    source: Source = None,
    destination: Destination = None,
    table: Table = None,
    sql: Sql = None,
    sql_file: SqlFile = None,
    sql_stdin: SqlStdin = False,
    incremental: Incremental = None,
    cursor: Cursor = None,
    primary_key: PrimaryKey = None,
    allow_schema_evolution: SchemaEvolution = None,
    every: Every = None,
) -> None:
    """Create a model: the query is checked as previews are, and nothing runs until a sync."""
    if file is not None:
        flags = {
            "NAME": name,
            "--source": source,
            "--destination": destination,
            "--table": table,
            "--sql": sql,
            "--sql-file": sql_file,
            "--sql-stdin": sql_stdin or None,
            "--incremental/--full-refresh": incremental,
            "--cursor": cursor,
            "--primary-key": primary_key,
            "--allow-schema-evolution": allow_schema_evolution,
            "--every": every,
        }
        extra = [flag for flag, value in flags.items() if value is not None]
        if extra:
            raise usage_error(
                f"--file holds the whole model: give {', '.join(extra)} in the file instead"
            )
        spec = read_model_file(file)
    else:
        spec = spec_from_flags(
            name=name,
            source=source,
            destination=destination,
            table=table,
            sql=sql,
            sql_file=sql_file,
            sql_stdin=sql_stdin,
            incremental=incremental,
            cursor=cursor,
            primary_key=primary_key,
            allow_schema_evolution=allow_schema_evolution,
            every=every,
        )
    spec.check_new()
    cli = cli_of(ctx)
    request = spec.create_request(_connection_ids(cli))
    _show(cli, cli.models().CreateModel(request, timeout=CALL_TIMEOUT))


@app.command("list", epilog="Example: sevvo models list --output json")
def list_models(ctx: typer.Context) -> None:
    """List your org's models by name."""
    cli = cli_of(ctx)
    stub = cli.models()
    models = [
        message_dict(m)
        for page in pages(
            lambda token: stub.ListModels(
                mpb.ListModelsRequest(page_size=500, page_token=token), timeout=CALL_TIMEOUT
            )
        )
        for m in page.models
    ]
    cli.output.records({"models": models}, models, COLUMNS)


@app.command(epilog=f"Example: sevvo models get {_NAME}")
def get(ctx: typer.Context, model: ModelArgument) -> None:
    """Show one model, its query included."""
    cli = cli_of(ctx)
    model_id = resolve.model_id(cli, model)
    _show(cli, cli.models().GetModel(mpb.GetModelRequest(id=model_id), timeout=CALL_TIMEOUT))


@app.command(
    epilog=(
        f"Example: sevvo models update {_NAME} --sql-file orders.sql\n\n"
        f"Example: sevvo models update {_NAME} --incremental --cursor updated_at"
        " --primary-key id\n\n"
        f"Example: sevvo models update {_NAME} --full-refresh --allow-schema-evolution"
    )
)
def update(
    ctx: typer.Context,
    model: ModelArgument,
    name: Annotated[str | None, typer.Option("--name", help="A new name.")] = None,
    source: Source = None,
    destination: Destination = None,
    table: Table = None,
    sql: Sql = None,
    sql_file: SqlFile = None,
    sql_stdin: SqlStdin = False,
    incremental: Incremental = None,
    cursor: Cursor = None,
    primary_key: PrimaryKey = None,
    allow_schema_evolution: SchemaEvolution = None,
    every: Every = None,
) -> None:
    """Change the fields given; every other field stays as it is."""
    spec = spec_from_flags(
        name=name,
        source=source,
        destination=destination,
        table=table,
        sql=sql,
        sql_file=sql_file,
        sql_stdin=sql_stdin,
        incremental=incremental,
        cursor=cursor,
        primary_key=primary_key,
        allow_schema_evolution=allow_schema_evolution,
        every=every,
    )
    spec.check_update()
    cli = cli_of(ctx)
    model_id = resolve.model_id(cli, model)
    request = spec.update_request(model_id, _connection_ids(cli))
    _show(cli, cli.models().UpdateModel(request, timeout=CALL_TIMEOUT))


@app.command(epilog=f"Example: sevvo models delete {_NAME} --yes")
def delete(
    ctx: typer.Context,
    model: ModelArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a model and its schedule; its destination table and past runs stay."""
    cli = cli_of(ctx)
    model_id = resolve.model_id(cli, model)
    if not yes:
        if not sys.stdin.isatty():
            raise usage_error("refusing to delete without confirmation: pass --yes")
        if not typer.confirm(f"Delete model {model} ({model_id})?", err=True):
            raise CliError("not deleted")
    cli.models().DeleteModel(mpb.DeleteModelRequest(id=model_id), timeout=CALL_TIMEOUT)
    if cli.output.json:
        cli.output.emit_json({"deleted": model_id})
    else:
        cli.output.note(f"deleted {model_id}")


@app.command(epilog=f"Example: sevvo models preview {_NAME}")
def preview(ctx: typer.Context, model: ModelArgument) -> None:
    """Preview the model's query on its source, as sevvo preview does: at most 100 rows,
    nothing written anywhere."""
    cli = cli_of(ctx)
    model_id = resolve.model_id(cli, model)
    found = cli.models().GetModel(mpb.GetModelRequest(id=model_id), timeout=CALL_TIMEOUT)
    run_preview(cli, found.source_connection_id, found.sql)


@app.command(
    epilog=(
        f"Example: sevvo models sync {_NAME}\n\n"
        f"Example: sevvo models sync {_NAME} --no-wait --output json"
    )
)
def sync(
    ctx: typer.Context,
    model: ModelArgument,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Start the sync and show its run at once.")
    ] = False,
) -> None:
    """Sync a model now through your agent and wait for it to end, however long it takes.

    Shows what was loaded (rows, bytes, duration, the result's schema fingerprint, whether the
    table was created or its schema changed); exits 1 with the category and hint when the sync
    failed. Ctrl-C stops waiting, not the sync (exit 130); sevvo runs wait RUN_ID picks it up.
    """
    cli = cli_of(ctx)
    model_id = resolve.model_id(cli, model)
    run = cli.models().SyncModel(mpb.SyncModelRequest(id=model_id), timeout=CALL_TIMEOUT)
    if not no_wait and run.state == opb.RUN_STATE_RUNNING:
        cli.output.note(f"started run {run.id}")
        try:
            with cli.output.progress("Syncing through your agent…"):
                run = wait_for_run(cli, run, timeout=math.inf)
        except KeyboardInterrupt:
            cli.output.note(
                f"stopped waiting; the sync goes on in your agent: sevvo runs wait {run.id}"
                " shows how it ends"
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None
    data = message_dict(run)
    cli.output.record(data, data, SYNC_COLUMNS)
    if run.state == opb.RUN_STATE_RUNNING:
        cli.output.note(f"running: sevvo runs wait {run.id} shows how it ends")
        return
    raise_for_outcome(run, "the sync failed", Kind.SYNC)


@app.command(
    epilog=(
        f"Example: sevvo models schedule {_NAME} --every 6h\n\n"
        f"Example: sevvo models schedule {_NAME} --off\n\n"
        f"Example: sevvo models schedule {_NAME} (without --every or --off: show it)"
    )
)
def schedule(
    ctx: typer.Context,
    model: ModelArgument,
    every: Every = None,
    off: Annotated[bool, typer.Option("--off", help="Sync only when asked.")] = False,
) -> None:
    """Sync a model on a schedule, or stop; without --every or --off, show the schedule."""
    if every is not None and off:
        raise usage_error("give --every or --off, not both")
    seconds = 0 if off else None if every is None else parse_interval("--every", every)
    cli = cli_of(ctx)
    model_id = resolve.model_id(cli, model)
    stub = cli.models()
    if seconds is None:
        found = stub.GetModel(mpb.GetModelRequest(id=model_id), timeout=CALL_TIMEOUT)
    else:
        request = ModelSpec(every=seconds).update_request(model_id, str)
        found = stub.UpdateModel(request, timeout=CALL_TIMEOUT)
    data = message_dict(found)
    cli.output.record(
        data,
        data,
        [
            ("model", key("id")),
            ("name", key("name")),
            ("schedule", _schedule),
            ("next sync", key("next_sync_time")),
        ],
    )


@app.command(epilog=f"Example: sevvo models runs {_NAME} --limit 10")
def runs(
    ctx: typer.Context,
    model: ModelArgument,
    limit: Limit = 50,
    page_token: PageToken = "",
    everything: AllPages = False,
) -> None:
    """List a model's syncs, newest first, with the rows and bytes each loaded."""
    cli = cli_of(ctx)
    model_id = resolve.model_id(cli, model)
    list_page(
        cli,
        model_id=model_id,
        connection_id=None,
        limit=limit,
        page_token=page_token,
        everything=everything,
        columns=RUN_LIST_COLUMNS,
        command=f"sevvo models runs {model}",
    )
