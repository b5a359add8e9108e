"""Benchmark the framework caches and the near cache against their peers, in one run.

Run: ``PYTHONPATH=src python3 benchmarks/bench_integrations.py`` (``--quick``
for a short run). Needs the ``django``, ``flask`` and ``redis`` extras.

- ``get`` hit: ``boundkit.django.BoundedCacheBackend`` against Django's
  ``LocMemCache``, and ``BoundedSimpleCache`` against Flask-Caching's
  ``SimpleCache`` (target: ≤ 1.0x).
- A near-cache hit (``redis.Redis(protocol=3, cache=NearCache())``) against a
  plain redis-py ``GET`` round trip and against redis-py's default client-side
  cache (target: ≥ 20x faster than the round trip).
- Total RSS of 4 worker processes each holding the working set in its own
  ``BoundedCache``, against 4 workers with a small near cache plus the one
  copy in Redis (its RSS counted once), on the same workload; every near
  cache's byte bound is checked.
- A ``NearRedis`` hit (boundkit's own invalidation listener, Redis 6+) against
  the same round trip and the ``NearCache`` hit, in the same run, and how
  soon a write reaches its local copy (``--only-near-redis`` for these alone).

redis-py refuses client-side caching with a server older than 7.4, so the
near-cache rows need one: the server at ``--redis-url`` when it is new
enough, else one started from ``BOUNDKIT_REDIS_SERVER`` (a redis-server
binary; ``BOUNDKIT_REDIS_SERVER=$(python3 .ci/redis_server.py)`` builds one from
Debian's source, or names the one built before); without either they are
skipped with the reason. Timings are medians
of many short samples taken round-robin, so load from other processes lands
on every contender alike: quote the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psutil

CHUNK = 2_000  # operations per timed sample
VALUE = {"id": 42, "name": "Ada Lovelace", "tags": ["a", "b", "c"], "score": 3.5, "bio": "x" * 200}
VALUE_TEXT = "a 5-field dict, 300 bytes pickled"


def interleaved(runs: dict[str, Callable[[], object]], samples: int) -> dict[str, float]:
    """Median seconds per operation of each run, sampled round-robin (CHUNK ops per sample)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(samples):
        for name, run in runs.items():
            times[name].append(timeit.timeit(run, number=1) / CHUNK)
    return {name: statistics.median(values) for name, values in times.items()}


def hits(get: Callable[[str], object], key: str) -> Callable[[], object]:
    keys = [key] * CHUNK

    def run() -> object:
        for k in keys:
            get(k)
        return None

    return run


def print_rows(title: str, medians: dict[str, float], peer: str) -> None:
    print(f"\n{title}")
    for name, seconds in medians.items():
        print(f"  {name:<44} {seconds * 1e9:9.0f} ns   {seconds / medians[peer]:5.2f}x {peer}")


# -- framework caches ----------------------------------------------------------------


def get_hit_table(
    framework: str, peer: tuple[str, Any], ours: tuple[str, Any], samples: int
) -> None:
    """Time a get hit of the same value in the peer's cache and in ours."""
    for _, cache in (peer, ours):
        cache.set("user:42", VALUE, timeout=3600)
    runs = {f"{name}.get": hits(cache.get, "user:42") for name, cache in (peer, ours)}
    medians = interleaved(runs, samples)
    print_rows(f"{framework} get hit ({VALUE_TEXT})", medians, f"{peer[0]}.get")


def django_table(samples: int) -> None:
    from django.conf import settings

    settings.configure(CACHES={}, USE_TZ=False)
    from django.core.cache.backends.locmem import LocMemCache

    from boundkit.django import BoundedCacheBackend

    ours = BoundedCacheBackend("bench", {"OPTIONS": {"MAX_BYTES": "64M", "MAX_ENTRIES": 10_000}})
    peer = LocMemCache("bench", {"OPTIONS": {"MAX_ENTRIES": 10_000}})
    get_hit_table("Django", ("LocMemCache", peer), ("BoundedCacheBackend", ours), samples)


def flask_table(samples: int) -> None:
    from flask_caching.backends import SimpleCache

    from boundkit.flask_cache import BoundedSimpleCache

    ours = BoundedSimpleCache(10_000, max_bytes="64M")
    peer = SimpleCache(threshold=10_000)
    get_hit_table("Flask-Caching", ("SimpleCache", peer), ("BoundedSimpleCache", ours), samples)


# -- a Redis that redis-py's client-side cache accepts ---------------------------------------


def _version(url: str) -> tuple[int, ...]:
    import redis

    text = str(redis.Redis.from_url(url).info("server")["redis_version"])
    return tuple(int(part) for part in text.split("."))


