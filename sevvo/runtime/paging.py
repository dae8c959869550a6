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


def encode_cursor(created_at: datetime, row_id: str, scope: str = "") -> str:
    """Encodes the position after the last row of a page.

    ``scope`` (a digest of the request's filters, say) travels in the token, and
    ``decode_cursor`` refuses the token under any other scope.
    """
    position: list[str] = [created_at.isoformat(), row_id]
    if scope:
        position.append(scope)
    raw = json.dumps(position).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, scope: str = "") -> tuple[datetime, str] | None:
    """Decodes a page token; empty means the first page.

    Validated whole, because every part reaches SQL: the time must be timezone-aware and
    the row id a UUID (every keyset column is one), so a forged token is INVALID_ARGUMENT
    rather than a database error. A token made under another ``scope`` is refused too.
    """
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        created, row_id, *rest = json.loads(raw)
        if len(rest) > 1 or not all(isinstance(part, str) for part in rest):
            raise ValueError("not a scope")
        token_scope = rest[0] if rest else ""
        when = datetime.fromisoformat(created)
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValueError("naive time")
        position = when, str(uuid.UUID(row_id))
    except (binascii.Error, ValueError, TypeError, AttributeError, OverflowError):
        raise _invalid_token() from None
    if token_scope != scope:
        raise InvalidArgument(
            "page_token",
            "was returned for other filters; repeat the filters of the request that returned"
            " it, or leave page_token empty to start again",
            reason="INVALID_PAGE_TOKEN",
        )
    return position


def _invalid_token() -> InvalidArgument:
    return InvalidArgument(
        "page_token",
        "is not a token returned by this method; pass next_page_token unchanged, or empty"
        " for the first page",
        reason="INVALID_PAGE_TOKEN",
    )


# The longest name a by-name token may carry: longer than any resource name, so a token is
# never refused for its name's length, short enough that a forged one is cheap to refuse.
_MAX_NAME_IN_TOKEN = 200


def encode_name_cursor(name: str) -> str:
    """Encodes the position after the last row of a page listed by a unique name."""
    raw = json.dumps({"after": name}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_name_cursor(token: str) -> str | None:
    """Decodes a by-name page token; empty means the first page.

    The name reaches SQL only as a parameter; it is still checked to be a short string, so a
    forged token is INVALID_ARGUMENT, and a time-and-id token (``encode_cursor``) is refused.
    """
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        position = json.loads(raw)
    except (binascii.Error, ValueError, TypeError, RecursionError):
        raise _invalid_token() from None
    name = position.get("after") if isinstance(position, dict) else None
    if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME_IN_TOKEN or len(position) != 1:
        raise _invalid_token()
    return name


def page_by_name(rows: Sequence[T], limit: int, name: Callable[[T], str]) -> tuple[list[T], str]:
    """Like ``page_of``, for rows listed by a name unique among them."""
    if len(rows) <= limit:
        return list(rows), ""
    page = list(rows[:limit])
    return page, encode_name_cursor(name(page[-1]))


def page_of(
    rows: Sequence[T],
    limit: int,
    position: Callable[[T], tuple[datetime, object]],
    scope: str = "",
) -> tuple[list[T], str]:
    """Cuts ``limit + 1`` fetched rows to one page and the token for the next.

    Queries fetch one row more than the page holds; its presence is what says another page
    exists. ``position`` gives a row's keyset (sort time, id); ``scope`` see encode_cursor.
    """
    if len(rows) <= limit:
        return list(rows), ""
    page = list(rows[:limit])
    when, row_id = position(page[-1])
    return page, encode_cursor(when, str(row_id), scope)
