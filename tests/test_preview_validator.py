"""The preview validator: a table of hostile and legitimate queries, text slicing, properties."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pglast import ast, enums, parser
from pglast.visitors import Ancestor, Visitor

from sevvo.runtime import preview_validator
from sevvo.runtime.preview_validator import (
    MAX_SQL_BYTES,
    REASONS,
    CallSite,
    QueryRejected,
    forbidden_function_reason,
    validate_preview_sql,
)
from tests.preview_corpus import ACCEPT, BLOW_UPS, CORPUS, NEEDS_LIBXML, NOT_ALLOWED, SCHEMA

# The wrapper docs/design.md's preview contract puts around the statement.
WRAPPER = "select * from (\n{text}\n) as preview_query limit 101"

# Functions the corpus must show refused; one or more per deny-list group.
REQUIRED_FORBIDDEN = frozenset(
    {
        "pg_advisory_lock",
        "pg_terminate_backend",
        "set_config",
        "pg_catalog.set_config",
        "nextval",
        "setval",
        "lo_import",
        "lo_unlink",
        "lo_from_bytea",
        "pg_read_file",
        "pg_ls_dir",
        "dblink",
        "pg_notify",
        "query_to_xml",
        "pg_create_logical_replication_slot",
        "pg_switch_wal",
        # the classes of issue 12: SQL in text arguments, libxml2, extension side effects
        "crosstab",
        "connectby",
        "xpath_table",
        "xpath",
        "xmlexists",
        "xslt_process",
        "pg_prewarm",
        "autoprewarm_start_worker",
        "heap_force_kill",
        "pg_truncate_visibility_map",
    }
)

# Statements the corpus must show refused as not a read, by how the case starts.
REQUIRED_NOT_A_READ = frozenset(
    {
        "insert",
        "update",
        "delete",
        "merge",
        "truncate",
        "create table",
        "drop",
        "alter",
        "grant",
        "vacuum",
        "lock",
        "listen",
        "notify",
        "begin",
        "commit",
        "declare",
        "show",
        "explain select",
        "explain analyze delete",
        "copy t to",
        "copy t from program",
        "call",
        "do $$",
        "execute",
        "prepare",
        "set search_path",
        "set local",
        "reset",
    }
)

# Kinds the statements in the hostile-statement checks below must not contain.
WRITING_STATEMENTS = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)


class _Nodes(Visitor):
    """Collect every node of a tree with pglast's own traversal, not the validator's walker."""

    def __init__(self) -> None:
        self.found: list[ast.Node] = []

    def visit(self, ancestors: Ancestor, node: ast.Node) -> None:
        self.found.append(node)


def _all_nodes(tree: ast.Node) -> list[ast.Node]:
    collector = _Nodes()
    collector(tree)
    return collector.found


def _names(items: Any) -> list[str]:
    return [item.sval or "" for item in items or () if isinstance(item, ast.String)]


def _assert_safe_read(text: str) -> None:
    """Assert ``text`` is one SELECT whose tree holds nothing that writes, locks or escapes.

    Checked on pglast's typed AST with its own Visitor, independently of the validator's walk
    over the JSON tree. (parse_sql is safe here: accepted text is never deeply nested.)
    """
    statements = parser.parse_sql(text)
    assert len(statements) == 1
    assert isinstance(statements[0].stmt, ast.SelectStmt)
    for node in _all_nodes(statements[0].stmt):
        assert not isinstance(node, WRITING_STATEMENTS), text
        assert not isinstance(node, (ast.IntoClause, ast.LockingClause)), text
        if isinstance(node, ast.SelectStmt):
            assert node.intoClause is None and not node.lockingClause, text
        if isinstance(node, ast.FuncCall):
            assert forbidden_function_reason(".".join(_names(node.funcname))) is None, text
        if isinstance(node, ast.ColumnRef):
            assert all(forbidden_function_reason(n) is None for n in _names(node.fields)[1:])
        if isinstance(node, ast.A_Indirection):
            assert all(forbidden_function_reason(n) is None for n in _names(node.indirection))


def _outcome(sql: str) -> str | QueryRejected:
    """The returned text, or the rejection itself, so properties can branch on either."""
    try:
        return validate_preview_sql(sql).statement
    except QueryRejected as rejected:
        return rejected


def _verdict(sql: str) -> str:
    outcome = _outcome(sql)
    return outcome.reason if isinstance(outcome, QueryRejected) else ACCEPT


def _expected_of_validator(expected: str) -> str:
    """The validator's verdict for a corpus case: the catalog check comes after it."""
    return ACCEPT if expected == NOT_ALLOWED else expected


