"""Admission and pressure: heavy jobs overlapping in a 512 MiB dyno, and what cleanup gives back.

Run (as root, on Linux): ``PYTHONPATH=src python3 benchmarks/bench_admission.py
[--duration 90] [--only overlap|cleanup] [--repeat 3]``.

``overlap``: gunicorn with 4 sync workers under ``govern_dyno`` in a 512 MiB
cgroup with swap off (the cgroup and the PDFs come from bench_dyno.py; it
needs root there, says why and skips elsewhere). Every client asks for the
same heavy job at once: render an 8-page PDF (a 1600 x 1600 image per page)
at 150 dpi with every page's pixmap alive, the way a contact sheet or a
merged export needs them. Its size is measured first in a fresh process,
never hand-set. Run twice, side by side: without reservations, then with
``with reserve(<measured size>)`` around the job. Printed: OOM kills, failed
requests (and which), 503s, the supervisor's stops and retirements, peak
cgroup memory, and the median and p90 job latency.

``cleanup``: in fresh processes, a ``BoundedCache(max_bytes=128M)`` filled
with 1-16 KiB values, then (a) today's cleanup, ``shrink(0.5)`` then
``trim_memory()``, (b) the guard's cleanup at critical: ``max_bytes`` lowered
(entries evicted), then ``trim_memory()``; each step's RSS given back is
measured apart. Then the same fill load again, after which RSS is measured
again (shrink keeps ``max_bytes``, so the cache refills; the lowered budget
holds). Medians of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench_dyno import (
    CONF,
    MIB,
    SRC,
    Cgroup,
    cannot_run,
    free_port,
    gunicorn_in_cgroup,
    make_pdfs,
    request_outcome,
)

WORKERS = 4

APP = """
import os
from boundkit import WSGIMiddleware, reserve

PDF = os.environ["BENCH_PDF"]
AMOUNT = int(os.environ["BENCH_RESERVE"])


def heavy(path):
    import pymupdf

    doc = pymupdf.open(path)
    pixmaps = [page.get_pixmap(dpi=150) for page in doc]  # every page alive at once
    total = sum(len(pix.tobytes("png")) for pix in pixmaps)
    del pixmaps
    doc.close()
    pymupdf.TOOLS.store_shrink(100)
    return total


def inner(environ, start_response):
    if AMOUNT:
        with reserve(AMOUNT, timeout=120):
            n = heavy(PDF)
    else:
        n = heavy(PDF)
    body = str(n).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


app = WSGIMiddleware(inner)
"""

MEASURE = """
import resource, sys
sys.path[:0] = [{src!r}, {work!r}]
import os
os.environ["BENCH_RESERVE"] = "0"
os.environ["BENCH_PDF"] = {pdf!r}
import benchapp, pymupdf
from boundkit import process_memory
benchapp.heavy({pdf!r})  # imports and first-use caches are not the job's
before = process_memory().rss
peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
benchapp.heavy({pdf!r})
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(max(peak, peak_before) - before)
"""


@dataclass
class Overlap:
    name: str
    ok: int = 0
    failed: int = 0
    busy: int = 0
    oom_kills: int = 0
    stops: int = 0
    retirements: int = 0
    peak: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)


def measure_job(work: Path, pdf: str) -> int:
    """The heavy job's peak growth in bytes, measured in a fresh process."""
    code = MEASURE.format(src=SRC, work=str(work), pdf=pdf)
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return int(out.split()[-1])


def hammer(port: int, clients: int, duration: float, result: Overlap) -> None:
    """Every client asks for the heavy job back to back for ``duration`` seconds."""
    lock = threading.Lock()
    deadline = time.monotonic() + duration

    def client() -> None:
        while time.monotonic() < deadline:
            started = time.monotonic()
            outcome = request_outcome(port, "/heavy", timeout=300)
            with lock:
                if outcome == "ok":
                    result.ok += 1
                    result.latencies.append(time.monotonic() - started)
                elif outcome == "HTTP 503":
                    result.busy += 1
                else:
                    result.failed += 1
                    result.errors[outcome] = result.errors.get(outcome, 0) + 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run_overlap(name: str, amount: int, pdf: str, duration: float, logs: Path) -> Overlap:
    work = Path(tempfile.mkdtemp(prefix="bench-admission-"))
    (work / "benchapp.py").write_text(textwrap.dedent(APP))
    port = free_port()
    governed = "from boundkit.gunicorn import govern_dyno; govern_dyno(globals())"
    (work / "gunicorn.conf.py").write_text(
        CONF.format(governed=governed, port=port, workers=WORKERS)
    )
    result = Overlap(name)
    cgroup = Cgroup(f"boundkit-bench-admission-{os.getpid()}-{name.replace(' ', '-')}")
    log_path = logs / f"{name.replace(' ', '-')}.log"
    try:
        with gunicorn_in_cgroup(
            work, port, cgroup, log_path, BENCH_PDF=pdf, BENCH_RESERVE=str(amount)
        ):
            hammer(port, 2 * WORKERS, duration, result)
        result.oom_kills = cgroup.oom_kills()
        result.peak = cgroup.peak()
        text = log_path.read_text(errors="replace")
        result.retirements = text.count(": retiring worker ")
        result.stops = text.count(": stopping worker ")
        return result
    finally:
        cgroup.remove()


