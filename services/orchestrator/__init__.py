"""orchestrator: starts Temporal workflows on tenant task queues and keeps run metadata."""
