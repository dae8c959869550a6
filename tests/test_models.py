"""Models in the control plane: definitions only, checked field by field, kept per org, audited.

Most tests call ModelsDomain on a real Postgres, with the connections domain answering its
connection lookups in process (tests/plugins/domains.py); the last ones call ModelService over
TLS on loopback, where errors become gRPC status codes with BadRequest details.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.rpc import error_details_pb2

from devstack.pki import DevPki
from services.orchestrator.connections_client import ConnectionsClient
from services.orchestrator.model_servicer import ModelServicer
from services.orchestrator.model_store import ModelStore
from services.orchestrator.models import ModelRow, ModelsDomain, ModelSpec, next_sync_time
from services.orchestrator.server import ACCESS
from services.orchestrator.store import OrchestratorStore, RunRow
from sevvo.auth.v1 import auth_pb2, users_pb2
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.orchestrator.v1 import models_pb2 as mpb
from sevvo.orchestrator.v1 import models_pb2_grpc as mpb_grpc
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.runtime import audit, paging
from sevvo.runtime.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    NotFound,
    SevvoError,
)
from sevvo.runtime.grpc_client import ClientTls, error_details, secure_channel
from sevvo.runtime.grpc_server import (
    MAX_ERROR_TEXT,
    ServerSpec,
    TlsFiles,
    start_server,
    status_for,
)
from sevvo.runtime.tokens import Principal
from sevvo.runtime.validation import FieldErrors
from tests.plugins.auth_stack import PASSWORD, BackgroundLoop
from tests.plugins.auth_stack import Org as AuthOrg
from tests.plugins.control_plane import ControlPlane
from tests.plugins.domains import ConnectionsAsLookup, ConnectionsDomains, OrgCallers, org_callers

T = TypeVar("T")
SQL = "select id, email, updated_at from public.customers where email like '%@acme.example'"
MINUTE = timedelta(minutes=1)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Runs one domain call to its end."""
    return asyncio.run(coro)


@dataclass
class SyncCalls:
    """A stand-in for OrchestratorDomain.start_sync that records what it was given."""

    calls: list[tuple[Principal, str, ModelRow]] = field(default_factory=list)

    async def __call__(self, caller: Principal, bearer: str, model: ModelRow) -> RunRow:
        self.calls.append((caller, bearer, model))
        now = datetime.now(UTC)
        return RunRow(
            id=uuid.uuid4(),
            org_id=model.org_id,
            kind="sync",
            state="running",
            connection_id=model.source_connection_id,
            draft_id=None,
            workflow_id=f"sync-{uuid.uuid4()}",
            outcome_category=None,
            message=None,
            started_at=now,
            finished_at=None,
            duration_ms=None,
            model_id=model.id,
        )


@dataclass
class World:
    """The models domain on the module's store, its lookups answered by connections."""

    store: OrchestratorStore
    models: ModelsDomain
    lookup: ConnectionsAsLookup
    connections: ConnectionsDomains
    syncs: SyncCalls


@pytest.fixture(scope="module")
def world(module_database_url: str, connections_domains: ConnectionsDomains) -> Iterator[World]:
    """One store for the module; each test keeps to orgs of its own."""
    store = OrchestratorStore(module_database_url)
    store.open()
    lookup = ConnectionsAsLookup(connections_domains.connections)
    syncs = SyncCalls()
    try:
        yield World(
            store,
            ModelsDomain(ModelStore(store), lookup, start_sync=syncs),
            lookup,
            connections_domains,
            syncs,
        )
    finally:
        store.close()


class Org:
    """An org with a source and a destination connection, acting through the models domain."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.callers: OrgCallers = org_callers()
        self.source = self.connection("warehouse-src")
        self.destination = self.connection("warehouse-dst")

    def connection(self, name: str) -> str:
        """A new connection of the org; returns its id."""
        request = cpb.CreateConnectionRequest(
            display_name=name,
            fields=cpb.PostgresFields(
                host="db.acme.internal",
                database="analytics",
                username="reader",
                password="reader-password-1",
                ssl_mode=cpb.SSL_MODE_REQUIRE,
            ),
        )
        return str(run(self.world.connections.create(self.callers.admin, request)).id)

    def spec(self, **changes: Any) -> ModelSpec:
        """A valid full-refresh spec on the org's connections, with ``changes``."""
        values: dict[str, Any] = {
            "name": "customers",
            "source_connection_id": self.source,
            "sql": SQL,
            "destination_connection_id": self.destination,
            "destination_table": "analytics.customers",
            "load_mode": "full_refresh",
        }
        values.update(changes)
        return ModelSpec(**values)

    def create(self, caller: Principal | None = None, **changes: Any) -> ModelRow:
        """Creates a model as ``caller`` (the member by default)."""
        caller = caller or self.callers.member
        return run(self.world.models.create(caller, self.bearer(caller), self.spec(**changes)))

    def bearer(self, caller: Principal) -> str:
        """The caller's bearer for connection lookups."""
        return self.world.lookup.bearer_for(caller)

    def update(self, model_id: uuid.UUID | str, mask: list[str], **changes: Any) -> ModelRow:
        """Updates a model as the member, the spec holding ``changes``."""
        caller = self.callers.member
        return run(
            self.world.models.update(
                caller, self.bearer(caller), str(model_id), ModelSpec(**changes), mask
            )
        )

    def events(self) -> list[audit.AuditEvent]:
        """The org's audit events about models, newest first."""
        with self.world.store.connection() as conn:
            return audit.list_events(
                conn,
                uuid.UUID(self.callers.org_id),
                limit=100,
                before=None,
                where=audit.make_filter(action="model."),
            )


