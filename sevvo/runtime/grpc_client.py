"""gRPC client channels to sevvo services: TLS with a CA bundle, a bearer on every call.

The bearer is added by a client interceptor on the channel, so no call can leave without it,
and the channels are only ever TLS. Not ``grpc.metadata_call_credentials``: its plugin runs
Python on gRPC's own threads, which then need the GIL while holding gRPC's locks, and a
server or channel shut down in the same process at that moment deadlocked the whole process
(seen in the test suite: an aio server's stop and a plugin thread, each waiting on the other).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2

from sevvo.runtime.errors import ERROR_DOMAIN
from sevvo.runtime.logs import get_logger
from sevvo.runtime.watched_files import (
    DEFAULT_CHECK_SECONDS,
    FileWatch,
    UnusableFiles,
    read_ca,
    read_key_pair,
)

log = get_logger(__name__)

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


def _reloadable(tls: ClientTls) -> bool:
    return any(path is not None for path in (tls.ca_file, tls.cert_file, tls.key_file))


def _checked_credentials(tls: ClientTls) -> grpc.ChannelCredentials:
    """Like channel_credentials, but raises UnusableFiles for a bundle or a pair that does not
    parse or fit, so a renewal caught half written never replaces a working channel."""
    ca = read_ca(tls.ca_file) if tls.ca_file else None
    cert = key = None
    if tls.cert_file is not None and tls.key_file is not None:
        cert, key = read_key_pair(tls.cert_file, tls.key_file)
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def secure_channel(
    target: str,
    tls: ClientTls,
    bearer: BearerSource | None = None,
    *,
    check_seconds: float = DEFAULT_CHECK_SECONDS,
) -> grpc.Channel:
    """A blocking channel to ``target`` (host:port) over TLS, with ``bearer()`` on every call.

    With TLS files, the channel follows them as they change (see ReloadingChannel).
    """

    def build(credentials: grpc.ChannelCredentials) -> grpc.Channel:
        channel = grpc.secure_channel(target, credentials, RECONNECT_OPTIONS)
        return (
            channel
            if bearer is None
            else grpc.intercept_channel(channel, _BearerInterceptor(bearer))
        )

    if not _reloadable(tls):
        return build(channel_credentials(tls))
    return ReloadingChannel(tls, build, check_seconds=check_seconds)


def secure_aio_channel(
    target: str,
    tls: ClientTls,
    bearer: BearerSource | None = None,
    *,
    check_seconds: float = DEFAULT_CHECK_SECONDS,
) -> grpc.aio.Channel:
    """An asyncio channel to ``target`` (host:port) over TLS, with ``bearer()`` on every call.

    With TLS files, the channel follows them as they change (see ReloadingAioChannel).
    """

    def build(credentials: grpc.ChannelCredentials) -> grpc.aio.Channel:
        interceptors = None if bearer is None else _aio_bearer_interceptors(bearer)
        return grpc.aio.secure_channel(
            target, credentials, RECONNECT_OPTIONS, interceptors=interceptors
        )

    if not _reloadable(tls):
        return build(channel_credentials(tls))
    return ReloadingAioChannel(tls, build, check_seconds=check_seconds)


# In-flight calls on a channel replaced after a renewal get this long to finish.
RETIRE_GRACE_SECONDS = 30.0

C = TypeVar("C")


class _Follower(Generic[C]):
    """The channel built from the TLS files as they are now.

    gRPC's channel credentials hold the bytes they were given and have no hook like the
    server's certificate fetcher, so following a renewed CA bundle or client certificate means
    a new channel. Each call asks ``current()``, which stats the files at most every
    ``check_seconds``; when they changed and still parse and fit, it builds a channel from
    them and retires the old one. A bundle or pair that does not is reported once and the
    working channel is kept. Stubs made once keep working: their methods look the channel up
    on every call (``_Method``).

    Why not rebuild only on reconnect: an idle channel keeps its connection for hours, so a
    bundle rotated before the old CA expires would not be picked up until the old one failed.
    """

    def __init__(
        self,
        tls: ClientTls,
        build: Callable[[grpc.ChannelCredentials], C],
        *,
        check_seconds: float = DEFAULT_CHECK_SECONDS,
    ) -> None:
        self._tls = tls
        self._build = build
        files = [p for p in (tls.ca_file, tls.cert_file, tls.key_file) if p is not None]
        self._watch = FileWatch(files, check_seconds=check_seconds)
        self._channel = build(channel_credentials(tls))
        # Bumped on every replacement, so a method made on one channel is made again.
        self.generation = 0

    def current(self) -> C:
        """The channel to call on now, replaced first when the files changed and fit."""
        changed = self._watch.changed()
        if changed is not None:
            self._watch.take(changed)
            try:
                credentials = _checked_credentials(self._tls)
            except UnusableFiles as exc:
                log.warning(
                    "client tls files changed but cannot be used; keeping the current channel",
                    problem=str(exc),
                )
            else:
                old, self._channel = self._channel, self._build(credentials)
                self.generation += 1
                log.info("client tls files changed; new channel", generation=self.generation)
                self._retire(old)
        return self._channel

    def _retire(self, channel: C) -> None:
        raise NotImplementedError


class _Method:
    """A multi-callable that calls on the follower's current channel."""

    def __init__(self, follower: _Follower[Any], kind: str, args: Any, kwargs: Any) -> None:
        self._follower = follower
        self._kind = kind
        self._args = args
        self._kwargs = kwargs
        self._made: tuple[int, Any] | None = None

    def _current(self) -> Any:
        channel = self._follower.current()
        made = self._made
        if made is None or made[0] != self._follower.generation:
            made = (
                self._follower.generation,
                getattr(channel, self._kind)(*self._args, **self._kwargs),
            )
            self._made = made
        return made[1]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._current()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # with_call and future on blocking channels.
        return getattr(self._current(), name)


