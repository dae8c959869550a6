"""The agent's preview executor, against the session's real PostgreSQL server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from google.protobuf.json_format import MessageToDict
from hypothesis import given
from hypothesis import strategies as st
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from agent.preview_executor import run_preview, safe_text
from devstack.pki import DevPki
from devstack.postgres import EmbeddedPostgres
from devstack.processes import free_port
from sevvo.connections.v1.connections_pb2 import (
    SSL_MODE_DISABLE,
    SSL_MODE_VERIFY_FULL,
    PostgresCredentials,
)
from sevvo.runtime.outcomes import TEST_CATEGORIES
from sevvo.runtime.preview_validator import ValidatedQuery
from sevvo.workflows.v1 import workflows_pb2
from sevvo.workflows.v1.workflows_pb2 import PreviewQueryResult
from tests.plugins.postgres import with_dbname
from tests.plugins.source_db import SourceTargetFactory

OK = workflows_pb2.PREVIEW_CATEGORY_OK
QUERY_ERROR = workflows_pb2.PREVIEW_CATEGORY_QUERY_ERROR
QUERY_REJECTED = workflows_pb2.PREVIEW_CATEGORY_QUERY_REJECTED


@dataclass(frozen=True)
class Reader:
    """A login role created for one test, and what a stored connection would hold for it."""

    name: str
    password: str
    host: str
    port: int
    database: str

    def credentials(self, **overrides: Any) -> PostgresCredentials:
        """Stored credentials for this role, plaintext (the test server has no TLS)."""
        fields: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "database": self.database,
            "username": self.name,
            "password": self.password,
            "ssl_mode": SSL_MODE_DISABLE,
        }
        return PostgresCredentials(**(fields | overrides))


def create_reader(server_url: str, database: str) -> Reader:
    """Create a login role whose own settings differ from the defaults a preview relies on.

    The preview must override them: dates in SQL style with day first, bytea in the escape
    format, no statement timeout.
    """
    name = f"preview_{uuid.uuid4().hex[:12]}"
    password = secrets.token_urlsafe(18)
    role = sql.Identifier(name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(password))
        )
        for setting, value in [
            ("DateStyle", "SQL, DMY"),
            ("bytea_output", "escape"),
            ("statement_timeout", "0"),
            ("TimeZone", "UTC"),
        ]:
            conn.execute(
                sql.SQL("ALTER ROLE {} SET {} = {}").format(
                    role, sql.Identifier(setting), sql.Literal(value)
                )
            )
    server = conninfo_to_dict(server_url)
    return Reader(name, password, str(server["host"]), int(str(server["port"])), database)


def drop_reader(server_url: str, database_url: str, reader: Reader) -> None:
    """Drop the role and the privileges it was granted in the test's database."""
    role = sql.Identifier(reader.name)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))


def database_name(url: str) -> str:
    """The database a DSN points at."""
    return str(conninfo_to_dict(url)["dbname"])


@pytest.fixture
def reader(pg_server_url: str, database_url: str) -> Iterator[Reader]:
    """A login role for the test's database, dropped after the test."""
    role = create_reader(pg_server_url, database_name(database_url))
    yield role
    drop_reader(pg_server_url, database_url, role)


