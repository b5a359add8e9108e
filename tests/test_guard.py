"""Tests of boundkit.guard (MemoryGuard) and boundkit.scope (memory_scope, monitor_memory)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from boundkit import ConfigError, MemoryLimit, ResourceClosedError, memory_limit, memory_snapshot
from boundkit.cache import BoundedCache
from boundkit.guard import MemoryGuard
from boundkit.scope import memory_scope, monitor_memory
from boundkit.testing import assert_no_growth
from fakes import FakeMemory, FakeTimer

MB = 1024**2
LIMIT = 100 * MB


@pytest.fixture
def memory() -> FakeMemory:
    return FakeMemory()


@pytest.fixture
def timer() -> FakeTimer:
    return FakeTimer()


@pytest.fixture
def trims() -> list[int]:
    return []


@pytest.fixture
def guard(memory: FakeMemory, timer: FakeTimer, trims: list[int]) -> MemoryGuard:
    return MemoryGuard(
        limit=LIMIT,
        cooldown=30.0,
        hysteresis=0.05,
        reader=memory,
        timer=timer,
        trim=lambda: trims.append(1),
    )


def test_below_warning_is_ok_and_runs_nothing(
    guard: MemoryGuard, memory: FakeMemory, trims: list[int]
) -> None:
    """Under the warning fraction a check reports ok and runs no hook."""
    calls: list[str] = []
    guard.register_cleanup(lambda: calls.append("w"), level="warning")
    guard.register_cleanup(lambda: calls.append("c"))
    memory.used = 79 * MB
    assert "ok" == guard.check()
    assert [] == calls
    assert [] == trims


def test_warning_crossing_runs_warning_hooks_once(
    guard: MemoryGuard, memory: FakeMemory, caplog: pytest.LogCaptureFixture
) -> None:
    """Crossing warning upwards logs and runs warning hooks once; staying there does not repeat."""
    calls: list[str] = []
    guard.register_cleanup(lambda: calls.append("w"), level="warning")
    guard.register_cleanup(lambda: calls.append("c"))
    memory.used = 85 * MB
    with caplog.at_level(logging.WARNING, logger="boundkit.guard"):
        assert "warning" == guard.check()
        assert "warning" == guard.check()
    assert ["w"] == calls
    expected = ["memory warning: 85.0 MiB of 100.0 MiB (85%)"]
    assert expected == [r.getMessage() for r in caplog.records]


def test_critical_crossing_runs_cleanup_then_trim_and_measures(
    guard: MemoryGuard, memory: FakeMemory, trims: list[int]
) -> None:
    """At critical the cleanup hooks run, then trim; what was given back is in status()."""
    order: list[str] = []

    def release() -> None:
        order.append("hook")
        memory.used = 50 * MB

    guard.register_cleanup(release)
    memory.used = 95 * MB
    guard.check()
    assert ["hook"] == order
    assert [1] == trims
    status = guard.status()
    last = status["last_cleanup"]
    assert (95 * MB, 50 * MB, 45 * MB, 0) == (
        last["before"],
        last["after"],
        last["reclaimed"],
        last["errors"],
    )
    assert (1, 45 * MB, "ok") == (status["cleanups"], status["reclaimed"], status["level"])


def test_jump_from_ok_to_critical_runs_warning_hooks_first(
    guard: MemoryGuard, memory: FakeMemory
) -> None:
    """Going straight from ok to critical crosses warning too: warning hooks, then cleanup."""
    order: list[str] = []
    guard.register_cleanup(lambda: order.append("critical"))
    guard.register_cleanup(lambda: order.append("warning"), level="warning")
    memory.used = 99 * MB
    assert "critical" == guard.check()
    assert ["warning", "critical"] == order


def test_hysteresis_prevents_flapping(
    guard: MemoryGuard, memory: FakeMemory, timer: FakeTimer, trims: list[int]
) -> None:
    """Memory hovering around a threshold crosses it once, until it falls clearly below."""
    warnings_run: list[int] = []
    guard.register_cleanup(lambda: warnings_run.append(1), level="warning")
    for used in (81, 78, 81, 77, 82):  # within 5 % below warning: still warning
        memory.used = used * MB
        assert "warning" == guard.check()
    assert [1] == warnings_run
    memory.used = 74 * MB
    assert "ok" == guard.check()
    memory.used = 81 * MB
    assert "warning" == guard.check()
    assert [1, 1] == warnings_run
    memory.used = 91 * MB
    assert "critical" == guard.check()
    timer.tick(60)
    memory.used = 86 * MB  # within the margin below critical
    assert "critical" == guard.check()
    memory.used = 84 * MB
    assert "warning" == guard.check()


def test_cooldown_limits_cleanups_while_critical(
    guard: MemoryGuard, memory: FakeMemory, timer: FakeTimer, trims: list[int]
) -> None:
    """While memory stays critical: one cleanup, one escalation, then nothing until the cooldown.

    (The escalation itself, up to retirement, is tested in test_pressure.py.)
    """
    guard._retire = lambda: None
    memory.used = 95 * MB
    for _ in range(100):
        guard.check()
        timer.tick(0.1)
    assert 2 == len(trims)
    timer.tick(22.0)  # 30 s after the escalation's cleanup
    guard.check()
    assert 3 == len(trims)
    assert 3 == guard.status()["cleanups"]


def test_recrossing_within_cooldown_waits(
    guard: MemoryGuard, memory: FakeMemory, timer: FakeTimer, trims: list[int]
) -> None:
    """A new critical crossing inside the cooldown waits for it instead of a cleanup storm."""
    memory.used = 95 * MB
    guard.check()
    memory.used = 50 * MB
    guard.check()
    memory.used = 95 * MB
    guard.check()
    assert 1 == len(trims)
    timer.tick(30.0)
    guard.check()
    assert 2 == len(trims)


def test_hook_exceptions_are_logged_not_raised(
    guard: MemoryGuard, memory: FakeMemory, trims: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    """A failing hook is logged and counted; later hooks and the trim still run."""
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("hook broke")

    guard.register_cleanup(broken, level="warning")
    guard.register_cleanup(broken)
    guard.register_cleanup(lambda: ran.append("after"))
    memory.used = 95 * MB
    with caplog.at_level(logging.ERROR, logger="boundkit.guard"):
        assert "critical" == guard.check()
    assert ["after"] == ran
    assert [1] == trims
    assert 2 == guard.status()["hook_errors"]
    assert 1 == guard.status()["last_cleanup"]["errors"]
    assert 2 == sum("hook broke" in (r.exc_text or "") for r in caplog.records)


def test_hook_calling_check_does_not_deadlock(guard: MemoryGuard, memory: FakeMemory) -> None:
    """A check from inside a hook returns the level being acted on instead of waiting."""
    seen: list[str] = []
    guard.register_cleanup(lambda: seen.append(guard.check()))
    memory.used = 95 * MB
    guard.check()
    assert ["critical"] == seen


def test_register_cache_shrinks_at_critical(guard: MemoryGuard, memory: FakeMemory) -> None:
    """A registered cache is shrunk by its fraction at critical and listed by name."""

    class Shrinkable:
        def __init__(self) -> None:
            self.fractions: list[float] = []

        def shrink(self, fraction: float) -> None:
            self.fractions.append(fraction)

    cache = Shrinkable()
    guard.register_cache(cache, name="pages", fraction=0.25)
    memory.used = 85 * MB
    guard.check()
    assert [] == cache.fractions
    memory.used = 95 * MB
    guard.check()
    assert [0.25] == cache.fractions
    assert {"pages": cache} == guard.caches()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"warning": 0.9, "critical": 0.9},
        {"warning": 0.95, "critical": 0.9},
        {"warning": 0.0},
        {"critical": 1.5},
        {"warning": math.nan},
        {"warning": True},
        {"interval": 0},
        {"interval": -1.0},
        {"cooldown": -1.0},
        {"cooldown": math.inf},
        {"hysteresis": 0.9},
        {"limit": 0},
        {"limit": "lots"},
    ],
)
def test_bad_settings_raise_config_error(kwargs: dict[str, object]) -> None:
    """Each invalid setting raises ConfigError naming what was wrong."""
    options: dict[str, object] = {"limit": LIMIT, **kwargs}
    with pytest.raises(ConfigError) as info:
        MemoryGuard(**options)  # type: ignore[arg-type]
    assert next(iter(kwargs)) in str(info.value)


def test_bad_level_raises_config_error(guard: MemoryGuard) -> None:
    """register_cleanup rejects a level other than warning or critical."""
    with pytest.raises(ConfigError, match="'fatal'"):
        guard.register_cleanup(lambda: None, level="fatal")  # type: ignore[arg-type]


def test_default_limit_is_memory_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no limit the guard uses memory_limit(), which honours BOUNDKIT_MEMORY_LIMIT."""
    monkeypatch.setenv("BOUNDKIT_MEMORY_LIMIT", "300M")
    guard = MemoryGuard()
    assert memory_limit() == guard.limit
    assert 300 * MB == guard.status()["limit"]


