"""Tests of the cached() decorator: memoising, single flight under threads and asyncio."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from typing import Any

import cachetools
import pytest

from boundkit import BoundedCache, ConfigError, cached
from boundkit.testing import assert_no_growth


def test_memoises_and_reports_like_functools() -> None:
    """Repeated calls hit; cache_info counts; cache_clear empties and resets."""
    calls: list[int] = []

    @cached(maxsize=2)
    def square(n: int) -> int:
        calls.append(n)
        return n * n

    assert [4, 4, 9, 16, 4] == [square(2), square(2), square(3), square(4), square(2)]
    assert [2, 3, 4, 2] == calls
    assert (1, 4, 2, 2) == tuple(square.cache_info())
    square.cache_clear()
    assert (0, 0, 2, 0) == tuple(square.cache_info())
    assert "square" == square.__name__


def test_default_is_a_bounded_cache_of_128() -> None:
    """With neither a cache nor bounds, the cache holds 128 entries."""

    @cached()
    def ident(n: int) -> int:
        return n

    assert isinstance(ident.cache, BoundedCache)
    assert 128 == ident.cache.maxsize


def test_ttl_alone_gets_the_default_entry_bound() -> None:
    """@cached(ttl=60) holds at most 128 entries, as lru_cache would; max_bytes alone does not."""

    @cached(ttl=60)
    def ident(n: int) -> int:
        return n

    for n in range(300):
        ident(n)
    assert 128 == ident.cache.maxsize
    assert 128 == ident.cache_info().currsize
    assert 60 == ident.cache.ttl
    assert cached(max_bytes="1M")(ident).cache.maxsize is None


def test_accepts_any_cache_but_not_a_cache_and_bounds() -> None:
    """A given cache is used as is; giving bounds as well is a ConfigError."""
    cache = cachetools.LRUCache(maxsize=4)

    @cached(cache)
    def ident(n: int) -> int:
        return n

    ident(1)
    assert {cachetools.keys.hashkey(1): 1} == dict(cache)
    with pytest.raises(ConfigError, match="either a cache or bounds"):
        cached(cache, maxsize=3)


def test_methods_key_on_the_instance() -> None:
    """As a method decorator, each instance gets its own entries."""

    class Scaler:
        def __init__(self, factor: int) -> None:
            self.factor = factor

        @cached(maxsize=8)
        def scale(self, n: int) -> int:
            return n * self.factor

    assert (20, 30) == (Scaler(2).scale(10), Scaler(3).scale(10))


def test_threads_missing_the_same_key_compute_once() -> None:
    """Eight threads missing one key run the function once and all get its result."""
    release = threading.Event()
    calls: list[int] = []

    @cached(maxsize=8)
    def slow(n: int) -> list[int]:
        calls.append(n)
        release.wait(5)
        return [n]

    results: list[list[int]] = []
    threads = [threading.Thread(target=lambda: results.append(slow(7))) for _ in range(8)]
    for thread in threads:
        thread.start()
    while not calls:
        threading.Event().wait(0.001)
    threading.Event().wait(0.05)  # let the others reach the wait
    release.set()
    for thread in threads:
        thread.join()
    assert [7] == calls
    assert 8 == len(results)
    assert all(result is results[0] for result in results)
    assert (7, 1) == tuple(slow.cache_info())[:2]


def test_an_exception_reaches_every_waiting_thread_and_is_not_cached() -> None:
    """The leader's exception is raised in every waiter; the next call computes again."""
    release = threading.Event()
    calls: list[int] = []

    @cached(maxsize=8)
    def failing(n: int) -> int:
        calls.append(n)
        release.wait(5)
        if len(calls) == 1:
            raise LookupError("backend down")
        return n

    errors: list[BaseException] = []

    def call() -> None:
        try:
            failing(1)
        except LookupError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    while not calls:
        threading.Event().wait(0.001)
    threading.Event().wait(0.05)
    release.set()
    for thread in threads:
        thread.join()
    assert 6 == len(errors)
    assert [1] == calls
    assert 1 == failing(1)
    assert [1, 1] == calls


def test_asyncio_tasks_missing_the_same_key_await_one_computation() -> None:
    """Concurrent coroutines on one key await a single call of the coroutine function."""
    calls: list[int] = []

    @cached(maxsize=8)
    async def fetch(n: int) -> dict[str, int]:
        calls.append(n)
        await asyncio.sleep(0.01)
        return {"n": n}

    async def main() -> list[dict[str, int]]:
        return await asyncio.gather(*(fetch(3) for _ in range(10)))

    results = asyncio.run(main())
    assert [3] == calls
    assert all(result is results[0] for result in results)
    assert (9, 1) == tuple(fetch.cache_info())[:2]
    assert {"n": 3} == asyncio.run(main())[0]
    assert [3] == calls


def test_asyncio_exception_reaches_every_waiter_and_is_not_cached() -> None:
    """A failing coroutine's exception reaches all waiting tasks; nothing is cached."""
    calls: list[int] = []

    @cached(maxsize=8)
    async def fetch(n: int) -> int:
        calls.append(n)
        await asyncio.sleep(0.01)
        if len(calls) == 1:
            raise LookupError("backend down")
        return n

    async def main() -> list[Any]:
        return await asyncio.gather(*(fetch(5) for _ in range(4)), return_exceptions=True)

    outcomes = asyncio.run(main())
    assert 4 == len(outcomes)
    assert all(isinstance(outcome, LookupError) for outcome in outcomes)
    assert [5] == calls
    assert [5, 5, 5, 5] == asyncio.run(main())
    assert [5, 5] == calls


def test_asyncio_cancelled_leader_hands_over_to_a_waiter() -> None:
    """If the computing task is cancelled, a waiting task computes instead."""
    calls: list[int] = []

    @cached(maxsize=8)
    async def fetch(n: int) -> int:
        calls.append(n)
        await asyncio.sleep(0.02)
        return n

    async def main() -> int:
        leader = asyncio.create_task(fetch(1))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(fetch(1))
        await asyncio.sleep(0.005)
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        return await waiter

    assert 1 == asyncio.run(main())
    assert [1, 1] == calls


def test_zero_growth_including_the_error_path() -> None:
    """Hits, misses with eviction, and raising calls hold memory still."""
    counter = iter(range(10**12))

    @cached(maxsize=100)
    def compute(n: int) -> bytes:
        if n % 3 == 0:
            raise LookupError(n)
        return bytes(n % 200)

    def churn() -> None:
        n = next(counter)
        try:
            compute(n * 3)
        except LookupError:
            pass
        else:
            raise AssertionError("the exception was cached")
        compute(n * 3 + 1)
        compute(n * 3 + 1)

    assert_no_growth(churn, calls=3_000, rounds=5)


def test_importing_the_cache_does_not_load_asyncio() -> None:
    """Sync-only users do not pay for asyncio: it is imported on the first async call."""
    code = "import sys, boundkit.cache; print('asyncio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "False" == out.stdout.strip()
