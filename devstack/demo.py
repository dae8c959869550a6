"""``make demo``: sevvo end to end, from an empty machine to an audit trail, as a user sees it.

Starts the embedded control plane and a sample customer database (a separate TLS Postgres
cluster from the OS's binaries, prepared with the SQL of docs/user-guide.md), then drives the
real ``sevvo`` command line through one story: bootstrap an org, run an agent, connect the
database with ``ssl_mode require``, test it, preview a query, watch a write be refused, read
through a dynamic credential that is gone afterwards, sync a model into a schema of the same
cluster, revoke the agent, print the audit trail, and stop. Each step prints what it did and
what the user would see; any surprise fails the step and the demo exits 1 naming it, which is
how CI (``.ci/run``) uses it.

Everything lives in a fresh temporary directory, removed at the end; nothing secret is
printed (passwords go to the command line on standard input, tokens are shown elided).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol, TextIO

import psycopg
from psycopg import sql

from devstack import demo_guide as guide
from devstack.agent_process import AgentProcess
from devstack.demo_data import TOP_CUSTOMERS_SQL, run_as_dba, seed_shop, start_customer_cluster
from devstack.demo_steps import Cli, Narrator, Secrets, StepFailed, UnexpectedOutcome
from devstack.pki import DevPki
from devstack.postgres import EmbeddedPostgres
from devstack.processes import log_tail
from devstack.stack import RunningStack, StackSettings, start_stack
from sevvo.runtime.files import write_private_file
from sevvo.runtime.logs import configure_logging

ORG: Final = "Acme Analytics"
ADMIN_EMAIL: Final = "ada@acme-analytics.example"
# How often the demo's agent checks its bearer: a revoked deployment shuts it out within
# this, instead of the production default of 15 s.
AGENT_BEARER_CHECK_SECONDS: Final = 2.0
AGENT_EXIT_REVOKED: Final = 3
AGENT_EXIT_TIMEOUT: Final = 30.0
CLI_COLUMNS: Final = 200
_ROLE_NAME: Final = re.compile(r"sevvo_dyn_[a-z0-9_]+")
_DBA_ROLES_SQL: Final = "select rolname from pg_roles where rolname like 'sevvo%' order by rolname"
_READER_GRANTS_SQL: Final = sql.SQL(
    "select table_name, privilege_type from information_schema.role_table_grants"
    " where grantee = {} order by table_name, privilege_type"
).format(sql.Literal(guide.READER))
_REVOKED_EXPLANATION: Final = "no longer accepts this deployment token"


class DemoAgent(Protocol):
    """What the story needs of a running agent (devstack.agent_process.AgentProcess fits)."""

    @property
    def pid(self) -> int:
        """The agent's process id."""
        ...

    @property
    def log_file(self) -> Path:
        """Where its output goes."""
        ...

    def wait(self, timeout: float) -> int:
        """Waits for it to exit by itself; returns its exit code."""
        ...

    def output(self) -> str:
        """What it has written so far."""
        ...


class ControlPlane(Protocol):
    """What the story needs of a started control plane (devstack.stack.RunningStack fits).

    Its state directory is the demo's: the story reads the operator's bootstrap token from
    ``bootstrap-token`` in it.
    """

    @property
    def grpc_target(self) -> str:
        """The one endpoint the command line and agents dial, ``host:port``."""
        ...

    @property
    def pki(self) -> DevPki:
        """The development CA and certificates (the customer's database is issued one too)."""
        ...

    @property
    def console_url(self) -> str | None:
        """The web console's address, when this control plane serves one."""
        ...

    @property
    def agents(self) -> Sequence[DemoAgent]:
        """Agents started against it, whose logs a failed step shows."""
        ...

    async def stop(self) -> None:
        """Stops its agents and everything it started; idempotent."""
        ...


class Platform(Protocol):
    """How the demo starts the control plane and an agent: the one thing that differs between
    ``make demo`` (in process, from this checkout) and ``make images-demo`` (from the images)."""

    @property
    def description(self) -> str:
        """What "Start the control plane" starts, in a sentence or two."""
        ...

    async def start_control_plane(self, state: Path) -> ControlPlane:
        """Starts the control plane with its state in ``state``; no agent yet."""
        ...

    async def start_agent(self, token: str) -> DemoAgent:
        """Starts an agent for a deployment token; returns once it polls its task queue."""
        ...


