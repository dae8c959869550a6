"""Preview query: run one validated SELECT on a customer's database, read-only and bounded.

This is the one path where rows leave the customer's perimeter (DESIGN.md, "Preview query
contract"), so every bound is enforced where it is cheapest to enforce and again where it
cannot be bypassed:

- The statement runs in a ``READ ONLY`` transaction that is never committed, under
  ``statement_timeout``, ``lock_timeout`` and ``idle_in_transaction_session_timeout``.
- Every statement that carries the user's text goes through the extended query protocol,
  whose Parse message holds exactly one statement: the server itself refuses ``select 1;
  delete from t`` ("cannot insert multiple commands into a prepared statement"). psycopg
  sends a query without parameters through the simple protocol, which would run both, so
  these statements use a binary cursor: the simple protocol's Query message has no result
  format, so psycopg must use Parse/Bind/Execute to ask for binary results.
- Rows and cell lengths are cut by the server, so a 50 MB value never crosses the wire:
  the columns are described first (``select * from (<sql>) as preview_query limit 0``, which
  plans the statement but fetches nothing), then the rows are read through
  ``select left(c1::text, 1025), ... from (<sql>) as preview_query(c1, ...) limit 101``.
  (A protocol-level Describe would skip planning the statement twice, but psycopg's public
  API has no describe-only call for async connections; planning is cheap next to the
  statement timeout.) The same bounds are applied again on the agent, so a statement that
  escaped the wrapper's parentheses could cost bandwidth and memory, never a larger result.
- Each cell is decoded leniently (a SQL_ASCII database returns whatever bytes it stores),
  cut, and stripped of anything a terminal or a JSON parser could trip over.

Errors follow the data boundary: a category, the SQLSTATE and the server's primary message
only, never its DETAIL, HINT or CONTEXT, the credentials or the host.
"""

from __future__ import annotations

import asyncio
import re
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import psycopg
from psycopg import pq, sql
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.pq.abc import PGresult
from psycopg.rows import TupleRow

from agent import postgres_probe
from sevvo.connections.v1 import connections_pb2
from sevvo.workflows.v1 import workflows_pb2

# Temporal refuses payloads over 2 MB by default; encryption adds a little.
MAX_RESULT_BYTES: Final = 1_500_000
LOCK_TIMEOUT: Final = "2s"
"""How long the preview waits for a lock (a table being altered, say) before giving up."""

IDLE_IN_TRANSACTION_TIMEOUT: Final = "15s"
"""How long the server keeps the preview's transaction if the agent stops talking to it."""

MAX_MESSAGE_CHARS: Final = 1024
"""The longest error message sent upstream (a primary message can quote a long input)."""

_OK = workflows_pb2.PREVIEW_CATEGORY_OK
_QUERY_REJECTED = workflows_pb2.PREVIEW_CATEGORY_QUERY_REJECTED
_QUERY_TIMEOUT = workflows_pb2.PREVIEW_CATEGORY_QUERY_TIMEOUT
_PERMISSION_DENIED = workflows_pb2.PREVIEW_CATEGORY_PERMISSION_DENIED
_QUERY_ERROR = workflows_pb2.PREVIEW_CATEGORY_QUERY_ERROR
_INVALID_STORED_CREDENTIALS = workflows_pb2.PREVIEW_CATEGORY_INVALID_STORED_CREDENTIALS
_OTHER = workflows_pb2.PREVIEW_CATEGORY_OTHER

