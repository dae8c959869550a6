"""Top-level commands about who you are: bootstrap, login, logout, whoami, change-password."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC
from pathlib import Path
from typing import Annotated

import grpc
import typer

from cli.client import CALL_TIMEOUT, Cli
from cli.errors import CliError, from_rpc_error, usage_error
from cli.inputs import cli_of, read_secret
from cli.output import key, message_dict
from cli.session import Session
from sevvo.auth.v1 import auth_pb2, users_pb2

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


# The server could not be asked: the session may still be valid there until it expires.
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def logout(
    ctx: typer.Context,
    everywhere: Annotated[
        bool,
        typer.Option(
            "--everywhere",
            help="Sign out every session of yours, on every machine, not only this one.",
        ),
    ] = False,
) -> None:
    """Sign out: revoke the session on the server, then forget it here.

    The session stops working in every service within seconds. When sevvo cannot be reached
    the session is still forgotten here, and the command says so and exits 1: the token
    itself then stays valid until it expires.
    """
    cli = cli_of(ctx)
    try:
        session: Session | None = cli.session()
    except CliError:
        # No session, a damaged file, an expired session or one for another endpoint:
        # nothing to revoke (and never send a token to an endpoint that did not issue it).
        session = None
    problem = _revoke(cli, session, everywhere=everywhere) if session else None
    removed = cli.sessions.clear()
    revoked = session is not None and problem is None
    if cli.output.json:
        cli.output.emit_json({"signed_out": removed, "revoked": revoked, "everywhere": everywhere})
    elif revoked:
        cli.output.note("signed out everywhere" if everywhere else "signed out")
    elif not removed:
        cli.output.note("was not signed in")
    if problem is not None:
        problem.message = f"{problem.message}; the session was forgotten here but stays valid"
        if session is not None:
            problem.message += f" until {session.expire_time.isoformat()}"
        raise problem
    if session is None and removed:
        cli.output.note("forgot the local session (it was expired or not for this endpoint)")


def _revoke(cli: Cli, session: Session, *, everywhere: bool) -> CliError | None:
    """Revokes the session server-side; returns the failure to report, if any."""
    try:
        if everywhere:
            cli.users().RevokeUserSessions(
                users_pb2.RevokeUserSessionsRequest(id=session.user_id), timeout=CALL_TIMEOUT
            )
        else:
            cli.auth(signed_in=True).SignOut(auth_pb2.SignOutRequest(), timeout=CALL_TIMEOUT)
    except grpc.RpcError as error:
        failure = from_rpc_error(error)
        if error.code() is grpc.StatusCode.UNAUTHENTICATED and not everywhere:
            return None  # The server no longer accepts it: already as good as signed out.
        if error.code() in _UNREACHABLE:
            failure.message = f"could not revoke the session: {failure.message}"
        return failure
    return None


def change_password(ctx: typer.Context, password_stdin: PasswordStdin = False) -> None:
    """Change your password; every other session of yours is signed out.

    The current and the new password come from prompts (the new one asked twice) or, with
    --password-stdin, from the first two lines of standard input; never from a flag. The
    stored session is replaced by the new one the server returns.
    """
    cli = cli_of(ctx)
    session = cli.session()
    current = read_secret("Current password", from_stdin=password_stdin)
    new = read_secret("New password", from_stdin=password_stdin, confirm=True)
    response = cli.auth(signed_in=True).ChangePassword(
        auth_pb2.ChangePasswordRequest(current_password=current, new_password=new),
        timeout=CALL_TIMEOUT,
    )
    session = replace(
        session,
        session_token=response.session_token,
        expire_time=response.expire_time.ToDatetime(tzinfo=UTC),
    )
    cli.sessions.save(session)
    data = _session_data(session)
    cli.output.record(data, data, _SESSION_FIELDS)
    cli.output.note("password changed; your other sessions are signed out")


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
    app.command(epilog="Example: sevvo logout\n\nExample: sevvo logout --everywhere")(logout)
    app.command(epilog="Example: sevvo whoami --output json")(whoami)
    app.command(
        "change-password",
        epilog="Example: sevvo change-password\n\n"
        'Example: printf \'%s\\n%s\\n\' "$OLD" "$NEW" | sevvo change-password --password-stdin',
    )(change_password)
