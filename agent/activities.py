"""Activities the agent runs next to the customer's data. Credentials are fetched by reference.

The workflow input names a connection or draft; the credentials come from the connections
service at run time, over the agent's own authenticated channel, and never enter Temporal.
Each activity first has the work gate check the input's proof of origin (agent/work_gate.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from temporalio import activity

from agent.directory_probe import DirectoryUnusable, probe_directory, usable_directory
from agent.dynamic_credentials import dry_run
from agent.leases import LeaseManager
from agent.postgres_probe import connect, probe_postgres
from agent.preview_executor import connection_failure, run_preview
from agent.root_rotation import PrivilegedLoginFailed, rotate_privileged_password
from agent.sync.run import Destination, failure, run_sync
from agent.work_gate import WorkGate
from sevvo.connections.v1 import connections_pb2, connections_pb2_grpc
from sevvo.runtime import temporal
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.logs import get_logger
from sevvo.runtime.outcomes import (
    DIRECTORY_UNUSABLE,
    DYNAMIC_STATEMENTS_FAILED,
    INVALID_STORED_CREDENTIALS,
    PREVIEW_CATEGORIES,
    QUERY_REJECTED,
    ROOT_ROTATION_CATEGORIES,
    SYNC_CATEGORIES,
    TEST_CATEGORIES,
    WORK_REFUSED,
)
from sevvo.runtime.preview_validator import QueryRejected, validate_preview_sql
from sevvo.runtime.work_proof import REASONS, WorkRefused
from sevvo.workflows.v1 import workflows_pb2

log = get_logger(__name__)
Request = TypeVar("Request", bound=Message)
Result = TypeVar("Result", bound=Message)

# Receipts that make a preview a security event in the audit log.
_SECURITY_EVENTS = frozenset(
    {
        workflows_pb2.PREVIEW_RECEIPT_STATUS_NOT_CLEAN,
        workflows_pb2.PREVIEW_RECEIPT_STATUS_MISSING,
    }
)

# How often a sync renews the leases of its minted logins on dynamic connections: within the
# shortest TTL a connection role may have (60 s), so a long sync never outlives its login.
SYNC_LEASE_RENEWAL = timedelta(seconds=25)

# The control plane answered, and the answer means these credentials cannot be used.
_UNUSABLE = {
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.INVALID_ARGUMENT,
}


class AgentActivities:
    """The agent's activities, sharing one channel to the control plane."""

    def __init__(
        self,
        credentials: connections_pb2_grpc.ConnectionCredentialServiceStub,
        leases: LeaseManager,
        gate: WorkGate,
        file_roots: Sequence[Path] = (),
    ) -> None:
        self._credentials = credentials
        self._leases = leases
        self._gate = gate
        # The directories a Parquet directory connection may name (SEVVO_AGENT_FILE_ROOTS).
        self._file_roots = tuple(file_roots)

    async def _gated(
        self,
        request: Request,
        refused: Result,
        body: Callable[[Request, connections_pb2.WorkClaim], Awaitable[Result]],
    ) -> Result:
        """Runs ``body`` only for work whose proof of origin holds; else ``refused``.

        The proof is checked here, before anything resolves a credential; connections checks
        it again at resolve and refuses a second run of the same workflow id.
        """
        claim = await self._gate.admit(request)
        if claim is None:
            return refused
        try:
            return await body(request, claim)
        except WorkRefused:
            return refused

    async def _resolve(
        self,
        purpose: str,
        work: connections_pb2.WorkClaim,
        *,
        connection_id: str = "",
        draft_id: str = "",
    ) -> connections_pb2.ResolveConnectionCredentialsResponse | None:
        """Fetches credentials by reference; None when the control plane says they are unusable.

        Raises WorkRefused when connections refuses the work's proof (it audits that itself).
        Unreachable or unauthenticated control planes raise, so Temporal retries the activity.
        """
        request = connections_pb2.ResolveConnectionCredentialsRequest(
            purpose=purpose, connection_id=connection_id, draft_id=draft_id, work=work
        )
        try:
            resolved: connections_pb2.ResolveConnectionCredentialsResponse = (
                await self._credentials.ResolveConnectionCredentials(request, timeout=10)
            )
        except grpc.aio.AioRpcError as exc:
            reason = error_details(exc).reason
            if exc.code() is grpc.StatusCode.PERMISSION_DENIED and reason in REASONS:
                log.warning(
                    "work refused at resolve", workflow_run_id=work.workflow_run_id, reason=reason
                )
                raise WorkRefused(reason, "refused by the control plane") from None
            if exc.code() not in _UNUSABLE:
                raise
            log.info("stored credentials unusable", reason=reason)
            return None
        return resolved

    @activity.defn(name=temporal.TEST_CREDENTIALS_ACTIVITY)
    async def test_credentials(
        self, request: workflows_pb2.CredentialTestInput
    ) -> workflows_pb2.CredentialTestResult:
        """Resolves the credentials and probes the database with them, if the work is proved."""
        refused = workflows_pb2.CredentialTestResult(
            category=TEST_CATEGORIES.value(WORK_REFUSED),
            message=TEST_CATEGORIES.message(WORK_REFUSED),
        )
        return await self._gated(request, refused, self._test_credentials)

    async def _test_credentials(
        self, request: workflows_pb2.CredentialTestInput, work: connections_pb2.WorkClaim
    ) -> workflows_pb2.CredentialTestResult:
        log.info("credential test started", run_id=request.run_id)
        target = request.WhichOneof("target")
        resolved = await self._resolve(
            "credential_test",
            work,
            connection_id=request.connection_id if target == "connection_id" else "",
            draft_id=request.draft_id if target == "draft_id" else "",
        )
        if resolved is None:
            return workflows_pb2.CredentialTestResult(
                category=TEST_CATEGORIES.value(INVALID_STORED_CREDENTIALS),
                message=TEST_CATEGORIES.message(INVALID_STORED_CREDENTIALS),
            )
        if resolved.HasField("parquet_directory"):
            # Nothing to log in to: the test is whether this agent may and can write there.
            result = await probe_directory(resolved.parquet_directory.path, self._file_roots)
        elif target == "draft_id":
            # A draft is not a connection yet: test the login it would use (for a dynamic
            # connection, the privileged role's), then dry-run its statements, minting nothing.
            result = await probe_postgres(resolved.postgres)
            if result.category == workflows_pb2.TEST_CATEGORY_OK and resolved.HasField("dynamic"):
                result = await self._dry_run(resolved, result)
        else:
            try:
                async with self._leases.workload_credentials(
                    request.connection_id, "credential_test", resolved
                ) as workload:
                    result = await probe_postgres(workload)
            except PrivilegedLoginFailed as exc:
                # The privileged role's login is the connection's login: its failure is the
                # test's outcome, reported at once rather than retried until a timeout.
                result = workflows_pb2.CredentialTestResult(
                    category=exc.category, message=TEST_CATEGORIES.message(exc.category)
                )
        log.info(
            "credential test done",
            run_id=request.run_id,
            category=workflows_pb2.TestCategory.Name(result.category),
            duration_ms=result.duration_ms,
        )
        return result

    @staticmethod
    async def _dry_run(
        resolved: connections_pb2.ResolveConnectionCredentialsResponse,
        probed: workflows_pb2.CredentialTestResult,
    ) -> workflows_pb2.CredentialTestResult:
        """Creates and drops a scratch role with the draft's statements, inside a rollback."""
        admin = await connect(resolved.postgres, connect_timeout=10.0)
        try:
            failure = await dry_run(
                admin,
                creation=list(resolved.dynamic.creation_statements),
                revocation=list(resolved.dynamic.revocation_statements) or None,
            )
        finally:
            await admin.close()
        if failure is None:
            return probed
        # The catalogue's message, then which statement failed and the server's reason.
        what = TEST_CATEGORIES.message(DYNAMIC_STATEMENTS_FAILED)
        return workflows_pb2.CredentialTestResult(
            category=TEST_CATEGORIES.value(DYNAMIC_STATEMENTS_FAILED),
            message=f"{what} — {failure.describe()}",
            duration_ms=probed.duration_ms,
            server_version=probed.server_version,
        )

    @activity.defn(name=temporal.PREVIEW_ACTIVITY)
    async def preview_query(
        self, request: workflows_pb2.PreviewQueryInput
    ) -> workflows_pb2.PreviewQueryResult:
        """Validates the SQL with the Postgres parser, then runs it read-only, bounded.

        Unproved work is refused first. A rejected statement never fetches credentials or
        reaches the database. The SQL is never logged.
        """
        refused = workflows_pb2.PreviewQueryResult(
            category=PREVIEW_CATEGORIES.value(WORK_REFUSED),
            message=PREVIEW_CATEGORIES.message(WORK_REFUSED),
        )
        return await self._gated(request, refused, self._preview_query)

    async def _preview_query(
        self, request: workflows_pb2.PreviewQueryInput, work: connections_pb2.WorkClaim
    ) -> workflows_pb2.PreviewQueryResult:
        try:
            query = validate_preview_sql(request.sql)
        except QueryRejected as exc:
            log.info("preview rejected", run_id=request.run_id, reason=exc.reason)
            return workflows_pb2.PreviewQueryResult(
                category=workflows_pb2.PREVIEW_CATEGORY_QUERY_REJECTED,
                message=exc.message,
                position=exc.position or 0,
            )
        resolved = await self._resolve("preview", work, connection_id=request.connection_id)
        if resolved is None:
            return workflows_pb2.PreviewQueryResult(
                category=PREVIEW_CATEGORIES.value(INVALID_STORED_CREDENTIALS),
                message=PREVIEW_CATEGORIES.message(INVALID_STORED_CREDENTIALS),
            )
        try:
            async with self._leases.workload_credentials(
                request.connection_id, "preview", resolved
            ) as workload:
                result = await run_preview(
                    workload,
                    query,
                    allowed_functions=list(resolved.preview.allowed_functions),
                    max_plan_cost=resolved.preview.max_plan_cost,
                )
        except PrivilegedLoginFailed as exc:
            result = connection_failure(exc.category, duration_ms=0)
        receipt = result.receipt
        log.info(
            "preview done",
            run_id=request.run_id,
            category=workflows_pb2.PreviewCategory.Name(result.category),
            rows=len(result.rows),
            truncated=result.truncated,
            duration_ms=result.duration_ms,
            receipt=workflows_pb2.PreviewReceiptStatus.Name(receipt.status),
        )
        if receipt.status in _SECURITY_EVENTS:
            await self._record_security_event(request, receipt)
        return result

    async def _record_security_event(
        self, request: workflows_pb2.PreviewQueryInput, receipt: workflows_pb2.PreviewReceipt
    ) -> None:
        """Audits a preview that could not prove it changed nothing; never fails the preview."""
        log.warning(
            "preview receipt not clean",
            run_id=request.run_id,
            connection_id=request.connection_id,
            receipt=workflows_pb2.PreviewReceiptStatus.Name(receipt.status),
            transaction_id_assigned=receipt.transaction_id_assigned,
            advisory_locks_held=receipt.advisory_locks_held,
            role_sessions_ended=receipt.role_sessions_ended,
            backend_outlived_call=receipt.backend_outlived_call,
        )
        try:
            await self._credentials.RecordPreviewSecurityEvent(
                connections_pb2.RecordPreviewSecurityEventRequest(
                    connection_id=request.connection_id,
                    run_id=request.run_id,
                    receipt_missing=receipt.status == workflows_pb2.PREVIEW_RECEIPT_STATUS_MISSING,
                    transaction_id_assigned=receipt.transaction_id_assigned,
                    advisory_locks_held=receipt.advisory_locks_held,
                    role_sessions_ended=receipt.role_sessions_ended,
                    backend_outlived_call=receipt.backend_outlived_call,
                ),
                # Short: the activity's 25 s must still hold the statement and its timeout.
                timeout=5,
            )
        except grpc.aio.AioRpcError as exc:
            # The rows are already read; retrying the activity would run the query again.
            # The warning above stays in the agent's log.
            log.error(
                "preview security event not recorded",
                run_id=request.run_id,
                code=exc.code().name,
                reason=error_details(exc).reason,
            )

    @activity.defn(name=temporal.ROOT_ROTATION_ACTIVITY)
    async def rotate_root_credentials(
        self, request: workflows_pb2.RootRotationInput
    ) -> workflows_pb2.RootRotationResult:
        """Rotates a dynamic connection's privileged password, if the work is proved; no
        password leaves the agent except, sealed, to the control plane's store."""
        refused = workflows_pb2.RootRotationResult(
            category=ROOT_ROTATION_CATEGORIES.value(WORK_REFUSED),
            message=ROOT_ROTATION_CATEGORIES.message(WORK_REFUSED),
        )
        return await self._gated(request, refused, self._rotate_root_credentials)

    async def _rotate_root_credentials(
        self, request: workflows_pb2.RootRotationInput, work: connections_pb2.WorkClaim
    ) -> workflows_pb2.RootRotationResult:
        log.info("root rotation started", run_id=request.run_id)
        resolved = await self._resolve("root_rotation", work, connection_id=request.connection_id)
        if resolved is None:
            return workflows_pb2.RootRotationResult(
                category=ROOT_ROTATION_CATEGORIES.value(INVALID_STORED_CREDENTIALS),
                message=ROOT_ROTATION_CATEGORIES.message(INVALID_STORED_CREDENTIALS),
            )
        result = await rotate_privileged_password(
            self._credentials, request.connection_id, resolved
        )
        log.info(
            "root rotation done",
            run_id=request.run_id,
            category=workflows_pb2.RootRotationCategory.Name(result.category),
            recovered=result.recovered,
            duration_ms=result.duration_ms,
        )
        return result

    @activity.defn(name=temporal.SYNC_ACTIVITY)
    async def sync_model(self, request: workflows_pb2.SyncInput) -> workflows_pb2.SyncResult:
        """Syncs a model, if the work is proved; only counts and a fingerprint come back.

        The statement is checked by the same validator a preview's is, before any credential
        is resolved; it then runs in a READ ONLY, REPEATABLE READ transaction at the source.
        """
        refused = failure(WORK_REFUSED)
        return await self._gated(request, refused, self._sync_model)

    @asynccontextmanager
    async def _sync_destination(
        self,
        request: workflows_pb2.SyncInput,
        resolved: connections_pb2.ResolveConnectionCredentialsResponse,
    ) -> AsyncIterator[Destination]:
        """Where the sync writes: a Parquet directory this agent may write (DirectoryUnusable
        otherwise, the roots checked again at every run), or a Postgres login (minted and kept
        alive on a dynamic connection)."""
        if resolved.HasField("parquet_directory"):
            yield Path(usable_directory(resolved.parquet_directory.path, self._file_roots))
            return
        async with self._leases.workload_credentials(
            request.destination_connection_id,
            "sync_destination",
            resolved,
            keep_alive=SYNC_LEASE_RENEWAL,
        ) as writer:
            yield writer

    async def _sync_model(
        self, request: workflows_pb2.SyncInput, work: connections_pb2.WorkClaim
    ) -> workflows_pb2.SyncResult:
        info = activity.info()
        log.info("sync started", run_id=request.run_id, attempt=info.attempt)
        try:
            validate_preview_sql(request.sql)
        except QueryRejected as exc:
            log.info("sync query rejected", run_id=request.run_id, reason=exc.reason)
            return failure(QUERY_REJECTED, exc.message)
        source = await self._resolve(
            "sync_source", work, connection_id=request.source_connection_id
        )
        destination = await self._resolve(
            "sync_destination", work, connection_id=request.destination_connection_id
        )
        if source is None or destination is None:
            return failure(INVALID_STORED_CREDENTIALS)
        try:
            async with (
                self._leases.workload_credentials(
                    request.source_connection_id,
                    "sync_source",
                    source,
                    keep_alive=SYNC_LEASE_RENEWAL,
                ) as reader,
                self._sync_destination(request, destination) as writer,
            ):
                result = await run_sync(
                    request,
                    reader,
                    writer,
                    heartbeat=lambda copied: activity.heartbeat(copied),
                    attempt=info.attempt,
                )
        except PrivilegedLoginFailed as exc:
            entry = TEST_CATEGORIES.outcome(exc.category)
            result = failure(entry if SYNC_CATEGORIES.has(entry) else INVALID_STORED_CREDENTIALS)
        except DirectoryUnusable as exc:
            result = failure(
                DIRECTORY_UNUSABLE, f"{SYNC_CATEGORIES.message(DIRECTORY_UNUSABLE)} — {exc}"
            )
        log.info(
            "sync done",
            run_id=request.run_id,
            category=workflows_pb2.SyncCategory.Name(result.category),
            rows=result.rows,
            bytes=result.bytes,
            duration_ms=result.duration_ms,
        )
        return result
