"""Prove that code holds zero net memory growth.

``measure_growth(fn)`` calls ``fn`` in rounds and watches anonymous resident
memory after a full collection, which sees Python and native (C) leaks alike.
``assert_no_growth(fn)`` raises :class:`~boundkit.LeakError` with the report.
"""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ._sizes import format_bytes
from .errors import ConfigError, LeakError
from .memory import _PAGE_SIZE, process_memory

__all__ = ["GrowthReport", "assert_no_growth", "measure_growth"]


@dataclass(frozen=True)
class GrowthReport:
    """What :func:`measure_growth` saw.

    ``rounds`` holds, per attempt, the growth in bytes of each round;
    ``growth_per_call`` is the median round's growth divided by its calls;
    ``leaked`` is the verdict; ``where`` lists the top allocation sites of a
    tracemalloc pass, filled only when growth was confirmed.
    """

    calls: int
    threshold: int
    rounds: list[list[int]]
    growth_per_call: float
    leaked: bool
    seconds: float
    where: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict."""
        return asdict(self)

    def __str__(self) -> str:
        verdict = "growth found" if self.leaked else "no growth"
        lines = [
            f"{verdict}: {format_bytes(self.growth_per_call)} per call over {self.calls} calls "
            f"per round (threshold {format_bytes(self.threshold)} per round, "
            f"{self.seconds:.2f} s)"
        ]
        for attempt, rounds in enumerate(self.rounds, 1):
            shown = ", ".join(format_bytes(r) for r in rounds)
            lines.append(f"  attempt {attempt}: round growth {shown}")
        if self.where:
            lines.append("  top allocation sites of a confirmation pass:")
            lines.extend(f"    {line}" for line in self.where)
        return "\n".join(lines)


def _settled_anon() -> int:
    gc.collect()
    return process_memory().rss_anon


def _run_rounds(fn: Callable[[], object], calls: int, rounds: int) -> list[int]:
    growth = []
    before = _settled_anon()
    for _ in range(rounds):
        for _ in range(calls):
            fn()
        after = _settled_anon()
        growth.append(after - before)
        before = after
    return growth


def _where(fn: Callable[[], object], calls: int, top: int) -> list[str]:
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start(5)
    try:
        for _ in range(calls):
            fn()
        gc.collect()
        first = tracemalloc.take_snapshot()
        for _ in range(calls):
            fn()
        gc.collect()
        second = tracemalloc.take_snapshot()
    finally:
        if not tracing:
            tracemalloc.stop()
    stats = second.compare_to(first, "lineno")
    return [str(stat) for stat in stats[:top] if stat.size_diff > 0]


def measure_growth(
    fn: Callable[[], object],
    *,
    calls: int = 1000,
    rounds: int = 5,
    bytes_per_call: int = 50,
    min_pages: int = 16,
    confirm: bool = True,
    trace: bool = True,
) -> GrowthReport:
    """Call ``fn`` repeatedly and report whether memory grows with the calls.

    One warm-up round lets caches and pools fill, then ``rounds`` rounds of
    ``calls`` calls each. A round grows if anonymous RSS rose by more than
    ``max(bytes_per_call * calls, min_pages pages)``; growth is suspected when
    the median round grew, and found only if a second attempt with twice the
    calls is suspect too. Then, with ``trace``, a tracemalloc pass says where.
    """
    for name, value in (("calls", calls), ("rounds", rounds), ("min_pages", min_pages)):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value!r}")
    if bytes_per_call < 0:
        raise ConfigError(f"bytes_per_call must not be negative, got {bytes_per_call!r}")
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    attempts: list[list[int]] = []
    per_call = 0.0
    leaked = False
    threshold = 0
    for attempt_calls in (calls, 2 * calls) if confirm else (calls,):
        threshold = max(bytes_per_call * attempt_calls, min_pages * _PAGE_SIZE)
        growth = _run_rounds(fn, attempt_calls, rounds)
        attempts.append(growth)
        median = statistics.median(growth)
        per_call = median / attempt_calls
        leaked = median > threshold
        if not leaked:
            break
    where = _where(fn, calls, top=5) if leaked and trace else []
    return GrowthReport(
        calls=calls,
        threshold=max(bytes_per_call * calls, min_pages * _PAGE_SIZE),
        rounds=attempts,
        growth_per_call=per_call,
        leaked=leaked,
        seconds=time.perf_counter() - started,
        where=where,
    )


def assert_no_growth(fn: Callable[[], object], **options: Any) -> GrowthReport:
    """Like :func:`measure_growth`, but raise :class:`LeakError` on growth.

    Returns the report when memory held still.
    """
    report = measure_growth(fn, **options)
    if report.leaked:
        raise LeakError(str(report))
    return report
