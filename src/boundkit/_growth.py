"""The growth check behind :mod:`boundkit.testing`: readings, attempts, report.

The check is written once, as a generator that yields how many calls of ``fn`` to
make next and returns the report; ``run`` and ``arun`` make the calls, sync or async.
"""

from __future__ import annotations

import array
import contextlib
import gc
import itertools
import logging
import math
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Generator, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from ._sizes import format_bytes, parse_bytes
from ._window import check_count, check_seconds
from .memory import _PAGE_SIZE, _malloc_trim, process_memory

# With calls=None, a round gets as many calls as fit in round_seconds, up to this.
_MAX_AUTO_CALLS = 1000
# A round grows in Python blocks past max(_BLOCKS_PER_CALL * calls, _MIN_BLOCKS +
# _NOISE_SPREADS * spread), the spread being the median absolute deviation of the
# rounds' block growth: a Python leak adds at least one block per call, every round
# alike; other threads' transient objects move the readings up and down, and raise
# the floor only where they exist.
_BLOCKS_PER_CALL = 0.5
_MIN_BLOCKS = 16
_NOISE_SPREADS = 3
_TRACE_FRAMES = 10
_TOP_SITES = 5


@dataclass(frozen=True)
class GrowthAttempt:
    """One attempt: ``rounds`` rounds of ``calls`` calls, read two ways.

    ``readings`` holds anonymous RSS in bytes, which sees native and Python
    memory, and ``blocks`` the interpreter's allocated blocks
    (``sys.getallocatedblocks()``), which sees Python objects even where they
    fill free space the process already holds; each is taken before the first
    round and after each round. A round grows when either rose by more than
    its threshold; the attempt is ``suspicious`` when its median round grew.
    """

    calls: int
    threshold: int
    block_threshold: int
    readings: tuple[int, ...]
    blocks: tuple[int, ...]

    @property
    def growth(self) -> tuple[int, ...]:
        """Bytes each round grew by (negative when it shrank)."""
        return _deltas(self.readings)

    @property
    def block_growth(self) -> tuple[int, ...]:
        """Allocated blocks each round added (negative when it freed more)."""
        return _deltas(self.blocks)

    @property
    def median_growth(self) -> float:
        """The median round's growth in bytes."""
        return float(statistics.median(self.growth))

    @property
    def median_block_growth(self) -> float:
        """The median round's growth in allocated blocks."""
        return float(statistics.median(self.block_growth))

    @property
    def suspicious(self) -> bool:
        """True when the median round grew past a threshold, in bytes or in blocks."""
        return (
            self.median_growth > self.threshold or self.median_block_growth > self.block_threshold
        )


