"""Small helpers every servicer uses to stay thin."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import ParamSpec, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

P = ParamSpec("P")
T = TypeVar("T")


async def blocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Runs a blocking domain call (Postgres, scrypt) in a worker thread.

    The copied context carries the verified caller along, so the domain sees the same
    principal as the servicer.
    """
    return await asyncio.to_thread(fn, *args, **kwargs)


def timestamp(value: datetime | None) -> Timestamp | None:
    """A protobuf Timestamp for an aware datetime, or None (the field stays unset)."""
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts
