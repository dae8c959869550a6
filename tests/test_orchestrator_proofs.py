"""The orchestrator's proof keys and vouching for pre-upgrade work, on a real store."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from cryptography.hazmat.primitives import serialization
from temporalio.client import Client

from services.orchestrator.connections_client import ConnectionLookup
from services.orchestrator.domain import OrchestratorDomain
from services.orchestrator.payload_keys import PayloadKeys
from services.orchestrator.proofs import ProofKeys
from services.orchestrator.runs import OrgClients
from services.orchestrator.store import OrchestratorStore, RunRow
from sevvo.runtime import temporal, work_proof
from sevvo.runtime.errors import NotFound
from sevvo.runtime.payload_codec import OrgPayloadKeys
from sevvo.runtime.sealing import Keyring
from sevvo.runtime.tokens import Principal, PrincipalKind
from sevvo.workflows.v1 import workflows_pb2

KEYRING = Keyring.generate("k1")


@pytest.fixture
def store(database_url: str) -> Iterator[OrchestratorStore]:
    """The orchestrator's store on a fresh database."""
    store = OrchestratorStore(database_url)
    store.open()
    yield store
    store.close()


def test_the_signing_key_is_sealed_at_rest_and_shared_by_replicas(
    store: OrchestratorStore,
) -> None:
    """The private key is stored sealed; a second replica signs with the same key id."""
    first = ProofKeys(store, KEYRING).signer()
    raw = first.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    (row,) = store.proof_keys()
    assert raw not in row.sealed_key
    assert ProofKeys(store, KEYRING).signer().key_id == first.key_id


def test_a_rotated_key_signs_while_the_old_one_stays_published(store: OrchestratorStore) -> None:
    """After a rotation new proofs name the new key, and proofs of the old one still verify."""
    keys = ProofKeys(store, KEYRING)
    old = keys.signer()
    new_id = keys.rotate()
    assert keys.signer().key_id == new_id != old.key_id
    assert set(ProofKeys(store, KEYRING).published()) == {old.key_id, new_id}


def test_a_replica_publishes_and_signs_with_a_key_another_replica_added(
    store: OrchestratorStore,
) -> None:
    """A verifier meeting a new kid asks any replica; that replica then knows and uses it."""
    this, other = ProofKeys(store, KEYRING), ProofKeys(store, KEYRING)
    this.signer()
    new_id = other.rotate()
    assert new_id in this.published()
    assert this.signer().key_id == new_id


def _domain(store: OrchestratorStore) -> OrchestratorDomain:
    # Vouching reads only the store: no Temporal, payload key or connections call is made.
    return OrchestratorDomain(
        store,
        cast(PayloadKeys, None),
        OrgClients(cast(Client, None), lambda _: cast(OrgPayloadKeys, None)),
        cast(ConnectionLookup, None),
        test_timeout=timedelta(seconds=60),
        proofs=ProofKeys(store, KEYRING),
    )


def _agent(org_id: uuid.UUID) -> Principal:
    return Principal(
        PrincipalKind.AGENT, str(org_id), "deployment", "token", datetime.now(UTC) + timedelta(1)
    )


def _run(store: OrchestratorStore, org_id: uuid.UUID, *, proved: bool, state: str) -> str:
    run_id = uuid.uuid4()
    workflow_id = f"credential-test-{run_id}"
    store.insert_run(
        RunRow(
            id=run_id,
            org_id=org_id,
            kind="credential_test",
            state=state,
            connection_id=uuid.uuid4(),
            draft_id=None,
            workflow_id=workflow_id,
            outcome_category=None,
            message=None,
            started_at=datetime.now(UTC),
            finished_at=None,
            duration_ms=None,
            proved=proved,
        )
    )
    return workflow_id


def test_a_running_pre_upgrade_run_is_vouched_for(store: OrchestratorStore) -> None:
    """A proof-less run recorded before proofs, still running, gets a proof of its id."""
    org_id = uuid.uuid4()
    workflow_id = _run(store, org_id, proved=False, state="running")
    domain = _domain(store)
    token = asyncio.run(
        domain.vouch(_agent(org_id), workflow_id, temporal.CREDENTIAL_TEST_WORKFLOW)
    )
    keys = work_proof.public_keys(asyncio.run(domain.proof_keys()))
    verified = work_proof.verify(
        token,
        keys,
        org_id=str(org_id),
        workflow_id=workflow_id,
        workflow_type=temporal.CREDENTIAL_TEST_WORKFLOW,
        digest=work_proof.input_digest(workflows_pb2.CredentialTestInput()),
        now=datetime.now(UTC),
    )
    assert verified.kind == work_proof.KIND_VOUCH


@pytest.mark.parametrize(
    ("proved", "state", "other_org", "workflow_type"),
    [
        (True, "running", False, temporal.CREDENTIAL_TEST_WORKFLOW),
        (False, "succeeded", False, temporal.CREDENTIAL_TEST_WORKFLOW),
        (False, "running", True, temporal.CREDENTIAL_TEST_WORKFLOW),
        (False, "running", False, temporal.ROOT_ROTATION_WORKFLOW),
    ],
    ids=["already-proved", "finished", "another-orgs-run", "other-workflow-type"],
)
def test_vouching_is_refused_for_anything_but_a_running_pre_upgrade_run(
    store: OrchestratorStore, proved: bool, state: str, other_org: bool, workflow_type: str
) -> None:
    """Only the caller's org's own proof-less running run of that type is vouched for."""
    org_id = uuid.uuid4()
    workflow_id = _run(store, org_id, proved=proved, state=state)
    caller = _agent(uuid.uuid4() if other_org else org_id)
    with pytest.raises(NotFound) as refused:
        asyncio.run(_domain(store).vouch(caller, workflow_id, workflow_type))
    assert refused.value.reason == "WORK_NOT_VOUCHED"


def test_a_workflow_id_nobody_recorded_is_not_vouched_for(store: OrchestratorStore) -> None:
    """A hand-started proof-less workflow has no run row, so no vouch."""
    with pytest.raises(NotFound):
        asyncio.run(
            _domain(store).vouch(
                _agent(uuid.uuid4()), f"hand-started-{uuid.uuid4()}", temporal.PREVIEW_WORKFLOW
            )
        )
