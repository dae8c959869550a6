"""The command line's pure parts: hints, DSN handling, durations, JSON shape, the session file,
the preview's receipt line and the update request of ``connections update``."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cli import resolve
from cli.app import hoist_global_options
from cli.commands.connections import (
    DETAIL,
    ConnectionEdit,
    SslMode,
    check_dsn,
    dsn_ssl_mode,
    dsn_with_password,
    preview_settings,
    read_root_cert,
)
from cli.commands.preview import column_keys, preview_data, receipt_line
from cli.errors import CliError, ExitCode, category_failure, with_flag_names
from cli.inputs import collect, format_duration, parse_duration, parse_time
from cli.output import message_dict
from cli.session import Session, SessionStore
from sevvo.auth.v1 import deployments_pb2
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.orchestrator.v1 import orchestrator_pb2
from sevvo.runtime.outcomes import Kind, hint_for
from sevvo.workflows.v1 import workflows_pb2


@pytest.mark.parametrize(
    ("category", "kind", "starts"),
    [
        ("password_authentication_failed", Kind.CREDENTIAL_TEST, "test from the agent's host"),
        ("permission_denied", Kind.CREDENTIAL_TEST, "grant it with GRANT CONNECT ON DATABASE"),
        ("permission_denied", Kind.PREVIEW, "grant it SELECT on that table"),
        ("query_rejected", Kind.PREVIEW, "preview one read-only statement"),
        ("query_rejected", Kind.CREDENTIAL_TEST, "preview one read-only statement"),
        ("agent_unavailable", Kind.PREVIEW, "check that the org's agent is running"),
        ("agent_unavailable", None, "check that the org's agent is running"),
    ],
)
def test_hints_are_found_by_the_category_name_runs_carry(
    category: str, kind: Kind | None, starts: str
) -> None:
    """Names as runs, connections and error metadata carry them find the guide's hint, read
    for the kind of work (a run-level ending reads the same for every kind)."""
    hint = hint_for(category, kind)
    assert hint is not None
    assert hint.startswith(starts)


def test_an_unknown_category_has_no_hint() -> None:
    """A category the guide does not know gets no made-up hint."""
    assert hint_for("no_such_category") is None


def test_a_failed_connection_test_says_what_happened_and_what_to_do() -> None:
    """Without a message of the run's own, the catalogue's message; its hint; exit code 1."""
    error = category_failure(
        "the connection test failed", "password_authentication_failed", "", Kind.CREDENTIAL_TEST
    )
    assert error.message == (
        "the connection test failed (password_authentication_failed): password authentication"
        " failed: the username or password is wrong, or the role lacks LOGIN"
    )
    assert error.hint == "test from the agent's host with psql using the same credentials"
    assert (error.category, error.exit_code) == ("password_authentication_failed", ExitCode.FAILED)


def test_a_failed_preview_keeps_its_own_message_beside_the_preview_hint() -> None:
    """A preview's specific message stays; the hint is the preview's reading of the category."""
    error = category_failure(
        "preview failed", "permission_denied", "permission denied for table payroll", Kind.PREVIEW
    )
    assert (
        error.message == "preview failed (permission_denied): permission denied for table payroll"
    )
    assert error.hint == "grant it SELECT on that table (or CONNECT on the database)"


def test_a_category_newer_than_the_command_line_still_fails_without_a_hint() -> None:
    """An unknown category is reported as it came, exit code 1, and no made-up hint."""
    error = category_failure("the rotation did not happen", "brand_new", "it broke", Kind.RUN)
    assert error.message == "the rotation did not happen (brand_new): it broke"
    assert (error.hint, error.exit_code) == (None, ExitCode.FAILED)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://reader:hunter2@db:5432/shop",
        "postgresql://reader:@db/shop",
        "postgresql://reader@db/shop?password=hunter2",
        "postgresql://reader@db/shop?sslmode=require&password=hunter2",
    ],
)
def test_a_dsn_with_a_password_is_refused_without_echoing_it(dsn: str) -> None:
    """Any password in the DSN is a usage error whose message does not contain the DSN."""
    with pytest.raises(CliError) as caught:
        check_dsn(dsn)
    assert caught.value.exit_code is ExitCode.USAGE
    assert "hunter2" not in caught.value.message
    assert "stdin" in caught.value.message


def test_a_dsn_needs_a_user() -> None:
    """Without a user there is no role to log in as."""
    with pytest.raises(CliError, match="needs a user"):
        check_dsn("postgresql://db:5432/shop")


@given(st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s))
def test_the_stdin_password_goes_into_the_dsn_percent_encoded(password: str) -> None:
    """Whatever the password's characters, the URI keeps user, host and query intact."""
    uri = dsn_with_password("postgresql://reader@db.internal:5433/shop?sslmode=require", password)
    parts = urlsplit(uri)
    assert (parts.hostname, parts.port, parts.path, parts.query) == (
        "db.internal",
        5433,
        "/shop",
        "sslmode=require",
    )
    assert parts.username == "reader"
    assert parts.password is not None
    assert unquote(parts.password) == password


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 604800)]
)
def test_durations(text: str, seconds: int) -> None:
    """TTL flags take seconds or a unit."""
    assert parse_duration("--max-ttl", text) == seconds


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "off"), (90, "90s"), (900, "15m"), (7200, "2h"), (2592000, "30d")]
)
def test_durations_are_shown_in_the_largest_exact_unit(seconds: int, text: str) -> None:
    """Tables show a duration as a person writes it, and it parses back to the same seconds."""
    assert format_duration(seconds) == text
    if seconds:
        assert parse_duration("--every", text) == seconds


