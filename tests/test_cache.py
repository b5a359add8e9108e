"""Tests of boundkit.cache.BoundedCache: bounds, TTL, eviction reasons, threads, growth."""

from __future__ import annotations

import copy
import itertools
import logging
import math
import pickle
import random
import sys
import threading
import unittest
from collections import OrderedDict
from typing import Any

import cachetools
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from _cachetools_mixin import CacheTestMixin
from boundkit import BoundedCache, CacheStats, ConfigError, estimate_size
from boundkit.testing import assert_no_growth


class Clock:
    """A fake timer the tests move by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0) -> None:
        self.now += seconds


class Recorder:
    """An on_evict callback that remembers what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, Any, str]] = []

    def __call__(self, key: Any, value: Any, reason: str) -> None:
        self.calls.append((key, value, reason))


class AlwaysLocked(BoundedCache[Any, Any]):
    """The lookups a free-threaded CPython (no GIL) runs: every one under the lock."""

    __getitem__ = BoundedCache._locked_getitem  # type: ignore[assignment]
    get = BoundedCache._locked_get  # type: ignore[assignment]


def by_bytes(max_bytes: int) -> BoundedCache[Any, Any]:
    """A cache bounded only by bytes, where an int value weighs itself."""
    return BoundedCache(max_bytes=max_bytes, sizeof=lambda value: value)


class TestCachetoolsContract(unittest.TestCase, CacheTestMixin):
    """cachetools' own cache contract (vendored mixin), run against BoundedCache.

    The overrides below are the deliberate differences listed in docs/cache.md:
    ``maxsize`` counts entries and bytes are bounded by ``max_bytes`` with
    ``sizeof``; zero and unbounded caches are configuration errors; an
    oversized value is rejected silently instead of raising ValueError.
    """

    Cache = BoundedCache

    def test_defaults(self) -> None:
        """A new cache is empty, has its bound, and sizes values with estimate_size."""
        cache = BoundedCache(maxsize=1)
        assert 0 == len(cache)
        assert 1 == cache.maxsize
        assert 0 == cache.currsize
        assert estimate_size is cache._sizeof
        assert repr(cache).startswith("BoundedCache(")

    def test_maxsize_zero(self) -> None:
        """maxsize=0 is a configuration error, not a cache that stores nothing."""
        with pytest.raises(ConfigError, match="maxsize must be positive, got 0"):
            BoundedCache(maxsize=0)

    def test_maxsize_infinite(self) -> None:
        """maxsize=inf alone leaves the cache unbounded: refused; with max_bytes it works."""
        with pytest.raises(ConfigError, match="at least one finite bound"):
            BoundedCache(maxsize=math.inf)  # type: ignore[arg-type]
        cache = BoundedCache(maxsize=math.inf, max_bytes=10**6)  # type: ignore[arg-type]
        cache.update((i, i) for i in range(100))
        assert 100 == len(cache)

    def _sizes(self, n_values: list[int]) -> None:
        for n in n_values:
            source = BoundedCache(maxsize=n)
            source.update((i, i) for i in range(n))
            for clone in (copy.copy(source), copy.deepcopy(source)):
                assert n == len(clone)
                assert source == clone
            assert source == pickle.loads(pickle.dumps(source))

    def test_copy_maxsize(self) -> None:
        """Copies keep every entry (maxsize 0 is not a valid cache here)."""
        self._sizes([1, sys.getrecursionlimit() * 2])

    test_deepcopy_maxsize = test_copy_maxsize
    test_pickle_maxsize = test_copy_maxsize

    def test_missing_getsizeof(self) -> None:
        """__missing__ works with a byte bound; an oversized value is simply not stored."""

        class DefaultCache(BoundedCache[int, int]):
            def __missing__(self, key: int) -> int:
                self[key] = key
                return key

        cache = DefaultCache(max_bytes=2, sizeof=lambda value: value)
        assert 1 == cache[1]
        assert 2 == cache[2]
        assert [2] == list(cache)
        assert 3 == cache[3]  # not stored, no error
        assert [2] == list(cache)
        assert 1 == cache.stats().rejections

    def test_getsizeof_param(self) -> None:
        """max_bytes bounds the sum of sizeof; an oversized value is rejected, not raised."""
        cache = by_bytes(3)
        cache.update({1: 1, 2: 2})
        assert 3 == cache.stats().bytes
        cache[1] = 2
        assert {1: 2} == dict(cache.items())
        cache.update({1: 1, 2: 2})
        cache[3] = 3
        assert {3: 3} == dict(cache.items())
        cache[3] = 4  # too large: rejected, and the older value under 3 is gone
        assert {} == dict(cache.items())
        cache[4] = 4
        assert (0, 0, 2) == (len(cache), cache.stats().bytes, cache.stats().rejections)

    test_getsizeof_subclass = test_getsizeof_param

    def test_getsizeof_replace_grow(self) -> None:
        """Growing an entry reserves only the difference, evicting others if needed."""
        cache = by_bytes(10)
        cache[3] = 3
        cache[4] = 4
        cache[4] = 7
        assert ({3: 3, 4: 7}, 10) == (dict(cache.items()), cache.stats().bytes)
        cache[4] = 9
        assert ({4: 9}, 9) == (dict(cache.items()), cache.stats().bytes)

    def test_getsizeof_replace_same_size(self) -> None:
        """Replacing with a value of the same size keeps both entries."""
        cache = by_bytes(10)
        cache[3] = 3
        cache[4] = 4
        cache[4] = 4
        assert ({3: 3, 4: 4}, 7) == (dict(cache.items()), cache.stats().bytes)

    def test_getsizeof_replace_shrink(self) -> None:
        """Shrinking an entry frees bytes."""
        cache = by_bytes(10)
        cache[3] = 3
        cache[4] = 4
        cache[4] = 1
        assert ({3: 3, 4: 1}, 4) == (dict(cache.items()), cache.stats().bytes)

    def test_getsizeof_negative(self) -> None:
        """A negative size is a ConfigError (a ValueError) and nothing is stored."""
        cache = BoundedCache(max_bytes=3, sizeof=lambda value: -1)
        with pytest.raises(ConfigError, match="non-negative int, got -1"):
            cache[1] = 1
        assert (0, 0) == (len(cache), cache.stats().bytes)

    def test_clear_getsizeof(self) -> None:
        """clear() empties the byte count too, and the cache is reusable."""
        cache = by_bytes(10)
        cache.update({1: 1, 2: 2, 3: 3})
        cache.clear()
        assert (0, 0) == (len(cache), cache.stats().bytes)
        cache[4] = 4
        assert (1, 4) == (len(cache), cache.stats().bytes)

    def test_copy_getsizeof(self) -> None:
        """A copy shares sizeof but keeps its own byte count."""
        source = by_bytes(3)
        source.update({1: 1, 2: 2})
        clone = copy.copy(source)
        assert source._sizeof is clone._sizeof
        clone[2] = 1
        assert (2, 3) == (clone.stats().bytes, source.stats().bytes)
        del source[2]
        assert (2, 1) == (clone.stats().bytes, source.stats().bytes)


