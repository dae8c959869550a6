"""``sevvo runs``: the metadata of credential tests, previews, rotations and syncs (never rows)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Annotated

import grpc
import typer

from cli import resolve
from cli.client import AGENT_TIMEOUT, CALL_TIMEOUT, Cli
from cli.errors import category_failure
from cli.inputs import AllPages, Limit, PageToken, cli_of, collect
from cli.output import Column, JsonValue, key, message_dict
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.runtime import outcomes
from sevvo.runtime.outcomes import Kind

app = typer.Typer(
    help="Inspect runs: credential tests, previews, root rotations and model syncs.",
    no_args_is_help=True,
)


def sync_field(name: str) -> Callable[[Mapping[str, JsonValue]], object]:
    """A column getter for one field of a sync run's result (none for other runs)."""
    return lambda record: (record.get("sync") or {}).get(name)


def _rows(record: Mapping[str, JsonValue]) -> object:
    """Rows a preview returned, or rows a sync loaded (unknown when the agent never answered)."""
    if record.get("kind") == "sync":
        return sync_field("rows")(record)
    return record.get("row_count")


# Most important first: a narrow terminal drops columns from the end.
COLUMNS: list[Column] = [
    ("id", key("id")),
    ("kind", key("kind")),
    ("state", key("state")),
    ("outcome", key("outcome_category")),
    ("connection", key("connection_id")),
    ("rows", _rows),
    ("ms", key("duration_ms")),
    ("started", key("start_time")),
]
SYNC_DETAIL: list[Column] = [
    ("bytes", sync_field("bytes")),
    ("sync ms", sync_field("duration_ms")),
    ("fingerprint", sync_field("schema_fingerprint")),
    ("created table", sync_field("created_table")),
    ("schema changed", sync_field("schema_changed")),
    ("full reload", sync_field("full_reload")),
    ("sqlstate", sync_field("sqlstate")),
]
"""What a sync run adds to ``sevvo runs get``: its result's counts and schema flags."""


@app.command(
    "list",
    epilog=(
        "Example: sevvo runs list --connection 3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10 --limit 10"
        "\n\nExample: sevvo runs list --model orders-daily"
    ),
)
def list_runs(
    ctx: typer.Context,
    connection: Annotated[
        str | None, typer.Option("--connection", metavar="ID", help="Only this connection's runs.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", metavar="NAME|ID", help="Only this model's syncs.")
    ] = None,
    limit: Limit = 50,
    page_token: PageToken = "",
    everything: AllPages = False,
) -> None:
    """List your org's runs, newest first; says how to page on when more follow."""
    cli = cli_of(ctx)
    if connection is not None:
        connection = resolve.connection_id(cli, connection)
    model_id = "" if model is None else resolve.model_id(cli, model)
    list_page(
        cli,
        model_id=model_id,
        connection_id=connection,
        limit=limit,
        page_token=page_token,
        everything=everything,
        columns=COLUMNS,
        command="sevvo runs list",
    )


def list_page(
    cli: Cli,
    *,
    model_id: str,
    connection_id: str | None,
    limit: int,
    page_token: str,
    everything: bool,
    columns: list[Column],
    command: str,
) -> None:
    """Shows one listing of runs (of a model when ``model_id``; of a connection when
    ``connection_id``), newest first, as ``sevvo runs list`` and ``sevvo models runs`` do."""
    stub = cli.orchestrator()
    listing = collect(
        lambda token, size: stub.ListRuns(
            opb.ListRunsRequest(page_size=size, page_token=token, model_id=model_id),
            timeout=CALL_TIMEOUT,
        ),
        # ListRuns has no connection filter; filtering here keeps the server's paging simple.
        lambda page: (
            message_dict(run)
            for run in page.runs
            if connection_id is None or run.connection_id == connection_id
        ),
        limit=limit,
        page_token=page_token,
        everything=everything,
    )
    cli.output.listing("runs", listing.items, listing.next_page_token, columns, command)


# One WaitRun call waits at most this long on the server; the CLI then asks again. Under the
# 15 s a gateway's route times out by default (Envoy's, behind a GRPCRoute), so a wait is
# never cut by a proxy between the CLI and the orchestrator.
_WAIT_SECONDS = 10.0
# A replica that went away answers nothing: ask again, of whichever replica answers.
_ASK_AGAIN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def wait_for_run(cli: Cli, run: opb.Run, timeout: float = AGENT_TIMEOUT) -> opb.Run:
    """The run once it has finished, or as it stands after ``timeout`` seconds.

    Work starts as a long-running operation: the start returns the run still running, and
    WaitRun (answered by any orchestrator replica) says when it ends.
    """
    stub = cli.orchestrator()
    give_up = time.monotonic() + timeout
    while run.state == opb.RUN_STATE_RUNNING and (remaining := give_up - time.monotonic()) > 0:
        request = opb.WaitRunRequest(id=run.id)
        request.timeout.FromTimedelta(timedelta(seconds=min(remaining, _WAIT_SECONDS)))
        try:
            run = stub.WaitRun(request, timeout=min(remaining, _WAIT_SECONDS) + 5)
        except grpc.RpcError as exc:
            if exc.code() not in _ASK_AGAIN:
                raise
            time.sleep(0.5)
    return run


@app.command(epilog="Example: sevvo runs get 3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10")
def get(ctx: typer.Context, run_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Show one run."""
    cli = cli_of(ctx)
    run_id = resolve.run_id(cli, run_id)
    _show(cli, cli.orchestrator().GetRun(opb.GetRunRequest(id=run_id), timeout=CALL_TIMEOUT))


@app.command(epilog="Example: sevvo runs wait 3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10 --timeout 120")
def wait(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="ID")],
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=0, help="Seconds to wait at most; 0 shows it at once."),
    ] = AGENT_TIMEOUT,
) -> None:
    """Wait for a run to finish, then show it; exits 1 if it is still running at the timeout."""
    cli = cli_of(ctx)
    run_id = resolve.run_id(cli, run_id)
    run = cli.orchestrator().GetRun(opb.GetRunRequest(id=run_id), timeout=CALL_TIMEOUT)
    run = wait_for_run(cli, run, timeout)
    _show(cli, run)
    if run.state == opb.RUN_STATE_RUNNING:
        cli.output.note(f"still running after {timeout:g} s; ask again with `sevvo runs wait`")
        raise typer.Exit(1)


def raise_for_outcome(run: opb.Run, what: str, kind: Kind) -> None:
    """Raises the failure a finished run ended in (its category, message, hint and exit code,
    from the outcome catalogue); returns when its category is a success."""
    category = run.outcome_category or outcomes.OTHER.name
    outcome = outcomes.get(category)
    if outcome is None or not outcome.succeeded:
        raise category_failure(what, category, run.message, kind)


def _show(cli: Cli, run: opb.Run) -> None:
    data = message_dict(run)
    cli.output.record(
        data,
        data,
        [
            *COLUMNS,
            ("model", key("model_id")),
            *(SYNC_DETAIL if run.kind == opb.RUN_KIND_SYNC else []),
            ("started by", key("creator")),
            ("draft", key("draft_id")),
            ("message", key("message")),
            ("truncated", key("truncated")),
            ("finished", key("finish_time")),
        ],
    )