@pytest.mark.parametrize("text", ["", "1.5h", "h", "-1m", "1w"])
def test_a_bad_duration_is_a_usage_error(text: str) -> None:
    """A malformed duration names the flag and exits 2."""
    with pytest.raises(CliError, match="--max-ttl") as caught:
        parse_duration("--max-ttl", text)
    assert caught.value.exit_code is ExitCode.USAGE


NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("7d", NOW - timedelta(days=7)),
        ("90s", NOW - timedelta(seconds=90)),
        ("2025-05-01", datetime(2025, 5, 1, tzinfo=UTC)),
        ("2025-05-01T09:30:00Z", datetime(2025, 5, 1, 9, 30, tzinfo=UTC)),
        ("2025-05-01T11:30:00+02:00", datetime(2025, 5, 1, 9, 30, tzinfo=UTC)),
    ],
)
def test_times_are_iso_8601_in_utc_unless_they_say_or_a_duration_ago(
    text: str, moment: datetime
) -> None:
    """--since/--until take ISO-8601 (no offset means UTC, as tables show) or a duration ago."""
    assert parse_time("--since", text, NOW) == moment


@pytest.mark.parametrize("text", ["", "yesterday", "2025-13-01", "1w"])
def test_a_bad_time_is_a_usage_error(text: str) -> None:
    """A malformed time names the flag and exits 2."""
    with pytest.raises(CliError, match="--until") as caught:
        parse_time("--until", text, NOW)
    assert caught.value.exit_code is ExitCode.USAGE


