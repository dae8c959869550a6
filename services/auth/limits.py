"""Guarding password checks: who may try a password when, and where scrypt runs.

Two independent guards, because they answer different attacks:

- ``SignInLimiter`` slows guessing. It limits per source (the caller's network address) and
  per (account, source), never per account alone: a lock on the account would let anyone who
  knows an email address lock its owner out, while keys that include the source leave the
  real user, signing in from their own address, untouched by an attacker's failures. The
  same rules guard workload-token exchanges (``WORKLOAD_EXCHANGE``), with the workload in the
  account's place: a workload whose token was revoked, retrying in a crash loop, is slowed
  before its refusals (each one audited) can flood auth's database.
- ``HashingPool`` keeps scrypt (tens of milliseconds of CPU and 32 MiB per check, by design)
  off the thread pool that every other RPC's database work uses, and bounds how many checks
  may wait: when it is full, a check is refused at once with a retry delay instead of
  queueing without end. Guessing can then cost sign-in latency, but not the rest of the
  process its responsiveness.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import math
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import grpc

from services.auth.callers import peer_host
from sevvo.runtime.errors import SevvoError

P = ParamSpec("P")
T = TypeVar("T")


class TooManyAttempts(SevvoError):
    """Refused for now; ``retry_after`` says when trying again can succeed."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, reason: str, retry_after: float) -> None:
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(
            f"{message}; try again in {self.retry_after} s",
            reason=reason,
            metadata={"retry_after_seconds": str(self.retry_after)},
        )


def source_of(peer: str) -> str:
    """The network source a gRPC peer string (``ipv4:1.2.3.4:5``) counts against.

    An IPv6 caller counts as its /64, the block one subscriber usually holds, so stepping
    through one's own addresses does not reset the budget. Behind a proxy the peer is the
    proxy, unless auth trusts it and reads its client (services/auth/callers.py).
    """
    scheme, host = peer_host(peer)
    if scheme == "ipv4":
        return host
    if scheme == "ipv6":
        try:
            return str(ipaddress.IPv6Network(f"{host.split('%')[0]}/64", strict=False))
        except ValueError:
            return host
    return scheme or peer


@dataclass(frozen=True)
class SignInLimits:
    """The limiter's knobs; the defaults let a person mistype often and a script guess slowly."""

    # Failed checks a source may make in a burst, then ``source_per_minute`` a minute.
    source_burst: int = 30
    source_per_minute: float = 10.0
    # Failures of one account from one source before each further try must wait, doubling
    # from ``backoff_seconds`` up to ``max_backoff_seconds``.
    free_failures: int = 5
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 900.0
    # An account's failures from a source are forgotten this long after the last one.
    forget_after_seconds: float = 3600.0
    # Bounds the limiter's memory, whatever the number of sources and accounts tried.
    max_entries: int = 100_000


@dataclass(frozen=True)
class Wording:
    """How a limiter's refusals name what it guards, and the prefix of their stable reasons."""

    attempts: str = "sign-ins"
    account: str = "account"
    reason_prefix: str = "SIGN_IN"


SIGN_IN = Wording()
WORKLOAD_EXCHANGE = Wording("workload token exchanges", "workload", "WORKLOAD_EXCHANGE")
"""Failed ExchangeWorkloadToken calls, counted per (workload, source) and per source."""


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class _Failures:
    count: int = 0
    pending: int = 0
    last: float = 0.0
    wait_until: float = 0.0


@dataclass(frozen=True)
class Attempt:
    """An admitted password check, to be settled with its outcome."""

    account: str
    source: str