def _deltas(values: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(after - before for before, after in itertools.pairwise(values))


@dataclass(frozen=True)
class GrowthReport:
    """What :func:`measure_growth` saw.

    ``leaked`` is the verdict: every attempt was suspicious. ``growth_per_call``
    (bytes) and ``blocks_per_call`` are the last attempt's median round growth
    divided by its calls; ``threshold`` is the growth in bytes per round the
    first attempt tolerated, so ``threshold / calls`` is the smallest native
    leak per call the check can see.
    ``where`` lists the top Python allocation sites of a tracemalloc pass, run
    only when growth was found and ``trace`` was on (else it is None).
    """

    function: str
    calls: int
    rounds: int
    threshold: int
    attempts: tuple[GrowthAttempt, ...]
    growth_per_call: float
    blocks_per_call: float
    leaked: bool
    seconds: float
    where: tuple[str, ...] | None = None

    @property
    def verdict(self) -> str:
        """``"growth"`` or ``"no growth"``."""
        return "growth" if self.leaked else "no growth"

    @property
    def sensitivity(self) -> str:
        """What the first attempt measured and the smallest leak per call it could see."""
        return (
            f"{self.rounds} rounds of {self.calls} calls after a warm-up round; sees leaks "
            f"from {format_bytes(self.threshold / self.calls)} or "
            f"{self.attempts[0].block_threshold / self.calls:.2g} Python blocks per call"
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict, per-round growth included."""
        result = asdict(self)
        result["verdict"] = self.verdict
        for attempt, row in zip(self.attempts, result["attempts"], strict=True):
            row["growth"] = list(attempt.growth)
            row["block_growth"] = list(attempt.block_growth)
            row["suspicious"] = attempt.suspicious
        return result

    def __str__(self) -> str:
        head = (
            f"memory grew {format_bytes(self.growth_per_call)} "
            f"and {self.blocks_per_call:.1f} Python blocks per call"
            if self.leaked
            else "no growth"
        )
        lines = [f"{head} in {self.function} ({self.seconds:.2f} s)", f"  {self.sensitivity}"]
        for number, attempt in enumerate(self.attempts, 1):
            mark = "suspicious" if attempt.suspicious else "held"
            lines.append(f"  attempt {number}: {attempt.calls} calls per round: {mark}")
            lines.append(
                "    anon RSS grew "
                + ", ".join(format_bytes(g) for g in attempt.growth)
                + f"; median {format_bytes(attempt.median_growth)}"
                f" vs threshold {format_bytes(attempt.threshold)}"
            )
            lines.append(
                "    blocks grew "
                + ", ".join(str(g) for g in attempt.block_growth)
                + f"; median {attempt.median_block_growth:.0f}"
                f" vs threshold {attempt.block_threshold}"
            )
        if self.where:
            lines.append("  top Python allocation sites of a tracemalloc pass:")
            lines.extend(f"    {site}" for site in self.where)
            if any("logging" in site for site in self.where):
                lines.append(
                    "  hint: log records are being kept by a handler; "
                    "pass detach_logging=True if that is a test's capture"
                )
        elif self.where is not None:
            lines.append("  tracemalloc saw no Python allocation grow: the growth is likely native")
        return "\n".join(lines)


@contextlib.contextmanager
def detached_logging(detach: bool) -> Iterator[None]:
    """Swap the root logger's handlers for a NullHandler while the check runs."""
    if not detach:
        yield
        return
    root = logging.getLogger()
    saved = root.handlers[:]
    null = logging.NullHandler()
    for handler in saved:
        root.removeHandler(handler)
    root.addHandler(null)
    try:
        yield
    finally:
        root.removeHandler(null)
        for handler in saved:
            root.addHandler(handler)


def _settled() -> tuple[int, int]:
    """Anonymous RSS and allocated blocks, once garbage is collected and heap trimmed."""
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
    return process_memory().rss_anon, sys.getallocatedblocks()


_Check = Generator[int, None, GrowthReport]


def _warm_up(calls: int | None, round_seconds: float) -> Generator[int, None, int]:
    """One unmeasured round; returns the calls per round (timed when ``calls`` is None)."""
    if calls is not None:
        yield calls
        return calls
    done = 0
    deadline = time.perf_counter() + round_seconds
    while done < _MAX_AUTO_CALLS:
        yield 1
        done += 1
        if time.perf_counter() >= deadline:
            break
    return done


def _attempt(
    calls: int, rounds: int, bytes_per_call: int, min_pages: int
) -> Generator[int, None, GrowthAttempt]:
    # preallocated arrays: a reading kept as Python ints would count as growth itself
    rss = array.array("q", bytes(8 * (rounds + 1)))
    blocks = array.array("q", rss)
    rss[0], blocks[0] = _settled()
    for number in range(1, rounds + 1):
        yield calls
        rss[number], blocks[number] = _settled()
    readings = tuple(blocks)
    return GrowthAttempt(
        calls=calls,
        threshold=max(bytes_per_call * calls, min_pages * _PAGE_SIZE),
        block_threshold=max(
            int(_BLOCKS_PER_CALL * calls),
            _MIN_BLOCKS + _NOISE_SPREADS * _spread(_deltas(readings)),
        ),
        readings=tuple(rss),
        blocks=readings,
    )


def _spread(values: tuple[int, ...]) -> int:
    """The median absolute deviation of ``values`` from their median, rounded up."""
    middle = statistics.median(values)
    return math.ceil(statistics.median(abs(value - middle) for value in values))


def _where(calls: int) -> Generator[int, None, tuple[str, ...]]:
    """The Python lines whose allocations grew over ``calls`` more calls."""
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start(_TRACE_FRAMES)
    try:
        gc.collect()
        first = tracemalloc.take_snapshot()
        yield calls
        gc.collect()
        second = tracemalloc.take_snapshot()
    finally:
        if not tracing:
            tracemalloc.stop()
    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, __file__),
    ]
    stats = second.filter_traces(ignore).compare_to(first.filter_traces(ignore), "lineno")
    # a leaking line grows with the calls; one-off allocations (imports, caches) do not
    return tuple(str(stat) for stat in stats[:_TOP_SITES] if stat.size_diff >= calls)


