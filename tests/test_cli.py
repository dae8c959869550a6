"""The ``sevvo`` command line against the whole stack and a real agent.

One stack, one org (bootstrapped through the CLI), one agent and one source database serve
the whole module; every test drives the real command and checks its exit code, its JSON on
stdout and its messages on stderr. Most calls run ``cli.app.main`` in this process with the
user's environment, argv and stdin (tests.cli_runner); the bootstrap, the login and a few
exit codes run ``python -m cli`` as a real process, so the wiring stays covered. The last test
is a canary: no password or session token appears in anything the command printed.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shlex
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from cli.app import app
from devstack.pki import DevPki, ensure_dev_pki
from devstack.postgres import EmbeddedPostgres
from devstack.source_db import (
    SourceDatabase,
    create_dynamic_roles,
    create_source_database,
    drop_roles,
    drop_source_database,
)
from tests.cli_runner import Result, run_sevvo, run_sevvo_in_process, user_env
from tests.plugins.dev_stack import EndToEnd

ROOT = Path(__file__).resolve().parent.parent
PASSWORD_HINT = "the username or password is wrong, or the role lacks LOGIN"


@dataclass
class Sevvo:
    """Runs ``sevvo`` against the stack; keeps every output for the canary."""

    endpoint: str
    ca_file: Path
    config_dir: Path
    outputs: list[Result] = field(default_factory=list)

    def env(self, config_dir: Path | None = None) -> dict[str, str]:
        """The environment a user at this stack would have, with no output override."""
        return user_env(self.endpoint, self.ca_file, config_dir or self.config_dir)

    def __call__(
        self,
        *args: str,
        stdin: str = "",
        config_dir: Path | None = None,
        record: bool = True,
        columns: int | None = None,
        process: bool = False,
    ) -> Result:
        """Runs the command; stdout is a pipe, so output is JSON unless --output says not.
        ``columns`` sets the terminal width a table is drawn for (COLUMNS); ``process`` runs
        ``python -m cli`` as a separate process instead of ``main`` in this one."""
        env = self.env(config_dir)
        if columns is not None:
            env["COLUMNS"] = str(columns)
        if process:
            result = run_sevvo(args, env, stdin, timeout=150)
        else:
            result = run_sevvo_in_process(args, env, stdin)
        if record:
            self.outputs.append(result)
        return result

    def ok(
        self, *args: str, stdin: str = "", config_dir: Path | None = None, process: bool = False
    ) -> Any:
        """Runs the command, asserts it succeeded, and returns its JSON."""
        result = self(*args, stdin=stdin, config_dir=config_dir, process=process)
        assert result.code == 0, result.stderr
        return result.json()


@dataclass
class Org:
    """The module's org: its admin's credentials and the secrets the canary looks for."""

    org_id: str
    email: str
    password: str
    secrets: list[str]


@pytest.fixture(scope="module")
def sevvo(e2e: EndToEnd, tmp_path_factory: pytest.TempPathFactory) -> Sevvo:
    """The command, configured for the module's stack with an empty config dir."""
    return Sevvo(
        endpoint=e2e.stack.grpc_target,
        ca_file=e2e.stack.pki.ca_cert,
        config_dir=tmp_path_factory.mktemp("sevvo-config") / "sevvo",
    )


@pytest.fixture(scope="module")
def org(e2e: EndToEnd, sevvo: Sevvo) -> Org:
    """An org bootstrapped and signed in through the CLI."""
    name = f"cli-{uuid.uuid4().hex[:8]}"
    email, password = f"ada@{name}.example", secrets.token_urlsafe(18)
    created = sevvo.ok(
        "bootstrap",
        "--org",
        name,
        "--email",
        email,
        "--bootstrap-token-file",
        str(e2e.stack.bootstrap_token_file),
        "--password-stdin",
        stdin=password + "\n",
        process=True,
    )
    assert created["admin"]["email"] == email
    assert created["admin"]["role"] == "admin"
    signed_in = sevvo.ok(
        "login", "--email", email, "--password-stdin", stdin=password + "\n", process=True
    )
    assert signed_in["org_id"] == created["org_id"]
    bootstrap_token = e2e.stack.bootstrap_token_file.read_text().strip()
    return Org(created["org_id"], email, password, [password, bootstrap_token])


@pytest.fixture(scope="module")
def agent(e2e: EndToEnd, sevvo: Sevvo, org: Org) -> str:
    """The org's agent, running on a deployment token made with ``deployments create``."""
    created = sevvo.ok("deployments", "create", "--name", "cli-agent")
    e2e.stack.start_agent(created["token"], name=f"cli-agent-{org.org_id[:8]}", wait=True)
    return str(created["deployment"]["id"])


@pytest.fixture(scope="module")
def source(tls_source_pg: EmbeddedPostgres, org: Org) -> Iterator[SourceDatabase]:
    """A seeded database (customers, orders) with a reader role on a TLS server."""
    suffix = uuid.uuid4().hex[:12]
    database, reader = f"cli_{suffix}", f"cli_reader_{suffix}"
    try:
        db = create_source_database(
            tls_source_pg.url,
            database=database,
            reader=reader,
            reader_password=secrets.token_urlsafe(24),
        )
        org.secrets.append(db.reader_password)
        yield db
    finally:
        drop_source_database(tls_source_pg.url, database=database, reader=reader)