@pytest.fixture
def admin(database_url: str) -> Callable[..., list[tuple[Any, ...]]]:
    """Run SQL as the superuser in the test's database; return the last statement's rows."""

    def run(
        query: str | sql.Composed, params: tuple[Any, ...] | None = None
    ) -> list[tuple[Any, ...]]:
        with psycopg.connect(database_url, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    return run


def preview(credentials: PostgresCredentials, statement: str, **kwargs: Any) -> PreviewQueryResult:
    """Run the async preview from a sync test (this suite has no asyncio plugin).

    The statement goes to the executor as it is, with no call sites to check: these tests
    are about the executor's own bounds, which must hold without the validator.
    """
    return asyncio.run(run_preview(credentials, ValidatedQuery(statement), **kwargs))


def texts(result: PreviewQueryResult) -> list[list[str]]:
    """The result's cells as text, row by row."""
    return [[cell.text for cell in row.cells] for row in result.rows]


def assert_strict_json(result: PreviewQueryResult) -> None:
    """The result serialises to strict JSON and to strict UTF-8 (no lone surrogates)."""
    encoded = json.dumps(MessageToDict(result), allow_nan=False, ensure_ascii=False)
    encoded.encode("utf-8")  # raises UnicodeEncodeError on a lone surrogate
    json.loads(encoded)


def assert_error(
    result: PreviewQueryResult,
    category: workflows_pb2.PreviewCategory,
    sqlstate: str,
    message: str,
) -> None:
    """The result is an error with this category, SQLSTATE and message, and no rows."""
    assert workflows_pb2.PreviewCategory.Name(result.category) == (
        workflows_pb2.PreviewCategory.Name(category)
    )
    assert (result.sqlstate, result.message) == (sqlstate, message)
    assert not result.rows
    assert not result.columns


# --- rows -----------------------------------------------------------------------------


def test_rows_past_max_rows_are_dropped_and_flagged(
    reader: Reader, admin: Callable[..., Any]
) -> None:
    """A 150-row table returns its first 100 rows and truncated=True."""
    admin("create table t as select n from generate_series(1, 150) as n")
    admin(sql.SQL("grant select on t to {}").format(sql.Identifier(reader.name)))

    result = preview(reader.credentials(), "select n from t order by n")

    assert result.category == OK
    assert texts(result) == [[str(n)] for n in range(1, 101)]
    assert result.truncated


def test_exactly_max_rows_is_not_truncated(reader: Reader) -> None:
    """Exactly 100 rows come back whole, with truncated=False."""
    result = preview(reader.credentials(), "select n from generate_series(1, 100) as n")

    assert len(result.rows) == 100
    assert not result.truncated


def test_no_rows_returns_the_columns(reader: Reader) -> None:
    """A query without rows is OK and still describes its columns."""
    result = preview(reader.credentials(), "select 1 as one, 'x' as two where false")

    assert result.category == OK
    assert [(c.name, c.type_name) for c in result.columns] == [
        ("one", "integer"),
        ("two", "text"),
    ]
    assert not result.rows
    assert not result.truncated


def test_a_trailing_line_comment_cannot_swallow_the_limit(reader: Reader) -> None:
    """A statement ending in a "--" comment is still limited to 100 rows."""
    result = preview(
        reader.credentials(), "select n from generate_series(1, 150) as n -- all of them"
    )

    assert len(result.rows) == 100
    assert result.truncated


def test_a_trailing_semicolon_is_accepted(reader: Reader) -> None:
    """A statement ending in a semicolon and blank space runs like one without."""
    result = preview(reader.credentials(), "select 1 ; \n")

    assert texts(result) == [["1"]]


def test_percent_signs_and_braces_reach_the_server_untouched(reader: Reader) -> None:
    """The statement is never treated as a template: "%" and "{}" mean what SQL says."""
    result = preview(reader.credentials(), 'select \'100%\' as "{p}", 7 % 4 as "%s"')

    assert [c.name for c in result.columns] == ["{p}", "%s"]
    assert texts(result) == [["100%", "3"]]


# --- cells and columns ----------------------------------------------------------------


class Relay:
    """A TCP relay to the Postgres server that counts the bytes the server sends back.

    With ``mute_after``, once the client sends bytes containing it on a connection, the
    server's replies on that connection are dropped: a server that stops answering.
    """

    def __init__(self, host: str, port: int, *, mute_after: bytes | None = None) -> None:
        self._upstream = (host, port)
        self._mute_after = mute_after
        self._server: asyncio.Server | None = None
        self._relays: list[asyncio.Task[None]] = []
        self.received = 0
        self.port = 0

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        await asyncio.gather(*self._relays)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.append(task)
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        muted = asyncio.Event()
        await asyncio.gather(
            self._pipe(reader, up_writer, muted, upstream=True),
            self._pipe(up_reader, writer, muted, upstream=False),
        )

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        muted: asyncio.Event,
        *,
        upstream: bool,
    ) -> None:
        try:
            while data := await source.read(65536):
                if upstream and self._mute_after is not None and self._mute_after in data:
                    muted.set()
                if not upstream:
                    if muted.is_set():
                        continue
                    self.received += len(data)
                sink.write(data)
                await sink.drain()
        except ConnectionError:
            pass
        finally:
            sink.close()
            with contextlib.suppress(ConnectionError):
                await sink.wait_closed()


