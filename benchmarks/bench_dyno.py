"""A 512 MiB dyno under mixed load: a naive app against the same app on boundkit.

Run (as root, on Linux): ``PYTHONPATH=src python3 benchmarks/bench_dyno.py [--duration 240]``.

Needs root on Linux because it creates a memory cgroup (v1 under
``/sys/fs/cgroup/memory``, v2 under ``/sys/fs/cgroup``) limited to 512 MiB with swap
off, and runs gunicorn inside it: only there does the kernel OOM-kill as a platform
does. Elsewhere it says why and exits 0 without measuring. It also needs gunicorn and
PyMuPDF; the database route is left out (and said so) when PostgreSQL does not answer
on 127.0.0.1:5432 (database ``test``, user ``postgres``).

The reference app has three routes, hit by ``2 * workers`` client threads in a fixed
random mix: ``/cache`` fills a cache with 256 KiB values over 4000 keys, ``/db`` reads
2000 rows from PostgreSQL, ``/pdf`` renders one of three 8-page PDFs (a 1600 x 1600
image per page) at 150 dpi, several at once. Naive: a dict cache, a connection per
worker, every page's pixmap alive until the PNGs are made, MuPDF's store left to fill.
boundkit: ``BoundedCache`` registered with ``MemoryGuard()``, ``pooled_connection()``,
``render_pages()``, and the one line ``govern_dyno(globals())`` in gunicorn.conf.py;
no size is computed by hand. Scenarios: naive at 2 workers; boundkit at 2 and 4
workers; boundkit at 2 workers with its cache configured at 1 GiB, more than the
whole dyno. Printed side by side: OOM kills (the cgroup's ``oom_kill`` counter),
failed requests, peak cgroup memory, successful requests per second, and the
supervisor's retirements and stops.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fix_servers import free_port, stop_server, wait_for_port

MIB = 1024 * 1024
LIMIT = 512 * MIB
SRC = str(Path(__file__).resolve().parent.parent / "src")
DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3"
MIX = (("/cache", 5), ("/db", 3), ("/pdf", 2))

APP = """
import os, random
from urllib.parse import parse_qs

MODE = os.environ["BENCH_MODE"]
PDFS = os.environ["BENCH_PDFS"].split(os.pathsep)
DSN = os.environ.get("BENCH_DSN", "")
VALUE = 256 * 1024
QUERY = "SELECT i, md5(i::text) FROM generate_series(1, 2000) AS i"

if MODE == "naive":
    import psycopg, pymupdf

    CACHE = {}
    CONN = [None]

    def cache(key):
        if key not in CACHE:
            CACHE[key] = str(key).encode().ljust(VALUE, b"x")
        return len(CACHE[key])

    def db():
        if CONN[0] is None:
            CONN[0] = psycopg.connect(DSN, autocommit=True)
        return len(CONN[0].execute(QUERY).fetchall())

    def pdf(path):
        doc = pymupdf.open(path)
        pixmaps = [page.get_pixmap(dpi=150) for page in doc]  # every page alive at once
        total = sum(len(pix.tobytes("png")) for pix in pixmaps)
        doc.close()
        return total
else:
    from boundkit import BoundedCache, MemoryGuard, WSGIMiddleware, render_pages
    from boundkit.pg import pooled_connection

    CACHE = BoundedCache(max_bytes=int(os.environ["BENCH_CACHE_BYTES"]))
    GUARD = MemoryGuard()  # takes this worker's share of the dyno's plan by itself
    GUARD.register_cache(CACHE, name="pages")
    GUARD.register_pools()
    GUARD.start()

    def cache(key):
        value = CACHE.get(key)
        if value is None:
            value = CACHE[key] = str(key).encode().ljust(VALUE, b"x")
        return len(value)

    def db():
        with pooled_connection(DSN) as conn:
            return len(conn.execute(QUERY).fetchall())

    def pdf(path):
        return sum(len(png) for _, png in render_pages(path, dpi=150))


