"""Models: an org's definitions of what to sync from a source connection to a destination.

A model is a definition only; the agent runs its syncs inside the customer's network. This
module holds the row the store keeps and the rules behind ModelService: what a valid model is,
that its connections are the caller's org's, and that each change is audited without its SQL.

The source and the destination may be the same connection: a model then fills a table of the
database it reads (an in-database transformation). The destination table still has to be a
table no other model of the org fills, and the agent's own schema is refused.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal, NamedTuple, get_args

from services.orchestrator.connections_client import (
    DESTINATION,
    INCREMENTAL_DESTINATION,
    SOURCE,
    ConnectionInfo,
    ConnectionLookup,
)
from services.orchestrator.store import RunRow
from sevvo.runtime import audit, paging, validation
from sevvo.runtime.errors import InvalidArgument, NotFound
from sevvo.runtime.logs import get_logger
from sevvo.runtime.preview_validator import QueryRejected, validate_preview_sql
from sevvo.runtime.tokens import Principal

if TYPE_CHECKING:
    from services.orchestrator.model_store import ModelStore

log = get_logger(__name__)

LoadMode = Literal["full_refresh", "incremental"]
LOAD_MODES: tuple[LoadMode, ...] = get_args(LoadMode)

# Audit actions (docs/user-guide.md lists every action) and the target type they name.
CREATE_ACTION = "model.create"
UPDATE_ACTION = "model.update"
DELETE_ACTION = "model.delete"
TARGET_TYPE = "model"

NAME_RULE = re.compile(r"[a-z][a-z0-9_-]{0,62}")
MIN_SCHEDULE_INTERVAL = timedelta(minutes=5)
MAX_SCHEDULE_INTERVAL = timedelta(days=365)
# The agent builds its staging and replaced tables' names from the destination table's with
# suffixes of up to 16 characters (agent/sync/postgres.py); Postgres cuts longer names at 63
# characters, which would make those names collide with the table itself.
MAX_DESTINATION_TABLE_LENGTH = 63 - 16
# Where no model may write: Postgres's own schemas and the agent's sync state.
_RESERVED_SCHEMAS = ("information_schema", "sevvo_sync")
# Postgres's limit on the columns of one index, which the primary key becomes.
MAX_PRIMARY_KEY_COLUMNS = 32


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
    # When the schedule was set: its syncs fall at this moment plus whole intervals.
    schedule_set_at: datetime | None = None


def next_sync_time(row: ModelRow, now: datetime) -> datetime | None:
    """When the model's next scheduled sync falls after ``now``; None without a schedule."""
    if row.schedule_interval is None or row.schedule_set_at is None:
        return None
    passed = max(now - row.schedule_set_at, timedelta(0)) // row.schedule_interval
    return row.schedule_set_at + (passed + 1) * row.schedule_interval


# What starts a model's sync and returns its run: OrchestratorDomain.start_sync, injected by
# the server (services/orchestrator/server.py).
StartSync = Callable[[Principal, str, ModelRow], Awaitable[RunRow]]


@dataclass(frozen=True)
class ModelSpec:
    """The fields of a model a caller sets, as a request carries them (not yet checked).

    ``destination_table`` is ``schema.table``; ``load_mode`` is "" when unset; a zero
    ``schedule_interval`` means no schedule. The field names are Model's in the API, which
    is what an update mask names.
    """

    name: str = ""
    source_connection_id: str = ""
    sql: str = ""
    destination_connection_id: str = ""
    destination_table: str = ""
    load_mode: str = ""
    cursor_column: str = ""
    primary_key: tuple[str, ...] = ()
    allow_schema_evolution: bool = False
    schedule_interval: timedelta = timedelta(0)


UPDATABLE_FIELDS = tuple(f.name for f in fields(ModelSpec))
# Set by the service, never by a caller: an update mask may name them, and they are ignored.
OUTPUT_ONLY_FIELDS = ("id", "next_sync_time", "create_time", "update_time")
# Request paths of the fields, for errors (BadRequest names a field by its path in the request).
_PREFIX = "model."


class Identity(NamedTuple):
    """What a model's row holds beside its fields: ids and times, set by the service."""

    id: uuid.UUID
    org_id: uuid.UUID
    created_at: datetime
    updated_at: datetime