class EmbeddedPlatform:
    """``make demo``'s platform: devstack.stack in this process, agents as child processes."""

    description = (
        "Control-plane Postgres, Temporal, auth, connections and orchestrator over gRPC"
        " with TLS (a development CA), and the web console, all on loopback; no agent yet."
    )

    def __init__(self) -> None:
        self._stack: RunningStack | None = None

    async def start_control_plane(self, state: Path) -> ControlPlane:
        """Starts devstack.stack in this process."""
        self._stack = await _start_control_plane(state)
        return self._stack

    async def start_agent(self, token: str) -> DemoAgent:
        """Starts ``python -m agent`` from this checkout."""
        if self._stack is None:
            raise RuntimeError("the control plane is not started")
        return await _start_agent(self._stack, token)


@dataclasses.dataclass
class _World:
    """What the demo started, so that it can be stopped whatever step failed."""

    state: Path
    platform: Platform
    stack: ControlPlane | None = None
    customer_db: EmbeddedPostgres | None = None


async def run_demo(
    out: TextIO, state: Path, platform: Platform | None = None
) -> list[tuple[str, float]]:
    """Runs every step; returns each step's title and duration. Raises StepFailed.

    ``platform`` starts the control plane and the agent (default: EmbeddedPlatform).
    """
    shown = Secrets()
    narrator = Narrator(out, shown)
    narrator.say(
        "sevvo demo: the control plane, an agent and a customer's database on this machine,"
        " driven\nby the sevvo command line as a user would. Secrets are never printed;"
        f" state is kept in\n{state} and removed at the end."
    )
    world = _World(state, platform or EmbeddedPlatform())
    try:
        await _story(narrator, shown, world)
    except StepFailed:
        # CI keeps no state directory: the agents' last words are all a reader will have.
        for agent in world.stack.agents if world.stack is not None else ():
            narrator.say(f"\n   Last lines of {agent.log_file.name}:")
            narrator.say(log_tail(agent.log_file, 15), indent=True)
        raise
    finally:
        with narrator.step(
            "Stop everything",
            "Agents, services, the TLS proxy, Temporal and both databases, in that order.",
        ):
            await _stop(world)
            left = _live_children()
            if left:
                raise UnexpectedOutcome(f"processes still running after the stop: {left}")
            narrator.say("   No process of the demo is left running.")
    return narrator.timings


