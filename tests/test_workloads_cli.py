"""``sevvo workloads`` against real auth and connections services.

One TLS endpoint serves both (as the control plane's one gRPC port does), so ``--grant`` names
connections by name or id prefix. Tokens go to a 0600 file or are printed once, never anywhere
else; bad flags are usage errors naming the flag. The endpoint serves the whole module and each
test makes its own org. Commands run ``cli.app.main`` in this process (tests.cli_runner); each
test's sign-in runs ``python -m cli`` as a real process.
"""

from __future__ import annotations

import secrets
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from typer.testing import CliRunner

from cli.app import app
from devstack.pki import DevPki
from services.connections.config import ConnectionsConfig
from services.connections.server import ConnectionsApp
from sevvo.auth.v1 import auth_pb2, users_pb2
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.connections.v1 import connections_pb2_grpc as cpb_grpc
from sevvo.runtime.grpc_client import secure_channel
from sevvo.runtime.grpc_server import TlsFiles, start_server
from sevvo.runtime.sealing import Keyring
from sevvo.runtime.workload_bearer import METADATA_KEY
from tests.cli_runner import Result, run_sevvo, run_sevvo_in_process, user_env
from tests.plugins.auth_stack import PASSWORD, AuthStack, BackgroundLoop, Org


@dataclass
class Sevvo:
    """Runs ``sevvo`` against the endpoint; keeps everything printed for the canary."""

    target: str
    ca_file: Path
    config_dir: Path
    printed: list[str] = field(default_factory=list)

    def __call__(
        self,
        *args: str,
        stdin: str = "",
        config_dir: Path | None = None,
        process: bool = False,
        columns: int = 0,
    ) -> Result:
        """Runs the command with JSON output (stdout is a pipe); in this process unless
        ``process`` asks for ``python -m cli``. ``columns`` sets the width a table is drawn
        for, so a narrow inherited COLUMNS cannot drop a column."""
        env = user_env(self.target, self.ca_file, config_dir or self.config_dir)
        if columns:
            env["COLUMNS"] = str(columns)
        if process:
            result = run_sevvo(args, env, stdin, timeout=60)
        else:
            result = run_sevvo_in_process(args, env, stdin)
        self.printed.append(result.stdout + result.stderr)
        return result

    def ok(self, *args: str) -> Any:
        """Runs the command, asserts it succeeded, and returns its JSON."""
        result = self(*args)
        assert result.code == 0, result.stderr
        return result.json()


@dataclass
class World:
    """An org whose admin is signed in through the CLI, and two of its connections."""

    stack: AuthStack
    sevvo: Sevvo
    admin_email: str
    reporting_db: str
    billing_db: str
    org: Org


@dataclass
class Endpoint:
    """auth and connections served on one TLS port, shared by the module."""

    stack: AuthStack
    target: str


@pytest.fixture(scope="module")
def endpoint(
    module_auth_stack: AuthStack,
    module_database_url: str,
    dev_pki: DevPki,
    background_loop: BackgroundLoop,
) -> Iterator[Endpoint]:
    """auth and connections on one TLS endpoint for the module; tests keep apart by org."""
    tls = TlsFiles(cert=dev_pki.server_cert, key=dev_pki.server_key)
    connections = ConnectionsApp(
        ConnectionsConfig(
            database_url=module_database_url,
            tls=tls,
            keyring=Keyring.generate("k1"),
            auth_endpoint=module_auth_stack.target,
            ca_file=dev_pki.ca_cert,
            host="127.0.0.1",
            port=0,
        )
    )
    connections.open()
    # One process, one server, as the dev stack runs: auth's in-process verifier for both.
    server, port = background_loop.run(
        start_server(
            [module_auth_stack.app.spec(), connections.spec()],
            verifier=module_auth_stack.app.verifier,
            tls=tls,
            host="127.0.0.1",
            port=0,
        )
    )
    try:
        yield Endpoint(module_auth_stack, f"localhost:{port}")
    finally:
        background_loop.run(server.stop(grace=1))
        connections.close()