class TestCachetoolsContractAlwaysLocked(TestCachetoolsContract):
    """The same contract for the lookups a free-threaded build runs (under the lock)."""

    Cache = AlwaysLocked


# -- bounds and configuration -------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "at least one finite bound"),
        ({"maxsize": -1}, "maxsize must be positive, got -1"),
        ({"maxsize": 2.5}, "maxsize must be a whole number, got 2.5"),
        ({"max_bytes": 0}, "max_bytes must be positive, got 0"),
        ({"ttl": math.nan}, "ttl must be positive, got nan"),
        ({"ttl": -3}, "ttl must be positive, got -3"),
        ({"maxsize": True}, "maxsize must be a positive number, got True"),
        ({"max_bytes": "64Q"}, "max_bytes must be a size such as 512M, 1.5G or 4096, got '64Q'"),
        ({"max_bytes": "0M"}, "max_bytes must be positive, got 0"),
        ({"max_bytes": 2.5}, "max_bytes must be a whole number, got 2.5"),
        ({"max_bytes": [1]}, r"max_bytes must be a positive number, got \[1\]"),
    ],
)
def test_bad_bounds_raise_config_error_naming_the_value(options: Any, message: str) -> None:
    """Missing, zero, negative, NaN, fractional and non-numeric bounds are refused clearly."""
    with pytest.raises(ConfigError, match=message):
        BoundedCache(**options)


@pytest.mark.parametrize(
    ("text", "expected"), [("64M", 64 * 1024**2), ("1.5K", 1536), ("4096", 4096)]
)
def test_max_bytes_takes_a_size_string_as_memory_guard_does(text: str, expected: int) -> None:
    """max_bytes and resize(max_bytes=) parse "64M" with the parser MemoryGuard's limit uses."""
    assert expected == BoundedCache(max_bytes=text).max_bytes
    cache: BoundedCache[str, bytes] = BoundedCache(10)
    cache.resize(max_bytes=text)
    assert expected == cache.max_bytes


