"""auth's deployments in memory: exchanges read no database, and no revocation is missed.

The first tests drive DeploymentCache with a fake listening connection, so its rules (what is
kept, what drops it, when it is bypassed) are checked in milliseconds. The rest run real auth
replicas over TLS against a real Postgres: revocation through the RPC, by hand in SQL and
while the listening connection is killed (services/auth/deployment_cache.py states the bounds).
"""

from __future__ import annotations

import queue
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devstack.pki import DevPki
from services.auth.deployment_cache import DeploymentCache
from services.auth.server import AuthApp
from services.auth.store import (
    LISTENER_APPLICATION_NAME,
    AuthStore,
    DeploymentSecretRow,
    Echo,
    RowChanged,
)
from sevvo.auth.v1 import auth_pb2, deployments_pb2
from sevvo.runtime.grpc_client import ClientTls, error_details
from sevvo.runtime.grpc_server import start_server
from tests.plugins.auth_stack import AuthStack, BackgroundLoop, auth_config

# How soon another replica must refuse a revoked deployment: one notification's delivery
# (milliseconds on loopback), with room for a loaded machine; well under the 1.5 s after
# which a cache whose listener went silent is bypassed anyway.
NOTIFY_BOUND_SECONDS = 1.0


def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> float:
    """Polls ``condition`` until it holds; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(0.002)
    return time.monotonic() - started


# The cache's rules, with a fake listening connection.


class FakeChanges:
    """A listening connection that echoes heartbeats (unless told not to) and can fail."""

    own_channel = "fake-listener"

    def __init__(self) -> None:
        self.echo = True
        self._arrivals: queue.SimpleQueue[RowChanged | Echo | Exception] = queue.SimpleQueue()

    def deliver(self, arrival: RowChanged | Echo | Exception) -> None:
        """Makes a change, an echo or a connection failure arrive."""
        self._arrivals.put(arrival)

    def send_heartbeat(self, payload: str) -> None:
        if self.echo:
            self.deliver(Echo(payload))

    def receive(self, timeout: float) -> Iterator[RowChanged | Echo]:
        try:
            arrival = self._arrivals.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            if isinstance(arrival, Exception):
                raise arrival
            yield arrival
            try:
                arrival = self._arrivals.get_nowait()
            except queue.Empty:
                return

    def close(self) -> None:
        pass


class FakeListener:
    """Opens FakeChanges connections, or refuses to while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.connections: list[FakeChanges] = []

    def __call__(self) -> FakeChanges:
        if self.down:
            raise psycopg.OperationalError("connection refused")
        self.connections.append(FakeChanges())
        return self.connections[-1]

    def wake(self, channel: str, payload: str) -> None:
        self.connections[-1].deliver(Echo(payload))


KNOWN = DeploymentSecretRow(uuid.uuid4(), uuid.uuid4(), b"h" * 32, None)


@pytest.fixture
def listener() -> FakeListener:
    """The fake Postgres side of the cache's listener."""
    return FakeListener()


@pytest.fixture
def loads() -> list[uuid.UUID]:
    """Every deployment id the cache read from the (fake) store."""
    return []


def _cache(
    listener: FakeListener, load: Callable[[uuid.UUID], DeploymentSecretRow | None]
) -> DeploymentCache:
    return DeploymentCache(load, listener, listener.wake, heartbeat_seconds=0.02, trust_seconds=0.1)


@contextmanager
def running(cache: DeploymentCache) -> Iterator[DeploymentCache]:
    """The cache, started, and stopped on exit."""
    cache.start()
    try:
        yield cache
    finally:
        cache.stop()


@pytest.fixture
def cache(listener: FakeListener, loads: list[uuid.UUID]) -> Iterator[DeploymentCache]:
    """A started cache over a store that knows one deployment, KNOWN."""

    def load(deployment_id: uuid.UUID) -> DeploymentSecretRow | None:
        loads.append(deployment_id)
        return KNOWN if deployment_id == KNOWN.id else None

    with running(_cache(listener, load)) as cache:
        wait_until(lambda: cache.trusted)
        yield cache


