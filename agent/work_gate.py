"""The agent's gate: work runs only with the control plane's proof that it asked for it.

Every activity asks the gate first, before it resolves a credential or opens a database
session. The gate checks the input's proof (sevvo/runtime/work_proof.py) against what Temporal
says this activity belongs to — workflow id, run id, type — and the agent's own org. A
proof-less input is work started before proofs existed only if the orchestrator vouches for
it (it recorded the run then); anything else is refused and reported to the control plane's
audit log with the workflow id and the reason, never the input.
"""

from __future__ import annotations

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import Message
from temporalio import activity

from sevvo.connections.v1 import connections_pb2, connections_pb2_grpc
from sevvo.orchestrator.v1 import work_proof_pb2, work_proof_pb2_grpc
from sevvo.runtime import work_proof
from sevvo.runtime.grpc_client import error_details
from sevvo.runtime.logs import get_logger
from sevvo.runtime.work_proof import ProofKeyCache, WorkRefused

log = get_logger(__name__)


def key_cache(stub: work_proof_pb2_grpc.WorkProofServiceStub) -> ProofKeyCache:
    """A cache of the orchestrator's proof keys, fetched over the agent's channel."""

    async def fetch() -> dict[str, Ed25519PublicKey]:
        response = await stub.GetWorkProofKeys(work_proof_pb2.GetWorkProofKeysRequest(), timeout=10)
        return work_proof.public_keys({k.key_id: k.public_key for k in response.keys})

    return ProofKeyCache(fetch)


class WorkGate:
    """Admits work with a valid proof of origin; refuses and reports anything else."""

    def __init__(
        self,
        org_id: str,
        keys: ProofKeyCache,
        proofs: work_proof_pb2_grpc.WorkProofServiceStub,
        credentials: connections_pb2_grpc.ConnectionCredentialServiceStub,
    ) -> None:
        self._org_id = org_id
        self._keys = keys
        self._proofs = proofs
        self._credentials = credentials

    async def admit(self, request: Message) -> connections_pb2.WorkClaim | None:
        """The claim to present at resolve when ``request`` may run here; None when refused.

        Raises (so Temporal retries) only when the control plane cannot be asked.
        """
        workflow_id, run_id, workflow_type = _workflow_of_activity()
        proof: str = getattr(request, "proof", "")
        try:
            if not proof:
                proof = await self._vouched(workflow_id, workflow_type)
            await self._keys.verify(
                proof,
                org_id=self._org_id,
                workflow_id=workflow_id,
                workflow_type=workflow_type,
                digest=work_proof.input_digest(request),
            )
        except WorkRefused as refused:
            await self.report(refused.reason)
            return None
        return connections_pb2.WorkClaim(
            proof=proof,
            workflow_id=workflow_id,
            workflow_run_id=run_id,
            workflow_type=workflow_type,
        )

    async def _vouched(self, workflow_id: str, workflow_type: str) -> str:
        """The orchestrator's proof for a proof-less workflow it started before proofs existed."""
        try:
            response = await self._proofs.VouchForWork(
                work_proof_pb2.VouchForWorkRequest(
                    workflow_id=workflow_id, workflow_type=workflow_type
                ),
                timeout=10,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.NOT_FOUND:
                raise WorkRefused(
                    "WORK_PROOF_MISSING", "the input carries no proof and was not vouched for"
                ) from None
            raise
        return str(response.proof)

    async def report(self, reason: str) -> None:
        """Audits a refusal in the control plane; a failure to report is logged, not raised."""
        workflow_id, run_id, workflow_type = _workflow_of_activity()
        # The workflow id is the starter's choice: the audit record has it, the log the run id.
        log.warning(
            "work refused", workflow_run_id=run_id, workflow_type=workflow_type, reason=reason
        )
        try:
            await self._credentials.RecordWorkRefused(
                connections_pb2.RecordWorkRefusedRequest(
                    workflow_id=workflow_id,
                    workflow_run_id=run_id,
                    workflow_type=workflow_type,
                    reason=reason,
                ),
                timeout=5,
            )
        except grpc.aio.AioRpcError as exc:
            # The refusal stands; only its audit record is missing (the log line above stays).
            log.error(
                "work refusal not recorded",
                workflow_run_id=run_id,
                code=exc.code().name,
                reason=error_details(exc).reason,
            )


def _workflow_of_activity() -> tuple[str, str, str]:
    """The workflow id, run id and type the running activity belongs to, as Temporal says."""
    info = activity.info()
    return info.workflow_id or "", info.workflow_run_id or "", info.workflow_type or ""
