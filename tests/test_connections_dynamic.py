"""Dynamic connections over real gRPC/TLS and Postgres: settings, sealing, resolve, rotation."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2

from services.connections.dynamic import DynamicSettings
from services.connections.postgres_target import PostgresTarget, from_fields
from sevvo.audit.v1 import audit_pb2
from sevvo.connections.v1 import connections_pb2 as pb
from sevvo.runtime import credential_templates
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.logs import configure_logging
from sevvo.runtime.sealing import CredentialsUnreadable
from tests.plugins.auth_stack import Org
from tests.plugins.control_plane import ControlPlane
from tests.plugins.log_setup import configure_test_logging
from tests.test_connections_requests import INVALID_DYNAMIC
from tests.test_connections_requests import SECRET as REQUEST_SECRET

SECRET = "privileged-Pa55-canary"
NEW_SECRET = "rotated-Pa55-canary-2"
OTHER_SECRET = "rotated-Pa55-canary-3"
CREATE = "CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}"


@pytest.fixture
def control_plane(shared_control_plane: ControlPlane) -> ControlPlane:
    """One control plane for the module: every test makes its own org, so none meet."""
    return shared_control_plane


def _raw_row(control_plane: ControlPlane, connection_id: str) -> tuple[str, bytes]:
    with psycopg.connect(control_plane.app.config.database_url) as conn:
        row = conn.execute(
            "select row_to_json(c)::text, sealed_credentials from connections.connections c"
            " where id = %s",
            (connection_id,),
        ).fetchone()
    assert row is not None
    return row[0], bytes(row[1])


def _audit_dump(control_plane: ControlPlane) -> str:
    with psycopg.connect(control_plane.app.config.database_url) as conn:
        row = conn.execute("select coalesce(json_agg(e)::text, '') from audit.events e").fetchone()
    assert row is not None
    return str(row[0])


def _resolve(
    control_plane: ControlPlane, org: Org, connection_id: str
) -> pb.ResolveConnectionCredentialsResponse:
    resolved: pb.ResolveConnectionCredentialsResponse = control_plane.credentials(
        control_plane.agent_for(org)
    ).ResolveConnectionCredentials(
        pb.ResolveConnectionCredentialsRequest(connection_id=connection_id, purpose="lease")
    )
    return resolved


def _actions(control_plane: ControlPlane, org: Org, target_id: str) -> list[tuple[str, int, str]]:
    events = (
        control_plane.audit(org.admin_token)
        .ListAuditEvents(audit_pb2.ListAuditEventsRequest(target_id=target_id))
        .events
    )
    return [(e.action, e.outcome, e.reason) for e in reversed(events)]


# Creation.


def test_dynamic_create_shows_a_summary_and_never_the_password(
    control_plane: ControlPlane,
) -> None:
    """Create, get and list show mode, TTLs, group and counts; no response holds the password."""
    org = control_plane.auth.create_org()
    created = control_plane.create_dynamic(org, "dyn", SECRET)
    stub = control_plane.connections(org.admin_token)
    fetched = stub.GetConnection(pb.GetConnectionRequest(id=created.id))
    listed = stub.ListConnections(pb.ListConnectionsRequest())
    for message in (created, fetched, listed):
        assert SECRET.encode() not in message.SerializeToString()
        assert SECRET not in str(message)
    assert fetched.credential_mode == pb.CREDENTIAL_MODE_DYNAMIC
    assert fetched.safe_metadata.username == "sevvo_admin"
    assert fetched.has_password
    assert fetched.dynamic == pb.DynamicSettingsSummary(
        default_ttl_seconds=3600,
        max_ttl_seconds=28800,
        group_role="sevvo_readers",
        creation_statement_count=1,
        revocation_statement_count=0,
    )


def test_fields_connection_has_no_dynamic_summary(control_plane: ControlPlane) -> None:
    """Only dynamic connections carry the dynamic summary."""
    org = control_plane.auth.create_org()
    created = control_plane.create(org, "plain", SECRET)
    assert not created.HasField("dynamic")


def test_dynamic_row_holds_no_plaintext(control_plane: ControlPlane) -> None:
    """The stored row, read with SQL, holds the privileged password in no form."""
    org = control_plane.auth.create_org()
    created = control_plane.create_dynamic(org, "dyn", SECRET)
    as_json, sealed = _raw_row(control_plane, created.id)
    assert SECRET not in as_json
    assert SECRET.encode() not in sealed
    assert SECRET.encode().hex() not in as_json
    assert json.loads(as_json)["credential_mode"] == "dynamic"


# The rules themselves are tested without a server (tests/test_connections_requests.py);
# these cases prove the server answers with them and stores nothing.
@pytest.mark.parametrize(
    ("dynamic", "field", "rule"),
    [case[1:] for case in INVALID_DYNAMIC if case[0] in {"ttl-86401", "creation-not-sql"}],
    ids=["ttl-86401", "creation-not-sql"],
)
def test_invalid_dynamic_create_is_rejected_and_changes_nothing(
    control_plane: ControlPlane, dynamic: pb.PostgresDynamic, field: str, rule: str
) -> None:
    """Each broken rule is INVALID_ARGUMENT naming the field; nothing is stored or echoed."""
    org = control_plane.auth.create_org()
    stub = control_plane.connections(org.admin_token)
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateConnection(pb.CreateConnectionRequest(display_name="x", dynamic=dynamic))
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.field == field
    assert rule.lower() in details.message.lower()
    assert REQUEST_SECRET not in details.message
    assert list(stub.ListConnections(pb.ListConnectionsRequest()).connections) == []


def test_limits_themselves_are_accepted(control_plane: ControlPlane) -> None:
    """TTLs at the bounds, 20 statements and a custom group are valid."""
    org = control_plane.auth.create_org()
    created = control_plane.create_dynamic(
        org,
        "edges",
        SECRET,
        default_ttl_seconds=86400,
        max_ttl_seconds=7 * 86400,
        group_role='Odd "Group"',
        creation_statements=[CREATE] + ["GRANT SELECT ON t TO {{name}}"] * 19,
        revocation_statements=["DROP ROLE IF EXISTS {{name}}"],
    )
    assert created.dynamic.default_ttl_seconds == 86400
    assert created.dynamic.max_ttl_seconds == 604800
    assert created.dynamic.creation_statement_count == 20
    assert created.dynamic.revocation_statement_count == 1
    assert created.dynamic.group_role == 'Odd "Group"'


# Resolve.


def test_agent_resolves_privileged_login_and_default_settings(
    control_plane: ControlPlane,
) -> None:
    """The org's agent gets the privileged login plus the expanded default settings."""
    org = control_plane.auth.create_org()
    created = control_plane.create_dynamic(org, "dyn", SECRET, port=6543, group_role="readers")
    resolved = _resolve(control_plane, org, created.id)
    assert (resolved.postgres.username, resolved.postgres.password) == ("sevvo_admin", SECRET)
    assert (resolved.postgres.host, resolved.postgres.port) == ("db.acme.internal", 6543)
    assert not resolved.postgres.HasField("pending_password")
    assert resolved.HasField("dynamic")
    assert resolved.dynamic.default_ttl_seconds == 3600
    assert resolved.dynamic.max_ttl_seconds == 28800
    assert resolved.dynamic.group_role == "readers"
    assert list(resolved.dynamic.creation_statements) == credential_templates.default_creation(
        "readers"
    )
    assert list(resolved.dynamic.revocation_statements) == []


