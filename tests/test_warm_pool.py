"""The agent's warm pool against the real system: control plane, a TLS customer database,
workload identities, and a real agent process for start-up and SIGTERM.

The pool runs in this process (on the stack's loop, as the tenant's agent would run it) for
the tests that need to look at it between steps; the last test runs it where it lives, in
``python -m agent``.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from agent.credential_broker import IssuedCredential
from agent.leases import Reaper
from agent.warm_pool import POOL_PURPOSE, PoolSpec, WarmPool
from devstack.agent_process import AgentProcess
from devstack.postgres import EmbeddedPostgres
from devstack.source_db import SourceDatabase, create_dynamic_roles, drop_roles
from sevvo.agent.v1 import credentials_pb2, credentials_pb2_grpc
from sevvo.auth.v1 import auth_pb2, auth_pb2_grpc, workloads_pb2, workloads_pb2_grpc
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.connections.v1 import connections_pb2_grpc as cpb_grpc
from sevvo.runtime.auth_client import RemoteTrustSource
from sevvo.runtime.errors import SevvoError, Unauthenticated
from sevvo.runtime.grpc_client import ClientTls, secure_aio_channel, secure_channel
from sevvo.runtime.tokens import PrincipalKind, TokenVerifier
from tests.plugins.auth_stack import BackgroundLoop
from tests.plugins.dev_stack import REAPER_SECONDS, EndToEnd, Tenant
from tests.plugins.source_db import SourceTargetFactory

PRIVILEGED_PASSWORD = "privileged-pw-pool-4242"


@dataclass
class Source:
    """A seeded source database, its privileged role and the group minted roles join."""

    db: SourceDatabase
    admin_url: str
    readers: str
    privileged: str

    def query(self, text: str, *params: object) -> list[tuple[Any, ...]]:
        """Runs ``text`` as the superuser in the source database."""
        with psycopg.connect(self.admin_url) as conn:
            return conn.execute(text, params or None).fetchall()

    def logins(self) -> set[str]:
        """The minted login roles of this source (members of its readers group)."""
        return {
            str(row[0])
            for row in self.query(
                "select r.rolname from pg_auth_members m join pg_roles g on g.oid = m.roleid"
                " join pg_roles r on r.oid = m.member where g.rolname = %s"
                " and r.rolname like 'sevvo_dyn_%%'",
                self.readers,
            )
        }

    def valid_until(self, role: str) -> datetime:
        """The role's VALID UNTIL."""
        ((value,),) = self.query("select rolvaliduntil from pg_roles where rolname = %s", role)
        assert isinstance(value, datetime)
        return value


@pytest.fixture
def source(tls_source_pg: EmbeddedPostgres, source_target: SourceTargetFactory) -> Iterator[Source]:
    """A seeded source database with a privileged role and a readers group."""
    db = source_target(tls_source_pg)
    admin_url = tls_source_pg.admin_url(db.database)
    readers, privileged = create_dynamic_roles(
        admin_url, database=db.database, password=PRIVILEGED_PASSWORD
    )
    source = Source(db, admin_url, readers, privileged)
    yield source
    # Roles lent to the tests' workloads are theirs to give back, and these tests do not all
    # do so; the cluster is shared with later modules, which count the minted roles they see.
    left = sorted(source.logins())
    for login in left:
        source.query(
            "select pg_terminate_backend(pid, 5000) from pg_stat_activity where usename = %s", login
        )
    drop_roles(admin_url, *left, privileged, readers)