def start_check(
    fn: object,
    *,
    calls: int | None,
    rounds: int,
    round_seconds: float,
    bytes_per_call: int | str,
    min_pages: int,
    confirm: bool,
    trace: bool,
) -> _Check:
    """Validate the options and return the check for ``fn``, not yet started."""
    if isinstance(bytes_per_call, str):
        bytes_per_call = parse_bytes(bytes_per_call, name="bytes_per_call")
    _check_options(calls, rounds, round_seconds, bytes_per_call, min_pages)
    return _check(
        _name(fn),
        calls,
        rounds,
        round_seconds,
        bytes_per_call,
        min_pages,
        confirm,
        trace,
    )


def _check(
    name: str,
    calls: int | None,
    rounds: int,
    round_seconds: float,
    bytes_per_call: int,
    min_pages: int,
    confirm: bool,
    trace: bool,
) -> _Check:
    started = time.perf_counter()
    per_round = yield from _warm_up(calls, round_seconds)
    attempts: list[GrowthAttempt] = []
    for attempt_calls in (per_round, 2 * per_round) if confirm else (per_round,):
        attempts.append((yield from _attempt(attempt_calls, rounds, bytes_per_call, min_pages)))
        if not attempts[-1].suspicious:
            break
    leaked = all(attempt.suspicious for attempt in attempts)
    where = (yield from _where(per_round)) if leaked and trace else None
    return GrowthReport(
        function=name,
        calls=per_round,
        rounds=rounds,
        threshold=attempts[0].threshold,
        attempts=tuple(attempts),
        growth_per_call=attempts[-1].median_growth / attempts[-1].calls,
        blocks_per_call=attempts[-1].median_block_growth / attempts[-1].calls,
        leaked=leaked,
        seconds=time.perf_counter() - started,
        where=where,
    )


def run(fn: Callable[[], object], check: _Check) -> GrowthReport:
    try:
        calls = next(check)
        while True:
            for _ in range(calls):
                fn()
            calls = check.send(None)
    except StopIteration as done:
        report: GrowthReport = done.value
        return report
    finally:
        check.close()  # fn raised: stop tracemalloc if the check started it


async def arun(fn: Callable[[], Awaitable[object]], check: _Check) -> GrowthReport:
    try:
        calls = next(check)
        while True:
            for _ in range(calls):
                await fn()
            calls = check.send(None)
    except StopIteration as done:
        report: GrowthReport = done.value
        return report
    finally:
        check.close()


def _name(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _check_options(
    calls: int | None,
    rounds: int,
    round_seconds: float,
    bytes_per_call: int,
    min_pages: int,
) -> None:
    if calls is not None:
        check_count("calls", calls)
    check_count("rounds", rounds, minimum=3)
    check_count("bytes_per_call", bytes_per_call, minimum=0)
    check_count("min_pages", min_pages)
    check_seconds("round_seconds", round_seconds)
