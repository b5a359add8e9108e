"""``boundkit demo``: the same workload done naively and with boundkit, side by side.

Each row runs a small naive workload and its boundkit counterpart in this
process and reports how much anonymous memory each left behind.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import TextIO

from ._sizes import format_bytes
from .memory import process_memory

__all__ = ["DemoRow", "run_demo"]


@dataclass(frozen=True)
class DemoRow:
    """One line of the demo table; ``skipped`` holds the reason a row did not run."""

    part: str
    workload: str
    naive_growth: int = 0
    boundkit_growth: int = 0
    skipped: str = ""


def measure(workload: Callable[[], object]) -> tuple[int, object]:
    """Run ``workload`` and return the anonymous memory it left held, and its result."""
    gc.collect()
    before = process_memory().rss_anon
    result = workload()
    gc.collect()
    return process_memory().rss_anon - before, result


ROWS: list[Callable[[], DemoRow]] = []


def run_demo(out: TextIO) -> int:
    """Run every demo row, print the table to ``out`` and return an exit status."""
    header = f"{'part':<10} {'workload':<44} {'naive':>11} {'boundkit':>11}"
    print(header, file=out)
    print("-" * len(header), file=out)
    for row_fn in ROWS:
        row = row_fn()
        if row.skipped:
            print(f"{row.part:<10} skipped: {row.skipped}", file=out)
            continue
        print(
            f"{row.part:<10} {row.workload:<44} {format_bytes(row.naive_growth):>11} "
            f"{format_bytes(row.boundkit_growth):>11}",
            file=out,
        )
    print("\nnaive / boundkit: anonymous memory still held after each workload", file=out)
    return 0


def _cache_row() -> DemoRow:
    """100,000 distinct keys cached in a plain dict, then in a BoundedCache."""
    from .cache import BoundedCache

    def churn(cache: MutableMapping[str, str]) -> MutableMapping[str, str]:
        for n in range(100_000):
            cache[f"/users/{n}"] = f'{{"id": {n}, "name": "user {n}"}}'.ljust(300)
        return cache

    naive_growth, naive = measure(lambda: churn({}))
    bounded = BoundedCache[str, str](1000, max_bytes=1_000_000, ttl=300)
    boundkit_growth, _ = measure(lambda: churn(bounded))
    del naive
    return DemoRow(
        part="cache",
        workload="100k responses cached: dict vs BoundedCache",
        naive_growth=naive_growth,
        boundkit_growth=boundkit_growth,
    )


ROWS.append(_cache_row)