def _field_args(db: SourceDatabase, name: str, username: str | None = None) -> list[str]:
    return [
        "connections",
        "create",
        "--name",
        name,
        "--host",
        "localhost",
        "--port",
        str(db.port),
        "--database",
        db.database,
        "--username",
        username or db.reader,
        "--ssl-mode",
        "require",
        "--password-stdin",
    ]


@contextlib.contextmanager
def _login_role(
    server: EmbeddedPostgres, db: SourceDatabase, prefix: str, password: str
) -> Iterator[str]:
    """A login role with CONNECT on ``db`` for the duration of a test."""
    role = f"{prefix}{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("create role {} login password {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        conn.execute(
            sql.SQL("grant connect on database {} to {}").format(
                sql.Identifier(db.database), sql.Identifier(role)
            )
        )
    try:
        yield role
    finally:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("revoke all on database {} from {}").format(
                    sql.Identifier(db.database), sql.Identifier(role)
                )
            )
            conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


@pytest.fixture(scope="module")
def connection_id(sevvo: Sevvo, agent: str, source: SourceDatabase) -> str:
    """A connection made from flags with the password on stdin (tested by the agent)."""
    created = sevvo.ok(*_field_args(source, "shop"), stdin=source.reader_password + "\n")
    assert created["status"] == "connected"
    return str(created["id"])


# --- signing in ------------------------------------------------------------------------------


def test_bootstrap_with_a_wrong_token_is_permission_denied(
    sevvo: Sevvo, tmp_path: Path, org: Org
) -> None:
    """A wrong bootstrap token exits 4 naming the reason, and the token is not echoed."""
    wrong = tmp_path / "token"
    wrong.write_text("wrong-" + secrets.token_urlsafe(32))
    result = sevvo(
        "bootstrap",
        "--org",
        "Other",
        "--email",
        "eve@other.example",
        "--bootstrap-token-file",
        str(wrong),
        "--password-stdin",
        stdin=org.password + "\n",
    )
    assert result.code == 4
    assert "BOOTSTRAP_TOKEN_INVALID" in result.stderr
    assert wrong.read_text() not in result.stdout + result.stderr


def test_login_stores_the_session_owner_only(sevvo: Sevvo, org: Org) -> None:
    """The session file is 0600 in a 0700 dir, and whoami reads the caller from the server."""
    session_file = sevvo.config_dir / "session.json"
    assert session_file.stat().st_mode & 0o777 == 0o600
    assert sevvo.config_dir.stat().st_mode & 0o777 == 0o700
    org.secrets.append(json.loads(session_file.read_text())["session_token"])
    me = sevvo.ok("whoami")
    assert (me["kind"], me["org_id"], me["email"]) == ("user", org.org_id, org.email)
    assert "session_token" not in me


def test_login_with_a_wrong_password_fails_without_echoing_it(
    sevvo: Sevvo, org: Org, tmp_path: Path
) -> None:
    """A wrong password exits 3 with the server's message; nothing is stored or echoed."""
    wrong = "not-" + org.password
    result = sevvo(
        "login",
        "--email",
        org.email,
        "--password-stdin",
        stdin=wrong + "\n",
        config_dir=tmp_path,
        process=True,
    )
    assert result.code == 3
    assert "email or password is incorrect" in result.stderr
    assert wrong not in result.stdout + result.stderr
    assert not (tmp_path / "session.json").exists()


def test_commands_need_a_session(sevvo: Sevvo, tmp_path: Path) -> None:
    """Without a session, a command exits 3 and says to sign in."""
    result = sevvo("connections", "list", config_dir=tmp_path)
    assert result.code == 3
    assert "not signed in: run sevvo login" in result.stderr


def test_an_expired_session_says_so(sevvo: Sevvo, tmp_path: Path) -> None:
    """A session past its expiry exits 3 with "session expired: run sevvo login"."""
    expired = {
        "endpoint": sevvo.endpoint,
        "session_token": "x.y.z",
        "expire_time": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "email": "a@b.example",
        "org_id": str(uuid.uuid4()),
        "user_id": str(uuid.uuid4()),
    }
    (tmp_path / "session.json").write_text(json.dumps(expired))
    result = sevvo("users", "list", config_dir=tmp_path)
    assert result.code == 3
    assert "session expired: run sevvo login" in result.stderr


def test_a_member_is_refused_admin_commands_and_can_log_out(
    sevvo: Sevvo, org: Org, tmp_path: Path
) -> None:
    """users create makes a member; the member's audit list exits 4; logout forgets it."""
    email, password = f"grace-{uuid.uuid4().hex[:6]}@example.com", secrets.token_urlsafe(18)
    org.secrets.append(password)
    user = sevvo.ok(
        "users",
        "create",
        "--email",
        email,
        "--role",
        "member",
        "--password-stdin",
        stdin=password + "\n",
    )
    assert user["role"] == "member"
    listed = sevvo.ok("users", "list")["users"]
    assert {u["email"] for u in listed} == {org.email, email}
    assert sevvo.ok("users", "get", user["id"])["email"] == email
    sevvo.ok(
        "login", "--email", email, "--password-stdin", stdin=password + "\n", config_dir=tmp_path
    )
    org.secrets.append(json.loads((tmp_path / "session.json").read_text())["session_token"])
    refused = sevvo("audit", "list", config_dir=tmp_path)
    assert refused.code == 4
    assert "ADMIN_REQUIRED" in refused.stderr
    assert sevvo.ok("logout", config_dir=tmp_path) == {
        "signed_out": True,
        "revoked": True,
        "everywhere": False,
    }
    assert sevvo("users", "list", config_dir=tmp_path).code == 3


