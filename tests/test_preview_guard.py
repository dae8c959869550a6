"""What a preview checks and proves around its statement, on a real PostgreSQL server:
credentials not too strong, the transaction's resource settings, one plan, a cost budget,
the receipt, and a statement that ignores cancellation ended by the agent."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from agent.preview_executor import run_preview
from sevvo.connections.v1.connections_pb2 import SSL_MODE_DISABLE, PostgresCredentials
from sevvo.runtime.preview_validator import validate_preview_sql
from sevvo.workflows.v1 import workflows_pb2 as wpb
from tests.plugins.postgres import with_dbname

# Catches the cancel the statement timeout sends and carries on, as a careless (or hostile)
# function can: only ending its session stops it.
STUBBORN = """
create function public.stubborn(seconds float) returns int language plpgsql as $$
declare started timestamptz := clock_timestamp();
begin
  loop
    begin
      perform pg_sleep(0.05);
    exception when query_canceled then null;
    end;
    exit when clock_timestamp() - started > seconds * interval '1 second';
  end loop;
  return 1;
end $$
"""
# Functions a connection's owner might opt in without knowing what they do.
LOCKS = (
    "create function public.grab_lock() returns int language plpgsql as"
    " $$ begin perform pg_advisory_lock(4242); return 1; end $$"
)
BURNS_XID = (
    "create function public.take_xid() returns bigint language plpgsql as"
    " $$ begin return txid_current(); end $$"
)
KILLS = (
    "create function public.end_session(target int) returns boolean language plpgsql as"
    # The timeout makes the call wait for the backend to exit (PostgreSQL 14+): the receipt
    # sees sessions that are gone, and a signalled one leaves a moment after the signal.
    " $$ begin return pg_terminate_backend(target, 5000); end $$"
)
COUNTED = (
    "create function public.counted(n int) returns int language plpgsql immutable as"
    " $$ begin return n; end $$"
)


class Database:
    """A fresh database on the session's server, a reader role in it, and a superuser."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.name = f"guard_{uuid.uuid4().hex[:12]}"
        self.reader = f"reader_{uuid.uuid4().hex[:8]}"
        self.password = secrets.token_urlsafe(18)
        self.roles: list[str] = []
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(self.name)))
        self.url = with_dbname(server_url, self.name)
        self.role(self.reader)
        # Analyzed at once: autovacuum's own ANALYZE, landing between two previews of a test,
        # changed the planner's estimate under it (180.79, then 65.84).
        self.admin(
            "create table t (a int); insert into t select generate_series(1, 1000); analyze t"
        )
        self.admin(sql.SQL("grant select on t to {}").format(sql.Identifier(self.reader)))

    def admin(self, query: str | sql.Composed, params: tuple[Any, ...] | None = None) -> Any:
        """Run SQL as the superuser in this database; return the rows, if any."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(query.encode() if isinstance(query, str) else query, params)
            return cur.fetchall() if cur.description else []

    def role(self, name: str, attributes: str = "") -> None:
        """Create a login role with the reader's password, and CONNECT on this database."""
        self.roles.append(name)
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("create role {} login password {} " + attributes).format(
                    sql.Identifier(name), sql.Literal(self.password)
                )
            )
            conn.execute(
                sql.SQL("grant connect on database {} to {}").format(
                    sql.Identifier(self.name), sql.Identifier(name)
                )
            )

    def credentials(self, username: str | None = None) -> PostgresCredentials:
        """Stored credentials for a role of this database (the reader's by default)."""
        server = conninfo_to_dict(self.server_url)
        return PostgresCredentials(
            host=str(server["host"]),
            port=int(str(server["port"])),
            database=self.name,
            username=username or self.reader,
            password=self.password,
            ssl_mode=SSL_MODE_DISABLE,
        )

    def sessions(self, role: str) -> int:
        """How many sessions ``role`` has on the server."""
        rows = self.admin("select count(*) from pg_stat_activity where usename = %s", (role,))
        return int(rows[0][0])

    def drop(self) -> None:
        """Drop the database, then every role this test created."""
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(self.name)))
            for name in self.roles:
                conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(name)))


@pytest.fixture
def db(pg_server_url: str) -> Iterator[Database]:
    """A database with table t (1000 rows) that the reader may read."""
    database = Database(pg_server_url)
    yield database
    database.drop()


def preview(credentials: PostgresCredentials, text: str, **kwargs: Any) -> wpb.PreviewQueryResult:
    """The agent's real path: validator, then executor."""
    return asyncio.run(run_preview(credentials, validate_preview_sql(text), **kwargs))


def wait_for_no_sessions(db: Database, role: str, limit: float = 2.0) -> float:
    """Seconds until ``role`` has no session left (``limit`` if it still has)."""
    started = time.monotonic()
    while db.sessions(role) and time.monotonic() - started < limit:
        time.sleep(0.02)
    return time.monotonic() - started