def test_cachetools_getsizeof_points_to_sizeof_and_max_bytes() -> None:
    """cachetools' getsizeof= is refused naming BoundedCache, sizeof= and max_bytes=."""
    with pytest.raises(TypeError) as caught:
        BoundedCache(1000, getsizeof=len)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith("BoundedCache takes sizeof=, not cachetools' getsizeof=")
    assert "max_bytes=" in message
    assert "CacheCore" not in message


def test_unknown_keyword_names_the_public_class() -> None:
    """A misspelt keyword is a TypeError naming BoundedCache, not an internal base class."""
    with pytest.raises(TypeError, match=r"^BoundedCache\.__init__\(\) got an unexpected"):
        BoundedCache(max_size=3)  # type: ignore[call-arg]


def test_bad_input_raises_and_leaves_the_cache_usable() -> None:
    """An unhashable key or a bad per-entry ttl raises; nothing changes, no lock stays held."""
    cache: BoundedCache[Any, int] = BoundedCache(2, max_bytes=1000)
    cache["kept"] = 1
    for call in (
        lambda: cache.__setitem__([], 2),
        lambda: cache[[]],
        lambda: cache.get([]),
        lambda: cache.pop([], None),
    ):
        with pytest.raises(TypeError, match="unhashable"):
            call()
    with pytest.raises(ConfigError, match="ttl must be positive, got 0"):
        cache.set("new", 3, ttl=0)
    assert {"kept": 1} == dict(cache.items())
    cache["other"] = 4  # the lock was released on every error path
    assert ["kept", "other"] == list(cache)


def test_lru_order_evicts_the_least_recently_used() -> None:
    """A read refreshes recency; `in` and peek do not."""
    cache: BoundedCache[str, int] = BoundedCache(3)
    cache.update({"a": 1, "b": 2, "c": 3})
    assert 1 == cache["a"]
    assert "b" in cache
    assert 2 == cache.peek("b")
    cache["d"] = 4
    assert ["c", "a", "d"] == list(cache)


def test_both_bounds_hold_after_every_insert() -> None:
    """Entries and bytes are each kept under their bound, whichever binds first."""
    cache: BoundedCache[int, bytes] = BoundedCache(5, max_bytes=1000, sizeof=len)
    rng = random.Random(3)
    for key in range(500):
        cache[key] = bytes(rng.randrange(0, 400))
        stats = cache.stats()
        assert stats.entries <= 5
        assert stats.bytes is not None
        assert stats.bytes <= 1000
        assert sum(map(len, cache.values())) == stats.bytes


def test_default_sizeof_counts_estimate_size_exactly() -> None:
    """With the default sizeof, bytes is the sum of estimate_size and max_bytes holds exactly."""
    values = [bytes(n) for n in (100, 250, 600, 2000, 700)]
    budget = sum(estimate_size(v) for v in values[1:4])
    cache: BoundedCache[int, bytes] = BoundedCache(max_bytes=budget)
    for key, value in enumerate(values[:4]):
        cache[key] = value
    assert ([1, 2, 3], budget) == (list(cache), cache.stats().bytes)
    cache[9] = bytes(budget)  # estimate_size adds the object header: too large
    assert ([1, 2, 3], 1) == (list(cache), cache.stats().rejections)
    cache[4] = values[4]  # evicts 1 and 2 to fit
    assert [3, 4] == list(cache)
    assert sum(estimate_size(v) for v in cache.values()) == cache.stats().bytes
    assert cache.stats().bytes <= budget


def test_oversized_value_is_rejected_and_replaces_nothing() -> None:
    """A value larger than max_bytes alone is not stored, drops the older value, raises nothing."""
    seen = Recorder()
    cache = BoundedCache(max_bytes=10, sizeof=len, on_evict=seen)
    cache["k"] = "small"
    cache["other"] = "x"
    cache["k"] = "far too large"
    assert {"other": "x"} == dict(cache.items())
    assert [("k", "small", "replaced"), ("k", "far too large", "rejected")] == seen.calls
    assert (1, 1) == (cache.stats().rejections, cache.stats().bytes)


def test_without_max_bytes_nothing_is_estimated() -> None:
    """With no byte bound sizeof is never called and stats().bytes is None."""

    def sizeof(value: object) -> int:
        raise AssertionError("sizeof called without max_bytes")

    cache = BoundedCache(2, sizeof=sizeof)
    cache["a"] = "value"
    assert cache.stats().bytes is None


