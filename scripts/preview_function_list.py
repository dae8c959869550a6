"""Builds agent/preview_function_list.py, the reviewed functions a preview may call.

The list is derived from the catalogs of real servers by the rules below, then read by a
person before it is committed (agent/preview_functions.py says how it was reviewed). A
function is listed when it is a built-in of schema pg_catalog (OID below 16384, so created by
initdb, never by an extension) and:

- it is a plain function, an aggregate or a window function (procedures need CALL);
- none of its arguments and not its result is a pseudo-type only the server itself can
  supply (``internal``, ``cstring``, handlers, triggers): such functions are planner
  support, type I/O and access-method internals, not something a query names;
- it is immutable or stable, or a volatile function reviewed as having no effect beyond its
  result (``VOLATILE_REVIEWED``: clocks, random numbers, sleeps, sizes);
- it is not excluded by name in ``EXCLUDED``, where every group says why.

Run it against each server version the agent supports; the list is the union, so a function
that exists in only one version is listed for that version. ``--check`` fails when the
committed list differs from what the servers give, which is how a new Postgres version is
reviewed: every new function shows up in the diff, refused until someone lists it here.

    PYTHONPATH=. python scripts/preview_function_list.py            # embedded + OS server
    PYTHONPATH=. python scripts/preview_function_list.py --url URL  # any server(s)
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import psycopg
from psycopg import sql

from agent.preview_functions import ARGUMENTS_SQL

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "agent" / "preview_function_list.py"

PSEUDO_TYPES: Final = frozenset(
    {
        "internal",
        "cstring",
        "trigger",
        "event_trigger",
        "language_handler",
        "fdw_handler",
        "index_am_handler",
        "table_am_handler",
        "tsm_handler",
    }
)

# Volatile built-ins whose only effect is their result (or the time they take, which the
# statement timeout bounds). Everything else volatile is left out.
VOLATILE_REVIEWED: Final = frozenset(
    {
        # clocks and randomness
        "clock_timestamp",
        "timeofday",
        "random",
        "random_normal",
        "gen_random_uuid",
        "uuidv4",
        "uuidv7",
        "array_sample",
        "array_shuffle",
        # waiting, bounded by the statement timeout
        "pg_sleep",
        "pg_sleep_for",
        "pg_sleep_until",
        # sizes and partition trees: catalog reads and stat() calls
        "pg_relation_size",
        "pg_table_size",
        "pg_indexes_size",
        "pg_total_relation_size",
        "pg_database_size",
        "pg_tablespace_size",
        "pg_partition_tree",
        "pg_partition_ancestors",
        # reads of the session's own state
        "currval",
        "lastval",
        "pg_sequence_last_value",
        "pg_is_in_recovery",
        "pg_jit_available",
    }
)

# Immutable or stable built-ins left out anyway, by group, with the reason.
EXCLUDED: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        # They run an SQL string or a query named by their arguments, which no check sees.
        "runs SQL given as text": frozenset(
            {
                "table_to_xml",
                "table_to_xmlschema",
                "table_to_xml_and_xmlschema",
                "schema_to_xml",
                "schema_to_xmlschema",
                "schema_to_xml_and_xmlschema",
                "database_to_xml",
                "database_to_xmlschema",
                "database_to_xml_and_xmlschema",
                "ts_rewrite",
            }
        ),
        # libxml2 evaluates XPath without checking for interrupts: measured on 15, a 60-byte
        # expression ran on for minutes after pg_terminate_backend.
        "evaluates XPath in libxml2, which ignores cancel and terminate": frozenset(
            {"xpath", "xpath_exists", "xmlexists", "xmlvalidate"}
        ),
        # Stable, yet each assigns a transaction id.
        "assigns a transaction id": frozenset({"txid_current", "pg_current_xact_id"}),
        # They call the input function of any type named in a text argument.
        "dispatches on a type named in text": frozenset(
            {"pg_input_is_valid", "pg_input_error_info"}
        ),
        # Server configuration and directories, and functions that only work inside event
        # triggers or as language validators.
        "reads server configuration or directories": frozenset(
            {"pg_config", "pg_tablespace_databases"}
        ),
        "belongs to event triggers or language validators": frozenset(
            {
                "pg_event_trigger_ddl_commands",
                "pg_event_trigger_dropped_objects",
                "pg_event_trigger_table_rewrite_oid",
                "pg_event_trigger_table_rewrite_reason",
                "fmgr_c_validator",
                "fmgr_internal_validator",
                "fmgr_sql_validator",
            }
        ),
    }
)

# Table sample methods are functions taking internal; these two are the built-in ones.
TABLESAMPLE_METHODS: Final = frozenset({"bernoulli(internal)", "system(internal)"})

_CATALOG_QUERY = sql.SQL("""
select p.proname::text,
       {arguments},
       p.provolatile::text,
       array(select pg_catalog.format_type(t, null)
             from pg_catalog.unnest(p.proargtypes || p.prorettype) as t)