def test_known_deployment_is_read_once_then_served_from_memory(
    cache: DeploymentCache, loads: list[uuid.UUID]
) -> None:
    """A deployment is read from the store on first use only."""
    for _ in range(3):
        assert cache.get(KNOWN.id) == KNOWN
    assert loads == [KNOWN.id]
    assert cache.cached(KNOWN.id) == KNOWN


def test_unknown_deployment_is_never_cached(cache: DeploymentCache, loads: list[uuid.UUID]) -> None:
    """An id the store does not know is read every time, so guesses cannot fill memory."""
    unknown = uuid.uuid4()
    assert cache.get(unknown) is None
    assert cache.get(unknown) is None
    assert loads == [unknown, unknown]


def test_cache_is_bypassed_until_a_heartbeat_echoes(listener: FakeListener) -> None:
    """Before the listener has proved it hears changes, every get reads the store."""
    loads: list[uuid.UUID] = []

    def load(deployment_id: uuid.UUID) -> DeploymentSecretRow:
        loads.append(deployment_id)
        return KNOWN

    listener.down = True  # Never connects, so no heartbeat can echo.
    with running(_cache(listener, load)) as cache:
        time.sleep(0.2)
        assert cache.get(KNOWN.id) == KNOWN
        assert cache.get(KNOWN.id) == KNOWN
        assert (cache.trusted, cache.cached(KNOWN.id), len(loads)) == (False, None, 2)


def test_notified_change_drops_the_deployment(
    cache: DeploymentCache, listener: FakeListener, loads: list[uuid.UUID]
) -> None:
    """A change notified for a deployment drops it; the next get reads the store again."""
    cache.get(KNOWN.id)
    listener.connections[-1].deliver(RowChanged(KNOWN.id))
    wait_until(lambda: cache.cached(KNOWN.id) is None, timeout=1)
    cache.get(KNOWN.id)
    assert loads == [KNOWN.id, KNOWN.id]


def test_notified_truncate_drops_every_deployment(
    cache: DeploymentCache, listener: FakeListener
) -> None:
    """A change naming no deployment (a TRUNCATE) empties the cache."""
    cache.get(KNOWN.id)
    listener.connections[-1].deliver(RowChanged(None))
    wait_until(lambda: cache.cached(KNOWN.id) is None, timeout=1)


def test_read_that_raced_a_change_is_not_kept(listener: FakeListener) -> None:
    """A row read while a change to it was notified is returned but not remembered."""
    cache: DeploymentCache

    def load_racing_a_revocation(deployment_id: uuid.UUID) -> DeploymentSecretRow:
        cache.forget(deployment_id)  # As if the notification arrived during the read.
        return KNOWN

    with running(_cache(listener, load_racing_a_revocation)) as cache:
        wait_until(lambda: cache.trusted)
        assert cache.get(KNOWN.id) == KNOWN
        assert cache.cached(KNOWN.id) is None


def test_lost_connection_empties_and_bypasses_the_cache_until_back(
    cache: DeploymentCache, listener: FakeListener, loads: list[uuid.UUID]
) -> None:
    """A failed listening connection bypasses the cache at once, until a new one echoes."""
    cache.get(KNOWN.id)
    listener.down = True
    listener.connections[-1].deliver(psycopg.OperationalError("terminated"))
    wait_until(lambda: not cache.trusted, timeout=0.5)
    assert cache.cached(KNOWN.id) is None
    time.sleep(0.3)  # Longer than the trust window: still bypassed while it cannot connect.
    cache.get(KNOWN.id)
    cache.get(KNOWN.id)
    assert (cache.trusted, len(loads)) == (False, 3)
    listener.down = False
    wait_until(lambda: cache.trusted)
    cache.get(KNOWN.id)
    cache.get(KNOWN.id)
    assert len(loads) == 4, "what was read during the outage was not kept"


