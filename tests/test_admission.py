"""Tests of boundkit.admission: one memory budget shared by real processes, FIFO, freed on death."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from boundkit import (
    Admission,
    AdmissionTimeout,
    ASGIMiddleware,
    ConfigError,
    MemoryGuard,
    WebMonitor,
    WSGIMiddleware,
)
from boundkit import admission as admission_module
from boundkit.metrics import RequestStats
from boundkit.share import plan_shares
from boundkit.testing import assert_no_growth

MB = 1024**2
FORK = multiprocessing.get_context("fork")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "admission"


@contextlib.contextmanager
def held_elsewhere(admission: Admission, amount: int) -> Iterator[None]:
    """Hold ``amount`` from another thread (a reservation in this one would cover nested ones)."""
    entered, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with admission.reserve(amount, timeout=5):
            entered.set()
            leave.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert entered.wait(5)
        yield
    finally:
        leave.set()
        thread.join(10)


def _overlap_worker(path: str, amount: int, rounds: int, live: Any, peak: Any, waits: Any) -> None:
    """Reserve ``amount`` ``rounds`` times, adding it to the shared ``live`` total while held."""
    admission = Admission(path)
    for _ in range(rounds):
        with admission.reserve(amount, timeout=20) as held:
            with live.get_lock():
                live.value += amount
                peak.value = max(peak.value, live.value)
            time.sleep(0.005)
            with live.get_lock():
                live.value -= amount
        if held.waited > 0.001:
            with waits.get_lock():
                waits.value += 1


def test_processes_never_hold_more_than_the_budget_together(path: Path) -> None:
    """Four processes each wanting 60% of the budget: never two at once, and they did contend."""
    Admission(path, budget=100 * MB)
    live, peak, waits = FORK.Value("q", 0), FORK.Value("q", 0), FORK.Value("i", 0)
    procs = [
        FORK.Process(target=_overlap_worker, args=(str(path), 60 * MB, 25, live, peak, waits))
        for _ in range(4)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert [0, 0, 0, 0] == [proc.exitcode for proc in procs]
    assert 60 * MB == peak.value  # one holder at a time, never 120 MiB
    assert waits.value > 10  # they really waited for each other
    assert 0 == Admission(path).status().held


def _read_status(path: str, done: Any) -> None:
    Admission(path).status()
    done.value = time.monotonic()


def test_the_table_is_updated_by_one_process_at_a_time(path: Path) -> None:
    """While one process has the table locked, another's read-modify-write waits for it."""
    admission = Admission(path, budget=100 * MB)
    done = FORK.Value("d", 0.0)
    with admission._locked():
        child = FORK.Process(target=_read_status, args=(str(path), done))
        child.start()
        time.sleep(0.3)
        released = time.monotonic()
    child.join(10)
    assert 0 == child.exitcode
    assert done.value >= released


def _hold_forever(path: str, amount: int, ready: Any) -> None:
    with Admission(path).reserve(amount, timeout=5):
        ready.set()
        time.sleep(600)


def test_a_sigkilled_holder_releases_its_reservation(path: Path) -> None:
    """While a child holds 80 of 100 MiB nobody gets 80 more; after SIGKILL it is free again."""
    admission = Admission(path, budget=100 * MB)
    ready = FORK.Event()
    child = FORK.Process(target=_hold_forever, args=(str(path), 80 * MB, ready))
    child.start()
    try:
        assert ready.wait(10)
        assert 80 * MB == admission.status().held
        with pytest.raises(AdmissionTimeout), admission.reserve(80 * MB, timeout=0.1):
            pass
    finally:
        os.kill(child.pid or 0, signal.SIGKILL)
        child.join(10)
    assert -signal.SIGKILL == child.exitcode
    with admission.reserve(80 * MB, timeout=2) as held:
        assert 80 * MB == admission.status().held
    assert held.waited < 2
    assert 0 == admission.status().held


def _send_default_path(queue: Any) -> None:
    queue.put(str(admission_module._default_path()))


def test_forked_children_share_their_parents_file_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a dyno or BOUNDKIT_ADMISSION_FILE a fork (a Celery child) opens its parent's file."""
    monkeypatch.delenv(admission_module.ENV_ADMISSION_FILE, raising=False)
    monkeypatch.delenv("BOUNDKIT_DYNO_DIR", raising=False)
    queue = FORK.Queue()
    child = FORK.Process(target=_send_default_path, args=(queue,))
    child.start()
    child.join(10)
    assert str(admission_module._default_path()) == queue.get(timeout=5)
    assert f"-{os.getpgrp()}" in str(admission_module._default_path())


