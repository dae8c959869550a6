"""gRPC client channels to sevvo services: TLS with a CA bundle, a bearer on every call.

The bearer is added by a client interceptor on the channel, so no call can leave without it,
and the channels are only ever TLS. Not ``grpc.metadata_call_credentials``: its plugin runs
Python on gRPC's own threads, which then need the GIL while holding gRPC's locks, and a
server or channel shut down in the same process at that moment deadlocked the whole process
(seen in the test suite: an aio server's stop and a plugin thread, each waiting on the other).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _with_bearer(
    bearer: BearerSource, metadata: Sequence[tuple[str, str | bytes]] | None
) -> list[tuple[str, str | bytes]]:
    token = bearer()
    added = [("authorization", f"Bearer {token}")] if token else []
    return [*(metadata or ()), *added]


class _ClientCallDetails(
    collections.namedtuple(
        "_ClientCallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,  # type: ignore[misc]
):
    """The call details gRPC's sync interceptors pass on (its own class is private)."""


class _BearerInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds the current bearer to every call of a blocking channel."""

    def __init__(self, bearer: BearerSource) -> None:
        self._bearer = bearer

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _ClientCallDetails(
            details.method,
            details.timeout,
            _with_bearer(self._bearer, details.metadata),
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class _AioBearer:
    """Adds the current bearer to the calls of an asyncio channel."""

    def __init__(self, bearer: BearerSource) -> None:
        self._bearer = bearer

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*_with_bearer(self._bearer, details.metadata)),
            details.credentials,
            details.wait_for_ready,
        )


class _AioUnaryUnaryBearer(_AioBearer, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AioUnaryStreamBearer(_AioBearer, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AioStreamUnaryBearer(_AioBearer, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _AioStreamStreamBearer(_AioBearer, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def _aio_bearer_interceptors(bearer: BearerSource) -> list[grpc.aio.ClientInterceptor]:
    # One object per kind of method: grpc.aio files each interceptor under the first kind
    # it implements only.
    kinds = (
        _AioUnaryUnaryBearer,
        _AioUnaryStreamBearer,
        _AioStreamUnaryBearer,
        _AioStreamStreamBearer,
    )
    return [kind(bearer) for kind in kinds]


@dataclass(frozen=True)
class ClientTls:
    """Trust anchors (the system's when ``ca_file`` is None), and a client cert for mTLS."""

    ca_file: Path | None
    cert_file: Path | None = None
    key_file: Path | None = None


def channel_credentials(tls: ClientTls) -> grpc.ChannelCredentials:
    """TLS credentials verifying the server against ``tls.ca_file``."""
    return grpc.ssl_channel_credentials(
        root_certificates=tls.ca_file.read_bytes() if tls.ca_file else None,
        private_key=tls.key_file.read_bytes() if tls.key_file else None,
        certificate_chain=tls.cert_file.read_bytes() if tls.cert_file else None,
    )


def secure_channel(target: str, tls: ClientTls, bearer: BearerSource | None = None) -> grpc.Channel:
    """A blocking channel to ``target`` (host:port) over TLS, with ``bearer()`` on every call."""
    channel = grpc.secure_channel(target, channel_credentials(tls), RECONNECT_OPTIONS)
    if bearer is None:
        return channel
    return grpc.intercept_channel(channel, _BearerInterceptor(bearer))


def secure_aio_channel(
    target: str, tls: ClientTls, bearer: BearerSource | None = None
) -> grpc.aio.Channel:
    """An asyncio channel to ``target`` (host:port) over TLS, with ``bearer()`` on every call."""
    interceptors = None if bearer is None else _aio_bearer_interceptors(bearer)
    return grpc.aio.secure_channel(
        target, channel_credentials(tls), RECONNECT_OPTIONS, interceptors=interceptors
    )


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