def overlap(duration: float) -> None:
    reason = cannot_run()
    if reason is not None:
        print(f"overlap skipped: {reason}")
        return
    logs = Path(tempfile.mkdtemp(prefix="bench-admission-logs-"))
    pdf = make_pdfs(logs)[0]
    work = Path(tempfile.mkdtemp(prefix="bench-admission-measure-"))
    (work / "benchapp.py").write_text(textwrap.dedent(APP))
    job = measure_job(work, pdf)
    print(f"heavy job measured in a fresh process: {job / MIB:.1f} MiB peak growth")
    results = []
    for name, amount in (("without reservations", 0), ("with reservations", job)):
        print(f"running {name} for {duration:.0f} s ...", flush=True)
        results.append(run_overlap(name, amount, pdf, duration, logs))
    print(
        f"\n512 MiB cgroup, swap off, {WORKERS} sync workers under govern_dyno, "
        f"{2 * WORKERS} clients all on the heavy job, {duration:.0f} s each; logs in {logs}"
    )
    columns = ("OOM kills", "failed", "503", "ok", "stopped", "retired", "peak MiB")
    columns += ("p50 s", "p90 s")
    print(f"{'scenario':<22} " + " ".join(f"{c:>9}" for c in columns))
    for r in results:
        lat = sorted(r.latencies) or [0.0]
        p90 = lat[min(int(len(lat) * 0.9), len(lat) - 1)]
        print(
            f"{r.name:<22} {r.oom_kills:>9} {r.failed:>9} {r.busy:>9} {r.ok:>9} {r.stops:>9} "
            f"{r.retirements:>9} {r.peak / MIB:>9.1f} {statistics.median(lat):>9.2f} {p90:>9.2f}"
        )
    for r in results:
        if r.errors:
            print(f"  {r.name} failures: {r.errors}")


CLEANUP = """
import json, random, sys, time
sys.path.insert(0, {src!r})
from boundkit import BoundedCache, MemoryGuard, process_memory, trim_memory

def rss():
    return process_memory().rss

def fill(cache, rng, n):
    for _ in range(n):
        key = rng.randrange(200_000)
        cache[key] = bytes(rng.randrange(1024, 16 * 1024))

rng = random.Random(1)
cache = BoundedCache(max_bytes=128 * 1024 * 1024)
fill(cache, rng, 40_000)
full = rss()
out = {{"full": full}}
if {mode!r} == "shrink":
    cache.shrink(0.5)
    shrunk = rss()
    out["step1"] = full - shrunk
    trim_memory()  # today's guard cleanup trims after its hooks too
    out["step2"] = shrunk - rss()
else:
    guard = MemoryGuard(limit=full, retire=lambda: None)  # critical now: cleanup runs
    guard.register_cache(cache, name="values")
    guard.check()
    steps = guard.status()["last_cleanup"]["steps"]
    out["step1"] = steps["caches"]  # budget lowered: entries evicted
    out["step2"] = steps["trim"]
after = rss()
out["given_back"] = full - after
fill(cache, rng, 40_000)  # the same load again, for about one cooldown
out["after_refill"] = rss()
out["max_bytes"] = cache.max_bytes
print(json.dumps(out))
"""


def cleanup(repeat: int) -> None:
    rows: dict[str, list[dict[str, float]]] = {"shrink": [], "lower": []}
    for _ in range(repeat):
        for mode in rows:
            code = CLEANUP.format(src=SRC, mode=mode)
            out = subprocess.run(
                [sys.executable, "-c", code], check=True, capture_output=True, text=True
            ).stdout
            rows[mode].append(json.loads(out))
    print(f"\nBoundedCache(max_bytes=128M) of 1-16 KiB values; medians of {repeat} fresh processes")
    print(
        f"{'cleanup':<34} {'full MiB':>9} {'step 1':>9} {'step 2':>9} {'gave back':>9} "
        f"{'refilled':>9}"
    )
    labels = {
        "shrink": "shrink(0.5) + trim (today)",
        "lower": "max_bytes halved + trim (guard)",
    }
    for mode, runs in rows.items():

        def med(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(run[key] for run in runs) / MIB

        print(
            f"{labels[mode]:<34} {med('full'):>9.1f} {med('step1'):>9.1f} {med('step2'):>9.1f} "
            f"{med('given_back'):>9.1f} {med('after_refill'):>9.1f}"
        )
    print("step 1: shrink, or the budget lowered; step 2: the trim after it (the guard's")
    print("own report of each step); refilled: RSS after the same fill load again")
    print("(shrink keeps max_bytes so the cache refills; the lowered budget holds)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=90.0, help="seconds per overlap run")
    parser.add_argument("--only", choices=("overlap", "cleanup"))
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per cleanup")
    args = parser.parse_args()
    if args.only in (None, "cleanup"):
        cleanup(args.repeat)
    if args.only in (None, "overlap"):
        overlap(args.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
