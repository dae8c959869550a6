"""Writing secret files: owner-only (0600), all-or-nothing."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_private_file(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` with mode 0600, atomically replacing any existing file."""
    # A temporary file in the same directory, renamed into place, so a reader never sees a
    # half-written secret and a crash never leaves the old one truncated.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        # The umask can only narrow the mode os.open was given; fchmod pins it to exactly 0600.
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    # Persist the rename itself, so the new file survives a power loss.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
