"""End to end: the console's connection form and detail page in Chromium, on the real stack.

The agent really tests each set of details against a TLS PostgreSQL server: a wrong password
comes back as the form with the category and the guide's hint beside the password field, and
nothing is saved; fixed, the connection is saved and connected; an edit with a wrong password
keeps the old credentials; deleting asks first.
"""

from __future__ import annotations

import re

import psycopg
from playwright.sync_api import Browser, Page, expect
from psycopg import sql

from console.server import ConsoleServer
from devstack.postgres import EmbeddedPostgres
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.runtime.outcomes import Kind, hint_for
from tests.browser import screenshot_path
from tests.plugins.console import signed_in_page
from tests.plugins.dev_stack import EndToEnd
from tests.plugins.source_db import SourceTargetFactory

WRONG = "wrong-pw-7f3c91"
CATEGORY = "password_authentication_failed"


def _submit(page: Page, button: str) -> int:
    """Clicks the form's submit button; the HTTP status its POST answered with."""
    with page.expect_response(lambda r: r.request.method == "POST", timeout=90_000) as answer:
        page.get_by_role("button", name=button).click()
    page.wait_for_load_state()
    return answer.value.status


def _set_password(server: EmbeddedPostgres, role: str, password: str) -> None:
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("alter role {} password {}").format(sql.Identifier(role), sql.Literal(password))
        )


def _saved(e2e: EndToEnd, token: str) -> list[cpb.Connection]:
    stub = e2e.connections(token)
    return list(stub.ListConnections(cpb.ListConnectionsRequest()).connections)


def test_create_fix_edit_and_delete_a_connection(
    e2e: EndToEnd,
    console: ConsoleServer,
    browser: Browser,
    tls_source_pg: EmbeddedPostgres,
    source_target: SourceTargetFactory,
) -> None:
    tenant = e2e.new_tenant()
    source = source_target(tls_source_pg)
    context, page = signed_in_page(browser, console, tenant.admin_email)
    hint = hint_for(CATEGORY, Kind.CREDENTIAL_TEST)
    assert hint

    # The form from the list; a CA bundle that is no certificate is the service's field
    # violation, shown next to that field.
    page.goto(f"{console.url}/connections")
    page.get_by_role("link", name="New connection").click()
    expect(page.get_by_label("Port")).to_have_value("5432")
    page.get_by_label("Name", exact=True).fill("warehouse")
    page.get_by_label("Host").fill("localhost")
    page.get_by_label("Port").fill(str(source.port))
    page.get_by_label("Database").fill(source.database)
    page.get_by_label("Username").fill(source.reader)
    page.get_by_label("Password").fill(WRONG)
    page.get_by_label("SSL mode").select_option("verify-full")
    page.get_by_label("CA bundle").fill("not a certificate")
    assert _submit(page, "Test and save") == 400
    expect(page.get_by_test_id("ssl_root_cert-error")).to_be_visible()
    expect(page.get_by_label("CA bundle")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Password")).not_to_have_attribute("aria-invalid", "true")

    # A wrong password: the category and hint beside the password field, nothing saved,
    # every value but the password kept.
    page.get_by_label("SSL mode").select_option("require")
    page.get_by_label("CA bundle").fill("")
    page.get_by_label("Password").fill(WRONG)
    assert _submit(page, "Test and save") == 400
    error = page.get_by_test_id("password-error")
    expect(error).to_contain_text(CATEGORY)
    expect(error).to_contain_text(hint)
    password = page.get_by_label("Password")
    expect(password).to_have_attribute("aria-invalid", "true")
    expect(password).to_have_attribute("aria-describedby", re.compile(r"\bpassword-error\b"))
    expect(password).to_have_value("")
    expect(page.get_by_label("Host")).not_to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Database")).to_have_value(source.database)
    expect(page.get_by_label("Username")).to_have_value(source.reader)
    expect(page.get_by_test_id("form-error")).to_contain_text("Nothing was saved")
    assert WRONG not in page.content()
    assert _saved(e2e, tenant.admin_token) == []
    page.screenshot(path=screenshot_path("connection-form"), full_page=True)

    # Fixed: saved, connected, and the detail page shows no password.
    page.get_by_label("Password").fill(source.reader_password)
    assert _submit(page, "Test and save") == 303
    expect(page).to_have_url(re.compile(r"/connections/[0-9a-f-]{36}\?notice=created$"))
    expect(page.get_by_role("status").first).to_contain_text("Connection saved")
    expect(page.get_by_test_id("status")).to_have_text("connected")
    expect(page.get_by_test_id("facts")).to_contain_text("password set")
    expect(page.get_by_role("link", name="Preview query")).to_be_visible()
    assert source.reader_password not in page.content()
    [saved] = _saved(e2e, tenant.admin_token)
    assert saved.status == cpb.CONNECTION_STATUS_CONNECTED

    # An edit with a wrong password fails its test; the old credentials stay in use.
    page.get_by_role("link", name="Edit").click()
    expect(page.get_by_label("Name", exact=True)).to_have_value("warehouse")
    expect(page.get_by_label("Password")).to_have_value("")
    page.get_by_label("Password").fill(WRONG)
    assert _submit(page, "Test and save changes") == 400
    expect(page.get_by_test_id("password-error")).to_contain_text(CATEGORY)
    expect(page.get_by_test_id("form-error")).to_contain_text("old details stay in use")
    assert WRONG not in page.content()
    page.get_by_role("link", name="Cancel").click()
    expect(page.get_by_test_id("status")).to_have_text("connected")
    # The role's password changed outside sevvo: Test now says so, with the guide's hint.
    _set_password(tls_source_pg, source.reader, WRONG)
    assert _submit(page, "Test now") == 303
    expect(page.get_by_test_id("status")).to_have_text("failing")
    expect(page.get_by_test_id("last-test")).to_contain_text(CATEGORY)
    expect(page.get_by_test_id("last-test")).to_contain_text(hint)
    # Put back, the stored (old) credentials connect again: the failed edit changed nothing.
    _set_password(tls_source_pg, source.reader, source.reader_password)
    assert _submit(page, "Test now") == 303
    expect(page.get_by_test_id("last-test")).to_have_count(0)
    expect(page.get_by_role("status").first).to_have_text("Test finished: connected.")
    runs = page.get_by_test_id("runs")
    expect(runs.locator("tbody tr").first).to_contain_text("credential test")
    expect(runs.locator("tbody tr").first).to_contain_text("ok")
    page.screenshot(path=screenshot_path("connection-detail"), full_page=True)

    # A blank password keeps the stored one: renaming alone saves without touching it.
    page.get_by_role("link", name="Edit").click()
    page.get_by_label("Name", exact=True).fill("warehouse-eu")
    assert _submit(page, "Test and save changes") == 303
    expect(page.get_by_role("heading", level=1)).to_have_text("warehouse-eu")

    # Delete asks first, naming the connection.
    page.get_by_role("link", name="Delete").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Delete warehouse-eu?")
    assert _saved(e2e, tenant.admin_token) != []
    assert _submit(page, "Delete warehouse-eu") == 303
    expect(page).to_have_url(f"{console.url}/connections?notice=deleted")
    expect(page.get_by_role("status").first).to_have_text("Connection deleted.")
    assert _saved(e2e, tenant.admin_token) == []
    context.close()
