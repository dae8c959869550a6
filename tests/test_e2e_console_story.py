"""End to end: the console's whole story in Debian's Chromium, on the real stack and agent,
and what it leaves behind.

Sign in, add a connection with a wrong password (the hint shown, nothing saved), fix it (saved,
connected), add a dynamic one from the same form, preview a query (the table, and a ``delete``
rejected at its position), revoke a lease of a dynamic connection, revoke the agent's
deployment (the agent exits) and read the audit trail. Throughout, no password, session or
deployment token, or row value appears in a page, the browser's storage, a cookie other than
the session, a log line of the services and the console (captured) or of the agent, or the
browser's console.
"""

from __future__ import annotations

import re
import secrets
import time

import psycopg
from playwright.sync_api import Browser, Page, expect
from psycopg import sql
from structlog.testing import capture_logs

from console.security import SESSION_COOKIE
from console.server import ConsoleServer
from devstack.postgres import EmbeddedPostgres
from sevvo.connections.v1 import connections_pb2 as cpb
from tests.browser import new_context, screenshot_path
from tests.console_shop import PRIVILEGED_PASSWORD, active_lease, lease_of, open_shop
from tests.plugins.auth_stack import PASSWORD, BackgroundLoop
from tests.plugins.console import sign_in
from tests.plugins.dev_stack import EndToEnd

WRONG = "wrong-" + secrets.token_hex(8)
CANARY = "canary-row-" + secrets.token_hex(8)
AGENT_EXIT_SECONDS = 40.0


def _submit(page: Page, button: str) -> int:
    """Clicks a form's button; the status its POST answered with."""
    with page.expect_response(lambda r: r.request.method == "POST", timeout=90_000) as answer:
        page.get_by_role("button", name=button).click()
    page.wait_for_load_state()
    return answer.value.status


