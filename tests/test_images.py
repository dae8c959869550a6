"""The production images' contents, from the lists scripts/build_images.py builds them from.

The agent image crosses the trust boundary into the customer's cluster: it must hold no
control-plane code, and everything it imports must be in it. Both are decided here on the
same ``image_files`` the build copies, without building an image (make images-check inspects
a built one).
"""

from __future__ import annotations

import re
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from scripts.image_contents import (
    AGENT,
    CONTROL_PLANE,
    IMAGES,
    PACKAGE_DATA,
    ROOT,
    ImageSpec,
    image_files,
    import_closure,
    module_name,
)

CONTROL_PLANE_ONLY = ("services", "console", "devstack", "cli", "bench", "tests", "scripts")


def _modules(spec: ImageSpec) -> set[str]:
    return {module_name(p) for p in image_files(spec) if p.suffix == ".py"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_agent_image_holds_no_control_plane_code() -> None:
    """No file of services/, console/, devstack/, cli/, bench/, tests/ or scripts/ is in the
    agent image."""
    tops = {path.parts[0] for path in image_files(AGENT)}
    assert tops == {"agent", "sevvo", "sevvo_client"}
    assert not tops & set(CONTROL_PLANE_ONLY)


def test_agent_entry_point_reaches_its_runtime_through_imports() -> None:
    """The import walk from agent/__main__.py finds the worker, the sidecar and the runtime."""
    closure = import_closure(["agent.__main__"])
    assert {"agent.worker", "agent.sidecar", "sevvo.runtime.config", "sevvo_client"} <= (
        closure.first_party
    )
    assert {"temporalio", "psycopg", "grpc"} <= {n.partition(".")[0] for n in closure.third_party}


def test_import_walk_sees_a_lazy_import_of_control_plane_code(tmp_path: Path) -> None:
    """A function-level import of services/ from agent/ shows up in the closure."""
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent/__init__.py").write_text("")
    (tmp_path / "agent/__main__.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import devstack.stack\n"
        "def run():\n    from services.auth import store\n"
    )
    for rel in ("services/__init__.py", "services/auth/__init__.py", "services/auth/store.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    closure = import_closure(["agent.__main__"], root=tmp_path)
    assert "services.auth.store" in closure.first_party
    # Type-only imports never run, so they put nothing in the image.
    assert not any(m.startswith("devstack") for m in closure.first_party)


@pytest.mark.parametrize("spec", IMAGES.values(), ids=list(IMAGES))
def test_every_module_an_image_imports_is_in_the_image(spec: ImageSpec) -> None:
    """The import closure of everything an image ships stays inside what it ships."""
    shipped = _modules(spec)
    closure = import_closure(shipped)
    assert closure.first_party - shipped == set()


def test_control_plane_image_ships_the_migrations() -> None:
    """The services' SQL migrations (package data) are copied with their code."""
    files = image_files(IMAGES["sevvo-control-plane"])
    assert any(p.parts[0] == "services" and p.suffix == ".sql" for p in files)
    assert not {p.parts[0] for p in files} & {"agent", "sevvo_client", "devstack", "cli"}


def test_control_plane_image_ships_the_console_with_its_templates_and_static_files() -> None:
    """`python -m console` runs from the control-plane image: its code, every template and
    static file it serves, and what its entry point imports are all in it."""
    files = {str(p) for p in image_files(CONTROL_PLANE)}
    for directory in ("templates", "static"):
        folder = ROOT / "console" / directory
        shipped = {str(p.relative_to(ROOT)) for p in folder.iterdir() if p.is_file()}
        assert shipped and shipped <= files
    assert {"console/__main__.py", "console/server.py", "console/app.py"} <= files
    closure = import_closure(["console.__main__"])
    assert {"console.server", "console.app", "console.backend"} <= closure.first_party
    assert closure.first_party - _modules(CONTROL_PLANE) == set()
    assert {"starlette", "uvicorn", "jinja2"} <= {
        name.partition(".")[0] for name in closure.third_party
    }


def test_image_package_data_is_pyprojects() -> None:
    """Each package's data files an image copies are the ones the distribution ships."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = pyproject["tool"]["setuptools"]["package-data"]
    for package, patterns in PACKAGE_DATA.items():
        assert tuple(declared[package]) == patterns
    assert {name for name in declared if name != "*"} <= set(PACKAGE_DATA)


@cache
def _module_owners() -> dict[str, frozenset[str]]:
    """Installed module or package (``google.rpc``) -> the distributions that ship files in it.

    A namespace package (``google``) has several owners; its subpackages have one each.
    """
    owners: dict[str, set[str]] = {}
    for dist in metadata.distributions():
        name = _normalise(dist.metadata["Name"])
        for file in dist.files or ():
            parts = file.parts
            if not parts or not parts[-1].endswith((".py", ".so")) or ".." in parts:
                continue
            stem = parts[-1].split(".")[0]
            dotted = [*parts[:-1], stem] if stem != "__init__" else list(parts[:-1])
            for i in range(1, len(dotted) + 1):
                owners.setdefault(".".join(dotted[:i]), set()).add(name)
    return {module: frozenset(names) for module, names in owners.items()}


def _requirement_closure(requirements: tuple[str, ...]) -> set[str]:
    """Every distribution pip installs for requirements (their extras' markers honoured)."""
    found: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = _normalise(req.name)
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in found:
            continue
        found.update({key, name})
        for text in metadata.requires(req.name) or ():
            dep = Requirement(text)
            extras = ["", *sorted(req.extras)]
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in extras):
                todo.append(dep)
    return {n for n in found if "[" not in n}


@pytest.mark.parametrize("spec", IMAGES.values(), ids=list(IMAGES))
def test_every_third_party_import_is_installed_in_the_image(spec: ImageSpec) -> None:
    """Each third-party module the image's code imports comes from a requirement it installs."""
    installed = _requirement_closure(spec.requirements)
    owners = _module_owners()
    closure = import_closure(_modules(spec))
    unowned = []
    for name in sorted(closure.third_party):
        parts = name.split(".")
        # `from grpc import aio` reads as grpc.aio; an attribute falls back to its module.
        while parts and ".".join(parts) not in owners:
            parts.pop()
        owner = owners.get(".".join(parts), frozenset())
        if not owner & installed:
            unowned.append(f"{name} ({', '.join(sorted(owner)) or 'not installed here'})")
    assert unowned == []


def test_image_requirements_are_pinned() -> None:
    """Every distribution an image installs has a version in constraints.txt."""
    pins = {
        _normalise(line.partition("==")[0])
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    for spec in IMAGES.values():
        assert _requirement_closure(spec.requirements) - pins == set()
