"""gRPC server bootstrap shared by every service: TLS, health, reflection, interceptors.

Interceptors, outermost first: request logging (request id, method, duration, code), error
mapping (domain errors to ``google.rpc.Status``), authentication (a declared access policy per
method; methods without one are refused), request checks (bytes that do not parse, NUL
characters, times out of range; see sevvo.runtime.validation.check_request). Servicers stay
thin and read the verified caller from ``current_principal()``.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import logging
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psycopg
import structlog
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha import reflection

from sevvo.runtime import validation
from sevvo.runtime.config import ConfigError, HealthSettings
from sevvo.runtime.errors import (
    ERROR_DOMAIN,
    InvalidArgument,
    PermissionDenied,
    SevvoError,
    Unauthenticated,
    Unimplemented,
    database_error,
)
from sevvo.runtime.health import HEALTH_SERVICE, ReadinessCheck, ServerHealth
from sevvo.runtime.logs import enabled as logs_enabled
from sevvo.runtime.logs import exception_chain, get_logger
from sevvo.runtime.tokens import Principal, PrincipalKind, TokenVerifier
from sevvo.runtime.watched_files import FileWatch, UnusableFiles, read_ca, read_key_pair
from sevvo.runtime.workload_bearer import ForwardedWorkload, forwarded_token, verify_forwarded

log = get_logger(__name__)

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "sevvo_principal", default=None
)
_bearer_token: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "sevvo_bearer", default=None
)
_workload: contextvars.ContextVar[ForwardedWorkload | None] = contextvars.ContextVar(
    "sevvo_workload", default=None
)
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Health checks and reflection carry no tenant data; probes and grpcurl call them unauthenticated.
_SYSTEM_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


class Access(enum.Enum):
    """Who may call a method."""

    PUBLIC = "public"
    USER = "user"
    ADMIN = "admin"
    AGENT = "agent"
    # An agent, possibly acting for a customer workload whose bearer it forwards
    # (sevvo.runtime.workload_bearer); see current_workload().
    AGENT_FOR_WORKLOAD = "agent_for_workload"
    USER_OR_AGENT = "user_or_agent"


def current_bearer() -> str:
    """The verified bearer of the current RPC, for calls made on the caller's behalf."""
    token = _bearer_token.get()
    if token is None:
        raise Unauthenticated("this method requires a signed-in caller")
    return token


def current_principal() -> Principal:
    """Returns the verified caller of the current RPC; only valid inside a non-public method."""
    principal = _principal.get()
    if principal is None:
        raise Unauthenticated("this method requires a signed-in caller")
    return principal


def current_workload() -> ForwardedWorkload | None:
    """The workload bearer the agent forwarded with the current RPC, verified (or refused);
    None when it forwarded none. Only set on methods declared AGENT_FOR_WORKLOAD."""
    return _workload.get()


@dataclass(frozen=True)
class TlsFiles:
    """Server certificate and key, plus a client CA when clients must present certificates."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that re-read the files when they change (see ReloadingServerTls).

        Raises ConfigError when the files cannot be used at start.
        """
        return ReloadingServerTls(self).credentials()


