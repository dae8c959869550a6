"""A shop for the console's browser tests: a tenant, a seeded source database and a fixed and
a dynamic connection to it, plus leases as the agent records them."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from agent.dynamic_credentials import default_creation, mint
from agent.postgres_probe import connect
from devstack.postgres import EmbeddedPostgres
from devstack.source_db import (
    SourceDatabase,
    create_dynamic_roles,
    create_source_database,
    drop_roles,
    drop_source_database,
)
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.connections.v1 import connections_pb2_grpc as cpb_grpc
from sevvo.runtime.servicing import timestamp
from tests.plugins.auth_stack import BackgroundLoop
from tests.plugins.dev_stack import EndToEnd, Tenant

PRIVILEGED_PASSWORD = "console-privileged-" + secrets.token_hex(8)


@dataclass
class Shop:
    """A tenant with its agent, a seeded source database, and a fixed and a dynamic
    connection to it."""

    tenant: Tenant
    source: SourceDatabase
    fixed_id: str
    dynamic_id: str
    group: str
    privileged: str


@contextmanager
def open_shop(e2e: EndToEnd, tls_source_pg: EmbeddedPostgres) -> Iterator[Shop]:
    """A new tenant (agent running), a seeded source database on ``tls_source_pg`` with a
    NOLOGIN group and a CREATEROLE role, a fixed and a dynamic connection to it; all dropped
    afterwards."""
    tenant = e2e.new_tenant()
    suffix = uuid.uuid4().hex[:12]
    database, reader = f"source_{suffix}", f"reader_{suffix}"
    roles: tuple[str, str] | None = None
    try:
        source = create_source_database(
            tls_source_pg.url,
            database=database,
            reader=reader,
            reader_password=secrets.token_urlsafe(24),
        )
        roles = create_dynamic_roles(
            tls_source_pg.admin_url(database), database=database, password=PRIVILEGED_PASSWORD
        )
        group, privileged = roles
        stub = e2e.connections(tenant.admin_token)
        fixed = stub.CreateConnection(
            cpb.CreateConnectionRequest(display_name="shop", fields=e2e.fields(source))
        )
        dynamic = stub.CreateConnection(
            cpb.CreateConnectionRequest(
                display_name="shop-dynamic",
                dynamic=e2e.dynamic(
                    source,
                    privileged=privileged,
                    privileged_password=PRIVILEGED_PASSWORD,
                    group=group,
                ),
            )
        )
        yield Shop(tenant, source, fixed.id, dynamic.id, group, privileged)
    finally:
        if roles is not None:
            # Minted roles are members of the group: the reaper dropped them, else drop them.
            with psycopg.connect(tls_source_pg.url, autocommit=True) as conn:
                for (name,) in conn.execute(
                    "select r.rolname from pg_roles r join pg_auth_members m on m.member = r.oid"
                    " join pg_roles g on g.oid = m.roleid where g.rolname = %s",
                    (roles[0],),
                ).fetchall():
                    if name != roles[1]:
                        conn.execute(f'drop role if exists "{name}"')
        drop_source_database(tls_source_pg.url, database=database, reader=reader)
        if roles is not None:
            drop_roles(tls_source_pg.url, roles[1], roles[0])


def active_lease(e2e: EndToEnd, shop: Shop, background_loop: BackgroundLoop) -> str:
    """A lease the agent would have recorded for a role it minted and handed out: the role
    exists in the database and its lease is active. Returns the lease's id."""
    as_agent = cpb_grpc.LeaseServiceStub(
        e2e._channel(e2e.stack.auth.domain.exchange(shop.tenant.deployment_token).token)
    )
    lease_id = str(uuid.uuid4())
    privileged = cpb.PostgresCredentials(
        host="localhost",
        port=shop.source.port,
        database=shop.source.database,
        username=shop.privileged,
        password=PRIVILEGED_PASSWORD,
        ssl_mode=cpb.SSL_MODE_REQUIRE,
    )
    expiry: list[datetime] = []

    async def intent(name: str, valid_until: datetime) -> None:
        expiry.append(valid_until)
        await asyncio.to_thread(
            as_agent.CreateLease,
            cpb.CreateLeaseRequest(
                lease_id=lease_id,
                connection_id=shop.dynamic_id,
                role_name=name,
                purpose="reporting",
                expire_time=timestamp(valid_until),
                max_expire_time=timestamp(valid_until),
            ),
        )

    async def minted() -> None:
        admin = await connect(privileged, connect_timeout=10)
        try:
            await mint(
                admin,
                creation=default_creation(shop.group),
                ttl=timedelta(minutes=5),
                purpose="reporting",
                before_commit=intent,
            )
        finally:
            await admin.close()

    background_loop.run(minted())
    as_agent.UpdateLease(
        cpb.UpdateLeaseRequest(
            lease_id=lease_id, state=cpb.LEASE_STATE_ACTIVE, expire_time=timestamp(expiry[0])
        )
    )
    return lease_id


def lease_of(e2e: EndToEnd, shop: Shop, lease_id: str) -> cpb.Lease:
    listed = (
        cpb_grpc.LeaseServiceStub(e2e._channel(shop.tenant.admin_token))
        .ListLeases(cpb.ListLeasesRequest(connection_id=shop.dynamic_id, page_size=500))
        .leases
    )
    found: cpb.Lease = next(lease for lease in listed if lease.id == lease_id)
    return found


def role_exists(server: EmbeddedPostgres, name: str) -> bool:
    with psycopg.connect(server.url) as conn:
        found = conn.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone()
    return found is not None
