"""Builds the two production images (sevvo-control-plane, sevvo-agent) without a registry.

No base image is pulled: each image is a Debian rootfs extracted by mmdebstrap from the apt
mirror this machine is configured for (packages unpacked, no maintainer scripts, so no shell
or dpkg needs to be in it), this repository's runtime files (scripts/image_contents.py) and
the wheels its side needs from PyPI, pinned by constraints.txt. buildah commits each as an
OCI image into local container storage and writes an OCI archive whose manifest digest is
what a registry keeps when the archive is pushed with ``skopeo copy --preserve-digests``.
Needs root (mmdebstrap's root mode, chroot, buildah's vfs storage). See deploy/k8s/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

if __package__ in (None, ""):
    # `python scripts/build_images.py` puts scripts/, not the repository, on sys.path.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.image_contents import IMAGES, ROOT, ImageSpec, image_files

UID = 10001
PYTHON = "python3.11"
SITE_PACKAGES = f"usr/local/lib/{PYTHON}/dist-packages"
APP_DIR = "opt/sevvo"
# Debian packages of the runtime: the interpreter and its standard library, libstdc++ for
# grpcio's C++ core, CA roots for TLS, time zones for psycopg's timestamptz.
DEBIAN_PACKAGES = (
    f"{PYTHON}-minimal",
    f"lib{PYTHON}-stdlib",
    "libstdc++6",
    "ca-certificates",
    "tzdata",
)
# What the extracted packages bring that a process never runs: package tooling (dpkg, debconf
# and the perl it is written in, openssl's command, tar) and documentation.
PRUNE = (
    "bin",
    "sbin",
    "usr/sbin",
    "usr/games",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/bug",
    "usr/share/debconf",
    "usr/share/perl5",
    "usr/share/bash-completion",
    "usr/share/polkit-1",
    "usr/share/gdb",
    "usr/share/pixmaps",
    "usr/share/binfmts",
    "usr/share/dpkg",
    "usr/lib/dpkg",
    "usr/libexec",
    "var/lib/dpkg",
    "var/lib/apt",
    "var/cache",
    "var/log",
    "etc/dpkg",
    "etc/apt",
    "etc/debconf.conf",
    "etc/alternatives",
)
# The only programs left in usr/bin.
KEEP_BIN = frozenset({PYTHON})
TOOLS = ("buildah", "mmdebstrap", "skopeo")
APT_PACKAGES = ("buildah", "mmdebstrap", "skopeo", "podman")
# Nothing runs inside a container during the build; should that change, chroot isolation
# needs no user namespaces. The storage driver is containers/storage's choice (overlay where
# the kernel allows it, else vfs) so podman sees the images without options.
ENV = {"BUILDAH_ISOLATION": "chroot"}
# pip does not widen an explicit --platform to older manylinux levels; a wheel for glibc
# 2.17 runs on the image's 2.36.
MANYLINUX = (*(f"manylinux_2_{minor}" for minor in range(36, 16, -1)), "manylinux2014")


def _run(*args: str, capture: bool = False) -> str:
    env = {**os.environ, **ENV}
    result = subprocess.run(args, check=True, env=env, text=True, capture_output=capture)
    return result.stdout.strip() if capture else ""


def ensure_tools() -> None:
    """Installs buildah, mmdebstrap, skopeo and podman with apt when one is missing."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not missing:
        return
    print(f"installing {', '.join(APT_PACKAGES)} with apt (missing: {', '.join(missing)})")
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *APT_PACKAGES]
    if subprocess.run(install, env=apt_env, check=False).returncode != 0:
        # Package lists may be missing or stale on a fresh machine.
        subprocess.run(["apt-get", "update"], env=apt_env, check=True)
        subprocess.run(install, env=apt_env, check=True)


def _suite() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.partition("=")[2].strip('"')
    raise SystemExit("cannot tell the Debian release from /etc/os-release")


def _apt_sources() -> list[str]:
    """The host's apt sources, so the rootfs comes from the mirror this machine reaches."""
    found = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    found += sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file() and legacy.read_text().strip():
        found.append(legacy)
    return [str(p) for p in found]


