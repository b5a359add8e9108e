"""Benchmark BoundedCache against cachetools, an OrderedDict LRU and cachebox.

Run: ``PYTHONPATH=src python3 benchmarks/bench_cache.py`` (``--quick`` for a
short run, ``--soak`` to add the million-operation zero-growth run). Needs the
``bench`` extra. Every figure is the median of repeated ``timeit`` runs
(``--repeat``, default 9) measured in this process, printed with its ratio to
the named peer measured in the same run.

BoundedCache runs with all three bounds active (maxsize, max_bytes, ttl) and
its lock on (writes take it; lookups are lock-free by design, see the Threads
section of docs/cache.md); cachetools.TTLCache with getsizeof uses the same ``estimate_size``
as the byte budget. Bytes per entry come from tracemalloc (cachebox allocates
in Rust, out of tracemalloc's sight, so its row uses the anonymous RSS growth
of a large cache instead).

The ``boundkit.BoundedCache`` row is the implementation this process loaded (the
C accelerator when built); the ``(pure Python)`` row is the fallback, imported a
second time with ``BOUNDKIT_PURE_PYTHON=1`` and measured in the same run.
"""

from __future__ import annotations

import argparse
import copy
import functools
import gc
import itertools
import json
import os
import random
import statistics
import sys
import timeit
import tracemalloc
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import cachebox
import cachetools
import objsize
from pympler import asizeof

from boundkit import BoundedCache, estimate_size
from boundkit.cache import ACCELERATED
from boundkit.memory import process_memory

CAPACITY = 10_000
CHUNK = 5_000  # operations per timed sample
TTL = 3600.0


def load_pure_python() -> ModuleType:
    """A second copy of boundkit.cache imported with BOUNDKIT_PURE_PYTHON=1 (no C at all)."""
    saved = {name: module for name, module in sys.modules.items() if name.startswith("boundkit")}
    for name in saved:
        del sys.modules[name]
    os.environ["BOUNDKIT_PURE_PYTHON"] = "1"
    try:
        import boundkit.cache as pure

        assert not pure.ACCELERATED
    finally:
        del os.environ["BOUNDKIT_PURE_PYTHON"]
        for name in [name for name in sys.modules if name.startswith("boundkit")]:
            del sys.modules[name]
        sys.modules.update(saved)
    return pure


PURE = load_pure_python()
pure_estimate_size = PURE.BoundedCache(1)._sizeof


class OrderedDictLRU:
    """The textbook LRU: an OrderedDict, move_to_end on hit, no lock, no TTL."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.data: OrderedDict[Any, Any] = OrderedDict()

    def __getitem__(self, key: Any) -> Any:
        value = self.data[key]
        self.data.move_to_end(key)
        return value

    def __contains__(self, key: Any) -> bool:
        return key in self.data

    def __len__(self) -> int:
        return len(self.data)

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key: Any, value: Any) -> None:
        self.data[key] = value
        self.data.move_to_end(key)
        if len(self.data) > self.maxsize:
            self.data.popitem(last=False)


def make_caches(value_size: int, capacity: int = CAPACITY) -> dict[str, Callable[[], Any]]:
    """Factories for every cache compared, each holding about ``capacity`` entries."""
    budget = capacity * value_size
    return {
        "boundkit.BoundedCache": lambda: BoundedCache(capacity, max_bytes=budget, ttl=TTL),
        "  (maxsize only: no clock)": lambda: BoundedCache(capacity),
        "  (pure Python)": lambda: PURE.BoundedCache(capacity, max_bytes=budget, ttl=TTL),
        "cachetools.LRUCache": lambda: cachetools.LRUCache(capacity),
        "cachetools.TTLCache": lambda: cachetools.TTLCache(capacity, TTL),
        "cachetools.TTLCache+getsizeof": lambda: cachetools.TTLCache(
            budget, TTL, getsizeof=estimate_size
        ),
        "OrderedDict LRU": lambda: OrderedDictLRU(capacity),
        "cachebox.LRUCache": lambda: cachebox.LRUCache(capacity),
    }


def per_call(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds per call of ``fn``, each sample looping long enough (about 5 ms)
    that the timer's own overhead does not count."""
    once = timeit.timeit(fn, number=1)
    number = max(1, int(0.005 / max(once, 1e-9)))
    return statistics.median(timeit.repeat(fn, number=number, repeat=repeat)) / number


