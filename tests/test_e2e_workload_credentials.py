"""End to end: the customer's own services borrow Postgres credentials from a real agent
process over its real Unix socket, with the client library and in sidecar mode.

Roles' TTLs cannot go below a minute (connections' MIN_TTL_SECONDS; no test knob), and a
lease's maximum lifetime is at least that: the renewal and replacement tests borrow 30 s
leases of a role whose maximum is 60 s, renewed at 20 s and replaced at 40 s.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devstack.agent_process import AgentProcess, AgentSettings
from devstack.postgres import EmbeddedPostgres
from devstack.source_db import SourceDatabase, create_dynamic_roles, drop_roles
from sevvo.auth.v1 import workloads_pb2, workloads_pb2_grpc
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.connections.v1 import connections_pb2_grpc as cpb_grpc
from sevvo.runtime.files import write_private_file
from sevvo_client import Credential, NotGranted, managed_credentials, sevvo_credentials
from tests.plugins.dev_stack import REAPER_SECONDS, EndToEnd
from tests.plugins.source_db import SourceTargetFactory

ROOT = Path(__file__).resolve().parents[1]
PRIVILEGED_PASSWORD = "privileged-pw-workloads-4242"
CONNECTION = "reporting-db"
SAMPLE_BEGIN = "<!-- sample:reporting-service:begin -->"
SAMPLE_END = "<!-- sample:reporting-service:end -->"
SHORT_TTL = 30
ROLE_MAX_TTL = 60


@dataclass(frozen=True)
class _AgentWithEnv(AgentSettings):
    """The dev stack's agent settings plus variables of this feature (sidecar mode)."""

    extra: tuple[tuple[str, str], ...] = ()

    def environment(self) -> dict[str, str]:
        return {**super().environment(), **dict(self.extra)}


@dataclass
class Borrowing:
    """A tenant whose dynamic connection ``reporting-db`` has roles ``readonly`` and ``etl``
    (the defaults: 1 h, up to 8 h) and a ``default`` role of 60 s at most, a workload granted
    ``readonly`` and ``default``, and a place for the agent's socket."""

    e2e: EndToEnd
    server: EmbeddedPostgres
    source: SourceDatabase
    deployment_token: str
    workload_token: str
    token_file: Path
    directory: Path

    @property
    def socket(self) -> Path:
        """The agent's credential socket."""
        return self.directory / "agent.sock"

    def start_agent(self, name: str, **extra: str) -> AgentProcess:
        """A real ``python -m agent`` serving the credential API on ``socket``."""
        token_file = self.directory / f"{name}-deployment-token"
        write_private_file(token_file, self.deployment_token + "\n")
        base = self.e2e.stack.agent_settings(token_file, reaper_seconds=REAPER_SECONDS)
        settings = _AgentWithEnv(
            **{**base.__dict__, "credential_socket": self.socket},
            extra=tuple(extra.items()),
        )
        agent = AgentProcess(settings, self.directory / f"{name}.log")
        self.e2e.stack.agents.append(agent)
        agent.start(wait=True, timeout=60)
        return agent

    def query(self, text: str, *params: object) -> list[tuple[Any, ...]]:
        """``text`` as the superuser in the source database: the DBA's view."""
        with psycopg.connect(self.server.admin_url(self.source.database)) as conn:
            return conn.execute(text, params or None).fetchall()

    def minted(self) -> dict[str, datetime]:
        """Minted login roles that exist now, with their VALID UNTIL."""
        rows = self.query(
            "select rolname, rolvaliduntil from pg_roles where rolname like 'sevvo_dyn_%'"
        )
        return {row[0]: row[1] for row in rows}

    def sessions_of(self, role: str) -> int:
        """Sessions the role has open now."""
        rows = self.query("select count(*) from pg_stat_activity where usename = %s", role)
        return int(rows[0][0])


def _wait(condition: Callable[[], Any], what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout:.0f} s")