def build_base(target: Path) -> None:
    """Extracts the Debian runtime into target and trims it to what python needs."""
    _run(
        "mmdebstrap",
        "--quiet",
        "--mode=root",
        "--variant=extract",
        f"--include={','.join(DEBIAN_PACKAGES)}",
        _suite(),
        str(target),
        *_apt_sources(),
    )
    for rel in PRUNE:
        path = target / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    for program in (target / "usr/bin").iterdir():
        if program.name not in KEEP_BIN:
            program.unlink()
    (target / "usr/bin/python3").symlink_to(PYTHON)
    (target / "usr/bin/python").symlink_to(PYTHON)
    # The runtime mounts its own /dev and /proc; a device node in a layer is refused by some.
    shutil.rmtree(target / "dev")
    (target / "dev").mkdir()
    tmp = target / "tmp"
    tmp.mkdir(exist_ok=True)
    tmp.chmod(0o1777)
    # ca-certificates builds this bundle in its maintainer script, which extraction skips.
    roots = sorted((target / "usr/share/ca-certificates").rglob("*.crt"))
    bundle = target / "etc/ssl/certs/ca-certificates.crt"
    bundle.parent.mkdir(parents=True, exist_ok=True)
    bundle.write_text("".join(p.read_text() for p in roots))
    etc = target / "etc"
    (etc / "passwd").write_text(
        f"root:x:0:0:root:/root:/sbin/nologin\nsevvo:x:{UID}:{UID}:sevvo:/nonexistent:/sbin/nologin\n"
    )
    (etc / "group").write_text(f"root:x:0:\nsevvo:x:{UID}:\n")
    localtime = etc / "localtime"
    if localtime.is_symlink() or localtime.exists():
        localtime.unlink()
    localtime.symlink_to("/usr/share/zoneinfo/Etc/UTC")


def _pins(constraints: Path) -> dict[str, str]:
    pins = {}
    for line in constraints.read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            pins[_normalise(name)] = version
    return pins


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def install_requirements(spec: ImageSpec, rootfs: Path, constraints: Path) -> None:
    """Installs the spec's wheels for the image's CPython and fails on an unpinned one."""
    target = rootfs / SITE_PACKAGES
    version = PYTHON.removeprefix("python")
    _run(
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        f"--target={target}",
        "--only-binary=:all:",
        f"--python-version={version}",
        "--implementation=cp",
        f"--abi=cp{version.replace('.', '')}",
        *(f"--platform={tag}_{platform.machine()}" for tag in MANYLINUX),
        f"--constraint={constraints}",
        *spec.requirements,
    )
    shutil.rmtree(target / "bin", ignore_errors=True)
    pins = _pins(constraints)
    for info in target.glob("*.dist-info"):
        name, _, version = info.name.removesuffix(".dist-info").rpartition("-")
        if pins.get(_normalise(name)) != version:
            raise SystemExit(f"{name} {version} is not pinned in {constraints.name}")


def install_app(spec: ImageSpec, rootfs: Path) -> None:
    """Copies the spec's repository files under /opt/sevvo and puts it on python's path."""
    for rel in image_files(spec):
        dest = rootfs / APP_DIR / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / rel, dest)
    (rootfs / SITE_PACKAGES / "sevvo-app.pth").write_text(f"/{APP_DIR}\n")


def compile_bytecode(rootfs: Path) -> None:
    """Compiles every module ahead, with the image's own interpreter.

    The root filesystem is read-only at run time, so python could never cache bytecode
    itself; unchecked-hash pycs are valid without comparing timestamps, which the commit's
    fixed timestamp rewrites.
    """
    dirs = [f"/usr/lib/{PYTHON}", f"/{SITE_PACKAGES}", f"/{APP_DIR}"]
    _run(
        "chroot",
        str(rootfs),
        f"/usr/bin/{PYTHON}",
        "-m",
        "compileall",
        "-q",
        # No -j: its process pool needs /dev/shm, which the bare rootfs lacks.
        "--invalidation-mode=unchecked-hash",
        *dirs,
    )


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, text=True, capture_output=True
    ).stdout.strip()


