"""Workload identities over a real auth service (TLS on loopback) and a real Postgres.

Create, list, get, update and revoke as an admin; members and other orgs refused; the token
shown once and stored only as a hash; the exchange for a workload bearer whose verified
Principal carries the grants; that bearer refused where an agent or user is required; and a
revoked (or re-granted) workload's bearer refused within a verifier's refresh interval, measured
in another process.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2
from psycopg import sql

from devstack.pki import DevPki
from services.auth.server import AuthApp
from services.auth.workload_store import WorkloadSecretRow, WorkloadStore
from sevvo.auth.v1 import (
    auth_pb2,
    deployments_pb2,
    users_pb2,
    workloads_pb2,
    workloads_pb2_grpc,
)
from sevvo.runtime.credential_token import WORKLOAD_TOKEN
from sevvo.runtime.errors import Unauthenticated
from sevvo.runtime.grpc_client import ClientTls, error_details
from sevvo.runtime.grpc_server import start_server
from sevvo.runtime.logs import configure_logging
from sevvo.runtime.tokens import PrincipalKind
from sevvo.runtime.workload_grants import Grant
from tests.plugins.auth_stack import AuthStack, BackgroundLoop, Org, auth_config
from tests.plugins.log_setup import configure_test_logging

REPORTING_DB = "3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10"
BILLING_DB = "0b0c3a4e-2f7e-4d8c-a1a4-7e3c5a3b9f10"
# Verifiers outside auth poll it at this cadence in production (SEVVO_TOKEN_REFRESH_SECONDS).
PRODUCTION_REFRESH_SECONDS = 2.0
# DESIGN.md: revocation takes effect "within seconds"; a verifier fails closed after 5 s stale.
BOUND_SECONDS = 5.0


def _grant(connection_id: str, role: str) -> workloads_pb2.WorkloadGrant:
    return workloads_pb2.WorkloadGrant(connection_id=connection_id, role=role)


def _service(stack: AuthStack, bearer: str) -> workloads_pb2_grpc.WorkloadServiceStub:
    return workloads_pb2_grpc.WorkloadServiceStub(stack.channel(bearer))


def _create(
    stack: AuthStack,
    org: Org,
    name: str = "reporting-service",
    grants: tuple[workloads_pb2.WorkloadGrant, ...] = (_grant(REPORTING_DB, "readonly"),),
    max_ttl_seconds: int = 7200,
) -> workloads_pb2.CreateWorkloadResponse:
    response: workloads_pb2.CreateWorkloadResponse = _service(
        stack, org.admin_token
    ).CreateWorkload(
        workloads_pb2.CreateWorkloadRequest(
            display_name=name,
            description="counts orders every night",
            grants=grants,
            max_ttl_seconds=max_ttl_seconds,
        )
    )
    return response


def _exchange(stack: AuthStack, token: str) -> auth_pb2.ExchangeWorkloadTokenResponse:
    response: auth_pb2.ExchangeWorkloadTokenResponse = stack.auth().ExchangeWorkloadToken(
        auth_pb2.ExchangeWorkloadTokenRequest(workload_token=token)
    )
    return response


def _refusal(call: Callable[[], object]) -> tuple[grpc.StatusCode, str | None, str | None]:
    """The code, reason and field of a call that must fail."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    details = error_details(caught.value)
    return details.code, details.reason, (details.metadata or {}).get("field")


def _member_session(stack: AuthStack, org: Org) -> str:
    email, password = f"m-{uuid.uuid4().hex[:8]}@acme.example", secrets.token_urlsafe(18)
    stack.users(org.admin_token).CreateUser(
        users_pb2.CreateUserRequest(email=email, password=password)
    )
    return str(
        stack.auth().SignIn(auth_pb2.SignInRequest(email=email, password=password)).session_token
    )


