"""Revocable sessions over real gRPC: sign out, everywhere, disable, enable, delete, new password.

auth refuses a revoked session at once (it refreshes its own verifier on every revocation);
test_auth_revocation_everywhere.py shows the other services following within seconds.
"""

from __future__ import annotations

import io
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2, status_pb2

from services.auth.servicer import REFUSAL_HOLD_SECONDS
from sevvo.auth.v1 import auth_pb2, deployments_pb2, users_pb2
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.logs import configure_logging
from tests.plugins.auth_stack import PASSWORD, AuthStack, Org
from tests.plugins.log_setup import configure_test_logging


@pytest.fixture
def auth_stack(module_auth_stack: AuthStack) -> AuthStack:
    """One auth service for the module: every test makes its own org, so none meet (the
    rate-limit test swaps in a tiny limiter and puts the shared one back)."""
    return module_auth_stack


@dataclass
class Member:
    """A user of an org, signed in once."""

    id: str
    email: str
    password: str
    token: str


def _member(
    stack: AuthStack, org: Org, role: users_pb2.UserRole = users_pb2.USER_ROLE_MEMBER
) -> Member:
    email = f"user-{uuid.uuid4().hex[:8]}@acme.example"
    password = secrets.token_urlsafe(18)
    user = stack.users(org.admin_token).CreateUser(
        users_pb2.CreateUserRequest(email=email, password=password, role=role)
    )
    return Member(user.id, email, password, _sign_in(stack, email, password))


def _sign_in(stack: AuthStack, email: str, password: str) -> str:
    response = stack.auth().SignIn(auth_pb2.SignInRequest(email=email, password=password))
    return str(response.session_token)


def _refused(call: object) -> tuple[grpc.StatusCode, str | None]:
    """The code and reason a call fails with (``call`` is a zero-argument lambda)."""
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    details = error_details(caught.value)
    return details.code, details.reason


def _caller(stack: AuthStack, token: str) -> auth_pb2.GetCallerResponse:
    response: auth_pb2.GetCallerResponse = stack.auth(token).GetCaller(auth_pb2.GetCallerRequest())
    return response


def _audit_actions(database_url: str, target_id: str) -> list[str]:
    # The user changes only: creation, sign-ins and sign-outs are tested in test_audit_log.py.
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select action from audit.events where target_id = %s"
            " and action not in ('user.create', 'user.sign_in', 'user.sign_out')"
            " order by occurred_at",
            (target_id,),
        ).fetchall()
    return [row[0] for row in rows]