# --- deployments -----------------------------------------------------------------------------


def test_deployments_create_list_and_revoke(sevvo: Sevvo, agent: str) -> None:
    """The token is printed once with a warning; list shows it; revoke marks it revoked."""
    created = sevvo("deployments", "create", "--name", "spare")
    assert created.code == 0
    assert "shown only this once" in created.stderr
    body = created.json()
    assert set(body) == {"deployment", "token"}
    assert body["token"].startswith("sevvo_dt_")
    spare = body["deployment"]["id"]
    listed = sevvo.ok("deployments", "list")["deployments"]
    assert {d["id"]: d["state"] for d in listed} == {agent: "active", spare: "active"}
    revoked = sevvo.ok("deployments", "revoke", spare, "--yes")
    assert revoked["state"] == "revoked"
    assert revoked["revoke_time"]
    # The token lives only in that one output; the canary checks the rest.
    sevvo.outputs.remove(created)


def test_a_deployment_token_can_go_to_a_private_file_and_nowhere_else(
    sevvo: Sevvo, org: Org, tmp_path: Path
) -> None:
    """--token-file writes the token to a new 0600 file and prints it nowhere; an existing
    file is never overwritten (it may hold another deployment's only copy)."""
    path = tmp_path / "agent.token"
    result = sevvo("deployments", "create", "--name", "filed", "--token-file", str(path))
    assert result.code == 0, result.stderr
    token = path.read_text().strip()
    org.secrets.append(token)
    assert token and token not in result.stdout + result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert result.json()["token_file"] == str(path)
    again = sevvo("deployments", "create", "--name", "filed-2", "--token-file", str(path))
    assert again.code == 2
    assert path.read_text().strip() == token
    revoked = sevvo("deployments", "revoke", "filed")
    assert revoked.code == 2
    assert "pass --yes" in revoked.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--output", "table", "deployments", "list"),
        ("deployments", "list", "--output", "table"),
        ("deployments", "list", "-o", "table"),
    ],
    ids=["before", "after", "short-after"],
)
def test_table_output_can_be_forced(sevvo: Sevvo, agent: str, args: tuple[str, ...]) -> None:
    """--output table prints a table with headers and names, not JSON, even into a pipe,
    whether it comes before or after the subcommand (as the help's examples write it)."""
    result = sevvo(*args)
    assert result.code == 0
    assert "name" in result.stdout
    assert "cli-agent" in result.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stdout)


# --- connections -----------------------------------------------------------------------------


def test_connections_get_list_and_test(sevvo: Sevvo, connection_id: str) -> None:
    """get and list show metadata but never a password; test exits 0 when connected."""
    got = sevvo.ok("connections", "get", connection_id)
    assert got["credential_mode"] == "fields"
    assert got["has_password"] is True
    assert got["safe_metadata"]["ssl_mode"] == "require"
    assert "password" not in got["safe_metadata"]
    listed = sevvo.ok("connections", "list")["connections"]
    assert connection_id in [c["id"] for c in listed]
    tested = sevvo.ok("connections", "test", connection_id)
    assert (tested["status"], tested["last_test_category"]) == ("connected", "")


def test_connections_create_from_a_dsn(sevvo: Sevvo, agent: str, source: SourceDatabase) -> None:
    """A DSN without a password plus the password on stdin makes a dsn-mode connection."""
    dsn = f"postgresql://{source.reader}@localhost:{source.port}/{source.database}?sslmode=require"
    created = sevvo.ok(
        "connections",
        "create",
        "--name",
        "shop-dsn",
        "--dsn",
        dsn,
        "--password-stdin",
        stdin=source.reader_password + "\n",
    )
    assert (created["credential_mode"], created["status"]) == ("dsn", "connected")
    assert created["safe_metadata"]["database"] == source.database


def test_a_dsn_holding_a_password_is_refused(sevvo: Sevvo, org: Org) -> None:
    """A password inside --dsn is a usage error that says to use stdin and never echoes it."""
    secret = secrets.token_urlsafe(12)
    result = sevvo(
        "connections",
        "create",
        "--name",
        "bad",
        "--dsn",
        f"postgresql://reader:{secret}@localhost:5432/db",
    )
    assert result.code == 2
    assert "contains a password" in result.stderr
    assert "stdin" in result.stderr
    assert secret not in result.stdout + result.stderr


def test_a_wrong_password_shows_the_hint_and_rotation_fixes_it(
    sevvo: Sevvo, org: Org, agent: str, source: SourceDatabase, tls_source_pg: EmbeddedPostgres
) -> None:
    """Creating with a wrong password, or testing after the role's password changed, exits 1
    with the category and the guide's hint; rotate-password makes the test pass again."""
    first, second = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    org.secrets += [first, second]
    with _login_role(tls_source_pg, source, "cli_rot_", first) as role:
        refused = sevvo(*_field_args(source, "rot", role), stdin=second + "\n")
        assert refused.code == 1
        assert "password_authentication_failed" in refused.stderr
        assert PASSWORD_HINT in refused.stderr
        assert "hint: test from the agent's host with psql" in refused.stderr
        created = sevvo.ok(*_field_args(source, "rot", role), stdin=first + "\n")
        with psycopg.connect(tls_source_pg.url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("alter role {} password {}").format(
                    sql.Identifier(role), sql.Literal(second)
                )
            )
        failed = sevvo("connections", "test", created["id"])
        assert failed.code == 1
        assert failed.json()["status"] == "error"
        assert "category: password_authentication_failed" in failed.stderr
        assert f"password authentication failed: {PASSWORD_HINT}" in failed.stderr
        assert "hint: test from the agent's host with psql" in failed.stderr
        rotated = sevvo.ok(
            "connections",
            "rotate-password",
            created["id"],
            "--password-stdin",
            stdin=second + "\n",
        )
        assert rotated["status"] == "connected"
        assert sevvo("connections", "test", created["id"]).code == 0
        unconfirmed = sevvo("connections", "delete", created["id"])
        assert unconfirmed.code == 2
        assert "--yes" in unconfirmed.stderr
        assert sevvo.ok("connections", "delete", created["id"], "--yes") == {
            "deleted": created["id"]
        }
        assert sevvo("connections", "get", created["id"]).code == 5


