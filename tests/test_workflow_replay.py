"""The agent's workflows replay the histories every earlier release recorded.

An upgraded agent picks up runs an older agent started, and Temporal replays their history
through the new code: a command added, removed or reordered without ``workflow.patched``
breaks those runs. Replaying the committed histories (tests/workflow_histories/, recorded by
``make workflow-histories``) with temporalio's Replayer finds that in the build, in process,
without a server.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, WorkflowReplayResult

from agent.worker import WORKFLOWS
from agent.workflows import CredentialTestWorkflow
from scripts.workflow_histories import (
    HISTORIES,
    committed_histories,
    current_release,
    history_converter,
    history_keys,
    load_history,
    registered_type,
    workflow_type,
)
from sevvo.runtime import temporal as names
from sevvo.runtime.payload_codec import ENCODING, KEY_ID_METADATA
from sevvo.workflows.v1 import workflows_pb2 as wpb

HISTORY_FILES = committed_histories()


def _replay(workflows: list[type], history: WorkflowHistory) -> WorkflowReplayResult:
    """Replays ``history`` against ``workflows`` as the agent's worker runs them (unsandboxed,
    the agent's data converter); raises the replay's failure."""
    # An executor of its own, shut down after: the Replayer's default one never is.
    with ThreadPoolExecutor(max_workers=1) as executor:
        replayer = Replayer(
            workflows=workflows,
            workflow_task_executor=executor,
            data_converter=history_converter(),
            workflow_runner=UnsandboxedWorkflowRunner(),
        )
        return asyncio.run(replayer.replay_workflow(history))


@pytest.mark.parametrize(
    "path", HISTORY_FILES, ids=[str(p.relative_to(HISTORIES)) for p in HISTORY_FILES]
)
def test_a_committed_history_replays_against_the_current_workflows(path: Path) -> None:
    """Today's workflow code issues the same commands the recorded run did."""
    result = _replay(list(WORKFLOWS), load_history(path))
    assert result.replay_failure is None


def test_every_workflow_the_worker_registers_has_a_committed_history() -> None:
    """A workflow type without a recorded history would go unchecked: record one
    (``make workflow-histories``) when adding a workflow."""
    recorded = {workflow_type(load_history(path)) for path in HISTORY_FILES}
    assert {registered_type(cls) for cls in WORKFLOWS} <= recorded


def test_the_current_release_has_its_histories_recorded() -> None:
    """Bumping the version records its histories too (``make workflow-histories``), so the next
    release replays what this one's agents leave running."""
    recorded = HISTORIES / current_release()
    assert recorded.is_dir() and any(recorded.glob("*.json")), f"no histories in {recorded}"


# Temporal's core writes its own bookkeeping for a local activity (attempt, times, ids) into
# the marker's "data" detail as plain JSON, past the codec; the result beside it is encrypted.
_CORE_MARKER_FIELDS = {
    "seq",
    "attempt",
    "activity_id",
    "activity_type",
    "complete_time",
    "backoff",
    "original_schedule_time",
    "activation_index",
}


def _payloads(node: Any, key: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every payload (a dict with ``metadata`` and ``data``) in a history's JSON, with the
    path of keys that leads to it."""
    if isinstance(node, dict):
        if isinstance(node.get("metadata"), dict) and "data" in node:
            yield key, node
        for name, value in node.items():
            yield from _payloads(value, f"{key}/{name}")
    elif isinstance(node, list):
        for value in node:
            yield from _payloads(value, key)


def test_every_committed_payload_is_ciphertext_under_the_published_test_key() -> None:
    """Histories are recorded through the agent's codec with the test-only key, never in
    clear and never under a real org's key; only core's local-activity bookkeeping is plain,
    and it holds nothing but its own fields."""
    key_id = history_keys().current_id.encode()
    for path in HISTORY_FILES:
        encrypted = 0
        for where, payload in _payloads(json.loads(path.read_text())):
            metadata = {k: base64.b64decode(v) for k, v in payload["metadata"].items()}
            if where.endswith("markerRecordedEventAttributes/details/data/payloads"):
                assert metadata == {"encoding": b"json/plain"}, path.name
                assert set(json.loads(base64.b64decode(payload["data"]))) <= _CORE_MARKER_FIELDS
                continue
            assert (metadata.get("encoding"), metadata.get(KEY_ID_METADATA)) == (
                ENCODING,
                key_id,
            ), f"{path.name}: {where}"
            encrypted += 1
        assert encrypted, f"{path.name} has no encrypted payload, not even its input"


# The check bites: one extra command in front of the credential test.


@workflow.defn(name=names.CREDENTIAL_TEST_WORKFLOW)
class CredentialTestAuditedFirst:
    """The credential test with a new activity before the test, added without a patch."""

    @workflow.run
    async def run(self, request: wpb.CredentialTestInput) -> wpb.CredentialTestResult:
        """Records the test's start, then tests as before."""
        await workflow.execute_activity(
            "record_test_started", request.run_id, start_to_close_timeout=timedelta(seconds=5)
        )
        return await CredentialTestWorkflow().run(request)


@workflow.defn(name=names.CREDENTIAL_TEST_WORKFLOW)
class CredentialTestAuditedFirstWhenPatched:
    """The same new activity, behind ``workflow.patched``: only new runs take it."""

    @workflow.run
    async def run(self, request: wpb.CredentialTestInput) -> wpb.CredentialTestResult:
        """Records the test's start (in runs started by this code), then tests as before."""
        if workflow.patched("record-test-started"):
            await workflow.execute_activity(
                "record_test_started", request.run_id, start_to_close_timeout=timedelta(seconds=5)
            )
        return await CredentialTestWorkflow().run(request)


def _credential_test_history() -> WorkflowHistory:
    paths = [p for p in HISTORY_FILES if p.name == f"{names.CREDENTIAL_TEST_WORKFLOW}.ok.json"]
    assert paths, "no recorded successful credential test"
    return load_history(paths[0])


def test_an_unpatched_new_command_fails_replay_as_nondeterministic() -> None:
    """An activity added in front of the old one does not match the recorded history."""
    with pytest.raises(workflow.NondeterminismError):
        _replay([CredentialTestAuditedFirst], _credential_test_history())


def test_the_same_command_behind_workflow_patched_replays_cleanly() -> None:
    """``workflow.patched`` is false while replaying a run recorded before the change, so
    the old run's commands come out unchanged."""
    result = _replay([CredentialTestAuditedFirstWhenPatched], _credential_test_history())
    assert result.replay_failure is None
