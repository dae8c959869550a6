"""What auth, the orchestrator and the agent share about Temporal: names, queues, tokens, TLS.

Workflow and activity names are the contract of protos/sevvo/workflows/v1: the orchestrator
starts workflows by these names and the agent registers its implementations under them.

Each org has a namespace of its own (``namespace_for``) holding its task queue
``tenant-{orgId}``. In production Temporal's stock JWT authorizer keeps orgs apart by
namespace, on tokens that auth issues in the format its default claim mapper reads
(temporalio/temporal common/authorization/default_jwt_claim_mapper.go): a ``permissions``
claim of ``<namespace>:<role>`` strings, ``sub``, ``exp``, signed ES256 with a key named by
``kid`` in the JWKS auth serves. See deploy/k8s/README.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from google.protobuf.duration_pb2 import Duration
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.service import RPCError, RPCStatusCode, TLSConfig, WorkflowService

from sevvo.runtime.logs import get_logger
from sevvo.runtime.watched_files import FileWatch, UnusableFiles, read_ca, read_key_pair

log = get_logger(__name__)

CREDENTIAL_TEST_WORKFLOW = "CredentialTestWorkflow"
TEST_CREDENTIALS_ACTIVITY = "test_credentials"
PREVIEW_WORKFLOW = "PreviewQueryWorkflow"
PREVIEW_ACTIVITY = "preview_query"
ROOT_ROTATION_WORKFLOW = "RootRotationWorkflow"
ROOT_ROTATION_ACTIVITY = "rotate_root_credentials"
SYNC_WORKFLOW = "SyncWorkflow"
SYNC_ACTIVITY = "sync_model"


def task_queue(org_id: str) -> str:
    """The one task queue an org's agents poll: ``tenant-{orgId}``."""
    return f"tenant-{uuid.UUID(org_id)}"


def namespace_for(org_id: str) -> str:
    """The org's Temporal namespace: opaque, so listing namespaces reveals no org id."""
    digest = hashlib.sha256(b"sevvo.temporal-namespace.v1\x00" + org_id.encode()).hexdigest()
    return "sevvo-" + digest[:24]


# The namespace every org shared before namespaces per org; still drained after an upgrade.
LEGACY_NAMESPACE = "default"
# Temporal's default claim mapper: the claim it reads, and the roles it knows. Its default
# authorizer compares role bitmasks (worker 1 < read 2 < write 4 < admin 8) against what an
# API needs, and polling and completing tasks need write: worker alone lets a worker do
# nothing (server 1.32, common/authorization/default_authorizer.go and roles.go). An agent's
# token therefore holds worker and write on its own namespace, nothing else.
PERMISSIONS_CLAIM = "permissions"
AGENT_ROLES = ("worker", "write")
# The orchestrator registers namespaces (an admin API of the namespace itself).
ORCHESTRATOR_ROLES = ("admin",)
# The audience of Temporal tokens: never a sevvo service's, so no sevvo verifier takes one.
TOKEN_AUDIENCE = "sevvo-temporal"
AUTHORIZATION_HEADER = "authorization"
# How the orchestrator proves itself to auth's IssueTemporalToken (a mounted service token).
SERVICE_TOKEN_METADATA = "x-sevvo-service-token"


def permissions(namespace: str, roles: tuple[str, ...]) -> list[str]:
    """The ``permissions`` claim granting ``roles`` on ``namespace`` and nothing else."""
    return [f"{namespace}:{role}" for role in roles]


def rpc_metadata(token: str | None) -> dict[str, str]:
    """gRPC metadata carrying a Temporal token as Temporal's claim mapper expects it."""
    return {AUTHORIZATION_HEADER: f"Bearer {token}"} if token else {}


async def ensure_namespace(service: WorkflowService, namespace: str, retention: timedelta) -> bool:
    """Registers ``namespace`` unless it exists; True when this call created it.

    Idempotent and safe to race: Temporal registers a name once and answers ALREADY_EXISTS
    to everyone else, which counts as success here.
    """
    try:
        await service.register_namespace(
            RegisterNamespaceRequest(
                namespace=namespace,
                description="sevvo org namespace",
                workflow_execution_retention_period=Duration(
                    seconds=int(retention.total_seconds())
                ),
            ),
            timeout=timedelta(seconds=10),
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.ALREADY_EXISTS:
            return False
        raise
    return True


def tls_config(
    *,
    ca_file: Path | None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    server_name: str | None = None,
) -> TLSConfig:
    """TLS for a Temporal frontend, with a client certificate when mTLS is configured."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("a client certificate needs both its certificate and its key")
    return TLSConfig(
        server_root_ca_cert=ca_file.read_bytes() if ca_file else None,
        client_cert=cert_file.read_bytes() if cert_file else None,
        client_private_key=key_file.read_bytes() if key_file else None,
        domain=server_name,
    )


# How often the Temporal TLS files are checked; a Temporal client is costly to replace, and
# a renewal leaves the old certificate valid for days.
TLS_CHECK_SECONDS = 10.0


async def follow_tls_files(
    *,
    ca_file: Path | None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    server_name: str | None = None,
    replace: Callable[[TLSConfig], Awaitable[None]],
    check_seconds: float = TLS_CHECK_SECONDS,
) -> None:
    """Calls ``replace`` with a new TLSConfig each time the files change and still parse.

    temporalio's clients hold the TLS bytes they were made with and have no way to take new
    ones, so following a renewal means connecting a new client (``replace`` does that, and
    hands it to the workers through ``Worker.client``). A bundle or pair that does not parse
    or fit is reported once and skipped; a replacement that fails (Temporal unreachable) is
    tried again at the next check. Runs until cancelled.
    """
    paths = [p for p in (ca_file, cert_file, key_file) if p is not None]
    if not paths:
        # Nothing to follow (the system's roots, no client certificate); callers treat this
        # task ending as the process stopping, so it waits like the others.
        await asyncio.Event().wait()
    watch = FileWatch(paths, check_seconds=0)
    while True:
        await asyncio.sleep(check_seconds)
        changed = watch.changed()
        if changed is None:
            continue
        try:
            if ca_file is not None:
                read_ca(ca_file)
            if cert_file is not None and key_file is not None:
                read_key_pair(cert_file, key_file)
        except UnusableFiles as exc:
            watch.take(changed)
            log.warning(
                "temporal tls files changed but cannot be used; keeping the current client",
                problem=str(exc),
            )
            continue
        try:
            await replace(
                tls_config(
                    ca_file=ca_file, cert_file=cert_file, key_file=key_file, server_name=server_name
                )
            )
        except Exception as exc:  # Keep the working client; this task must not end.
            # temporalio reports connect failures as RuntimeError, whose text names the
            # address and the TLS problem; anything else is named by its type.
            error = str(exc)[:200] if isinstance(exc, RuntimeError) else type(exc).__name__
            log.warning("temporal client with the new tls files failed; retrying", error=error)
            continue
        watch.take(changed)
        log.info("temporal client replaced after its tls files changed")
