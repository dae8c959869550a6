"""Dynamic credentials on a real PostgreSQL: mint, use, renew, revoke, reap, rotate the root."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

from agent import dynamic_credentials as dc
from agent.postgres_probe import connect
from devstack.postgres import EmbeddedPostgres
from devstack.processes import free_port
from devstack.source_db import DEBIAN_POSTGRES_ROOT
from services.connections.dynamic import dynamic_settings
from sevvo.connections.v1.connections_pb2 import SSL_MODE_DISABLE, PostgresCredentials
from sevvo.runtime.credential_templates import TemplateError
from sevvo.runtime.errors import InvalidArgument
from tests import test_credential_templates as template_cases

AdminConnection = psycopg.AsyncConnection[TupleRow]
CHURN_CYCLES = 2000


@dataclass(frozen=True)
class Privileged:
    """A database prepared as a customer would: a CREATEROLE role and a read-only group."""

    superuser_dsn: str
    admin: PostgresCredentials
    group: str

    @property
    def creation(self) -> tuple[str, ...]:
        """The default creation template for this database's group."""
        return dc.default_creation(self.group)

    def login(self, name: str, password: str) -> PostgresCredentials:
        """Stored-credential shape for another role on the same database."""
        credentials = PostgresCredentials()
        credentials.CopyFrom(self.admin)
        credentials.username = name
        credentials.password = password
        return credentials


def provision(superuser_dsn: str) -> Privileged:
    """Create, as the superuser, the privileged role, the group and a table ``t`` it may read.

    The privileged role's password is set as a verifier, so the plaintext never reaches the
    server (the log canary below relies on it).
    """
    suffix = uuid.uuid4().hex[:12]
    admin, group = f"sevvo_admin_{suffix}", f"sevvo_readers_{suffix}"
    password = dc.generate_password()
    with psycopg.connect(superuser_dsn, autocommit=True) as su:
        a, g = sql.Identifier(admin), sql.Identifier(group)
        database = sql.Identifier(su.info.dbname)
        verifier = sql.Literal(dc.scram_verifier(su, password, admin))
        for statement in (
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(a, verifier),
            sql.SQL("CREATE ROLE {} NOLOGIN").format(g),
            # ADMIN OPTION on the group is what lets CREATE ROLE ... IN ROLE put roles in it.
            sql.SQL("GRANT {} TO {} WITH ADMIN OPTION").format(g, a),
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, g),
            sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(g),
            sql.SQL("CREATE TABLE t (id int PRIMARY KEY, v text)"),
            sql.SQL("INSERT INTO t VALUES (1, 'one'), (2, 'two')"),
            sql.SQL("GRANT SELECT ON t TO {}").format(g),
            # Only for templates that grant per role (Vault's habit), not for the default.
            sql.SQL("GRANT SELECT ON t TO {} WITH GRANT OPTION").format(a),
        ):
            su.execute(statement)
    info = conninfo_to_dict(superuser_dsn)
    credentials = PostgresCredentials(
        host=str(info.get("host", "127.0.0.1")),
        port=int(info.get("port") or 5432),
        database=str(info["dbname"]),
        username=admin,
        password=password,
        ssl_mode=SSL_MODE_DISABLE,
    )
    return Privileged(superuser_dsn=superuser_dsn, admin=credentials, group=group)


def deprovision(setup: Privileged) -> None:
    """Drop every role the test made: minted leftovers, the privileged role and the group."""
    with psycopg.connect(setup.superuser_dsn, autocommit=True) as su:
        rows = su.execute(
            "SELECT r.rolname FROM pg_auth_members m"
            " JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles a ON a.oid = m.member"
            " WHERE a.rolname = %s AND starts_with(r.rolname, %s)",
            (setup.admin.username, dc.ROLE_PREFIX),
        ).fetchall()
        for name in [*sorted({row[0] for row in rows}), setup.admin.username, setup.group]:
            su.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = %s",
                (name,),
            )
            su.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            su.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def privileged(database_url: str) -> Iterator[Privileged]:
    """The per-test database with a privileged role and a read-only group, cleaned up after."""
    setup = provision(database_url)
    try:
        yield setup
    finally:
        deprovision(setup)


def run_as_admin(setup: Privileged, body: Callable[[AdminConnection], Awaitable[None]]) -> None:
    """Run ``body`` with a fresh connection of the privileged role, as the agent would."""

    async def main() -> None:
        admin = await connect(setup.admin, connect_timeout=10)
        try:
            await body(admin)
        finally:
            await admin.close()

    asyncio.run(main())


async def mint(
    admin: AdminConnection,
    setup: Privileged,
    *,
    ttl: timedelta = timedelta(minutes=5),
    purpose: str = "test",
    before_commit: Callable[[str, datetime], Awaitable[None]] | None = None,
    overlap: bool = True,
) -> dc.MintedRole:
    """Mint with the default template for this setup's group."""
    return await dc.mint(
        admin,
        creation=setup.creation,
        ttl=ttl,
        purpose=purpose,
        before_commit=before_commit,
        overlap=overlap,
    )


async def db_now(admin: AdminConnection) -> datetime:
    """The server's clock."""
    cur = await admin.execute("SELECT now()")
    row = await cur.fetchone()
    assert row is not None
    value: datetime = row[0]
    return value


async def can_log_in(credentials: PostgresCredentials) -> bool:
    """Whether a fresh login with ``credentials`` succeeds."""
    try:
        conn = await connect(credentials, connect_timeout=10)
    except psycopg.OperationalError:
        return False
    await conn.close()
    return True


def role_exists(setup: Privileged, name: str) -> bool:
    """Whether ``name`` is in pg_roles, seen by the superuser."""
    with psycopg.connect(setup.superuser_dsn) as su:
        row = su.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
    return row is not None


def catalog_snapshot(setup: Privileged) -> dict[str, Any]:
    """What role churn must leave unchanged: every role, t's ACL, the group's members."""
    with psycopg.connect(setup.superuser_dsn) as su:
        roles = [row[0] for row in su.execute("SELECT rolname FROM pg_authid ORDER BY 1")]
        relacl = su.execute("SELECT relacl::text FROM pg_class WHERE oid = 't'::regclass")
        members = su.execute(
            "SELECT member::regrole::text, grantor::regrole::text, admin_option,"
            " inherit_option, set_option FROM pg_auth_members"
            " WHERE roleid = (SELECT oid FROM pg_roles WHERE rolname = %s) ORDER BY 1",
            (setup.group,),
        ).fetchall()
        admin_grants = su.execute(
            "SELECT count(*) FROM pg_auth_members"
            " WHERE member = (SELECT oid FROM pg_roles WHERE rolname = %s)",
            (setup.admin.username,),
        ).fetchone()
        return {
            "role_count": len(roles),
            "roles": roles,
            "relacl": relacl.fetchone(),
            "group_members": members,
            "admin_grants": admin_grants,
        }