def test_agent_resolves_custom_settings_verbatim(control_plane: ControlPlane) -> None:
    """Custom TTLs and statements come back exactly as saved."""
    org = control_plane.auth.create_org()
    creation = [CREATE, "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{name}}"]
    revocation = ["REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {{name}}", "DROP ROLE {{name}}"]
    created = control_plane.create_dynamic(
        org,
        "dyn",
        SECRET,
        default_ttl_seconds=600,
        max_ttl_seconds=1200,
        creation_statements=creation,
        revocation_statements=revocation,
    )
    resolved = _resolve(control_plane, org, created.id)
    assert list(resolved.dynamic.creation_statements) == creation
    assert list(resolved.dynamic.revocation_statements) == revocation
    assert (resolved.dynamic.default_ttl_seconds, resolved.dynamic.max_ttl_seconds) == (600, 1200)


def test_fields_connection_resolves_without_dynamic_settings(control_plane: ControlPlane) -> None:
    """A form connection resolves as before, with no dynamic section."""
    org = control_plane.auth.create_org()
    created = control_plane.create(org, "plain", SECRET)
    resolved = _resolve(control_plane, org, created.id)
    assert resolved.postgres.password == SECRET
    assert not resolved.HasField("dynamic")


def test_users_and_other_orgs_cannot_resolve_dynamic_credentials(
    control_plane: ControlPlane,
) -> None:
    """An admin session is refused outright and another org's agent sees NOT_FOUND."""
    a, b = control_plane.auth.create_org("A"), control_plane.auth.create_org("B")
    created = control_plane.create_dynamic(a, "dyn", SECRET)
    request = pb.ResolveConnectionCredentialsRequest(connection_id=created.id)
    with pytest.raises(grpc.RpcError) as as_user:
        control_plane.credentials(a.admin_token).ResolveConnectionCredentials(request)
    assert as_user.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as as_other:
        control_plane.credentials(control_plane.agent_for(b)).ResolveConnectionCredentials(request)
    assert as_other.value.code() == grpc.StatusCode.NOT_FOUND


