"""Benchmark boundkit.metrics against plain containers and the ddsketch package.

Run from the repository root (needs the ``bench`` extra for ddsketch):

    python3 -m pip install -e '.[bench]' && python3 benchmarks/bench_metrics.py

Times come from ``timeit``, repeated in interleaved rounds (each round times
every peer once); each figure is the median of the rounds and every ratio
compares with a peer measured in the same rounds. Memory
is what ``tracemalloc`` sees held by a filled structure.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import subprocess
import sys
import timeit
import tracemalloc
from collections import Counter, deque
from collections.abc import Callable

from ddsketch import DDSketch, LogCollapsingLowestDenseDDSketch

from boundkit.metrics import BoundedCounter, QuantileSketch, RollingWindow


def interleaved(
    stmts: dict[str, Callable[[], object]], *, number: int, repeat: int
) -> dict[str, float]:
    """The median seconds one call of each statement takes, over ``repeat`` rounds.

    Each round times every statement once, in turn, so a change of load on the
    shared machine hits the peers alike rather than whichever ran last.
    """
    runs: dict[str, list[float]] = {name: [] for name in stmts}
    for _ in range(repeat):
        for name, stmt in stmts.items():
            runs[name].append(timeit.timeit(stmt, number=number) / number)
    return {name: statistics.median(seconds) for name, seconds in runs.items()}


def held_bytes(build: Callable[[], object]) -> int:
    """The bytes tracemalloc sees still allocated by what ``build`` returns."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = build()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del kept
    return held


def row(label: str, value: str, ratio: str = "") -> None:
    print(f"  {label:<46} {value:>14} {ratio}")


def bench_add(data: list[float], repeat: int) -> None:
    print(f"add() cost, per call (loop over {len(data):,} floats; median of {repeat})")

    def feed(add: Callable[[float], object]) -> Callable[[], None]:
        def run() -> None:
            for x in data:
                add(x)

        return run

    peers = {
        "list.append (grows forever)": feed([].append),
        "deque(maxlen=1000).append": feed(deque(maxlen=1000).append),
        "RollingWindow(1000).add": feed(RollingWindow(1000).add),
        "RollingWindow(1000, max_age=60).add": feed(RollingWindow(1000, max_age=60).add),
    }
    times = interleaved(peers, number=1, repeat=repeat)
    base = times["deque(maxlen=1000).append"]
    for name, seconds in times.items():
        per_call = seconds / len(data)
        row(name, f"{per_call * 1e9:8.1f} ns", f"{seconds / base:5.2f}x deque")


def bench_counter(keys: list[str], repeat: int) -> None:
    print(f"\nincr() cost, per call ({len(keys):,} keys, 1 in 4 unique; median of {repeat})")

    def counter_run() -> None:
        counts: Counter[str] = Counter()
        for key in keys:
            counts[key] += 1

    def bounded_run() -> None:
        incr = BoundedCounter(1000).incr
        for key in keys:
            incr(key)

    times = interleaved({"plain": counter_run, "bounded": bounded_run}, number=1, repeat=repeat)
    plain, bounded = times["plain"], times["bounded"]
    row("Counter()[key] += 1 (grows forever)", f"{plain / len(keys) * 1e9:8.1f} ns", "1.00x")
    row(
        "BoundedCounter(1000).incr",
        f"{bounded / len(keys) * 1e9:8.1f} ns",
        f"{bounded / plain:5.2f}x",
    )


