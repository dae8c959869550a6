"""Connections binds a proved workflow id to the first run that resolves under it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.connections.domain import ConnectionsDomain, WorkClaim
from sevvo.runtime import audit, temporal
from sevvo.runtime.tokens import Principal, PrincipalKind
from sevvo.runtime.work_proof import ProofKeyCache, ProofSigner, WorkRefused
from sevvo.workflows.v1 import workflows_pb2
from tests.plugins.control_plane import ControlPlane

SIGNER = ProofSigner("wp-test", Ed25519PrivateKey.generate())
WORKFLOW = temporal.CREDENTIAL_TEST_WORKFLOW


async def _keys() -> dict[str, Ed25519PublicKey]:
    return {SIGNER.key_id: SIGNER.private_key.public_key()}


def _setup(control_plane: ControlPlane) -> tuple[ConnectionsDomain, Principal, str]:
    org = control_plane.auth.create_org()
    created = control_plane.create(org, "warehouse", "s3cret-Password-1")
    domain = ConnectionsDomain(
        control_plane.app.store, control_plane.app.config.keyring, proof_keys=ProofKeyCache(_keys)
    )
    agent = Principal(
        PrincipalKind.AGENT, org.org_id, "deployment", "t", datetime.now(UTC) + timedelta(1)
    )
    return domain, agent, created.id


def _claim(org_id: str, workflow_id: str, run_id: str) -> WorkClaim:
    proof = SIGNER.for_run(
        org_id=org_id,
        workflow_type=WORKFLOW,
        workflow_id=workflow_id,
        message=workflows_pb2.CredentialTestInput(),
        lifetime=timedelta(minutes=1),
        now=datetime.now(UTC),
    )
    return WorkClaim(proof, workflow_id, run_id, WORKFLOW)


def _resolve(domain: ConnectionsDomain, agent: Principal, cid: str, claim: WorkClaim) -> None:
    verified = asyncio.run(domain.verify_work(agent, claim))
    domain.resolve(agent, cid, "credential_test", work=(claim, verified))


def test_retries_of_the_first_run_pass_and_another_run_is_refused(
    control_plane: ControlPlane,
) -> None:
    """The first run id holds the workflow id: it may resolve again, a second run may not."""
    domain, agent, cid = _setup(control_plane)
    workflow_id = f"credential-test-{uuid.uuid4()}"
    first = _claim(agent.org_id, workflow_id, "run-1")
    _resolve(domain, agent, cid, first)
    _resolve(domain, agent, cid, first)  # An activity retry of the same run.
    with pytest.raises(WorkRefused) as refused:
        _resolve(domain, agent, cid, _claim(agent.org_id, workflow_id, "run-2"))
    assert refused.value.reason == "WORK_REPLAYED"
    with control_plane.app.store.connection() as conn:
        records = audit.list_events(
            conn, uuid.UUID(agent.org_id), limit=50, before=None, target_id=cid
        )
    assert [(r.outcome, r.reason, r.details.get("workflow_run_id")) for r in records][:3] == [
        ("failure", "WORK_REPLAYED", "run-2"),
        ("success", None, "run-1"),
        ("success", None, "run-1"),
    ]


def test_a_proof_connections_cannot_check_is_refused_and_audited(
    control_plane: ControlPlane,
) -> None:
    """Without the orchestrator's keys a resolve carrying a proof is refused, not waved on."""
    _, agent, _ = _setup(control_plane)
    blind = ConnectionsDomain(control_plane.app.store, control_plane.app.config.keyring)
    claim = _claim(agent.org_id, f"credential-test-{uuid.uuid4()}", "run-1")
    with pytest.raises(WorkRefused) as refused:
        asyncio.run(blind.verify_work(agent, claim))
    assert refused.value.reason == "WORK_PROOF_UNKNOWN_KEY"
    with control_plane.app.store.connection() as conn:
        records = audit.list_events(
            conn, uuid.UUID(agent.org_id), limit=50, before=None, target_id=claim.workflow_id
        )
    assert [(r.action, r.reason, r.details["refused_by"]) for r in records] == [
        ("work.refused", "WORK_PROOF_UNKNOWN_KEY", "connections")
    ]
