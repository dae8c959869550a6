"""Proof of origin on workflow inputs: signing and verifying, without servers (work_proof)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sevvo.runtime import work_proof
from sevvo.runtime.work_proof import ProofKeyCache, ProofSigner, WorkRefused, verify
from sevvo.workflows.v1 import workflows_pb2

ORG = "6f1c1b56-54e0-4b7c-9d40-3d3a4bb0c001"
OTHER_ORG = "6f1c1b56-54e0-4b7c-9d40-3d3a4bb0c002"
WORKFLOW = "PreviewQueryWorkflow"
NOW = datetime(2026, 12, 2, 9, 0, 0, tzinfo=UTC)
SIGNER = ProofSigner("wp-1", Ed25519PrivateKey.generate())
KEYS = {"wp-1": SIGNER.private_key.public_key()}


def _input(sql: str = "select 1") -> workflows_pb2.PreviewQueryInput:
    return workflows_pb2.PreviewQueryInput(run_id="r1", connection_id="c1", sql=sql)


def _proved(workflow_id: str = "preview-1", **overrides: object) -> workflows_pb2.PreviewQueryInput:
    message = _input()
    options: dict[str, object] = {
        "org_id": ORG,
        "workflow_type": WORKFLOW,
        "workflow_id": workflow_id,
        "message": message,
        "lifetime": timedelta(minutes=5),
        "now": NOW,
    }
    options.update(overrides)
    work_proof.attach(message, SIGNER.for_run(**options))  # type: ignore[arg-type]
    return message


def _check(
    message: workflows_pb2.PreviewQueryInput,
    *,
    keys: Mapping[str, Ed25519PublicKey] = KEYS,
    org_id: str = ORG,
    workflow_id: str = "preview-1",
    workflow_type: str = WORKFLOW,
    now: datetime = NOW,
) -> work_proof.VerifiedWork:
    return verify(
        message.proof,
        keys,
        org_id=org_id,
        workflow_id=workflow_id,
        workflow_type=workflow_type,
        digest=work_proof.input_digest(message),
        now=now,
    )


def _reason(call: object) -> str:
    assert callable(call)
    with pytest.raises(WorkRefused) as refused:
        call()
    return refused.value.reason


def test_a_proved_input_verifies_until_its_work_would_have_timed_out() -> None:
    """A run proof verifies for its workflow and expires after its lifetime plus the margin."""
    verified = _check(_proved())
    assert verified.kind == work_proof.KIND_RUN
    assert (
        verified.claim_until == NOW + timedelta(minutes=5) + work_proof.MARGIN + work_proof.LEEWAY
    )


def test_the_digest_ignores_the_proof_field() -> None:
    """Attaching the proof does not change the digest it signs."""
    assert work_proof.input_digest(_proved()) == work_proof.input_digest(_input())


def _forged() -> workflows_pb2.PreviewQueryInput:
    forger = ProofSigner("wp-1", Ed25519PrivateKey.generate())
    message = _input()
    work_proof.attach(
        message,
        forger.for_run(
            org_id=ORG,
            workflow_type=WORKFLOW,
            workflow_id="preview-1",
            message=message,
            lifetime=timedelta(minutes=5),
            now=NOW,
        ),
    )
    return message


def _changed() -> workflows_pb2.PreviewQueryInput:
    message = _proved()
    message.sql = "select secret from payroll"
    return message


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        (lambda: _check(_input()), "WORK_PROOF_MISSING"),
        (
            lambda: _check(workflows_pb2.PreviewQueryInput(proof="not-a-token")),
            "WORK_PROOF_INVALID",
        ),
        (lambda: _check(_forged()), "WORK_PROOF_INVALID"),
        (lambda: _check(_proved(), keys={}), "WORK_PROOF_UNKNOWN_KEY"),
        (lambda: _check(_proved(), org_id=OTHER_ORG), "WORK_PROOF_FOREIGN_ORG"),
        (lambda: _check(_proved(), workflow_id="preview-2"), "WORK_PROOF_WRONG_WORKFLOW"),
        (
            lambda: _check(_proved(), workflow_type="RootRotationWorkflow"),
            "WORK_PROOF_WRONG_WORKFLOW",
        ),
        (lambda: _check(_changed()), "WORK_PROOF_INPUT_CHANGED"),
        (lambda: _check(_proved(), now=NOW + timedelta(minutes=8)), "WORK_PROOF_EXPIRED"),
    ],
    ids=[
        "missing",
        "not-a-jws",
        "forged-signature",
        "unknown-key",
        "foreign-org",
        "copied-to-another-workflow-id",
        "other-workflow-type",
        "input-changed",
        "expired",
    ],
)
def test_refusals_name_what_failed(case: object, reason: str) -> None:
    """Every way a proof can fail is refused with its own stable reason."""
    assert _reason(case) == reason
    assert reason in work_proof.REASONS


def _scheduled(set_at: datetime = NOW, every: timedelta = timedelta(hours=1)) -> str:
    message = workflows_pb2.RootRotationInput(connection_id="c1")
    return SIGNER.for_schedule(
        org_id=ORG,
        workflow_type="RootRotationWorkflow",
        schedule_id="root-rotation-x",
        message=message,
        interval=every,
        set_by="user:u1",
        set_at=set_at,
        lateness=timedelta(minutes=11),
    )


def _check_scheduled(workflow_id: str, now: datetime) -> work_proof.VerifiedWork:
    return verify(
        _scheduled(),
        KEYS,
        org_id=ORG,
        workflow_id=workflow_id,
        workflow_type="RootRotationWorkflow",
        digest=work_proof.input_digest(workflows_pb2.RootRotationInput(connection_id="c1")),
        now=now,
    )


def test_a_scheduled_run_at_one_of_its_times_verifies() -> None:
    """A run named for the schedule's set time plus whole intervals, run near then, verifies."""
    verified = _check_scheduled("root-rotation-x-2026-12-02T11:00:00Z", NOW + timedelta(hours=2))
    assert verified.kind == work_proof.KIND_SCHEDULE


