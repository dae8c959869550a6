"""The connections service over real gRPC/TLS and Postgres: secrets stay sealed and scoped.

One control plane serves the module (tests.plugins.control_plane): every test makes its own
orgs and reads only their rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2

from sevvo.audit.v1 import audit_pb2
from sevvo.connections.v1 import connections_pb2 as pb
from sevvo.runtime.grpc_client import error_details
from tests.plugins.control_plane import ControlPlane
from tests.plugins.pki import ca_certificate_pem
from tests.test_connections_requests import INVALID_CREATE, INVALID_CREATE_IDS
from tests.test_connections_requests import SECRET as REQUEST_SECRET

SECRET = "s3cret-Pa55word-canary"


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


def test_create_get_list_never_return_the_password(control_plane: ControlPlane) -> None:
    """No field of any user-facing response carries the password; has_password says it exists."""
    org = control_plane.auth.create_org()
    created = control_plane.create(org, "warehouse", SECRET)
    stub = control_plane.connections(org.admin_token)
    fetched = stub.GetConnection(pb.GetConnectionRequest(id=created.id))
    listed = stub.ListConnections(pb.ListConnectionsRequest())
    for message in (created, fetched, listed):
        assert SECRET.encode() not in message.SerializeToString()
        assert SECRET not in str(message)
    assert fetched.has_password
    assert fetched.status == pb.CONNECTION_STATUS_PENDING
    assert fetched.safe_metadata.host == "db.acme.internal"
    assert fetched.safe_metadata.port == 5432


def test_stored_row_holds_no_plaintext_password(control_plane: ControlPlane) -> None:
    """The control-plane row, read with SQL, contains the password in no form."""
    org = control_plane.auth.create_org()
    created = control_plane.create(org, "warehouse", SECRET)
    as_json, sealed = _raw_row(control_plane, created.id)
    assert SECRET not in as_json
    assert SECRET.encode() not in sealed
    assert SECRET.encode().hex() not in as_json


def test_agent_of_the_org_resolves_the_credentials(control_plane: ControlPlane) -> None:
    """The org's agent gets exactly the stored credentials back."""
    org = control_plane.auth.create_org()
    created = control_plane.create(org, "warehouse", SECRET, port=6543)
    resolved = control_plane.credentials(control_plane.agent_for(org)).ResolveConnectionCredentials(
        pb.ResolveConnectionCredentialsRequest(connection_id=created.id, purpose="credential_test")
    )
    assert resolved.postgres.password == SECRET
    assert (resolved.postgres.host, resolved.postgres.port) == ("db.acme.internal", 6543)
    assert resolved.postgres.ssl_mode == pb.SSL_MODE_REQUIRE


def test_ciphertext_moved_to_another_row_does_not_open(control_plane: ControlPlane) -> None:
    """Copying A's sealed payload onto B makes B fail with a clear error; A still resolves."""
    org = control_plane.auth.create_org()
    a = control_plane.create(org, "a", SECRET)
    b = control_plane.create(org, "b", "another-password-123")
    with psycopg.connect(control_plane.app.config.database_url) as conn:
        conn.execute(
            "update connections.connections set sealed_credentials = src.sealed_credentials,"
            " kek_id = src.kek_id from connections.connections src"
            " where src.id = %s and connections.connections.id = %s",
            (a.id, b.id),
        )
    stub = control_plane.credentials(control_plane.agent_for(org))
    with pytest.raises(grpc.RpcError) as caught:
        stub.ResolveConnectionCredentials(
            pb.ResolveConnectionCredentialsRequest(connection_id=b.id)
        )
    details = error_details(caught.value)
    assert details.reason == "SEALED_DATA_MISMATCH"
    assert "another record" in details.message or "corrupted" in details.message
    assert SECRET not in details.message
    resolved = stub.ResolveConnectionCredentials(
        pb.ResolveConnectionCredentialsRequest(connection_id=a.id)
    )
    assert resolved.postgres.password == SECRET