def inner(environ, start_response):
    path = environ["PATH_INFO"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/cache":
        n = cache(int(query["key"][0]))
    elif path == "/db":
        n = db()
    elif path == "/pdf":
        n = pdf(PDFS[int(query["doc"][0]) % len(PDFS)])
    else:
        n = 0
    body = str(n).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


app = inner if MODE == "naive" else WSGIMiddleware(inner)
"""

CONF = """
{governed}
bind = "127.0.0.1:{port}"
workers = {workers}
worker_class = "sync"
timeout = 120
graceful_timeout = 60
loglevel = "info"
control_socket_disable = True
"""


@dataclass
class Result:
    name: str
    workers: int
    ok: int = 0
    failed: int = 0
    oom_kills: int = 0
    peak: int = 0
    seconds: float = 0.0
    retirements: int = 0
    stops: int = 0
    recycles: int = 0
    arbiter_cpu: float = 0.0
    mean_tick_ms: float | None = None
    health_ms: float | None = None
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


class Cgroup:
    """A 512 MiB memory cgroup with swap off, v1 or v2, made and removed by this run."""

    def __init__(self, name: str) -> None:
        v2_root = Path("/sys/fs/cgroup")
        controllers = v2_root / "cgroup.controllers"
        if controllers.exists() and "memory" in controllers.read_text().split():
            self.version, self.path = 2, v2_root / name
        else:
            self.version, self.path = 1, Path("/sys/fs/cgroup/memory") / name
        self.path.mkdir()
        if self.version == 2:
            (self.path / "memory.max").write_text(str(LIMIT))
            (self.path / "memory.swap.max").write_text("0")
        else:
            (self.path / "memory.limit_in_bytes").write_text(str(LIMIT))
            swap = self.path / "memory.memsw.limit_in_bytes"
            if swap.exists():
                swap.write_text(str(LIMIT))
            (self.path / "memory.swappiness").write_text("0")

    def join(self) -> None:
        """Move the calling process into the cgroup (called in the child before exec)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def oom_kills(self) -> int:
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        for line in (self.path / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def peak(self) -> int:
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int((self.path / name).read_text())
        except OSError:
            return 0

    def remove(self) -> None:
        for _ in range(50):
            procs = (self.path / "cgroup.procs").read_text().split()
            for pid in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def cgroup_unavailable() -> str | None:
    """Why a :class:`Cgroup` cannot be made here, or None."""
    if not sys.platform.startswith("linux"):
        return "needs Linux: memory cgroups are a Linux feature"
    if os.geteuid() != 0:
        return "needs root: creating a memory cgroup and moving processes into it is privileged"
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    if (
        not (v2.exists() and "memory" in v2.read_text().split())
        and not Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
    ):
        return "needs a cgroup memory controller (v1 /sys/fs/cgroup/memory or v2)"
    return None


def cannot_run() -> str | None:
    """Why this benchmark cannot run here, or None."""
    reason = cgroup_unavailable()
    if reason is not None:
        return reason
    for module in ("gunicorn", "pymupdf", "psycopg"):
        try:
            __import__(module)
        except ImportError:
            return f"needs {module} (pip install 'boundkit[test]')"
    return None


def make_pdfs(directory: Path) -> list[str]:
    """Three 8-page PDFs, each page a 1600 x 1600 RGB image (7.3 MiB decoded, small on disk)."""
    import pymupdf

    paths = []
    for doc_number in range(3):
        doc = pymupdf.open()
        for page_number in range(8):
            seed = 1 + doc_number * 8 + page_number
            row = bytes((x * seed // 7) % 256 for x in range(1600 * 3))
            pix = pymupdf.Pixmap(pymupdf.csRGB, 1600, 1600, row * 1600, False)
            page = doc.new_page()
            page.insert_image(page.rect, stream=pix.tobytes("png"))
        path = directory / f"doc{doc_number}.pdf"
        doc.save(path, deflate=True)
        doc.close()
        paths.append(str(path))
    return paths


def database_answers() -> bool:
    try:
        import psycopg

        with psycopg.connect(DSN) as conn:
            conn.execute("SELECT 1")
        return True
    except Exception:
        return False


@contextlib.contextmanager
def gunicorn_in_cgroup(
    work: Path, port: int, cgroup: Cgroup, log_path: Path, **bench_env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``work``'s gunicorn.conf.py and benchapp inside ``cgroup`` until the block ends.

    The environment is this one plus ``bench_env`` and ``work`` on PYTHONPATH,
    without the limit variables (the cgroup is the limit, as on a platform).
    Yields once ``port`` answers; at exit, SIGTERM, then SIGKILL after 90 s.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, str(work)]), **bench_env}
    for variable in ("BOUNDKIT_MEMORY_LIMIT", "DYNO_RAM", "MEMORY_AVAILABLE"):
        env.pop(variable, None)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "benchapp:app"],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=cgroup.join,
        )
    try:
        wait_for_port(port, proc, timeout=60)
        yield proc
    finally:
        stop_server(proc, timeout=90)


