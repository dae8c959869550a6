"""End to end: the console's preview, leases and root rotation pages in Debian's Chromium,
against the real stack and a real agent."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Dialog, Page, expect

from console.server import ConsoleServer
from devstack.postgres import EmbeddedPostgres
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.connections.v1 import connections_pb2_grpc as cpb_grpc
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb
from tests.browser import screenshot_path
from tests.console_shop import Shop, active_lease, lease_of, open_shop, role_exists
from tests.plugins.auth_stack import BackgroundLoop
from tests.plugins.console import signed_in_page
from tests.plugins.dev_stack import EndToEnd

EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def shop(e2e: EndToEnd, tls_source_pg: EmbeddedPostgres) -> Iterator[Shop]:
    with open_shop(e2e, tls_source_pg) as opened:
        yield opened


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


def test_a_lease_is_listed_by_role_and_revoke_drops_it(
    page: Page,
    console: ConsoleServer,
    shop: Shop,
    e2e: EndToEnd,
    tls_source_pg: EmbeddedPostgres,
    background_loop: BackgroundLoop,
) -> None:
    lease_id = active_lease(e2e, shop, background_loop)
    role_name = lease_of(e2e, shop, lease_id).role_name
    assert role_exists(tls_source_pg, role_name)
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
    assert lease_of(e2e, shop, lease_id).state != cpb.LEASE_STATE_ACTIVE
    # The agent's reaper drops the role, and the lease ends revoked.
    deadline = time.monotonic() + 20
    while role_exists(tls_source_pg, role_name) or (
        lease_of(e2e, shop, lease_id).state != cpb.LEASE_STATE_REVOKED
    ):
        assert time.monotonic() < deadline, lease_of(e2e, shop, lease_id)
        time.sleep(0.2)
    page.goto(f"{console.url}/connections/{shop.dynamic_id}/leases")
    expect(page.locator(f'tr[data-lease-id="{lease_id}"]')).to_have_count(0)
    page.get_by_role("link", name="Show revoked leases").click()
    revoked = page.locator(f'tr[data-lease-id="{lease_id}"]')
    expect(revoked.get_by_test_id("lease-state")).to_have_text("revoked")
    expect(revoked.get_by_role("button", name="Revoke")).to_have_count(0)


def test_a_role_is_dry_run_added_and_removed_from_the_roles_page(
    page: Page, console: ConsoleServer, shop: Shop, e2e: EndToEnd
) -> None:
    # Before the rotation test: the dry run logs in with the privileged password it replaces.
    roles = cpb_grpc.ConnectionRoleServiceStub(e2e._channel(shop.tenant.admin_token))

    def names() -> list[str]:
        listed = roles.ListConnectionRoles(
            cpb.ListConnectionRolesRequest(connection_id=shop.dynamic_id)
        )
        return [role.name for role in listed.roles]

    page.goto(f"{console.url}/connections/{shop.dynamic_id}/roles")
    expect(page.get_by_test_id("role-default")).to_be_visible()
    page.get_by_label("Role name").fill("Not A Name!")
    page.get_by_role("button", name="Dry-run and add role").click()
    expect(page.get_by_test_id("name-error")).to_be_visible()
    expect(page.get_by_label("Role name")).to_have_attribute("aria-invalid", "true")
    assert names() == ["default"]

    page.get_by_label("Role name").fill("console_reporting")
    page.get_by_label("Default lease TTL, seconds").fill("600")
    page.get_by_label("Group role").fill(shop.group)
    page.get_by_role("button", name="Dry-run and add role").click()
    expect(page.get_by_role("status")).to_have_text("Role added: the agent dry-ran its statements.")
    row = page.get_by_test_id("role-console_reporting")
    expect(row).to_contain_text("600 s")
    assert names() == ["default", "console_reporting"]
    page.screenshot(path=screenshot_path("roles"), full_page=True)

    row.get_by_text("Remove…").click()
    row.get_by_role("button", name="Remove role console_reporting").click()
    expect(page.get_by_role("status")).to_have_text("Role removed.")
    expect(page.get_by_test_id("role-console_reporting")).to_have_count(0)
    assert names() == ["default"]


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