@pytest.fixture
def org(world: World) -> Org:
    """A fresh org with two connections."""
    return Org(world)


def refused(call: Callable[[], object]) -> SevvoError:
    """The domain error ``call`` raised."""
    with pytest.raises(SevvoError) as caught:
        call()
    return caught.value


def fields_of(error: SevvoError) -> list[str]:
    """The fields an InvalidArgument names, in order."""
    assert isinstance(error, InvalidArgument), error
    return [v.field for v in error.violations]


# --- creating: every rule, with the field it names ------------------------------------------


def test_a_valid_model_is_stored_and_read_back_as_created(org: Org) -> None:
    """A full-refresh model is stored in the caller's org and GetModel returns it unchanged."""
    row = org.create()
    assert (row.name, row.load_mode, row.cursor_column, row.primary_key) == (
        "customers",
        "full_refresh",
        None,
        (),
    )
    assert (row.destination_schema, row.destination_table) == ("analytics", "customers")
    assert str(row.org_id) == org.callers.org_id and row.sql == SQL
    assert row.schedule_interval is None and row.created_at == row.updated_at
    assert run(org.world.models.get(org.callers.admin, str(row.id))) == row


def test_an_incremental_model_keeps_its_cursor_and_key(org: Org) -> None:
    """Incremental models store their cursor column and primary key columns in order."""
    row = org.create(load_mode="incremental", cursor_column="updated_at", primary_key=("id", "k"))
    assert (row.load_mode, row.cursor_column, row.primary_key) == (
        "incremental",
        "updated_at",
        ("id", "k"),
    )
    assert run(org.world.models.get(org.callers.member, str(row.id))).primary_key == ("id", "k")


def test_source_and_destination_may_be_one_connection(org: Org) -> None:
    """A model may fill a table of the database it reads (an in-database transformation)."""
    row = org.create(destination_connection_id=org.source)
    assert row.source_connection_id == row.destination_connection_id


INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "name-upper": ({"name": "Customers"}, "model.name"),
    "name-digit-first": ({"name": "1st"}, "model.name"),
    "name-empty": ({"name": ""}, "model.name"),
    "name-64": ({"name": "a" * 64}, "model.name"),
    "name-space": ({"name": "my model"}, "model.name"),
    "sql-write": ({"sql": "delete from customers"}, "model.sql"),
    "sql-empty": ({"sql": "  "}, "model.sql"),
    "sql-two": ({"sql": "select 1; select 2"}, "model.sql"),
    "sql-into": ({"sql": "select * into t from customers"}, "model.sql"),
    "sql-cte-write": ({"sql": "with d as (delete from t returning *) select 1"}, "model.sql"),
    "source-not-uuid": ({"source_connection_id": "warehouse"}, "model.source_connection_id"),
    "source-unknown": ({"source_connection_id": str(uuid.uuid4())}, "model.source_connection_id"),
    "destination-unknown": (
        {"destination_connection_id": str(uuid.uuid4())},
        "model.destination_connection_id",
    ),
    "table-no-schema": ({"destination_table": "customers"}, "model.destination_table"),
    "table-three-parts": ({"destination_table": "a.b.c"}, "model.destination_table"),
    "table-upper": ({"destination_table": "analytics.Customers"}, "model.destination_table"),
    "table-quoted": ({"destination_table": 'analytics."x y"'}, "model.destination_table"),
    "table-empty-part": ({"destination_table": "analytics."}, "model.destination_table"),
    "table-pg-schema": ({"destination_table": "pg_catalog.t"}, "model.destination_table"),
    "table-info-schema": ({"destination_table": "information_schema.t"}, "model.destination_table"),
    "table-agent-state": ({"destination_table": "sevvo_sync.t"}, "model.destination_table"),
    "table-48": ({"destination_table": "analytics." + "t" * 48}, "model.destination_table"),
    "load-mode-unset": ({"load_mode": ""}, "model.load_mode"),
    "load-mode-other": ({"load_mode": "append"}, "model.load_mode"),
    "full-refresh-cursor": ({"cursor_column": "updated_at"}, "model.cursor_column"),
    "full-refresh-key": ({"primary_key": ("id",)}, "model.primary_key"),
    "incremental-key-bad": (
        {"load_mode": "incremental", "cursor_column": "ts", "primary_key": ("id", "Bad")},
        "model.primary_key[1]",
    ),
    "incremental-key-twice": (
        {"load_mode": "incremental", "cursor_column": "ts", "primary_key": ("id", "id")},
        "model.primary_key",
    ),
    "incremental-key-33": (
        {
            "load_mode": "incremental",
            "cursor_column": "ts",
            "primary_key": tuple(f"c{i}" for i in range(33)),
        },
        "model.primary_key",
    ),
    "incremental-cursor-bad": (
        {"load_mode": "incremental", "cursor_column": "updated at", "primary_key": ("id",)},
        "model.cursor_column",
    ),
    "interval-4m": ({"schedule_interval": 4 * MINUTE}, "model.schedule_interval"),
    "interval-366d": ({"schedule_interval": timedelta(days=366)}, "model.schedule_interval"),
    "interval-negative": ({"schedule_interval": -10 * MINUTE}, "model.schedule_interval"),
    "interval-fraction": (
        {"schedule_interval": 10 * MINUTE + timedelta(milliseconds=5)},
        "model.schedule_interval",
    ),
}


