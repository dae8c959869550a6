"""End to end: the agent acts only on work the control plane asked for (issue 13, proof).

Workflows are started by hand on an org's queue, as someone holding Temporal access (another
org's, the UI's) could: with the org's payload keys, so the input decrypts and only the proof
of origin stands between them and the org's credentials. Real stack, real agents.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import Client, ScheduleActionExecutionStartWorkflow, ScheduleBackfill
from temporalio.common import WorkflowIDReusePolicy

from devstack.postgres import EmbeddedPostgres
from services.orchestrator import schedules
from services.orchestrator.store import RunRow
from sevvo.audit.v1.audit_pb2 import AUDIT_OUTCOME_FAILURE, AuditEvent, ListAuditEventsRequest
from sevvo.audit.v1.audit_pb2_grpc import AuditServiceStub
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.runtime import temporal, work_proof
from sevvo.runtime.payload_codec import data_converter
from sevvo.runtime.work_proof import ProofSigner
from sevvo.workflows.v1 import workflows_pb2 as wpb
from tests.plugins.auth_stack import BackgroundLoop
from tests.plugins.dev_stack import EndToEnd, Tenant
from tests.plugins.source_db import SourceTargetFactory

WAIT = 60.0
TEST = temporal.CREDENTIAL_TEST_WORKFLOW


class Org:
    """A tenant with its agent, a tested connection, and a Temporal client holding its keys."""

    def __init__(self, e2e: EndToEnd, loop: BackgroundLoop, source_target: Any, pg: Any) -> None:
        self.e2e, self.loop = e2e, loop
        self.tenant: Tenant = e2e.new_tenant()
        created = e2e.connections(self.tenant.admin_token).CreateConnection(
            cpb.CreateConnectionRequest(
                display_name="warehouse", fields=e2e.fields(source_target(pg))
            )
        )
        assert created.status == cpb.CONNECTION_STATUS_CONNECTED  # Normal work still runs.
        self.connection_id: str = created.id
        keys = e2e.stack.orchestrator.payload_keys.fresh(uuid.UUID(self.tenant.org_id))
        self.client: Client = loop.run(
            Client.connect(
                e2e.stack.temporal_address,
                namespace=temporal.namespace_for(self.tenant.org_id),
                data_converter=data_converter(keys),
            )
        )

    def start(
        self,
        request: Any,
        workflow_id: str | None = None,
        *,
        workflow: str = TEST,
        result_type: type = wpb.CredentialTestResult,
    ) -> Any:
        """Starts a workflow by hand on this org's queue and waits for its result."""

        async def run() -> Any:
            handle = await self.client.start_workflow(
                workflow,
                request,
                id=workflow_id or f"hand-started-{uuid.uuid4()}",
                task_queue=temporal.task_queue(self.tenant.org_id),
                execution_timeout=timedelta(seconds=WAIT),
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                result_type=result_type,
            )
            return await handle.result()

        return self.loop.run(run(), timeout=WAIT + 10)

    def last_test(self) -> tuple[str, wpb.CredentialTestInput]:
        """The workflow id and (decrypted) input of the org's latest orchestrator test run."""
        runs = self.e2e.orchestrator(self.tenant.admin_token).ListRuns(opb.ListRunsRequest()).runs
        workflow_id = f"credential-test-{runs[0].id}"

        async def read() -> wpb.CredentialTestInput:
            history = await self.client.get_workflow_handle(workflow_id).fetch_history()
            started = history.events[0].workflow_execution_started_event_attributes
            (decoded,) = await self.client.data_converter.decode(
                list(started.input.payloads), [wpb.CredentialTestInput]
            )
            assert isinstance(decoded, wpb.CredentialTestInput)
            return decoded

        return workflow_id, self.loop.run(read())

    def audit(self) -> list[AuditEvent]:
        """The org's audit log, newest first."""
        return list(
            AuditServiceStub(self.e2e._channel(self.tenant.admin_token))
            .ListAuditEvents(ListAuditEventsRequest(page_size=200))
            .events
        )

    def refusals(self, workflow_id: str) -> list[tuple[str, str, str]]:
        """How the org's audit log recorded refusals of one workflow id."""
        return [
            (e.action, e.reason, e.details.get("refused_by", ""))
            for e in self.audit()
            if e.outcome == AUDIT_OUTCOME_FAILURE
            and workflow_id in (e.target_id, e.details.get("workflow_id"))
        ]

    def resolves(self) -> int:
        """How many credential resolves the org's audit log holds."""
        return sum(e.action.endswith("credentials.resolve") for e in self.audit())


