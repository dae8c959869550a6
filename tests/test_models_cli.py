"""``sevvo models`` against the whole stack, a real agent, a source and a destination database.

One org (made on the stack, signed in through the CLI), one agent, a seeded source database
(customers, orders) with its reader, and an empty destination database whose writer may create
schemas serve the module. Each test drives the real command and checks its exit code, its
JSON on stdout, its messages on stderr and, for syncs, the destination's rows.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from devstack.postgres import EmbeddedPostgres
from devstack.source_db import (
    ORDER_ROWS,
    SourceDatabase,
    create_source_database,
    drop_roles,
    drop_source_database,
)
from tests.cli_runner import Sevvo
from tests.plugins.auth_stack import PASSWORD
from tests.plugins.dev_stack import EndToEnd

ORDERS_SQL = "select id, customer_id, status, total, ordered_at from orders"


@dataclass(frozen=True)
class Destination:
    """The customer's destination database and the role syncs write as."""

    url: str
    database: str
    writer: str
    writer_password: str = field(repr=False)


@pytest.fixture(scope="module")
def sevvo(e2e: EndToEnd, tmp_path_factory: pytest.TempPathFactory) -> Sevvo:
    """The admin of a new org, signed in through the CLI, with the org's agent running."""
    name = f"models-{uuid.uuid4().hex[:8]}"
    email = f"ada@{name}.example"
    e2e.stack.auth.domain.create_org_with_admin(name, email, PASSWORD)
    cli = Sevvo(
        endpoint=e2e.stack.grpc_target,
        ca_file=e2e.stack.pki.ca_cert,
        config_dir=tmp_path_factory.mktemp("sevvo-models") / "sevvo",
    )
    signed_in = cli("login", "--email", email, "--password-stdin", stdin=PASSWORD, process=True)
    assert signed_in.code == 0, signed_in.stderr
    created = cli.ok("deployments", "create", "--name", "models-agent")
    e2e.stack.start_agent(created["token"], name=f"models-agent-{name}", wait=True)
    return cli


@pytest.fixture(scope="module")
def source(tls_source_pg: EmbeddedPostgres) -> Iterator[SourceDatabase]:
    """The seeded source (50 customers, 200 orders) and its reader."""
    suffix = uuid.uuid4().hex[:12]
    database, reader = f"models_src_{suffix}", f"models_reader_{suffix}"
    try:
        yield create_source_database(
            tls_source_pg.url,
            database=database,
            reader=reader,
            reader_password=secrets.token_urlsafe(24),
        )
    finally:
        drop_source_database(tls_source_pg.url, database=database, reader=reader)


@pytest.fixture(scope="module")
def destination(tls_source_pg: EmbeddedPostgres) -> Iterator[Destination]:
    """An empty database whose writer may connect and create schemas: nothing more."""
    suffix = uuid.uuid4().hex[:12]
    database, writer = f"models_dst_{suffix}", f"models_writer_{suffix}"
    password = secrets.token_urlsafe(24)
    with psycopg.connect(tls_source_pg.url, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(database)))
        admin.execute(
            sql.SQL("create role {} login password {}").format(
                sql.Identifier(writer), sql.Literal(password)
            )
        )
        admin.execute(
            sql.SQL("revoke all on database {} from public").format(sql.Identifier(database))
        )
        admin.execute(
            sql.SQL("grant connect, create on database {} to {}").format(
                sql.Identifier(database), sql.Identifier(writer)
            )
        )
    try:
        yield Destination(
            tls_source_pg.admin_url(database), database, writer, writer_password=password
        )
    finally:
        with psycopg.connect(tls_source_pg.url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(database))
            )
        drop_roles(tls_source_pg.url, writer)


