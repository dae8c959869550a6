"""The layer a test is counted in follows from what it and its fixtures started."""

from __future__ import annotations

import pytest

from tests.plugins.layers import layer_of, process_kinds


@pytest.mark.parametrize(
    ("kinds", "layer"),
    [
        (set(), "unit"),
        ({"postgres"}, "domain"),
        ({"postgres", "grpc"}, "servers"),
        ({"temporal"}, "workflow"),
        ({"temporal", "postgres"}, "workflow"),
        ({"temporal", "grpc", "postgres"}, "e2e"),
        ({"agent"}, "e2e"),
    ],
)
def test_the_layer_is_the_highest_thing_started(kinds: set[str], layer: str) -> None:
    """An agent or the whole stack is e2e; Temporal alone a workflow test; and so down."""
    assert layer_of(kinds) == layer


@pytest.mark.parametrize(
    ("argv", "kinds"),
    [
        (["python", "-m", "agent"], {"agent"}),
        (["python", "-m", "services.auth"], {"grpc"}),
        (["python", "-m", "devstack"], {"agent", "temporal", "grpc", "postgres"}),
        (["python", "-m", "cli", "whoami"], set()),
        (["temporal", "server", "start-dev"], set()),
        ("python -m agent", set()),
    ],
)
def test_processes_are_known_by_the_module_they_run(argv: object, kinds: set[str]) -> None:
    """``python -m`` processes count by module; a client (the CLI) starts nothing."""
    assert process_kinds(argv) == kinds