@pytest.fixture
def borrowing(
    e2e: EndToEnd, tls_source_pg: EmbeddedPostgres, source_target: SourceTargetFactory
) -> Iterator[Borrowing]:
    """A tenant, its dynamic connection with two roles, and a workload granted both."""
    source = source_target(tls_source_pg)
    admin_url = tls_source_pg.admin_url(source.database)
    group, privileged = create_dynamic_roles(
        admin_url, database=source.database, password=PRIVILEGED_PASSWORD
    )
    directory = Path(tempfile.mkdtemp(prefix="wl-", dir="/tmp"))
    try:
        tenant = e2e.new_tenant(start_agent=False)
        # The connection is tested through an agent on save; the agent of each test
        # serves the credential API too.
        helper = Borrowing(
            e2e, tls_source_pg, source, tenant.deployment_token, "", Path(), directory
        )
        agent = helper.start_agent("setup")
        connections = e2e.connections(tenant.admin_token)
        connection = connections.CreateConnection(
            cpb.CreateConnectionRequest(
                display_name=CONNECTION,
                dynamic=EndToEnd.dynamic(
                    source,
                    privileged=privileged,
                    privileged_password=PRIVILEGED_PASSWORD,
                    group=group,
                    ttl=ROLE_MAX_TTL,
                    max_ttl=ROLE_MAX_TTL,
                ),
            )
        )
        roles = cpb_grpc.ConnectionRoleServiceStub(e2e._channel(tenant.admin_token))
        for name in ("readonly", "etl"):  # "etl" is never granted.
            roles.CreateConnectionRole(
                cpb.CreateConnectionRoleRequest(
                    connection_id=connection.id,
                    name=name,
                    settings=cpb.ConnectionRoleSettings(group_role=group),
                )
            )
        agent.stop()
        workload = workloads_pb2_grpc.WorkloadServiceStub(
            e2e._channel(tenant.admin_token)
        ).CreateWorkload(
            workloads_pb2.CreateWorkloadRequest(
                display_name="reporting-service",
                grants=[
                    workloads_pb2.WorkloadGrant(connection_id=connection.id, role=role)
                    for role in ("readonly", "default")
                ],
                max_ttl_seconds=7200,
            )
        )
        token_file = directory / "workload-token"
        write_private_file(token_file, workload.workload_token + "\n")
        yield replace(helper, workload_token=workload.workload_token, token_file=token_file)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        drop_roles(admin_url, privileged, group)


