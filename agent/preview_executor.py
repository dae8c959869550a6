"""Preview query: run one validated SELECT on a customer's database, read-only and bounded.

This is the one path where rows leave the customer's perimeter (docs/design.md, "Preview query
contract"), so every bound is enforced where it is cheapest to enforce and again where it
cannot be bypassed:

- The statement runs in a ``READ ONLY`` transaction that is never committed, under
  ``statement_timeout``, ``lock_timeout`` and ``idle_in_transaction_session_timeout``, with
  no parallel workers, no JIT and a small ``work_mem`` (sorts and hashes spill instead of
  growing), all ``SET LOCAL``. ``temp_file_limit`` and a connection limit can only be set by
  the database's owner; the user guide says how.
- Before the statement, in the same transaction and one round trip: the role must not be
  too strong for a preview, and every function and operator the statement names must be
  allowed (agent.preview_session, agent.preview_functions).
- Every statement that carries the user's text goes through the extended query protocol,
  whose Parse message holds exactly one statement: the server itself refuses ``select 1;
  delete from t`` ("cannot insert multiple commands into a prepared statement"). psycopg
  sends a query without parameters through the simple protocol, which would run both, so
  these statements are sent with libpq's PQsendPrepare and PQsendQueryParams directly, in
  pipeline mode: Parse and Describe in one round trip, the read and the receipt in another.
- The statement is planned once. Its columns are learnt from a Parse and Describe of
  ``select * from (<sql>) as preview_query``, which analyses but neither plans nor runs it;
  then ``select left(c1::text, 1025), ... from (<sql>) as preview_query(c1, ...) limit
  101`` is planned and run, so rows and cell lengths are cut by the server and a 50 MB value
  never crosses the wire. With a cost budget, that read is prepared, its cached plan
  explained and refused over budget, and the same plan executed.
- Before the rollback, the session's receipt proves it wrote nothing. A statement that
  ignores the statement timeout's cancel is ended by the agent from a second session one
  second later, so no preview outlives its call by more than a couple of seconds.
- Each cell is decoded leniently (a SQL_ASCII database returns whatever bytes it stores),
  cut, and stripped of anything a terminal or a JSON parser could trip over. The same
  bounds are applied again on the agent.

Errors follow the data boundary: a category, the SQLSTATE and the server's primary message
only, never its DETAIL, HINT or CONTEXT, the credentials or the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import time
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Any, Final

import psycopg
from psycopg import generators, pq, sql
from psycopg.abc import Buffer
from psycopg.adapt import Loader, Transformer
from psycopg.pq.abc import PGresult
from psycopg.rows import TupleRow

from agent import postgres_probe, preview_functions, preview_session
from agent.preview_functions import OptIn
from sevvo.connections.v1 import connections_pb2
from sevvo.runtime import outcomes
from sevvo.runtime.outcomes import PREVIEW_CATEGORIES, TEST_CATEGORIES
from sevvo.runtime.preview_validator import ValidatedQuery
from sevvo.workflows.v1 import workflows_pb2

# Temporal refuses payloads over 2 MB by default; encryption adds a little.
MAX_RESULT_BYTES: Final = 1_500_000
LOCK_TIMEOUT: Final = "2s"
"""How long the preview waits for a lock (a table being altered, say) before giving up."""

IDLE_IN_TRANSACTION_TIMEOUT: Final = "15s"
"""How long the server keeps the preview's transaction if the agent stops talking to it."""

MAX_MESSAGE_CHARS: Final = 1024
"""The longest error message sent upstream (a primary message can quote a long input)."""

WORK_MEM: Final = "4MB"
"""Memory a sort or hash may use before it spills to temporary files."""

CLIENT_CHECK_INTERVAL: Final = "1s"
"""How often a running statement checks that the agent is still connected (PostgreSQL 14+)."""

TERMINATE_AFTER: Final = 1.0
"""Seconds past the statement timeout after which the agent ends a session that did not stop."""

TERMINATE_CONNECT_TIMEOUT: Final = 3.0
"""How long the agent tries to open the second session that ends a runaway one."""

_PREPARED: Final = b"sevvo_preview"
_CLIENT_CHECK_SINCE: Final = 140000
_DEBUG_PARALLEL_SINCE: Final = 160000