def _audit(database_url: str, workload_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "select action, actor_kind, outcome, reason, details from audit.events"
            " where target_id = %s order by occurred_at, id",
            (workload_id,),
        ).fetchall()


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Everything the process logs during the test, at DEBUG, through the real pipeline."""
    stream = io.StringIO()
    configure_logging("tests", level="DEBUG", json=True, stream=stream)
    yield stream
    configure_test_logging()


# --- create, list, get -------------------------------------------------------------------------


def test_create_shows_the_token_once_and_get_and_list_show_the_workload(
    auth_stack: AuthStack,
) -> None:
    """CreateWorkload returns a sevvo_wt_ token; Get and List show the workload, never a token."""
    org = auth_stack.create_org()
    created = _create(
        auth_stack,
        org,
        grants=(_grant(REPORTING_DB, "readonly"), _grant(BILLING_DB, "etl")),
    )
    assert created.workload_token.startswith("sevvo_wt_")
    workload = created.workload
    assert workload.org_id == org.org_id
    assert workload.display_name == "reporting-service"
    assert workload.state == workloads_pb2.WORKLOAD_STATE_ACTIVE
    assert workload.max_ttl_seconds == 7200
    # Sorted by connection id, then role: a stable order whatever the request's.
    assert [(g.connection_id, g.role) for g in workload.grants] == [
        (BILLING_DB, "etl"),
        (REPORTING_DB, "readonly"),
    ]
    caller = auth_stack.auth(org.admin_token).GetCaller(auth_pb2.GetCallerRequest())
    assert workload.creator_user_id == caller.subject_id
    assert not workload.HasField("revoke_time")

    stub = _service(auth_stack, org.admin_token)
    fetched = stub.GetWorkload(workloads_pb2.GetWorkloadRequest(id=workload.id))
    assert fetched == workload
    listed = stub.ListWorkloads(workloads_pb2.ListWorkloadsRequest())
    assert [w.id for w in listed.workloads] == [workload.id]
    assert created.workload_token not in str(fetched) + str(listed)


def test_list_pages_through_the_orgs_workloads_oldest_first(auth_stack: AuthStack) -> None:
    """page_size and next_page_token walk every workload once, in creation order."""
    org = auth_stack.create_org()
    ids = [_create(auth_stack, org, name=f"service-{i}").workload.id for i in range(5)]
    stub = _service(auth_stack, org.admin_token)
    seen: list[str] = []
    token = ""
    for _ in range(5):
        page = stub.ListWorkloads(workloads_pb2.ListWorkloadsRequest(page_size=2, page_token=token))
        assert len(page.workloads) <= 2
        seen += [w.id for w in page.workloads]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids


def test_bad_input_names_the_field_and_stores_nothing(auth_stack: AuthStack) -> None:
    """Each invalid CreateWorkload is INVALID_ARGUMENT naming the field; nothing is created."""
    org = auth_stack.create_org()
    stub = _service(auth_stack, org.admin_token)
    good: dict[str, Any] = {
        "display_name": "svc",
        "grants": [_grant(REPORTING_DB, "readonly")],
        "max_ttl_seconds": 3600,
    }
    cases: list[tuple[dict[str, Any], str]] = [
        ({"display_name": "  "}, "display_name"),
        ({"display_name": "x" * 101}, "display_name"),
        ({"description": "y" * 1001}, "description"),
        ({"description": "bell\x07"}, "description"),
        ({"grants": []}, "grants"),
        ({"grants": [_grant("reporting-db", "readonly")]}, "grants[0].connection_id"),
        (
            {"grants": [_grant(REPORTING_DB, "readonly"), _grant(BILLING_DB, "Read-Only")]},
            "grants[1].role",
        ),
        ({"grants": [_grant(REPORTING_DB, "")]}, "grants[0].role"),
        (
            {"grants": [_grant(str(uuid.uuid4()), "readonly") for _ in range(101)]},
            "grants",
        ),
        ({"max_ttl_seconds": 0}, "max_ttl_seconds"),
        ({"max_ttl_seconds": 59}, "max_ttl_seconds"),
        ({"max_ttl_seconds": 86_401}, "max_ttl_seconds"),
        ({"max_ttl_seconds": -1}, "max_ttl_seconds"),
    ]
    for change, field in cases:
        request = workloads_pb2.CreateWorkloadRequest(**{**good, **change})
        code, reason, named = _refusal(partial(stub.CreateWorkload, request))
        assert (code, named) == (grpc.StatusCode.INVALID_ARGUMENT, field), change
        assert reason == "INVALID_ARGUMENT"
    assert not stub.ListWorkloads(workloads_pb2.ListWorkloadsRequest()).workloads
    # The bounds themselves are accepted.
    for ttl in (60, 86_400):
        assert _create(auth_stack, org, max_ttl_seconds=ttl).workload.max_ttl_seconds == ttl


def test_members_are_refused_every_workload_method(auth_stack: AuthStack) -> None:
    """A member's session gets PERMISSION_DENIED from every WorkloadService method."""
    org = auth_stack.create_org()
    workload = _create(auth_stack, org).workload
    stub = _service(auth_stack, _member_session(auth_stack, org))
    calls: list[Callable[[], object]] = [
        lambda: stub.CreateWorkload(
            workloads_pb2.CreateWorkloadRequest(
                display_name="mine", grants=[_grant(REPORTING_DB, "readonly")], max_ttl_seconds=60
            )
        ),
        lambda: stub.GetWorkload(workloads_pb2.GetWorkloadRequest(id=workload.id)),
        lambda: stub.ListWorkloads(workloads_pb2.ListWorkloadsRequest()),
        lambda: stub.UpdateWorkload(
            workloads_pb2.UpdateWorkloadRequest(
                id=workload.id,
                workload=workloads_pb2.WorkloadUpdate(max_ttl_seconds=86_400),
                update_mask=field_mask_pb2.FieldMask(paths=["max_ttl_seconds"]),
            )
        ),
        lambda: stub.RevokeWorkload(workloads_pb2.RevokeWorkloadRequest(id=workload.id)),
    ]
    for call in calls:
        assert _refusal(call)[0] == grpc.StatusCode.PERMISSION_DENIED
    admin = _service(auth_stack, org.admin_token)
    unchanged = admin.GetWorkload(workloads_pb2.GetWorkloadRequest(id=workload.id))
    assert unchanged == workload


