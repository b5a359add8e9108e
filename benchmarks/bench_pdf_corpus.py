"""Walk a folder of PDFs: raw PyMuPDF, boundkit in-process and boundkit isolated, page by page.

Run: ``python3 benchmarks/bench_pdf_corpus.py FOLDER [--dpi 72] [--max-pages 10]``
``[--memory-limit 256M] [--page-timeout 20] [--file-timeout 120] [--rlimit] [--verbose]``

Build a hostile corpus first with ``benchmarks/make_hostile_corpus.py``; or
point it at real PDFs (the test folders of pdf.js or PyMuPDF). Each file's
first ``--max-pages`` pages are rendered to raw RGB and read as text three
ways: raw PyMuPDF and :func:`boundkit.pdf.render_pages` / ``iter_text`` each in
a runner subprocess (restarted when it dies, so a segfault is counted, not
fatal; a file that outlives ``--file-timeout`` is killed and counted), and
:func:`boundkit.pdf_isolated.isolated_render_pages` / ``isolated_iter_text`` in
this process with ``skip_bad_pages=True``. A failing page does not end the
file on any path: raw and in-process resume at the next page.

Counted: pages whose text and pixels (SHA-256 of the samples) match raw
PyMuPDF's; divergences (both rendered, results differ); pages only raw read
(boundkit refused them: which error); pages only boundkit read; untyped
errors (anything not a boundkit error); crashes; timeouts; pages the isolated
worker refused for its memory limit or a timeout. Also: the
isolated worker's largest peak against the limit, this process's own peak
growth, and the time each path took in all. Targets: 0 untyped errors, 0
crashes, 0 divergences.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import select
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ERROR_PAGE = "open"  # the key of errors raised before any page


def _digest(data: bytes | memoryview | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()[:16]


def _error(exc: BaseException) -> str:
    from boundkit.errors import BoundkitError

    typed = isinstance(exc, (BoundkitError, FileNotFoundError))
    return f"{'' if typed else 'UNTYPED '}{type(exc).__name__}: {str(exc)[:160]}"


def _raw_file(path: str, dpi: int, max_pages: int) -> dict[str, Any]:
    import pymupdf

    result: dict[str, Any] = {"pix": {}, "text": {}, "errors": {}}
    try:
        doc = pymupdf.open(path, filetype="pdf")
        if doc.needs_pass:
            result["errors"][ERROR_PAGE] = "encrypted"
            return result
        count = doc.page_count
    except Exception as exc:
        result["errors"][ERROR_PAGE] = f"{type(exc).__name__}: {str(exc)[:160]}"
        return result
    for number in range(min(count, max_pages)):
        try:
            page = doc[number]
            result["text"][number] = _digest(page.get_text())
            pix = page.get_pixmap(dpi=dpi)
            result["pix"][number] = _digest(pix.samples_mv)
            del pix, page
        except Exception as exc:
            result["errors"][number] = f"{type(exc).__name__}: {str(exc)[:160]}"
    doc.close()
    return result


def _inproc_file(path: str, dpi: int, max_pages: int) -> dict[str, Any]:
    from boundkit import pdf

    result: dict[str, Any] = {"pix": {}, "text": {}, "errors": {}}
    try:
        with pdf.open_pdf(path) as doc:
            count = doc.page_count
    except Exception as exc:
        result["errors"][ERROR_PAGE] = _error(exc)
        return result
    wanted = list(range(min(count, max_pages)))
    for key, stream in (
        ("pix", lambda pages: pdf.render_pages(path, dpi=dpi, fmt="raw", pages=pages)),
        ("text", lambda pages: pdf.iter_text(path, pages=pages)),
    ):
        remaining = wanted
        while remaining:
            try:
                for number, value in stream(remaining):
                    result[key][number] = _digest(value)
                    remaining = remaining[1:]
            except Exception as exc:
                result["errors"].setdefault(remaining[0], _error(exc))
                remaining = remaining[1:]
    return result


def runner(kind: str, dpi: int, max_pages: int) -> None:
    """Answer one JSON line per path read from stdin (raw or in-process).

    What MuPDF prints to stdout goes to a scratch file instead; its lines per
    file are reported as ``stdout``: noise that breaks tools reading stdout.
    """
    import tempfile

    out = os.fdopen(os.dup(1), "w")
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 1)
        for line in sys.stdin:
            began = time.perf_counter()
            result = work(line.strip(), dpi, max_pages) if (work := _WORK[kind]) else {}
            result["seconds"] = time.perf_counter() - began
            sys.stdout.flush()
            scratch.seek(0)
            result["stdout"] = scratch.read().count(b"\n")
            scratch.seek(0)
            scratch.truncate()
            print(json.dumps(result), file=out, flush=True)


_WORK = {"raw": _raw_file, "inproc": _inproc_file}


class Runner:
    """A runner subprocess, restarted after it crashed or timed out."""

    def __init__(self, kind: str, args: argparse.Namespace) -> None:
        self.kind = kind
        self.command = [sys.executable, __file__, "--runner", kind, "--dpi", str(args.dpi)]
        self.command += ["--max-pages", str(args.max_pages), "."]
        self.timeout = args.file_timeout
        self.process: subprocess.Popen[str] | None = None

    def run(self, path: Path) -> dict[str, Any]:
        if self.process is None:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(f"{path}\n")
        self.process.stdin.flush()
        ready = select.select([self.process.stdout], [], [], self.timeout)[0]
        line = self.process.stdout.readline() if ready else ""
        if line:
            return json.loads(line)  # type: ignore[no-any-return]
        outcome = "timeout" if not ready else "crash"
        self.close()
        return {"pix": {}, "text": {}, "errors": {}, outcome: True, "seconds": self.timeout}

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            for stream in (self.process.stdin, self.process.stdout):
                if stream is not None:
                    stream.close()
            self.process = None


def _isolated_file(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    from boundkit import pdf_isolated
    from boundkit.errors import PdfLimitError

    result: dict[str, Any] = {"pix": {}, "text": {}, "errors": {}, "limits": [], "peak": 0}
    options = {
        "memory_limit": args.memory_limit,
        "page_timeout": args.page_timeout,
        "file_timeout": args.file_timeout,
        "skip_bad_pages": True,
    }
    began = time.perf_counter()
    for key, pages in (
        ("pix", pdf_isolated.isolated_render_pages(path, dpi=args.dpi, fmt="raw", **options)),
        ("text", pdf_isolated.isolated_iter_text(path, **options)),
    ):
        with pages:
            try:
                for number, value in pages:
                    if number >= args.max_pages:
                        break
                    result[key][number] = _digest(value)
            except Exception as exc:
                failed = getattr(exc, "page", None)
                result["errors"].setdefault(ERROR_PAGE if failed is None else failed, _error(exc))
                if isinstance(exc, PdfLimitError):
                    result["limits"].append(str(exc)[:160])
            for error in pages.skipped:
                if error.page is not None and error.page < args.max_pages:
                    result["errors"].setdefault(error.page, _error(error))
                    if isinstance(error, PdfLimitError):
                        result["limits"].append(str(error)[:160])
        result["peak"] = max(result["peak"], pages.peak_memory or 0)
    result["seconds"] = time.perf_counter() - began
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--dpi", type=int, default=72)
    parser.add_argument("--max-pages", type=int, default=10)
    parser.add_argument("--memory-limit", default="256M")
    parser.add_argument("--page-timeout", type=float, default=20.0)
    parser.add_argument("--file-timeout", type=float, default=120.0)
    parser.add_argument("--verbose", action="store_true", help="one line per file")
    parser.add_argument(
        "--rlimit", action="store_true", help="bound the isolated worker by RLIMIT_AS, no cgroup"
    )
    parser.add_argument("--runner", choices=["raw", "inproc"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.runner:
        runner(args.runner, args.dpi, args.max_pages)
        return

    from boundkit import _pdf_pool, pdf_isolated
    from boundkit._sizes import format_bytes, parse_bytes
    from boundkit.memory import _high_water

    if args.rlimit:  # what a machine without a writable memory cgroup gets
        _pdf_pool.create_memory_cgroup = lambda limit: None  # type: ignore[assignment]

    files = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() == ".pdf" and p.is_file())
    runners = {kind: Runner(kind, args) for kind in ("raw", "inproc")}
    tally: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    notes: list[str] = []
    worst_peak = 0
    start_peak = _high_water() or 0
    for path in files:
        results = {kind: r.run(path) for kind, r in runners.items()}
        results["isolated"] = _isolated_file(path, args)
        worst_peak = max(worst_peak, results["isolated"]["peak"])
        line = _compare(path, results, tally, notes)
        for kind, result in results.items():
            seconds[kind] += result["seconds"]
        if args.verbose:
            print(line, flush=True)
    for r in runners.values():
        r.close()
    pdf_isolated.close_isolated_workers()
    _report(files, tally, seconds, notes, args)
    limit = parse_bytes(args.memory_limit)
    print(f"isolated worker: largest peak {format_bytes(worst_peak)} (limit {format_bytes(limit)})")
    grew = (_high_water() or 0) - start_peak
    print(f"this process (isolated path): peak grew {format_bytes(grew)}")


def _compare(
    path: Path, results: dict[str, dict[str, Any]], tally: Counter[str], notes: list[str]
) -> str:
    """Count one file's pages into ``tally``; return a one-line summary of the file."""
    raw = results["raw"]
    name = path.name
    for kind, result in results.items():
        for outcome in ("crash", "timeout"):
            if result.get(outcome):
                tally[f"{kind} {outcome}"] += 1
                notes.append(f"{kind} {outcome}: {name}")
        for page, error in result["errors"].items():
            if error.startswith("UNTYPED"):
                tally[f"{kind} untyped"] += 1
                notes.append(f"{kind} untyped error: {name} page {page}: {error}")
        for refusal in result.get("limits", ()):
            tally[f"{kind} limit refusals"] += 1
            notes.append(f"{kind} limit refusal: {name}: {refusal}")
        if result.get("stdout"):
            tally[f"{kind} files printing to stdout"] += 1
        if kind == "raw":
            continue
        for key in ("pix", "text"):
            ours = {int(k): v for k, v in result[key].items()}
            theirs = {int(k): v for k, v in raw[key].items()}
            for page in sorted(set(ours) | set(theirs)):
                if page in ours and page in theirs:
                    same = ours[page] == theirs[page]
                    tally[f"{kind} {key} {'match' if same else 'DIVERGE'}"] += 1
                    if not same:
                        notes.append(f"{kind} {key} divergence: {name} page {page}")
                elif page in theirs:
                    error = result["errors"].get(page) or result["errors"].get(str(page))
                    tally[f"{kind} {key} raw only"] += 1
                    notes.append(f"{kind} {key} raw only: {name} page {page}: {error}")
                else:
                    tally[f"{kind} {key} boundkit only"] += 1
    counts = {kind: len(r["pix"]) for kind, r in results.items()}
    return f"{name}: pages rendered " + ", ".join(f"{k} {n}" for k, n in counts.items())


def _report(
    files: list[Path],
    tally: Counter[str],
    seconds: Counter[str],
    notes: list[str],
    args: argparse.Namespace,
) -> None:
    print(f"\n{len(files)} files under {args.folder}, first {args.max_pages} pages, {args.dpi} dpi")
    for key in sorted(tally):
        print(f"  {key:<32}{tally[key]:>7}")
    print("time in all: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    if seconds["inproc"]:
        print(f"isolated / in-process time: {seconds['isolated'] / seconds['inproc']:.2f}")
    for note in notes:
        print("  " + note)


if __name__ == "__main__":
    main()
