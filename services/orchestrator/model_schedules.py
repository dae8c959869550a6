"""Model schedules: every replica looks for due slots; each slot starts one sync.

A scheduled model's syncs fall at the moment its schedule was set plus whole intervals. The
store hands each due slot to exactly one replica (services/orchestrator/model_store.py,
``claim_due``), which starts the sync as any run is started: recorded, proved, watched and
reconciled. A slot whose model still has a sync running is skipped. Deleting a model deletes
its schedule with it: there is nothing else to remove.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from services.orchestrator.model_store import ModelStore
from services.orchestrator.models import ModelRow
from services.orchestrator.store import RunRow
from sevvo.runtime.logs import get_logger

log = get_logger(__name__)

# Slots claimed per pass; a pass that fills it runs again at once.
BATCH = 100


class ModelScheduler:
    """Starts the syncs that models' schedules call for."""

    def __init__(
        self,
        store: ModelStore,
        start: Callable[[ModelRow], Awaitable[RunRow | None]],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._start = start
        self._clock = clock

    async def start_due(self) -> int:
        """Claims every due slot and starts its sync; returns how many syncs started."""
        started = 0
        while True:
            due = await asyncio.to_thread(self._store.claim_due, self._clock(), BATCH)
            for model in due:
                try:
                    run = await self._start(model)
                except Exception as exc:  # One model's failure must not stop the others.
                    log.warning(
                        "scheduled sync not started",
                        model_id=str(model.id),
                        error=type(exc).__name__,
                    )
                    continue
                if run is not None:
                    started += 1
                    log.info("scheduled sync started", model_id=str(model.id), run_id=str(run.id))
            if len(due) < BATCH:
                return started

    async def run_forever(self, interval: float) -> None:
        """Starts due syncs every ``interval`` seconds until cancelled."""
        while True:
            try:
                await self.start_due()
            except Exception as exc:  # The store may be restarting: the next pass tries again.
                log.warning("schedule pass failed", error=type(exc).__name__)
            await asyncio.sleep(interval)