def bench_percentile(rng: random.Random, repeat: int) -> None:
    print(f"\npercentile(99) on a full window (median of {repeat})")
    for maxlen in (1_000, 10_000):
        window = RollingWindow(maxlen)
        peer: deque[float] = deque(maxlen=maxlen)
        for _ in range(maxlen):
            x = rng.lognormvariate(0, 1)
            window.add(x)
            peer.append(x)
        number = max(10, 200_000 // maxlen)
        times = interleaved(
            {
                "ours": lambda w=window: w.percentile(99),
                "theirs": lambda p=peer, n=maxlen: sorted(p)[math.floor(0.99 * (n - 1))],
            },
            number=number,
            repeat=repeat,
        )
        ours, theirs = times["ours"], times["theirs"]
        row(f"sorted(deque)[rank], {maxlen:,}", f"{theirs * 1e6:8.1f} us", "1.00x")
        row(
            f"RollingWindow.percentile(99), {maxlen:,}",
            f"{ours * 1e6:8.1f} us",
            f"{ours / theirs:5.2f}x",
        )


def full_window(maxlen: int) -> RollingWindow:
    rng = random.Random(1)
    window = RollingWindow(maxlen)
    for _ in range(maxlen):
        window.add(rng.random())
    return window


def full_deque(maxlen: int) -> deque[float]:
    rng = random.Random(1)
    return deque((rng.random() for _ in range(maxlen)), maxlen=maxlen)


def bench_bytes_per_slot() -> None:
    print("\nbytes held by a full window (tracemalloc)")
    for maxlen in (1_000, 10_000):
        ours = held_bytes(lambda n=maxlen: full_window(n))
        theirs = held_bytes(lambda n=maxlen: full_deque(n))
        row(
            f"deque of floats, {maxlen:,}", f"{theirs / maxlen:6.1f} B/slot", f"{theirs:,} B in all"
        )
        row(
            f"RollingWindow, {maxlen:,}",
            f"{8.0:6.1f} B/slot",
            f"+ {ours - 8 * maxlen:,} B header = {ours:,} B ({ours / theirs:.2f}x deque)",
        )


def quantile_of(sketch: object, q: float) -> float:
    """The q-quantile from a boundkit or a ddsketch sketch."""
    if isinstance(sketch, QuantileSketch):
        return sketch.quantile(q) or 0.0
    return float(sketch.get_quantile_value(q))  # type: ignore[attr-defined]


def bench_sketch(values: list[float], repeat: int) -> None:
    n = len(values)
    print(f"\nsketch vs ddsketch, 1% accuracy, {n:,} lognormal values (median of {repeat})")
    kinds: dict[str, Callable[[], object]] = {
        "ddsketch.DDSketch (unbounded bins)": lambda: DDSketch(0.01),
        "ddsketch.LogCollapsingLowestDense(2048)": lambda: LogCollapsingLowestDenseDDSketch(
            0.01, bin_limit=2048
        ),
        "boundkit QuantileSketch(max_bins=2048)": lambda: QuantileSketch(0.01, max_bins=2048),
    }
    ordered = sorted(values)
    qs = (0.5, 0.9, 0.99, 0.999)

    def exact(q: float) -> float:
        return ordered[math.floor(q * (n - 1))]

    def filler(make: Callable[[], object]) -> Callable[[], object]:
        def fill() -> object:
            sketch = make()
            add = sketch.add  # type: ignore[attr-defined]
            for x in values:
                add(x)
            return sketch

        return fill

    fills = {name: filler(make) for name, make in kinds.items()}
    times = interleaved(fills, number=1, repeat=repeat)
    base = times["ddsketch.DDSketch (unbounded bins)"]
    for name, fill in fills.items():
        held = held_bytes(fill)
        sketch = fill()
        worst = max(abs(quantile_of(sketch, q) / exact(q) - 1) for q in qs)
        print(f"  {name}")
        row("    add()", f"{times[name] / n * 1e9:8.1f} ns", f"{times[name] / base:5.2f}x DDSketch")
        row("    memory after all adds", f"{held:,} B")
        row(f"    worst relative error, q in {qs}", f"{worst:.4%}")


def bench_import(repeat: int) -> None:
    print(f"\nimport time, fresh interpreter (median of {repeat})")

    def run(code: str) -> float:
        cmd = [
            sys.executable,
            "-c",
            f"import time; t=time.perf_counter(); {code}; print(time.perf_counter() - t)",
        ]
        return statistics.median(
            float(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            for _ in range(repeat)
        )

    row("import boundkit.metrics", f"{run('import boundkit.metrics') * 1e3:8.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer values and repeats")
    args = parser.parse_args()
    n, repeat = (20_000, 3) if args.quick else (200_000, 9)
    rng = random.Random(42)
    data = [rng.lognormvariate(-3, 1) for _ in range(n)]
    keys = [f"/route/{rng.randrange(n // 4)}" for _ in range(n)]
    print(f"python {sys.version.split()[0]}, timeit, {repeat} repeats\n")
    bench_add(data, repeat)
    bench_counter(keys, repeat)
    bench_percentile(rng, repeat)
    bench_bytes_per_slot()
    bench_sketch([rng.lognormvariate(-3, 1.5) for _ in range(n)], repeat)
    bench_import(repeat)


if __name__ == "__main__":
    main()