@pytest.mark.parametrize(
    ("workflow_id", "now", "reason"),
    [
        # A manual trigger is named for the moment it was triggered, off the schedule's times.
        (
            "root-rotation-x-2026-12-02T11:17:42Z",
            NOW + timedelta(hours=2, minutes=18),
            "SCHEDULE_TIME",
        ),
        # An old run's time, started again later (a backfill or a copy).
        ("root-rotation-x-2026-12-02T10:00:00Z", NOW + timedelta(hours=3), "SCHEDULE_TIME"),
        # Before the schedule was set.
        ("root-rotation-x-2026-12-02T08:00:00Z", NOW + timedelta(minutes=1), "SCHEDULE_TIME"),
        ("root-rotation-y-2026-12-02T10:00:00Z", NOW + timedelta(hours=1), "WRONG_WORKFLOW"),
        ("root-rotation-x-now", NOW, "WRONG_WORKFLOW"),
    ],
    ids=["manual-trigger", "stale-time", "before-set", "other-schedule", "no-time"],
)
def test_scheduled_runs_off_schedule_are_refused(
    workflow_id: str, now: datetime, reason: str
) -> None:
    """A scheduled run is refused unless it is its schedule's, at one of its times, now."""
    assert _reason(lambda: _check_scheduled(workflow_id, now)) == f"WORK_PROOF_{reason}"


def test_a_vouched_proof_skips_the_digest_but_not_the_workflow_id() -> None:
    """A vouch binds the workflow id and type, not an input the orchestrator never kept."""
    token = SIGNER.vouch(
        org_id=ORG,
        workflow_type=WORKFLOW,
        workflow_id="preview-old",
        expires_at=NOW + timedelta(minutes=5),
        now=NOW,
    )
    message = _input()
    work_proof.attach(message, token)
    assert _check(message, workflow_id="preview-old").kind == work_proof.KIND_VOUCH
    assert (
        _reason(lambda: _check(message, workflow_id="preview-new")) == "WORK_PROOF_WRONG_WORKFLOW"
    )


def test_the_key_cache_refetches_for_a_new_key_at_most_every_few_seconds() -> None:
    """An unknown kid refetches the keys, but a flood of forged kids costs one fetch per period."""
    fetches: list[int] = []
    clock = [100.0]

    async def fetch() -> dict[str, Ed25519PublicKey]:
        fetches.append(1)
        return dict(KEYS)

    cache = ProofKeyCache(fetch, min_refresh_seconds=5.0, clock=lambda: clock[0])
    proved = _proved()

    async def run() -> None:
        await cache.verify(
            proved.proof,
            org_id=ORG,
            workflow_id="preview-1",
            workflow_type=WORKFLOW,
            digest=work_proof.input_digest(proved),
            now=NOW,
        )
        forged = ProofSigner("wp-forged", Ed25519PrivateKey.generate())
        token = forged.vouch(
            org_id=ORG, workflow_type=WORKFLOW, workflow_id="w", expires_at=NOW, now=NOW
        )
        for _ in range(10):
            assert "wp-forged" not in await cache.keys_for(token)

    asyncio.run(run())
    assert len(fetches) == 1