def test_update_keeps_a_connection_dynamic(control_plane: ControlPlane) -> None:
    """Changing the privileged login's host keeps the mode and every setting."""
    org = control_plane.auth.create_org()
    created = control_plane.create_dynamic(org, "dyn", SECRET, default_ttl_seconds=900)
    updated = control_plane.connections(org.admin_token).UpdateConnection(
        pb.UpdateConnectionRequest(
            id=created.id,
            connection=pb.ConnectionUpdate(fields=pb.PostgresFields(host="db2.acme.internal")),
            update_mask=field_mask_pb2.FieldMask(paths=["fields.host"]),
        )
    )
    assert updated.credential_mode == pb.CREDENTIAL_MODE_DYNAMIC
    assert updated.dynamic == created.dynamic
    resolved = _resolve(control_plane, org, created.id)
    assert (resolved.postgres.host, resolved.postgres.password) == ("db2.acme.internal", SECRET)
    assert resolved.dynamic.default_ttl_seconds == 900


# Rotation of the privileged password.


def test_staged_rotation_resolves_both_passwords_until_commit(
    control_plane: ControlPlane,
) -> None:
    """Stage keeps the current password and adds the pending one; commit swaps them in."""
    org = control_plane.auth.create_org()
    created = control_plane.create_dynamic(org, "dyn", SECRET)
    stub = control_plane.credentials(control_plane.agent_for(org))
    stub.StagePrivilegedPassword(
        pb.StagePrivilegedPasswordRequest(connection_id=created.id, pending_password=NEW_SECRET)
    )
    staged = _resolve(control_plane, org, created.id)
    assert (staged.postgres.password, staged.postgres.pending_password) == (SECRET, NEW_SECRET)
    assert staged.HasField("dynamic")
    stub.CommitPrivilegedPassword(pb.CommitPrivilegedPasswordRequest(connection_id=created.id))
    committed = _resolve(control_plane, org, created.id)
    assert committed.postgres.password == NEW_SECRET
    assert not committed.postgres.HasField("pending_password")
    assert list(committed.dynamic.creation_statements) == list(staged.dynamic.creation_statements)


