"""End to end: each org's work, schedules and agent live in the org's own Temporal namespace.

Real components: the dev launcher's control plane on a Temporal dev server, agents as
separate processes, a customer database. The dev server enforces no permissions (see
tests/test_temporal_authorization.py for production's authorizer), so these tests show what
the layout alone guarantees: listing another org's namespace shows nothing of this org's,
and an agent polls its own namespace only. The upgrade test starts work the way the
orchestrator did before namespaces per org and shows it still completes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, DescribeTaskQueueRequest
from temporalio.client import Client

from devstack.postgres import EmbeddedPostgres
from services.auth.servicer import BOOTSTRAP_TOKEN_METADATA
from services.orchestrator import schedules
from services.orchestrator.domain import work_kinds
from services.orchestrator.org_clients import OrgClients
from services.orchestrator.runs import RunTracker
from services.orchestrator.store import RunRow
from sevvo.auth.v1 import auth_pb2, auth_pb2_grpc
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.runtime import temporal
from sevvo.workflows.v1 import workflows_pb2 as wpb
from tests.plugins.auth_stack import BackgroundLoop
from tests.plugins.dev_stack import EndToEnd, Tenant
from tests.plugins.source_db import SourceTargetFactory

LEGACY = temporal.LEGACY_NAMESPACE


def _run(loop: BackgroundLoop, work: Callable[[], Awaitable[Any]], timeout: float = 90) -> Any:
    async def wrapped() -> Any:
        return await work()

    return loop.run(wrapped(), timeout=timeout)


async def _workflow_ids(address: str, namespace: str) -> set[str]:
    client = await Client.connect(address, namespace=namespace)
    return {w.id async for w in client.list_workflows()}


async def _schedule_ids(address: str, namespace: str) -> set[str]:
    client = await Client.connect(address, namespace=namespace)
    return {s.id async for s in await client.list_schedules()}


async def _poller_identities(address: str, namespace: str, queue: str) -> set[str]:
    client = await Client.connect(address, namespace=namespace)
    identities = set()
    for queue_type in (
        TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
    ):
        described = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=namespace, task_queue=TaskQueue(name=queue), task_queue_type=queue_type
            )
        )
        identities |= {p.identity for p in described.pollers}
    return identities


def _connected(e2e: EndToEnd, tenant: Tenant, fields: cpb.PostgresFields) -> cpb.Connection:
    created: cpb.Connection = e2e.connections(tenant.admin_token).CreateConnection(
        cpb.CreateConnectionRequest(display_name="warehouse", fields=fields)
    )
    assert created.status == cpb.CONNECTION_STATUS_CONNECTED
    return created


def test_an_orgs_work_is_invisible_when_listing_another_orgs_namespace(
    e2e: EndToEnd,
    tls_source_pg: EmbeddedPostgres,
    source_target: SourceTargetFactory,
    background_loop: BackgroundLoop,
) -> None:
    """A's credential tests run through A's agent in A's namespace; listing B's namespace or
    the old shared one shows none of them, nor anything naming A."""
    a, b = e2e.new_tenant(), e2e.new_tenant()
    _connected(e2e, a, e2e.fields(source_target(tls_source_pg)))
    address = e2e.stack.temporal_address
    in_a = _run(background_loop, lambda: _workflow_ids(address, temporal.namespace_for(a.org_id)))
    in_b = _run(background_loop, lambda: _workflow_ids(address, temporal.namespace_for(b.org_id)))
    in_legacy = _run(background_loop, lambda: _workflow_ids(address, LEGACY))
    assert len(in_a) == 1
    assert in_a.isdisjoint(in_b | in_legacy)
    assert not [w for w in in_b | in_legacy if a.org_id in w]


def test_a_schedule_is_only_in_its_orgs_namespace(
    e2e: EndToEnd, background_loop: BackgroundLoop
) -> None:
    """A rotation schedule the orchestrator puts for A exists in A's namespace, not in B's."""
    a, b = e2e.new_tenant(start_agent=False), e2e.new_tenant(start_agent=False)
    org_a, connection = uuid.UUID(a.org_id), uuid.uuid4()
    address = e2e.stack.temporal_address

    async def put() -> None:
        base = await Client.connect(address)
        clients = OrgClients(base, e2e.stack.orchestrator.payload_keys.fresh)
        client = await clients.for_org_async(org_a)
        await clients.for_org_async(uuid.UUID(b.org_id))  # B's namespace exists, empty.
        await schedules.put(
            client,
            org_a,
            connection,
            timedelta(days=1),
            timedelta(minutes=1),
            signer=None,
            set_by="test",
        )

    _run(background_loop, put)
    sid = schedules.schedule_id(org_a, connection)
    assert sid in _run(
        background_loop, lambda: _schedule_ids(address, temporal.namespace_for(a.org_id))
    )
    assert sid not in _run(
        background_loop, lambda: _schedule_ids(address, temporal.namespace_for(b.org_id))
    )
    assert sid not in _run(background_loop, lambda: _schedule_ids(address, LEGACY))


def test_an_agent_polls_only_its_orgs_namespace(
    e2e: EndToEnd, background_loop: BackgroundLoop
) -> None:
    """B's agent polls tenant-{B} in B's namespace and nothing in A's namespace."""
    a, b = e2e.new_tenant(), e2e.new_tenant()
    assert a.agent is not None and b.agent is not None
    b_identity = f"{b.agent.pid}@"
    address = e2e.stack.temporal_address
    ns_a, ns_b = temporal.namespace_for(a.org_id), temporal.namespace_for(b.org_id)
    queue_a, queue_b = temporal.task_queue(a.org_id), temporal.task_queue(b.org_id)

    def pollers(namespace: str, queue: str) -> set[str]:
        return set(_run(background_loop, lambda: _poller_identities(address, namespace, queue)))

    assert any(p.startswith(b_identity) for p in pollers(ns_b, queue_b))
    seen_in_a = pollers(ns_a, queue_a) | pollers(ns_a, queue_b)
    assert not [p for p in seen_in_a if p.startswith(b_identity)]
    assert any(p.startswith(f"{a.agent.pid}@") for p in pollers(ns_a, queue_a))