def test_limit_accepts_sizes_and_memory_limit() -> None:
    """A size string and a MemoryLimit both set the limit in bytes."""
    assert 512 * MB == MemoryGuard(limit="512M").status()["limit"]
    found = MemoryLimit(bytes=256 * MB, source="test", limited=True)
    assert found == MemoryGuard(limit=found).limit


def test_status_is_json_ready(guard: MemoryGuard, memory: FakeMemory) -> None:
    """status() round-trips through JSON with its documented keys."""
    memory.used = 95 * MB
    guard.check()
    status = guard.status()
    assert status == json.loads(json.dumps(status))
    assert {
        "level",
        "used",
        "limit",
        "warning",
        "critical",
        "checks",
        "last_check_seconds_ago",
        "cleanups",
        "reclaimed",
        "last_cleanup",
        "hook_errors",
        "watching",
        "given_back",
        "budgets",
        "retirements",
    } == set(status)


def _wait_for(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.005)
    return False


def test_watcher_thread_starts_checks_and_stops(memory: FakeMemory) -> None:
    """start() checks every interval from a daemon thread; stop() ends it; start is idempotent."""
    guard = MemoryGuard(limit=LIMIT, interval=0.01, reader=memory)
    guard.start()
    guard.start()
    try:
        assert guard.watching
        assert _wait_for(lambda: guard.status()["checks"] >= 3)
    finally:
        guard.stop()
    assert not guard.watching
    checks = guard.status()["checks"]
    time.sleep(0.05)
    assert checks == guard.status()["checks"]
    guard.start()
    assert guard.watching
    guard.close()
    assert not guard.watching
    with pytest.raises(ResourceClosedError):
        guard.start()


