"""SignIn's guards in isolation: the limiter on a fake clock, the hashing pool, their settings."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from pathlib import Path

import pytest

from services.auth.config import AuthConfig
from services.auth.limits import (
    HashingPool,
    SignInLimiter,
    SignInLimits,
    TooManyAttempts,
    source_of,
)
from sevvo.runtime.config import ConfigError

ALICE = "alice@acme.example"
HOME = "198.51.100.7"
ATTACKER = "203.0.113.9"


class FakeClock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limiter(clock: FakeClock, **limits: float) -> SignInLimiter:
    return SignInLimiter(SignInLimits(**limits), clock=clock)  # type: ignore[arg-type]


def _fail(limiter: SignInLimiter, account: str, source: str, times: int = 1) -> None:
    for _ in range(times):
        limiter.settle(limiter.admit(account, source), succeeded=False)


def _refusal(limiter: SignInLimiter, account: str, source: str) -> TooManyAttempts:
    with pytest.raises(TooManyAttempts) as caught:
        limiter.admit(account, source)
    return caught.value


def test_a_source_is_refused_once_its_failure_budget_is_spent() -> None:
    """Failures beyond the burst are refused with SIGN_IN_RATE_LIMITED and a retry delay."""
    clock = FakeClock()
    limiter = _limiter(clock, source_burst=3, source_per_minute=6, free_failures=100)
    for n in range(3):
        _fail(limiter, f"user{n}@acme.example", ATTACKER)
    refused = _refusal(limiter, "user9@acme.example", ATTACKER)
    assert (refused.reason, refused.retry_after) == ("SIGN_IN_RATE_LIMITED", 10)


def test_a_spent_budget_refills_with_time() -> None:
    """After the retry delay one more attempt is admitted."""
    clock = FakeClock()
    limiter = _limiter(clock, source_burst=1, source_per_minute=6, free_failures=100)
    _fail(limiter, ALICE, ATTACKER)
    clock.now += 10
    limiter.admit(ALICE, ATTACKER)


def test_successes_do_not_spend_the_source_budget() -> None:
    """An office behind one address can sign many people in without being limited."""
    clock = FakeClock()
    limiter = _limiter(clock, source_burst=2, source_per_minute=1)
    for n in range(20):
        limiter.settle(limiter.admit(f"user{n}@acme.example", HOME), succeeded=True)
    limiter.admit(ALICE, HOME)


def test_concurrent_attempts_cannot_overdraw_the_budget() -> None:
    """Checks still in flight hold their place, so a burst of parallel guesses is cut off."""
    clock = FakeClock()
    limiter = _limiter(clock, source_burst=3, free_failures=100)
    for n in range(3):
        limiter.admit(f"user{n}@acme.example", ATTACKER)
    assert _refusal(limiter, ALICE, ATTACKER).reason == "SIGN_IN_RATE_LIMITED"


def test_an_unchecked_attempt_gives_its_place_back() -> None:
    """An attempt that never reached a password check (pool busy) costs no budget."""
    clock = FakeClock()
    limiter = _limiter(clock, source_burst=1)
    limiter.settle(limiter.admit(ALICE, HOME), succeeded=None)
    limiter.admit(ALICE, HOME)


def test_an_account_backs_off_exponentially_after_free_failures() -> None:
    """After the free failures each wait doubles, with SIGN_IN_BACKOFF and the exact delay."""
    clock = FakeClock()
    limiter = _limiter(clock, free_failures=3, backoff_seconds=2, source_burst=1000)
    _fail(limiter, ALICE, ATTACKER, times=3)
    first = _refusal(limiter, ALICE, ATTACKER)
    assert (first.reason, first.retry_after) == ("SIGN_IN_BACKOFF", 2)
    clock.now += 2
    _fail(limiter, ALICE, ATTACKER)
    assert _refusal(limiter, ALICE, ATTACKER).retry_after == 4


def test_backoff_is_capped() -> None:
    """The wait never grows past max_backoff_seconds."""
    clock = FakeClock()
    limiter = _limiter(
        clock, free_failures=1, backoff_seconds=1, max_backoff_seconds=30, source_burst=1000
    )
    for _ in range(12):
        _fail(limiter, ALICE, ATTACKER)
        clock.now += 3600 - 1  # Past any wait, inside the forget window.
    _fail(limiter, ALICE, ATTACKER)
    assert _refusal(limiter, ALICE, ATTACKER).retry_after == 30


def test_an_attacker_cannot_lock_the_real_user_out() -> None:
    """Failures from one address leave the same account untouched from the owner's address."""
    clock = FakeClock()
    limiter = _limiter(clock, free_failures=3, source_burst=3)
    _fail(limiter, ALICE, ATTACKER, times=3)
    assert _refusal(limiter, ALICE, ATTACKER).reason in {"SIGN_IN_BACKOFF", "SIGN_IN_RATE_LIMITED"}
    limiter.settle(limiter.admit(ALICE, HOME), succeeded=True)


def test_a_success_clears_the_account_backoff() -> None:
    """A right password resets the count, so a few later typos start from zero."""
    clock = FakeClock()
    limiter = _limiter(clock, free_failures=3, source_burst=1000)
    _fail(limiter, ALICE, HOME, times=2)
    limiter.settle(limiter.admit(ALICE, HOME), succeeded=True)
    _fail(limiter, ALICE, HOME, times=2)
    limiter.admit(ALICE, HOME)


def test_parallel_checks_of_a_backed_off_account_wait_for_the_one_in_flight() -> None:
    """At the backoff threshold only one check of an account per source runs at a time."""
    clock = FakeClock()
    limiter = _limiter(clock, free_failures=3, source_burst=1000)
    _fail(limiter, ALICE, ATTACKER, times=2)
    limiter.admit(ALICE, ATTACKER)
    assert _refusal(limiter, ALICE, ATTACKER).reason == "SIGN_IN_BACKOFF"


