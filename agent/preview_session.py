"""What a preview proves about its own database session: before, that the role is not too
strong for it; after, that it changed nothing (the receipt).

Before the statement (``start_sql``, in the preview's transaction): the role logged in must
not be a superuser, a replication role or one that bypasses row security, and must not be a
member of a role that reads or writes server files, runs server programs or signals other
backends (``STRONG_ROLES``). Those are the credentials that turn a read into an escape
(heap surgery, server files, other sessions killed); the user guide's least-privilege reader
is none of them. The same query records which other sessions of the role exist.

Before the rollback (``receipt_sql``): the transaction has no transaction id (only a write,
or a function that forces one, assigns it), the session holds no advisory lock, and no
session of the role that existed at the start is gone. A terminated session is gone; a
cancelled one leaves no trace a query can see, which is why signalling functions are refused
by name and the role may not hold pg_signal_backend. Sessions named ``sevvo-agent`` are left
out of that comparison: concurrent previews and tests of the same role come and go. A session
terminated without waiting (pg_terminate_backend with no timeout) leaves the activity list a
moment after the signal, so a receipt read at once can miss it: a receipt proves what is gone
when it is read, not what is about to go. Waiting for it would flag sessions that end on their
own (seen: a benign ``select 1`` marked not clean), so the receipt does not wait.

When a statement ignores cancellation (a function that catches query_canceled, C code that
does not check for interrupts), the statement timeout does not end it. The agent then ends
it itself (``terminate``), over a second connection with the same credentials: a role may
terminate its own sessions without any extra privilege, so the preview needs no role that
may signal others, which is exactly what the check above refuses. That connection first
reads the same facts from pg_locks (an assigned transaction id is a lock on it), so even
this preview gets a receipt. It is opened only then, so it costs nothing otherwise; the
reader role's connection limit must leave room for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg import sql

from agent import postgres_probe
from sevvo.connections.v1 import connections_pb2
from sevvo.workflows.v1 import workflows_pb2

STRONG_ROLES: Final = (
    ("pg_read_server_files", 110000),
    ("pg_write_server_files", 110000),
    ("pg_execute_server_program", 110000),
    ("pg_signal_backend", 90600),
    ("pg_signal_autovacuum_worker", 180000),
)
"""Predefined roles a preview's login may not be a member of, and the server version that
has each (server_version_num)."""

TERMINATE_WAIT: Final = 1.0
"""How long, in seconds, the agent waits for a terminated session to go."""

_POLL_INTERVAL: Final = 0.05
_CLEAN = workflows_pb2.PREVIEW_RECEIPT_STATUS_CLEAN
_NOT_CLEAN = workflows_pb2.PREVIEW_RECEIPT_STATUS_NOT_CLEAN

# The role's other client sessions, as (pid, start) pairs, leaving out the agent's own.
# Functions, not the pg_stat_activity view: its joins cost a fresh backend its cold caches.
_SESSIONS = """array(
    select pg_catalog.concat(a.pid, '@', a.backend_start)
    from pg_catalog.pg_stat_get_activity(null) as a
    where a.usesysid operator(pg_catalog.=) {role}
      and a.pid operator(pg_catalog.<>) {pid}
      and a.backend_type operator(pg_catalog.=) 'client backend'
      and a.application_name operator(pg_catalog.<>) {agent}
)"""

# pg_has_role() by name reads the syscache: cheaper on a fresh backend than another scan of
# the pg_roles view, whose planning is most of this query's cost.
_START = """
select pg_catalog.pg_backend_pid(), r.oid, r.rolsuper, r.rolreplication, r.rolbypassrls,
       array[{memberships}]::pg_catalog.bool[], {sessions}
from pg_catalog.pg_roles as r
where r.rolname operator(pg_catalog.=) session_user
"""

CLEAR_SNAPSHOT: Final = sql.SQL("select pg_catalog.pg_stat_clear_snapshot()")
"""Run before the receipt query: the session list is otherwise the one the start read."""

_RECEIPT = """
select pg_catalog.txid_current_if_assigned() is not null,
       (select pg_catalog.count(*) from pg_catalog.pg_lock_status() as l
        where l.pid operator(pg_catalog.=) pg_catalog.pg_backend_pid()
          and l.locktype operator(pg_catalog.=) 'advisory'),
       {sessions},
       array[{types}]::pg_catalog.text[]
"""

# The same facts about another backend, read from pg_locks: an assigned transaction id is an
# exclusive lock the backend holds on it.
_OBSERVED = """
select pg_catalog.count(*) filter (where l.locktype operator(pg_catalog.=) 'transactionid'
                                     and l.mode operator(pg_catalog.=) 'ExclusiveLock'),
       pg_catalog.count(*) filter (where l.locktype operator(pg_catalog.=) 'advisory'),
       {sessions}
from pg_catalog.pg_locks as l
where l.pid operator(pg_catalog.=) {pid} and l.granted
"""


@dataclass(frozen=True, slots=True)
class Start:
    """What the preview's transaction found before the statement: its backend's pid as the
    server reports it (behind a pooler the protocol's may be another's), the role, why it
    is too strong if it is, and the role's other sessions."""

    pid: int
    role_oid: int
    refusal: str | None
    sessions: frozenset[str]


@dataclass(frozen=True, slots=True)
class Receipt:
    """The receipt, and the type names asked for on the same round trip."""

    receipt: workflows_pb2.PreviewReceipt
    type_names: list[str]


