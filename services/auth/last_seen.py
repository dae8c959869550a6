"""Which deployments' "last seen" time a replica writes now: at most once per deployment per
``every`` seconds, so an agent exchanging its token often costs Postgres one small update a
minute, and the exchange itself (often answered from memory) never waits for it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

SEEN_EVERY_SECONDS = 60.0
# Beyond this many remembered deployments, the ones not due anyway are forgotten first.
_MAX_REMEMBERED = 100_000


class LastSeen:
    """Remembers when this replica last recorded each deployment as seen."""

    def __init__(
        self, every: float = SEEN_EVERY_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._every = every
        self._clock = clock
        self._recorded: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, deployment_id: str) -> bool:
        """Whether to record ``deployment_id`` as seen now (and, if so, counts it recorded)."""
        now = self._clock()
        with self._lock:
            last = self._recorded.get(deployment_id)
            if last is not None and now - last < self._every:
                return False
            if len(self._recorded) >= _MAX_REMEMBERED:
                self._recorded = {
                    key: at for key, at in self._recorded.items() if now - at < self._every
                }
            self._recorded[deployment_id] = now
            return True

    def forget(self, deployment_id: str) -> None:
        """Records ``deployment_id`` again at its next exchange (its write failed)."""
        with self._lock:
            self._recorded.pop(deployment_id, None)
