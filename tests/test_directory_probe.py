"""The agent's side of a Parquet directory connection: SEVVO_AGENT_FILE_ROOTS and the test
that decides whether the agent may and can write the directory (agent/directory_probe.py)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from agent.config import AgentConfig, parse_file_roots
from agent.directory_probe import DirectoryUnusable, probe_directory, usable_directory
from sevvo.runtime import deployment_token
from sevvo.runtime.config import ConfigError
from sevvo.workflows.v1 import workflows_pb2

VAR = "SEVVO_AGENT_FILE_ROOTS"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An allowed root, with a directory inside it."""
    (tmp_path / "root" / "lake").mkdir(parents=True)
    return tmp_path / "root"


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "roots"),
    [
        ("", ()),
        ("/data", (Path("/data"),)),
        ("/data:/mnt/lake", (Path("/data"), Path("/mnt/lake"))),
        ("/data, /mnt/lake,", (Path("/data"), Path("/mnt/lake"))),
        ("/data:/data", (Path("/data"),)),
    ],
    ids=["empty", "one", "colons", "commas-and-spaces", "repeated"],
)
def test_roots_are_separated_by_colons_or_commas(value: str, roots: tuple[Path, ...]) -> None:
    """Either separator; empty entries and repeats are dropped; empty means none."""
    assert parse_file_roots(VAR, value) == roots


@pytest.mark.parametrize("value", ["data", "/data/../etc", "/data/", "/da\x00ta"])
def test_a_bad_root_fails_at_start_naming_the_variable(value: str) -> None:
    """Relative, '..', not normalised or with a control character: ConfigError naming it."""
    with pytest.raises(ConfigError) as caught:
        parse_file_roots(VAR, value)
    assert VAR in str(caught.value)


def test_agent_config_carries_the_roots_and_defaults_to_none() -> None:
    """AgentConfig.load: no variable, no directory allowed."""
    token = deployment_token.wrap(
        deployment_token.DeploymentCredentials(
            "0b0e7a7e-0000-4000-8000-000000000001", deployment_token.new_secret()
        )
    )
    base = {
        "SEVVO_DEPLOYMENT_TOKEN": token,
        "SEVVO_CONTROL_PLANE_ENDPOINT": "cp.example",
        "SEVVO_TEMPORAL_ADDRESS": "temporal.example",
    }
    assert AgentConfig.load(base).file_roots == ()
    assert AgentConfig.load({**base, VAR: "/data/lake"}).file_roots == (Path("/data/lake"),)


# --- which directories are usable --------------------------------------------------------------


def test_a_directory_under_a_root_or_the_root_itself_is_usable(root: Path) -> None:
    """The resolved path is returned for the root and for a directory below it."""
    assert usable_directory(str(root / "lake"), [root]) == os.path.realpath(root / "lake")
    assert usable_directory(str(root), [root]) == os.path.realpath(root)


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("no-roots", "SEVVO_AGENT_FILE_ROOTS is empty"),
        ("outside", "outside the roots"),
        ("prefix-sibling", "outside the roots"),
        ("link-out", "outside the roots"),
        ("missing", "does not exist"),
        ("file", "not a directory"),
        ("relative", "absolute"),
    ],
)
def test_an_unusable_directory_says_which_rule_failed(
    root: Path, tmp_path: Path, case: str, says: str
) -> None:
    """Each refusal raises DirectoryUnusable naming the rule, never the path."""
    roots: list[Path] = [root]
    outside = tmp_path / "outside"
    outside.mkdir()
    if case == "no-roots":
        path, roots = str(root / "lake"), []
    elif case == "outside":
        path = str(outside)
    elif case == "prefix-sibling":
        # "/x/root-2" starts with "/x/root" as a string, not as a directory.
        (tmp_path / "root-2").mkdir()
        path = str(tmp_path / "root-2")
    elif case == "link-out":
        (root / "escape").symlink_to(outside, target_is_directory=True)
        path = str(root / "escape")
    elif case == "missing":
        path = str(root / "nope")
    elif case == "file":
        (root / "f").write_text("x")
        path = str(root / "f")
    else:
        path = "lake"
    with pytest.raises(DirectoryUnusable) as caught:
        usable_directory(path, roots)
    assert says in str(caught.value)
    assert str(tmp_path) not in str(caught.value)


def test_a_link_from_outside_into_a_root_is_refused_as_written(root: Path, tmp_path: Path) -> None:
    """The path must lie under a root as written too, not only once resolved."""
    (tmp_path / "into").symlink_to(root / "lake", target_is_directory=True)
    with pytest.raises(DirectoryUnusable):
        usable_directory(str(tmp_path / "into"), [root])


def test_a_root_that_is_a_link_is_followed(root: Path, tmp_path: Path) -> None:
    """A root given through a link (a mount path alias) allows what it points to."""
    alias = tmp_path / "alias"
    alias.symlink_to(root, target_is_directory=True)
    assert usable_directory(str(alias / "lake"), [alias]) == os.path.realpath(root / "lake")


# --- the credential test ------------------------------------------------------------------------


def test_the_test_writes_and_removes_a_scratch_file(root: Path) -> None:
    """TEST_CATEGORY_OK, and the directory is left as it was."""
    result = asyncio.run(probe_directory(str(root / "lake"), [root]))
    assert result.category == workflows_pb2.TEST_CATEGORY_OK
    assert list((root / "lake").iterdir()) == []


def test_an_unusable_directory_is_directory_unusable_with_the_hint(root: Path) -> None:
    """DIRECTORY_UNUSABLE; the message is the catalogue's, then the rule that failed."""
    result = asyncio.run(probe_directory(str(root / "nope"), [root]))
    assert result.category == workflows_pb2.TEST_CATEGORY_DIRECTORY_UNUSABLE
    assert result.message.startswith("directory unusable:")
    assert "does not exist" in result.message


_PROBE_AS_NOBODY = """
import asyncio, os, sys
import concurrent.futures.thread
from agent.directory_probe import probe_directory
# Imported first: the interpreter's own files may be out of nobody's reach.
os.setgid(65534)
os.setuid(65534)
result = asyncio.run(probe_directory(sys.argv[1], [sys.argv[2]]))
print(result.category, result.message, sep="\\n")
"""


def test_a_directory_the_agent_cannot_write_is_directory_unusable() -> None:
    """A read-only directory under a root: the scratch file cannot be created. Root writes
    anywhere, so as root (CI) the probe runs in a child that has become nobody, as an agent
    runs unprivileged in its pod."""
    base = Path(tempfile.mkdtemp(prefix="sevvo-probe-"))  # 0700: opened up for nobody below
    try:
        base.chmod(0o755)
        locked = base / "locked"
        locked.mkdir(mode=0o555)
        locked.chmod(0o555)
        if os.geteuid() == 0:
            done = subprocess.run(
                [sys.executable, "-c", _PROBE_AS_NOBODY, str(locked), str(base)],
                capture_output=True,
                text=True,
                check=True,
                cwd=Path(__file__).resolve().parent.parent,
            )
            category, message = done.stdout.rstrip("\n").split("\n", 1)
        else:
            result = asyncio.run(probe_directory(str(locked), [base]))
            category, message = str(result.category), result.message
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert int(category) == workflows_pb2.TEST_CATEGORY_DIRECTORY_UNUSABLE
    assert "cannot create a file there (EACCES)" in message
