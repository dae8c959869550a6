"""What the orchestrator and the agent share about Temporal: names, queues and TLS.

Workflow and activity names are the contract of protos/sevvo/workflows/v1: the orchestrator
starts workflows by these names and the agent registers its implementations under them.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from temporalio.service import TLSConfig

CREDENTIAL_TEST_WORKFLOW = "CredentialTestWorkflow"
TEST_CREDENTIALS_ACTIVITY = "test_credentials"
PREVIEW_WORKFLOW = "PreviewQueryWorkflow"
PREVIEW_ACTIVITY = "preview_query"
ROOT_ROTATION_WORKFLOW = "RootRotationWorkflow"
ROOT_ROTATION_ACTIVITY = "rotate_root_credentials"


def task_queue(org_id: str) -> str:
    """The one task queue an org's agents poll: ``tenant-{orgId}``."""
    return f"tenant-{uuid.UUID(org_id)}"


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
