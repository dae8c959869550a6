"""The agent's liveness signal: a file its event loop refreshes while healthy, and the probe
``python -m agent.liveness`` that exits 0 only while that file is fresh."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from agent.liveness import Heartbeat, LivenessConfig, check, main
from devstack.agent_process import AgentProcess
from sevvo.runtime.config import ConfigError
from sevvo.runtime.files import write_private_file
from tests.plugins.dev_stack import EndToEnd

ROOT = Path(__file__).resolve().parents[1]


def _probe(file: Path, max_age: float) -> subprocess.CompletedProcess[str]:
    """Runs the probe as the kubelet does: a fresh interpreter, configured by env."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SEVVO_AGENT_LIVENESS_FILE": str(file),
        "SEVVO_AGENT_LIVENESS_MAX_AGE_SECONDS": str(max_age),
        "SEVVO_AGENT_LIVENESS_INTERVAL_SECONDS": "0.05",
    }
    return subprocess.run(
        [sys.executable, "-m", "agent.liveness"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _env(file: Path, **extra: str) -> Mapping[str, str]:
    return {"SEVVO_AGENT_LIVENESS_FILE": str(file), **extra}


def test_probe_exits_0_for_a_fresh_file_and_1_with_the_age_for_a_stale_one(
    tmp_path: Path,
) -> None:
    """A fresh file passes; one older than the max age fails, saying how old it is."""
    file = tmp_path / "alive"
    file.touch()
    fresh = _probe(file, max_age=30)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.startswith("alive:")
    old = time.time() - 60
    os.utime(file, (old, old))
    stale = _probe(file, max_age=30)
    assert stale.returncode == 1
    assert "not alive" in stale.stderr
    assert "more than 30 s" in stale.stderr


def test_probe_fails_for_a_missing_file_and_names_the_variable(tmp_path: Path) -> None:
    """No file (agent starting or gone) is not alive, and the message says where to look."""
    assert main(_env(tmp_path / "missing")) == 1
    alive, message = check(LivenessConfig(file=tmp_path / "missing"))
    assert not alive
    assert "SEVVO_AGENT_LIVENESS_FILE" in message


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"SEVVO_AGENT_LIVENESS_FILE": "relative/alive"}, "SEVVO_AGENT_LIVENESS_FILE"),
        ({"SEVVO_AGENT_LIVENESS_MAX_AGE_SECONDS": "soon"}, "SEVVO_AGENT_LIVENESS_MAX_AGE"),
        (
            {
                "SEVVO_AGENT_LIVENESS_INTERVAL_SECONDS": "10",
                "SEVVO_AGENT_LIVENESS_MAX_AGE_SECONDS": "15",
            },
            "at least twice",
        ),
    ],
    ids=["relative-path", "not-a-number", "max-age-below-two-intervals"],
)
def test_bad_liveness_settings_fail_naming_the_variable(
    env: dict[str, str], variable: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed setting is a configuration error (exit 2) that names it."""
    with pytest.raises(ConfigError, match=variable):
        LivenessConfig.load(env)
    assert main(env) == 2
    assert variable in capsys.readouterr().err


def test_heartbeat_refreshes_only_while_every_condition_holds(tmp_path: Path) -> None:
    """With every condition true the file is refreshed; with one false it is left to age,
    and the probe reports it stale; it is refreshed again once the condition holds."""
    config = LivenessConfig(file=tmp_path / "alive", interval_seconds=0.05, max_age_seconds=0.1)
    heartbeat = Heartbeat(config)
    worker_running = True
    heartbeat.require("loop", lambda: True)
    heartbeat.require("temporal worker", lambda: worker_running)
    assert heartbeat.beat()
    assert check(config)[0]
    worker_running = False
    old = time.time() - 1
    os.utime(config.file, (old, old))
    assert not heartbeat.beat()
    assert config.file.stat().st_mtime == pytest.approx(old)
    assert not check(config)[0]
    worker_running = True
    assert heartbeat.beat()
    assert check(config)[0]


def test_heartbeat_removes_its_file_when_it_stops(tmp_path: Path) -> None:
    """The file exists while the heartbeat runs and is gone once it is cancelled."""
    config = LivenessConfig(file=tmp_path / "alive", interval_seconds=0.05, max_age_seconds=0.1)

    async def scenario() -> tuple[bool, bool]:
        task = asyncio.create_task(Heartbeat(config).run())
        await asyncio.sleep(0.12)
        during = check(config)[0]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return during, config.file.exists()

    during, after = asyncio.run(scenario())
    assert during
    assert not after


def test_a_frozen_agent_goes_stale_and_a_running_one_is_alive(e2e: EndToEnd) -> None:
    """A real agent polling its queue keeps the probe passing; stopped with SIGSTOP (its event
    loop frozen) the file goes stale and the probe fails; resumed, it passes again; stopped,
    the file is gone."""
    tenant = e2e.new_tenant(start_agent=False)
    state = e2e.stack.state_dir
    token_file = state / f"liveness-{tenant.org_id[:8]}-token"
    write_private_file(token_file, tenant.deployment_token + "\n")
    settings = dataclasses.replace(
        e2e.stack.agent_settings(token_file), liveness_interval_seconds=0.1
    )
    agent = AgentProcess(settings, state / f"liveness-{tenant.org_id[:8]}.log")
    agent.start(timeout=60)
    try:
        assert _probe(agent.liveness_file, max_age=1).returncode == 0
        os.kill(agent.pid, signal.SIGSTOP)
        try:
            time.sleep(1.3)
            frozen = _probe(agent.liveness_file, max_age=1)
        finally:
            os.kill(agent.pid, signal.SIGCONT)
        assert frozen.returncode == 1, frozen.stdout
        assert "not alive" in frozen.stderr
        deadline = time.monotonic() + 10
        while _probe(agent.liveness_file, max_age=1).returncode != 0:
            assert time.monotonic() < deadline, "the resumed agent never refreshed its file"
            time.sleep(0.1)
    finally:
        agent.stop()
    assert not agent.liveness_file.exists()