def interleaved(runs: dict[str, Callable[[], object]], samples: int) -> dict[str, float]:
    """Median seconds per operation of each run (CHUNK operations per call).

    Many short samples, taken round-robin, so a load spike on a shared machine
    lands on every cache alike and the median sees through it.
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(samples):
        for name, run in runs.items():
            times[name].append(timeit.timeit(run, number=1) / CHUNK)
    return {name: statistics.median(values) for name, values in times.items()}


def get_hit_run(factory: Callable[[], Any], value: object) -> Callable[[], object]:
    """CHUNK lookups that all hit, in shuffled order over a working set that fits."""
    cache = factory()
    keys = [f"key-{i}" for i in range(CAPACITY)]
    for key in keys:
        cache[key] = value
    order = keys * 5
    random.Random(1).shuffle(order)
    assert all(key in cache for key in keys), "the cache did not keep the working set"
    chunks = itertools.cycle([order[i : i + CHUNK] for i in range(0, len(order), CHUNK)])

    def run() -> None:
        for key in next(chunks):
            cache[key]

    return run


def miss_insert_run(factory: Callable[[], Any], value: object) -> Callable[[], object]:
    """CHUNK lookups that all miss (keys cycle over 10x the capacity), each then an insert
    that evicts."""
    cache = factory()
    stream = [f"key-{i}" for i in range(10 * CAPACITY)]
    for key in stream:  # fill, so every measured insert evicts
        cache[key] = value
    chunks = itertools.cycle([stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)])

    def run() -> None:
        get = cache.get
        for key in next(chunks):
            if get(key) is None:
                cache[key] = value

    return run


def traced_bytes_per_entry(factory: Callable[[], Any], value: object, n: int) -> float:
    keys = [f"key-{i}" for i in range(n)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    cache = factory()
    for key in keys:
        cache[key] = value
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert n == len(cache)
    return (after - before) / n


def rss_bytes_per_entry(factory: Callable[[], Any], value: object, n: int) -> float:
    keys = [f"key-{i}" for i in range(n)]
    gc.collect()
    before = process_memory().rss_anon
    cache = factory()
    for key in keys:
        cache[key] = value
    gc.collect()
    after = process_memory().rss_anon
    assert n == len(cache)
    return (after - before) / n


def cache_table(samples: int, repeat: int, value: object, label: str) -> None:
    size = estimate_size(value)
    caches = make_caches(size)
    estimator = per_call(functools.partial(estimate_size, value), repeat)
    pure = per_call(functools.partial(pure_estimate_size, value), repeat)
    print(
        f"\n## cache operations, value = {label} (estimate_size {size} B, {estimator * 1e9:.0f} ns;"
        f" pure Python {pure * 1e9:.0f} ns)"
    )
    hit = interleaved({name: get_hit_run(f, value) for name, f in caches.items()}, samples)
    miss = interleaved({name: miss_insert_run(f, value) for name, f in caches.items()}, samples)
    per_entry: dict[str, float] = {}
    for name, factory in make_caches(size, 50_000).items():
        if name.startswith("cachebox"):
            per_entry[name] = rss_bytes_per_entry(make_caches(size, 200_000)[name], value, 200_000)
        else:
            per_entry[name] = traced_bytes_per_entry(factory, value, 50_000)
    print(
        f"{'cache':<32} {'get-hit ns':>10} {'x LRU':>6} {'miss+ins ns':>11} {'x TTL+gs':>8}"
        f" {'B/entry':>8} {'x TTL+gs':>8}"
    )
    for name in caches:
        print(
            f"{name:<32} {hit[name] * 1e9:>10.0f} {hit[name] / hit['cachetools.LRUCache']:>6.2f}"
            f" {miss[name] * 1e9:>11.0f}"
            f" {miss[name] / miss['cachetools.TTLCache+getsizeof']:>8.2f}"
            f" {per_entry[name]:>8.1f}"
            f" {per_entry[name] / per_entry['cachetools.TTLCache+getsizeof']:>8.2f}"
        )
    ours = "boundkit.BoundedCache"
    print(
        "targets: get-hit <= 1.0x LRUCache: "
        f"{hit[ours] / hit['cachetools.LRUCache']:.2f}; miss+insert <= 0.5x TTLCache+getsizeof: "
        f"{miss[ours] / miss['cachetools.TTLCache+getsizeof']:.2f}; bytes/entry <= 0.6x "
        f"TTLCache+getsizeof: {per_entry[ours] / per_entry['cachetools.TTLCache+getsizeof']:.2f}"
    )


@dataclass
class User:
    id: int
    name: str
    email: str
    tags: list[str]


def _record(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "name": f"user {i}",
        "email": f"user{i}@example.com",
        "score": i / 7,
        "active": i % 2 == 0,
        "tags": ["a", "bb", f"t{i}"],
    }


PAYLOADS: dict[str, Callable[[], object]] = {
    "str 200 chars": lambda: "x" * 199 + "y",
    "bytes 4 KiB": lambda: bytes(4096),
    "flat dict, 10 items": lambda: {f"k{i}": i * 1000 for i in range(10)},
    "dict, 100 str items": lambda: {f"key{i}": f"value {i}" for i in range(100)},
    "JSON document, 10 KB": lambda: json.loads(json.dumps([_record(i) for i in range(60)])),
    "JSON document, 100 KB": lambda: json.loads(json.dumps([_record(i) for i in range(600)])),
    "list of 1000 ints": lambda: list(range(1000, 2000)),
    "list of 200 tuples": lambda: [(i, f"row {i}", i * 1.5) for i in range(200)],
    "list of 50 dataclasses": lambda: [
        User(i, f"u{i}", f"u{i}@x.org", [f"t{i}"]) for i in range(50)
    ],
}


def traced_size(build: Callable[[], object]) -> tuple[object, int]:
    """Build a payload under tracemalloc: what it really allocated."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    payload = build()
    gc.collect()
    size = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return payload, size