def _in_child(guard: MemoryGuard, wait: float) -> str:
    """Fork; run a probe of ``guard`` in the child and return what it wrote."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            watching = guard.watching
            ok = _wait_for(lambda: guard.status()["checks"] >= 3, timeout=wait)
            guard.stop()
            os.write(write_end, f"{watching} {ok} {guard.watching}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        out = pipe.read().decode()
    os.waitpid(pid, 0)
    return out


def test_forked_child_gets_its_own_watcher(memory: FakeMemory) -> None:
    """A child forked from a watching parent runs a live watcher of its own, and can stop it."""
    guard = MemoryGuard(limit=LIMIT, interval=0.01, reader=memory)
    guard.start()
    try:
        assert "True True False" == _in_child(guard, wait=5.0)
        assert guard.watching
    finally:
        guard.stop()


def test_forked_child_of_idle_guard_has_no_watcher(memory: FakeMemory) -> None:
    """A child of a parent whose guard was not watching has no watcher either."""
    guard = MemoryGuard(limit=LIMIT, interval=0.01, reader=memory)
    assert "False False False" == _in_child(guard, wait=0.2)


def test_check_holds_no_growth() -> None:
    """check() on the real memory probe holds zero net growth over 10,000 calls."""
    guard = MemoryGuard(limit="64G")
    assert_no_growth(guard.check, calls=10_000, rounds=5)


def test_memory_scope_logs_before_after_and_delta(caplog: pytest.LogCaptureFixture) -> None:
    """memory_scope yields the readings, and logs the name, RSS before and after."""
    with caplog.at_level(logging.INFO, logger="boundkit.scope"), memory_scope("grow") as scope:
        assert scope.after is None
        assert scope.delta is None
        block = bytearray(b"\x01") * (16 * MB)
    assert scope.after is not None
    assert scope.delta is not None
    assert scope.delta >= 8 * MB
    del block
    [record] = caplog.records
    assert record.getMessage().startswith("grow: rss ")
    assert "(+" in record.getMessage()


def test_memory_scope_reports_the_peak_inside_the_block(caplog: pytest.LogCaptureFixture) -> None:
    """A block that allocates 64 MiB and frees it shows a flat delta but a 64 MiB peak."""
    with caplog.at_level(logging.INFO, logger="boundkit.scope"), memory_scope("spike") as scope:
        block = bytearray(b"\x01") * (64 * MB)
        del block
    assert scope.after is not None
    assert scope.peak is not None
    assert scope.peak - scope.before >= 56 * MB
    assert scope.after - scope.before < 16 * MB
    [record] = caplog.records
    assert ", peak " in record.getMessage()


def test_memory_scope_samples_where_the_peak_cannot_be_reset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without /proc/self/clear_refs, a sampling thread still sees a peak held 0.2 s."""
    monkeypatch.setattr("boundkit.scope._reset_high_water", lambda: None)
    threads = threading.active_count()
    with memory_scope("sampled") as scope:
        block = bytearray(b"\x01") * (64 * MB)
        time.sleep(0.2)
        del block
    assert scope.peak is not None
    assert scope.peak - scope.before >= 56 * MB
    assert threads == threading.active_count()  # the sampler has stopped


