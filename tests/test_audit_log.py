"""The audit log over real auth and connections servers (TLS on loopback, real Postgres).

What admins need of it: sign-ins (refused ones too, never with the password), sign-outs,
users, orgs and deployments are recorded with the acting user's email; ListAuditEvents
filters by action, actor, target and time, refuses filters it cannot mean, and never shows
another org's events whatever the filters name. The orchestrator's records (runs, previews,
schedules) are tested end to end in test_e2e_audit.py; the filters' rules in
test_audit_filters.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

import grpc
import psycopg
import pytest
import structlog

from sevvo.audit.v1 import audit_pb2
from sevvo.auth.v1 import auth_pb2, deployments_pb2, users_pb2
from sevvo.runtime.grpc_client import error_details
from tests.plugins.auth_stack import PASSWORD, Org
from tests.plugins.control_plane import ControlPlane

WRONG_PASSWORD = "wrong-horse-battery-0451"
SUCCESS = audit_pb2.AUDIT_OUTCOME_SUCCESS
FAILURE = audit_pb2.AUDIT_OUTCOME_FAILURE


def _events(plane: ControlPlane, org: Org, **filters: Any) -> list[audit_pb2.AuditEvent]:
    """Every event of the org's log matching ``filters``, newest first, following pages."""
    stub = plane.audit(org.admin_token)
    events: list[audit_pb2.AuditEvent] = []
    token = ""
    while True:
        page = stub.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(page_size=500, page_token=token, **filters)
        )
        events.extend(page.events)
        token = page.next_page_token
        if not token:
            return events


def _sign_in(plane: ControlPlane, email: str, password: str) -> str:
    response = plane.auth.auth().SignIn(auth_pb2.SignInRequest(email=email, password=password))
    return str(response.session_token)


