"""The preview's allow-list decision and the role check, on rows as the catalog returns them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from agent.preview_function_list import SIGNATURES
from agent.preview_functions import OptIn, lookup, refusal
from agent.preview_session import read_start
from sevvo.runtime.preview_validator import (
    CallSite,
    forbidden_function_reason,
    validate_preview_sql,
)


def fn(
    name: str,
    schema: str = "pg_catalog",
    arguments: str = "text",
    *,
    visible: bool = True,
    built_in: bool = True,
) -> tuple[Any, ...]:
    """A row of the function lookup: name, schema, visible, argument types, built-in."""
    return (name, schema, visible, arguments, built_in)


def op(
    name: str,
    schema: str,
    function: str,
    arguments: str,
    *,
    function_schema: str = "public",
    visible: bool = True,
    built_in: bool = False,
) -> tuple[Any, ...]:
    """A row of the operator lookup (built-in operators of pg_catalog never appear)."""
    left, right = arguments.split(", ")
    return (name, schema, visible, function_schema, function, arguments, built_in, left, right)


def check(
    sql: str,
    functions: Sequence[tuple[Any, ...]] = (),
    operators: Sequence[tuple[Any, ...]] = (),
    opt_in: tuple[str, ...] = (),
) -> str | None:
    """The refusal message for ``sql`` given these catalog rows, or None when it may run."""
    refused = refusal(validate_preview_sql(sql).calls, functions, operators, OptIn(opt_in))
    return None if refused is None else refused.message


def test_a_listed_built_in_passes() -> None:
    """upper(text) of pg_catalog, built in, is on the list: the call may run."""
    assert check("select upper(b) from t", [fn("upper")]) is None


def test_a_visible_same_named_function_elsewhere_refuses_the_bare_name() -> None:
    """public.upper(integer), reachable by the bare name, refuses it, naming that function."""
    message = check(
        "select upper(b) from t",
        [fn("upper"), fn("upper", "public", "integer", built_in=False)],
    )
    assert message is not None
    assert "public.upper(integer)" in message


def test_a_hidden_same_named_function_does_not_refuse() -> None:
    """A function the search path cannot reach by the bare name is no candidate."""
    rows = [fn("upper"), fn("upper", "other", "integer", visible=False, built_in=False)]
    assert check("select upper(b) from t", rows) is None


def test_a_qualified_name_reaches_only_its_schema() -> None:
    """pg_catalog.upper is judged on pg_catalog's functions alone."""
    rows = [fn("upper"), fn("upper", "public", "integer", built_in=False)]
    assert check("select pg_catalog.upper(b) from t", rows) is None
    assert check("select public.upper(1)", rows) is not None


def test_a_built_in_that_is_not_listed_is_refused() -> None:
    """setseed is built in but changes the session's random state: not listed, refused."""
    message = check("select setseed(0.5)", [fn("setseed", arguments="double precision")])
    assert message is not None and "pg_catalog.setseed(double precision)" in message


def test_a_pg_catalog_function_made_after_initdb_is_refused() -> None:
    """An extension installed into pg_catalog has an OID past the built-ins: not listed."""
    rows = [fn("upper"), fn("upper", arguments="citext", built_in=False)]
    assert check("select upper(b) from t", rows) is not None


def test_an_unknown_function_is_refused_with_its_position() -> None:
    """A name with no function at all is refused where the query calls it."""
    refused = refusal(validate_preview_sql("select 1, nope(2)").calls, [], [], OptIn())
    assert refused is not None
    assert refused.position == len("select 1, ") + 1
    assert "nope()" in refused.message


def test_a_column_that_is_not_a_function_passes() -> None:
    """t.a with no function named a is a column: nothing to refuse."""
    assert check("select t.a from t") is None


def test_an_attribute_reaching_a_function_is_refused() -> None:
    """t.f where f(t) exists outside the list is refused: Postgres reads it as the call."""
    message = check("select t.f from t", [fn("f", "public", "t", built_in=False)])
    assert message is not None and "read as a call" in message


def test_a_visible_foreign_operator_refuses_the_bare_operator() -> None:
    """An extension's = reachable by the bare name refuses it and suggests OPERATOR()."""
    rows = [op("=", "public", "citext_eq", "citext, citext")]
    message = check("select a = 1 from t", operators=rows)
    assert message is not None
    assert "operator public.=(citext, citext)" in message
    assert "OPERATOR(pg_catalog.=)" in message