# A failure to connect is the credential test's failure, so it gets the credential test's
# category and fixed sentence (postgres_probe.CATEGORY_HINTS).
_CONNECTION_CATEGORIES: Final[Mapping[int, workflows_pb2.PreviewCategory]] = MappingProxyType(
    {
        workflows_pb2.TEST_CATEGORY_CONNECTION_REFUSED_OR_TIMEOUT: (
            workflows_pb2.PREVIEW_CATEGORY_CONNECTION_REFUSED_OR_TIMEOUT
        ),
        workflows_pb2.TEST_CATEGORY_PASSWORD_AUTHENTICATION_FAILED: (
            workflows_pb2.PREVIEW_CATEGORY_PASSWORD_AUTHENTICATION_FAILED
        ),
        workflows_pb2.TEST_CATEGORY_SSL_REQUIRED_NOT_OFFERED: (
            workflows_pb2.PREVIEW_CATEGORY_SSL_REQUIRED_NOT_OFFERED
        ),
        workflows_pb2.TEST_CATEGORY_DATABASE_DOES_NOT_EXIST: (
            workflows_pb2.PREVIEW_CATEGORY_DATABASE_DOES_NOT_EXIST
        ),
        # At connection time this is a missing CONNECT privilege on the database.
        workflows_pb2.TEST_CATEGORY_PERMISSION_DENIED: _PERMISSION_DENIED,
        workflows_pb2.TEST_CATEGORY_INVALID_STORED_CREDENTIALS: _INVALID_STORED_CREDENTIALS,
    }
)

_OK_MESSAGE: Final = "the query ran"
_WRITE_MESSAGE: Final = "the query tried to write: previews run in a read-only transaction"
_NUL_MESSAGE: Final = "the query contains a NUL character"
_OTHER_MESSAGE: Final = (
    "the preview failed for another reason — run the query from the agent's host with psql"
    " using the same credentials and check the server's log"
)
_NO_MESSAGE: Final = "the database reported an error without a message"

# SQLSTATEs with a category of their own (psycopg names one exception class per code).
_QUERY_CANCELED: Final = "57014"  # errors.QueryCanceled: statement_timeout fired
_INSUFFICIENT_PRIVILEGE: Final = "42501"  # errors.InsufficientPrivilege
_READ_ONLY_SQL_TRANSACTION: Final = "25006"  # errors.ReadOnlySqlTransaction
_CONNECTION_EXCEPTION_CLASS: Final = "08"

# What may end a statement without changing it; the wrapper supplies its own ending.
_TRAILING_TERMINATORS: Final = re.compile(r"[\s;]+\Z")

# Escapes that read better than their \xNN form.
_NAMED_ESCAPES: Final[Mapping[str, str]] = MappingProxyType({"\t": "\\t", "\n": "\\n", "\r": "\\r"})


@dataclass(frozen=True, slots=True)
class _Limits:
    """The bounds of one preview, checked once."""

    max_rows: int
    max_cell_chars: int
    max_columns: int
    statement_timeout_ms: int


@dataclass(frozen=True, slots=True)
class _Wrapped:
    """The user's statement inside one of our wrappers, and where it starts in it."""

    query: bytes
    prefix_chars: int
    statement: str

    def statement_position(self, reported: int, *, counts_bytes: bool) -> int:
        """Translate a 1-based position in the wrapped query to one in the user's statement.

        A position inside the wrapper's opening is 0 (none); one in its closing part means
        the statement ended too early, so it points just past the statement's end. A
        SQL_ASCII server counts bytes, not characters.
        """
        offset = reported - self.prefix_chars
        if offset < 1:
            return 0
        if counts_bytes:
            encoded = self.statement.encode()
            if offset > len(encoded):
                return len(self.statement) + 1
            return len(encoded[: offset - 1].decode(errors="ignore")) + 1
        return min(offset, len(self.statement) + 1)


class _StatementError(Exception):
    """A database error raised by a wrapped statement, with its position in the user's text."""

    def __init__(self, error: psycopg.Error, position: int) -> None:
        super().__init__(error)
        self.error = error
        self.position = position


class _RawTextLoader(Loader):
    """Load text as the bytes the server sent, so invalid UTF-8 is handled here, leniently."""

    format = pq.Format.TEXT

    def load(self, data: Buffer) -> bytes:
        return bytes(data)


