"""``boundkit demo``: the same workload done naively and with boundkit, side by side.

Each row runs a small naive workload and its boundkit counterpart in this
process and reports how much anonymous memory each left behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, TextIO, cast

from ._sizes import format_bytes
from .memory import process_memory, trim_memory

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
    """Run ``workload`` and return the anonymous memory it left held, and its result.

    The heap is trimmed before and after, so memory an earlier row freed but
    had not given back is not counted for or against this one.
    """
    trim_memory()
    before = process_memory().rss_anon
    result = workload()
    trim_memory()
    return process_memory().rss_anon - before, result


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
    print("(celery: the RSS above the task's start that the pool's recycle check reads)", file=out)
    return 0


def _guard_row() -> DemoRow:
    """A dict cache that only grows, alone and with a MemoryGuard clearing it at critical."""
    from .guard import MemoryGuard

    budget = 24 * 1024**2
    entries = 12_000  # about 48 MiB of 4 KiB values

    def fill(cache: dict[int, bytes], guard: MemoryGuard | None) -> dict[int, bytes]:
        for i in range(entries):
            cache[i] = str(i).encode().ljust(4096, b".")
            if guard is not None and i % 100 == 0:
                guard.check()
        return cache

    def guarded() -> dict[int, bytes]:
        cache: dict[int, bytes] = {}
        limit = process_memory().rss + budget
        guard = MemoryGuard(limit=limit, warning=0.5, critical=0.9, cooldown=0)
        guard.register_cleanup(cache.clear)
        return fill(cache, guard)

    naive, _ = measure(lambda: fill({}, None))
    quiet = logging.getLogger("boundkit.guard")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the table says it; the cleanup log would interleave
    try:
        held, _ = measure(guarded)
    finally:
        quiet.setLevel(level)
    return DemoRow("guard", "48 MiB into a dict cache, 24 MiB budget", naive, held)


def _pg_row() -> DemoRow:
    """Connections opened per request and never closed, beside pooled_connection()."""
    import os

    part, workload = "pg", "30 requests, each connection left open"
    dsn = os.environ.get("DATABASE_URL")
    if not dsn:
        return DemoRow(part, workload, skipped="set DATABASE_URL to run the database row")
    try:
        import psycopg

        from .pg import close_pools, pooled_connection
    except ImportError:
        return DemoRow(part, workload, skipped="pip install 'boundkit[postgres]'")
    leaked: list[psycopg.Connection[object]] = []

    def naive() -> None:
        for _ in range(30):
            conn = psycopg.connect(dsn)
            conn.execute("SELECT 1")
            leaked.append(conn)  # what a forgotten close() does: the connection lives on

    def bounded() -> None:
        for _ in range(30):
            with pooled_connection(dsn) as conn:
                conn.execute("SELECT 1")

    try:
        naive_growth, _ = measure(naive)
        boundkit_growth, _ = measure(bounded)
    except psycopg.Error as exc:
        return DemoRow(part, workload, skipped=f"database unreachable: {type(exc).__name__}")
    finally:
        for conn in leaked:
            conn.close()
        close_pools()
    return DemoRow(part, workload, naive_growth, boundkit_growth)


def _metrics_row() -> DemoRow:
    """Timings and per-path counts of a request stream where half the paths are probes."""
    import random
    from collections.abc import Iterator

    from .metrics import RequestStats

    requests = 200_000

    def stream() -> Iterator[tuple[str, float, int]]:
        rng = random.Random(5)
        routes = ["/", "/login", "/api/items", "/api/orders", "/static/app.js"]
        for _ in range(requests):
            route = rng.choice(routes) if rng.random() < 0.5 else f"/probe/{rng.getrandbits(40):x}"
            yield route, rng.lognormvariate(-3, 1), 200 if route in routes else 404

    def naive() -> object:
        response_times: list[float] = []
        request_counts: dict[str, int] = {}
        for route, seconds, _status in stream():
            response_times.append(seconds)
            request_counts[route] = request_counts.get(route, 0) + 1
        return response_times, request_counts

    def bounded() -> object:
        stats = RequestStats(max_routes=100, window=1000)
        for route, seconds, status in stream():
            stats.observe(route, seconds, status)
        return stats

    naive_growth, _ = measure(naive)
    boundkit_growth, _ = measure(bounded)
    return DemoRow(
        "metrics",
        f"{requests:,} requests, half to random probe URLs",
        naive_growth,
        boundkit_growth,
    )


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


def _pdf_row() -> DemoRow:
    """Render a generated image PDF keeping every pixmap, then with render_pages."""
    workload = "12 image pages: keep-all vs render_pages"
    from .pdf import _pymupdf, release_pdf_memory, render_pages

    try:
        pymupdf = _pymupdf()
    except ImportError:
        return DemoRow("pdf", workload, skipped="PyMuPDF missing: pip install 'boundkit[pdf]'")

    doc = pymupdf.open()
    for number in range(12):
        side = 1200
        shade = bytes(((number * 20) % 256, 90, 200)) * side * side
        image = pymupdf.Pixmap(pymupdf.csRGB, side, side, shade, False)
        doc.new_page().insert_image(pymupdf.Rect(36, 36, 576, 756), pixmap=image)
    data = doc.tobytes(deflate=True)
    doc.close()
    del doc, image
    release_pdf_memory()  # what building the file left in the store is not either side's

    def keep_all() -> list[object]:
        opened = pymupdf.open(stream=data, filetype="pdf")
        return [page.get_pixmap(dpi=150) for page in opened]

    # boundkit first: its exit empties MuPDF's process-wide store, which would
    # otherwise also give back what the naive run left there
    boundkit, _ = measure(lambda: [len(png) for _, png in render_pages(data)])
    naive, kept = measure(keep_all)
    del kept
    return DemoRow("pdf", workload, naive_growth=naive, boundkit_growth=boundkit)


def _django_row() -> DemoRow:
    """Django's LocMemCache with MAX_ENTRIES raised, then BoundedCacheBackend with MAX_BYTES."""
    workload = "2,000 20 kB pages: LocMem vs MAX_BYTES=1M"
    try:
        from django.core.cache.backends.locmem import LocMemCache  # type: ignore[import-untyped]
    except ImportError:
        return DemoRow("django", workload, skipped="Django missing: pip install 'boundkit[django]'")
    from ._django_cache import BoundedCacheBackend

    def fill(cache: Any) -> Any:
        for n in range(2000):
            cache.set(f"page:{n}", f"<html>{n}</html>".ljust(20_000), timeout=None)
        return cache

    options = {"MAX_ENTRIES": 100_000}
    naive_growth, naive = measure(lambda: fill(LocMemCache("boundkit-demo", {"OPTIONS": options})))
    bounded = BoundedCacheBackend("boundkit-demo", {"OPTIONS": {**options, "MAX_BYTES": "1M"}})
    boundkit_growth, _ = measure(lambda: fill(bounded))
    cast(Any, naive).clear()  # LocMemCache's store is process-wide: empty it, or it stays
    bounded.clear()
    return DemoRow("django", workload, naive_growth=naive_growth, boundkit_growth=boundkit_growth)


