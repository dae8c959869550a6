"""Deployments in memory, so a token exchange reads no database and still honours revocation.

Every agent trades its deployment token for a bearer at start and before each bearer expires;
reading the deployment from Postgres was most of that call's cost. auth therefore keeps what an
exchange needs of a deployment (its org, the SHA-256 of its secret, when it was revoked) in
memory, read on first use, and learns of every change from Postgres: a trigger on the
deployments table NOTIFYs ``sevvo_auth_deployments`` with the deployment's id when a row is
updated or deleted (migration 0003), and a thread of each replica LISTENs on a connection of
its own and drops the entry. Only the hash of the secret is held, and compared in constant time
(services/auth/domain.py).

What "a revoked deployment's next exchange fails" means with this cache, precisely:

- On the replica that served RevokeDeployment: at once. The entry is dropped after the revoking
  transaction commits and before the RPC returns, so every exchange that starts after
  RevokeDeployment answered is refused. (An exchange running concurrently with the revocation
  may still succeed, as it could when every exchange read Postgres.)
- On every other replica: when the notification arrives, which Postgres sends as the revoking
  transaction commits: 3 ms after the revoking statement started (median; 43 ms at most in
  30 tries) on loopback on a loaded machine; tests/test_auth_exchange_cache.py asserts under
  1 s. The same holds for a revocation made by hand in SQL.
- Never later than ``TRUST_SECONDS`` (1.5 s) after the revocation commits, whatever happens to
  the listening connection. The cache is used only while the listener is known to be hearing:
  every ``HEARTBEAT_SECONDS`` (0.5 s) it notifies a channel of its own and waits for the echo.
  Postgres delivers notifications in commit order, so an echo proves that every change
  committed before that heartbeat was sent has been received; the cache is trusted until
  ``TRUST_SECONDS`` after the send time of the newest echoed heartbeat. When the connection
  fails visibly (the server ends it, a restart, pg_terminate_backend), the cache is emptied and
  bypassed at once; when it fails silently (a partition), trust runs out by itself. Until a new
  connection has listened again and had a heartbeat echoed, every exchange reads Postgres, as
  before this cache existed. On reconnecting, everything cached earlier is dropped, since
  notifications sent while no one listened are lost.

A read that raced a change cannot put a stale row back: every drop bumps a counter, and a row
read from Postgres is stored only if the counter did not move between the read's start and
its end. Deployments that do not exist are not cached (an unknown id always reads Postgres), so
memory grows only with real deployments; ``MAX_ENTRIES`` bounds it regardless.

An exchange's bearer is a separate matter: verifiers refuse a revoked deployment's bearers
within 5 s (sevvo/runtime/tokens.py), so a bearer issued in the windows above stops working as
soon as any other bearer of that deployment does.

Workload identities are cached the same way by the same class (``SecretCache``), over their
own table's notifications (migration 0005), with every bound above.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

from services.auth.store import DeploymentSecretRow, Echo, RowChanged
from sevvo.runtime.logs import get_logger

log = get_logger(__name__)

HEARTBEAT_SECONDS = 0.5
TRUST_SECONDS = 1.5
MAX_ENTRIES = 100_000
_RETRY_SECONDS = (0.1, 0.2, 0.5, 1.0, 2.0)  # Reconnection backoff; the last repeats.
R = TypeVar("R")


class ChangeFeed(Protocol):
    """A listening connection (services.auth.store.RowChanges, or a test's fake)."""

    own_channel: str

    def send_heartbeat(self, payload: str) -> None:
        """Notifies the feed's own channel; the echo arrives after every earlier change."""
        ...

    def receive(self, timeout: float) -> Iterator[RowChanged | Echo]:
        """What arrives within ``timeout`` seconds; raises when the connection fails."""
        ...

    def close(self) -> None:
        """Ends the listening."""
        ...


class SecretCache(Generic[R]):
    """What an exchange needs of a row (``R``), by id, trusted only while a listener hears
    every change to its table.

    ``cached`` never blocks; ``get`` reads Postgres on a miss, so it runs in a worker thread.
    Until ``start`` (and after ``stop``) the cache is bypassed: ``get`` always reads Postgres.
    ``what`` names the rows in logs and in the listener thread's name.
    """

    def __init__(
        self,
        load: Callable[[uuid.UUID], R | None],
        listen: Callable[[], ChangeFeed],
        wake: Callable[[str, str], None],
        *,
        what: str = "deployment",
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        trust_seconds: float = TRUST_SECONDS,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._listen = listen
        self._wake = wake
        self._what = what
        self._heartbeat_seconds = heartbeat_seconds
        self._trust_seconds = trust_seconds
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[uuid.UUID, R] = {}
        # Bumped by every drop; a read stores its row only if no drop happened meanwhile.
        self._drops = 0
        self._trusted_until = 0.0  # On the clock; the cache is bypassed from then on.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._own_channel: str | None = None
        self._echoed = False  # Whether the current connection has had a heartbeat echoed.

    # Reading.

    @property
    def trusted(self) -> bool:
        """Whether the listener has lately proved it hears every change."""
        return self._clock() < self._trusted_until

    def cached(self, row_id: uuid.UUID) -> R | None:
        """The row from memory, or None if it is not there or memory is not trusted."""
        if self._clock() >= self._trusted_until:
            return None
        return self._entries.get(row_id)

    def get(self, row_id: uuid.UUID) -> R | None:
        """The row from memory, else from Postgres (then remembered); None if unknown."""
        row = self.cached(row_id)
        if row is not None:
            return row
        drops = self._drops  # Before the read: a change committed after it bumps the count.
        row = self._load(row_id)
        if row is not None:
            with self._lock:
                if self._drops == drops:
                    if len(self._entries) >= self._max_entries:
                        self._entries.clear()
                    self._entries[row_id] = row
        return row

    # Dropping.

    def forget(self, row_id: uuid.UUID) -> None:
        """Drops one row; the revoke and update paths call it after their transaction commits."""
        with self._lock:
            self._drops += 1
            self._entries.pop(row_id, None)

    def _forget_all(self, *, distrust: bool) -> None:
        with self._lock:
            self._drops += 1
            self._entries.clear()
            if distrust:
                self._trusted_until = 0.0

    # Listening.

    def start(self) -> None:
        """Starts the listener thread; the cache is used once its first heartbeat echoes."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"{self._what}-cache-listener", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stops the listener and bypasses the cache from now on."""
        self._stop.set()
        self._forget_all(distrust=True)
        channel = self._own_channel
        if channel is not None:
            try:  # Wakes the listener from its wait rather than letting it time out.
                self._wake(channel, "wake")
            except Exception as exc:
                log.debug(
                    "secret cache listener not woken", cache=self._what, error=type(exc).__name__
                )
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._forget_all(distrust=True)  # Again: a heartbeat may have echoed meanwhile.

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._echoed = False
            try:
                changes = self._listen()
            except Exception as exc:
                failures = self._lost(exc, failures)
                continue
            try:
                # Whatever was read before LISTEN took effect may have missed a change.
                self._forget_all(distrust=True)
                self._own_channel = changes.own_channel
                self._hear(changes)
            except Exception as exc:
                failures = self._lost(exc, 0 if self._echoed else failures)
            finally:
                self._own_channel = None
                changes.close()

    def _lost(self, exc: Exception, failures: int) -> int:
        """Bypasses the cache, says so once per outage, and waits before reconnecting."""
        self._forget_all(distrust=True)
        if failures == 0 and not self._stop.is_set():
            log.warning(
                f"{self._what} cache bypassed: not listening for changes",
                error=type(exc).__name__,
            )
        self._stop.wait(_RETRY_SECONDS[min(failures, len(_RETRY_SECONDS) - 1)])
        return failures + 1

    def _hear(self, changes: ChangeFeed) -> None:
        """Applies changes and heartbeats until stopped; raises when the connection fails."""
        beat = 0
        while not self._stop.is_set():
            beat += 1
            sent = self._clock()
            changes.send_heartbeat(str(beat))
            next_beat = sent + self._heartbeat_seconds
            while (remaining := next_beat - self._clock()) > 0:
                for change in changes.receive(remaining):
                    if self._stop.is_set():
                        return
                    if isinstance(change, RowChanged):
                        if change.row_id is None:
                            self._forget_all(distrust=False)
                        else:
                            self.forget(change.row_id)
                    elif change.payload == str(beat):
                        self._heard_heartbeat(sent)

    def _heard_heartbeat(self, sent: float) -> None:
        with self._lock:
            self._trusted_until = max(self._trusted_until, sent + self._trust_seconds)
        if not self._echoed:
            self._echoed = True
            log.info(f"{self._what} cache in use: listening for changes")


class DeploymentCache(SecretCache[DeploymentSecretRow]):
    """Deployments by id: what ExchangeDeploymentToken needs of each."""
