"""Tests of the pressure response: cache budgets that give way and come back, escalation, pace."""

from __future__ import annotations

import logging
import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest

from boundkit import ConfigError, MemoryGuard, WebMonitor
from boundkit.cache import BoundedCache
from boundkit.memory import process_memory
from boundkit.metrics import RequestStats
from boundkit.pressure import CacheBudgets
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
def retired() -> list[int]:
    return []


@pytest.fixture
def guard(memory: FakeMemory, timer: FakeTimer, retired: list[int]) -> MemoryGuard:
    return MemoryGuard(
        limit=LIMIT,
        cooldown=30.0,
        escalate_after=2.0,
        reader=memory,
        timer=timer,
        trim=lambda: None,
        retire=lambda: retired.append(1),
    )


def full_cache(max_bytes: int = 8 * MB) -> BoundedCache[int, bytes]:
    """A cache filled past its byte bound with 64 KiB values (it evicts down to the bound)."""
    cache: BoundedCache[int, bytes] = BoundedCache(max_bytes=max_bytes)
    for key in range(max_bytes // (64 * 1024) + 8):
        cache[key] = bytes(64 * 1024)
    assert (cache.stats().bytes or 0) > max_bytes * 0.9
    return cache


def test_adaptive_budget_lowers_and_recovers_on_a_fake_clock(
    guard: MemoryGuard, memory: FakeMemory, timer: FakeTimer
) -> None:
    """Critical halves max_bytes; after ``hold`` s at ok it climbs back a quarter per step."""
    cache = full_cache()
    guard.register_cache(cache, name="pages")
    budgets = guard.budgets
    memory.used = 95 * MB
    guard.check()
    assert 4 * MB == cache.max_bytes
    assert (cache.stats().bytes or 0) <= 4 * MB
    memory.used = 50 * MB
    guard.check()
    timer.tick(budgets.hold - 1)
    guard.check()
    assert 4 * MB == cache.max_bytes  # not before hold seconds at ok
    seen = []
    for _ in range(6):
        timer.tick(budgets.every)
        guard.check()
        seen.append(cache.max_bytes)
    assert [6 * MB, 8 * MB, 8 * MB, 8 * MB, 8 * MB, 8 * MB] == seen
    assert not budgets.lowered
    assert 8 * MB == guard.status()["budgets"]["caches"]["pages"]["original"]


def test_recovery_stops_when_pressure_returns(
    guard: MemoryGuard, memory: FakeMemory, timer: FakeTimer
) -> None:
    """Back at warning mid-climb: the budget stays where it is and the hold starts again."""
    cache = full_cache(16 * MB)
    guard.register_cache(cache, name="pages")
    memory.used = 95 * MB
    guard.check()
    assert 8 * MB == cache.max_bytes
    memory.used = 50 * MB
    guard.check()
    timer.tick(guard.budgets.hold)
    guard.check()
    assert 12 * MB == cache.max_bytes
    memory.used = 85 * MB  # warning
    timer.tick(guard.budgets.every)
    guard.check()
    assert 12 * MB == cache.max_bytes
    memory.used = 50 * MB
    timer.tick(guard.budgets.every)
    guard.check()
    assert 12 * MB == cache.max_bytes  # the hold restarted
    timer.tick(guard.budgets.hold)
    guard.check()
    assert 16 * MB == cache.max_bytes


def test_repeated_pressure_lowers_from_the_current_budget_down_to_the_floor(
    timer: FakeTimer,
) -> None:
    """Each lowering halves again, never below ``floor`` of the original budget."""
    cache = full_cache(16 * MB)
    budgets = CacheBudgets(timer=timer)
    budgets.add("pages", cache)
    for _ in range(5):
        budgets.lower()
    assert 2 * MB == cache.max_bytes


@pytest.mark.parametrize("field", ["lower_to", "floor", "step"])
def test_bad_budget_fractions_are_refused(field: str) -> None:
    """A fraction outside (0, 1] is a ConfigError naming the field."""
    with pytest.raises(ConfigError, match=field):
        CacheBudgets(**{field: 1.5})  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["hold", "every"])
@pytest.mark.parametrize("bad", [-1, float("nan"), "30", True])
def test_bad_budget_seconds_are_refused(field: str, bad: Any) -> None:
    """A hold or every that is not seconds >= 0 is a ConfigError naming the field."""
    with pytest.raises(ConfigError, match=f"{field} must be a number of seconds zero or more"):
        CacheBudgets(**{field: bad})