class SignInLimiter:
    """Admits password checks per source and per (account, source); see the module docstring.

    Only failures count: a source's budget is a token bucket that a failed check spends and a
    successful one gives back, and an (account, source) pair backs off exponentially after a
    few failures, while a success clears it. An admitted check holds its place until settled,
    so concurrent guesses cannot all slip through on the same budget. Not thread-safe: it
    lives on the event loop, like the servicers that call it.
    """

    def __init__(
        self,
        limits: SignInLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wording: Wording = SIGN_IN,
    ) -> None:
        self._limits = limits or SignInLimits()
        self._clock = clock
        self._wording = wording
        self._sources: OrderedDict[str, _Bucket] = OrderedDict()
        self._failures: OrderedDict[tuple[str, str], _Failures] = OrderedDict()

    def admit(self, account: str, source: str) -> Attempt:
        """Reserves a check for ``account`` from ``source``, or raises TooManyAttempts."""
        limits, now, words = self._limits, self._clock(), self._wording
        failures = self._failures.get((account, source))
        if failures is not None and now - failures.last > limits.forget_after_seconds:
            del self._failures[(account, source)]
            failures = None
        if failures is not None:
            if now < failures.wait_until:
                raise TooManyAttempts(
                    f"too many failed {words.attempts} for this {words.account} from your address",
                    reason=f"{words.reason_prefix}_BACKOFF",
                    retry_after=failures.wait_until - now,
                )
            if failures.pending and failures.count + failures.pending >= limits.free_failures:
                # The outcome of the check in flight decides how long the next one waits.
                raise TooManyAttempts(
                    f"an earlier attempt for this {words.account} from your address is still"
                    " being checked",
                    reason=f"{words.reason_prefix}_BACKOFF",
                    retry_after=1,
                )
        bucket = self._bucket(source, now)
        if bucket.tokens < 1:
            raise TooManyAttempts(
                f"too many failed {words.attempts} from your address",
                reason=f"{words.reason_prefix}_RATE_LIMITED",
                retry_after=(1 - bucket.tokens) * 60 / limits.source_per_minute,
            )
        bucket.tokens -= 1
        if failures is None:
            failures = self._failures[(account, source)] = _Failures(last=now)
        failures.pending += 1
        self._prune()
        return Attempt(account, source)

    def settle(self, attempt: Attempt, *, succeeded: bool | None) -> None:
        """Records an admitted check's outcome; ``None`` when no password was checked."""
        limits, now = self._limits, self._clock()
        key = (attempt.account, attempt.source)
        failures = self._failures.get(key)
        if succeeded is not False:  # A success, or no check at all, gives the budget back.
            self._refund(attempt.source, now)
        if failures is None:
            return
        failures.pending = max(0, failures.pending - 1)
        if succeeded:
            failures.count, failures.wait_until = 0, 0.0
        elif succeeded is False:
            failures.count += 1
            failures.last = now
            over = failures.count - limits.free_failures
            if over >= 0:
                delay = min(limits.backoff_seconds * 2**over, limits.max_backoff_seconds)
                failures.wait_until = now + delay
            self._failures.move_to_end(key)
        if failures.count == 0 and failures.pending == 0:
            del self._failures[key]

    def _bucket(self, source: str, now: float) -> _Bucket:
        limits = self._limits
        bucket = self._sources.get(source)
        if bucket is None:
            bucket = self._sources[source] = _Bucket(float(limits.source_burst), now)
        else:
            refill = (now - bucket.at) * limits.source_per_minute / 60
            bucket.tokens = min(float(limits.source_burst), bucket.tokens + refill)
            bucket.at = now
            self._sources.move_to_end(source)
        return bucket

    def _refund(self, source: str, now: float) -> None:
        bucket = self._bucket(source, now)
        bucket.tokens = min(float(self._limits.source_burst), bucket.tokens + 1)

    def _prune(self) -> None:
        # Oldest first: a full bucket or a long-quiet failure record carries no information.
        # Past the bound the oldest entries go even if they still count, which is the price
        # of bounded memory; each source's own budget still holds while its entry lives.
        limits = self._limits
        for table in (self._sources, self._failures):
            while len(table) > limits.max_entries:
                table.popitem(last=False)


# Linux's "nice" for the hashing threads: when they and the event loop want the same core,
# the scheduler gives the loop about nine tenths of it.
HASHING_NICENESS = 10


def _lower_this_threads_priority() -> None:
    # On Linux a thread is a task with its own niceness; elsewhere this would renice the
    # whole process, so it is left alone there.
    if sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICENESS)


class HashingPool:
    """Threads of their own for scrypt, with a bounded number of checks waiting.

    ``threads`` bounds the CPU password hashing can take (scrypt releases the GIL, so each
    thread can use a core), and the threads run at a lower priority than the event loop, so
    even on one core other RPCs keep most of the CPU; ``queue`` bounds how many checks may
    wait for a thread. A check keeps its place until its hash finishes, even when its caller
    gave up, so cancelled calls cannot pile up unbounded work behind the count.
    """

    def __init__(self, *, threads: int, queue: int) -> None:
        if threads < 1 or queue < 0:
            raise ValueError("a hashing pool needs at least one thread and a queue of 0 or more")
        self._executor = ThreadPoolExecutor(
            max_workers=threads,
            thread_name_prefix="scrypt",
            initializer=_lower_this_threads_priority,
        )
        self._threads = threads
        self._capacity = threads + queue
        self._lock = threading.Lock()
        self._pending = 0
        # A moving average of one hash's duration, for the retry delay a refusal suggests.
        self._seconds_per_hash = 0.1

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Runs ``fn`` (a hash) on the pool, or raises TooManyAttempts when the pool is full."""
        with self._lock:
            if self._pending >= self._capacity:
                raise TooManyAttempts(
                    "too many password checks are waiting",
                    reason="PASSWORD_CHECKS_BUSY",
                    retry_after=self._capacity * self._seconds_per_hash / self._threads,
                )
            self._pending += 1
        future = self._executor.submit(self._timed, functools.partial(fn, *args, **kwargs))
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _timed(self, call: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return call()
        finally:
            elapsed = time.perf_counter() - started
            self._seconds_per_hash = 0.8 * self._seconds_per_hash + 0.2 * elapsed

    def _release(self, _: Future[Any]) -> None:
        with self._lock:
            self._pending -= 1

    def close(self) -> None:
        """Stops the threads once the hashes already running finish; queued ones are dropped."""
        self._executor.shutdown(wait=False, cancel_futures=True)
