"""Tests for sevvo.runtime.logs: rendering, and redaction on every path a log line takes."""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
import structlog
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sevvo.runtime.logs import (
    REDACTED,
    configure_logging,
    get_logger,
    redact_text,
    register_secret,
)

HOST = "db.internal"
SERVICE = "test-service"
JWT = (
    "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0"
    ".eyJzdWIiOiJkZXBsb3ltZW50Iiwib3JnX2lkIjoiNDIifQ"
    ".c2lnbmF0dXJlLWJ5dGVzLWdvLWhlcmU"
)
PEM_BODY = "MC4CAQAwBQYDK2VwBCIEIJ0sPemBodyOnlyForTests0123456789abcdefABCDEF"


@pytest.fixture(autouse=True)
def _isolated_logging() -> Iterator[None]:
    """Restores structlog, the root logger and context variables after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    # The session's configuration, not structlog's defaults: those print to whatever
    # sys.stdout is, so servers later tests run in threads would log into a captured output.
    config = structlog.get_config()
    structlog.contextvars.clear_contextvars()
    yield
    structlog.configure(**config)
    structlog.contextvars.clear_contextvars()
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


@pytest.fixture
def stream() -> io.StringIO:
    """The process configured for JSON lines into a buffer, the production output path."""
    return _configured_buffer()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _configured_buffer() -> io.StringIO:
    buffer = io.StringIO()
    configure_logging(SERVICE, json=True, stream=buffer)
    return buffer


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """Every rendered line, parsed as one JSON object each."""
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def only_line(stream: io.StringIO) -> dict[str, Any]:
    """The single rendered line."""
    (line,) = lines(stream)
    return line


# (kind, text with {secret}, secret, context that must survive, register the secret first)
TEXT_CASES = [
    (
        "uri-postgresql",
        "connecting to postgresql://sevvo:{secret}@db.internal:5432/app?sslmode=require",
        "Pg-Passw0rd!x",
        ["postgresql://sevvo:", "@db.internal:5432/app?sslmode=require"],
        False,
    ),
    (
        "uri-postgres",
        "connecting to postgres://sevvo:{secret}@db.internal/app",
        "Pg-Short-Scheme-7",
        ["postgres://sevvo:", "@db.internal/app"],
        False,
    ),
    (
        "uri-any-scheme",
        "proxy https://agent:{secret}@proxy.internal:8443/ up",
        "Https-Proxy-Pw-3",
        ["https://agent:", "@proxy.internal:8443/ up"],
        False,
    ),
    (
        "libpq-password",
        "host=db.internal port=5432 password={secret} dbname=app",
        "Libpq-Unquoted-5",
        ["host=db.internal port=5432 password=", " dbname=app"],
        False,
    ),
    (
        "libpq-password-quoted",
        "host=db.internal password='{secret}' dbname=app",
        "Alpha7qq Bravo8rr",
        ["host=db.internal password=", " dbname=app"],
        False,
    ),
    (
        "query-password",
        "postgresql://db.internal/app?user=sevvo&password={secret}&sslmode=require",
        "Query-Param-Pw-1",
        ["db.internal/app?user=sevvo&password=", "&sslmode=require"],
        False,
    ),
    (
        "repr-password",
        "bad config Config(host='db.internal', password='{secret}')",
        "Repr-Field-Pw-2",
        ["Config(host='db.internal', password="],
        False,
    ),
    (
        "bearer",
        "authorization: Bearer {secret} rejected",
        "opaque.Bearer-Tok3n",
        ["authorization: Bearer ", " rejected"],
        False,
    ),
    ("jwt", "verified {secret} for org 42", JWT, ["verified ", " for org 42"], False),
    (
        "sql-password",
        "CREATE ROLE lease_7 LOGIN PASSWORD '{secret}' VALID UNTIL '2030-01-01'",
        "Sql-Literal-Pw-4",
        ["CREATE ROLE lease_7 LOGIN PASSWORD ", " VALID UNTIL '2030-01-01'"],
        False,
    ),
    (
        "sql-password-doubled-quote",
        "alter role app password 'it''s-{secret}' valid until 'infinity'",
        "Sql-Doubled-Pw-6",
        ["alter role app password ", " valid until 'infinity'"],
        False,
    ),
    (
        "pem-private-key",
        "loaded -----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY----- from key.pem",
        PEM_BODY,
        ["loaded -----BEGIN PRIVATE KEY-----", " from key.pem"],
        False,
    ),
    (
        "pem-ec-private-key",
        "-----BEGIN EC PRIVATE KEY-----\n{secret}\n-----END EC PRIVATE KEY-----\nnext",
        PEM_BODY,
        ["-----BEGIN EC PRIVATE KEY-----", "\nnext"],
        False,
    ),
    (
        "deployment-token",
        "agent configured with sevvo_dt_{secret} ok",
        "eyJ2IjoxLCJkIjoiZGVwLTEiLCJzIjoiUzNjcjN0In0",
        ["agent configured with sevvo_dt_", " ok"],
        False,
    ),
    (
        "scram-verifier",
        "role app has SCRAM-SHA-256${secret} stored",
        "4096:c2FsdHNhbHQ=$U3RvcmVkS2V5U3RvcmVk:U2VydmVyS2V5U2VydmVy",
        ["role app has SCRAM-SHA-256$", " stored"],
        False,
    ),
    (
        "registered-secret",
        "retrying with {secret} now",
        "Reg1stered-Value-" + uuid.uuid4().hex,
        ["retrying with ", " now"],
        True,
    ),
]


@pytest.mark.parametrize(
    ("template", "secret", "survivors", "register"),
    [pytest.param(*case[1:], id=case[0]) for case in TEXT_CASES],
)
def test_secret_in_text_is_redacted_and_context_kept(
    stream: io.StringIO, template: str, secret: str, survivors: list[str], register: bool
) -> None:
    """Each kind of secret in a message is replaced while the text around it survives."""
    if register:
        register_secret(secret)
    get_logger("test").info(template.format(secret=secret))
    output = stream.getvalue()
    event = only_line(stream)["event"]
    assert secret not in output
    assert all(part not in output for part in secret.split())
    assert REDACTED in event
    for survivor in survivors:
        assert survivor in event


@pytest.mark.parametrize(
    ("template", "secret"), [pytest.param(c[1], c[2], id=c[0]) for c in TEXT_CASES if not c[4]]
)
def test_redacting_twice_changes_nothing(template: str, secret: str) -> None:
    """Text that was already redacted (e.g. an error message logged again) is left as is."""
    once = redact_text(template.format(secret=secret))
    assert redact_text(once) == once


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "db_password",
        "PASSWD",
        "client_secret",
        "access_token",
        "dsn",
        "Authorization",
        "cookie",
        "private_key",
        "X-Api-Key",
        "credentials",
    ],
)
def test_secret_named_key_is_redacted(stream: io.StringIO, key: str) -> None:
    """A field whose name marks a secret loses its value; other fields keep theirs."""
    get_logger("test").info("connecting", **{key: "Kv-Secret-Value-8", "host": HOST})
    line = only_line(stream)
    assert "Kv-Secret-Value-8" not in stream.getvalue()
    assert line[key] == REDACTED
    assert line["host"] == HOST


def test_nested_structures_are_redacted(stream: io.StringIO) -> None:
    """Keys and text inside nested dicts, lists and tuples are redacted at every depth."""
    config = {
        "replicas": [{"host": HOST, "password": "Nested-Pw-One"}],
        "args": ("--target", f"postgresql://sevvo:Nested-Pw-Two@{HOST}/app"),
    }
    get_logger("test").info("starting", config=config)
    line = only_line(stream)
    assert "Nested-Pw-One" not in stream.getvalue()
    assert "Nested-Pw-Two" not in stream.getvalue()
    assert line["config"]["replicas"] == [{"host": HOST, "password": REDACTED}]
    assert line["config"]["args"] == ["--target", f"postgresql://sevvo:{REDACTED}@{HOST}/app"]


def test_logging_does_not_mutate_the_callers_data(stream: io.StringIO) -> None:
    """Redaction works on copies: the dict a caller logs still holds its secret afterwards."""
    config = {"nested": {"password": "Caller-Owned-Pw"}}
    get_logger("test").info("starting", config=config)
    assert config == {"nested": {"password": "Caller-Owned-Pw"}}


def test_object_reprs_are_redacted(stream: io.StringIO) -> None:
    """A value rendered through repr(), such as a dataclass, is redacted like text."""

    @dataclasses.dataclass
    class Settings:
        host: str
        password: str

    get_logger("test").info("loaded", settings=Settings(HOST, "Repr-Object-Pw"))
    rendered = only_line(stream)["settings"]
    assert "Repr-Object-Pw" not in stream.getvalue()
    assert f"host='{HOST}'" in rendered


def test_ids_and_times_render_as_plain_strings(stream: io.StringIO) -> None:
    """UUIDs and datetimes are rendered readably, not as their repr()."""
    run_id = uuid.uuid4()
    started = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    get_logger("test").info("run", run_id=run_id, started=started)
    line = only_line(stream)
    assert line["run_id"] == str(run_id)
    assert line["started"] == "2030-01-02T03:04:05+00:00"


def _log_structlog_exception() -> None:
    get_logger("test").exception("connect failed")


def _log_stdlib_exception() -> None:
    logging.getLogger("psycopg.pool").exception("connect failed")


@pytest.mark.parametrize(
    "emit",
    [
        pytest.param(_log_structlog_exception, id="structlog"),
        pytest.param(_log_stdlib_exception, id="stdlib"),
    ],
)
def test_exception_traceback_is_redacted(stream: io.StringIO, emit: Callable[[], None]) -> None:
    """A traceback whose message quotes a DSN is rendered with the password removed."""
    try:
        raise ConnectionError(f"could not connect to postgresql://sevvo:Tb-Secret-Pw@{HOST}/app")
    except ConnectionError:
        emit()
    line = only_line(stream)
    assert "Tb-Secret-Pw" not in stream.getvalue()
    assert "Traceback (most recent call last)" in line["exception"]
    assert f"postgresql://sevvo:{REDACTED}@{HOST}/app" in line["exception"]


def test_console_exception_shows_no_local_variables() -> None:
    """The console renderer gets a pre-formatted traceback, so no frame locals leak."""
    terminal = _Terminal()
    configure_logging(SERVICE, stream=terminal)

    def connect() -> None:
        dsn = f"postgresql://sevvo:Console-Local-Pw@{HOST}/app"
        raise ConnectionError(f"could not connect ({len(dsn)} chars)")

    try:
        connect()
    except ConnectionError:
        get_logger("test").exception("connect failed")
    output = terminal.getvalue()
    assert "ConnectionError: could not connect" in output
    assert "Console-Local-Pw" not in output


def test_stdlib_logger_output_is_redacted(stream: io.StringIO) -> None:
    """A third-party stdlib log line with a DSN argument is rendered by the same redacting chain."""
    dsn = f"postgresql://sevvo:Grpc-Arg-Pw@{HOST}:5432/app"
    logging.getLogger("grpc").warning("failed to connect to %s", dsn)
    line = only_line(stream)
    assert "Grpc-Arg-Pw" not in stream.getvalue()
    assert line["event"] == f"failed to connect to postgresql://sevvo:{REDACTED}@{HOST}:5432/app"
    assert line["logger"] == "grpc"
    assert line["service"] == SERVICE


def test_stdlib_stack_info_is_the_callers_stack(stream: io.StringIO) -> None:
    """stack_info from a stdlib logger shows the caller's frames, not the logging machinery."""
    logging.getLogger("temporalio").warning("slow poll", stack_info=True)
    stack = only_line(stream)["stack"]
    assert "test_stdlib_stack_info_is_the_callers_stack" in stack
    assert "logging/__init__.py" not in stack