# -- TTL -------------------------------------------------------------------------


def test_entries_expire_after_ttl_by_the_injected_timer() -> None:
    """An entry lives while timer() < write time + ttl, and is then never returned."""
    clock = Clock()
    cache = BoundedCache(ttl=10, timer=clock)
    cache["a"] = 1
    clock.tick(9.5)
    assert 1 == cache["a"]
    clock.tick(0.5)
    assert "a" not in cache
    assert cache.get("a") is None
    with pytest.raises(KeyError):
        cache["a"]
    assert (0, 1) == (len(cache), cache.stats().expirations)


def test_per_entry_ttl_overrides_the_default() -> None:
    """set(ttl=...) sets one entry's lifetime; math.inf never expires."""
    clock = Clock()
    cache = BoundedCache(ttl=10, timer=clock)
    cache.set("short", 1, ttl=1)
    cache.set("forever", 2, ttl=math.inf)
    cache["default"] = 3
    clock.tick(5)
    assert ["forever", "default"] == list(cache)
    clock.tick(100)
    assert ["forever"] == list(cache)


def test_per_entry_ttl_works_without_a_default_ttl() -> None:
    """A cache bounded only by entries still honours a per-entry ttl."""
    clock = Clock()
    cache = BoundedCache(4, timer=clock)
    cache["kept"] = 1
    cache.set("brief", 2, ttl=2)
    clock.tick(2)
    assert ["kept"] == list(cache)


def test_expire_drops_expired_entries_and_reports_them() -> None:
    """expire() removes every expired entry at once, telling on_evict the reason."""
    clock = Clock()
    seen = Recorder()
    cache = BoundedCache(ttl=5, timer=clock, on_evict=seen)
    cache.update({"a": 1, "b": 2})
    clock.tick(3)
    cache["c"] = 3
    clock.tick(2)
    assert 2 == cache.expire()
    assert [("a", 1, "expired"), ("b", 2, "expired")] == seen.calls
    assert ["c"] == list(cache)
    assert 2 == cache.stats().expirations


def test_evicting_an_already_expired_entry_counts_as_expiry() -> None:
    """When the LRU victim had expired anyway, the reason is 'expired', not 'capacity'."""
    clock = Clock()
    seen = Recorder()
    cache = BoundedCache(2, ttl=5, timer=clock, on_evict=seen)
    cache.set("old", 1, ttl=1)
    cache["b"] = 2
    clock.tick(1)
    cache["c"] = 3
    cache["d"] = 4
    assert [("old", 1, "expired"), ("b", 2, "capacity")] == seen.calls
    assert (1, 1) == (cache.stats().expirations, cache.stats().evictions)


# -- on_evict, resize, shrink, stats ----------------------------------------------


def test_on_evict_reasons() -> None:
    """capacity, replaced, rejected and expired are each reported with the key and value."""
    clock = Clock()
    seen = Recorder()
    cache = BoundedCache(1, max_bytes=5, ttl=10, sizeof=len, timer=clock, on_evict=seen)
    cache["a"] = "1"
    cache["a"] = "2"
    cache["b"] = "3"
    cache["c"] = "too long"
    clock.tick(10)
    cache.get("b")
    assert [
        ("a", "1", "replaced"),
        ("a", "2", "capacity"),
        ("c", "too long", "rejected"),
        ("b", "3", "expired"),
    ] == seen.calls


def test_on_evict_is_not_told_of_explicit_removals() -> None:
    """del, pop and clear are the caller's own doing: no callback."""
    seen = Recorder()
    cache = BoundedCache(5, on_evict=seen)
    cache.update({"a": 1, "b": 2, "c": 3})
    del cache["a"]
    assert 2 == cache.pop("b")
    cache.clear()
    assert [] == seen.calls