def test_staging_is_retry_safe_and_never_drops_a_staged_password(
    control_plane: ControlPlane,
) -> None:
    """The same password stages twice; a different one needs replace_pending."""
    org = control_plane.auth.create_org()
    created = control_plane.create_dynamic(org, "dyn", SECRET)
    stub = control_plane.credentials(control_plane.agent_for(org))

    def stage(password: str, replace_pending: bool = False) -> None:
        stub.StagePrivilegedPassword(
            pb.StagePrivilegedPasswordRequest(
                connection_id=created.id, pending_password=password, replace_pending=replace_pending
            )
        )

    stage(NEW_SECRET)
    stage(NEW_SECRET)
    with pytest.raises(grpc.RpcError) as caught:
        stage(OTHER_SECRET)
    assert error_details(caught.value).reason == "PENDING_PASSWORD_EXISTS"
    assert _resolve(control_plane, org, created.id).postgres.pending_password == NEW_SECRET
    stage(OTHER_SECRET, replace_pending=True)
    assert _resolve(control_plane, org, created.id).postgres.pending_password == OTHER_SECRET


def test_commit_without_a_staged_password_fails(control_plane: ControlPlane) -> None:
    """Commit with nothing staged is FAILED_PRECONDITION, reason NO_PENDING_PASSWORD."""
    org = control_plane.auth.create_org()
    created = control_plane.create_dynamic(org, "dyn", SECRET)
    with pytest.raises(grpc.RpcError) as caught:
        control_plane.credentials(control_plane.agent_for(org)).CommitPrivilegedPassword(
            pb.CommitPrivilegedPasswordRequest(connection_id=created.id)
        )
    details = error_details(caught.value)
    assert (details.code, details.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "NO_PENDING_PASSWORD",
    )
    assert _resolve(control_plane, org, created.id).postgres.password == SECRET


STAGE_A = "5f0c3d1e-2a4b-4c6d-8e9f-0a1b2c3d4e5f"
STAGE_B = "6a1d4e2f-3b5c-4d7e-9fa0-1b2c3d4e5f60"


def _stage(stub: Any, connection_id: str, password: str, stage_id: str) -> None:
    stub.StagePrivilegedPassword(
        pb.StagePrivilegedPasswordRequest(
            connection_id=connection_id,
            pending_password=password,
            stage_id=stage_id,
            replace_pending=True,
        )
    )


def _commit(stub: Any, connection_id: str, stage_id: str) -> None:
    stub.CommitPrivilegedPassword(
        pb.CommitPrivilegedPasswordRequest(connection_id=connection_id, stage_id=stage_id)
    )


def _staged(control_plane: ControlPlane) -> tuple[Org, pb.Connection, Any]:
    """A dynamic connection with NEW_SECRET staged under STAGE_A, and its org's agent stub."""
    org = control_plane.auth.create_org()
    created = control_plane.create_dynamic(org, "dyn", SECRET)
    stub = control_plane.credentials(control_plane.agent_for(org))
    _stage(stub, created.id, NEW_SECRET, STAGE_A)
    return org, created, stub


def test_a_commit_commits_only_the_password_of_its_own_stage(control_plane: ControlPlane) -> None:
    """A commit naming a replaced stage is STAGED_PASSWORD_SUPERSEDED and changes nothing."""
    org, created, stub = _staged(control_plane)
    _stage(stub, created.id, OTHER_SECRET, STAGE_B)
    with pytest.raises(grpc.RpcError) as caught:
        _commit(stub, created.id, STAGE_A)
    details = error_details(caught.value)
    assert (details.code, details.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "STAGED_PASSWORD_SUPERSEDED",
    )
    unchanged = _resolve(control_plane, org, created.id).postgres
    assert (unchanged.password, unchanged.pending_password) == (SECRET, OTHER_SECRET)
    assert unchanged.pending_stage_id == STAGE_B
    _commit(stub, created.id, STAGE_B)
    assert _resolve(control_plane, org, created.id).postgres.password == OTHER_SECRET


