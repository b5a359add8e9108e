"""The supervisor in the gunicorn arbiter: one budget for the whole dyno.

A thread in the arbiter reads the dyno's total every ``interval`` (250 ms:
three small files from the cgroup and one ``statm`` per worker, about 0.1 ms).
Past the plan's ``retire_at`` it retires the worker holding the most memory
gracefully (``SIGTERM``: gunicorn's worker finishes the request in hand and
exits, and the arbiter forks a fresh one); past ``stop_at``, the edge where
the kernel's OOM killer would soon kill some worker, possibly an innocent
one mid-request, it stops that worker at once (``SIGKILL``). At most one
retirement is in flight, retirements back off (doubling while they keep
coming, up to ``max_backoff``), and every action is logged with its figures.
A worker whose own recycler already retires it is never picked: the two do
not fight. Once a second it also re-plans the shares from measured figures
(the largest footprint and the largest request any worker reported, so the
plan does not swing as workers come and go) and writes the health snapshot
every worker serves (:mod:`boundkit.dyno`).
Anchors: uWSGI's master-side ``evil-reload-on-rss``, earlyoom, systemd-oomd.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ._dyno_memory import DynoMemory, DynoReader
from ._sizes import format_bytes
from .dyno import DynoState, RequestLedger, merge_ledgers
from .memory import process_memory
from .share import SharePlan, plan_shares

__all__ = ["DynoSupervisor", "WorkerFigures"]

logger = logging.getLogger("boundkit.supervisor")
_MB = 1024 * 1024
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
#: Until a worker has measured its footprint, the plan assumes the arbiter's RSS plus this.
_UNMEASURED_APP = 16 * _MB
#: The plan is re-published when an input moves by more than this fraction.
_REPLAN_CHANGE = 0.05


@dataclass
class WorkerFigures:
    """What the supervisor knows of one live worker."""

    pid: int
    rss: int = 0
    started: float = 0.0
    requests: int = 0
    largest_request: int = 0
    footprint: int = 0
    retiring: bool = False


def _statm_rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


class DynoSupervisor:
    """Watch the dyno's total from the arbiter and retire the largest worker near the limit.

    ``workers()`` returns the live worker pids (gunicorn: ``server.WORKERS``);
    ``num_workers()`` the configured count. ``reader`` returns the dyno's
    memory (default: a :class:`~boundkit.memory.DynoReader` without the process
    list; the arbiter and its workers when no cgroup limits them),
    ``rss(pid)`` a worker's RSS, ``kill(pid, sig)`` signals it and ``clock``
    gives seconds: tests inject them. ``limit`` overrides the dyno's limit.
    """

    def __init__(
        self,
        state: DynoState,
        *,
        workers: Callable[[], list[int]],
        num_workers: Callable[[], int],
        interval: float = 0.25,
        backoff: float = 1.0,
        max_backoff: float = 16.0,
        limit: int | None = None,
        reader: Callable[[], DynoMemory] | None = None,
        rss: Callable[[int], int | None] = _statm_rss,
        kill: Callable[[int, int], None] = os.kill,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger | Any = logger,
    ) -> None:
        self.state = state
        self.interval = interval
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._workers = workers
        self._num_workers = num_workers
        self._limit = limit
        self._reader = reader or self._default_reader()
        self._rss = rss
        self._kill = kill
        self._clock = clock
        self.log = log
        self.plan: SharePlan | None = None
        self.figures: dict[int, WorkerFigures] = {}
        self.retired = RequestLedger()
        self.recycles = 0
        self.retirements = 0
        self.stops = 0
        self.ticks = 0
        self.tick_seconds = 0.0
        self.largest_request = 0
        self.footprint = 0
        self.last_action: dict[str, Any] | None = None
        self._in_flight: int | None = None
        self._not_before = 0.0
        self._current_backoff = backoff
        self._last_retirement = float("-inf")
        self._next_report = 0.0
        self._dyno: DynoMemory | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _default_reader(self) -> Callable[[], DynoMemory]:
        dyno = DynoReader(pids=lambda: [os.getpid(), *self._workers()])
        return lambda: dyno.read(processes=False)

    # one tick -----------------------------------------------------------------

    def tick(self) -> None:
        """Read the dyno, act if it is near the limit, and once a second re-plan and report."""
        started = time.perf_counter()
        with self._lock:
            dyno = self._dyno = self._reader()
            now = self._clock()
            live = set(self._workers())
            for pid in live - set(self.figures):
                self.figures[pid] = WorkerFigures(pid, started=time.time())
            for pid, figures in self.figures.items():
                if pid in live:
                    figures.rss = self._rss(pid) or 0
            if self.plan is None:
                self._replan(dyno)
            self._act(dyno, now)
            if now >= self._next_report:
                self._next_report = now + 1.0
                ledgers = self._read_workers()
                self._replan(dyno)
                self._report(dyno, ledgers)
            self.ticks += 1
            self.tick_seconds += time.perf_counter() - started

    def _act(self, dyno: DynoMemory, now: float) -> None:
        plan = self.plan
        if plan is None:
            return
        if self._in_flight is not None and self._in_flight not in self.figures:
            self._in_flight = None
        if dyno.used >= plan.stop_at:
            target = self._in_flight or self._largest(include_retiring=True)
            if target is not None:
                self._signal(target, signal.SIGKILL, "stopping", dyno, plan.stop_at)
                self.stops += 1
                self._in_flight = None
                self._back_off(now)
            return
        if dyno.used < plan.retire_at or self._in_flight is not None or now < self._not_before:
            return
        if any(f.retiring for f in self.figures.values()):
            return  # a recycler is already retiring a worker: that is the one in flight
        target = self._largest(include_retiring=False)
        if target is not None:
            self._signal(target, signal.SIGTERM, "retiring", dyno, plan.retire_at)
            self.retirements += 1
            self._in_flight = target
            self._back_off(now)

    def _largest(self, *, include_retiring: bool) -> int | None:
        candidates = [
            f for f in self.figures.values() if f.rss and (include_retiring or not f.retiring)
        ]
        return max(candidates, key=lambda f: f.rss).pid if candidates else None

    def _back_off(self, now: float) -> None:
        recent = now - self._last_retirement < 4 * self._current_backoff
        self._current_backoff = (
            min(self._current_backoff * 2, self.max_backoff) if recent else self.backoff
        )
        self._last_retirement = now
        self._not_before = now + self._current_backoff

    def _signal(self, pid: int, sig: int, verb: str, dyno: DynoMemory, threshold: int) -> None:
        rss = self.figures[pid].rss if pid in self.figures else 0
        self.last_action = {
            "action": verb,
            "pid": pid,
            "worker_rss": rss,
            "dyno_used": dyno.used,
            "threshold": threshold,
            "limit": dyno.limit,
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        self.log.warning(
            "dyno at %s of %s (past %s): %s worker %s, the largest at %s RSS%s",
            format_bytes(dyno.used),
            format_bytes(dyno.limit),
            format_bytes(threshold),
            verb,
            pid,
            format_bytes(rss),
            " (it finishes its request)" if sig == signal.SIGTERM else " before the kernel would",
        )
        try:
            self._kill(pid, sig)
        except ProcessLookupError:
            self.figures.pop(pid, None)
        if pid in self.figures:
            self.figures[pid].retiring = True

    # figures, plan, report ----------------------------------------------------

    def _read_workers(self) -> list[dict[str, Any]]:
        """Update each worker's figures from its file; return their request ledgers."""
        ledgers = []
        for pid, figures in self.figures.items():
            data = self.state.read(self.state.worker_path(pid))
            if isinstance(data, dict):
                figures.requests = data["requests"]
                figures.largest_request = data["largest_request"]
                figures.footprint = data["footprint"]
                figures.started = data["started"]
                self.largest_request = max(self.largest_request, figures.largest_request)
                self.footprint = max(self.footprint, figures.footprint)
                ledgers.append(data["ledger"])
            if self.state.retiring_path(pid).exists():
                figures.retiring = True
        return ledgers

    def _replan(self, dyno: DynoMemory) -> None:
        arbiter = process_memory().rss
        footprint = self.footprint or arbiter + _UNMEASURED_APP
        plan = plan_shares(
            self._limit or dyno.limit,
            workers=max(self._num_workers(), 1),
            footprint=footprint,
            arbiter=arbiter,
            largest_request=self.largest_request,
        )
        old = self.plan
        if old is not None and not _moved(old, plan):
            return
        self.plan = plan
        self.state.write(self.state.plan_path, plan.as_dict())
        self.log.info(
            "share plan: %s workers of %s each under %s (footprint %s, largest request %s, "
            "recycle at %s, retire at %s)%s",
            plan.workers,
            format_bytes(plan.share),
            format_bytes(plan.limit),
            format_bytes(plan.footprint),
            format_bytes(plan.largest_request),
            format_bytes(plan.recycle),
            format_bytes(plan.retire_at),
            "" if plan.fits else f"; does NOT fit: at most {plan.max_workers} workers would",
        )

    def worker_exited(self, pid: int) -> None:
        """Fold an exited worker's last published stats into the retired totals."""
        with self._lock:
            data = self.state.read(self.state.worker_path(pid))
            if isinstance(data, dict):
                self.retired.merge(data["ledger"])
                self.largest_request = max(self.largest_request, data["largest_request"])
                self.footprint = max(self.footprint, data["footprint"])
            self.figures.pop(pid, None)
            self.recycles += 1
            if self._in_flight == pid:  # the backoff runs from the end of a retirement
                self._in_flight = None
                self._not_before = self._clock() + self._current_backoff
            self.state.remove(self.state.worker_path(pid))
            self.state.remove(self.state.retiring_path(pid))

    def _report(self, dyno: DynoMemory, ledgers: list[dict[str, Any]]) -> None:
        plan = self.plan
        requests = merge_ledgers([self.retired.as_dict(), *ledgers])
        now = time.time()
        share = plan.share if plan is not None else 0
        workers = [
            {
                "pid": f.pid,
                "rss_mb": round(f.rss / _MB, 1),
                "share_mb": round(share / _MB, 1),
                "requests": f.requests,
                "age_seconds": round(now - f.started, 1),
                "largest_request_mb": round(f.largest_request / _MB, 1),
                "retiring": f.retiring,
            }
            for f in sorted(self.figures.values(), key=lambda f: f.rss, reverse=True)
        ]
        self.state.write(
            self.state.health_path,
            {
                "status": self.status(dyno),
                "timestamp": now,
                "dyno": dyno.as_dict(),
                "arbiter": {"pid": os.getpid(), "rss_mb": round(process_memory().rss / _MB, 1)},
                "plan": plan.as_dict() if plan is not None else None,
                "workers": workers,
                "recycles": self.recycles,
                "supervisor": self.stats(),
                "requests": requests.summary(),
            },
        )

    def status(self, dyno: DynoMemory) -> str:
        """``ok``, ``warning`` (past the planned worst case) or ``critical`` (past retire_at)."""
        plan = self.plan
        if plan is None:
            return "ok"
        if dyno.used >= plan.retire_at:
            return "critical"
        return "warning" if dyno.used >= plan.limit - plan.headroom else "ok"

    def stats(self) -> dict[str, Any]:
        """Counts of ticks, retirements and stops, the mean tick cost and the last action."""
        return {
            "interval": self.interval,
            "ticks": self.ticks,
            "mean_tick_ms": round(1000 * self.tick_seconds / self.ticks, 3) if self.ticks else None,
            "retirements": self.retirements,
            "stops": self.stops,
            "in_flight": self._in_flight,
            "last_action": self.last_action,
        }

    def take_over(self, previous: DynoSupervisor) -> None:
        """Carry on from ``previous`` (a configuration reload): workers, totals, measurements."""
        with previous._lock:
            self.figures = dict(previous.figures)
            self.retired = previous.retired
            self.recycles, self.retirements, self.stops = (
                previous.recycles,
                previous.retirements,
                previous.stops,
            )
            self.largest_request, self.footprint = previous.largest_request, previous.footprint
            self.plan = previous.plan

    # the thread ---------------------------------------------------------------

    def start(self) -> None:
        """Start the watching thread (a daemon); idempotent."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="boundkit-dyno-supervisor", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:
                self.log.exception("dyno supervisor tick failed")

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the thread and wait up to ``timeout`` seconds for it."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)


def _moved(old: SharePlan, new: SharePlan) -> bool:
    """Whether the plan's inputs moved enough to publish it again."""
    if (old.limit, old.workers) != (new.limit, new.workers):
        return True
    for name in ("footprint", "largest_request", "arbiter"):
        before, after = getattr(old, name), getattr(new, name)
        if abs(after - before) > _REPLAN_CHANGE * max(before, 1):
            return True
    return False