def test_json_uses_field_names_short_enum_names_and_rfc3339() -> None:
    """Enums lose their buf prefix, unset messages are null, timestamps are RFC 3339."""
    deployment = deployments_pb2.Deployment(
        id="d1", display_name="prod", state=deployments_pb2.DEPLOYMENT_STATE_REVOKED
    )
    deployment.create_time.FromDatetime(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert message_dict(deployment) == {
        "id": "d1",
        "org_id": "",
        "display_name": "prod",
        "state": "revoked",
        "create_time": "2026-01-02T03:04:05Z",
        "revoke_time": None,
        "creator_user_id": "",
        "last_seen_time": None,
    }


def _session(endpoint: str = "localhost:8443", minutes: int = 30) -> Session:
    return Session(
        endpoint=endpoint,
        session_token="header.claims.signature",
        expire_time=datetime.now(UTC) + timedelta(minutes=minutes),
        email="ada@acme.example",
        org_id="o1",
        user_id="u1",
    )


def test_the_session_file_is_private_and_round_trips(tmp_path: Path) -> None:
    """session.json is 0600 in a 0700 directory, and reads back as written."""
    store, session = SessionStore(tmp_path / "sevvo"), _session()
    store.save(session)
    assert store.path.stat().st_mode & 0o777 == 0o600
    assert store.config_dir.stat().st_mode & 0o777 == 0o700
    assert store.current(None) == session
    assert "header.claims.signature" not in repr(session)


@pytest.mark.parametrize(
    ("endpoint", "minutes", "message"),
    [
        ("localhost:8443", -1, "session expired: run sevvo login"),
        ("elsewhere:443", 30, "not signed in to elsewhere:443"),
    ],
)
def test_a_session_is_refused_when_expired_or_for_another_endpoint(
    tmp_path: Path, endpoint: str, minutes: int, message: str
) -> None:
    """An expired session, or one for another endpoint, is exit 3 with a clear message."""
    store = SessionStore(tmp_path)
    store.save(_session(minutes=minutes))
    with pytest.raises(CliError, match=message) as caught:
        store.current(endpoint)
    assert caught.value.exit_code is ExitCode.NOT_SIGNED_IN


def test_a_damaged_session_file_asks_to_sign_in_again(tmp_path: Path) -> None:
    """A file that is not a session is exit 3, not a traceback."""
    (tmp_path / "session.json").write_text(json.dumps({"endpoint": "x"}))
    with pytest.raises(CliError, match="damaged") as caught:
        SessionStore(tmp_path).current(None)
    assert caught.value.exit_code is ExitCode.NOT_SIGNED_IN


# --- the preview's receipt -------------------------------------------------------------------

_W = workflows_pb2
_AUDITED = "recorded in the audit log as a security event (connection.preview.receipt)"


@pytest.mark.parametrize(
    ("receipt", "line"),
    [
        (
            _W.PreviewReceipt(status=_W.PREVIEW_RECEIPT_STATUS_CLEAN),
            "receipt: clean — no transaction id, no advisory lock, no session of the role ended",
        ),
        (
            _W.PreviewReceipt(status=_W.PREVIEW_RECEIPT_STATUS_CLEAN, backend_terminated=True),
            "receipt: clean — no transaction id, no advisory lock, no session of the role ended;"
            " the agent ended the statement's session after the timeout",
        ),
    ],
    ids=["clean", "clean-terminated"],
)
def test_a_clean_receipt_says_what_was_proved(receipt: _W.PreviewReceipt, line: str) -> None:
    """A clean receipt is one line naming the three checks (and a session the agent ended)."""
    assert receipt_line(receipt) == (line, True)


@pytest.mark.parametrize(
    ("receipt", "failed"),
    [
        (
            _W.PreviewReceipt(
                status=_W.PREVIEW_RECEIPT_STATUS_NOT_CLEAN, transaction_id_assigned=True
            ),
            "a transaction id was assigned (something wrote)",
        ),
        (
            _W.PreviewReceipt(status=_W.PREVIEW_RECEIPT_STATUS_NOT_CLEAN, advisory_locks_held=2),
            "2 advisory locks held",
        ),
        (
            _W.PreviewReceipt(status=_W.PREVIEW_RECEIPT_STATUS_NOT_CLEAN, role_sessions_ended=1),
            "1 other session of the role ended",
        ),
        (
            _W.PreviewReceipt(
                status=_W.PREVIEW_RECEIPT_STATUS_NOT_CLEAN,
                backend_terminated=True,
                backend_outlived_call=True,
            ),
            "the statement's session was still running after the agent ended it",
        ),
        (
            _W.PreviewReceipt(
                status=_W.PREVIEW_RECEIPT_STATUS_NOT_CLEAN,
                advisory_locks_held=1,
                backend_terminated=True,
            ),
            "1 advisory lock held, the agent ended the statement's session after the timeout",
        ),
    ],
    ids=["xid", "locks", "sessions", "outlived", "locks-terminated"],
)
def test_a_receipt_not_clean_names_what_failed(receipt: _W.PreviewReceipt, failed: str) -> None:
    """A receipt that is not clean names each failed check and says it was audited."""
    assert receipt_line(receipt) == (f"receipt not clean: {failed}; {_AUDITED}", False)


def test_a_missing_receipt_warns_that_nothing_could_be_checked() -> None:
    """A receipt the agent could not take is a warning too, and audited."""
    line = receipt_line(_W.PreviewReceipt(status=_W.PREVIEW_RECEIPT_STATUS_MISSING))
    assert line is not None
    assert line[1] is False
    assert line[0].startswith("no receipt: the statement reached the database")
    assert line[0].endswith(_AUDITED)


def test_no_receipt_is_owed_when_nothing_reached_the_database() -> None:
    """A rejected preview has no receipt: no line, and null in JSON."""
    assert receipt_line(_W.PreviewReceipt()) is None
    response = orchestrator_pb2.PreviewQueryResponse(
        result=_W.PreviewQueryResult(category=_W.PREVIEW_CATEGORY_QUERY_REJECTED)
    )
    assert preview_data(response)["receipt"] is None


def test_the_receipt_is_in_the_preview_json_with_its_status_name() -> None:
    """JSON carries the receipt's status as a short name and every check's value."""
    response = orchestrator_pb2.PreviewQueryResponse(
        result=_W.PreviewQueryResult(
            category=_W.PREVIEW_CATEGORY_QUERY_TIMEOUT,
            receipt=_W.PreviewReceipt(
                status=_W.PREVIEW_RECEIPT_STATUS_NOT_CLEAN,
                role_sessions_ended=1,
                backend_terminated=True,
            ),
        )
    )
    assert preview_data(response)["receipt"] == {
        "status": "not_clean",
        "transaction_id_assigned": False,
        "advisory_locks_held": 0,
        "role_sessions_ended": 1,
        "backend_terminated": True,
        "backend_outlived_call": False,
    }


# --- preview settings on connections ---------------------------------------------------------


def test_create_sends_preview_settings_only_when_a_flag_is_given() -> None:
    """No flag: no settings (the server keeps none); a flag: the list and the budget."""
    assert preview_settings(None, None) is None
    assert preview_settings(["similarity"], None) == cpb.PreviewSettings(
        allowed_functions=["similarity"]
    )
    assert preview_settings(None, 0.0) == cpb.PreviewSettings()


_CURRENT = cpb.PreviewSettings(allowed_functions=["similarity"], max_plan_cost=500)


@pytest.mark.parametrize(
    ("edit", "preview"),
    [
        (
            ConnectionEdit(allow_functions=["a", "public.b"]),
            cpb.PreviewSettings(allowed_functions=["a", "public.b"], max_plan_cost=500),
        ),
        (ConnectionEdit(no_allowed_functions=True), cpb.PreviewSettings(max_plan_cost=500)),
        (
            ConnectionEdit(max_plan_cost=20),
            cpb.PreviewSettings(allowed_functions=["similarity"], max_plan_cost=20),
        ),
        (
            ConnectionEdit(max_plan_cost=0),
            cpb.PreviewSettings(allowed_functions=["similarity"]),
        ),
        (ConnectionEdit(no_allowed_functions=True, max_plan_cost=0), None),
        (
            ConnectionEdit(allow_functions=["x"], max_plan_cost=7.5),
            cpb.PreviewSettings(allowed_functions=["x"], max_plan_cost=7.5),
        ),
    ],
    ids=["replace-list", "clear-list", "set-budget", "clear-budget", "clear-both", "both"],
)
def test_update_replaces_the_preview_settings_given_and_keeps_the_other(
    edit: ConnectionEdit, preview: cpb.PreviewSettings | None
) -> None:
    """The mask replaces both settings at once: the one not given is carried over."""
    request = edit.request("c1", _CURRENT if edit.needs_current else None)
    assert list(request.update_mask.paths) == ["fields.preview"]
    fields = request.connection.fields
    assert (fields.preview if fields.HasField("preview") else None) == preview


def test_update_reads_the_current_settings_only_when_one_is_kept() -> None:
    """Giving both the list and the budget needs no read first; giving one does."""
    assert ConnectionEdit(allow_functions=["a"]).needs_current
    assert ConnectionEdit(max_plan_cost=1).needs_current
    assert not ConnectionEdit(no_allowed_functions=True, max_plan_cost=1).needs_current
    assert not ConnectionEdit(name="shop").needs_current


def test_update_masks_only_the_details_given() -> None:
    """Each flag adds its own mask path; the port travels even when it is the default."""
    edit = ConnectionEdit(
        name="shop", host="db2", port=5432, password="hunter2", ssl_mode=SslMode.DISABLE
    )
    request = edit.request("c1")
    assert list(request.update_mask.paths) == [
        "display_name",
        "fields.host",
        "fields.port",
        "fields.password",
        "fields.ssl_mode",
    ]
    assert request.connection.display_name == "shop"
    fields = request.connection.fields
    assert (fields.host, fields.port, fields.password, fields.ssl_mode) == (
        "db2",
        5432,
        "hunter2",
        cpb.SSL_MODE_DISABLE,
    )
    assert not fields.HasField("preview")
    assert "hunter2" not in repr(edit)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (ConnectionEdit, "nothing to update"),
        (
            lambda: ConnectionEdit(allow_functions=["a"], no_allowed_functions=True),
            "not both",
        ),
    ],
    ids=["nothing", "list-and-no-list"],
)
def test_update_usage_errors(edit: Callable[[], ConnectionEdit], message: str) -> None:
    """An update that changes nothing, or both sets and clears the list, exits 2."""
    with pytest.raises(CliError, match=message) as caught:
        edit()
    assert caught.value.exit_code is ExitCode.USAGE


