"""The CLI's session and user commands against a real auth service.

logout revokes server-side before forgetting the session (and forgets it even when the
server is unreachable, saying so); logout --everywhere; users disable/enable/delete/sign-out;
change-password with both passwords on stdin. No password or token is ever printed. Commands
run ``cli.app.main`` in this process (tests.cli_runner); sign-ins run ``python -m cli``.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from typer.testing import CliRunner

from cli.app import app
from devstack.processes import free_port
from sevvo.auth.v1 import auth_pb2, users_pb2
from sevvo.runtime.grpc_client import error_details
from tests.cli_runner import Result, run_sevvo, run_sevvo_in_process, user_env
from tests.plugins.auth_stack import PASSWORD, AuthStack, Org

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Sevvo:
    """Runs ``sevvo`` against the auth stack, each run with its own config dir if asked."""

    stack: AuthStack
    config_dir: Path
    printed: list[str] = field(default_factory=list)

    def __call__(
        self, *args: str, stdin: str = "", endpoint: str | None = None, process: bool = False
    ) -> Result:
        """Runs the command with JSON output (stdout is a pipe); in this process unless
        ``process`` asks for ``python -m cli``."""
        ca_file = self.stack.client_tls.ca_file
        assert ca_file is not None
        env = user_env(endpoint or self.stack.target, ca_file, self.config_dir)
        if process:
            result = run_sevvo(args, env, stdin, timeout=60)
        else:
            result = run_sevvo_in_process(args, env, stdin)
        self.printed.append(result.stdout + result.stderr)
        return result

    def login(self, email: str, password: str) -> str:
        """Signs in through the CLI; returns the stored session token."""
        result = self(
            "login", "--email", email, "--password-stdin", stdin=password + "\n", process=True
        )
        assert result.code == 0, result.stderr
        return str(self.session()["session_token"])

    def session(self) -> dict[str, Any]:
        """The stored session file."""
        data: dict[str, Any] = json.loads((self.config_dir / "session.json").read_text())
        return data


@pytest.fixture
def sevvo(auth_stack: AuthStack, tmp_path: Path) -> Sevvo:
    """The command with an empty config dir, pointed at the auth stack."""
    return Sevvo(auth_stack, tmp_path / "sevvo")


def _caller_reason(stack: AuthStack, token: str) -> str | None:
    try:
        stack.auth(token).GetCaller(auth_pb2.GetCallerRequest())
    except grpc.RpcError as error:
        return error_details(error).reason
    return None


def _member(stack: AuthStack, org: Org) -> tuple[str, str, str]:
    email, password = f"m-{uuid.uuid4().hex[:8]}@acme.example", secrets.token_urlsafe(18)
    user = stack.users(org.admin_token).CreateUser(
        users_pb2.CreateUserRequest(email=email, password=password)
    )
    return user.id, email, password


def test_logout_revokes_the_session_before_forgetting_it(
    sevvo: Sevvo, auth_stack: AuthStack
) -> None:
    """After sevvo logout the stored token is refused by the server and the file is gone."""
    org = auth_stack.create_org()
    token = sevvo.login(org.admin_email, PASSWORD)
    result = sevvo("logout")
    assert result.code == 0, result.stderr
    assert result.json() == {"signed_out": True, "revoked": True, "everywhere": False}
    assert not (sevvo.config_dir / "session.json").exists()
    assert _caller_reason(auth_stack, token) == "SESSION_REVOKED"
    assert _caller_reason(auth_stack, org.admin_token) is None
    assert token not in "".join(sevvo.printed)


def test_logout_forgets_the_session_even_when_sevvo_is_unreachable(
    sevvo: Sevvo, auth_stack: AuthStack
) -> None:
    """Unreachable server: the file is removed, and exit 1 says the token stays valid."""
    nowhere = f"localhost:{free_port()}"
    sevvo.config_dir.mkdir(mode=0o700)
    expires = datetime.now(UTC) + timedelta(minutes=30)
    (sevvo.config_dir / "session.json").write_text(
        json.dumps(
            {
                "endpoint": nowhere,
                "session_token": "a.b.c",
                "expire_time": expires.isoformat(),
                "email": "ada@acme.example",
                "org_id": str(uuid.uuid4()),
                "user_id": str(uuid.uuid4()),
            }
        )
    )
    result = sevvo("logout", endpoint=nowhere)
    assert result.code == 1
    assert result.json() == {"signed_out": True, "revoked": False, "everywhere": False}
    assert "could not revoke the session: cannot reach sevvo" in result.stderr
    assert f"stays valid until {expires.isoformat()}" in result.stderr
    assert not (sevvo.config_dir / "session.json").exists()


def test_logout_everywhere_signs_out_every_session_of_the_user(
    sevvo: Sevvo, auth_stack: AuthStack
) -> None:
    """--everywhere voids sessions made elsewhere too, and then forgets the local one."""
    org = auth_stack.create_org()
    token = sevvo.login(org.admin_email, PASSWORD)
    result = sevvo("logout", "--everywhere")
    assert result.code == 0, result.stderr
    assert result.json()["everywhere"] is True
    for session in (token, org.admin_token):
        assert _caller_reason(auth_stack, session) == "SESSION_REVOKED"


def test_an_admin_disables_enables_signs_out_and_deletes_a_user(
    sevvo: Sevvo, auth_stack: AuthStack
) -> None:
    """users disable/enable/sign-out/delete act, show the state, and refuse the user's login."""
    org = auth_stack.create_org()
    member_id, email, password = _member(auth_stack, org)
    member_token = (
        auth_stack.auth()
        .SignIn(auth_pb2.SignInRequest(email=email, password=password))
        .session_token
    )
    sevvo.login(org.admin_email, PASSWORD)

    disabled = sevvo("users", "disable", member_id)
    assert disabled.code == 0, disabled.stderr
    assert disabled.json()["state"] == "disabled"
    assert _caller_reason(auth_stack, member_token) == "SESSION_REVOKED"

    enabled = sevvo("users", "enable", member_id)
    assert enabled.json()["state"] == "active"
    fresh = auth_stack.auth().SignIn(auth_pb2.SignInRequest(email=email, password=password))
    signed_out = sevvo("users", "sign-out", member_id)
    assert signed_out.code == 0, signed_out.stderr
    assert signed_out.json()["revoke_time"]
    assert _caller_reason(auth_stack, fresh.session_token) == "SESSION_REVOKED"

    refused = sevvo("users", "delete", member_id)
    assert refused.code == 2
    assert "pass --yes" in refused.stderr
    deleted = sevvo("users", "delete", member_id, "--yes")
    assert deleted.json() == {"deleted": member_id}
    gone = sevvo("users", "get", member_id)
    assert gone.code == 5
    assert "USER_NOT_FOUND" in gone.stderr


