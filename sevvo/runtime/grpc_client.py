"""gRPC client channels to sevvo services: TLS with a CA bundle, a bearer on every call.

Credentials are composed at the channel level (``grpc.metadata_call_credentials``), so no call
can leave without its bearer, and the same helper serves sync and asyncio channels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.rpc import error_details_pb2, status_pb2

from sevvo.runtime.errors import ERROR_DOMAIN

BearerSource = Callable[[], str | None]
# gRPC's default reconnect backoff grows to two minutes: a service restarted in two seconds
# stayed unreachable to its callers for up to eleven failed calls. Peers are retried at most
# every 5 s instead (and first after 0.5 s).
RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
)


class _BearerPlugin(grpc.AuthMetadataPlugin):  # type: ignore[misc]
    def __init__(self, bearer: BearerSource) -> None:
        self._bearer = bearer

    def __call__(
        self,
        context: grpc.AuthMetadataContext,
        callback: grpc.AuthMetadataPluginCallback,
    ) -> None:
        try:
            token = self._bearer()
        except Exception as exc:  # Surface as a failed call, not a crashed plugin thread.
            callback((), exc)
            return
        callback((("authorization", f"Bearer {token}"),) if token else (), None)


@dataclass(frozen=True)
class ClientTls:
    """Trust anchors (the system's when ``ca_file`` is None), and a client cert for mTLS."""

    ca_file: Path | None
    cert_file: Path | None = None
    key_file: Path | None = None


def channel_credentials(
    tls: ClientTls, bearer: BearerSource | None = None
) -> grpc.ChannelCredentials:
    """TLS credentials verifying the server against ``tls.ca_file``, with an optional bearer."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=tls.ca_file.read_bytes() if tls.ca_file else None,
        private_key=tls.key_file.read_bytes() if tls.key_file else None,
        certificate_chain=tls.cert_file.read_bytes() if tls.cert_file else None,
    )
    if bearer is None:
        return creds
    return grpc.composite_channel_credentials(
        creds, grpc.metadata_call_credentials(_BearerPlugin(bearer))
    )


def secure_channel(target: str, tls: ClientTls, bearer: BearerSource | None = None) -> grpc.Channel:
    """A blocking channel to ``target`` (host:port) over TLS."""
    return grpc.secure_channel(target, channel_credentials(tls, bearer), RECONNECT_OPTIONS)


def secure_aio_channel(
    target: str, tls: ClientTls, bearer: BearerSource | None = None
) -> grpc.aio.Channel:
    """An asyncio channel to ``target`` (host:port) over TLS."""
    return grpc.aio.secure_channel(target, channel_credentials(tls, bearer), RECONNECT_OPTIONS)


@dataclass(frozen=True)
class ErrorDetails:
    """What a client branches on: the stable reason, plus the field for invalid arguments."""

    code: grpc.StatusCode
    reason: str | None
    message: str
    field: str | None = None
    metadata: dict[str, str] | None = None


def error_details(error: grpc.RpcError) -> ErrorDetails:
    """Extracts the sevvo ErrorInfo reason (and BadRequest field) from a failed call."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else ""
    reason: str | None = None
    field: str | None = None
    metadata: dict[str, str] | None = None
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailing or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                if info.domain == ERROR_DOMAIN:
                    reason = info.reason
                    metadata = dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                if bad.field_violations:
                    field = bad.field_violations[0].field
    return ErrorDetails(
        code=code, reason=reason, message=message or "", field=field, metadata=metadata
    )