def test_trust_runs_out_when_heartbeats_stop_echoing(
    cache: DeploymentCache, listener: FakeListener
) -> None:
    """A listener that goes silent (a partition) is bypassed within the trust window."""
    cache.get(KNOWN.id)
    listener.connections[-1].echo = False
    assert wait_until(lambda: not cache.trusted, timeout=1) < 0.1 + 0.02 + 0.1
    assert cache.cached(KNOWN.id) is None


def test_stopped_cache_is_bypassed(cache: DeploymentCache) -> None:
    """After stop, nothing is served from memory."""
    cache.get(KNOWN.id)
    cache.stop()
    assert (cache.trusted, cache.cached(KNOWN.id)) == (False, None)


# Real auth replicas on a real Postgres.


@pytest.fixture
def deployment_reads(monkeypatch: pytest.MonkeyPatch) -> list[uuid.UUID]:
    """Every deployment read from Postgres by the exchange path, by any replica."""
    reads: list[uuid.UUID] = []
    original = AuthStore.deployment_secret

    def counted(store: AuthStore, deployment_id: uuid.UUID) -> DeploymentSecretRow | None:
        reads.append(deployment_id)
        return original(store, deployment_id)

    monkeypatch.setattr(AuthStore, "deployment_secret", counted)
    return reads


@pytest.fixture
def start_replica(
    database_url: str, dev_pki: DevPki, background_loop: BackgroundLoop
) -> Iterator[Callable[..., AuthStack]]:
    """Starts auth replicas (their own app and TLS server) sharing one database and key."""
    kek = secrets.token_bytes(32)
    running: list[tuple[AuthApp, grpc.aio.Server]] = []

    def start(url: str = database_url) -> AuthStack:
        config = auth_config(url, dev_pki, kek)
        app = AuthApp(config)
        app.open()
        server, port = background_loop.run(
            start_server([app.spec()], verifier=app.verifier, tls=config.tls, port=0)
        )
        running.append((app, server))
        wait_until(lambda: app.deployments.trusted)
        return AuthStack(app, f"localhost:{port}", ClientTls(ca_file=dev_pki.ca_cert))

    yield start
    for app, server in reversed(running):
        background_loop.run(server.stop(grace=1))
        app.close()


def _refusal(replica: AuthStack, token: str) -> str | None:
    """The reason an exchange is refused, or None if it succeeds."""
    try:
        replica.agent_bearer(token)
    except grpc.RpcError as error:
        return error_details(error).reason
    return None


def _revoke_in_sql(database_url: str, deployment_id: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "update auth.deployments set revoked_at = now() where id = %s", (deployment_id,)
        )


def test_exchanges_of_a_known_deployment_read_no_database(
    start_replica: Callable[..., AuthStack], deployment_reads: list[uuid.UUID]
) -> None:
    """Only the first exchange of a deployment reads Postgres; each bearer is new and valid."""
    replica = start_replica()
    org = replica.create_org()
    deployment_id, token = replica.new_deployment(org)
    bearers = {replica.agent_bearer(token) for _ in range(10)}
    assert deployment_reads == [uuid.UUID(deployment_id)]
    assert len(bearers) == 10
    caller = replica.auth(bearers.pop()).GetCaller(auth_pb2.GetCallerRequest())
    assert (caller.org_id, caller.subject_id) == (org.org_id, deployment_id)


def test_revoking_replica_refuses_the_next_exchange_at_once(
    start_replica: Callable[..., AuthStack], deployment_reads: list[uuid.UUID]
) -> None:
    """The exchange right after RevokeDeployment returns fails, though it was cached."""
    replica = start_replica()
    org = replica.create_org()
    deployment_id, token = replica.new_deployment(org)
    replica.agent_bearer(token)
    replica.agent_bearer(token)
    assert len(deployment_reads) == 1, "the deployment should be served from memory"
    replica.deployments(org.admin_token).RevokeDeployment(
        deployments_pb2.RevokeDeploymentRequest(id=deployment_id)
    )
    assert _refusal(replica, token) == "DEPLOYMENT_REVOKED"


