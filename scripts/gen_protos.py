"""Generates the committed Python code for protos/ (messages, gRPC stubs, type stubs).

With --check, generates into a scratch directory and fails when the committed files differ,
so CI catches a .proto edited without regenerating.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
# Generated modules land where their proto package says (sevvo.auth.v1 -> sevvo/auth/v1/).
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Runs protoc over every file in protos/ into out_dir and returns the files written."""
    well_known = str(resources.files("grpc_tools") / "_proto")
    protos = [str(p.relative_to(PROTO_ROOT)) for p in _proto_files()]
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        # The plugin is a console script beside this interpreter, not necessarily on PATH.
        f"--plugin=protoc-gen-mypy_grpc={Path(sys.executable).parent / 'protoc-gen-mypy_grpc'}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    written = [p for p in out_dir.rglob("*.py*") if p.name.endswith(GENERATED_SUFFIXES)]
    for package_dir in {p.parent for p in written}:
        # Generated packages are plain packages so mypy and setuptools both find them.
        d = package_dir
        while d != out_dir:
            (d / "__init__.py").touch()
            d = d.parent
    return written


def _committed() -> set[Path]:
    return {
        p.relative_to(ROOT)
        for p in (ROOT / "sevvo").rglob("*")
        if p.name.endswith(GENERATED_SUFFIXES)
    }


def main() -> int:
    """Regenerates protos, or with --check reports drift and exits non-zero."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code drifts")
    check = parser.parse_args().check
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        fresh = {p.relative_to(out) for p in generate(out)}
        if check:
            committed = _committed()
            drift = sorted(str(p) for p in fresh ^ committed)
            drift += sorted(
                str(p)
                for p in fresh & committed
                if not filecmp.cmp(out / p, ROOT / p, shallow=False)
            )
            if drift:
                print("generated code is out of date; run `make protos`:", *drift, sep="\n  ")
                return 1
            print(f"generated code matches protos/ ({len(fresh)} files)")
            return 0
        for stale in _committed() - fresh:
            (ROOT / stale).unlink()
        for rel in fresh:
            (ROOT / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / rel, ROOT / rel)
            d = (ROOT / rel).parent
            while d != ROOT:
                (d / "__init__.py").touch()
                d = d.parent
        print(f"wrote {len(fresh)} generated files")
        return 0


if __name__ == "__main__":
    sys.exit(main())
