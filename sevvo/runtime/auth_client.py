"""How services other than auth learn auth's keys and revocations: over gRPC, by polling."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC as _UTC
from typing import TypeVar

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import Message

from sevvo.auth.v1 import auth_pb2, auth_pb2_grpc
from sevvo.runtime.grpc_client import ClientTls, secure_channel
from sevvo.runtime.tokens import TokenVerifier, TrustState, VerificationKey

R = TypeVar("R", bound=Message)


class RemoteTrustSource:
    """A TrustSource that polls auth for its public keys and its revocations."""

    def __init__(self, channel: grpc.Channel, *, timeout: float = 3.0) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)
        self._timeout = timeout

    def _newer(self, call: Callable[..., R], request: Message, empty: R) -> R:
        """``call(request)`` on an auth that serves it; ``empty`` on an older one."""
        try:
            return call(request, timeout=self._timeout)
        except grpc.RpcError as error:
            # An auth of a release before sessions or workloads became revocable has none to
            # report; failing here would fail every call closed during a rolling upgrade.
            if error.code() is grpc.StatusCode.UNIMPLEMENTED:
                return empty
            raise

    def fetch(self) -> TrustState:
        """Fetches keys and revocations; raises grpc.RpcError when auth is unreachable."""
        keys = self._stub.GetPublicKeys(auth_pb2.GetPublicKeysRequest(), timeout=self._timeout)
        revoked = self._stub.ListRevokedDeployments(
            auth_pb2.ListRevokedDeploymentsRequest(), timeout=self._timeout
        )
        sessions = self._newer(
            self._stub.ListRevokedSessions,
            auth_pb2.ListRevokedSessionsRequest(),
            auth_pb2.ListRevokedSessionsResponse(),
        )
        workloads = self._newer(
            self._stub.ListRevokedWorkloads,
            auth_pb2.ListRevokedWorkloadsRequest(),
            auth_pb2.ListRevokedWorkloadsResponse(),
        )
        return TrustState(
            keys={
                k.kid: VerificationKey(
                    kid=k.kid,
                    public_key=Ed25519PublicKey.from_public_bytes(k.public_key),
                    not_before=k.not_before.ToDatetime(tzinfo=_UTC),
                    verify_until=(
                        k.verify_until.ToDatetime(tzinfo=_UTC)
                        if k.HasField("verify_until")
                        else None
                    ),
                )
                for k in keys.keys
                if k.algorithm == "EdDSA"
            },
            revoked_deployments={
                d.deployment_id: d.revoke_time.ToDatetime(tzinfo=_UTC) for d in revoked.deployments
            },
            revoked_sessions={
                s.token_id: s.expire_time.ToDatetime(tzinfo=_UTC) for s in sessions.sessions
            },
            sessions_valid_after={
                c.user_id: c.valid_after.ToDatetime(tzinfo=_UTC) for c in sessions.cutoffs
            },
            revoked_workloads={
                w.workload_id: w.revoke_time.ToDatetime(tzinfo=_UTC) for w in workloads.workloads
            },
            workload_generations={w.workload_id: w.generation for w in workloads.changed},
        )


def remote_verifier(
    auth_endpoint: str,
    tls: ClientTls,
    *,
    refresh_seconds: float,
    leeway_seconds: int,
) -> tuple[TokenVerifier, grpc.Channel]:
    """A verifier for a service other than auth, and the channel it polls auth on.

    Fails closed once auth has been unreachable for three refresh intervals (at least 5 s),
    so a revoked agent cannot keep working against a service that lost touch with auth.
    """
    channel = secure_channel(auth_endpoint, tls)
    verifier = TokenVerifier(
        RemoteTrustSource(channel),
        refresh_interval=refresh_seconds,
        max_staleness=max(5.0, 3 * refresh_seconds),
        leeway_seconds=leeway_seconds,
    )
    return verifier, channel