@pytest.mark.parametrize(
    ("preview", "functions", "budget"),
    [
        (None, None, None),
        (
            {"allowed_functions": ["a", "public.b"], "max_plan_cost": 100000.0},
            "a, public.b",
            "100,000",
        ),
        ({"allowed_functions": [], "max_plan_cost": 12.5}, None, "12.5"),
    ],
    ids=["none", "both", "budget-only"],
)
def test_get_shows_the_preview_settings_in_its_table(
    preview: dict[str, object] | None, functions: str | None, budget: str | None
) -> None:
    """The detail table lists the allowed functions and the budget; unset ones show as -."""
    rows = {label: get({"preview": preview}) for label, get in DETAIL}
    assert (rows["preview functions"], rows["preview cost budget"]) == (functions, budget)


@pytest.mark.parametrize(
    ("given", "read"),
    [
        (["users", "list", "--output", "json"], ["--output", "json", "users", "list"]),
        (["users", "list", "-o", "table"], ["-o", "table", "users", "list"]),
        (["runs", "list", "-ojson", "--limit", "5"], ["-ojson", "runs", "list", "--limit", "5"]),
        (
            ["connections", "get", "db", "--endpoint=h:443", "--ca-file", "ca.crt"],
            ["--endpoint=h:443", "--ca-file", "ca.crt", "connections", "get", "db"],
        ),
        (["--output", "json", "whoami"], ["--output", "json", "whoami"]),
        (["preview", "db", "--", "--output"], ["preview", "db", "--", "--output"]),
        (["audit", "list", "--limit", "200"], ["audit", "list", "--limit", "200"]),
    ],
    ids=[
        "long",
        "short",
        "attached-short",
        "equals-and-two",
        "already-first",
        "after-dashes",
        "none",
    ],
)
def test_global_options_after_the_subcommand_move_in_front(
    given: list[str], read: list[str]
) -> None:
    """Root options written after the subcommand are moved in front of it, the rest kept in
    order; nothing after -- moves."""
    assert hoist_global_options(given) == read


