"""Durations as people write them: "2h", "30m", "90s", "1h30m", or a number of seconds."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)([hms])")
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1}


def parse_duration(value: str | int | float | timedelta) -> int:
    """Whole seconds in ``value``; raises ValueError saying what a duration looks like.

    Accepts a timedelta, a number of seconds, or text such as "2h", "30m", "90s", "1h30m"
    (units in that order, each at most once). Zero and negative durations are refused: a
    credential that is already expired is never what the caller meant.
    """
    if isinstance(value, bool):
        raise ValueError(f"a duration must be text like '2h' or seconds, not {value!r}")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_text(value.strip().lower())
    else:
        raise ValueError(f"a duration must be text like '2h' or seconds, not {type(value)!r}")
    if seconds < 1:
        raise ValueError(f"a duration must be at least 1 second, got {value!r}")
    return int(seconds)


def _parse_text(text: str) -> float:
    if text.isdigit():
        return float(text)
    position = 0
    seen: list[str] = []
    total = 0
    for match in _PART.finditer(text):
        unit = match.group(2)
        if match.start() != position or unit in seen or (seen and _order(unit) <= _order(seen[-1])):
            break
        seen.append(unit)
        total += int(match.group(1)) * _UNIT_SECONDS[unit]
        position = match.end()
    if not seen or position != len(text):
        raise ValueError(
            f"{text!r} is not a duration: write hours, minutes and seconds like '2h', '30m', "
            "'90s' or '1h30m', or a number of seconds"
        )
    return float(total)


def _order(unit: str) -> int:
    return "hms".index(unit)
