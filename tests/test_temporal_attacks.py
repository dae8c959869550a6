"""Issue 13's attacks by a dishonest org B against org A, on the real dev server and agents.

The dev server has no authorizer (docs/temporal-isolation.md), so B reaches A's namespace
here; what these tests show is that each attack is refused or made harmless by what sevvo
enforces itself (payload encryption, the proof of origin, runs that always end truly), and
count attempts and successes. The production refusal of the same calls by Temporal's
authorizer is tests/test_temporal_authorization.py; the replays and the schedule trigger are
tests/test_e2e_work_proof.py; a revoked deployment's keys are tests/test_e2e_payload_keys.py.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.api.workflowservice.v1 import ListNamespacesRequest
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from agent.workflows import CredentialTestWorkflow, PreviewQueryWorkflow, RootRotationWorkflow
from devstack.postgres import EmbeddedPostgres
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.runtime import temporal
from sevvo.runtime.payload_codec import EncryptionCodec, PayloadUnreadable
from sevvo.workflows.v1 import workflows_pb2 as wpb
from tests.plugins.auth_stack import BackgroundLoop
from tests.plugins.dev_stack import EndToEnd
from tests.plugins.source_db import SourceTargetFactory
from tests.test_e2e_work_proof import Org

QUERY = "select id, name, email from customers order by id limit 5"
# Long enough to be running when B terminates it; cheap for the database.
SLOW_QUERY = "select count(*) from generate_series(1, 40000000)"


@pytest.fixture
def orgs(
    e2e: EndToEnd,
    background_loop: BackgroundLoop,
    source_target: SourceTargetFactory,
    tls_source_pg: EmbeddedPostgres,
) -> tuple[Org, Org]:
    """Org A (the victim) and org B (the attacker), each with its agent and a connection."""
    return (
        Org(e2e, background_loop, source_target, tls_source_pg),
        Org(e2e, background_loop, source_target, tls_source_pg),
    )


async def _connect_as_b(namespace: str, b: Org) -> Client:
    """A Temporal client as B's agent can build one in development: B's keys, any namespace."""
    return await Client.connect(
        b.e2e.stack.temporal_address, namespace=namespace, data_converter=b.client.data_converter
    )


def _b_in(namespace: str, b: Org) -> Client:
    """:func:`_connect_as_b`, from outside the test's event loop."""
    return b.loop.run(_connect_as_b(namespace, b))


def _preview(org: Org, sql: str) -> opb.PreviewQueryResponse:
    response: opb.PreviewQueryResponse = org.e2e.orchestrator(org.tenant.admin_token).PreviewQuery(
        opb.PreviewQueryRequest(connection_id=org.connection_id, sql=sql), timeout=120
    )
    return response


def test_listing_reveals_no_org_id_and_decrypts_nothing(orgs: tuple[Org, Org]) -> None:
    """B's own namespace shows none of A's work; no namespace name holds an org id; B listing
    A's namespace (possible only in development) reads none of A's payloads."""
    a, b = orgs
    _preview(a, QUERY)
    a_namespace = temporal.namespace_for(a.tenant.org_id)

    async def attack() -> tuple[int, list[str], int, int]:
        own = await _connect_as_b(temporal.namespace_for(b.tenant.org_id), b)
        seen_in_own = [w.id async for w in own.list_workflows() if a.tenant.org_id in w.id]
        namespaces = await own.workflow_service.list_namespaces(
            ListNamespacesRequest(page_size=1000)
        )
        names = [n.namespace_info.name for n in namespaces.namespaces]
        into_a = await _connect_as_b(a_namespace, b)
        codec = own.data_converter.payload_codec
        assert isinstance(codec, EncryptionCodec)
        tried = decrypted = 0
        async for listed in into_a.list_workflows():
            history = await into_a.get_workflow_handle(listed.id).fetch_history()
            for payload in (p for event in history.events for p in _payloads(event)):
                tried += 1
                try:
                    await codec.decode([payload])
                    decrypted += 1
                except PayloadUnreadable:
                    pass
        return len(seen_in_own), names, tried, decrypted

    seen_in_own, names, tried, decrypted = a.loop.run(attack())
    assert seen_in_own == 0
    assert a_namespace in names  # Development: listable. Production: ListNamespaces refused.
    assert not [n for n in names if a.tenant.org_id in n or b.tenant.org_id in n]
    assert tried >= 2
    assert decrypted == 0