def test_a_foreign_operator_implemented_by_a_listed_function_passes() -> None:
    """An operator whose function is a listed built-in may run wherever it lives."""
    rows = [
        op(
            "===",
            "public",
            "int4eq",
            "integer, integer",
            function_schema="pg_catalog",
            built_in=True,
        )
    ]
    assert check("select a === 1 from t", operators=rows) is None


def test_built_in_operators_need_no_rows() -> None:
    """The lookup leaves pg_catalog's built-in operators out; with no rows they pass."""
    assert check("select a + 1, a in (1, 2), b like 'x' from t") is None


def test_an_opted_in_function_passes_by_name_or_by_schema() -> None:
    """The owner's opt-ins allow a function by bare name, or by schema and name only."""
    rows = [fn("similarity", "public", "text, text", built_in=False)]
    sql = "select similarity(b, 'x') from t"
    assert check(sql, rows) is not None
    assert check(sql, rows, opt_in=("similarity",)) is None
    assert check(sql, rows, opt_in=("public.similarity",)) is None
    assert check(sql, rows, opt_in=("other.similarity",)) is not None


def test_a_deny_listed_function_cannot_be_opted_in() -> None:
    """Opting in a name on the deny-list does nothing: the allow-list still refuses it."""
    rows = [fn("crosstab", "public", "text", built_in=False)]
    assert forbidden_function_reason("crosstab") is not None
    calls = [CallSite("function", None, "crosstab", 8)]
    assert refusal(calls, rows, [], OptIn(["crosstab", "public.crosstab"])) is not None


def test_the_first_refused_call_in_reading_order_is_reported() -> None:
    """With two refused calls, the one the query reaches first is named."""
    refused = refusal(validate_preview_sql("select b(1), a(2)").calls, [], [], OptIn())
    assert refused is not None and "b()" in refused.message


def test_the_lookup_asks_only_for_what_the_statement_names() -> None:
    """No call site, no query; functions and operators are looked up by their names."""
    empty = lookup(validate_preview_sql("select 1").calls)
    assert empty.functions is None and empty.operators is None
    both = lookup(validate_preview_sql("select upper(b) || 'x' from t").calls)
    assert both.functions is not None and both.operators is not None


def test_the_reviewed_list_holds_ordinary_functions_and_not_escapes() -> None:
    """Text, date, JSON, aggregate and window functions are listed; escapes are not."""
    names = {signature.split("(")[0] for signature in SIGNATURES}
    assert {"upper", "date_trunc", "jsonb_path_query", "string_agg", "row_number", "now"} <= names
    escapes = {
        "txid_current",
        "pg_current_xact_id",
        "xpath",
        "table_to_xml",
        "query_to_xml",
        "set_config",
        "pg_read_file",
        "pg_advisory_lock",
        "nextval",
        "pg_terminate_backend",
        "lo_import",
        "dblink",
        "pg_notify",
    }
    assert names & escapes == set()


# Memberships of the five strong roles of PostgreSQL 18, in STRONG_ROLES order.
NONE = [False] * 5


@pytest.mark.parametrize(
    ("row", "refusal_text"),
    [
        ((99, 10, False, False, False, NONE, []), None),
        ((99, 10, True, False, False, NONE, []), "a superuser"),
        ((99, 10, False, True, False, NONE, []), "a replication role"),
        ((99, 10, False, False, True, NONE, []), "allowed to bypass row-level security"),
        (
            (99, 10, False, False, False, [False, False, False, True, False], []),
            "a member of pg_signal_backend",
        ),
        (
            (99, 10, False, False, False, [True, True, False, False, False], []),
            "a member of pg_read_server_files, pg_write_server_files",
        ),
        (None, "its role could not be read from pg_roles"),
    ],
)
def test_credentials_too_strong_for_a_preview_are_named(
    row: tuple[Any, ...] | None, refusal_text: str | None
) -> None:
    """Superuser, replication, BYPASSRLS and the file or signal roles each refuse, by name."""
    assert read_start(row, 180000).refusal == refusal_text
