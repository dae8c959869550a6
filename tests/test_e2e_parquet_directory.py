"""End to end: a Parquet directory connection, a destination only, through a real agent.

One org (signed in through the CLI) whose agent runs as its own process with
SEVVO_AGENT_FILE_ROOTS naming one temporary directory, and a seeded source database for the
models. The agent's test decides what is saved: a directory under the root is connected; one
outside it, reached through a link out of it, or missing is directory_unusable and not saved.
The control plane refuses what a destination only cannot do: previews, root rotations, a
model reading from it, and an incremental model writing to it.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from devstack.postgres import EmbeddedPostgres
from devstack.source_db import (
    ORDER_ROWS,
    SourceDatabase,
    create_source_database,
    drop_source_database,
)
from tests.cli_runner import Sevvo
from tests.plugins.auth_stack import PASSWORD
from tests.plugins.dev_stack import EndToEnd

NOT_A_SOURCE = "a Parquet directory connection is a destination only"


@dataclass(frozen=True)
class Files:
    """The agent's one allowed root, and a directory beside it that is not allowed."""

    root: Path
    outside: Path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    """An allowed root and a directory outside it, both existing and writable."""
    base = tmp_path_factory.mktemp("parquet-files")
    root, outside = base / "root", base / "outside"
    root.mkdir()
    outside.mkdir()
    return Files(root, outside)


@pytest.fixture(scope="module")
def sevvo(e2e: EndToEnd, files: Files, tmp_path_factory: pytest.TempPathFactory) -> Sevvo:
    """The admin of a new org, signed in, whose agent may write under ``files.root`` only."""
    name = f"parquet-{uuid.uuid4().hex[:8]}"
    email = f"ada@{name}.example"
    e2e.stack.auth.domain.create_org_with_admin(name, email, PASSWORD)
    cli = Sevvo(
        endpoint=e2e.stack.grpc_target,
        ca_file=e2e.stack.pki.ca_cert,
        config_dir=tmp_path_factory.mktemp("sevvo-parquet") / "sevvo",
    )
    signed_in = cli("login", "--email", email, "--password-stdin", stdin=PASSWORD, process=True)
    assert signed_in.code == 0, signed_in.stderr
    created = cli.ok("deployments", "create", "--name", "parquet-agent")
    # A colon- and comma-separated list, an unused root first: the agent reads both forms.
    roots = f"/nonexistent/sevvo-root,{files.root}"
    e2e.stack.start_agent(created["token"], name=f"agent-{name}", wait=True, file_roots=roots)
    return cli


@pytest.fixture(scope="module")
def source(tls_source_pg: EmbeddedPostgres) -> Iterator[SourceDatabase]:
    """A seeded source database and its reader, for the models."""
    suffix = uuid.uuid4().hex[:12]
    database, reader = f"parquet_src_{suffix}", f"parquet_reader_{suffix}"
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
def lake(sevvo: Sevvo, files: Files) -> dict[str, Any]:
    """The connection "lake": a Parquet directory under the agent's root."""
    directory = files.root / "lake"
    directory.mkdir()
    created: dict[str, Any] = sevvo.ok(
        "connections", "create", "--name", "lake", "--parquet-directory", str(directory)
    )
    return created


def _names(sevvo: Sevvo) -> set[str]:
    return {c["display_name"] for c in sevvo.ok("connections", "list")["connections"]}


def test_a_directory_under_a_root_is_connected_as_a_destination(
    sevvo: Sevvo, files: Files, lake: dict[str, Any]
) -> None:
    """The agent wrote and removed its scratch file: connected, a destination only, no login."""
    assert lake["status"] == "connected"
    assert lake["type"] == "parquet_directory"
    assert lake["purposes"] == ["destination"]
    assert lake["parquet_directory"] == {"path": str(files.root / "lake")}
    assert lake["safe_metadata"] is None
    assert lake["has_password"] is False
    assert list((files.root / "lake").iterdir()) == []
    listed = {c["display_name"]: c for c in sevvo.ok("connections", "list")["connections"]}
    assert listed["lake"]["purposes"] == ["destination"]
    tested = sevvo.ok("connections", "test", "lake")
    assert tested["status"] == "connected"


@pytest.mark.parametrize("where", ["outside", "link", "missing"])
def test_an_unusable_directory_is_refused_and_not_saved(
    sevvo: Sevvo, files: Files, where: str
) -> None:
    """Outside the roots, through a link out of the root, or missing: directory_unusable,
    exit 1 with the guide's hint, and no connection saved."""
    name = f"bad-{where}"
    if where == "outside":
        path = files.outside
    elif where == "link":
        path = files.root / "escape"
        path.symlink_to(files.outside, target_is_directory=True)
    else:
        path = files.root / "missing"
    result = sevvo("connections", "create", "--name", name, "--parquet-directory", str(path))
    assert result.code == 1, result.stderr
    assert "directory_unusable" in result.stderr
    assert "SEVVO_AGENT_FILE_ROOTS" in result.stderr
    assert name not in _names(sevvo)
    assert list(files.outside.iterdir()) == []