def test_another_orgs_admin_can_neither_see_nor_change_a_workload(auth_stack: AuthStack) -> None:
    """Org B's admin gets NOT_FOUND for org A's workload (as for a random id) and lists none."""
    org_a, org_b = auth_stack.create_org("Acme"), auth_stack.create_org("Globex")
    created = _create(auth_stack, org_a)
    workload = created.workload
    theirs = _create(auth_stack, org_b, name="globex-service").workload
    assert theirs.org_id == org_b.org_id  # From B's session: the request names no org.
    stub = _service(auth_stack, org_b.admin_token)
    for workload_id in (workload.id, str(uuid.uuid4())):
        calls: list[Callable[[], object]] = [
            partial(stub.GetWorkload, workloads_pb2.GetWorkloadRequest(id=workload_id)),
            partial(
                stub.UpdateWorkload,
                workloads_pb2.UpdateWorkloadRequest(
                    id=workload_id,
                    workload=workloads_pb2.WorkloadUpdate(display_name="hijacked"),
                    update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
                ),
            ),
            partial(stub.RevokeWorkload, workloads_pb2.RevokeWorkloadRequest(id=workload_id)),
        ]
        for call in calls:
            assert _refusal(call)[:2] == (grpc.StatusCode.NOT_FOUND, "WORKLOAD_NOT_FOUND")
    listed = stub.ListWorkloads(workloads_pb2.ListWorkloadsRequest()).workloads
    assert [w.id for w in listed] == [theirs.id]
    untouched = _service(auth_stack, org_a.admin_token).GetWorkload(
        workloads_pb2.GetWorkloadRequest(id=workload.id)
    )
    assert untouched == workload
    assert _exchange(auth_stack, created.workload_token).workload_id == workload.id


# --- the token --------------------------------------------------------------------------------