class _RawTextBinaryLoader(_RawTextLoader):
    """The binary form of text is its bytes too."""

    format = pq.Format.BINARY


async def run_preview(
    credentials: connections_pb2.PostgresCredentials,
    statement: str,
    *,
    max_rows: int = 100,
    max_cell_chars: int = 1024,
    max_columns: int = 100,
    statement_timeout_ms: int = 10_000,
    connect_timeout: float = 10.0,
) -> workflows_pb2.PreviewQueryResult:
    """Run ``statement`` read-only with ``credentials`` and return at most ``max_rows`` rows.

    ``statement`` must already have passed agent.preview_validator: one SELECT or WITH
    statement. It is run inside a wrapper, so a trailing semicolon is dropped. At most
    ``max_columns`` columns are returned (``columns_truncated`` says when there were more),
    at most ``max_rows`` rows (``truncated`` says when there were more), and each cell as
    at most ``max_cell_chars`` characters of sanitized text (see safe_text()).

    The statement is cancelled by the server after ``statement_timeout_ms``; connecting is
    bounded by ``connect_timeout`` as in the credential test. Failures of the database, the
    network or the credentials are results, not exceptions; anything else (a bug)
    propagates, and so does cancellation. The connection is closed in every case.
    """
    limits = _Limits(max_rows, max_cell_chars, max_columns, statement_timeout_ms)
    _check_limits(limits)
    statement = _TRAILING_TERMINATORS.sub("", statement)
    if "\0" in statement:
        # libpq sends C strings: everything after a NUL, our wrapper's LIMIT included, would
        # silently vanish. No valid SQL contains one.
        return _result(_QUERY_REJECTED, _NUL_MESSAGE, duration_ms=0)

    started = time.monotonic()
    try:
        conn = await postgres_probe.connect(credentials, connect_timeout=connect_timeout)
    except postgres_probe.InvalidStoredCredentials:
        return connection_failure(workflows_pb2.TEST_CATEGORY_INVALID_STORED_CREDENTIALS, 0)
    except (TimeoutError, psycopg.Error) as exc:
        category = postgres_probe.connection_failure_category(exc)
        return connection_failure(category, _elapsed_ms(started))

    started = time.monotonic()
    try:
        # The server enforces statement_timeout on each statement; this deadline only
        # catches a server or network that stops answering altogether.
        async with asyncio.timeout(statement_timeout_ms / 1000 + connect_timeout):
            result = await _query(conn, statement, limits)
    except TimeoutError:
        return _timeout(limits, _elapsed_ms(started), sqlstate="")
    except _StatementError as exc:
        return _database_failure(exc.error, limits, _elapsed_ms(started), position=exc.position)
    except psycopg.Error as exc:
        return _database_failure(exc, limits, _elapsed_ms(started), position=0)
    finally:
        # No COMMIT is ever sent. Closing ends the session and the server aborts its open
        # transaction; an explicit ROLLBACK would add a round trip that can hang on a dead
        # link. After a timeout the server has already cancelled the statement, and
        # psycopg sends a cancel request if our own deadline interrupted it.
        await conn.close()
    result.duration_ms = _elapsed_ms(started)
    return result


def safe_text(text: str, max_chars: int) -> tuple[str, bool]:
    """Return ``text`` safe to print and to put in strict JSON, and whether it was cut.

    Every character Python does not call printable, except spaces, is replaced by a visible
    escape: C0 and C1 controls and DEL (``\\x1b``, so an ANSI escape sequence is inert),
    format characters such as bidi overrides and isolates, zero-width characters and the
    BOM (``\\u202e``), line and paragraph separators, surrogates, private-use and
    unassigned code points (``\\U000e0041``). Tab, newline and carriage return become
    ``\\t``, ``\\n`` and ``\\r``, so each cell is one line. Escapes are for display and not
    reversible: a backslash in the value is left as it is.

    The result has at most ``max_chars`` characters, escapes counted, and is cut only
    between escapes.
    """
    if text.isprintable():  # the common case, checked in C
        return text[:max_chars], len(text) > max_chars
    pieces: list[str] = []
    length = 0
    for char in text:
        piece = char if _is_displayable(char) else _escape(char)
        length += len(piece)
        if length > max_chars:
            return "".join(pieces), True
        pieces.append(piece)
    return "".join(pieces), False


