"""``make images-check``: inspects the images ``make images`` built, from their OCI archives.

For each image in build/images.json: the archive's manifest digest is the recorded one; the
code under /opt/sevvo is exactly ``image_files(spec)`` (so the agent image holds no
control-plane code); no program but python is on the filesystem (no shell); every file
belongs to root; the config runs as 10001 with the spec's entrypoint and OCI labels. Then,
as root, each entry point is started from a read-only bind mount of the image as UID 10001
with the image's environment and no configuration: it must stop with its configuration
error (exit 2), not an import error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.build_images import APP_DIR, KEEP_BIN, UID
from scripts.image_contents import IMAGES, ROOT, ImageSpec, image_files, module_name

SHELLS = ("sh", "bash", "dash", "ash", "busybox", "zsh")
# The interpreter and the two names the build links to it.
PROGRAMS = KEEP_BIN | {"python", "python3"}
SMOKE_TIMEOUT_SECONDS = 60
# What the control-plane chart runs from its image, one Deployment each.
SERVICES = ("auth", "connections", "orchestrator")


def _blob(archive: tarfile.TarFile, digest: str) -> bytes:
    algorithm, _, value = digest.partition(":")
    member = archive.extractfile(f"blobs/{algorithm}/{value}")
    if member is None:
        raise SystemExit(f"{digest} is missing from the archive")
    return member.read()


def read_archive(path: Path) -> tuple[str, dict[str, Any], dict[str, tarfile.TarInfo]]:
    """The manifest digest, the image config and every layer path of an OCI archive."""
    with tarfile.open(path) as archive:
        index = json.loads(_blob_file(archive, "index.json"))
        (entry,) = index["manifests"]
        manifest = json.loads(_blob(archive, entry["digest"]))
        config = json.loads(_blob(archive, manifest["config"]["digest"]))
        members: dict[str, tarfile.TarInfo] = {}
        for layer in manifest["layers"]:
            with tempfile.TemporaryFile() as scratch:
                scratch.write(_blob(archive, layer["digest"]))
                scratch.seek(0)
                with tarfile.open(fileobj=scratch) as layer_tar:
                    for info in layer_tar.getmembers():
                        members[info.name.removeprefix("./").rstrip("/")] = info
    return str(entry["digest"]), config, members


def _blob_file(archive: tarfile.TarFile, name: str) -> bytes:
    member = archive.extractfile(name)
    if member is None:
        raise SystemExit(f"{name} is missing from the archive")
    return member.read()


def check_contents(
    spec: ImageSpec, config: dict[str, Any], members: dict[str, tarfile.TarInfo]
) -> list[str]:
    """Every way the image's filesystem or config differs from the spec, as messages."""
    problems: list[str] = []
    app = {
        name.removeprefix(f"{APP_DIR}/")
        for name, info in members.items()
        if name.startswith(f"{APP_DIR}/") and info.isfile() and "__pycache__" not in name
    }
    expected = {str(p) for p in image_files(spec)}
    if app != expected:
        problems.append(
            f"/{APP_DIR} differs from image_files: extra {sorted(app - expected)[:5]}, "
            f"missing {sorted(expected - app)[:5]}"
        )
    tops = {name.split("/")[0] for name in app}
    problems += [f"holds {top}/" for top in sorted(tops) if top not in spec.packages]
    for name, info in members.items():
        directory, _, base = name.rpartition("/")
        in_path = directory in ("bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin")
        if (base in SHELLS and in_path) or (in_path and not info.isdir() and base not in PROGRAMS):
            problems.append(f"/{name} is a program other than python")
        if info.uid != 0:
            problems.append(f"/{name} belongs to UID {info.uid}, not root")
    image_config = config.get("config", {})
    if image_config.get("User") != f"{UID}:{UID}":
        problems.append(f"runs as {image_config.get('User')!r}")
    if tuple(image_config.get("Entrypoint") or ()) != spec.entrypoint:
        problems.append(f"entrypoint {image_config.get('Entrypoint')!r}")
    labels = image_config.get("Labels") or {}
    for label in ("title", "version", "revision", "created", "description"):
        if not labels.get(f"org.opencontainers.image.{label}"):
            problems.append(f"no org.opencontainers.image.{label} label")
    return problems


