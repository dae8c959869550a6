"""The expand/contract rule for migrations (deploy/k8s/README.md, "Migrations"), held by a test.

During a rolling upgrade the previous release's pods run on the new schema, so a release's
migrations may only expand it. A statement that removes, renames or narrows what old code uses
is allowed only in a file marked ``-- contract-after: <release>``, naming the release whose
code stopped using it (at least one release before the one that ships the file).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pglast import ast, enums, parse_sql

ROOT = Path(__file__).resolve().parent.parent
MIGRATION_DIRS = [
    ROOT / "sevvo" / "runtime" / "audit_migrations",
    *sorted(p for p in (ROOT / "services").glob("*/migrations") if p.is_dir()),
]
MARKER = re.compile(r"^--[ \t]*contract-after:[ \t]*(\S+)", re.MULTILINE)

_AT = enums.AlterTableType
# Column and table changes an old release's queries would trip over.
_CONTRACTING_CMDS = {
    _AT.AT_DropColumn: "DROP COLUMN",
    _AT.AT_AlterColumnType: "ALTER COLUMN TYPE",
    _AT.AT_SetNotNull: "SET NOT NULL",
}


def _new_column_without_default_is_required(column: ast.ColumnDef) -> bool:
    kinds = {c.contype for c in column.constraints or ()}
    return enums.ConstrType.CONSTR_NOTNULL in kinds and enums.ConstrType.CONSTR_DEFAULT not in kinds


def _alter_cmds(stmts: list[ast.Node]) -> list[ast.AlterTableCmd]:
    return [
        cmd
        for stmt in stmts
        if isinstance(stmt, ast.AlterTableStmt)
        for cmd in stmt.cmds or ()
        if isinstance(cmd, ast.AlterTableCmd)
    ]


def contracting_statements(text: str) -> list[str]:
    """What in a migration's SQL removes, renames or narrows schema an old release may use."""
    stmts = [raw.stmt for raw in parse_sql(text) if raw.stmt is not None]
    # A constraint dropped and re-added under its own name in one file (widening a CHECK,
    # changing an FK's ON DELETE) is a replacement, not a removal.
    re_added = {
        cmd.def_.conname
        for cmd in _alter_cmds(stmts)
        if cmd.subtype == _AT.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint)
    }
    found: list[str] = []
    for stmt in stmts:
        if isinstance(stmt, ast.DropStmt) and stmt.removeType != enums.ObjectType.OBJECT_INDEX:
            kind = stmt.removeType.name if stmt.removeType is not None else "OBJECT_?"
            found.append(f"DROP {kind.removeprefix('OBJECT_')}")
        elif isinstance(stmt, ast.RenameStmt):
            found.append("RENAME")
        for cmd in _alter_cmds([stmt]):
            if cmd.subtype in _CONTRACTING_CMDS:
                found.append(_CONTRACTING_CMDS[_AT(cmd.subtype)])
            elif cmd.subtype == _AT.AT_DropConstraint and cmd.name not in re_added:
                found.append("DROP CONSTRAINT")
            elif (
                cmd.subtype == _AT.AT_AddColumn
                and isinstance(cmd.def_, ast.ColumnDef)
                and _new_column_without_default_is_required(cmd.def_)
            ):
                found.append("ADD COLUMN NOT NULL without DEFAULT")
    return found


def _migration_files() -> list[Path]:
    return [path for directory in MIGRATION_DIRS for path in sorted(directory.glob("*.sql"))]


def test_every_migration_folder_is_checked() -> None:
    """The rule covers the audit log's and each service's migrations."""
    names = {p.parent.name for p in MIGRATION_DIRS}
    assert {"runtime", "auth", "connections", "orchestrator"} <= names
    assert len(_migration_files()) >= 20


@pytest.mark.parametrize(
    "path", _migration_files(), ids=lambda p: f"{p.parent.parent.name}/{p.name}"
)
def test_migrations_only_expand_unless_marked(path: Path) -> None:
    """A contracting statement needs a contract-after marker naming the release."""
    text = path.read_text(encoding="utf-8")
    contracting = contracting_statements(text)
    assert not contracting or MARKER.search(text), (
        f"{path.relative_to(ROOT)} contracts the schema ({', '.join(contracting)}) but has no"
        " '-- contract-after: <release>' line naming the release whose code stopped using it;"
        " see deploy/k8s/README.md, Migrations"
    )


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("create table t (id int not null)", []),
        ("alter table t add column a int", []),
        ("alter table t add column a int not null default 0", []),
        ("create index t_a on t (a)", []),
        ("drop index t_a", []),
        (
            "alter table t drop constraint t_c; alter table t add constraint t_c check (a > 0)",
            [],
        ),
        ("drop table t", ["DROP TABLE"]),
        ("drop view v", ["DROP VIEW"]),
        ("alter table t drop column a", ["DROP COLUMN"]),
        ("alter table t rename column a to b", ["RENAME"]),
        ("alter table t rename to u", ["RENAME"]),
        ("alter table t alter column a type text", ["ALTER COLUMN TYPE"]),
        ("alter table t alter column a set not null", ["SET NOT NULL"]),
        ("alter table t add column a int not null", ["ADD COLUMN NOT NULL without DEFAULT"]),
        ("alter table t drop constraint t_c", ["DROP CONSTRAINT"]),
    ],
)
def test_contracting_statements_are_recognised(sql: str, expected: list[str]) -> None:
    """Expanding statements pass; each contracting kind is named."""
    assert contracting_statements(sql) == expected


def test_a_marker_names_a_release() -> None:
    """The marker needs a release after it, so a bare marker does not count."""
    assert MARKER.search("-- contract-after: 0.4.0\ndrop table t;")
    assert not MARKER.search("-- contract-after:\ndrop table t;")
