"""Which functions a preview may call: a reviewed allow-list, checked by catalog identity.

A name in SQL is not a function: Postgres picks one among every function of that name in the
schemas on the search path, by argument types, and an extension or a user with CREATE on a
schema can add a same-named one that wins. So the check is made by the database itself, in
the preview's own READ ONLY transaction, just before the statement runs (``lookup``): for
each call site the validator found, every function the name can reach is read from pg_proc
(a bare name: those the search path makes visible; a qualified one: its schema's), and for
an operator every such operator and the function behind it. Built-in operators of pg_catalog
are left out: the list generator checks that each is implemented by a listed function. A
call site passes only when every candidate is allowed:

- a built-in (OID below 16384, so created by initdb, never by an extension or a user) of
  schema pg_catalog whose ``name(argument types)`` is in agent.preview_function_list; or
- a function the connection's owner opted in by name (``name`` or ``schema.name``), unless
  the validator's deny-list names it.

Everything else refuses the preview, naming the function and where the query calls it. An
unknown function name refuses too; an operator or ``x.f`` with no candidate is left to the
server (it is a column, or an error). What this cannot see: functions a view, a policy or a
column default runs, and a type's own input, output and comparison functions (casts, ORDER
BY, GROUP BY); those are the database owner's objects, not the preview's text.

How the list was built and reviewed. scripts/preview_function_list.py reads pg_proc of
PostgreSQL 15 and 18 and keeps the built-in functions, aggregates and window functions of
pg_catalog that take and return only real types (not ``internal``, ``cstring`` or handler
pseudo-types, which are planner support, type I/O and access-method internals) and are
immutable or stable. Volatility is the server's own promise that a function does not change
the database; it is not enough, so the script then applies two reviewed tables: volatile
functions kept because their only effect is their result (clocks, random, sleeps, sizes),
and immutable or stable ones dropped, each group with its reason (``txid_current`` is stable
yet assigns a transaction id; ``table_to_xml`` runs SQL named by its argument; ``xpath``
cannot be interrupted). The stable functions (about 650) were read one by one; the immutable
ones (about 1,900) were searched for anything touching files, other sessions, transaction
ids, XML evaluation or SQL text, which is where the exclusions came from. ``--check`` shows
what a new server version adds, refused until reviewed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from psycopg import sql

from agent.preview_function_list import SIGNATURES
from sevvo.runtime.preview_validator import CallSite, forbidden_function_reason

FIRST_NORMAL_OBJECT_ID: Final = 16384
"""Objects below this OID were created by initdb (FirstNormalObjectId in transam.h)."""

MAX_SHOWN_CHARS: Final = 120
"""The longest function or operator description a refusal quotes."""

ARGUMENTS_SQL: Final = "pg_catalog.oidvectortypes(p.proargtypes)"
"""A function's argument types as the list spells them (``integer, text``), for ``pg_proc``
aliased ``p``: oidvectortypes() reads the type cache, with no per-row subquery.

Every operator in the queries here is schema-qualified: they run under the user's
search_path, where a same-named operator of another schema could win."""

# Both queries are single-table index scans (one join for an operator's function) whose
# names come from the syscache (regnamespace, oidvectortypes, *_is_visible): they run on a
# fresh backend, where every catalog a plan touches costs a millisecond of cold caches.
# pg_function_is_visible() is exactly "a bare name can reach it": in a schema of the search
# path and not hidden by a same-signature function earlier in it.
_FUNCTIONS = """
select p.proname::pg_catalog.text, p.pronamespace::pg_catalog.regnamespace::pg_catalog.text,
       pg_catalog.pg_function_is_visible(p.oid), {arguments},
       p.oid operator(pg_catalog.<) {first_normal}
from pg_catalog.pg_proc as p
where p.proname operator(pg_catalog.=) any ({names}::pg_catalog.name[])
"""
# Every same-named operator except pg_catalog's built-in ones: the list generator checks
# that each of those is implemented by a listed function, so leaving them out costs nothing
# in safety and most of the rows (there are sixty built-in "=").
_OPERATORS = """
select o.oprname::pg_catalog.text, o.oprnamespace::pg_catalog.regnamespace::pg_catalog.text,
       pg_catalog.pg_operator_is_visible(o.oid),
       p.pronamespace::pg_catalog.regnamespace::pg_catalog.text, p.proname::pg_catalog.text,
       {arguments}, p.oid operator(pg_catalog.<) {first_normal},
       case when o.oprleft operator(pg_catalog.<>) 0
            then pg_catalog.format_type(o.oprleft, null) end,
       case when o.oprright operator(pg_catalog.<>) 0
            then pg_catalog.format_type(o.oprright, null) end
from pg_catalog.pg_operator as o
join pg_catalog.pg_proc as p on p.oid operator(pg_catalog.=) o.oprcode
where o.oid operator(pg_catalog.>=) {first_normal}
  and o.oprname operator(pg_catalog.=) any ({names}::pg_catalog.name[])
"""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A function one call site could resolve to (for an operator: the function behind it)."""

    schema: str
    name: str
    arguments: str
    built_in: bool
    operator: str | None = None

    def shown(self) -> str:
        """``schema.name(types)``, and for an operator which one it implements."""
        function = f"{self.schema}.{self.name}({self.arguments})"
        text = f"{self.operator}, implemented by {function}" if self.operator else function
        return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 1] + "…"


