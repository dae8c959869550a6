"""gRPC server bootstrap shared by every service: TLS, health, reflection, interceptors.

Interceptors, outermost first: request logging (request id, method, duration, code), error
mapping (domain errors to ``google.rpc.Status``), authentication (a declared access policy per
method; methods without one are refused). Servicers stay thin and read the verified caller
from ``current_principal()``.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import re
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from sevvo.runtime.errors import (
    ERROR_DOMAIN,
    InvalidArgument,
    PermissionDenied,
    SevvoError,
    Unauthenticated,
)
from sevvo.runtime.logs import get_logger
from sevvo.runtime.tokens import Principal, PrincipalKind, TokenVerifier

log = get_logger(__name__)

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "sevvo_principal", default=None
)
_bearer_token: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "sevvo_bearer", default=None
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


@dataclass(frozen=True)
class TlsFiles:
    """Server certificate and key, plus a client CA when clients must present certificates."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """Builds gRPC server credentials from the files."""
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self.client_ca.read_bytes() if self.client_ca else None,
            require_client_auth=self.client_ca is not None,
        )


Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Wrapper = Callable[[Behavior, str], Behavior]


async def _streaming_refused(request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(
        grpc.StatusCode.UNIMPLEMENTED, "streaming methods are not served by sevvo services"
    )


def _wrap_unary(handler: grpc.RpcMethodHandler | None, method: str, wrap: Wrapper) -> Any:
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
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class _WrappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def _wrap(self, behavior: Behavior, method: str) -> Behavior:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        return _wrap_unary(handler, handler_call_details.method, self._wrap)


class LoggingInterceptor(_WrappingInterceptor):
    """Binds a request id and logs one line per call with method, duration and status code."""

    def _wrap(self, behavior: Behavior, method: str) -> Behavior:
        async def logged(request: Any, context: grpc.aio.ServicerContext) -> Any:
            metadata = dict(context.invocation_metadata() or ())
            supplied = metadata.get("x-request-id")
            request_id = (
                supplied
                if isinstance(supplied, str) and _REQUEST_ID_RE.match(supplied)
                else uuid.uuid4().hex
            )
            structlog.contextvars.bind_contextvars(request_id=request_id, method=method)
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return await behavior(request, context)
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
                log.info(
                    "rpc",
                    code=code.name if isinstance(code, grpc.StatusCode) else str(code),
                    duration_ms=elapsed_ms,
                )
                structlog.contextvars.unbind_contextvars("request_id", "method", "org_id")

        return logged


def status_for(error: SevvoError, request_id: str | None = None) -> status_pb2.Status:
    """Builds the google.rpc.Status that carries a domain error to the client."""
    metadata = dict(error.metadata)
    if request_id:
        metadata["request_id"] = request_id
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata)
    )
    details = [info]
    if isinstance(error, InvalidArgument):
        bad_request = any_pb2.Any()
        bad_request.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=error.field, description=error.description
                    )
                ]
            )
        )
        details.append(bad_request)
    return status_pb2.Status(code=error.code.value[0], message=error.message, details=details)


class ErrorInterceptor(_WrappingInterceptor):
    """Turns domain errors into status codes with details; hides unexpected errors' text."""

    def _wrap(self, behavior: Behavior, method: str) -> Behavior:
        async def mapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await behavior(request, context)
            except SevvoError as error:
                await _abort(context, error)
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                # The message of an unexpected error may quote SQL or a DSN: log only its type.
                log.error("unhandled error", error=type(exc).__name__, exc_info=True)
                await _abort(context, SevvoError("internal error", reason="INTERNAL"))

        return mapped


async def _abort(context: grpc.aio.ServicerContext, error: SevvoError) -> None:
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    status = status_for(error, request_id)
    await context.abort(
        error.code,
        error.message,
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
            structlog.contextvars.bind_contextvars(org_id=principal.org_id)
            return await behavior(request, context)

        return authenticated

    def _authenticate(self, token: str, access: Access) -> Principal:
        # One verification per call, whatever the access: the verifier picks the token's kind
        # from its claims, so an agent on a USER_OR_AGENT method is not first tried as a user.
        if access is Access.AGENT:
            return self._verifier.verify(token, PrincipalKind.AGENT)
        if access is Access.USER_OR_AGENT:
            return self._verifier.verify(token, (PrincipalKind.USER, PrincipalKind.AGENT))
        principal = self._verifier.verify(token, PrincipalKind.USER)
        if access is Access.ADMIN and not principal.is_admin:
            raise PermissionDenied("this action requires an org admin", reason="ADMIN_REQUIRED")
        return principal


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
) -> tuple[grpc.aio.Server, int]:
    """Starts a TLS server with ``specs``, health and reflection; returns it and its port."""
    specs = list(specs)
    access: dict[str, Access] = {}
    for spec in specs:
        access.update(spec.access)
    server = grpc.aio.server(
        interceptors=[LoggingInterceptor(), ErrorInterceptor(), AuthInterceptor(verifier, access)],
        options=[("grpc.so_reuseport", 0)],
    )
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [reflection.SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
    for spec in specs:
        spec.register(server)
        names.extend(spec.service_names)
    reflection.enable_server_reflection(names, server)
    bound = server.add_secure_port(f"{host}:{port}", tls.credentials())
    if bound == 0:
        raise OSError(f"could not listen on {host}:{port}")
    await server.start()
    for spec in specs:
        for service_name in spec.service_names:
            await health.set(service_name, health_pb2.HealthCheckResponse.SERVING)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    log.info("grpc server listening", host=host, port=bound, services=[s.name for s in specs])
    return server, bound


async def run_until_signalled(server: grpc.aio.Server, *, grace: float = 5.0) -> None:
    """Serves until SIGINT or SIGTERM, then lets in-flight calls finish for ``grace`` seconds."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping on signal", grace_s=grace)
    await server.stop(grace=grace)


__all__ = [
    "Access",
    "AuthInterceptor",
    "ErrorInterceptor",
    "LoggingInterceptor",
    "ServerSpec",
    "TlsFiles",
    "current_bearer",
    "current_principal",
    "run_until_signalled",
    "start_server",
    "status_for",
]