@pytest.mark.parametrize(("changes", "field_name"), list(INVALID.values()), ids=list(INVALID))
def test_an_invalid_field_is_named_and_nothing_is_stored(
    org: Org, changes: dict[str, Any], field_name: str
) -> None:
    """Each rule refuses with INVALID_ARGUMENT naming its field; no model, no audit record."""
    error = refused(lambda: org.create(**changes))
    assert fields_of(error) == [field_name]
    assert run(org.world.models.list_models(org.callers.member, 0, "")) == ([], "")
    assert org.events() == []


def test_a_rejected_statement_says_why_and_where(org: Org) -> None:
    """The validator's message and position reach the caller, under reason QUERY_REJECTED."""
    error = refused(lambda: org.create(sql="select 1;\nupdate customers set email = null"))
    assert isinstance(error, InvalidArgument) and error.reason == "QUERY_REJECTED"
    assert error.field == "model.sql"
    assert "one statement" in error.description and "(at character 11)" in error.description


def test_every_invalid_field_is_named_at_once(org: Org) -> None:
    """An empty spec names each required field in one answer, as a form marks them together."""
    error = refused(lambda: run(org.world.models.create(org.callers.member, "", ModelSpec())))
    assert fields_of(error) == [
        "model.name",
        "model.sql",
        "model.destination_table",
        "model.load_mode",
        "model.source_connection_id",
        "model.destination_connection_id",
    ]
    assert error.reason == "INVALID_ARGUMENT"


def test_incremental_needs_a_cursor_and_a_key(org: Org) -> None:
    """An incremental model without them names both fields."""
    error = refused(lambda: org.create(load_mode="incremental"))
    assert fields_of(error) == ["model.cursor_column", "model.primary_key"]


def test_another_orgs_connection_is_refused_like_a_missing_one(org: Org, world: World) -> None:
    """A connection id of another org names the field, with the same words as a random id."""
    other = Org(world)
    foreign = refused(lambda: org.create(source_connection_id=other.source))
    missing = refused(lambda: org.create(source_connection_id=str(uuid.uuid4())))
    assert fields_of(foreign) == fields_of(missing) == ["model.source_connection_id"]
    assert str(foreign) == str(missing)


def test_names_are_unique_per_org(org: Org, world: World) -> None:
    """A second model of the same name is ALREADY_EXISTS; another org may use the name."""
    org.create()
    error = refused(lambda: org.create(destination_table="analytics.other"))
    assert (type(error), error.reason) == (AlreadyExists, "MODEL_NAME_TAKEN")
    Org(world).create()


def test_one_model_fills_one_destination_table(org: Org) -> None:
    """Two models writing the same table would overwrite each other: ALREADY_EXISTS."""
    org.create()
    error = refused(lambda: org.create(name="customers-again"))
    assert (type(error), error.reason) == (AlreadyExists, "MODEL_DESTINATION_TAKEN")
    org.create(name="customers-elsewhere", destination_connection_id=org.source)