def test_on_evict_exception_is_logged_and_the_cache_stays_sound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failing callback is logged; the eviction still happened and the bounds hold."""

    def explode(key: object, value: object, reason: str) -> None:
        raise RuntimeError("callback failed")

    cache = BoundedCache(2, on_evict=explode)
    with caplog.at_level(logging.ERROR, logger="boundkit.cache"):
        cache.update({"a": 1, "b": 2, "c": 3})
    assert ["b", "c"] == list(cache)
    assert "on_evict raised for a capacity entry" in caplog.text


def test_on_evict_runs_outside_the_lock() -> None:
    """The callback may use the cache itself without deadlocking."""
    cache: BoundedCache[str, int] = BoundedCache(1)
    looked_up: list[int | None] = []
    cache._on_evict = lambda key, value, reason: looked_up.append(cache.get("b"))
    cache["a"] = 1
    cache["b"] = 2
    assert [2] == looked_up


def test_resize_evicts_down_at_once_and_can_turn_on_max_bytes() -> None:
    """resize() applies new bounds immediately; adding max_bytes estimates what is held."""
    cache = BoundedCache(10, sizeof=len)
    cache.update({i: "x" * i for i in range(1, 9)})
    cache.resize(5)
    assert [4, 5, 6, 7, 8] == list(cache)
    cache.resize(max_bytes=15)
    assert ([7, 8], 15) == (list(cache), cache.stats().bytes)
    cache.resize(max_bytes=None)
    assert (None, 5) == (cache.stats().bytes, cache.maxsize)
    with pytest.raises(ConfigError, match="at least one finite bound"):
        cache.resize(None)
    assert 5 == cache.maxsize


def test_shrink_drops_expired_then_least_recently_used() -> None:
    """shrink(f) removes a fraction of entries and bytes, expired ones first."""
    clock = Clock()
    seen = Recorder()
    cache = BoundedCache(100, max_bytes=1000, ttl=60, sizeof=len, timer=clock, on_evict=seen)
    cache.set("stale", "s", ttl=1)
    cache.update({i: "v" * 10 for i in range(9)})
    clock.tick(1)
    # 10 entries, 91 bytes -> at most 5 entries and 45.5 bytes: "stale", then 0..4 go
    assert 6 == cache.shrink(0.5)
    assert ("stale", "s", "expired") == seen.calls[0]
    assert [5, 6, 7, 8] == list(cache)
    assert 100 == cache.maxsize
    assert 0 == cache.shrink(0)
    assert 4 == cache.shrink(1)
    with pytest.raises(ConfigError, match=r"fraction must be from 0 to 1, got 1\.5"):
        cache.shrink(1.5)


def test_stats_count_hits_misses_and_hold_the_bounds() -> None:
    """stats() is a frozen snapshot with counters, sizes, bounds and hit rate."""
    cache = BoundedCache(2, max_bytes=100, sizeof=len)
    cache["a"] = "xx"
    cache["a"]
    cache.get("missing")
    stats = cache.stats()
    assert CacheStats(1, 1, 0, 0, 0, 1, 2, 100, 2, 0.5) == stats
    assert stats.as_dict()["hit_rate"] == 0.5
    with pytest.raises(AttributeError):
        stats.hits = 3  # type: ignore[misc]


def test_mapping_methods() -> None:
    """pop, popitem, setdefault, iteration and equality behave like a dict's."""
    cache: BoundedCache[str, int] = BoundedCache(3)
    assert 1 == cache.setdefault("a", 1)
    assert 1 == cache.setdefault("a", 2)
    cache["b"] = 2
    assert ("a", 1) == cache.popitem()
    assert None is cache.pop("zzz", None)
    with pytest.raises(KeyError):
        cache.pop("zzz")
    assert {"b": 2} == dict(cache.items())
    assert cache == {"b": 2}


def test_works_with_cachetools_cached() -> None:
    """cachetools.cached accepts a BoundedCache unchanged."""
    cache: BoundedCache[Any, int] = BoundedCache(2)
    calls: list[int] = []

    @cachetools.cached(cache)
    def double(n: int) -> int:
        calls.append(n)
        return 2 * n

    assert [2, 2, 4, 6, 2] == [double(1), double(1), double(2), double(3), double(1)]
    assert [1, 2, 3, 1] == calls


# -- model equivalence, threads, growth --------------------------------------------


KEYS = st.integers(0, 5)
VALUES = st.text(alphabet="ab", max_size=14)


