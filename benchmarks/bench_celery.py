"""Celery's ``worker_max_memory_per_child`` against boundkit, on a real prefork worker.

Run: ``PYTHONPATH=src python3 benchmarks/bench_celery.py [--quick] [--repeat N] [--only NAME]``
(needs Redis on 127.0.0.1:6379 and PyMuPDF; set ``BENCH_CELERY_REDIS`` to use another
URL). It uses Redis DB 15, flushed at the start and the end. Each run is a
``celery worker`` (prefork) started in its own process group and stopped (warm
shutdown, then SIGKILL after 30 s) when the run ends. ``--only`` takes a scenario:

``mechanics``: how Celery's own limit behaves (the three runs issue 17 quotes):

1. limit: concurrency 2, ``worker_max_memory_per_child`` = 150 MiB in KiB, 40 tasks
   that each keep 16 MiB in a module-level list (a leak);
2. no limit: the same 40 tasks without the setting;
3. one big task: concurrency 1, the same limit, a task that allocates 300 MiB (freed
   before it returns, then kept) between small tasks, to show when the limit is checked.

What run 3 pins down: billiard (Celery's pool) checks the limit in the child after each
task, and on Linux it compares ``getrusage().ru_maxrss``, the child's *peak* RSS, not
its current RSS (``billiard/compat.py: mem_rss``). So a task over the limit runs to the
end, and the child is then replaced even if the task gave the memory back. The pool's
"exceeding memory limit" warning reaches the worker log only with ``MP_LOG=1``.

``pdf``: a PDF worker at concurrency 2. Each task renders every page of one of three
8-page PDFs (a 1600 x 1600 image per page, made with PyMuPDF) to PNG at 150 dpi, the
way plain PyMuPDF code does it: every page's pixmap alive until the PNGs are made, a
spike of ~110 MiB, freed when the task returns (the task also empties MuPDF's store,
which otherwise keeps every document's decoded images, up to 256 MiB). One task in
three also keeps the upload's thumbnails (8 pages at 100 dpi, 22 MiB) in a
module-level dict, a cache that grows as real apps' do. The same tasks run under
four workers, interleaved, ``--repeat`` times: Celery's
``worker_max_memory_per_child`` at 150 MiB (what docs/dyno-512mb.md advises for two
children on a 512 MiB dyno: a share of ~230 MiB less the largest task), no limit,
``install(app)`` from ``boundkit.celery`` with the same task code, and
``install(app)`` with tasks that render through ``render_pages(..., reserve=True)``
(one pixmap at a time, under the dyno-wide reservation). boundkit's workers get
``BOUNDKIT_MEMORY_LIMIT=512M``, so their share is the dyno's.

``cgroup``: the same four, each worker inside a fresh 512 MiB memory cgroup with swap
off (bench_dyno's ``Cgroup``, v1 or v2), as on a platform; counts the kernel's OOM
kills. Needs root on Linux; otherwise says why and runs the rest.

Printed per worker: tasks per second (median over the repeats; successful tasks from
the first submission to the last task's end), failed tasks, recycled children (seen
during the run and gone before its end, not killed), how many of those held no
thumbnails, the largest RSS a child held as a task started and the most one task
grew it (measured by the task), children killed by SIGKILL (the pool's log), OOM kills
(the cgroup's counter) and peak, boundkit's threshold (its log), and the children's
peak RSS (sampled every 20 ms with ``boundkit.memory.process_memory``; a child that
lives less than that can be sampled below its peak). Then the ratios against
Celery's own setting.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pymupdf
from celery import Celery

from bench_dyno import Cgroup, cgroup_unavailable, make_pdfs
from boundkit.memory import process_memory
from fix_servers import stop_process_group

MIB = 1024**2
REDIS = os.environ.get("BENCH_CELERY_REDIS", "redis://127.0.0.1:6379/15")
SRC = str(Path(__file__).resolve().parent.parent / "src")
LIMIT_KIB = 150 * 1024  # worker_max_memory_per_child is in KiB
LEAK_MIB = 16
TASKS = 40
SPIKE_MIB = 300
RUN_TIMEOUT = 180.0
PAGE_DPI = 150
THUMB_DPI = 100
KEEP_EVERY = 3
DYNO_LIMIT = "512M"

app = Celery("bench_celery", broker=REDIS, backend=REDIS)
app.conf.update(
    worker_max_memory_per_child=int(os.environ.get("BENCH_MAXMEM_KIB", "0")) or None,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    result_expires=600,
    worker_hijack_root_logger=True,
)
if os.environ.get("BENCH_INSTALL") == "1":
    from boundkit.celery import install

    install(app)

_kept: list[bytes] = []
_thumbnails: dict[str, list[bytes]] = {}


@app.task(name="bench.keep")
def keep(mib: int) -> dict[str, int]:
    """Keep ``mib`` MiB for the life of the child: a leak."""
    _kept.append(b"\x01" * (mib * MIB))  # filled, so the pages are resident
    return {"pid": os.getpid(), "rss": process_memory().rss, "held": len(_kept)}


@app.task(name="bench.spike")
def spike(mib: int, hold: bool) -> dict[str, int]:
    """Allocate ``mib`` MiB, stay over the limit for a second, free it unless ``hold``."""
    buf = b"\x01" * (mib * MIB)
    time.sleep(1.0)  # over the limit for a while: nothing interrupts the task
    rss_in_task = process_memory().rss
    if hold:
        _kept.append(buf)
    del buf
    return {
        "pid": os.getpid(),
        "rss": rss_in_task,
        "rss_at_return": process_memory().rss,
        "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB on Linux
    }


@app.task(name="bench.pdf_upload")
def pdf_upload(path: str, upload_id: str, keep: bool, streamed: bool) -> dict[str, float]:
    """Render every page of ``path`` to PNG; keep its thumbnails when ``keep``.

    ``streamed``: through ``render_pages(reserve=True)``, else plain PyMuPDF with
    every page's pixmap alive until the PNGs are made, and MuPDF's store emptied at
    the end (it keeps every document's decoded images otherwise, up to 256 MiB).
    """
    thumbnails = None
    start = peak = process_memory().rss  # what the child held between tasks
    if streamed:
        from boundkit import render_pages

        png = 0
        for _, data in render_pages(path, dpi=PAGE_DPI, reserve=True):
            png += len(data)
            peak = max(peak, process_memory().rss)
        if keep:
            thumbnails = [raw for _, raw in render_pages(path, dpi=THUMB_DPI, fmt="raw")]
    else:
        doc = pymupdf.open(path)
        try:
            pixmaps = [page.get_pixmap(dpi=PAGE_DPI) for page in doc]
            png = sum(len(pix.tobytes("png")) for pix in pixmaps)
            peak = process_memory().rss  # every pixmap alive: the task's peak
            del pixmaps
            if keep:
                thumbnails = [page.get_pixmap(dpi=THUMB_DPI).samples for page in doc]
        finally:
            doc.close()
            pymupdf.TOOLS.store_shrink(100)
    if thumbnails is not None:
        _thumbnails[upload_id] = thumbnails
    return {
        "pid": os.getpid(),
        "png": png,
        "start": start,
        "spike": peak - start,
        "held": sum(len(raw) for pages in _thumbnails.values() for raw in pages),
        "finished": time.time(),
    }


class Sampler(threading.Thread):
    """Polls the worker's children; keeps the peak RSS seen per child pid."""

    def __init__(self, parent: int) -> None:
        super().__init__(daemon=True)
        self.parent = psutil.Process(parent)
        self.peaks: dict[int, int] = {}
        self.parent_peak = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            with contextlib.suppress(psutil.Error, OSError):
                rss = process_memory(self.parent.pid).rss
                self.parent_peak = max(self.parent_peak, rss)
            with contextlib.suppress(psutil.Error):
                for child in self.parent.children():
                    with contextlib.suppress(psutil.Error, OSError):
                        rss = process_memory(child.pid).rss
                        self.peaks[child.pid] = max(self.peaks.get(child.pid, 0), rss)
            self.halt.wait(0.02)


class Worker:
    """A ``celery worker`` subprocess in its own process group (and ``cgroup``, if given)."""

    def __init__(
        self,
        *,
        concurrency: int,
        max_memory_kib: int | None,
        logdir: Path,
        install: bool = False,
        cgroup: Cgroup | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log = Path(tempfile.mkstemp(prefix="worker-", suffix=".log", dir=logdir)[1])
        environ = dict(os.environ if env is None else env)
        here = str(Path(__file__).resolve().parent)
        path = [here, SRC, environ.get("PYTHONPATH", "")]
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, path))
        environ["BENCH_MAXMEM_KIB"] = str(max_memory_kib or 0)
        environ["BENCH_INSTALL"] = "1" if install else "0"
        environ["MP_LOG"] = "1"  # else celery logs the pool's own messages at ERROR only
        cmd = [sys.executable, "-m", "celery", "-A", "bench_celery:app", "worker"]
        cmd += ["-P", "prefork", "-c", str(concurrency), "-l", "INFO", "-n", "bench@%h"]
        cmd += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        cmd += ["--logfile", str(self.log)]
        self.proc = subprocess.Popen(
            cmd,
            env=environ,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            preexec_fn=cgroup.join if cgroup else None,
        )
        deadline = time.monotonic() + 60
        while "ready." not in self.log_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"worker did not start; see {self.log}")
            time.sleep(0.1)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        stop_process_group(self.proc, 30)