def request_outcome(port: int, path: str, *, timeout: float) -> str:
    """GET ``path`` on 127.0.0.1:``port``: "ok", "HTTP <status>" or the exception's name."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        status = conn.getresponse().status
        return "ok" if status == 200 else f"HTTP {status}"
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    finally:
        conn.close()


def load(port: int, clients: int, duration: float, routes: list[str], seed: int) -> Result:
    """Hit the app from ``clients`` threads for ``duration`` seconds; count outcomes."""
    result = Result("", 0)
    lock = threading.Lock()
    weights = [w for r, w in MIX if r in routes]
    names = [r for r, _ in MIX if r in routes]
    deadline = time.monotonic() + duration

    def client(number: int) -> None:
        rng = random.Random(seed * 100 + number)
        while time.monotonic() < deadline:
            route = rng.choices(names, weights)[0]
            query = f"key={rng.randrange(4000)}" if route == "/cache" else f"doc={rng.randrange(3)}"
            outcome = request_outcome(port, f"{route}?{query}", timeout=180)
            with lock:
                if outcome == "ok":
                    result.ok += 1
                else:
                    result.failed += 1
                    result.errors[f"{route} {outcome}"] = (
                        result.errors.get(f"{route} {outcome}", 0) + 1
                    )

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.monotonic() - started
    return result


def supervisor_figures(port: int) -> tuple[float | None, float]:
    """The supervisor's mean tick cost (from /health) and the median /health latency."""
    latencies, tick = [], None
    for _ in range(9):
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/health")
        body = conn.getresponse().read()
        conn.close()
        latencies.append(time.perf_counter() - started)
        tick = json.loads(body).get("supervisor", {}).get("mean_tick_ms")
    return tick, 1000 * statistics.median(latencies)


