"""Small asyncio helpers shared by the processes."""

from __future__ import annotations

import asyncio
from typing import Any


async def settle(future: asyncio.Future[Any]) -> None:
    """Waits for ``future`` to end, whatever its outcome, so that nothing runs on behind
    the caller; its exception, if any, is the caller's to ignore (one failure at a time)."""
    if future.done():
        if not future.cancelled():
            future.exception()  # Retrieved, so asyncio does not report it again.
        return
    try:
        await asyncio.shield(future)
    except asyncio.CancelledError:
        if not future.cancelled():
            raise  # The caller was cancelled, not ``future``: the caller's to handle.
    except Exception:
        return  # The caller reports the failure that came first.