def wait_for_no_sessions(server_url: str, role: str) -> int:
    """Wait up to 5 s for the role's sessions to end; return how many remain."""
    # A backend exits just after its client's Terminate message or disconnection.
    deadline = time.monotonic() + 5
    with psycopg.connect(server_url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "select count(*) from pg_stat_activity where usename = %s", (role,)
            ).fetchone()
            assert row is not None
            if row[0] == 0 or time.monotonic() > deadline:
                return int(row[0])
            time.sleep(0.02)


def test_a_50_mb_cell_is_cut_by_the_server(reader: Reader) -> None:
    """A 50 MB value arrives as 1025 characters: the agent receives kilobytes, not megabytes."""

    async def run() -> tuple[PreviewQueryResult, int]:
        async with Relay(reader.host, reader.port) as proxy:
            result = await run_preview(
                reader.credentials(host="127.0.0.1", port=proxy.port),
                ValidatedQuery("select repeat('x', 50 * 1024 * 1024) as big"),
            )
        return result, proxy.received

    result, received = asyncio.run(run())

    assert result.category == OK
    (cell,) = result.rows[0].cells
    assert (cell.text, cell.truncated) == ("x" * 1024, True)
    # The whole session — authentication, settings, describe, types and the row.
    assert received < 16 * 1024


def test_a_value_of_exactly_max_cell_chars_is_not_truncated(reader: Reader) -> None:
    """A 1024-character value comes back whole, with truncated=False."""
    result = preview(reader.credentials(), "select repeat('é', 1024)")

    (cell,) = result.rows[0].cells
    assert (cell.text, cell.truncated) == ("é" * 1024, False)


def test_duplicate_column_names_are_kept_by_position(reader: Reader) -> None:
    """Columns with the same name stay distinct, in order, each with its own type."""
    result = preview(reader.credentials(), "select 1 as a, 'two'::text as a, 3.5 as a")

    assert [(c.name, c.type_name) for c in result.columns] == [
        ("a", "integer"),
        ("a", "text"),
        ("a", "numeric"),
    ]
    assert texts(result) == [["1", "two", "3.5"]]


def test_columns_past_max_columns_are_dropped_and_flagged(reader: Reader) -> None:
    """Only the first max_columns columns come back, with columns_truncated=True.

    The third column is named like the executor's own positional aliases, which must not
    make the first reference ambiguous.
    """
    result = preview(reader.credentials(), "select 1 as a, 2 as b, 3 as c1", max_columns=2)

    assert [c.name for c in result.columns] == ["a", "b"]
    assert texts(result) == [["1", "2"]]
    assert result.columns_truncated


def test_a_query_without_columns_returns_rows_without_cells(reader: Reader) -> None:
    """ "select from" has rows but no columns; each row comes back empty."""
    result = preview(reader.credentials(), "select from generate_series(1, 3)")

    assert result.category == OK
    assert not result.columns
    assert len(result.rows) == 3
    assert all(not row.cells for row in result.rows)