@dataclass(frozen=True, slots=True)
class FunctionRefused:
    """The first call site that may not run, and why, in a sentence for the user."""

    message: str
    position: int | None


class OptIn:
    """Functions a connection's owner allowed by name, beyond the reviewed list.

    An entry ``name`` allows that function name in any schema, ``schema.name`` only in that
    schema. Names on the validator's deny-list are ignored: those can never be opted in.
    """

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._anywhere: set[str] = set()
        self._qualified: set[tuple[str, str]] = set()
        for entry in names:
            if forbidden_function_reason(entry) is not None:
                continue
            schema, dot, name = entry.rpartition(".")
            if dot:
                self._qualified.add((schema, name))
            else:
                self._anywhere.add(name)

    def covers(self, schema: str, name: str) -> bool:
        """Whether the owner opted in the function ``schema.name``."""
        return name in self._anywhere or (schema, name) in self._qualified


@dataclass(frozen=True, slots=True)
class Lookup:
    """The catalog queries for a statement's call sites; either may be None (no such site)."""

    functions: sql.Composed | None
    operators: sql.Composed | None


def lookup(calls: Sequence[CallSite]) -> Lookup:
    """The queries listing every function and operator the call sites' names could reach.

    Their rows are what ``refusal`` reads. Run them in the preview's transaction, right before
    the statement: that is the catalog and the search_path the statement is resolved in.
    """
    functions = sorted({c.name for c in calls if c.kind != "operator"})
    operators = sorted({c.name for c in calls if c.kind == "operator"})

    def query(template: str, names: list[str]) -> sql.Composed | None:
        if not names:
            return None
        return sql.SQL(template).format(
            names=sql.Literal(names),
            arguments=sql.SQL(ARGUMENTS_SQL),
            first_normal=sql.Literal(FIRST_NORMAL_OBJECT_ID),
        )

    return Lookup(query(_FUNCTIONS, functions), query(_OPERATORS, operators))


def refusal(
    calls: Sequence[CallSite],
    function_rows: Iterable[Sequence[Any]],
    operator_rows: Iterable[Sequence[Any]],
    opt_in: OptIn,
) -> FunctionRefused | None:
    """The first call site, in reading order, that may not run; None when all may.

    A bare name reaches what the search path makes visible (pg_catalog among it, wherever
    the path puts it); a qualified one everything of that name in its schema.
    """
    found: dict[tuple[bool, str], list[tuple[str, bool, Candidate]]] = {}
    for name, schema, visible, arguments, built_in in function_rows:
        candidate = Candidate(_unquoted(schema), name, arguments, bool(built_in))
        found.setdefault((False, name), []).append((candidate.schema, bool(visible), candidate))
    for (
        name,
        schema,
        visible,
        fn_schema,
        fn_name,
        arguments,
        built_in,
        left,
        right,
    ) in operator_rows:
        operands = ", ".join(t for t in (left, right) if t is not None)
        operator = f"operator {schema}.{name}({operands})"
        candidate = Candidate(_unquoted(fn_schema), fn_name, arguments, bool(built_in), operator)
        found.setdefault((True, name), []).append((_unquoted(schema), bool(visible), candidate))
    for call in calls:
        reachable = [
            candidate
            for schema, visible, candidate in found.get((call.kind == "operator", call.name), [])
            if (schema == call.schema if call.schema is not None else visible)
        ]
        refused = next((c for c in reachable if not _allowed(c, opt_in)), None)
        if refused is not None:
            return FunctionRefused(_refused_message(call, refused), call.position)
        # Built-in operators of pg_catalog are not listed by the lookup, so only a function
        # or table sample method can be known to have no candidate at all.
        if not reachable and call.kind in ("function", "tablesample"):
            return FunctionRefused(
                f"Function {call.shown()}() is not on the preview's list of allowed functions"
                " (no function of that name is visible to the connection's role).",
                call.position,
            )
    return None


def is_listed(candidate: Candidate) -> bool:
    """Whether the reviewed list holds this function (by schema, name and argument types)."""
    return (
        candidate.built_in
        and candidate.schema == "pg_catalog"
        and f"{candidate.name}({candidate.arguments})" in SIGNATURES
    )


def _unquoted(identifier: str) -> str:
    """A name as regnamespace prints it (quoted only when it must be), back to the name."""
    if identifier.startswith('"') and identifier.endswith('"') and len(identifier) > 1:
        return identifier[1:-1].replace('""', '"')
    return identifier


def _allowed(candidate: Candidate, opt_in: OptIn) -> bool:
    return is_listed(candidate) or opt_in.covers(candidate.schema, candidate.name)


def _refused_message(call: CallSite, refused: Candidate) -> str:
    why = (
        " Only reviewed read-only functions of pg_catalog run in a preview, and functions the"
        " connection's owner opted in by name."
    )
    if call.kind == "operator":
        return (
            f"Operator {call.shown()} can resolve to {refused.shown()}, which is not on the"
            f" preview's list of allowed functions.{why} Write OPERATOR(pg_catalog.{call.name})"
            " for the built-in operator."
        )
    if call.kind == "attribute":
        return (
            f"{call.shown()} can be read as a call of {refused.shown()}, which is not on the"
            f" preview's list of allowed functions.{why}"
        )
    return (
        f"Function {call.shown()}() can resolve to {refused.shown()}, which is not on the"
        f" preview's list of allowed functions.{why}"
    )