def test_nested_scope_does_not_hide_the_outer_peak() -> None:
    """An inner scope resets the process-wide mark; the outer scope keeps its earlier peak."""
    with memory_scope("outer") as outer:
        block = bytearray(b"\x01") * (64 * MB)
        del block
        with memory_scope("inner") as inner:
            pass
    assert outer.peak is not None
    assert inner.peak is not None
    assert outer.peak - outer.before >= 56 * MB
    assert inner.peak - inner.before < 16 * MB


def test_memory_scope_keeps_the_lifetime_peak_in_snapshots() -> None:
    """Resetting the kernel's mark does not lower memory_snapshot()'s peak_rss_mb."""
    block = bytearray(b"\x01") * (64 * MB)
    del block
    lifetime = memory_snapshot()["peak_rss_mb"]
    with memory_scope("small"):
        pass
    assert lifetime <= memory_snapshot()["peak_rss_mb"]


@pytest.mark.parametrize("level", ["INFO", True, -1, 1.5, None])
def test_memory_scope_and_monitor_memory_refuse_a_bad_level(level: object) -> None:
    """level must be a logging level: ConfigError naming it, at the scope or the decoration."""
    message = f"level must be a logging level [(]an int >= 0[)], got {level!r}"
    with pytest.raises(ConfigError, match=message), memory_scope("x", level=level):  # type: ignore[arg-type]
        pass
    with pytest.raises(ConfigError, match=message):
        monitor_memory(level=level)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda g: g.stop(timeout=-1), "timeout must be a number of seconds zero or more, got -1"),
        (
            lambda g: g.stop(timeout="1"),
            "timeout must be a number of seconds zero or more, got '1'",
        ),
        (lambda g: g.stop(timeout=math.nan), "timeout must be .* got nan"),
        (lambda g: MemoryGuard(limit="1G", interval=10**30), "interval must be .* got 10+$"),
    ],
)
def test_guard_seconds_are_validated(call: Callable[[MemoryGuard], object], message: str) -> None:
    """stop()'s timeout and an interval beyond what a thread can wait are ConfigErrors."""
    guard = MemoryGuard(limit="1G")
    with pytest.raises(ConfigError, match=message):
        call(guard)
    guard.close()


