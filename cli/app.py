"""The root ``sevvo`` command: global options, the command groups, and exit codes.

Every failure a command raises (a ``CliError`` or a failed gRPC call) is reported in
``main``, in one place, on stderr with its reason, category and troubleshooting hint, and
turned into the documented exit code.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, NoReturn

import grpc
import typer

from cli.client import DEFAULT_ENDPOINT, Cli
from cli.commands import (
    audit,
    connection_roles,
    connections,
    deployments,
    leases,
    models,
    payload_keys,
    preview,
    runs,
    session,
    users,
    workloads,
)
from cli.errors import EXIT_CODES_HELP, CliError, from_rpc_error
from cli.output import Output, OutputFormat, default_format
from cli.session import default_config_dir

app = typer.Typer(
    name="sevvo",
    help="Drive sevvo from a terminal: orgs, users, agent deployments, workload identities,"
    " connections, previews, models, runs, leases, payload keys and the audit log.",
    epilog=(
        "Example: sevvo --endpoint localhost:8443 --ca-file .dev/pki/ca.crt login"
        " --email admin@sevvo.dev\n\n"
        "Output is a table on a terminal and JSON when piped (--output or SEVVO_OUTPUT"
        " overrides); data goes to stdout, messages and errors to stderr.\n\n"
        f"{EXIT_CODES_HELP}"
    ),
    no_args_is_help=True,
    # --install-completion and --show-completion [bash|zsh|fish|powershell].
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        # Imported here: it costs every other command's start-up tens of milliseconds.
        import importlib.metadata

        typer.echo(f"sevvo {importlib.metadata.version('sevvo')}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            envvar="SEVVO_ENDPOINT",
            metavar="HOST:PORT",
            help=f"The control plane's gRPC endpoint \\[default: the session's, else"
            f" {DEFAULT_ENDPOINT}].",
            show_default=False,
        ),
    ] = None,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            "--ca-file",
            envvar="SEVVO_CA_FILE",
            metavar="PATH",
            exists=True,
            dir_okay=False,
            help="CA bundle that verifies the endpoint's TLS certificate"
            " \\[default: system roots].",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        OutputFormat | None,
        typer.Option(
            "--output",
            "-o",
            envvar="SEVVO_OUTPUT",
            case_sensitive=False,
            help="table or json \\[default: table on a terminal, json otherwise].",
            show_default=False,
        ),
    ] = None,
    config_dir: Annotated[
        Path | None,
        typer.Option(
            "--config-dir",
            envvar="SEVVO_CONFIG_DIR",
            metavar="PATH",
            file_okay=False,
            help="Where the session is stored \\[default: the user's config dir for sevvo].",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version of this command line and exit.",
        ),
    ] = False,
) -> None:
    """Drive sevvo from a terminal."""
    if endpoint is not None and "://" in endpoint:
        raise typer.BadParameter(
            f"takes HOST:PORT, not a URL: try {endpoint.split('://', 1)[1].rstrip('/')}",
            param_hint="--endpoint",
        )
    state = Cli.create(
        endpoint, ca_file, output or default_format(), config_dir or default_config_dir()
    )
    ctx.obj = state
    ctx.call_on_close(state.close)


session.register(app)
app.add_typer(users.app, name="users")
app.add_typer(deployments.app, name="deployments")
app.add_typer(workloads.app, name="workloads")
app.add_typer(connections.app, name="connections")
connections.app.add_typer(connection_roles.app, name="roles")
preview.register(app)
app.add_typer(models.app, name="models")
app.add_typer(runs.app, name="runs")
app.add_typer(leases.app, name="leases")
app.add_typer(audit.app, name="audit")
app.add_typer(payload_keys.app, name="payload-keys")


def main() -> None:
    """Runs the command line; exits with the documented exit code.

    Typer reports usage errors itself (exit 2); every other failure a command raises, a
    ``CliError`` or a failed gRPC call, is reported here in one place.
    """
    try:
        app(prog_name="sevvo", args=hoist_global_options(sys.argv[1:]))
    except CliError as error:
        report(error)
    except grpc.RpcError as rpc_error:
        report(from_rpc_error(rpc_error))


def hoist_global_options(args: Sequence[str]) -> list[str]:
    """``args`` with the root's options moved in front of the subcommand, where click reads them.

    Help texts and users write ``sevvo users list --output json``; click accepts a group's
    options only before its subcommand. Each root option (as ``--opt value``, ``--opt=value``
    or ``-ojson``) is moved, keeping the order of everything else; nothing after ``--`` moves.
    The option names come from the root callback itself, so a new global option moves too.
    """
    root_command = typer.main.get_command(app)
    takes_value = {
        name
        for param in root_command.params
        if param.param_type_name == "option" and not getattr(param, "is_flag", False)
        for name in param.opts
    }
    short = {name for name in takes_value if len(name) == 2}
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest += args[index:]
            break
        if arg in takes_value and index + 1 < len(args):
            front += [arg, args[index + 1]]
            index += 2
            continue
        if arg.split("=", 1)[0] in takes_value or (arg[:2] in short and len(arg) > 2):
            front.append(arg)
        else:
            rest.append(arg)
        index += 1
    return front + rest


def report(error: CliError) -> NoReturn:
    """Prints the error (message, reason, category, hint) on stderr and exits with its code."""
    Output(OutputFormat.JSON).error(error)
    raise SystemExit(int(error.exit_code))