def test_memory_is_bounded_whatever_is_tried() -> None:
    """Past max_entries the oldest records go; the tables never grow beyond the bound."""
    clock = FakeClock()
    limiter = _limiter(clock, max_entries=50, source_burst=1000)
    for n in range(500):
        _fail(limiter, f"user{n}@acme.example", f"10.0.{n // 250}.{n % 250}")
    assert len(limiter._sources) <= 50
    assert len(limiter._failures) <= 50


@pytest.mark.parametrize(
    ("peer", "source"),
    [
        ("ipv4:198.51.100.7:53122", "198.51.100.7"),
        ("ipv6:[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"),
        ("ipv6:%5B2001:db8:1:2::9%5D:443", "2001:db8:1:2::/64"),
        ("ipv6:[::1]:40000", "::/64"),
        ("unix:/run/sevvo.sock", "unix"),
    ],
)
def test_sources_are_addresses_without_ports_and_ipv6_as_a_64(peer: str, source: str) -> None:
    """A caller counts by address (IPv6 by its /64), never by the port it dialled from."""
    assert source_of(peer) == source


def _blocking_hash(release: threading.Event) -> str:
    release.wait(10)
    return "hashed"


def test_a_full_hashing_pool_refuses_at_once_with_a_retry_delay() -> None:
    """With threads + queue checks pending, the next is refused, not queued."""

    async def scenario() -> None:
        pool = HashingPool(threads=1, queue=1)
        release = threading.Event()
        try:
            pending = [asyncio.ensure_future(pool.run(_blocking_hash, release)) for _ in range(2)]
            await asyncio.sleep(0.05)
            with pytest.raises(TooManyAttempts) as caught:
                await pool.run(_blocking_hash, release)
            assert caught.value.reason == "PASSWORD_CHECKS_BUSY"
            assert caught.value.retry_after >= 1
            release.set()
            assert await asyncio.gather(*pending) == ["hashed", "hashed"]
            assert await pool.run(str.upper, "ok") == "OK"
        finally:
            release.set()
            pool.close()

    asyncio.run(scenario())


def test_a_cancelled_check_keeps_its_place_until_its_hash_ends() -> None:
    """Callers that give up cannot pile unbounded work behind the pool's count."""

    async def scenario() -> None:
        pool = HashingPool(threads=1, queue=0)
        release = threading.Event()
        try:
            running = asyncio.ensure_future(pool.run(_blocking_hash, release))
            await asyncio.sleep(0.05)
            running.cancel()
            await asyncio.sleep(0.05)
            with pytest.raises(TooManyAttempts):
                await pool.run(str.upper, "queued behind a cancelled hash")
            release.set()
            await asyncio.sleep(0.1)
            assert await pool.run(str.upper, "ok") == "OK"
        finally:
            release.set()
            pool.close()

    asyncio.run(scenario())


def test_hashing_leaves_the_default_thread_pool_free() -> None:
    """Other RPCs' blocking work (asyncio.to_thread) runs at once while every hasher is busy."""

    async def scenario() -> None:
        pool = HashingPool(threads=2, queue=30)
        release = threading.Event()
        try:
            hashes = [asyncio.ensure_future(pool.run(_blocking_hash, release)) for _ in range(32)]
            await asyncio.sleep(0.05)
            started = time.perf_counter()
            await asyncio.to_thread(time.sleep, 0)
            assert time.perf_counter() - started < 0.5
            release.set()
            await asyncio.gather(*hashes)
        finally:
            release.set()
            pool.close()

    asyncio.run(scenario())


def _auth_env(tmp_path: Path) -> dict[str, str]:
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_text("x")
    (tmp_path / "kek").write_text(base64.b64encode(b"k" * 32).decode())
    return {
        "SEVVO_DATABASE_URL": "postgresql://auth@db/sevvo",
        "SEVVO_TLS_CERT_FILE": str(tmp_path / "tls.crt"),
        "SEVVO_TLS_KEY_FILE": str(tmp_path / "tls.key"),
        "SEVVO_AUTH_KEK_FILE": str(tmp_path / "kek"),
    }


def test_the_guards_are_configured_from_the_environment(tmp_path: Path) -> None:
    """Hashing threads, queue and the sign-in budgets come from SEVVO_AUTH_* variables."""
    config = AuthConfig.load(
        {
            **_auth_env(tmp_path),
            "SEVVO_AUTH_HASHING_THREADS": "3",
            "SEVVO_AUTH_HASHING_QUEUE": "0",
            "SEVVO_AUTH_SIGN_IN_BURST": "7",
            "SEVVO_AUTH_SIGN_IN_PER_MINUTE": "2.5",
            "SEVVO_AUTH_SIGN_IN_FREE_FAILURES": "4",
        }
    )
    assert (config.hashing_threads, config.hashing_queue) == (3, 0)
    limits = config.sign_in_limits
    assert (limits.source_burst, limits.source_per_minute, limits.free_failures) == (7, 2.5, 4)


@pytest.mark.parametrize(
    "variable",
    ["SEVVO_AUTH_HASHING_THREADS", "SEVVO_AUTH_SIGN_IN_BURST", "SEVVO_AUTH_SIGN_IN_PER_MINUTE"],
)
def test_a_guard_set_to_zero_is_refused_naming_the_variable(tmp_path: Path, variable: str) -> None:
    """Zero threads or a zero budget would refuse every sign-in: a start-up error instead."""
    with pytest.raises(ConfigError) as caught:
        AuthConfig.load({**_auth_env(tmp_path), variable: "0"})
    assert variable in str(caught.value)