def run_scenario(
    name: str,
    mode: str,
    workers: int,
    cache_bytes: int,
    duration: float,
    pdfs: list[str],
    with_db: bool,
    seed: int,
    keep_logs: Path,
) -> Result:
    work = Path(tempfile.mkdtemp(prefix="bench-dyno-"))
    port = free_port()
    (work / "benchapp.py").write_text(textwrap.dedent(APP))
    governed = "from boundkit.gunicorn import govern_dyno; govern_dyno(globals())"
    (work / "gunicorn.conf.py").write_text(
        CONF.format(governed=governed if mode == "boundkit" else "", port=port, workers=workers)
    )
    cgroup = Cgroup(f"boundkit-bench-{os.getpid()}-{name.replace(' ', '-')}")
    log_path = keep_logs / f"{name.replace(' ', '-')}.log"
    try:
        with gunicorn_in_cgroup(
            work,
            port,
            cgroup,
            log_path,
            BENCH_MODE=mode,
            BENCH_PDFS=os.pathsep.join(pdfs),
            BENCH_DSN=DSN,
            BENCH_CACHE_BYTES=str(cache_bytes),
        ) as proc:
            routes = [r for r, _ in MIX if r != "/db" or with_db]
            result = load(port, 2 * workers, duration, routes, seed)
            with open(f"/proc/{proc.pid}/stat") as stat:  # the arbiter's own CPU time
                fields = stat.read().rsplit(")", 1)[1].split()
            result.arbiter_cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            if mode == "boundkit":
                result.mean_tick_ms, result.health_ms = supervisor_figures(port)
        result.name, result.workers = name, workers
        result.oom_kills = cgroup.oom_kills()
        result.peak = cgroup.peak()
        text = log_path.read_text(errors="replace")
        result.retirements = len(re.findall(r": retiring worker \d+", text))
        result.stops = len(re.findall(r": stopping worker \d+", text))
        result.recycles = text.count("retiring it after this request")
        return result
    finally:
        cgroup.remove()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=240.0, help="seconds per scenario")
    parser.add_argument("--only", help="run only scenarios whose name contains this")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    reason = cannot_run()
    if reason is not None:
        print(f"bench_dyno skipped: {reason}")
        return 0
    logs = Path(tempfile.mkdtemp(prefix="bench-dyno-logs-"))
    with_db = database_answers()
    if not with_db:
        print("PostgreSQL does not answer on 127.0.0.1:5432 (db test): /db left out of the mix")
    pdfs = make_pdfs(logs)
    scenarios = [
        ("naive 2w", "naive", 2, 0),
        ("boundkit 2w", "boundkit", 2, 256 * MIB),
        ("boundkit 4w", "boundkit", 4, 256 * MIB),
        ("boundkit 2w cache 1G", "boundkit", 2, 1024 * MIB),
    ]
    if args.only and not any(args.only in name for name, *_ in scenarios):
        names = ", ".join(repr(name) for name, *_ in scenarios)
        parser.error(f"--only {args.only!r} matches no scenario; the scenarios are {names}")
    results = []
    for name, mode, workers, cache_bytes in scenarios:
        if args.only and args.only not in name:
            continue
        print(f"running {name} for {args.duration:.0f} s ...", flush=True)
        results.append(
            run_scenario(
                name, mode, workers, cache_bytes, args.duration, pdfs, with_db, args.seed, logs
            )
        )
    print(
        f"\n512 MiB cgroup, swap off, {args.duration:.0f} s each, mix {dict(MIX)}; logs in {logs}"
    )
    columns = ("OOM kills", "failed", "ok", "req/s", "peak MiB", "retired", "stopped", "recycled")
    print(f"{'scenario':<22} " + " ".join(f"{c:>9}" for c in columns))
    for r in results:
        print(
            f"{r.name:<22} {r.oom_kills:>9} {r.failed:>9} {r.ok:>9} {r.throughput:>9.2f} "
            f"{r.peak / MIB:>9.1f} {r.retirements:>9} {r.stops:>9} {r.recycles:>9}"
        )
    for r in results:
        cost = f"arbiter CPU {r.arbiter_cpu:.1f} s over {r.seconds:.0f} s"
        if r.mean_tick_ms is not None:
            cost += f", supervisor tick {r.mean_tick_ms:.3f} ms mean"
        if r.health_ms is not None:
            cost += f", /health {r.health_ms:.1f} ms median after the load"
        print(f"  {r.name}: {cost}")
    for r in results:
        if r.errors:
            print(f"  {r.name} failures: {r.errors}")
    naive = next((r for r in results if r.name == "naive 2w"), None)
    ours = next((r for r in results if r.name == "boundkit 2w"), None)
    if naive and ours and naive.throughput:
        print(
            f"throughput boundkit 2w / naive 2w: {ours.throughput / naive.throughput:.2f}x "
            "(target >= 0.9)"
        )
    print(f"median req/s over scenarios: {statistics.median(r.throughput for r in results):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
