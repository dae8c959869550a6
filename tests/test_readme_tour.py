"""The README's tour, run as written, in order, in a shell, against a fresh `make dev` stack.

The commands come from README.md between the ``readme-tour`` markers, so an edit to the tour
is an edit to this test: a command added without a check here, or a checked command removed,
fails it.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack.processes import free_port
from tests.dev_launcher import (
    ROOT,
    Launcher,
    launcher_env,
    running_directory,
    wait_until_gone,
)

BEGIN = "<!-- readme-tour:begin"
END = "<!-- readme-tour:end -->"
# On a loaded 2-core machine the stack's first start alone has taken 36 s.
STACK_START_TIMEOUT = 120.0
TOUR_TIMEOUT = 120.0


def tour_commands(readme: str) -> list[str]:
    """The tour's commands: the one ``sh`` block between the markers, continuation lines
    joined, blank and comment lines dropped; each as written, comments included."""
    begin = readme.index(BEGIN)
    body = readme[begin : readme.index(END, begin)]
    blocks = re.findall(r"^```sh\n(.*?)^```$", body, flags=re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, "the tour is one ```sh block between its markers"
    commands: list[str] = []
    pending = ""
    for line in blocks[0].splitlines():
        pending += line + "\n"
        if line.endswith("\\"):
            continue
        if pending.strip() and not pending.lstrip().startswith("#"):
            commands.append(pending.rstrip("\n"))
        pending = ""
    assert not pending, "the tour ends in a continuation line"
    return commands


def _words(command: str) -> str:
    """The command without its comment and line breaks, for matching a check to it."""
    return " ".join(shlex.split(command, comments=True))


@dataclass
class Ran:
    """What one tour command did."""

    command: str
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """The command's output (JSON, since it goes to a pipe)."""
        return json.loads(self.stdout)


def _signed_in(ran: Ran) -> None:
    assert ran.json()["email"] == "admin@sevvo.dev"


def _dev_agent_active(ran: Ran) -> None:
    assert [(d["display_name"], d["state"]) for d in ran.json()["deployments"]] == [
        ("dev-agent", "active")
    ]


def _connected(ran: Ran) -> None:
    assert ran.json()["status"] == "connected", ran.stdout


def _dynamic_connected(ran: Ran) -> None:
    created = ran.json()
    assert (created["status"], created["credential_mode"]) == ("connected", "dynamic")


def _newest_customers(ran: Ran) -> None:
    preview = ran.json()
    assert preview["category"] == "ok"
    # The sample shop's rows are generated deterministically (devstack.demo_data).
    assert [row["name"] for row in preview["rows"]][:2] == ["Ada Hamilton", "John Hopper"]


def _as_minted_role(ran: Ran) -> None:
    (row,) = ran.json()["rows"]
    assert row["current_user"].startswith("sevvo_dyn_preview_")
    assert row["count"] == "400"


def _lease_revoked(ran: Ran) -> None:
    leases = ran.json()["leases"]
    assert [lease["state"] for lease in leases] == ["revoked"]
    assert leases[0]["role_name"].startswith("sevvo_dyn_preview_")


def _rotated(ran: Ran) -> None:
    run = ran.json()
    assert (run["kind"], run["state"], run["outcome_category"]) == (
        "root_rotation",
        "succeeded",
        "rotated",
    )


def _scheduled(ran: Ran) -> None:
    assert ran.json()["interval"] == f"{30 * 24 * 3600}s"  # Protobuf JSON of a Duration.


def _directory_connected(ran: Ran) -> None:
    created = ran.json()
    assert (created["type"], created["status"]) == ("parquet_directory", "connected")
    assert created["parquet_directory"]["path"].endswith("/.dev/lake")


def _model_created(ran: Ran) -> None:
    model = ran.json()
    assert model["name"] in ("orders", "orders-lake")
    assert model["destination_table"] == "analytics.orders"


def _synced(ran: Ran) -> None:
    run = ran.json()
    assert (run["kind"], run["state"], run["outcome_category"]) == ("sync", "succeeded", "ok")
    assert str(run["sync"]["rows"]) == "400", run  # the sample shop's orders


def _every_run_succeeded(ran: Ran) -> None:
    runs = ran.json()["runs"]
    assert {(run["kind"], run["state"]) for run in runs} == {
        ("credential_test", "succeeded"),
        ("preview", "succeeded"),
        ("root_rotation", "succeeded"),
        ("sync", "succeeded"),
    }


def _audited(ran: Ran) -> None:
    actions = {event["action"] for event in ran.json()["events"]}
    assert {"connection.create", "lease.revoke", "connection.root.rotate", "model.create"} <= (
        actions
    )


def _no_check(ran: Ran) -> None:
    del ran  # Exiting 0 is what this command has to show.


# Each tour command, by its words up to the first option value that varies, and what its
# output must show besides exit code 0.
CHECKS: dict[str, Callable[[Ran], None]] = {
    ". .dev/env": _no_check,
    "sevvo login --email admin@sevvo.dev": _signed_in,
    "sevvo deployments list": _dev_agent_active,
    "sevvo connections create --name shop ": _connected,
    "sevvo connections test shop": _connected,
    "sevvo preview shop select": _newest_customers,
    "sevvo connections create --name shop-dyn ": _dynamic_connected,
    "sevvo preview shop-dyn select current_user": _as_minted_role,
    "sevvo leases list --connection shop-dyn": _lease_revoked,
    "sevvo connections rotate-root shop-dyn": _rotated,
    "sevvo connections schedule-root-rotation shop-dyn --every 30d": _scheduled,
    "sevvo connections create --name warehouse ": _connected,
    "sevvo models create orders ": _model_created,
    "sevvo models sync orders ": _synced,
    "sevvo connections create --name lake ": _directory_connected,
    "sevvo models create orders-lake ": _model_created,
    "sevvo models sync orders-lake ": _synced,
    "sevvo runs list": _every_run_succeeded,
    "sevvo audit list --limit 30": _audited,
}