def _accepted() -> list[Any]:
    return [
        pytest.param(sql, id=case_id)
        for case_id, sql, e in CORPUS
        if _expected_of_validator(e) == ACCEPT
    ]


@pytest.mark.parametrize(
    ("sql", "expected"), [pytest.param(sql, expected, id=i) for i, sql, expected in CORPUS]
)
def test_corpus_verdict(sql: str, expected: str) -> None:
    """Each corpus query is accepted or rejected with its expected reason."""
    assert _verdict(sql) == _expected_of_validator(expected)


def test_corpus_covers_every_hostile_kind() -> None:
    """The corpus is large, ids are unique, and every reason and hostile kind appears."""
    assert len(CORPUS) >= 70
    assert len({case_id for case_id, _, _ in CORPUS}) == len(CORPUS)
    assert {expected for _, _, expected in CORPUS} == REASONS | {ACCEPT, NOT_ALLOWED}
    forbidden = " ".join(sql.lower() for _, sql, e in CORPUS if e == "forbidden_function")
    assert {name for name in REQUIRED_FORBIDDEN if f"{name}(" not in forbidden} == set()
    not_reads = [sql.lower() for _, sql, e in CORPUS if e == "not_a_read"]
    missing = {k for k in REQUIRED_NOT_A_READ if not any(s.startswith(k) for s in not_reads)}
    assert missing == set()
    ctes = " ".join(sql.lower() for _, sql, e in CORPUS if e == "data_modifying_cte")
    assert all(f"({kind} " in ctes for kind in ("delete", "update", "insert into", "merge"))
    locks = " ".join(sql.lower() for _, sql, e in CORPUS if e == "locking_clause")
    assert all(f"for {lock}" in locks for lock in ("update", "share", "no key update", "key share"))


@pytest.mark.parametrize(
    ("sql", "text"),
    [
        ("select 1;", "select 1"),
        ("select 1; ", "select 1"),
        ("select 1;;\n;", "select 1"),
        ("select 1 -- x", "select 1"),
        ("select 1 -- x\n;", "select 1"),
        ("select 1 /* d */;", "select 1"),
        ("select 1; -- delete from t", "select 1"),
        ("  /* c */ select 1 /* d */ -- e\n", "select 1"),
        ("-- comment\nselect 1", "select 1"),
        ("select /* keep; me */ 1", "select /* keep; me */ 1"),
        ("select 1 -- keep\n + 2 -- drop", "select 1 -- keep\n + 2"),
        ("select '--' as x -- y", "select '--' as x"),
        ("select 'é' /* ü */ -- ö", "select 'é'"),
        ('select 1 as "a -- b"', 'select 1 as "a -- b"'),
        ("select $$ -- $$", "select $$ -- $$"),
        ("select a\u00a0 from t", "select a\u00a0 from t"),
    ],
)
def test_returned_text_is_the_statement_alone(sql: str, text: str) -> None:
    """The result drops trailing semicolons and comments and keeps the inside byte for byte."""
    assert validate_preview_sql(sql).statement == text


@pytest.mark.parametrize("sql", _accepted())
def test_accepted_text_wraps_into_one_select(sql: str) -> None:
    """Every accepted query, wrapped for execution, parses as one SELECT: nothing eats the limit."""
    text = validate_preview_sql(sql).statement
    assert text in sql
    wrapped = WRAPPER.format(text=text)
    _assert_safe_read(wrapped)
    (statement,) = parser.parse_sql(wrapped)
    assert isinstance(statement.stmt, ast.SelectStmt)
    assert statement.stmt.limitCount is not None