def _claimed(org: Org, model_id: uuid.UUID, now: datetime) -> bool:
    """Whether a pass of the scheduler at ``now`` claims this model's slot (passes across the
    module's orgs may claim other tests' models too; those are ignored)."""
    store = ModelStore(org.world.store)
    return model_id in {row.id for row in store.claim_due(now, 1000)}


def test_a_schedule_falls_at_its_setting_plus_whole_intervals_and_each_slot_once(
    org: Org,
) -> None:
    """Nothing is due before one interval has passed; a due slot is claimed once; after a
    gap only the latest slot runs; another edit keeps the phase, a new interval restarts it;
    the model's deletion takes its schedule with it."""
    row = org.create(schedule_interval=timedelta(hours=1))
    assert row.schedule_set_at == row.created_at
    assert next_sync_time(row, row.created_at) == row.created_at + timedelta(hours=1)
    start = row.created_at
    assert not _claimed(org, row.id, start + timedelta(minutes=59))
    assert _claimed(org, row.id, start + timedelta(hours=1, seconds=1))
    assert not _claimed(org, row.id, start + timedelta(hours=1, seconds=2))
    # Down for two slots: the next pass runs the latest once, not the ones missed.
    assert _claimed(org, row.id, start + timedelta(hours=3, minutes=5))
    assert not _claimed(org, row.id, start + timedelta(hours=3, minutes=6))
    renamed = org.update(row.id, ["name"], name="customers-hourly")
    assert renamed.schedule_set_at == row.schedule_set_at
    daily = org.update(row.id, ["schedule_interval"], schedule_interval=timedelta(days=1))
    assert daily.schedule_set_at == daily.updated_at
    off = org.update(row.id, ["schedule_interval"], schedule_interval=timedelta(0))
    assert (off.schedule_interval, off.schedule_set_at, next_sync_time(off, start)) == (
        None,
        None,
        None,
    )
    again = org.update(row.id, ["schedule_interval"], schedule_interval=timedelta(hours=1))
    run(org.world.models.delete(org.callers.admin, str(again.id)))
    assert not _claimed(org, row.id, start + timedelta(days=30))
    with org.world.store.connection() as conn:
        left = conn.execute(
            "select count(*) from model_schedule_slots where model_id = %s", (row.id,)
        ).fetchone()
    assert left == (0,)


def test_creation_is_audited_without_the_sql(org: Org) -> None:
    """model.create names the actor and model, keeps the statement's digest, never its text."""
    row = org.create()
    [event] = org.events()
    assert (event.action, event.target_type, event.target_id, event.outcome) == (
        "model.create",
        "model",
        str(row.id),
        "success",
    )
    assert event.actor_id == org.callers.member.subject_id
    assert event.details["sql_bytes"] == str(len(SQL.encode()))
    assert len(event.details["sql_sha256"]) == 64
    assert "acme.example" not in str(event.details) and "customers where" not in str(event)


# --- tenancy ---------------------------------------------------------------------------------


def test_another_orgs_model_is_not_found_for_every_operation(org: Org, world: World) -> None:
    """Get, update, delete and sync of another org's model answer as for a missing id."""
    row = org.create()
    other = Org(world)
    caller, bearer = other.callers.admin, other.bearer(other.callers.admin)
    models = world.models
    calls: list[Callable[[], object]] = [
        lambda: run(models.get(caller, str(row.id))),
        lambda: run(models.update(caller, bearer, str(row.id), other.spec(), ["name"])),
        lambda: run(models.delete(caller, str(row.id))),
        lambda: run(models.sync(caller, bearer, str(row.id))),
    ]
    for call in calls:
        error = refused(call)
        assert (type(error), error.reason) == (NotFound, "MODEL_NOT_FOUND")
    assert run(models.get(org.callers.member, str(row.id))) == row
    assert other.events() == []


def test_a_list_shows_only_the_callers_org(org: Org, world: World) -> None:
    """Models of other orgs never appear in a list."""
    Org(world).create(name="theirs")
    mine = org.create(name="mine")
    assert run(world.models.list_models(org.callers.member, 0, "")) == ([mine], "")


# --- updating --------------------------------------------------------------------------------


def test_an_update_changes_only_the_masked_fields(org: Org) -> None:
    """A rename leaves every other field as it was and moves update_time forward."""
    row = org.create()
    updated = org.update(row.id, ["name"], name="customers-v2", sql="ignored: not in the mask")
    assert updated == replace(row, name="customers-v2", updated_at=updated.updated_at)
    assert updated.updated_at > row.updated_at
    assert run(org.world.models.get(org.callers.member, str(row.id))) == updated
    event = org.events()[0]
    assert (event.action, event.details["fields"]) == ("model.update", "name")


