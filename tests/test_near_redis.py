"""Tests of boundkit.near_redis.NearRedis: a near copy kept fresh by its own listener.

Database 13 of 127.0.0.1:6379 (flushed by each test; client tracking exists
since Redis 6, so the shared 7.0 server will do); a restart and a killed
listener use a redis-server the test started itself.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("redis")

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from boundkit import MemoryGuard
from boundkit.errors import ConfigError, InvalidKeyError, ResourceClosedError
from boundkit.near_redis import NearRedis
from boundkit.testing import assert_no_growth
from boundkit.web import WebMonitor
from fix_redis import RedisServer, free_port, redis_db

DB = 13
URL = f"redis://127.0.0.1:6379/{DB}"
SECRET = "s3cret-not-for-logs"


@pytest.fixture
def db() -> Iterator[Any]:
    """Database 13 of the shared server, flushed before and after."""
    with redis_db(DB) as client:
        yield client


@pytest.fixture
def near(db: Any) -> Iterator[NearRedis]:
    """A NearRedis over database 13 whose listener is tracking."""
    with NearRedis(redis.Redis.from_url(URL), prefixes=["t:"], max_bytes="1M") as made:
        assert made.wait_for_tracking(5)
        yield made


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.002)


def mset_heard(near: NearRedis, db: Any, values: dict[str, bytes]) -> None:
    """Write ``values`` through another connection and wait until the listener has heard
    of every key, so no invalidation of them is still on its way."""
    before = near.stats().invalidations
    db.mset(values)
    wait_until(lambda: near.stats().invalidations >= before + len(values))


def test_repeated_read_is_served_locally(near: NearRedis, db: Any) -> None:
    """The second GET of a key is a local hit; the value is the server's."""
    mset_heard(near, db, {"t:a": b"1"})
    assert [b"1", b"1"] == [near.get("t:a"), near.get("t:a")]
    stats = near.stats()
    assert (1, 1, 1) == (stats.hits, stats.misses, stats.entries)


def test_another_clients_write_drops_the_local_copy(near: NearRedis, db: Any) -> None:
    """A write by another connection reaches the listener, and the next read is fresh."""
    mset_heard(near, db, {"t:a": b"old"})
    assert [b"old", b"old"] == [near.get("t:a"), near.get("t:a")]
    mset_heard(near, db, {"t:a": b"new"})
    assert b"new" == near.get("t:a")


def test_missing_keys_are_kept_and_invalidated_too(near: NearRedis, db: Any) -> None:
    """A key that does not exist is cached as None until it is created."""
    assert [None, None] == [near.get("t:none"), near.get("t:none")]
    assert 1 == near.stats().hits
    db.set("t:none", b"here")
    wait_until(lambda: near.stats().invalidations >= 1)
    assert b"here" == near.get("t:none")


def test_get_many_mixes_local_hits_and_one_mget(near: NearRedis, db: Any) -> None:
    """get_many answers in order, str and bytes keys alike, from both sources."""
    mset_heard(near, db, {"t:a": b"1", "t:b": b"2"})
    assert b"1" == near.get("t:a")
    assert [b"1", b"2", None, b"1"] == near.get_many(["t:a", "t:b", "t:c", b"t:a"])
    assert [b"1", b"2", None] == near.get_many(["t:a", "t:b", "t:c"])
    assert 4 == near.stats().entries


def test_own_writes_are_read_back_at_once(near: NearRedis) -> None:
    """set and delete drop the local copy before returning: this process reads its writes."""
    near.set("t:a", b"1")
    assert b"1" == near.get("t:a")
    near.set("t:a", b"2", ex=60)
    assert b"2" == near.get("t:a")
    assert 1 == near.delete("t:a", "t:missing")
    assert near.get("t:a") is None


def test_invalidation_in_either_spelling(near: NearRedis, db: Any) -> None:
    """Copies read under str and under bytes keys both go when the server names the key."""
    mset_heard(near, db, {"t:é": b"old"})
    assert [b"old", b"old"] == [near.get("t:é"), near.get("t:é".encode())]
    assert 2 == near.stats().entries
    mset_heard(near, db, {"t:é": b"new"})
    assert [b"new", b"new"] == [near.get("t:é"), near.get("t:é".encode())]


def test_flushdb_flushes_the_local_copy(near: NearRedis, db: Any) -> None:
    """FLUSHDB (an invalidation naming no key) empties the whole local copy."""
    db.mset({"t:a": b"1", "t:b": b"2"})
    near.get_many(["t:a", "t:b"])
    db.flushdb()
    wait_until(lambda: near.stats().flushes >= 1)
    assert 0 == near.stats().entries
    assert [None, None] == near.get_many(["t:a", "t:b"])


