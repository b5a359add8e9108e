"""What each task did to its process's memory, kept per task name in bounded memory.

I/O-free: :mod:`boundkit.celery` measures and feeds :class:`TaskMemoryStats`.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

from ._window import RollingWindow, check_count
from .metrics import RequestStats

__all__ = ["TaskMemory", "TaskMemoryStats", "status_of"]

_MB = 1024 * 1024
_OTHER = "other"
#: Celery's task states as the HTTP-like statuses RequestStats counts.
_STATUSES = {"SUCCESS": 200, "RETRY": 503}


def status_of(state: str | None) -> int:
    """The status a task's Celery ``state`` is counted as: 200 success, 503 retry, else 500."""
    return _STATUSES.get(state or "", 500)


@dataclass(frozen=True)
class TaskMemory:
    """One task's effect on its process's memory, in bytes.

    ``rss_before`` is read as the task starts, ``rss_after`` once it has
    ended and the cleanup, if one ran, is done; ``given_back`` is what that
    cleanup returned. ``peak`` is the process's highest RSS while the task
    ran: None when another task ran beside it in the same process (threads
    pools) or the kernel's peak cannot be reset. ``shared`` says another task
    ran beside it: its figures are then the whole process's.
    """

    name: str
    task_id: str
    state: str
    seconds: float
    rss_before: int
    rss_after: int
    peak: int | None
    given_back: int
    shared: bool = False

    @property
    def left(self) -> int:
        """What the task left held: ``rss_after - rss_before`` (negative when it freed)."""
        return self.rss_after - self.rss_before

    @property
    def peak_growth(self) -> int | None:
        """How far above ``rss_before`` the task took the process at its peak."""
        return None if self.peak is None else max(self.peak - self.rss_before, 0)

    def as_dict(self) -> dict[str, Any]:
        """The fields plus ``left`` and ``peak_growth``, JSON-ready."""
        return {**asdict(self), "left": self.left, "peak_growth": self.peak_growth}


class _Memory:
    """The memory windows and the leak streak of one task name."""

    __slots__ = ("left", "peak_growth", "streak", "streak_bytes")

    def __init__(self, window: int) -> None:
        self.left = RollingWindow(window)
        self.peak_growth = RollingWindow(window)
        self.streak = 0
        self.streak_bytes = 0


class TaskMemoryStats:
    """Per task name: run times and outcomes, and what each run left held and peaked at.

    Times and outcomes are a :class:`~boundkit.RequestStats` with task names
    as routes (statuses: 200 success, 503 retry, 500 anything else); memory is
    a :class:`~boundkit.RollingWindow` of ``left`` and of ``peak_growth`` per
    name, in MiB. The first ``max_tasks`` names get their own entries, every
    later one shares ``"other"``, so memory is bounded whatever runs.

    :meth:`observe` returns a warning naming a task whose last ``leak_runs``
    runs in a row each left more than ``leak_above`` bytes held (runs that
    shared the process with another task are not counted either way).

    >>> stats = TaskMemoryStats(leak_runs=2, leak_above=1024)
    >>> run = TaskMemory("app.report", "t1", "SUCCESS", 0.5, 100_000, 102_048, 150_000, 0)
    >>> stats.observe(run) is None
    True
    >>> print(stats.observe(run))
    task app.report left memory held after each of its last 2 runs in this process (4.0 KiB in all)
    """

    def __init__(
        self,
        max_tasks: int = 100,
        *,
        window: int = 1000,
        leak_runs: int = 3,
        leak_above: int = _MB,
    ) -> None:
        self.max_tasks = check_count("max_tasks", max_tasks)
        self.leak_runs = check_count("leak_runs", leak_runs)
        self.leak_above = check_count("leak_above", leak_above, minimum=0)
        self._window = check_count("window", window)
        self.times = RequestStats(self.max_tasks, window=self._window)
        self._memory: dict[str, _Memory] = {}
        self._lock = threading.Lock()
        self.tasks = 0

    def _entry(self, name: str) -> _Memory:
        entry = self._memory.get(name)
        if entry is None:
            if len(self._memory) >= self.max_tasks + (_OTHER in self._memory):
                name = _OTHER
            entry = self._memory.get(name)
            if entry is None:
                entry = self._memory[name] = _Memory(self._window)
        return entry

    def observe(self, run: TaskMemory) -> str | None:
        """Record one run; return the warning for a task that keeps leaving memory, else None."""
        from ._sizes import format_bytes

        self.times.observe(run.name, max(run.seconds, 0.0), status_of(run.state))
        with self._lock:
            self.tasks += 1
            entry = self._entry(run.name)
            entry.left.add(run.left / _MB)
            if run.peak_growth is not None:
                entry.peak_growth.add(run.peak_growth / _MB)
            if run.shared:  # what it left cannot be told from its neighbours'
                return None
            if run.left <= self.leak_above:
                entry.streak = entry.streak_bytes = 0
                return None
            entry.streak += 1
            entry.streak_bytes += run.left
            if entry.streak < self.leak_runs:
                return None
            held = entry.streak_bytes
            entry.streak = entry.streak_bytes = 0
        return (
            f"task {run.name} left memory held after each of its last {self.leak_runs} runs "
            f"in this process ({format_bytes(held)} in all)"
        )

    def summary(self) -> dict[str, Any]:
        """``tasks`` run, and per name the RequestStats summary plus ``left_mb`` and
        ``peak_growth_mb`` window summaries; JSON-ready."""
        times = self.times.summary()
        with self._lock:
            memory = {
                name: (e.left.summary(), e.peak_growth.summary())
                for name, e in self._memory.items()
            }
        names = {}
        for name, entry in times["routes"].items():
            left, peak = memory.get(name, (None, None))
            names[name] = {**entry, "left_mb": left, "peak_growth_mb": peak}
        return {"tasks": self.tasks, "statuses": times["statuses"], "names": names}
