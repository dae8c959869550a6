"""The connections service's part of previews: the owner's settings, and security events."""

from __future__ import annotations

import uuid

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2

from sevvo.audit.v1 import audit_pb2
from sevvo.connections.v1 import connections_pb2 as pb
from sevvo.runtime.grpc_client import error_details
from tests.plugins.control_plane import ControlPlane


@pytest.fixture
def control_plane(shared_control_plane: ControlPlane) -> ControlPlane:
    """One control plane for the module: every test makes its own org, so none meet."""
    return shared_control_plane


SECRET = "s3cret-Pa55word-canary"
SETTINGS = pb.PreviewSettings(
    allowed_functions=["similarity", "public.word_similarity"], max_plan_cost=50_000
)


def _resolve(control_plane: ControlPlane, bearer: str, connection_id: str) -> pb.PreviewSettings:
    resolved: pb.ResolveConnectionCredentialsResponse = control_plane.credentials(
        bearer
    ).ResolveConnectionCredentials(
        pb.ResolveConnectionCredentialsRequest(connection_id=connection_id, purpose="preview")
    )
    return resolved.preview


def test_preview_settings_reach_the_agent_and_the_owner(control_plane: ControlPlane) -> None:
    """Settings given at creation come back sealed to the agent and as a copy to users."""
    org = control_plane.auth.create_org()
    created = control_plane.create(org, "warehouse", SECRET, preview=SETTINGS)
    assert created.preview == SETTINGS
    assert _resolve(control_plane, control_plane.agent_for(org), created.id) == SETTINGS
    dynamic = control_plane.create_dynamic(org, "dyn", SECRET, preview=SETTINGS)
    assert _resolve(control_plane, control_plane.agent_for(org), dynamic.id) == SETTINGS


def test_a_connection_without_preview_settings_has_none(control_plane: ControlPlane) -> None:
    """No settings: no opted-in function and no budget reach the agent."""
    org = control_plane.auth.create_org()
    created = control_plane.create(org, "warehouse", SECRET)
    assert not created.HasField("preview")
    assert _resolve(control_plane, control_plane.agent_for(org), created.id) == pb.PreviewSettings()


# The rules themselves are tested without a server (tests/test_preview_settings_requests.py);
# these cases prove the server answers with them and stores nothing.
@pytest.mark.parametrize(
    "settings",
    [
        pb.PreviewSettings(allowed_functions=["two words"]),
        pb.PreviewSettings(max_plan_cost=float("inf")),
    ],
    ids=["space", "infinite"],
)
def test_invalid_preview_settings_are_refused_naming_the_field(
    control_plane: ControlPlane, settings: pb.PreviewSettings
) -> None:
    """Malformed settings are INVALID_ARGUMENT on fields.preview..., and nothing is stored."""
    org = control_plane.auth.create_org()
    with pytest.raises(grpc.RpcError) as caught:
        control_plane.create(org, "warehouse", SECRET, preview=settings)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert (details.field or "").startswith("fields.preview.")
    listed = control_plane.connections(org.admin_token).ListConnections(pb.ListConnectionsRequest())
    assert not listed.connections


def test_updating_preview_settings_changes_nothing_else(control_plane: ControlPlane) -> None:
    """fields.preview reseals only the settings: login and status stay, the agent sees them."""
    org = control_plane.auth.create_org()
    created = control_plane.create(org, "warehouse", SECRET)
    stub = control_plane.connections(org.admin_token)
    updated = stub.UpdateConnection(
        pb.UpdateConnectionRequest(
            id=created.id,
            connection=pb.ConnectionUpdate(fields=pb.PostgresFields(preview=SETTINGS)),
            update_mask=field_mask_pb2.FieldMask(paths=["fields.preview"]),
        )
    )
    assert updated.preview == SETTINGS
    assert (updated.status, updated.safe_metadata) == (created.status, created.safe_metadata)
    agent = control_plane.agent_for(org)
    resolved = control_plane.credentials(agent).ResolveConnectionCredentials(
        pb.ResolveConnectionCredentialsRequest(connection_id=created.id, purpose="preview")
    )
    assert (resolved.preview, resolved.postgres.password) == (SETTINGS, SECRET)
    cleared = stub.UpdateConnection(
        pb.UpdateConnectionRequest(
            id=created.id, update_mask=field_mask_pb2.FieldMask(paths=["fields.preview"])
        )
    )
    assert not cleared.HasField("preview")