def _all_rows_as_text(database_url: str, schemas: tuple[str, ...]) -> str:
    """Every row of every table in ``schemas``, as Postgres renders rows to text."""
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "select table_schema, table_name from information_schema.tables"
            " where table_schema = any(%s) and table_type = 'BASE TABLE'",
            (list(schemas),),
        ).fetchall()
        assert ("auth", "workloads") in tables
        texts = []
        for schema, table in tables:
            query = sql.SQL("select t::text from {}.{} t").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            texts += [row[0] for row in conn.execute(query).fetchall()]
    return "\n".join(texts)


def test_the_token_is_stored_only_as_a_hash_and_never_logged(
    auth_stack: AuthStack, database_url: str, captured_logs: io.StringIO
) -> None:
    """Neither the token nor its secret is in any auth or audit table, or in the logs."""
    org = auth_stack.create_org()
    created = _create(auth_stack, org)
    token = created.workload_token
    _exchange(auth_stack, token)
    credentials = WORKLOAD_TOKEN.unwrap(token)
    with pytest.raises(grpc.RpcError):
        _exchange(
            auth_stack, WORKLOAD_TOKEN.wrap(type(credentials)(credentials.subject_id, "x" * 43))
        )

    stored = _all_rows_as_text(database_url, ("auth", "audit"))
    assert created.workload.id in stored
    for secret in (token, credentials.secret, token.removeprefix("sevvo_wt_")):
        assert secret not in stored
        assert secret not in captured_logs.getvalue()
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "select secret_hash from auth.workloads where id = %s", (created.workload.id,)
        ).fetchone()
    assert row is not None
    assert bytes(row[0]) == hashlib.sha256(credentials.secret.encode()).digest()
    assert "workload created" in captured_logs.getvalue()


def test_exchange_gives_a_bearer_whose_principal_carries_the_grants(
    auth_stack: AuthStack,
) -> None:
    """The bearer verifies as a WORKLOAD principal with org, subject, grants and max TTL."""
    org = auth_stack.create_org()
    created = _create(
        auth_stack,
        org,
        grants=(_grant(REPORTING_DB, "readonly"), _grant(REPORTING_DB, "etl")),
        max_ttl_seconds=5400,
    )
    exchanged = _exchange(auth_stack, created.workload_token)
    assert (exchanged.org_id, exchanged.workload_id) == (org.org_id, created.workload.id)
    assert list(exchanged.grants) == list(created.workload.grants)
    assert exchanged.max_ttl_seconds == 5400
    lifetime = exchanged.expire_time.seconds - time.time()
    assert 240 < lifetime <= 300  # Five minutes, the default workload bearer lifetime.

    principal = auth_stack.app.verifier.verify(exchanged.bearer_token, PrincipalKind.WORKLOAD)
    assert principal.kind is PrincipalKind.WORKLOAD
    assert (principal.org_id, principal.subject_id) == (org.org_id, created.workload.id)
    assert principal.grants == (Grant(REPORTING_DB, "etl"), Grant(REPORTING_DB, "readonly"))
    assert principal.max_ttl_seconds == 5400
    assert not principal.is_admin
    second = _exchange(auth_stack, created.workload_token)
    assert second.bearer_token != exchanged.bearer_token


def test_a_workload_bearer_is_refused_where_a_user_or_agent_is_required(
    auth_stack: AuthStack,
) -> None:
    """Its own audience: TOKEN_WRONG_AUDIENCE from user, admin and agent methods alike."""
    org = auth_stack.create_org()
    bearer = _exchange(auth_stack, _create(auth_stack, org).workload_token).bearer_token
    calls: list[Callable[[], object]] = [
        lambda: auth_stack.auth(bearer).GetCaller(auth_pb2.GetCallerRequest()),
        lambda: auth_stack.deployments(bearer).ListDeployments(
            deployments_pb2.ListDeploymentsRequest()
        ),
        lambda: _service(auth_stack, bearer).ListWorkloads(workloads_pb2.ListWorkloadsRequest()),
    ]
    for call in calls:
        assert _refusal(call)[:2] == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_WRONG_AUDIENCE")
    verifier = auth_stack.app.verifier
    for kind in (PrincipalKind.AGENT, PrincipalKind.USER):
        with pytest.raises(Unauthenticated) as caught:
            verifier.verify(bearer, kind)
        assert caught.value.reason == "TOKEN_WRONG_AUDIENCE"
    # And the reverse: an agent bearer is no workload bearer.
    _, deployment_token = auth_stack.new_deployment(org)
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(auth_stack.agent_bearer(deployment_token), PrincipalKind.WORKLOAD)
    assert caught.value.reason == "TOKEN_WRONG_AUDIENCE"