def test_committing_a_stage_again_succeeds_and_changes_nothing(
    control_plane: ControlPlane,
) -> None:
    """A retried commit (or one a recovering agent made first) is not an error."""
    org, created, stub = _staged(control_plane)
    _commit(stub, created.id, STAGE_A)
    _, sealed = _raw_row(control_plane, created.id)
    _commit(stub, created.id, STAGE_A)
    assert _raw_row(control_plane, created.id)[1] == sealed
    resolved = _resolve(control_plane, org, created.id).postgres
    assert resolved.password == NEW_SECRET and not resolved.HasField("pending_password")


def test_a_users_password_edit_supersedes_a_running_rotations_stage(
    control_plane: ControlPlane,
) -> None:
    """The user's password wins: the rotation's later commit is refused."""
    org, created, stub = _staged(control_plane)
    control_plane.connections(org.admin_token).UpdateConnection(
        pb.UpdateConnectionRequest(
            id=created.id,
            connection=pb.ConnectionUpdate(fields=pb.PostgresFields(password=OTHER_SECRET)),
            update_mask=field_mask_pb2.FieldMask(paths=["fields.password"]),
        )
    )
    with pytest.raises(grpc.RpcError) as caught:
        _commit(stub, created.id, STAGE_A)
    assert error_details(caught.value).reason == "STAGED_PASSWORD_SUPERSEDED"
    assert _resolve(control_plane, org, created.id).postgres.password == OTHER_SECRET


def test_an_edit_that_keeps_the_password_keeps_the_stage(control_plane: ControlPlane) -> None:
    """Changing the host leaves a staged rotation, stage id included, to be committed."""
    org, created, stub = _staged(control_plane)
    control_plane.connections(org.admin_token).UpdateConnection(
        pb.UpdateConnectionRequest(
            id=created.id,
            connection=pb.ConnectionUpdate(fields=pb.PostgresFields(host="db2.acme.internal")),
            update_mask=field_mask_pb2.FieldMask(paths=["fields.host"]),
        )
    )
    assert _resolve(control_plane, org, created.id).postgres.pending_stage_id == STAGE_A
    _commit(stub, created.id, STAGE_A)
    assert _resolve(control_plane, org, created.id).postgres.password == NEW_SECRET


# Which logins count as the same role is tested through the domain seam
# (tests/test_connections_dynamic_domain.py); this case proves the refusal's code, message and
# metadata reach the agent over the wire.
@pytest.mark.parametrize(("other", "shared"), [({"mode": "dynamic"}, True)], ids=["dynamic"])
def test_staging_is_refused_while_another_connection_logs_in_as_the_role(
    control_plane: ControlPlane, other: dict[str, Any], shared: bool
) -> None:
    """Same host (any case, trailing dot), port and username: refused, naming the other."""
    org = control_plane.auth.create_org()
    created = control_plane.create_dynamic(org, "dyn", SECRET)
    login = {
        "host": other.get("host", "db.acme.internal"),
        "port": other.get("port", 5432),
    }
    username = other.get("username", "sevvo_admin")
    if other["mode"] == "dynamic":
        twin = control_plane.create_dynamic(
            org, "twin", OTHER_SECRET, privileged_username=username, **login
        )
    else:
        twin = control_plane.create(org, "twin", OTHER_SECRET, username=username, **login)
    stub = control_plane.credentials(control_plane.agent_for(org))
    if not shared:
        _stage(stub, created.id, NEW_SECRET, STAGE_A)
        assert _resolve(control_plane, org, created.id).postgres.pending_password == NEW_SECRET
        return
    with pytest.raises(grpc.RpcError) as caught:
        _stage(stub, created.id, NEW_SECRET, STAGE_A)
    details = error_details(caught.value)
    assert (details.code, details.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PRIVILEGED_ROLE_SHARED",
    )
    assert f'"twin" ({twin.id})' in details.message
    assert (details.metadata or {}).get("connection_ids") == twin.id
    assert NEW_SECRET not in details.message and OTHER_SECRET not in details.message
    assert not _resolve(control_plane, org, created.id).postgres.HasField("pending_password")