async def _story(narrator: Narrator, shown: Secrets, world: _World) -> None:
    with narrator.step("Start the control plane", world.platform.description):
        stack = world.stack = await world.platform.start_control_plane(world.state)
        narrator.say(f"   gRPC endpoint {stack.grpc_target}, CA certificate {stack.pki.ca_cert}")
        if stack.console_url is not None:
            narrator.say(f"   web console {stack.console_url} (HTTPS, the same CA)")

    with narrator.step(
        "Create the customer's database",
        "A separate PostgreSQL cluster (the OS's binaries) serving TLS, with a small shop in"
        f" database {guide.DATABASE!r}; then the DBA runs the SQL of docs/user-guide.md.",
    ):
        customer = world.customer_db = start_customer_cluster(
            world.state / "customer-postgres", stack.pki
        )
        counts = seed_shop(customer)
        narrator.say(
            f"   PostgreSQL on {customer.host}:{customer.port} (TLS on), tables: "
            + ", ".join(f"{table} ({rows} rows)" for table, rows in counts.items())
        )
        reader_password = shown.add(secrets.token_urlsafe(24))
        minter_password = shown.add(secrets.token_urlsafe(24))
        _apply_guide(
            narrator,
            customer,
            [
                (guide.READER_ROLE_HEADING, guide.READER, reader_password),
                (guide.PRIVILEGED_ROLE_HEADING, guide.PRIVILEGED, minter_password),
            ],
        )
        grants = run_as_dba(customer, [_READER_GRANTS_SQL])
        narrator.say(
            f"\n   What the DBA sees: {guide.READER}'s table privileges are "
            + ", ".join(f"{privilege} on {table}" for table, privilege in grants)
        )
        if {privilege for _, privilege in grants} != {"SELECT"}:
            raise UnexpectedOutcome(f"{guide.READER} holds more than SELECT: {grants}")

    cli = Cli(
        [sys.executable, "-m", "cli"],
        _cli_environment(stack, world.state),
        narrator,
    )
    admin_password = shown.add(secrets.token_urlsafe(18))
    with narrator.step(
        "Bootstrap the org and its admin",
        "The operator creates the first org with the install's bootstrap token"
        " (SEVVO_BOOTSTRAP_TOKEN_FILE); the admin's password goes in on standard input.",
    ):
        token_file = world.state / "bootstrap-token"
        if not token_file.is_file():
            raise UnexpectedOutcome(f"the stack wrote no bootstrap token to {token_file}")
        shown.add(token_file.read_text().strip())
        await cli.run(
            "bootstrap",
            "--org",
            ORG,
            "--email",
            ADMIN_EMAIL,
            "--password-stdin",
            stdin=admin_password,
            expect=[ORG],
        )

    with narrator.step("Sign in", "The admin signs in; the session is kept in SEVVO_CONFIG_DIR."):
        await cli.run("login", "--email", ADMIN_EMAIL, "--password-stdin", stdin=admin_password)
        await cli.run("whoami", expect=[ADMIN_EMAIL])

    with narrator.step(
        "Deploy an agent",
        "Create a deployment (its token is shown once; here elided) and start `python -m"
        " agent` with the token in a 0600 file, as it would run in the customer's network.",
    ):
        created = await cli.run("deployments", "create", "--name", "acme-agent", output="json")
        deployment = created.json()
        token = shown.add(str(deployment["token"]), str(deployment["token"])[:13] + "…")
        deployment_id = str(deployment["deployment"]["id"])
        agent = await world.platform.start_agent(token)
        narrator.say(
            f"   agent pid {agent.pid} is polling its org's task queue (log {agent.log_file})"
        )
        await cli.run("deployments", "list", expect=["acme-agent"])

    with narrator.step(
        "Connect the database",
        f"As the guide's least-privilege role {guide.READER!r}, with ssl_mode require. Saving"
        " runs a credential test through the agent first.",
    ):
        reader = await cli.run(
            *_connection_flags("shop", customer, guide.READER),
            stdin=reader_password,
            output="json",
        )
        connection_id = _id_of(reader.json(), "connection")
        await cli.run("connections", "list", expect=["shop"])

    with narrator.step("Test the connection", "The agent logs in over TLS and runs a test query."):
        await cli.run("connections", "test", connection_id, expect=["connected"])

    with narrator.step(
        "Preview a query",
        "The shop's five best customers. Rows come back to the caller and are not stored.",
    ):
        top = run_as_dba(customer, [TOP_CUSTOMERS_SQL])
        await cli.run("preview", connection_id, TOP_CUSTOMERS_SQL, expect=[str(top[0][0])])

    with narrator.step(
        "Try to write",
        "`delete from orders` is refused by the agent's SQL parser before it reaches the"
        " database: the command fails (exit 1) with category query_rejected, as it should.",
    ):
        orders_before = _count_orders(customer)
        await cli.run(
            "preview", connection_id, "delete from orders", expect_exit=1, expect=["query_rejected"]
        )
        orders_after = _count_orders(customer)
        narrator.say(f"\n   What the DBA sees: orders still has {orders_after} rows.")
        if orders_after != orders_before:
            raise UnexpectedOutcome(f"orders went from {orders_before} to {orders_after} rows")

    with narrator.step(
        "Read through a dynamic credential",
        f"A second connection holds the guide's privileged role {guide.PRIVILEGED!r}"
        " (CREATEROLE, not superuser). Each workload runs as a freshly minted role that is"
        " dropped when the workload ends.",
    ):
        dynamic = await cli.run(
            *_connection_flags("shop-dynamic", customer, guide.PRIVILEGED),
            "--dynamic",
            "--default-ttl",
            "15m",
            "--max-ttl",
            "1h",
            stdin=minter_password,
            output="json",
        )
        dynamic_id = _id_of(dynamic.json(), "connection")
        preview = await cli.run(
            "preview",
            dynamic_id,
            "select current_user as ran_as, (select count(*) from orders) as orders",
            expect=["sevvo_dyn_"],
        )
        role = _ROLE_NAME.search(preview.stdout)
        if role is None:
            raise UnexpectedOutcome("the preview did not show the minted role's name")
        await cli.run(
            "leases", "list", "--connection", dynamic_id, expect=[role.group(0), "revoked"]
        )
        left = run_as_dba(
            customer,
            [_DBA_ROLES_SQL],
        )
        narrator.say(
            f"\n   What the DBA sees (as the cluster's superuser):\n     {_DBA_ROLES_SQL};"
        )
        for (name,) in left:
            narrator.say(f"       {name}")
        narrator.say(
            f"   No sevvo_dyn_ role remains: {role.group(0)} was dropped after the preview."
        )
        if any(str(name).startswith("sevvo_dyn_") for (name,) in left):
            raise UnexpectedOutcome("a minted role is still in pg_roles")
        await cli.run("runs", "list")

    with narrator.step(
        "Sync a model",
        "The shop's orders copied into the schema analytics by the agent, inside the customer's"
        " network, as a loader role the DBA creates from docs/user-guide.md. The control plane"
        " keeps the model and learns only counts, never a row.",
    ):
        loader_password = shown.add(secrets.token_urlsafe(24))
        _apply_guide(
            narrator,
            customer,
            [(guide.LOADER_ROLE_HEADING, guide.LOADER, loader_password)],
        )
        await cli.run(
            *_connection_flags("warehouse", customer, guide.LOADER),
            stdin=loader_password,
        )
        await cli.run(
            "models",
            "create",
            "shop-orders",
            "--source",
            "shop",
            "--destination",
            "warehouse",
            "--table",
            _SYNCED_TABLE,
            "--sql",
            "select * from orders",
            expect=["shop-orders"],
        )
        orders = _count_orders(customer)
        await cli.run("models", "sync", "shop-orders", expect=["succeeded", str(orders)])
        copied = int(
            run_as_dba(
                customer,
                [
                    sql.SQL("select count(*) from {}").format(
                        sql.Identifier(*_SYNCED_TABLE.split("."))
                    )
                ],
            )[0][0]
        )
        narrator.say(f"\n   What the DBA sees: {_SYNCED_TABLE} has {copied} rows.")
        if copied != orders:
            raise UnexpectedOutcome(f"{_SYNCED_TABLE} has {copied} rows, orders {orders}")
        await cli.run("models", "runs", "shop-orders", expect=[str(orders)])

    with narrator.step(
        "Revoke the agent's deployment",
        "The agent's token stops working at once and its outstanding bearer within seconds;"
        " the agent notices, explains why and exits with code 3.",
    ):
        await cli.run("deployments", "revoke", deployment_id, "--yes")
        code = await asyncio.to_thread(agent.wait, AGENT_EXIT_TIMEOUT)
        explanation = [line for line in agent.output().splitlines() if _REVOKED_EXPLANATION in line]
        narrator.say(f"\n   The agent exited with code {code} and said:")
        for line in explanation[-1:]:
            narrator.say(line, indent=True)
        if code != AGENT_EXIT_REVOKED:
            raise UnexpectedOutcome(f"the agent exited with {code}, expected {AGENT_EXIT_REVOKED}")
        if not explanation:
            raise UnexpectedOutcome("the agent did not explain why it stopped")
        await cli.run("deployments", "list", expect=["revoked"])

    with narrator.step(
        "Read the audit trail",
        "Who created, tested, resolved and changed what, newest first: metadata only.",
    ):
        await cli.run("audit", "list", "--limit", "20")
        await cli.run("logout")


