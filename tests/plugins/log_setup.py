"""pytest plugin: every test process logs through sevvo's real pipeline (with redaction)."""

from __future__ import annotations

import sys

import pytest

from sevvo.runtime.logs import configure_logging


def configure_test_logging() -> None:
    """JSON lines on stderr, as in production, so pytest shows them only for failing tests."""
    configure_logging("tests", level="INFO", json=True, stream=sys.stderr)


@pytest.fixture(scope="session", autouse=True)
def _production_logging() -> None:
    configure_test_logging()
