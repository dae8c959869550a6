"""The narrow interface every connection kind implements, and what the kinds share.

A kind is one module (services/connections/kinds/<kind>.py) answering what the service needs
to know about one ConnectionType: what it can be used for, how a create request's fields are
validated into the payload that is sealed, how that payload is read back, which display copies
its row keeps, how it shows in a Connection message and how an agent receives it at resolve.
The domain and the servicer never branch on a type name; they ask the kind.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Protocol

from services.connections.store import ConnectionRow
from sevvo.connections.v1 import connections_pb2 as pb
from sevvo.runtime.errors import FailedPrecondition


class Purpose(enum.StrEnum):
    """What a connection can be used for (ConnectionPurpose)."""

    SOURCE = "source"
    DESTINATION = "destination"
    # A destination that merges rows by primary key (incremental models), not only replaces.
    INCREMENTAL_DESTINATION = "incremental_destination"


PURPOSE_TO_PB: Mapping[Purpose, pb.ConnectionPurpose] = {
    Purpose.SOURCE: pb.CONNECTION_PURPOSE_SOURCE,
    Purpose.DESTINATION: pb.CONNECTION_PURPOSE_DESTINATION,
    Purpose.INCREMENTAL_DESTINATION: pb.CONNECTION_PURPOSE_INCREMENTAL_DESTINATION,
}


class Payload(Protocol):
    """What a kind seals for a connection: its validated settings and any secret."""

    def to_json(self) -> bytes:
        """The plaintext of the sealed payload."""
        ...


class ConnectionKind(Protocol):
    """One kind of connection, as the connections service sees it."""

    @property
    def name(self) -> str:
        """The row's ``type``: lower_snake_case, stable (it is stored)."""
        ...

    @property
    def label(self) -> str:
        """What users call it in messages ("Postgres", "Parquet directory")."""
        ...

    @property
    def connection_type(self) -> pb.ConnectionType:
        """Its ConnectionType value."""
        ...

    @property
    def purposes(self) -> tuple[Purpose, ...]:
        """What it can be used for, fixed by the kind, in the order they are shown."""
        ...

    @property
    def request_fields(self) -> tuple[str, ...]:
        """The members of CreateConnectionRequest.credentials it answers."""
        ...

    @property
    def payload_type(self) -> type[Any]:
        """The class of its payloads."""
        ...

    def from_request(self, request: pb.CreateConnectionRequest) -> tuple[Payload, str]:
        """The validated payload and credential mode of a create request (INVALID_ARGUMENT
        naming the first field that breaks a rule)."""
        ...

    def from_json(self, data: bytes) -> Payload:
        """Reads what the payload's ``to_json`` wrote, every rule checked again
        (CredentialsUnreadable when it does not hold a valid payload)."""
        ...

    def columns(self, payload: Payload) -> dict[str, Any]:
        """The connection row's display copies of the payload (never a secret)."""
        ...

    def describe(self, row: ConnectionRow, message: pb.Connection) -> None:
        """Sets the kind's non-secret details on ``message`` from the row's display copies."""
        ...

    def resolved(self, payload: Payload, role: str) -> pb.ResolveConnectionCredentialsResponse:
        """What an agent of the connection's org receives for the payload (``role``: the
        connection role it asked for, for kinds that have roles)."""
        ...


def unsupported(kind: ConnectionKind, what: str) -> FailedPrecondition:
    """The error for an operation that does not apply to ``kind`` (``what``, plural)."""
    # "A source and a destination": the incremental kind of destination is a detail here.
    uses = " and a ".join(
        purpose.value
        for purpose in kind.purposes
        if purpose in (Purpose.SOURCE, Purpose.DESTINATION)
    )
    return FailedPrecondition(
        f"{what} do not apply to a {kind.label} connection: it is a {uses} only, with no login",
        reason="CONNECTION_KIND_UNSUPPORTED",
        metadata={"type": kind.name},
    )
