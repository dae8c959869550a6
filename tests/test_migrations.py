"""Versioned migrations: applied once, in order, and all-or-nothing per file."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from sevvo.runtime import migrations


def _write(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(text)


def test_migrations_apply_once_in_order(database_url: str, tmp_path: Path) -> None:
    """A second run applies nothing; the tables from every file exist."""
    _write(tmp_path, "0001_first.sql", "create table a (id int);")
    _write(tmp_path, "0002_second.sql", "create table b (id int); insert into a values (1);")
    assert migrations.apply(database_url, "demo", tmp_path) == [1, 2]
    assert migrations.apply(database_url, "demo", tmp_path) == []
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select count(*) from demo.a").fetchone() == (1,)


def test_failing_migration_leaves_schema_as_it_was(database_url: str, tmp_path: Path) -> None:
    """A migration that fails halfway is rolled back and not recorded."""
    _write(tmp_path, "0001_ok.sql", "create table a (id int);")
    _write(tmp_path, "0002_bad.sql", "create table b (id int); select * from no_such_table;")
    with pytest.raises(migrations.MigrationError, match=r"0002_bad\.sql failed") as raised:
        migrations.apply(database_url, "demo", tmp_path)
    assert isinstance(raised.value.__cause__, psycopg.errors.UndefinedTable)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("select to_regclass('demo.b')").fetchone() == (None,)
        versions = conn.execute(
            "select version from sevvo_schema_migrations where schema_name = 'demo'"
        ).fetchall()
    assert versions == [(1,)]


@pytest.mark.parametrize("names", [["1_x.sql"], ["0001_a.sql", "0003_c.sql"], ["0001_A.sql"]])
def test_badly_named_or_gapped_files_are_rejected(tmp_path: Path, names: list[str]) -> None:
    """File names must be NNNN_description.sql with no gaps."""
    for name in names:
        _write(tmp_path, name, "select 1;")
    with pytest.raises(ValueError, match="migration"):
        migrations.discover(tmp_path)
