"""The floor of the preview benchmark: one workflow, one no-op activity.

Its own module, importing only temporalio, so the worker runs it in the same workflow
sandbox the agent uses, as a fair baseline.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="noop")
async def noop() -> None:
    """Does nothing."""


@workflow.defn(name="BareWorkflow")
class BareWorkflow:
    """Runs the no-op activity and returns."""

    @workflow.run
    async def run(self) -> None:
        """Runs the no-op activity."""
        await workflow.execute_activity(noop, start_to_close_timeout=timedelta(seconds=10))
