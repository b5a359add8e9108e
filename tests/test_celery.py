"""boundkit.celery: per-task memory, recycling on current RSS, cleanup, fork safety, health.

The worker tests run a real ``celery worker`` (prefork, concurrency 2, Redis
database 14 as broker and backend) on tests/celery_app.py, whose ``install()``
is given a 120 MiB share; children start near 50 MiB.
"""

from __future__ import annotations

import json
import logging
import re
import resource
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

pytest.importorskip("celery")

from celery import Celery, signals

from boundkit._sizes import parse_bytes
from boundkit._task_memory import TaskMemory, TaskMemoryStats, status_of
from boundkit.admission import pdf_reserve_default
from boundkit.celery import CeleryMemory, install
from boundkit.errors import ConfigError
from boundkit.memory import _reset_high_water
from boundkit.share import plan_shares
from fix_celery import CeleryWorker, celery_worker

MIB = 1024 * 1024
WAIT = 30.0
_FIGURES = re.compile(
    r"RSS (?P<before>[\d.]+ \w+) -> (?P<after>[\d.]+ \w+), peak (?P<peak>[\d.]+ \w+|unknown), "
    r"left (?P<left>-?[\d.]+ \w+), cleanup gave back (?P<given>[\d.]+ \w+)"
)

Worker = tuple[CeleryWorker, Celery]


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    with celery_worker(tmp_path_factory.mktemp("celery"), BK_CELERY_SHARE="120M") as pair:
        yield pair