# --- minting and using ---------------------------------------------------------------------


def test_minted_role_reads_t_but_cannot_write_or_create(privileged: Privileged) -> None:
    """A role minted from the default template can SELECT from t and do nothing else."""

    async def body(admin: AdminConnection) -> None:
        minted = await mint(admin, privileged)
        user = await connect(privileged.login(minted.name, minted.password), connect_timeout=10)
        try:
            cur = await user.execute("SELECT count(*) FROM t")
            assert await cur.fetchone() == (2,)
            with pytest.raises(errors.InsufficientPrivilege):
                await user.execute("INSERT INTO t VALUES (3, 'three')")
            with pytest.raises(errors.InsufficientPrivilege):
                await user.execute("CREATE TABLE mine (x int)")
        finally:
            await user.close()

    run_as_admin(privileged, body)


def test_minted_role_expiry_is_the_server_clock_plus_ttl_in_utc(privileged: Privileged) -> None:
    """valid_until is now() + ttl by the server, in UTC, and is the role's rolvaliduntil."""

    async def body(admin: AdminConnection) -> None:
        before = await db_now(admin)
        minted = await mint(admin, privileged, ttl=timedelta(minutes=7))
        cur = await admin.execute(
            "SELECT rolvaliduntil, now() FROM pg_roles WHERE rolname = %s", (minted.name,)
        )
        row = await cur.fetchone()
        assert row is not None
        rolvaliduntil, after = row
        assert minted.valid_until.utcoffset() == timedelta(0)
        assert rolvaliduntil == minted.valid_until
        assert before + timedelta(minutes=7) <= minted.valid_until <= after + timedelta(minutes=7)

    run_as_admin(privileged, body)


def test_before_commit_runs_before_the_role_exists(privileged: Privileged) -> None:
    """The intent hook gets the name and expiry while the role does not exist yet."""
    seen: list[tuple[str, datetime, bool]] = []

    async def record(name: str, valid_until: datetime) -> None:
        seen.append((name, valid_until, role_exists(privileged, name)))

    async def body(admin: AdminConnection) -> None:
        minted = await mint(admin, privileged, purpose="hook", before_commit=record)
        assert seen == [(minted.name, minted.valid_until, False)]
        assert role_exists(privileged, minted.name)

    run_as_admin(privileged, body)


def test_failing_before_commit_creates_nothing(privileged: Privileged) -> None:
    """When the intent cannot be recorded, no role is created."""
    names: list[str] = []

    async def refuse(name: str, valid_until: datetime) -> None:
        names.append(name)
        raise ConnectionError("control plane unreachable")

    async def body(admin: AdminConnection) -> None:
        with pytest.raises(ConnectionError):
            await mint(admin, privileged, purpose="hook", before_commit=refuse)

    run_as_admin(privileged, body)
    assert len(names) == 1
    assert not role_exists(privileged, names[0])


def _admin_backend_state(setup: Privileged, admin: AdminConnection) -> str | None:
    with psycopg.connect(setup.superuser_dsn) as su:
        row = su.execute(
            "SELECT state FROM pg_stat_activity WHERE pid = %s", (admin.info.backend_pid,)
        ).fetchone()
    return None if row is None else str(row[0])


def test_the_record_overlaps_the_creation_which_commits_only_after_it(
    privileged: Privileged,
) -> None:
    """While the hook runs, the creation statements run too (their transaction is open, the
    role invisible to every other session); the role appears only after the hook returned."""
    seen: list[tuple[str, bool]] = []

    async def body(admin: AdminConnection) -> None:
        async def record(name: str, valid_until: datetime) -> None:
            deadline = time.monotonic() + 10
            while (state := _admin_backend_state(privileged, admin)) != "idle in transaction":
                assert time.monotonic() < deadline, state
                await asyncio.sleep(0.01)
            seen.append((state, role_exists(privileged, name)))

        minted = await mint(admin, privileged, purpose="overlap", before_commit=record)
        assert seen == [("idle in transaction", False)]
        assert role_exists(privileged, minted.name)
        assert admin.info.transaction_status == psycopg.pq.TransactionStatus.IDLE

    run_as_admin(privileged, body)


def test_without_overlap_the_database_sees_nothing_before_the_record(
    privileged: Privileged,
) -> None:
    """overlap=False (a refusal foreseen): the hook runs while the session sends nothing."""
    seen: list[str | None] = []

    async def body(admin: AdminConnection) -> None:
        async def record(name: str, valid_until: datetime) -> None:
            await asyncio.sleep(0.2)  # Time enough for a creation to be under way, were it sent.
            seen.append(_admin_backend_state(privileged, admin))

        await mint(admin, privileged, purpose="sequential", before_commit=record, overlap=False)

    run_as_admin(privileged, body)
    assert seen == ["idle"]


def test_a_hook_failing_after_the_creation_ran_leaves_no_role_and_a_usable_session(
    privileged: Privileged,
) -> None:
    """The creation had run (uncommitted) when the record failed: rolled back, and the
    session is idle and works for the next mint."""
    names: list[str] = []

    async def body(admin: AdminConnection) -> None:
        async def refuse(name: str, valid_until: datetime) -> None:
            names.append(name)
            deadline = time.monotonic() + 10
            while _admin_backend_state(privileged, admin) != "idle in transaction":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            raise PermissionError("connections refused the lease")

        with pytest.raises(PermissionError):
            await mint(admin, privileged, purpose="refused", before_commit=refuse)
        assert admin.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        again = await mint(admin, privileged, ttl=timedelta(minutes=5))
        assert role_exists(privileged, again.name)

    run_as_admin(privileged, body)
    assert not role_exists(privileged, names[0])