def _is_displayable(char: str) -> bool:
    # isprintable() is false for every space but " "; other spaces are visible enough.
    return char.isprintable() or unicodedata.category(char) == "Zs"


def _escape(char: str) -> str:
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _check_limits(limits: _Limits) -> None:
    for name in ("max_rows", "max_cell_chars", "max_columns", "statement_timeout_ms"):
        if getattr(limits, name) < 1:
            raise ValueError(f"{name} must be a positive integer")


async def _query(
    conn: psycopg.AsyncConnection[TupleRow], statement: str, limits: _Limits
) -> workflows_pb2.PreviewQueryResult:
    """Run the preview on an open connection; raise what the database reports."""
    # Text comes back as bytes, decoded leniently in _render_cell().
    conn.adapters.register_loader("text", _RawTextLoader)
    conn.adapters.register_loader("text", _RawTextBinaryLoader)
    # A SQL_ASCII database stores bytes it never checked, and counts positions and lengths
    # in bytes. Asked for UTF8, the server would validate those bytes on the way out and
    # fail the whole query at the first invalid one; as SQL_ASCII it passes them through.
    # Every other encoding is converted to UTF-8 by the server.
    counts_bytes = conn.info.parameter_status("server_encoding") == "SQL_ASCII"
    client_encoding = "SQL_ASCII" if counts_bytes else "UTF8"

    # Our own text, so the simple protocol's several statements in one round trip are fine.
    # SET LOCAL: every setting ends with the transaction. DateStyle ISO changes only the
    # output format, not how the user's date literals are read.
    await conn.execute(
        sql.SQL(
            "SET client_encoding = {};"
            " BEGIN READ ONLY;"
            " SET LOCAL statement_timeout = {};"
            " SET LOCAL lock_timeout = {};"
            " SET LOCAL idle_in_transaction_session_timeout = {};"
            " SET LOCAL bytea_output = 'hex';"
            " SET LOCAL DateStyle = 'ISO';"
            # The validator lexes strings the standard way; a role or database set to the
            # old backslash-escaping rules would split the same text differently.
            " SET LOCAL standard_conforming_strings = on"
        ).format(
            sql.Literal(client_encoding),
            sql.Literal(limits.statement_timeout_ms),
            sql.Literal(LOCK_TIMEOUT),
            sql.Literal(IDLE_IN_TRANSACTION_TIMEOUT),
        )
    )
    # binary=True: the extended protocol (see the module docstring).
    cur = conn.cursor(binary=True)

    describe = _wrap(
        conn,
        sql.SQL("select * from (\n"),
        statement,
        sql.SQL("\n) as preview_query limit 0"),
    )
    await _execute_wrapped(cur, describe, counts_bytes=counts_bytes)
    described = _described_columns(cur.pgresult)
    kept = described[: limits.max_columns]
    type_names = await _type_names(cur, [oid for _, oid in kept])

    opening, closing = _read_wrapper(len(described), len(kept), limits)
    read = _wrap(conn, opening, statement, closing)
    await _execute_wrapped(cur, read, counts_bytes=counts_bytes)
    records = await cur.fetchall()
    rows: list[workflows_pb2.PreviewRow] = []
    size = 0
    for record in records[: limits.max_rows]:
        row = workflows_pb2.PreviewRow(
            cells=[
                _render_cell(raw, limits.max_cell_chars, counts_bytes=counts_bytes)
                for raw in record[: len(kept)]
            ]
        )
        size += row.ByteSize()
        # 100 rows of 100 columns of 1024 characters would exceed what a Temporal payload may
        # carry; stop early and say the result is truncated.
        if size > MAX_RESULT_BYTES and rows:
            break
        rows.append(row)

    return workflows_pb2.PreviewQueryResult(
        category=_OK,
        message=_OK_MESSAGE,
        columns=[
            workflows_pb2.PreviewColumn(
                name=_safe_name(name), type_name=_safe_name(type_names.get(oid, b""))
            )
            for name, oid in kept
        ],
        rows=rows,
        truncated=len(records) > len(rows),
        columns_truncated=len(described) > len(kept),
    )