def _apply_guide(
    narrator: Narrator, customer: EmbeddedPostgres, sections: Sequence[tuple[str, str, str]]
) -> None:
    """Runs the SQL of the guide's ``sections`` (heading, role, password) as written, then sets
    each role's password as ``\\password`` would."""
    text = guide.read_guide()
    for heading, role, password in sections:
        section = guide.section(text, heading)
        narrator.say(f"\n   From docs/user-guide.md, “{heading}”:")
        for statement in section.statements:
            narrator.say(f"     {statement};")
        narrator.say(f"     \\password {role}")
        run_as_dba(customer, list(section.statements))
        with psycopg.connect(customer.admin_url(guide.DATABASE), autocommit=True) as conn:
            guide.set_password(conn, role, password)


def _connection_flags(name: str, customer: EmbeddedPostgres, username: str) -> list[str]:
    """``sevvo connections create`` for the customer's database as ``username``, over TLS
    (``require``), the password on standard input."""
    return [
        "connections",
        "create",
        "--name",
        name,
        "--host",
        "localhost",
        "--port",
        str(customer.port),
        "--database",
        guide.DATABASE,
        "--username",
        username,
        "--ssl-mode",
        "require",
        "--password-stdin",
    ]


# The model's destination table: in the schema the guide's loader role owns.
_SYNCED_TABLE: Final = "analytics.orders"


def _count_orders(customer: EmbeddedPostgres) -> int:
    rows = run_as_dba(customer, [sql.SQL("select count(*) from orders")])
    return int(rows[0][0])


def _id_of(document: Any, key: str) -> str:
    """The ``id`` of a created resource, whether the CLI nests it under ``key`` or not."""
    if isinstance(document, dict):
        inner = document.get(key, document)
        if isinstance(inner, dict) and inner.get("id"):
            return str(inner["id"])
    raise UnexpectedOutcome(f"no {key} id in the command's JSON output")