SESSION_REVOKED = (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED")


def test_sign_out_refuses_that_session_at_once_and_keeps_the_others(
    auth_stack: AuthStack,
) -> None:
    """After SignOut the same token is refused by auth; the user's other session still works."""
    org = auth_stack.create_org()
    member = _member(auth_stack, org)
    other = _sign_in(auth_stack, member.email, member.password)
    signed_out = auth_stack.auth(member.token).SignOut(auth_pb2.SignOutRequest())
    assert signed_out.token_id
    assert _refused(lambda: _caller(auth_stack, member.token)) == SESSION_REVOKED
    assert _caller(auth_stack, other).subject_id == member.id


def test_signing_out_everywhere_voids_every_earlier_session_but_not_the_next(
    auth_stack: AuthStack,
) -> None:
    """RevokeUserSessions for oneself voids all sessions; signing in again at once works."""
    org = auth_stack.create_org()
    member = _member(auth_stack, org)
    other = _sign_in(auth_stack, member.email, member.password)
    auth_stack.users(member.token).RevokeUserSessions(
        users_pb2.RevokeUserSessionsRequest(id=member.id)
    )
    for token in (member.token, other):
        assert _refused(lambda t=token: _caller(auth_stack, t)) == SESSION_REVOKED
    again = _sign_in(auth_stack, member.email, member.password)
    assert _caller(auth_stack, again).subject_id == member.id
    assert _audit_actions(auth_stack.app.config.database_url, member.id) == ["user.sessions.revoke"]


def test_an_admin_signs_another_user_out_everywhere(auth_stack: AuthStack) -> None:
    """An admin may revoke a member's sessions; the admin's own session is untouched."""
    org = auth_stack.create_org()
    member = _member(auth_stack, org)
    auth_stack.users(org.admin_token).RevokeUserSessions(
        users_pb2.RevokeUserSessionsRequest(id=member.id)
    )
    assert _refused(lambda: _caller(auth_stack, member.token)) == SESSION_REVOKED
    assert _caller(auth_stack, org.admin_token).org_id == org.org_id


def test_a_member_cannot_sign_out_anyone_else_existing_or_not(auth_stack: AuthStack) -> None:
    """A member is refused for another user and for a random id alike (permission first)."""
    org = auth_stack.create_org()
    member = _member(auth_stack, org)
    users = auth_stack.users(member.token)
    for target in (org_admin_id(auth_stack, org), str(uuid.uuid4())):
        assert _refused(
            lambda t=target: users.RevokeUserSessions(users_pb2.RevokeUserSessionsRequest(id=t))
        ) == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_REQUIRED")
    assert _caller(auth_stack, org.admin_token).org_id == org.org_id


def org_admin_id(stack: AuthStack, org: Org) -> str:
    """The id of the org's admin, as the admin's own session names it."""
    return str(_caller(stack, org.admin_token).subject_id)


def test_another_orgs_user_is_not_found_like_a_random_id(auth_stack: AuthStack) -> None:
    """Every user admin RPC answers NOT_FOUND alike for another org's user and a random id."""
    acme, other = auth_stack.create_org("Acme"), auth_stack.create_org("Other")
    stranger = _member(auth_stack, other)
    users = auth_stack.users(acme.admin_token)
    calls: dict[str, Callable[[str], object]] = {
        "disable": lambda i: users.DisableUser(users_pb2.DisableUserRequest(id=i)),
        "enable": lambda i: users.EnableUser(users_pb2.EnableUserRequest(id=i)),
        "delete": lambda i: users.DeleteUser(users_pb2.DeleteUserRequest(id=i)),
        "revoke": lambda i: users.RevokeUserSessions(users_pb2.RevokeUserSessionsRequest(id=i)),
    }
    for name, call in calls.items():
        answers = set()
        for target in (stranger.id, str(uuid.uuid4())):
            with pytest.raises(grpc.RpcError) as caught:
                call(target)
            answers.add((caught.value.code(), caught.value.details()))
        assert answers == {(grpc.StatusCode.NOT_FOUND, "user not found")}, name
    assert _caller(auth_stack, stranger.token).subject_id == stranger.id


def test_a_disabled_user_is_signed_out_and_cannot_sign_in_until_enabled(
    auth_stack: AuthStack,
) -> None:
    """Disabling voids the sessions and refuses sign-in; enabling allows sign-in, not old tokens."""
    org = auth_stack.create_org()
    member = _member(auth_stack, org)
    users = auth_stack.users(org.admin_token)
    disabled = users.DisableUser(users_pb2.DisableUserRequest(id=member.id))
    assert disabled.state == users_pb2.USER_STATE_DISABLED
    assert disabled.HasField("disable_time")
    assert _refused(lambda: _caller(auth_stack, member.token)) == SESSION_REVOKED
    assert _refused(lambda: _sign_in(auth_stack, member.email, member.password)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "USER_DISABLED",
    )
    assert _refused(lambda: _sign_in(auth_stack, member.email, "wrong-" + member.password)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )
    enabled = users.EnableUser(users_pb2.EnableUserRequest(id=member.id))
    assert enabled.state == users_pb2.USER_STATE_ACTIVE
    assert not enabled.HasField("disable_time")
    fresh = _sign_in(auth_stack, member.email, member.password)
    assert _caller(auth_stack, fresh).subject_id == member.id
    assert _refused(lambda: _caller(auth_stack, member.token)) == SESSION_REVOKED
    assert _audit_actions(auth_stack.app.config.database_url, member.id) == [
        "user.disable",
        "user.enable",
    ]


def test_the_last_enabled_admin_can_be_neither_disabled_nor_deleted(
    auth_stack: AuthStack,
) -> None:
    """LAST_ADMIN refuses leaving an org without an enabled admin, and changes nothing."""
    org = auth_stack.create_org()
    admin_id = org_admin_id(auth_stack, org)
    users = auth_stack.users(org.admin_token)
    last_admin = (grpc.StatusCode.FAILED_PRECONDITION, "LAST_ADMIN")
    assert _refused(lambda: users.DisableUser(users_pb2.DisableUserRequest(id=admin_id))) == (
        last_admin
    )
    assert _refused(lambda: users.DeleteUser(users_pb2.DeleteUserRequest(id=admin_id))) == (
        last_admin
    )
    assert users.GetUser(users_pb2.GetUserRequest(id=admin_id)).state == (
        users_pb2.USER_STATE_ACTIVE
    )
    assert _caller(auth_stack, org.admin_token).subject_id == admin_id
    second = _member(auth_stack, org, users_pb2.USER_ROLE_ADMIN)
    users.DisableUser(users_pb2.DisableUserRequest(id=admin_id))
    second_users = auth_stack.users(second.token)
    assert _refused(
        lambda: second_users.DisableUser(users_pb2.DisableUserRequest(id=second.id))
    ) == (last_admin)


def test_a_deleted_user_cannot_sign_in_and_their_deployments_stay(
    auth_stack: AuthStack,
) -> None:
    """DeleteUser voids sessions and sign-in; GetUser says NOT_FOUND; deployments remain."""
    org = auth_stack.create_org()
    admin = _member(auth_stack, org, users_pb2.USER_ROLE_ADMIN)
    created = auth_stack.deployments(admin.token).CreateDeployment(
        deployments_pb2.CreateDeploymentRequest(display_name="made-by-a-leaver")
    )
    users = auth_stack.users(org.admin_token)
    users.DeleteUser(users_pb2.DeleteUserRequest(id=admin.id))
    assert _refused(lambda: _caller(auth_stack, admin.token)) == SESSION_REVOKED
    assert _refused(lambda: _sign_in(auth_stack, admin.email, admin.password)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )
    assert _refused(lambda: users.GetUser(users_pb2.GetUserRequest(id=admin.id))) == (
        grpc.StatusCode.NOT_FOUND,
        "USER_NOT_FOUND",
    )
    kept = auth_stack.deployments(org.admin_token).GetDeployment(
        deployments_pb2.GetDeploymentRequest(id=created.deployment.id)
    )
    assert (kept.state, kept.creator_user_id) == (deployments_pb2.DEPLOYMENT_STATE_ACTIVE, "")
    assert _audit_actions(auth_stack.app.config.database_url, admin.id) == ["user.delete"]


def test_changing_the_password_voids_old_sessions_and_returns_a_new_one(
    auth_stack: AuthStack,
) -> None:
    """The new session works; earlier ones and the old password do not; the new one does."""
    org = auth_stack.create_org()
    member = _member(auth_stack, org)
    elsewhere = _sign_in(auth_stack, member.email, member.password)
    new_password = secrets.token_urlsafe(18)
    changed = auth_stack.auth(member.token).ChangePassword(
        auth_pb2.ChangePasswordRequest(current_password=member.password, new_password=new_password)
    )
    assert _caller(auth_stack, changed.session_token).subject_id == member.id
    for token in (member.token, elsewhere):
        assert _refused(lambda t=token: _caller(auth_stack, t)) == SESSION_REVOKED
    assert _refused(lambda: _sign_in(auth_stack, member.email, member.password)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )
    assert _caller(auth_stack, _sign_in(auth_stack, member.email, new_password)).subject_id == (
        member.id
    )
    assert _audit_actions(auth_stack.app.config.database_url, member.id) == ["user.password.change"]


@pytest.mark.parametrize(
    ("current", "new", "answer"),
    [
        ("wrong-password-000", "a-new-password-123", ("PERMISSION_DENIED", None)),
        ("", "a-new-password-123", ("INVALID_ARGUMENT", "current_password")),
        (PASSWORD, "short", ("INVALID_ARGUMENT", "new_password")),
    ],
    ids=["wrong-current", "no-current", "short-new"],
)
def test_a_refused_password_change_changes_nothing(
    auth_stack: AuthStack, current: str, new: str, answer: tuple[str, str]
) -> None:
    """A wrong or missing current password, or a weak new one, leaves password and session."""
    org = auth_stack.create_org()
    with pytest.raises(grpc.RpcError) as caught:
        auth_stack.auth(org.admin_token).ChangePassword(
            auth_pb2.ChangePasswordRequest(current_password=current, new_password=new)
        )
    details = error_details(caught.value)
    assert (details.code.name, details.field) == answer
    assert _caller(auth_stack, org.admin_token).org_id == org.org_id
    assert _sign_in(auth_stack, org.admin_email, PASSWORD)


@pytest.fixture
def limited_auth(auth_stack: AuthStack) -> Iterator[AuthStack]:
    """The auth stack with a tiny per-source failure budget."""
    from services.auth.limits import SignInLimiter, SignInLimits

    domain = auth_stack.app.domain
    original = domain._limiter
    domain._limiter = SignInLimiter(SignInLimits(source_burst=2, source_per_minute=1))
    yield auth_stack
    domain._limiter = original


def test_guessing_past_the_budget_gets_resource_exhausted_with_retry_info(
    limited_auth: AuthStack,
) -> None:
    """SignIn answers RESOURCE_EXHAUSTED, held a second, with a reason and a RetryInfo."""
    org = limited_auth.create_org()
    for _ in range(2):
        assert _refused(lambda: _sign_in(limited_auth, org.admin_email, "guess-guess-123")) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_CREDENTIALS",
        )
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        _sign_in(limited_auth, org.admin_email, "guess-guess-456")
    # Held a second, so a guesser ignoring RetryInfo cannot spin the server on refusals.
    assert time.monotonic() - started >= REFUSAL_HOLD_SECONDS
    assert error_details(caught.value).reason == "SIGN_IN_RATE_LIMITED"
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = status_pb2.Status.FromString(
        dict(caught.value.trailing_metadata() or ())["grpc-status-details-bin"]
    )
    retry = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(retry) for detail in status.details)
    # One failure a minute refills the budget; the time the guesses took has refilled a bit.
    assert 50 <= retry.retry_delay.seconds <= 60
    assert f"try again in {retry.retry_delay.seconds} s" in (caught.value.details() or "")