def commit_image(spec: ImageSpec, container: str, version: str, out_dir: Path) -> dict[str, str]:
    """Sets the image config, commits it, and writes its OCI archive; returns its record."""
    revision = _git("rev-parse", "HEAD")
    # The commit's time, not the clock's: the same tree builds the same layers and digest.
    epoch = _git("log", "-1", "--format=%ct")
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))
    labels = {
        "org.opencontainers.image.title": spec.name,
        "org.opencontainers.image.description": spec.description,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.vendor": "sevvo",
        # Not org.opencontainers.image.base.name: there is no base image to name.
        "dev.sevvo.image.rootfs": f"debian {_suite()}, packages extracted by mmdebstrap",
    }
    env = {
        "PATH": "/usr/local/bin:/usr/bin",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HOME": "/nonexistent",
    }
    config = ["buildah", "config", f"--user={UID}:{UID}", "--workingdir=/"]
    config += [f"--entrypoint={json.dumps(list(spec.entrypoint))}"]
    config += [f"--cmd={json.dumps(list(spec.cmd))}" if spec.cmd else "--cmd="]
    config += [f"--label={k}={v}" for k, v in labels.items()]
    config += [f"--env={k}={v}" for k, v in env.items()]
    _run(*config, container)
    tag = f"localhost/{spec.name}:{version}"
    previous = subprocess.run(
        ["buildah", "images", "--quiet", "--no-trunc", tag],
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    image_id = _run(
        "buildah",
        "commit",
        "--quiet",
        "--rm",
        "--format=oci",
        "--omit-history",
        f"--timestamp={epoch}",
        container,
        tag,
        capture=True,
    )
    # The tag moved to the new image; the one it named before would only fill the disk.
    for old in previous:
        if old.removeprefix("sha256:") != image_id.removeprefix("sha256:"):
            subprocess.run(["buildah", "rmi", old], capture_output=True, check=False)
    archive = out_dir / f"{spec.name}.oci.tar"
    archive.unlink(missing_ok=True)
    digest_file = out_dir / f"{spec.name}.digest"
    _run(
        "buildah",
        "push",
        "--quiet",
        f"--digestfile={digest_file}",
        tag,
        f"oci-archive:{archive}:{spec.name}:{version}",
        capture=True,
    )
    return {
        "image": tag,
        "id": f"sha256:{image_id}" if ":" not in image_id else image_id,
        "digest": digest_file.read_text().strip(),
        "archive": str(archive.relative_to(ROOT)) if archive.is_relative_to(ROOT) else str(archive),
        "archive_bytes": str(archive.stat().st_size),
    }


def build_image(spec: ImageSpec, base: Path, version: str, out_dir: Path) -> dict[str, str]:
    """One image from the prepared base rootfs; returns its record for images.json."""
    started = time.monotonic()
    container = _run("buildah", "from", "--quiet", "scratch", capture=True)
    try:
        rootfs = Path(_run("buildah", "mount", container, capture=True))
        shutil.copytree(base, rootfs, symlinks=True, dirs_exist_ok=True)
        install_requirements(spec, rootfs, ROOT / "constraints.txt")
        install_app(spec, rootfs)
        compile_bytecode(rootfs)
        _run("buildah", "umount", container, capture=True)
        record = commit_image(spec, container, version, out_dir)
    except BaseException:
        subprocess.run(["buildah", "rm", container], env={**os.environ, **ENV}, check=False)
        raise
    record["seconds"] = f"{time.monotonic() - started:.1f}"
    return record


def main(argv: list[str] | None = None) -> int:
    """``make images``: builds the images and writes build/images.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--image", choices=sorted(IMAGES), action="append", help="default: all")
    parser.add_argument("--out", type=Path, default=ROOT / "build", help="default: build/")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("build_images needs root (mmdebstrap --mode=root, chroot, buildah)")
    ensure_tools()
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    out_dir = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    records: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="sevvo-rootfs-", dir=out_dir) as scratch:
        base = Path(scratch) / "rootfs"
        build_base(base)
        print(f"debian runtime extracted in {time.monotonic() - started:.1f}s")
        for name in args.image or sorted(IMAGES):
            records[name] = build_image(IMAGES[name], base, version, out_dir)
            print(f"{name}: {records[name]['digest']} ({records[name]['seconds']}s)")
    index = out_dir / "images.json"
    index.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
    print(f"wrote {index} in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