def test_replace_sets_the_password_and_drops_a_staged_one(control_plane: ControlPlane) -> None:
    """ReplaceConnectionCredentials re-seals with the new password and clears pending."""
    org = control_plane.auth.create_org()
    created = control_plane.create_dynamic(org, "dyn", SECRET)
    _, sealed_before = _raw_row(control_plane, created.id)
    stub = control_plane.credentials(control_plane.agent_for(org))
    stub.StagePrivilegedPassword(
        pb.StagePrivilegedPasswordRequest(connection_id=created.id, pending_password=OTHER_SECRET)
    )
    stub.ReplaceConnectionCredentials(
        pb.ReplaceConnectionCredentialsRequest(connection_id=created.id, new_password=NEW_SECRET)
    )
    resolved = _resolve(control_plane, org, created.id)
    assert resolved.postgres.password == NEW_SECRET
    assert not resolved.postgres.HasField("pending_password")
    as_json, sealed_after = _raw_row(control_plane, created.id)
    assert sealed_after != sealed_before
    for secret in (SECRET, NEW_SECRET, OTHER_SECRET):
        assert secret not in as_json
        assert secret.encode() not in sealed_after


def test_user_password_change_drops_a_staged_password(control_plane: ControlPlane) -> None:
    """A password typed by a user wins over a half-finished rotation."""
    org = control_plane.auth.create_org()
    created = control_plane.create_dynamic(org, "dyn", SECRET)
    control_plane.credentials(control_plane.agent_for(org)).StagePrivilegedPassword(
        pb.StagePrivilegedPasswordRequest(connection_id=created.id, pending_password=OTHER_SECRET)
    )
    control_plane.connections(org.admin_token).UpdateConnection(
        pb.UpdateConnectionRequest(
            id=created.id,
            connection=pb.ConnectionUpdate(fields=pb.PostgresFields(password=NEW_SECRET)),
            update_mask=field_mask_pb2.FieldMask(paths=["fields.password"]),
        )
    )
    resolved = _resolve(control_plane, org, created.id)
    assert resolved.postgres.password == NEW_SECRET
    assert not resolved.postgres.HasField("pending_password")


def _rotation_calls(
    control_plane: ControlPlane, bearer: str, connection_id: str
) -> list[Callable[[], object]]:
    stub = control_plane.credentials(bearer)
    return [
        lambda: stub.ReplaceConnectionCredentials(
            pb.ReplaceConnectionCredentialsRequest(
                connection_id=connection_id, new_password=NEW_SECRET
            )
        ),
        lambda: stub.StagePrivilegedPassword(
            pb.StagePrivilegedPasswordRequest(
                connection_id=connection_id, pending_password=NEW_SECRET
            )
        ),
        lambda: stub.CommitPrivilegedPassword(
            pb.CommitPrivilegedPasswordRequest(connection_id=connection_id)
        ),
        lambda: stub.RecordRootRotation(
            pb.RecordRootRotationRequest(
                connection_id=connection_id, outcome=pb.ROTATION_OUTCOME_SUCCEEDED
            )
        ),
    ]


def test_rotation_rpcs_are_agent_only(control_plane: ControlPlane) -> None:
    """An admin's session is refused by every rotation RPC."""
    org = control_plane.auth.create_org()
    created = control_plane.create_dynamic(org, "dyn", SECRET)
    for call in _rotation_calls(control_plane, org.admin_token, created.id):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _resolve(control_plane, org, created.id).postgres.password == SECRET


def test_rotation_rpcs_cannot_reach_another_org(control_plane: ControlPlane) -> None:
    """Another org's agent gets NOT_FOUND from every rotation RPC and changes nothing."""
    a, b = control_plane.auth.create_org("A"), control_plane.auth.create_org("B")
    created = control_plane.create_dynamic(a, "dyn", SECRET)
    before = _raw_row(control_plane, created.id)
    for call in _rotation_calls(control_plane, control_plane.agent_for(b), created.id):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert _raw_row(control_plane, created.id) == before


