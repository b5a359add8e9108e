"""Tests of cached(shared=...): boundkit.shared's Redis tier, against real Redis servers.

Database 10 of 127.0.0.1:6379 (flushed by each test); a restart and a dead
server use a redis-server the test started itself.
"""

from __future__ import annotations

import json
import logging
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("redis")

import redis

from boundkit import cached
from boundkit.errors import ConfigError
from boundkit.shared import SharedCachedFunction, SharedTier
from boundkit.web import WebMonitor
from fix_redis import RedisServer, redis_db
from fix_servers import free_port

DB = 10
URL = f"redis://127.0.0.1:6379/{DB}"
SECRET = "s3cret-not-for-logs"


@pytest.fixture
def db() -> Any:
    """Database 10 of the shared server, flushed before and after."""
    with redis_db(DB) as client:
        yield client


def test_value_is_computed_once_and_read_back_from_redis(db: Any) -> None:
    """Two functions (two 'processes') on one tier compute once; the value lives in Redis."""
    calls: list[int] = []

    def square(n: int) -> int:
        calls.append(n)
        return n * n

    first = cached(maxsize=10, shared=SharedTier(URL, namespace="t1"))(square)
    second = cached(maxsize=10, shared=SharedTier(URL, namespace="t1"))(square)
    assert isinstance(first, SharedCachedFunction)
    assert (9, 9) == (first(3), second(3))
    assert [3] == calls
    keys = [key.decode() for key in db.keys("bk:t1:*")]
    assert 1 == len(keys)
    assert 9 == json.loads(db.get(keys[0]))
    assert 0 < db.pttl(keys[0]) <= 300_000
    assert (1, 1) == (first.shared.stats().misses, second.shared.stats().hits)


def test_namespaces_keep_apps_apart(db: Any) -> None:
    """The same function under two namespaces computes twice, under two key prefixes."""
    calls: list[str] = []

    def who(name: str) -> str:
        calls.append(name)
        return name

    cached(maxsize=1, shared=SharedTier(URL, namespace="app-a"))(who)("x")
    cached(maxsize=1, shared=SharedTier(URL, namespace="app-b"))(who)("x")
    assert ["x", "x"] == calls
    assert (1, 1) == (len(db.keys("bk:app-a:*")), len(db.keys("bk:app-b:*")))


WORKER = textwrap.dedent(
    """
    import sys, time, redis
    from boundkit import cached
    from boundkit.shared import SharedTier

    url, start = sys.argv[1], float(sys.argv[2])
    counter = redis.Redis.from_url(url)

    @cached(maxsize=10, shared=SharedTier(url, namespace="flight"))
    def report(day):
        counter.incr("computations")
        time.sleep(0.5)
        return {"day": day, "total": 42}

    time.sleep(max(0.0, start - time.time()))
    print(report("monday")["total"])
    """
)


@pytest.mark.slow
def test_single_flight_across_processes(db: Any, tmp_path: Path) -> None:
    """Four processes missing the same key at once compute it once; all get the value."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    start = time.time() + 2.0  # after every interpreter has started
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), URL, str(start)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outputs = [worker.communicate(timeout=60)[0].strip() for worker in workers]
    assert ["42"] * 4 == outputs
    assert b"1" == db.get("computations")


def test_a_dead_holders_lock_expires(db: Any) -> None:
    """A lock left by a process that died frees itself after its timeout; then we compute."""
    tier = SharedTier(URL, namespace="dead", lock_timeout=0.3)

    def value() -> str:
        return "fresh"

    memo = cached(maxsize=1, shared=tier)(value)
    db.set(tier.redis_key(value, memo.cache_key()) + ":lock", "a-dead-process", px=300)
    started = time.monotonic()
    assert "fresh" == memo()
    assert 0.2 < time.monotonic() - started < 2.0
    assert 1 == tier.stats().computed


def test_exception_is_not_shared_and_frees_the_lock(db: Any) -> None:
    """An exception reaches the caller, nothing is stored, and the lock is released."""
    tier = SharedTier(URL, namespace="boom")

    @cached(maxsize=1, shared=tier)
    def boom() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        boom()
    assert [] == db.keys("bk:boom:*")


def test_redis_down_computes_locally_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listening: every call computes locally, no exception, one warning, redacted."""
    url = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"
    tier = SharedTier(url, retry_interval=0.0, log_interval=60)
    memo = cached(maxsize=1, shared=tier)(lambda n: n + 1)
    with caplog.at_level(logging.WARNING, logger="boundkit.shared"):
        results = [memo(i) for i in range(50)]
    assert list(range(1, 51)) == results
    warnings = [record for record in caplog.records if record.name == "boundkit.shared"]
    assert 1 == len(warnings)
    assert "unreachable" in warnings[0].getMessage()
    stats = tier.stats()
    assert (False, 50, 50) == (stats.reachable, stats.local_fallbacks, stats.errors)
    assert SECRET not in caplog.text + repr(tier) + json.dumps(stats.as_dict())


