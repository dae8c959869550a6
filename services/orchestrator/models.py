"""Models: an org's definitions of what to sync from a source connection to a destination.

A model is a definition only; the agent runs its syncs inside the customer's network. This
module holds the row the store keeps; the operations behind ModelService come with it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

LoadMode = Literal["full_refresh", "incremental"]


@dataclass(frozen=True)
class ModelRow:
    """One model as the orchestrator's store keeps it."""

    id: uuid.UUID
    org_id: uuid.UUID
    name: str
    source_connection_id: uuid.UUID
    sql: str
    destination_connection_id: uuid.UUID
    destination_schema: str
    destination_table: str
    load_mode: LoadMode
    cursor_column: str | None
    primary_key: tuple[str, ...]
    allow_schema_evolution: bool
    schedule_interval: timedelta | None
    created_at: datetime
    updated_at: datetime
