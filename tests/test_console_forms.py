"""The connection form's rules without a browser or a server: what an edit's field mask
names, where a failed test or a field violation is shown, and that a password is never
rendered back into the page."""

from __future__ import annotations

import grpc

from console.pages.connections import SSL_MODES, FormState, form_field_of
from console.pages.roles import statements
from console.web import Viewer, _templates
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.runtime.grpc_client import ErrorDetails
from sevvo.runtime.outcomes import Kind, hint_for

SECRET = "s3cret-pw-91bd"
SENT = {
    "name": " shop ",
    "host": "db.internal",
    "port": "6432",
    "database": "shop",
    "username": "reader",
    "password": SECRET,
    "ssl_mode": "verify-full",
    "ssl_root_cert": "",
    "credential_mode": "fields",
}


def _saved() -> cpb.Connection:
    return cpb.Connection(
        id="c1",
        display_name="shop",
        credential_mode=cpb.CREDENTIAL_MODE_FIELDS,
        has_password=True,
        safe_metadata=cpb.PostgresMetadata(
            host="db.internal",
            port=6432,
            database="shop",
            username="reader",
            ssl_mode=cpb.SSL_MODE_VERIFY_FULL,
        ),
    )


def _failed_test(category: str) -> ErrorDetails:
    return ErrorDetails(
        code=grpc.StatusCode.FAILED_PRECONDITION,
        reason="CREDENTIAL_TEST_FAILED",
        message=f"credential test failed ({category}): ...",
        metadata={"category": category, "run_id": "r1"},
    )


def _page(form: FormState, connection: cpb.Connection | None = None) -> str:
    viewer = Viewer(token="t", org_id="o", user_id="u", email="a@example.com", role="admin")
    return _templates.get_template("connection_form.html").render(
        viewer=viewer,
        path="/connections/new",
        form=form,
        values=form.values,
        connection=connection,
        ssl_modes=SSL_MODES,
    )


def test_an_edit_names_only_what_changed_and_a_blank_password_keeps_the_stored_one() -> None:
    form = FormState.parse({**SENT, "password": ""})
    assert list(form.update_request(_saved()).update_mask.paths) == []
    form = FormState.parse({**SENT, "host": "db2.internal", "password": ""})
    assert list(form.update_request(_saved()).update_mask.paths) == ["fields.host"]
    form = FormState.parse({**SENT, "name": "shop-eu", "port": "5432"})
    request = form.update_request(_saved())
    assert list(request.update_mask.paths) == ["display_name", "fields.port", "fields.password"]
    assert request.connection.fields.password == SECRET


def test_a_failed_test_is_shown_beside_the_field_its_category_points_at() -> None:
    form = FormState.parse(SENT)
    form.show_failure(_failed_test("password_authentication_failed"), kept=False)
    problem = form.problems["password"]
    assert problem.category == "password_authentication_failed"
    assert problem.hint == hint_for("password_authentication_failed", Kind.CREDENTIAL_TEST)
    assert form.invalid == {"password": "password-error", "username": "password-error"}
    page = _page(form)
    assert SECRET not in page
    assert 'id="password-error"' in page
    assert 'aria-invalid="true" aria-describedby="password-error password-help"' in page
    assert "aria-invalid" not in page.split('id="host"')[1].split(">")[0]

    form = FormState.parse(SENT)
    form.show_failure(_failed_test("database_does_not_exist"), kept=True)
    assert list(form.problems) == ["database"]
    assert form.summary is not None and "old details stay in use" in form.summary.message


def test_a_category_no_field_explains_goes_to_the_top_with_its_hint() -> None:
    form = FormState.parse(SENT)
    form.show_failure(_failed_test("agent_unavailable"), kept=False)
    assert form.problems == {}
    assert form.summary is not None
    assert form.summary.hint == hint_for("agent_unavailable", Kind.CREDENTIAL_TEST)
    assert "agent unavailable" in form.summary.message


def test_field_violations_land_on_their_fields() -> None:
    assert form_field_of("dynamic.privileged_password") == "password"
    assert form_field_of("connection.fields.ssl_root_cert") == "ssl_root_cert"
    assert form_field_of("dynamic.creation_statements[2]") is None
    form = FormState.parse(SENT)
    form.show_failure(
        ErrorDetails(
            code=grpc.StatusCode.INVALID_ARGUMENT,
            reason="INVALID_ARGUMENT",
            message="fields.port: bad; dynamic.creation_statements[0]: bad too",
            violations=(("fields.port", "bad"), ("dynamic.creation_statements[0]", "bad too")),
        ),
        kept=False,
    )
    assert form.problems["port"].message == "bad"
    assert form.summary is not None
    assert form.summary.message == "dynamic.creation_statements[0]: bad too"


def test_required_fields_and_numbers_are_checked_before_any_call() -> None:
    form = FormState.parse({"port": "0", "ssl_mode": "nonsense", "credential_mode": "dynamic"})
    form.checked(new=True)
    assert set(form.problems) == {
        "name",
        "host",
        "database",
        "username",
        "password",
        "port",
        "ssl_mode",
    }
    form = FormState.parse({**SENT, "credential_mode": "dynamic", "max_ttl_seconds": "10"})
    form.checked(new=True)
    assert list(form.problems) == ["max_ttl_seconds"]
    request = FormState.parse({**SENT, "credential_mode": "dynamic"}).create_request()
    assert request.WhichOneof("credentials") == "dynamic"
    assert request.dynamic.privileged_password == SECRET
    assert request.display_name == "shop"


def test_role_statements_are_the_textareas_blocks_kept_as_typed() -> None:
    text = 'create role "{{name}}" login;\r\n\r\ngrant select\n  on t to "{{name}}";\n\n\n'
    assert statements(text) == [
        'create role "{{name}}" login;',
        'grant select\n  on t to "{{name}}";',
    ]
    assert statements("  \n\n") == []
