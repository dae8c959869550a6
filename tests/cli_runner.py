"""Running the real ``sevvo`` command as a user would, for the CLI test modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    """What one run of the command did."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout parsed as JSON."""
        return json.loads(self.stdout)


def user_env(endpoint: str, ca_file: Path, config_dir: Path) -> dict[str, str]:
    """The environment of a user of this endpoint: no other SEVVO_ setting leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEVVO_")}
    env.update(
        SEVVO_ENDPOINT=endpoint, SEVVO_CA_FILE=str(ca_file), SEVVO_CONFIG_DIR=str(config_dir)
    )
    return env


def run_sevvo(args: tuple[str, ...], env: dict[str, str], stdin: str, timeout: float) -> Result:
    """Runs ``sevvo`` with stdout as a pipe (so its output is JSON unless --output says not)."""
    done = subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)
