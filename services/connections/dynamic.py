"""A dynamic connection's lease settings: TTLs, statement templates and group role.

The privileged role's own login is a PostgresTarget; these settings ride beside it in the
sealed payload. Template rules are shared with the agent (sevvo.runtime.credential_templates).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sevvo.runtime import credential_templates as templates
from sevvo.runtime.errors import InvalidArgument

DEFAULT_TTL_SECONDS = 3600
DEFAULT_MAX_TTL_SECONDS = 8 * 3600
MIN_TTL_SECONDS = 60
MAX_DEFAULT_TTL_SECONDS = 86400
MAX_MAX_TTL_SECONDS = 7 * 86400
_KEYS = {
    "default_ttl_seconds",
    "max_ttl_seconds",
    "creation_statements",
    "revocation_statements",
    "group_role",
}


@dataclass(frozen=True)
class DynamicSettings:
    """How the agent mints and revokes a connection's lease roles; holds no secret."""

    default_ttl_seconds: int
    max_ttl_seconds: int
    creation_statements: tuple[str, ...]
    revocation_statements: tuple[str, ...]
    group_role: str

    def to_payload(self) -> dict[str, Any]:
        """The ``dynamic`` section of the sealed payload."""
        return {
            "default_ttl_seconds": self.default_ttl_seconds,
            "max_ttl_seconds": self.max_ttl_seconds,
            "creation_statements": list(self.creation_statements),
            "revocation_statements": list(self.revocation_statements),
            "group_role": self.group_role,
        }

    @classmethod
    def from_payload(cls, section: Any) -> DynamicSettings:
        """Reads a ``dynamic`` section back, applying every rule again.

        Raises InvalidArgument (on ``payload.dynamic...``) for any problem; the caller turns
        that into a malformed-payload error.
        """
        field = "payload.dynamic"
        if not isinstance(section, dict) or set(section) != _KEYS:
            raise InvalidArgument(field, "must be an object with exactly the dynamic settings")
        for name in ("default_ttl_seconds", "max_ttl_seconds"):
            value = section[name]
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidArgument(f"{field}.{name}", "must be an integer")
        for name in ("creation_statements", "revocation_statements"):
            value = section[name]
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise InvalidArgument(f"{field}.{name}", "must be a list of strings")
        if not isinstance(section["group_role"], str):
            raise InvalidArgument(f"{field}.group_role", "must be a string")
        return dynamic_settings(
            default_ttl_seconds=section["default_ttl_seconds"],
            max_ttl_seconds=section["max_ttl_seconds"],
            creation_statements=section["creation_statements"],
            revocation_statements=section["revocation_statements"],
            group_role=section["group_role"],
            prefix=field,
        )


def dynamic_settings(
    *,
    default_ttl_seconds: int,
    max_ttl_seconds: int,
    creation_statements: Sequence[str],
    revocation_statements: Sequence[str],
    group_role: str,
    prefix: str = "dynamic",
) -> DynamicSettings:
    """Validated settings with defaults filled in; raises InvalidArgument naming the field.

    0 TTLs mean the defaults (3600 and 28800 seconds), an empty group role means
    "sevvo_readers", and empty creation statements mean the default CREATE ROLE, stored
    expanded so the agent runs exactly what was validated. Empty revocation statements stay
    empty: the agent's built-in revoke.
    """
    default_ttl = default_ttl_seconds or DEFAULT_TTL_SECONDS
    max_ttl = max_ttl_seconds or DEFAULT_MAX_TTL_SECONDS
    if not MIN_TTL_SECONDS <= default_ttl <= MAX_DEFAULT_TTL_SECONDS:
        raise InvalidArgument(
            f"{prefix}.default_ttl_seconds",
            f"must be between {MIN_TTL_SECONDS} and {MAX_DEFAULT_TTL_SECONDS} (or 0 for "
            f"{DEFAULT_TTL_SECONDS})",
        )
    if not MIN_TTL_SECONDS <= max_ttl <= MAX_MAX_TTL_SECONDS:
        raise InvalidArgument(
            f"{prefix}.max_ttl_seconds",
            f"must be between {MIN_TTL_SECONDS} and {MAX_MAX_TTL_SECONDS} (or 0 for "
            f"{DEFAULT_MAX_TTL_SECONDS})",
        )
    if default_ttl > max_ttl:
        raise InvalidArgument(
            f"{prefix}.default_ttl_seconds", "default_ttl_seconds must not exceed max_ttl_seconds"
        )
    group = group_role or templates.DEFAULT_GROUP_ROLE
    problem = templates.group_role_problem(group)
    if problem is not None:
        raise InvalidArgument(f"{prefix}.group_role", problem)
    creation = list(creation_statements) or templates.default_creation(group)
    revocation = list(revocation_statements) or list(templates.DEFAULT_REVOCATION)
    templates.validate_templates(creation, revocation, field_prefix=prefix)
    return DynamicSettings(
        default_ttl_seconds=default_ttl,
        max_ttl_seconds=max_ttl,
        creation_statements=tuple(creation),
        revocation_statements=tuple(revocation),
        group_role=group,
    )


# The settings of a named role an update mask may name (ConnectionRoleSettings' fields).
ROLE_SETTING_PATHS = (
    "default_ttl_seconds",
    "max_ttl_seconds",
    "creation_statements",
    "revocation_statements",
    "group_role",
)


def role_update_mask(mask: Iterable[str]) -> frozenset[str]:
    """The paths of a role update mask; InvalidArgument on ``update_mask`` if empty or unknown."""
    paths = frozenset(mask)
    if not paths:
        raise InvalidArgument("update_mask", "must name at least one field")
    unknown = sorted(paths - set(ROLE_SETTING_PATHS))
    if unknown:
        raise InvalidArgument(
            "update_mask",
            f"cannot update {', '.join(unknown)}; updatable: {', '.join(ROLE_SETTING_PATHS)}",
        )
    return paths


def updated_settings(
    current: DynamicSettings,
    paths: frozenset[str],
    *,
    default_ttl_seconds: int,
    max_ttl_seconds: int,
    creation_statements: Sequence[str],
    revocation_statements: Sequence[str],
    group_role: str,
    prefix: str = "settings",
) -> DynamicSettings:
    """``current`` with the fields in ``paths`` replaced, validated as a whole.

    Values mean what they mean on create (0 TTLs the defaults, empty statements the default
    ones). A new group role alone also moves creation statements that were the default ones
    for the old group to the default ones for the new group; statements an admin wrote stay
    as written.
    """

    def pick(path: str, new: Any, old: Any) -> Any:
        return new if path in paths else old

    creation: Sequence[str] = pick(
        "creation_statements", creation_statements, current.creation_statements
    )
    if (
        "group_role" in paths
        and "creation_statements" not in paths
        and list(current.creation_statements) == templates.default_creation(current.group_role)
    ):
        creation = ()
    return dynamic_settings(
        default_ttl_seconds=pick(
            "default_ttl_seconds", default_ttl_seconds, current.default_ttl_seconds
        ),
        max_ttl_seconds=pick("max_ttl_seconds", max_ttl_seconds, current.max_ttl_seconds),
        creation_statements=creation,
        revocation_statements=pick(
            "revocation_statements", revocation_statements, current.revocation_statements
        ),
        group_role=pick("group_role", group_role, current.group_role),
        prefix=prefix,
    )
