"""A dev/test gRPC router: one TLS endpoint that forwards each call to the service owning it.

Agents (and users) dial one control-plane endpoint; in production a Gateway API GRPCRoute
routes by service path (docs/design.md, "Production shape"). When the services run as separate
processes (devstack.process_stack), this router plays that part: every unary call is forwarded
by the package prefix of its method path as raw bytes, with its metadata and deadline, and the
backend's status code, message and trailing metadata (``grpc-status-details-bin`` included)
come back unchanged. Health checks are answered by the router itself. It is not a production
component: no retries, no streaming.

A backend may be several replicas (``host:port,host:port``). Their calls are then balanced
round robin by gRPC's own ``round_robin`` policy with client-side health checking, as a
Kubernetes Service with readiness probes would: a replica whose connection fails, or whose
health says NOT_SERVING (not ready, or draining before it stops), gets no new calls until it
is back. A call in flight on a replica that dies fails UNAVAILABLE; it is not retried on
another, since a call that starts work must not start it twice.

Run it as a process with ``python -m devstack.grpc_router`` (configuration from the
environment, see RouterConfig), or in-process with GrpcRouter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from devstack.processes import run_from_environment, until_stop_signal
from sevvo.runtime import config as c
from sevvo.runtime.grpc_client import ClientTls, channel_credentials
from sevvo.runtime.grpc_server import ErrorInterceptor, RequestInterceptor, TlsFiles
from sevvo.runtime.logs import get_logger

log = get_logger(__name__)

# Which backend owns which method paths: the proto packages of each service.
PREFIXES: Mapping[str, tuple[str, ...]] = {
    "auth": ("/sevvo.auth.",),
    "connections": ("/sevvo.connections.", "/sevvo.audit."),
    "orchestrator": ("/sevvo.orchestrator.",),
}
# The health name each backend's processes report SERVING under while ready (the first service
# each registers); a balanced backend's replicas are checked on it.
READINESS_NAMES: Mapping[str, str] = {
    "auth": "sevvo.auth.v1.AuthService",
    "connections": "sevvo.connections.v1.ConnectionService",
    "orchestrator": "sevvo.orchestrator.v1.OrchestratorService",
}
# HTTP/2 and gRPC transport headers: set by each hop itself, never copied from the caller.
_HOP_HEADERS = frozenset({"user-agent", "content-type", "te", "host"})
# A restarted backend is found again within about this long: gRPC's default reconnect backoff
# grows to two minutes, far longer than a dev backend takes to restart.
_RECONNECT_OPTIONS: Sequence[tuple[str, Any]] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
)

# How long a call to a balanced backend waits for a ready replica before it fails: longer than
# the reconnect backoff above, so a restarted replica is found.
_READY_WAIT_SECONDS = 2.0

Metadata = tuple[tuple[str, str | bytes], ...]


@dataclass(frozen=True)
class Route:
    """Calls whose method path starts with ``prefix`` go to ``backend`` at ``target``.

    ``target`` is one ``host:port``, or several separated by commas: replicas, balanced.
    """

    prefix: str
    backend: str
    target: str

    @property
    def replicas(self) -> list[str]:
        """The ``host:port`` of each replica of the backend."""
        return [part.strip() for part in self.target.split(",") if part.strip()]


def routes_for(endpoints: Mapping[str, str]) -> list[Route]:
    """The routes to each named backend's ``host:port`` (names as in PREFIXES)."""
    unknown = set(endpoints) - set(PREFIXES)
    if unknown:
        raise ValueError(f"no routes are defined for {sorted(unknown)}")
    return [
        Route(prefix, backend, target)
        for backend, target in endpoints.items()
        for prefix in PREFIXES[backend]
    ]


