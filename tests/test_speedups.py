"""Tests of the optional C accelerator (boundkit._speedups) and of the pure-Python fallback.

The cache and sizing test modules run against whichever implementation this
process loaded (the C one when it is built); one test here runs them again in a
subprocess with ``BOUNDKIT_PURE_PYTHON=1``, so both are tested in every run.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boundkit import BoundedCache, _sizes
from boundkit._accel import speedups
from boundkit.cache import ACCELERATED
from boundkit.testing import assert_no_growth

PURE = os.environ.get("BOUNDKIT_PURE_PYTHON", "") not in ("", "0")
BUILT = importlib.util.find_spec("boundkit._speedups") is not None
TESTS = Path(__file__).parent
needs_c = pytest.mark.skipif(speedups is None, reason="boundkit._speedups is not loaded")


def test_the_c_accelerator_is_built_and_in_use() -> None:
    """Unless switched off, hits run in C; under CI a failed build is a failure, not a skip."""
    if PURE:
        assert not ACCELERATED
        pytest.skip("BOUNDKIT_PURE_PYTHON is set: the pure-Python run")
    if speedups is None and not os.environ.get("CI"):
        pytest.skip("boundkit._speedups is not built here (a C compiler was missing?)")
    assert ACCELERATED, "boundkit._speedups did not build or failed to import"
    cache: BoundedCache[str, int] = BoundedCache(10, max_bytes=1000, ttl=60)
    cache["a"] = 1
    assert 1 == cache["a"]
    assert 1 == cache.get("a")
    assert None is cache.get("b")
    assert (2, 1) == (cache._c_hits, cache._c_misses)  # counted in C, not in Python
    assert (2, 1) == (cache.stats().hits, cache.stats().misses)
    assert _sizes._flat_size is speedups.flat_size  # type: ignore[union-attr]


@pytest.mark.slow
@pytest.mark.skipif(PURE, reason="this is the pure-Python run already")
def test_the_pure_python_fallback_passes_the_cache_tests() -> None:
    """BOUNDKIT_PURE_PYTHON=1 turns the accelerator off, and the cache tests pass without it."""
    env = {**os.environ, "BOUNDKIT_PURE_PYTHON": "1"}
    probe = "import boundkit.cache as c, boundkit._sizes as s; print(c.ACCELERATED, s._flat_size)"
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("False <function _py_flat_size"), out
    modules = ["test_cache.py", "test_cached.py", "test_sizes.py", "test_speedups.py"]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *modules],
        cwd=TESTS,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert 0 == run.returncode, run.stdout[-3000:] + run.stderr[-3000:]
    assert " passed" in run.stdout


@needs_c
def test_the_c_clock_is_time_monotonic() -> None:
    """The hit path reads CLOCK_MONOTONIC itself when the timer is time.monotonic: same clock."""
    for _ in range(1000):
        before = time.monotonic()
        now = speedups.monotonic()  # type: ignore[union-attr]
        after = time.monotonic()
        assert before <= now <= after


flat_atoms = st.one_of(
    st.text(max_size=30),
    st.binary(max_size=30),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False),
    st.complex_numbers(allow_nan=False),
    st.booleans(),
    st.none(),
    st.binary(max_size=10).map(bytearray),
)
flat_containers = st.one_of(
    st.lists(flat_atoms, max_size=70),
    st.lists(flat_atoms, max_size=70).map(tuple),
    st.dictionaries(st.text(max_size=8), flat_atoms, max_size=40),
    st.sets(st.one_of(st.text(max_size=8), st.integers(), st.none()), max_size=70),
    st.frozensets(st.integers(), max_size=70),
    st.lists(st.lists(st.integers(), max_size=2), max_size=3),  # not flat: None
)


@needs_c
@given(value=st.one_of(flat_atoms, flat_containers))
def test_c_flat_size_agrees_with_the_python_fast_path_and_the_walker(value: object) -> None:
    """flat_size in C gives exactly the pure-Python fast path's answer, and the walker's."""
    c_size = speedups.flat_size(value)  # type: ignore[union-attr]
    assert _sizes._py_flat_size(value) == c_size
    if c_size is not None:
        assert _sizes._Estimate().measure(value) == c_size


class _Plain:
    def __init__(self, **attributes: object) -> None:
        for name, value in attributes.items():
            setattr(self, name, value)


class _Slotted:
    __slots__ = ("first", "second")

    def __init__(self, first: object, second: object) -> None:
        self.first = first
        self.second = second


def _instance(values: list[object]) -> object:
    if len(values) == 2:
        return _Slotted(values[0], values[1])
    return _Plain(**{f"a{i}": value for i, value in enumerate(values)})


_shared_atom = "shared " * 20
nested_values = st.recursive(
    st.one_of(flat_atoms, st.just(_shared_atom), st.just(len), st.just(_Plain)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=40),
        st.lists(inner, max_size=20).map(tuple),
        st.dictionaries(st.text(max_size=4), inner, max_size=20),
        st.lists(inner, max_size=24).map(_instance),  # over 16 attributes: the Python step
        st.lists(inner, min_size=1, max_size=3).map(lambda items: [items, items]),  # shared
    ),
    max_leaves=120,
)


@needs_c
@given(value=nested_values)
def test_the_walkers_c_steps_agree_with_its_python_steps(value: object) -> None:
    """The walker's steps in C (instances, small containers, item loops) change no result."""
    with_c = _sizes.estimate_size(value)
    with pytest.MonkeyPatch.context() as patch:
        for step in ("_instance_size", "_add_items", "_container_size"):
            patch.setattr(_sizes, step, None)
        assert _sizes.estimate_size(value) == with_c


