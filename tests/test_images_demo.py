"""The container plumbing of ``make images-demo`` (scripts/images_demo.py), without podman.

The demo itself runs from ``make images-demo`` (it needs root, podman and built images).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from scripts.build_images import UID
from scripts.images_demo import (
    MOUNT_DIR,
    hybrid_controllers,
    image_tag,
    podman_command,
    stage_files,
)


def test_podman_command_passes_variables_by_name_only(tmp_path: Path) -> None:
    """No variable's value reaches podman's command line; the host's PATH is not passed in."""
    env = {"PATH": "/host/bin", "SEVVO_DATABASE_URL_FILE": "/etc/sevvo/database-url-value"}
    command = podman_command(
        "demo-auth",
        "localhost/img:1",
        ["services.auth", "serve"],
        env_names=list(env),
        files_dir=tmp_path,
    )
    assert "--env=SEVVO_DATABASE_URL_FILE" in command
    assert not any(value in argument for argument in command for value in env.values())
    assert not any(argument.startswith("--env=PATH") for argument in command)
    assert command[-3:] == ["localhost/img:1", "services.auth", "serve"]


def test_podman_command_runs_read_only_with_files_mounted_read_only(tmp_path: Path) -> None:
    """The root filesystem and the staged files are read-only; only named paths are writable."""
    writable = tmp_path / "run"
    command = podman_command(
        "demo-agent",
        "localhost/agent:1",
        [],
        env_names=[],
        files_dir=tmp_path,
        writable=[writable],
    )
    assert "--read-only" in command
    assert "--network=host" in command
    assert f"--volume={tmp_path}:{MOUNT_DIR}:ro" in command
    assert f"--volume={writable}:{writable}:rw" in command


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files to UID 10001")
def test_staged_files_belong_to_the_image_user_and_keys_stay_private(tmp_path: Path) -> None:
    """Copies are owned by UID 10001, keys 0400 and certificates 0444, named by /etc/sevvo."""
    key, cert = tmp_path / "server.key", tmp_path / "ca.crt"
    key.write_text("key")
    cert.write_text("cert")
    staged = tmp_path / "staged"
    inside = stage_files(staged, {"SEVVO_TLS_KEY_FILE": key, "SEVVO_CA_FILE": cert})
    assert inside == {
        "SEVVO_TLS_KEY_FILE": str(MOUNT_DIR / "server.key"),
        "SEVVO_CA_FILE": str(MOUNT_DIR / "ca.crt"),
    }
    for name, mode in (("server.key", 0o400), ("ca.crt", 0o444)):
        status = (staged / name).stat()
        assert (status.st_uid, status.st_mode & 0o777) == (UID, mode), name
    assert (staged / "server.key").read_text() == "key"


def test_image_tag_is_what_make_images_tags() -> None:
    """The demo looks for localhost/<name>:<project version>, the tag the build gives."""
    assert re.fullmatch(r"localhost/sevvo-agent:\d+\.\d+\.\d+", image_tag("sevvo-agent"))


def test_hybrid_controllers_are_read_from_the_v2_mount(tmp_path: Path) -> None:
    """A hybrid host's v2 controllers are the ones to move; pure v1 or v2 hosts have none."""
    assert hybrid_controllers(tmp_path) == []
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("hugetlb misc\n")
    assert hybrid_controllers(tmp_path) == ["hugetlb", "misc"]