def test_admission_status_is_none_until_the_dyno_has_a_table(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """admission_status() creates no table; once one exists it reads it like status()."""
    monkeypatch.setenv(admission_module.ENV_ADMISSION_FILE, str(path))
    assert admission_module.admission_status() is None
    assert not path.exists()
    admission = Admission(path, budget=10 * MB)
    with admission.reserve(4 * MB, timeout=1):
        assert admission.status() == admission_module.admission_status()
        assert 4 * MB == admission.status().held


def test_find_admissions_lists_live_groups_tables_not_stale_ones(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The named file and a live process group's file are found; a dead group's is left out."""
    monkeypatch.setenv(admission_module.ENV_ADMISSION_FILE, str(path))
    Admission(path, budget=10 * MB)
    gone = subprocess.Popen(["true"], start_new_session=True)  # its own group, then none
    gone.wait()
    prefix = admission_module._shared_dir() / f"boundkit-admission-{os.getuid()}-"
    stale, live = Path(f"{prefix}{gone.pid}"), Path(f"{prefix}{os.getpgrp()}")
    made = [p for p in (stale, live) if not p.exists()]  # leave files of others alone
    try:
        for table in made:
            Admission(table, budget=10 * MB)
        found = admission_module.find_admissions()
    finally:
        for table in made:
            table.unlink()
    assert 10 * MB == found[str(path)].budget
    assert str(live) in found
    assert str(stale) not in found


def test_a_reused_pid_does_not_keep_a_dead_slot(path: Path) -> None:
    """A slot naming this pid with another start time belongs to a dead process: it is freed."""
    admission = Admission(path, budget=10 * MB)
    with admission._locked() as table:
        table.set(0, [admission_module._HELD, os.getpid(), 12345, 10 * MB, 1])
    with admission.reserve(10 * MB, timeout=0.5):
        assert 10 * MB == admission.status().held


def test_the_wait_times_out_with_the_typed_error(path: Path) -> None:
    """No room within the timeout: AdmissionTimeout (a TimeoutError), the slot is given up."""
    admission = Admission(path, budget=50 * MB)
    with held_elsewhere(admission, 40 * MB):
        started = time.monotonic()
        with pytest.raises(TimeoutError) as caught, admission.reserve(20 * MB, timeout=0.2):
            pass
        assert time.monotonic() - started >= 0.2
    assert isinstance(caught.value, AdmissionTimeout)
    assert 1 == caught.value.retry_after
    assert "no room for 20.0 MiB" in str(caught.value)
    status = admission.status()
    assert (0, 0) == (status.held, status.waiters)


def _busy_app(admission: Admission) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with admission.reserve(30 * MB, timeout=0.05):
            start_response("200 OK", [])
            return [b"rendered"]

    return app


def test_wsgi_middleware_answers_503_with_retry_after(path: Path) -> None:
    """A request whose reservation times out gets 503 and Retry-After, and is counted as 503."""
    admission = Admission(path, budget=50 * MB)
    monitor = WebMonitor(guard=MemoryGuard(limit="64G"), stats=RequestStats())
    wsgi = WSGIMiddleware(_busy_app(admission), monitor=monitor)
    seen: list[tuple[str, dict[str, str]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen.append((status, dict(headers)))

    environ = {"PATH_INFO": "/render", "REQUEST_METHOD": "GET"}
    assert [b"rendered"] == list(wsgi(environ, start_response))
    with held_elsewhere(admission, 40 * MB):
        body = b"".join(wsgi(environ, start_response))
    status, headers = seen[-1]
    assert "503 Service Unavailable" == status
    assert "1" == headers["Retry-After"]
    assert b'"retry_after": 1' in body
    assert {"200": 1, "503": 1} == monitor.stats.summary()["routes"]["/render"]["statuses"]


def test_asgi_middleware_answers_503_with_retry_after(path: Path) -> None:
    """The ASGI twin: an async reservation that times out becomes 503 with Retry-After."""
    admission = Admission(path, budget=50 * MB)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        async with admission.reserve(30 * MB, timeout=0.05):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

    monitor = WebMonitor(guard=MemoryGuard(limit="64G"), stats=RequestStats())
    asgi = ASGIMiddleware(app, monitor=monitor)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "path": "/render", "headers": []}
    with held_elsewhere(admission, 40 * MB):
        asyncio.run(asgi(scope, receive, send))
    assert 503 == sent[0]["status"]
    assert (b"retry-after", b"1") in sent[0]["headers"]
    asyncio.run(asgi(scope, receive, send))
    assert 200 == sent[2]["status"]


def _small_stream(path: str, stop: Any) -> None:
    admission = Admission(path)
    while not stop.is_set():
        with admission.reserve(30 * MB, timeout=30):
            time.sleep(0.02)


def test_a_large_reservation_is_not_starved_by_small_ones(path: Path) -> None:
    """Four streams of 30 MiB keep 100 MiB busy; a 100 MiB request still gets in, in FIFO order."""
    admission = Admission(path, budget=100 * MB)
    stop = FORK.Event()
    streams = [FORK.Process(target=_small_stream, args=(str(path), stop)) for _ in range(4)]
    for proc in streams:
        proc.start()
    try:
        deadline = time.monotonic() + 10
        while admission.status().waiters == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert admission.status().waiters > 0  # the small ones contend
        with admission.reserve(100 * MB, timeout=10) as large:
            assert 100 * MB == admission.status().held  # alone, while the streams wait
    finally:
        stop.set()
        for proc in streams:
            proc.join(30)
    assert large.waited < 10
    assert [0, 0, 0, 0] == [proc.exitcode for proc in streams]


def test_async_reservation_waits_without_blocking_the_loop(path: Path) -> None:
    """``async with`` waits for the holder to leave while other tasks run."""
    admission = Admission(path, budget=10 * MB)

    async def main() -> float:
        async def holder() -> None:
            async with admission.reserve(8 * MB):
                await asyncio.sleep(0.1)

        task = asyncio.create_task(holder())
        await asyncio.sleep(0.01)
        async with admission.reserve(8 * MB, timeout=2) as waiting:
            assert task.done()
        return waiting.waited

    assert asyncio.run(main()) >= 0.05


def test_nested_reservations_take_only_the_difference(path: Path) -> None:
    """A reservation inside one of the same budget reserves only what it needs beyond it."""
    admission = Admission(path, budget=100 * MB)
    with admission.reserve(60 * MB):
        with admission.reserve(50 * MB, timeout=0):
            assert 60 * MB == admission.status().held
        with admission.reserve(90 * MB, timeout=0):
            assert 90 * MB == admission.status().held
        assert 60 * MB == admission.status().held
    assert 0 == admission.status().held


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"amount": 200 * MB}, "whole budget"),
        ({"amount": -1}, "must not be negative"),
        ({"amount": "lots"}, "amount"),
        ({"amount": MB, "timeout": -1}, "timeout"),
        ({"amount": MB, "timeout": float("nan")}, "timeout must be a number of seconds"),
        ({"amount": MB, "timeout": float("inf")}, "timeout must be a number of seconds"),
    ],
)
def test_bad_reservations_raise_config_error(
    path: Path, kwargs: dict[str, Any], message: str
) -> None:
    """An impossible or malformed reservation is refused clearly and leaves nothing behind."""
    admission = Admission(path, budget=100 * MB)
    amount = kwargs.pop("amount")
    with pytest.raises(ConfigError, match=message), admission.reserve(amount, **kwargs):
        pass
    assert (0, 0) == (admission.status().held, admission.status().waiters)


def test_budget_defaults_to_the_share_plans_room_for_heavy_work(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a plan the budget is the limit less headroom, arbiter and every warm worker."""
    plan = plan_shares("512M", workers=2, footprint="60M", arbiter="30M")
    monkeypatch.setattr(admission_module.dyno, "current_plan", lambda: plan)
    expected = plan.limit - plan.headroom - plan.arbiter - 2 * (plan.footprint + plan.cache_budget)
    assert expected == admission_module.admission_budget()
    assert expected == Admission(path).budget
    assert 150 * MB < expected < 250 * MB


def test_budget_without_a_plan_is_the_limit_less_the_current_total(path: Path) -> None:
    """Outside a dyno the budget is what the limit leaves above today's total, less headroom."""
    budget = Admission(path).budget
    total = admission_module.dyno_memory(processes=False)
    assert 0 < budget < total.limit - total.used


def test_zero_growth_over_10000_reservations(path: Path) -> None:
    """Reserving and releasing 10,000 times leaves nothing behind in the process."""
    admission = Admission(path, budget=100 * MB)

    def once() -> None:
        with admission.reserve(MB):
            pass

    assert_no_growth(once, calls=10_000, rounds=5)
    assert 0 == admission.status().held


@pytest.fixture
def pdf_bytes() -> bytes:
    fix_pdf = pytest.importorskip("fix_pdf")
    pytest.importorskip("pymupdf")
    return fix_pdf.text_pdf(3)


def test_render_pages_reserves_its_budget(
    path: Path, monkeypatch: pytest.MonkeyPatch, pdf_bytes: bytes
) -> None:
    """``render_pages(reserve=True)`` holds its budget while rendering and waits when full."""
    from boundkit import render_pages

    monkeypatch.setenv(admission_module.ENV_ADMISSION_FILE, str(path))
    admission = Admission(path, budget=100 * MB)
    held = []
    for _number, _png in render_pages(pdf_bytes, budget=40 * MB, reserve=True):
        held.append(admission.status().held)
    assert [40 * MB] * 3 == held
    assert 0 == admission.status().held
    monkeypatch.setattr(admission_module, "PDF_TIMEOUT", 0.05)
    with held_elsewhere(admission, 80 * MB), pytest.raises(AdmissionTimeout):
        list(render_pages(pdf_bytes, budget=40 * MB, reserve=True))
    assert 0 == admission.status().held


def test_a_cancelled_wait_gives_up_its_place(path: Path) -> None:
    """A waiting task that is cancelled leaves the queue: the next caller is not blocked by it."""
    admission = Admission(path, budget=10 * MB)

    async def main() -> None:
        async def wait() -> None:
            async with admission.reserve(8 * MB, timeout=30):
                pass

        with held_elsewhere(admission, 8 * MB):
            task = asyncio.create_task(wait())
            await asyncio.sleep(0.05)
            assert 1 == admission.status().waiters
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert 0 == admission.status().waiters

    asyncio.run(main())
    with admission.reserve(10 * MB, timeout=0):
        assert 10 * MB == admission.status().held