def test_memory_scope_records_after_on_error() -> None:
    """The reading after the block is taken even when the block raises."""
    with pytest.raises(KeyError), memory_scope("fails") as scope:
        raise KeyError("x")
    assert scope.after is not None


def test_monitor_memory_wraps_sync_and_async(caplog: pytest.LogCaptureFixture) -> None:
    """@monitor_memory (bare and with options) logs each call under the function's name."""

    @monitor_memory
    def plain(x: int) -> int:
        return x + 1

    @monitor_memory(name="custom", level=logging.DEBUG)
    async def coro(x: int) -> int:
        return x * 2

    with caplog.at_level(logging.DEBUG, logger="boundkit.scope"):
        assert 2 == plain(1)
        assert 6 == asyncio.run(coro(3))
    names = [r.getMessage().split(":")[0] for r in caplog.records]
    assert [plain.__qualname__, "custom"] == names
    assert [logging.INFO, logging.DEBUG] == [r.levelno for r in caplog.records]


def test_memory_scope_holds_no_growth() -> None:
    """memory_scope holds zero net growth over 10,000 uses with logging off."""

    def use() -> None:
        with memory_scope("x", level=logging.DEBUG):
            pass

    assert_no_growth(use, calls=10_000, rounds=5)


def test_register_pools_replaces_idle_connections_at_critical(
    guard: MemoryGuard, memory: FakeMemory, pg_dsn: str
) -> None:
    """register_pools replaces a real pool's idle connections with fresh ones at critical."""
    pytest.importorskip("psycopg_pool")
    from boundkit.pg import create_pool, pooled_connection

    pool = create_pool(pg_dsn, min_size=1, max_size=3, name="guard-test")

    def three_backends() -> set[int]:
        lease = functools.partial(pooled_connection, pool=pool)
        with lease() as one, lease() as two, lease() as three:  # then all three idle
            return {c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in (one, two, three)}

    try:
        before = three_backends()
        guard.register_pools()
        memory.used = 95 * MB
        guard.check()
        assert (3, set()) == (len(before), before & three_backends())
        assert 3 == pool.get_stats()["pool_size"]
        assert 0 == guard.status()["hook_errors"]
    finally:
        pool.close()


@contextlib.contextmanager
def uvicorn_serving(app: Any) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn server on a thread; yield its base URL."""
    uvicorn = pytest.importorskip("uvicorn")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped before it started"
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _async_pool_app(pg_dsn: str, name: str, monitor: Any) -> Any:
    """A Starlette app on one boundkit.pg_async pool; /fill leaves three connections idle."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from boundkit import ASGIMiddleware
    from boundkit.pg_async import acreate_pool, apooled_connection

    pools: list[Any] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        pools.append(await acreate_pool(pg_dsn, min_size=1, max_size=3, name=name))
        yield
        await pools[0].close()

    async def hold() -> None:
        async with apooled_connection(pool=pools[0]) as conn:
            await conn.execute("SELECT pg_sleep(0.05)")

    async def fill(request: Any) -> JSONResponse:
        await asyncio.gather(hold(), hold(), hold())
        return JSONResponse(pools[0].get_stats()["pool_size"])

    app = Starlette(routes=[Route("/fill", fill)], lifespan=lifespan)
    return ASGIMiddleware(app, monitor=monitor)