@pytest.fixture
def org(
    e2e: EndToEnd,
    background_loop: BackgroundLoop,
    source_target: SourceTargetFactory,
    tls_source_pg: EmbeddedPostgres,
) -> Org:
    """An org with a running agent and a connection its agent tested (the normal path)."""
    return Org(e2e, background_loop, source_target, tls_source_pg)


def test_a_hand_started_workflow_without_proof_is_refused_before_any_resolve(org: Org) -> None:
    """A valid-looking input with no proof ends work_refused, audited, nothing resolved."""
    before = org.resolves()
    workflow_id = f"hand-started-{uuid.uuid4()}"
    result = org.start(wpb.CredentialTestInput(connection_id=org.connection_id), workflow_id)
    assert result.category == wpb.TEST_CATEGORY_WORK_REFUSED
    assert org.refusals(workflow_id) == [("work.refused", "WORK_PROOF_MISSING", "agent")]
    assert org.resolves() == before


def test_a_forged_proof_is_refused(org: Org) -> None:
    """A proof signed with any key but the orchestrator's, even under its kid, is refused."""
    signer = org.e2e.stack.orchestrator.proof_keys.signer()
    forger = ProofSigner(signer.key_id, Ed25519PrivateKey.generate())
    workflow_id = f"hand-started-{uuid.uuid4()}"
    request = wpb.CredentialTestInput(connection_id=org.connection_id)
    work_proof.attach(
        request,
        forger.for_run(
            org_id=org.tenant.org_id,
            workflow_type=TEST,
            workflow_id=workflow_id,
            message=request,
            lifetime=timedelta(minutes=5),
            now=datetime.now(UTC),
        ),
    )
    before = org.resolves()
    assert org.start(request, workflow_id).category == wpb.TEST_CATEGORY_WORK_REFUSED
    assert org.refusals(workflow_id) == [("work.refused", "WORK_PROOF_INVALID", "agent")]
    assert org.resolves() == before


def test_a_copied_input_under_a_new_workflow_id_is_refused(org: Org) -> None:
    """The orchestrator's own input, replayed under another workflow id, is refused."""
    _, copied = org.last_test()
    workflow_id = f"replay-{uuid.uuid4()}"
    assert org.start(copied, workflow_id).category == wpb.TEST_CATEGORY_WORK_REFUSED
    assert org.refusals(workflow_id) == [("work.refused", "WORK_PROOF_WRONG_WORKFLOW", "agent")]


def test_the_same_workflow_id_run_again_is_refused_at_resolve(org: Org) -> None:
    """A second run under the original workflow id is refused by connections, audited."""
    workflow_id, copied = org.last_test()
    assert org.start(copied, workflow_id).category == wpb.TEST_CATEGORY_WORK_REFUSED
    # The org's latest test is the one its connection's save ran on the draft.
    assert org.refusals(workflow_id) == [("draft.credentials.resolve", "WORK_REPLAYED", "")]


def test_a_proof_of_another_org_is_refused_on_this_orgs_queue(
    org: Org,
    e2e: EndToEnd,
    background_loop: BackgroundLoop,
    source_target: SourceTargetFactory,
    tls_source_pg: EmbeddedPostgres,
) -> None:
    """Org B's proved input, started on org A's queue with A's keys, is refused by A's agent."""
    other = Org(e2e, background_loop, source_target, tls_source_pg)
    workflow_id, copied = other.last_test()
    copied.connection_id = org.connection_id
    assert org.start(copied, workflow_id).category == wpb.TEST_CATEGORY_WORK_REFUSED
    assert org.refusals(workflow_id) == [("work.refused", "WORK_PROOF_FOREIGN_ORG", "agent")]


def test_work_started_before_proofs_still_completes(org: Org) -> None:
    """A proof-less run the orchestrator recorded before the upgrade is vouched for and runs."""
    run_id = uuid.uuid4()
    workflow_id = f"credential-test-{run_id}"
    org.e2e.stack.orchestrator.store.insert_run(
        RunRow(
            id=run_id,
            org_id=uuid.UUID(org.tenant.org_id),
            kind="credential_test",
            state="running",
            connection_id=uuid.UUID(org.connection_id),
            draft_id=None,
            workflow_id=workflow_id,
            outcome_category=None,
            message=None,
            started_at=datetime.now(UTC),
            finished_at=None,
            duration_ms=None,
            proved=False,
        )
    )
    old_input = wpb.CredentialTestInput(run_id=str(run_id), connection_id=org.connection_id)
    assert org.start(old_input, workflow_id).category == wpb.TEST_CATEGORY_OK
    assert org.refusals(workflow_id) == []