@contextmanager
def tracking_server(url: str) -> Iterator[tuple[str, int | None] | str]:
    """Yield (url, server pid or None), or the reason no usable server exists."""
    if _version(url) >= (7, 4):
        yield url, None
        return
    binary = os.environ.get("BOUNDKIT_REDIS_SERVER")
    if not binary:
        yield (
            f"{url} runs Redis < 7.4 (redis-py refuses it) and BOUNDKIT_REDIS_SERVER is unset "
            "(BOUNDKIT_REDIS_SERVER=$(python3 .ci/redis_server.py) builds one)"
        )
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        server = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                directory,
            ],
            stdout=subprocess.DEVNULL,
        )
        own = f"redis://127.0.0.1:{port}/0"
        try:
            for _ in range(500):
                try:
                    _version(own)
                    break
                except Exception:
                    time.sleep(0.01)
            yield own, server.pid
        finally:
            server.terminate()
            server.wait()


def near_cache_table(url: str, samples: int) -> None:
    import redis
    from redis.cache import CacheConfig, CacheKey

    from boundkit.near_cache import NearCache

    payload = pickle.dumps(VALUE)
    writer = redis.Redis.from_url(url)
    writer.set("bench:user:42", payload)
    plain = redis.Redis.from_url(url, protocol=3)
    default = redis.Redis.from_url(url, protocol=3, cache_config=CacheConfig())
    near = NearCache(max_bytes="64M")
    ours = redis.Redis.from_url(url, protocol=3, cache=near)
    for client in (plain, default, ours):
        assert payload == client.get("bench:user:42")
    lookup = next(iter(near.store))
    assert isinstance(lookup, CacheKey)
    medians = interleaved(
        {
            "redis-py GET (round trip)": hits(plain.get, "bench:user:42"),
            "redis-py default client-side cache hit": hits(default.get, "bench:user:42"),
            "NearCache hit": hits(ours.get, "bench:user:42"),
            "  of which NearCache.get (the lookup alone)": hits(
                lambda _key: near.get(lookup), "bench:user:42"
            ),
        },
        samples,
    )
    print_rows("Redis GET of a 300-byte value", medians, "redis-py GET (round trip)")
    trip, hit = medians["redis-py GET (round trip)"], medians["NearCache hit"]
    print(f"  near-cache hit is {trip / hit:.1f}x faster than a round trip (target >= 20x)")
    print(
        "  the rest of a hit is redis-py's own path: a pool checkout, a server-version check\n"
        "  and non-blocking reads draining invalidations on every cached read"
    )
    writer.delete("bench:user:42")


# -- NearRedis: a hit through boundkit's own invalidation listener ----------------------------


def near_redis_table(url: str, samples: int, *, near_cache: bool) -> None:
    """A NearRedis hit against a plain GET round trip and (on Redis 7.4+) a NearCache hit
    through redis-py's client-side cache; then how soon a write reaches the local copy."""
    import redis

    from boundkit.near_cache import NearCache
    from boundkit.near_redis import NearRedis

    key, payload = "bench:near:42", pickle.dumps(VALUE)
    writer = redis.Redis.from_url(url)
    writer.set(key, payload)
    plain = redis.Redis.from_url(url)
    reader = NearRedis(redis.Redis.from_url(url), prefixes=["bench:"], max_bytes="64M")
    assert reader.wait_for_tracking(10), "the NearRedis listener did not start"
    runs = {"redis-py GET (round trip)": hits(plain.get, key)}
    if near_cache:
        cached = redis.Redis.from_url(url, protocol=3, cache=NearCache(max_bytes="64M"))
        runs["NearCache hit through redis.Redis(cache=...)"] = hits(cached.get, key)
    runs["NearRedis.get hit"] = hits(reader.get, key)
    runs["  of which the BoundedCache lookup"] = hits(reader.store.get, key)
    for run in runs.values():
        run()  # every copy filled before timing
    before = reader.stats()
    medians = interleaved(runs, samples)
    after = reader.stats()
    print_rows("Redis GET of a 300-byte value, NearRedis", medians, "redis-py GET (round trip)")
    trip, hit = medians["redis-py GET (round trip)"], medians["NearRedis.get hit"]
    print(f"  NearRedis hit is {trip / hit:.0f}x faster than a round trip (target >= 20x)")
    if near_cache:
        through = medians["NearCache hit through redis.Redis(cache=...)"]
        print(f"  ... and {through / hit:.0f}x faster than a NearCache hit through the client")
    else:
        print("  NearCache row skipped: redis-py's client-side cache needs Redis 7.4+")
    served = after.hits - before.hits
    print(
        f"  NearRedis reads served locally while timed: {served}, sent to Redis: "
        f"{after.bypassed - before.bypassed} (the listener was confirmed throughout: "
        f"{after.bypassed == before.bypassed})"
    )
    delays = []
    for i in range(200):
        writer.set(key, payload + str(i).encode())
        acknowledged = time.perf_counter()
        while reader.get(key) != payload + str(i).encode():
            pass
        delays.append(time.perf_counter() - acknowledged)
    print(
        f"  a write acknowledged to another connection reaches the local copy in "
        f"{statistics.median(delays) * 1e6:.0f} us (median of 200), {max(delays) * 1e6:.0f} us "
        f"at most; the bound (max_staleness) is {reader.max_staleness:g} s"
    )
    reader.close()
    writer.delete(key)


# -- RSS of 4 workers -----------------------------------------------------------------------

