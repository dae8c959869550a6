"""End to end: the console's preview, leases and root rotation pages in Debian's Chromium,
against the real stack and a real agent."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
import pytest
from playwright.sync_api import Browser, Dialog, Page, expect

from agent.dynamic_credentials import default_creation, mint
from agent.postgres_probe import connect
from console.server import ConsoleServer
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
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from sevvo.runtime.servicing import timestamp
from tests.browser import screenshot_path
from tests.plugins.auth_stack import BackgroundLoop
from tests.plugins.console import signed_in_page
from tests.plugins.dev_stack import EndToEnd, Tenant

PRIVILEGED_PASSWORD = "console-privileged-" + secrets.token_hex(8)
EVIL = "<script>alert(1)</script>"


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


@pytest.fixture(scope="module")
def shop(e2e: EndToEnd, tls_source_pg: EmbeddedPostgres) -> Iterator[Shop]:
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


@pytest.fixture(scope="module")
def page(browser: Browser, console: ConsoleServer, shop: Shop) -> Iterator[Page]:
    context, signed_in = signed_in_page(browser, console, shop.tenant.admin_email)
    yield signed_in
    context.close()


def _run_preview(page: Page, console: ConsoleServer, connection_id: str, text: str) -> None:
    page.goto(f"{console.url}/connections/{connection_id}/preview")
    page.get_by_label("SQL").fill(text)
    page.get_by_role("button", name="Run preview").click()


def test_preview_shows_typed_columns_nulls_cut_cells_and_markup_as_text(
    page: Page, console: ConsoleServer, shop: Shop
) -> None:
    dialogs: list[str] = []

    def opened(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", opened)
    _run_preview(
        page,
        console,
        shop.fixed_id,
        f"select o.id, o.total, '{EVIL}' as evil, null::int as nothing,"
        " repeat('x', 2000) as long\nfrom orders o order by o.id",
    )
    table = page.get_by_test_id("preview-table")
    expect(table).to_be_visible()
    headers = [" ".join(h.split()) for h in table.locator("thead th").all_inner_texts()]
    assert headers == ["id bigint", "total numeric", "evil text", "nothing integer", "long text"]
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(100)
    first = rows.first.locator("td")
    assert first.nth(0).inner_text() == "1"
    # The markup is a cell's text: shown as typed, never parsed into an element or run.
    assert first.nth(2).inner_text() == EVIL
    assert page.locator("main script").count() == 0
    assert page.evaluate("document.scripts.length") == 1  # console.js only
    assert dialogs == []
    expect(first.nth(3)).to_have_class("null")
    expect(first.nth(3)).to_have_text("NULL")
    expect(first.nth(4)).to_have_class("cut")
    assert len(first.nth(4).inner_text()) == 1024
    expect(page.get_by_test_id("preview-truncated")).to_contain_text("more rows than the 100")
    expect(page.get_by_test_id("preview-receipt")).to_contain_text("clean")
    page.screenshot(path=screenshot_path("preview"))
    page.remove_listener("dialog", opened)


def test_a_rejected_statement_is_kept_and_marked_where_the_agent_points(
    page: Page, console: ConsoleServer, shop: Shop
) -> None:
    statement = "select 1;\n  delete from orders"
    _run_preview(page, console, shop.fixed_id, statement)
    failure = page.get_by_test_id("preview-failure")
    expect(failure).to_contain_text("Query rejected")
    expect(failure).to_contain_text("query_rejected")
    expect(page.get_by_test_id("preview-position")).to_have_text("At line 2, column 3:")
    marked = page.get_by_test_id("preview-marked")
    expect(marked.locator("mark")).to_have_text("d")
    expect(marked).to_have_text(statement)
    editor = page.get_by_label("SQL")
    expect(editor).to_have_value(statement)
    expect(editor).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_test_id("preview-table")).to_have_count(0)
    page.screenshot(path=screenshot_path("preview-rejected"))


def _active_lease(e2e: EndToEnd, shop: Shop, background_loop: BackgroundLoop) -> str:
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


def _lease(e2e: EndToEnd, shop: Shop, lease_id: str) -> cpb.Lease:
    listed = (
        cpb_grpc.LeaseServiceStub(e2e._channel(shop.tenant.admin_token))
        .ListLeases(cpb.ListLeasesRequest(connection_id=shop.dynamic_id, page_size=500))
        .leases
    )
    found: cpb.Lease = next(lease for lease in listed if lease.id == lease_id)
    return found


def _role_exists(server: EmbeddedPostgres, name: str) -> bool:
    with psycopg.connect(server.url) as conn:
        found = conn.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone()
    return found is not None


def test_a_lease_is_listed_by_role_and_revoke_drops_it(
    page: Page,
    console: ConsoleServer,
    shop: Shop,
    e2e: EndToEnd,
    tls_source_pg: EmbeddedPostgres,
    background_loop: BackgroundLoop,
) -> None:
    lease_id = _active_lease(e2e, shop, background_loop)
    role_name = _lease(e2e, shop, lease_id).role_name
    assert _role_exists(tls_source_pg, role_name)
    page.goto(f"{console.url}/connections/{shop.dynamic_id}/leases")
    row = page.locator(f'tr[data-lease-id="{lease_id}"]')
    expect(row).to_contain_text(role_name)
    expect(row.get_by_test_id("lease-state")).to_have_text("active")
    expect(row).to_contain_text("reporting")
    group = page.get_by_test_id("lease-role").filter(has=row)
    expect(group.get_by_role("heading")).to_have_text("Role default")
    page.screenshot(path=screenshot_path("leases"))

    row.get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("status")).to_contain_text("Revoke requested")
    assert _lease(e2e, shop, lease_id).state != cpb.LEASE_STATE_ACTIVE
    # The agent's reaper drops the role, and the lease ends revoked.
    deadline = time.monotonic() + 20
    while _role_exists(tls_source_pg, role_name) or (
        _lease(e2e, shop, lease_id).state != cpb.LEASE_STATE_REVOKED
    ):
        assert time.monotonic() < deadline, _lease(e2e, shop, lease_id)
        time.sleep(0.2)
    page.goto(f"{console.url}/connections/{shop.dynamic_id}/leases")
    expect(page.locator(f'tr[data-lease-id="{lease_id}"]')).to_have_count(0)
    page.get_by_role("link", name="Show revoked leases").click()
    revoked = page.locator(f'tr[data-lease-id="{lease_id}"]')
    expect(revoked.get_by_test_id("lease-state")).to_have_text("revoked")
    expect(revoked.get_by_role("button", name="Revoke")).to_have_count(0)


def test_root_rotation_runs_and_its_schedule_is_set_and_removed(
    page: Page, console: ConsoleServer, shop: Shop, e2e: EndToEnd
) -> None:
    # After the lease test: this rotation replaces the privileged password it mints with.
    page.goto(f"{console.url}/connections/{shop.dynamic_id}/rotation")
    expect(page.get_by_test_id("rotation-schedule")).to_have_text("Not rotated on a schedule.")
    page.get_by_label("Rotate every (hours)").fill("24")
    page.get_by_role("button", name="Save schedule").click()
    expect(page.get_by_role("status")).to_have_text("Rotation schedule saved.")
    expect(page.get_by_test_id("rotation-schedule")).to_contain_text("Every 24 hours")
    orchestrator = e2e.orchestrator(shop.tenant.admin_token)
    schedule = orchestrator.GetRootRotationSchedule(
        opb.GetRootRotationScheduleRequest(connection_id=shop.dynamic_id)
    )
    assert schedule.interval.seconds == 24 * 3600
    page.get_by_role("button", name="Remove schedule").click()
    expect(page.get_by_role("status")).to_have_text("Rotation schedule removed.")
    schedule = orchestrator.GetRootRotationSchedule(
        opb.GetRootRotationScheduleRequest(connection_id=shop.dynamic_id)
    )
    assert schedule.interval.seconds == 0

    page.get_by_role("button", name="Rotate now").click()
    expect(page.get_by_role("status")).to_contain_text("Rotation started")
    run_id = re.search(r"run=([0-9a-f-]{36})", page.url)
    assert run_id is not None, page.url
    deadline = time.monotonic() + 60
    state = page.get_by_test_id("rotation-state")
    while state.inner_text() == "running":
        assert time.monotonic() < deadline, "the rotation is still running"
        time.sleep(0.5)
        page.get_by_role("link", name="Refresh").click()
    expect(state).to_have_text("succeeded")
    expect(page.get_by_test_id("rotation-run")).to_contain_text("rotated")
    run = orchestrator.GetRun(opb.GetRunRequest(id=run_id.group(1)))
    assert (run.kind, run.outcome_category) == (opb.RUN_KIND_ROOT_ROTATION, "rotated")
    page.screenshot(path=screenshot_path("rotation"))


def test_the_pages_of_another_orgs_connection_are_not_found(
    browser: Browser, console: ConsoleServer, shop: Shop, e2e: EndToEnd
) -> None:
    other = e2e.new_tenant(start_agent=False)
    context, page = signed_in_page(browser, console, other.admin_email)
    try:
        for suffix in ("preview", "leases", "rotation"):
            answer = page.goto(f"{console.url}/connections/{shop.dynamic_id}/{suffix}")
            assert answer is not None and answer.status == 404, suffix
    finally:
        context.close()
