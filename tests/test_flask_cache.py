"""Tests of boundkit.flask_cache, and Flask-Caching's own backend tests run against it.

``GenericCacheTests`` comes from the installed Flask-Caching's sdist (see
fix_sdist.py); ``TestFlaskCachingGenericTests`` runs it with the fixtures its
``TestSimpleCache`` uses, on :class:`BoundedSimpleCache`.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("flask_caching")

import flask
from flask_caching import Cache

from boundkit.errors import ConfigError
from boundkit.flask_cache import BoundedSimpleCache
from fix_sdist import peer_tests


def _load_peer_module() -> Any:
    sdist = peer_tests("flask-caching", ["tests/", "LICENSE"])
    spec = importlib.util.spec_from_file_location(
        "flask_caching_peer_tests", sdist / "tests" / "test_backend_cache.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


peer = _load_peer_module()


class FakeClock:
    """A clock the tests move forward, as Flask-Caching's own ``clock`` fixture does."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    """The fake clock that ``sleep`` advances and the cache reads."""
    return FakeClock()


class TestFlaskCachingGenericTests(peer.GenericCacheTests):  # type: ignore[misc]
    """Flask-Caching's GenericCacheTests, as its TestSimpleCache runs them."""

    @pytest.fixture
    def make_cache(self, clock: FakeClock) -> Callable[..., BoundedSimpleCache]:
        """A factory of caches on the fake clock."""
        return lambda **options: BoundedSimpleCache(timer=clock, **options)


def test_peer_suite_was_collected() -> None:
    """The peer module defines the generic tests this file runs (13 in Flask-Caching 2.5.1)."""
    names = [name for name in dir(peer.GenericCacheTests) if name.startswith("test_")]
    assert len(names) >= 13


def test_configured_by_cache_type() -> None:
    """CACHE_TYPE names the backend; CACHE_MAX_BYTES and CACHE_THRESHOLD reach its store."""
    app = flask.Flask(__name__)
    app.config.update(
        CACHE_TYPE="boundkit.flask_cache.BoundedSimpleCache",
        CACHE_MAX_BYTES="1M",
        CACHE_THRESHOLD=50,
        CACHE_DEFAULT_TIMEOUT=60,
    )
    cache = Cache(app)
    with app.app_context():
        cache.set("k", {"v": 1})
        assert {"v": 1} == cache.get("k")
        backend = cache.cache
    assert isinstance(backend, BoundedSimpleCache)
    assert (50, 1024**2) == (backend.store.maxsize, backend.store.max_bytes)
    assert 60 == backend.default_timeout


def test_memoize_through_flask_caching() -> None:
    """Flask-Caching's memoize decorator works on the backend and computes once."""
    app = flask.Flask(__name__)
    app.config.update(CACHE_TYPE="boundkit.flask_cache.BoundedSimpleCache")
    cache = Cache(app)
    calls: list[int] = []

    @cache.memoize(timeout=30)
    def square(n: int) -> int:
        calls.append(n)
        return n * n

    with app.app_context():
        assert [9, 9] == [square(3), square(3)]
    assert [3] == calls


def test_byte_and_entry_bounds_hold() -> None:
    """The pickled bytes stay under max_bytes and the entries under threshold."""
    cache = BoundedSimpleCache(threshold=1000, max_bytes="32K")
    for i in range(500):
        cache.set(f"k{i}", "x" * 500)
        assert cache.stats().bytes <= 32 * 1024
    cache = BoundedSimpleCache(threshold=2)
    for key in "abcd":
        cache.set(key, key)
    assert (["c", "d"], 2) == (sorted(cache.store), cache.stats().evictions)


def test_timeout_expires_on_the_clock_and_zero_never() -> None:
    """A timeout expires on the injected clock; 0 never expires, as SimpleCache's."""
    clock = FakeClock()
    cache = BoundedSimpleCache(timer=clock, default_timeout=10)
    cache.set("short", 1)
    cache.set("forever", 2, timeout=0)
    clock.advance(11)
    assert (None, 2) == (cache.get("short"), cache.get("forever"))


def test_values_are_copies_and_inc_is_atomic() -> None:
    """Mutating a got value changes nothing cached; inc from many threads loses no update."""
    cache = BoundedSimpleCache()
    cache.set("list", [1])
    cache.get("list").append(2)
    assert [1] == cache.get("list")
    cache.set("n", 0)
    workers = [
        threading.Thread(target=lambda: [cache.inc("n") for _ in range(200)]) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert 800 == cache.get("n")


def test_bad_max_bytes_is_a_config_error() -> None:
    """A max_bytes that is not a size raises ConfigError naming it."""
    with pytest.raises(ConfigError, match="max_bytes"):
        BoundedSimpleCache(max_bytes="plenty")