def test_rotation_needs_a_dynamic_connection(control_plane: ControlPlane) -> None:
    """A form connection refuses every rotation RPC with NOT_DYNAMIC_CONNECTION."""
    org = control_plane.auth.create_org()
    created = control_plane.create(org, "plain", SECRET)
    for call in _rotation_calls(control_plane, control_plane.agent_for(org), created.id):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert error_details(caught.value).reason == "NOT_DYNAMIC_CONNECTION"


# The rules themselves are tested through the domain seam
# (tests/test_connections_dynamic_domain.py); an unset outcome is the servicer's own check, and
# a free-text reason proves no secret is echoed over the wire.
@pytest.mark.parametrize(
    ("call", "field"),
    [
        (
            lambda s, cid: s.RecordRootRotation(pb.RecordRootRotationRequest(connection_id=cid)),
            "outcome",
        ),
        (
            lambda s, cid: s.RecordRootRotation(
                pb.RecordRootRotationRequest(
                    connection_id=cid,
                    outcome=pb.ROTATION_OUTCOME_FAILED,
                    failure_reason=f"password {SECRET} rejected",
                )
            ),
            "failure_reason",
        ),
    ],
    ids=["no-outcome", "free-text-reason"],
)
def test_invalid_rotation_requests_name_the_field(
    control_plane: ControlPlane, call: Callable[[Any, str], object], field: str
) -> None:
    """Malformed rotation requests are INVALID_ARGUMENT naming the field, echoing no secret."""
    org = control_plane.auth.create_org()
    created = control_plane.create_dynamic(org, "dyn", SECRET)
    with pytest.raises(grpc.RpcError) as caught:
        call(control_plane.credentials(control_plane.agent_for(org)), created.id)
    details = error_details(caught.value)
    assert (details.code, details.field) == (grpc.StatusCode.INVALID_ARGUMENT, field)
    assert SECRET not in details.message


def test_rotations_are_audited_without_secrets(control_plane: ControlPlane) -> None:
    """Stage, commit, replace and both root-rotation outcomes leave secret-free records."""
    org = control_plane.auth.create_org()
    created = control_plane.create_dynamic(org, "dyn", SECRET)
    stub = control_plane.credentials(control_plane.agent_for(org))
    stub.StagePrivilegedPassword(
        pb.StagePrivilegedPasswordRequest(connection_id=created.id, pending_password=NEW_SECRET)
    )
    stub.CommitPrivilegedPassword(pb.CommitPrivilegedPasswordRequest(connection_id=created.id))
    stub.RecordRootRotation(
        pb.RecordRootRotationRequest(
            connection_id=created.id, outcome=pb.ROTATION_OUTCOME_SUCCEEDED
        )
    )
    stub.ReplaceConnectionCredentials(
        pb.ReplaceConnectionCredentialsRequest(connection_id=created.id, new_password=OTHER_SECRET)
    )
    stub.RecordRootRotation(
        pb.RecordRootRotationRequest(
            connection_id=created.id,
            outcome=pb.ROTATION_OUTCOME_FAILED,
            failure_reason="PASSWORD_CHANGE_DENIED",
        )
    )
    success, failure = audit_pb2.AUDIT_OUTCOME_SUCCESS, audit_pb2.AUDIT_OUTCOME_FAILURE
    assert _actions(control_plane, org, created.id) == [
        ("connection.create", success, ""),
        ("connection.credentials.rotate.stage", success, ""),
        ("connection.credentials.rotate", success, ""),
        ("connection.root.rotate", success, ""),
        ("connection.credentials.rotate", success, ""),
        ("connection.root.rotate", failure, "PASSWORD_CHANGE_DENIED"),
    ]
    dump = _audit_dump(control_plane)
    for secret in (SECRET, NEW_SECRET, OTHER_SECRET):
        assert secret not in dump


# The sealed payload format.


def _settings() -> DynamicSettings:
    return DynamicSettings(
        default_ttl_seconds=600,
        max_ttl_seconds=1200,
        creation_statements=(CREATE,),
        revocation_statements=(),
        group_role="readers",
    )