def test_a_missing_connection_is_not_found(sevvo: Sevvo, org: Org) -> None:
    """NOT_FOUND exits 5 with the server's reason (a real process: the exit status is its)."""
    result = sevvo("connections", "get", str(uuid.uuid4()), process=True)
    assert result.code == 5
    assert "CONNECTION_NOT_FOUND" in result.stderr


# --- preview and runs ------------------------------------------------------------------------

WIDE_QUERY = (
    "select n as id, repeat('x', 2000) as big, null::text as nothing"
    " from generate_series(1, 150) as n order by n"
)


def test_preview_json_shape(sevvo: Sevvo, connection_id: str) -> None:
    """JSON has columns with types, rows keyed by column with null, truncated, the cut cells
    and the run id."""
    preview = sevvo.ok("preview", connection_id, WIDE_QUERY)
    assert preview["category"] == "ok"
    assert preview["columns"] == [
        {"name": "id", "key": "id", "type": "integer"},
        {"name": "big", "key": "big", "type": "text"},
        {"name": "nothing", "key": "nothing", "type": "text"},
    ]
    assert len(preview["rows"]) == 100
    assert preview["rows"][0]["id"] == "1"
    assert len(preview["rows"][0]["big"]) == 1024
    assert preview["rows"][0]["nothing"] is None
    assert preview["truncated"] is True
    assert preview["truncated_cells"] == [[r, "big"] for r in range(100)]
    run = sevvo.ok("runs", "get", preview["run_id"])
    assert (run["kind"], run["row_count"], run["truncated"]) == ("preview", 100, True)
    assert sevvo.ok("runs", "wait", preview["run_id"], "--timeout", "0") == run
    me = sevvo.ok("whoami")
    assert run["creator"] == f"user:{me['user_id']}"
    runs = sevvo.ok("runs", "list", "--connection", connection_id)["runs"]
    assert preview["run_id"] in [r["id"] for r in runs]
    assert {r["connection_id"] for r in runs} == {connection_id}


def test_preview_table_marks_cut_cells(sevvo: Sevvo, connection_id: str, tmp_path: Path) -> None:
    """The table marks cut cells with … and explains it, and says the rows were truncated."""
    query = tmp_path / "q.sql"
    query.write_text(WIDE_QUERY)
    result = sevvo("--output", "table", "preview", connection_id, "--file", str(query))
    assert result.code == 0
    assert "x…" in result.stdout
    assert "cut at 1,024 characters" in result.stderr
    assert "truncated" in result.stderr


def test_a_write_is_rejected_with_its_category(sevvo: Sevvo, connection_id: str) -> None:
    """A DELETE (SQL read from stdin) exits 1 with query_rejected and the guide's hint."""
    result = sevvo("preview", connection_id, "-", stdin="delete from orders")
    assert result.code == 1
    assert result.json()["category"] == "query_rejected"
    assert "category: query_rejected" in result.stderr
    assert "hint: preview one read-only statement" in result.stderr


def test_preview_shows_a_clean_receipt(sevvo: Sevvo, connection_id: str) -> None:
    """JSON carries the clean receipt; the table's footnote says what it proved."""
    preview = sevvo.ok("preview", connection_id, "select 1 as one")
    assert preview["receipt"] == {
        "status": "clean",
        "transaction_id_assigned": False,
        "advisory_locks_held": 0,
        "role_sessions_ended": 0,
        "backend_terminated": False,
        "backend_outlived_call": False,
    }
    table = sevvo("--output", "table", "preview", connection_id, "select 1 as one")
    assert table.code == 0
    assert (
        "receipt: clean — no transaction id, no advisory lock, no session of the role ended\n"
        in table.stderr
    )
    assert "warning" not in table.stderr


# --- preview settings ------------------------------------------------------------------------

EXPENSIVE_QUERY = "select count(*) as n from generate_series(1, 100000)"
"""A statement the planner estimates at over 1,000: above the budget of 100 below."""


@pytest.fixture(scope="module")
def budgeted(sevvo: Sevvo, agent: str, source: SourceDatabase) -> dict[str, Any]:
    """A connection created with two allowed functions and a plan-cost budget of 100; the
    tests below change its settings in file order."""
    return dict(
        sevvo.ok(
            *_field_args(source, "budgeted"),
            "--allow-function",
            "similarity",
            "--allow-function",
            "public.word_similarity",
            "--max-plan-cost",
            "100",
            stdin=source.reader_password + "\n",
        )
    )