class HookedRead(redis.Redis):
    """A real client whose reads run ``during`` after the server answered, before returning:
    what happens there happens while the fill is in flight."""

    during: Callable[[], None] = staticmethod(lambda: None)

    def get(self, name: Any) -> Any:
        value = super().get(name)
        self.during()
        return value

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        def hooked(*args: Any, **kwargs: Any) -> Any:
            replies = execute(*args, **kwargs)
            self.during()
            return replies

        pipe.execute = hooked
        return pipe


def test_invalidation_during_a_fill_never_leaves_a_stale_value(db: Any) -> None:
    """The race: GET answers 'old', a write's invalidation is applied before the fill
    stores it. The fill must not store 'old'; the next read gets 'new'."""
    client = HookedRead.from_url(URL)
    with NearRedis(client, prefixes=["t:"]) as near:
        assert near.wait_for_tracking(5)
        mset_heard(near, db, {"t:a": b"old"})

        def write_meanwhile() -> None:
            client.during = staticmethod(lambda: None)
            mset_heard(near, db, {"t:a": b"new"})

        client.during = staticmethod(write_meanwhile)
        assert b"old" == near.get("t:a")  # what the server said when asked
        assert 0 == near.stats().entries  # ... and not kept
        assert [b"new", b"new"] == [near.get("t:a"), near.get("t:a")]
        assert 1 == near.stats().hits


def test_a_fill_across_a_lost_listener_is_not_kept(redis_server: RedisServer) -> None:
    """A fill in flight while the listener is killed and reconnects stores nothing: the
    invalidations sent meanwhile may be lost."""
    client = HookedRead.from_url(redis_server.url)
    admin = redis.Redis.from_url(redis_server.url)
    admin.set("t:a", b"1")
    with NearRedis(client, prefixes=["t:"], retry_interval=0.05) as near:
        assert near.wait_for_tracking(5)

        def kill_listener() -> None:
            client.during = staticmethod(lambda: None)
            assert 1 == admin.client_kill_filter(_type="pubsub")
            wait_until(lambda: near.stats().reconnects >= 1 and near.tracking)

        client.during = staticmethod(kill_listener)
        assert b"1" == near.get("t:a")
        assert 0 == near.stats().entries
        assert b"1" == near.get("t:a")
        assert 1 == near.stats().entries


def test_a_local_copy_expires_with_its_key_on_the_server(redis_server: RedisServer) -> None:
    """A key with a PTTL is not served locally past its expiry, even by a server whose
    active expiry is off (so no invalidation ever announces it)."""
    server = redis_server
    server.stop()
    server.options = ("--enable-debug-command", "yes")
    server.start()
    try:
        admin = redis.Redis.from_url(server.url)
        admin.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", "0")
        admin.set("t:short", b"1", px=300)
        admin.set("t:long", b"2")
        with NearRedis(redis.Redis.from_url(server.url), prefixes=["t:"]) as near:
            assert near.wait_for_tracking(5)
            assert [b"1", b"2"] == near.get_many(["t:short", "t:long"])
            assert [b"1", b"2"] == near.get_many(["t:short", "t:long"])
            assert 2 == near.stats().hits
            time.sleep(0.4)
            assert [None, b"2"] == [near.get("t:short"), near.get("t:long")]
    finally:
        server.stop()


def test_no_local_answer_without_a_recent_confirmation(db: Any) -> None:
    """With the last answered ping older than max_staleness, reads go to Redis."""
    now = [0.0]
    near = NearRedis(
        redis.Redis.from_url(URL), prefixes=["t:"], max_staleness=0.5, timer=lambda: now[0]
    )
    try:
        assert near.wait_for_tracking(5)
        mset_heard(near, db, {"t:a": b"1"})
        assert [b"1", b"1"] == [near.get("t:a"), near.get("t:a")]
        assert 1 == near.stats().hits
        now[0] += 0.5  # the listener's clock too: its confirmation is now too old
        assert not near.tracking
        assert b"1" == near.get("t:a")
        assert (1, 1) == (near.stats().hits, near.stats().bypassed)
    finally:
        near.close()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_listens_for_itself(near: NearRedis, db: Any) -> None:
    """A child forked with a filled NearRedis starts empty with a listener of its own,
    which hears the parent's writes."""
    mset_heard(near, db, {"t:a": b"1"})
    near.get("t:a")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        try:
            fresh = near.wait_for_tracking(5) and near.stats().entries == 0
            os.write(write_end, b"ready\n" if fresh and near.get("t:a") == b"1" else b"bad\n")
            deadline = time.monotonic() + 5
            while near.get("t:a") != b"2" and time.monotonic() < deadline:
                time.sleep(0.001)
            os.write(write_end, b"heard\n" if near.get("t:a") == b"2" else b"stale\n")
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as child:
        assert "ready" == child.readline().strip()
        db.set("t:a", b"2")
        assert "heard" == child.readline().strip()
    assert 0 == os.waitpid(pid, 0)[1]


