"""Mounted files that change under a running process: certificates, CA bundles, keyrings.

cert-manager renews a certificate and Kubernetes swaps a Secret's files in place (a new
``..data`` directory behind the same symlinks), so a process that read its files once at start
serves an expiring certificate, or an old keyring, until someone restarts it. Readers here
notice the change by polling ``os.stat`` (inode, size, modification time), which costs a few
microseconds: an inotify watcher (watchfiles, watchdog) would add a thread and a dependency
and still miss the symlink swap on some mounts, while a stat follows the symlinks every time.

The checks below never put a file's contents into a message: a key file is a secret, and a
certificate's text tells an operator nothing a path does not.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

# How often, at most, the files behind a client channel or a keyring are stat'ed. A renewal is
# made well before the old certificate expires (cert-manager: a third of its life), so seconds
# of delay cost nothing, and a call path never pays for more than one stat round per period.
DEFAULT_CHECK_SECONDS = 2.0

Stamp = tuple[tuple[int, int, int, int], ...]


class UnusableFiles(ValueError):
    """Files that changed but cannot be used as they are (a pair half written, say)."""


def stamp(paths: Iterable[Path]) -> Stamp:
    """Identifies the files' current versions; a missing file has its own stamp."""
    marks = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            marks.append((-1, -1, -1, -1))
            continue
        marks.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(marks)


class FileWatch:
    """Tells whether files changed since the version last taken, checking at most every
    ``check_seconds`` (0 checks on every call)."""

    def __init__(
        self,
        paths: Iterable[Path],
        *,
        check_seconds: float = DEFAULT_CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.paths = tuple(paths)
        self._check_seconds = check_seconds
        self._clock = clock
        self._seen = stamp(self.paths)
        self._checked = clock()

    def changed(self) -> Stamp | None:
        """The new stamp when the files changed since the last one taken, else None."""
        if self._check_seconds > 0:
            now = self._clock()
            if now - self._checked < self._check_seconds:
                return None
            self._checked = now
        current = stamp(self.paths)
        return None if current == self._seen else current

    def take(self, current: Stamp) -> None:
        """Records ``current`` as seen: used, or refused (so a bad version is reported once)."""
        self._seen = current


def read_key_pair(cert: Path, key: Path) -> tuple[bytes, bytes]:
    """Reads a certificate chain and its private key; raises UnusableFiles unless the key is
    the certificate's (a renewal caught between writing the two files)."""
    try:
        cert_pem, key_pem = cert.read_bytes(), key.read_bytes()
    except OSError as exc:
        raise UnusableFiles(f"cannot read {exc.filename}: {exc.strerror}") from None
    check_key_pair(cert_pem, key_pem, f"{cert} and {key}")
    return cert_pem, key_pem


def check_key_pair(cert_pem: bytes, key_pem: bytes, source: str) -> None:
    """Raises UnusableFiles naming ``source`` unless ``key_pem`` is the private key of the
    first certificate in ``cert_pem``."""
    try:
        leaf = x509.load_pem_x509_certificates(cert_pem)[0]
    except ValueError:
        raise UnusableFiles(f"{source}: the certificate file is not PEM certificates") from None
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        # TypeError: an encrypted key; the message would not say more than this one.
        raise UnusableFiles(f"{source}: the key file is not an unencrypted PEM key") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if private.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        raise UnusableFiles(f"{source}: the key does not belong to the certificate")


def read_ca(path: Path) -> bytes:
    """Reads a CA bundle; raises UnusableFiles unless it holds at least one certificate."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise UnusableFiles(f"cannot read {path}: {exc.strerror}") from None
    try:
        x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise UnusableFiles(f"{path}: not PEM certificates") from None
    return pem


__all__ = [
    "DEFAULT_CHECK_SECONDS",
    "FileWatch",
    "UnusableFiles",
    "check_key_pair",
    "read_ca",
    "read_key_pair",
    "stamp",
]