@pytest.fixture
def world(endpoint: Endpoint, dev_pki: DevPki, tmp_path: Path) -> World:
    """A new org on the module's endpoint, its admin signed in, and two of its connections."""
    org = endpoint.stack.create_org()
    channel = secure_channel(endpoint.target, endpoint.stack.client_tls, lambda: org.admin_token)
    try:
        stub = cpb_grpc.ConnectionServiceStub(channel)
        ids = []
        for name in ("reporting-db", "billing-db"):
            ids.append(
                stub.CreateConnection(
                    cpb.CreateConnectionRequest(
                        display_name=name,
                        fields=cpb.PostgresFields(
                            host="db.acme.internal",
                            database=name.replace("-", "_"),
                            username="reader",
                            password=secrets.token_urlsafe(12),
                            ssl_mode=cpb.SSL_MODE_REQUIRE,
                        ),
                    )
                ).id
            )
    finally:
        channel.close()
    sevvo = Sevvo(endpoint.target, dev_pki.ca_cert, tmp_path / "sevvo")
    login = sevvo(
        "login", "--email", org.admin_email, "--password-stdin", stdin=PASSWORD, process=True
    )
    assert login.code == 0, login.stderr
    return World(endpoint.stack, sevvo, org.admin_email, ids[0], ids[1], org)


def _pairs(workload: dict[str, Any]) -> list[tuple[str, str]]:
    return [(g["connection_id"], g["role"]) for g in workload["grants"]]


def test_create_resolves_grants_and_writes_the_token_to_a_private_file(
    world: World, tmp_path: Path
) -> None:
    """--grant by name and by id prefix; the token only in the 0600 file, and it exchanges."""
    token_file = tmp_path / "reporting.token"
    created = world.sevvo.ok(
        "workloads",
        "create",
        "reporting-service",
        "--grant",
        "reporting-db:readonly",
        "--grant",
        f"{world.billing_db[:8]}:etl",
        "--max-ttl",
        "2h",
        "--description",
        "counts orders",
        "--token-file",
        str(token_file),
    )
    workload = created["workload"]
    assert created["token_file"] == str(token_file)
    assert workload["max_ttl_seconds"] == 7200
    assert workload["description"] == "counts orders"
    assert sorted(_pairs(workload)) == sorted(
        [(world.reporting_db, "readonly"), (world.billing_db, "etl")]
    )
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert token.startswith("sevvo_wt_")
    assert token not in "\n".join(world.sevvo.printed)
    exchanged = world.stack.auth().ExchangeWorkloadToken(
        auth_pb2.ExchangeWorkloadTokenRequest(workload_token=token)
    )
    assert exchanged.workload_id == workload["id"]

    again = world.sevvo(
        "workloads", "create", "other", "--grant", "reporting-db:readonly", "--token-file",
        str(token_file),
    )  # fmt: skip
    assert again.code == 2
    assert "exists" in again.stderr
    assert token_file.read_text().strip() == token


def test_without_a_file_the_token_is_printed_once_with_a_warning(world: World) -> None:
    """The JSON carries the token; stderr says it is shown only this once; Get never has it."""
    result = world.sevvo("workloads", "create", "api", "--grant", "reporting-db:readonly")
    assert result.code == 0, result.stderr
    body = result.json()
    assert body["token"].startswith("sevvo_wt_")
    assert body["workload"]["max_ttl_seconds"] == 3600  # The default --max-ttl, 1h.
    assert "shown only this once" in result.stderr
    shown = world.sevvo.ok("workloads", "get", "api")
    assert body["token"] not in str(shown)