def test_broken_stdlib_format_string_does_not_leak(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stdlib call whose arguments do not fit its format reports the error without the args."""
    root = logging.getLogger()
    before = list(root.handlers)
    buffer = _configured_buffer()
    # pytest's own capture handler turns logging errors into test failures; leave only ours.
    monkeypatch.setattr(root, "handlers", [h for h in root.handlers if h not in before])
    logging.getLogger("psycopg").warning("%d", f"postgresql://sevvo:Bad-Format-Pw@{HOST}/app")
    err = capsys.readouterr().err
    assert "logging error in logger 'psycopg'" in err
    assert "Bad-Format-Pw" not in err + buffer.getvalue()


def test_json_output_is_one_object_per_line(stream: io.StringIO) -> None:
    """Each event is one JSON line with service, level, a UTC ISO timestamp and the event."""
    log = get_logger("test")
    log.info("first\nwith a newline")
    log.warning("second", count=2)
    first, second = lines(stream)
    for line in (first, second):
        assert line["service"] == SERVICE
        stamp = datetime.datetime.fromisoformat(line["timestamp"])
        assert stamp.utcoffset() == datetime.timedelta(0)
    assert (first["level"], first["event"]) == ("info", "first\nwith a newline")
    assert (second["level"], second["event"], second["count"]) == ("warning", "second", 2)


def test_json_is_the_default_when_not_a_terminal() -> None:
    """Without json=..., a stream that is not a terminal gets JSON lines."""
    buffer = io.StringIO()
    configure_logging(SERVICE, stream=buffer)
    get_logger("test").info("hello")
    assert only_line(buffer)["event"] == "hello"


def test_console_is_the_default_on_a_terminal() -> None:
    """Without json=..., a terminal gets human-readable lines, still redacted."""
    terminal = _Terminal()
    configure_logging(SERVICE, stream=terminal)
    get_logger("test").info("hello", dsn="Console-Dsn-Value", target=f"postgres://u:Tty-Pw@{HOST}")
    output = terminal.getvalue()
    with pytest.raises(json.JSONDecodeError):
        json.loads(output)
    assert "hello" in output
    assert f"postgres://u:{REDACTED}@{HOST}" in output
    assert "Console-Dsn-Value" not in output
    assert "Tty-Pw" not in output


def test_configuring_twice_does_not_duplicate_lines() -> None:
    """A second configure_logging replaces the first handler instead of adding another."""
    first, second = io.StringIO(), io.StringIO()
    configure_logging(SERVICE, json=True, stream=first)
    configure_logging(SERVICE, json=True, stream=second)
    get_logger("test").info("structlog line")
    logging.getLogger("grpc").warning("stdlib line")
    assert first.getvalue() == ""
    assert [line["event"] for line in lines(second)] == ["structlog line", "stdlib line"]


def test_level_filters_structlog_and_stdlib() -> None:
    """Events below the configured level are dropped on both paths."""
    buffer = io.StringIO()
    configure_logging(SERVICE, level="warning", json=True, stream=buffer)
    get_logger("test").info("dropped")
    logging.getLogger("grpc").info("dropped too")
    get_logger("test").warning("kept")
    assert [line["event"] for line in lines(buffer)] == ["kept"]


def test_unknown_level_is_rejected() -> None:
    """A misspelt level fails at configuration, naming the value."""
    with pytest.raises(ValueError, match="'LOUD'"):
        configure_logging(SERVICE, level="LOUD", stream=io.StringIO())


def test_context_variables_reach_stdlib_lines(stream: io.StringIO) -> None:
    """Values bound with structlog.contextvars also appear on third-party lines."""
    structlog.contextvars.bind_contextvars(request_id="req-1")
    logging.getLogger("grpc").warning("stream reset")
    assert only_line(stream)["request_id"] == "req-1"


def test_bound_service_overrides_the_process_default(stream: io.StringIO) -> None:
    """In a process hosting several services, a service bound in context names the line."""
    with structlog.contextvars.bound_contextvars(service="connections"):
        get_logger("test").info("hello")
    assert only_line(stream)["service"] == "connections"


def test_get_logger_defaults_to_the_calling_module(stream: io.StringIO) -> None:
    """get_logger() without a name is named after the module that called it."""
    get_logger().info("hello")
    assert only_line(stream)["logger"] == __name__


def test_capture_logs_sees_a_logger_already_in_use(stream: io.StringIO) -> None:
    """A module-level logger that has logged already is still captured by capture_logs."""
    log = get_logger("in-use")
    log.info("first")
    with structlog.testing.capture_logs() as events:
        log.info("second")
    assert [event["event"] for event in events] == ["second"]


def test_reconfiguring_reaches_loggers_already_in_use() -> None:
    """A logger that has logged already follows a later configure_logging."""
    configure_logging("first-service", json=True, stream=io.StringIO())
    log = get_logger("in-use")
    log.info("first")
    second = io.StringIO()
    configure_logging("second-service", json=True, stream=second)
    log.info("second")
    assert only_line(second)["service"] == "second-service"


def test_positional_arguments_are_formatted_then_redacted(stream: io.StringIO) -> None:
    """structlog %-style arguments are interpolated before redaction sees the event."""
    get_logger("test").info("dialing %s", f"postgresql://u:Positional-Pw@{HOST}/app")
    assert only_line(stream)["event"] == f"dialing postgresql://u:{REDACTED}@{HOST}/app"


def test_structlog_testing_sees_events_before_redaction() -> None:
    """structlog.testing.capture_logs records events as emitted, for asserting on fields."""
    with structlog.testing.capture_logs() as events:
        get_logger("test").info("rotated", kid="k1", removed_keys=2)
    assert events == [{"event": "rotated", "kid": "k1", "removed_keys": 2, "log_level": "info"}]


def test_short_registered_values_are_ignored(stream: io.StringIO) -> None:
    """Values under six characters are not registered, so common words stay readable."""
    register_secret("admin")
    get_logger("test").info("admin signed in")
    assert only_line(stream)["event"] == "admin signed in"


def test_registered_secret_is_redacted_url_encoded(stream: io.StringIO) -> None:
    """A registered secret is also found in its percent-encoded form, as DSNs carry it."""
    secret = f"p@ss w/rd {uuid.uuid4().hex}"
    register_secret(secret)
    get_logger("test").info(f"redirect to /login?next={quote(secret, safe='')}")
    assert quote(secret, safe="") not in stream.getvalue()
    assert only_line(stream)["event"] == f"redirect to /login?next={REDACTED}"


@dataclasses.dataclass
class _Note:
    text: str


@pytest.mark.parametrize(
    "render",
    [
        pytest.param(lambda secret: _Note(secret), id="repr-escaped"),
        pytest.param(lambda secret: json.dumps({"note": secret}), id="json-escaped"),
    ],
)
def test_registered_secret_is_redacted_escaped(
    stream: io.StringIO, render: Callable[[str], object]
) -> None:
    """A registered secret is also found where repr() or JSON escaped its characters."""
    secret = f"C:\\vault\\é'{uuid.uuid4().hex}"
    register_secret(secret)
    get_logger("test").info("loaded", value=render(secret))
    value = only_line(stream)["value"]
    assert uuid.UUID(secret[-32:]).hex not in value
    assert REDACTED in value


def test_register_secret_is_thread_safe(stream: io.StringIO) -> None:
    """Secrets registered concurrently from many threads are all redacted."""
    secrets = [f"thread-secret-{uuid.uuid4().hex}" for _ in range(200)]

    def register_all(chunk: list[str]) -> None:
        for secret in chunk:
            register_secret(secret)

    workers = [threading.Thread(target=register_all, args=(secrets[i::8],)) for i in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    get_logger("test").info(" ".join(secrets))
    assert only_line(stream)["event"] == " ".join([REDACTED] * len(secrets))


def test_prose_about_bearer_tokens_is_kept(stream: io.StringIO) -> None:
    """'bearer token' in a message is prose, not a credential, and stays readable."""
    get_logger("test").info("renewing bearer token before expiry")
    assert only_line(stream)["event"] == "renewing bearer token before expiry"


@settings(deadline=None)
@given(password=st.text(st.characters(codec="utf-8"), min_size=8))
def test_url_encoded_dsn_password_never_rendered(password: str) -> None:
    """Any password, URL-encoded into a postgresql:// DSN, is absent from the rendered line."""
    encoded = quote(password, safe="")
    expected = f"connecting to postgresql://u:{REDACTED}@{HOST}/db"
    # A password that is part of the expected text itself (say "REDACTED") proves nothing.
    assume(encoded not in expected)
    buffer = _configured_buffer()
    get_logger("test").info(f"connecting to postgresql://u:{encoded}@{HOST}/db")
    event = only_line(buffer)["event"]
    assert encoded not in event
    assert event == expected


@settings(deadline=None)
@given(password=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=8))
def test_raw_dsn_password_never_rendered(password: str) -> None:
    """A password pasted into a DSN without encoding (even with @ / : #) is still removed."""
    expected = f"connecting to postgresql://u:{REDACTED}@{HOST}/db"
    assume(password not in expected)
    buffer = _configured_buffer()
    get_logger("test").info(f"connecting to postgresql://u:{password}@{HOST}/db")
    event = only_line(buffer)["event"]
    assert password not in event
    assert event == expected