def start_sql(server_version: int) -> sql.Composed:
    """The role check and session list, run in the preview's own session."""
    return sql.SQL(_START).format(
        memberships=sql.SQL(", ").join(
            sql.SQL("pg_catalog.pg_has_role(r.oid, {}, 'MEMBER')").format(sql.Literal(role))
            for role in _strong_roles(server_version)
        ),
        sessions=_sessions(sql.SQL("r.oid"), sql.SQL("pg_catalog.pg_backend_pid()")),
    )


def _strong_roles(server_version: int) -> list[str]:
    return [role for role, since in STRONG_ROLES if server_version >= since]


def read_start(row: Sequence[Any] | None, server_version: int) -> Start:
    """Parse the row of ``start_sql``; ``refusal`` says why the role is too strong, if it is."""
    if row is None:
        # session_user always has a pg_roles row; none means the catalog is not readable.
        return Start(0, 0, "its role could not be read from pg_roles", frozenset())
    pid, role_oid, superuser, replication, bypass_rls, member_of, sessions = row
    memberships = [
        role
        for role, member in zip(_strong_roles(server_version), member_of, strict=True)
        if member
    ]
    reasons = [
        attribute
        for attribute, held in (
            ("a superuser", superuser),
            ("a replication role", replication),
            ("allowed to bypass row-level security", bypass_rls),
        )
        if held
    ]
    if memberships:
        reasons.append("a member of " + ", ".join(sorted(memberships)))
    refusal = "; ".join(reasons) if reasons else None
    return Start(int(pid), int(role_oid), refusal, frozenset(sessions or ()))


def receipt_sql(start: Start, type_oids: Sequence[int]) -> sql.Composed:
    """The receipt query (after CLEAR_SNAPSHOT), with the names of ``type_oids`` in order.

    One statement, so it can share a pipeline with the statement it vouches for.
    """
    names = (
        sql.SQL("pg_catalog.format_type({}, null)").format(sql.Literal(oid)) for oid in type_oids
    )
    return sql.SQL(_RECEIPT).format(
        sessions=_sessions(sql.Literal(start.role_oid), sql.Literal(start.pid)),
        types=sql.SQL(", ").join(names),
    )


def read_receipt(start: Start, row: Sequence[Any]) -> Receipt:
    """Parse the last row of ``receipt_sql``."""
    xid_assigned, advisory_locks, sessions, type_names = row
    receipt = _receipt(bool(xid_assigned), int(advisory_locks), start, sessions)
    return Receipt(receipt, list(type_names))


async def terminate(
    credentials: connections_pb2.PostgresCredentials, start: Start, *, connect_timeout: float
) -> workflows_pb2.PreviewReceipt:
    """End the preview's backend from a second session, after reading its receipt there.

    Raises what connecting raises (psycopg.Error, TimeoutError, InvalidStoredCredentials);
    the caller then has no receipt to give.
    """
    pid = start.pid
    conn = await postgres_probe.connect(credentials, connect_timeout=connect_timeout)
    try:
        cur = await conn.execute(
            sql.SQL(_OBSERVED).format(
                pid=sql.Literal(pid),
                sessions=_sessions(sql.Literal(start.role_oid), sql.Literal(pid)),
            )
        )
        row = await cur.fetchone()
        xids, advisory_locks, sessions = row if row else (0, 0, [])
        await conn.execute(
            sql.SQL("select pg_catalog.pg_terminate_backend({})").format(sql.Literal(pid))
        )
        outlived = await _still_running(conn, pid, TERMINATE_WAIT)
    finally:
        await conn.close()
    receipt = _receipt(bool(xids), int(advisory_locks), start, sessions, terminated=True)
    receipt.backend_outlived_call = outlived
    if outlived:
        receipt.status = _NOT_CLEAN
    return receipt


async def _still_running(conn: psycopg.AsyncConnection[Any], pid: int, wait: float) -> bool:
    """Whether backend ``pid`` is still there after ``wait`` seconds of polling."""
    query = sql.SQL("select pg_catalog.count(*) from pg_catalog.pg_stat_get_activity({})").format(
        sql.Literal(pid)
    )
    deadline = time.monotonic() + wait
    while True:
        # Each statement is its own transaction (autocommit), so each sees fresh activity.
        cur = await conn.execute(query)
        row = await cur.fetchone()
        if not row or not row[0]:
            return False
        if time.monotonic() >= deadline:
            return True
        await asyncio.sleep(_POLL_INTERVAL)


def _sessions(role: sql.Composable, pid: sql.Composable) -> sql.Composed:
    return sql.SQL(_SESSIONS).format(
        role=role, pid=pid, agent=sql.Literal(postgres_probe.APPLICATION_NAME)
    )


def _receipt(
    xid_assigned: bool,
    advisory_locks: int,
    start: Start,
    sessions: Sequence[str] | None,
    *,
    terminated: bool = False,
) -> workflows_pb2.PreviewReceipt:
    ended = len(start.sessions - frozenset(sessions or ()))
    clean = not xid_assigned and advisory_locks == 0 and ended == 0
    return workflows_pb2.PreviewReceipt(
        status=_CLEAN if clean else _NOT_CLEAN,
        transaction_id_assigned=xid_assigned,
        advisory_locks_held=advisory_locks,
        role_sessions_ended=ended,
        backend_terminated=terminated,
    )