@pytest.mark.parametrize(
    ("sql", "position"),
    [
        ("select 1 from where", 15),
        ("select 'é' from where", 17),
        ("select 'abc", 8),
        ("sel", 1),
        ("select 1; delete", len("select 1; delete") + 1),
    ],
)
def test_parse_error_reports_position(sql: str, position: int) -> None:
    """A parse error carries the parser's 1-based character position and its message."""
    with pytest.raises(QueryRejected) as caught:
        validate_preview_sql(sql)
    assert caught.value.reason == "parse_error"
    assert caught.value.position == position
    assert "syntax error" in caught.value.message or "unterminated" in caught.value.message


def test_second_statement_position() -> None:
    """A second statement is reported where it starts, counted in characters."""
    with pytest.raises(QueryRejected) as caught:
        validate_preview_sql("select 'é'; delete from t")
    assert caught.value.reason == "multiple_statements"
    assert caught.value.position == len("select 'é'; ") + 1


def test_forbidden_function_message_names_it() -> None:
    """A refused function is named, with the group's reason, at the call's position."""
    with pytest.raises(QueryRejected) as caught:
        validate_preview_sql("select 1, pg_catalog.set_config('a.b', 'c', false)")
    assert caught.value.position == len("select 1, ") + 1
    assert "pg_catalog.set_config()" in caught.value.message
    assert "settings" in caught.value.message


@pytest.mark.parametrize(
    "sql",
    [
        *[
            pytest.param(sql, id=case_id)
            for case_id, sql, e in CORPUS
            if _expected_of_validator(e) != ACCEPT
        ],
        pytest.param("select 'x" + "y" * 5000, id="long_unterminated_string"),
        pytest.param("select lo_" + "x" * 5000 + "()", id="long_function_name"),
        pytest.param("select (1).lo_" + "x" * 5000, id="long_attribute_name"),
        pytest.param("select " + "y" * 5000 + " from", id="long_identifier_parse_error"),
        pytest.param("with x as (delete from " + "t" * 5000 + ") select 1", id="long_cte"),
    ],
)
def test_rejection_message_is_short(sql: str) -> None:
    """Rejection messages stay under 300 characters whatever the query holds."""
    with pytest.raises(QueryRejected) as caught:
        validate_preview_sql(sql)
    assert caught.value.reason in REASONS
    assert 0 < len(caught.value.message) <= 300
    assert str(caught.value) == caught.value.message
    position = caught.value.position
    assert position is None or 1 <= position <= len(sql) + 1


@pytest.mark.parametrize("name", sorted(REQUIRED_FORBIDDEN))
def test_deny_list_holds_required_function(name: str) -> None:
    """Every function the preview contract names is on the deny-list, qualified or not."""
    assert forbidden_function_reason(name) is not None
    assert forbidden_function_reason(f"pg_catalog.{name.upper()}") is not None


@pytest.mark.parametrize(
    "name", ["pg_sleep", "pg_sleep_for", "currval", "now", "current_setting", "count", "lower"]
)
def test_deny_list_spares_harmless_function(name: str) -> None:
    """Functions without effects outside the transaction stay usable (pg_sleep included)."""
    assert forbidden_function_reason(name) is None


def test_long_sleep_is_accepted() -> None:
    """pg_sleep(60) passes: the server's statement timeout, not the validator, bounds it."""
    assert validate_preview_sql("select pg_sleep(60)").statement == "select pg_sleep(60)"


def test_size_limit_is_in_utf8_bytes() -> None:
    """A query exactly at the byte limit is judged on content; one byte over is too long."""
    padding = MAX_SQL_BYTES - len("select ''")
    assert _verdict("select '" + "x" * padding + "'") == ACCEPT
    assert _verdict("select '" + "x" * (padding + 1) + "'") == "too_long"


def test_allow_list_names_real_node_kinds_and_no_statement_but_select() -> None:
    """The allow-list names real parser node kinds, and no statement but SELECT."""
    allowed = preview_validator._ALLOWED_KINDS
    assert {kind for kind in allowed if kind != "List" and not hasattr(ast, kind)} == set()
    assert {kind for kind in allowed if kind.endswith("Stmt")} == {"SelectStmt"}
    assert not allowed & {"IntoClause", "LockingClause", "ParamRef", "RawStmt"}


