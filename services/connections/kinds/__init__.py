"""The registry of connection kinds: one module per kind, one line here per kind.

A new kind (an object store, a warehouse) is a module implementing ``ConnectionKind``
(services/connections/kinds/base.py), its line in ``KINDS``, and on the agent's side its test
and its writer or reader; the domain, servicer and store are not edited.
"""

from __future__ import annotations

from collections.abc import Mapping

from services.connections.kinds import parquet_directory, postgres
from services.connections.kinds.base import (
    PURPOSE_TO_PB,
    ConnectionKind,
    Payload,
    Purpose,
    unsupported,
)
from sevvo.connections.v1 import connections_pb2 as pb
from sevvo.runtime.errors import InvalidArgument

KINDS: tuple[ConnectionKind, ...] = (
    postgres.KIND,
    parquet_directory.KIND,
)

POSTGRES = postgres.KIND
_BY_NAME: Mapping[str, ConnectionKind] = {kind.name: kind for kind in KINDS}
_BY_REQUEST_FIELD: Mapping[str, ConnectionKind] = {
    field: kind for kind in KINDS for field in kind.request_fields
}


def kind_named(name: str) -> ConnectionKind:
    """The kind a stored row's or draft's ``type`` names; KeyError for none (a newer release's
    kind read by this one is a deployment error, not a user's)."""
    return _BY_NAME[name]


def kind_of(payload: Payload) -> ConnectionKind:
    """The kind whose payload ``payload`` is."""
    for kind in KINDS:
        if isinstance(payload, kind.payload_type):
            return kind
    raise TypeError(f"no connection kind has payloads of type {type(payload).__name__}")


def kind_for_request(request: pb.CreateConnectionRequest) -> ConnectionKind:
    """The kind a create request's credentials name; INVALID_ARGUMENT when they name none."""
    which = request.WhichOneof("credentials")
    kind = _BY_REQUEST_FIELD.get(which or "")
    if kind is None:
        fields = ", ".join(_BY_REQUEST_FIELD)
        raise InvalidArgument("credentials", f"one of {fields} is required")
    return kind


__all__ = [
    "KINDS",
    "POSTGRES",
    "PURPOSE_TO_PB",
    "ConnectionKind",
    "Payload",
    "Purpose",
    "kind_for_request",
    "kind_named",
    "kind_of",
    "unsupported",
]
