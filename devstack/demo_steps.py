"""The demo's narrator and step runner: numbered steps, real ``sevvo`` commands, no secrets shown.

Every user-facing step runs the real command line as a child process and prints the command
and its output as a user would see them. Anything the demo did not expect — an exit code, a
missing line of output, a timeout — fails the step, and the demo exits non-zero naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shlex
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

# The forms a secret could take in output even if nobody registered it: a JWT (the session
# token) and a deployment token. The demo registers its own secrets too; these are the net.
_JWT: Final = re.compile(r"\beyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]{4,}")
_DEPLOYMENT_TOKEN: Final = re.compile(r"\b(sevvo_dt_[A-Za-z0-9]{4})[A-Za-z0-9_\-.~+/=]{8,}")
HIDDEN: Final = "[hidden]"
_INDENT: Final = "    "


class StepFailed(Exception):
    """A demo step did not go as the demo expected; ``step`` names it."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"step {step!r} failed: {reason}")
        self.step = step
        self.reason = reason


class UnexpectedOutcome(Exception):
    """A command or check inside a step came out differently from what the demo expects."""


@dataclass
class Secrets:
    """Values never to be printed, each with what is shown in its place."""

    _shown: dict[str, str] = field(default_factory=dict)

    def add(self, value: str, shown: str = HIDDEN) -> str:
        """Registers ``value``; returns it, so a secret can be registered where it is made."""
        if value:
            self._shown[value] = shown
        return value

    def elide(self, text: str) -> str:
        """``text`` with every registered secret, JWT and deployment token replaced."""
        # Longest first: a secret that contains another must not be half replaced.
        for value in sorted(self._shown, key=len, reverse=True):
            text = text.replace(value, self._shown[value])
        text = _JWT.sub("[session token hidden]", text)
        return _DEPLOYMENT_TOKEN.sub(r"\1…", text)


@dataclass(frozen=True)
class CliResult:
    """What one command did."""

    args: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """Stdout parsed as JSON (for commands run with SEVVO_OUTPUT=json)."""
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as exc:
            raise UnexpectedOutcome(
                f"`sevvo {shlex.join(self.args)}` printed no JSON: {exc}"
            ) from None


@dataclass
class Narrator:
    """Prints numbered steps, the commands run and their output, with secrets elided."""

    out: TextIO
    secrets: Secrets
    timings: list[tuple[str, float]] = field(default_factory=list)
    _number: int = 0

    def say(self, text: str = "", *, indent: bool = False) -> None:
        """Prints ``text`` (elided); with ``indent``, as output under a command."""
        text = self.secrets.elide(text)
        if indent:
            text = "\n".join(_INDENT + line if line else line for line in text.splitlines())
        print(text, file=self.out, flush=True)

    @contextlib.contextmanager
    def step(self, title: str, what: str) -> Iterator[None]:
        """A numbered step: prints its title and purpose, times it, names it if it fails."""
        self._number += 1
        self.say(f"\n━━ {self._number}. {title}")
        self.say(f"   {what}")
        started = time.monotonic()
        try:
            yield
        except StepFailed:
            raise
        except Exception as exc:
            raise StepFailed(title, str(exc) or type(exc).__name__) from exc
        finally:
            self.timings.append((title, time.monotonic() - started))
        self.say(f"   ✓ done in {self.timings[-1][1]:.1f} s")


@dataclass
class Cli:
    """Runs the real ``sevvo`` command line as a child process and shows what a user sees.

    ``command`` is how to start it (``[sys.executable, "-m", "cli"]``); ``env`` is its whole
    environment (endpoint, CA, config directory). Each run fails the current step on an
    exit code other than ``expect_exit`` or on any ``expect`` text missing from the output
    (compared case-insensitively, so a change of capitals in a table does not fail CI).
    """

    command: Sequence[str]
    env: Mapping[str, str]
    narrator: Narrator
    timeout: float = 120.0

    async def run(
        self,
        *args: str,
        stdin: str | None = None,
        stdin_note: str = "password on standard input, not shown",
        expect_exit: int = 0,
        expect: Sequence[str] = (),
        output: str = "table",
        show: bool = True,
    ) -> CliResult:
        """Runs ``sevvo *args`` with ``SEVVO_OUTPUT=output``; prints it unless ``show`` is off."""
        shown = "sevvo " + shlex.join(args)
        if output != "table":
            shown = f"SEVVO_OUTPUT={output} {shown}"
        if stdin is not None:
            shown += f"    # {stdin_note}"
        if show:
            self.narrator.say(f"\n  $ {shown}")
        result = await self._execute(args, stdin, output)
        if show:
            for text in (result.stdout, result.stderr):
                if text.strip():
                    self.narrator.say(_pretty(text).rstrip(), indent=True)
            if result.exit_code != 0:
                self.narrator.say(f"(exit code {result.exit_code})", indent=True)
        if result.exit_code != expect_exit:
            tail = self.narrator.secrets.elide((result.stderr or result.stdout).strip())[-600:]
            raise UnexpectedOutcome(
                f"`{shown}` exited with {result.exit_code}, expected {expect_exit}: {tail}"
            )
        combined = (result.stdout + result.stderr).lower()
        missing = [text for text in expect if text.lower() not in combined]
        if missing:
            raise UnexpectedOutcome(f"`{shown}` did not print {missing!r}")
        return result

    async def _execute(self, args: Sequence[str], stdin: str | None, output: str) -> CliResult:
        env = {**self.env, "SEVVO_OUTPUT": output}
        proc = await asyncio.create_subprocess_exec(
            *self.command,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            # Its own process group: Ctrl-C reaches the demo alone, which then stops this
            # child and everything else in order.
            process_group=0,
        )
        try:
            async with asyncio.timeout(self.timeout):
                out, err = await proc.communicate(
                    stdin.encode() + b"\n" if stdin is not None else b""
                )
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            if isinstance(exc, TimeoutError):
                raise UnexpectedOutcome(
                    f"`sevvo {shlex.join(args)}` did not finish in {self.timeout:g} s"
                ) from None
            raise
        code = proc.returncode if proc.returncode is not None else -1
        return CliResult(
            tuple(args), code, out.decode(errors="replace"), err.decode(errors="replace")
        )


def _pretty(text: str) -> str:
    """JSON output re-indented for reading; anything else as it came."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except json.JSONDecodeError:
        return text


__all__ = [
    "HIDDEN",
    "Cli",
    "CliResult",
    "Narrator",
    "Secrets",
    "StepFailed",
    "UnexpectedOutcome",
]