class CacheModel(RuleBasedStateMachine):
    """Any sequence of operations leaves BoundedCache equal to a plain reference model.

    The model is an OrderedDict of key -> (value, expires) in recency order,
    a fake clock, and the counters; bounds are checked after every step.
    """

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.seen = Recorder()
        self.maxsize, self.max_bytes = 4, 12
        self.cache = BoundedCache(
            self.maxsize,
            max_bytes=self.max_bytes,
            ttl=5,
            sizeof=len,
            timer=self.clock,
            on_evict=self.seen,
        )
        self.model: OrderedDict[int, tuple[str, float]] = OrderedDict()
        self.counts = dict.fromkeys(("hits", "misses", "evictions", "expirations", "rejections"), 0)
        self.reasons: list[tuple[int, str, str]] = []

    def _alive(self, key: int) -> bool:
        return key in self.model and self.clock.now < self.model[key][1]

    def _drop(self, key: int, reason: str) -> None:
        value, _ = self.model.pop(key)
        self.reasons.append((key, value, reason))

    def _evict_to(self, max_entries: float, max_bytes: float) -> None:
        while self.model and (
            len(self.model) > max_entries or sum(len(v) for v, _ in self.model.values()) > max_bytes
        ):
            key = next(iter(self.model))
            expired = not self._alive(key)
            self.counts["expirations" if expired else "evictions"] += 1
            self._drop(key, "expired" if expired else "capacity")

    @rule(key=KEYS, value=VALUES, ttl=st.sampled_from([None, 1.0, 3.0, math.inf]))
    def set(self, key: int, value: str, ttl: float | None) -> None:
        self.cache.set(key, value, ttl=ttl)
        if key in self.model:
            expired = not self._alive(key)
            self.counts["expirations"] += expired
            self._drop(key, "expired" if expired else "replaced")
        if len(value) > self.max_bytes:
            self.counts["rejections"] += 1
            self.reasons.append((key, value, "rejected"))
            return
        self.model[key] = (value, self.clock.now + (5 if ttl is None else ttl))
        self._evict_to(self.maxsize, self.max_bytes)

    @rule(key=KEYS)
    def get(self, key: int) -> None:
        got = self.cache.get(key)
        if self._alive(key):
            self.model.move_to_end(key)
            self.counts["hits"] += 1
            assert self.model[key][0] == got
            return
        if key in self.model:
            self.counts["expirations"] += 1
            self._drop(key, "expired")
        self.counts["misses"] += 1
        assert got is None

    @rule(key=KEYS)
    def peek_and_contains(self, key: int) -> None:
        expected = self.model[key][0] if self._alive(key) else None
        assert expected == self.cache.peek(key)
        assert (expected is not None) == (key in self.cache)

    @rule(key=KEYS)
    def pop(self, key: int) -> None:
        got = self.cache.pop(key, None)
        alive = self._alive(key)
        expected = self.model[key][0] if alive else None
        if key in self.model:
            value, _ = self.model.pop(key)
            if not alive:
                self.counts["expirations"] += 1
                self.reasons.append((key, value, "expired"))
        assert expected == got

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0]))
    def tick(self, seconds: float) -> None:
        self.clock.tick(seconds)

    @rule()
    def expire(self) -> None:
        expired = [key for key in self.model if not self._alive(key)]
        for key in expired:
            self._drop(key, "expired")
        self.counts["expirations"] += len(expired)
        assert len(expired) == self.cache.expire()

    @rule(maxsize=st.integers(1, 6), max_bytes=st.integers(1, 20))
    def resize(self, maxsize: int, max_bytes: int) -> None:
        self.cache.resize(maxsize, max_bytes=max_bytes)
        self.maxsize, self.max_bytes = maxsize, max_bytes
        self._evict_to(maxsize, max_bytes)

    @rule(fraction=st.sampled_from([0.0, 0.25, 0.5, 1.0]))
    def shrink(self, fraction: float) -> None:
        entries = math.floor(len(self.model) * (1 - fraction))
        held = sum(len(v) for v, _ in self.model.values()) * (1 - fraction)
        before = len(self.reasons)
        expired = [key for key in self.model if not self._alive(key)]
        for key in expired:
            self._drop(key, "expired")
        self.counts["expirations"] += len(expired)
        self._evict_to(entries, held)
        assert len(self.reasons) - before == self.cache.shrink(fraction)

    @invariant()
    def matches_the_model(self) -> None:
        live = [key for key in self.model if self._alive(key)]
        assert live == list(self.cache)
        assert {k: self.model[k][0] for k in live} == dict(self.cache.items())
        assert len(live) == len(self.cache)
        stats = self.cache.stats()
        assert self.counts == {name: getattr(stats, name) for name in self.counts}
        assert len(self.model) == stats.entries <= self.maxsize
        held = sum(len(v) for v, _ in self.model.values())
        assert held == stats.bytes <= self.max_bytes
        assert self.reasons == self.seen.calls


