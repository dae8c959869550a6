"""The agent's listeners for the credential API: a Unix socket, and an in-cluster TLS port.

Both serve only the customer's workloads beside the agent; nothing here is reachable from,
or meant for, the control plane. Calls go through the same logging, error-mapping and
request-check interceptors as the services (sevvo.runtime.grpc_server); authentication is the
workload token, which the broker checks on every call.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from agent.config import AgentConfig
from agent.credential_api import SERVICE_NAME, CredentialServicer
from agent.credential_broker import CredentialBroker
from sevvo.agent.v1 import credentials_pb2_grpc
from sevvo.runtime.config import ConfigError
from sevvo.runtime.grpc_server import (
    ErrorInterceptor,
    LoggingInterceptor,
    RequestInterceptor,
    TlsFiles,
)
from sevvo.runtime.logs import get_logger

log = get_logger(__name__)
SHUTDOWN_GRACE_SECONDS = 2.0


class SocketInUse(ConfigError):
    """Another process serves the configured socket path."""


def clear_stale_socket(path: Path) -> None:
    """Removes a socket left by an agent that died; refuses to touch anything else.

    A socket nobody answers on is stale (its agent was killed); one that answers belongs to
    a running agent, and a path that is not a socket is not ours to delete.
    """
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"SEVVO_CREDENTIAL_SOCKET names {path}, which exists and is no socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)
        log.info("stale credential socket removed", path=str(path))
        return
    finally:
        probe.close()
    raise SocketInUse(f"another process is serving {path}; is a second agent running?")


@contextlib.asynccontextmanager
async def serving(config: AgentConfig, broker: CredentialBroker) -> AsyncIterator[list[str]]:
    """Serves the credential API on the configured listeners while the block runs.

    Yields the addresses listened on (empty when both listeners are off). The socket is
    created with the configured mode (0660 or 0600) and removed on the way out.
    """
    api = config.credential_api
    socket_path = api.socket
    if socket_path is None and api.tls_port is None:
        log.info("credential api off")
        yield []
        return
    server = grpc.aio.server(
        interceptors=[LoggingInterceptor(), ErrorInterceptor(), RequestInterceptor()],
        options=[("grpc.so_reuseport", 0)],
    )
    credentials_pb2_grpc.add_CredentialServiceServicer_to_server(CredentialServicer(broker), server)
    addresses: list[str] = []
    if socket_path is not None:
        socket_path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        clear_stale_socket(socket_path)
        if server.add_insecure_port(f"unix:{socket_path}") == 0:
            raise OSError(f"could not listen on {socket_path}")
        addresses.append(f"unix:{socket_path}")
    if api.tls_port is not None:
        assert api.tls_cert is not None and api.tls_key is not None
        tls = TlsFiles(api.tls_cert, api.tls_key)
        target = f"{api.tls_host}:{api.tls_port}"
        bound = server.add_secure_port(target, tls.credentials())
        if bound == 0:
            raise OSError(f"could not listen on {target}")
        addresses.append(f"{api.tls_host}:{bound}")
    await server.start()
    try:
        if socket_path is not None:
            # gRPC creates the socket with the process umask; every call still needs a
            # workload token, so the instant before this chmod exposes nothing.
            os.chmod(socket_path, api.socket_mode)
        log.info("credential api listening", addresses=addresses, service=SERVICE_NAME)
        yield addresses
    finally:
        await server.stop(grace=SHUTDOWN_GRACE_SECONDS)
        if socket_path is not None:
            socket_path.unlink(missing_ok=True)
        await broker.close()
        log.info("credential api stopped")