def _connection(name: str, port: int, database: str, username: str) -> list[str]:
    return [
        "connections", "create", "--name", name, "--host", "localhost", "--port", str(port),
        "--database", database, "--username", username, "--ssl-mode", "require",
        "--password-stdin",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def connections(sevvo: Sevvo, source: SourceDatabase, destination: Destination) -> None:
    """``shop`` (the source's reader) and ``warehouse`` (the destination's writer)."""
    sevvo.ok(
        *_connection("shop", source.port, source.database, source.reader),
        stdin=source.reader_password,
    )
    sevvo.ok(
        *_connection("warehouse", source.port, destination.database, destination.writer),
        stdin=destination.writer_password,
    )


def _count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            sql.SQL("select count(*) from {}").format(sql.Identifier(*table.split(".")))
        ).fetchone()
    assert row is not None
    return int(row[0])


def _name() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"


def _create(sevvo: Sevvo, name: str, table: str, *extra: str, sql_text: str = ORDERS_SQL) -> Any:
    return sevvo.ok(
        "models", "create", name, "--source", "shop", "--destination", "warehouse",
        "--table", table, "--sql", sql_text, *extra,
    )  # fmt: skip


@pytest.mark.usefixtures("connections")
def test_a_model_from_flags_is_shown_by_name_and_listed(sevvo: Sevvo) -> None:
    """create by flags, then get by name and by id prefix, and list: the same model."""
    name = _name()
    created = _create(sevvo, name, "analytics.orders_flags", "--every", "6h")
    assert (created["name"], created["destination_table"], created["load_mode"]) == (
        name,
        "analytics.orders_flags",
        "full_refresh",
    )
    assert created["schedule_interval"] == "21600s"
    assert created["next_sync_time"] is not None
    assert sevvo.ok("models", "get", name)["id"] == created["id"]
    assert sevvo.ok("models", "get", created["id"][:8])["sql"] == ORDERS_SQL
    listed = sevvo.ok("models", "list")["models"]
    assert created["id"] in [m["id"] for m in listed]


@pytest.mark.usefixtures("connections")
def test_a_model_file_creates_the_same_model(sevvo: Sevvo, tmp_path: Path) -> None:
    """--file with sql-file beside it; incremental keys reach the model."""
    name = _name()
    (tmp_path / "orders.sql").write_text(ORDERS_SQL + "\n")
    (tmp_path / "orders.toml").write_text(
        f'name = "{name}"\nsource = "shop"\ndestination = "warehouse"\n'
        'table = "analytics.orders_file"\nsql-file = "orders.sql"\nincremental = true\n'
        'cursor = "ordered_at"\nprimary-key = ["id"]\n'
    )
    created = sevvo.ok("models", "create", "--file", str(tmp_path / "orders.toml"))
    assert (created["load_mode"], created["cursor_column"], created["primary_key"]) == (
        "incremental",
        "ordered_at",
        ["id"],
    )
    assert created["sql"].strip() == ORDERS_SQL


@pytest.mark.usefixtures("connections")
def test_sync_loads_the_rows_and_reports_only_counts(
    sevvo: Sevvo, destination: Destination
) -> None:
    """A sync waits for its run: ok, every row in the destination, the table created the first
    time and not the second; runs lists both with their rows."""
    name = _name()
    _create(sevvo, name, "analytics.orders_sync")
    first = sevvo.ok("models", "sync", name)
    assert (first["kind"], first["state"], first["outcome_category"]) == ("sync", "succeeded", "ok")
    assert first["sync"]["rows"] == ORDER_ROWS
    assert first["sync"]["bytes"] > 0
    assert first["sync"]["created_table"] is True
    assert first["sync"]["schema_fingerprint"]
    assert _count(destination.url, "analytics.orders_sync") == ORDER_ROWS
    second = sevvo.ok("models", "sync", name)
    assert second["sync"]["created_table"] is False
    assert second["sync"]["schema_fingerprint"] == first["sync"]["schema_fingerprint"]
    runs = sevvo.ok("models", "runs", name)["runs"]
    assert [r["id"] for r in runs] == [second["id"], first["id"]]
    assert all(r["sync"]["rows"] == ORDER_ROWS for r in runs)
    shown = sevvo.ok("runs", "get", first["id"])
    assert (shown["kind"], shown["model_id"]) == ("sync", first["model_id"])
    by_model = sevvo.ok("runs", "list", "--model", name)["runs"]
    assert {r["id"] for r in by_model} == {first["id"], second["id"]}