def _sites(sql: str) -> list[tuple[str, str | None, str]]:
    return [(c.kind, c.schema, c.name) for c in validate_preview_sql(sql).calls]


@pytest.mark.parametrize(
    ("sql", "sites"),
    [
        ("select 1", []),
        ("select upper(b) from t", [("function", None, "upper")]),
        ("select pg_catalog.upper(b) from t", [("function", "pg_catalog", "upper")]),
        ("select db.s.f()", [("function", "s", "f")]),
        ("select count(*) over () from t", [("function", None, "count")]),
        ("select a + 1, -a from t", [("operator", None, "+"), ("operator", None, "-")]),
        ("select a operator(s.+) 1 from t", [("operator", "s", "+")]),
        ("select a between 1 and 2", [("operator", None, ">="), ("operator", None, "<=")]),
        ("select a not between 1 and 2", [("operator", None, "<"), ("operator", None, ">")]),
        ("select a in (1, 2)", [("operator", None, "=")]),
        ("select a not in (1)", [("operator", None, "<>")]),
        ("select a in (select 1)", [("operator", None, "=")]),
        ("select a < all (select 1)", [("operator", None, "<")]),
        ("select a is distinct from b", [("operator", None, "=")]),
        ("select nullif(a, b)", [("operator", None, "=")]),
        ("select b like 'x%'", [("operator", None, "~~")]),
        ("select b ilike 'x%'", [("operator", None, "~~*")]),
        (
            "select b similar to 'x%'",
            [("operator", None, "~"), ("function", "pg_catalog", "similar_to_escape")],
        ),
        ("select case a when 1 then 2 end", [("operator", None, "=")]),
        ("select case when a then 2 end", []),
        ("select * from t order by a using <", [("operator", None, "<")]),
        ("select t.f from t", [("attribute", None, "f")]),
        ("select (t).f from t", [("attribute", None, "f")]),
        ("select * from t tablesample system_rows (1)", [("tablesample", None, "system_rows")]),
        (
            "select extract(year from now())",
            [("function", "pg_catalog", "extract"), ("function", None, "now")],
        ),
    ],
)
def test_call_sites_name_every_function_and_operator(
    sql: str, sites: list[tuple[str, str | None, str]]
) -> None:
    """Each function, operator (those IN, LIKE, BETWEEN and CASE imply too), x.f and table
    sample method is a call site, in the order the query reads."""
    assert _sites(sql) == sites


def test_call_site_position_counts_characters() -> None:
    """A call site's position is where its name starts, in characters of the user's text."""
    (site,) = validate_preview_sql("select 'é', upper('x')").calls
    assert site == CallSite("function", None, "upper", len("select 'é', ") + 1)


def _assert_calls_collected(text: str) -> None:
    """Every call pglast's own visitor finds in ``text`` is one of the validator's call sites."""
    sites = {(c.schema, c.name) for c in validate_preview_sql(text).calls}
    (statement,) = parser.parse_sql(text)
    assert statement.stmt is not None
    for node in _all_nodes(statement.stmt):
        names: list[str] = []
        if isinstance(node, ast.FuncCall):
            names = _names(node.funcname)
        elif isinstance(node, ast.A_Expr) and node.kind == enums.A_Expr_Kind.AEXPR_OP:
            names = _names(node.name)
        if names:
            schema = names[-2] if len(names) > 1 else None
            assert (schema, names[-1]) in sites, text


@pytest.mark.parametrize("sql", _accepted())
def test_accepted_corpus_call_sites_cover_every_call(sql: str) -> None:
    """pglast's visitor finds no function call or operator the call sites miss."""
    _assert_calls_collected(sql)


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("select " + "-".join(["1"] * 30_000), id="parser_stack_limit"),
        pytest.param("select " + "-".join(["1"] * 2_000), id="json_recursion_limit"),
        pytest.param("select " + "array[" * 9_000 + "1" + "]" * 9_000, id="bison_stack_limit"),
    ],
)
def test_deep_nesting_is_rejected_without_crashing(sql: str) -> None:
    """Nesting beyond the parser's or decoder's depth is rejected as too_complex, not a crash."""
    assert _verdict(sql) == "too_complex"


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_random_text_only_raises_query_rejected(sql: str) -> None:
    """Arbitrary text is either accepted as a safe read or rejected; nothing else escapes."""
    text = _outcome(sql)
    if isinstance(text, QueryRejected):
        assert text.reason in REASONS
        return
    _assert_safe_read(WRAPPER.format(text=text))