def _commands(spec: ImageSpec) -> list[list[str]]:
    if spec.cmd:
        # The control-plane image: each service the chart runs from it, and the console.
        services = [[*spec.entrypoint, f"services.{name}", "serve"] for name in SERVICES]
        return [*services, [*spec.entrypoint, "console"]]
    return [list(spec.entrypoint)]


def smoke_start(spec: ImageSpec, image: str, config: dict[str, Any]) -> list[str]:
    """Starts each entry point read-only as UID 10001; returns what went wrong."""
    env = dict(e.split("=", 1) for e in config.get("config", {}).get("Env") or [])
    # Looked up here: the image's PATH, passed to the child, is not the host's.
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    container = subprocess.run(
        ["buildah", "from", "--quiet", image], check=True, capture_output=True, text=True
    ).stdout.strip()
    problems: list[str] = []
    readonly = Path(tempfile.mkdtemp(prefix="sevvo-image-ro-"))
    try:
        rootfs = subprocess.run(
            ["buildah", "mount", container], check=True, capture_output=True, text=True
        ).stdout.strip()
        subprocess.run(["mount", "--bind", rootfs, str(readonly)], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(readonly)], check=True)
            # Every shipped module imports (a dependency imported only lazily, by a module
            # the entry point does not reach at start, would fail here rather than in use).
            modules = sorted(
                module_name(p)
                for p in image_files(spec)
                if p.suffix == ".py" and p.name != "__main__.py"
            )
            importer = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)"
            commands = [["python", "-c", importer, *modules], *_commands(spec)]
            for command in commands:
                result = subprocess.run(
                    [chroot, f"--userspec={UID}:{UID}", str(readonly), *command],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=SMOKE_TIMEOUT_SECONDS,
                    check=False,
                )
                shown = " ".join(command[:3]) if command[1] == "-c" else " ".join(command)
                if command[1] == "-c":
                    if result.returncode != 0:
                        problems.append(f"importing every module: {result.stderr[-500:]}")
                    else:
                        print(f"  all {len(modules)} modules import")
                elif result.returncode != 2 or "configuration error" not in result.stderr:
                    problems.append(f"{shown}: exit {result.returncode}: {result.stderr[-500:]}")
                else:
                    print(f"  {shown}: {result.stderr.strip().splitlines()[-1]}")
        finally:
            subprocess.run(["umount", str(readonly)], check=True)
    finally:
        subprocess.run(["buildah", "rm", container], check=False, capture_output=True)
        readonly.rmdir()
    return problems


def main(argv: list[str] | None = None) -> int:
    """Checks every image recorded in build/images.json; exits 1 naming each problem."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "build", help="default: build/")
    parser.add_argument("--no-start", action="store_true", help="skip starting the images")
    args = parser.parse_args(argv)
    index = args.out / "images.json"
    if not index.is_file():
        raise SystemExit(f"{index} not found: run `make images` first")
    records = json.loads(index.read_text())
    start = not args.no_start and os.geteuid() == 0 and shutil.which("buildah") is not None
    failed = False
    for name, record in sorted(records.items()):
        spec = IMAGES[name]
        digest, config, members = read_archive(ROOT / record["archive"])
        problems = check_contents(spec, config, members)
        if digest != record["digest"]:
            problems.append(f"archive digest {digest} is not the recorded {record['digest']}")
        print(f"{name}: {len(members)} paths, digest {digest}")
        if start:
            problems += smoke_start(spec, record["image"], config)
        for problem in problems:
            print(f"  PROBLEM: {problem}")
        failed = failed or bool(problems)
    if not start:
        print("not started: needs root and buildah")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