def test_an_update_to_incremental_sets_cursor_and_key_together(org: Org) -> None:
    """Switching load mode is checked on the model as a whole: cursor and key are needed."""
    row = org.create()
    error = refused(lambda: org.update(row.id, ["load_mode"], load_mode="incremental"))
    assert fields_of(error) == ["model.cursor_column", "model.primary_key"]
    updated = org.update(
        row.id,
        ["load_mode", "cursor_column", "primary_key"],
        load_mode="incremental",
        cursor_column="updated_at",
        primary_key=("id",),
    )
    assert (updated.load_mode, updated.cursor_column, updated.primary_key) == (
        "incremental",
        "updated_at",
        ("id",),
    )


FAILED_UPDATES: dict[str, tuple[list[str], dict[str, Any], type[SevvoError]]] = {
    "bad-sql": (["sql"], {"sql": "drop table customers"}, InvalidArgument),
    "bad-name": (["name"], {"name": "NO"}, InvalidArgument),
    "foreign-connection": (
        ["destination_connection_id"],
        {"destination_connection_id": str(uuid.uuid4())},
        InvalidArgument,
    ),
    "schedule-too-often": (
        ["schedule_interval"],
        {"schedule_interval": timedelta(minutes=1)},
        InvalidArgument,
    ),
    "name-taken": (["name"], {"name": "taken"}, AlreadyExists),
    "unknown-path": (["name", "owner"], {"name": "fine"}, InvalidArgument),
}


@pytest.mark.parametrize(
    ("mask", "changes", "error_type"), list(FAILED_UPDATES.values()), ids=list(FAILED_UPDATES)
)
def test_a_refused_update_leaves_the_model_as_it_was(
    org: Org, mask: list[str], changes: dict[str, Any], error_type: type[SevvoError]
) -> None:
    """Whatever refuses an update, the stored model and the audit log are unchanged."""
    org.create(name="taken", destination_table="analytics.taken")
    row = org.create()
    before = org.events()
    assert isinstance(refused(lambda: org.update(row.id, mask, **changes)), error_type)
    assert run(org.world.models.get(org.callers.member, str(row.id))) == row
    assert org.events() == before


def test_the_mask_refuses_unknown_paths_and_ignores_output_only_ones(org: Org) -> None:
    """An unknown path names update_mask; create_time and id are ignored; nothing left refuses."""
    row = org.create()
    error = refused(lambda: org.update(row.id, ["owner"], name="x"))
    assert fields_of(error) == ["update_mask"] and "owner" in str(error)
    updated = org.update(row.id, ["name", "create_time", "id"], name="renamed")
    assert (updated.name, updated.created_at) == ("renamed", row.created_at)
    assert fields_of(refused(lambda: org.update(row.id, ["update_time"]))) == ["update_mask"]


def test_a_star_mask_replaces_every_field(org: Org) -> None:
    """``*`` sets every field from the request (AIP-134): unset ones are checked as empty."""
    row = org.create()
    error = refused(lambda: org.update(row.id, ["*"], name="only-a-name"))
    assert "model.sql" in fields_of(error) and "model.load_mode" in fields_of(error)
    updated = org.update(row.id, ["*"], **vars(org.spec(name="replaced")))
    assert updated.name == "replaced"


def test_an_update_that_raced_another_is_aborted(org: Org, world: World) -> None:
    """The store writes only over the version the update read; a stale one is ABORTED."""
    row = org.create()
    entry = audit.Entry(org.callers.org_id, audit.SYSTEM, "model.update", "model", str(row.id))
    store = ModelStore(world.store)
    stale = row.updated_at - timedelta(seconds=1)
    error = refused(lambda: store.update(replace(row, name="raced"), stale, entry))
    assert error.reason == "MODEL_CHANGED"
    assert store.update(replace(row, id=uuid.uuid4()), row.updated_at, entry) is None


# --- deleting, listing, syncing --------------------------------------------------------------


def test_a_deleted_model_is_gone_and_its_deletion_audited(org: Org) -> None:
    """DeleteModel removes the model, records model.delete, and a second delete is NOT_FOUND."""
    row = org.create()
    run(org.world.models.delete(org.callers.admin, str(row.id)))
    assert isinstance(
        refused(lambda: run(org.world.models.get(org.callers.admin, str(row.id)))), NotFound
    )
    event = org.events()[0]
    assert (event.action, event.target_id, event.actor_id) == (
        "model.delete",
        str(row.id),
        org.callers.admin.subject_id,
    )
    assert SQL not in str(event.details)
    error = refused(lambda: run(org.world.models.delete(org.callers.admin, str(row.id))))
    assert isinstance(error, NotFound)


