"""Prove that code holds zero net memory growth.

``measure_growth(fn)`` calls ``fn`` in rounds and watches anonymous resident
memory and the interpreter's allocated blocks after a full collection and a heap
trim: signals that see Python and native (C) leaks alike. ``assert_no_growth(fn)``
raises :class:`~boundkit.LeakError` with the report. ``ameasure_growth`` and
``aassert_no_growth`` are the twins for coroutine functions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ._growth import (
    GrowthAttempt,
    GrowthReport,
    arun,
    detached_logging,
    run,
    start_check,
)
from .errors import LeakError

__all__ = [
    "GrowthAttempt",
    "GrowthReport",
    "aassert_no_growth",
    "ameasure_growth",
    "assert_no_growth",
    "measure_growth",
]

for _cls in (GrowthAttempt, GrowthReport):
    _cls.__module__ = __name__
del _cls


def measure_growth(
    fn: Callable[[], object],
    *,
    calls: int | None = None,
    rounds: int = 5,
    round_seconds: float = 0.5,
    bytes_per_call: int | str = 50,
    min_pages: int = 16,
    confirm: bool = True,
    trace: bool = True,
    detach_logging: bool = False,
) -> GrowthReport:
    """Call ``fn`` repeatedly and report whether memory grows with the calls.

    A warm-up round lets caches and pools fill; with ``calls=None`` it also
    sets the calls per round: as many as fit in ``round_seconds``, at most
    1000. Then ``rounds`` rounds follow, each read after ``gc.collect()`` and
    ``malloc_trim`` as anonymous RSS and as allocated Python blocks. A round
    grows if RSS rose by more than ``max(bytes_per_call * calls, min_pages
    pages)`` (``bytes_per_call`` may be a size such as ``"1K"``) or blocks by
    more than ``max(calls / 2, 16 + 3 * spread)`` (the rounds' median absolute
    deviation: other threads' noise); an attempt is suspicious when its
    median round grew. With ``confirm``, growth is found only if a
    second attempt with twice the calls is suspicious too. Then, with
    ``trace``, a tracemalloc pass says where. ``detach_logging`` swaps the root
    logger's handlers (pytest's log capture among them) for a NullHandler
    during the check.
    """
    check = start_check(
        fn,
        calls=calls,
        rounds=rounds,
        round_seconds=round_seconds,
        bytes_per_call=bytes_per_call,
        min_pages=min_pages,
        confirm=confirm,
        trace=trace,
    )
    with detached_logging(detach_logging):
        return run(fn, check)


def assert_no_growth(
    fn: Callable[[], object],
    *,
    calls: int | None = None,
    rounds: int = 5,
    round_seconds: float = 0.5,
    bytes_per_call: int | str = 50,
    min_pages: int = 16,
    confirm: bool = True,
    trace: bool = True,
    detach_logging: bool = False,
) -> GrowthReport:
    """Like :func:`measure_growth`, but raise :class:`~boundkit.LeakError` on growth.

    The error's message is the report; the report is returned when memory held.
    """
    __tracebackhide__ = True  # pytest shows the caller's line, not this one
    report = measure_growth(
        fn,
        calls=calls,
        rounds=rounds,
        round_seconds=round_seconds,
        bytes_per_call=bytes_per_call,
        min_pages=min_pages,
        confirm=confirm,
        trace=trace,
        detach_logging=detach_logging,
    )
    if report.leaked:
        raise LeakError(str(report))
    return report


async def ameasure_growth(
    fn: Callable[[], Awaitable[object]],
    *,
    calls: int | None = None,
    rounds: int = 5,
    round_seconds: float = 0.5,
    bytes_per_call: int | str = 50,
    min_pages: int = 16,
    confirm: bool = True,
    trace: bool = True,
    detach_logging: bool = False,
) -> GrowthReport:
    """:func:`measure_growth` for a coroutine function: each call is ``await fn()``.

    Run it on the event loop the code under test uses. Readings (a full
    collection and a heap trim) block the loop briefly, between rounds.
    """
    check = start_check(
        fn,
        calls=calls,
        rounds=rounds,
        round_seconds=round_seconds,
        bytes_per_call=bytes_per_call,
        min_pages=min_pages,
        confirm=confirm,
        trace=trace,
    )
    with detached_logging(detach_logging):
        return await arun(fn, check)


async def aassert_no_growth(
    fn: Callable[[], Awaitable[object]],
    *,
    calls: int | None = None,
    rounds: int = 5,
    round_seconds: float = 0.5,
    bytes_per_call: int | str = 50,
    min_pages: int = 16,
    confirm: bool = True,
    trace: bool = True,
    detach_logging: bool = False,
) -> GrowthReport:
    """:func:`assert_no_growth` for a coroutine function: each call is ``await fn()``."""
    __tracebackhide__ = True
    report = await ameasure_growth(
        fn,
        calls=calls,
        rounds=rounds,
        round_seconds=round_seconds,
        bytes_per_call=bytes_per_call,
        min_pages=min_pages,
        confirm=confirm,
        trace=trace,
        detach_logging=detach_logging,
    )
    if report.leaked:
        raise LeakError(str(report))
    return report