_OK = workflows_pb2.PREVIEW_CATEGORY_OK
_QUERY_REJECTED = workflows_pb2.PREVIEW_CATEGORY_QUERY_REJECTED
_QUERY_TIMEOUT = workflows_pb2.PREVIEW_CATEGORY_QUERY_TIMEOUT
_PERMISSION_DENIED = workflows_pb2.PREVIEW_CATEGORY_PERMISSION_DENIED
_QUERY_ERROR = workflows_pb2.PREVIEW_CATEGORY_QUERY_ERROR
_TOO_PRIVILEGED = workflows_pb2.PREVIEW_CATEGORY_CREDENTIALS_TOO_PRIVILEGED
_OVER_BUDGET = workflows_pb2.PREVIEW_CATEGORY_OVER_COST_BUDGET
_RECEIPT_MISSING = workflows_pb2.PREVIEW_RECEIPT_STATUS_MISSING
_OTHER = workflows_pb2.PREVIEW_CATEGORY_OTHER

_WRITE_MESSAGE: Final = "the query tried to write: previews run in a read-only transaction"
_NUL_MESSAGE: Final = "the query contains a NUL character"
_NO_MESSAGE: Final = "the server's error came without a message"

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


@dataclass(slots=True)
class _Progress:
    """How far a preview got, for whoever has to end it from outside."""

    start: preview_session.Start | None = None
    statement_sent: bool = False
    started: float = field(default_factory=time.monotonic)


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
    query: ValidatedQuery,
    *,
    allowed_functions: Sequence[str] = (),
    max_plan_cost: float = 0.0,
    max_rows: int = 100,
    max_cell_chars: int = 1024,
    max_columns: int = 100,
    statement_timeout_ms: int = 10_000,
    connect_timeout: float = 10.0,
) -> workflows_pb2.PreviewQueryResult:
    """Run ``query`` read-only with ``credentials`` and return at most ``max_rows`` rows.

    ``query`` must come from sevvo.runtime.preview_validator: one SELECT or WITH statement and the
    call sites in it. It is run inside a wrapper, so a trailing semicolon is dropped. Its
    functions and operators must be on the reviewed list or in ``allowed_functions`` (the
    connection owner's opt-ins); with ``max_plan_cost`` above 0 a plan estimated above it is
    refused. At most ``max_columns`` columns are returned (``columns_truncated`` says when
    there were more), at most ``max_rows`` rows (``truncated`` says when there were more),
    and each cell as at most ``max_cell_chars`` characters of sanitized text (safe_text()).

    The statement is cancelled by the server after ``statement_timeout_ms``, and its session
    ended by the agent ``TERMINATE_AFTER`` seconds later if it is still running. Connecting
    is bounded by ``connect_timeout`` as in the credential test. Once the statement reached
    the database the result carries a receipt. Failures of the database, the network or the
    credentials are results, not exceptions; anything else (a bug) propagates, and so does
    cancellation. The connection is closed in every case.
    """
    limits = _Limits(max_rows, max_cell_chars, max_columns, statement_timeout_ms)
    _check_limits(limits)
    statement = _TRAILING_TERMINATORS.sub("", query.statement)
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

    progress = _Progress()
    plan = _Plan(ValidatedQuery(statement, query.calls), OptIn(allowed_functions), max_plan_cost)
    task = asyncio.ensure_future(_query(conn, plan, limits, progress))
    try:
        # The server cancels each statement at statement_timeout; this deadline is for a
        # statement that does not stop when cancelled, or a server that stopped answering.
        await asyncio.wait({task}, timeout=limits.statement_timeout_ms / 1000 + TERMINATE_AFTER)
        if task.done():
            result = _finished(task, limits, progress)
        else:
            result = await _end_runaway(credentials, conn, task, limits, progress)
    finally:
        task.cancel()
        await _settle(task, TERMINATE_AFTER)
        # No COMMIT is ever sent. Closing ends the session and the server aborts its open
        # transaction; an explicit ROLLBACK would add a round trip that can hang on a dead
        # link.
        await conn.close()
    result.duration_ms = _elapsed_ms(progress.started)
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