# Each value type's Postgres text form: (expression, format_type() name, text).
# Run as one preview with the role's own DateStyle, bytea_output and TimeZone overridden.
TYPE_CASES: list[tuple[str, str, str]] = [
    ("'NaN'::numeric", "numeric", "NaN"),
    ("'Infinity'::numeric", "numeric", "Infinity"),
    ("'-Infinity'::numeric", "numeric", "-Infinity"),
    ("1e1000::numeric", "numeric", "1" + "0" * 1000),
    ("'NaN'::float8", "double precision", "NaN"),
    ("'Infinity'::float8", "double precision", "Infinity"),
    ("'-Infinity'::float4", "real", "-Infinity"),
    ("0.1::float8", "double precision", "0.1"),
    ("9223372036854775807::bigint", "bigint", "9223372036854775807"),
    ("true", "boolean", "true"),
    # The role's DateStyle reads this as day 2 of January and would print 02/01/2024.
    ("'02/01/2024'::date", "date", "2024-01-02"),
    ("'infinity'::date", "date", "infinity"),
    ("'-infinity'::timestamp", "timestamp without time zone", "-infinity"),
    ("'2024-01-02 03:04:05+00'::timestamptz", "timestamp with time zone", "2024-01-02 03:04:05+00"),
    ("'04:05:06.789'::time", "time without time zone", "04:05:06.789"),
    ("'1 year 2 mons 3 days 04:05:06'::interval", "interval", "1 year 2 mons 3 days 04:05:06"),
    ("int4range(1, 5)", "int4range", "[1,5)"),
    ("'empty'::numrange", "numrange", "empty"),
    ("int4multirange(int4range(1, 3), int4range(5, 7))", "int4multirange", "{[1,3),[5,7)}"),
    ('\'{"b": 1,  "a": [1, null]}\'::json', "json", '{"b": 1,  "a": [1, null]}'),
    ('\'{"b": 1,  "a": [1, null]}\'::jsonb', "jsonb", '{"a": [1, null], "b": 1}'),
    ("array[1, null, 3]", "integer[]", "{1,NULL,3}"),
    ("array['a b', 'c\"d']", "text[]", '{"a b","c\\"d"}'),
    ("'\\x00ff'::bytea", "bytea", "\\x00ff"),
    (
        "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid",
        "uuid",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    ),
    ("'192.168.0.1/24'::inet", "inet", "192.168.0.1/24"),
    ("'10.0.0.0/8'::cidr", "cidr", "10.0.0.0/8"),
    ("'08:00:2b:01:02:03'::macaddr", "macaddr", "08:00:2b:01:02:03"),
    ("B'101'", "bit", "101"),
    ("B'10'::varbit", "bit varying", "10"),
    ("1.5::money", "money", "$1.50"),
    ("'a fat cat'::tsvector", "tsvector", "'a' 'cat' 'fat'"),
    ("'(1,2)'::point", "point", "(1,2)"),
    ("'((0,0),(1,1))'::box", "box", "(1,1),(0,0)"),
    ("'((0,0),(1,0),(0,1))'::polygon", "polygon", "((0,0),(1,0),(0,1))"),
    ("'happy'::mood", "mood", "happy"),
    ("row(1, 'a b')::pair", "pair", '(1,"a b")'),
    ("row(1, 'x')", "record", "(1,x)"),
    # RowDescription carries a domain's base type, so that is the name shown.
    ("5::positive", "integer", "5"),
    ("1259::oid", "oid", "1259"),
    ("'pg_class'::regclass", "regclass", "pg_class"),
    ("'0/16B6C50'::pg_lsn", "pg_lsn", "0/16B6C50"),
    ("'naïve 😀'::text", "text", "naïve 😀"),
]


@pytest.fixture(scope="module")
def all_types(pg_server_url: str) -> Iterator[PreviewQueryResult]:
    """One preview selecting every case of TYPE_CASES and a NULL, in a database of its own."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_dbname(pg_server_url, name)
    role = create_reader(pg_server_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create type mood as enum ('sad', 'happy')")
            conn.execute("create type pair as (n integer, s text)")
            conn.execute("create domain positive as integer check (value > 0)")
        columns = [
            f"{expression} as t{index}" for index, (expression, _, _) in enumerate(TYPE_CASES)
        ]
        statement = "select " + ", ".join([*columns, "null::integer as nothing"])
        yield preview(role.credentials(), statement)
    finally:
        drop_reader(pg_server_url, url, role)
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.mark.parametrize(
    ("index", "type_name", "text"),
    [(index, type_name, text) for index, (_, type_name, text) in enumerate(TYPE_CASES)],
    ids=[expression for expression, _, _ in TYPE_CASES],
)
def test_each_type_renders_as_its_postgres_text_form(
    all_types: PreviewQueryResult, index: int, type_name: str, text: str
) -> None:
    """A value of each type comes back as Postgres prints it, with the type's name."""
    assert all_types.category == OK, all_types.message
    assert all_types.columns[index].type_name == type_name
    cell = all_types.rows[0].cells[index]
    assert (cell.text, cell.is_null, cell.truncated) == (text, False, False)