def test_models_are_listed_by_name_a_page_at_a_time(org: Org) -> None:
    """Pages follow name order; the last page has no token; a malformed token is refused."""
    names = ["e-model", "a-model", "d-model", "b-model", "c-model"]
    for name in names:
        org.create(name=name, destination_table=f"analytics.{name.replace('-', '_')}")
    seen, token, pages = [], "", 0
    while True:
        page, token = run(org.world.models.list_models(org.callers.member, 2, token))
        seen += [row.name for row in page]
        pages += 1
        if not token:
            break
    assert (seen, pages) == (sorted(names), 3)
    for forged in ("not-a-token", paging.encode_cursor(datetime.now(UTC), str(uuid.uuid4()))):
        with pytest.raises(InvalidArgument) as caught:
            run(org.world.models.list_models(org.callers.member, 2, forged))
        error = caught.value
        assert (error.reason, fields_of(error)) == ("INVALID_PAGE_TOKEN", ["page_token"])


def test_a_sync_starts_through_the_orchestrator_with_the_stored_model(
    org: Org, world: World
) -> None:
    """SyncModel hands start_sync the caller, their bearer and the model as stored."""
    row = org.create()
    bearer = org.bearer(org.callers.member)
    started = run(world.models.sync(org.callers.member, bearer, str(row.id)))
    assert world.syncs.calls[-1] == (org.callers.member, bearer, row)
    assert (started.kind, started.state) == ("sync", "running")


# --- the shared rules these build on ---------------------------------------------------------


def test_field_errors_keep_a_lone_reason_and_name_every_field() -> None:
    """One violation keeps its reason; several are plain INVALID_ARGUMENT naming each field."""
    found = FieldErrors()
    found.add("a", "is wrong", reason="A_WRONG")
    with pytest.raises(InvalidArgument) as lone:
        found.raise_any()
    assert (lone.value.reason, lone.value.message) == ("A_WRONG", "a: is wrong")
    found.add("b", "is wrong too")
    with pytest.raises(InvalidArgument) as both:
        found.raise_any()
    assert both.value.reason == "INVALID_ARGUMENT"
    assert both.value.message == "a: is wrong; b: is wrong too"
    FieldErrors().raise_any()  # Nothing found: nothing raised.


def test_a_status_carries_every_violation_within_the_size_bound() -> None:
    """BadRequest lists each field (at most eight), their descriptions sharing one bound."""
    many = [FieldViolation(f"f{i}", "x" * 5000) for i in range(1, 12)]
    status = status_for(InvalidArgument("f0", "bad", also=many))
    bad = [d for d in status.details if d.type_url.endswith("google.rpc.BadRequest")]
    request = error_details_pb2.BadRequest()
    bad[0].Unpack(request)
    assert [v.field for v in request.field_violations] == [f"f{i}" for i in range(8)]
    assert sum(len(v.description) for v in request.field_violations) <= MAX_ERROR_TEXT
    assert len(status.message) <= MAX_ERROR_TEXT


def test_a_name_cursor_round_trips_and_refuses_forgeries() -> None:
    """By-name tokens decode to the name; other shapes are INVALID_PAGE_TOKEN."""
    assert paging.decode_name_cursor(paging.encode_name_cursor("b-model")) == "b-model"
    assert paging.decode_name_cursor("") is None
    for forged in ("%%%", "e30", paging.encode_name_cursor("x" * 201), "W10"):
        with pytest.raises(InvalidArgument):
            paging.decode_name_cursor(forged)


# --- over gRPC ------------------------------------------------------------------------------


@dataclass
class ModelServer:
    """ModelService over TLS on loopback, beside the module's auth and connections."""

    plane: ControlPlane
    target: str
    tls: ClientTls
    channels: list[grpc.Channel] = field(default_factory=list)

    def stub(self, bearer: str | None) -> mpb_grpc.ModelServiceStub:
        """A ModelService stub calling with ``bearer`` (none: unauthenticated)."""
        channel = secure_channel(self.target, self.tls, (lambda: bearer) if bearer else None)
        self.channels.append(channel)
        return mpb_grpc.ModelServiceStub(channel)