@dataclass(frozen=True, slots=True)
class _Plan:
    """What to run and under which of the connection owner's settings."""

    query: ValidatedQuery
    opt_in: OptIn
    max_plan_cost: float


def _finished(
    task: asyncio.Future[workflows_pb2.PreviewQueryResult], limits: _Limits, progress: _Progress
) -> workflows_pb2.PreviewQueryResult:
    """The result of a preview that ended by itself; a lost connection is a result too."""
    try:
        return task.result()
    except psycopg.Error as exc:
        result = _database_failure(exc, limits, 0, position=0)
        if progress.statement_sent:
            # The statement reached the server but nothing can now show what it did there.
            result.receipt.status = _RECEIPT_MISSING
        return result


async def _end_runaway(
    credentials: connections_pb2.PostgresCredentials,
    conn: psycopg.AsyncConnection[TupleRow],
    task: asyncio.Future[workflows_pb2.PreviewQueryResult],
    limits: _Limits,
    progress: _Progress,
) -> workflows_pb2.PreviewQueryResult:
    """End a preview whose statement outlived its timeout: receipt, terminate, hang up."""
    result = _timeout(limits, 0, sqlstate="")
    # Without the answer to the checks before the statement, nothing of ours ran and the
    # server never said which backend is ours; the session will notice the hang-up.
    if progress.start is not None:
        try:
            result.receipt.CopyFrom(
                await preview_session.terminate(
                    credentials, progress.start, connect_timeout=TERMINATE_CONNECT_TIMEOUT
                )
            )
            result.message = _runaway_message(limits)
        except (TimeoutError, psycopg.Error, postgres_probe.InvalidStoredCredentials):
            # The server cannot be reached to end the session; it notices the agent is gone
            # (client_connection_check_interval) at its next check for interrupts.
            result.receipt.status = _RECEIPT_MISSING
    _hang_up(conn)
    await _settle(task, TERMINATE_AFTER)
    return result


async def _settle(task: asyncio.Future[Any], timeout: float) -> None:
    """Wait up to ``timeout`` for ``task`` to end; its outcome is consumed whenever it does."""
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    if not task.done():
        await asyncio.wait({task}, timeout=timeout)


def _hang_up(conn: psycopg.AsyncConnection[TupleRow]) -> None:
    """Shut the connection's socket down under libpq, so a read waiting on it ends at once."""
    try:
        fileno = os.dup(conn.pgconn.socket)
    except (psycopg.OperationalError, OSError):
        return  # Already closed: the terminated session hung up first.
    with contextlib.suppress(OSError), socket.socket(fileno=fileno) as sock:
        sock.shutdown(socket.SHUT_RDWR)


async def _query(
    conn: psycopg.AsyncConnection[TupleRow], plan: _Plan, limits: _Limits, progress: _Progress
) -> workflows_pb2.PreviewQueryResult:
    """Run the preview on an open connection; raise what the database reports."""
    # Text comes back as bytes, decoded leniently in _render_cell() and _text().
    conn.adapters.register_loader("text", _RawTextLoader)
    conn.adapters.register_loader("text", _RawTextBinaryLoader)
    # A SQL_ASCII database stores bytes it never checked, and counts positions and lengths
    # in bytes. Asked for UTF8, the server would validate those bytes on the way out and
    # fail the whole query at the first invalid one; as SQL_ASCII it passes them through.
    # Every other encoding is converted to UTF-8 by the server.
    counts_bytes = conn.info.parameter_status("server_encoding") == "SQL_ASCII"
    lookup = preview_functions.lookup(plan.query.calls)
    version = conn.info.server_version
    checks = [preview_session.start_sql(version), lookup.functions, lookup.operators]
    cur = await conn.execute(_begin_sql(conn, limits, counts_bytes, checks))
    rows = await _selected(cur)
    start = preview_session.read_start(_text(rows[0][0]) if rows[0] else None, version)
    progress.start = start
    if start.refusal is not None:
        return _result(
            _TOO_PRIVILEGED,
            f"the connection's role is {start.refusal}; a preview refuses credentials that strong",
            duration_ms=0,
        )
    function_rows = rows[1] if lookup.functions is not None else []
    operator_rows = rows[-1] if lookup.operators is not None else []
    refused = preview_functions.refusal(
        plan.query.calls, _text(function_rows), _text(operator_rows), plan.opt_in
    )
    if refused is not None:
        return _result(
            _QUERY_REJECTED, refused.message, duration_ms=0, position=refused.position or 0
        )

    progress.statement_sent = True
    try:
        result, receipt = await _read(conn, plan, limits, counts_bytes, start)
    except _StatementError as exc:
        result = _database_failure(exc.error, limits, 0, position=exc.position)
        # The failed statement aborted the transaction; its savepoint makes it usable again.
        await conn.execute(b"ROLLBACK TO SAVEPOINT preview")
        receipt = await _receipt(conn, start, [])
    result.receipt.CopyFrom(receipt.receipt)
    for column, name in zip(result.columns, receipt.type_names, strict=False):
        column.type_name = _safe_name(name)
    return result


