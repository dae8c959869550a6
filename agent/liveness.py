"""The agent's liveness signal, and ``python -m agent.liveness``, the probe that reads it.

The agent dials out only, so a probe cannot ask it anything over the network. Instead its
event loop refreshes a file's mtime every few seconds, and only while the loop runs and its
Temporal worker is healthy; the probe (a Kubernetes exec liveness probe) exits 0 while the
file is fresh and 1 once it is stale or missing. A blocked event loop, or a worker that
stopped, lets the file go stale, and the kubelet restarts the container.

The probe imports nothing but the standard library and the config readers, so it starts in
tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sevvo.runtime import config as c

DEFAULT_FILE = "/tmp/sevvo-agent-alive"  # noqa: S108 - /tmp is the pod's private emptyDir.


@dataclass(frozen=True)
class LivenessConfig:
    """Where the signal lives, how often the agent refreshes it, and how old the probe
    accepts it; read by the agent and by the probe from the same variables."""

    file: Path = Path(DEFAULT_FILE)
    interval_seconds: float = 5.0
    max_age_seconds: float = 30.0

    @classmethod
    def load(cls, env: Mapping[str, str]) -> LivenessConfig:
        """Reads SEVVO_AGENT_LIVENESS_*; raises ConfigError naming a bad variable."""
        file = Path(c.string(env, "SEVVO_AGENT_LIVENESS_FILE", DEFAULT_FILE))
        if not file.is_absolute():
            raise c.ConfigError(f"SEVVO_AGENT_LIVENESS_FILE must be an absolute path, got {file}")
        interval = c.number(
            env, "SEVVO_AGENT_LIVENESS_INTERVAL_SECONDS", 5.0, minimum=0.05, maximum=60
        )
        max_age = c.number(
            env, "SEVVO_AGENT_LIVENESS_MAX_AGE_SECONDS", 30.0, minimum=0.1, maximum=3600
        )
        if max_age < 2 * interval:
            # One late refresh must not fail the probe: allow at least two intervals.
            raise c.ConfigError(
                f"SEVVO_AGENT_LIVENESS_MAX_AGE_SECONDS ({max_age:g}) must be at least twice"
                f" SEVVO_AGENT_LIVENESS_INTERVAL_SECONDS ({interval:g})"
            )
        return cls(file=file, interval_seconds=interval, max_age_seconds=max_age)


class Heartbeat:
    """Refreshes the liveness file while every condition it was given holds.

    It runs on the agent's event loop on purpose: a loop that stops turning stops the
    refreshes too. Conditions are cheap in-memory reads (a task still running, a worker
    still polling), added as the agent starts its parts.
    """

    def __init__(self, config: LivenessConfig) -> None:
        self._config = config
        self._conditions: list[tuple[str, Callable[[], bool]]] = []
        self._failing: str | None = None

    def require(self, name: str, condition: Callable[[], bool]) -> None:
        """Refreshes only while ``condition()`` holds; ``name`` says what failed in the log."""
        self._conditions.append((name, condition))

    def beat(self) -> bool:
        """Refreshes the file now if every condition holds; returns whether it did."""
        failing = next((name for name, holds in self._conditions if not holds()), None)
        if failing is not None:
            if failing != self._failing:
                _warn("liveness not refreshed", failing=failing)
            self._failing = failing
            return False
        self._failing = None
        self._config.file.touch()  # Creates it, or moves its mtime to now.
        return True

    async def run(self) -> None:
        """Beats every interval until cancelled; removes the file when it ends, so a probe
        reports a stopped agent at once rather than after the file ages."""
        try:
            while True:
                try:
                    self.beat()
                except OSError as exc:  # A full or missing /tmp: the probe will say stale.
                    _warn("liveness file not written", error=type(exc).__name__)
                await asyncio.sleep(self._config.interval_seconds)
        finally:
            self._config.file.unlink(missing_ok=True)


def _warn(event: str, **fields: object) -> None:
    # Imported late: the probe process never logs, and structlog costs it ~0.15 s to import.
    from sevvo.runtime.logs import get_logger

    get_logger(__name__).warning(event, **fields)


def check(config: LivenessConfig, now: float | None = None) -> tuple[bool, str]:
    """Whether the liveness file is fresh, and a sentence saying so or why not."""
    try:
        mtime = config.file.stat().st_mtime
    except FileNotFoundError:
        return False, (
            f"not alive: {config.file} does not exist (the agent is starting, stopped, or"
            " writes its liveness file elsewhere: SEVVO_AGENT_LIVENESS_FILE)"
        )
    except OSError as exc:
        return False, f"not alive: cannot read {config.file}: {exc.strerror}"
    age = (time.time() if now is None else now) - mtime
    if age > config.max_age_seconds:
        return False, (
            f"not alive: {config.file} was last refreshed {age:.1f} s ago, more than"
            f" {config.max_age_seconds:g} s (the agent's event loop or Temporal worker is stuck)"
        )
    return True, f"alive: refreshed {max(age, 0.0):.1f} s ago"


def main(env: Mapping[str, str] | None = None) -> int:
    """Exits 0 when the agent's liveness file is fresh, 1 when it is stale or missing, 2 on
    a configuration error; prints one line saying which."""
    try:
        config = LivenessConfig.load(os.environ if env is None else env)
    except c.ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    alive, message = check(config)
    print(message, file=sys.stdout if alive else sys.stderr)
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