def spec_of(row: ModelRow) -> ModelSpec:
    """A stored model as a spec, the base an update's fields are laid over."""
    return ModelSpec(
        name=row.name,
        source_connection_id=str(row.source_connection_id),
        sql=row.sql,
        destination_connection_id=str(row.destination_connection_id),
        destination_table=f"{row.destination_schema}.{row.destination_table}",
        load_mode=row.load_mode,
        cursor_column=row.cursor_column or "",
        primary_key=row.primary_key,
        allow_schema_evolution=row.allow_schema_evolution,
        schedule_interval=row.schedule_interval or timedelta(0),
    )


# Field rules. Each raises InvalidArgument for its own field; checked() collects them all.


def _name(value: str) -> str:
    if not NAME_RULE.fullmatch(value):
        raise InvalidArgument(
            _PREFIX + "name",
            "must be 1 to 63 lower-case letters, digits, '-' and '_', starting with a letter",
        )
    return value


def _statement(value: str) -> str:
    """The statement as written, once the validator the agent runs accepts it."""
    try:
        validate_preview_sql(value)
    except QueryRejected as rejected:
        where = f" (at character {rejected.position})" if rejected.position else ""
        raise InvalidArgument(
            _PREFIX + "sql", f"{rejected.message}{where}", reason="QUERY_REJECTED"
        ) from None
    return value


def _destination(value: str) -> tuple[str, str]:
    field = _PREFIX + "destination_table"
    schema, dot, table = value.partition(".")
    if not dot or "." in table:
        raise InvalidArgument(field, "must be schema.table, e.g. analytics.orders")
    validation.sql_identifier(field, schema)
    validation.sql_identifier(field, table)
    if schema in _RESERVED_SCHEMAS or schema.startswith("pg_"):
        raise InvalidArgument(
            field, f"cannot be in schema {schema}: Postgres or sevvo keeps its own tables there"
        )
    if len(table) > MAX_DESTINATION_TABLE_LENGTH:
        raise InvalidArgument(
            field,
            f"the table name must be at most {MAX_DESTINATION_TABLE_LENGTH} characters (the"
            " sync names its staging table after it)",
        )
    return schema, table


def _load_mode(value: str) -> LoadMode:
    for mode in LOAD_MODES:
        if value == mode:
            return mode
    raise InvalidArgument(_PREFIX + "load_mode", "must be full_refresh or incremental")


def _primary_key(columns: tuple[str, ...]) -> tuple[str, ...]:
    field = _PREFIX + "primary_key"
    if not columns:
        raise InvalidArgument(field, "must name at least one column for incremental")
    if len(columns) > MAX_PRIMARY_KEY_COLUMNS:
        raise InvalidArgument(field, f"must name at most {MAX_PRIMARY_KEY_COLUMNS}")
    for index, column in enumerate(columns):
        validation.sql_identifier(f"{field}[{index}]", column)
    if len(set(columns)) != len(columns):
        raise InvalidArgument(field, "must not name a column twice")
    return columns


def _load(
    spec: ModelSpec, found: validation.FieldErrors
) -> tuple[LoadMode | None, str | None, tuple[str, ...]]:
    """The load mode, and the cursor column and primary key an incremental model merges by.

    A full refresh replaces the table whole: it has no cursor and merges by no key.
    """
    mode = found.check(lambda: _load_mode(spec.load_mode))
    if mode == "incremental":
        cursor = found.check(
            lambda: validation.sql_identifier(_PREFIX + "cursor_column", spec.cursor_column)
        )
        return mode, cursor, found.check(lambda: _primary_key(spec.primary_key)) or ()
    if mode == "full_refresh":
        for field, value in (
            ("cursor_column", spec.cursor_column),
            ("primary_key", spec.primary_key),
        ):
            if value:
                found.add(_PREFIX + field, "must be empty for full_refresh (incremental only)")
    return mode, None, ()


def _schedule(interval: timedelta) -> timedelta | None:
    field = _PREFIX + "schedule_interval"
    if not interval:
        return None
    if not MIN_SCHEDULE_INTERVAL <= interval <= MAX_SCHEDULE_INTERVAL:
        raise InvalidArgument(field, "must be zero (no schedule) or 5 minutes to 365 days")
    if interval % timedelta(seconds=1):
        raise InvalidArgument(field, "must be a whole number of seconds")
    return interval