def test_byte_bound_is_never_exceeded(near: NearRedis, db: Any) -> None:
    """Reading 600 distinct 4 KiB values keeps the local copy within max_bytes (1M)."""
    db.mset({f"t:{i}": bytes([65 + i % 26]) * 4096 for i in range(600)})
    for i in range(600):
        assert bytes([65 + i % 26]) * 4096 == near.get(f"t:{i}")
        assert near.stats().bytes <= 1024**2
    stats = near.stats()
    assert stats.evictions > 0
    assert stats.entries < 600
    assert 0 < near.shrink(0.5)


READER = textwrap.dedent(
    """
    import sys, time, redis
    from boundkit.near_redis import NearRedis
    near = NearRedis(redis.Redis.from_url(sys.argv[1]), prefixes=["t:"])
    assert near.wait_for_tracking(5)
    assert near.get("t:k") == b"old"
    print("ready", flush=True)
    while near.get("t:k") == b"old":
        pass
    print(time.time(), near.stats().hits, flush=True)
    """
)


@pytest.mark.slow
def test_a_write_in_another_process_reaches_the_local_copy_within_the_bound(
    db: Any, tmp_path: Path
) -> None:
    """Process A reads t:k from its local copy in a loop; B's SET is seen by A within
    max_staleness (1 s), in practice within milliseconds."""
    db.set("t:k", b"old")
    script = tmp_path / "reader.py"
    script.write_text(READER)
    with subprocess.Popen(
        [sys.executable, str(script), URL], stdout=subprocess.PIPE, text=True
    ) as reader:
        assert reader.stdout is not None
        assert "ready" == reader.stdout.readline().strip()
        time.sleep(0.2)  # A serves its local copy meanwhile
        db.set("t:k", b"new")
        acknowledged = time.time()
        seen, hits = reader.stdout.readline().split()
    assert float(seen) - acknowledged < 1.0
    assert int(hits) > 1000  # the reads before the write were local


@pytest.mark.slow
def test_restart_is_survived_without_errors_or_stale_reads(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Reads run through a restart of the server (its data gone): with a client that retries
    its connections, no exception reaches the caller; no read begun after the restart gets
    the value from before it; the listener comes back by itself, logging one warning."""
    retrying = Retry(ExponentialBackoff(cap=0.1, base=0.01), retries=50)
    client = redis.Redis.from_url(redis_server.url, retry=retrying)
    client.set("t:k", b"before")
    reads: list[tuple[float, Any]] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    with (
        caplog.at_level(logging.WARNING, logger="boundkit.near_redis"),
        NearRedis(client, prefixes=["t:"], max_staleness=0.2, retry_interval=0.05) as near,
    ):
        assert near.wait_for_tracking(5)

        def loop() -> None:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    reads.append((began, near.get("t:k")))
                except BaseException as exc:  # the point: none may arrive here
                    errors.append(exc)
                time.sleep(0.001)

        worker = threading.Thread(target=loop)
        worker.start()
        try:
            time.sleep(0.2)
            redis_server.stop()
            time.sleep(0.3)
            redis_server.start()
            restarted = time.monotonic()
            wait_until(lambda: near.tracking)
            client.set("t:k", b"after")
            written = time.monotonic()
            time.sleep(0.3)
        finally:
            stop.set()
            worker.join()
        stats = near.stats()
    assert [] == errors
    assert any(value == b"before" for began, value in reads if began < restarted)
    assert all(value != b"before" for began, value in reads if began > restarted)
    assert all(value == b"after" for began, value in reads if began > written)
    assert stats.hits > 0
    assert stats.reconnects >= 1
    assert stats.flushes >= 1
    assert 1 == len([r for r in caplog.records if r.name == "boundkit.near_redis"])


def test_redis_down_gives_redis_pys_error_one_log_line_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing listening: reads raise redis-py's ConnectionError (nothing to serve), the
    listener retries quietly with one warning, and the password shows nowhere."""
    url = f"redis://app:{SECRET}@127.0.0.1:{free_port()}/0"
    with caplog.at_level(logging.WARNING, logger="boundkit.near_redis"):
        near = NearRedis(url, retry_interval=0.01)
        try:
            with pytest.raises(redis.ConnectionError):
                near.get("k")
            wait_until(lambda: near.stats().flushes >= 3)  # three failed attempts at least
            monitor = WebMonitor(guard=MemoryGuard(limit="1T"))
            monitor.guard.register_cache(near, name="near")
            body = monitor.health_body().decode()
        finally:
            near.close()
    warnings = [record for record in caplog.records if record.name == "boundkit.near_redis"]
    assert 1 == len(warnings)
    assert "redis://app:***@127.0.0.1" in repr(near) + body + warnings[0].getMessage()
    assert SECRET not in caplog.text + repr(near) + body + json.dumps(near.stats().as_dict())
    assert json.loads(body)["caches"]["near"]["tracking"] is False


def test_health_lists_the_local_copy(near: NearRedis, db: Any) -> None:
    """Registered with the guard, its stats (bounds, listener state) appear in /health."""
    mset_heard(near, db, {"t:a": b"1"})
    near.get("t:a")
    monitor = WebMonitor(guard=MemoryGuard(limit="1T"))
    monitor.guard.register_cache(near, name="redis-near")
    shown = monitor.health()["caches"]["redis-near"]
    assert (1, 1024**2, True, ["t:"]) == (
        shown["entries"],
        shown["max_bytes"],
        shown["tracking"],
        shown["prefixes"],
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prefixes": "t:"}, "a list of prefixes"),
        ({"prefixes": ["t:", "t:x"]}, "overlap"),
        ({"prefixes": [""]}, "non-empty"),
        ({"max_staleness": 0}, "max_staleness"),
        ({"retry_interval": -1}, "retry_interval"),
        ({"max_bytes": "lots"}, "lots"),
        ({"maxsize": None, "max_bytes": None}, "bound"),
    ],
)
def test_bad_options_are_config_errors(kwargs: dict[str, Any], message: str) -> None:
    """Each bad option is a ConfigError naming it, before any connection is made."""
    with pytest.raises(ConfigError, match=message):
        NearRedis(URL, **kwargs)


