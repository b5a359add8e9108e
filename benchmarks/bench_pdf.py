"""Rendering throughput and peak memory: raw PyMuPDF, keep-all, render_pages, pypdfium2.

Run: ``python3 benchmarks/bench_pdf.py [--pages 40] [--repeats 3]``

Every measurement runs in a fresh process (``--child``), which resets its peak
(VmHWM) after imports, renders every page to raw RGB bytes at 150 dpi and
reports pages/s (wall clock, and per CPU second, steadier on a shared machine)
and peak RSS above its start. ``render_32M`` is render_pages with
``budget=32 MiB`` instead of the default 64 MiB. Runs are interleaved; the table
shows medians and ratios against raw PyMuPDF streaming measured in the same run.
Also times ``import pymupdf`` and ``import boundkit`` (fresh processes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

DPI = 150
WORKLOADS = ("raw", "keepall", "render_pages", "render_32M", "pypdfium2")


def _peak_rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def child(workload: str, path: str) -> None:
    """Render ``path`` with ``workload`` and print pages, seconds and peak growth as JSON."""
    import pymupdf
    import pypdfium2

    from boundkit.memory import process_memory
    from boundkit.pdf import DEFAULT_BUDGET, render_pages

    _reset_peak()
    start = process_memory().rss
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
    del data
    print(json.dumps({"pages": pages, "seconds": seconds, "cpu": cpu, "peak": _peak_rss() - start}))


def _run_child(workload: str, path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", workload, str(path)],
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
    parser.add_argument("--repeats", type=int, default=3)
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
        docs["text"].write_bytes(text_pdf(args.pages))
        docs["image"].write_bytes(image_pdf(args.pages, side=1600))
        for kind, path in docs.items():
            results: dict[str, list[dict[str, float]]] = {w: [] for w in WORKLOADS}
            for _ in range(args.repeats):
                for workload in WORKLOADS:
                    results[workload].append(_run_child(workload, path))
            rate = {
                w: statistics.median(r["pages"] / r["seconds"] for r in runs)
                for w, runs in results.items()
            }
            cpu_rate = {
                w: statistics.median(r["pages"] / r["cpu"] for r in runs)
                for w, runs in results.items()
            }
            peak = {w: statistics.median(r["peak"] for r in runs) for w, runs in results.items()}
            print(f"\n{kind} PDF, {args.pages} pages, median of {args.repeats} fresh processes")
            print(
                f"{'workload':<14}{'pages/s':>9}{'x raw':>7}{'pages/cpu-s':>13}{'x raw':>7}"
                f"{'peak MiB':>10}{'x raw':>7}"
            )
            for w in WORKLOADS:
                print(
                    f"{w:<14}{rate[w]:9.1f}{rate[w] / rate['raw']:7.2f}"
                    f"{cpu_rate[w]:13.1f}{cpu_rate[w] / cpu_rate['raw']:7.2f}"
                    f"{peak[w] / 2**20:10.1f}{peak[w] / peak['raw']:7.2f}"
                )


if __name__ == "__main__":
    main()