from pg_catalog.pg_proc as p
where p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace
  and p.oid < 16384
  and p.prokind in ('f', 'a', 'w')
""").format(arguments=sql.SQL(ARGUMENTS_SQL))

# The agent does not look built-in operators up (there are sixty "=" alone): it relies on
# every one of them being implemented by a listed function, which this checks.
_OPERATOR_FUNCTIONS_QUERY = sql.SQL("""
select o.oid::pg_catalog.regoperator::text, p.proname::text || '(' || {arguments} || ')'
from pg_catalog.pg_operator as o
join pg_catalog.pg_proc as p on p.oid = o.oprcode
where o.oid < 16384
""").format(arguments=sql.SQL(ARGUMENTS_SQL))

_HEADER = '''"""Reviewed functions of pg_catalog a preview may call, as ``name(argument types)``.

Generated by scripts/preview_function_list.py from PostgreSQL {versions}; edit the script's
rules and regenerate, never this file. agent/preview_functions.py explains the review.
"""

from __future__ import annotations

import re
from typing import Final

_LISTED = """
'''

_FOOTER = '''"""

# A long signature continues on the next line after a comma.
SIGNATURES: Final = frozenset(re.sub(r",\\n +", ", ", _LISTED).strip().splitlines())
"""Each allowed function as ``name(oidvectortypes(proargtypes))``."""
'''


def signature(name: str, arguments: str) -> str:
    """The list's spelling of a function: its name and argument types."""
    return f"{name}({arguments})"


def listed(conn: psycopg.Connection[Any]) -> set[str]:
    """The signatures of one server's catalog that the rules above allow.

    Raises SystemExit when a built-in operator's function would not be listed.
    """
    excluded = set().union(*EXCLUDED.values())
    chosen = set(TABLESAMPLE_METHODS)
    for name, arguments, volatility, types in conn.execute(_CATALOG_QUERY):
        if PSEUDO_TYPES.intersection(types) or name in excluded:
            continue
        if volatility in ("i", "s") or name in VOLATILE_REVIEWED:
            chosen.add(signature(name, arguments))
    unlisted = [
        f"{operator} -> {function}"
        for operator, function in conn.execute(_OPERATOR_FUNCTIONS_QUERY)
        if function not in chosen
    ]
    if unlisted:
        raise SystemExit(f"built-in operators whose function is not listed: {unlisted}")
    return chosen


def render(signatures: set[str], versions: list[str]) -> str:
    """The module text for the list."""
    return (
        _HEADER.format(versions=" and ".join(versions))
        + "\n".join(_wrapped(s) for s in sorted(signatures))
        + "\n"
        + _FOOTER
    )


def _wrapped(signature: str, width: int = 96) -> str:
    """One signature, continued after a comma on indented lines when it is too long."""
    lines = [""]
    for piece in signature.split(", "):
        if lines[-1] and len(lines[-1]) + len(piece) + 1 > width:
            lines[-1] += ","
            lines.append("    " + piece)
        else:
            lines[-1] += (", " if lines[-1] else "") + piece
    return "\n".join(lines)


@contextlib.contextmanager
def _default_servers() -> Iterator[list[str]]:
    """The embedded server and the OS's, started for the run."""
    from devstack.postgres import EmbeddedPostgres
    from devstack.source_db import os_postgres_bin_dir

    directory = Path(tempfile.mkdtemp(prefix="sevvo-fnlist-"))
    try:
        with (
            EmbeddedPostgres(directory / "embedded", durable=False) as embedded,
            EmbeddedPostgres(
                directory / "os", durable=False, bin_dir=os_postgres_bin_dir()
            ) as system,
        ):
            yield [embedded.url, system.url]
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str]) -> int:
    """Writes (or with --check compares) the list from the given or default servers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", action="append", default=[], help="a server's superuser URL")
    parser.add_argument("--check", action="store_true", help="fail when the list is stale")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        urls = args.url or stack.enter_context(_default_servers())
        signatures: set[str] = set()
        versions = []
        for url in urls:
            with psycopg.connect(url) as conn:
                versions.append(str(conn.info.server_version // 10000))
                signatures |= listed(conn)
    text = render(signatures, sorted(versions, key=int))
    if args.check:
        current = OUTPUT.read_text()
        if current != text:
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(True), text.splitlines(True), str(OUTPUT), "servers"
                )
            )
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"{len(signatures)} functions from PostgreSQL {', '.join(versions)} -> {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