def test_no_password_of_a_change_reaches_the_logs(auth_stack: AuthStack) -> None:
    """Current and new passwords, right or wrong, appear in no captured log line."""
    stream = io.StringIO()
    configure_logging("canary", level="DEBUG", json=True, stream=stream)
    try:
        org = auth_stack.create_org()
        wrong, new = "wrong-" + secrets.token_urlsafe(12), secrets.token_urlsafe(18)
        with pytest.raises(grpc.RpcError):
            auth_stack.auth(org.admin_token).ChangePassword(
                auth_pb2.ChangePasswordRequest(current_password=wrong, new_password=new)
            )
        auth_stack.auth(org.admin_token).ChangePassword(
            auth_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password=new)
        )
    finally:
        configure_test_logging()
    output = stream.getvalue()
    assert "password change refused" in output
    assert "password changed" in output
    for secret in (wrong, new, PASSWORD):
        assert secret not in output


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        # Refused by the shared request check before auth looks (no account is probed).
        ("ada\x00@acme.example", (grpc.StatusCode.INVALID_ARGUMENT, "NUL_CHARACTER")),
        ("a" * 10_000 + "@acme.example", (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")),
    ],
    ids=["nul", "huge"],
)
def test_an_impossible_email_is_a_plain_sign_in_failure(
    auth_stack: AuthStack, email: str, expected: tuple[grpc.StatusCode, str]
) -> None:
    """A NUL byte or an overlong address is refused plainly, never INTERNAL."""
    assert _refused(lambda: _sign_in(auth_stack, email, PASSWORD)) == expected
