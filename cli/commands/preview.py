"""``sevvo preview``: run one read-only query through your agent and see at most 100 rows."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from cli import resolve
from cli.client import AGENT_TIMEOUT, Cli
from cli.errors import category_failure, usage_error
from cli.inputs import cli_of
from cli.output import JsonValue, Output, message_dict
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.runtime.outcomes import PREVIEW_CATEGORIES, QUERY_REJECTED, Kind
from sevvo.workflows.v1 import workflows_pb2 as wpb

CUT_MARK = "…"


def column_keys(names: list[str]) -> list[str]:
    """One distinct key per column for JSON rows: its name, or for a repeated name the name
    with _2, _3… (never one another column has), or column_N for an empty name."""
    taken = set(names)
    keys: list[str] = []
    for index, name in enumerate(names):
        key = name or f"column_{index + 1}"
        if key in keys:
            suffix = 2
            while f"{name}_{suffix}" in taken or f"{name}_{suffix}" in keys:
                suffix += 1
            key = f"{name}_{suffix}"
        keys.append(key)
    return keys


def preview_data(response: opb.PreviewQueryResponse) -> dict[str, JsonValue]:
    """The preview as JSON: columns (name, row key, type), rows as objects keyed by column
    (null for SQL NULL), and what was cut ([row index, key])."""
    result = response.result
    keys = column_keys([c.name for c in result.columns])
    return {
        "run_id": response.run.id,
        "category": response.run.outcome_category or PREVIEW_CATEGORIES.name(result.category),
        "message": result.message,
        "sqlstate": result.sqlstate,
        "position": result.position,
        "columns": [
            {"name": c.name, "key": key, "type": c.type_name}
            for c, key in zip(result.columns, keys, strict=True)
        ],
        "rows": [
            {key: None if c.is_null else c.text for key, c in zip(keys, row.cells, strict=False)}
            for row in result.rows
        ],
        "truncated": result.truncated,
        "columns_truncated": result.columns_truncated,
        "truncated_cells": [
            [r, key]
            for r, row in enumerate(result.rows)
            for key, value in zip(keys, row.cells, strict=False)
            if value.truncated
        ],
        "duration_ms": result.duration_ms,
        "receipt": message_dict(result.receipt) if result.HasField("receipt") else None,
        "run": message_dict(response.run),
    }


_AUDITED = "recorded in the audit log as a security event (connection.preview.receipt)"


def receipt_line(receipt: wpb.PreviewReceipt) -> tuple[str, bool] | None:
    """The receipt as one line for a person, and whether it is clean; None when none is owed.

    A clean receipt says what was proved; any other names what failed, so the warning is
    something a person can take to the database's owner without reading the JSON.
    """
    terminated = "the agent ended the statement's session after the timeout"
    if receipt.status == wpb.PREVIEW_RECEIPT_STATUS_CLEAN:
        text = "receipt: clean — no transaction id, no advisory lock, no session of the role ended"
        return (f"{text}; {terminated}" if receipt.backend_terminated else text), True
    if receipt.status == wpb.PREVIEW_RECEIPT_STATUS_MISSING:
        return (
            "no receipt: the statement reached the database but the connection was lost"
            f" before the checks could be made; {_AUDITED}",
            False,
        )
    if receipt.status != wpb.PREVIEW_RECEIPT_STATUS_NOT_CLEAN:
        return None
    failed = []
    if receipt.transaction_id_assigned:
        failed.append("a transaction id was assigned (something wrote)")
    if receipt.advisory_locks_held:
        failed.append(_count(receipt.advisory_locks_held, "advisory lock") + " held")
    if receipt.role_sessions_ended:
        failed.append(_count(receipt.role_sessions_ended, "other session") + " of the role ended")
    if receipt.backend_outlived_call:
        failed.append("the statement's session was still running after the agent ended it")
    elif receipt.backend_terminated:
        failed.append(terminated)
    return f"receipt not clean: {', '.join(failed) or 'a check failed'}; {_AUDITED}", False


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _table(result: wpb.PreviewQueryResult) -> Table:
    table = Table(header_style="bold", show_edge=False)
    for column in result.columns:
        table.add_column(Text(f"{column.name}\n{column.type_name}"), overflow="fold")
    for row in result.rows:
        table.add_row(
            *(
                Text("NULL", style="dim")
                if value.is_null
                else Text(value.text + (CUT_MARK if value.truncated else ""))
                for value in row.cells
            )
        )
    return table


def _sql_text(sql: str | None, file: Path | None) -> str:
    if (sql is None) == (file is None):
        raise usage_error("give the SQL as an argument (or - for stdin), or with --file")
    if file is not None:
        try:
            return file.read_text(encoding="utf-8")
        except OSError as exc:
            raise usage_error(f"cannot read {file}: {exc.strerror}") from None
    assert sql is not None
    return sys.stdin.read() if sql == "-" else sql


def preview(
    ctx: typer.Context,
    connection_id: Annotated[str, typer.Argument(metavar="CONNECTION_ID")],
    sql: Annotated[
        str | None, typer.Argument(metavar="[SQL]", help="The query, or - to read it from stdin.")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", metavar="PATH", dir_okay=False, help="Read the query here."),
    ] = None,
) -> None:
    """Preview one read-only query (SELECT, WITH … SELECT, TABLE or VALUES) on a connection.

    Your agent runs it next to the database in a read-only transaction with a 10 s timeout
    and returns at most 100 rows, every cell cut at 1,024 characters. Nothing is stored.
    """
    text = _sql_text(sql, file)
    cli = cli_of(ctx)
    run_preview(cli, resolve.connection_id(cli, connection_id), text)


def run_preview(cli: Cli, connection_id: str, sql: str) -> None:
    """Previews ``sql`` on the connection through the agent and shows the result (rows, or the
    category, hint and exit code of a preview that did not succeed); ``sevvo preview`` and
    ``sevvo models preview`` both show previews this way."""
    stub = cli.orchestrator()
    with cli.output.progress("Running the preview through your agent…"):
        response = stub.PreviewQuery(
            opb.PreviewQueryRequest(connection_id=connection_id, sql=sql), timeout=AGENT_TIMEOUT
        )
    data = preview_data(response)
    result = response.result
    ok = PREVIEW_CATEGORIES.outcome(result.category).succeeded
    if cli.output.json:
        cli.output.emit_json(data)
    elif ok:
        cli.output.stdout.print(_table(result))
        _footnotes(cli.output, data)
    _receipt_note(cli.output, result)
    if not ok:
        message = result.message
        if result.position:
            message = f"{message} (at character {result.position})"
        if result.sqlstate:
            message = f"{message} [SQLSTATE {result.sqlstate}]"
        category = str(data["category"])
        what = "query rejected" if category == QUERY_REJECTED.name else "preview failed"
        raise category_failure(what, category, message, Kind.PREVIEW)


def _footnotes(output: Output, data: dict[str, JsonValue]) -> None:
    rows = len(data["rows"])
    output.note(f"{rows} row{'s' if rows != 1 else ''} (run {data['run_id']})")
    if data["truncated"]:
        output.note("truncated: the query has more rows than the 100 shown")
    if data["columns_truncated"]:
        output.note("truncated: the query has more columns than those shown")
    if data["truncated_cells"]:
        cut = len(data["truncated_cells"])
        output.note(f"{CUT_MARK} marks {cut} cell{'s' if cut != 1 else ''} cut at 1,024 characters")


def _receipt_note(output: Output, result: wpb.PreviewQueryResult) -> None:
    """The receipt's footnote in table output; a receipt that is not clean warns in JSON too.

    Also after a failed preview: a timeout is where the agent may have ended the session.
    """
    line = receipt_line(result.receipt) if result.HasField("receipt") else None
    if line is None:
        return
    text, clean = line
    if not clean:
        output.warn(text)
    elif not output.json:
        output.note(text)


def register(app: typer.Typer) -> None:
    """Adds ``preview`` to the root command."""
    app.command(
        epilog=(
            "Example: sevvo preview 3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10"
            " 'select * from orders order by id'\n\n"
            "Example: sevvo preview 3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10 --file report.sql\n\n"
            "Example: echo 'table customers' | sevvo preview"
            " 3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10 - --output json"
        )
    )(preview)