def test_the_whole_story_in_the_browser_leaves_no_secret_behind(
    e2e: EndToEnd,
    console: ConsoleServer,
    browser: Browser,
    tls_source_pg: EmbeddedPostgres,
    background_loop: BackgroundLoop,
) -> None:
    with open_shop(e2e, tls_source_pg) as shop, capture_logs() as events:
        tenant, source = shop.tenant, shop.source
        assert tenant.agent is not None
        with psycopg.connect(tls_source_pg.admin_url(source.database), autocommit=True) as conn:
            conn.execute(
                sql.SQL("update customers set name = {} where id = 1").format(sql.Literal(CANARY))
            )
        context = new_context(browser)
        page = context.new_page()
        said: list[str] = []
        page.on("console", lambda message: said.append(message.text))
        pages: list[str] = []

        def seen() -> None:
            pages.append(page.content())
            # Every control a person fills in has a label a screen reader announces.
            unlabelled = page.evaluate(
                "[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]"
                ".filter(e => !e.labels.length && !e.getAttribute('aria-label')).map(e => e.name)"
            )
            assert unlabelled == [], f"{page.url}: controls without a label: {unlabelled}"

        # Sign in.
        sign_in(page, console, tenant.admin_email)
        expect(page.get_by_test_id("viewer")).to_contain_text(tenant.admin_email)
        seen()

        # A connection with a wrong password: the hint by the password field, nothing saved.
        page.get_by_role("link", name="New connection").click()
        page.get_by_label("Name", exact=True).fill("shop-db")
        page.get_by_label("Host").fill("localhost")
        page.get_by_label("Port").fill(str(source.port))
        page.get_by_label("Database").fill(source.database)
        page.get_by_label("Username").fill(source.reader)
        page.get_by_label("Password").fill(WRONG)
        page.get_by_label("SSL mode").select_option("require")
        assert _submit(page, "Test and save") == 400
        expect(page.get_by_test_id("password-error")).to_contain_text(
            "password_authentication_failed"
        )
        seen()
        listed = e2e.connections(tenant.admin_token).ListConnections(cpb.ListConnectionsRequest())
        assert "shop-db" not in [c.display_name for c in listed.connections]

        # Fixed: saved and connected.
        page.get_by_label("Password").fill(source.reader_password)
        assert _submit(page, "Test and save") == 303
        expect(page.get_by_test_id("status")).to_have_text("connected")
        saved = re.search(r"/connections/([0-9a-f-]{36})", page.url)
        assert saved is not None
        seen()
        page.screenshot(path=screenshot_path("story-connection"), full_page=True)

        # A dynamic connection from the same form: the privileged role and its group.
        page.goto(f"{console.url}/connections/new")
        page.get_by_label("Name", exact=True).fill("shop-db-dynamic")
        page.get_by_label("Host").fill("localhost")
        page.get_by_label("Port").fill(str(source.port))
        page.get_by_label("Database").fill(source.database)
        page.get_by_label("Username").fill(shop.privileged)
        page.get_by_label("Password").fill(PRIVILEGED_PASSWORD)
        page.get_by_label("SSL mode").select_option("require")
        page.get_by_label("Dynamic: the agent mints").check()
        page.get_by_label("Group role").fill(shop.group)
        assert _submit(page, "Test and save") == 303
        expect(page.get_by_test_id("status")).to_have_text("connected")
        expect(page.get_by_test_id("facts")).to_contain_text("dynamic")
        seen()
        page.goto(f"{console.url}/connections/{saved.group(1)}")

        # A preview: the table with the canary row; a delete rejected at its position.
        page.get_by_role("link", name="Preview query").click()
        page.get_by_label("SQL").fill(
            "select id, name, email, country, created_at from customers order by id limit 8"
        )
        page.get_by_role("button", name="Run preview").click()
        table = page.get_by_test_id("preview-table")
        expect(table.locator("tbody tr").first).to_contain_text(CANARY)
        seen()
        page.screenshot(path=screenshot_path("story-preview"), full_page=True)
        # The README's screenshot (docs/console.png) is this one, from this run.
        page.screenshot(path=screenshot_path("readme-console"))
        # The preview's run, on a page of its own: how it ended, its row count, never rows.
        page.get_by_test_id("preview-summary").get_by_role("link").click()
        expect(page.get_by_test_id("run-state")).to_contain_text("succeeded")
        expect(page.locator("dl.facts dt:has-text('Rows returned') + dd")).to_have_text("8")
        assert CANARY not in page.content()
        seen()
        page.goto(f"{console.url}/connections/{saved.group(1)}/preview")
        page.get_by_label("SQL").fill("delete from customers")
        page.get_by_role("button", name="Run preview").click()
        expect(page.get_by_test_id("preview-position")).to_have_text("At line 1, column 1:")
        expect(page.get_by_test_id("preview-marked").locator("mark")).to_have_text("d")
        seen()

        # A dynamic connection's lease, revoked from its leases page.
        lease_id = active_lease(e2e, shop, background_loop)
        page.goto(f"{console.url}/connections/{shop.dynamic_id}/leases")
        row = page.locator(f'tr[data-lease-id="{lease_id}"]')
        expect(row.get_by_test_id("lease-state")).to_have_text("active")
        seen()
        row.get_by_role("button", name="Revoke").click()
        expect(page.get_by_role("status")).to_contain_text("Revoke requested")
        assert lease_of(e2e, shop, lease_id).state != cpb.LEASE_STATE_ACTIVE
        seen()

        # The agent's deployment revoked: the agent is seen going away.
        page.get_by_role("link", name="Deployments").click()
        page.get_by_test_id(f"deployment-{tenant.deployment_id}").get_by_role(
            "link", name="Revoke"
        ).click()
        page.get_by_role("button", name="Revoke deployment").click()
        revoked_at = time.monotonic()
        expect(page.get_by_role("status")).to_contain_text("The deployment is revoked")
        seen()
        code = tenant.agent.wait(AGENT_EXIT_SECONDS)
        assert code == 3, tenant.agent.output()
        assert time.monotonic() - revoked_at < AGENT_EXIT_SECONDS

        # The audit trail tells it all, newest first.
        page.get_by_role("link", name="Audit").click()
        # A link's click does not wait for the page it opens, and reading texts does not wait
        # either: wait for the audit page itself before reading its rows.
        expect(page).to_have_url(f"{console.url}/audit")
        page.wait_for_load_state()
        expect(page.get_by_test_id("audit-action").first).to_be_visible()
        actions = page.get_by_test_id("audit-action").all_inner_texts()
        for action in ("deployment.revoke", "connection.create", "connection.preview"):
            assert action in actions, actions
        assert any(action.startswith("lease.revoke") for action in actions), actions
        assert actions.index("deployment.revoke") < actions.index("connection.create")
        seen()
        page.screenshot(path=screenshot_path("story-audit"), full_page=True)

        # On a narrow window (a phone's 390 px) the pages fit: only tables scroll, in their box.
        page.set_viewport_size({"width": 390, "height": 844})
        for path in ("/connections", f"/connections/{saved.group(1)}", "/deployments", "/audit"):
            page.goto(f"{console.url}{path}")
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} is {overflow} px wider than a 390 px window"
        page.screenshot(path=screenshot_path("story-narrow"), full_page=True)

        # What is left behind: one cookie (the session), empty storage.
        cookies = context.cookies()
        assert [c["name"] for c in cookies] == [SESSION_COOKIE]
        session = cookies[0]["value"]
        storage = page.evaluate(
            "JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])"
        )
        assert storage == "[[],[]]"
        context.close()

    secrets_and_rows = {
        "wrong password": WRONG,
        "reader password": source.reader_password,
        "privileged password": PRIVILEGED_PASSWORD,
        "user password": PASSWORD,
        "session token": session,
        "deployment token": tenant.deployment_token,
    }
    logged = "\n".join(repr(event) for event in events)
    agent_log = tenant.agent.log_file.read_text(errors="replace")
    assert events, "no log line was captured: the check below would prove nothing"
    for name, value in secrets_and_rows.items():
        for where, text in (
            ("a page", "\n".join(pages)),
            ("a log line", logged),
            ("the agent's log", agent_log),
            ("the browser's console", "\n".join(said)),
        ):
            assert value not in text, f"the {name} is in {where}"
    # Row values may be on the preview page (that is its job), and nowhere else.
    for where, text in (
        ("a log line", logged),
        ("the agent's log", agent_log),
        ("the browser's console", "\n".join(said)),
    ):
        assert CANARY not in text, f"a row value is in {where}"
    assert any(CANARY in html for html in pages)