def test_other_org_can_do_nothing_with_a_connection(control_plane: ControlPlane) -> None:
    """Org B cannot get, list, update, delete or resolve org A's connection."""
    a, b = control_plane.auth.create_org("Org A"), control_plane.auth.create_org("Org B")
    created = control_plane.create(a, "warehouse", SECRET)
    b_users = control_plane.connections(b.admin_token)
    b_agent = control_plane.credentials(control_plane.agent_for(b))
    assert list(b_users.ListConnections(pb.ListConnectionsRequest()).connections) == []
    attempts: list[Callable[[], object]] = [
        lambda: b_users.GetConnection(pb.GetConnectionRequest(id=created.id)),
        lambda: b_users.UpdateConnection(
            pb.UpdateConnectionRequest(
                id=created.id,
                connection=pb.ConnectionUpdate(display_name="stolen"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            )
        ),
        lambda: b_users.DeleteConnection(pb.DeleteConnectionRequest(id=created.id)),
        lambda: b_agent.ResolveConnectionCredentials(
            pb.ResolveConnectionCredentialsRequest(connection_id=created.id)
        ),
    ]
    for attempt in attempts:
        with pytest.raises(grpc.RpcError) as caught:
            attempt()
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    still = control_plane.connections(a.admin_token).GetConnection(
        pb.GetConnectionRequest(id=created.id)
    )
    assert still.display_name == "warehouse"


def test_user_session_cannot_resolve_credentials(control_plane: ControlPlane) -> None:
    """Even an admin's session is refused by the agent-only resolve RPC."""
    org = control_plane.auth.create_org()
    created = control_plane.create(org, "warehouse", SECRET)
    with pytest.raises(grpc.RpcError) as caught:
        control_plane.credentials(org.admin_token).ResolveConnectionCredentials(
            pb.ResolveConnectionCredentialsRequest(connection_id=created.id)
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_details(caught.value).reason == "TOKEN_WRONG_AUDIENCE"


# The rules themselves are tested without a server (tests/test_connections_requests.py);
# these cases prove the server answers with them and stores nothing.
_WIRED = {"port-70000", "dsn-conflict", "empty-name", "bundle-with-private-key"}


@pytest.mark.parametrize(
    ("request_", "field", "rule"),
    [case for case, id_ in zip(INVALID_CREATE, INVALID_CREATE_IDS, strict=True) if id_ in _WIRED],
    ids=[id_ for id_ in INVALID_CREATE_IDS if id_ in _WIRED],
)
def test_invalid_create_is_rejected_and_changes_nothing(
    control_plane: ControlPlane, request_: pb.CreateConnectionRequest, field: str, rule: str
) -> None:
    """Each bad input gets INVALID_ARGUMENT naming the field and rule; nothing is stored."""
    org = control_plane.auth.create_org()
    stub = control_plane.connections(org.admin_token)
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateConnection(request_)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.field == field
    assert rule in details.message.lower()
    assert REQUEST_SECRET not in details.message
    assert list(stub.ListConnections(pb.ListConnectionsRequest()).connections) == []


def test_dsn_mode_creates_the_same_fields(control_plane: ControlPlane) -> None:
    """A DSN is parsed into the same fields, percent-decoding the password."""
    org = control_plane.auth.create_org()
    created = control_plane.connections(org.admin_token).CreateConnection(
        pb.CreateConnectionRequest(
            display_name="from-dsn",
            dsn=pb.PostgresDsn(
                uri="postgresql://reader:p%40ss%2Fw0rd%3A!@10.0.0.5:6000/app?sslmode=require"
            ),
        )
    )
    assert created.credential_mode == pb.CREDENTIAL_MODE_DSN
    assert (created.safe_metadata.host, created.safe_metadata.port) == ("10.0.0.5", 6000)
    resolved = control_plane.credentials(control_plane.agent_for(org)).ResolveConnectionCredentials(
        pb.ResolveConnectionCredentialsRequest(connection_id=created.id)
    )
    assert resolved.postgres.password == "p@ss/w0rd:!"


def test_duplicate_name_in_an_org_is_already_exists(control_plane: ControlPlane) -> None:
    """Display names are unique per org (case-insensitive); other orgs may reuse them."""
    a, b = control_plane.auth.create_org("Org A"), control_plane.auth.create_org("Org B")
    control_plane.create(a, "Warehouse", SECRET)
    with pytest.raises(grpc.RpcError) as caught:
        control_plane.create(a, "warehouse", SECRET)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert control_plane.create(b, "warehouse", SECRET).display_name == "warehouse"


def _update(stub: Any, connection_id: str, paths: list[str], **values: Any) -> pb.Connection:
    fields = values.pop("fields", None)
    updated: pb.Connection = stub.UpdateConnection(
        pb.UpdateConnectionRequest(
            id=connection_id,
            connection=pb.ConnectionUpdate(fields=fields, **values),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        )
    )
    return updated


def test_update_changes_only_masked_fields_and_reseals(control_plane: ControlPlane) -> None:
    """A host change keeps the password and reaches the agent; status goes back to pending."""
    org = control_plane.auth.create_org()
    created = control_plane.create(org, "warehouse", SECRET)
    stub = control_plane.connections(org.admin_token)
    _, sealed_before = _raw_row(control_plane, created.id)
    updated = _update(
        stub,
        created.id,
        ["fields.host", "display_name"],
        display_name="renamed",
        fields=pb.PostgresFields(host="db2.acme.internal", password="ignored-not-in-mask"),
    )
    assert (updated.display_name, updated.safe_metadata.host) == ("renamed", "db2.acme.internal")
    assert updated.safe_metadata.username == "reader"
    _, sealed_after = _raw_row(control_plane, created.id)
    assert sealed_after != sealed_before
    resolved = control_plane.credentials(control_plane.agent_for(org)).ResolveConnectionCredentials(
        pb.ResolveConnectionCredentialsRequest(connection_id=created.id)
    )
    assert (resolved.postgres.host, resolved.postgres.password) == ("db2.acme.internal", SECRET)


def test_failed_update_leaves_credentials_as_they_were(control_plane: ControlPlane) -> None:
    """An update with one bad field changes nothing, not even the good fields."""
    org = control_plane.auth.create_org()
    created = control_plane.create(org, "warehouse", SECRET)
    stub = control_plane.connections(org.admin_token)
    before = _raw_row(control_plane, created.id)
    with pytest.raises(grpc.RpcError) as caught:
        _update(
            stub,
            created.id,
            ["fields.password", "fields.port"],
            fields=pb.PostgresFields(password="new-password-456", port=0),
        )
    assert error_details(caught.value).field == "connection.fields.port"
    assert _raw_row(control_plane, created.id) == before


@pytest.mark.parametrize(
    ("paths", "rule"),
    [([], "at least one"), (["org_id"], "cannot update"), (["fields.pasword"], "cannot update")],
)
def test_bad_update_masks_are_rejected(
    control_plane: ControlPlane, paths: list[str], rule: str
) -> None:
    """The mask must be non-empty and name only updatable fields."""
    org = control_plane.auth.create_org()
    created = control_plane.create(org, "warehouse", SECRET)
    with pytest.raises(grpc.RpcError) as caught:
        _update(control_plane.connections(org.admin_token), created.id, paths)
    details = error_details(caught.value)
    assert (details.code, details.field) == (grpc.StatusCode.INVALID_ARGUMENT, "update_mask")
    assert rule in details.message


def test_delete_removes_the_credentials(control_plane: ControlPlane) -> None:
    """After delete the row is gone and the agent can no longer resolve it."""
    org = control_plane.auth.create_org()
    created = control_plane.create(org, "warehouse", SECRET)
    control_plane.connections(org.admin_token).DeleteConnection(
        pb.DeleteConnectionRequest(id=created.id)
    )
    with psycopg.connect(control_plane.app.config.database_url) as conn:
        assert conn.execute(
            "select count(*) from connections.connections where id = %s", (created.id,)
        ).fetchone() == (0,)
    with pytest.raises(grpc.RpcError) as caught:
        control_plane.credentials(control_plane.agent_for(org)).ResolveConnectionCredentials(
            pb.ResolveConnectionCredentialsRequest(connection_id=created.id)
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_connections_page_through(control_plane: ControlPlane) -> None:
    """ListConnections pages with tokens and returns each connection once, in order."""
    org = control_plane.auth.create_org()
    ids = [control_plane.create(org, f"c{i}", SECRET).id for i in range(5)]
    stub = control_plane.connections(org.admin_token)
    seen: list[str] = []
    token = ""
    while True:
        page = stub.ListConnections(pb.ListConnectionsRequest(page_size=2, page_token=token))
        seen.extend(c.id for c in page.connections)
        token = page.next_page_token
        if not token:
            break
    assert seen == ids


def test_audit_log_records_every_action_without_secrets(control_plane: ControlPlane) -> None:
    """Create, update, credential change, resolve, refused resolve and delete are audited."""
    a, b = control_plane.auth.create_org("Org A"), control_plane.auth.create_org("Org B")
    created = control_plane.create(a, "warehouse", SECRET)
    stub = control_plane.connections(a.admin_token)
    _update(stub, created.id, ["display_name"], display_name="renamed")
    _update(
        stub, created.id, ["fields.password"], fields=pb.PostgresFields(password="rotated-pass-789")
    )
    control_plane.credentials(control_plane.agent_for(a)).ResolveConnectionCredentials(
        pb.ResolveConnectionCredentialsRequest(connection_id=created.id, purpose="credential_test")
    )
    with pytest.raises(grpc.RpcError):
        control_plane.credentials(control_plane.agent_for(b)).ResolveConnectionCredentials(
            pb.ResolveConnectionCredentialsRequest(connection_id=created.id)
        )
    stub.DeleteConnection(pb.DeleteConnectionRequest(id=created.id))

    events = (
        control_plane.audit(a.admin_token)
        .ListAuditEvents(audit_pb2.ListAuditEventsRequest(target_id=created.id))
        .events
    )
    assert [e.action for e in reversed(events)] == [
        "connection.create",
        "connection.update",
        "connection.credentials.update",
        "connection.credentials.resolve",
        "connection.delete",
    ]
    assert all(e.outcome == audit_pb2.AUDIT_OUTCOME_SUCCESS for e in events)
    resolve = next(e for e in events if e.action == "connection.credentials.resolve")
    assert resolve.actor_kind == audit_pb2.ACTOR_KIND_AGENT
    assert resolve.details["purpose"] == "credential_test"
    b_events = (
        control_plane.audit(b.admin_token)
        .ListAuditEvents(audit_pb2.ListAuditEventsRequest(action="connection."))
        .events
    )
    assert [(e.action, e.outcome, e.reason) for e in b_events] == [
        ("connection.credentials.resolve", audit_pb2.AUDIT_OUTCOME_FAILURE, "CONNECTION_NOT_FOUND")
    ]
    with psycopg.connect(control_plane.app.config.database_url) as conn:
        dump = conn.execute("select json_agg(e)::text from audit.events e").fetchone()
    assert dump is not None
    assert SECRET not in dump[0]
    assert "rotated-pass-789" not in dump[0]


def test_audit_log_is_admin_only_and_append_only(control_plane: ControlPlane) -> None:
    """Members cannot read the audit log, and stored events cannot be changed or removed."""
    from sevvo.auth.v1 import auth_pb2, users_pb2
    from tests.plugins.auth_stack import PASSWORD

    org = control_plane.auth.create_org()
    control_plane.create(org, "warehouse", SECRET)
    email = f"member-{uuid.uuid4().hex[:6]}@acme.example"
    control_plane.auth.users(org.admin_token).CreateUser(
        users_pb2.CreateUserRequest(email=email, password=PASSWORD)
    )
    member = (
        control_plane.auth.auth()
        .SignIn(auth_pb2.SignInRequest(email=email, password=PASSWORD))
        .session_token
    )
    with pytest.raises(grpc.RpcError) as caught:
        control_plane.audit(member).ListAuditEvents(audit_pb2.ListAuditEventsRequest())
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with psycopg.connect(control_plane.app.config.database_url) as conn:
        for statement in (
            "update audit.events set action = 'forged'",
            "delete from audit.events",
            "truncate audit.events",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(statement)
        assert conn.execute(
            "select count(*) from audit.events where org_id = %s and action = 'connection.create'",
            (org.org_id,),
        ).fetchone() == (1,)


def test_audit_events_page_newest_first(control_plane: ControlPlane) -> None:
    """ListAuditEvents pages through every event once, newest first."""
    org = control_plane.auth.create_org()
    for i in range(5):
        control_plane.create(org, f"c{i}", SECRET)
    stub = control_plane.audit(org.admin_token)
    seen: list[audit_pb2.AuditEvent] = []
    token = ""
    while True:
        page = stub.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(
                page_size=2, page_token=token, action="connection.create"
            )
        )
        assert len(page.events) <= 2
        seen.extend(page.events)
        token = page.next_page_token
        if not token:
            break
    assert len({e.id for e in seen}) == len(seen) == 5
    times = [e.occur_time.ToDatetime() for e in seen]
    assert times == sorted(times, reverse=True)


# --- CA bundles (verify-ca, verify-full) ------------------------------------------------------

CA_PEM, _ = ca_certificate_pem("Example Root CA")
NEW_CA_PEM, _ = ca_certificate_pem("Example Next Root CA")


def _resolve(control_plane: ControlPlane, org: Any, connection_id: str) -> pb.PostgresCredentials:
    resolved = control_plane.credentials(control_plane.agent_for(org)).ResolveConnectionCredentials(
        pb.ResolveConnectionCredentialsRequest(connection_id=connection_id)
    )
    postgres: pb.PostgresCredentials = resolved.postgres
    return postgres


def test_a_ca_bundle_is_sealed_and_shown_as_a_summary(control_plane: ControlPlane) -> None:
    """Users see subject, fingerprint and expiry; only the sealed payload holds the PEM, which
    the org's agent gets back."""
    org = control_plane.auth.create_org()
    created = control_plane.create(
        org,
        "verified",
        SECRET,
        ssl_mode=pb.SSL_MODE_VERIFY_FULL,
        ssl_root_cert=f"# the provider's bundle\n{CA_PEM}",
    )
    fetched = control_plane.connections(org.admin_token).GetConnection(
        pb.GetConnectionRequest(id=created.id)
    )
    assert fetched.safe_metadata.ssl_mode == pb.SSL_MODE_VERIFY_FULL
    (summary,) = fetched.safe_metadata.ssl_root_certs
    assert summary.subject == "CN=Example Root CA"
    assert len(summary.sha256_fingerprint.split(":")) == 32
    assert summary.expire_time.seconds > 0
    as_json, _ = _raw_row(control_plane, created.id)
    assert summary.sha256_fingerprint in as_json
    assert CA_PEM.splitlines()[1] not in as_json
    postgres = _resolve(control_plane, org, created.id)
    assert (postgres.ssl_mode, postgres.ssl_root_cert) == (pb.SSL_MODE_VERIFY_FULL, CA_PEM)


def test_an_update_changes_the_mode_and_the_bundle(control_plane: ControlPlane) -> None:
    """verify-ca to verify-full keeps the bundle, a new one replaces it, require drops it."""
    org = control_plane.auth.create_org()
    created = control_plane.create(
        org, "verified", SECRET, ssl_mode=pb.SSL_MODE_VERIFY_CA, ssl_root_cert=CA_PEM
    )
    stub = control_plane.connections(org.admin_token)
    full = pb.PostgresFields(ssl_mode=pb.SSL_MODE_VERIFY_FULL)
    kept = _update(stub, created.id, ["fields.ssl_mode"], fields=full)
    assert [c.subject for c in kept.safe_metadata.ssl_root_certs] == ["CN=Example Root CA"]
    renewed = _update(
        stub,
        created.id,
        ["fields.ssl_root_cert"],
        fields=pb.PostgresFields(ssl_root_cert=NEW_CA_PEM),
    )
    assert renewed.safe_metadata.ssl_mode == pb.SSL_MODE_VERIFY_FULL
    assert [c.subject for c in renewed.safe_metadata.ssl_root_certs] == ["CN=Example Next Root CA"]
    assert _resolve(control_plane, org, created.id).ssl_root_cert == NEW_CA_PEM
    require = pb.PostgresFields(ssl_mode=pb.SSL_MODE_REQUIRE)
    dropped = _update(stub, created.id, ["fields.ssl_mode"], fields=require)
    assert list(dropped.safe_metadata.ssl_root_certs) == []
    postgres = _resolve(control_plane, org, created.id)
    assert (postgres.ssl_mode, postgres.ssl_root_cert) == (pb.SSL_MODE_REQUIRE, "")


@pytest.mark.parametrize(
    ("paths", "fields", "rule"),
    [
        (
            ["fields.ssl_root_cert"],
            pb.PostgresFields(ssl_root_cert="-----BEGIN CERTIFICATE-----\nAAAA\n"),
            "no matching",
        ),
        (["fields.ssl_root_cert"], pb.PostgresFields(), "is required with ssl mode verify-full"),
        (
            ["fields.ssl_mode", "fields.ssl_root_cert"],
            pb.PostgresFields(ssl_mode=pb.SSL_MODE_DISABLE, ssl_root_cert=CA_PEM),
            "only with ssl mode verify-ca or verify-full",
        ),
    ],
    ids=["unterminated-pem", "bundle-cleared", "bundle-with-disable"],
)
def test_a_bad_bundle_update_is_refused_and_changes_nothing(
    control_plane: ControlPlane, paths: list[str], fields: pb.PostgresFields, rule: str
) -> None:
    """INVALID_ARGUMENT names connection.fields.ssl_root_cert; the row stays as it was."""
    org = control_plane.auth.create_org()
    created = control_plane.create(
        org, "verified", SECRET, ssl_mode=pb.SSL_MODE_VERIFY_FULL, ssl_root_cert=CA_PEM
    )
    before = _raw_row(control_plane, created.id)
    with pytest.raises(grpc.RpcError) as caught:
        _update(control_plane.connections(org.admin_token), created.id, paths, fields=fields)
    details = error_details(caught.value)
    assert (details.code, details.field) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "connection.fields.ssl_root_cert",
    )
    assert rule in details.message.lower()
    assert _raw_row(control_plane, created.id) == before


def test_a_switch_to_a_verify_mode_without_a_bundle_is_refused(
    control_plane: ControlPlane,
) -> None:
    """A require connection moved to verify-ca must bring its bundle; nothing changes else."""
    org = control_plane.auth.create_org()
    created = control_plane.create(org, "plain-tls", SECRET)
    before = _raw_row(control_plane, created.id)
    with pytest.raises(grpc.RpcError) as caught:
        _update(
            control_plane.connections(org.admin_token),
            created.id,
            ["fields.ssl_mode"],
            fields=pb.PostgresFields(ssl_mode=pb.SSL_MODE_VERIFY_CA),
        )
    details = error_details(caught.value)
    assert details.field == "connection.fields.ssl_root_cert"
    assert "required with SSL mode verify-ca" in details.message
    assert _raw_row(control_plane, created.id) == before