def test_the_password_stock_hands_each_pair_out_once_and_refills_in_the_background() -> None:
    """Empty at first; refilled up to its size; every verifier is its password's (RFC 5802
    key derivation, checked with the verifier's own salt); no password twice."""
    stock = dc.PasswordStock(size=3)
    iterations = 4096
    assert stock.take(iterations) is None
    stock.replenish(iterations)
    taken: list[tuple[str, str]] = []
    deadline = time.monotonic() + 10
    while len(taken) < 7:
        pair = stock.take(iterations)
        if pair is None:
            assert time.monotonic() < deadline, "the stock was not refilled"
            stock.replenish(iterations)
            time.sleep(0.005)
            continue
        taken.append(pair)
        stock.replenish(iterations)
    assert len({password for password, _ in taken}) == len(taken)
    for password, verifier in taken:
        salt = base64.b64decode(verifier.split("$")[1].split(":")[1])
        assert dc._scram_sha_256(password, iterations, salt) == verifier
    time.sleep(0.2)  # Refills stop at the size.
    held = [stock.take(iterations) for _ in range(5)]
    assert sum(pair is not None for pair in held) <= 3
    assert stock.take(1024) is None  # Another iteration count has a stock of its own.


def test_a_password_stock_of_size_zero_never_computes() -> None:
    """Size 0 turns the stock off: every mint computes its verifier."""
    stock = dc.PasswordStock(size=0)
    stock.replenish(4096)
    time.sleep(0.05)
    assert stock.take(4096) is None


def test_failing_creation_statement_leaves_no_role(privileged: Privileged) -> None:
    """Creation statements run in one transaction: a failing later one undoes the role."""
    creation = [*privileged.creation, "GRANT SELECT ON no_such_table TO {{name}}"]
    names: list[str] = []

    async def record(name: str, valid_until: datetime) -> None:
        names.append(name)

    async def body(admin: AdminConnection) -> None:
        with pytest.raises(errors.UndefinedTable):
            await dc.mint(
                admin,
                creation=creation,
                ttl=timedelta(minutes=5),
                purpose="atomic",
                before_commit=record,
            )

    run_as_admin(privileged, body)
    assert not role_exists(privileged, names[0])


def _dry_run(
    privileged: Privileged, creation: Sequence[str], revocation: Sequence[str] | None = None
) -> dc.DryRunFailure | None:
    outcome: list[dc.DryRunFailure | None] = []

    async def body(admin: AdminConnection) -> None:
        outcome.append(await dc.dry_run(admin, creation=creation, revocation=revocation))
        # The connection is back to autocommit and idle, ready for the next workload.
        assert admin.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        await admin.execute("SELECT 1")

    run_as_admin(privileged, body)
    return outcome[0]


def test_dry_run_of_working_statements_passes_and_leaves_the_catalog_as_it_was(
    privileged: Privileged,
) -> None:
    """Default and Vault-style statements run end to end, and nothing of them remains."""
    before = catalog_snapshot(privileged)
    assert _dry_run(privileged, privileged.creation) is None
    assert (
        _dry_run(
            privileged,
            [
                "CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}",
                "GRANT SELECT ON t TO {{name}}",
            ],
            ["REVOKE SELECT ON t FROM {{name}}", "ALTER ROLE {{name}} PASSWORD {{password}}"],
        )
        is None
    )
    assert catalog_snapshot(privileged) == before


@pytest.mark.parametrize(
    ("creation_extra", "revocation", "step", "sqlstate", "mentions"),
    [
        (
            ["GRANT SELECT ON no_such_table TO {{name}}"],
            None,
            "creation_statements[1]",
            "42P01",
            "no_such_table",
        ),
        (
            ["GRANT pg_read_server_files TO {{name}}"],
            None,
            "creation_statements[1]",
            "42501",
            "pg_read_server_files",
        ),
        (
            [],
            ["REVOKE SELECT ON missing_table FROM {{name}}"],
            "revocation_statements[0]",
            "42P01",
            "missing_table",
        ),
    ],
)
def test_dry_run_names_the_failing_statement_and_leaves_nothing(
    privileged: Privileged,
    creation_extra: list[str],
    revocation: list[str] | None,
    step: str,
    sqlstate: str,
    mentions: str,
) -> None:
    """The first failing statement is reported by position, SQLSTATE and the server's reason."""
    before = catalog_snapshot(privileged)
    failure = _dry_run(privileged, [*privileged.creation, *creation_extra], revocation)
    assert failure is not None
    assert (failure.step, failure.sqlstate) == (step, sqlstate)
    assert mentions in failure.message
    assert dc.ROLE_PREFIX not in failure.describe()  # The scratch name shows as {{name}}.
    assert catalog_snapshot(privileged) == before


def test_vault_style_per_role_grants_are_undone_by_default_revocation(
    privileged: Privileged,
) -> None:
    """A template granting to the role itself works, and DROP OWNED removes the grant."""
    creation = [
        "CREATE ROLE {{name}} WITH LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}",
        "GRANT SELECT ON t TO {{name}}",
    ]
    before = catalog_snapshot(privileged)

    async def body(admin: AdminConnection) -> None:
        minted = await dc.mint(admin, creation=creation, ttl=timedelta(minutes=5), purpose="v")
        user = await connect(privileged.login(minted.name, minted.password), connect_timeout=10)
        await user.execute("SELECT * FROM t")
        await user.close()
        await dc.revoke(admin, minted.name)

    run_as_admin(privileged, body)
    assert catalog_snapshot(privileged) == before


def test_templates_with_trailing_comments_run_as_written(privileged: Privileged) -> None:
    """A template line ending in a -- comment does not swallow the statement after it."""
    creation = [
        "CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}} -- role",
        "GRANT SELECT ON t TO {{name}} -- read only",
    ]
    revocation = ["DROP OWNED BY {{name}} -- grants", "DROP ROLE {{name}} -- role"]

    async def body(admin: AdminConnection) -> None:
        minted = await dc.mint(admin, creation=creation, ttl=timedelta(minutes=5), purpose="c")
        assert await can_log_in(privileged.login(minted.name, minted.password))
        await dc.revoke(admin, minted.name, revocation=revocation)
        assert not role_exists(privileged, minted.name)

    run_as_admin(privileged, body)


def test_mint_refuses_a_connection_inside_a_transaction(privileged: Privileged) -> None:
    """Staging needs each step to commit, so a non-autocommit connection is refused."""

    async def body(admin: AdminConnection) -> None:
        await admin.set_autocommit(False)
        with pytest.raises(ValueError, match="autocommit"):
            await mint(admin, privileged)

    run_as_admin(privileged, body)


# --- revoking ------------------------------------------------------------------------------


def test_revoke_ends_an_open_session_holding_a_temp_table(privileged: Privileged) -> None:
    """Revoke terminates a live session with a TEMP table, drops the role, and bars logins."""

    async def body(admin: AdminConnection) -> None:
        minted = await mint(admin, privileged)
        credentials = privileged.login(minted.name, minted.password)
        user = await connect(credentials, connect_timeout=10)
        try:
            await user.execute("CREATE TEMP TABLE scratch AS SELECT * FROM t")
            await dc.revoke(admin, minted.name)
            with pytest.raises(psycopg.OperationalError):
                await user.execute("SELECT 1")
        finally:
            await user.close()
        assert not await can_log_in(credentials)
        assert not role_exists(privileged, minted.name)

    run_as_admin(privileged, body)