@pytest.fixture(scope="module")
def model_server(
    module_control_plane: ControlPlane,
    module_database_url: str,
    dev_pki: DevPki,
    background_loop: BackgroundLoop,
) -> Iterator[ModelServer]:
    """The orchestrator's ModelService with its access policy, asking connections over TLS."""
    plane = module_control_plane
    store = OrchestratorStore(module_database_url)
    store.open()
    connections = ConnectionsClient(plane.target, plane.auth.client_tls)
    domain = ModelsDomain(ModelStore(store), connections, start_sync=SyncCalls())
    spec = ServerSpec(
        name="models",
        register=lambda s: mpb_grpc.add_ModelServiceServicer_to_server(ModelServicer(domain), s),
        service_names=[mpb.DESCRIPTOR.services_by_name["ModelService"].full_name],
        access=ACCESS,
    )
    tls = TlsFiles(cert=dev_pki.server_cert, key=dev_pki.server_key)
    server, port = background_loop.run(
        start_server([spec], verifier=plane.auth.app.verifier, tls=tls)
    )
    served = ModelServer(plane, f"localhost:{port}", plane.auth.client_tls)
    try:
        yield served
    finally:
        for channel in served.channels:
            channel.close()
        background_loop.run(server.stop(grace=1))
        background_loop.run(connections.close())
        store.close()


@dataclass
class Tenant:
    """An org on the model server: its admin's stub, a member's, and one saved connection."""

    org: AuthOrg
    admin: mpb_grpc.ModelServiceStub
    member: mpb_grpc.ModelServiceStub
    connection: str

    def model(self, **changes: Any) -> mpb.Model:
        """A valid full-refresh model on the tenant's connection, with ``changes``."""
        values: dict[str, Any] = {
            "name": "orders",
            "source_connection_id": self.connection,
            "sql": "select id, total from orders",
            "destination_connection_id": self.connection,
            "destination_table": "analytics.orders",
            "load_mode": mpb.LOAD_MODE_FULL_REFRESH,
        }
        values.update(changes)
        return mpb.Model(**values)

    def create(self, **changes: Any) -> mpb.Model:
        """Creates a model as the admin."""
        created: mpb.Model = self.admin.CreateModel(
            mpb.CreateModelRequest(model=self.model(**changes))
        )
        return created


@pytest.fixture
def tenant(model_server: ModelServer) -> Tenant:
    """A new org with an admin, a member and a connection."""
    plane = model_server.plane
    org = plane.auth.create_org(f"Models {uuid.uuid4().hex[:6]}")
    email = f"member-{uuid.uuid4().hex[:8]}@models.example"
    plane.auth.users(org.admin_token).CreateUser(
        users_pb2.CreateUserRequest(email=email, password=PASSWORD, role=users_pb2.USER_ROLE_MEMBER)
    )
    member = plane.auth.auth().SignIn(auth_pb2.SignInRequest(email=email, password=PASSWORD))
    return Tenant(
        org,
        model_server.stub(org.admin_token),
        model_server.stub(member.session_token),
        plane.create(org, "warehouse", "pw-warehouse-1").id,
    )


def _failure(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_grpc_a_model_round_trips(tenant: Tenant) -> None:
    """Create, get, list, a masked update and delete over TLS, as the API shows them."""
    created = tenant.create()
    assert (created.name, created.destination_table, created.load_mode) == (
        "orders",
        "analytics.orders",
        mpb.LOAD_MODE_FULL_REFRESH,
    )
    assert not created.HasField("schedule_interval") and created.HasField("create_time")
    assert tenant.member.GetModel(mpb.GetModelRequest(id=created.id)) == created
    assert list(tenant.member.ListModels(mpb.ListModelsRequest()).models) == [created]
    renamed = tenant.member.UpdateModel(
        mpb.UpdateModelRequest(
            model=mpb.Model(id=created.id, name="orders-v2", sql="delete from orders"),
            update_mask=FieldMask(paths=["name"]),
        )
    )
    assert (renamed.name, renamed.sql) == ("orders-v2", created.sql)
    assert tenant.admin.DeleteModel(mpb.DeleteModelRequest(id=created.id)).id == created.id
    assert list(tenant.admin.ListModels(mpb.ListModelsRequest()).models) == []


def test_grpc_every_invalid_field_is_a_field_violation(tenant: Tenant) -> None:
    """INVALID_ARGUMENT carries a BadRequest naming each invalid field by its request path."""
    bad = tenant.model(
        name="Orders",
        sql="update orders set total = 0",
        load_mode=mpb.LOAD_MODE_UNSPECIFIED,
        source_connection_id="not-a-uuid",
        destination_connection_id=str(uuid.uuid4()),
    )
    failure = _failure(lambda: tenant.member.CreateModel(mpb.CreateModelRequest(model=bad)))
    details = error_details(failure)
    assert (details.code, details.field) == (grpc.StatusCode.INVALID_ARGUMENT, "model.name")
    assert [name for name, _ in details.violations] == [
        "model.name",
        "model.sql",
        "model.load_mode",
        "model.source_connection_id",
        "model.destination_connection_id",
    ]


def test_grpc_a_scheduled_model_shows_its_next_sync_time(tenant: Tenant) -> None:
    """A model with a schedule shows when its next sync falls: one interval after it was set."""
    scheduled = tenant.admin.CreateModel(
        mpb.CreateModelRequest(model=tenant.model(schedule_interval=Duration(seconds=3600)))
    )
    assert scheduled.schedule_interval.ToTimedelta() == timedelta(hours=1)
    assert scheduled.next_sync_time.ToDatetime() - scheduled.create_time.ToDatetime() == (
        timedelta(hours=1)
    )
    unscheduled = tenant.create(name="unscheduled", destination_table="analytics.other")
    assert not unscheduled.HasField("next_sync_time")


def test_grpc_another_orgs_model_is_not_found(tenant: Tenant, model_server: ModelServer) -> None:
    """Another org's admin gets NOT_FOUND for get, delete and sync, and lists nothing."""
    mine = tenant.create()
    other = model_server.plane.auth.create_org("Stranger")
    theirs = model_server.stub(other.admin_token)
    for call in (
        lambda: theirs.GetModel(mpb.GetModelRequest(id=mine.id)),
        lambda: theirs.DeleteModel(mpb.DeleteModelRequest(id=mine.id)),
        lambda: theirs.SyncModel(mpb.SyncModelRequest(id=mine.id)),
    ):
        details = error_details(_failure(call))
        assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND")
    assert list(theirs.ListModels(mpb.ListModelsRequest()).models) == []


def test_grpc_callers_without_a_users_session_are_refused(
    tenant: Tenant, model_server: ModelServer
) -> None:
    """No bearer is UNAUTHENTICATED, and so is an agent's bearer: models are for users."""
    mine = tenant.create()
    anonymous = _failure(lambda: model_server.stub(None).GetModel(mpb.GetModelRequest(id=mine.id)))
    assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED
    agent = model_server.stub(model_server.plane.agent_for(tenant.org))
    refused_agent = _failure(lambda: agent.ListModels(mpb.ListModelsRequest()))
    assert (refused_agent.code(), refused_agent.details()) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "token is not a user token",
    )


