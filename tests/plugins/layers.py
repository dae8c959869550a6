"""pytest plugin: which layer each test ran in, computed from what it and its fixtures started.

DESIGN.md's "Tests in layers" wants most rules tested without servers. To count, not guess,
this plugin records what gets started while a fixture is set up or a test runs: an
EmbeddedPostgres, a Temporal dev server or test environment, a gRPC server, an agent process,
a service process. Each test's layer follows from the union over its fixture closure and its
own body:

- ``e2e``: an agent, or Temporal and gRPC servers together (the whole stack);
- ``workflow``: Temporal (a dev server or temporalio's WorkflowEnvironment), no gRPC server;
- ``servers``: a gRPC server (in process, or a service process), no Temporal;
- ``domain``: PostgreSQL only;
- ``unit``: nothing started.

The recording wraps the start methods and calls straight through; nothing is replaced. The
counts and time per layer close the terminal summary (under xdist too: each report carries its
layer in ``user_properties``).
"""

from __future__ import annotations

import functools
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Generator, Iterable
from typing import Any

import grpc
import pytest
from temporalio.testing import WorkflowEnvironment

from devstack.agent_process import AgentProcess
from devstack.postgres import EmbeddedPostgres
from devstack.temporal import TemporalDevServer

LAYERS = ("unit", "domain", "servers", "workflow", "e2e")
# Fixtures whose servers may come from outside the test process (SEVVO_TEST_PG_DSN, Docker).
_FIXTURE_KINDS = {"pg_server_url": {"postgres"}}
# ``python -m <module>`` processes and what each one serves.
_MODULE_KINDS = {
    "agent": {"agent"},
    "devstack": {"agent", "temporal", "grpc", "postgres"},
    "services": {"grpc"},
}

_started: set[str] = set()
_fixture_kinds: dict[int, set[str]] = {}
_test_kinds: dict[str, set[str]] = defaultdict(set)


def layer_of(kinds: Iterable[str]) -> str:
    """The layer of a test that started (or used fixtures that started) ``kinds``."""
    found = set(kinds)
    if "agent" in found or {"temporal", "grpc"} <= found:
        return "e2e"
    if "temporal" in found:
        return "workflow"
    if "grpc" in found:
        return "servers"
    if "postgres" in found:
        return "domain"
    return "unit"


def _recording(kind: str, start: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(start)
    def started(*args: Any, **kwargs: Any) -> Any:
        _started.add(kind)
        return start(*args, **kwargs)

    return started


def process_kinds(args: Any) -> set[str]:
    """What a process started with ``args`` serves, when it is one of ours (``python -m``)."""
    argv = [str(a) for a in args] if isinstance(args, list | tuple) else []
    if "-m" not in argv[:-1]:
        return set()
    module = argv[argv.index("-m") + 1].split(".")[0]
    return _MODULE_KINDS.get(module, set())


def _install() -> None:
    EmbeddedPostgres.start = _recording("postgres", EmbeddedPostgres.start)  # type: ignore[method-assign]
    TemporalDevServer.start = _recording("temporal", TemporalDevServer.start)  # type: ignore[method-assign]
    AgentProcess.start = _recording("agent", AgentProcess.start)  # type: ignore[method-assign]
    grpc.aio.server = _recording("grpc", grpc.aio.server)
    start_local = WorkflowEnvironment.start_local.__func__  # type: ignore[attr-defined]
    WorkflowEnvironment.start_local = classmethod(_recording("temporal", start_local))  # type: ignore[assignment]
    popen_init = subprocess.Popen.__init__

    @functools.wraps(popen_init)
    def recording_init(self: Any, args: Any, *rest: Any, **kwargs: Any) -> None:
        _started.update(process_kinds(args))
        popen_init(self, args, *rest, **kwargs)

    subprocess.Popen.__init__ = recording_init  # type: ignore[method-assign]


_install()


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any]) -> Generator[None]:
    """Remembers what this fixture started (its dependencies were set up before it)."""
    before = set(_started)
    _started.clear()
    try:
        yield
    finally:
        kinds = _fixture_kinds.setdefault(id(fixturedef), set())
        kinds.update(_started)
        kinds.update(_FIXTURE_KINDS.get(fixturedef.argname, set()))
        _started.clear()
        _started.update(before)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None]:
    """Remembers what the test's own body started."""
    _started.clear()
    try:
        yield
    finally:
        _test_kinds[item.nodeid].update(_started)
        _started.clear()


def _item_layer(item: pytest.Item) -> str:
    kinds = set(_test_kinds.get(item.nodeid, set()))
    info = getattr(item, "_fixtureinfo", None)
    if info is not None:
        for name in item.fixturenames:  # type: ignore[attr-defined]
            definitions = info.name2fixturedefs.get(name)
            if definitions:
                kinds.update(_fixture_kinds.get(id(definitions[-1]), set()))
    return layer_of(kinds)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None]:
    """Puts the test's layer on its call report, where xdist carries it to the controller."""
    yield
    if call.when == "call":
        item.user_properties.append(("layer", _item_layer(item)))


class LayerTally:
    """Test counts and seconds per layer, from the reports the controller receives."""

    def __init__(self) -> None:
        self.layers: dict[str, str] = {}
        self.seconds: dict[str, float] = defaultdict(float)
        self.started = time.monotonic()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Attributes every phase's duration to the test; its call report names the layer."""
        self.seconds[report.nodeid] += report.duration
        for key, value in report.user_properties:
            if key == "layer":
                self.layers[report.nodeid] = str(value)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Prints one line per layer: tests and the seconds their phases took."""
        if not self.layers:
            return
        counts = Counter(self.layers.values())
        seconds: dict[str, float] = defaultdict(float)
        for nodeid, layer in self.layers.items():
            seconds[layer] += self.seconds.get(nodeid, 0.0)
        terminalreporter.section("tests per layer (tests/plugins/layers.py)")
        for layer in LAYERS:
            terminalreporter.write_line(
                f"{layer:>9}: {counts.get(layer, 0):5d} tests {seconds.get(layer, 0.0):9.1f} s"
            )


def pytest_configure(config: pytest.Config) -> None:
    """Registers the tally (the xdist controller's, or the single process's)."""
    config.pluginmanager.register(LayerTally(), "sevvo-layer-tally")


__all__ = ["LAYERS", "layer_of", "process_kinds"]