def test_list_get_update_and_revoke(world: World) -> None:
    """list pages, get and update take a name, --grant replaces grants, revoke asks first."""
    for name in ("first", "second"):
        world.sevvo.ok("workloads", "create", name, "--grant", "reporting-db:readonly")
    page = world.sevvo.ok("workloads", "list", "--limit", "1")
    assert [w["display_name"] for w in page["workloads"]] == ["first"]
    assert page["next_page_token"]
    rest = world.sevvo.ok("workloads", "list", "--page-token", page["next_page_token"])
    assert [w["display_name"] for w in rest["workloads"]] == ["second"]
    everything = world.sevvo.ok("workloads", "list", "--all")["workloads"]
    assert [w["display_name"] for w in everything] == ["first", "second"]

    first = everything[0]
    assert world.sevvo.ok("workloads", "get", first["id"][:8])["id"] == first["id"]
    updated = world.sevvo.ok(
        "workloads", "update", "first", "--grant", "billing-db:etl", "--max-ttl", "30m"
    )
    assert _pairs(updated) == [(world.billing_db, "etl")]
    assert updated["max_ttl_seconds"] == 1800
    renamed = world.sevvo.ok("workloads", "update", "first", "--name", "nightly")
    assert renamed["display_name"] == "nightly"
    assert _pairs(renamed) == [(world.billing_db, "etl")]  # Untouched by a rename.

    unconfirmed = world.sevvo("workloads", "revoke", "nightly")
    assert unconfirmed.code == 2
    assert "pass --yes" in unconfirmed.stderr
    assert world.sevvo.ok("workloads", "get", "nightly")["state"] == "active"
    revoked = world.sevvo.ok("workloads", "revoke", "nightly", "--yes")
    assert revoked["state"] == "revoked"
    assert revoked["revoke_time"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["create", "x", "--grant", "reporting-db"], 2, "give CONNECTION:ROLE"),
        (["create", "x", "--grant", "reporting-db:Read-Only"], 2, "the role must be 1-63"),
        (["create", "x", "--grant", "no-such-db:readonly"], 5, "no connection has the id"),
        (["create", "x", "--grant", "reporting-db:readonly", "--max-ttl", "2h30m"], 2, "--max-ttl"),
        (
            ["create", "x", "--grant", "reporting-db:readonly", "--max-ttl", "25h"],
            2,
            "--max-ttl: must be between 60 (one minute) and 86400 (one day) seconds",
        ),
        (["create", "x"], 2, "--grant"),
        (["update", "x"], 2, "nothing to change"),
        (["get", "no-such-workload"], 5, "no workload has the id"),
    ],
)
def test_bad_flags_say_which_and_change_nothing(
    world: World, args: list[str], code: int, message: str
) -> None:
    """Each mistake exits with its code and a message naming the flag; nothing is created."""
    result = world.sevvo("workloads", *args)
    assert result.code == code, result.stderr
    assert message in result.stderr
    assert world.sevvo.ok("workloads", "list")["workloads"] == []


def test_a_member_is_refused(world: World, tmp_path: Path) -> None:
    """A member's list exits 4 (permission denied)."""
    admin = world.stack.auth().SignIn(
        auth_pb2.SignInRequest(email=world.admin_email, password=PASSWORD)
    )
    email, password = f"m-{uuid.uuid4().hex[:8]}@acme.example", secrets.token_urlsafe(18)
    world.stack.users(admin.session_token).CreateUser(
        users_pb2.CreateUserRequest(email=email, password=password)
    )
    member_dir = tmp_path / "member"
    login = world.sevvo("login", "--email", email, "--password-stdin", stdin=password,
                        config_dir=member_dir)  # fmt: skip
    assert login.code == 0, login.stderr
    refused = world.sevvo("workloads", "list", config_dir=member_dir)
    assert refused.code == 4
    assert "PERMISSION_DENIED" in refused.stderr or "admin" in refused.stderr


def test_every_workloads_command_has_help_with_an_example() -> None:
    """--help works without a session or a server for every command and shows an example."""
    runner = CliRunner()
    for command in ("create", "list", "get", "update", "revoke"):
        result = runner.invoke(app, ["workloads", command, "--help"])
        assert result.exit_code == 0, command
        assert "Example: sevvo workloads" in result.stdout, command


