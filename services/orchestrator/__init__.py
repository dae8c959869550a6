"""orchestrator: starts Temporal workflows on tenant task queues (issue #4, not built yet)."""