# --- credentials too strong for a preview ---------------------------------------------------


def test_superuser_credentials_are_refused_before_the_statement(db: Database) -> None:
    """A superuser login is CREDENTIALS_TOO_PRIVILEGED; the statement never ran."""
    server = conninfo_to_dict(db.server_url)
    credentials = db.credentials(str(server["user"]))
    credentials.password = str(server["password"])
    result = preview(credentials, "select 1 / 0")
    assert result.category == wpb.PREVIEW_CATEGORY_CREDENTIALS_TOO_PRIVILEGED
    assert "a superuser" in result.message
    assert not result.HasField("receipt")


@pytest.mark.parametrize(
    ("attributes", "grant", "named"),
    [
        ("replication", None, "a replication role"),
        ("bypassrls", None, "allowed to bypass row-level security"),
        ("", "pg_signal_backend", "a member of pg_signal_backend"),
        ("", "pg_read_server_files", "a member of pg_read_server_files"),
        ("", "pg_write_server_files", "a member of pg_write_server_files"),
        ("", "pg_execute_server_program", "a member of pg_execute_server_program"),
    ],
)
def test_strong_roles_are_refused_by_name(
    db: Database, attributes: str, grant: str | None, named: str
) -> None:
    """Replication, BYPASSRLS and membership in file or signal roles each refuse, named."""
    role = f"strong_{uuid.uuid4().hex[:8]}"
    db.role(role, attributes)
    if grant is not None:
        db.admin(sql.SQL("grant {} to {}").format(sql.Identifier(grant), sql.Identifier(role)))
    result = preview(db.credentials(role), "select 1")
    assert result.category == wpb.PREVIEW_CATEGORY_CREDENTIALS_TOO_PRIVILEGED
    assert named in result.message


def test_the_least_privilege_reader_passes(db: Database) -> None:
    """A role that can only read (and end its own sessions) previews normally."""
    result = preview(db.credentials(), "select count(*) from t")
    assert result.category == wpb.PREVIEW_CATEGORY_OK
    assert result.rows[0].cells[0].text == "1000"


# --- the transaction's own bounds -----------------------------------------------------------


def test_the_transaction_runs_without_parallel_workers_or_jit_and_with_little_memory(
    db: Database,
) -> None:
    """The role's own defaults cannot undo the preview's settings: they are SET LOCAL."""
    version = int(db.admin("show server_version_num")[0][0])
    parallel = "debug_parallel_query" if version >= 160000 else "force_parallel_mode"
    for setting, value in (
        ("max_parallel_workers_per_gather", "4"),
        ("jit", "on"),
        ("work_mem", "1GB"),
        (parallel, "on"),
    ):
        db.admin(
            sql.SQL("alter role {} set {} = {}").format(
                sql.Identifier(db.reader), sql.Identifier(setting), sql.Literal(value)
            )
        )
    names = ["max_parallel_workers_per_gather", "jit", "work_mem", parallel, "statement_timeout"]
    text = "select " + ", ".join(f"current_setting('{n}')" for n in names)
    result = preview(db.credentials(), text)
    assert result.category == wpb.PREVIEW_CATEGORY_OK, result.message
    assert [c.text for c in result.rows[0].cells] == ["0", "off", "4MB", "off", "10s"]


def test_the_statement_is_planned_once(db: Database) -> None:
    """A constant the planner folds is computed once, with or without a cost budget."""
    db.admin(COUNTED)
    db.admin(
        sql.SQL("alter database {} set track_functions = 'pl'").format(sql.Identifier(db.name))
    )

    def calls() -> int:
        rows = db.admin(
            "select coalesce((select calls from pg_stat_user_functions"
            " where funcname = 'counted'), 0)"
        )
        return int(rows[0][0])

    for budget in (0.0, 1e9):
        before = calls()
        result = preview(
            db.credentials(),
            "select public.counted(7)",
            allowed_functions=["counted"],
            max_plan_cost=budget,
        )
        assert result.category == wpb.PREVIEW_CATEGORY_OK, result.message
        wait_for_no_sessions(db, db.reader)
        assert calls() - before == 1, budget


def test_a_plan_over_the_budget_is_refused_with_its_estimate(db: Database) -> None:
    """An estimate over the connection's budget refuses the preview, quoting the estimate."""
    text = "select a from t order by a desc"
    over = preview(db.credentials(), text, max_plan_cost=1)
    assert over.category == wpb.PREVIEW_CATEGORY_OVER_COST_BUDGET
    assert over.estimated_cost > 1
    assert f"{over.estimated_cost:,.0f} cost units" in over.message
    assert not over.rows
    under = preview(db.credentials(), text, max_plan_cost=over.estimated_cost * 2)
    assert under.category == wpb.PREVIEW_CATEGORY_OK
    assert under.estimated_cost == over.estimated_cost
    assert under.rows[0].cells[0].text == "1000"