@pytest.mark.parametrize(
    ("dsn", "flag", "sent"),
    [
        ("postgresql://u@h:5432/db", None, cpb.SSL_MODE_REQUIRE),
        ("postgresql://u@h:5432/db", SslMode.DISABLE, cpb.SSL_MODE_DISABLE),
        ("postgresql://u@h:5432/db?sslmode=disable", None, cpb.SSL_MODE_UNSPECIFIED),
        ("postgresql://u@h:5432/db?sslmode=require", SslMode.REQUIRE, cpb.SSL_MODE_REQUIRE),
    ],
    ids=["default-require", "flag", "uri-decides", "both"],
)
def test_a_dsn_without_sslmode_gets_the_promised_default(
    dsn: str, flag: SslMode | None, sent: int
) -> None:
    """--dsn without sslmode and without --ssl-mode sends require, as the help says; a URI's
    own sslmode is left to the server, which refuses a conflicting flag."""
    assert dsn_ssl_mode(dsn, flag) == sent


def test_a_ca_bundle_without_a_mode_means_verify_full() -> None:
    """--ssl-root-cert without --ssl-mode (or a URI sslmode) verifies the host name too."""
    dsn = "postgresql://u@h:5432/db"
    assert dsn_ssl_mode(dsn, None, has_root_cert=True) == cpb.SSL_MODE_VERIFY_FULL
    assert dsn_ssl_mode(dsn, SslMode.VERIFY_CA, has_root_cert=True) == cpb.SSL_MODE_VERIFY_CA
    assert dsn_ssl_mode(dsn + "?sslmode=verify-ca", None, has_root_cert=True) == 0