TestCacheModel = CacheModel.TestCase
TestCacheModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_hammer_from_eight_threads_keeps_every_invariant() -> None:
    """8 threads doing random get/set/del/resize/expire/shrink never see a broken bound."""
    cache: BoundedCache[int, str] = BoundedCache(50, max_bytes=2000, ttl=0.05, sizeof=len)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            start.wait()
            for _ in range(3000):
                key = rng.randrange(200)
                op = rng.random()
                if op < 0.45:
                    cache[key] = f"{key}:" + "v" * rng.randrange(0, 120)
                elif op < 0.85:
                    value = cache.get(key)
                    assert value is None or value.startswith(f"{key}:")
                elif op < 0.93:
                    cache.pop(key, None)
                elif op < 0.96:
                    cache.resize(rng.randrange(10, 60), max_bytes=rng.randrange(500, 3000))
                elif op < 0.98:
                    cache.expire()
                else:
                    cache.shrink(0.3)
                stats = cache.stats()
                assert stats.entries <= (stats.maxsize or 0)
                assert 0 <= (stats.bytes or 0) <= (stats.max_bytes or 0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so operations really interleave
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert [] == errors
    held = list(cache._data.values())
    assert sum(len(entry.value) for entry in held) == cache.stats().bytes
    assert all(entry.size == len(entry.value) for entry in held)


# -- the lock-free hit path ------------------------------------------------------


def test_hit_racing_a_delete_returns_the_value_and_corrupts_nothing() -> None:
    """A key deleted between a hit's lookup and its move_to_end: the hit still returns
    its value (it came first), the delete wins, and the counters stay exact."""
    cache: BoundedCache[str, str] = BoundedCache(10, ttl=60, timer=lambda: race())
    deleted: list[str] = []

    def race() -> float:  # the clock read sits between the lookup and move_to_end
        if not deleted and "a" in cache._data:
            deleted.append("a")
            cache._data.pop("a")  # what another thread's `del` does inside the lock
        return 0.0

    cache.set("a", "A")
    deleted.clear()
    assert "A" == cache["a"]
    assert ["a"] == deleted
    assert "a" not in cache
    cache.set("b", "B")
    deleted.append("done")
    assert ["b"] == list(cache)
    assert (1, 0) == (cache.stats().hits, cache.stats().misses)


def test_a_replaced_key_never_leaves_the_dict() -> None:
    """Replacing a value (live or expired, evicting others or not) keeps the key in the
    dict at every step, so a lock-free lookup from another thread never misses it."""

    class Probe:
        """A key that checks, each time the dict hashes it, that it is still stored."""

        def __init__(self) -> None:
            self.absent = 0
            self.hashes = 0

        def __hash__(self) -> int:
            self.hashes += 1
            self.absent += all(stored is not self for stored in list(dict.keys(cache._data)))
            return 42

    clock = Clock()
    cache: BoundedCache[Any, str] = BoundedCache(3, max_bytes=30, ttl=1, sizeof=len, timer=clock)
    probe = Probe()
    cache[probe] = "old"
    probe.absent = probe.hashes = 0
    cache["a"], cache["b"] = "a", "b"
    cache[probe] = "new, longer"  # replaced in place
    clock.tick(1)
    cache[probe] = "fresh"  # the expired value is replaced in place too
    cache[probe] = "x" * 30  # replaced, evicting every other entry
    assert probe.hashes > 3
    assert 0 == probe.absent
    assert [probe] == list(cache)
    assert (1, 30) == (cache.stats().entries, cache.stats().bytes)


def test_snapshot_is_taken_again_when_a_hit_reorders_mid_copy() -> None:
    """The lock holder's copy of the entries retries if a lock-free hit's move_to_end
    lands mid-copy, instead of failing with 'OrderedDict mutated during iteration'."""
    from boundkit._cache_core import snapshot

    class Reordered(OrderedDict[str, Any]):
        copies = 0

        def items(self) -> Any:
            self.copies += 1
            items = iter(super().items())
            if self.copies > 1:
                return items
            first = next(items)
            self.move_to_end(first[0])  # a hit from another thread, mid-copy
            return itertools.chain([first], items)

    data = Reordered(a=1.0, b=2.0, c=3.0)
    assert [("b", 2.0), ("c", 3.0), ("a", 1.0)] == snapshot(data)  # type: ignore[arg-type]
    assert 2 == data.copies


def test_len_seen_mid_insert_never_exceeds_maxsize() -> None:
    """An insert makes room before it stores, so a lock-free len() from another thread
    that runs while the eviction is under way already sees at most maxsize entries."""
    cache: BoundedCache[int, int] = BoundedCache(3)
    seen: list[int] = []
    evict_to = cache._evict_to

    def observed(*args: Any) -> None:
        seen.append(len(cache))  # what a thread switched in here would see
        evict_to(*args)
        seen.append(len(cache))

    cache._evict_to = observed  # type: ignore[method-assign]
    for key in range(6):
        cache[key] = key
    assert [3, 2, 3, 2, 3, 2] == seen  # evicting after the insert would show 4, 3, ...
    assert [3, 4, 5] == list(cache)


@pytest.mark.parametrize("cls", [BoundedCache, AlwaysLocked])
@pytest.mark.parametrize("ttl", [None, 60.0])
def test_lock_free_hits_from_threads_count_exactly_beside_writers(
    ttl: float | None, cls: type[BoundedCache[int, int]]
) -> None:
    """Four threads looking up lock-free while two others insert (evicting), iterate and
    count: every hit and miss is counted once, every value is the right one, no iteration
    fails, and len() never exceeds maxsize, not even in the middle of an insert. The same
    holds for the locked lookups of a free-threaded build."""
    cache: BoundedCache[int, int] = cls(100, ttl=ttl)
    lookups_each, errors, counted = 4000, [], []
    start = threading.Barrier(6)

    def reader(seed: int) -> None:
        rng, hits = random.Random(seed), 0
        try:
            start.wait()
            for _ in range(lookups_each):
                key = rng.randrange(150)
                if seed % 2:
                    value = cache.get(key)
                else:
                    try:
                        value = cache[key]
                    except KeyError:
                        value = None
                assert value in (None, key)
                assert len(cache) <= 100
                hits += value is not None
            counted.append(hits)
        except BaseException as exc:
            errors.append(exc)

    def writer(first: int) -> None:
        try:
            start.wait()
            for key in range(first, first + 1500):
                cache[key % 150] = key % 150
                assert len(cache) <= 100
                if key % 50 == 0:
                    assert len(list(cache)) <= 100
                    assert all(key == value for key, value in cache.items())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(4)]
    threads += [threading.Thread(target=writer, args=(first,)) for first in (0, 75)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert [] == errors
    stats = cache.stats()
    assert (sum(counted), 4 * lookups_each) == (stats.hits, stats.hits + stats.misses)
    assert stats.hits == cache.stats().hits  # reading the counter does not move it


def _churning_cache(**options: Any) -> Any:
    """A full cache and a function that churns it: insert a new key, look up a recent one."""
    cache: BoundedCache[int, bytes] = BoundedCache(500, max_bytes=60_000, ttl=60, **options)
    rng = random.Random(5)
    counter = iter(range(10**12))
    for _ in range(2000):
        cache[next(counter)] = bytes(rng.randrange(10, 300))

    def churn() -> None:
        key = next(counter)
        cache[key] = bytes(rng.randrange(10, 300))
        cache.get(key - rng.randrange(0, 1000))

    return churn


def test_zero_growth_under_churn_once_full() -> None:
    """A full cache under key churn holds zero net memory growth (short run of the soak)."""
    assert_no_growth(_churning_cache(), calls=20_000, rounds=5, bytes_per_call=1)


def test_zero_growth_on_rejection_and_error_paths() -> None:
    """Rejected values, expired lookups and a failing sizeof leave nothing behind."""
    clock = Clock()
    cache = BoundedCache(10, max_bytes=100, ttl=1, sizeof=len, timer=clock)

    def bad_sizeof(value: object) -> int:
        raise ValueError("unsizeable")

    failing = BoundedCache(10, max_bytes=100, sizeof=bad_sizeof)

    def paths() -> None:
        cache["big"] = "x" * 200
        cache["k"] = "v"
        clock.tick(1)
        cache.get("k")
        with pytest.raises(ValueError, match="unsizeable"):
            failing["k"] = "v"

    assert_no_growth(paths, calls=5_000, rounds=5, bytes_per_call=2)
    assert 0 == len(failing)


@pytest.mark.slow
def test_zero_growth_over_a_million_operations() -> None:
    """The full soak: a million and more churn operations with the cache full."""
    assert_no_growth(_churning_cache(), calls=200_000, rounds=5, bytes_per_call=1)


def test_demo_row_shows_the_bounded_cache_holding_far_less() -> None:
    """`boundkit demo`'s cache row: the dict keeps every response, BoundedCache a bounded few."""
    from boundkit.demo import ROWS

    row = next(row_fn for row_fn in ROWS if row_fn.__name__ == "_cache_row")()
    assert "cache" == row.part
    assert row.naive_growth > 20 * 1024**2
    assert row.boundkit_growth < row.naive_growth / 10
