"""End to end: payload keys rotate on revocation and by an admin, against the real stack.

The histories are read raw from the Temporal dev server (no codec) while the work runs, and
every encrypted payload is tried against every key the revoked deployment was ever given.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from devstack.postgres import EmbeddedPostgres
from sevvo.auth.v1 import auth_pb2, auth_pb2_grpc, deployments_pb2
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.orchestrator.v1 import orchestrator_pb2_grpc as opb_grpc
from sevvo.runtime import temporal
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.payload_codec import (
    ENCODING,
    KEY_ID_METADATA,
    EncryptionCodec,
    OrgPayloadKeys,
    PayloadKey,
    PayloadUnreadable,
)
from sevvo.runtime.tokens import Principal, PrincipalKind
from sevvo.workflows.v1 import workflows_pb2 as wpb
from tests.cli_runner import run_sevvo, user_env
from tests.plugins.auth_stack import PASSWORD
from tests.plugins.dev_stack import EndToEnd, Tenant
from tests.plugins.source_db import SourceTargetFactory

SLOW_PREVIEW = "select pg_sleep(2) as slept, count(*) as orders from orders"


@dataclass
class Shop:
    """A tenant with its agent and a saved connection to a seeded database."""

    tenant: Tenant
    connection_id: str


@pytest.fixture
def shop(
    e2e: EndToEnd, tls_source_pg: EmbeddedPostgres, source_target: SourceTargetFactory
) -> Shop:
    """A fresh tenant, its agent, and a tested connection."""
    tenant = e2e.new_tenant()
    created = e2e.connections(tenant.admin_token).CreateConnection(
        cpb.CreateConnectionRequest(
            display_name="shop", fields=e2e.fields(source_target(tls_source_pg))
        )
    )
    assert created.status == cpb.CONNECTION_STATUS_CONNECTED
    return Shop(tenant, created.id)


def _keys_of(e2e: EndToEnd, bearer: str) -> opb_grpc.PayloadKeyServiceStub:
    return opb_grpc.PayloadKeyServiceStub(e2e._channel(bearer))


def _bearer(e2e: EndToEnd, deployment_token: str) -> str:
    exchanged = auth_pb2_grpc.AuthServiceStub(e2e._channel(None)).ExchangeDeploymentToken(
        auth_pb2.ExchangeDeploymentTokenRequest(deployment_token=deployment_token)
    )
    return str(exchanged.bearer_token)


def _current_key(e2e: EndToEnd, org_id: str) -> PayloadKey:
    return e2e.stack.orchestrator.payload_keys.fresh(uuid.UUID(org_id)).current()


def _payloads(message: Message) -> Iterator[Payload]:
    """Every Payload anywhere inside a history event."""
    if isinstance(message, Payload):
        yield message
        return
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            values = list(value.values())
        elif field.is_repeated:
            values = list(value)
        else:
            values = [value]
        for item in values:
            if isinstance(item, Message):
                yield from _payloads(item)


@dataclass
class Captured:
    """What the caller got back, and the encrypted payloads the server stored for the run."""

    response: Any
    # Each encrypted payload with the type of the history event that holds it.
    events: list[tuple[EventType.ValueType, Payload]]

    @property
    def payloads(self) -> list[Payload]:
        """Every encrypted payload."""
        return [payload for _, payload in self.events]

    def written_by_the_work(self) -> list[Payload]:
        """The payloads of the run itself: its input, the agent's results, its outcome.

        Left out are workflow-task failures, which a poller that could not read the task
        writes about itself (a revoked agent still polling until it notices, under its old key).
        """
        return [p for kind, p in self.events if kind != EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]


def _run_and_capture(
    e2e: EndToEnd,
    org_id: str,
    call: Callable[[], Any],
    *,
    while_running: Callable[[], None] = lambda: None,
) -> Captured:
    """Makes ``call`` (which starts one preview), follows its history raw until it closes,
    and runs ``while_running`` once the workflow exists on the server."""

    async def follow() -> Captured:
        client = await Client.connect(
            e2e.stack.temporal_address, namespace=temporal.namespace_for(org_id)
        )
        query = (
            f"TaskQueue = '{temporal.task_queue(org_id)}'"
            f" AND WorkflowType = '{temporal.PREVIEW_WORKFLOW}'"
        )
        before = {w.id async for w in client.list_workflows(query)}
        outcome: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: outcome.update(response=call()))
        worker.start()
        workflow_id = None
        for _ in range(200):
            found = [w.id async for w in client.list_workflows(query) if w.id not in before]
            if found:
                workflow_id = found[0]
                break
            await asyncio.sleep(0.02)
        assert workflow_id is not None, "the preview never appeared on the server"
        await asyncio.to_thread(while_running)
        events = [
            event
            async for event in client.get_workflow_handle(workflow_id).fetch_history_events(
                wait_new_event=True
            )
        ]
        await asyncio.to_thread(worker.join, 60)
        encrypted = [
            (event.event_type, p)
            for event in events
            for p in _payloads(event)
            if p.metadata.get("encoding") == ENCODING
        ]
        return Captured(outcome["response"], encrypted)

    return asyncio.run(follow())


def _preview(e2e: EndToEnd, shop: Shop, sql: str) -> Callable[[], opb.PreviewQueryResponse]:
    def call() -> opb.PreviewQueryResponse:
        response: opb.PreviewQueryResponse = e2e.orchestrator(shop.tenant.admin_token).PreviewQuery(
            opb.PreviewQueryRequest(connection_id=shop.connection_id, sql=sql), timeout=120
        )
        return response

    return call


def _readable_with(org_id: str, key: PayloadKey, payload: Payload) -> bool:
    """Whether ``key``, under the id the payload names or under its own, decrypts it."""
    named = payload.metadata[KEY_ID_METADATA].decode()
    for label in {named, key.key_id}:
        relabelled = Payload()
        relabelled.CopyFrom(payload)
        relabelled.metadata[KEY_ID_METADATA] = label.encode()
        codec = EncryptionCodec(OrgPayloadKeys(org_id, [PayloadKey(label, key.key)], label))
        try:
            asyncio.run(codec.decode([relabelled]))
        except PayloadUnreadable:
            continue
        return True
    return False


def _decrypted(org_id: str, key: PayloadKey, payload: Payload) -> bytes:
    codec = EncryptionCodec(OrgPayloadKeys(org_id, [key], key.key_id))
    (plain,) = asyncio.run(codec.decode([payload]))
    return bytes(plain.SerializeToString())


def _audit(e2e: EndToEnd, org_id: str, action: str) -> list[tuple[str, str, str, str]]:
    with psycopg.connect(e2e.stack.database_url) as conn:
        rows = conn.execute(
            "select actor_kind, actor_id, target_id, coalesce(details->>'reason', '')"
            " from audit.events where org_id = %s and action = %s order by occurred_at",
            (org_id, action),
        ).fetchall()
    return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]


def test_a_preview_after_revocation_is_unreadable_with_every_key_the_deployment_held(
    e2e: EndToEnd, shop: Shop
) -> None:
    """Revoke one deployment: the next preview's history resists all its keys; the other serves."""
    tenant = shop.tenant
    created = e2e.deployments(tenant.admin_token).CreateDeployment(
        deployments_pb2.CreateDeploymentRequest(display_name="second-agent")
    )
    live = Tenant(
        tenant.org_id, tenant.admin_token, created.deployment.id, created.deployment_token
    )
    e2e.start_agent(live)
    revoked_bearer = _bearer(e2e, tenant.deployment_token)
    got = _keys_of(e2e, revoked_bearer).GetPayloadKeys(opb.GetPayloadKeysRequest())
    with psycopg.connect(e2e.stack.database_url) as conn:
        recorded = {
            row[0]
            for row in conn.execute(
                "select key_id from orchestrator.payload_key_fetches where deployment_id = %s",
                (tenant.deployment_id,),
            )
        }
    every_key = e2e.stack.orchestrator.payload_keys.fresh(uuid.UUID(tenant.org_id))
    held = [every_key.get(key_id) for key_id in recorded]
    assert {k.key_id for k in got.keys} <= recorded and held

    e2e.deployments(tenant.admin_token).RevokeDeployment(
        deployments_pb2.RevokeDeploymentRequest(id=tenant.deployment_id)
    )
    # Rotated before RevokeDeployment answered, on the admin's behalf (auth's call).
    current = _current_key(e2e, tenant.org_id)
    assert current.key_id not in recorded
    assert _audit(e2e, tenant.org_id, "payload_key.rotate") == [
        ("user", _admin_of(e2e, tenant).subject_id, current.key_id, "deployment_revoked")
    ]
    captured = _run_and_capture(e2e, tenant.org_id, _preview(e2e, shop, "select * from orders"))

    result = captured.response.result
    assert (result.category, len(result.rows)) == (wpb.PREVIEW_CATEGORY_OK, 100)
    assert len(captured.written_by_the_work()) >= 2  # The workflow's input and the rows.
    work = captured.written_by_the_work()
    attempts = [(key, payload) for key in held for payload in work]
    assert not [1 for key, payload in attempts if _readable_with(tenant.org_id, key, payload)]
    assert all(_readable_with(tenant.org_id, current, p) for p in work)
    # What the revoked agent wrote about itself (it could not read the task) holds no rows.
    cells = {cell.text for row in result.rows for cell in row.cells if len(cell.text) > 3}
    for payload in captured.payloads:
        for key in held:
            if _readable_with(tenant.org_id, key, payload):
                text = _decrypted(tenant.org_id, key, payload)
                assert not [cell for cell in cells if cell.encode() in text]
    with pytest.raises(grpc.RpcError) as refused:
        _keys_of(e2e, revoked_bearer).GetPayloadKeys(opb.GetPayloadKeysRequest())
    assert refused.value.code() in (
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert error_details(refused.value).reason == "DEPLOYMENT_REVOKED"


def test_a_revocation_auth_did_not_report_is_caught_by_the_orchestrators_own_check(
    e2e: EndToEnd,
) -> None:
    """A deployment revoked without auth's call (it failed) still has its key rotated, by system."""
    tenant = e2e.new_tenant(start_agent=False)
    bearer = _bearer(e2e, tenant.deployment_token)
    held = _keys_of(e2e, bearer).GetPayloadKeys(opb.GetPayloadKeysRequest()).current_key_id
    e2e.stack.auth.domain.revoke_deployment(_admin_of(e2e, tenant), tenant.deployment_id)
    for _ in range(100):
        if _current_key(e2e, tenant.org_id).key_id != held:
            break
        asyncio.run(asyncio.sleep(0.1))
    assert _current_key(e2e, tenant.org_id).key_id != held
    assert _audit(e2e, tenant.org_id, "payload_key.rotate") == [
        ("system", "sevvo", _current_key(e2e, tenant.org_id).key_id, "deployment_revoked")
    ]


def _admin_of(e2e: EndToEnd, tenant: Tenant) -> Principal:
    return e2e.stack.auth.verifier.verify(tenant.admin_token, PrincipalKind.USER)


def test_admin_rotation_serves_new_work_with_the_new_key_while_running_work_completes(
    e2e: EndToEnd, shop: Shop
) -> None:
    """A preview running across a rotation completes; the next one is under the new key."""
    tenant = shop.tenant
    old = _current_key(e2e, tenant.org_id).key_id
    rotated: list[opb.RotatePayloadKeyResponse] = []

    def rotate() -> None:
        rotated.append(
            _keys_of(e2e, tenant.admin_token).RotatePayloadKey(opb.RotatePayloadKeyRequest())
        )

    across = _run_and_capture(
        e2e, tenant.org_id, _preview(e2e, shop, SLOW_PREVIEW), while_running=rotate
    )
    after = _run_and_capture(e2e, tenant.org_id, _preview(e2e, shop, "select 1 as one"))

    (response,) = rotated
    assert response.rotated and response.previous_key_id == old != response.current_key_id
    assert across.response.result.category == wpb.PREVIEW_CATEGORY_OK
    assert across.payloads[0].metadata[KEY_ID_METADATA].decode() == old
    assert after.response.result.category == wpb.PREVIEW_CATEGORY_OK
    assert {p.metadata[KEY_ID_METADATA].decode() for p in after.payloads} == {
        response.current_key_id
    }
    user = _admin_of(e2e, tenant).subject_id
    assert _audit(e2e, tenant.org_id, "payload_key.rotate") == [
        ("user", user, response.current_key_id, "operator")
    ]


def test_a_member_cannot_rotate_the_payload_key(e2e: EndToEnd) -> None:
    """RotatePayloadKey is for admins: a member is refused and nothing rotates."""
    tenant = e2e.new_tenant(start_agent=False)
    member = e2e.new_member(tenant)
    before = _current_key(e2e, tenant.org_id).key_id
    with pytest.raises(grpc.RpcError) as refused:
        _keys_of(e2e, member).RotatePayloadKey(opb.RotatePayloadKeyRequest())
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert _current_key(e2e, tenant.org_id).key_id == before
    assert _audit(e2e, tenant.org_id, "payload_key.rotate") == []


def test_sevvo_payload_keys_rotate_prints_the_new_current_key(e2e: EndToEnd, tmp_path: Any) -> None:
    """The CLI command rotates as the signed-in admin and shows the new key id."""
    name = f"org-{uuid.uuid4().hex[:8]}"
    email = f"admin@{name}.example"
    admin = e2e.stack.auth.domain.create_org_with_admin(name, email, PASSWORD)
    before = _current_key(e2e, str(admin.org_id)).key_id
    env = user_env(e2e.stack.grpc_target, e2e.stack.pki.ca_cert, tmp_path / "sevvo")
    signed_in = run_sevvo(("login", "--email", email, "--password-stdin"), env, PASSWORD + "\n", 60)
    assert signed_in.code == 0, signed_in.stderr
    result = run_sevvo(("payload-keys", "rotate"), env, "", 60)
    assert result.code == 0, result.stderr
    shown = result.json()
    assert shown["rotated"] is True
    assert shown["previous_key_id"] == before
    assert shown["current_key_id"] == _current_key(e2e, str(admin.org_id)).key_id != before