def test_a_wrong_or_malformed_token_is_refused_and_the_wrong_one_audited(
    auth_stack: AuthStack, database_url: str
) -> None:
    """A wrong secret is UNAUTHENTICATED (audited in the workload's org); garbage is invalid."""
    org = auth_stack.create_org()
    created = _create(auth_stack, org)
    credentials = WORKLOAD_TOKEN.unwrap(created.workload_token)
    wrong = WORKLOAD_TOKEN.wrap(
        type(credentials)(credentials.subject_id, secrets.token_urlsafe(32))
    )
    unknown = WORKLOAD_TOKEN.wrap(type(credentials)(str(uuid.uuid4()), credentials.secret))
    for token in (wrong, unknown):
        assert _refusal(partial(_exchange, auth_stack, token))[:2] == (
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_WORKLOAD_TOKEN",
        )
    for garbage in ("", "sevvo_wt_short", created.workload_token.replace("sevvo_wt_", "sevvo_dt_")):
        code, _, field = _refusal(partial(_exchange, auth_stack, garbage))
        assert (code, field) == (grpc.StatusCode.INVALID_ARGUMENT, "workload_token")
    records = _audit(database_url, created.workload.id)
    refused = [r for r in records if r[0] == "workload.token.exchange"]
    assert [(r[1], r[2], r[3]) for r in refused] == [
        ("workload", "failure", "INVALID_WORKLOAD_TOKEN")
    ]
    assert set(refused[0][4]) == {"source"}
    # The right token still works: one wrong guess locks nobody out.
    assert _exchange(auth_stack, created.workload_token).workload_id == created.workload.id


def test_repeated_failures_from_one_address_are_slowed(auth_stack: AuthStack) -> None:
    """After the free failures, even the right token waits: WORKLOAD_EXCHANGE_BACKOFF."""
    org = auth_stack.create_org()
    created = _create(auth_stack, org)
    credentials = WORKLOAD_TOKEN.unwrap(created.workload_token)
    wrong = WORKLOAD_TOKEN.wrap(
        type(credentials)(credentials.subject_id, secrets.token_urlsafe(32))
    )
    free = auth_stack.app.config.sign_in_limits.free_failures
    for _ in range(free):
        assert _refusal(lambda: _exchange(auth_stack, wrong))[1] == "INVALID_WORKLOAD_TOKEN"
    code, reason, _ = _refusal(lambda: _exchange(auth_stack, created.workload_token))
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "WORKLOAD_EXCHANGE_BACKOFF")
    # Another workload, from the same address, is not held back by this one's failures.
    other = _create(auth_stack, org, name="other-service")
    assert _exchange(auth_stack, other.workload_token).workload_id == other.workload.id


# --- update and revoke --------------------------------------------------------------------------


def _update(
    stack: AuthStack, org: Org, workload_id: str, paths: list[str], **values: Any
) -> workloads_pb2.Workload:
    workload: workloads_pb2.Workload = _service(stack, org.admin_token).UpdateWorkload(
        workloads_pb2.UpdateWorkloadRequest(
            id=workload_id,
            workload=workloads_pb2.WorkloadUpdate(**values),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        )
    )
    return workload


def test_update_changes_only_the_masked_fields(auth_stack: AuthStack) -> None:
    """A rename keeps grants, TTL and outstanding bearers; the update time is set."""
    org = auth_stack.create_org()
    created = _create(auth_stack, org)
    bearer = _exchange(auth_stack, created.workload_token).bearer_token
    renamed = _update(
        auth_stack, org, created.workload.id, ["display_name"], display_name="nightly-report"
    )
    assert renamed.display_name == "nightly-report"
    assert renamed.grants == created.workload.grants
    assert renamed.max_ttl_seconds == created.workload.max_ttl_seconds
    assert renamed.description == created.workload.description
    assert renamed.HasField("update_time")
    auth_stack.app.verifier.refresh()
    assert auth_stack.app.verifier.verify(bearer, PrincipalKind.WORKLOAD).subject_id == renamed.id