def test_null_is_flagged_not_rendered(all_types: PreviewQueryResult) -> None:
    """SQL NULL is is_null=True with empty text, and keeps its column's type."""
    assert all_types.columns[-1].type_name == "integer"
    cell = all_types.rows[0].cells[-1]
    assert (cell.text, cell.is_null, cell.truncated) == ("", True, False)


def test_every_type_serialises_to_strict_json(all_types: PreviewQueryResult) -> None:
    """The whole result of every type is strict JSON: no NaN literals, no lone surrogates."""
    assert_strict_json(all_types)


def test_a_numeric_longer_than_a_cell_is_cut(reader: Reader) -> None:
    """A numeric with more than 1024 digits comes back as its first 1024, truncated."""
    result = preview(reader.credentials(), "select 10::numeric ^ 1100")

    (cell,) = result.rows[0].cells
    assert (cell.text, cell.truncated) == ("1" + "0" * 1023, True)


@pytest.mark.parametrize(
    ("host", "category"),
    [
        ("localhost", OK),
        # The server's certificate names localhost and no IP address.
        ("127.0.0.1", workflows_pb2.PREVIEW_CATEGORY_SSL_CERTIFICATE_UNVERIFIED),
    ],
    ids=["name-in-certificate", "address-not-in-certificate"],
)
def test_a_preview_verifies_the_server_as_the_credential_test_does(
    host: str,
    category: workflows_pb2.PreviewCategory,
    tls_source_pg: EmbeddedPostgres,
    source_target: SourceTargetFactory,
    dev_pki: DevPki,
) -> None:
    """verify-full previews run against a server whose certificate names the host, and fail
    with the credential test's category and sentence against one that does not."""
    source = source_target(tls_source_pg)
    credentials = PostgresCredentials(
        host=host,
        port=source.port,
        database=source.database,
        username=source.reader,
        password=source.reader_password,
        ssl_mode=SSL_MODE_VERIFY_FULL,
        ssl_root_cert=dev_pki.ca_cert.read_text(),
    )

    result = preview(credentials, "select count(*) from customers")

    if category == OK:
        assert (result.category, texts(result)) == (OK, [["50"]])
    else:
        hint = TEST_CATEGORIES.message(workflows_pb2.TEST_CATEGORY_SSL_CERTIFICATE_UNVERIFIED)
        assert_error(result, category, "", hint)


def test_xml_renders_as_text(tls_source_pg: EmbeddedPostgres) -> None:
    """An xml value comes back as its text.

    Runs on the OS's PostgreSQL: the embedded server is built without libxml.
    """
    xml_reader = create_reader(tls_source_pg.url, "postgres")
    try:
        result = preview(xml_reader.credentials(), "select '<a b=\"1\">x</a>'::xml")
    finally:
        drop_reader(tls_source_pg.url, tls_source_pg.url, xml_reader)

    assert result.columns[0].type_name == "xml"
    assert texts(result) == [['<a b="1">x</a>']]


def test_control_characters_ansi_escapes_and_bidi_overrides_are_escaped(reader: Reader) -> None:
    """Terminal-control and invisible characters come back as visible escapes."""
    value = (
        "E'\\x1b[31mred\\x1b[0m' || chr(8238) || 'evil' || chr(8203) || chr(155)"
        " || chr(127) || E'\\t\\n\\r' || chr(65279) || chr(917569) || chr(8233)"
    )
    result = preview(reader.credentials(), f'select {value} as "name{chr(0x2066)}"')

    assert result.columns[0].name == "name\\u2066"
    assert texts(result) == [
        ["\\x1b[31mred\\x1b[0m\\u202eevil\\u200b\\x9b\\x7f\\t\\n\\r\\ufeff\\U000e0041\\u2029"]
    ]
    assert_strict_json(result)