def test_revoke_twice_is_not_an_error(privileged: Privileged) -> None:
    """Revoking an already revoked role succeeds and changes nothing."""

    async def body(admin: AdminConnection) -> None:
        minted = await mint(admin, privileged)
        await dc.revoke(admin, minted.name)
        await dc.revoke(admin, minted.name)
        assert not role_exists(privileged, minted.name)

    run_as_admin(privileged, body)


def test_revoke_of_a_never_minted_name_is_not_an_error(privileged: Privileged) -> None:
    """Revoking a well-formed name that never existed succeeds."""

    async def body(admin: AdminConnection) -> None:
        await dc.revoke(admin, dc.role_name("never"))

    run_as_admin(privileged, body)


def test_concurrent_revokes_of_one_role_all_succeed(privileged: Privileged) -> None:
    """Two revokers racing on the same roles (an activity retry and the reaper) both succeed."""

    async def body(admin: AdminConnection) -> None:
        other = await connect(privileged.admin, connect_timeout=10)
        try:
            names = [(await mint(admin, privileged)).name for _ in range(20)]
            for name in names:
                await asyncio.gather(dc.revoke(admin, name), dc.revoke(other, name))
            assert not any(role_exists(privileged, name) for name in names)
        finally:
            await other.close()

    run_as_admin(privileged, body)


def test_renew_racing_revoke_never_revives_or_breaks_revoke(privileged: Privileged) -> None:
    """A renewal racing a revoke either lands first or finds the role gone; revoke succeeds."""

    async def renew_or_gone(admin: AdminConnection, minted: dc.MintedRole) -> None:
        with contextlib.suppress(dc.RoleNotFound):
            await dc.renew(
                admin, minted.name, new_valid_until=minted.valid_until + timedelta(minutes=1)
            )

    async def body(admin: AdminConnection) -> None:
        other = await connect(privileged.admin, connect_timeout=10)
        try:
            minted = [await mint(admin, privileged) for _ in range(20)]
            for role in minted:
                await asyncio.gather(renew_or_gone(other, role), dc.revoke(admin, role.name))
            assert not any(role_exists(privileged, role.name) for role in minted)
        finally:
            await other.close()

    run_as_admin(privileged, body)


def test_custom_revocation_without_a_drop_still_drops_the_role(privileged: Privileged) -> None:
    """revoke() always ends with DROP ROLE IF EXISTS, whatever the template forgot."""

    async def body(admin: AdminConnection) -> None:
        minted = await mint(admin, privileged)
        await dc.revoke(admin, minted.name, revocation=["DROP OWNED BY {{name}}"])
        assert not role_exists(privileged, minted.name)

    run_as_admin(privileged, body)


def test_revocation_placeholders_scramble_and_expire(privileged: Privileged) -> None:
    """In revocation, {{password}} and {{expiration}} render as a throwaway verifier and now."""
    revocation = [
        "ALTER ROLE {{name}} PASSWORD {{password}} VALID UNTIL {{expiration}}",
        *dc.DEFAULT_REVOCATION,
    ]

    async def body(admin: AdminConnection) -> None:
        minted = await mint(admin, privileged)
        await dc.revoke(admin, minted.name, revocation=revocation)
        assert not role_exists(privileged, minted.name)

    run_as_admin(privileged, body)


def test_broken_revocation_template_fails_after_the_cut_off(privileged: Privileged) -> None:
    """A bad revocation template is reported, but only once the role is NOLOGIN."""

    async def body(admin: AdminConnection) -> None:
        minted = await mint(admin, privileged)
        with pytest.raises(TemplateError, match="unknown placeholder"):
            await dc.revoke(admin, minted.name, revocation=["DROP ROLE {{nme}}"])
        assert not await can_log_in(privileged.login(minted.name, minted.password))
        await dc.revoke(admin, minted.name)  # the default finishes the job

    run_as_admin(privileged, body)


def test_revoke_finishes_a_role_left_nologin(privileged: Privileged) -> None:
    """A revoke that stopped after NOLOGIN can be completed by the next one."""

    async def body(admin: AdminConnection) -> None:
        minted = await mint(admin, privileged)
        name = sql.Identifier(minted.name)
        await admin.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(name))
        assert await dc.find_expired(admin) == [minted.name]
        await dc.revoke(admin, minted.name)
        assert not role_exists(privileged, minted.name)

    run_as_admin(privileged, body)


@pytest.mark.parametrize("name", ["", "postgres", "sevvo_admin_x", "sevvo_dyn_", "sevvo_dyn_ABC"])
def test_revoke_refuses_names_mint_never_produces(name: str) -> None:
    """revoke() touches only prefixed, well-formed names, never the admin or a customer role."""

    async def body() -> None:
        with pytest.raises(ValueError, match="not a role name"):
            await dc.revoke(None, name)  # type: ignore[arg-type]  # never reaches the database

    asyncio.run(body())


def test_revoke_leaves_other_missing_objects_as_errors(privileged: Privileged) -> None:
    """A revocation statement naming a missing table fails instead of passing as 'done'."""
    revocation = ["REVOKE ALL ON no_such_table FROM {{name}}", *dc.DEFAULT_REVOCATION]

    async def body(admin: AdminConnection) -> None:
        minted = await mint(admin, privileged)
        with pytest.raises(errors.UndefinedTable):
            await dc.revoke(admin, minted.name, revocation=revocation)
        # Stage 1 was committed: the role can no longer log in.
        assert not await can_log_in(privileged.login(minted.name, minted.password))

    run_as_admin(privileged, body)


# --- renewing ------------------------------------------------------------------------------


def test_renew_moves_valid_until(privileged: Privileged) -> None:
    """Renewing within max_ttl moves the role's rolvaliduntil to the planned expiry."""

    async def body(admin: AdminConnection) -> None:
        minted = await mint(admin, privileged, ttl=timedelta(minutes=1))
        created_at = minted.valid_until - timedelta(minutes=1)
        now = await db_now(admin)
        new = dc.plan_renewal(created_at, timedelta(minutes=30), timedelta(hours=1), now)
        await dc.renew(admin, minted.name, new_valid_until=new)
        cur = await admin.execute(
            "SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s", (minted.name,)
        )
        assert await cur.fetchone() == (new,)
        assert new > minted.valid_until

    run_as_admin(privileged, body)