def test_update_sends_a_new_ca_bundle_under_its_own_mask_path() -> None:
    """--ssl-mode and --ssl-root-cert each add their path; the PEM travels as given."""
    request = ConnectionEdit(ssl_mode=SslMode.VERIFY_CA, ssl_root_cert="PEM").request("c1")
    assert list(request.update_mask.paths) == ["fields.ssl_mode", "fields.ssl_root_cert"]
    fields = request.connection.fields
    assert (fields.ssl_mode, fields.ssl_root_cert) == (cpb.SSL_MODE_VERIFY_CA, "PEM")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (b"0\x82\x01\x0b0\x81\xb2\xa0\x03", "is not PEM text; convert a DER"),
        (b"-" * (1024 * 1024 + 1), "larger than a CA bundle can be"),
    ],
    ids=["missing", "der", "huge"],
)
def test_an_unusable_ca_bundle_file_is_a_usage_error(
    content: bytes | None, message: str, tmp_path: Path
) -> None:
    """A file that is missing, binary or huge stops the command before anything is sent."""
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CliError, match=message) as caught:
        read_root_cert(path)
    assert caught.value.exit_code is ExitCode.USAGE


def test_get_shows_the_ca_bundle_as_subjects_and_expiry_days() -> None:
    """The detail table names up to three certificates with their expiry day, then counts."""
    certificate = {
        "subject": "CN=Root",
        "sha256_fingerprint": "AB:CD",
        "expire_time": "2030-01-02T03:04:05Z",
    }
    shown = [
        get({"safe_metadata": {"ssl_root_certs": [certificate] * count}})
        for count in (0, 1, 5)
        for label, get in DETAIL
        if label == "ssl root certs"
    ]
    assert shown == [
        None,
        "CN=Root (expires 2030-01-02)",
        "; ".join(["CN=Root (expires 2030-01-02)"] * 3) + "; and 2 more",
    ]


@pytest.mark.parametrize(
    ("message", "field", "shown"),
    [
        ("fields.port: must be between 1 and 65535", "fields.port", "--port: must be between"),
        ("dsn.uri: sslmode must be require", "dsn.uri", "--dsn: sslmode"),
        ("fields.ssl_root_cert: is required", "fields.ssl_root_cert", "--ssl-root-cert: is"),
        ("dynamic.default_ttl_seconds: too long", "dynamic.default_ttl_seconds", "--default-ttl:"),
        ("display_name: is required", "display_name", "--name: is required"),
        (
            "fields.preview.allowed_functions[2]: unknown",
            "fields.preview.allowed_functions[2]",
            "--allow-function: unknown",
        ),
        ("connection_id: must be a UUID", "connection_id", "connection_id: must be a UUID"),
        ("something else entirely", None, "something else entirely"),
    ],
    ids=["port", "dsn", "root-cert", "ttl", "name", "indexed", "no-flag", "no-field"],
)
def test_validation_errors_name_the_flag_not_the_api_field(
    message: str, field: str | None, shown: str
) -> None:
    """An INVALID_ARGUMENT naming an API field path reads with the flag the user typed."""
    assert with_flag_names(message, field).startswith(shown)


@dataclass
class _FakePage:
    """A List response as the servers shape it: items and the next page's token."""

    items: list[int]
    next_page_token: str


def _server(total: int, calls: list[tuple[str, int]]) -> Callable[[str, int], _FakePage]:
    """A List method over items 0..total-1 whose page token is the next index."""

    def fetch(token: str, size: int) -> _FakePage:
        calls.append((token, size))
        start = int(token or 0)
        end = min(start + size, total)
        return _FakePage(list(range(start, end)), str(end) if end < total else "")

    return fetch


