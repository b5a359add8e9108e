"""Rendering throughput and peak memory: raw PyMuPDF, keep-all, render_pages, pypdfium2.

Run: ``python3 benchmarks/bench_pdf.py [--pages 40] [--text-pages 160] [--repeats 3]``
``[--baseline SRC]``

Every measurement runs in a fresh process (``--child``), which resets its peak
(VmHWM) after imports, renders every page to raw RGB bytes at 150 dpi and
reports pages/s (wall clock, and per CPU second, steadier on a shared machine),
peak RSS above its start and minor page faults (deterministic: memory given
back and faulted in again shows there). ``render_32M`` is render_pages with
``budget=32 MiB`` instead of the default 64 MiB; ``--baseline SRC`` adds
``render_base``, render_pages imported from another checkout's ``src`` (one
whose ``boundkit.memory`` has ``_high_water``: commit de07830 or later). Text
pages render ten times faster than image pages, so the text PDF has four times
as many (``--text-pages``) for runs long enough to time. Runs are interleaved,
the order reversed every other round so neither side always goes first; the
table shows medians (``best``: the fastest run, least
disturbed by other load) and ratios against raw PyMuPDF streaming measured in
the same run; ``paired x raw`` is the median over rounds of each round's
pages/s ratio to raw's, the steadiest figure on a shared machine.
Also times ``import pymupdf`` and ``import boundkit`` (fresh processes).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

DPI = 150
WORKLOADS = ("raw", "keepall", "render_pages", "render_32M", "pypdfium2")


def child(workload: str, path: str) -> None:
    """Render ``path`` with ``workload`` and print pages, seconds and peak growth as JSON."""
    import pymupdf
    import pypdfium2

    from boundkit.memory import _high_water, _reset_high_water, process_memory
    from boundkit.pdf import DEFAULT_BUDGET, render_pages

    if _reset_high_water() is None:
        raise RuntimeError("cannot reset the peak RSS (needs Linux 4.0+ /proc/self/clear_refs)")
    start = process_memory().rss
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    began = time.perf_counter()
    cpu_began = time.process_time()
    pages = 0
    # Each loop holds its last output until the next page, as a consumer's loop
    # variable does: dropping it at once makes glibc unmap and re-fault 6 MB per
    # page, which alone slows text pages 4-9x.
    data = b""
    if workload == "raw":
        doc = pymupdf.open(path)
        for page in doc:
            pix = page.get_pixmap(dpi=DPI)
            data = bytes(pix.samples_mv)
            del pix
            pages += 1
        doc.close()
    elif workload == "keepall":
        doc = pymupdf.open(path)
        kept = [page.get_pixmap(dpi=DPI) for page in doc]
        pages = len([bytes(pix.samples_mv) for pix in kept])
        doc.close()
    elif workload in ("render_pages", "render_32M"):
        budget = {"render_32M": 32 * 2**20}.get(workload, DEFAULT_BUDGET)
        for _held in render_pages(path, dpi=DPI, fmt="raw", budget=budget):
            pages += 1
    else:
        pdf = pypdfium2.PdfDocument(path)
        for index in range(len(pdf)):
            bitmap = pdf[index].render(scale=DPI / 72)
            data = bytes(bitmap.buffer)
            del bitmap
            pages += 1
        pdf.close()
    seconds = time.perf_counter() - began
    cpu = time.process_time() - cpu_began
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    del data
    peak = (_high_water() or 0) - start
    result = {"pages": pages, "seconds": seconds, "cpu": cpu, "peak": peak, "faults": faults}
    print(json.dumps(result))


def _run_child(workload: str, path: Path, env: dict[str, str] | None = None) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", workload, str(path)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _import_cost(module: str, repeats: int) -> tuple[float, float]:
    code = (
        "import time,os;r=lambda:int(open('/proc/self/statm').read().split()[1])*os.sysconf("
        f"'SC_PAGE_SIZE');a=r();t=time.perf_counter();import {module};"
        "print(time.perf_counter()-t, r()-a)"
    )
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        seconds, grown = out.stdout.split()
        runs.append((float(seconds), float(grown)))
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--text-pages", type=int, help="default: 4 x --pages")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", metavar="SRC", help="also run render_pages from SRC")
    parser.add_argument("--child", nargs=2, metavar=("WORKLOAD", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    import pymupdf

    from fix_pdf import image_pdf, text_pdf

    print(f"PyMuPDF {pymupdf.__version__} (MuPDF {pymupdf.mupdf_version}), {DPI} dpi, raw RGB")
    for module in ("pymupdf", "boundkit"):
        seconds, grown = _import_cost(module, args.repeats)
        print(f"import {module:<10} {seconds * 1000:7.0f} ms  +{grown / 2**20:6.1f} MiB RSS")
    with tempfile.TemporaryDirectory() as tmp:
        docs = {
            "text": Path(tmp) / "text.pdf",
            "image": Path(tmp) / "image.pdf",
        }
        docs["text"].write_bytes(text_pdf(args.text_pages or 4 * args.pages))
        docs["image"].write_bytes(image_pdf(args.pages, side=1600))
        for kind, path in docs.items():
            _table(kind, path, args)


def _table(kind: str, path: Path, args: argparse.Namespace) -> None:
    """Run every workload ``args.repeats`` times, interleaved, and print one table."""
    runs: dict[str, tuple[str, dict[str, str] | None]] = {w: (w, None) for w in WORKLOADS}
    if args.baseline:
        base = {**os.environ, "PYTHONPATH": str(Path(args.baseline).resolve())}
        runs["render_base"] = ("render_pages", base)
    results: dict[str, list[dict[str, float]]] = {w: [] for w in runs}
    order = list(runs)
    for _ in range(args.repeats):
        for name in order:
            workload, env = runs[name]
            results[name].append(_run_child(workload, path, env))
        order.reverse()
    columns = {
        "pages/s": lambda r: r["pages"] / r["seconds"],
        "best": lambda r: r["pages"] / r["seconds"],
        "pages/cpu-s": lambda r: r["pages"] / r["cpu"],
        "peak MiB": lambda r: r["peak"] / 2**20,
    }
    table = {
        (w, col): (max if col == "best" else statistics.median)(map(get, rs))
        for w, rs in results.items()
        for col, get in columns.items()
    }
    pages = int(results["raw"][0]["pages"])
    print(f"\n{kind} PDF, {pages} pages, {args.repeats} fresh processes each")
    print(
        f"{'workload':<13}"
        + "".join(f"{col:>12}{'x raw':>6}" for col in columns)
        + "  faults  paired x raw"
    )
    for w, rs in results.items():
        cells = "".join(
            f"{table[w, col]:12.1f}{table[w, col] / table['raw', col]:6.2f}" for col in columns
        )
        faults = statistics.median(r["faults"] for r in rs)
        # pages/s against raw's in the same round, whose neighbours and load it shared
        paired = statistics.median(
            raw["seconds"] / r["seconds"] for r, raw in zip(rs, results["raw"], strict=True)
        )
        print(f"{w:<13}{cells}{faults / 1000:7.0f}k {paired:13.2f}")


if __name__ == "__main__":
    main()