# A small SQL grammar that mixes reads with everything the validator must refuse. Depth is
# bounded explicitly so every draw yields a statement, and harmless choices dominate so about
# a third of the statements are accepted and their trees get checked.
_SAFE_FUNCTIONS = ["count", "upper", "coalesce", "pg_sleep", "generate_series", "abs"]
_DENIED_FUNCTIONS = [
    "nextval",
    "setval",
    "pg_advisory_lock",
    "pg_catalog.set_config",
    "lo_unlink",
    "pg_read_file",
    "dblink",
    "pg_notify",
    "query_to_xml",
    "pg_switch_wal",
]
_FUNCTIONS = st.sampled_from(_SAFE_FUNCTIONS * 3 + _DENIED_FUNCTIONS)
_LITERALS = st.sampled_from(["1", "'a;b'", "$$;$$", "'--'", "E'\\n'", "null", "'/*'", "a", "t.a"])
_WRITES = st.sampled_from(
    [
        "INSERT INTO t VALUES (1) RETURNING a",
        "UPDATE t SET a = 1 RETURNING a",
        "DELETE FROM t RETURNING a",
        "MERGE INTO t USING u ON true WHEN MATCHED THEN DELETE RETURNING t.a",
    ]
)
_TAILS = ["", " ORDER BY 1", " LIMIT 5", " UNION SELECT 1"] * 3 + [
    " FOR UPDATE",
    " FOR SHARE",
    " FOR NO KEY UPDATE",
    " FOR KEY SHARE",
]


def _select(with_: str, targets: list[str], into: str, from_: str, where: str, tail: str) -> str:
    return f"{with_}SELECT {', '.join(targets)}{into}{from_}{where}{tail}"


def _expressions(depth: int) -> st.SearchStrategy[str]:
    if depth == 0:
        return _LITERALS
    inner = _expressions(depth - 1)
    return st.one_of(
        _LITERALS,
        st.builds("{}({})".format, _FUNCTIONS, inner),
        st.builds("{} + {}".format, inner, inner),
        st.builds("x.{}".format, _FUNCTIONS),
        st.builds("({}).{}".format, inner, _FUNCTIONS),
        st.builds("({})".format, _selects(depth - 1)),
        st.builds("EXISTS ({})".format, _selects(depth - 1)),
    )


def _from_items(depth: int) -> st.SearchStrategy[str]:
    items = [
        st.just("t"),
        st.builds("{}({}) x".format, _FUNCTIONS, _expressions(depth)),
        st.builds("ROWS FROM ({}(1)) r".format, _FUNCTIONS),
    ]
    if depth > 0:
        items.append(st.builds("({}) q".format, _selects(depth - 1)))
        items.append(st.builds("t, LATERAL (SELECT {}) l".format, _expressions(depth - 1)))
    return st.one_of(*items)


def _selects(depth: int) -> st.SearchStrategy[str]:
    with_: st.SearchStrategy[str] = st.just("")
    if depth > 0:
        body = st.one_of(_selects(depth - 1), _selects(depth - 1), _WRITES)
        with_ = st.one_of(with_, with_, st.builds("WITH x AS ({}) ".format, body))
    return st.builds(
        _select,
        with_=with_,
        targets=st.lists(_expressions(depth), min_size=1, max_size=3),
        into=st.sampled_from(["", "", "", "", "", "", "", "", "", " INTO z"]),
        from_=st.one_of(st.just(""), st.builds(" FROM {}".format, _from_items(depth))),
        where=st.one_of(st.just(""), st.builds(" WHERE {}".format, _expressions(depth))),
        tail=st.sampled_from(_TAILS),
    )


