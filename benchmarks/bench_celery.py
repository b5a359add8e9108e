"""Celery's ``worker_max_memory_per_child`` measured on a real prefork worker.

Run: ``PYTHONPATH=src python3 benchmarks/bench_celery.py`` (needs Redis on
127.0.0.1:6379; set ``BENCH_CELERY_REDIS`` to use another URL). It uses Redis DB 15,
flushed at the start and the end.

Three runs, each a ``celery worker`` (prefork) started in its own process group and
stopped (warm shutdown, then SIGKILL after 30 s) when the run ends:

1. limit: concurrency 2, ``worker_max_memory_per_child`` = 150 MiB in KiB, 40 tasks
   that each keep 16 MiB in a module-level list (a leak);
2. no limit: the same 40 tasks without the setting;
3. one big task: concurrency 1, the same limit, a task that allocates 300 MiB (freed
   before it returns, then kept) between small tasks, to show when the limit is checked.

Each task reports its pid and its own RSS when it finishes; the parent also samples
every child's RSS with ``boundkit.memory.process_memory(pid)`` every 20 ms for the peak
(a child that exits within 20 ms of its last task can be sampled below it).

What run 3 pins down: billiard (Celery's pool) checks the limit in the child after each
task, and on Linux it compares ``getrusage().ru_maxrss``, the child's *peak* RSS, not
its current RSS (``billiard/compat.py: mem_rss``). So a task over the limit runs to the
end, and the child is then replaced even if the task gave the memory back. The pool's
"exceeding memory limit" warning reaches the worker log only with ``MP_LOG=1``.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from celery import Celery

from boundkit.memory import process_memory

MIB = 1024**2
REDIS = os.environ.get("BENCH_CELERY_REDIS", "redis://127.0.0.1:6379/15")
LIMIT_KIB = 150 * 1024  # worker_max_memory_per_child is in KiB
LEAK_MIB = 16
TASKS = 40
SPIKE_MIB = 300
RUN_TIMEOUT = 180.0

app = Celery("bench_celery", broker=REDIS, backend=REDIS)
app.conf.update(
    worker_max_memory_per_child=int(os.environ.get("BENCH_MAXMEM_KIB", "0")) or None,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    result_expires=600,
    worker_hijack_root_logger=True,
)

_kept: list[bytes] = []


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


class Sampler(threading.Thread):
    """Polls the worker's children; keeps the peak RSS seen per child pid."""

    def __init__(self, parent: int) -> None:
        super().__init__(daemon=True)
        self.parent = psutil.Process(parent)
        self.peaks: dict[int, int] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            with contextlib.suppress(psutil.Error):
                for child in self.parent.children():
                    with contextlib.suppress(psutil.Error, OSError):
                        rss = process_memory(child.pid).rss
                        self.peaks[child.pid] = max(self.peaks.get(child.pid, 0), rss)
            self.halt.wait(0.02)


class Worker:
    """A ``celery worker`` subprocess in its own process group."""

    def __init__(self, *, concurrency: int, max_memory_kib: int | None, logdir: Path) -> None:
        self.log = logdir / f"worker-{concurrency}-{max_memory_kib}.log"
        env = dict(os.environ)
        here = str(Path(__file__).resolve().parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH", "")]))
        env["BENCH_MAXMEM_KIB"] = str(max_memory_kib or 0)
        env["MP_LOG"] = "1"  # else celery logs the pool's own messages at ERROR only
        cmd = [sys.executable, "-m", "celery", "-A", "bench_celery:app", "worker"]
        cmd += ["-P", "prefork", "-c", str(concurrency), "-l", "INFO", "-n", "bench@%h"]
        cmd += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        cmd += ["--logfile", str(self.log)]
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while "ready." not in self.log_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"worker did not start; see {self.log}")
            time.sleep(0.1)

    def log_text(self) -> str:
        try:
            return self.log.read_text()
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # warm shutdown
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # our own group: any stray child
        self.proc.wait(5)


def collect(results: list[Any], deadline: float) -> tuple[list[dict[str, int]], int]:
    done, failed = [], 0
    for res in results:
        try:
            done.append(res.get(timeout=max(deadline - time.monotonic(), 0.1)))
        except Exception as exc:  # a failed or lost task is what we count
            failed += 1
            print(f"  task {res.id} failed: {exc!r}")
    return done, failed


def alive_children(pid: int) -> set[int]:
    alive = set()
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
        done, failed = collect(results, started + RUN_TIMEOUT)
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


def main() -> int:
    import celery

    print(f"celery {celery.__version__}, prefork pool, broker and backend {REDIS}")
    print(f"limit {LIMIT_KIB} KiB = {LIMIT_KIB / 1024:.0f} MiB")
    app.backend.client.flushdb()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-celery-") as tmp:
            logdir = Path(tmp)
            leak_run(max_memory_kib=LIMIT_KIB, logdir=logdir)
            leak_run(max_memory_kib=None, logdir=logdir)
            spike_run(logdir=logdir)
    finally:
        app.backend.client.flushdb()
    return 0


if __name__ == "__main__":
    sys.exit(main())
