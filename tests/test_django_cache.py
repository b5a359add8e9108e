"""Tests of boundkit.django.BoundedCacheBackend, and Django's own cache suite run against it."""

from __future__ import annotations

import asyncio
import json
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from boundkit.errors import ConfigError

pytest.importorskip("django")

from django.core.cache import CacheKeyWarning

from boundkit.django import BoundedCacheBackend
from fix_sdist import peer_tests

HERE = Path(__file__).parent


def backend(location: str, **options: Any) -> Any:
    """A fresh backend with its own store (the location names it)."""
    made = BoundedCacheBackend(location, {"OPTIONS": options})
    made.clear()
    return made


@pytest.mark.slow
def test_django_base_cache_tests_pass() -> None:
    """Django's BaseCacheTests of the installed version pass; the skips are the listed two."""
    sdist = peer_tests("django", ["tests/cache/", "LICENSE"])
    done = subprocess.run(
        [sys.executable, str(HERE / "django_cache_suite.py"), str(sdist / "tests")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert 0 == done.returncode, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert ([], []) == (result["failures"], result["errors"])
    assert ["test_cull", "test_zero_cull"] == sorted(result["skipped"])
    assert result["run"] >= 50


def test_values_are_pickled_copies() -> None:
    """A value got from the cache is a copy: mutating it leaves the cached value alone."""
    cache = backend("copies")
    cache.set("k", [1, 2])
    got = cache.get("k")
    got.append(3)
    assert [1, 2] == cache.get("k")


def test_byte_bound_holds_and_sizes_are_pickled_bytes() -> None:
    """MAX_BYTES holds over many writes; stats count the pickled bytes exactly."""
    cache = backend("bytes", MAX_BYTES="64K", MAX_ENTRIES=10_000)
    for i in range(200):
        cache.set(f"k{i}", "x" * 1000 + str(i))
        assert cache.stats().bytes <= 64 * 1024
    stats = cache.stats()
    assert 0 < stats.evictions
    pickled = pickle.dumps("x" * 1000 + "199", pickle.HIGHEST_PROTOCOL)
    per_entry = sys.getsizeof(pickled) + sys.getsizeof((b"", 0.0)) + sys.getsizeof(0.0)
    assert stats.entries * per_entry == stats.bytes
    assert cache.get("k199") == "x" * 1000 + "199"
    assert cache.get("k0") is None


def test_max_entries_evicts_least_recently_used() -> None:
    """MAX_ENTRIES keeps exactly that many entries; a read protects an entry from eviction."""
    cache = backend("entries", MAX_ENTRIES=3)
    for key in "abc":
        cache.set(key, key)
    cache.get("a")
    cache.set("d", "d")
    assert {"a": "a", "c": "c", "d": "d"} == cache.get_many(["a", "b", "c", "d"])


def test_oversized_value_is_not_stored_and_replaces_nothing_silently() -> None:
    """A value larger than MAX_BYTES alone is dropped, and the older value under its key goes."""
    cache = backend("oversized", MAX_BYTES="1K")
    cache.set("k", "small")
    cache.set("k", "y" * 5000)
    assert cache.get("k") is None
    assert 1 == cache.stats().rejections


def test_timeout_in_options_and_beside_them() -> None:
    """TIMEOUT works in OPTIONS or at the top level; both at once is a ConfigError."""
    assert 7 == backend("t1", TIMEOUT=7).default_timeout
    assert 9 == BoundedCacheBackend("t2", {"TIMEOUT": 9}).default_timeout
    with pytest.raises(ConfigError, match="TIMEOUT"):
        BoundedCacheBackend("t3", {"TIMEOUT": 9, "OPTIONS": {"TIMEOUT": 7}})


@pytest.mark.parametrize(
    ("options", "message"),
    [({"MAX_BYTES": "lots"}, "MAX_BYTES"), ({"MAX_BYTES": 0}, "MAX_BYTES")],
)
def test_bad_bounds_are_config_errors(options: dict[str, Any], message: str) -> None:
    """A bound that is not a size raises ConfigError naming the option."""
    with pytest.raises(ConfigError, match=message):
        BoundedCacheBackend("bad", {"OPTIONS": options})


def test_no_byte_bound_with_none() -> None:
    """MAX_BYTES=None leaves only the entry bound (stats then report no bytes)."""
    cache = backend("nobytes", MAX_BYTES=None, MAX_ENTRIES=5)
    cache.set("k", "v")
    assert (None, 5) == (cache.stats().max_bytes, cache.stats().maxsize)


def test_zero_timeout_stores_nothing_and_incr_keeps_expiry() -> None:
    """timeout=0 deletes, as Django's backends do; incr keeps a value's remaining life."""
    cache = backend("zero")
    cache.set("k", 1)
    cache.set("k", 2, timeout=0)
    assert cache.get("k") is None
    cache.set("n", 1, timeout=100)
    assert 2 == cache.incr("n")
    remaining = cache.store.peek(cache.make_key("n"))[1] - time.monotonic()
    assert 98 < remaining <= 100


def test_keys_are_validated_as_django_does() -> None:
    """A key memcached would refuse warns with Django's own CacheKeyWarning."""
    cache = backend("keys")
    with pytest.warns(CacheKeyWarning):
        cache.set("key with spaces", 1)


def test_backends_with_one_location_share_a_store() -> None:
    """Two backends with the same LOCATION and bounds see one store; another LOCATION does not."""
    first, second, other = backend("shared"), backend("shared"), backend("elsewhere")
    first.set("k", 1)
    assert (1, None) == (second.get("k"), other.get("k"))


def test_shrink_and_stats_for_the_guard() -> None:
    """shrink() drops that fraction of the entries, least recently used first."""
    cache = backend("shrink")
    cache.set_many({f"k{i}": i for i in range(10)})
    assert 5 == cache.shrink(0.5)
    assert 5 == cache.stats().entries
    assert cache.get("k9") == 9


def test_async_api() -> None:
    """The async twins (BaseCache's wrappers) work against the backend."""
    cache = backend("async")

    async def scenario() -> list[Any]:
        await cache.aset("a", 1)
        added = await cache.aadd("a", 2), await cache.aadd("b", 2)
        await cache.aset_many({"c": 3, "d": 4})
        incremented = await cache.aincr("a", 10)
        touched = await cache.atouch("b", 100), await cache.atouch("zz", 100)
        got_or_set = await cache.aget_or_set("e", lambda: 5)
        await cache.adelete_many(["c"])
        many = await cache.aget_many(["a", "b", "c", "d", "e"])
        has = await cache.ahas_key("d")
        version = await cache.aincr_version("d")
        return [added, incremented, touched, got_or_set, many, has, version]

    assert [
        (False, True),
        11,
        (True, False),
        5,
        {"a": 11, "b": 2, "d": 4, "e": 5},
        True,
        2,
    ] == asyncio.run(scenario())
    assert 4 == cache.get("d", version=2)


def test_import_boundkit_imports_no_framework() -> None:
    """`import boundkit`, boundkit.cache and boundkit.django import none of Django, Flask, redis."""
    heavy = ("django", "flask", "flask_caching", "redis", "msgpack")
    code = (
        "import sys, boundkit, boundkit.cache, boundkit.django\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "[]" == out.strip()


def test_incr_from_many_threads_loses_no_update() -> None:
    """incr() is atomic: four threads adding 200 each leave exactly 800."""
    cache = backend("atomic")
    cache.set("n", 0)

    def add() -> None:
        for _ in range(200):
            cache.incr("n")

    workers = [threading.Thread(target=add) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert 800 == cache.get("n")
