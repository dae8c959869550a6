"""The ``sevvo`` command as a subprocess, for what needs no control plane: version, completion."""

from __future__ import annotations

import importlib.metadata
import os

import pytest

from tests.cli_runner import run_sevvo


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEVVO_", "_SEVVO_"))}
    env.update(extra)
    return env


def test_version_prints_the_installed_version() -> None:
    """--version prints the package's version and exits 0, before any session is needed."""
    result = run_sevvo(("--version",), _env(), "", timeout=60)
    assert result.code == 0
    assert result.stdout.strip() == f"sevvo {importlib.metadata.version('sevvo')}"


@pytest.mark.parametrize(
    ("words", "cword", "expected", "unexpected"),
    [
        ("sevvo conn", "1", {"connections"}, {"users"}),
        ("sevvo connections ", "2", {"create", "get", "update", "list", "delete"}, {"login"}),
        ("sevvo deployments re", "2", {"revoke"}, {"create"}),
    ],
    ids=["group", "commands", "prefix"],
)
def test_bash_completion_offers_the_commands(
    words: str, cword: str, expected: set[str], unexpected: set[str]
) -> None:
    """The completion protocol bash's script uses answers with matching commands only."""
    env = _env(_SEVVO_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=cword)
    result = run_sevvo((), env, "", timeout=60)
    assert result.code == 0
    offered = set(result.stdout.split())
    assert expected <= offered
    assert not unexpected & offered


def test_show_completion_prints_a_bash_script() -> None:
    """--show-completion bash prints the script a user sources or installs."""
    result = run_sevvo(("--show-completion", "bash"), _env(), "", timeout=60)
    assert result.code == 0
    assert "_SEVVO_COMPLETE=complete_bash" in result.stdout
    assert "complete " in result.stdout