def test_the_last_admin_cannot_disable_themself(sevvo: Sevvo, auth_stack: AuthStack) -> None:
    """users disable on the last enabled admin fails with LAST_ADMIN and exit 1."""
    org = auth_stack.create_org()
    sevvo.login(org.admin_email, PASSWORD)
    me = auth_stack.auth(org.admin_token).GetCaller(auth_pb2.GetCallerRequest()).subject_id
    result = sevvo("users", "disable", me)
    assert result.code == 1
    assert "LAST_ADMIN" in result.stderr


def test_change_password_reads_both_from_stdin_and_keeps_you_signed_in(
    sevvo: Sevvo, auth_stack: AuthStack
) -> None:
    """The stored session is replaced; old sessions and the old password stop working."""
    org = auth_stack.create_org()
    old_token = sevvo.login(org.admin_email, PASSWORD)
    new_password = secrets.token_urlsafe(18)
    result = sevvo("change-password", "--password-stdin", stdin=f"{PASSWORD}\n{new_password}\n")
    assert result.code == 0, result.stderr
    assert "your other sessions are signed out" in result.stderr
    new_token = sevvo.session()["session_token"]
    assert new_token != old_token
    assert _caller_reason(auth_stack, new_token) is None
    for token in (old_token, org.admin_token):
        assert _caller_reason(auth_stack, token) == "SESSION_REVOKED"
    wrong = sevvo("change-password", "--password-stdin", stdin=f"{PASSWORD}\n{new_password}x\n")
    assert wrong.code == 4
    assert "CURRENT_PASSWORD_INCORRECT" in wrong.stderr
    printed = "".join(sevvo.printed)
    for secret in (PASSWORD, new_password, old_token, new_token):
        assert secret not in printed


def test_the_new_commands_have_help_with_an_example(sevvo: Sevvo) -> None:
    """--help works without a session for each new command and shows an example."""
    runner = CliRunner()
    for command in (
        ["logout"],
        ["change-password"],
        ["users", "disable"],
        ["users", "enable"],
        ["users", "delete"],
        ["users", "sign-out"],
    ):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, command
        assert "Example: sevvo" in result.stdout, command