def test_regranting_voids_outstanding_bearers_and_the_next_exchange_carries_the_new_grants(
    auth_stack: AuthStack,
) -> None:
    """New grants or TTL: the old bearer is WORKLOAD_CHANGED at once in auth; a new one works."""
    org = auth_stack.create_org()
    created = _create(
        auth_stack, org, grants=(_grant(REPORTING_DB, "readonly"), _grant(BILLING_DB, "etl"))
    )
    old = _exchange(auth_stack, created.workload_token).bearer_token
    updated = _update(
        auth_stack,
        org,
        created.workload.id,
        ["grants", "max_ttl_seconds"],
        grants=[_grant(REPORTING_DB, "readonly")],
        max_ttl_seconds=600,
    )
    assert [(g.connection_id, g.role) for g in updated.grants] == [(REPORTING_DB, "readonly")]
    verifier = auth_stack.app.verifier
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(old, PrincipalKind.WORKLOAD)
    assert caught.value.reason == "WORKLOAD_CHANGED"
    fresh = _exchange(auth_stack, created.workload_token)
    principal = verifier.verify(fresh.bearer_token, PrincipalKind.WORKLOAD)
    assert principal.grants == (Grant(REPORTING_DB, "readonly"),)
    assert principal.max_ttl_seconds == 600


def test_a_bad_update_changes_nothing(auth_stack: AuthStack) -> None:
    """Bad values or masks are INVALID_ARGUMENT naming the field; the workload stays as it was."""
    org = auth_stack.create_org()
    workload = _create(auth_stack, org).workload
    stub = _service(auth_stack, org.admin_token)
    cases: list[tuple[list[str], dict[str, Any], str]] = [
        ([], {"display_name": "x"}, "update_mask"),
        (["secret_hash"], {}, "update_mask"),
        (["display_name", "org_id"], {"display_name": "x"}, "update_mask"),
        (["display_name", "grants"], {"display_name": "ok", "grants": []}, "workload.grants"),
        (
            ["grants"],
            {"grants": [_grant(REPORTING_DB, "readonly"), _grant(REPORTING_DB, "9")]},
            "workload.grants[1].role",
        ),
        (["max_ttl_seconds"], {"max_ttl_seconds": 86_401}, "workload.max_ttl_seconds"),
        (["display_name"], {"display_name": ""}, "workload.display_name"),
    ]
    for paths, values, field in cases:
        request = workloads_pb2.UpdateWorkloadRequest(
            id=workload.id,
            workload=workloads_pb2.WorkloadUpdate(**values),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        )
        code, _, named = _refusal(partial(stub.UpdateWorkload, request))
        assert (code, named) == (grpc.StatusCode.INVALID_ARGUMENT, field), paths
    assert stub.GetWorkload(workloads_pb2.GetWorkloadRequest(id=workload.id)) == workload


def test_revoked_workload_cannot_exchange_or_be_updated_and_revoking_again_keeps_the_time(
    auth_stack: AuthStack,
) -> None:
    """After RevokeWorkload: WORKLOAD_REVOKED at the next exchange, and on update."""
    org = auth_stack.create_org()
    created = _create(auth_stack, org)
    _exchange(auth_stack, created.workload_token)  # Cached from now on.
    stub = _service(auth_stack, org.admin_token)
    revoked = stub.RevokeWorkload(workloads_pb2.RevokeWorkloadRequest(id=created.workload.id))
    assert revoked.state == workloads_pb2.WORKLOAD_STATE_REVOKED
    assert revoked.HasField("revoke_time")
    assert _refusal(lambda: _exchange(auth_stack, created.workload_token))[:2] == (
        grpc.StatusCode.UNAUTHENTICATED,
        "WORKLOAD_REVOKED",
    )
    again = stub.RevokeWorkload(workloads_pb2.RevokeWorkloadRequest(id=created.workload.id))
    assert again.revoke_time == revoked.revoke_time
    code, reason, _ = _refusal(
        lambda: _update(
            auth_stack, org, created.workload.id, ["display_name"], display_name="back again"
        )
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "WORKLOAD_REVOKED")