_statements = st.builds(
    "{}{}{}".format,
    st.sampled_from(["", "-- c\n", "/* ; */ ", "  "]),
    st.one_of(_selects(2), _selects(2), _WRITES, st.builds("({})".format, _selects(1))),
    st.sampled_from(
        [
            *("", ";", "; ", " -- x", " /* y */", " -- x\n;") * 3,
            *("; DELETE FROM t", ";/* */DELETE FROM t", " -- x\n; DROP TABLE t", "; SELECT $$;$$"),
        ]
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_statements)
def test_generated_statements_accepted_only_when_safe(sql: str) -> None:
    """Whatever the grammar builds, an accepted statement is one harmless SELECT, wrapped too."""
    text = _outcome(sql)
    if isinstance(text, QueryRejected):
        event(f"rejected: {text.reason}")
        assert text.reason in REASONS
        return
    event("accepted")
    assert text in sql
    _assert_safe_read(text)
    _assert_safe_read(WRAPPER.format(text=text))
    _assert_calls_collected(text)


_FRAGMENTS = st.sampled_from(
    [
        "SELECT",
        "INSERT INTO t",
        "UPDATE t SET a = 1",
        "DELETE FROM t",
        "WITH x AS (",
        "(",
        ")",
        "INTO z",
        "FOR UPDATE",
        ";",
        "-- c\n",
        "/* ; */",
        "'x;y'",
        "$$;$$",
        "1",
        "a",
        "FROM t",
        "WHERE",
        ",",
        "nextval('s')",
        "pg_advisory_lock(1)",
        "x.set_config",
        "RETURNING *",
        "UNION",
        "VALUES (1)",
        "TABLE t",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_FRAGMENTS, max_size=14).map(" ".join))
def test_fragment_soup_accepted_only_when_safe(sql: str) -> None:
    """Random runs of SQL fragments are either rejected or one harmless SELECT."""
    text = _outcome(sql)
    if isinstance(text, QueryRejected):
        assert text.reason in REASONS
        return
    _assert_safe_read(WRAPPER.format(text=text))


def test_accepted_corpus_runs_read_only_on_postgres(database_url: str) -> None:
    """Every accepted corpus query, wrapped, runs on a real server in a READ ONLY transaction.

    Blow-ups are left to the executor's corpus test, which bounds them.
    """
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        for case_id, sql, expected in CORPUS:
            if expected != ACCEPT or case_id in NEEDS_LIBXML | BLOW_UPS:
                continue
            with conn.transaction():
                conn.execute("set transaction read only")
                conn.execute("set local statement_timeout = '5s'")
                try:
                    text = validate_preview_sql(sql).statement
                    rows = conn.execute(WRAPPER.format(text=text)).fetchall()
                except psycopg.Error as error:
                    pytest.fail(f"{case_id}: {error}")
                assert len(rows) <= 101


def test_attribute_call_escapes_read_only_and_is_rejected(database_url: str) -> None:
    """x.pg_advisory_lock takes a lock even under READ ONLY, so the validator must refuse it."""
    sql = "select g.pg_advisory_lock from generate_series(7, 7) g"
    with psycopg.connect(database_url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("set transaction read only")
            conn.execute(WRAPPER.format(text=sql))
        held = conn.execute(
            "select count(*) from pg_locks where locktype = 'advisory' and objid = 7"
            " and pid = pg_backend_pid()"
        ).fetchone()
        assert held == (1,)
    assert _verdict(sql) == "forbidden_function"


def test_backslash_quote_splits_differently_without_conforming_strings(database_url: str) -> None:
    """With standard_conforming_strings off the server sees a hidden call, so it is refused."""
    sql = "select 'a\\' as x, ' , pg_advisory_lock(8) as y -- '"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("set standard_conforming_strings = off")
        with conn.transaction():
            conn.execute("set transaction read only")
            conn.execute(WRAPPER.format(text=sql))
        held = conn.execute(
            "select count(*) from pg_locks where locktype = 'advisory' and objid = 8"
            " and pid = pg_backend_pid()"
        ).fetchone()
        assert held == (1,)
    assert _verdict(sql) == "ambiguous_string"