def test_renew_of_a_revoked_role_is_role_not_found(privileged: Privileged) -> None:
    """A revoked lease cannot be renewed back to life."""

    async def body(admin: AdminConnection) -> None:
        minted = await mint(admin, privileged)
        await dc.revoke(admin, minted.name)
        with pytest.raises(dc.RoleNotFound):
            await dc.renew(
                admin, minted.name, new_valid_until=minted.valid_until + timedelta(minutes=1)
            )

    run_as_admin(privileged, body)


CREATED = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "requested", "expected"),
    [
        (CREATED, timedelta(minutes=30), CREATED + timedelta(minutes=30)),
        (CREATED + timedelta(minutes=30), timedelta(minutes=30), CREATED + timedelta(hours=1)),
        (CREATED + timedelta(minutes=59), timedelta(minutes=1), CREATED + timedelta(hours=1)),
    ],
)
def test_plan_renewal_allows_up_to_max_ttl(
    now: datetime, requested: timedelta, expected: datetime
) -> None:
    """A renewal ending at or before created_at + max_ttl is granted as asked."""
    assert dc.plan_renewal(CREATED, requested, timedelta(hours=1), now) == expected


@pytest.mark.parametrize(
    ("now", "requested"),
    [
        (CREATED + timedelta(minutes=31), timedelta(minutes=30)),
        (CREATED, timedelta(hours=1, seconds=1)),
        (CREATED + timedelta(hours=2), timedelta(seconds=1)),
    ],
)
def test_plan_renewal_past_max_ttl_is_refused(now: datetime, requested: timedelta) -> None:
    """A renewal that would end past created_at + max_ttl raises RenewalRefused, saying so."""
    with pytest.raises(dc.RenewalRefused, match="past max_ttl") as caught:
        dc.plan_renewal(CREATED, requested, timedelta(hours=1), now)
    assert caught.value.reason == "LEASE_PAST_MAX_TTL"
    assert "2026-01-01 13:00:00+00:00 at the latest" in caught.value.message


def test_plan_renewal_rejects_naive_datetimes() -> None:
    """Naive datetimes are ambiguous across the agent's and the server's clocks."""
    with pytest.raises(ValueError, match="timezone-aware"):
        dc.plan_renewal(datetime(2026, 1, 1), timedelta(minutes=1), timedelta(hours=1), CREATED)


# --- reaping -------------------------------------------------------------------------------


def test_find_expired_returns_only_expired_minted_roles(privileged: Privileged) -> None:
    """Expired prefixed roles are listed; live ones and unprefixed expired roles are not."""
    other = f"other_{uuid.uuid4().hex[:10]}"

    async def body(admin: AdminConnection) -> None:
        short = await mint(admin, privileged, ttl=timedelta(seconds=1))
        await mint(admin, privileged, ttl=timedelta(hours=1))
        await admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN VALID UNTIL '2000-01-01+00'").format(
                sql.Identifier(other)
            )
        )
        await asyncio.sleep(1.2)
        assert await dc.find_expired(admin) == [short.name]
        for name in await dc.find_expired(admin):
            await dc.revoke(admin, name)
        assert await dc.find_expired(admin) == []

    try:
        run_as_admin(privileged, body)
    finally:
        with psycopg.connect(privileged.superuser_dsn, autocommit=True) as su:
            su.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(other)))


def test_find_expired_skips_roles_this_admin_cannot_revoke(privileged: Privileged) -> None:
    """An expired prefixed role of another privileged role is not this reaper's to drop."""
    foreign = dc.role_name("foreign")
    with psycopg.connect(privileged.superuser_dsn, autocommit=True) as su:
        su.execute(
            sql.SQL("CREATE ROLE {} LOGIN VALID UNTIL '2000-01-01+00'").format(
                sql.Identifier(foreign)
            )
        )

    async def body(admin: AdminConnection) -> None:
        assert await dc.find_expired(admin) == []

    try:
        run_as_admin(privileged, body)
    finally:
        with psycopg.connect(privileged.superuser_dsn, autocommit=True) as su:
            su.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(foreign)))


def test_find_expired_uses_the_given_instant(privileged: Privileged) -> None:
    """With ``now`` given, roles expiring before it are listed (the reaper can look ahead)."""

    async def body(admin: AdminConnection) -> None:
        minted = await mint(admin, privileged, ttl=timedelta(minutes=5))
        later = minted.valid_until + timedelta(seconds=1)
        assert await dc.find_expired(admin, now=later) == [minted.name]
        assert await dc.find_expired(admin) == []

    run_as_admin(privileged, body)


# --- churn ---------------------------------------------------------------------------------


def test_churn_leaves_roles_acl_and_memberships_as_they_were(
    privileged: Privileged, record_property: Callable[[str, object], None]
) -> None:
    """2,000 mint/revoke cycles leave pg_authid, t's ACL and the group's members unchanged."""
    before = catalog_snapshot(privileged)

    async def body(admin: AdminConnection) -> None:
        for _ in range(CHURN_CYCLES):
            minted = await mint(admin, privileged)
            await dc.revoke(admin, minted.name)

    started = time.perf_counter()
    run_as_admin(privileged, body)
    elapsed = time.perf_counter() - started
    record_property("churn_seconds", round(elapsed, 2))
    assert catalog_snapshot(privileged) == before


def test_parallel_churn_on_four_connections_leaves_the_catalog_as_it_was(
    privileged: Privileged,
) -> None:
    """Four agents' connections minting and revoking at once leave no trace either."""
    before = catalog_snapshot(privileged)

    async def worker() -> None:
        admin = await connect(privileged.admin, connect_timeout=10)
        try:
            for _ in range(50):
                minted = await mint(admin, privileged)
                await dc.revoke(admin, minted.name)
        finally:
            await admin.close()

    async def main() -> None:
        await asyncio.gather(*(worker() for _ in range(4)))

    asyncio.run(main())
    assert catalog_snapshot(privileged) == before


# --- root rotation -------------------------------------------------------------------------


def test_rotate_root_replaces_the_password_and_minting_continues(privileged: Privileged) -> None:
    """After rotation the old password fails, the new one logs in and can mint."""
    pending: list[str] = []

    async def seal_pending(password: str) -> None:
        pending.append(password)

    async def body(admin: AdminConnection) -> None:
        new_password = await dc.rotate_root(admin, privileged.admin, before_alter=seal_pending)
        assert pending == [new_password]
        assert new_password != privileged.admin.password
        assert not await can_log_in(privileged.admin)
        rotated = privileged.login(privileged.admin.username, new_password)
        fresh = await connect(rotated, connect_timeout=10)
        try:
            minted = await mint(fresh, privileged)
            assert await can_log_in(privileged.login(minted.name, minted.password))
            await dc.revoke(fresh, minted.name)
        finally:
            await fresh.close()

    run_as_admin(privileged, body)