def test_create_keeps_the_preview_settings_and_get_shows_them(
    sevvo: Sevvo, budgeted: dict[str, Any]
) -> None:
    """--allow-function and --max-plan-cost are stored; get shows them as JSON and a table."""
    expected = {
        "allowed_functions": ["similarity", "public.word_similarity"],
        "max_plan_cost": 100.0,
    }
    assert budgeted["preview"] == expected
    assert sevvo.ok("connections", "get", budgeted["id"])["preview"] == expected
    table = sevvo("--output", "table", "connections", "get", budgeted["id"])
    assert table.code == 0
    assert re.search(r"preview functions +similarity, public\.word_similarity *\n", table.stdout)
    assert re.search(r"preview cost budget +100 *\n", table.stdout)


def test_a_preview_over_the_cost_budget_is_refused(sevvo: Sevvo, budgeted: dict[str, Any]) -> None:
    """A statement estimated above --max-plan-cost exits 1 with over_cost_budget and its hint."""
    result = sevvo("preview", budgeted["id"], EXPENSIVE_QUERY)
    assert result.code == 1
    assert (result.json()["category"], result.json()["rows"]) == ("over_cost_budget", [])
    assert "category: over_cost_budget" in result.stderr
    assert "hint: narrow it with a WHERE clause or a LIMIT" in result.stderr


def test_update_replaces_the_allowed_functions_and_keeps_the_budget(
    sevvo: Sevvo, budgeted: dict[str, Any]
) -> None:
    """update --allow-function replaces the whole list; the budget it was not given stays."""
    updated = sevvo.ok("connections", "update", budgeted["id"], "--allow-function", "levenshtein")
    expected = {"allowed_functions": ["levenshtein"], "max_plan_cost": 100.0}
    assert updated["preview"] == expected
    assert sevvo.ok("connections", "get", budgeted["id"])["preview"] == expected


def test_update_clears_the_allowed_functions_and_the_budget(
    sevvo: Sevvo, budgeted: dict[str, Any]
) -> None:
    """--no-allowed-functions empties the list, --max-plan-cost 0 removes the budget, and the
    statement the budget refused then runs."""
    cleared = sevvo.ok("connections", "update", budgeted["id"], "--no-allowed-functions")
    assert cleared["preview"] == {"allowed_functions": [], "max_plan_cost": 100.0}
    unbounded = sevvo.ok("connections", "update", budgeted["id"], "--max-plan-cost", "0")
    assert unbounded["preview"] is None
    assert sevvo.ok("preview", budgeted["id"], EXPENSIVE_QUERY)["rows"] == [{"n": "100000"}]


def test_update_renames_and_keeps_everything_else(sevvo: Sevvo, budgeted: dict[str, Any]) -> None:
    """update --name changes the name only: no test runs, the details stay."""
    before = sevvo.ok("connections", "get", budgeted["id"])
    renamed = sevvo.ok("connections", "update", budgeted["id"], "--name", "budgeted-2")
    assert renamed["display_name"] == "budgeted-2"
    unchanged = ("safe_metadata", "status", "last_test_time", "preview")
    assert {k: renamed[k] for k in unchanged} == {k: before[k] for k in unchanged}


def test_update_of_a_detail_that_fails_its_test_changes_nothing(
    sevvo: Sevvo, budgeted: dict[str, Any]
) -> None:
    """A new port the agent cannot reach exits 1 with the category; the old port stays."""
    before = sevvo.ok("connections", "get", budgeted["id"])
    result = sevvo("connections", "update", budgeted["id"], "--port", "1")
    assert result.code == 1
    assert "CREDENTIAL_TEST_FAILED" in result.stderr
    assert "category: connection_refused_or_timeout" in result.stderr
    after = sevvo.ok("connections", "get", budgeted["id"])
    assert after["safe_metadata"] == before["safe_metadata"]
    assert after["update_time"] == before["update_time"]


def test_update_logs_in_as_another_role_with_its_password(
    sevvo: Sevvo,
    org: Org,
    budgeted: dict[str, Any],
    source: SourceDatabase,
    tls_source_pg: EmbeddedPostgres,
) -> None:
    """--username with --password-stdin moves the login to another role in one tested step."""
    password = secrets.token_urlsafe(18)
    org.secrets.append(password)
    with _login_role(tls_source_pg, source, "cli_switch_", password) as role:
        switched = sevvo.ok(
            "connections",
            "update",
            budgeted["id"],
            "--username",
            role,
            "--password-stdin",
            stdin=password + "\n",
        )
        assert (switched["safe_metadata"]["username"], switched["status"]) == (role, "connected")
        assert sevvo.ok("preview", budgeted["id"], "select current_user as u")["rows"] == [
            {"u": role}
        ]