def _login() -> PostgresTarget:
    return from_fields(
        host="db.example.com",
        port=5432,
        database="app",
        username="admin",
        password=SECRET,
        ssl_mode="require",
    )


def test_payload_round_trips_dynamic_settings_and_pending_password() -> None:
    """to_json/from_json keep the dynamic section and a staged password."""
    target = replace(_login().with_pending_password(NEW_SECRET, field="p"), dynamic=_settings())
    assert PostgresTarget.from_json(target.to_json()) == target


def test_payload_without_new_sections_still_reads() -> None:
    """A payload written before dynamic credentials existed reads as a plain login."""
    old = json.dumps(
        {
            "version": 1,
            "host": "db.example.com",
            "port": 5432,
            "database": "app",
            "username": "admin",
            "password": SECRET,
            "ssl_mode": "require",
        }
    ).encode()
    target = PostgresTarget.from_json(old)
    assert (target.dynamic, target.pending_password) == (None, None)
    assert target == _login()


@pytest.mark.parametrize(
    "section",
    [
        "not an object",
        {"default_ttl_seconds": 600},
        {**_settings().to_payload(), "default_ttl_seconds": True},
        {**_settings().to_payload(), "max_ttl_seconds": 10},
        {**_settings().to_payload(), "creation_statements": ["CREATE ROLE fixed"]},
        {**_settings().to_payload(), "revocation_statements": "DROP ROLE {{name}}"},
        {**_settings().to_payload(), "group_role": 7},
    ],
    ids=["not-object", "missing", "bool-ttl", "ttl-range", "no-name", "not-list", "group-int"],
)
def test_malformed_dynamic_section_is_unreadable(section: object) -> None:
    """A dynamic section breaking any rule makes the payload malformed, quoting nothing."""
    payload = json.loads(_login().to_json())
    payload["dynamic"] = section
    with pytest.raises(CredentialsUnreadable) as caught:
        PostgresTarget.from_json(json.dumps(payload).encode())
    assert caught.value.reason == "CREDENTIALS_PAYLOAD_MALFORMED"
    assert SECRET not in str(caught.value)


def test_repr_redacts_both_passwords() -> None:
    """Neither the password nor a staged one appears in repr."""
    text = repr(_login().with_pending_password(NEW_SECRET, field="p"))
    assert SECRET not in text
    assert NEW_SECRET not in text
    assert "pending_password='<redacted>'" in text


# Logs.


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log line of the process rendered as in production."""
    stream = io.StringIO()
    configure_logging("canary", level="DEBUG", json=True, stream=stream)
    yield stream
    configure_test_logging()


def test_no_dynamic_secret_reaches_the_logs(
    captured_logs: io.StringIO, control_plane: ControlPlane
) -> None:
    """Creating, resolving, rotating and mistyping dynamic connections logs no password."""
    org = control_plane.auth.create_org()
    created = control_plane.create_dynamic(org, "dyn", SECRET)
    _resolve(control_plane, org, created.id)
    stub = control_plane.credentials(control_plane.agent_for(org))
    stub.StagePrivilegedPassword(
        pb.StagePrivilegedPasswordRequest(connection_id=created.id, pending_password=NEW_SECRET)
    )
    _resolve(control_plane, org, created.id)
    stub.CommitPrivilegedPassword(pb.CommitPrivilegedPasswordRequest(connection_id=created.id))
    stub.ReplaceConnectionCredentials(
        pb.ReplaceConnectionCredentialsRequest(connection_id=created.id, new_password=OTHER_SECRET)
    )
    with pytest.raises(grpc.RpcError):
        control_plane.create_dynamic(org, "bad", SECRET + "\x00")
    output = captured_logs.getvalue()
    assert "privileged credentials changed" in output, "logs were not captured"
    for secret in (SECRET, NEW_SECRET, OTHER_SECRET):
        assert secret not in output