def _split_host_port(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{target!r} is not host:port")
    return host.strip("[]"), int(port)


def _endpoints(env: Mapping[str, str], name: str) -> str:
    """One ``host:port`` or a comma-separated list of replicas sharing a host name."""
    value = c.string(env, name)
    replicas = [part.strip() for part in value.split(",")]
    try:
        for replica in replicas:
            _split_host_port(replica)
    except ValueError:
        raise c.ConfigError(f"{name} must be host:port, or host:port,host:port,...") from None
    if len({_split_host_port(r)[0] for r in replicas}) != 1:
        raise c.ConfigError(f"{name}: replicas must share one host name (TLS checks it)")
    return ",".join(replicas)


@dataclass(frozen=True)
class RouterConfig:
    """The router process's configuration; built by ``load`` so tests can pass a dict."""

    tls: TlsFiles
    ca_file: Path | None
    # Each ``host:port``, or replicas as ``host:port,host:port`` (one host name for all).
    auth_endpoint: str
    connections_endpoint: str
    orchestrator_endpoint: str
    host: str = "127.0.0.1"
    port: int = 8443
    log_level: str = "INFO"

    @classmethod
    def load(cls, env: Mapping[str, str]) -> RouterConfig:
        """Reads and validates the configuration; raises ConfigError naming a bad variable."""
        return cls(
            tls=TlsFiles(
                cert=c.existing_file(env, "SEVVO_TLS_CERT_FILE"),
                key=c.existing_file(env, "SEVVO_TLS_KEY_FILE"),
            ),
            ca_file=c.optional_file(env, "SEVVO_CA_FILE"),
            auth_endpoint=_endpoints(env, "SEVVO_AUTH_ENDPOINT"),
            connections_endpoint=_endpoints(env, "SEVVO_CONNECTIONS_ENDPOINT"),
            orchestrator_endpoint=_endpoints(env, "SEVVO_ORCHESTRATOR_ENDPOINT"),
            host=c.string(env, "SEVVO_GRPC_HOST", "127.0.0.1"),
            port=c.integer(env, "SEVVO_GRPC_PORT", 8443, minimum=0, maximum=65535),
            log_level=c.log_level(env),
        )

    def routes(self) -> list[Route]:
        """The routes this configuration names."""
        return routes_for(
            {
                "auth": self.auth_endpoint,
                "connections": self.connections_endpoint,
                "orchestrator": self.orchestrator_endpoint,
            }
        )


def balanced_target(replicas: Sequence[str]) -> tuple[str, str]:
    """gRPC's target for a list of replicas (``ipv4:a:p,b:q``) and the name TLS checks.

    gRPC balances only over addresses of one target, so each host is resolved (IPv4) here,
    once; every replica must share one host name, the one its certificate is checked for.
    """
    hosts = {_split_host_port(replica)[0] for replica in replicas}
    if len(hosts) != 1:
        raise ValueError(f"replicas must share one host name (TLS checks it), not {sorted(hosts)}")
    addresses = []
    for replica in replicas:
        host, port = _split_host_port(replica)
        resolved = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
        addresses.append(f"{resolved[0][4][0]}:{port}")
    return "ipv4:" + ",".join(addresses), hosts.pop()


def backend_channel(
    backend: str, route_target: str, credentials: grpc.ChannelCredentials
) -> grpc.aio.Channel:
    """A channel to one backend: plain for one replica, balanced over several (see module)."""
    replicas = Route("", backend, route_target).replicas
    if len(replicas) == 1:
        return grpc.aio.secure_channel(replicas[0], credentials, options=_RECONNECT_OPTIONS)
    target, tls_name = balanced_target(replicas)
    service_config = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": READINESS_NAMES[backend]},
    }
    options = (
        *_RECONNECT_OPTIONS,
        ("grpc.service_config", json.dumps(service_config)),
        ("grpc.ssl_target_name_override", tls_name),
    )
    return grpc.aio.secure_channel(target, credentials, options=options)


def _forwardable(metadata: Iterable[tuple[str, str | bytes]] | None) -> Metadata:
    """The caller's own metadata (authorization, x-request-id, ...), without transport headers."""
    return tuple(
        (key, value)
        for key, value in metadata or ()
        if not key.startswith((":", "grpc-")) or key == "grpc-status-details-bin"
        if key not in _HOP_HEADERS
    )


