"""The orchestrator's rules: start credential tests on the org's queue and keep run metadata.

The org always comes from the caller's verified token, so a user of one org can neither
start work on another org's task queue nor read its runs.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from temporalio.client import Client, WorkflowFailureError
from temporalio.common import WorkflowIDReusePolicy

from services.orchestrator.store import OrchestratorStore, PayloadKeyRow, RunRow
from sevvo.runtime import paging, temporal, validation
from sevvo.runtime.errors import InvalidArgument, NotFound
from sevvo.runtime.logs import get_logger
from sevvo.runtime.payload_codec import OrgPayloadKeys, PayloadKey, data_converter
from sevvo.runtime.sealing import Keyring, Sealed, seal, unseal
from sevvo.runtime.tokens import Principal
from sevvo.workflows.v1 import workflows_pb2

log = get_logger(__name__)

_CATEGORY_NAMES = {
    value: name.removeprefix("TEST_CATEGORY_").lower()
    for name, value in workflows_pb2.TestCategory.items()
}


def category_name(category: int) -> str:
    """The stable lower_snake name of a test category, as runs and connections record it."""
    return _CATEGORY_NAMES.get(category, "other")


def _key_aad(org_id: uuid.UUID, key_id: str) -> bytes:
    return f"sevvo.orchestrator.v1.payload_key|{org_id}|{key_id}".encode()


class PayloadKeys:
    """Per-org payload keys: created on first use, sealed at rest, cached in memory."""

    def __init__(self, store: OrchestratorStore, keyring: Keyring) -> None:
        self._store = store
        self._keyring = keyring
        self._cache: dict[uuid.UUID, OrgPayloadKeys] = {}

    def for_org(self, org_id: uuid.UUID) -> OrgPayloadKeys:
        """The org's keys, creating its first key when it has none."""
        cached = self._cache.get(org_id)
        if cached is not None:
            return cached
        rows = self._store.payload_keys(org_id)
        if not rows:
            key_id = f"pk-{secrets.token_hex(6)}"
            sealed = seal(self._keyring, secrets.token_bytes(32), _key_aad(org_id, key_id))
            self._store.insert_payload_key_if_none(
                PayloadKeyRow(org_id, key_id, sealed.key_id, sealed.blob, datetime.now(UTC))
            )
            rows = self._store.payload_keys(org_id)
        keys = [
            PayloadKey(
                row.key_id,
                unseal(
                    self._keyring, Sealed(row.kek_id, row.sealed_key), _key_aad(org_id, row.key_id)
                ),
            )
            for row in rows
        ]
        org_keys = OrgPayloadKeys(str(org_id), keys, current_id=rows[-1].key_id)
        self._cache[org_id] = org_keys
        return org_keys


class OrchestratorDomain:
    """The operations behind OrchestratorService and PayloadKeyService."""

    def __init__(
        self,
        store: OrchestratorStore,
        payload_keys: PayloadKeys,
        temporal_client: Client,
        *,
        test_timeout: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._keys = payload_keys
        self._temporal = temporal_client
        self._test_timeout = test_timeout
        self._clock = clock
        self._clients: dict[uuid.UUID, Client] = {}

    def _client_for(self, org_id: uuid.UUID) -> Client:
        # One service connection; each org gets its own data converter so its payloads are
        # encrypted with its own key.
        client = self._clients.get(org_id)
        if client is None:
            config = self._temporal.config()
            config["data_converter"] = data_converter(self._keys.for_org(org_id))
            client = Client(**config)
            self._clients[org_id] = client
        return client

    async def test_connection(
        self, caller: Principal, *, connection_id: str = "", draft_id: str = ""
    ) -> RunRow:
        """Starts a credential test on the caller's org's queue and waits for its outcome."""
        if bool(connection_id) == bool(draft_id):
            raise InvalidArgument("target", "set exactly one of connection_id or draft_id")
        field = "connection_id" if connection_id else "draft_id"
        target = validation.resource_id(field, connection_id or draft_id)
        org_id = uuid.UUID(caller.org_id)
        run_id = uuid.uuid4()
        workflow_id = f"credential-test-{run_id}"
        run = RunRow(
            id=run_id,
            org_id=org_id,
            kind="credential_test",
            state="running",
            connection_id=target if connection_id else None,
            draft_id=target if draft_id else None,
            workflow_id=workflow_id,
            outcome_category=None,
            message=None,
            started_at=self._clock(),
            finished_at=None,
            duration_ms=None,
        )
        await asyncio.to_thread(self._store.insert_run, run)
        request = workflows_pb2.CredentialTestInput(run_id=str(run_id))
        if connection_id:
            request.connection_id = str(target)
        else:
            request.draft_id = str(target)
        client = await asyncio.to_thread(self._client_for, org_id)
        started = time.monotonic()
        # Ids and categories only: the workflow id, queue and input hold no host, database or SQL.
        handle = await client.start_workflow(
            temporal.CREDENTIAL_TEST_WORKFLOW,
            request,
            id=workflow_id,
            task_queue=temporal.task_queue(caller.org_id),
            execution_timeout=self._test_timeout,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            result_type=workflows_pb2.CredentialTestResult,
        )
        log.info("credential test started", run_id=str(run_id), workflow_id=workflow_id)
        state, category, message = "succeeded", None, None
        try:
            result = await asyncio.wait_for(
                handle.result(), timeout=self._test_timeout.total_seconds() + 5
            )
            category, message = category_name(result.category), result.message
        except (TimeoutError, WorkflowFailureError) as exc:
            timed_out = isinstance(exc, TimeoutError) or "timed out" in str(exc.cause).lower()
            state = "timed_out" if timed_out else "failed"
            category = "agent_unavailable" if timed_out else "workflow_failed"
            message = (
                "no agent of this org finished the test in time: check that an agent is running"
                if timed_out
                else "the credential test failed inside the agent; see the agent's logs"
            )
        finished = await asyncio.to_thread(
            self._store.finish_run,
            run_id,
            state=state,
            category=category,
            message=message,
            finished_at=self._clock(),
            duration_ms=int((time.monotonic() - started) * 1000),
        )
        log.info("credential test finished", run_id=str(run_id), state=state, category=category)
        return finished or await self.get_run(caller, str(run_id))

    async def get_run(self, caller: Principal, run_id: str) -> RunRow:
        """A run of the caller's org."""
        rid = validation.resource_id("id", run_id)
        row = await asyncio.to_thread(self._store.get_run, uuid.UUID(caller.org_id), rid)
        if row is None:
            raise NotFound("run not found", reason="RUN_NOT_FOUND")
        return row

    async def list_runs(
        self, caller: Principal, page_size: int, page_token: str
    ) -> tuple[list[RunRow], str]:
        """One page of the caller's org's runs, newest first."""
        limit = paging.page_size(page_size)
        rows = await asyncio.to_thread(
            self._store.list_runs,
            uuid.UUID(caller.org_id),
            limit + 1,
            paging.decode_cursor(page_token),
        )
        if len(rows) <= limit:
            return rows, ""
        rows = rows[:limit]
        return rows, paging.encode_cursor(rows[-1].started_at, str(rows[-1].id))

    async def payload_keys(self, caller: Principal) -> OrgPayloadKeys:
        """The caller's org's payload keys (agents only)."""
        return await asyncio.to_thread(self._keys.for_org, uuid.UUID(caller.org_id))