def estimator_table(repeat: int) -> None:
    print("\n## estimate_size against pympler.asizeof and objsize (sizes in bytes)")
    print(
        f"{'payload':<24} {'traced':>8} {'estimate':>8} {'asizeof':>8} {'objsize':>8}"
        f" {'est/asz':>7} {'est us':>8} {'py us':>8} {'asz us':>8} {'objs us':>8} {'x asz':>6}"
    )
    for label, build in PAYLOADS.items():
        payload, traced = traced_size(build)
        # pympler reads __dict__ (materialising it): give it its own copy
        theirs = copy.deepcopy(payload)
        ours = estimate_size(payload)
        reference = asizeof.asizeof(theirs)
        objs = objsize.get_deep_size(payload)
        assert ours == pure_estimate_size(payload), "the C and Python estimates differ"
        t_ours = per_call(functools.partial(estimate_size, payload), repeat)
        t_pure = per_call(functools.partial(pure_estimate_size, payload), repeat)
        t_asz = per_call(functools.partial(asizeof.asizeof, theirs), repeat)
        t_objs = per_call(functools.partial(objsize.get_deep_size, payload), repeat)
        print(
            f"{label:<24} {traced:>8} {ours:>8} {reference:>8} {objs:>8} {ours / reference:>7.2f}"
            f" {t_ours * 1e6:>8.1f} {t_pure * 1e6:>8.1f} {t_asz * 1e6:>8.1f} {t_objs * 1e6:>8.1f}"
            f" {t_asz / t_ours:>6.1f}"
        )
    print("traced: what tracemalloc saw the payload allocate (interned strings and small ints")
    print("are shared with the interpreter, so deep sizes count them and tracemalloc does not);")
    print("est us: estimate_size as loaded here, py us: the pure-Python estimate_size")


def soak(operations: int) -> None:
    from boundkit.testing import assert_no_growth

    cache: BoundedCache[int, bytes] = BoundedCache(1000, max_bytes=200_000, ttl=60)
    rng = random.Random(7)
    counter = iter(range(10**12))

    def churn() -> None:
        key = next(counter)
        cache[key] = bytes(rng.randrange(10, 400))
        cache.get(key - rng.randrange(0, 2000))

    report = assert_no_growth(churn, calls=operations // 5, rounds=5, bytes_per_call=1)
    print(f"\n## soak: {operations} calls (set + get each) in 5 rounds after a warm-up, cache full")
    print(report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9, help="timeit repeats (median taken)")
    parser.add_argument("--quick", action="store_true", help="3 repeats, one payload")
    parser.add_argument("--soak", action="store_true", help="add the million-operation soak")
    args = parser.parse_args(argv)
    repeat = 3 if args.quick else args.repeat
    print(
        f"python {sys.version.split()[0]}, cachetools {cachetools.__version__}, "
        f"cachebox {cachebox.__version__}; medians of {repeat} timeit repeats"
    )
    print(
        "boundkit.BoundedCache: "
        + ("C accelerator (boundkit._speedups)" if ACCELERATED else "pure Python")
        + "; '(pure Python)': the fallback, measured alongside"
    )
    samples = 5 * repeat
    cache_table(samples, repeat, PAYLOADS["str 200 chars"](), "str of 200 chars")
    if not args.quick:
        cache_table(samples, repeat, PAYLOADS["flat dict, 10 items"](), "dict of 10 ints")
    estimator_table(repeat)
    if args.soak:
        soak(1_000_000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