def _wrap(
    conn: psycopg.AsyncConnection[TupleRow],
    prefix: sql.Composable,
    statement: str,
    suffix: sql.Composable,
) -> _Wrapped:
    # The statement sits on lines of its own, so a trailing "--" comment in it ends at our
    # newline instead of swallowing the wrapper's closing parenthesis and LIMIT.
    opening = prefix.as_bytes(conn)
    # Encoded here, not by psycopg: for a SQL_ASCII session psycopg would encode as ASCII
    # and fail on any other character; UTF-8 is what both client encodings accept.
    return _Wrapped(
        query=opening + statement.encode() + suffix.as_bytes(conn),
        prefix_chars=len(opening),  # the wrapper is ASCII: bytes are characters
        statement=statement,
    )


def _read_wrapper(
    described: int, kept: int, limits: _Limits
) -> tuple[sql.Composable, sql.Composable]:
    """Opening and closing of the query that reads at most limits.max_rows + 1 cut rows."""
    columns = [sql.Identifier(f"c{number}") for number in range(1, described + 1)]
    # Positional names for every column, even those past the cap: the user's own names can
    # repeat, and a column beyond the cap that is called "c1" must not clash with ours.
    # Schema-qualified, so a function the database defines cannot stand in for them.
    cells = sql.SQL(", ").join(
        sql.SQL("pg_catalog.left({}::pg_catalog.text, {})").format(
            column, sql.Literal(limits.max_cell_chars + 1)
        )
        for column in columns[:kept]
    )
    # A statement with no columns (select from t) still has rows; "as x()" is not SQL.
    alias = sql.SQL("({})").format(sql.SQL(", ").join(columns)) if columns else sql.SQL("")
    return (
        sql.SQL("select {} from (\n").format(cells),
        sql.SQL("\n) as preview_query{} limit {}").format(alias, sql.Literal(limits.max_rows + 1)),
    )


async def _execute_wrapped(
    cur: psycopg.AsyncCursor[TupleRow], wrapped: _Wrapped, *, counts_bytes: bool
) -> None:
    try:
        await cur.execute(wrapped.query)
    except psycopg.Error as exc:
        reported = _int_or_zero(exc.diag.statement_position)
        position = wrapped.statement_position(reported, counts_bytes=counts_bytes)
        raise _StatementError(exc, position) from exc


def _described_columns(result: PGresult | None) -> list[tuple[bytes, int]]:
    """The statement's columns as (raw name, type OID), by position."""
    if result is None:
        raise psycopg.InterfaceError("the describing query returned no result")
    return [(result.fname(index) or b"", result.ftype(index)) for index in range(result.nfields)]


async def _type_names(cur: psycopg.AsyncCursor[TupleRow], oids: Sequence[int]) -> dict[int, bytes]:
    """format_type() of each OID, in one query, in the same read-only transaction."""
    if not oids:
        return {}
    await cur.execute(
        "select t.oid, pg_catalog.format_type(t.oid, NULL)"
        " from pg_catalog.unnest(%s::pg_catalog.oid[]) as t(oid)",
        (sorted(set(oids)),),
    )
    return {int(oid): name for oid, name in await cur.fetchall()}