def test_every_change_and_refused_exchange_is_audited(
    auth_stack: AuthStack, database_url: str
) -> None:
    """create, update, revoke and refused exchanges each leave one record, with no secret."""
    org = auth_stack.create_org()
    created = _create(auth_stack, org)
    workload_id = created.workload.id
    _update(auth_stack, org, workload_id, ["max_ttl_seconds"], max_ttl_seconds=900)
    _update(auth_stack, org, workload_id, ["max_ttl_seconds"], max_ttl_seconds=900)  # No change.
    _service(auth_stack, org.admin_token).RevokeWorkload(
        workloads_pb2.RevokeWorkloadRequest(id=workload_id)
    )
    _service(auth_stack, org.admin_token).RevokeWorkload(
        workloads_pb2.RevokeWorkloadRequest(id=workload_id)
    )
    with pytest.raises(grpc.RpcError):
        _exchange(auth_stack, created.workload_token)
    records = _audit(database_url, workload_id)
    assert [(r[0], r[1], r[2], r[3]) for r in records] == [
        ("workload.create", "user", "success", None),
        ("workload.update", "user", "success", None),
        ("workload.revoke", "user", "success", None),
        ("workload.token.exchange", "workload", "failure", "WORKLOAD_REVOKED"),
    ]
    create_details, update_details = records[0][4], records[1][4]
    assert create_details == {
        "display_name": "reporting-service",
        "grants": f"{REPORTING_DB}:readonly",
        "max_ttl_seconds": "7200",
    }
    assert update_details == {"fields": "max_ttl_seconds", "max_ttl_seconds": "900"}
    assert created.workload_token.removeprefix("sevvo_wt_") not in json.dumps(
        [r[4] for r in records]
    )


# --- revocation reaches every verifier ----------------------------------------------------------