# --- the receipt ------------------------------------------------------------------------------


def test_a_read_gets_a_clean_receipt(db: Database) -> None:
    """Nothing written, no lock, no session ended: CLEAN, with every finding at zero."""
    result = preview(db.credentials(), "select a from t where a < 3")
    assert result.receipt == wpb.PreviewReceipt(status=wpb.PREVIEW_RECEIPT_STATUS_CLEAN)


def test_a_failed_statement_still_gets_its_receipt(db: Database) -> None:
    """After an error the savepoint lets the same session prove it wrote nothing."""
    result = preview(db.credentials(), "select 1 / 0")
    assert result.category == wpb.PREVIEW_CATEGORY_QUERY_ERROR
    assert result.receipt.status == wpb.PREVIEW_RECEIPT_STATUS_CLEAN


def test_a_refused_function_leaves_no_receipt(db: Database) -> None:
    """A statement refused before it runs owes no receipt."""
    db.admin(LOCKS)
    result = preview(db.credentials(), "select public.grab_lock()")
    assert result.category == wpb.PREVIEW_CATEGORY_QUERY_REJECTED
    assert "public.grab_lock()" in result.message
    assert not result.HasField("receipt")


@pytest.mark.parametrize(
    ("function", "call", "finding"),
    [
        (LOCKS, "public.grab_lock()", "advisory_locks_held"),
        (BURNS_XID, "public.take_xid()", "transaction_id_assigned"),
    ],
)
def test_an_opted_in_function_with_effects_gets_an_unclean_receipt(
    db: Database, function: str, call: str, finding: str
) -> None:
    """A held advisory lock or an assigned transaction id makes the receipt NOT_CLEAN."""
    db.admin(function)
    name = call.split(".")[1].split("(")[0]
    result = preview(db.credentials(), f"select {call}", allowed_functions=[name])
    assert result.receipt.status == wpb.PREVIEW_RECEIPT_STATUS_NOT_CLEAN
    assert getattr(result.receipt, finding)


def test_ending_another_session_of_the_role_makes_the_receipt_unclean(db: Database) -> None:
    """A session of the same role that ends during the preview is counted."""
    db.admin(KILLS)
    with psycopg.connect(
        db.url, user=db.reader, password=db.password, application_name="bystander"
    ) as bystander:
        pid = bystander.info.backend_pid
        result = preview(
            db.credentials(), f"select public.end_session({pid})", allowed_functions=["end_session"]
        )
    assert result.receipt.status == wpb.PREVIEW_RECEIPT_STATUS_NOT_CLEAN
    assert result.receipt.role_sessions_ended == 1


# --- a statement that ignores cancellation ------------------------------------------------------


def test_a_statement_that_ignores_cancel_is_ended_by_the_agent(db: Database) -> None:
    """Past the timeout and one second more, the agent terminates the session itself."""
    db.admin(STUBBORN)
    started = time.monotonic()
    result = preview(
        db.credentials(),
        "select public.stubborn(30)",
        allowed_functions=["stubborn"],
        statement_timeout_ms=1000,
    )
    elapsed = time.monotonic() - started
    assert result.category == wpb.PREVIEW_CATEGORY_QUERY_TIMEOUT
    assert "ended its database session" in result.message
    assert result.receipt.backend_terminated
    assert not result.receipt.backend_outlived_call
    assert result.receipt.status == wpb.PREVIEW_RECEIPT_STATUS_CLEAN
    assert elapsed < 1 + 2
    assert wait_for_no_sessions(db, db.reader) < 2


def test_a_plain_timeout_is_not_terminated(db: Database) -> None:
    """A statement that stops when cancelled ends by the timeout alone, with its receipt."""
    result = preview(db.credentials(), "select pg_sleep(5)", statement_timeout_ms=300)
    assert result.category == wpb.PREVIEW_CATEGORY_QUERY_TIMEOUT
    assert result.sqlstate == "57014"
    assert not result.receipt.backend_terminated
    assert result.receipt.status == wpb.PREVIEW_RECEIPT_STATUS_CLEAN


def test_the_reader_cannot_end_another_roles_session(db: Database) -> None:
    """Without pg_signal_backend the reader may end only its own sessions, which is all the
    agent needs to stop a runaway preview."""
    other = f"other_{uuid.uuid4().hex[:8]}"
    db.role(other)
    with psycopg.connect(db.url, user=other, password=db.password) as victim:
        pid = victim.info.backend_pid
        with (
            psycopg.connect(db.url, user=db.reader, password=db.password) as reader,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            reader.execute("select pg_terminate_backend(%s)", (pid,))
        assert victim.execute("select 1").fetchone() == (1,)