def test_a_relative_path_is_a_usage_error_naming_the_flag(sevvo: Sevvo) -> None:
    """The service's field rule reaches the user as --parquet-directory, exit 2."""
    result = sevvo("connections", "create", "--name", "rel", "--parquet-directory", "data/x")
    assert result.code == 2
    assert "--parquet-directory: must be an absolute path" in result.stderr


def test_preview_and_root_rotation_are_refused(sevvo: Sevvo, lake: dict[str, Any]) -> None:
    """Nothing reads rows from a destination only: FAILED_PRECONDITION saying so, exit 1."""
    preview = sevvo("preview", "lake", "select 1")
    assert preview.code == 1
    assert f"{NOT_A_SOURCE}; preview its model's source instead" in preview.stderr
    rotation = sevvo("connections", "rotate-root", "lake")
    assert rotation.code == 1
    assert NOT_A_SOURCE in rotation.stderr


def test_models_read_from_a_source_and_write_a_parquet_directory_in_full_only(
    sevvo: Sevvo, source: SourceDatabase, lake: dict[str, Any]
) -> None:
    """As a model's source it is refused on --source; as an incremental destination on
    --incremental; as a full-refresh destination it is taken."""
    sevvo.ok(
        "connections", "create", "--name", "shop", "--host", "localhost",
        "--port", str(source.port), "--database", source.database,
        "--username", source.reader, "--ssl-mode", "require", "--password-stdin",
        stdin=source.reader_password,
    )  # fmt: skip
    base = ["--table", "analytics.orders", "--sql", "select id, total from orders"]
    as_source = sevvo(
        "models", "create", "m-from-lake", "--source", "lake", "--destination", "shop", *base
    )
    assert as_source.code == 2
    assert "--source: names a Parquet directory connection" in as_source.stderr
    incremental = sevvo(
        "models", "create", "m-inc", "--source", "shop", "--destination", "lake", *base,
        "--incremental", "--cursor", "id", "--primary-key", "id",
    )  # fmt: skip
    assert incremental.code == 2
    assert "a Parquet directory is loaded in full refresh only" in incremental.stderr
    full = sevvo.ok(
        "models", "create", "m-full", "--source", "shop", "--destination", "lake", *base
    )
    assert full["load_mode"] == "full_refresh"


def test_a_model_syncs_into_the_parquet_directory_and_a_reader_sees_whole_files(
    sevvo: Sevvo, source: SourceDatabase, files: Files, lake: dict[str, Any]
) -> None:
    """`sevvo models sync` through the real agent writes <dir>/<schema>/<table>.parquet, every
    row of the source in it, no temporary file left; a second sync replaces it."""
    if "shop" not in _names(sevvo):
        sevvo.ok(
            "connections", "create", "--name", "shop", "--host", "localhost",
            "--port", str(source.port), "--database", source.database,
            "--username", source.reader, "--ssl-mode", "require", "--password-stdin",
            stdin=source.reader_password,
        )  # fmt: skip
    sevvo.ok(
        "models", "create", "orders-to-lake", "--source", "shop", "--destination", "lake",
        "--table", "analytics.orders_lake", "--sql",
        "select id, customer_id, status, total, ordered_at from orders",
    )  # fmt: skip
    first = sevvo.ok("models", "sync", "orders-to-lake")
    assert first["outcome_category"] == "ok", first
    written = files.root / "lake" / "analytics" / "orders_lake.parquet"
    table = pq.read_table(written)
    assert table.num_rows == ORDER_ROWS == int(first["sync"]["rows"])
    assert table.column_names == ["id", "customer_id", "status", "total", "ordered_at"]
    assert sorted(table.column("id").to_pylist()) == list(range(1, ORDER_ROWS + 1))
    second = sevvo.ok("models", "sync", "orders-to-lake")
    assert second["outcome_category"] == "ok" and not second["sync"].get("created_table")
    assert [p.name for p in written.parent.iterdir() if not p.name.startswith(".")] == [
        "orders_lake.parquet"
    ]
    assert not [p for p in written.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_postgres_connection_is_a_source_and_a_destination(
    sevvo: Sevvo, source: SourceDatabase
) -> None:
    """Every connection says what it is for: a Postgres database is both."""
    sevvo.ok(
        "connections", "create", "--name", "shop2", "--host", "localhost",
        "--port", str(source.port), "--database", source.database,
        "--username", source.reader, "--ssl-mode", "require", "--password-stdin",
        stdin=source.reader_password,
    )  # fmt: skip
    shown = sevvo.ok("connections", "get", "shop2")
    assert (shown["type"], shown["purposes"]) == (
        "postgres",
        ["source", "destination", "incremental_destination"],
    )
    assert shown["parquet_directory"] is None