def test_pages_continue_where_the_last_list_stopped_without_gaps_or_repeats() -> None:
    """--limit stops on a page boundary with the server's token; continuing with it shows the
    next items, and the last page has no token."""
    calls: list[tuple[str, int]] = []
    fetch = _server(7, calls)
    seen: list[int] = []
    token = ""
    while True:
        listing = collect(fetch, lambda page: page.items, limit=3, page_token=token)
        seen += listing.items
        token = listing.next_page_token
        if not token:
            break
    assert seen == list(range(7))
    assert all(size <= 3 for _, size in calls)


def test_all_follows_every_page_and_limit_is_exact() -> None:
    """--all returns everything in pages of at most 500; --limit returns exactly that many."""
    calls: list[tuple[str, int]] = []
    everything = collect(_server(1203, calls), lambda p: p.items, limit=50, everything=True)
    assert everything.items == list(range(1203))
    assert everything.next_page_token == ""
    assert [size for _, size in calls] == [500, 500, 500]
    limited = collect(_server(1203, []), lambda p: p.items, limit=620)
    assert (len(limited.items), limited.next_page_token) == (620, "620")


def test_a_client_side_filter_keeps_following_pages_until_enough_are_kept() -> None:
    """Items dropped by a filter do not count; pages are followed until --limit are kept."""
    listing = collect(
        _server(100, []), lambda page: [i for i in page.items if i % 10 == 0], limit=3
    )
    assert listing.items == [0, 10, 20]


_PEOPLE = [
    ("3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10", "shop"),
    ("3f1c9999-8d0e-4c0e-9d61-6a8f6f1f2a10", "billing"),
    ("a0000000-0000-4000-8000-000000000000", "twin"),
    ("b0000000-0000-4000-8000-000000000000", "twin"),
]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("shop", "3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10"),
        ("3f1c0b", "3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10"),
        ("3F1C99", "3f1c9999-8d0e-4c0e-9d61-6a8f6f1f2a10"),
        ("A0000000", "a0000000-0000-4000-8000-000000000000"),
    ],
    ids=["name", "prefix", "upper-prefix", "prefix-of-a-twin"],
)
def test_a_thing_is_named_by_name_or_unique_id_prefix(text: str, found: str) -> None:
    """A name or an id prefix that picks out one thing gives its full id."""
    assert resolve.resolve("connection", text, lambda: _PEOPLE) == found


def test_a_full_id_is_taken_as_it_is_without_listing() -> None:
    """A full UUID needs no list call (the server says if it does not exist)."""

    def never() -> list[tuple[str, str]]:
        raise AssertionError("listed")

    assert resolve.resolve("run", "3F1C0B6E-8D0E-4C0E-9D61-6A8F6F1F2A10", never) == (
        "3f1c0b6e-8d0e-4c0e-9d61-6a8f6f1f2a10"
    )


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [
        ("3f1c", ExitCode.USAGE, "2 connections have ids starting '3f1c'"),
        ("twin", ExitCode.USAGE, "2 connections are named 'twin'"),
        ("nope", ExitCode.NOT_FOUND, "no connection has the id, id prefix or name 'nope'"),
        ("3f1", ExitCode.NOT_FOUND, "at least 4"),
    ],
    ids=["ambiguous-prefix", "ambiguous-name", "unknown", "prefix-too-short"],
)
def test_an_ambiguous_or_unknown_name_says_so(text: str, code: ExitCode, message: str) -> None:
    """Two matches are a usage error asking for more; none is not found (exit 5)."""
    with pytest.raises(CliError) as caught:
        resolve.resolve("connection", text, lambda: _PEOPLE)
    assert caught.value.exit_code == code
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("names", "keys"),
    [
        (["id", "name"], ["id", "name"]),
        (["a", "a", "a"], ["a", "a_2", "a_3"]),
        (["a", "a", "a_2"], ["a", "a_3", "a_2"]),
        (["", "?column?", "?column?"], ["column_1", "?column?", "?column?_2"]),
    ],
    ids=["distinct", "repeated", "suffix-taken", "unnamed"],
)
def test_preview_json_keys_each_column_once(names: list[str], keys: list[str]) -> None:
    """JSON rows are keyed by column: repeated or empty names get keys no other column has."""
    assert column_keys(names) == keys