async def _connection(
    spec: ModelSpec,
    field: str,
    purpose: str,
    looked_up: bool,
    found: validation.FieldErrors,
    lookup: Callable[[uuid.UUID], Awaitable[ConnectionInfo]],
) -> tuple[uuid.UUID | None, ConnectionInfo | None]:
    """A connection id of the spec, when it names a connection of the caller's org that can
    be used for ``purpose``, and the connection when it was looked up.

    Only a connection whose field is being set (``looked_up``) is asked for: a model stays
    editable (renamed, say) while its connection is briefly unreachable, and a connection
    deleted since fails the sync instead.
    """
    value = found.check(lambda: validation.resource_id(_PREFIX + field, getattr(spec, field)))
    if value is None or not looked_up:
        return value, None
    try:
        info = await lookup(value)
    except NotFound:
        found.add(_PREFIX + field, "names no connection of your org")
        return None, None
    if purpose not in info.purposes:
        found.add(
            _PREFIX + field,
            f"names a {info.label} connection, which is a {info.uses()} only, not a {purpose}",
        )
        return None, info
    return value, info


async def checked(
    spec: ModelSpec,
    lookup: Callable[[uuid.UUID], Awaitable[ConnectionInfo]],
    identity: Identity,
    changed: Iterable[str] = UPDATABLE_FIELDS,
) -> ModelRow:
    """The row of ``spec`` once every field is checked; one InvalidArgument names every
    invalid field.

    ``changed`` names the fields being set: only they are looked up or parsed again (a stored
    statement is not re-judged when only the name changes); the other rules hold for all.
    """
    changed = set(changed)
    found = validation.FieldErrors()
    name = found.check(lambda: _name(spec.name))
    sql: str | None = spec.sql
    if "sql" in changed:
        # Off the event loop: parsing 100 KB of SQL takes tens of milliseconds.
        sql = await asyncio.to_thread(lambda: found.check(lambda: _statement(spec.sql)))
    destination = found.check(lambda: _destination(spec.destination_table))
    mode, cursor, key = _load(spec, found)
    interval = found.check(lambda: _schedule(spec.schedule_interval))
    source, _ = await _connection(
        spec, "source_connection_id", SOURCE, "source_connection_id" in changed, found, lookup
    )
    # The destination is asked for when the load mode changes too: its type may not merge.
    target, destination_info = await _connection(
        spec,
        "destination_connection_id",
        DESTINATION,
        bool({"destination_connection_id", "load_mode"} & changed),
        found,
        lookup,
    )
    # Whether a destination merges by key is its kind's to say (a purpose), not a type name's.
    if (
        mode == "incremental"
        and destination_info is not None
        and INCREMENTAL_DESTINATION not in destination_info.purposes
    ):
        found.add(
            _PREFIX + "load_mode",
            f"a {destination_info.label} is loaded in full refresh only",
        )
    found.raise_any()
    # Every rule passed, so no value above is None where the row needs one.
    assert name and sql and source and target and destination and mode
    return ModelRow(
        **identity._asdict(),
        name=name,
        source_connection_id=source,
        sql=sql,
        destination_connection_id=target,
        destination_schema=destination[0],
        destination_table=destination[1],
        load_mode=mode,
        cursor_column=cursor,
        primary_key=key,
        allow_schema_evolution=spec.allow_schema_evolution,
        schedule_interval=interval,
    )


def update_paths(mask: Iterable[str]) -> set[str]:
    """The fields an update mask names; output-only ones are ignored, unknown ones refused.

    ``*`` names every updatable field (a full replacement, AIP-134).
    """
    paths = set(mask)
    if "*" in paths:
        return set(UPDATABLE_FIELDS)
    unknown = sorted(paths - set(UPDATABLE_FIELDS) - set(OUTPUT_ONLY_FIELDS))
    if unknown:
        raise InvalidArgument(
            "update_mask",
            f"names no field of Model: {', '.join(unknown)}; updatable:"
            f" {', '.join(UPDATABLE_FIELDS)}",
        )
    paths -= set(OUTPUT_ONLY_FIELDS)
    if not paths:
        raise InvalidArgument("update_mask", "names no field to change")
    return paths


def _details(row: ModelRow, changed: Iterable[str] | None = None) -> dict[str, str]:
    """A model's audit details: its name, connections and load mode, its statement's length
    and digest, and for an update the names of the fields it set."""
    details = {
        "name": row.name,
        "source_connection_id": str(row.source_connection_id),
        "destination_connection_id": str(row.destination_connection_id),
        "load_mode": row.load_mode,
        **audit.statement_details(row.sql),
    }
    if changed is not None:
        details["fields"] = ",".join(sorted(changed))
    return details


def _not_found() -> NotFound:
    return NotFound("model not found", reason="MODEL_NOT_FOUND")