def _payloads(message: Message) -> list[Payload]:
    """Every Payload anywhere in ``message`` (a history's inputs, results, marker details)."""
    if isinstance(message, Payload):
        return [message]
    found: list[Payload] = []
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            items = list(value.values())
        elif field.is_repeated:
            items = list(value)
        else:
            items = [value]
        for item in items:
            if isinstance(item, Message):
                found.extend(_payloads(item))
    return found


def test_bs_worker_on_as_queue_runs_and_decrypts_nothing(orgs: tuple[Org, Org]) -> None:
    """A worker with B's keys polling A's queue (development only) never runs A's work: every
    task it takes fails to decrypt, and A's previews still answer through A's agent."""
    a, b = orgs
    ran: list[str] = []

    @activity.defn(name=temporal.PREVIEW_ACTIVITY)
    async def stolen_preview(request: wpb.PreviewQueryInput) -> wpb.PreviewQueryResult:
        ran.append(request.sql)
        return wpb.PreviewQueryResult(category=wpb.PREVIEW_CATEGORY_OK)

    @activity.defn(name=temporal.TEST_CREDENTIALS_ACTIVITY)
    async def stolen_test(request: wpb.CredentialTestInput) -> wpb.CredentialTestResult:
        ran.append(request.connection_id)
        return wpb.CredentialTestResult(category=wpb.TEST_CATEGORY_OK)

    rounds = 5
    thief = _b_in(temporal.namespace_for(a.tenant.org_id), b)
    worker = Worker(
        thief,
        task_queue=temporal.task_queue(a.tenant.org_id),
        workflows=[CredentialTestWorkflow, PreviewQueryWorkflow, RootRotationWorkflow],
        activities=[stolen_preview, stolen_test],
        workflow_runner=UnsandboxedWorkflowRunner(),
    )

    async def poll_meanwhile() -> None:
        async with worker:
            answers = await asyncio.gather(
                *(asyncio.to_thread(_preview, a, QUERY) for _ in range(rounds))
            )
            categories.extend(response.result.category for response in answers)

    categories: list[int] = []
    a.loop.run(poll_meanwhile(), timeout=300)
    assert categories == [wpb.PREVIEW_CATEGORY_OK] * rounds
    assert ran == []


def test_terminating_as_preview_ends_its_run_truly(orgs: tuple[Org, Org]) -> None:
    """B terminating A's running preview (possible only in development) ends A's run at once
    with a true final state, not a hang or a wrong category."""
    a, b = orgs
    into_a = _b_in(temporal.namespace_for(a.tenant.org_id), b)
    outcome: dict[str, Any] = {}

    async def attack() -> int:
        call = asyncio.create_task(asyncio.to_thread(_preview, a, SLOW_QUERY))
        terminated = 0
        for _ in range(100):
            async for listed in into_a.list_workflows(
                f"WorkflowType = '{temporal.PREVIEW_WORKFLOW}' AND ExecutionStatus = 'Running'"
            ):
                await into_a.get_workflow_handle(listed.id).terminate(reason="org B")
                terminated += 1
            if terminated:
                break
            await asyncio.sleep(0.05)
        try:
            outcome["response"] = await call
        except grpc.RpcError as exc:
            outcome["error"] = exc
        return terminated

    terminated = a.loop.run(attack(), timeout=180)
    assert terminated == 1
    response = outcome.get("response")
    assert response is not None, outcome
    assert response.run.state == opb.RUN_STATE_FAILED
    assert response.run.outcome_category == "workflow_failed"
    assert "terminated" in response.run.message
    run = a.e2e.orchestrator(a.tenant.admin_token).GetRun(opb.GetRunRequest(id=response.run.id))
    assert run.state == response.run.state
    assert run.HasField("finish_time")
    assert timedelta(milliseconds=run.duration_ms) < timedelta(seconds=30)


def test_no_uuid_of_org_a_names_a_namespace(orgs: tuple[Org, Org]) -> None:
    """The namespace name is opaque: neither org's id, nor any UUID, appears in it."""
    a, b = orgs
    for org in (a, b):
        name = temporal.namespace_for(org.tenant.org_id)
        assert org.tenant.org_id not in name
        assert str(uuid.UUID(org.tenant.org_id)).replace("-", "") not in name