def test_bad_client_and_url_are_config_errors_redacted() -> None:
    """Neither a client nor a URL, or a client whose pool the listener cannot copy
    (Sentinel): ConfigError; a bad URL's password is not repeated."""
    with pytest.raises(ConfigError, match=r"redis\.Redis"):
        NearRedis(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as caught:
        NearRedis(f"nosuch://app:{SECRET}@host/0")
    assert SECRET not in str(caught.value)
    sentinel = Sentinel([("127.0.0.1", free_port())])  # connects only when used
    with pytest.raises(ConfigError, match="SentinelConnectionPool"):
        NearRedis(sentinel.master_for("app"))


def test_bad_keys_are_invalid_key_errors(near: NearRedis) -> None:
    """A key of the wrong type, or outside the prefixes, is an InvalidKeyError (a
    TypeError and a ValueError), for reads and writes alike."""
    for bad in (1, ["t:a"], None):
        with pytest.raises(InvalidKeyError, match="str or bytes"):
            near.get(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidKeyError, match="outside the tracked prefixes"):
        near.get_many(["t:a", "other"])
    with pytest.raises(InvalidKeyError, match="outside"):
        near.set("other", b"1")
    with pytest.raises(TypeError):
        near.delete(b"t:a", 3)  # type: ignore[arg-type]


def test_closed_reader_refuses_reads(db: Any) -> None:
    """After close() the listener is gone and reads raise ResourceClosedError."""
    near = NearRedis(redis.Redis.from_url(URL))
    assert near.wait_for_tracking(5)
    near.close()
    assert not near.tracking
    with pytest.raises(ResourceClosedError):
        near.get("k")


def test_reads_writes_and_errors_do_not_grow_memory(db: Any) -> None:
    """Misses that evict, hits, write-throughs with their invalidations, and refused keys
    leave no memory behind."""
    db.mset({f"t:{i}": bytes(100) for i in range(200)})
    counter = itertools.count()
    with NearRedis(redis.Redis.from_url(URL), prefixes=["t:"], maxsize=50) as near:
        assert near.wait_for_tracking(5)

        def churn() -> None:
            n = next(counter)
            near.get(f"t:{n % 200}")
            near.get("t:0")
            if n % 10 == 0:
                near.set(f"t:{n % 200}", bytes(100))
                with contextlib.suppress(InvalidKeyError):
                    near.get(n)  # type: ignore[arg-type]

        assert_no_growth(churn, calls=500, rounds=5)