def collect(
    results: list[Any], worker: Worker, deadline: float
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Each task's result, and the failures by exception name; stops early if the worker died."""
    done, errors = [], {}
    for res in results:
        while not res.ready() and time.monotonic() < deadline and worker.proc.poll() is None:
            time.sleep(0.05)
        try:
            done.append(res.get(timeout=0.5))
        except Exception as exc:  # a failed or lost task is what we count
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
    return done, errors


def alive_children(pid: int) -> set[int]:
    alive = set()
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children():
            with contextlib.suppress(psutil.Error):
                if child.status() != psutil.STATUS_ZOMBIE:
                    alive.add(child.pid)
    return alive


def leak_run(*, max_memory_kib: int | None, logdir: Path) -> None:
    label = f"{max_memory_kib} KiB" if max_memory_kib else "not set"
    print(f"\nworker_max_memory_per_child = {label}; concurrency 2; {TASKS} tasks x {LEAK_MIB} MiB")
    worker = Worker(concurrency=2, max_memory_kib=max_memory_kib, logdir=logdir)
    sampler = Sampler(worker.proc.pid)
    sampler.start()
    try:
        started = time.monotonic()
        results = [keep.delay(LEAK_MIB) for _ in range(TASKS)]
        done, errors = collect(results, worker, started + RUN_TIMEOUT)
        elapsed = time.monotonic() - started
        over = {r["pid"] for r in done if max_memory_kib and r["rss"] > max_memory_kib * 1024}
        alive = alive_children(worker.proc.pid)
        wait_until = time.monotonic() + 5.0  # a child over the limit may still be exiting
        while over & alive and time.monotonic() < wait_until:
            time.sleep(0.05)
            alive = alive_children(worker.proc.pid)
    finally:
        sampler.halt.set()
        sampler.join()
        worker.stop()
    per_pid: dict[int, list[dict[str, int]]] = {}
    for r in done:
        per_pid.setdefault(r["pid"], []).append(r)
    recycled = worker.log_text().count("exceeding memory limit")
    failed = sum(errors.values())
    print(f"  {len(done)} ok, {failed} failed, {elapsed:.1f} s; children used: {len(per_pid)}")
    print(f"  'exceeding memory limit' exits in the worker log: {recycled}")
    lines = [ln for ln in worker.log_text().splitlines() if "exceeding memory limit" in ln]
    if lines:
        print(f"  first: {lines[0].split('] ', 1)[-1]}")
    head = f"{'child pid':>9} {'tasks':>5} {'RSS after last task':>20} {'peak RSS sampled':>17}"
    print(f"  {head}  state")
    for pid, rows in per_pid.items():
        last = max(r["rss"] for r in rows)
        peak = sampler.peaks.get(pid, 0)
        state = "still running at end" if pid in alive else "replaced"
        print(f"  {pid:>9} {len(rows):>5} {last / MIB:>16.1f} MiB {peak / MIB:>13.1f} MiB  {state}")


def spike_run(*, logdir: Path) -> None:
    print(
        f"\nworker_max_memory_per_child = {LIMIT_KIB} KiB; concurrency 1; "
        f"a {SPIKE_MIB} MiB task between 1 MiB tasks"
    )
    worker = Worker(concurrency=1, max_memory_kib=LIMIT_KIB, logdir=logdir)
    deadline = time.monotonic() + RUN_TIMEOUT
    steps = [
        ("keep 1 MiB", keep.s(1)),
        (f"spike {SPIKE_MIB} MiB, freed before return", spike.s(SPIKE_MIB, False)),
        ("keep 1 MiB", keep.s(1)),
        (f"spike {SPIKE_MIB} MiB, kept", spike.s(SPIKE_MIB, True)),
        ("keep 1 MiB", keep.s(1)),
    ]
    try:
        print(
            f"  {'task':<36} {'state':<8} {'pid':>8} {'RSS in task':>12} {'at return':>10}"
            f" {'ru_maxrss':>10}"
        )
        for label, sig in steps:
            res = sig.delay()
            try:
                r = res.get(timeout=max(deadline - time.monotonic(), 0.1))
                state = "SUCCESS"
            except Exception as exc:
                print(f"  {label:<36} FAILED {exc!r}")
                continue
            at_return = r.get("rss_at_return", r["rss"])
            maxrss = f"{r['maxrss'] / MIB:>6.1f} MiB" if "maxrss" in r else ""
            print(
                f"  {label:<36} {state:<8} {r['pid']:>8} {r['rss'] / MIB:>8.1f} MiB"
                f" {at_return / MIB:>6.1f} MiB {maxrss:>10}"
            )
            time.sleep(1.0)  # give a recycled child time to exit before the next task
    finally:
        worker.stop()
    print(
        f"  'exceeding memory limit' exits in the worker log: "
        f"{worker.log_text().count('exceeding memory limit')}"
    )


@dataclass(frozen=True)
class Setup:
    """One way to run the PDF worker."""

    name: str
    max_memory_kib: int | None = None
    install: bool = False
    streamed: bool = False


SETUPS = (
    Setup("celery max-memory 150M", max_memory_kib=LIMIT_KIB),
    Setup("no limit"),
    Setup("boundkit install(app)", install=True),
    Setup("boundkit + render_pages", install=True, streamed=True),
)


@dataclass
class PdfRun:
    """What one run of the PDF worker did."""

    ok: int = 0
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    recycled: int = 0
    recycled_empty: int = 0
    killed: int = 0
    oom_kills: int = 0
    cgroup_peak: int = 0
    peaks: list[int] = field(default_factory=list)
    parent_peak: int = 0
    threshold: str = ""
    largest_held: int = 0
    largest_spike: int = 0

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def pdf_run(
    setup: Setup, pdfs: list[str], tasks: int, seed: int, logdir: Path, in_cgroup: bool
) -> PdfRun:
    """Run ``tasks`` uploads through a fresh concurrency-2 worker set up as ``setup``."""
    env = dict(os.environ)
    for variable in ("BOUNDKIT_MEMORY_LIMIT", "DYNO_RAM", "MEMORY_AVAILABLE"):
        env.pop(variable, None)
    cgroup = None
    if in_cgroup:  # the cgroup is the limit, as on a platform
        slug = re.sub(r"[^a-z0-9]+", "-", setup.name.lower())
        cgroup = Cgroup(f"boundkit-bench-celery-{os.getpid()}-{seed}-{slug}")
    else:
        env["BOUNDKIT_MEMORY_LIMIT"] = DYNO_LIMIT
    run = PdfRun()
    try:
        worker = Worker(
            concurrency=2,
            max_memory_kib=setup.max_memory_kib,
            logdir=logdir,
            install=setup.install,
            cgroup=cgroup,
            env=env,
        )
        sampler = Sampler(worker.proc.pid)
        sampler.start()
        rng = random.Random(seed)
        try:
            started = time.time()
            results = [
                pdf_upload.delay(
                    rng.choice(pdfs), f"{seed}-{n}", n % KEEP_EVERY == 0, setup.streamed
                )
                for n in range(tasks)
            ]
            done, run.errors = collect(results, worker, time.monotonic() + 60 + 6 * tasks)
            alive = alive_children(worker.proc.pid)
        finally:
            sampler.halt.set()
            sampler.join()
            worker.stop()
        run.ok = len(done)
        run.seconds = max((r["finished"] for r in done), default=started) - started
        last: dict[int, dict[str, Any]] = {}  # each child's last task
        for r in sorted(done, key=lambda r: r["finished"]):
            last[r["pid"]] = r
        gone = (set(sampler.peaks) | set(last)) - alive
        log = worker.log_text()
        killed = {int(pid) for pid in re.findall(r"pid:(\d+) exited with 'signal 9", log)}
        run.killed = len(killed & gone)
        recycled = [last[pid] for pid in gone - killed if pid in last]
        run.recycled = len(gone - killed)
        run.recycled_empty = sum(1 for r in recycled if r["held"] == 0)
        run.peaks = sorted(sampler.peaks.values(), reverse=True)
        run.parent_peak = sampler.parent_peak
        found = re.search(r"retire after a task when they hold more than ([^(]+) \(", log)
        run.threshold = found.group(1).strip() if found else ""
        run.largest_held = max((r["start"] for r in done), default=0)
        run.largest_spike = max((r["spike"] for r in done), default=0)
        if cgroup is not None:
            run.oom_kills, run.cgroup_peak = cgroup.oom_kills(), cgroup.peak()
        return run
    finally:
        if cgroup is not None:
            cgroup.remove()


def median_of(runs: list[PdfRun], figure: str) -> float:
    return statistics.median(float(getattr(run, figure)) for run in runs)


def report(title: str, results: dict[str, list[PdfRun]], in_cgroup: bool) -> None:
    print(f"\n{title}")
    print(
        "  recycled: children that exited during the run, not killed; no cache: of those, the"
        " ones that held no thumbnails; held: the largest RSS a child had as a task started"
        " (after boundkit's cleanup, where installed); spike: the most a task grew"
    )
    columns = ["tasks/s", "failed", "recycled", "no cache", "held", "spike", "killed"]
    columns += ["OOM kills", "cgroup"] if in_cgroup else []
    columns += ["children", "peak max", "peak med"]
    print(f"  {'worker':<24} " + " ".join(f"{c:>9}" for c in columns))
    for name, runs in results.items():
        peaks = [peak for run in runs for peak in run.peaks] or [0]
        cells = [f"{median_of(runs, 'throughput'):>9.2f}"]
        cells += [f"{sum(getattr(r, c) for r in runs):>9}" for c in ("failed", "recycled")]
        cells.append(f"{sum(r.recycled_empty for r in runs):>9}")
        cells.append(f"{max(r.largest_held for r in runs) / MIB:>9.1f}")
        cells.append(f"{max(r.largest_spike for r in runs) / MIB:>9.1f}")
        cells.append(f"{sum(r.killed for r in runs):>9}")
        if in_cgroup:
            cells.append(f"{sum(r.oom_kills for r in runs):>9}")
            cells.append(f"{max(r.cgroup_peak for r in runs) / MIB:>9.1f}")
        cells.append(f"{sum(len(r.peaks) for r in runs):>9}")
        cells.append(f"{max(peaks) / MIB:>9.1f} {statistics.median(peaks) / MIB:>9.1f}")
        print(f"  {name:<24} " + " ".join(cells))
    print("  (sizes in MiB; counts summed over the runs; peaks: the children's sampled peak RSS)")
    for name, runs in results.items():
        print(f"  {name}: tasks/s per run " + ", ".join(f"{r.throughput:.2f}" for r in runs))
    for name, runs in results.items():
        errors: dict[str, int] = {}
        for run in runs:
            for error, count in run.errors.items():
                errors[error] = errors.get(error, 0) + count
        if errors:
            print(f"  {name} failures: {errors}")
    celery = results.get(SETUPS[0].name)
    celery_rate = median_of(celery, "throughput") if celery else 0.0
    for setup in SETUPS[2:]:
        runs = results.get(setup.name)
        if not runs or not celery_rate:
            continue
        ratio = median_of(runs, "throughput") / celery_rate
        verdicts = [f"throughput {ratio:.2f}x celery's setting (target >= 1.00)"]
        verdicts.append(f"recycled holding no cache {sum(r.recycled_empty for r in runs)}")
        if in_cgroup:
            verdicts.append(f"OOM kills {sum(r.oom_kills for r in runs)} (target 0)")
        print(f"  {setup.name}: " + "; ".join(verdicts))
    for name, runs in results.items():
        thresholds = sorted({r.threshold for r in runs if r.threshold})
        if thresholds:
            print(f"  {name}: boundkit retires a child above {', '.join(thresholds)}")
    for name, runs in results.items():
        parent = max(r.parent_peak for r in runs)
        held = max(r.largest_held for r in runs)
        spike = max(r.largest_spike for r in runs)
        print(
            f"  {name}: worst case: worker parent {parent / MIB:.0f} + 2 x (held {held / MIB:.0f}"
            f" + spike {spike / MIB:.0f}) = {(parent + 2 * (held + spike)) / MIB:.0f} MiB"
        )


def pdf_scenario(pdfs: list[str], tasks: int, repeat: int, logdir: Path, in_cgroup: bool) -> None:
    setups = list(SETUPS)
    try:
        import boundkit.celery  # noqa: F401
    except ImportError as exc:
        print(f"\nboundkit's rows left out: boundkit.celery cannot be imported ({exc})")
        setups = [s for s in setups if not s.install]
    results: dict[str, list[PdfRun]] = {s.name: [] for s in setups}
    for seed in range(1, repeat + 1):  # interleaved, so a busy minute hits every worker
        for setup in setups:
            where = "in a 512 MiB cgroup" if in_cgroup else "no cgroup"
            print(f"  run {seed}/{repeat}: {setup.name}, {where} ...", flush=True)
            results[setup.name].append(pdf_run(setup, pdfs, tasks, seed, logdir, in_cgroup))
    where = "inside a 512 MiB memory cgroup, swap off" if in_cgroup else "no cgroup"
    title = (
        f"PDF worker, concurrency 2, {where}: {tasks} tasks x {repeat} runs, pages at "
        f"{PAGE_DPI} dpi, 1 task in {KEEP_EVERY} keeps its thumbnails; tasks/s: median"
    )
    report(title, results, in_cgroup)


SCENARIOS = ("mechanics", "pdf", "cgroup")


def main() -> int:
    import celery

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=SCENARIOS, help="run this scenario only")
    parser.add_argument("--tasks", type=int, default=40, help="PDF tasks per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each PDF worker")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 8 PDF tasks, 1 run, no mechanics"
    )
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.repeat = 8, 1
    chosen = (
        [args.only] if args.only else [s for s in SCENARIOS if not args.quick or s != "mechanics"]
    )
    print(f"celery {celery.__version__}, prefork pool, broker and backend {REDIS}")
    print(f"worker_max_memory_per_child: {LIMIT_KIB} KiB = {LIMIT_KIB / 1024:.0f} MiB")
    app.backend.client.flushdb()
    logdir = Path(tempfile.mkdtemp(prefix="bench-celery-"))
    print(f"worker logs in {logdir}")
    try:
        if "mechanics" in chosen:
            leak_run(max_memory_kib=LIMIT_KIB, logdir=logdir)
            leak_run(max_memory_kib=None, logdir=logdir)
            spike_run(logdir=logdir)
        if "pdf" in chosen or "cgroup" in chosen:
            pdfs = make_pdfs(logdir)
        if "pdf" in chosen:
            pdf_scenario(pdfs, args.tasks, args.repeat, logdir, in_cgroup=False)
        if "cgroup" in chosen:
            reason = cgroup_unavailable()
            if reason is not None:
                print(f"\nthe 512 MiB cgroup runs skipped: {reason}")
            else:
                pdf_scenario(pdfs, args.tasks, args.repeat, logdir, in_cgroup=True)
    finally:
        app.backend.client.flushdb()
    return 0


if __name__ == "__main__":
    sys.exit(main())
