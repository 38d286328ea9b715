"""The rate-limit counter stores in this process: the table shared by one host's workers, and the Redis breaker.

The clocks are driven by the tests; the only real processes are the ones that race on one table.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from limits import parse
from limits.strategies import SlidingWindowCounterRateLimiter

from tenantry.counters import (
    Breaker,
    BreakerRedisStorage,
    CounterStoreUnavailable,
    SharedCounters,
    create_table,
)
from tests.livesrv import HungRedis


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def table(tmp_path: Path) -> Iterator[Path]:
    path = create_table(1024, directory=str(tmp_path))
    yield path
    path.unlink()


def test_two_processes_mapping_one_table_count_together(table):
    clock = Clock()
    one, two = (SlidingWindowCounterRateLimiter(SharedCounters(path=str(table), clock=clock)) for _ in range(2))
    assert one.storage.shared and two.storage.shared
    ten = parse("10/minute")
    answers = [(one if i % 2 else two).hit(ten, "login", "ada") for i in range(12)]
    assert answers == [True] * 10 + [False] * 2
    assert one.get_window_stats(ten, "login", "ada").remaining == 0
    assert two.hit(ten, "login", "grace")  # another key has its own count


def test_a_window_starts_at_its_first_hit_and_slides_by_the_previous_share():
    clock = Clock(1_000_030.0)  # mid-minute of the epoch: a key's window does not follow the clock's minutes
    limiter = SlidingWindowCounterRateLimiter(SharedCounters(clock=clock))
    ten = parse("10/minute")
    assert [limiter.hit(ten, "k") for _ in range(10)] == [True] * 10
    clock.now += 59.9  # still the first window of the key: nothing passes
    assert not limiter.hit(ten, "k")
    clock.now += 0.1 + 30  # half-way through the second window: the first's 10 weigh 5
    stats = limiter.get_window_stats(ten, "k")
    assert stats.remaining == 5
    assert [limiter.hit(ten, "k") for _ in range(6)] == [True] * 5 + [False]
    clock.now += 120  # both windows passed: the slot starts afresh
    assert [limiter.hit(ten, "k") for _ in range(11)] == [True] * 10 + [False]


def test_a_full_bucket_restarts_the_counter_nearest_its_end_and_warns_once(caplog):
    clock = Clock()
    counters = SharedCounters(slots=8, clock=clock)  # one bucket of eight
    limiter = SlidingWindowCounterRateLimiter(counters)
    one = parse("1/minute")
    for i in range(8):
        assert limiter.hit(one, f"k{i}")
        clock.now += 1
    with caplog.at_level(logging.WARNING, logger="tenantry.limits"):
        assert limiter.hit(one, "k8") and limiter.hit(one, "k9")
    # k0 and then k1 were nearest their end: they count afresh; the others still hold.
    assert not limiter.hit(one, "k7")
    assert limiter.hit(one, "k0")
    assert [r.getMessage() for r in caplog.records].count(
        "rate-limit table full: 1 counters restarted so far; raise TENANTRY_RATE_LIMIT_SLOTS"
    ) == 1
    assert len(caplog.records) == 1


def test_a_new_table_removes_those_whose_creator_died(tmp_path):
    gone = multiprocessing.get_context("spawn").Process(target=int)
    gone.start()
    gone.join(30)
    orphan = tmp_path / f"tenantry-ratelimits-{gone.pid}-abc"
    orphan.write_bytes(b"")
    mine = create_table(1024, directory=str(tmp_path))
    assert mine.name.startswith(f"tenantry-ratelimits-{os.getpid()}-")
    assert not orphan.exists()
    create_table(1024, directory=str(tmp_path))
    assert mine.exists()  # its creator (this process) is alive


def test_serve_starts_one_worker_when_no_table_can_be_made(monkeypatch, caplog):
    from tenantry import cli, counters
    from tenantry.settings import Settings

    def no_room(slots: int, directory: str | None = None) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(counters, "create_table", no_room)
    monkeypatch.delenv(counters.TABLE_ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger="tenantry.limits"):
        assert cli._rate_limit_table(Settings(), 4) == (None, 1)
    assert "serving with one worker so the limits hold" in caplog.text
    assert counters.TABLE_ENV not in os.environ


def test_no_thread_is_started_to_expire_counters():
    before = threading.active_count()
    limiter = SlidingWindowCounterRateLimiter(SharedCounters(slots=1024))
    for i in range(200):
        assert limiter.hit(parse("1000/second"), f"k{i % 7}")
    assert threading.active_count() == before


def test_an_unusable_table_file_counts_in_this_process_and_says_so(tmp_path, caplog):
    bogus = tmp_path / "not-a-table"
    bogus.write_bytes(b"x" * 100)
    with caplog.at_level(logging.WARNING, logger="tenantry.limits"):
        counters = SharedCounters(path=str(bogus))
    assert not counters.shared
    assert "this process counts alone" in caplog.text
    assert SlidingWindowCounterRateLimiter(counters).hit(parse("1/minute"), "k")


def _race(path: str, attempts: int, start: multiprocessing.synchronize.Event, results: multiprocessing.Queue) -> None:
    limiter = SlidingWindowCounterRateLimiter(SharedCounters(path=path))
    budget = parse("1000/minute")
    start.wait(30)
    results.put(sum(limiter.hit(budget, "race") for _ in range(attempts)))


def test_processes_racing_on_one_key_admit_exactly_the_budget(table):
    context = multiprocessing.get_context("spawn")  # as uvicorn starts its workers
    start, results = context.Event(), context.Queue()
    workers = [context.Process(target=_race, args=(str(table), 400, start, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    start.set()
    admitted = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(30)
    assert sum(admitted) == 1000, admitted  # 1,600 tries, each counted once, whichever process made it


def test_the_breaker_opens_once_fails_fast_and_probes_after_the_cool_down(caplog):
    clock = Clock()
    breaker = Breaker("the store", retry_after=5, clock=clock)
    calls = []

    def failing() -> None:
        calls.append(clock.now)
        raise TimeoutError("Timeout reading from socket")

    def working() -> str:
        calls.append(clock.now)
        return "ok"

    with caplog.at_level(logging.INFO, logger="tenantry.limits"):
        assert breaker.call(working, TimeoutError) == "ok"
        with pytest.raises(CounterStoreUnavailable):
            breaker.call(failing, TimeoutError)
        assert breaker.is_open and len(calls) == 2
        for _ in range(50):  # open: nothing is asked
            clock.now += 0.09
            with pytest.raises(CounterStoreUnavailable):
                breaker.call(working, TimeoutError)
        assert len(calls) == 2
        clock.now += 0.6  # the cool-down has passed: one probe, which fails and opens it again silently
        with pytest.raises(CounterStoreUnavailable):
            breaker.call(failing, TimeoutError)
        assert len(calls) == 3
        with pytest.raises(CounterStoreUnavailable):
            breaker.call(working, TimeoutError)
        assert len(calls) == 3
        clock.now += 5
        assert breaker.call(working, TimeoutError) == "ok" and not breaker.is_open
        assert breaker.call(working, TimeoutError) == "ok" and len(calls) == 5
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        (
            "WARNING",
            "the store unreachable (TimeoutError: Timeout reading from socket): rate limits are not "
            "applied (failing open); trying it again in 5 s",
        ),
        ("INFO", "the store reachable again: rate limits apply"),
    ]


def test_only_one_probe_runs_at_a_time():
    clock = Clock()
    breaker = Breaker("the store", retry_after=5, clock=clock)

    def refused() -> None:
        raise ConnectionError("refused")

    with pytest.raises(CounterStoreUnavailable):
        breaker.call(refused, ConnectionError)
    clock.now += 5
    entered, release = threading.Event(), threading.Event()

    def slow_probe() -> str:
        entered.set()
        release.wait(10)
        return "ok"

    probe = threading.Thread(target=lambda: breaker.call(slow_probe, ConnectionError))
    probe.start()
    assert entered.wait(10)
    with pytest.raises(CounterStoreUnavailable):  # while the probe runs, others do not ask
        breaker.call(lambda: "asked", ConnectionError)
    release.set()
    probe.join(10)
    assert breaker.call(lambda: "asked", ConnectionError) == "asked"


def test_a_hung_redis_is_asked_once_per_cool_down():
    hung = HungRedis()
    try:
        storage = BreakerRedisStorage(
            f"tenantry-redis://127.0.0.1:{hung.port}/0", retry_after=60, socket_timeout=0.2, socket_connect_timeout=0.2
        )
        limiter = SlidingWindowCounterRateLimiter(storage)
        for _ in range(20):
            with pytest.raises(CounterStoreUnavailable):
                limiter.hit(parse("10/minute"), "k")
        assert len(hung.accepted) == 1
        assert not storage.check()  # asked through the breaker too
        assert len(hung.accepted) == 1
    finally:
        hung.close()


@pytest.mark.parametrize("shared", [True, False])
def test_keys_chosen_to_share_a_counters_bucket_do_not_evict_it(tmp_path, shared):
    """Review (issue 12): a key's bucket came from an unkeyed hash of the key's name, which a client
    can compute (the names follow from an email address). Eight made-up emails picked offline to
    land in a victim's bucket evicted the victim's login counter, so the per-account limit
    restarted at will. The bucket must not be predictable from outside."""
    import hashlib

    slots = 1024
    path = str(create_table(slots, directory=str(tmp_path))) if shared else ""
    clock = Clock()
    limiter = SlidingWindowCounterRateLimiter(SharedCounters(path=path, slots=slots, clock=clock))
    ten = parse("10/minute")
    victim = ten.key_for("auth-account", "email:victim")
    buckets = slots // 8

    def bucket(key: str) -> int:  # what an attacker computes: the digest as the table took it
        return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=16).digest()[:8], "little") % buckets

    colliding = [
        f"email:{n}" for n in range(200_000) if bucket(ten.key_for("auth-account", f"email:{n}")) == bucket(victim)
    ][:8]
    assert len(colliding) == 8
    assert [limiter.hit(ten, "auth-account", "email:victim") for _ in range(11)] == [True] * 10 + [False]
    clock.now += 1
    for name in colliding:
        assert limiter.hit(ten, "auth-account", name)
    assert not limiter.hit(ten, "auth-account", "email:victim"), "the victim's counter was evicted"