def _check_for(command: str) -> Callable[[Ran], None]:
    words = _words(command) + " "
    found = [check for prefix, check in CHECKS.items() if words.startswith(prefix)]
    assert len(found) == 1, f"no single check for the tour's command: {command}"
    return found[0]


def _script(commands: list[str], out: Path) -> str:
    """A POSIX sh script that runs each command as written, in one shell (so `. .dev/env`
    holds for the rest), each command's output in files of its own; it stops at the first
    command that fails."""
    parts = []
    for i, command in enumerate(commands):
        stdout, stderr, rc = (shlex.quote(str(out / f"{i}.{ext}")) for ext in ("out", "err", "rc"))
        # The closing brace on a line of its own: the command may end in a comment.
        parts.append(
            f"{{ {command}\n}} >{stdout} 2>{stderr} || {{ echo $? >{rc}; exit 1; }}\necho 0 >{rc}\n"
        )
    return "".join(parts)


def test_tour_commands_come_from_the_marked_block() -> None:
    """The extraction joins continuation lines and keeps every command of the block."""
    readme = (
        "intro\n```sh\nnot this\n```\n"
        f"{BEGIN} note -->\n```sh\n# comment\na --x 1 \\\n    --y 2  # why\n\nb\n```\n{END}\n"
    )
    assert tour_commands(readme) == ["a --x 1 \\\n    --y 2  # why", "b"]


def test_every_tour_command_has_a_check() -> None:
    """Every command of the tour in README.md is checked, and every check has its command."""
    commands = tour_commands((ROOT / "README.md").read_text())
    for command in commands:
        _check_for(command)
    used = {prefix for prefix in CHECKS for c in commands if (_words(c) + " ").startswith(prefix)}
    assert used == set(CHECKS)


@pytest.fixture
def work_dir() -> Iterator[Path]:
    """The directory `make dev` and the tour run in, as a checkout would be."""
    with running_directory("sevvo-tour-") as work:
        yield work


# A stack start and a dozen commands: more than the suite's default per-test timeout when the
# machine is loaded.
@pytest.mark.timeout(STACK_START_TIMEOUT + TOUR_TIMEOUT + 60)
def test_readme_tour_runs_as_written_on_a_fresh_dev_stack(work_dir: Path) -> None:
    """`make dev` in a fresh directory, then the README's tour in another shell, line by line:
    every command exits 0 and shows what the tour says; no secret reaches any output; the
    banner is not scrolled away by logs; Ctrl-C leaves nothing running."""
    commands = tour_commands((ROOT / "README.md").read_text())
    work = work_dir
    home = work / "home"
    home.mkdir()
    out = work / "tour-output"
    out.mkdir()
    # The launcher's default port may be taken by a `make dev` beside the test: any port;
    # the tour learns it from .dev/env, as a user does.
    env = launcher_env(SEVVO_GRPC_PORT=str(free_port()))
    with Launcher(work, env) as launcher:
        up_seconds = launcher.wait_until_up(timeout=STACK_START_TIMEOUT)
        children = launcher.descendants()
        banner_end = len(launcher.lines)
        started = time.monotonic()
        # A home of its own: the CLI's session goes to its config directory there.
        shell_env = launcher_env(HOME=str(home))
        shell_env.pop("XDG_CONFIG_HOME", None)
        finished = subprocess.run(
            ["sh", "-c", _script(commands, out)],
            cwd=work,
            env=shell_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TOUR_TIMEOUT,
            check=False,
        )
        tour_seconds = time.monotonic() - started
        ran = [
            Ran(
                command,
                int((out / f"{i}.rc").read_text()) if (out / f"{i}.rc").exists() else -1,
                (out / f"{i}.out").read_text() if (out / f"{i}.out").exists() else "",
                (out / f"{i}.err").read_text() if (out / f"{i}.err").exists() else "",
            )
            for i, command in enumerate(commands)
        ]
        for step in ran:
            assert step.exit_code == 0, (
                f"{step.command}\nexited {step.exit_code}\n{step.stdout}{step.stderr}"
                f"{finished.stderr}"
            )
            _check_for(step.command)(step)
        after_banner = launcher.lines[banner_end:]
        assert launcher.stop() == 0
        assert not wait_until_gone(children)

    state = work / ".dev"
    secrets = [
        (state / name).read_text().strip()
        for name in (
            "admin-password",
            "bootstrap-token",
            "dev-deployment-token",
            "shop/sevvo_reader-password",
            "shop/sevvo_minter-password",
        )
    ]
    shown = launcher.output + "".join(step.stdout + step.stderr for step in ran)
    shown += (state / "env").read_text()
    assert not [secret for secret in secrets if secret in shown]
    # The services logged every request of the tour, to the log file, not over the banner.
    assert '"event": "rpc"' in (state / "devstack.log").read_text()
    assert not [line for line in after_banner if line.lstrip().startswith("{")]
    print(f"stack up in {up_seconds:.1f} s, tour ran in {tour_seconds:.1f} s")