def test_still_critical_escalates_to_retirement_within_the_cooldown(
    guard: MemoryGuard,
    memory: FakeMemory,
    timer: FakeTimer,
    retired: list[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Cleanup, a second cleanup after escalate_after, then retire once: not 30 s of nothing."""
    memory.used = 95 * MB
    with caplog.at_level(logging.WARNING, logger="boundkit.guard"):
        guard.check()
        assert (1, []) == (guard.status()["cleanups"], retired)
        timer.tick(2.0)
        guard.check()
        assert (2, []) == (guard.status()["cleanups"], retired)
        for _ in range(20):
            timer.tick(0.25)
            guard.check()
    assert [1] == retired
    assert 2 == guard.status()["cleanups"]
    assert 1 == guard.status()["retirements"]
    assert "asking to retire" in caplog.text


def test_leaving_critical_resets_the_escalation(
    guard: MemoryGuard, memory: FakeMemory, timer: FakeTimer, retired: list[int]
) -> None:
    """A cleanup that works ends the escalation: no retirement."""
    memory.used = 95 * MB
    guard.check()
    memory.used = 50 * MB
    for _ in range(40):
        timer.tick(0.25)
        guard.check()
    assert [] == retired
    assert 1 == guard.status()["cleanups"]


def test_each_step_reports_what_it_gave_back_in_status_and_health(
    memory: FakeMemory, timer: FakeTimer
) -> None:
    """Caches, trim and the process's own release are reported apart, in status() and /health."""
    cache = full_cache()

    def trim() -> None:
        memory.used -= 3 * MB

    guard = MemoryGuard(limit=LIMIT, reader=memory, timer=timer, trim=trim, retire=lambda: None)
    guard.register_cache(cache, name="pages")
    guard.register_cleanup(lambda: setattr(memory, "used", memory.used - 5 * MB))
    memory.used = 98 * MB
    guard.check()
    steps = guard.status()["last_cleanup"]["steps"]
    assert 5 * MB == steps["caches"]
    assert 3 * MB == steps["trim"]
    assert steps["caches_estimated"] >= 3 * MB  # the entries evicted by the lowered budget
    memory.used = 70 * MB  # the request ended: the process gave back 20 MiB by itself
    guard.check()
    given = guard.status()["given_back"]
    assert {"caches": 5 * MB, "trim": 3 * MB, "own": 20 * MB} == given
    monitor = WebMonitor(guard=guard, stats=RequestStats())
    assert given == monitor.health()["guard"]["given_back"]


def _count_checks(guard: MemoryGuard, seconds: float) -> int:
    before = guard.status()["checks"]
    time.sleep(seconds)
    return int(guard.status()["checks"]) - before


def test_the_watcher_checks_fast_above_warning_and_slowly_at_rest(memory: FakeMemory) -> None:
    """At ok the watcher sleeps its interval; above warning it checks every fast_interval."""
    guard = MemoryGuard(
        limit=LIMIT, interval=1.0, fast_interval=0.05, reader=memory, trim=lambda: None
    )
    guard.check()
    guard.start()
    try:
        assert 0 == _count_checks(guard, 0.5)
        memory.used = 85 * MB
        guard.check()  # a request's check sees the warning; the watcher's next wait is short
        time.sleep(0.6)  # the wait begun at ok ends
        assert _count_checks(guard, 0.5) >= 5
    finally:
        guard.close()


def test_the_guard_sees_a_spike_inside_a_render_before_the_next_page() -> None:
    """A page whose pixmap crosses critical is cleaned up while it renders, not a page later."""
    fix_pdf = pytest.importorskip("fix_pdf")
    pytest.importorskip("pymupdf")
    from boundkit import render_pages

    data = fix_pdf.image_pdf(3)
    list(render_pages(data, dpi=50))  # warm up PyMuPDF
    base = process_memory().rss
    # critical 12 MiB above now: a 300-dpi letter page's pixmap alone is 24 MiB
    guard = MemoryGuard(
        limit=int((base + 12 * MB) / 0.9), interval=60, fast_interval=60, retire=lambda: None
    )
    rendered: list[int] = []
    seen_at: list[int] = []
    guard.register_cleanup(lambda: seen_at.append(len(rendered)))
    guard.start()
    try:
        for number, _png in render_pages(data, dpi=300, fmt="raw"):
            rendered.append(number)
    finally:
        guard.close()
    assert [0, 1, 2] == rendered
    assert seen_at, "the guard never saw the spike"
    assert 0 == seen_at[0]  # seen inside page 0, before page 1


def _retire_in_child(directory: str, asked: Any) -> None:
    from boundkit import dyno, guard

    before = guard.retire_requested()
    dyno.set_current_worker(dyno.WorkerAgent(dyno.DynoState(directory)))
    guard._retire_worker()
    asked.value = int(not before and guard.retire_requested())


def test_default_retire_asks_the_gunicorn_hooks_to_retire_the_worker(tmp_path: Path) -> None:
    """In a governed worker the default retire sets the flag the post_request hook acts on."""
    asked = multiprocessing.get_context("fork").Value("i", 0)
    child = multiprocessing.get_context("fork").Process(
        target=_retire_in_child, args=(str(tmp_path), asked)
    )
    child.start()
    child.join(20)
    assert 0 == child.exitcode
    assert 1 == asked.value
    from boundkit import guard

    assert not guard.retire_requested()  # outside a governed worker: only logged
    guard._retire_worker()
    assert not guard.retire_requested()