def _connections_made_soon(client: Any, name: str, expected: int) -> int:
    """How many connections the pool opened, from /health, once ``expected`` (or after 5 s).

    At least ``expected``: a second cleanup at critical may replace some again.
    """
    deadline = time.monotonic() + 5
    while True:
        made = int(client.get("/health").json()["pools"][name]["connections_num"])
        if made >= expected or time.monotonic() > deadline:
            return made
        time.sleep(0.02)


def test_register_pools_releases_async_pools_under_uvicorn(memory: FakeMemory, pg_dsn: str) -> None:
    """Under uvicorn, /health lists the async pool; the guard's thread renews it on its loop."""
    httpx = pytest.importorskip("httpx")
    from boundkit import WebMonitor

    name = f"uvicorn-{os.getpid()}-{time.monotonic_ns()}"
    guard = MemoryGuard(limit=LIMIT, reader=memory, interval=0.05, cooldown=0, trim=lambda: None)
    guard.register_pools()
    monitor = WebMonitor(guard=guard, check_interval=3600)
    with (
        uvicorn_serving(_async_pool_app(pg_dsn, name, monitor)) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        assert 3 == client.get("/fill").json()
        assert 3 == client.get("/health").json()["pools"][name]["pool_size"]
        memory.used = 95 * MB  # critical: the watcher thread runs the cleanup
        guard.start()
        try:  # the three idle connections closed, three new ones opened
            assert 6 <= _connections_made_soon(client, name, 6)
        finally:
            guard.close()
        assert 3 == client.get("/fill").json()  # the pool serves as before
    assert 0 == guard.status()["hook_errors"]


def test_a_check_on_the_event_loop_schedules_the_release_without_blocking(
    memory: FakeMemory, pg_dsn: str
) -> None:
    """A guard check inside a request (on the loop's thread) schedules the release, never waits."""
    httpx = pytest.importorskip("httpx")
    from boundkit import WebMonitor
    from boundkit.guard import ASYNC_RELEASE_TIMEOUT

    name = f"uvicorn-{os.getpid()}-{time.monotonic_ns()}"
    guard = MemoryGuard(limit=LIMIT, reader=memory, cooldown=0, trim=lambda: None)
    guard.register_pools()
    monitor = WebMonitor(guard=guard, check_interval=0)  # every request checks, on the loop
    with (
        uvicorn_serving(_async_pool_app(pg_dsn, name, monitor)) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        assert 3 == client.get("/fill").json()
        memory.used = 95 * MB
        started = time.monotonic()
        client.get("/health")  # its check runs the cleanup on the loop's own thread
        assert time.monotonic() - started < ASYNC_RELEASE_TIMEOUT
        memory.used = 10 * MB
        assert 6 <= _connections_made_soon(client, name, 6)
    assert 0 == guard.status()["hook_errors"]


def test_register_pools_never_imports_psycopg() -> None:
    """An app that never used boundkit.pg pays nothing: the cleanup does not import psycopg."""
    code = (
        "import sys\n"
        "from boundkit import MemoryGuard\n"
        "guard = MemoryGuard(limit=100, reader=lambda: 95, trim=lambda: None)\n"
        "guard.register_pools()\n"
        "print(guard.check(), guard.status()['hook_errors'], 'psycopg' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert "critical 0 False" == out.strip()


def test_bounded_cache_is_shrunk_at_critical(guard: MemoryGuard, memory: FakeMemory) -> None:
    """A real BoundedCache registered with the guard loses half its entries at critical."""
    cache = BoundedCache(maxsize=100)
    for i in range(100):
        cache[i] = str(i)
    guard.register_cache(cache, name="numbers", fraction=0.5)
    memory.used = 95 * MB
    guard.check()
    assert 50 == len(cache)
    assert 50 == cache.stats().as_dict()["entries"]