def _render_cell(raw: Any, max_chars: int, *, counts_bytes: bool) -> workflows_pb2.PreviewCell:
    if raw is None:
        return workflows_pb2.PreviewCell(is_null=True)
    data = bytes(raw)
    text, cut = safe_text(data.decode("utf-8", errors="replace"), max_chars)
    # The server sent at most max_chars + 1 characters (bytes, for SQL_ASCII): one more
    # than max_chars means the value was longer, even if decoding made the text shorter.
    return workflows_pb2.PreviewCell(
        text=text, truncated=cut or (counts_bytes and len(data) > max_chars)
    )


def _safe_name(raw: bytes) -> str:
    # Column and type names are identifiers anyone with CREATE can choose, escapes and all.
    return safe_text(raw.decode("utf-8", errors="replace"), MAX_MESSAGE_CHARS)[0]


def _database_failure(
    exc: psycopg.Error, limits: _Limits, duration_ms: int, *, position: int
) -> workflows_pb2.PreviewQueryResult:
    """Map an error raised once connected, by SQLSTATE, to a result carrying no DETAIL."""
    sqlstate = exc.sqlstate
    if sqlstate is None or sqlstate.startswith(_CONNECTION_EXCEPTION_CLASS):
        # Raised by libpq, not the server: the connection was lost.
        return connection_failure(postgres_probe.connection_failure_category(exc), duration_ms)
    if sqlstate == _QUERY_CANCELED:
        return _timeout(limits, duration_ms, sqlstate=sqlstate)
    if sqlstate == _READ_ONLY_SQL_TRANSACTION:
        category, message = _QUERY_REJECTED, _WRITE_MESSAGE
    else:
        # The primary message names the relation, column or function at fault. It can
        # quote a value ('invalid input syntax for type integer: "abc"'), as a preview's
        # rows do; DETAIL, HINT and CONTEXT, which quote more, never leave the agent.
        message = safe_text(_primary_message(exc), MAX_MESSAGE_CHARS)[0]
        category = _PERMISSION_DENIED if sqlstate == _INSUFFICIENT_PRIVILEGE else _QUERY_ERROR
    return _result(category, message, duration_ms=duration_ms, sqlstate=sqlstate, position=position)


def _primary_message(exc: psycopg.Error) -> str:
    """The server's primary message, decoded as UTF-8 whatever psycopg's codec."""
    # A SQL_ASCII session makes psycopg decode messages as ASCII; the bytes the server
    # sent are the user's UTF-8 (or whatever the database holds).
    if exc.pgresult is not None:
        raw = exc.pgresult.error_field(pq.DiagnosticField.MESSAGE_PRIMARY)
        if raw is not None:
            return raw.decode("utf-8", errors="replace")
    return exc.diag.message_primary or _NO_MESSAGE


def _timeout(
    limits: _Limits, duration_ms: int, *, sqlstate: str
) -> workflows_pb2.PreviewQueryResult:
    seconds = f"{limits.statement_timeout_ms / 1000:g}"
    return _result(
        _QUERY_TIMEOUT,
        f"the query ran longer than {seconds} s and was cancelled",
        duration_ms=duration_ms,
        sqlstate=sqlstate,
    )


def connection_failure(
    category: workflows_pb2.TestCategory, duration_ms: int
) -> workflows_pb2.PreviewQueryResult:
    """The preview result for a failure to log in, reported as the credential test would."""
    preview_category = _CONNECTION_CATEGORIES.get(category)
    if preview_category is None:
        return _result(_OTHER, _OTHER_MESSAGE, duration_ms=duration_ms)
    return _result(
        preview_category, postgres_probe.CATEGORY_HINTS[category], duration_ms=duration_ms
    )


def _result(
    category: workflows_pb2.PreviewCategory,
    message: str,
    *,
    duration_ms: int,
    sqlstate: str = "",
    position: int = 0,
) -> workflows_pb2.PreviewQueryResult:
    return workflows_pb2.PreviewQueryResult(
        category=category,
        message=message,
        sqlstate=sqlstate,
        position=position,
        duration_ms=duration_ms,
    )


def _int_or_zero(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
