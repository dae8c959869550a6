"""Top-level commands about who you are: bootstrap, login, logout, whoami."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Annotated

import typer

from cli.client import CALL_TIMEOUT
from cli.errors import usage_error
from cli.inputs import cli_of, read_secret
from cli.output import key, message_dict
from cli.session import Session
from sevvo.auth.v1 import auth_pb2

BOOTSTRAP_TOKEN_METADATA = "x-sevvo-bootstrap-token"

PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from the first line of standard input."
    ),
]


def bootstrap(
    ctx: typer.Context,
    org: Annotated[str, typer.Option("--org", help="The new org's name.", show_default=False)],
    email: Annotated[str, typer.Option("--email", help="The first admin's email.")],
    bootstrap_token_file: Annotated[
        Path | None,
        typer.Option(
            "--bootstrap-token-file",
            envvar="SEVVO_BOOTSTRAP_TOKEN_FILE",
            metavar="PATH",
            dir_okay=False,
            help="File holding the install's bootstrap token (the operator's secret).",
        ),
    ] = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Create the first org and its admin, proving you are the operator with the bootstrap token.

    The admin's password comes from a prompt (asked twice) or, with --password-stdin, from
    standard input; never from a flag.
    """
    if bootstrap_token_file is None:
        raise usage_error(
            "the bootstrap token is needed: pass --bootstrap-token-file or set"
            " SEVVO_BOOTSTRAP_TOKEN_FILE"
        )
    try:
        token = bootstrap_token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise usage_error(f"cannot read {bootstrap_token_file}: {exc.strerror}") from None
    password = read_secret("Admin password", from_stdin=password_stdin, confirm=True)
    cli = cli_of(ctx)
    response = cli.auth().BootstrapOrg(
        auth_pb2.BootstrapOrgRequest(org_name=org, admin_email=email, admin_password=password),
        metadata=((BOOTSTRAP_TOKEN_METADATA, token),),
        timeout=CALL_TIMEOUT,
    )
    data = {"org_id": response.org_id, "admin": message_dict(response.admin)}
    admin = data["admin"]
    cli.output.record(
        data,
        {"org": org, "org_id": response.org_id, **admin},
        [
            ("org", key("org")),
            ("org id", key("org_id")),
            ("admin", key("email")),
            ("admin id", key("id")),
        ],
    )
    cli.output.note(f"next: sevvo login --email {response.admin.email}")


def login(
    ctx: typer.Context,
    email: Annotated[str, typer.Option("--email", help="Your email address.")],
    password_stdin: PasswordStdin = False,
) -> None:
    """Sign in and keep the session in your config dir (session.json, mode 0600)."""
    password = read_secret("Password", from_stdin=password_stdin)
    cli = cli_of(ctx)
    endpoint = cli.endpoint
    response = cli.auth().SignIn(
        auth_pb2.SignInRequest(email=email, password=password), timeout=CALL_TIMEOUT
    )
    session = Session(
        endpoint=endpoint,
        session_token=response.session_token,
        expire_time=response.expire_time.ToDatetime(tzinfo=UTC),
        email=email.strip().lower(),
        org_id=response.org_id,
        user_id=response.user_id,
    )
    cli.sessions.save(session)
    data = _session_data(session)
    cli.output.record(data, data, _SESSION_FIELDS)
    cli.output.note(f"signed in to {endpoint} until {session.expire_time.isoformat()}")


def logout(ctx: typer.Context) -> None:
    """Forget the stored session."""
    cli = cli_of(ctx)
    removed = cli.sessions.clear()
    if cli.output.json:
        cli.output.emit_json({"signed_out": removed})
    else:
        cli.output.note("signed out" if removed else "was not signed in")


def whoami(ctx: typer.Context) -> None:
    """Show who the stored session signs you in as, as the server sees it."""
    cli = cli_of(ctx)
    session = cli.session()
    caller = cli.auth(signed_in=True).GetCaller(auth_pb2.GetCallerRequest(), timeout=CALL_TIMEOUT)
    data = {**message_dict(caller), **_session_data(session)}
    cli.output.record(data, data, [("kind", key("kind")), *_SESSION_FIELDS])


_SESSION_FIELDS = [
    ("email", key("email")),
    ("user id", key("user_id")),
    ("org id", key("org_id")),
    ("endpoint", key("endpoint")),
    ("expires", key("expire_time")),
]


def _session_data(session: Session) -> dict[str, object]:
    # Everything but the token, which is never printed.
    return {
        "email": session.email,
        "user_id": session.user_id,
        "org_id": session.org_id,
        "endpoint": session.endpoint,
        "expire_time": session.expire_time.isoformat(),
    }


def register(app: typer.Typer) -> None:
    """Adds the session commands to the root command."""
    app.command(
        epilog="Example: sevvo bootstrap --org Acme --email ada@acme.example"
        " --bootstrap-token-file .dev/bootstrap-token\n\n"
        "Example: printf '%s\\n' \"$PW\" | sevvo bootstrap --org Acme --email ada@acme.example"
        " --password-stdin"
    )(bootstrap)
    app.command(
        epilog="Example: sevvo login --email ada@acme.example\n\n"
        "Example: sevvo login --email admin@sevvo.dev --password-stdin < .dev/admin-password"
    )(login)
    app.command(epilog="Example: sevvo logout")(logout)
    app.command(epilog="Example: sevvo whoami --output json")(whoami)