def test_unverifiable_rotation_restores_the_old_password(privileged: Privileged) -> None:
    """When the fresh login fails, the old password is put back and the error says so."""
    unreachable = PostgresCredentials()
    unreachable.CopyFrom(privileged.admin)
    unreachable.port = free_port()

    async def body(admin: AdminConnection) -> None:
        # The login's category by name, as a credential test reports it.
        restored = r"\(connection_refused_or_timeout\); the old password was restored"
        with pytest.raises(dc.RootRotationFailed, match=restored) as caught:
            await dc.rotate_root(admin, unreachable, connect_timeout=5)
        assert caught.value.restored
        assert await can_log_in(privileged.admin)

    run_as_admin(privileged, body)


def test_rotate_root_refuses_credentials_of_another_role(privileged: Privileged) -> None:
    """Rotating needs a session of the role whose password changes; nothing is altered."""
    other = privileged.login("someone_else", "x")
    called: list[str] = []

    async def seal_pending(password: str) -> None:
        called.append(password)

    async def body(admin: AdminConnection) -> None:
        with pytest.raises(ValueError, match=r"credentials\.username"):
            await dc.rotate_root(admin, other, before_alter=seal_pending)
        assert called == []
        assert await can_log_in(privileged.admin)

    run_as_admin(privileged, body)


def test_root_rotation_lock_holds_back_a_second_session_until_released(
    privileged: Privileged,
) -> None:
    """Two sessions of the role: the second gets the rotation lock only after the first."""

    async def body(first: AdminConnection) -> None:
        second = await connect(privileged.admin, connect_timeout=10)
        released = asyncio.Event()

        async def wait_for_lock() -> bool:
            async with dc.root_rotation_lock(second):
                return released.is_set()

        try:
            async with dc.root_rotation_lock(first):
                waiter = asyncio.create_task(wait_for_lock())
                await asyncio.sleep(0.3)
                assert not waiter.done()
                released.set()
            assert await asyncio.wait_for(waiter, 5)
        finally:
            await second.close()

    run_as_admin(privileged, body)


def test_root_rotation_lock_gives_up_after_its_timeout(privileged: Privileged) -> None:
    """A rotation waiting longer than its timeout fails with LockNotAvailable, holding nothing."""

    async def body(first: AdminConnection) -> None:
        second = await connect(privileged.admin, connect_timeout=10)
        try:
            async with dc.root_rotation_lock(first):
                with pytest.raises(errors.LockNotAvailable):
                    async with dc.root_rotation_lock(second, timeout=timedelta(milliseconds=200)):
                        pass
            # The failed wait left the session usable and its lock_timeout as it was.
            cur = await second.execute("SHOW lock_timeout")
            assert await cur.fetchone() == ("0",)
        finally:
            await second.close()

    run_as_admin(privileged, body)


def test_root_rotation_lock_dies_with_the_session_holding_it(privileged: Privileged) -> None:
    """An agent that dies mid-rotation (its session closes) does not keep the lock."""

    async def body(admin: AdminConnection) -> None:
        crashed = await connect(privileged.admin, connect_timeout=10)
        await dc.root_rotation_lock(crashed).__aenter__()
        await crashed.close()  # No unlock: as a killed agent's session ends.
        async with dc.root_rotation_lock(admin, timeout=timedelta(seconds=5)):
            pass

    run_as_admin(privileged, body)


# --- passwords and names -------------------------------------------------------------------


def parse_verifier(verifier: str) -> tuple[int, bytes, bytes, bytes]:
    """Split ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` into its parts."""
    mechanism, scheme, keys = verifier.split("$")
    assert mechanism == "SCRAM-SHA-256"
    iterations, salt = scheme.split(":")
    stored_key, server_key = keys.split(":")
    decode = base64.b64decode
    return int(iterations), decode(salt), decode(stored_key), decode(server_key)


def test_scram_verifier_matches_libpq_for_the_same_salt(database_url: str) -> None:
    """Our RFC 5802/7677 verifier equals libpq's PQencryptPasswordConn given the same salt."""
    password = dc.generate_password()
    with psycopg.connect(database_url) as conn:
        ours = dc.scram_verifier(conn, password, "whoever")
        libpq = conn.pgconn.encrypt_password(password.encode(), b"whoever", b"scram-sha-256")
    iterations, salt, _, _ = parse_verifier(libpq.decode())
    assert dc._scram_sha_256(password, iterations, salt) == libpq.decode()
    assert password not in ours
    assert ours.startswith("SCRAM-SHA-256$4096:")
    assert len(parse_verifier(ours)[1]) == 16


def test_scram_verifier_follows_the_rfc_key_derivation(database_url: str) -> None:
    """StoredKey and ServerKey derive from PBKDF2 of the password as RFC 5802 says."""
    password = dc.generate_password()
    with psycopg.connect(database_url) as conn:
        iterations, salt, stored_key, server_key = parse_verifier(
            dc.scram_verifier(conn, password, "whoever")
        )
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    assert stored_key == hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    assert server_key == hmac.digest(salted, b"Server Key", "sha256")


@pytest.mark.parametrize(
    "password",
    [
        dc.generate_password(),
        "ascii with spaces, quotes ' \" and \\ backslash",
        # Not ASCII: SASLprep maps the Roman numeral to "IX" and removes the soft hyphen, so
        # a verifier of the raw bytes would not match what libpq's login sends.
        "p\u00e4ssw\u00f6rd-\u2168-soft\u00adhyphen",
    ],
    ids=["generated", "ascii-punctuation", "saslprep"],
)
def test_scram_verifier_logs_in(database_url: str, password: str) -> None:
    """A role whose password was set as our verifier logs in with the plaintext."""
    name = f"scram_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as su:
        verifier = dc.scram_verifier(su, password, name)
        su.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(verifier)
            )
        )
    try:
        with psycopg.connect(database_url, user=name, password=password) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (name,)
    finally:
        with psycopg.connect(database_url, autocommit=True) as su:
            su.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_minted_role_repr_hides_the_password() -> None:
    """A MintedRole in a log line or traceback shows name and expiry, never the password."""
    minted = dc.MintedRole(
        name="sevvo_dyn_x_0123456789", password="hunter2-secret", valid_until=CREATED
    )
    assert "hunter2-secret" not in repr(minted)
    assert "sevvo_dyn_x_0123456789" in repr(minted)


