"""Which load modes a model's destination takes is its kind's to say (a purpose the connections
service reports), not a type name the orchestrator knows: a kind added later needs no edit here.
"""

from __future__ import annotations

import asyncio
import typing
import uuid
from datetime import UTC, datetime

import pytest

from services.orchestrator.connections_client import (
    DESTINATION,
    INCREMENTAL_DESTINATION,
    SOURCE,
    ConnectionInfo,
    connection_info,
    require_source,
)
from services.orchestrator.models import Identity, ModelSpec, checked
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.runtime.errors import FailedPrecondition, InvalidArgument

SOURCE_ID, DESTINATION_ID = uuid.uuid4(), uuid.uuid4()
NOW = datetime(2026, 12, 3, tzinfo=UTC)
IDENTITY = Identity(id=uuid.uuid4(), org_id=uuid.uuid4(), created_at=NOW, updated_at=NOW)


def _spec(load_mode: str) -> ModelSpec:
    incremental = load_mode == "incremental"
    return ModelSpec(
        name="orders",
        source_connection_id=str(SOURCE_ID),
        sql="select id, updated_at from orders",
        destination_connection_id=str(DESTINATION_ID),
        destination_table="analytics.orders",
        load_mode=load_mode,
        cursor_column="updated_at" if incremental else "",
        primary_key=("id",) if incremental else (),
    )


def _check(load_mode: str, destination: ConnectionInfo) -> str:
    """The load mode of the checked row, or the InvalidArgument's violations."""

    async def lookup(connection_id: uuid.UUID) -> ConnectionInfo:
        if connection_id == SOURCE_ID:
            return ConnectionInfo(str(SOURCE_ID), dynamic=False)
        return destination

    try:
        return asyncio.run(checked(_spec(load_mode), lookup, IDENTITY)).load_mode
    except InvalidArgument as exc:
        return "; ".join(f"{v.field}: {v.description}" for v in exc.violations)


# Kinds the orchestrator has never heard of, known only by what their connections report.
OBJECT_STORE = ConnectionInfo(
    str(DESTINATION_ID), dynamic=False, type="bucket_store", purposes=frozenset({DESTINATION})
)
WAREHOUSE = ConnectionInfo(
    str(DESTINATION_ID),
    dynamic=False,
    type="warehouse",
    purposes=frozenset({DESTINATION, INCREMENTAL_DESTINATION}),
)


@pytest.mark.parametrize(
    ("load_mode", "destination", "expected"),
    [
        ("full_refresh", OBJECT_STORE, "full_refresh"),
        (
            "incremental",
            OBJECT_STORE,
            "model.load_mode: a Bucket store is loaded in full refresh only",
        ),
        ("full_refresh", WAREHOUSE, "full_refresh"),
        ("incremental", WAREHOUSE, "incremental"),
    ],
)
def test_a_destination_kind_says_whether_it_merges(
    load_mode: str, destination: ConnectionInfo, expected: str
) -> None:
    assert _check(load_mode, destination) == expected


def test_values_a_newer_connections_service_added_are_skipped_not_fatal() -> None:
    """A purpose or type this code does not know (a newer connections service mid-upgrade)
    is left out or kept as a number; what it knows still counts."""
    connection = cpb.Connection(
        id="c1",
        type=cpb.CONNECTION_TYPE_POSTGRES,
        purposes=[
            cpb.CONNECTION_PURPOSE_SOURCE,
            cpb.CONNECTION_PURPOSE_DESTINATION,
            typing.cast(cpb.ConnectionPurpose, 42),
        ],
    )
    info = connection_info(connection)
    assert (info.type, info.purposes) == ("postgres", frozenset({SOURCE, DESTINATION}))
    connection.type = typing.cast(cpb.ConnectionType, 77)
    assert connection_info(connection).type == "type_77"


def test_a_connections_service_older_than_purposes_means_postgres() -> None:
    info = connection_info(cpb.Connection(id="c1", type=cpb.CONNECTION_TYPE_POSTGRES))
    assert info.purposes == frozenset({SOURCE, DESTINATION, INCREMENTAL_DESTINATION})


def test_work_on_a_source_is_allowed_by_purpose_not_by_type_name() -> None:
    """A kind added later with the source purpose passes the check unedited; a connection
    without it is refused with a message that says what it is and what to do."""
    require_source(
        ConnectionInfo("c1", dynamic=False, type="type_77", purposes=frozenset({SOURCE})), "x"
    )
    lake = ConnectionInfo(
        "c2", dynamic=False, type="parquet_directory", purposes=frozenset({DESTINATION})
    )
    with pytest.raises(FailedPrecondition) as refused:
        require_source(lake, "preview its model's source instead")
    assert refused.value.reason == "CONNECTION_NOT_A_SOURCE"
    assert str(refused.value) == (
        "a Parquet directory connection is a destination only; preview its model's source instead"
    )