def test_grpc_a_member_may_not_delete_but_may_sync(tenant: Tenant) -> None:
    """DeleteModel is an admin's; a member's SyncModel answers at once with a running sync run
    of the model (tests/test_e2e_sync.py runs one to its end)."""
    mine = tenant.create()
    refusal = _failure(lambda: tenant.member.DeleteModel(mpb.DeleteModelRequest(id=mine.id)))
    assert refusal.code() == grpc.StatusCode.PERMISSION_DENIED
    started = tenant.member.SyncModel(mpb.SyncModelRequest(id=mine.id))
    assert (started.kind, started.state, started.model_id) == (
        opb.RUN_KIND_SYNC,
        opb.RUN_STATE_RUNNING,
        mine.id,
    )


# --- what a connection is for: purposes ------------------------------------------------------


def _parquet_directory(org: Org, name: str = "lake") -> str:
    """A Parquet directory connection (a destination only) of the org; returns its id."""
    request = cpb.CreateConnectionRequest(
        display_name=name, parquet_directory=cpb.ParquetDirectory(path="/data/lake")
    )
    return str(run(org.world.connections.create(org.callers.admin, request)).id)


def test_a_destination_only_connection_is_refused_as_the_source(org: Org) -> None:
    """A Parquet directory reads no rows: named as the source, model.source_connection_id."""
    lake = _parquet_directory(org)
    error = refused(lambda: org.create(source_connection_id=lake))
    assert fields_of(error) == ["model.source_connection_id"]
    assert isinstance(error, InvalidArgument)
    assert "Parquet directory connection" in error.violations[0].description


def test_a_parquet_directory_destination_takes_full_refresh_only(org: Org) -> None:
    """Full refresh into a Parquet directory is a model; incremental is refused on load_mode,
    at create and when an update switches the load mode."""
    lake = _parquet_directory(org)
    row = org.create(destination_connection_id=lake)
    assert str(row.destination_connection_id) == lake
    error = refused(
        lambda: org.create(
            name="inc",
            destination_connection_id=lake,
            load_mode="incremental",
            cursor_column="updated_at",
            primary_key=("id",),
        )
    )
    assert fields_of(error) == ["model.load_mode"]
    assert isinstance(error, InvalidArgument)
    assert "full refresh only" in error.violations[0].description
    switched = refused(
        lambda: org.update(
            row.id,
            ["load_mode", "cursor_column", "primary_key"],
            name=row.name,
            source_connection_id=str(row.source_connection_id),
            sql=row.sql,
            destination_connection_id=lake,
            destination_table="analytics.customers",
            load_mode="incremental",
            cursor_column="updated_at",
            primary_key=("id",),
        )
    )
    assert "model.load_mode" in fields_of(switched)
