"""What a customer workload may borrow: named roles of dynamic connections, up to a TTL.

The contract between auth (which issues workload identities and signs their grants into the
workload's bearer), connections (which checks a lease request against those grants before it
records the lease) and the agent (which serves the workload's requests). One definition here,
so a grant auth accepts is a grant connections understands.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sevvo.runtime.errors import InvalidArgument

DEFAULT_ROLE: Final = "default"
"""The role an existing dynamic connection's single set of statements became."""

ROLE_NAME_RULE: Final = re.compile(r"[a-z][a-z0-9_]{0,62}")
ROLE_NAME_HELP: Final = (
    "must be 1-63 characters of lowercase letters, digits and '_', starting with a letter"
)
MAX_GRANTS: Final = 100


def role_name(field: str, value: str) -> str:
    """A dynamic connection's role name (lower_snake_case), or InvalidArgument naming ``field``."""
    if not ROLE_NAME_RULE.fullmatch(value):
        raise InvalidArgument(field, ROLE_NAME_HELP)
    return value


@dataclass(frozen=True, order=True)
class Grant:
    """One (connection, role) pair a workload may borrow leases of."""

    connection_id: str
    role: str

    @classmethod
    def checked(cls, field: str, connection_id: str, role: str) -> Grant:
        """A grant whose parts are well formed, or InvalidArgument naming ``field``."""
        try:
            uuid.UUID(connection_id)
        except ValueError:
            raise InvalidArgument(f"{field}.connection_id", "must be a connection's UUID") from None
        return cls(str(uuid.UUID(connection_id)), role_name(f"{field}.role", role))

    def claim(self) -> dict[str, str]:
        """The grant as it is signed into a workload bearer."""
        return {"connection_id": self.connection_id, "role": self.role}


def checked_grants(field: str, pairs: Iterable[tuple[str, str]]) -> tuple[Grant, ...]:
    """Distinct, well-formed grants in a stable order; at least one, at most MAX_GRANTS."""
    grants = sorted(
        {Grant.checked(f"{field}[{i}]", conn, role) for i, (conn, role) in enumerate(pairs)}
    )
    if not grants:
        raise InvalidArgument(field, "must grant at least one connection role")
    if len(grants) > MAX_GRANTS:
        raise InvalidArgument(field, f"must hold at most {MAX_GRANTS} grants")
    return tuple(grants)


def grants_from_claim(claim: Any) -> tuple[Grant, ...]:
    """The grants of a verified bearer's ``grants`` claim; malformed entries grant nothing."""
    if not isinstance(claim, Sequence) or isinstance(claim, str):
        return ()
    found = set()
    for item in claim:
        if not isinstance(item, Mapping):
            continue
        conn, role = item.get("connection_id"), item.get("role")
        if isinstance(conn, str) and isinstance(role, str) and ROLE_NAME_RULE.fullmatch(role):
            found.add(Grant(conn, role))
    return tuple(sorted(found))


def may_borrow(
    grants: Iterable[Grant], max_ttl_seconds: int, connection_id: str, role: str, ttl_seconds: int
) -> str | None:
    """Why a workload may not borrow ``role`` of ``connection_id`` for ``ttl_seconds``, or None.

    The returned reason is a stable upper-case code for errors and the audit log.
    """
    if Grant(connection_id, role) not in set(grants):
        return "ROLE_NOT_GRANTED"
    if ttl_seconds > max_ttl_seconds:
        return "TTL_OVER_WORKLOAD_MAXIMUM"
    return None


__all__ = [
    "DEFAULT_ROLE",
    "MAX_GRANTS",
    "ROLE_NAME_HELP",
    "ROLE_NAME_RULE",
    "Grant",
    "checked_grants",
    "grants_from_claim",
    "may_borrow",
    "role_name",
]