def _sample() -> str:
    """The reporting service's code, as docs/workload-credentials.md shows it."""
    text = (ROOT / "docs" / "workload-credentials.md").read_text()
    body = text[text.index(SAMPLE_BEGIN) : text.index(SAMPLE_END)]
    blocks = re.findall(r"^```python\n(.*?)^```$", body, flags=re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, "the sample is one ```python block between its markers"
    return str(blocks[0])


def test_the_reporting_service_sample_borrows_counts_and_gives_back(borrowing: Borrowing) -> None:
    """The documented sample, run as a process over the agent's socket: the DBA sees its role
    and session while it counts, and no role once it is done."""
    agent = borrowing.start_agent("agent")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SEVVO_AGENT_SOCKET": str(borrowing.socket),
        "SEVVO_WORKLOAD_TOKEN_FILE": str(borrowing.token_file),
    }
    # The DBA holds the table, so the sample's count waits where everyone can look at it.
    with psycopg.connect(borrowing.server.admin_url(borrowing.source.database)) as lock:
        lock.execute("lock table orders in access exclusive mode")
        sample = subprocess.Popen(
            [sys.executable, "-c", _sample()],
            env=env,
            cwd=borrowing.directory,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            roles = _wait(borrowing.minted, "the sample's role appears", 30)
            (role,) = roles
            _wait(lambda: borrowing.sessions_of(role), "the sample's session appears", 30)
            waiting = borrowing.query(
                "select wait_event_type, query from pg_stat_activity where usename = %s", role
            )
            assert waiting == [("Lock", "select count(*) from orders")]
        except AssertionError as exc:
            sample.kill()
            _, err = sample.communicate(timeout=10)
            raise AssertionError(
                f"{exc}\nsample: {err.decode()[-2000:]}\nagent: {agent.output()[-3000:]}"
            ) from None
    out, err = sample.communicate(timeout=30)
    assert sample.returncode == 0, err.decode()
    assert out.decode() == "200 orders\n"
    assert borrowing.minted() == {}
    assert borrowing.sessions_of(role) == 0
    agent.stop()
    assert borrowing.workload_token not in agent.output()


def test_the_context_manager_refuses_an_ungranted_role(borrowing: Borrowing) -> None:
    """A role the workload was not granted is NotGranted, and nothing is minted."""
    borrowing.start_agent("agent")
    with (
        pytest.raises(NotGranted) as refused,
        sevvo_credentials(
            CONNECTION,
            role="etl",
            ttl="5m",
            socket=str(borrowing.socket),
            token=borrowing.workload_token,
        ),
    ):
        pass
    assert refused.value.reason == "ROLE_NOT_GRANTED"
    assert borrowing.workload_token not in str(refused.value)
    assert borrowing.minted() == {}


def test_a_managed_credential_is_renewed_then_replaced_before_its_max_ttl(
    borrowing: Borrowing,
) -> None:
    """30 s leases of at most 60 s: renewed at ~20 s (VALID UNTIL moves), replaced at ~40 s
    by a new role that works, the old one dropped after the grace, all dropped on exit."""
    borrowing.start_agent("agent")
    valid_until: dict[str, list[datetime]] = {}

    def observe() -> None:
        for role, until in borrowing.minted().items():
            seen = valid_until.setdefault(role, [])
            if until not in seen:
                seen.append(until)

    async def run() -> tuple[str, str]:
        async with managed_credentials(
            CONNECTION,
            ttl=SHORT_TTL,
            grace=1,
            socket=str(borrowing.socket),
            token=borrowing.workload_token,
        ) as cred:
            first = cred.current
            lifetime = first.max_expire_time - first.expire_time
            assert lifetime <= timedelta(seconds=ROLE_MAX_TTL - SHORT_TTL + 1)

            async def next_change() -> Credential:
                return await anext(cred.changes())

            changed = asyncio.create_task(next_change())
            deadline = time.monotonic() + 60
            while not changed.done() and time.monotonic() < deadline:
                await asyncio.to_thread(observe)
                await asyncio.sleep(1)
            new = await asyncio.wait_for(changed, 1)
            assert cred.renewals >= 1
            assert new.username != first.username
            with psycopg.connect(new.conninfo) as conn:
                assert conn.execute("select current_user").fetchone() == (new.username,)
            await asyncio.sleep(3)  # The grace is 1 s.
            assert set(await asyncio.to_thread(borrowing.minted)) == {new.username}
            return first.username, new.username

    first, _ = asyncio.run(run())
    assert len(valid_until[first]) >= 2, "the first role's VALID UNTIL moved on renewal"
    assert valid_until[first] == sorted(valid_until[first])
    assert borrowing.minted() == {}


def test_sidecar_mode_keeps_the_file_current_and_revokes_on_sigterm(borrowing: Borrowing) -> None:
    """The agent as a sidecar: the file appears (0600) with a working credential, the role's
    VALID UNTIL moves on renewal, the file is replaced before the max TTL by a new user that
    works, and SIGTERM revokes the role and removes the file."""
    file = borrowing.directory / "db.conninfo"
    agent = borrowing.start_agent(
        "sidecar",
        SEVVO_SIDECAR_CONNECTION=CONNECTION,
        SEVVO_SIDECAR_TTL=f"{SHORT_TTL}s",
        SEVVO_SIDECAR_FILE=str(file),
        SEVVO_SIDECAR_FORMAT="conninfo",
        SEVVO_SIDECAR_GRACE_SECONDS="1",
        SEVVO_WORKLOAD_TOKEN_FILE=str(borrowing.token_file),
    )
    _wait(file.exists, "the credential file appears", 30)
    assert file.stat().st_mode & 0o777 == 0o600
    first = file.read_text().strip()
    with psycopg.connect(first) as conn:
        (user,) = conn.execute("select current_user").fetchone() or ("",)
        assert conn.execute("select count(*) from orders").fetchone() == (200,)
    initial = borrowing.minted()[user]
    _wait(
        lambda: (borrowing.minted().get(user) or initial) > initial,
        "the role's VALID UNTIL moves on renewal",
        40,
    )
    _wait(lambda: file.read_text().strip() != first, "the file is replaced", 40)
    second = file.read_text().strip()
    with psycopg.connect(second) as conn:
        (new_user,) = conn.execute("select current_user").fetchone() or ("",)
    assert new_user != user
    _wait(lambda: user not in borrowing.minted(), "the replaced role is dropped", 10)
    assert file.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in borrowing.directory.glob(".db.conninfo.*")] == []

    agent.stop()
    assert agent.wait(5) == 0
    assert not file.exists()
    assert borrowing.minted() == {}
    log = agent.output()
    assert "sidecar credential revoked" in log
    assert borrowing.workload_token not in log
    for secret in (first, second):
        password = re.search(r"password=(\S+)", secret)
        assert password is not None
        assert password.group(1).strip("'") not in log