def test_escapes_count_towards_the_cell_limit(reader: Reader) -> None:
    """A cell never exceeds max_cell_chars, escapes included, and is cut between escapes."""
    result = preview(reader.credentials(), "select repeat(chr(27), 5)", max_cell_chars=10)

    (cell,) = result.rows[0].cells
    assert (cell.text, cell.truncated) == ("\\x1b\\x1b", True)


@given(text=st.text(), max_chars=st.integers(min_value=1, max_value=50))
def test_safe_text_output_is_bounded_printable_and_strict_utf8(text: str, max_chars: int) -> None:
    """For any input, the output is at most max_chars long, printable and valid UTF-8."""
    output, cut = safe_text(text, max_chars)

    assert len(output) <= max_chars
    assert all(ch.isprintable() or unicodedata.category(ch) == "Zs" for ch in output)
    output.encode("utf-8")
    if not cut:
        assert len(text) <= len(output)
    if text.isprintable() and len(text) <= max_chars:
        assert (output, cut) == (text, False)


@pytest.fixture
def sql_ascii_reader(pg_server_url: str) -> Iterator[Reader]:
    """A login role for a new SQL_ASCII database, which stores bytes without checking them."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                # LOCALE sets every provider's locale; the builtin provider's default,
                # C.UTF-8, would not match the encoding.
                "CREATE DATABASE {} WITH ENCODING 'SQL_ASCII' TEMPLATE template0 LOCALE 'C'"
            ).format(sql.Identifier(name))
        )
    url = with_dbname(pg_server_url, name)
    role = create_reader(pg_server_url, name)
    yield role
    drop_reader(pg_server_url, url, role)
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def test_invalid_utf8_is_replaced_not_fatal(sql_ascii_reader: Reader) -> None:
    """Bytes that are not UTF-8 come back as replacement characters."""
    result = preview(sql_ascii_reader.credentials(), "select E'ok\\xff\\xfe' as v")

    assert result.category == OK
    assert texts(result) == [["ok\ufffd\ufffd"]]
    assert_strict_json(result)


def test_error_positions_on_a_sql_ascii_database_count_characters(
    sql_ascii_reader: Reader,
) -> None:
    """The server counts bytes there; the position reported is still in characters."""
    result = preview(sql_ascii_reader.credentials(), "select 'é', missing_column")

    assert (result.sqlstate, result.position) == ("42703", 13)


# --- errors ---------------------------------------------------------------------------


def test_a_long_query_times_out_and_leaves_no_backend(reader: Reader, pg_server_url: str) -> None:
    """pg_sleep(60) is QUERY_TIMEOUT after the 10 s statement timeout; no session remains."""
    started = time.monotonic()
    result = preview(reader.credentials(), "select pg_sleep(60)")
    elapsed = time.monotonic() - started

    assert_error(
        result,
        workflows_pb2.PREVIEW_CATEGORY_QUERY_TIMEOUT,
        "57014",
        "the query ran longer than 10 s and was cancelled",
    )
    assert 10 <= elapsed < 11
    assert result.duration_ms >= 10_000
    assert wait_for_no_sessions(pg_server_url, reader.name) == 0


def test_a_server_that_stops_answering_times_out_on_the_agent(
    reader: Reader, pg_server_url: str
) -> None:
    """With no reply at all, the agent ends the session from a second connection a second
    after the statement timeout, and hangs up; the server's session ends with it."""

    async def run() -> PreviewQueryResult:
        async with Relay(reader.host, reader.port, mute_after=b"preview_query") as relay:
            return await run_preview(
                reader.credentials(host="127.0.0.1", port=relay.port),
                ValidatedQuery("select 1"),
                statement_timeout_ms=500,
                connect_timeout=1,
            )

    started = time.monotonic()
    result = asyncio.run(run())
    elapsed = time.monotonic() - started

    assert_error(
        result,
        workflows_pb2.PREVIEW_CATEGORY_QUERY_TIMEOUT,
        "",
        "the query ran longer than 0.5 s and did not stop when cancelled (or the server"
        " stopped answering), so the agent ended its database session",
    )
    assert result.receipt.backend_terminated
    assert 1.5 <= elapsed < 4
    assert wait_for_no_sessions(pg_server_url, reader.name) == 0