def test_verify_full_with_a_ca_file_end_to_end(
    sevvo: Sevvo, agent: str, source: SourceDatabase, dev_pki: DevPki, tmp_path: Path
) -> None:
    """create --ssl-mode verify-full --ssl-root-cert connects and shows the bundle; update
    with another CA's file, or to an address the certificate lacks, exits 1 with the category
    and changes nothing; verify-ca by that address passes; require drops the bundle."""
    other_ca = ensure_dev_pki(tmp_path / "other").ca_cert
    created = sevvo.ok(
        *_field_args(source, "shop-verified")[:-3],
        "--ssl-mode",
        "verify-full",
        "--ssl-root-cert",
        str(dev_pki.ca_cert),
        "--password-stdin",
        stdin=source.reader_password + "\n",
    )
    meta = created["safe_metadata"]
    assert (created["status"], meta["ssl_mode"]) == ("connected", "verify_full")
    assert [c["subject"] for c in meta["ssl_root_certs"]] == ["CN=sevvo development CA"]
    connection = created["id"]

    for args in (("--ssl-root-cert", str(other_ca)), ("--host", "127.0.0.1")):
        refused = sevvo("connections", "update", connection, *args)
        assert refused.code == 1, args
        assert "category: ssl_certificate_unverified" in refused.stderr
        assert "server certificate could not be verified:" in refused.stderr
        assert sevvo.ok("connections", "get", connection)["safe_metadata"] == meta

    by_address = sevvo.ok(
        "connections", "update", connection, "--host", "127.0.0.1", "--ssl-mode", "verify-ca"
    )
    assert by_address["safe_metadata"]["ssl_root_certs"] == meta["ssl_root_certs"]
    plain_tls = sevvo.ok("connections", "update", connection, "--ssl-mode", "require")
    assert plain_tls["safe_metadata"]["ssl_root_certs"] == []
    assert plain_tls["status"] == "connected"


def test_a_ca_file_holding_a_private_key_is_refused(
    sevvo: Sevvo, agent: str, source: SourceDatabase, dev_pki: DevPki, tmp_path: Path
) -> None:
    """A bundle with a key in it exits 2 naming --ssl-root-cert, and never prints the key."""
    bundle = tmp_path / "bundle.pem"
    key = dev_pki.server_key.read_text()
    bundle.write_text(dev_pki.ca_cert.read_text() + key)
    result = sevvo(
        *_field_args(source, "shop-key")[:-3],
        "--ssl-mode",
        "verify-ca",
        "--ssl-root-cert",
        str(bundle),
        "--password-stdin",
        stdin=source.reader_password + "\n",
    )
    assert result.code == 2
    assert "--ssl-root-cert: contains a private key" in result.stderr
    assert key.splitlines()[1] not in result.stdout + result.stderr


# --- leases and audit ------------------------------------------------------------------------


def test_a_dynamic_connection_previews_through_a_leased_role(
    sevvo: Sevvo, org: Org, agent: str, source: SourceDatabase, tls_source_pg: EmbeddedPostgres
) -> None:
    """--dynamic saves a privileged role; a preview runs as a minted role that leases list
    shows (no password); leases revoke --all is accepted."""
    password = secrets.token_urlsafe(18)
    org.secrets.append(password)
    admin = tls_source_pg.admin_url(source.database)
    group, privileged = create_dynamic_roles(
        admin, database=source.database, password=password, prefix="cli_"
    )
    try:
        created = sevvo.ok(
            *_field_args(source, "dyn", privileged)[:-1],
            "--dynamic",
            "--default-ttl",
            "5m",
            "--max-ttl",
            "1h",
            "--group-role",
            group,
            "--password-stdin",
            stdin=password + "\n",
        )
        assert created["credential_mode"] == "dynamic"
        assert created["dynamic"]["default_ttl_seconds"] == 300
        assert created["dynamic"]["max_ttl_seconds"] == 3600
        preview = sevvo.ok("preview", created["id"], "select count(*) as n from orders")
        assert preview["rows"] == [{"n": "200"}]
        leases = sevvo.ok("leases", "list", "--connection", created["id"])["leases"]
        assert leases
        assert all(lease["role_name"].startswith("sevvo_dyn_") for lease in leases)
        assert all("password" not in lease for lease in leases)
        assert "leases" in sevvo.ok("leases", "revoke", "--connection", created["id"], "--all")
        rotated = sevvo.ok("connections", "rotate-root", created["id"])
        assert (rotated["kind"], rotated["outcome_category"]) == ("root_rotation", "rotated")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(
                host="localhost",
                port=source.port,
                dbname=source.database,
                user=privileged,
                password=password,
                sslmode="require",
            ).close()
        again = sevvo.ok("preview", created["id"], "select count(*) as n from orders")
        assert again["rows"] == [{"n": "200"}]
        # --every 30d schedules (next time shown), 5m is refused with the range, the schedule
        # reads back, and off removes it.
        scheduled = sevvo.ok(
            "connections", "schedule-root-rotation", created["id"], "--every", "30d"
        )
        assert scheduled["connection_id"] == created["id"]
        assert scheduled["next_rotation_time"]
        assert scheduled["interval"] == "2592000s"  # Protobuf's JSON form of a Duration.
        table = sevvo("connections", "schedule-root-rotation", created["id"], "--output", "table")
        assert table.code == 0 and "30d" in table.stdout and "seconds" not in table.stdout
        refused = sevvo("connections", "schedule-root-rotation", created["id"], "--every", "5m")
        assert refused.code != 0
        assert "1 hour to 365 days" in refused.stderr
        shown = sevvo.ok("connections", "schedule-root-rotation", created["id"])
        assert shown["interval"] == scheduled["interval"]
        removed = sevvo.ok("connections", "schedule-root-rotation", created["id"], "--every", "off")
        assert removed["next_rotation_time"] is None
        assert sevvo.ok("connections", "schedule-root-rotation", created["id"])["interval"] is None
    finally:
        drop_roles(admin, privileged, group)