def children(worker: CeleryWorker) -> set[int]:
    alive = set()
    for child in psutil.Process(worker.proc.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.add(child.pid)
        except psutil.Error:
            pass
    return alive


def wait_for_line(worker: CeleryWorker, marker: str) -> str:
    """The first log line holding ``marker`` (the result can arrive before the line)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for line in worker.log_text().splitlines():
            if marker in line:
                return line
        time.sleep(0.05)
    raise AssertionError(f"no log line with {marker!r}:\n{worker.log_text()[-2000:]}")


def figures(line: str) -> dict[str, int | None]:
    found = _FIGURES.search(line)
    assert found is not None, line
    return {
        key: None
        if value == "unknown"
        else parse_bytes(value.lstrip("-")) * (-1 if value.startswith("-") else 1)
        for key, value in found.groupdict().items()
    }


def snapshot(client: Celery) -> dict[str, Any]:
    replies = client.control.broadcast("boundkit_snapshot", reply=True, timeout=10, limit=1)
    assert len(replies) == 1, replies
    (reply,) = replies[0].values()
    return reply  # type: ignore[no-any-return]


# with a real worker -------------------------------------------------------------------


def test_each_task_figures_reach_the_log_and_the_stats(worker: Worker) -> None:
    """Every task logs RSS before/after, its peak and what it left; the stats keep them by name."""
    proc, client = worker
    results = [client.send_task("bk.spike", (30, False)) for _ in range(3)]
    for result in results:
        result.get(timeout=WAIT)
        found = figures(wait_for_line(proc, f"task bk.spike[{result.id}] SUCCESS"))
        assert found["peak"] is not None
        assert found["peak"] - found["before"] >= 29 * MIB  # type: ignore[operator]
        assert found["left"] < 16 * MIB  # type: ignore[operator]
    deadline = time.monotonic() + WAIT
    while True:  # children publish at most once a second
        snap = snapshot(client)
        names = [p["tasks"]["names"].get("bk.spike") for p in snap["celery"]["processes"]]
        ran = sum(entry["requests"] for entry in names if entry)
        if ran >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert ran >= 3
    assert max(entry["peak_growth_mb"]["max"] for entry in names if entry) >= 29
    assert {p["pid"] for p in snap["celery"]["processes"]} <= children(proc)
    assert snap["celery"]["recycle_at_mb"] == 120.0
    assert {"rss_mb", "limit_mb", "dyno", "status"} <= set(snap)  # boundkit snapshot's keys


def test_a_freed_spike_keeps_its_child_and_held_memory_retires_it(worker: Worker) -> None:
    """A 100 MiB spike freed before return recycles nothing; 100 MiB kept retires that child."""
    proc, client = worker
    before = children(proc)
    pids = {client.send_task("bk.spike", (100, False)).get(timeout=WAIT) for _ in range(4)}
    assert pids <= before
    time.sleep(1.0)  # a child the pool retires exits within milliseconds of its result
    assert before == children(proc)
    assert "retired once the result is sent" not in proc.log_text()

    keeper = client.send_task("bk.spike", (100, True)).get(timeout=WAIT)
    line = wait_for_line(proc, f"child {keeper} holds")
    assert "retired once the result is sent" in line
    deadline = time.monotonic() + WAIT
    while keeper in children(proc) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert keeper not in children(proc)
    assert client.send_task("bk.tiny").get(timeout=WAIT) != keeper  # the pool replaced it


def test_a_task_that_raises_still_gets_its_cleanup(worker: Worker) -> None:
    """After a failed task that left 40 MiB, the guard's hooks run and give it back."""
    proc, client = worker
    result = client.send_task("bk.fail", (40,))
    result.get(timeout=WAIT, propagate=False)
    assert result.state == "FAILURE"
    found = figures(wait_for_line(proc, f"task bk.fail[{result.id}] FAILURE"))
    assert found["given"] >= 35 * MIB  # type: ignore[operator]
    assert found["left"] < 16 * MIB  # type: ignore[operator]


def test_children_reserve_pdfs_from_one_table(worker: Worker) -> None:
    """Both children open the same admission table, so their PDF reservations exclude each other."""
    _, client = worker
    paths: dict[int, str] = {}
    for _ in range(5):  # two tasks at once that each last a while reach both children
        for result in [client.send_task("bk.admission", (0.3,)) for _ in range(2)]:
            got = result.get(timeout=WAIT)
            paths[got["pid"]] = got["path"]
        if len(paths) == 2:
            break
    assert len(paths) == 2
    assert len(set(paths.values())) == 1


def test_boundkit_state_does_not_grow_over_10000_tasks(worker: Worker) -> None:
    """Over 10,000 tasks in a child boundkit's state keeps its size; traced bytes do not grow.

    bk.burst applies bk.tiny through Celery's tracer (the same signals a
    delivered task sends) from a thread of one child once that child is idle;
    tracemalloc follows boundkit's files over the last 1,400 of them. Growth
    must stay under a byte per task: one object kept per task adds 16 or more,
    while replacing a latest value (a float, the last task's record) moves the
    total by a few dozen bytes either way.
    """
    _, client = worker
    pid = client.send_task("bk.burst", (10_000, 1_500)).get(timeout=WAIT)
    deadline = time.monotonic() + 180
    got: dict[str, Any] = {}
    while got.get("pid") != pid and time.monotonic() < deadline:
        time.sleep(1.0)
        polls = [client.send_task("bk.burst_result", (0.3,)) for _ in range(2)]  # both children
        got = next((r for r in (p.get(timeout=WAIT) for p in polls) if r.get("pid") == pid), {})
    assert got.get("pid") == pid, "the burst did not finish"
    first, traced_before, last = got["first"], got["traced_before"], got["last"]
    assert last["tasks"] - first["tasks"] >= 9_500
    assert last["traced"] - traced_before["traced"] < 1_400, (traced_before, last)
    for key in ("stats_bytes", "names", "published", "threads"):
        assert last[key] <= first[key], (key, first, last)
    assert last["publishers"] <= 1  # a publish pending after the poll that just ran here


@pytest.mark.redis  # its worker needs the broker: .ci/pg-routes' namespace has none
def test_pools_made_before_the_fork_are_never_used_by_a_child(pg_dsn: str, tmp_path: Path) -> None:
    """The worker's main process opens the default pool; children get their own connections."""
    parent_file = tmp_path / "parent-backend"
    env = {"DATABASE_URL": pg_dsn, "BK_CELERY_PARENT_FILE": str(parent_file)}
    with celery_worker(tmp_path, queue="bk-pg", **env) as (_, client):
        parent_backend = int(parent_file.read_text())
        rows = [client.send_task("bk.pg_backend").get(timeout=WAIT) for _ in range(8)]
    by_child: dict[int, set[int]] = {}
    for row in rows:
        by_child.setdefault(row["pid"], set()).add(row["backend"])
    used = [backend for backends in by_child.values() for backend in backends]
    assert parent_backend not in used
    assert len(used) == len(set(used))  # no connection shared between two children


# without a worker -------------------------------------------------------------------


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("bk-unit", broker="memory://", backend="cache+memory://")
    app.conf.task_always_eager = True
    yield app
    app.close()


def test_install_checks_its_arguments_and_is_idempotent(app: Celery) -> None:
    """Bad sizes raise ConfigError naming the argument; a second install returns the first."""
    with pytest.raises(ConfigError, match="share"):
        install(app, share="lots")
    with pytest.raises(ConfigError, match="share"):
        install(app, share=0)
    with pytest.raises(ConfigError, match="cleanup_above"):
        install(app, cleanup_above="-1M")
    first = install(app)
    assert install(app, share="1G") is first
    assert isinstance(first, CeleryMemory)


def _start_worker(app: Celery, **options: Any) -> None:
    signals.celeryd_init.send(sender="bk@test", instance=None, conf=app.conf, options=options)


def test_the_share_comes_from_the_limit_and_the_footprint(
    app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no share=, prefork children retire at the plan's recycle threshold (set in KiB)."""
    monkeypatch.setenv("BOUNDKIT_MEMORY_LIMIT", "512M")
    memory = install(app)
    try:
        _start_worker(app, concurrency=2, pool_cls="prefork")
        assert memory.plan is not None
        expected = plan_shares(
            "512M", workers=2, footprint=memory.plan.footprint, arbiter=memory.plan.arbiter
        )
        assert expected.recycle == memory.recycle_at
        assert app.conf.worker_max_memory_per_child == expected.recycle // 1024
        assert "512.0 MiB from BOUNDKIT_MEMORY_LIMIT" in memory.startup[-1][1]
    finally:
        memory.on_worker_stop()


def test_an_explicit_share_or_command_line_limit_wins(app: Celery) -> None:
    """share= sets the threshold; --max-memory-per-child (read before the conf) is followed."""
    memory = install(app, share="200M")
    try:
        _start_worker(app, concurrency=2, pool_cls="prefork")
        assert (memory.recycle_at, memory.plan) == (200 * MIB, None)
        assert app.conf.worker_max_memory_per_child == 200 * 1024
        memory.recycle_at = None
        _start_worker(app, concurrency=2, pool_cls="prefork", max_memory_per_child=150_000)
        assert memory.recycle_at == 150_000 * 1024
    finally:
        memory.on_worker_stop()


def test_without_peak_resets_the_worker_warns_that_freed_peaks_retire_children(
    app: Celery,
) -> None:
    """Where clear_refs cannot be written, billiard's peak check stays, and the start says so."""
    memory = install(app, share="200M")
    memory.peak_resets = False  # as where /proc/self/clear_refs is not writable
    try:
        _start_worker(app, concurrency=2, pool_cls="prefork")
        assert memory.recycle_at == 200 * MIB
        (level, message) = memory.startup[-1]
        assert level == logging.WARNING
        assert "lifetime peak" in message
    finally:
        memory.on_worker_stop()


@pytest.mark.parametrize("name", ["threads", "solo"])
@pytest.mark.parametrize("key", ["pool_cls", "pool"])
def test_threads_and_solo_pools_recycle_nothing(app: Celery, name: str, key: str) -> None:
    """Celery cannot replace the one process of a threads or solo pool: no threshold is set.

    The -P class reaches celeryd_init as ``pool_cls`` (Celery 5.3) or ``pool`` (5.6+).
    """
    from celery.concurrency import get_implementation

    memory = install(app, share="200M")
    try:
        _start_worker(app, concurrency=4, **{key: get_implementation(name)})
        assert (memory.pool, memory.recycle_at) == (name, None)
        assert app.conf.worker_max_memory_per_child is None
        (figures,) = memory.snapshot()["celery"]["processes"]  # this process: no children
        assert figures["tasks"]["tasks"] == 0
    finally:
        memory.on_worker_stop()


def test_eager_tasks_are_measured_and_reserve_pdfs_by_default(app: Celery) -> None:
    """In a task (eager here) figures are kept and open_pdf/render_pages reserve by default."""
    memory = install(app)
    seen: list[object] = []

    @app.task(name="bk.unit")
    def unit() -> None:
        seen.append(pdf_reserve_default.get())

    unit.delay()
    unit.delay()
    assert seen == [True, True]
    assert pdf_reserve_default.get() is False
    assert memory.last is not None
    assert memory.last.name == "bk.unit"
    assert memory.last.peak is None or memory.last.peak >= memory.last.rss_before
    assert memory.stats.summary()["names"]["bk.unit"]["requests"] == 2


@pytest.mark.pdf
def test_render_pages_in_a_task_holds_a_reservation(app: Celery) -> None:
    """render_pages() without reserve= in a task holds its page budget while pages come out."""
    pytest.importorskip("pymupdf")
    from boundkit.admission import default_admission
    from boundkit.pdf import render_pages
    from fix_pdf import text_pdf

    install(app)
    held: list[int] = []

    @app.task(name="bk.render")
    def render(data: bytes) -> None:
        for _ in render_pages(data, budget="8M"):
            held.append(default_admission().status().held)

    render.delay(text_pdf(2))
    assert held
    assert min(held) >= 8 * MIB
    assert default_admission().status().held < 8 * MIB


def test_a_task_applied_inside_a_task_is_measured_with_it(app: Celery) -> None:
    """An inner apply() gets its own figures and the outer task keeps its own, after it."""
    memory = install(app)

    @app.task(name="bk.inner")
    def inner() -> None:
        pass

    @app.task(name="bk.outer")
    def outer() -> None:
        inner.apply()

    outer.delay()
    names = memory.stats.summary()["names"]
    assert (names["bk.inner"]["requests"], names["bk.outer"]["requests"]) == (1, 1)
    assert memory.last is not None
    assert memory.last.name == "bk.outer"
    assert memory.last.shared  # the inner task ran inside it
    assert pdf_reserve_default.get() is False


def test_reserve_pdfs_false_leaves_pdfs_unreserved(app: Celery) -> None:
    """install(reserve_pdfs=False) keeps open_pdf's default of no reservation in tasks."""
    install(app, reserve_pdfs=False)
    seen: list[object] = []

    @app.task(name="bk.unit")
    def unit() -> None:
        seen.append(pdf_reserve_default.get())

    unit.delay()
    assert seen == [False]


def test_the_snapshot_hides_passwords() -> None:
    """The health snapshot names the broker without its password."""
    app = Celery("bk-secret", broker="redis://:s3cret@127.0.0.1:6379/14", set_as_current=False)
    snap = install(app).snapshot()
    assert snap["celery"]["broker"] == "redis://:***@127.0.0.1:6379/14"
    assert "s3cret" not in json.dumps(snap)
    app.close()


def test_a_task_that_keeps_leaving_memory_is_named() -> None:
    """Three runs in a row that each left more than leak_above give one warning naming the task."""
    stats = TaskMemoryStats(leak_runs=3, leak_above=MIB)
    leaking = TaskMemory("app.leak", "t", "SUCCESS", 0.1, 50 * MIB, 53 * MIB, None, 0)
    freeing = TaskMemory("app.leak", "t", "SUCCESS", 0.1, 50 * MIB, 50 * MIB, None, 0)
    assert [stats.observe(run) for run in (leaking, leaking, freeing, leaking, leaking)] == [
        None
    ] * 5
    beside = TaskMemory("app.leak", "t", "SUCCESS", 0.1, 50 * MIB, 90 * MIB, None, 0, shared=True)
    assert stats.observe(beside) is None  # another task's memory may be in its figures
    warning = stats.observe(leaking)
    assert warning is not None
    assert "app.leak" in warning
    assert "9.0 MiB" in warning


def test_task_stats_stay_bounded_whatever_runs() -> None:
    """Names past max_tasks share "other"; statuses map success 200, retry 503, else 500."""
    stats = TaskMemoryStats(max_tasks=3, window=10)
    for n in range(50):
        stats.observe(TaskMemory(f"t{n}", "id", "FAILURE", 0.01, 0, 0, 10, 0))
    names = stats.summary()["names"]
    assert set(names) == {"t0", "t1", "t2", "other"}
    assert names["other"]["requests"] == 47
    assert names["other"]["left_mb"]["count"] == 10
    assert (status_of("SUCCESS"), status_of("RETRY"), status_of("REVOKED")) == (200, 503, 500)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and clear_refs are Linux's")
def test_a_peak_reset_holds_after_a_thread_that_spiked_has_exited() -> None:
    """The kernel keeps a thread's peak in the process's ru_maxrss only until the next reset."""
    if _reset_high_water() is None:
        pytest.skip("/proc/self/clear_refs cannot be written here")

    def spike() -> None:
        buf = b"\x01" * (200 * MIB)
        del buf

    thread = threading.Thread(target=spike)
    thread.start()
    thread.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    _reset_high_water()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert peak - after >= 150 * MIB
