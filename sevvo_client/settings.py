"""Where the agent is and which token to show it: from arguments, else from the environment.

Environment (the names the sidecar chart sets):
- ``SEVVO_AGENT_SOCKET``: the agent's Unix socket, a path or ``unix:///path``.
- ``SEVVO_AGENT_ADDRESS``: ``host:port`` of the agent's in-cluster TLS port instead, with
  ``SEVVO_AGENT_CA_FILE`` naming the CA that signed it (the system roots otherwise).
- ``SEVVO_WORKLOAD_TOKEN_FILE`` (preferred: a mounted Secret) or ``SEVVO_WORKLOAD_TOKEN``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from sevvo_client.errors import ConfigurationError

DEFAULT_SOCKET = "/var/run/sevvo/agent.sock"
"""Where the agent's chart puts its socket (SEVVO_CREDENTIAL_SOCKET's default)."""
TOKEN_PREFIX = "sevvo_wt_"


@dataclass(frozen=True)
class AgentTarget:
    """How to reach the agent: a Unix socket, or a TLS address and the CA to verify it."""

    target: str
    tls: bool = False
    ca_file: Path | None = None

    def channel(self) -> grpc.Channel:
        """A blocking channel to the agent."""
        if not self.tls:
            return grpc.insecure_channel(self.target)
        return grpc.secure_channel(self.target, self._credentials())

    def aio_channel(self) -> grpc.aio.Channel:
        """An asyncio channel to the agent."""
        if not self.tls:
            return grpc.aio.insecure_channel(self.target)
        return grpc.aio.secure_channel(self.target, self._credentials())

    def _credentials(self) -> grpc.ChannelCredentials:
        roots = self.ca_file.read_bytes() if self.ca_file is not None else None
        return grpc.ssl_channel_credentials(root_certificates=roots)


@dataclass(frozen=True)
class ClientSettings:
    """An agent target and a workload token; the token stays out of repr."""

    agent: AgentTarget
    token: str

    def __repr__(self) -> str:
        return f"ClientSettings(agent={self.agent!r})"

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call metadata that proves who the workload is."""
        return (("authorization", f"Bearer {self.token}"),)


def resolve(
    *,
    socket: str | os.PathLike[str] | None = None,
    address: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    token: str | None = None,
    env: Mapping[str, str] | None = None,
) -> ClientSettings:
    """Settings from the arguments, falling back to the environment; ConfigurationError names
    what is missing or malformed."""
    env = os.environ if env is None else env
    return ClientSettings(
        agent=_agent(socket, address, ca_file, env),
        token=_token(token, env),
    )


def _agent(
    socket: str | os.PathLike[str] | None,
    address: str | None,
    ca_file: str | os.PathLike[str] | None,
    env: Mapping[str, str],
) -> AgentTarget:
    if socket is not None and address is not None:
        raise ConfigurationError("give the agent's socket or its address, not both")
    if socket is None and address is None:
        socket = env.get("SEVVO_AGENT_SOCKET") or None
        address = env.get("SEVVO_AGENT_ADDRESS") or None
        if socket is not None and address is not None:
            raise ConfigurationError("set SEVVO_AGENT_SOCKET or SEVVO_AGENT_ADDRESS, not both")
        ca_file = ca_file or env.get("SEVVO_AGENT_CA_FILE") or None
    if address is not None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(
                f"the agent's address must be host:port (its in-cluster TLS port), got {address!r}"
            )
        ca = Path(ca_file) if ca_file else None
        if ca is not None and not ca.is_file():
            raise ConfigurationError(f"the agent's CA file {str(ca)!r} does not exist")
        return AgentTarget(address, tls=True, ca_file=ca)
    path = os.fspath(socket) if socket is not None else DEFAULT_SOCKET
    if path.startswith("unix://"):
        path = path.removeprefix("unix://")
        # unix:relative and unix:///absolute are gRPC's forms; keep what was given.
    if not path:
        raise ConfigurationError("the agent's socket path is empty")
    return AgentTarget(f"unix://{path}" if path.startswith("/") else f"unix:{path}")


def _token(token: str | None, env: Mapping[str, str]) -> str:
    source = "the token argument"
    if token is None:
        file = env.get("SEVVO_WORKLOAD_TOKEN_FILE")
        if file:
            source = "SEVVO_WORKLOAD_TOKEN_FILE"
            try:
                token = Path(file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigurationError(
                    f"SEVVO_WORKLOAD_TOKEN_FILE names {file!r}, which cannot be read "
                    f"({exc.strerror})"
                ) from None
        else:
            source = "SEVVO_WORKLOAD_TOKEN"
            token = env.get("SEVVO_WORKLOAD_TOKEN")
    if not token:
        raise ConfigurationError(
            "no workload token: set SEVVO_WORKLOAD_TOKEN_FILE (or SEVVO_WORKLOAD_TOKEN) to the "
            "token an admin created with `sevvo workloads create`"
        )
    token = token.strip()
    if not token.startswith(TOKEN_PREFIX) or any(c.isspace() for c in token):
        # Never echo the value: it may be a real token of another kind.
        raise ConfigurationError(f"{source} is not a sevvo workload token ({TOKEN_PREFIX}...)")
    return token