def _schedule(org: Org, signer: ProofSigner | None) -> str:
    """Sets a rotation schedule on the org's connection as the orchestrator does (or did)."""
    org_id, connection_id = uuid.UUID(org.tenant.org_id), uuid.UUID(org.connection_id)
    org.loop.run(
        schedules.put(
            org.client,
            org_id,
            connection_id,
            timedelta(days=30),
            timedelta(seconds=WAIT),
            signer=signer,
            set_by="user:test",
        )
    )
    return schedules.schedule_id(org_id, connection_id)


def _scheduled_results(org: Org, sid: str, act: Any) -> list[wpb.RootRotationResult]:
    """Does ``act`` to the schedule, then waits for the runs it started and returns results."""

    async def run() -> list[wpb.RootRotationResult]:
        handle = org.client.get_schedule_handle(sid)
        await act(handle)
        for _ in range(100):
            recent = (await handle.describe()).info.recent_actions
            if recent:
                break
            await asyncio.sleep(0.2)
        results = []
        for action in recent:
            started = action.action
            assert isinstance(started, ScheduleActionExecutionStartWorkflow)
            workflow = org.client.get_workflow_handle(
                started.workflow_id, result_type=wpb.RootRotationResult
            )
            results.append(await workflow.result())
        await handle.delete()
        return results

    return org.loop.run(run(), timeout=WAIT + 30)


def test_a_schedules_own_runs_are_accepted_and_a_manual_trigger_is_refused(org: Org) -> None:
    """A run at the schedule's time is admitted; triggering it by hand is refused, audited."""
    signer = org.e2e.stack.orchestrator.proof_keys.signer()
    sid = _schedule(org, signer)

    async def backfill(handle: Any) -> None:
        # The schedule's first time is the moment it was set: as if that time came round.
        now = datetime.now(UTC)
        await handle.backfill(ScheduleBackfill(start_at=now - timedelta(minutes=5), end_at=now))

    (admitted,) = _scheduled_results(org, sid, backfill)
    # Past the proof: a fields connection has no privileged password to rotate.
    assert admitted.category == wpb.ROOT_ROTATION_CATEGORY_NOT_DYNAMIC

    sid = _schedule(org, signer)

    async def trigger(handle: Any) -> None:
        # Within the second it was set, a trigger's time is the schedule's first time (and
        # that time was claimed by the backfill above); a second later it is off schedule.
        await asyncio.sleep(1.1)
        await handle.trigger()

    (triggered,) = _scheduled_results(org, sid, trigger)
    assert triggered.category == wpb.ROOT_ROTATION_CATEGORY_WORK_REFUSED
    reasons = {e.reason for e in org.audit() if e.action == "work.refused"}
    assert reasons == {"WORK_PROOF_SCHEDULE_TIME"}


def test_schedules_set_before_proofs_are_re_proved_at_start(org: Org) -> None:
    """A proof-less schedule gets the orchestrator's proof when the orchestrator starts."""
    sid = _schedule(org, None)
    domain = org.e2e.stack.orchestrator.domain
    assert domain is not None

    async def proof_after_start() -> str:
        assert await domain.prove_schedules() >= 1
        handle = org.client.get_schedule_handle(sid)
        raw = (await handle.describe()).raw_description.schedule.action.start_workflow
        (decoded,) = await org.client.data_converter.decode(
            list(raw.input.payloads), [wpb.RootRotationInput]
        )
        await handle.delete()
        assert isinstance(decoded, wpb.RootRotationInput)
        return decoded.proof

    proof = org.loop.run(proof_after_start())
    keys = work_proof.public_keys(org.e2e.stack.orchestrator.proof_keys.published())
    # The schedule's first time is when it was re-proved (the proof's iat).
    first = datetime.fromtimestamp(
        jwt.decode(proof, options={"verify_signature": False})["iat"], UTC
    )
    verified = work_proof.verify(
        proof,
        keys,
        org_id=org.tenant.org_id,
        workflow_id=f"{sid}-{first:%Y-%m-%dT%H:%M:%SZ}",
        workflow_type=temporal.ROOT_ROTATION_WORKFLOW,
        digest=None,
        now=datetime.now(UTC),
    )
    assert verified.kind == work_proof.KIND_SCHEDULE