def test_a_locked_table_fails_after_the_lock_timeout(
    reader: Reader, admin: Callable[..., Any], database_url: str
) -> None:
    """A table held in ACCESS EXCLUSIVE mode fails with 55P03 after 2 s, not 10."""
    admin("create table t (n integer)")
    admin(sql.SQL("grant select on t to {}").format(sql.Identifier(reader.name)))
    with psycopg.connect(database_url) as holder:
        holder.execute("lock table t in access exclusive mode")
        started = time.monotonic()
        result = preview(reader.credentials(), "select * from t")
        elapsed = time.monotonic() - started
        holder.rollback()

    assert_error(result, QUERY_ERROR, "55P03", "canceling statement due to lock timeout")
    assert 2 <= elapsed < 4


def test_a_table_the_role_cannot_read_is_permission_denied(
    reader: Reader, admin: Callable[..., Any]
) -> None:
    """Reading a table without SELECT is PERMISSION_DENIED, naming the table."""
    admin("create table payroll (salary integer)")

    result = preview(reader.credentials(), "select * from payroll")

    assert_error(
        result,
        workflows_pb2.PREVIEW_CATEGORY_PERMISSION_DENIED,
        "42501",
        "permission denied for table payroll",
    )


@pytest.mark.parametrize(
    ("statement", "sqlstate", "message", "position"),
    [
        ("select 1 / 0", "22012", "division by zero", 0),
        ("select missing_column", "42703", 'column "missing_column" does not exist', 8),
        # The server's DETAIL ("Unexpected end of input.") stays on the agent.
        ("select '{1,2'::int[]", "22P02", 'malformed array literal: "{1,2"', 8),
        # DETAIL and CONTEXT quote the JSON text; only the primary message leaves.
        ("select '{\"secret_key\": }'::json", "22P02", "invalid input syntax for type json", 8),
        # The HINT ("No function matches ...") stays on the agent.
        ("select no_such_function()", "42883", "function no_such_function() does not exist", 8),
        (
            "select (select 1 union select 2)",
            "21000",
            "more than one row returned by a subquery used as an expression",
            0,
        ),
        # An error at the end of the statement points just past it.
        ("select (1", "42601", "syntax error at end of input", 10),
    ],
    ids=lambda value: value if isinstance(value, str) and value.startswith("select") else "",
)
def test_database_errors_carry_sqlstate_primary_message_and_position_only(
    reader: Reader, statement: str, sqlstate: str, message: str, position: int
) -> None:
    """A database error is QUERY_ERROR with its SQLSTATE, primary message and position."""
    result = preview(reader.credentials(), statement)

    assert_error(result, QUERY_ERROR, sqlstate, message)
    assert result.position == position


