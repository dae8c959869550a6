"""A connection owner's settings for previews: functions opted in by name, and a cost budget.

They ride in the sealed payload, so the agent reads them with the credentials and nobody who
can only write the connections table can widen what a preview may call; the row keeps a copy
for display, like host and port. The agent applies them (agent.preview_functions).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sevvo.runtime.errors import InvalidArgument

MAX_FUNCTIONS: Final = 100
MAX_NAME_CHARS: Final = 127
# A function name, or a schema and a name: what Postgres stores, no quoting, no whitespace.
_NAME: Final = re.compile(r"[^\s.\"]+(\.[^\s.\"]+)?")
_KEYS: Final = {"allowed_functions", "max_plan_cost"}


@dataclass(frozen=True)
class PreviewSettings:
    """Functions previews may call beyond the reviewed list, and the largest plan cost."""

    allowed_functions: tuple[str, ...] = ()
    max_plan_cost: float = 0.0

    def to_payload(self) -> dict[str, Any]:
        """The ``preview`` section of the sealed payload, and the row's display copy."""
        return {
            "allowed_functions": list(self.allowed_functions),
            "max_plan_cost": self.max_plan_cost,
        }

    @classmethod
    def from_payload(cls, section: Any, *, field: str = "payload.preview") -> PreviewSettings:
        """Reads a ``preview`` section back, applying every rule again; InvalidArgument."""
        if not isinstance(section, dict) or set(section) != _KEYS:
            raise InvalidArgument(field, "must be an object with exactly the preview settings")
        functions, cost = section["allowed_functions"], section["max_plan_cost"]
        if not isinstance(functions, list) or not all(isinstance(f, str) for f in functions):
            raise InvalidArgument(f"{field}.allowed_functions", "must be a list of strings")
        if not isinstance(cost, int | float) or isinstance(cost, bool):
            raise InvalidArgument(f"{field}.max_plan_cost", "must be a number")
        return preview_settings(functions, float(cost), prefix=field)


def preview_settings(
    allowed_functions: Sequence[str], max_plan_cost: float, *, prefix: str
) -> PreviewSettings:
    """Validated settings; raises InvalidArgument on ``f"{prefix}.<field>"``.

    Names are kept as given, duplicates dropped: the agent compares them with the catalog's
    names, which are case-sensitive.
    """
    if len(allowed_functions) > MAX_FUNCTIONS:
        raise InvalidArgument(
            f"{prefix}.allowed_functions", f"must name at most {MAX_FUNCTIONS} functions"
        )
    for name in allowed_functions:
        if len(name) > MAX_NAME_CHARS or not _NAME.fullmatch(name):
            raise InvalidArgument(
                f"{prefix}.allowed_functions",
                f"each must be a function name or schema.name of at most {MAX_NAME_CHARS}"
                " characters, without quotes or spaces",
            )
    if not math.isfinite(max_plan_cost) or max_plan_cost < 0:
        raise InvalidArgument(
            f"{prefix}.max_plan_cost", "must be a finite number, 0 (no budget) or more"
        )
    return PreviewSettings(tuple(dict.fromkeys(allowed_functions)), float(max_plan_cost))
