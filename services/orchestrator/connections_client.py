"""What the orchestrator asks the connections service before it starts work on a connection.

Connections owns connections; the orchestrator only checks, with the caller's own bearer, that
the id names a connection of the caller's org (and whether it is dynamic) before recording a
run or touching Temporal. Forwarding the bearer keeps the tenancy rule in the component that
owns it: connections answers NOT_FOUND for another org's id exactly as for a random one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import grpc

from sevvo.connections.v1 import connections_pb2, connections_pb2_grpc
from sevvo.runtime.errors import (
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from sevvo.runtime.grpc_client import ClientTls, error_details, secure_aio_channel

_LOOKUP_TIMEOUT_SECONDS = 10.0


SOURCE = "source"
DESTINATION = "destination"
INCREMENTAL_DESTINATION = "incremental_destination"
# What a connection of a connections service older than purposes is: all Postgres.
_POSTGRES = frozenset({SOURCE, DESTINATION, INCREMENTAL_DESTINATION})


@dataclass(frozen=True)
class ConnectionInfo:
    """The facts about a connection the orchestrator acts on; no credentials.

    ``type`` is the connection type's name in lower case ("postgres", "parquet_directory");
    ``purposes`` what the connection can be used for ("source", "destination",
    "incremental_destination").
    """

    connection_id: str
    dynamic: bool
    type: str = "postgres"
    purposes: frozenset[str] = _POSTGRES

    @property
    def label(self) -> str:
        """The type as a user reads it: "Postgres", "Parquet directory"."""
        return self.type.replace("_", " ").capitalize()

    def uses(self) -> str:
        """What it can be used for, as a phrase: "a source and a destination"."""
        return " and a ".join(p for p in (SOURCE, DESTINATION) if p in self.purposes)


def not_a_source(info: ConnectionInfo, instead: str) -> FailedPrecondition:
    """The error for work on a source's database (a preview, a root rotation) on a connection
    that is no source; ``instead`` says what to do."""
    return FailedPrecondition(
        f"a {info.label} connection is a {info.uses()} only; {instead}",
        reason="CONNECTION_NOT_A_SOURCE",
        metadata={"type": info.type},
    )


def require_source(info: ConnectionInfo, instead: str) -> None:
    """Raises ``not_a_source`` unless the connection can be used as a source.

    The purpose decides, never the type's name: a new kind of source is a module per side
    (its purposes in the connections service, its reader in the agent), not an edit here.
    """
    if SOURCE not in info.purposes:
        raise not_a_source(info, instead)


def _name(enum_name: str, prefix: str) -> str:
    return enum_name.removeprefix(prefix).lower()


class ConnectionLookup(Protocol):
    """Finds a connection of the caller's org, as the caller."""

    async def get(self, bearer: str, connection_id: str, org_id: str = "") -> ConnectionInfo:
        """The connection, or NotFound; Unavailable when connections cannot be asked.

        ``org_id`` is the caller's verified org; with it, recent positive answers may be reused.
        """
        ...


def not_dynamic() -> FailedPrecondition:
    """The error for a dynamic-only operation on a connection with a fixed password."""
    return FailedPrecondition(
        "the connection is not dynamic: only a dynamic connection's privileged password is"
        " rotated by sevvo",
        reason="NOT_DYNAMIC",
    )


# A connection seen to exist is trusted for this long without asking again: a burst of work on
# one connection costs one lookup, not one each. Only positive answers are kept, so a missing
# or foreign id is always NOT_FOUND before anything starts; a connection deleted meanwhile can
# still get work for these few seconds, which then finds no credentials to resolve.
FOUND_TTL_SECONDS = 5.0
_FOUND_MAX = 10_000


class ConnectionsClient:
    """A ConnectionLookup over the connections service's gRPC API."""

    def __init__(
        self,
        endpoint: str,
        tls: ClientTls,
        *,
        found_ttl: float = FOUND_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._endpoint = endpoint
        self._tls = tls
        self._channel: grpc.aio.Channel | None = None
        self._found_ttl = found_ttl
        self._clock = clock
        # (org, connection) → (when seen, what was seen). The org is the caller's, from the
        # verified token, so one org's answer never serves another's.
        self._found: dict[tuple[str, str], tuple[float, ConnectionInfo]] = {}

    @property
    def _stub(self) -> connections_pb2_grpc.ConnectionServiceStub:
        # Opened on first use, inside the serving event loop that the channel belongs to.
        if self._channel is None:
            self._channel = secure_aio_channel(self._endpoint, self._tls)
        return connections_pb2_grpc.ConnectionServiceStub(self._channel)

    async def close(self) -> None:
        """Closes the channel, if it was ever opened."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def get(self, bearer: str, connection_id: str, org_id: str = "") -> ConnectionInfo:
        """Looks the connection up as the caller; maps the answer to the caller's errors.

        With ``org_id`` (the caller's verified org), a recent positive answer is reused.
        """
        key = (org_id, connection_id)
        seen = self._found.get(key) if org_id else None
        if seen is not None and self._clock() - seen[0] < self._found_ttl:
            return seen[1]
        info = await self._ask(bearer, connection_id)
        if org_id:
            if len(self._found) >= _FOUND_MAX:
                self._found.clear()
            self._found[key] = (self._clock(), info)
        return info

    async def _ask(self, bearer: str, connection_id: str) -> ConnectionInfo:
        try:
            connection: connections_pb2.Connection = await self._stub.GetConnection(
                connections_pb2.GetConnectionRequest(id=connection_id),
                metadata=(("authorization", f"Bearer {bearer}"),),
                timeout=_LOOKUP_TIMEOUT_SECONDS,
            )
        except grpc.aio.AioRpcError as exc:
            raise _mapped(exc) from None
        return connection_info(connection)


def connection_info(connection: connections_pb2.Connection) -> ConnectionInfo:
    """What the orchestrator acts on, from a connections service's Connection.

    Values a newer connections service added (a type or purpose this code was built without)
    are kept as numbers or left out, never an error: during a rolling upgrade the connections
    service may be the newer one.
    """
    known = connections_pb2.ConnectionPurpose.values()
    return ConnectionInfo(
        connection_id=connection.id,
        dynamic=connection.credential_mode == connections_pb2.CREDENTIAL_MODE_DYNAMIC,
        type=(
            _name(connections_pb2.ConnectionType.Name(connection.type), "CONNECTION_TYPE_")
            if connection.type in connections_pb2.ConnectionType.values()
            else f"type_{connection.type}"
        ),
        # A connections service older than purposes sends none: its connections are all
        # Postgres, a source and a destination.
        purposes=frozenset(
            _name(connections_pb2.ConnectionPurpose.Name(p), "CONNECTION_PURPOSE_")
            for p in connection.purposes
            if p in known
        )
        or _POSTGRES,
    )


def _mapped(exc: grpc.aio.AioRpcError) -> Exception:
    reason = error_details(exc).reason
    code = exc.code()
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound("connection not found", reason=reason or "CONNECTION_NOT_FOUND")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated("the connections service refused the caller's token", reason=reason)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied("the caller may not read this connection", reason=reason)
    return Unavailable(
        "the connections service could not be asked about the connection; try again",
        reason="CONNECTIONS_UNAVAILABLE",
    )


__all__ = [
    "DESTINATION",
    "SOURCE",
    "ConnectionInfo",
    "ConnectionLookup",
    "ConnectionsClient",
    "not_a_source",
    "not_dynamic",
    "require_source",
]