async def _receipt(
    conn: psycopg.AsyncConnection[TupleRow],
    start: preview_session.Start,
    type_oids: Sequence[int],
) -> preview_session.Receipt:
    """The receipt on its own round trip (after a failure, or a plan over budget)."""
    cur = await conn.execute(
        sql.SQL("{}; {}").format(
            preview_session.CLEAR_SNAPSHOT, preview_session.receipt_sql(start, type_oids)
        )
    )
    return preview_session.read_receipt(start, _text((await _selected(cur))[-1][0]))


def _begin_sql(
    conn: psycopg.AsyncConnection[TupleRow],
    limits: _Limits,
    counts_bytes: bool,
    checks: Sequence[sql.Composable | None],
) -> sql.Composed:
    """The transaction's settings, the checks before the statement, and its savepoint.

    Our own text, so the simple protocol's several statements in one round trip are fine.
    SET LOCAL: every setting ends with the transaction. DateStyle ISO changes only the
    output format, not how the user's date literals are read.
    """
    settings = [
        ("statement_timeout", limits.statement_timeout_ms),
        ("lock_timeout", LOCK_TIMEOUT),
        ("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION_TIMEOUT),
        ("bytea_output", "hex"),
        ("DateStyle", "ISO"),
        # The validator lexes strings the standard way; a role or database set to the old
        # backslash-escaping rules would split the same text differently.
        ("standard_conforming_strings", "on"),
        # One backend per preview: no parallel workers, no JIT compilation, and sorts and
        # hashes that spill early.
        ("max_parallel_workers_per_gather", 0),
        ("jit", "off"),
        ("work_mem", WORK_MEM),
    ]
    # A role or database default can force a parallel worker even with no workers per
    # gather; the setting was renamed in 16.
    version = conn.info.server_version
    settings.append(
        (
            "debug_parallel_query" if version >= _DEBUG_PARALLEL_SINCE else "force_parallel_mode",
            "off",
        )
    )
    if version >= _CLIENT_CHECK_SINCE:
        # A statement notices within a second that the agent hung up (or was killed).
        settings.append(("client_connection_check_interval", CLIENT_CHECK_INTERVAL))
    statements: list[sql.Composable] = [
        sql.SQL("SET client_encoding = {}").format(
            sql.Literal("SQL_ASCII" if counts_bytes else "UTF8")
        ),
        sql.SQL("BEGIN READ ONLY"),
        *(
            sql.SQL("SET LOCAL {} = {}").format(sql.Identifier(name), sql.Literal(value))
            for name, value in settings
        ),
        *(check for check in checks if check is not None),
        sql.SQL("SAVEPOINT preview"),
    ]
    return sql.SQL(";\n").join(statements)


async def _selected(cur: psycopg.AsyncCursor[TupleRow]) -> list[list[TupleRow]]:
    """The rows of each statement of a batch that returned rows, in order."""
    results: list[list[TupleRow]] = []
    while True:
        if cur.description is not None:
            results.append(await cur.fetchall())
        if not cur.nextset():
            return results


async def _read(
    conn: psycopg.AsyncConnection[TupleRow],
    plan: _Plan,
    limits: _Limits,
    counts_bytes: bool,
    start: preview_session.Start,
) -> tuple[workflows_pb2.PreviewQueryResult, preview_session.Receipt]:
    """Describe, plan once, run and render the statement, and take the receipt after it."""
    statement = plan.query.statement
    describe = _wrap(conn, sql.SQL("select * from (\n"), statement, sql.SQL("\n) as preview_query"))
    described = _described_columns(await _prepare(conn, b"", describe, counts_bytes, True))
    kept = described[: limits.max_columns]
    opening, closing = _read_wrapper(len(described), len(kept), limits)
    read = _wrap(conn, opening, statement, closing)
    type_oids = [oid for _, oid in kept]
    estimated_cost = 0.0
    if plan.max_plan_cost > 0:
        await _prepare(conn, _PREPARED, read, counts_bytes, False)
        estimated_cost = await _estimated_cost(conn)
        if estimated_cost > plan.max_plan_cost:
            # Planning ran (and folded constants): a receipt is owed all the same.
            over = _over_budget(estimated_cost, plan.max_plan_cost)
            return over, await _receipt(conn, start, [])
        read = _executing(read)
    records, receipt = await _run_with_receipt(
        conn, read, preview_session.receipt_sql(start, type_oids), counts_bytes
    )
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

    result = workflows_pb2.PreviewQueryResult(
        category=_OK,
        message=PREVIEW_CATEGORIES.message(outcomes.OK),
        columns=[workflows_pb2.PreviewColumn(name=_safe_name(name)) for name, _ in kept],
        rows=rows,
        truncated=len(records) > len(rows),
        columns_truncated=len(described) > len(kept),
        estimated_cost=estimated_cost,
    )
    return result, preview_session.read_receipt(start, _text(receipt))


async def _run_with_receipt(
    conn: psycopg.AsyncConnection[TupleRow],
    read: _Wrapped,
    receipt_query: sql.Composed,
    counts_bytes: bool,
) -> tuple[list[TupleRow], TupleRow]:
    """The read's rows and the receipt's row, in one round trip.

    An error in the read aborts the rest and is raised as _StatementError.
    """
    pgconn = conn.pgconn
    results = await _pipelined(
        conn,
        [
            partial(pgconn.send_query_params, read.query, None, result_format=pq.Format.BINARY),
            partial(pgconn.send_query_params, preview_session.CLEAR_SNAPSHOT.as_bytes(conn), None),
            partial(pgconn.send_query_params, receipt_query.as_bytes(conn), None),
        ],
    )
    _raise_first_error(conn, results, read, counts_bytes)
    rows, receipt = (_rows(conn, results[index]) for index in (0, 2))
    if not receipt:
        raise psycopg.InterfaceError("the receipt query returned no row")
    return rows, receipt[0]


async def _pipelined(
    conn: psycopg.AsyncConnection[TupleRow], commands: Sequence[Callable[[], None]]
) -> list[PGresult]:
    """Send libpq ``commands`` and a Sync in one round trip (pipeline mode); their results.

    psycopg's public API has no prepare- or describe-only call, and its pipeline logs the
    errors it drops; so this drives libpq through psycopg's own wait loop and generators,
    as its cursors do. A command after a failed one gets a PIPELINE_ABORTED result.
    """
    pgconn = conn.pgconn
    pgconn.enter_pipeline_mode()
    try:
        for command in commands:
            command()
        pgconn.pipeline_sync()
        await conn.wait(generators.send(pgconn))
        results: list[PGresult] = []
        # One list of results per command, then the sync's own.
        while not results or results[-1].status != pq.ExecStatus.PIPELINE_SYNC:
            results.extend(await conn.wait(generators.fetch_many(pgconn)))
    except BaseException:
        with contextlib.suppress(psycopg.Error):
            pgconn.exit_pipeline_mode()
        raise
    pgconn.exit_pipeline_mode()
    return results[:-1]


def _raise_first_error(
    conn: psycopg.AsyncConnection[TupleRow],
    results: Sequence[PGresult],
    wrapped: _Wrapped,
    counts_bytes: bool,
) -> None:
    """Raise the first error among ``results`` as _StatementError, positioned in the user's text."""
    for result in results:
        if result.status == pq.ExecStatus.FATAL_ERROR:
            error = psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
            reported = _int_or_zero(error.diag.statement_position)
            position = wrapped.statement_position(reported, counts_bytes=counts_bytes)
            raise _StatementError(error, position)


def _rows(conn: psycopg.AsyncConnection[TupleRow], result: PGresult) -> list[TupleRow]:
    """A result's rows, loaded with the connection's loaders (text as raw bytes)."""
    transformer = Transformer(conn)
    transformer.set_pgresult(result)
    return transformer.load_rows(0, result.ntuples, tuple)


async def _prepare(
    conn: psycopg.AsyncConnection[TupleRow],
    name: bytes,
    wrapped: _Wrapped,
    counts_bytes: bool,
    describe: bool,
) -> PGresult:
    """Parse ``wrapped`` as the prepared statement ``name`` (and Describe it), running nothing,
    in one round trip; the last command's result (the description, when asked for)."""
    pgconn = conn.pgconn
    commands = [partial(pgconn.send_prepare, name, wrapped.query)]
    if describe:
        commands.append(partial(pgconn.send_describe_prepared, name))
    results = await _pipelined(conn, commands)
    _raise_first_error(conn, results, wrapped, counts_bytes)
    return results[-1]


async def _estimated_cost(conn: psycopg.AsyncConnection[TupleRow]) -> float:
    """The planner's total cost for the prepared read; planning it caches the plan it runs.

    A statement without parameters always gets the generic plan, which EXPLAIN EXECUTE
    builds and keeps, so the EXECUTE after it does not plan again.
    """
    cur = await conn.execute(b"EXPLAIN (FORMAT JSON) EXECUTE " + _PREPARED)
    row = await cur.fetchone()
    raw = row[0] if row else b"[]"
    plan = json.loads(raw) if isinstance(raw, (bytes, str)) else raw
    return float(plan[0]["Plan"]["Total Cost"])


def _executing(read: _Wrapped) -> _Wrapped:
    """EXECUTE of the prepared read; errors in it point at no position of the user's text."""
    return _Wrapped(query=b"EXECUTE " + _PREPARED, prefix_chars=0, statement="")


def _over_budget(estimate: float, budget: float) -> workflows_pb2.PreviewQueryResult:
    result = _result(
        _OVER_BUDGET,
        f"the planner estimates this query at {estimate:,.0f} cost units, over the"
        f" connection's preview budget of {budget:,.0f}",
        duration_ms=0,
    )
    result.estimated_cost = estimate
    return result


def _text(value: Any) -> Any:
    """Our own queries' text, which the raw loader returns as bytes, decoded leniently."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (list, tuple)):
        return type(value)(_text(item) for item in value)
    return value


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


def _described_columns(result: PGresult | None) -> list[tuple[bytes, int]]:
    """The statement's columns as (raw name, type OID), by position."""
    if result is None:
        raise psycopg.InterfaceError("the describing query returned no result")
    return [(result.fname(index) or b"", result.ftype(index)) for index in range(result.nfields)]


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


def _safe_name(raw: bytes | str) -> str:
    # Column and type names are identifiers anyone with CREATE can choose, escapes and all.
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    return safe_text(text, MAX_MESSAGE_CHARS)[0]


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


def _runaway_message(limits: _Limits) -> str:
    seconds = f"{limits.statement_timeout_ms / 1000:g}"
    return (
        f"the query ran longer than {seconds} s and did not stop when cancelled (or the"
        " server stopped answering), so the agent ended its database session"
    )


def connection_failure(
    category: workflows_pb2.TestCategory, duration_ms: int
) -> workflows_pb2.PreviewQueryResult:
    """The preview result for a failure to log in, reported as the credential test would.

    A failure to connect is the credential test's failure: the preview's category of the same
    name, with the test's message (at login, permission_denied is a missing CONNECT).
    """
    outcome = TEST_CATEGORIES.outcome(category)
    if outcome is outcomes.OTHER or not PREVIEW_CATEGORIES.has(outcome):
        return _result(_OTHER, PREVIEW_CATEGORIES.message(outcomes.OTHER), duration_ms=duration_ms)
    return _result(
        PREVIEW_CATEGORIES.value(outcome),
        TEST_CATEGORIES.message(outcome),
        duration_ms=duration_ms,
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