@given(st.text())
@settings(max_examples=300)
def test_role_names_are_prefixed_short_lowercase_and_recognised(purpose: str) -> None:
    """Whatever the purpose, a role name fits in 63 bytes and revoke() will accept it."""
    name = dc.role_name(purpose)
    assert name.startswith(dc.ROLE_PREFIX)
    assert len(name.encode()) <= 63
    assert name == name.lower()
    assert name.isascii()
    assert dc.is_minted_role_name(name)


def test_role_name_carries_a_slug_of_the_purpose() -> None:
    """The purpose shows in the name, for a DBA reading pg_stat_activity."""
    assert dc.role_name("Preview: Orders!").startswith("sevvo_dyn_preview_orders_")


# --- templates -----------------------------------------------------------------------------


GOOD_CREATION = "CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}"


@pytest.mark.parametrize(
    ("creation", "revocation", "field", "message"),
    [
        (
            ["CREATE ROLE {{name}} PASSWORD {{password}} VALID UNTIL {{expiry}}"],
            dc.DEFAULT_REVOCATION,
            "creation_statements[0]",
            "unknown placeholder",
        ),
        (
            ["CREATE ROLE {{ name }} LOGIN PASSWORD {{password}}"],
            dc.DEFAULT_REVOCATION,
            "creation_statements[0]",
            "unknown placeholder",
        ),
        (["BEGIN", GOOD_CREATION], dc.DEFAULT_REVOCATION, "creation_statements[0]", "transaction"),
        (
            [GOOD_CREATION],
            ["DROP ROLE {{name}}", "COMMIT"],
            "revocation_statements[1]",
            "transaction",
        ),
        ([GOOD_CREATION + "\0"], dc.DEFAULT_REVOCATION, "creation_statements[0]", "NUL"),
        (
            ["CREATE ROLE {{name}} LOGON PASSWORD {{password}}"],
            dc.DEFAULT_REVOCATION,
            "creation_statements[0]",
            "not valid SQL",
        ),
        (
            [GOOD_CREATION, "GRANT SELECT ON t TO {{name}"],
            dc.DEFAULT_REVOCATION,
            "creation_statements[1]",
            "unterminated placeholder",
        ),
        (
            ['CREATE ROLE "{{name}}" LOGIN PASSWORD {{password}}'],
            dc.DEFAULT_REVOCATION,
            "creation_statements[0]",
            "quotes around a placeholder",
        ),
        (
            ["CREATE ROLE {{name}} LOGIN PASSWORD '{{password}}'"],
            dc.DEFAULT_REVOCATION,
            "creation_statements[0]",
            "quotes around a placeholder",
        ),
        (
            [GOOD_CREATION],
            ["DROP ROLE x -- {{name}}"],
            "revocation_statements[0]",
            "stand on its own",
        ),
        (
            [GOOD_CREATION + "; SELECT 1"],
            dc.DEFAULT_REVOCATION,
            "creation_statements[0]",
            "exactly one SQL statement",
        ),
        (
            ["CREATE ROLE fixed LOGIN PASSWORD {{password}}"],
            dc.DEFAULT_REVOCATION,
            "creation_statements",
            "{{name}}",
        ),
        ([], dc.DEFAULT_REVOCATION, "creation_statements", "at least one"),
        ([GOOD_CREATION], "DROP ROLE {{name}}", "revocation_statements", "a list"),
    ],
)
def test_validate_templates_rejects(
    creation: Sequence[str], revocation: Sequence[str], field: str, message: str
) -> None:
    """Each broken template is rejected with the offending field and a reason."""
    with pytest.raises(TemplateError, match="^" + field.replace("[", r"\[")) as caught:
        dc.validate_templates(creation, revocation)
    assert caught.value.field == field
    assert message in caught.value.description
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("creation", "revocation"),
    [
        (dc.DEFAULT_CREATION, dc.DEFAULT_REVOCATION),
        (dc.default_creation('Group "with" spaces'), dc.DEFAULT_REVOCATION),
        # No password (certificate logins) and no revocation statements (the default).
        (["CREATE ROLE {{name}} LOGIN"], []),
        # Revocation may use every placeholder, and need not name the role.
        (
            [GOOD_CREATION],
            [
                "ALTER ROLE {{name}} PASSWORD {{password}} VALID UNTIL {{expiration}}",
                "REVOKE ALL ON t FROM PUBLIC",
            ],
        ),
        (
            [
                "CREATE ROLE {{name}} WITH LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}",
                "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{name}}",
                "COMMENT ON ROLE {{name}} IS {{expiration}}",
            ],
            [
                "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {{name}}",
                "DROP ROLE IF EXISTS {{name}}",
            ],
        ),
    ],
)
def test_validate_templates_accepts(creation: Sequence[str], revocation: Sequence[str]) -> None:
    """The defaults and Vault-style templates are accepted."""
    dc.validate_templates(creation, revocation)


@given(st.text(max_size=200))
@settings(max_examples=300)
def test_validate_templates_fails_only_with_template_error(statement: str) -> None:
    """Any text is either accepted or rejected with TemplateError, never another exception."""
    with contextlib.suppress(TemplateError):
        dc.validate_templates([statement], dc.DEFAULT_REVOCATION)


# --- log canary ----------------------------------------------------------------------------


@pytest.fixture
def logging_server() -> Iterator[EmbeddedPostgres]:
    """A throwaway server that logs every statement (log_statement = all)."""
    directory = Path(tempfile.mkdtemp(prefix="sevvo-dynpg-"))
    try:
        settings = {"log_statement": "all", "log_connections": "on"}
        with EmbeddedPostgres(directory, durable=False, settings=settings) as server:
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_no_plaintext_password_reaches_the_server_log(logging_server: EmbeddedPostgres) -> None:
    """Mint, use, renew, revoke and rotate: the server's statement log holds no password."""
    setup = provision(logging_server.url)
    passwords = [setup.admin.password]

    async def body(admin: AdminConnection) -> None:
        minted = await mint(admin, setup)
        passwords.append(minted.password)
        user = await connect(setup.login(minted.name, minted.password), connect_timeout=10)
        await user.execute("SELECT * FROM t")
        await user.close()
        await dc.renew(admin, minted.name, new_valid_until=minted.valid_until + timedelta(hours=1))
        await dc.revoke(admin, minted.name)
        passwords.append(await dc.rotate_root(admin, setup.admin))
        assert not await can_log_in(setup.admin)  # a failed login is logged too

    try:
        run_as_admin(setup, body)
    finally:
        deprovision(setup)
    log_text = logging_server.log_file.read_text(errors="replace")
    # The canary only means something if statements were logged at all.
    assert "CREATE ROLE" in log_text
    assert "PASSWORD 'SCRAM-SHA-256$4096:" in log_text
    assert len(passwords) == 3
    for password in passwords:
        assert password not in log_text