class ModelsDomain:
    """The operations behind ModelService, for the caller's org only."""

    def __init__(
        self,
        store: ModelStore,
        connections: ConnectionLookup,
        *,
        start_sync: StartSync,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._connections = connections
        self._start_sync = start_sync
        self._clock = clock

    def _lookup(
        self, caller: Principal, bearer: str
    ) -> Callable[[uuid.UUID], Awaitable[ConnectionInfo]]:
        # Asked as the caller, with their bearer: connections answers NOT_FOUND for an id of
        # another org exactly as for a random one.
        async def lookup(connection_id: uuid.UUID) -> ConnectionInfo:
            return await self._connections.get(bearer, str(connection_id), caller.org_id)

        return lookup

    def _entry(
        self, caller: Principal, action: str, row: ModelRow, details: dict[str, str]
    ) -> audit.Entry:
        return audit.Entry(
            caller.org_id, audit.Actor.of(caller), action, TARGET_TYPE, str(row.id), details=details
        )

    async def create(self, caller: Principal, bearer: str, spec: ModelSpec) -> ModelRow:
        """Creates a model in the caller's org; every invalid field is named at once."""
        now = self._clock()
        identity = Identity(uuid.uuid4(), uuid.UUID(caller.org_id), now, now)
        row = await checked(spec, self._lookup(caller, bearer), identity)
        row = replace(row, schedule_set_at=now if row.schedule_interval else None)
        entry = self._entry(caller, CREATE_ACTION, row, _details(row))
        await asyncio.to_thread(self._store.insert, row, entry)
        log.info("model created", model_id=str(row.id))
        return row

    async def get(self, caller: Principal, model_id: str) -> ModelRow:
        """A model of the caller's org; another org's is NOT_FOUND, as a missing one."""
        mid = validation.resource_id("id", model_id)
        row = await asyncio.to_thread(self._store.get, uuid.UUID(caller.org_id), mid)
        if row is None:
            raise _not_found()
        return row

    async def list_models(
        self, caller: Principal, page_size: int, page_token: str
    ) -> tuple[list[ModelRow], str]:
        """One page of the caller's org's models, by name."""
        limit = paging.page_size(page_size)
        rows = await asyncio.to_thread(
            self._store.list_page,
            uuid.UUID(caller.org_id),
            limit + 1,
            paging.decode_name_cursor(page_token),
        )
        return paging.page_by_name(rows, limit, lambda row: row.name)

    async def update(
        self, caller: Principal, bearer: str, model_id: str, spec: ModelSpec, mask: Iterable[str]
    ) -> ModelRow:
        """Sets the fields ``mask`` names to ``spec``'s; the model as a whole must stay valid.

        A refused update changes nothing; one that raced another update is ABORTED.
        """
        mid = validation.resource_id(_PREFIX + "id", model_id)
        paths = update_paths(mask)
        current = await self.get(caller, str(mid))
        merged = replace(spec_of(current), **{p: getattr(spec, p) for p in paths})
        # Later than the version read, whatever this replica's clock says, so it differs.
        now = max(self._clock(), current.updated_at + timedelta(microseconds=1))
        identity = Identity(current.id, current.org_id, current.created_at, now)
        row = await checked(merged, self._lookup(caller, bearer), identity, paths)
        # A schedule set or changed starts its clock now; any other change keeps its phase.
        kept = row.schedule_interval == current.schedule_interval
        row = replace(
            row,
            schedule_set_at=(
                current.schedule_set_at if kept else now if row.schedule_interval else None
            ),
        )
        entry = self._entry(caller, UPDATE_ACTION, row, _details(row, paths))
        updated = await asyncio.to_thread(self._store.update, row, current.updated_at, entry)
        if updated is None:
            raise _not_found()
        log.info("model updated", model_id=str(row.id), fields=sorted(paths))
        return updated

    async def delete(self, caller: Principal, model_id: str) -> ModelRow:
        """Deletes a model of the caller's org and returns it as it was. Runs already started
        go on; their records stay."""
        row = await self.get(caller, model_id)
        entry = self._entry(caller, DELETE_ACTION, row, _details(row))
        if not await asyncio.to_thread(self._store.delete, row.org_id, row.id, entry):
            raise _not_found()
        log.info("model deleted", model_id=str(row.id))
        return row

    async def sync(self, caller: Principal, bearer: str, model_id: str) -> RunRow:
        """Starts a sync of a model of the caller's org now; returns its run at once."""
        row = await self.get(caller, model_id)
        return await self._start_sync(caller, bearer, row)
