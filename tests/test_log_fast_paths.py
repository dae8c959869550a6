"""The shortcuts that keep a log line cheap never let a secret through (sevvo.runtime.logs)."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from sevvo.runtime import logs
from sevvo.runtime.logs import REDACTED, configure_logging, get_logger, redact_text, register_secret
from tests.plugins.log_setup import configure_test_logging


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """JSON lines at INFO into a buffer; the suite's own setup is restored afterwards."""
    buffer = io.StringIO()
    configure_logging("fast-paths", level="INFO", json=True, stream=buffer)
    yield buffer
    structlog.contextvars.clear_contextvars()
    configure_test_logging()


def _lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


@given(st.text(max_size=5))
def test_text_shorter_than_six_characters_never_needs_redaction(text: str) -> None:
    """Short values skip redaction because no rule and no registered secret fits in them."""
    assert redact_text(text) == text


def test_a_secret_registered_after_a_value_was_cached_is_still_redacted(
    stream: io.StringIO,
) -> None:
    """A cached redaction is not reused once the registry has changed."""
    secret = f"late-{uuid.uuid4().hex}"
    value = f"connecting with {secret}"
    log = get_logger("test")
    log.info("before", detail=value)
    register_secret(secret)
    log.info("after", detail=value)
    before, after = _lines(stream)
    assert before["detail"] == value
    assert after["detail"] == f"connecting with {REDACTED}"


def test_a_key_registered_as_a_secret_after_use_is_redacted(stream: io.StringIO) -> None:
    """Keys are cached too, under the same rule."""
    key = f"k{uuid.uuid4().hex}"
    log = get_logger("test")
    log.info("before", **{key: 1})
    register_secret(key)
    log.info("after", **{key: 1})
    before, after = _lines(stream)
    assert key in before
    assert key not in stream.getvalue().splitlines()[1]
    assert after[REDACTED] == 1


class _Exploding:
    def __repr__(self) -> str:
        raise AssertionError("a filtered event was rendered")


def test_events_below_the_level_do_no_work() -> None:
    """At WARNING an info event is neither processed nor rendered, and enabled() says so."""
    buffer = io.StringIO()
    configure_logging("fast-paths", level="WARNING", json=True, stream=buffer)
    try:
        get_logger("test").info("dropped", value=_Exploding())
        assert not logs.enabled(logging.INFO) and logs.enabled(logging.WARNING)
        assert buffer.getvalue() == ""
    finally:
        configure_test_logging()


def test_structlog_and_stdlib_lines_share_one_stream_in_order(stream: io.StringIO) -> None:
    """structlog lines skip logging.Logger but land on the same stream, between stdlib ones."""
    logging.getLogger("grpc").warning("one")
    get_logger("test").info("two")
    logging.getLogger("psycopg").warning("three")
    assert [line["event"] for line in _lines(stream)] == ["one", "two", "three"]
    assert [line["logger"] for line in _lines(stream)] == ["grpc", "test", "psycopg"]