# --- PostgreSQL 15 -------------------------------------------------------------------------


@pytest.fixture
def pg15_server() -> Iterator[EmbeddedPostgres]:
    """The OS's PostgreSQL 15, where CREATEROLE gets no automatic membership of its roles."""
    bin_dir = DEBIAN_POSTGRES_ROOT / "15" / "bin"
    if not (bin_dir / "postgres").is_file():
        pytest.skip(f"no PostgreSQL 15 server in {bin_dir}")
    directory = Path(tempfile.mkdtemp(prefix="sevvo-dynpg15-"))
    try:
        with EmbeddedPostgres(directory, durable=False, bin_dir=bin_dir) as server:
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_revoke_with_open_session_works_on_postgres_15(pg15_server: EmbeddedPostgres) -> None:
    """On PostgreSQL 15 too, revoke ends a live session and drops the role."""
    setup = provision(pg15_server.url)

    async def body(admin: AdminConnection) -> None:
        assert admin.info.server_version // 10000 == 15
        minted = await mint(admin, setup)
        user = await connect(setup.login(minted.name, minted.password), connect_timeout=10)
        try:
            await user.execute("CREATE TEMP TABLE scratch AS SELECT * FROM t")
            await dc.revoke(admin, minted.name)
            with pytest.raises(psycopg.OperationalError):
                await user.execute("SELECT 1")
        finally:
            await user.close()
        assert not role_exists(setup, minted.name)

    try:
        run_as_admin(setup, body)
    finally:
        deprovision(setup)


# --- one set of template rules: the save path and the mint path agree ----------------------


def _save_path(creation: list[str], revocation: list[str]) -> tuple[str, str] | None:
    """What connections says when a dynamic connection with these templates is saved."""
    try:
        dynamic_settings(
            default_ttl_seconds=0,
            max_ttl_seconds=0,
            creation_statements=creation,
            revocation_statements=revocation,
            group_role="sevvo_readers",
            prefix="dynamic",
        )
    except InvalidArgument as exc:
        return exc.field.removeprefix("dynamic."), exc.description
    return None


def _mint_path(creation: list[str], revocation: list[str]) -> tuple[str, str] | None:
    """What the agent says of the same templates before it mints."""
    try:
        dc.validate_templates(creation, revocation)
    except TemplateError as exc:
        return exc.field, exc.description
    return None


_AGREEMENT_CORPUS = [
    *(case[1] for case in template_cases.BAD_STATEMENTS),
    template_cases.CREATE,
    template_cases.GRANT,
    "CREATE ROLE {{name}} LOGIN PASSWORD {{password}}",
    'CREATE ROLE "{{name}}" LOGIN PASSWORD {{password}}',
    "CREATE ROLE {{name}} LOGIN PASSWORD '{{password}}'",
    "DROP ROLE x -- {{name}}",
    "GRANT SELECT ON t TO {{name}} -- trailing note",
    "COMMENT ON ROLE {{name}} IS 'minted by sevvo'",
    "ALTER ROLE {{name}} VALID UNTIL {{expiration}}",
    "REASSIGN OWNED BY {{name}} TO CURRENT_USER",
]


@pytest.mark.parametrize("statement", _AGREEMENT_CORPUS)
def test_save_and_mint_paths_agree_on_each_template(statement: str) -> None:
    """Connections (at save) and the agent (at mint) accept or refuse a template alike, with
    the same field and reason, in either list: a saved template can always be minted."""
    placements: list[tuple[list[str], list[str]]] = [
        ([statement, template_cases.CREATE], []),
        ([template_cases.CREATE], [statement]),
    ]
    for creation_list, revocation_list in placements:
        assert _save_path(creation_list, revocation_list) == _mint_path(
            creation_list, revocation_list
        )


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(
            alphabet=st.sampled_from(list("{}name pswordxitCREATE ROL'\"$-;\n\x00")), max_size=60
        ),
        min_size=1,  # the save path stores the default creation for an empty list
        max_size=3,
    )
)
def test_save_and_mint_paths_agree_on_any_text(creation: list[str]) -> None:
    """Generated near-templates get the same verdict from both sides."""
    assert _save_path(creation, []) == _mint_path(creation, [])


@pytest.mark.parametrize(
    ("creation", "revocation"),
    [
        ([], []),
        ([template_cases.CREATE + " IN ROLE {group}", "GRANT SELECT ON t TO {{name}}"], []),
        (
            [
                "create role {{name}}\nlogin\tpassword {{password}} valid until {{expiration}};",
                "ALTER ROLE {{name}} SET search_path = 'é', public",
                "GRANT {group} TO {{name}} -- the readers",
            ],
            ["REVOKE {group} FROM {{name}}", "DROP OWNED BY {{name}}"],
        ),
        (
            [template_cases.CREATE, "COMMENT ON ROLE {{name}} IS 'minted by sevvo'"],
            ["ALTER ROLE {{name}} PASSWORD {{password}} VALID UNTIL {{expiration}}"],
        ),
    ],
    ids=["default", "grant", "options-and-comments", "revocation-placeholders"],
)
def test_templates_the_save_path_accepts_mint_and_revoke_on_postgres(
    privileged: Privileged, creation: list[str], revocation: list[str]
) -> None:
    """Templates as connections stores them (defaults expanded) mint a role that logs in, and
    revoke drops it, on a real server."""
    group = sql.Identifier(privileged.group).as_string()
    creation = [statement.replace("{group}", group) for statement in creation]
    revocation = [statement.replace("{group}", group) for statement in revocation]
    saved = dynamic_settings(
        default_ttl_seconds=0,
        max_ttl_seconds=0,
        creation_statements=creation,
        revocation_statements=revocation,
        group_role=privileged.group,
    )

    async def body(admin: AdminConnection) -> None:
        role = await dc.mint(
            admin, creation=saved.creation_statements, ttl=timedelta(minutes=5), purpose="agree"
        )
        assert await can_log_in(privileged.login(role.name, role.password))
        await dc.revoke(admin, role.name, revocation=saved.revocation_statements)
        assert not role_exists(privileged, role.name)

    run_as_admin(privileged, body)