WORKERS = 4


def make_value(i: int, size: int) -> bytes:
    return (f"{i:08d}" * (size // 8 + 1))[:size].encode()


def workload(keys: int, reads: int, seed: int) -> list[int]:
    """Key numbers read by one worker: every key once, then uniform reads."""
    rng = random.Random(seed)
    return list(range(keys)) + [rng.randrange(keys) for _ in range(reads - keys)]


def worker(mode: str, url: str, keys: int, size: int, reads: int, seed: int, budget: str) -> None:
    """One worker process: read the workload through its cache; print its RSS and bytes."""
    from boundkit import BoundedCache
    from boundkit._sizes import parse_bytes

    order = workload(keys, reads, seed)
    if mode == "near":
        import redis  # imported before the baseline, like the local mode's imports

        from boundkit.near_cache import NearCache
    baseline = psutil.Process().memory_info().rss
    if mode == "local":
        cache: BoundedCache[int, bytes] = BoundedCache(max_bytes=parse_bytes(budget))
        for i in order:
            if cache.get(i) is None:
                cache[i] = make_value(i, size)
        held = cache.stats().bytes
    else:
        near = NearCache(max_bytes=budget)
        client = redis.Redis.from_url(url, protocol=3, cache=near)
        peak = 0
        for i in order:
            assert client.get(f"bench:v:{i}") is not None
            peak = max(peak, near.stats().bytes or 0)
        held = peak
    rss = psutil.Process().memory_info().rss
    print(
        json.dumps({"rss": rss, "baseline": baseline, "bytes": held, "limit": parse_bytes(budget)})
    )


def run_workers(mode: str, url: str, keys: int, size: int, reads: int, budget: str) -> list[Any]:
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                mode,
                url,
                str(keys),
                str(size),
                str(reads),
                str(seed),
                budget,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for seed in range(WORKERS)
    ]
    return [json.loads(proc.communicate()[0]) for proc in procs]


def rss_table(url: str, server_pid: int | None, quick: bool) -> None:
    import redis

    keys, size, reads = (1_000, 20_000, 3_000) if quick else (3_000, 20_000, 9_000)
    writer = redis.Redis.from_url(url)
    writer.flushdb()
    base_rss = psutil.Process(server_pid).memory_info().rss if server_pid else None
    for start in range(0, keys, 500):
        writer.mset({f"bench:v:{i}": make_value(i, size) for i in range(start, start + 500)})
    local = run_workers("local", url, keys, size, reads, "128M")
    near = run_workers("near", url, keys, size, reads, "8M")
    redis_share = (
        psutil.Process(server_pid).memory_info().rss - base_rss
        if server_pid and base_rss is not None
        else int(writer.info("memory")["used_memory"])
    )
    writer.flushdb()
    mib = 1024**2
    local_total = sum(row["rss"] for row in local)
    near_total = sum(row["rss"] for row in near) + redis_share
    print(f"\nRSS of {WORKERS} workers, {keys} values of {size // 1000} kB, {reads} reads each")
    print(f"  per-process BoundedCache (128M bound):  {local_total / mib:7.1f} MiB")
    print(
        f"  NearCache (8M bound) + Redis:           {near_total / mib:7.1f} MiB "
        f"(workers {(near_total - redis_share) / mib:.1f} + Redis {redis_share / mib:.1f})"
    )
    print(f"  ratio near/local: {near_total / local_total:.2f}x")
    for name, rows in (("BoundedCache", local), ("NearCache", near)):
        base = statistics.median(row["baseline"] for row in rows) / mib
        print(f"  {name} worker after its imports, before the workload: {base:.1f} MiB (median)")
    worst = max(row["bytes"] / row["limit"] for row in near)
    print(f"  near-cache byte bound held in every worker: {worst <= 1.0} (peak {worst:.0%} of it)")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "--worker":
        mode, url, keys, size, reads, seed, budget = args[1:]
        worker(mode, url, int(keys), int(size), int(reads), int(seed), budget)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, smaller workload")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument(
        "--only-near-redis", action="store_true", help="only the NearRedis rows (Redis 6+)"
    )
    options = parser.parse_args(args)
    samples = 15 if options.quick else 61
    print("Medians of round-robin samples on a shared machine: compare the ratios.")
    if options.only_near_redis:
        with tracking_server(options.redis_url) as found:
            if isinstance(found, str):
                print(f"\nNearCache row skipped: {found}")
                near_redis_table(options.redis_url, samples, near_cache=False)
            else:
                near_redis_table(found[0], samples, near_cache=True)
        return 0
    django_table(samples)
    flask_table(samples)
    with tracking_server(options.redis_url) as found:
        if isinstance(found, str):
            print(f"\nnear cache and RSS rows skipped: {found}")
            near_redis_table(options.redis_url, samples, near_cache=False)
            return 0
        url, pid = found
        print(f"\nnear cache against Redis {'.'.join(map(str, _version(url)))} at {url}")
        near_cache_table(url, samples)
        near_redis_table(url, samples, near_cache=True)
        rss_table(url, pid, options.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