_VERIFIER_PROCESS = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from sevvo.runtime.auth_client import remote_verifier
    from sevvo.runtime.errors import Unauthenticated
    from sevvo.runtime.grpc_client import ClientTls
    from sevvo.runtime.logs import configure_logging
    from sevvo.runtime.tokens import PrincipalKind

    configure_logging("verifier", level="WARNING", json=True, stream=sys.stderr)
    target, ca_file, refresh = sys.argv[1], sys.argv[2], float(sys.argv[3])
    bearer = sys.stdin.readline().strip()
    verifier, channel = remote_verifier(
        target, ClientTls(ca_file=Path(ca_file)), refresh_seconds=refresh, leeway_seconds=10
    )
    verifier.start()
    print("accepted", verifier.verify(bearer, PrincipalKind.WORKLOAD).subject_id, flush=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            verifier.verify(bearer, PrincipalKind.WORKLOAD)
        except Unauthenticated as refused:
            print("refused", repr(time.time()), refused.reason, flush=True)
            break
        time.sleep(0.01)
    verifier.stop()
    channel.close()
    """
)


@pytest.mark.parametrize("change", ["revoke", "regrant"])
def test_a_verifier_in_another_process_refuses_the_bearer_within_its_refresh_interval(
    auth_stack: AuthStack, dev_pki: DevPki, change: str
) -> None:
    """Revoked (or re-granted) workload: a remote verifier polling every 2 s refuses in < 5 s."""
    org = auth_stack.create_org()
    created = _create(auth_stack, org)
    bearer = _exchange(auth_stack, created.workload_token).bearer_token
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _VERIFIER_PROCESS,
            auth_stack.target,
            str(dev_pki.ca_cert),
            str(PRODUCTION_REFRESH_SECONDS),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(bearer + "\n")
        process.stdin.flush()
        assert process.stdout.readline().split() == ["accepted", created.workload.id]
        started = time.time()
        if change == "revoke":
            _service(auth_stack, org.admin_token).RevokeWorkload(
                workloads_pb2.RevokeWorkloadRequest(id=created.workload.id)
            )
        else:
            _update(auth_stack, org, created.workload.id, ["max_ttl_seconds"], max_ttl_seconds=60)
        outcome = process.stdout.readline().split()
    finally:
        _, errors = process.communicate(timeout=40)
    assert outcome[:1] == ["refused"], errors
    seconds = float(outcome[1]) - started
    expected = "WORKLOAD_REVOKED" if change == "revoke" else "WORKLOAD_CHANGED"
    assert outcome[2] == expected
    print(f"\nworkload {change}: refused by another process's verifier after {seconds:.2f} s")
    assert 0 < seconds < BOUND_SECONDS


# --- the exchange cache, across replicas ------------------------------------------------------


@pytest.fixture
def workload_reads(monkeypatch: pytest.MonkeyPatch) -> list[uuid.UUID]:
    """Every workload the exchange reads from Postgres, in every replica of the test."""
    reads: list[uuid.UUID] = []
    original = WorkloadStore.secret

    def counted(store: WorkloadStore, workload_id: uuid.UUID) -> WorkloadSecretRow | None:
        reads.append(workload_id)
        return original(store, workload_id)

    monkeypatch.setattr(WorkloadStore, "secret", counted)
    return reads


@pytest.fixture
def replicas(
    database_url: str,
    dev_pki: DevPki,
    background_loop: BackgroundLoop,
    workload_reads: list[uuid.UUID],
) -> Iterator[list[AuthStack]]:
    """Two auth replicas sharing one database and key-encryption key, caches listening."""
    kek = secrets.token_bytes(32)
    running: list[tuple[AuthApp, grpc.aio.Server]] = []
    stacks = []
    try:
        for _ in range(2):
            config = auth_config(database_url, dev_pki, kek)
            app = AuthApp(config)
            app.open()
            server, port = background_loop.run(
                start_server([app.spec()], verifier=app.verifier, tls=config.tls, port=0)
            )
            running.append((app, server))
            stacks.append(AuthStack(app, f"localhost:{port}", ClientTls(ca_file=dev_pki.ca_cert)))
        deadline = time.monotonic() + 10
        while not all(s.app.workload_cache.trusted for s in stacks):
            assert time.monotonic() < deadline, "the workload caches never started listening"
            time.sleep(0.02)
        yield stacks
    finally:
        for app, server in reversed(running):
            background_loop.run(server.stop(grace=1))
            app.close()


def test_exchanges_are_served_from_memory_and_a_revocation_elsewhere_reaches_them(
    replicas: list[AuthStack], workload_reads: list[uuid.UUID]
) -> None:
    """One read per workload per replica; a revocation on one replica is refused on the other."""
    first, second = replicas
    org = first.create_org()
    created = _create(first, org)
    for _ in range(5):
        _exchange(second, created.workload_token)
    assert workload_reads == [uuid.UUID(created.workload.id)]
    _service(first, org.admin_token).RevokeWorkload(
        workloads_pb2.RevokeWorkloadRequest(id=created.workload.id)
    )
    started = time.monotonic()
    reason = None
    while time.monotonic() - started < 5:
        try:
            _exchange(second, created.workload_token)
        except grpc.RpcError as error:
            reason = error_details(error).reason
            break
        time.sleep(0.01)
    assert reason == "WORKLOAD_REVOKED"
    assert time.monotonic() - started < 1.5  # The cache's own bound (TRUST_SECONDS).


def test_deployment_tokens_and_workload_tokens_are_not_interchangeable(
    auth_stack: AuthStack,
) -> None:
    """A deployment token is no workload token, and the reverse, whatever the secret."""
    org = auth_stack.create_org()
    workload_token = _create(auth_stack, org).workload_token
    _, deployment_token = auth_stack.new_deployment(org)
    assert _refusal(lambda: _exchange(auth_stack, deployment_token))[2] == "workload_token"
    assert _refusal(lambda: auth_stack.agent_bearer(workload_token))[2] == "deployment_token"