class _Forwarder(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Finds the route of each call and forwards it, bytes in and bytes out."""

    def __init__(self, routes: Sequence[Route], channels: Mapping[str, grpc.aio.Channel]) -> None:
        # Longest prefix first, so a more specific route can refine a broader one.
        self._routes = sorted(routes, key=lambda r: len(r.prefix), reverse=True)
        self._channels = channels

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        method: str = handler_call_details.method
        for route in self._routes:
            if method.startswith(route.prefix):
                # No (de)serializers: requests and responses stay the bytes the peers sent.
                return grpc.unary_unary_rpc_method_handler(partial(self._forward, route, method))
        return None  # gRPC answers UNIMPLEMENTED.

    async def _forward(
        self, route: Route, method: str, request: bytes, context: grpc.aio.ServicerContext
    ) -> bytes:
        channel = self._channels[route.backend]
        if len(route.replicas) > 1:
            await _some_replica_ready(channel)
        call = channel.unary_unary(method)(
            request,
            metadata=_forwardable(context.invocation_metadata()),
            timeout=_remaining(context),
        )
        started = time.perf_counter()
        try:
            response: bytes = await call
        except grpc.aio.AioRpcError as exc:
            trailing = _forwardable(exc.trailing_metadata())
            message = exc.details() or ""
            if exc.code() == grpc.StatusCode.UNAVAILABLE and not trailing:
                # The transport failed (nobody listening, connection lost): the backend sent
                # nothing of its own, so say which service is down instead of a socket error.
                message = f"the {route.backend} service is unavailable; retry shortly"
                log.warning(
                    "backend unavailable", backend=route.backend, method=method, target=route.target
                )
            await context.abort(exc.code(), message, trailing_metadata=trailing)
        initial = _forwardable(await call.initial_metadata())
        if initial:
            await context.send_initial_metadata(initial)
        context.set_trailing_metadata(_forwardable(await call.trailing_metadata()))
        log.debug(
            "routed",
            backend=route.backend,
            method=method,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return response


async def _some_replica_ready(channel: grpc.aio.Channel) -> None:
    """Waits briefly for a replica to be ready when none is (a balanced channel is READY when
    any replica is): gRPC fails a call at once while every replica is down or reconnecting,
    and a replica restarted a moment ago is connected again within its reconnect backoff."""
    if channel.get_state(try_to_connect=True) != grpc.ChannelConnectivity.READY:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(channel.channel_ready(), _READY_WAIT_SECONDS)


def _remaining(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline, passed on so the backend gives up when the caller does."""
    remaining = context.time_remaining()
    # gRPC reports "no deadline" as a huge number of seconds.
    return remaining if remaining is not None and remaining < 10**8 else None


class GrpcRouter:
    """A TLS gRPC server on ``host:port`` forwarding each call along ``routes``.

    Backends are dialled over TLS with ``client_tls`` (the dev CA). ``start`` and ``stop`` run
    on the caller's event loop.
    """

    def __init__(
        self,
        routes: Sequence[Route],
        tls: TlsFiles,
        client_tls: ClientTls,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._routes = list(routes)
        self._tls = tls
        self._client_tls = client_tls
        self._host = host
        self._requested_port = port
        self._server: grpc.aio.Server | None = None
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.port: int | None = None

    async def start(self) -> int:
        """Binds, starts serving and returns the port."""
        if self._server is not None:
            raise RuntimeError("the router is already running")
        credentials = channel_credentials(self._client_tls)
        for route in self._routes:
            if route.backend not in self._channels:
                self._channels[route.backend] = backend_channel(
                    route.backend, route.target, credentials
                )
        # As in every service: a health request that does not parse, or a health method the
        # servicer lacks, is refused with a clear code, never a Python exception's text.
        server = grpc.aio.server(
            interceptors=[ErrorInterceptor(), RequestInterceptor()],
            options=[("grpc.so_reuseport", 0)],
        )
        health = HealthServicer()
        # Registered before the forwarder, so health checks are answered here.
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        server.add_generic_rpc_handlers([_Forwarder(self._routes, self._channels)])
        port: int = server.add_secure_port(
            f"{self._host}:{self._requested_port}", self._tls.credentials()
        )
        if port == 0:
            raise OSError(f"could not listen on {self._host}:{self._requested_port}")
        await server.start()
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        self._server, self.port = server, port
        log.info(
            "router listening",
            host=self._host,
            port=port,
            routes={r.prefix: f"{r.backend}@{r.target}" for r in self._routes},
        )
        return port

    async def stop(self, grace: float | None = None) -> None:
        """Stops serving (letting calls finish for ``grace`` s) and closes the backend channels."""
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self.port = None


async def _serve(config: RouterConfig) -> None:
    router = GrpcRouter(
        config.routes(),
        config.tls,
        ClientTls(ca_file=config.ca_file),
        host=config.host,
        port=config.port,
    )
    await router.start()
    await until_stop_signal()
    await router.stop(grace=2)


def main() -> int:
    """Runs the router until SIGINT or SIGTERM, configured from the environment."""
    return run_from_environment("router", RouterConfig.load, _serve)


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "PREFIXES",
    "READINESS_NAMES",
    "GrpcRouter",
    "Route",
    "RouterConfig",
    "backend_channel",
    "balanced_target",
    "main",
    "routes_for",
]
