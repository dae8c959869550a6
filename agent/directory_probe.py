"""The credential test of a Parquet directory connection: may this agent write there?

The agent writes only under the directories its operator listed in SEVVO_AGENT_FILE_ROOTS
(none by default), so a connection, which any member of the org may create, cannot make it
write anywhere else in its pod. The path must lie under a root both as written and once every
symbolic link is resolved (a link inside a root cannot lead out of it), be a directory, and
take a scratch file: created, fsynced and removed, through a descriptor of the resolved
directory so nothing swapped in meanwhile is followed.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from sevvo.runtime.logs import get_logger
from sevvo.runtime.outcomes import DIRECTORY_UNUSABLE, OK, TEST_CATEGORIES
from sevvo.runtime.validation import directory_path_problem
from sevvo.workflows.v1 import workflows_pb2

log = get_logger(__name__)

_SCRATCH_PREFIX = ".sevvo-probe-"


class DirectoryUnusable(Exception):
    """The directory may not or cannot be written; the message is safe to send upstream."""


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def usable_directory(path: str, roots: Sequence[Path]) -> str:
    """The resolved directory ``path`` names, if the agent may write there; else raises
    DirectoryUnusable saying which rule failed (never the path: it is the user's, who knows
    it, but logs and run records keep only categories and rules)."""
    if directory_path_problem(path) is not None:
        raise DirectoryUnusable("the path is not an absolute, normalised path")
    if not roots:
        raise DirectoryUnusable("this agent allows no directory (SEVVO_AGENT_FILE_ROOTS is empty)")
    real = os.path.realpath(path)
    allowed = any(
        _under(path, str(root)) and _under(real, os.path.realpath(root)) for root in roots
    )
    if not allowed:
        raise DirectoryUnusable(
            "the directory is outside the roots in SEVVO_AGENT_FILE_ROOTS (symbolic links resolved)"
        )
    if not os.path.isdir(real):
        raise DirectoryUnusable("the directory does not exist or is not a directory")
    return real


def write_scratch_file(directory: str) -> None:
    """Creates, fsyncs and removes a scratch file in ``directory``; DirectoryUnusable if not."""
    name = f"{_SCRATCH_PREFIX}{uuid.uuid4().hex}"
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise DirectoryUnusable(f"the directory cannot be opened ({_errno(exc)})") from None
    try:
        try:
            fd = os.open(
                name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd
            )
        except OSError as exc:
            raise DirectoryUnusable(
                f"the agent cannot create a file there ({_errno(exc)})"
            ) from None
        try:
            os.write(fd, b"sevvo directory probe\n")
            os.fsync(fd)
        except OSError as exc:
            raise DirectoryUnusable(
                f"the agent cannot write a file there ({_errno(exc)})"
            ) from None
        finally:
            os.close(fd)
            try:
                os.unlink(name, dir_fd=dir_fd)
            except OSError as exc:
                log.warning("scratch file not removed", errno=exc.errno)
    finally:
        os.close(dir_fd)


def _errno(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, "error")


def _check(path: str, roots: Sequence[Path]) -> None:
    write_scratch_file(usable_directory(path, roots))


async def probe_directory(path: str, roots: Sequence[Path]) -> workflows_pb2.CredentialTestResult:
    """TEST_CATEGORY_OK when the agent may and can write ``path``; else DIRECTORY_UNUSABLE
    with the catalogue's message and the rule that failed."""
    started = time.monotonic()
    try:
        await asyncio.to_thread(_check, path, roots)
    except DirectoryUnusable as exc:
        return workflows_pb2.CredentialTestResult(
            category=TEST_CATEGORIES.value(DIRECTORY_UNUSABLE),
            message=f"{TEST_CATEGORIES.message(DIRECTORY_UNUSABLE)} — {exc}",
            duration_ms=_elapsed_ms(started),
        )
    return workflows_pb2.CredentialTestResult(
        category=TEST_CATEGORIES.value(OK),
        message=TEST_CATEGORIES.message(OK),
        duration_ms=_elapsed_ms(started),
    )


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
