"""Components of the process stack come back from SIGKILL on their port with their state."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from temporalio.client import Client

from devstack.process_stack import ControlPlanePostgres, TemporalProcess
from devstack.processes import child_pids, free_port, pid_alive


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """Under /tmp: as root, Postgres runs as a user that cannot enter pytest's 0700 base."""
    directory = Path(tempfile.mkdtemp(prefix="sevvo-ps-test-"))
    directory.chmod(0o711)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_a_killed_postgres_leaves_no_child_and_restarts_with_its_committed_rows(
    state_dir: Path,
) -> None:
    """SIGKILL with a client attached: no backend survives, and the restart (crash
    recovery) on the same port still holds every committed row."""
    postgres = ControlPlanePostgres(state_dir / "pg", free_port())
    postgres.start()
    try:
        url = postgres.server.url
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create table kept (n int)")
            conn.execute("insert into kept values (1), (2)")
        idle = psycopg.connect(url)  # A backend that is busy with nobody when the kill lands.
        children = child_pids(postgres.server.pid)
        assert children
        postgres.kill()
        assert [pid for pid in children if pid_alive(pid)] == []
        idle.close()
        postgres.restart()
        assert postgres.server.url == url
        with psycopg.connect(url) as conn:
            assert conn.execute("select sum(n) from kept").fetchone() == (3,)
    finally:
        postgres.stop()


def test_a_killed_temporal_restarts_on_its_port_with_its_workflows(state_dir: Path) -> None:
    """A workflow started before the kill is still there after the restart."""
    temporal = TemporalProcess(state_dir / "temporal.sqlite", state_dir / "t.log", free_port())
    temporal.start()

    async def start_workflow() -> None:
        client = await Client.connect(temporal.server.address)
        await client.start_workflow("NoSuchWorkflow", id="kept-workflow", task_queue="nobody")

    async def describe() -> str:
        client = await Client.connect(temporal.server.address)
        described = await client.get_workflow_handle("kept-workflow").describe()
        return described.id

    try:
        asyncio.run(start_workflow())
        address = temporal.server.address
        temporal.kill()
        temporal.restart()
        assert temporal.server.address == address
        assert asyncio.run(describe()) == "kept-workflow"
    finally:
        temporal.stop()