def _cli_environment(stack: ControlPlane, state: Path) -> dict[str, str]:
    """The command line's environment: this stack's endpoint and CA, a private config dir."""
    config_dir = state / "cli"
    config_dir.mkdir(mode=0o700, exist_ok=True)
    base: Mapping[str, str] = {
        k: v for k, v in os.environ.items() if not k.startswith(("SEVVO_", "PG"))
    }
    return {
        **base,
        "SEVVO_ENDPOINT": stack.grpc_target,
        "SEVVO_CA_FILE": str(stack.pki.ca_cert),
        "SEVVO_CONFIG_DIR": str(config_dir),
        "SEVVO_BOOTSTRAP_TOKEN_FILE": str(state / "bootstrap-token"),
        # The output is a pipe, so rich would assume 80 columns and wrap cells, splitting the
        # role names and ids the demo checks; wide enough that no table here wraps a cell.
        "COLUMNS": str(CLI_COLUMNS),
        "NO_COLOR": "1",
    }


async def _start_control_plane(state: Path) -> RunningStack:
    settings = StackSettings(
        state_dir=state,
        grpc_port=0,  # a free port: a `make dev` running beside the demo keeps 8443
        database_url=None,
        temporal_address=None,
        durable=False,
        start_agent=False,
        console_port=0,  # a free port too: `make dev` keeps 8444
    )
    env = {k: v for k, v in os.environ.items() if k not in {"SEVVO_DATABASE_URL"}}
    return await start_stack(settings, env)


async def _start_agent(stack: RunningStack, token: str) -> AgentProcess:
    token_file = stack.state_dir / "acme-agent-deployment-token"
    write_private_file(token_file, token + "\n")
    settings = dataclasses.replace(
        stack.agent_settings(token_file), bearer_check_seconds=AGENT_BEARER_CHECK_SECONDS
    )
    agent = AgentProcess(settings, stack.state_dir / "acme-agent.log")
    # Registered first, so stopping the stack stops it whatever happens next.
    stack.agents.append(agent)
    # Spawned on this (the loop's) thread, which outlives it; awaited off the loop, which
    # must keep serving the agent's token exchange meanwhile.
    agent.start(wait=False)
    await asyncio.to_thread(agent.wait_until_ready, timeout=60)
    return agent


async def _stop(world: _World) -> None:
    if world.stack is not None:
        await world.stack.stop()
    if world.customer_db is not None:
        world.customer_db.stop()


def _live_children() -> list[str]:
    """This process's children that have not exited (Linux /proc; empty elsewhere).

    Every server the demo starts is a direct child (devstack.processes.spawn execs through
    setpriv), so an empty list means the stop left nothing behind.
    """
    me = str(os.getpid())
    found: list[str] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited while we looked
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after it.
        comm = text[text.find("(") + 1 : text.rfind(")")]
        state, ppid = text[text.rfind(")") + 2 :].split()[:2]
        if ppid == me and state != "Z":
            found.append(f"{stat.parent.name} ({comm})")
    return sorted(found)


def _print_summary(out: TextIO, timings: list[tuple[str, float]], total: float) -> None:
    print("\n━━ Summary", file=out)
    for title, seconds in timings:
        print(f"   {seconds:5.1f} s  {title}", file=out)
    print(f"   {total:5.1f} s  in all", file=out, flush=True)


async def _main(out: TextIO, state: Path, platform: Platform | None) -> int:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        # Once only: a second Ctrl-C must not cancel the clean stop the first one started.
        if not interrupted and task is not None:
            interrupted = True
            print("\nstopping…", file=out, flush=True)
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)
    started = time.monotonic()
    try:
        timings = await run_demo(out, state, platform)
    except StepFailed as exc:
        print(f"\nsevvo demo FAILED at step {exc.step!r}: {exc.reason}", file=sys.stderr)
        return 1
    except asyncio.CancelledError:
        print("\nsevvo demo interrupted; everything it started has been stopped.", file=out)
        return 130
    _print_summary(out, timings, time.monotonic() - started)
    print("\nsevvo demo passed.", file=out, flush=True)
    return 0


def main(platform: Platform | None = None) -> int:
    """Runs the demo in a fresh temporary directory; exits 0 only if every step passed.

    ``platform`` starts the control plane and the agent (default: EmbeddedPlatform).
    """
    configure_logging("demo", level=os.environ.get("SEVVO_LOG_LEVEL", "warning").upper())
    state = Path(tempfile.mkdtemp(prefix="sevvo-demo-"))
    # Traversable by the unprivileged user Postgres runs as when we are root; every secret
    # file below is 0600 on its own.
    state.chmod(0o711)
    try:
        return asyncio.run(_main(sys.stdout, state, platform))
    finally:
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