@pytest.mark.parametrize(
    ("statement", "category", "sqlstate", "message"),
    [
        # What the validator should refuse, passed straight to the executor.
        (
            "insert into t values (2) returning n",
            QUERY_ERROR,
            "42601",
            'syntax error at or near "into"',
        ),
        (
            "with gone as (delete from t returning n) select * from gone",
            QUERY_ERROR,
            "0A000",
            "WITH clause containing a data-modifying statement must be at the top level",
        ),
        ("select 1; delete from t", QUERY_ERROR, "42601", 'syntax error at or near ";"'),
        # Escaping the wrapper's parentheses makes three statements, which the extended
        # query protocol refuses.
        (
            "select 1) as x; delete from t; select * from (select 1",
            QUERY_ERROR,
            "42601",
            "cannot insert multiple commands into a prepared statement",
        ),
        (
            "select nextval('s')",
            QUERY_REJECTED,
            "25006",
            "the query tried to write: previews run in a read-only transaction",
        ),
        (
            "select * from t, lateral (select set_config('transaction_read_only', 'off', false))"
            " as x",
            QUERY_ERROR,
            "25001",
            # The preview's savepoint makes this a subtransaction, which cannot change it.
            "cannot set transaction read-write mode inside a read-only transaction",
        ),
    ],
    ids=["insert", "with-delete", "two-statements", "escaped-parentheses", "nextval", "set-rw"],
)
def test_writing_is_impossible_even_without_the_validator(
    reader: Reader,
    admin: Callable[..., list[tuple[Any, ...]]],
    statement: str,
    category: workflows_pb2.PreviewCategory,
    sqlstate: str,
    message: str,
) -> None:
    """A role allowed to write still cannot: the statement fails and nothing changes."""
    admin("create table t (n integer); insert into t values (1); create sequence s")
    admin(
        sql.SQL(
            "grant select, insert, delete on t to {0}; grant usage on sequence s to {0}"
        ).format(sql.Identifier(reader.name))
    )

    result = preview(reader.credentials(), statement)

    assert_error(result, category, sqlstate, message)
    assert admin("select n from t") == [(1,)]
    assert admin("select is_called from s") == [(False,)]


def test_a_statement_with_a_nul_is_rejected_without_connecting(
    reader: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libpq would cut the query at a NUL, wrapper and LIMIT included; it is refused first."""

    async def refuse_to_connect(*args: object, **kwargs: object) -> None:
        raise AssertionError("the executor connected with a NUL in the statement")

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", refuse_to_connect)

    result = preview(reader.credentials(), "select * from t) as x --\0")

    assert_error(result, QUERY_REJECTED, "", "the query contains a NUL character")


@pytest.mark.parametrize(
    "limit", ["max_rows", "max_cell_chars", "max_columns", "statement_timeout_ms"]
)
def test_limits_below_one_are_a_programming_error(reader: Reader, limit: str) -> None:
    """A limit of zero is refused before anything is dialled."""
    with pytest.raises(ValueError, match=limit):
        preview(reader.credentials(), "select 1", **{limit: 0})


@pytest.mark.parametrize(
    ("overrides", "test_category", "preview_category"),
    [
        (
            {"password": "wrong-" + secrets.token_urlsafe(12)},
            workflows_pb2.TEST_CATEGORY_PASSWORD_AUTHENTICATION_FAILED,
            workflows_pb2.PREVIEW_CATEGORY_PASSWORD_AUTHENTICATION_FAILED,
        ),
        (
            {"port": "a free port"},
            workflows_pb2.TEST_CATEGORY_CONNECTION_REFUSED_OR_TIMEOUT,
            workflows_pb2.PREVIEW_CATEGORY_CONNECTION_REFUSED_OR_TIMEOUT,
        ),
        (
            {"database": f"missing_{uuid.uuid4().hex[:12]}"},
            workflows_pb2.TEST_CATEGORY_DATABASE_DOES_NOT_EXIST,
            workflows_pb2.PREVIEW_CATEGORY_DATABASE_DOES_NOT_EXIST,
        ),
        (
            {"host": ""},
            workflows_pb2.TEST_CATEGORY_INVALID_STORED_CREDENTIALS,
            workflows_pb2.PREVIEW_CATEGORY_INVALID_STORED_CREDENTIALS,
        ),
    ],
    ids=["wrong-password", "closed-port", "missing-database", "invalid"],
)
def test_connection_failures_get_the_credential_test_categories(
    reader: Reader,
    overrides: dict[str, Any],
    test_category: workflows_pb2.TestCategory,
    preview_category: workflows_pb2.PreviewCategory,
) -> None:
    """A failure to connect gets the credential test's category and its fixed sentence."""
    if overrides.get("port") == "a free port":
        overrides = {"port": free_port()}
    credentials = reader.credentials(**overrides)

    result = preview(credentials, "select 1")

    assert_error(result, preview_category, "", TEST_CATEGORIES.message(test_category))
    assert credentials.password not in result.message
