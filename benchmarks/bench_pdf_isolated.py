"""The cost of isolation: isolated_render_pages / isolated_iter_text against the in-process calls.

Run: ``python3 benchmarks/bench_pdf_isolated.py [--rounds 7] [--pages 20]``

For each document (text pages, image pages, a one-page file) and each
operation (PNG at 150 dpi, raw RGB at 150 dpi, text), one round times the
in-process call (:mod:`boundkit.pdf`) and the isolated one with a warm worker
(reused from the previous file), in alternating order, in this process, with
time.perf_counter. The table gives the medians over rounds, the median of
each round's paired ratio (isolated / in-process, the steadiest figure on a
shared machine) and the median extra milliseconds per page, in wall-clock
time and in CPU time (this process plus the worker's, from schedstat; steadier
than wall clock when other load shares the cores). ``cold`` is a
call that first starts a new worker (``close_isolated_workers()`` before it):
what the first file, or the file after a crash or a timeout, costs. Last,
the time to start a worker against a bare ``fork()`` with the caller holding a
small and a 1 GiB heap: the worker is spawned (posix_spawn/vfork), whose cost
does not grow with the caller's heap, while fork copies its page tables.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

DPI = 150


def _cpu() -> float:
    """CPU seconds of this process and of its live children (the worker), to the nanosecond."""
    import psutil

    spent = time.process_time()
    for child in psutil.Process().children():
        try:
            with open(f"/proc/{child.pid}/schedstat") as schedstat:
                spent += int(schedstat.read().split()[0]) / 1e9
        except OSError:
            pass
    return spent


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and CPU seconds (this process and its workers) that ``fn()`` took."""
    cpu = _cpu()
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began, _cpu() - cpu


def _start_costs(limit: int, rounds: int) -> None:
    """Median time to start a worker (spawn + import PyMuPDF) and to fork, small and big heap."""
    import os

    from boundkit._pdf_pool import Worker

    def start() -> None:
        Worker(limit).stop()

    def fork() -> None:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)

    print("\nstarting a process, median ms:  worker (spawn+import)   bare fork+exit")
    for heap in (0, 1 << 30):
        ballast = bytearray(b"\x01") * heap  # touched: its pages are resident
        spawn = statistics.median(_timed(start)[0] for _ in range(rounds))
        forked = statistics.median(_timed(fork)[0] for _ in range(rounds))
        print(f"  caller holding {heap >> 20:>5} MiB {spawn * 1e3:22.0f} {forked * 1e3:16.1f}")
        del ballast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--pages", type=int, default=20, help="pages of the image document")
    parser.add_argument("--memory-limit", default="256M")
    args = parser.parse_args()

    import pymupdf

    from boundkit import pdf, pdf_isolated
    from fix_pdf import image_pdf, text_pdf

    limit = args.memory_limit
    kept: dict[str, Any] = {"memory_limit": limit, "idle_timeout": None}  # warm between rounds
    operations: dict[str, tuple[Callable[[Path], object], Callable[[Path], object]]] = {
        "png": (
            lambda p: list(pdf.render_pages(p, dpi=DPI)),
            lambda p: list(pdf_isolated.isolated_render_pages(p, dpi=DPI, **kept)),
        ),
        "raw": (
            lambda p: list(pdf.render_pages(p, dpi=DPI, fmt="raw")),
            lambda p: list(pdf_isolated.isolated_render_pages(p, dpi=DPI, fmt="raw", **kept)),
        ),
        "text": (
            lambda p: list(pdf.iter_text(p)),
            lambda p: list(pdf_isolated.isolated_iter_text(p, **kept)),
        ),
    }
    print(f"PyMuPDF {pymupdf.__version__}, {DPI} dpi, {args.rounds} rounds, limit {limit}")
    worker = pdf_isolated._pdf_pool.checkout(pdf_isolated.parse_bytes(limit))
    print(f"worker bound by {worker.bound}")
    pdf_isolated._pdf_pool.checkin(worker, None)
    with tempfile.TemporaryDirectory() as tmp:
        docs = {
            f"text x{4 * args.pages}": (Path(tmp) / "text.pdf", text_pdf(4 * args.pages)),
            f"image x{args.pages}": (Path(tmp) / "image.pdf", image_pdf(args.pages, side=1600)),
            "text x1": (Path(tmp) / "one.pdf", text_pdf(1)),
        }
        columns = f"{'in-proc':>10}{'isolated':>10}{'paired x':>8}{'+/page':>8}"
        print(f"\n{'':<16}{'wall clock, ms':^36}{'CPU (parent + worker), ms':^36}")
        print(f"{'document':<11}{'op':<5}{columns}{columns}{'cold':>8}")
        for label, (path, data) in docs.items():
            path.write_bytes(data)
            pages = len(list(pdf.iter_text(path)))
            for op, (inproc, isolated) in operations.items():
                _row(label, op, path, pages, inproc, isolated, args.rounds, pdf_isolated)
    _start_costs(pdf_isolated.parse_bytes(limit), args.rounds)


def _row(
    label: str,
    op: str,
    path: Path,
    pages: int,
    inproc: Callable[[Path], object],
    isolated: Callable[[Path], object],
    rounds: int,
    pdf_isolated: object,
) -> None:
    """Time one document and operation over ``rounds`` alternating rounds; print one row."""
    close = pdf_isolated.close_isolated_workers  # type: ignore[attr-defined]
    isolated(path)  # warm the worker and the page cache
    inproc(path)
    local: list[tuple[float, float]] = []
    remote: list[tuple[float, float]] = []
    cold = []
    for round_number in range(rounds):
        pair = [
            lambda: local.append(_timed(lambda: inproc(path))),
            lambda: remote.append(_timed(lambda: isolated(path))),
        ]
        for run in pair if round_number % 2 == 0 else reversed(pair):
            run()
        close()
        cold.append(_timed(lambda: isolated(path))[0])
    cells = []
    for kind in (0, 1):  # wall clock, then CPU
        pairs = [(r[kind], i[kind]) for r, i in zip(remote, local, strict=True)]
        cells.append(
            f"{statistics.median(i for _, i in pairs) * 1e3:10.1f}"
            f"{statistics.median(r for r, _ in pairs) * 1e3:10.1f}"
            f"{statistics.median(r / i for r, i in pairs):8.2f}"
            f"{statistics.median((r - i) / pages for r, i in pairs) * 1e3:8.2f}"
        )
    print(f"{label:<11}{op:<5}{''.join(cells)}{statistics.median(cold) * 1e3:8.0f}")


if __name__ == "__main__":
    main()
