"""The documents a new user reads: every link they follow stays inside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "deploy").rglob("*.md")]
)
# [text](target) — not images' data, not in-page anchors.
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(document: Path) -> None:
    """A relative link names a file or folder of this repository (a clone has nothing
    beside it), and web links are https."""
    text = document.read_text()
    for target in _LINK.findall(text):
        if target.startswith("#"):
            continue
        if "://" in target:
            assert target.startswith("https://"), f"{document.name}: {target}"
            continue
        resolved = (document.parent / target.split("#", 1)[0]).resolve()
        assert resolved.is_relative_to(ROOT), f"{document.name}: {target} leaves the repository"
        assert resolved.exists(), f"{document.name}: {target} does not exist"


# A path into the repository named in the README's prose or code: a top-level folder of this
# repository, then more (not a glob or a <placeholder>).
_REPO_PATH = re.compile(
    r"(?<![\w./<>-])((?:agent|bench|cli|deploy|devstack|docs|protos|scripts|services|sevvo|tests)"
    r"/[\w./-]*\w)(?![\w*<>])"
)


def test_every_repository_path_the_readme_names_exists() -> None:
    """A path the README mentions without a link (a module, a guide) is in the repository
    too, so a clone's reader can follow it; nothing points at the team's shared folder."""
    text = (ROOT / "README.md").read_text()
    named = set(_REPO_PATH.findall(text))
    assert "docs/design.md" in named
    assert not [path for path in sorted(named) if not (ROOT / path).exists()]
    assert not re.findall(r"\bshared/|(?<!docs/)\bDESIGN\.md", text)