def test_flat_size_counts_a_shared_item_once() -> None:
    """An item a container holds twice (or that is referenced elsewhere) is counted once."""
    shared = "z" * 500
    once = _sizes._flat_size([shared])
    twice = _sizes._flat_size([shared, shared])
    assert once is not None
    assert twice == once + 8  # one more pointer in the list, no second copy of the str


def test_flat_size_leaves_big_or_nested_containers_to_the_walker() -> None:
    """Over 64 items, nested containers and subclasses are not flat: None."""
    assert None is _sizes._flat_size(list(range(65)))
    assert None is _sizes._flat_size([[1]])
    assert None is _sizes._flat_size(type("Sub", (list,), {})([1]))
    assert _sizes._flat_size(list(range(64))) is not None


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _raises_key_error(cache: BoundedCache[Any, Any], key: object) -> bool:
    try:
        cache[key]
    except KeyError:
        return True
    return False


def test_lookups_hold_no_stray_references() -> None:
    """Hits, misses, expired entries, defaults and __missing__ leave every refcount as it was."""
    clock = _Clock()
    cache: BoundedCache[Any, Any] = BoundedCache(100, max_bytes=10**6, ttl=10, timer=clock)
    key, value, default, absent = "k" * 20, object(), object(), "a" * 20
    cache[key] = value
    watched = [key, value, default, absent, cache, clock]
    before = [sys.getrefcount(obj) for obj in watched]
    for _ in range(10_000):
        assert value is cache[key]
        assert value is cache.get(key, default)
        assert default is cache.get(absent, default)
        assert default is cache.get(key=absent, default=default)
        assert _raises_key_error(cache, absent)
    assert before == [sys.getrefcount(obj) for obj in watched]
    for _ in range(1000):  # an expired entry: dropped by the slow path, its value released
        cache.set(absent, value, ttl=1)
        clock.now += 2
        assert default is cache.get(absent, default)
        cache.set(absent, value, ttl=1)
        clock.now += 2
        assert _raises_key_error(cache, absent)
    assert before == [sys.getrefcount(obj) for obj in watched]


def test_lookups_do_not_grow_the_process() -> None:
    """A full cache under hit/miss/insert churn with the real clock allocates nothing lasting."""
    cache: BoundedCache[int, bytes] = BoundedCache(500, max_bytes=100_000, ttl=60)
    counter = iter(range(10**12))

    def churn() -> None:
        i = next(counter)
        cache[i] = bytes(i % 200)
        cache.get(i - 300)
        cache.get(i - 3000, b"")
        _raises_key_error(cache, i - 50)

    assert_no_growth(churn, calls=20_000, rounds=3, bytes_per_call=1)


def test_a_timer_returning_ints_expires_entries_exactly() -> None:
    """A non-float clock is compared exactly, as in Python: alive while timer() < expiry."""
    now = [0]
    cache: BoundedCache[str, int] = BoundedCache(10, ttl=5, timer=lambda: now[0])
    cache["a"] = 1
    now[0] = 4
    assert 1 == cache["a"]
    assert 1 == cache.get("a")
    now[0] = 5
    assert None is cache.get("a")
    assert 0 == len(cache._data)  # dropped by the slow path
    assert (2, 1, 1) == (cache.stats().hits, cache.stats().misses, cache.stats().expirations)


def test_a_failing_timer_reaches_the_caller() -> None:
    """An exception from the timer propagates from a lookup and leaves the entry in place."""
    fail = [False]

    def timer() -> float:
        if fail[0]:
            raise OSError("clock broke")
        return 0.0

    cache: BoundedCache[str, int] = BoundedCache(10, ttl=5, timer=timer)
    cache["a"] = 1
    fail[0] = True
    with pytest.raises(OSError, match="clock broke"):
        cache["a"]
    with pytest.raises(OSError, match="clock broke"):
        cache.get("a")
    fail[0] = False
    assert 1 == cache["a"]


def test_get_takes_its_arguments_like_mapping_get() -> None:
    """get(key, default=None): by position or keyword; wrong calls raise TypeError."""
    cache: BoundedCache[str, int] = BoundedCache(10)
    cache["a"] = 1
    assert 1 == cache.get(key="a")
    assert 2 == cache.get("b", default=2)
    assert 3 == cache.get(default=3, key="b")
    with pytest.raises(TypeError):
        cache.get()  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        cache.get("a", 1, 2)  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        cache.get("a", key="a")  # type: ignore[call-overload]
    with pytest.raises(TypeError):
        cache.get("a", fallback=1)  # type: ignore[call-overload]


def test_a_pickle_loads_in_the_other_implementation() -> None:
    """Both implementations pickle the same state: entries, order, counters and bounds."""
    cache: BoundedCache[str, int] = BoundedCache(3, max_bytes=10_000, ttl=600)
    cache.update(a=1, b=2, c=3)
    cache["a"]
    cache.get("zz")
    other = "" if PURE else "1"
    code = (
        "import pickle, sys; c = pickle.load(sys.stdin.buffer); c['d'] = 4; "
        "import boundkit.cache as m; print(m.ACCELERATED, list(c), c.stats().hits, "
        "c.stats().misses, c.stats().bytes, c.maxsize)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=pickle.dumps(cache),
        env={**os.environ, "BOUNDKIT_PURE_PYTHON": other},
        capture_output=True,
        check=True,
    ).stdout.decode()
    expected_other = PURE and BUILT  # the C build, when this run is the pure-Python one
    assert f"{expected_other} ['c', 'a', 'd'] 1 1 {cache.stats().bytes} 3" == out.strip()
