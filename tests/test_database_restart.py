"""The services outlive a restart of the control-plane Postgres under them.

A dedicated Postgres that this module stops and starts again (same port, same data) serves a
running stack. While it is down, calls answer UNAVAILABLE with a reason and a message that say
so; once it is back, every call succeeds: no pooled connection that died with the old server
is handed out again.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from devstack.postgres import EmbeddedPostgres
from devstack.processes import free_port
from devstack.stack import RunningStack, StackSettings, start_stack
from sevvo.auth.v1 import auth_pb2, auth_pb2_grpc
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.connections.v1 import connections_pb2_grpc as cpb_grpc
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.orchestrator.v1 import orchestrator_pb2_grpc as opb_grpc
from sevvo.runtime.errors import DATABASE_UNAVAILABLE
from sevvo.runtime.grpc_client import ClientTls, ErrorDetails, error_details, secure_channel
from sevvo.runtime.store import CHECKOUT_TIMEOUT_SECONDS
from tests.plugins.auth_stack import PASSWORD, BackgroundLoop

CALLS = 60
# After a long outage the pool reconnects with backoff (psycopg_pool doubles its delay from
# 1 s while the server is away) and token verification must reload its keys.
RECOVERY_SECONDS = 30.0


@dataclass
class Restartable:
    """A stack on a Postgres the test may stop and start, and a user's two List calls."""

    postgres: EmbeddedPostgres
    stack: RunningStack
    list_connections: Callable[[], object]
    list_runs: Callable[[], object]

    def warm_up(self) -> None:
        """Fills the pools: concurrent calls make each service open several connections."""
        _results(self.list_connections, 16)
        _results(self.list_runs, 16)

    def restart_postgres(self) -> None:
        """Stops Postgres (fast shutdown: every session is cut) and starts it on the same port.

        Returns once token verification trusts keys fetched after the restart. A restart
        slower than its staleness limit (5 s; a loaded machine) would otherwise fail calls
        with AUTH_UNAVAILABLE, by design and before any pool is asked for a connection.
        Waiting for that refresh touches only auth's pool, never the pools the calls use.
        """
        self.postgres.stop()
        self.postgres.start()
        restarted = time.monotonic()
        deadline = restarted + RECOVERY_SECONDS
        while (self.stack.auth.verifier.trust_fetched_at or 0.0) <= restarted:
            assert time.monotonic() < deadline, "token verification did not refresh its keys"
            time.sleep(0.05)


def _results(call: Callable[[], object], count: int) -> list[grpc.StatusCode]:
    def one(_: int) -> grpc.StatusCode:
        try:
            call()
        except grpc.RpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(count)))


@pytest.fixture(scope="module")
def restartable(background_loop: BackgroundLoop) -> Iterator[Restartable]:
    """The stack (no agent) on its own Postgres, with a signed-in user."""
    state = Path(tempfile.mkdtemp(prefix="sevvo-restart-"))
    # Its own directory: as root, Postgres runs as a user that cannot enter a 0700 one.
    pg_dir = Path(tempfile.mkdtemp(prefix="sevvo-restart-pg-"))
    postgres = EmbeddedPostgres(pg_dir, port=free_port(), durable=False).start()
    stack = None
    channel = None
    try:
        settings = StackSettings(
            state_dir=state,
            grpc_port=0,
            database_url=postgres.url,
            temporal_address=None,
            durable=False,
            start_agent=False,
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEVVO_")}
        stack = background_loop.run(start_stack(settings, env), timeout=120)
        email = f"admin@restart-{uuid.uuid4().hex[:8]}.example"
        stack.auth.domain.create_org_with_admin("Restart Org", email, PASSWORD)
        tls = ClientTls(stack.pki.ca_cert)
        token = (
            auth_pb2_grpc.AuthServiceStub(secure_channel(stack.grpc_target, tls))
            .SignIn(auth_pb2.SignInRequest(email=email, password=PASSWORD))
            .session_token
        )
        channel = secure_channel(stack.grpc_target, tls, lambda: token)
        connections = cpb_grpc.ConnectionServiceStub(channel)
        orchestrator = opb_grpc.OrchestratorServiceStub(channel)
        yield Restartable(
            postgres,
            stack,
            lambda: connections.ListConnections(cpb.ListConnectionsRequest(), timeout=30),
            lambda: orchestrator.ListRuns(opb.ListRunsRequest(), timeout=30),
        )
    finally:
        if channel is not None:
            channel.close()
        if stack is not None:
            background_loop.run(stack.stop(), timeout=120)
        postgres.stop()
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(pg_dir, ignore_errors=True)


def _failure(call: Callable[[], object]) -> tuple[ErrorDetails, float]:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return error_details(caught.value), time.monotonic() - started


def test_calls_while_the_database_is_down_are_unavailable(restartable: Restartable) -> None:
    """UNAVAILABLE with a reason and a retry hint, within the pool's checkout timeout."""
    restartable.warm_up()
    restartable.postgres.stop()
    try:
        # Together, while token verification still trusts its keys (it fails closed a few
        # seconds after auth's store stops answering, with AUTH_UNAVAILABLE).
        with ThreadPoolExecutor(max_workers=2) as pool:
            outcomes = list(
                pool.map(_failure, (restartable.list_connections, restartable.list_runs))
            )
    finally:
        restartable.postgres.start()
    for details, seconds in outcomes:
        assert (details.code, details.reason) == (
            grpc.StatusCode.UNAVAILABLE,
            DATABASE_UNAVAILABLE,
        )
        assert "database is unavailable" in details.message
        assert seconds < CHECKOUT_TIMEOUT_SECONDS + 5


def _wait_until_serving(call: Callable[[], object]) -> None:
    deadline = time.monotonic() + RECOVERY_SECONDS
    while _results(call, 1) != [grpc.StatusCode.OK]:
        assert time.monotonic() < deadline, f"not serving {RECOVERY_SECONDS:.0f} s after restart"
        time.sleep(0.2)


def test_every_call_succeeds_after_a_database_restart(restartable: Restartable) -> None:
    """60 ListConnections and 60 ListRuns right after a restart all succeed: no stale connection."""
    # Recovered from whatever came before, with every pool holding several connections.
    _wait_until_serving(restartable.list_connections)
    _wait_until_serving(restartable.list_runs)
    restartable.warm_up()
    # A quick restart (well inside token verification's staleness limit): every pooled
    # connection is now dead, and no call has yet found out.
    restartable.restart_postgres()
    codes = _results(restartable.list_connections, CALLS) + _results(restartable.list_runs, CALLS)
    failed = [code.name for code in codes if code != grpc.StatusCode.OK]
    assert failed == []