@pytest.mark.usefixtures("connections")
def test_no_wait_returns_the_running_sync(sevvo: Sevvo) -> None:
    """--no-wait shows the run at once; runs wait finds it ended ok."""
    name = _name()
    _create(sevvo, name, "analytics.orders_nowait")
    started = sevvo.ok("models", "sync", name, "--no-wait")
    assert started["kind"] == "sync"
    ended = sevvo.ok("runs", "wait", started["id"])
    assert ended["outcome_category"] == "ok"


@pytest.mark.usefixtures("connections")
def test_a_failing_sync_exits_1_with_its_category(sevvo: Sevvo) -> None:
    """A statement the source cannot run: exit 1, the category on stderr, the run in JSON."""
    name = _name()
    _create(sevvo, name, "analytics.nowhere", sql_text="select no_such_column from orders")
    result = sevvo("models", "sync", name)
    assert result.code == 1
    assert result.json()["state"] == "failed"
    assert "the sync failed (" in result.stderr


@pytest.mark.usefixtures("connections")
def test_preview_shows_the_models_rows(sevvo: Sevvo) -> None:
    """models preview runs the model's query on its source, as sevvo preview does."""
    name = _name()
    _create(sevvo, name, "analytics.orders_preview")
    shown = sevvo.ok("models", "preview", name)
    assert [c["name"] for c in shown["columns"]][:2] == ["id", "customer_id"]
    assert len(shown["rows"]) == 100 and shown["truncated"] is True


@pytest.mark.usefixtures("connections")
def test_update_changes_only_the_flags_given(sevvo: Sevvo) -> None:
    """update --table leaves the SQL and the schedule; schedule --off and --every change only
    the schedule."""
    name = _name()
    created = _create(sevvo, name, "analytics.orders_a", "--every", "1d")
    updated = sevvo.ok("models", "update", name, "--table", "analytics.orders_b")
    assert updated["destination_table"] == "analytics.orders_b"
    assert (updated["sql"], updated["schedule_interval"]) == (ORDERS_SQL, "86400s")
    off = sevvo.ok("models", "schedule", name, "--off")
    assert off["schedule_interval"] in (None, "0s")
    assert off["next_sync_time"] is None
    on = sevvo.ok("models", "schedule", name, "--every", "6h")
    assert on["schedule_interval"] == "21600s"
    assert (on["destination_table"], on["sql"]) == ("analytics.orders_b", created["sql"])


@pytest.mark.usefixtures("connections")
def test_invalid_fields_are_named_by_their_flags(sevvo: Sevvo) -> None:
    """A statement that writes and a table without a schema: exit 2, each field's flag."""
    result = sevvo(
        "models", "create", _name(), "--source", "shop", "--destination", "warehouse",
        "--table", "orders", "--sql", "delete from orders",
    )  # fmt: skip
    assert result.code == 2
    assert "--table:" in result.stderr or "the SQL:" in result.stderr


@pytest.mark.usefixtures("connections")
def test_delete_removes_the_model(sevvo: Sevvo) -> None:
    """delete --yes; then the name names nothing (exit 5)."""
    name = _name()
    created = _create(sevvo, name, "analytics.orders_deleted")
    assert sevvo.ok("models", "delete", name, "--yes") == {"deleted": created["id"]}
    gone = sevvo("models", "get", name)
    assert gone.code == 5
    assert f"no model has the id, id prefix or name {name!r}" in gone.stderr


def test_no_secret_is_printed(
    sevvo: Sevvo, source: SourceDatabase, destination: Destination
) -> None:
    """Canary: no database password appears in anything the commands printed."""
    printed = "\n".join(sevvo.printed)
    assert source.reader_password not in printed
    assert destination.writer_password not in printed
    assert PASSWORD not in printed