class ReloadingServerTls:
    """Serves the certificate currently in the files: each new TLS handshake asks
    ``fetch``, which re-reads the files when their stamp changed (cert-manager renewed them),
    so a renewal needs no restart. Connections already open keep the certificate they were
    made with.

    A changed pair that does not fit (the key written before the certificate, a file cut
    short) keeps the last good one in service and is reported once, by path; the same
    version is not read again until the files change once more.
    """

    def __init__(self, files: TlsFiles) -> None:
        self._files = files
        paths = [files.cert, files.key, *([files.client_ca] if files.client_ca else [])]
        # No throttle: handshakes are rare next to calls, and each is a few stat calls.
        self._watch = FileWatch(paths, check_seconds=0)
        try:
            self._initial = self._configuration()
        except UnusableFiles as exc:
            raise ConfigError(f"TLS files: {exc}") from None

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        cert, key = read_key_pair(self._files.cert, self._files.key)
        client_ca = read_ca(self._files.client_ca) if self._files.client_ca else None
        return grpc.ssl_server_certificate_configuration([(key, cert)], client_ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """The new configuration when the files changed and fit; None keeps the current one.

        gRPC calls this on its own thread before every handshake; it must not raise.
        """
        current = self._watch.changed()
        if current is None:
            return None
        self._watch.take(current)
        try:
            configuration = self._configuration()
        except Exception as exc:  # Raising here would fail the handshake.
            # UnusableFiles messages name paths only; any other error is named by its type.
            problem = str(exc) if isinstance(exc, UnusableFiles) else type(exc).__name__
            log.warning(
                "tls files changed but cannot be used; still serving the previous certificate",
                problem=problem,
            )
            return None
        log.info("tls certificate reloaded", cert=str(self._files.cert))
        return configuration

    def credentials(self) -> grpc.ServerCredentials:
        """Dynamic server credentials starting from the files as they are now."""
        return grpc.dynamic_ssl_server_credentials(
            self._initial,
            self.fetch,
            require_client_authentication=self._files.client_ca is not None,
        )


Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Wrapper = Callable[[Behavior, str], Behavior]
Deserializer = Callable[[bytes], Any]


class _Unparsable:
    """Stands in for request bytes that do not parse.

    grpc runs the deserializer before any interceptor and answers its exceptions with
    UNKNOWN, naming the exception class; returning this instead lets RequestInterceptor
    answer INVALID_ARGUMENT after authentication, like any other bad request.
    """

    __slots__ = ()


_UNPARSABLE = _Unparsable()


def _tolerant(deserialize: Deserializer | None) -> Deserializer | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:  # DecodeError, or RecursionError for deep nesting
            return _UNPARSABLE

    return parse


async def _streaming_refused(request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(
        grpc.StatusCode.UNIMPLEMENTED, "streaming methods are not served by sevvo services"
    )


def _wrap_unary(
    handler: grpc.RpcMethodHandler | None,
    method: str,
    wrap: Wrapper,
    deserializer: Callable[[Deserializer | None], Deserializer | None] = lambda d: d,
) -> Any:
    if handler is None:
        return None
    if handler.request_streaming or handler.response_streaming:
        if method.startswith(_SYSTEM_PREFIXES):
            return handler  # Health Watch and reflection stream; they carry no tenant data.
        # Fail closed: the interceptors below only understand unary calls, so a streaming
        # method would otherwise skip authentication.
        return grpc.unary_unary_rpc_method_handler(_streaming_refused)
    return grpc.unary_unary_rpc_method_handler(
        wrap(handler.unary_unary, method),
        request_deserializer=deserializer(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )


class _WrappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def _wrap(self, behavior: Behavior, method: str) -> Behavior:
        raise NotImplementedError

    def _deserializer(self, deserialize: Deserializer | None) -> Deserializer | None:
        return deserialize

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        return _wrap_unary(handler, handler_call_details.method, self._wrap, self._deserializer)


def _request_id(context: grpc.aio.ServicerContext) -> str:
    """The caller's x-request-id when it is a plain token, else a new one."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            if isinstance(value, str) and _REQUEST_ID_RE.match(value):
                return value
            break
    # Random, in the 32-hex-digit form of uuid4().hex, for a third of its cost.
    return os.urandom(16).hex()


class LoggingInterceptor(_WrappingInterceptor):
    """Binds a request id and logs one line per call with method, duration and status code.

    Every RPC pays for this line, so it is kept cheap (see bench/request_log.py): nothing is
    timed or logged when INFO is filtered out, and the line's fields are few and plain.
    """

    def _wrap(self, behavior: Behavior, method: str) -> Behavior:
        async def logged(request: Any, context: grpc.aio.ServicerContext) -> Any:
            structlog.contextvars.bind_contextvars(request_id=_request_id(context), method=method)
            write = logs_enabled(logging.INFO)
            started = time.perf_counter() if write else 0.0
            code = grpc.StatusCode.OK
            try:
                return await behavior(request, context)
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                if write:
                    log.info(
                        "rpc",
                        code=code.name if isinstance(code, grpc.StatusCode) else str(code),
                        duration_ms=round((time.perf_counter() - started) * 1000, 2),
                    )
                structlog.contextvars.unbind_contextvars("request_id", "method", "org_id")

        return logged


# Status messages travel in trailing metadata, which clients cap (8-16 KiB by default): a
# message quoting a huge input would turn the answer into the client's RESOURCE_EXHAUSTED.
MAX_ERROR_TEXT = 1024
# For the same reason, at most this many field violations of one request are sent back, and
# their descriptions share one MAX_ERROR_TEXT between them.
MAX_FIELD_VIOLATIONS = 8


def _bounded(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 12] + " ... (cut)"


def _bad_request(error: InvalidArgument) -> error_details_pb2.BadRequest:
    shown = error.violations[:MAX_FIELD_VIOLATIONS]
    share = MAX_ERROR_TEXT // len(shown)
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=_bounded(v.field, share), description=_bounded(v.description, share)
            )
            for v in shown
        ]
    )


def status_for(error: SevvoError, request_id: str | None = None) -> status_pb2.Status:
    """Builds the google.rpc.Status that carries a domain error to the client.

    Texts longer than MAX_ERROR_TEXT are cut, so an error that quotes its input still fits.
    """
    metadata = {key: _bounded(value) for key, value in error.metadata.items()}
    if request_id:
        metadata["request_id"] = request_id
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata)
    )
    details = [info]
    if isinstance(error, InvalidArgument):
        bad_request = any_pb2.Any()
        bad_request.Pack(_bad_request(error))
        details.append(bad_request)
    return status_pb2.Status(
        code=error.code.value[0], message=_bounded(error.message), details=details
    )


class ErrorInterceptor(_WrappingInterceptor):
    """Turns domain errors into status codes with details; hides unexpected errors' text.

    Postgres errors no domain code handled are mapped by SQLSTATE class (errors.database_error):
    bad values are INVALID_ARGUMENT and an unreachable database UNAVAILABLE, never INTERNAL.
    What is logged of an unexpected error is its type and frames, never its message: messages
    quote the input (``invalid input syntax for type uuid: "..."``), SQL or a DSN.
    """

    def _wrap(self, behavior: Behavior, method: str) -> Behavior:
        async def mapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await behavior(request, context)
            except SevvoError as error:
                await _abort(context, error)
            except grpc.aio.AbortError:
                raise
            except psycopg.Error as exc:
                await _abort(context, _mapped_database_error(exc))
            except NotImplementedError:
                # Generated servicer base classes raise it for methods nobody implemented.
                await _abort(context, Unimplemented("this method is not served here"))
            except Exception as exc:
                _log_unhandled(exc)
                await _abort(context, _internal())

        return mapped


def _mapped_database_error(exc: psycopg.Error) -> SevvoError:
    mapped = database_error(exc)
    if mapped is None:
        _log_unhandled(exc)
        return _internal()
    log.warning(
        "database error",
        error=type(exc).__name__,
        sqlstate=exc.sqlstate,
        reason=mapped.reason,
        chain=exception_chain(exc),
    )
    return mapped


def _internal() -> SevvoError:
    return SevvoError("internal error", reason="INTERNAL")


def _log_unhandled(exc: BaseException) -> None:
    log.error("unhandled error", error=type(exc).__name__, chain=exception_chain(exc))


async def _abort(context: grpc.aio.ServicerContext, error: SevvoError) -> None:
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    status = status_for(error, request_id)
    await context.abort(
        error.code,
        status.message,
        trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
    )


class AuthInterceptor(_WrappingInterceptor):
    """Verifies the bearer of every call against the method's declared Access."""

    def __init__(self, verifier: TokenVerifier, access: Mapping[str, Access]) -> None:
        self._verifier = verifier
        self._access = dict(access)

    def _wrap(self, behavior: Behavior, method: str) -> Behavior:
        if method.startswith(_SYSTEM_PREFIXES):
            return behavior
        access = self._access.get(method)

        async def authenticated(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if access is None:
                # Fail closed: a method someone forgot to declare is not reachable.
                raise PermissionDenied("method has no access policy", reason="NO_ACCESS_POLICY")
            if access is Access.PUBLIC:
                return await behavior(request, context)
            token = _bearer(context)
            principal = self._authenticate(token, access)
            # Each RPC runs in its own task, so this binding ends with the call.
            _principal.set(principal)
            _bearer_token.set(token)
            if access is Access.AGENT_FOR_WORKLOAD:
                _workload.set(self._forwarded(context, principal))
            structlog.contextvars.bind_contextvars(org_id=principal.org_id)
            return await behavior(request, context)

        return authenticated

    def _forwarded(
        self, context: grpc.aio.ServicerContext, agent: Principal
    ) -> ForwardedWorkload | None:
        # A refused workload bearer does not fail the call here: the service audits the
        # refusal first (ForwardedWorkload.require raises it).
        try:
            token = forwarded_token(context.invocation_metadata() or ())
        except Unauthenticated as error:
            return ForwardedWorkload(None, error)
        return None if token is None else verify_forwarded(self._verifier, token, agent)

    def _authenticate(self, token: str, access: Access) -> Principal:
        # One verification per call, whatever the access: the verifier picks the token's kind
        # from its claims, so an agent on a USER_OR_AGENT method is not first tried as a user.
        if access in (Access.AGENT, Access.AGENT_FOR_WORKLOAD):
            return self._verifier.verify(token, PrincipalKind.AGENT)
        if access is Access.USER_OR_AGENT:
            return self._verifier.verify(token, (PrincipalKind.USER, PrincipalKind.AGENT))
        principal = self._verifier.verify(token, PrincipalKind.USER)
        if access is Access.ADMIN and not principal.is_admin:
            raise PermissionDenied("this action requires an org admin", reason="ADMIN_REQUIRED")
        return principal


class RequestInterceptor(_WrappingInterceptor):
    """Refuses, as INVALID_ARGUMENT naming the field, requests no method can mean.

    Innermost, so an unauthenticated caller learns nothing about its request. Covers bytes
    that do not parse as the method's message and what validation.check_request rejects.
    """

    def _deserializer(self, deserialize: Deserializer | None) -> Deserializer | None:
        return _tolerant(deserialize)

    def _wrap(self, behavior: Behavior, method: str) -> Behavior:
        async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if request is _UNPARSABLE:
                raise InvalidArgument(
                    "request",
                    "the bytes do not parse as this method's request message; build it with"
                    " code generated from sevvo's current protos",
                    reason="MALFORMED_REQUEST",
                )
            if isinstance(request, Message):
                validation.check_request(request)
            return await behavior(request, context)

        return checked


def _bearer(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            break
    raise Unauthenticated(
        "missing bearer token: send `authorization: Bearer <token>`", reason="TOKEN_MISSING"
    )


@dataclass
class ServerSpec:
    """What a service contributes to a server: how to register it, and its access policy."""

    name: str
    register: Callable[[grpc.aio.Server], None]
    service_names: Iterable[str]
    access: Mapping[str, Access] = field(default_factory=dict)


async def start_server(
    specs: Iterable[ServerSpec],
    *,
    verifier: TokenVerifier,
    tls: TlsFiles,
    host: str = "127.0.0.1",
    port: int = 0,
    health: ServerHealth | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Starts a TLS server with ``specs``, health and reflection; returns it and its port.

    ``health`` carries the process's readiness checks (sevvo.runtime.health); its first round
    runs before the port opens, so the first answer is already true. Without one, every
    service is SERVING once started. The caller owns ``health``: pass it to
    ``run_until_signalled`` (or ``stop_serving``), which shuts it down first.
    """
    specs = list(specs)
    access: dict[str, Access] = {}
    for spec in specs:
        access.update(spec.access)
    server = grpc.aio.server(
        interceptors=[
            LoggingInterceptor(),
            ErrorInterceptor(),
            AuthInterceptor(verifier, access),
            RequestInterceptor(),
        ],
        options=[("grpc.so_reuseport", 0)],
    )
    health = health if health is not None else ServerHealth()
    health.add_to(server)
    names = [reflection.SERVICE_NAME, HEALTH_SERVICE]
    service_names: list[str] = []
    for spec in specs:
        spec.register(server)
        service_names.extend(spec.service_names)
    names.extend(service_names)
    reflection.enable_server_reflection(names, server)
    bound = server.add_secure_port(f"{host}:{port}", tls.credentials())
    if bound == 0:
        raise OSError(f"could not listen on {host}:{port}")
    await health.start(service_names)
    await server.start()
    log.info("grpc server listening", host=host, port=bound, services=[s.name for s in specs])
    return server, bound


async def start_service(
    spec: ServerSpec,
    *,
    verifier: TokenVerifier,
    checks: Sequence[ReadinessCheck],
    tls: TlsFiles,
    host: str,
    port: int,
    settings: HealthSettings,
) -> tuple[grpc.aio.Server, int, ServerHealth]:
    """Starts one service as every sevvo service runs: ``start_server`` with health from
    ``checks`` every ``settings.check_seconds``, plus the plaintext probe port when
    ``settings`` names one. Returns the server, its port and its health (for
    ``run_until_signalled``)."""
    health = ServerHealth(checks, interval=settings.check_seconds)
    server, bound = await start_server(
        [spec], verifier=verifier, tls=tls, host=host, port=port, health=health
    )
    if settings.probe_port is not None:
        await health.listen_plaintext(host, settings.probe_port)
    return server, bound, health


async def stop_serving(
    server: grpc.aio.Server,
    health: ServerHealth | None = None,
    *,
    grace: float = 5.0,
    drain: float = 0.0,
) -> None:
    """Reports NOT_SERVING for every name first, keeps serving for ``drain`` seconds so load
    balancers and probes notice and stop sending, then lets in-flight calls finish for
    ``grace`` seconds; the plaintext probe port, if any, answers until the end."""
    if health is not None:
        await health.shutdown()
    if drain > 0:
        log.info("draining before stop", drain_s=drain)
        await asyncio.sleep(drain)
    await server.stop(grace=grace)
    if health is not None:
        await health.close()


async def run_until_signalled(
    server: grpc.aio.Server,
    health: ServerHealth | None = None,
    *,
    grace: float = 5.0,
    drain: float = 0.0,
) -> None:
    """Serves until SIGINT or SIGTERM, then stops as ``stop_serving`` does."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping on signal", grace_s=grace, drain_s=drain)
    await stop_serving(server, health, grace=grace, drain=drain)


__all__ = [
    "Access",
    "AuthInterceptor",
    "ErrorInterceptor",
    "LoggingInterceptor",
    "ReloadingServerTls",
    "RequestInterceptor",
    "ServerSpec",
    "TlsFiles",
    "current_bearer",
    "current_principal",
    "current_workload",
    "run_until_signalled",
    "start_server",
    "start_service",
    "status_for",
    "stop_serving",
]
