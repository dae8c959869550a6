"""Naming things on the command line: a full id, a unique id prefix, or a name.

List tables show ids by their first 8 characters; every command that takes an id takes that
prefix (at least 4 characters), the full id, or the thing's name (a user's email), as long as
it picks out exactly one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from cli.client import CALL_TIMEOUT, Cli
from cli.errors import CliError, ExitCode, usage_error
from cli.inputs import PageT, pages
from cli.output import UUID_PATTERN
from sevvo.auth.v1 import deployments_pb2, users_pb2, workloads_pb2
from sevvo.connections.v1 import connections_pb2 as cpb
from sevvo.orchestrator.v1 import models_pb2 as mpb
from sevvo.orchestrator.v1 import orchestrator_pb2 as opb

_PREFIX = re.compile(r"[0-9a-f][0-9a-f-]{3,35}")
MIN_PREFIX = 4
# Runs are many; a prefix is looked for among the newest this many.
RUNS_SEARCHED = 1000


def resolve(kind: str, text: str, candidates: Callable[[], Iterable[tuple[str, str]]]) -> str:
    """The one id ``text`` names among ``candidates`` ((id, name) pairs), fetched only when
    ``text`` is not a full id. A name that matches exactly wins over an id prefix."""
    if UUID_PATTERN.fullmatch(text.lower()):
        return text.lower()
    found = list(candidates())
    named = [id_ for id_, name in found if name and name == text]
    if len(named) == 1:
        return named[0]
    if named:
        raise usage_error(f"{len(named)} {kind}s are named {text!r}: give the id instead")
    if _PREFIX.fullmatch(text.lower()):
        started = [id_ for id_, _ in found if id_.startswith(text.lower())]
        if len(started) == 1:
            return started[0]
        if started:
            raise usage_error(
                f"{len(started)} {kind}s have ids starting {text!r}: give more characters"
            )
    raise CliError(
        f"no {kind} has the id, id prefix or name {text!r} (ids: at least {MIN_PREFIX} characters)",
        exit_code=ExitCode.NOT_FOUND,
        reason="NOT_FOUND",
    )


def _everything(
    fetch: Callable[[str], PageT], pairs: Callable[[PageT], Iterable[tuple[str, str]]]
) -> Callable[[], Iterable[tuple[str, str]]]:
    """The (id, name) pairs of every page of a List call, fetched when asked for."""
    return lambda: (pair for page in pages(fetch) for pair in pairs(page))


def _connections(cli: Cli) -> Callable[[], Iterable[tuple[str, str]]]:
    stub = cli.connections()
    return _everything(
        lambda token: stub.ListConnections(
            cpb.ListConnectionsRequest(page_size=500, page_token=token), timeout=CALL_TIMEOUT
        ),
        lambda page: ((c.id, c.display_name) for c in page.connections),
    )


def _deployments(cli: Cli) -> Callable[[], Iterable[tuple[str, str]]]:
    stub = cli.deployments()
    return _everything(
        lambda token: stub.ListDeployments(
            deployments_pb2.ListDeploymentsRequest(page_size=500, page_token=token),
            timeout=CALL_TIMEOUT,
        ),
        lambda page: ((d.id, d.display_name) for d in page.deployments),
    )


def _users(cli: Cli) -> Callable[[], Iterable[tuple[str, str]]]:
    stub = cli.users()
    return _everything(
        lambda token: stub.ListUsers(
            users_pb2.ListUsersRequest(page_size=500, page_token=token), timeout=CALL_TIMEOUT
        ),
        lambda page: ((u.id, u.email) for u in page.users),
    )


def _any_of(
    *sources: Callable[[], Iterable[tuple[str, str]]],
) -> Callable[[], Iterable[tuple[str, str]]]:
    return lambda: (pair for source in sources for pair in source())


def actor(cli: Cli, text: str) -> tuple[str, str]:
    """(actor id, actor email) for ``sevvo audit list --actor``: an email is matched by the
    server as it is (so a deleted user's records are found too); anything else is a user or
    deployment by id, id prefix or name, or ``sevvo`` for the control plane."""
    if "@" in text:
        return "", text
    if text == "sevvo":
        return text, ""
    return resolve("user or deployment", text, _any_of(_users(cli), _deployments(cli))), ""


def target_id(cli: Cli, text: str) -> str:
    """A target for ``sevvo audit list --target``: a connection, user or deployment by id,
    id prefix or name; other text (a workflow id, a payload key id, a deleted thing's full id)
    is the target id as the log records it."""
    try:
        return resolve(
            "connection, user or deployment",
            text,
            _any_of(_connections(cli), _users(cli), _deployments(cli)),
        )
    except CliError as error:
        # An id prefix that names nothing is a mistake; other names may be ids of their own.
        if error.exit_code != ExitCode.NOT_FOUND or _PREFIX.fullmatch(text.lower()):
            raise
        return text


def connection_id(cli: Cli, text: str) -> str:
    """A connection by id, id prefix or name."""
    return resolve("connection", text, _connections(cli))


def deployment_id(cli: Cli, text: str) -> str:
    """A deployment by id, id prefix or name."""
    return resolve("deployment", text, _deployments(cli))


def workload_id(cli: Cli, text: str) -> str:
    """A workload by id, id prefix or name."""
    stub = cli.workloads()
    return resolve(
        "workload",
        text,
        _everything(
            lambda token: stub.ListWorkloads(
                workloads_pb2.ListWorkloadsRequest(page_size=500, page_token=token),
                timeout=CALL_TIMEOUT,
            ),
            lambda page: ((w.id, w.display_name) for w in page.workloads),
        ),
    )


def model_id(cli: Cli, text: str) -> str:
    """A model by id, id prefix or name."""
    stub = cli.models()
    return resolve(
        "model",
        text,
        _everything(
            lambda token: stub.ListModels(
                mpb.ListModelsRequest(page_size=500, page_token=token), timeout=CALL_TIMEOUT
            ),
            lambda page: ((m.id, m.name) for m in page.models),
        ),
    )


def user_id(cli: Cli, text: str) -> str:
    """A user by id, id prefix or email."""
    return resolve("user", text, _users(cli))


def run_id(cli: Cli, text: str) -> str:
    """A run by id, or id prefix among the newest runs (runs have no names)."""
    stub = cli.orchestrator()

    def newest() -> Iterable[tuple[str, str]]:
        seen = 0
        for page in pages(
            lambda token: stub.ListRuns(
                opb.ListRunsRequest(page_size=500, page_token=token), timeout=CALL_TIMEOUT
            )
        ):
            for run in page.runs:
                yield run.id, ""
            seen += len(page.runs)
            if seen >= RUNS_SEARCHED:
                return

    return resolve("run", text, newest)