@dataclass
class Setup:
    """A tenant (agent running) with a dynamic connection on ``source``."""

    e2e: EndToEnd
    tenant: Tenant
    connection: cpb.Connection
    source: Source

    def leases(self) -> list[cpb.Lease]:
        """Every lease of the connection, as the admin sees them."""
        return list(
            cpb_grpc.LeaseServiceStub(self.e2e._channel(self.tenant.admin_token))
            .ListLeases(cpb.ListLeasesRequest(connection_id=self.connection.id, page_size=500))
            .leases
        )

    def pooled(self) -> dict[str, cpb.Lease]:
        """Active, unclaimed pool leases by role name."""
        return {
            lease.role_name: lease
            for lease in self.leases()
            if lease.purpose == POOL_PURPOSE
            and lease.state == cpb.LEASE_STATE_ACTIVE
            and not lease.workload_id
        }

    def workload(self, *roles: str, max_ttl: int = 3600) -> tuple[str, str]:
        """A workload granted ``roles`` of the connection; returns (workload id, bearer)."""
        workload_id, token = self.workload_token(*roles, max_ttl=max_ttl)
        exchanged = auth_pb2_grpc.AuthServiceStub(self.e2e._channel(None)).ExchangeWorkloadToken(
            auth_pb2.ExchangeWorkloadTokenRequest(workload_token=token)
        )
        return workload_id, str(exchanged.bearer_token)

    def workload_token(self, *roles: str, max_ttl: int = 3600) -> tuple[str, str]:
        """A workload granted ``roles`` of the connection; returns (workload id, token)."""
        created = workloads_pb2_grpc.WorkloadServiceStub(
            self.e2e._channel(self.tenant.admin_token)
        ).CreateWorkload(
            workloads_pb2.CreateWorkloadRequest(
                display_name=f"reporting-{uuid.uuid4().hex[:6]}",
                grants=[
                    workloads_pb2.WorkloadGrant(connection_id=self.connection.id, role=role)
                    for role in roles
                ],
                max_ttl_seconds=max_ttl,
            )
        )
        return str(created.workload.id), str(created.workload_token)


@pytest.fixture
def setup(e2e: EndToEnd, source: Source) -> Setup:
    """A new tenant and a dynamic connection (default TTL 300 s, max 900 s) on ``source``."""
    tenant = e2e.new_tenant()
    connection: cpb.Connection = e2e.connections(tenant.admin_token).CreateConnection(
        cpb.CreateConnectionRequest(
            display_name=f"pool-{uuid.uuid4().hex[:6]}",
            dynamic=EndToEnd.dynamic(
                source.db,
                privileged=source.privileged,
                privileged_password=PRIVILEGED_PASSWORD,
                group=source.readers,
                ttl=300,
                max_ttl=900,
            ),
        )
    )
    assert connection.status == cpb.CONNECTION_STATUS_CONNECTED
    return Setup(e2e, tenant, connection, source)


@asynccontextmanager
async def _agent_side(setup: Setup) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to the control plane as the tenant's agent."""
    bearer = str(setup.e2e.stack.auth.domain.exchange(setup.tenant.deployment_token).token)
    channel = secure_aio_channel(
        setup.e2e.stack.grpc_target, ClientTls(setup.e2e.stack.pki.ca_cert), lambda: bearer
    )
    try:
        yield channel
    finally:
        await channel.close()


@asynccontextmanager
async def _verifier(
    setup: Setup, *, refresh: float = 2.0, staleness: float = 5.0
) -> AsyncIterator[TokenVerifier]:
    """The verifier the agent builds for its pool: auth's keys and revocations over gRPC.

    Started off the loop: the stack's auth answers on this loop."""
    channel = secure_channel(setup.e2e.stack.grpc_target, ClientTls(setup.e2e.stack.pki.ca_cert))
    verifier = TokenVerifier(
        RemoteTrustSource(channel), refresh_interval=refresh, max_staleness=staleness
    )
    await asyncio.to_thread(verifier.start)
    assert verifier.trust_fetched_at is not None
    try:
        yield verifier
    finally:
        await asyncio.to_thread(verifier.stop)
        channel.close()


def _pool(channel: grpc.aio.Channel, spec: PoolSpec, **options: Any) -> WarmPool:
    return WarmPool(
        [spec],
        cpb_grpc.LeaseServiceStub(channel),
        cpb_grpc.ConnectionCredentialServiceStub(channel),
        **options,
    )


async def _count_orders(borrowed: IssuedCredential) -> int:
    async with await psycopg.AsyncConnection.connect(borrowed.conninfo) as conn:
        cur = await conn.execute("select count(*) from orders")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