def test_health_shows_the_tier_redacted() -> None:
    """Registered with the guard, the tier's stats appear in /health without the password."""
    monitor = WebMonitor()
    tier = SharedTier(f"redis://app:{SECRET}@127.0.0.1:{free_port()}/0")
    monitor.guard.register_cache(tier, name="shared")
    body = monitor.health_body().decode()
    assert "redis://app:***@127.0.0.1" in body
    assert SECRET not in body


@pytest.mark.slow
def test_redis_restart_mid_run_is_survived(redis_server: RedisServer) -> None:
    """A loop of calls runs through a restart of the server: no exception reaches it, and
    the tier writes to the restarted server by itself."""
    tier = SharedTier(redis_server.url, namespace="restart", retry_interval=0.1)
    memo = cached(maxsize=5, shared=tier)(lambda n: n * 2)
    errors: list[BaseException] = []
    results: list[int] = []
    stop = threading.Event()

    def loop() -> None:
        n = 0
        while not stop.is_set():
            try:
                results.append(memo(n) - 2 * n)
            except BaseException as exc:  # the point: none may arrive here
                errors.append(exc)
            n += 1
            time.sleep(0.002)

    worker = threading.Thread(target=loop)
    worker.start()
    time.sleep(0.3)
    redis_server.stop()
    time.sleep(0.5)
    redis_server.start()
    time.sleep(0.8)
    stop.set()
    worker.join()
    assert [] == errors
    assert set(results) == {0}
    stats = tier.stats()
    assert stats.reachable
    assert stats.local_fallbacks > 0
    fresh = redis.Redis.from_url(redis_server.url)
    assert fresh.keys("bk:restart:*")  # written after the restart: it reconnected


def test_no_pickle_from_redis_by_default(db: Any, tmp_path: Path) -> None:
    """A pickle planted under a function's key is never unpickled with the default JSON."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (marker,))

    tier = SharedTier(URL, namespace="evil")

    def value() -> str:
        return "computed"

    memo = cached(maxsize=1, shared=tier)(value)
    db.set(tier.redis_key(value, memo.cache_key()), pickle.dumps(Exploit()))
    assert "computed" == memo()
    assert not marker.exists()


def test_pickle_only_when_asked_for(db: Any) -> None:
    """serializer='pickle' shares values JSON cannot carry (a set)."""

    def pair() -> set[int]:
        return {1, 2}

    first = cached(maxsize=1, shared=SharedTier(URL, namespace="p", serializer="pickle"))(pair)
    second = cached(maxsize=1, shared=SharedTier(URL, namespace="p", serializer="pickle"))(pair)
    assert ({1, 2}, {1, 2}) == (first(), second())
    assert (1, 1) == (first.shared.stats().computed, second.shared.stats().hits)


def test_unshareable_value_stays_local(db: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A value JSON cannot carry is returned and cached locally, with a warning."""
    memo = cached(maxsize=1, shared=SharedTier(URL, namespace="local"))(lambda: {1, 2})
    with caplog.at_level(logging.WARNING, logger="boundkit.shared"):
        assert {1, 2} == memo()
    assert "cannot be shared" in caplog.text
    assert [] == db.keys("bk:local:*")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"serializer": "yaml"}, "serializer"),
        ({"ttl": 0}, "ttl"),
        ({"lock_timeout": -1}, "lock_timeout must be a number of seconds"),
        ({"ttl": float("nan")}, "ttl must be a number of seconds"),
        ({"wait_timeout": -1}, "wait_timeout must be a number of seconds zero or more"),
        ({"socket_timeout": 0}, "socket_timeout must be a number of seconds more than zero"),
        ({"retry_interval": "1"}, "retry_interval must be a number of seconds"),
        ({"log_interval": float("inf")}, "log_interval must be a number of seconds"),
    ],
)
def test_bad_options_are_config_errors(kwargs: dict[str, Any], message: str) -> None:
    """A bad option raises ConfigError naming it."""
    with pytest.raises(ConfigError, match=message):
        SharedTier(URL, **kwargs)


def test_bad_url_is_redacted_in_the_error() -> None:
    """An invalid URL raises ConfigError without its password."""
    with pytest.raises(ConfigError) as caught:
        SharedTier(f"http://user:{SECRET}@host/0")
    assert SECRET not in str(caught.value)


def test_async_functions_are_refused() -> None:
    """shared= on an async def is a ConfigError (the tier is synchronous)."""

    async def fetch() -> int:
        return 1

    with pytest.raises(ConfigError, match="async"):
        cached(maxsize=1, shared=URL)(fetch)


def test_msgpack_serializer_shares_values(db: Any) -> None:
    """serializer='msgpack' carries values between tiers (bytes included, unlike JSON)."""
    pytest.importorskip("msgpack")

    def blob() -> dict[str, Any]:
        return {"raw": b"\x00\xff", "n": [1, 2]}

    first = cached(maxsize=1, shared=SharedTier(URL, namespace="m", serializer="msgpack"))(blob)
    second = cached(maxsize=1, shared=SharedTier(URL, namespace="m", serializer="msgpack"))(blob)
    assert first() == second() == {"raw": b"\x00\xff", "n": [1, 2]}
    assert 1 == second.shared.stats().hits
