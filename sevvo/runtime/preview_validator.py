"""Decide whether a user's SQL may run as a data preview, using the real Postgres parser.

It lives in the shared runtime because two sides decide with the same code: the agent, before
a preview or a sync runs a statement, and the orchestrator, when a model's statement is saved.

The preview is the one path where rows leave the customer's network (docs/design.md, "Preview query
contract"), so the check is an allow-list over the parse tree that libpg_query (through pglast)
builds, never string matching: the statement must be exactly one plain SELECT (VALUES, TABLE,
set operations and WITH ... SELECT included), and every node anywhere in its tree must be of a
kind listed in ``_ALLOWED_KINDS``.

Which functions and operators a name stands for is decided by the database, not by the text,
so this module only collects every place the statement names one (``CallSite``: function
calls, ``x.f`` that Postgres may read as ``f(x)``, operators, table sample methods); the
executor resolves them in the preview's own transaction against the reviewed allow-list of
agent.preview_functions before the statement runs. The deny-list below stays as a second
net: names on it are refused here, before any connection, and cannot be opted in.

This is the first line of defence. The executor runs the returned text in a READ ONLY
transaction with a statement timeout, so the validator errs on the side of rejecting. It cannot
see what views, user-defined functions or operators do when they run. It also relies on the
server lexing SQL the way libpg_query does: the one setting that changes where tokens end is
``standard_conforming_strings = off``, so the executor should ``SET LOCAL`` it on, and '...'
literals that would split differently under it are refused here as well.

Parser entry point: ``pglast.parser.parse_sql_json`` and ``json.loads``, about 0.3 ms for a
1 KB SELECT with the walk. Not ``parse_sql``: besides being slower, its Cython tree builder
recurses without a depth check and crashes the whole process (SIGSEGV) on a ~60 KB
``select 1-1-1-...``, where ``parse_sql_json`` reports "stack depth limit exceeded" and
``json.loads`` raises RecursionError; both become the rejection ``too_complex``. In the JSON
tree every node of a generic ``Node *`` field is tagged ``{"Kind": {fields}}``; fields typed
as one particular struct (``intoClause``, ``withClause``, set-operation arms) are written
untagged, which is why ``intoClause`` is checked by field name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pglast import parser

MAX_SQL_BYTES: Final = 100 * 1024

REASONS: Final = frozenset(
    {
        "empty",
        "too_long",
        "invalid_character",
        "parse_error",
        "too_complex",
        "multiple_statements",
        "not_a_read",
        "data_modifying_cte",
        "select_into",
        "locking_clause",
        "forbidden_function",
        "unsupported_syntax",
        "ambiguous_string",
    }
)
"""Every value ``QueryRejected.reason`` can take; callers branch on these, never on messages."""

# Never echo more than this much of any user-written name or parser message.
_MAX_QUOTED_CHARS: Final = 60
_MAX_PARSER_MESSAGE_CHARS: Final = 160

# Postgres' lexer treats only these as whitespace; str.strip() would also eat characters such
# as U+00A0 that Postgres reads as part of an identifier.
_SQL_WHITESPACE: Final = " \t\n\r\f\v"
_COMMENT_TOKENS: Final = frozenset({"SQL_COMMENT", "C_COMMENT"})
_INVALID_CHARACTER: Final = re.compile("[\0\ud800-\udfff]")
# The parser's own messages when a query nests beyond its stack (bison's "memory exhausted"
# is its parser-stack limit).
_TOO_DEEP_MESSAGES: Final = ("stack depth limit exceeded", "memory exhausted")


class QueryRejected(Exception):
    """The SQL may not run as a preview.

    ``reason`` is one of ``REASONS`` (stable, lower_snake); ``message`` says in a sentence what
    is not allowed and why, quoting at most a short name of the user's SQL; ``position`` is the
    1-based character position in the submitted text when known.
    """

    def __init__(self, reason: str, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.position = position

    def __repr__(self) -> str:
        return f"QueryRejected({self.reason!r}, {self.message!r}, position={self.position!r})"


CallKind = Literal["function", "attribute", "operator", "tablesample"]


@dataclass(frozen=True, slots=True)
class CallSite:
    """A place where the statement names a function or an operator the server will resolve.

    ``kind`` is "function" (a call), "attribute" (``x.f``, which Postgres reads as ``f(x)``
    when ``x`` has no column ``f``), "operator" (including the ones IN, LIKE, BETWEEN, CASE
    and ``= ANY`` imply) or "tablesample" (a TABLESAMPLE method, itself a function).
    ``schema`` is set when the name was qualified. ``position`` is 1-based, in characters.
    """

    kind: CallKind
    schema: str | None
    name: str
    position: int | None

    def shown(self) -> str:
        """The name as the user wrote it (qualified when it was), shortened for a message."""
        text = f"{self.schema}.{self.name}" if self.schema else self.name
        return _shorten(text, _MAX_QUOTED_CHARS)


@dataclass(frozen=True, slots=True)
class ValidatedQuery:
    """A statement that passed the parser checks, and every call site it holds."""

    statement: str
    calls: tuple[CallSite, ...] = field(default=())


@dataclass(frozen=True)
class _DeniedGroup:
    """Functions refused for one shared reason, by exact name or by name prefix."""

    why: str
    names: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()


# Matched on the last component of the name, lower-cased, so pg_catalog.set_config and
# "SET_CONFIG" are refused like set_config. Groups name what escapes the preview's READ ONLY
# transaction: most of these are not stopped by READ ONLY at all. pg_sleep and friends stay
# allowed on purpose: the statement timeout bounds them.
_DENIED_GROUPS: Final[tuple[_DeniedGroup, ...]] = (
    # Session-level advisory locks outlive the transaction; even xact-level ones block others.
    _DeniedGroup(
        "it takes or releases advisory locks",
        prefixes=("pg_advisory_", "pg_try_advisory_"),
    ),
    # Acts on other sessions or on the whole server.
    _DeniedGroup(
        "it signals, reconfigures or resets the server or other sessions",
        names=frozenset(
            {
                "pg_cancel_backend",
                "pg_terminate_backend",
                "pg_signal_backend",
                "pg_reload_conf",
                "pg_rotate_logfile",
                "pg_rotate_logfile_old",
                "pg_log_backend_memory_contexts",
                "pg_stat_statements_reset",
            }
        ),
        prefixes=("pg_promote", "pg_wal_replay_", "pg_xlog_replay_", "pg_stat_reset"),
    ),
    # A setting changed by set_config(..., false) stays for the rest of the session.
    _DeniedGroup("it changes server settings", names=frozenset({"set_config"})),
    # Sequence changes are never rolled back (currval/lastval only read and stay allowed).
    _DeniedGroup("it advances or sets a sequence", names=frozenset({"nextval", "setval"})),
    # lo_import/lo_export read and write files on the server; the rest write large objects.
    _DeniedGroup(
        "it works on large objects or server files",
        names=frozenset({"loread", "lowrite"}),
        prefixes=("lo_",),
    ),
    _DeniedGroup(
        "it reads server files or lists server directories",
        names=frozenset({"pg_read_file", "pg_read_binary_file", "pg_stat_file", "pg_logdir_ls"}),
        prefixes=("pg_ls_", "pg_file_"),
    ),
    # Work done over another connection is outside this transaction and its READ ONLY mode.
    _DeniedGroup("it opens connections to other servers", prefixes=("dblink", "postgres_fdw_")),
    _DeniedGroup("it notifies other sessions", names=frozenset({"pg_notify"})),
    # These run an SQL string the validator never sees (ts_stat and ts_rewrite take one too,
    # and so do tablefunc's crosstab and connectby and xml2's xpath_table).
    _DeniedGroup(
        "it runs an SQL string that cannot be checked",
        names=frozenset({"ts_stat", "ts_rewrite", "connectby", "xpath_table"}),
        prefixes=(
            "query_to_xml",
            "cursor_to_xml",
            "table_to_xml",
            "schema_to_xml",
            "database_to_xml",
            "crosstab",
        ),
    ),
    # libxml2 evaluates XPath and XSLT without checking for interrupts: a short expression
    # ran on for minutes after the statement timeout and pg_terminate_backend.
    _DeniedGroup(
        "it evaluates XPath or XSLT in libxml2, which keeps running after the preview is cancelled",
        names=frozenset({"xmlexists", "xslt_process"}),
        prefixes=("xpath",),
    ),
    # pg_prewarm: whole relations into shared memory, a file in the data directory, a
    # background worker that outlives the preview.
    _DeniedGroup(
        "it loads relations into shared memory or starts a background worker",
        names=frozenset({"pg_prewarm"}),
        prefixes=("autoprewarm_",),
    ),
    # pg_surgery, pg_visibility, pageinspect and amcheck work on raw pages and tuples.
    _DeniedGroup(
        "it reads or repairs raw pages, tuples or visibility maps",
        names=frozenset(
            {
                "get_raw_page",
                "pg_truncate_visibility_map",
                "verify_heapam",
                "bt_index_check",
                "bt_index_parent_check",
            }
        ),
        prefixes=("heap_force_", "pg_check_frozen", "pg_check_visible"),
    ),
    # Assigning a transaction id or exporting a snapshot is visible beyond the preview.
    _DeniedGroup(
        "it assigns transaction ids or exports snapshots",
        names=frozenset({"txid_current", "pg_current_xact_id", "pg_export_snapshot"}),
    ),
    _DeniedGroup(
        "it controls replication, WAL or backups",
        names=frozenset(
            {
                "pg_switch_wal",
                "pg_switch_xlog",
                "pg_start_backup",
                "pg_stop_backup",
                "pg_backup_start",
                "pg_backup_stop",
                "pg_log_standby_snapshot",
            }
        ),
        prefixes=(
            "pg_create_",
            "pg_drop_",
            "pg_copy_",
            "pg_replication_",
            "pg_logical_",
            "pg_sync_",
        ),
    ),
    # These write catalogs, statistics or indexes directly; READ ONLY does not stop them.
    _DeniedGroup(
        "it writes catalogs, statistics or indexes",
        names=frozenset(
            {
                "brin_summarize_new_values",
                "brin_summarize_range",
                "brin_desummarize_range",
                "gin_clean_pending_list",
                "pg_import_system_collations",
                "pg_nextoid",
            }
        ),
        prefixes=("pg_restore_", "pg_clear_", "binary_upgrade_"),
    ),
)

# Flattened for the lookup done on every name in the tree.
_DENIED_NAMES: Final = {name: group.why for group in _DENIED_GROUPS for name in group.names}
_DENIED_PREFIXES: Final = tuple(prefix for group in _DENIED_GROUPS for prefix in group.prefixes)

# The raw-parse-tree node kinds a plain read is made of. Anything else anywhere in the tree is
# rejected, so a node kind added by a future Postgres is refused until someone reviews it.
_ALLOWED_KINDS: Final = frozenset(
    {
        # statement and its clauses; List wraps a list held where one node is expected
        "SelectStmt",
        "List",
        "WithClause",
        "CommonTableExpr",
        "CTESearchClause",
        "CTECycleClause",
        "ResTarget",
        "SortBy",
        "WindowDef",
        "GroupingSet",
        # FROM items
        "RangeVar",
        "RangeSubselect",
        "RangeFunction",
        "RangeTableSample",
        "JoinExpr",
        "Alias",
        "ColumnDef",
        # expressions
        "A_Const",
        "Integer",
        "Float",
        "Boolean",
        "String",
        "BitString",
        "ColumnRef",
        "A_Star",
        "A_Expr",
        "BoolExpr",
        "A_ArrayExpr",
        "A_Indices",
        "A_Indirection",
        "TypeCast",
        "TypeName",
        "CollateClause",
        "FuncCall",
        "NamedArgExpr",
        "SubLink",
        "CaseExpr",
        "CaseWhen",
        "CoalesceExpr",
        "MinMaxExpr",
        "NullTest",
        "BooleanTest",
        "RowExpr",
        "SQLValueFunction",
        "GroupingFunc",
        "XmlExpr",
        "XmlSerialize",
        # SQL/JSON constructors, predicates, query functions and JSON_TABLE
        "JsonFormat",
        "JsonReturning",
        "JsonOutput",
        "JsonValueExpr",
        "JsonKeyValue",
        "JsonObjectConstructor",
        "JsonArrayConstructor",
        "JsonArrayQueryConstructor",
        "JsonAggConstructor",
        "JsonObjectAgg",
        "JsonArrayAgg",
        "JsonParseExpr",
        "JsonScalarExpr",
        "JsonSerializeExpr",
        "JsonIsPredicate",
        "JsonFuncExpr",
        "JsonArgument",
        "JsonBehavior",
        "JsonTable",
        "JsonTableColumn",
        "JsonTablePathSpec",
    }
)

# Allowed kinds whose contents need a closer look (names that may be calls or operators,
# CTE bodies).
_INSPECTED_KINDS: Final = frozenset(
    {
        "CommonTableExpr",
        "FuncCall",
        "ColumnRef",
        "A_Indirection",
        "A_Expr",
        "SubLink",
        "SortBy",
        "CaseExpr",
        "RangeTableSample",
    }
)

# The operators Postgres builds BETWEEN from (transformAExprBetween), by A_Expr kind.
_BETWEEN_OPERATORS: Final = {
    "AEXPR_BETWEEN": (">=", "<="),
    "AEXPR_BETWEEN_SYM": (">=", "<="),
    "AEXPR_NOT_BETWEEN": ("<", ">"),
    "AEXPR_NOT_BETWEEN_SYM": ("<", ">"),
}
_PLAIN_KINDS: Final = _ALLOWED_KINDS - _INSPECTED_KINDS

_STATEMENT_NAMES: Final = {
    "CreateStmt": "CREATE TABLE",
    "IndexStmt": "CREATE INDEX",
    "ViewStmt": "CREATE VIEW",
    "DefineStmt": "CREATE",
    "CreatedbStmt": "CREATE DATABASE",
    "DropdbStmt": "DROP DATABASE",
    "VariableSetStmt": "SET/RESET",
    "VariableShowStmt": "SHOW",
    "TransactionStmt": "a transaction command",
    "VacuumStmt": "VACUUM/ANALYZE",
    "RuleStmt": "CREATE RULE",
    "RenameStmt": "ALTER ... RENAME",
    "ClosePortalStmt": "CLOSE",
    "DeallocateStmt": "DEALLOCATE",
    "FetchStmt": "FETCH/MOVE",
}

# A parsed node is {"Kind": {fields}}; locations in it are byte offsets into the UTF-8 text.
_Json = dict[str, Any]


def validate_preview_sql(sql: str) -> ValidatedQuery:
    """Return the single read statement in ``sql``, ready to wrap, or raise QueryRejected.

    The statement is its own text as the parser delimited it: leading comments, trailing
    semicolons and trailing comments are dropped, everything inside is kept as it was. SHOW
    is rejected like every other utility statement (it cannot be wrapped in a SELECT anyway);
    ``current_setting()`` reads a setting within a SELECT. The call sites, in the order the
    query reads, are for the executor's allow-list check.
    """
    return _validate(sql, deny_list=True)


def _validate(sql: str, *, deny_list: bool) -> ValidatedQuery:
    """validate_preview_sql, with the deny-list optional: tests use it to show that the
    allow-list alone refuses every function the deny-list names."""
    if len(sql) > MAX_SQL_BYTES or len(sql.encode("utf-8", "surrogatepass")) > MAX_SQL_BYTES:
        raise QueryRejected(
            "too_long", f"The query is longer than the preview limit of {MAX_SQL_BYTES} bytes."
        )
    _check_characters(sql)
    utf8 = sql.encode("utf-8")
    try:
        tree = json.loads(parser.parse_sql_json(sql))
    except parser.ParseError as error:
        raise _parse_error(sql, error) from None
    except RecursionError:
        raise QueryRejected(
            "too_complex", "The query nests expressions or subqueries too deeply for a preview."
        ) from None
    statements: list[_Json] = tree.get("stmts") or []
    if not statements:
        raise QueryRejected("empty", "The query is empty: there is no statement to preview.")
    if len(statements) > 1:
        raise QueryRejected(
            "multiple_statements",
            "Only one statement can be previewed; a second one starts here.",
            _char_position(utf8, statements[1].get("stmt_location", 0)),
        )
    start: int = statements[0].get("stmt_location", 0)
    length: int = statements[0].get("stmt_len", 0)
    statement: _Json = statements[0]["stmt"]
    kind = _kind(statement)
    if kind != "SelectStmt":
        raise QueryRejected(
            "not_a_read",
            f"Only a SELECT (or VALUES, TABLE, WITH ... SELECT) can be previewed;"
            f" {_statement_name(kind)} is not a plain read.",
            _char_position(utf8, start),
        )
    calls = _check_tree(statement, utf8, deny_list)
    _check_string_literals(sql)
    return ValidatedQuery(_statement_text(utf8, start, length), tuple(calls))


def forbidden_function_reason(name: str) -> str | None:
    """Why a function named ``name`` (optionally schema-qualified) is refused, or None."""
    last = name.rsplit(".", 1)[-1].lower()
    why = _DENIED_NAMES.get(last)
    if why is None and last.startswith(_DENIED_PREFIXES):
        why = next(g.why for g in _DENIED_GROUPS if last.startswith(g.prefixes))
    return why


def _check_characters(sql: str) -> None:
    # libpg_query reads a C string, so it would silently stop at a NUL; surrogates cannot be
    # encoded for it at all.
    found = _INVALID_CHARACTER.search(sql)
    if found is not None:
        raise QueryRejected(
            "invalid_character",
            "The query contains a NUL or an unpaired surrogate character, which Postgres does"
            " not accept in SQL text.",
            found.start() + 1,
        )


def _parse_error(sql: str, error: parser.ParseError) -> QueryRejected:
    detail = str(error.args[0]) if error.args else "syntax error"
    index = error.args[1] if len(error.args) > 1 else None
    # pglast gives a 0-based character index, or None for "at end of input": then point just
    # past the last character, as Postgres itself does.
    position = index + 1 if isinstance(index, int) else len(sql) + 1
    shown = _shorten(detail, _MAX_PARSER_MESSAGE_CHARS)
    if any(marker in detail for marker in _TOO_DEEP_MESSAGES):
        return QueryRejected(
            "too_complex", f"The query nests too deeply for the parser: {shown}.", position
        )
    return QueryRejected("parse_error", f"The query is not valid SQL: {shown}.", position)


def _check_tree(statement: _Json, utf8: bytes, deny_list: bool) -> list[CallSite]:
    """Walk every node under ``statement``, raise on the first one a preview may not hold,
    and return the call sites met on the way."""
    # Entries are (JSON object, byte offset of the nearest enclosing location). Iterative, so
    # no tree depth the parser accepts can exhaust Python's stack here. Children are pushed
    # in reverse, so problems are met (and reported) in the order the query reads.
    calls: list[CallSite] = []
    stack: list[tuple[_Json, int | None]] = [(statement, None)]
    while stack:
        value, where = stack.pop()
        location = value.get("location")
        if isinstance(location, int) and location >= 0:
            where = location
        for key, child in reversed(value.items()):
            if isinstance(child, dict):
                # A node is {"Kind": {fields}}: kinds are CamelCase, field names never are.
                if key[:1].isupper():
                    if key not in _PLAIN_KINDS:
                        _check_node(key, child, where, utf8, calls, deny_list)
                elif key == "intoClause":
                    target = child.get("rel", {}).get("location")
                    raise QueryRejected(
                        "select_into",
                        "SELECT ... INTO creates a table; a preview can only read.",
                        _char_position(utf8, target if target is not None else where),
                    )
                stack.append((child, where))
            elif isinstance(child, list):
                _push_objects(child, where, stack)
            # Anything else is a name, number, flag or enum label: no behaviour of its own.
    return calls


def _push_objects(
    items: list[Any], where: int | None, stack: list[tuple[_Json, int | None]]
) -> None:
    # Lists hold objects, or lists of them (VALUES rows, ROWS FROM items).
    for item in reversed(items):
        if isinstance(item, dict):
            stack.append((item, where))
        elif isinstance(item, list):
            _push_objects(item, where, stack)


def _check_node(
    kind: str,
    fields: Any,
    where: int | None,
    utf8: bytes,
    calls: list[CallSite],
    deny_list: bool,
) -> None:
    fields = fields if isinstance(fields, dict) else {}
    location = fields.get("location")
    position = _char_position(utf8, location if isinstance(location, int) else where)

    def call(call_kind: CallKind, names: list[str]) -> None:
        if names:
            schema = names[-2] if len(names) > 1 else None
            calls.append(CallSite(call_kind, schema, names[-1], position))

    if kind == "CommonTableExpr":
        body = _kind(fields.get("ctequery"))
        if body != "SelectStmt":
            raise QueryRejected(
                "data_modifying_cte",
                f"A WITH query in a preview must be a SELECT; {_statement_name(body)} inside"
                " WITH would change data.",
                position,
            )
    elif kind == "FuncCall":
        names = _names(fields.get("funcname"))
        if deny_list:
            _check_function(names, position)
        call("function", names)
    elif kind == "ColumnRef":
        # Postgres reads x.f as f(x) when x has no column f, so every name after the first
        # can be a call (`select r.nextval from to_regclass('s') r` advances a sequence).
        if len(fields.get("fields", ())) > 1:
            attributes = _names(fields["fields"])[1:]
            if deny_list:
                _check_attribute_calls(attributes, position)
            for name in attributes:
                call("attribute", [name])
    elif kind == "A_Indirection":
        # (expr).f is likewise f(expr).
        attributes = _names(fields.get("indirection"))
        if deny_list:
            _check_attribute_calls(attributes, position)
        for name in attributes:
            call("attribute", [name])
    elif kind == "A_Expr":
        between = _BETWEEN_OPERATORS.get(str(fields.get("kind")))
        if between is not None:
            for name in between:
                call("operator", [name])
        else:
            call("operator", _names(fields.get("name")))
    elif kind == "SubLink":
        # x IN (SELECT ...) is an ANY sublink without an operator name: it means =.
        operator_name = _names(fields.get("operName"))
        if not operator_name and fields.get("subLinkType") == "ANY_SUBLINK":
            operator_name = ["="]
        call("operator", operator_name)
    elif kind == "SortBy":
        call("operator", _names(fields.get("useOp")))
    elif kind == "CaseExpr":
        # CASE x WHEN v compares with the operator named =, resolved like any other.
        if fields.get("arg") is not None:
            call("operator", ["="])
    elif kind == "RangeTableSample":
        call("tablesample", _names(fields.get("method")))
    elif kind == "LockingClause":
        locked = [rel.get("RangeVar", {}).get("location") for rel in fields.get("lockedRels", [])]
        raise QueryRejected(
            "locking_clause",
            "FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE lock rows; a preview can only read.",
            _char_position(utf8, locked[0]) if locked and locked[0] is not None else position,
        )
    elif kind == "ParamRef":
        raise QueryRejected(
            "unsupported_syntax",
            "Parameter placeholders ($1, ...) cannot be used in a preview: nothing binds them.",
            position,
        )
    elif kind == "RangeTableFunc":
        raise QueryRejected(
            "unsupported_syntax",
            "XMLTABLE cannot be used in a preview: libxml2 evaluates its XPath without"
            " stopping when the preview is cancelled.",
            position,
        )
    elif kind.endswith("Stmt"):
        raise QueryRejected(
            "not_a_read",
            f"{_statement_name(kind)} cannot appear inside a preview query: it is not a read.",
            position,
        )
    elif kind not in _ALLOWED_KINDS:
        raise QueryRejected(
            "unsupported_syntax",
            f"The preview does not accept this construct ({_shorten(kind, _MAX_QUOTED_CHARS)});"
            " only plain reads are allowed.",
            position,
        )


def _check_string_literals(sql: str) -> None:
    """Refuse '...' literals that a server with standard_conforming_strings off splits elsewhere.

    With the setting off (still possible per database or role), a backslash escapes the quote
    after it, so ``'a\\' as x, ' , pg_advisory_lock(7) -- '`` is two strings here but one
    string and a function call there. Only a backslash directly before a quote moves where a
    plain literal ends; E'...', dollar quotes and '\\d+'-style regexes are unaffected.
    """
    if "\\'" not in sql:
        return
    for token in _scan(sql):
        if token.name == "SCONST":
            raw = sql[token.start : token.end + 1]
            if raw.startswith("'") and "\\'" in raw:
                raise QueryRejected(
                    "ambiguous_string",
                    "A '...' string holding a backslash before a quote is read differently by"
                    " servers with standard_conforming_strings off; write it as E'...' or with"
                    " the quote doubled ('').",
                    token.start + 1,
                )


def _check_function(name: list[str], position: int | None) -> None:
    qualified = ".".join(name)
    why = forbidden_function_reason(qualified)
    if why is not None:
        raise QueryRejected(
            "forbidden_function",
            f"Function {_shorten(qualified, _MAX_QUOTED_CHARS)}() is not allowed in a preview:"
            f" {why}.",
            position,
        )


def _check_attribute_calls(names: list[str], position: int | None) -> None:
    for name in names:
        why = forbidden_function_reason(name)
        if why is not None:
            raise QueryRejected(
                "forbidden_function",
                f"Function {_shorten(name, _MAX_QUOTED_CHARS)}() is not allowed in a preview:"
                f" {why}. Postgres reads x.f as the call f(x); for a column of that name, drop"
                " the qualifier.",
                position,
            )


def _kind(node: Any) -> str | None:
    """The kind of a tagged node ``{"Kind": {...}}``, or None for anything else."""
    if isinstance(node, dict) and len(node) == 1:
        (kind,) = node
        return str(kind)
    return None


def _names(items: Any) -> list[str]:
    """The text of the String nodes in a name list (function name, column reference)."""
    return [
        str(item["String"].get("sval", ""))
        for item in items or []
        if isinstance(item, dict) and isinstance(item.get("String"), dict)
    ]


def _statement_name(kind: str | None) -> str:
    if kind is None:
        return "this statement"
    if kind in _STATEMENT_NAMES:
        return _STATEMENT_NAMES[kind]
    name = _shorten(kind.removesuffix("Stmt"), _MAX_QUOTED_CHARS)
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).upper()


def _statement_text(utf8: bytes, start: int, length: int) -> str:
    """Slice the statement out of the query (offsets are in bytes) and drop trailing comments."""
    raw = utf8[start : start + length] if length else utf8[start:]
    text = raw.decode("utf-8").rstrip(_SQL_WHITESPACE)
    if "--" in text or "/*" in text:
        # The lexer, not a search for "--", finds where the last real token ends; a "--"
        # inside a string literal is not a comment.
        tokens = [t for t in _scan(text) if t.name not in _COMMENT_TOKENS]
        if tokens:
            text = text[: tokens[-1].end + 1]
    return text


def _scan(text: str) -> list[parser.Token]:
    # The scanner is the parser's own lexer, so it accepts whatever parsed; a failure here
    # would still be reported as a rejection, never as another exception.
    try:
        return list(parser.scan(text))
    except parser.ParseError as error:
        raise _parse_error(text, error) from None


def _char_position(utf8: bytes, offset: int | None) -> int | None:
    """The 1-based character position of a byte offset the parser reported, if known."""
    if offset is None or offset < 0:
        return None
    return len(utf8[:offset].decode("utf-8", "replace")) + 1


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