def _refusal(call: Callable[[], object]) -> tuple[grpc.StatusCode, str | None, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    info = error_details(caught.value)
    return caught.value.code(), info.reason if info else None, caught.value.details() or ""


def _member(plane: ControlPlane, org: Org) -> tuple[str, str]:
    """A new member of ``org``: (user id, email)."""
    email = f"member-{uuid.uuid4().hex[:8]}@acme.example"
    user = plane.auth.users(org.admin_token).CreateUser(
        users_pb2.CreateUserRequest(email=email, password=PASSWORD)
    )
    return user.id, email


def _settle(plane: ControlPlane) -> None:
    """Waits for refused sign-ins' records, which auth writes after answering."""
    plane._loop.run(plane.auth.app.domain.settle_audits())


def _dump(plane: ControlPlane) -> str:
    with psycopg.connect(plane.app.config.database_url) as conn:
        row = conn.execute("select coalesce(json_agg(e)::text, '') from audit.events e").fetchone()
    assert row is not None
    return str(row[0])


def test_a_sign_in_is_recorded_with_the_users_email_and_address(
    control_plane: ControlPlane,
) -> None:
    """A successful sign-in is a user.sign_in success by and about the user, email included."""
    org = control_plane.auth.create_org()
    user_id, email = _member(control_plane, org)
    _sign_in(control_plane, email, PASSWORD)

    [event] = _events(control_plane, org, action="user.sign_in", target_id=user_id)
    assert (event.actor_kind, event.actor_id, event.actor_email) == (
        audit_pb2.ACTOR_KIND_USER,
        user_id,
        email,
    )
    assert (event.target_type, event.outcome, event.reason) == ("user", SUCCESS, "")
    assert event.details["source"] == "127.0.0.1"


def test_a_refused_sign_in_is_recorded_without_the_password(control_plane: ControlPlane) -> None:
    """A wrong password and a disabled user are failures with a stable reason; the password
    appears nowhere in the audit table, and the caller's error is the usual one."""
    org = control_plane.auth.create_org()
    user_id, email = _member(control_plane, org)
    assert _refusal(lambda: _sign_in(control_plane, email, WRONG_PASSWORD))[:2] == (
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )
    control_plane.auth.users(org.admin_token).DisableUser(users_pb2.DisableUserRequest(id=user_id))
    assert _refusal(lambda: _sign_in(control_plane, email, PASSWORD))[:2] == (
        grpc.StatusCode.UNAUTHENTICATED,
        "USER_DISABLED",
    )
    _settle(control_plane)

    events = _events(control_plane, org, action="user.sign_in", target_id=user_id)
    assert [(e.outcome, e.reason, e.actor_id, e.actor_email) for e in events] == [
        (FAILURE, "USER_DISABLED", user_id, email),
        (FAILURE, "INVALID_CREDENTIALS", user_id, email),
    ]
    dump = _dump(control_plane)
    assert WRONG_PASSWORD not in dump
    assert PASSWORD not in dump


def test_a_sign_in_with_an_unknown_email_is_in_no_orgs_log(control_plane: ControlPlane) -> None:
    """An address no user has belongs to no org: the refusal is the same, and nothing is
    recorded anywhere."""
    control_plane.auth.create_org()
    before = _dump(control_plane)
    assert _refusal(lambda: _sign_in(control_plane, "nobody@nowhere.example", PASSWORD))[:2] == (
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )
    _settle(control_plane)
    assert _dump(control_plane) == before


def test_a_failing_audit_write_neither_changes_a_refusal_nor_lets_a_sign_in_through(
    control_plane: ControlPlane,
) -> None:
    """With sign-in records refused by the database, a wrong password is still
    INVALID_CREDENTIALS; a right one gets no session, since it could not be recorded."""
    org = control_plane.auth.create_org()
    user_id, email = _member(control_plane, org)
    with psycopg.connect(control_plane.app.config.database_url, autocommit=True) as conn:
        conn.execute(
            "create function audit.refuse_sign_in() returns trigger language plpgsql as"
            " $$ begin raise exception 'audit store refuses'; end; $$"
        )
        conn.execute(
            "create trigger refuse_sign_in before insert on audit.events for each row"
            " when (new.action = 'user.sign_in') execute function audit.refuse_sign_in()"
        )
    with structlog.testing.capture_logs() as logged:
        assert _refusal(lambda: _sign_in(control_plane, email, WRONG_PASSWORD))[:2] == (
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_CREDENTIALS",
        )
        _settle(control_plane)
    assert {"event": "sign-in refusal not audited", "error": "RaiseException"} in [
        {k: e.get(k) for k in ("event", "error")} for e in logged
    ]
    code, _, message = _refusal(lambda: _sign_in(control_plane, email, PASSWORD))
    assert (code, message) == (grpc.StatusCode.INTERNAL, "internal error")
    assert PASSWORD not in message
    assert _events(control_plane, org, action="user.sign_in", target_id=user_id) == []


def test_users_sessions_orgs_and_deployments_are_recorded_with_the_admins_email(
    control_plane: ControlPlane,
) -> None:
    """Org creation (by the operator), user creation, sign-out, and a deployment's creation and
    revocation (once, however often revoked) are each recorded about the right target."""
    org = control_plane.auth.create_org()
    admin_id = _events(control_plane, org, action="user.sign_in")[0].actor_id
    user_id, email = _member(control_plane, org)
    session = _sign_in(control_plane, email, PASSWORD)
    control_plane.auth.auth(session).SignOut(auth_pb2.SignOutRequest())
    deployment_id, _ = control_plane.auth.new_deployment(org, "edge-1")
    stub = control_plane.auth.deployments(org.admin_token)
    for _ in range(2):
        stub.RevokeDeployment(deployments_pb2.RevokeDeploymentRequest(id=deployment_id))

    def seen(action: str) -> list[tuple[str, str, str, str, dict[str, str]]]:
        return [
            (e.actor_id, e.actor_email, e.target_type, e.target_id, dict(e.details))
            for e in _events(control_plane, org, action=action)
        ]

    assert seen("org.create") == [
        (
            "sevvo",
            "",
            "org",
            org.org_id,
            {"name": "Acme", "admin_user_id": admin_id, "via": "operator"},
        )
    ]
    assert seen("user.create") == [
        (
            admin_id,
            org.admin_email,
            "user",
            user_id,
            {"email": email, "role": "member"},
        ),
        (
            "sevvo",
            "",
            "user",
            admin_id,
            {"email": org.admin_email, "role": "admin", "via": "operator"},
        ),
    ]
    assert seen("user.sign_out") == [(user_id, email, "user", user_id, {})]
    assert seen("deployment.create") == [
        (admin_id, org.admin_email, "deployment", deployment_id, {"display_name": "edge-1"})
    ]
    assert seen("deployment.revoke") == [
        (admin_id, org.admin_email, "deployment", deployment_id, {})
    ]


def test_other_services_records_carry_the_acting_users_email(
    control_plane: ControlPlane,
) -> None:
    """connections learns the email from the verified session, not from the request."""
    org = control_plane.auth.create_org()
    created = control_plane.create(org, "warehouse", "pw-for-the-email-test")
    [event] = _events(control_plane, org, action="connection.create")
    assert (event.target_id, event.actor_email) == (created.id, org.admin_email)


def test_filters_select_by_action_actor_target_and_time(control_plane: ControlPlane) -> None:
    """Exact and prefix actions, actor id and email, target and a half-open time range each
    narrow the list, and combine."""
    org = control_plane.auth.create_org()
    admin_id = _events(control_plane, org, action="user.sign_in")[0].actor_id
    member_id, email = _member(control_plane, org)
    member = _sign_in(control_plane, email, PASSWORD)
    first = control_plane.create(org, "first", "pw-first-0001")
    second = control_plane.create(Org(org.org_id, email, member), "second", "pw-second-002")
    everything = _events(control_plane, org)

    def actions(**filters: Any) -> list[str]:
        return [e.action for e in _events(control_plane, org, **filters)]

    assert actions(action="connection.create") == ["connection.create"] * 2
    assert set(actions(action="user.")) == {"user.create", "user.sign_in"}
    assert set(actions(action="connection.")) == {"connection.create"}
    assert actions(action="connection") == []  # Exact: no action is called that.
    assert [e.target_id for e in _events(control_plane, org, actor_id=member_id)] == [
        second.id,
        member_id,
    ]
    assert actions(actor_email=email.upper()) == actions(actor_id=member_id)
    assert {e.actor_id for e in _events(control_plane, org, actor_id=admin_id)} == {admin_id}
    assert actions(target_id=first.id) == ["connection.create"]
    assert actions(target_id=first.id, actor_id=member_id) == []

    middle = everything[len(everything) // 2]
    at_or_after = _events(control_plane, org, start_time=middle.occur_time)
    before = _events(control_plane, org, end_time=middle.occur_time)
    assert [e.id for e in at_or_after + before] == [e.id for e in everything]
    assert at_or_after[-1].id == middle.id
    window = _events(
        control_plane, org, start_time=before[-1].occur_time, end_time=middle.occur_time
    )
    assert [e.id for e in window] == [e.id for e in before]


def test_paging_follows_the_filters_and_a_token_holds_only_with_them(
    control_plane: ControlPlane,
) -> None:
    """Filtered pages cover every match once; a token used with other filters is refused."""
    org = control_plane.auth.create_org()
    for i in range(5):
        control_plane.create(org, f"c{i}", "pw-paging-0001")
    stub = control_plane.audit(org.admin_token)
    seen: list[str] = []
    token = ""
    while True:
        page = stub.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(
                page_size=2, page_token=token, action="connection.create"
            )
        )
        seen.extend(e.id for e in page.events)
        token = page.next_page_token
        if not token:
            break
        last_token = token
    assert len(seen) == len(set(seen)) == 5
    others: list[dict[str, Any]] = [{"action": "connection."}, {}, {"target_id": org.org_id}]
    for other in others:
        request = audit_pb2.ListAuditEventsRequest(page_token=last_token, **other)
        code, reason, message = _refusal(partial(stub.ListAuditEvents, request))
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")
        assert "other filters" in message


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"action": "connection.*"}, "action"),
        ({"actor_id": "not-a-uuid"}, "actor_id"),
        ({"actor_email": "nobody"}, "actor_email"),
        ({"target_id": "has space"}, "target_id"),
    ],
)
def test_bad_filters_are_invalid_argument_naming_the_field(
    control_plane: ControlPlane, filters: dict[str, Any], field: str
) -> None:
    """A filter that cannot mean anything is refused, naming it, before any query."""
    org = control_plane.auth.create_org()
    code, reason, message = _refusal(
        lambda: control_plane.audit(org.admin_token).ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(**filters)
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert message.startswith(field)


def test_a_time_range_that_ends_before_it_starts_is_invalid_argument(
    control_plane: ControlPlane,
) -> None:
    """end_time must come after start_time."""
    org = control_plane.auth.create_org()
    [event] = _events(control_plane, org, action="org.create")
    request = audit_pb2.ListAuditEventsRequest()
    request.start_time.CopyFrom(event.occur_time)
    request.end_time.FromDatetime(event.occur_time.ToDatetime() - timedelta(seconds=1))
    code, _, message = _refusal(
        lambda: control_plane.audit(org.admin_token).ListAuditEvents(request)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "end_time" in message and "after start_time" in message


def test_an_admin_never_sees_another_orgs_events_whatever_the_filters_name(
    control_plane: ControlPlane,
) -> None:
    """Filters naming org B's actors, targets and actions return nothing to org A's admin;
    a member of B is refused outright, filters or not."""
    a, b = control_plane.auth.create_org("Org A"), control_plane.auth.create_org("Org B")
    b_connection = control_plane.create(b, "b-only", "pw-tenancy-0001")
    b_admin = _events(control_plane, b, action="user.sign_in")[0]
    _, b_member_email = _member(control_plane, b)
    b_member = _sign_in(control_plane, b_member_email, PASSWORD)

    for filters in (
        {"target_id": b_connection.id},
        {"actor_id": b_admin.actor_id},
        {"actor_email": b.admin_email},
        {"target_id": b.org_id},
        {"action": "connection."},
    ):
        assert _events(control_plane, a, **filters) == [], filters
    assert {e.target_id for e in _events(control_plane, b, action="connection.")} == {
        b_connection.id
    }
    assert (
        _refusal(
            lambda: control_plane.audit(b_member).ListAuditEvents(
                audit_pb2.ListAuditEventsRequest(actor_email=b_member_email)
            )
        )[0]
        == grpc.StatusCode.PERMISSION_DENIED
    )
