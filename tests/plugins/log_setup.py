"""pytest plugin: every test process logs through sevvo's real pipeline (with redaction)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from sevvo.runtime.logs import configure_logging


def configure_test_logging() -> None:
    """JSON lines on stderr, as in production, so pytest shows them only for failing tests."""
    configure_logging("tests", level="INFO", json=True, stream=sys.stderr)


@pytest.fixture(scope="session", autouse=True)
def _production_logging() -> None:
    configure_test_logging()


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """Each test ends with the suite's logging back: an in-process command's ``main`` (the
    migrate command's, at SEVVO_LOG_LEVEL=error) reconfigures the process's logging, and a
    later test in the same worker then saw no INFO or WARNING line at all."""
    yield
    configure_test_logging()