@pytest.mark.parametrize(
    "args",
    [("deployments", "create", "--name", " "), ("runs", "list", "--page-token", "bad token")],
    ids=["blank-name", "page-token"],
)
def test_an_invalid_request_is_a_usage_error(sevvo: Sevvo, org: Org, args: tuple[str, ...]) -> None:
    """What the server refuses as INVALID_ARGUMENT exits 2, like a usage error, naming the
    field; not 1, which means the operation itself failed."""
    result = sevvo(*args)
    assert result.code == 2, result.stderr
    assert "reason: INVALID_" in result.stderr


def test_rotate_root_of_a_fixed_password_connection_fails_clearly(
    sevvo: Sevvo, connection_id: str
) -> None:
    """Only a dynamic connection has a privileged password: refused, with the reason."""
    for args in (
        ("connections", "rotate-root", connection_id),
        ("connections", "schedule-root-rotation", connection_id, "--every", "30d"),
    ):
        result = sevvo(*args)
        assert result.code == 1, args
        assert "NOT_DYNAMIC" in result.stderr
        assert "not dynamic" in result.stderr


def test_leases_list_and_revoke_usage(sevvo: Sevvo, connection_id: str) -> None:
    """A fields connection has no leases; revoke needs exactly one of --lease and --all."""
    assert sevvo.ok("leases", "list", "--connection", connection_id, "--state", "active") == {
        "leases": [],
        "next_page_token": "",
    }
    assert sevvo("leases", "revoke", "--connection", connection_id).code == 2


def test_audit_list_follows_the_limit(sevvo: Sevvo, connection_id: str) -> None:
    """The audit log shows the connection's creation; --limit caps the events returned."""
    events = sevvo.ok("audit", "list", "--limit", "500")["events"]
    created = [e for e in events if e["action"] == "connection.create"]
    assert connection_id in [e["target_id"] for e in created]
    assert {e["outcome"] for e in created} <= {"success", "failure"}
    assert len(sevvo.ok("audit", "list", "--limit", "2")["events"]) == 2


def test_a_list_says_when_more_follow_and_pages_on(sevvo: Sevvo, connection_id: str) -> None:
    """A list cut at --limit says so (token in JSON, a line on stderr for a table), the token
    continues it with the next events, and --all shows everything."""
    everything = sevvo.ok("audit", "list", "--all")
    assert everything["next_page_token"] == ""
    assert len(everything["events"]) >= 2
    first = sevvo.ok("audit", "list", "--limit", "1")
    assert first["next_page_token"]
    second = sevvo.ok("audit", "list", "--limit", "1", "--page-token", first["next_page_token"])
    ids = [e["id"] for e in everything["events"]]
    assert [first["events"][0]["id"], second["events"][0]["id"]] == ids[:2]
    table = sevvo("audit", "list", "--limit", "1", "--output", "table")
    assert table.code == 0
    assert "more events follow: sevvo audit list --page-token " in table.stderr


def test_audit_list_filters_by_action_actor_target_and_time(
    sevvo: Sevvo, org: Org, connection_id: str
) -> None:
    """--action (exact or a prefix), --actor (email or id), --target (id or name) and
    --since/--until (ISO or a duration ago) narrow the list; the paging hint repeats them."""
    created = sevvo.ok("audit", "list", "--action", "connection.create", "--target", "shop")
    assert [(e["target_id"], e["actor_email"]) for e in created["events"]] == [
        (connection_id, org.email)
    ]
    prefixed = sevvo.ok("audit", "list", "--action", "connection.", "--all")["events"]
    assert prefixed and {e["action"].split(".")[0] for e in prefixed} == {"connection"}
    by_email = sevvo.ok("audit", "list", "--actor", org.email, "--all")["events"]
    assert by_email and {e["actor_email"] for e in by_email} == {org.email}
    by_id = sevvo.ok("audit", "list", "--actor", by_email[0]["actor_id"], "--all")["events"]
    assert {e["id"] for e in by_email} <= {e["id"] for e in by_id}
    everything = sevvo.ok("audit", "list", "--all")["events"]
    assert len(sevvo.ok("audit", "list", "--since", "1h", "--all")["events"]) == len(everything)
    assert sevvo.ok("audit", "list", "--until", "1h")["events"] == []
    assert sevvo.ok("audit", "list", "--since", "2999-01-01")["events"] == []

    assert len(by_email) >= 2  # Signed in, then created the connection.
    table = sevvo(
        "audit", "list", "--actor", org.email, "--since", "1d", "--limit", "1", "-o", "table"
    )
    assert table.code == 0, table.stderr
    hint = re.search(r"more events follow: (sevvo audit list .*--page-token \S+)", table.stderr)
    assert hint is not None, table.stderr
    again = shlex.split(hint.group(1))[1:]
    assert again[:5] == ["audit", "list", "--actor", org.email, "--since"]
    assert sevvo.ok(*again, "--limit", "1")["events"][0]["id"] == by_email[1]["id"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--since", "yesterday"), "--since: 'yesterday' is not a time"),
        (("--action", "connection.*"), "action: must be an action"),
        (("--since", "1h", "--until", "2h"), "end_time: must be after start_time"),
        (("--actor", "ffff"), "no user or deployment has the id"),
    ],
)
def test_audit_list_refuses_filters_it_cannot_mean(
    sevvo: Sevvo, org: Org, args: tuple[str, ...], says: str
) -> None:
    """A malformed time or action, a backwards range, an unknown actor: each says what is wrong
    and exits 2 (usage) or 5 (nothing has that name)."""
    result = sevvo("audit", "list", *args)
    assert result.code in (2, 5), result.stderr
    assert says in result.stderr