def test_other_replica_refuses_within_one_notification(
    start_replica: Callable[..., AuthStack], deployment_reads: list[uuid.UUID]
) -> None:
    """A deployment revoked on one replica is refused by another within NOTIFY_BOUND_SECONDS."""
    first, second = start_replica(), start_replica()
    org = first.create_org()
    deployment_id, token = first.new_deployment(org)
    second.agent_bearer(token)
    second.agent_bearer(token)
    assert len(deployment_reads) == 1, "the second replica should serve it from memory"
    first.deployments(org.admin_token).RevokeDeployment(
        deployments_pb2.RevokeDeploymentRequest(id=deployment_id)
    )
    assert wait_until(lambda: _refusal(second, token), timeout=5) < NOTIFY_BOUND_SECONDS
    assert _refusal(second, token) == "DEPLOYMENT_REVOKED"


def test_revocation_made_in_sql_reaches_the_cache(
    start_replica: Callable[..., AuthStack], database_url: str
) -> None:
    """A deployment revoked by hand in SQL is refused within NOTIFY_BOUND_SECONDS."""
    replica = start_replica()
    org = replica.create_org()
    deployment_id, token = replica.new_deployment(org)
    replica.agent_bearer(token)
    _revoke_in_sql(database_url, deployment_id)
    assert wait_until(lambda: _refusal(replica, token), timeout=5) < NOTIFY_BOUND_SECONDS
    assert _refusal(replica, token) == "DEPLOYMENT_REVOKED"


@pytest.fixture
def auth_role_url(database_url: str) -> Iterator[tuple[str, str]]:
    """A login role owning the test database, as auth would run: its name and its DSN."""
    role = f"auth_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(16)
    dbname = conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("create role {} login password {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        conn.execute(
            sql.SQL("alter database {} owner to {}").format(
                sql.Identifier(str(dbname)), sql.Identifier(role)
            )
        )
    try:
        yield role, make_conninfo(database_url, user=role, password=password)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("reassign owned by {} to current_user").format(sql.Identifier(role))
            )
            conn.execute(sql.SQL("drop owned by {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


def _set_login(database_url: str, role: str, allowed: bool) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("alter role {} {}").format(
                sql.Identifier(role), sql.SQL("login" if allowed else "nologin")
            )
        )


def _kill_listener(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        killed = conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where application_name = %s and datname = current_database()",
            (LISTENER_APPLICATION_NAME,),
        ).fetchall()
    assert killed == [(True,)]


def test_killed_listener_bypasses_the_cache_and_misses_no_revocation(
    start_replica: Callable[..., AuthStack],
    database_url: str,
    auth_role_url: tuple[str, str],
    deployment_reads: list[uuid.UUID],
) -> None:
    """With its listener killed and kept out, auth reads Postgres; then it uses memory again."""
    role, url = auth_role_url
    replica = start_replica(url)
    org = replica.create_org()
    revoked_id, revoked_token = replica.new_deployment(org, "revoked in the outage")
    _, live_token = replica.new_deployment(org, "live")
    for token in (revoked_token, live_token, revoked_token, live_token):
        replica.agent_bearer(token)
    assert len(deployment_reads) == 2

    _set_login(database_url, role, allowed=False)  # The listener cannot come back...
    try:
        _kill_listener(database_url)  # ...once killed.
        wait_until(lambda: not replica.app.deployments.trusted, timeout=1)
        _revoke_in_sql(database_url, revoked_id)  # Its notification reaches no one.
        assert _refusal(replica, revoked_token) == "DEPLOYMENT_REVOKED"
        replica.agent_bearer(live_token)
        replica.agent_bearer(live_token)
        assert len(deployment_reads) == 5, "each exchange in the outage reads Postgres"
        assert not replica.app.deployments.trusted
    finally:
        _set_login(database_url, role, allowed=True)

    wait_until(lambda: replica.app.deployments.trusted, timeout=5)
    assert _refusal(replica, revoked_token) == "DEPLOYMENT_REVOKED"
    replica.agent_bearer(live_token)
    replica.agent_bearer(live_token)
    assert len(deployment_reads) == 7, "read once after the outage, then from memory"
