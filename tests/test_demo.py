"""The demo's parts that run in milliseconds: the guide's SQL and the step runner.

The demo itself runs from .ci/run (`make demo`), not here, so CI pays for it once.
"""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Sequence

import pglast
import pytest
from pglast import ast

from devstack import demo_guide as guide
from devstack.demo_data import TOP_CUSTOMERS_SQL
from devstack.demo_steps import Cli, CliResult, Narrator, Secrets, StepFailed


def _statements(heading: str) -> tuple[str, ...]:
    return guide.section(guide.read_guide(), heading).statements


@pytest.mark.parametrize(
    "heading",
    [guide.READER_ROLE_HEADING, guide.PRIVILEGED_ROLE_HEADING, guide.LOADER_ROLE_HEADING],
)
def test_each_guide_sql_statement_parses_as_one_statement(heading: str) -> None:
    """The demo finds SQL under both headings, and Postgres's parser reads each statement."""
    statements = _statements(heading)
    assert statements
    for statement in statements:
        assert len(pglast.parse_sql(statement)) == 1, statement


def test_reader_role_sql_grants_only_connect_usage_and_select() -> None:
    """The least-privilege section creates a LOGIN role and grants it nothing but reads."""
    kinds: list[str] = []
    for statement in _statements(guide.READER_ROLE_HEADING):
        node = pglast.parse_sql(statement)[0].stmt
        kinds.append(type(node).__name__)
        if isinstance(node, ast.CreateRoleStmt):
            options = {o.defname: getattr(o.arg, "boolval", o.arg) for o in node.options or ()}
            assert options["canlogin"] is True
            assert not any(options.get(flag) for flag in ("superuser", "createdb", "createrole"))
        elif isinstance(node, ast.AlterDefaultPrivilegesStmt):
            assert node.action is not None
            assert _privileges(node.action) == ["select"]
        else:
            assert isinstance(node, ast.GrantStmt), statement
            assert _privileges(node) in (["connect"], ["usage"], ["select"]), statement
    assert kinds.count("CreateRoleStmt") == 1
    assert "AlterDefaultPrivilegesStmt" in kinds


def _privileges(node: ast.GrantStmt) -> list[str]:
    assert node.is_grant
    return [p.priv_name for p in node.privileges or ()]


def test_guide_sql_uses_the_names_the_demo_creates() -> None:
    """Database and role names in the guide's SQL are the ones the demo's steps rely on."""
    reader = " ".join(_statements(guide.READER_ROLE_HEADING))
    privileged = " ".join(_statements(guide.PRIVILEGED_ROLE_HEADING))
    assert f"DATABASE {guide.DATABASE} " in reader
    assert f"ROLE {guide.READER} " in reader
    assert f"ROLE {guide.GROUP} " in privileged
    assert f"ROLE {guide.PRIVILEGED} " in privileged
    assert f"GRANT {guide.GROUP} TO {guide.PRIVILEGED} WITH ADMIN OPTION" in privileged
    loader = " ".join(_statements(guide.LOADER_ROLE_HEADING))
    assert f"ROLE {guide.LOADER} " in loader
    assert f"AUTHORIZATION {guide.LOADER}" in loader


def test_demo_preview_passes_the_preview_parser_rules() -> None:
    """The demo's first preview is one plain SELECT, as a preview must be."""
    (statement,) = pglast.parse_sql(TOP_CUSTOMERS_SQL)
    assert isinstance(statement.stmt, ast.SelectStmt)


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("## A\n```sql\nselect 1;\n```\n## B\n```sql\nselect 2;\n```\n", ["select 1;"]),
        ("## A\n```sh\n# not a heading\n```\n```sql\nselect 1;\n```\n", ["select 1;"]),
        ("## A\n### A.1\n```sql\nselect 1;\n```\n## B\n", ["select 1;"]),
        ("## A\n```text\nselect 0;\n```\n```SQL\nselect 1;\n```\n", ["select 1;"]),
        (
            "# Top\n## A\n```sql\nselect 1;\n```\n```sql\nselect 2;\n```\n",
            ["select 1;", "select 2;"],
        ),
    ],
)
def test_sql_blocks_take_only_sql_fences_under_the_heading(
    markdown: str, expected: list[str]
) -> None:
    """Blocks under the heading and its subheadings; never other fences or other sections."""
    assert guide.sql_blocks(markdown, "A") == expected


@pytest.mark.parametrize(
    "markdown",
    ["## B\n```sql\nselect 1;\n```\n", "## A\nno sql here\n## B\n```sql\nselect 1;\n```\n"],
)
def test_sql_blocks_fail_without_the_heading_or_its_sql(markdown: str) -> None:
    """A renamed heading or a removed block stops the demo instead of running nothing."""
    with pytest.raises(guide.GuideError):
        guide.sql_blocks(markdown, "A")


def _run_step(
    program: str,
    *,
    expect_exit: int = 0,
    expect: Sequence[str] = (),
    stdin: str | None = None,
    secrets: Secrets | None = None,
) -> tuple[CliResult | None, str, BaseException | None]:
    out = io.StringIO()
    narrator = Narrator(out, secrets or Secrets())
    cli = Cli([sys.executable, "-c", program], {}, narrator, timeout=30)
    result: CliResult | None = None

    async def step() -> None:
        nonlocal result
        with narrator.step("Do the thing", "what it does"):
            result = await cli.run("sub", stdin=stdin, expect_exit=expect_exit, expect=expect)

    try:
        asyncio.run(step())
    except StepFailed as exc:
        return result, out.getvalue(), exc
    return result, out.getvalue(), None


def test_step_fails_naming_itself_on_an_unexpected_exit_code() -> None:
    """A command that exits 4 where 0 was expected fails the step, which says so."""
    _, printed, error = _run_step("import sys; print('denied'); sys.exit(4)")
    assert isinstance(error, StepFailed)
    assert error.step == "Do the thing"
    assert "exited with 4, expected 0" in error.reason
    assert "(exit code 4)" in printed


def test_step_passes_on_the_failure_it_expects() -> None:
    """A rejected write exits 1, which the demo asks for explicitly."""
    program = "import sys; print('query_rejected', file=sys.stderr); sys.exit(1)"
    result, _, error = _run_step(program, expect_exit=1, expect=["QUERY_REJECTED"])
    assert error is None
    assert result is not None
    assert result.exit_code == 1


def test_step_fails_when_expected_output_is_missing() -> None:
    """Exit 0 is not enough: the output must show what the step is about."""
    _, _, error = _run_step("print('pending')", expect=["connected"])
    assert isinstance(error, StepFailed)
    assert "did not print ['connected']" in error.reason


def test_secrets_never_reach_the_printed_output() -> None:
    """Passwords, session tokens and deployment tokens are elided wherever they appear."""
    secrets = Secrets()
    password = secrets.add("correct-horse-battery-staple")
    jwt = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    token = "sevvo_dt_abcdEFGHijklMNOPqrstUVWX0123456789"
    program = f"import sys; print(sys.stdin.read(), {jwt!r}, {token!r})"
    _, printed, error = _run_step(program, stdin=password, secrets=secrets)
    assert error is None
    for secret in (password, jwt, token):
        assert secret not in printed
    assert "sevvo_dt_abcd…" in printed
    assert "password on standard input, not shown" in printed