def _wait_for(condition: Callable[[], bool], what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_pool_fills_to_its_size_with_recorded_leases_and_closing_revokes_them(
    setup: Setup, background_loop: BackgroundLoop
) -> None:
    """By name: N roles exist, each an active "warm_pool" lease with no workload; close()
    revokes every one (role gone, lease revoked)."""
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with _agent_side(setup) as channel:
            pool = _pool(channel, PoolSpec(setup.connection.display_name, "default", 3))
            seen["minted"] = await pool.fill_once()
            seen["again"] = await pool.fill_once()
            seen["logins"] = await asyncio.to_thread(setup.source.logins)
            seen["pooled"] = await asyncio.to_thread(setup.pooled)
            seen["revoked"] = await pool.close()

    background_loop.run(scenario(), timeout=60)
    assert (seen["minted"], seen["again"], seen["revoked"]) == (3, 0, 3)
    assert len(seen["logins"]) == 3
    assert set(seen["pooled"]) == seen["logins"]
    assert all(lease.role == "default" for lease in seen["pooled"].values())
    assert setup.source.logins() == set()
    states = {lease.role_name: lease.state for lease in setup.leases()}
    assert states == dict.fromkeys(seen["logins"], cpb.LEASE_STATE_REVOKED)


def test_a_borrow_hands_out_a_working_pooled_role_records_the_workload_and_refills(
    setup: Setup, background_loop: BackgroundLoop
) -> None:
    """The borrowed role logs in and reads; its lease now names the workload and purpose;
    the pool mints a replacement; the borrowed role is not handed out again."""
    workload_id, bearer = setup.workload("default")
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with _agent_side(setup) as channel:
            pool = _pool(channel, PoolSpec(setup.connection.id, "default", 2))
            await pool.fill_once()
            before = await asyncio.to_thread(setup.source.logins)
            borrowed = await pool.take(
                setup.connection.id, "default", timedelta(seconds=60), bearer, "reporting"
            )
            assert borrowed is not None
            seen["borrowed"] = borrowed
            seen["from_pool"] = borrowed.username in before
            seen["orders"] = await _count_orders(borrowed)
            seen["left"] = pool.sizes()
            seen["refilled"] = await pool.fill_once()
            seen["pooled"] = await asyncio.to_thread(setup.pooled)
            await pool.close()

    background_loop.run(scenario(), timeout=60)
    borrowed: IssuedCredential = seen["borrowed"]
    assert seen["from_pool"]
    assert seen["orders"] > 0
    leases = {lease.id: lease for lease in setup.leases()}
    claimed = leases[borrowed.lease_id]
    assert (claimed.workload_id, claimed.purpose) == (workload_id, "reporting")
    assert claimed.role_name == borrowed.username
    assert claimed.state == cpb.LEASE_STATE_ACTIVE
    assert seen["left"] == {(setup.connection.id, "default"): 1}
    assert seen["refilled"] == 1
    assert len(seen["pooled"]) == 2
    assert borrowed.username not in seen["pooled"]
    # close() revoked the pool, not the workload's lease: that is the workload's to give back.
    assert setup.source.logins() == {borrowed.username}
    assert {lease.id: lease for lease in setup.leases()}[borrowed.lease_id].state == (
        cpb.LEASE_STATE_ACTIVE
    )


def test_concurrent_borrows_never_share_a_role(
    setup: Setup, background_loop: BackgroundLoop
) -> None:
    """Eight borrowers at once against a pool of five: five distinct roles, three misses."""
    workload_id, bearer = setup.workload("default")
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with _agent_side(setup) as channel:
            pool = _pool(channel, PoolSpec(setup.connection.id, "default", 5))
            await pool.fill_once()
            seen["results"] = await asyncio.gather(
                *(
                    pool.take(setup.connection.id, "default", None, bearer, f"job_{i}")
                    for i in range(8)
                )
            )
            await pool.close()

    background_loop.run(scenario(), timeout=60)
    borrowed = [b for b in seen["results"] if b is not None]
    assert len(borrowed) == 5
    assert len({b.username for b in borrowed}) == 5
    assert len({b.lease_id for b in borrowed}) == 5
    leases = {lease.id: lease for lease in setup.leases()}
    assert {leases[b.lease_id].workload_id for b in borrowed} == {workload_id}


def test_an_ungranted_borrow_is_refused_and_the_role_stays_pooled(
    setup: Setup, background_loop: BackgroundLoop
) -> None:
    """A workload granted another role gets PERMISSION_DENIED (ROLE_NOT_GRANTED); the pool
    keeps its role, still unclaimed, and hands it to a granted workload next."""
    _, other_bearer = setup.workload("etl")
    granted_id, bearer = setup.workload("default")
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with _agent_side(setup) as channel:
            pool = _pool(channel, PoolSpec(setup.connection.id, "default", 1))
            await pool.fill_once()
            try:
                await pool.take(setup.connection.id, "default", None, other_bearer, "sneaky")
            except SevvoError as exc:
                seen["refused"] = exc
            seen["sizes"] = pool.sizes()
            seen["pooled"] = await asyncio.to_thread(setup.pooled)
            seen["next"] = await pool.take(setup.connection.id, "default", None, bearer, "ok")
            await pool.close()

    background_loop.run(scenario(), timeout=60)
    refused = seen["refused"]
    assert (refused.code, refused.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_GRANTED")
    assert seen["sizes"] == {(setup.connection.id, "default"): 1}
    assert len(seen["pooled"]) == 1
    assert seen["next"] is not None
    assert seen["next"].username in seen["pooled"]
    assert {lease.id: lease for lease in setup.leases()}[seen["next"].lease_id].workload_id == (
        granted_id
    )


def test_a_borrow_longer_than_the_role_has_left_renews_it_within_max_ttl(
    setup: Setup, background_loop: BackgroundLoop
) -> None:
    """A pooled role (TTL capped at 120 s) borrowed for 600 s is renewed in the database and
    in its lease; a borrow past the max TTL (900 s) is not served from the pool."""
    _, bearer = setup.workload("default")
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with _agent_side(setup) as channel:
            pool = _pool(
                channel, PoolSpec(setup.connection.id, "default", 1), ttl=timedelta(seconds=120)
            )
            await pool.fill_once()
            seen["too_long"] = await pool.take(
                setup.connection.id, "default", timedelta(seconds=1000), bearer, "long"
            )
            # A workload whose maximum is below the role's (900 s) cannot hold a pooled
            # lease, which may be renewed up to the role's: a fresh mint serves it instead.
            seen["short_workload"] = await pool.take(
                setup.connection.id,
                "default",
                timedelta(seconds=60),
                bearer,
                "short",
                max_ttl=timedelta(seconds=600),
            )
            seen["borrowed"] = await pool.take(
                setup.connection.id, "default", timedelta(seconds=600), bearer, "long"
            )
            await pool.close()

    started = datetime.now(UTC)
    background_loop.run(scenario(), timeout=60)
    assert seen["too_long"] is None
    assert seen["short_workload"] is None
    borrowed: IssuedCredential = seen["borrowed"]
    assert borrowed is not None
    expires = borrowed.expire_time
    assert {lease.id: lease for lease in setup.leases()}[borrowed.lease_id].expire_time.ToDatetime(
        UTC
    ) == expires
    assert expires - started >= timedelta(seconds=590)
    in_db = setup.source.valid_until(borrowed.username)
    assert abs((in_db - expires).total_seconds()) < 1


def test_stale_pooled_roles_are_retired_and_revoked_not_handed_out(
    setup: Setup, background_loop: BackgroundLoop
) -> None:
    """Roles with less than ``retire_below`` of their life left are skipped by borrowers and
    revoked (role gone, lease revoked) by the next refill, which mints replacements."""
    _, bearer = setup.workload("default")
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with _agent_side(setup) as channel:
            # Stale once 1 % of a 300 s TTL (3 s) has passed.
            pool = _pool(channel, PoolSpec(setup.connection.id, "default", 2), retire_below=0.99)
            await pool.fill_once()
            seen["first"] = await asyncio.to_thread(setup.source.logins)
            await asyncio.sleep(3.5)
            seen["taken"] = await pool.take(setup.connection.id, "default", None, bearer, "late")
            seen["minted"] = await pool.fill_once()
            seen["second"] = await asyncio.to_thread(setup.source.logins)
            await pool.close()

    background_loop.run(scenario(), timeout=60)
    assert seen["taken"] is None
    assert seen["minted"] == 2
    assert len(seen["first"]) == 2 and len(seen["second"]) == 2
    assert not seen["first"] & seen["second"]
    states = {lease.role_name: lease.state for lease in setup.leases()}
    assert all(states[name] == cpb.LEASE_STATE_REVOKED for name in seen["first"])


def test_a_pool_left_by_a_dead_agent_is_reaped_after_expiry(
    setup: Setup, background_loop: BackgroundLoop
) -> None:
    """Pooled leases are ordinary leases: never closed (the agent died), they are dropped by
    the reaper once expired, and recorded revoked."""
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with _agent_side(setup) as channel:
            pool = _pool(
                channel, PoolSpec(setup.connection.id, "default", 2), ttl=timedelta(seconds=2)
            )
            await pool.fill_once()
            seen["pooled"] = await asyncio.to_thread(setup.source.logins)
            # The agent dies: its sessions end, nothing is revoked.
            for each in pool._pools:
                await pool._drop_admin(each)
            await asyncio.sleep(2.5)
            reaper = Reaper(
                cpb_grpc.ConnectionCredentialServiceStub(channel),
                cpb_grpc.LeaseServiceStub(channel),
            )
            seen["reaped"] = await reaper.reap_once()

    background_loop.run(scenario(), timeout=60)
    assert len(seen["pooled"]) == 2
    # The tenant's own agent process reaps too (every 2 s); either way all are gone.
    _wait_for(lambda: setup.source.logins() == set(), "pool roles reaped", 5 * REAPER_SECONDS)
    _wait_for(
        lambda: all(
            lease.state == cpb.LEASE_STATE_REVOKED
            for lease in setup.leases()
            if lease.role_name in seen["pooled"]
        ),
        "pool leases recorded revoked",
        5 * REAPER_SECONDS,
    )


def test_the_agent_process_lends_from_its_pool_and_sigterm_revokes_it(setup: Setup) -> None:
    """``python -m agent`` with SEVVO_WARM_POOL fills the pool at start; a workload's
    GenerateCredential over the agent's Unix socket gets a pooled role that logs in, its
    lease now the workload's; SIGTERM revokes every unclaimed pooled role before exit."""
    workload_id, token = setup.workload_token("default")
    socket_dir = Path(tempfile.mkdtemp(prefix="sevvo-pool-sock-"))  # sun_path is short
    assert setup.tenant.agent is not None
    setup.tenant.agent.stop()  # This test's agent is the one with a pool.
    stack = setup.e2e.stack
    token_file = stack.state_dir / f"pool-{setup.tenant.org_id[:8]}-token"
    token_file.write_text(setup.tenant.deployment_token + "\n")
    token_file.chmod(0o600)
    settings = replace(
        stack.agent_settings(token_file, reaper_seconds=REAPER_SECONDS),
        warm_pool=f"{setup.connection.display_name}=3",
        warm_pool_refill_seconds=0.5,
        credential_socket=socket_dir / "agent.sock",
    )
    agent = AgentProcess(settings, stack.state_dir / f"pool-{setup.tenant.org_id[:8]}.log")
    agent.start()
    try:
        _wait_for(lambda: len(setup.pooled()) == 3, "the agent fills its pool", 30)
        pooled = set(setup.pooled())
        assert setup.source.logins() == pooled
        with grpc.insecure_channel(f"unix:{socket_dir / 'agent.sock'}") as channel:
            credential = credentials_pb2_grpc.CredentialServiceStub(channel).GenerateCredential(
                credentials_pb2.GenerateCredentialRequest(
                    connection=setup.connection.display_name, ttl_seconds=60, purpose="report"
                ),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=30,
            )
        assert credential.username in pooled
        with psycopg.connect(credential.conninfo) as conn:
            (count,) = conn.execute("select count(*) from orders").fetchone() or (0,)
        assert count > 0

        # Decided by the agent's own verifier; the claim is recorded right after.
        def claimed() -> bool:
            lease = {lease.id: lease for lease in setup.leases()}[credential.lease_id]
            return (lease.workload_id, lease.purpose) == (workload_id, "report")

        _wait_for(claimed, "the claim recorded", 10)
        _wait_for(lambda: len(setup.pooled()) == 3, "the agent refills its pool", 30)
    finally:
        agent.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)
    # The workload's lease is the workload's to give back; the pool's are gone.
    assert setup.source.logins() == {credential.username}
    assert {
        lease.state
        for lease in setup.leases()
        if lease.purpose == POOL_PURPOSE and not lease.workload_id
    } == {cpb.LEASE_STATE_REVOKED}
    output = agent.output()
    assert "pooled lease lent" in output  # Decided by the agent's verifier, not ClaimLease.
    assert "pooled lease claimed" not in output
    assert PRIVILEGED_PASSWORD not in output
    assert credential.password not in output
    assert token not in output


def test_pooled_roles_are_kept_within_the_freshness_band_and_lent_without_a_renewal(
    setup: Setup, background_loop: BackgroundLoop
) -> None:
    """A pooled role at most the band short of the asked expiry is lent as it is (its true
    expiry reported, nothing renewed); one that drifted further is renewed by the refill
    pass, in the database and in its lease, before a borrower sees it."""
    _, bearer = setup.workload("default")
    ttl = timedelta(seconds=120)
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with _agent_side(setup) as channel:
            pool = _pool(
                channel,
                PoolSpec(setup.connection.id, "default", 2),
                ttl=ttl,
                fresh_band=timedelta(seconds=3),
            )
            await pool.fill_once()
            minted = {e.name: e.valid_until for p in pool._pools for e in p.entries}
            seen["minted"] = minted
            await asyncio.sleep(1)  # Within the band: lent as minted.
            seen["near"] = await pool.take(setup.connection.id, "default", ttl, bearer, "a")
            seen["near_db"] = await asyncio.to_thread(
                setup.source.valid_until, seen["near"].username
            )
            await asyncio.sleep(1.5)  # Past half the band: the refill pass renews it.
            seen["refill_at"] = datetime.now(UTC)
            await pool.fill_once()
            seen["renewed"] = {e.name: e.valid_until for p in pool._pools for e in p.entries}
            seen["far"] = await pool.take(setup.connection.id, "default", ttl, bearer, "b")
            await pool.close()

    background_loop.run(scenario(), timeout=60)
    near: IssuedCredential = seen["near"]
    assert near.expire_time == seen["minted"][near.username]
    assert abs((seen["near_db"] - near.expire_time).total_seconds()) < 1
    leases = {lease.id: lease for lease in setup.leases()}
    assert leases[near.lease_id].expire_time.ToDatetime(UTC) == near.expire_time
    far: IssuedCredential = seen["far"]
    assert far.username in seen["minted"] and far.username != near.username
    renewed_to = seen["renewed"][far.username]
    assert renewed_to - seen["minted"][far.username] >= timedelta(seconds=2)
    assert renewed_to >= seen["refill_at"] + ttl - timedelta(seconds=1)
    assert far.expire_time == renewed_to
    assert leases[far.lease_id].expire_time.ToDatetime(UTC) == renewed_to
    assert abs((setup.source.valid_until(far.username) - renewed_to).total_seconds()) < 1


def test_a_pooled_borrow_is_decided_locally_and_a_revoked_workload_is_refused_within_the_refresh(
    setup: Setup, background_loop: BackgroundLoop
) -> None:
    """With the agent's verifier the pool lends at once and records the claim right after;
    once auth revokes the workload, the next borrow is refused (WORKLOAD_REVOKED) within the
    verifier's refresh, and the pool keeps its roles unclaimed."""
    workload_id, bearer = setup.workload("default")
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with _agent_side(setup) as channel, _verifier(setup, refresh=0.5) as verifier:
            pool = _pool(channel, PoolSpec(setup.connection.id, "default", 3), verifier=verifier)
            await pool.fill_once()
            seen["lent"] = await pool.take(setup.connection.id, "default", None, bearer, "r")
            await asyncio.gather(*pool._claims)
            await asyncio.to_thread(
                workloads_pb2_grpc.WorkloadServiceStub(
                    setup.e2e._channel(setup.tenant.admin_token)
                ).RevokeWorkload,
                workloads_pb2.RevokeWorkloadRequest(id=workload_id),
            )
            revoked_at = time.monotonic()
            while True:  # Until the agent's verifier refuses the bearer.
                try:
                    verifier.verify(bearer, PrincipalKind.WORKLOAD)
                except Unauthenticated:
                    seen["after"] = time.monotonic() - revoked_at
                    break
                assert time.monotonic() - revoked_at < 5, "never refused"
                await asyncio.sleep(0.05)
            try:
                await pool.take(setup.connection.id, "default", None, bearer, "r")
            except SevvoError as exc:
                seen["refused"] = exc
            seen["sizes"] = pool.sizes()
            seen["pooled"] = await asyncio.to_thread(setup.pooled)
            await pool.close()

    background_loop.run(scenario(), timeout=60)
    lent: IssuedCredential = seen["lent"]
    claimed = {lease.id: lease for lease in setup.leases()}[lent.lease_id]
    assert (claimed.workload_id, claimed.purpose) == (workload_id, "r")
    refused = seen["refused"]
    assert (refused.code, refused.reason) == (grpc.StatusCode.UNAUTHENTICATED, "WORKLOAD_REVOKED")
    assert seen["after"] < 0.5 + 1.5  # The refresh interval, and time for auth to answer.
    # Refused before any claim: both remaining roles still pooled and unclaimed.
    assert seen["sizes"] == {(setup.connection.id, "default"): 2}
    assert len(seen["pooled"]) == 2 and lent.username not in seen["pooled"]


def test_a_background_claim_connections_refuses_revokes_the_lent_role_at_once(
    setup: Setup, background_loop: BackgroundLoop
) -> None:
    """A revocation that races the borrow: the agent's verifier has not seen it yet and
    lends the role, connections refuses the claim, and the agent revokes that role at once
    (gone from the database, lease recorded revoked, never the workload's)."""
    workload_id, bearer = setup.workload("default")
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        # Refreshed once at start and not again within the test: it cannot learn of the
        # revocation, as if the borrow came within its refresh interval.
        async with (
            _agent_side(setup) as channel,
            _verifier(setup, refresh=3600, staleness=3600) as verifier,
        ):
            pool = _pool(channel, PoolSpec(setup.connection.id, "default", 2), verifier=verifier)
            await pool.fill_once()
            await asyncio.to_thread(
                workloads_pb2_grpc.WorkloadServiceStub(
                    setup.e2e._channel(setup.tenant.admin_token)
                ).RevokeWorkload,
                workloads_pb2.RevokeWorkloadRequest(id=workload_id),
            )
            await asyncio.sleep(3)  # Connections' verifier learns of it (2 s refresh).
            seen["lent"] = await pool.take(setup.connection.id, "default", None, bearer, "r")
            await asyncio.gather(*pool._claims)
            seen["logins"] = await asyncio.to_thread(setup.source.logins)
            await pool.close()

    background_loop.run(scenario(), timeout=60)
    lent: IssuedCredential = seen["lent"]
    assert lent is not None
    assert lent.username not in seen["logins"]
    lease = {lease.id: lease for lease in setup.leases()}[lent.lease_id]
    assert lease.state == cpb.LEASE_STATE_REVOKED
    assert not lease.workload_id