def _event(connection_id: str, **findings: object) -> pb.RecordPreviewSecurityEventRequest:
    return pb.RecordPreviewSecurityEventRequest(
        connection_id=connection_id,
        run_id=str(uuid.uuid4()),
        **findings,  # type: ignore[arg-type]
    )


def test_an_unclean_receipt_is_audited_as_a_security_event(control_plane: ControlPlane) -> None:
    """The org's agent records the receipt's findings; admins read them, with no secret."""
    org = control_plane.auth.create_org()
    created = control_plane.create(org, "warehouse", SECRET)
    request = _event(created.id, transaction_id_assigned=True, advisory_locks_held=2)
    control_plane.credentials(control_plane.agent_for(org)).RecordPreviewSecurityEvent(request)

    (event,) = [
        e
        for e in control_plane.audit(org.admin_token)
        .ListAuditEvents(audit_pb2.ListAuditEventsRequest(target_id=created.id))
        .events
        if e.action == "connection.preview.receipt"
    ]
    assert (event.outcome, event.reason) == (
        audit_pb2.AUDIT_OUTCOME_FAILURE,
        "PREVIEW_RECEIPT_NOT_CLEAN",
    )
    assert event.actor_kind == audit_pb2.ACTOR_KIND_AGENT
    assert dict(event.details) == {
        "security_event": "true",
        "run_id": request.run_id,
        "receipt_missing": "false",
        "transaction_id_assigned": "true",
        "advisory_locks_held": "2",
        "role_sessions_ended": "0",
        "backend_outlived_call": "false",
    }
    with psycopg.connect(control_plane.app.config.database_url) as conn:
        dump = conn.execute("select json_agg(e)::text from audit.events e").fetchone()
    assert dump is not None and SECRET not in dump[0]


def test_a_missing_receipt_has_its_own_reason(control_plane: ControlPlane) -> None:
    """A receipt that could not be taken is recorded as PREVIEW_RECEIPT_MISSING."""
    org = control_plane.auth.create_org()
    created = control_plane.create(org, "warehouse", SECRET)
    control_plane.credentials(control_plane.agent_for(org)).RecordPreviewSecurityEvent(
        _event(created.id, receipt_missing=True)
    )
    reasons = [
        e.reason
        for e in control_plane.audit(org.admin_token)
        .ListAuditEvents(audit_pb2.ListAuditEventsRequest(target_id=created.id))
        .events
    ]
    assert "PREVIEW_RECEIPT_MISSING" in reasons


def test_security_events_are_agent_only_and_org_scoped(control_plane: ControlPlane) -> None:
    """A user's session is refused; another org's agent gets NOT_FOUND and records nothing."""
    a, b = control_plane.auth.create_org("A"), control_plane.auth.create_org("B")
    created = control_plane.create(a, "warehouse", SECRET)
    with pytest.raises(grpc.RpcError) as as_user:
        control_plane.credentials(a.admin_token).RecordPreviewSecurityEvent(_event(created.id))
    assert as_user.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as other_org:
        control_plane.credentials(control_plane.agent_for(b)).RecordPreviewSecurityEvent(
            _event(created.id)
        )
    assert other_org.value.code() == grpc.StatusCode.NOT_FOUND
    actions = [
        e.action
        for e in control_plane.audit(a.admin_token)
        .ListAuditEvents(audit_pb2.ListAuditEventsRequest(target_id=created.id))
        .events
    ]
    assert "connection.preview.receipt" not in actions


def test_a_malformed_security_event_names_the_field(control_plane: ControlPlane) -> None:
    """Negative counts and a run id that is not a UUID are INVALID_ARGUMENT on that field."""
    org = control_plane.auth.create_org()
    created = control_plane.create(org, "warehouse", SECRET)
    stub = control_plane.credentials(control_plane.agent_for(org))
    for request, field in (
        (_event(created.id, advisory_locks_held=-1), "advisory_locks_held"),
        (pb.RecordPreviewSecurityEventRequest(connection_id=created.id, run_id="x"), "run_id"),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            stub.RecordPreviewSecurityEvent(request)
        details = error_details(caught.value)
        assert (details.code, details.field) == (grpc.StatusCode.INVALID_ARGUMENT, field)