class _OldLayout(OrgClients):
    """The orchestrator's clients before namespaces per org: every org in one namespace."""

    async def for_org_async(self, org_id: uuid.UUID) -> Client:
        client = await self.legacy_for_org(org_id)
        assert client is not None
        return client


def test_work_started_on_the_old_layout_completes_after_the_upgrade(
    e2e: EndToEnd,
    tls_source_pg: EmbeddedPostgres,
    source_target: SourceTargetFactory,
    background_loop: BackgroundLoop,
) -> None:
    """A credential test started in the old shared namespace while the agent was down, and a
    rotation schedule created there, survive the upgrade: the upgraded agent runs the test to
    `ok`, and the orchestrator's start-up move puts the schedule in the org's namespace."""
    tenant = e2e.new_tenant()
    connection = _connected(e2e, tenant, e2e.fields(source_target(tls_source_pg)))
    assert tenant.agent is not None
    tenant.agent.stop()
    org_id, connection_id = uuid.UUID(tenant.org_id), uuid.UUID(connection.id)
    stack = e2e.stack
    address = stack.temporal_address
    started: dict[str, Any] = {}

    async def start_the_old_way() -> None:
        base = await Client.connect(address, namespace=LEGACY)
        old = _OldLayout(base, stack.orchestrator.payload_keys.fresh)
        tracker = RunTracker(stack.orchestrator.store, old, work_kinds(timedelta(seconds=45)))

        def request(run: RunRow) -> wpb.CredentialTestInput:
            return wpb.CredentialTestInput(run_id=str(run.id), connection_id=connection.id)

        started["run"] = asyncio.get_running_loop().create_task(
            tracker.run(org_id, "credential_test", request, connection_id=connection_id)
        )
        legacy_client = await old.for_org_async(org_id)
        # As the old release did: no proof.
        await schedules.put(
            legacy_client,
            org_id,
            connection_id,
            timedelta(days=1),
            timedelta(minutes=1),
            signer=None,
            set_by="",
        )

    _run(background_loop, start_the_old_way)
    e2e.start_agent(tenant)  # The upgraded agent, draining the old namespace by default.

    async def finished() -> tuple[RunRow, Any]:
        task: asyncio.Task[tuple[RunRow, Any]] = started["run"]
        return await asyncio.wait_for(asyncio.shield(task), timeout=60)

    row, result = _run(background_loop, finished)
    assert (row.state, row.outcome_category) == ("succeeded", "ok")
    assert result.category == wpb.TEST_CATEGORY_OK

    async def move() -> int:
        base = await Client.connect(address, namespace=LEGACY)
        clients = OrgClients(base, stack.orchestrator.payload_keys.fresh)
        return await schedules.move_legacy(base, clients.for_org_async)

    assert _run(background_loop, move) >= 1
    sid = schedules.schedule_id(org_id, connection_id)
    ns = temporal.namespace_for(tenant.org_id)
    assert sid in _run(background_loop, lambda: _schedule_ids(address, ns))
    assert sid not in _run(background_loop, lambda: _schedule_ids(address, LEGACY))


def test_an_org_bootstrapped_through_auth_has_its_namespace_at_once(
    e2e: EndToEnd, background_loop: BackgroundLoop
) -> None:
    """BootstrapOrg registers the new org's namespace before it returns: it exists with no
    agent, run or schedule yet (auth tells the orchestrator, with the new admin's bearer)."""
    stub = auth_pb2_grpc.AuthServiceStub(e2e._channel(None))
    token = e2e.stack.bootstrap_token_file.read_text().strip()
    created = stub.BootstrapOrg(
        auth_pb2.BootstrapOrgRequest(
            org_name=f"fresh-{uuid.uuid4().hex[:8]}",
            admin_email=f"ada@{uuid.uuid4().hex[:8]}.example",
            admin_password="correct horse battery staple",
        ),
        metadata=((BOOTSTRAP_TOKEN_METADATA, token),),
    )
    namespace = temporal.namespace_for(created.org_id)

    async def described() -> str:
        client = await Client.connect(e2e.stack.temporal_address)
        response = await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace)
        )
        return str(response.namespace_info.name)

    assert _run(background_loop, described) == namespace