def _celery_row() -> DemoRow:
    """An eager Celery task that spikes 100 MiB and frees it, then the same under install().

    What billiard's ``worker_max_memory_per_child`` check reads after the task
    (``ru_maxrss``), above the RSS at the task's start: the freed peak without
    boundkit, what the child holds now with it. No broker: ``task_always_eager``.
    """
    workload = "100 MiB spike freed in a task: recycle check"
    try:
        from celery import Celery  # type: ignore[import-untyped]
    except ImportError:
        return DemoRow("celery", workload, skipped="Celery missing: pip install 'boundkit[celery]'")
    import resource

    from .celery import install
    from .memory import _reset_high_water

    if _reset_high_water() is None:
        return DemoRow("celery", workload, skipped="the kernel's peak cannot be reset here")
    app = Celery("boundkit-demo", set_as_current=False)
    app.conf.task_always_eager = True

    @app.task(name="boundkit.demo.spike")  # type: ignore[untyped-decorator]
    def spike() -> None:
        buf = b"\x01" * (100 * 1024**2)
        del buf

    def checked() -> int:
        _reset_high_water()
        start = process_memory().rss
        spike.apply()
        return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - start, 0)

    naive = checked()
    install(app).on_child_start()  # as in a prefork child
    held = checked()
    app.close()
    return DemoRow("celery", workload, naive_growth=naive, boundkit_growth=held)


ROWS: list[Callable[[], DemoRow]] = [_cache_row, _pg_row, _metrics_row, _pdf_row, _guard_row]
ROWS += [_django_row, _celery_row]
