"""Input rules shared by every service, raising InvalidArgument that names the field."""

from __future__ import annotations

import unicodedata
import uuid

from sevvo.runtime.errors import InvalidArgument

MAX_DISPLAY_NAME_LENGTH = 100


def has_control_characters(value: str) -> bool:
    """Whether a string holds control, format (bidi overrides, zero-width) or unassigned chars."""
    return any(unicodedata.category(ch)[0] == "C" for ch in value)


def display_name(field: str, name: str) -> str:
    """A name of 1-100 printable characters, trimmed."""
    name = name.strip()
    if not name:
        raise InvalidArgument(field, "must not be empty")
    if len(name) > MAX_DISPLAY_NAME_LENGTH:
        raise InvalidArgument(field, f"must be at most {MAX_DISPLAY_NAME_LENGTH} characters")
    if has_control_characters(name):
        raise InvalidArgument(field, "must not contain control or invisible format characters")
    return name


def resource_id(field: str, value: str) -> uuid.UUID:
    """A resource id, which is always a UUID."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(field, "must be a UUID") from None