# users list of an org with an admin and a member, as drawn for an 80- and a 120-column
# terminal: ids (as the table shows them, 8 characters) masked as XXXXXXXX, UTC times as
# YYYY-MM-DD hh:mm:ssZ, trailing spaces stripped.
USERS_TABLE_120 = """\
 id       ┃ email                         ┃ role   ┃ state  ┃ created
━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━╇━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━
 XXXXXXXX │ ada@XXXXXXXX.example          │ admin  │ active │ YYYY-MM-DD hh:mm:ssZ
 XXXXXXXX │ grace.hopper@XXXXXXXX.example │ member │ active │ YYYY-MM-DD hh:mm:ssZ
"""
# At 80 the last column does not fit whole; it is left out (and stderr says so) rather than
# squeezed into a column one letter wide.
USERS_TABLE_80 = """\
 id       ┃ email                         ┃ role   ┃ state
━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━╇━━━━━━━━
 XXXXXXXX │ ada@XXXXXXXX.example          │ admin  │ active
 XXXXXXXX │ grace.hopper@XXXXXXXX.example │ member │ active
"""


def _masked(table: str) -> str:
    """A rendered table with ids and UTC times replaced by marks of the same width."""
    table = re.sub(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}Z", "YYYY-MM-DD hh:mm:ssZ", table)
    table = re.sub(r"\b[0-9a-f]{8}\b", "XXXXXXXX", table)
    return "".join(line.rstrip() + "\n" for line in table.splitlines())


def test_tables_are_readable_at_80_and_120_columns(
    e2e: EndToEnd, sevvo: Sevvo, tmp_path: Path
) -> None:
    """A list table fits the terminal: ids as 8-character prefixes, times marked UTC (Z),
    no header or id folded; the snapshot is the table a new org's admin sees."""
    config = tmp_path / "snap"
    tag, password = uuid.uuid4().hex[:8], secrets.token_urlsafe(18)
    sevvo.ok(
        "bootstrap",
        "--org",
        f"snap-{tag}",
        "--email",
        f"ada@{tag}.example",
        "--bootstrap-token-file",
        str(e2e.stack.bootstrap_token_file),
        "--password-stdin",
        stdin=password + "\n",
        config_dir=config,
    )
    sevvo.ok(
        "login",
        "--email",
        f"ada@{tag}.example",
        "--password-stdin",
        stdin=password + "\n",
        config_dir=config,
    )
    member_password = secrets.token_urlsafe(18)
    sevvo.ok(
        "users",
        "create",
        "--email",
        f"grace.hopper@{tag}.example",
        "--password-stdin",
        stdin=member_password + "\n",
        config_dir=config,
    )
    for width, expected, hidden in ((120, USERS_TABLE_120, None), (80, USERS_TABLE_80, "created")):
        shown = sevvo("users", "list", "-o", "table", config_dir=config, columns=width)
        assert shown.code == 0, shown.stderr
        assert all(len(line) <= width for line in shown.stdout.splitlines())
        assert _masked(shown.stdout) == expected, shown.stdout
        assert (f"not shown at this width: {hidden}" in shown.stderr) == (hidden is not None)


def test_things_are_named_by_name_or_id_prefix(sevvo: Sevvo, connection_id: str) -> None:
    """A connection is reached by its name or the 8-character id a table shows, as by its
    UUID; an unknown name exits 5 (not found)."""
    by_id = sevvo.ok("connections", "get", connection_id)
    assert sevvo.ok("connections", "get", by_id["display_name"])["id"] == connection_id
    assert sevvo.ok("connections", "get", connection_id[:8])["id"] == connection_id
    unknown = sevvo("connections", "get", "no-such-connection")
    assert unknown.code == 5
    assert "no connection has the id, id prefix or name 'no-such-connection'" in unknown.stderr


def test_every_command_has_help_with_an_example(sevvo: Sevvo) -> None:
    """--help works without a session for every command and shows an example."""
    commands = [
        ["bootstrap"],
        ["login"],
        ["logout"],
        ["whoami"],
        ["preview"],
        ["users", "create"],
        ["users", "list"],
        ["users", "get"],
        ["deployments", "create"],
        ["deployments", "list"],
        ["deployments", "revoke"],
        ["connections", "create"],
        ["connections", "get"],
        ["connections", "update"],
        ["connections", "list"],
        ["connections", "test"],
        ["connections", "rotate-password"],
        ["connections", "delete"],
        ["runs", "list"],
        ["runs", "get"],
        ["runs", "wait"],
        ["leases", "list"],
        ["leases", "count"],
        ["leases", "revoke"],
        ["audit", "list"],
    ]
    # In-process through typer's runner: help needs no stack, and 20 interpreters would not.
    runner = CliRunner()
    for command in commands:
        result = runner.invoke(app, [*command, "--help"], env=sevvo.env())
        assert result.exit_code == 0, command
        assert "Example: sevvo" in result.stdout, command
    top = runner.invoke(app, ["--help"], env=sevvo.env())
    assert "Exit codes: 0 ok" in top.stdout


def test_no_secret_is_ever_printed(sevvo: Sevvo, org: Org) -> None:
    """Canary: no password, session token or bootstrap token appears in any output."""
    assert sevvo.outputs
    printed = "\n".join(r.stdout + r.stderr for r in sevvo.outputs)
    for secret in org.secrets:
        assert secret not in printed
