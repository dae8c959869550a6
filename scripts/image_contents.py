"""What goes into each production image: the one definition the build and its tests share.

scripts/build_images.py copies exactly ``image_files(spec)`` into an image and installs exactly
``spec.requirements`` (pinned by constraints.txt); tests/test_images.py checks the same lists,
so the build and the test cannot disagree about what the agent image holds.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Every top-level package of this repository; an import of any other name is third-party
# (or the standard library).
FIRST_PARTY = frozenset(
    {
        "sevvo",
        "sevvo_client",
        "services",
        "agent",
        "console",
        "devstack",
        "cli",
        "bench",
        "tests",
        "scripts",
    }
)
# Files a running process reads: code and the SQL migrations shipped as package data. Type
# stubs (.pyi) and py.typed serve type checkers only.
RUNTIME_SUFFIXES = (".py", ".sql")
# Further package data a process reads, by package: pyproject.toml's
# [tool.setuptools.package-data] patterns (tests/test_images.py keeps the two equal).
PACKAGE_DATA: dict[str, tuple[str, ...]] = {"console": ("templates/*.html", "static/*")}


@dataclass(frozen=True)
class ImageSpec:
    """One production image: which of this repository's packages and which dependencies."""

    name: str
    description: str
    # Top-level packages copied whole (their runtime files, see RUNTIME_SUFFIXES).
    packages: tuple[str, ...]
    # Distributions installed from PyPI, with extras; versions come from constraints.txt.
    requirements: tuple[str, ...]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]


AGENT = ImageSpec(
    name="sevvo-agent",
    description="sevvo agent: the customer-side data plane (agent/ and the shared runtime only)",
    # sevvo_client: the sidecar mode (agent.sidecar) keeps a credential through it.
    packages=("agent", "sevvo", "sevvo_client"),
    requirements=(
        "cryptography",
        "googleapis-common-protos",
        "grpcio",
        # The sidecar's credential socket is served by sevvo.runtime.grpc_server.
        "grpcio-health-checking",
        "grpcio-reflection",
        "pglast",
        # Parquet destinations (agent/sync/parquet.py).
        "pyarrow",
        "protobuf",
        "psycopg[binary]",
        "psycopg-pool",
        "pyjwt[crypto]",
        "structlog",
        "temporalio",
    ),
    entrypoint=("python", "-m", "agent"),
    cmd=(),
)

CONTROL_PLANE = ImageSpec(
    name="sevvo-control-plane",
    description=(
        "sevvo control plane: the auth, connections and orchestrator services and the web console"
    ),
    packages=("services", "sevvo", "console"),
    requirements=(
        "cryptography",
        "googleapis-common-protos",
        "grpcio",
        "grpcio-health-checking",
        "grpcio-reflection",
        # The web console (`python -m console`): Starlette over uvicorn, Jinja2 pages, forms.
        "jinja2",
        "pglast",
        "protobuf",
        "psycopg[binary]",
        "psycopg-pool",
        "pyjwt[crypto]",
        "python-multipart",
        "starlette",
        "structlog",
        "temporalio",
        "uvicorn",
    ),
    # `podman run sevvo-control-plane services.connections serve` picks another service;
    # `podman run sevvo-control-plane console` the web console.
    entrypoint=("python", "-m"),
    cmd=("services.auth", "serve"),
)

IMAGES = {spec.name: spec for spec in (CONTROL_PLANE, AGENT)}


def image_files(spec: ImageSpec, root: Path = ROOT) -> list[Path]:
    """The repository files (relative to root) the build copies into the image, sorted."""
    files: list[Path] = []
    for package in spec.packages:
        for path in (root / package).rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if path.suffix in RUNTIME_SUFFIXES:
                files.append(path.relative_to(root))
        for pattern in PACKAGE_DATA.get(package, ()):
            files += (
                path.relative_to(root)
                for path in (root / package).glob(pattern)
                if path.is_file() and path.suffix not in RUNTIME_SUFFIXES
            )
    return sorted(files)


def module_name(path: Path) -> str:
    """``agent/worker.py`` -> ``agent.worker``; ``sevvo/__init__.py`` -> ``sevvo``."""
    parts = list(path.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _module_path(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is a module of the tree (``a.b.func`` -> a.b)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.Module, module: str, is_package: bool) -> Iterator[str]:
    """Absolute names imported when the module runs (``if TYPE_CHECKING:`` blocks skipped)."""
    package = module if is_package else module.rpartition(".")[0]
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(p for p in [*base_parts, node.module or ""] if p)
            else:
                base = node.module or ""
            yield base
            # `from pkg import sub` imports the submodule pkg.sub when there is one.
            yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        stack.extend(ast.iter_child_nodes(node))


@dataclass(frozen=True)
class ImportClosure:
    """What running a set of modules imports: this repository's modules and everyone else's."""

    first_party: frozenset[str]
    # First-party names that resolve to no module in the tree (a missing file).
    missing: frozenset[str]
    # Dotted names of third-party imports as written (standard library left out).
    third_party: frozenset[str]


def import_closure(entry_modules: Iterable[str], root: Path = ROOT) -> ImportClosure:
    """Follows imports from entry_modules through the first-party tree under root.

    Static (AST) and cheap, so a test can run it on every change; it sees function-level
    imports too, since those run when the function does.
    """
    modules: dict[str, Path] = {}
    for top in FIRST_PARTY:
        for path in (root / top).rglob("*.py"):
            if "__pycache__" not in path.parts:
                modules[module_name(path.relative_to(root))] = path
    seen: set[str] = set()
    missing: set[str] = set()
    third: set[str] = set()
    todo = list(entry_modules)
    while todo:
        name = todo.pop()
        top = name.partition(".")[0]
        if top not in FIRST_PARTY:
            if top and top not in sys.stdlib_module_names:
                third.add(name)
            continue
        found = _module_path(name, modules)
        if found is None:
            missing.add(name)
            continue
        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
        parts = found.split(".")
        for i in range(1, len(parts) + 1):
            module = ".".join(parts[:i])
            if module in seen or module not in modules:
                continue
            seen.add(module)
            path = modules[module]
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            todo.extend(_runtime_imports(tree, module, path.name == "__init__.py"))
    return ImportClosure(frozenset(seen), frozenset(missing), frozenset(third))
