"""The Parquet directory kind: a directory inside the agent's pod, a destination only.

Nothing in it is secret, but it is stored the way every connection is (a sealed payload the
agent resolves, a display copy in the row), so the agent reads only what the service sealed.
Whether the agent may write there is the agent's decision (agent/directory_probe.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from services.connections.kinds.base import Payload, Purpose
from services.connections.store import ConnectionRow
from sevvo.connections.v1 import connections_pb2 as pb
from sevvo.runtime.errors import InvalidArgument
from sevvo.runtime.sealing import CredentialsUnreadable
from sevvo.runtime.validation import directory_path_problem

PAYLOAD_VERSION = 1
_KIND = "parquet_directory"


@dataclass(frozen=True)
class ParquetDirectoryTarget:
    """A directory of Parquet files: its absolute, normalised path in the agent's pod."""

    path: str

    def to_json(self) -> bytes:
        """The plaintext of the sealed payload (versioned JSON, UTF-8)."""
        payload = {"version": PAYLOAD_VERSION, "kind": _KIND, "path": self.path}
        return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ParquetDirectoryTarget:
        """Reads what ``to_json`` wrote, checking the path's rules again."""
        try:
            payload = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _malformed("it is not a JSON object") from None
        if not isinstance(payload, dict) or set(payload) != {"version", "kind", "path"}:
            raise _malformed("it is not a Parquet directory payload")
        if payload["version"] != PAYLOAD_VERSION or payload["kind"] != _KIND:
            raise _malformed(f"its version is not {PAYLOAD_VERSION}")
        path = payload["path"]
        if not isinstance(path, str) or directory_path_problem(path) is not None:
            raise _malformed("its path breaks the path rules")
        return cls(path)


def parquet_directory(
    path: str, *, field: str = "parquet_directory.path"
) -> ParquetDirectoryTarget:
    """The target for ``path``; InvalidArgument on ``field`` when it breaks a rule."""
    problem = directory_path_problem(path)
    if problem is not None:
        raise InvalidArgument(field, problem)
    return ParquetDirectoryTarget(path)


class ParquetDirectoryKind:
    """A directory of Parquet files in the agent's pod (a mounted volume)."""

    name = _KIND
    label = "Parquet directory"
    connection_type = pb.CONNECTION_TYPE_PARQUET_DIRECTORY
    purposes = (Purpose.DESTINATION,)
    request_fields = ("parquet_directory",)
    payload_type = ParquetDirectoryTarget

    def from_request(self, request: pb.CreateConnectionRequest) -> tuple[Payload, str]:
        """The validated directory; there are no credentials (mode "none")."""
        return parquet_directory(request.parquet_directory.path), "none"

    def from_json(self, data: bytes) -> Payload:
        """The sealed directory, its rules checked again."""
        return ParquetDirectoryTarget.from_json(data)

    def columns(self, payload: Payload) -> dict[str, Any]:
        """The path, as the row's details; no Postgres column is set."""
        return {
            "host": None,
            "port": None,
            "database": None,
            "username": None,
            "ssl_mode": None,
            "preview_settings": None,
            "ssl_root_certs": None,
            "details": {"path": _target(payload).path},
        }

    def describe(self, row: ConnectionRow, message: pb.Connection) -> None:
        """parquet_directory, from the row's display copy."""
        path = (row.details or {}).get("path", "")
        message.parquet_directory.CopyFrom(pb.ParquetDirectory(path=str(path)))

    def resolved(self, payload: Payload, role: str) -> pb.ResolveConnectionCredentialsResponse:
        """The directory (postgres stays unset)."""
        return pb.ResolveConnectionCredentialsResponse(
            parquet_directory=pb.ParquetDirectory(path=_target(payload).path)
        )


def _target(payload: Payload) -> ParquetDirectoryTarget:
    if not isinstance(payload, ParquetDirectoryTarget):
        raise TypeError("a Parquet directory connection's payload is a ParquetDirectoryTarget")
    return payload


def _malformed(problem: str) -> CredentialsUnreadable:
    return CredentialsUnreadable(
        f"the stored Parquet directory payload is malformed: {problem}",
        reason="CREDENTIALS_PAYLOAD_MALFORMED",
    )


KIND = ParquetDirectoryKind()
