"""Opaque page tokens for List methods (AIP-158): keyset cursors, not offsets."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from sevvo.runtime.errors import InvalidArgument

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_size(requested: int) -> int:
    """Clamps a requested page size: 0 means the default, large values mean the maximum."""
    if requested < 0:
        raise InvalidArgument("page_size", "must not be negative")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def encode_cursor(created_at: datetime, row_id: str) -> str:
    """Encodes the position after the last row of a page."""
    raw = json.dumps([created_at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> tuple[datetime, str] | None:
    """Decodes a page token; empty means the first page.

    Validated whole, because every part reaches SQL: the time must be timezone-aware and
    the row id a UUID (every keyset column is one), so a forged token is INVALID_ARGUMENT
    rather than a database error.
    """
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        created, row_id = json.loads(raw)
        when = datetime.fromisoformat(created)
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError("naive time")
        return when, str(uuid.UUID(row_id))
    except (binascii.Error, ValueError, TypeError, AttributeError, OverflowError):
        raise InvalidArgument(
            "page_token",
            "is not a token returned by this method; pass next_page_token unchanged, or empty"
            " for the first page",
            reason="INVALID_PAGE_TOKEN",
        ) from None


def page_of(
    rows: Sequence[T], limit: int, position: Callable[[T], tuple[datetime, object]]
) -> tuple[list[T], str]:
    """Cuts ``limit + 1`` fetched rows to one page and the token for the next.

    Queries fetch one row more than the page holds; its presence is what says another page
    exists. ``position`` gives a row's keyset (sort time, id).
    """
    if len(rows) <= limit:
        return list(rows), ""
    page = list(rows[:limit])
    when, row_id = position(page[-1])
    return page, encode_cursor(when, str(row_id))