class ReloadingChannel(_Follower[grpc.Channel], grpc.Channel):  # type: ignore[misc]
    """A blocking channel that follows its TLS files (see _Follower).

    A blocking channel cannot close gracefully, so the one replaced is kept until the next
    replacement or close(): at most one old channel is ever open, and calls started on it
    have until the next renewal to finish.
    """

    def __init__(
        self,
        tls: ClientTls,
        build: Callable[[grpc.ChannelCredentials], grpc.Channel],
        *,
        check_seconds: float = DEFAULT_CHECK_SECONDS,
    ) -> None:
        super().__init__(tls, build, check_seconds=check_seconds)
        self._retired: grpc.Channel | None = None

    def _retire(self, channel: grpc.Channel) -> None:
        if self._retired is not None:
            self._retired.close()
        self._retired = channel

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        """Subscribes to the current channel's connectivity (not a later replacement's)."""
        self.current().subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        """Unsubscribes from the current channel's connectivity."""
        self._channel.unsubscribe(callback)

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        """A unary-unary method called on the current channel."""
        return _Method(self, "unary_unary", args, kwargs)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        """A unary-stream method called on the current channel."""
        return _Method(self, "unary_stream", args, kwargs)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        """A stream-unary method called on the current channel."""
        return _Method(self, "stream_unary", args, kwargs)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        """A stream-stream method called on the current channel."""
        return _Method(self, "stream_stream", args, kwargs)

    def close(self) -> None:
        """Closes the current channel and the one it replaced, if any."""
        if self._retired is not None:
            self._retired.close()
            self._retired = None
        self._channel.close()

    def __enter__(self) -> ReloadingChannel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ReloadingAioChannel(_Follower[grpc.aio.Channel], grpc.aio.Channel):  # type: ignore[misc]
    """An asyncio channel that follows its TLS files (see _Follower).

    The channel replaced is closed with RETIRE_GRACE_SECONDS of grace for its calls in flight;
    close() waits for those closings too, so no channel outlives this one.
    """

    def __init__(
        self,
        tls: ClientTls,
        build: Callable[[grpc.ChannelCredentials], grpc.aio.Channel],
        *,
        check_seconds: float = DEFAULT_CHECK_SECONDS,
    ) -> None:
        super().__init__(tls, build, check_seconds=check_seconds)
        self._closing: set[asyncio.Task[None]] = set()

    def _retire(self, channel: grpc.aio.Channel) -> None:
        # current() runs inside the loop the channel belongs to: every call and state query
        # on an asyncio channel does.
        task = asyncio.get_running_loop().create_task(channel.close(RETIRE_GRACE_SECONDS))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        """A unary-unary method called on the current channel."""
        return _Method(self, "unary_unary", args, kwargs)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        """A unary-stream method called on the current channel."""
        return _Method(self, "unary_stream", args, kwargs)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        """A stream-unary method called on the current channel."""
        return _Method(self, "stream_unary", args, kwargs)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        """A stream-stream method called on the current channel."""
        return _Method(self, "stream_stream", args, kwargs)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """The current channel's connectivity."""
        return self.current().get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        """Waits for the current channel's connectivity to change."""
        await self.current().wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        """Waits until the current channel is ready."""
        await self.current().channel_ready()

    async def close(self, grace: float | None = None) -> None:
        """Closes the current channel, and finishes closing any it replaced."""
        await self._channel.close(grace)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def __aenter__(self) -> ReloadingAioChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


@dataclass(frozen=True)
class ErrorDetails:
    """What a client branches on: the stable reason, plus the field for invalid arguments."""

    code: grpc.StatusCode
    reason: str | None
    message: str
    field: str | None = None
    metadata: dict[str, str] | None = None
    # Every invalid field the BadRequest names, as (field, description); ``field`` is the first.
    violations: tuple[tuple[str, str], ...] = ()


def error_details(error: grpc.RpcError) -> ErrorDetails:
    """Extracts the sevvo ErrorInfo reason (and BadRequest field) from a failed call."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else ""
    reason: str | None = None
    field: str | None = None
    metadata: dict[str, str] | None = None
    violations: tuple[tuple[str, str], ...] = ()
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
                violations = tuple((v.field, v.description) for v in bad.field_violations)
                if violations:
                    field = violations[0][0]
    return ErrorDetails(
        code=code,
        reason=reason,
        message=message or "",
        field=field,
        metadata=metadata,
        violations=violations,
    )
