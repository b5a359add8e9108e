"""``boundkit demo``: the same workload done naively and with boundkit, side by side.

Each row runs a small naive workload and its boundkit counterpart in this
process and reports how much anonymous memory each left behind.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
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


ROWS.append(_pdf_row)