# --- leases by workload ------------------------------------------------------------------------


def _in(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(seconds=seconds))
    return stamp


def test_leases_list_by_workload_name_and_leases_count(world: World, tmp_path: Path) -> None:
    """leases list --workload NAME shows only that workload's leases (with its id); leases
    count groups by state, purpose and role, for the org or one connection."""
    admin = secure_channel(
        world.sevvo.target, world.stack.client_tls, lambda: world.org.admin_token
    )
    _, deployment_token = world.stack.new_deployment(world.org)
    agent_bearer = world.stack.agent_bearer(deployment_token)
    agent = secure_channel(world.sevvo.target, world.stack.client_tls, lambda: agent_bearer)
    try:
        warehouse = cpb_grpc.ConnectionServiceStub(admin).CreateConnection(
            cpb.CreateConnectionRequest(
                display_name="warehouse-db",
                dynamic=cpb.PostgresDynamic(
                    host="db.acme.internal",
                    database="warehouse",
                    privileged_username="sevvo_admin",
                    privileged_password=secrets.token_urlsafe(12),
                    ssl_mode=cpb.SSL_MODE_REQUIRE,
                    default_ttl_seconds=600,
                    max_ttl_seconds=3600,
                ),
            )
        )
        token_file = tmp_path / "nightly.token"
        created = world.sevvo.ok(
            "workloads", "create", "nightly", "--grant", "warehouse-db:default",
            "--token-file", str(token_file),
        )  # fmt: skip
        workload_id = created["workload"]["id"]
        bearer = world.stack.auth().ExchangeWorkloadToken(
            auth_pb2.ExchangeWorkloadTokenRequest(workload_token=token_file.read_text().strip())
        )
        leases = cpb_grpc.LeaseServiceStub(agent)

        def lease(purpose: str, forwarded: bool) -> str:
            metadata = ((METADATA_KEY, f"Bearer {bearer.bearer_token}"),) if forwarded else ()
            made = leases.CreateLease(
                cpb.CreateLeaseRequest(
                    connection_id=warehouse.id,
                    role_name=f"sevvo_dyn_{uuid.uuid4().hex[:10]}",
                    purpose=purpose,
                    expire_time=_in(60),
                    max_expire_time=_in(600),
                ),
                metadata=metadata,
            )
            return str(made.id)

        borrowed = [lease("reporting", True), lease("reporting", True)]
        lease("credential_test", False)
    finally:
        admin.close()
        agent.close()

    listed = world.sevvo.ok("leases", "list", "--workload", "nightly")["leases"]
    assert sorted(item["id"] for item in listed) == sorted(borrowed)
    assert {item["workload_id"] for item in listed} == {workload_id}
    assert len(world.sevvo.ok("leases", "list", "--workload", workload_id[:8])["leases"]) == 2
    missing = world.sevvo("leases", "list", "--workload", "no-such-service")
    assert missing.code != 0 and "no-such-service" in missing.stderr

    counts = world.sevvo.ok("leases", "count")
    assert counts["by_state"] == [{"state": "creating", "count": 3}]
    assert sorted((p["purpose"], p["count"]) for p in counts["by_purpose"]) == [
        ("credential_test", 1),
        ("reporting", 2),
    ]
    assert counts["by_role"] == [{"role": "default", "count": 3}]
    assert world.sevvo.ok("leases", "count", "--connection", "reporting-db")["by_state"] == []
    table = world.sevvo("--output", "table", "leases", "count", "--connection", "warehouse-db")
    assert table.code == 0, table.stderr
    assert "reporting" in table.stdout and "creating" in table.stdout
    table = world.sevvo("--output", "table", "leases", "list", "--workload", "nightly", columns=200)
    assert "workload" in table.stdout and workload_id[:8] in table.stdout
